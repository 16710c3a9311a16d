//! The lab behaves as AWS does by default: each row of `tests/FIDELITY.md` has its lab side
//! asserted here, through the real SDK clients, with the exact codes, messages and statuses
//! the agent will meet on AWS, and each knob that turns a rule off is shown to do so.
//!
//! Every test has its own lab; every wait polls a condition with a deadline.

mod support;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::types::ServerlessCache;
use aws_sdk_route53::types::{ChangeAction, ChangeStatus, RrType};
use hickory_resolver::proto::rr::RecordType;
use support::raw_aws::{change, rrset, send, wait_available};
use tokio::time::{Instant, sleep};
use valkey_dr_lab::config::HOSTED_ZONE_ID;
use valkey_dr_lab::{AwsService, Call, Lab, LabOptions, PRIMARY_CACHE, PRIMARY_REGION, RECORD};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);
const DR_REGION: &str = "us-west-2";

struct TestLab {
    lab: Lab,
    _dir: tempfile::TempDir,
}

async fn lab(options: impl FnOnce(LabOptions) -> LabOptions) -> TestLab {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::start(options(LabOptions {
        seed: Some(5),
        provision_delay: Duration::from_millis(300),
        ..LabOptions::new(dir.path())
    }))
    .await
    .expect("the lab starts");
    TestLab { lab, _dir: dir }
}

async fn sdk(lab: &Lab, region: &str, retries: bool) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(if retries {
            RetryConfig::standard().with_max_attempts(8)
        } else {
            RetryConfig::disabled()
        })
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

/// The error's code and message, or `None` for a success.
fn error<T, E: ProvideErrorMetadata>(result: &Result<T, E>) -> Option<(String, String)> {
    result.as_ref().err().map(|e| {
        (
            e.code().unwrap_or_default().to_owned(),
            e.message().unwrap_or_default().to_owned(),
        )
    })
}

fn pair(code: &str, message: &str) -> Option<(String, String)> {
    Some((code.to_owned(), message.to_owned()))
}

/// The newest logged call of this action.
fn last(lab: &Lab, action: &str) -> Call {
    lab.calls()
        .into_iter()
        .rev()
        .find(|c| c.action == action)
        .expect("the call is logged")
}

async fn create(client: &aws_sdk_elasticache::Client, name: &str) -> ServerlessCache {
    client
        .create_serverless_cache()
        .serverless_cache_name(name)
        .engine("valkey")
        .send()
        .await
        .expect("the cache is created")
        .serverless_cache
        .expect("and returned")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticache_answers_as_aws_does_by_default() {
    let t = lab(|o| o).await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, false).await);

    // MaxResults: aws/aws-sdk-js-v3#5727.
    for n in [1, 19, 101] {
        let listed = ec.describe_serverless_caches().max_results(n).send().await;
        assert_eq!(
            error(&listed),
            pair(
                "InvalidParameterValue",
                "Invalid value for max records. Must be between 20 and 100"
            ),
            "MaxResults {n}"
        );
        assert_eq!(last(&t.lab, "DescribeServerlessCaches").status, 400);
    }
    for n in [20, 100] {
        ec.describe_serverless_caches()
            .max_results(n)
            .send()
            .await
            .expect("20..=100 is accepted");
    }

    // A new cache: no endpoint while creating, invisible for the describe lag, no tags.
    let created = create(&ec, "fidelity-dr").await;
    let started = Instant::now();
    assert_eq!(created.status(), Some("creating"));
    assert!(created.endpoint().is_none() && created.reader_endpoint().is_none());
    let by_name = ec
        .describe_serverless_caches()
        .serverless_cache_name("fidelity-dr")
        .send()
        .await;
    assert_eq!(
        error(&by_name).map(|(code, _)| code).as_deref(),
        Some("ServerlessCacheNotFoundFault")
    );
    assert_eq!(last(&t.lab, "DescribeServerlessCaches").status, 404);
    let listing = ec
        .describe_serverless_caches()
        .send()
        .await
        .expect("a listing");
    assert!(
        listing.serverless_caches().is_empty(),
        "the new cache is left out of listings too"
    );
    let tags = ec
        .list_tags_for_resource()
        .resource_name(created.arn().expect("an ARN"))
        .send()
        .await;
    assert_eq!(
        error(&tags),
        pair(
            "InvalidServerlessCacheStateFault",
            "Serverless cache is not in an available state to perform the requested action."
        )
    );
    assert_eq!(last(&t.lab, "ListTagsForResource").status, 400);

    let available = wait_available(&ec, "fidelity-dr", DEADLINE).await;
    assert!(
        started.elapsed() >= valkey_dr_lab::DEFAULT_DESCRIBE_LAG,
        "seen after {:?}, before the describe lag ran out",
        started.elapsed()
    );
    let endpoint = available.endpoint().expect("an endpoint once available");
    let reader = available.reader_endpoint().expect("a reader endpoint");
    assert_eq!(reader.address(), endpoint.address());
    assert_eq!(reader.port(), Some(6380));
    ec.list_tags_for_resource()
        .resource_name(available.arn().expect("an ARN"))
        .send()
        .await
        .expect("tags once available");

    // The primary's name, free in another region.
    let twin = create(&ec, PRIMARY_CACHE).await;
    assert_eq!(
        twin.arn(),
        Some(
            format!("arn:aws:elasticache:{DR_REGION}:123456789012:serverlesscache:{PRIMARY_CACHE}")
                .as_str()
        )
    );
    let twin = wait_available(&ec, PRIMARY_CACHE, DEADLINE).await;
    let primary = aws_sdk_elasticache::Client::new(&sdk(&t.lab, PRIMARY_REGION, false).await);
    let original = wait_available(&primary, PRIMARY_CACHE, DEADLINE).await;
    assert_ne!(
        twin.endpoint().and_then(|e| e.address()),
        original.endpoint().and_then(|e| e.address())
    );
    let regions: Vec<String> = t
        .lab
        .current_info()
        .caches
        .iter()
        .filter(|c| c.name == PRIMARY_CACHE)
        .map(|c| c.region.clone())
        .collect();
    assert_eq!(
        regions,
        vec![PRIMARY_REGION.to_string(), DR_REGION.to_string()]
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_checks_usage_limits_tags_and_names() {
    use aws_sdk_elasticache::types::{
        CacheUsageLimits, DataStorage, DataStorageUnit, EcpuPerSecond, Tag,
    };
    let t = lab(|o| o).await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, false).await);
    let storage = |max: i32, unit: &str| {
        CacheUsageLimits::builder()
            .data_storage(
                DataStorage::builder()
                    .maximum(max)
                    .unit(DataStorageUnit::from(unit))
                    .build(),
            )
            .build()
    };
    let ecpu = |min: i32, max: i32| {
        CacheUsageLimits::builder()
            .ecpu_per_second(EcpuPerSecond::builder().minimum(min).maximum(max).build())
            .build()
    };
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let base = |name: &str| {
        ec.create_serverless_cache()
            .serverless_cache_name(name)
            .engine("valkey")
    };
    let cases = [
        (
            base("s0").cache_usage_limits(storage(0, "GB")),
            "InvalidParameterValue",
        ),
        (
            base("s1").cache_usage_limits(storage(5001, "GB")),
            "InvalidParameterValue",
        ),
        (
            base("s2").cache_usage_limits(storage(10, "MB")),
            "InvalidParameterValue",
        ),
        (
            base("e0").cache_usage_limits(ecpu(999, 5000)),
            "InvalidParameterValue",
        ),
        (
            base("e1").cache_usage_limits(ecpu(1000, 15_000_001)),
            "InvalidParameterValue",
        ),
        (
            base("e2").cache_usage_limits(ecpu(9000, 5000)),
            "InvalidParameterCombination",
        ),
        (
            base("t0").tags(tag(&"k".repeat(129), "v")),
            "InvalidParameterValue",
        ),
        (
            base("t1").tags(tag("k", &"v".repeat(257))),
            "InvalidParameterValue",
        ),
        (
            base("t2").tags(tag("k", "semi;colon")),
            "InvalidParameterValue",
        ),
        (
            base("t3").tags(tag("Aws:Owner", "me")),
            "InvalidParameterValue",
        ),
        (
            (0..51).fold(base("t4"), |b, i| b.tags(tag(&format!("k{i}"), "v"))),
            "TagQuotaPerResourceExceeded",
        ),
        (
            base("k0").kms_key_id("alias/valkey-dr-lab"),
            "InvalidParameterValue",
        ),
        (
            base("k1").kms_key_id("arn:aws:kms:us-west-2:123456789012:alias/valkey-dr-lab"),
            "InvalidParameterValue",
        ),
        (
            base("k2").kms_key_id(valkey_dr_lab::LAB_KMS_KEY_ID),
            "InvalidParameterValue",
        ),
        (base("1starts-with-digit"), "InvalidParameterValue"),
        (base("two--hyphens"), "InvalidParameterValue"),
        (base("ends-with-hyphen-"), "InvalidParameterValue"),
        (base(&"n".repeat(41)), "InvalidParameterValue"),
    ];
    for (request, expected) in cases {
        let name = request
            .get_serverless_cache_name()
            .clone()
            .unwrap_or_default();
        let result = request.send().await;
        assert_eq!(
            error(&result).map(|(code, _)| code).as_deref(),
            Some(expected),
            "{name}"
        );
        assert_eq!(last(&t.lab, "CreateServerlessCache").status, 400, "{name}");
    }
    // The edges are accepted: 1 and 5000 GB, 1000 and 15 000 000 ECPU, 50 tags of the full
    // character set.
    base("edge-storage")
        .cache_usage_limits(storage(5000, "GB"))
        .send()
        .await
        .expect("5000 GB");
    base("edge-ecpu")
        .cache_usage_limits(ecpu(1000, 15_000_000))
        .send()
        .await
        .expect("1000..15000000 ECPU");
    (0..50)
        .fold(base("edge-tags"), |b, i| {
            b.tags(tag(&format!("Team {i}_.:/=+-@"), "Zürich 1"))
        })
        .send()
        .await
        .expect("50 tags");
    base("edge-kms")
        .kms_key_id(valkey_dr_lab::config::lab_kms_key_arn(DR_REGION))
        .send()
        .await
        .expect("the key's ARN");
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_lag_zero_shows_a_new_cache_at_once() {
    let t = lab(|o| LabOptions {
        describe_lag: Duration::ZERO,
        ..o
    })
    .await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, false).await);
    create(&ec, "seen-at-once").await;
    let out = ec
        .describe_serverless_caches()
        .serverless_cache_name("seen-at-once")
        .send()
        .await
        .expect("seen at once");
    assert_eq!(out.serverless_caches()[0].status(), Some("creating"));
    t.lab.shutdown().await;
}

/// Waits out Route 53's rate, so the next call is judged on its own.
async fn quiet() {
    sleep(Duration::from_millis(1100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_answers_as_aws_does_by_default() {
    let t = lab(|o| o).await;
    let once = aws_sdk_route53::Client::new(&sdk(&t.lab, "us-east-1", false).await);
    let r53 = aws_sdk_route53::Client::new(&sdk(&t.lab, "us-east-1", true).await);
    let lock = "_valkey-dr-lock.valkey.lab.internal.";

    // PriorRequestNotComplete: a change right behind the previous one.
    let first = send(
        &once,
        vec![change(
            ChangeAction::Create,
            rrset(lock, RrType::Txt, 30, &["\"a\""]),
        )],
        None,
    )
    .await;
    let id = first.expect("the first change");
    let second = send(
        &once,
        vec![change(
            ChangeAction::Upsert,
            rrset(lock, RrType::Txt, 30, &["\"b\""]),
        )],
        None,
    )
    .await;
    assert_eq!(
        error(&second),
        pair(
            "PriorRequestNotComplete",
            "The request was rejected because Route 53 was still processing a prior request."
        )
    );
    assert_eq!(last(&t.lab, "ChangeResourceRecordSets").status, 400);
    quiet().await;
    send(
        &once,
        vec![change(
            ChangeAction::Upsert,
            rrset(lock, RrType::Txt, 30, &["\"b\""]),
        )],
        None,
    )
    .await
    .expect("a change a moment later");

    // GetChange: /change/C…, PENDING then INSYNC; an unknown id is NoSuchChange (404).
    assert!(
        id.starts_with("/change/C") && id.len() == "/change/".len() + 14,
        "{id}"
    );
    quiet().await;
    let until = Instant::now() + DEADLINE;
    while r53
        .get_change()
        .id(&id)
        .send()
        .await
        .expect("GetChange")
        .change_info()
        .map(|c| c.status().clone())
        != Some(ChangeStatus::Insync)
    {
        assert!(Instant::now() < until, "{id} never INSYNC");
        sleep(Duration::from_millis(300)).await;
    }
    let unknown = r53.get_change().id("/change/CNOSUCHCHANGE01").send().await;
    assert_eq!(
        error(&unknown).map(|(code, _)| code).as_deref(),
        Some("NoSuchChange")
    );
    assert_eq!(last(&t.lab, "GetChange").status, 404);

    // Throttling: five requests a second for the whole account.
    quiet().await;
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(error(&once.get_change().id(&id).send().await));
    }
    let throttled = answers
        .iter()
        .filter(|a| **a == pair("Throttling", "Rate exceeded"))
        .count();
    assert!(throttled >= 4, "10 calls at once, 5 allowed: {answers:?}");
    assert!(
        answers
            .iter()
            .all(|a| a.is_none() || *a == pair("Throttling", "Rate exceeded")),
        "{answers:?}"
    );
    quiet().await;
    once.get_change()
        .id(&id)
        .send()
        .await
        .expect("a second later the rate allows a call");

    // InvalidChangeBatch, worded as AWS words it.
    let current = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(RECORD)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
        .expect("the record");
    let set = current.resource_record_sets()[0].clone();
    let (ttl, value) = (
        set.ttl().expect("ttl"),
        set.resource_records()[0].value().to_owned(),
    );
    let refusals = [
        (
            vec![change(
                ChangeAction::Delete,
                rrset("gone.lab.internal", RrType::Cname, 30, &["x.example."]),
            )],
            "[Tried to delete resource record set [name='gone.lab.internal.', type='CNAME'] but it was not found]",
        ),
        (
            vec![change(
                ChangeAction::Delete,
                rrset(RECORD, RrType::Cname, ttl, &["other.example."]),
            )],
            "[Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but the values provided do not match the current values]",
        ),
        (
            vec![change(
                ChangeAction::Create,
                rrset(RECORD, RrType::Cname, ttl, &[&value]),
            )],
            "[Tried to create resource record set [name='valkey.lab.internal.', type='CNAME'] but it already exists]",
        ),
        (
            vec![change(
                ChangeAction::Create,
                rrset("www.example.com", RrType::Cname, 30, &["x.example."]),
            )],
            "[RRSet with DNS name www.example.com. is not permitted in zone lab.internal.]",
        ),
        (
            vec![change(
                ChangeAction::Create,
                rrset(
                    "two.lab.internal",
                    RrType::Cname,
                    30,
                    &["a.example.", "b.example."],
                ),
            )],
            "[The request contains an invalid set of changes for a resource record set 'CNAME two.lab.internal.']",
        ),
    ];
    for (changes, message) in refusals {
        let refused = send(&r53, changes, None).await;
        assert_eq!(error(&refused), pair("InvalidChangeBatch", message));
        let call = last(&t.lab, "ChangeResourceRecordSets");
        assert_eq!(call.status, 400);
        let body = &call.http.expect("the exchange is logged").body;
        assert!(body.contains("<Type>Sender</Type>"), "{body}");
    }
    let negative = send(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            rrset("ttl.lab.internal", RrType::A, -1, &["127.0.0.1"]),
        )],
        None,
    )
    .await;
    assert_eq!(
        error(&negative).map(|(code, _)| code).as_deref(),
        Some("InvalidInput")
    );

    // Names come back with octal escapes: `*` as \052.
    send(
        &r53,
        vec![change(
            ChangeAction::Create,
            rrset("*.w.lab.internal", RrType::A, 30, &["127.0.0.1"]),
        )],
        None,
    )
    .await
    .expect("a wildcard");
    let listed = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name("*.w.lab.internal.")
        .start_record_type(RrType::A)
        .max_items(1)
        .send()
        .await
        .expect("the wildcard");
    assert_eq!(
        listed.resource_record_sets()[0].name(),
        "\\052.w.lab.internal."
    );

    let throttled_calls = t
        .lab
        .calls()
        .iter()
        .filter(|c| {
            c.service == AwsService::Route53 && c.error_code.as_deref() == Some("Throttling")
        })
        .count();
    assert!(throttled_calls >= 4);
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_knobs_turn_rate_and_prior_request_off() {
    let t = lab(|o| LabOptions {
        route53_rate: None,
        prior_request_window: Duration::ZERO,
        ..o
    })
    .await;
    let once = aws_sdk_route53::Client::new(&sdk(&t.lab, "us-east-1", false).await);
    let lock = "_valkey-dr-lock.valkey.lab.internal.";
    for i in 0..12 {
        let value = format!("\"{i}\"");
        send(
            &once,
            vec![change(
                ChangeAction::Upsert,
                rrset(lock, RrType::Txt, 30, &[&value]),
            )],
            None,
        )
        .await
        .expect("back-to-back changes, neither throttled nor refused");
    }
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_faults_still_work_under_the_strict_rules() {
    use valkey_dr_lab::Fault;
    let t = lab(|o| LabOptions {
        describe_lag: Duration::from_millis(300),
        ..o
    })
    .await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, false).await);
    let status = |name: &'static str| {
        let ec = ec.clone();
        async move {
            ec.describe_serverless_caches()
                .serverless_cache_name(name)
                .send()
                .await
                .ok()
                .and_then(|o| o.serverless_caches().first().cloned())
        }
    };

    // provision-fail: create-failed, with no endpoint and no readable tags.
    t.lab
        .fault(Fault::ProvisionFail)
        .await
        .expect("provision-fail");
    let failed = create(&ec, "will-fail").await;
    let until = Instant::now() + DEADLINE;
    let cache = loop {
        if let Some(c) = status("will-fail").await
            && c.status() == Some("create-failed")
        {
            break c;
        }
        assert!(Instant::now() < until, "never create-failed");
        sleep(POLL).await;
    };
    assert!(cache.endpoint().is_none());
    let tags = ec
        .list_tags_for_resource()
        .resource_name(failed.arn().expect("an ARN"))
        .send()
        .await;
    assert_eq!(
        error(&tags).map(|(code, _)| code).as_deref(),
        Some("InvalidServerlessCacheStateFault")
    );

    // provision-stuck: creating for ever (well past the provision delay and the lag).
    t.lab
        .fault(Fault::ProvisionStuck)
        .await
        .expect("provision-stuck");
    create(&ec, "will-stick").await;
    sleep(Duration::from_secs(1)).await;
    let stuck = status("will-stick").await.expect("visible after the lag");
    assert_eq!(stuck.status(), Some("creating"));

    // api-error and region-outage answer before any rule is looked at.
    t.lab
        .fault(Fault::ApiError {
            service: AwsService::Elasticache,
            action: "DescribeServerlessCaches".into(),
            code: "Throttling".into(),
            times: Some(1),
            lasting: None,
        })
        .await
        .expect("api-error");
    let listed = ec.describe_serverless_caches().max_results(1).send().await;
    assert_eq!(error(&listed), pair("Throttling", "Rate exceeded"));
    t.lab
        .fault(Fault::RegionOutage {
            region: DR_REGION.into(),
            route53: false,
        })
        .await
        .expect("region-outage");
    let down = ec.describe_serverless_caches().send().await;
    assert_eq!(
        error(&down).map(|(code, _)| code).as_deref(),
        Some("ServiceUnavailable")
    );
    assert_eq!(last(&t.lab, "DescribeServerlessCaches").status, 503);
    t.lab.shutdown().await;
}

/// A client config for the Route 53 fault tests: each attempt gives up after
/// `attempt_timeout` (`None`: it waits for the answer, up to the operation's minute), and
/// the SDK's standard retry makes at most `attempts` of them, 100 ms apart at first.
async fn sdk_with(lab: &Lab, attempts: u32, attempt_timeout: Option<Duration>) -> SdkConfig {
    let timeouts = TimeoutConfig::builder().operation_timeout(Duration::from_secs(60));
    let timeouts = match attempt_timeout {
        Some(limit) => timeouts.operation_attempt_timeout(limit),
        None => timeouts,
    };
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(PRIMARY_REGION))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(
            RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(100)),
        )
        .timeout_config(timeouts.build())
        .load()
        .await
}

/// The record's CNAME target as the lab's DNS server answers it over UDP, if it answers.
async fn record_over_dns(lab: &Lab) -> Option<String> {
    let lookup = support::uncached_resolver(lab.info().dns)
        .lookup(RECORD, RecordType::CNAME)
        .await
        .ok()?;
    lookup
        .record_iter()
        .find(|r| r.record_type() == RecordType::CNAME)
        .map(|r| r.data().to_string())
}

/// The primary's endpoint, as a fully qualified name.
fn primary_endpoint(lab: &Lab) -> String {
    let endpoint = &lab
        .info()
        .cache(PRIMARY_CACHE)
        .expect("the lab has its primary")
        .endpoint;
    format!("{}.", endpoint.trim_end_matches('.'))
}

/// How many calls of `action` the lab has answered.
fn count(lab: &Lab, action: &str) -> usize {
    lab.calls().iter().filter(|c| c.action == action).count()
}

/// `ListResourceRecordSets` of the lab's record.
async fn list_record(
    r53: &aws_sdk_route53::Client,
) -> Result<
    aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsOutput,
    aws_sdk_route53::error::SdkError<
        aws_sdk_route53::operation::list_resource_record_sets::ListResourceRecordSetsError,
    >,
> {
    r53.list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(RECORD)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
}

/// Whether Route 53 (the lab's API) lists the TXT record `name`.
async fn txt_listed(r53: &aws_sdk_route53::Client, name: &str) -> bool {
    r53.list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(name)
        .start_record_type(RrType::Txt)
        .max_items(1)
        .send()
        .await
        .ok()
        .and_then(|out| out.resource_record_sets().first().cloned())
        .is_some_and(|set| set.name() == name && set.r#type() == &RrType::Txt)
}

fn unavailable() -> Option<(String, String)> {
    pair(
        "ServiceUnavailable",
        "The request has failed due to a temporary failure of the server.",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_control_down_fails_every_api_call_while_its_dns_answers() {
    use valkey_dr_lab::Fault;
    let t = lab(|o| o).await;
    let once = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 1, None).await);
    let thrice = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 3, None).await);
    let ec = aws_sdk_elasticache::Client::new(&sdk(&t.lab, PRIMARY_REGION, false).await);
    let primary = primary_endpoint(&t.lab);
    let txt = "down.lab.internal.";
    let upsert = || {
        vec![change(
            ChangeAction::Upsert,
            rrset(txt, RrType::Txt, 30, &["\"x\""]),
        )]
    };

    t.lab
        .fault(Fault::Route53ControlDown)
        .await
        .expect("route53-control-down");
    assert_eq!(error(&list_record(&once).await), unavailable());
    let call = last(&t.lab, "ListResourceRecordSets");
    assert_eq!(call.status, 503);
    let body = call.http.expect("the exchange is logged").body;
    assert!(
        body.starts_with("<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">")
            && body.contains("<Type>Receiver</Type><Code>ServiceUnavailable</Code>"),
        "{body}"
    );
    assert_eq!(error(&send(&once, upsert(), None).await), unavailable());
    assert_eq!(last(&t.lab, "ChangeResourceRecordSets").status, 503);
    assert_eq!(
        error(&once.get_change().id("/change/CNOSUCHCHANGE01").send().await),
        unavailable(),
        "refused before the id is looked at"
    );
    assert_eq!(
        error(&once.get_hosted_zone().id(HOSTED_ZONE_ID).send().await),
        unavailable()
    );
    // An action the lab does not emulate is refused too: the whole endpoint is down.
    let zones = once.list_hosted_zones().send().await;
    assert_eq!(
        error(&zones).map(|(code, _)| code).as_deref(),
        Some("ServiceUnavailable")
    );

    // A server error: the SDK retries it (three attempts logged for one call).
    let before = count(&t.lab, "ListResourceRecordSets");
    assert_eq!(error(&list_record(&thrice).await), unavailable());
    assert_eq!(count(&t.lab, "ListResourceRecordSets") - before, 3);

    // The data plane answers: the zone's DNS over UDP, and ElastiCache's API.
    assert_eq!(record_over_dns(&t.lab).await, Some(primary.clone()));
    ec.describe_serverless_caches()
        .send()
        .await
        .expect("ElastiCache answers");

    t.lab
        .fault(Fault::Route53ControlUp)
        .await
        .expect("route53-control-up");
    let listed = list_record(&once).await.expect("the record lists again");
    assert_eq!(
        listed.resource_record_sets()[0].resource_records()[0].value(),
        primary
    );
    quiet().await;
    send(&once, upsert(), None)
        .await
        .expect("the change goes through again");
    assert_eq!(record_over_dns(&t.lab).await, Some(primary));
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_error_for_a_time_fails_every_call_until_it_ends() {
    use valkey_dr_lab::{Fault, LabError};
    let t = lab(|o| o).await;
    let once = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 1, None).await);
    let span = Duration::from_secs(2);
    let fault = |times, lasting| Fault::ApiError {
        service: AwsService::Route53,
        action: "ListResourceRecordSets".into(),
        code: "Throttling".into(),
        times,
        lasting,
    };

    // Exactly one of `times` and `for`, said plainly, over the control API's JSON too.
    for (bad, words) in [
        (fault(Some(2), Some(span)), "not both"),
        (fault(None, None), "`for`"),
    ] {
        match valkey_dr_lab::send_fault(t.lab.info().control, &bad).await {
            Err(LabError::Rejected {
                status, message, ..
            }) => {
                assert_eq!(status, 400);
                assert!(message.contains(words), "{message}");
            }
            other => panic!("{bad} was not refused: {other:?}"),
        }
    }

    let before = Instant::now();
    t.lab
        .fault(fault(None, Some(span)))
        .await
        .expect("api-error --for 2s");
    let after = Instant::now();
    let mut failed = 0;
    let until = after + span + DEADLINE;
    loop {
        let started = Instant::now();
        let listed = list_record(&once).await;
        let ended = Instant::now();
        if ended < before + span {
            assert_eq!(
                error(&listed),
                pair("Throttling", "Rate exceeded"),
                "a call {:?} into the span",
                ended - before
            );
            failed += 1;
        }
        if started > after + span {
            listed.expect("a call after the span passes");
            break;
        }
        // Other actions are not touched.
        if failed == 1 {
            once.get_hosted_zone()
                .id(HOSTED_ZONE_ID)
                .send()
                .await
                .expect("GetHostedZone during the span");
        }
        assert!(Instant::now() < until, "the span never ended");
        // Four calls a second: under Route 53's own rate, so every Throttling is the fault's.
        sleep(Duration::from_millis(250)).await;
    }
    assert!(failed >= 4, "only {failed} calls during the span");
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commit_then_drop_applies_the_change_and_the_client_never_hears() {
    use valkey_dr_lab::Fault;
    let t = lab(|o| o).await;
    let reader = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 3, None).await);
    let drop_next = |hold| Fault::CommitThenDrop {
        service: AwsService::Route53,
        action: "ChangeResourceRecordSets".into(),
        times: 1,
        hold,
    };
    let create = |name: &str| {
        vec![change(
            ChangeAction::Create,
            rrset(name, RrType::Txt, 30, &["\"owner\""]),
        )]
    };

    // A client that waits: the answer is held for `hold`, other requests are served
    // meanwhile, then the connection closes with nothing written, which the SDK retries as a
    // transient failure: the same CREATE again, refused now that the record exists.
    let hold = Duration::from_secs(3);
    t.lab
        .fault(drop_next(hold))
        .await
        .expect("commit-then-drop");
    let patient = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 2, None).await);
    let held = "held.lab.internal.";
    let started = Instant::now();
    let request = tokio::spawn({
        let changes = create(held);
        async move { send(&patient, changes, None).await }
    });
    let until = Instant::now() + DEADLINE;
    while !txt_listed(&reader, held).await {
        assert!(Instant::now() < until, "the change was never applied");
        sleep(Duration::from_millis(250)).await;
    }
    assert!(
        !request.is_finished(),
        "applied and listed while the answer is held"
    );
    let outcome = tokio::time::timeout(DEADLINE, request)
        .await
        .expect("the connection closes within the deadline")
        .expect("the request task");
    let waited = started.elapsed();
    assert_eq!(
        error(&outcome),
        pair(
            "InvalidChangeBatch",
            "[Tried to create resource record set [name='held.lab.internal.', type='TXT'] but it already exists]"
        )
    );
    assert!(
        waited >= hold && waited < hold + Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert_eq!(
        sent_twice(&t.lab, held),
        vec![(200, true), (400, false)],
        "applied unanswered, closed after the hold, then refused"
    );

    // A client that gives up after a second and sends the same request again: the first was
    // applied, so the second fails as AWS fails a CREATE of an existing record.
    quiet().await;
    t.lab
        .fault(drop_next(valkey_dr_lab::DEFAULT_HOLD))
        .await
        .expect("commit-then-drop");
    let impatient =
        aws_sdk_route53::Client::new(&sdk_with(&t.lab, 3, Some(Duration::from_secs(1))).await);
    let lock = "_valkey-dr-lock.valkey.lab.internal.";
    let resent = tokio::time::timeout(DEADLINE, send(&impatient, create(lock), None))
        .await
        .expect("the client's retries end within the deadline");
    assert_eq!(
        error(&resent),
        pair(
            "InvalidChangeBatch",
            "[Tried to create resource record set [name='_valkey-dr-lock.valkey.lab.internal.', type='TXT'] but it already exists]"
        )
    );
    assert!(
        txt_listed(&reader, lock).await,
        "the first CREATE was applied"
    );
    assert_eq!(
        sent_twice(&t.lab, lock),
        vec![(200, true), (400, false)],
        "applied unanswered, given up on, then refused"
    );
    t.lab.shutdown().await;
}

/// The status and `answer_dropped` of each `ChangeResourceRecordSets` naming `name`, after
/// checking that they are one request sent again unchanged.
fn sent_twice(lab: &Lab, name: &str) -> Vec<(u16, bool)> {
    let calls: Vec<Call> = lab
        .calls()
        .into_iter()
        .filter(|c| {
            c.action == "ChangeResourceRecordSets"
                && c.http
                    .as_ref()
                    .is_some_and(|h| h.request.body.contains(name))
        })
        .collect();
    let bodies: Vec<&str> = calls
        .iter()
        .filter_map(|c| c.http.as_ref().map(|h| h.request.body.as_str()))
        .collect();
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "the same request each time: {bodies:?}"
    );
    calls.iter().map(|c| (c.status, c.answer_dropped)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_us_east_1_outage_with_route53_takes_its_api_down_until_restored() {
    use valkey_dr_lab::{Fault, LabError};
    let t = lab(|o| o).await;
    let r53 = aws_sdk_route53::Client::new(&sdk_with(&t.lab, 1, None).await);
    let east = aws_sdk_elasticache::Client::new(&sdk(&t.lab, PRIMARY_REGION, false).await);
    let primary = primary_endpoint(&t.lab);

    // Route 53's control plane is in us-east-1: another region's outage cannot take it.
    let elsewhere = t
        .lab
        .fault(Fault::RegionOutage {
            region: DR_REGION.into(),
            route53: true,
        })
        .await;
    assert!(
        matches!(&elsewhere, Err(LabError::InvalidOption { reason, .. }) if reason.contains("us-east-1")),
        "{elsewhere:?}"
    );

    t.lab
        .fault(Fault::RegionOutage {
            region: PRIMARY_REGION.into(),
            route53: true,
        })
        .await
        .expect("region-outage us-east-1 --route53");
    assert_eq!(
        error(&east.describe_serverless_caches().send().await)
            .map(|(code, _)| code)
            .as_deref(),
        Some("ServiceUnavailable")
    );
    assert_eq!(error(&list_record(&r53).await), unavailable());
    assert_eq!(last(&t.lab, "ListResourceRecordSets").status, 503);
    assert_eq!(record_over_dns(&t.lab).await, Some(primary));

    t.lab
        .fault(Fault::RegionRestore {
            region: PRIMARY_REGION.into(),
        })
        .await
        .expect("region-restore");
    east.describe_serverless_caches()
        .send()
        .await
        .expect("ElastiCache answers again");
    list_record(&r53).await.expect("Route 53 answers again");
    t.lab.shutdown().await;
}

/// A command straight to a cache's valkey-server (its unix socket): what a client sends
/// through the front once authenticated, as the user every client runs as.
async fn on_server(lab: &Lab, cache: &str, args: &[&str]) -> redis::RedisResult<redis::Value> {
    let socket = lab.valkey_socket(cache).expect("the cache's socket");
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    let mut conn = tokio::time::timeout(DEADLINE, client.get_multiplexed_async_connection())
        .await
        .expect("connect in time")
        .expect("connect");
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query_async(&mut conn).await
}

/// Rows E10 and E11: every region's users answer `DescribeUsers` with the lab's access
/// string, and every cache's server (the primary, and one built later through the API)
/// applies it, so that the API and the cache agree: by default `FLUSHALL ASYNC` and
/// `DBSIZE` answer as on a serverless cache; with `-flushall` the flush is refused with
/// Valkey's own `NOPERM` and nothing is emptied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_carry_an_access_string_that_the_caches_apply() {
    let open = lab(|o| o).await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&open.lab, PRIMARY_REGION, false).await);
    let users = ec.describe_users().send().await.expect("DescribeUsers");
    let default = users
        .users()
        .iter()
        .find(|u| u.user_id() == Some("default"))
        .expect("the default user");
    assert_eq!(default.user_name(), Some("default"));
    assert_eq!(
        default.access_string(),
        Some(valkey_dr_lab::LAB_ACCESS_STRING)
    );
    assert_eq!(default.user_group_ids(), [valkey_dr_lab::LAB_USER_GROUP_ID]);
    assert_eq!(default.status(), Some("active"));
    assert_eq!(
        error(&ec.describe_users().user_id("nobody").send().await),
        pair("UserNotFound", "User nobody not found.")
    );
    on_server(&open.lab, PRIMARY_CACHE, &["SET", "session:a", "1"])
        .await
        .expect("SET");
    assert_eq!(
        on_server(&open.lab, PRIMARY_CACHE, &["FLUSHALL", "ASYNC"]).await,
        Ok(redis::Value::Okay)
    );
    assert_eq!(
        on_server(&open.lab, PRIMARY_CACHE, &["DBSIZE"]).await,
        Ok(redis::Value::Int(0))
    );
    open.lab.shutdown().await;

    let denied = "on ~* +@all -flushall";
    let closed = lab(|o| LabOptions {
        access_string: denied.into(),
        ..o
    })
    .await;
    let ec = aws_sdk_elasticache::Client::new(&sdk(&closed.lab, DR_REGION, false).await);
    let users = ec.describe_users().user_id("default").send().await.unwrap();
    assert_eq!(users.users()[0].access_string(), Some(denied));
    ec.create_serverless_cache()
        .serverless_cache_name("app-sessions-dr")
        .engine("valkey")
        .send()
        .await
        .expect("create");
    wait_available(&ec, "app-sessions-dr", DEADLINE).await;
    for cache in [PRIMARY_CACHE, "app-sessions-dr"] {
        on_server(&closed.lab, cache, &["SET", "session:b", "1"])
            .await
            .expect("SET");
        let refused = on_server(&closed.lab, cache, &["FLUSHALL", "ASYNC"])
            .await
            .expect_err("FLUSHALL refused");
        assert_eq!(refused.code(), Some("NOPERM"), "{cache}: {refused}");
        assert_eq!(
            on_server(&closed.lab, cache, &["DBSIZE"]).await,
            Ok(redis::Value::Int(1)),
            "{cache}: nothing emptied"
        );
    }
    closed.lab.shutdown().await;
}
