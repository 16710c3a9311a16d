//! The health-check switch's set-up (`[watch.switch] kind = "health_check"`), checked as
//! `valkey-dr template` builds it (`crate::template`):
//!
//! - `route53_record`: the record is a failover pair, PRIMARY to the primary's endpoint with a
//!   health check, SECONDARY with none, both with set identifiers and a TTL of 30–60 s;
//! - `switch`: SECONDARY points at the warm standby; PRIMARY's health check is `CALCULATED`,
//!   healthy while `n - quorum + 1` of its children are; its children are exactly one
//!   `CLOUDWATCH_METRIC` check per known agent, on an alarm in `metric_region`, with
//!   `InsufficientDataHealthStatus = Healthy`; each alarm watches the verdict that agent
//!   publishes (namespace, metric, dimensions) as the template sets it.
//!
//! Nothing of it is called in a failover: the reads (`ListHealthChecks`,
//! `cloudwatch:DescribeAlarms`) are preflight's own, so a refusal leaves the check `unknown`.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_route53::types::ResourceRecordSet;
use valkey_dr_probes::same_name;

use super::{Aws, CheckStatus, Finding, TTL_RANGE, WithFix, call, failed_call, finding};
use crate::config::{Config, HealthCheckSwitch, WatchConfig};
use crate::executor::sdk::SdkDns;
use crate::template::{AGENT_DIMENSION, ALARM_PERIOD_SECONDS, METRIC_NAME, WATCH_DIMENSION};

/// The check's name.
pub(super) const CHECK: &str = "switch";
/// `ListHealthChecks`: the most a page holds.
const HEALTH_CHECK_PAGE: i32 = 1000;
/// `DescribeAlarms`: the most names one call takes.
const ALARM_NAMES_PER_CALL: usize = 100;
/// At most this many pages of health checks are read.
const MAX_PAGES: usize = 20;

/// How the check says what to do about any difference.
fn fix(w: &WatchConfig) -> String {
    format!(
        "deploy `valkey-dr template --watch {}` in {} (it builds exactly this set-up), or make the differences above match it",
        w.name, w.dr.region
    )
}

/// `route53_record` for a health-check watch: the failover pair's shape.
pub(super) fn pair_finding(
    w: &WatchConfig,
    sets: &[ResourceRecordSet],
    primary_endpoint: Option<&str>,
) -> Finding {
    let check = "route53_record";
    let cnames: Vec<&ResourceRecordSet> = sets
        .iter()
        .filter(|s| s.r#type().as_str() == "CNAME")
        .collect();
    let role = |r: &str| {
        cnames
            .iter()
            .copied()
            .find(|s| s.failover().is_some_and(|f| f.as_str() == r))
    };
    let mut problems = Vec::new();
    if cnames.iter().any(|s| s.set_identifier().is_none()) {
        problems.push(format!(
            "{} is a simple CNAME: kind = \"health_check\" needs a failover pair",
            w.record
        ));
    }
    let (Some(primary), Some(secondary)) = (role("PRIMARY"), role("SECONDARY")) else {
        problems.push(format!(
            "{} has no PRIMARY and SECONDARY failover CNAMEs",
            w.record
        ));
        return finding(w, check, CheckStatus::Fail, problems.join("; ")).fix(fix(w));
    };
    for set in [primary, secondary] {
        let ttl = set
            .ttl()
            .and_then(|t| u32::try_from(t).ok())
            .unwrap_or_default();
        if !TTL_RANGE.contains(&ttl) {
            problems.push(format!(
                "{} has a TTL of {ttl} s, outside 30–60 s",
                label(set)
            ));
        }
    }
    if primary.health_check_id().is_none() {
        problems.push(format!(
            "{} carries no health check: Route 53 would never answer SECONDARY",
            label(primary)
        ));
    }
    if let Some(id) = secondary.health_check_id() {
        problems.push(format!(
            "{} carries health check {id}: it must have none, so that Route 53 answers it whenever PRIMARY is unhealthy",
            label(secondary)
        ));
    }
    let target = first_value(primary);
    if let Some(endpoint) = primary_endpoint
        && !same_name(endpoint, &target)
    {
        problems.push(format!(
            "{} points at {target}, not the primary's endpoint {endpoint}",
            label(primary)
        ));
    }
    if problems.is_empty() {
        finding(
            w,
            check,
            CheckStatus::Ok,
            format!(
                "failover pair: PRIMARY → {target} with health check {}, SECONDARY → {} with none",
                primary.health_check_id().unwrap_or_default(),
                first_value(secondary)
            ),
        )
    } else {
        finding(w, check, CheckStatus::Fail, problems.join("; ")).fix(fix(w))
    }
}

/// `PRIMARY (valkey.app.internal., sessions-primary)`.
fn label(set: &ResourceRecordSet) -> String {
    format!(
        "{} ({}, {})",
        set.failover().map_or("?", |f| f.as_str()),
        set.name(),
        set.set_identifier().unwrap_or("no set identifier")
    )
}

fn first_value(set: &ResourceRecordSet) -> String {
    set.resource_records()
        .first()
        .map(|r| r.value().trim_end_matches('.').to_owned())
        .unwrap_or_default()
}

/// A health check as the check compares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct CheckView {
    pub id: String,
    pub kind: String,
    pub threshold: Option<i32>,
    pub children: Vec<String>,
    /// The alarm's region and name.
    pub alarm: Option<(String, String)>,
    pub insufficient: Option<String>,
    pub inverted: bool,
    pub disabled: bool,
}

/// An alarm as the check compares it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct AlarmView {
    pub name: String,
    pub namespace: String,
    pub metric: String,
    pub dimensions: Vec<(String, String)>,
    pub period: Option<i32>,
    pub statistic: Option<String>,
    pub threshold: Option<f64>,
    pub comparison: Option<String>,
    pub evaluation_periods: Option<i32>,
    pub datapoints: Option<i32>,
    pub missing: Option<String>,
}

/// The `switch` check of `w`. `sets` are the record's sets (`None` when they could not be
/// read), `standby` where the warm standby serves, when known.
pub(super) async fn switch(
    config: &Config,
    w: &WatchConfig,
    route53: &SdkDns,
    aws: &Aws<'_>,
    sets: Option<&[ResourceRecordSet]>,
    standby: Option<&str>,
) -> Finding {
    let Some(h) = w.switch.health_check() else {
        return finding(
            w,
            CHECK,
            CheckStatus::Ok,
            "not used: kind = \"record\" (a failover rewrites the record)".into(),
        );
    };
    let Some(sets) = sets else {
        return finding(
            w,
            CHECK,
            CheckStatus::Unknown,
            "not checked: the record's sets could not be read (see route53_record)".into(),
        );
    };
    let pair = |role: &str| {
        sets.iter().find(|s| {
            s.r#type().as_str() == "CNAME" && s.failover().is_some_and(|f| f.as_str() == role)
        })
    };
    let (Some(primary), Some(secondary)) = (pair("PRIMARY"), pair("SECONDARY")) else {
        return finding(
            w,
            CHECK,
            CheckStatus::Fail,
            format!("{} is not a failover pair (see route53_record)", w.record),
        )
        .fix(fix(w));
    };
    let mut problems = Vec::new();
    let secondary_target = first_value(secondary);
    if let Some(endpoint) = standby
        && !same_name(endpoint, &secondary_target)
    {
        problems.push(format!(
            "SECONDARY points at {secondary_target}, not the warm standby {endpoint}"
        ));
    }
    let Some(quorum_id) = primary.health_check_id() else {
        problems.push("PRIMARY carries no health check".into());
        return finding(w, CHECK, CheckStatus::Fail, problems.join("; ")).fix(fix(w));
    };
    let checks = match health_checks(route53).await {
        Ok(checks) => checks,
        Err(f) => return failed_call(w, CHECK, &f, false),
    };
    let Some(calculated) = checks.get(quorum_id) else {
        problems.push(format!(
            "health check {quorum_id} (PRIMARY's) does not exist"
        ));
        return finding(w, CHECK, CheckStatus::Fail, problems.join("; ")).fix(fix(w));
    };
    let children: Vec<CheckView> = calculated
        .children
        .iter()
        .filter_map(|id| checks.get(id).cloned())
        .collect();
    let names: Vec<String> = children
        .iter()
        .filter_map(|c| c.alarm.as_ref())
        .filter(|(region, _)| *region == h.metric_region)
        .map(|(_, name)| name.clone())
        .collect();
    let alarms = match alarms(aws, &h.metric_region, &names).await {
        Ok(alarms) => alarms,
        Err(f) => return failed_call(w, CHECK, &f, false),
    };
    let agents = crate::template::agents(config);
    let quorum = crate::template::quorum(config, agents.len());
    problems.extend(differences(
        w, h, &agents, quorum, calculated, &children, &alarms,
    ));
    if problems.is_empty() {
        finding(
            w,
            CHECK,
            CheckStatus::Ok,
            format!(
                "PRIMARY's health check {quorum_id} is healthy while {} of {} agents' checks are; each watches its agent's alarm in {}",
                agents.len() as u32 - quorum.min(agents.len() as u32) + 1,
                agents.len(),
                h.metric_region
            ),
        )
    } else {
        finding(w, CHECK, CheckStatus::Fail, problems.join("; ")).fix(fix(w))
    }
}

/// Every health check of the account, by id (`ListHealthChecks`, page by page).
async fn health_checks(route53: &SdkDns) -> Result<BTreeMap<String, CheckView>, super::Failed> {
    let mut checks = BTreeMap::new();
    let mut marker: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let out = call(
            "route53:ListHealthChecks",
            None,
            "health checks",
            route53
                .client()
                .list_health_checks()
                .set_marker(marker.clone())
                .max_items(HEALTH_CHECK_PAGE)
                .send(),
        )
        .await?;
        for check in out.health_checks() {
            let view = check_view(check);
            checks.insert(view.id.clone(), view);
        }
        marker = out
            .next_marker()
            .map(str::to_owned)
            .filter(|_| out.is_truncated());
        if marker.is_none() {
            break;
        }
    }
    Ok(checks)
}

fn check_view(check: &aws_sdk_route53::types::HealthCheck) -> CheckView {
    let config = check.health_check_config();
    CheckView {
        id: check.id().to_owned(),
        kind: config
            .map(|c| c.r#type().as_str().to_owned())
            .unwrap_or_default(),
        threshold: config.and_then(|c| c.health_threshold()),
        children: config
            .map(|c| c.child_health_checks().to_vec())
            .unwrap_or_default(),
        alarm: config
            .and_then(|c| c.alarm_identifier())
            .map(|a| (a.region().as_str().to_owned(), a.name().to_owned())),
        insufficient: config
            .and_then(|c| c.insufficient_data_health_status())
            .map(|s| s.as_str().to_owned()),
        inverted: config.and_then(|c| c.inverted()).unwrap_or(false),
        disabled: config.and_then(|c| c.disabled()).unwrap_or(false),
    }
}

/// The alarms named `names` in `region` (`DescribeAlarms`, a hundred names a call).
async fn alarms(
    aws: &Aws<'_>,
    region: &str,
    names: &[String],
) -> Result<Vec<AlarmView>, super::Failed> {
    let client = aws_sdk_cloudwatch::Client::new(&aws.sdk(region).await);
    let mut found = Vec::new();
    for chunk in names.chunks(ALARM_NAMES_PER_CALL) {
        let out = call(
            "cloudwatch:DescribeAlarms",
            Some(region),
            "the verdicts' alarms",
            client
                .describe_alarms()
                .set_alarm_names(Some(chunk.to_vec()))
                .max_records(100)
                .send(),
        )
        .await?;
        found.extend(out.metric_alarms().iter().map(|a| {
            AlarmView {
                name: a.alarm_name().unwrap_or_default().to_owned(),
                namespace: a.namespace().unwrap_or_default().to_owned(),
                metric: a.metric_name().unwrap_or_default().to_owned(),
                dimensions: a
                    .dimensions()
                    .iter()
                    .map(|d| {
                        (
                            d.name().unwrap_or_default().to_owned(),
                            d.value().unwrap_or_default().to_owned(),
                        )
                    })
                    .collect(),
                period: a.period(),
                statistic: a.statistic().map(|s| s.as_str().to_owned()),
                threshold: a.threshold(),
                comparison: a.comparison_operator().map(|c| c.as_str().to_owned()),
                evaluation_periods: a.evaluation_periods(),
                datapoints: a.datapoints_to_alarm(),
                missing: a.treat_missing_data().map(str::to_owned),
            }
        }));
    }
    Ok(found)
}

/// What differs from the set-up `template` builds for `w`, one phrase each.
pub(super) fn differences(
    w: &WatchConfig,
    h: &HealthCheckSwitch,
    agents: &[String],
    quorum: u32,
    calculated: &CheckView,
    children: &[CheckView],
    alarms: &[AlarmView],
) -> Vec<String> {
    let mut out = Vec::new();
    let n = agents.len();
    let id = &calculated.id;
    if calculated.kind != "CALCULATED" {
        out.push(format!(
            "PRIMARY's health check {id} is {}, not CALCULATED",
            calculated.kind
        ));
    }
    if calculated.inverted || calculated.disabled {
        out.push(format!(
            "PRIMARY's health check {id} is inverted or disabled"
        ));
    }
    let wanted = i32::try_from(n).unwrap_or(i32::MAX) - i32::try_from(quorum).unwrap_or(0) + 1;
    if calculated.threshold != Some(wanted) {
        out.push(format!(
            "PRIMARY's health check {id} is healthy while {} children are; with {n} agents and a quorum of {quorum} it must be {wanted}",
            calculated.threshold.map_or_else(|| "no count of".to_owned(), |t| t.to_string())
        ));
    }
    if calculated.children.len() != n {
        out.push(format!(
            "PRIMARY's health check {id} has {} children; it needs one per agent, {n} ({})",
            calculated.children.len(),
            agents.join(", ")
        ));
    }
    let by_name: BTreeMap<&str, &AlarmView> = alarms.iter().map(|a| (a.name.as_str(), a)).collect();
    let mut covered = BTreeSet::new();
    for child in children {
        let cid = &child.id;
        if child.kind != "CLOUDWATCH_METRIC" {
            out.push(format!(
                "child {cid} is {}, not CLOUDWATCH_METRIC",
                child.kind
            ));
            continue;
        }
        if child.inverted || child.disabled {
            out.push(format!("child {cid} is inverted or disabled"));
        }
        if child.insufficient.as_deref() != Some("Healthy") {
            out.push(format!(
                "child {cid} takes InsufficientDataHealthStatus {}, not Healthy (a silent agent must count for the primary)",
                child.insufficient.as_deref().unwrap_or("(none)")
            ));
        }
        let Some((region, name)) = &child.alarm else {
            out.push(format!("child {cid} names no alarm"));
            continue;
        };
        if *region != h.metric_region {
            out.push(format!(
                "child {cid} watches alarm {name} in {region}, not in metric_region {}",
                h.metric_region
            ));
            continue;
        }
        let Some(alarm) = by_name.get(name.as_str()) else {
            out.push(format!(
                "alarm {name} (child {cid}'s) does not exist in {region}"
            ));
            continue;
        };
        out.extend(alarm_differences(w, h, alarm));
        if let Some((_, agent)) = alarm.dimensions.iter().find(|(k, _)| k == AGENT_DIMENSION) {
            covered.insert(agent.clone());
        }
    }
    let known: BTreeSet<String> = agents.iter().cloned().collect();
    let missing: Vec<&String> = known.difference(&covered).collect();
    if !missing.is_empty() {
        out.push(format!(
            "no alarm watches the verdicts of {}",
            missing
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let strangers: Vec<&String> = covered.difference(&known).collect();
    if !strangers.is_empty() {
        out.push(format!(
            "alarms watch agents this config does not know: {} (not [agent] id nor in peer_keys)",
            strangers
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

/// What differs in one alarm from the template's.
fn alarm_differences(w: &WatchConfig, h: &HealthCheckSwitch, a: &AlarmView) -> Vec<String> {
    let mut out = Vec::new();
    let name = &a.name;
    if a.namespace != h.namespace || a.metric != METRIC_NAME {
        out.push(format!(
            "alarm {name} watches {}/{}, not {}/{METRIC_NAME}",
            a.namespace, a.metric, h.namespace
        ));
    }
    let watch = a.dimensions.iter().find(|(k, _)| k == WATCH_DIMENSION);
    let agent = a.dimensions.iter().find(|(k, _)| k == AGENT_DIMENSION);
    if a.dimensions.len() != 2 || watch.is_none_or(|(_, v)| *v != w.name) || agent.is_none() {
        out.push(format!(
            "alarm {name} has dimensions {:?}, not exactly {WATCH_DIMENSION} = {} and {AGENT_DIMENSION} = <agent id>",
            a.dimensions, w.name
        ));
    }
    let wanted = (
        Some(i32::try_from(ALARM_PERIOD_SECONDS).unwrap_or(60)),
        Some("Maximum"),
        Some(1.0),
        Some("GreaterThanOrEqualToThreshold"),
        Some(i32::try_from(h.evaluation_periods).unwrap_or(1)),
        Some(i32::try_from(h.datapoints_to_alarm).unwrap_or(1)),
        Some("ignore"),
    );
    let found = (
        a.period,
        a.statistic.as_deref(),
        a.threshold,
        a.comparison.as_deref(),
        a.evaluation_periods,
        a.datapoints.or(a.evaluation_periods),
        a.missing.as_deref(),
    );
    if found != wanted {
        out.push(format!(
            "alarm {name} is {} over {}s, {} {}, {} of {} periods, missing data {}; the template's is Maximum over 60s, GreaterThanOrEqualToThreshold 1, {} of {}, ignore",
            found.1.unwrap_or("?"),
            found.0.unwrap_or_default(),
            found.3.unwrap_or("?"),
            found.2.unwrap_or_default(),
            found.5.unwrap_or_default(),
            found.4.unwrap_or_default(),
            found.6.unwrap_or("missing"),
            h.datapoints_to_alarm,
            h.evaluation_periods
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn watch() -> WatchConfig {
        let text = "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-dr\"\nstandby = \"warm\"\n\
             [watch.switch]\nkind = \"health_check\"\n";
        Config::parse(
            text,
            std::path::Path::new("/etc/valkey-dr/agent.toml"),
            &crate::config::ProcessEnv,
        )
        .expect("valid")
        .watches
        .remove(0)
    }

    const AGENTS: [&str; 3] = ["a", "b", "c"];

    /// The set-up the template builds for three agents, quorum 2.
    fn deployed() -> (CheckView, Vec<CheckView>, Vec<AlarmView>) {
        let children: Vec<CheckView> = AGENTS
            .iter()
            .map(|a| CheckView {
                id: format!("hc-{a}"),
                kind: "CLOUDWATCH_METRIC".into(),
                alarm: Some(("us-west-2".into(), format!("valkey-dr-s-{a}"))),
                insufficient: Some("Healthy".into()),
                ..CheckView::default()
            })
            .collect();
        let calculated = CheckView {
            id: "hc-quorum".into(),
            kind: "CALCULATED".into(),
            threshold: Some(2),
            children: children.iter().map(|c| c.id.clone()).collect(),
            ..CheckView::default()
        };
        let alarms = AGENTS
            .iter()
            .map(|a| AlarmView {
                name: format!("valkey-dr-s-{a}"),
                namespace: "ValkeyDR".into(),
                metric: "PrimaryDown".into(),
                dimensions: vec![("Watch".into(), "s".into()), ("Agent".into(), (*a).into())],
                period: Some(60),
                statistic: Some("Maximum".into()),
                threshold: Some(1.0),
                comparison: Some("GreaterThanOrEqualToThreshold".into()),
                evaluation_periods: Some(1),
                datapoints: Some(1),
                missing: Some("ignore".into()),
            })
            .collect();
        (calculated, children, alarms)
    }

    fn differ(calculated: &CheckView, children: &[CheckView], alarms: &[AlarmView]) -> Vec<String> {
        let w = watch();
        let h = w.switch.health_check().unwrap().clone();
        let agents: Vec<String> = AGENTS.iter().map(|a| (*a).to_owned()).collect();
        differences(&w, &h, &agents, 2, calculated, children, alarms)
    }

    #[test]
    fn the_templates_set_up_has_no_difference_and_each_change_is_named() {
        let (calculated, children, alarms) = deployed();
        assert_eq!(
            differ(&calculated, &children, &alarms),
            Vec::<String>::new()
        );

        let mut one_threshold = calculated.clone();
        one_threshold.threshold = Some(1);
        let found = differ(&one_threshold, &children, &alarms);
        assert!(
            found[0].contains("with 3 agents and a quorum of 2 it must be 2"),
            "{found:?}"
        );

        let mut last_known = children.clone();
        last_known[1].insufficient = Some("LastKnownStatus".into());
        let found = differ(&calculated, &last_known, &alarms);
        assert!(
            found[0].contains("child hc-b takes InsufficientDataHealthStatus LastKnownStatus"),
            "{found:?}"
        );

        let mut not_breaching = alarms.clone();
        not_breaching[2].missing = Some("notBreaching".into());
        let found = differ(&calculated, &children, &not_breaching);
        assert!(
            found[0].contains("alarm valkey-dr-s-c")
                && found[0].contains("missing data notBreaching"),
            "{found:?}"
        );

        let found = differ(&calculated, &children, &alarms[..2]);
        assert!(
            found
                .iter()
                .any(|f| f.contains("alarm valkey-dr-s-c (child hc-c's) does not exist"))
                && found
                    .iter()
                    .any(|f| f.contains("no alarm watches the verdicts of c")),
            "{found:?}"
        );

        let mut stranger = alarms.clone();
        stranger[0].dimensions[1].1 = "z".into();
        let found = differ(&calculated, &children, &stranger);
        assert!(
            found
                .iter()
                .any(|f| f.contains("no alarm watches the verdicts of a"))
                && found
                    .iter()
                    .any(|f| f.contains("agents this config does not know: z")),
            "{found:?}"
        );
    }
}
