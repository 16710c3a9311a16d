//! `valkey-dr-lab bench`: figures as JSON, measured against a real lab on loopback.
//!
//! - `bench probe` times whole probe rounds (every path of every watch, concurrently) through
//!   the agent's own probe code, with TLS, on kept connections (as the daemon) and on fresh
//!   ones (as `check`), on a runtime thread of its own so that the lab's
//!   fronts and DNS do not share the probes' thread (as in production, where they are remote).
//! - `bench footprint` ([`footprint`]): memory and CPU of the real `valkey-dr run` daemon,
//!   beside Valkey Sentinel doing the same job in the same window.
//! - `bench detection` ([`detection`]): time from an outage (each kind: pause, kill,
//!   blackhole, region outage, new connections refused) to the alert; Sentinel on a hung
//!   primary.
//! - `bench failover` ([`failover`]): whole region-outage failovers, from the outage to the
//!   application writing again, phase by phase, and what the agent adds on top of AWS and DNS.
//! - `bench preflight` ([`preflight`]): one readiness pass over a fleet of watches on one zone:
//!   wall time, calls per API, Route 53's busiest second and the throttled calls.
//!
//! Every bench talks to loopback only, bounds every wait and loop, and leaves no process
//! behind: children are killed on drop and die with the bench (`PR_SET_PDEATHSIG`).

pub mod agent;
pub mod decision;
pub mod detection;
pub mod failover;
pub mod footprint;
pub mod preflight;
mod process;
mod resp;
mod sentinel;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{Value, json};
use valkey_dr::config::{Config, ProcessEnv};
use valkey_dr_lab::{Lab, LabOptions};
use valkey_dr_probes::{Connections, Prober, ResolverSettings};

/// Rounds run and thrown away before measuring: connection-independent warm-up of the
/// resolver cache and allocator, as a daemon's steady state has.
const WARMUP_ROUNDS: usize = 5;

pub async fn probe(
    rounds: usize,
    watch_counts: &[usize],
    tls_resumption: bool,
) -> anyhow::Result<Value> {
    let dir = std::env::temp_dir().join(format!("valkey-dr-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut options = LabOptions::new(&dir);
    options.tls_resumption = tls_resumption;
    let lab = Lab::start(options).await.context("starting the lab")?;
    let config = Config::load(&lab.info().config, &ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::from(e)))?;
    let spec = valkey_dr::spec::probe_spec(&config, &config.watches[0])
        .await
        .map_err(|e| anyhow::anyhow!("{e:#}"))?;
    let nameservers = config.dns.nameservers.clone();
    let counts = watch_counts.to_vec();
    // The probes get their own current-thread runtime, like the agent's.
    let results = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<Value>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            let prober = Prober::new(&ResolverSettings { nameservers })?;
            let mut out = Vec::new();
            for n in counts {
                let specs: Vec<_> = (0..n)
                    .map(|i| {
                        let mut s = spec.clone();
                        s.watch = format!("bench-{i}");
                        s
                    })
                    .collect();
                // As the daemon probes: each watch keeps its connections between rounds.
                let mut kept: Vec<Connections> =
                    specs.iter().map(|_| Connections::default()).collect();
                let mut kept_round = async || {
                    futures::future::join_all(
                        specs
                            .iter()
                            .zip(kept.iter_mut())
                            .map(|(s, k)| prober.round_kept(s, k)),
                    )
                    .await
                };
                for _ in 0..WARMUP_ROUNDS {
                    kept_round().await;
                }
                let (mut samples, failures) = time_rounds(rounds, &mut kept_round).await;
                let mut kept_summary = summary(n, &mut samples, failures);
                kept_summary["connections"] = json!("kept");
                out.push(kept_summary);
                // As `check` probes: a fresh connection and handshake on every path.
                for _ in 0..WARMUP_ROUNDS {
                    prober.rounds(&specs).await;
                }
                let (mut samples, failures) =
                    time_rounds(rounds, async || prober.rounds(&specs).await).await;
                let mut fresh_summary = summary(n, &mut samples, failures);
                fresh_summary["connections"] = json!("one_shot");
                out.push(fresh_summary);
            }
            Ok(out)
        })
    })
    .await??;
    lab.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(json!({
        "bench": "probe_round",
        "what": "wall time of one round: dns + direct paths per watch, all watches concurrently; `kept`: as the daemon, on each path's kept TLS connection (resolve, then PING, SET EX 60, GET pipelined); `one_shot`: as check, resolve, TCP, TLS 1.3 handshake, PING, SET, GET",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "note": "all watches probe the same lab cache through its TLS front",
        "tls_resumption": tls_resumption,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "results": results,
    }))
}

/// Times `rounds` rounds made by `round`; returns the samples and the failed paths.
async fn time_rounds(
    rounds: usize,
    mut round: impl AsyncFnMut() -> Vec<valkey_dr_probes::Observation>,
) -> (Vec<Duration>, usize) {
    let mut samples = Vec::with_capacity(rounds);
    let mut failures = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        let observations = round().await;
        samples.push(start.elapsed());
        failures += observations
            .iter()
            .flat_map(|o| o.paths.iter())
            .filter(|p| !p.ok())
            .count();
    }
    (samples, failures)
}

/// `x` rounded to `places` decimal places, for figures in a report.
fn round_to(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Seconds rounded to the millisecond.
fn round_ms(seconds: f64) -> f64 {
    round_to(seconds, 3)
}

/// The index of percentile `p` (0..=1) in `len` sorted samples, nearest rank.
fn rank(len: usize, p: f64) -> usize {
    ((len.saturating_sub(1) as f64) * p).round() as usize
}

/// The 1-minute load average, to show how busy the machine was around a measurement.
fn load_1m() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A directory of its own under the system temp dir, removed with everything in it on drop.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new(bench: &str) -> anyhow::Result<ScratchDir> {
        let path =
            std::env::temp_dir().join(format!("valkey-dr-bench-{}-{bench}", std::process::id()));
        std::fs::create_dir_all(&path).with_context(|| format!("creating {}", path.display()))?;
        Ok(ScratchDir(path))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn summary(watches: usize, samples: &mut [Duration], failures: usize) -> Value {
    samples.sort();
    let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
    let pct = |p: f64| ms(samples[rank(samples.len(), p)]);
    json!({
        "watches": watches,
        "rounds": samples.len(),
        "failed_paths": failures,
        "p50_ms": pct(0.50),
        "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "max_ms": pct(1.0),
        "min_ms": pct(0.0),
    })
}
