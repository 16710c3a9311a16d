//! The failover plan: what the executor carries out for a watch, built from config alone, and
//! the same plan rendered as the exact AWS calls it makes. It travels with "would fail over"
//! alerts and is what `valkey-dr plan` and `failover --dry-run` print, so people see exactly
//! what a failover would send.

use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};

use crate::config::{Config, WatchConfig};
use crate::executor::api::{CacheSpec, CacheUsageLimits, CreateRequest, Limit, Tag};
use crate::executor::{self, Plan};

/// Stands for the failover id in a plan shown before a failover exists.
pub const PLANNED_ID: &str = "<failover id>";

/// A failover plan as people and alerts see it: every call a failover would make now, step
/// by step. It serializes to the JSON of `valkey-dr plan --output json` and of the
/// `would_fail_over` event's `plan` (README.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanView {
    /// `[agent] id`.
    pub agent_id: String,
    /// What `valkey-dr plan` found of the DR cache: absent in events, `null` when it could
    /// not be described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dr_cache: Option<Option<DrCacheView>>,
    /// [`PLANNED_ID`] before a failover exists.
    pub failover_id: String,
    /// The steps, in the executor's order.
    pub steps: Vec<PlanStep>,
    /// The watch.
    pub watch: String,
}

/// One step of a [`PlanView`]: its AWS call as the executor sends it, and what may hold the
/// failover before it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PlanStep {
    /// The step's name ([`executor::Step`]).
    pub step: &'static str,
    /// The call and its input, in AWS's own field names: this is the edge where the plan
    /// shows the request bodies the SDK sends.
    #[serde(flatten)]
    pub call: serde_json::Map<String, Value>,
    /// The watch's gates at this step, one line each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub held_by_gates: Vec<String>,
    /// Set when `mode = "prepare"` waits for a person here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_for_approval: Option<&'static str>,
}

/// The DR cache as `valkey-dr plan` found it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrCacheView {
    /// Whether a cache of that name exists.
    pub exists: bool,
    /// What a failover does with it, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
    /// Its status, when it exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<crate::executor::api::CacheStatus>,
}

/// The plan for `w`: every call a failover would make now.
pub fn failover_plan(config: &Config, w: &WatchConfig) -> PlanView {
    failover_plan_from(config, w, None)
}

/// [`failover_plan`] with the record's current CNAME target filled in: the value the swap's
/// exact `DELETE` must carry.
pub fn failover_plan_from(config: &Config, w: &WatchConfig, current: Option<&str>) -> PlanView {
    let mut plan = render(&executor_plan(config, w, PLANNED_ID), current);
    // What may hold the failover before a step: the watch's gates, and in prepare mode a
    // person's approval before the switch.
    for step in &mut plan.steps {
        let at = match step.step {
            "provision" => crate::config::GateAt::Provision,
            "switch_dns" => crate::config::GateAt::SwitchDns,
            _ => continue,
        };
        step.held_by_gates = w
            .gates
            .iter()
            .filter(|g| g.at == at)
            .map(gate_line)
            .collect();
        if at == crate::config::GateAt::SwitchDns
            && config.agent.mode == crate::config::Mode::Prepare
        {
            step.held_for_approval = Some(
                "mode = \"prepare\": an automatic failover waits here for `valkey-dr approve`",
            );
        }
    }
    plan
}

/// A gate in one line: `name (GET https://host/path, timeout 30s, on_timeout hold)`, its
/// URL's secrets redacted.
fn gate_line(g: &crate::config::GateConfig) -> String {
    use crate::config::{GateCheck, GateMethod, OnTimeout};
    let kind = match &g.check {
        GateCheck::Command { command } => format!("command {}", command[0]),
        GateCheck::Http { method, url, .. } => format!(
            "{} {}",
            match method {
                GateMethod::Get => "GET",
                GateMethod::Post => "POST",
            },
            crate::config::redact_url(url.expose())
        ),
    };
    let on_timeout = match g.on_timeout {
        OnTimeout::Hold => "hold",
        OnTimeout::Abort => "abort",
    };
    format!(
        "{} ({kind}, timeout {}, on_timeout {on_timeout})",
        g.name,
        crate::text::duration(g.timeout)
    )
}

/// The calls of `plan`, step by step in the executor's order (see [`executor::Step`]).
pub fn render(plan: &Plan, current: Option<&str>) -> PlanView {
    let region = &plan.cache.region;
    let lease_name = plan.lease_name();
    let lease = plan.lease.map(|valid_for| {
        json!({
            "Action": "CREATE", "Name": lease_name, "Type": "TXT", "TTL": executor::LEASE_TTL,
            "Value": executor::lease_value(plan, SystemTime::now() + valid_for),
        })
    });
    let step = |s: executor::Step, body: Value| PlanStep {
        step: s.as_str(),
        call: match body {
            Value::Object(call) => call,
            _ => serde_json::Map::new(),
        },
        held_by_gates: Vec::new(),
        held_for_approval: None,
    };
    use executor::Step::*;
    PlanView {
        agent_id: plan.owner.clone(),
        dr_cache: None,
        failover_id: plan.failover_id.clone(),
        watch: plan.watch.clone(),
        steps: vec![
            step(
                Provision,
                json!({
                    "region": region, "call": "CreateServerlessCache", "input": plan.cache.input,
                    "adopt_existing": plan.adopt_existing,
                }),
            ),
            step(
                WaitAvailable,
                json!({
                    "region": region, "call": "DescribeServerlessCaches",
                    "input": { "ServerlessCacheName": plan.cache.name() },
                    "until": "Status = available",
                    "timeout": crate::text::duration(plan.create_timeout),
                }),
            ),
            step(
                VerifyDirect,
                json!({ "call": "PING/SET/GET", "target": "<DR endpoint>" }),
            ),
            step(
                Lease,
                match &lease {
                    Some(change) => json!({
                        "call": "ChangeResourceRecordSets", "hosted_zone_id": plan.hosted_zone_id,
                        "changes": [change],
                        "reads_first": "ListResourceRecordSets (the record's CNAME: the swap's DELETE half)",
                        "valid_for": crate::text::duration(plan.lease.unwrap_or_default()),
                    }),
                    None => {
                        json!({ "call": "ListResourceRecordSets", "note": "leases off: only the record is read" })
                    }
                },
            ),
            step(
                SwitchDns,
                json!({
                    "call": "ChangeResourceRecordSets", "hosted_zone_id": plan.hosted_zone_id,
                    "changes": [
                        { "Action": "DELETE", "Name": plan.record, "Type": "CNAME", "Value": current.unwrap_or("<current target>") },
                        { "Action": "CREATE", "Name": plan.record, "Type": "CNAME", "TTL": plan.ttl, "Value": "<DR endpoint>" },
                    ],
                }),
            ),
            step(
                WaitInsync,
                json!({ "call": "GetChange", "until": "Status = INSYNC, or the record resolves to the DR endpoint through this agent's resolvers" }),
            ),
            step(
                VerifyDns,
                json!({ "call": "resolve, then PING/SET/GET", "target": plan.record }),
            ),
            step(
                Release,
                match lease {
                    Some(mut change) => {
                        change["Action"] = "DELETE".into();
                        json!({ "call": "ChangeResourceRecordSets", "hosted_zone_id": plan.hosted_zone_id, "changes": [change] })
                    }
                    None => json!({ "call": null, "note": "leases off" }),
                },
            ),
        ],
    }
}

/// How long a failover's lease is valid. It is taken after the build, for the switch and
/// what follows it (seconds, or a hold that renews it at least four times per life): a
/// crashed owner's lease is taken over after it, so it is short.
pub const LEASE_LIFE: Duration = Duration::from_secs(10 * 60);

/// What the executor carries out for a failover of `w` with id `failover_id`.
pub fn executor_plan(config: &Config, w: &WatchConfig, failover_id: &str) -> Plan {
    Plan {
        approval: false,
        automatic: false,
        failover_id: failover_id.to_owned(),
        watch: w.name.clone(),
        owner: config.agent.id.clone(),
        hosted_zone_id: w.hosted_zone_id.clone(),
        record: w.record.clone(),
        ttl: w.ttl.as_secs() as u32,
        cache: CacheSpec {
            region: w.dr.region.clone(),
            input: create_request(
                w,
                &w.dr.cache_name,
                None,
                &[
                    (executor::FAILOVER_TAG, failover_id),
                    (executor::WATCH_TAG, &w.name),
                    (executor::RECORD_TAG, &w.record),
                ],
            ),
        },
        create_timeout: w.dr.create_timeout,
        lease: w.policy.lease.then_some(LEASE_LIFE),
        adopt_existing: w.dr.adopt_existing,
        kind: executor::Kind::Failover,
        expected_target: None,
        standby: None,
    }
}

/// What the executor carries out to point the record of `w` back at the primary `host:port`
/// from the DR endpoint `from`, with id `failback_id`; with `keep_data`, the old primary is
/// not emptied first.
pub fn failback_plan(
    config: &Config,
    w: &WatchConfig,
    failback_id: &str,
    from: &str,
    delete_dr: bool,
    keep_data: bool,
) -> Plan {
    Plan {
        lease: None,
        kind: executor::Kind::Failback {
            from: from.to_owned(),
            delete_dr,
            keep_data,
        },
        ..executor_plan(config, w, failback_id)
    }
}

/// The `CreateServerlessCache` request for the DR spec of `w` under `name`, tagged with the DR
/// tags plus valkey-dr's own `(key, value)`s: a failover and a drill send the same request
/// (`valkey-dr drill` builds its throw-away cache from it, so a drill tests exactly what a
/// failover would ask for).
pub fn create_request(
    w: &WatchConfig,
    name: &str,
    description: Option<String>,
    ours: &[(&str, &str)],
) -> CreateRequest {
    let dr = &w.dr;
    let mut tags: Vec<Tag> = dr
        .tags
        .iter()
        .filter(|(k, _)| ours.iter().all(|(tag, _)| k.as_str() != *tag))
        .map(|(k, v)| Tag {
            key: k.clone(),
            value: v.clone(),
        })
        .collect();
    tags.extend(ours.iter().map(|(tag, value)| Tag {
        key: (*tag).to_owned(),
        value: (*value).to_owned(),
    }));
    CreateRequest {
        serverless_cache_name: name.to_owned(),
        description,
        engine: dr.engine.clone(),
        major_engine_version: Some(dr.major_engine_version.clone()),
        subnet_ids: dr.subnet_ids.clone(),
        security_group_ids: dr.security_group_ids.clone(),
        kms_key_id: dr.kms_key_id.clone(),
        user_group_id: dr.user_group_id.clone(),
        snapshot_arns_to_restore: dr.snapshot_arns_to_restore.clone(),
        snapshot_retention_limit: dr.snapshot_retention_limit.map(|n| n as i32),
        daily_snapshot_time: dr.daily_snapshot_time.clone(),
        cache_usage_limits: dr.usage_limits.map(|u| CacheUsageLimits {
            data_storage: u.data_storage_max_gb.map(|g| Limit {
                maximum: g as i32,
                unit: Some("GB".into()),
            }),
            ecpu_per_second: u.ecpu_per_second_max.map(|e| Limit {
                maximum: e as i32,
                unit: None,
            }),
        }),
        tags,
    }
}

/// `plan` for people: per watch, each step's call and what it sends, one fact per line.
pub fn to_text(plans: &[PlanView]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for plan in plans {
        // Read through its JSON: the steps' calls are AWS's own documents, shown key by key.
        let plan = serde_json::to_value(plan).unwrap_or(Value::Null);
        let _ = writeln!(
            out,
            "watch {} (agent {}): a failover now would make these calls, in order",
            crate::text::plain(&plan["watch"]),
            crate::text::plain(&plan["agent_id"]),
        );
        for (i, step) in plan["steps"].as_array().into_iter().flatten().enumerate() {
            let region = step["region"]
                .as_str()
                .map(|r| format!(" in {r}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {}. {:<15} {}{region}",
                i + 1,
                crate::text::plain(&step["step"]),
                crate::text::plain(&step["call"]),
            );
            for (key, value) in step.as_object().into_iter().flatten() {
                if matches!(key.as_str(), "step" | "call" | "region") {
                    continue;
                }
                match value {
                    Value::Array(items) if items.iter().all(Value::is_object) => {
                        let _ = writeln!(out, "       {key}:");
                        for item in items {
                            let _ = writeln!(out, "         - {}", crate::text::plain(item));
                        }
                    }
                    Value::Object(map) => {
                        let _ = writeln!(out, "       {key}:");
                        for (k, v) in map {
                            let _ = writeln!(out, "         {k}: {}", crate::text::plain(v));
                        }
                    }
                    _ => {
                        let _ = writeln!(out, "       {key}: {}", crate::text::plain(value));
                    }
                }
            }
        }
        for (key, value) in plan.as_object().into_iter().flatten() {
            if matches!(key.as_str(), "watch" | "agent_id" | "steps") || value.is_null() {
                continue;
            }
            let _ = writeln!(out, "  {key}: {}", crate::text::plain(value));
        }
    }
    out
}
