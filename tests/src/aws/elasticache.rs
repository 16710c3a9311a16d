//! ElastiCache's Query API, for serverless caches: `CreateServerlessCache`,
//! `DescribeServerlessCaches`, `DeleteServerlessCache` and `ListTagsForResource`; and the
//! references a DR spec names: `DescribeUserGroups` (missing: `UserGroupNotFound`, 404) and
//! `DescribeServerlessCacheSnapshots` (missing: `ServerlessCacheSnapshotNotFoundFault`, 404);
//! and `DescribeUsers` (missing: `UserNotFound`, 404), whose access strings the caches' own
//! servers apply.
//!
//! Requests are `POST /` with a form body (`Action=…&Version=2015-02-02&…`); answers are
//! `<{Action}Response><{Action}Result>…</…><ResponseMetadata>…` documents whose element names
//! are the ones `aws-sdk-elasticache`'s deserializers look for (lists of ids use their
//! member names, `SubnetId` and `SecurityGroupId`; tags are `Tag`; caches are `member`).
//!
//! State is per region, the region coming from the request's credential scope. A cache goes
//! `creating` → `available` after the provision delay (its valkey-server and TLS front are
//! started at that moment, through the lab's own `add_cache`, and its endpoint starts to
//! resolve), and `deleting` → gone after the same delay (its server stops at once). Every
//! cache the lab runs is listed in its region, including the ones `Lab::start` and
//! `Lab::add_cache` made.
//!
//! As AWS does (each with its source in `tests/FIDELITY.md`):
//!
//! - `MaxResults` outside 20..=100 is refused with `InvalidParameterValue`.
//! - A new cache is invisible to `DescribeServerlessCaches` for the describe lag (by name:
//!   `ServerlessCacheNotFoundFault`; in a listing: left out).
//! - `ListTagsForResource` on a cache that is not `available` answers
//!   `InvalidServerlessCacheStateFault`.
//! - `Endpoint` and `ReaderEndpoint` appear once the cache is `available`; the reader's port
//!   is 6380, on the same name.
//! - The same name may be used in two regions.
//! - Usage limits and tags are checked against AWS's documented ranges and rules.
//!
//! Where the lab departs from AWS:
//!
//! - `Endpoint`'s port is the lab's shared front port, not 6379, and nothing listens on the
//!   `ReaderEndpoint`'s 6380: the agent probes its reader on the port its config names.
//! - Faults (`kill`, `point-record`, ...) name a cache by its name alone and act on the first
//!   cache of that name; a same-name cache in a second region keeps its own server, state and
//!   DNS name.
//! - `memcached` caches run valkey-server too (the lab has no memcached).
//! - Snapshots to restore, KMS keys, user groups and usage limits are stored and echoed, never
//!   acted on (`DescribeUserGroups` and `DescribeServerlessCacheSnapshots` list the one user
//!   group and snapshot every region has, whatever a create named). `FinalSnapshotName` on
//!   delete is ignored.
//! - At most [`QUOTA_PER_REGION`] caches (in any state) per region.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use hyper::body::Bytes;
use serde_json::json;
use tracing::{info, warn};

use super::query::{self, Params};
use super::xml::Xml;
use super::{ACCOUNT_ID, ApiError, AwsService, Provisioning, lock, timestamp};
use crate::config::{
    LAB_DR_SUBNET_IDS, LAB_SECURITY_GROUP_ID, LAB_SNAPSHOT_NAME, LAB_SNAPSHOT_RETENTION_LIMIT,
    LAB_USER_GROUP_ID, lab_kms_key_arn,
};
use crate::{CacheInfo, CacheSpec, PRIMARY_CACHE, Role, Shared, naming};

/// How many serverless caches one region holds, in any state, before
/// `ServerlessCacheQuotaForCustomerExceededFault`.
pub(crate) const QUOTA_PER_REGION: usize = 5;
/// AWS's default page size for `DescribeServerlessCaches`.
const DEFAULT_MAX_RESULTS: usize = 50;
/// The `MaxResults` AWS accepts (aws/aws-sdk-js-v3#5727: "Must be between 20 and 100").
const MAX_RESULTS_RANGE: std::ops::RangeInclusive<i64> = 20..=100;
/// AWS's limit on tags per resource.
const MAX_TAGS: usize = 50;
/// AWS's tag key and value lengths, in characters.
const MAX_TAG_KEY: usize = 128;
const MAX_TAG_VALUE: usize = 256;
/// `CacheUsageLimits` ranges as the console and terraform-provider-aws#36382 document them.
const DATA_STORAGE_GB: std::ops::RangeInclusive<i64> = 1..=5000;
const ECPU_PER_SECOND: std::ops::RangeInclusive<i64> = 1000..=15_000_000;
/// The port of a serverless cache's reader endpoint (its primary is on 6379).
const READER_PORT: u16 = 6380;
const NAMESPACE: &str = "http://elasticache.amazonaws.com/doc/2015-02-02/";

/// A serverless cache's status, as AWS spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    Creating,
    Available,
    Deleting,
    CreateFailed,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "creating",
            Self::Available => "available",
            Self::Deleting => "deleting",
            Self::CreateFailed => "create-failed",
        }
    }
}

/// `CacheUsageLimits`, as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct UsageLimits {
    storage_max: Option<i64>,
    storage_min: Option<i64>,
    storage_unit: Option<String>,
    ecpu_max: Option<i64>,
    ecpu_min: Option<i64>,
}

impl UsageLimits {
    fn has_storage(&self) -> bool {
        self.storage_max.is_some() || self.storage_min.is_some() || self.storage_unit.is_some()
    }

    fn has_ecpu(&self) -> bool {
        self.ecpu_max.is_some() || self.ecpu_min.is_some()
    }
}

/// One serverless cache as the API knows it.
#[derive(Debug, Clone)]
pub(crate) struct ServerlessCache {
    name: String,
    region: String,
    description: String,
    status: Status,
    engine: String,
    major_engine_version: String,
    create_time: String,
    usage_limits: Option<UsageLimits>,
    kms_key_id: Option<String>,
    security_group_ids: Vec<String>,
    subnet_ids: Vec<String>,
    user_group_id: Option<String>,
    snapshot_retention_limit: Option<i64>,
    daily_snapshot_time: Option<String>,
    endpoint: String,
    port: u16,
    tags: Vec<(String, String)>,
    /// Tells this cache from an earlier one of the same name, so that a slow background task
    /// of a deleted cache never touches its successor.
    generation: u64,
    /// When `DescribeServerlessCaches` starts to see the cache (eventual consistency); `None`
    /// for a cache the lab started itself, seen at once.
    visible_at: Option<Instant>,
}

impl ServerlessCache {
    fn arn(&self) -> String {
        arn(&self.region, &self.name)
    }

    fn full_engine_version(&self) -> String {
        match (self.engine.as_str(), self.major_engine_version.as_str()) {
            ("valkey", "7") => "7.2".to_string(),
            ("valkey", _) => "8.0".to_string(),
            ("redis", _) => "7.1".to_string(),
            (_, major) => format!("{major}.22"),
        }
    }

    fn write(&self, x: &mut Xml) {
        x.text("ServerlessCacheName", &self.name)
            .text("Description", &self.description)
            .text("CreateTime", &self.create_time)
            .text("Status", self.status.as_str())
            .text("Engine", &self.engine)
            .text("MajorEngineVersion", &self.major_engine_version)
            .text("FullEngineVersion", self.full_engine_version());
        if let Some(limits) = &self.usage_limits {
            x.element("CacheUsageLimits", |x| {
                if limits.has_storage() {
                    x.element("DataStorage", |x| {
                        x.text_opt("Maximum", limits.storage_max)
                            .text_opt("Minimum", limits.storage_min)
                            .text_opt("Unit", limits.storage_unit.as_deref());
                    });
                }
                if limits.has_ecpu() {
                    x.element("ECPUPerSecond", |x| {
                        x.text_opt("Maximum", limits.ecpu_max)
                            .text_opt("Minimum", limits.ecpu_min);
                    });
                }
            });
        }
        x.text_opt("KmsKeyId", self.kms_key_id.as_deref());
        if !self.security_group_ids.is_empty() {
            x.element("SecurityGroupIds", |x| {
                for id in &self.security_group_ids {
                    x.text("SecurityGroupId", id);
                }
            });
        }
        // AWS gives a cache its endpoints once it is up; while `creating` (and after
        // `create-failed`) there are none to give.
        if matches!(self.status, Status::Available | Status::Deleting) {
            x.element("Endpoint", |x| {
                x.text("Address", &self.endpoint).text("Port", self.port);
            });
            x.element("ReaderEndpoint", |x| {
                x.text("Address", &self.endpoint).text("Port", READER_PORT);
            });
        }
        x.text("ARN", self.arn())
            .text_opt("UserGroupId", self.user_group_id.as_deref());
        if !self.subnet_ids.is_empty() {
            x.element("SubnetIds", |x| {
                for id in &self.subnet_ids {
                    x.text("SubnetId", id);
                }
            });
        }
        x.text_opt("SnapshotRetentionLimit", self.snapshot_retention_limit)
            .text_opt("DailySnapshotTime", self.daily_snapshot_time.as_deref());
    }
}

fn arn(region: &str, name: &str) -> String {
    format!("arn:aws:elasticache:{region}:{ACCOUNT_ID}:serverlesscache:{name}")
}

fn user_group_arn(region: &str, id: &str) -> String {
    format!("arn:aws:elasticache:{region}:{ACCOUNT_ID}:usergroup:{id}")
}

fn user_arn(region: &str, id: &str) -> String {
    format!("arn:aws:elasticache:{region}:{ACCOUNT_ID}:user:{id}")
}

fn snapshot_arn(region: &str, name: &str) -> String {
    format!("arn:aws:elasticache:{region}:{ACCOUNT_ID}:serverlesscachesnapshot:{name}")
}

/// Every region's caches.
#[derive(Debug, Default)]
pub(crate) struct Regions {
    /// region → name → cache.
    caches: BTreeMap<String, BTreeMap<String, ServerlessCache>>,
    generation: u64,
}

impl Regions {
    fn get(&self, region: &str, name: &str) -> Option<&ServerlessCache> {
        self.caches.get(region)?.get(name)
    }

    fn in_region(&self, region: &str) -> impl Iterator<Item = &ServerlessCache> {
        self.caches.get(region).into_iter().flat_map(|m| m.values())
    }

    fn insert(&mut self, mut cache: ServerlessCache) -> u64 {
        self.generation += 1;
        cache.generation = self.generation;
        self.caches
            .entry(cache.region.clone())
            .or_default()
            .insert(cache.name.clone(), cache);
        self.generation
    }

    fn set_status(&mut self, region: &str, name: &str, generation: u64, status: Status) {
        if let Some(cache) = self
            .caches
            .get_mut(region)
            .and_then(|m| m.get_mut(name))
            .filter(|c| c.generation == generation)
        {
            cache.status = status;
        }
    }

    fn remove(&mut self, region: &str, name: &str, generation: u64) {
        if let Some(caches) = self.caches.get_mut(region)
            && caches.get(name).is_some_and(|c| c.generation == generation)
        {
            caches.remove(name);
        }
    }

    /// Lists a cache the lab started by itself (`Lab::start`, `Lab::add_cache`) as available,
    /// a valkey 8 cache with no usage limits and no tags. The primary has the DR spec's
    /// settings as they are live in its region (the lab key's ARN, the user group, a
    /// snapshot retention of 1, the lab subnets and security group), so a fresh lab shows no
    /// drift between the two; every other cache has none of them.
    pub(crate) fn register_running(&mut self, info: &CacheInfo) {
        let primary = info.role == Role::Primary;
        let strings = |ids: &[&str]| -> Vec<String> {
            if primary {
                ids.iter().map(|id| id.to_string()).collect()
            } else {
                Vec::new()
            }
        };
        self.insert(ServerlessCache {
            name: info.name.clone(),
            region: info.region.clone(),
            description: String::new(),
            status: Status::Available,
            engine: "valkey".to_string(),
            major_engine_version: "8".to_string(),
            create_time: timestamp(SystemTime::now()),
            usage_limits: None,
            kms_key_id: primary.then(|| lab_kms_key_arn(&info.region)),
            security_group_ids: strings(&[LAB_SECURITY_GROUP_ID]),
            subnet_ids: strings(&LAB_DR_SUBNET_IDS),
            user_group_id: primary.then(|| LAB_USER_GROUP_ID.to_string()),
            snapshot_retention_limit: primary.then_some(LAB_SNAPSHOT_RETENTION_LIMIT),
            daily_snapshot_time: None,
            endpoint: info.endpoint.clone(),
            port: info.address.port(),
            tags: Vec::new(),
            generation: 0,
            visible_at: None,
        });
    }

    /// Drops a cache `Lab::remove_cache` removed.
    pub(crate) fn forget(&mut self, region: &str, name: &str) {
        if let Some(caches) = self.caches.get_mut(region) {
            caches.remove(name);
        }
    }
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::sender("InvalidParameterValue", message)
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(
        "ServerlessCacheNotFoundFault",
        format!("Serverless cache {name} not found."),
    )
}

/// The lowercase name (AWS stores it so), checked against AWS's naming rules.
fn cache_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.to_ascii_lowercase();
    naming::validate_cache_name(&name).map_err(|e| invalid(e.to_string()))?;
    Ok(name)
}

/// `POST /`: every ElastiCache call.
pub(crate) async fn handle(
    State(lab): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (mut call, params, scope) =
        query::begin(&lab.aws, AwsService::Elasticache, &headers, &body);
    call.request = summary(&call.action, &params);
    let scope = match scope {
        Ok(scope) => scope,
        Err(e) => return call.finish(Err(e)),
    };
    call.resource = resource(&call.action, &scope.region, &params);
    let outcome = (|| {
        if call.action.is_empty() {
            return Err(query::missing_action());
        }
        call.gate()?;
        let request_id = call.request_id();
        let region = scope.region.as_str();
        match call.action.as_str() {
            "CreateServerlessCache" => create(&lab, region, &params, request_id),
            "DescribeServerlessCaches" => describe(&lab, region, &params, request_id),
            "DeleteServerlessCache" => delete(&lab, region, &params, request_id),
            "ListTagsForResource" => list_tags(&lab, region, &params, request_id),
            "DescribeUserGroups" => describe_user_groups(&lab, region, &params, request_id),
            "DescribeUsers" => describe_users(&lab, region, &params, request_id),
            "DescribeServerlessCacheSnapshots" => {
                describe_snapshots(&lab, region, &params, request_id)
            }
            _ => Err(query::invalid_action(
                "CreateServerlessCache, DescribeServerlessCaches, DeleteServerlessCache, \
                 ListTagsForResource, DescribeUserGroups, DescribeUsers and \
                 DescribeServerlessCacheSnapshots",
            )),
        }
    })();
    call.finish(outcome)
}

/// The ARN an `iam-deny` message names for the call: the cache, user group or snapshot it
/// is about; `None` (`*`) for a listing.
fn resource(action: &str, region: &str, params: &Params) -> Option<String> {
    let named = |key: &str| params.get(key).filter(|v| !v.is_empty());
    match action {
        "ListTagsForResource" => named("ResourceName").map(str::to_string),
        "DescribeUserGroups" => named("UserGroupId").map(|id| user_group_arn(region, id)),
        "DescribeUsers" => named("UserId").map(|id| user_arn(region, id)),
        "DescribeServerlessCacheSnapshots" => {
            named("ServerlessCacheSnapshotName").map(|name| snapshot_arn(region, name))
        }
        _ => named("ServerlessCacheName").map(|name| arn(region, &name.to_ascii_lowercase())),
    }
}

/// What the call log keeps of a request.
fn summary(action: &str, params: &Params) -> serde_json::Value {
    let name = params.get("ServerlessCacheName");
    match action {
        "CreateServerlessCache" => json!({
            "cache_name": name,
            "engine": params.get("Engine"),
            "major_engine_version": params.get("MajorEngineVersion"),
            "subnet_ids": params.list("SubnetIds"),
            "security_group_ids": params.list("SecurityGroupIds"),
            "snapshot_arns_to_restore": params.list("SnapshotArnsToRestore"),
            "tags": params
                .tags()
                .unwrap_or_default()
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        }),
        "ListTagsForResource" => json!({ "resource_name": params.get("ResourceName") }),
        _ => json!({ "cache_name": name }),
    }
}

/// The Query answer, in ElastiCache's namespace.
fn response(action: &str, request_id: &str, result: impl FnOnce(&mut Xml)) -> String {
    query::response(NAMESPACE, action, request_id, result)
}

/// The engine and major version, defaulted and checked.
fn engine(params: &Params) -> Result<(String, String), ApiError> {
    let engine = params.required("Engine")?.to_ascii_lowercase();
    let allowed: &[&str] = match engine.as_str() {
        "valkey" => &["7", "8"],
        "redis" => &["7"],
        "memcached" => &["1.6"],
        _ => {
            return Err(invalid(format!(
                "Invalid engine {engine:?}: valid engines are valkey, redis and memcached."
            )));
        }
    };
    let major = match params.get("MajorEngineVersion") {
        Some(v) if !v.is_empty() => v.to_string(),
        _ => allowed[allowed.len() - 1].to_string(),
    };
    if !allowed.contains(&major.as_str()) {
        return Err(invalid(format!(
            "Invalid MajorEngineVersion {major:?} for engine {engine}: valid versions are {}.",
            allowed.join(", ")
        )));
    }
    Ok((engine, major))
}

fn usage_limits(params: &Params) -> Result<Option<UsageLimits>, ApiError> {
    let limits = UsageLimits {
        storage_max: params.int("CacheUsageLimits.DataStorage.Maximum")?,
        storage_min: params.int("CacheUsageLimits.DataStorage.Minimum")?,
        storage_unit: params
            .get("CacheUsageLimits.DataStorage.Unit")
            .map(str::to_string),
        ecpu_max: params.int("CacheUsageLimits.ECPUPerSecond.Maximum")?,
        ecpu_min: params.int("CacheUsageLimits.ECPUPerSecond.Minimum")?,
    };
    if let Some(unit) = &limits.storage_unit
        && unit != "GB"
    {
        return Err(invalid(format!(
            "Invalid DataStorage Unit {unit:?}: the only unit is GB."
        )));
    }
    if limits.has_storage() && limits.storage_unit.is_none() {
        return Err(ApiError::sender(
            "InvalidParameterCombination",
            "DataStorage needs a Unit (GB) with its Maximum or Minimum.",
        ));
    }
    let in_range =
        |field: &str, value: Option<i64>, range: &std::ops::RangeInclusive<i64>| match value {
            Some(v) if !range.contains(&v) => Err(invalid(format!(
                "Invalid {field} {v}: it must be between {} and {}.",
                range.start(),
                range.end()
            ))),
            _ => Ok(()),
        };
    in_range("DataStorage Maximum", limits.storage_max, &DATA_STORAGE_GB)?;
    in_range("DataStorage Minimum", limits.storage_min, &DATA_STORAGE_GB)?;
    in_range("ECPUPerSecond Maximum", limits.ecpu_max, &ECPU_PER_SECOND)?;
    in_range("ECPUPerSecond Minimum", limits.ecpu_min, &ECPU_PER_SECOND)?;
    for (what, min, max) in [
        ("DataStorage", limits.storage_min, limits.storage_max),
        ("ECPUPerSecond", limits.ecpu_min, limits.ecpu_max),
    ] {
        if let (Some(min), Some(max)) = (min, max)
            && min > max
        {
            return Err(ApiError::sender(
                "InvalidParameterCombination",
                format!("{what} Minimum {min} is greater than its Maximum {max}."),
            ));
        }
    }
    Ok((limits != UsageLimits::default()).then_some(limits))
}

/// AWS's tag rules: at most 50 tags, keys of 1 to 128 characters and values of at most 256,
/// Unicode letters, digits, white space and `_ . : / = + - @` only, and no `aws:` prefix.
fn check_tags(tags: &[(String, String)]) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::sender(
            "TagQuotaPerResourceExceeded",
            format!("A resource may have at most {MAX_TAGS} tags."),
        ));
    }
    let allowed = |text: &str| {
        text.chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_.:/=+-@".contains(c))
    };
    for (key, value) in tags {
        if key.chars().count() > MAX_TAG_KEY {
            return Err(invalid(format!(
                "Tag key {key:?} is longer than {MAX_TAG_KEY} characters."
            )));
        }
        if value.chars().count() > MAX_TAG_VALUE {
            return Err(invalid(format!(
                "Tag value for key {key:?} is longer than {MAX_TAG_VALUE} characters."
            )));
        }
        if !allowed(key) || !allowed(value) {
            return Err(invalid(format!(
                "Tag {key:?} has a character outside letters, digits, white space and _ . : / = + - @."
            )));
        }
        if key.to_lowercase().starts_with("aws:") {
            return Err(invalid(format!(
                "Tag key {key:?} uses the reserved prefix aws:."
            )));
        }
    }
    Ok(())
}

/// `KmsKeyId` is "the ARN of the customer managed key" (API_CreateServerlessCache), and
/// services that take a key through a KMS grant refuse aliases (tests/FIDELITY.md, E12): only
/// a key ARN is taken. The wording of the refusal is the lab's; AWS's is not documented.
fn check_kms_key_arn(key: &str) -> Result<(), ApiError> {
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    let is_key_arn = matches!(parts.as_slice(), ["arn", _, "kms", region, account, resource]
        if !region.is_empty() && !account.is_empty()
            && resource.strip_prefix("key/").is_some_and(|id| !id.is_empty()));
    if is_key_arn {
        return Ok(());
    }
    let what = if key.starts_with("alias/") || key.contains(":alias/") {
        "Key Aliases are not supported for this operation"
    } else {
        "it is not a key ARN"
    };
    Err(invalid(format!(
        "KmsKeyId {key} is invalid: {what}; give the ARN of the customer managed key (arn:aws:kms:REGION:ACCOUNT:key/KEY-ID)."
    )))
}

fn create(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let name = cache_name(params.required("ServerlessCacheName")?)?;
    let (engine, major_engine_version) = engine(params)?;
    let description = params.get("Description").unwrap_or_default().to_string();
    if description.len() > 255 {
        return Err(invalid(
            "The Description may be at most 255 characters long.",
        ));
    }
    let snapshot_retention_limit = params.int("SnapshotRetentionLimit")?;
    if snapshot_retention_limit.is_some_and(|n| !(0..=35).contains(&n)) {
        return Err(invalid("SnapshotRetentionLimit must be between 0 and 35."));
    }
    let usage_limits = usage_limits(params)?;
    let tags = params.tags()?;
    check_tags(&tags)?;
    let kms_key_id = params.get("KmsKeyId").map(str::to_string);
    if let Some(key) = &kms_key_id {
        check_kms_key_arn(key)?;
    }

    let mut regions = lock(&lab.aws.elasticache);
    if regions.get(region, &name).is_some() {
        return Err(ApiError::sender(
            "ServerlessCacheAlreadyExistsFault",
            format!("Serverless cache {name} already exists."),
        ));
    }
    if regions.in_region(region).count() >= QUOTA_PER_REGION {
        return Err(ApiError::sender(
            "ServerlessCacheQuotaForCustomerExceededFault",
            format!(
                "The quota of {QUOTA_PER_REGION} serverless caches in {region} has been reached."
            ),
        ));
    }
    let endpoint = naming::endpoint_name(&name, region, &mut *crate::lock(&lab.rng));
    let cache = ServerlessCache {
        name: name.clone(),
        region: region.to_string(),
        description,
        status: Status::Creating,
        engine,
        major_engine_version,
        create_time: timestamp(SystemTime::now()),
        usage_limits,
        kms_key_id,
        security_group_ids: params.list("SecurityGroupIds"),
        subnet_ids: params.list("SubnetIds"),
        user_group_id: params.get("UserGroupId").map(str::to_string),
        snapshot_retention_limit,
        daily_snapshot_time: params.get("DailySnapshotTime").map(str::to_string),
        endpoint: endpoint.clone(),
        port: lab.base.port,
        tags,
        generation: 0,
        visible_at: Some(Instant::now() + lab.aws.options.describe_lag),
    };
    let generation = regions.insert(cache.clone());
    drop(regions);

    let provisioning = lab.aws.next_provisioning();
    info!(cache = %name, %region, ?provisioning, "CreateServerlessCache: creating");
    if provisioning != Provisioning::Stuck {
        spawn_provisioning(
            lab.clone(),
            region.to_string(),
            name,
            generation,
            endpoint,
            provisioning,
        );
    }
    Ok(response("CreateServerlessCache", request_id, |x| {
        x.element("ServerlessCache", |x| cache.write(x));
    }))
}

/// After the provision delay: start the cache's server and front (or fail it, for
/// `provision-fail`), then mark it available.
fn spawn_provisioning(
    lab: Arc<Shared>,
    region: String,
    name: String,
    generation: u64,
    endpoint: String,
    provisioning: Provisioning,
) {
    let delay = lab.aws.options.provision_delay;
    let cancel = lab.cancel.clone();
    let tracker = lab.tracker.clone();
    tracker.spawn(async move {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let status = match provisioning {
            Provisioning::Normal => {
                let spec = CacheSpec {
                    name: name.clone(),
                    region: region.clone(),
                    role: Role::Dr,
                };
                match lab.add_cache(spec, None, Some(endpoint)).await {
                    Ok(_) => Status::Available,
                    Err(e) => {
                        warn!(cache = %name, %region, error = %e, "provisioning failed: create-failed");
                        Status::CreateFailed
                    }
                }
            }
            Provisioning::Fail | Provisioning::Stuck => Status::CreateFailed,
        };
        // A cache that comes up during its region's outage is as unreachable as the rest.
        if status == Status::Available
            && lab.aws.region_down(&region)
            && let Ok(cache) = lab.cache_in(&name, &region)
        {
            cache.blackhole().await;
        }
        lock(&lab.aws.elasticache).set_status(&region, &name, generation, status);
        info!(cache = %name, %region, status = status.as_str(), "serverless cache provisioned");
    });
}

fn describe(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let max_results = match params.int("MaxResults")? {
        None => DEFAULT_MAX_RESULTS,
        Some(n) if MAX_RESULTS_RANGE.contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(
                "Invalid value for max records. Must be between 20 and 100",
            ));
        }
    };
    let now = Instant::now();
    let visible = |c: &&ServerlessCache| c.visible_at.is_none_or(|at| now >= at);
    let regions = lock(&lab.aws.elasticache);
    let mut caches: Vec<ServerlessCache> = match params.get("ServerlessCacheName") {
        Some(raw) if !raw.is_empty() => {
            let name = raw.to_ascii_lowercase();
            vec![
                regions
                    .get(region, &name)
                    .filter(visible)
                    .cloned()
                    .ok_or_else(|| not_found(&name))?,
            ]
        }
        _ => regions.in_region(region).filter(visible).cloned().collect(),
    };
    drop(regions);
    // The token is the name to resume at: caches are listed in name order, so a page boundary
    // survives creates and deletes in between.
    if let Some(token) = params.get("NextToken").filter(|t| !t.is_empty()) {
        caches.retain(|c| c.name.as_str() >= token);
    }
    let next = caches.get(max_results).map(|c| c.name.clone());
    caches.truncate(max_results);
    Ok(response("DescribeServerlessCaches", request_id, |x| {
        x.element("ServerlessCaches", |x| {
            for cache in &caches {
                x.element("member", |x| cache.write(x));
            }
        })
        .text_opt("NextToken", next);
    }))
}

fn delete(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let name = params.required("ServerlessCacheName")?.to_ascii_lowercase();
    let mut regions = lock(&lab.aws.elasticache);
    let cache = regions
        .caches
        .get_mut(region)
        .and_then(|m| m.get_mut(&name))
        .ok_or_else(|| not_found(&name))?;
    if matches!(cache.status, Status::Creating | Status::Deleting) {
        return Err(ApiError::sender(
            "InvalidServerlessCacheStateFault",
            format!(
                "Serverless cache {name} is {}: it can be deleted only when available or create-failed.",
                cache.status.as_str()
            ),
        ));
    }
    let had_server = cache.status == Status::Available;
    cache.status = Status::Deleting;
    let cache = cache.clone();
    drop(regions);
    info!(cache = %name, %region, "DeleteServerlessCache: deleting");

    let task_lab = lab.clone();
    let delay = lab.aws.options.provision_delay;
    let cancel = lab.cancel.clone();
    let (task_region, generation) = (region.to_string(), cache.generation);
    lab.tracker.spawn(async move {
        let lab = task_lab;
        if had_server
            && lab.cache_in(&name, &task_region).is_ok()
            && let Err(e) = lab.remove_cache_in(&name, &task_region).await
        {
            warn!(cache = %name, error = %e, "stopping a deleted cache failed");
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        lock(&lab.aws.elasticache).remove(&task_region, &name, generation);
        info!(cache = %name, region = %task_region, "serverless cache deleted");
    });
    Ok(response("DeleteServerlessCache", request_id, |x| {
        x.element("ServerlessCache", |x| cache.write(x));
    }))
}

fn list_tags(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let resource = params.required("ResourceName")?;
    let invalid_arn =
        || ApiError::sender("InvalidARN", format!("The ARN {resource} is not valid."));
    // arn:aws:elasticache:REGION:ACCOUNT:serverlesscache:NAME
    let parts: Vec<&str> = resource.splitn(7, ':').collect();
    let [
        "arn",
        "aws",
        "elasticache",
        arn_region,
        _account,
        kind,
        name,
    ] = parts.as_slice()
    else {
        return Err(invalid_arn());
    };
    if *kind != "serverlesscache" {
        return Err(ApiError::sender(
            "InvalidARN",
            format!(
                "The ARN {resource} is not valid here: valkey-dr-lab keeps tags for serverless \
                 caches only."
            ),
        ));
    }
    let regions = lock(&lab.aws.elasticache);
    let cache = regions
        .get(region, name)
        .filter(|_| *arn_region == region)
        .ok_or_else(|| not_found(name))?;
    // Tags are readable only while the cache is available (ekristen/aws-nuke#256 tried each
    // state; crossplane-contrib/provider-upjet-aws#2223 hit it on create-failed).
    if cache.status != Status::Available {
        return Err(ApiError::sender(
            "InvalidServerlessCacheStateFault",
            "Serverless cache is not in an available state to perform the requested action.",
        ));
    }
    let tags = cache.tags.clone();
    drop(regions);
    Ok(response("ListTagsForResource", request_id, |x| {
        x.element("TagList", |x| {
            for (key, value) in &tags {
                x.element("Tag", |x| {
                    x.text("Key", key).text("Value", value);
                });
            }
        });
    }))
}

/// The user group of every region, with the caches of that region that use it.
fn describe_user_groups(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let _ = params.int("MaxRecords")?;
    if let Some(id) = params.get("UserGroupId").filter(|id| !id.is_empty())
        && id != LAB_USER_GROUP_ID
    {
        return Err(ApiError::not_found(
            "UserGroupNotFound",
            format!("User group {id} not found."),
        ));
    }
    let caches: Vec<String> = lock(&lab.aws.elasticache)
        .in_region(region)
        .filter(|c| c.user_group_id.as_deref() == Some(LAB_USER_GROUP_ID))
        .map(|c| c.name.clone())
        .collect();
    Ok(response("DescribeUserGroups", request_id, |x| {
        x.element("UserGroups", |x| {
            x.element("member", |x| {
                x.text("UserGroupId", LAB_USER_GROUP_ID)
                    .text("Status", "active")
                    .text("Engine", "valkey")
                    .element("UserIds", |x| {
                        for user in lab_users(lab) {
                            x.text("member", &user.id);
                        }
                    })
                    .text("MinimumEngineVersion", "7.2")
                    .empty("ReplicationGroups")
                    .element("ServerlessCaches", |x| {
                        for name in &caches {
                            x.text("member", name);
                        }
                    })
                    .text("ARN", user_group_arn(region, LAB_USER_GROUP_ID));
            });
        });
    }))
}

/// One of the lab's ElastiCache users.
struct LabUser {
    /// Its `UserId` and `UserName` (the same, as IAM-enabled users must have them).
    id: String,
    /// `password`, `no-password` or `iam` (the model's `AuthenticationType`).
    authentication: &'static str,
}

/// The users of every region's user group: `default`, and the IAM user the fronts require
/// tokens for when the lab has one.
fn lab_users(lab: &Shared) -> Vec<LabUser> {
    let mut users = vec![LabUser {
        id: "default".to_string(),
        authentication: if lab.password.is_some() {
            "password"
        } else {
            "no-password"
        },
    }];
    if let Some(iam) = &lab.default_auth.iam_user {
        users.push(LabUser {
            id: iam.clone(),
            authentication: "iam",
        });
    }
    users
}

/// The lab's users, each with the lab's access string (which the caches' servers apply).
/// **Departure:** `Filters` and `Engine` are refused rather than evaluated, and there is one
/// page (no `Marker`): the lab has two users at most.
fn describe_users(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    let _ = params.int("MaxRecords")?;
    if params.get("Engine").is_some_and(|e| !e.is_empty()) || params.any_under("Filters") {
        return Err(invalid(
            "the lab does not evaluate Engine or Filters on DescribeUsers; list every user",
        ));
    }
    let wanted = params.get("UserId").filter(|id| !id.is_empty());
    let users: Vec<LabUser> = lab_users(lab)
        .into_iter()
        .filter(|u| wanted.is_none_or(|id| id == u.id))
        .collect();
    if let Some(id) = wanted
        && users.is_empty()
    {
        return Err(ApiError::not_found(
            "UserNotFound",
            format!("User {id} not found."),
        ));
    }
    Ok(response("DescribeUsers", request_id, |x| {
        x.element("Users", |x| {
            for user in &users {
                x.element("member", |x| {
                    x.text("UserId", &user.id)
                        .text("UserName", &user.id)
                        .text("Status", "active")
                        .text("Engine", "valkey")
                        .text("MinimumEngineVersion", "7.2")
                        .text("AccessString", &lab.access_string)
                        .element("UserGroupIds", |x| {
                            x.text("member", LAB_USER_GROUP_ID);
                        })
                        .element("Authentication", |x| {
                            x.text("Type", user.authentication);
                            if user.authentication == "password" {
                                x.text("PasswordCount", "1");
                            }
                        })
                        .text("ARN", user_arn(region, &user.id));
                });
            }
        });
    }))
}

/// The snapshot types AWS lists.
const SNAPSHOT_TYPES: [&str; 2] = ["automated", "manual"];
/// `DescribeServerlessCacheSnapshots`'s largest page (AWS's API reference: "The maximum
/// value is 50").
const MAX_SNAPSHOT_RESULTS: std::ops::RangeInclusive<i64> = 1..=50;

/// The snapshot of every region: a manual snapshot of the primary's configuration, encrypted
/// with the lab key.
fn describe_snapshots(
    lab: &Arc<Shared>,
    region: &str,
    params: &Params,
    request_id: &str,
) -> Result<String, ApiError> {
    if let Some(n) = params.int("MaxResults")?
        && !MAX_SNAPSHOT_RESULTS.contains(&n)
    {
        return Err(invalid(format!(
            "Invalid value for MaxResults {n}: it must be between 1 and 50."
        )));
    }
    let snapshot_type = params.get("SnapshotType").filter(|t| !t.is_empty());
    if let Some(t) = snapshot_type
        && !SNAPSHOT_TYPES.contains(&t)
    {
        return Err(invalid(format!(
            "Invalid SnapshotType {t:?}: valid types are automated and manual."
        )));
    }
    let mut listed = true;
    if let Some(name) = params
        .get("ServerlessCacheSnapshotName")
        .filter(|n| !n.is_empty())
        && name != LAB_SNAPSHOT_NAME
    {
        return Err(ApiError::not_found(
            "ServerlessCacheSnapshotNotFoundFault",
            format!("Serverless cache snapshot {name} not found."),
        ));
    }
    if let Some(cache) = params.get("ServerlessCacheName").filter(|n| !n.is_empty()) {
        let cache = cache.to_ascii_lowercase();
        if lock(&lab.aws.elasticache).get(region, &cache).is_none() {
            return Err(not_found(&cache));
        }
        listed &= cache == PRIMARY_CACHE;
    }
    listed &= snapshot_type.is_none_or(|t| t == "manual");
    // One snapshot: a token can only point past it.
    listed &= params.get("NextToken").is_none_or(str::is_empty);
    Ok(response(
        "DescribeServerlessCacheSnapshots",
        request_id,
        |x| {
            x.element("ServerlessCacheSnapshots", |x| {
                if listed {
                    x.element("ServerlessCacheSnapshot", |x| {
                        x.text("ServerlessCacheSnapshotName", LAB_SNAPSHOT_NAME)
                            .text("ARN", snapshot_arn(region, LAB_SNAPSHOT_NAME))
                            .text("KmsKeyId", lab_kms_key_arn(region))
                            .text("SnapshotType", "manual")
                            .text("Status", "available")
                            .text("CreateTime", timestamp(lab.aws.created))
                            .text("BytesUsedForCache", "0")
                            .element("ServerlessCacheConfiguration", |x| {
                                x.text("ServerlessCacheName", PRIMARY_CACHE)
                                    .text("Engine", "valkey")
                                    .text("MajorEngineVersion", "8");
                            });
                    });
                }
            });
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pairs: &[(&str, &str)]) -> Params {
        Params(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn query_lists_and_tags_follow_their_index() {
        let p = params(&[
            ("SubnetIds.SubnetId.2", "subnet-b"),
            ("SubnetIds.SubnetId.1", "subnet-a"),
            ("SecurityGroupIds.member.1", "sg-1"),
            ("Tags.Tag.2.Key", "failover-id"),
            ("Tags.Tag.2.Value", "f-1"),
            ("Tags.Tag.1.Key", "app"),
            ("Tags.Tag.1.Value", "sessions"),
        ]);
        assert_eq!(p.list("SubnetIds"), vec!["subnet-a", "subnet-b"]);
        assert_eq!(p.list("SecurityGroupIds"), vec!["sg-1"]);
        assert_eq!(
            p.tags().unwrap(),
            vec![
                ("app".to_string(), "sessions".to_string()),
                ("failover-id".to_string(), "f-1".to_string())
            ]
        );
        assert!(params(&[("Tags.Tag.1.Value", "v")]).tags().is_err());
    }

    #[test]
    fn engines_and_versions_are_checked() {
        let e = |name: &str, major: Option<&str>| {
            let mut pairs = vec![("Engine", name)];
            if let Some(m) = major {
                pairs.push(("MajorEngineVersion", m));
            }
            engine(&params(&pairs))
        };
        assert_eq!(
            e("Valkey", None).unwrap(),
            ("valkey".to_string(), "8".to_string())
        );
        assert_eq!(e("redis", Some("7")).unwrap().1, "7");
        assert_eq!(e("mysql", None).unwrap_err().code, "InvalidParameterValue");
        assert_eq!(
            e("valkey", Some("6")).unwrap_err().code,
            "InvalidParameterValue"
        );
        assert_eq!(engine(&params(&[])).unwrap_err().code, "MissingParameter");
    }

    #[test]
    fn names_are_lowercased_then_checked() {
        assert_eq!(cache_name("App-Sessions-DR").unwrap(), "app-sessions-dr");
        for bad in ["1abc", "a--b", "a-", "a_b", &"a".repeat(41)] {
            assert_eq!(
                cache_name(bad).unwrap_err().code,
                "InvalidParameterValue",
                "{bad}"
            );
        }
    }

    #[test]
    fn a_cache_writes_the_sdk_element_names() {
        let mut regions = Regions::default();
        regions.register_running(&CacheInfo {
            name: "app".to_string(),
            region: "us-east-1".to_string(),
            endpoint: "app-abc123.serverless.use1.cache.amazonaws.com".to_string(),
            address: "127.1.2.3:7000".parse().unwrap(),
            role: Role::Primary,
        });
        let mut cache = regions.get("us-east-1", "app").unwrap().clone();
        cache.subnet_ids = vec!["subnet-1".to_string()];
        cache.security_group_ids = vec!["sg-1".to_string()];
        let doc = Xml::new().root("R", NAMESPACE, |x| cache.write(x));
        for part in [
            "<ServerlessCacheName>app</ServerlessCacheName>",
            "<Status>available</Status>",
            "<Engine>valkey</Engine><MajorEngineVersion>8</MajorEngineVersion><FullEngineVersion>8.0</FullEngineVersion>",
            "<SecurityGroupIds><SecurityGroupId>sg-1</SecurityGroupId></SecurityGroupIds>",
            "<Endpoint><Address>app-abc123.serverless.use1.cache.amazonaws.com</Address><Port>7000</Port></Endpoint>",
            "<ReaderEndpoint><Address>app-abc123.serverless.use1.cache.amazonaws.com</Address><Port>6380</Port></ReaderEndpoint>",
            "<ARN>arn:aws:elasticache:us-east-1:123456789012:serverlesscache:app</ARN>",
            "<SubnetIds><SubnetId>subnet-1</SubnetId></SubnetIds>",
        ] {
            assert!(doc.contains(part), "{part} missing from {doc}");
        }
        regions.forget("us-east-1", "app");
        assert!(regions.get("us-east-1", "app").is_none());

        // No endpoints until the cache is up.
        cache.status = Status::Creating;
        let doc = Xml::new().root("R", NAMESPACE, |x| cache.write(x));
        assert!(!doc.contains("Endpoint>"), "{doc}");
    }

    #[test]
    fn usage_limits_and_tags_follow_aws_rules() {
        let limits = |pairs: &[(&str, &str)]| usage_limits(&params(pairs));
        let storage = "CacheUsageLimits.DataStorage.Maximum";
        let unit = "CacheUsageLimits.DataStorage.Unit";
        let ecpu = "CacheUsageLimits.ECPUPerSecond.Maximum";
        assert!(limits(&[(storage, "5000"), (unit, "GB"), (ecpu, "15000000")]).is_ok());
        assert!(limits(&[(storage, "1"), (unit, "GB"), (ecpu, "1000")]).is_ok());
        for bad in [
            vec![(storage, "0"), (unit, "GB")],
            vec![(storage, "5001"), (unit, "GB")],
            vec![(storage, "10"), (unit, "TB")],
            vec![(ecpu, "999")],
            vec![(ecpu, "15000001")],
        ] {
            assert_eq!(
                limits(&bad).unwrap_err().code,
                "InvalidParameterValue",
                "{bad:?}"
            );
        }
        assert_eq!(
            limits(&[(storage, "10")]).unwrap_err().code,
            "InvalidParameterCombination"
        );
        assert_eq!(
            limits(&[
                ("CacheUsageLimits.ECPUPerSecond.Minimum", "5000"),
                (ecpu, "1000")
            ])
            .unwrap_err()
            .code,
            "InvalidParameterCombination"
        );

        let tag = |k: &str, v: &str| vec![(k.to_string(), v.to_string())];
        assert!(check_tags(&tag("Team name_1.a:b/c=d+e-f@g", "Zürich 2")).is_ok());
        for bad in [
            tag(&"k".repeat(129), "v"),
            tag("k", &"v".repeat(257)),
            tag("k#", "v"),
            tag("k", "v!"),
            tag("AWS:owner", "v"),
        ] {
            assert_eq!(check_tags(&bad).unwrap_err().code, "InvalidParameterValue");
        }
        let many: Vec<(String, String)> =
            (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert_eq!(
            check_tags(&many).unwrap_err().code,
            "TagQuotaPerResourceExceeded"
        );
        assert!(check_tags(&many[..50]).is_ok());
    }

    #[test]
    fn generations_keep_old_tasks_off_new_caches() {
        let mut regions = Regions::default();
        let info = CacheInfo {
            name: "c".to_string(),
            region: "us-west-2".to_string(),
            endpoint: "c-aaaaaa.serverless.usw2.cache.amazonaws.com".to_string(),
            address: "127.1.1.1:7000".parse().unwrap(),
            role: Role::Dr,
        };
        regions.register_running(&info);
        let old = regions.get("us-west-2", "c").unwrap().generation;
        regions.register_running(&info);
        regions.set_status("us-west-2", "c", old, Status::CreateFailed);
        regions.remove("us-west-2", "c", old);
        assert_eq!(
            regions.get("us-west-2", "c").unwrap().status,
            Status::Available
        );
    }
}
