//! `valkey-dr check` and `valkey-dr config check` on invalid configs, as real processes:
//! each must exit 3 (check, Nagios UNKNOWN) or 2 (config check), name the key and its line,
//! and never print a secret.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_valkey-dr");
const SECRET: &str = "s3cret-Pa55word-never-shown";

const BASE: &str = r#"[agent]
id = "test-agent"
mode = "alert-only"
state_dir = "/tmp/valkey-dr-test-state"

[[watch]]
name = "sessions"
record = "valkey.app.internal."
hosted_zone_id = "Z0123456789ABC"
ttl = "30s"

[watch.primary]
region = "us-east-1"
cache_name = "app-sessions"
endpoint = "app-sessions-abc123.serverless.use1.cache.amazonaws.com"

[watch.dr]
region = "us-west-2"
cache_name = "app-sessions-dr"
subnet_ids = ["subnet-1"]
security_group_ids = ["sg-1"]

[watch.probe]
interval = "5s"
timeout = "2s"
password_env = "VALKEY_DR_TEST_PASSWORD"

[watch.policy]
fall = 3
rise = 2
"#;

fn run(dir: &Path, text: &str, args: &[&str]) -> Output {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env("VALKEY_DR_TEST_PASSWORD", SECRET)
        .env_remove("VALKEY_DR_CONFIG")
        .output()
        .expect("run valkey-dr")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// (what is wrong, the config, the key the message must name)
fn invalid_configs() -> Vec<(&'static str, String, &'static str)> {
    let r = |from: &str, to: &str| {
        assert!(BASE.contains(from), "{from}");
        BASE.replacen(from, to, 1)
    };
    vec![
        (
            "ttl above 60s",
            r("ttl = \"30s\"", "ttl = \"90s\""),
            "watch[0].ttl",
        ),
        (
            "ttl below 30s",
            r("ttl = \"30s\"", "ttl = \"10s\""),
            "watch[0].ttl",
        ),
        (
            "timeout >= interval",
            r("timeout = \"2s\"", "timeout = \"5s\""),
            "watch[0].probe.timeout",
        ),
        (
            "fall below 1",
            r("fall = 3", "fall = 0"),
            "watch[0].policy.fall",
        ),
        (
            "rise below 1",
            r("rise = 2", "rise = 0"),
            "watch[0].policy.rise",
        ),
        (
            "empty hosted zone",
            r(
                "hosted_zone_id = \"Z0123456789ABC\"",
                "hosted_zone_id = \"\"",
            ),
            "watch[0].hosted_zone_id",
        ),
        (
            "duplicate watch names",
            format!("{BASE}\n{}", &BASE[BASE.find("[[watch]]").unwrap()..]),
            "watch[1].name",
        ),
        (
            "inline password",
            r(
                "password_env = \"VALKEY_DR_TEST_PASSWORD\"",
                &format!("password = \"{SECRET}\""),
            ),
            "watch[0].probe.password",
        ),
        (
            "unknown mode",
            r("mode = \"alert-only\"", "mode = \"auto\""),
            "agent.mode",
        ),
        (
            "bad duration",
            r("interval = \"5s\"", "interval = \"soon\""),
            "watch[0].probe.interval",
        ),
        (
            "port 0",
            r("ttl = \"30s\"", "ttl = \"30s\"\nport = 0"),
            "watch[0].port",
        ),
        (
            "unknown key",
            r("interval = \"5s\"", "intreval = \"5s\""),
            "watch[0].probe.intreval",
        ),
        (
            "bad tls_server_name",
            r(
                "timeout = \"2s\"",
                "timeout = \"2s\"\ntls_server_name = \"host\"",
            ),
            "watch[0].probe.tls_server_name",
        ),
        (
            "DR in the primary region",
            r("region = \"us-west-2\"", "region = \"us-east-1\""),
            "watch[0].dr.region",
        ),
        (
            "invalid record",
            r(
                "record = \"valkey.app.internal.\"",
                "record = \"not a name!\"",
            ),
            "watch[0].record",
        ),
        (
            "invalid cache name",
            r(
                "cache_name = \"app-sessions-dr\"",
                "cache_name = \"App_Sessions\"",
            ),
            "watch[0].dr.cache_name",
        ),
        (
            "unset password variable",
            r(
                "VALKEY_DR_TEST_PASSWORD\"",
                "VALKEY_DR_TEST_UNSET_VARIABLE\"",
            ),
            "watch[0].probe.password_env",
        ),
        (
            "wrong type",
            r("fall = 3", "fall = \"three\""),
            "watch[0].policy.fall",
        ),
        (
            "no watch",
            BASE[..BASE.find("[[watch]]").unwrap()].to_owned(),
            "watch",
        ),
        (
            "AWS secret in the file",
            format!("[aws]\nsecret_access_key = \"{SECRET}\"\n{BASE}"),
            "aws.secret_access_key",
        ),
    ]
}

#[test]
fn invalid_configs_exit_3_from_check_and_2_from_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let cases = invalid_configs();
    assert!(cases.len() >= 12);
    for (what, config, key) in cases {
        for (args, code) in [(&["check"][..], 3), (&["config", "check"][..], 2)] {
            let out = run(dir.path(), &config, args);
            let shown = text(&out);
            assert_eq!(out.status.code(), Some(code), "{what}: {args:?}: {shown}");
            assert!(
                shown.contains(key),
                "{what}: message must name `{key}`: {shown}"
            );
            // A key that is absent altogether has no line; the message says so instead.
            let located =
                shown.contains("line ") || (what == "no watch" && shown.contains("(not in file)"));
            assert!(located, "{what}: message must name the line: {shown}");
            assert!(
                shown.contains("valid") || shown.contains("expected"),
                "{what}: must say what is valid: {shown}"
            );
            assert!(!shown.contains(SECRET), "{what}: secret printed: {shown}");
        }
    }
}

#[test]
fn config_check_prints_normalised_config_without_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let config = BASE.replace("valkey.app.internal.", "Valkey.App.Internal");
    let out = run(dir.path(), &config, &["config", "check"]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains(SECRET), "{shown}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let normalised: toml::Value = toml::from_str(&stdout).expect("normalised config is TOML");
    let watch = &normalised["watch"][0];
    assert_eq!(watch["record"].as_str(), Some("valkey.app.internal."));
    assert_eq!(watch["policy"]["down_after"].as_str(), Some("15s"));
    // The password as the input key that names its source, so the output is valid input.
    assert_eq!(
        watch["probe"]["password_env"].as_str(),
        Some("VALKEY_DR_TEST_PASSWORD")
    );
    assert!(watch["probe"].get("credential").is_none(), "{stdout}");
}

#[test]
fn missing_config_file_is_unknown_for_check() {
    let out = Command::new(BIN)
        .args(["check", "--config", "/nonexistent/valkey-dr/agent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(text(&out).contains("/nonexistent/valkey-dr/agent.toml"));
}

#[test]
fn shipped_example_config_is_valid() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd/agent.toml");
    let out = Command::new(BIN)
        .args(["config", "check", "--config"])
        .arg(&example)
        .env("VALKEY_DR_PASSWORD", SECRET)
        .output()
        .unwrap();
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(!shown.contains(SECRET));
}
