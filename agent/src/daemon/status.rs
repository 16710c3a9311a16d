//! What a watch tells people: its events (the engine's decisions and the executor's
//! progress), its `/status` block and its one-line summary.

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde_json::{Value, json};
use valkey_dr_policies::{Decision, Event as PolicyEvent, State};
use valkey_dr_probes::Observation;

use crate::event::{Event, EventName};
use crate::executor::{Journal, Step};

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
        self.emit_from(self.state.state(), event, reasons, failover_id, detail);
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
                    "plan": plan::failover_plan(&self.config, self.watch_config()),
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

    pub(super) fn status_json(&self) -> Value {
        let s = &self.state;
        json!({
            "name": self.name,
            "state": s.state().as_str(),
            "paused": s.is_paused(),
            "pause": pause_json(s),
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
        "approval_required": j.plan.approval,
        "automatic": j.plan.automatic,
        "held": j.held().map(hold_json),
        "holds": j.holds.iter().map(hold_json).collect::<Vec<_>>(),
    })
}

/// One hold of a failover, for `/status`, events and `history`.
pub fn hold_json(h: &crate::executor::Hold) -> Value {
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    json!({
        "before": h.step.as_str(),
        "since": time(h.since),
        "gate": (!h.gate.is_empty()).then_some(&h.gate),
        "answer": h.answer,
        "approval": h.approval,
        "checks": h.checks,
        "ended": h.ended.map(time),
        "how": h.how,
        "approved_by": h.approved_by,
        "held_s": h.ended.unwrap_or_else(SystemTime::now).duration_since(h.since).map_or(0, |d| d.as_secs()),
    })
}

/// A pause as `/status` shows it: since when, why, and until when (`null` when not paused).
pub fn pause_json(s: &valkey_dr_policies::WatchState) -> Value {
    let time = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    match s.paused_since {
        None => Value::Null,
        Some(since) => json!({
            "since": time(since),
            "reason": s.pause_reason,
            "until": s.paused_until.map(time),
        }),
    }
}
