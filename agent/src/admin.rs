//! The admin server: `/metrics`, `/healthz`, `/status`, and `POST /pause` / `POST /resume`,
//! plus the small client the `valkey-dr pause|resume` commands use to reach it.
//!
//! The server runs on its own task and only reads shared state ([`Metrics`], [`Health`], the
//! status channel), so it keeps answering while the daemon loop is busy with a failover or
//! stuck: that is exactly when an operator needs `/status` and Prometheus needs `/metrics`.
//! The one exception is pause/resume, which must be applied by the loop; those requests wait
//! for its answer for at most [`CONTROL_TIMEOUT`] and then say so with a `504`.
//!
//! Only the owner drives it. Every control endpoint needs the token the agent writes, mode
//! 0600, to `state_dir/admin.token` when it starts ([`AdminToken`]): the CLI reads it, so
//! running the CLI as the agent's user (or root) is what grants control. `/status` and the
//! controls also refuse anything a browser sends ([`from_a_browser`]). `/metrics` and
//! `/healthz` stay open, for Prometheus and kubelet on a pod IP.
//!
//! The server is bounded: a client has [`HEADER_TIMEOUT`] to send its request headers, a
//! connection lives at most [`CONNECTION_LIFETIME`], and at most [`MAX_CONNECTIONS`] are
//! served at once; more are closed as they are accepted, so a slow-loris client cannot take
//! the agent's file descriptors, which its probes need.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use valkey_dr_policies::State;
use valkey_dr_probes::Observation;

#[cfg(test)]
mod tests;

/// How long `POST /pause` and `POST /resume` wait for the daemon loop before answering `504`.
/// The loop picks control requests up between rounds, so this covers a slow round; a
/// failover in progress may hold it longer, and the operator is told to retry. Give the
/// client a longer timeout than this, so the server's explanation arrives.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers; the connection is closed after.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may stay open, idle keep-alive included. A control request waits
/// [`CONTROL_TIMEOUT`] at most, so this leaves room for a few requests and no more.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// How long a stopping server lets the requests in flight finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);

/// Connections served at once. The CLI opens one per command and Prometheus one per scrape,
/// so 32 is far above any honest use, and far below the descriptors the probes need.
pub const MAX_CONNECTIONS: usize = 32;

/// The owner's credential for the control endpoints: 32 random bytes in hex, made anew at
/// every start and written (mode 0600) to [`crate::layout::token_file`] once the admin server listens.
///
/// A new one at every start means a token copied out of the file stops working at the next
/// restart; nothing else needs it to last, as the CLI reads the file at every call.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(Arc<str>);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(<redacted>)")
    }
}

impl AdminToken {
    /// A fresh token from the kernel's random source.
    pub fn generate() -> std::io::Result<Self> {
        use std::io::Read as _;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let mut hex = String::with_capacity(64);
        for b in bytes {
            // Writing to a String cannot fail.
            let _ = write!(hex, "{b:02x}");
        }
        Ok(AdminToken(hex.into()))
    }

    /// The token of the agent running with this `state_dir`, as the CLI reads it. The error
    /// says what to do: start the agent, or run as its user.
    pub fn load(state_dir: &std::path::Path) -> Result<Self, String> {
        let file = crate::layout::token_file(state_dir);
        match std::fs::read_to_string(&file) {
            Ok(text) if is_token(text.trim()) => Ok(AdminToken(text.trim().into())),
            Ok(_) => Err(format!(
                "{} does not hold an admin token: restart `valkey-dr run` to write a new one",
                file.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
                "cannot read the admin token {}: permission denied; only the agent's owner \
                 may drive it, so run this command as the agent's user (or root)",
                file.display()
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "no admin token at {}: is `valkey-dr run` running with this config (and its \
                 admin server listening)?",
                file.display()
            )),
            Err(e) => Err(format!(
                "cannot read the admin token {}: {e}",
                file.display()
            )),
        }
    }

    /// A token that several agents share (the peers' `peer_token`), as configured.
    pub fn shared(token: &str) -> Self {
        AdminToken(token.into())
    }

    /// The `Authorization` header value.
    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Whether an `Authorization` header carries this token. The comparison takes the same
    /// time wherever the first difference is, so timing tells a guesser nothing.
    fn admits(&self, authorization: Option<&[u8]>) -> bool {
        let Some(presented) = authorization.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        let expected = self.0.as_bytes();
        presented.len() == expected.len()
            && presented
                .iter()
                .zip(expected)
                .fold(0u8, |diff, (a, b)| diff | (a ^ b))
                == 0
    }

    /// The file's contents.
    pub fn as_file_text(&self) -> String {
        format!("{}\n", self.0)
    }
}

fn is_token(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The content type of OpenMetrics text, which `prometheus-client` writes (`# EOF` included).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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
struct StepLabels {
    watch: String,
    step: String,
}

/// The agent's Prometheus metrics (DESIGN.md, "Telemetry"). The names and labels are a
/// contract with dashboards and alerts: change them only with the design.
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
}

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

        registry.register(
            "valkey_dr_up",
            "1 while the agent runs; absent means the agent or the scrape is down",
            up,
        );
        registry.register(
            "valkey_dr_probe_duration_seconds",
            "Time from the start of a probe path to its end (success or failure)",
            probe_duration.clone(),
        );
        // prometheus-client appends `_total` to counters: exposed as `valkey_dr_probe_total`.
        registry.register(
            "valkey_dr_probe",
            "Probe paths run, by result (ok or the error kind)",
            probes.clone(),
        );
        registry.register(
            "valkey_dr_consecutive_failures",
            "Consecutive failed rounds of a probe path",
            consecutive_failures.clone(),
        );
        registry.register(
            "valkey_dr_state",
            "The state of a watch: 1 for the current state, 0 for the others",
            state.clone(),
        );
        // Exposed as `valkey_dr_failovers_total`.
        registry.register(
            "valkey_dr_failovers",
            "Failovers that ended, by result (completed, failed, stood_down)",
            failovers.clone(),
        );
        registry.register(
            "valkey_dr_failover_step_seconds",
            "Duration of each executor step of the last failover",
            failover_step.clone(),
        );
        registry.register(
            "valkey_dr_last_round_timestamp_seconds",
            "Unix time at which the last recorded probe round of a watch started",
            last_round.clone(),
        );
        registry.register(
            "valkey_dr_ready",
            "1 when the last readiness check (preflight) of a watch's failover path passed or only warned, 0 when it failed",
            ready.clone(),
        );
        registry.register(
            "valkey_dr_last_drill_timestamp_seconds",
            "Unix time at which the last successful drill of a watch finished",
            last_drill.clone(),
        );
        registry.register(
            "valkey_dr_drill_phase_seconds",
            "Duration of each step (phase) of the last successful drill",
            drill_phase.clone(),
        );

        Metrics {
            registry,
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
        self.last_round
            .get_or_create(&WatchLabels {
                watch: obs.watch.clone(),
            })
            .set(started.as_secs_f64());
        for result in FAILOVER_RESULTS {
            // Creating the series is the point; the guard is released at once.
            let _ = self.failovers.get_or_create(&ResultLabels {
                watch: obs.watch.clone(),
                result: result.to_owned(),
            });
        }
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

/// Whether the daemon loop still completes rounds, for `/healthz`.
///
/// The loop calls [`Health::tick`] after every round; the admin server calls
/// [`Health::healthy`]. The last tick is one atomic, so neither ever waits for the other.
/// Time is tokio's, so tests can control it.
#[derive(Debug)]
pub struct Health {
    /// When the loop started; ticks are stored relative to it.
    start: Instant,
    /// Nanoseconds from `start` to the last tick, plus one; 0 until the first tick.
    last_tick: AtomicU64,
    /// Three intervals: one late round is normal under load, three missed ones are not.
    limit: Duration,
}

impl Health {
    /// Health for a loop that runs every `interval` (the smallest watch interval), starting
    /// now. Before the first tick, the loop counts as stalled once the limit has passed
    /// since now, so an agent stuck in its first round is reported too.
    pub fn new(interval: Duration) -> Self {
        Health::starting_at(interval, Instant::now())
    }

    fn starting_at(interval: Duration, start: Instant) -> Self {
        Health {
            start,
            last_tick: AtomicU64::new(0),
            limit: interval.saturating_mul(3),
        }
    }

    /// Records that the loop completed a round.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let since_start = now.saturating_duration_since(self.start).as_nanos();
        let stored = u64::try_from(since_start)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.last_tick.store(stored, Ordering::Relaxed);
    }

    /// `Ok` while the last round (or the start) is no older than three intervals; otherwise
    /// a one-line reason for the `503` body.
    pub fn healthy(&self) -> Result<(), String> {
        self.healthy_at(Instant::now())
    }

    fn healthy_at(&self, now: Instant) -> Result<(), String> {
        let limit = humantime::format_duration(self.limit);
        match self.last_tick.load(Ordering::Relaxed) {
            0 => {
                let age = now.saturating_duration_since(self.start);
                if age > self.limit {
                    return Err(format!(
                        "loop stalled: no round completed in {:.1}s since start, limit {limit}",
                        age.as_secs_f64()
                    ));
                }
            }
            stored => {
                let at = self.start + Duration::from_nanos(stored - 1);
                let age = now.saturating_duration_since(at);
                if age > self.limit {
                    return Err(format!(
                        "loop stalled: last round {:.1}s ago, limit {limit}",
                        age.as_secs_f64()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What an operator asks the loop to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    /// Stop acting on watches (they are still probed and still alert).
    Pause,
    /// Act on watches again.
    Resume,
    /// Start a failover now, through the same executor as an automatic one.
    Failover,
    /// End an unfinished failover on purpose; with `delete_dr`, delete the DR cache it built
    /// (only while the record does not point at it).
    Abort {
        /// Delete the DR cache this failover built.
        delete_dr: bool,
    },
    /// Point the record back at the primary once it passes `rise` rounds; with `delete_dr`,
    /// delete the DR cache afterwards.
    Failback {
        /// Delete the DR cache once the record points at the primary again.
        delete_dr: bool,
    },
}

impl ControlAction {
    /// The name used in the URL path and in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Failover => "failover",
            ControlAction::Failback { .. } => "failback",
            ControlAction::Abort { .. } => "abort",
        }
    }

    /// The path and query of the admin request for this action, for [`request`] with
    /// `POST`: `/pause`, or `/pause?watch=NAME` with the name percent-encoded.
    pub fn request_path(self, watch: Option<&str>) -> String {
        let mut path = format!("/{}", self.as_str());
        if let Some(watch) = watch {
            path.push_str("?watch=");
            path.push_str(&percent_encode(watch));
        }
        if let ControlAction::Failback { delete_dr: true }
        | ControlAction::Abort { delete_dr: true } = self
        {
            path.push(if watch.is_some() { '&' } else { '?' });
            path.push_str("delete_dr=true");
        }
        path
    }
}

/// A pause or resume, handed from the admin server to the daemon loop, which owns the watch
/// states and applies it between rounds.
#[derive(Debug)]
pub struct ControlRequest {
    /// What to do.
    pub action: ControlAction,
    /// Which watch; `None` means every watch.
    pub watch: Option<String>,
    /// The loop's answer: a JSON summary for the operator, or why it refused (an unknown
    /// watch). Dropping it unanswered makes the server answer `503`.
    pub reply: oneshot::Sender<Result<Value, String>>,
}

/// What the admin server reads. Everything is shared with the loop and cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Encoded on every scrape.
    pub metrics: Arc<Metrics>,
    /// Ticked by the loop, read by `/healthz`.
    pub health: Arc<Health>,
    /// The loop publishes a fresh status after every round; `/status` serves the latest
    /// without waiting for the loop.
    pub status: watch::Receiver<Value>,
    /// Where pause/resume requests go.
    pub control: mpsc::Sender<ControlRequest>,
    /// What a control request must present.
    pub token: AdminToken,
    /// What a peer's `/vote` request must present; `None` without peers.
    pub peer_token: Option<AdminToken>,
}

/// The server's bounds; [`Limits::default`] in the daemon, shorter in tests.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// [`CONTROL_TIMEOUT`].
    pub control_timeout: Duration,
    /// [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// [`CONNECTION_LIFETIME`].
    pub connection_lifetime: Duration,
    /// [`MAX_CONNECTIONS`].
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            control_timeout: CONTROL_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            connection_lifetime: CONNECTION_LIFETIME,
            max_connections: MAX_CONNECTIONS,
        }
    }
}

/// Serves the admin endpoints on `listener` until `shutdown` is cancelled, then lets the
/// requests in flight finish (each bounded by the control timeout at most) and returns.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, Limits::default()).await
}

async fn serve_with(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: CancellationToken,
    limits: Limits,
) -> std::io::Result<()> {
    let app = router(state, limits.control_timeout);
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors (EMFILE, ENFILE) the listener stays readable, so
                // accepting again at once would spin: wait a little first.
                refusals.note(format_args!("accepting an admin connection failed: {e}"));
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.note(format_args!(
                "{} admin connections are open, the most served at once: closing a new one",
                limits.max_connections
            ));
            drop(stream);
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut http = hyper::server::conn::http1::Builder::new();
            http.timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = http.serve_connection(TokioIo::new(stream), service);
            let mut connection = std::pin::pin!(connection);
            let lifetime = tokio::time::sleep(limits.connection_lifetime);
            tokio::select! {
                _ = connection.as_mut() => return,
                // Dropping the connection closes it.
                () = lifetime => return,
                () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            let _ = tokio::time::timeout(limits.control_timeout, connection).await;
        });
    }
    // Let the requests in flight finish (each holds a permit until its connection ends), for
    // at most SHUTDOWN_DRAIN: the daemon waits 2 s for this task, then removes nothing, so
    // the drain must end first for admin.json and admin.token to go with the agent.
    let all = u32::try_from(limits.max_connections).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, permits.acquire_many(all)).await;
    Ok(())
}

/// Warnings about refused or failed connections, at most one per [`Refusals::EVERY`], with
/// how many there were since the last one: a flood must not flood the log too.
#[derive(Default)]
struct Refusals {
    last: Option<Instant>,
    since: u64,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= Self::EVERY)
        {
            tracing::warn!(count = self.since, "{what}");
            self.last = Some(now);
            self.since = 0;
        }
    }
}

/// The handlers' state: the shared state plus the pause/resume bound (shorter in tests).
#[derive(Clone)]
struct Shared {
    admin: AdminState,
    control_timeout: Duration,
}

fn router(admin: AdminState, control_timeout: Duration) -> Router {
    // Only the agent's own CLI drives it: a browser's request (any Origin) or one made under
    // another host name (DNS rebinding) never reaches the status or a control endpoint.
    // /metrics and /healthz stay open for Prometheus and kubelet on a pod IP.
    // The controls also need the owner's token, and `/vote` the peers' shared one.
    let controls = Router::new()
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/failover", post(failover))
        .route("/failback", post(failback))
        .route("/abort", post(abort))
        .layer(axum::middleware::from_fn_with_state(
            Gate {
                token: Some(admin.token.clone()),
                refusal: NOT_THE_OWNER,
            },
            needs_token,
        ));
    let vote_route =
        Router::new()
            .route("/vote", get(vote))
            .layer(axum::middleware::from_fn_with_state(
                Gate {
                    token: admin.peer_token.clone(),
                    refusal: "a vote request needs the peers' shared token",
                },
                needs_token,
            ));
    let owned = Router::new()
        .route("/status", get(status))
        .merge(controls)
        .merge(vote_route)
        .layer(axum::middleware::from_fn(not_from_a_browser));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(owned)
        .fallback(not_found)
        .with_state(Shared {
            admin,
            control_timeout,
        })
}

/// The token a group of routes needs, and what a request without it is told.
#[derive(Clone)]
struct Gate {
    /// `None`: the routes are off (no peers), and answer 404 as if they did not exist.
    token: Option<AdminToken>,
    /// The 401's reason.
    refusal: &'static str,
}

/// Lets a request through only with `Authorization: Bearer <token>` of its [`Gate`].
async fn needs_token(
    AxumState(gate): AxumState<Gate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &gate.token else {
        return error_json(
            StatusCode::NOT_FOUND,
            "this agent has no peers configured".to_owned(),
        );
    };
    let header = request.headers().get(header::AUTHORIZATION);
    if token.admits(header.map(|h| h.as_bytes())) {
        next.run(request).await
    } else {
        error_json(StatusCode::UNAUTHORIZED, gate.refusal.to_owned())
    }
}

/// Why a control request without the owner's token is refused.
const NOT_THE_OWNER: &str = "a control request needs the owner's token (`Authorization: Bearer` \
     with the contents of admin.token in the agent's state_dir); the valkey-dr CLI sends it \
     when run as the agent's user";

/// Refuses a request that carries an `Origin` header (browsers send one with every
/// cross-site request, and with every POST) or names a host other than an IP address or
/// `localhost` (a DNS-rebound page); `403` with the reason.
async fn not_from_a_browser(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match from_a_browser(request.headers()) {
        Some(why) => error_json(StatusCode::FORBIDDEN, why),
        None => next.run(request).await,
    }
}

/// Why a request looks like a browser's, if it does.
fn from_a_browser(headers: &axum::http::HeaderMap) -> Option<String> {
    if headers.contains_key(header::ORIGIN) {
        return Some(
            "a request with an Origin header is refused: the admin API obeys only the agent's own CLI, never a web page"
                .to_owned(),
        );
    }
    let host = headers.get(header::HOST)?;
    let text = host.to_str().unwrap_or_default();
    // `127.0.0.1:9187`, `[::1]:9187`, `localhost:9187`, with or without the port.
    let name = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => text.rsplit_once(':').map_or(text, |(h, _)| h),
    };
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        None
    } else {
        Some(
            "the Host header names neither an IP address nor localhost: the admin API answers only requests made to its address"
                .to_owned(),
        )
    }
}

async fn metrics(AxumState(shared): AxumState<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.admin.metrics.encode(),
    )
        .into_response()
}

async fn healthz(AxumState(shared): AxumState<Shared>) -> Response {
    match shared.admin.health.healthy() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn status(AxumState(shared): AxumState<Shared>) -> Response {
    let latest = shared.admin.status.borrow().clone();
    axum::Json(latest).into_response()
}

/// A peer asks for this agent's vote on one watch (see [`crate::peers`]).
async fn vote(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    let watch = match watch_param(uri.query()) {
        Ok(Some(watch)) => watch,
        Ok(None) => return error_json(StatusCode::BAD_REQUEST, "`watch` is required".to_owned()),
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let status = shared.admin.status.borrow().clone();
    let agent_id = status["agent"]["id"].as_str().unwrap_or_default();
    let found = status["watches"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == watch.as_str()));
    match found {
        Some(w) => {
            axum::Json(crate::peers::vote_json(agent_id, w, SystemTime::now())).into_response()
        }
        None => error_json(
            StatusCode::NOT_FOUND,
            format!("no watch named {watch:?} here"),
        ),
    }
}

async fn pause(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    control(&shared, ControlAction::Pause, &uri).await
}

async fn resume(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    control(&shared, ControlAction::Resume, &uri).await
}

async fn failover(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    control(&shared, ControlAction::Failover, &uri).await
}

async fn failback(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    with_delete_dr(&shared, &uri, |delete_dr| ControlAction::Failback {
        delete_dr,
    })
    .await
}

async fn abort(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    with_delete_dr(&shared, &uri, |delete_dr| ControlAction::Abort {
        delete_dr,
    })
    .await
}

/// `delete_dr=true` is the one parameter besides `watch`, and only for failback and abort.
async fn with_delete_dr(
    shared: &Shared,
    uri: &Uri,
    action: impl FnOnce(bool) -> ControlAction,
) -> Response {
    let query = uri.query().unwrap_or_default();
    let delete_dr = query.split('&').any(|p| p == "delete_dr=true");
    let rest: Vec<&str> = query
        .split('&')
        .filter(|p| *p != "delete_dr=true")
        .collect();
    let rest = rest.join("&");
    let uri: Uri = match format!("{}?{rest}", uri.path()).parse() {
        Ok(uri) => uri,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e.to_string()),
    };
    control(shared, action(delete_dr), &uri).await
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try GET /metrics, /healthz, /status, /vote?watch=NAME or POST /pause, /resume, /failover, /failback, /abort [?watch=NAME]\n",
    )
        .into_response()
}

/// Hands a pause/resume to the loop and relays its answer, waiting at most `control_timeout`
/// for both a place in the queue and the answer.
async fn control(shared: &Shared, action: ControlAction, uri: &Uri) -> Response {
    let watch = match watch_param(uri.query()) {
        Ok(watch) => watch,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let (reply, answer) = oneshot::channel();
    let request = ControlRequest {
        action,
        watch: watch.clone(),
        reply,
    };
    let exchange = async {
        shared.admin.control.send(request).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(shared.control_timeout, exchange).await {
        Ok(Some(Ok(summary))) => {
            tracing::info!(action = action.as_str(), watch = ?watch, "control request applied");
            (StatusCode::OK, axum::Json(summary)).into_response()
        }
        Ok(Some(Err(reason))) => error_json(StatusCode::NOT_FOUND, reason),
        Ok(None) => error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon loop is not running (shutting down?); check the agent's logs".to_owned(),
        ),
        Err(_) => error_json(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the daemon loop did not answer within {}; it may be busy with a failover: \
                 check /status and retry",
                humantime::format_duration(shared.control_timeout)
            ),
        ),
    }
}

fn error_json(status: StatusCode, reason: String) -> Response {
    (status, axum::Json(json!({ "error": reason }))).into_response()
}

/// The `watch` parameter of a control request, percent-decoded. Any other parameter is an
/// error rather than ignored: a mistyped `?wach=a` must not pause every watch.
fn watch_param(query: Option<&str>) -> Result<Option<String>, String> {
    let mut watch = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if key != "watch" {
            return Err(format!(
                "unknown parameter {key:?}; the only parameter is `watch`"
            ));
        }
        let value = percent_decode(value)?;
        if value.is_empty() {
            return Err("empty `watch`; leave it out to address every watch".to_owned());
        }
        if watch.replace(value).is_some() {
            return Err("`watch` given more than once".to_owned());
        }
    }
    Ok(watch)
}

/// `value` percent-encoded for a query string: every byte but the unreserved ones.
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it).
fn percent_decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                bytes.push(hex);
                rest = &rest[2..];
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}

/// Why the CLI could not talk to a running agent. Each message names the address and what to
/// check; the source (if any) is printed after it by `{:#}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The method or path could not form a request (a bug in the caller).
    #[error("invalid admin request `{method} {path_and_query}`")]
    InvalidRequest {
        /// The method as given.
        method: String,
        /// The path and query as given.
        path_and_query: String,
        /// What was wrong with them.
        #[source]
        source: hyper::http::Error,
    },
    /// Nothing accepted the connection.
    #[error(
        "cannot connect to the agent's admin server at {admin}: is `valkey-dr run` running \
         with admin_listen = \"{admin}\"?"
    )]
    Connect {
        /// The admin address tried.
        admin: SocketAddr,
        /// The connect failure (usually "connection refused").
        #[source]
        source: std::io::Error,
    },
    /// The connection opened but the HTTP exchange failed.
    #[error(
        "the HTTP exchange with {admin} failed: is admin_listen = \"{admin}\" the address of \
         `valkey-dr run`, and not another program?"
    )]
    Http {
        /// The admin address tried.
        admin: SocketAddr,
        /// What hyper saw.
        #[source]
        source: hyper::Error,
    },
    /// The answer was larger than the client reads (or broke off mid-body).
    #[error(
        "the answer from {admin} was cut off or larger than {limit} bytes: is admin_listen = \"{admin}\" the address of `valkey-dr run`, and not another program?"
    )]
    TooLarge {
        /// The admin address tried.
        admin: SocketAddr,
        /// The most bytes read.
        limit: usize,
    },
    /// No full answer arrived in time.
    #[error(
        "the agent's admin server at {admin} did not answer within {}: is `valkey-dr run` \
         with admin_listen = \"{admin}\" overloaded or stopped (SIGSTOP)? check its logs",
        humantime::format_duration(*.timeout)
    )]
    Timeout {
        /// The admin address tried.
        admin: SocketAddr,
        /// The bound that expired.
        timeout: Duration,
    },
}

/// The most bytes of an answer the admin client reads: `/status` for hundreds of watches is
/// well under it, and a peer (or a program that is not an agent) cannot make the caller hold
/// more.
pub const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// One HTTP/1.1 request to a running agent's admin server, for the CLI: the status code and
/// the body. A control request needs the owner's `token`. Connecting, sending and reading
/// the whole body are bounded together by `timeout`. One connection per request: the CLI
/// sends one and exits.
pub async fn request(
    admin: SocketAddr,
    method: &str,
    path_and_query: &str,
    token: Option<&AdminToken>,
    timeout: Duration,
) -> Result<(u16, String), AdminClientError> {
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path_and_query)
        .header(header::HOST, admin.to_string());
    if let Some(token) = token {
        req = req.header(header::AUTHORIZATION, token.bearer());
    }
    let req =
        req.body(Empty::<Bytes>::new())
            .map_err(|source| AdminClientError::InvalidRequest {
                method: method.to_owned(),
                path_and_query: path_and_query.to_owned(),
                source,
            })?;
    tokio::time::timeout(timeout, exchange(admin, req))
        .await
        .map_err(|_| AdminClientError::Timeout { admin, timeout })?
}

async fn exchange(
    admin: SocketAddr,
    req: hyper::Request<Empty<Bytes>>,
) -> Result<(u16, String), AdminClientError> {
    let http = |source| AdminClientError::Http { admin, source };
    let stream = tokio::net::TcpStream::connect(admin)
        .await
        .map_err(|source| AdminClientError::Connect { admin, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let response = async {
        let response = sender.send_request(req).await.map_err(http)?;
        let status = response.status().as_u16();
        let body = http_body_util::Limited::new(response.into_body(), MAX_ANSWER_BYTES)
            .collect()
            .await
            .map_err(|_| AdminClientError::TooLarge {
                admin,
                limit: MAX_ANSWER_BYTES,
            })?;
        Ok((
            status,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        ))
    };
    // Drive the connection here rather than on a spawned task, so that nothing outlives the
    // call when the timeout drops it.
    let mut response = std::pin::pin!(response);
    tokio::select! {
        biased;
        result = &mut response => result,
        ended = conn => {
            ended.map_err(http)?;
            response.await
        }
    }
}
