//! `valkey-dr drill` against the lab, as a real process: it builds a throw-away cache in the
//! DR region, verifies it over TLS with PING/SET/GET, deletes it, writes its report, and never
//! makes a single Route 53 call; the live record is left exactly as it was.

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_elasticache::config::Credentials;
use serde_json::Value;
use support::{TestLab, run_bounded};
use valkey_dr::executor::api::{CacheApi, CacheStatus, RecordSet};
use valkey_dr::executor::sdk::{SdkCache, SdkDns};
use valkey_dr_lab::config::{DR_CACHE, DR_REGION, HOSTED_ZONE_ID};
use valkey_dr_lab::{AwsService, Call, Fault, RECORD};

async fn lab() -> TestLab {
    TestLab::start_with(|o| o.provision_delay = Duration::from_millis(300)).await
}

struct Drill {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn drill(lab: &TestLab, args: &[&str]) -> Drill {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .arg("drill")
        .args(args)
        .arg("--config")
        .arg(lab.config())
        .env_remove("VALKEY_DR_CONFIG");
    // run_bounded gives it the lab's dummy credentials (support::lab_aws_env).
    let out = run_bounded(command).await;
    Drill {
        code: out.status.code().expect("exit code"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The SDK clients a test reads the lab with.
async fn clients(lab: &TestLab) -> (SdkCache, SdkDns) {
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DR_REGION))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .load()
        .await;
    (SdkCache::new(&sdk), SdkDns::new(&sdk))
}

async fn record(dns: &SdkDns) -> Option<RecordSet> {
    support::read_record(dns, HOSTED_ZONE_ID, RECORD).await
}

fn drill_calls(calls: &[Call], action: &str) -> Vec<Call> {
    calls
        .iter()
        .filter(|c| c.action == action)
        .cloned()
        .collect()
}

fn reports(lab: &TestLab) -> Vec<PathBuf> {
    let dir = lab.dir.path().join("state/drills");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn read(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).expect("the report is JSON")
}

/// A call a drill makes: ElastiCache's, or KMS's `DescribeKey` in the DR region (the create
/// takes the key's ARN, and the config names it by its alias).
fn elasticache_or_key_arn(c: &Call) -> bool {
    c.service == AwsService::Elasticache
        || (c.service == AwsService::Kms
            && c.action == "DescribeKey"
            && c.region.as_deref() == Some(valkey_dr_lab::config::DR_REGION))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_builds_verifies_and_deletes_a_cache_and_never_touches_route53() {
    let lab = lab().await;
    let (cache, dns) = clients(&lab).await;
    let before = record(&dns).await;
    let first_seq = lab.lab.calls().last().map_or(0, |c| c.seq);

    let run = drill(&lab, &["--output", "json"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    let printed: Value = serde_json::from_str(&run.stdout).expect("--output json prints JSON");

    let calls: Vec<Call> = lab
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.seq > first_seq)
        .collect();
    // ElastiCache, and KMS to turn the config's key alias into the ARN the create takes.
    assert!(
        calls.iter().all(elasticache_or_key_arn),
        "a drill makes no Route 53 call: {calls:#?}"
    );
    let created: Vec<_> = drill_calls(&calls, "CreateServerlessCache")
        .into_iter()
        .filter(Call::succeeded)
        .collect();
    assert_eq!(created.len(), 1, "{created:#?}");
    let name = created[0].request["cache_name"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        name.starts_with(&format!("{DR_CACHE}-drill-")),
        "{name} is a drill cache"
    );
    assert_eq!(created[0].region.as_deref(), Some(DR_REGION));
    assert_eq!(
        created[0].request["tags"]["valkey-dr:drill"],
        printed["drill_id"]
    );
    let deleted: Vec<_> = drill_calls(&calls, "DeleteServerlessCache")
        .into_iter()
        .filter(Call::succeeded)
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:#?}");
    assert_eq!(deleted[0].request["cache_name"], name.as_str());
    assert_eq!(record(&dns).await, before, "the record is as it was");
    assert!(
        cache
            .describe(&name)
            .await
            .unwrap()
            .is_none_or(|c| c.status == CacheStatus::Deleting),
        "the drill cache is deleted"
    );

    let files = reports(&lab);
    assert_eq!(files.len(), 1, "{files:?}");
    let file_name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        file_name,
        format!(
            "drill-sessions-{}.json",
            printed["drill_id"].as_str().unwrap()
        )
    );
    let report = read(&files[0]);
    assert_eq!(report, printed, "the printed report is the saved one");
    assert_eq!(report["ok"], true);
    assert_eq!(report["cache_name"], name.as_str());
    assert_eq!(report["region"], DR_REGION);
    support::assert_null_field(&report, "failed_step");
    assert_eq!(report["within_rto"], true);
    assert_eq!(report["cache_remains"], false);
    assert_eq!(report["rto_ms"], 14_400_000);
    assert!(report["rto_ratio"].as_f64().unwrap() < 0.01);
    let steps: Vec<_> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap(), s["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        steps,
        [
            ("create", "ok"),
            ("wait_available", "ok"),
            ("verify", "ok"),
            ("delete", "ok")
        ]
    );
    assert!(
        report["steps"][2]["detail"]
            .as_str()
            .unwrap()
            .contains("PING/SET/GET ok"),
        "{report:#}"
    );
    assert!(
        !run.stdout.contains("lab-secret-not-real") && !run.stderr.contains("lab-secret-not-real")
    );
    // The drill's CreateServerlessCache (the failover's own request), Describe and Delete fit
    // AWS's models.
    support::assert_botocore_conformant(&lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_leaves_the_drill_cache_running() {
    let lab = lab().await;
    let (cache, _) = clients(&lab).await;
    let run = drill(&lab, &["--keep"]).await;
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("still exists"), "{}", run.stdout);
    let calls = lab.lab.calls();
    assert!(drill_calls(&calls, "DeleteServerlessCache").is_empty());
    let report = read(&reports(&lab)[0]);
    assert_eq!(report["kept"], true);
    assert_eq!(report["cache_remains"], true);
    assert_eq!(report["steps"][3]["result"], "skipped");
    let name = report["cache_name"].as_str().unwrap();
    let info = cache
        .describe(name)
        .await
        .unwrap()
        .expect("the cache is kept");
    assert_eq!(info.status, CacheStatus::Available);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_build_fails_the_drill_naming_the_step_and_still_deletes() {
    let lab = lab().await;
    lab.fault(Fault::ProvisionFail).await;
    let run = drill(&lab, &[]).await;
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("drill failed at wait_available"),
        "{}",
        run.stderr
    );
    assert!(run.stdout.contains("FAILED"), "{}", run.stdout);
    let report = read(&reports(&lab)[0]);
    assert_eq!(report["ok"], false);
    assert_eq!(report["failed_step"], "wait_available");
    assert!(
        report["error"].as_str().unwrap().contains("create-failed"),
        "{report:#}"
    );
    assert_eq!(report["within_rto"], false);
    assert_eq!(report["steps"][2]["result"], "skipped");
    assert_eq!(report["steps"][3]["result"], "ok", "{report:#}");
    let calls = lab.lab.calls();
    assert!(calls.iter().all(elasticache_or_key_arn), "{calls:#?}");
    assert_eq!(
        drill_calls(&calls, "DeleteServerlessCache")
            .iter()
            .filter(|c| c.succeeded())
            .count(),
        1
    );
}

/// Issue 9 (item 3): without credentials the drill fails within seconds, at `create`, and
/// never reports a cache it did not create; nothing reached AWS to be billed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_a_drill_fails_at_once_and_claims_no_cache() {
    let lab = lab().await;
    let (line, none) = lab.no_credentials_edit();
    let config = lab.config_variant("no-credentials.toml", &[(&line, &none)]);
    let started = std::time::Instant::now();
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["drill", "--output", "json", "--config"])
        .arg(&config)
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
    let report: Value = serde_json::from_str(&stdout).expect("the report is JSON");
    assert_eq!(report["failed_step"], "create", "{report:#}");
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("credentials or permissions"),
        "{report:#}"
    );
    assert_eq!(report["cache_remains"], false, "{report:#}");
    assert_eq!(report["steps"][3]["result"], "skipped", "{report:#}");
    assert!(
        !stdout.contains("{ source:") && !stderr.contains("DispatchFailure("),
        "{stdout}{stderr}"
    );
    assert!(
        lab.lab
            .calls()
            .iter()
            .all(|c| c.action != "CreateServerlessCache"),
        "nothing was sent"
    );
}
