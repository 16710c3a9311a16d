//! `valkey-dr template`: the CloudFormation template that sets up a `[watch.switch] kind =
//! "health_check"` watch in advance, built from the config alone (no AWS call).
//!
//! Per watch it holds what the switch needs, so that a failover makes no control-plane call:
//!
//! - the warm standby (`AWS::ElastiCache::ServerlessCache`): the same request `valkey-dr
//!   standby create` sends ([`crate::standby::cache_spec`]), tags included, so the daemon
//!   knows it as the watch's standby; kept when the stack goes (`DeletionPolicy: Retain`),
//!   since after a failover it is the cache in service;
//! - per agent (this one and every id `peer_keys` names), the alarm on the verdict it
//!   publishes ([`verdict_alarm`]) and a `CLOUDWATCH_METRIC` health check on that alarm, with
//!   `InsufficientDataHealthStatus = Healthy`: a silent agent, or a CloudWatch that cannot
//!   answer, counts for the primary;
//! - a `CALCULATED` health check over those, healthy while at least `n - quorum + 1` are;
//! - the failover pair: PRIMARY, a CNAME to the primary's endpoint carrying the calculated
//!   check; SECONDARY, a CNAME to the standby's endpoint with no check, which Route 53
//!   answers whenever PRIMARY is unhealthy.
//!
//! A stack lives in one region: the template is deployed in the DR region, where the standby
//! is built, so it needs `metric_region` to be the DR region (the default); the health checks
//! and records are global.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::config::{Config, HealthCheckSwitch, WatchConfig};

pub use crate::verdict::{AGENT_DIMENSION, METRIC_NAME, WATCH_DIMENSION};
/// The period of every verdict alarm: Route 53's alarm-based health checks take standard
/// resolution metrics only (tests/FIDELITY.md).
pub const ALARM_PERIOD_SECONDS: u32 = 60;
/// The most children a calculated health check may have.
pub const MAX_CHILDREN: usize = 256;

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// YAML, as most CloudFormation templates are written.
    Yaml,
    /// JSON.
    Json,
}

/// Why no template can be written for a config.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// No selected watch switches through health checks.
    #[error(
        "no watch has [watch.switch] kind = \"health_check\" (the template sets up that switch; kind = \"record\" needs nothing set up)"
    )]
    NoHealthCheckWatch,
    /// The alarms would be built in the stack's region, not in `metric_region`.
    #[error(
        "watch {watch}: [watch.switch] metric_region = {metric_region:?} is not the DR region {dr_region:?}: the template is one stack in the DR region, where its alarms are built too; set metric_region to {dr_region:?} (the default)"
    )]
    MetricRegionElsewhere {
        /// The watch.
        watch: String,
        /// Its `metric_region`.
        metric_region: String,
        /// Its DR region.
        dr_region: String,
    },
    /// The quorum cannot be met by the agents the config knows.
    #[error(
        "[agent] quorum = {quorum} is more than the {agents} agents this config knows (this one and peer_keys): the record would never move; lower the quorum, or name every agent in peer_keys"
    )]
    QuorumTooLarge {
        /// `[agent] quorum`.
        quorum: u32,
        /// The agents known.
        agents: usize,
    },
    /// More agents than a calculated health check takes.
    #[error(
        "{agents} agents (this one and peer_keys) are more than the {MAX_CHILDREN} children a calculated health check takes"
    )]
    TooManyAgents {
        /// The agents known.
        agents: usize,
    },
}

/// The agents whose verdicts count: this one and every id `peer_keys` names, sorted.
pub fn agents(config: &Config) -> Vec<String> {
    let mut ids: BTreeSet<String> = config.agent.peer_keys.keys().cloned().collect();
    ids.insert(config.agent.id.clone());
    ids.into_iter().collect()
}

/// How many agents must say "down" to move the record: `[agent] quorum`, else a majority.
pub fn quorum(config: &Config, agents: usize) -> u32 {
    config
        .agent
        .quorum
        .unwrap_or_else(|| u32::try_from(agents / 2 + 1).unwrap_or(u32::MAX))
}

/// The name of agent `agent`'s alarm on its verdicts for watch `w`.
pub fn alarm_name(w: &WatchConfig, agent: &str) -> String {
    format!("valkey-dr-{}-{agent}", w.name)
}

/// The template for `watches` (those of `config` with `kind = "health_check"`).
pub fn template(config: &Config, watches: &[&WatchConfig]) -> Result<Value, TemplateError> {
    let watches: Vec<(&WatchConfig, &HealthCheckSwitch)> = watches
        .iter()
        .filter_map(|w| Some((*w, w.switch.health_check()?)))
        .collect();
    if watches.is_empty() {
        return Err(TemplateError::NoHealthCheckWatch);
    }
    let agents = agents(config);
    if agents.len() > MAX_CHILDREN {
        return Err(TemplateError::TooManyAgents {
            agents: agents.len(),
        });
    }
    let quorum = quorum(config, agents.len());
    if quorum as usize > agents.len() {
        return Err(TemplateError::QuorumTooLarge {
            quorum,
            agents: agents.len(),
        });
    }
    let mut resources = BTreeMap::new();
    let mut parameters = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    let mut prefixes = BTreeSet::new();
    for &(w, switch) in &watches {
        if switch.metric_region != w.dr.region {
            return Err(TemplateError::MetricRegionElsewhere {
                watch: w.name.clone(),
                metric_region: switch.metric_region.clone(),
                dr_region: w.dr.region.clone(),
            });
        }
        let prefix = unique(&mut prefixes, &logical(&w.name));
        let ids = Ids::new(&prefix);
        resources.insert(ids.standby.clone(), standby(w));
        let mut children = Vec::with_capacity(agents.len());
        for (i, agent) in agents.iter().enumerate() {
            let alarm = format!("{prefix}Alarm{}", i + 1);
            let check = format!("{prefix}Check{}", i + 1);
            resources.insert(alarm.clone(), verdict_alarm(w, switch, agent));
            resources.insert(check.clone(), alarm_check(w, switch, agent, &alarm));
            children.push(json!({ "Ref": check }));
        }
        let threshold = agents.len() as u32 - quorum + 1;
        resources.insert(ids.quorum.clone(), calculated_check(w, children, threshold));
        let primary = match &w.primary.endpoint {
            Some(endpoint) => Value::String(endpoint.clone()),
            None => {
                parameters.insert(
                    ids.endpoint.clone(),
                    json!({
                        "Type": "String",
                        "Description": format!(
                            "The endpoint of {} in {} (the primary of watch {}): the config does not name it",
                            w.primary.cache_name, w.primary.region, w.name
                        ),
                    }),
                );
                json!({ "Ref": ids.endpoint })
            }
        };
        resources.insert(
            ids.primary.clone(),
            record(w, "PRIMARY", primary, Some(&ids.quorum)),
        );
        let standby_endpoint = json!({ "Fn::GetAtt": [ids.standby, "Endpoint.Address"] });
        resources.insert(
            ids.secondary.clone(),
            record(w, "SECONDARY", standby_endpoint, None),
        );
        outputs.insert(
            format!("{prefix}QuorumHealthCheckId"),
            json!({
                "Description": format!("The calculated health check on the PRIMARY record of watch {}", w.name),
                "Value": { "Ref": ids.quorum },
            }),
        );
        outputs.insert(
            format!("{prefix}StandbyEndpoint"),
            json!({
                "Description": format!("Where the warm standby of watch {} serves", w.name),
                "Value": { "Fn::GetAtt": [ids.standby, "Endpoint.Address"] },
            }),
        );
    }
    let names: Vec<&str> = watches.iter().map(|(w, _)| w.name.as_str()).collect();
    let mut template = json!({
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": format!(
            "valkey-dr health-check switch of watch {}: {quorum} of {} agent(s) move the record (valkey-dr template, from {})",
            names.join(", "),
            agents.len(),
            config.path.display()
        ),
        "Resources": resources,
        "Outputs": outputs,
    });
    if !parameters.is_empty() {
        template["Parameters"] = json!(parameters);
    }
    Ok(template)
}

/// The logical ids of one watch's resources.
struct Ids {
    standby: String,
    quorum: String,
    primary: String,
    secondary: String,
    endpoint: String,
}

impl Ids {
    fn new(prefix: &str) -> Ids {
        Ids {
            standby: format!("{prefix}Standby"),
            quorum: format!("{prefix}Quorum"),
            primary: format!("{prefix}PrimaryRecord"),
            secondary: format!("{prefix}SecondaryRecord"),
            endpoint: format!("{prefix}PrimaryEndpoint"),
        }
    }
}

/// A CloudFormation logical id from a watch name: its letters and digits, the first of each
/// part upper-cased (`app-sessions` → `AppSessions`), starting with a letter.
fn logical(name: &str) -> String {
    let mut id: String = name
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| !part.is_empty())
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect();
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert(0, 'W');
    }
    id
}

/// `id`, or `id` with a number after it when another watch took it.
fn unique(taken: &mut BTreeSet<String>, id: &str) -> String {
    let mut candidate = id.to_owned();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{id}{n}");
        n += 1;
    }
    candidate
}

/// The warm standby, as `standby create` would build it.
fn standby(w: &WatchConfig) -> Value {
    let mut properties =
        serde_json::to_value(crate::standby::cache_spec(w).input).unwrap_or(Value::Null);
    // CloudFormation wants absent, not empty, lists.
    if let Value::Object(map) = &mut properties {
        map.retain(|_, v| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()));
    }
    json!({
        "Type": "AWS::ElastiCache::ServerlessCache",
        "DeletionPolicy": "Retain",
        "UpdateReplacePolicy": "Retain",
        "Properties": properties,
    })
}

/// Agent `agent`'s alarm on its verdicts for `w`: in ALARM once the verdict was 1 in
/// `datapoints_to_alarm` of the last `evaluation_periods` minutes. `TreatMissingData =
/// ignore` keeps the alarm's state while the agent is silent: one that dies before an outage
/// keeps counting for the primary, and one that dies after the switch keeps its vote, so the
/// record never swings back by itself.
fn verdict_alarm(w: &WatchConfig, switch: &HealthCheckSwitch, agent: &str) -> Value {
    json!({
        "Type": "AWS::CloudWatch::Alarm",
        "Properties": {
            "AlarmName": alarm_name(w, agent),
            "AlarmDescription": format!(
                "valkey-dr agent {agent} says the primary of watch {} ({}) is down and fails over",
                w.name, w.record
            ),
            "Namespace": switch.namespace,
            "MetricName": METRIC_NAME,
            "Dimensions": [
                { "Name": WATCH_DIMENSION, "Value": w.name },
                { "Name": AGENT_DIMENSION, "Value": agent },
            ],
            "Statistic": "Maximum",
            "Period": ALARM_PERIOD_SECONDS,
            "EvaluationPeriods": switch.evaluation_periods,
            "DatapointsToAlarm": switch.datapoints_to_alarm,
            "Threshold": 1,
            "ComparisonOperator": "GreaterThanOrEqualToThreshold",
            "TreatMissingData": "ignore",
        },
    })
}

/// The health check on agent `agent`'s alarm.
fn alarm_check(w: &WatchConfig, switch: &HealthCheckSwitch, agent: &str, alarm: &str) -> Value {
    json!({
        "Type": "AWS::Route53::HealthCheck",
        "Properties": {
            "HealthCheckConfig": {
                "Type": "CLOUDWATCH_METRIC",
                "AlarmIdentifier": { "Name": { "Ref": alarm }, "Region": switch.metric_region },
                "InsufficientDataHealthStatus": "Healthy",
            },
            "HealthCheckTags": [
                { "Key": "Name", "Value": format!("valkey-dr {} {agent}", w.name) },
            ],
        },
    })
}

/// The calculated health check of `w`'s PRIMARY record.
fn calculated_check(w: &WatchConfig, children: Vec<Value>, threshold: u32) -> Value {
    json!({
        "Type": "AWS::Route53::HealthCheck",
        "Properties": {
            "HealthCheckConfig": {
                "Type": "CALCULATED",
                "ChildHealthChecks": children,
                "HealthThreshold": threshold,
            },
            "HealthCheckTags": [
                { "Key": "Name", "Value": format!("valkey-dr {} quorum", w.name) },
            ],
        },
    })
}

/// One record of `w`'s failover pair.
fn record(w: &WatchConfig, failover: &str, target: Value, check: Option<&str>) -> Value {
    let mut properties = json!({
        "HostedZoneId": w.hosted_zone_id,
        "Name": w.record,
        "Type": "CNAME",
        "TTL": w.ttl.as_secs().to_string(),
        "SetIdentifier": format!("{}-{}", w.name, failover.to_ascii_lowercase()),
        "Failover": failover,
        "ResourceRecords": [target],
    });
    if let Some(check) = check {
        properties["HealthCheckId"] = json!({ "Ref": check });
    }
    json!({ "Type": "AWS::Route53::RecordSet", "Properties": properties })
}

/// `template` written out in `format`, ending with a new line.
pub fn render(template: &Value, format: Format) -> String {
    match format {
        Format::Json => format!("{template:#}\n"),
        Format::Yaml => {
            let mut out = String::new();
            yaml(template, 0, &mut out);
            out
        }
    }
}

/// Block-style YAML of `value` at `indent`, for a value that starts on a line of its own
/// (a mapping's or a list's entries). Scalars are written as JSON, which YAML reads as they
/// are (every string double-quoted); keys are plain when they are CloudFormation names.
fn yaml(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                out.push_str(&format!("{pad}{}:", key(k)));
                nested(v, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for v in items {
                match v {
                    // `- Key: …` with the mapping's other keys under the first.
                    Value::Object(map) if !map.is_empty() => {
                        let mut entry = String::new();
                        yaml(v, indent + 2, &mut entry);
                        out.push_str(&format!("{pad}- {}", &entry[indent + 2..]));
                    }
                    _ => {
                        out.push_str(&format!("{pad}-"));
                        nested(v, indent, out);
                    }
                }
            }
        }
        scalar => out.push_str(&format!("{pad}{scalar}\n")),
    }
}

/// A mapping key: plain for a CloudFormation name (`Type`, `Fn::GetAtt`), quoted otherwise.
fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic())
        && !k.ends_with(':')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == ':');
    if plain {
        k.to_owned()
    } else {
        Value::String(k.to_owned()).to_string()
    }
}

/// The value after a `key:` or a `-`: on the same line when it is a scalar or empty, on the
/// next lines, indented, otherwise.
fn nested(value: &Value, indent: usize, out: &mut String) {
    let block = match value {
        Value::Object(map) => !map.is_empty(),
        Value::Array(items) => !items.is_empty(),
        _ => false,
    };
    if block {
        out.push('\n');
        yaml(value, indent + 2, out);
    } else {
        out.push_str(&format!(" {value}\n"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_ids_are_letters_and_digits_and_unique() {
        assert_eq!(logical("app-sessions"), "AppSessions");
        assert_eq!(logical("sessions.v2"), "SessionsV2");
        assert_eq!(logical("9lives"), "W9lives");
        let mut taken = BTreeSet::new();
        assert_eq!(unique(&mut taken, "AppSessions"), "AppSessions");
        assert_eq!(unique(&mut taken, "AppSessions"), "AppSessions2");
    }

    #[test]
    fn yaml_is_block_style_with_json_scalars() {
        let v = json!({
            "A": { "B": [1, "x: y", { "Ref": "C", "Z": [[2]] }], "E": [], "F": {} },
            "Fn::GetAtt": ["S", "Endpoint.Address"],
            "a b": true,
        });
        assert_eq!(
            render(&v, Format::Yaml),
            "A:\n  B:\n    - 1\n    - \"x: y\"\n    - Ref: \"C\"\n      Z:\n        -\n          - 2\n  E: []\n  F: {}\nFn::GetAtt:\n  - \"S\"\n  - \"Endpoint.Address\"\n\"a b\": true\n"
        );
    }
}
