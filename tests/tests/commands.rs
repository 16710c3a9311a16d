//! The operator commands that talk to AWS, against the lab's emulated control plane.

mod support;

use support::{TestLab, run_bounded};

fn primary(lab: &TestLab) -> valkey_dr_lab::CacheInfo {
    lab.lab
        .info()
        .cache(valkey_dr_lab::PRIMARY_CACHE)
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_reads_the_record_and_changes_nothing() {
    let lab = TestLab::start().await;
    let primary = primary(&lab);
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["plan", "--output", "json", "--config"])
        .arg(lab.config())
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(!stdout.contains("lab-secret-not-real") && !stderr.contains("lab-secret-not-real"));
    let plan: serde_json::Value = serde_json::from_str(&stdout).expect("plan is JSON");
    let plan = &plan["plans"][0];
    assert_eq!(plan["watch"], "sessions");
    assert_eq!(plan["dr_cache"]["exists"], false);
    let steps = plan["steps"].as_array().unwrap();
    // The executor's own plan: every step, in its order, with its calls.
    let names: Vec<_> = steps.iter().map(|s| s["step"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "provision",
            "wait_available",
            "verify_direct",
            "lease",
            "switch_dns",
            "wait_insync",
            "verify_dns",
            "release"
        ],
        "the build first: nothing before it waits on Route 53"
    );
    assert_eq!(steps[3]["changes"][0]["Type"], "TXT");
    assert_eq!(steps[3]["changes"][0]["Action"], "CREATE");
    assert_eq!(steps[0]["call"], "CreateServerlessCache");
    assert_eq!(steps[0]["input"]["ServerlessCacheName"], "app-sessions-dr");
    let tags = steps[0]["input"]["Tags"].as_array().unwrap();
    for key in [
        "valkey-dr:failover-id",
        "valkey-dr:watch",
        "valkey-dr:record",
    ] {
        assert!(
            tags.iter().any(|t| t["Key"] == key),
            "the {key} tag is part of the request: {plan:#}"
        );
    }
    assert_eq!(steps[5]["call"], "GetChange");
    assert_eq!(steps[7]["changes"][0]["Action"], "DELETE");
    let delete = &steps[4]["changes"][0];
    assert_eq!(delete["Action"], "DELETE");
    assert_eq!(
        delete["Value"],
        format!("{}.", primary.endpoint),
        "the swap deletes what is there now"
    );
    assert_eq!(steps[4]["changes"][1]["TTL"], 30);

    // For people (the default): the same steps and calls, and no JSON.
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["plan", "--config"])
        .arg(lab.config())
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(command).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains('{'), "no JSON in text: {text}");
    assert!(text.starts_with("watch sessions (agent "), "{text}");
    assert!(
        text.contains("1. provision       CreateServerlessCache in us-west-2"),
        "{text}"
    );
    assert!(
        text.contains("ServerlessCacheName: app-sessions-dr"),
        "{text}"
    );
    assert!(text.contains("8. release"), "{text}");

    let calls = lab.lab.calls();
    assert!(!calls.is_empty(), "plan read the record and the DR cache");
    for call in calls {
        assert!(
            matches!(
                call.action.as_str(),
                "ListResourceRecordSets" | "DescribeServerlessCaches"
            ),
            "plan made a call that is not a read: {}",
            call.action
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_primary_endpoint_is_looked_up_and_a_missing_cache_is_named() {
    let lab = TestLab::start().await;
    let primary = primary(&lab);
    let line = format!("endpoint = \"{}\"\n", primary.endpoint);
    let without = lab.config_variant("no-endpoint.toml", &[(&line, "")]);
    let run = support::check(&without, &[]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert_eq!(
        run.json["watches"][0]["expected_target"], primary.endpoint,
        "{}",
        run.output
    );
    assert!(
        lab.lab
            .calls()
            .iter()
            .any(|c| c.action == "DescribeServerlessCaches"
                && c.region.as_deref() == Some(primary.region.as_str())),
        "the endpoint came from DescribeServerlessCaches in the primary region"
    );

    // A cache name that does not exist: the probe cannot start, and the error says what to set.
    let wrong = lab.config_variant(
        "wrong-cache.toml",
        &[
            (&line, ""),
            (
                "cache_name = \"app-sessions\"",
                "cache_name = \"app-sessions-typo\"",
            ),
        ],
    );
    let (code, output) = support::check_text(&wrong, &[]).await;
    assert_eq!(code, 3, "{output}");
    assert!(
        output.contains("no serverless cache app-sessions-typo")
            && output.contains("watch.primary.endpoint"),
        "{output}"
    );
}

/// The lab's `agent.toml` works as printed, with no `AWS_*` variable at all: it names the
/// credentials file the lab writes (`[aws] credentials_file`), the mechanism a real host uses
/// with systemd's `LoadCredential=`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lab_config_works_as_printed_without_aws_variables() {
    let lab = TestLab::start().await;
    let config = std::fs::read_to_string(lab.config()).unwrap();
    assert!(config.contains("credentials_file = "), "{config}");
    let before = lab.lab.calls().len();
    for args in [
        &["plan", "--config"][..],
        &["status", "--config"],
        &["preflight", "--config"],
        &["drill", "--config"],
        &["failover", "--dry-run", "--config"],
    ] {
        // A clean environment, and not through `run_bounded`, which would add the lab's
        // credential variables.
        let mut command = tokio::process::Command::new(support::agent_bin());
        command
            .args(args)
            .arg(lab.config())
            .env_clear()
            .kill_on_drop(true);
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        let out = tokio::time::timeout(support::COMMAND_DEADLINE, command.output())
            .await
            .expect("finished within the deadline")
            .expect("ran");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stdout}{stderr}");
        assert!(!stderr.contains("credential"), "{args:?}: {stderr}");
        assert!(
            !stdout.contains("lab-secret-not-real") && !stderr.contains("lab-secret-not-real"),
            "{args:?}: the secret key is never printed"
        );
    }
    // Signed (the lab refuses an unsigned call with 403) and answered on its merits.
    let calls = lab.lab.calls();
    let made = &calls[before..];
    assert!(
        !made.is_empty() && made.iter().all(|c| c.status != 403),
        "{made:#?}"
    );
}
