//! `bench preflight`: one readiness pass over a fleet of watches that share one hosted zone.
//!
//! A fresh lab (every AWS rule on, Route 53's account-wide 5 requests a second among them)
//! gets N records in its zone, one per watch, each a CNAME to the primary; the config has N
//! watches, each with its own record and DR cache name. The real `valkey-dr preflight` (the
//! same checks the daemon's readiness pass runs) is timed from start to exit, with no `AWS_*`
//! variable, and the lab's call log says what it asked: calls per API, Route 53's busiest
//! second against its rate, and the throttled calls.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use valkey_dr_lab::{AwsService, Lab, LabOptions, Role};

use super::ScratchDir;
use super::agent;

/// Route 53's account-wide request rate that the lab holds every caller to (tests/FIDELITY.md,
/// R1), per second.
const ROUTE53_RATE: f64 = 5.0;
/// The bound on a pass: under this wall time, with at most this share of Route 53's
/// rate.
const TARGET_WALL: Duration = Duration::from_secs(10);
const TARGET_ROUTE53_SHARE: f64 = 0.2;
/// The longest one pass may take before the bench gives up on it.
const PASS_LIMIT: Duration = Duration::from_secs(600);

/// Runs one pass over `watches` watches; the figures as JSON.
pub async fn run(watches: usize) -> anyhow::Result<Value> {
    anyhow::ensure!((1..=500).contains(&watches), "--watches must be 1 to 500");
    let (binary, profile) = agent::measured_binary()?;
    let scratch = ScratchDir::new("preflight")?;
    let lab = Lab::start(LabOptions::new(scratch.path()))
        .await
        .context("starting the lab")?;
    let outcome = measure(&lab, &binary, watches, scratch.path()).await;
    lab.shutdown().await;
    let mut report = outcome?;
    report["binary"] = json!(binary.display().to_string());
    report["profile"] = json!(profile);
    Ok(report)
}

async fn measure(lab: &Lab, binary: &Path, watches: usize, dir: &Path) -> anyhow::Result<Value> {
    let primary = lab
        .info()
        .caches
        .iter()
        .find(|c| c.role == Role::Primary)
        .context("the lab has no primary")?
        .endpoint
        .clone();
    crate::scenario::fleet_records(lab.info(), &primary, watches).await?;
    let config = dir.join("fleet.toml");
    std::fs::write(&config, fleet_config(&lab.info().config, watches)?)?;
    // A full token bucket, as after any quiet second.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let before = lab.calls().last().map_or(0, |c| c.seq);
    let mut command = tokio::process::Command::new(binary);
    command
        .args(["preflight", "--output", "json", "--config"])
        .arg(&config)
        .env_clear()
        .kill_on_drop(true);
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    let started = Instant::now();
    let out = tokio::time::timeout(PASS_LIMIT, command.output())
        .await
        .context("preflight did not finish within 10 minutes")?
        .context("running preflight")?;
    let wall = started.elapsed();
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "preflight printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let calls: Vec<_> = lab.calls().into_iter().filter(|c| c.seq > before).collect();
    let mut per_api = serde_json::Map::new();
    for service in AwsService::ALL {
        let n = calls.iter().filter(|c| c.service == service).count();
        per_api.insert(service.signing_name().to_owned(), json!(n));
    }
    let route53: Vec<u64> = calls
        .iter()
        .filter(|c| c.service == AwsService::Route53)
        .map(|c| c.at_ms)
        .collect();
    let busiest = route53
        .iter()
        .map(|start| {
            route53
                .iter()
                .filter(|t| **t >= *start && **t < start + 1000)
                .count()
        })
        .max()
        .unwrap_or(0);
    let throttled = calls
        .iter()
        .filter(|c| c.error_code.as_deref() == Some("Throttling"))
        .count();
    let mean_rate = route53.len() as f64 / wall.as_secs_f64().max(1.0);
    let mut results = serde_json::Map::new();
    for result in ["ok", "warn", "fail", "unknown"] {
        let n = report["checks"]
            .as_array()
            .map_or(0, |cs| cs.iter().filter(|c| c["result"] == result).count());
        results.insert(result.to_owned(), json!(n));
    }
    let share = mean_rate / ROUTE53_RATE;
    Ok(json!({
        "bench": "preflight",
        "watches": watches,
        "status": report["status"],
        "results": results,
        "wall_s": super::round_ms(wall.as_secs_f64()),
        "calls": calls.len(),
        "calls_per_api": per_api,
        "route53": {
            "calls": route53.len(),
            "busiest_second": busiest,
            "mean_per_s": (mean_rate * 100.0).round() / 100.0,
            "share_of_rate": (share * 1000.0).round() / 1000.0,
            "rate_per_s": ROUTE53_RATE,
        },
        "throttled": throttled,
        "target": {
            "wall_s_below": TARGET_WALL.as_secs(),
            "route53_share_at_most": TARGET_ROUTE53_SHARE,
            "met": wall < TARGET_WALL && share <= TARGET_ROUTE53_SHARE && throttled == 0,
        },
    }))
}

/// The lab's `agent.toml` with its `[[watch]]` repeated for `watches` watches, each with its
/// own name, record and DR cache name.
fn fleet_config(lab_config: &Path, watches: usize) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(lab_config)?;
    let at = text
        .find("[[watch]]")
        .context("the lab's agent.toml has no [[watch]]")?;
    let watch = &text[at..];
    let mut out = text.clone();
    for i in 1..watches {
        out.push('\n');
        out.push_str(&crate::scenario::fleet_watch(watch, i));
    }
    Ok(out)
}
