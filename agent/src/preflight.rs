//! `valkey-dr preflight`: is everything a failover needs there, today, on the real account?
//!
//! Read-only. Each check has a name (stable: it is the `check` label of `valkey_dr_ready`), a
//! result, what was found and how to fix it. The daemon runs the same checks at start and
//! every `readiness_interval` (`daemon::readiness`).
//!
//! Results, and what they mean for readiness:
//!
//! - `ok`: checked, and fine.
//! - `warn`: checked; a failover still works, but something differs from the plan (drift, a
//!   public zone, a stale lock it would take over) or a region's API cannot be reached now.
//! - `unknown`: could not be checked (no permission to look, no answer); says what would make
//!   it checkable. For one pass it does not make the path "not ready" (an outage of IAM or
//!   Route 53's API would otherwise page every agent at once); the daemon's readiness loop
//!   calls a check that stays `unknown` longer than `readiness_stale` failing.
//! - `fail`: a failover would fail (or do harm) because of it. The path is not ready.
//!
//! The Nagios status is CRITICAL on any `fail`, else UNKNOWN on any `unknown`, else WARNING on
//! any `warn`, else OK.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::time::{Duration, SystemTime};

use aws_config::SdkConfig;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::error::{ProvideErrorMetadata, SdkError};
use serde::Serialize;
use serde_json::{Value, json};
use valkey_dr_probes::same_name;

use crate::check::Status;
use crate::config::{Config, WatchConfig};
use crate::executor::api::{ApiError, CacheApi};
use crate::executor::sdk::{SdkCache, SdkDns, bounded, classify, route53_name};
use crate::executor::{
    FAILOVER_TAG, RECORD_TAG, WATCH_TAG, began_within, lease_expiry, lease_field,
};

mod flush;
mod iam;
mod placement;
mod switch;
mod warm;

/// How long one AWS call of a check may take. Preflight reads; a call that hangs this long
/// says as much about the path as an error does.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);

/// Every check, in the order they run (and print), so that metrics can name them all.
pub const CHECKS: [&str; 22] = [
    "identity",
    "route53_zone",
    "route53_record",
    "route53_lock",
    "primary",
    "primary_flush",
    "dr_name",
    "standby",
    "switch",
    "dr_subnets",
    "dr_security_groups",
    "dr_kms_key",
    "dr_user_group",
    "dr_snapshots",
    "permissions",
    "drift_engine",
    "drift_usage_limits",
    "drift_kms_key",
    "drift_snapshot_retention",
    "drift_user_group",
    "drift_tags",
    "placement",
];

const DESCRIBE: &str = "elasticache:DescribeServerlessCaches";
const LIST_TAGS: &str = "elasticache:ListTagsForResource";

/// The record's TTL range the DR design requires: clients follow a switch within a minute.
const TTL_RANGE: std::ops::RangeInclusive<u32> = 30..=60;

/// A check's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Checked and fine.
    Ok,
    /// Checked; a failover still works, but look.
    Warn,
    /// A failover would fail because of it.
    Fail,
    /// Could not be checked.
    Unknown,
}

impl CheckStatus {
    /// The lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Ok => "ok",
            CheckStatus::Warn => "warn",
            CheckStatus::Fail => "fail",
            CheckStatus::Unknown => "unknown",
        }
    }
}

/// One check of one watch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The watch.
    pub watch: String,
    /// The check's name (one of [`CHECKS`]).
    pub check: &'static str,
    /// Its result.
    pub result: CheckStatus,
    /// What was found, in one line.
    pub found: String,
    /// How to fix it, when it needs fixing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A whole preflight run.
#[derive(Debug, Clone)]
pub struct Report {
    /// When it started.
    pub checked_at: SystemTime,
    /// Every check of every watch, in [`CHECKS`] order per watch.
    pub findings: Vec<Finding>,
    /// Where each warm watch's standby serves, for the watches whose DR API answered:
    /// `None` when it has no usable standby (missing, not `available`, not its own).
    pub standbys: BTreeMap<String, Option<(String, u16)>>,
}

impl Report {
    /// The Nagios status (see the module doc).
    pub fn status(&self) -> Status {
        let any = |o: CheckStatus| self.findings.iter().any(|f| f.result == o);
        if any(CheckStatus::Fail) {
            Status::Critical
        } else if any(CheckStatus::Unknown) {
            Status::Unknown
        } else if any(CheckStatus::Warn) {
            Status::Warning
        } else {
            Status::Ok
        }
    }

    /// The checks of `watch` that failed: what makes its path not ready.
    pub fn failing(&self, watch: &str) -> Vec<&Finding> {
        self.findings
            .iter()
            .filter(|f| f.watch == watch && f.result == CheckStatus::Fail)
            .collect()
    }

    /// The JSON form; field names are stable (README).
    pub fn to_json(&self) -> Value {
        let status = self.status();
        json!({
            "status": status.as_str(),
            "exit_code": status.exit_code(),
            "checked_at": humantime::format_rfc3339_seconds(self.checked_at).to_string(),
            "checks": self.findings,
        })
    }

    /// The text form: one row per check, the fix under a row that needs one, and the status.
    pub fn to_text(&self) -> String {
        let width = self
            .findings
            .iter()
            .map(|f| f.watch.len())
            .max()
            .unwrap_or(5)
            .max(5);
        let mut out = format!(
            "{:<width$}  {:<24}  {:<7}  FOUND\n",
            "WATCH", "CHECK", "RESULT"
        );
        for f in &self.findings {
            out.push_str(&format!(
                "{:<width$}  {:<24}  {:<7}  {}\n",
                f.watch,
                f.check,
                f.result.as_str(),
                f.found
            ));
            if let Some(fix) = f.fix.as_ref().filter(|_| f.result != CheckStatus::Ok) {
                out.push_str(&format!(
                    "{:<width$}  {:<24}  {:<7}  fix: {fix}\n",
                    "", "", ""
                ));
            }
        }
        let count = |o: CheckStatus| self.findings.iter().filter(|f| f.result == o).count();
        out.push_str(&format!(
            "{}: {} ok, {} warn, {} fail, {} unknown\n",
            self.status().as_str(),
            count(CheckStatus::Ok),
            count(CheckStatus::Warn),
            count(CheckStatus::Fail),
            count(CheckStatus::Unknown)
        ));
        out
    }
}

/// How many watches one run checks at once. Their reads of a hosted zone, its records, the
/// caller's identity, its role and each distinct IAM statement are shared ([`Aws`]), so what
/// runs in parallel is mostly each watch's own ElastiCache, EC2 and KMS reads, in regions that
/// answer them in milliseconds; eight keeps a pass of 100 watches within seconds without
/// bursting any one API.
pub const PARALLEL_WATCHES: usize = 8;

/// Runs every check of every watch (or of `only`), [`PARALLEL_WATCHES`] watches at a time.
/// Never changes anything.
pub async fn run(config: &Config, only: Option<&str>) -> Report {
    use futures::StreamExt as _;
    let checked_at = SystemTime::now();
    let watches: Vec<&WatchConfig> = config
        .watches
        .iter()
        .filter(|w| only.is_none_or(|n| n == w.name))
        .collect();
    let aws = Aws::new(config, &watches);
    // The futures are made first: a stream that borrows while it maps is not `Send` for every
    // lifetime, which the daemon's spawned readiness task needs.
    let pending: Vec<_> = watches.iter().map(|w| watch(config, w, &aws)).collect();
    let checked: Vec<_> = futures::stream::iter(pending)
        .buffered(PARALLEL_WATCHES)
        .collect()
        .await;
    let mut findings = Vec::new();
    let mut standbys = BTreeMap::new();
    for (w, (found, standby)) in watches.iter().zip(checked) {
        findings.extend(found);
        if let Some(seen) = standby {
            standbys.insert(w.name.clone(), seen);
        }
    }
    Report {
        checked_at,
        findings,
        standbys,
    }
}

/// What a failed call says: the classified error, and AWS's error code when it answered.
#[derive(Clone)]
struct Failed {
    code: Option<String>,
    error: ApiError,
}

impl Failed {
    fn denied(&self) -> bool {
        matches!(self.error, ApiError::Denied { .. })
    }

    fn code_is(&self, codes: &[&str]) -> bool {
        self.code.as_deref().is_some_and(|c| codes.contains(&c))
    }
}

/// One AWS call, bounded by [`CALL_TIMEOUT`], its error classified as the executor's are. It
/// waits its turn in the agent's budget first: a failover's calls come before it.
async fn call<T, E>(
    name: &str,
    region: Option<&str>,
    subject: &str,
    fut: impl Future<Output = Result<T, SdkError<E, HttpResponse>>>,
) -> Result<T, Failed>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    crate::budget::background(name).await;
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(Failed {
            code: e
                .as_service_error()
                .and_then(|s| s.code())
                .map(str::to_owned),
            error: classify(name, region, subject, &e),
        }),
        Err(_) => Err(no_answer(name)),
    }
}

/// A call through the executor's own clients, which classify their errors themselves,
/// bounded by [`CALL_TIMEOUT`], after its turn in the agent's budget.
async fn api<T>(name: &str, fut: impl Future<Output = Result<T, ApiError>>) -> Result<T, Failed> {
    crate::budget::background(name).await;
    match tokio::time::timeout(CALL_TIMEOUT, fut).await {
        Ok(answer) => answer.map_err(|error| Failed { code: None, error }),
        Err(_) => Err(no_answer(name)),
    }
}

/// A call that did not answer within [`CALL_TIMEOUT`]: worth asking again later.
fn no_answer(name: &str) -> Failed {
    Failed {
        code: None,
        error: ApiError::Transient {
            call: name.to_owned(),
            message: format!("no answer within {}", crate::text::duration(CALL_TIMEOUT)),
        },
    }
}

/// Who the agent is, according to STS.
#[derive(Debug, Clone)]
struct Identity {
    arn: String,
    account: String,
}

/// One answer per key, asked once however many watches want it at the same time: the first
/// asks, the others wait for its answer.
struct Memo<V>(std::sync::Mutex<BTreeMap<String, std::sync::Arc<tokio::sync::OnceCell<V>>>>);

impl<V: Clone> Memo<V> {
    fn new() -> Self {
        Memo(std::sync::Mutex::new(BTreeMap::new()))
    }

    async fn get(&self, key: &str, ask: impl Future<Output = V>) -> V {
        let cell = {
            let mut known = self.0.lock().unwrap_or_else(|e| e.into_inner());
            known.entry(key.to_owned()).or_default().clone()
        };
        cell.get_or_init(|| ask).await.clone()
    }
}

/// What one run reads once and every watch shares: SDK configs per region, the caller's
/// identity and role, each hosted zone, each shared zone's record sets, and the answer to each
/// distinct IAM question. Most watches of a fleet share a zone and most IAM statements.
struct Aws<'c> {
    config: &'c Config,
    /// How many watches of this run name each hosted zone.
    on_zone: BTreeMap<&'c str, usize>,
    sdk: Memo<SdkConfig>,
    identity: tokio::sync::OnceCell<Result<Identity, (CheckStatus, String)>>,
    /// `GetHostedZone`, by zone id.
    zones: Memo<Result<aws_sdk_route53::operation::get_hosted_zone::GetHostedZoneOutput, Failed>>,
    /// Every record set of a zone several watches share, by zone id.
    record_sets: Memo<Result<Vec<aws_sdk_route53::types::ResourceRecordSet>, Failed>>,
    /// `GetRole`'s ARN, by role name.
    roles: Memo<Result<Option<String>, Failed>>,
    /// `SimulatePrincipalPolicy`'s denials, by principal and question.
    simulations: Memo<Result<Vec<String>, Failed>>,
}

impl<'c> Aws<'c> {
    fn new(config: &'c Config, watches: &[&'c WatchConfig]) -> Self {
        let mut on_zone = BTreeMap::new();
        for w in watches {
            *on_zone.entry(w.hosted_zone_id.as_str()).or_default() += 1;
        }
        Aws {
            config,
            on_zone,
            sdk: Memo::new(),
            identity: tokio::sync::OnceCell::new(),
            zones: Memo::new(),
            record_sets: Memo::new(),
            roles: Memo::new(),
            simulations: Memo::new(),
        }
    }

    async fn sdk(&self, region: &str) -> SdkConfig {
        self.sdk
            .get(region, crate::aws::sdk_config(self.config, region))
            .await
    }

    /// How many watches of this run name `zone`.
    fn watches_on(&self, zone: &str) -> usize {
        self.on_zone.get(zone).copied().unwrap_or(0)
    }

    async fn identity(&self, region: &str) -> Result<Identity, (CheckStatus, String)> {
        self.identity
            .get_or_init(|| self.ask_identity(region))
            .await
            .clone()
    }

    async fn ask_identity(&self, region: &str) -> Result<Identity, (CheckStatus, String)> {
        let sdk = self.sdk(region).await;
        let mut conf = aws_sdk_sts::config::Builder::from(&sdk);
        conf.set_timeout_config(Some(bounded(&sdk)));
        let sts = aws_sdk_sts::Client::from_conf(conf.build());
        let answer = call(
            "sts:GetCallerIdentity",
            Some(region),
            "",
            sts.get_caller_identity().send(),
        )
        .await;
        match answer {
            Ok(out) => Ok(Identity {
                arn: out.arn().unwrap_or_default().to_owned(),
                account: out.account().unwrap_or_default().to_owned(),
            }),
            Err(f) if f.error.is_transient() => Err((CheckStatus::Unknown, f.error.to_string())),
            Err(f) if f.denied() => Err((CheckStatus::Fail, f.error.to_string())),
            // Anything else is not about the credentials: said, and the checks go on.
            Err(f) => Err((CheckStatus::Warn, f.error.to_string())),
        }
    }
}

/// A check's result under construction.
fn finding(w: &WatchConfig, check: &'static str, result: CheckStatus, found: String) -> Finding {
    Finding {
        watch: w.name.clone(),
        check,
        result,
        found,
        fix: None,
    }
}

trait WithFix {
    fn fix(self, fix: impl Into<String>) -> Self;
}

impl WithFix for Finding {
    fn fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// A call that failed, as a check's result: a refusal (credentials, permissions, anything
/// else but no answer) fails the check when the failover itself needs the call (`needed`),
/// and leaves it `unknown` when only preflight does; no answer leaves it `unknown`.
fn failed_call(w: &WatchConfig, check: &'static str, f: &Failed, needed: bool) -> Finding {
    let text = f.error.to_string();
    match &f.error {
        ApiError::Denied { call, .. } if needed => finding(w, check, CheckStatus::Fail, text)
            .fix(format!("allow {call} (see `valkey-dr iam-policy`)")),
        ApiError::Denied { call, .. } => finding(w, check, CheckStatus::Unknown, text).fix(
            format!("allow {call} so that preflight can check this (see `valkey-dr iam-policy`)"),
        ),
        ApiError::Transient { .. } => finding(w, check, CheckStatus::Unknown, text)
            .fix("run preflight again once the API answers"),
        // Any other refusal of a call the failover makes will refuse the failover too; one
        // that only preflight makes leaves the check undecided.
        _ if needed => finding(w, check, CheckStatus::Fail, text),
        _ => finding(w, check, CheckStatus::Unknown, text),
    }
}

/// A live serverless cache's configuration, for drift.
#[derive(Debug, Clone, Default)]
struct Live {
    arn: String,
    status: String,
    endpoint: Option<String>,
    port: Option<u16>,
    engine: String,
    major_engine_version: String,
    data_storage_max: Option<i32>,
    ecpu_max: Option<i32>,
    kms_key_id: Option<String>,
    snapshot_retention_limit: Option<i32>,
    user_group_id: Option<String>,
}

fn live(c: &aws_sdk_elasticache::types::ServerlessCache) -> Live {
    let limits = c.cache_usage_limits();
    Live {
        arn: c.arn().unwrap_or_default().to_owned(),
        status: c.status().unwrap_or_default().to_owned(),
        endpoint: c
            .endpoint()
            .and_then(|e| e.address())
            .filter(|a| !a.is_empty())
            .map(str::to_owned),
        port: c
            .endpoint()
            .and_then(|e| e.port())
            .and_then(|p| u16::try_from(p).ok()),
        engine: c.engine().unwrap_or_default().to_owned(),
        major_engine_version: c.major_engine_version().unwrap_or_default().to_owned(),
        data_storage_max: limits
            .and_then(|l| l.data_storage())
            .and_then(|d| d.maximum()),
        ecpu_max: limits
            .and_then(|l| l.ecpu_per_second())
            .and_then(|e| e.maximum()),
        kms_key_id: c.kms_key_id().map(str::to_owned),
        snapshot_retention_limit: c.snapshot_retention_limit(),
        user_group_id: c.user_group_id().map(str::to_owned),
    }
}

async fn describe(cache: &SdkCache, name: &str) -> Result<Option<Live>, Failed> {
    let found = api(DESCRIBE, cache.find(name)).await?;
    Ok(found.as_ref().map(live))
}

async fn tags(cache: &SdkCache, arn: &str) -> Result<BTreeMap<String, String>, Failed> {
    api(LIST_TAGS, CacheApi::tags(cache, arn)).await
}

/// Every check of one watch, in [`CHECKS`] order, and what the `standby` check saw.
async fn watch(config: &Config, w: &WatchConfig, aws: &Aws<'_>) -> (Vec<Finding>, warm::Seen) {
    let (first, identity) = match identity_check(w, aws).await {
        Ok(checked) => checked,
        Err(unchecked) => return (unchecked, None),
    };
    let mut out = vec![first];
    // The DR network first: the zone check asks whether the DR VPC is among the zone's.
    let dr_sdk = aws.sdk(&w.dr.region).await;
    let (network, dr_vpc) = network(w, &dr_sdk).await;
    let route53 = SdkDns::new(&aws.sdk(crate::aws::route53_region(w)).await);
    out.push(zone(w, &route53, aws, dr_vpc.as_deref()).await);

    // The primary is read first: the record check compares the record with its endpoint.
    let primary_cache = SdkCache::new(&aws.sdk(&w.primary.region).await);
    let primary = describe(&primary_cache, &w.primary.cache_name).await;
    let journal = crate::failover::load_journal(&config.agent.state_dir, &w.name)
        .ok()
        .flatten();
    let dr_endpoint = journal
        .as_ref()
        .and_then(|j| j.completed_endpoint())
        .map(|(h, _)| h);
    let primary_endpoint = w.primary.endpoint.clone().or_else(|| {
        primary
            .as_ref()
            .ok()
            .and_then(|p| p.as_ref())
            .and_then(|p| p.endpoint.clone())
    });
    let (record_findings, record_sets) = record(
        w,
        &route53,
        aws,
        primary_endpoint.as_deref(),
        dr_endpoint.as_deref(),
    )
    .await;
    out.extend(record_findings);
    out.push(primary_check(w, &primary));
    out.push(flush::primary_flush(w, &primary_cache, &primary).await);

    let dr_cache = SdkCache::new(&aws.sdk(&w.dr.region).await);
    out.push(dr_name(w, &dr_cache, dr_endpoint.as_deref()).await);
    let (standby, seen) = warm::standby(w, &dr_cache, dr_endpoint.as_deref()).await;
    out.push(standby);
    let standby_endpoint = seen.clone().flatten().map(|(endpoint, _)| endpoint);
    out.push(
        switch::switch(
            config,
            w,
            &route53,
            aws,
            record_sets.as_deref(),
            standby_endpoint.as_deref(),
        )
        .await,
    );
    out.extend(network);
    out.push(kms_key(w, &dr_sdk).await);
    out.push(user_group(w, &dr_cache).await);
    out.push(snapshots(w, &dr_cache).await);
    out.push(match &identity {
        Some(id) => iam::permissions(config, w, aws, id).await,
        None => finding(
            w,
            "permissions",
            CheckStatus::Unknown,
            "not checked: STS did not say who the agent is".into(),
        ),
    });
    out.extend(drift(w, &primary_cache, &primary).await);
    out.push(placement::placement(config, w));
    (out, seen)
}

/// The `identity` check and who the agent is, when STS said. When the credentials do not
/// work, nothing else can be asked: `Err` holds every finding of the watch then.
async fn identity_check(
    w: &WatchConfig,
    aws: &Aws<'_>,
) -> Result<(Finding, Option<Identity>), Vec<Finding>> {
    let (result, text) = match aws.identity(&w.dr.region).await {
        Ok(id) => {
            let found = format!("{} (account {})", id.arn, id.account);
            return Ok((finding(w, "identity", CheckStatus::Ok, found), Some(id)));
        }
        Err(failed) => failed,
    };
    if result != CheckStatus::Fail {
        return Ok((finding(w, "identity", result, text), None));
    }
    let fix = "give the agent credentials: [aws] credentials_file, an instance or task role, or AWS_* variables";
    let mut out = vec![finding(w, "identity", result, text).fix(fix)];
    for check in &CHECKS[1..] {
        out.push(finding(
            w,
            check,
            CheckStatus::Unknown,
            "not checked: the credentials do not work (see identity)".into(),
        ));
    }
    Err(out)
}

/// The `route53_zone` check: the zone exists, holds the record, is private, and is associated
/// with `dr_vpc` (the VPC the DR cache is built in, when known) in the DR region: applications
/// there resolve the record only through a zone associated with their VPC.
async fn zone(w: &WatchConfig, route53: &SdkDns, aws: &Aws<'_>, dr_vpc: Option<&str>) -> Finding {
    let id = w.hosted_zone_id.trim_start_matches("/hostedzone/");
    let out = match hosted_zone(route53, aws, id).await {
        Ok(out) => out,
        Err(f) if f.code_is(&["NoSuchHostedZone"]) => {
            return finding(
                w,
                "route53_zone",
                CheckStatus::Fail,
                format!("hosted zone {id} does not exist"),
            )
            .fix("set hosted_zone_id to the private zone that holds the record");
        }
        Err(f) => return failed_call(w, "route53_zone", &f, false),
    };
    let Some(zone) = out.hosted_zone() else {
        return finding(
            w,
            "route53_zone",
            CheckStatus::Unknown,
            format!("GetHostedZone answered without a HostedZone for {id}"),
        );
    };
    let name = route53_name(zone.name());
    let record = w.record.trim_end_matches('.').to_ascii_lowercase();
    let apex = name.trim_end_matches('.').to_ascii_lowercase();
    if record != apex && !record.ends_with(&format!(".{apex}")) {
        return finding(
            w,
            "route53_zone",
            CheckStatus::Fail,
            format!("{} is not inside zone {id} ({name})", w.record),
        )
        .fix("set hosted_zone_id to the zone that holds the record");
    }
    let private = zone.config().is_some_and(|c| c.private_zone());
    let associated = |vpc: &str| {
        out.vpcs().iter().any(|v| {
            v.vpc_id() == Some(vpc)
                && v.vpc_region().map(|r| r.as_str()) == Some(w.dr.region.as_str())
        })
    };
    if let Some(vpc) = dr_vpc.filter(|v| private && !associated(v)) {
        return finding(
            w,
            "route53_zone",
            CheckStatus::Fail,
            format!(
                "{id} ({name}) is not associated with the DR VPC {vpc} in {}: applications there would not resolve {} after a failover",
                w.dr.region, w.record
            ),
        )
        .fix(format!(
            "associate the zone with {vpc}: aws route53 associate-vpc-with-hosted-zone --hosted-zone-id {id} --vpc VPCRegion={},VPCId={vpc}",
            w.dr.region
        ));
    }
    if private {
        finding(
            w,
            "route53_zone",
            CheckStatus::Ok,
            format!(
                "{id} ({name}) is private, associated with {} VPC(s)",
                out.vpcs().len()
            ),
        )
    } else {
        finding(
            w,
            "route53_zone",
            CheckStatus::Warn,
            format!("{id} ({name}) is a public zone: the cache's name is visible to the internet"),
        )
        .fix("keep the record in a private hosted zone associated with the applications' VPCs")
    }
}

/// `GetHostedZone` of zone `id`, asked once per run.
async fn hosted_zone(
    route53: &SdkDns,
    aws: &Aws<'_>,
    id: &str,
) -> Result<aws_sdk_route53::operation::get_hosted_zone::GetHostedZoneOutput, Failed> {
    aws.zones
        .get(
            id,
            call(
                "route53:GetHostedZone",
                None,
                id,
                route53.client().get_hosted_zone().id(id).send(),
            ),
        )
        .await
}

/// The most record sets one `ListResourceRecordSets` page holds (the API's `MaxItems` limit).
const PAGE: i32 = 300;
/// Pages read of one zone at most: 300 000 sets, beyond any zone this shares.
const MAX_PAGES: usize = 1000;

/// Every record set of `zone`, when several watches of the run name it and listing it all
/// costs no more calls than reading each watch's record and lease apart (two calls a watch);
/// `None` otherwise (or when the zone's size is not known), and each watch reads its own.
/// Asked once per run: with 100 watches on one zone, a pass makes one `GetHostedZone` and one
/// `ListResourceRecordSets` per 300 sets, not 200 calls.
async fn shared_sets(
    route53: &SdkDns,
    aws: &Aws<'_>,
    zone: &str,
) -> Option<Result<Vec<aws_sdk_route53::types::ResourceRecordSet>, Failed>> {
    let watches = aws.watches_on(zone);
    if watches < 2 {
        return None;
    }
    let id = zone.trim_start_matches("/hostedzone/");
    let count = hosted_zone(route53, aws, id)
        .await
        .ok()?
        .hosted_zone()?
        .resource_record_set_count()?;
    let pages = usize::try_from(count).ok()?.div_ceil(PAGE as usize).max(1);
    if pages > 2 * watches {
        return None;
    }
    Some(aws.record_sets.get(zone, all_sets(route53, zone)).await)
}

/// Every record set of `zone`, page by page (bounded by [`MAX_PAGES`]).
async fn all_sets(
    route53: &SdkDns,
    zone: &str,
) -> Result<Vec<aws_sdk_route53::types::ResourceRecordSet>, Failed> {
    let mut sets = Vec::new();
    let (mut name, mut rtype, mut identifier) = (None, None, None);
    for _ in 0..MAX_PAGES {
        let out = call(
            "route53:ListResourceRecordSets",
            None,
            zone,
            route53
                .client()
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .set_start_record_name(name)
                .set_start_record_type(rtype)
                .set_start_record_identifier(identifier)
                .max_items(PAGE)
                .send(),
        )
        .await?;
        sets.extend(out.resource_record_sets().iter().cloned());
        if !out.is_truncated() {
            break;
        }
        name = out.next_record_name().map(str::to_owned);
        rtype = out.next_record_type().cloned();
        identifier = out.next_record_identifier().map(str::to_owned);
    }
    Ok(sets)
}

/// The record and the lease record.
async fn record(
    w: &WatchConfig,
    route53: &SdkDns,
    aws: &Aws<'_>,
    primary_endpoint: Option<&str>,
    dr_endpoint: Option<&str>,
) -> (
    Vec<Finding>,
    Option<Vec<aws_sdk_route53::types::ResourceRecordSet>>,
) {
    let zone = &w.hosted_zone_id;
    let ours = |all: &[aws_sdk_route53::types::ResourceRecordSet]| -> Vec<_> {
        all.iter()
            .filter(|s| same_name(&route53_name(s.name()), &w.record))
            .cloned()
            .collect()
    };
    let shared = shared_sets(route53, aws, zone).await;
    let answer = match &shared {
        Some(all) => all.as_deref().map(ours).map_err(Clone::clone),
        None => call(
            "route53:ListResourceRecordSets",
            None,
            zone,
            route53
                .client()
                .list_resource_record_sets()
                .hosted_zone_id(zone)
                .start_record_name(&w.record)
                .max_items(10)
                .send(),
        )
        .await
        .map(|out| ours(out.resource_record_sets())),
    };
    let (record, sets) = match answer {
        Ok(sets) => (
            record_finding(w, &sets, primary_endpoint, dr_endpoint),
            Some(sets),
        ),
        Err(f) => (failed_call(w, "route53_record", &f, true), None),
    };
    (vec![record, lock(w, route53, shared.as_ref()).await], sets)
}

fn record_finding(
    w: &WatchConfig,
    sets: &[aws_sdk_route53::types::ResourceRecordSet],
    primary_endpoint: Option<&str>,
    dr_endpoint: Option<&str>,
) -> Finding {
    if w.switch.health_check().is_some() {
        return switch::pair_finding(w, sets, primary_endpoint);
    }
    let check = "route53_record";
    let create = format!(
        "create {} as a CNAME to the primary's endpoint with a TTL of {} s",
        w.record,
        w.ttl.as_secs()
    );
    let Some(set) = sets.iter().find(|s| s.r#type().as_str() == "CNAME") else {
        return no_cname(w, sets.first(), create);
    };
    if set.alias_target().is_some() || set.set_identifier().is_some() {
        return finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "{} is an alias or routing-policy CNAME; valkey-dr switches a simple record only",
                w.record
            ),
        )
        .fix(create);
    }
    let ttl = set
        .ttl()
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or_default();
    let target = set
        .resource_records()
        .first()
        .map(|r| r.value().trim_end_matches('.').to_owned())
        .unwrap_or_default();
    if !TTL_RANGE.contains(&ttl) {
        return finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "{} → {target} has a TTL of {ttl} s; the DR design needs 30–60 s so that applications follow a switch within a minute",
                w.record
            ),
        )
        .fix(format!("set the record's TTL to {} s", w.ttl.as_secs()));
    }
    if dr_endpoint.is_some_and(|e| same_name(e, &target)) {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            format!("CNAME → {target} (the DR cache, after a completed failover), TTL {ttl} s"),
        );
    }
    cname_target_finding(w, &target, ttl, primary_endpoint)
}

/// The record has no CNAME: it does not exist, or it is `other`, of another type.
fn no_cname(
    w: &WatchConfig,
    other: Option<&aws_sdk_route53::types::ResourceRecordSet>,
    create: String,
) -> Finding {
    let check = "route53_record";
    match other {
        None => finding(
            w,
            check,
            CheckStatus::Fail,
            format!("{} does not exist in {}", w.record, w.hosted_zone_id),
        )
        .fix(create),
        Some(other) => finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "{} is {} {} record, not a CNAME: the switch replaces a CNAME",
                w.record,
                if other.alias_target().is_some() {
                    "an alias"
                } else {
                    "an"
                },
                other.r#type().as_str()
            ),
        )
        .fix(format!("replace it: {create}")),
    }
}

/// A simple CNAME to `target` with a TTL in range that is not the DR cache: fine when it
/// is the primary, with the TTL a failover writes.
fn cname_target_finding(
    w: &WatchConfig,
    target: &str,
    ttl: u32,
    primary_endpoint: Option<&str>,
) -> Finding {
    let check = "route53_record";
    match primary_endpoint {
        Some(p) if same_name(p, target) => {
            if u64::from(ttl) == w.ttl.as_secs() {
                finding(
                    w,
                    check,
                    CheckStatus::Ok,
                    format!("CNAME → {target} (the primary), TTL {ttl} s"),
                )
            } else {
                finding(
                    w,
                    check,
                    CheckStatus::Warn,
                    format!(
                        "CNAME → {target} (the primary), TTL {ttl} s; a failover writes {} s",
                        w.ttl.as_secs()
                    ),
                )
                .fix("make the record's TTL and `ttl` in the config the same")
            }
        }
        Some(p) => finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "CNAME → {target}, which is neither the primary ({p}) nor the DR cache of a completed failover"
            ),
        )
        .fix("point the record at the primary, or fix [watch.primary] endpoint"),
        None => finding(
            w,
            check,
            CheckStatus::Warn,
            format!(
                "CNAME → {target}, TTL {ttl} s; the primary's endpoint is not known (not configured, and its region did not answer)"
            ),
        )
        .fix("set [watch.primary] endpoint"),
    }
}

/// The `route53_lock` check, from the zone's `shared` sets when the run listed them.
async fn lock(
    w: &WatchConfig,
    route53: &SdkDns,
    shared: Option<&Result<Vec<aws_sdk_route53::types::ResourceRecordSet>, Failed>>,
) -> Finding {
    use crate::executor::api::DnsApi as _;
    let check = "route53_lock";
    if !w.policy.lease {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            "leases are off (policy.lease = false)".into(),
        );
    }
    let name = format!("_valkey-dr-lock.{}", w.record.trim_end_matches('.'));
    let fqdn = format!("{name}.");
    let read = match shared {
        Some(Ok(all)) => all
            .iter()
            .find_map(|s| {
                crate::executor::sdk::record_set(&w.hosted_zone_id, &fqdn, "TXT", s).transpose()
            })
            .transpose()
            .map_err(|error| Failed { code: None, error }),
        Some(Err(f)) => Err(f.clone()),
        None => {
            let record = route53.record(&w.hosted_zone_id, &fqdn, "TXT");
            api("route53:ListResourceRecordSets", record).await
        }
    };
    let set = match read {
        Ok(set) => set,
        Err(f) => return failed_call(w, check, &f, true),
    };
    let Some(set) = set else {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            format!("no lock ({name} does not exist)"),
        );
    };
    let value = set.values.join(" ");
    let who = format!(
        "agent {} for failover {}",
        lease_field(&value, "owner").unwrap_or("?"),
        lease_field(&value, "failover").unwrap_or("?")
    );
    let delete = format!("delete the TXT record {name} once no failover is running");
    match lease_expiry(&value) {
        None => finding(
            w,
            check,
            CheckStatus::Warn,
            format!("{name} holds {value}, which no agent can read as a lease: a failover takes it over as stale, with an alert"),
        )
        .fix(delete),
        Some(at) if at < SystemTime::now() => finding(
            w,
            check,
            CheckStatus::Warn,
            format!(
                "stale lock by {who}, expired {}; a failover takes it over",
                humantime::format_rfc3339_seconds(at)
            ),
        )
        .fix(delete),
        Some(at) => finding(
            w,
            check,
            CheckStatus::Warn,
            format!(
                "held by {who} until {}: a failover is running, or one stopped without releasing it",
                humantime::format_rfc3339_seconds(at)
            ),
        )
        .fix(format!("if no failover is running: {delete}")),
    }
}

fn primary_check(w: &WatchConfig, primary: &Result<Option<Live>, Failed>) -> Finding {
    let check = "primary";
    let name = format!("{} in {}", w.primary.cache_name, w.primary.region);
    match primary {
        Ok(Some(p)) if p.status == "available" => {
            finding(w, check, CheckStatus::Ok, format!("{name} is available"))
        }
        Ok(Some(p)) => finding(
            w,
            check,
            CheckStatus::Warn,
            format!("{name} is {}", p.status),
        ),
        Ok(None) => finding(
            w,
            check,
            CheckStatus::Fail,
            format!("{name} does not exist"),
        )
        .fix("fix [watch.primary] cache_name and region"),
        // Its region's API is down, or slow: exactly what a DR agent is for; not a failure of
        // the failover path.
        Err(f) if f.error.is_transient() => finding(
            w,
            check,
            CheckStatus::Warn,
            format!("the primary's region does not answer: {}", f.error),
        ),
        Err(f) => failed_call(w, check, f, true),
    }
}

async fn dr_name(w: &WatchConfig, dr: &SdkCache, dr_endpoint: Option<&str>) -> Finding {
    let check = "dr_name";
    let name = format!("{} in {}", w.dr.cache_name, w.dr.region);
    let cache = match describe(dr, &w.dr.cache_name).await {
        Ok(None) => {
            return finding(w, check, CheckStatus::Ok, format!("{name} is free"));
        }
        Ok(Some(cache)) => cache,
        Err(f) => return failed_call(w, check, &f, true),
    };
    if w.dr.adopt_existing {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            format!(
                "{name} exists ({}) and is adopted on purpose (adopt_existing = true)",
                cache.status
            ),
        );
    }
    let serving =
        dr_endpoint.is_some_and(|e| cache.endpoint.as_deref().is_some_and(|c| same_name(c, e)));
    let delete = format!("valkey-dr dr-cache delete --watch {} --yes", w.name);
    match cache.status.as_str() {
        "available" => {}
        // AWS refuses a create-failed cache's tags (ledger E3): a failover would stop on it.
        "create-failed" => {
            return finding(
                w,
                check,
                CheckStatus::Fail,
                format!("{name} is left over from a failed build (create-failed): a failover would stop at provision"),
            )
            .fix(format!("delete it: `{delete}`"));
        }
        "deleting" => {
            return finding(
                w,
                check,
                CheckStatus::Fail,
                format!(
                    "{name} is being deleted: a failover would stop at provision until it is gone"
                ),
            )
            .fix(format!(
                "wait until it is gone (minutes); `valkey-dr preflight --watch {}` says ok then",
                w.name
            ));
        }
        status => {
            return finding(
                w,
                check,
                CheckStatus::Warn,
                format!("{name} exists and is {status}: its tags cannot be read yet"),
            );
        }
    }
    match tags(dr, &cache.arn).await {
        Ok(tags) if crate::executor::is_standby_of(&tags, &w.name, &w.record) => finding(
            w,
            check,
            CheckStatus::Ok,
            format!("{name} is this watch's warm standby (see the standby check)"),
        ),
        Ok(tags) => match tags.get(FAILOVER_TAG) {
            Some(id) if serving => finding(
                w,
                check,
                CheckStatus::Ok,
                format!("{name} serves the record since failover {id}"),
            ),
            // A failover of this watch building now: the race a failover adopts.
            Some(id)
                if tags.get(WATCH_TAG) == Some(&w.name)
                    && tags.get(RECORD_TAG) == Some(&w.record)
                    && began_within(id, w.dr.create_timeout) =>
            {
                finding(
                    w,
                    check,
                    CheckStatus::Warn,
                    format!("{name} was built by failover {id}, which began within create_timeout: a failover is running"),
                )
            }
            Some(id) => finding(
                w,
                check,
                CheckStatus::Fail,
                format!("{name} is left over from failover {id} and does not serve the record: a failover would stop at provision"),
            )
            .fix(format!("delete it once that failover is over: `{delete}`")),
            None => finding(
                w,
                check,
                CheckStatus::Fail,
                format!("{name} is taken by a cache valkey-dr did not build (no {FAILOVER_TAG} tag): a failover would stop at create"),
            )
            .fix("choose another [watch.dr] cache_name, or set adopt_existing = true to use that cache on purpose"),
        },
        Err(f) => failed_call(w, check, &f, true),
    }
}

/// Subnets (in at least two AZs) and security groups, in one VPC, in the DR region; and that
/// VPC, when one was found (the configured subnets', or the default VPC without them).
async fn network(w: &WatchConfig, sdk: &SdkConfig) -> (Vec<Finding>, Option<String>) {
    let mut conf = aws_sdk_ec2::config::Builder::from(sdk);
    conf.set_timeout_config(Some(bounded(sdk)));
    let ec2 = aws_sdk_ec2::Client::from_conf(conf.build());
    let (subnets, vpcs) = dr_subnets(w, &ec2).await;
    let vpc = (vpcs.len() == 1)
        .then(|| vpcs.iter().next().cloned())
        .flatten();
    (vec![subnets, dr_security_groups(w, &ec2, &vpcs).await], vpc)
}

/// Without `subnet_ids`, `CreateServerlessCache` builds in the default VPC's subnets
/// (tests/FIDELITY.md, P9): the `dr_subnets` check is whether the DR region has one.
async fn default_vpc(w: &WatchConfig, ec2: &aws_sdk_ec2::Client) -> (Finding, BTreeSet<String>) {
    use aws_sdk_ec2::types::Filter;
    let region = w.dr.region.as_str();
    let answer = call(
        "ec2:DescribeVpcs",
        Some(region),
        "",
        ec2.describe_vpcs()
            .filters(Filter::builder().name("isDefault").values("true").build())
            .send(),
    )
    .await;
    match answer {
        Ok(out) => match out.vpcs().iter().find_map(|v| v.vpc_id()) {
            Some(vpc) => (
                finding(
                    w,
                    "dr_subnets",
                    CheckStatus::Ok,
                    format!("none configured: AWS uses the default VPC {vpc}'s subnets"),
                ),
                BTreeSet::from([vpc.to_owned()]),
            ),
            None => (
                finding(
                    w,
                    "dr_subnets",
                    CheckStatus::Fail,
                    format!("none configured, and {region} has no default VPC: CreateServerlessCache would have no subnets to build in"),
                )
                .fix(format!(
                    "set [watch.dr] subnet_ids to subnets (in 2 availability zones) of the VPC the applications use in {region}"
                )),
                BTreeSet::new(),
            ),
        },
        Err(f) => (failed_call(w, "dr_subnets", &f, false), BTreeSet::new()),
    }
}

/// The `dr_subnets` check, and the VPCs the subnets are in.
async fn dr_subnets(w: &WatchConfig, ec2: &aws_sdk_ec2::Client) -> (Finding, BTreeSet<String>) {
    let region = w.dr.region.as_str();
    if w.dr.subnet_ids.is_empty() {
        return default_vpc(w, ec2).await;
    }
    let answer = call(
        "ec2:DescribeSubnets",
        Some(region),
        "",
        ec2.describe_subnets()
            .set_subnet_ids(Some(w.dr.subnet_ids.clone()))
            .send(),
    )
    .await;
    match answer {
        Ok(out) => {
            let vpcs = out
                .subnets()
                .iter()
                .filter_map(|s| s.vpc_id().map(str::to_owned))
                .collect();
            (subnets_finding(w, out.subnets(), &vpcs), vpcs)
        }
        Err(f) if f.code_is(&["InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"]) => (
            finding(w, "dr_subnets", CheckStatus::Fail, f.error.to_string()).fix(format!(
                "fix [watch.dr] subnet_ids: every subnet must exist in {region}"
            )),
            BTreeSet::new(),
        ),
        Err(f) => (failed_call(w, "dr_subnets", &f, false), BTreeSet::new()),
    }
}

/// The configured subnets as `DescribeSubnets` found them (in `vpcs`): all there, in at
/// least two AZs, in one VPC.
fn subnets_finding(
    w: &WatchConfig,
    subnets: &[aws_sdk_ec2::types::Subnet],
    vpcs: &BTreeSet<String>,
) -> Finding {
    let azs: BTreeSet<String> = subnets
        .iter()
        .filter_map(|s| s.availability_zone().map(str::to_owned))
        .collect();
    let listed = format!(
        "{} in {}",
        w.dr.subnet_ids.join(", "),
        azs.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    if subnets.len() < w.dr.subnet_ids.len() {
        finding(
            w,
            "dr_subnets",
            CheckStatus::Fail,
            format!(
                "only {} of {} subnets exist in {}",
                subnets.len(),
                w.dr.subnet_ids.len(),
                w.dr.region
            ),
        )
        .fix("fix [watch.dr] subnet_ids")
    } else if azs.len() < 2 {
        finding(
            w,
            "dr_subnets",
            CheckStatus::Fail,
            format!("{listed}: a serverless cache needs subnets in at least 2 availability zones"),
        )
        .fix("add a subnet in another availability zone to [watch.dr] subnet_ids")
    } else if vpcs.len() > 1 {
        finding(
            w,
            "dr_subnets",
            CheckStatus::Fail,
            format!("{listed}: the subnets are in {} VPCs", vpcs.len()),
        )
        .fix("use subnets of one VPC")
    } else {
        finding(w, "dr_subnets", CheckStatus::Ok, listed)
    }
}

/// The `dr_security_groups` check: every group exists, in the subnets' VPC (`vpcs`, empty
/// when the subnets are not known).
async fn dr_security_groups(
    w: &WatchConfig,
    ec2: &aws_sdk_ec2::Client,
    vpcs: &BTreeSet<String>,
) -> Finding {
    let check = "dr_security_groups";
    let region = w.dr.region.as_str();
    if w.dr.security_group_ids.is_empty() {
        let none = "none configured: AWS uses the VPC's default security group".into();
        return finding(w, check, CheckStatus::Ok, none);
    }
    let answer = call(
        "ec2:DescribeSecurityGroups",
        Some(region),
        "",
        ec2.describe_security_groups()
            .set_group_ids(Some(w.dr.security_group_ids.clone()))
            .send(),
    )
    .await;
    let out = match answer {
        Ok(out) => out,
        Err(f) if f.code_is(&["InvalidGroup.NotFound", "InvalidGroupId.Malformed"]) => {
            return finding(w, check, CheckStatus::Fail, f.error.to_string()).fix(format!(
                "fix [watch.dr] security_group_ids: every group must exist in {region}"
            ));
        }
        Err(f) => return failed_call(w, check, &f, false),
    };
    let theirs: BTreeSet<String> = out
        .security_groups()
        .iter()
        .filter_map(|g| g.vpc_id().map(str::to_owned))
        .collect();
    let listed = w.dr.security_group_ids.join(", ");
    if out.security_groups().len() < w.dr.security_group_ids.len() {
        finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "only {} of {} security groups exist in {region}",
                out.security_groups().len(),
                w.dr.security_group_ids.len()
            ),
        )
        .fix("fix [watch.dr] security_group_ids")
    } else if !vpcs.is_empty() && !theirs.is_subset(vpcs) {
        finding(
            w,
            check,
            CheckStatus::Fail,
            format!(
                "{listed} are not in the subnets' VPC ({})",
                vpcs.iter().cloned().collect::<Vec<_>>().join(", ")
            ),
        )
        .fix("use security groups of the subnets' VPC")
    } else {
        finding(w, check, CheckStatus::Ok, format!("{listed} exist"))
    }
}

async fn kms_key(w: &WatchConfig, sdk: &SdkConfig) -> Finding {
    let check = "dr_kms_key";
    let Some(key) = &w.dr.kms_key_id else {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            "none configured: AWS encrypts with its own key".into(),
        );
    };
    let mut conf = aws_sdk_kms::config::Builder::from(sdk);
    conf.set_timeout_config(Some(bounded(sdk)));
    let kms = aws_sdk_kms::Client::from_conf(conf.build());
    let answer = call(
        "kms:DescribeKey",
        Some(&w.dr.region),
        key,
        kms.describe_key().key_id(key).send(),
    )
    .await;
    match answer {
        Ok(out) => {
            match out.key_metadata() {
                Some(m) => {
                    let state = m.key_state().map(|s| s.as_str()).unwrap_or("unknown");
                    if m.enabled() && state == "Enabled" {
                        finding(
                            w,
                            check,
                            CheckStatus::Ok,
                            format!("{key} ({}) is enabled", m.arn().unwrap_or(m.key_id())),
                        )
                    } else {
                        finding(
                        w,
                        check,
                        CheckStatus::Fail,
                        format!("{key} ({}) is {state}: CreateServerlessCache cannot encrypt with it", m.arn().unwrap_or(m.key_id())),
                    )
                    .fix("enable the key (kms:EnableKey), or name another in [watch.dr] kms_key_id")
                    }
                }
                None => finding(
                    w,
                    check,
                    CheckStatus::Unknown,
                    format!("DescribeKey answered without KeyMetadata for {key}"),
                ),
            }
        }
        Err(f) if f.code_is(&["NotFoundException"]) => {
            finding(w, check, CheckStatus::Fail, f.error.to_string()).fix(format!(
                "fix [watch.dr] kms_key_id: the key must exist in {}",
                w.dr.region
            ))
        }
        Err(f) => failed_call(w, check, &f, false),
    }
}

async fn user_group(w: &WatchConfig, dr: &SdkCache) -> Finding {
    let check = "dr_user_group";
    let Some(group) = &w.dr.user_group_id else {
        return finding(w, check, CheckStatus::Ok, "none configured".into());
    };
    let answer = call(
        "elasticache:DescribeUserGroups",
        Some(&w.dr.region),
        group,
        dr.client()
            .describe_user_groups()
            .user_group_id(group)
            .send(),
    )
    .await;
    match answer {
        Ok(out) => match out.user_groups().first() {
            Some(g) if g.status() == Some("active") => {
                finding(w, check, CheckStatus::Ok, format!("{group} is active"))
            }
            Some(g) => finding(
                w,
                check,
                CheckStatus::Warn,
                format!("{group} is {}", g.status().unwrap_or("of unknown status")),
            ),
            None => finding(
                w,
                check,
                CheckStatus::Fail,
                format!("{group} does not exist"),
            )
            .fix(format!(
                "create it in {}, or fix [watch.dr] user_group_id",
                w.dr.region
            )),
        },
        Err(f) if f.code_is(&["UserGroupNotFound", "UserGroupNotFoundFault"]) => {
            finding(w, check, CheckStatus::Fail, f.error.to_string()).fix(format!(
                "create it in {}, or fix [watch.dr] user_group_id",
                w.dr.region
            ))
        }
        Err(f) => failed_call(w, check, &f, false),
    }
}

/// The region and name of a serverless cache snapshot's ARN; `None` for any other ARN.
fn serverless_snapshot(arn: &str) -> Option<(&str, &str)> {
    let parts: Vec<&str> = arn.splitn(7, ':').collect();
    match parts.as_slice() {
        [
            _,
            _,
            "elasticache",
            region,
            _,
            "serverlesscachesnapshot",
            name,
        ] => Some((*region, *name)),
        _ => None,
    }
}

async fn snapshots(w: &WatchConfig, dr: &SdkCache) -> Finding {
    let check = "dr_snapshots";
    if w.dr.snapshot_arns_to_restore.is_empty() {
        return finding(
            w,
            check,
            CheckStatus::Ok,
            "none configured: the DR cache starts empty".into(),
        );
    }
    let mut missing = Vec::new();
    let mut unchecked = Vec::new();
    let mut found = Vec::new();
    for arn in &w.dr.snapshot_arns_to_restore {
        let name = match serverless_snapshot(arn) {
            Some((region, _)) if region != w.dr.region => {
                missing.push(format!("{arn} is in {region}, not in the DR region"));
                continue;
            }
            Some((_, name)) => name,
            None => {
                unchecked.push(arn.clone());
                continue;
            }
        };
        let answer = call(
            "elasticache:DescribeServerlessCacheSnapshots",
            Some(&w.dr.region),
            name,
            dr.client()
                .describe_serverless_cache_snapshots()
                .serverless_cache_snapshot_name(name)
                .send(),
        )
        .await;
        match answer {
            Ok(out) => match out.serverless_cache_snapshots().first() {
                Some(s) if s.status() == Some("available") => found.push(name.to_owned()),
                Some(s) => missing.push(format!("{name} is {}", s.status().unwrap_or("?"))),
                None => missing.push(format!("{name} does not exist")),
            },
            Err(f) if f.code_is(&["ServerlessCacheSnapshotNotFoundFault"]) => {
                missing.push(format!("{name} does not exist"))
            }
            Err(f) => return failed_call(w, check, &f, false),
        }
    }
    if !missing.is_empty() {
        finding(w, check, CheckStatus::Fail, missing.join("; "))
            .fix("fix [watch.dr] snapshot_arns_to_restore: each must be an available snapshot in the DR region")
    } else if !unchecked.is_empty() {
        finding(
            w,
            check,
            CheckStatus::Unknown,
            format!(
                "not checked (not serverless cache snapshots): {}",
                unchecked.join(", ")
            ),
        )
    } else {
        finding(
            w,
            check,
            CheckStatus::Ok,
            format!("{} available", found.join(", ")),
        )
    }
}

/// The live primary against the DR spec: one finding per field, `warn` on a difference.
async fn drift(
    w: &WatchConfig,
    primary_cache: &SdkCache,
    primary: &Result<Option<Live>, Failed>,
) -> Vec<Finding> {
    const DRIFT: [&str; 6] = [
        "drift_engine",
        "drift_usage_limits",
        "drift_kms_key",
        "drift_snapshot_retention",
        "drift_user_group",
        "drift_tags",
    ];
    let p = match primary {
        Ok(Some(p)) => p,
        other => {
            let why = match other {
                Ok(_) => "the primary does not exist".to_owned(),
                Err(f) => format!("the primary cannot be read: {}", f.error),
            };
            return DRIFT
                .iter()
                .map(|c| finding(w, c, CheckStatus::Unknown, format!("not compared: {why}")))
                .collect();
        }
    };
    let mut out = drift_of_spec(w, p);
    out.push(drift_tags(w, primary_cache, p).await);
    out
}

/// One drift check: `live` (the primary's) against `planned` (the DR spec's).
fn compared(
    w: &WatchConfig,
    check: &'static str,
    what: &str,
    live: String,
    planned: String,
) -> Finding {
    if live == planned {
        finding(w, check, CheckStatus::Ok, format!("{what}: {live} on both"))
    } else {
        finding(
            w,
            check,
            CheckStatus::Warn,
            format!("{what}: the primary has {live}, the DR spec {planned}"),
        )
        .fix("make [watch.dr] match the primary, or the primary match the plan")
    }
}

/// One setting of a live cache against `[watch.dr]`, as people read it.
struct Field {
    /// The drift check it is.
    check: &'static str,
    /// What it is, for messages.
    what: &'static str,
    /// The live cache's.
    live: String,
    /// `[watch.dr]`'s.
    planned: String,
}

/// The settings of the live cache `p` against `[watch.dr]`'s, in [`CHECKS`] order (tags
/// apart): the primary's drift checks, and the warm standby's.
fn spec_fields(w: &WatchConfig, p: &Live) -> Vec<Field> {
    let dr = &w.dr;
    let opt = |v: Option<String>| v.unwrap_or_else(|| "none".to_owned());
    let limits = |storage: Option<String>, ecpu: Option<String>| {
        format!("storage {} GB, {} ECPU/s", opt(storage), opt(ecpu))
    };
    let one = |set: bool| if set { "one" } else { "none" }.to_owned();
    let engine = |engine: &str, version: &str| format!("{} {version}", engine.to_ascii_lowercase());
    let field = |check, what, live, planned| Field {
        check,
        what,
        live,
        planned,
    };
    vec![
        field(
            "drift_engine",
            "engine",
            engine(&p.engine, &p.major_engine_version),
            engine(&dr.engine, &dr.major_engine_version),
        ),
        field(
            "drift_usage_limits",
            "usage limits",
            limits(
                p.data_storage_max.map(|v| v.to_string()),
                p.ecpu_max.map(|v| v.to_string()),
            ),
            limits(
                dr.usage_limits
                    .and_then(|u| u.data_storage_max_gb)
                    .map(|v| v.to_string()),
                dr.usage_limits
                    .and_then(|u| u.ecpu_per_second_max)
                    .map(|v| v.to_string()),
            ),
        ),
        field(
            "drift_kms_key",
            "customer KMS key",
            one(p.kms_key_id.is_some()),
            one(dr.kms_key_id.is_some()),
        ),
        field(
            "drift_snapshot_retention",
            "snapshot retention",
            format!("{} days", p.snapshot_retention_limit.unwrap_or(0)),
            format!("{} days", dr.snapshot_retention_limit.unwrap_or(0)),
        ),
        field(
            "drift_user_group",
            "user group",
            opt(p.user_group_id.clone()),
            opt(dr.user_group_id.clone()),
        ),
    ]
}

/// The drift checks of the cache's own settings, in [`CHECKS`] order (tags apart).
fn drift_of_spec(w: &WatchConfig, p: &Live) -> Vec<Finding> {
    spec_fields(w, p)
        .into_iter()
        .map(|f| compared(w, f.check, f.what, f.live, f.planned))
        .collect()
}

/// The primary's tags against the DR spec's, AWS's and valkey-dr's own left out.
async fn drift_tags(w: &WatchConfig, primary_cache: &SdkCache, p: &Live) -> Finding {
    match tags(primary_cache, &p.arn).await {
        Ok(live) => {
            let ours = |k: &String| k.starts_with("aws:") || k.starts_with("valkey-dr:");
            let live: BTreeMap<_, _> = live.into_iter().filter(|(k, _)| !ours(k)).collect();
            let text = |m: &BTreeMap<String, String>| {
                if m.is_empty() {
                    "no tags".to_owned()
                } else {
                    m.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            };
            compared(w, "drift_tags", "tags", text(&live), text(&w.dr.tags))
        }
        Err(f) => failed_call(w, "drift_tags", &f, false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_is_the_worst_result_fail_first() {
        let f = |result| Finding {
            watch: "w".into(),
            check: "identity",
            result,
            found: String::new(),
            fix: None,
        };
        let report = |rs: &[CheckStatus]| Report {
            standbys: BTreeMap::new(),
            checked_at: SystemTime::UNIX_EPOCH,
            findings: rs.iter().map(|r| f(*r)).collect(),
        };
        assert_eq!(report(&[CheckStatus::Ok]).status(), Status::Ok);
        assert_eq!(
            report(&[CheckStatus::Ok, CheckStatus::Warn]).status(),
            Status::Warning
        );
        assert_eq!(
            report(&[CheckStatus::Warn, CheckStatus::Unknown]).status(),
            Status::Unknown
        );
        assert_eq!(
            report(&[CheckStatus::Unknown, CheckStatus::Fail, CheckStatus::Warn]).status(),
            Status::Critical
        );
        assert_eq!(
            report(&[CheckStatus::Fail, CheckStatus::Ok])
                .failing("w")
                .len(),
            1
        );
    }
}
