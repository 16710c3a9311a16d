//! Which AWS partition a region is in, from the SDK's own partition data.
//!
//! A partition (`aws`, `aws-cn`, `aws-us-gov`, the isolated `aws-iso*` ones, `aws-eusc`) is
//! the first word of every ARN in it and the reach of its global services: Route 53 and IAM
//! answer only for their own partition. A region name alone does not say which partition it
//! is in (`us-iso-east-1` and `us-isob-east-1` are not in `aws`, though they start with
//! `us-`), and new partitions come with new SDK releases, so the decision is the SDK's: IAM's
//! endpoint rules (`aws_sdk_iam::config::endpoint`) place the region with the partition data
//! every SDK crate carries (each partition's region list and region pattern, `aws` for a name
//! that matches none) and say which region IAM, global within that partition, signs for.
//!
//! The SDK keeps its partition resolver, and so the partition's name, to itself; what it
//! makes public is the resolved endpoint. That IAM signing region is one of its own per
//! partition, so the name is looked up by it in [`PARTITIONS`]. A partition the SDK knows and
//! that table does not is reported as unknown rather than guessed: the config refuses its
//! regions (`Validator::region`).

use std::sync::LazyLock;

use aws_sdk_iam::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};
use futures::FutureExt;

/// An AWS partition, as the SDK's endpoint rules place a region in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partition {
    /// The ARN partition: the second field of every ARN in it.
    pub name: &'static str,
    /// The region IAM's requests are signed for in this partition, whatever the caller's own
    /// region is (IAM has one endpoint per partition).
    pub iam_region: &'static str,
}

/// Every partition valkey-dr can name, by the region IAM signs for there (IAM's endpoint
/// rules give each partition its own).
pub const PARTITIONS: [Partition; 8] = [
    Partition {
        name: "aws",
        iam_region: "us-east-1",
    },
    Partition {
        name: "aws-cn",
        iam_region: "cn-north-1",
    },
    Partition {
        name: "aws-us-gov",
        iam_region: "us-gov-west-1",
    },
    Partition {
        name: "aws-iso",
        iam_region: "us-iso-east-1",
    },
    Partition {
        name: "aws-iso-b",
        iam_region: "us-isob-east-1",
    },
    Partition {
        name: "aws-iso-e",
        iam_region: "eu-isoe-west-1",
    },
    Partition {
        name: "aws-iso-f",
        iam_region: "us-isof-south-1",
    },
    Partition {
        name: "aws-eusc",
        iam_region: "eusc-de-east-1",
    },
];

/// IAM's endpoint rules, built once: building them compiles every partition's region pattern.
static IAM_RULES: LazyLock<DefaultResolver> = LazyLock::new(DefaultResolver::new);

/// The region IAM's endpoint rules sign for when the caller is in `region`: the partition's
/// IAM region. `None` when the rules give no endpoint (they give one for every region name).
pub fn iam_signing_region(region: &str) -> Option<String> {
    let params = Params::builder().region(region).build().ok()?;
    // The SDK's rule-based resolvers answer at once; they never wait on anything.
    let endpoint = IAM_RULES.resolve_endpoint(&params).now_or_never()?.ok()?;
    endpoint
        .properties()
        .get("authSchemes")?
        .as_array()?
        .iter()
        .find_map(|scheme| scheme.as_object()?.get("signingRegion")?.as_string())
        .map(str::to_owned)
}

/// The partition of `region`; `None` when the SDK places it in a partition that
/// [`PARTITIONS`] does not name.
pub fn partition_of(region: &str) -> Option<Partition> {
    let signing = iam_signing_region(region)?;
    PARTITIONS.into_iter().find(|p| p.iam_region == signing)
}

/// The ARN partition of `region`: its ARNs' prefix, and the reach of its global services. For
/// a region of a config that loaded, whose partition is always known (`Validator::region`);
/// `aws`, the SDK's own fallback, otherwise.
pub fn partition(region: &str) -> &'static str {
    partition_of(region).map_or("aws", |p| p.name)
}

/// The partition an ARN names (`arn:PARTITION:…`).
pub fn arn_partition(arn: &str) -> Option<&str> {
    match arn.split(':').collect::<Vec<_>>().as_slice() {
        ["arn", partition, ..] if !partition.is_empty() => Some(partition),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 22, defect 6: `partition()` knew the `cn-` and `us-gov-` prefixes only, so the
    /// regions of the isolated partitions and of the European Sovereign Cloud got `arn:aws`
    /// ARNs (and IAM was signed for us-east-1 there).
    #[test]
    fn every_partition_s_regions_get_its_name_and_iam_region() {
        for (region, name, iam) in [
            ("us-east-1", "aws", "us-east-1"),
            ("eu-west-2", "aws", "us-east-1"),
            ("ap-southeast-7", "aws", "us-east-1"),
            ("cn-northwest-1", "aws-cn", "cn-north-1"),
            ("us-gov-east-1", "aws-us-gov", "us-gov-west-1"),
            ("us-iso-east-1", "aws-iso", "us-iso-east-1"),
            ("us-iso-west-1", "aws-iso", "us-iso-east-1"),
            ("us-isob-east-1", "aws-iso-b", "us-isob-east-1"),
            ("eu-isoe-west-1", "aws-iso-e", "eu-isoe-west-1"),
            ("us-isof-south-1", "aws-iso-f", "us-isof-south-1"),
            ("us-isof-east-1", "aws-iso-f", "us-isof-south-1"),
            ("eusc-de-east-1", "aws-eusc", "eusc-de-east-1"),
        ] {
            assert_eq!(partition(region), name, "{region}");
            assert_eq!(
                partition_of(region),
                Some(Partition {
                    name,
                    iam_region: iam
                }),
                "{region}"
            );
            assert_eq!(iam_signing_region(region).as_deref(), Some(iam), "{region}");
        }
    }

    /// The decision is the SDK's region patterns', not a prefix: a region no pattern knows
    /// is in `aws` (the SDK's fallback), and one of a known pattern is in its partition even
    /// when no SDK release lists it yet.
    #[test]
    fn regions_follow_the_sdk_s_patterns() {
        assert_eq!(partition("us-isob-west-9"), "aws-iso-b");
        assert_eq!(partition("eu-isoe-north-3"), "aws-iso-e");
        assert_eq!(partition("cn-south-7"), "aws-cn");
        assert_eq!(partition("zz-nowhere-1"), "aws");
    }

    #[test]
    fn every_named_partition_has_its_own_iam_region() {
        for p in PARTITIONS {
            assert_eq!(partition_of(p.iam_region), Some(p), "{}", p.name);
        }
    }

    #[test]
    fn arns_name_their_partition() {
        assert_eq!(
            arn_partition("arn:aws-iso:sts::123456789012:assumed-role/r/s"),
            Some("aws-iso")
        );
        assert_eq!(arn_partition("arn::iam::1:role/r"), None);
        assert_eq!(arn_partition("not an arn"), None);
    }
}
