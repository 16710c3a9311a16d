//! `bench failover`: whole failovers, from a region outage to the application writing again,
//! each phase timed, and what the agent adds on top of what AWS and DNS take anyway.
//!
//! Each run is the demo's story ([`crate::scenario`]) in a fresh lab: the real `valkey-dr run`
//! in `auto-failover` mode, an application storing a session every 100 ms through the record
//! with a caching resolver, and `region-outage us-east-1`. Times are arrivals at this process
//! (webhook POSTs and the application's own writes) on one clock, from just before the fault.
//!
//! One invocation measures several [`Variant`]s, each `runs` times with the same seeded
//! outage offsets: each switch of `--switch record,health_check` with Route 53's API up, and
//! with `--route53-down SECONDS` down too. Down means every call answers 503
//! `ServiceUnavailable`, as when its control plane in us-east-1 is impaired: for a record
//! switch from the outage for SECONDS (the switch waits for it; the report says when it came
//! back), for a health-check switch from the set-up to the end of the run (it must need it for
//! nothing, so nothing is left for it to wait on).
//!
//! A health-check switch (`[watch.switch] kind = "health_check"`, with a warm standby) is set
//! up before the agent starts: `valkey-dr template` deployed into the lab
//! ([`valkey_dr_lab::deploy`]); one agent, so one alarm and a calculated check of 1 child,
//! healthy while 1 is (n = 1, quorum 1). Its record answers the standby once the agent's
//! verdict has made the alarm fire and the health check follow it; the bench sees that moment
//! in the lab's DNS answer, asked every 50 ms with no cache.
//!
//! The overhead is the application's outage minus the waits that are not the agent's: the
//! cache build (provision delay) and the Route 53 change (insync delay), or the alarm's
//! period and the health check's delay, and one TTL. How much of
//! the TTL the application actually waits is luck (when its resolver last refreshed the old
//! answer), so the outage is first normalised to the worst case, a full TTL after the switch;
//! the raw figure is reported beside it.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

use super::ScratchDir;
use super::agent;
use super::round_ms;
use crate::scenario::{
    self, ALARM_PERIOD, ALARM_PERIODS, AgentProgram, HEALTH_CHECK_DELAY, INSYNC_DELAY, INTERVAL,
    Milestone, Outage, Outcome, PROVISION_DELAY, Route53Api, Switch, TTL,
};

/// The target: the agent adds less than this beyond one probe interval.
const TARGET_BEYOND_INTERVAL: Duration = Duration::from_secs(1);

/// The lab agent's `fall` (agent.toml), for the report.
const FALL: u32 = 3;

/// The executor's steps, in order.
const STEPS: [&str; 8] = [
    "provision",
    "wait_available",
    "verify_direct",
    "lease",
    "switch_dns",
    "wait_insync",
    "verify_dns",
    "release",
];

/// One way of failing over: how the record moves, and Route 53's API meanwhile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Variant {
    pub switch: Switch,
    pub route53: Route53Api,
}

impl Variant {
    /// Each of `switches` with Route 53's API up and, with `route53_down`, down: for that long
    /// from the outage for a record switch, which needs it to switch; from the set-up to the
    /// end of the run for a health-check switch, which must need it for nothing.
    pub fn all(switches: &[Switch], route53_down: Option<Duration>) -> Vec<Variant> {
        let mut out = Vec::new();
        for &switch in switches {
            out.push(Variant {
                switch,
                route53: Route53Api::Up,
            });
            if let Some(down) = route53_down {
                let route53 = match switch {
                    Switch::Record => Route53Api::DownFor(down),
                    Switch::HealthCheck => Route53Api::DownThroughout,
                };
                out.push(Variant { switch, route53 });
            }
        }
        out
    }

    /// Its name in the report: `record+route53_up`, `health_check+route53_down_throughout`.
    pub fn name(&self) -> String {
        let route53 = match self.route53 {
            Route53Api::Up => "route53_up".to_owned(),
            Route53Api::DownFor(d) => format!("route53_down_{}s", d.as_secs()),
            Route53Api::DownThroughout => "route53_down_throughout".to_owned(),
        };
        format!("{}+{route53}", self.switch.as_str())
    }
}

/// Per-run figures, in seconds, and how each is computed (`None`: not in this variant).
type Figure = (&'static str, fn(&Outcome) -> Option<f64>);

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn between(o: &Outcome, a: Milestone, b: Milestone) -> Option<f64> {
    Some(secs(o.get(b)?) - secs(o.get(a)?))
}

fn figures() -> Vec<Figure> {
    use Milestone as M;
    vec![
        ("detection", |o| o.get(M::Down).map(secs)),
        ("reaction", |o| between(o, M::Down, M::FailoverStarted)),
        ("down_to_verdict", |o| between(o, M::Down, M::Verdict)),
        ("verdict_to_dns", |o| between(o, M::Verdict, M::DnsOnDr)),
        ("down_to_completed", |o| {
            between(o, M::Down, M::FailoverCompleted)
        }),
        ("dns_switched", |o| Some(secs(o.dns_switched()))),
        ("dns_answers_dr", |o| o.get(M::DnsOnDr).map(secs)),
        ("failover_completed", |o| {
            o.get(M::FailoverCompleted).map(secs)
        }),
        ("completed_after_dns", |o| {
            between(o, M::DnsOnDr, M::FailoverCompleted)
        }),
        ("executor_before_switch", executor_before_switch),
        ("app_first_failure", |o| o.get(M::AppFailed).map(secs)),
        ("app_outage", |o| Some(secs(o.app_outage()))),
        ("app_visible_outage", |o| Some(secs(o.app_visible_outage))),
        ("app_dns_wait", |o| Some(secs(o.app_dns_wait()))),
        ("worst_case_app_outage", |o| {
            Some(secs(o.worst_case_app_outage()))
        }),
        ("overhead", |o| Some(o.overhead_s())),
        ("overhead_beyond_interval", |o| {
            Some(overhead_beyond_interval(o))
        }),
        ("raw_overhead", |o| Some(o.raw_overhead_s())),
        ("step_event_lag_max", |o| {
            STEPS.iter().filter_map(|s| o.event_lag(s)).reduce(f64::max)
        }),
    ]
}

/// What the executor adds before the record changes: failover_started → switch_dns done,
/// minus the cache build (lease, poll granularity, API calls, verify_direct). A record switch
/// only.
fn executor_before_switch(o: &Outcome) -> Option<f64> {
    let started = o.get(Milestone::FailoverStarted)?;
    Some(secs(o.dns_switched().saturating_sub(started)) - secs(o.build()))
}

fn overhead_beyond_interval(o: &Outcome) -> f64 {
    o.overhead_s() - INTERVAL.as_secs_f64()
}

/// `runs` failovers of each of `variants`, of the kind `shape` says otherwise (its offset, its
/// switch and Route 53's API aside: `seed` draws the offsets, the same for every variant):
/// with `standby`, the watch keeps a warm standby built before the agent starts; with `fleet`,
/// that many watches share the zone; `pass` says whether a readiness pass runs at each
/// outage.
pub async fn run(
    runs: usize,
    seed: u64,
    shape: Outage,
    variants: &[Variant],
) -> anyhow::Result<Value> {
    let (binary, profile) = agent::measured_binary()?;
    // Where in the probe interval each outage lands, so detection covers every phase.
    let mut rng = StdRng::seed_from_u64(seed);
    let offsets: Vec<Duration> = (0..runs)
        .map(|_| INTERVAL.mul_f64(rng.random::<f64>()))
        .collect();
    let scratch = ScratchDir::new("failover")?;
    let load_start = super::load_1m();
    let program = AgentProgram {
        path: &binary,
        leading: &[],
    };
    let mut reports = Vec::with_capacity(variants.len());
    for (v, variant) in variants.iter().enumerate() {
        let mut outcomes = Vec::with_capacity(runs);
        let mut failures = Vec::new();
        for (i, offset) in offsets.iter().enumerate() {
            eprintln!("bench failover: {} run {}/{runs}", variant.name(), i + 1);
            // Short: the caches' unix sockets live below it (sun_path holds 107 bytes).
            let dir = scratch.path().join(format!("v{v}r{i:03}"));
            let outage = Outage {
                offset: *offset,
                route53: variant.route53,
                switch: variant.switch,
                ..shape
            };
            match scenario::play(&dir, &program, outage, &mut |_| {}).await {
                Ok(o) => {
                    eprintln!(
                        "  down t+{:.2}s, dns answers the DR cache t+{:.2}s, failover_completed t+{:.2}s, app writing t+{:.2}s (dns wait {:.2}s), overhead {:+.2}s, Route 53 calls {}, creates {}",
                        o.at(Milestone::Down).as_secs_f64(),
                        o.at(Milestone::DnsOnDr).as_secs_f64(),
                        o.at(Milestone::FailoverCompleted).as_secs_f64(),
                        o.app_outage().as_secs_f64(),
                        o.app_dns_wait().as_secs_f64(),
                        o.overhead_s(),
                        o.calls.route53_total(),
                        o.calls.elasticache_creates,
                    );
                    outcomes.push(o);
                }
                Err(e) => {
                    eprintln!("  run {} failed: {e:#}", i + 1);
                    failures.push(json!({ "run": i + 1, "error": format!("{e:#}") }));
                }
            }
            // Each run's lab is gone; its files are not needed any more.
            let _ = std::fs::remove_dir_all(&dir);
        }
        reports.push(variant_report(*variant, &outcomes, failures));
    }
    let comparison: Vec<Value> = reports.iter().map(|r| r["summary"].clone()).collect();
    Ok(json!({
        "bench": "failover",
        "runs": runs,
        "seed": seed,
        "outage_offsets_s": offsets.iter().map(|d| round_ms(d.as_secs_f64())).collect::<Vec<_>>(),
        "valkey_dr_binary": binary.display().to_string(),
        "build": profile,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "load_1m": {"start": load_start, "end": super::load_1m()},
        "setup": {
            "agent": "one valkey-dr run, mode auto-failover; probe timeout 500ms, fall 3, \
                      down_after 2s, aws witness (DescribeServerlessCaches in us-west-2); \
                      record switch: lease on; health-check switch: no peers, so n = 1 agent \
                      and quorum 1: one alarm, one alarm-based health check, and a calculated \
                      check healthy while 1 of its 1 children is",
            "application": "SET session:<n> … EX 600 every 100 ms through the record: hickory \
                            resolver with its cache (honours the TTL), TLS to the CNAME target's \
                            name, 500 ms per operation, reconnect (and resolve) after any error",
            "fault": "region-outage us-east-1: the primary's front blackholed, its ElastiCache \
                      API and CloudWatch 503; the verdicts go to us-west-2 (metric_region, the \
                      DR region)",
            "standby": if shape.standby { "warm" } else { "none" },
            "fleet": shape.fleet.max(1),
            "readiness_pass_at_outage": shape.pass.as_str(),
        },
        "lab_knobs": lab_knobs(),
        "real_aws_adds": real_aws_adds(),
        "comparison": comparison,
        "variants": reports,
        "notes": notes(),
    }))
}

/// One variant's figures.
fn variant_report(variant: Variant, outcomes: &[Outcome], failures: Vec<Value>) -> Value {
    let figures = figures();
    let per_run: Vec<Value> = outcomes.iter().map(|o| run_report(o, &figures)).collect();
    let mut phases = serde_json::Map::new();
    for (name, f) in &figures {
        let values: Vec<f64> = outcomes.iter().filter_map(f).collect();
        if !values.is_empty() {
            phases.insert(format!("{name}_s"), stats(&values));
        }
    }
    if variant.switch == Switch::Record {
        let mut steps = serde_json::Map::new();
        for step in STEPS {
            let values: Vec<f64> = outcomes
                .iter()
                .filter_map(|o| o.step(step))
                .map(secs)
                .collect();
            steps.insert(step.to_owned(), stats(&values));
        }
        phases.insert("steps_s".into(), Value::Object(steps));
    }
    let beyond: Vec<f64> = outcomes.iter().map(overhead_beyond_interval).collect();
    let worst = beyond.iter().copied().reduce(f64::max);
    let meets =
        failures.is_empty() && worst.is_some_and(|w| w < TARGET_BEYOND_INTERVAL.as_secs_f64());
    let p50_max = |f: &dyn Fn(&Outcome) -> f64| {
        let values: Vec<f64> = outcomes.iter().map(f).collect();
        let s = stats(&values);
        json!({ "p50": s["p50"], "max": s["max"] })
    };
    let counts = |f: &dyn Fn(&Outcome) -> u64| {
        let values: Vec<u64> = outcomes.iter().map(f).collect();
        json!({ "min": values.iter().min(), "max": values.iter().max() })
    };
    let route53_actions: std::collections::BTreeSet<&String> = outcomes
        .iter()
        .flat_map(|o| o.calls.route53.keys())
        .collect();
    let summary = json!({
        "variant": variant.name(),
        "switch": variant.switch.as_str(),
        "route53_api": variant.route53.as_str(),
        "completed": outcomes.len(),
        "failed": failures.len(),
        "outage_to_dns_answers_standby_s": p50_max(&|o| secs(o.at(Milestone::DnsOnDr))),
        "outage_to_app_writing_s": p50_max(&|o| secs(o.app_outage())),
        "worst_case_outage_to_app_writing_s": p50_max(&|o| secs(o.worst_case_app_outage())),
        "agent_route53_api_calls_per_run": counts(&|o| o.calls.route53_total()),
        "agent_route53_api_actions": route53_actions,
        "agent_elasticache_creates_per_run": counts(&|o| o.calls.elasticache_creates),
    });
    json!({
        "variant": variant.name(),
        "switch": variant.switch.as_str(),
        "route53_api": variant.route53.as_str(),
        "route53_down_s": match variant.route53 {
            Route53Api::DownFor(d) => json!(d.as_secs_f64()),
            _ => Value::Null,
        },
        "completed": outcomes.len(),
        "failed": failures,
        "summary": summary,
        "target": {
            "what": "overhead_beyond_interval_s < 1 s in every run",
            "threshold_s": TARGET_BEYOND_INTERVAL.as_secs_f64(),
            "worst_s": worst.map(round_ms),
            "meets_target": meets,
        },
        "phases_s": phases,
        "per_run": per_run,
    })
}

/// One run's figures, milestones, steps and AWS calls.
fn run_report(o: &Outcome, figures: &[Figure]) -> Value {
    let mut run = serde_json::Map::new();
    for (name, f) in figures {
        if let Some(v) = f(o) {
            run.insert(format!("{name}_s"), json!(round_ms(v)));
        }
    }
    if o.switch == Switch::Record {
        run.insert(
            "steps_s".into(),
            Value::Object(
                STEPS
                    .iter()
                    .map(|s| {
                        let took = o.step(s).map(|d| round_ms(d.as_secs_f64()));
                        (s.to_string(), json!(took))
                    })
                    .collect(),
            ),
        );
        run.insert(
            "agent_total_s".into(),
            json!(o.total_ms.map(|ms| ms as f64 / 1000.0)),
        );
        run.insert(
            "journal_done_s".into(),
            Value::Object(
                o.journal
                    .iter()
                    .map(|(step, (_, done))| (step.clone(), json!(round_ms(*done))))
                    .collect(),
            ),
        );
        run.insert(
            "route53_back_s".into(),
            json!(o.route53_back.map(|d| round_ms(d.as_secs_f64()))),
        );
    }
    run.insert(
        "milestones_s".into(),
        Value::Object(
            o.at.iter()
                .map(|(m, d)| (m.key().to_owned(), json!(round_ms(d.as_secs_f64()))))
                .collect(),
        ),
    );
    run.insert(
        "aws_calls".into(),
        json!({
            "route53": o.calls.route53,
            "route53_total": o.calls.route53_total(),
            "route53_refused": o.calls.route53_refused,
            "route53_errors": o.calls.route53_errors,
            "elasticache_creates": o.calls.elasticache_creates,
            "by_action": o.calls.by_action,
        }),
    );
    run.insert("endpoint".into(), json!(o.endpoint));
    run.insert("writes_ok".into(), json!(o.writes_ok));
    run.insert("writes_failed".into(), json!(o.writes_failed));
    Value::Object(run)
}

/// The lab's knobs, and which delay of the story each one is.
fn lab_knobs() -> Value {
    json!({
        "ttl_s": TTL.as_secs_f64(),
        "probe_interval_s": INTERVAL.as_secs_f64(),
        "fall": FALL,
        "provision_delay_s": PROVISION_DELAY.as_secs_f64(),
        "insync_delay_s": INSYNC_DELAY.as_secs_f64(),
        "alarm_period_s": ALARM_PERIOD.as_secs_f64(),
        "alarm_datapoints": format!("{ALARM_PERIODS} of {ALARM_PERIODS} periods"),
        "health_check_delay_s": HEALTH_CHECK_DELAY.as_secs_f64(),
        "which_delays": {
            "detection (outage → down)": "probe interval × fall (3 × 1 s, the agent's own \
                config, not the lab's AWS), plus the 500 ms probe timeout",
            "record: down → record answers the DR cache": "the executor (lease, \
                ChangeResourceRecordSets); provision_delay too with standby none; insync_delay \
                is off this path (the lab's DNS answers the change at once)",
            "health_check: verdict → record answers the standby": "alarm_period (the alarm \
                fires at the end of the period the verdict lands in: 0..1 period, times \
                datapoints_to_alarm) + health_check_delay (the check reads its alarm as it was \
                that long ago)",
            "record answers the standby → application writing": "what is left of the TTL of \
                the application's cached answer (0..TTL), plus its retry pace",
            "health_check: record answers the standby → failover_completed": "the same TTL, in \
                the agent's own resolver: the agent says failover_completed when its dns probe \
                sees the standby",
        },
    })
}

/// What AWS would add to the lab's figures.
fn real_aws_adds() -> Value {
    json!({
        "health_check": "each alarm period is 60 s, not the lab's 1 s: the alarm fires at the \
            end of the period the verdict lands in, up to datapoints_to_alarm × 60 s after it \
            (M of N periods, evaluation_periods N; 1 of 1 here), plus CloudWatch's own \
            evaluation delay; how soon Route 53's health checkers see an alarm's state change \
            is not documented (typically tens of seconds), where the lab waits \
            health_check_delay (1 s); then the record's TTL (30–60 s) in every resolver. \
            Roughly: detection + 60 s + tens of seconds + TTL, against the lab's detection + \
            ~2 s + TTL",
        "record": "ChangeResourceRecordSets reaches Route 53's name servers within its INSYNC \
            time (AWS: generally within 60 s; in the lab the DNS answers at once and \
            insync_delay is 1 s), then the TTL; with standby none, the cache build (about a \
            minute) before it; and while Route 53's control plane is impaired the switch waits \
            for it, for as long as it lasts (undocumented; --route53-down is a lab knob)",
        "both": "detection follows your probe interval × fall, not the lab's 1 s × 3",
    })
}

fn notes() -> Vec<&'static str> {
    vec![
        "times are seconds after the fault was injected, as arrivals at this process: \
         webhook POSTs, the application's write completions, and the lab DNS's answers",
        "comparison: one row per variant; outage_to_dns_answers_standby_s is when the lab's DNS \
         first answered the DR cache (the standby), asked every 50 ms with no cache by the \
         bench (what any resolver gets once its cached answer runs out), the same measure for \
         both switches; outage_to_app_writing_s the application's first write after it",
        "why not failover_completed for the health-check switch's DNS time: the agent emits it \
         when its own dns probe, on its next round, resolves the record and sees the standby: \
         a probe interval later at best, and up to a TTL later when its resolver still holds \
         the old answer (completed_after_dns_s says which); it is reported, not used as the \
         switch's time",
        "agent_route53_api_calls_per_run / agent_elasticache_creates_per_run: calls the lab \
         answered (or refused, 503 while Route 53's API was down) from the outage to the \
         story's last milestone; the agent's start-up readiness pass has ended before the \
         outage, and nothing but the agent calls AWS meanwhile. per_run.aws_calls.by_action \
         lists them all (CloudWatch PutMetricData: the health-check agent's verdicts, one per \
         round)",
        "Route 53's API down: for a record switch, from the outage for route53_down_s, then back \
         while the region stays down (the switch waits for it); for a health-check switch, \
         from right after the template is deployed (before the agent starts) to the end of the \
         run: the switch claims to need Route 53's control plane for nothing after the set-up, \
         so no window is left in which a hidden dependency could be served, any call to it is \
         refused and counted, and its milestones get no Route 53 slack, so a wait on it would \
         fail the run",
        "health_check: one agent, no peers: n = 1, quorum 1 (the calculated check is healthy \
         while n − quorum + 1 = 1 of its 1 children is); the template (valkey-dr template \
         --format json) deployed into the lab through the SDK (valkey_dr_lab::deploy) after \
         valkey-dr standby create, the simple CNAME replaced by the failover pair in one \
         ChangeResourceRecordSets batch",
        "detection: outage → `down`; reaction: `down` → `failover_started` (record); \
         down_to_verdict: `down` → the `verdict` event publishing 1 (health_check); \
         verdict_to_dns: that verdict → the lab's DNS answering the standby; \
         down_to_completed: `down` → `failover_completed`; steps_s: the agent's own \
         detail.steps_ms of `failover_completed` (record)",
        "dns_switched: record: switch_dns done by the agent's journal (wall clock, mapped onto \
         this process's clock at the fault); health_check: dns_answers_dr",
        "executor_before_switch (record): failover_started → switch_dns done, minus the 3 s \
         cache build; with standby = warm nothing is built and nothing is subtracted",
        "app_outage: outage → first successful write after it; app_visible_outage: last \
         successful write before the first failure → first successful write after; \
         app_dns_wait: dns_switched → the application's resolver answers the DR cache (0..TTL, \
         luck); worst_case_app_outage: app_outage − app_dns_wait + TTL",
        "overhead: worst_case_app_outage − (the lab's AWS waits + TTL), the waits being build + \
         insync_delay for a record switch (build: provision_delay on demand, 0 warm) and \
         alarm_period × datapoints + health_check_delay for a health-check one (the alarm's \
         full period, its longest wait: the overhead can come out below what the agent adds by \
         up to one alarm period); overhead_beyond_interval: overhead − one probe interval; \
         raw_overhead: the same with the measured app_outage",
        "step_event_lag_max (record): the largest delay between a step's end in the journal and \
         the arrival of its failover_step webhook",
        "each outage starts outage_offsets_s (seeded, 0..1 interval, the same for every \
         variant) after the application's 2 s warm-up",
        "percentiles are nearest-rank over the completed runs",
    ]
}

/// min / p50 / p95 / max, nearest rank; nulls without samples.
pub(super) fn stats(values: &[f64]) -> Value {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let pick = |p: f64| -> Value {
        if sorted.is_empty() {
            Value::Null
        } else {
            json!(round_ms(sorted[super::rank(sorted.len(), p)]))
        }
    };
    json!({ "min": pick(0.0), "p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).map(f64::from).collect();
        let s = stats(&values);
        assert_eq!(s["min"], 1.0);
        assert_eq!(s["p50"], 11.0);
        assert_eq!(s["p95"], 19.0);
        assert_eq!(s["max"], 20.0);
        assert_eq!(stats(&[])["p50"], Value::Null);
    }

    #[test]
    fn each_switch_runs_with_route53_up_and_down_its_own_way() {
        let both = [Switch::Record, Switch::HealthCheck];
        let names: Vec<String> = Variant::all(&both, Some(Duration::from_secs(20)))
            .iter()
            .map(Variant::name)
            .collect();
        assert_eq!(
            names,
            [
                "record+route53_up",
                "record+route53_down_20s",
                "health_check+route53_up",
                "health_check+route53_down_throughout"
            ]
        );
        assert_eq!(Variant::all(&both, None).len(), 2);
    }

    #[test]
    fn figure_names_are_unique() {
        let names: std::collections::BTreeSet<_> = figures().iter().map(|(n, _)| *n).collect();
        assert_eq!(names.len(), figures().len());
    }
}
