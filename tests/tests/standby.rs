//! The warm standby end to end (`[watch.dr] standby = "warm"`): `valkey-dr standby create`
//! builds it in the lab's DR region, the real daemon probes it every round on the `standby`
//! path and checks it for readiness, and a region outage switches the record to it with no
//! build. The lab's AWS call log is the witness of what was created and changed.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use serde_json::Value;
use support::{
    Agent, TestLab, Webhook, cname_changes, create_attempts, region_outage, run_bounded_within,
    wait_until,
};
use valkey_dr::executor::{Journal, Phase, Step};
use valkey_dr_lab::config::DR_CACHE;
use valkey_dr_lab::{AwsService, Fault, PRIMARY_CACHE, PRIMARY_REGION};
use valkey_dr_probes::same_name;

const WATCH: &str = "sessions";
const HEALTHY_BOUND: Duration = Duration::from_secs(20);
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
const EVENT_BOUND: Duration = Duration::from_secs(15);
/// `standby create` in the lab: the build (1 s) and a probe round, with a margin.
const CLI_BOUND: Duration = Duration::from_secs(90);
/// The edit that makes a config's watch keep a warm standby.
const WARM: (&str, &str) = (
    "create_timeout = \"5m\"\n",
    "create_timeout = \"5m\"\nstandby = \"warm\"\n",
);

struct Setup {
    lab: TestLab,
    hook: Webhook,
    config: PathBuf,
    state_dir: PathBuf,
}

/// A lab with a 5 s record TTL, a webhook receiver, and an auto-failover agent.toml with a
/// warm standby, `edits` on top.
async fn setup(edits: &[(&str, &str)]) -> Setup {
    let lab = TestLab::start_with(|o| {
        o.ttl = Duration::from_secs(5);
        o.insync_delay = Duration::from_millis(500);
        o.provision_delay = Duration::from_secs(1);
    })
    .await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let mut all: Vec<(&str, &str)> = vec![
        ("ttl = \"5s\"", "ttl = \"30s\""),
        ("reminder_interval = \"1m\"\n", &notify),
        ("mode = \"alert-only\"", "mode = \"auto-failover\""),
        WARM,
    ];
    all.extend_from_slice(edits);
    let config = lab.config_variant("standby.toml", &all);
    let state_dir = lab.dir.path().join("state");
    Setup {
        lab,
        hook,
        config,
        state_dir,
    }
}

struct Cli {
    code: i32,
    output: String,
}

impl Setup {
    /// `valkey-dr <args> --config <config>`, nobody at a terminal.
    async fn cli(&self, config: &std::path::Path, args: &[&str]) -> Cli {
        let mut command = tokio::process::Command::new(support::agent_bin());
        command
            .args(args)
            .arg("--config")
            .arg(config)
            .env_remove("VALKEY_DR_CONFIG")
            .stdin(Stdio::null());
        let out = run_bounded_within(command, CLI_BOUND).await;
        Cli {
            code: out.status.code().unwrap_or(-1),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }

    /// `valkey-dr standby create`, which must succeed.
    async fn create_standby(&self) -> String {
        let run = self.cli(&self.config, &["standby", "create"]).await;
        assert_eq!(run.code, 0, "{}", run.output);
        assert!(run.output.contains("is available at"), "{}", run.output);
        self.endpoint(DR_CACHE)
    }

    fn endpoint(&self, cache: &str) -> String {
        self.lab
            .lab
            .current_info()
            .cache(cache)
            .unwrap_or_else(|| panic!("the lab has no cache {cache}"))
            .endpoint
            .clone()
    }

    /// Starts the agent and waits (bounded) for it to be healthy with its standby serving.
    async fn agent_with_standby(&self) -> Agent {
        let agent = Agent::start(&self.config, &self.state_dir, &[]).await;
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "never healthy:\n{}",
            agent.log_text()
        );
        let serving = wait_until(EVENT_BOUND, || async {
            standby_path(&agent).await.is_some_and(|p| p["ok"] == true)
        })
        .await;
        assert!(
            serving,
            "the standby path never served: {:?}\n{}",
            standby_path(&agent).await,
            agent.log_text()
        );
        agent
    }

    /// The first event that `matches`, waiting (bounded) for it.
    async fn wait_event(&self, limit: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        let (hook, matches) = (&self.hook, &matches);
        wait_until(limit, move || async move {
            hook.events().iter().any(|(_, e)| matches(e))
        })
        .await;
        self.hook
            .events()
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| matches(e))
    }

    fn journal(&self) -> Journal {
        let text = std::fs::read_to_string(self.state_dir.join(format!("failover-{WATCH}.json")))
            .expect("the failover journal");
        serde_json::from_str(&text).expect("a journal")
    }

    /// A connection straight to a cache's valkey-server, as the application's data is seen.
    async fn sessions_of(&self, cache: &str) -> redis::aio::MultiplexedConnection {
        support::sessions_of(&self.lab, cache).await
    }

    async fn set(&self, cache: &str, key: &str) {
        let mut conn = self.sessions_of(cache).await;
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("user=alice")
            .query_async(&mut conn)
            .await
            .expect("SET");
    }

    async fn holds(&self, cache: &str, key: &str) -> bool {
        let mut conn = self.sessions_of(cache).await;
        redis::cmd("EXISTS")
            .arg(key)
            .query_async::<i64>(&mut conn)
            .await
            .expect("EXISTS")
            == 1
    }
}

/// The `standby` path of the watch's last round in `/status`.
async fn standby_path(agent: &Agent) -> Option<Value> {
    let status = support::watch_status(agent, WATCH).await?;
    status["last_observation"]["paths"]
        .as_array()?
        .iter()
        .find(|p| p["path"] == "standby")
        .cloned()
}

/// Waits (bounded) until the watch's `standby` readiness check in `/status` has `result`,
/// and returns it as it was last seen.
async fn standby_check_becomes(agent: &Agent, result: &str) -> Value {
    let seen = wait_until(EVENT_BOUND, || async {
        standby_check(agent)
            .await
            .is_some_and(|c| c["result"] == result)
    })
    .await;
    let check = standby_check(agent).await.unwrap_or_default();
    assert!(
        seen,
        "the standby check never became {result}: {check:#}\n{}",
        agent.log_text()
    );
    check
}

/// The watch's `standby` readiness check in `/status`.
async fn standby_check(agent: &Agent) -> Option<Value> {
    support::readiness_check(agent, WATCH, "standby").await
}

fn entry_at(journal: &Journal, step: Step, phase: Phase) -> SystemTime {
    journal
        .entry(step, phase)
        .unwrap_or_else(|| panic!("no {step:?} {phase:?} in {:?}", journal.entries))
        .at
}

fn rfc3339(v: &Value) -> SystemTime {
    humantime::parse_rfc3339(v.as_str().expect("a time")).expect("RFC 3339")
}

/// Issue 20: with a warm standby, a region outage switches the record to it within a second
/// of detection (the failover's start, at the `down` verdict), with no cache built (the only
/// create is `standby create`'s) and, after the outage, no ElastiCache call but the reads of
/// readiness and the witness: the journal's provision says no API was called.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outage_switches_to_the_warm_standby_within_a_second_of_detection_with_no_build() {
    let s = setup(&[]).await;
    let standby = s.create_standby().await;
    assert_eq!(create_attempts(&s.lab.lab.calls()).len(), 1);
    let agent = s.agent_with_standby().await;
    let check = standby_check_becomes(&agent, "ok").await;
    assert!(
        check["found"]
            .as_str()
            .unwrap_or("")
            .contains("matches [watch.dr]"),
        "{check:#}"
    );

    let before_outage = s.lab.lab.calls().len();
    s.lab.fault(region_outage()).await;
    let end = s
        .wait_event(FAILOVER_BOUND, |e| {
            matches!(
                e["event"].as_str(),
                Some("failover_completed" | "failover_failed" | "stood_down")
            )
        })
        .await
        .unwrap_or_else(|| panic!("no end: {:?}\n{}", s.hook.names(), agent.log_text()));
    assert_eq!(
        end["event"],
        "failover_completed",
        "{end:#}\n{}",
        agent.log_text()
    );
    assert!(
        same_name(end["detail"]["endpoint"].as_str().unwrap_or(""), &standby),
        "{end:#}"
    );

    let calls = s.lab.lab.calls();
    assert_eq!(
        create_attempts(&calls).len(),
        1,
        "no create but standby create's"
    );
    let mutations: Vec<&str> = calls[before_outage..]
        .iter()
        .filter(|c| c.service == AwsService::Elasticache && !c.action.starts_with("Describe"))
        .filter(|c| c.action != "ListTagsForResource")
        .map(|c| c.action.as_str())
        .collect();
    assert!(
        mutations.is_empty(),
        "the failover asked the DR region: {mutations:?}"
    );
    assert_eq!(cname_changes(&calls).len(), 1);

    let journal = s.journal();
    let provision = journal
        .entry(Step::Provision, Phase::Done)
        .expect("provision done");
    assert!(
        provision.detail.contains("no API called"),
        "{}",
        provision.detail
    );
    // Detection is the verdict at the end of the `fall`-th failed round (the `down` event's
    // `at` is when that round began, a probe timeout earlier): the failover starts then.
    let detected = s
        .wait_event(EVENT_BOUND, |e| e["event"] == "failover_started")
        .await
        .expect("a failover_started event");
    let switched = entry_at(&journal, Step::SwitchDns, Phase::Done);
    let after_detection = switched
        .duration_since(rfc3339(&detected["at"]))
        .unwrap_or_default();
    eprintln!(
        "detection -> record switched to the warm standby: {after_detection:?}; steps (ms): {:?}",
        journal.timings()
    );
    assert!(
        after_detection <= Duration::from_secs(1),
        "the switch came {after_detection:?} after detection\n{:#?}",
        journal.entries
    );
}

/// Issue 20: a standby that stops serving makes the watch `not_ready` naming `standby`
/// within two probe rounds; it is ready again once the standby serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_standby_is_not_ready_within_two_rounds() {
    let s = setup(&[]).await;
    s.create_standby().await;
    let agent = s.agent_with_standby().await;
    s.lab
        .fault(Fault::Kill {
            cache: DR_CACHE.to_owned(),
        })
        .await;
    let killed = tokio::time::Instant::now();
    let named = wait_until(EVENT_BOUND, || async {
        s.hook.events().iter().any(|(at, e)| {
            *at >= killed
                && e["event"] == "not_ready"
                && e["detail"]["failing"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|c| c == "standby"))
        })
    })
    .await;
    assert!(
        named,
        "no not_ready naming standby: {:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    let took = s
        .hook
        .events()
        .iter()
        .find(|(at, e)| *at >= killed && e["event"] == "not_ready")
        .map(|(at, _)| at.duration_since(killed))
        .unwrap_or_default();
    eprintln!("standby killed -> not_ready naming it: {took:?}");
    // The lab probes every second: two rounds, and the webhook's delivery.
    assert!(took <= Duration::from_secs(3), "{took:?}");
    let check = standby_check_becomes(&agent, "fail").await;
    assert!(
        check["found"]
            .as_str()
            .unwrap_or("")
            .contains("does not serve"),
        "{check:#}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap_or("")
            .contains("valkey-dr standby"),
        "{check:#}"
    );

    s.lab
        .fault(Fault::Clear {
            cache: DR_CACHE.to_owned(),
        })
        .await;
    standby_check_becomes(&agent, "ok").await;
}

/// Issue 20: a standby that differs from `[watch.dr]` (built before the spec changed) is
/// `not_ready`, naming what differs and how to rebuild it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_whose_spec_drifted_is_not_ready() {
    let s = setup(&[]).await;
    s.create_standby().await;
    // The spec changes after the standby was built: snapshots kept 7 days, not 1.
    let changed = s.lab.config_variant(
        "drifted.toml",
        &[
            ("ttl = \"5s\"", "ttl = \"30s\""),
            ("mode = \"alert-only\"", "mode = \"auto-failover\""),
            WARM,
            (
                "snapshot_retention_limit = 1",
                "snapshot_retention_limit = 7",
            ),
        ],
    );
    let run = s.cli(&changed, &["preflight", "--output", "json"]).await;
    // The JSON report on stdout, then the finding's line on stderr.
    let json = run.output.find('{').map_or("", |i| &run.output[i..]);
    let report: Value = serde_json::Deserializer::from_str(json)
        .into_iter()
        .next()
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("no JSON: {}", run.output));
    let check = report["checks"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["check"] == "standby"))
        .cloned()
        .unwrap_or_else(|| panic!("no standby check: {report:#}"));
    assert_eq!(check["result"], "fail", "{check:#}");
    let found = check["found"].as_str().unwrap_or("");
    assert!(
        found.contains("snapshot retention: it has 1 days, [watch.dr] says 7 days"),
        "{check:#}"
    );
    assert!(
        check["fix"]
            .as_str()
            .unwrap_or("")
            .contains("standby delete"),
        "{check:#}"
    );
    assert_eq!(run.code, 2, "CRITICAL: {}", run.output);
}

/// Issue 20: `kill -9` in the middle of a failover to the warm standby, then a restart: the
/// journal resumes it to exactly one switch, still with no build.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_the_standby_killed_mid_switch_resumes_to_one_switch() {
    let s = setup(&[]).await;
    let standby = s.create_standby().await;
    let first = Agent::start(
        &s.config,
        &s.state_dir,
        &[("VALKEY_DR_TEST_CRASH_AT", "switch_dns:started")],
    )
    .await;
    assert!(
        first.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "{}",
        first.log_text()
    );
    let serving = wait_until(EVENT_BOUND, || async {
        standby_path(&first).await.is_some_and(|p| p["ok"] == true)
    })
    .await;
    assert!(serving, "{}", first.log_text());
    s.lab.fault(region_outage()).await;
    let mut first = first;
    let exit = tokio::time::timeout(FAILOVER_BOUND, first.child.wait())
        .await
        .expect("the crash hook fired")
        .expect("wait");
    assert!(!exit.success(), "{exit:?}");
    let crashed = s.journal();
    assert!(crashed.outcome.is_none(), "{crashed:?}");
    assert_eq!(
        crashed
            .plan
            .standby
            .as_ref()
            .map(|(h, _)| same_name(h, &standby)),
        Some(true)
    );

    let second = Agent::start(&s.config, &s.state_dir, &[]).await;
    assert!(
        second
            .wait_state(WATCH, "failed_over", FAILOVER_BOUND)
            .await,
        "{}",
        second.log_text()
    );
    let calls = s.lab.lab.calls();
    assert_eq!(create_attempts(&calls).len(), 1, "standby create's only");
    assert_eq!(cname_changes(&calls).len(), 1, "one switch");
    let journal = s.journal();
    assert_eq!(journal.runs, 2);
    assert!(journal.complete());
    let record = support::record_target(&s.lab).await.unwrap_or_default();
    assert!(same_name(&record, &standby), "{record}");
}

/// Issue 20: after a failback from the warm standby, the standby is emptied (it is the
/// standby again) and the old primary too: no session of either period comes back later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failback_empties_the_standby_once_the_record_points_back() {
    let s = setup(&[]).await;
    let standby = s.create_standby().await;
    let agent = s.agent_with_standby().await;
    s.set(PRIMARY_CACHE, "session:before").await;
    s.lab.fault(region_outage()).await;
    assert!(
        agent.wait_state(WATCH, "failed_over", FAILOVER_BOUND).await,
        "{}",
        agent.log_text()
    );
    s.set(DR_CACHE, "session:dr-period").await;
    s.lab
        .fault(Fault::RegionRestore {
            region: PRIMARY_REGION.to_owned(),
        })
        .await;
    // The failback waits for the primary's rise rounds.
    let mut done = None;
    for _ in 0..20 {
        let run = s.cli(&s.config, &["failback", "--yes"]).await;
        if run.code == 0 {
            done = Some(run);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let run = done.expect("the failback succeeds once the primary is back");
    assert!(
        !s.holds(PRIMARY_CACHE, "session:before").await,
        "the old primary was emptied"
    );
    assert!(
        !s.holds(DR_CACHE, "session:dr-period").await,
        "the standby was emptied:\n{}",
        run.output
    );
    let record = support::record_target(&s.lab).await.unwrap_or_default();
    assert!(!same_name(&record, &standby), "{record}");
    let failback: Journal = serde_json::from_str(
        &std::fs::read_to_string(s.state_dir.join(format!("failback-{WATCH}.json"))).unwrap(),
    )
    .unwrap();
    let emptied = failback
        .entry(Step::EmptyStandby, Phase::Done)
        .unwrap_or_else(|| panic!("no empty_standby: {:#?}", failback.entries));
    assert!(
        emptied.detail.contains("it is the standby again"),
        "{}",
        emptied.detail
    );
    // Still there, and ready again as the standby.
    assert!(s.lab.lab.current_info().cache(DR_CACHE).is_some());
}
