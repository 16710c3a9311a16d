//! AWS-shaped names and loopback addresses for lab caches.

use std::net::Ipv4Addr;

use rand::Rng;

use crate::LabError;

/// AWS's short region code, as used in ElastiCache endpoint names: `us-east-1` → `use1`,
/// `ap-southeast-2` → `apse2`, `eu-central-1` → `euc1`.
pub fn short_region(region: &str) -> String {
    let mut out = String::new();
    for part in region.split('-') {
        let short = match part {
            "east" => "e",
            "west" => "w",
            "north" => "n",
            "south" => "s",
            "central" => "c",
            "northeast" => "ne",
            "northwest" => "nw",
            "southeast" => "se",
            "southwest" => "sw",
            other => other,
        };
        out.push_str(short);
    }
    out
}

/// An endpoint name as ElastiCache Serverless makes them:
/// `<cache-name>-<6 lowercase alnum>.serverless.<short region>.cache.amazonaws.com`.
pub(crate) fn endpoint_name(cache: &str, region: &str, rng: &mut impl Rng) -> String {
    const ALNUM: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let suffix: String = (0..6)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect();
    format!(
        "{cache}-{suffix}.serverless.{}.cache.amazonaws.com",
        short_region(region)
    )
}

/// Checks a name against the ServerlessCacheName rules: 1–40 characters, lowercase letters,
/// digits and hyphens, starting with a letter, no two hyphens in a row, no trailing hyphen.
pub(crate) fn validate_cache_name(name: &str) -> Result<(), LabError> {
    let invalid = |reason| {
        Err(LabError::InvalidCacheName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() || name.len() > 40 {
        return invalid("it must be 1 to 40 characters long");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return invalid("it must start with a lowercase letter");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return invalid("only lowercase letters, digits and hyphens are allowed");
    }
    if name.contains("--") || name.ends_with('-') {
        return invalid("it may not contain two hyphens in a row or end with one");
    }
    Ok(())
}

/// A loopback address `127.a.b.c` with `a ≠ 0`, so that it never collides with the
/// `127.0.0.x` addresses other software on the host likes to use.
pub(crate) fn loopback_ip(rng: &mut impl Rng) -> Ipv4Addr {
    Ipv4Addr::new(
        127,
        rng.random_range(1..=254),
        rng.random_range(0..=255),
        rng.random_range(1..=254),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn short_regions_match_aws() {
        assert_eq!(short_region("us-east-1"), "use1");
        assert_eq!(short_region("us-east-2"), "use2");
        assert_eq!(short_region("us-west-2"), "usw2");
        assert_eq!(short_region("eu-central-1"), "euc1");
        assert_eq!(short_region("ap-southeast-2"), "apse2");
    }

    #[test]
    fn endpoint_names_have_the_aws_shape_and_follow_the_seed() {
        let mut a = StdRng::seed_from_u64(7);
        let mut b = StdRng::seed_from_u64(7);
        let name = endpoint_name("app-sessions", "us-east-1", &mut a);
        assert_eq!(name, endpoint_name("app-sessions", "us-east-1", &mut b));
        let (label, rest) = name.split_once('.').unwrap();
        assert_eq!(rest, "serverless.use1.cache.amazonaws.com");
        let suffix = label.strip_prefix("app-sessions-").unwrap();
        assert_eq!(suffix.len(), 6);
        assert!(
            suffix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
    }

    #[test]
    fn cache_names_follow_the_aws_rules() {
        assert!(validate_cache_name("app-sessions-dr").is_ok());
        for bad in ["", "App", "1abc", "a--b", "a-", "a_b", &"a".repeat(41)] {
            assert!(validate_cache_name(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn loopback_ips_avoid_127_0() {
        let mut rng = StdRng::seed_from_u64(1);
        for _ in 0..1000 {
            let ip = loopback_ip(&mut rng);
            assert!(ip.is_loopback());
            assert_ne!(ip.octets()[1], 0);
        }
    }
}
