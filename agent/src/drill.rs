//! `valkey-dr drill`: rehearses the provisioning half of a failover with a throw-away cache,
//! so that the RTO is measured quarter after quarter rather than assumed.
//!
//! A drill builds `<dr cache_name>-drill-<UTC minute>` in the DR region with the watch's full DR
//! spec (the same `CreateServerlessCache` input a failover sends), waits for it to be
//! `available`, proves it serves PING/SET/GET with the watch's own probe settings (TLS, auth,
//! key prefix), then deletes it. Every step is timed and the time to a serving cache is set
//! against the 4 h RTO. The report is written under `state_dir/drills/` for later comparison.
//!
//! A drill must never touch Route 53: it has no `DnsApi` at all, so the live record cannot
//! change whatever happens. It only ever deletes the cache it created itself.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use backon::{ExponentialBuilder, Retryable};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use valkey_dr_probes::{Prober, ResolverSettings};

use crate::config::{Config, PrimaryConfig, WatchConfig};
use crate::executor::api::{ApiError, CacheApi, CacheInfo, CacheSpec, CacheStatus};
use crate::executor::{Verifier, wait};
use crate::store::{self, StoreError};

/// The recovery time objective of the DR plan.
pub const RTO: Duration = Duration::from_secs(4 * 60 * 60);

/// The tag that marks a drill's cache, with the drill id as value, so that a forgotten one
/// (`--keep`, or a failed delete) is easy to find and obviously safe to delete.
pub const DRILL_TAG: &str = "valkey-dr:drill";

/// ElastiCache's limit on serverless cache names.
const MAX_CACHE_NAME: usize = 40;

/// The steps, in order; their names are part of the report's contract.
pub const STEPS: [&str; 4] = ["create", "wait_available", "verify", "delete"];

/// Why a drill could not start. Nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum DrillError {
    /// The config cannot support a drill (name too long, probe settings, resolver).
    #[error("watch {watch}: {message}")]
    Setup {
        /// The watch.
        watch: String,
        /// What is wrong, and what would be valid.
        message: String,
    },
    /// A drill of this watch already ran in this minute; its report would be overwritten.
    #[error("a drill of watch {watch} already ran this minute ({}): start the next one in a minute", path.display())]
    AlreadyRan {
        /// The watch.
        watch: String,
        /// Its report.
        path: PathBuf,
    },
    /// The drills directory cannot be written: a drill nobody can compare later is not run.
    #[error("cannot write drill reports")]
    Store(#[source] StoreError),
}

impl DrillError {
    /// The process exit code: 2 for what the config or usage must fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            DrillError::Setup { .. } => 2,
            DrillError::AlreadyRan { .. } | DrillError::Store(_) => 1,
        }
    }
}

/// A drill's id: the UTC minute it started, as `20261126t0715z` (lower case, because cache
/// names are).
pub fn drill_id(at: SystemTime) -> String {
    // "2026-11-26T07:15:42Z"
    let t = humantime::format_rfc3339_seconds(at).to_string();
    format!("{}t{}{}z", t[..10].replace('-', ""), &t[11..13], &t[14..16])
}

/// The drill cache's name for `w`, or why ElastiCache would refuse it.
pub fn cache_name(w: &WatchConfig, id: &str) -> Result<String, DrillError> {
    let name = format!("{}-drill-{id}", w.dr.cache_name);
    if name.len() > MAX_CACHE_NAME {
        return Err(DrillError::Setup {
            watch: w.name.clone(),
            message: format!(
                "the drill cache name {name} would be {} characters, and ElastiCache allows {MAX_CACHE_NAME}; \
                 valid: a watch.dr.cache_name of at most {} characters",
                name.len(),
                MAX_CACHE_NAME - (name.len() - w.dr.cache_name.len())
            ),
        });
    }
    Ok(name)
}

/// The `CreateServerlessCache` request of a drill: the failover's DR spec under the drill's
/// name, with the DR tags plus [`DRILL_TAG`].
pub fn cache_spec(w: &WatchConfig, name: &str, id: &str) -> CacheSpec {
    let description = format!(
        "valkey-dr drill {id} of watch {}: throw-away, safe to delete",
        w.name
    );
    CacheSpec {
        region: w.dr.region.clone(),
        input: crate::plan::create_request(w, name, Some(description), &[(DRILL_TAG, id)]),
    }
}

/// Where the report of drill `id` of `watch` goes.
pub fn report_path(state_dir: &Path, watch: &str, id: &str) -> PathBuf {
    crate::layout::drill_report(state_dir, watch, id)
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepResult {
    /// It did what it should.
    Ok,
    /// It failed; the drill failed.
    Failed,
    /// It did not run (an earlier step failed, or `--keep`).
    Skipped,
}

impl StepResult {
    fn as_str(self) -> &'static str {
        match self {
            StepResult::Ok => "ok",
            StepResult::Failed => "failed",
            StepResult::Skipped => "skipped",
        }
    }
}

/// One step of the report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// One of [`STEPS`].
    pub step: String,
    /// How it ended.
    pub result: StepResult,
    /// How long it took (0 when skipped).
    pub duration_ms: u64,
    /// What happened, or why it failed.
    pub detail: String,
}

/// The drill's record: printed, and written under `state_dir/drills/` (README.md, "drill").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DrillReport {
    /// The watch.
    pub watch: String,
    /// The UTC minute it started, as in the cache name.
    pub drill_id: String,
    /// The throw-away cache.
    pub cache_name: String,
    /// The DR region it was built in.
    pub region: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Whether every step that ran succeeded.
    pub ok: bool,
    /// The first step that failed.
    pub failed_step: Option<String>,
    /// Its error.
    pub error: Option<String>,
    /// `host:port` of the cache once available.
    pub endpoint: Option<String>,
    /// `--keep` was given: the cache is left running.
    pub kept: bool,
    /// Whether a drill cache may still exist (kept, or a delete that did not go through):
    /// it is billed until someone deletes it.
    pub cache_remains: bool,
    /// Every step, in order, skipped ones included.
    pub steps: Vec<StepReport>,
    /// Wall time of the whole drill, delete included.
    pub total_ms: u64,
    /// create + wait_available + verify: what a failover spends before it can switch the
    /// record. The record's TTL and Route 53's propagation come on top in a real failover.
    pub recovery_ms: u64,
    /// The RTO, 4 h.
    pub rto_ms: u64,
    /// `recovery_ms / rto_ms`.
    pub rto_ratio: f64,
    /// The cache was serving within the RTO.
    pub within_rto: bool,
    /// The record's TTL, which a real failover adds before applications reconnect.
    pub record_ttl_s: u64,
}

/// What a drill does, fixed before it starts.
#[derive(Debug, Clone)]
pub struct DrillPlan {
    /// The watch.
    pub watch: String,
    /// See [`drill_id`].
    pub id: String,
    /// The cache to build.
    pub spec: CacheSpec,
    /// How long `creating` may last (`dr.create_timeout`); the delete step is bounded by it too.
    pub create_timeout: Duration,
    /// Leave the cache running.
    pub keep: bool,
    /// The record's TTL, for the report.
    pub ttl: Duration,
}

/// Bounds on the drill's loops.
#[derive(Debug, Clone)]
pub struct DrillLimits {
    /// `CreateServerlessCache` attempts on transient errors.
    pub create_attempts: u32,
    /// First retry delay after a transient error, doubled up to `max_backoff`.
    pub backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
    /// First pause between `DescribeServerlessCaches` polls, doubled up to `max_poll`.
    pub poll: Duration,
    /// Longest pause between polls.
    pub max_poll: Duration,
    /// How long a just-created cache may be missing from `DescribeServerlessCaches`
    /// (eventual consistency) before the drill calls it gone.
    pub not_found_grace: Duration,
    /// PING/SET/GET rounds before verify fails: the endpoint's name may take a moment to
    /// resolve everywhere after the cache turns `available`.
    pub verify_attempts: u32,
}

impl DrillLimits {
    pub(crate) fn polling(&self) -> wait::Polling {
        wait::Polling {
            every: self.poll,
            max: self.max_poll,
            not_found_grace: self.not_found_grace,
        }
    }
}

impl Default for DrillLimits {
    fn default() -> Self {
        DrillLimits {
            create_attempts: 4,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            max_poll: Duration::from_secs(15),
            not_found_grace: Duration::from_secs(30),
            verify_attempts: 5,
        }
    }
}

/// Why a step of a drill failed: the detail of its report, which says what to do.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StepError {
    /// AWS said the name is taken, and Describe does not find the cache.
    #[error("{error}, yet DescribeServerlessCaches does not find it")]
    TakenNotFound {
        /// `CreateServerlessCache`'s answer.
        error: ApiError,
    },
    /// The name is taken by a cache without this drill's tag.
    #[error("{error}: a drill kept with --keep, or one started this minute elsewhere; left alone")]
    TakenByAnother {
        /// `CreateServerlessCache`'s answer.
        error: ApiError,
    },
    /// The name is taken, and the cache's tags could not be read.
    #[error("{error}, and whose it is could not be read: {read}")]
    TakenUnread {
        /// `CreateServerlessCache`'s answer.
        error: ApiError,
        /// Why the tags could not be read.
        read: ApiError,
    },
    /// `CreateServerlessCache` failed.
    #[error(transparent)]
    Create(ApiError),
    /// The cache did not become available.
    #[error("{0}")]
    Wait(wait::WaitError),
    /// It stayed `creating` past `create_timeout`.
    #[error("{0} (create_timeout)")]
    WaitTimeout(wait::WaitError),
    /// PING/SET/GET kept failing.
    #[error("after {attempts} attempts: {error}")]
    Verify {
        /// How many rounds were made.
        attempts: u32,
        /// The last round's failure.
        error: String,
    },
    /// The cache was not deleted (or seen deleting) before the deadline.
    #[error("{name} not deleted within {}: {last}; delete it by hand", crate::text::duration(*.timeout))]
    NotDeletedInTime {
        /// The cache.
        name: String,
        /// The deadline.
        timeout: Duration,
        /// The last answer.
        last: String,
    },
    /// `DeleteServerlessCache` was refused.
    #[error("{error}; delete {name} by hand")]
    DeleteRefused {
        /// The cache.
        name: String,
        /// The refusal.
        error: ApiError,
    },
    /// Describe failed for good after the delete.
    #[error("{last}; check that {name} is deleted")]
    DeletedUnknown {
        /// The cache.
        name: String,
        /// Describe's error.
        last: String,
    },
}

/// What create left behind.
enum Created {
    /// The cache exists and is ours.
    Ours,
    /// It may exist (a call that got no answer may have reached AWS): delete to be sure.
    Maybe,
    /// Nothing of ours exists; delete nothing (a cache of that name that we did not create
    /// is someone else's).
    Nothing,
}

/// Runs the drill. Never fails as such: every outcome is in the report.
pub async fn run<C: CacheApi, V: Verifier>(
    cache: &C,
    verify: &V,
    plan: &DrillPlan,
    limits: &DrillLimits,
) -> DrillReport {
    let started_at = SystemTime::now();
    let started = Instant::now();
    let (created, endpoint, mut steps) = recover(cache, verify, plan, limits).await;
    let recovery = started.elapsed();
    let (delete, cache_remains) = clean_up(cache, plan, created, limits).await;
    steps.push(delete);
    let first_failure = steps.iter().find(|s| s.result == StepResult::Failed);
    let rto_ms = RTO.as_millis() as u64;
    let recovery_ms = recovery.as_millis() as u64;
    let recovered = steps
        .iter()
        .filter(|s| s.step != "delete")
        .all(|s| s.result == StepResult::Ok);
    DrillReport {
        watch: plan.watch.clone(),
        drill_id: plan.id.clone(),
        cache_name: plan.spec.name().to_owned(),
        region: plan.spec.region.clone(),
        started_at: humantime::format_rfc3339_millis(started_at).to_string(),
        finished_at: humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        ok: first_failure.is_none(),
        failed_step: first_failure.map(|s| s.step.clone()),
        error: first_failure.map(|s| s.detail.clone()),
        endpoint: endpoint.map(|(h, p)| format!("{h}:{p}")),
        kept: plan.keep,
        cache_remains,
        total_ms: started.elapsed().as_millis() as u64,
        recovery_ms,
        rto_ms,
        rto_ratio: ratio(recovery_ms, rto_ms),
        within_rto: recovered && recovery <= RTO,
        record_ttl_s: plan.ttl.as_secs(),
        steps,
    }
}

/// One step's report; a skipped step took no time.
fn step_report(which: &str, result: StepResult, since: Instant, detail: String) -> StepReport {
    StepReport {
        step: which.to_owned(),
        result,
        duration_ms: if result == StepResult::Skipped {
            0
        } else {
            since.elapsed().as_millis() as u64
        },
        detail,
    }
}

/// The recovery a failover would make: create, wait_available and verify, each reported
/// (a step after a failed one is skipped). Returns what create left behind, the endpoint
/// once the cache is available, and the steps' reports.
async fn recover<C: CacheApi, V: Verifier>(
    cache: &C,
    verify: &V,
    plan: &DrillPlan,
    limits: &DrillLimits,
) -> (Created, Option<(String, u16)>, Vec<StepReport>) {
    let mut steps = Vec::new();
    let t = Instant::now();
    let (created, result) = create(cache, &plan.spec, plan.create_timeout, limits).await;
    let create_failed = result.is_err();
    steps.push(match result {
        Ok(detail) => step_report("create", StepResult::Ok, t, detail),
        Err(e) => step_report("create", StepResult::Failed, t, e.to_string()),
    });
    let endpoint = if create_failed {
        let skipped = "create failed".into();
        steps.push(step_report(
            "wait_available",
            StepResult::Skipped,
            t,
            skipped,
        ));
        None
    } else {
        let t = Instant::now();
        match wait_available(cache, plan.spec.name(), plan.create_timeout, limits).await {
            Ok((host, port)) => {
                let detail = format!("available at {host}:{port}");
                steps.push(step_report("wait_available", StepResult::Ok, t, detail));
                Some((host, port))
            }
            Err(e) => {
                let detail = e.to_string();
                steps.push(step_report("wait_available", StepResult::Failed, t, detail));
                None
            }
        }
    };
    let t = Instant::now();
    steps.push(match &endpoint {
        Some((host, port)) => match verify_direct(verify, host, *port, limits).await {
            Ok(detail) => step_report("verify", StepResult::Ok, t, detail),
            Err(e) => step_report("verify", StepResult::Failed, t, e.to_string()),
        },
        None => step_report(
            "verify",
            StepResult::Skipped,
            t,
            "no available cache".into(),
        ),
    });
    (created, endpoint, steps)
}

/// The delete step: what create left behind goes, unless `--keep`. Returns its report and
/// whether a cache of the drill remains.
async fn clean_up<C: CacheApi>(
    cache: &C,
    plan: &DrillPlan,
    created: Created,
    limits: &DrillLimits,
) -> (StepReport, bool) {
    let name = plan.spec.name();
    let t = Instant::now();
    match created {
        Created::Nothing => (
            step_report(
                "delete",
                StepResult::Skipped,
                t,
                "nothing of this drill to delete".into(),
            ),
            false,
        ),
        _ if plan.keep => (
            step_report(
                "delete",
                StepResult::Skipped,
                t,
                format!("--keep: {name} is left running (delete it when done; it is billed)"),
            ),
            true,
        ),
        Created::Ours | Created::Maybe => {
            match delete(cache, name, plan.create_timeout, limits).await {
                Ok(detail) => (step_report("delete", StepResult::Ok, t, detail), false),
                Err(e) => (
                    step_report("delete", StepResult::Failed, t, e.to_string()),
                    true,
                ),
            }
        }
    }
}

/// `part / whole`, to six decimals so that reports stay readable.
fn ratio(part: u64, whole: u64) -> f64 {
    (part as f64 / whole as f64 * 1e6).round() / 1e6
}

async fn create<C: CacheApi>(
    cache: &C,
    spec: &CacheSpec,
    timeout: Duration,
    limits: &DrillLimits,
) -> (Created, Result<String, StepError>) {
    let mut attempt = 0;
    let result = (|| {
        attempt += 1;
        cache.create(spec)
    })
    .retry(
        ExponentialBuilder::default()
            .with_min_delay(limits.backoff)
            .with_max_delay(limits.max_backoff)
            .with_max_times(limits.create_attempts.saturating_sub(1) as usize),
    )
    .sleep(tokio::time::sleep)
    .when(ApiError::is_transient)
    .notify(|e, _| tracing::warn!(error = %e, "CreateServerlessCache: retrying"))
    .await;
    match result {
        Ok(info) => (
            Created::Ours,
            Ok(format!(
                "CreateServerlessCache accepted: {}",
                info.status.as_str()
            )),
        ),
        // Our own earlier attempt may have reached AWS with its answer lost (the SDK retries a
        // Create after a timeout or a 5xx on its own, inside one call), or a drill kept with
        // --keep, or one started this minute elsewhere, holds the name: the drill tag decides.
        Err(e @ ApiError::AlreadyExists { .. }) => {
            let deadline = tokio::time::Instant::now() + timeout;
            match wait::settled_tags(cache, spec.name(), deadline, limits.polling()).await {
                Ok(None) => (Created::Nothing, Err(StepError::TakenNotFound { error: e })),
                Ok(Some((_, tags)))
                    if tags.get(DRILL_TAG).map(String::as_str) == spec.tag(DRILL_TAG) =>
                {
                    (
                        Created::Ours,
                        Ok("created by an earlier attempt whose answer was lost".into()),
                    )
                }
                Ok(_) => (
                    Created::Nothing,
                    Err(StepError::TakenByAnother { error: e }),
                ),
                // It may be ours: deleting it is the safe side for a throw-away name.
                Err(read) => (
                    Created::Maybe,
                    Err(StepError::TakenUnread { error: e, read }),
                ),
            }
        }
        Err(e) => {
            let maybe = e.is_transient() || attempt > 1;
            let created = if maybe {
                Created::Maybe
            } else {
                Created::Nothing
            };
            (created, Err(StepError::Create(e)))
        }
    }
}

/// Polls until `available`, with backoff, bounded by `timeout`. Transient errors count as
/// still waiting.
async fn wait_available<C: CacheApi>(
    cache: &C,
    name: &str,
    timeout: Duration,
    limits: &DrillLimits,
) -> Result<(String, u16), StepError> {
    let deadline = tokio::time::Instant::now() + timeout;
    wait::until_available(cache, name, deadline, Duration::ZERO, limits.polling())
        .await
        .map_err(|e| match e {
            wait::WaitError::Timeout { .. } => StepError::WaitTimeout(e),
            other => StepError::Wait(other),
        })
}

pub(crate) async fn verify_direct<V: Verifier>(
    verify: &V,
    host: &str,
    port: u16,
    limits: &DrillLimits,
) -> Result<String, StepError> {
    let mut attempt = 0;
    (|| {
        attempt += 1;
        verify.direct(host, port)
    })
    .retry(
        ExponentialBuilder::default()
            .with_min_delay(limits.poll)
            .with_max_delay(limits.max_poll)
            .with_max_times(limits.verify_attempts.saturating_sub(1) as usize),
    )
    .sleep(tokio::time::sleep)
    .notify(|e, _| tracing::warn!(error = %e, "verify: retrying"))
    .await
    .map(|()| {
        let retries = if attempt > 1 {
            format!(" (attempt {attempt})")
        } else {
            String::new()
        };
        format!("PING/SET/GET ok on {host}:{port}{retries}")
    })
    .map_err(|failure| StepError::Verify {
        attempts: attempt,
        error: failure.message,
    })
}

/// Deletes, then waits until Describe shows `deleting` or no cache: from then on AWS finishes
/// on its own and bills no more, so waiting for the very end would only lengthen the drill.
/// Bounded by `timeout`; a cache still `creating` (after a create_timeout) is retried until it
/// can be deleted.
pub(crate) async fn delete<C: CacheApi>(
    cache: &C,
    name: &str,
    timeout: Duration,
    limits: &DrillLimits,
) -> Result<String, StepError> {
    let deadline = Instant::now() + timeout;
    let too_late = |last: String| StepError::NotDeletedInTime {
        name: name.to_owned(),
        timeout,
        last,
    };
    (|| cache.delete(name))
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(limits.backoff)
                .with_max_delay(limits.max_backoff)
                .without_max_times(),
        )
        .sleep(tokio::time::sleep)
        .when(|e| e.is_transient() && Instant::now() < deadline)
        .await
        .map_err(|e| {
            if e.is_transient() {
                too_late(e.to_string())
            } else {
                StepError::DeleteRefused {
                    name: name.to_owned(),
                    error: e,
                }
            }
        })?;
    // From `deleting` on AWS finishes on its own: Describe showing it (or nothing) ends the
    // step. Transient errors and other states are polled again, bounded by the deadline.
    (|| async {
        match cache.describe(name).await {
            Ok(None) => Ok(format!("{name} is gone")),
            Ok(Some(info)) if info.status == CacheStatus::Deleting => {
                Ok(format!("{name} is deleting"))
            }
            Ok(Some(info)) => Err((true, format!("still {}", info.status.as_str()))),
            Err(e) => Err((e.is_transient(), e.to_string())),
        }
    })
    .retry(
        ExponentialBuilder::default()
            .with_min_delay(limits.poll)
            .with_max_delay(limits.max_poll)
            .without_max_times(),
    )
    .sleep(tokio::time::sleep)
    .when(|(again, _)| *again && Instant::now() < deadline)
    .await
    .map_err(|(again, last)| {
        if again {
            too_late(last)
        } else {
            StepError::DeletedUnknown {
                name: name.to_owned(),
                last,
            }
        }
    })
}

/// A drill that ran: its report, and where it was saved (or why it could not be).
pub struct Finished {
    /// The report.
    pub report: DrillReport,
    /// The report file.
    pub saved: Result<PathBuf, StoreError>,
}

/// Runs a drill of `w` against AWS (the DR region's ElastiCache only) and saves the report.
pub async fn execute(config: &Config, w: &WatchConfig, keep: bool) -> Result<Finished, DrillError> {
    let id = drill_id(SystemTime::now());
    let name = cache_name(w, &id)?;
    let path = report_path(&config.agent.state_dir, &w.name, &id);
    if path.exists() {
        return Err(DrillError::AlreadyRan {
            watch: w.name.clone(),
            path,
        });
    }
    store::ensure_dir(path.parent().unwrap_or(&config.agent.state_dir))
        .map_err(DrillError::Store)?;
    let verifier = verifier(config, w, &name).await?;
    let cache = Background(crate::executor::sdk::SdkCache::new(
        &crate::aws::sdk_config(config, &w.dr.region).await,
    ));
    let plan = DrillPlan {
        watch: w.name.clone(),
        id: id.clone(),
        spec: cache_spec(w, &name, &id),
        create_timeout: w.dr.create_timeout,
        keep,
        ttl: w.ttl,
    };
    tracing::info!(watch = %w.name, cache = %name, region = %w.dr.region, "drill: starting");
    let report = run(&cache, &verifier, &plan, &DrillLimits::default()).await;
    let saved = store::write_json(&path, &report).map(|()| path);
    Ok(Finished { report, saved })
}

/// A drill's ElastiCache calls are background calls: each waits for a failover or failback
/// that runs, in this process or another of the same `state_dir` (`budget`).
struct Background<C>(C);

impl<C: CacheApi> CacheApi for Background<C> {
    async fn create(&self, spec: &CacheSpec) -> Result<CacheInfo, ApiError> {
        crate::budget::background("elasticache:CreateServerlessCache").await;
        self.0.create(spec).await
    }

    async fn describe(&self, name: &str) -> Result<Option<CacheInfo>, ApiError> {
        crate::budget::background("elasticache:DescribeServerlessCaches").await;
        self.0.describe(name).await
    }

    async fn tags(&self, arn: &str) -> Result<BTreeMap<String, String>, ApiError> {
        crate::budget::background("elasticache:ListTagsForResource").await;
        self.0.tags(arn).await
    }

    async fn delete(&self, name: &str) -> Result<(), ApiError> {
        crate::budget::background("elasticache:DeleteServerlessCache").await;
        self.0.delete(name).await
    }
}

/// The watch's own probe, aimed at the drill cache: for IAM auth the token must be signed for
/// the drill cache in the DR region, so the probe's "primary" becomes that cache.
pub(crate) async fn verifier(
    config: &Config,
    w: &WatchConfig,
    name: &str,
) -> Result<crate::executor::verify::ProbeVerifier, DrillError> {
    let setup = |message: String| DrillError::Setup {
        watch: w.name.clone(),
        message,
    };
    let mut target = w.clone();
    target.primary = PrimaryConfig {
        region: w.dr.region.clone(),
        cache_name: name.to_owned(),
        // Replaced by the real endpoint once the cache is available.
        endpoint: Some(format!("{name}.drill.invalid")),
    };
    let spec = crate::spec::probe_spec(config, &target)
        .await
        .map_err(|e| setup(crate::text::chain(&e)))?;
    let prober = Prober::new(&ResolverSettings {
        nameservers: config.dns.nameservers.clone(),
    })
    .map_err(|e| setup(format!("the DNS resolver: {e}")))?;
    Ok(crate::executor::verify::ProbeVerifier::new(
        Arc::new(prober),
        spec,
        w.ttl,
    ))
}

/// The report for people.
pub fn to_text(report: &DrillReport, saved: Option<&Path>) -> String {
    let mut out = String::new();
    let verdict = if report.ok { "OK" } else { "FAILED" };
    let _ = writeln!(
        out,
        "drill {} of watch {}: {verdict}",
        report.drill_id, report.watch
    );
    let _ = writeln!(
        out,
        "cache {} in {}{}",
        report.cache_name,
        report.region,
        if report.cache_remains {
            " (still exists: delete it when done)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "{:<15} {:<8} {:>10}  DETAIL",
        "STEP", "RESULT", "DURATION"
    );
    for s in &report.steps {
        let _ = writeln!(
            out,
            "{:<15} {:<8} {:>10}  {}",
            s.step,
            s.result.as_str(),
            seconds(s.duration_ms),
            s.detail
        );
    }
    let _ = writeln!(
        out,
        "serving after {} of the {} RTO ({:.4}%): {}",
        seconds(report.recovery_ms),
        crate::text::duration(RTO),
        report.rto_ratio * 100.0,
        if report.within_rto {
            "within RTO"
        } else {
            "NOT within RTO"
        }
    );
    let _ = writeln!(
        out,
        "a failover adds the record switch and its TTL ({}s); total drill time {}",
        report.record_ttl_s,
        seconds(report.total_ms)
    );
    if let (Some(step), Some(error)) = (&report.failed_step, &report.error) {
        let _ = writeln!(out, "failed at {step}: {error}");
    }
    if let Some(path) = saved {
        let _ = writeln!(out, "report: {}", path.display());
    }
    out
}

/// One past drill of a watch, as `drill --history` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PastDrill {
    /// The drill's id (its UTC minute).
    pub drill_id: String,
    /// RFC 3339, UTC.
    pub started_at: String,
    /// RFC 3339, UTC.
    pub finished_at: String,
    /// Whether every step that ran succeeded.
    pub ok: bool,
    /// The first step that failed.
    pub failed_step: Option<String>,
    /// Each step that ran, and how long it took.
    pub phases_ms: BTreeMap<String, u64>,
    /// `create` + `wait_available`, when both succeeded: what the RTO depends on most.
    pub provisioning_ms: Option<u64>,
    /// The median provisioning time of the drills before this one (the baseline).
    pub baseline_ms: Option<u64>,
    /// Provisioning took over twice the baseline.
    pub slow: bool,
}

/// How many times the baseline a drill's provisioning may take before it is flagged.
pub const SLOW_FACTOR: u64 = 2;

/// Every drill report of `watch` under `state_dir/drills/`, oldest first, each with the
/// baseline of the ones before it. Files that are not drill reports are skipped with a
/// warning; a missing directory is no drill.
pub fn history(state_dir: &Path, watch: &str) -> Result<Vec<PastDrill>, StoreError> {
    let dir = crate::layout::drills(state_dir);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(StoreError::Io {
                action: "list",
                path: dir,
                source,
            });
        }
    };
    let mut reports: Vec<DrillReport> = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("drill-") && name.ends_with(".json")) {
            continue;
        }
        match store::read_json::<DrillReport>(&path) {
            Ok(Some(report)) if report.watch == watch => reports.push(report),
            Ok(_) => {}
            Err(e) => tracing::warn!("skipping {}: {}", path.display(), crate::text::chain(&e)),
        }
    }
    reports.sort_by(|a, b| {
        a.started_at
            .cmp(&b.started_at)
            .then(a.drill_id.cmp(&b.drill_id))
    });
    let mut previous: Vec<u64> = Vec::new();
    let mut out = Vec::with_capacity(reports.len());
    for r in reports {
        let ran = |step: &str| {
            r.steps
                .iter()
                .find(|s| s.step == step && s.result == StepResult::Ok)
                .map(|s| s.duration_ms)
        };
        let provisioning_ms = ran("create").zip(ran("wait_available")).map(|(a, b)| a + b);
        let baseline_ms = median(&previous);
        let slow =
            matches!((provisioning_ms, baseline_ms), (Some(p), Some(b)) if p > SLOW_FACTOR * b);
        if let Some(p) = provisioning_ms {
            previous.push(p);
        }
        out.push(PastDrill {
            drill_id: r.drill_id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            ok: r.ok,
            failed_step: r.failed_step,
            phases_ms: r
                .steps
                .iter()
                .filter(|s| s.result != StepResult::Skipped)
                .map(|s| (s.step.clone(), s.duration_ms))
                .collect(),
            provisioning_ms,
            baseline_ms,
            slow,
        });
    }
    Ok(out)
}

/// The median of `values` (the lower middle of an even count is averaged with the upper).
fn median(values: &[u64]) -> Option<u64> {
    let mut v = values.to_vec();
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// `drill --history` for people: one row per drill, phase by phase, slow ones flagged.
pub fn history_text(watch: &str, drills: &[PastDrill]) -> String {
    let mut out = String::new();
    if drills.is_empty() {
        let _ = writeln!(
            out,
            "no drill of watch {watch} has run yet: run `valkey-dr drill --watch {watch}`"
        );
        return out;
    }
    let _ = writeln!(out, "drills of watch {watch}, oldest first");
    let _ = write!(out, "{:<16} {:<7}", "DRILL", "RESULT");
    for step in STEPS {
        let _ = write!(out, " {:>14}", step.to_uppercase());
    }
    let _ = writeln!(out, " {:>13} {:>9}", "PROVISIONING", "BASELINE");
    for d in drills {
        let _ = write!(
            out,
            "{:<16} {:<7}",
            d.drill_id,
            if d.ok { "ok" } else { "failed" }
        );
        for step in STEPS {
            let cell = d
                .phases_ms
                .get(step)
                .map(|ms| seconds(*ms))
                .unwrap_or_else(|| "-".into());
            let _ = write!(out, " {cell:>14}");
        }
        let cell = |v: Option<u64>| v.map(seconds).unwrap_or_else(|| "-".into());
        let _ = write!(
            out,
            " {:>13} {:>9}",
            cell(d.provisioning_ms),
            cell(d.baseline_ms)
        );
        if d.slow {
            let _ = write!(
                out,
                "  SLOW: provisioning took over {SLOW_FACTOR}x the median of the drills before it"
            );
        }
        if let Some(step) = &d.failed_step {
            let _ = write!(out, "  failed at {step}");
        }
        let _ = writeln!(out);
    }
    out
}

/// The last successful drill of `watch`: when it finished, and its phases.
pub fn last_ok(state_dir: &Path, watch: &str) -> Option<(SystemTime, Vec<(String, Duration)>)> {
    let drills = history(state_dir, watch).ok()?;
    let last = drills.iter().rev().find(|d| d.ok)?;
    let finished = humantime::parse_rfc3339_weak(&last.finished_at).ok()?;
    Some((
        finished,
        last.phases_ms
            .iter()
            .map(|(k, ms)| (k.clone(), Duration::from_millis(*ms)))
            .collect(),
    ))
}

fn seconds(ms: u64) -> String {
    format!("{:.1}s", ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests;
