//! Phase one of config parsing: the TOML text as typed by the operator, with no judgement yet.
//!
//! Every table denies unknown keys: a typo such as `intreval` must be an error, not a silently
//! ignored setting that leaves a production watch on defaults. Durations stay strings here so
//! that phase two can name the key and line of a bad one.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub agent: RawAgent,
    #[serde(default)]
    pub aws: RawAws,
    #[serde(default)]
    pub dns: RawDns,
    #[serde(default)]
    pub watch: Vec<RawWatch>,
    #[serde(default)]
    pub notify: Vec<RawNotify>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub id: Option<String>,
    pub mode: Option<String>,
    pub state_dir: Option<String>,
    pub admin_listen: Option<String>,
    pub controls: Option<String>,
    pub log_format: Option<String>,
    pub readiness_interval: Option<String>,
    pub readiness_stale: Option<String>,
    pub drill_interval: Option<String>,
    pub peers: Option<Vec<String>>,
    pub quorum: Option<i64>,
    pub peer_token_env: Option<String>,
    pub peer_token_file: Option<String>,
    pub key_file: Option<String>,
    pub peer_keys: Option<BTreeMap<String, String>>,
    pub region: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAws {
    pub endpoint_url: Option<String>,
    pub profile: Option<String>,
    pub credentials_file: Option<String>,
    /// Present only so that phase two can reject credentials written into the file with a
    /// message that says where they belong instead of "unknown field".
    pub access_key_id: Option<toml::Value>,
    pub secret_access_key: Option<toml::Value>,
    pub session_token: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDns {
    pub nameservers: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWatch {
    pub name: Option<String>,
    pub record: Option<String>,
    pub hosted_zone_id: Option<String>,
    pub ttl: Option<String>,
    pub port: Option<i64>,
    pub reader_port: Option<i64>,
    pub primary: Option<RawPrimary>,
    pub dr: Option<RawDr>,
    #[serde(default)]
    pub probe: RawProbe,
    #[serde(default)]
    pub witness: RawWitness,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub gate: Vec<RawGate>,
    pub switch: Option<RawSwitch>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSwitch {
    pub kind: Option<String>,
    pub metric_region: Option<String>,
    pub namespace: Option<String>,
    pub evaluation_periods: Option<i64>,
    pub datapoints_to_alarm: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGate {
    pub name: Option<String>,
    pub kind: Option<String>,
    pub at: Option<String>,
    pub command: Option<Vec<String>>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub method: Option<String>,
    pub timeout: Option<String>,
    pub on_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrimary {
    pub region: Option<String>,
    pub cache_name: Option<String>,
    pub endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDr {
    pub region: Option<String>,
    pub cache_name: Option<String>,
    pub engine: Option<String>,
    pub major_engine_version: Option<String>,
    #[serde(default)]
    pub subnet_ids: Vec<String>,
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    pub kms_key_id: Option<String>,
    pub user_group_id: Option<String>,
    #[serde(default)]
    pub snapshot_arns_to_restore: Vec<String>,
    pub snapshot_retention_limit: Option<i64>,
    pub daily_snapshot_time: Option<String>,
    pub usage_limits: Option<RawUsageLimits>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    pub create_timeout: Option<String>,
    pub adopt_existing: Option<bool>,
    pub standby: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsageLimits {
    pub data_storage_max_gb: Option<i64>,
    pub ecpu_per_second_max: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbe {
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub handshake_interval: Option<String>,
    pub key_prefix: Option<String>,
    pub tls: Option<bool>,
    pub ca_file: Option<String>,
    pub tls_server_name: Option<String>,
    pub insecure_skip_verify: Option<bool>,
    pub reader: Option<bool>,
    pub username: Option<String>,
    pub password_env: Option<String>,
    pub password_file: Option<String>,
    pub iam_auth: Option<bool>,
    /// Accepted only to be rejected with a useful message: secrets never live in config text.
    pub password: Option<toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawWitness {
    pub kind: Option<String>,
    pub address: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub fall: Option<i64>,
    pub rise: Option<i64>,
    pub down_after: Option<String>,
    pub cooldown: Option<String>,
    pub max_auto_failovers: Option<i64>,
    pub max_auto_failovers_window: Option<String>,
    pub lease: Option<bool>,
    pub reminder_interval: Option<String>,
    pub gate_interval: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNotify {
    pub kind: Option<String>,
    pub url: Option<String>,
    pub url_env: Option<String>,
    pub command: Option<Vec<String>>,
    pub timeout: Option<String>,
}
