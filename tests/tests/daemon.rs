//! `valkey-dr run` end to end: the real daemon binary against a lab of its own, with a local
//! webhook receiver recording every alert.

mod support;

use std::time::{Duration, SystemTime};

use support::{Agent, TestLab, Webhook, agent_get, run_bounded, wait_until};
use valkey_dr_lab::{Fault, PRIMARY_CACHE};

const WATCH: &str = "sessions";
/// The lab's schedule: 1 s interval, 500 ms timeout, fall 3.
const DOWN_BOUND: Duration = Duration::from_millis(3 * 1000 + 500 + 1000);

struct Setup {
    lab: TestLab,
    hook: Webhook,
    config: std::path::PathBuf,
    state_dir: std::path::PathBuf,
}

/// A lab, a webhook receiver, and an agent.toml variant that notifies it, with reminders every
/// 3 s so that a test can see one.
async fn setup() -> Setup {
    let lab = TestLab::start().await;
    let hook = Webhook::start().await;
    let config = lab.config_variant(
        "daemon.toml",
        &[("reminder_interval = \"1m\"\n", &hook.reminding("3s"))],
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
    async fn agent(&self, env: &[(&str, &str)]) -> Agent {
        Agent::start(&self.config, &self.state_dir, env).await
    }

    /// Starts the agent and waits (bounded) for its first healthy verdict.
    async fn healthy_agent(&self) -> Agent {
        let agent = self.agent(&[]).await;
        assert!(
            agent
                .wait_state(WATCH, "healthy", Duration::from_secs(10))
                .await,
            "never healthy:\n{}",
            agent.log_text()
        );
        agent
    }

    async fn fault(&self, fault: Fault) {
        self.lab.fault(fault).await;
    }
}

fn primary() -> String {
    PRIMARY_CACHE.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flapping_primary_never_goes_down() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    for _ in 0..3 {
        // Paused for 1.5 s: at most two rounds (fall is 3) can fail.
        s.fault(Fault::Pause { cache: primary() }).await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.fault(Fault::Clear { cache: primary() }).await;
        let state = agent.state(WATCH).await;
        assert!(
            state.is_some(),
            "/status did not answer:\n{}",
            agent.log_text()
        );
        assert_ne!(state.as_deref(), Some("down"));
        tokio::time::sleep(Duration::from_millis(2500)).await;
    }
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(5))
            .await
    );
    let names = s.hook.names();
    assert!(
        names.iter().any(|n| n == "suspect"),
        "flaps were seen: {names:?}"
    );
    for forbidden in ["down", "failover_intent", "failover_blocked"] {
        assert!(
            !names.iter().any(|n| n == forbidden),
            "{forbidden} in {names:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn held_outage_is_down_in_time_once_then_reminded() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let t0 = tokio::time::Instant::now();
    s.fault(Fault::Pause { cache: primary() }).await;
    assert!(
        wait_until(DOWN_BOUND + Duration::from_secs(2), || async {
            s.hook.count("down") > 0
        })
        .await,
        "no down event: {:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    let (at, down) = s
        .hook
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "down")
        .unwrap();
    assert!(
        at - t0 <= DOWN_BOUND,
        "down after {:?} > {DOWN_BOUND:?}",
        at - t0
    );
    assert_eq!(down["watch"], WATCH);
    assert_eq!(down["state"], "down");
    assert_eq!(down["agent_id"], "lab-agent");
    assert!(down["text"].as_str().unwrap().contains("down"));
    assert!(down["reasons"].as_array().is_some_and(|r| !r.is_empty()));
    assert_eq!(down["observation"]["paths"][0]["error_kind"], "timeout");
    // Alert-only: the would-be failover is announced with its plan.
    assert!(
        wait_until(Duration::from_secs(2), || async {
            s.hook.count("failover_intent") == 1
        })
        .await
    );
    let intent = s
        .hook
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "failover_intent")
        .unwrap()
        .1;
    assert_eq!(intent["detail"]["would_fail_over"], true);
    assert_eq!(
        intent["detail"]["plan"]["steps"][0]["call"],
        "CreateServerlessCache"
    );

    // One reminder after the 3 s reminder interval, and still exactly one down.
    assert!(
        wait_until(Duration::from_secs(6), || async {
            s.hook.count("reminder") >= 1
        })
        .await,
        "no reminder: {:?}",
        s.hook.names()
    );
    let reminders: Vec<_> = s
        .hook
        .events()
        .into_iter()
        .filter(|(_, e)| e["event"] == "reminder")
        .collect();
    assert_eq!(reminders.len(), 1, "{:?}", s.hook.names());
    assert_eq!(reminders[0].1["of"], "down");
    // The events carry the schedule's time, so they are exactly the interval apart, whatever
    // the delivery jitter.
    let event_at =
        |e: &serde_json::Value| humantime::parse_rfc3339(e["at"].as_str().unwrap()).unwrap();
    let gap = event_at(&reminders[0].1)
        .duration_since(event_at(&down))
        .unwrap();
    assert!(gap >= Duration::from_secs(3), "reminder {gap:?} after down");
    assert_eq!(s.hook.count("down"), 1, "{:?}", s.hook.names());
    assert_eq!(s.hook.count("failover_intent"), 1, "{:?}", s.hook.names());

    s.fault(Fault::Clear { cache: primary() }).await;
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(6))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(2), || async {
            s.hook.count("recovered") == 1
        })
        .await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_is_degraded_never_down() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::DnsDown).await;
    // The agent honours the record's TTL like an application: the outage shows once the
    // cached answer (30 s TTL) expires.
    let ttl = Duration::from_secs(s.lab.lab.info().ttl_s);
    assert!(
        agent
            .wait_state(WATCH, "degraded", ttl + Duration::from_secs(5))
            .await,
        "{}",
        agent.log_text()
    );
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(agent.state(WATCH).await.as_deref(), Some("degraded"));
    }
    let names = s.hook.names();
    assert!(names.iter().any(|n| n == "degraded"), "{names:?}");
    assert!(
        !names
            .iter()
            .any(|n| n == "down" || n.starts_with("failover")),
        "{names:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_agent_never_intends_a_failover() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    s.fault(Fault::WitnessDown).await;
    s.fault(Fault::Pause { cache: primary() }).await;
    assert!(
        agent
            .wait_state(WATCH, "isolated", Duration::from_secs(5))
            .await,
        "{}",
        agent.log_text()
    );
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(agent.state(WATCH).await.as_deref(), Some("isolated"));
    }
    let names = s.hook.names();
    assert!(names.iter().any(|n| n == "isolated"), "{names:?}");
    assert!(
        !names.iter().any(|n| n == "failover_intent" || n == "down"),
        "{names:?}"
    );

    // The witness comes back while the cache is still down: now the agent may judge.
    s.fault(Fault::WitnessUp).await;
    assert!(
        wait_until(Duration::from_secs(4), || async {
            s.hook.count("down") == 1
        })
        .await,
        "{:?}",
        s.hook.names()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_and_restart_keep_cooldown_and_do_not_resend_down() {
    let s = setup().await;
    // A failover one minute ago: the 1 h cooldown is running.
    let state = valkey_dr_policies::WatchState {
        failovers: vec![SystemTime::now() - Duration::from_secs(60)],
        ..Default::default()
    };
    std::fs::create_dir_all(&s.state_dir).unwrap();
    std::fs::write(
        s.state_dir.join(format!("watch-{WATCH}.json")),
        serde_json::to_vec(&state).unwrap(),
    )
    .unwrap();

    let agent = s.healthy_agent().await;
    s.fault(Fault::Pause { cache: primary() }).await;
    assert!(
        wait_until(DOWN_BOUND + Duration::from_secs(2), || async {
            s.hook.count("failover_blocked") == 1
        })
        .await,
        "{:?}",
        s.hook.names()
    );
    let blocked = s
        .hook
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "failover_blocked")
        .unwrap()
        .1;
    assert!(
        blocked["reasons"].to_string().contains("cooldown"),
        "{blocked}"
    );
    assert_eq!(s.hook.count("down"), 1);
    agent.kill9().await;

    let before = s.hook.events().len();
    let agent = s.agent(&[]).await;
    assert!(
        agent
            .wait_state(WATCH, "down", Duration::from_secs(3))
            .await,
        "{}",
        agent.log_text()
    );
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after: Vec<String> = s.hook.events()[before..]
        .iter()
        .map(|(_, e)| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        !after.iter().any(|e| e == "down" || e == "failover_intent"),
        "re-sent after restart: {after:?}"
    );
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("down"));
}

/// Parses Prometheus text exposition: every sample line is `name{labels} value`, and every
/// sample's family was declared with `# TYPE` before it. Returns (name+labels, value) pairs.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut declared = Vec::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            declared.push(rest.split_whitespace().next().unwrap().to_owned());
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        assert!(
            name.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name in {line:?}"
        );
        if let Some(labels) = series.strip_prefix(name) {
            assert!(
                labels.is_empty() || (labels.starts_with('{') && labels.ends_with('}')),
                "{line:?}"
            );
        }
        assert!(
            declared.iter().any(|d| name.starts_with(d.as_str())),
            "{name} sampled before its # TYPE"
        );
        samples.push((series.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], series: &str) -> f64 {
    samples
        .iter()
        .find(|(s, _)| s == series)
        .map(|(_, v)| *v)
        .unwrap_or_else(|| panic!("no {series} in {samples:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_and_healthz_fails_when_the_loop_stalls() {
    let s = setup().await;
    let agent = s.agent(&[("VALKEY_DR_TEST_STALL_AFTER_ROUNDS", "4")]).await;
    let admin = agent.admin().unwrap();
    let ok_series = "valkey_dr_probe_total{watch=\"sessions\",path=\"dns\",result=\"ok\"}";
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (_, body) = agent_get(admin, "/metrics").await.unwrap();
            parse_prometheus(&body)
                .iter()
                .any(|(s, v)| s == ok_series && *v >= 1.0)
        })
        .await
    );
    let (_, first) = agent_get(admin, "/metrics").await.unwrap();
    let first = parse_prometheus(&first);
    assert!(
        wait_until(Duration::from_secs(5), || async {
            let (_, body) = agent_get(admin, "/metrics").await.unwrap();
            sample(&parse_prometheus(&body), ok_series) > sample(&first, ok_series)
        })
        .await,
        "probe counter did not move"
    );
    let (_, body) = agent_get(admin, "/metrics").await.unwrap();
    let samples = parse_prometheus(&body);
    assert_eq!(
        sample(
            &samples,
            "valkey_dr_state{watch=\"sessions\",state=\"healthy\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &samples,
            "valkey_dr_state{watch=\"sessions\",state=\"down\"}"
        ),
        0.0
    );
    assert_eq!(
        sample(
            &samples,
            "valkey_dr_consecutive_failures{watch=\"sessions\",path=\"direct\"}"
        ),
        0.0
    );
    assert!(
        samples
            .iter()
            .any(|(s, _)| s.starts_with("valkey_dr_probe_duration_seconds_bucket{"))
    );
    assert_eq!(agent_get(admin, "/healthz").await.unwrap().0, 200);

    // The test hook stalls the loop after 4 rounds; /healthz must notice within 3 intervals
    // and keep answering.
    assert!(
        wait_until(Duration::from_secs(8), || async {
            agent_get(admin, "/healthz").await.map(|r| r.0) == Some(503)
        })
        .await,
        "healthz never failed:\n{}",
        agent.log_text()
    );
    let (status, reason) = agent_get(admin, "/healthz").await.unwrap();
    assert_eq!(status, 503);
    assert!(reason.contains("stalled"), "{reason}");
    assert_eq!(
        agent.status_get().await.unwrap().0,
        200,
        "status still answers"
    );
}

async fn cli(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(command).await;
    (
        out.status.code().unwrap_or(-1),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_through_the_cli_survive_a_restart() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let (code, out) = cli(&s.config, &["pause", "--watch", WATCH]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        agent
            .wait_state(WATCH, "paused", Duration::from_secs(2))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(2), || async {
            s.hook.count("paused") == 1
        })
        .await
    );
    let (code, out) = cli(&s.config, &["pause", "--watch", "nope"]).await;
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("no watch named \\\"nope\\\"") || out.contains("no watch named"),
        "{out}"
    );

    // A clean stop (SIGTERM) and a restart keep the pause.
    let pid = agent.child.id().unwrap() as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut agent = agent;
    let status = tokio::time::timeout(Duration::from_secs(15), agent.child.wait())
        .await
        .expect("agent stops within its grace period")
        .unwrap();
    assert!(status.success(), "exit {status:?}:\n{}", agent.log_text());
    assert!(
        !s.state_dir.join("admin.json").exists(),
        "admin.json removed on a clean stop"
    );

    let agent = s.agent(&[]).await;
    assert!(
        agent
            .wait_state(WATCH, "paused", Duration::from_secs(3))
            .await,
        "{}",
        agent.log_text()
    );
    let (code, out) = cli(&s.config, &["resume"]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(3))
            .await
    );
    assert!(
        wait_until(Duration::from_secs(2), || async {
            s.hook.count("resumed") == 1
        })
        .await
    );
}

/// Sends one raw HTTP/1.1 request and returns the status code (0 when the connection closed
/// without an answer).
async fn raw_request(addr: std::net::SocketAddr, head: &str) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    raw_exchange(stream, head).await
}

/// [`raw_request`] on the agent's unix socket, the owner's channel.
async fn raw_on_socket(state_dir: &std::path::Path, head: &str) -> u16 {
    let socket = state_dir.join("admin.sock");
    let stream = tokio::net::UnixStream::connect(&socket)
        .await
        .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
    raw_exchange(stream, head).await
}

async fn raw_exchange(
    mut stream: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    head: &str,
) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    stream.write_all(head.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Issue 10, cases 3 and 4, against the real daemon: a control call without the owner's
/// token, or from a web page, is refused and changes nothing; the token file is the owner's
/// only; 250 slow-loris connections are closed within the header timeout while the agent
/// keeps probing; and the CLI still drives it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_drives_the_admin_api() {
    use std::os::unix::fs::PermissionsExt as _;
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let admin = agent.admin().expect("admin address");
    let token_file = s.state_dir.join("admin.token");
    let mode = std::fs::metadata(&token_file)
        .expect("admin.token")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "admin.token mode {mode:o}");
    let token = std::fs::read_to_string(&token_file).expect("token");
    let token = token.trim();

    let post = |extra: &str| {
        format!(
            "POST /failover?watch={WATCH} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: text/plain\r\nContent-Length: 0\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    // On the owner's channel, the socket (over TCP the controls are refused outright:
    // `status_needs_a_token_and_controls_are_on_the_socket`).
    let owner = &s.state_dir;
    assert_eq!(raw_on_socket(owner, &post("")).await, 401, "no token");
    assert_eq!(
        raw_on_socket(owner, &post("Authorization: Bearer 0123\r\n")).await,
        401,
        "a wrong token"
    );
    assert_eq!(
        raw_on_socket(
            owner,
            &post(&format!(
                "Authorization: Bearer {token}\r\nOrigin: http://evil.example\r\n"
            ))
        )
        .await,
        403,
        "a web page's request, even with the token"
    );
    assert_eq!(
        raw_request(admin, &post(&format!("Authorization: Bearer {token}\r\n"))).await,
        403,
        "the owner's control over TCP, with controls on the socket"
    );
    assert!(
        support::creates(&s.lab.lab.calls()).is_empty(),
        "a refused call built nothing"
    );
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("healthy"));

    // 250 half-sent requests: the agent closes each within the header timeout (5 s), or at
    // once beyond the connections it serves one address, and goes on probing.
    let before = support::watch_status(&agent, WATCH)
        .await
        .and_then(|w| w["rounds"].as_u64());
    let started = tokio::time::Instant::now();
    let mut slow = Vec::new();
    for _ in 0..250 {
        slow.push(tokio::spawn(async move {
            use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
            let mut stream = tokio::net::TcpStream::connect(admin).await.ok()?;
            let _ = stream
                .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-a: ")
                .await;
            let mut rest = Vec::new();
            tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut rest))
                .await
                .ok()
                .map(|_| ())
        }));
    }
    for conn in slow {
        assert!(
            conn.await.expect("task").is_some(),
            "a slow-loris connection was still open after 15 s"
        );
    }
    let held = started.elapsed();
    assert!(
        held < Duration::from_secs(9),
        "the last slow connection closed after {held:?}"
    );
    let after = support::watch_status(&agent, WATCH)
        .await
        .and_then(|w| w["rounds"].as_u64());
    assert!(
        matches!((before, after), (Some(b), Some(a)) if a >= b + 3),
        "the agent kept probing while held: rounds {before:?} → {after:?}\n{}",
        agent.log_text()
    );

    // The owner's CLI still works.
    let (code, out) = cli(&s.config, &["pause", "--watch", WATCH]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        agent
            .wait_state(WATCH, "paused", Duration::from_secs(3))
            .await
    );
}

/// Issue 10: an agent that cannot bind its admin address keeps probing and alerting, says
/// so once (`admin_unavailable`), and leaves the running agent's files alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_admin_port_does_not_stop_the_agent() {
    let s = setup().await;
    let first = s.healthy_agent().await;
    let taken = first.admin().expect("admin address");
    // The same config started twice: one state_dir, one admin address.
    let first_token = std::fs::read_to_string(s.state_dir.join("admin.token")).expect("token");
    let first_admin = std::fs::read_to_string(s.state_dir.join("admin.json")).expect("admin");
    let config = s.lab.config_variant(
        "taken.toml",
        &[
            (
                "admin_listen = \"127.0.0.1:0\"",
                &format!("admin_listen = \"{taken}\""),
            ),
            ("reminder_interval = \"1m\"\n", &s.hook.reminding("3s")),
        ],
    );
    let log = s.lab.dir.path().join("second.log");
    let file = std::fs::File::create(&log).expect("log");
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["run", "--config"])
        .arg(&config)
        .env_remove("VALKEY_DR_CONFIG")
        .env("VALKEY_DR_LOG", "info")
        .stdout(file.try_clone().expect("log"))
        .stderr(file)
        .kill_on_drop(true);
    support::lab_aws_env(&mut command);
    let mut second = command.spawn().expect("start");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.hook
                .events()
                .iter()
                .any(|(_, e)| e["event"] == "admin_unavailable" && e["watch"] == "*")
        })
        .await,
        "no admin_unavailable event:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // It goes on probing: its rounds reach the log, and it does not exit.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("first round of every watch done")
        })
        .await,
        "the second agent never judged a round:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        second.try_wait().expect("wait").is_none(),
        "the agent exited"
    );
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(text.contains("cannot listen on admin_listen"), "{text}");
    // The first agent's files and API are untouched.
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.json")).expect("admin"),
        first_admin
    );
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.token")).expect("token"),
        first_token
    );
    assert_eq!(first.state(WATCH).await.as_deref(), Some("healthy"));
    let _ = second.kill().await;
}

/// The agent's /status, parsed.
async fn status_json(agent: &Agent) -> Option<serde_json::Value> {
    let (_, body) = agent.status_get().await?;
    serde_json::from_str(&body).ok()
}

/// `SIGHUP` reloads a valid config (here: alert-only to auto-failover), and an invalid one
/// changes nothing: the agent keeps running with what it had, and says why as `config_error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_good_config_and_keeps_the_running_one_on_a_bad_one() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let pid = agent.child.id().unwrap() as i32;
    let original = std::fs::read_to_string(&s.config).unwrap();
    assert!(original.contains("mode = \"alert-only\""), "{original}");

    std::fs::write(
        &s.config,
        original.replacen("mode = \"alert-only\"", "mode = \"auto-failover\"", 1),
    )
    .unwrap();
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    let reloaded = wait_until(Duration::from_secs(15), || async {
        status_json(&agent)
            .await
            .is_some_and(|v| v["agent"]["mode"] == "auto-failover")
    })
    .await;
    assert!(reloaded, "mode never changed:\n{}", agent.log_text());
    assert!(
        agent.log_text().contains("config reloaded"),
        "{}",
        agent.log_text()
    );
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(10))
            .await,
        "the reloaded agent watches again:\n{}",
        agent.log_text()
    );

    // Invalid: `fall = 0`, and a mode other than the running one, so that keeping the
    // running config shows in /status. Nothing changes; config_error says why.
    let good = std::fs::read_to_string(&s.config).unwrap();
    let bad = good.replacen("fall = ", "fall = 0 # ", 1).replacen(
        "mode = \"auto-failover\"",
        "mode = \"alert-only\"",
        1,
    );
    assert!(bad.contains("mode = \"alert-only\""), "{bad}");
    std::fs::write(&s.config, bad).unwrap();
    let event = refused_reload(&s, &agent, pid, "the bad reload").await;
    let reasons = event["reasons"].to_string();
    assert!(
        reasons.contains("SIGHUP") && reasons.contains("fall"),
        "{event:#}"
    );
    // Still running, on the config it had.
    let mut agent = agent;
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "{}",
        agent.log_text()
    );
    let v = status_json(&agent).await.expect("/status answers");
    assert_eq!(v["agent"]["mode"], "auto-failover");
    let (code, _) = agent_get(agent.admin().unwrap(), "/healthz").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        agent
            .log_text()
            .contains("is not valid, so nothing changed")
    );

    // Valid, but its state_dir is writable by others: refused as a start would refuse it.
    use std::os::unix::fs::PermissionsExt as _;
    let open_dir = s.state_dir.with_file_name("open-state");
    std::fs::create_dir(&open_dir).unwrap();
    std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let state_line = good
        .lines()
        .find(|l| l.trim_start().starts_with("state_dir"))
        .expect("the config names its state_dir")
        .to_owned();
    let moved = good
        .replacen(&state_line, &format!("state_dir = {:?}", open_dir), 1)
        .replacen("mode = \"auto-failover\"", "mode = \"alert-only\"", 1);
    std::fs::write(&s.config, moved).unwrap();
    let event = refused_reload(&s, &agent, pid, "the open state_dir").await;
    assert!(
        event["reasons"].to_string().contains("chmod 0700"),
        "{event:#}"
    );
    let v = status_json(&agent).await.expect("/status answers");
    assert_eq!(
        v["agent"]["mode"], "auto-failover",
        "the running config stays"
    );
    assert!(
        std::fs::read_dir(&open_dir).unwrap().next().is_none(),
        "nothing written into the refused state_dir"
    );
}

/// Sends `SIGHUP` to the agent `pid` and returns the `config_error` event its refusal of the
/// reload sends (`what` names the case in the failure message).
async fn refused_reload(s: &Setup, agent: &Agent, pid: i32, what: &str) -> serde_json::Value {
    let before = s.hook.count("config_error");
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            s.hook.count("config_error") > before
        })
        .await,
        "no config_error for {what}: {:?}\n{}",
        s.hook.names(),
        agent.log_text()
    );
    s.hook
        .events()
        .into_iter()
        .map(|(_, e)| e)
        .rfind(|e| e["event"] == "config_error")
        .expect("a config_error event")
}

/// `pause --reason --for`: the pause shows in /status and the metrics with its reason and
/// end, and ends by itself, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_with_a_reason_and_an_end_shows_and_expires_by_itself() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let started = SystemTime::now();
    let (code, out) = cli(
        &s.config,
        &[
            "pause",
            "--watch",
            WATCH,
            "--reason",
            "CHG-1234 resize",
            "--for",
            "4s",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains('{'),
        "pause prints a sentence, not JSON: {out}"
    );
    assert!(out.contains("CHG-1234 resize"), "{out}");
    assert!(
        agent
            .wait_state(WATCH, "paused", Duration::from_secs(3))
            .await
    );
    let v = status_json(&agent).await.unwrap();
    let watch = &v["watches"][0];
    assert_eq!(watch["state"], "paused", "{v:#}");
    assert_eq!(watch["pause"]["reason"], "CHG-1234 resize");
    let until = humantime::parse_rfc3339(watch["pause"]["until"].as_str().unwrap()).unwrap();
    // `--for 4s` from when the CLI ran: at least 4 s after `started` (to the second), and
    // at most the CLI's start-up later, which a loaded machine may stretch.
    let ends_in = until.duration_since(started).unwrap();
    assert!(
        ends_in >= Duration::from_secs(3) && ends_in <= Duration::from_secs(15),
        "{ends_in:?}"
    );
    let (_, metrics) = agent_get(agent.admin().unwrap(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("valkey_dr_paused{watch=\"sessions\"} 1"),
        "{metrics}"
    );
    let (code, text) = cli(&s.config, &["status", "--watch", WATCH]).await;
    assert!(
        text.contains("paused:  since") && text.contains("CHG-1234 resize"),
        "{code}: {text}"
    );
    assert!(!text.contains('{'), "{text}");

    // It ends by itself.
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(10))
            .await,
        "the pause never ended:\n{}",
        agent.log_text()
    );
    let resumed = s
        .hook
        .events()
        .into_iter()
        .map(|(_, e)| e)
        .find(|e| e["event"] == "resumed")
        .expect("a resumed event");
    let reasons = resumed["reasons"].to_string();
    assert!(
        reasons.contains("the pause expired") && reasons.contains("CHG-1234 resize"),
        "{resumed:#}"
    );
    let (_, metrics) = agent_get(agent.admin().unwrap(), "/metrics").await.unwrap();
    assert!(
        metrics.contains("valkey_dr_paused{watch=\"sessions\"} 0"),
        "{metrics}"
    );

    // A pause longer than a week is refused before it reaches the agent.
    let (code, out) = cli(&s.config, &["pause", "--for", "8d"]).await;
    assert_eq!(code, 2, "{out}");
}

/// Every metric family is in the first scrape, with a series per watch where it has one,
/// including those that only move during an outage or a failover.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_is_present_from_the_first_scrape() {
    let s = setup().await;
    let agent = s.agent(&[]).await;
    let (code, metrics) = agent_get(agent.admin().unwrap(), "/metrics").await.unwrap();
    assert_eq!(code, 200);
    for family in [
        "valkey_dr_up",
        "valkey_dr_build_info",
        "valkey_dr_probe_duration_seconds",
        "valkey_dr_probe",
        "valkey_dr_probe_step_seconds",
        "valkey_dr_consecutive_failures",
        "valkey_dr_state",
        "valkey_dr_failovers",
        "valkey_dr_failover_step_seconds",
        "valkey_dr_last_round_timestamp_seconds",
        "valkey_dr_ready",
        "valkey_dr_last_drill_timestamp_seconds",
        "valkey_dr_drill_phase_seconds",
        "valkey_dr_tls_cert_expiry_timestamp_seconds",
        "valkey_dr_witness_success",
        "valkey_dr_record_ttl_seconds",
        "valkey_dr_record_drift",
        "valkey_dr_notifications",
        "valkey_dr_paused",
        "valkey_dr_pause_expiry_timestamp_seconds",
        "valkey_dr_failover_held",
        "valkey_dr_failover_retrying_since_timestamp_seconds",
        "process_cpu_seconds",
        "process_resident_memory_bytes",
        "process_virtual_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{metrics}"
        );
    }
    // Series that exist before anything happened.
    for series in [
        "valkey_dr_failover_step_seconds{watch=\"sessions\",step=\"provision\"} 0",
        "valkey_dr_failovers_total{watch=\"sessions\",result=\"completed\"} 0",
        "valkey_dr_witness_success{watch=\"sessions\"} 1",
        "valkey_dr_failover_retrying_since_timestamp_seconds{watch=\"sessions\"} 0",
        "valkey_dr_notifications_total{sink=\"webhook\",result=\"failed\"} 0",
        "valkey_dr_probe_step_seconds{watch=\"sessions\",path=\"dns\",step=\"tls\"}",
        "valkey_dr_build_info{version=\"",
    ] {
        assert!(metrics.contains(series), "{series} missing:\n{metrics}");
    }
    // The process metrics are this process's.
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(rss > 1e6 && rss < 1e9, "{rss}");
    // After rounds: the TLS chain's expiry, the record's TTL, and delivered notifications.
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(10))
            .await
    );
    let (_, metrics) = agent_get(agent.admin().unwrap(), "/metrics").await.unwrap();
    let ttl: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("valkey_dr_record_ttl_seconds{watch=\"sessions\"} "))
        .expect("the record's TTL")
        .parse()
        .unwrap();
    assert!((1..=30).contains(&ttl), "the lab's TTL is 30 s: {ttl}");
    let expiry: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "valkey_dr_tls_cert_expiry_timestamp_seconds{watch=\"sessions\",path=\"dns\"} ",
            )
        })
        .expect("the dns path's certificate expiry")
        .parse()
        .unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    // The lab's leaf certificates last 395 days, like an Amazon-issued one; the chain's
    // earliest expiry is the leaf's.
    let days = (expiry - now) / 86_400.0;
    assert!((393.0..=396.0).contains(&days), "{days} days");
}

/// The acceptance's count of random bad requests (issue 23).
const RANDOM_REQUESTS: usize = 10_000;

/// Sends `count` random bad requests to a running agent, every one of which must be refused
/// and change nothing: with the owner's token on its socket, controls with a malformed,
/// unknown, repeated or out-of-bounds parameter (`400`); on TCP, controls with no token, a
/// wrong one or the owner's (the controls live on the socket: `401`/`403`), and random
/// methods and paths (`404`/`405`). Returns how many were refused as expected; panics with
/// the seed and the request on the first that was not.
async fn random_bad_requests(
    state_dir: &std::path::Path,
    admin: std::net::SocketAddr,
    token: &str,
    count: usize,
) -> usize {
    use rand::{Rng as _, SeedableRng as _};
    let seed: u64 = rand::rng().random();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut refused = 0;
    for i in 0..count {
        let (on_socket, head, expected) = bad_request(&mut rng, admin, token);
        let status = if on_socket {
            raw_on_socket(state_dir, &head).await
        } else {
            let stream = tokio::net::TcpStream::connect(admin)
                .await
                .expect("connect");
            raw_exchange(stream, &head).await
        };
        assert!(
            expected.contains(&status),
            "request {i} (seed {seed}): {status}, expected one of {expected:?}\n{head}"
        );
        refused += 1;
    }
    refused
}

/// One bad request: whether it goes to the socket, its bytes, and the statuses that refuse it.
fn bad_request(
    rng: &mut impl rand::Rng,
    admin: std::net::SocketAddr,
    token: &str,
) -> (bool, String, &'static [u16]) {
    const CONTROLS: &[&str] = &[
        "pause", "resume", "failover", "failback", "abort", "approve",
    ];
    let control = CONTROLS[rng.random_range(0..CONTROLS.len())];
    let head = |method: &str, target: &str, auth: Option<&str>| {
        let auth = auth.map_or(String::new(), |a| format!("Authorization: Bearer {a}\r\n"));
        format!(
            "{method} {target} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        )
    };
    match rng.random_range(0..4) {
        // The owner, on the socket, with a parameter the control refuses.
        0 | 1 => {
            let query = bad_query(rng, control);
            let target = format!("/{control}?{query}");
            (true, head("POST", &target, Some(token)), &[400])
        }
        // Anyone on TCP: the controls are on the socket.
        2 => {
            let wrong: String = (0..43)
                .map(|_| char::from(rng.random_range(b'a'..=b'z')))
                .collect();
            let (auth, expected): (Option<&str>, &'static [u16]) = match rng.random_range(0..3) {
                0 => (None, &[401, 403]),
                1 => (Some(wrong.as_str()), &[401, 403]),
                _ => (Some(token), &[403]),
            };
            let target = format!("/{control}?watch={WATCH}");
            (false, head("POST", &target, auth), expected)
        }
        // Random methods and paths, with the owner's token.
        _ => {
            let methods = ["PUT", "DELETE", "PATCH", "GET"];
            let method = methods[rng.random_range(0..methods.len())];
            let path: String = (0..rng.random_range(1..12))
                .map(|_| char::from(b"abcxyz/._-"[rng.random_range(0..10)]))
                .collect();
            let target = if method == "GET" {
                format!("/x{path}")
            } else {
                format!("/{control}")
            };
            (true, head(method, &target, Some(token)), &[404, 405])
        }
    }
}

/// A query string `control` refuses with a 400.
fn bad_query(rng: &mut impl rand::Rng, control: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let junk: String = (0..rng.random_range(1..8))
        .map(|_| char::from(b"az09%&=+-"[rng.random_range(0..9)]))
        .collect();
    let until = match rng.random_range(0..6) {
        0 => format!("-{}", rng.random_range(1..u64::MAX)),
        1 => format!("{}{}", u64::MAX, rng.random_range(0..1000)),
        2 => (now - rng.random_range(0..now)).to_string(),
        3 => (now + 8 * 86_400 + rng.random_range(0..u32::MAX as u64)).to_string(),
        4 => format!("{}.{}", now + 60, rng.random_range(0..10)),
        _ => format!("{now}{junk}"),
    };
    match (control, rng.random_range(0..4)) {
        ("pause", 0 | 1) => format!("watch={WATCH}&until={until}"),
        ("pause", 2) => format!("watch={WATCH}&reason="),
        ("failback" | "abort", 0) => format!("watch={WATCH}&delete_dr={junk}x"),
        ("approve", 0) => format!("watch={WATCH}&by="),
        (_, 1) => format!("watch={WATCH}&watch={WATCH}"),
        _ => format!("wach{junk}={WATCH}"),
    }
}

/// Issue 23: the owner's `POST /pause` with an end in year 10000 was saved, the next
/// `/status` publication could not write that time and stopped the watch, and a region
/// outage then failed nothing over. An end past year 9999 or beyond any clock is now a 400
/// that changes nothing, and the same agent still fails over when the region goes down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_end_beyond_its_bounds_is_refused_and_an_outage_still_fails_over() {
    let lab = TestLab::start_with(|o| {
        o.ttl = Duration::from_secs(5);
        o.insync_delay = Duration::from_millis(500);
        o.provision_delay = Duration::from_secs(1);
    })
    .await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let config = lab.config_variant(
        "auto.toml",
        &[
            ("ttl = \"5s\"", "ttl = \"30s\""),
            ("reminder_interval = \"1m\"\n", &notify),
            ("mode = \"alert-only\"", "mode = \"auto-failover\""),
        ],
    );
    let state_dir = lab.dir.path().join("state");
    let agent = Agent::start(&config, &state_dir, &[]).await;
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(20))
            .await,
        "never healthy:\n{}",
        agent.log_text()
    );
    let admin = agent.admin().expect("admin address");
    let token = std::fs::read_to_string(state_dir.join("admin.token")).expect("token");
    let token = token.trim();
    for until in [
        "253402300800",
        "9223372036854775808",
        "18446744073709551616",
    ] {
        for query in [
            format!("watch={WATCH}&until={until}"),
            format!("until={until}"),
        ] {
            let head = format!(
                "POST /pause?{query} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(raw_on_socket(&state_dir, &head).await, 400, "{query}");
        }
    }
    // 10,000 random bad requests: each refused with the status its kind calls for, and
    // nothing saved (a steady healthy watch writes its state file only when it changes).
    let state_file = valkey_dr::layout::state_file(&state_dir, WATCH);
    let before = std::fs::read(&state_file).ok();
    let refused = random_bad_requests(&state_dir, admin, token, RANDOM_REQUESTS).await;
    assert_eq!(refused, RANDOM_REQUESTS);
    // Nothing changed, and the watch goes on past the publications that used to stop it.
    support::wait_more_rounds(&agent, WATCH, 3, Duration::from_secs(15)).await;
    assert_eq!(
        std::fs::read(&state_file).ok(),
        before,
        "the refused requests saved something in {}",
        state_file.display()
    );
    let v = status_json(&agent).await.expect("/status");
    assert_eq!(v["watches"][0]["state"], "healthy", "{v:#}");
    assert_eq!(v["watches"][0]["paused"], false, "{v:#}");
    assert!(
        v["watches"][0]["pause"].is_null(),
        "a refused pause shows: {v:#}"
    );

    lab.fault(support::region_outage()).await;
    let ended = wait_until(Duration::from_secs(60), || async {
        hook.names().iter().any(|n| n == "failover_completed")
    })
    .await;
    assert!(
        ended,
        "no completed failover: {:?}\n{}",
        hook.names(),
        agent.log_text()
    );
    assert!(
        agent
            .wait_state(WATCH, "failed_over", Duration::from_secs(10))
            .await,
        "{:?}\n{}",
        agent.state(WATCH).await,
        agent.log_text()
    );
}

// ---- the owner's room (issue 23) -----------------------------------------------------------

/// Raises this process's descriptor soft limit to its hard limit: the flood below holds
/// 1,000 sockets.
fn raise_descriptor_limit() -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    limit.rlim_cur
}

/// A TCP connection to `to` from `from` (another loopback address), bounded.
async fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((from, 0)))
        .expect("bind the client's address");
    tokio::time::timeout(Duration::from_secs(5), socket.connect(to))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Issue 23, acceptance: 1,000 connections held open from one address leave room for a
/// probe from another (`/healthz` within 1 s) and for the owner (`valkey-dr pause` through the
/// socket, shown by `valkey-dr status`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_one_address_leaves_room_for_probes_and_the_owner() {
    let limit = raise_descriptor_limit();
    assert!(
        limit >= 1100,
        "this test needs 1,100 descriptors, the hard limit is {limit}"
    );
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let admin = agent.admin().expect("admin address");

    let flood = std::net::Ipv4Addr::new(127, 0, 0, 2);
    let started = std::time::Instant::now();
    let mut held = Vec::with_capacity(1000);
    for _ in 0..1000 {
        held.push(connect_from(flood, admin).await);
    }
    eprintln!(
        "1,000 connections from {flood} opened in {:?}",
        started.elapsed()
    );

    let asked = std::time::Instant::now();
    let answer = tokio::time::timeout(Duration::from_secs(1), agent_get(admin, "/healthz")).await;
    let took = asked.elapsed();
    eprintln!("/healthz from 127.0.0.1 during the flood: {answer:?} in {took:?}");
    assert!(
        matches!(answer, Ok(Some((200, _)))),
        "/healthz did not answer within 1 s during the flood: {answer:?}\n{}",
        agent.log_text()
    );

    let asked = std::time::Instant::now();
    let (code, out) = cli(
        &s.config,
        &["pause", "--watch", WATCH, "--reason", "flood test"],
    )
    .await;
    eprintln!(
        "valkey-dr pause during the flood: exit {code} in {:?}",
        asked.elapsed()
    );
    assert_eq!(code, 0, "{out}\n{}", agent.log_text());
    // The loop publishes the pause in its next status (every 250 ms).
    let shown = wait_until(Duration::from_secs(5), || async {
        let (_, out) = cli(&s.config, &["status"]).await;
        out.contains("flood test") && out.contains("a daemon runs this watch")
    })
    .await;
    let (code, out) = cli(&s.config, &["status"]).await;
    assert!(
        shown,
        "valkey-dr status (exit {code}) does not show the pause:\n{out}"
    );
    drop(held);

    // The refusals were logged, but not one line per connection.
    let log = agent.log_text();
    let lines = log
        .lines()
        .filter(|l| l.contains("from 127.0.0.2 are open"))
        .count();
    assert!(
        (1..=3).contains(&lines),
        "{lines} refusal lines for 991 refused connections:\n{log}"
    );
    let (code, out) = cli(&s.config, &["resume"]).await;
    assert_eq!(code, 0, "{out}");
}

/// Issue 23: `/status` over TCP needs the owner's token (401 and why without it); the socket
/// serves it; and with the default `controls = "socket"`, a control over TCP is refused,
/// naming the socket and the key, while the CLI's own goes through the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_needs_a_token_and_controls_are_on_the_socket() {
    let s = setup().await;
    let agent = s.healthy_agent().await;
    let admin = agent.admin().expect("admin address");
    let (code, body) = agent_get(admin, "/status").await.expect("an answer");
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("owner's token"), "{body}");
    let (code, body) = agent.status_get().await.expect("an answer");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(WATCH), "{body}");

    let token = valkey_dr::control::AdminToken::load(&s.state_dir).expect("token");
    let socket = s.state_dir.join("admin.sock");
    let on_socket = valkey_dr::control::AdminEndpoint::Socket(socket.clone());
    let (code, body) = valkey_dr::control::client::request_to(
        &on_socket,
        "GET",
        "/status",
        Some(&token),
        Duration::from_secs(5),
    )
    .await
    .expect("the socket answers");
    assert_eq!(code, 200, "{body}");
    assert!(body.contains(WATCH), "{body}");

    let path = format!("/pause?watch={WATCH}");
    let (code, body) = valkey_dr::control::client::request(
        admin,
        "POST",
        &path,
        Some(&token),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains(&socket.display().to_string()) && body.contains("controls = \\\"socket\\\""),
        "{body}"
    );
    assert_eq!(agent.state(WATCH).await.as_deref(), Some("healthy"));
}

/// Issue 23: a program that holds the admin port before the agent (at boot, or in a restart
/// gap) cannot answer `valkey-dr status` or `pause`: the CLI goes to the socket in state_dir,
/// which the agent serves while the port stays taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_on_the_admin_port_cannot_answer_the_cli() {
    let s = setup().await;
    let impostor = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = impostor.local_addr().expect("addr").port();
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answered = hits.clone();
    let fake = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let body = r#"{"agent":{"id":"impostor","mode":"alert-only","version":"0"},"watches":[]}"#;
        while let Ok((mut stream, _)) = impostor.accept().await {
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut head = [0u8; 4096];
            let _ = stream.read(&mut head).await;
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(reply.as_bytes()).await;
        }
    });
    let config = s.lab.config_variant(
        "taken-port.toml",
        &[(
            "admin_listen = \"127.0.0.1:0\"",
            &format!("admin_listen = \"127.0.0.1:{port}\""),
        )],
    );
    let agent = Agent::spawn(&config, &s.state_dir).await;
    let healthy = wait_until(Duration::from_secs(20), || async {
        let (code, out) = cli(&config, &["status"]).await;
        code == 0 && out.contains("a daemon runs this watch") && out.contains("healthy")
    })
    .await;
    let (code, out) = cli(&config, &["status"]).await;
    assert!(
        healthy,
        "valkey-dr status (exit {code}):\n{out}\n{}",
        agent.log_text()
    );
    assert!(!out.contains("impostor"), "{out}");
    let (code, out) = cli(&config, &["pause", "--watch", WATCH]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        agent
            .log_text()
            .contains(&format!("cannot listen on admin_listen 127.0.0.1:{port}")),
        "{}",
        agent.log_text()
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the CLI asked the program on the admin port"
    );
    fake.abort();
}

/// Issue 23: a second agent started by mistake on the same state_dir with port 0 (so its
/// TCP bind succeeds) finds the first one's socket alive and records nothing: the first
/// one's token and admin.json stay, and the CLI still drives the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_on_the_same_state_dir_takes_over_nothing() {
    let s = setup().await;
    let first = s.healthy_agent().await;
    let token = std::fs::read_to_string(s.state_dir.join("admin.token")).expect("token");
    let admin = std::fs::read_to_string(s.state_dir.join("admin.json")).expect("admin.json");
    let second = Agent::spawn(&s.config, &s.state_dir).await;
    let both_listen = wait_until(Duration::from_secs(15), || async {
        let log = second.log_text();
        log.matches("admin server listening").count() >= 2
            && log.contains("is served by a running process")
    })
    .await;
    assert!(both_listen, "{}", second.log_text());
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.token")).expect("token"),
        token,
        "the second agent replaced the first one's token"
    );
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.json")).expect("admin.json"),
        admin,
        "the second agent replaced the first one's admin.json"
    );
    let (code, out) = cli(&s.config, &["pause", "--watch", WATCH]).await;
    assert_eq!(code, 0, "{out}");
    assert!(
        first
            .wait_state(WATCH, "paused", Duration::from_secs(5))
            .await,
        "{}",
        first.log_text()
    );
    // A clean stop of the second agent leaves the first one's files, and its CLI.
    let pid = second.child.id().expect("pid") as i32;
    // SAFETY: sending a signal to our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut second = second;
    let status = tokio::time::timeout(Duration::from_secs(15), second.child.wait())
        .await
        .expect("the second agent stops within its grace period")
        .expect("wait");
    assert!(status.success(), "exit {status:?}:\n{}", second.log_text());
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.token")).ok(),
        Some(token),
        "the second agent removed the first one's token"
    );
    assert_eq!(
        std::fs::read_to_string(s.state_dir.join("admin.json")).ok(),
        Some(admin),
        "the second agent removed the first one's admin.json"
    );
    let (code, out) = cli(&s.config, &["resume", "--watch", WATCH]).await;
    assert_eq!(code, 0, "{out}");
}
