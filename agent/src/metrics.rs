//! The agent's Prometheus metrics (ARCHITECTURE.md, "Contracts the code relies on"; README.md
//! lists every family).
//!
//! Every family is registered, and every per-watch series created, when the daemon starts, so
//! that dashboards and alerts see each one from the first scrape: a series born at its first
//! non-zero value hides that value from `increase()` and from `absent()`-style alerts.

use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use valkey_dr_policies::State;
use valkey_dr_probes::{Observation, PathKind, Step};

/// Probe latency buckets: a healthy in-region round trip is a few milliseconds, a cross-AZ
/// or TLS-heavy one tens, and the probe timeout (seconds) caps the top.
const PROBE_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The `result` values of `valkey_dr_failovers_total`, created at 0 for every watch seen so
/// that `increase()` catches the very first failover (a series born at 1 shows no increase).
const FAILOVER_RESULTS: [&str; 3] = ["completed", "failed", "stood_down"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WatchLabels {
    watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    watch: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    watch: String,
    path: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    watch: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    watch: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    watch: String,
    check: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    watch: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    watch: String,
    path: String,
    connection: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeStepLabels {
    watch: String,
    path: String,
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NotifyLabels {
    sink: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabels {
    watch: String,
    step: String,
}

/// The agent's Prometheus metrics (ARCHITECTURE.md, "Contracts the code relies on"). The
/// names and labels are a contract with dashboards and alerts: change them only with that
/// section.
///
/// Every method takes `&self`, so the loop and the executor share one `Arc<Metrics>` with the
/// admin server and never wait for a scrape.
#[derive(Debug)]
pub struct Metrics {
    /// What `/metrics` encodes; holds a handle on every family below.
    registry: Registry,
    /// Per path, so a slow resolver shows apart from a slow cache.
    probe_duration: Family<PathLabels, Histogram, fn() -> Histogram>,
    /// Exposed as `valkey_dr_probe_total`; `result` is `ok` or the error kind.
    probes: Family<ProbeLabels, Counter>,
    /// The policy engine's per-path streak, to alert before the watch reaches `down`.
    consecutive_failures: Family<PathLabels, Gauge>,
    /// One-hot per watch, so `valkey_dr_state{state="down"} == 1` is an alert expression.
    state: Family<StateLabels, Gauge>,
    /// Exposed as `valkey_dr_failovers_total`.
    failovers: Family<ResultLabels, Counter>,
    /// How long each executor step of the last failover took, for the RTO breakdown.
    failover_step: Family<StepLabels, Gauge<f64, AtomicU64>>,
    /// When the last recorded round of each watch started, to alert on a stale agent even
    /// when the scrape itself still works.
    last_round: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    /// Per preflight check: 1 unless its last result was `fail`.
    ready: Family<CheckLabels, Gauge>,
    /// When the last successful drill of each watch finished.
    last_drill: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    /// How long each step of that drill took.
    drill_phase: Family<PhaseLabels, Gauge<f64, AtomicU64>>,
    /// How long each probe step of the last round took, per path.
    probe_step: Family<ProbeStepLabels, Gauge<f64, AtomicU64>>,
    /// Exposed as `valkey_dr_probe_connections_total`.
    probe_connections: Family<ConnectionLabels, Counter>,
    /// The earliest `notAfter` of the chain each path's TLS was shown.
    cert_expiry: Family<PathLabels, Gauge<f64, AtomicU64>>,
    /// 1 unless the last witness check failed.
    witness_success: Family<WatchLabels, Gauge>,
    /// The TTL the dns path read for the record in the last round.
    record_ttl: Family<WatchLabels, Gauge>,
    /// 1 while the record points elsewhere than the endpoint the agent believes active.
    record_drift: Family<WatchLabels, Gauge>,
    /// What became of each notification, per sink kind.
    notifications: Family<NotifyLabels, Counter>,
    /// 1 while an operator's pause lasts.
    paused: Family<WatchLabels, Gauge>,
    /// When that pause ends by itself; 0 when none is set.
    pause_expiry: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    failover_retrying: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    /// 1 while a failover is held by its gates or waits for approval.
    failover_held: Family<WatchLabels, Gauge>,
    verdict: Family<WatchLabels, Gauge>,
    verdict_published: Family<WatchLabels, Gauge<f64, AtomicU64>>,
    /// `process_*`, read from `/proc` at each scrape.
    process: Process,
}

/// A family whose `# HELP` and `# TYPE` are written even before its first series, so that
/// every family is in the first scrape (prometheus-client leaves out empty ones).
#[derive(Debug, Clone)]
struct Announced<M>(M);

impl<M: EncodeMetric> EncodeMetric for Announced<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The standard `process_*` metrics (the names client libraries use, so that existing
/// dashboards work), read from `/proc/self` when `/metrics` is scraped.
#[derive(Debug, Default)]
struct Process {
    cpu: Counter<f64, AtomicU64>,
    /// The CPU seconds already counted, so that each scrape adds only what is new.
    cpu_seen: Mutex<f64>,
    resident: Gauge,
    virtual_memory: Gauge,
    open_fds: Gauge,
    max_fds: Gauge,
    start_time: Gauge<f64, AtomicU64>,
}

impl Process {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            self.cpu.clone(),
        );
        registry.register(
            "process_resident_memory_bytes",
            "Resident memory size in bytes",
            self.resident.clone(),
        );
        registry.register(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes",
            self.virtual_memory.clone(),
        );
        registry.register(
            "process_open_fds",
            "Number of open file descriptors",
            self.open_fds.clone(),
        );
        registry.register(
            "process_max_fds",
            "Maximum number of open file descriptors (the soft limit)",
            self.max_fds.clone(),
        );
        registry.register(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            self.start_time.clone(),
        );
    }

    /// Reads `/proc/self`; a value that cannot be read keeps its last one (the family is
    /// still there, and a scrape never fails for it).
    fn refresh(&self) {
        // SAFETY: sysconf has no preconditions and touches no memory of ours.
        let (ticks, page) = unsafe {
            (
                libc::sysconf(libc::_SC_CLK_TCK),
                libc::sysconf(libc::_SC_PAGESIZE),
            )
        };
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
            && let Some(fields) = stat_fields(&stat)
        {
            let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
            // After the command's closing parenthesis: utime is field 14 of stat(5), so index
            // 11 here; stime 12; starttime 19; vsize 20; rss (pages) 21.
            if let (Some(utime), Some(stime)) = (field(11), field(12))
                && ticks > 0
            {
                let total = (utime + stime) as f64 / ticks as f64;
                let mut seen = self.cpu_seen.lock().unwrap_or_else(|p| p.into_inner());
                if total > *seen {
                    self.cpu.inc_by(total - *seen);
                    *seen = total;
                }
            }
            if let Some(vsize) = field(20) {
                self.virtual_memory
                    .set(i64::try_from(vsize).unwrap_or(i64::MAX));
            }
            if let Some(rss) = field(21)
                && page > 0
            {
                self.resident
                    .set(i64::try_from(rss * page as u64).unwrap_or(i64::MAX));
            }
            if let (Some(start), Some(boot)) = (field(19), boot_time())
                && ticks > 0
            {
                self.start_time
                    .set(boot as f64 + start as f64 / ticks as f64);
            }
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            // Less the descriptor read_dir itself holds.
            let open = dir.count().saturating_sub(1);
            self.open_fds.set(i64::try_from(open).unwrap_or(i64::MAX));
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct we pass and nothing else.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            self.max_fds
                .set(i64::try_from(limit.rlim_cur).unwrap_or(i64::MAX));
        }
    }
}

/// The fields of `/proc/self/stat` after `(comm)`, which may itself hold spaces.
fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    let (_, after) = stat.rsplit_once(')')?;
    Some(after.split_whitespace().collect())
}

/// The boot time, from `/proc/stat`'s `btime`.
fn boot_time() -> Option<u64> {
    std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The steps every probe path runs, for creating their series up front.
const PROBE_STEPS: [Step; 7] = [
    Step::Resolve,
    Step::Connect,
    Step::Tls,
    Step::Auth,
    Step::Ping,
    Step::Set,
    Step::Get,
];

/// The sinks and results of `valkey_dr_notifications_total`, created at 0.
const NOTIFY_SINKS: [&str; 2] = ["webhook", "command"];
const NOTIFY_RESULTS: [&str; 3] = ["ok", "failed", "dropped"];

impl Metrics {
    /// An empty registry with every metric family registered and `valkey_dr_up` at 1.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let probe_duration: Family<PathLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(PROBE_BUCKETS));
        let probes = Family::<ProbeLabels, Counter>::default();
        let consecutive_failures = Family::<PathLabels, Gauge>::default();
        let state = Family::<StateLabels, Gauge>::default();
        let failovers = Family::<ResultLabels, Counter>::default();
        let failover_step = Family::<StepLabels, Gauge<f64, AtomicU64>>::default();
        let last_round = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        let ready = Family::<CheckLabels, Gauge>::default();
        let last_drill = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        let drill_phase = Family::<PhaseLabels, Gauge<f64, AtomicU64>>::default();
        let up = Gauge::<i64>::default();
        up.set(1);
        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: env!("CARGO_PKG_VERSION").to_owned(),
                commit: env!("VALKEY_DR_COMMIT").to_owned(),
            })
            .set(1);
        registry.register(
            "valkey_dr_build_info",
            "Always 1; the labels say which build runs (version, commit)",
            build_info,
        );
        let probe_step = Family::<ProbeStepLabels, Gauge<f64, AtomicU64>>::default();
        let probe_connections = Family::<ConnectionLabels, Counter>::default();
        let cert_expiry = Family::<PathLabels, Gauge<f64, AtomicU64>>::default();
        let witness_success = Family::<WatchLabels, Gauge>::default();
        let record_ttl = Family::<WatchLabels, Gauge>::default();
        let record_drift = Family::<WatchLabels, Gauge>::default();
        let notifications = Family::<NotifyLabels, Counter>::default();
        let paused = Family::<WatchLabels, Gauge>::default();
        let pause_expiry = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        let failover_held = Family::<WatchLabels, Gauge>::default();
        let verdict = Family::<WatchLabels, Gauge>::default();
        let verdict_published = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "valkey_dr_verdict",
            "The verdict the agent publishes for a [watch.switch] kind = \"health_check\" watch: 1 \"the primary is down\", 0 otherwise (always 0 for kind = \"record\")",
            Announced(verdict.clone()),
        );
        registry.register(
            "valkey_dr_verdict_published_timestamp_seconds",
            "When (Unix time) CloudWatch last accepted the watch's verdict; 0 before the first",
            Announced(verdict_published.clone()),
        );
        let failover_retrying = Family::<WatchLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "valkey_dr_failover_retrying_since_timestamp_seconds",
            "Since when (Unix time) a running failover's current call has kept failing: Route 53's API once the DR cache is built and verified, or the DR region's; 0 while its calls answer",
            Announced(failover_retrying.clone()),
        );
        registry.register(
            "valkey_dr_failover_held",
            "1 while a failover of the watch is held before a step by its gates, or waits for a person's approval (mode = \"prepare\")",
            Announced(failover_held.clone()),
        );
        registry.register(
            "valkey_dr_probe_step_seconds",
            "Duration of each step (resolve, connect, tls, auth, ping, set, get) the last time it ran on a path; connect, tls and auth run only on fresh connections",
            Announced(probe_step.clone()),
        );
        registry.register(
            "valkey_dr_probe_connections",
            "Probes of a path by the connection they used: reused (kept from earlier rounds), or fresh and why (first, interval, target_changed, after_error, retry, one_shot)",
            Announced(probe_connections.clone()),
        );
        registry.register(
            "valkey_dr_tls_cert_expiry_timestamp_seconds",
            "Unix time at which the earliest certificate of the chain a path's TLS presented expires",
            Announced(cert_expiry.clone()),
        );
        registry.register(
            "valkey_dr_witness_success",
            "1 unless the last witness check of a watch failed (0: the agent may be cut off)",
            Announced(witness_success.clone()),
        );
        registry.register(
            "valkey_dr_record_ttl_seconds",
            "The TTL of the record as the dns path read it in the last round",
            Announced(record_ttl.clone()),
        );
        registry.register(
            "valkey_dr_record_drift",
            "1 while the record points elsewhere than the endpoint the agent believes active",
            Announced(record_drift.clone()),
        );
        // Exposed as `valkey_dr_notifications_total`.
        registry.register(
            "valkey_dr_notifications",
            "Notifications by sink kind (webhook, command) and result (ok, failed, dropped)",
            Announced(notifications.clone()),
        );
        registry.register(
            "valkey_dr_paused",
            "1 while an operator's pause of a watch lasts",
            Announced(paused.clone()),
        );
        registry.register(
            "valkey_dr_pause_expiry_timestamp_seconds",
            "Unix time at which the pause of a watch ends by itself; 0 when it has no end or the watch is not paused",
            Announced(pause_expiry.clone()),
        );
        for sink in NOTIFY_SINKS {
            for result in NOTIFY_RESULTS {
                let _ = notifications.get_or_create(&NotifyLabels {
                    sink: sink.to_owned(),
                    result: result.to_owned(),
                });
            }
        }
        let process = Process::default();
        process.register(&mut registry);

        registry.register(
            "valkey_dr_up",
            "1 while the agent runs; absent means the agent or the scrape is down",
            up,
        );
        registry.register(
            "valkey_dr_probe_duration_seconds",
            "Time from the start of a probe path to its end (success or failure)",
            Announced(probe_duration.clone()),
        );
        // prometheus-client appends `_total` to counters: exposed as `valkey_dr_probe_total`.
        registry.register(
            "valkey_dr_probe",
            "Probe paths run, by result (ok or the error kind)",
            Announced(probes.clone()),
        );
        registry.register(
            "valkey_dr_consecutive_failures",
            "Consecutive failed rounds of a probe path",
            Announced(consecutive_failures.clone()),
        );
        registry.register(
            "valkey_dr_state",
            "The state of a watch: 1 for the current state, 0 for the others",
            Announced(state.clone()),
        );
        // Exposed as `valkey_dr_failovers_total`.
        registry.register(
            "valkey_dr_failovers",
            "Failovers that ended, by result (completed, failed, stood_down)",
            Announced(failovers.clone()),
        );
        registry.register(
            "valkey_dr_failover_step_seconds",
            "Duration of each executor step of the last failover",
            Announced(failover_step.clone()),
        );
        registry.register(
            "valkey_dr_last_round_timestamp_seconds",
            "Unix time at which the last recorded probe round of a watch started",
            Announced(last_round.clone()),
        );
        registry.register(
            "valkey_dr_ready",
            "1 when the last readiness check (preflight) of a watch's failover path passed or only warned, 0 when it failed or could not run for longer than readiness_stale",
            Announced(ready.clone()),
        );
        registry.register(
            "valkey_dr_last_drill_timestamp_seconds",
            "Unix time at which the last successful drill of a watch finished",
            Announced(last_drill.clone()),
        );
        registry.register(
            "valkey_dr_drill_phase_seconds",
            "Duration of each step (phase) of the last successful drill",
            Announced(drill_phase.clone()),
        );

        Metrics {
            registry,
            probe_step,
            probe_connections,
            cert_expiry,
            witness_success,
            record_ttl,
            record_drift,
            notifications,
            paused,
            pause_expiry,
            failover_retrying,
            failover_held,
            verdict,
            verdict_published,
            process,
            ready,
            last_drill,
            drill_phase,
            probe_duration,
            probes,
            consecutive_failures,
            state,
            failovers,
            failover_step,
            last_round,
        }
    }

    /// Counts one probe round: latency and result per path, and the round's timestamp.
    pub fn record_observation(&self, obs: &Observation) {
        for path in &obs.paths {
            let labels = PathLabels {
                watch: obs.watch.clone(),
                path: path.path.as_str().to_owned(),
            };
            self.probe_duration
                .get_or_create(&labels)
                .observe(path.latency.as_secs_f64());
            for step in &path.steps {
                self.probe_step
                    .get_or_create(&ProbeStepLabels {
                        watch: obs.watch.clone(),
                        path: labels.path.clone(),
                        step: step.step.as_str().to_owned(),
                    })
                    .set(step.duration.as_secs_f64());
            }
            if let Some(expiry) = path.cert_expiry {
                self.cert_expiry
                    .get_or_create(&labels)
                    .set(unix_seconds(expiry));
            }
            self.probe_connections
                .get_or_create(&ConnectionLabels {
                    watch: obs.watch.clone(),
                    path: labels.path.clone(),
                    connection: path.connection.as_str().to_owned(),
                })
                .inc();
            let result = path.error.as_ref().map_or("ok", |e| e.kind.as_str());
            self.probes
                .get_or_create(&ProbeLabels {
                    watch: labels.watch,
                    path: labels.path,
                    result: result.to_owned(),
                })
                .inc();
        }
        let started = obs
            .started_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let watch = WatchLabels {
            watch: obs.watch.clone(),
        };
        self.last_round
            .get_or_create(&watch)
            .set(started.as_secs_f64());
        if let Some(ttl) = obs.path(PathKind::Dns).and_then(|p| p.ttl) {
            self.record_ttl
                .get_or_create(&watch)
                .set(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX));
        }
        self.record_drift
            .get_or_create(&watch)
            .set(i64::from(obs.drift().is_some()));
        for result in FAILOVER_RESULTS {
            // Creating the series is the point; the guard is released at once.
            let _ = self.failovers.get_or_create(&ResultLabels {
                watch: obs.watch.clone(),
                result: result.to_owned(),
            });
        }
    }

    /// Creates every series of a watch that has a meaningful value before its first round,
    /// so that each family is present from the first scrape.
    pub fn register_watch(&self, watch: &str, paths: &[PathKind]) {
        let w = WatchLabels {
            watch: watch.to_owned(),
        };
        self.witness_success.get_or_create(&w).set(1);
        let _ = self.record_drift.get_or_create(&w);
        let _ = self.paused.get_or_create(&w);
        let _ = self.pause_expiry.get_or_create(&w);
        let _ = self.failover_held.get_or_create(&w);
        let _ = self.verdict.get_or_create(&w);
        let _ = self.verdict_published.get_or_create(&w);
        let _ = self.failover_retrying.get_or_create(&w);
        for result in FAILOVER_RESULTS {
            let _ = self.failovers.get_or_create(&ResultLabels {
                watch: watch.to_owned(),
                result: result.to_owned(),
            });
        }
        for step in crate::executor::Step::ALL {
            let _ = self.failover_step.get_or_create(&StepLabels {
                watch: watch.to_owned(),
                step: step.as_str().to_owned(),
            });
        }
        for path in paths {
            let labels = PathLabels {
                watch: watch.to_owned(),
                path: path.as_str().to_owned(),
            };
            let _ = self.probe_duration.get_or_create(&labels);
            let _ = self.consecutive_failures.get_or_create(&labels);
            let _ = self.probes.get_or_create(&ProbeLabels {
                watch: watch.to_owned(),
                path: path.as_str().to_owned(),
                result: "ok".to_owned(),
            });
            for connection in valkey_dr_probes::Connection::ALL {
                if connection != valkey_dr_probes::Connection::OneShot {
                    let _ = self.probe_connections.get_or_create(&ConnectionLabels {
                        watch: watch.to_owned(),
                        path: path.as_str().to_owned(),
                        connection: connection.as_str().to_owned(),
                    });
                }
            }
            for step in PROBE_STEPS {
                let _ = self.probe_step.get_or_create(&ProbeStepLabels {
                    watch: watch.to_owned(),
                    path: path.as_str().to_owned(),
                    step: step.as_str().to_owned(),
                });
            }
        }
    }

    /// Records a witness check: 1 when it answered, 0 when it failed.
    pub fn set_witness_success(&self, watch: &str, ok: bool) {
        self.witness_success
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .set(i64::from(ok));
    }

    /// Counts what became of one notification (`result`: ok, failed, dropped).
    pub fn notification(&self, sink: &str, result: &str) {
        self.notifications
            .get_or_create(&NotifyLabels {
                sink: sink.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Sets whether a watch is paused, and when its pause ends (0: no end, or not paused).
    pub fn set_paused(&self, watch: &str, paused: bool, until: Option<SystemTime>) {
        let w = WatchLabels {
            watch: watch.to_owned(),
        };
        self.paused.get_or_create(&w).set(i64::from(paused));
        self.pause_expiry
            .get_or_create(&w)
            .set(until.filter(|_| paused).map_or(0.0, unix_seconds));
    }

    /// Sets since when a running failover's calls have kept failing; `None` once they answer.
    pub fn set_failover_retrying(&self, watch: &str, since: Option<SystemTime>) {
        self.failover_retrying
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .set(since.map_or(0.0, unix_seconds));
    }

    /// Sets the verdict the watch's ballot stands by, and when CloudWatch last accepted one.
    pub fn set_verdict(&self, watch: &str, value: u8, accepted: Option<SystemTime>) {
        let w = WatchLabels {
            watch: watch.to_owned(),
        };
        self.verdict.get_or_create(&w).set(i64::from(value));
        self.verdict_published
            .get_or_create(&w)
            .set(accepted.map_or(0.0, unix_seconds));
    }

    /// Sets whether a failover of the watch is held.
    pub fn set_failover_held(&self, watch: &str, held: bool) {
        self.failover_held
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .set(i64::from(held));
    }

    /// Sets a path's consecutive-failure streak, as the policy engine counts it.
    pub fn set_consecutive_failures(&self, watch: &str, path: &str, n: u32) {
        self.consecutive_failures
            .get_or_create(&PathLabels {
                watch: watch.to_owned(),
                path: path.to_owned(),
            })
            .set(i64::from(n));
    }

    /// Sets the watch's state to 1 and every other state to 0.
    pub fn set_state(&self, watch: &str, current: State) {
        for state in State::ALL {
            self.state
                .get_or_create(&StateLabels {
                    watch: watch.to_owned(),
                    state: state.as_str().to_owned(),
                })
                .set(i64::from(state == current));
        }
    }

    /// Counts a failover that ended: `result` is `completed`, `failed` or `stood_down`.
    pub fn failover_result(&self, watch: &str, result: &str) {
        self.failovers
            .get_or_create(&ResultLabels {
                watch: watch.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Records how long one executor step of the current failover took; it replaces the
    /// value from the previous failover.
    pub fn failover_step(&self, watch: &str, step: &str, d: Duration) {
        self.failover_step
            .get_or_create(&StepLabels {
                watch: watch.to_owned(),
                step: step.to_owned(),
            })
            .set(d.as_secs_f64());
    }

    /// Sets a readiness check's gauge: 1 ready, 0 not.
    pub fn set_ready(&self, watch: &str, check: &str, ready: bool) {
        self.ready
            .get_or_create(&CheckLabels {
                watch: watch.to_owned(),
                check: check.to_owned(),
            })
            .set(i64::from(ready));
    }

    /// Records the last successful drill of `watch`: when it finished and its phases.
    pub fn last_drill(&self, watch: &str, finished: SystemTime, phases: &[(String, Duration)]) {
        let at = finished
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_drill
            .get_or_create(&WatchLabels {
                watch: watch.to_owned(),
            })
            .set(at.as_secs_f64());
        for (phase, d) in phases {
            self.drill_phase
                .get_or_create(&PhaseLabels {
                    watch: watch.to_owned(),
                    phase: phase.clone(),
                })
                .set(d.as_secs_f64());
        }
    }

    /// The OpenMetrics text exposition, ending with `# EOF`.
    pub fn encode(&self) -> String {
        self.process.refresh();
        let mut text = String::new();
        // Writing to a String cannot fail, and none of our values overflow the encoder; if
        // that ever changes, the truncated output (no `# EOF`) fails the scrape visibly.
        if let Err(e) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}
