//! What the engine remembers about one watch between rounds.
//!
//! The agent persists a [`WatchState`] after every input and restores it after a restart
//! (even after `kill -9`), so everything that must outlive the process lives here: the
//! failure streak, whether `down` was already announced, the failover history behind the
//! cooldown, the pause. Times are wall-clock [`SystemTime`]s passed in by the agent, so they
//! mean the same thing after a restart.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::decision::{GuardKind, State};
use crate::observation::{FailureKind, PathStatus};

/// What the probe rounds say about the active cache, apart from the witness, the pause and
/// a running failover (which [`WatchState::state`] lays over it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Good rounds (or not yet `rise` good rounds after a start).
    #[default]
    Healthy,
    /// Outage failures, not yet `fall` of them over `down_after`.
    Suspect,
    /// Judged failed. The episode holds what was already said about it, so that a restart
    /// or a pause never announces it twice.
    Down(DownEpisode),
    /// Reachable but not right: one path fails, the record drifted, or a config error.
    Degraded,
}

/// One stretch of `Down`, from the round that reached it until the health leaves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DownEpisode {
    /// When the health became `Down`.
    pub since: SystemTime,
    /// When `down` was announced; `None` while the witness failed since, because an isolated
    /// agent must not claim the cache is down.
    pub announced_at: Option<SystemTime>,
    /// When the last reminder (or the announcement) went out.
    pub last_reminder_at: Option<SystemTime>,
    /// When this episode's failover intent was emitted: at most one per episode.
    pub failover_intent_at: Option<SystemTime>,
    /// The guards that blocked the failover when it was last reported, so that a blocked
    /// decision is only repeated when the reason changes.
    pub failover_blocked_by: Vec<GuardKind>,
}

/// The consecutive failures of one probe path, for the `valkey_dr_consecutive_failures{path}`
/// gauge and for reasons such as "dns: timeout ×3".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStreak {
    /// Consecutive failed rounds of any kind; 0 after a success.
    pub consecutive_failures: u32,
    /// The kind of the latest failure of the streak.
    pub last_failure: Option<FailureKind>,
}

impl PathStreak {
    pub(crate) fn record(&mut self, status: PathStatus) {
        match status {
            PathStatus::Ok => *self = PathStreak::default(),
            PathStatus::Failed(kind) => {
                self.consecutive_failures = self.consecutive_failures.saturating_add(1);
                self.last_failure = Some(kind);
            }
        }
    }
}

/// Everything the engine knows about one watch. Build it with [`WatchState::default`],
/// change it only through [`crate::step`] and the other inputs, and persist it with serde.
///
/// Missing fields deserialize to their defaults, so a state file written by an older agent
/// still loads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WatchState {
    /// What the probe rounds say about the active cache.
    pub health: Health,
    /// Consecutive qualifying rounds (both paths failed on outage kinds).
    pub consecutive_failures: u32,
    /// Consecutive good rounds (both paths OK, no drift).
    pub consecutive_successes: u32,
    /// The dns path's own streak.
    pub dns: PathStreak,
    /// The direct path's own streak.
    pub direct: PathStreak,
    /// When the current qualifying streak started.
    pub failure_streak_since: Option<SystemTime>,
    /// How long the current qualifying streak has lasted, summed round by round so that a
    /// clock stepping backwards adds nothing instead of erasing what was already seen.
    pub failure_streak_elapsed: Duration,
    /// When the last round was stepped.
    pub last_round_at: Option<SystemTime>,
    /// The witness failure of the last round; while set, the watch is `Isolated`.
    pub witness_failure: Option<String>,
    /// The failure kinds of the current config-error streak, sorted, so that a streak is
    /// announced once and again only when the kinds change.
    pub config_errors: Vec<FailureKind>,
    /// The witness's credential or permission refusal while it lasts, announced once as
    /// `config_error`.
    #[serde(default)]
    pub witness_denied: Option<String>,
    /// When each recent failover started (manual ones included), for the cooldown and the
    /// per-window cap. Entries older than both are dropped.
    pub failovers: Vec<SystemTime>,
    /// When the running failover started; `None` when none runs.
    pub failing_over_since: Option<SystemTime>,
    /// Why the last failover failed, until the next one completes; reminders repeat it.
    pub last_failover_failure: Option<String>,
    /// Why this agent's own failover failed on its own side (its resolver, its host) in the
    /// current down episode: until the episode ends it votes no `down` to its peers, so that
    /// an agent cut off from the world is never the reason the fleet does not fail over.
    pub own_side_failure: Option<String>,
    /// Whether the DR cache serves the watch. The probes then concern the DR cache, and the
    /// old primary is only watched for failback.
    pub served_by_dr: bool,
    /// Consecutive good rounds of the old primary while served by the DR cache.
    pub old_primary_successes: u32,
    /// Whether `failback_possible` was said for the current good streak of the old primary.
    pub failback_announced: bool,
    /// When an operator paused the watch; `None` when not paused.
    pub paused_since: Option<SystemTime>,
    /// Why, as the operator said it.
    pub pause_reason: Option<String>,
    /// When the pause ends by itself; `None`: at `resume` only.
    pub paused_until: Option<SystemTime>,
    /// Who paused: `None` for this agent's owner (and for a state written before origins
    /// were recorded), else the peer agent that relayed the pause. Only a peer-relayed pause
    /// can be ended by a peer.
    pub pause_origin: Option<String>,
    /// The reasons of the last round, for `status`.
    pub last_reasons: Vec<String>,
}

impl WatchState {
    /// The state people see. A running failover shows first, because it is an action in
    /// progress; then a pause; then what the rounds judge.
    pub fn state(&self) -> State {
        if self.failing_over_since.is_some() {
            State::FailingOver
        } else if self.paused_since.is_some() {
            State::Paused
        } else {
            self.judged()
        }
    }

    /// The state the rounds imply, ignoring a pause and a running failover. Health events
    /// fire on changes of this state.
    pub fn judged(&self) -> State {
        if self.witness_failure.is_some() {
            return State::Isolated;
        }
        match self.health {
            Health::Healthy if self.served_by_dr => State::FailedOver,
            Health::Healthy => State::Healthy,
            Health::Suspect => State::Suspect,
            Health::Down(_) => State::Down,
            Health::Degraded => State::Degraded,
        }
    }

    /// Whether an operator paused the watch.
    pub fn is_paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// The current down episode, if the health is `Down`.
    pub fn down_episode(&self) -> Option<&DownEpisode> {
        match &self.health {
            Health::Down(episode) => Some(episode),
            _ => None,
        }
    }
}
