//! The `placement` readiness check: an agent alone in the primary's region is told that it
//! goes down with the region it watches. Where the agent runs comes from `[agent] region`,
//! else (in the daemon) the environment, else the instance metadata, here a fake one on
//! loopback.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Agent, TestLab, wait_until};

const WATCH: &str = "sessions";
const LAB_REGION: &str = "region = \"us-west-2\"\n";

/// The `placement` check of `preflight --output json`.
fn placement(json: &Value) -> Value {
    json["checks"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["check"] == "placement"))
        .cloned()
        .unwrap_or_else(|| panic!("no placement check: {json:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preflight_warns_an_agent_alone_in_the_primary_region() {
    let lab = TestLab::start().await;
    // The lab's agent runs in the DR region: ok, and every other check with it.
    let (code, json, output) = support::preflight_json(&lab.config()).await;
    assert_eq!(code, 0, "{output}");
    let found = placement(&json);
    assert_eq!(found["result"], "ok", "{found:#}");
    says(
        &found,
        "found",
        "runs in us-west-2, outside the primary's region us-east-1",
    );
    // The same agent in the primary's region, alone: a warning with the fix, and nothing else.
    let primary = lab.config_variant("primary.toml", &[(LAB_REGION, "region = \"us-east-1\"\n")]);
    let (code, json, output) = support::preflight_json(&primary).await;
    assert_eq!(code, 1, "WARNING: {output}");
    let found = placement(&json);
    assert_eq!(found["result"], "warn", "{found:#}");
    says(
        &found,
        "found",
        "runs in us-east-1, the primary's region, with no peers",
    );
    says(&found, "fix", "outside us-east-1");
    // Unknown here (preflight reads only [agent] region): not checked, ok.
    let unknown = lab.config_variant("unknown.toml", &[(LAB_REGION, "")]);
    let (code, json, output) = support::preflight_json(&unknown).await;
    assert_eq!(code, 0, "{output}");
    says(
        &placement(&json),
        "found",
        "not checked: this agent's region is not known here",
    );
}

/// A fake instance metadata service on loopback: IMDSv2's token, then the region.
async fn fake_imds(region: &'static str) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    use axum::routing::{get, put};
    let app = axum::Router::new()
        .route(
            "/latest/api/token",
            put(|| async {
                (
                    [("x-aws-ec2-metadata-token-ttl-seconds", "21600")],
                    "fake-imds-token",
                )
            }),
        )
        .route(
            "/latest/meta-data/placement/region",
            get(move || async move { region }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, server)
}

async fn readiness_placement(agent: &Agent) -> Option<Value> {
    support::readiness_check(agent, WATCH, "placement").await
}

/// Asserts that a check's `field` says `text`.
fn says(check: &Value, field: &str, text: &str) {
    assert!(
        check[field].as_str().is_some_and(|s| s.contains(text)),
        "{field} does not say {text:?}: {check:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_finds_its_region_in_the_instance_metadata_and_warns_in_the_primarys() {
    let lab = TestLab::start().await;
    let (imds, server) = fake_imds("us-east-1").await;
    let config = lab.config_variant("imds.toml", &[(LAB_REGION, "")]);
    let state_dir = lab.dir.path().join("state");
    let endpoint = format!("http://{imds}");
    let agent = Agent::start(
        &config,
        &state_dir,
        &[
            ("AWS_EC2_METADATA_DISABLED", "false"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &endpoint),
            ("AWS_REGION", ""),
            ("AWS_DEFAULT_REGION", ""),
        ],
    )
    .await;
    let warned = wait_until(Duration::from_secs(30), || async {
        readiness_placement(&agent)
            .await
            .is_some_and(|c| c["result"] == "warn")
    })
    .await;
    let seen = readiness_placement(&agent).await;
    assert!(warned, "{seen:?}\n{}", agent.log_text());
    says(
        &seen.unwrap(),
        "found",
        "runs in us-east-1, the primary's region, with no peers",
    );
    assert!(
        agent
            .log_text()
            .contains("this agent runs in us-east-1 (from the instance metadata)"),
        "{}",
        agent.log_text()
    );
    server.abort();
}
