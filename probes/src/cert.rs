//! When a certificate expires: `notAfter`, read from its DER with a reader that walks only
//! as far as the validity, so that the probe can report the chain's earliest expiry
//! (`valkey_dr_tls_cert_expiry_timestamp_seconds`, as blackbox_exporter's
//! `probe_ssl_earliest_cert_expiry`) without an X.509 parser in the agent.
//!
//! ```text
//! Certificate ::= SEQUENCE { tbsCertificate TBSCertificate, ... }
//! TBSCertificate ::= SEQUENCE { [0] version OPTIONAL, serialNumber INTEGER,
//!     signature AlgorithmIdentifier, issuer Name, validity Validity, ... }
//! Validity ::= SEQUENCE { notBefore Time, notAfter Time }
//! Time ::= CHOICE { UTCTime, GeneralizedTime }
//! ```

use std::time::{Duration, SystemTime};

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The certificate's `notAfter`; `None` when the DER is not a certificate this reader
/// understands (the probe then reports no expiry rather than a wrong one).
pub fn not_after(der: &[u8]) -> Option<SystemTime> {
    let (tag, certificate, _) = tlv(der)?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, mut tbs, _) = tlv(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    let mut next = |expected: &[u8]| -> Option<(u8, &[u8])> {
        let (tag, value, rest) = tlv(tbs)?;
        tbs = rest;
        expected.contains(&tag).then_some((tag, value))
    };
    let (tag, _) = next(&[VERSION, INTEGER])?;
    if tag == VERSION {
        next(&[INTEGER])?; // serialNumber
    }
    next(&[SEQUENCE])?; // signature
    next(&[SEQUENCE])?; // issuer
    let (_, validity) = next(&[SEQUENCE])?;
    let (_, _, rest) = tlv(validity)?; // notBefore
    let (tag, time, _) = tlv(rest)?;
    match tag {
        UTC_TIME => {
            // YYMMDDHHMMSSZ; RFC 5280: YY >= 50 is 19YY, otherwise 20YY.
            let yy = digits(time.get(..2)?)?;
            let year = if yy >= 50 { 1900 + yy } else { 2000 + yy };
            timestamp(year, time.get(2..)?)
        }
        GENERALIZED_TIME => timestamp(digits(time.get(..4)?)?, time.get(4..)?),
        _ => None,
    }
}

/// One DER tag-length-value: the tag, the value, and what follows it.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let bytes = rest.get(..n)?;
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    Some((tag, rest.get(..len)?, rest.get(len..)?))
}

fn digits(bytes: &[u8]) -> Option<u64> {
    bytes.iter().try_fold(0u64, |acc, &b| {
        b.is_ascii_digit().then(|| acc * 10 + u64::from(b - b'0'))
    })
}

/// `MMDDHHMMSSZ` of `year` as a time (RFC 5280 requires UTC, `Z`, and seconds).
fn timestamp(year: u64, rest: &[u8]) -> Option<SystemTime> {
    if rest.len() != 11 || rest[10] != b'Z' {
        return None;
    }
    let field = |i: usize| digits(&rest[i..i + 2]);
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let days = days_from_civil(year, month, day)?;
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Days from 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm), for
/// dates from 1970 on.
fn days_from_civil(year: u64, month: u64, day: u64) -> Option<u64> {
    let y = if month <= 2 {
        year.checked_sub(1)?
    } else {
        year
    };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params =
            rcgen::CertificateParams::new(vec!["cache.example".to_owned()]).expect("params");
        params.not_after = rcgen::date_time_ymd(year, month, day);
        params.self_signed(&key).expect("cert").der().to_vec()
    }

    fn unix(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn reads_utc_time_and_generalized_time() {
        // 2031-05-06T00:00:00Z and 2051-02-28T00:00:00Z (`date -d ... +%s`); rcgen writes
        // UTCTime before 2050 and GeneralizedTime from 2050 on, as RFC 5280 requires.
        assert_eq!(
            not_after(&cert_expiring(2031, 5, 6)),
            Some(unix(1_935_792_000))
        );
        assert_eq!(
            not_after(&cert_expiring(2051, 2, 28)),
            Some(unix(2_561_155_200))
        );
        assert_eq!(
            not_after(&cert_expiring(2028, 2, 29)),
            Some(unix(1_835_395_200))
        );
    }

    #[test]
    fn anything_else_is_no_expiry() {
        let good = cert_expiring(2031, 5, 6);
        assert_eq!(not_after(&[]), None);
        assert_eq!(not_after(b"not a certificate"), None);
        for cut in [1, 10, good.len() / 2, good.len() - 1] {
            // A truncated certificate either is refused or still ends past the validity.
            let read = not_after(&good[..cut]);
            assert!(read.is_none() || read == not_after(&good), "cut at {cut}");
        }
        assert_eq!(timestamp(2031, b"1306000000Z"), None);
        assert_eq!(timestamp(2031, b"0506000000+"), None);
    }
}
