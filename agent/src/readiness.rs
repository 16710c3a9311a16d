//! The daemon's readiness: the preflight checks at start and every `readiness_interval`, and
//! the drill interval.
//!
//! - A watch whose failover path has a failing check is *not ready*: a `not_ready` event names
//!   the failing checks when that first happens and whenever the set changes, a `reminder` of it
//!   every `reminder_interval` while it lasts, and `ready` once nothing fails.
//! - `valkey_dr_ready{watch,check}` is 0 for a failing check and 1 otherwise; `/status` shows
//!   every check of the last pass and when it was taken (`readiness`).
//! - A check that could not run (`unknown`: an API that does not answer, a permission to look
//!   that is missing) counts as ready for `readiness_stale`, not for ever: unverified for
//!   longer (since the last pass with any other result, or since the start), it is published
//!   as failing, saying for how long, until a pass verifies it again. A Route 53 or IAM outage
//!   of a pass is worth no page; one of a day hides a path that may have rotted meanwhile.
//!   `valkey-dr preflight` itself has no memory, so it has no such rule.
//! - A watch without a successful drill within `drill_interval` gets `drill_overdue` (again
//!   every `reminder_interval`); `valkey_dr_last_drill_timestamp_seconds` and
//!   `valkey_dr_drill_phase_seconds` follow the drill reports under `state_dir/drills/`, which
//!   `valkey-dr drill` writes from its own process.
//!
//! The first pass starts as the daemon does, so that an agent that could never fail over says
//! so within seconds of starting, not in the middle of an outage. `SIGUSR1` starts a pass at
//! once (after the one running, if any): to see a fix take effect without waiting for
//! `readiness_interval`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::control::status::{ReadinessCheck, ReadinessStatus, ReadinessWatch};
use crate::event::{Event, EventName};
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::preflight::{self, CheckStatus, Report};
use crate::standby::{Book, Known};

/// `config` with `[agent] region` filled in from where the agent finds its own
/// (`aws::own_region`), and said once in the log.
async fn with_own_region(config: Arc<Config>) -> Arc<Config> {
    if config.agent.region.is_some() {
        return config;
    }
    match crate::aws::own_region(&config).await {
        Some((region, source)) => {
            tracing::info!(region, "this agent runs in {region} (from {source})");
            let mut config = (*config).clone();
            config.agent.region = Some(region);
            Arc::new(config)
        }
        None => {
            tracing::info!(
                "this agent's region is unknown ([agent] region is not set, no AWS_REGION, no instance metadata): readiness's placement check is left out; set [agent] region"
            );
            config
        }
    }
}

/// One watch's alerting memory.
#[derive(Default)]
struct Memory {
    /// The failing checks last announced; `None` before the first pass.
    failing: Option<Vec<String>>,
    /// When `not_ready` (or its reminder) was last sent.
    alerted: Option<Instant>,
    /// When `drill_overdue` was last sent.
    drill_alerted: Option<Instant>,
}

/// Runs until `shutdown`: a pass at once, then one every `readiness_interval`, and sooner when
/// a reminder falls due. Between passes, a warm standby that stops (or starts again) serving
/// in a probe round changes the `standby` check at once: the last pass is published again
/// with what the round saw.
pub async fn run(
    config: Arc<Config>,
    metrics: Arc<Metrics>,
    notifier: Notifier,
    standbys: Arc<Book>,
    status: watch::Sender<ReadinessStatus>,
    shutdown: CancellationToken,
) {
    // Where the agent runs, for the `placement` check: found here, off the probes' path (the
    // instance metadata may take a while to answer, or never answer off EC2).
    let config = with_own_region(config).await;
    let mut memory: BTreeMap<String, Memory> = BTreeMap::new();
    let mut verified = Verified::since(Instant::now());
    // Registered once per process by tokio (and never given back), so a SIGUSR1 cannot kill
    // the agent between reloads either.
    let mut asked =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::warn!(error = %e, "SIGUSR1 cannot start a readiness pass: no handler");
                None
            }
        };
    let out = Out {
        config: &config,
        metrics: &metrics,
        notifier: &notifier,
        status: &status,
    };
    loop {
        let report = tokio::select! {
            _ = shutdown.cancelled() => return,
            report = preflight::run(&config, None) => report,
        };
        verified.record(&report, Instant::now());
        // What is published: the pass, with what the probe rounds saw of the standby, and
        // with every check unverified for too long as failing.
        let shown = |report: &Report| {
            with_stale(
                with_probes(report, &standbys),
                &verified,
                Instant::now(),
                config.agent.readiness_stale,
            )
        };
        for (watch, seen) in &report.standbys {
            standbys.found(
                watch,
                seen.as_ref()
                    .map(|(endpoint, port)| known(&config, watch, endpoint, *port)),
            );
        }
        let next = out.publish(&shown(&report), &mut memory, true);
        // The pass (and, the first time, start-up) ran code and filled heap that the probe
        // loop never needs: give both back until the next pass.
        crate::memory::give_back();
        let due = tokio::time::sleep(next);
        tokio::pin!(due);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                () = &mut due => break,
                Some(()) = async {
                    match asked.as_mut() {
                        Some(signal) => signal.recv().await,
                        None => std::future::pending().await,
                    }
                } => {
                    tracing::info!("SIGUSR1: a readiness pass now");
                    break;
                }
                () = standbys.changed.notified() => {
                    let sooner = out.publish(&shown(&report), &mut memory, false);
                    // A check that fails now is reminded of on its own schedule.
                    let at = due.deadline().min(Instant::now() + sooner);
                    due.as_mut().reset(at);
                }
            }
        }
    }
}

/// Where readiness tells what it found.
struct Out<'a> {
    config: &'a Config,
    metrics: &'a Metrics,
    notifier: &'a Notifier,
    status: &'a watch::Sender<ReadinessStatus>,
}

impl Out<'_> {
    /// The metrics, the events and `/status` of `report`; `drills` on a pass (not on a
    /// probe's news). How long until the next pass.
    fn publish(
        &self,
        report: &Report,
        memory: &mut BTreeMap<String, Memory>,
        drills_too: bool,
    ) -> Duration {
        let now = Instant::now();
        let mut next = self.config.agent.readiness_interval;
        for w in &self.config.watches {
            let m = memory.entry(w.name.clone()).or_default();
            let reminder = w.policy.reminder_interval;
            for f in report.findings.iter().filter(|f| f.watch == w.name) {
                self.metrics
                    .set_ready(&w.name, f.check, f.result != CheckStatus::Fail);
            }
            let failing: Vec<String> = report
                .failing(&w.name)
                .iter()
                .map(|f| f.check.to_owned())
                .collect();
            if let Some(event) =
                transition(self.config, &w.name, report, m, &failing, now, reminder)
            {
                tracing::warn!(watch = %w.name, event = %event.event, "{}", event.text());
                self.notifier.notify(event);
            }
            if !failing.is_empty() {
                next = next.min(reminder);
            }
            m.failing = Some(failing);
            if drills_too {
                drills(self.config, w, self.metrics, self.notifier, m, now);
            }
        }
        let _ = self.status.send(readiness_status(report));
        next
    }
}

/// Where `watch`'s standby serves, as a pass found it.
fn known(config: &Config, watch: &str, endpoint: &str, port: u16) -> Known {
    let w = config.watches.iter().find(|w| w.name == watch);
    Known {
        cache_name: w.map(|w| w.dr.cache_name.clone()).unwrap_or_default(),
        region: w.map(|w| w.dr.region.clone()).unwrap_or_default(),
        endpoint: endpoint.to_owned(),
        port,
        seen_at: SystemTime::now(),
    }
}

/// `report` with each warm standby that failed its last probe round as a failing `standby`
/// check: Describe may say `available` while it does not serve.
fn with_probes(report: &Report, standbys: &Book) -> Report {
    let mut report = report.clone();
    for f in &mut report.findings {
        if f.check != "standby" || f.result == CheckStatus::Fail {
            continue;
        }
        let (Some(served), Some(known)) = (standbys.served(&f.watch), standbys.known(&f.watch))
        else {
            continue;
        };
        if served.failures == 0 {
            continue;
        }
        let rounds = if served.failures == 1 {
            "its last probe round".to_owned()
        } else {
            format!("{} probe rounds in a row", served.failures)
        };
        f.result = CheckStatus::Fail;
        f.found = format!(
            "the warm standby {} at {}:{} does not serve: {} ({rounds}); a failover would build on demand",
            known.cache_name,
            known.endpoint,
            known.port,
            served.error.as_deref().unwrap_or("unknown error"),
        );
        f.fix = Some(format!(
            "find out why (`valkey-dr check --watch {}` shows the standby path), or build it again: `valkey-dr standby delete --watch {0}`, then `valkey-dr standby create --watch {0}`",
            f.watch
        ));
    }
    report
}

/// When each check of each watch was last verified: what makes an `unknown` stale.
struct Verified {
    /// When readiness started, with the daemon: a check never verified counts from here, so
    /// that a permission missing from the first day is said too.
    start: Instant,
    /// The end of the last pass whose result for (watch, check) was anything but `unknown`.
    at: BTreeMap<(String, &'static str), Instant>,
}

impl Verified {
    fn since(start: Instant) -> Verified {
        Verified {
            start,
            at: BTreeMap::new(),
        }
    }

    /// Remembers the checks `report`, a pass that ended at `now`, could run: `ok`, `warn`
    /// and `fail` are all verified results.
    fn record(&mut self, report: &Report, now: Instant) {
        for f in &report.findings {
            if f.result != CheckStatus::Unknown {
                self.at.insert((f.watch.clone(), f.check), now);
            }
        }
    }
}

/// What a stale check's fix says when its `unknown` finding gave none.
const STALE_FIX: &str = "restore access so that the check can run";

/// `report` with each check `unknown` and not verified for longer than `stale` (at `now`)
/// as failing: found says for how long and keeps what the check found, fix keeps its own.
fn with_stale(mut report: Report, verified: &Verified, now: Instant, stale: Duration) -> Report {
    for f in &mut report.findings {
        if f.result != CheckStatus::Unknown {
            continue;
        }
        let last = verified.at.get(&(f.watch.clone(), f.check)).copied();
        let age = now.saturating_duration_since(last.unwrap_or(verified.start));
        if age <= stale {
            continue;
        }
        // Whole seconds, rounded up: a check stale after 3s reads "for 4s", never "for 3s".
        let shown = Duration::from_secs(age.as_secs() + u64::from(age.subsec_nanos() > 0));
        f.result = CheckStatus::Fail;
        f.found = format!(
            "not verified for {}{} (readiness_stale = {}): {}",
            crate::text::duration(shown),
            if last.is_none() {
                ", not once since the agent started"
            } else {
                ""
            },
            crate::text::duration(stale),
            f.found
        );
        f.fix.get_or_insert_with(|| STALE_FIX.to_owned());
    }
    report
}

/// The event this pass calls for, if any, updating when the last alert went out.
fn transition(
    config: &Config,
    watch: &str,
    report: &Report,
    m: &mut Memory,
    failing: &[String],
    now: Instant,
    reminder: Duration,
) -> Option<Event> {
    let (previous, state) = match (&m.failing, failing.is_empty()) {
        (Some(before), true) if !before.is_empty() => ("not_ready", "ready"),
        (_, true) => return None,
        (None, false) => ("ready", "not_ready"),
        (Some(before), false) if before.is_empty() => ("ready", "not_ready"),
        (Some(before), false) if before != failing => ("not_ready", "not_ready"),
        (Some(_), false) => {
            if m.alerted
                .is_some_and(|at| now.duration_since(at) < reminder)
            {
                return None;
            }
            ("not_ready", "not_ready")
        }
    };
    let repeat =
        previous == "not_ready" && state == "not_ready" && m.failing.as_deref() == Some(failing);
    let mut event = Event::executor(
        if state == "ready" {
            EventName::Ready
        } else if repeat {
            EventName::Reminder
        } else {
            EventName::NotReady
        },
        watch,
        &config.agent.id,
        (previous, state),
        None,
    );
    if repeat {
        event.of = Some(EventName::NotReady);
    }
    if state == "ready" {
        event.reasons = vec!["every preflight check of the failover path passes".into()];
        m.alerted = None;
    } else {
        event.reasons = report
            .failing(watch)
            .iter()
            .map(|f| match &f.fix {
                Some(fix) => format!("{}: {} (fix: {fix})", f.check, f.found),
                None => format!("{}: {}", f.check, f.found),
            })
            .collect();
        m.alerted = Some(now);
    }
    event.detail = Some(json!({ "failing": failing }));
    Some(event)
}

/// The drill metrics, and `drill_overdue` when no drill succeeded within `drill_interval`.
fn drills(
    config: &Config,
    w: &crate::config::WatchConfig,
    metrics: &Metrics,
    notifier: &Notifier,
    m: &mut Memory,
    now: Instant,
) {
    let last = crate::drill::last_ok(&config.agent.state_dir, &w.name);
    if let Some((finished, phases)) = &last {
        metrics.last_drill(&w.name, *finished, phases);
    }
    let interval = config.agent.drill_interval;
    let age = last
        .as_ref()
        .map(|(at, _)| SystemTime::now().duration_since(*at).unwrap_or_default());
    if age.is_some_and(|a| a <= interval) {
        m.drill_alerted = None;
        return;
    }
    if m.drill_alerted
        .is_some_and(|at| now.duration_since(at) < w.policy.reminder_interval)
    {
        return;
    }
    m.drill_alerted = Some(now);
    let mut event = Event::executor(
        EventName::DrillOverdue,
        &w.name,
        &config.agent.id,
        ("drill_due", "drill_overdue"),
        None,
    );
    event.reasons = vec![match (&last, age) {
        (Some((at, _)), Some(age)) => format!(
            "the last successful drill finished {} ago ({}), more than drill_interval = {}: run `valkey-dr drill --watch {}`",
            crate::text::duration(Duration::from_secs(age.as_secs())),
            humantime::format_rfc3339_seconds(*at),
            crate::text::duration(interval),
            w.name
        ),
        _ => format!(
            "no drill of this watch has succeeded yet (drill_interval = {}): run `valkey-dr drill --watch {}`",
            crate::text::duration(interval),
            w.name
        ),
    }];
    tracing::warn!(watch = %w.name, "{}", event.text());
    notifier.notify(event);
}

/// `/status`'s `readiness`: the last pass, per watch.
fn readiness_status(report: &Report) -> ReadinessStatus {
    let mut watches: BTreeMap<&str, Vec<&preflight::Finding>> = BTreeMap::new();
    for f in &report.findings {
        watches.entry(f.watch.as_str()).or_default().push(f);
    }
    ReadinessStatus {
        checked_at: Some(crate::text::rfc3339_seconds(report.checked_at)),
        status: report.status().as_str().to_owned(),
        watches: watches
            .iter()
            .map(|(name, checks)| ReadinessWatch {
                checks: checks
                    .iter()
                    .map(|f| ReadinessCheck {
                        check: f.check.to_owned(),
                        fix: f.fix.clone(),
                        found: f.found.clone(),
                        result: f.result.as_str().to_owned(),
                    })
                    .collect(),
                failing: checks
                    .iter()
                    .filter(|f| f.result == CheckStatus::Fail)
                    .map(|f| f.check.to_owned())
                    .collect(),
                name: (*name).to_owned(),
                ready: checks.iter().all(|f| f.result != CheckStatus::Fail),
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::preflight::Finding;

    fn config() -> Config {
        let text = "[agent]\nid = \"a\"\nstate_dir = \"/tmp/x\"\n\
             [[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
             [watch.primary]\nregion = \"us-east-1\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
             [watch.dr]\nregion = \"us-west-2\"\ncache_name = \"app-dr\"\n";
        Config::parse(
            text,
            std::path::Path::new("/etc/valkey-dr/agent.toml"),
            &crate::config::ProcessEnv,
        )
        .expect("valid")
    }

    fn report(failing: &[&'static str]) -> Report {
        Report {
            standbys: BTreeMap::new(),
            checked_at: SystemTime::UNIX_EPOCH,
            findings: crate::preflight::CHECKS
                .iter()
                .map(|c| Finding {
                    watch: "s".into(),
                    check: c,
                    result: if failing.contains(c) {
                        CheckStatus::Fail
                    } else {
                        CheckStatus::Ok
                    },
                    found: format!("{c} found"),
                    fix: failing.contains(c).then(|| format!("fix {c}")),
                })
                .collect(),
        }
    }

    /// Drives `transition` through passes as `run` does; returns each pass's event name.
    fn passes(steps: &[(&[&'static str], u64)]) -> Vec<Option<String>> {
        let config = config();
        let reminder = Duration::from_secs(600);
        let mut m = Memory::default();
        let start = Instant::now();
        steps
            .iter()
            .map(|(failing, at)| {
                let r = report(failing);
                let names: Vec<String> = failing.iter().map(|s| s.to_string()).collect();
                let e = transition(
                    &config,
                    "s",
                    &r,
                    &mut m,
                    &names,
                    start + Duration::from_secs(*at),
                    reminder,
                );
                m.failing = Some(names);
                e.map(|e| {
                    if matches!(e.event, EventName::NotReady | EventName::Reminder) {
                        assert!(
                            e.reasons.iter().all(|r| r.contains("fix")),
                            "{:?}",
                            e.reasons
                        );
                    }
                    match e.of {
                        Some(of) => format!("{}:{of}", e.event),
                        None => e.event.to_string(),
                    }
                })
            })
            .collect()
    }

    /// A pass: every check `ok` but those listed, with their result and fix.
    fn pass(results: &[(&'static str, CheckStatus, Option<&str>)]) -> Report {
        let mut r = report(&[]);
        for (check, result, fix) in results {
            let f = r.findings.iter_mut().find(|f| f.check == *check).unwrap();
            f.result = *result;
            f.fix = fix.map(str::to_owned);
        }
        r
    }

    /// Drives passes as `run` does, with `readiness_stale` = `stale` s: each pass (its
    /// `permissions` result, at `at` s after the start) is recorded, made stale where due and
    /// given to `transition`. Returns each pass's published `permissions` finding and event.
    fn stale_passes(
        stale: u64,
        steps: &[(CheckStatus, Option<&str>, u64)],
    ) -> Vec<(Finding, Option<String>)> {
        let config = config();
        let start = Instant::now();
        let mut verified = Verified::since(start);
        let mut m = Memory::default();
        steps
            .iter()
            .map(|(result, fix, at)| {
                let now = start + Duration::from_secs(*at);
                let raw = pass(&[("permissions", *result, *fix)]);
                verified.record(&raw, now);
                let shown = with_stale(raw, &verified, now, Duration::from_secs(stale));
                let failing: Vec<String> = shown
                    .failing("s")
                    .iter()
                    .map(|f| f.check.to_owned())
                    .collect();
                let event = transition(
                    &config,
                    "s",
                    &shown,
                    &mut m,
                    &failing,
                    now,
                    Duration::from_secs(600),
                );
                m.failing = Some(failing);
                let finding = shown
                    .findings
                    .into_iter()
                    .find(|f| f.check == "permissions")
                    .unwrap();
                (finding, event.map(|e| e.event.to_string()))
            })
            .collect()
    }

    #[test]
    fn issue_22_an_unknown_check_fails_once_not_verified_for_readiness_stale() {
        use CheckStatus::{Ok, Unknown};
        let fix = Some("allow iam:SimulatePrincipalPolicy");
        // readiness_interval 15m, readiness_stale 1h.
        let steps = [
            (Ok, None, 0),
            (Unknown, fix, 900),
            (Unknown, fix, 1800),
            (Unknown, fix, 2700),
            (Unknown, fix, 3600),
            (Unknown, fix, 4500),
            (Unknown, fix, 5400),
            (Ok, None, 6300),
        ];
        let passes = stale_passes(3600, &steps);
        let results: Vec<&str> = passes.iter().map(|(f, _)| f.result.as_str()).collect();
        assert_eq!(
            results,
            [
                "ok", "unknown", "unknown", "unknown", "unknown", "fail", "fail", "ok"
            ],
            "unknown for exactly readiness_stale is still ready; longer is not"
        );
        let events: Vec<Option<&str>> = passes.iter().map(|(_, e)| e.as_deref()).collect();
        assert_eq!(
            events,
            [
                None,
                None,
                None,
                None,
                None,
                Some("not_ready"),
                // reminder_interval (10m here) has passed since not_ready.
                Some("reminder"),
                Some("ready")
            ]
        );
        let (stale, _) = &passes[5];
        assert_eq!(
            stale.found,
            "not verified for 1h 15m (readiness_stale = 1h): permissions found"
        );
        assert_eq!(
            stale.fix.as_deref(),
            fix,
            "the unknown finding's fix is kept"
        );
        assert_eq!(
            passes[6].0.found,
            "not verified for 1h 30m (readiness_stale = 1h): permissions found"
        );
        assert_eq!(
            passes[7].0.found, "permissions found",
            "back to its real result"
        );
    }

    #[test]
    fn issue_22_a_check_never_verified_counts_from_the_start_and_gets_a_fix() {
        use CheckStatus::Unknown;
        let passes = stale_passes(
            3,
            &[(Unknown, None, 1), (Unknown, None, 3), (Unknown, None, 4)],
        );
        let results: Vec<&str> = passes.iter().map(|(f, _)| f.result.as_str()).collect();
        assert_eq!(results, ["unknown", "unknown", "fail"]);
        assert_eq!(
            passes[0].0.fix, None,
            "an unknown that is not stale is as found"
        );
        let (stale, event) = &passes[2];
        assert_eq!(event.as_deref(), Some("not_ready"));
        assert_eq!(
            stale.found,
            "not verified for 4s, not once since the agent started (readiness_stale = 3s): permissions found"
        );
        assert_eq!(stale.fix.as_deref(), Some(STALE_FIX));

        // A fraction of a second over reads as the next second, never as readiness_stale.
        let start = Instant::now();
        let shown = with_stale(
            pass(&[("permissions", Unknown, None)]),
            &Verified::since(start),
            start + Duration::from_millis(3200),
            Duration::from_secs(3),
        );
        let f = shown.failing("s")[0];
        assert!(f.found.starts_with("not verified for 4s,"), "{}", f.found);
    }

    #[test]
    fn issue_22_any_result_but_unknown_verifies_and_each_check_keeps_its_own_clock() {
        use CheckStatus::{Fail, Ok, Unknown, Warn};
        // A warn or a fail was checked too: the clock starts again from it.
        for verified in [Warn, Fail] {
            let passes = stale_passes(
                3600,
                &[
                    (Unknown, None, 3000),
                    (verified, None, 3500),
                    (Unknown, None, 7000),
                ],
            );
            assert_eq!(passes[2].0.result, Unknown, "{verified:?}");
        }
        // Another check verified by the same passes does not verify this one.
        let start = Instant::now();
        let mut verified = Verified::since(start);
        let stale = Duration::from_secs(60);
        let mut last = report(&[]);
        for at in [0, 30, 61] {
            let now = start + Duration::from_secs(at);
            let raw = pass(&[("permissions", Unknown, None), ("identity", Ok, None)]);
            verified.record(&raw, now);
            last = with_stale(raw, &verified, now, stale);
        }
        let result = |check: &str| {
            last.findings
                .iter()
                .find(|f| f.check == check)
                .map(|f| f.result)
        };
        assert_eq!(result("permissions"), Some(Fail));
        assert_eq!(result("identity"), Some(Ok));
        assert_eq!(
            last.failing("s").len(),
            1,
            "only the stale check fails: {:?}",
            last.failing("s")
        );
    }

    #[test]
    fn not_ready_at_once_then_reminded_then_ready() {
        let none: &[&'static str] = &[];
        assert_eq!(
            passes(&[
                (&["identity"], 0),
                (&["identity"], 300),
                (&["identity"], 600),
                (&["identity", "permissions"], 700),
                (none, 800),
                (none, 900),
            ]),
            [
                Some("not_ready".to_owned()),
                None,
                Some("reminder:not_ready".to_owned()),
                Some("not_ready".to_owned()),
                Some("ready".to_owned()),
                None,
            ]
        );
        assert_eq!(
            passes(&[(none, 0), (none, 900)]),
            [None, None],
            "ready from the start is quiet"
        );
    }
}
