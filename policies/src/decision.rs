//! What the engine tells the agent: states, events and the guards behind a failover.

use serde::{Deserialize, Serialize};

/// The state of a watch as people see it (`valkey_dr_state{state}`, `status`, alerts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Both paths pass.
    Healthy,
    /// Both paths fail on outage kinds, but not yet `fall` rounds over `down_after`.
    Suspect,
    /// The active cache is judged failed.
    Down,
    /// The executor is running a failover.
    FailingOver,
    /// The watch is served by the DR cache, and that cache is healthy.
    FailedOver,
    /// The cache is reachable but not right: one path fails while the other works, the
    /// record drifted, or the cache refuses us (a config error).
    Degraded,
    /// The witness fails, so the agent cannot tell a cache failure from its own.
    Isolated,
    /// An operator paused the watch: observations are counted, nothing is acted on.
    Paused,
}

impl State {
    /// Every state, in declaration order; the `valkey_dr_state` gauge sets one per state.
    pub const ALL: [State; 8] = [
        State::Healthy,
        State::Suspect,
        State::Down,
        State::FailingOver,
        State::FailedOver,
        State::Degraded,
        State::Isolated,
        State::Paused,
    ];

    /// The snake_case name used in logs, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Healthy => "healthy",
            State::Suspect => "suspect",
            State::Down => "down",
            State::FailingOver => "failing_over",
            State::FailedOver => "failed_over",
            State::Degraded => "degraded",
            State::Isolated => "isolated",
            State::Paused => "paused",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened. Events mark transitions, never steady states, so that each one is worth
/// a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// Outage failures started.
    Suspect,
    /// The active cache is judged failed (announced once per down episode).
    Down,
    /// The watch is healthy again after `rise` good rounds, or the witness came back.
    Recovered,
    /// One path fails while the other works, or the record drifted, or (after a config
    /// error already announced) the cache still refuses us.
    Degraded,
    /// The witness failed: the agent cannot judge.
    Isolated,
    /// Every guard passed: the agent runs the executor now.
    FailoverIntent,
    /// The watch is down but at least one guard blocks a failover; `guards` says which.
    FailoverBlocked,
    /// The old primary passed `rise` rounds; failback is a human command.
    FailbackPossible,
    /// The cache refused us for a reason a failover cannot fix (auth, oom, readonly,
    /// value_mismatch, tls), or the agent's own host failed the probe (local). Announced
    /// once per streak of the same kinds.
    ConfigError,
    /// An operator paused the watch.
    Paused,
    /// An operator resumed the watch.
    Resumed,
    /// The watch is still in the state named by `of`.
    Reminder,
}

impl Event {
    /// The snake_case name used in logs, notifications and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Suspect => "suspect",
            Event::Down => "down",
            Event::Recovered => "recovered",
            Event::Degraded => "degraded",
            Event::Isolated => "isolated",
            Event::FailoverIntent => "failover_intent",
            Event::FailoverBlocked => "failover_blocked",
            Event::FailbackPossible => "failback_possible",
            Event::ConfigError => "config_error",
            Event::Paused => "paused",
            Event::Resumed => "resumed",
            Event::Reminder => "reminder",
        }
    }
}

impl std::fmt::Display for Event {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One condition a failover needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuardKind {
    /// The mode is `auto-failover`.
    Mode,
    /// The watch is not paused.
    Paused,
    /// The witness is OK (or not configured).
    Witness,
    /// The record points at the cache the agent believes is active; otherwise someone else
    /// changed it and the executor's compare-and-swap would refuse anyway.
    Drift,
    /// No failover is running.
    FailoverInProgress,
    /// The watch is not already served by the DR cache: there is nowhere further to go.
    FailedOver,
    /// The last failover started at least `cooldown` ago.
    Cooldown,
    /// Fewer than `max_auto_failovers` failovers started in the window.
    MaxAutoFailovers,
    /// Enough agents (this one included) see the cache down: only with peers configured.
    Quorum,
}

/// What the agent's peers say about the watch, asked only when the engine would otherwise
/// fail over (see [`crate::step_with_quorum`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quorum {
    /// No peers are configured: the agent decides alone and no quorum guard is evaluated.
    NotConfigured,
    /// At least `quorum` agents see the cache down; the string lists the votes.
    Reached(String),
    /// Fewer than `quorum` agents see the cache down; the string lists the votes. Blocks.
    Short(String),
}

impl GuardKind {
    /// The snake_case name used in logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            GuardKind::Mode => "mode",
            GuardKind::Paused => "paused",
            GuardKind::Witness => "witness",
            GuardKind::Drift => "drift",
            GuardKind::FailoverInProgress => "failover_in_progress",
            GuardKind::FailedOver => "failed_over",
            GuardKind::Cooldown => "cooldown",
            GuardKind::MaxAutoFailovers => "max_auto_failovers",
            GuardKind::Quorum => "quorum",
        }
    }
}

/// One guard as evaluated for a failover decision, with the values it was judged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// Which condition.
    pub guard: GuardKind,
    /// Whether it allows the failover.
    pub passed: bool,
    /// The values behind the verdict, e.g. `alert-only` or `last failover 20m ago < cooldown 1h`.
    pub detail: String,
}

/// One decision: an event, the state it leaves the watch in, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// What happened.
    pub event: Event,
    /// The watch's state after the input (what `WatchState::state` now returns). While the
    /// watch is paused or failing over, health events still fire and this stays `paused` or
    /// `failing_over`, so that a forgotten pause cannot hide an outage.
    pub state: State,
    /// The watch's state before the input.
    pub previous_state: State,
    /// For [`Event::Reminder`]: the event being recalled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub of: Option<Event>,
    /// Human-readable reasons with their values, shown in logs, alerts, `status` and the
    /// journal.
    pub reasons: Vec<String>,
    /// For failover decisions: every guard evaluated, passed or not.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub guards: Vec<Guard>,
}

impl Decision {
    /// The guards that blocked this decision's failover (empty for an intent).
    pub fn blocking_guards(&self) -> impl Iterator<Item = &Guard> {
        self.guards.iter().filter(|g| !g.passed)
    }

    /// Whether this is a failover that only the `alert-only` mode blocked: the agent reports
    /// it as "would fail over".
    pub fn would_fail_over(&self) -> bool {
        self.event == Event::FailoverBlocked
            && self
                .blocking_guards()
                .all(|guard| guard.guard == GuardKind::Mode)
            && self.blocking_guards().next().is_some()
    }
}

/// What an agent publishes for a watch whose record Route 53's health checks switch
/// (`[watch.switch] kind = "health_check"`): "primary down" exactly when this round would
/// start a failover of its own, with the guards it was judged on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// Publish 1: the health is `Down`, this round is outage evidence, and every guard
    /// passes.
    pub down: bool,
    /// Every guard evaluated when the health is `Down` on an outage round (empty otherwise).
    /// The peers' ballot is never among them: the calculated health check counts the agents.
    pub guards: Vec<Guard>,
}
