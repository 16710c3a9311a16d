//! Deploys the health-check switch's CloudFormation template (what `valkey-dr template
//! --format json` prints) into a running lab, as CloudFormation would, through the real SDK
//! clients and the lab's AWS endpoint: the alarms (`PutMetricAlarm`), the alarm-based and
//! calculated health checks (`CreateHealthCheck`) and the record's failover pair, which
//! replaces the simple record of the same name in one `ChangeResourceRecordSets` batch
//! (Route 53 refuses a failover record beside a simple one; CloudFormation cannot swap them in
//! one change, the README says how operators do it).
//!
//! It knows the four resource types the template deploys and no others; the warm standby
//! (`AWS::ElastiCache::ServerlessCache`) must exist already (`valkey-dr standby create`, the
//! same request): its endpoint is read from the lab by the cache's name. A `Ref` to a
//! parameter (the primary's endpoint, when the config names none) is the lab's cache the
//! simple record points at.
//!
//! It never leaves loopback (the lab's endpoint only), and every call is bounded by
//! [`CALL_TIMEOUT`].

use std::collections::BTreeMap;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_cloudwatch::types::{ComparisonOperator, Dimension, Statistic};
use aws_sdk_route53::config::Credentials;
use aws_sdk_route53::types::{
    AlarmIdentifier, Change, ChangeAction, ChangeBatch, CloudWatchRegion, HealthCheckConfig,
    HealthCheckType, InsufficientDataHealthStatus, ResourceRecord, ResourceRecordSet,
    ResourceRecordSetFailover, RrType,
};
use serde_json::Value;

use crate::{LAB_AWS_ENV, LabInfo, ROUTE53_CONTROL_REGION};

/// Each call, retries included, ends within this.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// What a deployment made, for a caller that checks or removes it.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    /// The alarms' names, and the region they were put in.
    pub alarms: Vec<String>,
    /// Where the alarms live (the template's `AlarmIdentifier.Region`, unless overridden).
    pub alarm_region: String,
    /// Each health check's id, by its logical id in the template.
    pub health_checks: BTreeMap<String, String>,
    /// The set identifiers of the records created, and the value each answers.
    pub records: Vec<(String, String)>,
    /// The Route 53 change that swapped the simple record for the pair.
    pub change_id: String,
}

/// Why a deployment stopped. What was made before the error stays made.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The template lacks something the deployer needs, or holds what it does not know.
    #[error("the template's {resource}: {what}")]
    Template {
        /// The logical id (or the section) at fault.
        resource: String,
        /// What is wrong with it.
        what: String,
    },
    /// A record's value names a cache the lab does not have.
    #[error("the lab has no cache {name}, whose endpoint {resource} answers")]
    NoCache {
        /// The cache's name.
        name: String,
        /// The record set that needs it.
        resource: String,
    },
    /// The record to replace is not a simple CNAME (already a pair, or missing).
    #[error("{name} has no simple CNAME to replace with the failover pair: {found}")]
    NoSimpleRecord {
        /// The record's name.
        name: String,
        /// What Route 53 answered instead.
        found: String,
    },
    /// An AWS call failed.
    #[error("{action} for {resource} failed")]
    Aws {
        /// The API action.
        action: &'static str,
        /// The logical id (or record) it was for.
        resource: String,
        /// The SDK's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Deploys `template` into the lab `info` describes (read it afresh: the standby is a cache
/// made after the lab started). `alarm_region` puts the alarms (and points the health checks)
/// elsewhere than the template says, to deploy a template wrongly; `None` deploys it as
/// written.
pub async fn deploy_switch(
    info: &LabInfo,
    template: &Value,
    alarm_region: Option<&str>,
) -> Result<Deployed, DeployError> {
    let resources = template["Resources"]
        .as_object()
        .ok_or_else(|| template_error("Resources", "missing or not an object"))?;
    let of_type = |kind: &str| -> Vec<(&String, &Value)> {
        resources
            .iter()
            .filter(|(_, r)| r["Type"] == kind)
            .map(|(id, r)| (id, &r["Properties"]))
            .collect()
    };
    let checks = of_type("AWS::Route53::HealthCheck");
    let region = match alarm_region {
        Some(r) => r.to_owned(),
        None => template_region(&checks)?,
    };
    let cloudwatch = aws_sdk_cloudwatch::Client::new(&sdk(info, &region).await);
    let route53 = aws_sdk_route53::Client::new(&sdk(info, ROUTE53_CONTROL_REGION).await);
    let mut deployed = Deployed {
        alarm_region: region.clone(),
        ..Deployed::default()
    };
    for (id, p) in of_type("AWS::CloudWatch::Alarm") {
        deployed.alarms.push(put_alarm(&cloudwatch, id, p).await?);
    }
    // The alarm-based checks first: the calculated one names them.
    for (id, p) in &checks {
        let c = &p["HealthCheckConfig"];
        if c["Type"] != "CLOUDWATCH_METRIC" {
            continue;
        }
        let alarm = c["AlarmIdentifier"]["Name"]["Ref"]
            .as_str()
            .and_then(|r| resources.get(r))
            .and_then(|a| a["Properties"]["AlarmName"].as_str())
            .ok_or_else(|| template_error(id, "AlarmIdentifier.Name is no Ref to an alarm"))?;
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::CloudwatchMetric)
            .alarm_identifier(
                AlarmIdentifier::builder()
                    .region(CloudWatchRegion::from(region.as_str()))
                    .name(alarm)
                    .build()
                    .map_err(|e| template_error(id, &e.to_string()))?,
            )
            .insufficient_data_health_status(InsufficientDataHealthStatus::from(str_of(
                id,
                c,
                "InsufficientDataHealthStatus",
            )?))
            .set_inverted(c["Inverted"].as_bool())
            .build()
            .map_err(|e| template_error(id, &e.to_string()))?;
        let check = create_check(&route53, id, config).await?;
        deployed.health_checks.insert((*id).clone(), check);
    }
    for (id, p) in &checks {
        let c = &p["HealthCheckConfig"];
        if c["Type"] != "CALCULATED" {
            continue;
        }
        let children = c["ChildHealthChecks"]
            .as_array()
            .ok_or_else(|| template_error(id, "no ChildHealthChecks"))?
            .iter()
            .map(|r| {
                r["Ref"]
                    .as_str()
                    .and_then(|r| deployed.health_checks.get(r))
                    .cloned()
                    .ok_or_else(|| template_error(id, &format!("a child it cannot find: {r}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let config = HealthCheckConfig::builder()
            .r#type(HealthCheckType::Calculated)
            .health_threshold(int_of(id, c, "HealthThreshold")?)
            .set_child_health_checks(Some(children))
            .set_inverted(c["Inverted"].as_bool())
            .build()
            .map_err(|e| template_error(id, &e.to_string()))?;
        let check = create_check(&route53, id, config).await?;
        deployed.health_checks.insert((*id).clone(), check);
    }
    let pair = of_type("AWS::Route53::RecordSet");
    swap_in_pair(info, &route53, resources, &pair, &mut deployed).await?;
    Ok(deployed)
}

/// The region the template's alarm-based checks read their alarms in (all the same).
fn template_region(checks: &[(&String, &Value)]) -> Result<String, DeployError> {
    let mut regions = checks
        .iter()
        .filter_map(|(_, p)| p["HealthCheckConfig"]["AlarmIdentifier"]["Region"].as_str());
    let first = regions
        .next()
        .ok_or_else(|| template_error("AWS::Route53::HealthCheck", "no alarm-based check"))?;
    if regions.any(|r| r != first) {
        return Err(template_error(
            "AWS::Route53::HealthCheck",
            "alarms in several regions",
        ));
    }
    Ok(first.to_owned())
}

/// `PutMetricAlarm` of the alarm `id`; its name.
async fn put_alarm(
    cloudwatch: &aws_sdk_cloudwatch::Client,
    id: &str,
    p: &Value,
) -> Result<String, DeployError> {
    let dimensions = p["Dimensions"]
        .as_array()
        .ok_or_else(|| template_error(id, "no Dimensions"))?
        .iter()
        .map(|d| {
            Ok(Dimension::builder()
                .name(str_of(id, d, "Name")?)
                .value(str_of(id, d, "Value")?)
                .build())
        })
        .collect::<Result<Vec<_>, DeployError>>()?;
    let name = str_of(id, p, "AlarmName")?.to_owned();
    cloudwatch
        .put_metric_alarm()
        .alarm_name(&name)
        .namespace(str_of(id, p, "Namespace")?)
        .metric_name(str_of(id, p, "MetricName")?)
        .set_dimensions(Some(dimensions))
        .statistic(Statistic::from(str_of(id, p, "Statistic")?))
        .period(int_of(id, p, "Period")?)
        .evaluation_periods(int_of(id, p, "EvaluationPeriods")?)
        .datapoints_to_alarm(int_of(id, p, "DatapointsToAlarm")?)
        .threshold(
            p["Threshold"]
                .as_f64()
                .ok_or_else(|| template_error(id, "Threshold is not a number"))?,
        )
        .comparison_operator(ComparisonOperator::from(str_of(
            id,
            p,
            "ComparisonOperator",
        )?))
        .treat_missing_data(str_of(id, p, "TreatMissingData")?)
        .send()
        .await
        .map_err(|e| aws_error("PutMetricAlarm", id, e))?;
    Ok(name)
}

/// `CreateHealthCheck`, with the logical id as its caller reference; the check's id.
async fn create_check(
    route53: &aws_sdk_route53::Client,
    id: &str,
    config: HealthCheckConfig,
) -> Result<String, DeployError> {
    let out = route53
        .create_health_check()
        .caller_reference(id)
        .health_check_config(config)
        .send()
        .await
        .map_err(|e| aws_error("CreateHealthCheck", id, e))?;
    out.health_check()
        .map(|c| c.id().to_owned())
        .ok_or_else(|| DeployError::Aws {
            action: "CreateHealthCheck",
            resource: id.to_owned(),
            source: "the answer holds no health check".into(),
        })
}

/// The pair in place of the simple record of its name, in one batch: an exact `DELETE` of the
/// simple CNAME as Route 53 lists it, and a `CREATE` of each record of the pair.
async fn swap_in_pair(
    info: &LabInfo,
    route53: &aws_sdk_route53::Client,
    resources: &serde_json::Map<String, Value>,
    pair: &[(&String, &Value)],
    deployed: &mut Deployed,
) -> Result<(), DeployError> {
    let (first, p) = pair
        .first()
        .ok_or_else(|| template_error("AWS::Route53::RecordSet", "no record"))?;
    let name = str_of(first, p, "Name")?;
    let zone = str_of(first, p, "HostedZoneId")?;
    let simple = simple_record(route53, zone, name).await?;
    let primary = simple
        .resource_records()
        .first()
        .map(|r| r.value().trim_end_matches('.').to_owned())
        .unwrap_or_default();
    let mut changes = vec![change(ChangeAction::Delete, simple, name)?];
    for (id, p) in pair {
        let target = match &p["ResourceRecords"][0] {
            Value::String(s) => s.clone(),
            Value::Object(o) if o.contains_key("Fn::GetAtt") => {
                let cache = o["Fn::GetAtt"][0]
                    .as_str()
                    .and_then(|r| resources.get(r))
                    .and_then(|r| r["Properties"]["ServerlessCacheName"].as_str())
                    .ok_or_else(|| template_error(id, "Fn::GetAtt names no serverless cache"))?;
                info.cache(cache)
                    .ok_or_else(|| DeployError::NoCache {
                        name: cache.to_owned(),
                        resource: (*id).clone(),
                    })?
                    .endpoint
                    .clone()
            }
            // The parameter asking for the primary's endpoint: what the record answers now.
            Value::Object(o) if o.contains_key("Ref") => primary.clone(),
            other => return Err(template_error(id, &format!("a record value {other}"))),
        };
        let failover = match str_of(id, p, "Failover")? {
            "PRIMARY" => ResourceRecordSetFailover::Primary,
            "SECONDARY" => ResourceRecordSetFailover::Secondary,
            other => return Err(template_error(id, &format!("Failover {other}"))),
        };
        let check = match p["HealthCheckId"]["Ref"].as_str() {
            Some(r) => Some(
                deployed
                    .health_checks
                    .get(r)
                    .cloned()
                    .ok_or_else(|| template_error(id, &format!("HealthCheckId {r} unknown")))?,
            ),
            None => None,
        };
        let ttl = str_of(id, p, "TTL")?
            .parse::<i64>()
            .map_err(|e| template_error(id, &format!("TTL: {e}")))?;
        let set_identifier = str_of(id, p, "SetIdentifier")?;
        let set = ResourceRecordSet::builder()
            .name(str_of(id, p, "Name")?)
            .r#type(RrType::from(str_of(id, p, "Type")?))
            .ttl(ttl)
            .set_identifier(set_identifier)
            .failover(failover)
            .set_health_check_id(check)
            .resource_records(
                ResourceRecord::builder()
                    .value(&target)
                    .build()
                    .map_err(|e| template_error(id, &e.to_string()))?,
            )
            .build()
            .map_err(|e| template_error(id, &e.to_string()))?;
        changes.push(change(ChangeAction::Create, set, id)?);
        deployed.records.push((set_identifier.to_owned(), target));
    }
    let batch = ChangeBatch::builder()
        .comment("deploy valkey-dr template")
        .set_changes(Some(changes))
        .build()
        .map_err(|e| template_error(name, &e.to_string()))?;
    // Route 53 refuses a change that follows another too closely with
    // `PriorRequestNotComplete`, to be tried again (tests/FIDELITY.md): as CloudFormation
    // does, the deployer tries again, at most 20 times, 250 ms apart.
    let mut tries = 0;
    let out = loop {
        let sent = route53
            .change_resource_record_sets()
            .hosted_zone_id(zone)
            .change_batch(batch.clone())
            .send()
            .await;
        match sent {
            Err(e)
                if tries < 20
                    && aws_sdk_route53::error::ProvideErrorMetadata::code(&e)
                        == Some("PriorRequestNotComplete") =>
            {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
            sent => break sent.map_err(|e| aws_error("ChangeResourceRecordSets", name, e))?,
        }
    };
    deployed.change_id = out
        .change_info()
        .map(|c| c.id().to_owned())
        .unwrap_or_default();
    Ok(())
}

/// The simple (no set identifier) CNAME `name`, as Route 53 lists it.
async fn simple_record(
    route53: &aws_sdk_route53::Client,
    zone: &str,
    name: &str,
) -> Result<ResourceRecordSet, DeployError> {
    let out = route53
        .list_resource_record_sets()
        .hosted_zone_id(zone)
        .start_record_name(name)
        .start_record_type(RrType::Cname)
        .max_items(1)
        .send()
        .await
        .map_err(|e| aws_error("ListResourceRecordSets", name, e))?;
    let same = |a: &str| a.trim_end_matches('.') == name.trim_end_matches('.');
    match out.resource_record_sets().first() {
        Some(set)
            if same(set.name())
                && set.r#type() == &RrType::Cname
                && set.set_identifier().is_none() =>
        {
            Ok(set.clone())
        }
        Some(set) => Err(DeployError::NoSimpleRecord {
            name: name.to_owned(),
            found: format!(
                "{} {} set identifier {:?}",
                set.name(),
                set.r#type(),
                set.set_identifier()
            ),
        }),
        None => Err(DeployError::NoSimpleRecord {
            name: name.to_owned(),
            found: "no record".to_owned(),
        }),
    }
}

fn change(action: ChangeAction, set: ResourceRecordSet, id: &str) -> Result<Change, DeployError> {
    Change::builder()
        .action(action)
        .resource_record_set(set)
        .build()
        .map_err(|e| template_error(id, &e.to_string()))
}

/// The SDK's configuration for the lab in `region`: its endpoint, its dummy keys, bounded calls.
async fn sdk(info: &LabInfo, region: &str) -> SdkConfig {
    let key = |name: &str| {
        LAB_AWS_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map_or("", |(_, v)| *v)
    };
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&info.aws_endpoint)
        .credentials_provider(Credentials::new(
            key("AWS_ACCESS_KEY_ID"),
            key("AWS_SECRET_ACCESS_KEY"),
            None,
            None,
            "valkey-dr-lab",
        ))
        .timeout_config(
            TimeoutConfig::builder()
                .operation_timeout(CALL_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

fn template_error(resource: &str, what: &str) -> DeployError {
    DeployError::Template {
        resource: resource.to_owned(),
        what: what.to_owned(),
    }
}

fn aws_error(
    action: &'static str,
    resource: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> DeployError {
    DeployError::Aws {
        action,
        resource: resource.to_owned(),
        source: Box::new(e),
    }
}

fn str_of<'v>(id: &str, v: &'v Value, key: &str) -> Result<&'v str, DeployError> {
    v[key]
        .as_str()
        .ok_or_else(|| template_error(id, &format!("{key} is not a string")))
}

fn int_of(id: &str, v: &Value, key: &str) -> Result<i32, DeployError> {
    v[key]
        .as_i64()
        .and_then(|n| i32::try_from(n).ok())
        .ok_or_else(|| template_error(id, &format!("{key} is not an integer")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_alarms_region_is_the_templates_one_region() {
        let check = |region: &str| {
            json!({ "HealthCheckConfig": { "Type": "CLOUDWATCH_METRIC",
                "AlarmIdentifier": { "Name": { "Ref": "A" }, "Region": region } } })
        };
        let (a, b) = ("a".to_owned(), "b".to_owned());
        let west = check("us-west-2");
        let east = check("us-east-2");
        assert_eq!(template_region(&[(&a, &west)]).unwrap(), "us-west-2");
        assert!(template_region(&[(&a, &west), (&b, &east)]).is_err());
        assert!(template_region(&[]).is_err());
    }

    #[test]
    fn numbers_and_strings_are_checked() {
        let v = json!({ "Period": 60, "Name": "x", "Big": 1u64 << 40 });
        assert_eq!(int_of("r", &v, "Period").unwrap(), 60);
        assert!(int_of("r", &v, "Big").is_err());
        assert!(int_of("r", &v, "Name").is_err());
        assert_eq!(str_of("r", &v, "Name").unwrap(), "x");
        assert!(
            str_of("r", &v, "Period")
                .unwrap_err()
                .to_string()
                .contains("the template's r: Period is not a string")
        );
    }
}
