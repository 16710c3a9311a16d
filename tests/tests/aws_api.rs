//! The lab's AWS emulation, spoken to by the real `aws-sdk-elasticache` and `aws-sdk-route53`
//! clients over loopback: what the executor will rely on, asserted the way the executor will
//! see it (typed SDK errors, parsed outputs), plus the DNS and TLS side effects.
//!
//! Every test has its own lab; every wait polls a condition with a deadline.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_elasticache::error::ProvideErrorMetadata;
use aws_sdk_elasticache::types::{ServerlessCache, Tag};
use aws_sdk_route53::types::{
    Change, ChangeAction, ChangeBatch, ChangeStatus, ResourceRecord, ResourceRecordSet, RrType,
};
use hickory_resolver::proto::rr::RecordType;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};
use valkey_dr_lab::config::HOSTED_ZONE_ID;
use valkey_dr_lab::{AwsService, Fault, Lab, LabOptions, RECORD, Role, fetch_calls};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);
const DR_REGION: &str = "us-west-2";
const LOCK: &str = "_valkey-dr-lock.valkey.lab.internal.";

struct TestLab {
    lab: Lab,
    _dir: tempfile::TempDir,
}

async fn lab(provision_delay: Duration, insync_delay: Duration) -> TestLab {
    let dir = tempfile::tempdir().expect("tempdir");
    // The strict timing rules (Describe's lag after a create, Route 53's request rate and
    // PriorRequestNotComplete) have their own suite, lab_fidelity; here every call the test
    // makes is exactly one call the lab answers on its merits.
    let lab = Lab::start(LabOptions {
        seed: Some(7),
        provision_delay,
        insync_delay,
        describe_lag: Duration::ZERO,
        route53_rate: None,
        prior_request_window: Duration::ZERO,
        ..LabOptions::new(dir.path())
    })
    .await
    .expect("the lab starts");
    TestLab { lab, _dir: dir }
}

/// The SDK config an executor would build: the lab's endpoint, fake static credentials, and
/// no retries, so that every call the test makes is exactly one call the lab sees.
async fn sdk(lab: &Lab, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_string()))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .load()
        .await
}

async fn elasticache(lab: &Lab, region: &str) -> aws_sdk_elasticache::Client {
    aws_sdk_elasticache::Client::new(&sdk(lab, region).await)
}

async fn route53(lab: &Lab) -> aws_sdk_route53::Client {
    aws_sdk_route53::Client::new(&sdk(lab, "us-east-1").await)
}

async fn create(
    client: &aws_sdk_elasticache::Client,
    name: &str,
) -> Result<
    ServerlessCache,
    aws_sdk_elasticache::error::SdkError<
        aws_sdk_elasticache::operation::create_serverless_cache::CreateServerlessCacheError,
    >,
> {
    let out = client
        .create_serverless_cache()
        .serverless_cache_name(name)
        .engine("valkey")
        .major_engine_version("8")
        .subnet_ids("subnet-lab0001")
        .subnet_ids("subnet-lab0002")
        .security_group_ids("sg-lab0001")
        .tags(Tag::builder().key("app").value("sessions").build())
        .tags(
            Tag::builder()
                .key("valkey-dr:failover-id")
                .value("f-1")
                .build(),
        )
        .send()
        .await?;
    Ok(out.serverless_cache.expect("the cache is returned"))
}

/// The one cache of that name in the client's region, or `None` once it is gone.
async fn describe(client: &aws_sdk_elasticache::Client, name: &str) -> Option<ServerlessCache> {
    match client
        .describe_serverless_caches()
        .serverless_cache_name(name)
        .send()
        .await
    {
        Ok(out) => {
            let caches = out.serverless_caches();
            assert_eq!(caches.len(), 1, "{caches:?}");
            Some(caches[0].clone())
        }
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_serverless_cache_not_found_fault()) =>
        {
            None
        }
        Err(e) => panic!("DescribeServerlessCaches failed: {e:?}"),
    }
}

fn status(cache: &ServerlessCache) -> &str {
    cache.status().unwrap_or_default()
}

/// Polls Describe until the cache's status is `want` (`None`: until it is gone).
async fn wait_status(
    client: &aws_sdk_elasticache::Client,
    name: &str,
    want: Option<&str>,
) -> Option<ServerlessCache> {
    let started = Instant::now();
    loop {
        let cache = describe(client, name).await;
        if cache.as_ref().map(status) == want {
            return cache;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} did not become {want:?}; last: {cache:?}"
        );
        sleep(POLL).await;
    }
}

/// The CNAME the lab DNS answers for `name`, if any.
async fn cname(lab: &Lab, name: &str) -> Option<String> {
    let lookup = support::uncached_resolver(lab.info().dns)
        .lookup(name, RecordType::CNAME)
        .await
        .ok()?;
    lookup
        .record_iter()
        .find(|r| r.record_type() == RecordType::CNAME)
        .map(|r| r.data().to_string())
}

/// TLS to `endpoint:port` (resolved through the lab DNS, certificate checked against the lab
/// CA and the endpoint name), then `PING`.
async fn ping(lab: &Lab, endpoint: &str, port: u16, wait: Duration) -> std::io::Result<String> {
    let ip = support::uncached_resolver(lab.info().dns)
        .ipv4_lookup(format!("{endpoint}."))
        .await
        .map_err(std::io::Error::other)?
        .iter()
        .next()
        .ok_or_else(|| std::io::Error::other("no A record"))?
        .0;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&lab.info().ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let exchange = async {
        let tcp = TcpStream::connect(SocketAddr::from((ip, port))).await?;
        let name = ServerName::try_from(endpoint.to_string()).map_err(std::io::Error::other)?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await?;
        tls.write_all(b"*1\r\n$4\r\nPING\r\n").await?;
        let mut reply = [0u8; 7];
        tls.read_exact(&mut reply).await?;
        Ok(String::from_utf8_lossy(&reply).trim_end().to_string())
    };
    timeout(wait, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_created_cache_becomes_available_and_answers_over_tls() {
    let t = lab(Duration::from_secs(1), Duration::from_secs(1)).await;
    let ec = elasticache(&t.lab, DR_REGION).await;

    let created = create(&ec, "app-sessions-dr").await.expect("created");
    assert_eq!(status(&created), "creating");
    assert_eq!(created.serverless_cache_name(), Some("app-sessions-dr"));
    assert_eq!(created.engine(), Some("valkey"));
    assert_eq!(created.major_engine_version(), Some("8"));
    assert_eq!(created.full_engine_version(), Some("8.0"));
    assert_eq!(created.subnet_ids(), ["subnet-lab0001", "subnet-lab0002"]);
    assert_eq!(created.security_group_ids(), ["sg-lab0001"]);
    assert_eq!(
        created.arn(),
        Some("arn:aws:elasticache:us-west-2:123456789012:serverlesscache:app-sessions-dr")
    );
    assert!(created.create_time().is_some());
    // As on AWS, no endpoint while `creating`.
    assert!(created.endpoint().is_none(), "{created:?}");
    assert!(created.reader_endpoint().is_none(), "{created:?}");

    let described = describe(&ec, "app-sessions-dr").await.expect("listed");
    assert_eq!(status(&described), "creating");
    let available = wait_status(&ec, "app-sessions-dr", Some("available"))
        .await
        .unwrap();
    let endpoint = available.endpoint().expect("an endpoint").clone();
    let address = endpoint.address().unwrap().to_string();
    assert!(
        address.starts_with("app-sessions-dr-")
            && address.ends_with(".serverless.usw2.cache.amazonaws.com"),
        "{address}"
    );
    assert_eq!(endpoint.port(), Some(i32::from(t.lab.info().port)));
    let reader = available.reader_endpoint().expect("a reader endpoint");
    assert_eq!(reader.address(), Some(address.as_str()));
    assert_eq!(reader.port(), Some(6380));
    assert_eq!(
        ping(&t.lab, &address, t.lab.info().port, Duration::from_secs(5))
            .await
            .expect("PING over TLS"),
        "+PONG"
    );
    let info = t.lab.current_info();
    let cache = info.cache("app-sessions-dr").expect("the lab runs it");
    assert_eq!((cache.role, cache.region.as_str()), (Role::Dr, DR_REGION));
    assert_eq!(cache.endpoint, address);

    let tags = ec
        .list_tags_for_resource()
        .resource_name(available.arn().unwrap())
        .send()
        .await
        .expect("tags");
    let tags: Vec<(&str, &str)> = tags
        .tag_list()
        .iter()
        .map(|t| (t.key().unwrap(), t.value().unwrap()))
        .collect();
    assert_eq!(
        tags,
        vec![("app", "sessions"), ("valkey-dr:failover-id", "f-1")]
    );

    // The log, as the lab gives it to tests and over the control API.
    let creates: Vec<_> = t
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.action == "CreateServerlessCache")
        .collect();
    assert_eq!(creates.len(), 1);
    assert!(creates[0].succeeded());
    assert_eq!(creates[0].service, AwsService::Elasticache);
    assert_eq!(creates[0].region.as_deref(), Some(DR_REGION));
    assert_eq!(creates[0].request["cache_name"], "app-sessions-dr");
    assert_eq!(creates[0].request["tags"]["valkey-dr:failover-id"], "f-1");
    let remote = fetch_calls(t.lab.info().control).await.expect("GET /calls");
    assert_eq!(remote.len(), t.lab.calls().len());
    assert!(remote.windows(2).all(|w| w[0].seq < w[1].seq));
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicates_bad_input_and_the_quota_get_aws_errors() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(1)).await;
    let ec = elasticache(&t.lab, DR_REGION).await;
    // Stuck caches never start a server: the quota test stays light.
    for _ in 0..5 {
        t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    }
    create(&ec, "app-sessions-dr").await.expect("created");
    let again = create(&ec, "App-Sessions-DR").await.unwrap_err();
    assert!(
        again
            .as_service_error()
            .is_some_and(|e| e.is_serverless_cache_already_exists_fault()),
        "{again:?}"
    );
    assert_eq!(again.raw_response().unwrap().status().as_u16(), 400);
    // The refused create is in the call log with the one that succeeded: a test that counts
    // attempts sees a second create even though it changed nothing.
    let creates: Vec<_> = t
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.action == "CreateServerlessCache")
        .collect();
    assert_eq!(creates.len(), 2, "{creates:#?}");
    assert!(creates[0].succeeded() && !creates[1].succeeded());
    assert_eq!(
        creates[1].error_code.as_deref(),
        Some("ServerlessCacheAlreadyExistsFault")
    );
    assert_eq!(creates[1].request["cache_name"], "App-Sessions-DR");

    for bad in ["Bad_Name", "1starts-with-digit", "double--hyphen"] {
        let err = create(&ec, bad).await.unwrap_err();
        assert!(
            err.as_service_error()
                .is_some_and(|e| e.is_invalid_parameter_value_exception()),
            "{bad}: {err:?}"
        );
    }
    let err = ec
        .create_serverless_cache()
        .serverless_cache_name("other")
        .engine("mysql")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_parameter_value_exception()),
        "{err:?}"
    );

    for name in ["c2", "c3", "c4", "c5"] {
        create(&ec, name).await.expect("within the quota");
    }
    let over = create(&ec, "c6").await.unwrap_err();
    assert!(
        over.as_service_error()
            .is_some_and(|e| e.is_serverless_cache_quota_for_customer_exceeded_fault()),
        "{over:?}"
    );
    // One page of at least 20 (the least AWS accepts), in name order; a smaller page is
    // refused as AWS refuses it.
    let page = ec
        .describe_serverless_caches()
        .max_results(20)
        .send()
        .await
        .unwrap();
    let names: Vec<_> = page
        .serverless_caches()
        .iter()
        .map(|c| c.serverless_cache_name().unwrap().to_string())
        .collect();
    assert_eq!(names, ["app-sessions-dr", "c2", "c3", "c4", "c5"]);
    assert_eq!(page.next_token(), None);
    let small = ec
        .describe_serverless_caches()
        .max_results(2)
        .send()
        .await
        .unwrap_err();
    assert_eq!(small.code(), Some("InvalidParameterValue"), "{small:?}");
    // Another region has its own quota.
    create(&elasticache(&t.lab, "eu-west-1").await, "c6")
        .await
        .expect("eu-west-1 is empty");

    // The endpoint refuses unsigned requests.
    let addr: SocketAddr = t.lab.info().control;
    let body = "Action=DescribeServerlessCaches&Version=2015-02-02";
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut reply = String::new();
    timeout(DEADLINE, stream.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(
        reply.contains("<Code>MissingAuthenticationToken</Code>"),
        "{reply}"
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regions_are_isolated() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(1)).await;
    let west = elasticache(&t.lab, DR_REGION).await;
    let eu = elasticache(&t.lab, "eu-west-1").await;
    let east = elasticache(&t.lab, "us-east-1").await;
    t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    create(&west, "app-sessions-dr").await.expect("created");

    let listed = eu.describe_serverless_caches().send().await.unwrap();
    assert!(listed.serverless_caches().is_empty());
    assert!(describe(&eu, "app-sessions-dr").await.is_none());
    assert!(describe(&west, "app-sessions-dr").await.is_some());

    // The lab's own caches are listed in their regions, available, at their endpoints.
    let listed = east.describe_serverless_caches().send().await.unwrap();
    let names: Vec<_> = listed
        .serverless_caches()
        .iter()
        .map(|c| (c.serverless_cache_name().unwrap(), status(c)))
        .collect();
    assert_eq!(names, vec![("app-sessions", "available")]);
    let primary = t.lab.info().cache("app-sessions").unwrap();
    assert_eq!(
        listed.serverless_caches()[0]
            .endpoint()
            .and_then(|e| e.address()),
        Some(primary.endpoint.as_str())
    );

    // As on AWS, the same name may exist in another region (tests/FIDELITY.md, E5).
    let other = create(&eu, "app-sessions-dr")
        .await
        .expect("the same name in another region");
    assert_eq!(
        other.arn(),
        Some("arn:aws:elasticache:eu-west-1:123456789012:serverlesscache:app-sessions-dr")
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_goes_deleting_then_gone() {
    let t = lab(Duration::from_millis(300), Duration::from_secs(1)).await;
    let ec = elasticache(&t.lab, DR_REGION).await;
    create(&ec, "app-sessions-dr").await.unwrap();
    let cache = wait_status(&ec, "app-sessions-dr", Some("available"))
        .await
        .unwrap();
    let address = cache.endpoint().unwrap().address().unwrap().to_string();

    let deleted = ec
        .delete_serverless_cache()
        .serverless_cache_name("app-sessions-dr")
        .send()
        .await
        .expect("deleted");
    assert_eq!(deleted.serverless_cache().map(status), Some("deleting"));
    let again = ec
        .delete_serverless_cache()
        .serverless_cache_name("app-sessions-dr")
        .send()
        .await
        .unwrap_err();
    assert!(
        again
            .as_service_error()
            .is_some_and(|e| e.is_invalid_serverless_cache_state_fault()),
        "{again:?}"
    );
    assert!(wait_status(&ec, "app-sessions-dr", None).await.is_none());
    assert!(t.lab.current_info().cache("app-sessions-dr").is_none());
    assert!(
        support::uncached_resolver(t.lab.info().dns)
            .ipv4_lookup(format!("{address}."))
            .await
            .is_err(),
        "a deleted cache's endpoint does not resolve"
    );

    let missing = ec
        .delete_serverless_cache()
        .serverless_cache_name("app-sessions-dr")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_serverless_cache_not_found_fault()),
        "{missing:?}"
    );
    assert_eq!(missing.raw_response().unwrap().status().as_u16(), 404);
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provision_fail_and_stuck() {
    let delay = Duration::from_millis(200);
    let t = lab(delay, Duration::from_secs(1)).await;
    let ec = elasticache(&t.lab, DR_REGION).await;

    t.lab.fault(Fault::ProvisionFail).await.unwrap();
    create(&ec, "failing").await.unwrap();
    wait_status(&ec, "failing", Some("create-failed")).await;
    assert!(t.lab.current_info().cache("failing").is_none());

    t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    create(&ec, "stuck").await.unwrap();
    // Observed over ten provision delays: still creating every time.
    let watched = Instant::now();
    while watched.elapsed() < delay * 10 {
        assert_eq!(
            describe(&ec, "stuck").await.as_ref().map(status),
            Some("creating")
        );
        sleep(POLL).await;
    }
    let err = ec
        .delete_serverless_cache()
        .serverless_cache_name("stuck")
        .send()
        .await
        .unwrap_err();
    assert!(
        err.as_service_error()
            .is_some_and(|e| e.is_invalid_serverless_cache_state_fault()),
        "{err:?}"
    );

    // A failed cache can be deleted; the next create provisions normally again.
    ec.delete_serverless_cache()
        .serverless_cache_name("failing")
        .send()
        .await
        .expect("create-failed caches can be deleted");
    wait_status(&ec, "failing", None).await;
    create(&ec, "healthy").await.unwrap();
    wait_status(&ec, "healthy", Some("available")).await;
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_api_errors_fail_exactly_n_calls() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(1)).await;
    let ec = elasticache(&t.lab, DR_REGION).await;
    t.lab
        .fault(Fault::ApiError {
            service: AwsService::Elasticache,
            action: "CreateServerlessCache".into(),
            code: "Throttling".into(),
            times: Some(3),
            lasting: None,
        })
        .await
        .unwrap();
    for _ in 0..3 {
        let err = create(&ec, "app-sessions-dr").await.unwrap_err();
        assert_eq!(err.code(), Some("Throttling"), "{err:?}");
        assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    }
    create(&ec, "app-sessions-dr")
        .await
        .expect("the fourth call succeeds");
    // Other actions were never affected.
    assert!(describe(&ec, "app-sessions-dr").await.is_some());

    let creates: Vec<_> = t
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.action == "CreateServerlessCache")
        .collect();
    let outcomes: Vec<_> = creates
        .iter()
        .map(|c| (c.status, c.error_code.as_deref()))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (400, Some("Throttling")),
            (400, Some("Throttling")),
            (400, Some("Throttling")),
            (200, None)
        ]
    );
    assert_eq!(creates.iter().filter(|c| c.succeeded()).count(), 1);

    let r53 = route53(&t.lab).await;
    t.lab
        .fault(Fault::ApiError {
            service: AwsService::Route53,
            action: "ChangeResourceRecordSets".into(),
            code: "InternalError".into(),
            times: Some(1),
            lasting: None,
        })
        .await
        .unwrap();
    let batch = ChangeBatch::builder()
        .changes(change(ChangeAction::Create, LOCK, RrType::Txt, 30, "\"x\""))
        .build()
        .unwrap();
    let err = r53
        .change_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .change_batch(batch.clone())
        .send()
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("InternalError"));
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 500);
    r53.change_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .change_batch(batch)
        .send()
        .await
        .expect("the next call succeeds");
    t.lab.shutdown().await;
}

fn change(action: ChangeAction, name: &str, rtype: RrType, ttl: i64, value: &str) -> Change {
    Change::builder()
        .action(action)
        .resource_record_set(
            ResourceRecordSet::builder()
                .name(name)
                .r#type(rtype)
                .ttl(ttl)
                .resource_records(ResourceRecord::builder().value(value).build().unwrap())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap()
}

async fn change_batch(
    r53: &aws_sdk_route53::Client,
    changes: Vec<Change>,
) -> Result<
    aws_sdk_route53::types::ChangeInfo,
    aws_sdk_route53::error::SdkError<
        aws_sdk_route53::operation::change_resource_record_sets::ChangeResourceRecordSetsError,
    >,
> {
    let out = r53
        .change_resource_record_sets()
        .hosted_zone_id(format!("/hostedzone/{HOSTED_ZONE_ID}"))
        .change_batch(
            ChangeBatch::builder()
                .set_changes(Some(changes))
                .comment("valkey-dr test")
                .build()
                .unwrap(),
        )
        .send()
        .await?;
    Ok(out.change_info.expect("ChangeInfo"))
}

/// The record's CNAME according to the Route 53 API: (TTL, value).
async fn listed_cname(r53: &aws_sdk_route53::Client) -> (i64, String) {
    let out = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(RECORD)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
        .expect("listed");
    let set = &out.resource_record_sets()[0];
    assert_eq!((set.name(), set.r#type()), (RECORD, &RrType::Cname));
    (
        set.ttl().unwrap(),
        set.resource_records()[0].value().to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_compare_and_swap_reaches_dns_before_insync() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(5)).await;
    let r53 = route53(&t.lab).await;
    let info = t.lab.info().clone();
    let primary = format!("{}.", info.cache("app-sessions").unwrap().endpoint);
    let spare = format!("{}.", info.cache("app-sessions-spare").unwrap().endpoint);
    assert_eq!(listed_cname(&r53).await, (30, primary.clone()));
    assert_eq!(cname(&t.lab, RECORD).await, Some(primary.clone()));

    let swap = change_batch(
        &r53,
        vec![
            change(ChangeAction::Delete, RECORD, RrType::Cname, 30, &primary),
            change(ChangeAction::Create, RECORD, RrType::Cname, 45, &spare),
        ],
    )
    .await
    .expect("the swap applies");
    assert_eq!(swap.status(), &ChangeStatus::Pending);
    assert!(swap.id().starts_with("/change/C"), "{}", swap.id());
    assert_eq!(swap.comment(), Some("valkey-dr test"));

    // The DNS has it at once, while the change is still PENDING.
    assert_eq!(cname(&t.lab, RECORD).await, Some(spare.clone()));
    let pending = r53.get_change().id(swap.id()).send().await.unwrap();
    assert_eq!(
        pending.change_info().unwrap().status(),
        &ChangeStatus::Pending
    );
    assert_eq!(listed_cname(&r53).await, (45, spare.clone()));

    let started = Instant::now();
    loop {
        let now = r53.get_change().id(swap.id()).send().await.unwrap();
        if now.change_info().unwrap().status() == &ChangeStatus::Insync {
            break;
        }
        assert!(started.elapsed() < DEADLINE, "never INSYNC");
        sleep(Duration::from_millis(100)).await;
    }

    let missing = r53
        .get_change()
        .id("C0000000000000")
        .send()
        .await
        .unwrap_err();
    assert!(
        missing
            .as_service_error()
            .is_some_and(|e| e.is_no_such_change()),
        "{missing:?}"
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route53_conflicts_change_nothing_and_the_lease_is_a_txt_record() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(1)).await;
    let r53 = route53(&t.lab).await;
    let info = t.lab.info().clone();
    let primary = format!("{}.", info.cache("app-sessions").unwrap().endpoint);
    let spare = format!("{}.", info.cache("app-sessions-spare").unwrap().endpoint);

    // A swap from a value the record no longer has: nothing of the batch applies.
    let err = change_batch(
        &r53,
        vec![
            change(ChangeAction::Delete, RECORD, RrType::Cname, 30, &spare),
            change(ChangeAction::Create, RECORD, RrType::Cname, 30, &spare),
        ],
    )
    .await
    .unwrap_err();
    let service = err.as_service_error().expect("a service error");
    assert!(service.is_invalid_change_batch(), "{err:?}");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 400);
    assert_eq!(
        err.message(),
        Some(
            "[Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but \
             the values provided do not match the current values, Tried to create resource record \
             set [name='valkey.lab.internal.', type='CNAME'] but it already exists]"
        )
    );
    assert_eq!(listed_cname(&r53).await, (30, primary.clone()));
    assert_eq!(cname(&t.lab, RECORD).await, Some(primary.clone()));

    let exists = change_batch(
        &r53,
        vec![change(
            ChangeAction::Create,
            RECORD,
            RrType::Cname,
            30,
            &spare,
        )],
    )
    .await
    .unwrap_err();
    assert!(
        exists.message().unwrap().contains("but it already exists"),
        "{exists:?}"
    );

    // The lease: CREATE fails when it exists; UPSERT replaces it; DNS answers it.
    let lease = "\"owner=agent-a\" \"failover=f-1\" \"expires=1767225600\"";
    change_batch(
        &r53,
        vec![change(ChangeAction::Create, LOCK, RrType::Txt, 30, lease)],
    )
    .await
    .expect("lease taken");
    assert!(
        change_batch(
            &r53,
            vec![change(
                ChangeAction::Create,
                LOCK,
                RrType::Txt,
                30,
                "\"owner=agent-b\""
            )],
        )
        .await
        .unwrap_err()
        .as_service_error()
        .is_some_and(|e| e.is_invalid_change_batch())
    );
    let txt = support::uncached_resolver(info.dns)
        .txt_lookup(LOCK)
        .await
        .expect("TXT answers");
    let strings: Vec<String> = txt
        .iter()
        .flat_map(|t| {
            t.txt_data()
                .iter()
                .map(|d| String::from_utf8_lossy(d).into_owned())
        })
        .collect();
    assert_eq!(
        strings,
        vec!["owner=agent-a", "failover=f-1", "expires=1767225600"]
    );
    change_batch(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            LOCK,
            RrType::Txt,
            60,
            "\"owner=agent-b\"",
        )],
    )
    .await
    .expect("upsert");
    let unquoted = change_batch(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            LOCK,
            RrType::Txt,
            60,
            "owner=c",
        )],
    )
    .await
    .unwrap_err();
    assert!(
        unquoted
            .message()
            .unwrap()
            .contains("Value should be enclosed in quotation marks"),
        "{unquoted:?}"
    );

    // The whole zone, in AWS's order: labels reversed, then type.
    let all = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .send()
        .await
        .unwrap();
    let sets: Vec<(&str, &str, i64, Vec<&str>)> = all
        .resource_record_sets()
        .iter()
        .map(|s| {
            (
                s.name(),
                s.r#type().as_str(),
                s.ttl().unwrap(),
                s.resource_records().iter().map(|r| r.value()).collect(),
            )
        })
        .collect();
    assert_eq!(
        sets,
        vec![
            ("lab.internal.", "NS", 172_800, vec!["ns.lab.invalid."]),
            (
                "lab.internal.",
                "SOA",
                900,
                vec!["ns.lab.invalid. hostmaster.lab.invalid. 1 7200 900 1209600 86400"]
            ),
            ("valkey.lab.internal.", "CNAME", 30, vec![primary.as_str()]),
            (LOCK, "TXT", 60, vec!["\"owner=agent-b\""]),
        ]
    );
    assert!(!all.is_truncated());
    assert_eq!(all.max_items(), 300);

    let page = r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .max_items(2)
        .send()
        .await
        .unwrap();
    assert_eq!(page.resource_record_sets().len(), 2);
    assert!(page.is_truncated());
    assert_eq!(page.next_record_name(), Some(RECORD));
    assert_eq!(page.next_record_type(), Some(&RrType::Cname));

    let unknown = r53
        .list_resource_record_sets()
        .hosted_zone_id("ZNOTTHELAB")
        .send()
        .await
        .unwrap_err();
    assert!(
        unknown
            .as_service_error()
            .is_some_and(|e| e.is_no_such_hosted_zone()),
        "{unknown:?}"
    );
    assert_eq!(unknown.raw_response().unwrap().status().as_u16(), 404);

    let changes: Vec<_> = t
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.action == "ChangeResourceRecordSets")
        .collect();
    assert_eq!(changes[0].service, AwsService::Route53);
    assert_eq!(changes[0].error_code.as_deref(), Some("InvalidChangeBatch"));
    assert_eq!(changes[0].request["changes"][0]["action"], "DELETE");
    assert_eq!(
        changes[0].request["changes"][0]["values"][0],
        spare.as_str()
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outage_fails_its_api_and_its_caches() {
    let t = lab(Duration::from_millis(200), Duration::from_secs(1)).await;
    let east = elasticache(&t.lab, "us-east-1").await;
    let east2 = elasticache(&t.lab, "us-east-2").await;
    let primary = t.lab.info().cache("app-sessions").unwrap().clone();
    let port = t.lab.info().port;
    assert_eq!(
        ping(&t.lab, &primary.endpoint, port, Duration::from_secs(5))
            .await
            .unwrap(),
        "+PONG"
    );

    t.lab
        .fault(Fault::RegionOutage {
            region: "us-east-1".into(),
            route53: false,
        })
        .await
        .unwrap();
    let err = east.describe_serverless_caches().send().await.unwrap_err();
    assert_eq!(err.code(), Some("ServiceUnavailable"), "{err:?}");
    assert_eq!(err.raw_response().unwrap().status().as_u16(), 503);
    let ping_err = ping(&t.lab, &primary.endpoint, port, Duration::from_millis(500))
        .await
        .unwrap_err();
    assert_eq!(ping_err.kind(), std::io::ErrorKind::TimedOut);
    // Other regions, and Route 53, carry on.
    assert!(describe(&east2, "app-sessions-spare").await.is_some());
    listed_cname(&route53(&t.lab).await).await;

    t.lab
        .fault(Fault::RegionRestore {
            region: "us-east-1".into(),
        })
        .await
        .unwrap();
    assert_eq!(
        describe(&east, "app-sessions").await.as_ref().map(status),
        Some("available")
    );
    assert_eq!(
        ping(&t.lab, &primary.endpoint, port, Duration::from_secs(5))
            .await
            .unwrap(),
        "+PONG"
    );
    let failed: Vec<_> = t
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.error_code.as_deref() == Some("ServiceUnavailable"))
        .collect();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].region.as_deref(), Some("us-east-1"));
    t.lab.shutdown().await;
}

// --- The APIs `valkey-dr preflight` reads: STS, EC2, KMS, IAM, ElastiCache's user groups and
// snapshots, Route 53's GetHostedZone. Sent as raw HTTP with a well-formed SigV4 header (the
// lab never checks signatures), so that no more SDK crates are built; botocore then proves
// every answer parseable.

/// One raw request to the lab's AWS endpoint, signed (in form) for `service` in `region`.
async fn raw_aws(
    lab: &Lab,
    service: &str,
    region: &str,
    method: hyper::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;

    let endpoint = &lab.info().aws_endpoint;
    let addr: SocketAddr = endpoint
        .strip_prefix("http://")
        .expect("an http endpoint")
        .trim_end_matches('/')
        .parse()
        .expect("a loopback address");
    assert!(addr.ip().is_loopback());
    let exchange = async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        let driver = tokio::spawn(connection);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, addr.to_string())
            .header("x-amz-date", "20260101T000000Z")
            .header(
                hyper::header::AUTHORIZATION,
                format!(
                    "AWS4-HMAC-SHA256 Credential=AKIDLAB/20260101/{region}/{service}/aws4_request, \
                     SignedHeaders=host;x-amz-date, Signature=00000000"
                ),
            );
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(hyper::body::Bytes::from(body.to_string())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        driver.abort();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    };
    timeout(Duration::from_secs(10), exchange)
        .await
        .expect("the lab answers within 10 s")
}

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn query(lab: &Lab, service: &str, region: &str, body: &str) -> (u16, String) {
    raw_aws(
        lab,
        service,
        region,
        hyper::Method::POST,
        "/",
        &[FORM],
        body,
    )
    .await
}

async fn describe_key(lab: &Lab, region: &str, key_id: &str) -> (u16, serde_json::Value) {
    let (status, body) = raw_aws(
        lab,
        "kms",
        region,
        hyper::Method::POST,
        "/",
        &[
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", "TrentService.DescribeKey"),
        ],
        &serde_json::json!({ "KeyId": key_id }).to_string(),
    )
    .await;
    (
        status,
        serde_json::from_str(&body).expect("KMS answers JSON"),
    )
}

async fn simulate(lab: &Lab, source: &str, actions: &[&str], resources: &[&str]) -> (u16, String) {
    let mut form: Vec<(String, String)> = vec![
        ("Action".into(), "SimulatePrincipalPolicy".into()),
        ("Version".into(), "2010-05-08".into()),
        ("PolicySourceArn".into(), source.into()),
    ];
    for (i, action) in actions.iter().enumerate() {
        form.push((format!("ActionNames.member.{}", i + 1), action.to_string()));
    }
    for (i, resource) in resources.iter().enumerate() {
        form.push((
            format!("ResourceArns.member.{}", i + 1),
            resource.to_string(),
        ));
    }
    form.push((
        "ContextEntries.member.1.ContextKeyName".into(),
        "aws:RequestedRegion".into(),
    ));
    form.push((
        "ContextEntries.member.1.ContextKeyValues.member.1".into(),
        DR_REGION.into(),
    ));
    form.push((
        "ContextEntries.member.1.ContextKeyType".into(),
        "string".into(),
    ));
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    query(lab, "iam", "us-east-1", &body).await
}

async fn get_zone(lab: &Lab, id: &str) -> (u16, String) {
    raw_aws(
        lab,
        "route53",
        "us-east-1",
        hyper::Method::GET,
        &format!("/2013-04-01/hostedzone/{id}"),
        &[],
        "",
    )
    .await
}

/// Every part is in the body, read with XML's quote escapes undone.
fn has(body: &str, parts: &[&str]) {
    let body = body.replace("&apos;", "'").replace("&quot;", "\"");
    for part in parts {
        assert!(body.contains(part), "{part} missing from {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_apis_answer_as_aws_does_and_faults_break_each() {
    use valkey_dr_lab::{
        LAB_CALLER_ARN, LAB_KMS_ALIAS, LAB_KMS_KEY_ID, LAB_ROLE_ARN, LAB_SNAPSHOT_NAME,
        LAB_USER_GROUP_ID, PRIMARY_CACHE, PRIMARY_REGION, lab_kms_alias_arn, lab_kms_key_arn,
    };
    let t = lab(Duration::from_millis(100), Duration::from_millis(100)).await;
    let lab = &t.lab;
    let mut invalid_on_purpose = Vec::new();

    // STS: who the agent is.
    let (status, body) = query(
        lab,
        "sts",
        "us-east-1",
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            "<Arn>arn:aws:sts::123456789012:assumed-role/valkey-dr-lab/lab-agent</Arn>",
            "<UserId>AROALAB0000000000000001:lab-agent</UserId>",
            "<Account>123456789012</Account>",
        ],
    );

    // EC2: the subnets and security group of every region; a missing id fails the whole call.
    for region in [PRIMARY_REGION, DR_REGION] {
        let (status, body) = query(
            lab,
            "ec2",
            region,
            "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-lab0001&SubnetId.2=subnet-lab0002",
        )
        .await;
        assert_eq!(status, 200, "{body}");
        has(
            &body,
            &[
                "<subnetId>subnet-lab0001</subnetId>",
                &format!("<availabilityZone>{region}a</availabilityZone>"),
                &format!("<availabilityZone>{region}b</availabilityZone>"),
                "<vpcId>vpc-lab0001</vpcId>",
                "<state>available</state>",
            ],
        );
        assert!(!body.contains("subnet-lab0003"), "{body}");
    }
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSubnets&Version=2016-11-15",
    )
    .await;
    assert_eq!(status, 200);
    has(
        &body,
        &["subnet-lab0001", "subnet-lab0002", "subnet-lab0003"],
    );
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-lab0001&SubnetId.2=subnet-nope",
    )
    .await;
    assert_eq!(status, 400);
    has(
        &body,
        &[
            "<Response><Errors><Error><Code>InvalidSubnetID.NotFound</Code>",
            "The subnet ID 'subnet-nope' does not exist",
            "<RequestID>",
        ],
    );
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSecurityGroups&Version=2016-11-15&GroupId.1=sg-lab0001",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            "<groupId>sg-lab0001</groupId>",
            "<groupName>valkey-dr-lab</groupName>",
            "<vpcId>vpc-lab0001</vpcId>",
        ],
    );
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSecurityGroups&Version=2016-11-15&GroupId.1=sg-nope",
    )
    .await;
    assert_eq!(status, 400);
    has(
        &body,
        &[
            "<Code>InvalidGroup.NotFound</Code>",
            "The security group 'sg-nope' does not exist",
        ],
    );

    // EC2: the lab VPC is the region's default VPC until `default-vpc-delete`.
    let default_vpc =
        "Action=DescribeVpcs&Version=2016-11-15&Filter.1.Name=isDefault&Filter.1.Value.1=true";
    let (status, body) = query(lab, "ec2", DR_REGION, default_vpc).await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &["<vpcId>vpc-lab0001</vpcId>", "<isDefault>true</isDefault>"],
    );
    lab.fault(Fault::DefaultVpcDelete).await.unwrap();
    let (status, body) = query(lab, "ec2", DR_REGION, default_vpc).await;
    assert_eq!(status, 200, "{body}");
    assert!(!body.contains("vpc-lab0001"), "{body}");
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeVpcs&Version=2016-11-15&VpcId.1=vpc-lab0001",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(&body, &["<isDefault>false</isDefault>"]);
    lab.fault(Fault::DefaultVpcCreate).await.unwrap();
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeVpcs&Version=2016-11-15&VpcId.1=vpc-nope",
    )
    .await;
    assert_eq!(status, 400);
    has(&body, &["<Code>InvalidVpcID.NotFound</Code>"]);

    // KMS: the key by each of its four names, in each region; another key is not found.
    for region in [PRIMARY_REGION, DR_REGION] {
        for name in [
            LAB_KMS_KEY_ID.to_string(),
            lab_kms_key_arn(region),
            LAB_KMS_ALIAS.to_string(),
            lab_kms_alias_arn(region),
        ] {
            let (status, doc) = describe_key(lab, region, &name).await;
            assert_eq!(status, 200, "{name}: {doc}");
            let meta = &doc["KeyMetadata"];
            assert_eq!(meta["KeyId"], LAB_KMS_KEY_ID);
            assert_eq!(meta["Arn"], lab_kms_key_arn(region).as_str());
            assert_eq!(meta["AWSAccountId"], "123456789012");
            assert_eq!(
                (meta["Enabled"].as_bool(), meta["KeyState"].as_str()),
                (Some(true), Some("Enabled"))
            );
            assert_eq!(meta["KeyManager"], "CUSTOMER");
            assert_eq!(meta["KeyUsage"], "ENCRYPT_DECRYPT");
            assert_eq!(meta["KeySpec"], "SYMMETRIC_DEFAULT");
            assert!(meta["CreationDate"].is_number() && meta["Description"].is_string());
        }
    }
    let (status, doc) = describe_key(lab, DR_REGION, "alias/nope").await;
    assert_eq!(
        (status, doc["__type"].as_str()),
        (400, Some("NotFoundException")),
        "{doc}"
    );
    let (status, doc) = describe_key(lab, DR_REGION, &lab_kms_key_arn(PRIMARY_REGION)).await;
    assert_eq!(
        (status, doc["__type"].as_str()),
        (400, Some("NotFoundException")),
        "{doc}"
    );

    // IAM: the lab role may do everything; an unknown principal is NoSuchEntity.
    let cache_arn =
        format!("arn:aws:elasticache:{DR_REGION}:123456789012:serverlesscache:app-sessions-dr");
    let actions = [
        "elasticache:CreateServerlessCache",
        "route53:ChangeResourceRecordSets",
    ];
    let (status, body) = simulate(lab, LAB_ROLE_ARN, &actions, &[]).await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            "<EvalActionName>elasticache:CreateServerlessCache</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>allowed</EvalDecision>",
            "<EvalActionName>route53:ChangeResourceRecordSets</EvalActionName>",
            "<IsTruncated>false</IsTruncated>",
        ],
    );
    assert!(!body.contains("ResourceSpecificResults"), "{body}");
    let (status, body) = simulate(lab, LAB_ROLE_ARN, &actions[..1], &[&cache_arn]).await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            &format!(
                "<EvalResourceName>{cache_arn}</EvalResourceName><EvalDecision>allowed</EvalDecision>"
            ),
            &format!(
                "<ResourceSpecificResults><member><EvalResourceName>{cache_arn}</EvalResourceName><EvalResourceDecision>allowed</EvalResourceDecision>"
            ),
        ],
    );
    let (status, body) = simulate(
        lab,
        "arn:aws:iam::123456789012:role/someone-else",
        &actions,
        &[],
    )
    .await;
    assert_eq!(status, 404);
    has(
        &body,
        &[
            "<Code>NoSuchEntity</Code>",
            "The role with name someone-else cannot be found.",
        ],
    );
    let (status, body) = raw_aws(
        lab,
        "iam",
        DR_REGION,
        hyper::Method::POST,
        "/",
        &[FORM],
        "Action=SimulatePrincipalPolicy&Version=2010-05-08&PolicySourceArn=x&ActionNames.member.1=a:b",
    )
    .await;
    assert_eq!(status, 403, "IAM signs for us-east-1 only: {body}");

    // ElastiCache: the user group and the snapshot of every region; missing ones are 404s.
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeUserGroups&Version=2015-02-02&UserGroupId=valkey-dr-lab-users",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            &format!(
                "<UserGroupId>{LAB_USER_GROUP_ID}</UserGroupId><Status>active</Status><Engine>valkey</Engine>"
            ),
            "<UserIds><member>default</member></UserIds>",
            &format!(
                "<ARN>arn:aws:elasticache:{DR_REGION}:123456789012:usergroup:valkey-dr-lab-users</ARN>"
            ),
        ],
    );
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeUserGroups&Version=2015-02-02&UserGroupId=nope",
    )
    .await;
    assert_eq!(status, 404);
    has(&body, &["<Code>UserGroupNotFound</Code>"]);
    // Its users, each with the access string the caches apply (row E11).
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeUsers&Version=2015-02-02",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            "<UserId>default</UserId><UserName>default</UserName><Status>active</Status>",
            "<AccessString>on ~* +@all</AccessString>",
            &format!("<UserGroupIds><member>{LAB_USER_GROUP_ID}</member></UserGroupIds>"),
            "<Authentication><Type>no-password</Type></Authentication>",
            &format!("<ARN>arn:aws:elasticache:{DR_REGION}:123456789012:user:default</ARN>"),
        ],
    );
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeUsers&Version=2015-02-02&UserId=nobody",
    )
    .await;
    assert_eq!(status, 404, "{body}");
    has(&body, &["<Code>UserNotFound</Code>"]);
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeServerlessCacheSnapshots&Version=2015-02-02&ServerlessCacheSnapshotName=valkey-dr-lab-snapshot",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            &format!(
                "<ServerlessCacheSnapshot><ServerlessCacheSnapshotName>{LAB_SNAPSHOT_NAME}</ServerlessCacheSnapshotName>"
            ),
            &format!(
                "<ARN>arn:aws:elasticache:{DR_REGION}:123456789012:serverlesscachesnapshot:valkey-dr-lab-snapshot</ARN>"
            ),
            "<SnapshotType>manual</SnapshotType><Status>available</Status>",
            &format!(
                "<ServerlessCacheConfiguration><ServerlessCacheName>{PRIMARY_CACHE}</ServerlessCacheName><Engine>valkey</Engine><MajorEngineVersion>8</MajorEngineVersion>"
            ),
        ],
    );
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeServerlessCacheSnapshots&Version=2015-02-02&ServerlessCacheSnapshotName=nope",
    )
    .await;
    assert_eq!(status, 404);
    has(
        &body,
        &["<Code>ServerlessCacheSnapshotNotFoundFault</Code>"],
    );

    // The primary is registered with the DR spec's settings, live in its region.
    let primary = describe(&elasticache(lab, PRIMARY_REGION).await, PRIMARY_CACHE)
        .await
        .expect("the primary is listed");
    assert_eq!(
        primary.kms_key_id(),
        Some(lab_kms_key_arn(PRIMARY_REGION).as_str())
    );
    assert_eq!(primary.user_group_id(), Some(LAB_USER_GROUP_ID));
    assert_eq!(primary.snapshot_retention_limit(), Some(1));
    assert_eq!(
        (primary.engine(), primary.major_engine_version()),
        (Some("valkey"), Some("8"))
    );
    assert!(primary.cache_usage_limits().is_none());
    assert_eq!(primary.subnet_ids(), ["subnet-lab0001", "subnet-lab0002"]);
    assert_eq!(primary.security_group_ids(), ["sg-lab0001"]);

    // Route 53: the private zone and its VPCs; another zone is NoSuchHostedZone.
    let (status, body) = get_zone(lab, HOSTED_ZONE_ID).await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            &format!("<Id>/hostedzone/{HOSTED_ZONE_ID}</Id><Name>lab.internal.</Name>"),
            "<PrivateZone>true</PrivateZone>",
            "<VPC><VPCRegion>us-east-1</VPCRegion><VPCId>vpc-lab0001</VPCId></VPC>",
            "<VPC><VPCRegion>us-west-2</VPCRegion><VPCId>vpc-lab0001</VPCId></VPC>",
            "<ResourceRecordSetCount>",
        ],
    );
    let (status, body) = get_zone(lab, "ZNOTTHELAB").await;
    assert_eq!(status, 404);
    has(&body, &["<Code>NoSuchHostedZone</Code>"]);

    // --- Faults, each breaking its own reference.
    lab.fault(Fault::SubnetDelete {
        subnet: "subnet-lab0002".into(),
    })
    .await
    .expect("subnet-delete");
    for region in [PRIMARY_REGION, DR_REGION] {
        let (status, body) = query(lab, "ec2", region, "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-lab0001&SubnetId.2=subnet-lab0002").await;
        assert_eq!(status, 400, "{body}");
        has(&body, &["InvalidSubnetID.NotFound", "'subnet-lab0002'"]);
    }
    assert!(
        lab.fault(Fault::SubnetDelete {
            subnet: "subnet-other".into()
        })
        .await
        .is_err()
    );

    lab.fault(Fault::KmsDisable).await.expect("kms-disable");
    let (status, doc) = describe_key(lab, DR_REGION, LAB_KMS_ALIAS).await;
    assert_eq!(status, 200);
    assert_eq!(
        (
            doc["KeyMetadata"]["Enabled"].as_bool(),
            doc["KeyMetadata"]["KeyState"].as_str()
        ),
        (Some(false), Some("Disabled"))
    );
    lab.fault(Fault::KmsEnable).await.expect("kms-enable");
    let (_, doc) = describe_key(lab, PRIMARY_REGION, LAB_KMS_ALIAS).await;
    assert_eq!(doc["KeyMetadata"]["KeyState"], "Enabled");

    lab.fault(Fault::ZonePublic).await.expect("zone-public");
    let (status, body) = get_zone(lab, HOSTED_ZONE_ID).await;
    assert_eq!(status, 200);
    has(
        &body,
        &[
            "<PrivateZone>false</PrivateZone>",
            "<DelegationSet><NameServers><NameServer>",
        ],
    );
    assert!(!body.contains("<VPCs>"), "{body}");
    lab.fault(Fault::ZonePrivate).await.expect("zone-private");
    has(
        &get_zone(lab, HOSTED_ZONE_ID).await.1,
        &["<PrivateZone>true</PrivateZone>"],
    );

    // iam-deny: the simulation says implicitDeny, and the real call of every service is refused
    // in that service's own words; GetCallerIdentity cannot be denied.
    let denied = [
        "route53:GetHostedZone",
        "ec2:DescribeSubnets",
        "kms:DescribeKey",
        "elasticache:DescribeUserGroups",
        "sts:GetCallerIdentity",
    ];
    for action in denied {
        lab.fault(Fault::IamDeny {
            action: action.into(),
        })
        .await
        .expect("iam-deny");
    }
    assert!(
        lab.fault(Fault::IamDeny {
            action: "DescribeSubnets".into()
        })
        .await
        .is_err()
    );
    let (status, body) = simulate(
        lab,
        LAB_ROLE_ARN,
        &["ec2:DescribeSubnets", "ec2:DescribeSecurityGroups"],
        &[],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    has(
        &body,
        &[
            "<EvalActionName>ec2:DescribeSubnets</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>implicitDeny</EvalDecision>",
            "<EvalActionName>ec2:DescribeSecurityGroups</EvalActionName><EvalResourceName>*</EvalResourceName><EvalDecision>allowed</EvalDecision>",
        ],
    );
    let because =
        |action: &str| format!("because no identity-based policy allows the {action} action");
    let (status, body) = get_zone(lab, HOSTED_ZONE_ID).await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<Code>AccessDenied</Code>",
            &format!(
                "User: {LAB_CALLER_ARN} is not authorized to perform: route53:GetHostedZone on resource: arn:aws:route53:::hostedzone/{HOSTED_ZONE_ID}"
            ),
            &because("route53:GetHostedZone"),
        ],
    );
    let (status, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSubnets&Version=2016-11-15&SubnetId.1=subnet-lab0001",
    )
    .await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<Response><Errors><Error><Code>UnauthorizedOperation</Code>",
            "You are not authorized to perform this operation.",
            &because("ec2:DescribeSubnets"),
        ],
    );
    let (status, doc) = describe_key(lab, DR_REGION, LAB_KMS_ALIAS).await;
    assert_eq!(
        (status, doc["__type"].as_str()),
        (400, Some("AccessDeniedException")),
        "{doc}"
    );
    assert!(
        doc["message"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("on resource: {}", lab_kms_key_arn(DR_REGION))),
        "{doc}"
    );
    let (status, body) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeUserGroups&Version=2015-02-02",
    )
    .await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<Code>AccessDenied</Code>",
            &because("elasticache:DescribeUserGroups"),
        ],
    );
    let (status, _) = query(
        lab,
        "sts",
        DR_REGION,
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(status, 200, "GetCallerIdentity needs no permission");
    lab.fault(Fault::IamDeny {
        action: "iam:SimulatePrincipalPolicy".into(),
    })
    .await
    .expect("iam-deny");
    let (status, body) = simulate(lab, LAB_ROLE_ARN, &actions, &[]).await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<Code>AccessDenied</Code>",
            &format!("on resource: {LAB_ROLE_ARN}"),
        ],
    );
    for action in denied.iter().chain(&["iam:SimulatePrincipalPolicy"]) {
        lab.fault(Fault::IamAllow {
            action: action.to_string(),
        })
        .await
        .expect("iam-allow");
    }
    assert_eq!(get_zone(lab, HOSTED_ZONE_ID).await.0, 200);

    // api-error: credential codes at 403, in each service's own form.
    for (service, action, code) in [
        (AwsService::Sts, "GetCallerIdentity", "ExpiredToken"),
        (AwsService::Ec2, "DescribeSecurityGroups", "AuthFailure"),
        (
            AwsService::Kms,
            "DescribeKey",
            "UnrecognizedClientException",
        ),
        (
            AwsService::Iam,
            "SimulatePrincipalPolicy",
            "InvalidClientTokenId",
        ),
        (
            AwsService::Elasticache,
            "DescribeServerlessCacheSnapshots",
            "AccessDenied",
        ),
        (
            AwsService::Route53,
            "GetHostedZone",
            "SignatureDoesNotMatch",
        ),
    ] {
        lab.fault(Fault::ApiError {
            service,
            action: action.into(),
            code: code.into(),
            times: Some(1),
            lasting: None,
        })
        .await
        .expect("api-error");
    }
    let (status, body) = query(
        lab,
        "sts",
        "us-east-1",
        "Action=GetCallerIdentity&Version=2011-06-15",
    )
    .await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">",
            "<Code>ExpiredToken</Code>",
        ],
    );
    let (_, body) = query(
        lab,
        "ec2",
        DR_REGION,
        "Action=DescribeSecurityGroups&Version=2016-11-15",
    )
    .await;
    has(
        &body,
        &["<Response><Errors><Error><Code>AuthFailure</Code>"],
    );
    let (status, doc) = describe_key(lab, DR_REGION, LAB_KMS_KEY_ID).await;
    assert_eq!(
        (status, doc["__type"].as_str()),
        (403, Some("UnrecognizedClientException"))
    );
    let (status, body) = simulate(lab, LAB_ROLE_ARN, &actions, &[]).await;
    assert_eq!(status, 403);
    has(
        &body,
        &[
            "<Code>InvalidClientTokenId</Code>",
            "The security token included in the request is invalid.",
        ],
    );
    let (status, _) = query(
        lab,
        "elasticache",
        DR_REGION,
        "Action=DescribeServerlessCacheSnapshots&Version=2015-02-02",
    )
    .await;
    assert_eq!(status, 403);
    let (status, body) = get_zone(lab, HOSTED_ZONE_ID).await;
    assert_eq!(status, 403);
    has(&body, &["<Code>SignatureDoesNotMatch</Code>"]);

    // witness-down cuts every service; a region outage only ElastiCache.
    lab.fault(Fault::WitnessDown).await.expect("witness-down");
    assert_eq!(
        query(
            lab,
            "sts",
            "us-east-1",
            "Action=GetCallerIdentity&Version=2011-06-15"
        )
        .await
        .0,
        503
    );
    assert_eq!(describe_key(lab, DR_REGION, LAB_KMS_KEY_ID).await.0, 503);
    assert_eq!(
        query(
            lab,
            "ec2",
            DR_REGION,
            "Action=DescribeSubnets&Version=2016-11-15"
        )
        .await
        .0,
        503
    );
    assert_eq!(simulate(lab, LAB_ROLE_ARN, &actions, &[]).await.0, 503);
    assert_eq!(get_zone(lab, HOSTED_ZONE_ID).await.0, 503);
    lab.fault(Fault::WitnessUp).await.expect("witness-up");
    lab.fault(Fault::RegionOutage {
        region: DR_REGION.into(),
        route53: false,
    })
    .await
    .expect("region-outage");
    assert_eq!(
        query(
            lab,
            "elasticache",
            DR_REGION,
            "Action=DescribeUserGroups&Version=2015-02-02"
        )
        .await
        .0,
        503
    );
    assert_eq!(describe_key(lab, DR_REGION, LAB_KMS_KEY_ID).await.0, 200);
    assert_eq!(
        query(
            lab,
            "ec2",
            DR_REGION,
            "Action=DescribeSecurityGroups&Version=2016-11-15"
        )
        .await
        .0,
        200
    );
    lab.fault(Fault::RegionRestore {
        region: DR_REGION.into(),
    })
    .await
    .expect("region-restore");

    // IAM scoped to the wrong region is refused before the model is consulted: not a
    // request botocore would send.
    let calls = lab.calls();
    for call in &calls {
        if call.service == AwsService::Iam && call.region.as_deref() != Some("us-east-1") {
            invalid_on_purpose.push(call.seq);
        }
    }
    let services: std::collections::HashSet<AwsService> = calls.iter().map(|c| c.service).collect();
    assert_eq!(services.len(), 6, "{services:?}");
    let scratch = tempfile::tempdir().expect("tempdir");
    let path = scratch.path().to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        valkey_dr_lab::botocore_check(&calls, &invalid_on_purpose, &path)
    })
    .await
    .expect("the check runs");
    match report {
        Ok(text) => eprintln!("{text}"),
        Err(e) => panic!("{e:#}"),
    }
}
