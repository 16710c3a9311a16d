//! `valkey-dr iam-policy`: the least-privilege IAM policy for a config, built from the config
//! alone (no AWS call), one statement per purpose.
//!
//! Every grant names the resources the agent actually touches: the hosted zone, and within it
//! only the record and its lease record, only as CNAME and TXT, only with CREATE and DELETE
//! (the compare-and-swap never UPSERTs); the DR cache, and the drill caches, which are the only
//! caches it may delete. The config names no account, so ARNs carry `*` there: replace it
//! with the account id to narrow the policy further.
//!
//! The mode decides what the agent may change. In `alert-only` it never builds, deletes,
//! tags or switches anything (a drill is a person's act, with an acting role), so its policy
//! reads only: the record, the caches, the preflight reads, the witness, `elasticache:Connect`,
//! `iam:SimulatePrincipalPolicy` and `iam:GetRole` (so preflight's `permissions` check, which
//! reads the agent's own role and asks about this same policy, passes on a read-only role).
//! `prepare` and `auto-failover` get the whole policy.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::config::partition;
use crate::config::{Config, Credential, Mode, WatchConfig, WitnessConfig};

/// What `CreateServerlessCache` calls on the caller's behalf to build the cache's VPC endpoint
/// (the Service Authorization Reference lists them as its dependent actions). The Describe
/// calls support no resource-level permissions.
const EC2_DESCRIBE: [&str; 5] = [
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVpcEndpoints",
    "ec2:DescribeVpcs",
];

/// The policy document for `config`.
pub fn policy(config: &Config) -> Value {
    let mut statements = Vec::new();
    let mut sids = Sids::default();
    let mut dr_regions = BTreeSet::new();
    let mut route53_partition = None;
    let acts = config.agent.mode != Mode::AlertOnly;
    for w in &config.watches {
        dr_regions.insert(w.dr.region.clone());
        route53_partition.get_or_insert_with(|| partition(&w.primary.region));
        watch_statements(w, acts, &mut sids, &mut statements);
    }
    if let Some(statement) = publish_verdicts(config, &mut sids) {
        statements.push(statement);
    }
    statements.extend(read_switch(config, &mut sids));
    // A change is only waited for by the agent that made it.
    if let Some(p) = route53_partition.filter(|_| acts) {
        statements.push(json!({
            "Sid": sids.unique("Route53WaitForChange", ""),
            "Effect": "Allow",
            "Action": ["route53:GetChange"],
            "Resource": [format!("arn:{p}:route53:::change/*")],
        }));
    }
    if let Some(p) = route53_partition {
        // preflight asks IAM whether the agent's own principal may make every call above.
        // The config does not name the agent's role: narrow `role/*` to it.
        statements.push(json!({
            "Sid": sids.unique("PreflightSimulatePermissions", ""),
            "Effect": "Allow",
            "Action": ["iam:SimulatePrincipalPolicy"],
            "Resource": [format!("arn:{p}:iam::*:role/*"), format!("arn:{p}:iam::*:user/*")],
        }));
        // An assumed-role session's ARN leaves out its role's path (every IAM Identity Center
        // role has one), so preflight reads the role's ARN before it simulates. Only roles:
        // a user's ARN carries its path. `role/*` covers any path; narrow it to the role.
        statements.push(json!({
            "Sid": sids.unique("PreflightReadOwnRole", ""),
            "Effect": "Allow",
            "Action": ["iam:GetRole"],
            "Resource": [format!("arn:{p}:iam::*:role/*")],
        }));
    }
    if acts && !dr_regions.is_empty() {
        statements.push(json!({
            "Sid": sids.unique("Ec2DescribeForDrCache", ""),
            "Effect": "Allow",
            "Action": EC2_DESCRIBE,
            "Resource": "*",
            "Condition": {
                "StringEquals": { "aws:RequestedRegion": dr_regions.into_iter().collect::<Vec<_>>() }
            },
        }));
    }
    json!({ "Version": "2012-10-17", "Statement": statements })
}

/// `[watch.switch] kind = "health_check"`: every agent, whatever its mode, publishes its
/// verdict (0 when it would not fail over) with `PutMetricData`, which takes no resource-level
/// permission: the namespaces and the metric regions are the conditions that narrow it.
fn publish_verdicts(config: &Config, sids: &mut Sids) -> Option<Value> {
    let (namespaces, regions): (BTreeSet<&str>, BTreeSet<&str>) = config
        .watches
        .iter()
        .filter_map(|w| w.switch.health_check())
        .map(|h| (h.namespace.as_str(), h.metric_region.as_str()))
        .unzip();
    (!namespaces.is_empty()).then(|| {
        json!({
            "Sid": sids.unique("PublishVerdicts", ""),
            "Effect": "Allow",
            "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {
                "StringEquals": {
                    "cloudwatch:namespace": namespaces.into_iter().collect::<Vec<_>>(),
                    "aws:RequestedRegion": regions.into_iter().collect::<Vec<_>>(),
                }
            },
        })
    })
}

/// What `preflight`'s `switch` check reads of a health-check watch's set-up: every health
/// check (`ListHealthChecks` takes no resource), and the watch's alarms, by name
/// (`template::alarm_name`), in its `metric_region`.
fn read_switch(config: &Config, sids: &mut Sids) -> Vec<Value> {
    let alarms: Vec<String> = config
        .watches
        .iter()
        .filter_map(|w| {
            let h = w.switch.health_check()?;
            let p = partition(&w.primary.region);
            Some(format!(
                "arn:{p}:cloudwatch:{}:*:alarm:{}",
                h.metric_region,
                crate::template::alarm_name(w, "*")
            ))
        })
        .collect();
    if alarms.is_empty() {
        return Vec::new();
    }
    vec![
        json!({
            "Sid": sids.unique("PreflightReadHealthChecks", ""),
            "Effect": "Allow",
            "Action": ["route53:ListHealthChecks"],
            "Resource": "*",
        }),
        json!({
            "Sid": sids.unique("PreflightReadVerdictAlarms", ""),
            "Effect": "Allow",
            "Action": ["cloudwatch:DescribeAlarms"],
            "Resource": alarms,
        }),
    ]
}

/// The resources a watch's statements name.
struct Arns {
    /// The hosted zone.
    zone: String,
    dr_cache: String,
    /// Every drill's throw-away cache.
    drill_caches: String,
    primary_cache: String,
}

impl Arns {
    fn of(w: &WatchConfig) -> Arns {
        let dr = &w.dr.region;
        Arns {
            zone: format!(
                "arn:{}:route53:::hostedzone/{}",
                partition(&w.primary.region),
                w.hosted_zone_id.trim_start_matches("/hostedzone/")
            ),
            dr_cache: cache_arn(dr, &w.dr.cache_name),
            drill_caches: cache_arn(dr, &format!("{}-drill-*", w.dr.cache_name)),
            primary_cache: cache_arn(&w.primary.region, &w.primary.cache_name),
        }
    }
}

/// A serverless cache's ARN.
fn cache_arn(region: &str, cache: &str) -> String {
    format!(
        "arn:{}:elasticache:{region}:*:serverlesscache:{cache}",
        partition(region)
    )
}

/// The statements for watch `w`; without `acts` (alert-only), only those that read.
fn watch_statements(w: &WatchConfig, acts: bool, sids: &mut Sids, out: &mut Vec<Value>) {
    let name = &w.name;
    let dr = &w.dr.region;
    let Arns {
        zone,
        dr_cache,
        drill_caches,
        primary_cache,
    } = Arns::of(w);

    out.push(json!({
        "Sid": sids.unique("Route53ReadRecord", name),
        "Effect": "Allow",
        "Action": ["route53:ListResourceRecordSets"],
        "Resource": [zone],
    }));
    out.push(json!({
        "Sid": sids.unique("ElastiCacheReadPrimary", name),
        "Effect": "Allow",
        "Action": ["elasticache:DescribeServerlessCaches"],
        "Resource": [primary_cache],
    }));
    if acts {
        acting_statements(w, sids, out);
    } else {
        // `status` and the readiness checks describe the DR cache, which only an acting
        // agent builds.
        out.push(json!({
            "Sid": sids.unique("ElastiCacheReadDrCache", name),
            "Effect": "Allow",
            "Action": ["elasticache:DescribeServerlessCaches"],
            "Resource": [dr_cache],
        }));
    }
    let kms_key_arn = w.dr.kms_key_id.as_ref().map(|key| kms_key(key, dr));
    reading_statements(w, kms_key_arn.as_deref(), sids, out);
    if let WitnessConfig::Aws { .. } = w.witness {
        // The witness lists caches (one page) to prove the DR region's API answers.
        out.push(json!({
            "Sid": sids.unique("ElastiCacheWitness", name),
            "Effect": "Allow",
            "Action": ["elasticache:DescribeServerlessCaches"],
            "Resource": [cache_arn(dr, "*")],
        }));
    }
    if let Credential::Iam { username } = &w.probe.credential {
        let user = |region: &str| {
            format!(
                "arn:{}:elasticache:{region}:*:user:{username}",
                partition(region)
            )
        };
        let mut resources = vec![
            cache_arn(&w.primary.region, &w.primary.cache_name),
            user(&w.primary.region),
            dr_cache.clone(),
        ];
        if acts {
            resources.push(drill_caches.clone());
        }
        if dr != &w.primary.region {
            resources.push(user(dr));
        }
        out.push(json!({
            "Sid": sids.unique("ElastiCacheIamAuth", name),
            "Effect": "Allow",
            "Action": ["elasticache:Connect"],
            "Resource": resources,
        }));
    }
}

/// The ARN `kms:*` grants name for a DR cache's key.
fn kms_key(key: &str, dr: &str) -> String {
    if key.starts_with("arn:") {
        key.to_owned()
    } else if key.starts_with("alias/") {
        // A grant is checked against the key an alias points at, which the config does
        // not name: any key, but only through ElastiCache in the DR region.
        format!("arn:{}:kms:{dr}:*:key/*", partition(dr))
    } else {
        format!("arn:{}:kms:{dr}:*:key/{key}", partition(dr))
    }
}

/// What only an acting agent (`prepare`, `auto-failover`) does: switch the record, build,
/// tag and delete the DR and drill caches, and what building them takes.
fn acting_statements(w: &WatchConfig, sids: &mut Sids, out: &mut Vec<Value>) {
    let name = &w.name;
    let dr = &w.dr.region;
    let Arns {
        zone,
        dr_cache,
        drill_caches,
        ..
    } = Arns::of(w);
    let record = normalized_record_name(&w.record);
    let (names, types) = if w.policy.lease {
        (
            vec![record.clone(), format!("_valkey-dr-lock.{record}")],
            vec!["CNAME", "TXT"],
        )
    } else {
        (vec![record], vec!["CNAME"])
    };
    out.push(json!({
        "Sid": sids.unique("Route53SwitchRecord", name),
        "Effect": "Allow",
        "Action": ["route53:ChangeResourceRecordSets"],
        "Resource": [zone],
        "Condition": {
            "ForAllValues:StringEquals": {
                "route53:ChangeResourceRecordSetsNormalizedRecordNames": names,
                "route53:ChangeResourceRecordSetsRecordTypes": types,
                "route53:ChangeResourceRecordSetsActions": ["CREATE", "DELETE"],
            }
        },
    }));
    out.push(json!({
        "Sid": sids.unique("ElastiCacheBuildDrCache", name),
        "Effect": "Allow",
        "Action": [
            "elasticache:CreateServerlessCache",
            "elasticache:DescribeServerlessCaches",
            "elasticache:ListTagsForResource",
            "elasticache:AddTagsToResource",
        ],
        "Resource": [dr_cache],
    }));
    // `failback --delete-dr` removes the DR cache once the record points at the primary
    // again; a separate statement, so a team that never wants the agent to delete it drops it.
    out.push(json!({
        "Sid": sids.unique("ElastiCacheFailbackDeleteDr", name),
        "Effect": "Allow",
        "Action": ["elasticache:DeleteServerlessCache"],
        "Resource": [dr_cache],
    }));
    out.push(json!({
        "Sid": sids.unique("ElastiCacheDrillCaches", name),
        "Effect": "Allow",
        "Action": [
            "elasticache:CreateServerlessCache",
            "elasticache:DescribeServerlessCaches",
            "elasticache:AddTagsToResource",
            "elasticache:DeleteServerlessCache",
        ],
        "Resource": [drill_caches],
    }));

    // CreateServerlessCache is also authorized against the user group and the snapshots it
    // names; snapshots in S3 are read by the caller's own rights.
    let (s3_snapshots, cache_snapshots): (Vec<&String>, Vec<&String>) =
        w.dr.snapshot_arns_to_restore
            .iter()
            .partition(|a| a.split(':').nth(2) == Some("s3"));
    let mut inputs: Vec<String> = cache_snapshots.into_iter().cloned().collect();
    if let Some(group) = &w.dr.user_group_id {
        inputs.push(format!(
            "arn:{}:elasticache:{dr}:*:usergroup:{group}",
            partition(dr)
        ));
    }
    if !inputs.is_empty() {
        out.push(json!({
            "Sid": sids.unique("ElastiCacheDrCacheInputs", name),
            "Effect": "Allow",
            "Action": ["elasticache:CreateServerlessCache"],
            "Resource": inputs,
        }));
    }
    if !s3_snapshots.is_empty() {
        out.push(json!({
            "Sid": sids.unique("S3ReadDrSnapshots", name),
            "Effect": "Allow",
            "Action": ["s3:GetObject"],
            "Resource": s3_snapshots,
        }));
    }

    let ec2 = |kind: &str, id: &str| format!("arn:{}:ec2:{dr}:*:{kind}/{id}", partition(dr));
    let mut endpoint_inputs: Vec<String> =
        w.dr.subnet_ids.iter().map(|s| ec2("subnet", s)).collect();
    endpoint_inputs.extend(
        w.dr.security_group_ids
            .iter()
            .map(|s| ec2("security-group", s)),
    );
    endpoint_inputs.push(ec2("vpc", "*"));
    endpoint_inputs.push(ec2("vpc-endpoint", "*"));
    out.push(json!({
        "Sid": sids.unique("Ec2DrCacheEndpoint", name),
        "Effect": "Allow",
        "Action": ["ec2:CreateVpcEndpoint"],
        "Resource": endpoint_inputs,
    }));
    out.push(json!({
        "Sid": sids.unique("Ec2DrCacheEndpointTagsAndCleanup", name),
        "Effect": "Allow",
        "Action": ["ec2:CreateTags", "ec2:DeleteVpcEndpoints"],
        "Resource": [ec2("vpc-endpoint", "*")],
    }));

    if let Some(key) = &w.dr.kms_key_id {
        out.push(json!({
            "Sid": sids.unique("KmsDrCacheKey", name),
            "Effect": "Allow",
            "Action": ["kms:CreateGrant", "kms:DescribeKey"],
            "Resource": [kms_key(key, dr)],
            "Condition": {
                "StringEquals": { "kms:ViaService": format!("elasticache.{dr}.amazonaws.com") }
            },
        }));
    }
}

/// What preflight and the readiness checks read for watch `w`.
fn reading_statements(
    w: &WatchConfig,
    kms_key_arn: Option<&str>,
    sids: &mut Sids,
    out: &mut Vec<Value>,
) {
    let name = &w.name;
    let p = partition(&w.primary.region);
    let dr = &w.dr.region;
    let zone_arn = format!(
        "arn:{p}:route53:::hostedzone/{}",
        w.hosted_zone_id.trim_start_matches("/hostedzone/")
    );
    let primary_cache = format!(
        "arn:{}:elasticache:{}:*:serverlesscache:{}",
        partition(&w.primary.region),
        w.primary.region,
        w.primary.cache_name
    );
    // `valkey-dr preflight` (and the daemon's readiness checks) read what a failover will
    // need: the zone, the primary's tags (drift), the user group, the snapshots and the KMS
    // key, each directly rather than through ElastiCache, and the users of the primary's
    // user group (what a failback's flush needs). Read-only.
    let mut reads =
        vec![json!({ "Action": "route53:GetHostedZone", "Resource": zone_arn.clone() })];
    reads.push(json!({ "Action": "elasticache:ListTagsForResource", "Resource": primary_cache }));
    if let Some(group) = &w.dr.user_group_id {
        reads.push(json!({
            "Action": "elasticache:DescribeUserGroups",
            "Resource": format!("arn:{}:elasticache:{dr}:*:usergroup:{group}", partition(dr)),
        }));
    }
    let dr_snapshots: Vec<&String> =
        w.dr.snapshot_arns_to_restore
            .iter()
            .filter(|a| a.split(':').nth(5) == Some("serverlesscachesnapshot"))
            .collect();
    if !dr_snapshots.is_empty() {
        reads.push(json!({
            "Action": "elasticache:DescribeServerlessCacheSnapshots",
            "Resource": dr_snapshots,
        }));
    }
    if let Some(key) = kms_key_arn {
        reads.push(json!({ "Action": "kms:DescribeKey", "Resource": key }));
    }
    // `primary_flush`: the access string of the probe's user in the primary's user group
    // (user ids are not in the config, so every user of the primary's region).
    reads.push(json!({
        "Action": "elasticache:DescribeUsers",
        "Resource": format!(
            "arn:{}:elasticache:{}:*:user:*",
            partition(&w.primary.region),
            w.primary.region
        ),
    }));
    for (i, read) in reads.into_iter().enumerate() {
        out.push(json!({
            "Sid": sids.unique(&format!("PreflightRead{}", i + 1), name),
            "Effect": "Allow",
            "Action": [read["Action"].clone()],
            "Resource": match &read["Resource"] {
                Value::Array(a) => Value::Array(a.clone()),
                other => json!([other]),
            },
        }));
    }
}

/// A record name as `route53:ChangeResourceRecordSetsNormalizedRecordNames` compares it:
/// lower case, no trailing dot, and every character other than a-z, 0-9, `-`, `_` and `.`
/// as a three-digit octal escape (`*` is `\052`).
pub fn normalized_record_name(name: &str) -> String {
    let mut out = String::new();
    for c in name.trim_end_matches('.').chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.') {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("\\{b:03o}"));
            }
        }
    }
    out
}

/// Statement ids: IAM allows only letters and digits, and they must be unique.
#[derive(Default)]
struct Sids(BTreeSet<String>);

impl Sids {
    fn unique(&mut self, purpose: &str, watch: &str) -> String {
        let mut base = purpose.to_owned();
        let mut upper = true;
        for c in watch.chars() {
            if c.is_ascii_alphanumeric() {
                base.push(if upper { c.to_ascii_uppercase() } else { c });
                upper = false;
            } else {
                upper = true;
            }
        }
        let mut sid = base.clone();
        let mut n = 2;
        while !self.0.insert(sid.clone()) {
            sid = format!("{base}{n}");
            n += 1;
        }
        sid
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    struct NoEnv;

    impl crate::config::Env for NoEnv {
        fn var(&self, _name: &str) -> Option<String> {
            None
        }
        fn read_file(&self, path: &Path) -> std::io::Result<String> {
            Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                path.display().to_string(),
            ))
        }
        fn hostname(&self) -> Option<String> {
            Some("test-host".into())
        }
    }

    const BASE: &str = r#"
[agent]
id = "a"
state_dir = "/tmp/x"
mode = "auto-failover"

[[watch]]
name = "sessions"
record = "Valkey.App.Internal."
hosted_zone_id = "Z0123456789ABC"
[watch.primary]
region = "us-east-1"
cache_name = "app-sessions"
endpoint = "app-sessions-abc.serverless.use1.cache.amazonaws.com"
[watch.dr]
region = "us-west-2"
cache_name = "app-sessions-dr"
subnet_ids = ["subnet-1", "subnet-2"]
security_group_ids = ["sg-1"]
"#;

    fn policy_of(extra: &str) -> Value {
        let text = format!("{BASE}{extra}");
        let config = Config::parse(&text, Path::new("agent.toml"), &NoEnv)
            .unwrap_or_else(|e| panic!("{e:#}\n{text}"));
        policy(&config)
    }

    fn statement<'a>(policy: &'a Value, sid: &str) -> &'a Value {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid} in {policy:#}"))
    }

    fn sids(policy: &Value) -> Vec<&str> {
        policy["Statement"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["Sid"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn the_record_swap_is_limited_to_the_record_and_its_lease() {
        let p = policy_of("");
        assert_eq!(p["Version"], "2012-10-17");
        let swap = statement(&p, "Route53SwitchRecordSessions");
        assert_eq!(
            swap["Resource"],
            json!(["arn:aws:route53:::hostedzone/Z0123456789ABC"])
        );
        assert_eq!(swap["Action"], json!(["route53:ChangeResourceRecordSets"]));
        let c = &swap["Condition"]["ForAllValues:StringEquals"];
        assert_eq!(
            c["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
            json!(["valkey.app.internal", "_valkey-dr-lock.valkey.app.internal"])
        );
        assert_eq!(
            c["route53:ChangeResourceRecordSetsRecordTypes"],
            json!(["CNAME", "TXT"])
        );
        assert_eq!(
            c["route53:ChangeResourceRecordSetsActions"],
            json!(["CREATE", "DELETE"])
        );
        assert_eq!(
            statement(&p, "Route53ReadRecordSessions")["Action"],
            json!(["route53:ListResourceRecordSets"])
        );
        assert_eq!(
            statement(&p, "Route53WaitForChange")["Resource"],
            json!(["arn:aws:route53:::change/*"])
        );
    }

    #[test]
    fn without_a_lease_only_the_cname_may_change() {
        let p = policy_of("[watch.policy]\nlease = false\n");
        let c =
            &statement(&p, "Route53SwitchRecordSessions")["Condition"]["ForAllValues:StringEquals"];
        assert_eq!(
            c["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
            json!(["valkey.app.internal"])
        );
        assert_eq!(
            c["route53:ChangeResourceRecordSetsRecordTypes"],
            json!(["CNAME"])
        );
    }

    #[test]
    fn only_drill_caches_and_the_dr_cache_at_failback_may_be_deleted() {
        let p = policy_of("");
        let dr = statement(&p, "ElastiCacheBuildDrCacheSessions");
        assert_eq!(
            dr["Resource"],
            json!(["arn:aws:elasticache:us-west-2:*:serverlesscache:app-sessions-dr"])
        );
        let drill = statement(&p, "ElastiCacheDrillCachesSessions");
        assert_eq!(
            drill["Resource"],
            json!(["arn:aws:elasticache:us-west-2:*:serverlesscache:app-sessions-dr-drill-*"])
        );
        for s in p["Statement"].as_array().unwrap() {
            let deletes = s["Action"]
                .as_array()
                .unwrap()
                .iter()
                .any(|a| a == "elasticache:DeleteServerlessCache");
            assert_eq!(
                deletes,
                s["Sid"] == "ElastiCacheDrillCachesSessions"
                    || s["Sid"] == "ElastiCacheFailbackDeleteDrSessions",
                "{s}"
            );
        }
        assert_eq!(
            statement(&p, "ElastiCacheReadPrimarySessions")["Resource"],
            json!(["arn:aws:elasticache:us-east-1:*:serverlesscache:app-sessions"])
        );
    }

    #[test]
    fn the_vpc_endpoint_is_limited_to_the_configured_subnets_and_groups() {
        let p = policy_of("");
        let endpoint = statement(&p, "Ec2DrCacheEndpointSessions");
        assert_eq!(
            endpoint["Resource"],
            json!([
                "arn:aws:ec2:us-west-2:*:subnet/subnet-1",
                "arn:aws:ec2:us-west-2:*:subnet/subnet-2",
                "arn:aws:ec2:us-west-2:*:security-group/sg-1",
                "arn:aws:ec2:us-west-2:*:vpc/*",
                "arn:aws:ec2:us-west-2:*:vpc-endpoint/*",
            ])
        );
        let describe = statement(&p, "Ec2DescribeForDrCache");
        assert_eq!(describe["Resource"], "*");
        assert_eq!(
            describe["Condition"]["StringEquals"]["aws:RequestedRegion"],
            json!(["us-west-2"])
        );
    }

    #[test]
    fn optional_inputs_add_their_own_statements() {
        let p = policy_of("");
        for absent in [
            "ElastiCacheDrCacheInputsSessions",
            "S3ReadDrSnapshotsSessions",
            "KmsDrCacheKeySessions",
            "ElastiCacheIamAuthSessions",
        ] {
            assert!(!sids(&p).contains(&absent), "{absent}");
        }
        let p = policy_of(
            r#"kms_key_id = "arn:aws:kms:us-west-2:111122223333:key/k-1"
user_group_id = "app-users"
snapshot_arns_to_restore = ["arn:aws:elasticache:us-west-2:111122223333:serverlesscachesnapshot:s1", "arn:aws:s3:::bucket/dump.rdb"]
[watch.probe]
iam_auth = true
username = "probe"
"#,
        );
        assert_eq!(
            statement(&p, "ElastiCacheDrCacheInputsSessions")["Resource"],
            json!([
                "arn:aws:elasticache:us-west-2:111122223333:serverlesscachesnapshot:s1",
                "arn:aws:elasticache:us-west-2:*:usergroup:app-users",
            ])
        );
        assert_eq!(
            statement(&p, "S3ReadDrSnapshotsSessions")["Resource"],
            json!(["arn:aws:s3:::bucket/dump.rdb"])
        );
        let kms = statement(&p, "KmsDrCacheKeySessions");
        assert_eq!(
            kms["Resource"],
            json!(["arn:aws:kms:us-west-2:111122223333:key/k-1"])
        );
        assert_eq!(
            kms["Condition"]["StringEquals"]["kms:ViaService"],
            "elasticache.us-west-2.amazonaws.com"
        );
        let connect = statement(&p, "ElastiCacheIamAuthSessions");
        assert_eq!(connect["Action"], json!(["elasticache:Connect"]));
        let resources = connect["Resource"].as_array().unwrap();
        for r in [
            "arn:aws:elasticache:us-east-1:*:serverlesscache:app-sessions",
            "arn:aws:elasticache:us-east-1:*:user:probe",
            "arn:aws:elasticache:us-west-2:*:serverlesscache:app-sessions-dr",
            "arn:aws:elasticache:us-west-2:*:serverlesscache:app-sessions-dr-drill-*",
            "arn:aws:elasticache:us-west-2:*:user:probe",
        ] {
            assert!(resources.iter().any(|x| x == r), "{r} missing: {connect}");
        }
    }

    /// Issue 23: the alert-only examples' read-only role answered `unknown` or failed
    /// preflight, because the policy was the acting one whatever the mode.
    #[test]
    fn alert_only_reads_and_the_acting_modes_may_change() {
        const WRITES: [&str; 9] = [
            "route53:ChangeResourceRecordSets",
            "elasticache:CreateServerlessCache",
            "elasticache:DeleteServerlessCache",
            "elasticache:AddTagsToResource",
            "ec2:CreateVpcEndpoint",
            "ec2:CreateTags",
            "ec2:DeleteVpcEndpoints",
            "kms:CreateGrant",
            "route53:GetChange",
        ];
        let extra = "kms_key_id = \"alias/k\"\n\
                     snapshot_arns_to_restore = [\"arn:aws:s3:::b/snap.rdb\"]\n\
                     [watch.probe]\niam_auth = true\nusername = \"probe\"\n";
        let actions = |p: &Value| -> BTreeSet<String> {
            p["Statement"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|s| s["Action"].as_array().unwrap().clone())
                .map(|a| a.as_str().unwrap().to_owned())
                .collect()
        };
        let acting = policy_of(extra);
        for mode in ["prepare", "auto-failover"] {
            let text = format!("{BASE}{extra}")
                .replace("mode = \"auto-failover\"", &format!("mode = \"{mode}\""));
            let config = Config::parse(&text, Path::new("agent.toml"), &NoEnv).unwrap();
            let all = actions(&policy(&config));
            for write in WRITES {
                assert!(all.contains(write), "{mode} lacks {write}");
            }
        }
        let text = format!("{BASE}{extra}").replace("mode = \"auto-failover\"\n", "");
        let config = Config::parse(&text, Path::new("agent.toml"), &NoEnv).unwrap();
        assert_eq!(config.agent.mode, Mode::AlertOnly);
        let reads = policy(&config);
        let read_actions = actions(&reads);
        for write in WRITES {
            assert!(!read_actions.contains(write), "alert-only may {write}");
        }
        assert!(!read_actions.contains("s3:GetObject"));
        // What it does read is what the acting policy reads, and preflight may ask.
        assert!(
            read_actions.is_subset(&actions(&acting)),
            "{read_actions:?}"
        );
        for read in [
            "route53:ListResourceRecordSets",
            "route53:GetHostedZone",
            "elasticache:DescribeServerlessCaches",
            "elasticache:ListTagsForResource",
            "kms:DescribeKey",
            "elasticache:Connect",
            "iam:SimulatePrincipalPolicy",
            "iam:GetRole",
        ] {
            assert!(read_actions.contains(read), "alert-only lacks {read}");
        }
        let dr = statement(&reads, "ElastiCacheReadDrCacheSessions");
        assert_eq!(
            dr["Resource"],
            json!(["arn:aws:elasticache:us-west-2:*:serverlesscache:app-sessions-dr"])
        );
        let connect = statement(&reads, "ElastiCacheIamAuthSessions");
        assert!(
            !connect.to_string().contains("-drill-"),
            "drills are an acting role's: {connect}"
        );
    }

    #[test]
    fn sids_are_alphanumeric_and_unique() {
        let p = policy_of(
            r#"
[[watch]]
name = "sessions-2"
record = "other.app.internal."
hosted_zone_id = "ZOTHER"
[watch.primary]
region = "eu-west-1"
cache_name = "other"
endpoint = "other-abc.serverless.euw1.cache.amazonaws.com"
[watch.dr]
region = "eu-central-1"
cache_name = "other-dr"
subnet_ids = ["subnet-9"]
security_group_ids = ["sg-9"]
"#,
        );
        let all = sids(&p);
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len(), "{all:?}");
        assert!(
            all.iter()
                .all(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric()))
        );
        assert_eq!(
            statement(&p, "Route53ReadRecordSessions2")["Resource"],
            json!(["arn:aws:route53:::hostedzone/ZOTHER"])
        );
        assert_eq!(
            statement(&p, "Ec2DescribeForDrCache")["Condition"]["StringEquals"]["aws:RequestedRegion"],
            json!(["eu-central-1", "us-west-2"])
        );
    }

    /// Issue 22, defect 5: preflight reads the agent's own role (whose path the session's
    /// ARN leaves out) before it simulates; the policy lets it, on roles only.
    #[test]
    fn preflight_may_read_the_agents_role_beside_simulating_it() {
        let p = policy_of("");
        let sids = sids(&p);
        let simulate = sids
            .iter()
            .position(|s| *s == "PreflightSimulatePermissions")
            .expect("simulate");
        assert_eq!(sids[simulate + 1], "PreflightReadOwnRole", "{sids:?}");
        let read = statement(&p, "PreflightReadOwnRole");
        assert_eq!(read["Action"], json!(["iam:GetRole"]));
        assert_eq!(read["Resource"], json!(["arn:aws:iam::*:role/*"]));
    }

    /// Issue 22, defect 6: the regions of the isolated partitions got `arn:aws` ARNs.
    #[test]
    fn every_arn_names_the_regions_partition() {
        let text = BASE
            .replace("us-east-1", "us-isob-east-1")
            .replace("us-west-2", "us-isob-west-1");
        let config = Config::parse(&text, Path::new("agent.toml"), &NoEnv).unwrap();
        let p = policy(&config);
        for s in p["Statement"].as_array().unwrap() {
            let resources = match &s["Resource"] {
                Value::Array(a) => a.clone(),
                one => vec![one.clone()],
            };
            for r in resources
                .iter()
                .filter_map(Value::as_str)
                .filter(|r| *r != "*")
            {
                assert!(r.starts_with("arn:aws-iso-b:"), "{r} in {s}");
            }
        }
    }

    #[test]
    fn record_names_are_normalised_as_route53_compares_them() {
        assert_eq!(
            normalized_record_name("Valkey.App.Internal."),
            "valkey.app.internal"
        );
        assert_eq!(normalized_record_name("_x.a-b.c"), "_x.a-b.c");
        assert_eq!(
            normalized_record_name("*.app.internal."),
            "\\052.app.internal"
        );
    }

    #[test]
    fn a_health_check_switch_may_publish_verdicts_to_its_namespace_and_region_only() {
        assert!(
            !sids(&policy_of("")).contains(&"PublishVerdicts"),
            "a record switch publishes nothing"
        );
        let p = policy_of(
            "standby = \"warm\"\n[watch.switch]\nkind = \"health_check\"\nnamespace = \"Shop/DR\"\n",
        );
        let publish = statement(&p, "PublishVerdicts");
        assert_eq!(publish["Action"], json!(["cloudwatch:PutMetricData"]));
        assert_eq!(publish["Resource"], "*");
        assert_eq!(
            publish["Condition"]["StringEquals"],
            json!({ "cloudwatch:namespace": ["Shop/DR"], "aws:RequestedRegion": ["us-west-2"] })
        );
        // preflight reads the set-up: every health check, and this watch's alarms only.
        assert_eq!(
            statement(&p, "PreflightReadHealthChecks")["Action"],
            json!(["route53:ListHealthChecks"])
        );
        assert_eq!(
            statement(&p, "PreflightReadVerdictAlarms")["Resource"],
            json!(["arn:aws:cloudwatch:us-west-2:*:alarm:valkey-dr-sessions-*"])
        );
        // Every mode publishes (alert-only its 0s).
        let text = BASE.replace("mode = \"auto-failover\"", "mode = \"alert-only\"")
            + "standby = \"warm\"\n[watch.switch]\nkind = \"health_check\"\n";
        let config = Config::parse(&text, Path::new("agent.toml"), &NoEnv).unwrap();
        assert!(sids(&policy(&config)).contains(&"PublishVerdicts"));
    }
}
