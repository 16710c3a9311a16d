//! `valkey-dr-lab demo`: the README's first command. A lab on loopback, `valkey-dr check`
//! rounds once a second through the agent's own code, and faults injected on a script, so
//! that a person sees each verdict change as it happens. It checks itself: a phase that never
//! shows its expected verdict makes the demo fail.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use valkey_dr::check::{self, CheckReport, Status};
use valkey_dr::config::{Config, ProcessEnv};
use valkey_dr_lab::{Fault, Lab, LabOptions, PRIMARY_CACHE};
use valkey_dr_probes::PathKind;

/// One step of the script: a fault (or none), then rounds until the expected verdict shows
/// (bounded by `max_rounds`), plus `extra_rounds` to show it holding.
struct Phase {
    title: &'static str,
    fault: Option<Fault>,
    expect: Status,
    max_rounds: u32,
}

fn script() -> Vec<Phase> {
    let primary = || PRIMARY_CACHE.to_owned();
    vec![
        Phase {
            title: "healthy lab",
            fault: None,
            expect: Status::Ok,
            max_rounds: 3,
        },
        Phase {
            title: "pause app-sessions (SIGSTOP: TCP and TLS still answer, commands hang)",
            fault: Some(Fault::Pause { cache: primary() }),
            expect: Status::Critical,
            max_rounds: 3,
        },
        Phase {
            title: "clear app-sessions (SIGCONT)",
            fault: Some(Fault::Clear { cache: primary() }),
            expect: Status::Ok,
            max_rounds: 3,
        },
        Phase {
            title: "dns-down (the private zone stops answering; endpoint names still resolve)",
            fault: Some(Fault::DnsDown),
            expect: Status::Warning,
            max_rounds: 3,
        },
        Phase {
            title: "dns-up",
            fault: Some(Fault::DnsUp),
            expect: Status::Ok,
            max_rounds: 3,
        },
    ]
}

/// Rounds shown after a phase's verdict appears, so the change is visible as a state.
const HOLD_ROUNDS: u32 = 1;

pub async fn run(dir: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let tmp;
    let dir = match dir {
        Some(dir) => dir,
        None => {
            tmp = tempfile_dir()?;
            tmp.clone()
        }
    };
    println!("valkey-dr demo: a lab on loopback, one `valkey-dr check` round per second\n");
    let lab = Lab::start(LabOptions::new(&dir))
        .await
        .context("starting the lab")?;
    let info = lab.info().clone();
    let primary = info.cache(PRIMARY_CACHE).context("lab has no primary")?;
    println!(
        "  record   {} CNAME {} (TTL {}s)",
        info.record, primary.endpoint, info.ttl_s
    );
    println!(
        "  primary  real valkey-server behind TLS at {}",
        primary.address
    );
    println!("  dns      {} (UDP and TCP)", info.dns);
    println!("  config   {}\n", info.config.display());
    let config = Config::load(&info.config, &ProcessEnv)
        .map_err(|e| anyhow::anyhow!("{:#}", anyhow::Error::from(e)))?;

    let result = play(&lab, &config).await;
    lab.shutdown().await;
    if dir.starts_with(std::env::temp_dir()) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn play(lab: &Lab, config: &Config) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_secs(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last: Option<Status> = None;
    let mut timeline = Vec::new();
    for phase in script() {
        if let Some(fault) = &phase.fault {
            lab.fault(fault.clone())
                .await
                .with_context(|| format!("injecting {fault}"))?;
        }
        println!("── {} ── expect {}", phase.title, phase.expect.as_str());
        let mut seen = false;
        let mut hold = 0;
        for _ in 0..phase.max_rounds + HOLD_ROUNDS {
            ticker.tick().await;
            let report = check::run(config, None).await.context("check round")?;
            let status = report.status();
            print_round(started.elapsed(), &report);
            if last != Some(status) {
                if let Some(prev) = last {
                    println!(
                        "           verdict {} → {} ({})",
                        prev.as_str(),
                        status.as_str(),
                        reason(&report)
                    );
                }
                timeline.push((started.elapsed(), status));
                last = Some(status);
            }
            if status == phase.expect {
                seen = true;
            }
            if seen {
                hold += 1;
                if hold > HOLD_ROUNDS {
                    break;
                }
            }
        }
        if !seen {
            bail!(
                "phase {:?} never showed {} in {} rounds",
                phase.title,
                phase.expect.as_str(),
                phase.max_rounds
            );
        }
    }
    println!("\nverdicts, as they changed:");
    for (at, status) in &timeline {
        println!("  t+{:>5.1}s  {}", at.as_secs_f64(), status.as_str());
    }
    println!("\ndemo passed: every injected fault showed up within its bound, and cleared.");
    Ok(())
}

fn print_round(at: Duration, report: &CheckReport) {
    for w in &report.watches {
        let paths: Vec<String> = w
            .observation
            .paths
            .iter()
            .map(|p| match &p.error {
                None => format!("{} ok {:.1}ms", p.path, p.latency.as_secs_f64() * 1e3),
                Some(e) => format!(
                    "{} {} at {} {:.0}ms",
                    p.path,
                    e.kind,
                    e.step,
                    p.latency.as_secs_f64() * 1e3
                ),
            })
            .collect();
        let ttl = w
            .observation
            .path(PathKind::Dns)
            .and_then(|p| p.ttl)
            .map(|t| format!("  ttl {}s", t.as_secs()))
            .unwrap_or_default();
        println!(
            "  t+{:>5.1}s  {:<8}  {}{}",
            at.as_secs_f64(),
            w.status.as_str(),
            paths.join("  |  "),
            ttl
        );
    }
}

fn reason(report: &CheckReport) -> String {
    report
        .watches
        .iter()
        .flat_map(|w| w.notes.iter())
        .find(|n| !n.starts_with("note:"))
        .cloned()
        .unwrap_or_else(|| "every path works".to_owned())
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("valkey-dr-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
