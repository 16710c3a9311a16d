//! The failover plan: the exact AWS calls a failover of a watch would make, built from config
//! alone. It travels with "would fail over" alerts so that people can act on them by hand.

use serde_json::{Value, json};

use crate::config::{Config, WatchConfig};

/// The plan for `w`, as JSON.
pub fn failover_plan(config: &Config, w: &WatchConfig) -> Value {
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
    json!({
        "watch": w.name,
        "agent_id": config.agent.id,
        "steps": [
            { "step": "provision", "region": dr.region, "call": "CreateServerlessCache", "input": create },
            { "step": "wait_available", "region": dr.region, "call": "DescribeServerlessCaches",
              "until": "Status = available", "timeout": humantime::format_duration(dr.create_timeout).to_string() },
            { "step": "switch_dns", "call": "ChangeResourceRecordSets", "hosted_zone_id": w.hosted_zone_id,
              "changes": [
                { "Action": "DELETE", "Name": w.record, "Type": "CNAME", "Value": "<current target>" },
                { "Action": "CREATE", "Name": w.record, "Type": "CNAME", "TTL": w.ttl.as_secs(), "Value": "<DR endpoint>" },
              ] },
        ],
    })
}
