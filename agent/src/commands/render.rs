//! What the commands' reports and progress look like to a person (and, for `--output json`,
//! to a machine). Pure functions of the reports: `cli` prints what they return.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use super::failover::Approved;
use super::status::{DnsView, Looked, RecordView, StatusReport, WatchReport};
use super::{OpReport, Progress};
use crate::control::status::{ControlAnswer, FailoverSummary, WatchAnswer};
use crate::text::rfc3339_millis;

/// Where a line goes: results on stdout, what happens along the way and warnings on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Standard output.
    Out,
    /// Standard error.
    Err,
}

/// One progress line, stamped with `now` where the line is a moment of the operation.
pub fn progress_line(p: &Progress, now: SystemTime) -> (Stream, String) {
    let at = rfc3339_millis(now);
    match p {
        Progress::Local { doing } => (
            Stream::Err,
            format!("no agent is running for this config: {doing} from this process"),
        ),
        Progress::Delegating { address, action } => (
            Stream::Err,
            format!("an agent is running for this config ({address}): asking it to {action}"),
        ),
        Progress::Resuming { failover_id } => (
            Stream::Err,
            format!("resuming the unfinished failover {failover_id} from its journal"),
        ),
        Progress::ApprovedByRunning => (
            Stream::Err,
            "it waits for an approval: this command is that approval".to_owned(),
        ),
        Progress::Started {
            action,
            id,
            by_agent: false,
        } => (Stream::Out, format!("{at} {action} {id} started")),
        Progress::Started {
            action,
            id,
            by_agent: true,
        } => (
            Stream::Out,
            format!("{at} {action} {id} started by the agent"),
        ),
        Progress::Step {
            step,
            phase,
            detail,
        } => (Stream::Out, format!("{at} {step} {phase:?}: {detail}")),
        Progress::AgentStep { step } => (Stream::Out, format!("{at} step {step}")),
        Progress::Retrying { step, message } => (
            Stream::Err,
            format!("{at} {step} still retrying: {message}"),
        ),
        Progress::Held {
            before,
            answer,
            every,
        } => (
            Stream::Err,
            format!(
                "{at} held before {before}: {answer}; checking again every {} (Ctrl-C stops here; the journal resumes it)",
                humantime::format_duration(*every)
            ),
        ),
        Progress::AgentHeld {
            before,
            answer,
            approve,
        } => (
            Stream::Out,
            format!(
                "{at} held before {before}: {answer}; `{approve}` lets it go on (Ctrl-C leaves it to the agent)"
            ),
        ),
        Progress::GatesOpened => (Stream::Err, format!("{at} every gate opened: going on")),
        Progress::PrimaryRound { round, rise } => {
            (Stream::Out, format!("{at} primary round {round}/{rise} ok"))
        }
        Progress::StateNotSaved { error } => (
            Stream::Err,
            format!("warning: cannot save the watch state: {error}"),
        ),
        Progress::FailbackStep { step, detail } => (Stream::Out, format!("{at} {step}: {detail}")),
    }
}

/// `value` under `key`, as the commands print JSON: pretty, keys sorted.
pub fn keyed_json(key: &str, value: &impl Serialize) -> String {
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    format!("{:#}\n", serde_json::json!({ key: value }))
}

/// A failover's or failback's end: what goes to stdout, and the error line, if any.
pub fn op_report(report: &OpReport) -> (String, Option<String>) {
    match report {
        OpReport::Failover { summary, error } => (
            keyed_json("failover", summary),
            error.as_ref().map(|e| format!("error: {e}")),
        ),
        OpReport::Failback(report) => (keyed_json("failback", report), None),
        OpReport::AgentFailback(status) => (keyed_json("failback", status), None),
    }
}

/// What `approve` says it did.
pub fn approved_text(a: &Approved) -> String {
    let mut out = if a.journalled {
        format!(
            "approved failover {} as {}: it goes on past its hold before {}{}\n",
            a.failover_id,
            a.by,
            a.before,
            if a.before == "switch_dns" {
                format!(", and {} moves to the DR cache now", a.record)
            } else {
                String::new()
            }
        )
    } else {
        format!(
            "approval of failover {} as {} given: the agent takes it as soon as its current call returns (a lease renewal against a slow Route 53), then goes on past its hold before {}\n",
            a.failover_id, a.by, a.before
        )
    };
    let _ = writeln!(out, "follow it with `{}`", a.follow);
    out
}

/// What `abort` says: the agent's answer for the watch, and the error line when it did not
/// abort.
pub fn abort_report(answer: &WatchAnswer) -> (String, Option<String>) {
    let error = (answer.aborted != Some(true)).then(|| {
        format!(
            "error: {}",
            answer
                .error
                .as_deref()
                .unwrap_or("the abort did not complete")
        )
    });
    (keyed_json("abort", answer), error)
}

/// A pause or resume answer for people: each watch's state and pause, then each peer's
/// answer when the pause was relayed.
pub fn control_text(answer: &ControlAnswer) -> String {
    let mut out = String::new();
    for (name, w) in &answer.watches {
        if let Some(e) = &w.error {
            let _ = writeln!(out, "{name}: error: {e}");
            continue;
        }
        let detail = w
            .pause
            .as_ref()
            .and_then(Option::as_ref)
            .map(|p| format!(" {}", p.text()))
            .unwrap_or_default();
        let _ = writeln!(out, "{name}: {}{detail}", or_dash(w.state.as_deref()));
    }
    for peer in answer.peers.iter().flatten() {
        if peer.ok {
            let id = peer.agent_id.as_ref().and_then(Option::as_deref);
            let _ = writeln!(out, "peer {} ({}): done", peer.peer, or_dash(id));
        } else {
            let _ = writeln!(
                out,
                "peer {}: NOT done: {}",
                peer.peer,
                or_dash(peer.error.as_deref())
            );
        }
    }
    out
}

/// `status --output json`.
pub fn status_json(report: &StatusReport) -> String {
    let value = serde_json::to_value(report).unwrap_or(serde_json::Value::Null);
    format!("{value:#}\n")
}

/// `status` for people: one line per fact, and never a JSON fragment.
pub fn status_text(report: &StatusReport) -> String {
    let mut out = format!("agent {} ({})\n", report.agent_id, report.mode);
    for w in &report.watches {
        watch_text(&mut out, w, &report.command);
    }
    out
}

fn watch_text(out: &mut String, w: &WatchReport, command: &str) {
    let _ = writeln!(out, "watch {} ({})", w.name, w.record);
    let (target, ttl, error) = match &w.route53 {
        RecordView::Found { target, ttl } => (target.as_deref(), Some(ttl.to_string()), None),
        RecordView::Missing { error, .. } => (None, None, Some(error)),
        RecordView::Failed { error } => (None, None, Some(error)),
    };
    let _ = writeln!(
        out,
        "  route53: {} ttl {}{}",
        or_dash(target),
        or_dash(ttl.as_deref()),
        error.map(|e| format!(" ERROR {e}")).unwrap_or_default()
    );
    let dns = match &w.dns {
        Some(Looked::Found(d)) => Some(d),
        _ => None,
    };
    let field = |f: fn(&DnsView) -> Option<String>| or_dash(dns.and_then(f).as_deref()).to_owned();
    let _ = writeln!(
        out,
        "  dns:     {} ttl {} via {} probe {}",
        field(|d| d.target.clone()),
        field(|d| d.ttl.map(|t| t.to_string())),
        field(|d| d.address.clone()),
        field(|d| Some(d.probe.clone())),
    );
    for (role, c) in [("primary", &w.primary), ("dr", &w.dr)] {
        let _ = writeln!(
            out,
            "  {role:<8} {} in {}: {} {}",
            c.cache,
            c.region,
            or_dash(c.status.as_deref()),
            match &c.error {
                Some(e) => format!("ERROR {e}"),
                None => or_dash(c.endpoint.as_ref().and_then(Option::as_deref)).to_owned(),
            }
        );
    }
    let _ = writeln!(
        out,
        "  agent:   {} ({})",
        or_dash(w.agent.state.as_deref()),
        if w.agent.running {
            "a daemon runs this watch"
        } else {
            "no daemon runs this watch; the state saved last"
        }
    );
    if let Some(pause) = &w.agent.pause {
        let _ = writeln!(out, "  paused:  {}", pause.text());
    }
    match &w.last_failover {
        None => out.push_str("  last failover: none\n"),
        Some(Looked::Failed { .. }) => out.push_str("  last failover: - - started -\n"),
        Some(Looked::Found(f)) => failover_text(out, f, &w.name, command),
    }
}

fn failover_text(out: &mut String, f: &FailoverSummary, name: &str, command: &str) {
    let _ = writeln!(
        out,
        "  last failover: {} {} started {}",
        f.failover_id,
        or_dash(f.result()),
        or_dash(f.started_at.as_deref()),
    );
    if let Some(held) = &f.held {
        let _ = writeln!(
            out,
            "    HELD before {} since {} ({} checks): {}",
            held.before, held.since, held.checks, held.answer,
        );
        let _ = writeln!(
            out,
            "    to finish it: {command} approve --watch {name} --yes; to end it: {command} abort --watch {name} --yes --delete-dr",
        );
    }
    for h in &f.holds {
        if let Some(how) = &h.how {
            let _ = writeln!(
                out,
                "    was held before {} since {}: {how}{}",
                h.before,
                h.since,
                h.approved_by
                    .as_ref()
                    .map(|by| format!(" by {by} at {}", or_dash(h.ended.as_deref())))
                    .unwrap_or_default()
            );
        }
    }
    if !f.steps_ms.is_empty() {
        let steps: Vec<String> = f
            .steps_ms
            .iter()
            .map(|(step, ms)| format!("{step} {ms}ms"))
            .collect();
        let _ = writeln!(out, "    steps: {}", steps.join(", "));
    }
}

/// A value that may be missing, as text shows it: `-` for none.
fn or_dash(v: Option<&str>) -> &str {
    v.unwrap_or("-")
}
