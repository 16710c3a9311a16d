//! The agent's configuration: TOML read in two phases.
//!
//! Phase one ([`raw`]) lets serde read the text into raw structs that deny unknown keys.
//! Phase two ([`Config::from_raw`]) turns them into typed values and checks the rules that
//! span fields (`timeout < interval`, TTL in 30–60 s, unique watch names, ...). Every error
//! names the key, its line and what would be valid, and all of them are reported at once so
//! that an operator fixes a file in one pass. Loading a config never changes anything.
//!
//! Secrets (passwords, webhook URLs) are read from the environment or files through [`Env`],
//! held as [`Secret`], and never printed: not by `Debug`, not by `config check`.

mod locate;
mod partition;
mod raw;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use valkey_dr_probes::{Secret, TlsServerName};

use locate::{Locator, Seg, render};
pub use partition::{Partition, arn_partition, iam_signing_region, partition, partition_of};
use raw::RawConfig;

/// Where the config is read from when neither `--config` nor `VALKEY_DR_CONFIG` says.
pub const DEFAULT_PATH: &str = "/etc/valkey-dr/agent.toml";

/// Tags `dr.tags` may hold: AWS allows 50 per cache, and valkey-dr adds its own id tag.
pub const MAX_USER_TAGS: usize = 49;

/// The DR design's bounds for the record TTL: long enough not to hammer resolvers, short
/// enough that applications follow a failover within a minute.
pub const TTL_RANGE: (Duration, Duration) = (Duration::from_secs(30), Duration::from_secs(60));

/// What the process environment offers config loading. A trait so that tests never touch the
/// real environment (they run in parallel, and `set_var` is process-global).
pub trait Env {
    /// An environment variable.
    fn var(&self, name: &str) -> Option<String>;
    /// A file's contents (password files).
    fn read_file(&self, path: &Path) -> std::io::Result<String>;
    /// The host name, the default agent id.
    fn hostname(&self) -> Option<String>;
    /// A file's permission bits (`0o600`), for files only the agent's user may read; the
    /// real file system's unless a test says otherwise.
    fn file_mode(&self, path: &Path) -> std::io::Result<u32> {
        use std::os::unix::fs::PermissionsExt as _;
        Ok(std::fs::metadata(path)?.permissions().mode() & 0o7777)
    }
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(path)
    }

    fn hostname(&self) -> Option<String> {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
    }
}

pub use valkey_dr_policies::Mode;

/// The log encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Where the admin API serves the owner's controls (`[agent] controls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Controls {
    /// Only on the unix socket `state_dir/admin.sock`, which the CLI uses: nothing on the
    /// network can drive the agent or pose as it to its CLI. The default.
    #[default]
    Socket,
    /// On the socket and on `admin_listen` too, and the CLI goes to `admin_listen`: for a CLI
    /// that cannot reach `state_dir`'s socket (another container without the volume).
    Tcp,
}

impl Controls {
    /// The value as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Controls::Socket => "socket",
            Controls::Tcp => "tcp",
        }
    }
}

/// A validated configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// `[agent]`.
    pub agent: AgentConfig,
    /// `[aws]`.
    pub aws: AwsConfig,
    /// `[dns]`.
    pub dns: DnsConfig,
    /// `[[watch]]`, at least one.
    #[serde(rename = "watch")]
    pub watches: Vec<WatchConfig>,
    /// `[[notify]]`.
    #[serde(rename = "notify")]
    pub notifiers: Vec<NotifyConfig>,
    /// Settings that are valid but deserve a loud note (verification off, plaintext, ...).
    #[serde(skip)]
    pub warnings: Vec<String>,
    /// The file it was read from, so that what the agent tells people to run names it.
    #[serde(skip)]
    pub path: PathBuf,
}

/// `[agent] readiness_interval`'s default.
pub const DEFAULT_READINESS_INTERVAL: Duration = Duration::from_secs(15 * 60);
/// `[agent] readiness_stale`'s default, unless twice `readiness_interval` is longer: a
/// Route 53 or IAM outage of an hour is worth no page, one of a day is.
pub const DEFAULT_READINESS_STALE: Duration = Duration::from_secs(3600);
/// The longest `readiness_stale`: a check nobody could run for a week is not ready.
pub const MAX_READINESS_STALE: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `create_timeout`: the RTO a DR plan of this kind promises (4 hours).
pub const MAX_CREATE_TIMEOUT: Duration = Duration::from_secs(4 * 3600);

/// `[agent] drill_interval`'s default: 90 days, the DR plan's quarterly restore test.
pub const DEFAULT_DRILL_INTERVAL: Duration = Duration::from_secs(90 * 24 * 3600);

/// `[agent]`.
#[derive(Debug, Clone, Serialize)]
pub struct AgentConfig {
    /// Names this agent in probe keys, leases and alerts. Defaults to the host name.
    pub id: String,
    /// The region this agent runs in, for the `placement` readiness check. When the config
    /// leaves it out, the daemon fills it in at start from the environment or the instance
    /// metadata (`aws::own_region`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Alert-only or auto-failover.
    pub mode: Mode,
    /// Journal and policy state live here; it must survive restarts.
    pub state_dir: PathBuf,
    /// `/metrics`, `/healthz`, `/status` (with the owner's token), `/vote` and the peers'
    /// relayed pauses; the owner's controls too with `controls = "tcp"`.
    pub admin_listen: SocketAddr,
    /// Where the owner's controls are served and the CLI sends them.
    pub controls: Controls,
    /// Log encoding.
    pub log_format: LogFormat,
    /// How often the daemon re-runs the preflight checks (`valkey-dr preflight`) on what a
    /// failover needs.
    #[serde(serialize_with = "ser_duration")]
    pub readiness_interval: Duration,
    /// How long a readiness check may stay `unknown` (not run: no answer, no permission to
    /// look) before the daemon's readiness counts it as failing: an outage of Route 53's or
    /// IAM's API must not keep the path "ready" unverified for ever.
    #[serde(serialize_with = "ser_duration")]
    pub readiness_stale: Duration,
    /// How long since the last drill before `drill_overdue` (the plan's quarterly restore
    /// test).
    #[serde(serialize_with = "ser_duration")]
    pub drill_interval: Duration,
    /// The other agents watching the same caches, as `host:port` of their admin servers: IP
    /// addresses, or names that resolve to several (a Kubernetes headless Service). Empty:
    /// this agent decides alone.
    pub peers: Vec<String>,
    /// How many agents, this one included, must see a watch down before an automatic
    /// failover; `None` is a majority of the agents known at the time of asking.
    pub quorum: Option<u32>,
    /// The token peers present to each other's `/vote` (from `peer_token_env` or
    /// `peer_token_file`); required with peers.
    #[serde(skip)]
    pub peer_token: Option<Secret>,
    /// This agent's Ed25519 private key (the base64 PKCS#8 line of `key_file`), which signs
    /// its ballots and relays; required with peers.
    #[serde(skip)]
    pub key: Option<Secret>,
    /// The peers' public keys by agent id (`peer_keys`): a ballot or relay counts only when
    /// signed by the key of the id it claims. Required with peers.
    pub peer_keys: BTreeMap<String, String>,
}

/// The fewest characters a peer token may have: 128 bits of hex.
pub const MIN_PEER_TOKEN: usize = 32;

/// `[aws]`.
#[derive(Debug, Clone, Serialize)]
pub struct AwsConfig {
    /// Overrides every AWS endpoint (the lab, tests). `AWS_ENDPOINT_URL_*` are honoured too.
    pub endpoint_url: Option<String>,
    /// A named profile for the default credential chain.
    pub profile: Option<String>,
    /// An AWS shared credentials file (INI, as `~/.aws/credentials`) that is the agent's only
    /// credential source when set: its `profile` (or `default`) section. systemd's
    /// `LoadCredential=` can supply it under `$CREDENTIALS_DIRECTORY`; the lab writes one.
    /// Only the path is kept: the keys stay in the file.
    pub credentials_file: Option<PathBuf>,
}

/// `[dns]`.
#[derive(Debug, Clone, Serialize)]
pub struct DnsConfig {
    /// Empty: the system resolver configuration, like the applications on this host.
    pub nameservers: Vec<SocketAddr>,
}

/// One watched cache and its DR plan: `[[watch]]`.
#[derive(Debug, Clone, Serialize)]
pub struct WatchConfig {
    /// Unique; used in metrics labels, state files and alerts.
    pub name: String,
    /// The private-zone record applications use, fully qualified.
    pub record: String,
    /// The private hosted zone holding the record.
    pub hosted_zone_id: String,
    /// The TTL the record is written with on failover (30–60 s).
    #[serde(serialize_with = "ser_duration")]
    pub ttl: Duration,
    /// The cache port.
    pub port: u16,
    /// The reader port, when the reader path is probed.
    pub reader_port: Option<u16>,
    /// The cache in service today.
    pub primary: PrimaryConfig,
    /// What to build in the DR region.
    pub dr: DrConfig,
    /// How to probe.
    pub probe: ProbeConfig,
    /// How the agent proves it can judge.
    pub witness: WitnessConfig,
    /// Thresholds and guards.
    pub policy: PolicyConfig,
    /// `[[watch.gate]]`: checks a failover must pass before a step; empty when none.
    #[serde(rename = "gate", skip_serializing_if = "Vec::is_empty")]
    pub gates: Vec<GateConfig>,
    /// `[watch.switch]`: how applications are moved to the DR cache.
    pub switch: SwitchConfig,
}

/// Why `namespace` cannot be a CloudWatch namespace of ours, if it cannot.
fn namespace_problem(namespace: &str) -> Result<(), &'static str> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if namespace.is_empty() || namespace.len() > 255 {
        Err("is not 1 to 255 characters long")
    } else if !namespace.chars().all(allowed) {
        Err("has characters CloudWatch refuses in a namespace")
    } else if namespace.starts_with("AWS/") {
        Err("starts with \"AWS/\", which AWS keeps for its own services")
    } else {
        Ok(())
    }
}

/// `[watch.switch]`'s default metric namespace.
pub const DEFAULT_NAMESPACE: &str = "ValkeyDR";
/// The most alarm periods an agent's alarm looks back over: ten minutes of 60 s periods.
pub const MAX_EVALUATION_PERIODS: u32 = 10;

/// `[watch.switch]`: how a failover moves the applications.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwitchConfig {
    /// `kind = "record"`: the failover rewrites the CNAME with `ChangeResourceRecordSets`
    /// (Route 53's control plane).
    Record,
    /// `kind = "health_check"`: the record is a Route 53 failover pair whose PRIMARY carries a
    /// calculated health check over one alarm-based check per agent; the agents publish their
    /// verdicts with `PutMetricData` and Route 53's data plane moves the answers.
    HealthCheck(HealthCheckSwitch),
}

impl SwitchConfig {
    /// The config's `kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            SwitchConfig::Record => "record",
            SwitchConfig::HealthCheck(_) => "health_check",
        }
    }

    /// The health-check switch's settings, for `kind = "health_check"`.
    pub fn health_check(&self) -> Option<&HealthCheckSwitch> {
        match self {
            SwitchConfig::Record => None,
            SwitchConfig::HealthCheck(h) => Some(h),
        }
    }
}

/// `[watch.switch]` with `kind = "health_check"`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthCheckSwitch {
    /// Where every agent publishes its verdict and where the alarms live; never the
    /// primary's region (the DR region by default).
    pub metric_region: String,
    /// The CloudWatch namespace of the verdicts.
    pub namespace: String,
    /// The 60 s periods an agent's alarm looks at (its `EvaluationPeriods`).
    pub evaluation_periods: u32,
    /// How many of them must say "down" (its `DatapointsToAlarm`).
    pub datapoints_to_alarm: u32,
}

/// A watch that `failover` and `failback` cannot drive in process, with no agent running:
/// `kind = "health_check"` moves the record on the verdicts the running agents publish, and
/// a failback releases them through the running agent and its peers. Refused so that nothing
/// rewrites a failover pair as if it were one record.
#[derive(Debug, thiserror::Error)]
#[error(
    "watch {watch}: [watch.switch] kind = \"health_check\" fails over and back through the verdicts the running agents publish; start the agent (valkey-dr run) and run the command again, so that it goes through the agent"
)]
pub struct NotDrivable {
    /// The watch.
    pub watch: String,
}

impl WatchConfig {
    /// `Ok` when `failover` and `failback` can drive the watch in process.
    pub fn drivable(&self) -> Result<(), NotDrivable> {
        match self.switch {
            SwitchConfig::Record => Ok(()),
            SwitchConfig::HealthCheck(_) => Err(NotDrivable {
                watch: self.name.clone(),
            }),
        }
    }
}

impl Config {
    /// `Ok` when `failover` and `failback` can drive every watch in process.
    pub fn drivable(&self) -> Result<(), NotDrivable> {
        self.watches.iter().try_for_each(WatchConfig::drivable)
    }
}

/// `[[watch.gate]]`: a check the executor runs before a step of a failover. Open, the step
/// goes on; closed, the failover is held there (journalled) and the check re-run every
/// `gate_interval` until it opens, a person approves, or a person aborts.
#[derive(Debug, Clone, Serialize)]
pub struct GateConfig {
    /// Names the gate in events, `/status` and the journal.
    pub name: String,
    /// Before which step: `provision` (before anything is taken or built) or `switch_dns`
    /// (after the DR cache is built and verified, before the record moves).
    pub at: GateAt,
    /// What is checked.
    #[serde(flatten)]
    pub check: GateCheck,
    /// Bound on one run of the check.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// What a run that does not answer within `timeout` means.
    pub on_timeout: OnTimeout,
}

/// Where a gate stands in the executor's steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateAt {
    /// Before the lease and `CreateServerlessCache`: nothing is built while it is closed.
    Provision,
    /// Before the record's compare-and-swap: the DR cache is ready, the cut waits.
    SwitchDns,
}

impl GateAt {
    /// The config spelling, which is also the step's name.
    pub fn as_str(self) -> &'static str {
        match self {
            GateAt::Provision => "provision",
            GateAt::SwitchDns => "switch_dns",
        }
    }
}

/// What a gate checks.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GateCheck {
    /// A program (argv, no shell) in its own process group, with the failover as JSON on
    /// stdin and `VALKEY_DR_*` variables; exit 0 opens the gate.
    Command {
        /// argv.
        command: Vec<String>,
    },
    /// An HTTP(S) request; a 2xx answer opens the gate.
    Http {
        /// The URL; it may carry a token, so it is a secret.
        #[serde(serialize_with = "ser_url")]
        url: Secret,
        /// The variable the URL came from, when it did.
        #[serde(skip_serializing_if = "Option::is_none")]
        url_env: Option<String>,
        /// `GET`, or `POST` with the failover as JSON.
        method: GateMethod,
    },
}

/// An http gate's method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum GateMethod {
    /// No body.
    Get,
    /// The failover as a JSON body.
    Post,
}

/// What a gate check that does not answer in time means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// The failover stays held and the check runs again (the default: a gate that cannot
    /// answer never lets a failover through).
    Hold,
    /// The failover ends, aborted, with the record untouched.
    Abort,
}

/// `[watch.primary]`.
#[derive(Debug, Clone, Serialize)]
pub struct PrimaryConfig {
    /// The primary's region.
    pub region: String,
    /// The serverless cache name.
    pub cache_name: String,
    /// The endpoint name, if known up front.
    pub endpoint: Option<String>,
}

/// `[watch.dr]`: the full `CreateServerlessCache` spec.
#[derive(Debug, Clone, Serialize)]
pub struct DrConfig {
    /// The DR region; never the primary's.
    pub region: String,
    /// The name of the cache to create.
    pub cache_name: String,
    /// `valkey` (or `redis`).
    pub engine: String,
    /// The engine major version.
    pub major_engine_version: String,
    /// Subnets in the DR VPC.
    pub subnet_ids: Vec<String>,
    /// Security groups in the DR VPC.
    pub security_group_ids: Vec<String>,
    /// The KMS key for encryption at rest.
    pub kms_key_id: Option<String>,
    /// The user group (RBAC).
    pub user_group_id: Option<String>,
    /// Snapshots to seed the cache from.
    pub snapshot_arns_to_restore: Vec<String>,
    /// Days of automatic snapshots.
    pub snapshot_retention_limit: Option<u32>,
    /// `HH:MM` UTC.
    pub daily_snapshot_time: Option<String>,
    /// Usage limits.
    pub usage_limits: Option<UsageLimits>,
    /// Tags (the failover id is added on creation).
    pub tags: BTreeMap<String, String>,
    /// How long `creating` may last before the failover fails.
    #[serde(serialize_with = "ser_duration")]
    pub create_timeout: Duration,
    /// Adopt an existing cache of this name that valkey-dr did not build.
    pub adopt_existing: bool,
    /// On demand (the plan's build during the outage), or a warm standby built in advance.
    pub standby: StandbyMode,
}

/// `[watch.dr] standby`: how the DR cache comes to exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StandbyMode {
    /// `"none"`: a failover builds the DR cache (zero idle cost; the build and the DR
    /// region's control plane are inside the RTO).
    #[default]
    None,
    /// `"warm"`: `valkey-dr standby create` (or the operator's own infrastructure code)
    /// builds it in advance; the daemon probes it every round, and a failover that finds it
    /// serving switches to it without building anything.
    Warm,
}

impl StandbyMode {
    /// The config value.
    pub fn as_str(self) -> &'static str {
        match self {
            StandbyMode::None => "none",
            StandbyMode::Warm => "warm",
        }
    }
}

/// `usage_limits`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct UsageLimits {
    /// `DataStorage.Maximum`, GB.
    pub data_storage_max_gb: Option<u32>,
    /// `ECPUPerSecond.Maximum`.
    pub ecpu_per_second_max: Option<u32>,
}

/// `[watch.probe]`.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeConfig {
    /// Time between rounds.
    #[serde(serialize_with = "ser_duration")]
    pub interval: Duration,
    /// Bound on each path of a round.
    #[serde(serialize_with = "ser_duration")]
    pub timeout: Duration,
    /// How long a path's kept connection serves before a fresh connect and handshake.
    #[serde(serialize_with = "ser_duration")]
    pub handshake_interval: Duration,
    /// Every probe key starts with it.
    pub key_prefix: String,
    /// TLS on (Serverless accepts TLS only).
    pub tls: bool,
    /// Extra roots.
    pub ca_file: Option<PathBuf>,
    /// Which name the dns path verifies.
    pub tls_server_name: TlsServerName,
    /// Verification off; loudly logged.
    pub insecure_skip_verify: bool,
    /// Probe the reader port too.
    pub reader: bool,
    /// How to authenticate.
    pub credential: Credential,
}

/// How the probe authenticates.
#[derive(Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Credential {
    /// No `AUTH`.
    None,
    /// `AUTH [username] password`.
    Password {
        /// The ACL user (`default` when absent).
        username: Option<String>,
        /// Where the password came from (`env VAR` or `file PATH`): safe to print.
        source: String,
        /// The password itself; never serialized.
        #[serde(skip)]
        password: Secret,
    },
    /// A SigV4 IAM token.
    Iam {
        /// The ACL user the token is for.
        username: String,
    },
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::None => f.write_str("None"),
            Credential::Password {
                username, source, ..
            } => f
                .debug_struct("Password")
                .field("username", username)
                .field("source", source)
                .field("password", &"<redacted>")
                .finish(),
            Credential::Iam { username } => {
                f.debug_struct("Iam").field("username", username).finish()
            }
        }
    }
}

/// `[watch.witness]`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WitnessConfig {
    /// `DescribeServerlessCaches` in the DR region.
    Aws {
        /// Bound on the call.
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
    },
    /// A TCP connect to an address outside the cache's failure domain.
    Tcp {
        /// The address.
        address: SocketAddr,
        /// Bound on the connect.
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
    },
    /// No witness: the agent trusts its own view.
    None,
}

/// `[watch.policy]`.
#[derive(Debug, Clone, Serialize)]
pub struct PolicyConfig {
    /// Consecutive failed rounds before `Down`.
    pub fall: u32,
    /// Consecutive good rounds before `Healthy` again.
    pub rise: u32,
    /// Failures must also have lasted this long.
    #[serde(serialize_with = "ser_duration")]
    pub down_after: Duration,
    /// No automatic failover within this long of the last.
    #[serde(serialize_with = "ser_duration")]
    pub cooldown: Duration,
    /// Automatic failovers allowed per window.
    pub max_auto_failovers: u32,
    /// The window for `max_auto_failovers`.
    #[serde(serialize_with = "ser_duration")]
    pub max_auto_failovers_window: Duration,
    /// Take the Route 53 lease before acting.
    pub lease: bool,
    /// How often a `Down` watch, and a held failover, are re-announced.
    #[serde(serialize_with = "ser_duration")]
    pub reminder_interval: Duration,
    /// How often a held failover's closed gates are checked again.
    #[serde(serialize_with = "ser_duration")]
    pub gate_interval: Duration,
}

/// `[[notify]]`.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NotifyConfig {
    /// A JSON POST.
    Webhook {
        /// The URL; often carries a token (Slack), so it is a secret.
        #[serde(serialize_with = "ser_url")]
        url: Secret,
        /// The variable the URL came from, when it did: `config check` prints that instead
        /// of the redacted URL, so its output works as input.
        #[serde(skip_serializing_if = "Option::is_none")]
        url_env: Option<String>,
        /// Bound on each attempt.
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
    },
    /// A program run with the event.
    Command {
        /// argv.
        command: Vec<String>,
        /// Bound on the run.
        #[serde(serialize_with = "ser_duration")]
        timeout: Duration,
    },
}

/// Whole days as `90d` (humantime would say `2months 29days 2h 52m 48s`, its month being
/// 30.44 days); anything else as humantime writes it. Both parse back to the same duration.
fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::text::duration(*d))
}

fn ser_url<S: serde::Serializer>(url: &Secret, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&redact_url(url.expose()))
}

/// Whether an `http://` URL's host is loopback: `localhost`, 127.0.0.0/8 or `::1`.
fn is_loopback_url(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let host = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `scheme://host/…`: enough to tell webhooks apart, never the path or query that carry tokens.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}/<redacted>")
}

/// One invalid setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The key path, e.g. `watch[0].probe.timeout`.
    pub key: String,
    /// Its 1-based line, when it (or its table) is in the file.
    pub line: Option<usize>,
    /// What is wrong.
    pub problem: String,
    /// What would be valid.
    pub valid: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: ")?,
            None => f.write_str("(not in file): ")?,
        }
        write!(f, "`{}`: {}", self.key, self.problem)?;
        if !self.valid.is_empty() {
            write!(f, "; valid: {}", self.valid)?;
        }
        Ok(())
    }
}

/// Why a config could not be loaded. Nothing has been changed when this is returned.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The text is not valid TOML, or a value has the wrong type or an unknown key.
    #[error("{path}: line {line}: {}{message}", key.as_ref().map(|k| format!("`{k}`: ")).unwrap_or_default())]
    Syntax {
        /// The path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The key at the error, when known.
        key: Option<String>,
        /// serde's message.
        message: String,
    },
    /// Settings parsed but break the rules.
    #[error("{path}: {} invalid setting{}:\n  {}", issues.len(), if issues.len() == 1 { "" } else { "s" },
        issues.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        /// The path.
        path: PathBuf,
        /// Every problem found.
        issues: Vec<Issue>,
    },
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path, env)
    }

    /// Validates config text; `path` is used in messages and to resolve relative paths.
    pub fn parse(text: &str, path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let locator = Locator::new(text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let offset = e.span().map(|s| s.start).unwrap_or(0);
            ConfigError::Syntax {
                path: path.to_owned(),
                line: locator.line_at(offset),
                key: locator.key_at(offset),
                message: e.message().trim().to_owned(),
            }
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let mut v = Validator {
            locator: &locator,
            issues: Vec::new(),
            warnings: Vec::new(),
            base,
            env,
        };
        let config = v.config(raw);
        if v.issues.is_empty() {
            let mut config = config;
            config.warnings = v.warnings;
            config.path = path.to_owned();
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                issues: v.issues,
            })
        }
    }

    /// The config as normalised TOML, with every default filled in and no secret in it.
    ///
    /// The output is itself a valid config with the same meaning (`config check` fed its own
    /// output accepts it): secrets appear as where they come from (`password_env`,
    /// `password_file`, `url_env`), and a webhook URL written into the file as its redacted
    /// form, which still parses but must be put back by hand.
    pub fn to_normalized_toml(&self) -> String {
        let rendered = toml::Value::try_from(self).map(|mut value| {
            as_input(&mut value);
            value
        });
        match rendered.and_then(|v| toml::to_string_pretty(&v)) {
            Ok(text) => text,
            Err(e) => format!("# cannot render config: {e}\n"),
        }
    }

    /// `valkey-dr <args>` as a person should type it for this config: with `--config` when
    /// the file is not the default one.
    pub fn command_line(&self, args: &str) -> String {
        if self.path.as_os_str().is_empty() || self.path == Path::new(DEFAULT_PATH) {
            format!("valkey-dr {args}")
        } else {
            format!("valkey-dr --config {} {args}", self.path.display())
        }
    }

    /// The watch called `name`, or an error listing the valid names.
    pub fn watch(&self, name: &str) -> Result<&WatchConfig, String> {
        self.watches.iter().find(|w| w.name == name).ok_or_else(|| {
            let names: Vec<_> = self.watches.iter().map(|w| w.name.as_str()).collect();
            format!(
                "no watch named {name:?}; valid: {}",
                names
                    .iter()
                    .map(|n| format!("{n:?}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// Turns the serialized [`Config`] into the input schema (`raw.rs`) where the two differ:
/// a probe's `credential` becomes `username` and `password_env`, `password_file` or
/// `iam_auth`; a webhook or http gate read from `url_env` names the variable instead of the
/// URL; and
/// the empty `notify` list is left out.
fn as_input(value: &mut toml::Value) {
    use toml::Value;
    let Some(root) = value.as_table_mut() else {
        return;
    };
    for watch in root
        .get_mut("watch")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
    {
        for gate in watch
            .get_mut("gate")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
            .filter_map(Value::as_table_mut)
        {
            if gate.contains_key("url_env") {
                gate.remove("url");
            }
        }
        let Some(probe) = watch.get_mut("probe").and_then(Value::as_table_mut) else {
            continue;
        };
        let Some(Value::Table(credential)) = probe.remove("credential") else {
            continue;
        };
        if let Some(user) = credential.get("username") {
            probe.insert("username".to_owned(), user.clone());
        }
        match credential.get("kind").and_then(Value::as_str) {
            Some("iam") => {
                probe.insert("iam_auth".to_owned(), Value::Boolean(true));
            }
            Some("password") => {
                let source = credential
                    .get("source")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if let Some(var) = source.strip_prefix("env ") {
                    probe.insert("password_env".to_owned(), Value::String(var.to_owned()));
                } else if let Some(file) = source.strip_prefix("file ") {
                    probe.insert("password_file".to_owned(), Value::String(file.to_owned()));
                }
            }
            _ => {}
        }
    }
    if let Some(Value::Array(notifiers)) = root.get_mut("notify") {
        for n in notifiers.iter_mut().filter_map(Value::as_table_mut) {
            if n.contains_key("url_env") {
                n.remove("url");
            }
        }
        if notifiers.is_empty() {
            root.remove("notify");
        }
    }
}

/// Phase two: typed values, defaults, cross-field rules; collects every issue.
struct Validator<'a> {
    locator: &'a Locator<'a>,
    issues: Vec<Issue>,
    warnings: Vec<String>,
    base: &'a Path,
    env: &'a dyn Env,
}

/// Builds key paths tersely: `p(&["watch"], 0, &["probe", "timeout"])`.
fn key(prefix: &[Seg], tail: &str) -> Vec<Seg> {
    let mut path = prefix.to_vec();
    path.extend(tail.split('.').map(|k| Seg::Key(k.to_owned())));
    path
}

impl Validator<'_> {
    fn issue(&mut self, path: &[Seg], problem: impl Into<String>, valid: impl Into<String>) {
        self.issues.push(Issue {
            key: render(path),
            line: self.locator.line_of(path),
            problem: problem.into(),
            valid: valid.into(),
        });
    }

    /// A duration of at most `max`. Every duration key has a ceiling: a typo such as
    /// `interval = "5000h"` must be an error, not an agent that never probes again (and
    /// a duration so large that adding it to a clock overflows must never reach one).
    fn duration(
        &mut self,
        path: &[Seg],
        raw: Option<&str>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = raw else { return default };
        match humantime::parse_duration(text) {
            Ok(d) if d > max => {
                let max = crate::text::duration(max);
                self.issue(
                    path,
                    format!("{text:?} is more than {max}"),
                    format!("a duration of at most {max}"),
                );
                default
            }
            Ok(d) => d,
            Err(e) => {
                self.issue(
                    path,
                    format!("{text:?} is not a duration ({e})"),
                    "a duration such as \"500ms\", \"30s\", \"15m\" or \"1h 30m\"",
                );
                default
            }
        }
    }

    fn positive_duration(
        &mut self,
        path: &[Seg],
        raw: Option<&str>,
        default: Duration,
        max: Duration,
    ) -> Duration {
        let d = self.duration(path, raw, default, max);
        if d.is_zero() {
            self.issue(
                path,
                "must be greater than zero",
                "a positive duration such as \"5s\"",
            );
            return default;
        }
        d
    }

    /// `dr.tags` against the rules `CreateServerlessCache` enforces, so that a bad tag fails
    /// at start-up instead of in the middle of an outage: keys of 1-128 and values of 0-256
    /// characters, no key in the reserved `aws:` prefix, and at most 50 tags on the cache
    /// counting the one valkey-dr adds (the failover id, or the drill id). The alphabet is the
    /// strictest AWS documents for a serverless cache's tags (the CloudFormation schema:
    /// ASCII letters, digits, spaces and `_ . : / = + - @`; tests/FIDELITY.md, E7).
    fn tags(&mut self, path: &[Seg], tags: &BTreeMap<String, String>) {
        let allowed = |c: char| c.is_ascii_alphanumeric() || " _.:/=+-@".contains(c);
        let alphabet = "ASCII letters, digits, spaces and _ . : / = + - @";
        if tags.len() > MAX_USER_TAGS {
            self.issue(
                path,
                format!("{} tags, and valkey-dr adds one more", tags.len()),
                format!("at most {MAX_USER_TAGS} tags (AWS allows 50 per cache)"),
            );
        }
        for (k, v) in tags {
            let mut at = path.to_vec();
            at.push(Seg::Key(k.clone()));
            let chars = k.chars().count();
            if chars == 0 || chars > 128 {
                self.issue(
                    &at,
                    format!("a tag key of {chars} characters"),
                    "a key of 1 to 128 characters",
                );
            }
            if k.to_ascii_lowercase().starts_with("aws:") {
                self.issue(
                    &at,
                    format!("the key {k:?} uses the prefix aws:, which AWS reserves"),
                    "a key that does not start with \"aws:\"",
                );
            }
            if k.starts_with("valkey-dr:") {
                self.issue(
                    &at,
                    format!(
                        "the key {k:?} uses the prefix valkey-dr:, which valkey-dr sets itself"
                    ),
                    "a key that does not start with \"valkey-dr:\"",
                );
            }
            if let Some(c) = k.chars().find(|c| !allowed(*c)) {
                self.issue(
                    &at,
                    format!("the key {k:?} has the character {c:?}"),
                    format!("a key of {alphabet}"),
                );
            }
            let chars = v.chars().count();
            if chars > 256 {
                self.issue(
                    &at,
                    format!("a value of {chars} characters"),
                    "a value of at most 256 characters",
                );
            }
            if let Some(c) = v.chars().find(|c| !allowed(*c)) {
                self.issue(
                    &at,
                    format!("the value has the character {c:?}"),
                    format!("a value of {alphabet}"),
                );
            }
        }
    }

    fn count(&mut self, path: &[Seg], raw: Option<i64>, default: u32, min: u32, max: u32) -> u32 {
        let Some(n) = raw else { return default };
        match u32::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => n,
            _ => {
                self.issue(
                    path,
                    format!("{n} is out of range"),
                    format!("a whole number from {min} to {max}"),
                );
                default
            }
        }
    }

    fn port(&mut self, path: &[Seg], raw: Option<i64>, default: u16) -> u16 {
        self.count(path, raw, u32::from(default), 1, 65535) as u16
    }

    fn required(&mut self, path: &[Seg], raw: Option<String>, valid: &str) -> String {
        match raw {
            Some(s) if !s.trim().is_empty() => s.trim().to_owned(),
            Some(_) => {
                self.issue(path, "must not be empty", valid);
                String::new()
            }
            None => {
                self.issue(path, "is required", valid);
                String::new()
            }
        }
    }

    fn path_buf(&self, raw: &str) -> PathBuf {
        let p = PathBuf::from(raw);
        if p.is_absolute() {
            p
        } else {
            self.base.join(p)
        }
    }

    fn config(&mut self, raw: RawConfig) -> Config {
        let agent = self.agent(raw.agent);
        let aws = self.aws(raw.aws);
        let dns = self.dns(raw.dns);
        if raw.watch.is_empty() {
            self.issue(
                &[Seg::Key("watch".into())],
                "no [[watch]] is configured",
                "at least one [[watch]] table with name, record, hosted_zone_id, [watch.primary] and [watch.dr]",
            );
        }
        let mut watches = Vec::with_capacity(raw.watch.len());
        let mut seen = HashSet::new();
        for (i, w) in raw.watch.into_iter().enumerate() {
            let prefix = [Seg::Key("watch".into()), Seg::Index(i)];
            let watch = self.watch(&prefix, w);
            if !watch.name.is_empty() && !seen.insert(watch.name.clone()) {
                self.issue(
                    &key(&prefix, "name"),
                    format!("duplicate watch name {:?}", watch.name),
                    "a name used by no other [[watch]]",
                );
            }
            watches.push(watch);
        }
        let notifiers = raw
            .notify
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| self.notify(&[Seg::Key("notify".into()), Seg::Index(i)], n))
            .collect();
        Config {
            agent,
            aws,
            dns,
            watches,
            notifiers,
            warnings: Vec::new(),
            path: PathBuf::new(),
        }
    }

    fn agent(&mut self, raw: raw::RawAgent) -> AgentConfig {
        let p = [Seg::Key("agent".into())];
        let (peers, quorum, peer_token) = self.peers(&p, &raw);
        let (signing_key, peer_keys) = self.keys(&p, &raw, !peers.is_empty());
        let id = match raw.id {
            Some(id) => {
                if !valid_agent_id(&id) {
                    self.issue(
                        &key(&p, "id"),
                        format!("{id:?} is not a valid agent id"),
                        VALID_AGENT_ID,
                    );
                }
                id
            }
            None => self
                .env
                .hostname()
                .map(|h| {
                    h.chars()
                        .filter(|c| id_char(*c))
                        .take(64)
                        .collect::<String>()
                })
                .filter(|id| valid_agent_id(id))
                .unwrap_or_else(|| "valkey-dr".to_owned()),
        };
        let mode = match raw.mode.as_deref() {
            None | Some("alert-only") => Mode::AlertOnly,
            Some("auto-failover") => Mode::AutoFailover,
            Some("prepare") => Mode::Prepare,
            Some(other) => {
                self.issue(
                    &key(&p, "mode"),
                    format!("unknown mode {other:?}"),
                    "\"alert-only\", \"prepare\" or \"auto-failover\"",
                );
                Mode::AlertOnly
            }
        };
        let state_dir = match raw.state_dir.as_deref() {
            None => PathBuf::from("/var/lib/valkey-dr"),
            Some("") => {
                self.issue(
                    &key(&p, "state_dir"),
                    "must not be empty",
                    "a directory path",
                );
                PathBuf::new()
            }
            Some(dir) => self.path_buf(dir),
        };
        let admin_listen = match raw.admin_listen.as_deref() {
            None => SocketAddr::from(([127, 0, 0, 1], 9187)),
            Some(text) => text.parse().unwrap_or_else(|_| {
                self.issue(
                    &key(&p, "admin_listen"),
                    format!("{text:?} is not an IP address and port"),
                    "an address such as \"127.0.0.1:9187\" or \"[::1]:9187\"",
                );
                SocketAddr::from(([127, 0, 0, 1], 9187))
            }),
        };
        if !admin_listen.ip().is_loopback() {
            self.warnings.push(format!(
                "agent.admin_listen {admin_listen} is not loopback: /metrics and /healthz are reachable from the network (/status needs the owner's token, /vote the peers' token)"
            ));
        }
        let controls = match raw.controls.as_deref() {
            None | Some("socket") => Controls::Socket,
            Some("tcp") => Controls::Tcp,
            Some(other) => {
                self.issue(
                    &key(&p, "controls"),
                    format!("unknown controls channel {other:?}"),
                    "\"socket\" (state_dir/admin.sock, the default) or \"tcp\" (admin_listen too)",
                );
                Controls::Socket
            }
        };
        let log_format = match raw.log_format.as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                self.issue(
                    &key(&p, "log_format"),
                    format!("unknown log format {other:?}"),
                    "\"text\" or \"json\"",
                );
                LogFormat::Text
            }
        };
        let readiness_interval = self.positive_duration(
            &key(&p, "readiness_interval"),
            raw.readiness_interval.as_deref(),
            DEFAULT_READINESS_INTERVAL,
            Duration::from_secs(24 * 3600),
        );
        // Twice the interval at least: a pass ends some time after the interval, so with less
        // one pass that could not check would already be stale.
        let stale_floor = readiness_interval.saturating_mul(2);
        let readiness_stale = self.positive_duration(
            &key(&p, "readiness_stale"),
            raw.readiness_stale.as_deref(),
            DEFAULT_READINESS_STALE.max(stale_floor),
            MAX_READINESS_STALE,
        );
        if readiness_stale < stale_floor {
            self.issue(
                &key(&p, "readiness_stale"),
                format!(
                    "readiness_stale {} is shorter than twice readiness_interval {}",
                    crate::text::duration(readiness_stale),
                    crate::text::duration(readiness_interval)
                ),
                format!(
                    "at least {} (twice readiness_interval), so that one pass that could not check never fails on its own; e.g. \"1h\" (the default)",
                    crate::text::duration(stale_floor)
                ),
            );
        }
        let drill_interval = self.positive_duration(
            &key(&p, "drill_interval"),
            raw.drill_interval.as_deref(),
            DEFAULT_DRILL_INTERVAL,
            Duration::from_secs(365 * 24 * 3600),
        );
        let region = raw
            .region
            .clone()
            .map(|r| self.region(&key(&p, "region"), Some(r)));
        AgentConfig {
            id,
            region,
            mode,
            state_dir,
            admin_listen,
            controls,
            log_format,
            readiness_interval,
            readiness_stale,
            drill_interval,
            peers,
            quorum,
            peer_token,
            key: signing_key,
            peer_keys,
        }
    }

    /// `key_file` and `peer_keys`, both required with peers: the key file with no bits for
    /// others and none but read for its group, holding an Ed25519 key, every public key 32 bytes of base64.
    fn keys(
        &mut self,
        p: &[Seg],
        raw: &raw::RawAgent,
        with_peers: bool,
    ) -> (Option<Secret>, BTreeMap<String, String>) {
        use crate::identity::public_key;
        let make = "make one with `valkey-dr keygen --out /etc/valkey-dr/agent.key` and list its public key in every peer's peer_keys";
        let signing_key = match raw.key_file.as_deref() {
            None => {
                if with_peers {
                    self.issue(&key(p, "key_file"), "peers need this agent's own signing key (key_file) and the peers' public keys (peer_keys)", make);
                }
                None
            }
            Some(file) => self.key_file(p, file, make),
        };
        let mut keys = BTreeMap::new();
        for (id, text) in raw.peer_keys.iter().flatten() {
            let mut at = key(p, "peer_keys");
            at.push(Seg::Key(id.clone()));
            if !valid_agent_id(id) {
                self.issue(
                    &at,
                    format!("{id:?} is not a valid agent id"),
                    VALID_AGENT_ID,
                );
            } else if let Err(e) = public_key(text) {
                self.issue(
                    &at,
                    format!("the public key of {id} {e}"),
                    "the line `valkey-dr keygen` printed for that agent",
                );
            } else {
                keys.insert(id.clone(), text.trim().to_owned());
            }
        }
        if with_peers && raw.peer_keys.as_ref().is_none_or(BTreeMap::is_empty) {
            self.issue(&key(p, "peer_keys"), "peers need the peers' public keys, so that a ballot counts for the agent that signed it", "peer_keys = { agent-b = \"BASE64\", … }, each line as `valkey-dr keygen` printed it on that agent");
        }
        (signing_key, keys)
    }

    /// The key in `file`, if it is the agent's alone and holds an Ed25519 key.
    fn key_file(&mut self, p: &[Seg], file: &str, make: &str) -> Option<Secret> {
        let path = self.path_buf(file);
        let at = key(p, "key_file");
        match self.env.file_mode(&path) {
            // Group read is the one exception: a Kubernetes Secret volume gives it to the
            // pod's own fsGroup (deploy/kubernetes/failover.yaml), and to no one else.
            Ok(mode) if mode & 0o037 != 0 => {
                self.issue(
                    &at,
                    format!(
                        "{} is open to others or writable by its group (mode {mode:04o})",
                        path.display()
                    ),
                    format!(
                        "a file only the agent's user can read (0640 and 0440 are taken too): chmod 600 {}",
                        path.display()
                    ),
                );
                return None;
            }
            Ok(_) => {}
            Err(e) => {
                self.issue(&at, format!("cannot read {}: {e}", path.display()), make);
                return None;
            }
        }
        let text = match self.env.read_file(&path) {
            Ok(text) => text,
            Err(e) => {
                self.issue(&at, format!("cannot read {}: {e}", path.display()), make);
                return None;
            }
        };
        match crate::identity::Identity::from_file_text(&text) {
            Ok(_) => Some(Secret::new(text.trim().to_owned())),
            Err(e) => {
                // Never echo the value.
                self.issue(&at, format!("{} {e}", path.display()), make);
                None
            }
        }
    }

    /// `peers`, `quorum` and the peer token: every peer entry a `host:port`, a quorum only
    /// with peers, and exactly one token source with peers.
    fn peers(
        &mut self,
        p: &[Seg],
        raw: &raw::RawAgent,
    ) -> (Vec<String>, Option<u32>, Option<Secret>) {
        let mut peers = Vec::new();
        for (i, entry) in raw.peers.iter().flatten().enumerate() {
            let mut at = key(p, "peers");
            at.push(Seg::Index(i));
            let port = entry
                .rsplit_once(':')
                .filter(|(host, _)| !host.is_empty() && host != &"[")
                .and_then(|(_, port)| port.parse::<u16>().ok())
                .filter(|port| *port != 0);
            if port.is_none() || entry.contains('/') || entry.trim() != entry {
                self.issue(
                    &at,
                    format!("{entry:?} is not a host and port"),
                    "\"10.0.0.12:9187\", \"[fd00::12]:9187\" or \"valkey-dr-peers.ns.svc.cluster.local:9187\"",
                );
                continue;
            }
            if !peers.contains(entry) {
                peers.push(entry.clone());
            }
        }
        let quorum = raw.quorum.map(|_| {
            // At most the agents that could exist: itself plus, per entry, a name may
            // resolve to many, so only a sane ceiling is checked here.
            self.count(&key(p, "quorum"), raw.quorum, 1, 1, 100)
        });
        if quorum.is_some() && peers.is_empty() && raw.peers.is_none() {
            self.issue(
                &key(p, "quorum"),
                "is set without peers",
                "peers = [\"host:port\", …] with the quorum, or no quorum",
            );
        }
        let token = match (&raw.peer_token_env, &raw.peer_token_file) {
            (Some(_), Some(_)) => {
                self.issue(
                    &key(p, "peer_token_env"),
                    "both peer_token_env and peer_token_file are set",
                    "exactly one of them",
                );
                None
            }
            (Some(var), None) => {
                match self.env.var(var) {
                    Some(token) => Some((token, key(p, "peer_token_env"), format!("${var}"))),
                    None => {
                        self.issue(
                        &key(p, "peer_token_env"),
                        format!("environment variable {var} is not set"),
                        format!("export {var} in the agent's environment (systemd: EnvironmentFile=)"),
                    );
                        None
                    }
                }
            }
            (None, Some(file)) => {
                let file = self.path_buf(file);
                match self.env.read_file(&file) {
                    Ok(token) => Some((
                        token.trim_end_matches(['\n', '\r']).to_owned(),
                        key(p, "peer_token_file"),
                        file.display().to_string(),
                    )),
                    Err(e) => {
                        self.issue(
                            &key(p, "peer_token_file"),
                            format!("cannot read {}: {e}", file.display()),
                            "a readable file holding the token shared by the peers",
                        );
                        None
                    }
                }
            }
            (None, None) => None,
        };
        let token = token.and_then(|(token, at, source)| {
            if token.chars().count() < MIN_PEER_TOKEN || token.chars().any(char::is_whitespace) {
                // Never echo the value.
                self.issue(
                    &at,
                    format!("the token in {source} is shorter than {MIN_PEER_TOKEN} characters or holds spaces"),
                    format!("{MIN_PEER_TOKEN}+ characters without spaces, e.g. from `openssl rand -hex 32`"),
                );
                return None;
            }
            Some(Secret::new(token))
        });
        if !peers.is_empty()
            && token.is_none()
            && raw.peer_token_env.is_none()
            && raw.peer_token_file.is_none()
        {
            self.issue(
                &key(p, "peers"),
                "peers need a shared token, so that only peers can ask for votes",
                "peer_token_env = \"VAR\" or peer_token_file = \"/path\", the same on every agent",
            );
        }
        (peers, quorum, token)
    }

    fn aws(&mut self, raw: raw::RawAws) -> AwsConfig {
        let p = [Seg::Key("aws".into())];
        for (name, present) in [
            ("access_key_id", raw.access_key_id.is_some()),
            ("secret_access_key", raw.secret_access_key.is_some()),
            ("session_token", raw.session_token.is_some()),
        ] {
            if present {
                self.issue(
                    &key(&p, name),
                    "AWS credentials are never read from the config text",
                    "the default credential chain: an instance or task role, AWS_* environment variables, `profile`, or a `credentials_file`",
                );
            }
        }
        // Relative to the config file, as every path in it. Read once here so that a missing
        // or unreadable file is a config error at start, not a credentials error mid-outage;
        // its content (keys) is dropped at once.
        let credentials_file = raw.credentials_file.map(|f| self.base.join(f));
        if let Some(path) = &credentials_file
            && let Err(e) = self.env.read_file(path)
        {
            self.issue(
                &key(&p, "credentials_file"),
                format!("{} cannot be read: {e}", path.display()),
                "a readable AWS shared credentials file, e.g. one systemd's LoadCredential= puts under $CREDENTIALS_DIRECTORY",
            );
        }
        if let Some(url) = &raw.endpoint_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            self.issue(
                &key(&p, "endpoint_url"),
                format!("{url:?} is not an http(s) URL"),
                "a URL such as \"http://127.0.0.1:4566\"",
            );
        }
        AwsConfig {
            endpoint_url: raw.endpoint_url,
            profile: raw.profile,
            credentials_file,
        }
    }

    fn dns(&mut self, raw: raw::RawDns) -> DnsConfig {
        let p = [Seg::Key("dns".into()), Seg::Key("nameservers".into())];
        let mut nameservers = Vec::new();
        for text in raw.nameservers.unwrap_or_default() {
            // A bare IP means port 53, as in resolv.conf.
            let parsed = text.parse::<SocketAddr>().or_else(|_| {
                text.parse::<std::net::IpAddr>()
                    .map(|ip| SocketAddr::new(ip, 53))
            });
            match parsed {
                Ok(addr) => nameservers.push(addr),
                Err(_) => self.issue(
                    &p,
                    format!("{text:?} is not an IP address (with optional port)"),
                    "addresses such as \"10.0.0.2\" or \"127.0.0.1:5353\"; leave unset for the system resolver",
                ),
            }
        }
        DnsConfig { nameservers }
    }

    fn watch(&mut self, p: &[Seg], raw: raw::RawWatch) -> WatchConfig {
        let name = self.required(
            &key(p, "name"),
            raw.name,
            "a short name such as \"sessions\"",
        );
        if !name.is_empty() && !name.chars().all(id_char) {
            self.issue(
                &key(p, "name"),
                format!("{name:?} has characters that cannot go in metric labels and file names"),
                "a-z, A-Z, 0-9, '.', '_' and '-'",
            );
        }
        let record = self.required(
            &key(p, "record"),
            raw.record,
            "the fully qualified private-zone name apps use, e.g. \"valkey.app.internal.\"",
        );
        let record = if record.is_empty() {
            record
        } else {
            self.dns_name(&key(p, "record"), &record)
        };
        let hosted_zone_id = self.required(
            &key(p, "hosted_zone_id"),
            raw.hosted_zone_id,
            "the Route 53 private hosted zone id, e.g. \"Z0123456789ABC\"",
        );
        if !hosted_zone_id.is_empty()
            && !hosted_zone_id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        {
            self.issue(
                &key(p, "hosted_zone_id"),
                format!("{hosted_zone_id:?} is not a hosted zone id"),
                "upper-case letters and digits, e.g. \"Z0123456789ABC\" (without \"/hostedzone/\")",
            );
        }
        let ttl = self.duration(
            &key(p, "ttl"),
            raw.ttl.as_deref(),
            Duration::from_secs(30),
            Duration::from_secs(24 * 3600),
        );
        if !(TTL_RANGE.0..=TTL_RANGE.1).contains(&ttl) || ttl.subsec_nanos() != 0 {
            self.issue(
                &key(p, "ttl"),
                format!(
                    "{} is outside the DR design's TTL range",
                    crate::text::duration(ttl)
                ),
                "whole seconds from 30s to 60s, e.g. \"30s\"",
            );
        }
        let port = self.port(&key(p, "port"), raw.port, 6379);
        let primary = self.primary(p, raw.primary);
        let dr = self.dr(p, raw.dr, &primary);
        let probe = self.probe(&key(p, "probe"), raw.probe);
        let reader_port = match (probe.reader, raw.reader_port) {
            (true, rp) => Some(self.port(&key(p, "reader_port"), rp, 6380)),
            (false, Some(_)) => {
                self.issue(
                    &key(p, "reader_port"),
                    "is set but the reader path is off",
                    "set probe.reader = true to probe it, or remove reader_port",
                );
                None
            }
            (false, None) => None,
        };
        let witness = self.witness(&key(p, "witness"), raw.witness, probe.timeout);
        let policy = self.policy(&key(p, "policy"), raw.policy, &probe);
        let gates = self.gates(p, raw.gate);
        let switch = self.switch(p, raw.switch, &primary, &dr);
        WatchConfig {
            name,
            record,
            hosted_zone_id,
            ttl,
            port,
            reader_port,
            primary,
            dr,
            probe,
            witness,
            policy,
            gates,
            switch,
        }
    }

    fn switch(
        &mut self,
        p: &[Seg],
        raw: Option<raw::RawSwitch>,
        primary: &PrimaryConfig,
        dr: &DrConfig,
    ) -> SwitchConfig {
        let p = key(p, "switch");
        let Some(raw) = raw else {
            return SwitchConfig::Record;
        };
        match raw.kind.as_deref() {
            None | Some("record") => {
                let set = [
                    ("metric_region", raw.metric_region.is_some()),
                    ("namespace", raw.namespace.is_some()),
                    ("evaluation_periods", raw.evaluation_periods.is_some()),
                    ("datapoints_to_alarm", raw.datapoints_to_alarm.is_some()),
                ];
                for (name, _) in set.iter().filter(|(_, set)| *set) {
                    self.issue(
                        &key(&p, name),
                        "applies to kind = \"health_check\" only",
                        "remove it, or set kind = \"health_check\"",
                    );
                }
                SwitchConfig::Record
            }
            Some("health_check") => {
                SwitchConfig::HealthCheck(self.health_check_switch(&p, raw, primary, dr))
            }
            Some(other) => {
                self.issue(
                    &key(&p, "kind"),
                    format!("unknown switch {other:?}"),
                    "\"record\" (the failover rewrites the record) or \"health_check\" (the agents' verdicts drive Route 53 health checks)",
                );
                SwitchConfig::Record
            }
        }
    }

    fn health_check_switch(
        &mut self,
        p: &[Seg],
        raw: raw::RawSwitch,
        primary: &PrimaryConfig,
        dr: &DrConfig,
    ) -> HealthCheckSwitch {
        if dr.standby != StandbyMode::Warm {
            self.issue(
                &key(p, "kind"),
                "\"health_check\" needs a warm standby: the SECONDARY record points at it, and nothing is built at failover",
                "set [watch.dr] standby = \"warm\", or kind = \"record\"",
            );
        }
        let metric_region = match raw.metric_region {
            Some(region) => self.region(&key(p, "metric_region"), Some(region)),
            None => dr.region.clone(),
        };
        if !metric_region.is_empty() && metric_region == primary.region {
            self.issue(
                &key(p, "metric_region"),
                format!("{metric_region:?} is the primary's region: its outage would silence every verdict"),
                "another region of the same partition; the DR region by default",
            );
        } else if !metric_region.is_empty()
            && !primary.region.is_empty()
            && partition(&metric_region) != partition(&primary.region)
        {
            self.issue(
                &key(p, "metric_region"),
                format!(
                    "{metric_region:?} is in another partition than the primary's {:?}: Route 53 health checks cannot read its alarms",
                    primary.region
                ),
                "a region of the primary's partition; the DR region by default",
            );
        }
        let namespace = raw
            .namespace
            .unwrap_or_else(|| DEFAULT_NAMESPACE.to_owned());
        if let Err(why) = namespace_problem(&namespace) {
            self.issue(
                &key(p, "namespace"),
                format!("{namespace:?} {why}"),
                "1 to 255 ASCII letters, digits and . - _ / # : or space, not starting with \"AWS/\"; \"ValkeyDR\" by default",
            );
        }
        let evaluation_periods = self.count(
            &key(p, "evaluation_periods"),
            raw.evaluation_periods,
            1,
            1,
            MAX_EVALUATION_PERIODS,
        );
        let datapoints_to_alarm = self.count(
            &key(p, "datapoints_to_alarm"),
            raw.datapoints_to_alarm,
            evaluation_periods,
            1,
            evaluation_periods,
        );
        HealthCheckSwitch {
            metric_region,
            namespace,
            evaluation_periods,
            datapoints_to_alarm,
        }
    }

    fn gates(&mut self, p: &[Seg], raw: Vec<raw::RawGate>) -> Vec<GateConfig> {
        let mut gates: Vec<GateConfig> = Vec::with_capacity(raw.len());
        for (i, g) in raw.into_iter().enumerate() {
            let p = [p, &[Seg::Key("gate".into()), Seg::Index(i)]].concat();
            let at = match g.at.as_deref() {
                Some("provision") => GateAt::Provision,
                Some("switch_dns") => GateAt::SwitchDns,
                other => {
                    self.issue(
                        &key(&p, "at"),
                        match other {
                            Some(a) => format!("unknown step {a:?}"),
                            None => "is required".into(),
                        },
                        "\"provision\" (before anything is built) or \"switch_dns\" (before the record moves)",
                    );
                    continue;
                }
            };
            let timeout = self.positive_duration(
                &key(&p, "timeout"),
                g.timeout.as_deref(),
                Duration::from_secs(10),
                Duration::from_secs(5 * 60),
            );
            let on_timeout = match g.on_timeout.as_deref() {
                None | Some("hold") => OnTimeout::Hold,
                Some("abort") => OnTimeout::Abort,
                Some(other) => {
                    self.issue(
                        &key(&p, "on_timeout"),
                        format!("unknown action {other:?}"),
                        "\"hold\" (the default: stay held and check again) or \"abort\"",
                    );
                    OnTimeout::Hold
                }
            };
            let (check, default_name) = match g.kind.as_deref() {
                Some("command") => match g.command {
                    Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                        let program = Path::new(&argv[0])
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| argv[0].clone());
                        (GateCheck::Command { command: argv }, program)
                    }
                    _ => {
                        self.issue(
                            &key(&p, "command"),
                            "is required and must not be empty",
                            "an argv list, e.g. [\"/usr/local/bin/vpn-failed-over\"]",
                        );
                        continue;
                    }
                },
                Some("http") => {
                    let method = match g.method.as_deref() {
                        None | Some("GET") => GateMethod::Get,
                        Some("POST") => GateMethod::Post,
                        Some(other) => {
                            self.issue(
                                &key(&p, "method"),
                                format!("unknown method {other:?}"),
                                "\"GET\" or \"POST\" (with the failover as JSON)",
                            );
                            GateMethod::Get
                        }
                    };
                    let url_env = g.url_env.clone();
                    let Some(url) = self.http_url(&p, g.url, g.url_env) else {
                        continue;
                    };
                    let host = redact_url(&url)
                        .split("://")
                        .nth(1)
                        .and_then(|rest| rest.split('/').next())
                        .unwrap_or("http")
                        .replace(':', "-");
                    (
                        GateCheck::Http {
                            url: Secret::new(url),
                            url_env,
                            method,
                        },
                        host,
                    )
                }
                other => {
                    self.issue(
                        &key(&p, "kind"),
                        match other {
                            Some(k) => format!("unknown gate kind {k:?}"),
                            None => "is required".into(),
                        },
                        "\"command\" or \"http\"",
                    );
                    continue;
                }
            };
            let name = g.name.unwrap_or(default_name);
            if name.is_empty() || name.len() > 64 || !name.chars().all(id_char) {
                self.issue(
                    &key(&p, "name"),
                    format!("{name:?} is not a valid gate name"),
                    "1–64 characters from a-z, A-Z, 0-9, '.', '_' and '-'",
                );
            } else if gates.iter().any(|other| other.name == name) {
                self.issue(
                    &key(&p, "name"),
                    format!("two gates of this watch are called {name:?}"),
                    "a name no other gate of the watch has (set name = \"...\")",
                );
            }
            gates.push(GateConfig {
                name,
                at,
                check,
                timeout,
                on_timeout,
            });
        }
        gates
    }

    /// Normalises a DNS name to lower case with a trailing dot, or reports why it is not one.
    fn dns_name(&mut self, path: &[Seg], name: &str) -> String {
        let bare = name.strip_suffix('.').unwrap_or(name);
        let valid = !bare.is_empty()
            && bare.len() <= 253
            && bare.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            });
        if !valid {
            self.issue(
                path,
                format!("{name:?} is not a DNS name"),
                "dot-separated labels of letters, digits and '-', e.g. \"valkey.app.internal.\"",
            );
        }
        format!("{}.", bare.to_ascii_lowercase())
    }

    fn region(&mut self, path: &[Seg], raw: Option<String>) -> String {
        let region = self.required(path, raw, "an AWS region such as \"us-east-1\"");
        let ok = region.split('-').count() >= 3
            && region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if !region.is_empty() && !ok {
            self.issue(
                path,
                format!("{region:?} is not an AWS region name"),
                "a region such as \"us-east-1\" or \"eu-west-2\"",
            );
        } else if !region.is_empty() && partition_of(&region).is_none() {
            // The SDK knows a partition that valkey-dr cannot name: every ARN of
            // `iam-policy` would name the wrong one.
            self.issue(
                path,
                format!(
                    "{region:?} is in a partition valkey-dr does not know (IAM signs for {:?} there)",
                    iam_signing_region(&region).unwrap_or_default()
                ),
                format!(
                    "a region of {}",
                    partition::PARTITIONS.map(|p| p.name).join(", ")
                ),
            );
        }
        region
    }

    fn cache_name(&mut self, path: &[Seg], raw: Option<String>) -> String {
        let name = self.required(
            path,
            raw,
            "a serverless cache name such as \"app-sessions\"",
        );
        // ElastiCache's own rule for serverless cache names.
        let ok = name.len() <= 40
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.ends_with('-')
            && !name.contains("--");
        if !name.is_empty() && !ok {
            self.issue(
                path,
                format!("{name:?} is not a valid serverless cache name"),
                "1–40 lower-case letters, digits and single hyphens, starting with a letter and not ending with a hyphen",
            );
        }
        name
    }

    fn primary(&mut self, p: &[Seg], raw: Option<raw::RawPrimary>) -> PrimaryConfig {
        let p = key(p, "primary");
        let Some(raw) = raw else {
            self.issue(
                &p,
                "is required",
                "a [watch.primary] table with region and cache_name",
            );
            return PrimaryConfig {
                region: String::new(),
                cache_name: String::new(),
                endpoint: None,
            };
        };
        let region = self.region(&key(&p, "region"), raw.region);
        let cache_name = self.cache_name(&key(&p, "cache_name"), raw.cache_name);
        let endpoint = raw.endpoint.map(|e| {
            let name = self.dns_name(&key(&p, "endpoint"), &e);
            name.trim_end_matches('.').to_owned()
        });
        PrimaryConfig {
            region,
            cache_name,
            endpoint,
        }
    }

    fn dr(&mut self, p: &[Seg], raw: Option<raw::RawDr>, primary: &PrimaryConfig) -> DrConfig {
        let p = key(p, "dr");
        let Some(raw) = raw else {
            self.issue(
                &p,
                "is required: it is the plan a failover carries out",
                "a [watch.dr] table with region, cache_name, subnet_ids and security_group_ids",
            );
            return DrConfig {
                region: String::new(),
                cache_name: String::new(),
                engine: "valkey".into(),
                major_engine_version: "8".into(),
                subnet_ids: vec![],
                security_group_ids: vec![],
                kms_key_id: None,
                user_group_id: None,
                snapshot_arns_to_restore: vec![],
                snapshot_retention_limit: None,
                daily_snapshot_time: None,
                usage_limits: None,
                tags: BTreeMap::new(),
                create_timeout: Duration::from_secs(45 * 60),
                adopt_existing: false,
                standby: StandbyMode::None,
            };
        };
        let region = self.region(&key(&p, "region"), raw.region);
        if !region.is_empty() && region == primary.region {
            self.issue(
                &key(&p, "region"),
                format!("the DR region {region:?} is the primary's region"),
                "a different region, so that a regional outage cannot take both",
            );
        }
        // One private zone serves both caches, and Route 53 is global only within a
        // partition: a DR region in another partition could never be switched to.
        let (dr_partition, primary_partition) = (partition(&region), partition(&primary.region));
        if !region.is_empty() && !primary.region.is_empty() && dr_partition != primary_partition {
            self.issue(
                &key(&p, "region"),
                format!(
                    "the DR region {region:?} is in partition {dr_partition}, the primary {:?} in {primary_partition}",
                    primary.region
                ),
                format!("a DR region in {primary_partition}, where the hosted zone and the primary are"),
            );
        }
        let cache_name = self.cache_name(&key(&p, "cache_name"), raw.cache_name);
        let engine = raw.engine.unwrap_or_else(|| "valkey".into());
        if engine != "valkey" && engine != "redis" {
            self.issue(
                &key(&p, "engine"),
                format!("unknown engine {engine:?}"),
                "\"valkey\" or \"redis\"",
            );
        }
        let major_engine_version = raw.major_engine_version.unwrap_or_else(|| "8".into());
        if major_engine_version.is_empty()
            || !major_engine_version.chars().all(|c| c.is_ascii_digit())
        {
            self.issue(
                &key(&p, "major_engine_version"),
                format!("{major_engine_version:?} is not a major version"),
                "a major version string such as \"8\"",
            );
        }
        for (name, ids, prefix) in [
            ("subnet_ids", &raw.subnet_ids, "subnet-"),
            ("security_group_ids", &raw.security_group_ids, "sg-"),
        ] {
            if let Some(bad) = ids.iter().find(|id| !id.starts_with(prefix)) {
                self.issue(
                    &key(&p, name),
                    format!("{bad:?} is not a {prefix}… id"),
                    format!("ids that start with \"{prefix}\""),
                );
            }
        }
        let snapshot_retention_limit = raw
            .snapshot_retention_limit
            .map(|n| self.count(&key(&p, "snapshot_retention_limit"), Some(n), 0, 0, 35));
        if let Some(t) = &raw.daily_snapshot_time {
            let ok = t.len() == 5
                && t.as_bytes()[2] == b':'
                && t[..2].parse::<u8>().is_ok_and(|h| h < 24)
                && t[3..].parse::<u8>().is_ok_and(|m| m < 60);
            if !ok {
                self.issue(
                    &key(&p, "daily_snapshot_time"),
                    format!("{t:?} is not a time of day"),
                    "\"HH:MM\" in UTC, e.g. \"04:00\"",
                );
            }
        }
        let usage_limits = raw.usage_limits.map(|u| {
            let up = key(&p, "usage_limits");
            UsageLimits {
                data_storage_max_gb: u
                    .data_storage_max_gb
                    .map(|n| self.count(&key(&up, "data_storage_max_gb"), Some(n), 1, 1, 5000)),
                ecpu_per_second_max: u.ecpu_per_second_max.map(|n| {
                    self.count(
                        &key(&up, "ecpu_per_second_max"),
                        Some(n),
                        1000,
                        1000,
                        15_000_000,
                    )
                }),
            }
        });
        self.tags(&key(&p, "tags"), &raw.tags);
        let create_timeout = self.positive_duration(
            &key(&p, "create_timeout"),
            raw.create_timeout.as_deref(),
            Duration::from_secs(45 * 60),
            MAX_CREATE_TIMEOUT,
        );
        let standby = match raw.standby.as_deref() {
            None | Some("none") => StandbyMode::None,
            Some("warm") => StandbyMode::Warm,
            Some(other) => {
                self.issue(
                    &key(&p, "standby"),
                    format!("unknown standby {other:?}"),
                    "\"none\" (build on demand) or \"warm\" (a standby built in advance)",
                );
                StandbyMode::None
            }
        };
        DrConfig {
            region,
            cache_name,
            engine,
            major_engine_version,
            subnet_ids: raw.subnet_ids,
            security_group_ids: raw.security_group_ids,
            kms_key_id: raw.kms_key_id,
            user_group_id: raw.user_group_id,
            snapshot_arns_to_restore: raw.snapshot_arns_to_restore,
            snapshot_retention_limit,
            daily_snapshot_time: raw.daily_snapshot_time,
            usage_limits,
            tags: raw.tags,
            create_timeout,
            adopt_existing: raw.adopt_existing.unwrap_or(false),
            standby,
        }
    }

    fn probe(&mut self, p: &[Seg], raw: raw::RawProbe) -> ProbeConfig {
        let interval = self.positive_duration(
            &key(p, "interval"),
            raw.interval.as_deref(),
            Duration::from_secs(5),
            Duration::from_secs(5 * 60),
        );
        let timeout = self.positive_duration(
            &key(p, "timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(2),
            Duration::from_secs(60),
        );
        if timeout >= interval {
            self.issue(
                &key(p, "timeout"),
                format!(
                    "timeout {} is not shorter than interval {}",
                    crate::text::duration(timeout),
                    crate::text::duration(interval)
                ),
                "a timeout below the interval, so rounds never overlap (e.g. interval \"5s\", timeout \"2s\")",
            );
        }
        let handshake_interval = self.positive_duration(
            &key(p, "handshake_interval"),
            raw.handshake_interval.as_deref(),
            Duration::from_secs(30),
            Duration::from_secs(60 * 60),
        );
        if handshake_interval < interval {
            self.issue(
                &key(p, "handshake_interval"),
                format!(
                    "handshake_interval {} is shorter than interval {}",
                    crate::text::duration(handshake_interval),
                    crate::text::duration(interval)
                ),
                "at least the interval, e.g. \"30s\" (the default)",
            );
        }
        let key_prefix = raw
            .key_prefix
            .clone()
            .unwrap_or_else(|| "valkey-dr:probe:".into());
        if key_prefix.is_empty()
            || key_prefix
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            self.issue(
                &key(p, "key_prefix"),
                format!("{key_prefix:?} cannot keep probe keys apart from application keys"),
                "a non-empty prefix without spaces, e.g. \"valkey-dr:probe:\"",
            );
        }
        let tls = raw.tls.unwrap_or(true);
        if !tls {
            self.warnings.push(format!(
                "{}: tls = false; ElastiCache Serverless accepts TLS only, so this fits only a lab",
                render(p)
            ));
        }
        let tls_server_name = match raw.tls_server_name.as_deref() {
            None | Some("endpoint") => TlsServerName::Endpoint,
            Some("record") => TlsServerName::Record,
            Some(other) => {
                self.issue(
                    &key(p, "tls_server_name"),
                    format!("unknown TLS server name mode {other:?}"),
                    "\"endpoint\" (verify against the CNAME target) or \"record\" (against the record name)",
                );
                TlsServerName::Endpoint
            }
        };
        let insecure_skip_verify = raw.insecure_skip_verify.unwrap_or(false);
        if insecure_skip_verify {
            self.warnings.push(format!(
                "{}: insecure_skip_verify = true: server certificates are NOT verified",
                render(p)
            ));
        }
        let ca_file = raw.ca_file.as_deref().map(|f| self.path_buf(f));
        if !tls && (ca_file.is_some() || insecure_skip_verify) {
            self.issue(
                &key(p, "tls"),
                "is false but TLS settings are given",
                "tls = true, or remove ca_file / insecure_skip_verify",
            );
        }
        let credential = self.credential(p, &raw);
        ProbeConfig {
            interval,
            timeout,
            handshake_interval,
            key_prefix,
            tls,
            ca_file,
            tls_server_name,
            insecure_skip_verify,
            reader: raw.reader.unwrap_or(false),
            credential,
        }
    }

    fn credential(&mut self, p: &[Seg], raw: &raw::RawProbe) -> Credential {
        const VALID: &str =
            "password_env = \"VAR\", password_file = \"/path\", or iam_auth = true with username";
        if raw.password.is_some() {
            // Never echo the value: it is the secret we refuse to hold.
            self.issue(
                &key(p, "password"),
                "passwords are never read from the config text",
                VALID,
            );
            return Credential::None;
        }
        let iam = raw.iam_auth.unwrap_or(false);
        let sources = [raw.password_env.is_some(), raw.password_file.is_some(), iam]
            .iter()
            .filter(|s| **s)
            .count();
        if sources > 1 {
            self.issue(
                &key(p, "password_env"),
                "more than one of password_env, password_file and iam_auth is set",
                format!("exactly one of: {VALID}"),
            );
            return Credential::None;
        }
        let username = raw.username.clone();
        if let Some(var) = &raw.password_env {
            let path = key(p, "password_env");
            return match self.env.var(var) {
                Some(pw) if !pw.is_empty() => Credential::Password {
                    username,
                    source: format!("env {var}"),
                    password: Secret::new(pw),
                },
                _ => {
                    self.issue(
                        &path,
                        format!("environment variable {var} is not set or empty"),
                        format!(
                            "export {var} in the agent's environment (systemd: EnvironmentFile=)"
                        ),
                    );
                    Credential::None
                }
            };
        }
        if let Some(file) = &raw.password_file {
            let path = key(p, "password_file");
            let file = self.path_buf(file);
            return match self.env.read_file(&file) {
                Ok(pw) if !pw.trim_end_matches(['\n', '\r']).is_empty() => Credential::Password {
                    username,
                    source: format!("file {}", file.display()),
                    password: Secret::new(pw.trim_end_matches(['\n', '\r'])),
                },
                Ok(_) => {
                    self.issue(
                        &path,
                        format!("{} is empty", file.display()),
                        "a file holding the password",
                    );
                    Credential::None
                }
                Err(e) => {
                    self.issue(
                        &path,
                        format!("cannot read {}: {e}", file.display()),
                        "a readable file holding the password (systemd: LoadCredential=)",
                    );
                    Credential::None
                }
            };
        }
        if iam {
            return match username {
                Some(u) if !u.is_empty() => Credential::Iam { username: u },
                _ => {
                    self.issue(
                        &key(p, "username"),
                        "iam_auth = true needs the ACL user the token is issued for",
                        "username = \"<IAM-enabled ElastiCache user>\"",
                    );
                    Credential::None
                }
            };
        }
        if username.is_some() {
            self.issue(
                &key(p, "username"),
                "a username without a password source",
                VALID,
            );
        }
        Credential::None
    }

    fn witness(
        &mut self,
        p: &[Seg],
        raw: raw::RawWitness,
        probe_timeout: Duration,
    ) -> WitnessConfig {
        let timeout = self.positive_duration(
            &key(p, "timeout"),
            raw.timeout.as_deref(),
            probe_timeout.max(Duration::from_secs(2)),
            Duration::from_secs(60),
        );
        match raw.kind.as_deref() {
            None | Some("aws") => {
                if raw.address.is_some() {
                    self.issue(
                        &key(p, "address"),
                        "is only used with kind = \"tcp\"",
                        "remove it, or set kind = \"tcp\"",
                    );
                }
                WitnessConfig::Aws { timeout }
            }
            Some("none") => WitnessConfig::None,
            Some("tcp") => {
                let addr = raw.address.as_deref().and_then(|a| {
                    a.parse::<SocketAddr>()
                        .ok()
                        .or_else(|| a.to_socket_addrs().ok()?.next())
                });
                match addr {
                    Some(address) => WitnessConfig::Tcp { address, timeout },
                    None => {
                        self.issue(
                            &key(p, "address"),
                            match &raw.address {
                                Some(a) => format!("{a:?} is not an IP address and port"),
                                None => "is required with kind = \"tcp\"".into(),
                            },
                            "an address outside the cache's failure domain, e.g. \"10.0.0.10:443\"",
                        );
                        WitnessConfig::None
                    }
                }
            }
            Some(other) => {
                self.issue(
                    &key(p, "kind"),
                    format!("unknown witness kind {other:?}"),
                    "\"aws\" (DescribeServerlessCaches in the DR region), \"tcp\" or \"none\"",
                );
                WitnessConfig::None
            }
        }
    }

    fn policy(&mut self, p: &[Seg], raw: raw::RawPolicy, probe: &ProbeConfig) -> PolicyConfig {
        let fall = self.count(&key(p, "fall"), raw.fall, 3, 1, 1000);
        let rise = self.count(&key(p, "rise"), raw.rise, 2, 1, 1000);
        let down_after = self.duration(
            &key(p, "down_after"),
            raw.down_after.as_deref(),
            Duration::from_secs(15),
            Duration::from_secs(3600),
        );
        let cooldown = self.duration(
            &key(p, "cooldown"),
            raw.cooldown.as_deref(),
            Duration::from_secs(3600),
            Duration::from_secs(30 * 24 * 3600),
        );
        let max_auto_failovers = self.count(
            &key(p, "max_auto_failovers"),
            raw.max_auto_failovers,
            1,
            0,
            100,
        );
        let max_auto_failovers_window = self.positive_duration(
            &key(p, "max_auto_failovers_window"),
            raw.max_auto_failovers_window.as_deref(),
            Duration::from_secs(24 * 3600),
            Duration::from_secs(30 * 24 * 3600),
        );
        let reminder_interval = self.positive_duration(
            &key(p, "reminder_interval"),
            raw.reminder_interval.as_deref(),
            Duration::from_secs(15 * 60),
            Duration::from_secs(7 * 24 * 3600),
        );
        if reminder_interval < probe.interval {
            self.issue(
                &key(p, "reminder_interval"),
                "is shorter than the probe interval",
                "at least the probe interval, e.g. \"15m\"",
            );
        }
        let gate_interval = self.positive_duration(
            &key(p, "gate_interval"),
            raw.gate_interval.as_deref(),
            Duration::from_secs(30),
            Duration::from_secs(3600),
        );
        PolicyConfig {
            gate_interval,
            fall,
            rise,
            down_after,
            cooldown,
            max_auto_failovers,
            max_auto_failovers_window,
            lease: raw.lease.unwrap_or(true),
            reminder_interval,
        }
    }

    fn notify(&mut self, p: &[Seg], raw: raw::RawNotify) -> Option<NotifyConfig> {
        let timeout = self.positive_duration(
            &key(p, "timeout"),
            raw.timeout.as_deref(),
            Duration::from_secs(5),
            Duration::from_secs(60),
        );
        match raw.kind.as_deref() {
            Some("webhook") => {
                let url_env = raw.url_env.clone();
                let url = self.http_url(p, raw.url, raw.url_env)?;
                Some(NotifyConfig::Webhook {
                    url: Secret::new(url),
                    url_env,
                    timeout,
                })
            }
            Some("command") => match raw.command {
                Some(argv) if !argv.is_empty() && !argv[0].is_empty() => {
                    Some(NotifyConfig::Command {
                        command: argv,
                        timeout,
                    })
                }
                _ => {
                    self.issue(
                        &key(p, "command"),
                        "is required and must not be empty",
                        "an argv list, e.g. [\"/usr/local/bin/page-oncall\"]",
                    );
                    None
                }
            },
            other => {
                self.issue(
                    &key(p, "kind"),
                    match other {
                        Some(k) => format!("unknown notifier kind {k:?}"),
                        None => "is required".into(),
                    },
                    "\"webhook\" or \"command\"",
                );
                None
            }
        }
    }
}

impl Validator<'_> {
    /// A webhook's or http gate's URL, from `url` or the variable `url_env` names: http(s),
    /// and plain http only to loopback (the URL's path is often the secret, and what is sent
    /// names the caches).
    fn http_url(
        &mut self,
        p: &[Seg],
        url: Option<String>,
        url_env: Option<String>,
    ) -> Option<String> {
        let url = match (url, url_env) {
            (Some(url), None) => Some(url),
            (None, Some(var)) => {
                let v = self.env.var(&var).filter(|v| !v.is_empty());
                if v.is_none() {
                    self.issue(
                        &key(p, "url_env"),
                        format!("environment variable {var} is not set or empty"),
                        format!("export {var} in the agent's environment"),
                    );
                }
                v
            }
            _ => {
                self.issue(
                    &key(p, "url"),
                    "needs exactly one of url and url_env",
                    "url = \"https://…\" or url_env = \"VAR\"",
                );
                None
            }
        }?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            self.issue(
                &key(p, "url"),
                "is not an http(s) URL",
                "a URL such as \"https://hooks.example/…\"",
            );
            return None;
        }
        if url.starts_with("http://") && !is_loopback_url(&url) {
            self.issue(
                &key(p, "url"),
                format!(
                    "plain http:// to a host that is not loopback ({})",
                    redact_url(&url)
                ),
                "https://…, or http:// only to 127.0.0.1, ::1 or localhost (a local relay)",
            );
            return None;
        }
        Some(url)
    }
}

fn id_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// The one id no agent may take: `/status` shows it as the origin of the owner's own pause,
/// so a peer by that name could pass its relayed pause off as the owner's.
pub const OWNER_ORIGIN: &str = "owner";

/// Whether `id` may name an agent (`[agent] id`, a `peer_keys` entry).
fn valid_agent_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(id_char) && id != OWNER_ORIGIN
}

/// What a valid agent id is, for the error that refuses one.
const VALID_AGENT_ID: &str = "1–64 characters from a-z, A-Z, 0-9, '.', '_' and '-', and not `owner` (what /status shows for the owner's own pause)";

#[cfg(test)]
mod tests;
