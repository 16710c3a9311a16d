//! The two AWS surfaces the executor needs, as small traits, so that its step logic can be
//! tested with fakes and run against the real SDK clients (or the lab) unchanged.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

/// What `CreateServerlessCache` is asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheSpec {
    /// The DR cache name.
    pub name: String,
    /// The DR region.
    pub region: String,
    /// Everything else of the request, as in `plan::failover_plan`'s `input`.
    pub input: serde_json::Value,
    /// Tags, the failover id among them.
    pub tags: BTreeMap<String, String>,
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
    /// `InvalidChangeBatch`: a `DELETE` did not match or a `CREATE` found a record; someone
    /// else changed the zone.
    #[error("change batch rejected: {message}")]
    InvalidChangeBatch {
        /// Route 53's message.
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
