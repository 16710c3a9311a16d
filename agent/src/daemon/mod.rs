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
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use valkey_dr_policies::{Params, State, WatchState};
use valkey_dr_probes::{Connections, PathKind, ProbeSpec, Prober, ResolverSettings};

use crate::admin::{self, AdminState, Health};
use crate::check::ObservationReport;
use crate::config::{Config, WatchConfig};
use crate::control::status::{
    AgentStatus, ControlAnswer, FailbackStatus, FailoverSummary, HoldStatus, OpKind, QuorumStatus,
    ReadinessStatus, StatusDocument, WatchAnswer, WatchStatus,
};
use crate::control::{AdminToken, ControlAction, ControlRequest};
use crate::event::{Event, EventName};
use crate::executor::{FailoverError, HoldNews, Journal, JournalEntry, Phase, Step};
use crate::failover::{FailbackReport, Runner};
use crate::layout;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::peers::Peers;
use crate::plan;
use crate::store::{self, StoreError};
use crate::witness::Witness;

mod ops;
mod round;
mod status;
mod supervisor;
mod switch;

use supervisor::ControlSlot;

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
    Probe(#[from] crate::spec::SpecError),
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
    status: WatchStatus,
    summary: String,
}

/// Runs the daemon until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), DaemonError> {
    run_reloadable(config, shutdown, mpsc::unbounded_channel().1).await
}

/// Runs the daemon with `config` (read from `path`) until `shutdown`, reloading on each
/// `SIGHUP` (`hangup`).
///
/// A reload validates the file first. An invalid one changes nothing: the agent goes on with
/// the config it runs, logs why, and sends `config_error` through its notifiers. A valid one
/// (even an identical text: a rotated secret file is not in the text) replaces the running
/// generation: its watches save their state and the new one starts from it (the same path
/// as a restart, so streaks, pauses and cooldowns carry over, and a failover in flight
/// resumes from its journal).
pub async fn run_with_reloads(
    path: &Path,
    mut config: Config,
    shutdown: CancellationToken,
    mut hangup: tokio::signal::unix::Signal,
) -> Result<(), DaemonError> {
    loop {
        let generation = shutdown.child_token();
        let (refused_tx, refused_rx) = mpsc::unbounded_channel();
        let daemon = run_reloadable(config.clone(), generation.clone(), refused_rx);
        tokio::pin!(daemon);
        let new = loop {
            tokio::select! {
                result = &mut daemon => return result,
                Some(()) = hangup.recv() => match reload_candidate(path) {
                    Err(e) => {
                        let reason = crate::text::chain(&e);
                        tracing::error!(
                            "SIGHUP: {} is not valid, so nothing changed: {reason}",
                            path.display()
                        );
                        let _ = refused_tx.send(ReloadRefused {
                            path: path.to_owned(),
                            reason,
                        });
                    }
                    Ok(new) => break new,
                },
            }
        };
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Reloading]);
        tracing::info!("SIGHUP: {} is valid; reloading", path.display());
        generation.cancel();
        if let Err(e) = daemon.await {
            tracing::error!("{}", crate::text::chain(&e));
        }
        for w in &new.warnings {
            tracing::warn!("{w}");
        }
        config = new;
        tracing::info!(
            mode = config.agent.mode.as_str(),
            watches = config.watches.len(),
            "config reloaded"
        );
    }
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
enum ReloadError {
    /// The file is not a valid config.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Its `state_dir` cannot be created.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Its `state_dir` is not the agent's alone.
    #[error(transparent)]
    StateDir(#[from] crate::layout::StateDirError),
}

/// The config at `path`, if a reload may take it: valid, and its `state_dir` (created 0700
/// when missing) the agent's alone, as a start demands.
fn reload_candidate(path: &Path) -> Result<Config, ReloadError> {
    let config = Config::load(path, &crate::config::ProcessEnv)?;
    store::ensure_dir(&config.agent.state_dir)?;
    crate::layout::check_state_dir(&config.agent.state_dir)?;
    Ok(config)
}

/// Why a `SIGHUP` left the running config in place, for the `config_error` event.
#[derive(Debug)]
pub struct ReloadRefused {
    /// The config file.
    pub path: std::path::PathBuf,
    /// Why it is not valid (one line).
    pub reason: String,
}

/// [`run`], also announcing each refused reload (`reload_refused`) as a `config_error`
/// event through this generation's notifiers: the config that stays in force is the one
/// whose sinks are known to work.
pub async fn run_reloadable(
    config: Config,
    shutdown: CancellationToken,
    reload_refused: mpsc::UnboundedReceiver<ReloadRefused>,
) -> Result<(), DaemonError> {
    let state_dir = config.agent.state_dir.clone();
    store::ensure_dir(&state_dir)?;
    warn_if_open(&state_dir);
    ensure_descriptors(config.watches.len());
    let token = AdminToken::generate().map_err(|source| DaemonError::Token { source })?;
    let specs = crate::spec::probe_specs(&config, None).await?;
    let prober = Arc::new(
        Prober::new(&ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
        })
        .map_err(|e| crate::spec::SpecError::Resolver(Box::new(e)))?,
    );
    let shared = Shared::new(&config, &shutdown, reload_refused);
    let (status_tx, status_rx) = watch::channel(StatusDocument {
        agent: agent_status(&config),
        readiness: None,
        tasks: BTreeMap::new(),
        watches: Vec::new(),
    });
    let (control_tx, control_rx) = mpsc::channel(16);
    let (readiness_tx, readiness_rx) = watch::channel(ReadinessStatus::pending());
    let admin_shutdown = CancellationToken::new();
    let admin_task = tokio::spawn(admin_server(
        config.agent.clone(),
        admin_state(
            &config,
            &shared,
            (status_rx, readiness_rx, control_tx),
            token,
        ),
        shared.notifier.clone(),
        admin::ServerLimits::for_watches(config.watches.len()),
        admin_shutdown.clone(),
    ));
    tracing::info!(
        agent_id = %config.agent.id,
        mode = config.agent.mode.as_str(),
        watches = config.watches.len(),
        "valkey-dr started"
    );
    let (done_tx, done_rx) = mpsc::channel(64);
    let (task_news, task_news_rx) = mpsc::unbounded_channel();
    let config = Arc::new(config);
    let news = (done_tx, task_news);
    let (tasks, controls) = spawn_watches(&config, specs, &prober, &shared, &shutdown, news);
    let background = [
        tokio::spawn(dispatch_control(control_rx, controls)),
        tokio::spawn(crate::readiness::run(
            config.clone(),
            shared.metrics.clone(),
            shared.notifier.clone(),
            shared.standbys.clone(),
            readiness_tx,
            shutdown.child_token(),
        )),
        shared.refusals,
    ];
    let (health, news) = (&shared.health, (done_rx, task_news_rx));
    supervise(&config, news, status_tx, health, &shutdown).await;
    shut_down(
        tasks,
        background,
        shared.notify_task,
        admin_shutdown,
        admin_task,
    )
    .await;
    Ok(())
}

/// What the admin server reads of this generation, and where it sends controls.
fn admin_state(
    config: &Config,
    shared: &Shared,
    (status, readiness, control): (
        watch::Receiver<StatusDocument>,
        watch::Receiver<ReadinessStatus>,
        mpsc::Sender<ControlRequest>,
    ),
    token: AdminToken,
) -> AdminState {
    AdminState {
        metrics: shared.metrics.clone(),
        health: shared.health.clone(),
        status,
        readiness,
        control,
        token,
        peer_token: config
            .agent
            .peer_token
            .as_ref()
            .map(|t| AdminToken::shared(t.expose())),
        peers: shared.peers.clone(),
        approvals: shared.approvals.clone(),
    }
}

/// What every watch task of a generation shares.
struct Shared {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    notifier: Notifier,
    /// The notifiers' task, drained at shutdown.
    notify_task: tokio::task::JoinHandle<()>,
    /// Announces refused reloads through this generation's notifiers.
    refusals: tokio::task::JoinHandle<()>,
    peers: Option<Arc<Peers>>,
    /// Each watch's approval slot, shared with the admin server.
    approvals: Arc<BTreeMap<String, Arc<crate::executor::Approvals>>>,
    /// The smallest probe interval: the loop's health is judged against it.
    min_interval: Duration,
    /// Where each warm watch's standby serves, and whether it served in its last round.
    standbys: Arc<crate::standby::Book>,
}

impl Shared {
    fn new(
        config: &Config,
        shutdown: &CancellationToken,
        reload_refused: mpsc::UnboundedReceiver<ReloadRefused>,
    ) -> Shared {
        let min_interval = config
            .watches
            .iter()
            .map(|w| w.probe.interval)
            .min()
            .unwrap_or(Duration::from_secs(5));
        let metrics = Arc::new(Metrics::new());
        let counted = metrics.clone();
        let (notifier, notify_task) = Notifier::spawn(
            &config.notifiers,
            shutdown.child_token(),
            Arc::new(move |sink, result| counted.notification(sink, result)),
        );
        let refusals = tokio::spawn(announce_refused_reloads(
            reload_refused,
            notifier.clone(),
            config.agent.id.clone(),
        ));
        Shared {
            metrics,
            health: Arc::new(Health::new(min_interval)),
            notifier,
            notify_task,
            refusals,
            peers: Peers::from_config(config).map(Arc::new),
            approvals: Arc::new(
                config
                    .watches
                    .iter()
                    .map(|w| (w.name.clone(), Arc::default()))
                    .collect(),
            ),
            min_interval,
            standbys: crate::standby::Book::load(config),
        }
    }
}

/// Each refused reload, as a `config_error` event.
async fn announce_refused_reloads(
    mut refused: mpsc::UnboundedReceiver<ReloadRefused>,
    notifier: Notifier,
    agent_id: String,
) {
    while let Some(refused) = refused.recv().await {
        notifier.notify(agent_event(
            EventName::ConfigError,
            &agent_id,
            vec![
                format!(
                    "SIGHUP: {} is not valid: {}",
                    refused.path.display(),
                    refused.reason
                ),
                "the agent goes on with the config it was running; fix the file and \
                 send SIGHUP again (valkey-dr config check shows what is wrong)"
                    .to_owned(),
            ],
        ));
    }
}

/// A watch task's way to hear control requests.
type ControlTx = mpsc::Sender<(ControlAction, oneshot::Sender<WatchAnswer>)>;

/// Where a watch task hears control requests.
type ControlRx = mpsc::Receiver<(ControlAction, oneshot::Sender<WatchAnswer>)>;

/// Starts one supervised task per watch, each from its saved state ([`supervisor`] starts
/// it again if it ends before shutdown); the supervisors' handles, and where each watch hears
/// control requests. `news` carries each round's status and each task's restarts.
fn spawn_watches(
    config: &Arc<Config>,
    specs: Vec<ProbeSpec>,
    prober: &Arc<Prober>,
    shared: &Shared,
    shutdown: &CancellationToken,
    (done, tasks_news): (mpsc::Sender<RoundDone>, TaskNews),
) -> (
    Vec<tokio::task::JoinHandle<()>>,
    BTreeMap<String, ControlSlot>,
) {
    let mut controls = BTreeMap::new();
    let mut tasks = Vec::new();
    let witnesses = Arc::new(crate::witness::AwsWitnesses::new(
        config,
        shared.min_interval,
    ));
    for (index, (w, spec)) in config.watches.iter().zip(specs).enumerate() {
        let mut paths = vec![PathKind::Dns, PathKind::Direct];
        if spec.reader_port.is_some() {
            paths.push(PathKind::Reader);
        }
        if w.dr.standby == crate::config::StandbyMode::Warm {
            paths.push(PathKind::Standby);
        }
        shared.metrics.register_watch(&w.name, &paths);
        let start = WatchStart {
            config: config.clone(),
            index,
            spec,
            prober: prober.clone(),
            witnesses: witnesses.clone(),
            shutdown: shutdown.clone(),
            notifier: shared.notifier.clone(),
            metrics: shared.metrics.clone(),
            health: shared.health.clone(),
            peers: shared.peers.clone(),
            approvals: shared.approvals.get(&w.name).cloned().unwrap_or_default(),
            standbys: shared.standbys.clone(),
            done: done.clone(),
        };
        let watchers = supervisor::Watchers {
            health: shared.health.clone(),
            announce: announce_task_end(shared.notifier.clone(), config.clone()),
            news: tasks_news.clone(),
        };
        let slot = ControlSlot::new();
        controls.insert(w.name.clone(), slot.clone());
        tasks.push(tokio::spawn(supervisor::keep_running(
            w.name.clone(),
            slot,
            move |control| start.clone().run(control),
            watchers,
            shutdown.clone(),
        )));
    }
    (tasks, controls)
}

/// Each watch task's restarts, for `/status` `tasks`.
type TaskNews = mpsc::UnboundedSender<(String, crate::control::status::TaskStatus)>;

/// A watch task's end, as a `config_error` event. The task that knew the watch's state is
/// gone, so the event carries the state saved last.
fn announce_task_end(notifier: Notifier, config: Arc<Config>) -> supervisor::Announce {
    Arc::new(move |watch, reasons, status| {
        let path = layout::state_file(&config.agent.state_dir, watch);
        let saved = store::read_json::<WatchState>(&path).ok().flatten();
        let state = saved.unwrap_or_default().state().as_str();
        let mut event = Event::executor(
            EventName::ConfigError,
            watch,
            &config.agent.id,
            (state, state),
            None,
        );
        event.reasons = reasons;
        event.detail = Some(json!({ "task": status }));
        notifier.notify(event);
    })
}

/// What starting one watch's task takes, again at each restart.
#[derive(Clone)]
struct WatchStart {
    config: Arc<Config>,
    /// The watch's place in `config.watches`.
    index: usize,
    /// The configured primary's probe spec.
    spec: ProbeSpec,
    prober: Arc<Prober>,
    witnesses: Arc<crate::witness::AwsWitnesses>,
    shutdown: CancellationToken,
    notifier: Notifier,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    peers: Option<Arc<Peers>>,
    approvals: Arc<crate::executor::Approvals>,
    standbys: Arc<crate::standby::Book>,
    done: mpsc::Sender<RoundDone>,
}

impl WatchStart {
    /// The watch's task, from its saved state, hearing `control`.
    fn run(self, control: ControlRx) -> impl Future<Output = ()> + Send + 'static {
        let (ops_tx, ops_rx) = mpsc::unbounded_channel();
        self.task(ops_tx).run(control, ops_rx)
    }

    fn task(&self, ops: mpsc::UnboundedSender<OpMsg>) -> WatchTask {
        let config = &self.config;
        let w = &config.watches[self.index];
        WatchTask {
            config: config.clone(),
            index: self.index,
            name: w.name.clone(),
            agent_id: config.agent.id.clone(),
            shutdown: self.shutdown.clone(),
            probing: Probing {
                prober: self.prober.clone(),
                interval: w.probe.interval,
                primary: self.spec.clone(),
                spec: self.spec.clone(),
                kept: Connections::default(),
                kept_old_primary: Connections::default(),
                witness: Witness::new(config, self.index, self.witnesses.clone()),
                standbys: self.standbys.clone(),
                standby: None,
            },
            judging: Judging::restored(self),
            operations: Operations {
                runner: None,
                op: None,
                ops,
                following: false,
                last_failover: None,
                last_failback: None,
                approvals: self.approvals.clone(),
            },
            telling: Telling {
                notifier: self.notifier.clone(),
                metrics: self.metrics.clone(),
                health: self.health.clone(),
                done: self.done.clone(),
            },
            switching: None,
        }
    }
}

impl Judging {
    /// A watch's judging as its saved state left it, with the writer that saves it from now
    /// on; the state and pause gauges show it from the first scrape.
    fn restored(start: &WatchStart) -> Self {
        let (config, shared) = (&start.config, start);
        let w = &config.watches[start.index];
        let path = layout::state_file(&config.agent.state_dir, &w.name);
        let (state, moved) = load_state(&path, &w.name, SystemTime::now());
        if !moved.is_empty() {
            let shown = state.state().as_str();
            let mut event = Event::executor(
                EventName::ConfigError,
                &w.name,
                &config.agent.id,
                (shown, shown),
                None,
            );
            event.reasons = moved;
            event
                .reasons
                .push(format!("the state file is {}", path.display()));
            shared.notifier.notify(event);
        }
        shared.metrics.set_state(&w.name, state.state());
        shared
            .metrics
            .set_paused(&w.name, state.is_paused(), state.paused_until);
        let (persist, persisted) = watch::channel(state.clone());
        Self {
            writer: tokio::spawn(write_states(path, w.name.clone(), persisted)),
            state,
            params: params(config, w),
            persist,
            rounds: 0,
            last_observation: None,
            vote: None,
            peers: shared.peers.clone(),
            last_quorum: None,
            primary_ok_while_held: 0,
        }
    }
}

/// Shutdown: watches save their state, notifiers drain, then the admin server stops, all
/// within a bounded grace so that systemd's stop timeout is never the one that acts.
async fn shut_down(
    tasks: Vec<tokio::task::JoinHandle<()>>,
    background: [tokio::task::JoinHandle<()>; 3],
    notify_task: tokio::task::JoinHandle<()>,
    admin_shutdown: CancellationToken,
    admin_task: tokio::task::JoinHandle<()>,
) {
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
    for task in background {
        task.abort();
    }
    tokio::select! {
        _ = notify_task => {}
        _ = &mut grace => tracing::warn!("notifications still queued at shutdown were dropped"),
    }
    admin_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    tracing::info!("stopped");
}

/// How often a failed admin bind is tried again.
const ADMIN_RETRY: Duration = Duration::from_secs(30);

/// Serves the admin API until `shutdown`: first on `state_dir/admin.sock`, the owner's
/// channel, which no other user can take or pose as, then also on `admin_listen` once that
/// binds. A failed bind (the port is taken, the address is not this host's) does not stop the
/// agent: probing and alerting matter more than the API, so it says so once, in the log and
/// as an `admin_unavailable` event, and tries again every [`ADMIN_RETRY`]; the socket serves
/// the owner meanwhile. A socket that cannot be bound is said the same way.
///
/// Only once it listens does it write the token file (and [`admin_file`] once TCP listens),
/// and at the end it removes them and its socket: a second agent started by mistake on the
/// same `state_dir` finds the first one's socket alive and never takes over its files.
async fn admin_server(
    agent: crate::config::AgentConfig,
    state: AdminState,
    notifier: Notifier,
    limits: admin::ServerLimits,
    shutdown: CancellationToken,
) {
    let state_dir = agent.state_dir.clone();
    let socket_path = layout::socket_file(&state_dir);
    let token_path = layout::token_file(&state_dir);
    let listeners = |tcp, socket| admin::Listeners {
        tcp,
        socket,
        socket_path: socket_path.clone(),
        controls: agent.controls,
    };
    let (socket, taken) = owner_socket(&agent, &socket_path, &notifier);
    let socket_id = socket.as_ref().map(admin::BoundSocket::id);
    let socket_task = socket.map(|socket| {
        write_token(&token_path, &state.token);
        tokio::spawn(admin::serve(
            listeners(None, Some(socket.listener)),
            state.clone(),
            shutdown.clone(),
            limits,
        ))
    });
    if let Some((listener, local, failed_once)) = bind_admin(&agent, &notifier, &shutdown).await {
        // Another agent serving this state_dir keeps its files: this one records nothing.
        if socket_id.is_none() && !taken {
            write_token(&token_path, &state.token);
        }
        let recorded = (!taken).then(|| {
            store::write_json(
                &layout::admin_file(&state_dir),
                &json!({ "address": local.to_string(), "pid": std::process::id() }),
            )
        });
        if let Some(Err(e)) = recorded {
            tracing::error!(error = %crate::text::chain(&e), "cannot record the admin address; the CLI cannot find this agent over TCP");
        }
        tracing::info!(admin = %local, socket = %socket_path.display(), controls = agent.controls.as_str(), "admin server listening");
        if failed_once {
            notifier.notify(agent_event(
                EventName::AdminAvailable,
                &agent.id,
                vec![format!("the admin API listens on {local}")],
            ));
        }
        let served = admin::serve(listeners(Some(listener), None), state, shutdown, limits);
        if let Err(e) = served.await {
            tracing::error!(error = %e, "admin server stopped");
        }
    }
    if let Some(task) = socket_task {
        let _ = task.await;
    }
    // Only what this agent recorded: another agent serving this state_dir keeps its files.
    if !taken {
        let _ = std::fs::remove_file(layout::admin_file(&state_dir));
        let _ = std::fs::remove_file(token_path);
    }
    if let Some(id) = socket_id {
        admin::remove_socket(&socket_path, id);
    }
}

/// Writes the owner's token, mode 0600; without it the CLI cannot drive this agent, but
/// `/metrics` and `/healthz` still serve, so a failure is logged and the agent goes on.
fn write_token(path: &Path, token: &AdminToken) {
    if let Err(e) = store::write_file(path, token.as_file_text().as_bytes()) {
        tracing::error!(error = %crate::text::chain(&e), "cannot record the admin token; the CLI cannot drive this agent");
    }
}

/// Binds the owner's socket, or says why not (log and `admin_unavailable`); `true` when a
/// running process (another agent on this `state_dir`) serves it.
fn owner_socket(
    agent: &crate::config::AgentConfig,
    path: &Path,
    notifier: &Notifier,
) -> (Option<admin::BoundSocket>, bool) {
    match admin::bind_socket(path) {
        Ok(socket) => (Some(socket), false),
        Err(e) => {
            let reason = crate::text::chain(&e);
            tracing::error!("{reason}; the CLI cannot reach this agent through its socket");
            notifier.notify(agent_event(
                EventName::AdminUnavailable,
                &agent.id,
                vec![
                    reason,
                    "the owner's channel (the CLI on this host) is unavailable".to_owned(),
                ],
            ));
            (None, matches!(e, admin::SocketError::InUse { .. }))
        }
    }
}

/// Binds `admin_listen`, retrying every [`ADMIN_RETRY`] and saying so once: the listener,
/// its address, and whether a bind failed first. `None` when `shutdown` came first.
async fn bind_admin(
    agent: &crate::config::AgentConfig,
    notifier: &Notifier,
    shutdown: &CancellationToken,
) -> Option<(TcpListener, std::net::SocketAddr, bool)> {
    let address = agent.admin_listen;
    let mut failed_once = false;
    loop {
        let bound = TcpListener::bind(address).await.and_then(|listener| {
            let local = listener.local_addr()?;
            Ok((listener, local))
        });
        match bound {
            Ok((listener, local)) => return Some((listener, local, failed_once)),
            Err(e) => {
                if !failed_once {
                    failed_once = true;
                    let reason = format!("cannot listen on admin_listen {address}: {e}");
                    tracing::error!(
                        "{reason}; probing and alerting go on, the admin API is unavailable; \
                         retrying every {}",
                        crate::text::duration(ADMIN_RETRY)
                    );
                    notifier.notify(agent_event(
                        EventName::AdminUnavailable,
                        &agent.id,
                        vec![
                            reason,
                            "probing and alerting go on; /metrics, /healthz and the peers' \
                             requests are unavailable until it binds (the CLI on this host \
                             still reaches the agent through state_dir/admin.sock)"
                                .to_owned(),
                        ],
                    ));
                }
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(ADMIN_RETRY) => continue,
                }
            }
        }
    }
}

/// An event about the agent itself rather than one watch: `watch` is `*`.
fn agent_event(event: EventName, agent_id: &str, reasons: Vec<String>) -> Event {
    let mut event = Event::executor(event, "*", agent_id, ("running", "running"), None);
    event.reasons = reasons;
    event
}

/// Descriptors the agent needs besides its watches: the runtime, logs, AWS clients, the
/// notifiers, and the admin server's [`admin::MAX_CONNECTIONS`] on TCP and
/// [`admin::SOCKET_CONNECTIONS`] on its socket.
const DESCRIPTORS_BASE: u64 = 96 + admin::MAX_CONNECTIONS as u64 + admin::SOCKET_CONNECTIONS as u64;

/// Descriptors one watch's round may hold at once: the dns, direct and reader paths, the old
/// primary's probe, the resolver's sockets, and room for a failover's verification; and the
/// four more admin connections each watch allows ([`admin::ServerLimits::for_watches`]).
const DESCRIPTORS_PER_WATCH: u64 = 20;

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
/// that decides failovers. Reading is only warned about (the files in it are 0600); anyone
/// but the agent writing there is refused before this ([`crate::layout::check_state_dir`]).
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

fn agent_status(config: &Config) -> AgentStatus {
    AgentStatus {
        id: config.agent.id.clone(),
        mode: config.agent.mode.as_str().to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// A watch's saved state, brought within its bounds (see [`within_bounds`]), with a line
/// for each time that was moved. A file that cannot be read (a time beyond any clock
/// included) starts the watch fresh, and the line says so.
fn load_state(path: &Path, watch: &str, now: SystemTime) -> (WatchState, Vec<String>) {
    match store::read_json::<WatchState>(path) {
        Ok(Some(state)) => {
            tracing::info!(
                watch,
                state = state.state().as_str(),
                "restored policy state"
            );
            let (state, moved) = within_bounds(state, now);
            for line in &moved {
                tracing::warn!(watch, path = %path.display(), "saved state out of bounds: {line}");
            }
            (state, moved)
        }
        Ok(None) => (WatchState::default(), Vec::new()),
        Err(e) => {
            // Starting fresh forgets cooldowns, so say so loudly; refusing to start would
            // leave the cache unwatched, which is worse.
            let error = crate::text::chain(&e);
            tracing::error!(watch, error = %error, "cannot restore policy state; starting fresh");
            let said = format!("cannot restore the saved state ({error}); starting fresh");
            (WatchState::default(), vec![said])
        }
    }
}

/// `state` with its times brought within what the agent itself would have saved: a pause
/// ends at most [`crate::control::MAX_PAUSE`] from `now`, and a time that records something
/// already seen is not further ahead than that (a clock stepped back is not a week off).
/// Such a state comes from an older agent or a hand-edited file, and a time far ahead stops
/// failovers (a cooldown that never ends) or cannot be shown. Returns a line per time moved.
fn within_bounds(mut state: WatchState, now: SystemTime) -> (WatchState, Vec<String>) {
    let max = crate::control::MAX_PAUSE;
    let latest = now.checked_add(max).unwrap_or(now);
    let mut moved = Vec::new();
    let mut bound = |name: &str, t: &mut SystemTime, to: SystemTime| {
        if *t > latest {
            moved.push(format!(
                "{name} {} is more than 7 days ahead; now {}",
                crate::text::rfc3339_seconds(*t),
                crate::text::rfc3339_seconds(to)
            ));
            *t = to;
        }
    };
    if let Some(until) = state.paused_until.as_mut() {
        bound("paused_until", until, latest);
    }
    let seen = [
        ("paused_since", state.paused_since.as_mut()),
        ("failure_streak_since", state.failure_streak_since.as_mut()),
        ("last_round_at", state.last_round_at.as_mut()),
        ("failing_over_since", state.failing_over_since.as_mut()),
    ];
    for (name, t) in seen {
        if let Some(t) = t {
            bound(name, t, now);
        }
    }
    for t in &mut state.failovers {
        bound("a failover's start", t, now);
    }
    (state, moved)
}

/// Collects round results and the watch tasks' restarts: `/status` (whose `readiness` the
/// admin server adds from the readiness task's own channel, uncopied until asked), systemd
/// readiness, watchdog and status line.
async fn supervise(
    config: &Config,
    (mut done, mut restarts): (
        mpsc::Receiver<RoundDone>,
        mpsc::UnboundedReceiver<(String, crate::control::status::TaskStatus)>,
    ),
    status: watch::Sender<StatusDocument>,
    health: &Health,
    shutdown: &CancellationToken,
) {
    // Each watch's latest summary (for systemd's STATUS= line), and the status entries that
    // came since the last publication.
    let mut summaries: BTreeMap<String, String> = BTreeMap::new();
    let mut pending: BTreeMap<String, WatchStatus> = BTreeMap::new();
    let mut ready = false;
    // The status document and systemd's STATUS= line cover every watch, so they are rebuilt on
    // a short timer rather than after each watch's round. The document is patched in place:
    // only the watches whose round ended since are replaced (their entries move in, uncopied),
    // which keeps the cost per round independent of the number of watches.
    let mut publish = tokio::time::interval(PUBLISH_EVERY);
    publish.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Some((watch, task)) = restarts.recv() => {
                status.send_modify(|doc| {
                    doc.tasks.insert(watch, task);
                });
                continue;
            }
            round = done.recv() => match round {
                Some(round) => {
                    summaries.insert(round.watch.clone(), round.summary);
                    pending.insert(round.watch, round.status);
                    // Readiness is announced the moment the last first round lands.
                    if ready || summaries.len() < config.watches.len() {
                        continue;
                    }
                }
                None => return,
            },
            _ = publish.tick() => {
                if pending.is_empty() {
                    // Nothing new, but a healthy loop still feeds the watchdog.
                    if ready && health.looping().is_ok() {
                        let _ = sd_notify::notify(&[sd_notify::NotifyState::Watchdog]);
                    }
                    continue;
                }
            }
        }
        status.send_modify(|doc| doc.patch(&mut pending));
        let line = summaries
            .values()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join("; ");
        let mut notes = vec![sd_notify::NotifyState::Status(&line)];
        if !ready && summaries.len() == config.watches.len() {
            ready = true;
            notes.push(sd_notify::NotifyState::Ready);
            tracing::info!("first round of every watch done: ready");
        }
        // The watchdog is fed only while the loop is healthy, so that systemd restarts an
        // agent whose rounds have stalled.
        if health.looping().is_ok() {
            notes.push(sd_notify::NotifyState::Watchdog);
        }
        let _ = sd_notify::notify(&notes);
    }
}

/// Routes pause/resume from the admin server to the watch tasks.
async fn dispatch_control(
    mut requests: mpsc::Receiver<ControlRequest>,
    watches: BTreeMap<String, ControlSlot>,
) {
    while let Some(req) = requests.recv().await {
        let targets: Vec<_> = match &req.watch {
            Some(name) => match watches.get(name) {
                Some(slot) => vec![(name.clone(), slot.sender())],
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
                .map(|(n, slot)| (n.clone(), slot.sender()))
                .collect(),
        };
        let mut answer = ControlAnswer::default();
        for (name, tx) in targets {
            let (reply_tx, reply_rx) = oneshot::channel();
            let result = match tx.send((req.action.clone(), reply_tx)).await {
                Ok(()) => reply_rx
                    .await
                    .unwrap_or_else(|_| WatchAnswer::error("watch stopped")),
                Err(_) => WatchAnswer::error("watch stopped"),
            };
            answer.watches.insert(name, result);
        }
        let _ = req.reply.send(Ok(answer));
    }
}

/// What a running failover or failback tells its watch task.
enum OpMsg {
    /// A journal entry was written (its event has left already).
    Step(JournalEntry),
    /// The failover ended.
    FailoverDone(Box<Result<Journal, (Journal, FailoverError)>>),
    /// A failback step finished.
    FailbackStep(String, String),
    /// The failback ended.
    FailbackDone(Box<Result<FailbackReport, crate::failover::RunError>>),
    /// The failover (its id) is held, or a hold ended: its journal in brief.
    Hold(String, Box<FailoverSummary>),
    /// A call of the failover (its id) keeps failing: the step and the alert.
    Retrying(String, Step, String),
}

/// Sends a running failover's step events from the executor's own task.
struct StepEvents {
    notifier: Notifier,
    watch: String,
    agent_id: String,
    failover_id: String,
    /// What finishes a held failover, and what ends it, as a person types them.
    approve: String,
    abort: String,
}

impl StepEvents {
    fn send(&self, reasons: Vec<String>, detail: Value) {
        self.send_as(EventName::FailoverStep, reasons, detail);
    }

    fn send_as(&self, event: EventName, reasons: Vec<String>, detail: Value) {
        let state = State::FailingOver.as_str();
        self.notifier.notify(Event {
            reasons,
            detail: Some(detail),
            ..Event::executor(
                event,
                &self.watch,
                &self.agent_id,
                (state, state),
                Some(self.failover_id.clone()),
            )
        });
    }

    /// After each step that finished.
    fn step(&self, e: &JournalEntry) {
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

    /// A hold's news: `failover_held` (at first and every `reminder_interval`) says what is
    /// ready and the one command that finishes it; `approved` says who let it go on.
    fn hold(&self, j: &Journal, news: &HoldNews) {
        match news {
            HoldNews::Held { first } => {
                let Some(hold) = j.held() else { return };
                self.send_as(
                    EventName::FailoverHeld,
                    self.held_reasons(j, hold, *first),
                    json!({
                        "hold": HoldStatus::of(hold),
                        "first": first,
                        "dr_cache": j.plan.cache.name(),
                        "dr_endpoint": j.endpoint.as_ref().map(|(h, p)| format!("{}:{p}", h.trim_end_matches('.'))),
                        "record": j.plan.record,
                        "finish": self.approve,
                        "abort": self.abort,
                    }),
                );
            }
            HoldNews::Approved(a) => self.send_as(
                EventName::Approved,
                vec![format!(
                    "{} approved failover {} before {}: going on",
                    a.by,
                    j.plan.failover_id,
                    a.step.as_str()
                )],
                json!({ "by": a.by, "before": a.step.as_str(), "hold": j.holds.last().map(HoldStatus::of) }),
            ),
            HoldNews::Checked => {}
            HoldNews::Opened => self.send(
                vec![format!(
                    "every gate opened: failover {} goes on",
                    j.plan.failover_id
                )],
                json!({ "phase": "gates_opened", "hold": j.holds.last().map(HoldStatus::of) }),
            ),
        }
    }

    /// What `failover_held` says: what it waits for, what is ready, and the one command
    /// that finishes it (or ends it).
    fn held_reasons(&self, j: &Journal, hold: &crate::executor::Hold, first: bool) -> Vec<String> {
        let waiting = match (hold.gate.is_empty(), hold.approval) {
            (true, _) => "mode = \"prepare\": waiting for a person's approval".to_owned(),
            (false, false) => format!("gate {}", hold.answer),
            (false, true) => format!("gate {}; then a person's approval", hold.answer),
        };
        let ready = match (hold.step, &j.endpoint) {
            (Step::SwitchDns, Some((host, port))) => format!(
                "ready: the DR cache {} is built and verified at {}:{port}; {} is untouched",
                j.plan.cache.name(),
                host.trim_end_matches('.'),
                j.plan.record
            ),
            _ => format!("nothing is built yet and {} is untouched", j.plan.record),
        };
        let held_for = hold.since.elapsed().map_or(0, |d| d.as_secs());
        let finish = if hold.step == Step::SwitchDns {
            format!(
                "to finish it now: {}; to end it: {}",
                self.approve, self.abort
            )
        } else {
            format!(
                "to go on past the gate now: {}{}; to end it: {}",
                self.approve,
                if j.plan.approval {
                    " (prepare mode then holds it again before switch_dns for approval)"
                } else {
                    ""
                },
                self.abort
            )
        };
        vec![
            format!(
                "failover {} is held before {}{}: {waiting}",
                j.plan.failover_id,
                hold.step.as_str(),
                if first {
                    String::new()
                } else {
                    format!(
                        " for {}",
                        crate::text::duration(Duration::from_secs(held_for))
                    )
                },
            ),
            ready,
            finish,
        ]
    }
}

/// The failover or failback a watch is running.
struct Op {
    /// A failover or a failback.
    kind: OpKind,
    /// The failover id (failbacks get one too, for logs).
    id: String,
    /// Aborted at shutdown: the journal resumes the failover on the next start.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Op {
    /// A watch task that panics drops its operation: the executor must stop with it (its
    /// journal resumes it when the task starts again), or the restarted task would run a
    /// second one from the same journal.
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One watch's task: who it is, and its four parts, each owning what its job needs.
struct WatchTask {
    config: Arc<Config>,
    index: usize,
    name: String,
    agent_id: String,
    shutdown: CancellationToken,
    /// What it probes and how.
    probing: Probing,
    /// The engine's state and what it judges with.
    judging: Judging,
    /// The failover, failback or abort it runs, and their last results.
    operations: Operations,
    /// Where events, metrics, liveness and `/status` go.
    telling: Telling,
    /// `[watch.switch] kind = "health_check"`: the verdict it publishes; `None` for a record
    /// it rewrites itself.
    switching: Option<switch::Switching>,
}

/// A watch's probing: the probes, what they aim at, and the connections they keep.
struct Probing {
    prober: Arc<Prober>,
    interval: Duration,
    /// The active cache's probe spec: the DR cache's after a failover.
    spec: ProbeSpec,
    /// The configured primary's probe spec.
    primary: ProbeSpec,
    /// The connections `spec`'s paths keep between rounds.
    kept: Connections,
    /// The connection the old primary's direct probe keeps while the DR cache serves.
    kept_old_primary: Connections,
    witness: Witness,
    /// Where the warm standbys serve; this watch's `standby` path reports to it.
    standbys: Arc<crate::standby::Book>,
    /// The `standby` path (`[watch.dr] standby = "warm"`): the DR cache's probe spec, aimed at
    /// the standby each round, and its kept connection. Set when the task starts.
    standby: Option<(ProbeSpec, Connections)>,
}

/// A watch's judging: the engine's state, its thresholds, and what the peers say.
struct Judging {
    state: WatchState,
    params: Params,
    /// Hands states to this watch's writer task: fsync must never stall the single runtime
    /// thread that probes and serves `/healthz`. The latest state wins.
    persist: watch::Sender<WatchState>,
    /// The writer task, awaited at shutdown so the last state is on disk before exit.
    writer: tokio::task::JoinHandle<()>,
    rounds: u64,
    last_observation: Option<ObservationReport>,
    /// This agent's own vote, as peers read it: whether the last round was outage evidence,
    /// and when it was.
    vote: Option<(bool, SystemTime)>,
    /// The other agents to ask before an automatic failover; `None`: this one decides alone.
    peers: Option<Arc<Peers>>,
    /// The last ask of the peers: for `/status` and the failover events.
    last_quorum: Option<QuorumStatus>,
    /// Consecutive rounds in which the primary answered on both paths while a failover the
    /// agent started on its own was held.
    primary_ok_while_held: u32,
}

/// A watch's operations: the failover or failback it runs, and what the last ones did.
struct Operations {
    /// Built on the first failover or failback: most agents never need AWS clients.
    runner: Option<Arc<Runner>>,
    op: Option<Op>,
    ops: mpsc::UnboundedSender<OpMsg>,
    /// This agent stood down for another one: it adopts the DR cache once the record shows
    /// that the other agent's failover landed.
    following: bool,
    /// The last failover, for `/status`.
    last_failover: Option<FailoverSummary>,
    /// The last failback, for `/status`.
    last_failback: Option<FailbackStatus>,
    /// Where `valkey-dr approve` reaches this watch's held failover.
    approvals: Arc<crate::executor::Approvals>,
}

/// Where a watch tells what happens.
struct Telling {
    notifier: Notifier,
    metrics: Arc<Metrics>,
    /// Ticked after every round, for `/healthz`.
    health: Arc<Health>,
    /// Each round's status, for `/status` and systemd.
    done: mpsc::Sender<RoundDone>,
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
                tracing::error!(watch, error = %crate::text::chain(&e), "cannot save policy state")
            }
            Err(e) => tracing::error!(watch, error = %e, "policy state writer failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 23: a saved pause ending in year 10000 stopped the watch again at every start.
    #[test]
    fn a_saved_state_beyond_its_bounds_is_brought_within_them_and_said() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-a.json");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_630_400);
        let year_10000 = SystemTime::UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        let saved = WatchState {
            paused_since: Some(now - Duration::from_secs(60)),
            pause_reason: Some("CHG-7".to_owned()),
            paused_until: Some(year_10000),
            failovers: vec![year_10000, now - Duration::from_secs(3600)],
            ..WatchState::default()
        };
        store::write_json(&path, &saved).unwrap();

        let (state, moved) = load_state(&path, "a", now);
        let week = crate::control::MAX_PAUSE;
        assert_eq!(state.paused_until, Some(now + week));
        assert_eq!(state.failovers, vec![now, now - Duration::from_secs(3600)]);
        assert_eq!(state.paused_since, saved.paused_since);
        assert_eq!(state.pause_reason, saved.pause_reason);
        assert_eq!(moved.len(), 2, "{moved:?}");
        assert!(
            moved[0].starts_with("paused_until 9999-12-31T23:59:59Z"),
            "{moved:?}"
        );
        // Showing the state no longer fails.
        let _ = crate::text::rfc3339_seconds(state.paused_until.unwrap());
    }

    /// Issue 23: `/status` shows a watch's task that is down, even one that never finished
    /// a round (its entry in `watches` is missing then).
    #[tokio::test]
    async fn a_task_s_restarts_are_published_in_status() {
        let text = "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-dr\"\n";
        let config = Config::parse(text, Path::new("agent.toml"), &crate::config::ProcessEnv)
            .expect("valid");
        let (status_tx, mut status_rx) = watch::channel(StatusDocument {
            agent: agent_status(&config),
            readiness: None,
            tasks: BTreeMap::new(),
            watches: Vec::new(),
        });
        let (_done_tx, done_rx) = mpsc::channel(1);
        let (news_tx, news_rx) = mpsc::unbounded_channel();
        let health = Health::new(Duration::from_secs(5));
        let shutdown = CancellationToken::new();
        let down = crate::control::status::TaskStatus {
            last_panic: "panicked (x)".into(),
            restart_at: Some("2026-12-07T07:00:04Z".into()),
            restarts: 1,
            task: "restarting".into(),
        };
        news_tx.send(("s".to_owned(), down.clone())).unwrap();
        let publisher = supervise(&config, (done_rx, news_rx), status_tx, &health, &shutdown);
        let published = async {
            status_rx.changed().await.unwrap();
            status_rx.borrow().clone()
        };
        let doc = tokio::select! {
            () = publisher => panic!("the publisher stopped"),
            doc = tokio::time::timeout(Duration::from_secs(5), published) => doc.expect("published within 5s"),
        };
        assert_eq!(doc.tasks.get("s"), Some(&down));
        let json = serde_json::to_value(&doc).unwrap();
        assert_eq!(json["tasks"]["s"]["task"], "restarting");
        assert_eq!(json["tasks"]["s"]["last_panic"], "panicked (x)");
    }

    #[test]
    fn a_saved_state_within_its_bounds_is_loaded_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-a.json");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_630_400);
        let saved = WatchState {
            paused_since: Some(now),
            paused_until: Some(now + crate::control::MAX_PAUSE),
            last_round_at: Some(now + Duration::from_secs(30)),
            failovers: vec![now - Duration::from_secs(3600)],
            ..WatchState::default()
        };
        store::write_json(&path, &saved).unwrap();
        assert_eq!(load_state(&path, "a", now), (saved, Vec::new()));
    }

    #[test]
    fn a_saved_time_no_clock_can_hold_starts_the_watch_fresh_instead_of_stopping_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state-a.json");
        let far = r#"{"paused_since":{"secs_since_epoch":1796630400,"nanos_since_epoch":0},
            "paused_until":{"secs_since_epoch":18446744073709551615,"nanos_since_epoch":0}}"#;
        std::fs::write(&path, far).unwrap();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_630_400);
        let (state, said) = load_state(&path, "a", now);
        assert_eq!(state, WatchState::default());
        assert_eq!(said.len(), 1, "{said:?}");
        assert!(said[0].contains("starting fresh"), "{said:?}");
    }
}
