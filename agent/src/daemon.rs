//! `valkey-dr run`: the daemon.
//!
//! One task per watch, each on its own fixed-rate schedule (a slow watch never delays
//! another, and intervals do not drift with round duration), probes, asks the pure policy
//! engine what the round means, persists the result, and hands decisions to the notifiers
//! without waiting for them. The admin server (`/metrics`, `/healthz`, `/status`, pause and
//! resume) runs on its own task and keeps answering whatever the watches are doing. A
//! supervisor task speaks to systemd (`READY=1` after the first round of every watch,
//! `WATCHDOG=1` while the loop is healthy, `STATUS=` with a one-line summary).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use valkey_dr_policies::{
    self as policies, Decision, Event as PolicyEvent, Params, State, WatchState,
};
use valkey_dr_probes::{
    ErrorKind, Observation, PathKind, PathResult, ProbeSpec, Prober, ResolverSettings,
};

use crate::admin::{self, AdminState, AdminToken, ControlAction, ControlRequest, Health, Metrics};
use crate::check;
use crate::config::{Config, WatchConfig};
use crate::event::{Event, EventName};
use crate::executor::api::{CacheApi as _, CacheStatus};
use crate::executor::{Entry, FailoverError, Journal, Outcome, Phase, Step};
use crate::failover::{self, FailbackReport, Runner, Start};
use crate::notify::Notifier;
use crate::peers::Peers;
use crate::plan;
use crate::store::{self, StoreError};
use crate::witness::Witness;

/// How often `/status` and systemd's `STATUS=` are rebuilt from the watches' last rounds.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// How long shutdown waits for watch tasks to save state and notifiers to drain.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Why the daemon could not start. Once running, it reports problems and keeps going.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The state directory or a state file.
    #[error("agent state")]
    Store(#[from] StoreError),
    /// No random bytes for the admin token.
    #[error("cannot make the admin token from /dev/urandom")]
    Token {
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A watch's probe could not be set up (CA file, endpoint, ...).
    #[error("setting up the probes")]
    Probe(#[from] check::CheckError),
}

/// The file where a running agent records its admin address (`admin_listen` may use port 0).
pub fn admin_file(state_dir: &Path) -> PathBuf {
    state_dir.join("admin.json")
}

/// The file where a watch's policy state is kept.
pub fn state_file(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("watch-{watch}.json"))
}

/// The policy thresholds of a watch.
pub fn params(config: &Config, w: &WatchConfig) -> Params {
    Params {
        fall: w.policy.fall,
        rise: w.policy.rise,
        down_after: w.policy.down_after,
        cooldown: w.policy.cooldown,
        max_auto_failovers: w.policy.max_auto_failovers,
        max_auto_failovers_window: w.policy.max_auto_failovers_window,
        reminder_interval: w.policy.reminder_interval,
        mode: config.agent.mode,
    }
}

/// What a watch task tells the supervisor after every round.
struct RoundDone {
    watch: String,
    status: Value,
    summary: String,
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    let state_dir = config.agent.state_dir.clone();
    store::ensure_dir(&state_dir)?;
    warn_if_open(&state_dir);
    ensure_descriptors(config.watches.len());
    let token = AdminToken::generate().map_err(|source| DaemonError::Token { source })?;

    let specs = check::probe_specs(&config, None).await?;
    let prober = Arc::new(
        Prober::new(&ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
        })
        .map_err(|e| check::CheckError::Resolver(Box::new(e)))?,
    );
    let min_interval = config
        .watches
        .iter()
        .map(|w| w.probe.interval)
        .min()
        .unwrap_or(Duration::from_secs(5));
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::new(min_interval));
    let (status_tx, status_rx) =
        watch::channel(json!({ "agent": agent_json(&config), "watches": [] }));
    let (control_tx, control_rx) = mpsc::channel(16);
    let (notifier, notify_task) = Notifier::spawn(&config.notifiers, shutdown.child_token());

    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(admin_server(
        config.agent.admin_listen,
        state_dir.clone(),
        AdminState {
            metrics: metrics.clone(),
            health: health.clone(),
            status: status_rx,
            control: control_tx,
            token,
            peer_token: config
                .agent
                .peer_token
                .as_ref()
                .map(|t| AdminToken::shared(t.expose())),
        },
        notifier.clone(),
        config.agent.id.clone(),
        admin_shutdown.clone(),
    ));
    tracing::info!(
        agent_id = %config.agent.id,
        mode = config.agent.mode.as_str(),
        watches = config.watches.len(),
        "valkey-dr started"
    );

    let (done_tx, done_rx) = mpsc::channel(64);
    let mut watch_controls = BTreeMap::new();
    let mut tasks = Vec::new();
    let shared_config = Arc::new(config.clone());
    let aws_witnesses = Arc::new(crate::witness::AwsWitnesses::new(&config, min_interval));
    let peers = Peers::from_config(&config).map(Arc::new);
    for (index, (w, spec)) in config.watches.iter().zip(specs).enumerate() {
        let path = state_file(&state_dir, &w.name);
        let state = load_state(&path, &w.name);
        let (persist, persisted) = watch::channel(state.clone());
        let writer = tokio::spawn(write_states(path.clone(), w.name.clone(), persisted));
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        watch_controls.insert(w.name.clone(), ctl_tx);
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        let task = WatchTask {
            config: shared_config.clone(),
            index,
            primary: spec.clone(),
            runner: None,
            op: None,
            ops: ops_tx,
            shutdown: shutdown.clone(),
            following: false,
            last_failover: None,
            last_failback: None,
            name: w.name.clone(),
            agent_id: config.agent.id.clone(),
            interval: w.probe.interval,
            params: params(&config, w),
            plan: plan::failover_plan(&config, w),
            spec,
            prober: prober.clone(),
            witness: Witness::new(&config, index, aws_witnesses.clone()),
            state,
            persist,
            writer,
            metrics: metrics.clone(),
            health: health.clone(),
            notifier: notifier.clone(),
            done: done_tx.clone(),
            rounds: 0,
            last_observation: None,
            peers: peers.clone(),
            last_quorum: None,
            vote: None,
        };
        tasks.push(tokio::spawn(task.run(ctl_rx, ops_rx)));
    }
    drop(done_tx);
    let control = tokio::spawn(dispatch_control(control_rx, watch_controls));
    let (readiness_tx, readiness_rx) = watch::channel(crate::readiness::pending());
    let readiness = tokio::spawn(crate::readiness::run(
        shared_config.clone(),
        metrics.clone(),
        notifier.clone(),
        readiness_tx,
        shutdown.child_token(),
    ));
    supervise(
        &config,
        done_rx,
        status_tx,
        readiness_rx,
        &health,
        &shutdown,
    )
    .await;

    // Shutdown: watches save their state, notifiers drain, then the admin server stops,
    // all within a bounded grace so that systemd's stop timeout is never the one that acts.
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    tracing::info!("shutting down");
    let grace = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(grace);
    for task in tasks {
        tokio::select! {
            _ = task => {}
            _ = &mut grace => break,
        }
    }
    control.abort();
    readiness.abort();
    tokio::select! {
        _ = notify_task => {}
        _ = &mut grace => tracing::warn!("notifications still queued at shutdown were dropped"),
    }
    admin_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    tracing::info!("stopped");
    Ok(())
}

/// How often a failed admin bind is tried again.
const ADMIN_RETRY: Duration = Duration::from_secs(30);

/// Binds `admin_listen` and serves the admin API until `shutdown`. A failed bind (the port
/// is taken, the address is not this host's) does not stop the agent: probing and alerting
/// matter more than the API, so it says so once, in the log and as an `admin_unavailable`
/// event, and tries again every [`ADMIN_RETRY`].
///
/// Only once it listens does it write [`admin_file`] and the token file, and at the end it
/// removes them: a second agent started by mistake on the same `state_dir` never takes over
/// the first one's files.
async fn admin_server(
    address: std::net::SocketAddr,
    state_dir: PathBuf,
    state: AdminState,
    notifier: Notifier,
    agent_id: String,
    shutdown: CancellationToken,
) {
    let mut failed_once = false;
    let listener = loop {
        let bound = TcpListener::bind(address).await.and_then(|listener| {
            let local = listener.local_addr()?;
            Ok((listener, local))
        });
        match bound {
            Ok(bound) => break bound,
            Err(e) => {
                if !failed_once {
                    failed_once = true;
                    let reason = format!("cannot listen on admin_listen {address}: {e}");
                    tracing::error!(
                        "{reason}; probing and alerting go on, the admin API is unavailable; \
                         retrying every {}",
                        humantime::format_duration(ADMIN_RETRY)
                    );
                    notifier.notify(agent_event(
                        EventName::AdminUnavailable,
                        &agent_id,
                        vec![
                            reason,
                            "probing and alerting go on; /metrics, /status and the CLI's \
                             controls are unavailable until it binds"
                                .to_owned(),
                        ],
                    ));
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(ADMIN_RETRY) => continue,
                }
            }
        }
    };
    let (listener, local) = listener;
    let token_path = admin::token_file(&state_dir);
    let written =
        store::write_file(&token_path, state.token.as_file_text().as_bytes()).and_then(|()| {
            store::write_json(
                &admin_file(&state_dir),
                &json!({ "address": local.to_string(), "pid": std::process::id() }),
            )
        });
    if let Err(e) = written {
        // Without the files the CLI cannot find or drive this agent, but /metrics and
        // /healthz still serve, so go on.
        tracing::error!(error = %format!("{:#}", anyhow::Error::from(e)), "cannot record the admin address and token; the CLI cannot drive this agent");
    }
    tracing::info!(admin = %local, "admin server listening");
    if failed_once {
        notifier.notify(agent_event(
            EventName::AdminAvailable,
            &agent_id,
            vec![format!("the admin API listens on {local}")],
        ));
    }
    if let Err(e) = admin::serve(listener, state, shutdown).await {
        tracing::error!(error = %e, "admin server stopped");
    }
    let _ = std::fs::remove_file(admin_file(&state_dir));
    let _ = std::fs::remove_file(token_path);
}

/// An event about the agent itself rather than one watch: `watch` is `*`.
fn agent_event(event: EventName, agent_id: &str, reasons: Vec<String>) -> Event {
    let mut event = Event::executor(event, "*", agent_id, ("running", "running"), None);
    event.reasons = reasons;
    event
}

/// Descriptors the agent needs besides its watches: the runtime, logs, AWS clients, the
/// notifiers and the admin server's [`admin::MAX_CONNECTIONS`].
const DESCRIPTORS_BASE: u64 = 128;

/// Descriptors one watch's round may hold at once: the dns, direct and reader paths, the old
/// primary's probe, the resolver's sockets, and room for a failover's verification.
const DESCRIPTORS_PER_WATCH: u64 = 16;

/// Checks the descriptor limit against the watches: raises the soft limit towards the hard
/// one when it is short, and says so when even the hard limit is. Running out is safe (the
/// probes then report `local`, never an outage), but it blinds the agent, so it is said at
/// start rather than discovered during an outage.
fn ensure_descriptors(watches: usize) {
    let need: libc::rlim_t = DESCRIPTORS_BASE + DESCRIPTORS_PER_WATCH * watches as u64;
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return;
    }
    let (soft, hard) = (limit.rlim_cur, limit.rlim_max);
    if soft >= need {
        return;
    }
    let raised = need.min(hard);
    if raised > soft {
        let wanted = libc::rlimit {
            rlim_cur: raised,
            rlim_max: hard,
        };
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } == 0 {
            tracing::info!(
                from = soft,
                to = raised,
                "raised the descriptor limit (RLIMIT_NOFILE) for {watches} watches"
            );
        }
    }
    if raised < need {
        tracing::warn!(
            limit = raised,
            need,
            "{watches} watches need about {need} file descriptors and the hard limit is {hard}: out of descriptors the probes report `local` (never an outage) and see nothing; raise LimitNOFILE"
        );
    }
}

/// Warns when others may read or enter `state_dir`: it holds the admin token and the state
/// that decides failovers. A warning, not a refusal: an operator may have a reason (a group
/// of operators), and refusing would leave the cache unwatched.
fn warn_if_open(state_dir: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(meta) = std::fs::metadata(state_dir) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o007 != 0 {
            tracing::warn!(
                state_dir = %state_dir.display(),
                mode = format!("{mode:o}"),
                "state_dir is open to other users (mode {mode:o}); it holds the admin token and the failover state: chmod 700 it"
            );
        }
    }
}

/// Where the agent running with `config` serves its admin endpoints: `admin_listen`, or, for
/// an ephemeral port (which only the running agent knows), what it recorded in
/// [`admin_file`]. Says why when there is no such address.
pub fn admin_address(config: &Config) -> Result<std::net::SocketAddr, String> {
    if config.agent.admin_listen.port() != 0 {
        return Ok(config.agent.admin_listen);
    }
    let file = admin_file(&config.agent.state_dir);
    match store::read_json::<Value>(&file) {
        Ok(Some(v)) => v["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .ok_or_else(|| format!("{} holds no admin address", file.display())),
        Ok(None) => Err(format!(
            "no running agent: {} does not exist (is `valkey-dr run` running with this config?)",
            file.display()
        )),
        Err(e) => Err(format!("{:#}", anyhow::Error::from(e))),
    }
}

fn agent_json(config: &Config) -> Value {
    json!({
        "id": config.agent.id,
        "mode": config.agent.mode.as_str(),
        "version": env!("CARGO_PKG_VERSION"),
    })
}

fn load_state(path: &Path, watch: &str) -> WatchState {
    match store::read_json::<WatchState>(path) {
        Ok(Some(state)) => {
            tracing::info!(
                watch,
                state = state.state().as_str(),
                "restored policy state"
            );
            state
        }
        Ok(None) => WatchState::default(),
        Err(e) => {
            // Starting fresh forgets cooldowns, so say so loudly; refusing to start would
            // leave the cache unwatched, which is worse.
            tracing::error!(watch, error = %format!("{:#}", anyhow::Error::from(e)), "cannot restore policy state; starting fresh");
            WatchState::default()
        }
    }
}

/// Collects round results: `/status`, systemd readiness, watchdog and status line.
async fn supervise(
    config: &Config,
    mut done: mpsc::Receiver<RoundDone>,
    status: watch::Sender<Value>,
    mut readiness: watch::Receiver<Value>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    let mut watches: BTreeMap<String, (Value, String)> = BTreeMap::new();
    let mut ready = false;
    let mut dirty = false;
    let mut readiness_open = true;
    // The status document and systemd's STATUS= line cover every watch, so they are rebuilt on
    // a short timer rather than after each watch's round: per round that would cost O(watches)
    // per watch, which is what dominated the agent's CPU with 100 watches.
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            round = done.recv() => match round {
                Some(round) => {
                    watches.insert(round.watch, (round.status, round.summary));
                    dirty = true;
                    // Readiness is announced the moment the last first round lands.
                    if ready || watches.len() < config.watches.len() {
                        continue;
                    }
                }
                None => return,
            },
            changed = readiness.changed(), if readiness_open => {
                // A readiness task that ended (only at shutdown) must not wake this loop again.
                readiness_open = changed.is_ok();
                dirty |= readiness_open;
                continue;
            }
            _ = publish.tick() => {
                if !dirty {
                    // Nothing new, but a healthy loop still feeds the watchdog.
                    if ready && health.healthy().is_ok() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    continue;
                }
            }
        }
        dirty = false;
        let _ = status.send(json!({
            "agent": agent_json(config),
            "watches": watches.values().map(|(s, _)| s.clone()).collect::<Vec<_>>(),
            "readiness": readiness.borrow().clone(),
        }));
        let line = watches
            .values()
            .map(|(_, s)| s.as_str())
            .collect::<Vec<_>>()
            .join("; ");
        let mut notes = vec![sd_notify::NotifyState::Status(&line)];
        if !ready && watches.len() == config.watches.len() {
            ready = true;
            notes.push(sd_notify::NotifyState::Ready);
            tracing::info!("first round of every watch done: ready");
        }
        // The watchdog is fed only while the loop is healthy, so that systemd restarts an
        // agent whose rounds have stalled.
        if health.healthy().is_ok() {
            notes.push(sd_notify::NotifyState::Watchdog);
        }
        let _ = sd_notify::notify(&notes);
    }
}

/// Routes pause/resume from the admin server to the watch tasks.
async fn dispatch_control(
    mut requests: mpsc::Receiver<ControlRequest>,
    watches: BTreeMap<String, mpsc::Sender<(ControlAction, oneshot::Sender<Value>)>>,
) {
    while let Some(req) = requests.recv().await {
        let targets: Vec<_> = match &req.watch {
            Some(name) => match watches.get(name) {
                Some(tx) => vec![(name.clone(), tx.clone())],
                None => {
                    let valid: Vec<_> = watches.keys().map(|n| format!("{n:?}")).collect();
                    let _ = req.reply.send(Err(format!(
                        "no watch named {name:?}; valid: {}",
                        valid.join(", ")
                    )));
                    continue;
                }
            },
            None => watches
                .iter()
                .map(|(n, tx)| (n.clone(), tx.clone()))
                .collect(),
        };
        let mut results = serde_json::Map::new();
        for (name, tx) in targets {
            let (reply_tx, reply_rx) = oneshot::channel();
            let result = match tx.send((req.action, reply_tx)).await {
                Ok(()) => reply_rx
                    .await
                    .unwrap_or_else(|_| json!({"error": "watch stopped"})),
                Err(_) => json!({"error": "watch stopped"}),
            };
            results.insert(name, result);
        }
        let _ = req.reply.send(Ok(json!({ "watches": results })));
    }
}

/// What a running failover or failback tells its watch task.
enum OpMsg {
    /// A journal entry was written (its event has left already).
    Step(Entry),
    /// The failover ended.
    FailoverDone(Box<Result<Journal, (Journal, FailoverError)>>),
    /// A failback step finished.
    FailbackStep(String, String),
    /// The failback ended.
    FailbackDone(Result<FailbackReport, String>),
}

/// Sends a running failover's step events from the executor's own task.
struct StepEvents {
    notifier: Notifier,
    watch: String,
    agent_id: String,
    failover_id: String,
}

impl StepEvents {
    fn send(&self, reasons: Vec<String>, detail: Value) {
        let state = State::FailingOver.as_str();
        self.notifier.notify(Event {
            reasons,
            detail: Some(detail),
            ..Event::executor(
                EventName::FailoverStep,
                &self.watch,
                &self.agent_id,
                (state, state),
                Some(self.failover_id.clone()),
            )
        });
    }

    /// After each step that finished.
    fn step(&self, e: &Entry) {
        if e.phase == Phase::Done {
            self.send(
                vec![format!("{}: {}", e.step.as_str(), e.detail)],
                json!({ "step": e.step.as_str(), "phase": "done", "detail": e.detail }),
            );
        }
    }

    /// While a step keeps retrying.
    fn retrying(&self, step: Step, message: &str) {
        self.send(
            vec![format!("{}: {message}", step.as_str())],
            json!({ "step": step.as_str(), "phase": "retrying", "detail": message }),
        );
    }
}

/// The failover or failback a watch is running.
struct Op {
    /// `failover` or `failback`.
    kind: &'static str,
    /// The failover id (failbacks get one too, for logs).
    id: String,
    /// Aborted at shutdown: the journal resumes the failover on the next start.
    task: tokio::task::JoinHandle<()>,
}

struct WatchTask {
    config: Arc<Config>,
    index: usize,
    /// The configured primary's probe spec. `spec` is the active cache's: the DR cache
    /// after a failover.
    primary: ProbeSpec,
    /// Built on the first failover or failback: most agents never need AWS clients.
    runner: Option<Arc<Runner>>,
    op: Option<Op>,
    ops: mpsc::UnboundedSender<OpMsg>,
    shutdown: CancellationToken,
    /// This agent stood down for another one: it adopts the DR cache once the record shows
    /// that the other agent's failover landed.
    following: bool,
    /// The last failover, for `/status`.
    last_failover: Option<Value>,
    /// The last failback, for `/status`.
    last_failback: Option<Value>,
    name: String,
    agent_id: String,
    interval: Duration,
    params: Params,
    /// What a failover would do now: carried by "would fail over" alerts.
    plan: Value,
    spec: ProbeSpec,
    prober: Arc<Prober>,
    witness: Witness,
    state: WatchState,
    /// Hands states to this watch's writer task: fsync must never stall the single runtime
    /// thread that probes and serves `/healthz`. The latest state wins.
    persist: watch::Sender<WatchState>,
    /// The writer task, awaited at shutdown so the last state is on disk before exit.
    writer: tokio::task::JoinHandle<()>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    notifier: Notifier,
    done: mpsc::Sender<RoundDone>,
    rounds: u64,
    last_observation: Option<Value>,
    /// The other agents to ask before an automatic failover; `None`: this one decides alone.
    peers: Option<Arc<Peers>>,
    /// The last ask of the peers: for `/status` and the failover events.
    last_quorum: Option<Value>,
    /// This agent's own vote, as peers read it: whether the last round was outage evidence,
    /// and when it was.
    vote: Option<(bool, SystemTime)>,
}

impl WatchTask {
    async fn run(
        mut self,
        mut control: mpsc::Receiver<(ControlAction, oneshot::Sender<Value>)>,
        mut ops: mpsc::UnboundedReceiver<OpMsg>,
    ) {
        let shutdown = self.shutdown.clone();
        self.restore_failover().await;
        // A fixed-rate schedule: the next round is due one interval after the previous one
        // was *due*, not after it finished, and a round that overruns skips the missed ticks
        // instead of bursting to catch up.
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        let stall_after = test_hooks::stall_after_rounds();
        // The policy is judged on the schedule's time, not on when each round happened to
        // finish: rounds are then exactly one interval apart for `down_after`, so a few
        // milliseconds of jitter can never push a decision one whole round later. Wall time
        // is anchored once, so cooldowns still survive restarts.
        let anchor = (tokio::time::Instant::now(), SystemTime::now());
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                Some((action, reply)) = control.recv() => {
                    let answer = self.control(action).await;
                    let _ = reply.send(answer);
                }
                Some(msg) = ops.recv() => self.on_op(msg),
                tick = ticker.tick() => {
                    if stall_after.is_some_and(|n| self.rounds >= n) {
                        tracing::warn!(watch = %self.name, "test hook: stalling the loop");
                        shutdown.cancelled().await;
                        break;
                    }
                    // A shutdown that begins mid-round abandons the round: its result would
                    // be acted on by nobody.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        _ = self.round(anchor.1 + tick.duration_since(anchor.0)) => {}
                    }
                }
            }
        }
        // The last state goes through the writer like every other, so it cannot be overtaken
        // by an older write still in flight; then the writer is given a bounded time to finish.
        // A failover in flight stops here; its journal resumes it on the next start.
        if let Some(op) = self.op.take() {
            op.task.abort();
            tracing::warn!(watch = %self.name, failover_id = %op.id, "{} interrupted by shutdown; the journal resumes it on the next start", op.kind);
        }
        let WatchTask {
            persist,
            writer,
            state,
            name,
            ..
        } = self;
        persist.send_replace(state);
        drop(persist);
        if tokio::time::timeout(Duration::from_secs(5), writer)
            .await
            .is_err()
        {
            tracing::error!(watch = %name, "policy state not saved within 5s of shutdown");
        }
    }

    async fn round(&mut self, now: SystemTime) {
        // While the DR cache serves the watch, the old primary's own endpoint is probed too,
        // so that people hear when failback becomes possible.
        let (observation, old_primary) = if self.state.served_by_dr && self.op.is_none() {
            let (o, p) = tokio::join!(
                self.prober.round(&self.spec),
                self.prober.direct(&self.primary)
            );
            (o, Some(path_status(Some(&p))))
        } else {
            (self.prober.round(&self.spec).await, None)
        };
        if self.following {
            self.follow(&observation, now).await;
        }
        self.rounds += 1;
        self.health.tick();
        let dns = path_status(observation.path(PathKind::Dns));
        let direct = path_status(observation.path(PathKind::Direct));
        // The witness matters only when a path fails; a round where both paths answer is
        // itself proof that the agent reaches the network, and skipping the call keeps the
        // agent's footprint (and its AWS API use) small.
        let witness = if dns.failure().is_some() || direct.failure().is_some() {
            self.witness.check().await
        } else {
            policies::Witness::Unneeded
        };
        let input = policies::Observation {
            dns,
            direct,
            drift: observation.drift().map(str::to_owned),
            witness,
            old_primary,
        };
        let (mut next, mut decisions) = policies::step(&self.state, &input, now, &self.params);
        self.vote = Some((policies::is_outage_evidence(&input), now));
        // With peers, a failover (or the intent an alert-only agent announces) also needs
        // the quorum: ask them, then judge the same round again with their answer.
        if let Some(peers) = self.peers.clone()
            && decisions.iter().any(|d| {
                d.event == PolicyEvent::FailoverIntent
                    || (d.event == PolicyEvent::FailoverBlocked && d.would_fail_over())
            })
        {
            let tally = peers.ask(&self.name).await;
            self.last_quorum = Some(tally.json(now));
            (next, decisions) =
                policies::step_with_quorum(&self.state, &input, now, &self.params, &tally.quorum());
        }
        self.metrics.record_observation(&observation);
        let observation_json = check::observation_json(&observation);
        self.last_observation = Some(observation_json.clone());
        // The journal goes to disk before the state that spends the engine's intent: a crash
        // in between then leaves a journal that the next start resumes, never a spent intent
        // and no failover for the rest of the outage. An intent that cannot start (shutdown,
        // a journal that cannot be written) is not persisted either, so a restart judges
        // afresh.
        let intent = decisions
            .iter()
            .any(|d| d.event == PolicyEvent::FailoverIntent);
        let begun = if intent {
            self.begin_failover("auto", now).await
        } else {
            None
        };
        self.apply(
            next,
            decisions,
            now,
            Some(observation_json),
            !intent || begun.is_some(),
        );
        if let Some((runner, journal)) = begun {
            test_hooks::crash_after_intent().await;
            self.launch(runner, journal, "auto", now);
        }
        let _ = self
            .done
            .send(RoundDone {
                watch: self.name.clone(),
                status: self.status_json(),
                summary: self.summary(&observation),
            })
            .await;
    }

    async fn control(&mut self, action: ControlAction) -> Value {
        let now = SystemTime::now();
        let (next, decisions) = match action {
            ControlAction::Pause => policies::pause(&self.state, now),
            ControlAction::Resume => policies::resume(&self.state, now),
            ControlAction::Failover => {
                let answer = match self.begin_failover("manual", now).await {
                    Some((runner, journal)) => {
                        let id = journal.plan.failover_id.clone();
                        self.launch(runner, journal, "manual", now);
                        json!({ "started": true, "failover_id": id })
                    }
                    None => {
                        json!({ "started": false, "error": self.state.last_reasons.join("; ") })
                    }
                };
                self.publish();
                return answer;
            }
            ControlAction::Abort { delete_dr } => {
                let answer = self.abort(delete_dr).await;
                self.publish();
                return answer;
            }
            ControlAction::Failback { delete_dr } => {
                let answer = match self.start_failback(delete_dr).await {
                    Ok(id) => json!({ "started": true, "failback_id": id }),
                    Err(e) => json!({ "started": false, "error": e }),
                };
                self.publish();
                return answer;
            }
        };
        self.apply(next, decisions, now, None, true);
        self.publish();
        json!({ "state": self.state.state().as_str(), "paused": self.state.is_paused() })
    }

    /// `/status` shows a control action at once, not after the next round.
    fn publish(&self) {
        let _ = self.done.try_send(RoundDone {
            watch: self.name.clone(),
            status: self.status_json(),
            summary: format!("{}: {}", self.name, self.state.state().as_str()),
        });
    }

    /// Takes the engine's new state: persists it when it matters (and `persist` allows),
    /// updates metrics, and sends every decision to the notifiers.
    fn apply(
        &mut self,
        next: WatchState,
        decisions: Vec<Decision>,
        now: SystemTime,
        observation: Option<Value>,
        persist: bool,
    ) {
        // Persist on anything a restart must not forget (a state change, an announced event,
        // a pause); a healthy steady state is not rewritten every round.
        let persist = persist
            && (!decisions.is_empty()
                || next.state() != self.state.state()
                || next.is_paused() != self.state.is_paused());
        self.state = next;
        if persist {
            self.persist.send_replace(self.state.clone());
        }
        self.metrics.set_state(&self.name, self.state.state());
        self.metrics.set_consecutive_failures(
            &self.name,
            "dns",
            self.state.dns.consecutive_failures,
        );
        self.metrics.set_consecutive_failures(
            &self.name,
            "direct",
            self.state.direct.consecutive_failures,
        );
        for d in decisions {
            self.notifier
                .notify(self.event(d, now, observation.clone()));
        }
    }

    fn watch_config(&self) -> &WatchConfig {
        &self.config.watches[self.index]
    }

    async fn runner(&mut self) -> Arc<Runner> {
        if let Some(r) = &self.runner {
            return r.clone();
        }
        let runner = Arc::new(
            Runner::new(
                &self.config,
                self.watch_config(),
                self.prober.clone(),
                self.primary.clone(),
            )
            .await,
        );
        self.runner = Some(runner.clone());
        runner
    }

    /// On start: resume an unfinished failover, or pick up where a finished one left the
    /// watch (the DR endpoint it serves from).
    async fn restore_failover(&mut self) {
        let journal = match failover::load_journal(&self.config.agent.state_dir, &self.name) {
            Ok(j) => j,
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::from(e));
                tracing::error!(watch = %self.name, error = %message, "cannot read the failover journal");
                self.emit(
                    EventName::FailoverFailed,
                    vec![format!(
                        "cannot read the failover journal: {message}; fix or move it, then restart"
                    )],
                    None,
                    None,
                );
                return;
            }
        };
        let Some(journal) = journal else { return };
        self.last_failover = Some(journal_summary(&journal));
        // It stood down for another agent before the restart: keep following that failover.
        self.following =
            !self.state.served_by_dr && matches!(journal.outcome, Some(Outcome::StoodDown { .. }));
        if journal.unfinished() {
            if self.shutdown.is_cancelled() {
                return;
            }
            let runner = self.runner().await;
            // Hours may have passed (a manual failover interrupted, resumed by an agent in
            // alert-only mode): before the switch, look again, and never fail over a cache
            // that answers.
            if !journal.done(Step::SwitchDns)
                && journal.change_id.is_none()
                && runner.primary_healthy().await.is_ok()
            {
                let reason = format!(
                    "failover {} was interrupted before the DNS switch, and the primary answers PING/SET/GET on both paths again: not resuming it",
                    journal.plan.failover_id
                );
                self.end_by_abort(&runner, journal, reason, false).await;
                return;
            }
            tracing::warn!(watch = %self.name, failover_id = %journal.plan.failover_id, "resuming an unfinished failover from its journal");
            self.launch(runner, journal, "resume", SystemTime::now());
            return;
        }
        if self.state.served_by_dr {
            match journal.completed_endpoint() {
                Some((host, port)) => {
                    let runner = self.runner().await;
                    self.spec = runner.dr_probe(&host, port);
                }
                _ => {
                    tracing::error!(watch = %self.name, "the saved state says the DR cache serves the watch, but the last journal has no completed failover; probing the configured primary")
                }
            }
        }
    }

    /// Ends the unfinished failover of `journal` on purpose: `aborted` event, and the watch
    /// leaves `failing_over`. Returns the answer for an operator.
    async fn end_by_abort(
        &mut self,
        runner: &Runner,
        journal: Journal,
        reason: String,
        delete_dr: bool,
    ) -> Value {
        let id = journal.plan.failover_id.clone();
        match runner.abort(journal, &reason, delete_dr).await {
            Ok((journal, done)) => {
                self.last_failover = Some(journal_summary(&journal));
                let now = SystemTime::now();
                let previous = self.state.state();
                let (next, decisions) = policies::failover_failed(&self.state, now, &reason);
                self.apply(next, decisions, now, None, true);
                self.metrics.failover_result(&self.name, "aborted");
                self.emit_from(
                    previous,
                    EventName::Aborted,
                    vec![reason.clone(), done.clone()],
                    Some(id.clone()),
                    Some(json!({ "reason": reason, "done": done })),
                );
                json!({ "aborted": true, "failover_id": id, "done": done })
            }
            Err(e) => {
                let error = format!("could not abort failover {id}: {e}");
                tracing::error!(watch = %self.name, "{error}");
                json!({ "aborted": false, "failover_id": id, "error": error })
            }
        }
    }

    /// `valkey-dr abort`: stops the failover in flight (at its next await point; its journal
    /// says which step it was in) or ends an unfinished journal.
    async fn abort(&mut self, delete_dr: bool) -> Value {
        if let Some(op) = self.op.take_if(|op| op.kind == "failover") {
            op.task.abort();
            let _ = op.task.await;
        }
        if self.op.is_some() {
            return json!({ "aborted": false, "error": "a failback is running; it is not aborted" });
        }
        let journal = match failover::load_journal(&self.config.agent.state_dir, &self.name) {
            Ok(Some(j)) if j.unfinished() => j,
            Ok(_) => return json!({ "aborted": false, "error": "no unfinished failover to abort" }),
            Err(e) => {
                return json!({ "aborted": false, "error": format!("{:#}", anyhow::Error::from(e)) });
            }
        };
        let runner = self.runner().await;
        let reason = format!(
            "failover {} aborted by an operator at {}",
            journal.plan.failover_id,
            journal
                .current_step()
                .map(|s| s.as_str())
                .unwrap_or("its start")
        );
        self.end_by_abort(&runner, journal, reason, delete_dr).await
    }

    /// Begins a failover (the engine's intent, or an operator's): its journal is on disk when
    /// this returns, and [`Self::launch`] runs it. `None` when it could not begin (the reasons
    /// say why).
    async fn begin_failover(
        &mut self,
        trigger: &str,
        now: SystemTime,
    ) -> Option<(Arc<Runner>, Journal)> {
        let refuse = if let Some(op) = &self.op {
            Some(format!("a {} ({}) is already running", op.kind, op.id))
        } else if self.shutdown.is_cancelled() {
            Some("shutdown has begun: no failover is started now".to_owned())
        } else {
            None
        };
        if let Some(reason) = refuse {
            tracing::warn!(watch = %self.name, trigger, "{reason}");
            self.state.last_reasons = vec![reason];
            return None;
        }
        let runner = self.runner().await;
        // The journal is on disk before the state says "failing over": a crash in between
        // leaves a journal that the next start resumes.
        match runner.start(
            &self.config,
            self.watch_config(),
            self.state.served_by_dr,
            now,
        ) {
            Ok(Start::New(journal) | Start::Resume(journal)) => Some((runner, journal)),
            Err(e) if self.state.served_by_dr => {
                tracing::warn!(watch = %self.name, trigger, "{e}");
                self.state.last_reasons = vec![e];
                None
            }
            Err(e) => {
                let reason = format!("{e}; no failover started");
                self.metrics.failover_result(&self.name, "failed");
                self.emit(EventName::FailoverFailed, vec![reason.clone()], None, None);
                self.state.last_reasons = vec![reason];
                None
            }
        }
    }

    fn launch(&mut self, runner: Arc<Runner>, journal: Journal, trigger: &str, now: SystemTime) {
        let previous = self.state.state();
        let (next, decisions) = policies::failover_started(&self.state, now);
        self.apply(next, decisions, now, None, true);
        let id = journal.plan.failover_id.clone();
        let resumed = journal.runs > 0;
        let trigger = if resumed { "resume" } else { trigger };
        self.emit_from(
            previous,
            EventName::FailoverStarted,
            vec![match trigger {
                "auto" => "every guard passed: failing over to the DR region".to_owned(),
                "manual" => "an operator asked for a failover".to_owned(),
                _ => format!("resuming failover {id} from its journal after a restart"),
            }],
            Some(id.clone()),
            Some(json!({
                "trigger": trigger,
                "resumed": resumed,
                "plan": plan::failover_plan(&self.config, self.watch_config()),
                "done_steps": Step::ALL.iter().filter(|s| journal.done(**s)).map(|s| s.as_str()).collect::<Vec<_>>(),
            })),
        );
        self.last_failover = Some(journal_summary(&journal));
        let tx = self.ops.clone();
        // Step events leave from the executor's task the moment the journal has them: the
        // watch task may be inside a probe round (a whole timeout, in an outage) and would
        // hold them back.
        let steps = StepEvents {
            notifier: self.notifier.clone(),
            watch: self.name.clone(),
            agent_id: self.agent_id.clone(),
            failover_id: id.clone(),
        };
        let task = tokio::spawn(async move {
            let progress = |_: &Journal, e: &Entry| {
                steps.step(e);
                let _ = tx.send(OpMsg::Step(e.clone()));
            };
            let alert = |step: Step, message: &str| steps.retrying(step, message);
            let result = runner.failover(journal, &progress, &alert).await;
            let _ = tx.send(OpMsg::FailoverDone(Box::new(result)));
        });
        self.op = Some(Op {
            kind: "failover",
            id,
            task,
        });
    }

    /// Starts a failback if the old primary has passed `rise` rounds.
    async fn start_failback(&mut self, delete_dr: bool) -> Result<String, String> {
        if let Some(op) = &self.op {
            return Err(format!("a {} ({}) is already running", op.kind, op.id));
        }
        if !self.state.served_by_dr {
            return Err("the primary already serves the watch: nothing to fail back".to_owned());
        }
        let rise = self.params.rise();
        if self.state.old_primary_successes < rise {
            return Err(format!(
                "the primary has passed {} consecutive rounds, and failback needs rise = {rise}; wait for failback_possible",
                self.state.old_primary_successes
            ));
        }
        if self.shutdown.is_cancelled() {
            return Err("shutdown has begun".to_owned());
        }
        let runner = self.runner().await;
        let id = failover::new_failback_id(SystemTime::now());
        let dr = self.spec.endpoint.clone();
        let primary = self.primary.endpoint.clone();
        let tx = self.ops.clone();
        let fb_id = id.clone();
        let task = tokio::spawn(async move {
            let progress = |step: &str, detail: &str| {
                let _ = tx.send(OpMsg::FailbackStep(step.to_owned(), detail.to_owned()));
            };
            let result = runner
                .failback(&fb_id, &dr, &primary, delete_dr, &progress)
                .await;
            let _ = tx.send(OpMsg::FailbackDone(result));
        });
        self.op = Some(Op {
            kind: "failback",
            id: id.clone(),
            task,
        });
        Ok(id)
    }

    fn on_op(&mut self, msg: OpMsg) {
        let now = SystemTime::now();
        let id = self.op.as_ref().map(|op| op.id.clone());
        match msg {
            OpMsg::Step(entry) => {
                if let Some(summary) = &mut self.last_failover {
                    summary["step"] = json!(entry.step.as_str());
                }
            }
            OpMsg::FailoverDone(result) => {
                self.op = None;
                self.failover_done(*result, now);
            }
            OpMsg::FailbackStep(step, detail) => {
                self.emit(
                    EventName::FailoverStep,
                    vec![format!("failback {step}: {detail}")],
                    id,
                    Some(json!({ "step": step, "phase": "done", "detail": detail, "failback": true })),
                );
            }
            OpMsg::FailbackDone(result) => {
                self.op = None;
                match result {
                    Ok(report) => {
                        self.last_failback =
                            Some(json!({ "id": id, "result": "completed", "report": report }));
                        let previous = self.state.state();
                        let (next, decisions) = policies::failback_completed(&self.state, now);
                        self.apply(next, decisions, now, None, true);
                        self.spec = self.primary.clone();
                        self.emit_from(
                            previous,
                            EventName::FailbackCompleted,
                            vec![format!(
                                "{} points at the primary {} again",
                                report.record, report.target
                            )],
                            id,
                            serde_json::to_value(&report).ok(),
                        );
                    }
                    Err(e) => {
                        self.last_failback =
                            Some(json!({ "id": id, "result": "failed", "error": e }));
                        self.emit(
                            EventName::FailbackFailed,
                            vec![e.clone()],
                            id,
                            Some(json!({ "error": e })),
                        );
                    }
                }
            }
        }
        self.publish();
    }

    fn failover_done(
        &mut self,
        result: Result<Journal, (Journal, FailoverError)>,
        now: SystemTime,
    ) {
        let (journal, error) = match result {
            Ok(journal) => (journal, None),
            Err((journal, e)) => (journal, Some(e)),
        };
        let id = Some(journal.plan.failover_id.clone());
        let timings = journal.timings();
        for (step, d) in &timings {
            self.metrics.failover_step(&self.name, step, *d);
        }
        let timings_ms: BTreeMap<_, _> = timings
            .iter()
            .map(|(k, v)| (*k, v.as_millis() as u64))
            .collect();
        // From the journal, not from now: this message may have waited for a probe round.
        let total_ms = journal
            .started_at()
            .zip(journal.entries.last().map(|e| e.at))
            .and_then(|(first, last)| last.duration_since(first).ok())
            .map(|d| d.as_millis() as u64);
        let previous = self.state.state();
        self.last_failover = Some(journal_summary(&journal));
        match error {
            None => {
                self.metrics.failover_result(&self.name, "completed");
                let (next, decisions) = policies::failover_completed(&self.state, now);
                self.apply(next, decisions, now, None, true);
                if let (Some((host, port)), Some(runner)) = (&journal.endpoint, &self.runner) {
                    self.spec = runner.dr_probe(host, *port);
                }
                self.following = false;
                self.emit_from(
                    previous,
                    EventName::FailoverCompleted,
                    vec![format!(
                        "{} now points at the DR cache {} ({})",
                        journal.plan.record,
                        journal.plan.cache.name(),
                        self.spec.endpoint
                    )],
                    id,
                    Some(json!({
                        "endpoint": self.spec.endpoint,
                        "port": self.spec.port,
                        "cache": journal.plan.cache.name(),
                        "steps_ms": timings_ms,
                        "total_ms": total_ms,
                        "runs": journal.runs,
                    })),
                );
            }
            Some(FailoverError::StoodDown { holder }) => {
                self.metrics.failover_result(&self.name, "stood_down");
                let reason = format!("stood down: another agent holds the lease ({holder})");
                let (next, decisions) = policies::failover_failed(&self.state, now, &reason);
                self.apply(next, decisions, now, None, true);
                // The other agent is failing over: once the record shows its DR cache, this
                // agent follows it instead of reporting drift.
                self.following = true;
                self.emit_from(
                    previous,
                    EventName::StoodDown,
                    vec![
                        reason,
                        "this agent follows once the record points at the DR cache".to_owned(),
                    ],
                    id,
                    Some(json!({ "holder": holder })),
                );
            }
            Some(e) => {
                self.metrics.failover_result(&self.name, "failed");
                let step = match &journal.outcome {
                    Some(Outcome::Failed { step, .. }) => step.as_str(),
                    _ => journal.current_step().map_or("unknown", Step::as_str),
                };
                let reason = format!("failover failed at {step}: {e}");
                let (next, decisions) = policies::failover_failed(&self.state, now, &reason);
                self.apply(next, decisions, now, None, true);
                let record_untouched = !journal.done(Step::SwitchDns);
                self.emit_from(
                    previous,
                    EventName::FailoverFailed,
                    vec![
                        reason,
                        if record_untouched {
                            format!("{} was not changed", journal.plan.record)
                        } else {
                            format!("{} already points at the DR cache", journal.plan.record)
                        },
                    ],
                    id,
                    Some(json!({
                        "step": step,
                        "error": e.to_string(),
                        "record_untouched": record_untouched,
                        "steps_ms": timings_ms,
                    })),
                );
            }
        }
    }

    /// After standing down: adopt the DR cache once the record points at it and it is
    /// available (the other agent's failover landed).
    async fn follow(&mut self, o: &Observation, now: SystemTime) {
        let Some(target) = o.drift().map(str::to_owned) else {
            return;
        };
        let runner = self.runner().await;
        let name = self.watch_config().dr.cache_name.clone();
        let Ok(Some(info)) = runner.cache.describe(&name).await else {
            return;
        };
        let Some((host, port)) = info.endpoint else {
            return;
        };
        if info.status != CacheStatus::Available || !valkey_dr_probes::same_name(&host, &target) {
            return;
        }
        self.following = false;
        let previous = self.state.state();
        let (next, decisions) = policies::failover_completed(&self.state, now);
        self.apply(next, decisions, now, None, true);
        self.spec = runner.dr_probe(&host, port);
        self.emit_from(
            previous,
            EventName::FailoverCompleted,
            vec![format!(
                "another agent's failover landed: {} points at the DR cache {name}; following it",
                self.spec.record
            )],
            None,
            Some(json!({ "endpoint": self.spec.endpoint, "port": port, "cache": name, "by_another_agent": true })),
        );
    }

    /// Sends an executor event (they are not the engine's decisions).
    fn emit(
        &self,
        event: EventName,
        reasons: Vec<String>,
        failover_id: Option<String>,
        detail: Option<Value>,
    ) {
        self.emit_from(self.state.state(), event, reasons, failover_id, detail);
    }

    /// [`Self::emit`] for an event that moved the watch from `previous`.
    fn emit_from(
        &self,
        previous: State,
        event: EventName,
        reasons: Vec<String>,
        failover_id: Option<String>,
        detail: Option<Value>,
    ) {
        self.notifier.notify(Event {
            reasons,
            detail,
            ..Event::executor(
                event,
                &self.name,
                &self.agent_id,
                (previous.as_str(), self.state.state().as_str()),
                failover_id,
            )
        });
    }

    fn event(&self, d: Decision, now: SystemTime, observation: Option<Value>) -> Event {
        let mut reasons = d.reasons.clone();
        let mut detail = None;
        let mut event = EventName::from(d.event);
        if d.event == PolicyEvent::FailoverBlocked || d.event == PolicyEvent::FailoverIntent {
            let guards = serde_json::to_value(&d.guards).unwrap_or(Value::Null);
            if d.would_fail_over() {
                // Alert-only: the only thing stopping the failover is the mode. Say so as a
                // failover intent with the plan, so people can run it by hand.
                event = EventName::FailoverIntent;
                reasons.insert(
                    0,
                    "alert-only mode: would fail over now; detail.plan holds the calls it would make"
                        .into(),
                );
                detail = Some(json!({
                    "would_fail_over": true,
                    "plan": self.plan,
                    "guards": guards,
                    "quorum": self.last_quorum,
                }));
            } else {
                for g in d.blocking_guards() {
                    reasons.push(format!("blocked by {}: {}", g.guard.as_str(), g.detail));
                }
                // `fails_over`: an intent in auto-failover mode, which the executor carries out.
                detail = Some(json!({
                    "would_fail_over": false,
                    "fails_over": d.event == PolicyEvent::FailoverIntent,
                    "plan": self.plan,
                    "guards": guards,
                    "quorum": self.last_quorum,
                }));
            }
        }
        Event {
            event,
            watch: self.name.clone(),
            state: d.state.as_str().to_owned(),
            previous_state: d.previous_state.as_str().to_owned(),
            reasons,
            observation,
            agent_id: self.agent_id.clone(),
            at: now,
            of: d.of.map(EventName::from),
            failover_id: None,
            detail,
        }
    }

    fn status_json(&self) -> Value {
        let s = &self.state;
        json!({
            "name": self.name,
            "state": s.state().as_str(),
            "paused": s.is_paused(),
            "consecutive_failures": s.consecutive_failures,
            "consecutive_successes": s.consecutive_successes,
            "paths": {
                "dns": { "consecutive_failures": s.dns.consecutive_failures, "last_failure": s.dns.last_failure.map(|k| k.as_str()) },
                "direct": { "consecutive_failures": s.direct.consecutive_failures, "last_failure": s.direct.last_failure.map(|k| k.as_str()) },
            },
            "reasons": s.last_reasons,
            "rounds": self.rounds,
            "active_endpoint": format!("{}:{}", self.spec.endpoint, self.spec.port),
            "served_by_dr": s.served_by_dr,
            "old_primary_successes": s.old_primary_successes,
            "running": self.op.as_ref().map(|op| json!({ "kind": op.kind, "id": op.id })),
            "last_failover": self.last_failover,
            "last_failback": self.last_failback,
            "last_observation": self.last_observation,
            "vote": self.vote.map(|(evidence, at)| json!({
                "outage_evidence": evidence,
                "round_at_ms": at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
                "window_ms": (self.interval * self.params.fall).as_millis() as u64,
            })),
            "quorum": self.last_quorum,
        })
    }

    fn summary(&self, o: &Observation) -> String {
        let paths: Vec<String> = o
            .paths
            .iter()
            .map(|p| match &p.error {
                None => format!("{} ok", p.path),
                Some(e) => format!("{} {}", p.path, e.kind),
            })
            .collect();
        format!(
            "{}: {} ({})",
            self.name,
            self.state.state().as_str(),
            paths.join(", ")
        )
    }
}

/// A failover journal in a few fields, for `/status` and `valkey-dr status`.
pub fn journal_summary(j: &Journal) -> Value {
    json!({
        "failover_id": j.plan.failover_id,
        "outcome": j.outcome,
        "step": j.current_step().map(Step::as_str),
        "started_at": j.started_at().map(|t| humantime::format_rfc3339_millis(t).to_string()),
        "endpoint": j.endpoint.as_ref().map(|(h, p)| format!("{h}:{p}")),
        "steps_ms": j.timings().iter().map(|(k, v)| (k.to_string(), v.as_millis() as u64)).collect::<BTreeMap<_, _>>(),
        "runs": j.runs,
    })
}

/// Writes a watch's states as they change, off the runtime thread, in order.
async fn write_states(path: PathBuf, watch: String, mut states: watch::Receiver<WatchState>) {
    while states.changed().await.is_ok() {
        let state = states.borrow_and_update().clone();
        let path = path.clone();
        let written = tokio::task::spawn_blocking(move || store::write_json(&path, &state)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(watch, error = %format!("{:#}", anyhow::Error::from(e)), "cannot save policy state")
            }
            Err(e) => tracing::error!(watch, error = %e, "policy state writer failed"),
        }
    }
}

fn path_status(path: Option<&PathResult>) -> policies::PathStatus {
    match path.and_then(|p| p.error.as_ref()) {
        None => policies::PathStatus::Ok,
        Some(e) => policies::PathStatus::Failed(failure_kind(e.kind)),
    }
}

/// The probe's failure kinds and the engine's are the same list; the engine keeps its own
/// copy so that it depends on nothing with I/O.
fn failure_kind(kind: ErrorKind) -> policies::FailureKind {
    use policies::FailureKind as F;
    match kind {
        ErrorKind::DnsNxdomain => F::DnsNxdomain,
        ErrorKind::DnsTimeout => F::DnsTimeout,
        ErrorKind::DnsError => F::DnsError,
        ErrorKind::ConnectRefused => F::ConnectRefused,
        ErrorKind::ConnectTimeout => F::ConnectTimeout,
        ErrorKind::Tls => F::Tls,
        ErrorKind::Auth => F::Auth,
        ErrorKind::Oom => F::Oom,
        ErrorKind::Readonly => F::Readonly,
        ErrorKind::Timeout => F::Timeout,
        ErrorKind::Protocol => F::Protocol,
        ErrorKind::ValueMismatch => F::ValueMismatch,
        ErrorKind::Local => F::Local,
    }
}

/// Hooks that let the end-to-end suite provoke states no healthy agent reaches. Compiled only
/// into debug builds: a release binary ignores the variables.
mod test_hooks {
    /// `VALKEY_DR_TEST_STALL_AFTER_ROUNDS=N`: every watch loop stops after N rounds, as a
    /// wedged loop would, so that `/healthz` and the systemd watchdog can be tested.
    pub fn stall_after_rounds() -> Option<u64> {
        if cfg!(debug_assertions) {
            std::env::var("VALKEY_DR_TEST_STALL_AFTER_ROUNDS")
                .ok()
                .and_then(|v| v.parse().ok())
        } else {
            None
        }
    }

    /// `VALKEY_DR_TEST_CRASH_AT=intent`: aborts, as a `kill -9` would, once the engine's
    /// failover intent has been persisted (the state writer is given a moment to flush it),
    /// so that the suite can prove the journal was durable first.
    pub async fn crash_after_intent() {
        if cfg!(debug_assertions)
            && std::env::var("VALKEY_DR_TEST_CRASH_AT").is_ok_and(|v| v == "intent")
        {
            // The state writer runs on this (single-threaded) runtime: yield to it.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_probe_kind_maps_to_the_engine_kind_of_the_same_name() {
        for kind in [
            ErrorKind::DnsNxdomain,
            ErrorKind::DnsTimeout,
            ErrorKind::DnsError,
            ErrorKind::ConnectRefused,
            ErrorKind::ConnectTimeout,
            ErrorKind::Tls,
            ErrorKind::Auth,
            ErrorKind::Oom,
            ErrorKind::Readonly,
            ErrorKind::Timeout,
            ErrorKind::Protocol,
            ErrorKind::ValueMismatch,
            ErrorKind::Local,
        ] {
            assert_eq!(failure_kind(kind).as_str(), kind.as_str());
        }
    }
}
