//! The status documents: what `GET /status` serves, what `GET /vote` answers, and what each
//! control request answers for a watch. The daemon fills them in; the admin server, the
//! peers and the CLI read them. The JSON on the wire is theirs, field for field.
//!
//! Every struct's fields are in alphabetical order, the order the documents have always had
//! on the wire (a `serde_json::Value` sorts its keys). Some fields hold types of other
//! modules whose order is their own (the executor's outcome, the failback report), so the
//! admin server writes every document through a `Value`, and the bytes stay the same
//! (`tests` pins them).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use valkey_dr_policies::WatchState;

use crate::check::ObservationReport;
use crate::executor::{ApprovalAnswer, FailoverOutcome, Hold, Journal};
use crate::failover::FailbackReport;

/// `GET /status`: the agent, every watch, and the readiness task's last pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// The agent itself.
    pub agent: AgentStatus,
    /// The readiness task's last pass; the admin server adds it when asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<ReadinessStatus>,
    /// Each watch whose task ended unexpectedly since the agent started, by name: left out
    /// while there is none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tasks: BTreeMap<String, TaskStatus>,
    /// Every watch, sorted by name.
    pub watches: Vec<WatchStatus>,
}

/// A watch's task that ended unexpectedly (a panic), in `/status` `tasks`: the daemon
/// starts it again from its saved state, after a backoff.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// Why it ended last, one escaped line: `panicked (MESSAGE)`.
    pub last_panic: String,
    /// When it is started again (RFC 3339), while `restarting`.
    #[serde(default)]
    pub restart_at: Option<String>,
    /// How many times it has been started again, the pending one included.
    pub restarts: u32,
    /// `restarting` while it is down, `running` once started again.
    pub task: String,
}

impl TaskStatus {
    /// Whether the task is down, waiting to be started again.
    pub fn restarting(&self) -> bool {
        self.task == "restarting"
    }
}

impl StatusDocument {
    /// The watch named `name`, if this agent runs it.
    pub fn watch(&self, name: &str) -> Option<&WatchStatus> {
        self.watches.iter().find(|w| w.name == name)
    }

    /// Puts `entries` in place of the watches of the same names (kept sorted by name, each
    /// watch once). The entries move in: a publication copies nothing.
    pub fn patch(&mut self, entries: &mut BTreeMap<String, WatchStatus>) {
        for (name, entry) in std::mem::take(entries) {
            match self
                .watches
                .binary_search_by(|e| e.name.as_str().cmp(&name))
            {
                Ok(i) => self.watches[i] = entry,
                Err(i) => self.watches.insert(i, entry),
            }
        }
    }
}

/// The agent in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// `[agent] id`.
    pub id: String,
    /// `[agent] mode`.
    pub mode: String,
    /// The agent's version.
    pub version: String,
}

/// One watch in `/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchStatus {
    /// The cache probed as the active one, `host:port`.
    pub active_endpoint: String,
    /// Failed rounds in a row.
    pub consecutive_failures: u32,
    /// Good rounds in a row.
    pub consecutive_successes: u32,
    /// The last failback this agent ran.
    pub last_failback: Option<FailbackStatus>,
    /// The last failover, from its journal.
    pub last_failover: Option<FailoverSummary>,
    /// The last probe round.
    pub last_observation: Option<ObservationReport>,
    /// The watch's name.
    pub name: String,
    /// Good rounds in a row of the old primary while the DR cache serves.
    pub old_primary_successes: u32,
    /// Each path's failures in a row.
    pub paths: PathStreaks,
    /// The pause, when paused.
    pub pause: Option<PauseStatus>,
    /// Whether the watch is paused.
    pub paused: bool,
    /// The last ask of the peers.
    pub quorum: Option<QuorumStatus>,
    /// Why the watch is in its state.
    pub reasons: Vec<String>,
    /// Rounds since start.
    pub rounds: u64,
    /// The operation running now.
    pub running: Option<RunningOp>,
    /// Whether the DR cache serves the watch.
    pub served_by_dr: bool,
    /// The policy state.
    pub state: String,
    /// This agent's own vote, as peers read it.
    pub vote: Option<VoteRecord>,
    /// `[watch.switch] kind = "health_check"`: the verdict this agent publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchStatus>,
}

/// The verdict a health-check switch's agent publishes, in `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchStatus {
    /// Always `health_check`.
    pub kind: String,
    /// The value the agent stands by: 1 "the primary is down", 0 otherwise.
    pub published: u8,
    /// Since when (RFC 3339).
    pub since: Option<String>,
    /// Since when it holds 1 until a failback (the record answered the standby).
    pub held_since: Option<String>,
    /// Why, as the ballot's journal says.
    pub why: Option<String>,
    /// Where it goes: namespace, metric, dimensions and region.
    pub target: String,
    /// When CloudWatch last accepted a datapoint (RFC 3339).
    pub accepted_at: Option<String>,
    /// Why the last publication failed; `None` after a success.
    pub error: Option<String>,
    /// Prepare mode: the vote waits for `valkey-dr approve`.
    pub waiting_for_approval: bool,
}

/// The dns and direct paths' failures in a row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStreaks {
    /// The direct path.
    pub direct: PathStreak,
    /// The dns path.
    pub dns: PathStreak,
}

/// One path's failures in a row, and the kind of the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathStreak {
    /// Failed rounds in a row.
    pub consecutive_failures: u32,
    /// The kind of the last failure.
    pub last_failure: Option<String>,
}

impl PathStreaks {
    /// From the engine's state.
    pub fn of(s: &WatchState) -> Self {
        let streak = |p: &valkey_dr_policies::PathStreak| PathStreak {
            consecutive_failures: p.consecutive_failures,
            last_failure: p.last_failure.map(|k| k.as_str().to_owned()),
        };
        PathStreaks {
            direct: streak(&s.direct),
            dns: streak(&s.dns),
        }
    }
}

/// The failover or failback a watch runs now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunningOp {
    /// Its id.
    pub id: String,
    /// `failover` or `failback`.
    pub kind: OpKind,
}

/// What a watch can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpKind {
    /// A failover.
    Failover,
    /// A failback.
    Failback,
}

impl OpKind {
    /// The name, as logs and answers say it.
    pub fn as_str(self) -> &'static str {
        match self {
            OpKind::Failover => "failover",
            OpKind::Failback => "failback",
        }
    }
}

/// This agent's vote, as `/status` records it for `/vote`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRecord {
    /// Whether the last round was outage evidence (both paths down on outage kinds, with a
    /// working witness).
    pub outage_evidence: bool,
    /// When that round was, in Unix milliseconds.
    pub round_at_ms: u64,
    /// How long a vote stays fresh: `fall × interval`, in milliseconds.
    pub window_ms: u64,
}

/// [`PauseStatus::origin`] of a pause this agent's own operator set: an id config refuses
/// to any agent.
pub const PAUSED_BY_OWNER: &str = crate::config::OWNER_ORIGIN;

/// A pause, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseStatus {
    /// Why, as the operator said it.
    pub reason: Option<String>,
    /// Since when (RFC 3339).
    pub since: String,
    /// Until when (RFC 3339); `None`: until resumed.
    pub until: Option<String>,
    /// Who paused: `owner` (this agent's own operator), or the peer agent that relayed it.
    #[serde(default)]
    pub origin: Option<String>,
}

impl PauseStatus {
    /// The pause of `s`, if paused.
    pub fn of(s: &WatchState) -> Option<Self> {
        let since = s.paused_since?;
        Some(PauseStatus {
            reason: s.pause_reason.clone(),
            since: crate::text::rfc3339_seconds(since),
            until: s.paused_until.map(crate::text::rfc3339_seconds),
            origin: Some(
                s.pause_origin
                    .clone()
                    .unwrap_or_else(|| PAUSED_BY_OWNER.to_owned()),
            ),
        })
    }

    /// In words: `since T, until U: reason`, with `relayed from PEER` after the times when
    /// a peer relayed it.
    pub fn text(&self) -> String {
        format!(
            "since {}, {}{}{}",
            self.since,
            self.until
                .as_ref()
                .map(|u| format!("until {u}"))
                .unwrap_or_else(|| "until resume".to_owned()),
            self.origin
                .as_deref()
                .filter(|o| *o != PAUSED_BY_OWNER)
                .map(|o| format!(", relayed from {o}"))
                .unwrap_or_default(),
            self.reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        )
    }
}

/// A failover journal in a few fields, for `/status` and `valkey-dr status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailoverSummary {
    /// Whether it waits for a person before the switch (`mode = "prepare"`).
    pub approval_required: bool,
    /// Whether the agent started it on its own.
    pub automatic: bool,
    /// The DR endpoint, `host:port`, once known.
    pub endpoint: Option<String>,
    /// Its id.
    pub failover_id: String,
    /// The hold it is in now.
    pub held: Option<HoldStatus>,
    /// Every hold, past and present.
    pub holds: Vec<HoldStatus>,
    /// How it ended; `None` while it runs.
    pub outcome: Option<FailoverOutcome>,
    /// How many times it ran (restarts resume it).
    pub runs: u32,
    /// When it started (RFC 3339, milliseconds).
    pub started_at: Option<String>,
    /// The step it is at, or ended in.
    pub step: Option<String>,
    /// Each finished step's time.
    pub steps_ms: BTreeMap<String, u64>,
    /// While a call of the running failover keeps failing: which step, since when, and the
    /// latest word on it ("the DR cache … is built and verified at …; Route 53's API has not
    /// answered for 4m; …").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retrying: Option<Box<RetryingStatus>>,
}

/// A running failover's call that keeps failing, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryingStatus {
    /// The step.
    pub step: String,
    /// Since when (RFC 3339, seconds).
    pub since: String,
    /// The latest alert about it.
    pub detail: String,
}

impl FailoverSummary {
    /// The summary of `j`.
    pub fn of(j: &Journal) -> Self {
        FailoverSummary {
            approval_required: j.plan.approval,
            automatic: j.plan.automatic,
            endpoint: j.endpoint.as_ref().map(|(h, p)| format!("{h}:{p}")),
            failover_id: j.plan.failover_id.clone(),
            held: j.held().map(HoldStatus::of),
            holds: j.holds.iter().map(HoldStatus::of).collect(),
            outcome: j.outcome.clone(),
            runs: j.runs,
            started_at: j.started_at().map(crate::text::rfc3339_millis),
            step: j.current_step().map(|s| s.as_str().to_owned()),
            steps_ms: j
                .timings()
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_millis() as u64))
                .collect(),
            retrying: None,
        }
    }

    /// `completed`, `failed`, ... once it ended.
    pub fn result(&self) -> Option<&'static str> {
        self.outcome.as_ref().map(|o| match o {
            FailoverOutcome::Completed => "completed",
            FailoverOutcome::StoodDown { .. } => "stood_down",
            FailoverOutcome::Aborted { .. } => "aborted",
            FailoverOutcome::Failed { .. } => "failed",
        })
    }
}

/// One hold of a failover, for `/status`, events and `history`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldStatus {
    /// What the gates answered last, or what is awaited.
    pub answer: String,
    /// Whether a person's approval is needed.
    pub approval: bool,
    /// Who approved, when a person did.
    pub approved_by: Option<String>,
    /// The step it holds before.
    pub before: String,
    /// How many times the gates were checked.
    pub checks: u32,
    /// When it ended (RFC 3339).
    pub ended: Option<String>,
    /// The gates that did not open; `None` when only an approval is awaited.
    pub gate: Option<String>,
    /// How long it held (or holds), in seconds.
    pub held_s: u64,
    /// How it ended.
    pub how: Option<crate::executor::HoldEnd>,
    /// Since when (RFC 3339).
    pub since: String,
}

impl HoldStatus {
    /// The status of hold `h`.
    pub fn of(h: &Hold) -> Self {
        HoldStatus {
            answer: h.answer.clone(),
            approval: h.approval,
            approved_by: h.approved_by.clone(),
            before: h.step.as_str().to_owned(),
            checks: h.checks,
            ended: h.ended.map(crate::text::rfc3339_seconds),
            gate: (!h.gate.is_empty()).then(|| h.gate.clone()),
            held_s: h
                .ended
                .unwrap_or_else(SystemTime::now)
                .duration_since(h.since)
                .map_or(0, |d| d.as_secs()),
            how: h.how,
            since: crate::text::rfc3339_seconds(h.since),
        }
    }
}

/// The last failback a watch ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailbackStatus {
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its id.
    pub id: Option<String>,
    /// What it did, when it completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<FailbackReport>,
    /// `completed` or `failed`.
    pub result: String,
}

/// The peers' last answer, for events and `/status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumStatus {
    /// When it was asked (RFC 3339, milliseconds).
    pub at: String,
    /// How many agents see the watch down, this one included.
    pub down: u32,
    /// How many agents are known.
    pub known: u32,
    /// How many must see it down.
    pub needed: u32,
    /// Whether the quorum was reached.
    pub reached: bool,
    /// Every peer's ballot.
    pub votes: Vec<BallotStatus>,
}

/// One peer's ballot in [`QuorumStatus`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BallotStatus {
    /// The agent that answered, when one did.
    pub agent_id: Option<String>,
    /// The address asked.
    pub peer: String,
    /// `down`, `up` or `no_answer`.
    pub vote: String,
    /// Why, unless down.
    pub why: Option<String>,
}

/// `GET /vote?watch=NAME&nonce=N`: this agent's verdict on one watch, signed with its key
/// over [`crate::identity::vote_message`] so that the asker counts it for this agent only,
/// once, and only for the ask it answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteAnswer {
    /// The agent that votes.
    pub agent_id: String,
    /// Whether it sees the watch down.
    pub down: bool,
    /// Its policy state.
    pub state: String,
    /// The watch.
    pub watch: String,
    /// Why.
    pub why: String,
    /// The asker's nonce, echoed (and signed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// When the round behind the verdict ran (Unix ms); 0 before the first round.
    #[serde(default)]
    pub round_at: u64,
    /// The Ed25519 signature (base64) of [`VoteAnswer::signed_text`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

impl VoteAnswer {
    /// This agent's vote on `watch`, as `/vote` answers it: `down` when its last round was
    /// outage evidence no longer ago than `fall × interval`.
    pub fn of(agent_id: &str, watch: &WatchStatus, now: SystemTime) -> Self {
        let vote = watch.vote;
        let evidence = vote.is_some_and(|v| v.outage_evidence);
        let window = Duration::from_millis(vote.map_or(0, |v| v.window_ms));
        let age = vote
            .map(|v| SystemTime::UNIX_EPOCH + Duration::from_millis(v.round_at_ms))
            .and_then(|at| now.duration_since(at).ok());
        let state = watch.state.as_str();
        let (down, why) = match age {
            None => (false, "no round yet".to_owned()),
            Some(age) if age > window => (
                false,
                format!(
                    "last round {:.1}s ago, older than fall × interval ({:.1}s)",
                    age.as_secs_f64(),
                    window.as_secs_f64()
                ),
            ),
            Some(_) if !evidence => (
                false,
                format!(
                    "state {state}: the last round was not an outage seen with a working witness"
                ),
            ),
            Some(age) => (
                true,
                format!(
                    "both paths down on outage kinds {:.1}s ago",
                    age.as_secs_f64()
                ),
            ),
        };
        VoteAnswer {
            agent_id: agent_id.to_owned(),
            down,
            state: state.to_owned(),
            watch: watch.name.clone(),
            why,
            nonce: None,
            round_at: vote.map_or(0, |v| v.round_at_ms),
            signature: None,
        }
    }

    /// What the signature covers: the agent, the watch, the verdict, the round and the nonce.
    pub fn signed_text(&self) -> Vec<u8> {
        crate::identity::vote_message(
            &self.agent_id,
            &self.watch,
            self.down,
            self.round_at,
            self.nonce.as_deref().unwrap_or_default(),
        )
    }

    /// Signs the answer to the ask that sent `nonce`.
    pub fn sign(mut self, nonce: String, identity: &crate::identity::Identity) -> Self {
        self.nonce = Some(nonce);
        self.signature = Some(identity.sign(&self.signed_text()));
        self
    }
}

/// `/status`'s `readiness`: the readiness task's last pass, per watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessStatus {
    /// When the pass ended (RFC 3339); `None` before the first.
    pub checked_at: Option<String>,
    /// `pending` before the first pass, then the worst result.
    pub status: String,
    /// Each watch's checks.
    pub watches: Vec<ReadinessWatch>,
}

impl ReadinessStatus {
    /// Before the first pass has finished.
    pub fn pending() -> Self {
        ReadinessStatus {
            checked_at: None,
            status: "pending".to_owned(),
            watches: Vec::new(),
        }
    }
}

/// One watch's readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessWatch {
    /// Every check.
    pub checks: Vec<ReadinessCheck>,
    /// The checks that failed.
    pub failing: Vec<String>,
    /// The watch.
    pub name: String,
    /// Whether no check failed.
    pub ready: bool,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReadinessCheck {
    /// Its name.
    pub check: String,
    /// How to fix it.
    pub fix: Option<String>,
    /// What it found.
    pub found: String,
    /// `pass`, `warn`, `fail` or `unknown`.
    pub result: String,
}

/// What a control request did for one watch: the fields each action answers with. Absent
/// fields are left out of the JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchAnswer {
    /// Abort: whether the failover was ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<bool>,
    /// Approve: whether a held failover took the approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
    /// Approve: the step the failover was held before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<String>,
    /// Approve: who approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// Abort: what was done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub done: Option<String>,
    /// Why the action did nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Failback: its id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failback_id: Option<String>,
    /// Failover, abort and approve: the failover's id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_id: Option<String>,
    /// Approve: whether the executor journalled the approval in time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journalled: Option<bool>,
    /// Pause and resume: the pause now (`null` when not paused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Option<PauseStatus>>,
    /// Pause and resume: whether the watch is paused now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    /// Failover and failback: whether it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started: Option<bool>,
    /// Pause and resume: the policy state now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
}

impl WatchAnswer {
    /// An abort that did nothing, and why.
    pub fn not_aborted(reason: impl Into<String>) -> Self {
        WatchAnswer {
            aborted: Some(false),
            ..WatchAnswer::error(reason)
        }
    }

    /// A failover or failback that did not start, and why.
    pub fn not_started(reason: impl Into<String>) -> Self {
        WatchAnswer {
            started: Some(false),
            ..WatchAnswer::error(reason)
        }
    }

    /// An answer that only says why nothing was done.
    pub fn error(reason: impl Into<String>) -> Self {
        WatchAnswer {
            error: Some(reason.into()),
            ..WatchAnswer::default()
        }
    }
}

impl From<ApprovalAnswer> for WatchAnswer {
    fn from(a: ApprovalAnswer) -> Self {
        WatchAnswer {
            approved: Some(a.approved),
            journalled: a.journalled,
            failover_id: a.failover_id,
            before: a.before,
            by: a.by,
            error: a.error,
            ..WatchAnswer::default()
        }
    }
}

/// What a control request answers: each watch's [`WatchAnswer`], and, for a pause or resume
/// the owner sent, this agent's id and each peer's result.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlAnswer {
    /// This agent, so that a relay reaching it through a shared name skips it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    /// Each peer's result of a relayed pause or resume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<RelayResult>>,
    /// Each watch addressed.
    pub watches: BTreeMap<String, WatchAnswer>,
}

/// A refused or failed request: why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorAnswer {
    /// Why, in one line.
    pub error: String,
}

/// One peer's result of a relayed pause or resume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayResult {
    /// The peer's agent id, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Option<String>>,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether it was applied there.
    pub ok: bool,
    /// The address asked (or the entry that did not resolve).
    pub peer: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch(vote: Option<(bool, SystemTime)>) -> WatchStatus {
        WatchStatus {
            active_endpoint: "primary:6379".into(),
            consecutive_failures: 3,
            consecutive_successes: 0,
            last_failback: None,
            last_failover: None,
            last_observation: None,
            name: "w".into(),
            old_primary_successes: 0,
            pause: None,
            paused: false,
            paths: PathStreaks {
                direct: PathStreak {
                    consecutive_failures: 3,
                    last_failure: Some("connect_timeout".into()),
                },
                dns: PathStreak {
                    consecutive_failures: 3,
                    last_failure: None,
                },
            },
            quorum: None,
            reasons: vec!["both paths down".into()],
            rounds: 7,
            running: Some(RunningOp {
                id: "fo-1".into(),
                kind: OpKind::Failover,
            }),
            served_by_dr: false,
            state: "down".into(),
            vote: vote.map(|(evidence, at)| VoteRecord {
                outage_evidence: evidence,
                round_at_ms: at
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64,
                window_ms: 3000,
            }),
            switch: None,
        }
    }

    #[test]
    fn a_vote_is_down_only_for_fresh_outage_evidence() {
        let now = SystemTime::now();
        let fresh = VoteAnswer::of("a", &watch(Some((true, now - Duration::from_secs(1)))), now);
        assert!(fresh.down, "{fresh:?}");
        let stale = VoteAnswer::of("a", &watch(Some((true, now - Duration::from_secs(4)))), now);
        assert!(!stale.down, "{stale:?}");
        assert!(stale.why.contains("older than"), "{stale:?}");
        assert!(!VoteAnswer::of("a", &watch(Some((false, now))), now).down);
        let none = VoteAnswer::of("a", &watch(None), now);
        assert!(!none.down);
        assert_eq!(none.why, "no round yet");
    }

    /// The wire form of a watch's status, field for field: a renamed field fails here, not
    /// in a peer or a CLI at run time.
    #[test]
    fn a_watch_status_keeps_its_wire_form() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let text = serde_json::to_string(&watch(Some((true, at)))).unwrap();
        assert_eq!(
            text,
            concat!(
                r#"{"active_endpoint":"primary:6379","consecutive_failures":3,"consecutive_successes":0,"#,
                r#""last_failback":null,"last_failover":null,"last_observation":null,"name":"w","#,
                r#""old_primary_successes":0,"#,
                r#""paths":{"direct":{"consecutive_failures":3,"last_failure":"connect_timeout"},"#,
                r#""dns":{"consecutive_failures":3,"last_failure":null}},"pause":null,"paused":false,"quorum":null,"#,
                r#""reasons":["both paths down"],"rounds":7,"running":{"id":"fo-1","kind":"failover"},"#,
                r#""served_by_dr":false,"state":"down","#,
                r#""vote":{"outage_evidence":true,"round_at_ms":1700000000123,"window_ms":3000}}"#
            )
        );
        // Through a `Value` (as the documents were built before they were typed) the bytes
        // are the same: every struct lists its fields in the order a JSON object sorts them.
        let value = serde_json::to_value(watch(Some((true, at)))).unwrap();
        assert_eq!(serde_json::to_string(&value).unwrap(), text);
        let back: WatchStatus = serde_json::from_str(&text).unwrap();
        assert_eq!(back, watch(Some((true, at))));
    }

    #[test]
    fn answers_leave_out_what_an_action_does_not_say() {
        let mut answer = ControlAnswer {
            agent_id: Some("a".into()),
            ..ControlAnswer::default()
        };
        answer.watches.insert(
            "w".into(),
            WatchAnswer {
                state: Some("healthy".into()),
                paused: Some(false),
                pause: Some(None),
                ..WatchAnswer::default()
            },
        );
        answer.watches.insert(
            "x".into(),
            WatchAnswer::not_started("a failback is running"),
        );
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            concat!(
                r#"{"agent_id":"a","watches":{"w":{"pause":null,"paused":false,"state":"healthy"},"#,
                r#""x":{"error":"a failback is running","started":false}}}"#
            )
        );
        let relayed = RelayResult {
            agent_id: Some(None),
            error: None,
            ok: true,
            peer: "127.0.0.1:1".into(),
        };
        assert_eq!(
            serde_json::to_string(&relayed).unwrap(),
            r#"{"agent_id":null,"ok":true,"peer":"127.0.0.1:1"}"#
        );
    }
}
