//! `valkey-dr-lab`: run the lab, and inject faults into a running one.
//!
//! Exit codes: 0 success, 1 the lab failed or refused, 2 usage error.

mod bench;
mod demo;
mod scenario;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use tokio::signal::unix::{SignalKind, signal};
use valkey_dr_lab::{
    AwsService, CertProfile, Fault, Lab, LabError, LabInfo, LabOptions, RateLimit, config,
    fetch_calls, send_fault,
};

/// Run the valkey-dr lab on loopback: real valkey-server caches behind TLS fronts, a private
/// DNS zone, and faults.
#[derive(Debug, Parser)]
#[command(name = "valkey-dr-lab", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a lab, write agent.toml, ca.pem and lab.json into DIR, and run until SIGINT or
    /// SIGTERM.
    Up(UpArgs),
    /// Inject or clear a fault in the lab running in DIR.
    Fault(FaultArgs),
    /// Print every AWS call the lab running in DIR has answered, as JSON (oldest first).
    Calls {
        /// The directory of the running lab (it holds lab.json).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// The README's demo: a lab, `valkey-dr run` in auto-failover mode and an application
    /// writing sessions through the record; then a region outage, the failover's timeline as
    /// it happens, and each phase's duration against the 4 h RTO. Exits 0 when every step came
    /// within its bound.
    Demo {
        /// Keep the lab's files here instead of a temporary directory.
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Benchmarks, printed as JSON on stdout.
    Bench {
        #[command(subcommand)]
        bench: BenchCommand,
    },
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Wall time of whole probe rounds with TLS, for 1 watch and for many at once.
    Probe {
        /// Measured rounds per watch count.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rounds: u32,
        /// Watch counts to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,50")]
        watches: Vec<usize>,
        /// Let the fronts resume TLS sessions (off by default, as nothing says AWS does), to
        /// measure what resumption saves the fresh connections.
        #[arg(long)]
        tls_resumption: bool,
    },
    /// Memory and CPU of `valkey-dr run` beside Valkey Sentinel, in the same window.
    ///
    /// The agent is the build next to this binary (or $VALKEY_DR_BIN) at a 1 s interval with
    /// N watches; Sentinel monitors N names at its 1 s PING period.
    Footprint {
        /// Length of the measurement window, per watch count.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..=3600))]
        seconds: u64,
        /// Watch counts (and Sentinel monitors) to measure, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "1,100", value_parser = clap::value_parser!(u64).range(1..=500))]
        watches: Vec<u64>,
        /// Certificate chains the lab's fronts present, comma-separated: each watch count is
        /// measured once per profile (`aws-rsa`: RSA 2048 leaf and intermediate, as
        /// ElastiCache; `ecdsa`: one P-256 leaf).
        #[arg(long, value_delimiter = ',', default_value = "aws-rsa,ecdsa", value_parser = str::parse::<CertProfile>)]
        cert_profiles: Vec<CertProfile>,
        /// The lab's fronts resume TLS sessions (off by default, as `up`).
        #[arg(long)]
        tls_resumption: bool,
    },
    /// Time from a failed primary to the alert, for the agent and for Sentinel.
    ///
    /// The agent's primary is put through each outage kind at a seeded random point of the 1 s
    /// interval (of the 10 s handshake interval for refuse_new), Sentinel's master through a
    /// SIGSTOP; the clock stops at the agent's `down` webhook, and at Sentinel's `+sdown`
    /// (down-after 3 s).
    Detection {
        /// Outages per kind, and for Sentinel.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=500))]
        outages: u64,
        /// Outage kinds for the agent, comma-separated: pause (SIGSTOP), kill (SIGKILL),
        /// blackhole, region_outage, refuse_new (new connections reset, open ones kept).
        #[arg(long, value_delimiter = ',', default_value = "pause,kill,blackhole,region_outage,refuse_new", value_parser = str::parse::<bench::detection::Kind>)]
        kinds: Vec<bench::detection::Kind>,
        /// Seed for where in the probe interval (the handshake interval, for refuse_new) each
        /// outage starts.
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// One readiness pass (`valkey-dr preflight`) over N watches sharing the lab's zone: wall
    /// time, calls per API, Route 53's busiest second against its 5/s rate, throttled calls.
    ///
    /// The agent is the build next to this binary (or $VALKEY_DR_BIN).
    Preflight {
        /// Watches in the config, each with its own record in the zone.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=500))]
        watches: u64,
    },
    /// Whole failovers: a region outage, the auto-failover agent, an application writing
    /// through the record; each phase timed, and what the agent adds beyond AWS and DNS.
    ///
    /// The agent is the build next to this binary (or $VALKEY_DR_BIN); each run has a fresh
    /// lab (cache build 3 s, Route 53 INSYNC 1 s, TTL 30 s, probes every 1 s).
    Failover {
        /// Failovers to run, one fresh lab each.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Seed for where in the probe interval each outage starts.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// `auto`: the agent in auto-failover mode. `prepare`: the time from a person's
        /// decision to the application writing again, `valkey-dr approve` in prepare mode
        /// next to `valkey-dr failover` run when an alert-only agent says it would fail over.
        #[arg(long, value_enum, default_value_t = FailoverMode::Auto)]
        mode: FailoverMode,
        /// Also run each switch with Route 53's API down (every call 503, as when its control
        /// plane in us-east-1 is impaired): for a record switch from each outage, back
        /// SECONDS later while the region stays down; for a health-check switch from before
        /// the agent starts to the end of the run (`--mode auto` only).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        route53_down: Option<u64>,
        /// How the record moves, comma-separated to measure several in one run: `record`, the
        /// agent's change through Route 53's API; `health_check`, Route 53's health checks on
        /// the agent's published verdict (`[watch.switch] kind = "health_check"`, its
        /// template deployed into the lab first; needs `--standby warm`; `--mode auto` only).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "record")]
        switch: Vec<SwitchArg>,
        /// `none`: the DR cache is built on demand at each outage. `warm`: a warm standby is
        /// built with `valkey-dr standby create` before the agent starts, and the failover
        /// switches to it (`--mode auto` only).
        #[arg(long, value_enum, default_value_t = StandbyArg::None)]
        standby: StandbyArg,
        /// Watches in the agent's config: the lab's, and N-1 more on the same zone watching
        /// the spare cache in another region, which stay healthy (`--mode auto` only).
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=500))]
        fleet: u64,
        /// Start a readiness pass (SIGUSR1) 1 s before each outage (`--mode auto` only).
        #[arg(long, conflicts_with = "outage_in_startup_pass")]
        pass_before_outage: bool,
        /// Bring the region down while the agent's start-up readiness pass still runs, for a
        /// build of the agent without SIGUSR1 (through VALKEY_DR_BIN) whose pass is long
        /// (`--mode auto`, with `--fleet`, only).
        #[arg(long)]
        outage_in_startup_pass: bool,
    },
}

/// `bench failover --switch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum SwitchArg {
    Record,
    /// As the config spells it.
    #[value(name = "health_check")]
    HealthCheck,
}

impl SwitchArg {
    fn switch(self) -> scenario::Switch {
        match self {
            SwitchArg::Record => scenario::Switch::Record,
            SwitchArg::HealthCheck => scenario::Switch::HealthCheck,
        }
    }
}

/// `bench failover --standby`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum StandbyArg {
    None,
    Warm,
}

/// What `bench failover` measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FailoverMode {
    Auto,
    Prepare,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// The lab directory (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// TTL of the record's CNAME.
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    ttl: Duration,
    /// Require a password on every cache, read from this environment variable (never from the
    /// command line). agent.toml names the same variable.
    #[arg(long, value_name = "VAR")]
    password_env: Option<String>,
    /// Probe interval written to agent.toml.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Probe timeout written to agent.toml.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Seed for endpoint names and loopback IPs, for a repeatable lab.
    #[arg(long)]
    seed: Option<u64>,
    /// How long a serverless cache created through the API stays `creating` (and a deleted
    /// one `deleting`).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    provision_delay: Duration,
    /// How long a Route 53 change stays PENDING before GetChange says INSYNC.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    insync_delay: Duration,
    /// How long after CreateServerlessCache a DescribeServerlessCaches still answers
    /// ServerlessCacheNotFoundFault for the new cache, as AWS's eventually consistent reads do
    /// (`0s` turns it off).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    describe_lag: Duration,
    /// Route 53's account-wide request rate, in requests a second, beyond which it answers
    /// Throttling "Rate exceeded" (`0` turns throttling off).
    #[arg(long, default_value_t = 5.0)]
    route53_rate: f64,
    /// How many Route 53 requests may arrive at once after a quiet spell.
    #[arg(long, default_value_t = 5.0)]
    route53_burst: f64,
    /// A ChangeResourceRecordSets arriving within this long of the zone's previous accepted
    /// change gets PriorRequestNotComplete (`0s` turns it off).
    #[arg(long, default_value = "200ms", value_parser = humantime::parse_duration)]
    prior_request_window: Duration,
    /// The certificate chain the caches present: `aws-rsa` (an RSA 2048 leaf and an RSA 2048
    /// intermediate, as ElastiCache endpoints) or `ecdsa` (an ECDSA P-256 leaf straight under
    /// the lab CA).
    #[arg(long, default_value = "aws-rsa", value_parser = str::parse::<CertProfile>)]
    cert_profile: CertProfile,
    /// The caches' TLS fronts resume sessions (a session cache per front, TLS 1.3 tickets).
    /// Off by default, as no AWS source says serverless endpoints resume.
    #[arg(long)]
    tls_resumption: bool,
    /// Every cache uses IAM auth for this user: its front accepts only `AUTH USER <token>`
    /// with a valid token, and agent.toml sets `username` and `iam_auth = true`.
    #[arg(long, value_name = "USER", conflicts_with = "password_env")]
    iam_user: Option<String>,
    /// The ElastiCache access string of the lab's users: what `DescribeUsers` answers, and
    /// what every cache's server applies to its clients (e.g. "on ~* +@all -flushall").
    #[arg(long, value_name = "ACCESS", default_value = valkey_dr_lab::LAB_ACCESS_STRING)]
    access_string: String,
    /// Put the lab's IAM role under this path, as IAM Identity Center puts its roles under
    /// `/aws-reserved/sso.amazonaws.com/`: SimulatePrincipalPolicy then knows the role only by
    /// its ARN with the path, which GetRole answers (the STS session's ARN has no path).
    #[arg(long, value_name = "PATH")]
    role_path: Option<String>,
    /// How long CloudWatch's 60 s minute lasts in the lab: an alarm of Period 60 evaluates
    /// once per this.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    alarm_period: Duration,
    /// How long after its alarm changes a CLOUDWATCH_METRIC health check (and the DNS answer
    /// of a failover record) follows; AWS documents no figure.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    health_check_delay: Duration,
}

#[derive(Debug, Args)]
struct FaultArgs {
    /// The directory of the running lab (it holds lab.json).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    #[command(subcommand)]
    fault: FaultCommand,
}

#[derive(Debug, Subcommand)]
enum FaultCommand {
    /// SIGKILL the cache's valkey-server; its address then refuses connections.
    Kill { cache: String },
    /// SIGSTOP the cache's valkey-server: TLS completes, commands hang.
    Pause { cache: String },
    /// SIGCONT a paused valkey-server.
    Resume { cache: String },
    /// Delay every chunk forwarded to and from the cache, e.g. `latency app-sessions 300ms`.
    Latency {
        cache: String,
        #[arg(value_parser = humantime::parse_duration)]
        delay: Duration,
    },
    /// Accept connections to the cache and never answer.
    Blackhole { cache: String },
    /// Accept new connections to the cache and reset them at once (ECONNRESET); connections
    /// already open keep working.
    RefuseNew { cache: String },
    /// Answer every GET on new connections with a 100 MiB bulk string (streamed).
    HugeReply { cache: String },
    /// Undo every fault on the cache (restarting a killed server).
    Clear { cache: String },
    /// The private zone stops answering (endpoint names still resolve).
    DnsDown,
    /// The private zone answers again.
    DnsUp,
    /// Close the witness port: the agent cannot prove it reaches the outside (isolation).
    WitnessDown,
    /// Reopen the witness port.
    WitnessUp,
    /// Point the record's CNAME at this cache's endpoint.
    PointRecord { cache: String },
    /// The region fails: its caches are blackholed, its ElastiCache and CloudWatch APIs answer
    /// 503.
    RegionOutage {
        region: String,
        /// Route 53's API (its control plane, served from us-east-1) goes down too, until
        /// region-restore; only `us-east-1` takes it.
        #[arg(long)]
        route53: bool,
    },
    /// The region is back: its API (and Route 53's, if its outage took it) answers and its
    /// caches are cleared.
    RegionRestore { region: String },
    /// Calls of ACTION fail with the AWS error CODE: the next N (`--times`, 1 by default), or
    /// every one for a while (`--for`), e.g.
    /// `api-error elasticache CreateServerlessCache Throttling --times 3` or
    /// `api-error route53 ChangeResourceRecordSets Throttling --for 2m`.
    ApiError {
        /// `elasticache`, `route53`, `sts`, `ec2`, `kms`, `iam` or `cloudwatch`.
        #[arg(value_parser = str::parse::<AwsService>)]
        service: AwsService,
        /// The API action, e.g. `ChangeResourceRecordSets`.
        action: String,
        /// The AWS error code, e.g. `Throttling`, `InternalError`, `ServiceUnavailable`.
        code: String,
        /// How many calls fail (1 unless --for is given).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        times: Option<u32>,
        /// Every call fails for this long from now, e.g. `90s` (at most 24h).
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "times", value_parser = humantime::parse_duration)]
        lasting: Option<Duration>,
    },
    /// Every call on Route 53's API answers 503 ServiceUnavailable, as its control plane
    /// does when impaired; the private zone's DNS keeps answering.
    Route53ControlDown,
    /// Route 53's API answers again (whatever took it down).
    Route53ControlUp,
    /// CloudWatch in REGION answers every call 503 ServiceUnavailable, and Route 53's health
    /// checks cannot read its alarms (they take their InsufficientDataHealthStatus), e.g.
    /// `cloudwatch-down us-east-1`.
    CloudwatchDown { region: String },
    /// CloudWatch in REGION answers again.
    CloudwatchUp { region: String },
    /// The next N calls of ACTION that the lab carries out get no answer: the lab holds each
    /// answer until the client hangs up or --hold passes, then closes the connection, e.g.
    /// `commit-then-drop route53 ChangeResourceRecordSets`.
    CommitThenDrop {
        /// `route53`, `elasticache`, `sts`, `ec2`, `kms`, `iam` or `cloudwatch`.
        #[arg(value_parser = str::parse::<AwsService>)]
        service: AwsService,
        /// The API action, e.g. `ChangeResourceRecordSets`.
        action: String,
        /// How many calls are carried out and not answered.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
        times: u32,
        /// The longest an answer is held before the connection is closed (at most 10m).
        #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
        hold: Duration,
    },
    /// The next serverless cache created goes to create-failed.
    ProvisionFail,
    /// The next serverless cache created stays creating for ever.
    ProvisionStuck,
    /// The subnet no longer exists in any region, e.g. `subnet-delete subnet-lab0002`.
    SubnetDelete { subnet: String },
    /// The lab's KMS key becomes Disabled in every region.
    KmsDisable,
    /// The lab's KMS key becomes Enabled again.
    KmsEnable,
    /// Deny the lab's principal an IAM action (SERVICE:Action), e.g.
    /// `iam-deny route53:ChangeResourceRecordSets`: SimulatePrincipalPolicy says
    /// implicitDeny and every call of it is refused.
    IamDeny { action: String },
    /// Allow a denied IAM action again.
    IamAllow { action: String },
    /// The hosted zone says it is public (GetHostedZone: PrivateZone false, no VPCs).
    ZonePublic,
    /// The hosted zone is private again.
    ZonePrivate,
    /// The zone is no longer associated with the lab VPC of REGION, e.g.
    /// `zone-vpc-disassociate us-west-2`.
    ZoneVpcDisassociate { region: String },
    /// The zone is associated with the lab VPC of REGION again.
    ZoneVpcAssociate { region: String },
    /// No region has a default VPC any more (DescribeVpcs isDefault=true finds none).
    DefaultVpcDelete,
    /// The lab VPC is every region's default VPC again.
    DefaultVpcCreate,
}

impl FaultCommand {
    fn into_fault(self) -> Fault {
        match self {
            Self::Kill { cache } => Fault::Kill { cache },
            Self::Pause { cache } => Fault::Pause { cache },
            Self::Resume { cache } => Fault::Resume { cache },
            Self::Latency { cache, delay } => Fault::Latency { cache, delay },
            Self::Blackhole { cache } => Fault::Blackhole { cache },
            Self::RefuseNew { cache } => Fault::RefuseNew { cache },
            Self::HugeReply { cache } => Fault::HugeReply { cache },
            Self::Clear { cache } => Fault::Clear { cache },
            Self::DnsDown => Fault::DnsDown,
            Self::DnsUp => Fault::DnsUp,
            Self::WitnessDown => Fault::WitnessDown,
            Self::WitnessUp => Fault::WitnessUp,
            Self::PointRecord { cache } => Fault::PointRecord { cache },
            Self::RegionOutage { region, route53 } => Fault::RegionOutage { region, route53 },
            Self::RegionRestore { region } => Fault::RegionRestore { region },
            Self::ApiError {
                service,
                action,
                code,
                times,
                lasting,
            } => Fault::ApiError {
                service,
                action,
                code,
                // The CLI's default: one call.
                times: times.or(lasting.is_none().then_some(1)),
                lasting,
            },
            Self::Route53ControlDown => Fault::Route53ControlDown,
            Self::Route53ControlUp => Fault::Route53ControlUp,
            Self::CloudwatchDown { region } => Fault::CloudwatchDown { region },
            Self::CloudwatchUp { region } => Fault::CloudwatchUp { region },
            Self::CommitThenDrop {
                service,
                action,
                times,
                hold,
            } => Fault::CommitThenDrop {
                service,
                action,
                times,
                hold,
            },
            Self::ProvisionFail => Fault::ProvisionFail,
            Self::ProvisionStuck => Fault::ProvisionStuck,
            Self::SubnetDelete { subnet } => Fault::SubnetDelete { subnet },
            Self::KmsDisable => Fault::KmsDisable,
            Self::KmsEnable => Fault::KmsEnable,
            Self::IamDeny { action } => Fault::IamDeny { action },
            Self::IamAllow { action } => Fault::IamAllow { action },
            Self::ZonePublic => Fault::ZonePublic,
            Self::ZonePrivate => Fault::ZonePrivate,
            Self::ZoneVpcDisassociate { region } => Fault::ZoneVpcDisassociate { region },
            Self::ZoneVpcAssociate { region } => Fault::ZoneVpcAssociate { region },
            Self::DefaultVpcDelete => Fault::DefaultVpcDelete,
            Self::DefaultVpcCreate => Fault::DefaultVpcCreate,
        }
    }
}

/// A mistake in what was typed, as opposed to a lab failure: exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    // clap prints its own usage errors and exits with 2.
    // `valkey-dr-lab __agent ARGS…` runs the agent's own command line in this process, so
    // that the demo can start `valkey-dr run` as a real process of its own even when only the
    // lab binary has been built (`cargo run -p valkey-dr-lab -- demo` on a fresh machine).
    let mut args = std::env::args_os();
    if args.nth(1).is_some_and(|a| a == demo::AGENT_SUBCOMMAND) {
        return agent_main(args);
    }
    let cli = Cli::parse();
    // The demo and the benchmarks print their own story; lab chatter would drown it.
    let default_filter = match cli.command {
        Command::Demo { .. } | Command::Bench { .. } => "warn",
        _ => "valkey_dr_lab=info,warn",
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Up(args) => up(args).await,
            Command::Fault(args) => fault(args).await,
            Command::Calls { dir } => calls(&dir).await,
            Command::Demo { dir } => demo::run(dir).await,
            Command::Bench {
                bench:
                    BenchCommand::Probe {
                        rounds,
                        watches,
                        tls_resumption,
                    },
            } => {
                let report = bench::probe(rounds as usize, &watches, tls_resumption).await?;
                println!("{report:#}");
                Ok(())
            }
            Command::Bench {
                bench:
                    BenchCommand::Footprint {
                        seconds,
                        watches,
                        cert_profiles,
                        tls_resumption,
                    },
            } => {
                let watches: Vec<usize> = watches.iter().map(|&n| n as usize).collect();
                let report =
                    bench::footprint::run(seconds, &watches, &cert_profiles, tls_resumption)
                        .await?;
                println!("{report:#}");
                Ok(())
            }
            Command::Bench {
                bench:
                    BenchCommand::Detection {
                        outages,
                        seed,
                        kinds,
                    },
            } => {
                let report = bench::detection::run(outages as usize, seed, &kinds).await?;
                println!("{report:#}");
                Ok(())
            }
            Command::Bench {
                bench: BenchCommand::Preflight { watches },
            } => {
                let report = bench::preflight::run(watches as usize).await?;
                println!("{report:#}");
                Ok(())
            }
            Command::Bench {
                bench:
                    BenchCommand::Failover {
                        runs,
                        seed,
                        mode,
                        route53_down,
                        switch,
                        standby,
                        fleet,
                        pass_before_outage,
                        outage_in_startup_pass,
                    },
            } => {
                let mut switches: Vec<scenario::Switch> = Vec::new();
                for s in switch {
                    if !switches.contains(&s.switch()) {
                        switches.push(s.switch());
                    }
                }
                let health_check = switches.contains(&scenario::Switch::HealthCheck);
                if health_check && (standby != StandbyArg::Warm || fleet > 1) {
                    return Err(UsageError(
                        "--switch health_check needs --standby warm (its SECONDARY record answers the standby) and one watch (no --fleet)".to_string(),
                    )
                    .into());
                }
                let route53_down = route53_down.map(Duration::from_secs);
                let warm = standby == StandbyArg::Warm;
                let pass = match (pass_before_outage, outage_in_startup_pass) {
                    (true, _) => scenario::Pass::Signalled,
                    (false, true) => scenario::Pass::StartUp,
                    (false, false) => scenario::Pass::None,
                };
                if pass == scenario::Pass::StartUp && fleet < 2 {
                    return Err(UsageError(
                        "--outage-in-startup-pass needs --fleet 2 or more: one watch's start-up pass is over before an outage".to_string(),
                    )
                    .into());
                }
                let plain = fleet == 1
                    && pass == scenario::Pass::None
                    && switches == [scenario::Switch::Record];
                let report = match (mode, route53_down, warm) {
                    (FailoverMode::Auto, _, _) => {
                        let shape = scenario::Outage {
                            standby: warm,
                            fleet: fleet as usize,
                            pass,
                            ..scenario::Outage::default()
                        };
                        let variants = bench::failover::Variant::all(&switches, route53_down);
                        bench::failover::run(runs as usize, seed, shape, &variants).await?
                    }
                    (FailoverMode::Prepare, None, false) if plain => {
                        bench::decision::run(runs as usize).await?
                    }
                    (FailoverMode::Prepare, _, _) => {
                        return Err(UsageError(
                            "--route53-down, --switch, --standby, --fleet, --pass-before-outage and --outage-in-startup-pass apply to --mode auto only".to_string(),
                        )
                        .into());
                    }
                };
                println!("{report:#}");
                Ok(())
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            let usage = e.downcast_ref::<UsageError>().is_some()
                || matches!(
                    e.downcast_ref::<LabError>(),
                    Some(LabError::InvalidOption { .. } | LabError::NoDir)
                );
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

/// The agent's `main`, on the same single-threaded runtime as the `valkey-dr` binary.
fn agent_main(args: impl Iterator<Item = std::ffi::OsString>) -> ExitCode {
    use clap::Parser as _;
    let cli = valkey_dr::cli::Cli::parse_from(std::iter::once("valkey-dr".into()).chain(args));
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => ExitCode::from(rt.block_on(valkey_dr::cli::run(cli)) as u8),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            ExitCode::from(3)
        }
    }
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    let password = match &args.password_env {
        Some(var) => match std::env::var(var) {
            Ok(value) if !value.is_empty() => Some(value),
            _ => {
                return Err(UsageError(format!(
                    "--password-env {var}: that environment variable is not set, empty or not UTF-8"
                ))
                .into());
            }
        },
        None => None,
    };
    // Registered before the lab starts, so a signal during start-up still stops it cleanly.
    let mut interrupt = signal(SignalKind::interrupt()).context("listening for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("listening for SIGTERM")?;
    let mut hangup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;

    let started = Instant::now();
    let options = LabOptions {
        dir: args.dir.clone(),
        ttl: args.ttl,
        password,
        password_env: args
            .password_env
            .clone()
            .unwrap_or_else(|| config::DEFAULT_PASSWORD_ENV.to_string()),
        interval: args.interval,
        timeout: args.timeout,
        seed: args.seed,
        provision_delay: args.provision_delay,
        insync_delay: args.insync_delay,
        describe_lag: args.describe_lag,
        route53_rate: route53_rate(&args),
        prior_request_window: args.prior_request_window,
        cert_profile: args.cert_profile,
        tls_resumption: args.tls_resumption,
        iam_user: args.iam_user.clone(),
        access_string: args.access_string.clone(),
        role_path: args.role_path.clone(),
        alarm_period: args.alarm_period,
        health_check_delay: args.health_check_delay,
    };
    let lab = Lab::start(options).await?;
    print_summary(lab.info(), lab.dir(), started.elapsed());

    let reason = tokio::select! {
        _ = interrupt.recv() => "SIGINT",
        _ = terminate.recv() => "SIGTERM",
        _ = hangup.recv() => "SIGHUP",
    };
    eprintln!("valkey-dr-lab: {reason}: stopping the lab");
    lab.shutdown().await;
    Ok(())
}

fn print_summary(info: &LabInfo, dir: &Path, elapsed: Duration) {
    let dir_arg = shell_quote(&dir.to_string_lossy());
    let primary = info.caches.first();
    println!(
        "valkey-dr lab up in {} ({:.2}s). Everything is on loopback.",
        dir.display(),
        elapsed.as_secs_f64()
    );
    println!("  dns      {} (UDP and TCP), zone {}", info.dns, info.zone);
    if let Some(primary) = primary {
        println!(
            "  record   {} CNAME {} (TTL {}s)",
            info.record, primary.endpoint, info.ttl_s
        );
    }
    println!(
        "  caches   TLS on port {}, certificates from {}",
        info.port,
        info.ca_file.display()
    );
    for cache in &info.caches {
        println!(
            "    {:<8} {:<20} {:<10} {}  {}",
            format!("{:?}", cache.role).to_lowercase(),
            cache.name,
            cache.region,
            cache.address,
            cache.endpoint
        );
    }
    println!(
        "  control  http://{} (POST /fault, GET /lab, GET /calls)",
        info.control
    );
    println!(
        "  aws      {} (ElastiCache, Route 53 zone {})",
        info.aws_endpoint,
        config::HOSTED_ZONE_ID
    );
    println!("  config   {}", info.config.display());
    if let Some(user) = &info.iam_user {
        println!("  auth     IAM tokens for user {user}, signed with the lab's AWS credentials");
    }
    println!();
    println!("Try:");
    if let Some(var) = &info.password_env {
        println!("  export {var}=...   # the same password, for the agent");
    }
    println!(
        "  valkey-dr check --config {}",
        shell_quote(&info.config.to_string_lossy())
    );
    if let Some(primary) = primary {
        println!(
            "  valkey-dr-lab fault --dir {dir_arg} kill {}",
            primary.name
        );
        println!(
            "  valkey-dr-lab fault --dir {dir_arg} clear {}",
            primary.name
        );
    }
    println!("  valkey-dr-lab fault --dir {dir_arg} dns-down");
    println!("Stop with Ctrl-C.");
}

/// `--route53-rate 0` turns Route 53's throttling off.
fn route53_rate(args: &UpArgs) -> Option<RateLimit> {
    (args.route53_rate > 0.0).then_some(RateLimit {
        per_second: args.route53_rate,
        burst: args.route53_burst,
    })
}

/// Quotes a word for a POSIX shell when it needs it, so printed commands can be pasted.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:=+@%,".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The running lab in `dir`, or an error that says how to start one.
fn running_lab(dir: &Path) -> anyhow::Result<LabInfo> {
    LabInfo::read(dir).with_context(|| {
        format!(
            "no lab found in {}: is `valkey-dr-lab up --dir {}` running?",
            dir.display(),
            shell_quote(&dir.to_string_lossy())
        )
    })
}

async fn calls(dir: &Path) -> anyhow::Result<()> {
    let info = running_lab(dir)?;
    let calls = fetch_calls(info.control)
        .await
        .with_context(|| format!("reading the AWS calls of the lab in {}", dir.display()))?;
    println!("{}", serde_json::to_string_pretty(&calls)?);
    Ok(())
}

async fn fault(args: FaultArgs) -> anyhow::Result<()> {
    let info = running_lab(&args.dir)?;
    let fault = args.fault.into_fault();
    let applied = send_fault(info.control, &fault)
        .await
        .with_context(|| format!("applying `{fault}` to the lab in {}", args.dir.display()))?;
    println!("applied: {applied}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn fault_commands_parse_as_documented() {
        let parse = |args: &[&str]| {
            let cli = Cli::try_parse_from(args).unwrap();
            match cli.command {
                Command::Fault(f) => f.fault.into_fault(),
                other => panic!("not a fault: {other:?}"),
            }
        };
        assert_eq!(
            parse(&[
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "latency",
                "c",
                "300ms"
            ]),
            Fault::Latency {
                cache: "c".into(),
                delay: Duration::from_millis(300)
            }
        );
        assert_eq!(
            parse(&["valkey-dr-lab", "fault", "--dir", "d", "dns-down"]),
            Fault::DnsDown
        );
        assert_eq!(
            parse(&["valkey-dr-lab", "fault", "--dir", "d", "point-record", "c"]),
            Fault::PointRecord { cache: "c".into() }
        );
        assert!(Cli::try_parse_from(["valkey-dr-lab", "fault", "--dir", "d", "kill"]).is_err());
        assert_eq!(
            parse(&[
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "api-error",
                "route53",
                "ChangeResourceRecordSets",
                "InternalError",
                "--times",
                "3"
            ]),
            Fault::ApiError {
                service: AwsService::Route53,
                action: "ChangeResourceRecordSets".into(),
                code: "InternalError".into(),
                times: Some(3),
                lasting: None,
            }
        );
        assert_eq!(
            parse(&[
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "region-outage",
                "us-east-1"
            ]),
            Fault::RegionOutage {
                region: "us-east-1".into(),
                route53: false,
            }
        );
        assert_eq!(
            parse(&["valkey-dr-lab", "fault", "--dir", "d", "provision-fail"]),
            Fault::ProvisionFail
        );
        for fault in [
            Fault::SubnetDelete {
                subnet: "subnet-lab0002".into(),
            },
            Fault::KmsDisable,
            Fault::KmsEnable,
            Fault::IamDeny {
                action: "route53:ChangeResourceRecordSets".into(),
            },
            Fault::IamAllow {
                action: "iam:SimulatePrincipalPolicy".into(),
            },
            Fault::ZonePublic,
            Fault::ZonePrivate,
            Fault::ZoneVpcDisassociate {
                region: "us-west-2".into(),
            },
            Fault::ZoneVpcAssociate {
                region: "us-west-2".into(),
            },
            Fault::DefaultVpcDelete,
            Fault::DefaultVpcCreate,
            Fault::HugeReply {
                cache: "app-sessions".into(),
            },
            Fault::RefuseNew {
                cache: "app-sessions".into(),
            },
            Fault::Route53ControlDown,
            Fault::Route53ControlUp,
            Fault::CloudwatchDown {
                region: "us-east-1".into(),
            },
            Fault::CloudwatchUp {
                region: "us-east-1".into(),
            },
            Fault::RegionOutage {
                region: "us-east-1".into(),
                route53: true,
            },
            Fault::ApiError {
                service: AwsService::Route53,
                action: "ChangeResourceRecordSets".into(),
                code: "Throttling".into(),
                times: None,
                lasting: Some(Duration::from_secs(120)),
            },
            Fault::ApiError {
                service: AwsService::Route53,
                action: "GetChange".into(),
                code: "Throttling".into(),
                times: Some(4),
                lasting: None,
            },
            Fault::CommitThenDrop {
                service: AwsService::Route53,
                action: "ChangeResourceRecordSets".into(),
                times: 2,
                hold: Duration::from_secs(30),
            },
        ] {
            let text = fault.to_string();
            let mut args = vec!["valkey-dr-lab", "fault", "--dir", "d"];
            args.extend(text.split(' '));
            assert_eq!(parse(&args), fault, "{text}");
        }
        assert_eq!(
            parse(&[
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "api-error",
                "sts",
                "GetCallerIdentity",
                "ExpiredToken"
            ]),
            Fault::ApiError {
                service: AwsService::Sts,
                action: "GetCallerIdentity".into(),
                code: "ExpiredToken".into(),
                times: Some(1),
                lasting: None,
            }
        );
        assert!(
            Cli::try_parse_from([
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "api-error",
                "s3",
                "PutObject",
                "Throttling"
            ])
            .is_err()
        );
        assert!(
            Cli::try_parse_from([
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "api-error",
                "route53",
                "GetChange",
                "Throttling",
                "--times",
                "2",
                "--for",
                "2s"
            ])
            .is_err(),
            "--times and --for together"
        );
        assert_eq!(
            parse(&[
                "valkey-dr-lab",
                "fault",
                "--dir",
                "d",
                "commit-then-drop",
                "route53",
                "ChangeResourceRecordSets"
            ]),
            Fault::CommitThenDrop {
                service: AwsService::Route53,
                action: "ChangeResourceRecordSets".into(),
                times: 1,
                hold: valkey_dr_lab::DEFAULT_HOLD,
            }
        );
    }

    #[test]
    fn up_is_as_strict_as_aws_unless_told_otherwise() {
        let up = |extra: &[&str]| {
            let words = ["valkey-dr-lab", "up", "--dir", "d"].iter().chain(extra);
            match Cli::try_parse_from(words).expect("parses").command {
                Command::Up(args) => args,
                _ => unreachable!("up parses as up"),
            }
        };
        let strict = up(&[]);
        assert_eq!(strict.describe_lag, valkey_dr_lab::DEFAULT_DESCRIBE_LAG);
        assert_eq!(strict.alarm_period, valkey_dr_lab::DEFAULT_ALARM_PERIOD);
        assert_eq!(
            strict.health_check_delay,
            valkey_dr_lab::DEFAULT_HEALTH_CHECK_DELAY
        );
        let tuned = up(&["--alarm-period", "200ms", "--health-check-delay", "0s"]);
        assert_eq!(tuned.alarm_period, Duration::from_millis(200));
        assert!(tuned.health_check_delay.is_zero());
        assert_eq!(route53_rate(&strict), Some(RateLimit::ROUTE53));
        assert_eq!(
            strict.prior_request_window,
            valkey_dr_lab::DEFAULT_PRIOR_REQUEST_WINDOW
        );
        let lenient = up(&[
            "--describe-lag",
            "0s",
            "--route53-rate",
            "0",
            "--prior-request-window",
            "0s",
        ]);
        assert!(lenient.describe_lag.is_zero() && lenient.prior_request_window.is_zero());
        assert_eq!(route53_rate(&lenient), None);
        let tuned = up(&["--route53-rate", "10", "--route53-burst", "50"]);
        assert_eq!(
            route53_rate(&tuned),
            Some(RateLimit {
                per_second: 10.0,
                burst: 50.0
            })
        );
    }

    #[test]
    fn up_takes_a_cert_profile_an_iam_user_and_tls_resumption() {
        let up = |extra: &[&str]| {
            let mut args = vec!["valkey-dr-lab", "up", "--dir", "d"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Up(up)) => Ok(up),
                Ok(other) => panic!("not up: {other:?}"),
                Err(e) => Err(e),
            }
        };
        let defaults = up(&[]).unwrap();
        assert_eq!(defaults.cert_profile, CertProfile::AwsRsa);
        assert_eq!(defaults.iam_user, None);
        assert!(!defaults.tls_resumption, "fronts resume nothing by default");
        let chosen = up(&[
            "--cert-profile",
            "ecdsa",
            "--iam-user",
            "probe",
            "--tls-resumption",
        ])
        .unwrap();
        assert_eq!(chosen.cert_profile, CertProfile::Ecdsa);
        assert!(chosen.tls_resumption);
        assert_eq!(chosen.iam_user.as_deref(), Some("probe"));
        assert_eq!(defaults.access_string, "on ~* +@all");
        let denied = up(&["--access-string", "on ~* +@all -flushall"]).unwrap();
        assert_eq!(denied.access_string, "on ~* +@all -flushall");
        assert_eq!(defaults.role_path, None);
        let sso = up(&["--role-path", "/aws-reserved/sso.amazonaws.com/"]).unwrap();
        assert_eq!(
            sso.role_path.as_deref(),
            Some("/aws-reserved/sso.amazonaws.com/")
        );
        assert!(up(&["--cert-profile", "rsa"]).is_err());
        assert!(up(&["--iam-user", "probe", "--password-env", "P"]).is_err());
    }

    #[test]
    fn bench_failover_takes_a_route53_outage_in_seconds() {
        let route53_down = |extra: &[&str]| {
            let mut args = vec!["valkey-dr-lab", "bench", "failover", "--runs", "1"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Bench {
                    bench: BenchCommand::Failover { route53_down, .. },
                }) => Ok(route53_down),
                Ok(other) => panic!("not bench failover: {other:?}"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(route53_down(&[]).unwrap(), None);
        assert_eq!(route53_down(&["--route53-down", "60"]).unwrap(), Some(60));
        assert!(route53_down(&["--route53-down", "0"]).is_err());
        assert!(
            route53_down(&["--route53-down", "1m"]).is_err(),
            "seconds, a number"
        );
    }

    #[test]
    fn bench_failover_takes_a_list_of_switches() {
        let switches = |extra: &[&str]| {
            let mut args = vec!["valkey-dr-lab", "bench", "failover"];
            args.extend_from_slice(extra);
            match Cli::try_parse_from(args).map(|cli| cli.command) {
                Ok(Command::Bench {
                    bench: BenchCommand::Failover { switch, .. },
                }) => Ok(switch),
                Ok(other) => panic!("not bench failover: {other:?}"),
                Err(e) => Err(e),
            }
        };
        assert_eq!(switches(&[]).unwrap(), [SwitchArg::Record]);
        assert_eq!(
            switches(&["--switch", "record,health_check"]).unwrap(),
            [SwitchArg::Record, SwitchArg::HealthCheck]
        );
        assert_eq!(
            switches(&["--switch", "health_check"]).unwrap(),
            [SwitchArg::HealthCheck]
        );
        assert!(switches(&["--switch", "dns"]).is_err());
    }

    #[test]
    fn shell_quoting() {
        assert_eq!(shell_quote("/tmp/lab"), "/tmp/lab");
        assert_eq!(shell_quote("/tmp/my lab"), "'/tmp/my lab'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
    }
}
