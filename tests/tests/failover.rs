//! Failover and failback end to end: the real `valkey-dr` binary (`run`, `failover`,
//! `failback`, `status`) against a lab of its own per test, a local webhook receiver recording
//! every event, and the lab's AWS call log as the witness of what was created and changed.
//!
//! Every lab serves the record with a 5 s TTL, so that verify_dns (which honours the old
//! answer's TTL in the agent's resolver cache, as an application would) waits only seconds;
//! the agent config asks for 30 s, the least it allows, so the new CNAME carries TTL 30.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region};
use aws_sdk_elasticache::config::Credentials;
use serde_json::Value;
use support::{
    Agent, TestLab, Webhook, cname_changes, creates, region_outage, run_bounded_within,
    touches_record, wait_until,
};
use valkey_dr::executor::api::{Change, DnsApi as _, RecordSet};
use valkey_dr::executor::sdk::SdkDns;
use valkey_dr::executor::{FailoverOutcome, Journal, Phase, Step};
use valkey_dr_lab::config::{DR_CACHE, DR_REGION, HOSTED_ZONE_ID};
use valkey_dr_lab::{AwsService, Call, Fault, PRIMARY_CACHE, PRIMARY_REGION, RECORD, SPARE_CACHE};
use valkey_dr_probes::same_name;

const WATCH: &str = "sessions";
/// The TTL the agent writes with the new CNAME (the config's `ttl`).
const NEW_TTL: u32 = 30;
/// The TTL the lab serves the record with until the agent changes it.
const LAB_TTL: u32 = 5;
/// Until the first healthy verdict: a few 1 s rounds, with slack for a loaded machine.
const HEALTHY_BOUND: Duration = Duration::from_secs(20);
/// Down takes ~4.5 s (fall 3 at a 1 s interval); the rest is slack for two loaded cores.
const DOWN_BOUND: Duration = Duration::from_secs(15);
/// Down plus a whole failover (~8–12 s here), with room for a loaded machine.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// Webhook deliveries and `/status` trail the state they report by a little.
const EVENT_BOUND: Duration = Duration::from_secs(10);
/// A CLI failover or failback: provisioning plus the record's TTL (30 s once the DR record
/// is in an agent's resolver cache), with a margin.
const CLI_BOUND: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    AlertOnly,
    AutoFailover,
}

struct Setup {
    lab: TestLab,
    hook: Webhook,
    config: PathBuf,
    state_dir: PathBuf,
}

/// A lab with a 5 s record TTL and quick Route 53 changes, a webhook receiver, and an
/// agent.toml variant in `mode` that notifies it, with `edits` applied on top.
async fn setup(mode: Mode, provision_delay: Duration, edits: &[(&str, &str)]) -> Setup {
    setup_with(mode, |o| o.provision_delay = provision_delay, edits).await
}

/// [`setup`] with the lab's options adjusted by `lab`.
async fn setup_with(
    mode: Mode,
    lab: impl FnOnce(&mut valkey_dr_lab::LabOptions),
    edits: &[(&str, &str)],
) -> Setup {
    let lab = TestLab::start_with(|o| {
        o.ttl = Duration::from_secs(u64::from(LAB_TTL));
        o.insync_delay = Duration::from_millis(500);
        lab(o);
    })
    .await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let mut all: Vec<(&str, &str)> = vec![
        ("ttl = \"5s\"", "ttl = \"30s\""),
        ("reminder_interval = \"1m\"\n", &notify),
    ];
    if mode == Mode::AutoFailover {
        all.push(("mode = \"alert-only\"", "mode = \"auto-failover\""));
    }
    all.extend_from_slice(edits);
    let config = lab.config_variant("failover.toml", &all);
    let state_dir = lab.dir.path().join("state");
    Setup {
        lab,
        hook,
        config,
        state_dir,
    }
}

impl Setup {
    /// Starts the agent and waits (bounded) for its first healthy verdict.
    async fn healthy_agent(&self) -> Agent {
        let agent = Agent::start(&self.config, &self.state_dir, &[]).await;
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "never healthy:\n{}",
            agent.log_text()
        );
        agent
    }

    async fn fault(&self, fault: Fault) {
        self.lab.fault(fault).await;
    }

    /// The first event that `matches`, waiting (bounded) for it.
    async fn wait_event(&self, limit: Duration, matches: impl Fn(&Value) -> bool) -> Option<Value> {
        let hook = &self.hook;
        let matches = &matches;
        wait_until(limit, move || async move {
            hook.events().iter().any(|(_, e)| matches(e))
        })
        .await;
        hook.events()
            .into_iter()
            .map(|(_, e)| e)
            .find(|e| matches(e))
    }

    /// Takes the primary region down and waits (bounded) for the agent's failover to complete
    /// and the watch to be `failed_over`; returns the `failover_completed` event.
    async fn outage_to_failed_over(&self, agent: &Agent) -> Value {
        self.fault(region_outage()).await;
        let end = self.failover_end(agent).await;
        assert_eq!(
            end["event"],
            "failover_completed",
            "{end:#}\n{}",
            agent.log_text()
        );
        assert!(
            agent.wait_state(WATCH, "failed_over", EVENT_BOUND).await,
            "{:?}\n{}",
            agent.state(WATCH).await,
            agent.log_text()
        );
        end
    }

    /// How the failover ended: `failover_completed`, `failover_failed` or `stood_down`.
    async fn failover_end(&self, agent: &Agent) -> Value {
        self.failover_end_within(agent, FAILOVER_BOUND).await
    }

    /// [`Setup::failover_end`], waiting at most `limit`.
    async fn failover_end_within(&self, agent: &Agent, limit: Duration) -> Value {
        self.wait_event(limit, |e| {
            matches!(
                e["event"].as_str(),
                Some("failover_completed" | "failover_failed" | "stood_down")
            )
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "the failover never ended: {:?}\n{}",
                self.hook.names(),
                agent.log_text()
            )
        })
    }

    /// The first retrying event that says only Route 53 holds the failover (the DR cache is
    /// built and verified), waiting (bounded) for it.
    async fn held_by_route53(&self, agent: &Agent) -> Value {
        self.wait_event(FAILOVER_BOUND, |e| {
            e["event"] == "failover_step"
                && e["detail"]["phase"] == "retrying"
                && e["detail"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("is built and verified at"))
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "never held by Route 53 alone: {:?}\n{}",
                self.hook.names(),
                agent.log_text()
            )
        })
    }

    /// Every event named `name`, in arrival order.
    fn events(&self, name: &str) -> Vec<Value> {
        self.hook
            .events()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// A Route 53 client of the lab's API, as another agent or an operator would use.
    async fn route53(&self) -> SdkDns {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(&self.lab.lab.info().aws_endpoint)
            .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
            .load()
            .await;
        SdkDns::new(&sdk)
    }

    /// The record as Route 53 (the lab's API) holds it.
    async fn record(&self) -> Option<RecordSet> {
        support::read_record(&self.route53().await, HOSTED_ZONE_ID, RECORD).await
    }

    /// Asserts that Route 53 holds the record as one CNAME to `endpoint` with `ttl`.
    async fn assert_record(&self, endpoint: &str, ttl: u32) {
        let record = self.record().await.expect("the record exists");
        assert!(
            record.values.len() == 1 && same_name(&record.values[0], endpoint),
            "{RECORD} is {record:?}, not a CNAME to {endpoint}"
        );
        assert_eq!(record.ttl, ttl, "{record:?}");
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

    fn calls(&self) -> Vec<Call> {
        self.lab.lab.calls()
    }

    /// A connection straight to a cache's valkey-server (its unix socket, behind the front),
    /// as an application's session store sees the data.
    async fn sessions_of(&self, cache: &str) -> redis::aio::MultiplexedConnection {
        support::sessions_of(&self.lab, cache).await
    }

    /// Logs a user in on the primary: a session key, as the application writes one.
    async fn log_in_on_primary(&self, session: &str) {
        let mut conn = self.sessions_of(PRIMARY_CACHE).await;
        let _: () = redis::cmd("SET")
            .arg(session)
            .arg("user=alice")
            .query_async(&mut conn)
            .await
            .expect("SET");
    }

    /// Whether the primary still holds `session`.
    async fn primary_holds(&self, session: &str) -> bool {
        let mut conn = self.sessions_of(PRIMARY_CACHE).await;
        redis::cmd("EXISTS")
            .arg(session)
            .query_async::<i64>(&mut conn)
            .await
            .expect("EXISTS")
            == 1
    }
}

/// A session the old primary held when the region failed: logged out during the DR period,
/// it must not be valid again after the failback.
const OLD_SESSION: &str = "session:3f2a9c";

fn region_restore() -> Fault {
    Fault::RegionRestore {
        region: PRIMARY_REGION.to_owned(),
    }
}

fn api_error(service: AwsService, action: &str, code: &str, times: u32) -> Fault {
    Fault::ApiError {
        service,
        action: action.to_owned(),
        code: code.to_owned(),
        times: Some(times),
        lasting: None,
    }
}

/// An `api-error` that fails every call of `action` for `lasting`, from now.
fn api_error_for(service: AwsService, action: &str, code: &str, lasting: Duration) -> Fault {
    Fault::ApiError {
        service,
        action: action.to_owned(),
        code: code.to_owned(),
        times: None,
        lasting: Some(lasting),
    }
}

/// Calls of `action` that the lab refused with `code`.
fn refused<'c>(calls: &'c [Call], action: &str, code: &str) -> Vec<&'c Call> {
    calls
        .iter()
        .filter(|c| c.action == action && c.error_code.as_deref() == Some(code))
        .collect()
}

/// A `failover_step` event for `step` in `phase`.
fn step_event(step: &'static str, phase: &'static str) -> impl Fn(&Value) -> bool {
    move |e| {
        e["event"] == "failover_step"
            && e["detail"]["step"] == step
            && e["detail"]["phase"] == phase
    }
}

/// Calls that create, delete or change anything, whether or not they succeeded.
fn mutating(calls: &[Call]) -> Vec<&Call> {
    calls
        .iter()
        .filter(|c| {
            matches!(
                c.action.as_str(),
                "CreateServerlessCache" | "DeleteServerlessCache" | "ChangeResourceRecordSets"
            )
        })
        .collect()
}

/// The watch's `/status` entry.
async fn watch_status(agent: &Agent) -> Value {
    support::watch_status(agent, WATCH)
        .await
        .unwrap_or_else(|| panic!("no /status entry for {WATCH}"))
}

/// Waits (bounded) until `/status` shows the last failover's `result`, and returns the
/// watch's entry: `/status` is rebuilt every 250 ms, so it may trail the webhook a little.
/// Waits (at most `limit`) until the watch has run `more` rounds after round `from`.
async fn more_rounds(agent: &Agent, from: u64, more: u64, limit: Duration) -> bool {
    wait_until(limit, || async {
        watch_status(agent).await["rounds"]
            .as_u64()
            .is_some_and(|r| r >= from + more)
    })
    .await
}

async fn failover_result_shown(agent: &Agent, result: &str) -> Value {
    let shown = wait_until(EVENT_BOUND, || async {
        watch_status(agent).await["last_failover"]["outcome"]["result"] == result
    })
    .await;
    let status = watch_status(agent).await;
    assert!(
        shown,
        "/status never showed a {result} failover: {status:#}"
    );
    status
}

/// Asserts that `expected` appears in `names` in this order (other events may come between).
fn assert_in_order(names: &[String], expected: &[&str]) {
    let mut at = 0;
    for want in expected {
        match names[at..].iter().position(|n| n == want) {
            Some(i) => at += i + 1,
            None => panic!("{want} missing (or out of order) in {names:?}; expected {expected:?}"),
        }
    }
}

struct Cli {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// `valkey-dr <args> --config <config>` with stdin not a terminal (nobody to confirm).
async fn cli(config: &Path, args: &[&str]) -> Cli {
    cli_with(config, args, &[]).await
}

/// [`cli`] with `env` set.
async fn cli_with(config: &Path, args: &[&str], env: &[(&str, &str)]) -> Cli {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .envs(env.iter().copied())
        .stdin(Stdio::null());
    let out = run_bounded_within(command, CLI_BOUND).await;
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `valkey-dr status --output json` for the watch.
async fn status_json(config: &Path) -> Value {
    let run = cli(config, &["status", "--output", "json"]).await;
    let v: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("status printed no JSON ({e}): {}", run.output()));
    v["watches"]
        .as_array()
        .and_then(|ws| ws.iter().find(|w| w["name"] == WATCH))
        .cloned()
        .unwrap_or_else(|| panic!("no watch {WATCH} in {v:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_outage_fails_over_once_and_the_record_serves_from_the_dr_cache() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    // As on a host with no AWS_* variable: the lab's config names its credentials file.
    let agent = Agent::start_clean(&s.config, &s.state_dir).await;
    assert!(
        agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "never healthy:\n{}",
        agent.log_text()
    );
    let end = s.outage_to_failed_over(&agent).await;

    // The lab's side: one cache built in the DR region, one swap of the record.
    let dr = s.endpoint(DR_CACHE);
    let calls = s.calls();
    let created = creates(&calls);
    assert_eq!(created.len(), 1, "{created:#?}");
    assert_eq!(created[0].region.as_deref(), Some(DR_REGION));
    assert_eq!(created[0].request["cache_name"], DR_CACHE);
    let changed = cname_changes(&calls);
    assert_eq!(changed.len(), 1, "{changed:#?}");
    s.assert_record(&dr, NEW_TTL).await;

    // The events: the verdict, the intent, then every step in order, then the end.
    let names = s.hook.names();
    assert_in_order(
        &names,
        &[
            "down",
            "failover_intent",
            "failover_started",
            "failover_completed",
        ],
    );
    let intent = &s.events("failover_intent")[0];
    assert_eq!(intent["detail"]["fails_over"], true, "{intent:#}");
    assert_eq!(intent["detail"]["would_fail_over"], false, "{intent:#}");
    let started = &s.events("failover_started")[0];
    assert_eq!(started["detail"]["trigger"], "auto", "{started:#}");
    assert_eq!(started["previous_state"], "down", "{started:#}");
    let id = started["failover_id"].as_str().expect("a failover id");
    let done: Vec<Value> = s
        .events("failover_step")
        .into_iter()
        .filter(|e| e["detail"]["phase"] == "done")
        .collect();
    let done_steps: Vec<&str> = done
        .iter()
        .map(|e| e["detail"]["step"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(done_steps, Step::ALL.map(Step::as_str), "{names:?}");
    assert!(done.iter().all(|e| e["failover_id"] == id), "{done:#?}");
    let first_step = names.iter().position(|n| n == "failover_step").unwrap();
    let last_step = names.iter().rposition(|n| n == "failover_step").unwrap();
    assert!(
        names.iter().position(|n| n == "failover_started").unwrap() < first_step
            && last_step
                < names
                    .iter()
                    .position(|n| n == "failover_completed")
                    .unwrap(),
        "steps between started and completed: {names:?}"
    );
    let completed = &end["detail"];
    assert_eq!(end["failover_id"], id);
    assert_eq!(completed["endpoint"], dr.as_str(), "{end:#}");
    assert_eq!(completed["runs"], 1);
    let steps_ms = completed["steps_ms"].as_object().expect("steps_ms");
    for step in Step::ALL {
        assert!(
            steps_ms.get(step.as_str()).is_some_and(Value::is_u64),
            "no time for {} in {end:#}",
            step.as_str()
        );
    }
    assert!(completed["total_ms"].as_u64().is_some_and(|t| t > 0));
    assert_eq!(s.hook.count("failover_failed"), 0, "{names:?}");

    // The agent now watches the DR cache.
    let status = watch_status(&agent).await;
    assert_eq!(status["served_by_dr"], true, "{status:#}");
    assert!(
        status["active_endpoint"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{dr}:"))),
        "{status:#}"
    );
    support::assert_null_field(&status, "running");
    // The metrics say it too: one completed failover, and how long each step took.
    let (_, metrics) = support::agent_get(agent.admin().expect("admin address"), "/metrics")
        .await
        .expect("/metrics answers");
    let sample = |prefix: &str| -> Option<f64> {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(prefix)?.trim().parse().ok())
    };
    assert_eq!(
        sample("valkey_dr_failovers_total{watch=\"sessions\",result=\"completed\"}"),
        Some(1.0),
        "{metrics}"
    );
    for step in valkey_dr::executor::Step::ALL.map(|s| s.as_str()) {
        let seconds = sample(&format!(
            "valkey_dr_failover_step_seconds{{watch=\"sessions\",step=\"{step}\"}}"
        ));
        assert!(seconds.is_some_and(|s| s >= 0.0), "{step}: {metrics}");
    }
    assert!(
        sample("valkey_dr_failover_step_seconds{watch=\"sessions\",step=\"wait_available\"}")
            .is_some_and(|s| s >= 0.5),
        "the cache build (provision_delay) shows in wait_available: {metrics}"
    );
    assert_eq!(status["last_failover"]["failover_id"], id);
    assert_eq!(status["last_failover"]["outcome"]["result"], "completed");
    assert_eq!(status["last_failover"]["runs"], 1);
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    assert!(journal.complete());
    assert_eq!(journal.runs, 1);

    // An application's write through the record lands on the DR cache.
    let run = support::check(&s.config, &[]).await;
    let path = run.path(0, "dns");
    assert_eq!(path["ok"], true, "{}", run.output);
    assert!(
        path["target"].as_str().is_some_and(|t| same_name(t, &dr)),
        "{}",
        run.output
    );
    let dr_address = s.lab.lab.current_info().cache(DR_CACHE).unwrap().address;
    assert_eq!(path["address"], dr_address.to_string(), "{}", run.output);
    for step in ["set", "get"] {
        assert!(path["steps_ms"][step].is_number(), "{}", run.output);
    }
    // The agent's own probes followed the record: both paths now keep their connections to
    // the DR cache's front (made afresh when the target changed, then reused).
    let dr_address = dr_address.to_string();
    let followed = |status: &Value| {
        status["last_observation"]["paths"]
            .as_array()
            .is_some_and(|paths| {
                paths.len() == 2
                    && paths.iter().all(|p| {
                        p["ok"] == true
                            && p["address"] == dr_address.as_str()
                            && p["connection"] == "reused"
                    })
            })
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            followed(&watch_status(&agent).await)
        })
        .await,
        "the probes did not follow the record to {dr_address}: {:#}",
        watch_status(&agent).await["last_observation"]
    );
    // Every call the failover (and status, and check) made is one AWS's models accept.
    support::assert_botocore_conformant(&s.lab).await;
}

/// Issue 20: us-east-1 goes down and takes Route 53's API with it. Nothing before the build
/// waits on Route 53: the DR cache is built and verified while no Route 53 call succeeds,
/// people hear that only Route 53 holds the failover (the event, `/status`, the metric),
/// and the record moves within 2 s of Route 53 answering again, with one create and one
/// change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_route53_down_the_cache_is_built_first_and_the_record_moves_when_it_answers() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    let before_outage = s.calls().last().map_or(0, |c| c.seq);
    s.fault(Fault::RegionOutage {
        region: PRIMARY_REGION.to_owned(),
        route53: true,
    })
    .await;
    let held = s.held_by_route53(&agent).await;
    let said = held["detail"]["detail"].as_str().unwrap_or_default();
    assert!(
        said.contains("Route 53's API has not answered for")
            && said.contains("the record moves as soon as it does"),
        "{held:#}"
    );
    assert_eq!(held["detail"]["step"], "lease", "{held:#}");
    let status = wait_until(EVENT_BOUND, || async {
        watch_status(&agent).await["last_failover"]["retrying"]["step"] == "lease"
    })
    .await;
    assert!(status, "{:#}", watch_status(&agent).await);
    let admin = agent.admin().expect("the admin address");
    let (_, metrics) = support::agent_get(admin, "/metrics")
        .await
        .expect("/metrics");
    let since = metrics
        .lines()
        .find(|l| {
            l.starts_with("valkey_dr_failover_retrying_since_timestamp_seconds{watch=\"sessions\"}")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .expect("the retrying metric");
    assert!(
        since > 1.0e9,
        "a Unix time while Route 53 holds it: {since}"
    );

    // Nothing of Route 53 succeeded between the outage and the build.
    let calls = s.calls();
    let created = creates(&calls);
    assert_eq!(created.len(), 1, "{created:#?}");
    let route53_before: Vec<&Call> = calls
        .iter()
        .filter(|c| {
            c.service == AwsService::Route53
                && (before_outage + 1..created[0].seq).contains(&c.seq)
                && c.succeeded()
        })
        .collect();
    assert!(route53_before.is_empty(), "{route53_before:#?}");
    let dr = s.endpoint(DR_CACHE);
    assert!(
        !support::record_target(&s.lab)
            .await
            .is_some_and(|t| same_name(&t, &dr)),
        "the record cannot have moved while Route 53 is down"
    );

    // Route 53 answers again: the record moves within 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let back = tokio::time::Instant::now();
    s.fault(Fault::Route53ControlUp).await;
    let moved = wait_until(Duration::from_secs(10), || async {
        support::record_target(&s.lab)
            .await
            .is_some_and(|t| same_name(&t, &dr))
    })
    .await;
    let took = back.elapsed();
    assert!(moved, "the record never moved:\n{}", agent.log_text());
    eprintln!("route53 back → record switched in {took:?}");
    assert!(
        took <= Duration::from_secs(2),
        "the record moved {took:?} after Route 53 came back"
    );
    let end = s.failover_end(&agent).await;
    assert_eq!(end["event"], "failover_completed", "{end:#}");
    let calls = s.calls();
    assert_eq!(creates(&calls).len(), 1);
    let changes = cname_changes(&calls);
    assert_eq!(changes.len(), 1, "{changes:#?}");
}

/// Issue 20: a failover that waits at `lease` on Route 53's API (the cache built and verified)
/// is ended once the primary answers again for `rise` rounds, with Route 53 still down: when
/// Route 53 comes back, nothing moves the record away from the healthy primary. Ending it
/// asks nothing of Route 53 (the journal says the switch never began), and the DR cache it
/// built is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_waiting_on_route53_ends_when_the_primary_answers_again() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::RegionOutage {
        region: PRIMARY_REGION.to_owned(),
        route53: true,
    })
    .await;
    s.held_by_route53(&agent).await;
    // The primary answers again; Route 53's API stays down.
    s.fault(Fault::Clear {
        cache: PRIMARY_CACHE.to_owned(),
    })
    .await;
    let aborted = s
        .wait_event(DOWN_BOUND, |e| e["event"] == "aborted")
        .await
        .unwrap_or_else(|| panic!("not ended: {:?}\n{}", s.hook.names(), agent.log_text()));
    let said = aborted["reasons"].to_string();
    assert!(said.contains("waiting before the switch"), "{aborted:#}");
    assert!(said.contains("stopped before the switch"), "{aborted:#}");
    assert!(said.contains("deleting app-sessions-dr"), "{aborted:#}");
    s.fault(Fault::Route53ControlUp).await;
    assert!(
        agent.wait_state(WATCH, "healthy", EVENT_BOUND).await,
        "{:?}\n{}",
        agent.state(WATCH).await,
        agent.log_text()
    );
    support::wait_more_rounds(&agent, WATCH, 3, EVENT_BOUND).await;
    let calls = s.calls();
    assert!(
        cname_changes(&calls).is_empty(),
        "{:#?}",
        cname_changes(&calls)
    );
    s.assert_record(&s.endpoint(PRIMARY_CACHE), LAB_TTL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_only_announces_the_failover_it_would_make_and_changes_nothing() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    s.fault(region_outage()).await;
    let intent = s
        .wait_event(DOWN_BOUND, |e| e["event"] == "failover_intent")
        .await
        .unwrap_or_else(|| panic!("no intent: {:?}\n{}", s.hook.names(), agent.log_text()));
    assert_eq!(intent["detail"]["would_fail_over"], true, "{intent:#}");
    let steps = intent["detail"]["plan"]["steps"]
        .as_array()
        .expect("the plan's steps");
    assert!(!steps.is_empty(), "{intent:#}");
    assert_eq!(steps[0]["call"], "CreateServerlessCache", "{intent:#}");
    assert_in_order(&s.hook.names(), &["down", "failover_intent"]);

    // Held four more rounds past the intent: nothing is built, nothing is changed.
    let rounds = watch_status(&agent).await["rounds"]
        .as_u64()
        .expect("rounds");
    let held = more_rounds(&agent, rounds, 4, Duration::from_secs(15)).await;
    assert!(
        held,
        "the agent stopped counting rounds:\n{}",
        agent.log_text()
    );
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("down"));
    let calls = s.calls();
    assert!(
        calls.iter().all(|c| c.action != "CreateServerlessCache"),
        "{:#?}",
        mutating(&calls)
    );
    assert!(
        calls.iter().all(|c| c.action != "ChangeResourceRecordSets"),
        "{:#?}",
        mutating(&calls)
    );
    let names = s.hook.names();
    assert_eq!(s.hook.count("failover_intent"), 1, "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n.starts_with("failover_") && n != "failover_intent"),
        "{names:?}"
    );
    s.assert_record(&s.endpoint(PRIMARY_CACHE), LAB_TTL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_creates_and_failing_record_changes_still_make_one_failover() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(2), &[]).await;
    let agent = s.healthy_agent().await;
    s.fault(api_error(
        AwsService::Elasticache,
        "CreateServerlessCache",
        "Throttling",
        3,
    ))
    .await;
    s.fault(region_outage()).await;
    // The Route 53 errors are meant for the swap of the record, not for the lease's TXT record
    // that the lease step writes first; the 2 s build leaves time to put them in between.
    s.wait_event(DOWN_BOUND + EVENT_BOUND, step_event("lease", "done"))
        .await
        .unwrap_or_else(|| panic!("no lease: {:?}\n{}", s.hook.names(), agent.log_text()));
    s.fault(api_error(
        AwsService::Route53,
        "ChangeResourceRecordSets",
        "InternalError",
        3,
    ))
    .await;
    let end = s.failover_end(&agent).await;
    assert_eq!(
        end["event"],
        "failover_completed",
        "{end:#}\n{}",
        agent.log_text()
    );

    let calls = s.calls();
    let throttled: Vec<_> = calls
        .iter()
        .filter(|c| {
            c.action == "CreateServerlessCache" && c.error_code.as_deref() == Some("Throttling")
        })
        .collect();
    assert_eq!(throttled.len(), 3, "{throttled:#?}");
    assert!(throttled.iter().all(|c| c.status == 400), "{throttled:#?}");
    assert_eq!(creates(&calls).len(), 1, "{:#?}", mutating(&calls));
    let failed_swaps: Vec<_> = calls
        .iter()
        .filter(|c| touches_record(c) && c.error_code.as_deref() == Some("InternalError"))
        .collect();
    assert_eq!(failed_swaps.len(), 3, "{:#?}", mutating(&calls));
    assert!(failed_swaps.iter().all(|c| c.status == 500));
    assert_eq!(cname_changes(&calls).len(), 1, "{:#?}", mutating(&calls));
    s.assert_record(&s.endpoint(DR_CACHE), NEW_TTL).await;
    assert!(
        agent.wait_state(WATCH, "failed_over", EVENT_BOUND).await,
        "{}",
        agent.log_text()
    );
}

/// What a failover that failed before the swap leaves: the failure names `step`, the record
/// still points at the primary, and nothing changed it.
async fn assert_failed_before_the_swap(s: &Setup, agent: &Agent, end: &Value, step: &str) {
    assert_eq!(
        end["event"],
        "failover_failed",
        "{end:#}\n{}",
        agent.log_text()
    );
    assert_eq!(end["detail"]["step"], step, "{end:#}");
    assert_eq!(end["detail"]["record_untouched"], true, "{end:#}");
    let calls = s.calls();
    assert_eq!(creates(&calls).len(), 1, "{:#?}", mutating(&calls));
    assert!(
        cname_changes(&calls).is_empty(),
        "{:#?}",
        cname_changes(&calls)
    );
    s.assert_record(&s.endpoint(PRIMARY_CACHE), LAB_TTL).await;
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert!(
        matches!(&journal.outcome, Some(FailoverOutcome::Failed { step: failed, .. }) if failed.as_str() == step),
        "{:?}",
        journal.outcome
    );
    let status = failover_result_shown(agent, "failed").await;
    assert_eq!(status["served_by_dr"], false, "{status:#}");

    // The episode keeps its intent: a few more rounds of the outage start no second failover.
    let rounds = status["rounds"].as_u64().expect("rounds");
    assert!(more_rounds(agent, rounds, 3, Duration::from_secs(10)).await);
    assert_eq!(s.hook.count("failover_started"), 1, "{:?}", s.hook.names());
    assert_eq!(creates(&s.calls()).len(), 1);
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("down"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_cache_that_fails_to_build_fails_the_failover_and_leaves_the_record() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::ProvisionFail).await;
    s.fault(region_outage()).await;
    let end = s.failover_end(&agent).await;
    assert_failed_before_the_swap(&s, &agent, &end, "wait_available").await;
    assert!(
        end["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("create-failed")),
        "{end:#}"
    );
}

/// Issue 22: a `create-failed` cache left by an earlier build made the next failover wait the
/// whole `create_timeout` for tags AWS never gives, then start the cooldown. Now readiness says
/// `not_ready` naming `dr_name`, the failover stops at `provision` at once, spends no cooldown
/// and says so; once `dr-cache delete` removed it, a manual failover completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leftover_failed_build_stops_the_failover_at_once_and_spends_no_cooldown() {
    let s = setup(
        Mode::AutoFailover,
        Duration::from_secs(1),
        &[(
            "log_format = \"text\"",
            "log_format = \"text\"\nreadiness_interval = \"2s\"",
        )],
    )
    .await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DR_REGION))
        .endpoint_url(&s.lab.lab.info().aws_endpoint)
        .credentials_provider(Credentials::new("AKIDLAB", "secret", None, None, "lab"))
        .load()
        .await;
    let client = aws_sdk_elasticache::Client::new(&sdk);
    s.fault(Fault::ProvisionFail).await;
    client
        .create_serverless_cache()
        .serverless_cache_name(DR_CACHE)
        .engine("valkey")
        .send()
        .await
        .expect("a build that will fail");
    support::raw_aws::wait_cache_status(&client, DR_CACHE, Some("create-failed")).await;

    let agent = s.healthy_agent().await;
    let not_ready = s
        .wait_event(EVENT_BOUND, |e| e["event"] == "not_ready")
        .await
        .unwrap_or_else(|| panic!("{:?}\n{}", s.hook.names(), agent.log_text()));
    // route53_record fails too here: these labs serve the record with a 5 s TTL.
    assert!(
        not_ready["detail"]["failing"]
            .as_array()
            .is_some_and(|f| f.iter().any(|c| c == "dr_name")),
        "{not_ready:#}"
    );
    assert!(
        not_ready["reasons"].to_string().contains("create-failed"),
        "{not_ready:#}"
    );

    s.fault(region_outage()).await;
    let end = s.failover_end(&agent).await;
    assert_eq!(
        end["event"],
        "failover_failed",
        "{end:#}\n{}",
        agent.log_text()
    );
    assert_eq!(end["detail"]["step"], "provision", "{end:#}");
    let error = end["detail"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("create-failed") && error.contains("valkey-dr dr-cache delete"),
        "{end:#}"
    );
    assert!(
        creates(&s.calls()).len() == 1 && cname_changes(&s.calls()).is_empty(),
        "only the leftover's own create, no switch: {:#?}",
        mutating(&s.calls())
    );
    let started = s.events("failover_started")[0]["at"].clone();
    assert!(!started.is_null(), "{:?}", s.hook.names());
    let state: valkey_dr_policies::WatchState = serde_json::from_slice(
        &std::fs::read(valkey_dr::layout::state_file(&s.state_dir, WATCH)).expect("state"),
    )
    .expect("the state parses");
    assert!(
        state.failovers.is_empty(),
        "no cooldown spent: {:?}",
        state.failovers
    );
    assert!(
        state
            .last_failover_failure
            .as_deref()
            .is_some_and(|r| r.contains("did not count toward the cooldown")),
        "{:?}",
        state.last_failover_failure
    );
    // Not tried again every round while the leftover is there.
    let rounds = watch_status(&agent).await["rounds"]
        .as_u64()
        .expect("rounds");
    assert!(more_rounds(&agent, rounds, 3, Duration::from_secs(10)).await);
    assert_eq!(s.hook.count("failover_started"), 1, "{:?}", s.hook.names());

    let deleted = cli(
        &s.config,
        &["dr-cache", "delete", "--watch", WATCH, "--yes"],
    )
    .await;
    assert_eq!(deleted.code, 0, "{}{}", deleted.stdout, deleted.stderr);
    support::raw_aws::wait_cache_status(&client, DR_CACHE, None).await;
    let manual = cli(&s.config, &["failover", "--watch", WATCH, "--yes"]).await;
    assert_eq!(manual.code, 0, "{}{}", manual.stdout, manual.stderr);
    agent.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_cache_stuck_creating_fails_the_failover_at_create_timeout() {
    let s = setup(
        Mode::AutoFailover,
        Duration::from_secs(1),
        &[("create_timeout = \"5m\"", "create_timeout = \"3s\"")],
    )
    .await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::ProvisionStuck).await;
    s.fault(region_outage()).await;
    let end = s.failover_end(&agent).await;
    assert_failed_before_the_swap(&s, &agent, &end, "wait_available").await;
    assert!(
        end["detail"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("still not available after 3s")),
        "{end:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_changed_during_the_failover_is_not_overwritten() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(4), &[]).await;
    let agent = s.healthy_agent().await;
    s.fault(region_outage()).await;
    // The swap compares against what the record held when the lease step read it, so the
    // record changes after that read: once the lease is taken, during the 4 s build.
    s.wait_event(DOWN_BOUND + EVENT_BOUND, step_event("lease", "done"))
        .await
        .unwrap_or_else(|| panic!("no lease: {:?}\n{}", s.hook.names(), agent.log_text()));
    assert_eq!(s.hook.count("failover_started"), 1);
    s.fault(Fault::PointRecord {
        cache: SPARE_CACHE.to_owned(),
    })
    .await;
    let end = s.failover_end(&agent).await;
    assert_eq!(
        end["event"],
        "failover_failed",
        "{end:#}\n{}",
        agent.log_text()
    );
    assert_eq!(end["detail"]["step"], "switch_dns", "{end:#}");
    assert_eq!(end["detail"]["record_untouched"], true, "{end:#}");
    let error = end["detail"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("changed by someone else") && error.contains(&s.endpoint(SPARE_CACHE)),
        "{end:#}"
    );
    s.assert_record(&s.endpoint(SPARE_CACHE), LAB_TTL).await;
    let calls = s.calls();
    assert!(
        cname_changes(&calls).is_empty(),
        "{:#?}",
        cname_changes(&calls)
    );
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert!(
        matches!(
            journal.outcome,
            Some(FailoverOutcome::Failed {
                step: Step::SwitchDns,
                ..
            })
        ),
        "{:?}",
        journal.outcome
    );
    assert!(!journal.done(Step::SwitchDns));
    let status = failover_result_shown(&agent, "failed").await;
    assert_eq!(status["served_by_dr"], false, "{status:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_and_failback_without_an_agent() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    s.log_in_on_primary(OLD_SESSION).await;

    // Nobody can confirm: refused, and nothing is touched.
    let run = cli(&s.config, &["failover"]).await;
    assert_eq!(run.code, 2, "{}", run.output());
    assert!(run.stderr.contains("--yes"), "{}", run.output());
    assert!(
        mutating(&s.calls()).is_empty(),
        "{:#?}",
        mutating(&s.calls())
    );

    // A dry run shows the calls and makes none of them.
    let run = cli(&s.config, &["failover", "--dry-run", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout.contains("CreateServerlessCache"),
        "{}",
        run.output()
    );
    assert!(
        mutating(&s.calls()).is_empty(),
        "{:#?}",
        mutating(&s.calls())
    );

    // No agent runs: the command fails over from its own process.
    s.fault(region_outage()).await;
    let run = cli(&s.config, &["failover", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stderr.contains("no agent is running"),
        "{}",
        run.output()
    );
    let dr = s.endpoint(DR_CACHE);
    let calls = s.calls();
    assert_eq!(creates(&calls).len(), 1, "{:#?}", mutating(&calls));
    assert_eq!(cname_changes(&calls).len(), 1, "{:#?}", mutating(&calls));
    s.assert_record(&dr, NEW_TTL).await;

    let status = status_json(&s.config).await;
    assert!(
        status["route53"]["target"]
            .as_str()
            .is_some_and(|t| same_name(t, &dr)),
        "{status:#}"
    );
    assert_eq!(status["route53"]["ttl"], NEW_TTL, "{status:#}");
    assert_eq!(status["agent"]["running"], false, "{status:#}");
    assert_eq!(status["agent"]["state"], "failed_over", "{status:#}");
    assert_eq!(status["agent"]["served_by_dr"], true, "{status:#}");
    assert_eq!(
        status["last_failover"]["outcome"]["result"], "completed",
        "{status:#}"
    );

    // The primary is still unreachable: failback refuses and leaves the record.
    let run = cli(&s.config, &["failback", "--yes"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(run.stderr.contains("nothing changed"), "{}", run.output());
    let calls = s.calls();
    assert_eq!(cname_changes(&calls).len(), 1, "{:#?}", mutating(&calls));
    assert!(
        calls.iter().all(|c| c.action != "DeleteServerlessCache"),
        "{:#?}",
        mutating(&calls)
    );
    s.assert_record(&dr, NEW_TTL).await;

    // Back: the old primary is emptied, the record returns to it (an exact swap) and the
    // DR cache goes.
    s.fault(region_restore()).await;
    assert!(
        s.primary_holds(OLD_SESSION).await,
        "logged in before the outage"
    );
    let run = cli(&s.config, &["failback", "--yes", "--delete-dr"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        !s.primary_holds(OLD_SESSION).await,
        "the old session is gone after the failback: {}",
        run.output()
    );
    // Progress lines come first, then the report.
    let json_at = run.stdout.find("\n{").map_or(0, |i| i + 1);
    let report: Value = serde_json::from_str(&run.stdout[json_at..])
        .unwrap_or_else(|e| panic!("the failback's JSON ({e}): {}", run.output()));
    let flushed = &report["failback"]["flushed"];
    assert_eq!(flushed["command"], "FLUSHALL ASYNC", "{report:#}");
    assert!(
        flushed["keys_before"].as_u64().is_some_and(|n| n >= 1),
        "{report:#}"
    );
    assert_eq!(flushed["sent"], 1, "{report:#}");
    assert_eq!(report["failback"]["keep_data"], false, "{report:#}");
    assert!(
        report["failback"]["steps_ms"]["flush_primary"].is_u64(),
        "{report:#}"
    );
    assert!(
        run.stdout.contains("flush_primary: FLUSHALL ASYNC on"),
        "{}",
        run.output()
    );
    assert!(!run.stderr.contains("warning"), "{}", run.output());
    let calls = s.calls();
    let changed = cname_changes(&calls);
    assert_eq!(changed.len(), 2, "{changed:#?}");
    let swap = changed[1].request["changes"].as_array().expect("changes");
    assert_eq!(swap.len(), 2, "{swap:#?}");
    assert_eq!(swap[0]["action"], "DELETE");
    assert!(same_name(
        swap[0]["values"][0].as_str().unwrap_or_default(),
        &dr
    ));
    assert_eq!(swap[1]["action"], "CREATE");
    assert!(same_name(
        swap[1]["values"][0].as_str().unwrap_or_default(),
        &primary
    ));
    s.assert_record(&primary, NEW_TTL).await;
    let deleted: Vec<_> = calls
        .iter()
        .filter(|c| c.action == "DeleteServerlessCache" && c.succeeded())
        .collect();
    assert_eq!(deleted.len(), 1, "{deleted:#?}");
    assert_eq!(deleted[0].request["cache_name"], DR_CACHE);
    assert_eq!(deleted[0].region.as_deref(), Some(DR_REGION));
    assert_eq!(creates(&calls).len(), 1);

    let status = status_json(&s.config).await;
    assert_eq!(status["agent"]["served_by_dr"], false, "{status:#}");
    assert_eq!(status["agent"]["state"], "healthy", "{status:#}");

    // `history` reads both back from the journals, newest first, and calls nothing.
    let before = s.calls().len();
    let run = cli(&s.config, &["history", "--output", "json"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let history: Value = serde_json::from_str(&run.stdout).expect("history is JSON");
    let entries = history["history"].as_array().expect("entries");
    let kinds: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e["kind"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        kinds,
        [("failback", "completed"), ("failover", "completed")],
        "{history:#}"
    );
    let served = entries[1]["endpoint"]
        .as_str()
        .expect("the failover's endpoint");
    assert!(
        served.starts_with(&format!("{}:", dr.trim_end_matches('.'))),
        "{history:#}"
    );
    assert!(
        entries
            .iter()
            .all(|e| e["watch"] == "sessions" && e["duration_ms"].is_u64())
    );
    let run = cli(&s.config, &["history"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert!(
        lines[0].starts_with("STARTED")
            && lines[1].contains("failback")
            && lines[2].contains("failover"),
        "{}",
        run.stdout
    );
    assert_eq!(s.calls().len(), before, "history reads only state_dir");
    // plan, failover, status, failback --delete-dr: every call fits AWS's models.
    support::assert_botocore_conformant(&s.lab).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_failover_and_failback_through_a_running_agent() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    s.log_in_on_primary(OLD_SESSION).await;
    let agent = s.healthy_agent().await;
    s.fault(region_outage()).await;
    s.wait_event(DOWN_BOUND, |e| e["event"] == "failover_intent")
        .await
        .unwrap_or_else(|| panic!("no intent: {:?}\n{}", s.hook.names(), agent.log_text()));

    // The running agent carries the failover out; the command follows it to the end.
    let run = cli(&s.config, &["failover", "--yes"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.output(), agent.log_text());
    assert!(
        run.stdout.contains("started by the agent"),
        "{}",
        run.output()
    );
    let started = s.events("failover_started");
    assert_eq!(started.len(), 1, "{:?}", s.hook.names());
    assert_eq!(started[0]["detail"]["trigger"], "manual");
    assert!(
        agent.wait_state(WATCH, "failed_over", EVENT_BOUND).await,
        "{}",
        agent.log_text()
    );
    let status = watch_status(&agent).await;
    assert_eq!(status["served_by_dr"], true, "{status:#}");
    assert_eq!(status["last_failover"]["outcome"]["result"], "completed");
    assert_eq!(
        status["last_failover"]["failover_id"],
        started[0]["failover_id"]
    );
    let dr = s.endpoint(DR_CACHE);
    let calls = s.calls();
    assert_eq!(creates(&calls).len(), 1, "{:#?}", mutating(&calls));
    assert_eq!(cname_changes(&calls).len(), 1, "{:#?}", mutating(&calls));
    s.assert_record(&dr, NEW_TTL).await;

    // The primary's region comes back; the agent says when failback is possible.
    s.fault(region_restore()).await;
    s.wait_event(EVENT_BOUND, |e| e["event"] == "failback_possible")
        .await
        .unwrap_or_else(|| panic!("{:?}\n{}", s.hook.names(), agent.log_text()));
    assert!(s.primary_holds(OLD_SESSION).await);
    let run = cli(&s.config, &["failback", "--yes"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.output(), agent.log_text());
    let completed = s
        .wait_event(EVENT_BOUND, |e| e["event"] == "failback_completed")
        .await
        .unwrap_or_else(|| panic!("{:?}\n{}", s.hook.names(), agent.log_text()));
    assert!(!s.primary_holds(OLD_SESSION).await, "emptied by the agent");
    assert_eq!(completed["detail"]["keep_data"], false, "{completed:#}");
    assert_eq!(
        completed["detail"]["flushed"]["command"], "FLUSHALL ASYNC",
        "{completed:#}"
    );
    assert!(
        completed["detail"]["flushed"]["keys_before"]
            .as_u64()
            .is_some_and(|n| n >= 1),
        "{completed:#}"
    );
    assert!(
        agent.wait_state(WATCH, "healthy", EVENT_BOUND).await,
        "{:?}\n{}",
        agent.state(WATCH).await,
        agent.log_text()
    );
    let status = watch_status(&agent).await;
    assert_eq!(status["served_by_dr"], false, "{status:#}");
    assert_eq!(status["last_failback"]["result"], "completed", "{status:#}");
    assert_eq!(
        status["last_failback"]["report"]["flushed"], completed["detail"]["flushed"],
        "{status:#}"
    );
    assert!(
        status["active_endpoint"]
            .as_str()
            .is_some_and(|a| a.starts_with(&format!("{primary}:"))),
        "{status:#}"
    );
    s.assert_record(&primary, NEW_TTL).await;
    let calls = s.calls();
    assert_eq!(cname_changes(&calls).len(), 2, "{:#?}", mutating(&calls));
    assert!(
        calls.iter().all(|c| c.action != "DeleteServerlessCache"),
        "without --delete-dr the DR cache stays"
    );
    assert_eq!(s.hook.count("failback_failed"), 0, "{:?}", s.hook.names());
}

/// A manual failover that dies right after provisioning, as a `kill -9` would: its journal is
/// left unfinished, the DR cache exists, the lease is held, and the record is untouched.
async fn interrupted_manual_failover(s: &Setup) -> Journal {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["failover", "--yes", "--config"])
        .arg(&s.config)
        .env_remove("VALKEY_DR_CONFIG")
        .env("VALKEY_DR_TEST_CRASH_AT", "provision:done")
        .stdin(Stdio::null());
    let out = run_bounded_within(command, CLI_BOUND).await;
    assert!(!out.status.success(), "the failover was meant to die");
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal reads")
        .expect("a journal was written");
    assert!(journal.unfinished(), "{journal:#?}");
    assert!(journal.done(Step::Provision) && !journal.done(Step::SwitchDns));
    journal
}

/// Issue 8, defect 11: an unfinished failover, resumed hours later by an agent (here in
/// alert-only mode) while the primary is healthy, must look again before the switch: it stops
/// with an `aborted` event instead of failing over a healthy cache.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_failover_is_not_resumed_onto_a_healthy_primary() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    let id = interrupted_manual_failover(&s).await.plan.failover_id;

    let agent = Agent::start(&s.config, &s.state_dir, &[]).await;
    let aborted = s
        .wait_event(HEALTHY_BOUND, |e| e["event"] == "aborted")
        .await
        .unwrap_or_else(|| {
            panic!(
                "no aborted event: {:?}\n{}",
                s.hook.names(),
                agent.log_text()
            )
        });
    assert_eq!(aborted["failover_id"], id.as_str(), "{aborted:#}");
    assert!(
        aborted["reasons"][0]
            .as_str()
            .unwrap()
            .contains("the primary answers"),
        "{aborted:#}"
    );
    assert!(
        agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "{}",
        agent.log_text()
    );
    assert!(
        s.events("failover_started").is_empty(),
        "{:?}",
        s.hook.names()
    );
    assert!(
        cname_changes(&s.calls()).is_empty(),
        "{:#?}",
        mutating(&s.calls())
    );
    s.assert_record(&primary, LAB_TTL).await;
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert!(
        matches!(journal.outcome, Some(FailoverOutcome::Aborted { .. })),
        "{journal:#?}"
    );
    assert!(journal.lease.is_none(), "the lease was given back");
    agent.kill9().await;
}

/// `valkey-dr abort` ends an unfinished failover on purpose: the lease is given back, the DR
/// cache this failover built is deleted with --delete-dr, and the record is not changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_ends_an_unfinished_failover_and_deletes_only_its_own_cache() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    interrupted_manual_failover(&s).await;

    let run = cli(&s.config, &["abort"]).await;
    assert_eq!(run.code, 2, "nobody can confirm: {}", run.output());
    let run = cli(&s.config, &["abort", "--yes", "--delete-dr"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stdout.contains("deleting app-sessions-dr"),
        "{}",
        run.output()
    );
    let calls = s.calls();
    assert!(
        calls
            .iter()
            .any(|c| c.action == "DeleteServerlessCache" && c.succeeded()),
        "{:#?}",
        mutating(&calls)
    );
    assert!(cname_changes(&calls).is_empty(), "{:#?}", mutating(&calls));
    s.assert_record(&primary, LAB_TTL).await;
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::Aborted { .. })
    ));
    assert!(journal.lease.is_none());

    // Nothing is left to abort.
    let run = cli(&s.config, &["abort", "--yes"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stderr.contains("no unfinished failover"),
        "{}",
        run.output()
    );
}

/// Issue 8, defect 4: with IAM auth, every probe of the DR cache (verify_direct, the daemon's
/// rounds once it serves, and `check`) must carry tokens signed for the DR cache in the DR
/// region. The lab's fronts verify tokens as AWS does, so a token made for the primary gets
/// WRONGPASS there and the failover would stop at verify_direct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_iam_auth_the_dr_cache_is_probed_with_its_own_tokens() {
    let s = setup_with(
        Mode::AutoFailover,
        |o| {
            o.provision_delay = Duration::from_secs(1);
            o.iam_user = Some("probe".into());
        },
        &[],
    )
    .await;
    let config = std::fs::read_to_string(&s.config).unwrap();
    assert!(config.contains("iam_auth = true"), "{config}");
    let agent = s.healthy_agent().await;
    s.outage_to_failed_over(&agent).await;
    // The daemon's own rounds against the DR cache authenticate: both paths answer.
    let answered = wait_until(EVENT_BOUND, || async {
        let status = watch_status(&agent).await;
        ["dns", "direct"].iter().all(|p| {
            status["last_observation"]["paths"]
                .as_array()
                .is_some_and(|paths| paths.iter().any(|x| x["path"] == *p && x["ok"] == true))
        })
    })
    .await;
    assert!(
        answered,
        "{:#}\n{}",
        watch_status(&agent).await,
        agent.log_text()
    );
    // And so does `check`, which follows the DR cache after a completed failover.
    let run = support::check(&s.config, &[]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert_eq!(run.path(0, "direct")["ok"], true, "{}", run.output);
    agent.kill9().await;
}

/// Issue 9 (item 3): an auto-failover agent whose credentials cannot be loaded says so as a
/// `config_error`, never as `isolated`; in an outage it judges the cache `down` on its probes
/// and blocks the failover, which could not make a single call, naming why. No text people
/// read carries an SDK Debug dump.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_the_agent_says_config_error_never_isolated() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let (line, none) = s.lab.no_credentials_edit();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let config = s.lab.dir.path().join("no-credentials.toml");
    std::fs::write(&config, text.replace(&line, &none)).unwrap();

    let started = tokio::time::Instant::now();
    let agent = Agent::start(&config, &s.state_dir, &[]).await;
    // Readiness: the path is not ready, said within 10 s of the start, naming the check.
    let not_ready = s
        .wait_event(
            Duration::from_secs(10).saturating_sub(started.elapsed()),
            |e| e["event"] == "not_ready",
        )
        .await
        .unwrap_or_else(|| {
            panic!(
                "no not_ready within 10 s: {:?}\n{}",
                s.hook.names(),
                agent.log_text()
            )
        });
    assert_eq!(
        not_ready["detail"]["failing"],
        serde_json::json!(["identity"]),
        "{not_ready:#}"
    );
    // `/status` and `valkey_dr_ready` agree. `/status` is republished every 250 ms once the
    // watch has made its first round, which under load may come after the readiness pass.
    let addr = agent.admin().expect("admin address");
    let read_status = || async {
        let body = support::owner_get(addr, &agent.state_dir, "/status")
            .await?
            .1;
        serde_json::from_str::<Value>(&body).ok()
    };
    assert!(
        wait_until(Duration::from_secs(10), || async {
            read_status()
                .await
                .is_some_and(|s| s["readiness"]["watches"][0]["ready"].is_boolean())
        })
        .await,
        "/status never showed the readiness pass: {:?}",
        read_status().await
    );
    let status = read_status().await.expect("status");
    let readiness = &status["readiness"]["watches"][0];
    assert_eq!(readiness["ready"], false, "{status:#}");
    assert_eq!(
        readiness["failing"],
        serde_json::json!(["identity"]),
        "{status:#}"
    );
    let metrics = support::agent_get(addr, "/metrics").await.unwrap().1;
    assert!(
        metrics.contains("valkey_dr_ready{watch=\"sessions\",check=\"identity\"} 0"),
        "{metrics}"
    );
    assert!(
        agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "{}",
        agent.log_text()
    );
    s.fault(region_outage()).await;
    let blocked = s
        .wait_event(DOWN_BOUND + EVENT_BOUND, |e| {
            e["event"] == "failover_blocked"
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "no failover_blocked: {:?}\n{}",
                s.hook.names(),
                agent.log_text()
            )
        });
    let reasons = blocked["reasons"].to_string();
    assert!(
        reasons.contains("credentials or permissions"),
        "{blocked:#}"
    );
    let config_error = s
        .wait_event(EVENT_BOUND, |e| e["event"] == "config_error")
        .await
        .unwrap_or_else(|| panic!("no config_error: {:?}", s.hook.names()));
    assert!(
        config_error["reasons"].to_string().contains("credentials"),
        "{config_error:#}"
    );
    assert!(
        agent.wait_state(WATCH, "down", EVENT_BOUND).await,
        "{:?} {:?}",
        agent.state(WATCH).await,
        s.hook.names()
    );
    let names = s.hook.names();
    assert!(!names.iter().any(|n| n == "isolated"), "{names:?}");
    assert!(!names.iter().any(|n| n == "failover_started"), "{names:?}");
    assert!(creates(&s.calls()).is_empty());
    for (_, event) in s.hook.events() {
        let text = event.to_string();
        assert!(
            !text.contains("{ source:") && !text.contains("DispatchFailure("),
            "{event:#}"
        );
    }
    let log = agent.log_text();
    assert!(
        !log.contains("{ source:") && !log.contains("DispatchFailure("),
        "{log}"
    );
    agent.kill9().await;
}

/// Issue 9 (item 3): `failover --yes` without credentials stops at once, naming the cause,
/// with the record untouched; before, it retried for ever with the error labelled transient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_a_manual_failover_stops_at_once() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    let (line, none) = s.lab.no_credentials_edit();
    let text = std::fs::read_to_string(&s.config).unwrap();
    let config = s.lab.dir.path().join("no-credentials.toml");
    std::fs::write(&config, text.replace(&line, &none)).unwrap();
    let started = std::time::Instant::now();
    let run = cli(&config, &["failover", "--yes"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}: {}",
        started.elapsed(),
        run.output()
    );
    assert!(
        run.stderr.contains("credentials or permissions") && !run.stderr.contains("(transient)"),
        "{}",
        run.output()
    );
    assert!(
        mutating(&s.calls()).is_empty(),
        "{:#?}",
        mutating(&s.calls())
    );
    s.assert_record(&primary, LAB_TTL).await;
}

/// Issue 10, case 1: the cache is blackholed and the agent isolated at once, for longer than
/// `fall` rounds; then the witness comes back a moment before the cache does. Rounds made
/// while isolated never count towards `fall` or `down_after`, so the few failing rounds after
/// the witness returns are only `suspect`: no `down`, no cache created, healthy again.
///
/// `fall = 10` keeps the test about the rule and not about timing: under load the agent's
/// rounds may run late and then in a burst, and a handful of failing rounds with a working
/// witness may fit into the 800 ms before the cache is back. Ten fresh ones cannot, while an
/// engine that counted the 12 s of isolated rounds would judge `down` on the first of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_then_recovery_is_never_a_failover() {
    let s = setup(
        Mode::AutoFailover,
        Duration::from_secs(1),
        &[("fall = 3\n", "fall = 10\n")],
    )
    .await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::WitnessDown).await;
    s.fault(Fault::Blackhole {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    assert!(
        agent.wait_state(WATCH, "isolated", EVENT_BOUND).await,
        "{:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    // Isolated for more rounds than fall (10), and so longer than down_after (2 rounds):
    // counted, not slept, so that a loaded machine's late rounds cannot shorten it.
    support::wait_more_rounds(&agent, WATCH, 12, Duration::from_secs(60)).await;
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("isolated"));
    s.fault(Fault::WitnessUp).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    s.fault(Fault::Clear {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    assert!(
        agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "{:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    // Two more rounds for anything they would announce.
    support::wait_more_rounds(&agent, WATCH, 2, EVENT_BOUND).await;
    let names = s.hook.names();
    for forbidden in ["down", "failover_intent", "failover_started"] {
        assert!(
            !names.iter().any(|n| n == forbidden),
            "{forbidden} in {names:?}"
        );
    }
    let calls = s.calls();
    assert!(
        support::create_attempts(&calls).is_empty(),
        "{:#?}",
        support::create_attempts(&calls)
    );
    agent.kill9().await;
}

/// `failback --keep-data`, through a running agent: the flag reaches it, the old primary is
/// not emptied (the session logged in before the outage is valid again), and people are told
/// what comes back: on the command's stderr, in the agent's log and events, in `/status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failback_keep_data_keeps_the_old_primarys_sessions_and_says_so() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    s.log_in_on_primary(OLD_SESSION).await;
    let agent = s.healthy_agent().await;
    s.outage_to_failed_over(&agent).await;
    s.fault(region_restore()).await;
    s.wait_event(EVENT_BOUND, |e| e["event"] == "failback_possible")
        .await
        .unwrap_or_else(|| panic!("{:?}\n{}", s.hook.names(), agent.log_text()));

    let run = cli(&s.config, &["failback", "--yes", "--keep-data"]).await;
    assert_eq!(run.code, 0, "{}\n{}", run.output(), agent.log_text());
    let warning = "sessions the old primary held when the region failed, including ones logged out or revoked since, become valid again";
    assert!(
        run.stderr.contains(&format!(
            "warning: --keep-data: the old primary is not emptied; {warning}"
        )),
        "{}",
        run.output()
    );
    let completed = s
        .wait_event(EVENT_BOUND, |e| e["event"] == "failback_completed")
        .await
        .unwrap_or_else(|| panic!("{:?}\n{}", s.hook.names(), agent.log_text()));
    assert!(
        s.primary_holds(OLD_SESSION).await,
        "--keep-data keeps the old primary's sessions"
    );
    assert_eq!(completed["detail"]["keep_data"], true, "{completed:#}");
    assert!(
        completed["detail"]["warning"]
            .as_str()
            .is_some_and(|w| w.contains(warning)),
        "{completed:#}"
    );
    assert!(completed["detail"]["flushed"].is_null(), "{completed:#}");
    assert!(
        s.events("failover_step")
            .iter()
            .any(|e| e["detail"]["step"] == "flush_primary"
                && e["detail"]["detail"]
                    .as_str()
                    .is_some_and(|d| d.starts_with("skipped: --keep-data"))),
        "{:?}",
        s.hook.names()
    );
    assert!(agent.log_text().contains(warning), "{}", agent.log_text());
    assert!(
        agent.wait_state(WATCH, "healthy", EVENT_BOUND).await,
        "{}",
        agent.log_text()
    );
    let status = watch_status(&agent).await;
    assert_eq!(
        status["last_failback"]["report"]["keep_data"], true,
        "{status:#}"
    );
    let path = valkey_dr::layout::failback_journal(&s.state_dir, WATCH);
    let journal: Journal =
        serde_json::from_slice(&std::fs::read(path).expect("journal")).expect("journal JSON");
    assert!(!journal.started(Step::FlushPrimary), "{journal:#?}");
    assert!(journal.flushed.is_none());
}

/// A probe user whose access string takes `FLUSHALL` away: the failback stops at
/// `flush_primary` before the switch (a configuration error, said with the way out), the
/// record stays on the DR cache and the primary keeps its data; `--keep-data` then fails back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failback_whose_probe_user_may_not_flush_stops_before_the_switch() {
    let s = setup_with(
        Mode::AlertOnly,
        |o| {
            o.provision_delay = Duration::from_secs(1);
            o.access_string = "on ~* +@all -flushall".into();
        },
        &[],
    )
    .await;
    let primary = s.endpoint(PRIMARY_CACHE);
    s.log_in_on_primary(OLD_SESSION).await;
    s.fault(region_outage()).await;
    let run = cli(&s.config, &["failover", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let dr = s.endpoint(DR_CACHE);
    s.fault(region_restore()).await;

    let run = cli(&s.config, &["failback", "--yes"]).await;
    assert_eq!(run.code, 1, "{}", run.output());
    assert!(
        run.stderr.contains("flush_primary") && run.stderr.contains("NOPERM"),
        "{}",
        run.output()
    );
    assert!(run.stderr.contains("--keep-data"), "{}", run.output());
    assert!(
        run.stderr.contains("the record was not changed"),
        "{}",
        run.output()
    );
    s.assert_record(&dr, NEW_TTL).await;
    assert!(s.primary_holds(OLD_SESSION).await, "nothing was emptied");
    assert_eq!(
        cname_changes(&s.calls()).len(),
        1,
        "only the failover's switch"
    );

    let run = cli(&s.config, &["failback", "--yes", "--keep-data"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        run.stderr.contains("become valid again"),
        "{}",
        run.output()
    );
    s.assert_record(&primary, NEW_TTL).await;
    assert!(s.primary_holds(OLD_SESSION).await);
}

/// Crash safety: a failback killed (as `kill -9` would) right after its flush is journalled
/// resumes from the journal at the next `failback`, does not flush a second time (a session
/// written to the primary after the crash is still there) and switches the record once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failback_killed_after_its_flush_resumes_without_flushing_again() {
    let s = setup(Mode::AlertOnly, Duration::from_secs(1), &[]).await;
    let primary = s.endpoint(PRIMARY_CACHE);
    s.log_in_on_primary(OLD_SESSION).await;
    s.fault(region_outage()).await;
    let run = cli(&s.config, &["failover", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    let dr = s.endpoint(DR_CACHE);
    s.fault(region_restore()).await;

    let crash = [("VALKEY_DR_TEST_CRASH_AT", "flush_primary:done")];
    let run = cli_with(&s.config, &["failback", "--yes"], &crash).await;
    assert_ne!(run.code, 0, "the process aborted: {}", run.output());
    assert!(
        !s.primary_holds(OLD_SESSION).await,
        "flushed before the crash"
    );
    s.assert_record(&dr, NEW_TTL).await;
    let path = valkey_dr::layout::failback_journal(&s.state_dir, WATCH);
    let journal: Journal =
        serde_json::from_slice(&std::fs::read(&path).expect("journal")).expect("journal JSON");
    assert!(
        journal.unfinished() && journal.done(Step::FlushPrimary),
        "{journal:#?}"
    );

    let later = "session:after-the-crash";
    s.log_in_on_primary(later).await;
    let run = cli(&s.config, &["failback", "--yes"]).await;
    assert_eq!(run.code, 0, "{}", run.output());
    assert!(
        s.primary_holds(later).await,
        "no second flush after the journal said done"
    );
    s.assert_record(&primary, NEW_TTL).await;
    let journal: Journal =
        serde_json::from_slice(&std::fs::read(&path).expect("journal")).expect("journal JSON");
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    assert_eq!(journal.runs, 2, "{journal:#?}");
    let flushed = journal.flushed.expect("the flush is journalled");
    assert_eq!(flushed.sent, 1);
    assert!(flushed.keys_before >= 1, "{flushed:?}");
    assert_eq!(
        cname_changes(&s.calls()).len(),
        2,
        "the failover's switch and one back"
    );
}

/// How long the DR region throttles in the acceptance test of issue 20.
const DR_THROTTLE: Duration = Duration::from_secs(60);

/// Issue 20: in a regional event every customer's DR automation calls the DR region at once,
/// and it throttles. Here it throttles `CreateServerlessCache` and `DescribeServerlessCaches`
/// for 60 s from the failover's first create: the first creates by a `--times` fault set
/// before the outage (nothing else calls Create), then both actions `--for 60s` from the
/// moment the first throttled create is seen. A throttled answer is an answer: the agent's AWS
/// witness (a Describe in the DR region) counts it as proof of its network, so the agent is
/// never `isolated` by it. The build is retried through it (create_timeout is 5 m), and the failover
/// completes after the throttling ends, with one create and one change of the record: no
/// `failover_failed`, no second start, no cooldown spent on a failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dr_region_throttling_create_and_describe_for_60_s_delays_the_failover_but_never_fails_it()
 {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    // Ten throttled creates are at least three of the executor's attempts (the SDK's own
    // retries come within each), a second and more: time to start the 60 s while they last.
    s.fault(api_error(
        AwsService::Elasticache,
        "CreateServerlessCache",
        "Throttling",
        10,
    ))
    .await;
    s.fault(region_outage()).await;
    let first_seen = wait_until(DOWN_BOUND + EVENT_BOUND, || async {
        !refused(&s.calls(), "CreateServerlessCache", "Throttling").is_empty()
    })
    .await;
    assert!(
        first_seen,
        "the failover never tried to build: {:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    let throttled_from = tokio::time::Instant::now();
    for action in ["CreateServerlessCache", "DescribeServerlessCaches"] {
        s.fault(api_error_for(
            AwsService::Elasticache,
            action,
            "Throttling",
            DR_THROTTLE,
        ))
        .await;
    }
    let throttled_until = throttled_from + DR_THROTTLE;

    let end = s
        .failover_end_within(&agent, DR_THROTTLE + FAILOVER_BOUND)
        .await;
    assert_eq!(
        end["event"],
        "failover_completed",
        "{end:#}\n{}",
        agent.log_text()
    );
    let completed_at = s
        .hook
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "failover_completed")
        .map(|(at, _)| at)
        .expect("the completion arrived");
    assert!(
        completed_at >= throttled_until,
        "completed {:?} before the throttling ended",
        throttled_until - completed_at
    );
    eprintln!(
        "DR region throttled 60 s: failover completed {:?} after the throttling ended",
        completed_at - throttled_until
    );

    // The lab's side: every create before the one that built the cache was throttled, the
    // last of them 60 s after the first; one change of the record.
    let calls = s.calls();
    let attempts = support::create_attempts(&calls);
    let (built, throttled) = attempts.split_last().expect("creates were sent");
    assert!(built.succeeded(), "{attempts:#?}");
    assert_eq!(creates(&calls).len(), 1, "{attempts:#?}");
    assert!(
        throttled
            .iter()
            .all(|c| c.status == 400 && c.error_code.as_deref() == Some("Throttling")),
        "{attempts:#?}"
    );
    let first = throttled.first().expect("throttled creates");
    assert!(
        built.at_ms - first.at_ms >= DR_THROTTLE.as_millis() as u64,
        "built {} ms after the first throttled create",
        built.at_ms - first.at_ms
    );
    eprintln!(
        "{} throttled creates over {} ms, then one that built the cache",
        throttled.len(),
        built.at_ms - first.at_ms
    );
    let described = refused(&calls, "DescribeServerlessCaches", "Throttling");
    assert!(
        !described.is_empty()
            && described
                .iter()
                .all(|c| c.region.as_deref() == Some(DR_REGION)),
        "{described:#?}"
    );
    // A switch sent within Route 53's window after the lease's change is refused with
    // PriorRequestNotComplete and sent again (tests/FIDELITY.md, R2): one lands, none after.
    support::once(
        &support::cname_change_attempts(&calls),
        "changes of the record",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s.assert_record(&s.endpoint(DR_CACHE), NEW_TTL).await;

    // The agent's side: one failover, retried through the throttling and said so, never
    // failed, and nothing counted against a later one.
    let names = s.hook.names();
    eprintln!("events: {names:?}");
    assert_eq!(s.hook.count("failover_started"), 1, "{names:?}");
    for never in [
        "failover_failed",
        "stood_down",
        "failover_blocked",
        "isolated",
    ] {
        assert_eq!(s.hook.count(never), 0, "{never} in {names:?}");
    }
    let retried: Vec<Value> = s
        .events("failover_step")
        .into_iter()
        .filter(|e| e["detail"]["step"] == "provision" && e["detail"]["phase"] == "retrying")
        .collect();
    assert!(
        retried.iter().any(|e| e["detail"]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("Throttling"))),
        "people never heard of the throttling: {retried:#?}"
    );
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    assert_eq!(journal.runs, 1, "{journal:#?}");
    let provision = journal
        .entry(Step::Provision, Phase::Done)
        .expect("provision done");
    assert!(provision.detail.starts_with("created"), "{provision:#?}");
    let status = failover_result_shown(&agent, "completed").await;
    assert_eq!(status["last_failover"]["runs"], 1, "{status:#}");
    assert!(
        agent.wait_state(WATCH, "failed_over", EVENT_BOUND).await,
        "{:?}\n{}",
        agent.state(WATCH).await,
        agent.log_text()
    );
    agent.kill9().await;
}

/// The lease record's name, as the executor makes it.
fn lease_name() -> String {
    format!("_valkey-dr-lock.{RECORD}")
}

/// Issue 20: Route 53 carries out the lease's takeover and the switch, and neither answer
/// ever arrives (`commit-then-drop` of two changes, each held for longer than the agent's
/// 10 s bound on a Route 53 call). Another agent's handed-over lease is in the zone, so the
/// lease is a takeover: an exact `DELETE` of it and a `CREATE` of ours in one batch. The
/// agent's re-sent batches are refused (what they delete is gone), and it reads again rather
/// than believing the refusal: the lease is its own, the record already on the DR cache. It
/// never stands down against itself, and completes with one change of the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_to_the_lease_takeover_and_the_switch_are_read_back_not_stood_down_on() {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    // Another agent's failover failed and handed the lease over: expired, with its reason.
    let expired = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 60;
    let theirs = RecordSet {
        name: lease_name(),
        rtype: "TXT".into(),
        ttl: valkey_dr::executor::LEASE_TTL,
        values: vec![format!(
            "\"owner=agent-old failover=fo-20250101t000000z-0000 expires={expired}\" \"handed over: failed at verify_direct\""
        )],
    };
    s.route53()
        .await
        .change(HOSTED_ZONE_ID, &[Change::Create(theirs.clone())])
        .await
        .expect("plant the other agent's lease");
    let before_outage = s.calls().last().map_or(0, |c| c.seq);
    s.fault(Fault::CommitThenDrop {
        service: AwsService::Route53,
        action: "ChangeResourceRecordSets".into(),
        times: 2,
        hold: Duration::from_secs(30),
    })
    .await;
    s.fault(region_outage()).await;
    // Two answers lost at 10 s each on top of a failover.
    let end = s
        .failover_end_within(&agent, FAILOVER_BOUND + Duration::from_secs(20))
        .await;
    assert_eq!(
        end["event"],
        "failover_completed",
        "{end:#}\n{}",
        agent.log_text()
    );

    // The lab's side: the takeover and the switch were carried out and their answers dropped;
    // the re-sent batches were refused; one change of the record, and the lease released.
    let calls: Vec<Call> = s
        .calls()
        .into_iter()
        .filter(|c| c.seq > before_outage && c.action == "ChangeResourceRecordSets")
        .collect();
    let touches_lease = |c: &Call| {
        c.request["changes"].as_array().is_some_and(|changes| {
            changes.iter().any(|ch| {
                ch["name"]
                    .as_str()
                    .is_some_and(|n| same_name(n, &lease_name()))
            })
        })
    };
    let dropped: Vec<&Call> = calls.iter().filter(|c| c.answer_dropped).collect();
    assert_eq!(dropped.len(), 2, "{calls:#?}");
    let (takeover, switch) = (dropped[0], dropped[1]);
    let takeover_actions: Vec<&str> = takeover.request["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .map(|ch| ch["action"].as_str().unwrap_or("?"))
        .collect();
    assert!(
        takeover.succeeded()
            && !touches_record(takeover)
            && touches_lease(takeover)
            && takeover_actions == ["DELETE", "CREATE"]
            && takeover.request["changes"][0]["values"][0]
                .as_str()
                .is_some_and(|v| v.contains("agent-old")),
        "the first lost answer is not the takeover of agent-old's lease: {takeover:#?}"
    );
    assert!(
        switch.succeeded() && touches_record(switch),
        "the second lost answer is not the switch: {switch:#?}"
    );
    let record_changes = cname_changes(&calls);
    assert_eq!(record_changes.len(), 1, "{calls:#?}");
    assert!(record_changes[0].answer_dropped);
    let after = |lost: &Call| -> Vec<&Call> {
        calls
            .iter()
            .filter(|c| c.seq > lost.seq && c.request["changes"] == lost.request["changes"])
            .collect()
    };
    for (what, lost) in [("takeover", takeover), ("switch", switch)] {
        let again = after(lost);
        eprintln!(
            "{what}: landed with its answer lost, sent again {} time(s) and refused",
            again.len()
        );
        assert!(
            !again.is_empty()
                && again
                    .iter()
                    .all(|c| c.error_code.as_deref() == Some("InvalidChangeBatch")),
            "the same batch sent again after its lost answer, and refused: {again:#?}\n{calls:#?}"
        );
    }
    s.assert_record(&s.endpoint(DR_CACHE), NEW_TTL).await;
    let lease = s
        .route53()
        .await
        .record(HOSTED_ZONE_ID, &lease_name(), "TXT")
        .await
        .expect("the lease reads");
    assert_eq!(lease, None, "the lease was released");

    // The agent's side: it found its own lease and its own switch, and said so; it never
    // stood down, nor heard "another agent holds the lease".
    let names = s.hook.names();
    for never in ["stood_down", "failover_failed"] {
        assert_eq!(s.hook.count(never), 0, "{never} in {names:?}");
    }
    let held_by_another: Vec<Value> = s
        .events("failover_step")
        .into_iter()
        .filter(|e| e.to_string().contains("another agent"))
        .collect();
    assert!(held_by_another.is_empty(), "{held_by_another:#?}");
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    assert_eq!(journal.runs, 1);
    let done = |step: Step| {
        journal
            .entry(step, Phase::Done)
            .map(|e| e.detail.clone())
            .unwrap_or_else(|| panic!("{} never done: {journal:#?}", step.as_str()))
    };
    let lease_detail = done(Step::Lease);
    assert!(
        lease_detail.contains("is already ours (resumed, or our answer was lost)"),
        "{lease_detail}"
    );
    let switch_detail = done(Step::SwitchDns);
    assert!(
        switch_detail.contains("already points at"),
        "{switch_detail}"
    );
    eprintln!(
        "lost answers: the failover completed in {} ms",
        end["detail"]["total_ms"]
    );
    let release_detail = done(Step::Release);
    assert!(release_detail.starts_with("released"), "{release_detail}");
    assert!(
        agent.wait_state(WATCH, "failed_over", EVENT_BOUND).await,
        "{:?}\n{}",
        agent.state(WATCH).await,
        agent.log_text()
    );
    agent.kill9().await;
}

/// How long the executor waits for one `GetChange` answer before it asks its own resolvers:
/// the larger of its poll (500 ms in the daemon) and 5 s.
const GET_CHANGE_BOUND: Duration = Duration::from_secs(5);
/// The agent's probe interval in the lab's config.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);

/// Issue 20, `wait_insync` with Route 53's `GetChange` failing as `fault` says, for longer
/// than the test: the switch lands, and the agent's own resolvers seeing the DR target (the
/// zone's data plane, which answers the change at once) end the wait. Waiting ends within
/// one `GetChange` bound, the old answer's TTL in the agent's resolver cache and a probe
/// round, far inside `insync_timeout` (5 m, not configurable: the resolvers are asked from
/// the start, so it only times the alerts). Returns the `wait_insync` journal detail.
async fn insync_decided_by_the_data_plane(fault: Fault) -> String {
    let s = setup(Mode::AutoFailover, Duration::from_secs(1), &[]).await;
    let agent = s.healthy_agent().await;
    // Nothing calls GetChange before the switch.
    s.fault(fault).await;
    s.fault(region_outage()).await;
    let end = s.failover_end(&agent).await;
    assert_eq!(
        end["event"],
        "failover_completed",
        "{end:#}\n{}",
        agent.log_text()
    );
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .expect("the journal parses")
        .expect("a journal");
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    let insync = journal
        .entry(Step::WaitInsync, Phase::Done)
        .map(|e| e.detail.clone())
        .expect("wait_insync done");
    assert!(insync.contains("decided by the data plane"), "{insync}");
    let dr = s.endpoint(DR_CACHE);
    assert!(
        insync.contains(" resolves to ") && insync.contains(dr.trim_end_matches('.')),
        "{insync}"
    );
    let waited = journal
        .timings()
        .get("wait_insync")
        .copied()
        .expect("wait_insync's time");
    let bound = GET_CHANGE_BOUND + Duration::from_secs(u64::from(LAB_TTL)) + PROBE_INTERVAL;
    eprintln!("GetChange failing: wait_insync ended by the data plane in {waited:?}");
    assert!(
        waited <= bound + Duration::from_secs(3),
        "wait_insync took {waited:?}, beyond GetChange's bound + the old TTL + a round ({bound:?}) and 3 s of slack"
    );
    // The completion came right after: the switch's events to failover_completed.
    let events = s.hook.events();
    let at = |matches: &dyn Fn(&Value) -> bool| {
        events
            .iter()
            .find(|(_, e)| matches(e))
            .map(|(at, _)| *at)
            .expect("the event arrived")
    };
    let switched = at(&step_event("switch_dns", "done"));
    let completed = at(&|e: &Value| e["event"] == "failover_completed");
    eprintln!("switch to failover_completed: {:?}", completed - switched);

    // Route 53's side: GetChange never once said INSYNC (nor anything else), one change of
    // the record, which the DNS serves.
    let calls = s.calls();
    let polled: Vec<&Call> = calls.iter().filter(|c| c.action == "GetChange").collect();
    assert!(!polled.is_empty(), "the agent never asked GetChange");
    assert!(
        polled.iter().all(|c| c.answer_dropped || !c.succeeded()),
        "a GetChange answer reached the agent: {polled:#?}"
    );
    // A switch sent within Route 53's window after the lease's change is refused with
    // PriorRequestNotComplete and sent again (tests/FIDELITY.md, R2): one lands, none after.
    support::once(
        &support::cname_change_attempts(&calls),
        "changes of the record",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    s.assert_record(&dr, NEW_TTL).await;
    assert_eq!(s.hook.count("failover_failed"), 0, "{:?}", s.hook.names());
    // No "not in effect after" alert: insync_timeout was never reached.
    let alerts: Vec<Value> = s
        .events("failover_step")
        .into_iter()
        .filter(|e| e["detail"]["step"] == "wait_insync" && e["detail"]["phase"] == "retrying")
        .collect();
    assert!(alerts.is_empty(), "{alerts:#?}");
    agent.kill9().await;
    insync
}

/// `GetChange` is carried out and never answered (`commit-then-drop` for every call, held
/// 10 minutes): each call of the agent's ends at its own bound, and the data plane decides.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_change_never_answering_the_data_plane_ends_wait_insync() {
    let insync = insync_decided_by_the_data_plane(Fault::CommitThenDrop {
        service: AwsService::Route53,
        action: "GetChange".into(),
        times: 1000,
        hold: Duration::from_secs(600),
    })
    .await;
    assert!(
        insync.contains(&format!(
            "no answer in {}",
            humantime::format_duration(GET_CHANGE_BOUND)
        )),
        "{insync}"
    );
}

/// `GetChange` answering 503 `ServiceUnavailable` for longer than the test: the data plane
/// decides, and the journal keeps what `GetChange` said.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_change_failing_the_data_plane_ends_wait_insync() {
    let insync = insync_decided_by_the_data_plane(api_error_for(
        AwsService::Route53,
        "GetChange",
        "ServiceUnavailable",
        Duration::from_secs(600),
    ))
    .await;
    assert!(insync.contains("ServiceUnavailable"), "{insync}");
}
