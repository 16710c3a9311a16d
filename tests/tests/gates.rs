//! Controlled recovery against the lab, with real processes: gates before the switch
//! (`[[watch.gate]]`) and `mode = "prepare"`, which builds and verifies the DR cache and
//! holds before the record moves until `valkey-dr approve`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{
    Agent, TestLab, Webhook, cname_change_attempts, cname_changes, create_attempts, once,
    region_outage, run_bounded_within, wait_until,
};
use valkey_dr::executor::{FailoverOutcome, HoldEnd, Step};
use valkey_dr_lab::config::{DR_CACHE, HOSTED_ZONE_ID};
use valkey_dr_lab::{PRIMARY_CACHE, RECORD};
use valkey_dr_probes::same_name;

const WATCH: &str = "sessions";
const HEALTHY_BOUND: Duration = Duration::from_secs(20);
/// Outage → down → the DR cache built (provision delay 1 s) and verified → held.
const HELD_BOUND: Duration = Duration::from_secs(60);
const EVENT_BOUND: Duration = Duration::from_secs(20);
const CLI_BOUND: Duration = Duration::from_secs(60);

struct Setup {
    lab: TestLab,
    hook: Webhook,
    config: PathBuf,
    state_dir: PathBuf,
}

/// A lab and a config in `mode`, with reminders every 2 s, gates checked every second, and
/// `gates` (TOML `[[watch.gate]]` tables) added.
async fn setup(mode: &str, gates: &str) -> Setup {
    let lab = TestLab::start_with(|o| {
        o.ttl = Duration::from_secs(5);
        o.insync_delay = Duration::from_millis(500);
        o.provision_delay = Duration::from_secs(1);
    })
    .await;
    let hook = Webhook::start().await;
    let tail = format!(
        "reminder_interval = \"2s\"
gate_interval = \"1s\"
{gates}{}",
        hook.notify_toml()
    );
    let mode_line = format!("mode = \"{mode}\"");
    let config = lab.config_variant(
        "gates.toml",
        &[
            ("ttl = \"5s\"", "ttl = \"30s\""),
            ("mode = \"alert-only\"", &mode_line),
            ("reminder_interval = \"1m\"\n", &tail),
        ],
    );
    let state_dir = lab.dir.path().join("state");
    Setup {
        lab,
        hook,
        config,
        state_dir,
    }
}

impl Setup {
    async fn healthy_agent(&self) -> Agent {
        let agent = Agent::start(&self.config, &self.state_dir, &[]).await;
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "never healthy:\n{}",
            agent.log_text()
        );
        agent
    }

    fn events(&self, name: &str) -> Vec<Value> {
        self.hook
            .events()
            .into_iter()
            .map(|(_, e)| e)
            .filter(|e| e["event"] == name)
            .collect()
    }

    /// Waits (bounded) until `n` events called `name` have arrived; returns them all.
    async fn wait_events(
        &self,
        name: &str,
        n: usize,
        limit: Duration,
        agent: &Agent,
    ) -> Vec<Value> {
        let arrived = wait_until(limit, || async { self.hook.count(name) >= n }).await;
        assert!(
            arrived,
            "fewer than {n} {name} events: {:?}\n{}",
            self.hook.names(),
            agent.log_text()
        );
        self.events(name)
    }

    fn endpoint(&self, cache: &str) -> Option<String> {
        self.lab
            .lab
            .current_info()
            .cache(cache)
            .map(|c| c.endpoint.clone())
    }

    /// The record as Route 53 holds it.
    async fn record_target(&self) -> String {
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.lab.lab.info().aws_endpoint)
            .credentials_provider(aws_sdk_elasticache::config::Credentials::new(
                "AKIDLAB", "secret", None, None, "lab",
            ))
            .load()
            .await;
        let record = support::read_record(
            &valkey_dr::executor::sdk::SdkDns::new(&sdk),
            HOSTED_ZONE_ID,
            RECORD,
        )
        .await
        .expect("the record exists");
        assert_eq!(record.values.len(), 1, "{record:?}");
        record.values[0].clone()
    }

    /// The DR cache is deleted (bounded wait: the lab takes the provision delay to delete).
    async fn assert_dr_cache_gone(&self) {
        let gone = wait_until(Duration::from_secs(20), || async {
            self.endpoint(DR_CACHE).is_none()
        })
        .await;
        assert!(gone, "the DR cache is still there");
    }

    /// The record still points at the primary, and no CNAME change was ever sent.
    async fn assert_record_untouched(&self) {
        let primary = self.endpoint(PRIMARY_CACHE).expect("the primary");
        let target = self.record_target().await;
        assert!(
            same_name(&target, &primary),
            "{RECORD} points at {target}, not the primary {primary}"
        );
        // Attempts, not successes: a change that the compare-and-swap refused was still sent.
        let calls = self.lab.lab.calls();
        let sent = cname_change_attempts(&calls);
        assert!(sent.is_empty(), "a CNAME change was sent: {sent:#?}");
    }

    async fn status(&self, agent: &Agent) -> Value {
        support::watch_status(agent, WATCH)
            .await
            .unwrap_or_else(|| panic!("no /status entry for {WATCH}"))
    }

    async fn metric(&self, agent: &Agent, series: &str) -> Option<f64> {
        let (_, text) = support::agent_get(agent.admin()?, "/metrics").await?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }
}

struct Cli {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn cli(config: &Path, args: &[&str]) -> Cli {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG")
        .env("USER", "alice")
        .stdin(Stdio::null());
    support::lab_aws_env(&mut command);
    let out = run_bounded_within(command, CLI_BOUND).await;
    Cli {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A command gate at `at` that is open once `file` exists, and says why not otherwise.
fn file_gate(at: &str, file: &Path) -> String {
    format!(
        "\n[[watch.gate]]\nname = \"vpn\"\nkind = \"command\"\nat = \"{at}\"\ncommand = [\"sh\", \"-c\", \"test -f {} || {{ echo 'vpn still in us-east-1' >&2; exit 1; }}\"]\ntimeout = \"5s\"\n",
        file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_switch_dns_gate_holds_a_verified_cache_through_kill_9_and_switches_once_it_opens()
{
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("vpn-failed-over");
    let s = setup("auto-failover", &file_gate("switch_dns", &open)).await;
    // `plan` says what may hold the failover, at its step.
    let plan = cli(&s.config, &["plan"]).await;
    assert!(
        plan.stdout
            .contains("held_by_gates: vpn (command sh, timeout 5s, on_timeout hold)"),
        "{}{}",
        plan.stdout,
        plan.stderr
    );
    let agent = s.healthy_agent().await;
    s.lab.fault(region_outage()).await;

    // Built and verified, then held: the record untouched.
    let held = s.wait_events("failover_held", 1, HELD_BOUND, &agent).await;
    let first = &held[0];
    assert_eq!(first["detail"]["hold"]["before"], "switch_dns", "{first:#}");
    assert_eq!(first["detail"]["hold"]["gate"], "vpn", "{first:#}");
    assert_eq!(
        first["detail"]["hold"]["answer"], "vpn: exit status: 1: vpn still in us-east-1",
        "{first:#}"
    );
    let dr = s.endpoint(DR_CACHE).expect("the DR cache was built");
    assert!(
        first["detail"]["dr_endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with(&format!("{dr}:"))),
        "{first:#}"
    );
    let reasons = first["reasons"].to_string();
    assert!(
        reasons.contains("is built and verified") && reasons.contains("approve --watch sessions"),
        "what is ready and the one command that finishes it: {reasons}"
    );
    let steps: Vec<String> = s
        .events("failover_step")
        .iter()
        .filter(|e| e["detail"]["phase"] == "done")
        .map(|e| e["detail"]["step"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(
        steps,
        ["provision", "wait_available", "verify_direct", "lease"]
    );
    s.assert_record_untouched().await;
    once(&create_attempts(&s.lab.lab.calls()), "creates").unwrap();

    // Reminders repeat, /status and the metric show the hold.
    s.wait_events("failover_held", 3, EVENT_BOUND, &agent).await;
    let status = s.status(&agent).await;
    assert_eq!(status["state"], "failing_over", "{status:#}");
    assert_eq!(
        status["last_failover"]["held"]["before"], "switch_dns",
        "{status:#}"
    );
    assert_eq!(
        s.metric(&agent, "valkey_dr_failover_held{watch=\"sessions\"}")
            .await,
        Some(1.0)
    );

    // kill -9 and a restart: still held, nothing built twice, the record untouched.
    agent.kill9().await;
    let before = s.hook.count("failover_held");
    let agent = Agent::start(&s.config, &s.state_dir, &[]).await;
    let again = s
        .wait_events("failover_held", before + 1, HELD_BOUND, &agent)
        .await;
    let resumed = again.last().unwrap();
    assert_eq!(
        resumed["detail"]["hold"]["before"], "switch_dns",
        "{resumed:#}"
    );
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert_eq!(journal.runs, 2);
    assert_eq!(
        journal.holds.len(),
        1,
        "the same hold, resumed: {:?}",
        journal.holds
    );
    assert!(journal.held().is_some());
    // Still held on the resumed run: it goes on checking the closed gate (the journal's
    // count of checks grows), and /status and the metric say held.
    let checks = journal.holds[0].checks;
    let checking = wait_until(EVENT_BOUND, || async {
        valkey_dr::failover::load_journal(&s.state_dir, WATCH)
            .ok()
            .flatten()
            .is_some_and(|j| j.runs == 2 && j.held().is_some_and(|h| h.checks >= checks + 2))
    })
    .await;
    assert!(
        checking,
        "the resumed run stopped checking the gate:\n{}",
        agent.log_text()
    );
    let status = s.status(&agent).await;
    assert_eq!(status["state"], "failing_over", "{status:#}");
    assert_eq!(
        status["last_failover"]["held"]["before"], "switch_dns",
        "{status:#}"
    );
    assert_eq!(
        s.metric(&agent, "valkey_dr_failover_held{watch=\"sessions\"}")
            .await,
        Some(1.0)
    );
    s.assert_record_untouched().await;

    // The gate opens: the failover completes, with exactly one create and one CNAME change.
    std::fs::write(&open, "").unwrap();
    let done = s
        .wait_events("failover_completed", 1, HELD_BOUND, &agent)
        .await;
    assert_eq!(done[0]["detail"]["cache"], DR_CACHE, "{:#}", done[0]);
    let calls = s.lab.lab.calls();
    once(&create_attempts(&calls), "creates").unwrap();
    once(&cname_change_attempts(&calls), "changes of the record").unwrap();
    assert!(same_name(&s.record_target().await, &dr));
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert_eq!(journal.outcome, Some(FailoverOutcome::Completed));
    assert_eq!(journal.holds[0].how, Some(HoldEnd::Opened));
    assert!(journal.held().is_none());
    assert!(
        wait_until(EVENT_BOUND, || async {
            s.metric(&agent, "valkey_dr_failover_held{watch=\"sessions\"}")
                .await
                == Some(0.0)
        })
        .await
    );
    // `history` says the failover was held and how the hold ended.
    let history = cli(&s.config, &["history"]).await;
    assert_eq!(history.code, 0, "{}{}", history.stdout, history.stderr);
    assert!(
        history.stdout.contains("held before switch_dns") && history.stdout.contains("opened"),
        "{}",
        history.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provision_gate_that_times_out_with_abort_builds_nothing_and_says_why() {
    let gate = "\n[[watch.gate]]\nname = \"change-freeze\"\nkind = \"command\"\nat = \"provision\"\ncommand = [\"sleep\", \"30\"]\ntimeout = \"1s\"\non_timeout = \"abort\"\n";
    let s = setup("auto-failover", gate).await;
    let agent = s.healthy_agent().await;
    s.lab.fault(region_outage()).await;
    let aborted = s.wait_events("aborted", 1, HELD_BOUND, &agent).await;
    let reasons = aborted[0]["reasons"].to_string();
    assert!(
        reasons.contains("gate change-freeze before provision did not answer (no answer within 1s; killed) and says on_timeout = \\\"abort\\\"")
            && reasons.contains("was not changed and nothing was built"),
        "{:#}",
        aborted[0]
    );
    assert_eq!(aborted[0]["detail"]["record_untouched"], true);
    let calls = s.lab.lab.calls();
    assert!(
        create_attempts(&calls).is_empty(),
        "{:#?}",
        create_attempts(&calls)
    );
    assert!(s.endpoint(DR_CACHE).is_none(), "no DR cache");
    s.assert_record_untouched().await;
    // `/status` is published every 250 ms (daemon/mod.rs, PUBLISH_EVERY): the event can
    // arrive first.
    let shows_aborted = wait_until(Duration::from_secs(5), || async {
        s.status(&agent).await["last_failover"]["outcome"]["result"] == "aborted"
    })
    .await;
    assert!(shows_aborted, "{:#}", s.status(&agent).await);
    assert_eq!(s.hook.count("failover_held"), 0, "{:?}", s.hook.names());
}

/// Prepare mode, up to the hold: the DR cache built and verified, the record untouched.
async fn prepared(s: &Setup, agent: &Agent) -> Value {
    s.lab.fault(region_outage()).await;
    let held = s.wait_events("failover_held", 1, HELD_BOUND, agent).await;
    let first = held[0].clone();
    assert_eq!(first["detail"]["hold"]["before"], "switch_dns", "{first:#}");
    assert_eq!(first["detail"]["hold"]["approval"], true, "{first:#}");
    support::assert_null_field(&first["detail"]["hold"], "gate");
    assert!(
        first["detail"]["finish"]
            .as_str()
            .is_some_and(|c| c.contains("approve --watch sessions --yes")),
        "{first:#}"
    );
    let intent = &s.events("failover_intent")[0];
    assert_eq!(intent["detail"]["fails_over"], true, "{intent:#}");
    assert!(s.endpoint(DR_CACHE).is_some());
    once(&create_attempts(&s.lab.lab.calls()), "creates").unwrap();
    s.assert_record_untouched().await;
    first
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_mode_holds_a_built_cache_and_approve_switches_within_a_second() {
    let s = setup("prepare", "").await;
    let plan = cli(&s.config, &["plan"]).await;
    assert!(
        plan.stdout
            .contains("held_for_approval: mode = \"prepare\""),
        "{}",
        plan.stdout
    );
    let agent = s.healthy_agent().await;
    prepared(&s, &agent).await;
    // Still held a few reminders later.
    s.wait_events("failover_held", 2, EVENT_BOUND, &agent).await;
    s.assert_record_untouched().await;
    // `status` says it is held and what finishes it, for this config.
    let status = cli(&s.config, &["status"]).await;
    let finish = format!(
        "valkey-dr --config {} approve --watch sessions --yes",
        s.config.display()
    );
    assert!(
        status.stdout.contains("HELD before switch_dns") && status.stdout.contains(&finish),
        "{}{}",
        status.stdout,
        status.stderr
    );

    let asked = Instant::now();
    let approve = cli(&s.config, &["approve", "--watch", WATCH, "--yes"]).await;
    let answered = asked.elapsed();
    assert_eq!(approve.code, 0, "{}{}", approve.stdout, approve.stderr);
    assert!(
        approve.stdout.contains("approved failover fo-") && approve.stdout.contains("as alice@"),
        "{}",
        approve.stdout
    );
    // The switch (the CNAME change reaching Route 53) follows the approval within 1 s.
    let switched = wait_until(Duration::from_secs(10), || async {
        !cname_changes(&s.lab.lab.calls()).is_empty()
    })
    .await;
    let after = asked.elapsed();
    assert!(
        switched,
        "no CNAME change after approve:\n{}",
        agent.log_text()
    );
    assert!(
        after <= answered + Duration::from_secs(1),
        "the switch came {after:?} after approve was run (it answered in {answered:?})"
    );
    let done = s
        .wait_events("failover_completed", 1, HELD_BOUND, &agent)
        .await;
    let approved = &s.events("approved")[0];
    assert!(
        approved["detail"]["by"]
            .as_str()
            .is_some_and(|b| b.starts_with("alice@")),
        "{approved:#}"
    );
    assert_eq!(approved["detail"]["before"], "switch_dns");
    let dr = s.endpoint(DR_CACHE).unwrap();
    assert_eq!(done[0]["detail"]["endpoint"], dr.as_str());
    assert!(same_name(&s.record_target().await, &dr));
    let calls = s.lab.lab.calls();
    once(&create_attempts(&calls), "creates").unwrap();
    once(&cname_change_attempts(&calls), "changes of the record").unwrap();
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert!(journal.plan.approval);
    let hold = &journal.holds[0];
    assert_eq!(
        (hold.step, hold.how),
        (Step::SwitchDns, Some(HoldEnd::Approved))
    );
    assert!(
        hold.approved_by
            .as_deref()
            .is_some_and(|b| b.starts_with("alice@"))
    );
    let status = s.status(&agent).await;
    assert_eq!(
        status["last_failover"]["holds"][0]["approved_by"],
        hold.approved_by.as_deref().unwrap(),
        "{status:#}"
    );
    // A second approve has nothing to approve, and says so.
    let twice = cli(&s.config, &["approve", "--watch", WATCH, "--yes"]).await;
    assert_eq!(twice.code, 1);
    assert!(
        twice.stderr.contains("nothing to approve"),
        "{}",
        twice.stderr
    );
    let history = cli(&s.config, &["history"]).await;
    assert!(
        history.stdout.contains("approved by alice@"),
        "{}",
        history.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepare_mode_abort_with_delete_dr_leaves_no_dr_cache_and_the_record_untouched() {
    let s = setup("prepare", "").await;
    let agent = s.healthy_agent().await;
    prepared(&s, &agent).await;
    let abort = cli(
        &s.config,
        &["abort", "--watch", WATCH, "--yes", "--delete-dr"],
    )
    .await;
    assert_eq!(abort.code, 0, "{}{}", abort.stdout, abort.stderr);
    let aborted = s.wait_events("aborted", 1, EVENT_BOUND, &agent).await;
    assert!(
        aborted[0]["reasons"]
            .to_string()
            .contains(&format!("deleting {DR_CACHE}")),
        "{:#}",
        aborted[0]
    );
    s.assert_dr_cache_gone().await;
    s.assert_record_untouched().await;
    let deletes: Vec<_> = s
        .lab
        .lab
        .calls()
        .into_iter()
        .filter(|c| c.action == "DeleteServerlessCache" && c.status == 200)
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:#?}");
    let journal = valkey_dr::failover::load_journal(&s.state_dir, WATCH)
        .unwrap()
        .unwrap();
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::Aborted { .. })
    ));
    assert_eq!(journal.holds[0].how, Some(HoldEnd::Aborted));
    // Nothing is held any more: the reminders stop.
    let held = s.hook.count("failover_held");
    support::wait_more_rounds(&agent, WATCH, 5, EVENT_BOUND).await;
    assert_eq!(
        s.hook.count("failover_held"),
        held,
        "reminders after the abort"
    );
    assert_eq!(
        s.metric(&agent, "valkey_dr_failover_held{watch=\"sessions\"}")
            .await,
        Some(0.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_failover_ends_by_itself_when_the_primary_answers_again() {
    let s = setup("prepare", "").await;
    let agent = s.healthy_agent().await;
    prepared(&s, &agent).await;
    s.lab
        .fault(valkey_dr_lab::Fault::RegionRestore {
            region: valkey_dr_lab::PRIMARY_REGION.to_owned(),
        })
        .await;
    // rise (2) good rounds of the primary on both paths: the outage is over, so the held
    // failover ends, and the DR cache it built goes with it.
    let aborted = s.wait_events("aborted", 1, EVENT_BOUND, &agent).await;
    let reasons = aborted[0]["reasons"].to_string();
    assert!(
        reasons.contains("the primary answers PING/SET/GET on both paths again")
            && reasons.contains(&format!("deleting {DR_CACHE}")),
        "{:#}",
        aborted[0]
    );
    s.assert_dr_cache_gone().await;
    s.assert_record_untouched().await;
    assert!(
        agent.wait_state(WATCH, "healthy", EVENT_BOUND).await,
        "{:?}",
        agent.state(WATCH).await
    );
    // An approval now finds nothing to approve.
    let late = cli(&s.config, &["approve", "--watch", WATCH, "--yes"]).await;
    assert_eq!(late.code, 1, "{}{}", late.stdout, late.stderr);
    assert!(
        late.stderr.contains("nothing to approve"),
        "{}",
        late.stderr
    );
    s.assert_record_untouched().await;
}

/// The budget is shared through `state_dir`: a `preflight` started by hand on the daemon's
/// host makes no AWS call while the daemon's failover runs (here held for approval), says why
/// it waits, and goes on as soon as the failover ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_run_by_hand_waits_for_the_daemons_failover_and_goes_on_when_it_ends() {
    let s = setup("prepare", "").await;
    let agent = s.healthy_agent().await;
    prepared(&s, &agent).await;
    // The sequence numbers of the IAM simulations, which only readiness and preflight send.
    let simulations = |s: &Setup| -> Vec<u64> {
        s.lab
            .lab
            .calls()
            .iter()
            .filter(|c| c.action == "SimulatePrincipalPolicy")
            .map(|c| c.seq)
            .collect()
    };
    let before = simulations(&s).len();
    let config = s.config.clone();
    let preflight = tokio::spawn(async move { cli(&config, &["preflight"]).await });
    // Alone, preflight's first simulation comes within a second or two; held, none comes.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(!preflight.is_finished(), "preflight did not wait");
    let last_before_abort = s.lab.lab.calls().iter().map(|c| c.seq).max().unwrap();
    let abort = cli(&s.config, &["abort", "--watch", WATCH, "--yes"]).await;
    assert_eq!(abort.code, 0, "{}{}", abort.stdout, abort.stderr);
    let out = tokio::time::timeout(CLI_BOUND, preflight)
        .await
        .expect("preflight ended after the abort")
        .unwrap();
    let sent = simulations(&s);
    assert!(sent.len() > before, "preflight sent no simulation");
    assert!(
        sent[before..].iter().all(|seq| *seq > last_before_abort),
        "an IAM simulation was sent while the failover ran: {sent:?}, the abort came after call {last_before_abort}"
    );
    assert!(
        out.stderr
            .contains("waiting for a failover or failback that another valkey-dr process runs")
            && out.stderr.contains("budget.lock"),
        "{}",
        out.stderr
    );
    assert!(
        out.stdout.contains("permissions"),
        "preflight did not check: {}{}",
        out.stdout,
        out.stderr
    );
}
