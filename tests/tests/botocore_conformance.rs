//! The lab's AWS traffic checked against botocore's service models, the shapes AWS publishes
//! for every SDK.
//!
//! The real `aws-sdk-elasticache` and `aws-sdk-route53` clients send the lab every kind of
//! request the agent sends (a full DR `CreateServerlessCache`, `DescribeServerlessCaches` by
//! name and as a list, `ListTagsForResource`, `DeleteServerlessCache`,
//! `ListResourceRecordSets` from a name and type, `ChangeResourceRecordSets` with CREATE,
//! DELETE and UPSERT of CNAME and TXT, `GetChange`) and draw every kind of error the lab gives.
//! The lab's call log, with each whole request and answer, then goes to
//! `tests/conformance/botocore_check.py`, which validates each request against the
//! operation's input shape and parses each answer with botocore's own parser. The script
//! first proves on deliberately bad calls that it catches violations.
//!
//! botocore is installed on demand into `target/botocore` (pip, file-locked), so the test runs
//! on a fresh machine. The check itself is `valkey_dr_lab::botocore_check`, which any suite can
//! run on its own lab's calls.

mod support;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::operation::create_serverless_cache::builders::CreateServerlessCacheFluentBuilder;
use aws_sdk_elasticache::types::{
    CacheUsageLimits, DataStorage, DataStorageUnit, EcpuPerSecond, Tag,
};
use aws_sdk_route53::types::{ChangeAction, ChangeStatus, RrType};
use support::raw_aws::{change, rrset, send, wait_available};
use tokio::time::{Instant, sleep};
use valkey_dr_lab::config::HOSTED_ZONE_ID;
use valkey_dr_lab::{AwsService, Call, Fault, Lab, LabOptions, RECORD, botocore_check};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);
const DR_REGION: &str = "us-west-2";
const OTHER_REGION: &str = "us-east-2";
const DR_CACHE: &str = "app-sessions-dr";
const LOCK: &str = "_valkey-dr-lock.valkey.lab.internal.";
const NEW_TARGET: &str = "app-sessions-dr-x1y2z3.serverless.usw2.cache.amazonaws.com.";

/// `retries`: the SDK's standard retries (what the agent runs with, and what rides out the
/// lab's Route 53 rate and PriorRequestNotComplete); without, each call is one request.
async fn sdk(lab: &Lab, region: &str, retries: bool) -> SdkConfig {
    let retry = if retries {
        RetryConfig::standard().with_max_attempts(8)
    } else {
        RetryConfig::disabled()
    };
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(retry)
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(60))
                .build(),
        )
        .load()
        .await
}

fn code<T, E: ProvideErrorMetadata>(result: &Result<T, E>) -> Option<String> {
    result
        .as_ref()
        .err()
        .and_then(|e| e.code())
        .map(str::to_owned)
}

fn tag(key: &str, value: &str) -> Tag {
    Tag::builder().key(key).value(value).build()
}

fn limits(
    storage_gb: i32,
    unit: DataStorageUnit,
    ecpu_min: i32,
    ecpu_max: i32,
) -> CacheUsageLimits {
    CacheUsageLimits::builder()
        .data_storage(
            DataStorage::builder()
                .maximum(storage_gb)
                .unit(unit)
                .build(),
        )
        .ecpu_per_second(
            EcpuPerSecond::builder()
                .minimum(ecpu_min)
                .maximum(ecpu_max)
                .build(),
        )
        .build()
}

/// The agent's full DR spec (agent/src/executor/sdk.rs sends every one of these).
fn full_spec(
    client: &aws_sdk_elasticache::Client,
    name: &str,
) -> CreateServerlessCacheFluentBuilder {
    client
        .create_serverless_cache()
        .serverless_cache_name(name)
        .description("valkey-dr failover f-1 of app-sessions")
        .engine("valkey")
        .major_engine_version("8")
        .subnet_ids("subnet-lab0001")
        .subnet_ids("subnet-lab0002")
        .security_group_ids("sg-lab0001")
        .kms_key_id("arn:aws:kms:us-west-2:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab")
        .user_group_id("app-sessions-users")
        .snapshot_arns_to_restore(
            "arn:aws:elasticache:us-west-2:123456789012:serverlesscachesnapshot:nightly",
        )
        .snapshot_retention_limit(7)
        .daily_snapshot_time("04:00")
        .cache_usage_limits(limits(10, DataStorageUnit::Gb, 1000, 5000))
        .tags(tag("app", "sessions"))
        .tags(tag("valkey-dr:failover-id", "f-1"))
        .tags(tag("owner", "platform@example.com"))
}

/// The ElastiCache side: every request the agent sends, and every error the lab gives.
async fn elasticache_traffic(lab: &Lab) {
    let ec = aws_sdk_elasticache::Client::new(&sdk(lab, DR_REGION, false).await);
    let other = aws_sdk_elasticache::Client::new(&sdk(lab, OTHER_REGION, false).await);

    let created = full_spec(&ec, DR_CACHE)
        .send()
        .await
        .expect("the DR cache is created");
    let created = created.serverless_cache().expect("the cache is returned");
    assert_eq!(created.status(), Some("creating"));
    assert!(created.endpoint().is_none(), "no endpoint while creating");
    let arn = created.arn().expect("an ARN").to_owned();

    let by_name = ec
        .describe_serverless_caches()
        .serverless_cache_name(DR_CACHE);
    assert_eq!(
        code(&by_name.send().await),
        Some("ServerlessCacheNotFoundFault".into()),
        "a new cache is not seen at once"
    );
    assert_eq!(
        code(&ec.list_tags_for_resource().resource_name(&arn).send().await),
        Some("InvalidServerlessCacheStateFault".into())
    );
    assert_eq!(
        code(&ec.describe_serverless_caches().max_results(1).send().await),
        Some("InvalidParameterValue".into())
    );
    ec.describe_serverless_caches()
        .max_results(20)
        .send()
        .await
        .expect("a listing of 20");
    assert_eq!(
        code(&full_spec(&ec, DR_CACHE).send().await),
        Some("ServerlessCacheAlreadyExistsFault".into())
    );
    let refused = [
        (
            full_spec(&ec, "bad-storage").cache_usage_limits(limits(
                6000,
                DataStorageUnit::Gb,
                1000,
                5000,
            )),
            "InvalidParameterValue",
        ),
        (
            // Outside the model's enum: listed as deliberately invalid below.
            full_spec(&ec, "bad-unit").cache_usage_limits(limits(
                10,
                DataStorageUnit::from("TB"),
                1000,
                5000,
            )),
            "InvalidParameterValue",
        ),
        (
            full_spec(&ec, "bad-ecpu").cache_usage_limits(limits(
                10,
                DataStorageUnit::Gb,
                6000,
                5000,
            )),
            "InvalidParameterCombination",
        ),
        (
            full_spec(&ec, "bad-tag").tags(tag("aws:reserved", "x")),
            "InvalidParameterValue",
        ),
        (
            (0..48).fold(full_spec(&ec, "many-tags"), |b, i| {
                b.tags(tag(&format!("k{i}"), "v"))
            }),
            "TagQuotaPerResourceExceeded",
        ),
    ];
    for (request, expected) in refused {
        assert_eq!(code(&request.send().await), Some(expected.to_string()));
    }

    // The same name in a second region is another cache.
    full_spec(&other, DR_CACHE)
        .send()
        .await
        .expect("the same name is free in another region");
    assert_eq!(
        code(
            &other
                .delete_serverless_cache()
                .serverless_cache_name(DR_CACHE)
                .send()
                .await
        ),
        Some("InvalidServerlessCacheStateFault".into()),
        "a creating cache cannot be deleted"
    );

    let available = wait_available(&ec, DR_CACHE, DEADLINE).await;
    let endpoint = available
        .endpoint()
        .expect("an available cache has an endpoint");
    let reader = available.reader_endpoint().expect("and a reader endpoint");
    assert_eq!(reader.address(), endpoint.address());
    assert_eq!(reader.port(), Some(6380));
    wait_available(&other, DR_CACHE, DEADLINE).await;
    let tags = ec
        .list_tags_for_resource()
        .resource_name(&arn)
        .send()
        .await
        .expect("tags of an available cache");
    assert!(
        tags.tag_list()
            .iter()
            .any(|t| t.key() == Some("valkey-dr:failover-id"))
    );
    assert_eq!(
        code(
            &ec.list_tags_for_resource()
                .resource_name("arn:aws:s3:::bucket")
                .send()
                .await
        ),
        Some("InvalidARN".into())
    );
    assert_eq!(
        code(
            &ec.delete_serverless_cache()
                .serverless_cache_name("no-such-cache")
                .send()
                .await
        ),
        Some("ServerlessCacheNotFoundFault".into())
    );

    lab.fault(Fault::ApiError {
        service: AwsService::Elasticache,
        action: "DescribeServerlessCaches".into(),
        code: "InternalError".into(),
        times: Some(1),
        lasting: None,
    })
    .await
    .expect("api-error");
    assert_eq!(
        code(&ec.describe_serverless_caches().send().await),
        Some("InternalError".into())
    );
    lab.fault(Fault::RegionOutage {
        region: OTHER_REGION.into(),
        route53: false,
    })
    .await
    .expect("region-outage");
    assert_eq!(
        code(&other.describe_serverless_caches().send().await),
        Some("ServiceUnavailable".into())
    );
    lab.fault(Fault::RegionRestore {
        region: OTHER_REGION.into(),
    })
    .await
    .expect("region-restore");

    for client in [&ec, &other] {
        client
            .delete_serverless_cache()
            .serverless_cache_name(DR_CACHE)
            .send()
            .await
            .expect("an available cache is deleted");
    }
}

/// The Route 53 side: the lease, the compare-and-swap, its wait, and every refusal.
async fn route53_traffic(lab: &Lab) {
    let r53 = aws_sdk_route53::Client::new(&sdk(lab, "us-east-1", true).await);
    let once = aws_sdk_route53::Client::new(&sdk(lab, "us-east-1", false).await);

    let listed = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(RECORD)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
        .expect("the record is listed");
    let current = listed
        .resource_record_sets()
        .first()
        .expect("the record")
        .clone();
    let ttl = current.ttl().expect("a TTL");
    let old = current.resource_records()[0].value().to_owned();

    send(
        &r53,
        vec![change(
            ChangeAction::Create,
            rrset(LOCK, RrType::Txt, 30, &["\"owner=a\" \"exp=1\""]),
        )],
        Some("valkey-dr botocore conformance"),
    )
    .await
    .expect("the lease is taken");
    lab.fault(Fault::ApiError {
        service: AwsService::Route53,
        action: "ChangeResourceRecordSets".into(),
        code: "PriorRequestNotComplete".into(),
        times: Some(1),
        lasting: None,
    })
    .await
    .expect("api-error");
    let busy = send(
        &once,
        vec![change(
            ChangeAction::Upsert,
            rrset(LOCK, RrType::Txt, 30, &["\"owner=b\""]),
        )],
        Some("valkey-dr botocore conformance"),
    )
    .await;
    assert_eq!(code(&busy), Some("PriorRequestNotComplete".into()));

    // The control plane down: each action's 503 parses as Route 53's ServiceUnavailable.
    lab.fault(Fault::Route53ControlDown)
        .await
        .expect("route53-control-down");
    let down = once
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .send()
        .await;
    assert_eq!(code(&down), Some("ServiceUnavailable".into()));
    let down = send(
        &once,
        vec![change(
            ChangeAction::Upsert,
            rrset(LOCK, RrType::Txt, 30, &["\"owner=c\""]),
        )],
        None,
    )
    .await;
    assert_eq!(code(&down), Some("ServiceUnavailable".into()));
    assert_eq!(
        code(&once.get_change().id("/change/CDOWN000000001").send().await),
        Some("ServiceUnavailable".into())
    );
    lab.fault(Fault::Route53ControlUp)
        .await
        .expect("route53-control-up");

    let swap = vec![
        change(
            ChangeAction::Delete,
            rrset(RECORD, RrType::Cname, ttl, &[&old]),
        ),
        change(
            ChangeAction::Create,
            rrset(RECORD, RrType::Cname, 30, &[NEW_TARGET]),
        ),
    ];
    let id = send(&r53, swap.clone(), Some("valkey-dr botocore conformance"))
        .await
        .expect("the swap is accepted");
    let until = Instant::now() + DEADLINE;
    loop {
        let out = r53.get_change().id(&id).send().await.expect("GetChange");
        if out.change_info().map(|c| c.status()) == Some(&ChangeStatus::Insync) {
            break;
        }
        assert!(Instant::now() < until, "{id} never INSYNC");
        sleep(Duration::from_millis(300)).await;
    }
    send(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            rrset(LOCK, RrType::Txt, 60, &["\"owner=a\" \"exp=2\""]),
        )],
        Some("valkey-dr botocore conformance"),
    )
    .await
    .expect("the lease is renewed");

    let refusals = [
        swap,
        vec![change(
            ChangeAction::Delete,
            rrset("nothing.lab.internal.", RrType::Cname, 30, &["x.example."]),
        )],
        vec![change(
            ChangeAction::Create,
            rrset("www.example.com.", RrType::A, 30, &["127.0.0.1"]),
        )],
        vec![change(
            ChangeAction::Create,
            rrset(
                "two.lab.internal.",
                RrType::Cname,
                30,
                &["a.example.", "b.example."],
            ),
        )],
    ];
    for changes in refusals {
        assert_eq!(
            code(&send(&r53, changes, Some("valkey-dr botocore conformance")).await),
            Some("InvalidChangeBatch".into())
        );
    }
    // Outside the model's TTL range: listed as deliberately invalid below.
    let negative = send(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            rrset("ttl.lab.internal.", RrType::A, -1, &["127.0.0.1"]),
        )],
        Some("valkey-dr botocore conformance"),
    )
    .await;
    assert_eq!(code(&negative), Some("InvalidInput".into()));
    assert_eq!(
        code(&r53.get_change().id("/change/CNOSUCHCHANGE01").send().await),
        Some("NoSuchChange".into())
    );
    assert_eq!(
        code(
            &r53.list_resource_record_sets()
                .hosted_zone_id("ZNOSUCHZONE")
                .send()
                .await
        ),
        Some("NoSuchHostedZone".into())
    );

    send(
        &r53,
        vec![change(
            ChangeAction::Create,
            rrset("*.w.lab.internal.", RrType::A, 30, &["127.0.0.1"]),
        )],
        Some("valkey-dr botocore conformance"),
    )
    .await
    .expect("a wildcard record");
    let wild = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name("\\052.w.lab.internal.")
        .start_record_type(RrType::A)
        .max_items(1)
        .send()
        .await
        .expect("the wildcard is listed");
    assert_eq!(
        wild.resource_record_sets()[0].name(),
        "\\052.w.lab.internal."
    );

    let mut codes = Vec::new();
    for _ in 0..12 {
        codes.push(code(&once.get_change().id(&id).send().await));
    }
    assert!(
        codes.iter().any(|c| c.as_deref() == Some("Throttling")),
        "12 calls at once exceed Route 53's rate: {codes:?}"
    );
}

/// Requests sent on purpose outside botocore's model, to draw the lab's refusal: the checker
/// parses their answers but does not validate them.
fn deliberately_invalid(call: &Call) -> bool {
    let body = call
        .http
        .as_ref()
        .map(|h| h.request.body.as_str())
        .unwrap_or("");
    body.contains("CacheUsageLimits.DataStorage.Unit=TB") || body.contains("<TTL>-1</TTL>")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lab_traffic_conforms_to_botocore_models() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::start(LabOptions {
        seed: Some(11),
        provision_delay: Duration::from_millis(500),
        insync_delay: Duration::from_secs(1),
        ..LabOptions::new(dir.path())
    })
    .await
    .expect("the lab starts");

    elasticache_traffic(&lab).await;
    route53_traffic(&lab).await;

    let calls = lab.calls();
    for action in [
        "CreateServerlessCache",
        "DescribeServerlessCaches",
        "DeleteServerlessCache",
        "ListTagsForResource",
        "ListResourceRecordSets",
        "ChangeResourceRecordSets",
        "GetChange",
    ] {
        assert!(
            calls.iter().any(|c| c.action == action && c.succeeded()),
            "no successful {action} to check"
        );
    }
    let invalid: Vec<u64> = calls
        .iter()
        .filter(|c| deliberately_invalid(c))
        .map(|c| c.seq)
        .collect();
    // Two requests, sent again by the SDK when a try met Route 53's rate.
    assert!(
        invalid.len() >= 2,
        "the two deliberately invalid requests are recognised: {invalid:?}"
    );
    let scratch = dir.path().to_owned();
    let report = tokio::task::spawn_blocking(move || botocore_check(&calls, &invalid, &scratch))
        .await
        .expect("the check task")
        .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("{report}");
    assert!(report.contains("checked"), "the check ran: {report}");
    lab.shutdown().await;
}
