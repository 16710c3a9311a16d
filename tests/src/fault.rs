//! The faults an operator or a test can inject.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::AwsService;

/// One fault, as sent to `POST /fault` (`{"fault": "kill", "cache": "app-sessions"}`) and as
/// typed after `valkey-dr-lab fault`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "fault", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Fault {
    /// SIGKILL the cache's valkey-server; its front then refuses connections.
    Kill {
        /// The cache.
        cache: String,
    },
    /// SIGSTOP the server: TLS still completes at the front, commands hang.
    Pause {
        /// The cache.
        cache: String,
    },
    /// SIGCONT a paused server.
    Resume {
        /// The cache.
        cache: String,
    },
    /// Delay every forwarded chunk, in each direction.
    Latency {
        /// The cache.
        cache: String,
        /// The delay, as a humantime string in JSON (`"300ms"`).
        #[serde(with = "humantime_string")]
        delay: Duration,
    },
    /// Accept TCP and never answer, not even the TLS handshake.
    Blackhole {
        /// The cache.
        cache: String,
    },
    /// New connections are accepted and reset at once (the client sees `ECONNRESET`), while
    /// connections opened before the fault keep working: a cache that stops taking clients
    /// without dropping its own, which only a client that dials again can see.
    RefuseNew {
        /// The cache.
        cache: String,
    },
    /// New connections get a 100 MiB bulk string for every `GET`, streamed by the front
    /// (never held in memory); every other command still reaches the server.
    HugeReply {
        /// The cache.
        cache: String,
    },
    /// Undo every fault on the cache: restart a killed server, resume a paused one, reopen
    /// the front, drop latency, blackhole, huge replies and refuse-new.
    Clear {
        /// The cache.
        cache: String,
    },
    /// The private zone stops answering; the endpoint names still resolve.
    DnsDown,
    /// The private zone answers again.
    DnsUp,
    /// Cut the agent's way out: the TCP witness port closes and every AWS call answers 503.
    WitnessDown,
    /// Reopen the witness port.
    WitnessUp,
    /// Point the record's CNAME at this cache's endpoint (drift, or a hand-made failover).
    PointRecord {
        /// The cache.
        cache: String,
    },
    /// The region fails: its caches are blackholed and its ElastiCache API answers every call
    /// with 503 `ServiceUnavailable`. Route 53, a global service, keeps answering.
    RegionOutage {
        /// The AWS region, e.g. `us-east-1`.
        region: String,
    },
    /// The region is back: its API answers again and its caches are cleared (as `clear`).
    RegionRestore {
        /// The AWS region.
        region: String,
    },
    /// The next `times` calls of `action` on `service` fail with the AWS error `code`, at the
    /// HTTP status AWS uses for it (`Throttling` 400, `InternalError` 500,
    /// `ServiceUnavailable` 503, anything else 400).
    ApiError {
        /// `elasticache` or `route53`.
        service: AwsService,
        /// The API action, e.g. `CreateServerlessCache`.
        action: String,
        /// The error code, e.g. `Throttling`.
        code: String,
        /// How many calls fail.
        times: u32,
    },
    /// The next serverless cache created goes to `create-failed` instead of `available`.
    ProvisionFail,
    /// The next serverless cache created stays `creating` for ever.
    ProvisionStuck,
    /// The subnet no longer exists in any region: `DescribeSubnets` naming it fails with
    /// `InvalidSubnetID.NotFound`.
    SubnetDelete {
        /// The subnet id, e.g. `subnet-lab0002`.
        subnet: String,
    },
    /// The lab's KMS key is `Disabled` (`Enabled` false) in every region.
    KmsDisable,
    /// The lab's KMS key is `Enabled` again.
    KmsEnable,
    /// The lab's principal loses the IAM action: `SimulatePrincipalPolicy` answers
    /// `implicitDeny` for it, and every call of it is refused with the service's access
    /// denial (`AccessDenied`, EC2's `UnauthorizedOperation`, KMS's `AccessDeniedException`).
    /// STS `GetCallerIdentity` cannot be denied, as on AWS.
    IamDeny {
        /// `{service}:{Action}`, e.g. `route53:ChangeResourceRecordSets`.
        action: String,
    },
    /// The lab's principal has the IAM action again.
    IamAllow {
        /// `{service}:{Action}`.
        action: String,
    },
    /// The hosted zone is public: `GetHostedZone` says `PrivateZone` false and lists no VPCs.
    ZonePublic,
    /// The hosted zone is private again (as the lab starts).
    ZonePrivate,
}

impl Fault {
    /// The cache the fault acts on, if it acts on one.
    pub fn cache(&self) -> Option<&str> {
        match self {
            Self::Kill { cache }
            | Self::Pause { cache }
            | Self::Resume { cache }
            | Self::Latency { cache, .. }
            | Self::Blackhole { cache }
            | Self::RefuseNew { cache }
            | Self::HugeReply { cache }
            | Self::Clear { cache }
            | Self::PointRecord { cache } => Some(cache),
            Self::DnsDown
            | Self::DnsUp
            | Self::WitnessDown
            | Self::WitnessUp
            | Self::RegionOutage { .. }
            | Self::RegionRestore { .. }
            | Self::ApiError { .. }
            | Self::ProvisionFail
            | Self::ProvisionStuck
            | Self::SubnetDelete { .. }
            | Self::KmsDisable
            | Self::KmsEnable
            | Self::IamDeny { .. }
            | Self::IamAllow { .. }
            | Self::ZonePublic
            | Self::ZonePrivate => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kill { cache } => write!(f, "kill {cache}"),
            Self::Pause { cache } => write!(f, "pause {cache}"),
            Self::Resume { cache } => write!(f, "resume {cache}"),
            Self::Latency { cache, delay } => {
                write!(f, "latency {cache} {}", humantime::format_duration(*delay))
            }
            Self::Blackhole { cache } => write!(f, "blackhole {cache}"),
            Self::RefuseNew { cache } => write!(f, "refuse-new {cache}"),
            Self::HugeReply { cache } => write!(f, "huge-reply {cache}"),
            Self::Clear { cache } => write!(f, "clear {cache}"),
            Self::DnsDown => f.write_str("dns-down"),
            Self::DnsUp => f.write_str("dns-up"),
            Self::WitnessDown => f.write_str("witness-down"),
            Self::WitnessUp => f.write_str("witness-up"),
            Self::PointRecord { cache } => write!(f, "point-record {cache}"),
            Self::RegionOutage { region } => write!(f, "region-outage {region}"),
            Self::RegionRestore { region } => write!(f, "region-restore {region}"),
            Self::ApiError {
                service,
                action,
                code,
                times,
            } => write!(f, "api-error {service} {action} {code} --times {times}"),
            Self::ProvisionFail => f.write_str("provision-fail"),
            Self::ProvisionStuck => f.write_str("provision-stuck"),
            Self::SubnetDelete { subnet } => write!(f, "subnet-delete {subnet}"),
            Self::KmsDisable => f.write_str("kms-disable"),
            Self::KmsEnable => f.write_str("kms-enable"),
            Self::IamDeny { action } => write!(f, "iam-deny {action}"),
            Self::IamAllow { action } => write!(f, "iam-allow {action}"),
            Self::ZonePublic => f.write_str("zone-public"),
            Self::ZonePrivate => f.write_str("zone-private"),
        }
    }
}

/// Durations as humantime strings (`"300ms"`), the way the config writes them.
pub(crate) mod humantime_string {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&humantime::format_duration(*value))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_use_the_documented_json() {
        let latency = Fault::Latency {
            cache: "app-sessions".into(),
            delay: Duration::from_millis(300),
        };
        let json = serde_json::to_string(&latency).unwrap();
        assert_eq!(
            json,
            r#"{"fault":"latency","cache":"app-sessions","delay":"300ms"}"#
        );
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), latency);
        assert_eq!(
            serde_json::from_str::<Fault>(r#"{"fault":"dns-down"}"#).unwrap(),
            Fault::DnsDown
        );
        assert_eq!(
            serde_json::from_str::<Fault>(r#"{"fault":"point-record","cache":"x"}"#).unwrap(),
            Fault::PointRecord { cache: "x".into() }
        );
        assert!(serde_json::from_str::<Fault>(r#"{"fault":"explode"}"#).is_err());
        assert_eq!(latency.to_string(), "latency app-sessions 300ms");

        let api = Fault::ApiError {
            service: AwsService::Elasticache,
            action: "CreateServerlessCache".into(),
            code: "Throttling".into(),
            times: 3,
        };
        let json = serde_json::to_string(&api).unwrap();
        assert_eq!(
            json,
            r#"{"fault":"api-error","service":"elasticache","action":"CreateServerlessCache","code":"Throttling","times":3}"#
        );
        assert_eq!(serde_json::from_str::<Fault>(&json).unwrap(), api);
        assert_eq!(
            api.to_string(),
            "api-error elasticache CreateServerlessCache Throttling --times 3"
        );
        assert_eq!(
            serde_json::from_str::<Fault>(r#"{"fault":"region-outage","region":"us-east-1"}"#)
                .unwrap(),
            Fault::RegionOutage {
                region: "us-east-1".into()
            }
        );
        assert_eq!(
            serde_json::from_str::<Fault>(r#"{"fault":"provision-stuck"}"#).unwrap(),
            Fault::ProvisionStuck
        );
        for (fault, json, text) in [
            (
                Fault::SubnetDelete {
                    subnet: "subnet-lab0002".into(),
                },
                r#"{"fault":"subnet-delete","subnet":"subnet-lab0002"}"#,
                "subnet-delete subnet-lab0002",
            ),
            (
                Fault::KmsDisable,
                r#"{"fault":"kms-disable"}"#,
                "kms-disable",
            ),
            (Fault::KmsEnable, r#"{"fault":"kms-enable"}"#, "kms-enable"),
            (
                Fault::HugeReply {
                    cache: "app-sessions".into(),
                },
                r#"{"fault":"huge-reply","cache":"app-sessions"}"#,
                "huge-reply app-sessions",
            ),
            (
                Fault::RefuseNew {
                    cache: "app-sessions".into(),
                },
                r#"{"fault":"refuse-new","cache":"app-sessions"}"#,
                "refuse-new app-sessions",
            ),
            (
                Fault::IamDeny {
                    action: "ec2:DescribeSubnets".into(),
                },
                r#"{"fault":"iam-deny","action":"ec2:DescribeSubnets"}"#,
                "iam-deny ec2:DescribeSubnets",
            ),
            (
                Fault::IamAllow {
                    action: "ec2:DescribeSubnets".into(),
                },
                r#"{"fault":"iam-allow","action":"ec2:DescribeSubnets"}"#,
                "iam-allow ec2:DescribeSubnets",
            ),
            (
                Fault::ZonePublic,
                r#"{"fault":"zone-public"}"#,
                "zone-public",
            ),
            (
                Fault::ZonePrivate,
                r#"{"fault":"zone-private"}"#,
                "zone-private",
            ),
        ] {
            assert_eq!(serde_json::to_string(&fault).unwrap(), json);
            assert_eq!(serde_json::from_str::<Fault>(json).unwrap(), fault);
            assert_eq!(fault.to_string(), text);
        }
    }
}
