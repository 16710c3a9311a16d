//! The AWS control plane the agent calls, emulated on the lab's loopback control server, for
//! the real AWS SDK clients pointed at it with `endpoint_url = http://127.0.0.1:PORT` (one URL
//! for every service) and any static credentials.
//!
//! # Layout
//!
//! - `POST /` is shared by the services that use it on AWS, told apart by the SigV4
//!   credential scope's service name, as AWS's per-service endpoints would be:
//!   - `elasticache`: the Query API (`Action=…&Version=2015-02-02`): `CreateServerlessCache`,
//!     `DescribeServerlessCaches`, `DeleteServerlessCache`, `ListTagsForResource`,
//!     `DescribeUserGroups`, `DescribeUsers` and `DescribeServerlessCacheSnapshots`, with
//!     separate state per region. An available cache is a real valkey-server behind its TLS
//!     front, started through the lab's own `add_cache`, applying the lab users' access
//!     string.
//!   - `sts`: `GetCallerIdentity`. `ec2`: `DescribeSubnets`, `DescribeSecurityGroups`.
//!     `kms` (JSON 1.1): `DescribeKey`. `iam`: `SimulatePrincipalPolicy`, `GetRole`. Each
//!     over a fixed inventory that every region has (`crate::config`'s `LAB_*` constants).
//! - `route53`: the REST-XML API under `/2013-04-01/`: `ChangeResourceRecordSets`,
//!   `ListResourceRecordSets`, `GetChange` and `GetHostedZone`, over the lab's one private
//!   hosted zone, whose record sets (failover pairs included) are the DNS server's own data.
//! - `health_checks`: Route 53's health checks under `/2013-04-01/healthcheck`
//!   (`CLOUDWATCH_METRIC` and `CALCULATED`), whose status the DNS server reads to answer a
//!   failover pair: the data plane, which keeps following the alarms while the API is down.
//! - `cloudwatch`: `POST /service/GraniteServiceVersion20100801/operation/{Op}`, the SDK's
//!   Smithy RPC v2 CBOR (`cbor`): `PutMetricData`, `PutMetricAlarm`, `DescribeAlarms`,
//!   `DeleteAlarms`, per region, each alarm evaluated by period
//!   ([`AwsOptions::alarm_period`] a 60 s period).
//! - `query`: the form parameters and answer document the Query APIs share.
//! - `sigv4`: the region and service from the `Authorization` header's credential scope.
//! - `calls`: the log of every call, each with its whole request and answer.
//! - `conformance`: that log checked against botocore's service models.
//! - `xml`: the writer the XML APIs answer with.
//!
//! # Where the lab chooses
//!
//! - **Region outage** (`region-outage REGION`): that region's ElastiCache API answers every
//!   call at once with HTTP 503 `ServiceUnavailable` (it does not hang: the SDK's own retries
//!   and the agent's bounded loops are what a test exercises, and a hang would only add a
//!   timeout), and its caches are blackholed. Route 53's API keeps answering unless the
//!   outage is us-east-1's with `route53` (`region-outage us-east-1 --route53`), where its
//!   control plane is served from.
//! - **Route 53's control plane down** (`route53-control-down`, or such an outage): every
//!   request on its endpoint answers 503 `ServiceUnavailable` in Route 53's `ErrorResponse`
//!   form, which the SDK retries as a server error; the zone's DNS answers all along.
//! - **An answer lost after the work was done** (`commit-then-drop`): the call is carried out
//!   and logged (`answer_dropped`), and the control server ([`crate::control`]) holds its
//!   response unwritten until the client hangs up or the fault's `hold` runs out, then closes
//!   the connection; other connections are served meanwhile.
//! - **Errors** take each service's own form: `ErrorResponse` (`Type` `Sender` for 4xx and
//!   `Receiver` for 5xx) for ElastiCache, STS, IAM and Route 53, EC2's
//!   `<Response><Errors><Error>`, KMS's JSON `{"__type", "message"}`, CloudWatch's CBOR
//!   `{"__type", "message"}` with `x-amzn-query-error: Code;Sender`; injected ones
//!   (`api-error`) too, at the status AWS uses for the code.
//! - **Permissions** are all granted until `iam-deny SERVICE:Action` takes one away: then
//!   `SimulatePrincipalPolicy` says `implicitDeny` for it and every call of it is refused
//!   with the service's own access denial. STS `GetCallerIdentity` needs no permission.
//! - **CloudWatch down** (`cloudwatch-down REGION`, or the region's outage): every CloudWatch
//!   call in the region answers 503 `ServiceUnavailable` in its CBOR form, and the health
//!   checks on its alarms, unable to read them, take their `InsufficientDataHealthStatus`
//!   after [`AwsOptions::health_check_delay`].
//! - **`witness-down`** cuts every service; a region outage its region's ElastiCache and
//!   CloudWatch.
//! - **Credentials** are never checked, but a request without a SigV4 `Authorization` header
//!   is refused (`MissingAuthenticationToken`, 403) as AWS refuses it.
//!
//! # As strict as AWS, by default
//!
//! Every behaviour of AWS that the agent has to survive is on unless a test turns it off, each
//! with its source in `tests/FIDELITY.md`: `DescribeServerlessCaches` refuses a `MaxResults`
//! outside 20..=100, a new cache stays invisible for [`AwsOptions::describe_lag`], tags cannot
//! be read while a cache is not `available`, Route 53 answers `Throttling` beyond
//! [`AwsOptions::route53_rate`] and `PriorRequestNotComplete` to a change of the zone that
//! arrives within [`AwsOptions::prior_request_window`] of the previous one.

pub(crate) mod calls;
pub(crate) mod cbor;
pub(crate) mod cloudwatch;
pub(crate) mod conformance;
pub(crate) mod ec2;
pub(crate) mod elasticache;
pub(crate) mod health_checks;
pub(crate) mod iam;
pub(crate) mod kms;
pub(crate) mod query;
pub(crate) mod route53;
pub(crate) mod sigv4;
pub(crate) mod sts;
pub(crate) mod xml;

use std::collections::{BTreeSet, VecDeque};
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use axum::Router;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use hyper::body::Bytes;
use serde::{Deserialize, Serialize};

use crate::Shared;

pub use calls::{Call, HttpExchange, HttpRequest};
pub use conformance::botocore_check;
use xml::Xml;

/// The account every lab ARN names.
pub(crate) const ACCOUNT_ID: &str = crate::config::LAB_ACCOUNT_ID;

/// One of the AWS APIs the lab emulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AwsService {
    /// ElastiCache (Query protocol).
    Elasticache,
    /// Route 53 (REST-XML).
    Route53,
    /// STS (Query protocol): `GetCallerIdentity`.
    Sts,
    /// EC2 (its own dialect of the Query protocol): `DescribeSubnets`,
    /// `DescribeSecurityGroups`.
    Ec2,
    /// KMS (JSON 1.1): `DescribeKey`.
    Kms,
    /// IAM (Query protocol, global, signed for us-east-1): `SimulatePrincipalPolicy`,
    /// `GetRole`.
    Iam,
    /// CloudWatch (Smithy RPC v2 CBOR, signed as `monitoring`): `PutMetricData`,
    /// `PutMetricAlarm`, `DescribeAlarms`, `DeleteAlarms`. Named by its IAM prefix,
    /// `cloudwatch`.
    Cloudwatch,
}

/// How a service writes its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ErrorForm {
    /// `<ErrorResponse><Error><Type/><Code/><Message/></Error><RequestId/></ErrorResponse>`,
    /// with an XML declaration when `declaration` (Route 53) and without (the Query APIs).
    ErrorResponse { declaration: bool },
    /// EC2's `<Response><Errors><Error><Code/><Message/></Error></Errors><RequestID/>`.
    Ec2,
    /// JSON 1.1's `{"__type": …, "message": …}`.
    Json,
    /// RPC v2 CBOR's `{"__type": …, "message": …}` map, written by `cloudwatch` itself.
    Cbor,
}

impl AwsService {
    /// Every service, in the order the lab documents them.
    pub const ALL: [Self; 7] = [
        Self::Elasticache,
        Self::Route53,
        Self::Sts,
        Self::Ec2,
        Self::Kms,
        Self::Iam,
        Self::Cloudwatch,
    ];

    fn namespace(self) -> &'static str {
        match self {
            Self::Elasticache => "http://elasticache.amazonaws.com/doc/2015-02-02/",
            Self::Route53 => "https://route53.amazonaws.com/doc/2013-04-01/",
            Self::Sts => "https://sts.amazonaws.com/doc/2011-06-15/",
            Self::Ec2 => "http://ec2.amazonaws.com/doc/2016-11-15/",
            // JSON and CBOR have no namespace; nothing asks for KMS's or CloudWatch's.
            Self::Kms | Self::Cloudwatch => "",
            Self::Iam => "https://iam.amazonaws.com/doc/2010-05-08/",
        }
    }

    /// The SigV4 signing name, also the prefix of the service's IAM actions
    /// (`ec2:DescribeSubnets`).
    pub fn signing_name(self) -> &'static str {
        match self {
            Self::Elasticache => "elasticache",
            Self::Route53 => "route53",
            Self::Sts => "sts",
            Self::Ec2 => "ec2",
            Self::Kms => "kms",
            Self::Iam => "iam",
            Self::Cloudwatch => "cloudwatch",
        }
    }

    fn error_form(self) -> ErrorForm {
        match self {
            Self::Elasticache | Self::Sts | Self::Iam => {
                ErrorForm::ErrorResponse { declaration: false }
            }
            Self::Route53 => ErrorForm::ErrorResponse { declaration: true },
            Self::Ec2 => ErrorForm::Ec2,
            Self::Kms => ErrorForm::Json,
            Self::Cloudwatch => ErrorForm::Cbor,
        }
    }

    /// The `Content-Type` of the service's answers.
    fn content_type(self) -> &'static str {
        match self {
            Self::Kms => "application/x-amz-json-1.1",
            Self::Cloudwatch => "application/cbor",
            Self::Ec2 => "text/xml;charset=UTF-8",
            _ => "text/xml",
        }
    }

    /// The error an identity-based policy's implicit deny gives, in the service's own code
    /// and status (tests/FIDELITY.md): `AccessDenied` 403 for the Query and REST-XML APIs,
    /// EC2's `UnauthorizedOperation` 403, KMS's `AccessDeniedException` 400.
    fn denied(self, action: &str, resource: &str) -> ApiError {
        let caller = crate::config::LAB_CALLER_ARN;
        // AWS leaves the resource out for actions that have no resource-level permissions.
        let on = if resource == "*" {
            String::new()
        } else {
            format!(" on resource: {resource}")
        };
        let why = format!(
            "User: {caller} is not authorized to perform: {action}{on} because no \
             identity-based policy allows the {action} action"
        );
        match self {
            Self::Ec2 => ApiError::forbidden(
                "UnauthorizedOperation",
                format!("You are not authorized to perform this operation. {why}"),
            ),
            Self::Kms => ApiError::sender("AccessDeniedException", why),
            _ => ApiError::forbidden("AccessDenied", why),
        }
    }
}

impl fmt::Display for AwsService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signing_name())
    }
}

impl FromStr for AwsService {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|service| service.signing_name() == lower)
            .ok_or_else(|| {
                format!(
                    "unknown AWS service {s:?}; the lab emulates elasticache, route53, sts, \
                     ec2, kms, iam and cloudwatch"
                )
            })
    }
}

/// An AWS error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub(crate) status: StatusCode,
    pub(crate) code: String,
    pub(crate) message: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_string(),
            message: message.into(),
        }
    }

    /// A client fault: HTTP 400.
    pub(crate) fn sender(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// A missing resource: HTTP 404.
    pub(crate) fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    /// An authentication failure: HTTP 403.
    pub(crate) fn forbidden(code: &str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, message)
    }

    /// A required Query parameter is missing (AWS's common `MissingParameter`).
    pub(crate) fn missing_parameter(name: &str) -> Self {
        Self::sender(
            "MissingParameter",
            format!("The request must contain the parameter {name}"),
        )
    }

    /// An error injected by `api-error`: the HTTP status AWS uses for that code in that
    /// service, and a message in AWS's words.
    fn injected(service: AwsService, code: &str) -> Self {
        let (status, message) = match code {
            // KMS, like the other JSON services, answers its access denials with 400
            // (tests/FIDELITY.md).
            "AccessDeniedException" if service == AwsService::Kms => (
                StatusCode::BAD_REQUEST,
                "User is not authorized to perform this operation (injected by valkey-dr-lab api-error).",
            ),
            "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => (
                StatusCode::FORBIDDEN,
                "User is not authorized to perform this operation (injected by valkey-dr-lab api-error).",
            ),
            "UnrecognizedClient" | "UnrecognizedClientException" => (
                StatusCode::FORBIDDEN,
                "The security token included in the request is invalid.",
            ),
            "InvalidClientTokenId" => (
                StatusCode::FORBIDDEN,
                "The security token included in the request is invalid.",
            ),
            "ExpiredToken" | "ExpiredTokenException" => (
                StatusCode::FORBIDDEN,
                "The security token included in the request is expired",
            ),
            "SignatureDoesNotMatch" => (
                StatusCode::FORBIDDEN,
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details.",
            ),
            "Throttling" | "ThrottlingException" | "RequestLimitExceeded" => {
                (StatusCode::BAD_REQUEST, "Rate exceeded")
            }
            "PriorRequestNotComplete" => (
                StatusCode::BAD_REQUEST,
                "The request was rejected because Route 53 was still processing a prior request.",
            ),
            "InternalError" | "InternalFailure" => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "We encountered an internal error. Please try again.",
            ),
            "ServiceUnavailable" => (
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is unavailable. Please try again later.",
            ),
            _ => (
                StatusCode::BAD_REQUEST,
                "Injected by valkey-dr-lab api-error.",
            ),
        };
        Self::new(status, code, message)
    }

    /// The error document in the service's own form.
    fn body(&self, service: AwsService, request_id: &str) -> String {
        let kind = if self.status.is_server_error() {
            "Receiver"
        } else {
            "Sender"
        };
        match service.error_form() {
            ErrorForm::ErrorResponse { declaration } => {
                let doc = if declaration {
                    Xml::with_declaration()
                } else {
                    Xml::new()
                };
                doc.root("ErrorResponse", service.namespace(), |x| {
                    x.element("Error", |x| {
                        x.text("Type", kind)
                            .text("Code", &self.code)
                            .text("Message", &self.message);
                    })
                    .text("RequestId", request_id);
                })
            }
            ErrorForm::Ec2 => Xml::with_declaration().bare_root("Response", |x| {
                x.element("Errors", |x| {
                    x.element("Error", |x| {
                        x.text("Code", &self.code).text("Message", &self.message);
                    });
                })
                .text("RequestID", request_id);
            }),
            ErrorForm::Json => {
                serde_json::json!({ "__type": self.code, "message": self.message }).to_string()
            }
            // What the call log shows; the wire form is CBOR (`cloudwatch::error_body`).
            ErrorForm::Cbor => cloudwatch::error_body(self).to_json().to_string(),
        }
    }
}

/// What `provision-fail` and `provision-stuck` queue for the next CreateServerlessCache calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Provisioning {
    /// The cache becomes available after the provision delay.
    Normal,
    /// The cache goes to `create-failed` after the provision delay.
    Fail,
    /// The cache stays `creating` for ever.
    Stuck,
}

/// An `api-error` fault: matching calls fail with `code` while it lasts.
#[derive(Debug, Clone)]
struct InjectedError {
    service: AwsService,
    action: String,
    code: String,
    lasts: Lasts,
}

/// What is left of an injected error.
#[derive(Debug, Clone, Copy)]
enum Lasts {
    /// This many more calls.
    Calls(u32),
    /// Every call until then.
    Until(Instant),
}

impl InjectedError {
    fn matches(&self, service: AwsService, action: &str) -> bool {
        self.service == service && self.action == action
    }

    fn active(&self, now: Instant) -> bool {
        match self.lasts {
            Lasts::Calls(n) => n > 0,
            Lasts::Until(end) => now < end,
        }
    }
}

/// A `commit-then-drop` fault: the next `remaining` matching calls carried out get no answer.
#[derive(Debug, Clone)]
struct DroppedAnswers {
    service: AwsService,
    action: String,
    remaining: u32,
    /// How long each answer is held before the connection is closed.
    hold: Duration,
}

/// Set on the response of a call whose answer `commit-then-drop` takes: the control server
/// holds it unwritten for at most `hold`, then closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DroppedAnswer {
    pub(crate) hold: Duration,
}

#[derive(Debug, Default)]
struct Faults {
    /// Regions in an outage: their ElastiCache and CloudWatch APIs answer 503.
    outages: BTreeSet<String>,
    /// `witness-down`: the agent's own way out is cut, so every call fails.
    unreachable: bool,
    /// `route53-control-down`: Route 53's API answers 503.
    route53_down: bool,
    /// Regions whose outage took Route 53's API down with them (`region-outage --route53`).
    route53_down_with: BTreeSet<String>,
    injected: Vec<InjectedError>,
    dropped: Vec<DroppedAnswers>,
    provisioning: VecDeque<Provisioning>,
    /// `iam-deny`: IAM actions (`route53:ChangeResourceRecordSets`) the lab's principal is
    /// denied, in every service and in `SimulatePrincipalPolicy`.
    denied: BTreeSet<String>,
    /// `subnet-delete`: subnets gone from every region.
    deleted_subnets: BTreeSet<String>,
    /// `kms-disable`: the lab key is `Disabled` in every region.
    kms_disabled: bool,
    /// `zone-public`: the hosted zone says it is public.
    zone_public: bool,
    /// `zone-vpc-disassociate`: regions whose lab VPC the zone is no longer associated with.
    zone_vpcs_removed: BTreeSet<String>,
    /// `default-vpc-delete`: no region has a default VPC.
    no_default_vpc: bool,
    /// `cloudwatch-down`: regions whose CloudWatch answers 503 (and whose alarms Route 53's
    /// health checks cannot read).
    cloudwatch_down: BTreeSet<String>,
}

impl Faults {
    fn route53_down(&self) -> bool {
        self.route53_down || !self.route53_down_with.is_empty()
    }

    /// Whether CloudWatch in `region` is down: by `cloudwatch-down`, or with the region.
    fn cloudwatch_down(&self, region: &str) -> bool {
        self.cloudwatch_down.contains(region) || self.outages.contains(region)
    }
}

/// What Route 53's API answers while its control plane is down: the common 503 of every AWS
/// API (tests/FIDELITY.md, row R7), which the SDK classifies as a transient server error.
pub(crate) fn route53_unavailable() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    )
}

/// How the AWS emulation behaves in time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AwsOptions {
    /// `creating` → `available` (or `create-failed`), and `deleting` → gone.
    pub(crate) provision_delay: Duration,
    /// A Route 53 change goes `PENDING` → `INSYNC`.
    pub(crate) insync_delay: Duration,
    /// For this long after `CreateServerlessCache`, `DescribeServerlessCaches` does not see
    /// the new cache (AWS's reads are eventually consistent). Zero: seen at once.
    pub(crate) describe_lag: Duration,
    /// Route 53's per-account request rate; `None`: never throttled.
    pub(crate) route53_rate: Option<RateLimit>,
    /// A `ChangeResourceRecordSets` of the zone within this long of the previous accepted one
    /// is refused with `PriorRequestNotComplete`. Zero: never.
    pub(crate) prior_request_window: Duration,
    /// How long CloudWatch's minute (its standard resolution, the shortest period of an
    /// alarm Route 53 can read) lasts in the lab.
    pub(crate) alarm_period: Duration,
    /// How long after an alarm changes state (or CloudWatch stops answering) the Route 53
    /// health checks based on it follow.
    pub(crate) health_check_delay: Duration,
}

impl AwsOptions {
    /// Times only, with every strict behaviour off: for unit tests of other rules.
    #[cfg(test)]
    pub(crate) fn lenient(provision_delay: Duration, insync_delay: Duration) -> Self {
        Self {
            provision_delay,
            insync_delay,
            describe_lag: Duration::ZERO,
            route53_rate: None,
            prior_request_window: Duration::ZERO,
            alarm_period: crate::DEFAULT_ALARM_PERIOD,
            health_check_delay: crate::DEFAULT_HEALTH_CHECK_DELAY,
        }
    }
}

/// A token bucket's shape: `per_second` tokens added each second, at most `burst` held.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// The sustained rate.
    pub per_second: f64,
    /// How many requests may arrive at once after a quiet spell.
    pub burst: f64,
}

impl RateLimit {
    /// Route 53's documented account-wide limit, five requests a second (see FIDELITY.md).
    pub const ROUTE53: Self = Self {
        per_second: 5.0,
        burst: 5.0,
    };
}

/// Route 53's account-wide request bucket.
#[derive(Debug)]
struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl TokenBucket {
    fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            refilled: Instant::now(),
        }
    }

    /// Takes a token if one is there.
    fn take(&mut self, now: Instant) -> bool {
        let earned =
            now.saturating_duration_since(self.refilled).as_secs_f64() * self.limit.per_second;
        self.tokens = (self.tokens + earned).min(self.limit.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The emulation's state, part of the lab's [`Shared`].
pub(crate) struct Aws {
    pub(crate) options: AwsOptions,
    started: Instant,
    /// When the lab started, by the wall clock: the creation time of its fixed inventory
    /// (key, snapshot, zone).
    pub(crate) created: SystemTime,
    pub(crate) elasticache: Mutex<elasticache::Regions>,
    pub(crate) route53: Mutex<route53::Changes>,
    /// CloudWatch's metrics and alarms, which the health checks read.
    pub(crate) cloudwatch: Arc<cloudwatch::CloudWatch>,
    /// Route 53's health checks, which the DNS server reads.
    pub(crate) health: Arc<health_checks::HealthChecks>,
    faults: Mutex<Faults>,
    /// Route 53's request bucket, when throttling is on.
    route53_bucket: Option<Mutex<TokenBucket>>,
    /// When the zone last accepted a change, for `PriorRequestNotComplete`.
    last_change: Mutex<Option<Instant>>,
    calls: calls::CallLog,
    next_id: AtomicU64,
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section is a read or a single whole change: a panic cannot leave the data
    // half-changed, so a poisoned lock is safe to keep using.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Aws {
    pub(crate) fn new(options: AwsOptions) -> Self {
        let cloudwatch = Arc::new(cloudwatch::CloudWatch::new(options.alarm_period));
        let health = Arc::new(health_checks::HealthChecks::new(
            cloudwatch.clone(),
            options.health_check_delay,
        ));
        Self {
            options,
            started: Instant::now(),
            created: SystemTime::now(),
            elasticache: Mutex::new(elasticache::Regions::default()),
            route53: Mutex::new(route53::Changes::default()),
            cloudwatch,
            health,
            faults: Mutex::new(Faults::default()),
            route53_bucket: options
                .route53_rate
                .map(|l| Mutex::new(TokenBucket::new(l))),
            last_change: Mutex::new(None),
            calls: calls::CallLog::default(),
            next_id: AtomicU64::new(1),
        }
    }

    /// Every call answered so far (the newest 10 000), oldest first.
    pub(crate) fn calls(&self) -> Vec<Call> {
        self.calls.all()
    }

    /// A fresh number, for request and change ids.
    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn request_id(&self) -> String {
        // UUID-shaped, as AWS's are; unique within the lab.
        format!("6c1ab000-0000-4000-8000-{:012x}", self.next_id())
    }

    /// Starts answering a call: the call log entry is written by [`Exchange::finish`].
    pub(crate) fn exchange(&self, service: AwsService) -> Exchange<'_> {
        Exchange {
            aws: self,
            service,
            at_ms: self.started.elapsed().as_millis() as u64,
            action: String::new(),
            region: None,
            request: serde_json::Value::Null,
            http: calls::HttpRequest::default(),
            resource: None,
            binary: false,
            query_error: None,
            request_id: self.request_id(),
        }
    }

    /// Route 53's account-wide rate: `Throttling` when the bucket is empty.
    fn throttle_route53(&self) -> Result<(), ApiError> {
        let Some(bucket) = &self.route53_bucket else {
            return Ok(());
        };
        if lock(bucket).take(Instant::now()) {
            Ok(())
        } else {
            Err(ApiError::sender("Throttling", "Rate exceeded"))
        }
    }

    /// Whether a change of the zone may start now: `PriorRequestNotComplete` while the
    /// previous accepted one is still being processed. Only an accepted change starts the
    /// window again, so a refused one never prolongs it.
    pub(crate) fn zone_ready_for_change(&self) -> Result<(), ApiError> {
        let window = self.options.prior_request_window;
        if window.is_zero() {
            return Ok(());
        }
        match *lock(&self.last_change) {
            Some(at) if at.elapsed() < window => Err(ApiError::injected(
                AwsService::Route53,
                "PriorRequestNotComplete",
            )),
            _ => Ok(()),
        }
    }

    /// Records that the zone accepted a change now.
    pub(crate) fn change_accepted(&self) {
        *lock(&self.last_change) = Some(Instant::now());
    }

    /// `region-outage` / `region-restore`: the region's ElastiCache and CloudWatch.
    pub(crate) fn set_outage(&self, region: &str, down: bool) {
        self.set_region_fault(region, down, |f| &mut f.outages);
    }

    /// `cloudwatch-down` / `cloudwatch-up`: the region's CloudWatch answers 503, and its
    /// alarms cannot be read by Route 53's health checks.
    pub(crate) fn set_cloudwatch_down(&self, region: &str, down: bool) {
        self.set_region_fault(region, down, |f| &mut f.cloudwatch_down);
    }

    /// Adds `region` to (or takes it from) the fault set `set` picks, then tells CloudWatch
    /// whether the region's alarms can be read, which both sets decide.
    fn set_region_fault(
        &self,
        region: &str,
        down: bool,
        set: impl FnOnce(&mut Faults) -> &mut BTreeSet<String>,
    ) {
        let mut faults = lock(&self.faults);
        let regions = set(&mut faults);
        if down {
            regions.insert(region.to_string());
        } else {
            regions.remove(region);
        }
        let readable = !faults.cloudwatch_down(region);
        self.cloudwatch
            .set_readable(region, readable, Instant::now());
    }

    /// `witness-down` / `witness-up`: every call answers 503 while set.
    pub(crate) fn set_unreachable(&self, down: bool) {
        lock(&self.faults).unreachable = down;
    }

    pub(crate) fn region_down(&self, region: &str) -> bool {
        lock(&self.faults).outages.contains(region)
    }

    /// `route53-control-down` / `route53-control-up`; up also ends what region outages took
    /// down.
    pub(crate) fn set_route53_down(&self, down: bool) {
        let mut faults = lock(&self.faults);
        faults.route53_down = down;
        if !down {
            faults.route53_down_with.clear();
        }
    }

    /// Route 53's API goes down with `region`'s outage, or comes back with its restore.
    pub(crate) fn set_route53_down_with(&self, region: &str, down: bool) {
        let mut faults = lock(&self.faults);
        if down {
            faults.route53_down_with.insert(region.to_string());
        } else {
            faults.route53_down_with.remove(region);
        }
    }

    /// Whether Route 53's API answers 503, for whatever reason.
    pub(crate) fn route53_down(&self) -> bool {
        lock(&self.faults).route53_down()
    }

    /// `api-error`: the next calls, or every call for a while from now.
    pub(crate) fn inject_error(
        &self,
        service: AwsService,
        action: &str,
        code: &str,
        span: crate::ErrorSpan,
    ) {
        let lasts = match span {
            crate::ErrorSpan::Calls(n) => Lasts::Calls(n),
            crate::ErrorSpan::For(d) => Lasts::Until(Instant::now() + d),
        };
        lock(&self.faults).injected.push(InjectedError {
            service,
            action: action.to_string(),
            code: code.to_string(),
            lasts,
        });
    }

    /// `commit-then-drop`.
    pub(crate) fn drop_answers(
        &self,
        service: AwsService,
        action: &str,
        times: u32,
        hold: Duration,
    ) {
        lock(&self.faults).dropped.push(DroppedAnswers {
            service,
            action: action.to_string(),
            remaining: times,
            hold,
        });
    }

    /// Whether the answer to this call, which was carried out, is to be dropped, and for how
    /// long it is held; uses one of the fault's calls.
    fn take_dropped_answer(&self, service: AwsService, action: &str) -> Option<DroppedAnswer> {
        let mut faults = lock(&self.faults);
        let rule = faults
            .dropped
            .iter_mut()
            .find(|r| r.service == service && r.action == action && r.remaining > 0)?;
        rule.remaining -= 1;
        let hold = rule.hold;
        faults.dropped.retain(|r| r.remaining > 0);
        Some(DroppedAnswer { hold })
    }

    /// `iam-deny` / `iam-allow`.
    pub(crate) fn set_denied(&self, action: &str, denied: bool) {
        let mut faults = lock(&self.faults);
        if denied {
            faults.denied.insert(action.to_string());
        } else {
            faults.denied.remove(action);
        }
    }

    /// Whether `iam-deny` denies the IAM action (`ec2:DescribeSubnets`).
    pub(crate) fn is_denied(&self, action: &str) -> bool {
        lock(&self.faults).denied.contains(action)
    }

    /// `subnet-delete`.
    pub(crate) fn delete_subnet(&self, subnet: &str) {
        lock(&self.faults)
            .deleted_subnets
            .insert(subnet.to_string());
    }

    /// Whether `subnet-delete` removed the subnet.
    pub(crate) fn subnet_deleted(&self, subnet: &str) -> bool {
        lock(&self.faults).deleted_subnets.contains(subnet)
    }

    /// `kms-disable` / `kms-enable`.
    pub(crate) fn set_kms_disabled(&self, disabled: bool) {
        lock(&self.faults).kms_disabled = disabled;
    }

    pub(crate) fn kms_disabled(&self) -> bool {
        lock(&self.faults).kms_disabled
    }

    /// `zone-public` / `zone-private`.
    pub(crate) fn set_zone_public(&self, public: bool) {
        lock(&self.faults).zone_public = public;
    }

    pub(crate) fn zone_public(&self) -> bool {
        lock(&self.faults).zone_public
    }

    /// `zone-vpc-associate` (true) / `zone-vpc-disassociate` (false) of `region`'s lab VPC.
    pub(crate) fn set_zone_vpc(&self, region: &str, associated: bool) {
        let removed = &mut lock(&self.faults).zone_vpcs_removed;
        if associated {
            removed.remove(region);
        } else {
            removed.insert(region.to_owned());
        }
    }

    /// Whether the zone is associated with `region`'s lab VPC (unless disassociated).
    pub(crate) fn zone_vpc_associated(&self, region: &str) -> bool {
        !lock(&self.faults).zone_vpcs_removed.contains(region)
    }

    /// `default-vpc-create` (true) / `default-vpc-delete` (false).
    pub(crate) fn set_default_vpc(&self, exists: bool) {
        lock(&self.faults).no_default_vpc = !exists;
    }

    /// Whether the lab VPC is its region's default VPC.
    pub(crate) fn has_default_vpc(&self) -> bool {
        !lock(&self.faults).no_default_vpc
    }

    pub(crate) fn queue_provisioning(&self, provisioning: Provisioning) {
        lock(&self.faults).provisioning.push_back(provisioning);
    }

    pub(crate) fn next_provisioning(&self) -> Provisioning {
        lock(&self.faults)
            .provisioning
            .pop_front()
            .unwrap_or(Provisioning::Normal)
    }

    /// The faults that stop a call before the API looks at it: `witness-down` (every
    /// service), Route 53's control plane down (Route 53 only), a region outage (ElastiCache
    /// and CloudWatch) or `cloudwatch-down` (CloudWatch; none uses up injected errors), an `iam-deny` of the call's action on
    /// `resource` (never STS `GetCallerIdentity`, which needs no permission), then an injected
    /// error, then Route 53's request rate (every call that reaches Route 53 counts, as on
    /// AWS).
    fn gate(
        &self,
        service: AwsService,
        action: &str,
        region: &str,
        resource: &str,
    ) -> Result<(), ApiError> {
        self.gate_at(service, action, region, resource, Instant::now())
    }

    /// [`Aws::gate`] at `now`, for the injected errors that last a time.
    fn gate_at(
        &self,
        service: AwsService,
        action: &str,
        region: &str,
        resource: &str,
        now: Instant,
    ) -> Result<(), ApiError> {
        let mut faults = lock(&self.faults);
        if faults.unreachable {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "The lab's witness-down fault is on: no AWS call gets through.".to_owned(),
            ));
        }
        if service == AwsService::Route53 && faults.route53_down() {
            return Err(route53_unavailable());
        }
        if service == AwsService::Cloudwatch && faults.cloudwatch_down(region) {
            return Err(cloudwatch::unavailable(region));
        }
        if service == AwsService::Elasticache && faults.outages.contains(region) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                format!("The service is unavailable in {region}. Please try again later."),
            ));
        }
        let iam_action = format!("{}:{action}", service.signing_name());
        if service != AwsService::Sts && faults.denied.contains(&iam_action) {
            return Err(service.denied(&iam_action, resource));
        }
        faults.injected.retain(|r| r.active(now));
        if let Some(rule) = faults
            .injected
            .iter_mut()
            .find(|r| r.matches(service, action))
        {
            if let Lasts::Calls(n) = &mut rule.lasts {
                *n -= 1;
            }
            let code = rule.code.clone();
            faults.injected.retain(|r| r.active(now));
            return Err(ApiError::injected(service, &code));
        }
        drop(faults);
        if service == AwsService::Route53 {
            self.throttle_route53()?;
        }
        Ok(())
    }
}

/// One call being answered: what the log will say about it.
pub(crate) struct Exchange<'a> {
    aws: &'a Aws,
    service: AwsService,
    at_ms: u64,
    pub(crate) action: String,
    pub(crate) region: Option<String>,
    pub(crate) request: serde_json::Value,
    /// The request as it came, for the botocore conformance check.
    pub(crate) http: calls::HttpRequest,
    /// The ARN an `iam-deny` message names; `None`: `*`, an action without resource-level
    /// permissions.
    pub(crate) resource: Option<String>,
    /// The answer is binary (CloudWatch's CBOR): the log keeps its bytes in hex beside the
    /// text.
    pub(crate) binary: bool,
    /// The answer's `x-amzn-query-error` header, logged with it.
    pub(crate) query_error: Option<String>,
    request_id: String,
}

impl Exchange<'_> {
    /// Region outages, `iam-deny` and injected errors, for this call's action, region and
    /// resource.
    pub(crate) fn gate(&self) -> Result<(), ApiError> {
        self.aws.gate(
            self.service,
            &self.action,
            self.region.as_deref().unwrap_or(""),
            self.resource.as_deref().unwrap_or("*"),
        )
    }

    pub(crate) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Logs the call and turns the outcome into the HTTP response: the body on success, the
    /// service's own error form otherwise. A call carried out while `commit-then-drop` waits
    /// for one is logged as answered, and its response marked [`DroppedAnswer`].
    pub(crate) fn finish(self, outcome: Result<String, ApiError>) -> Response {
        let (status, error_code, body) = match outcome {
            Ok(body) => (StatusCode::OK, None, body),
            Err(e) => (
                e.status,
                Some(e.code.clone()),
                e.body(self.service, &self.request_id),
            ),
        };
        let content_type = self.service.content_type();
        self.finish_raw(
            status,
            error_code,
            body.clone(),
            body.into_bytes(),
            content_type,
        )
    }

    /// Logs the call with `logged` as its answer's text and answers `wire` (the same answer,
    /// as sent: CloudWatch's CBOR is logged as JSON).
    pub(crate) fn finish_raw(
        self,
        status: StatusCode,
        error_code: Option<String>,
        logged: String,
        wire: Vec<u8>,
        content_type: &str,
    ) -> Response {
        let dropped = if status.is_success() {
            self.aws.take_dropped_answer(self.service, &self.action)
        } else {
            None
        };
        let body = logged;
        self.aws.calls.record(Call {
            seq: 0,
            at_ms: self.at_ms,
            service: self.service,
            action: self.action,
            region: self.region,
            status: status.as_u16(),
            error_code,
            request: self.request,
            http: Some(calls::HttpExchange {
                request: self.http,
                status: status.as_u16(),
                body,
                body_hex: self
                    .binary
                    .then(|| wire.iter().map(|b| format!("{b:02x}")).collect()),
                query_error: self.query_error,
            }),
            answer_dropped: dropped.is_some(),
        });
        let mut response = (
            status,
            [
                (CONTENT_TYPE, content_type.to_string()),
                (
                    axum::http::HeaderName::from_static("x-amzn-requestid"),
                    self.request_id,
                ),
            ],
            wire,
        )
            .into_response();
        if let Some(dropped) = dropped {
            response.extensions_mut().insert(dropped);
        }
        response
    }
}

/// An ISO 8601 UTC timestamp with milliseconds, the form both APIs use.
pub(crate) fn timestamp(at: SystemTime) -> String {
    humantime::format_rfc3339_millis(at).to_string()
}

/// `POST /`: the services that share it (ElastiCache, STS, EC2 and IAM's Query forms, KMS's
/// JSON), told apart as AWS's one endpoint per service would: by the SigV4 credential scope's
/// service name. A request without a valid scope goes to ElastiCache, which refuses it as
/// AWS does (`MissingAuthenticationToken`, `IncompleteSignature`).
async fn post_root(State(lab): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let service = sigv4::credential_scope(&headers)
        .ok()
        .and_then(|scope| scope.service.parse::<AwsService>().ok());
    match service {
        Some(AwsService::Sts) => sts::handle(lab, headers, body),
        Some(AwsService::Ec2) => ec2::handle(lab, headers, body),
        Some(AwsService::Iam) => iam::handle(lab, headers, body),
        Some(AwsService::Kms) => kms::handle(lab, headers, body),
        // CloudWatch's SDK posts to its own path (RPC v2 CBOR, `cloudwatch::handle`); its
        // Query form, which older SDKs send here, is not emulated.
        Some(AwsService::Elasticache | AwsService::Route53 | AwsService::Cloudwatch) | None => {
            elasticache::handle(State(lab), headers, body).await
        }
    }
}

/// The AWS routes, merged into the control server's router.
pub(crate) fn router() -> Router<Arc<Shared>> {
    Router::new()
        .route("/", post(post_root))
        .route(
            "/2013-04-01/hostedzone/{zone}",
            get(route53::get_hosted_zone),
        )
        .route(
            "/2013-04-01/hostedzone/{zone}/rrset",
            post(route53::change_rrsets).get(route53::list_rrsets),
        )
        // Older SDKs put a slash at the end.
        .route(
            "/2013-04-01/hostedzone/{zone}/rrset/",
            post(route53::change_rrsets).get(route53::list_rrsets),
        )
        .route("/2013-04-01/change/{id}", get(route53::get_change))
        .route(
            "/2013-04-01/healthcheck",
            post(health_checks::create).get(health_checks::list),
        )
        .route(
            "/2013-04-01/healthcheck/{id}",
            get(health_checks::get).delete(health_checks::delete),
        )
        .route(
            "/2013-04-01/healthcheck/{id}/status",
            get(health_checks::status),
        )
        .route(
            "/service/GraniteServiceVersion20100801/operation/{operation}",
            post(cloudwatch::handle),
        )
        .route("/2013-04-01/{*rest}", any(route53::other))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_have_the_aws_shape() {
        let e = ApiError::sender("InvalidChangeBatch", "[Tried to delete x]");
        assert_eq!(
            e.body(AwsService::Route53, "rid"),
            "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Error><Type>Sender</Type><Code>InvalidChangeBatch</Code><Message>[Tried to delete x]</Message></Error>\
             <RequestId>rid</RequestId></ErrorResponse>"
        );
        let e = ApiError::injected(AwsService::Elasticache, "ServiceUnavailable");
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            e.body(AwsService::Elasticache, "r")
                .contains("<Type>Receiver</Type><Code>ServiceUnavailable</Code>")
        );
        let injected = |service, code| ApiError::injected(service, code).status.as_u16();
        assert_eq!(injected(AwsService::Elasticache, "Throttling"), 400);
        assert_eq!(injected(AwsService::Elasticache, "InternalError"), 500);
        for code in [
            "AccessDenied",
            "AccessDeniedException",
            "UnrecognizedClient",
            "UnrecognizedClientException",
            "InvalidClientTokenId",
            "ExpiredToken",
            "ExpiredTokenException",
            "SignatureDoesNotMatch",
        ] {
            assert_eq!(injected(AwsService::Sts, code), 403, "{code}");
        }
        assert_eq!(injected(AwsService::Kms, "AccessDeniedException"), 400);
        assert_eq!(
            ApiError::injected(AwsService::Iam, "InvalidClientTokenId").message,
            "The security token included in the request is invalid."
        );

        let e = ApiError::not_found("InvalidSubnetID.NotFound", "gone");
        assert_eq!(
            e.body(AwsService::Ec2, "rid"),
            "<?xml version=\"1.0\"?>\n<Response><Errors><Error><Code>InvalidSubnetID.NotFound</Code>\
             <Message>gone</Message></Error></Errors><RequestID>rid</RequestID></Response>"
        );
        let json: serde_json::Value = serde_json::from_str(
            &ApiError::sender("NotFoundException", "m").body(AwsService::Kms, "r"),
        )
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({"__type": "NotFoundException", "message": "m"})
        );
        assert!(
            ApiError::sender("X", "m")
                .body(AwsService::Sts, "r")
                .starts_with("<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">")
        );
    }

    #[test]
    fn injected_errors_are_used_up_and_outages_win() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        aws.inject_error(
            AwsService::Elasticache,
            "CreateServerlessCache",
            "Throttling",
            crate::ErrorSpan::Calls(2),
        );
        let gate = |action| aws.gate(AwsService::Elasticache, action, "us-west-2", "*");
        assert!(gate("DescribeServerlessCaches").is_ok());
        aws.set_outage("us-west-2", true);
        assert_eq!(
            gate("CreateServerlessCache").unwrap_err().code,
            "ServiceUnavailable"
        );
        assert!(
            aws.gate(AwsService::Route53, "GetChange", "us-west-2", "*")
                .is_ok()
        );
        aws.set_outage("us-west-2", false);
        assert_eq!(
            gate("CreateServerlessCache").unwrap_err().code,
            "Throttling"
        );
        assert_eq!(
            gate("CreateServerlessCache").unwrap_err().code,
            "Throttling"
        );
        assert!(gate("CreateServerlessCache").is_ok());

        assert_eq!(aws.next_provisioning(), Provisioning::Normal);
        aws.queue_provisioning(Provisioning::Fail);
        aws.queue_provisioning(Provisioning::Stuck);
        assert_eq!(aws.next_provisioning(), Provisioning::Fail);
        assert_eq!(aws.next_provisioning(), Provisioning::Stuck);
        assert_eq!(aws.next_provisioning(), Provisioning::Normal);
    }

    #[test]
    fn route53_down_refuses_every_route53_call_and_nothing_else() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        aws.inject_error(
            AwsService::Route53,
            "GetChange",
            "Throttling",
            crate::ErrorSpan::Calls(1),
        );
        let r53 = |action| aws.gate(AwsService::Route53, action, "us-east-1", "*");
        aws.set_route53_down(true);
        for action in ["ChangeResourceRecordSets", "GetChange", ""] {
            let e = r53(action).unwrap_err();
            assert_eq!(
                (e.status.as_u16(), e.code.as_str()),
                (503, "ServiceUnavailable")
            );
            assert!(
                e.body(AwsService::Route53, "r")
                    .contains("<Type>Receiver</Type><Code>ServiceUnavailable</Code>")
            );
        }
        assert!(
            aws.gate(
                AwsService::Elasticache,
                "DescribeServerlessCaches",
                "us-east-1",
                "*"
            )
            .is_ok()
        );
        aws.set_route53_down(false);
        assert_eq!(
            r53("GetChange").unwrap_err().code,
            "Throttling",
            "the outage used up no injected error"
        );
        assert!(r53("GetChange").is_ok());

        // A region's outage takes it down until that region is restored, or until up.
        aws.set_route53_down_with("us-east-1", true);
        assert!(aws.route53_down());
        aws.set_route53_down_with("us-east-1", false);
        assert!(!aws.route53_down() && r53("GetChange").is_ok());
        aws.set_route53_down_with("us-east-1", true);
        aws.set_route53_down(false);
        assert!(!aws.route53_down(), "route53-control-up ends it too");
    }

    #[test]
    fn cloudwatch_down_refuses_its_region_only_and_an_outage_takes_it_too() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        let cw = |region| aws.gate(AwsService::Cloudwatch, "PutMetricData", region, "*");
        aws.set_cloudwatch_down("us-east-1", true);
        let e = cw("us-east-1").unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (503, "ServiceUnavailable")
        );
        assert!(cw("us-west-2").is_ok(), "another region");
        assert!(
            aws.gate(
                AwsService::Elasticache,
                "DescribeServerlessCaches",
                "us-east-1",
                "*"
            )
            .is_ok(),
            "ElastiCache is not CloudWatch"
        );
        aws.set_outage("us-west-2", true);
        assert!(
            cw("us-west-2").is_err(),
            "a region's outage takes its CloudWatch"
        );
        aws.set_cloudwatch_down("us-west-2", false);
        assert!(cw("us-west-2").is_err(), "the outage still holds it");
        aws.set_outage("us-west-2", false);
        aws.set_cloudwatch_down("us-east-1", false);
        assert!(cw("us-west-2").is_ok() && cw("us-east-1").is_ok());
    }

    #[test]
    fn an_error_injected_for_a_time_fails_every_call_until_then() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        let start = Instant::now();
        aws.inject_error(
            AwsService::Route53,
            "ChangeResourceRecordSets",
            "Throttling",
            crate::ErrorSpan::For(Duration::from_secs(30)),
        );
        let at = |action, after: u64| {
            aws.gate_at(
                AwsService::Route53,
                action,
                "us-east-1",
                "*",
                start + Duration::from_secs(after),
            )
        };
        for after in [0, 1, 10, 29] {
            assert_eq!(
                at("ChangeResourceRecordSets", after).unwrap_err().code,
                "Throttling",
                "{after}s in"
            );
        }
        assert!(at("GetChange", 1).is_ok(), "another action");
        assert!(at("ChangeResourceRecordSets", 31).is_ok(), "after 30 s");
        assert!(
            at("ChangeResourceRecordSets", 1).is_ok(),
            "an ended span is forgotten"
        );
    }

    #[test]
    fn commit_then_drop_takes_the_answers_of_the_next_calls_carried_out() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        let hold = Duration::from_secs(7);
        aws.drop_answers(AwsService::Route53, "ChangeResourceRecordSets", 2, hold);
        assert_eq!(
            aws.take_dropped_answer(AwsService::Route53, "GetChange"),
            None
        );
        for _ in 0..2 {
            assert_eq!(
                aws.take_dropped_answer(AwsService::Route53, "ChangeResourceRecordSets"),
                Some(DroppedAnswer { hold })
            );
        }
        assert_eq!(
            aws.take_dropped_answer(AwsService::Route53, "ChangeResourceRecordSets"),
            None
        );

        // Through an exchange: only a success is dropped, and the log says so.
        aws.drop_answers(AwsService::Route53, "GetChange", 1, hold);
        let exchange = |outcome| {
            let mut call = aws.exchange(AwsService::Route53);
            call.action = "GetChange".to_string();
            call.finish(outcome)
        };
        let refused = exchange(Err(ApiError::sender("InvalidInput", "no")));
        assert!(refused.extensions().get::<DroppedAnswer>().is_none());
        let carried_out = exchange(Ok(String::new()));
        assert_eq!(
            carried_out.extensions().get::<DroppedAnswer>(),
            Some(&DroppedAnswer { hold })
        );
        let logged: Vec<bool> = aws.calls().iter().map(|c| c.answer_dropped).collect();
        assert_eq!(logged, vec![false, true]);
    }

    #[test]
    fn the_route53_bucket_allows_its_burst_then_its_rate() {
        let mut bucket = TokenBucket::new(RateLimit::ROUTE53);
        let start = bucket.refilled;
        assert!((0..5).all(|_| bucket.take(start)), "a burst of 5");
        assert!(!bucket.take(start), "the sixth at once is throttled");
        assert!(
            bucket.take(start + Duration::from_millis(200)),
            "one more after 1/5 s"
        );
        assert!(!bucket.take(start + Duration::from_millis(250)));
        let later = start + Duration::from_secs(10);
        assert!(
            (0..5).all(|_| bucket.take(later)) && !bucket.take(later),
            "never above 5"
        );
    }

    #[test]
    fn prior_request_window_refuses_only_right_after_an_accepted_change() {
        let mut options = AwsOptions::lenient(Duration::ZERO, Duration::ZERO);
        options.prior_request_window = Duration::from_secs(60);
        let aws = Aws::new(options);
        assert!(aws.zone_ready_for_change().is_ok());
        aws.change_accepted();
        let e = aws.zone_ready_for_change().unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "PriorRequestNotComplete")
        );
        let off = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        off.change_accepted();
        assert!(off.zone_ready_for_change().is_ok());
    }

    #[test]
    fn services_parse_and_print() {
        assert_eq!(
            "Route53".parse::<AwsService>().unwrap(),
            AwsService::Route53
        );
        assert_eq!(AwsService::Elasticache.to_string(), "elasticache");
        assert!("s3".parse::<AwsService>().is_err());
        for service in AwsService::ALL {
            assert_eq!(service.to_string().parse::<AwsService>(), Ok(service));
        }
    }

    #[test]
    fn iam_deny_answers_each_service_s_own_error_and_never_sts() {
        let aws = Aws::new(AwsOptions::lenient(Duration::ZERO, Duration::ZERO));
        for action in [
            "ec2:DescribeSubnets",
            "kms:DescribeKey",
            "route53:GetHostedZone",
            "sts:GetCallerIdentity",
        ] {
            aws.set_denied(action, true);
        }
        let e = aws
            .gate(AwsService::Ec2, "DescribeSubnets", "us-east-1", "*")
            .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (403, "UnauthorizedOperation")
        );
        assert!(!e.message.contains("on resource"), "{}", e.message);
        let key = crate::config::lab_kms_key_arn("us-east-1");
        let e = aws
            .gate(AwsService::Kms, "DescribeKey", "us-east-1", &key)
            .unwrap_err();
        assert_eq!(
            (e.status.as_u16(), e.code.as_str()),
            (400, "AccessDeniedException")
        );
        assert_eq!(
            e.message,
            format!(
                "User: arn:aws:sts::123456789012:assumed-role/valkey-dr-lab/lab-agent is not \
                 authorized to perform: kms:DescribeKey on resource: {key} because no \
                 identity-based policy allows the kms:DescribeKey action"
            )
        );
        let e = aws
            .gate(AwsService::Route53, "GetHostedZone", "us-east-1", "z")
            .unwrap_err();
        assert_eq!((e.status.as_u16(), e.code.as_str()), (403, "AccessDenied"));
        assert!(
            aws.gate(AwsService::Sts, "GetCallerIdentity", "us-east-1", "*")
                .is_ok()
        );
        aws.set_denied("ec2:DescribeSubnets", false);
        assert!(
            aws.gate(AwsService::Ec2, "DescribeSubnets", "us-east-1", "*")
                .is_ok()
        );
    }
}
