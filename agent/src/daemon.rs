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
use valkey_dr_policies::{self as policies, Decision, Event as PolicyEvent, Params, WatchState};
use valkey_dr_probes::{ErrorKind, Observation, PathKind, ProbeSpec, Prober, ResolverSettings};

use crate::admin::{self, AdminState, ControlAction, ControlRequest, Health, Metrics};
use crate::check;
use crate::config::{Config, WatchConfig};
use crate::event::Event;
use crate::notify::Notifier;
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
    /// The admin address is taken or not ours.
    #[error("cannot listen on admin_listen {address}")]
    Admin {
        /// The configured address.
        address: std::net::SocketAddr,
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

fn state_file(state_dir: &Path, watch: &str) -> PathBuf {
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
    let listener = TcpListener::bind(config.agent.admin_listen)
        .await
        .map_err(|source| DaemonError::Admin {
            address: config.agent.admin_listen,
            source,
        })?;
    let admin_address = listener.local_addr().map_err(|source| DaemonError::Admin {
        address: config.agent.admin_listen,
        source,
    })?;
    store::write_json(
        &admin_file(&state_dir),
        &json!({ "address": admin_address.to_string(), "pid": std::process::id() }),
    )?;

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
    let admin_task = tokio::spawn(admin::serve(
        listener,
        AdminState {
            metrics: metrics.clone(),
            health: health.clone(),
            status: status_rx,
            control: control_tx,
        },
        admin_shutdown.clone(),
    ));
    tracing::info!(
        agent_id = %config.agent.id,
        mode = config.agent.mode.as_str(),
        watches = config.watches.len(),
        admin = %admin_address,
        "valkey-dr started"
    );

    let (done_tx, done_rx) = mpsc::channel(64);
    let mut watch_controls = BTreeMap::new();
    let mut tasks = Vec::new();
    for (index, (w, spec)) in config.watches.iter().zip(specs).enumerate() {
        let path = state_file(&state_dir, &w.name);
        let state = load_state(&path, &w.name);
        let (persist, persisted) = watch::channel(state.clone());
        let writer = tokio::spawn(write_states(path.clone(), w.name.clone(), persisted));
        let (ctl_tx, ctl_rx) = mpsc::channel(4);
        watch_controls.insert(w.name.clone(), ctl_tx);
        let task = WatchTask {
            name: w.name.clone(),
            agent_id: config.agent.id.clone(),
            interval: w.probe.interval,
            params: params(&config, w),
            plan: plan::failover_plan(&config, w),
            spec,
            prober: prober.clone(),
            witness: Witness::new(&config, index),
            state,
            persist,
            writer,
            metrics: metrics.clone(),
            health: health.clone(),
            notifier: notifier.clone(),
            done: done_tx.clone(),
            rounds: 0,
            last_observation: None,
        };
        tasks.push(tokio::spawn(task.run(ctl_rx, shutdown.clone())));
    }
    drop(done_tx);
    let control = tokio::spawn(dispatch_control(control_rx, watch_controls));
    supervise(&config, done_rx, status_tx, &health, &shutdown).await;

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
    tokio::select! {
        _ = notify_task => {}
        _ = &mut grace => tracing::warn!("notifications still queued at shutdown were dropped"),
    }
    admin_shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(2), admin_task).await;
    let _ = std::fs::remove_file(admin_file(&state_dir));
    tracing::info!("stopped");
    Ok(())
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
    health: &Health,
    shutdown: &CancellationToken,
) {
    let mut watches: BTreeMap<String, (Value, String)> = BTreeMap::new();
    let mut ready = false;
    let mut dirty = false;
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

struct WatchTask {
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
}

impl WatchTask {
    async fn run(
        mut self,
        mut control: mpsc::Receiver<(ControlAction, oneshot::Sender<Value>)>,
        shutdown: CancellationToken,
    ) {
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
                    let _ = reply.send(self.control(action));
                }
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
        let observation = self.prober.round(&self.spec).await;
        self.rounds += 1;
        self.health.tick();
        let dns = path_status(&observation, PathKind::Dns);
        let direct = path_status(&observation, PathKind::Direct);
        // The witness matters only when a path fails; a round where both paths answer is
        // itself proof that the agent reaches the network, and skipping the call keeps the
        // agent's footprint (and its AWS API use) small.
        let witness = if dns.failure().is_some() || direct.failure().is_some() {
            self.witness.check().await
        } else {
            policies::Witness::Ok
        };
        let input = policies::Observation {
            dns,
            direct,
            drift: observation.drift().map(str::to_owned),
            witness,
            old_primary: None,
        };
        let (next, decisions) = policies::step(&self.state, &input, now, &self.params);
        self.metrics.record_observation(&observation);
        let observation_json = check::observation_json(&observation);
        self.last_observation = Some(observation_json.clone());
        self.apply(next, decisions, now, Some(observation_json));
        let _ = self
            .done
            .send(RoundDone {
                watch: self.name.clone(),
                status: self.status_json(),
                summary: self.summary(&observation),
            })
            .await;
    }

    fn control(&mut self, action: ControlAction) -> Value {
        let now = SystemTime::now();
        let (next, decisions) = match action {
            ControlAction::Pause => policies::pause(&self.state, now),
            ControlAction::Resume => policies::resume(&self.state, now),
        };
        self.apply(next, decisions, now, None);
        // /status shows the pause at once, not after the next round.
        let _ = self.done.try_send(RoundDone {
            watch: self.name.clone(),
            status: self.status_json(),
            summary: format!("{}: {}", self.name, self.state.state().as_str()),
        });
        json!({ "state": self.state.state().as_str(), "paused": self.state.is_paused() })
    }

    /// Takes the engine's new state: persists it when it matters, updates metrics, and sends
    /// every decision to the notifiers.
    fn apply(
        &mut self,
        next: WatchState,
        decisions: Vec<Decision>,
        now: SystemTime,
        observation: Option<Value>,
    ) {
        // Persist on anything a restart must not forget (a state change, an announced event,
        // a pause); a healthy steady state is not rewritten every round.
        let persist = !decisions.is_empty()
            || next.state() != self.state.state()
            || next.is_paused() != self.state.is_paused();
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

    fn event(&self, d: Decision, now: SystemTime, observation: Option<Value>) -> Event {
        let mut reasons = d.reasons.clone();
        let mut detail = None;
        let mut event = d.event.as_str().to_owned();
        if d.event == PolicyEvent::FailoverBlocked || d.event == PolicyEvent::FailoverIntent {
            let guards = serde_json::to_value(&d.guards).unwrap_or(Value::Null);
            if d.would_fail_over() {
                // Alert-only: the only thing stopping the failover is the mode. Say so as a
                // failover intent with the plan, so people can run it by hand.
                event = PolicyEvent::FailoverIntent.as_str().to_owned();
                reasons.insert(
                    0,
                    "alert-only mode: would fail over now; detail.plan holds the calls it would make"
                        .into(),
                );
                detail =
                    Some(json!({ "would_fail_over": true, "plan": self.plan, "guards": guards }));
            } else {
                for g in d.blocking_guards() {
                    reasons.push(format!("blocked by {}: {}", g.guard.as_str(), g.detail));
                }
                detail =
                    Some(json!({ "would_fail_over": false, "plan": self.plan, "guards": guards }));
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
            of: d.of.map(|e| e.as_str().to_owned()),
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
            "last_observation": self.last_observation,
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

fn path_status(o: &Observation, kind: PathKind) -> policies::PathStatus {
    match o.path(kind).and_then(|p| p.error.as_ref()) {
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
        ] {
            assert_eq!(failure_kind(kind).as_str(), kind.as_str());
        }
    }
}
