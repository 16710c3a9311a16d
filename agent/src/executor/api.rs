//! The two AWS surfaces the executor needs, as small traits, so that its step logic can be
//! tested with fakes and run against the real SDK clients (or the lab) unchanged.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

/// What `CreateServerlessCache` is asked for, in the DR region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    /// The DR region.
    pub region: String,
    /// The request itself: one typed value that `plan`, the executor and the drill share, so
    /// what a plan shows is what is sent.
    pub input: CreateRequest,
}

impl CacheSpec {
    /// The cache's name.
    pub fn name(&self) -> &str {
        &self.input.serverless_cache_name
    }

    /// The value of tag `key` the request carries.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.input
            .tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// The `CreateServerlessCache` input, with the API's own member names (botocore's model,
/// `CreateServerlessCacheRequest`), so that plans and journals read like the API reference.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateRequest {
    /// Required: 1-40 characters.
    pub serverless_cache_name: String,
    /// Free text, at most 255 characters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Required: `valkey`, `redis` or `memcached`.
    pub engine: String,
    /// The engine's major version, e.g. `8`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_engine_version: Option<String>,
    /// The VPC subnets (in at least two availability zones on AWS).
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    /// The VPC security groups.
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// A customer KMS key; AWS's own key when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
    /// The user group for RBAC or IAM auth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_group_id: Option<String>,
    /// Snapshots to restore the new cache from.
    #[serde(default)]
    pub snapshot_arns_to_restore: Vec<String>,
    /// Days of automatic snapshots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot_retention_limit: Option<i32>,
    /// `HH:MM` UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daily_snapshot_time: Option<String>,
    /// Caps on storage and compute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_usage_limits: Option<CacheUsageLimits>,
    /// Every tag of the new cache, valkey-dr's own (the failover or drill id) among them.
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// `CacheUsageLimits`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheUsageLimits {
    /// `DataStorage`: a maximum in GB.
    #[serde(
        rename = "DataStorage",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub data_storage: Option<Limit>,
    /// `ECPUPerSecond`: a maximum in ECPUs a second.
    #[serde(
        rename = "ECPUPerSecond",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub ecpu_per_second: Option<Limit>,
}

/// One usage limit's maximum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Limit {
    /// The cap.
    pub maximum: i32,
    /// `GB` for `DataStorage`, the only unit the API has; absent for ECPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
}

/// One tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Tag {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
}

/// A serverless cache's lifecycle status, as `DescribeServerlessCaches` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheStatus {
    /// Being built.
    Creating,
    /// Serving.
    Available,
    /// Building failed; it will never serve.
    CreateFailed,
    /// Being deleted.
    Deleting,
    /// Anything else AWS may add (`modifying`, ...).
    Other(String),
}

impl CacheStatus {
    /// The API's own name for it.
    pub fn as_str(&self) -> &str {
        match self {
            CacheStatus::Creating => "creating",
            CacheStatus::Available => "available",
            CacheStatus::CreateFailed => "create-failed",
            CacheStatus::Deleting => "deleting",
            CacheStatus::Other(s) => s,
        }
    }

    /// From the API's string.
    pub fn parse(s: &str) -> CacheStatus {
        match s {
            "creating" => CacheStatus::Creating,
            "available" => CacheStatus::Available,
            "create-failed" => CacheStatus::CreateFailed,
            "deleting" => CacheStatus::Deleting,
            other => CacheStatus::Other(other.to_owned()),
        }
    }
}

/// One serverless cache as described.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheInfo {
    /// Its name.
    pub name: String,
    /// Its ARN (for tags).
    pub arn: String,
    /// Its status.
    pub status: CacheStatus,
    /// `(address, port)` once it has one.
    pub endpoint: Option<(String, u16)>,
}

/// One resource record set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordSet {
    /// Fully qualified, trailing dot.
    pub name: String,
    /// `CNAME`, `TXT`, ...
    pub rtype: String,
    /// Seconds.
    pub ttl: u32,
    /// The values, exactly as Route 53 stores them (TXT values quoted).
    pub values: Vec<String>,
}

/// One change of a `ChangeResourceRecordSets` batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "record", rename_all = "UPPERCASE")]
pub enum Change {
    /// Fails if the record exists.
    Create(RecordSet),
    /// Fails unless name, type, TTL and values match exactly.
    Delete(RecordSet),
}

/// A Route 53 change's propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChangeStatus {
    /// Not yet on every Route 53 server.
    Pending,
    /// Everywhere.
    InSync,
}

/// An AWS call that failed, classified for the executor's retry and stop decisions.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// `ServerlessCacheAlreadyExistsFault`.
    #[error("{name} already exists")]
    AlreadyExists {
        /// The cache.
        name: String,
    },
    /// `InvalidChangeBatch` because the batch's compare failed: a `DELETE` found no record
    /// or other values, or a `CREATE` found one. Someone else changed the zone. Any other
    /// `InvalidChangeBatch` (a malformed batch, a name outside the zone) is
    /// [`ApiError::Permanent`]: reading it as a lost race would give the wrong outcome.
    #[error("change batch rejected: {message}")]
    Conflict {
        /// Route 53's message.
        message: String,
    },
    /// The resource is in a state that refuses this call for now
    /// (`InvalidServerlessCacheStateFault`: tags of a cache still `creating`): asking again
    /// once the state moves on succeeds.
    #[error("{call}: {message} (not yet)")]
    NotReady {
        /// Service and action.
        call: String,
        /// What happened.
        message: String,
    },
    /// Credentials missing or refused, or a permission the agent lacks: a configuration
    /// error, never retried as transient and never read as the agent's isolation.
    #[error("{call}: {message} (credentials or permissions)")]
    Denied {
        /// Service and action.
        call: String,
        /// What happened.
        message: String,
    },
    /// Throttling, 5xx, timeouts, connection errors: worth retrying.
    #[error("{call}: {message} (transient)")]
    Transient {
        /// Service and action.
        call: String,
        /// What happened, with the request id when there was one.
        message: String,
    },
    /// Anything else: retrying the same call will not help.
    #[error("{call}: {message}")]
    Permanent {
        /// Service and action.
        call: String,
        /// What happened, with the request id when there was one.
        message: String,
    },
}

impl ApiError {
    /// Whether retrying the same call may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ApiError::Transient { .. })
    }
}

/// The ElastiCache calls of a failover, in the DR region.
pub trait CacheApi: Send + Sync {
    /// `CreateServerlessCache`.
    fn create(&self, spec: &CacheSpec) -> impl Future<Output = Result<CacheInfo, ApiError>> + Send;
    /// `DescribeServerlessCaches` for one name; `None` when it does not exist.
    fn describe(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<CacheInfo>, ApiError>> + Send;
    /// `ListTagsForResource`.
    fn tags(
        &self,
        arn: &str,
    ) -> impl Future<Output = Result<BTreeMap<String, String>, ApiError>> + Send;
    /// `DeleteServerlessCache`, taking no final snapshot. Idempotent: a cache that does not
    /// exist counts as deleted. A cache still `creating` (or already `deleting`) gives
    /// [`ApiError::Transient`]: asking again later succeeds or finds it gone.
    fn delete(&self, name: &str) -> impl Future<Output = Result<(), ApiError>> + Send;
}

/// The Route 53 calls of a failover.
pub trait DnsApi: Send + Sync {
    /// The record set `name`/`rtype` of the zone, if it exists (`ListResourceRecordSets`).
    fn record(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> impl Future<Output = Result<Option<RecordSet>, ApiError>> + Send;
    /// `ChangeResourceRecordSets`: applied atomically, or not at all. Returns the change id.
    fn change(
        &self,
        zone: &str,
        changes: &[Change],
    ) -> impl Future<Output = Result<String, ApiError>> + Send;
    /// `GetChange`.
    fn change_status(
        &self,
        id: &str,
    ) -> impl Future<Output = Result<ChangeStatus, ApiError>> + Send;
}
