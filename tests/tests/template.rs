//! `valkey-dr template`: every template the command prints for the documented configs passes
//! cfn-lint (installed on demand, like moto), says what the config says, and a broken one
//! fails; configs it cannot serve are refused with the reason.

mod support;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use support::run_bounded;
use valkey_dr_lab::PipPackage;

/// cfn-lint, with the CloudFormation resource schemas it bundles (no network needed).
const CFN_LINT: PipPackage = PipPackage {
    requirement: "cfn-lint",
    dir: "cfn-lint",
    installed: &["cfnlint/__init__.py", "cfnlint/data", "yaml/__init__.py"],
};

/// No cfn-lint run may take longer.
const LINT_DEADLINE: Duration = Duration::from_secs(120);

/// `cfn-lint` itself, run as its entry point does.
const LINT: &str = "\
import sys
from cfnlint.runner import main
sys.argv[0] = 'cfn-lint'
sys.exit(main())
";

/// The YAML template and the JSON one are the same document.
const SAME: &str = "\
import json, sys, yaml
with open(sys.argv[1]) as y, open(sys.argv[2]) as j:
    same = yaml.safe_load(y) == json.load(j)
sys.exit(0 if same else 1)
";

/// The documented example config (`systemd/agent.toml`), with these replacements, written to
/// `dir/name`.
fn config(dir: &Path, name: &str, replacements: &[(&str, &str)]) -> PathBuf {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/agent.toml");
    let mut text = std::fs::read_to_string(&example).expect("systemd/agent.toml");
    for (from, to) in replacements {
        assert!(text.contains(from), "the example no longer has {from:?}");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write the config");
    path
}

/// The example, switched through health checks with a warm standby.
const HEALTH_CHECK: (&str, &str) = (
    "adopt_existing = false\n",
    "adopt_existing = false\nstandby = \"warm\"\n\n[watch.switch]\nkind = \"health_check\"\n",
);

async fn template(config: &Path, args: &[&str]) -> Output {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .arg("template")
        .args(args)
        .arg("--config")
        .arg(config)
        .env("VALKEY_DR_PASSWORD", "not-a-real-password")
        .env_remove("VALKEY_DR_CONFIG");
    run_bounded(command).await
}

/// The template printed for `config`, in `format`, written next to it; its text.
async fn printed(config: &Path, format: &str) -> (PathBuf, String) {
    let out = template(config, &["--format", format]).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = config.with_extension(format);
    std::fs::write(&path, &stdout).expect("write the template");
    (path, stdout)
}

async fn python(script: &str, args: &[&std::ffi::OsStr]) -> (i32, String) {
    let pythonpath = tokio::task::spawn_blocking(|| CFN_LINT.ensure())
        .await
        .expect("the install ran")
        .unwrap_or_else(|e| {
            panic!(
                "cfn-lint is needed: {e}; install it from the workspace root with \
                 `python3 -m pip install --target target/cfn-lint cfn-lint`"
            )
        });
    let mut command = tokio::process::Command::new("python3");
    command
        .arg("-c")
        .arg(script)
        .args(args)
        .env("PYTHONPATH", pythonpath)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    let out = tokio::time::timeout(LINT_DEADLINE, command.output())
        .await
        .expect("python finished within the deadline")
        .expect("python3 ran");
    (
        out.status.code().expect("exit code"),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// cfn-lint on `template` for the DR region, where the stack is deployed: (exit code, what
/// it said). 0 means no error, warning or note.
async fn lint(template: &Path) -> (i32, String) {
    python(
        LINT,
        &[
            template.as_os_str(),
            "--regions".as_ref(),
            "us-west-2".as_ref(),
        ],
    )
    .await
}

fn resources_of<'v>(template: &'v Value, kind: &str) -> Vec<(&'v String, &'v Value)> {
    template["Resources"]
        .as_object()
        .expect("Resources")
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

/// Three agents (this one and two in `peer_keys`), quorum 2, alarms over 2 of 3 minutes, no
/// primary endpoint in the config, and a second watch on the same zone.
fn fleet_config(dir: &Path) -> PathBuf {
    let key = dir.join("agent.key");
    let token = dir.join("peer-token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let keygen = std::process::Command::new(support::agent_bin())
        .args(["keygen", "--id", "app-host-1", "--out"])
        .arg(&key)
        .output()
        .expect("keygen ran");
    assert!(keygen.status.success(), "{keygen:?}");
    let peers = format!(
        "peers = [\"10.0.1.12:9187\", \"10.0.2.12:9187\"]\nquorum = 2\npeer_token_file = \"{}\"\nkey_file = \"{}\"\npeer_keys = {{ agent-b = \"{}\", agent-c = \"{}\" }}\n",
        token.display(),
        key.display(),
        public_key(dir, "agent-b"),
        public_key(dir, "agent-c"),
    );
    let second = "\n[[watch]]\nname = \"carts\"\nrecord = \"carts.app.internal.\"\nhosted_zone_id = \"Z0123456789ABC\"\n\
                  [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app-carts\"\n\
                  [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-carts-dr\"\nstandby = \"warm\"\n\
                  [watch.switch]\nkind = \"health_check\"\nnamespace = \"Shop/DR\"\n";
    let path = config(
        dir,
        "fleet.toml",
        &[
            ("# peers = [\"10.0.1.12:9187\", \"10.0.2.12:9187\"]", &peers),
            HEALTH_CHECK,
            (
                "kind = \"health_check\"\n",
                "kind = \"health_check\"\nevaluation_periods = 3\ndatapoints_to_alarm = 2\n",
            ),
            (
                "endpoint = \"app-sessions-abc123.serverless.use1.cache.amazonaws.com\"\n",
                "",
            ),
        ],
    );
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(second);
    std::fs::write(&path, text).unwrap();
    path
}

/// A peer's public key, from a key made for it.
fn public_key(dir: &Path, id: &str) -> String {
    let out = std::process::Command::new(support::agent_bin())
        .args(["keygen", "--id", id, "--out"])
        .arg(dir.join(format!("{id}.key")))
        .output()
        .expect("keygen ran");
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    let (_, public) = line.trim().split_once(" = ").expect("`id = \"key\"`");
    public.trim_matches('"').to_owned()
}

#[tokio::test]
async fn every_template_passes_cfn_lint_and_says_what_the_config_says() {
    let dir = tempfile::tempdir().unwrap();
    let single = config(dir.path(), "single.toml", &[HEALTH_CHECK]);
    let fleet = fleet_config(dir.path());
    for config in [&single, &fleet] {
        let (yaml, _) = printed(config, "yaml").await;
        let (json, _) = printed(config, "json").await;
        for template in [&yaml, &json] {
            let (code, said) = lint(template).await;
            assert_eq!(code, 0, "cfn-lint on {}:\n{said}", template.display());
        }
        let (code, said) = python(SAME, &[yaml.as_os_str(), json.as_os_str()]).await;
        assert_eq!(code, 0, "the YAML and JSON templates differ: {said}");
    }

    // One agent: its alarm, its check, and a calculated check that one "down" tips.
    let (_, text) = printed(&single, "json").await;
    let t: Value = serde_json::from_str(&text).unwrap();
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    assert_eq!(alarms.len(), 1);
    let alarm = &alarms[0].1["Properties"];
    assert_eq!(alarm["AlarmName"], "valkey-dr-sessions-app-host-1");
    assert_eq!(alarm["Namespace"], "ValkeyDR");
    assert_eq!(alarm["MetricName"], "PrimaryDown");
    assert_eq!(alarm["Period"], 60);
    assert_eq!(alarm["TreatMissingData"], "ignore");
    assert_eq!(
        alarm["Dimensions"],
        serde_json::json!([{"Name": "Watch", "Value": "sessions"}, {"Name": "Agent", "Value": "app-host-1"}])
    );
    let records = resources_of(&t, "AWS::Route53::RecordSet");
    assert_eq!(records.len(), 2);
    let primary = &records
        .iter()
        .find(|(_, r)| r["Properties"]["Failover"] == "PRIMARY")
        .unwrap()
        .1["Properties"];
    let secondary = &records
        .iter()
        .find(|(_, r)| r["Properties"]["Failover"] == "SECONDARY")
        .unwrap()
        .1["Properties"];
    assert_eq!(
        primary["ResourceRecords"][0],
        "app-sessions-abc123.serverless.use1.cache.amazonaws.com"
    );
    assert_eq!(primary["TTL"], "30");
    assert!(secondary.get("HealthCheckId").is_none(), "{secondary:#}");
    assert_eq!(
        secondary["ResourceRecords"][0]["Fn::GetAtt"][1],
        "Endpoint.Address"
    );
    let quorum_id = primary["HealthCheckId"]["Ref"].as_str().unwrap();
    let quorum = &t["Resources"][quorum_id]["Properties"]["HealthCheckConfig"];
    assert_eq!(quorum["Type"], "CALCULATED");
    assert_eq!(quorum["HealthThreshold"], 1);
    let standby = &resources_of(&t, "AWS::ElastiCache::ServerlessCache")[0].1;
    assert_eq!(standby["DeletionPolicy"], "Retain");
    let tags = standby["Properties"]["Tags"].as_array().unwrap();
    assert!(
        tags.iter()
            .any(|t| t["Key"] == "valkey-dr:standby" && t["Value"] == "sessions"),
        "the daemon knows its standby by this tag: {tags:?}"
    );
    assert_eq!(
        standby["Properties"]["ServerlessCacheName"],
        "app-sessions-dr"
    );

    // Three agents, quorum 2: PRIMARY stays healthy while 2 of the 3 checks are.
    let (_, text) = printed(&fleet, "json").await;
    let t: Value = serde_json::from_str(&text).unwrap();
    let calculated: Vec<_> = resources_of(&t, "AWS::Route53::HealthCheck")
        .into_iter()
        .filter(|(_, r)| r["Properties"]["HealthCheckConfig"]["Type"] == "CALCULATED")
        .collect();
    assert_eq!(calculated.len(), 2, "one per watch");
    for (_, c) in &calculated {
        let config = &c["Properties"]["HealthCheckConfig"];
        assert_eq!(config["HealthThreshold"], 2);
        assert_eq!(config["ChildHealthChecks"].as_array().unwrap().len(), 3);
    }
    let alarms = resources_of(&t, "AWS::CloudWatch::Alarm");
    let mut names: Vec<&str> = alarms
        .iter()
        .map(|(_, a)| a["Properties"]["AlarmName"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "valkey-dr-carts-agent-b",
            "valkey-dr-carts-agent-c",
            "valkey-dr-carts-app-host-1",
            "valkey-dr-sessions-agent-b",
            "valkey-dr-sessions-agent-c",
            "valkey-dr-sessions-app-host-1",
        ]
    );
    for (_, a) in &alarms {
        let p = &a["Properties"];
        if p["AlarmName"].as_str().unwrap().contains("sessions") {
            assert_eq!(
                (
                    p["EvaluationPeriods"].clone(),
                    p["DatapointsToAlarm"].clone()
                ),
                (3.into(), 2.into())
            );
        } else {
            assert_eq!(p["Namespace"], "Shop/DR");
        }
    }
    for check in resources_of(&t, "AWS::Route53::HealthCheck") {
        let config = &check.1["Properties"]["HealthCheckConfig"];
        if config["Type"] == "CLOUDWATCH_METRIC" {
            assert_eq!(config["InsufficientDataHealthStatus"], "Healthy");
            assert_eq!(config["AlarmIdentifier"]["Region"], "us-west-2");
        }
    }
    // No endpoint in the config: a parameter asks for it.
    let parameters = t["Parameters"].as_object().expect("Parameters");
    assert!(
        parameters.contains_key("SessionsPrimaryEndpoint"),
        "{parameters:?}"
    );
    assert!(
        parameters.contains_key("CartsPrimaryEndpoint"),
        "{parameters:?}"
    );
    // --watch picks one.
    let out = template(&fleet, &["--watch", "carts", "--format", "json"]).await;
    let one: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        resources_of(&one, "AWS::ElastiCache::ServerlessCache").len(),
        1
    );
}

#[tokio::test]
async fn a_broken_template_fails_cfn_lint() {
    let dir = tempfile::tempdir().unwrap();
    let single = config(dir.path(), "single.toml", &[HEALTH_CHECK]);
    let (_, text) = printed(&single, "json").await;
    let mut t: Value = serde_json::from_str(&text).unwrap();
    let alarm = resources_of(&t, "AWS::CloudWatch::Alarm")[0].0.clone();
    // The same template passes: what breaks it is the one change below.
    assert_eq!(lint(&single.with_extension("json")).await.0, 0);
    t["Resources"][&alarm]["Properties"]["ComparisonOperator"] = "GreaterThan".into();
    let broken = dir.path().join("broken.json");
    std::fs::write(&broken, t.to_string()).unwrap();
    let (code, said) = lint(&broken).await;
    assert_ne!(code, 0, "{said}");
    assert!(said.contains("E3030 'GreaterThan' is not one of"), "{said}");
}

#[tokio::test]
async fn configs_the_template_cannot_serve_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let refused =
        |name: &'static str, replacements: Vec<(&'static str, &'static str)>, why: &'static str| {
            let config = config(dir.path(), name, &replacements);
            async move {
                let out = template(&config, &[]).await;
                let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
                assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
                assert!(stderr.contains(why), "{name}: {stderr}");
                assert!(out.stdout.is_empty(), "{name}: printed a template");
            }
        };
    refused(
        "record.toml",
        vec![],
        "no watch has [watch.switch] kind = \"health_check\"",
    )
    .await;
    refused(
        "elsewhere.toml",
        vec![
            HEALTH_CHECK,
            (
                "kind = \"health_check\"\n",
                "kind = \"health_check\"\nmetric_region = \"us-east-2\"\n",
            ),
        ],
        "metric_region = \"us-east-2\" is not the DR region \"us-west-2\"",
    )
    .await;
    // Config errors: no warm standby, verdicts published in the primary's region.
    refused(
        "cold.toml",
        vec![(
            "adopt_existing = false\n",
            "adopt_existing = false\n\n[watch.switch]\nkind = \"health_check\"\n",
        )],
        "`watch[0].switch.kind`: \"health_check\" needs a warm standby",
    )
    .await;
    refused(
        "primary.toml",
        vec![
            HEALTH_CHECK,
            (
                "kind = \"health_check\"\n",
                "kind = \"health_check\"\nmetric_region = \"us-east-1\"\n",
            ),
        ],
        "is the primary's region: its outage would silence every verdict",
    )
    .await;
}

/// With no agent running, `failover` and `failback` refuse a health-check watch: its record
/// moves on the verdicts the running agents publish, and a failover pair must never be
/// rewritten as one record.
#[tokio::test]
async fn failover_and_failback_in_process_refuse_a_health_check_watch() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let state_line = format!("state_dir = \"{}\"", state.display());
    let config = config(
        dir.path(),
        "hc.toml",
        &[
            HEALTH_CHECK,
            ("state_dir = \"/var/lib/valkey-dr\"", &state_line),
        ],
    );
    let why = "watch sessions: [watch.switch] kind = \"health_check\" fails over and back through the verdicts the running agents publish; start the agent (valkey-dr run)";
    for args in [&["failover", "--yes"][..], &["failback", "--yes"][..]] {
        let mut command = tokio::process::Command::new(support::agent_bin());
        command
            .args(args)
            .arg("--config")
            .arg(&config)
            .env("VALKEY_DR_PASSWORD", "not-a-real-password")
            .env_remove("VALKEY_DR_CONFIG");
        let out = run_bounded(command).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
    // What sets it up takes it.
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["config", "check", "--config"])
        .arg(&config)
        .env("VALKEY_DR_PASSWORD", "not-a-real-password");
    let out = run_bounded(command).await;
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
