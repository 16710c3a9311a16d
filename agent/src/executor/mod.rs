//! The failover executor: provision → wait_available → verify_direct → lease → switch_dns →
//! wait_insync → verify_dns → release (ARCHITECTURE.md, "A failover").
//!
//! Nothing before the build waits on Route 53: its control plane is served from us-east-1,
//! which may be the region that failed, so the DR cache is built and verified first and the
//! lease is taken only for the switch (issue 20).
//!
//! It makes no decisions: the policy engine (or an operator) decided, the plan says what to
//! do, and the executor carries it out. Every step is idempotent and is written to a journal
//! under `state_dir` before and after it runs (temporary file, fsync, rename), so that a
//! `kill -9` at any instant followed by a restart resumes the same failover: it never creates a
//! second cache and never flips the record twice. The DNS switch is a compare-and-swap (an
//! exact `DELETE` of the old CNAME plus a `CREATE` of the new one in one batch): if someone
//! else changed the record, the executor stops and says so instead of overwriting it.
//!
//! This module is the step machine over two small traits ([`api::CacheApi`],
//! [`api::DnsApi`]); the SDK-backed implementations and the daemon wiring build on it.

pub mod api;
pub mod sdk;
pub mod verify;
pub mod wait;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};

use api::{
    ApiError, CacheApi, CacheInfo, CacheSpec, CacheStatus, Change, ChangeStatus, DnsApi, RecordSet,
};

use crate::config::GateAt;
use crate::gate::{Gates, Passage};
use crate::store;
use wait::WaitError;

mod approval;
pub use approval::ApprovalAnswer;

/// The tag that marks a cache as built by a given failover, so a resumed or racing run can
/// tell its own cache from someone else's.
pub const FAILOVER_TAG: &str = "valkey-dr:failover-id";

/// The tag naming the watch a failover's cache was built for: with [`RECORD_TAG`], what lets
/// an agent that lost the race to the build adopt the winner's cache instead of stopping.
pub const WATCH_TAG: &str = "valkey-dr:watch";

/// The tag naming the record a failover's cache was built to serve.
pub const RECORD_TAG: &str = "valkey-dr:record";

/// The tag that marks a watch's warm standby (`valkey-dr standby create`), with the watch's
/// name as value: a failover of that watch and record adopts the cache that carries it.
pub const STANDBY_TAG: &str = "valkey-dr:standby";

/// Whether `tags` mark the warm standby of `watch` and `record`.
pub fn is_standby_of(tags: &BTreeMap<String, String>, watch: &str, record: &str) -> bool {
    tags.get(STANDBY_TAG).map(String::as_str) == Some(watch)
        && tags.get(RECORD_TAG).map(String::as_str) == Some(record)
}

/// The lease record's TTL: nobody resolves it, Route 53 only needs one.
pub const LEASE_TTL: u32 = 30;

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// `CreateServerlessCache`, or adopt ours (or the one a racing agent of the same watch
    /// built).
    Provision,
    /// Until `available`, bounded by `create_timeout`.
    WaitAvailable,
    /// A probe round against the new endpoint.
    VerifyDirect,
    /// Read the record and take the Route 53 TXT lock for the switch.
    Lease,
    /// The CNAME compare-and-swap.
    SwitchDns,
    /// Until `GetChange` says `INSYNC`.
    WaitInsync,
    /// Resolve until the record points at the new endpoint, then probe through it.
    VerifyDns,
    /// Drop the lock.
    Release,
    /// Failback with `--delete-dr` only: delete the DR cache once the record points back.
    DeleteDr,
    /// Failback only, unless `--keep-data`: empty the old primary before the record points
    /// back at it, so that sessions ended during the DR period (logged out, revoked) do not
    /// come back. Never once the switch has begun: the primary then serves live sessions.
    FlushPrimary,
    /// Failback from a warm standby (without `--delete-dr`): once the record points back at
    /// the primary, empty the standby, which is the standby again, so that a later failover
    /// brings back none of this DR period's sessions.
    EmptyStandby,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 8] = [
        Step::Provision,
        Step::WaitAvailable,
        Step::VerifyDirect,
        Step::Lease,
        Step::SwitchDns,
        Step::WaitInsync,
        Step::VerifyDns,
        Step::Release,
    ];

    /// The stable name (journal, events, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Lease => "lease",
            Step::Provision => "provision",
            Step::WaitAvailable => "wait_available",
            Step::VerifyDirect => "verify_direct",
            Step::SwitchDns => "switch_dns",
            Step::WaitInsync => "wait_insync",
            Step::VerifyDns => "verify_dns",
            Step::Release => "release",
            Step::DeleteDr => "delete_dr",
            Step::FlushPrimary => "flush_primary",
            Step::EmptyStandby => "empty_standby",
        }
    }
}

/// What a journalled plan does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Build the DR cache and point the record at it.
    #[default]
    Failover,
    /// Point the record back at the primary (the journal's `endpoint`), with the same
    /// Route 53 retries and compare-and-swap as a failover.
    Failback {
        /// The DR endpoint the record must point at now: anything else stops the failback.
        from: String,
        /// Then delete the DR cache.
        delete_dr: bool,
        /// Skip `flush_primary` (`failback --keep-data`): the old primary keeps the sessions
        /// it held when the region failed, including ones ended since. A journal written
        /// before the flush existed has no such field and keeps the data, as it was asked to.
        #[serde(default = "journal_before_the_flush_keeps_data")]
        keep_data: bool,
    },
}

/// A failback journal without `keep_data` was started by a version that never emptied the
/// primary: resumed, it keeps doing what the person asked for then.
fn journal_before_the_flush_keeps_data() -> bool {
    true
}

/// What `flush_primary` sends: every key of the cache (ElastiCache Serverless flushes all keys
/// across the cluster), freed in the background so the reply does not wait on the size of
/// the data (tests/FIDELITY.md, row E10).
pub const FLUSH_COMMAND: [&str; 2] = ["FLUSHALL", "ASYNC"];

impl Kind {
    /// The steps, in order.
    pub fn steps(&self) -> Vec<Step> {
        match self {
            Kind::Failover => Step::ALL.to_vec(),
            // `lease` reads the record (and takes no lock: failback is a person's command,
            // made after the primary passed `rise` rounds).
            // `flush_primary` comes after `lease` read the record (it must still point at the
            // DR cache) and before `switch_dns` (after it, the primary serves live sessions).
            Kind::Failback {
                delete_dr,
                keep_data,
                ..
            } => {
                let mut steps = vec![Step::Lease];
                if !keep_data {
                    steps.push(Step::FlushPrimary);
                }
                steps.extend([Step::SwitchDns, Step::WaitInsync, Step::VerifyDns]);
                if *delete_dr {
                    steps.push(Step::DeleteDr);
                }
                steps
            }
        }
    }
}

/// What a failover must do, fixed when it starts and kept in the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Unique per failover; tags the cache and names the lease.
    pub failover_id: String,
    /// The watch.
    pub watch: String,
    /// The agent carrying it out.
    pub owner: String,
    /// The hosted zone.
    pub hosted_zone_id: String,
    /// The record, fully qualified.
    pub record: String,
    /// The TTL written with the new CNAME.
    pub ttl: u32,
    /// The DR cache to build.
    pub cache: CacheSpec,
    /// How long `creating` may last.
    pub create_timeout: Duration,
    /// How long a lease is valid; `None` when leases are off.
    pub lease: Option<Duration>,
    /// Adopt an existing cache of that name even without our tag (warm standby).
    pub adopt_existing: bool,
    /// Failover, or failback.
    #[serde(default)]
    pub kind: Kind,
    /// A person must approve before `switch_dns` (`mode = "prepare"`, automatic failovers).
    #[serde(default)]
    pub approval: bool,
    /// The agent started it on its own (not a person's `valkey-dr failover`).
    #[serde(default)]
    pub automatic: bool,
    /// Where the record pointed when the failover was decided (the primary the agent
    /// watched): the record, read only just before the switch, must still point there, or
    /// someone else changed it meanwhile and it is not overwritten. `None`: whatever the
    /// record holds when the lease is taken (a person's failover).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_target: Option<String>,
    /// The watch's warm standby, `(address, port)`, as known before the failover began: a
    /// failover switches to it with no `provision` and no `wait_available` (it served in the
    /// agent's last round); a failback empties it once the record points back at the primary.
    /// `None`: build on demand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub standby: Option<(String, u16)>,
}

impl Plan {
    /// The steps, in order: the kind's, and for a failback from a warm standby that is kept,
    /// `empty_standby` at the end.
    pub fn steps(&self) -> Vec<Step> {
        let mut steps = self.kind.steps();
        if let Kind::Failback {
            delete_dr: false, ..
        } = self.kind
            && self.standby.is_some()
        {
            steps.push(Step::EmptyStandby);
        }
        steps
    }

    /// The lease record's name.
    pub fn lease_name(&self) -> String {
        format!("_valkey-dr-lock.{}", self.record)
    }
}

/// Where a step stands in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Written before the step runs.
    Started,
    /// Written after it succeeded.
    Done,
    /// Written when it failed for good.
    Failed,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The step.
    pub step: Step,
    /// Before, after, or failed.
    pub phase: Phase,
    /// When.
    pub at: SystemTime,
    /// What it found or did.
    pub detail: String,
}

/// The durable record of one failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// What to do.
    pub plan: Plan,
    /// What the record pointed at when the failover began: the `DELETE` half of the swap.
    pub old_target: Option<RecordSet>,
    /// The lease record we wrote.
    pub lease: Option<RecordSet>,
    /// The DR endpoint, once known.
    pub endpoint: Option<(String, u16)>,
    /// The Route 53 change of the swap, once made.
    pub change_id: Option<String>,
    /// Every step transition, in order. A restart that resumes appends to it.
    pub entries: Vec<JournalEntry>,
    /// How many times the executor (re)started on this journal.
    pub runs: u32,
    /// How the failover ended; `None` while it runs or after a crash, which a restart then
    /// resumes.
    #[serde(default)]
    pub outcome: Option<FailoverOutcome>,
    /// Every time the failover was held before a step, in order; the last one has no `ended`
    /// while it holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<Hold>,
    /// What a failback's `flush_primary` found and did, written before the flush is sent
    /// and after each part of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed: Option<Flushed>,
}

/// What a failback's `flush_primary` emptied: the old primary's key count before the first
/// flush (the sessions it held since the region failed) and after the last one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Flushed {
    /// The primary, `host:port`.
    pub endpoint: String,
    /// The command sent ([`FLUSH_COMMAND`]).
    pub command: String,
    /// `DBSIZE` before the first flush: what the old primary held. Kept across a resumed
    /// run, which flushes again but counts what the first run found.
    pub keys_before: u64,
    /// `DBSIZE` after the last flush; `None` until read. The agents' own probe keys (under
    /// `key_prefix`, 60 s each) may be written meanwhile, and ElastiCache Serverless counts
    /// across slots without a snapshot, so a few may show.
    #[serde(default)]
    pub keys_after: Option<u64>,
    /// How many times the command was sent: more than once only when a failback resumed
    /// after a crash before its switch.
    pub sent: u32,
}

/// A failover held before a step by closed gates, or waiting for a person's approval.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// The gate point it waits at: `provision` (held before the lease, so nothing is taken
    /// or built) or `switch_dns`.
    pub step: Step,
    /// Since when.
    pub since: SystemTime,
    /// The gates that did not open, comma-separated; empty when only an approval is awaited.
    pub gate: String,
    /// What they answered last, or what is awaited.
    pub answer: String,
    /// Whether a person's approval is needed (`mode = "prepare"`).
    pub approval: bool,
    /// How many times the gates were checked.
    pub checks: u32,
    /// When it ended; `None` while it holds.
    #[serde(default)]
    pub ended: Option<SystemTime>,
    /// How it ended.
    #[serde(default)]
    pub how: Option<HoldEnd>,
    /// Who approved, when a person did.
    #[serde(default)]
    pub approved_by: Option<String>,
}

/// How a hold ended, as the journal spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldEnd {
    /// Every gate opened.
    Opened,
    /// A person approved (`approved_by` says who).
    Approved,
    /// The failover was aborted while held, or a gate said `on_timeout = "abort"`.
    Aborted,
    /// Another agent took the lease while the failover was held.
    StoodDown,
    /// Nothing holds it any more (the config changed since a restart, or the step began).
    Lifted,
}

impl HoldEnd {
    /// The journal's and `/status`'s spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Approved => "approved",
            Self::Aborted => "aborted",
            Self::StoodDown => "stood_down",
            Self::Lifted => "lifted",
        }
    }
}

impl std::fmt::Display for HoldEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person's go-ahead for a held failover (`valkey-dr approve`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approval {
    /// The failover it is for.
    pub failover_id: String,
    /// The step it lets through: the one the failover was held before when it was given.
    pub step: Step,
    /// Who, as the CLI said it (`user@host`).
    pub by: String,
}

/// Hands approvals from the daemon's watch task to the executor's task.
#[derive(Debug)]
pub struct Approvals {
    slot: std::sync::Mutex<Option<Approval>>,
    arrived: tokio::sync::Notify,
    /// Counts the approvals the executor has written to its journal.
    recorded: tokio::sync::watch::Sender<u64>,
    /// The failover and the point it is held at now, as the executor journalled it.
    holding: std::sync::Mutex<Option<(String, Step)>>,
}

impl Default for Approvals {
    fn default() -> Self {
        Approvals {
            slot: std::sync::Mutex::default(),
            arrived: tokio::sync::Notify::new(),
            recorded: tokio::sync::watch::Sender::new(0),
            holding: std::sync::Mutex::default(),
        }
    }
}

impl Approvals {
    /// Watches how many approvals the executor has journalled: one more once it has taken
    /// the one given after this was called.
    pub fn recorded(&self) -> tokio::sync::watch::Receiver<u64> {
        self.recorded.subscribe()
    }

    /// The failover held now and the point it waits at (as journalled), if one is.
    pub fn held(&self) -> Option<(String, Step)> {
        self.holding.lock().ok()?.clone()
    }

    /// A health-check switch's vote held for a person (`id`), or no longer (`None`): what
    /// [`Approvals::approve`] answers for, as a held failover's.
    pub fn hold_vote(&self, id: Option<String>) {
        self.set_held(id.map(|id| (id, Step::SwitchDns)));
    }

    /// The approval of the vote held as `id`, if a person gave one; it then counts as
    /// recorded, and the vote is held no longer.
    pub fn take_vote(&self, id: &str) -> Option<Approval> {
        let approval = self.take(id, Step::SwitchDns)?;
        self.set_held(None);
        self.recorded.send_modify(|n| *n += 1);
        Some(approval)
    }

    fn set_held(&self, held: Option<(String, Step)>) {
        if let Ok(mut slot) = self.holding.lock() {
            *slot = held;
        }
    }

    /// Leaves `approval` for the executor, waking it if it waits.
    pub fn give(&self, approval: Approval) {
        if let Ok(mut slot) = self.slot.lock() {
            *slot = Some(approval);
        }
        self.arrived.notify_one();
    }

    /// The approval left for `failover_id` before `step`, if any; one left for anything else
    /// is stale (the hold it was for ended) and is dropped.
    fn take(&self, failover_id: &str, step: Step) -> Option<Approval> {
        let approval = self.slot.lock().ok()?.take()?;
        (approval.failover_id == failover_id && approval.step == step).then_some(approval)
    }
}

/// What may hold a failover: the watch's gates and a person's approval.
pub struct Holding<'a> {
    /// The watch's gates.
    pub gates: &'a Gates,
    /// How often closed gates are checked again.
    pub gate_interval: Duration,
    /// How often a hold is re-announced.
    pub reminder_interval: Duration,
    /// Where approvals arrive.
    pub approvals: &'a Approvals,
    /// Told when a hold begins, every `reminder_interval` while it lasts, and how it ends.
    pub news: &'a (dyn Fn(&Journal, &HoldNews) + Send + Sync),
}

/// What [`Holding::news`] is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldNews {
    /// Held (the journal's last hold says where and why); `first` for the first time in this
    /// run.
    Held {
        /// The first announcement of this hold by this run.
        first: bool,
    },
    /// A person approved: the failover goes on.
    Approved(Approval),
    /// Every gate opened (or nothing holds it any more): the failover goes on.
    Opened,
    /// Checked again and still held; not worth an event, but `/status` shows the answer.
    Checked,
}

/// How a failover ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum FailoverOutcome {
    /// Every step finished: the DR cache serves the record.
    Completed,
    /// Another agent holds the lease (or finished first); this one did nothing more.
    StoodDown {
        /// Why.
        reason: String,
    },
    /// Ended on purpose before it finished: `valkey-dr abort`, or a resume that found the
    /// primary healthy again before the switch.
    Aborted {
        /// Why.
        reason: String,
    },
    /// A step failed for good.
    Failed {
        /// The step.
        step: Step,
        /// The error.
        error: String,
    },
}

impl Journal {
    /// A new journal for `plan`.
    pub fn new(plan: Plan) -> Self {
        Journal {
            plan,
            old_target: None,
            lease: None,
            endpoint: None,
            change_id: None,
            entries: Vec::new(),
            runs: 0,
            outcome: None,
            holds: Vec::new(),
            flushed: None,
        }
    }

    /// The hold the failover is in now, if any.
    pub fn held(&self) -> Option<&Hold> {
        self.holds
            .last()
            .filter(|h| h.ended.is_none() && self.outcome.is_none())
    }

    /// Whether `step` has begun (its gates were passed before it).
    pub fn started(&self, step: Step) -> bool {
        self.entries.iter().any(|e| e.step == step)
    }

    /// The first entry of `step` in `phase`.
    pub fn entry(&self, step: Step, phase: Phase) -> Option<&JournalEntry> {
        self.entries
            .iter()
            .find(|e| e.step == step && e.phase == phase)
    }

    /// Whether `step` has finished.
    pub fn done(&self, step: Step) -> bool {
        self.entry(step, Phase::Done).is_some()
    }

    /// Whether every step finished.
    pub fn complete(&self) -> bool {
        self.plan.steps().into_iter().all(|s| self.done(s))
    }

    /// Whether a restart must resume this failover: it began and has no outcome yet.
    pub fn unfinished(&self) -> bool {
        self.outcome.is_none()
    }

    /// The DR endpoint `(host without trailing dot, port)` once the failover completed: the
    /// cache that serves the watch after it.
    pub fn completed_endpoint(&self) -> Option<(String, u16)> {
        if self.outcome != Some(FailoverOutcome::Completed) {
            return None;
        }
        self.endpoint
            .as_ref()
            .map(|(host, port)| (host.trim_end_matches('.').to_owned(), *port))
    }

    /// When the failover began: its first journal entry, or its first hold when gates held
    /// it before any step.
    pub fn started_at(&self) -> Option<SystemTime> {
        let first_entry = self.entries.first().map(|e| e.at);
        let first_hold = self.holds.first().map(|h| h.since);
        match (first_entry, first_hold) {
            (Some(e), Some(h)) => Some(e.min(h)),
            (e, h) => e.or(h),
        }
    }

    /// The step that last started, for status lines.
    pub fn current_step(&self) -> Option<Step> {
        self.entries.last().map(|e| e.step)
    }

    /// How long each finished step took (last start to its done), for reports and metrics.
    pub fn timings(&self) -> BTreeMap<&'static str, Duration> {
        let mut out = BTreeMap::new();
        for step in self.plan.steps() {
            let start = self
                .entries
                .iter()
                .rev()
                .find(|e| e.step == step && e.phase == Phase::Started);
            let done = self.entry(step, Phase::Done);
            if let (Some(s), Some(d)) = (start, done) {
                out.insert(step.as_str(), d.at.duration_since(s.at).unwrap_or_default());
            }
        }
        out
    }
}

/// Why a failover stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FailoverError {
    /// Another agent holds the lease: this one stands down.
    #[error("another agent holds the lease: {holder}")]
    StoodDown {
        /// The lease value.
        holder: String,
    },
    /// A cache of the DR name exists and is not this failover's: someone else's, or one an
    /// earlier failover left behind (a failback or abort without `--delete-dr`, a lost
    /// journal). Readiness calls it `fail` (`dr_name`); the failover spends no cooldown on it.
    #[error(
        "{name} already exists and is not this failover's: delete it if no failover uses it (`valkey-dr dr-cache delete`), or set adopt_existing = true to use it"
    )]
    ForeignCache {
        /// The cache.
        name: String,
    },
    /// A cache of the DR name is left over in a state no failover can use: `create-failed`
    /// (a build that failed; AWS refuses its tags, ledger E3) or `deleting` (CreateServerlessCache
    /// would answer that it exists). Readiness calls it `fail` (`dr_name`); the failover
    /// spends no cooldown on it.
    #[error("{name} is left over, {status}: {fix}")]
    Leftover {
        /// The cache.
        name: String,
        /// Its state.
        status: String,
        /// What clears it.
        fix: String,
    },
    /// The cache reached `create-failed`.
    #[error("{name} reached create-failed")]
    CreateFailed {
        /// The cache.
        name: String,
    },
    /// `create_timeout` passed while the cache was still `creating`.
    #[error("{name} still not available after {}", crate::text::duration(*.waited))]
    CreateTimeout {
        /// The cache.
        name: String,
        /// How long we waited.
        waited: Duration,
    },
    /// The record no longer holds what the failover started from: someone else changed it.
    #[error("the record {record} was changed by someone else (now {found}); not overwriting it")]
    RecordChanged {
        /// The record.
        record: String,
        /// What it holds now.
        found: String,
    },
    /// A verification failed.
    #[error("{step} failed: {message}")]
    Verify {
        /// verify_direct or verify_dns.
        step: &'static str,
        /// Why.
        message: String,
    },
    /// A verification failed on this agent's own side (its resolver, its host): the DR
    /// cache may be fine, and agents that can see it take over.
    #[error("{step} failed on this agent's own side: {message}")]
    OwnSide {
        /// verify_direct.
        step: &'static str,
        /// Why.
        message: String,
    },
    /// The warm standby, which served in the agent's last round, does not serve now. The
    /// record is untouched; the failover ends without spending the cooldown, and the next
    /// decision takes the on-demand path (the standby's round failed too by then): `provision`
    /// adopts the standby if it still exists, or builds the cache again if it was deleted.
    #[error(
        "verify_direct failed: the warm standby {name} does not serve ({message}); the record is untouched, and the next decision takes the on-demand path (the standby verified again if it still exists, built again if it was deleted)"
    )]
    StandbyDown {
        /// The cache.
        name: String,
        /// Why.
        message: String,
    },
    /// An API call kept failing.
    #[error("{step}: {source}")]
    Api {
        /// The step.
        step: &'static str,
        /// The last error.
        #[source]
        source: ApiError,
    },
    /// The journal could not be written: stop rather than act without a record.
    #[error("journal: {0}")]
    Journal(String),
    /// A gate with `on_timeout = "abort"` did not answer in time.
    #[error("gate {gate} before {} did not answer ({answer}) and says on_timeout = \"abort\"", step.as_str())]
    GateAborted {
        /// The gate.
        gate: String,
        /// The step it stands before.
        step: Step,
        /// What happened.
        answer: String,
    },
}

/// `Err` when `found`, a cache of the DR name this failover did not create, is in a state no
/// failover can use: waiting for its tags would take the whole `create_timeout` for a
/// `create-failed` one, and a `deleting` one refuses the create.
fn leftover(found: &CacheInfo) -> Result<(), FailoverError> {
    let fix = match found.status {
        CacheStatus::CreateFailed => {
            "a failed build serves nothing and holds nothing: delete it (`valkey-dr dr-cache delete`), then fail over"
        }
        CacheStatus::Deleting => "it is being deleted: fail over once it is gone",
        _ => return Ok(()),
    };
    Err(FailoverError::Leftover {
        name: found.name.clone(),
        status: found.status.as_str().to_owned(),
        fix: fix.to_owned(),
    })
}

/// Real traffic to the caches: proves a step's effect (a probe round against the new
/// endpoint, resolution through the record), and empties the old primary before a failback.
pub trait Verifier: Send + Sync {
    /// PING/SET/GET straight to the endpoint.
    fn direct(
        &self,
        endpoint: &str,
        port: u16,
    ) -> impl std::future::Future<Output = Result<(), VerifyFailure>> + Send;
    /// Resolve the record until it points at `endpoint` (bounded by TTL plus a margin), then
    /// probe through it.
    fn through_record(
        &self,
        endpoint: &str,
    ) -> impl std::future::Future<Output = Result<(), String>> + Send;
    /// One look through the agent's own resolvers: whether the record resolves to
    /// `endpoint` now (Route 53's data plane, which answers while its API may not).
    fn resolves_to(&self, endpoint: &str) -> impl std::future::Future<Output = bool> + Send;
    /// `DBSIZE` straight to the endpoint: how many keys it holds.
    fn count_keys(
        &self,
        endpoint: &str,
        port: u16,
    ) -> impl std::future::Future<Output = Result<u64, VerifyFailure>> + Send;
    /// [`FLUSH_COMMAND`] straight to the endpoint: empties it (a failback's old primary).
    fn flush(
        &self,
        endpoint: &str,
        port: u16,
    ) -> impl std::future::Future<Output = Result<(), VerifyFailure>> + Send;
}

/// Why a direct verification failed, and whether the failure was on the agent's own side:
/// its resolver refusing, failing or not knowing a name AWS gave, or its own host. Such an
/// agent cannot tell the DR cache's fault from its own, so it steps aside for those that can.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyFailure {
    /// What happened.
    pub message: String,
    /// Whether the agent's own side failed.
    pub own_side: bool,
}

impl std::fmt::Display for VerifyFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Bounds on the executor's own loops.
#[derive(Debug, Clone)]
pub struct ExecutorLimits {
    /// Attempts per call for transient API errors, where a step is not on the outage's
    /// clock (the release, an abort's deletion).
    pub attempts: u32,
    /// First retry delay; doubled each time up to `max_backoff`.
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// Longest retry delay of a Route 53 call. Route 53's control plane may be down for
    /// hours with us-east-1, and the record must move the moment it answers again: a retry
    /// a second keeps that under a second and stays far inside Route 53's documented five
    /// requests a second per account, with the few agents of one watch.
    pub route53_max_backoff: Duration,
    /// How often `wait_available` polls.
    pub poll: Duration,
    /// How long a cache may be missing from `DescribeServerlessCaches` after it was created
    /// (eventual consistency) before it counts as gone.
    pub not_found_grace: Duration,
    /// How long `wait_insync` waits on `GetChange` before the agent's own resolvers alone
    /// decide (they are asked from the start too: the zone's data plane answering with the
    /// new target is the change in effect, whatever Route 53's API says).
    pub insync_timeout: Duration,
    /// While a call keeps failing, how often people hear that the executor is still
    /// retrying (it never gives up on a transient Route 53 error on its own).
    pub alert_every: Duration,
    /// While another agent holds the lease, how often this one looks again: the holder may
    /// fail and hand over, and this agent then takes over within one look.
    pub lease_poll: Duration,
}

/// How long a call is retried on transient errors.
#[derive(Debug, Clone, Copy)]
enum Patience {
    /// At most this many calls.
    Attempts(u32),
    /// Until this instant: the build, bounded by `create_timeout` like the wait after it.
    Until(tokio::time::Instant),
    /// Until it passes: Route 53, which nothing after the build may give up on quietly.
    Forever,
}

impl ExecutorLimits {
    /// Polls every [`ExecutorLimits::poll`], without backing off: the executor is on the outage's
    /// clock, and a cheap Describe twice a second costs nothing next to a slower failover.
    fn polling(&self) -> wait::Polling {
        wait::Polling {
            every: self.poll,
            max: self.poll,
            not_found_grace: self.not_found_grace,
        }
    }

    /// Exponential backoff from [`ExecutorLimits::backoff`] up to `max`: `Attempts(n)` calls in
    /// all, or without end (a deadline is checked by the caller).
    fn backoff(&self, patience: Patience, max: Duration) -> ExponentialBuilder {
        let builder = ExponentialBuilder::default()
            .with_min_delay(self.backoff.min(max))
            .with_max_delay(max);
        match patience {
            Patience::Attempts(n) => builder.with_max_times(n.saturating_sub(1) as usize),
            Patience::Until(_) | Patience::Forever => builder.without_max_times(),
        }
    }
}

impl Default for ExecutorLimits {
    fn default() -> Self {
        ExecutorLimits {
            attempts: 8,
            backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            route53_max_backoff: Duration::from_secs(1),
            poll: Duration::from_secs(2),
            not_found_grace: Duration::from_secs(60),
            insync_timeout: Duration::from_secs(5 * 60),
            alert_every: Duration::from_secs(60),
            lease_poll: Duration::from_secs(5),
        }
    }
}

/// Runs (or resumes) the failover recorded in the journal at `path`.
pub struct Executor<'a, C, D, V> {
    /// ElastiCache in the DR region.
    pub cache: &'a C,
    /// Route 53.
    pub dns: &'a D,
    /// Real-traffic checks.
    pub verify: &'a V,
    /// The journal file.
    pub path: PathBuf,
    /// Loop bounds.
    pub limits: ExecutorLimits,
    /// Called after every journal write, for `failover_step` events and logs.
    pub progress: &'a (dyn Fn(&Journal, &JournalEntry) + Send + Sync),
    /// Called when a step keeps retrying (at the first retry, then every
    /// [`ExecutorLimits::alert_every`]), so a long Route 53 outage is never silent.
    pub alert: &'a (dyn Fn(Step, &str) + Send + Sync),
    /// When this run took or renewed the lease, on the monotonic clock.
    pub lease_clock: LeaseClock,
    /// Gates and approvals; `None` for what is never held (failback, abort, tests).
    pub holding: Option<&'a Holding<'a>>,
}

/// When this run last took or renewed its lease, on the monotonic clock. The lease record
/// carries a wall-clock expiry, which other agents read; within one run the executor also
/// counts the lease's life on a clock that NTP cannot step back, and trusts the shorter of
/// the two.
#[derive(Debug, Default)]
pub struct LeaseClock(std::sync::Mutex<Option<tokio::time::Instant>>);

impl LeaseClock {
    fn start(&self, at: tokio::time::Instant) {
        if let Ok(mut taken) = self.0.lock() {
            *taken = Some(at);
        }
    }

    /// How long a lease valid for `valid_for` has left by the monotonic clock, if this run
    /// took it.
    fn left(&self, valid_for: Duration) -> Option<Duration> {
        let taken = (*self.0.lock().ok()?)?;
        Some(valid_for.saturating_sub(taken.elapsed()))
    }
}

impl<C: CacheApi, D: DnsApi, V: Verifier> Executor<'_, C, D, V> {
    /// Runs every step not yet done, in order. Returns the finished journal.
    pub async fn run(&self, mut journal: Journal) -> Result<Journal, (Journal, FailoverError)> {
        journal.runs += 1;
        if let Err(e) = self.save(&journal) {
            return Err((journal, e));
        }
        for step in journal.plan.steps() {
            if journal.done(step) {
                continue;
            }
            if let Err(e) = self.hold_before(&mut journal, step).await {
                journal.outcome = Some(match &e {
                    FailoverError::GateAborted { .. } => FailoverOutcome::Aborted {
                        reason: e.to_string(),
                    },
                    FailoverError::StoodDown { holder } => FailoverOutcome::StoodDown {
                        reason: holder.clone(),
                    },
                    other => FailoverOutcome::Failed {
                        step,
                        error: other.to_string(),
                    },
                });
                if journal.lease.is_some()
                    && let Ok(released) = self.release(&mut journal).await
                {
                    tracing::info!("{released}");
                    journal.lease = None;
                }
                let _ = self.save(&journal);
                return Err((journal, e));
            }
            if let Err(e) = self.record(&mut journal, step, Phase::Started, String::new()) {
                return Err((journal, e));
            }
            test_hooks::crash_point(step, Phase::Started);
            match self.step(&mut journal, step).await {
                Ok(detail) => {
                    if let Err(e) = self.record(&mut journal, step, Phase::Done, detail) {
                        return Err((journal, e));
                    }
                    test_hooks::crash_point(step, Phase::Done);
                }
                Err(e) => {
                    // The outcome is written with the failure, so a restart does not resume a
                    // failover that stopped for good (a foreign record, a failed build, a
                    // held lease): people decide what happens next.
                    journal.outcome = Some(match &e {
                        FailoverError::StoodDown { holder } => FailoverOutcome::StoodDown {
                            reason: holder.clone(),
                        },
                        other => FailoverOutcome::Failed {
                            step,
                            error: other.to_string(),
                        },
                    });
                    // A failover that stops for good gives its lease back at once, so that it
                    // never blocks the next failover (or another agent) until it expires.
                    // It is handed over, with the reason, so that agents waiting on it take
                    // over at their next look.
                    let mut detail = e.to_string();
                    if journal.lease.is_some() && step != Step::Release {
                        let reason =
                            format!("{} at {}: {detail}", journal.plan.owner, step.as_str());
                        if let Ok(released) = self.give_back(&mut journal, Some(&reason)).await {
                            detail = format!("{detail}; {released}");
                        }
                        journal.lease = None;
                    }
                    let _ = self.record(&mut journal, step, Phase::Failed, detail);
                    return Err((journal, e));
                }
            }
        }
        journal.outcome = Some(FailoverOutcome::Completed);
        if let Err(e) = self.save(&journal) {
            return Err((journal, e));
        }
        Ok(journal)
    }

    /// Ends an unfinished failover on purpose: gives its lease back and, with `delete_dr`,
    /// deletes the DR cache, but only one this failover built (its tag) and only while the
    /// record does not point at it. The record itself is never changed here: after a switch,
    /// going back is a failback. Returns the journal (outcome `aborted`) and what was done.
    pub async fn abort(
        &self,
        mut journal: Journal,
        reason: &str,
        delete_dr: bool,
    ) -> Result<(Journal, String), (Journal, FailoverError)> {
        let plan = journal.plan.clone();
        // Before the switch began, the journal alone says the record was not moved by this
        // failover: Route 53, which may be what it waits on, is not asked.
        let switch_begun = journal.started(Step::SwitchDns) || journal.change_id.is_some();
        let (switched, said) = if switch_begun {
            let current = match self
                .retry(Step::SwitchDns, || {
                    self.dns.record(&plan.hosted_zone_id, &plan.record, "CNAME")
                })
                .await
            {
                Ok(current) => current,
                Err(e) => return Err((journal, e)),
            };
            match (&current, &journal.endpoint) {
                (Some(r), Some((host, _))) if points_at(r, host) => (
                    true,
                    format!(
                        "points at the DR cache ({}); fail back to undo it",
                        describe(current.as_ref())
                    ),
                ),
                _ => (
                    false,
                    format!("was not switched ({})", describe(current.as_ref())),
                ),
            }
        } else {
            (
                false,
                "was not switched: this failover stopped before the switch".to_owned(),
            )
        };
        let mut done = vec![format!("{} {said}", plan.record)];
        if journal.lease.is_some() {
            match self.release(&mut journal).await {
                Ok(released) => done.push(released),
                Err(e) => return Err((journal, e)),
            }
            journal.lease = None;
        }
        if delete_dr {
            let name = plan.cache.name().to_owned();
            // A cache just created may not show in Describe yet, and shows its tags only once
            // it leaves `creating`: both are waited for, bounded.
            let deadline = tokio::time::Instant::now() + plan.create_timeout;
            done.push(if switched {
                format!("{name} kept: the record points at it")
            } else {
                match wait::settled_tags(self.cache, &name, deadline, self.limits.polling()).await {
                    Ok(None) => format!("{name} does not exist: nothing to delete"),
                    Ok(Some((_, tags))) if tags.get(FAILOVER_TAG) == Some(&plan.failover_id) => {
                        match self.retry(Step::Provision, || self.cache.delete(&name)).await {
                            Ok(()) => format!("deleting {name}"),
                            Err(e) => return Err((journal, e)),
                        }
                    }
                    Ok(Some(_)) => format!("{name} kept: it is not this failover's"),
                    Err(e) => format!(
                        "{name} kept: whose it is could not be read ({e}); delete it by hand if it is"
                    ),
                }
            });
        }
        journal.outcome = Some(FailoverOutcome::Aborted {
            reason: reason.to_owned(),
        });
        if let Some(hold) = journal.holds.last_mut().filter(|h| h.ended.is_none()) {
            hold.ended = Some(SystemTime::now());
            hold.how = Some(HoldEnd::Aborted);
        }
        if let Err(e) = self.save(&journal) {
            return Err((journal, e));
        }
        Ok((journal, done.join("; ")))
    }

    /// Holds the failover before `step` while a gate there is closed or (`plan.approval`,
    /// before `switch_dns`) until a person approves: journalled, announced at once and every
    /// `reminder_interval`, the gates checked again every `gate_interval`. An approval lets
    /// it through whatever the gates say (a person decided, and the journal says who). Gates
    /// at `provision` stand before the lease, so nothing is taken or built while they hold;
    /// a step already begun (before a crash) passed its gates then and is not held again,
    /// and neither is one whose hold a person approved.
    async fn hold_before(&self, j: &mut Journal, step: Step) -> Result<(), FailoverError> {
        /// Says "not held" however the hold ends: passed, failed, or its task aborted (an
        /// abort, a shutdown), so that no approval is taken for a hold that is gone.
        struct NotHeldAfter<'a>(Option<&'a Approvals>);
        impl Drop for NotHeldAfter<'_> {
            fn drop(&mut self) {
                if let Some(approvals) = self.0 {
                    approvals.set_held(None);
                }
            }
        }
        let _not_held_after = NotHeldAfter(self.holding.map(|h| h.approvals));
        self.hold_until_passed(j, step).await
    }

    async fn hold_until_passed(&self, j: &mut Journal, step: Step) -> Result<(), FailoverError> {
        let Some(h) = self.holding else {
            return Ok(());
        };
        let Some(point) = HoldPoint::before(step, &j.plan) else {
            return Ok(());
        };
        if !point.holds(j, h, step) {
            // Nothing holds it (any more: the config may have changed since a restart).
            if end_hold(j, HoldEnd::Lifted) {
                self.save(j)?;
                (h.news)(j, &HoldNews::Opened);
            }
            return Ok(());
        }
        let mut reminder = Reminder {
            next: tokio::time::Instant::now(),
            first: true,
        };
        loop {
            let passage = match hold_answer(h, j, &point).await {
                HoldAnswer::Approved(a) => return self.pass_approved(j, h, &point, a),
                // Woken by an approval that is not for this hold (stale): check again.
                HoldAnswer::Stale => continue,
                HoldAnswer::Gates(passage) => passage,
            };
            let (gate, answer) = match passage {
                Passage::Abort { gate, answer } => {
                    end_hold(j, HoldEnd::Aborted);
                    return Err(FailoverError::GateAborted {
                        gate,
                        step: point.step,
                        answer,
                    });
                }
                Passage::Open if !point.approval => {
                    if end_hold(j, HoldEnd::Opened) {
                        self.save(j)?;
                        (h.news)(j, &HoldNews::Opened);
                    }
                    return Ok(());
                }
                Passage::Open => (String::new(), "waiting for a person's approval".to_owned()),
                Passage::Held { gate, answer } => (gate, answer),
            };
            let hold = open_hold(j, point.step, point.approval);
            hold.gate = gate;
            hold.answer = answer;
            hold.checks += 1;
            self.save(j)?;
            h.approvals
                .set_held(Some((j.plan.failover_id.clone(), point.step)));
            reminder.announce(h, j);
            self.keep_lease_until_next_check(j, h).await?;
        }
    }

    /// Journals a person's approval of the hold at `point` and lets the failover go on. A
    /// hold approved before its first gate check answered is journalled all the same, so the
    /// record still says who.
    fn pass_approved(
        &self,
        j: &mut Journal,
        h: &Holding<'_>,
        point: &HoldPoint,
        a: Approval,
    ) -> Result<(), FailoverError> {
        let hold = open_hold(j, point.step, point.approval);
        if hold.checks == 0 {
            hold.answer = "approved before the first gate check answered".into();
        }
        hold.approved_by = Some(a.by.clone());
        end_hold(j, HoldEnd::Approved);
        self.save(j)?;
        h.approvals.recorded.send_modify(|n| *n += 1);
        (h.news)(j, &HoldNews::Approved(a));
        Ok(())
    }

    /// Waits until the next gate check, or until an approval arrives. The lease is kept
    /// alive meanwhile (a hold may last hours), at least four times per lease life, so that
    /// other agents keep standing down instead of taking it over as stale; each renewal is
    /// bounded, so that a Route 53 outage never keeps an approval waiting.
    async fn keep_lease_until_next_check(
        &self,
        j: &mut Journal,
        h: &Holding<'_>,
    ) -> Result<(), FailoverError> {
        let next_check = tokio::time::Instant::now() + h.gate_interval;
        let renew_every = j.plan.lease.map_or(h.gate_interval, |valid_for| {
            (valid_for / 4).max(Duration::from_secs(1))
        });
        loop {
            if j.lease.is_some() {
                self.renew_lease_while_held(j, renew_every.min(h.gate_interval))
                    .await?;
            }
            let wake = next_check.min(tokio::time::Instant::now() + renew_every);
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                () = h.approvals.arrived.notified() => return Ok(()),
            }
            if tokio::time::Instant::now() >= next_check {
                return Ok(());
            }
        }
    }

    /// One renewal of the lease during a hold, given up after `bound`; only a lease another
    /// agent took ends the hold (stood down), anything else is tried again later.
    async fn renew_lease_while_held(
        &self,
        j: &mut Journal,
        bound: Duration,
    ) -> Result<(), FailoverError> {
        match tokio::time::timeout(bound, self.renew_lease(j)).await {
            Ok(Err(e @ FailoverError::StoodDown { .. })) => {
                end_hold(j, HoldEnd::StoodDown);
                return Err(e);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "lease not renewed while held"),
            Ok(Ok(())) => {}
            Err(_) => tracing::warn!("lease renewal still running; trying again later"),
        }
        Ok(())
    }

    fn save(&self, journal: &Journal) -> Result<(), FailoverError> {
        store::write_json(&self.path, journal)
            .map_err(|e| FailoverError::Journal(crate::text::chain(&e)))
    }

    fn record(
        &self,
        journal: &mut Journal,
        step: Step,
        phase: Phase,
        detail: String,
    ) -> Result<(), FailoverError> {
        let entry = JournalEntry {
            step,
            phase,
            at: SystemTime::now(),
            detail,
        };
        journal.entries.push(entry.clone());
        self.save(journal)?;
        (self.progress)(journal, &entry);
        Ok(())
    }

    async fn step(&self, j: &mut Journal, step: Step) -> Result<String, FailoverError> {
        match step {
            Step::Lease => self.lease(j).await,
            Step::Provision => self.provision(j).await,
            Step::WaitAvailable => self.wait_available(j).await,
            Step::VerifyDirect => {
                let (host, port) = j.endpoint.clone().ok_or_else(|| FailoverError::Verify {
                    step: "verify_direct",
                    message: "no endpoint recorded".into(),
                })?;
                let standby = j.plan.standby.clone();
                self.verify
                    .direct(&host, port)
                    .await
                    .map(|()| format!("PING/SET/GET ok on {host}:{port}"))
                    .map_err(|f| {
                        if f.own_side {
                            FailoverError::OwnSide {
                                step: "verify_direct",
                                message: f.message,
                            }
                        } else if standby.is_some() {
                            FailoverError::StandbyDown {
                                name: j.plan.cache.name().to_owned(),
                                message: f.message,
                            }
                        } else {
                            FailoverError::Verify {
                                step: "verify_direct",
                                message: f.message,
                            }
                        }
                    })
            }
            Step::SwitchDns => self.switch_dns(j).await,
            Step::WaitInsync => self.wait_insync(j).await,
            Step::VerifyDns => {
                let (host, _) = j.endpoint.clone().ok_or_else(|| FailoverError::Verify {
                    step: "verify_dns",
                    message: "no endpoint recorded".into(),
                })?;
                self.verify
                    .through_record(&host)
                    .await
                    .map(|()| format!("{} resolves to {host} and answers", j.plan.record))
                    .map_err(|message| FailoverError::Verify {
                        step: "verify_dns",
                        message,
                    })
            }
            Step::Release => self.release(j).await,
            Step::DeleteDr => self.delete_dr(j).await,
            Step::FlushPrimary => self.flush_primary(j).await,
            Step::EmptyStandby => self.empty_standby(j).await,
        }
    }

    /// Empties the warm standby after a failback: the record points back at the primary
    /// (`verify_dns` proved it), so the standby serves nobody but clients still on the old
    /// answer for one TTL, whose writes the primary does not have either. Idempotent: a
    /// resumed run flushes again.
    async fn empty_standby(&self, j: &mut Journal) -> Result<String, FailoverError> {
        let Some((host, port)) = j.plan.standby.clone() else {
            return Ok("no warm standby".into());
        };
        let failed = |f: VerifyFailure| FailoverError::Verify {
            step: "empty_standby",
            message: format!("the warm standby {host}:{port}: {}", f.message),
        };
        let before = self.verify.count_keys(&host, port).await.map_err(failed)?;
        self.verify.flush(&host, port).await.map_err(failed)?;
        let after = self.verify.count_keys(&host, port).await.map_err(failed)?;
        Ok(format!(
            "emptied the warm standby {host}:{port} ({}): {before} keys before, {after} after; it is the standby again",
            FLUSH_COMMAND.join(" ")
        ))
    }

    /// Empties the old primary before a failback points the record at it, so that the
    /// sessions it held when the region failed (some logged out or revoked since) do not
    /// become valid again. Idempotent and crash-safe: it never runs once the switch has
    /// begun, and before flushing it reads the record again, because on a resumed run hours
    /// may have passed and someone may have pointed the record at the primary meanwhile: a
    /// primary the record points at serves live sessions and is never emptied. The key
    /// count before the first flush is journalled before the flush is sent, so a run resumed
    /// after a crash flushes again but still says what the first one found.
    async fn flush_primary(&self, j: &mut Journal) -> Result<String, FailoverError> {
        let (host, port) = j.endpoint.clone().ok_or_else(|| FailoverError::Verify {
            step: "flush_primary",
            message: "no primary endpoint recorded".into(),
        })?;
        let record = j.plan.record.clone();
        if j.started(Step::SwitchDns) || j.change_id.is_some() {
            return Ok(format!(
                "not emptied: the switch of {record} to {host} has begun, so the primary may serve live sessions"
            ));
        }
        let plan = j.plan.clone();
        let current = self
            .retry_route53(j, Step::FlushPrimary, || {
                self.dns.record(&plan.hosted_zone_id, &plan.record, "CNAME")
            })
            .await?;
        if current.as_ref().is_some_and(|r| points_at(r, &host)) {
            return Ok(format!(
                "not emptied: {record} already points at the primary {host}, which serves live sessions"
            ));
        }
        if let Kind::Failback { from, .. } = &plan.kind
            && !current.as_ref().is_some_and(|r| points_at(r, from))
        {
            return Err(FailoverError::RecordChanged {
                record,
                found: format!(
                    "{}, not the DR cache {from} it pointed at when the failback began",
                    describe(current.as_ref())
                ),
            });
        }
        let failed = |f: VerifyFailure| FailoverError::Verify {
            step: "flush_primary",
            message: f.message,
        };
        if j.flushed.is_none() {
            let keys_before = self.verify.count_keys(&host, port).await.map_err(failed)?;
            j.flushed = Some(Flushed {
                endpoint: format!("{host}:{port}"),
                command: FLUSH_COMMAND.join(" "),
                keys_before,
                keys_after: None,
                sent: 0,
            });
            self.save(j)?;
        }
        self.verify.flush(&host, port).await.map_err(failed)?;
        if let Some(f) = &mut j.flushed {
            f.sent += 1;
        }
        self.save(j)?;
        let keys_after = self.verify.count_keys(&host, port).await.map_err(failed)?;
        let Some(f) = &mut j.flushed else {
            return Err(FailoverError::Journal("the flush record vanished".into()));
        };
        f.keys_after = Some(keys_after);
        let again = if f.sent > 1 {
            format!(" (sent {} times: resumed before the switch)", f.sent)
        } else {
            String::new()
        };
        Ok(format!(
            "{} on {}: {} keys before, {keys_after} after{again}",
            f.command, f.endpoint, f.keys_before
        ))
    }

    /// Deletes the DR cache after a failback, only if a failover of valkey-dr built it: a
    /// cache without our [`FAILOVER_TAG`] (a warm standby adopted with `adopt_existing`, or
    /// one somebody made under the DR name) is kept and the step says so, because deleting
    /// what we did not build is never ours to do.
    async fn delete_dr(&self, j: &Journal) -> Result<String, FailoverError> {
        let name = j.plan.cache.name().to_owned();
        let deadline = tokio::time::Instant::now() + j.plan.create_timeout;
        let tags = wait::settled_tags(self.cache, &name, deadline, self.limits.polling())
            .await
            .map_err(|source| FailoverError::Api {
                step: "delete_dr",
                source,
            })?;
        match tags {
            None => Ok(format!("{name} does not exist: nothing to delete")),
            Some((_, tags)) if tags.contains_key(FAILOVER_TAG) => self
                .retry(Step::DeleteDr, || self.cache.delete(&name))
                .await
                .map(|()| format!("deleting {name}")),
            Some(_) => {
                tracing::warn!(cache = %name, "not deleting the DR cache: it carries no {FAILOVER_TAG} tag, so no failover of valkey-dr built it");
                Ok(format!(
                    "{name} kept: it carries no {FAILOVER_TAG} tag, so valkey-dr did not build it; delete it by hand if it should go"
                ))
            }
        }
    }

    /// Retries `call` on transient errors with bounded exponential backoff, at most
    /// [`ExecutorLimits::attempts`] calls: for what is not on the outage's clock.
    async fn retry<T, F, Fut>(&self, step: Step, call: F) -> Result<T, FailoverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retry_until(
            None,
            step,
            Patience::Attempts(self.limits.attempts),
            self.limits.max_backoff,
            call,
        )
        .await
    }

    /// Retries a DR-region call of the build until `deadline`: in a regional event every
    /// customer's DR automation calls the DR region at once, and throttling then is the
    /// control plane at its busiest, not a reason to give up (issue 20). People hear of it
    /// at the first retry and every [`ExecutorLimits::alert_every`].
    async fn retry_build<T, F, Fut>(
        &self,
        deadline: tokio::time::Instant,
        call: F,
    ) -> Result<T, FailoverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retry_until(
            None,
            Step::Provision,
            Patience::Until(deadline),
            self.limits.max_backoff,
            call,
        )
        .await
    }

    /// Route 53's control plane is served from us-east-1, which may be the region that
    /// failed: a transient Route 53 error is retried until it passes, at least once every
    /// [`ExecutorLimits::route53_max_backoff`], with an alert at the first retry and every
    /// [`ExecutorLimits::alert_every`] after, never given up on quietly. Once the DR cache is
    /// built and verified, the alert says so: only Route 53 holds the failover then. Only a
    /// shutdown stops it, and the journal then resumes the step on the next start.
    async fn retry_route53<T, F, Fut>(
        &self,
        j: &Journal,
        step: Step,
        call: F,
    ) -> Result<T, FailoverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        self.retry_until(
            Some(j),
            step,
            Patience::Forever,
            self.limits.route53_max_backoff,
            call,
        )
        .await
    }

    async fn retry_until<T, F, Fut>(
        &self,
        j: Option<&Journal>,
        step: Step,
        patience: Patience,
        max_delay: Duration,
        call: F,
    ) -> Result<T, FailoverError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ApiError>>,
    {
        let started = tokio::time::Instant::now();
        let mut next_alert = started;
        let mut attempt = 1;
        call.retry(self.limits.backoff(patience, max_delay))
            .sleep(tokio::time::sleep)
            .when(|e| {
                e.is_transient()
                    && match patience {
                        Patience::Until(deadline) => tokio::time::Instant::now() < deadline,
                        Patience::Attempts(_) | Patience::Forever => true,
                    }
            })
            .notify(|e, _| {
                tracing::warn!(step = step.as_str(), attempt, error = %e, "retrying");
                let alerts = !matches!(patience, Patience::Attempts(_));
                if alerts && tokio::time::Instant::now() >= next_alert {
                    let waited = crate::text::seconds(started.elapsed());
                    let message = match j.and_then(ready_for_switch) {
                        Some(ready) => format!(
                            "{ready}; Route 53's API has not answered for {waited} ({attempt} attempts: {e}); the record moves as soon as it does"
                        ),
                        None => format!("still retrying after {waited} ({attempt} attempts): {e}"),
                    };
                    (self.alert)(step, &message);
                    next_alert = tokio::time::Instant::now() + self.limits.alert_every;
                }
                attempt += 1;
            })
            .await
            .map_err(|source| FailoverError::Api {
                step: step.as_str(),
                source,
            })
    }

    /// Reads the record (the `DELETE` half of the switch) and takes the lease for the switch.
    /// The DR cache is built and verified by now: the lease guards the record, not the build
    /// (the fixed DR name, `AlreadyExists` and the tags already make the build exclusive).
    async fn lease(&self, j: &mut Journal) -> Result<String, FailoverError> {
        if j.old_target.is_none() {
            j.old_target = self.record_to_replace(j).await?;
            self.save(j)?;
        }
        let plan = j.plan.clone();
        if plan.kind == Kind::Failover {
            if let Some(done) = self.switched_by_another(j, j.old_target.as_ref()) {
                return Err(done);
            }
            if let Some(expected) = &plan.expected_target
                && !j
                    .old_target
                    .as_ref()
                    .is_some_and(|r| points_at(r, expected))
            {
                return Err(FailoverError::RecordChanged {
                    record: plan.record.clone(),
                    found: format!(
                        "{}, not the primary {expected} it pointed at when the failover began",
                        describe(j.old_target.as_ref())
                    ),
                });
            }
        }
        let Some(valid_for) = plan.lease else {
            return Ok("leases off".into());
        };
        let name = plan.lease_name();
        // Read before the call, like the expiry: the lease's life is never overestimated.
        let taking_at = tokio::time::Instant::now();
        let expires = SystemTime::now() + valid_for;
        let ours = RecordSet {
            name: name.clone(),
            rtype: "TXT".into(),
            ttl: LEASE_TTL,
            values: vec![lease_value(&plan, expires)],
        };
        let take = [Change::Create(ours.clone())];
        match self
            .retry_route53(j, Step::Lease, || {
                self.dns.change(&plan.hosted_zone_id, &take)
            })
            .await
        {
            Ok(_) => {
                j.lease = Some(ours);
                self.lease_clock.start(taking_at);
                Ok(format!("took {name}"))
            }
            Err(FailoverError::Api {
                source: ApiError::Conflict { .. },
                ..
            }) => self.take_existing_lease(j, ours, taking_at).await,
            Err(e) => Err(e),
        }
    }

    /// A failover whose record another agent already pointed at the DR cache this one built
    /// or adopted: that failover is done, and this agent follows it.
    fn switched_by_another(
        &self,
        j: &Journal,
        record: Option<&RecordSet>,
    ) -> Option<FailoverError> {
        let (host, _) = j.endpoint.as_ref()?;
        record
            .filter(|r| points_at(r, host))
            .map(|r| FailoverError::StoodDown {
                holder: format!(
                    "another agent already pointed {} at the DR cache ({})",
                    j.plan.record,
                    describe(Some(r))
                ),
            })
    }

    /// The record's current value, read once before anything changes: it is the `DELETE`
    /// half of the later compare-and-swap. A failback moves the record only from the DR
    /// endpoint it was asked to move it from (or finds it already on the primary): anything
    /// else is someone else's.
    async fn record_to_replace(&self, j: &Journal) -> Result<Option<RecordSet>, FailoverError> {
        let plan = &j.plan;
        let current = self
            .retry_route53(j, Step::Lease, || {
                self.dns.record(&plan.hosted_zone_id, &plan.record, "CNAME")
            })
            .await?;
        if let Kind::Failback { from, .. } = &plan.kind {
            let home = j
                .endpoint
                .as_ref()
                .map(|(h, _)| h.as_str())
                .unwrap_or_default();
            if !current
                .as_ref()
                .is_some_and(|r| points_at(r, from) || points_at(r, home))
            {
                return Err(FailoverError::RecordChanged {
                    record: plan.record.clone(),
                    found: format!(
                        "{}, neither the DR cache {from} nor the primary {home}",
                        describe(current.as_ref())
                    ),
                });
            }
        }
        Ok(current)
    }

    /// The lease record exists already: ours from a previous run (resumed) or from a call
    /// whose answer was lost, stale (taken over), or another agent's. Another agent's live
    /// lease is waited on, not given up to: its holder may fail at the switch and hand over
    /// (an expired lease with its reason), and this agent then takes over within one
    /// [`ExecutorLimits::lease_poll`]; once the record points at the DR cache, the holder's
    /// failover is done and this one stands down to follow it.
    async fn take_existing_lease(
        &self,
        j: &mut Journal,
        ours: RecordSet,
        taking_at: tokio::time::Instant,
    ) -> Result<String, FailoverError> {
        let zone = j.plan.hosted_zone_id.clone();
        let name = ours.name.clone();
        let mut waiting_since: Option<tokio::time::Instant> = None;
        loop {
            let existing = self
                .retry_route53(j, Step::Lease, || self.dns.record(&zone, &name, "TXT"))
                .await?;
            let Some(existing) = existing else {
                // Released meanwhile (or it vanished while we read it): take it now.
                let take = [Change::Create(ours.clone())];
                if self.take_with(j, &take, &ours, taking_at).await? {
                    return Ok(format!("took {name} once it was released"));
                }
                continue;
            };
            let value = existing.values.join(" ");
            if lease_field(&value, "failover") == Some(j.plan.failover_id.as_str()) {
                j.lease = Some(existing);
                self.lease_clock.start(taking_at);
                return Ok(format!(
                    "{name} is already ours (resumed, or our answer was lost)"
                ));
            }
            let expiry = lease_expiry(&value);
            if expiry.is_none() {
                // Standing down for ever on a lease nobody can read would leave the cache
                // without a failover: it is stale, and taking it over is said out loud.
                (self.alert)(
                    Step::Lease,
                    &format!(
                        "the lease {name} holds no readable expiry ({value:?}): taking it over as stale"
                    ),
                );
            }
            if expiry.is_some_and(|t| t >= SystemTime::now()) {
                let current = self
                    .retry_route53(j, Step::Lease, || {
                        self.dns.record(&zone, &j.plan.record, "CNAME")
                    })
                    .await?;
                if let Some(done) = self.switched_by_another(j, current.as_ref()) {
                    return Err(done);
                }
                if waiting_since.is_none() {
                    waiting_since = Some(tokio::time::Instant::now());
                    (self.alert)(
                        Step::Lease,
                        &format!(
                            "another agent holds the lease ({value}): this agent waits, takes over if it is handed over or expires, and follows once the record points at the DR cache"
                        ),
                    );
                }
                tokio::time::sleep(self.limits.lease_poll).await;
                continue;
            }
            // A stale or handed-over lease: take it over with an exact DELETE of what we read
            // plus a CREATE, atomically, so two agents taking over at once cannot both win. A
            // refusal is read again rather than believed: our own takeover may have landed and
            // lost its answer (Route 53 has no idempotency token, and the SDK's re-send of the
            // exact DELETE then finds nothing), and standing down against ourselves would
            // block every agent until our lease expires.
            let takeover = [Change::Delete(existing), Change::Create(ours.clone())];
            if self.take_with(j, &takeover, &ours, taking_at).await? {
                return Ok(format!("took over the stale lease {value}"));
            }
        }
    }

    /// Sends `batch`, which makes `ours` the lease: `true` once it is ours; `false` when
    /// Route 53 refused it (someone was faster, or our own change landed and lost its
    /// answer), which only reading the lease again can tell apart.
    async fn take_with(
        &self,
        j: &mut Journal,
        batch: &[Change],
        ours: &RecordSet,
        taking_at: tokio::time::Instant,
    ) -> Result<bool, FailoverError> {
        let zone = j.plan.hosted_zone_id.clone();
        match self
            .retry_route53(j, Step::Lease, || self.dns.change(&zone, batch))
            .await
        {
            Ok(_) => {
                j.lease = Some(ours.clone());
                self.lease_clock.start(taking_at);
                Ok(true)
            }
            Err(FailoverError::Api {
                source: ApiError::Conflict { .. },
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Builds the DR cache, or adopts it. Transient errors are retried until
    /// `create_timeout` (counted from the step's first start, across restarts), as the wait
    /// after it is.
    async fn provision(&self, j: &mut Journal) -> Result<String, FailoverError> {
        if let Some((host, port)) = j.plan.standby.clone() {
            let detail = format!(
                "the warm standby {} at {host}:{port}, serving in the agent's last round: nothing built, no API called",
                j.plan.cache.name()
            );
            j.endpoint = Some((host, port));
            return Ok(detail);
        }
        let spec = j.plan.cache.clone();
        let name = spec.name().to_owned();
        let deadline = tokio::time::Instant::now()
            + j.plan
                .create_timeout
                .saturating_sub(waited_in(j, Step::Provision));
        if let Some(found) = self
            .retry_build(deadline, || self.cache.describe(&name))
            .await?
        {
            return self.adopt(j, found).await;
        }
        match self
            .retry_build(deadline, || self.cache.create(&spec))
            .await
        {
            Ok(info) => {
                let detail = format!("created {} ({:?})", info.name, info.status);
                j.endpoint = info.endpoint;
                Ok(detail)
            }
            // An SDK retry of a Create that had reached AWS, a previous run that crashed after
            // its Create, or a race: the cache exists, though Describe may not show it for a
            // few seconds yet (eventual consistency). Whose it is, the tags decide.
            Err(FailoverError::Api {
                source: ApiError::AlreadyExists { .. },
                ..
            }) => {
                if let Ok(Some(found)) = self.cache.describe(&name).await {
                    leftover(&found)?;
                }
                let deadline = tokio::time::Instant::now() + j.plan.create_timeout;
                let (found, tags) = self.settled(&name, deadline).await?;
                self.adopt_tagged(j, found, tags)
            }
            Err(e) => Err(e),
        }
    }

    async fn adopt(&self, j: &mut Journal, found: CacheInfo) -> Result<String, FailoverError> {
        leftover(&found)?;
        // Tags cannot be read while the cache is `creating` (InvalidServerlessCacheStateFault):
        // a resumed run finds its own cache in that state, so it waits, bounded by the build's
        // own timeout.
        let deadline = tokio::time::Instant::now() + j.plan.create_timeout;
        let (found, tags) = self.settled(&found.name, deadline).await?;
        self.adopt_tagged(j, found, tags)
    }

    /// [`wait::settled_tags`] for the provision step: a cache that Describe stops finding is
    /// gone (deleted meanwhile), which stops the failover before the record is touched.
    async fn settled(
        &self,
        name: &str,
        deadline: tokio::time::Instant,
    ) -> Result<(CacheInfo, BTreeMap<String, String>), FailoverError> {
        match wait::settled_tags(self.cache, name, deadline, self.limits.polling()).await {
            Ok(Some(settled)) => Ok(settled),
            Ok(None) => Err(FailoverError::Verify {
                step: "provision",
                message: format!(
                    "{name} exists (CreateServerlessCache said so) but DescribeServerlessCaches has not found it for {}",
                    crate::text::duration(self.limits.not_found_grace)
                ),
            }),
            Err(source) => Err(FailoverError::Api {
                step: "provision",
                source,
            }),
        }
    }

    /// Adopts the cache of the DR name when it is this failover's, when another failover
    /// of the same watch and record that began within `create_timeout` built it (two agents
    /// raced to the build: one cache, and the loser uses the winner's), or with
    /// `adopt_existing`. Anything else is someone else's cache, or one an earlier failover
    /// left behind with that DR period's sessions in it (a failback without `--delete-dr`),
    /// and stops the failover. No Route 53 call is made here: nothing before the switch
    /// waits on Route 53's control plane.
    fn adopt_tagged(
        &self,
        j: &mut Journal,
        found: CacheInfo,
        tags: BTreeMap<String, String>,
    ) -> Result<String, FailoverError> {
        let plan = &j.plan;
        let built_by = tags.get(FAILOVER_TAG);
        let how = if built_by == Some(&plan.failover_id) {
            "built by this failover".to_owned()
        } else if let Some(other) = built_by.filter(|other| {
            tags.get(WATCH_TAG) == Some(&plan.watch)
                && tags.get(RECORD_TAG) == Some(&plan.record)
                && began_within(other, plan.create_timeout)
        }) {
            format!("built by failover {other} of the same watch and record, racing this one")
        } else if is_standby_of(&tags, &plan.watch, &plan.record) {
            "the warm standby of this watch".to_owned()
        } else if plan.adopt_existing {
            "adopt_existing".to_owned()
        } else {
            return Err(FailoverError::ForeignCache { name: found.name });
        };
        j.endpoint = found.endpoint;
        Ok(format!("adopted {} ({how})", found.name))
    }

    async fn wait_available(&self, j: &mut Journal) -> Result<String, FailoverError> {
        let name = j.plan.cache.name().to_owned();
        if j.plan.standby.is_some() {
            return Ok(format!(
                "skipped: the warm standby {name} was available and served in the agent's last round"
            ));
        }
        // A resumed run counts the time an earlier run already waited.
        let waited_before = waited_in(j, Step::WaitAvailable);
        let left = j.plan.create_timeout.saturating_sub(waited_before);
        let deadline = tokio::time::Instant::now() + left;
        match wait::until_available(
            self.cache,
            &name,
            deadline,
            waited_before,
            self.limits.polling(),
        )
        .await
        {
            Ok((host, port)) => {
                j.endpoint = Some((host.clone(), port));
                Ok(format!("available at {host}:{port}"))
            }
            Err(WaitError::CreateFailed { name } | WaitError::Deleting { name }) => {
                Err(FailoverError::CreateFailed { name })
            }
            Err(e @ WaitError::Vanished { .. }) => Err(FailoverError::Verify {
                step: "wait_available",
                message: e.to_string(),
            }),
            Err(WaitError::Timeout { name, waited, .. }) => {
                Err(FailoverError::CreateTimeout { name, waited })
            }
            Err(WaitError::Api(source)) => Err(FailoverError::Api {
                step: "wait_available",
                source,
            }),
        }
    }

    /// A lease that has used more than half its life is renewed before the record is
    /// touched, so that the swap never happens under a lease another agent may take over.
    async fn renew_lease(&self, j: &mut Journal) -> Result<(), FailoverError> {
        let plan = j.plan.clone();
        let (Some(lease), Some(valid_for)) = (j.lease.clone(), plan.lease) else {
            return Ok(());
        };
        let by_wall_clock = lease_expiry(&lease.values.join(" "))
            .and_then(|t| t.duration_since(SystemTime::now()).ok())
            .unwrap_or_default();
        let left = self
            .lease_clock
            .left(valid_for)
            .map_or(by_wall_clock, |by_monotonic| {
                by_monotonic.min(by_wall_clock)
            });
        if left >= valid_for / 2 {
            return Ok(());
        }
        let renewing_at = tokio::time::Instant::now();
        let renewed = RecordSet {
            values: vec![lease_value(&plan, SystemTime::now() + valid_for)],
            ..lease.clone()
        };
        let batch = [
            Change::Delete(lease.clone()),
            Change::Create(renewed.clone()),
        ];
        match self
            .retry_route53(j, Step::SwitchDns, || {
                self.dns.change(&plan.hosted_zone_id, &batch)
            })
            .await
        {
            Ok(_) => {
                j.lease = Some(renewed);
                self.lease_clock.start(renewing_at);
            }
            Err(FailoverError::Api {
                source: ApiError::Conflict { .. },
                ..
            }) => {
                // Either a previous run renewed it and crashed before saving, our renewal
                // landed and lost its answer, or the lease expired and someone else holds it.
                let name = plan.lease_name();
                let now = self
                    .retry_route53(j, Step::SwitchDns, || {
                        self.dns.record(&plan.hosted_zone_id, &name, "TXT")
                    })
                    .await?;
                match now {
                    Some(r)
                        if lease_field(&r.values.join(" "), "failover")
                            == Some(plan.failover_id.as_str()) =>
                    {
                        j.lease = Some(r)
                    }
                    other => {
                        return Err(FailoverError::StoodDown {
                            holder: format!(
                                "our lease expired before the DNS switch; now {}",
                                describe(other.as_ref())
                            ),
                        });
                    }
                }
            }
            Err(e) => return Err(e),
        }
        self.save(j)
    }

    async fn switch_dns(&self, j: &mut Journal) -> Result<String, FailoverError> {
        self.renew_lease(j).await?;
        let plan = j.plan.clone();
        let (host, _) = j.endpoint.clone().ok_or_else(|| FailoverError::Verify {
            step: "switch_dns",
            message: "no endpoint recorded".into(),
        })?;
        let target = format!("{}.", host.trim_end_matches('.'));
        let current = self
            .retry_route53(j, Step::SwitchDns, || {
                self.dns.record(&plan.hosted_zone_id, &plan.record, "CNAME")
            })
            .await?;
        if current.as_ref().is_some_and(|r| points_at(r, &target)) {
            return Ok(format!("{} already points at {target}", plan.record));
        }
        if current != j.old_target {
            return Err(FailoverError::RecordChanged {
                record: plan.record,
                found: describe(current.as_ref()),
            });
        }
        let changes = switch_batch(&plan, &target, current.as_ref(), j.lease.as_ref());
        match self
            .retry_route53(j, Step::SwitchDns, || {
                self.dns.change(&plan.hosted_zone_id, &changes)
            })
            .await
        {
            Ok(id) => {
                j.change_id = Some(id.clone());
                Ok(format!("{} → {target} ({id})", describe(current.as_ref())))
            }
            Err(FailoverError::Api {
                source: ApiError::Conflict { .. },
                ..
            }) => self.switch_refused(j, &target, current.as_ref()).await,
            Err(e) => Err(e),
        }
    }

    /// The compare of the switch failed: read again. Already ours is success (a previous
    /// run's change landed before the crash, or our change landed and lost its answer); a
    /// lease taken meanwhile stands this failover down; anything else belongs to someone
    /// else.
    async fn switch_refused(
        &self,
        j: &Journal,
        target: &str,
        current: Option<&RecordSet>,
    ) -> Result<String, FailoverError> {
        let plan = &j.plan;
        let now = self
            .retry_route53(j, Step::SwitchDns, || {
                self.dns.record(&plan.hosted_zone_id, &plan.record, "CNAME")
            })
            .await?;
        if now.as_ref().is_some_and(|r| points_at(r, target)) {
            return Ok(format!("{} already points at {target}", plan.record));
        }
        // The record is as we read it, so the lease failed the compare.
        if now.as_ref() == current
            && let Some(held) = &j.lease
        {
            let lease = self
                .retry_route53(j, Step::SwitchDns, || {
                    self.dns.record(&plan.hosted_zone_id, &held.name, "TXT")
                })
                .await?;
            if lease.as_ref() != Some(held) {
                return Err(FailoverError::StoodDown {
                    holder: format!(
                        "our lease was taken before the DNS switch; now {}",
                        describe(lease.as_ref())
                    ),
                });
            }
        }
        Err(FailoverError::RecordChanged {
            record: plan.record.clone(),
            found: describe(now.as_ref()),
        })
    }

    /// Until the change is in effect: `GetChange` says `INSYNC`, or the agent's own resolvers
    /// answer the new target from the zone's resolvers (Route 53's data plane), whichever comes
    /// first. `GetChange` is Route 53's control plane, which may be down with us-east-1 while
    /// clients already resolve to the DR cache; each call of it is bounded, and after
    /// `insync_timeout` people hear, every `alert_every`, what neither has shown yet. The
    /// journal says which of the two decided.
    async fn wait_insync(&self, j: &mut Journal) -> Result<String, FailoverError> {
        let Some(id) = j.change_id.clone() else {
            return Ok("no change of ours to wait for".into());
        };
        let host = j.endpoint.clone().map(|(h, _)| h).unwrap_or_default();
        let started = tokio::time::Instant::now();
        let mut next_alert = started + self.limits.insync_timeout;
        let call_bound = self.limits.poll.max(Duration::from_secs(5));
        loop {
            let api = match tokio::time::timeout(call_bound, self.dns.change_status(&id)).await {
                Ok(Ok(ChangeStatus::InSync)) => {
                    return Ok(format!("{id} INSYNC (decided by GetChange)"));
                }
                Ok(Ok(ChangeStatus::Pending)) => "PENDING".to_owned(),
                Ok(Err(e)) if !e.is_transient() => {
                    return Err(FailoverError::Api {
                        step: "wait_insync",
                        source: e,
                    });
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => format!("no answer in {}", crate::text::seconds(call_bound)),
            };
            if !host.is_empty() && self.verify.resolves_to(&host).await {
                return Ok(format!(
                    "{} resolves to {host} through this agent's resolvers (decided by the data plane; GetChange {id}: {api})",
                    j.plan.record
                ));
            }
            if tokio::time::Instant::now() >= next_alert {
                (self.alert)(
                    Step::WaitInsync,
                    &format!(
                        "{id} not in effect after {}: GetChange: {api}; {} does not resolve to {host} yet",
                        crate::text::seconds(started.elapsed()),
                        j.plan.record
                    ),
                );
                next_alert = tokio::time::Instant::now() + self.limits.alert_every;
            }
            tokio::time::sleep(self.limits.poll).await;
        }
    }

    async fn release(&self, j: &mut Journal) -> Result<String, FailoverError> {
        self.give_back(j, None).await
    }

    /// Drops the lease; with `failed`, hands it over instead: the record is replaced by one
    /// that expired now and says why, so that the agents waiting on it take over at their
    /// next look and people reading the zone see the reason.
    async fn give_back(
        &self,
        j: &mut Journal,
        failed: Option<&str>,
    ) -> Result<String, FailoverError> {
        let Some(lease) = j.lease.clone() else {
            return Ok("no lease held".into());
        };
        let zone = j.plan.hosted_zone_id.clone();
        let mut drop = vec![Change::Delete(lease.clone())];
        if let Some(reason) = failed {
            drop.push(Change::Create(RecordSet {
                values: vec![handed_over_value(&j.plan, SystemTime::now(), reason)],
                ..lease.clone()
            }));
        }
        let done = if failed.is_some() {
            "handed over"
        } else {
            "released"
        };
        match self
            .retry(Step::Release, || self.dns.change(&zone, &drop))
            .await
        {
            Ok(_) => Ok(format!("{done} {}", lease.name)),
            // Already gone (a previous run released it before crashing, or it was taken over
            // after expiring): nothing of ours is left to release.
            Err(FailoverError::Api {
                source: ApiError::Conflict { .. },
                ..
            }) => Ok(format!("{} was already released", lease.name)),
            // The failover itself is done; a lease that cannot be dropped expires on its own
            // and is then taken over safely, so this must not undo a finished failover.
            Err(e) => {
                (self.alert)(Step::Release, &format!("lease left to expire: {e}"));
                Ok(format!("{} left to expire: {e}", lease.name))
            }
        }
    }
}

/// Where a failover may be held before a step: the gate point, the hold's name in the
/// journal, and whether a person's approval is needed there.
struct HoldPoint {
    /// The gates' point, as `at` names it in the config.
    at: GateAt,
    /// The hold's step, named by the gate's point.
    step: Step,
    /// Whether a person must approve (`mode = "prepare"`, before `switch_dns` only).
    approval: bool,
}

impl HoldPoint {
    /// The point before `step` of `plan`, if a failover can be held there.
    fn before(step: Step, plan: &Plan) -> Option<HoldPoint> {
        let at = match (step, &plan.kind) {
            (Step::Provision, Kind::Failover) => GateAt::Provision,
            (Step::SwitchDns, Kind::Failover) => GateAt::SwitchDns,
            _ => return None,
        };
        let step = match at {
            GateAt::Provision => Step::Provision,
            GateAt::SwitchDns => Step::SwitchDns,
        };
        Some(HoldPoint {
            at,
            step,
            approval: at == GateAt::SwitchDns && plan.approval,
        })
    }

    /// Whether anything holds the failover here before `step`: not once `step` began (its
    /// gates were passed before a crash), nor after a person approved this hold, nor when
    /// neither an approval nor a gate is configured here.
    fn holds(&self, j: &Journal, h: &Holding<'_>, step: Step) -> bool {
        let approved_before = j
            .holds
            .iter()
            .any(|held| held.step == self.step && held.how == Some(HoldEnd::Approved));
        !j.started(step) && !approved_before && (self.approval || h.gates.any_at(self.at))
    }
}

/// What ended one wait of a hold.
enum HoldAnswer {
    /// A person approved this hold.
    Approved(Approval),
    /// The gates answered.
    Gates(Passage),
    /// An approval for another hold (stale) woke it.
    Stale,
}

/// The next answer for the hold at `point`. A person's approval arrives at any time, also in
/// the middle of a gate check: the check is then abandoned (its process group killed).
async fn hold_answer(h: &Holding<'_>, j: &Journal, point: &HoldPoint) -> HoldAnswer {
    let id = &j.plan.failover_id;
    if let Some(a) = h.approvals.take(id, point.step) {
        return HoldAnswer::Approved(a);
    }
    let input = gate_input(j, point.at);
    let passage = tokio::select! {
        passage = h.gates.check(point.at, &input) => Some(passage),
        () = h.approvals.arrived.notified() => None,
    };
    match (h.approvals.take(id, point.step), passage) {
        (Some(a), _) => HoldAnswer::Approved(a),
        (None, Some(passage)) => HoldAnswer::Gates(passage),
        (None, None) => HoldAnswer::Stale,
    }
}

/// When a hold is announced again, and whether this run announced it yet.
struct Reminder {
    next: tokio::time::Instant,
    first: bool,
}

impl Reminder {
    /// Tells [`Holding::news`] of a check that still holds: announced when a reminder is due
    /// (`reminder_interval`), else only checked.
    fn announce(&mut self, h: &Holding<'_>, j: &Journal) {
        let now = tokio::time::Instant::now();
        if now >= self.next {
            (h.news)(j, &HoldNews::Held { first: self.first });
            self.first = false;
            self.next = now + h.reminder_interval;
        } else {
            (h.news)(j, &HoldNews::Checked);
        }
    }
}

/// The journal's open hold, or a new one before `step` (no check yet) when there is none.
fn open_hold(j: &mut Journal, step: Step, approval: bool) -> &mut Hold {
    if j.holds.last().is_none_or(|h| h.ended.is_some()) {
        j.holds.push(Hold {
            step,
            since: SystemTime::now(),
            gate: String::new(),
            answer: String::new(),
            approval,
            checks: 0,
            ended: None,
            how: None,
            approved_by: None,
        });
    }
    let last = j.holds.len() - 1;
    &mut j.holds[last]
}

/// Ends the journal's open hold, if there is one, saying `how`; whether there was one.
fn end_hold(j: &mut Journal, how: HoldEnd) -> bool {
    match j.holds.last_mut().filter(|h| h.ended.is_none()) {
        Some(hold) => {
            hold.ended = Some(SystemTime::now());
            hold.how = Some(how);
            true
        }
        None => false,
    }
}

/// What a gate is told (on stdin, or as a POST's body): which failover, before which step,
/// and what is ready.
pub fn gate_input(j: &Journal, at: GateAt) -> crate::gate::GateInput {
    crate::gate::GateInput {
        agent_id: j.plan.owner.clone(),
        at: at.as_str(),
        dr_cache: j.plan.cache.name().to_owned(),
        dr_endpoint: j
            .endpoint
            .as_ref()
            .map(|(h, p)| format!("{}:{p}", h.trim_end_matches('.'))),
        failover_id: j.plan.failover_id.clone(),
        held_since: j.held().map(|h| crate::text::rfc3339_seconds(h.since)),
        record: j.plan.record.clone(),
        watch: j.plan.watch.clone(),
    }
}

/// The switch as one batch: an exact `DELETE` of the record as read (when there is one) and
/// a `CREATE` pointing it at `target`. The lease rides in the same batch, as an exact
/// `DELETE` and `CREATE` of what we hold: Route 53 applies a batch whole or not at all, so
/// the record moves only while the lease is still ours, even if it expired and was taken
/// over a moment ago.
fn switch_batch(
    plan: &Plan,
    target: &str,
    current: Option<&RecordSet>,
    lease: Option<&RecordSet>,
) -> Vec<Change> {
    let new = RecordSet {
        name: plan.record.clone(),
        rtype: "CNAME".into(),
        ttl: plan.ttl,
        values: vec![target.to_owned()],
    };
    let mut changes = Vec::new();
    if let Some(old) = current {
        changes.push(Change::Delete(old.clone()));
    }
    changes.push(Change::Create(new));
    if let Some(lease) = lease {
        changes.push(Change::Delete(lease.clone()));
        changes.push(Change::Create(lease.clone()));
    }
    changes
}

fn points_at(r: &RecordSet, target: &str) -> bool {
    r.values
        .iter()
        .any(|v| valkey_dr_probes::same_name(v, target))
}

fn describe(r: Option<&RecordSet>) -> String {
    match r {
        Some(r) => format!("{} {} {}", r.rtype, r.values.join(","), r.ttl),
        None => "no record".into(),
    }
}

/// The lease's TXT value: who, which failover, until when (Unix seconds).
pub fn lease_value(plan: &Plan, expires: SystemTime) -> String {
    let secs = expires
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    format!(
        "\"owner={} failover={} expires={secs}\"",
        plan.owner, plan.failover_id
    )
}

/// One `key=value` field of a lease value, matched exactly (`fo-1` is not `fo-10`).
pub fn lease_field<'v>(value: &'v str, key: &str) -> Option<&'v str> {
    value
        .split(|c: char| c.is_whitespace() || c == '"')
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
}

/// When a lease value says it expires.
pub fn lease_expiry(value: &str) -> Option<SystemTime> {
    let secs = lease_field(value, "expires")?.parse::<u64>().ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// A lease handed over by a failover that failed: expired at `now`, with the reason as a
/// second string (printable ASCII without quotes or `=`, at most 200 characters, so that it
/// never reads as a field nor breaks the TXT value).
pub fn handed_over_value(plan: &Plan, now: SystemTime, reason: &str) -> String {
    let reason: String = reason
        .chars()
        .map(|c| match c {
            '=' => ':',
            '"' | '\\' => '\'',
            c if c.is_ascii_graphic() || c == ' ' => c,
            _ => '?',
        })
        .take(200)
        .collect();
    format!("{} \"handed over: {reason}\"", lease_value(plan, now))
}

/// Whether the failover `id` (`fo-20261126t071500z-…`, as `failover::new_failover_id` makes
/// them) began no longer than `window` ago; `false` for an id that carries no time.
pub(crate) fn began_within(id: &str, window: Duration) -> bool {
    let Some(stamp) = id
        .strip_prefix("fo-")
        .and_then(|rest| rest.split('-').next())
    else {
        return false;
    };
    if stamp.len() != 16 || !stamp.is_ascii() {
        return false;
    }
    let text = format!(
        "{}-{}-{}T{}:{}:{}Z",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    );
    humantime::parse_rfc3339(&text)
        .ok()
        .and_then(|began| SystemTime::now().duration_since(began).ok())
        .is_some_and(|ago| ago <= window)
}

/// How long the journal says `step` has run, from its first start: a resumed run counts the
/// time an earlier run already spent.
fn waited_in(j: &Journal, step: Step) -> Duration {
    j.entries
        .iter()
        .find(|e| e.step == step && e.phase == Phase::Started)
        .and_then(|e| SystemTime::now().duration_since(e.at).ok())
        .unwrap_or_default()
}

/// "the DR cache … is built and verified at …" once `verify_direct` passed and the record
/// has not moved yet: what only Route 53 then holds up.
fn ready_for_switch(j: &Journal) -> Option<String> {
    if j.plan.kind != Kind::Failover || j.done(Step::SwitchDns) {
        return None;
    }
    let verified = j.entry(Step::VerifyDirect, Phase::Done)?;
    let endpoint = j.endpoint.as_ref().map_or_else(String::new, |(h, p)| {
        format!(" ({}:{p})", h.trim_end_matches('.'))
    });
    Some(format!(
        "the DR cache {}{endpoint} is built and verified at {}",
        j.plan.cache.name(),
        crate::text::rfc3339_seconds(verified.at)
    ))
}

/// Crash points for the end-to-end crash-safety suite, compiled only into debug builds.
mod test_hooks {
    use super::{Phase, Step};

    /// `VALKEY_DR_TEST_CRASH_AT=<step>:<started|done>` aborts the process right after that
    /// journal entry is durable, as a `kill -9` would.
    pub fn crash_point(step: Step, phase: Phase) {
        if !cfg!(debug_assertions) {
            return;
        }
        let Ok(at) = std::env::var("VALKEY_DR_TEST_CRASH_AT") else {
            return;
        };
        let phase = match phase {
            Phase::Started => "started",
            Phase::Done => "done",
            Phase::Failed => return,
        };
        if at == format!("{}:{phase}", step.as_str()) {
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests;
