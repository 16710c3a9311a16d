//! `valkey-dr-lab demo`: the README's first command. A lab on loopback, `valkey-dr check`
//! rounds once a second through the agent's own code, and faults injected on a script, so
//! that a person sees each verdict change as it happens. It checks itself: a phase that never
//! shows its expected verdict makes the demo fail.

use std::sync::{Arc, Mutex};
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

    let mut result = play(&lab, &config).await;
    if result.is_ok() {
        result = daemon_story(&lab, &info).await;
    }
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

/// The hidden subcommand that runs the agent's command line (see `main.rs`).
pub const AGENT_SUBCOMMAND: &str = "__agent";

/// The events a held outage must produce, in order, each within its bound from the fault.
const OUTAGE_EVENTS: [(&str, Duration); 3] = [
    ("suspect", Duration::from_secs(3)),
    ("down", Duration::from_secs(5)),
    ("failover_intent", Duration::from_secs(5)),
];

/// Part two: `valkey-dr run` in alert-only mode as its own process, a webhook receiver that
/// prints every alert as it lands, and a held outage of the primary.
async fn daemon_story(lab: &Lab, info: &valkey_dr_lab::LabInfo) -> anyhow::Result<()> {
    println!("\n── part two: `valkey-dr run` (alert-only) with a webhook receiver ──");
    let received: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let started = Instant::now();
    let sink = received.clone();
    let app = axum::Router::new().route(
        "/alerts",
        axum::routing::post(move |axum::Json(body): axum::Json<serde_json::Value>| {
            let sink = sink.clone();
            async move {
                let event = body["event"].as_str().unwrap_or("?").to_owned();
                println!(
                    "  t+{:>5.1}s  ALERT {}",
                    started.elapsed().as_secs_f64(),
                    body["text"].as_str().unwrap_or_default()
                );
                if let Some(plan) = body["detail"]["plan"]["steps"].as_array() {
                    for step in plan {
                        println!(
                            "             plan: {} {}",
                            step["call"].as_str().unwrap_or("?"),
                            step["region"]
                                .as_str()
                                .or(step["hosted_zone_id"].as_str())
                                .unwrap_or("")
                        );
                    }
                }
                sink.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((event, body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/alerts", listener.local_addr()?);
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let text = std::fs::read_to_string(&info.config)?;
    let config = info.config.with_file_name("agent-daemon.toml");
    std::fs::write(
        &config,
        format!("{text}\n[[notify]]\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout = \"2s\"\n"),
    )?;
    let log = info.config.with_file_name("agent.log");
    let mut agent = tokio::process::Command::new(std::env::current_exe()?)
        .arg(AGENT_SUBCOMMAND)
        .args(["run", "--config"])
        .arg(&config)
        .stdout(std::fs::File::create(&log)?)
        .stderr(std::fs::File::create(&log)?)
        .kill_on_drop(true)
        .spawn()
        .context("starting valkey-dr run")?;
    println!(
        "  agent    valkey-dr run --config {} (log: {})",
        config.display(),
        log.display()
    );

    let count = |name: &str| {
        received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(e, _)| e == name)
            .count()
    };
    let wait_for = |name: &'static str, limit: Duration| {
        let count = &count;
        async move {
            let deadline = Instant::now() + limit;
            while count(name) == 0 {
                if Instant::now() >= deadline {
                    bail!("no {name} alert within {limit:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(())
        }
    };
    let story = async {
        // A few healthy rounds first: nothing to say, so nothing is said.
        tokio::time::sleep(Duration::from_secs(2)).await;
        println!(
            "  t+{:>5.1}s  fault: pause {PRIMARY_CACHE}, held (a region outage as the agent sees it)",
            started.elapsed().as_secs_f64()
        );
        lab.fault(Fault::Pause {
            cache: PRIMARY_CACHE.to_owned(),
        })
        .await?;
        for (event, limit) in OUTAGE_EVENTS {
            wait_for(event, limit).await?;
        }
        println!(
            "  t+{:>5.1}s  fault: clear {PRIMARY_CACHE}",
            started.elapsed().as_secs_f64()
        );
        lab.fault(Fault::Clear {
            cache: PRIMARY_CACHE.to_owned(),
        })
        .await?;
        wait_for("recovered", Duration::from_secs(5)).await?;
        anyhow::Ok(())
    };
    let result = story.await;
    let _ = agent.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(5), agent.wait()).await;
    server.abort();
    result.with_context(|| format!("the agent's log is {}", log.display()))?;
    println!(
        "\ndemo passed: every fault showed up within its bound, the agent alerted once per change, and said what it would do."
    );
    Ok(())
}
