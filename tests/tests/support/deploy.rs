//! The health-check switch's set-up (`[watch.switch] kind = "health_check"`, issue 21), as an
//! operator makes it: `valkey-dr template --format json` deployed into the lab as
//! CloudFormation would, through the real SDK clients, for the four resource types the template
//! holds; the warm standby is built beforehand with `valkey-dr standby create`.

use std::collections::BTreeMap;
use std::path::Path;
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
use valkey_dr_lab::config::DR_CACHE;
use valkey_dr_lab::{PRIMARY_CACHE, RECORD};

use super::raw_aws::{change, create_health_check, rrset, send};
use super::{TestLab, run_bounded_within};

/// `standby create` builds in the lab's provision delay; `template` and `preflight` are quick.
pub const CLI_BOUND: Duration = Duration::from_secs(90);
/// Where the template is deployed: the DR region, `metric_region`'s default.
pub const DR_REGION: &str = "us-west-2";

/// The edit of the lab's agent.toml that gives its watch a warm standby and the health-check
/// switch.
pub const HEALTH_CHECK_SWITCH: (&str, &str) = (
    "create_timeout = \"5m\"\n",
    "create_timeout = \"5m\"\nstandby = \"warm\"\n\n[watch.switch]\nkind = \"health_check\"\n",
);

/// `valkey-dr <args> --config <config>`, bounded by [`CLI_BOUND`]: exit code and output.
pub async fn cli(config: &Path, args: &[&str]) -> (i32, String) {
    let mut command = tokio::process::Command::new(super::agent_bin());
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

/// The SDK's configuration for the lab in `region`, with the lab's dummy keys.
pub async fn sdk(lab: &TestLab, region: &str) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .load()
        .await
}

/// The endpoint of the lab's cache `cache` now (the standby is made after the lab starts).
pub fn endpoint(lab: &TestLab, cache: &str) -> String {
    lab.lab
        .current_info()
        .cache(cache)
        .unwrap_or_else(|| panic!("the lab has no cache {cache}"))
        .endpoint
        .clone()
}

/// The template's resources of type `kind`: (logical id, properties).
pub fn resources<'t>(template: &'t Value, kind: &str) -> Vec<(&'t String, &'t Value)> {
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

/// The template `valkey-dr template --format json` prints for `config`.
pub async fn template(config: &Path) -> Value {
    let (code, output) = cli(config, &["template", "--format", "json"]).await;
    assert_eq!(code, 0, "{output}");
    serde_json::from_str(&output).unwrap_or_else(|e| panic!("{e}: {output}"))
}

/// Deploys `template` into the lab as CloudFormation would, for the four resource types it
/// holds: the alarms in `alarm_region`, the health checks, and the record pair in place of
/// the simple record; the standby exists already (`standby create`).
///
/// Route 53 refuses a failover record beside a simple one of the same name and type, and
/// CloudFormation cannot delete one and create the other in one change: the pair replaces the
/// lab's simple CNAME in one `ChangeResourceRecordSets` batch, as the README tells operators.
pub async fn deploy(lab: &TestLab, template: &Value, alarm_region: &str) {
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
