//! The lab's data-plane switch (issue 21): CloudWatch alarms evaluated by period, Route 53
//! health checks following them, and the DNS server answering a failover pair by their
//! status, all through the real SDK clients (`aws-sdk-cloudwatch`'s RPC v2 CBOR,
//! `aws-sdk-route53`'s REST-XML) and a real resolver over UDP and TCP (tests/FIDELITY.md,
//! rows C1–C4 and R11–R16).
//!
//! Every test has its own lab with short knobs (a CloudWatch minute of `PERIOD`, checks
//! following their alarm after `DELAY`); every wait is bounded by what the knobs make of the
//! alarm's `EvaluationPeriods`.

mod support;

use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudwatch::error::ProvideErrorMetadata;
use aws_sdk_cloudwatch::types::{
    ComparisonOperator, Dimension, MetricDatum, StateValue, Statistic,
};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_route53::types::{
    AlarmIdentifier, ChangeAction, CloudWatchRegion, HealthCheckConfig, HealthCheckType,
    InsufficientDataHealthStatus, ResourceRecord, ResourceRecordSet, ResourceRecordSetFailover,
    RrType,
};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::rr::RecordType;
use hickory_resolver::proto::xfer::Protocol;
use support::raw_aws::{change, create_health_check, rrset, send};
use support::wait_until;
use tokio::task::JoinHandle;
use valkey_dr_lab::config::HOSTED_ZONE_ID;
use valkey_dr_lab::{Fault, Lab, LabOptions, PRIMARY_CACHE, RECORD, Role};

/// The lab's CloudWatch minute: an alarm of `Period` 60 evaluates once per this.
const PERIOD: Duration = Duration::from_millis(250);
/// How long after its alarm a health check follows.
const DELAY: Duration = Duration::from_millis(300);
/// The alarms' M of N.
const EVALUATION_PERIODS: i32 = 3;
const DATAPOINTS_TO_ALARM: i32 = 2;
/// How often the agents' stand-ins publish their verdict: several times a period.
const PUBLISH_EVERY: Duration = Duration::from_millis(60);
const NAMESPACE: &str = "ValkeyDR";
const METRIC: &str = "PrimaryDown";
const REGION: &str = "us-east-1";

/// The longest an alarm takes to follow its metric: `EvaluationPeriods` full periods, the
/// period in progress, and the health check's delay, with room for a loaded machine.
fn switch_bound() -> Duration {
    PERIOD * (EVALUATION_PERIODS as u32 + 2) + DELAY + Duration::from_secs(5)
}

struct TestLab {
    lab: Lab,
    dir: tempfile::TempDir,
}

impl TestLab {
    /// Checks every call the lab answered against botocore's models (CloudWatch's CBOR
    /// answers parsed as sent), leaving out the requests in `invalid`, sent to be refused.
    async fn botocore_agrees(&self, invalid: Vec<u64>) {
        let calls = self.lab.calls();
        let scratch = self.dir.path().to_owned();
        let checked = tokio::task::spawn_blocking(move || {
            valkey_dr_lab::botocore_check(&calls, &invalid, &scratch)
        })
        .await
        .expect("the check runs");
        if let Err(e) = checked {
            panic!("botocore disagrees: {e}");
        }
    }
}

async fn lab() -> TestLab {
    let dir = tempfile::tempdir().expect("tempdir");
    let lab = Lab::start(LabOptions {
        seed: Some(21),
        alarm_period: PERIOD,
        health_check_delay: DELAY,
        ..LabOptions::new(dir.path())
    })
    .await
    .expect("the lab starts");
    TestLab { lab, dir }
}

async fn sdk(lab: &Lab, retries: u32) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .endpoint_url(&lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .retry_config(RetryConfig::standard().with_max_attempts(retries))
        .load()
        .await
}

/// The error's code, or `None` for a success.
fn code<T, E: ProvideErrorMetadata>(result: &Result<T, E>) -> Option<String> {
    result
        .as_ref()
        .err()
        .map(|e| e.code().unwrap_or_default().to_owned())
}

/// The record's CNAME as the lab's DNS answers it over `protocol`, without a cache.
async fn record_over(lab: &Lab, protocol: Protocol) -> Option<String> {
    let mut config = ResolverConfig::new();
    config.add_name_server(NameServerConfig::new(lab.info().dns, protocol));
    let mut opts = ResolverOpts::default();
    opts.timeout = Duration::from_secs(2);
    opts.attempts = 1;
    opts.cache_size = 0;
    let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
        .with_options(opts)
        .build();
    let lookup = resolver.lookup(RECORD, RecordType::CNAME).await.ok()?;
    lookup
        .record_iter()
        .find(|r| r.record_type() == RecordType::CNAME)
        .map(|r| r.data().to_string())
}

/// Waits until both UDP and TCP answer `target`, within [`switch_bound`].
async fn dns_answers(lab: &Lab, target: &str) -> bool {
    wait_until(switch_bound(), || async {
        record_over(lab, Protocol::Udp).await.as_deref() == Some(target)
            && record_over(lab, Protocol::Tcp).await.as_deref() == Some(target)
    })
    .await
}

fn endpoint(lab: &Lab, role: Role) -> String {
    let cache = lab.info().cache_with_role(role).expect("the lab has it");
    format!("{}.", cache.endpoint.trim_end_matches('.'))
}

fn dimensions(agent: &str) -> Vec<Dimension> {
    vec![
        Dimension::builder().name("Watch").value("app").build(),
        Dimension::builder().name("Agent").value(agent).build(),
    ]
}

fn alarm_name(agent: &str) -> String {
    format!("valkey-dr-app-{agent}")
}

/// One alarm per agent: `Maximum >= 1` for `DATAPOINTS_TO_ALARM` of `EVALUATION_PERIODS`
/// periods of 60 s, missing data `missing`.
async fn put_alarm(cw: &aws_sdk_cloudwatch::Client, agent: &str) {
    cw.put_metric_alarm()
        .alarm_name(alarm_name(agent))
        .namespace(NAMESPACE)
        .metric_name(METRIC)
        .set_dimensions(Some(dimensions(agent)))
        .statistic(Statistic::Maximum)
        .period(60)
        .evaluation_periods(EVALUATION_PERIODS)
        .datapoints_to_alarm(DATAPOINTS_TO_ALARM)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .treat_missing_data("missing")
        .send()
        .await
        .expect("PutMetricAlarm");
}

/// Stands in for the agents: publishes each one's verdict every [`PUBLISH_EVERY`], as the
/// shared table says now.
fn publish(
    cw: aws_sdk_cloudwatch::Client,
    verdicts: std::sync::Arc<std::sync::Mutex<Vec<(String, f64)>>>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let now: Vec<(String, f64)> = verdicts.lock().expect("verdicts").clone();
            for (agent, value) in now {
                // Refused while CloudWatch is down: the agent would retry on its next round.
                let _ = cw
                    .put_metric_data()
                    .namespace(NAMESPACE)
                    .metric_data(
                        MetricDatum::builder()
                            .metric_name(METRIC)
                            .set_dimensions(Some(dimensions(&agent)))
                            .value(value)
                            .build(),
                    )
                    .send()
                    .await;
            }
            tokio::time::sleep(PUBLISH_EVERY).await;
        }
    })
}

async fn alarm_state(cw: &aws_sdk_cloudwatch::Client, agent: &str) -> Option<StateValue> {
    let out = cw
        .describe_alarms()
        .alarm_names(alarm_name(agent))
        .send()
        .await
        .ok()?;
    out.metric_alarms().first()?.state_value().cloned()
}

fn alarm_check(agent: &str) -> HealthCheckConfig {
    HealthCheckConfig::builder()
        .r#type(HealthCheckType::CloudwatchMetric)
        .alarm_identifier(
            AlarmIdentifier::builder()
                .region(CloudWatchRegion::UsEast1)
                .name(alarm_name(agent))
                .build()
                .expect("alarm identifier"),
        )
        .insufficient_data_health_status(InsufficientDataHealthStatus::Healthy)
        .build()
        .expect("config")
}

fn failover_set(
    id: &str,
    role: ResourceRecordSetFailover,
    target: &str,
    check: Option<&str>,
) -> ResourceRecordSet {
    ResourceRecordSet::builder()
        .name(RECORD)
        .r#type(RrType::Cname)
        .ttl(30)
        .set_identifier(id)
        .failover(role)
        .set_health_check_id(check.map(str::to_owned))
        .resource_records(
            ResourceRecord::builder()
                .value(target)
                .build()
                .expect("value"),
        )
        .build()
        .expect("set")
}

/// What every test builds: three agents' alarms, their checks, the calculated check with
/// `HealthThreshold` n - quorum + 1 = 2, and the record replaced by a failover pair (PRIMARY
/// the primary with the calculated check, SECONDARY the spare as the warm standby).
struct Switch {
    cw: aws_sdk_cloudwatch::Client,
    r53: aws_sdk_route53::Client,
    checks: Vec<String>,
    calculated: String,
    primary: String,
    standby: String,
    verdicts: std::sync::Arc<std::sync::Mutex<Vec<(String, f64)>>>,
    publisher: JoinHandle<()>,
}

const AGENTS: [&str; 3] = ["a", "b", "c"];

async fn switch(lab: &Lab) -> Switch {
    let cw = aws_sdk_cloudwatch::Client::new(&sdk(lab, 3).await);
    let r53 = aws_sdk_route53::Client::new(&sdk(lab, 8).await);
    for agent in AGENTS {
        put_alarm(&cw, agent).await;
    }
    let mut checks = Vec::new();
    for agent in AGENTS {
        checks.push(create_health_check(&r53, &format!("check-{agent}"), alarm_check(agent)).await);
    }
    let calculated = create_health_check(
        &r53,
        "check-quorum",
        HealthCheckConfig::builder()
            .r#type(HealthCheckType::Calculated)
            .health_threshold(2)
            .set_child_health_checks(Some(checks.clone()))
            .build()
            .expect("config"),
    )
    .await;
    let primary = endpoint(lab, Role::Primary);
    let standby = endpoint(lab, Role::Spare);
    send(
        &r53,
        vec![
            change(
                ChangeAction::Delete,
                rrset(RECORD, RrType::Cname, 30, &[&primary]),
            ),
            change(
                ChangeAction::Create,
                failover_set(
                    "primary",
                    ResourceRecordSetFailover::Primary,
                    &primary,
                    Some(&calculated),
                ),
            ),
            change(
                ChangeAction::Create,
                failover_set(
                    "standby",
                    ResourceRecordSetFailover::Secondary,
                    &standby,
                    None,
                ),
            ),
        ],
        Some("issue 21: the data-plane switch"),
    )
    .await
    .expect("the failover pair replaces the record");
    let verdicts = std::sync::Arc::new(std::sync::Mutex::new(
        AGENTS.iter().map(|a| (a.to_string(), 0.0)).collect(),
    ));
    let publisher = publish(cw.clone(), verdicts.clone());
    Switch {
        cw,
        r53,
        checks,
        calculated,
        primary,
        standby,
        verdicts,
        publisher,
    }
}

impl Switch {
    fn say(&self, agent: &str, down: bool) {
        for (a, v) in self.verdicts.lock().expect("verdicts").iter_mut() {
            if a == agent {
                *v = if down { 1.0 } else { 0.0 };
            }
        }
    }

    async fn wait_alarm(&self, agent: &str, state: StateValue) -> bool {
        wait_until(switch_bound(), || async {
            alarm_state(&self.cw, agent).await == Some(state.clone())
        })
        .await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_of_alarms_moves_the_record_to_the_standby_and_back() {
    let t = lab().await;
    let s = switch(&t.lab).await;
    assert_ne!(s.primary, s.standby);
    assert_eq!(
        alarm_state(&s.cw, "a").await,
        Some(StateValue::InsufficientData),
        "a new alarm starts with insufficient data"
    );
    assert!(dns_answers(&t.lab, &s.primary).await, "PRIMARY at first");
    for agent in AGENTS {
        assert!(s.wait_alarm(agent, StateValue::Ok).await, "{agent} OK");
    }

    // The listing shows the pair with its routing fields.
    let listed = s
        .r53
        .list_resource_record_sets()
        .hosted_zone_id(HOSTED_ZONE_ID)
        .start_record_name(RECORD)
        .start_record_type(RrType::Cname)
        .send()
        .await
        .expect("ListResourceRecordSets");
    let pair: Vec<(
        Option<&str>,
        Option<&ResourceRecordSetFailover>,
        Option<&str>,
    )> = listed
        .resource_record_sets()
        .iter()
        .filter(|r| r.name() == RECORD)
        .map(|r| (r.set_identifier(), r.failover(), r.health_check_id()))
        .collect();
    assert_eq!(
        pair,
        vec![
            (
                Some("primary"),
                Some(&ResourceRecordSetFailover::Primary),
                Some(s.calculated.as_str())
            ),
            (
                Some("standby"),
                Some(&ResourceRecordSetFailover::Secondary),
                None
            ),
        ]
    );

    // One agent saying "down" is not a quorum: its check goes unhealthy, the record stays.
    s.say("a", true);
    assert!(s.wait_alarm("a", StateValue::Alarm).await, "a in ALARM");
    let a_unhealthy = wait_until(switch_bound(), || async {
        let status = s
            .r53
            .get_health_check_status()
            .health_check_id(&s.checks[0])
            .send()
            .await
            .expect("GetHealthCheckStatus");
        status.health_check_observations()[0]
            .status_report()
            .and_then(|r| r.status())
            .is_some_and(|r| r.starts_with("Failure"))
    })
    .await;
    assert!(a_unhealthy, "a's check follows its alarm");
    assert_eq!(
        record_over(&t.lab, Protocol::Udp).await,
        Some(s.primary.clone())
    );
    assert_eq!(
        code(
            &s.r53
                .get_health_check_status()
                .health_check_id(&s.calculated)
                .send()
                .await
        )
        .as_deref(),
        Some("InvalidInput"),
        "a calculated check has no observations"
    );

    // Two of three: the calculated check is unhealthy and DNS answers SECONDARY.
    s.say("b", true);
    assert!(s.wait_alarm("b", StateValue::Alarm).await, "b in ALARM");
    assert!(
        dns_answers(&t.lab, &s.standby).await,
        "SECONDARY on a quorum"
    );
    assert_eq!(alarm_state(&s.cw, "c").await, Some(StateValue::Ok));

    // Back to fine: PRIMARY again.
    s.say("a", false);
    s.say("b", false);
    assert!(s.wait_alarm("a", StateValue::Ok).await);
    assert!(
        dns_answers(&t.lab, &s.primary).await,
        "PRIMARY once the alarms clear"
    );
    s.publisher.abort();
    t.botocore_agrees(Vec::new()).await;
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_are_data_plane_and_an_unreadable_alarm_is_insufficient_data() {
    let t = lab().await;
    let s = switch(&t.lab).await;
    s.say("a", true);
    s.say("b", true);
    assert!(
        dns_answers(&t.lab, &s.standby).await,
        "SECONDARY on a quorum"
    );

    // Route 53's API down: its calls fail, the health checks and the DNS go on following
    // the alarms.
    t.lab
        .fault(Fault::Route53ControlDown)
        .await
        .expect("route53-control-down");
    let once = aws_sdk_route53::Client::new(&sdk(&t.lab, 1).await);
    assert_eq!(
        code(
            &once
                .get_health_check()
                .health_check_id(&s.calculated)
                .send()
                .await
        )
        .as_deref(),
        Some("ServiceUnavailable")
    );
    assert_eq!(
        code(&once.list_health_checks().send().await).as_deref(),
        Some("ServiceUnavailable")
    );
    s.say("a", false);
    s.say("b", false);
    assert!(
        dns_answers(&t.lab, &s.primary).await,
        "the record follows the alarms while Route 53's API is down"
    );
    t.lab
        .fault(Fault::Route53ControlUp)
        .await
        .expect("route53-control-up");

    // CloudWatch down in the alarms' region: its calls answer 503 in its own form, and the
    // checks, unable to read their alarms, take InsufficientDataHealthStatus (Healthy).
    s.say("a", true);
    s.say("b", true);
    assert!(dns_answers(&t.lab, &s.standby).await, "SECONDARY again");
    t.lab
        .fault(Fault::CloudwatchDown {
            region: REGION.into(),
        })
        .await
        .expect("cloudwatch-down");
    let cw_once = aws_sdk_cloudwatch::Client::new(&sdk(&t.lab, 1).await);
    let refused = cw_once.describe_alarms().send().await;
    assert_eq!(code(&refused).as_deref(), Some("ServiceUnavailable"));
    let call = t
        .lab
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.action == "DescribeAlarms")
        .expect("logged");
    assert_eq!(call.status, 503);
    assert!(
        dns_answers(&t.lab, &s.primary).await,
        "Healthy without data"
    );
    let healthy = s
        .r53
        .get_health_check_status()
        .health_check_id(&s.checks[0])
        .send()
        .await
        .expect("Route 53 answers");
    assert!(
        healthy.health_check_observations()[0]
            .status_report()
            .and_then(|r| r.status())
            .is_some_and(|r| r.starts_with("Success"))
    );
    t.lab
        .fault(Fault::CloudwatchUp {
            region: REGION.into(),
        })
        .await
        .expect("cloudwatch-up");
    assert!(
        dns_answers(&t.lab, &s.standby).await,
        "the alarms are read again"
    );

    // A region outage takes its CloudWatch down too.
    t.lab
        .fault(Fault::RegionOutage {
            region: REGION.into(),
            route53: false,
        })
        .await
        .expect("region-outage");
    assert_eq!(
        code(&cw_once.describe_alarms().send().await).as_deref(),
        Some("ServiceUnavailable")
    );
    assert!(
        dns_answers(&t.lab, &s.primary).await,
        "Healthy without data"
    );
    s.publisher.abort();
    t.botocore_agrees(Vec::new()).await;
    t.lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_inputs_are_refused_with_aws_codes() {
    let t = lab().await;
    let cw = aws_sdk_cloudwatch::Client::new(&sdk(&t.lab, 1).await);
    let r53 = aws_sdk_route53::Client::new(&sdk(&t.lab, 8).await);
    let datum = |name: &str| MetricDatum::builder().metric_name(name).value(1.0).build();

    // CloudWatch, in its own error form (the SDK reads the Query code).
    let reserved = cw
        .put_metric_data()
        .namespace("AWS/EC2")
        .metric_data(datum("m"))
        .send()
        .await;
    assert_eq!(code(&reserved).as_deref(), Some("InvalidParameterValue"));
    assert!(
        reserved
            .unwrap_err()
            .into_service_error()
            .is_invalid_parameter_value_exception()
    );
    let many: Vec<Dimension> = (0..31)
        .map(|i| {
            Dimension::builder()
                .name(format!("d{i}"))
                .value("v")
                .build()
        })
        .collect();
    let too_many = cw
        .put_metric_data()
        .namespace(NAMESPACE)
        .metric_data(
            MetricDatum::builder()
                .metric_name("m")
                .value(1.0)
                .set_dimensions(Some(many))
                .build(),
        )
        .send()
        .await;
    assert_eq!(code(&too_many).as_deref(), Some("ValidationError"));
    let high_resolution = cw
        .put_metric_alarm()
        .alarm_name("x")
        .namespace(NAMESPACE)
        .metric_name("m")
        .statistic(Statistic::Maximum)
        .period(45)
        .evaluation_periods(1)
        .threshold(1.0)
        .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
        .send()
        .await;
    assert_eq!(
        code(&high_resolution).as_deref(),
        Some("InvalidParameterValue")
    );
    put_alarm(&cw, "a").await;
    cw.delete_alarms()
        .alarm_names(alarm_name("a"))
        .alarm_names("no-such-alarm")
        .send()
        .await
        .expect("an incorrect name does not fail the call");
    assert_eq!(
        alarm_state(&cw, "a").await,
        None,
        "the correct one is deleted"
    );

    // A large PutMetricData is gzip-compressed by the SDK, and read.
    let big: Vec<MetricDatum> = (0..400)
        .map(|i| {
            MetricDatum::builder()
                .metric_name(format!("metric-{i:04}-{}", "x".repeat(40)))
                .value(f64::from(i))
                .build()
        })
        .collect();
    cw.put_metric_data()
        .namespace(NAMESPACE)
        .set_metric_data(Some(big))
        .send()
        .await
        .expect("a compressed PutMetricData");
    let call = t
        .lab
        .calls()
        .into_iter()
        .rev()
        .find(|c| c.action == "PutMetricData")
        .expect("logged");
    assert_eq!(call.status, 200);
    assert_eq!(call.request["content_encoding"], "gzip");

    // Route 53's health checks.
    let unknown_child = r53
        .create_health_check()
        .caller_reference("r-1")
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Calculated)
                .health_threshold(1)
                .child_health_checks("no-such-check")
                .build()
                .expect("config"),
        )
        .send()
        .await;
    assert_eq!(code(&unknown_child).as_deref(), Some("NoSuchHealthCheck"));
    let children: Vec<String> = (0..257).map(|i| format!("c{i}")).collect();
    let too_many_children = r53
        .create_health_check()
        .caller_reference("r-2")
        .health_check_config(
            HealthCheckConfig::builder()
                .r#type(HealthCheckType::Calculated)
                .health_threshold(1)
                .set_child_health_checks(Some(children))
                .build()
                .expect("config"),
        )
        .send()
        .await;
    assert_eq!(code(&too_many_children).as_deref(), Some("InvalidInput"));
    let first = create_health_check(&r53, "r-3", alarm_check("a")).await;
    assert_eq!(
        create_health_check(&r53, "r-3", alarm_check("a")).await,
        first,
        "the same reference and settings answer the same check"
    );
    let other = r53
        .create_health_check()
        .caller_reference("r-3")
        .health_check_config(alarm_check("b"))
        .send()
        .await;
    assert!(
        other
            .unwrap_err()
            .into_service_error()
            .is_health_check_already_exists()
    );
    let listed = r53
        .list_health_checks()
        .send()
        .await
        .expect("ListHealthChecks");
    assert_eq!(listed.health_checks().len(), 1);
    assert_eq!(
        r53.get_health_check()
            .health_check_id(&first)
            .send()
            .await
            .expect("GetHealthCheck")
            .health_check()
            .and_then(|c| c.health_check_config())
            .and_then(|c| c.insufficient_data_health_status()),
        Some(&InsufficientDataHealthStatus::Healthy)
    );

    // Failover records: a health check that does not exist, a missing SetIdentifier.
    let primary = format!(
        "{}.",
        t.lab.info().cache(PRIMARY_CACHE).expect("primary").endpoint
    );
    let unknown_check = send(
        &r53,
        vec![change(
            ChangeAction::Create,
            failover_set(
                "p",
                ResourceRecordSetFailover::Primary,
                &primary,
                Some("nope"),
            ),
        )],
        None,
    )
    .await;
    assert_eq!(code(&unknown_check).as_deref(), Some("NoSuchHealthCheck"));
    let mut no_id = failover_set("p", ResourceRecordSetFailover::Primary, &primary, None);
    no_id.set_identifier = None;
    let refused = send(&r53, vec![change(ChangeAction::Create, no_id)], None).await;
    assert_eq!(code(&refused).as_deref(), Some("InvalidInput"));
    let beside_simple = send(
        &r53,
        vec![change(
            ChangeAction::Create,
            failover_set(
                "p",
                ResourceRecordSetFailover::Primary,
                &primary,
                Some(&first),
            ),
        )],
        None,
    )
    .await;
    assert_eq!(code(&beside_simple).as_deref(), Some("InvalidChangeBatch"));

    r53.delete_health_check()
        .health_check_id(&first)
        .send()
        .await
        .expect("DeleteHealthCheck");
    let again = r53
        .delete_health_check()
        .health_check_id(&first)
        .send()
        .await;
    assert_eq!(code(&again).as_deref(), Some("NoSuchHealthCheck"));
    let reused = r53
        .create_health_check()
        .caller_reference("r-3")
        .health_check_config(alarm_check("a"))
        .send()
        .await;
    assert_eq!(
        code(&reused).as_deref(),
        Some("HealthCheckAlreadyExists"),
        "a deleted check's reference cannot be used again"
    );
    // Sent to break the model's own limits (31 dimensions, 257 children).
    let invalid = t
        .lab
        .calls()
        .iter()
        .filter(|c| {
            c.error_code.as_deref() == Some("ValidationError")
                || (c.action == "CreateHealthCheck"
                    && c.error_code.as_deref() == Some("InvalidInput"))
        })
        .map(|c| c.seq)
        .collect();
    t.botocore_agrees(invalid).await;
    t.lab.shutdown().await;
}
