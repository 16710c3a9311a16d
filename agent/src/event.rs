//! The notification event: what people (and their tools) are told, in one stable shape.
//!
//! The same struct feeds the log line, the webhook JSON and the command notifier's
//! environment and stdin, so that every sink says the same thing.

use std::time::SystemTime;

use serde::Serialize;
use serde_json::Value;

/// Every event the agent sends, named as the webhook's `event` field, a command's
/// `VALKEY_DR_EVENT` and the log say it (ARCHITECTURE.md, "Contracts the code relies on"): a
/// contract with people's alert rules, so a name never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventName {
    /// The engine: outage failures started.
    Suspect,
    /// The engine: the active cache is judged failed.
    Down,
    /// The engine: healthy again.
    Recovered,
    /// The engine: one path fails, or the record drifted, or a config error goes on.
    Degraded,
    /// The engine: the witness failed, the agent cannot judge.
    Isolated,
    /// The engine: every guard passed (or, alert-only, would have).
    FailoverIntent,
    /// The engine: a guard blocks the failover.
    FailoverBlocked,
    /// The engine: the old primary answers again.
    FailbackPossible,
    /// The engine: the cache refused us, or the agent's host failed the probe.
    ConfigError,
    /// The engine: an operator paused the watch.
    Paused,
    /// The engine: an operator resumed it.
    Resumed,
    /// A state that goes on, named by `of`.
    Reminder,
    /// The executor: a failover began.
    FailoverStarted,
    /// The executor: a step finished or is retrying.
    FailoverStep,
    /// A health-check switch: the verdict the agent publishes changed.
    Verdict,
    /// The executor: the DR cache serves the record.
    FailoverCompleted,
    /// The executor: a step failed for good.
    FailoverFailed,
    /// The executor: another agent holds the lease.
    StoodDown,
    /// The executor: the record points at the primary again.
    FailbackCompleted,
    /// The executor: the failback stopped.
    FailbackFailed,
    /// The executor: an unfinished failover was ended on purpose.
    Aborted,
    /// The executor: a failover waits before a step for its gates or a person's approval.
    FailoverHeld,
    /// A person approved a held failover: it goes on.
    Approved,
    /// Readiness: a preflight check of the failover path fails.
    NotReady,
    /// Readiness: every check passes again.
    Ready,
    /// Readiness: no drill succeeded within `drill_interval`.
    DrillOverdue,
    /// The agent: its admin API could not bind.
    AdminUnavailable,
    /// The agent: its admin API listens after all.
    AdminAvailable,
}

impl EventName {
    /// Every event, in the order of the runbook (docs/RUNBOOK.md has a section for each).
    pub const ALL: [EventName; 28] = [
        EventName::Suspect,
        EventName::Down,
        EventName::Recovered,
        EventName::Degraded,
        EventName::Isolated,
        EventName::FailoverIntent,
        EventName::FailoverBlocked,
        EventName::FailbackPossible,
        EventName::ConfigError,
        EventName::Paused,
        EventName::Resumed,
        EventName::Reminder,
        EventName::FailoverStarted,
        EventName::FailoverStep,
        EventName::Verdict,
        EventName::FailoverCompleted,
        EventName::FailoverFailed,
        EventName::StoodDown,
        EventName::FailbackCompleted,
        EventName::FailbackFailed,
        EventName::Aborted,
        EventName::FailoverHeld,
        EventName::Approved,
        EventName::NotReady,
        EventName::Ready,
        EventName::DrillOverdue,
        EventName::AdminUnavailable,
        EventName::AdminAvailable,
    ];

    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventName::Suspect => "suspect",
            EventName::Down => "down",
            EventName::Recovered => "recovered",
            EventName::Degraded => "degraded",
            EventName::Isolated => "isolated",
            EventName::FailoverIntent => "failover_intent",
            EventName::FailoverBlocked => "failover_blocked",
            EventName::FailbackPossible => "failback_possible",
            EventName::ConfigError => "config_error",
            EventName::Paused => "paused",
            EventName::Resumed => "resumed",
            EventName::Reminder => "reminder",
            EventName::FailoverStarted => "failover_started",
            EventName::FailoverStep => "failover_step",
            EventName::Verdict => "verdict",
            EventName::FailoverCompleted => "failover_completed",
            EventName::FailoverFailed => "failover_failed",
            EventName::StoodDown => "stood_down",
            EventName::FailbackCompleted => "failback_completed",
            EventName::FailbackFailed => "failback_failed",
            EventName::Aborted => "aborted",
            EventName::FailoverHeld => "failover_held",
            EventName::Approved => "approved",
            EventName::NotReady => "not_ready",
            EventName::Ready => "ready",
            EventName::DrillOverdue => "drill_overdue",
            EventName::AdminUnavailable => "admin_unavailable",
            EventName::AdminAvailable => "admin_available",
        }
    }

    /// Whether the log line is a warning: something is wrong and someone should look.
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            EventName::Down
                | EventName::Isolated
                | EventName::FailoverBlocked
                | EventName::FailoverFailed
                | EventName::ConfigError
                | EventName::FailoverHeld
                | EventName::StoodDown
                | EventName::FailbackFailed
                | EventName::NotReady
                | EventName::DrillOverdue
                | EventName::AdminUnavailable
        )
    }
}

impl std::fmt::Display for EventName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<valkey_dr_policies::Event> for EventName {
    fn from(e: valkey_dr_policies::Event) -> Self {
        use valkey_dr_policies::Event as P;
        match e {
            P::Suspect => EventName::Suspect,
            P::Down => EventName::Down,
            P::Recovered => EventName::Recovered,
            P::Degraded => EventName::Degraded,
            P::Isolated => EventName::Isolated,
            P::FailoverIntent => EventName::FailoverIntent,
            P::FailoverBlocked => EventName::FailoverBlocked,
            P::FailbackPossible => EventName::FailbackPossible,
            P::ConfigError => EventName::ConfigError,
            P::Paused => EventName::Paused,
            P::Resumed => EventName::Resumed,
            P::Reminder => EventName::Reminder,
        }
    }
}

/// One event about one watch.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// What happened.
    pub event: EventName,
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
    pub of: Option<EventName>,
    /// The failover this belongs to, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failover_id: Option<String>,
    /// Extra structured detail (the plan of a `failover_intent`, blocking guards, step timings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

fn rfc3339<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::text::rfc3339_millis(*t))
}

/// The most characters of one reason that the log and the sinks get.
pub const MAX_REASON_CHARS: usize = 512;

/// The most reasons one event carries.
pub const MAX_REASONS: usize = 32;

/// The most bytes of `detail`, or of `observation`, as JSON, that the log and sinks get; a
/// larger one is replaced by `{"truncated": true, "bytes": N}`.
pub const MAX_DETAIL_BYTES: usize = 16 * 1024;

impl Event {
    /// The event cut to the sizes every sink accepts: whatever a server or an API put in a
    /// reason or a detail (an error string of 200 KiB, say), a webhook body stays small and
    /// a command's environment stays far below the kernel's limit.
    pub fn bounded(mut self) -> Event {
        if self.reasons.len() > MAX_REASONS {
            let more = self.reasons.len() - (MAX_REASONS - 1);
            self.reasons.truncate(MAX_REASONS - 1);
            self.reasons.push(format!("… and {more} more"));
        }
        for reason in &mut self.reasons {
            if let Some((cut, _)) = reason.char_indices().nth(MAX_REASON_CHARS) {
                let bytes = reason.len();
                reason.truncate(cut);
                reason.push_str(&format!("… ({bytes} bytes)"));
            }
        }
        for value in [&mut self.detail, &mut self.observation] {
            let bytes = value
                .as_ref()
                .map_or(0, |v| serde_json::to_vec(v).map_or(0, |b| b.len()));
            if bytes > MAX_DETAIL_BYTES {
                *value = Some(serde_json::json!({ "truncated": true, "bytes": bytes }));
            }
        }
        self
    }

    /// An event of the executor (a failover's or failback's own progress, not a decision of
    /// the engine), sent now: no observation, nothing repeated; reasons and detail empty.
    pub fn executor(
        event: EventName,
        watch: &str,
        agent_id: &str,
        (previous_state, state): (&str, &str),
        failover_id: Option<String>,
    ) -> Event {
        Event {
            event,
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
            None => self.event.as_str().to_owned(),
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

    /// The webhook body: every field, plus Slack's `text`. Chat services render `text` as
    /// markup, and its reasons hold outside text (a server's error, a gate's or a peer's
    /// answer), so it is made inert there ([`crate::text::chat_markup`]): a `<!channel>` from
    /// a server is shown, never sent. The other fields are data and stay as they are.
    pub fn to_json(&self) -> Value {
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            let text = crate::text::chat_markup(&self.text());
            map.insert("text".into(), Value::String(text));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_serialize_as_they_print_and_follow_the_engine() {
        use valkey_dr_policies::Event as P;
        for e in [
            P::Suspect,
            P::Down,
            P::Recovered,
            P::Degraded,
            P::Isolated,
            P::FailoverIntent,
            P::FailoverBlocked,
            P::FailbackPossible,
            P::ConfigError,
            P::Paused,
            P::Resumed,
            P::Reminder,
        ] {
            assert_eq!(EventName::from(e).as_str(), e.as_str());
        }
        for name in EventName::ALL {
            assert_eq!(serde_json::to_value(name).unwrap(), name.as_str());
        }
    }

    #[test]
    fn huge_reasons_and_details_are_cut_to_size() {
        let mut event = Event::executor(EventName::Down, "w", "agent", ("suspect", "down"), None);
        event.reasons = vec!["é".repeat(200 * 1024); 40];
        event.detail = Some(serde_json::json!({ "error": "x".repeat(200 * 1024) }));
        event.observation = Some(serde_json::json!({ "ok": true }));
        let event = event.bounded();
        assert_eq!(event.reasons.len(), MAX_REASONS);
        assert_eq!(event.reasons[MAX_REASONS - 1], "… and 9 more");
        let first = &event.reasons[0];
        assert_eq!(
            first.chars().filter(|c| *c == 'é').count(),
            MAX_REASON_CHARS
        );
        assert!(first.ends_with("… (409600 bytes)"), "{} bytes", first.len());
        // Worst case for a command notifier: every reason joined in one variable stays far
        // below the kernel's 128 KiB limit on one environment string.
        assert!(event.reasons.join("; ").len() < 64 * 1024);
        assert_eq!(event.detail.as_ref().unwrap()["truncated"], true);
        assert_eq!(event.observation, Some(serde_json::json!({ "ok": true })));
        assert!(event.to_json().to_string().len() < 96 * 1024);
    }
}
