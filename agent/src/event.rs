//! The notification event: what people (and their tools) are told, in one stable shape.
//!
//! The same struct feeds the log line, the webhook JSON and the command notifier's
//! environment and stdin, so that every sink says the same thing.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// One event about one watch.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// `suspect`, `down`, `recovered`, `degraded`, `isolated`, `failover_intent`,
    /// `failover_blocked`, `failback_possible`, `config_error`, `paused`, `resumed`,
    /// `reminder`, and (executor) `failover_started`, `failover_step`, `failover_completed`,
    /// `failover_failed`, `stood_down`, `failback_completed`.
    pub event: String,
    /// The watch name.
    pub watch: String,
    /// The watch's state after the event.
    pub state: String,
    /// The state before it.
    pub previous_state: String,
    /// Why, in words, with values.
    pub reasons: Vec<String>,
    /// The probe round that caused it, when one did.
    pub observation: Option<Value>,
    /// The agent that saw it.
    pub agent_id: String,
    /// When (wall clock).
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    /// For `reminder`: the event it repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub of: Option<String>,
    /// The failover this belongs to, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_id: Option<String>,
    /// Extra structured detail (the plan of a `failover_intent`, blocking guards, step timings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
}

impl Event {
    /// An event of the executor (a failover's or failback's own progress, not a decision of
    /// the engine), sent now: no observation, nothing repeated; reasons and detail empty.
    pub fn executor(
        event: &str,
        watch: &str,
        agent_id: &str,
        (previous_state, state): (&str, &str),
        failover_id: Option<String>,
    ) -> Event {
        Event {
            event: event.to_owned(),
            watch: watch.to_owned(),
            state: state.to_owned(),
            previous_state: previous_state.to_owned(),
            reasons: Vec::new(),
            observation: None,
            agent_id: agent_id.to_owned(),
            at: SystemTime::now(),
            of: None,
            failover_id,
            detail: None,
        }
    }

    /// A one-line summary for chat (Slack's `text`) and for logs.
    pub fn text(&self) -> String {
        let what = match &self.of {
            Some(of) => format!("{} (reminder: still {of})", self.event),
            None => self.event.clone(),
        };
        let mut line = format!(
            "[valkey-dr {}] {}: {} ({} → {})",
            self.agent_id, self.watch, what, self.previous_state, self.state
        );
        if !self.reasons.is_empty() {
            line.push_str(": ");
            line.push_str(&self.reasons.join("; "));
        }
        line
    }

    /// The webhook body: every field, plus Slack's `text`.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("text".into(), Value::String(self.text()));
        }
        v
    }
}
