//! `valkey-dr-lab demo`: the README's first command. A real failover on loopback: a lab, the
//! `valkey-dr run` daemon in `auto-failover` mode, and an application storing sessions through
//! the record; then the primary region goes down, and the timeline prints as it happens, from
//! the outage to the application writing again, with each phase's duration against the DR
//! plan's 4 h RTO at the end.
//!
//! The story itself is [`crate::scenario`] (shared with `bench failover`). It checks itself:
//! a milestone that does not come within its bound fails the demo, naming it.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use valkey_dr_lab::PRIMARY_REGION;

use crate::scenario::{
    self, AgentProgram, AppChange, INSYNC_DELAY, MANUAL, Mark, Milestone, Outage, Outcome,
    PROVISION_DELAY, Progress, RTO, TTL,
};

/// The hidden subcommand that runs the agent's command line (see `main.rs`).
pub const AGENT_SUBCOMMAND: &str = "__agent";

pub async fn run(dir: Option<PathBuf>) -> anyhow::Result<()> {
    let (dir, scratch) = match dir {
        Some(dir) => (dir, false),
        None => {
            let dir = std::env::temp_dir().join(format!("valkey-dr-demo-{}", std::process::id()));
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            (dir, true)
        }
    };
    println!(
        "valkey-dr demo: a region outage and the automatic failover, on loopback (about a minute)\n"
    );
    // The agent is this very executable, re-run as `valkey-dr`: nothing else to build.
    let exe = std::env::current_exe().context("locating this executable")?;
    let program = AgentProgram {
        path: &exe,
        leading: &[AGENT_SUBCOMMAND],
    };
    let result = scenario::play(&dir, &program, Outage::default(), &mut print_progress).await;
    match &result {
        Ok(outcome) => {
            print_summary(outcome);
            if scratch {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
        Err(_) => eprintln!(
            "\nthe lab's files (agent.log, agent-failover.toml, state/) are kept in {}",
            dir.display()
        ),
    }
    result.map(|_| ())
}

fn print_progress(progress: Progress<'_>) {
    match progress {
        Progress::Setup(line) => println!("  setup      {line}"),
        Progress::Outage => println!(
            "\n── t = 0: region-outage {PRIMARY_REGION}: the primary's caches stop answering, \
             its ElastiCache API answers 503 ──"
        ),
        Progress::Mark {
            since_outage,
            mark,
            milestone,
        } => {
            let (what, detail) = describe(mark, milestone);
            let bullet = if milestone.is_some() { "◆" } else { " " };
            let detail = if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            };
            let t = format!("t{since_outage:+.2}s");
            println!("  {t:>9}  {bullet} {what}{detail}");
        }
    }
}

/// A mark in words: the milestone's label (or the event's name), and what it says.
fn describe(mark: &Mark, milestone: Option<Milestone>) -> (String, String) {
    let label = |fallback: String| milestone.map_or(fallback, |m| m.label().to_owned());
    match mark {
        Mark::Alert(alert) => {
            let body = &alert.body;
            let reasons = || {
                body["reasons"]
                    .as_array()
                    .map(|r| {
                        r.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default()
            };
            let detail = &body["detail"];
            match alert.event() {
                "failover_step" => {
                    let step = detail["step"].as_str().unwrap_or("?");
                    let phase = detail["phase"].as_str().unwrap_or("?");
                    (
                        label(format!("step {step} {phase}")),
                        detail["detail"].as_str().unwrap_or_default().to_owned(),
                    )
                }
                "failover_started" => (
                    label("failover started".into()),
                    format!(
                        "{} ({})",
                        body["failover_id"].as_str().unwrap_or("?"),
                        reasons()
                    ),
                ),
                "failover_completed" => (
                    label("failover completed".into()),
                    format!(
                        "{} → {} (the agent's own total: {} ms)",
                        valkey_dr_lab::RECORD,
                        detail["endpoint"].as_str().unwrap_or("?"),
                        detail["total_ms"]
                    ),
                ),
                // Its reasons repeat the down event's and list every guard; the names say it.
                "failover_intent" => {
                    let guards: Vec<&str> = body["reasons"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|r| r.as_str()?.split_once(" passed:").map(|(g, _)| g))
                        .collect();
                    (
                        label("failover intent".into()),
                        format!("guards passed: {}", guards.join(", ")),
                    )
                }
                event => (label(event.to_owned()), reasons()),
            }
        }
        Mark::App { change, .. } => match change {
            AppChange::Failing { error, .. } => {
                (label("application: write failed".into()), error.clone())
            }
            AppChange::Resolved { target } => (
                label("application: the record resolves to".into()),
                target.clone(),
            ),
            AppChange::Writing { target } => (
                label("application: writing".into()),
                format!("SET session:<n> … EX 600 through the record, on {target}"),
            ),
        },
    }
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn print_summary(o: &Outcome) {
    use Milestone as M;
    let step = |name: &str| o.step(name).map_or_else(|| "?".to_owned(), secs);
    let at = |d: Duration| format!("t+{}", secs(d));
    let arrived = |m: Milestone| at(o.at(m));
    let done = |name: &str| o.journal_done(name).map_or_else(String::new, at);
    // (phase, what, took, done at, webhook arrived)
    let mut rows: Vec<(&str, String, String, String, String)> = vec![
        (
            "detection",
            "outage → down event".into(),
            secs(o.at(M::Down)),
            arrived(M::Down),
            arrived(M::Down),
        ),
        (
            "reaction",
            "down → failover_started".into(),
            secs(o.between(M::Down, M::FailoverStarted)),
            arrived(M::FailoverStarted),
            arrived(M::FailoverStarted),
        ),
    ];
    let steps: [(&str, String, Option<Milestone>); 8] = [
        ("lease", "the Route 53 lock (TXT CREATE)".into(), None),
        (
            "provision",
            "CreateServerlessCache".into(),
            Some(M::Provision),
        ),
        (
            "wait_available",
            format!("creating → available (lab: {}s)", PROVISION_DELAY.as_secs()),
            Some(M::WaitAvailable),
        ),
        (
            "verify_direct",
            "PING/SET/GET on the DR cache".into(),
            Some(M::VerifyDirect),
        ),
        (
            "switch_dns",
            "one ChangeResourceRecordSets".into(),
            Some(M::SwitchDns),
        ),
        (
            "wait_insync",
            format!("PENDING → INSYNC (lab: {}s)", INSYNC_DELAY.as_secs()),
            Some(M::WaitInsync),
        ),
        (
            "verify_dns",
            format!("the agent's TTL wait (≤ {}s), a probe", TTL.as_secs()),
            Some(M::VerifyDns),
        ),
        ("release", "the lock deleted".into(), None),
    ];
    for (name, what, milestone) in steps {
        rows.push((
            name,
            what,
            step(name),
            done(name),
            milestone.map_or_else(String::new, arrived),
        ));
    }
    rows.push((
        "failover",
        "outage → failover_completed".into(),
        secs(o.at(M::FailoverCompleted)),
        arrived(M::FailoverCompleted),
        arrived(M::FailoverCompleted),
    ));
    rows.push((
        "application",
        "last good write → first good write".into(),
        secs(o.app_visible_outage),
        arrived(M::AppWriting),
        String::new(),
    ));
    rows.push((
        "  of which DNS",
        "record switched → app resolves the DR cache".into(),
        secs(o.app_dns_wait()),
        arrived(M::AppOnDr),
        String::new(),
    ));
    println!("\n── the failover, phase by phase (took: the agent's journal) ──");
    println!(
        "  {:<15} {:<44} {:>7}  {:>9}  {:>9}",
        "phase", "", "took", "done at", "webhook"
    );
    for (phase, what, took, done, hook) in &rows {
        println!("  {phase:<15} {what:<44} {took:>7}  {done:>9}  {hook:>9}");
    }
    println!(
        "\n  sessions stored: {} ({} writes failed during the outage)",
        o.writes_ok, o.writes_failed
    );

    let outage = o.app_outage();
    let pct = outage.as_secs_f64() / RTO.as_secs_f64() * 100.0;
    let (low, high) = MANUAL;
    println!(
        "\n  The application wrote again {} after the outage: {pct:.2} % of the 4 h RTO.",
        secs(outage)
    );
    println!(
        "  Done by hand, the plan expects 0.5–1.5 h: {:.0}–{:.0}× as long.",
        low.as_secs_f64() / outage.as_secs_f64(),
        high.as_secs_f64() / outage.as_secs_f64()
    );
    println!(
        "  With its cached answer refreshed just before the switch (a full TTL to wait), an \
         application would have waited {}.",
        secs(o.worst_case_app_outage())
    );
    println!(
        "  What the agent adds on top of AWS and DNS (that worst case − {}s create − {}s insync − \
         {}s TTL): {:+.2}s, of which detection (fall 3 × 1 s rounds) {}.",
        PROVISION_DELAY.as_secs(),
        INSYNC_DELAY.as_secs(),
        TTL.as_secs(),
        o.overhead_s(),
        secs(o.at(M::Down))
    );
    println!(
        "\ndemo passed: every step came within its bound, the record points at {}, and the \
         application writes there.",
        o.endpoint
    );
}
