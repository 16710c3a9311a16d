//! What the commands' reports and progress look like to a person (and, for `--output json`,
//! to a machine). Pure functions of the reports: `cli` prints what they return.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde::Serialize;

use super::failover::Approved;
use super::status::{AgentView, DnsView, Looked, RecordView, StatusReport, WatchReport};
use super::{OpReport, Progress};
use crate::control::status::{ControlAnswer, FailoverSummary, SwitchStatus, WatchAnswer};
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
                crate::text::duration(*every)
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
        Progress::Warning { text } => (Stream::Err, format!("warning: {text}")),
    }
}

/// `value` under `key`, as the commands print JSON: pretty, keys sorted.
pub fn keyed_json(key: &str, value: &impl Serialize) -> String {
    let value = serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    format!("{:#}\n", serde_json::json!({ key: value }))
}

/// A failover's or failback's end: what goes to stdout, and the line for stderr, if any (the
/// error, or what `--keep-data` brought back).
pub fn op_report(report: &OpReport) -> (String, Option<String>) {
    let warning = |w: Option<&String>| w.map(|w| format!("warning: {w}"));
    match report {
        OpReport::Failover { summary, error } => (
            keyed_json("failover", summary),
            error.as_ref().map(|e| format!("error: {e}")),
        ),
        OpReport::Failback(report) => (
            keyed_json("failback", report),
            warning(report.warning.as_ref()),
        ),
        OpReport::AgentFailback(status) => (
            keyed_json("failback", status),
            warning(status.report.as_ref().and_then(|r| r.warning.as_ref())),
        ),
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
        "  agent:   {}",
        agent_line(&w.name, &w.agent, SystemTime::now())
    );
    if let Some(pause) = &w.agent.pause {
        let _ = writeln!(out, "  paused:  {}", pause.text());
    }
    if let Some(s) = &w.agent.switch {
        let _ = writeln!(out, "  verdict: {}", verdict_text(s));
    }
    match &w.last_failover {
        None => out.push_str("  last failover: none\n"),
        Some(Looked::Failed { .. }) => out.push_str("  last failover: - - started -\n"),
        Some(Looked::Found(f)) => failover_text(out, f, &w.name, command),
    }
}

/// The `verdict:` line of `status`: the value, since when and why, where it goes, and whether
/// CloudWatch takes it.
fn verdict_text(s: &SwitchStatus) -> String {
    let mut text = format!("{} since {}", s.published, or_dash(s.since.as_deref()));
    if let Some(held) = &s.held_since {
        text.push_str(&format!(", held since {held} until a failback"));
    }
    if let Some(why) = &s.why {
        text.push_str(&format!(": {why}"));
    }
    text.push_str(&format!("; to {}", s.target));
    match (&s.error, &s.accepted_at) {
        (Some(e), _) => text.push_str(&format!(", NOT published: {e}")),
        (None, Some(at)) => text.push_str(&format!(", last taken {at}")),
        (None, None) => text.push_str(", not published yet"),
    }
    if s.waiting_for_approval {
        text.push_str("; waits for `valkey-dr approve`");
    }
    text
}

/// The `agent:` line of `status` at `now`: never "healthy" while the watch's task is down.
fn agent_line(name: &str, agent: &AgentView, now: SystemTime) -> String {
    let state = or_dash(agent.state.as_deref());
    match &agent.task {
        Some(task) if task.restarting() => {
            let wait = task
                .restart_at
                .as_deref()
                .and_then(|at| humantime::parse_rfc3339(at).ok())
                .and_then(|at| at.duration_since(now).ok())
                .map_or(0, |d| d.as_millis().div_ceil(1000));
            format!(
                "unhealthy: watch {name}'s task {}, restarting in {wait}s (restart {}); not probed meanwhile, the state saved last: {state}",
                task.last_panic, task.restarts
            )
        }
        Some(task) => format!(
            "{state} (a daemon runs this watch; its task was started again {} time{}, last after it {})",
            task.restarts,
            if task.restarts == 1 { "" } else { "s" },
            task.last_panic
        ),
        None if agent.running => format!("{state} (a daemon runs this watch)"),
        None => format!("{state} (no daemon runs this watch; the state saved last)"),
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
    if let Some(r) = &f.retrying {
        let _ = writeln!(
            out,
            "    RETRYING {} since {}: {}",
            r.step,
            r.since,
            crate::text::outside(&r.detail)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::commands::status::{AgentView, CacheView};
    use crate::control::status::{HoldStatus, PauseStatus, RelayResult};
    use crate::executor::{HoldEnd, Phase};

    /// 2026-12-07T07:00:00.250Z.
    fn at() -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(1_796_626_800_250)
    }

    #[test]
    fn a_progress_line_is_stamped_and_sent_where_it_belongs() {
        let cases = [
            (
                Progress::Started {
                    action: "failover",
                    id: "fo-1".into(),
                    by_agent: true,
                },
                Stream::Out,
                "2026-12-07T07:00:00.250Z failover fo-1 started by the agent",
            ),
            (
                Progress::Step {
                    step: "provision",
                    phase: Phase::Done,
                    detail: "created sessions-dr".into(),
                },
                Stream::Out,
                "2026-12-07T07:00:00.250Z provision Done: created sessions-dr",
            ),
            (
                Progress::Held {
                    before: "switch_dns",
                    answer: "waiting for a person's approval".into(),
                    every: Duration::from_secs(90),
                },
                Stream::Err,
                "2026-12-07T07:00:00.250Z held before switch_dns: waiting for a person's approval; checking again every 1m 30s (Ctrl-C stops here; the journal resumes it)",
            ),
            (
                Progress::PrimaryRound { round: 2, rise: 3 },
                Stream::Out,
                "2026-12-07T07:00:00.250Z primary round 2/3 ok",
            ),
            (
                Progress::Delegating {
                    address: crate::control::AdminEndpoint::Tcp("127.0.0.1:9464".parse().unwrap()),
                    action: "fail back",
                },
                Stream::Err,
                "an agent is running for this config (127.0.0.1:9464): asking it to fail back",
            ),
            (
                Progress::StateNotSaved {
                    error: "disk full".into(),
                },
                Stream::Err,
                "warning: cannot save the watch state: disk full",
            ),
        ];
        for (progress, stream, line) in cases {
            assert_eq!(progress_line(&progress, at()), (stream, line.to_owned()));
        }
    }

    fn hold(how: Option<HoldEnd>) -> HoldStatus {
        HoldStatus {
            answer: "waiting for a person's approval".into(),
            approval: true,
            approved_by: how.map(|_| "alice@ops".into()),
            before: "switch_dns".into(),
            checks: 4,
            ended: how.map(|_| "2026-12-07T07:02:00Z".into()),
            gate: None,
            held_s: 120,
            how,
            since: "2026-12-07T07:00:00Z".into(),
        }
    }

    fn summary(held: bool) -> FailoverSummary {
        FailoverSummary {
            approval_required: true,
            automatic: true,
            endpoint: Some("sessions-dr.example:6379".into()),
            failover_id: "fo-1".into(),
            held: held.then(|| hold(None)),
            holds: if held {
                vec![hold(None)]
            } else {
                vec![hold(Some(HoldEnd::Approved))]
            },
            outcome: None,
            runs: 1,
            started_at: Some("2026-12-07T07:00:00Z".into()),
            step: Some("switch_dns".into()),
            steps_ms: BTreeMap::from([("provision".into(), 61_000), ("lease".into(), 12)]),
            retrying: None,
        }
    }

    fn cache(name: &str, region: &str) -> CacheView {
        CacheView {
            cache: name.into(),
            endpoint: Some(Some(format!("{name}.example:6379"))),
            error: None,
            region: region.into(),
            status: Some("available".into()),
        }
    }

    fn report(held: bool) -> StatusReport {
        StatusReport {
            agent_id: "agent-a".into(),
            command: "valkey-dr --config /etc/valkey-dr/b.toml".into(),
            mode: "prepare".into(),
            watches: vec![WatchReport {
                agent: AgentView {
                    pause: Some(PauseStatus {
                        reason: Some("maintenance".into()),
                        since: "2026-12-07T06:00:00Z".into(),
                        until: None,
                        origin: None,
                    }),
                    running: true,
                    served_by_dr: Some(false),
                    state: Some("failing_over".into()),
                    task: None,
                    switch: None,
                },
                configured_ttl: 30,
                dns: Some(Looked::Failed {
                    error: "dns_timeout".into(),
                }),
                dr: cache("sessions-dr", "us-west-2"),
                last_failover: Some(Looked::Found(summary(held))),
                name: "sessions".into(),
                primary: CacheView {
                    error: Some("DescribeServerlessCaches timed out".into()),
                    ..cache("sessions", "us-east-1")
                },
                record: "cache.internal.example".into(),
                route53: RecordView::Found {
                    target: Some("sessions.example".into()),
                    ttl: 30,
                },
            }],
        }
    }

    #[test]
    fn status_text_shows_each_fact_on_its_line_and_how_to_end_a_hold() {
        let text = status_text(&report(true));
        let expected = "\
agent agent-a (prepare)
watch sessions (cache.internal.example)
  route53: sessions.example ttl 30
  dns:     - ttl - via - probe -
  primary  sessions in us-east-1: available ERROR DescribeServerlessCaches timed out
  dr       sessions-dr in us-west-2: available sessions-dr.example:6379
  agent:   failing_over (a daemon runs this watch)
  paused:  since 2026-12-07T06:00:00Z, until resume: maintenance
  last failover: fo-1 - started 2026-12-07T07:00:00Z
    HELD before switch_dns since 2026-12-07T07:00:00Z (4 checks): waiting for a person's approval
    to finish it: valkey-dr --config /etc/valkey-dr/b.toml approve --watch sessions --yes; to end it: valkey-dr --config /etc/valkey-dr/b.toml abort --watch sessions --yes --delete-dr
    steps: lease 12ms, provision 61000ms
";
        assert_eq!(text, expected);
        assert!(!text.contains('{'), "never a JSON fragment: {text}");
    }

    #[test]
    fn the_verdict_line_says_the_value_why_where_and_whether_it_is_taken() {
        let mut s = SwitchStatus {
            kind: "health_check".into(),
            published: 1,
            since: Some("2026-12-07T07:00:00Z".into()),
            held_since: Some("2026-12-07T07:00:09Z".into()),
            why: Some("the record answers the standby".into()),
            target: "ValkeyDR/PrimaryDown{Watch=sessions, Agent=agent-a} in us-west-2".into(),
            accepted_at: Some("2026-12-07T07:01:00Z".into()),
            error: None,
            waiting_for_approval: false,
        };
        assert_eq!(
            verdict_text(&s),
            "1 since 2026-12-07T07:00:00Z, held since 2026-12-07T07:00:09Z until a failback: the record answers the standby; to ValkeyDR/PrimaryDown{Watch=sessions, Agent=agent-a} in us-west-2, last taken 2026-12-07T07:01:00Z"
        );
        s.error = Some("cloudwatch:PutMetricData in us-west-2: AccessDenied".into());
        assert!(
            verdict_text(&s)
                .ends_with(", NOT published: cloudwatch:PutMetricData in us-west-2: AccessDenied")
        );
    }

    /// Issue 23: a watch whose task had panicked was still shown as "healthy (a daemon runs
    /// this watch)".
    #[test]
    fn status_says_unhealthy_while_a_watch_task_is_down_and_counts_restarts_after() {
        let task = crate::control::status::TaskStatus {
            last_panic: "panicked (a bug\\n)".into(),
            restart_at: Some("2026-12-07T07:00:04Z".into()),
            restarts: 2,
            task: "restarting".into(),
        };
        let mut agent = AgentView {
            pause: None,
            running: true,
            served_by_dr: Some(false),
            state: Some("healthy".into()),
            task: Some(task.clone()),
            switch: None,
        };
        assert_eq!(
            agent_line("sessions", &agent, at()),
            "unhealthy: watch sessions's task panicked (a bug\\n), restarting in 4s (restart 2); \
             not probed meanwhile, the state saved last: healthy"
        );
        agent.task = Some(crate::control::status::TaskStatus {
            restart_at: None,
            task: "running".into(),
            ..task
        });
        assert_eq!(
            agent_line("sessions", &agent, at()),
            "healthy (a daemon runs this watch; its task was started again 2 times, last after it \
             panicked (a bug\\n))"
        );
        agent.task = None;
        assert_eq!(
            agent_line("sessions", &agent, at()),
            "healthy (a daemon runs this watch)"
        );
        let mut r = report(true);
        r.watches[0].agent.task = Some(crate::control::status::TaskStatus {
            restart_at: Some("2026-12-07T07:00:04Z".into()),
            task: "restarting".into(),
            restarts: 1,
            last_panic: "panicked (x)".into(),
        });
        let text = status_text(&r);
        assert!(
            text.contains(
                "  agent:   unhealthy: watch sessions's task panicked (x), restarting in "
            ),
            "{text}"
        );
        assert!(!text.contains("a daemon runs this watch"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&status_json(&r)).unwrap();
        assert_eq!(json["watches"][0]["agent"]["task"]["task"], "restarting");
        assert_eq!(json["watches"][0]["agent"]["task"]["restarts"], 1);
    }

    #[test]
    fn status_text_shows_an_ended_hold_with_who_approved_it() {
        let text = status_text(&report(false));
        assert!(
            text.contains(
                "    was held before switch_dns since 2026-12-07T07:00:00Z: approved by alice@ops at 2026-12-07T07:02:00Z\n"
            ),
            "{text}"
        );
        assert!(!text.contains("HELD"), "{text}");
    }

    #[test]
    fn status_json_keeps_the_contract_field_names() {
        let json: serde_json::Value = serde_json::from_str(&status_json(&report(true))).unwrap();
        let w = &json["watches"][0];
        assert_eq!(w["route53"]["target"], "sessions.example");
        assert_eq!(w["dns"]["error"], "dns_timeout");
        assert_eq!(w["last_failover"]["held"]["before"], "switch_dns");
        assert_eq!(
            w["last_failover"]["holds"][0]["how"],
            serde_json::Value::Null
        );
        assert_eq!(w["agent"]["pause"]["reason"], "maintenance");
        assert_eq!(json["command"], "valkey-dr --config /etc/valkey-dr/b.toml");
    }

    #[test]
    fn an_abort_that_did_not_end_the_failover_says_why_on_stderr() {
        let (out, err) = abort_report(&WatchAnswer::not_aborted("no failover is running"));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["abort"]["aborted"], false);
        assert_eq!(err.as_deref(), Some("error: no failover is running"));
        let done = WatchAnswer {
            aborted: Some(true),
            ..WatchAnswer::default()
        };
        assert_eq!(abort_report(&done).1, None);
    }

    #[test]
    fn a_relayed_pause_names_each_peer_and_the_one_it_missed() {
        let mut watches = BTreeMap::new();
        watches.insert(
            "sessions".to_owned(),
            WatchAnswer {
                pause: Some(Some(PauseStatus {
                    reason: None,
                    since: "2026-12-07T07:00:00Z".into(),
                    until: Some("2026-12-07T08:00:00Z".into()),
                    origin: None,
                })),
                state: Some("paused".into()),
                ..WatchAnswer::default()
            },
        );
        watches.insert("other".to_owned(), WatchAnswer::error("no such watch"));
        let answer = ControlAnswer {
            agent_id: Some("agent-a".into()),
            peers: Some(vec![
                RelayResult {
                    agent_id: Some(Some("agent-b".into())),
                    error: None,
                    ok: true,
                    peer: "http://127.0.0.1:9001".into(),
                },
                RelayResult {
                    agent_id: None,
                    error: Some("connection refused".into()),
                    ok: false,
                    peer: "http://127.0.0.1:9002".into(),
                },
            ]),
            watches,
        };
        assert_eq!(
            control_text(&answer),
            "\
other: error: no such watch
sessions: paused since 2026-12-07T07:00:00Z, until 2026-12-07T08:00:00Z
peer http://127.0.0.1:9001 (agent-b): done
peer http://127.0.0.1:9002: NOT done: connection refused
"
        );
    }

    #[test]
    fn an_approval_says_what_moves_and_how_to_follow_it() {
        let mut a = Approved {
            failover_id: "fo-1".into(),
            by: "alice@ops".into(),
            before: "switch_dns".into(),
            journalled: true,
            record: "cache.internal.example".into(),
            follow: "valkey-dr status --watch sessions".into(),
        };
        assert_eq!(
            approved_text(&a),
            "approved failover fo-1 as alice@ops: it goes on past its hold before switch_dns, and cache.internal.example moves to the DR cache now\nfollow it with `valkey-dr status --watch sessions`\n"
        );
        a.journalled = false;
        a.before = "provision".into();
        let text = approved_text(&a);
        assert!(
            text.starts_with("approval of failover fo-1 as alice@ops given: the agent takes it"),
            "{text}"
        );
        assert!(!text.contains("moves to the DR cache"), "{text}");
    }

    #[test]
    fn a_failed_failover_report_keeps_its_error_off_stdout() {
        let report = OpReport::Failover {
            summary: summary(false),
            error: Some("fo-1: provision: quota exceeded".into()),
        };
        let (out, err) = op_report(&report);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["failover"]["failover_id"], "fo-1");
        assert_eq!(
            err.as_deref(),
            Some("error: fo-1: provision: quota exceeded")
        );
        assert!(!out.contains("quota"), "{out}");
    }
}
