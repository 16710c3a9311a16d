//! A watch's task: its schedule of probe rounds, the engine's verdict on each, and the
//! operator's control requests.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;
use valkey_dr_policies::{self as policies, Decision, Event as PolicyEvent, WatchState};
use valkey_dr_probes::{ErrorKind, PathKind, PathResult};

use crate::check::ObservationReport;
use crate::config::WatchConfig;
use crate::control::ControlAction;
use crate::control::status::{OpKind, PauseStatus, WatchAnswer};
use crate::failover::Runner;

use super::ops::Trigger;
use super::*;

impl Probing {
    /// One round on the active cache's paths, on their kept connections; with
    /// `old_primary`, the old primary's direct path too (on its own kept connection); and,
    /// while the primary serves, the warm standby's `standby` path (on its own).
    async fn observe(
        &mut self,
        old_primary: bool,
    ) -> (valkey_dr_probes::Observation, Option<policies::PathStatus>) {
        let Probing {
            prober,
            spec,
            kept,
            primary,
            kept_old_primary,
            standbys,
            standby,
            ..
        } = self;
        let standby_round = async {
            let (standby_spec, standby_kept) = standby.as_mut()?;
            let known = (!old_primary)
                .then(|| standbys.known(&spec.watch))
                .flatten();
            let Some(known) = known else {
                // Not known yet, or it is the active cache now (its direct path probes it).
                *standby_kept = Connections::default();
                standbys.not_probed(&spec.watch);
                return None;
            };
            standby_spec.endpoint = known.endpoint;
            standby_spec.port = known.port;
            let result = prober.standby_kept(standby_spec, standby_kept).await;
            standbys.probed(&spec.watch, result.error.as_ref().map(|e| e.to_string()));
            Some(result)
        };
        let ((mut observation, old), standby_path) = if old_primary {
            let ((o, p), s) = tokio::join!(
                async {
                    tokio::join!(
                        prober.round_kept(spec, kept),
                        prober.direct_kept(primary, kept_old_primary)
                    )
                },
                standby_round
            );
            ((o, Some(path_status(Some(&p)))), s)
        } else {
            *kept_old_primary = Connections::default();
            let (o, s) = tokio::join!(prober.round_kept(spec, kept), standby_round);
            ((o, None), s)
        };
        observation.paths.extend(standby_path);
        (observation, old)
    }
}

impl WatchTask {
    pub(super) async fn run(
        mut self,
        mut control: mpsc::Receiver<(ControlAction, oneshot::Sender<WatchAnswer>)>,
        mut ops: mpsc::UnboundedReceiver<OpMsg>,
    ) {
        let shutdown = self.shutdown.clone();
        // Boxed, like the round: its future is large and needed once.
        Box::pin(self.restore_failover()).await;
        if self.watch_config().dr.standby == crate::config::StandbyMode::Warm {
            let dr = crate::spec::dr_spec(&self.config, self.watch_config(), &self.probing.primary)
                .await;
            self.probing.standby = Some((dr, Connections::default()));
        }
        if let Some(h) = self.watch_config().switch.health_check().cloned() {
            self.start_switching(&h).await;
        }
        // A fixed-rate schedule: the next round is due one interval after the previous one
        // was *due*, not after it finished, and a round that overruns skips the missed ticks
        // instead of bursting to catch up.
        let mut ticker = tokio::time::interval(self.probing.interval);
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
                    let answer = Box::pin(self.control(action)).await;
                    let _ = reply.send(answer);
                }
                Some(msg) = ops.recv() => self.on_op(msg),
                tick = ticker.tick() => {
                    if stall_after.is_some_and(|n| self.judging.rounds >= n) {
                        tracing::warn!(watch = %self.name, "test hook: stalling the loop");
                        shutdown.cancelled().await;
                        break;
                    }
                    // A shutdown that begins mid-round abandons the round: its result would
                    // be acted on by nobody.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => break,
                        // Boxed: a round's future (every path's steps, the quorum, a
                        // failover's start) is tens of KiB; held inline it would stay in
                        // every watch's task between rounds, where it is boxed only while
                        // the round runs.
                        _ = Box::pin(self.round(anchor.1 + tick.duration_since(anchor.0))) => {}
                    }
                }
            }
        }
        // The last state goes through the writer like every other, so it cannot be overtaken
        // by an older write still in flight; then the writer is given a bounded time to finish.
        // A failover in flight stops here; its journal resumes it on the next start.
        if let Some(op) = self.operations.op.take() {
            op.task.abort();
            tracing::warn!(watch = %self.name, failover_id = %op.id, "{} interrupted by shutdown; the journal resumes it on the next start", op.kind.as_str());
        }
        let WatchTask {
            judging:
                Judging {
                    persist,
                    writer,
                    state,
                    ..
                },
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

    pub(super) async fn round(&mut self, now: SystemTime) {
        // A pause whose end has come ends before the round, so this round may act.
        if let Some((next, decisions)) = policies::expire_pause(&self.judging.state, now) {
            self.apply(next, decisions, now, None, true);
        }
        // While the DR cache serves the watch, the old primary's own endpoint is probed too,
        // so that people hear when failback becomes possible.
        let with_old_primary = self.judging.state.served_by_dr && self.operations.op.is_none();
        let (observation, old_primary) = self.probing.observe(with_old_primary).await;
        if self.operations.following {
            self.follow(&observation, now).await;
        }
        self.judging.rounds += 1;
        self.telling.health.tick();
        if Box::pin(self.observe_switch(&observation, now)).await {
            self.publish();
            return;
        }
        let dns = path_status(observation.path(PathKind::Dns));
        let direct = path_status(observation.path(PathKind::Direct));
        let witness = self.witness(&dns, &direct).await;
        // Boxed, and awaited only in the rare round that ends a hold: the usual round pays
        // for a counter.
        if self.primary_outlived_hold(&dns, &direct) && Box::pin(self.end_held_failover()).await {
            return;
        }
        let input = policies::Observation {
            dns,
            direct,
            drift: observation.drift().map(str::to_owned),
            witness,
            old_primary,
        };
        let (next, decisions) = self.judge(&input, now).await;
        self.telling.metrics.record_observation(&observation);
        let report = ObservationReport::of(&observation);
        // Events carry the observation; a quiet round (the usual one) needs no copy of it.
        let event_observation = (!decisions.is_empty()).then(|| report.to_json());
        self.judging.last_observation = Some(report);
        self.act(next, decisions, now, event_observation).await;
        Box::pin(self.cast(&input, now)).await;
        let _ = self
            .telling
            .done
            .send(RoundDone {
                watch: self.name.clone(),
                status: self.status(),
                summary: self.summary(&observation),
            })
            .await;
    }

    /// The witness matters only when a path fails; a round where both paths answer is
    /// itself proof that the agent reaches the network, and skipping the call keeps the
    /// agent's footprint (and its AWS API use) small.
    async fn witness(
        // `&mut`: the task is `Send` but not `Sync` (its kept connections), and this awaits.
        &mut self,
        dns: &policies::PathStatus,
        direct: &policies::PathStatus,
    ) -> policies::Witness {
        if dns.failure().is_none() && direct.failure().is_none() {
            return policies::Witness::Unneeded;
        }
        let verdict = self.probing.witness.check().await;
        let metrics = &self.telling.metrics;
        match &verdict {
            policies::Witness::Ok => metrics.set_witness_success(&self.name, true),
            policies::Witness::Failed(_) | policies::Witness::Denied(_) => {
                metrics.set_witness_success(&self.name, false);
            }
            _ => {}
        }
        verdict
    }

    /// The engine's verdict on `input`. With peers, a failover (or the intent an alert-only
    /// agent announces) also needs the quorum: ask them, then judge the same round again
    /// with their answer.
    async fn judge(
        &mut self,
        input: &policies::Observation,
        now: SystemTime,
    ) -> (WatchState, Vec<Decision>) {
        let by_health_checks = self.by_health_checks();
        let j = &mut self.judging;
        let (next, decisions) = policies::step(&j.state, input, now, &j.params);
        // An agent whose failover failed on its own side votes no `down` for the rest of
        // the episode: it cannot tell its own fault from the cache's.
        j.vote = Some((
            policies::is_outage_evidence(input) && next.own_side_failure.is_none(),
            now,
        ));
        let wants_quorum = decisions.iter().any(|d| {
            d.event == PolicyEvent::FailoverIntent
                || (d.event == PolicyEvent::FailoverBlocked && d.would_fail_over())
        });
        // A health-check switch asks no peer: the calculated health check counts the agents.
        let asks = wants_quorum && !by_health_checks;
        let Some(peers) = j.peers.clone().filter(|_| asks) else {
            return (next, decisions);
        };
        let window = self.probing.interval * self.judging.params.fall;
        let tally = peers.ask(&self.name, window).await;
        let j = &mut self.judging;
        j.last_quorum = Some(tally.status(now));
        policies::step_with_quorum(&j.state, input, now, &j.params, &tally.quorum())
    }

    /// Applies the verdict. The journal goes to disk before the state that spends the
    /// engine's intent: a crash in between then leaves a journal that the next start
    /// resumes, never a spent intent and no failover for the rest of the outage. An intent
    /// that cannot start (shutdown, a journal that cannot be written) is not persisted
    /// either, so a restart judges afresh.
    async fn act(
        &mut self,
        next: WatchState,
        decisions: Vec<Decision>,
        now: SystemTime,
        observation: Option<Value>,
    ) {
        // A health-check switch starts nothing: its verdict is cast after the round.
        let intent = !self.by_health_checks()
            && decisions
                .iter()
                .any(|d| d.event == PolicyEvent::FailoverIntent);
        let begun = if intent {
            self.begin_failover(Trigger::Auto, now).await
        } else {
            None
        };
        self.apply(
            next,
            decisions,
            now,
            observation,
            !intent || begun.is_some(),
        );
        if let Some((runner, journal)) = begun {
            test_hooks::crash_after_intent().await;
            self.launch(runner, journal, Trigger::Auto, now);
        }
    }

    /// A failover the agent started on its own and that is held (gates, or prepare mode's
    /// approval), or that waits at `lease` (on Route 53's API, or on another agent's lease),
    /// is ended once the primary answers on both paths for `rise` rounds: the outage it was
    /// for is over, and a gate that opens, an approval given on a stale page, Route 53 coming
    /// back or a lease handed over later must not move the record away from a healthy
    /// primary. Nothing has touched the record before `switch_dns`. Counts those rounds;
    /// whether this one is the `rise`th.
    fn primary_outlived_hold(
        &mut self,
        dns: &policies::PathStatus,
        direct: &policies::PathStatus,
    ) -> bool {
        let held = self
            .operations
            .op
            .as_ref()
            .is_some_and(|op| op.kind == OpKind::Failover)
            && self.operations.last_failover.as_ref().is_some_and(|f| {
                f.automatic
                    && (f.held.is_some() || f.retrying.as_ref().is_some_and(|r| r.step == "lease"))
            });
        if !held || dns.failure().is_some() || direct.failure().is_some() {
            self.judging.primary_ok_while_held = 0;
            return false;
        }
        self.judging.primary_ok_while_held += 1;
        if self.judging.primary_ok_while_held < self.judging.params.rise() {
            return false;
        }
        self.judging.primary_ok_while_held = 0;
        true
    }

    /// Ends the held failover [`Self::primary_outlived_hold`] found outlived, deleting the DR
    /// cache it built (only one this failover built). Returns whether it ended one.
    async fn end_held_failover(&mut self) -> bool {
        let Some(op) = self.operations.op.take() else {
            return false;
        };
        op.task.abort();
        let journal = match crate::failover::load_journal(&self.config.agent.state_dir, &self.name)
        {
            Ok(Some(j)) if j.unfinished() => j,
            _ => return false,
        };
        let runner = self.runner().await;
        let reason = format!(
            "failover {} was held or waiting before the switch, and the primary answers PING/SET/GET on both paths again ({} rounds): not switching",
            journal.plan.failover_id,
            self.judging.params.rise()
        );
        tracing::warn!(watch = %self.name, "{reason}");
        self.end_by_abort(&runner, journal, reason, true).await;
        self.publish();
        true
    }

    pub(super) async fn control(&mut self, action: ControlAction) -> WatchAnswer {
        let now = SystemTime::now();
        let (next, decisions) = match action {
            ControlAction::Pause {
                reason,
                until,
                origin,
            } => policies::pause(
                &self.judging.state,
                now,
                &policies::PauseRequest {
                    reason,
                    until,
                    origin,
                },
            ),
            ControlAction::Resume { origin: None } => policies::resume(&self.judging.state, now),
            ControlAction::Resume {
                origin: Some(origin),
            } => policies::resume_relayed(&self.judging.state, now, &origin),
            ControlAction::Failover if self.by_health_checks() => {
                return WatchAnswer::not_started(format!(
                    "watch {} switches through Route 53's health checks: the record moves when a quorum of agents publish 1, and one agent cannot move it; with mode = \"prepare\", `valkey-dr approve` on each agent of a quorum casts their votes",
                    self.name
                ));
            }
            ControlAction::Release { origin } => {
                let answer = Box::pin(self.release(origin)).await;
                self.publish();
                return answer;
            }
            ControlAction::Failover => {
                let answer = match self.begin_failover(Trigger::Manual, now).await {
                    Some((runner, journal)) => {
                        let id = journal.plan.failover_id.clone();
                        self.launch(runner, journal, Trigger::Manual, now);
                        WatchAnswer {
                            started: Some(true),
                            failover_id: Some(id),
                            ..WatchAnswer::default()
                        }
                    }
                    None => WatchAnswer::not_started(self.judging.state.last_reasons.join("; ")),
                };
                self.publish();
                return answer;
            }
            ControlAction::Abort { delete_dr } => {
                let answer = self.abort(delete_dr).await;
                self.publish();
                return answer;
            }
            ControlAction::Approve { by } => {
                // The admin server answers this itself, straight from the executor.
                return self
                    .operations
                    .approvals
                    .approve(&self.name, by)
                    .await
                    .into();
            }
            ControlAction::Failback {
                delete_dr,
                keep_data,
            } => {
                let options = crate::failover::FailbackOptions {
                    delete_dr,
                    keep_data,
                };
                let answer = match self.start_failback(options).await {
                    Ok(id) => WatchAnswer {
                        started: Some(true),
                        failback_id: Some(id),
                        ..WatchAnswer::default()
                    },
                    Err(e) => WatchAnswer::not_started(e),
                };
                self.publish();
                return answer;
            }
        };
        self.apply(next, decisions, now, None, true);
        self.publish();
        WatchAnswer {
            state: Some(self.judging.state.state().as_str().to_owned()),
            paused: Some(self.judging.state.is_paused()),
            pause: Some(PauseStatus::of(&self.judging.state)),
            ..WatchAnswer::default()
        }
    }

    /// `/status` shows a control action at once, not after the next round.
    pub(super) fn publish(&self) {
        let _ = self.telling.done.try_send(RoundDone {
            watch: self.name.clone(),
            status: self.status(),
            summary: format!("{}: {}", self.name, self.judging.state.state().as_str()),
        });
    }

    /// Takes the engine's new state: persists it when it matters (and `persist` allows),
    /// updates metrics, and sends every decision to the notifiers.
    pub(super) fn apply(
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
                || next.state() != self.judging.state.state()
                || next.is_paused() != self.judging.state.is_paused());
        self.judging.state = next;
        if persist {
            self.judging
                .persist
                .send_replace(self.judging.state.clone());
        }
        self.telling
            .metrics
            .set_state(&self.name, self.judging.state.state());
        self.telling.metrics.set_paused(
            &self.name,
            self.judging.state.is_paused(),
            self.judging.state.paused_until,
        );
        self.telling.metrics.set_consecutive_failures(
            &self.name,
            "dns",
            self.judging.state.dns.consecutive_failures,
        );
        self.telling.metrics.set_consecutive_failures(
            &self.name,
            "direct",
            self.judging.state.direct.consecutive_failures,
        );
        for d in decisions {
            self.telling
                .notifier
                .notify(self.event(d, now, observation.clone()));
        }
    }

    pub(super) fn watch_config(&self) -> &WatchConfig {
        &self.config.watches[self.index]
    }

    pub(super) async fn runner(&mut self) -> Arc<Runner> {
        if let Some(r) = &self.operations.runner {
            return r.clone();
        }
        let runner = Arc::new(
            Runner::new(
                &self.config,
                self.watch_config(),
                self.probing.prober.clone(),
                self.probing.primary.clone(),
                self.operations.approvals.clone(),
            )
            .await,
        );
        self.operations.runner = Some(runner.clone());
        runner
    }
}

pub(super) fn path_status(path: Option<&PathResult>) -> policies::PathStatus {
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
pub(super) mod test_hooks {
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
