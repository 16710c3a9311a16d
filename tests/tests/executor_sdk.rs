//! The executor's SDK-backed `CacheApi` and `DnsApi` (`valkey_dr::executor::sdk`) against the
//! lab's AWS emulation, spoken to over loopback by the real SDK clients: each call's mapping,
//! the error classification the executor's retry and stop decisions rest on, and a whole
//! failover carried out by the `Executor` with a verifier that probes through
//! `valkey-dr-probes` (TLS, PING/SET/GET) like the daemon.
//!
//! Every test has its own lab; every wait polls a condition with a deadline.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_elasticache::config::Credentials;
use tokio::time::{Instant, sleep, timeout};
use valkey_dr::config::{Config, ProcessEnv};
use valkey_dr::executor::api::{
    ApiError, CacheApi, CacheInfo, CacheSpec, CacheStatus, Change, ChangeStatus, DnsApi, RecordSet,
};
use valkey_dr::executor::sdk::{SdkCache, SdkDns};
use valkey_dr::executor::{
    Executor, ExecutorLimits, FAILOVER_TAG, Journal, JournalEntry, LeaseClock, Verifier,
    VerifyFailure,
};
use valkey_dr_lab::config::{DR_CACHE, DR_REGION, HOSTED_ZONE_ID};
use valkey_dr_lab::{AwsService, Call, Fault, Lab, LabOptions, RECORD, SPARE_CACHE};
use valkey_dr_probes::{PathKind, ProbeSpec, Prober, ResolverSettings};

/// The longest any condition is waited for.
const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

struct TestLab {
    lab: Lab,
    dir: tempfile::TempDir,
}

/// A lab with every strict AWS rule on (tests/FIDELITY.md).
async fn lab() -> TestLab {
    lab_with(|_| {}).await
}

/// A lab for tests that assert one call at a time: Describe's lag after a create, Route 53's
/// request rate and PriorRequestNotComplete are off (their own suite is lab_fidelity; the
/// executor's run below meets them all).
async fn one_call_at_a_time() -> TestLab {
    lab_with(|o| {
        o.describe_lag = Duration::ZERO;
        o.route53_rate = None;
        o.prior_request_window = Duration::ZERO;
    })
    .await
}

async fn lab_with(adjust: impl FnOnce(&mut LabOptions)) -> TestLab {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut options = LabOptions {
        seed: Some(11),
        provision_delay: Duration::from_millis(300),
        insync_delay: Duration::from_millis(500),
        ..LabOptions::new(dir.path())
    };
    adjust(&mut options);
    let lab = Lab::start(options).await.expect("the lab starts");
    TestLab { lab, dir }
}

/// The SDK config the agent builds for the lab (`[aws] endpoint_url`), with static fake
/// credentials and the given retries.
async fn sdk(lab: &Lab, region: &str, retry: RetryConfig) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(retry)
        .load()
        .await
}

/// Clients whose every call is exactly one call the lab sees.
async fn single_shot(lab: &Lab) -> (SdkCache, SdkDns) {
    let config = sdk(lab, DR_REGION, RetryConfig::disabled()).await;
    (SdkCache::new(&config), SdkDns::new(&config))
}

/// The lab's agent.toml, parsed as the agent parses it.
fn agent_config(lab: &Lab) -> Config {
    Config::load(&lab.info().config, &ProcessEnv).expect("the lab's agent.toml parses")
}

/// The `CacheSpec` the executor gets for a failover of the lab's watch.
fn planned(lab: &Lab, failover_id: &str) -> valkey_dr::executor::Plan {
    let config = agent_config(lab);
    valkey_dr::plan::executor_plan(&config, &config.watches[0], failover_id)
}

async fn wait_available(cache: &SdkCache, name: &str) -> CacheInfo {
    let started = Instant::now();
    loop {
        let info = cache.describe(name).await.expect("describe");
        if let Some(info) = &info
            && info.status == CacheStatus::Available
        {
            return info.clone();
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{name} never available: {info:?}"
        );
        sleep(POLL).await;
    }
}

fn calls(lab: &Lab, action: &str) -> Vec<Call> {
    lab.calls()
        .into_iter()
        .filter(|c| c.action == action)
        .collect()
}

fn cname(target: &str, ttl: u32) -> RecordSet {
    RecordSet {
        name: RECORD.into(),
        rtype: "CNAME".into(),
        ttl,
        values: vec![format!("{}.", target.trim_end_matches('.'))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_calls_create_describe_and_tag() {
    let t = lab().await;
    let (cache, _) = single_shot(&t.lab).await;
    assert_eq!(cache.region(), DR_REGION);
    let spec = planned(&t.lab, "fo-sdk-1").cache;
    assert_eq!(spec.name(), DR_CACHE);

    let created = cache.create(&spec).await.expect("created");
    assert_eq!(created.name, DR_CACHE);
    assert_eq!(created.status, CacheStatus::Creating);
    assert_eq!(
        created.arn,
        format!("arn:aws:elasticache:{DR_REGION}:123456789012:serverlesscache:{DR_CACHE}")
    );
    // The request, as the lab logged it: the plan's input, the failover's tag.
    let creates = calls(&t.lab, "CreateServerlessCache");
    assert_eq!(creates.len(), 1);
    assert_eq!(creates[0].region.as_deref(), Some(DR_REGION));
    assert_eq!(creates[0].request["engine"], "valkey");
    assert_eq!(creates[0].request["major_engine_version"], "8");
    assert_eq!(
        creates[0].request["subnet_ids"],
        serde_json::json!(["subnet-lab0001", "subnet-lab0002"])
    );
    assert_eq!(
        creates[0].request["security_group_ids"],
        serde_json::json!(["sg-lab0001"])
    );
    assert_eq!(creates[0].request["tags"][FAILOVER_TAG], "fo-sdk-1");

    assert_eq!(
        cache.create(&spec).await.unwrap_err(),
        ApiError::AlreadyExists {
            name: DR_CACHE.into()
        }
    );

    let available = wait_available(&cache, DR_CACHE).await;
    let lab_cache = t.lab.current_info().cache(DR_CACHE).unwrap().clone();
    assert_eq!(
        available.endpoint,
        Some((lab_cache.endpoint.clone(), t.lab.info().port))
    );
    assert_eq!(available.arn, created.arn);
    assert_eq!(
        cache.tags(&available.arn).await.expect("tags"),
        BTreeMap::from([
            (FAILOVER_TAG.to_owned(), "fo-sdk-1".to_owned()),
            ("valkey-dr:record".to_owned(), RECORD.to_owned()),
            ("valkey-dr:watch".to_owned(), "sessions".to_owned()),
        ])
    );
    assert_eq!(cache.describe("no-such-cache").await.unwrap(), None);
    // Case does not matter to ElastiCache names.
    assert_eq!(
        cache
            .describe(&DR_CACHE.to_uppercase())
            .await
            .unwrap()
            .map(|c| c.name),
        Some(DR_CACHE.to_owned())
    );

    let unknown = cache
        .tags("arn:aws:elasticache:us-west-2:123456789012:serverlesscache:nope")
        .await
        .unwrap_err();
    assert!(
        matches!(&unknown, ApiError::Permanent { call, .. } if call == "elasticache:ListTagsForResource"),
        "{unknown:?}"
    );
    t.lab.shutdown().await;
}

/// Issue 22: `kms_key_id` as an alias passed preflight, yet `CreateServerlessCache` takes the
/// key's ARN (the lab refuses anything else, tests/FIDELITY.md E12): the executor sends the
/// ARN `DescribeKey` gives, for the alias and for a bare key id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kms_alias_or_key_id_is_sent_as_the_keys_arn() {
    let t = one_call_at_a_time().await;
    let (cache, _) = single_shot(&t.lab).await;
    t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    let arn = valkey_dr_lab::config::lab_kms_key_arn(DR_REGION);
    for (name, key) in [
        ("by-alias", valkey_dr_lab::LAB_KMS_ALIAS),
        ("by-id", valkey_dr_lab::LAB_KMS_KEY_ID),
    ] {
        let spec = CacheSpec {
            region: DR_REGION.into(),
            input: serde_json::from_value(serde_json::json!({
                "ServerlessCacheName": name,
                "Engine": "valkey",
                "KmsKeyId": key,
            }))
            .expect("the API's member names"),
        };
        cache
            .create(&spec)
            .await
            .expect("created with the key's ARN");
        let create = calls(&t.lab, "CreateServerlessCache")
            .into_iter()
            .last()
            .expect("a create");
        assert_eq!(create.status, 200, "{name}");
    }
    let raw =
        aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, RetryConfig::disabled()).await);
    for name in ["by-alias", "by-id"] {
        let out = raw
            .describe_serverless_caches()
            .serverless_cache_name(name)
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.serverless_caches()[0].kms_key_id(),
            Some(arn.as_str()),
            "{name}"
        );
    }
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_create_parameter_reaches_the_api() {
    let t = one_call_at_a_time().await;
    let (cache, _) = single_shot(&t.lab).await;
    // A stuck cache never starts a server: this test is about the request only.
    t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    let spec = CacheSpec {
        region: DR_REGION.into(),
        input: serde_json::from_value(serde_json::json!({
            "ServerlessCacheName": "full-input",
            "Engine": "valkey",
            "MajorEngineVersion": "8",
            "SubnetIds": ["subnet-a"],
            "SecurityGroupIds": ["sg-a", "sg-b"],
            "SnapshotArnsToRestore": ["arn:aws:elasticache:us-west-2:123456789012:serverlesscachesnapshot:s1"],
            "Tags": [{"Key": "app", "Value": "sessions"}, {"Key": FAILOVER_TAG, "Value": "fo-2"}],
            "KmsKeyId": "arn:aws:kms:us-west-2:123456789012:key/k1",
            "UserGroupId": "ug-sessions",
            "SnapshotRetentionLimit": 7,
            "DailySnapshotTime": "04:30",
            "CacheUsageLimits": {
                "DataStorage": {"Maximum": 10, "Unit": "GB"},
                "ECPUPerSecond": {"Maximum": 5000},
            },
        }))
        .expect("the API's member names"),
    };
    cache.create(&spec).await.expect("created");

    let raw =
        aws_sdk_elasticache::Client::new(&sdk(&t.lab, DR_REGION, RetryConfig::disabled()).await);
    let out = raw
        .describe_serverless_caches()
        .serverless_cache_name("full-input")
        .send()
        .await
        .unwrap();
    let c = &out.serverless_caches()[0];
    assert_eq!(c.subnet_ids(), ["subnet-a"]);
    assert_eq!(c.security_group_ids(), ["sg-a", "sg-b"]);
    assert_eq!(
        c.kms_key_id(),
        Some("arn:aws:kms:us-west-2:123456789012:key/k1")
    );
    assert_eq!(c.user_group_id(), Some("ug-sessions"));
    assert_eq!(c.snapshot_retention_limit(), Some(7));
    assert_eq!(c.daily_snapshot_time(), Some("04:30"));
    let limits = c.cache_usage_limits().expect("usage limits");
    let storage = limits.data_storage().unwrap();
    assert_eq!(storage.maximum(), Some(10));
    assert_eq!(storage.unit().map(|u| u.as_str()), Some("GB"));
    assert_eq!(limits.ecpu_per_second().unwrap().maximum(), Some(5000));

    let create = &calls(&t.lab, "CreateServerlessCache")[0];
    assert_eq!(
        create.request["snapshot_arns_to_restore"],
        serde_json::json!([
            "arn:aws:elasticache:us-west-2:123456789012:serverlesscachesnapshot:s1"
        ])
    );
    assert_eq!(create.request["tags"]["app"], "sessions");
    assert_eq!(create.request["tags"][FAILOVER_TAG], "fo-2");
    // Stuck `creating`: AWS lists no tags yet, and the adapter says "not yet", which the
    // executor waits out (issue 8, defect 3), rather than a permanent error.
    let info = cache.describe("full-input").await.unwrap().unwrap();
    let refused = cache.tags(&info.arn).await.unwrap_err();
    assert!(
        matches!(&refused, ApiError::NotReady { message, .. } if message.starts_with("InvalidServerlessCacheStateFault")),
        "{refused:?}"
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_calls_read_swap_and_wait_for_insync() {
    let t = one_call_at_a_time().await;
    let (_, dns) = single_shot(&t.lab).await;
    let info = t.lab.info().clone();
    let primary = &info.cache("app-sessions").unwrap().endpoint;
    let spare = &info.cache(SPARE_CACHE).unwrap().endpoint;

    let current = dns
        .record(HOSTED_ZONE_ID, RECORD, "CNAME")
        .await
        .expect("read")
        .expect("the lab's record exists");
    assert_eq!(current, cname(primary, 30));
    // Any case, either form of the zone id, the same record.
    assert_eq!(
        dns.record(
            &format!("/hostedzone/{HOSTED_ZONE_ID}"),
            &RECORD.to_uppercase(),
            "CNAME"
        )
        .await
        .unwrap(),
        Some(current.clone())
    );
    // Listing starts at the next set when ours does not exist: that one is not returned.
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, RECORD, "TXT").await.unwrap(),
        None
    );
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, "nothing.lab.internal.", "CNAME")
            .await
            .unwrap(),
        None
    );

    // A compare from a value the record does not hold: rejected, nothing changed.
    let wrong = [
        Change::Delete(cname(spare, 30)),
        Change::Create(cname(spare, 30)),
    ];
    let err = dns.change(HOSTED_ZONE_ID, &wrong).await.unwrap_err();
    let ApiError::Conflict { message } = &err else {
        panic!("{err:?}");
    };
    assert!(
        message.contains("do not match the current values") && message.contains("request id"),
        "{message}"
    );
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, RECORD, "CNAME").await.unwrap(),
        Some(current.clone())
    );

    // The real compare-and-swap.
    let swap = [
        Change::Delete(current.clone()),
        Change::Create(cname(spare, 45)),
    ];
    let id = dns.change(HOSTED_ZONE_ID, &swap).await.expect("swapped");
    assert!(id.starts_with("/change/C"), "{id}");
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, RECORD, "CNAME").await.unwrap(),
        Some(cname(spare, 45))
    );
    assert_eq!(dns.change_status(&id).await.unwrap(), ChangeStatus::Pending);
    let started = Instant::now();
    while dns.change_status(&id).await.unwrap() != ChangeStatus::InSync {
        assert!(started.elapsed() < DEADLINE, "{id} never INSYNC");
        sleep(POLL).await;
    }
    // The same swap again is now a mismatch.
    assert!(matches!(
        dns.change(HOSTED_ZONE_ID, &swap).await,
        Err(ApiError::Conflict { .. })
    ));

    // TXT values keep their quotes both ways (the lease).
    let lease = RecordSet {
        name: format!("_valkey-dr-lock.{RECORD}"),
        rtype: "TXT".into(),
        ttl: 30,
        values: vec!["\"owner=a failover=f expires=1\"".into()],
    };
    dns.change(HOSTED_ZONE_ID, &[Change::Create(lease.clone())])
        .await
        .unwrap();
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, &lease.name, "TXT")
            .await
            .unwrap(),
        Some(lease)
    );

    let missing = dns
        .change_status("/change/C0000000000000")
        .await
        .unwrap_err();
    assert!(
        matches!(&missing, ApiError::Permanent { call, message }
            if call == "route53:GetChange" && message.starts_with("NoSuchChange")),
        "{missing:?}"
    );
    let zone = dns.record("ZNOTTHELAB", RECORD, "CNAME").await.unwrap_err();
    assert!(
        matches!(&zone, ApiError::Permanent { call, message }
            if call == "route53:ListResourceRecordSets" && message.starts_with("NoSuchHostedZone")),
        "{zone:?}"
    );
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_classified_for_the_executor() {
    let t = lab().await;
    let (cache, dns) = single_shot(&t.lab).await;
    let spec = planned(&t.lab, "fo-sdk-3").cache;
    let throttle = |times| Fault::ApiError {
        service: AwsService::Elasticache,
        action: "CreateServerlessCache".into(),
        code: "Throttling".into(),
        times: Some(times),
        lasting: None,
    };
    t.lab.fault(Fault::ProvisionStuck).await.unwrap();
    t.lab.fault(Fault::ProvisionStuck).await.unwrap();

    // SDK retries off: each throttled call comes back to the executor as transient.
    t.lab.fault(throttle(3)).await.unwrap();
    for _ in 0..3 {
        let err = cache.create(&spec).await.unwrap_err();
        let ApiError::Transient { call, message } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(call, "elasticache:CreateServerlessCache");
        assert!(
            message.starts_with("Throttling: ")
                && message.contains(DR_REGION)
                && message.contains("request id "),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }
    cache.create(&spec).await.expect("the fourth call succeeds");

    // SDK retries on (standard mode): the SDK absorbs the same fault inside one call.
    let retrying = SdkCache::new(
        &sdk(
            &t.lab,
            DR_REGION,
            RetryConfig::standard()
                .with_max_attempts(4)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .await,
    );
    t.lab.fault(throttle(3)).await.unwrap();
    let other = renamed(&spec, "second");
    retrying
        .create(&other)
        .await
        .expect("the SDK retried through the throttling");
    let outcomes: Vec<_> = calls(&t.lab, "CreateServerlessCache")
        .iter()
        .map(|c| (c.status, c.error_code.clone()))
        .collect();
    let throttled = (400, Some("Throttling".to_owned()));
    assert_eq!(
        outcomes,
        vec![
            throttled.clone(),
            throttled.clone(),
            throttled.clone(),
            (200, None),
            throttled.clone(),
            throttled.clone(),
            throttled,
            (200, None),
        ]
    );

    // Bad input: permanent, with the code.
    let bad = renamed(&spec, "Bad_Name");
    let err = cache.create(&bad).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Permanent { message, .. } if message.starts_with("InvalidParameterValue")),
        "{err:?}"
    );

    // A region outage (503 ServiceUnavailable): transient.
    t.lab
        .fault(Fault::RegionOutage {
            region: DR_REGION.into(),
            route53: false,
        })
        .await
        .unwrap();
    let err = cache.describe(DR_CACHE).await.unwrap_err();
    assert!(
        matches!(&err, ApiError::Transient { message, .. } if message.starts_with("ServiceUnavailable")),
        "{err:?}"
    );
    // Route 53 keeps answering; a 500 from it is transient too.
    t.lab
        .fault(Fault::ApiError {
            service: AwsService::Route53,
            action: "GetChange".into(),
            code: "InternalError".into(),
            times: Some(1),
            lasting: None,
        })
        .await
        .unwrap();
    assert!(
        dns.change_status("/change/C1")
            .await
            .unwrap_err()
            .is_transient()
    );

    // A server that accepts and never answers: the call times out, transient.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream);
        }
    });
    let hung = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DR_REGION))
        .endpoint_url(format!("http://{silent_addr}"))
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(RetryConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(Duration::from_millis(300))
                .build(),
        )
        .load()
        .await;
    let err = timeout(DEADLINE, SdkCache::new(&hung).describe(DR_CACHE))
        .await
        .expect("the SDK's timeout fires first")
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Transient { message, .. } if message.contains("timed out")),
        "{err:?}"
    );
    holder.abort();

    // Nobody listening: a dispatch failure, transient.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let nowhere = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DR_REGION))
        .endpoint_url(format!("http://{closed}"))
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(RetryConfig::disabled())
        .load()
        .await;
    let err = SdkCache::new(&nowhere)
        .describe(DR_CACHE)
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    let err = SdkDns::new(&nowhere)
        .record(HOSTED_ZONE_ID, RECORD, "CNAME")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ApiError::Transient { call, .. } if call == "route53:ListResourceRecordSets"),
        "{err:?}"
    );
    t.lab.shutdown().await;
}

/// Verifies with real probe rounds through `valkey-dr-probes`, as the daemon does: TLS against
/// the lab CA, `PING`/`SET`/`GET`, names resolved by the lab DNS. A fresh prober per round, so
/// no cached answer hides the switch.
struct ProbeVerifier {
    /// The watch's probe, from the lab's agent.toml; its endpoint is replaced per round.
    spec: ProbeSpec,
    /// The lab DNS.
    nameservers: Vec<SocketAddr>,
}

impl ProbeVerifier {
    async fn round(
        &self,
        endpoint: &str,
        port: u16,
    ) -> Result<valkey_dr_probes::Observation, String> {
        let prober = Prober::new(&ResolverSettings {
            nameservers: self.nameservers.clone(),
        })
        .map_err(|e| e.to_string())?;
        let spec = ProbeSpec {
            endpoint: endpoint.to_owned(),
            port,
            ..self.spec.clone()
        };
        Ok(prober.round(&spec).await)
    }
}

impl Verifier for ProbeVerifier {
    async fn direct(&self, endpoint: &str, port: u16) -> Result<(), VerifyFailure> {
        let observation = self
            .round(endpoint, port)
            .await
            .map_err(|message| VerifyFailure {
                message,
                own_side: true,
            })?;
        match observation.path(PathKind::Direct) {
            Some(p) if p.ok() => Ok(()),
            other => Err(VerifyFailure {
                message: format!("direct path: {other:?}"),
                own_side: false,
            }),
        }
    }

    async fn resolves_to(&self, endpoint: &str) -> bool {
        self.round(endpoint, self.spec.port)
            .await
            .ok()
            .and_then(|o| o.path(PathKind::Dns).and_then(|p| p.target.clone()))
            .is_some_and(|t| valkey_dr_probes::same_name(&t, endpoint))
    }

    async fn count_keys(&self, _endpoint: &str, _port: u16) -> Result<u64, VerifyFailure> {
        panic!("this suite runs failovers only: nothing is emptied")
    }

    async fn flush(&self, _endpoint: &str, _port: u16) -> Result<(), VerifyFailure> {
        panic!("this suite runs failovers only: nothing is emptied")
    }

    async fn through_record(&self, endpoint: &str) -> Result<(), String> {
        let started = Instant::now();
        loop {
            let observation = self.round(endpoint, self.spec.port).await?;
            let dns = observation.path(PathKind::Dns);
            if dns.is_some_and(|p| p.ok()) && observation.drift().is_none() {
                return Ok(());
            }
            if started.elapsed() >= DEADLINE {
                return Err(format!("dns path: {dns:?}"));
            }
            sleep(POLL).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_fails_over_through_the_sdk() {
    let t = lab().await;
    let config = agent_config(&t.lab);
    let watch = &config.watches[0];
    let plan = valkey_dr::plan::executor_plan(&config, watch, "fo-sdk-run");
    let verifier = ProbeVerifier {
        spec: valkey_dr::spec::probe_spec(&config, watch)
            .await
            .expect("the lab's probe"),
        nameservers: config.dns.nameservers.clone(),
    };
    // As the daemon builds them: one SdkConfig per region, the SDK's retries on.
    let cache = SdkCache::new(&sdk(&t.lab, DR_REGION, RetryConfig::standard()).await);
    let dns = SdkDns::new(&sdk(&t.lab, "us-east-1", RetryConfig::standard()).await);
    let progress = |_: &Journal, e: &JournalEntry| {
        eprintln!("{:?} {:?} {}", e.step, e.phase, e.detail);
    };
    let executor = Executor {
        cache: &cache,
        dns: &dns,
        verify: &verifier,
        path: t.dir.path().join("failover.json"),
        limits: ExecutorLimits {
            attempts: 5,
            backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(500),
            route53_max_backoff: Duration::from_millis(500),
            poll: Duration::from_millis(100),
            not_found_grace: Duration::from_secs(30),
            insync_timeout: DEADLINE,
            alert_every: Duration::from_secs(60),
            lease_poll: Duration::from_millis(200),
        },
        progress: &progress,
        alert: &|_, _| {},
        lease_clock: LeaseClock::default(),
        holding: None,
    };
    let journal = timeout(Duration::from_secs(90), executor.run(Journal::new(plan)))
        .await
        .expect("the failover finishes in time")
        .map_err(|(_, e)| e)
        .expect("the failover succeeds");
    assert!(journal.complete(), "{journal:#?}");

    let dr = t.lab.current_info().cache(DR_CACHE).unwrap().clone();
    assert_eq!(
        journal.endpoint,
        Some((dr.endpoint.clone(), t.lab.info().port))
    );
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, RECORD, "CNAME").await.unwrap(),
        Some(cname(&dr.endpoint, watch.ttl.as_secs() as u32))
    );

    let creates = calls(&t.lab, "CreateServerlessCache");
    assert_eq!(creates.len(), 1, "{creates:#?}");
    assert!(creates[0].succeeded());
    let cname_changes: Vec<Call> = calls(&t.lab, "ChangeResourceRecordSets")
        .into_iter()
        .filter(|c| {
            c.request["changes"]
                .as_array()
                .is_some_and(|a| a.iter().any(|ch| ch["type"] == "CNAME"))
        })
        .collect();
    // The lease is taken right before the switch now (issue 20): the switch may arrive within
    // Route 53's window after the lease's change and be refused once with
    // PriorRequestNotComplete (ledger R2), then retried; one change of the record lands.
    let (landed, refused): (Vec<&Call>, Vec<&Call>) =
        cname_changes.iter().partition(|c| c.succeeded());
    assert_eq!(landed.len(), 1, "{cname_changes:#?}");
    assert!(
        refused
            .iter()
            .all(|c| c.error_code.as_deref() == Some("PriorRequestNotComplete")),
        "{cname_changes:#?}"
    );
    // The lease was taken and released: nothing of it is left in the zone.
    assert_eq!(
        dns.record(HOSTED_ZONE_ID, &format!("_valkey-dr-lock.{RECORD}"), "TXT")
            .await
            .unwrap(),
        None
    );
    t.lab.shutdown().await;
}

/// `spec` for another cache name.
fn renamed(spec: &CacheSpec, name: &str) -> CacheSpec {
    let mut other = spec.clone();
    other.input.serverless_cache_name = name.into();
    other
}
