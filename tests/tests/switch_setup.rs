//! preflight's checks of the health-check switch's set-up (`[watch.switch] kind =
//! "health_check"`, issue 21): the template `valkey-dr template` prints, deployed into the lab
//! by a small deployer of its resource types through the real SDK clients, passes
//! `route53_record` and `switch`; the same template with its alarms in another region than
//! `metric_region` fails `switch`, naming the alarm and both regions, and so does one whose
//! calculated check counts the wrong number of agents.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_route53::types::{
    AlarmIdentifier, ChangeAction, CloudWatchRegion, HealthCheckConfig, HealthCheckType,
    InsufficientDataHealthStatus, ResourceRecord, ResourceRecordSet, ResourceRecordSetFailover,
    RrType,
};
use serde_json::Value;
use support::raw_aws::{change, create_health_check, rrset, send};
use support::{TestLab, run_bounded_within};
use valkey_dr_lab::config::DR_CACHE;
use valkey_dr_lab::{PRIMARY_CACHE, RECORD};

/// `standby create` builds in the lab's provision delay; `template` and `preflight` are quick.
const CLI_BOUND: Duration = Duration::from_secs(90);
/// Where the template is deployed: the DR region, `metric_region`'s default.
const DR_REGION: &str = "us-west-2";

/// A lab whose watch keeps a warm standby (built) and switches through health checks.
async fn setup() -> (TestLab, PathBuf) {
    let lab = TestLab::start_with(|o| {
        o.provision_delay = Duration::from_secs(1);
    })
    .await;
    let config = lab.config_variant(
        "switch.toml",
        &[(
            "create_timeout = \"5m\"\n",
            "create_timeout = \"5m\"\nstandby = \"warm\"\n\n[watch.switch]\nkind = \"health_check\"\n",
        )],
    );
    let built = cli(&config, &["standby", "create"]).await;
    assert!(built.0 == 0, "standby create: {}", built.1);
    (lab, config)
}

/// `valkey-dr <args> --config <config>`: exit code and output.
async fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .stdin(Stdio::null());
    let out = run_bounded_within(command, CLI_BOUND).await;
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn sdk(lab: &TestLab, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .load()
        .await
}

fn endpoint(lab: &TestLab, cache: &str) -> String {
    lab.lab
        .current_info()
        .cache(cache)
        .unwrap_or_else(|| panic!("the lab has no cache {cache}"))
        .endpoint
        .clone()
}

fn resources<'t>(template: &'t Value, kind: &str) -> Vec<(&'t String, &'t Value)> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .map(|(id, r)| (id, &r["Properties"]))
        .collect()
}

fn int(v: &Value) -> i32 {
    v.as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .unwrap_or_else(|| panic!("not an integer: {v}"))
}

/// Deploys `template` into the lab as CloudFormation would, for the four resource types it
/// holds: the alarms in `alarm_region`, the health checks, and the record pair in place of
/// the simple record; the standby exists already (`standby create`).
async fn deploy(lab: &TestLab, template: &Value, alarm_region: &str) {
    let cw = aws_sdk_cloudwatch::Client::new(&sdk(lab, alarm_region).await);
    let r53 = aws_sdk_route53::Client::new(&sdk(lab, "us-east-1").await);
    for (_, p) in resources(template, "AWS::CloudWatch::Alarm") {
        let dimensions = p["Dimensions"]
            .as_array()
            .expect("Dimensions")
            .iter()
            .map(|d| {
                Dimension::builder()
                    .name(d["Name"].as_str().unwrap())
                    .value(d["Value"].as_str().unwrap())
                    .build()
            })
            .collect();
        assert_eq!(p["Statistic"], "Maximum");
        assert_eq!(p["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
        cw.put_metric_alarm()
            .alarm_name(p["AlarmName"].as_str().unwrap())
            .namespace(p["Namespace"].as_str().unwrap())
            .metric_name(p["MetricName"].as_str().unwrap())
            .set_dimensions(Some(dimensions))
            .statistic(Statistic::Maximum)
            .period(int(&p["Period"]))
            .evaluation_periods(int(&p["EvaluationPeriods"]))
            .datapoints_to_alarm(int(&p["DatapointsToAlarm"]))
            .threshold(p["Threshold"].as_f64().unwrap())
            .comparison_operator(ComparisonOperator::GreaterThanOrEqualToThreshold)
            .treat_missing_data(p["TreatMissingData"].as_str().unwrap())
            .send()
            .await
            .expect("PutMetricAlarm");
    }
    // The alarm-based checks first: the calculated one names them.
    let checks = resources(template, "AWS::Route53::HealthCheck");
    let mut ids: BTreeMap<String, String> = BTreeMap::new();
    for (logical, p) in checks
        .iter()
        .filter(|(_, p)| p["HealthCheckConfig"]["Type"] == "CLOUDWATCH_METRIC")
    {
        let c = &p["HealthCheckConfig"];
        let alarm = c["AlarmIdentifier"]["Name"]["Ref"].as_str().unwrap();
        let name = template["Resources"][alarm]["Properties"]["AlarmName"]
            .as_str()
            .unwrap();
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::CloudwatchMetric)
            .alarm_identifier(
                AlarmIdentifier::builder()
                    .region(CloudWatchRegion::from(alarm_region))
                    .name(name)
                    .build()
                    .unwrap(),
            )
            .insufficient_data_health_status(InsufficientDataHealthStatus::from(
                c["InsufficientDataHealthStatus"].as_str().unwrap(),
            ))
            .build()
            .unwrap();
        ids.insert(
            (*logical).clone(),
            create_health_check(&r53, logical, config).await,
        );
    }
    for (logical, p) in checks
        .iter()
        .filter(|(_, p)| p["HealthCheckConfig"]["Type"] == "CALCULATED")
    {
        let c = &p["HealthCheckConfig"];
        let children = c["ChildHealthChecks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| ids[r["Ref"].as_str().unwrap()].clone())
            .collect();
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::Calculated)
            .health_threshold(int(&c["HealthThreshold"]))
            .set_child_health_checks(Some(children))
            .build()
            .unwrap();
        ids.insert(
            (*logical).clone(),
            create_health_check(&r53, logical, config).await,
        );
    }
    // The pair in place of the simple record, in one batch.
    let primary = endpoint(lab, PRIMARY_CACHE);
    let ttl = i64::try_from(lab.lab.info().ttl_s).expect("a TTL");
    let mut changes = vec![change(
        ChangeAction::Delete,
        rrset(RECORD, RrType::Cname, ttl, &[&primary]),
    )];
    for (_, p) in resources(template, "AWS::Route53::RecordSet") {
        let target = match &p["ResourceRecords"][0] {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.contains_key("Fn::GetAtt") => endpoint(lab, DR_CACHE),
            Value::Object(o) if o.contains_key("Ref") => primary.clone(),
            other => panic!("a record value the deployer does not know: {other}"),
        };
        let failover = match p["Failover"].as_str().unwrap() {
            "PRIMARY" => ResourceRecordSetFailover::Primary,
            _ => ResourceRecordSetFailover::Secondary,
        };
        let check = p["HealthCheckId"]["Ref"].as_str().map(|r| ids[r].clone());
        let set = ResourceRecordSet::builder()
            .name(p["Name"].as_str().unwrap())
            .r#type(RrType::Cname)
            .ttl(p["TTL"].as_str().unwrap().parse().unwrap())
            .set_identifier(p["SetIdentifier"].as_str().unwrap())
            .failover(failover)
            .set_health_check_id(check)
            .resource_records(ResourceRecord::builder().value(target).build().unwrap())
            .build()
            .unwrap();
        changes.push(change(ChangeAction::Create, set));
    }
    send(&r53, changes, Some("deploy valkey-dr template"))
        .await
        .expect("the failover pair replaces the record");
}

/// The template for `config`, as JSON.
async fn template(config: &Path) -> Value {
    let (code, output) = cli(config, &["template", "--format", "json"]).await;
    assert_eq!(code, 0, "{output}");
    serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

fn check<'j>(json: &'j Value, name: &str) -> &'j Value {
    json["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["check"] == name))
        .unwrap_or_else(|| panic!("no check {name}: {json:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_template_passes_preflight_and_its_alarms_elsewhere_fail_it() {
    let (lab, config) = setup().await;
    // Before the set-up: the record is a simple CNAME.
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(code, 2, "CRITICAL before the set-up: {output}");
    assert_eq!(check(&json, "route53_record")["result"], "fail", "{output}");
    assert_eq!(check(&json, "switch")["result"], "fail", "{output}");

    deploy(&lab, &template(&config).await, DR_REGION).await;
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(check(&json, "route53_record")["result"], "ok", "{output}");
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "ok", "{output}");
    assert!(
        switch["found"]
            .as_str()
            .unwrap()
            .contains("healthy while 1 of 1 agents' checks are"),
        "{switch:#}"
    );
    assert_eq!(code, 0, "every check passes: {output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_deployed_with_its_alarms_in_another_region_fails_the_switch_check() {
    let (lab, config) = setup().await;
    deploy(&lab, &template(&config).await, "us-east-2").await;
    let (code, json, output) = support::preflight_json(&config).await;
    assert_eq!(code, 2, "CRITICAL: {output}");
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "fail", "{output}");
    let found = switch["found"].as_str().unwrap();
    assert!(
        found.contains("watches alarm valkey-dr-sessions-lab-agent in us-east-2, not in metric_region us-west-2"),
        "{switch:#}"
    );
    assert!(
        switch["fix"]
            .as_str()
            .unwrap()
            .contains("valkey-dr template --watch sessions"),
        "{switch:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_calculated_check_that_counts_the_wrong_agents_fails_the_switch_check() {
    let (lab, config) = setup().await;
    // The template of a config that names a second agent: one child more than this config's
    // agent count, and a threshold for two.
    let mut t = template(&config).await;
    let quorum = resources(&t, "AWS::Route53::HealthCheck")
        .into_iter()
        .find(|(_, p)| p["HealthCheckConfig"]["Type"] == "CALCULATED")
        .map(|(id, _)| id.clone())
        .unwrap();
    t["Resources"][&quorum]["Properties"]["HealthCheckConfig"]["HealthThreshold"] = 2.into();
    deploy(&lab, &t, DR_REGION).await;
    let (_, json, output) = support::preflight_json(&config).await;
    let switch = check(&json, "switch");
    assert_eq!(switch["result"], "fail", "{output}");
    assert!(
        switch["found"].as_str().unwrap().contains(
            "is healthy while 2 children are; with 1 agents and a quorum of 1 it must be 1"
        ),
        "{switch:#}"
    );
}
