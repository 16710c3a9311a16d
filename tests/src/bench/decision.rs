//! `bench failover --mode prepare`: how long a person's decision takes to reach the
//! application, in `prepare` mode (`valkey-dr approve` of a failover the agent has already
//! built and verified) next to a manual failover (`valkey-dr failover` run at the moment an
//! `alert-only` agent announces that it would fail over).
//!
//! Each run is two stories, each in a fresh lab with the demo's delays (a cache takes 3 s to
//! build, a Route 53 change 1 s to go `INSYNC`, the record's TTL is 30 s) and the demo's
//! application storing a session every 100 ms through the record. The region goes down; the
//! bench plays the person: it runs the command the moment the agent asks for it
//! (`failover_held`, or the alert-only `failover_intent`), and times from there to the
//! application writing again. How much of the TTL the application waits is luck, so each
//! figure is also given for the worst case (a full TTL after the switch).

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::time::Instant;
use valkey_dr::executor::{Phase, Step};
use valkey_dr_lab::{Fault, Lab, PRIMARY_CACHE, PRIMARY_REGION};

use super::agent::{self, Agent, Webhook};
use super::failover::stats;
use super::{ScratchDir, round_ms};
use crate::scenario::{self, App, AppChange, INSYNC_DELAY, Mark, PROVISION_DELAY, TTL};

/// How the person acts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// `mode = "prepare"`: `valkey-dr approve` at the first `failover_held`.
    Approve,
    /// `mode = "alert-only"`: `valkey-dr failover` at the `failover_intent` that says it
    /// would fail over.
    ManualFailover,
}

impl Decision {
    fn key(self) -> &'static str {
        match self {
            Decision::Approve => "prepare_approve",
            Decision::ManualFailover => "alert_only_manual_failover",
        }
    }
}

/// What the agent must have said within this long of the outage.
const ASKED_WITHIN: Duration = Duration::from_secs(60);
/// The application must write again within this long of the decision (a TTL, a build, slack).
const WRITING_WITHIN: Duration = Duration::from_secs(120);
/// The application's warm-up before the outage.
const WARM_UP: Duration = Duration::from_secs(2);
/// The command the person runs must end within this long.
const COMMAND_LIMIT: Duration = Duration::from_secs(120);

/// One story's times, seconds.
struct Timed {
    /// Outage → the agent asked for the decision.
    asked: f64,
    /// Decision → the record switched (switch_dns done in the agent's journal).
    to_switch: f64,
    /// Decision → the application's first write to the DR cache.
    to_writing: f64,
    /// Switch → the application's resolver answers the DR cache: the TTL's luck.
    dns_wait: f64,
}

impl Timed {
    /// `to_writing` with the application's cached answer refreshed just before the switch.
    fn worst_case(&self) -> f64 {
        self.to_writing - self.dns_wait + TTL.as_secs_f64()
    }
}

pub async fn run(runs: usize) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    let scratch = ScratchDir::new("decision")?;
    let load_start = super::load_1m();
    let mut per_run = Vec::new();
    let mut results: Vec<(Decision, Timed)> = Vec::new();
    let mut failures = Vec::new();
    for i in 0..runs {
        for decision in [Decision::Approve, Decision::ManualFailover] {
            eprintln!(
                "bench failover --mode prepare: run {}/{runs}, {}",
                i + 1,
                decision.key()
            );
            let dir = scratch.path().join(format!("run{i:03}-{}", decision.key()));
            match story(&dir, &binary, decision).await {
                Ok(t) => {
                    eprintln!(
                        "  asked t+{:.2}s; decision → switch {:.2}s, → app writing {:.2}s (dns wait {:.2}s, worst case {:.2}s)",
                        t.asked,
                        t.to_switch,
                        t.to_writing,
                        t.dns_wait,
                        t.worst_case()
                    );
                    per_run.push(json!({
                        "run": i + 1,
                        "decision": decision.key(),
                        "asked_s": round_ms(t.asked),
                        "decision_to_switch_s": round_ms(t.to_switch),
                        "decision_to_app_writing_s": round_ms(t.to_writing),
                        "app_dns_wait_s": round_ms(t.dns_wait),
                        "worst_case_decision_to_app_writing_s": round_ms(t.worst_case()),
                    }));
                    results.push((decision, t));
                }
                Err(e) => {
                    eprintln!("  failed: {e:#}");
                    failures.push(json!({ "run": i + 1, "decision": decision.key(), "error": format!("{e:#}") }));
                }
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
    let summary = |d: Decision| {
        let of = |f: fn(&Timed) -> f64| -> Value {
            stats(
                &results
                    .iter()
                    .filter(|(k, _)| *k == d)
                    .map(|(_, t)| f(t))
                    .collect::<Vec<_>>(),
            )
        };
        json!({
            "asked_s": of(|t| t.asked),
            "decision_to_switch_s": of(|t| t.to_switch),
            "decision_to_app_writing_s": of(|t| t.to_writing),
            "app_dns_wait_s": of(|t| t.dns_wait),
            "worst_case_decision_to_app_writing_s": of(Timed::worst_case),
        })
    };
    let median = |d: Decision, f: fn(&Timed) -> f64| -> Option<f64> {
        let mut v: Vec<f64> = results
            .iter()
            .filter(|(k, _)| *k == d)
            .map(|(_, t)| f(t))
            .collect();
        v.sort_by(f64::total_cmp);
        (!v.is_empty()).then(|| v[super::rank(v.len(), 0.5)])
    };
    let ratio = |f: fn(&Timed) -> f64| -> Value {
        match (
            median(Decision::Approve, f),
            median(Decision::ManualFailover, f),
        ) {
            (Some(a), Some(m)) if a > 0.0 => json!(round_ms(m / a)),
            _ => Value::Null,
        }
    };
    Ok(json!({
        "bench": "failover",
        "mode": "prepare",
        "runs": runs,
        "failed": failures,
        "valkey_dr_binary": binary.display().to_string(),
        "build": profile,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "setup": {
            "provision_delay_s": PROVISION_DELAY.as_secs_f64(),
            "insync_delay_s": INSYNC_DELAY.as_secs_f64(),
            "ttl_s": TTL.as_secs_f64(),
            "prepare_approve": "mode = \"prepare\"; at the first failover_held the bench runs \
                                `valkey-dr approve --watch sessions --yes`",
            "alert_only_manual_failover": "mode = \"alert-only\"; at the failover_intent that \
                                           says it would fail over the bench runs \
                                           `valkey-dr failover --watch sessions --yes` (which \
                                           hands it to the running agent)",
            "application": "the demo's: SET every 100 ms through the record, caching resolver",
            "fault": "region-outage us-east-1",
        },
        "phases_s": {
            Decision::Approve.key(): summary(Decision::Approve),
            Decision::ManualFailover.key(): summary(Decision::ManualFailover),
        },
        "manual_over_approve_p50": {
            "decision_to_switch": ratio(|t| t.to_switch),
            "worst_case_decision_to_app_writing": ratio(Timed::worst_case),
        },
        "per_run": per_run,
        "notes": [
            "asked: outage → the event that asks a person (failover_held, or failover_intent \
             with would_fail_over); the decision is the command's start, right then",
            "decision_to_switch: the command's start → switch_dns done in the agent's journal \
             (the record moved); decision_to_app_writing: → the application's first write to \
             the DR cache",
            "app_dns_wait: the switch → the application's resolver answering the DR cache (what \
             was left of the TTL it held: luck); worst_case_decision_to_app_writing: \
             decision_to_app_writing − app_dns_wait + TTL",
            "on AWS a cache takes about a minute to build, not 3 s: the manual failover's \
             decision_to_switch grows by that much, the approval's does not",
            "percentiles are nearest-rank",
        ],
    }))
}

/// One story in a fresh lab under `dir`.
async fn story(dir: &Path, binary: &Path, decision: Decision) -> anyhow::Result<Timed> {
    let lab = Lab::start(scenario::lab_options(dir))
        .await
        .context("starting the lab")?;
    let result = with_lab(&lab, binary, decision).await;
    lab.shutdown().await;
    result
}

async fn with_lab(lab: &Lab, binary: &Path, decision: Decision) -> anyhow::Result<Timed> {
    let info = lab.info().clone();
    let primary = info
        .cache(PRIMARY_CACHE)
        .context("the lab has no primary cache")?
        .endpoint
        .clone();
    let mut hook = Webhook::start().await?;
    let lab_toml = std::fs::read_to_string(&info.config)
        .with_context(|| format!("reading {}", info.config.display()))?;
    let mode = match decision {
        Decision::Approve => "prepare",
        Decision::ManualFailover => "alert-only",
    };
    let config = lab.dir().join("agent-decision.toml");
    std::fs::write(&config, scenario::config_in_mode(&lab_toml, mode, &hook)?)?;
    let state = lab.dir().join("state");
    let log = lab.dir().join("agent.log");
    let mut agent = Agent::start(binary, &config, &state, &log).await?;
    let result = async {
        agent
            .wait_all("healthy", 1, Duration::from_secs(30))
            .await?;
        let mut app = App::start(&info)?;
        let timed = timed(
            lab, binary, &config, &state, &mut hook, &mut app, &primary, decision,
        )
        .await;
        app.stop().await;
        timed
    }
    .await
    .map_err(|e| anyhow::anyhow!("{e:#}\n\nthe agent's log ends with:\n{}", agent.log_tail()));
    agent.stop().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn timed(
    lab: &Lab,
    binary: &Path,
    config: &Path,
    state: &Path,
    hook: &mut Webhook,
    app: &mut App,
    primary: &str,
    decision: Decision,
) -> anyhow::Result<Timed> {
    // Warm up: the application writes through the record first.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, app.marks.recv()).await {
            Ok(Some(Mark::App {
                change: AppChange::Writing { .. },
                ..
            })) => break,
            Ok(Some(_)) => {}
            Ok(None) => bail!("the application stopped before it wrote a session"),
            Err(_) => bail!("the application wrote nothing through the record within 10s"),
        }
    }
    tokio::time::sleep(WARM_UP).await;
    hook.drain();
    let (t0, wall0) = (Instant::now(), SystemTime::now());
    lab.fault(Fault::RegionOutage {
        region: PRIMARY_REGION.to_owned(),
        route53: false,
    })
    .await
    .context("injecting the region outage")?;

    // The agent asks a person.
    let ask_deadline = t0 + ASKED_WITHIN;
    let asked = loop {
        let Some(alert) = hook.next(ask_deadline).await else {
            bail!("the agent asked nobody within {ASKED_WITHIN:?} of the outage");
        };
        let asks = match decision {
            Decision::Approve => alert.event() == "failover_held",
            Decision::ManualFailover => {
                alert.event() == "failover_intent"
                    && alert.body["detail"]["would_fail_over"] == json!(true)
            }
        };
        if asks {
            break alert.at;
        }
        if matches!(alert.event(), "failover_failed" | "aborted") {
            bail!("{}", alert.body["text"].as_str().unwrap_or("?"));
        }
    };

    // The person decides at once.
    let decided = Instant::now();
    let args: &[&str] = match decision {
        Decision::Approve => &["approve", "--watch", "sessions", "--yes"],
        Decision::ManualFailover => &["failover", "--watch", "sessions", "--yes"],
    };
    let mut command = Command::new(binary);
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .envs(valkey_dr_lab::LAB_AWS_ENV)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().context("running the person's command")?;
    let mut stderr = child.stderr.take();
    let mut command_done = false;

    // The application writes to the DR cache again.
    let writing_deadline = decided + WRITING_WITHIN;
    let mut resolved_dr = None;
    let writing = loop {
        let next = tokio::select! {
            mark = tokio::time::timeout_at(writing_deadline, app.marks.recv()) => mark,
            status = child.wait(), if !command_done => {
                command_done = true;
                let status = status.context("waiting for the person's command")?;
                if !status.success() {
                    let mut said = String::new();
                    if let Some(err) = stderr.as_mut() {
                        let _ = tokio::io::AsyncReadExt::read_to_string(err, &mut said).await;
                    }
                    bail!("`valkey-dr {}` failed ({status}): {}", args[0], said.trim());
                }
                continue;
            }
        };
        let mark = match next {
            Ok(Some(mark)) => mark,
            Ok(None) => bail!("the application stopped"),
            Err(_) => bail!(
                "the application did not write to the DR cache within {WRITING_WITHIN:?} of the decision"
            ),
        };
        match mark {
            Mark::App {
                at,
                change: AppChange::Resolved { target },
            } if !valkey_dr_probes::same_name(&target, primary) => {
                resolved_dr.get_or_insert(at);
            }
            Mark::App {
                at,
                change: AppChange::Writing { target },
            } if at > decided && !valkey_dr_probes::same_name(&target, primary) => break at,
            _ => {}
        }
    };
    if !command_done {
        // The manual failover's command follows the agent until the failover completes.
        let status = tokio::time::timeout(COMMAND_LIMIT, child.wait())
            .await
            .context("the person's command did not end")??;
        anyhow::ensure!(status.success(), "`valkey-dr {}` failed: {status}", args[0]);
    }

    // The switch, from the agent's journal (wall clock, mapped onto this clock at the fault).
    let journal = valkey_dr::failover::load_journal(state, "sessions")
        .map_err(|e| anyhow::anyhow!("reading the journal: {e:#}"))?
        .context("no failover journal")?;
    let switched_wall = journal
        .entries
        .iter()
        .find(|e| e.step == Step::SwitchDns && e.phase == Phase::Done)
        .map(|e| e.at)
        .context("the journal has no switch_dns done")?;
    let since_fault = |t: SystemTime| match t.duration_since(wall0) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    let switched = since_fault(switched_wall);
    let decided_s = scenario::signed_secs(decided, t0);
    Ok(Timed {
        asked: scenario::signed_secs(asked, t0),
        to_switch: switched - decided_s,
        to_writing: scenario::signed_secs(writing, t0) - decided_s,
        dns_wait: resolved_dr.map_or(0.0, |r| (scenario::signed_secs(r, t0) - switched).max(0.0)),
    })
}
