//! The region-outage failover that `demo` tells and `bench failover` measures, written once so
//! that both show the same thing.
//!
//! A lab with short but AWS-shaped delays (a cache takes [`PROVISION_DELAY`] to build, a
//! Route 53 change [`INSYNC_DELAY`] to go `INSYNC`, the record has a [`TTL`] of 30 s), the real
//! `valkey-dr run` in `auto-failover` mode posting to a webhook receiver in this process, and
//! a small application that stores a session every 100 ms *through the record*, as a real one
//! would: it resolves the record with a caching resolver (so it keeps the old answer until
//! its TTL runs out), connects with TLS to the CNAME target's name, and on any error drops
//! the connection and resolves again. Then the primary region goes down.
//!
//! With [`Switch::HealthCheck`] the watch switches through Route 53's health checks instead
//! (`[watch.switch] kind = "health_check"`, issue 21): the template `valkey-dr template`
//! prints is deployed into the lab first ([`valkey_dr_lab::deploy`]), the agent publishes its
//! verdict to the lab's CloudWatch, and the lab's DNS answers the standby once the alarm and
//! the health checks say the primary is down. A task here asks the lab's DNS for the record
//! every [`DNS_POLL`], with no cache, to time the moment it answers the DR cache.
//!
//! Every agent event and every change in what the application sees is a [`Mark`] on one
//! clock. Each [`Milestone`] must arrive within its bound of the one before it, or the run
//! fails with what was last heard: nothing here waits without an end.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use futures::future::BoxFuture;
use hickory_proto::rr::RData;
use rustls_pki_types::ServerName;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::sync::CancellationToken;
use valkey_dr::executor::Phase;
use valkey_dr_lab::{Fault, Lab, LabInfo, LabOptions, PRIMARY_CACHE, PRIMARY_REGION};
use valkey_dr_probes::ResolverSettings;

use crate::bench::agent::{Agent, Alert, Webhook};

/// How long the lab's ElastiCache keeps a new cache `creating`. AWS takes about a minute;
/// a few seconds keep the story short while still being a wait the agent must poll through.
pub const PROVISION_DELAY: Duration = Duration::from_secs(3);
/// How long a Route 53 change stays `PENDING`.
pub const INSYNC_DELAY: Duration = Duration::from_secs(1);
/// The record's TTL: the shortest the agent accepts (30–60 s), the wait every application
/// has before it sees the new CNAME.
pub const TTL: Duration = Duration::from_secs(30);
/// How long CloudWatch's 60 s alarm period lasts in the lab (the lab's default).
pub const ALARM_PERIOD: Duration = valkey_dr_lab::DEFAULT_ALARM_PERIOD;
/// How long Route 53's alarm-based health checks take to follow their alarm in the lab (the
/// lab's default; AWS documents no figure).
pub const HEALTH_CHECK_DELAY: Duration = valkey_dr_lab::DEFAULT_HEALTH_CHECK_DELAY;
/// The alarms' `evaluation_periods` and `datapoints_to_alarm` (the agent's defaults, 1 of 1).
pub const ALARM_PERIODS: u32 = 1;
/// How often the story asks the lab's DNS for the record, with no cache.
pub const DNS_POLL: Duration = Duration::from_millis(50);
/// The agent's probe interval (the lab's agent.toml: timeout 500 ms, fall 3, down_after 2 s).
pub const INTERVAL: Duration = Duration::from_secs(1);
/// The RTO of the DR plan, and what the plan expects a failover by hand to take.
pub const RTO: Duration = Duration::from_secs(4 * 3600);
/// The manual estimate, low and high.
pub const MANUAL: (Duration, Duration) = (Duration::from_secs(1800), Duration::from_secs(5400));

/// The application writes a session this often.
const WRITE_EVERY: Duration = Duration::from_millis(100);
/// Each of the application's operations (resolve, connect, TLS, SET) gives up after this, as a
/// client library's timeouts would.
const APP_TIMEOUT: Duration = Duration::from_millis(500);
/// The application runs at most this long, whatever happens to the story.
const APP_MAX_RUN: Duration = Duration::from_secs(600);
/// So the writer loop is bounded in count too.
const APP_MAX_WRITES: u64 = APP_MAX_RUN.as_millis() as u64 / WRITE_EVERY.as_millis() as u64;
/// How long the application writes before the outage.
const WRITING_BEFORE_OUTAGE: Duration = Duration::from_secs(2);
/// How long the application may take to write its first session.
const APP_START_LIMIT: Duration = Duration::from_secs(10);
/// How long the agent may take to report the watch healthy.
const HEALTHY_LIMIT: Duration = Duration::from_secs(30);
/// The lab's one watch.
const WATCH: &str = "sessions";
/// A SET's reply is `+OK\r\n`; anything longer than this is not the reply we wait for.
const MAX_REPLY: usize = 512;
/// Marks buffered between the application and the story; only changes are sent.
const MARK_BUFFER: usize = 4096;

/// The lab the story runs in.
pub fn lab_options(dir: &Path) -> LabOptions {
    LabOptions {
        dir: dir.to_owned(),
        ttl: TTL,
        interval: INTERVAL,
        provision_delay: PROVISION_DELAY,
        insync_delay: INSYNC_DELAY,
        alarm_period: ALARM_PERIOD,
        health_check_delay: HEALTH_CHECK_DELAY,
        ..LabOptions::default()
    }
}

/// When the region goes down, and what goes down with it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Outage {
    /// How much later than the application's warm-up the region goes down, to move the outage
    /// within the probe interval.
    pub offset: Duration,
    /// Whether, and when, Route 53's API is down.
    pub route53: Route53Api,
    /// How the record moves: the agent's compare-and-swap, or Route 53's health checks.
    pub switch: Switch,
    /// The watch keeps a warm standby (`[watch.dr] standby = "warm"`), built with
    /// `valkey-dr standby create` before the agent starts: the failover builds nothing.
    pub standby: bool,
    /// Watches in the agent's config, the lab's own first (0 and 1: that one alone). The
    /// others share its zone, each with its own record, and watch the spare cache (in
    /// another region: they stay healthy through the outage); their readiness pass is the
    /// load a failover must not wait behind.
    pub fleet: usize,
    /// Whether a readiness pass runs when the region goes down.
    pub pass: Pass,
}

/// Route 53's API (its control plane, served from us-east-1) during a story. The zone's DNS
/// and the health checks answer throughout, as on AWS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Route53Api {
    /// It answers throughout.
    #[default]
    Up,
    /// It goes down at the outage (`route53-control-down`) and comes back this long after it
    /// (`route53-control-up`), while the region stays down.
    DownFor(Duration),
    /// It goes down once the switch is set up, before the agent starts, and stays down to the
    /// end of the story: for the health-check switch, which must need it for nothing after
    /// the set-up (a record switch could never complete).
    DownThroughout,
}

impl Route53Api {
    /// How it reads in a report.
    pub fn as_str(self) -> String {
        match self {
            Route53Api::Up => "up".to_owned(),
            Route53Api::DownFor(d) => format!("down {}s from the outage", d.as_secs()),
            Route53Api::DownThroughout => {
                "down from before the agent starts to the end of the run".to_owned()
            }
        }
    }
}

/// How the failover moves the applications: `[watch.switch] kind`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Switch {
    /// The agent's compare-and-swap of the CNAME through Route 53's API.
    #[default]
    Record,
    /// A failover pair whose PRIMARY carries a calculated health check over the agents'
    /// verdict alarms; needs a warm standby.
    HealthCheck,
}

impl Switch {
    /// Its name in the config and in a report.
    pub fn as_str(self) -> &'static str {
        match self {
            Switch::Record => "record",
            Switch::HealthCheck => "health_check",
        }
    }
}

/// A readiness pass at the outage (with `fleet`, whose pass is the load).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pass {
    /// None: the start-up pass has ended before the story starts.
    #[default]
    None,
    /// One is started on purpose (`SIGUSR1`) [`PASS_LEAD`] before the outage.
    Signalled,
    /// The agent's start-up pass, still running at the outage: for an agent that has no
    /// `SIGUSR1` (a build from before it), whose start-up pass is long. The story fails if
    /// that pass has ended before the outage.
    StartUp,
}

impl Pass {
    /// How it reads in a report.
    pub fn as_str(self) -> &'static str {
        match self {
            Pass::None => "none",
            Pass::Signalled => "signalled 1 s before the outage",
            Pass::StartUp => "the start-up pass, still running at the outage",
        }
    }
}

/// How long before the outage `pass_before` starts a readiness pass.
pub const PASS_LEAD: Duration = Duration::from_secs(1);
/// How long the fleet's first readiness pass may take before the story starts.
const FLEET_PASS_LIMIT: Duration = Duration::from_secs(180);

impl Outage {
    /// What the milestones that wait on Route 53's API may take on top of their own bounds:
    /// the time it is down, and the SDK's and the agent's backoff after it.
    fn route53_slack(&self) -> Duration {
        match self.route53 {
            Route53Api::DownFor(down) => down + ROUTE53_RETRY_MARGIN,
            // Up, or down for a health-check switch that must not wait on it at all.
            Route53Api::Up | Route53Api::DownThroughout => Duration::ZERO,
        }
    }
}

/// How long after Route 53's API comes back a retrying agent may still be waiting out its
/// backoff.
const ROUTE53_RETRY_MARGIN: Duration = Duration::from_secs(30);

/// How to start `valkey-dr`: a program, and the arguments it takes before the agent's own
/// command line (this executable's hidden agent subcommand, for the demo).
pub struct AgentProgram<'a> {
    pub path: &'a Path,
    pub leading: &'a [&'a str],
}

/// A point of the story that must happen, in the order listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Milestone {
    AppFailed,
    Down,
    Verdict,
    FailoverStarted,
    Provision,
    WaitAvailable,
    VerifyDirect,
    SwitchDns,
    DnsOnDr,
    WaitInsync,
    VerifyDns,
    FailoverCompleted,
    AppOnDr,
    AppWriting,
}

impl Milestone {
    pub const ALL: [Milestone; 14] = [
        Milestone::AppFailed,
        Milestone::Down,
        Milestone::Verdict,
        Milestone::FailoverStarted,
        Milestone::Provision,
        Milestone::WaitAvailable,
        Milestone::VerifyDirect,
        Milestone::SwitchDns,
        Milestone::DnsOnDr,
        Milestone::WaitInsync,
        Milestone::VerifyDns,
        Milestone::FailoverCompleted,
        Milestone::AppOnDr,
        Milestone::AppWriting,
    ];

    /// The name in JSON.
    pub fn key(self) -> &'static str {
        match self {
            Milestone::AppFailed => "app_failed",
            Milestone::Down => "down",
            Milestone::Verdict => "verdict",
            Milestone::FailoverStarted => "failover_started",
            Milestone::Provision => "provision",
            Milestone::WaitAvailable => "wait_available",
            Milestone::VerifyDirect => "verify_direct",
            Milestone::SwitchDns => "switch_dns",
            Milestone::DnsOnDr => "dns_answers_dr",
            Milestone::WaitInsync => "wait_insync",
            Milestone::VerifyDns => "verify_dns",
            Milestone::FailoverCompleted => "failover_completed",
            Milestone::AppOnDr => "app_on_dr",
            Milestone::AppWriting => "app_writing",
        }
    }

    /// What it means, for people.
    pub fn label(self) -> &'static str {
        match self {
            Milestone::AppFailed => "application: first failed write",
            Milestone::Down => "DETECTED (down)",
            Milestone::Verdict => "verdict 1 published (PutMetricData: the primary is down)",
            Milestone::FailoverStarted => "failover started",
            Milestone::Provision => "DR cache created (CreateServerlessCache)",
            Milestone::WaitAvailable => "DR cache available",
            Milestone::VerifyDirect => "DR cache verified directly (PING/SET/GET)",
            Milestone::SwitchDns => "DNS SWITCHED (record → DR cache)",
            Milestone::DnsOnDr => "the lab's DNS answers the DR cache (asked with no cache)",
            Milestone::WaitInsync => "Route 53 change INSYNC",
            Milestone::VerifyDns => "verified through the record (the agent's TTL wait)",
            Milestone::FailoverCompleted => "FAILOVER COMPLETED",
            Milestone::AppOnDr => "application: the record now resolves to the DR cache",
            Milestone::AppWriting => "APPLICATION WRITING AGAIN",
        }
    }

    /// The milestones a story with `switch` must reach: the executor's steps for a record
    /// switch; the verdict and the health checks' answer for a health-check one, which has no
    /// executor and no Route 53 change.
    pub fn required(switch: Switch) -> Vec<Milestone> {
        let record_only = |m: &Milestone| {
            matches!(
                m,
                Milestone::FailoverStarted
                    | Milestone::Provision
                    | Milestone::WaitAvailable
                    | Milestone::VerifyDirect
                    | Milestone::SwitchDns
                    | Milestone::WaitInsync
                    | Milestone::VerifyDns
            )
        };
        Milestone::ALL
            .into_iter()
            .filter(|m| match switch {
                Switch::Record => *m != Milestone::Verdict,
                Switch::HealthCheck => !record_only(m),
            })
            .collect()
    }

    /// The milestone this one follows (`None`: the outage), and how long after it it must
    /// come. The bounds are generous: they catch a story that stalled, not a slow one. The
    /// steps that call Route 53's API (the lease before provision, the switch, the wait for
    /// `INSYNC`, the release before completion) get `route53_slack` more.
    fn bound(self, switch: Switch, route53_slack: Duration) -> (Option<Milestone>, Duration) {
        let s = Duration::from_secs;
        if switch == Switch::HealthCheck {
            match self {
                // The verdict is published on the round that judges the watch down.
                Milestone::Verdict => return (Some(Milestone::Down), s(5)),
                // The alarm's periods, the health check's delay, and room for a slow machine.
                Milestone::DnsOnDr => {
                    return (
                        Some(Milestone::Verdict),
                        ALARM_PERIOD * (ALARM_PERIODS + 2) + HEALTH_CHECK_DELAY + s(15),
                    );
                }
                // The agent's own resolver may hold the old answer for a whole TTL; so may
                // the application's.
                Milestone::FailoverCompleted => return (Some(Milestone::DnsOnDr), TTL + s(15)),
                Milestone::AppOnDr => return (Some(Milestone::DnsOnDr), TTL + s(10)),
                _ => {}
            }
        }
        match self {
            Milestone::Verdict => (Some(Milestone::Down), s(5)),
            // The lab's DNS answers the new CNAME as soon as the change is applied.
            Milestone::DnsOnDr => (Some(Milestone::VerifyDirect), s(30) + route53_slack),
            Milestone::AppFailed => (None, s(5)),
            // fall 3 × 1 s, plus timeouts and the witness: a few seconds.
            Milestone::Down => (None, s(15)),
            Milestone::FailoverStarted => (Some(Milestone::Down), s(5)),
            Milestone::Provision => (Some(Milestone::FailoverStarted), s(20) + route53_slack),
            Milestone::WaitAvailable => (Some(Milestone::Provision), PROVISION_DELAY + s(30)),
            Milestone::VerifyDirect => (Some(Milestone::WaitAvailable), s(15)),
            Milestone::SwitchDns => (Some(Milestone::VerifyDirect), s(30) + route53_slack),
            Milestone::WaitInsync => (
                Some(Milestone::SwitchDns),
                INSYNC_DELAY + s(30) + route53_slack,
            ),
            // The agent's own resolver may hold the old answer for a whole TTL.
            Milestone::VerifyDns => (Some(Milestone::WaitInsync), TTL + s(35)),
            Milestone::FailoverCompleted => (Some(Milestone::VerifyDns), s(15) + route53_slack),
            // So may the application's.
            Milestone::AppOnDr => (Some(Milestone::SwitchDns), TTL + s(10)),
            Milestone::AppWriting => (Some(Milestone::AppOnDr), s(10)),
        }
    }

    /// The executor step this milestone is the end of.
    pub fn step(self) -> Option<&'static str> {
        match self {
            Milestone::Provision => Some("provision"),
            Milestone::WaitAvailable => Some("wait_available"),
            Milestone::VerifyDirect => Some("verify_direct"),
            Milestone::SwitchDns => Some("switch_dns"),
            Milestone::WaitInsync => Some("wait_insync"),
            Milestone::VerifyDns => Some("verify_dns"),
            _ => None,
        }
    }

    fn of_alert(alert: &Alert) -> Option<Milestone> {
        match alert.event() {
            "down" => Some(Milestone::Down),
            "verdict" if alert.body["detail"]["value"] == 1 => Some(Milestone::Verdict),
            "failover_started" => Some(Milestone::FailoverStarted),
            "failover_completed" => Some(Milestone::FailoverCompleted),
            "failover_step" => {
                let detail = &alert.body["detail"];
                if detail["phase"] != "done" || detail["failback"] == true {
                    return None;
                }
                let step = detail["step"].as_str()?;
                Milestone::ALL.into_iter().find(|m| m.step() == Some(step))
            }
            _ => None,
        }
    }
}

/// A change in what the application sees.
#[derive(Debug, Clone)]
pub enum AppChange {
    /// The record resolved to another CNAME target than before (or for the first time).
    Resolved { target: String },
    /// A write failed after one succeeded.
    Failing {
        error: String,
        /// When the last write succeeded.
        last_ok: Option<Instant>,
    },
    /// A write succeeded, the first one or the first after failures.
    Writing { target: String },
}

/// What happened, and when (arrival at this process).
#[derive(Debug, Clone)]
pub enum Mark {
    /// An event the agent posted to the webhook.
    Alert(Alert),
    /// The application's view changed.
    App { at: Instant, change: AppChange },
}

impl Mark {
    fn at(&self) -> Instant {
        match self {
            Mark::Alert(alert) => alert.at,
            Mark::App { at, .. } => *at,
        }
    }
}

/// What the story reports as it goes.
pub enum Progress<'a> {
    /// A setup step, before the outage.
    Setup(String),
    /// The outage has been injected.
    Outage,
    /// A mark, `since_outage` seconds after the outage (negative: before it), and the
    /// milestone it is, if it is the first of its kind.
    Mark {
        since_outage: f64,
        mark: &'a Mark,
        milestone: Option<Milestone>,
    },
}

/// One finished failover, timed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// When each milestone arrived, after the outage.
    pub at: BTreeMap<Milestone, Duration>,
    /// Last successful write before the application noticed → first successful write after.
    pub app_visible_outage: Duration,
    /// `failover_completed`'s `detail.steps_ms`: each executor step, timed by the agent.
    pub steps_ms: BTreeMap<String, u64>,
    /// `failover_completed`'s `detail.total_ms`: the agent's failover, start to end.
    pub total_ms: Option<u64>,
    /// When each executor step started and finished according to the agent's journal, in
    /// seconds after the outage. The webhook's `failover_step` can arrive later than the step
    /// finished; the journal is the executor's own record.
    pub journal: BTreeMap<String, (f64, f64)>,
    /// The DR cache's endpoint the record now points at.
    pub endpoint: String,
    /// When Route 53's API came back after the outage, if the story took it down and it
    /// came back before the story ended.
    pub route53_back: Option<Duration>,
    /// The failover switched to a warm standby: no build was waited for.
    pub standby: bool,
    /// How the record moved.
    pub switch: Switch,
    /// The AWS calls the lab answered from the outage to the story's last milestone: all the
    /// agent's (nothing else calls AWS meanwhile).
    pub calls: AgentCalls,
    /// Sessions the application stored, and writes that failed.
    pub writes_ok: u64,
    pub writes_failed: u64,
}

/// AWS calls during a failover, counted from the lab's call log.
#[derive(Debug, Clone, Default)]
pub struct AgentCalls {
    /// Route 53 API calls by action, answered or refused (503 while it is down).
    pub route53: BTreeMap<String, u64>,
    /// Of those, how many Route 53 refused.
    pub route53_refused: u64,
    /// The refusals by error code (`ServiceUnavailable` while it is down,
    /// `PriorRequestNotComplete`, …).
    pub route53_errors: BTreeMap<String, u64>,
    /// `CreateServerlessCache` calls.
    pub elasticache_creates: u64,
    /// Every call by service and action, for the record.
    pub by_action: BTreeMap<String, u64>,
}

impl AgentCalls {
    /// Counts `calls`.
    pub fn of(calls: &[valkey_dr_lab::Call]) -> AgentCalls {
        let mut out = AgentCalls::default();
        for call in calls {
            let service = serde_json::to_value(call.service)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            *out.by_action
                .entry(format!("{service}:{}", call.action))
                .or_default() += 1;
            match call.service {
                valkey_dr_lab::AwsService::Route53 => {
                    *out.route53.entry(call.action.clone()).or_default() += 1;
                    if call.status >= 400 {
                        out.route53_refused += 1;
                        let code = call
                            .error_code
                            .clone()
                            .unwrap_or_else(|| call.status.to_string());
                        *out.route53_errors.entry(code).or_default() += 1;
                    }
                }
                valkey_dr_lab::AwsService::Elasticache
                    if call.action == "CreateServerlessCache" =>
                {
                    out.elasticache_creates += 1;
                }
                _ => {}
            }
        }
        out
    }

    /// Route 53 API calls in all.
    pub fn route53_total(&self) -> u64 {
        self.route53.values().sum()
    }
}

impl Outcome {
    /// Outage → milestone (zero when the story had none such).
    pub fn at(&self, m: Milestone) -> Duration {
        self.get(m).unwrap_or_default()
    }

    /// Outage → milestone, when the story had it.
    pub fn get(&self, m: Milestone) -> Option<Duration> {
        self.at.get(&m).copied()
    }

    /// `a` → `b`, zero when `b` came first.
    pub fn between(&self, a: Milestone, b: Milestone) -> Duration {
        self.at(b).saturating_sub(self.at(a))
    }

    /// An executor step's duration as the agent timed it.
    pub fn step(&self, step: &str) -> Option<Duration> {
        self.steps_ms.get(step).map(|ms| Duration::from_millis(*ms))
    }

    /// Outage → the application writing again.
    pub fn app_outage(&self) -> Duration {
        self.at(Milestone::AppWriting)
    }

    /// Outage → the record changed: the end of switch_dns in the agent's journal (the lab's
    /// DNS answers the new CNAME as soon as ChangeResourceRecordSets returns), else the
    /// webhook's arrival; with a health-check switch, which has no journal, the lab's DNS
    /// answering the DR cache.
    pub fn dns_switched(&self) -> Duration {
        self.journal_done("switch_dns")
            .or_else(|| self.get(Milestone::SwitchDns))
            .unwrap_or_else(|| self.at(Milestone::DnsOnDr))
    }

    /// When `step` finished by the journal, after the outage.
    pub fn journal_done(&self, step: &str) -> Option<Duration> {
        self.journal
            .get(step)
            .map(|(_, done)| Duration::from_secs_f64(done.max(0.0)))
    }

    /// How much later the `failover_step` webhook for `step` arrived than the journal says
    /// the step finished.
    pub fn event_lag(&self, step: &str) -> Option<f64> {
        let m = Milestone::ALL
            .into_iter()
            .find(|m| m.step() == Some(step))?;
        let (_, done) = self.journal.get(step)?;
        Some(self.at.get(&m)?.as_secs_f64() - done)
    }

    /// DNS switched → the application's resolver hands it the new CNAME: what was left of the
    /// TTL of the answer it held (it may have refreshed the old answer during the outage), plus
    /// its own retry pace. Between 0 and one TTL, depending on when it last resolved.
    pub fn app_dns_wait(&self) -> Duration {
        self.at(Milestone::AppOnDr)
            .saturating_sub(self.dns_switched())
    }

    /// The application's outage had its cached answer been refreshed just before the switch:
    /// the measured outage with its DNS wait replaced by the full TTL. This takes the luck of
    /// the cache's phase out of the figure, so runs compare.
    pub fn worst_case_app_outage(&self) -> Duration {
        self.app_outage().saturating_sub(self.app_dns_wait()) + TTL
    }

    /// The cache build the failover waited for: the provision delay, none with a warm standby.
    pub fn build(&self) -> Duration {
        if self.standby {
            Duration::ZERO
        } else {
            PROVISION_DELAY
        }
    }

    /// The lab's own waits on the switch's path, which are not the agent's: for a record
    /// switch the build and the change's insync delay; for a health-check switch the alarm's
    /// periods (at most, since a verdict lands anywhere in its period) and the health check's
    /// delay.
    pub fn aws_waits(&self) -> Duration {
        match self.switch {
            Switch::Record => self.build() + INSYNC_DELAY,
            Switch::HealthCheck => ALARM_PERIOD * ALARM_PERIODS + HEALTH_CHECK_DELAY,
        }
    }

    /// What the agent adds to the application's (worst-case) outage beyond what AWS and DNS
    /// take anyway: worst-case outage − (AWS's waits + TTL), in seconds (negative when a wait
    /// overlapped another: in the lab the record answers the new CNAME before the change is
    /// INSYNC, so the insync delay is not on the application's path).
    pub fn overhead_s(&self) -> f64 {
        self.worst_case_app_outage().as_secs_f64() - (self.aws_waits() + TTL).as_secs_f64()
    }

    /// [`Outcome::overhead_s`] with the measured application outage as it was (its DNS wait
    /// as luck had it): the brief's formula applied to the raw figure.
    pub fn raw_overhead_s(&self) -> f64 {
        self.app_outage().as_secs_f64() - (self.aws_waits() + TTL).as_secs_f64()
    }
}

/// Runs the whole story in a fresh lab in `dir`: lab up, agent healthy, application writing,
/// region outage as `outage` says, every milestone within its bound. The lab is shut down
/// before returning.
pub async fn play(
    dir: &Path,
    agent: &AgentProgram<'_>,
    outage: Outage,
    progress: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<Outcome> {
    let lab = Lab::start(lab_options(dir))
        .await
        .context("starting the lab")?;
    let info = lab.info().clone();
    progress(Progress::Setup(format!(
        "lab up: {} CNAME {} (TTL {}s); a new cache takes {}s to build, a Route 53 change {}s to go INSYNC",
        info.record,
        info.cache(PRIMARY_CACHE)
            .map_or("?", |c| c.endpoint.as_str()),
        info.ttl_s,
        PROVISION_DELAY.as_secs(),
        INSYNC_DELAY.as_secs()
    )));
    let result = with_lab(&lab, &info, agent, outage, progress).await;
    lab.shutdown().await;
    result
}

/// `toml` with a warm standby for its watch.
fn warm(toml: &str) -> anyhow::Result<String> {
    const AFTER: &str = "create_timeout = \"5m\"\n";
    anyhow::ensure!(
        toml.matches(AFTER).count() == 1,
        "the lab's agent.toml no longer has exactly one `{}`",
        AFTER.trim_end()
    );
    Ok(toml.replacen(AFTER, &format!("{AFTER}standby = \"warm\"\n"), 1))
}

/// `valkey-dr standby create`: the warm standby built in the lab's DR region, waited for and
/// proved to serve; what it printed.
async fn create_standby(program: &AgentProgram<'_>, config: &Path) -> anyhow::Result<String> {
    let mut command = tokio::process::Command::new(program.path);
    command
        .args(program.leading)
        .args(["standby", "create", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .envs(valkey_dr_lab::LAB_AWS_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STANDBY_LIMIT, command.output())
        .await
        .with_context(|| format!("valkey-dr standby create took over {STANDBY_LIMIT:?}"))?
        .context("running valkey-dr standby create")?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    anyhow::ensure!(
        out.status.success(),
        "valkey-dr standby create failed: {said}"
    );
    Ok(said.trim().to_owned())
}

/// How long `valkey-dr standby create` may take in the lab (a 3 s build, a probe).
const STANDBY_LIMIT: Duration = Duration::from_secs(60);
/// How long `valkey-dr template` may take (no AWS call).
const TEMPLATE_LIMIT: Duration = Duration::from_secs(30);

/// `toml` (with its warm standby) switching through Route 53's health checks: the agent's
/// defaults otherwise (`metric_region` the DR region, 1 of 1 alarm periods).
fn health_check_switch(toml: &str) -> anyhow::Result<String> {
    const AFTER: &str = "standby = \"warm\"\n";
    anyhow::ensure!(
        toml.matches(AFTER).count() == 1,
        "the config has no warm standby to switch to"
    );
    Ok(toml.replacen(
        AFTER,
        &format!("{AFTER}\n[watch.switch]\nkind = \"health_check\"\n"),
        1,
    ))
}

/// `valkey-dr template --format json`: the health-check switch's CloudFormation template for
/// `config`.
async fn switch_template(program: &AgentProgram<'_>, config: &Path) -> anyhow::Result<Value> {
    let mut command = tokio::process::Command::new(program.path);
    command
        .args(program.leading)
        .args(["template", "--format", "json", "--config"])
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .envs(valkey_dr_lab::LAB_AWS_ENV)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TEMPLATE_LIMIT, command.output())
        .await
        .with_context(|| format!("valkey-dr template took over {TEMPLATE_LIMIT:?}"))?
        .context("running valkey-dr template")?;
    anyhow::ensure!(
        out.status.success(),
        "valkey-dr template failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    serde_json::from_slice(&out.stdout).context("valkey-dr template printed no JSON")
}

/// The record of the fleet's watch `i` (the lab's own for 0).
pub fn fleet_record(i: usize) -> String {
    if i == 0 {
        valkey_dr_lab::RECORD.to_owned()
    } else {
        format!("s{i}.{}", valkey_dr_lab::ZONE)
    }
}

/// The lab's `[[watch]]` table `watch` as the fleet's watch `i`: `sessions-I`, with its own
/// record in the zone and its own DR cache name.
pub fn fleet_watch(watch: &str, i: usize) -> String {
    use valkey_dr_lab::config::DR_CACHE;
    watch
        .replacen(
            "name = \"sessions\"",
            &format!("name = \"sessions-{i}\""),
            1,
        )
        .replacen(
            &format!("record = \"{}\"", valkey_dr_lab::RECORD),
            &format!("record = \"{}\"", fleet_record(i)),
            1,
        )
        .replacen(
            &format!("cache_name = \"{DR_CACHE}\""),
            &format!("cache_name = \"{DR_CACHE}-{i}\""),
            1,
        )
}

/// `toml` (the lab's, with its one watch) with `fleet - 1` more watches after it: `sessions-I`,
/// each with its own record in the zone and DR cache name, watching the spare cache, and
/// readiness passes an hour apart (the start-up one, and those asked for).
fn with_fleet(
    toml: &str,
    info: &LabInfo,
    primary_endpoint: &str,
    fleet: usize,
) -> anyhow::Result<String> {
    let spare = info
        .cache_with_role(valkey_dr_lab::Role::Spare)
        .context("the lab has no spare cache")?;
    let primary = format!(
        "[watch.primary]\nregion = \"{PRIMARY_REGION}\"\ncache_name = \"{PRIMARY_CACHE}\"\nendpoint = \"{primary_endpoint}\"\n"
    );
    let watched = format!(
        "[watch.primary]\nregion = \"{}\"\ncache_name = \"{}\"\nendpoint = \"{}\"\n",
        spare.region, spare.name, spare.endpoint
    );
    const LOG: &str = "log_format = \"text\"\n";
    let start = toml
        .find("[[watch]]\n")
        .context("the lab's agent.toml has no [[watch]]")?;
    let end = toml[start..]
        .find("[[notify]]")
        .map_or(toml.len(), |e| start + e);
    let watch = &toml[start..end];
    anyhow::ensure!(
        watch.contains(&primary) && toml[..start].matches(LOG).count() == 1,
        "the lab's agent.toml no longer has the [watch.primary] and log_format this expects"
    );
    let mut out = toml[..start].replacen(LOG, &format!("{LOG}readiness_interval = \"1h\"\n"), 1);
    out.push_str(watch);
    for i in 1..fleet {
        out.push('\n');
        out.push_str(&fleet_watch(watch, i).replacen(&primary, &watched, 1));
    }
    out.push('\n');
    out.push_str(&toml[end..]);
    Ok(out)
}

/// Puts the records of the fleet's watches 1.. into the lab's zone, each a CNAME to `target`
/// with the lab's TTL, in one change through the agent's own Route 53 client.
pub async fn fleet_records(info: &LabInfo, target: &str, fleet: usize) -> anyhow::Result<()> {
    use valkey_dr::executor::api::{Change, DnsApi as _, RecordSet};
    if fleet < 2 {
        return Ok(());
    }
    let config = valkey_dr::config::Config::load(&info.config, &valkey_dr::config::ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::from(e)))?;
    let route53 = valkey_dr::executor::sdk::SdkDns::new(
        &valkey_dr::aws::sdk_config(&config, "us-east-1").await,
    );
    let changes: Vec<Change> = (1..fleet)
        .map(|i| {
            Change::Create(RecordSet {
                name: fleet_record(i),
                rtype: "CNAME".into(),
                ttl: u32::try_from(info.ttl_s).unwrap_or(30),
                values: vec![format!("{target}.")],
            })
        })
        .collect();
    route53
        .change(valkey_dr_lab::config::HOSTED_ZONE_ID, &changes)
        .await
        .map_err(|e| anyhow::anyhow!("adding the fleet's records: {e}"))?;
    Ok(())
}

/// The lab's agent.toml in auto-failover mode, posting to `hook`.
fn auto_failover_config(lab_toml: &str, hook: &Webhook) -> anyhow::Result<String> {
    config_in_mode(lab_toml, "auto-failover", hook)
}

/// The lab's agent.toml (written in `alert-only` mode) in `mode`, posting to `hook`.
pub(crate) fn config_in_mode(lab_toml: &str, mode: &str, hook: &Webhook) -> anyhow::Result<String> {
    const ALERT_ONLY: &str = "mode = \"alert-only\"\n";
    anyhow::ensure!(
        lab_toml.matches(ALERT_ONLY).count() == 1,
        "the lab's agent.toml no longer has exactly one `{}`",
        ALERT_ONLY.trim_end()
    );
    Ok(lab_toml.replacen(ALERT_ONLY, &format!("mode = \"{mode}\"\n"), 1) + &hook.notify_toml())
}

async fn with_lab(
    lab: &Lab,
    info: &LabInfo,
    program: &AgentProgram<'_>,
    outage: Outage,
    progress: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<Outcome> {
    let primary_endpoint = info
        .cache(PRIMARY_CACHE)
        .context("the lab has no primary cache")?
        .endpoint
        .clone();
    let mut hook = Webhook::start().await?;
    let lab_toml = std::fs::read_to_string(&info.config)
        .with_context(|| format!("reading {}", info.config.display()))?;
    let config = lab.dir().join("agent-failover.toml");
    let mut toml = auto_failover_config(&lab_toml, &hook)?;
    if outage.switch == Switch::HealthCheck {
        anyhow::ensure!(
            outage.standby && outage.fleet < 2,
            "a health-check switch needs a warm standby, and is played with one watch"
        );
    }
    if outage.route53 == Route53Api::DownThroughout {
        anyhow::ensure!(
            outage.switch == Switch::HealthCheck,
            "a record switch cannot complete with Route 53's API down throughout"
        );
    }
    if outage.standby {
        toml = warm(&toml)?;
    }
    if outage.switch == Switch::HealthCheck {
        toml = health_check_switch(&toml)?;
    }
    if outage.fleet > 1 {
        let spare = info
            .cache_with_role(valkey_dr_lab::Role::Spare)
            .context("the lab has no spare cache")?;
        toml = with_fleet(&toml, info, &primary_endpoint, outage.fleet)?;
        fleet_records(info, &spare.endpoint, outage.fleet).await?;
    }
    std::fs::write(&config, toml).with_context(|| format!("writing {}", config.display()))?;
    if outage.standby {
        let built = create_standby(program, &config).await?;
        progress(Progress::Setup(built));
    }
    if outage.switch == Switch::HealthCheck {
        let template = switch_template(program, &config).await?;
        let deployed = valkey_dr_lab::deploy::deploy_switch(&lab.current_info(), &template, None)
            .await
            .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::from(e)))
            .context("deploying `valkey-dr template` into the lab")?;
        progress(Progress::Setup(format!(
            "health-check switch deployed (valkey-dr template): alarms {} in {}, {} health checks, the record now the failover pair {}",
            deployed.alarms.join(", "),
            deployed.alarm_region,
            deployed.health_checks.len(),
            deployed
                .records
                .iter()
                .map(|(id, to)| format!("{id} → {to}"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    if outage.route53 == Route53Api::DownThroughout {
        lab.fault(Fault::Route53ControlDown)
            .await
            .context("taking Route 53's API down")?;
        progress(Progress::Setup(
            "Route 53's API down (route53-control-down) until the end of the run".to_owned(),
        ));
    }
    let log = lab.dir().join("agent.log");
    let mut agent = Agent::start_with(
        program.path,
        program.leading,
        &config,
        &lab.dir().join("state"),
        &log,
    )
    .await?;
    let outcome = async {
        agent
            .wait_all("healthy", outage.fleet.max(1), HEALTHY_LIMIT)
            .await?;
        if outage.pass != Pass::StartUp {
            // Every variant starts from the same quiet state: the start-up pass over, so that
            // the calls counted during the failover are the failover's.
            agent.wait_readiness_checked(FLEET_PASS_LIMIT).await?;
        }
        progress(Progress::Setup(format!(
            "agent healthy: valkey-dr run, mode = \"auto-failover\", probing every {}s (log: {})",
            INTERVAL.as_secs(),
            log.display()
        )));
        let mut app = App::start(info)?;
        let story = story(
            lab,
            &mut agent,
            &mut hook,
            &mut app,
            &primary_endpoint,
            outage,
            progress,
        )
        .await;
        let (writes_ok, writes_failed) = app.stop().await;
        let mut outcome = story?;
        outcome.writes_ok = writes_ok;
        outcome.writes_failed = writes_failed;
        anyhow::Ok(outcome)
    }
    .await;
    // The cause first, then what the agent was saying when it happened.
    let outcome = outcome.map_err(|e| {
        anyhow::anyhow!(
            "{e:#}\n\nthe agent's log ({}) ends with:\n{}",
            log.display(),
            agent.log_tail()
        )
    });
    agent.stop().await;
    outcome
}

/// From the application's first write to the last milestone.
async fn story(
    lab: &Lab,
    agent: &mut Agent,
    hook: &mut Webhook,
    app: &mut App,
    primary_endpoint: &str,
    outage: Outage,
    progress: &mut dyn FnMut(Progress<'_>),
) -> anyhow::Result<Outcome> {
    // The application writes for a while first, so the outage interrupts a steady state.
    let warm_up = WRITING_BEFORE_OUTAGE + outage.offset;
    let required = Milestone::required(outage.switch);
    let mut dns = DnsWatch::start(lab.info().dns, lab.info().record.clone());
    let route53_slack = outage.route53_slack();
    let deadline = Instant::now() + APP_START_LIMIT;
    let mut first_ok = None;
    while first_ok.is_none_or(|t: Instant| t.elapsed() < warm_up) {
        let wait = match first_ok {
            Some(t) => t + warm_up,
            None => deadline,
        };
        match tokio::time::timeout_at(wait, app.marks.recv()).await {
            Ok(Some(mark)) => {
                if let Mark::App {
                    at,
                    change: AppChange::Writing { .. },
                } = &mark
                {
                    first_ok.get_or_insert(*at);
                }
                progress(Progress::Setup(app_setup_line(&mark)));
            }
            Ok(None) => bail!("the application stopped before it wrote a session"),
            Err(_) if first_ok.is_none() => bail!(
                "the application wrote no session through the record within {APP_START_LIMIT:?}"
            ),
            Err(_) => {}
        }
    }
    // Nothing should have been said while all was well; whatever was, is shown.
    for _ in 0..MARK_BUFFER {
        let Some(alert) = hook.next(Instant::now()).await else {
            break;
        };
        progress(Progress::Setup(format!(
            "agent said before the outage: {}",
            alert.body["text"].as_str().unwrap_or("?")
        )));
    }

    match outage.pass {
        Pass::None => {}
        Pass::Signalled => {
            agent.start_readiness_pass()?;
            tokio::time::sleep(PASS_LEAD).await;
        }
        Pass::StartUp => anyhow::ensure!(
            !agent.readiness_checked().await?,
            "the agent's start-up readiness pass ended before the outage: nothing to measure"
        ),
    }
    // Every AWS call the lab answers from here on is the agent's.
    let calls_before = lab.calls().last().map_or(0, |c| c.seq);
    // The journal's times are wall-clock: this pair maps them onto the story's clock.
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    lab.fault(Fault::RegionOutage {
        region: PRIMARY_REGION.to_owned(),
        route53: false,
    })
    .await
    .context("injecting the region outage")?;
    // When Route 53's API is to come back, while it is down.
    let mut route53_up_at = None;
    if let Route53Api::DownFor(down) = outage.route53 {
        lab.fault(Fault::Route53ControlDown)
            .await
            .context("taking Route 53's API down")?;
        route53_up_at = Some(t0 + down);
    }
    let mut route53_back = None;
    progress(Progress::Outage);

    let mut at: BTreeMap<Milestone, Instant> = BTreeMap::new();
    let mut last_ok_before: Option<Instant> = None;
    let mut completed: Option<Value> = None;
    let mut last_heard = String::from("nothing yet");
    // One pass per mark or per deadline; every milestone's deadline is finite, so the loop
    // ends, and the count bound is a second guard.
    for _ in 0..100_000 {
        if let Some(up_at) = route53_up_at
            && Instant::now() >= up_at
        {
            lab.fault(Fault::Route53ControlUp)
                .await
                .context("bringing Route 53's API back")?;
            route53_up_at = None;
            route53_back = Some(Instant::now());
        }
        let pending: Vec<(Milestone, Instant)> = required
            .iter()
            .copied()
            .filter(|m| !at.contains_key(m))
            .filter_map(|m| {
                let (after, within) = m.bound(outage.switch, route53_slack);
                match after {
                    None => Some((m, t0 + within)),
                    Some(a) => at.get(&a).map(|t| (m, *t + within)),
                }
            })
            .collect();
        if required.iter().all(|m| at.contains_key(m)) {
            break;
        }
        // Every milestone not yet seen waits on one that is, or on the outage: there is
        // always a next deadline while something is missing.
        let Some(&(next, deadline)) = pending.iter().min_by_key(|(_, d)| *d) else {
            bail!("internal: milestones missing with no deadline: {at:?}");
        };
        if Instant::now() >= deadline {
            let (after, within) = next.bound(outage.switch, route53_slack);
            bail!(
                "no \"{}\" within {within:?} of {}; last heard: {last_heard}",
                next.label(),
                after.map_or("the outage", Milestone::label)
            );
        }
        agent.ensure_running()?;
        // Wake at least once a second to see that the agent still runs, and when Route 53's
        // API is due back.
        let wake = deadline
            .min(Instant::now() + Duration::from_secs(1))
            .min(route53_up_at.unwrap_or(deadline));
        let mark = tokio::select! {
            alert = hook.next(wake) => alert.map(Mark::Alert),
            mark = app.marks.recv() => match mark {
                Some(mark) => Some(mark),
                None => bail!("the application stopped writing"),
            },
            Some((when, target)) = dns.changes.recv() => {
                last_heard = format!(
                    "the lab's DNS answers {target} at t{:+.1}s",
                    signed_secs(when, t0)
                );
                if when >= t0 && !valkey_dr_probes::same_name(&target, primary_endpoint) {
                    at.entry(Milestone::DnsOnDr).or_insert(when);
                }
                None
            },
        };
        let Some(mark) = mark else { continue };
        let milestone = match &mark {
            Mark::Alert(alert) => {
                last_heard = format!(
                    "{} at t+{:.1}s",
                    alert.body["text"].as_str().unwrap_or("?"),
                    signed_secs(alert.at, t0)
                );
                match alert.event() {
                    "failover_failed" | "failover_blocked" | "stood_down" => {
                        progress(Progress::Mark {
                            since_outage: signed_secs(alert.at, t0),
                            mark: &mark,
                            milestone: None,
                        });
                        bail!(
                            "the agent did not fail over: {}",
                            alert.body["text"].as_str().unwrap_or("?")
                        );
                    }
                    "failover_completed" => completed = Some(alert.body["detail"].clone()),
                    _ => {}
                }
                Milestone::of_alert(alert)
            }
            Mark::App { at: when, change } => match change {
                AppChange::Failing { last_ok, .. } if *when >= t0 => {
                    if !at.contains_key(&Milestone::AppFailed) {
                        last_ok_before = *last_ok;
                    }
                    Some(Milestone::AppFailed)
                }
                AppChange::Resolved { target }
                    if !valkey_dr_probes::same_name(target, primary_endpoint) =>
                {
                    Some(Milestone::AppOnDr)
                }
                AppChange::Writing { target }
                    if at.contains_key(&Milestone::AppFailed)
                        && !valkey_dr_probes::same_name(target, primary_endpoint) =>
                {
                    Some(Milestone::AppWriting)
                }
                _ => None,
            },
        };
        let milestone = milestone.filter(|m| !at.contains_key(m) && required.contains(m));
        if let Some(m) = milestone {
            at.insert(m, mark.at());
        }
        progress(Progress::Mark {
            since_outage: signed_secs(mark.at(), t0),
            mark: &mark,
            milestone,
        });
    }
    anyhow::ensure!(
        required.iter().all(|m| at.contains_key(m)),
        "the story did not finish: {at:?}"
    );
    dns.stop().await;
    let calls: Vec<valkey_dr_lab::Call> = lab
        .calls()
        .into_iter()
        .filter(|c| c.seq > calls_before)
        .collect();

    let detail = completed.unwrap_or_default();
    let endpoint = detail["endpoint"].as_str().unwrap_or_default().to_owned();
    let steps_ms = detail["steps_ms"]
        .as_object()
        .map(|steps| {
            steps
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                .collect()
        })
        .unwrap_or_default();
    let writing_again = at[&Milestone::AppWriting];
    let since = |t: SystemTime| match t.duration_since(wall0) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let mut journal = BTreeMap::new();
    let entries = valkey_dr::failover::load_journal(&lab.dir().join("state"), WATCH)
        .map_err(|e| anyhow::anyhow!("reading the agent's failover journal: {e:#}"))?
        .map(|j| j.entries)
        .unwrap_or_default();
    for entry in entries.iter().filter(|e| e.phase == Phase::Done) {
        // The last start before the done, as the agent's own timings count it.
        let started = entries
            .iter()
            .rev()
            .find(|e| e.step == entry.step && e.phase == Phase::Started)
            .map_or(f64::NAN, |e| since(e.at));
        journal.insert(entry.step.as_str().to_owned(), (started, since(entry.at)));
    }
    Ok(Outcome {
        at: at
            .iter()
            .map(|(m, t)| (*m, t.saturating_duration_since(t0)))
            .collect(),
        app_visible_outage: writing_again.saturating_duration_since(last_ok_before.unwrap_or(t0)),
        steps_ms,
        total_ms: detail["total_ms"].as_u64(),
        journal,
        endpoint,
        route53_back: route53_back.map(|t| t.saturating_duration_since(t0)),
        standby: outage.standby,
        switch: outage.switch,
        calls: AgentCalls::of(&calls),
        writes_ok: 0,
        writes_failed: 0,
    })
}

fn app_setup_line(mark: &Mark) -> String {
    match mark {
        Mark::App {
            change: AppChange::Resolved { target },
            ..
        } => format!(
            "application: {} resolves to {target}",
            valkey_dr_lab::RECORD
        ),
        Mark::App {
            change: AppChange::Writing { target },
            ..
        } => format!(
            "application: storing a session every {}ms through the record (TLS to {target})",
            WRITE_EVERY.as_millis()
        ),
        Mark::App {
            change: AppChange::Failing { error, .. },
            ..
        } => format!("application: a write failed: {error}"),
        Mark::Alert(alert) => alert.body["text"].as_str().unwrap_or("?").to_owned(),
    }
}

/// `at − t0` in seconds, negative when `at` came first.
pub fn signed_secs(at: Instant, t0: Instant) -> f64 {
    if at >= t0 {
        (at - t0).as_secs_f64()
    } else {
        -(t0 - at).as_secs_f64()
    }
}

/// The lab's DNS answer for the record, asked every [`DNS_POLL`] with no cache: what a
/// resolver whose cached answer just ran out would get. Each change is sent with when it was
/// seen.
struct DnsWatch {
    changes: mpsc::Receiver<(Instant, String)>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl DnsWatch {
    fn start(server: SocketAddr, record: String) -> DnsWatch {
        let (tx, changes) = mpsc::channel(MARK_BUFFER);
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let Ok(socket) = tokio::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).await
            else {
                return;
            };
            let mut ticker = tokio::time::interval(DNS_POLL);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            let mut last: Option<String> = None;
            let polls = APP_MAX_RUN.as_millis() / DNS_POLL.as_millis();
            for id in 0..polls {
                tokio::select! {
                    biased;
                    _ = token.cancelled() => break,
                    _ = ticker.tick() => {}
                }
                let Some(target) = cname_of(&socket, server, &record, id as u16).await else {
                    continue;
                };
                if last.as_deref() != Some(target.as_str()) {
                    last = Some(target.clone());
                    if tx.try_send((Instant::now(), target)).is_err() {
                        break;
                    }
                }
            }
        });
        DnsWatch {
            changes,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(2), self.task).await;
    }
}

/// The CNAME target the DNS server at `server` answers for `record` now, asked once over UDP;
/// `None` when it does not answer within [`APP_TIMEOUT`] or answers no CNAME for it.
async fn cname_of(
    socket: &tokio::net::UdpSocket,
    server: SocketAddr,
    record: &str,
    id: u16,
) -> Option<String> {
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::{Name, RecordType};
    let name = Name::from_ascii(record).ok()?;
    let mut query = Message::new();
    query
        .set_id(id)
        .set_recursion_desired(true)
        .add_query(Query::query(name.clone(), RecordType::A));
    socket.send_to(&query.to_vec().ok()?, server).await.ok()?;
    let mut buf = vec![0u8; 4096];
    let deadline = Instant::now() + APP_TIMEOUT;
    // Answers to earlier, timed-out queries are skipped by their id; bounded by the deadline.
    for _ in 0..16 {
        let n = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .ok()?
            .ok()?;
        let Ok(reply) = Message::from_vec(&buf[..n]) else {
            continue;
        };
        if reply.id() != id {
            continue;
        }
        return reply.answers().iter().find_map(|r| match r.data() {
            RData::CNAME(c) if r.name() == &name => {
                Some(c.0.to_ascii().trim_end_matches('.').to_owned())
            }
            _ => None,
        });
    }
    None
}

/// The application: a task storing sessions through the record, reporting each change in
/// what it sees.
pub(crate) struct App {
    pub(crate) marks: mpsc::Receiver<Mark>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<(u64, u64)>,
}

impl App {
    pub(crate) fn start(info: &LabInfo) -> anyhow::Result<App> {
        // The probes' resolver: hickory with its cache on, which keeps an answer until its
        // TTL runs out, as an application's resolver does.
        let resolver = valkey_dr_probes::build_resolver(&ResolverSettings {
            nameservers: vec![info.dns],
        })
        .context("building the application's resolver")?;
        let tls = valkey_dr_probes::client_config(Some(&info.ca_file), false)
            .context("the application's TLS config")?;
        let (tx, marks) = mpsc::channel(MARK_BUFFER);
        let stop = CancellationToken::new();
        let resolver = Arc::new(resolver);
        let record = info.record.clone();
        let resolve: Resolve = Box::new(move || {
            let resolver = resolver.clone();
            let record = record.clone();
            Box::pin(async move {
                let lookup = tokio::time::timeout(APP_TIMEOUT, resolver.lookup_ip(record.as_str()))
                    .await
                    .map_err(|_| format!("resolving {record}: timed out"))?
                    .map_err(|e| format!("resolving {record}: {e}"))?;
                let ip = lookup
                    .iter()
                    .next()
                    .ok_or_else(|| format!("{record} has no address"))?;
                let target = lookup
                    .as_lookup()
                    .records()
                    .iter()
                    .filter_map(|r| match r.data() {
                        RData::CNAME(c) => Some(c.0.to_ascii()),
                        _ => None,
                    })
                    .next_back()
                    .ok_or_else(|| format!("{record} is not a CNAME"))?;
                Ok((ip, target.trim_end_matches('.').to_owned()))
            })
        });
        let writer = Writer {
            resolve,
            port: info.port,
            tls: TlsConnector::from(tls),
            conn: None,
            resolved: None,
            marks: tx,
        };
        let task = tokio::spawn(writer.run(stop.clone()));
        Ok(App { marks, stop, task })
    }

    /// Stops the writer; returns (writes that succeeded, writes that failed).
    pub(crate) async fn stop(self) -> (u64, u64) {
        self.stop.cancel();
        // One attempt at most is in flight, bounded by its timeouts.
        match tokio::time::timeout(Duration::from_secs(5), self.task).await {
            Ok(Ok(counts)) => counts,
            _ => (0, 0),
        }
    }
}

/// Resolves the record to its first address and last CNAME target, through a cache.
type Resolve = Box<dyn Fn() -> BoxFuture<'static, Result<(IpAddr, String), String>> + Send + Sync>;

struct Writer {
    resolve: Resolve,
    port: u16,
    tls: TlsConnector,
    /// The open connection and the CNAME target it was made to.
    conn: Option<(TlsStream<TcpStream>, String)>,
    /// The last CNAME target the record resolved to.
    resolved: Option<String>,
    marks: mpsc::Sender<Mark>,
}

impl Writer {
    async fn run(mut self, stop: CancellationToken) -> (u64, u64) {
        let mut ticker = tokio::time::interval(WRITE_EVERY);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let until = Instant::now() + APP_MAX_RUN;
        let (mut ok, mut failed) = (0u64, 0u64);
        let mut writing = false;
        let mut last_ok = None;
        for n in 0..APP_MAX_WRITES {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if Instant::now() >= until {
                break;
            }
            let result = tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                result = self.write(n) => result,
            };
            let now = Instant::now();
            match result {
                Ok(target) => {
                    ok += 1;
                    last_ok = Some(now);
                    if !writing {
                        writing = true;
                        self.mark(now, AppChange::Writing { target });
                    }
                }
                Err(error) => {
                    failed += 1;
                    // A connection that failed once is not trusted again: resolve anew.
                    self.conn = None;
                    if writing {
                        writing = false;
                        self.mark(now, AppChange::Failing { error, last_ok });
                    }
                }
            }
        }
        (ok, failed)
    }

    fn mark(&self, at: Instant, change: AppChange) {
        let _ = self.marks.try_send(Mark::App { at, change });
    }

    /// Stores session `n`; returns the CNAME target it was stored through.
    async fn write(&mut self, n: u64) -> Result<String, String> {
        if self.conn.is_none() {
            let (ip, target) = (self.resolve)().await?;
            if self.resolved.as_deref() != Some(target.as_str()) {
                self.resolved = Some(target.clone());
                self.mark(
                    Instant::now(),
                    AppChange::Resolved {
                        target: target.clone(),
                    },
                );
            }
            let stream = self.connect(ip, &target).await?;
            self.conn = Some((stream, target));
        }
        let Some((stream, target)) = &mut self.conn else {
            return Err("no connection".to_owned());
        };
        let key = format!("session:{n}");
        let value = format!("user-{};logged-in", n % 1000);
        let command = resp(&["SET", &key, &value, "EX", "600"]);
        let reply = tokio::time::timeout(APP_TIMEOUT, async {
            stream.write_all(&command).await?;
            read_line(stream).await
        })
        .await
        .map_err(|_| format!("SET timed out after {APP_TIMEOUT:?}"))?
        .map_err(|e| format!("SET: {e}"))?;
        if reply != "+OK" {
            return Err(format!("SET answered {reply:?}"));
        }
        Ok(target.clone())
    }

    /// TCP and TLS to the cache, verifying the certificate for the CNAME target's name (the
    /// endpoint name is the only name on an ElastiCache certificate).
    async fn connect(&self, ip: IpAddr, target: &str) -> Result<TlsStream<TcpStream>, String> {
        let addr = SocketAddr::new(ip, self.port);
        let tcp = tokio::time::timeout(APP_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| format!("connecting to {addr}: timed out"))?
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(target.to_owned())
            .map_err(|e| format!("{target} is not a TLS server name: {e}"))?;
        tokio::time::timeout(APP_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| format!("TLS to {target}: timed out"))?
            .map_err(|e| format!("TLS to {target}: {e}"))
    }
}

/// A RESP2 command.
fn resp(parts: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n{part}\r\n", part.len()).as_bytes());
    }
    out
}

/// One reply line, without its CRLF.
async fn read_line(stream: &mut TlsStream<TcpStream>) -> std::io::Result<String> {
    let mut buf = Vec::with_capacity(16);
    let mut chunk = [0u8; 64];
    while !buf.ends_with(b"\r\n") {
        if buf.len() > MAX_REPLY {
            return Err(std::io::Error::other("reply too long"));
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    buf.truncate(buf.len() - 2);
    Ok(String::from_utf8_lossy(&buf).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_milestone_waits_on_an_earlier_one_or_the_outage() {
        for switch in [Switch::Record, Switch::HealthCheck] {
            let required = Milestone::required(switch);
            for &m in &required {
                let (after, within) = m.bound(switch, Duration::ZERO);
                assert!(
                    after.is_none_or(|a| a < m && required.contains(&a)),
                    "{switch:?}: {m:?} waits on {after:?}"
                );
                assert!(within > Duration::ZERO);
            }
        }
    }

    #[test]
    fn a_health_check_switch_has_a_verdict_and_no_executor() {
        use Milestone as M;
        let hc = Milestone::required(Switch::HealthCheck);
        assert_eq!(
            hc,
            [
                M::AppFailed,
                M::Down,
                M::Verdict,
                M::DnsOnDr,
                M::FailoverCompleted,
                M::AppOnDr,
                M::AppWriting
            ]
        );
        let record = Milestone::required(Switch::Record);
        assert!(!record.contains(&M::Verdict));
        assert_eq!(record.len(), Milestone::ALL.len() - 1);
        let verdict = |value: i64| Alert {
            at: Instant::now(),
            body: serde_json::json!({"event": "verdict", "detail": {"value": value}}),
        };
        assert_eq!(Milestone::of_alert(&verdict(1)), Some(M::Verdict));
        assert_eq!(Milestone::of_alert(&verdict(0)), None);
    }

    #[test]
    fn the_health_check_switch_follows_the_warm_standby() {
        let toml = "[watch.dr]\ncreate_timeout = \"5m\"\n\n[watch.probe]\n";
        let out = health_check_switch(&warm(toml).unwrap()).unwrap();
        let parsed: toml::Table = toml::from_str(&out).unwrap();
        assert_eq!(parsed["watch"]["dr"]["standby"].as_str(), Some("warm"));
        assert_eq!(
            parsed["watch"]["switch"]["kind"].as_str(),
            Some("health_check")
        );
        assert!(parsed["watch"]["probe"].is_table());
        assert!(health_check_switch(toml).is_err(), "no standby, no switch");
    }

    #[test]
    fn route53_down_gives_its_steps_more_time_and_the_others_none() {
        let outage = Outage {
            offset: Duration::ZERO,
            route53: Route53Api::DownFor(Duration::from_secs(60)),
            ..Outage::default()
        };
        let slack = outage.route53_slack();
        assert_eq!(slack, Duration::from_secs(60) + ROUTE53_RETRY_MARGIN);
        assert_eq!(Outage::default().route53_slack(), Duration::ZERO);
        let throughout = Outage {
            route53: Route53Api::DownThroughout,
            switch: Switch::HealthCheck,
            ..Outage::default()
        };
        assert_eq!(
            throughout.route53_slack(),
            Duration::ZERO,
            "a health-check switch waits on Route 53's API for nothing"
        );
        for m in Milestone::required(Switch::Record) {
            let more = m.bound(Switch::Record, slack).1 - m.bound(Switch::Record, Duration::ZERO).1;
            let calls_route53 = matches!(
                m,
                Milestone::Provision
                    | Milestone::SwitchDns
                    | Milestone::DnsOnDr
                    | Milestone::WaitInsync
                    | Milestone::FailoverCompleted
            );
            assert_eq!(
                more,
                if calls_route53 { slack } else { Duration::ZERO },
                "{m:?}"
            );
        }
    }

    #[test]
    fn step_events_map_to_their_milestones() {
        let alert = |body: Value| Alert {
            at: Instant::now(),
            body,
        };
        let step = |s: &str, phase: &str| {
            alert(
                serde_json::json!({"event": "failover_step", "detail": {"step": s, "phase": phase}}),
            )
        };
        assert_eq!(
            Milestone::of_alert(&step("switch_dns", "done")),
            Some(Milestone::SwitchDns)
        );
        assert_eq!(Milestone::of_alert(&step("switch_dns", "retrying")), None);
        assert_eq!(Milestone::of_alert(&step("lease", "done")), None);
        assert_eq!(
            Milestone::of_alert(&alert(serde_json::json!({"event": "down"}))),
            Some(Milestone::Down)
        );
    }

    #[test]
    fn the_config_turns_on_auto_failover() {
        let text = "[agent]\nmode = \"alert-only\"\n";
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let hook = rt.block_on(Webhook::start()).unwrap();
        let out = auto_failover_config(text, &hook).unwrap();
        assert!(out.contains("mode = \"auto-failover\"\n"));
        assert!(out.contains(&hook.url));
        assert!(auto_failover_config("[agent]\n", &hook).is_err());
    }

    #[test]
    fn resp_commands() {
        assert_eq!(
            resp(&["SET", "k", "v"]),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
        );
    }
}
