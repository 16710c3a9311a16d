//! [`CacheApi`] and [`DnsApi`] over the AWS SDK clients: what the daemon and `valkey-dr
//! failover` run against AWS (or the lab, through `[aws] endpoint_url`).
//!
//! These types translate and classify; they never decide. The SDK's own retries (standard
//! mode, from the `SdkConfig`) absorb short blips inside one call; the executor retries
//! [`ApiError::Transient`] again, bounded, on top. Every call is bounded by an operation
//! timeout, because a region that is failing tends to hang rather than refuse.
//!
//! Error messages carry the call, the AWS error code and message, and the request id (what AWS
//! support asks for), and never credentials: they only ever come from error metadata and
//! the SDK's error chain, neither of which holds the signing keys.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_credential_types::provider::error::CredentialsError;
use aws_sdk_elasticache::config::http::HttpResponse;
use aws_sdk_elasticache::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_elasticache::operation::RequestId;
use aws_sdk_elasticache::types::{
    CacheUsageLimits as SdkCacheUsageLimits, DataStorage, DataStorageUnit, EcpuPerSecond,
    ServerlessCache, Tag,
};
use aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError;
use aws_sdk_route53::types as r53;

use super::api::{
    ApiError, CacheApi, CacheInfo, CacheSpec, CacheStatus, CacheUsageLimits, Change, ChangeStatus,
    DnsApi, RecordSet,
};

/// How long one attempt of a call may take when the `SdkConfig` sets no bound of its own.
/// `CreateServerlessCache` answers in about a second; twenty is a hung endpoint.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a call may take across the SDK's own retries, when the `SdkConfig` sets no bound.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(60);

/// Route 53 is global within a partition, and the SDK's endpoint rules turn any region of a
/// partition into its endpoint and signing region (us-east-1 in `aws`, cn-northwest-1 in
/// `aws-cn`, us-gov-west-1 in `aws-us-gov`): clients are built with the watch's DR region so
/// that the right partition is used. This is the fallback only when the `SdkConfig` names no
/// region at all.
const ROUTE53_DEFAULT_REGION: &str = "us-east-1";

/// Error codes worth retrying: the SDK's standard retry classifier's throttling and transient
/// codes, plus the server-side codes that come with a 5xx (kept here too for services that
/// send them with another status).
const TRANSIENT_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "ProvisionedThroughputExceededException",
    "TransactionInProgressException",
    "RequestLimitExceeded",
    "BandwidthLimitExceeded",
    "LimitExceededException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
    "RequestTimeout",
    "RequestTimeoutException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "InternalError",
    "InternalFailure",
    "InternalServerError",
    "InternalServiceError",
];

/// The codes of those that say "too many requests": the service answered, and only asks to
/// be asked more slowly.
const THROTTLING_CODES: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestThrottledException",
    "RequestThrottled",
    "TooManyRequestsException",
    "RequestLimitExceeded",
    "SlowDown",
];

/// Whether an answer with `code` is a throttle: proof that the service was reached.
fn throttled(code: Option<&str>) -> bool {
    code.is_some_and(|c| THROTTLING_CODES.contains(&c))
}

/// ElastiCache in one region.
#[derive(Debug, Clone)]
pub struct SdkCache {
    /// Built from the DR region's `SdkConfig`.
    client: aws_sdk_elasticache::Client,
    /// The same region's KMS: a `kms_key_id` given as an alias or a key id becomes the key's
    /// ARN before the create ([`key_arn`](Self::key_arn)).
    kms: aws_sdk_kms::Client,
    /// Named in error messages: "which region refused" is the first question in a DR.
    region: String,
}

impl SdkCache {
    /// A client for the region of `sdk`, with [`ATTEMPT_TIMEOUT`] and [`OPERATION_TIMEOUT`]
    /// where `sdk` sets no timeouts. Retries are `sdk`'s (standard mode by default).
    pub fn new(sdk: &SdkConfig) -> Self {
        let mut config = aws_sdk_elasticache::config::Builder::from(sdk);
        config.set_timeout_config(Some(bounded(sdk)));
        let mut kms = aws_sdk_kms::config::Builder::from(sdk);
        kms.set_timeout_config(Some(bounded(sdk)));
        SdkCache {
            client: aws_sdk_elasticache::Client::from_conf(config.build()),
            kms: aws_sdk_kms::Client::from_conf(kms.build()),
            region: sdk
                .region()
                .map(|r| r.as_ref().to_owned())
                .unwrap_or_default(),
        }
    }

    /// The region the client calls.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The SDK client itself, for read-only calls outside [`CacheApi`] (`preflight`).
    pub fn client(&self) -> &aws_sdk_elasticache::Client {
        &self.client
    }

    /// The ARN of the KMS key `key` names (a key id, an alias, or an ARN of either), from
    /// `DescribeKey` in this region. `CreateServerlessCache` documents `KmsKeyId` as the ARN
    /// of the customer managed key, and AWS services that take a key through a grant refuse
    /// aliases (tests/FIDELITY.md, E12): a key ARN is sent as it is, anything else resolved.
    pub async fn key_arn(&self, key: &str) -> Result<String, ApiError> {
        if is_key_arn(key) {
            return Ok(key.to_owned());
        }
        let call = "kms:DescribeKey";
        let out = self
            .kms
            .describe_key()
            .key_id(key)
            .send()
            .await
            .map_err(|e| classify(call, Some(&self.region), key, &e))?;
        out.key_metadata()
            .and_then(|m| m.arn())
            .filter(|arn| is_key_arn(arn))
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Permanent {
                call: call.into(),
                message: format!("DescribeKey answered no key ARN for {key}"),
            })
    }

    /// The serverless cache named `name` (case-insensitively) as `DescribeServerlessCaches`
    /// lists it, whole; `None` when there is none. [`CacheApi::describe`] keeps only what the
    /// executor needs; `preflight` compares the rest with the DR spec.
    pub async fn find(&self, name: &str) -> Result<Option<ServerlessCache>, ApiError> {
        match self
            .client
            .describe_serverless_caches()
            .serverless_cache_name(name)
            .send()
            .await
        {
            Ok(out) => Ok(out
                .serverless_caches()
                .iter()
                .find(|c| {
                    c.serverless_cache_name()
                        .is_some_and(|n| n.eq_ignore_ascii_case(name))
                })
                .cloned()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_serverless_cache_not_found_fault()) =>
            {
                Ok(None)
            }
            Err(e) => Err(classify(DESCRIBE, Some(&self.region), name, &e)),
        }
    }

    /// One page of `DescribeServerlessCaches` of `page` caches (20-100, as AWS accepts):
    /// the witness's proof that this region's API answers the agent, and with which error.
    ///
    /// A throttled answer counts as an answer: the agent reached the region's API, which is
    /// all the witness asks. In a regional event every customer's DR automation calls the DR
    /// region at once; a witness that read its throttling as the agent's own isolation would
    /// hold back the very failover the agent exists for.
    pub async fn answers(&self, page: i32) -> Result<(), ApiError> {
        match self
            .client
            .describe_serverless_caches()
            .max_results(page)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if throttled(e.as_service_error().and_then(|s| s.code())) => Ok(()),
            Err(e) => Err(classify(DESCRIBE, Some(&self.region), "", &e)),
        }
    }
}

/// Route 53.
#[derive(Debug, Clone)]
pub struct SdkDns {
    /// Route 53 is global: the endpoint rules send every region to its one control plane.
    client: aws_sdk_route53::Client,
}

impl SdkDns {
    /// A client from `sdk` (any region: Route 53 is a global service; us-east-1 when `sdk`
    /// names none), with the same timeout defaults as [`SdkCache::new`].
    pub fn new(sdk: &SdkConfig) -> Self {
        let mut config = aws_sdk_route53::config::Builder::from(sdk);
        config.set_timeout_config(Some(bounded(sdk)));
        if sdk.region().is_none() {
            config.set_region(Some(aws_config::Region::from_static(
                ROUTE53_DEFAULT_REGION,
            )));
        }
        SdkDns {
            client: aws_sdk_route53::Client::from_conf(config.build()),
        }
    }

    /// The SDK client itself, for read-only calls outside [`DnsApi`] (`preflight`).
    pub fn client(&self) -> &aws_sdk_route53::Client {
        &self.client
    }
}

/// `set`, as Route 53 listed it, when it is the set `name` `rtype` of `zone`; `None` when it
/// is another set.
pub(crate) fn record_set(
    zone: &str,
    name: &str,
    rtype: &str,
    set: &r53::ResourceRecordSet,
) -> Result<Option<RecordSet>, ApiError> {
    let listed = route53_name(set.name());
    if !(valkey_dr_probes::same_name(&listed, name)
        && set.r#type().as_str().eq_ignore_ascii_case(rtype))
    {
        return Ok(None);
    }
    // The compare-and-swap deletes exactly what it read; an alias or a routing-policy set
    // needs fields a `RecordSet` does not carry, so it is refused rather than half-read.
    if set.alias_target().is_some() || set.set_identifier().is_some() {
        return Err(ApiError::Permanent {
            call: LIST_RECORDS.into(),
            message: format!(
                "{name} {rtype} in {zone} is an alias or routing-policy record set; \
                 valkey-dr manages a simple record only"
            ),
        });
    }
    Ok(Some(RecordSet {
        name: listed,
        rtype: set.r#type().as_str().to_owned(),
        ttl: set
            .ttl()
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or_default(),
        values: set
            .resource_records()
            .iter()
            .map(|r| r.value().to_owned())
            .collect(),
    }))
}

/// Whether `key` is a KMS key's ARN (`arn:PARTITION:kms:REGION:ACCOUNT:key/ID`), not an
/// alias's or a bare id.
pub(crate) fn is_key_arn(key: &str) -> bool {
    let parts: Vec<&str> = key.splitn(6, ':').collect();
    matches!(parts.as_slice(), ["arn", _, "kms", region, account, resource]
        if !region.is_empty() && !account.is_empty()
            && resource.strip_prefix("key/").is_some_and(|id| !id.is_empty()))
}

/// `sdk`'s timeouts, with ours filling whatever it leaves unset.
pub(crate) fn bounded(sdk: &SdkConfig) -> TimeoutConfig {
    let ours = TimeoutConfig::builder()
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build();
    match sdk.timeout_config() {
        Some(theirs) => {
            let mut timeouts = theirs.clone();
            timeouts.take_defaults_from(&ours);
            timeouts
        }
        None => ours,
    }
}

const CREATE: &str = "elasticache:CreateServerlessCache";
const DESCRIBE: &str = "elasticache:DescribeServerlessCaches";
const LIST_TAGS: &str = "elasticache:ListTagsForResource";
const DELETE: &str = "elasticache:DeleteServerlessCache";
const LIST_RECORDS: &str = "route53:ListResourceRecordSets";
const CHANGE: &str = "route53:ChangeResourceRecordSets";
const GET_CHANGE: &str = "route53:GetChange";

impl CacheApi for SdkCache {
    async fn create(&self, spec: &CacheSpec) -> Result<CacheInfo, ApiError> {
        // A client wired to the wrong region would build the DR cache in the region that is
        // failing, or in one nobody planned for.
        if !spec.region.is_empty() && !self.region.is_empty() && spec.region != self.region {
            return Err(ApiError::Permanent {
                call: CREATE.into(),
                message: format!(
                    "{} is planned in {}, but this client calls {}",
                    spec.name(),
                    spec.region,
                    self.region
                ),
            });
        }
        let input = &spec.input;
        let kms_key_id = match &input.kms_key_id {
            Some(key) => Some(self.key_arn(key).await?),
            None => None,
        };
        let out = self
            .client
            .create_serverless_cache()
            .serverless_cache_name(&input.serverless_cache_name)
            .set_description(input.description.clone())
            .engine(&input.engine)
            .set_major_engine_version(input.major_engine_version.clone())
            .set_subnet_ids(non_empty(&input.subnet_ids))
            .set_security_group_ids(non_empty(&input.security_group_ids))
            .set_kms_key_id(kms_key_id)
            .set_user_group_id(input.user_group_id.clone())
            .set_snapshot_arns_to_restore(non_empty(&input.snapshot_arns_to_restore))
            .set_snapshot_retention_limit(input.snapshot_retention_limit)
            .set_daily_snapshot_time(input.daily_snapshot_time.clone())
            .set_cache_usage_limits(input.cache_usage_limits.as_ref().and_then(sdk_usage_limits))
            .set_tags(Some(
                input
                    .tags
                    .iter()
                    .map(|t| Tag::builder().key(&t.key).value(&t.value).build())
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| classify(CREATE, Some(&self.region), spec.name(), &e))?;
        let cache = out.serverless_cache.ok_or_else(|| ApiError::Permanent {
            call: CREATE.into(),
            message: format!("no ServerlessCache in the answer for {}", spec.name()),
        })?;
        Ok(cache_info(&cache, spec.name()))
    }

    async fn describe(&self, name: &str) -> Result<Option<CacheInfo>, ApiError> {
        Ok(self.find(name).await?.map(|c| cache_info(&c, name)))
    }

    async fn tags(&self, arn: &str) -> Result<BTreeMap<String, String>, ApiError> {
        let out = self
            .client
            .list_tags_for_resource()
            .resource_name(arn)
            .send()
            .await
            .map_err(|e| classify(LIST_TAGS, Some(&self.region), arn, &e))?;
        Ok(out
            .tag_list()
            .iter()
            .filter_map(|t| {
                Some((
                    t.key()?.to_owned(),
                    t.value().unwrap_or_default().to_owned(),
                ))
            })
            .collect())
    }

    async fn delete(&self, name: &str) -> Result<(), ApiError> {
        match self
            .client
            .delete_serverless_cache()
            .serverless_cache_name(name)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_serverless_cache_not_found_fault()) =>
            {
                Ok(())
            }
            Err(e) => Err(classify(DELETE, Some(&self.region), name, &e)),
        }
    }
}

fn cache_info(cache: &ServerlessCache, name: &str) -> CacheInfo {
    CacheInfo {
        name: cache.serverless_cache_name().unwrap_or(name).to_owned(),
        arn: cache.arn().unwrap_or_default().to_owned(),
        status: CacheStatus::parse(cache.status().unwrap_or_default()),
        endpoint: cache.endpoint().and_then(|e| {
            let address = e.address().filter(|a| !a.is_empty())?;
            let port = u16::try_from(e.port()?).ok()?;
            Some((address.to_owned(), port))
        }),
    }
}

/// The SDK's usage limits for ours: `DataStorage` is always in GB, the only unit the API has.
fn sdk_usage_limits(limits: &CacheUsageLimits) -> Option<SdkCacheUsageLimits> {
    if limits.data_storage.is_none() && limits.ecpu_per_second.is_none() {
        return None;
    }
    Some(
        SdkCacheUsageLimits::builder()
            .set_data_storage(limits.data_storage.as_ref().map(|l| {
                DataStorage::builder()
                    .maximum(l.maximum)
                    .unit(DataStorageUnit::Gb)
                    .build()
            }))
            .set_ecpu_per_second(
                limits
                    .ecpu_per_second
                    .as_ref()
                    .map(|l| EcpuPerSecond::builder().maximum(l.maximum).build()),
            )
            .build(),
    )
}

/// `None` for an empty list: the API reads an empty list and an absent one alike, and the
/// request stays as small as the plan shows it.
fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

impl DnsApi for SdkDns {
    async fn record(
        &self,
        zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Option<RecordSet>, ApiError> {
        // Listing starts at (name, type) in Route 53's order; when that set does not exist the
        // first set returned is the next one, which is not ours.
        let out = self
            .client
            .list_resource_record_sets()
            .hosted_zone_id(zone)
            .start_record_name(name)
            .start_record_type(r53::RrType::from(rtype))
            .max_items(1)
            .send()
            .await
            .map_err(|e| classify(LIST_RECORDS, None, zone, &e))?;
        Ok(out
            .resource_record_sets()
            .first()
            .map(|set| record_set(zone, name, rtype, set))
            .transpose()?
            .flatten())
    }

    async fn change(&self, zone: &str, changes: &[Change]) -> Result<String, ApiError> {
        let batch = change_batch(changes).map_err(|e| ApiError::Permanent {
            call: CHANGE.into(),
            message: e.to_string(),
        })?;
        let out = self
            .client
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch)
            .send()
            .await
            .map_err(|e| {
                let mut failed = Failed::of(&e);
                // Route 53 may give the reasons in `Messages` rather than `Message`.
                if let Some(ChangeResourceRecordSetsError::InvalidChangeBatch(b)) =
                    e.as_service_error()
                    && b.message().is_none()
                    && !b.messages().is_empty()
                {
                    failed.reason = format!("InvalidChangeBatch: {}", b.messages().join(", "));
                }
                failed.classify(CHANGE, None, zone)
            })?;
        let info = out.change_info().ok_or_else(|| ApiError::Permanent {
            call: CHANGE.into(),
            message: format!("no ChangeInfo in the answer for {zone}"),
        })?;
        Ok(info.id().to_owned())
    }

    async fn change_status(&self, id: &str) -> Result<ChangeStatus, ApiError> {
        let out = self
            .client
            .get_change()
            .id(id)
            .send()
            .await
            .map_err(|e| classify(GET_CHANGE, None, id, &e))?;
        let info = out.change_info().ok_or_else(|| ApiError::Permanent {
            call: GET_CHANGE.into(),
            message: format!("no ChangeInfo in the answer for {id}"),
        })?;
        Ok(match info.status() {
            r53::ChangeStatus::Insync => ChangeStatus::InSync,
            r53::ChangeStatus::Pending => ChangeStatus::Pending,
            // A status this SDK does not know is not INSYNC: keep waiting, bounded by the
            // executor's insync_timeout.
            other => {
                tracing::warn!(change = %id, status = other.as_str(), "unknown change status");
                ChangeStatus::Pending
            }
        })
    }
}

/// A name as Route 53 lists it, with its octal escapes (`\052` for `*`, and every other
/// character outside `a-z 0-9 - _`; tests/FIDELITY.md, R4) turned back into characters, so
/// that it compares with the configured name and goes back unchanged in an exact `DELETE`.
pub(crate) fn route53_name(listed: &str) -> String {
    let bytes = listed.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| u8::from_str_radix(std::str::from_utf8(d).ok()?, 8).ok());
        match octal {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| listed.to_owned())
}

fn change_batch(
    changes: &[Change],
) -> Result<r53::ChangeBatch, aws_sdk_route53::error::BuildError> {
    let changes = changes
        .iter()
        .map(|c| {
            let (action, set) = match c {
                Change::Create(set) => (r53::ChangeAction::Create, set),
                Change::Delete(set) => (r53::ChangeAction::Delete, set),
            };
            let records = set
                .values
                .iter()
                .map(|v| r53::ResourceRecord::builder().value(v).build())
                .collect::<Result<Vec<_>, _>>()?;
            let set = r53::ResourceRecordSet::builder()
                .name(&set.name)
                .r#type(r53::RrType::from(set.rtype.as_str()))
                .ttl(i64::from(set.ttl))
                .set_resource_records(Some(records))
                .build()?;
            r53::Change::builder()
                .action(action)
                .resource_record_set(set)
                .build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    r53::ChangeBatch::builder()
        .set_changes(Some(changes))
        .comment("valkey-dr failover")
        .build()
}

/// How a call failed, in plain terms, for [`classify_failure`].
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// The service answered with an error.
    Service {
        /// The AWS error code (`Throttling`, `InvalidChangeBatch`, ...).
        code: Option<String>,
        /// HTTP status.
        status: Option<u16>,
    },
    /// No (usable) answer: a timeout, a connection that failed, or a response that could not
    /// be read. The request may or may not have reached AWS.
    Unanswered,
    /// The request could not be built or sent for a reason of our own.
    Unsendable,
    /// No credentials could be loaded, so nothing was sent: a configuration error.
    NoCredentials,
}

/// A failed call, read out of its SDK error.
struct Failed {
    /// What kind of failure, for [`classify_failure`].
    failure: Failure,
    /// `Code: message`, or the SDK's error chain when there was no answer.
    reason: String,
    /// What AWS support asks for.
    request_id: Option<String>,
}

impl Failed {
    fn of<E>(err: &SdkError<E, HttpResponse>) -> Failed
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let request_id = err
            .as_service_error()
            .and_then(|e| e.meta().request_id())
            .or_else(|| err.request_id())
            .map(str::to_owned);
        // The error and its sources in words: DisplayErrorContext appends the whole raw
        // response in Debug form, which buries the cause in a screen of noise.
        let chain = || {
            let mut out = err.to_string();
            let mut source = std::error::Error::source(err);
            while let Some(s) = source {
                let text = s.to_string();
                if !out.contains(&text) {
                    out.push_str(": ");
                    out.push_str(&text);
                }
                source = s.source();
            }
            out
        };
        let (failure, reason) = match err {
            SdkError::ServiceError(s) => {
                let code = s.err().code().map(str::to_owned);
                let http = s.raw().status().as_u16();
                let reason = match (&code, s.err().message()) {
                    (Some(code), Some(message)) => format!("{code}: {message}"),
                    (Some(code), None) => code.clone(),
                    (None, Some(message)) => message.to_owned(),
                    // An answer the SDK could not read as an AWS error: its status and the
                    // parser's own words, never the raw response.
                    (None, None) => format!("HTTP {http}: {}", causes(s.err())),
                };
                (
                    Failure::Service {
                        code,
                        status: Some(http),
                    },
                    reason,
                )
            }
            SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
                (Failure::Unanswered, chain())
            }
            _ if lacks_credentials(err) => {
                let chain = chain();
                note_credentials_once(&chain);
                (Failure::NoCredentials, chain)
            }
            SdkError::DispatchFailure(d) if d.is_user() => (Failure::Unsendable, chain()),
            SdkError::DispatchFailure(_) => (Failure::Unanswered, chain()),
            _ => (Failure::Unsendable, chain()),
        };
        Failed {
            failure,
            // AWS's message (or an endpoint's answer) is outside text: it reaches logs and
            // events, escaped to one line like every other.
            reason: crate::text::outside(reason),
            request_id,
        }
    }

    /// The [`ApiError`] for `call`: `subject` is what the call was about (the cache name for
    /// `AlreadyExists`; the zone, ARN or change id otherwise), `region` is named in the message.
    fn classify(self, call: &str, region: Option<&str>, subject: &str) -> ApiError {
        let mut context = Vec::new();
        if let Some(region) = region.filter(|r| !r.is_empty()) {
            context.push(region.to_owned());
        }
        if let Some(id) = &self.request_id {
            context.push(format!("request id {id}"));
        }
        let message = if context.is_empty() {
            self.reason
        } else {
            format!("{} ({})", self.reason, context.join(", "))
        };
        classify_failure(call, subject, &self.failure, message)
    }
}

/// An error and its sources as one line of their `Display` texts. Error metadata without a
/// code or message displays as a struct (`Error { aws_request_id: .. }`); it says nothing a
/// person can use and is left out.
fn causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.starts_with("Error {") && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Says once per process, in a sentence, why no credentials could be loaded and where the
/// agent looks for them: the SDK's own chain would say it per provider and per call.
fn note_credentials_once(chain: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let cause = chain
            .split_once("dispatch failure: ")
            .map_or(chain, |(_, rest)| rest)
            .trim_start_matches("other: ");
        tracing::warn!(
            "no AWS credentials could be loaded ({cause}); the agent takes them from [aws] credentials_file when set, \
             else from the default chain: AWS_* variables, AWS_PROFILE or [aws] profile, web identity, then a container or instance role"
        );
    });
}

/// Whether the call failed because no credentials could be loaded (no chain configured, an
/// unknown profile, an expired SSO session): the SDK reports that as a dispatch failure, which
/// would otherwise read as "no answer" and be retried for ever.
fn lacks_credentials(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut source = Some(err);
    while let Some(e) = source {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Error codes that mean the credentials are wrong or lack a permission: configuration errors,
/// never transient (retrying cannot fix them) and never the agent's isolation.
const DENIED_CODES: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "UnrecognizedClient",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "ExpiredTokenException",
    "AuthFailure",
    "OptInRequired",
];

/// Route 53's `InvalidChangeBatch` messages for a batch whose compare failed (the record is
/// not what the batch expected), as AWS words them (tests/FIDELITY.md): "Tried to delete
/// resource record set [...] but it was not found", "... but the values provided do not match
/// the current values", "Tried to create resource record set [...] but it already exists".
/// Every other `InvalidChangeBatch` is a batch AWS refuses whatever the record holds.
fn is_conflict(message: &str) -> bool {
    [
        "but it was not found",
        "do not match the current values",
        "but it already exists",
    ]
    .iter()
    .any(|m| message.contains(m))
}

/// Maps an SDK error to an [`ApiError`] (see [`Failed::classify`]).
pub(crate) fn classify<E>(
    call: &str,
    region: Option<&str>,
    subject: &str,
    err: &SdkError<E, HttpResponse>,
) -> ApiError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    Failed::of(err).classify(call, region, subject)
}

/// The classification itself, on plain data so every branch has a unit test.
fn classify_failure(call: &str, subject: &str, failure: &Failure, message: String) -> ApiError {
    let transient = || ApiError::Transient {
        call: call.to_owned(),
        message: message.clone(),
    };
    match failure {
        Failure::Service { code, status } => match code.as_deref() {
            Some("ServerlessCacheAlreadyExistsFault") => ApiError::AlreadyExists {
                name: subject.to_owned(),
            },
            Some("InvalidChangeBatch") if is_conflict(&message) => ApiError::Conflict {
                message: message.clone(),
            },
            Some(code) if DENIED_CODES.contains(&code) => ApiError::Denied {
                call: call.to_owned(),
                message,
            },
            // A cache still `creating` cannot be deleted yet, and one already `deleting` is on
            // its way out: both states change on their own, so asking again later may succeed
            // (or find it gone), which is what `Transient` tells the caller.
            Some("InvalidServerlessCacheStateFault") if call == DELETE => transient(),
            // Tags of a cache still `creating` (or `deleting`) cannot be read yet.
            Some("InvalidServerlessCacheStateFault") => ApiError::NotReady {
                call: call.to_owned(),
                message,
            },
            Some(code) if TRANSIENT_CODES.contains(&code) => transient(),
            _ if status.is_some_and(|s| s >= 500 || s == 429) => transient(),
            _ => ApiError::Permanent {
                call: call.to_owned(),
                message,
            },
        },
        Failure::Unanswered => transient(),
        Failure::NoCredentials => ApiError::Denied {
            call: call.to_owned(),
            message,
        },
        Failure::Unsendable => ApiError::Permanent {
            call: call.to_owned(),
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::executor::api::{CreateRequest, Limit};

    fn service(code: &str, status: u16) -> Failure {
        Failure::Service {
            code: Some(code.to_owned()),
            status: Some(status),
        }
    }

    fn classified(failure: Failure) -> ApiError {
        classify_failure(CREATE, "app-sessions-dr", &failure, "m".into())
    }

    #[test]
    fn already_exists_names_the_cache() {
        assert_eq!(
            classified(service("ServerlessCacheAlreadyExistsFault", 400)),
            ApiError::AlreadyExists {
                name: "app-sessions-dr".into()
            }
        );
    }

    #[test]
    fn a_conflict_keeps_the_message() {
        let message = "InvalidChangeBatch: [Tried to create resource record set [name='a.', type='TXT'] but it already exists]";
        assert_eq!(
            classify_failure(
                CHANGE,
                "Z1",
                &service("InvalidChangeBatch", 400),
                message.into()
            ),
            ApiError::Conflict {
                message: message.into()
            }
        );
    }

    #[test]
    fn throttling_and_server_errors_are_transient() {
        for code in [
            "Throttling",
            "ThrottlingException",
            "PriorRequestNotComplete",
            "RequestLimitExceeded",
            "ServiceUnavailable",
            "InternalError",
            "InternalFailure",
        ] {
            assert!(classified(service(code, 400)).is_transient(), "{code}");
        }
        assert!(classified(service("SomethingNew", 502)).is_transient());
        assert!(classified(service("SomethingNew", 429)).is_transient());
        assert!(
            classified(Failure::Service {
                code: None,
                status: Some(503)
            })
            .is_transient()
        );
        assert!(classified(Failure::Unanswered).is_transient());
    }

    #[test]
    fn a_throttle_is_an_answer_and_an_outage_is_not() {
        for code in ["Throttling", "ThrottlingException", "RequestLimitExceeded"] {
            assert!(throttled(Some(code)), "{code}");
            assert!(classified(service(code, 400)).is_transient(), "{code}");
        }
        for code in ["ServiceUnavailable", "InternalError", "AccessDenied"] {
            assert!(!throttled(Some(code)), "{code}");
        }
        assert!(!throttled(None));
        assert!(
            THROTTLING_CODES.iter().all(|c| TRANSIENT_CODES.contains(c)),
            "every throttle is retried too"
        );
    }

    #[test]
    fn a_cache_not_yet_deletable_is_transient_for_delete_only() {
        let state = service("InvalidServerlessCacheStateFault", 400);
        assert!(classify_failure(DELETE, "c", &state, "m".into()).is_transient());
        assert!(!classified(state).is_transient());
    }

    #[test]
    fn everything_else_is_permanent() {
        for failure in [
            service("InvalidParameterValue", 400),
            service("NoSuchHostedZone", 404),
            service("InvalidChangeBatch", 400),
            Failure::Service {
                code: None,
                status: None,
            },
            Failure::Unsendable,
        ] {
            assert_eq!(
                classified(failure),
                ApiError::Permanent {
                    call: CREATE.into(),
                    message: "m".into()
                }
            );
        }
    }

    fn config(timeouts: Option<TimeoutConfig>) -> SdkConfig {
        let mut b = SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::from_static("eu-west-1"));
        b.set_timeout_config(timeouts);
        b.build()
    }

    #[test]
    fn our_timeouts_fill_only_what_the_config_leaves_unset() {
        let unset = bounded(&config(None));
        assert_eq!(unset.operation_timeout(), Some(OPERATION_TIMEOUT));
        assert_eq!(unset.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
        let five = Duration::from_secs(5);
        let theirs = bounded(&config(Some(
            TimeoutConfig::builder()
                .operation_timeout(five)
                .connect_timeout(five)
                .build(),
        )));
        assert_eq!(theirs.operation_timeout(), Some(five));
        assert_eq!(theirs.connect_timeout(), Some(five));
        assert_eq!(theirs.operation_attempt_timeout(), Some(ATTEMPT_TIMEOUT));
    }

    #[tokio::test]
    async fn a_spec_for_another_region_is_refused_before_any_call() {
        let cache = SdkCache::new(&config(None));
        assert_eq!(cache.region(), "eu-west-1");
        let err = cache
            .create(&spec(CreateRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            ApiError::Permanent {
                call: CREATE.into(),
                message: "app-sessions-dr is planned in us-west-2, but this client calls eu-west-1"
                    .into()
            }
        );
    }

    fn spec(input: CreateRequest) -> CacheSpec {
        CacheSpec {
            region: "us-west-2".into(),
            input: CreateRequest {
                serverless_cache_name: "app-sessions-dr".into(),
                ..input
            },
        }
    }

    #[test]
    fn only_a_key_arn_is_sent_as_it_is() {
        assert!(is_key_arn(
            "arn:aws:kms:us-west-2:123456789012:key/6f1e2d3c"
        ));
        assert!(is_key_arn("arn:aws-cn:kms:cn-north-1:123456789012:key/k"));
        for other in [
            "alias/sessions",
            "arn:aws:kms:us-west-2:123456789012:alias/sessions",
            "6f1e2d3c-4b5a-4978-8a6b-5c4d3e2f1a0b",
            "arn:aws:kms:us-west-2:123456789012:key/",
            "arn:aws:kms::123456789012:key/k",
        ] {
            assert!(!is_key_arn(other), "{other}");
        }
    }

    /// Journals written before the request was typed kept it as JSON with the API's member
    /// names: they still read, and the typed request writes the same names back.
    #[test]
    fn the_request_reads_and_writes_the_api_member_names() {
        let old = json!({
            "ServerlessCacheName": "app-sessions-dr",
            "Engine": "valkey",
            "MajorEngineVersion": "8",
            "SubnetIds": ["subnet-1", "subnet-2"],
            "SecurityGroupIds": ["sg-1"],
            "SnapshotArnsToRestore": [],
            "Tags": [{"Key": "app", "Value": "sessions"}, {"Key": "valkey-dr:failover-id", "Value": "fo-1"}],
            "KmsKeyId": "kms-1",
            "UserGroupId": "ug-1",
            "SnapshotRetentionLimit": 7,
            "DailySnapshotTime": "04:00",
            "CacheUsageLimits": {"DataStorage": {"Maximum": 10, "Unit": "GB"}, "ECPUPerSecond": {"Maximum": 5000}},
        });
        let request: CreateRequest = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(request.subnet_ids, ["subnet-1", "subnet-2"]);
        assert_eq!(request.snapshot_retention_limit, Some(7));
        assert_eq!(
            request.cache_usage_limits.as_ref().unwrap().ecpu_per_second,
            Some(Limit {
                maximum: 5000,
                unit: None
            })
        );
        assert_eq!(spec(request.clone()).tag(FAILOVER), Some("fo-1"));
        assert_eq!(serde_json::to_value(&request).unwrap(), old);
    }

    const FAILOVER: &str = "valkey-dr:failover-id";

    #[test]
    fn usage_limits_become_the_sdks_with_gb() {
        let both = sdk_usage_limits(&CacheUsageLimits {
            data_storage: Some(Limit {
                maximum: 10,
                unit: Some("GB".into()),
            }),
            ecpu_per_second: Some(Limit {
                maximum: 5000,
                unit: None,
            }),
        })
        .unwrap();
        assert_eq!(both.data_storage().unwrap().maximum(), Some(10));
        assert_eq!(
            both.data_storage().unwrap().unit(),
            Some(&DataStorageUnit::Gb)
        );
        assert_eq!(both.ecpu_per_second().unwrap().maximum(), Some(5000));
        let none = CacheUsageLimits {
            data_storage: None,
            ecpu_per_second: None,
        };
        assert_eq!(sdk_usage_limits(&none), None);
    }

    /// Issue 8, defect 5: only a failed compare is a conflict; any other InvalidChangeBatch
    /// (a malformed batch, a name outside the zone) is permanent, not "changed by someone".
    #[test]
    fn only_a_failed_compare_is_a_conflict() {
        for (message, conflict) in [
            (
                "InvalidChangeBatch: [Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but it was not found]",
                true,
            ),
            (
                "InvalidChangeBatch: [Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but the values provided do not match the current values]",
                true,
            ),
            (
                "InvalidChangeBatch: [Tried to create resource record set [name='_valkey-dr-lock.valkey.lab.internal.', type='TXT'] but it already exists]",
                true,
            ),
            (
                "InvalidChangeBatch: [RRSet with DNS name valkey.other.internal. is not permitted in zone lab.internal.]",
                false,
            ),
            (
                "InvalidChangeBatch: [RRSet of type CNAME with DNS name valkey.lab.internal. contains more than one value]",
                false,
            ),
        ] {
            let classified = classify_failure(
                CHANGE,
                "Z1",
                &service("InvalidChangeBatch", 400),
                message.into(),
            );
            if conflict {
                assert!(matches!(classified, ApiError::Conflict { .. }), "{message}");
            } else {
                assert!(
                    matches!(classified, ApiError::Permanent { .. }),
                    "{message}"
                );
            }
        }
    }

    #[test]
    fn credential_and_permission_errors_are_denied_never_transient() {
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "ExpiredToken",
            "InvalidClientTokenId",
            "SignatureDoesNotMatch",
        ] {
            let e = classified(service(code, 403));
            assert!(matches!(e, ApiError::Denied { .. }), "{code}: {e:?}");
            assert!(!e.is_transient());
        }
        let e = classified(Failure::NoCredentials);
        assert!(matches!(e, ApiError::Denied { .. }) && !e.is_transient());
    }

    /// Issue 8, defect 3: tags of a cache still `creating` are "not yet", not permanent.
    #[test]
    fn tags_of_a_cache_not_settled_are_not_ready() {
        let e = classify_failure(
            LIST_TAGS,
            "arn",
            &service("InvalidServerlessCacheStateFault", 400),
            "m".into(),
        );
        assert!(matches!(e, ApiError::NotReady { .. }), "{e:?}");
    }

    /// A Route 53 client keeps the region it is given (`aws::route53_region`: the watch's DR
    /// region), whose partition the SDK's endpoint rules then follow.
    #[test]
    fn route53_clients_keep_the_region_they_are_given() {
        for region in ["us-west-2", "cn-northwest-1", "us-gov-east-1"] {
            let dns = SdkDns::new(&config_in(region));
            assert_eq!(
                dns.client.config().region().map(|r| r.as_ref()),
                Some(region)
            );
        }
    }

    fn config_in(region: &'static str) -> SdkConfig {
        SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::from_static(region))
            .build()
    }

    #[test]
    fn listed_names_lose_their_octal_escapes() {
        assert_eq!(route53_name("\\052.lab.internal."), "*.lab.internal.");
        assert_eq!(
            route53_name("_valkey-dr-lock.valkey.lab.internal."),
            "_valkey-dr-lock.valkey.lab.internal."
        );
        assert_eq!(route53_name("a\\100b."), "a@b.");
        assert_eq!(route53_name("trailing\\05"), "trailing\\05");
    }

    #[test]
    fn a_change_batch_carries_every_field() {
        let set = RecordSet {
            name: "valkey.lab.internal.".into(),
            rtype: "CNAME".into(),
            ttl: 30,
            values: vec!["a.example.".into()],
        };
        let batch = change_batch(&[Change::Delete(set.clone()), Change::Create(set)]).unwrap();
        let changes = batch.changes();
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0].action(), &r53::ChangeAction::Delete);
        assert_eq!(changes[1].action(), &r53::ChangeAction::Create);
        let rrs = changes[1].resource_record_set().unwrap();
        assert_eq!(rrs.name(), "valkey.lab.internal.");
        assert_eq!(rrs.r#type(), &r53::RrType::Cname);
        assert_eq!(rrs.ttl(), Some(30));
        assert_eq!(rrs.resource_records()[0].value(), "a.example.");
    }
}
