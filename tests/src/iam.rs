//! Verifying ElastiCache IAM auth tokens, as a serverless cache's front does.
//!
//! A token is a SigV4 presigned `GET http://<cache>/?Action=connect&User=<user>&ResourceType=
//! ServerlessCache` without its scheme, sent as the `AUTH` password. The lab checks what AWS
//! checks: the cache and region it was made for, the user, the 15-minute validity, and the
//! signature, recomputed with the lab's own credentials (`LAB_AWS_ENV`). The signature is
//! computed here by hand (HMAC-SHA256 from ring) rather than with `aws-sigv4`, the library the
//! agent signs with, so that a mistake in how the agent uses it cannot be mirrored here.
//!
//! Nothing here logs or returns a token or a key: a rejection names the check that failed.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use ring::{digest, hmac};

use crate::LAB_AWS_ENV;

/// The longest validity AWS accepts in a token (and the one its SDKs use).
pub(crate) const MAX_EXPIRES: Duration = Duration::from_secs(900);
/// How far in the future a token's `X-Amz-Date` may be, for clocks a little ahead of ours.
const CLOCK_SKEW: Duration = Duration::from_secs(60);
const ALGORITHM: &str = "AWS4-HMAC-SHA256";
const SERVICE: &str = "elasticache";
/// SHA-256 of the empty body: a presigned GET signs no payload.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// What a token must match: one cache, its region, and the IAM-enabled user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IamAuth {
    /// The serverless cache name (the token's host, compared case-insensitively).
    pub(crate) cache_name: String,
    /// The cache's region, which must be the token's signing region.
    pub(crate) region: String,
    /// The one IAM-enabled user of the cache.
    pub(crate) user: String,
}

/// Why a token was refused. Every variant leads to the same `WRONGPASS` reply, as on AWS; the
/// reason is for the lab's debug log only, and holds no part of the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenRejection {
    #[error("the AUTH user {given:?} is not the cache's IAM user")]
    WrongAuthUser { given: String },
    #[error("it is not <cache-name>/?<query>")]
    Malformed,
    #[error("its query parameter {name} is missing, repeated or not valid percent-encoding")]
    Parameter { name: &'static str },
    #[error("it is for cache {given:?}")]
    OtherCache { given: String },
    #[error("{name} is {given:?}, not {expected:?}")]
    Mismatch {
        name: &'static str,
        given: String,
        expected: String,
    },
    #[error("its credential scope is not <key>/<date>/<region>/elasticache/aws4_request")]
    Scope,
    #[error("it was signed with an access key the lab does not know")]
    UnknownAccessKey,
    #[error("it was signed for region {given:?}")]
    OtherRegion { given: String },
    #[error("it carries a session token, and the lab's credentials have none")]
    SessionToken,
    #[error("X-Amz-Date is not YYYYMMDDTHHMMSSZ or disagrees with the scope's date")]
    BadDate,
    #[error("X-Amz-Expires is not between 1 and 900 seconds")]
    BadExpires,
    #[error("it was signed more than a minute in the future")]
    NotYetValid,
    #[error("it has expired")]
    Expired,
    #[error("the signature does not match")]
    Signature,
}

/// The lab's access key id and secret, from `LAB_AWS_ENV`: what every agent the lab starts
/// signs with.
fn lab_credentials() -> (&'static str, &'static str) {
    let get = |name: &str| {
        LAB_AWS_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
            .unwrap_or_default()
    };
    (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY"))
}

impl IamAuth {
    /// Checks `AUTH <user> <token>` at `now` against this cache and the lab's credentials.
    pub(crate) fn verify(
        &self,
        user: &[u8],
        token: &[u8],
        now: SystemTime,
    ) -> Result<(), TokenRejection> {
        let (access_key, secret) = lab_credentials();
        self.verify_with(user, token, now, access_key, secret)
    }

    fn verify_with(
        &self,
        user: &[u8],
        token: &[u8],
        now: SystemTime,
        access_key: &str,
        secret: &str,
    ) -> Result<(), TokenRejection> {
        if user != self.user.as_bytes() {
            return Err(TokenRejection::WrongAuthUser {
                given: String::from_utf8_lossy(user).into_owned(),
            });
        }
        let token = std::str::from_utf8(token).map_err(|_| TokenRejection::Malformed)?;
        let (host, query) = token.split_once("/?").ok_or(TokenRejection::Malformed)?;
        if host.is_empty() || host.contains(['/', '?', '&']) {
            return Err(TokenRejection::Malformed);
        }
        if !host.eq_ignore_ascii_case(&self.cache_name) {
            return Err(TokenRejection::OtherCache {
                given: host.to_string(),
            });
        }
        let params = parse_query(query)?;
        let get = |name: &'static str| {
            params
                .get(name)
                .map(String::as_str)
                .ok_or(TokenRejection::Parameter { name })
        };
        let expect = |name: &'static str, expected: &str| {
            let given = get(name)?;
            if given == expected {
                Ok(())
            } else {
                Err(TokenRejection::Mismatch {
                    name,
                    given: given.to_string(),
                    expected: expected.to_string(),
                })
            }
        };
        expect("Action", "connect")?;
        expect("User", &self.user)?;
        expect("ResourceType", "ServerlessCache")?;
        expect("X-Amz-Algorithm", ALGORITHM)?;
        expect("X-Amz-SignedHeaders", "host")?;
        if params.contains_key("X-Amz-Security-Token") {
            return Err(TokenRejection::SessionToken);
        }

        let credential = get("X-Amz-Credential")?;
        let [key, scope_date, region, service, terminator] = split_scope(credential)?;
        if service != SERVICE || terminator != "aws4_request" {
            return Err(TokenRejection::Scope);
        }
        if key != access_key {
            return Err(TokenRejection::UnknownAccessKey);
        }
        if region != self.region {
            return Err(TokenRejection::OtherRegion {
                given: region.to_string(),
            });
        }

        let amz_date = get("X-Amz-Date")?;
        let signed_at = parse_amz_date(amz_date).ok_or(TokenRejection::BadDate)?;
        if !amz_date.starts_with(scope_date) || scope_date.len() != 8 {
            return Err(TokenRejection::BadDate);
        }
        let expires = get("X-Amz-Expires")?
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|e| !e.is_zero() && *e <= MAX_EXPIRES)
            .ok_or(TokenRejection::BadExpires)?;
        if signed_at > now + CLOCK_SKEW {
            return Err(TokenRejection::NotYetValid);
        }
        if now >= signed_at + expires {
            return Err(TokenRejection::Expired);
        }

        let signature = get("X-Amz-Signature")?;
        let signature = decode_hex(signature).ok_or(TokenRejection::Signature)?;
        let canonical_query = canonical_query(&params);
        let canonical_request =
            format!("GET\n/\n{canonical_query}\nhost:{host}\n\nhost\n{EMPTY_SHA256}");
        let scope = format!("{scope_date}/{region}/{SERVICE}/aws4_request");
        let string_to_sign = format!(
            "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
            hex(digest::digest(&digest::SHA256, canonical_request.as_bytes()).as_ref())
        );
        let key = signing_key(secret, scope_date, region);
        // Constant-time: the lab is a test double, but a verifier that leaks timing is a bad
        // pattern to leave lying around.
        hmac::verify(&key, string_to_sign.as_bytes(), &signature)
            .map_err(|_| TokenRejection::Signature)
    }
}

/// `AKID/date/region/service/aws4_request`.
fn split_scope(credential: &str) -> Result<[&str; 5], TokenRejection> {
    let parts: Vec<&str> = credential.split('/').collect();
    match parts.as_slice() {
        [a, b, c, d, e] if parts.iter().all(|p| !p.is_empty()) => Ok([a, b, c, d, e]),
        _ => Err(TokenRejection::Scope),
    }
}

fn signing_key(secret: &str, date: &str, region: &str) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), date);
    let k_region = step(k_date.as_ref(), region);
    let k_service = step(k_region.as_ref(), SERVICE);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// The decoded query parameters; a name given twice makes the token malformed, since AWS would
/// sign both and no SDK sends that.
fn parse_query(query: &str) -> Result<BTreeMap<String, String>, TokenRejection> {
    let mut params = BTreeMap::new();
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode(name).ok_or(TokenRejection::Malformed)?;
        let value = percent_decode(value).ok_or(TokenRejection::Malformed)?;
        if params.insert(name, value).is_some() {
            return Err(TokenRejection::Malformed);
        }
    }
    Ok(params)
}

/// SigV4's canonical query string: every parameter but the signature, names and values
/// encoded the SigV4 way, sorted.
fn canonical_query(params: &BTreeMap<String, String>) -> String {
    let mut pairs: Vec<(String, String)> = params
        .iter()
        .filter(|(name, _)| name.as_str() != "X-Amz-Signature")
        .map(|(name, value)| (uri_encode(name), uri_encode(value)))
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(name, value)| format!("{name}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Everything but the RFC 3986 unreserved characters is percent-encoded, upper-case hex.
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `%XX` decoding; `+` stays a plus (SigV4 never encodes a space as `+`).
fn percent_decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() != 64 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

/// `YYYYMMDDTHHMMSSZ` as a time.
fn parse_amz_date(text: &str) -> Option<SystemTime> {
    let b = text.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let s = text.get(range)?;
        s.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| s.parse().ok())?
    };
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, minute, second) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second;
    let seconds = u64::try_from(seconds).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(seconds))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The botocore vector from `probes/src/iam.rs` (computed there with botocore 1.44.8).
    const BOTOCORE_TOKEN: &str = "app-sessions/?Action=connect&User=probe&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20260102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=ce87ddf584f094fe38d98b2813de1edce5f855fe82b351a5d178c1ba3a0b1bbf";
    const AKID: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    /// 2026-01-02T03:04:05Z.
    fn signed_at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045)
    }

    fn auth() -> IamAuth {
        IamAuth {
            cache_name: "app-sessions".into(),
            region: "us-east-1".into(),
            user: "probe".into(),
        }
    }

    fn check(
        auth: &IamAuth,
        user: &str,
        token: &str,
        now: SystemTime,
    ) -> Result<(), TokenRejection> {
        auth.verify_with(user.as_bytes(), token.as_bytes(), now, AKID, SECRET)
    }

    #[test]
    fn amz_dates_parse() {
        assert_eq!(parse_amz_date("20260102T030405Z"), Some(signed_at()));
        assert_eq!(
            parse_amz_date("19700101T000000Z"),
            Some(SystemTime::UNIX_EPOCH)
        );
        for bad in [
            "20261302T030405Z",
            "2026010T2030405Z",
            "20260102T030405",
            "2026-1-2T03:04:05Z",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_botocore_token_verifies_within_its_fifteen_minutes() {
        let auth = auth();
        check(&auth, "probe", BOTOCORE_TOKEN, signed_at()).unwrap();
        check(
            &auth,
            "probe",
            BOTOCORE_TOKEN,
            signed_at() + Duration::from_secs(899),
        )
        .unwrap();
        assert_eq!(
            check(
                &auth,
                "probe",
                BOTOCORE_TOKEN,
                signed_at() + Duration::from_secs(900)
            ),
            Err(TokenRejection::Expired)
        );
        assert_eq!(
            check(
                &auth,
                "probe",
                BOTOCORE_TOKEN,
                signed_at() - Duration::from_secs(120)
            ),
            Err(TokenRejection::NotYetValid)
        );
        // The cache name is a host name: case does not matter.
        let upper = IamAuth {
            cache_name: "APP-SESSIONS".into(),
            ..auth.clone()
        };
        check(&upper, "probe", BOTOCORE_TOKEN, signed_at()).unwrap();
    }

    #[test]
    fn each_part_of_the_token_is_checked() {
        let auth = auth();
        let now = signed_at();
        let wrong = |user: &str, token: &str| check(&auth, user, token, now).unwrap_err();
        assert!(matches!(
            wrong("admin", BOTOCORE_TOKEN),
            TokenRejection::WrongAuthUser { .. }
        ));
        assert!(matches!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replacen("app-sessions/", "app-sessions-dr/", 1)
            ),
            TokenRejection::OtherCache { .. }
        ));
        assert!(matches!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replace("%2Fus-east-1%2F", "%2Fus-west-2%2F")
            ),
            TokenRejection::OtherRegion { .. }
        ));
        assert_eq!(
            wrong("probe", &BOTOCORE_TOKEN.replace("AKIDEXAMPLE", "AKIDOTHER")),
            TokenRejection::UnknownAccessKey
        );
        assert!(matches!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replace("Action=connect", "Action=Connect")
            ),
            TokenRejection::Mismatch { name: "Action", .. }
        ));
        assert!(matches!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replace("ServerlessCache", "ReplicationGroup")
            ),
            TokenRejection::Mismatch {
                name: "ResourceType",
                ..
            }
        ));
        assert_eq!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replace("X-Amz-Expires=900", "X-Amz-Expires=901")
            ),
            TokenRejection::BadExpires
        );
        assert_eq!(
            wrong("probe", &BOTOCORE_TOKEN.replace("ce87dd", "ce87de")),
            TokenRejection::Signature
        );
        // A shorter validity is signed too: changing it breaks the signature.
        assert_eq!(
            wrong(
                "probe",
                &BOTOCORE_TOKEN.replace("X-Amz-Expires=900", "X-Amz-Expires=600")
            ),
            TokenRejection::Signature
        );
        assert_eq!(
            wrong(
                "probe",
                &format!("{BOTOCORE_TOKEN}&X-Amz-Security-Token=abc")
            ),
            TokenRejection::SessionToken
        );
        assert_eq!(
            wrong("probe", &format!("{BOTOCORE_TOKEN}&Action=connect")),
            TokenRejection::Malformed
        );
        assert_eq!(wrong("probe", "app-sessions"), TokenRejection::Malformed);
        // Another secret, same token: the signature no longer matches.
        assert_eq!(
            auth.verify_with(
                b"probe",
                BOTOCORE_TOKEN.as_bytes(),
                now,
                AKID,
                "not-the-secret"
            )
            .unwrap_err(),
            TokenRejection::Signature
        );
    }

    #[test]
    fn rejections_never_echo_the_signature() {
        let auth = auth();
        let tampered = BOTOCORE_TOKEN.replace("ce87dd", "ce87de");
        let err = check(&auth, "probe", &tampered, signed_at()).unwrap_err();
        assert!(!err.to_string().contains("ce87de"), "{err}");
    }

    #[test]
    fn the_lab_credentials_come_from_lab_aws_env() {
        let (key, secret) = lab_credentials();
        assert_eq!(key, "AKIDLAB");
        assert!(!secret.is_empty());
    }
}
