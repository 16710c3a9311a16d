//! `valkey-dr preflight` end to end: the real binary against a lab of its own per test, each
//! broken reference named by its own check, drift as warnings, and the daemon's readiness.

mod support;

use std::path::Path;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_elasticache::config::Credentials;
use aws_sdk_route53::types::{ChangeAction, RrType};
use serde_json::Value;
use support::raw_aws::{cache_status, change, rrset, send, wait_available, wait_cache_status};
use support::{Agent, TestLab, Webhook, agent_get, run_bounded, run_clean, wait_until};
use valkey_dr_lab::config::{DR_CACHE, DR_REGION};
use valkey_dr_lab::{Fault, RECORD};

const WATCH: &str = "sessions";

/// Every check preflight runs, in order.
const CHECKS: [&str; 22] = valkey_dr::preflight::CHECKS;

/// One `valkey-dr preflight --output json` run.
struct Run {
    code: i32,
    json: Value,
    output: String,
}

impl Run {
    /// Each check's result, by name.
    fn results(&self) -> Vec<(String, String)> {
        self.json["checks"]
            .as_array()
            .unwrap_or_else(|| panic!("no checks: {}", self.output))
            .iter()
            .map(|c| {
                (
                    c["check"].as_str().unwrap_or("?").to_owned(),
                    c["result"].as_str().unwrap_or("?").to_owned(),
                )
            })
            .collect()
    }

    fn check(&self, name: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["check"] == name))
            .unwrap_or_else(|| panic!("no check {name}: {}", self.output))
    }

    /// The checks with `result`.
    fn with(&self, result: &str) -> Vec<String> {
        self.results()
            .into_iter()
            .filter(|(_, r)| r == result)
            .map(|(c, _)| c)
            .collect()
    }
}

async fn preflight(config: &Path) -> Run {
    let (code, json, output) = support::preflight_json(config).await;
    Run { code, json, output }
}

/// The lab's primary endpoint, where the record points.
fn primary_endpoint(lab: &TestLab) -> String {
    lab.lab
        .info()
        .caches
        .iter()
        .find(|c| c.name == valkey_dr_lab::PRIMARY_CACHE)
        .expect("the primary")
        .endpoint
        .clone()
}

/// Asserts that exactly `check` fails (exit 2, CRITICAL) and every other check is `ok`, and
/// that the failing one says `found` and how to fix it.
fn fails_alone(run: &Run, check: &str, found: &str) {
    assert_eq!(run.code, 2, "{}", run.output);
    assert_eq!(run.json["status"], "CRITICAL", "{}", run.output);
    assert_eq!(run.with("fail"), [check], "{}", run.output);
    assert_eq!(
        run.with("ok").len(),
        CHECKS.len() - 1,
        "every other check still passes: {}",
        run.output
    );
    let c = run.check(check);
    assert!(
        c["found"].as_str().unwrap_or_default().contains(found),
        "{check} should say {found:?}: {c:#}"
    );
    assert!(
        c["fix"].as_str().is_some_and(|f| !f.is_empty()),
        "{check} says how to fix it: {c:#}"
    );
}

async fn sdk(lab: &TestLab, region: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(region.to_owned()))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "test"))
        .load()
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_lab_is_ready() {
    let lab = TestLab::start().await;
    let run = preflight(&lab.config()).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert_eq!(run.json["status"], "OK");
    let names: Vec<String> = run.results().into_iter().map(|(c, _)| c).collect();
    assert_eq!(names, CHECKS, "every check runs, in order");
    assert_eq!(run.with("ok").len(), CHECKS.len(), "{}", run.output);
    assert!(
        run.check("identity")["found"]
            .as_str()
            .unwrap()
            .contains(valkey_dr_lab::LAB_CALLER_ARN),
        "{}",
        run.output
    );
    assert!(
        run.check("permissions")["found"]
            .as_str()
            .unwrap()
            .contains(valkey_dr_lab::LAB_ROLE_ARN),
        "{}",
        run.output
    );

    // A snapshot to restore is looked up in the DR region: there, available, it is fine; one
    // that does not exist fails its check.
    let snapshot = |name: &str| {
        format!(
            "create_timeout = \"5m\"\nsnapshot_arns_to_restore = [\"arn:aws:elasticache:{DR_REGION}:{}:serverlesscachesnapshot:{name}\"]",
            valkey_dr_lab::LAB_ACCOUNT_ID
        )
    };
    let with = snapshot(valkey_dr_lab::LAB_SNAPSHOT_NAME);
    let config = lab.config_variant("snapshot.toml", &[("create_timeout = \"5m\"", &with)]);
    let run = preflight(&config).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert!(
        run.check("dr_snapshots")["found"]
            .as_str()
            .unwrap()
            .contains("available"),
        "{}",
        run.output
    );
    let missing = snapshot("gone");
    let config = lab.config_variant("no-snapshot.toml", &[("create_timeout = \"5m\"", &missing)]);
    fails_alone(
        &preflight(&config).await,
        "dr_snapshots",
        "gone does not exist",
    );

    // The text form says the same, with the Nagios word last.
    let mut command = tokio::process::Command::new(support::agent_bin());
    command.args(["preflight", "--config"]).arg(lab.config());
    let out = run_clean(command).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.trim_end()
            .lines()
            .last()
            .unwrap()
            .starts_with(&format!("OK: {} ok", CHECKS.len())),
        "{text}"
    );

    // Read-only: nothing was created, deleted or changed.
    let calls = lab.lab.calls();
    assert!(
        calls.iter().all(|c| c.action.starts_with("Describe")
            || c.action.starts_with("List")
            || c.action.starts_with("Get")
            || c.action == "SimulatePrincipalPolicy"),
        "{:#?}",
        calls.iter().map(|c| &c.action).collect::<Vec<_>>()
    );
    support::assert_botocore_conformant(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credentials_and_a_denied_action_fail_their_checks() {
    let lab = TestLab::start().await;
    let (line, none) = lab.no_credentials_edit();
    let config = lab.config_variant("no-credentials.toml", &[(&line, &none)]);
    let run = preflight(&config).await;
    assert_eq!(run.code, 2, "{}", run.output);
    assert_eq!(run.with("fail"), ["identity"], "{}", run.output);
    assert_eq!(
        run.with("unknown").len(),
        CHECKS.len() - 1,
        "nothing else can be checked without credentials: {}",
        run.output
    );
    assert!(
        run.check("identity")["found"]
            .as_str()
            .unwrap()
            .contains("credentials or permissions"),
        "{}",
        run.output
    );

    lab.fault(Fault::IamDeny {
        action: "route53:ChangeResourceRecordSets".into(),
    })
    .await;
    // An acting agent needs the record switch; an alert-only one is not asked about it.
    let acting = lab.config_variant(
        "acting.toml",
        &[("mode = \"alert-only\"", "mode = \"auto-failover\"")],
    );
    let run = preflight(&acting).await;
    fails_alone(&run, "permissions", "route53:ChangeResourceRecordSets");
    let run = preflight(&lab.config()).await;
    assert_eq!(run.code, 0, "alert-only only reads: {}", run.output);

    // Only preflight needs SimulatePrincipalPolicy: without it, permissions are unknown, and
    // the run says which permission would make them checkable.
    lab.fault(Fault::IamAllow {
        action: "route53:ChangeResourceRecordSets".into(),
    })
    .await;
    lab.fault(Fault::IamDeny {
        action: "iam:SimulatePrincipalPolicy".into(),
    })
    .await;
    let run = preflight(&lab.config()).await;
    assert_eq!(run.code, 3, "UNKNOWN: {}", run.output);
    assert_eq!(run.with("unknown"), ["permissions"], "{}", run.output);
    assert!(
        run.check("permissions")["fix"]
            .as_str()
            .unwrap()
            .contains("iam:SimulatePrincipalPolicy"),
        "{}",
        run.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_key_and_a_deleted_subnet_fail_their_checks() {
    let lab = TestLab::start().await;
    lab.fault(Fault::KmsDisable).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "dr_kms_key", "Disabled");
    lab.fault(Fault::KmsEnable).await;
    assert_eq!(preflight(&lab.config()).await.code, 0);

    lab.fault(Fault::SubnetDelete {
        subnet: "subnet-lab0002".into(),
    })
    .await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "dr_subnets", "subnet-lab0002");

    // Subnets that exist but share one availability zone fail too.
    let config = lab.config_variant(
        "one-az.toml",
        &[(
            "subnet_ids = [\"subnet-lab0001\", \"subnet-lab0002\"]",
            "subnet_ids = [\"subnet-lab0001\", \"subnet-lab0003\"]",
        )],
    );
    let run = preflight(&config).await;
    fails_alone(&run, "dr_subnets", "at least 2 availability zones");
}

/// Replaces the lab's CNAME by `set` through the Route 53 API, as a person might by hand.
async fn replace_record(lab: &TestLab, set: aws_sdk_route53::types::ResourceRecordSet) {
    let client = aws_sdk_route53::Client::new(&sdk(lab, "us-east-1").await);
    let primary = primary_endpoint(lab);
    let ttl = i64::try_from(lab.lab.info().ttl_s).unwrap();
    let current = rrset(RECORD, RrType::Cname, ttl, &[&primary]);
    send(
        &client,
        vec![
            change(ChangeAction::Delete, current),
            change(ChangeAction::Create, set),
        ],
        None,
    )
    .await
    .expect("the record is replaced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_ttl_300_fails_the_record_check() {
    let lab = TestLab::start().await;
    let primary = lab.lab.info().caches[0].endpoint.clone();
    replace_record(&lab, rrset(RECORD, RrType::Cname, 300, &[&primary])).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "route53_record", "TTL of 300 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_a_record_instead_of_a_cname_fails_the_record_check() {
    let lab = TestLab::start().await;
    replace_record(&lab, rrset(RECORD, RrType::A, 30, &["127.0.0.1"])).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "route53_record", "an A record, not a CNAME");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_name_taken_by_a_foreign_cache_fails_the_name_check() {
    let lab = TestLab::start_with(|o| o.provision_delay = Duration::from_millis(300)).await;
    let client = aws_sdk_elasticache::Client::new(&sdk(&lab, DR_REGION).await);
    create_dr_cache(&client, &[]).await;
    wait_available(&client, DR_CACHE, Duration::from_secs(20)).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "dr_name", "valkey-dr did not build");

    // Adopted on purpose, the same cache is fine.
    let config = lab.config_variant(
        "adopt.toml",
        &[(
            "create_timeout = \"5m\"",
            "create_timeout = \"5m\"\nadopt_existing = true",
        )],
    );
    let run = preflight(&config).await;
    assert_eq!(run.check("dr_name")["result"], "ok", "{}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_drift_field_warns_on_its_own() {
    let lab = TestLab::start().await;
    for (check, edit) in [
        (
            "drift_engine",
            (
                "major_engine_version = \"8\"",
                "major_engine_version = \"7\"",
            ),
        ),
        (
            "drift_usage_limits",
            (
                "create_timeout = \"5m\"",
                "create_timeout = \"5m\"\nusage_limits = { data_storage_max_gb = 10 }",
            ),
        ),
        (
            "drift_kms_key",
            ("kms_key_id = \"alias/valkey-dr-lab\"\n", ""),
        ),
        (
            "drift_snapshot_retention",
            (
                "snapshot_retention_limit = 1",
                "snapshot_retention_limit = 3",
            ),
        ),
        (
            "drift_user_group",
            ("user_group_id = \"valkey-dr-lab-users\"\n", ""),
        ),
        (
            "drift_tags",
            (
                "create_timeout = \"5m\"",
                "create_timeout = \"5m\"\ntags = { app = \"sessions\" }",
            ),
        ),
    ] {
        let config = lab.config_variant(&format!("{check}.toml"), &[edit]);
        let run = preflight(&config).await;
        assert_eq!(run.code, 1, "{check}: WARNING: {}", run.output);
        assert_eq!(run.json["status"], "WARNING", "{check}");
        assert_eq!(run.with("warn"), [check], "{check}: {}", run.output);
        assert_eq!(
            run.with("ok").len(),
            CHECKS.len() - 1,
            "{check}: {}",
            run.output
        );
        let c = run.check(check);
        assert!(
            c["found"].as_str().unwrap().contains("the primary has"),
            "{c:#}"
        );
    }
}

/// The daemon runs the same checks at start and every `readiness_interval`: a disabled key is
/// `not_ready` naming its check, the metric and `/status` agree, and fixing it sends `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_says_not_ready_then_ready_and_its_metric_and_status_agree() {
    let lab = TestLab::start().await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let config = lab.config_variant(
        "readiness.toml",
        &[
            (
                "log_format = \"text\"",
                "log_format = \"text\"\nreadiness_interval = \"1s\"",
            ),
            ("reminder_interval = \"1m\"\n", &notify),
        ],
    );
    lab.fault(Fault::KmsDisable).await;
    let state_dir = lab.dir.path().join("state");
    let agent = Agent::start_clean(&config, &state_dir).await;
    let not_ready = wait_until(Duration::from_secs(10), || async {
        hook.count("not_ready") > 0
    })
    .await;
    assert!(not_ready, "{:?}\n{}", hook.names(), agent.log_text());
    let event = hook
        .events()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["event"] == "not_ready")
        .unwrap();
    assert_eq!(
        event["detail"]["failing"],
        serde_json::json!(["dr_kms_key"]),
        "{event:#}"
    );
    assert!(
        event["reasons"].to_string().contains("Disabled"),
        "{event:#}"
    );
    // `/status` is republished on a short timer, so it may trail the event by a moment.
    assert!(
        wait_until(Duration::from_secs(5), || async {
            readiness(&agent, "dr_kms_key").await == (Some(false), Some(0))
        })
        .await,
        "{:?}",
        readiness(&agent, "dr_kms_key").await
    );
    assert_eq!(readiness(&agent, "identity").await, (Some(true), Some(1)));

    lab.fault(Fault::KmsEnable).await;
    let ready = wait_until(Duration::from_secs(10), || async {
        hook.count("ready") > 0
    })
    .await;
    assert!(ready, "{:?}\n{}", hook.names(), agent.log_text());
    assert!(
        wait_until(Duration::from_secs(5), || async {
            readiness(&agent, "dr_kms_key").await == (Some(true), Some(1))
        })
        .await
    );
    assert_eq!(hook.count("not_ready"), 1, "{:?}", hook.names());
    // No drill has run in this lab: the daemon says the drill is overdue.
    assert!(hook.count("drill_overdue") >= 1, "{:?}", hook.names());
    agent.kill9().await;
}

/// `/status`'s readiness of `check` (`ready` unless it failed) and `valkey_dr_ready` for it.
async fn readiness(agent: &Agent, check: &str) -> (Option<bool>, Option<i64>) {
    let Some(addr) = agent.admin() else {
        return (None, None);
    };
    let status = agent
        .status_get()
        .await
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok());
    let from_status = status.and_then(|s| {
        let w = s["readiness"]["watches"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == WATCH)?
            .clone();
        let result = w["checks"]
            .as_array()?
            .iter()
            .find(|c| c["check"] == check)?["result"]
            .as_str()?
            .to_owned();
        Some(result != "fail")
    });
    let metrics = agent_get(addr, "/metrics").await.map(|(_, b)| b);
    let series = format!("valkey_dr_ready{{watch=\"{WATCH}\",check=\"{check}\"}} ");
    let from_metrics = metrics.and_then(|m| {
        m.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    (from_status, from_metrics)
}

/// `drill --history` lists the drills the lab ran, phase by phase, as the daemon's metrics do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drill_history_lists_a_real_drill_phase_by_phase() {
    let lab = TestLab::start_with(|o| o.provision_delay = Duration::from_millis(300)).await;
    let mut command = tokio::process::Command::new(support::agent_bin());
    command.args(["drill", "--config"]).arg(lab.config());
    let out = run_bounded(command).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["drill", "--history", "--output", "json", "--config"])
        .arg(lab.config());
    let out = run_bounded(command).await;
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let drills = v["history"][0]["drills"].as_array().expect("drills");
    assert_eq!(drills.len(), 1, "{v:#}");
    let d = &drills[0];
    assert_eq!(d["ok"], true, "{v:#}");
    for phase in ["create", "wait_available", "verify", "delete"] {
        assert!(d["phases_ms"][phase].is_u64(), "{phase}: {v:#}");
    }
    assert!(d["provisioning_ms"].as_u64().unwrap() >= 300, "{v:#}");
    assert!(
        d["baseline_ms"].is_null(),
        "the first drill has no baseline"
    );
    assert_eq!(d["slow"], false);

    // The daemon reads the same reports: when the last drill finished, and its phases.
    let state_dir = lab.dir.path().join("state");
    let agent = Agent::start_clean(&lab.config(), &state_dir).await;
    let addr = agent.admin().expect("admin address");
    let finished = humantime::parse_rfc3339_weak(d["finished_at"].as_str().unwrap()).unwrap();
    let expected = finished
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let phase = "valkey_dr_drill_phase_seconds{watch=\"sessions\",phase=\"wait_available\"}";
    let metrics = || async {
        agent_get(addr, "/metrics")
            .await
            .map(|(_, b)| b)
            .unwrap_or_default()
    };
    let seen = wait_until(Duration::from_secs(10), || async {
        metrics().await.contains(phase)
    })
    .await;
    let text = metrics().await;
    assert!(seen, "{text}");
    let last: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("valkey_dr_last_drill_timestamp_seconds{watch=\"sessions\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert!((last - expected).abs() < 1.0, "{last} vs {expected}");
    agent.kill9().await;
}

/// `primary_flush`: the probe user's access string, read from `DescribeUsers` in the primary's
/// user group, must allow what a failback's flush sends (`FLUSHALL ASYNC`). One that takes
/// `@dangerous` away fails that check alone and says how to fix it (or `--keep-data`); a
/// `DescribeUsers` the agent may not call leaves it `unknown`, saying which permission.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_user_that_may_not_flush_fails_primary_flush() {
    let lab = TestLab::start_with(|o| o.access_string = "on ~* +@all -@dangerous".into()).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "primary_flush", "may not run FLUSHALL");
    let c = run.check("primary_flush");
    let found = c["found"].as_str().unwrap_or_default();
    assert!(found.contains("decided by -@dangerous"), "{c:#}");
    assert!(found.contains(valkey_dr_lab::LAB_USER_GROUP_ID), "{c:#}");
    assert!(
        c["fix"].as_str().is_some_and(|f| f.contains("--keep-data")),
        "{c:#}"
    );

    lab.fault(Fault::IamDeny {
        action: "elasticache:DescribeUsers".into(),
    })
    .await;
    let run = preflight(&lab.config()).await;
    let c = run.check("primary_flush");
    assert_eq!(c["result"], "unknown", "{}", run.output);
    assert!(
        c["fix"]
            .as_str()
            .is_some_and(|f| f.contains("elasticache:DescribeUsers")),
        "{c:#}"
    );
}

/// Creates a serverless cache of the DR name in the DR region, with `tags`, as another tool or
/// an earlier failover would.
async fn create_dr_cache(client: &aws_sdk_elasticache::Client, tags: &[(&str, &str)]) {
    use aws_sdk_elasticache::types::Tag;
    tags.iter()
        .fold(
            client
                .create_serverless_cache()
                .serverless_cache_name(DR_CACHE)
                .engine("valkey"),
            |create, (k, v)| create.tags(Tag::builder().key(*k).value(*v).build()),
        )
        .send()
        .await
        .expect("the cache of the DR name is created");
}

/// `valkey-dr dr-cache delete --watch sessions --yes` with `config`: its exit code and output.
async fn dr_cache_delete(config: &Path) -> (i32, String) {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["dr-cache", "delete", "--watch", WATCH, "--yes", "--config"])
        .arg(config);
    let out = run_clean(command).await;
    (
        out.status.code().expect("exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Issue 22, defect 1: a `create-failed` build and a cache left by an earlier failover were
/// `warn` (the daemon stayed ready) while a failover would stop on them. Each now fails
/// `dr_name` alone, with the exact command as its fix, and that command removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_dr_cache_fails_dr_name_and_dr_cache_delete_removes_it() {
    let lab = TestLab::start_with(|o| o.provision_delay = Duration::from_millis(300)).await;
    let client = aws_sdk_elasticache::Client::new(&sdk(&lab, DR_REGION).await);
    let command = format!("valkey-dr dr-cache delete --watch {WATCH} --yes");

    // A failed build.
    lab.fault(Fault::ProvisionFail).await;
    create_dr_cache(&client, &[]).await;
    wait_cache_status(&client, DR_CACHE, Some("create-failed")).await;
    let run = preflight(&lab.config()).await;
    fails_alone(&run, "dr_name", "create-failed");
    assert!(
        run.check("dr_name")["fix"]
            .as_str()
            .is_some_and(|f| f.contains(&command)),
        "{}",
        run.output
    );
    let (code, output) = dr_cache_delete(&lab.config()).await;
    assert_eq!(code, 0, "{output}");
    assert!(output.contains("a failed build"), "{output}");
    wait_cache_status(&client, DR_CACHE, None).await;
    let run = preflight(&lab.config()).await;
    assert_eq!(run.check("dr_name")["result"], "ok", "{}", run.output);

    // Left by a failover of this watch six days ago (a failback without --delete-dr).
    create_dr_cache(
        &client,
        &[
            ("valkey-dr:failover-id", "fo-20261201t000000z-agent-b"),
            ("valkey-dr:watch", WATCH),
            ("valkey-dr:record", RECORD),
        ],
    )
    .await;
    wait_available(&client, DR_CACHE, Duration::from_secs(20)).await;
    let run = preflight(&lab.config()).await;
    fails_alone(
        &run,
        "dr_name",
        "left over from failover fo-20261201t000000z-agent-b",
    );
    let (code, output) = dr_cache_delete(&lab.config()).await;
    assert_eq!(code, 0, "{output}");
    wait_cache_status(&client, DR_CACHE, None).await;

    // Someone else's cache is refused and left alone.
    create_dr_cache(&client, &[]).await;
    wait_available(&client, DR_CACHE, Duration::from_secs(20)).await;
    let (code, output) = dr_cache_delete(&lab.config()).await;
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("was not built by a failover"), "{output}");
    assert_eq!(
        cache_status(&client, DR_CACHE).await.as_deref(),
        Some("available")
    );
}

/// Issue 22, defect 1: a DR cache being deleted (right after an abort with `--delete-dr`) made
/// the next failover fail with "exists"; preflight said `warn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_cache_being_deleted_fails_dr_name() {
    let lab = TestLab::start_with(|o| o.provision_delay = Duration::from_secs(8)).await;
    let client = aws_sdk_elasticache::Client::new(&sdk(&lab, DR_REGION).await);
    create_dr_cache(&client, &[]).await;
    wait_available(&client, DR_CACHE, Duration::from_secs(30)).await;
    client
        .delete_serverless_cache()
        .serverless_cache_name(DR_CACHE)
        .send()
        .await
        .expect("deleting for 8 s");
    let run = preflight(&lab.config()).await;
    assert_eq!(
        cache_status(&client, DR_CACHE).await.as_deref(),
        Some("deleting"),
        "still deleting when preflight ran, or this test proves nothing"
    );
    fails_alone(&run, "dr_name", "being deleted");
}

/// Issue 22, defect 3: without `subnet_ids` the cache needs the DR region's default VPC, and
/// the zone must be associated with the DR VPC; neither was checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_default_vpc_and_a_zone_without_the_dr_vpc_fail_their_checks() {
    let lab = TestLab::start().await;
    lab.fault(Fault::ZoneVpcDisassociate {
        region: DR_REGION.into(),
    })
    .await;
    let run = preflight(&lab.config()).await;
    fails_alone(
        &run,
        "route53_zone",
        "not associated with the DR VPC vpc-lab0001",
    );
    lab.fault(Fault::ZoneVpcAssociate {
        region: DR_REGION.into(),
    })
    .await;

    let no_subnets = lab.config_variant(
        "no-subnets.toml",
        &[(
            &format!(
                "subnet_ids = [{}]",
                valkey_dr_lab::LAB_DR_SUBNET_IDS
                    .iter()
                    .map(|s| format!("\"{s}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "subnet_ids = []",
        )],
    );
    let run = preflight(&no_subnets).await;
    assert_eq!(run.code, 0, "the default VPC serves: {}", run.output);
    assert!(
        run.check("dr_subnets")["found"]
            .as_str()
            .is_some_and(|f| f.contains("default VPC vpc-lab0001")),
        "{}",
        run.output
    );
    lab.fault(Fault::DefaultVpcDelete).await;
    let run = preflight(&no_subnets).await;
    fails_alone(&run, "dr_subnets", "no default VPC");
}

/// Issue 22, readiness at fleet scale: watches on one zone share one `GetHostedZone` and one
/// listing of the zone's record sets per run (each watch read its record and its lease apart
/// before: two calls each), and an IAM statement they share is simulated once; every check
/// still passes for each of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_on_one_zone_share_its_reads_and_their_iam_questions() {
    const FLEET: usize = 4;
    let lab = TestLab::start().await;
    let client = aws_sdk_route53::Client::new(&sdk(&lab, "us-east-1").await);
    let primary = primary_endpoint(&lab);
    let ttl = i64::try_from(lab.lab.info().ttl_s).unwrap();
    let record = |i: usize| format!("s{i}.{}", valkey_dr_lab::ZONE);
    send(
        &client,
        (1..FLEET)
            .map(|i| {
                change(
                    ChangeAction::Create,
                    rrset(&record(i), RrType::Cname, ttl, &[&primary]),
                )
            })
            .collect(),
        None,
    )
    .await
    .expect("the fleet's records");
    let text = std::fs::read_to_string(lab.config()).unwrap();
    let watch = &text[text.find("[[watch]]").expect("a watch")..];
    let mut fleet = text.clone();
    for i in 1..FLEET {
        fleet.push('\n');
        fleet.push_str(
            &watch
                .replace(
                    &format!("name = \"{WATCH}\""),
                    &format!("name = \"{WATCH}-{i}\""),
                )
                .replace(
                    &format!("record = \"{RECORD}\""),
                    &format!("record = \"{}\"", record(i)),
                )
                .replace(
                    &format!("cache_name = \"{DR_CACHE}\""),
                    &format!("cache_name = \"{DR_CACHE}-{i}\""),
                ),
        );
    }
    let config = lab.dir.path().join("fleet.toml");
    std::fs::write(&config, fleet).unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = lab.lab.calls().last().map_or(0, |c| c.seq);

    let run = preflight(&config).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert_eq!(run.with("ok").len(), FLEET * CHECKS.len(), "{}", run.output);
    let calls: Vec<_> = lab
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.seq > before)
        .collect();
    let count = |action: &str| calls.iter().filter(|c| c.action == action).count();
    assert_eq!(count("GetHostedZone"), 1, "one read of the zone");
    assert_eq!(
        count("ListResourceRecordSets"),
        1,
        "one listing for every record and lease"
    );
    assert!(
        calls
            .iter()
            .all(|c| c.error_code.as_deref() != Some("Throttling")),
        "nothing throttled"
    );
    let simulations = count("SimulatePrincipalPolicy");
    let alone = {
        let before = lab.lab.calls().last().map_or(0, |c| c.seq);
        let run = preflight(&lab.config()).await;
        assert_eq!(run.code, 0, "{}", run.output);
        lab.lab
            .calls()
            .into_iter()
            .filter(|c| c.seq > before && c.action == "SimulatePrincipalPolicy")
            .count()
    };
    assert!(
        simulations < FLEET * alone,
        "shared statements are simulated once: {simulations} for {FLEET} watches, {alone} for one"
    );
    assert_eq!(count("GetRole"), 1, "the caller's role is read once");
}
