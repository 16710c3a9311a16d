//! The thresholds and limits of one watch (`[watch.policy]` and `agent.mode` in the config).

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Whether the agent may act on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Notify people and never act: a failover decision is reported as blocked by the mode
    /// guard, which the agent words as "would fail over".
    AlertOnly,
    /// Act: a failover decision whose guards all pass is a [`crate::Event::FailoverIntent`].
    AutoFailover,
    /// Act as far as the switch: a failover decision whose guards all pass is a
    /// [`crate::Event::FailoverIntent`] too, and the agent builds and verifies the DR cache,
    /// then holds before the record moves until a person approves.
    Prepare,
}

impl Mode {
    /// The config spelling (`alert-only`, `auto-failover`).
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::AlertOnly => "alert-only",
            Mode::AutoFailover => "auto-failover",
            Mode::Prepare => "prepare",
        }
    }

    /// Whether a failover decision may start the executor (all the way in `auto-failover`,
    /// up to the approval in `prepare`).
    pub fn acts(self) -> bool {
        matches!(self, Mode::AutoFailover | Mode::Prepare)
    }
}

/// The thresholds the engine judges with. The agent validates them; the engine still treats
/// a `fall` or `rise` of 0 as 1, so that a bad value can never make a single round decide.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Consecutive qualifying failed rounds before `Down`.
    pub fall: u32,
    /// Consecutive good rounds before `Healthy` again, and old-primary good rounds before
    /// failback is said to be possible.
    pub rise: u32,
    /// How long the failures must have lasted before `Down`, so that one long stall (a
    /// paused process, a slow resolver) cannot count as `fall` rounds.
    pub down_after: Duration,
    /// The least time between two failovers (manual ones included).
    pub cooldown: Duration,
    /// How many failovers (manual ones included) may start in `max_auto_failovers_window`
    /// before automatic ones stop; 0 means never fail over automatically.
    pub max_auto_failovers: u32,
    /// The sliding window for `max_auto_failovers`.
    pub max_auto_failovers_window: Duration,
    /// How often to remind people that the watch is still `Down`; zero reminds every round.
    pub reminder_interval: Duration,
    /// Whether the agent may act.
    pub mode: Mode,
}

impl Params {
    pub(crate) fn fall(&self) -> u32 {
        self.fall.max(1)
    }

    /// `rise`, at least 1: the good rounds that end an outage (and that failback needs).
    pub fn rise(&self) -> u32 {
        self.rise.max(1)
    }
}
