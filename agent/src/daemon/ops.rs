//! A watch's operations: failover, failback and abort (with the executor running on its
//! own task), resuming an unfinished one at start, and following another agent's.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Value, json};
use valkey_dr_policies as policies;
use valkey_dr_probes::Observation;

use crate::control::status::{
    FailbackStatus, FailoverSummary, OpKind, RetryingStatus, WatchAnswer,
};
use crate::event::EventName;
use crate::executor::api::{CacheApi as _, CacheStatus};
use crate::executor::{FailoverError, FailoverOutcome, HoldNews, Journal, JournalEntry, Step};
use crate::failover::{self, Runner, Start};
use crate::plan;

use super::*;

/// Who started a failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Trigger {
    /// The engine, every guard having passed.
    Auto,
    /// An operator (`valkey-dr failover`).
    Manual,
    /// A restart, from the journal.
    Resume,
}

impl Trigger {
    /// As logs and the `failover_started` event say it.
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Auto => "auto",
            Trigger::Manual => "manual",
            Trigger::Resume => "resume",
        }
    }
}

impl WatchTask {
    /// On start: resume an unfinished failover, or pick up where a finished one left the
    /// watch (the DR endpoint it serves from).
    pub(super) async fn restore_failover(&mut self) {
        let journal = match failover::load_journal(&self.config.agent.state_dir, &self.name) {
            Ok(j) => j,
            Err(e) => {
                let message = crate::text::chain(&e);
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
        self.operations.last_failover = Some(FailoverSummary::of(&journal));
        // It stood down for another agent before the restart: keep following that failover.
        self.operations.following = !self.judging.state.served_by_dr
            && matches!(journal.outcome, Some(FailoverOutcome::StoodDown { .. }));
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
                // A held failover the agent started on its own built its DR cache only for
                // this outage, which is over: it goes too (as when the primary recovers
                // while the agent runs). Anything else is kept for people to decide.
                let delete_dr = journal.plan.automatic && journal.held().is_some();
                self.end_by_abort(&runner, journal, reason, delete_dr).await;
                return;
            }
            tracing::warn!(watch = %self.name, failover_id = %journal.plan.failover_id, "resuming an unfinished failover from its journal");
            self.launch(runner, journal, Trigger::Resume, SystemTime::now());
            return;
        }
        if self.judging.state.served_by_dr {
            match journal.completed_endpoint() {
                Some((host, port)) => {
                    let runner = self.runner().await;
                    self.probing.spec = runner.dr_probe(&host, port);
                }
                _ => {
                    tracing::error!(watch = %self.name, "the saved state says the DR cache serves the watch, but the last journal has no completed failover; probing the configured primary")
                }
            }
        }
    }

    /// Ends the unfinished failover of `journal` on purpose: `aborted` event, and the watch
    /// leaves `failing_over`. Returns the answer for an operator.
    pub(super) async fn end_by_abort(
        &mut self,
        runner: &Runner,
        journal: Journal,
        reason: String,
        delete_dr: bool,
    ) -> WatchAnswer {
        let id = journal.plan.failover_id.clone();
        match runner.abort(journal, &reason, delete_dr).await {
            Ok((journal, done)) => {
                self.telling.metrics.set_failover_held(&self.name, false);
                self.operations.last_failover = Some(FailoverSummary::of(&journal));
                let now = SystemTime::now();
                let previous = self.judging.state.state();
                let (next, decisions) =
                    policies::failover_failed(&self.judging.state, now, &reason);
                self.apply(next, decisions, now, None, true);
                self.telling.metrics.failover_result(&self.name, "aborted");
                self.emit_from(
                    previous,
                    EventName::Aborted,
                    vec![reason.clone(), done.clone()],
                    Some(id.clone()),
                    Some(json!({ "reason": reason, "done": done })),
                );
                WatchAnswer {
                    aborted: Some(true),
                    failover_id: Some(id),
                    done: Some(done),
                    ..WatchAnswer::default()
                }
            }
            Err(e) => {
                let error = format!("could not abort failover {id}: {e}");
                tracing::error!(watch = %self.name, "{error}");
                WatchAnswer {
                    aborted: Some(false),
                    failover_id: Some(id),
                    error: Some(error),
                    ..WatchAnswer::default()
                }
            }
        }
    }

    /// `valkey-dr abort`: stops the failover in flight (at its next await point; its journal
    /// says which step it was in) or ends an unfinished journal.
    pub(super) async fn abort(&mut self, delete_dr: bool) -> WatchAnswer {
        if let Some(mut op) = self.operations.op.take_if(|op| op.kind == OpKind::Failover) {
            op.task.abort();
            let _ = (&mut op.task).await;
        }
        if self.operations.op.is_some() {
            return WatchAnswer::not_aborted("a failback is running; it is not aborted");
        }
        let journal = match failover::load_journal(&self.config.agent.state_dir, &self.name) {
            Ok(Some(j)) if j.unfinished() => j,
            Ok(_) => return WatchAnswer::not_aborted("no unfinished failover to abort"),
            Err(e) => return WatchAnswer::not_aborted(crate::text::chain(&e)),
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
    pub(super) async fn begin_failover(
        &mut self,
        trigger: Trigger,
        now: SystemTime,
    ) -> Option<(Arc<Runner>, Journal)> {
        let refuse = if let Some(op) = &self.operations.op {
            Some(format!(
                "a {} ({}) is already running",
                op.kind.as_str(),
                op.id
            ))
        } else if self.shutdown.is_cancelled() {
            Some("shutdown has begun: no failover is started now".to_owned())
        } else {
            None
        };
        if let Some(reason) = refuse {
            tracing::warn!(watch = %self.name, trigger = trigger.as_str(), "{reason}");
            self.judging.state.last_reasons = vec![reason];
            return None;
        }
        let runner = self.runner().await;
        // The journal is on disk before the state says "failing over": a crash in between
        // leaves a journal that the next start resumes.
        // In prepare mode the agent's own failover waits for a person before the switch; one
        // a person asked for (`valkey-dr failover`) is that person's decision already.
        match runner.start(
            &self.config,
            self.watch_config(),
            self.judging.state.served_by_dr,
            trigger == Trigger::Auto,
            // A warm standby that served in the last round is switched to, built by nobody.
            self.probing
                .standbys
                .ready(&self.name)
                .map(|k| (k.endpoint, k.port)),
            now,
        ) {
            Ok(Start::New(journal) | Start::Resume(journal)) => Some((runner, journal)),
            Err(e) if self.judging.state.served_by_dr => {
                tracing::warn!(watch = %self.name, trigger = trigger.as_str(), "{e}");
                self.judging.state.last_reasons = vec![e.to_string()];
                None
            }
            Err(e) => {
                let reason = format!("{e}; no failover started");
                self.telling.metrics.failover_result(&self.name, "failed");
                self.emit(EventName::FailoverFailed, vec![reason.clone()], None, None);
                self.judging.state.last_reasons = vec![reason];
                None
            }
        }
    }

    pub(super) fn launch(
        &mut self,
        runner: Arc<Runner>,
        journal: Journal,
        trigger: Trigger,
        now: SystemTime,
    ) {
        let previous = self.judging.state.state();
        let (next, decisions) = policies::failover_started(&self.judging.state, now);
        self.apply(next, decisions, now, None, true);
        let id = journal.plan.failover_id.clone();
        let resumed = journal.runs > 0;
        let trigger = if resumed { Trigger::Resume } else { trigger };
        self.emit_from(
            previous,
            EventName::FailoverStarted,
            vec![match trigger {
                Trigger::Auto => "every guard passed: failing over to the DR region".to_owned(),
                Trigger::Manual => "an operator asked for a failover".to_owned(),
                Trigger::Resume => format!("resuming failover {id} from its journal after a restart"),
            }],
            Some(id.clone()),
            Some(json!({
                "trigger": trigger.as_str(),
                "resumed": resumed,
                "plan": plan::failover_plan(&self.config, self.watch_config()),
                "done_steps": Step::ALL.iter().filter(|s| journal.done(**s)).map(|s| s.as_str()).collect::<Vec<_>>(),
            })),
        );
        self.operations.last_failover = Some(FailoverSummary::of(&journal));
        let tx = self.operations.ops.clone();
        // Step events leave from the executor's task the moment the journal has them: the
        // watch task may be inside a probe round (a whole timeout, in an outage) and would
        // hold them back.
        let steps = StepEvents {
            notifier: self.telling.notifier.clone(),
            watch: self.name.clone(),
            agent_id: self.agent_id.clone(),
            failover_id: id.clone(),
            approve: self
                .config
                .command_line(&format!("approve --watch {} --yes", self.name)),
            abort: self
                .config
                .command_line(&format!("abort --watch {} --yes --delete-dr", self.name)),
        };
        let task = tokio::spawn(async move {
            let progress = |_: &Journal, e: &JournalEntry| {
                steps.step(e);
                let _ = tx.send(OpMsg::Step(e.clone()));
            };
            let retrying_tx = tx.clone();
            let retrying_id = steps.failover_id.clone();
            let alert = |step: Step, message: &str| {
                steps.retrying(step, message);
                let _ = retrying_tx.send(OpMsg::Retrying(
                    retrying_id.clone(),
                    step,
                    message.to_owned(),
                ));
            };
            let news = |j: &Journal, news: &HoldNews| {
                steps.hold(j, news);
                let _ = tx.send(OpMsg::Hold(
                    j.plan.failover_id.clone(),
                    Box::new(FailoverSummary::of(j)),
                ));
            };
            let result = runner.failover(journal, &progress, &alert, &news).await;
            let _ = tx.send(OpMsg::FailoverDone(Box::new(result)));
        });
        self.operations.op = Some(Op {
            kind: OpKind::Failover,
            id,
            task,
        });
    }

    /// Starts a failback if the old primary has passed `rise` rounds.
    pub(super) async fn start_failback(
        &mut self,
        options: failover::FailbackOptions,
    ) -> Result<String, String> {
        if let Some(op) = &self.operations.op {
            return Err(format!(
                "a {} ({}) is already running",
                op.kind.as_str(),
                op.id
            ));
        }
        if !self.judging.state.served_by_dr {
            return Err("the primary already serves the watch: nothing to fail back".to_owned());
        }
        let rise = self.judging.params.rise();
        if self.judging.state.old_primary_successes < rise {
            return Err(format!(
                "the primary has passed {} consecutive rounds, and failback needs rise = {rise}; wait for failback_possible",
                self.judging.state.old_primary_successes
            ));
        }
        if self.shutdown.is_cancelled() {
            return Err("shutdown has begun".to_owned());
        }
        let runner = self.runner().await;
        let id = failover::new_failback_id(SystemTime::now());
        if let Some(h) = self.watch_config().switch.health_check().cloned() {
            let task = self
                .spawn_released_failback(runner, id.clone(), options, &h)
                .ok_or_else(|| "the watch's verdict cannot be published (its ballot could not be read at start): nothing to release".to_owned())?;
            self.operations.op = Some(Op {
                kind: OpKind::Failback,
                id: id.clone(),
                task,
            });
            return Ok(id);
        }
        let dr = self.probing.spec.endpoint.clone();
        let primary = self.probing.primary.endpoint.clone();
        let tx = self.operations.ops.clone();
        let fb_id = id.clone();
        let task = tokio::spawn(async move {
            let progress = |step: &str, detail: &str| {
                let _ = tx.send(OpMsg::FailbackStep(step.to_owned(), detail.to_owned()));
            };
            let result = runner
                .failback(&fb_id, &dr, &primary, options, &progress)
                .await;
            let _ = tx.send(OpMsg::FailbackDone(Box::new(result)));
        });
        self.operations.op = Some(Op {
            kind: OpKind::Failback,
            id: id.clone(),
            task,
        });
        Ok(id)
    }

    pub(super) fn on_op(&mut self, msg: OpMsg) {
        let now = SystemTime::now();
        let id = self.operations.op.as_ref().map(|op| op.id.clone());
        match msg {
            OpMsg::Step(entry) => {
                if let Some(summary) = &mut self.operations.last_failover {
                    summary.step = Some(entry.step.as_str().to_owned());
                    summary.retrying = None;
                }
                self.telling.metrics.set_failover_retrying(&self.name, None);
            }
            OpMsg::Retrying(failover_id, step, detail)
                if self
                    .operations
                    .op
                    .as_ref()
                    .is_some_and(|op| op.id == failover_id) =>
            {
                if let Some(summary) = &mut self.operations.last_failover {
                    let since = summary
                        .retrying
                        .as_ref()
                        .filter(|r| r.step == step.as_str())
                        .map_or_else(|| crate::text::rfc3339_seconds(now), |r| r.since.clone());
                    let since_at = humantime::parse_rfc3339(&since).unwrap_or(now);
                    self.telling
                        .metrics
                        .set_failover_retrying(&self.name, Some(since_at));
                    summary.retrying = Some(Box::new(RetryingStatus {
                        step: step.as_str().to_owned(),
                        since,
                        detail,
                    }));
                }
            }
            OpMsg::Retrying(..) => {}
            OpMsg::FailoverDone(result) => {
                self.operations.op = None;
                self.telling.metrics.set_failover_held(&self.name, false);
                self.telling.metrics.set_failover_retrying(&self.name, None);
                self.failover_done(*result, now);
            }
            // Only while that failover runs: a message queued before an abort must not bring
            // its hold back.
            OpMsg::Hold(failover_id, summary)
                if self
                    .operations
                    .op
                    .as_ref()
                    .is_some_and(|op| op.id == failover_id) =>
            {
                self.telling
                    .metrics
                    .set_failover_held(&self.name, summary.held.is_some());
                self.operations.last_failover = Some(*summary);
            }
            OpMsg::Hold(..) => {}
            OpMsg::FailbackStep(step, detail) => {
                self.emit(
                    EventName::FailoverStep,
                    vec![format!("failback {step}: {detail}")],
                    id,
                    Some(json!({ "step": step, "phase": "done", "detail": detail, "failback": true })),
                );
            }
            OpMsg::FailbackDone(result) => {
                self.operations.op = None;
                self.failback_done(*result, id, now);
            }
        }
        self.publish();
    }

    /// A failback's end: the state goes back to watching the primary, or the failure is
    /// told and kept for `/status`.
    fn failback_done(
        &mut self,
        result: Result<FailbackReport, crate::failover::RunError>,
        id: Option<String>,
        now: SystemTime,
    ) {
        match result {
            Ok(report) => {
                self.operations.last_failback = Some(FailbackStatus {
                    error: None,
                    id: id.clone(),
                    report: Some(report.clone()),
                    result: "completed".to_owned(),
                });
                let previous = self.judging.state.state();
                let (next, decisions) = policies::failback_completed(&self.judging.state, now);
                self.apply(next, decisions, now, None, true);
                self.probing.spec = self.probing.primary.clone();
                self.publish();
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
                let e = e.to_string();
                self.operations.last_failback = Some(FailbackStatus {
                    error: Some(e.clone()),
                    id: id.clone(),
                    report: None,
                    result: "failed".to_owned(),
                });
                self.publish();
                self.emit(
                    EventName::FailbackFailed,
                    vec![e.clone()],
                    id,
                    Some(json!({ "error": e })),
                );
            }
        }
    }

    pub(super) fn failover_done(
        &mut self,
        result: Result<Journal, (Journal, FailoverError)>,
        now: SystemTime,
    ) {
        let (journal, error) = match result {
            Ok(journal) => (journal, None),
            Err((journal, e)) => (journal, Some(e)),
        };
        let timings = journal.timings();
        for (step, d) in &timings {
            self.telling.metrics.failover_step(&self.name, step, *d);
        }
        let steps_ms: BTreeMap<_, _> = timings
            .iter()
            .map(|(k, v)| (*k, v.as_millis() as u64))
            .collect();
        let previous = self.judging.state.state();
        self.operations.last_failover = Some(FailoverSummary::of(&journal));
        let settled = failover::settle(&self.judging.state, &journal, error.as_ref(), now);
        self.apply(settled.next, settled.decisions, now, None, true);
        let (result, event, reasons, detail) = match (error, settled.reason) {
            (Some(e), Some(reason)) => self.failover_ended(&journal, e, reason, steps_ms),
            _ => self.failover_completed(&journal, steps_ms),
        };
        self.telling.metrics.failover_result(&self.name, result);
        // `/status` shows the outcome before anyone hears of it: a person or a script that
        // reacts to the event and reads `/status` sees the failover ended, not running.
        self.operations.op = None;
        self.publish();
        self.emit_from(
            previous,
            event,
            reasons,
            Some(journal.plan.failover_id.clone()),
            Some(detail),
        );
    }

    /// A failover that completed: the watch now probes the DR cache.
    fn failover_completed(
        &mut self,
        journal: &Journal,
        steps_ms: BTreeMap<&'static str, u64>,
    ) -> (&'static str, EventName, Vec<String>, Value) {
        if let (Some((host, port)), Some(runner)) = (&journal.endpoint, &self.operations.runner) {
            self.probing.spec = runner.dr_probe(host, *port);
        }
        self.operations.following = false;
        // From the journal, not from now: this message may have waited for a probe round.
        let total_ms = journal
            .started_at()
            .zip(journal.entries.last().map(|e| e.at))
            .and_then(|(first, last)| last.duration_since(first).ok())
            .map(|d| d.as_millis() as u64);
        let reason = format!(
            "{} now points at the DR cache {} ({})",
            journal.plan.record,
            journal.plan.cache.name(),
            self.probing.spec.endpoint
        );
        let detail = json!({
            "endpoint": self.probing.spec.endpoint,
            "port": self.probing.spec.port,
            "cache": journal.plan.cache.name(),
            "steps_ms": steps_ms,
            "total_ms": total_ms,
            "runs": journal.runs,
        });
        (
            "completed",
            EventName::FailoverCompleted,
            vec![reason],
            detail,
        )
    }

    /// A failover that stood down, was aborted by a gate, or failed: its result label, its
    /// event, and what the event says.
    fn failover_ended(
        &mut self,
        journal: &Journal,
        error: FailoverError,
        reason: String,
        steps_ms: BTreeMap<&'static str, u64>,
    ) -> (&'static str, EventName, Vec<String>, Value) {
        let record = &journal.plan.record;
        match error {
            FailoverError::StoodDown { holder } => {
                // The other agent is failing over: once the record shows its DR cache, this
                // agent follows it instead of reporting drift.
                self.operations.following = true;
                let follows = "this agent follows once the record points at the DR cache";
                let detail = json!({ "holder": holder });
                (
                    "stood_down",
                    EventName::StoodDown,
                    vec![reason, follows.to_owned()],
                    detail,
                )
            }
            FailoverError::GateAborted { .. } => {
                let untouched = if journal.done(Step::Provision) {
                    format!(
                        "{record} was not changed; the DR cache {} this failover built is still running (and billed): delete it when it is not needed",
                        journal.plan.cache.name()
                    )
                } else {
                    format!("{record} was not changed and nothing was built")
                };
                let detail =
                    json!({ "reason": reason, "done": untouched, "record_untouched": true });
                (
                    "aborted",
                    EventName::Aborted,
                    vec![reason, untouched],
                    detail,
                )
            }
            e => {
                let record_untouched = !journal.done(Step::SwitchDns);
                let what = if record_untouched {
                    format!("{record} was not changed")
                } else {
                    format!("{record} already points at the DR cache")
                };
                let detail = json!({
                    "step": failover::failed_step(journal),
                    "error": e.to_string(),
                    "own_side": matches!(e, FailoverError::OwnSide { .. }),
                    "record_untouched": record_untouched,
                    "steps_ms": steps_ms,
                });
                (
                    "failed",
                    EventName::FailoverFailed,
                    vec![reason, what],
                    detail,
                )
            }
        }
    }

    /// After standing down: adopt the DR cache once the record points at it and it is
    /// available (the other agent's failover landed).
    pub(super) async fn follow(&mut self, o: &Observation, now: SystemTime) {
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
        self.operations.following = false;
        let previous = self.judging.state.state();
        let (next, decisions) = policies::failover_completed(&self.judging.state, now);
        self.apply(next, decisions, now, None, true);
        self.probing.spec = runner.dr_probe(&host, port);
        self.emit_from(
            previous,
            EventName::FailoverCompleted,
            vec![format!(
                "another agent's failover landed: {} points at the DR cache {name}; following it",
                self.probing.spec.record
            )],
            None,
            Some(json!({ "endpoint": self.probing.spec.endpoint, "port": port, "cache": name, "by_another_agent": true })),
        );
    }
}
