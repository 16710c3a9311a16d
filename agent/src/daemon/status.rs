//! What a watch tells people: its events (the engine's decisions and the executor's
//! progress), its `/status` block and its one-line summary.

use std::time::SystemTime;

use serde_json::{Value, json};
use valkey_dr_policies::{Decision, Event as PolicyEvent, State};
use valkey_dr_probes::Observation;

use crate::control::status::{PathStreaks, PauseStatus, RunningOp, VoteRecord, WatchStatus};
use crate::event::{Event, EventName};

use super::*;

impl WatchTask {
    /// Sends an executor event (they are not the engine's decisions).
    pub(super) fn emit(
        &self,
        event: EventName,
        reasons: Vec<String>,
        failover_id: Option<String>,
        detail: Option<Value>,
    ) {
        self.emit_from(
            self.judging.state.state(),
            event,
            reasons,
            failover_id,
            detail,
        );
    }

    /// [`Self::emit`] for an event that moved the watch from `previous`.
    pub(super) fn emit_from(
        &self,
        previous: State,
        event: EventName,
        reasons: Vec<String>,
        failover_id: Option<String>,
        detail: Option<Value>,
    ) {
        self.telling.notifier.notify(Event {
            reasons,
            detail,
            ..Event::executor(
                event,
                &self.name,
                &self.agent_id,
                (previous.as_str(), self.judging.state.state().as_str()),
                failover_id,
            )
        });
    }

    pub(super) fn event(&self, d: Decision, now: SystemTime, observation: Option<Value>) -> Event {
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
                    "plan": plan::failover_plan(&self.config, self.watch_config()),
                    "guards": guards,
                    "quorum": self.judging.last_quorum,
                }));
            } else {
                for g in d.blocking_guards() {
                    reasons.push(format!("blocked by {}: {}", g.guard.as_str(), g.detail));
                }
                // `fails_over`: an intent in auto-failover mode, which the executor carries out.
                detail = Some(json!({
                    "would_fail_over": false,
                    "fails_over": d.event == PolicyEvent::FailoverIntent,
                    "plan": plan::failover_plan(&self.config, self.watch_config()),
                    "guards": guards,
                    "quorum": self.judging.last_quorum,
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

    pub(super) fn status(&self) -> WatchStatus {
        let s = &self.judging.state;
        WatchStatus {
            active_endpoint: format!("{}:{}", self.probing.spec.endpoint, self.probing.spec.port),
            consecutive_failures: s.consecutive_failures,
            consecutive_successes: s.consecutive_successes,
            last_failback: self.operations.last_failback.clone(),
            last_failover: self.operations.last_failover.clone(),
            last_observation: self.judging.last_observation.clone(),
            name: self.name.clone(),
            old_primary_successes: s.old_primary_successes,
            pause: PauseStatus::of(s),
            paused: s.is_paused(),
            paths: PathStreaks::of(s),
            quorum: self.judging.last_quorum.clone(),
            reasons: s.last_reasons.clone(),
            rounds: self.judging.rounds,
            running: self.operations.op.as_ref().map(|op| RunningOp {
                id: op.id.clone(),
                kind: op.kind,
            }),
            served_by_dr: s.served_by_dr,
            state: s.state().as_str().to_owned(),
            vote: self.judging.vote.map(|(evidence, at)| VoteRecord {
                outage_evidence: evidence,
                round_at_ms: at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                window_ms: (self.probing.interval * self.judging.params.fall).as_millis() as u64,
            }),
            switch: self.switch_status(),
        }
    }

    pub(super) fn summary(&self, o: &Observation) -> String {
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
            self.judging.state.state().as_str(),
            paths.join(", ")
        )
    }
}
