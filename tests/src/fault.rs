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
    /// The region fails: its caches are blackholed and its ElastiCache and CloudWatch APIs
    /// answer every call with 503 `ServiceUnavailable` (so Route 53's health checks cannot read
    /// its alarms). Route 53's API keeps answering unless `route53` is set.
    RegionOutage {
        /// The AWS region, e.g. `us-east-1`.
        region: String,
        /// Route 53's API goes down with the region (as `route53-control-down`) until
        /// `region-restore`: its control plane is served from us-east-1, so only that region
        /// may take it down (tests/FIDELITY.md, row R8). Absent in JSON: false.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        route53: bool,
    },
    /// The region is back: its API answers again (Route 53's too, if its outage took it
    /// down) and its caches are cleared (as `clear`).
    RegionRestore {
        /// The AWS region.
        region: String,
    },
    /// Calls of `action` on `service` fail with the AWS error `code`, at the HTTP status AWS
    /// uses for it (`Throttling` 400, `InternalError` 500, `ServiceUnavailable` 503, anything
    /// else 400): the next `times` calls, or every call for `for` from now. Exactly one of the
    /// two is given ([`ErrorSpan::of`]).
    ApiError {
        /// `elasticache` or `route53`.
        service: AwsService,
        /// The API action, e.g. `CreateServerlessCache`.
        action: String,
        /// The error code, e.g. `Throttling`.
        code: String,
        /// How many calls fail.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        times: Option<u32>,
        /// For how long every call fails, as a humantime string in JSON (`"30s"`): sustained
        /// throttling rather than a burst.
        #[serde(
            default,
            rename = "for",
            with = "humantime_option",
            skip_serializing_if = "Option::is_none"
        )]
        lasting: Option<Duration>,
    },
    /// Every call on Route 53's API endpoint (`ChangeResourceRecordSets`,
    /// `ListResourceRecordSets`, `GetChange`, `GetHostedZone`, and any other path under it)
    /// answers 503 `ServiceUnavailable`, as its control plane does when impaired, until
    /// `route53-control-up`. The private zone's DNS keeps answering: it is the data plane.
    Route53ControlDown,
    /// Route 53's API answers again, whatever took it down (this fault or a region outage
    /// with `route53`).
    Route53ControlUp,
    /// CloudWatch in `region` answers every call with 503 `ServiceUnavailable`, and Route 53's
    /// health checks cannot read its alarms: they fall back to their
    /// `InsufficientDataHealthStatus`.
    CloudwatchDown {
        /// The AWS region, e.g. `us-east-1`.
        region: String,
    },
    /// CloudWatch in `region` answers again (unless the region's outage still holds it).
    CloudwatchUp {
        /// The AWS region.
        region: String,
    },
    /// The next `times` calls of `action` on `service` that the lab carries out succeed, and
    /// their answers never arrive: the lab holds each answer unwritten until the client hangs
    /// up or `hold` has passed, then closes the connection. A client that times out and
    /// sends the same request again meets what the first one did (for a `CREATE`,
    /// `InvalidChangeBatch` "already exists").
    CommitThenDrop {
        /// The API, e.g. `route53`.
        service: AwsService,
        /// The action, e.g. `ChangeResourceRecordSets`.
        action: String,
        /// How many calls are carried out and not answered. Absent in JSON: 1.
        #[serde(default = "one")]
        times: u32,
        /// The longest the lab holds an answer, as a humantime string in JSON; AWS documents
        /// no such figure, so it is the lab's. Absent in JSON: [`DEFAULT_HOLD`].
        #[serde(default = "default_hold", with = "humantime_string")]
        hold: Duration,
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
    /// The private zone is no longer associated with the lab VPC of `region`: `GetHostedZone`
    /// leaves that VPC out, as after `DisassociateVPCFromHostedZone`.
    ZoneVpcDisassociate {
        /// The region, e.g. `us-west-2`.
        region: String,
    },
    /// The zone is associated with the lab VPC of `region` again.
    ZoneVpcAssociate {
        /// The region.
        region: String,
    },
    /// No region has a default VPC any more: `DescribeVpcs` with the `isDefault` filter finds
    /// none (as in an account whose default VPC was deleted).
    DefaultVpcDelete,
    /// The lab VPC is every region's default VPC again (as the lab starts).
    DefaultVpcCreate,
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
            | Self::Route53ControlDown
            | Self::Route53ControlUp
            | Self::CloudwatchDown { .. }
            | Self::CloudwatchUp { .. }
            | Self::CommitThenDrop { .. }
            | Self::ProvisionFail
            | Self::ProvisionStuck
            | Self::SubnetDelete { .. }
            | Self::KmsDisable
            | Self::KmsEnable
            | Self::IamDeny { .. }
            | Self::IamAllow { .. }
            | Self::ZonePublic
            | Self::ZonePrivate
            | Self::ZoneVpcDisassociate { .. }
            | Self::ZoneVpcAssociate { .. }
            | Self::DefaultVpcDelete
            | Self::DefaultVpcCreate => None,
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
            Self::RegionOutage { region, route53 } => {
                write!(f, "region-outage {region}")?;
                if *route53 {
                    f.write_str(" --route53")?;
                }
                Ok(())
            }
            Self::RegionRestore { region } => write!(f, "region-restore {region}"),
            Self::ApiError {
                service,
                action,
                code,
                times,
                lasting,
            } => {
                write!(f, "api-error {service} {action} {code}")?;
                if let Some(times) = times {
                    write!(f, " --times {times}")?;
                }
                if let Some(lasting) = lasting {
                    write!(f, " --for {}", humantime::format_duration(*lasting))?;
                }
                Ok(())
            }
            Self::Route53ControlDown => f.write_str("route53-control-down"),
            Self::Route53ControlUp => f.write_str("route53-control-up"),
            Self::CloudwatchDown { region } => write!(f, "cloudwatch-down {region}"),
            Self::CloudwatchUp { region } => write!(f, "cloudwatch-up {region}"),
            Self::CommitThenDrop {
                service,
                action,
                times,
                hold,
            } => write!(
                f,
                "commit-then-drop {service} {action} --times {times} --hold {}",
                humantime::format_duration(*hold)
            ),
            Self::ProvisionFail => f.write_str("provision-fail"),
            Self::ProvisionStuck => f.write_str("provision-stuck"),
            Self::SubnetDelete { subnet } => write!(f, "subnet-delete {subnet}"),
            Self::KmsDisable => f.write_str("kms-disable"),
            Self::KmsEnable => f.write_str("kms-enable"),
            Self::IamDeny { action } => write!(f, "iam-deny {action}"),
            Self::IamAllow { action } => write!(f, "iam-allow {action}"),
            Self::ZonePublic => f.write_str("zone-public"),
            Self::ZonePrivate => f.write_str("zone-private"),
            Self::ZoneVpcDisassociate { region } => write!(f, "zone-vpc-disassociate {region}"),
            Self::ZoneVpcAssociate { region } => write!(f, "zone-vpc-associate {region}"),
            Self::DefaultVpcDelete => f.write_str("default-vpc-delete"),
            Self::DefaultVpcCreate => f.write_str("default-vpc-create"),
        }
    }
}

/// How long a `commit-then-drop` answer is held at most, unless the fault says otherwise: long
/// enough for any client timeout the agent might use, short enough that a client with none
/// still sees the connection end.
pub const DEFAULT_HOLD: Duration = Duration::from_secs(120);
/// The longest `hold` accepted: every wait in the lab is bounded.
pub const MAX_HOLD: Duration = Duration::from_secs(600);
/// The longest `api-error --for` accepted.
pub const MAX_ERROR_SPAN: Duration = Duration::from_secs(24 * 3600);

fn one() -> u32 {
    1
}

fn default_hold() -> Duration {
    DEFAULT_HOLD
}

/// How long an `api-error` lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSpan {
    /// The next this many calls.
    Calls(u32),
    /// Every call, for this long from when the fault is applied.
    For(Duration),
}

impl ErrorSpan {
    /// The span `api-error`'s `times` and `for` give: exactly one of them, `times` at least 1,
    /// `for` above zero and at most [`MAX_ERROR_SPAN`]. The error says what was wrong.
    pub fn of(times: Option<u32>, lasting: Option<Duration>) -> Result<Self, String> {
        match (times, lasting) {
            (Some(0), None) => Err("`times` must be at least 1".to_string()),
            (Some(n), None) => Ok(Self::Calls(n)),
            (None, Some(d)) if d.is_zero() => Err("`for` must be longer than 0s".to_string()),
            (None, Some(d)) if d > MAX_ERROR_SPAN => Err(format!(
                "`for` may be at most {}",
                humantime::format_duration(MAX_ERROR_SPAN)
            )),
            (None, Some(d)) => Ok(Self::For(d)),
            (Some(_), Some(_)) => Err(
                "give either `times` (a number of calls) or `for` (a duration such as \"30s\"), \
                 not both"
                    .to_string(),
            ),
            (None, None) => Err(
                "give `times` (a number of calls) or `for` (a duration such as \"30s\")"
                    .to_string(),
            ),
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

/// Optional durations as humantime strings; absent or `null` is `None`.
pub(crate) mod humantime_option {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|text| humantime::parse_duration(&text).map_err(serde::de::Error::custom))
            .transpose()
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
            times: Some(3),
            lasting: None,
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
                region: "us-east-1".into(),
                route53: false,
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
            (
                Fault::ZoneVpcDisassociate {
                    region: "us-west-2".into(),
                },
                r#"{"fault":"zone-vpc-disassociate","region":"us-west-2"}"#,
                "zone-vpc-disassociate us-west-2",
            ),
            (
                Fault::ZoneVpcAssociate {
                    region: "us-west-2".into(),
                },
                r#"{"fault":"zone-vpc-associate","region":"us-west-2"}"#,
                "zone-vpc-associate us-west-2",
            ),
            (
                Fault::DefaultVpcDelete,
                r#"{"fault":"default-vpc-delete"}"#,
                "default-vpc-delete",
            ),
            (
                Fault::DefaultVpcCreate,
                r#"{"fault":"default-vpc-create"}"#,
                "default-vpc-create",
            ),
        ] {
            assert_eq!(serde_json::to_string(&fault).unwrap(), json);
            assert_eq!(serde_json::from_str::<Fault>(json).unwrap(), fault);
            assert_eq!(fault.to_string(), text);
        }
    }

    #[test]
    fn route53_faults_use_the_documented_json() {
        for (fault, json, text) in [
            (
                Fault::Route53ControlDown,
                r#"{"fault":"route53-control-down"}"#,
                "route53-control-down",
            ),
            (
                Fault::Route53ControlUp,
                r#"{"fault":"route53-control-up"}"#,
                "route53-control-up",
            ),
            (
                Fault::CloudwatchDown {
                    region: "us-east-1".into(),
                },
                r#"{"fault":"cloudwatch-down","region":"us-east-1"}"#,
                "cloudwatch-down us-east-1",
            ),
            (
                Fault::CloudwatchUp {
                    region: "us-east-1".into(),
                },
                r#"{"fault":"cloudwatch-up","region":"us-east-1"}"#,
                "cloudwatch-up us-east-1",
            ),
            (
                Fault::ApiError {
                    service: AwsService::Route53,
                    action: "ChangeResourceRecordSets".into(),
                    code: "Throttling".into(),
                    times: None,
                    lasting: Some(Duration::from_secs(30)),
                },
                r#"{"fault":"api-error","service":"route53","action":"ChangeResourceRecordSets","code":"Throttling","for":"30s"}"#,
                "api-error route53 ChangeResourceRecordSets Throttling --for 30s",
            ),
            (
                Fault::CommitThenDrop {
                    service: AwsService::Route53,
                    action: "ChangeResourceRecordSets".into(),
                    times: 2,
                    hold: Duration::from_secs(5),
                },
                r#"{"fault":"commit-then-drop","service":"route53","action":"ChangeResourceRecordSets","times":2,"hold":"5s"}"#,
                "commit-then-drop route53 ChangeResourceRecordSets --times 2 --hold 5s",
            ),
            (
                Fault::RegionOutage {
                    region: "us-east-1".into(),
                    route53: true,
                },
                r#"{"fault":"region-outage","region":"us-east-1","route53":true}"#,
                "region-outage us-east-1 --route53",
            ),
            (
                Fault::RegionOutage {
                    region: "us-west-2".into(),
                    route53: false,
                },
                r#"{"fault":"region-outage","region":"us-west-2"}"#,
                "region-outage us-west-2",
            ),
        ] {
            assert_eq!(serde_json::to_string(&fault).unwrap(), json);
            assert_eq!(serde_json::from_str::<Fault>(json).unwrap(), fault);
            assert_eq!(fault.to_string(), text);
        }

        // Defaults: one call, held for two minutes; route53 false; an explicit false reads.
        assert_eq!(
            serde_json::from_str::<Fault>(
                r#"{"fault":"commit-then-drop","service":"route53","action":"ChangeResourceRecordSets"}"#
            )
            .unwrap(),
            Fault::CommitThenDrop {
                service: AwsService::Route53,
                action: "ChangeResourceRecordSets".into(),
                times: 1,
                hold: DEFAULT_HOLD,
            }
        );
        assert_eq!(
            serde_json::from_str::<Fault>(
                r#"{"fault":"region-outage","region":"us-east-1","route53":false}"#
            )
            .unwrap(),
            Fault::RegionOutage {
                region: "us-east-1".into(),
                route53: false,
            }
        );
        assert!(
            serde_json::from_str::<Fault>(
                r#"{"fault":"api-error","service":"route53","action":"GetChange","code":"Throttling","for":"soon"}"#
            )
            .is_err(),
            "a duration that does not parse"
        );
        assert!(
            serde_json::from_str::<Fault>(
                r#"{"fault":"commit-then-drop","service":"route53","action":"GetChange","drop":1}"#
            )
            .is_err(),
            "an unknown field"
        );
    }

    #[test]
    fn an_api_error_lasts_either_a_number_of_calls_or_a_time() {
        let json = |extra: &str| {
            let text = format!(
                r#"{{"fault":"api-error","service":"route53","action":"GetChange","code":"Throttling"{extra}}}"#
            );
            match serde_json::from_str::<Fault>(&text).unwrap() {
                Fault::ApiError { times, lasting, .. } => ErrorSpan::of(times, lasting),
                other => panic!("not an api-error: {other:?}"),
            }
        };
        assert_eq!(json(r#","times":3"#), Ok(ErrorSpan::Calls(3)));
        assert_eq!(
            json(r#","for":"2s""#),
            Ok(ErrorSpan::For(Duration::from_secs(2)))
        );
        assert_eq!(
            json(r#","for":null,"times":1"#),
            Ok(ErrorSpan::Calls(1)),
            "null is absent"
        );
        let both = json(r#","times":3,"for":"2s""#).unwrap_err();
        assert!(both.contains("not both"), "{both}");
        let neither = json("").unwrap_err();
        assert!(
            neither.contains("`times`") && neither.contains("`for`"),
            "{neither}"
        );
        assert!(json(r#","times":0"#).unwrap_err().contains("at least 1"));
        assert!(
            json(r#","for":"0s""#)
                .unwrap_err()
                .contains("longer than 0s")
        );
        assert!(
            json(r#","for":"2days""#)
                .unwrap_err()
                .contains("at most 1day")
        );
    }
}
