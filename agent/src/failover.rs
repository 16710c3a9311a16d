//! Failover and failback with the real AWS clients, shared by the daemon (automatic runs and
//! the manual ones it is asked for) and by the CLI when no agent is running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use valkey_dr_probes::{ProbeSpec, Prober};

use crate::config::{Config, WatchConfig};
use crate::executor::sdk::{SdkCache, SdkDns};
use crate::executor::verify::ProbeVerifier;
use crate::executor::{
    Approvals, Executor, ExecutorLimits, FailoverError, FailoverOutcome, Flushed, HoldNews,
    Holding, Journal, JournalEntry, Kind, LeaseClock, Phase, Plan, Step,
};
use crate::gate::Gates;
use crate::{aws, layout, plan, store};
use valkey_dr_policies::Unfinished;

/// Reads a watch's journal, if there is one.
pub fn load_journal(state_dir: &Path, watch: &str) -> Result<Option<Journal>, store::StoreError> {
    store::read_json(&layout::failover_journal(state_dir, watch))
}

/// The DR endpoint serving `watch`, when the agent's saved state says the DR cache serves it
/// and the last failover journal completed. Anything unreadable means "the primary".
pub fn active_dr_endpoint(config: &Config, watch: &str) -> Option<(String, u16)> {
    let state_dir = &config.agent.state_dir;
    let state =
        store::read_json::<valkey_dr_policies::WatchState>(&layout::state_file(state_dir, watch))
            .ok()??;
    if !state.served_by_dr {
        return None;
    }
    load_journal(state_dir, watch).ok()??.completed_endpoint()
}

/// A failover id: UTC time to the second, the agent, and a few random bits, so that agents
/// sharing one id (one config copied to several hosts) never share a failover.
pub fn new_failover_id(agent_id: &str, now: SystemTime) -> String {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("fo-{}-{agent_id}-{salt:04x}", compact_utc(now))
}

/// A failback id: `fb-` and the UTC time to the second.
pub fn new_failback_id(now: SystemTime) -> String {
    format!("fb-{}", compact_utc(now))
}

/// `20261126t071500z`: a UTC timestamp usable in names and tags.
pub fn compact_utc(t: SystemTime) -> String {
    crate::text::rfc3339_seconds(t)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// How a failover starts.
#[derive(Debug)]
pub enum Start {
    /// A new failover, its journal on disk.
    New(Journal),
    /// An unfinished one, from its journal.
    Resume(Journal),
}

/// Everything one watch's failover or failback needs: the DR region's ElastiCache, Route 53,
/// and probes built from the watch's own settings.
pub struct Runner {
    /// ElastiCache in the DR region.
    pub cache: SdkCache,
    /// Route 53.
    pub dns: SdkDns,
    /// Real-traffic checks of the DR cache (its own IAM tokens, when the watch uses IAM).
    verifier: ProbeVerifier,
    /// Real-traffic checks of the primary, for failback.
    primary_verifier: ProbeVerifier,
    /// The probes, and the watch's probe of the configured primary, for a failback's rounds.
    prober: Arc<Prober>,
    primary: ProbeSpec,
    /// The watch's probe aimed at the DR cache: what the agent probes once it serves.
    dr_spec: ProbeSpec,
    /// The primary's port, where a failback points the record back.
    primary_port: u16,
    /// `[watch.dr] standby = "warm"`: a failback that keeps the DR cache empties it, as the
    /// standby it is again.
    warm: bool,
    /// The watch's failover plan, less its id: failbacks are built from it.
    base: Plan,
    journal: PathBuf,
    failback_journal: PathBuf,
    limits: ExecutorLimits,
    /// The watch's `[[watch.gate]]`s.
    gates: Gates,
    /// How often closed gates are checked again, and a hold re-announced.
    gate_interval: Duration,
    reminder_interval: Duration,
    /// Where `valkey-dr approve` reaches a held failover (shared with the admin server).
    pub approvals: Arc<Approvals>,
}

impl Runner {
    /// A runner for `w`, probing as `spec` (the watch's probe of the primary) does.
    pub async fn new(
        config: &Config,
        w: &WatchConfig,
        prober: Arc<Prober>,
        spec: ProbeSpec,
        approvals: Arc<Approvals>,
    ) -> Self {
        let dr_spec = crate::spec::dr_spec(config, w, &spec).await;
        let cache = SdkCache::new(&aws::sdk_config(config, &w.dr.region).await);
        let dns = SdkDns::new(&aws::route53_for_failover(
            &aws::sdk_config(config, aws::route53_region(w)).await,
        ));
        Runner {
            cache,
            dns,
            verifier: ProbeVerifier::new(prober.clone(), dr_spec.clone(), w.ttl),
            primary_port: spec.port,
            warm: w.dr.standby == crate::config::StandbyMode::Warm,
            primary_verifier: ProbeVerifier::new(prober.clone(), spec.clone(), w.ttl),
            prober,
            primary: spec,
            dr_spec,
            base: plan::executor_plan(config, w, plan::PLANNED_ID),
            failback_journal: layout::failback_journal(&config.agent.state_dir, &w.name),
            journal: layout::failover_journal(&config.agent.state_dir, &w.name),
            gates: Gates::new(&w.gates),
            gate_interval: w.policy.gate_interval,
            reminder_interval: w.policy.reminder_interval,
            approvals,
            limits: ExecutorLimits {
                // A serverless cache takes about a minute on AWS; polling twice a second keeps
                // what the agent adds on top well under a second, at ~120 cheap calls.
                poll: Duration::from_millis(500),
                alert_every: w.policy.reminder_interval.min(Duration::from_secs(5 * 60)),
                // Another agent's lease is looked at once a round: if its holder hands it
                // over, this agent takes over within one round.
                lease_poll: w.probe.interval,
                ..ExecutorLimits::default()
            },
        }
    }

    /// The DR cache's port at `host`, as the failover that switched to it recorded it (the
    /// primary's when no journal says: ElastiCache Serverless serves on one port).
    fn dr_port(&self, host: &str) -> u16 {
        store::read_json::<Journal>(&self.journal)
            .ok()
            .flatten()
            .and_then(|j| j.endpoint)
            .filter(|(h, _)| valkey_dr_probes::same_name(h, host))
            .map_or(self.primary_port, |(_, port)| port)
    }

    /// The configured primary's endpoint.
    pub fn primary_endpoint(&self) -> &str {
        &self.primary.endpoint
    }

    /// The primary's direct path, `rise` rounds in a row, one probe interval apart: what a
    /// failback run in-process needs before the record goes back (the daemon counts the
    /// same rounds as it probes). `on_round` hears of each good one.
    pub async fn primary_rises(
        &self,
        rise: u32,
        interval: Duration,
        on_round: &(dyn Fn(u32) + Send + Sync),
    ) -> Result<(), PrimaryNotBack> {
        for round in 1..=rise {
            let path = self.prober.direct(&self.primary).await;
            if let Some(error) = path.error {
                return Err(PrimaryNotBack {
                    endpoint: self.primary.endpoint.clone(),
                    round,
                    rise,
                    error: error.to_string(),
                });
            }
            on_round(round);
            if round < rise {
                tokio::time::sleep(interval).await;
            }
        }
        Ok(())
    }

    /// The watch's probe of the DR cache at `host:port`: with the DR cache's own IAM tokens.
    pub fn dr_probe(&self, host: &str, port: u16) -> ProbeSpec {
        ProbeSpec {
            endpoint: host.trim_end_matches('.').to_owned(),
            port,
            ..self.dr_spec.clone()
        }
    }

    /// The one way a failover starts, for the daemon and the CLI alike: refused while the DR
    /// cache serves the watch (there is no second DR target: people decide), the unfinished
    /// journal when there is one (it must be resumed, not forgotten), or a fresh journal,
    /// written to disk before anything else is (the daemon persists "failing over" only
    /// after this).
    /// `automatic`: the agent starts it on its own; in `mode = "prepare"` a person must then
    /// approve before the record moves.
    pub fn start(
        &self,
        config: &Config,
        w: &WatchConfig,
        served_by_dr: bool,
        automatic: bool,
        standby: Option<(String, u16)>,
        now: SystemTime,
    ) -> Result<Start, RunError> {
        if served_by_dr {
            return Err(RunError::AlreadyServed {
                cache: w.dr.cache_name.clone(),
            });
        }
        // The previous failover's journal is kept under `failovers/` for the record.
        match store::read_json::<Journal>(&self.journal) {
            Ok(Some(previous)) if previous.unfinished() => return Ok(Start::Resume(previous)),
            Ok(Some(previous)) => self.keep(&previous)?,
            Ok(None) => {}
            Err(e) => return Err(RunError::Journal(e)),
        }
        let id = new_failover_id(&config.agent.id, now);
        let journal = Journal::new(Plan {
            approval: automatic && config.agent.mode == crate::config::Mode::Prepare,
            automatic,
            // The agent judged the primary down through the record: the switch replaces the
            // record only while it still points there (read just before the switch, since
            // Route 53 is not asked before the build).
            expected_target: automatic.then(|| self.primary.endpoint.clone()),
            standby,
            ..plan::executor_plan(config, w, &id)
        });
        store::write_json(&self.journal, &journal).map_err(|error| RunError::WriteJournal {
            kind: "failover",
            error,
        })?;
        Ok(Start::New(journal))
    }

    /// Runs (or resumes) the failover of `journal`, held by the watch's gates (and, when its
    /// plan says so, until a person approves); `news` hears of each hold.
    pub async fn failover(
        &self,
        journal: Journal,
        progress: &(dyn Fn(&Journal, &JournalEntry) + Send + Sync),
        alert: &(dyn Fn(Step, &str) + Send + Sync),
        news: &(dyn Fn(&Journal, &HoldNews) + Send + Sync),
    ) -> Result<Journal, (Journal, FailoverError)> {
        // Readiness passes wait while this runs: the failover's calls come first.
        let _first = crate::budget::recovery();
        let holding = Holding {
            gates: &self.gates,
            gate_interval: self.gate_interval,
            reminder_interval: self.reminder_interval,
            approvals: &self.approvals,
            news,
        };
        Executor {
            holding: Some(&holding),
            ..self.executor(&self.verifier, &self.journal, progress, alert)
        }
        .run(journal)
        .await
    }

    /// Points the record back at the primary: the record read (it must point at the DR
    /// endpoint), the old primary emptied (`flush_primary`, unless `keep_data`), an exact
    /// compare-and-swap from the DR endpoint, then `INSYNC`, then a probe through the record;
    /// with `delete_dr`, deletes the DR cache afterwards. The caller has checked that the
    /// primary passes `rise` rounds. It is a
    /// journalled plan (`state_dir/failback-WATCH.json`) run by the executor, with the same
    /// Route 53 retries and compare-and-swap as a failover: a burst of
    /// `PriorRequestNotComplete` is waited out, and after a crash or a timeout the journal
    /// (not a guess) says whether the record was changed. An unfinished failback resumes.
    pub async fn failback(
        &self,
        id: &str,
        dr_endpoint: &str,
        primary: &str,
        options: FailbackOptions,
        progress: &(dyn Fn(&str, &str) + Send + Sync),
    ) -> Result<FailbackReport, RunError> {
        // A failback switches the record too: readiness passes wait while it runs.
        let _first = crate::budget::recovery();
        let journal = match store::read_json::<Journal>(&self.failback_journal) {
            Ok(Some(j)) if j.unfinished() => j,
            Ok(previous) => {
                if let Some(previous) = previous {
                    self.keep(&previous)?;
                }
                let from = dr_endpoint.trim_end_matches('.').to_owned();
                let standby =
                    (self.warm && !options.delete_dr).then(|| (from.clone(), self.dr_port(&from)));
                let mut journal = Journal::new(Plan {
                    failover_id: id.to_owned(),
                    lease: None,
                    standby,
                    kind: Kind::Failback {
                        from,
                        delete_dr: options.delete_dr,
                        keep_data: options.keep_data,
                    },
                    ..self.base.clone()
                });
                journal.endpoint =
                    Some((primary.trim_end_matches('.').to_owned(), self.primary_port));
                store::write_json(&self.failback_journal, &journal).map_err(|error| {
                    RunError::WriteJournal {
                        kind: "failback",
                        error,
                    }
                })?;
                journal
            }
            Err(e) => return Err(RunError::Journal(e)),
        };
        // What the journal says rules a resumed failback, whatever this run was asked.
        if let Kind::Failback {
            keep_data: true, ..
        } = journal.plan.kind
        {
            tracing::warn!(
                watch = %journal.plan.watch,
                failback_id = %journal.plan.failover_id,
                "{KEEP_DATA_WARNING}"
            );
            progress(
                Step::FlushPrimary.as_str(),
                &format!("skipped: {KEEP_DATA_WARNING}"),
            );
        }
        // `lease` only reads the record here (a failback takes no lock): not news to anyone.
        let on_entry = |_: &Journal, e: &JournalEntry| {
            if e.phase == Phase::Done && e.step != Step::Lease {
                progress(e.step.as_str(), &e.detail);
            }
        };
        let alert = |step: Step, message: &str| {
            progress(step.as_str(), &format!("still retrying: {message}"));
        };
        let result = self
            .executor(
                &self.primary_verifier,
                &self.failback_journal,
                &on_entry,
                &alert,
            )
            .run(journal)
            .await;
        match result {
            Ok(journal) => Ok(FailbackReport::of(&journal)),
            Err((journal, e)) => {
                let untouched = journal.change_id.is_none() && !journal.done(Step::SwitchDns);
                Err(if untouched {
                    RunError::FailbackUntouched(e)
                } else {
                    RunError::FailbackSwitched(e)
                })
            }
        }
    }

    /// A failback of a watch whose record Route 53's health checks switch (`[watch.switch]
    /// kind = "health_check"`), with no Route 53 call at all: empties the old primary
    /// (unless `keep_data`, or unless the record already answers it: it then serves live
    /// sessions), then `release` (this agent and its peers publish 0), then waits, through
    /// the agent's own resolver, until the record answers the primary, at most `wait`. The
    /// caller has checked that the primary passes `rise` rounds.
    pub async fn failback_released(
        &self,
        id: &str,
        primary: &str,
        options: FailbackOptions,
        release: impl std::future::Future<Output = Result<String, String>>,
        wait: Duration,
        progress: &(dyn Fn(&str, &str) + Send + Sync),
    ) -> Result<FailbackReport, RunError> {
        use crate::executor::Verifier as _;
        let started = std::time::Instant::now();
        let mut steps_ms = BTreeMap::new();
        let mut lap = |step: &str, since: std::time::Instant| {
            steps_ms.insert(step.to_owned(), since.elapsed().as_millis() as u64);
        };
        let host = primary.trim_end_matches('.').to_owned();
        let t = std::time::Instant::now();
        let flushed = if options.keep_data {
            progress(
                Step::FlushPrimary.as_str(),
                &format!("skipped: {KEEP_DATA_WARNING}"),
            );
            None
        } else if self.primary_verifier.resolves_to(&host).await {
            progress(
                Step::FlushPrimary.as_str(),
                &format!(
                    "not emptied: the record already answers the primary {host}, which serves live sessions"
                ),
            );
            None
        } else {
            let flushed = self.flush_primary(&host).await?;
            progress(
                Step::FlushPrimary.as_str(),
                &format!(
                    "{} keys emptied with {}",
                    flushed.keys_before, flushed.command
                ),
            );
            Some(flushed)
        };
        lap(Step::FlushPrimary.as_str(), t);
        let t = std::time::Instant::now();
        let released = release.await.map_err(RunError::Released)?;
        progress("release_verdicts", &released);
        lap("release_verdicts", t);
        let t = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + wait;
        while !self.primary_verifier.resolves_to(&host).await {
            if tokio::time::Instant::now() >= deadline {
                return Err(RunError::Released(format!(
                    "{released}, but the record still does not answer the primary {host} after {}: an agent that was not released still publishes 1 (run `valkey-dr failback` on it), or its alarm has not left ALARM yet",
                    crate::text::duration(wait)
                )));
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        progress(
            Step::VerifyDns.as_str(),
            &format!("the record answers the primary {host}"),
        );
        lap(Step::VerifyDns.as_str(), t);
        let keep_data = options.keep_data;
        Ok(FailbackReport {
            failback_id: id.to_owned(),
            record: self.base.record.clone(),
            target: format!("{host}."),
            change_id: None,
            deleted: None,
            keep_data,
            flushed,
            warning: keep_data.then(|| KEEP_DATA_WARNING.to_owned()),
            steps_ms,
            total_ms: started.elapsed().as_millis() as u64,
        })
    }

    /// Empties the old primary (`DBSIZE`, [`FLUSH_COMMAND`], `DBSIZE`), for a failback that
    /// switches through health checks.
    async fn flush_primary(&self, host: &str) -> Result<Flushed, RunError> {
        use crate::executor::Verifier as _;
        let port = self.primary_port;
        let failed = |e: crate::executor::VerifyFailure| {
            RunError::Released(format!("flush_primary: {e}; nothing was released"))
        };
        let keys_before = self
            .primary_verifier
            .count_keys(host, port)
            .await
            .map_err(failed)?;
        self.primary_verifier
            .flush(host, port)
            .await
            .map_err(failed)?;
        let keys_after = self.primary_verifier.count_keys(host, port).await.ok();
        Ok(Flushed {
            endpoint: format!("{host}:{port}"),
            command: crate::executor::FLUSH_COMMAND.join(" "),
            keys_before,
            keys_after,
            sent: 1,
        })
    }

    /// The executor over this watch's AWS clients, writing the journal at `path`.
    fn executor<'a>(
        &'a self,
        verify: &'a ProbeVerifier,
        path: &Path,
        progress: &'a (dyn Fn(&Journal, &JournalEntry) + Send + Sync),
        alert: &'a (dyn Fn(Step, &str) + Send + Sync),
    ) -> Executor<'a, SdkCache, SdkDns, ProbeVerifier> {
        Executor {
            cache: &self.cache,
            dns: &self.dns,
            verify,
            path: path.to_owned(),
            limits: self.limits.clone(),
            progress,
            alert,
            lease_clock: LeaseClock::default(),
            holding: None,
        }
    }

    /// Ends the unfinished failover of `journal` on purpose (see [`Executor::abort`]).
    pub async fn abort(
        &self,
        journal: Journal,
        reason: &str,
        delete_dr: bool,
    ) -> Result<(Journal, String), RunError> {
        // Only bounded retries run here: a person waits for the answer.
        self.executor(&self.verifier, &self.journal, &|_, _| {}, &|_, _| {})
            .abort(journal, reason, delete_dr)
            .await
            .map_err(|(_, e)| RunError::Abort(e))
    }

    /// Whether the primary answers PING/SET/GET on both its paths now: a resumed failover
    /// that has not switched the record yet looks again before it goes on.
    pub async fn primary_healthy(&self) -> Result<(), String> {
        self.primary_verifier.healthy().await
    }

    /// Moves a finished journal under `failovers/`, for the record.
    fn keep(&self, previous: &Journal) -> Result<(), RunError> {
        let state_dir = self.journal.parent().unwrap_or(Path::new("."));
        store::ensure_dir(&layout::kept_failovers(state_dir))
            .and_then(|()| {
                store::write_json(
                    &layout::kept_failover(state_dir, &previous.plan.failover_id),
                    previous,
                )
            })
            .map_err(RunError::Journal)
    }
}

/// Why a failover, failback or abort run by [`Runner`] did not start or did not finish.
/// Each reads as one cause chain: the store's causes are part of the message.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The watch is already failed over.
    #[error(
        "the DR cache {cache} already serves the watch: there is nowhere further to fail over to; fail back once the primary is healthy"
    )]
    AlreadyServed {
        /// The DR cache.
        cache: String,
    },
    /// A journal could not be read, or the finished one kept under `failovers/`.
    #[error("{}", crate::text::chain(.0))]
    Journal(store::StoreError),
    /// A new journal could not be written: nothing was started.
    #[error("cannot write the {kind} journal: {}", crate::text::chain(.error))]
    WriteJournal {
        /// `failover` or `failback`.
        kind: &'static str,
        /// Why.
        error: store::StoreError,
    },
    /// A failback failed before it changed the record.
    #[error("{0}; the record was not changed")]
    FailbackUntouched(FailoverError),
    /// A failback failed after the record was pointed at the primary.
    #[error("{0}; the record already points at the primary")]
    FailbackSwitched(FailoverError),
    /// An abort did not complete.
    #[error("{0}")]
    Abort(FailoverError),
    /// A failback through health checks did not complete: what was done, and what was not.
    #[error("{0}")]
    Released(String),
}

/// A failover's end, as its watch's policy state takes it.
#[derive(Debug)]
pub struct Settled {
    /// The watch's state after it.
    pub next: valkey_dr_policies::WatchState,
    /// What the engine says of it.
    pub decisions: Vec<valkey_dr_policies::Decision>,
    /// Why it did not complete; `None` when it did.
    pub reason: Option<String>,
}

/// How a failover's end moves its watch's policy state, and why: the daemon and the
/// commands that run a failover in-process settle it the same way, so a saved state means
/// the same whoever ran the failover.
pub fn settle(
    state: &valkey_dr_policies::WatchState,
    journal: &Journal,
    error: Option<&FailoverError>,
    now: SystemTime,
) -> Settled {
    let Some(error) = error else {
        let (next, decisions) = valkey_dr_policies::failover_completed(state, now);
        return Settled {
            next,
            decisions,
            reason: None,
        };
    };
    let reason = match error {
        FailoverError::StoodDown { holder } => {
            format!("stood down: another agent holds the lease ({holder})")
        }
        e @ FailoverError::GateAborted { .. } => format!("failover aborted: {e}"),
        e @ FailoverError::OwnSide { .. } => format!(
            "failover failed at {}: {e}; this agent votes no more down in this outage and leaves the failover to its peers",
            failed_step(journal)
        ),
        e @ (FailoverError::ForeignCache { .. } | FailoverError::Leftover { .. }) => format!(
            "failover failed at {}: {e}; a leftover readiness reports, so it did not count toward the cooldown",
            failed_step(journal)
        ),
        e => format!("failover failed at {}: {e}", failed_step(journal)),
    };
    let how = match error {
        FailoverError::OwnSide { .. } => Unfinished::OwnSide,
        FailoverError::ForeignCache { .. } | FailoverError::Leftover { .. } => Unfinished::Blocked,
        FailoverError::Api { source, .. } if source.is_transient() => Unfinished::Transient,
        FailoverError::StandbyDown { .. } => Unfinished::Transient,
        _ => Unfinished::Spent,
    };
    let (next, decisions) = valkey_dr_policies::failover_ended(state, now, &reason, how);
    Settled {
        next,
        decisions,
        reason: Some(reason),
    }
}

/// The step a failed failover stopped at.
pub fn failed_step(journal: &Journal) -> &'static str {
    match &journal.outcome {
        Some(FailoverOutcome::Failed { step, .. }) => step.as_str(),
        _ => journal.current_step().map_or("unknown", Step::as_str),
    }
}

/// The primary failed a round before a failback.
#[derive(Debug, thiserror::Error)]
#[error(
    "the primary {endpoint} failed round {round} of {rise}: {error}; failback needs rise = {rise} good rounds; nothing changed"
)]
pub struct PrimaryNotBack {
    /// The primary's endpoint.
    pub endpoint: String,
    /// The round that failed.
    pub round: u32,
    /// The rounds needed.
    pub rise: u32,
    /// How it failed.
    pub error: String,
}

/// What `failback --keep-data` brings back, said when it starts, in its report, `/status` and
/// the `failback_completed` event.
pub const KEEP_DATA_WARNING: &str = "--keep-data: the old primary is not emptied; sessions the old primary held when the region failed, including ones logged out or revoked since, become valid again";

/// How a failback is asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FailbackOptions {
    /// Delete the DR cache once the record points at the primary again (`--delete-dr`).
    pub delete_dr: bool,
    /// Do not empty the old primary first (`--keep-data`).
    pub keep_data: bool,
}

/// What a failback did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FailbackReport {
    /// The failback's id (its journal's).
    pub failback_id: String,
    /// The record.
    pub record: String,
    /// What it points at now.
    pub target: String,
    /// The Route 53 change, when one was needed.
    pub change_id: Option<String>,
    /// The DR cache deleted, with `--delete-dr`.
    pub deleted: Option<String>,
    /// `--keep-data`: the old primary was not emptied.
    #[serde(default)]
    pub keep_data: bool,
    /// What `flush_primary` emptied (the key count before and after, the command); `None`
    /// with `--keep-data`, or when the primary already served the record and was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flushed: Option<Flushed>,
    /// What people must know: with `--keep-data`, what comes back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// How long each step took.
    pub steps_ms: BTreeMap<String, u64>,
    /// In all.
    pub total_ms: u64,
}

impl FailbackReport {
    /// The report of a finished failback journal.
    pub fn of(journal: &Journal) -> FailbackReport {
        let timings = journal.timings();
        let total = journal
            .started_at()
            .zip(journal.entries.last().map(|e| e.at))
            .and_then(|(first, last)| last.duration_since(first).ok())
            .unwrap_or_default();
        let target = journal
            .endpoint
            .as_ref()
            .map(|(h, _)| format!("{}.", h.trim_end_matches('.')))
            .unwrap_or_default();
        let keep_data = matches!(
            journal.plan.kind,
            Kind::Failback {
                keep_data: true,
                ..
            }
        );
        FailbackReport {
            failback_id: journal.plan.failover_id.clone(),
            record: journal.plan.record.clone(),
            target,
            change_id: journal.change_id.clone(),
            deleted: journal
                .done(Step::DeleteDr)
                .then(|| journal.plan.cache.name().to_owned()),
            keep_data,
            flushed: journal.flushed.clone(),
            warning: keep_data.then(|| KEEP_DATA_WARNING.to_owned()),
            steps_ms: timings
                .into_iter()
                .filter(|(step, _)| *step != Step::Lease.as_str())
                .map(|(k, v)| (k.to_owned(), v.as_millis() as u64))
                .collect(),
            total_ms: total.as_millis() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_ids_are_names_safe_and_differ_between_calls() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(compact_utc(t), "20261118t110640z");
        let id = new_failover_id("host-1", t);
        assert!(id.starts_with("fo-20261118t110640z-host-1-"), "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let later = new_failover_id("host-1", t + Duration::from_nanos(1));
        assert_ne!(id, later);
    }
}
