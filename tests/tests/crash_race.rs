//! Crash safety and racing agents, end to end: the real `valkey-dr run` in auto-failover mode
//! against labs of their own, a region outage of the primary, and the lab's AWS call log as the
//! witness of what was created and changed.
//!
//! A crash is the debug-only `VALKEY_DR_TEST_CRASH_AT=<step>:<phase>` hook: the process aborts
//! right after that journal entry is durable, as a `kill -9` at that instant would. Trials run
//! concurrently, each with a lab of its own; a semaphore shared by both tests caps how many labs
//! run at once, so that two cores keep probing within their 500 ms timeouts. A trial reports
//! what went wrong instead of panicking, so one run shows every failing trial at once.

mod support;

use std::os::unix::process::ExitStatusExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::StreamExt as _;
use serde_json::Value;
use support::fleet::{Fleet, PEER_TOKEN, auto_config_with, free_port};
use support::{
    Agent, TestLab, Webhook, after_first_success, cname_change_attempts, create_attempts, creates,
    failover_of, once, record_target, region_outage, wait_until, watch_status,
};
use tokio::sync::Semaphore;
use valkey_dr::executor::{FailoverOutcome, Journal, Phase, Step};
use valkey_dr_lab::RECORD;
use valkey_dr_lab::config::DR_CACHE;
use valkey_dr_probes::same_name;

const WATCH: &str = "sessions";
/// The debug-only crash hook's variable.
const CRASH_AT: &str = "VALKEY_DR_TEST_CRASH_AT";
/// How many labs (with their agents) may run at once across this file's tests.
static LABS: Semaphore = Semaphore::const_new(5);

/// Until the first healthy verdict: a few 1 s rounds, with slack for a loaded machine.
const HEALTHY_BOUND: Duration = Duration::from_secs(20);
/// Down takes ~4.5 s, a whole failover ~8–12 s (verify_dns honours the old 5 s TTL); the
/// bound leaves room for a loaded machine without letting a stuck trial hang the suite.
const FAILOVER_BOUND: Duration = Duration::from_secs(90);
/// Webhook deliveries trail the state they report by a little.
const EVENT_BOUND: Duration = Duration::from_secs(10);

/// Returns `Err` with the message when the condition does not hold.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// A lab with fast provisioning and Route 53 changes, and a 5 s record TTL so verify_dns
/// waits only a few seconds.
async fn fast_lab() -> TestLab {
    TestLab::start_with(|o| {
        o.provision_delay = Duration::from_secs(1);
        o.insync_delay = Duration::from_millis(300);
        o.ttl = Duration::from_secs(5);
    })
    .await
}

/// The lab's agent.toml in auto-failover mode, writing its state to `state_dir` and notifying
/// `hook`. The new CNAME's TTL is 30 s (the config allows 30–60 s); the record the lab serves
/// starts at 5 s.
fn auto_config(lab: &TestLab, name: &str, state_dir: &Path, hook: &Webhook) -> PathBuf {
    auto_config_with(lab, name, state_dir, hook, &[])
}

/// Every agent of `fleet` (`agents[i]` posting to `hooks[i]`) reaches `failed_over`, and
/// the lab and the journals show exactly one failover.
async fn failed_over_once(fleet: &Fleet, t: &TestLab, agents: &[Agent], hooks: &[Webhook]) {
    for (i, agent) in agents.iter().enumerate() {
        assert!(
            agent.wait_state(WATCH, "failed_over", FAILOVER_BOUND).await,
            "agent {i} not failed_over: {:?}\n{}",
            hooks[i].names(),
            agent.log_text()
        );
    }
    let dirs: Vec<&Path> = fleet.dirs.iter().map(PathBuf::as_path).collect();
    check_one_failover(t, &dirs)
        .await
        .expect("exactly one failover");
}

/// The DR cache's endpoint, once the failover created it.
fn dr_endpoint(t: &TestLab) -> Option<String> {
    t.lab
        .current_info()
        .cache(DR_CACHE)
        .map(|c| c.endpoint.clone())
}

/// Checks the lab's side of a finished failover: one cache created and no create attempted
/// after it, except by a failover whose journal (among those in `state_dirs`) shows it
/// adopting the cache that already existed; one change of the record and no change of it
/// attempted after that; and the record pointing at the DR cache. Attempts count, not only
/// successes: the lab refuses a second create of the same name, and the compare-and-swap
/// refuses a second switch, so a count of successes could never see them.
async fn check_one_failover(t: &TestLab, state_dirs: &[&Path]) -> Result<(), String> {
    let calls = t.lab.calls();
    let created = creates(&calls);
    ensure!(
        created.len() == 1,
        "{} successful CreateServerlessCache calls, not 1: {created:#?}",
        created.len()
    );
    let journals: Vec<Journal> = state_dirs.iter().filter_map(|d| journal(d).ok()).collect();
    for late in after_first_success(&create_attempts(&calls)) {
        let by = failover_of(late);
        let adopted = journals
            .iter()
            .filter(|j| by.as_deref() == Some(j.plan.failover_id.as_str()))
            .any(documents_adopt);
        ensure!(
            adopted,
            "CreateServerlessCache attempted after the first succeeded, by failover {by:?}, \
             whose journal does not show it adopting the cache: {late:#?}"
        );
    }
    once(
        &cname_change_attempts(&calls),
        &format!("changes of {RECORD}"),
    )?;
    // The lease was taken once and dropped once (a resumed run may find it already taken or
    // released): nothing of it is left to block the next failover.
    let lease_balance: i64 = calls
        .iter()
        .filter(|c| c.action == "ChangeResourceRecordSets" && c.succeeded())
        .flat_map(|c| c.request["changes"].as_array().cloned().unwrap_or_default())
        .filter(|ch| {
            ch["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("_valkey-dr-lock."))
        })
        .map(|ch| match ch["action"].as_str() {
            Some("CREATE") => 1,
            Some("DELETE") => -1,
            _ => 0,
        })
        .sum();
    ensure!(
        lease_balance == 0,
        "the lease was left behind (creates minus deletes = {lease_balance})"
    );
    let dr = dr_endpoint(t).ok_or("the lab has no DR cache")?;
    let target = record_target(t).await;
    ensure!(
        target.as_deref().is_some_and(|t| same_name(t, &dr)),
        "{RECORD} points at {target:?}, not the DR cache {dr}"
    );
    Ok(())
}

/// Whether the journal's provision step says that the cache existed already and was adopted
/// (an SDK retry, a race whose loser found the winner's cache), or that another failover had
/// built it and pointed the record at it.
fn documents_adopt(j: &Journal) -> bool {
    j.entries.iter().any(|e| {
        e.step == Step::Provision
            && (e.detail.contains("adopted") || e.detail.contains("already built"))
    })
}

fn journal(state_dir: &Path) -> Result<Journal, String> {
    valkey_dr::failover::load_journal(state_dir, WATCH)
        .map_err(|e| format!("the journal does not parse: {e:#}"))?
        .ok_or_else(|| format!("no journal in {}", state_dir.display()))
}

fn steps(entries: &[valkey_dr::executor::JournalEntry]) -> Vec<(Step, Phase)> {
    entries.iter().map(|e| (e.step, e.phase)).collect()
}

/// Every step in `range` started then done, in order.
fn started_then_done(range: &[Step]) -> Vec<(Step, Phase)> {
    range
        .iter()
        .flat_map(|s| [(*s, Phase::Started), (*s, Phase::Done)])
        .collect()
}

/// The end of a log, for failure messages.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn hook_events(hook: &Webhook, name: &str) -> Vec<Value> {
    hook.events()
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e["event"] == name)
        .collect()
}

/// One crash trial: an agent that aborts right after `step`'s `phase` entry, a restart without
/// the hook, and a failover that completes exactly once.
async fn crash_trial(step: Step, phase: Phase) -> Result<String, String> {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let started = tokio::time::Instant::now();
    let crash_at = format!(
        "{}:{}",
        step.as_str(),
        match phase {
            Phase::Started => "started",
            _ => "done",
        }
    );
    let t = fast_lab().await;
    let hook = Webhook::start().await;
    let state_dir = t.dir.path().join("agent-state");
    let config = auto_config(&t, "crash.toml", &state_dir, &hook);
    let log = |agent: &Agent| tail(&agent.log_text(), 60);

    let mut first = Agent::start(&config, &state_dir, &[(CRASH_AT, crash_at.as_str())]).await;
    ensure!(
        first.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "never healthy:\n{}",
        log(&first)
    );
    t.fault(region_outage()).await;
    let exit = tokio::time::timeout(FAILOVER_BOUND, first.child.wait()).await;
    let status = match exit {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => return Err(format!("waiting for the agent: {e}")),
        Err(_) => {
            return Err(format!(
                "the agent did not crash at {crash_at} within {FAILOVER_BOUND:?}:\n{}",
                log(&first)
            ));
        }
    };
    ensure!(
        status.signal() == Some(libc::SIGABRT),
        "the agent exited with {status:?}, not the crash hook's SIGABRT:\n{}",
        log(&first)
    );

    // What the crashed run left behind: every step before `step` finished, `step`'s entry
    // last, and no outcome (so the next start resumes it).
    let at = Step::ALL.iter().position(|s| *s == step).unwrap();
    let before = journal(&state_dir)?;
    let mut expected = started_then_done(&Step::ALL[..at]);
    expected.push((step, Phase::Started));
    if phase == Phase::Done {
        expected.push((step, Phase::Done));
    }
    ensure!(
        steps(&before.entries) == expected && before.runs == 1 && before.outcome.is_none(),
        "after the crash the journal holds runs {} outcome {:?} entries {:?}, expected runs 1, \
         no outcome, entries {expected:?}",
        before.runs,
        before.outcome,
        steps(&before.entries)
    );

    let second = Agent::start(&config, &state_dir, &[]).await;
    ensure!(
        second
            .wait_state(WATCH, "failed_over", FAILOVER_BOUND)
            .await,
        "not failed_over after the restart ({:?}):\n{}",
        watch_status(&second, WATCH).await,
        log(&second)
    );

    check_one_failover(&t, &[&state_dir])
        .await
        .map_err(|e| format!("{e}\n{}", log(&second)))?;

    // The journal shows the resume: the crashed run's entries unchanged, then what was left.
    let after = journal(&state_dir)?;
    ensure!(
        after.runs == 2 && after.outcome == Some(FailoverOutcome::Completed),
        "final journal: runs {} outcome {:?}, expected 2 and completed",
        after.runs,
        after.outcome
    );
    ensure!(
        after.entries.starts_with(&before.entries),
        "the resumed run rewrote the crashed run's entries:\nbefore {:?}\nafter {:?}",
        before.entries,
        after.entries
    );
    let resumed_from = if phase == Phase::Done { at + 1 } else { at };
    let rest = started_then_done(&Step::ALL[resumed_from..]);
    ensure!(
        steps(&after.entries[before.entries.len()..]) == rest,
        "after the restart the journal has {:?}, expected {rest:?}",
        steps(&after.entries[before.entries.len()..])
    );
    let restarted = before.entries.last().map(|e| e.at).unwrap();
    ensure!(
        after.entries[before.entries.len()..]
            .iter()
            .all(|e| e.at >= restarted),
        "entries after the restart are dated before the crash: {:?}",
        after.entries
    );

    let status = watch_status(&second, WATCH).await.unwrap_or_default();
    let last = &status["last_failover"];
    ensure!(
        last["runs"] == 2
            && last["outcome"]["result"] == "completed"
            && last["failover_id"] == before.plan.failover_id.as_str(),
        "/status last_failover: {last}"
    );

    // People hear of the resume and of one completion, by the second run.
    let heard = wait_until(EVENT_BOUND, || async {
        hook.count("failover_completed") >= 1
    })
    .await;
    ensure!(heard, "no failover_completed event: {:?}", hook.names());
    let resumes: Vec<Value> = hook_events(&hook, "failover_started")
        .into_iter()
        .filter(|e| e["detail"]["resumed"] == true)
        .collect();
    ensure!(
        resumes.len() == 1 && resumes[0]["detail"]["trigger"] == "resume",
        "expected one resumed failover_started: {resumes:#?}"
    );
    let completed = hook_events(&hook, "failover_completed");
    ensure!(
        completed.len() == 1 && completed[0]["detail"]["runs"] == 2,
        "expected one failover_completed of run 2: {completed:#?}"
    );
    ensure!(
        hook.count("failover_failed") == 0,
        "failover_failed: {:?}",
        hook.names()
    );

    drop(second);
    t.lab.shutdown().await;
    drop(t.dir);
    Ok(format!(
        "{crash_at}: resumed and completed in {:.1}s",
        started.elapsed().as_secs_f64()
    ))
}

/// Prints each trial's line and fails with every failing trial's report, not just the first.
fn verdict(results: Vec<Result<String, String>>) {
    let mut failures = Vec::new();
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(line) => eprintln!("trial {i}: {line}"),
            Err(e) => failures.push(format!("trial {i}: {e}")),
        }
    }
    assert!(
        failures.is_empty(),
        "{} trial(s) failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_any_step_resumes_to_exactly_one_failover() {
    // After each step's effect, then before it (the crash between "started" and the call).
    let points = [Phase::Done, Phase::Started]
        .into_iter()
        .flat_map(|p| Step::ALL.map(|s| (s, p)));
    let results = futures::future::join_all(points.map(|(s, p)| crash_trial(s, p))).await;
    verdict(results);
}

/// One racing agent, with its own webhook and state directory (its journal).
struct Racer {
    hook: Webhook,
    state_dir: PathBuf,
    agent: Agent,
}

/// One race: three agents with the same config (each its own state directory, as on three
/// hosts) see the same region outage and fail over at about the same time.
async fn race_trial(trial: usize) -> Result<String, String> {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let started = tokio::time::Instant::now();
    let t = fast_lab().await;
    // Started together, so that their 1 s rounds are nearly in phase and all three see the
    // outage in the same round: a real race for the lease, not a queue.
    let lab = &t;
    let racers = futures::future::join_all(["a", "b", "c"].map(|name| async move {
        let hook = Webhook::start().await;
        let state_dir = lab.dir.path().join(format!("state-{name}"));
        let config = auto_config(lab, &format!("agent-{name}.toml"), &state_dir, &hook);
        let agent = Agent::start(&config, &state_dir, &[]).await;
        Racer {
            hook,
            state_dir,
            agent,
        }
    }))
    .await;
    for (i, r) in racers.iter().enumerate() {
        ensure!(
            r.agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "agent {i} never healthy:\n{}",
            tail(&r.agent.log_text(), 40)
        );
    }
    t.fault(region_outage()).await;

    for (i, r) in racers.iter().enumerate() {
        ensure!(
            r.agent
                .wait_state(WATCH, "failed_over", FAILOVER_BOUND)
                .await,
            "agent {i} not failed_over ({:?}); events {:?}:\n{}",
            watch_status(&r.agent, WATCH).await,
            r.hook.names(),
            tail(&r.agent.log_text(), 60)
        );
    }
    let dirs: Vec<&Path> = racers.iter().map(|r| r.state_dir.as_path()).collect();
    check_one_failover(&t, &dirs).await?;

    // Each agent's account of it: the one that changed the record completed its own failover;
    // each other stood down (then followed), or found the work already done.
    for r in &racers {
        let heard = wait_until(EVENT_BOUND, || async {
            r.hook.count("failover_completed") >= 1
        })
        .await;
        ensure!(heard, "no failover_completed: {:?}", r.hook.names());
    }
    let mut actors = Vec::new();
    let mut report = Vec::new();
    for (i, r) in racers.iter().enumerate() {
        let j = journal(&r.state_dir)?;
        let names = r.hook.names();
        ensure!(
            r.hook.count("failover_failed") == 0,
            "agent {i} reported a failed failover: {:#?}\njournal {:#?}",
            hook_events(&r.hook, "failover_failed"),
            j
        );
        let completed = hook_events(&r.hook, "failover_completed");
        let own: Vec<&Value> = completed
            .iter()
            .filter(|e| e["detail"]["by_another_agent"] != true)
            .collect();
        let switched = j
            .entry(Step::SwitchDns, Phase::Done)
            .map(|e| e.detail.clone());
        let changed_record = switched.as_deref().is_some_and(|d| d.contains('→'));
        if changed_record {
            ensure!(
                own.len() == 1 && j.outcome == Some(FailoverOutcome::Completed),
                "agent {i} changed the record but reported {names:?}, outcome {:?}",
                j.outcome
            );
            actors.push(i);
            report.push(format!("{i}: failed over"));
        } else if r.hook.count("stood_down") == 1 {
            ensure!(
                own.is_empty()
                    && completed.len() == 1
                    && matches!(j.outcome, Some(FailoverOutcome::StoodDown { .. })),
                "agent {i} stood down, then reported {names:?}, outcome {:?}",
                j.outcome
            );
            // The build comes before the lease (issue 20): it built the one cache or adopted
            // it, then found the lease held or the record already switched, and never
            // reached the switch.
            ensure!(
                !j.started(Step::SwitchDns),
                "agent {i} stood down after beginning the switch: {:#?}",
                j.entries
            );
            report.push(format!("{i}: stood down"));
        } else {
            ensure!(
                own.len() == 1
                    && j.outcome == Some(FailoverOutcome::Completed)
                    && switched
                        .as_deref()
                        .is_some_and(|d| d.contains("already points at")),
                "agent {i} neither changed the record, stood down, nor found it done: \
                 events {names:?}\njournal {j:#?}"
            );
            report.push(format!("{i}: found it done"));
        }
    }
    ensure!(
        actors.len() == 1,
        "{} agents changed the record: {actors:?}",
        actors.len()
    );

    for r in racers {
        drop(r.agent);
    }
    t.lab.shutdown().await;
    drop(t.dir);
    Ok(format!(
        "race {trial}: {} in {:.1}s",
        report.join(", "),
        started.elapsed().as_secs_f64()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_racing_agents_fail_over_exactly_once() {
    let results: Vec<_> = futures::stream::iter(0..10)
        .map(race_trial)
        .buffer_unordered(4)
        .collect()
        .await;
    verdict(results);
}

/// Issue 8, defect 10: the daemon persists the state that spends its failover intent only
/// once the failover's journal is on disk. An agent killed right after that state was saved
/// (the `intent` crash point) restarts into the same outage, finds the journal and fails over;
/// with the old order it found the intent spent and no journal, and never failed over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_intent_is_saved_still_fails_over() {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let t = fast_lab().await;
    let hook = Webhook::start().await;
    let state_dir = t.dir.path().join("agent-state");
    let config = auto_config(&t, "intent.toml", &state_dir, &hook);

    let mut first = Agent::start(&config, &state_dir, &[(CRASH_AT, "intent")]).await;
    assert!(
        first.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "never healthy:\n{}",
        first.log_text()
    );
    t.fault(region_outage()).await;
    let status = tokio::time::timeout(FAILOVER_BOUND, first.child.wait())
        .await
        .unwrap_or_else(|_| panic!("no crash at the intent:\n{}", first.log_text()))
        .expect("waiting for the agent");
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{}", first.log_text());
    let saved = std::fs::read_to_string(state_dir.join(format!("watch-{WATCH}.json")))
        .expect("the watch state was saved");
    assert!(saved.contains("failover_intent_at"), "{saved}");
    let begun = journal(&state_dir).expect("the journal was on disk before the state");
    assert!(begun.outcome.is_none() && begun.runs == 0, "{begun:#?}");

    let second = Agent::start(&config, &state_dir, &[]).await;
    assert!(
        second
            .wait_state(WATCH, "failed_over", FAILOVER_BOUND)
            .await,
        "not failed_over after the restart ({:?}):\n{}",
        watch_status(&second, WATCH).await,
        second.log_text()
    );
    check_one_failover(&t, &[&state_dir])
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", second.log_text()));
    let done = journal(&state_dir).unwrap();
    assert_eq!(done.plan.failover_id, begun.plan.failover_id);
    assert_eq!(done.outcome, Some(FailoverOutcome::Completed));
    drop(second);
    t.lab.shutdown().await;
}

/// A forger that holds the peers' token, on `ports`: the first answers every `/vote` with
/// `down` as agent-a, signed with a key of its own; the second replays the answer it got
/// from the real agent-a (admin port `real`) to an ask of its own. They end with the test's
/// runtime.
async fn forge_votes(ports: [u16; 2], real: u16) -> [tokio::task::JoinHandle<()>; 2] {
    use valkey_dr::control::status::VoteAnswer;
    let (text, _) = valkey_dr::identity::Identity::generate().expect("key");
    let key = valkey_dr::identity::Identity::from_file_text(&text).expect("key");
    let real = std::net::SocketAddr::from(([127, 0, 0, 1], real));
    let token = valkey_dr::control::AdminToken::shared(PEER_TOKEN);
    let path = format!("/vote?watch={WATCH}&nonce=00112233445566778899aabbccddeeff");
    let (code, captured) = valkey_dr::control::client::request(
        real,
        "GET",
        &path,
        Some(&token),
        Duration::from_secs(2),
    )
    .await
    .expect("the forger asks agent-a once");
    assert_eq!(code, 200, "{captured}");
    let forged = move |nonce: &str| {
        let answer = VoteAnswer {
            agent_id: "agent-a".into(),
            down: true,
            state: "down".into(),
            watch: WATCH.into(),
            why: "both paths down".into(),
            nonce: None,
            round_at: u64::try_from(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis(),
            )
            .unwrap(),
            signature: None,
        };
        serde_json::to_string(&answer.sign(nonce.to_owned(), &key)).unwrap()
    };
    [
        answer_votes(ports[0], forged).await,
        answer_votes(ports[1], move |_| captured.clone()).await,
    ]
}

/// An HTTP server on `port` answering each request with `body(nonce of the request)`.
async fn answer_votes(
    port: u16,
    body: impl Fn(&str) -> String + Send + Sync + 'static,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the forger");
    let body = std::sync::Arc::new(body);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let body = body.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n")
                    && head.len() < 8192
                    && matches!(stream.read(&mut byte).await, Ok(1))
                {
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let nonce = head
                    .split([' ', '?', '&'])
                    .find_map(|p| p.strip_prefix("nonce="))
                    .unwrap_or_default()
                    .to_owned();
                let body = body(&nonce);
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            });
        }
    })
}

/// Issue 10, case 2: three auto-failover agents with `quorum = 2`. One alone loses its path
/// to the cache (its resolver gives the right names, but the port is dead for it, while AWS
/// still answers it): it announces `failover_blocked` with the quorum guard and every peer's
/// vote, and nothing is built or changed. Once its network is repaired, a real region outage
/// fails over exactly once.
///
/// Issue 23: the cut-off agent also lists, first, a forger holding the peers' token: one
/// address answers `down` as agent-a signed with a key not in peer_keys, another replays
/// agent-a's real signed answer to an earlier ask. Neither is counted, so the one forged
/// vote does not make a quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_cannot_fail_over_alone_but_a_quorum_can() {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let t = fast_lab().await;
    let fleet = Fleet::new(&t).await;
    let ports = fleet.ports;
    let forgers = [free_port(), free_port()];
    let dead_port = free_port();
    let lab_port = std::fs::read_to_string(t.config())
        .expect("agent.toml")
        .lines()
        .find(|l| l.starts_with("port = "))
        .expect("agent.toml names the port")
        .to_owned();
    let config_of = |i: usize, hook: &Webhook, cut_off: bool| {
        // The forgers first: were the first claim of an id to win, theirs would.
        let forged: &[u16] = if cut_off { &forgers } else { &[] };
        let dead = format!("port = {dead_port}");
        let mut edits = Vec::new();
        if cut_off {
            edits.push((lab_port.as_str(), dead.as_str()));
        }
        let prefix = if cut_off { "quorum-cut" } else { "quorum" };
        (
            fleet.config(&t, i, prefix, hook, forged, &edits),
            fleet.dirs[i].clone(),
        )
    };
    let hooks = [
        Webhook::start().await,
        Webhook::start().await,
        Webhook::start().await,
    ];
    let mut agents = Vec::new();
    for (i, hook) in hooks.iter().enumerate().take(2) {
        let (config, state_dir) = config_of(i, hook, false);
        let agent = Agent::start(&config, &state_dir, &[]).await;
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "agent {i} never healthy:\n{}",
            agent.log_text()
        );
        agents.push(agent);
    }
    let _forgers = forge_votes(forgers, ports[0]).await;
    let (cut_config, c_state) = config_of(2, &hooks[2], true);
    let cut = Agent::start(&cut_config, &c_state, &[]).await;

    // The cut-off agent judges the cache down, asks its peers, and is refused.
    assert!(
        wait_until(FAILOVER_BOUND, || async {
            hooks[2].count("failover_blocked") >= 1
        })
        .await,
        "no failover_blocked from the cut-off agent: {:?}\n{}",
        hooks[2].names(),
        cut.log_text()
    );
    let blocked = hook_events(&hooks[2], "failover_blocked").remove(0);
    let quorum = &blocked["detail"]["quorum"];
    assert_eq!(quorum["reached"], false, "{blocked:#}");
    assert_eq!(quorum["needed"], 2, "{blocked:#}");
    assert_eq!(quorum["down"], 1, "{blocked:#}");
    let votes = quorum["votes"].as_array().expect("votes");
    let mut voters: Vec<&str> = votes
        .iter()
        .filter_map(|v| v["agent_id"].as_str())
        .collect();
    voters.sort_unstable();
    assert_eq!(voters, ["agent-a", "agent-b"], "{blocked:#}");
    let counted = votes.iter().filter(|v| v["agent_id"].is_string());
    assert!(counted.clone().all(|v| v["vote"] == "up"), "{blocked:#}");
    assert_eq!(counted.count(), 2, "{blocked:#}");
    let forged: Vec<String> = votes
        .iter()
        .filter(|v| v["agent_id"].is_null())
        .map(|v| format!("{} {}", v["vote"], v["why"]))
        .collect();
    assert_eq!(forged.len(), 2, "{blocked:#}");
    assert!(
        forged[0].contains("no_answer") && forged[0].contains("signed by a key not in peer_keys"),
        "{forged:?}"
    );
    assert!(
        forged[1].contains("no_answer") && forged[1].contains("replayed nonce"),
        "{forged:?}"
    );
    let guards = blocked["detail"]["guards"].as_array().expect("guards");
    assert!(
        guards
            .iter()
            .any(|g| g["guard"] == "quorum" && g["passed"] == false),
        "{blocked:#}"
    );
    assert!(
        blocked["reasons"].to_string().contains("quorum BLOCKS"),
        "{blocked:#}"
    );
    // `/status` is republished every 250 ms: it may trail the webhook a little.
    assert!(
        wait_until(EVENT_BOUND, || async {
            watch_status(&cut, WATCH)
                .await
                .is_some_and(|s| s["quorum"]["reached"] == false)
        })
        .await,
        "/status never showed the short quorum: {:#?}",
        watch_status(&cut, WATCH).await
    );
    // A few more rounds: still nothing built, the record untouched, nothing even tried.
    support::wait_more_rounds(&cut, WATCH, 3, EVENT_BOUND).await;
    let calls = t.lab.calls();
    assert!(
        create_attempts(&calls).is_empty(),
        "{:#?}",
        create_attempts(&calls)
    );
    assert!(
        cname_change_attempts(&calls).is_empty(),
        "{:#?}",
        cname_change_attempts(&calls)
    );
    assert_eq!(
        hooks[2].count("failover_started"),
        0,
        "{:?}",
        hooks[2].names()
    );

    // Its network is repaired (the same agent, restarted on the lab's port), then the region
    // goes away for everyone: a quorum forms and exactly one failover happens.
    cut.kill9().await;
    let (config, _) = config_of(2, &hooks[2], false);
    let healed = Agent::start(&config, &c_state, &[]).await;
    assert!(
        healed.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "the repaired agent never healthy:\n{}",
        healed.log_text()
    );
    agents.push(healed);
    t.fault(region_outage()).await;
    failed_over_once(&fleet, &t, &agents, &hooks).await;
    let intents: Vec<Value> = hooks
        .iter()
        .flat_map(|h| hook_events(h, "failover_intent"))
        .collect();
    assert!(
        intents
            .iter()
            .any(|e| e["detail"]["quorum"]["reached"] == true),
        "no intent carried a reached quorum: {intents:#?}"
    );
}

/// Issue 20, item 6: three auto-failover agents with `quorum = 2`. One of them, "cut", has a
/// resolver that sends the primary's endpoint to a dead address and refuses every other name,
/// while AWS's API still answers it. Before the outage it votes `down` alone and is blocked by
/// the quorum. On a real region outage it is the first to see a quorum and builds the DR
/// cache, then fails at `verify_direct` on its own side (its resolver refuses the DR name),
/// says so, takes no lease and votes no more `down`; the two healthy agents adopt its cache
/// and one of them switches the record, within detection + build + 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_never_stands_in_the_way_of_the_fleet() {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let t = fast_lab().await;
    let fleet = Fleet::new(&t).await;
    let primary = t
        .lab
        .info()
        .cache(valkey_dr_lab::PRIMARY_CACHE)
        .expect("the lab's primary")
        .endpoint
        .clone();
    // Nothing listens on 127.0.0.0/16: the lab's fronts are on 127.1.0.1 and above.
    let dead = std::net::Ipv4Addr::new(127, 0, 0, 9);
    let resolver = t
        .lab
        .cut_off_resolver(&[(primary.as_str(), dead)])
        .await
        .expect("the cut-off resolver");
    let text = std::fs::read_to_string(t.config()).expect("agent.toml");
    let lab_nameservers = text
        .lines()
        .find(|l| l.starts_with("nameservers = "))
        .expect("agent.toml names its nameservers")
        .to_owned();
    let cut_nameservers = format!("nameservers = [\"{}\"]", resolver.addr);
    let hooks = [
        Webhook::start().await,
        Webhook::start().await,
        Webhook::start().await,
    ];
    let config_of = |i: usize| {
        let cut = [(lab_nameservers.as_str(), cut_nameservers.as_str())];
        let edits: &[(&str, &str)] = if i == 2 { &cut } else { &[] };
        (
            fleet.config(&t, i, "cut", &hooks[i], &[], edits),
            fleet.dirs[i].clone(),
        )
    };
    let mut agents = Vec::new();
    for i in 0..2 {
        let (config, state_dir) = config_of(i);
        let agent = Agent::start(&config, &state_dir, &[]).await;
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "agent {i} never healthy:\n{}",
            agent.log_text()
        );
        agents.push(agent);
    }
    let (cut_config, cut_state) = config_of(2);
    let cut = Agent::start(&cut_config, &cut_state, &[]).await;

    // Before the outage: the cut-off agent judges the cache down and is refused a quorum.
    assert!(
        wait_until(FAILOVER_BOUND, || async {
            hooks[2].count("failover_blocked") >= 1
        })
        .await,
        "no failover_blocked from the cut-off agent: {:?}\n{}",
        hooks[2].names(),
        cut.log_text()
    );
    support::wait_more_rounds(&cut, WATCH, 3, EVENT_BOUND).await;
    let calls = t.lab.calls();
    assert!(
        create_attempts(&calls).is_empty() && cname_change_attempts(&calls).is_empty(),
        "something was built or switched while the cache was healthy: {:#?} {:#?}",
        create_attempts(&calls),
        cname_change_attempts(&calls)
    );

    // The region goes away for everyone.
    let outage_at = tokio::time::Instant::now();
    t.fault(region_outage()).await;
    let dr_switched = wait_until(FAILOVER_BOUND, || async {
        match (dr_endpoint(&t), record_target(&t).await) {
            (Some(dr), Some(target)) => same_name(&dr, &target),
            _ => false,
        }
    })
    .await;
    let switched_after = outage_at.elapsed();
    assert!(
        dr_switched,
        "the record never switched: a {:?}, b {:?}, cut {:?}\n{}",
        hooks[0].names(),
        hooks[1].names(),
        hooks[2].names(),
        cut.log_text()
    );
    // Detection: the first healthy agent's `down`; the build: the builder's provision and
    // wait_available, from its journal.
    let down_after = [&hooks[0], &hooks[1]]
        .iter()
        .flat_map(|h| h.events())
        .filter(|(_, e)| e["event"] == "down")
        .map(|(at, _)| at.duration_since(outage_at))
        .min()
        .expect("a healthy agent announced down");
    let builder = journal(&cut_state).expect("the cut-off agent's journal");
    let timings = builder.timings();
    let build = timings.get("provision").copied().unwrap_or_default()
        + timings.get("wait_available").copied().unwrap_or_default();
    let bound = down_after + build + Duration::from_secs(10);
    assert!(
        switched_after <= bound,
        "switched {switched_after:?} after the outage, beyond detection {down_after:?} + build {build:?} + 10 s"
    );
    eprintln!(
        "cut-off fleet: record switched {switched_after:?} after the outage (down after {down_after:?}, build {build:?})"
    );
    failed_over_once(&fleet, &t, &agents, &hooks).await;

    // The cut-off agent built the cache, failed on its own side, and said so.
    assert!(
        wait_until(EVENT_BOUND, || async {
            hooks[2].count("failover_failed") >= 1
        })
        .await,
        "no failover_failed from the cut-off agent: {:?}\n{}",
        hooks[2].names(),
        cut.log_text()
    );
    let failed = hook_events(&hooks[2], "failover_failed").remove(0);
    assert_eq!(failed["detail"]["own_side"], true, "{failed:#}");
    assert_eq!(failed["detail"]["step"], "verify_direct", "{failed:#}");
    let reasons = failed["reasons"].to_string();
    assert!(
        reasons.contains("own side") && reasons.contains("own resolver"),
        "{failed:#}"
    );
    assert!(
        builder.entries.iter().all(|e| e.step != Step::Lease),
        "the cut-off agent took no lease: {:#?}",
        builder.entries
    );
    let vote = watch_status(&cut, WATCH)
        .await
        .expect("the cut-off agent's status");
    assert_eq!(
        vote["vote"]["outage_evidence"], false,
        "the cut-off agent votes no more down: {vote:#}"
    );
}

/// `pause` on one agent of a quorum pauses its peers too (relayed with the peers' token,
/// signed by the relaying agent, and never relayed further), and says which peer it could
/// not reach; the peer's event and `/status` name the agent it came from; `resume` likewise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_reaches_every_peer_and_names_the_one_it_missed() {
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let t = fast_lab().await;
    let token_file = t.dir.path().join("peer-token");
    std::fs::write(&token_file, format!("{PEER_TOKEN}\n")).expect("token");
    let (key_files, peer_keys) = support::peer_keys(t.dir.path(), &["agent-a", "agent-b"]).await;
    let ports = [free_port(), free_port()];
    // Listed as a peer, but nothing listens there.
    let missing = free_port();
    let token = toml::Value::String(token_file.to_string_lossy().into_owned()).to_string();
    let hooks = [Webhook::start().await, Webhook::start().await];
    let mut agents = Vec::new();
    let mut configs = Vec::new();
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        let agent = format!(
            "admin_listen = \"127.0.0.1:{}\"\npeers = [\"127.0.0.1:{}\", \"127.0.0.1:{missing}\"]\nquorum = 2\npeer_token_file = {token}\nkey_file = {}\npeer_keys = {peer_keys}",
            ports[i],
            ports[1 - i],
            key_files[i],
        );
        let id = format!("id = \"agent-{name}\"");
        let state_dir = t.dir.path().join(format!("state-{name}"));
        let config = auto_config_with(
            &t,
            &format!("pause-{name}.toml"),
            &state_dir,
            &hooks[i],
            &[
                ("id = \"lab-agent\"", id.as_str()),
                ("admin_listen = \"127.0.0.1:0\"", agent.as_str()),
            ],
        );
        let started = Agent::start(&config, &state_dir, &[]).await;
        assert!(
            started.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "agent {name} never healthy:\n{}",
            started.log_text()
        );
        agents.push(started);
        configs.push(config);
    }
    let cli = |args: &[&str]| {
        let mut command = tokio::process::Command::new(support::agent_bin());
        command
            .args(args)
            .arg("--config")
            .arg(&configs[0])
            .env_remove("VALKEY_DR_CONFIG");
        support::run_bounded(command)
    };
    let out = cli(&[
        "pause",
        "--reason",
        "failover drill in staging",
        "--for",
        "10m",
    ])
    .await;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    // Applied here and on agent-b; the missing peer is named, so the exit code is 1.
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("(agent-b): done"), "{stdout}");
    assert!(
        stdout.contains(&format!("peer 127.0.0.1:{missing}: NOT done")),
        "{stdout}"
    );
    assert!(
        !stdout.contains("agent-a"),
        "an agent never relays to itself: {stdout}"
    );
    for (agent, name) in agents.iter().zip(["a", "b"]) {
        assert!(
            agent.wait_state(WATCH, "paused", EVENT_BOUND).await,
            "agent {name} not paused:\n{}",
            agent.log_text()
        );
    }
    let (_, body) = agents[1].status_get().await.unwrap();
    let status: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        status["watches"][0]["pause"]["reason"], "failover drill in staging",
        "{status:#}"
    );
    assert!(
        status["watches"][0]["pause"]["until"].is_string(),
        "{status:#}"
    );
    assert_eq!(
        status["watches"][0]["pause"]["origin"], "agent-a",
        "{status:#}"
    );
    assert!(
        wait_until(EVENT_BOUND, || async { hooks[1].count("paused") == 1 }).await,
        "agent-b announced its pause once: {:?}",
        hooks[1].names()
    );
    let paused = hook_events(&hooks[1], "paused").remove(0);
    assert!(
        paused["reasons"]
            .to_string()
            .contains("relayed from agent-a"),
        "{paused:#}"
    );
    let (_, body) = agents[0].status_get().await.expect("agent-a's /status");
    let own: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(own["watches"][0]["pause"]["origin"], "owner", "{own:#}");

    let out = cli(&["resume"]).await;
    assert_eq!(out.status.code(), Some(1), "the missing peer again");
    for agent in &agents {
        assert!(agent.wait_state(WATCH, "healthy", EVENT_BOUND).await);
    }
}

/// How long Route 53's API stays down with us-east-1 in the fleet's acceptance test.
const ROUTE53_DOWN: Duration = Duration::from_secs(60);

/// Issue 20: three auto-failover agents with `quorum = 2` see a region outage that takes
/// Route 53's API with it for 60 s. The DR cache is built (once, the others adopting it)
/// while no Route 53 call succeeds; when Route 53 answers again the agents race for the
/// lease, and the record moves once, within 2 s: one create, one change of the record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_fleet_builds_while_route53_is_down_and_switches_once_within_2_s_of_it_answering()
{
    let _slot = LABS.acquire().await.expect("the semaphore stays open");
    let t = fast_lab().await;
    let fleet = Fleet::new(&t).await;
    let hooks = [
        Webhook::start().await,
        Webhook::start().await,
        Webhook::start().await,
    ];
    let dirs = fleet.dirs.clone();
    let config_of = |i: usize| fleet.config(&t, i, "r53", &hooks[i], &[], &[]);
    // Started together, so that their rounds are nearly in phase: a real race.
    let agents = futures::future::join_all((0..3).map(|i| {
        let config = config_of(i);
        let dir = &dirs[i];
        async move { Agent::start(&config, dir, &[]).await }
    }))
    .await;
    for (i, agent) in agents.iter().enumerate() {
        assert!(
            agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
            "agent {i} never healthy:\n{}",
            agent.log_text()
        );
    }
    let outage_at = tokio::time::Instant::now();
    let before_outage = t.lab.calls().last().map_or(0, |c| c.seq);
    t.fault(valkey_dr_lab::Fault::RegionOutage {
        region: valkey_dr_lab::PRIMARY_REGION.to_owned(),
        route53: true,
    })
    .await;

    // While Route 53 is down: the cache is built, and only Route 53 holds the failover.
    let held = wait_until(ROUTE53_DOWN, || async {
        hooks.iter().any(|h| {
            hook_events(h, "failover_step").iter().any(|e| {
                e["detail"]["phase"] == "retrying"
                    && e["detail"]["detail"]
                        .as_str()
                        .is_some_and(|d| d.contains("is built and verified at"))
            })
        })
    })
    .await;
    assert!(
        held,
        "no agent was ever held by Route 53 alone: a {:?}, b {:?}, c {:?}",
        hooks[0].names(),
        hooks[1].names(),
        hooks[2].names()
    );
    let quorum_reached = hooks
        .iter()
        .flat_map(|h| hook_events(h, "failover_intent"))
        .any(|e| e["detail"]["quorum"]["reached"] == true);
    assert!(quorum_reached, "no intent carried a reached quorum");
    tokio::time::sleep_until(outage_at + ROUTE53_DOWN).await;
    let calls = t.lab.calls();
    let during: Vec<&valkey_dr_lab::Call> =
        calls.iter().filter(|c| c.seq > before_outage).collect();
    assert_eq!(creates(&calls).len(), 1, "{:#?}", create_attempts(&calls));
    let route53_ok: Vec<&&valkey_dr_lab::Call> = during
        .iter()
        .filter(|c| c.service == valkey_dr_lab::AwsService::Route53 && c.succeeded())
        .collect();
    assert!(route53_ok.is_empty(), "{route53_ok:#?}");
    let dr = dr_endpoint(&t).expect("the DR cache was built while Route 53 was down");
    assert!(
        !record_target(&t).await.is_some_and(|r| same_name(&r, &dr)),
        "the record cannot have moved while Route 53 is down"
    );

    // Route 53 answers again: the record moves within 2 s.
    let back = tokio::time::Instant::now();
    t.fault(valkey_dr_lab::Fault::Route53ControlUp).await;
    let moved = wait_until(Duration::from_secs(10), || async {
        record_target(&t).await.is_some_and(|r| same_name(&r, &dr))
    })
    .await;
    let took = back.elapsed();
    assert!(
        moved,
        "the record never moved: a {:?}, b {:?}, c {:?}",
        hooks[0].names(),
        hooks[1].names(),
        hooks[2].names()
    );
    eprintln!("quorum fleet: Route 53 back → record switched in {took:?}");
    assert!(
        took <= Duration::from_secs(2),
        "the record moved {took:?} after Route 53 came back"
    );
    failed_over_once(&fleet, &t, &agents, &hooks).await;
    // One of them switched the record, the others followed it; none failed.
    let mut switched = 0;
    for (i, dir) in dirs.iter().enumerate() {
        let j = journal(dir).expect("each agent's journal");
        eprintln!(
            "agent {i}: {:?}, switch_dns {:?}",
            j.outcome,
            j.entry(Step::SwitchDns, Phase::Done)
                .map(|e| e.detail.as_str())
        );
        assert_eq!(
            hooks[i].count("failover_failed"),
            0,
            "agent {i}: {:?}",
            hooks[i].names()
        );
        if j.entries
            .iter()
            .any(|e| e.step == Step::SwitchDns && e.phase == Phase::Done && e.detail.contains('→'))
        {
            switched += 1;
        }
    }
    assert_eq!(switched, 1, "agents that changed the record");
}
