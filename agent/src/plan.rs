//! The failover plan: the exact AWS calls a failover of a watch would make, built from config
//! alone. It travels with "would fail over" alerts so that people can act on them by hand.

use serde_json::{Value, json};

use std::time::Duration;

use crate::config::{Config, WatchConfig};
use crate::executor;

/// The plan for `w`, as JSON.
pub fn failover_plan(config: &Config, w: &WatchConfig) -> Value {
    failover_plan_from(config, w, None)
}

/// [`failover_plan`] with the record's current CNAME target filled in: the value the swap's
/// exact `DELETE` must carry.
pub fn failover_plan_from(config: &Config, w: &WatchConfig, current: Option<&str>) -> Value {
    json!({
        "watch": w.name,
        "agent_id": config.agent.id,
        "steps": [
            { "step": "provision", "region": w.dr.region, "call": "CreateServerlessCache", "input": create_input(w) },
            { "step": "wait_available", "region": w.dr.region, "call": "DescribeServerlessCaches",
              "until": "Status = available", "timeout": humantime::format_duration(w.dr.create_timeout).to_string() },
            { "step": "switch_dns", "call": "ChangeResourceRecordSets", "hosted_zone_id": w.hosted_zone_id,
              "changes": [
                { "Action": "DELETE", "Name": w.record, "Type": "CNAME", "Value": current.unwrap_or("<current target>") },
                { "Action": "CREATE", "Name": w.record, "Type": "CNAME", "TTL": w.ttl.as_secs(), "Value": "<DR endpoint>" },
              ] },
        ],
    })
}

/// What the executor carries out for a failover of `w` with id `failover_id`.
pub fn executor_plan(config: &Config, w: &WatchConfig, failover_id: &str) -> executor::Plan {
    let mut tags = w.dr.tags.clone();
    tags.insert(executor::FAILOVER_TAG.to_owned(), failover_id.to_owned());
    let mut input = create_input(w);
    input["Tags"] = tags
        .iter()
        .map(|(k, v)| json!({"Key": k, "Value": v}))
        .collect();
    executor::Plan {
        failover_id: failover_id.to_owned(),
        watch: w.name.clone(),
        owner: config.agent.id.clone(),
        hosted_zone_id: w.hosted_zone_id.clone(),
        record: w.record.clone(),
        ttl: w.ttl.as_secs() as u32,
        cache: executor::api::CacheSpec {
            name: w.dr.cache_name.clone(),
            region: w.dr.region.clone(),
            input,
            tags,
        },
        create_timeout: w.dr.create_timeout,
        // Long enough to cover provisioning; a crashed owner's lease is taken over after it.
        lease: w
            .policy
            .lease
            .then(|| w.dr.create_timeout + Duration::from_secs(15 * 60)),
        adopt_existing: w.dr.adopt_existing,
    }
}

/// The `CreateServerlessCache` input for the DR spec of `w` (`valkey-dr drill` builds its
/// throw-away cache from it too, so a drill tests exactly what a failover would ask for).
pub fn create_input(w: &WatchConfig) -> Value {
    let dr = &w.dr;
    let mut create = json!({
        "ServerlessCacheName": dr.cache_name,
        "Engine": dr.engine,
        "MajorEngineVersion": dr.major_engine_version,
        "SubnetIds": dr.subnet_ids,
        "SecurityGroupIds": dr.security_group_ids,
        "SnapshotArnsToRestore": dr.snapshot_arns_to_restore,
        "Tags": dr.tags.iter().map(|(k, v)| json!({"Key": k, "Value": v})).collect::<Vec<_>>(),
    });
    let fields = [
        ("KmsKeyId", dr.kms_key_id.clone().map(Value::from)),
        ("UserGroupId", dr.user_group_id.clone().map(Value::from)),
        ("SnapshotRetentionLimit", dr.snapshot_retention_limit.map(Value::from)),
        ("DailySnapshotTime", dr.daily_snapshot_time.clone().map(Value::from)),
        (
            "CacheUsageLimits",
            dr.usage_limits.map(|u| {
                json!({
                    "DataStorage": u.data_storage_max_gb.map(|g| json!({"Maximum": g, "Unit": "GB"})),
                    "ECPUPerSecond": u.ecpu_per_second_max.map(|e| json!({"Maximum": e})),
                })
            }),
        ),
    ];
    if let Value::Object(map) = &mut create {
        for (k, v) in fields {
            if let Some(v) = v {
                map.insert(k.into(), v);
            }
        }
    }
    create
}
