//! `valkey-dr iam-policy`, and the checks `valkey-dr drill` makes before it creates anything,
//! as real processes. None of these reach AWS: the drill cases stop at the config.

use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_valkey-dr");

const WATCH: &str = r#"
[[watch]]
name = "sessions"
record = "Valkey.App.Internal."
hosted_zone_id = "Z0123456789ABC"

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
tls = false
"#;

fn config(dir: &Path, watches: &str) -> String {
    format!(
        "[agent]\nid = \"test-agent\"\nstate_dir = {:?}\n\n[aws]\nendpoint_url = \"http://127.0.0.1:9\"\n{watches}",
        dir.join("state")
    )
}

fn run(dir: &Path, text: &str, args: &[&str]) -> Output {
    let path = dir.join("agent.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("VALKEY_DR_CONFIG")
        // Never the real credential chain: no metadata service, no profile files.
        .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
        .env("AWS_SECRET_ACCESS_KEY", "test-secret-not-real")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent/valkey-dr-test/aws-config")
        .env(
            "AWS_SHARED_CREDENTIALS_FILE",
            "/nonexistent/valkey-dr-test/credentials",
        )
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

#[test]
fn iam_policy_prints_a_policy_document_for_the_zone() {
    let dir = tempfile::tempdir().unwrap();
    // alert-only (the default) only reads: no record swap, no cache creation.
    let out = run(dir.path(), &config(dir.path(), WATCH), &["iam-policy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let read_only = String::from_utf8_lossy(&out.stdout);
    assert!(
        read_only.contains("route53:ListResourceRecordSets"),
        "{read_only}"
    );
    for write in [
        "ChangeResourceRecordSets",
        "CreateServerlessCache",
        "DeleteServerlessCache",
    ] {
        assert!(
            !read_only.contains(write),
            "alert-only may {write}: {read_only}"
        );
    }
    let acting =
        config(dir.path(), WATCH).replace("[agent]\n", "[agent]\nmode = \"auto-failover\"\n");
    let out = run(dir.path(), &acting, &["iam-policy"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let policy: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("iam-policy prints JSON");
    assert_eq!(policy["Version"], "2012-10-17");
    let statements = policy["Statement"].as_array().unwrap();
    let zone = "arn:aws:route53:::hostedzone/Z0123456789ABC";
    let swap = statements
        .iter()
        .find(|s| s["Action"] == serde_json::json!(["route53:ChangeResourceRecordSets"]))
        .expect("a statement for the record swap");
    assert_eq!(swap["Resource"], serde_json::json!([zone]));
    assert_eq!(
        swap["Condition"]["ForAllValues:StringEquals"]["route53:ChangeResourceRecordSetsNormalizedRecordNames"],
        serde_json::json!(["valkey.app.internal", "_valkey-dr-lock.valkey.app.internal"])
    );
    for s in statements {
        assert_eq!(s["Effect"], "Allow");
        assert!(s["Sid"].as_str().is_some_and(|sid| !sid.is_empty()), "{s}");
    }
}

#[test]
fn iam_policy_on_an_invalid_config_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        dir.path(),
        &config(dir.path(), &WATCH.replace("Z0123456789ABC", "not a zone")),
        &["iam-policy"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("hosted_zone_id"), "{}", text(&out));
}

#[test]
fn a_drill_needs_one_watch() {
    let dir = tempfile::tempdir().unwrap();
    let two = format!(
        "{WATCH}{}",
        WATCH
            .replace("\"sessions\"", "\"other\"")
            .replace("app-sessions", "other")
    );
    let out = run(dir.path(), &config(dir.path(), &two), &["drill"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("--watch"), "{}", text(&out));
    let out = run(
        dir.path(),
        &config(dir.path(), &two),
        &["drill", "--watch", "nope"],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(!dir.path().join("state/drills").exists());
}

#[test]
fn a_drill_name_elasticache_would_refuse_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let long = WATCH.replace(
        "cache_name = \"app-sessions-dr\"",
        "cache_name = \"app-sessions-dr-standby\"",
    );
    let out = run(dir.path(), &config(dir.path(), &long), &["drill"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("at most 19 characters"),
        "{}",
        text(&out)
    );
    assert!(!dir.path().join("state/drills").exists());
}
