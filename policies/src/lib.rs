//! The valkey-dr decision engine.
//!
//! It turns a stream of probe observations into decisions (alert, fail over, failback
//! possible) with consecutive-failure thresholds. It is a pure state machine: it must never
//! do I/O, spawn tasks, read the clock or draw random numbers. Time is always an argument,
//! so that every branch can be tested exhaustively without sockets or sleeps, and a state
//! restored from disk behaves exactly like the one that was saved.
//!
//! A false failover logs every user out, so the engine leans towards not acting: a failover
//! intent needs every condition below at once, and anything else is an alert saying which
//! condition held it back.
//!
//! # Layout
//!
//! - [`observation`]: what one probe round says ([`Observation`], [`PathStatus`],
//!   [`FailureKind`], [`Witness`]).
//! - [`params`]: the thresholds of a watch ([`Params`], [`Mode`]).
//! - [`state`]: what the engine remembers between rounds ([`WatchState`]); serde, so the
//!   agent can persist it and survive a `kill -9`.
//! - [`decision`]: what it tells the agent ([`Decision`], [`Event`], [`State`], [`Guard`]).
//! - the inputs: [`step`] for a probe round; [`pause`] and [`resume`] for operators;
//!   [`failover_started`], [`failover_completed`], [`failover_failed`] and
//!   [`failback_completed`] for the executor. Each returns the next state and its decisions.
//!
//! # Rules
//!
//! - A round *qualifies* when both paths failed on outage kinds ([`FailureKind::is_outage`]).
//!   `auth`, `oom`, `readonly`, `value_mismatch` and `tls` on either path, and `local` (the
//!   agent's own host out of descriptors, ports or buffers), are a `config_error`: announced
//!   once per streak of the same kinds, `Degraded`, never counted toward `Down`.
//! - Both paths failing on DNS kinds does not qualify: both resolve through the agent's own
//!   resolver, so it is `Degraded` and ends any streak, like a round made while isolated.
//! - `Suspect` on the first qualifying round; `Down` once `fall` qualifying rounds in a row
//!   have lasted `down_after`. Any other round breaks the streak, and a later `Down` is a
//!   new episode.
//! - One path failing while the other works, or drift, is `Degraded`, never `Down`. Drift
//!   during an outage still counts, but blocks the failover: someone else moved the record.
//! - Leaving `Suspect`, `Down` or `Degraded` for `Healthy` takes `rise` good rounds in a
//!   row, as in HAProxy; until then the watch keeps its state.
//! - A failed witness makes the watch `Isolated`: such a round says nothing about the cache,
//!   so it counts towards neither `fall` nor `down_after` and ends any streak; once the
//!   witness is back, `down` needs `fall` fresh failing rounds. DNS failing on both paths
//!   (the agent's resolver) and `local` failures (the agent's host) never count either.
//! - With peers, a failover also needs a quorum of agents that see the cache down
//!   ([`step_with_quorum`]); the agent asks them only when it would otherwise fail over.
//! - A failover intent comes only from a qualifying round of a `Down` watch, once per down
//!   episode, when all guards pass: `auto-failover` mode, not paused, witness OK, no drift,
//!   no failover running, not already on the DR cache, no cooldown, under the per-window
//!   cap. Otherwise a `failover_blocked` lists every guard, and is repeated only when the
//!   set of blocking guards changes (so a cooldown that ends during an outage still leads
//!   to an intent). Nothing is evaluated while a failover runs: it is the decision.
//! - `down` is announced once per episode (not while isolated), then reminded at most once
//!   per `reminder_interval`.
//! - A paused watch still counts rounds and still alerts, so that a forgotten pause cannot
//!   hide an outage; it only never fails over.
//! - After a failover, `failback_possible` once the old primary passes `rise` rounds. There
//!   is no automatic failback.
//!
//! # The agent's side of the contract
//!
//! - Persist the state returned by every input before acting on its decisions, except for a
//!   [`Event::FailoverIntent`]: persist that state together with, or after, the executor's
//!   journal entry for it, so that a crash in between either replays the intent or resumes
//!   the journal, and never drops it.
//! - Pass wall-clock time. Cooldowns then survive restarts; a clock stepping backwards can
//!   only delay a decision, never hasten one.
#![deny(missing_docs)]

pub mod decision;
mod engine;
pub mod observation;
pub mod params;
pub mod state;

#[cfg(test)]
mod proptests;

pub use decision::{Decision, Event, Guard, GuardKind, Quorum, State, Verdict};
pub use engine::{
    PauseRequest, Unfinished, expire_pause, failback_completed, failover_completed, failover_ended,
    failover_failed, failover_started, is_outage_evidence, pause, resume, resume_relayed, step,
    step_with_quorum, verdict,
};
pub use observation::{FailureKind, Observation, PathStatus, Witness};
pub use params::{Mode, Params};
pub use state::{DownEpisode, Health, PathStreak, WatchState};
