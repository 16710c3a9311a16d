use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use valkey_dr_policies::State;
use valkey_dr_probes::{ErrorKind, Observation, PathKind, PathResult, ProbeError, Step};

use std::net::SocketAddr;

use super::*;
use crate::config::Controls;
use crate::control::AdminClientError;
use crate::control::client::MAX_ANSWER_BYTES;
use crate::control::client::request;
use crate::control::status::{
    AgentStatus, PathStreak, PathStreaks, ReadinessStatus, WatchAnswer, WatchStatus,
};
use crate::metrics::Metrics;

mod peers;

/// Every wait in these tests is bounded by this.
const BOUND: Duration = Duration::from_secs(10);

// ---- a line-level check of the text exposition -------------------------------------------

/// One sample line: the name, its labels, its value.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Checks the OpenMetrics/Prometheus text line by line and returns the samples:
/// - `# HELP` / `# TYPE` name a family before any of its samples;
/// - every other line is `name{k="v",...} value`, with a name the family's type allows;
/// - the text ends with `# EOF`.
fn parse_exposition(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for line in text.lines() {
        if saw_eof {
            return Err(format!("line after # EOF: {line:?}"));
        }
        if line == "# EOF" {
            saw_eof = true;
            continue;
        }
        if let Some(comment) = line.strip_prefix("# ") {
            let mut parts = comment.splitn(3, ' ');
            let (kind, name) = (parts.next(), parts.next());
            let rest = parts.next().unwrap_or_default();
            match (kind, name) {
                (Some("HELP" | "UNIT"), Some(name)) if valid_name(name) => {}
                (Some("TYPE"), Some(name)) if valid_name(name) => {
                    if types.insert(name.to_owned(), rest.to_owned()).is_some() {
                        return Err(format!("family {name} declared twice"));
                    }
                }
                _ => return Err(format!("bad comment line {line:?}")),
            }
            continue;
        }
        let sample = parse_sample(line)?;
        let family = types
            .iter()
            .find(|(family, kind)| {
                let suffixes: &[&str] = match kind.as_str() {
                    "counter" => &["_total", "_created"],
                    "histogram" => &["_bucket", "_sum", "_count", "_created"],
                    _ => &[""],
                };
                suffixes
                    .iter()
                    .any(|s| sample.name == format!("{family}{s}"))
            })
            .map(|(family, _)| family.clone());
        if family.is_none() {
            return Err(format!("sample before its # TYPE: {line:?}"));
        }
        samples.push(sample);
    }
    if !saw_eof {
        return Err("no # EOF".to_owned());
    }
    Ok(samples)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let bad = || format!("bad sample line {line:?}");
    let (series, value) = line.rsplit_once(' ').ok_or_else(bad)?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| bad())?,
    };
    let (name, labels) = match series.split_once('{') {
        None => (series, BTreeMap::new()),
        Some((name, rest)) => {
            let body = rest.strip_suffix('}').ok_or_else(bad)?;
            let mut labels = BTreeMap::new();
            let mut rest = body;
            while !rest.is_empty() {
                let (key, after) = rest.split_once("=\"").ok_or_else(bad)?;
                if !valid_name(key) {
                    return Err(bad());
                }
                // Label values here never hold escaped quotes; a stray quote is an error.
                let (value, after) = after.split_once('"').ok_or_else(bad)?;
                labels.insert(key.to_owned(), value.to_owned());
                rest = match after.strip_prefix(',') {
                    Some(more) => more,
                    None if after.is_empty() => after,
                    None => return Err(bad()),
                };
            }
            (name, labels)
        }
    };
    if !valid_name(name) {
        return Err(bad());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The value of the one sample with `name` and exactly these labels.
fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let found: Vec<_> = samples
        .iter()
        .filter(|s| s.name == name && s.labels == want)
        .collect();
    assert!(found.len() <= 1, "duplicate series {name}{labels:?}");
    found.first().map(|s| s.value)
}

fn path(kind: PathKind, error: Option<ErrorKind>, latency_ms: u64) -> PathResult {
    PathResult {
        path: kind,
        error: error.map(|k| ProbeError::new(k, Step::Connect, "test")),
        latency: Duration::from_millis(latency_ms),
        steps: Vec::new(),
        target: None,
        address: None,
        ttl: None,
        record_name_verified: None,
        cert_expiry: None,
        connection: valkey_dr_probes::Connection::Reused,
    }
}

fn observation(watch: &str, unix_secs: u64, paths: Vec<PathResult>) -> Observation {
    Observation {
        watch: watch.to_owned(),
        started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(unix_secs),
        expected_target: "cache.example".to_owned(),
        paths,
    }
}

// ---- metrics ------------------------------------------------------------------------------

#[test]
fn exposition_is_valid_and_has_the_contract_names() {
    let metrics = Metrics::new();
    metrics.record_observation(&observation(
        "a",
        1_700_000_000,
        vec![
            path(PathKind::Dns, None, 3),
            path(PathKind::Direct, None, 2),
        ],
    ));
    metrics.set_consecutive_failures("a", "dns", 0);
    metrics.set_state("a", State::Healthy);
    metrics.failover_result("a", "completed");
    metrics.failover_step("a", "create_cache", Duration::from_millis(1500));

    let text = metrics.encode();
    let samples = parse_exposition(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    for name in [
        "valkey_dr_up",
        "valkey_dr_probe_duration_seconds_bucket",
        "valkey_dr_probe_duration_seconds_count",
        "valkey_dr_probe_total",
        "valkey_dr_consecutive_failures",
        "valkey_dr_state",
        "valkey_dr_failovers_total",
        "valkey_dr_failover_step_seconds",
        "valkey_dr_last_round_timestamp_seconds",
    ] {
        assert!(
            samples.iter().any(|s| s.name == name),
            "{name} missing:\n{text}"
        );
    }
    // The counters are exposed with exactly one `_total`.
    assert!(!text.contains("_total_total"), "{text}");
    assert!(text.contains("# TYPE valkey_dr_probe counter"), "{text}");
    assert!(
        text.contains("# TYPE valkey_dr_failovers counter"),
        "{text}"
    );
    assert_eq!(value(&samples, "valkey_dr_up", &[]), Some(1.0));
    assert_eq!(
        value(
            &samples,
            "valkey_dr_failover_step_seconds",
            &[("watch", "a"), ("step", "create_cache")]
        ),
        Some(1.5)
    );
    assert_eq!(
        value(
            &samples,
            "valkey_dr_last_round_timestamp_seconds",
            &[("watch", "a")]
        ),
        Some(1_700_000_000.0)
    );
    // Every failover result exists from the first round, so increase() sees the first one.
    for (result, n) in [("completed", 1.0), ("failed", 0.0), ("stood_down", 0.0)] {
        assert_eq!(
            value(
                &samples,
                "valkey_dr_failovers_total",
                &[("watch", "a"), ("result", result)]
            ),
            Some(n),
            "{result}"
        );
    }
}

#[test]
fn probe_counters_and_histogram_move_with_each_observation() {
    let metrics = Metrics::new();
    metrics.record_observation(&observation(
        "a",
        100,
        vec![
            path(PathKind::Dns, None, 3),
            path(PathKind::Direct, None, 2),
        ],
    ));
    metrics.record_observation(&observation(
        "a",
        110,
        vec![
            path(PathKind::Dns, Some(ErrorKind::DnsTimeout), 2000),
            path(PathKind::Direct, None, 4),
        ],
    ));
    metrics.set_consecutive_failures("a", "dns", 1);

    let samples = parse_exposition(&metrics.encode()).expect("valid exposition");
    let probes = |path, result| {
        value(
            &samples,
            "valkey_dr_probe_total",
            &[("watch", "a"), ("path", path), ("result", result)],
        )
    };
    assert_eq!(probes("dns", "ok"), Some(1.0));
    assert_eq!(probes("dns", "dns_timeout"), Some(1.0));
    assert_eq!(probes("direct", "ok"), Some(2.0));
    assert_eq!(probes("direct", "dns_timeout"), None);

    let dns = [("watch", "a"), ("path", "dns")];
    assert_eq!(
        value(&samples, "valkey_dr_probe_duration_seconds_count", &dns),
        Some(2.0)
    );
    let sum = value(&samples, "valkey_dr_probe_duration_seconds_sum", &dns).expect("sum");
    assert!((sum - 2.003).abs() < 1e-9, "{sum}");
    // 3 ms lands in the 5 ms bucket; 2 s only from the 2.5 s bucket on.
    let bucket = |le| {
        value(
            &samples,
            "valkey_dr_probe_duration_seconds_bucket",
            &[("watch", "a"), ("path", "dns"), ("le", le)],
        )
    };
    assert_eq!(bucket("0.0025"), Some(0.0));
    assert_eq!(bucket("0.005"), Some(1.0));
    assert_eq!(bucket("1.0"), Some(1.0));
    assert_eq!(bucket("2.5"), Some(2.0));
    assert_eq!(bucket("+Inf"), Some(2.0));

    assert_eq!(
        value(&samples, "valkey_dr_consecutive_failures", &dns),
        Some(1.0)
    );
    assert_eq!(
        value(
            &samples,
            "valkey_dr_last_round_timestamp_seconds",
            &[("watch", "a")]
        ),
        Some(110.0)
    );
}

#[test]
fn state_gauge_is_one_hot_per_watch() {
    let metrics = Metrics::new();
    metrics.set_state("a", State::Down);
    metrics.set_state("a", State::FailingOver);
    metrics.set_state("b", State::Paused);

    let samples = parse_exposition(&metrics.encode()).expect("valid exposition");
    for (watch, current) in [("a", State::FailingOver), ("b", State::Paused)] {
        for state in State::ALL {
            assert_eq!(
                value(
                    &samples,
                    "valkey_dr_state",
                    &[("watch", watch), ("state", state.as_str())]
                ),
                Some(if state == current { 1.0 } else { 0.0 }),
                "{watch} {state}"
            );
        }
    }
}

#[test]
fn failovers_count_by_result() {
    let metrics = Metrics::new();
    metrics.failover_result("a", "failed");
    metrics.failover_result("a", "failed");
    metrics.failover_result("a", "stood_down");
    let samples = parse_exposition(&metrics.encode()).expect("valid exposition");
    let failovers = |result| {
        value(
            &samples,
            "valkey_dr_failovers_total",
            &[("watch", "a"), ("result", result)],
        )
    };
    assert_eq!(failovers("failed"), Some(2.0));
    assert_eq!(failovers("stood_down"), Some(1.0));
}

#[test]
fn the_validator_rejects_broken_text() {
    assert!(
        parse_exposition("valkey_dr_up 1\n# EOF\n").is_err(),
        "no TYPE"
    );
    assert!(parse_exposition("# TYPE x gauge\nx 1\n").is_err(), "no EOF");
    assert!(parse_exposition("# TYPE x gauge\nx{a=\"b\" 1\n# EOF\n").is_err());
    assert!(parse_exposition("# TYPE x gauge\nx one\n# EOF\n").is_err());
    assert!(parse_exposition("# TYPE x counter\nx 1\n# EOF\n").is_err());
    assert!(parse_exposition("# TYPE x counter\nx_total{a=\"b\",c=\"d\"} 1\n# EOF\n").is_ok());
}

// ---- health -------------------------------------------------------------------------------

#[test]
fn health_fails_after_three_intervals_without_a_tick() {
    let start = Instant::now();
    let health = Health::starting_at(Duration::from_secs(1), start);
    let at = |ms| start + Duration::from_millis(ms);

    assert_eq!(
        health.healthy_at(at(3000)),
        Ok(()),
        "the first round may take 3 s"
    );
    let err = health.healthy_at(at(3001)).expect_err("no round yet");
    assert!(
        err.contains("no round completed in 3.0s since start"),
        "{err}"
    );
    assert!(err.contains("limit 3s"), "{err}");

    health.tick_at(at(4000));
    assert_eq!(health.healthy_at(at(4000)), Ok(()));
    assert_eq!(health.healthy_at(at(7000)), Ok(()));
    let err = health.healthy_at(at(16_300)).expect_err("stalled");
    assert_eq!(err, "loop stalled: last round 12.3s ago, limit 3s");

    health.tick_at(at(16_300));
    assert_eq!(health.healthy_at(at(16_400)), Ok(()));
}

// ---- the server ---------------------------------------------------------------------------

/// A running admin server and the loop's ends of its channels.
struct Harness {
    addr: SocketAddr,
    /// The owner's unix socket (in `_dir`).
    socket: std::path::PathBuf,
    health: Arc<Health>,
    metrics: Arc<Metrics>,
    status: watch::Sender<StatusDocument>,
    control: Option<mpsc::Receiver<ControlRequest>>,
    token: AdminToken,
    shutdown: CancellationToken,
    server: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(health: Health, control_capacity: usize, control_timeout: Duration) -> Self {
        let limits = ServerLimits {
            control_timeout,
            ..ServerLimits::default()
        };
        Harness::start_with(health, control_capacity, limits).await
    }

    /// A server with the owner's controls on TCP too (`controls = "tcp"`), as most tests
    /// drive them there.
    async fn start_with(health: Health, control_capacity: usize, limits: ServerLimits) -> Self {
        Harness::start_all(health, control_capacity, limits, None, Controls::Tcp).await
    }

    /// With the peers' token and `peers` (this agent's key and the peers' public keys).
    async fn start_full(
        health: Health,
        control_capacity: usize,
        limits: ServerLimits,
        peers: Option<(AdminToken, crate::peers::Peers)>,
    ) -> Self {
        Harness::start_all(health, control_capacity, limits, peers, Controls::Tcp).await
    }

    async fn start_serving(
        health: Health,
        control_capacity: usize,
        limits: ServerLimits,
        controls: Controls,
    ) -> Self {
        Harness::start_all(health, control_capacity, limits, None, controls).await
    }

    async fn start_all(
        health: Health,
        control_capacity: usize,
        limits: ServerLimits,
        peers: Option<(AdminToken, crate::peers::Peers)>,
        controls: Controls,
    ) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let dir = tempfile::tempdir().expect("dir");
        let socket = crate::layout::socket_file(dir.path());
        let bound = bind_socket(&socket).expect("bind the socket");
        let (status, status_rx) = watch::channel(status_doc(Vec::new()));
        let (control_tx, control_rx) = mpsc::channel(control_capacity);
        let metrics = Arc::new(Metrics::new());
        let health = Arc::new(health);
        let state = AdminState {
            metrics: metrics.clone(),
            health: health.clone(),
            status: status_rx,
            readiness: watch::channel(ReadinessStatus::pending()).1,
            control: control_tx,
            token: AdminToken::generate().expect("token"),
            peer_token: peers.as_ref().map(|(token, _)| token.clone()),
            peers: peers.map(|(_, peers)| Arc::new(peers)),
            approvals: Arc::default(),
        };
        let token = state.token.clone();
        let shutdown = CancellationToken::new();
        let listeners = Listeners {
            tcp: Some(listener),
            socket: Some(bound.listener),
            socket_path: socket.clone(),
            controls,
        };
        let server = tokio::spawn(serve(listeners, state, shutdown.clone(), limits));
        Harness {
            addr,
            socket,
            health,
            metrics,
            status,
            control: Some(control_rx),
            token,
            shutdown,
            server,
            _dir: dir,
        }
    }

    /// A GET without a token (`/status` needs [`Harness::read`]).
    async fn get(&self, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, None, BOUND)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// A GET with the owner's token, as `valkey-dr status` sends it.
    async fn read(&self, path: &str) -> (u16, String) {
        request(self.addr, "GET", path, Some(&self.token), BOUND)
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    async fn post(&self, path: &str) -> (u16, String) {
        request(self.addr, "POST", path, Some(&self.token), BOUND)
            .await
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    async fn stop(self) {
        self.shutdown.cancel();
        timeout(BOUND, self.server)
            .await
            .expect("the server stops within the bound")
            .expect("server task")
            .expect("serve");
    }
}

/// A stand-in for the daemon loop: knows watches `a` and `b`, answers every request.
fn fake_loop(mut control: mpsc::Receiver<ControlRequest>) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(req) = control.recv().await {
            // Each watch addressed answers with the action's name as its state.
            let answer = |names: &[&str]| {
                let mut answer = ControlAnswer::default();
                for name in names {
                    answer.watches.insert(
                        (*name).to_owned(),
                        WatchAnswer {
                            state: Some(req.action.as_str().to_owned()),
                            ..WatchAnswer::default()
                        },
                    );
                }
                answer
            };
            let answer = match req.watch.as_deref() {
                None => Ok(answer(&["a", "b"])),
                Some(w @ ("a" | "b" | "a b/c")) => Ok(answer(&[w])),
                Some(w) => Err(format!("no watch named {w:?}; valid: a, b")),
            };
            let _ = req.reply.send(answer);
        }
    })
}

/// A status document of `watches`, as the daemon publishes it.
fn status_doc(watches: Vec<WatchStatus>) -> StatusDocument {
    StatusDocument {
        agent: AgentStatus {
            id: "agent-a".into(),
            mode: "alert-only".into(),
            version: "0".into(),
        },
        readiness: None,
        tasks: Default::default(),
        watches,
    }
}

/// A watch's status with its name and state; the rest as at start.
fn watch_status(name: &str, state: &str) -> WatchStatus {
    WatchStatus {
        active_endpoint: "primary:6379".into(),
        consecutive_failures: 0,
        consecutive_successes: 0,
        last_failback: None,
        last_failover: None,
        last_observation: None,
        name: name.into(),
        old_primary_successes: 0,
        pause: None,
        paused: false,
        paths: PathStreaks {
            direct: PathStreak {
                consecutive_failures: 0,
                last_failure: None,
            },
            dns: PathStreak {
                consecutive_failures: 0,
                last_failure: None,
            },
        },
        quorum: None,
        reasons: Vec::new(),
        rounds: 0,
        running: None,
        served_by_dr: false,
        state: state.into(),
        vote: None,
        switch: None,
    }
}

fn json_body(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

#[tokio::test]
async fn metrics_endpoint_serves_openmetrics() {
    let h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    h.metrics.set_state("a", State::Healthy);

    let (code, body) = h.get("/metrics").await;
    assert_eq!(code, 200);
    let samples = parse_exposition(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
    assert_eq!(
        value(
            &samples,
            "valkey_dr_state",
            &[("watch", "a"), ("state", "healthy")]
        ),
        Some(1.0)
    );

    // The content type, which Prometheus uses to pick the parser, checked on the raw reply.
    let mut stream = timeout(BOUND, TcpStream::connect(h.addr))
        .await
        .expect("bounded")
        .expect("connect");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut raw = String::new();
    timeout(BOUND, stream.read_to_string(&mut raw))
        .await
        .expect("bounded")
        .expect("read");
    let head = raw
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"),
        "{head}"
    );
    h.stop().await;
}

#[tokio::test]
async fn healthz_flips_with_the_loop_ticks() {
    // The loop "started" 10 s ago with a 1 s interval and last ticked 9 s ago.
    let now = Instant::now();
    let start = now.checked_sub(Duration::from_secs(10)).expect("uptime");
    let health = Health::starting_at(Duration::from_secs(1), start);
    let h = Harness::start(health, 4, CONTROL_TIMEOUT).await;

    let (code, body) = h.get("/healthz").await;
    assert_eq!(code, 503);
    assert!(
        body.starts_with("loop stalled: no round completed in"),
        "{body}"
    );

    h.health.tick_at(start + Duration::from_secs(1));
    let (code, body) = h.get("/healthz").await;
    assert_eq!(code, 503);
    assert!(body.starts_with("loop stalled: last round 9."), "{body}");
    assert!(body.contains("limit 3s"), "{body}");

    h.health.tick();
    assert_eq!(h.get("/healthz").await, (200, "ok\n".to_owned()));
    h.stop().await;
}

#[tokio::test]
async fn status_serves_the_latest_published_value() {
    let h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let (code, body) = h.read("/status").await;
    assert_eq!(code, 200);
    // The readiness task's latest pass is added as `readiness` (pending here).
    let pending = json!({ "checked_at": null, "status": "pending", "watches": [] });
    assert_eq!(json_body(&body)["readiness"], pending);
    assert_eq!(json_body(&body)["watches"], json!([]));

    h.status
        .send_replace(status_doc(vec![watch_status("a", "down")]));
    let (code, body) = h.read("/status").await;
    assert_eq!(code, 200);
    let served = json_body(&body);
    assert_eq!(served["watches"][0]["name"], "a");
    assert_eq!(served["watches"][0]["state"], "down");
    assert_eq!(served["agent"]["id"], "agent-a");
    assert_eq!(served["readiness"], pending);
    h.stop().await;
}

/// A pause with no reason and no end.
const PAUSE: ControlAction = ControlAction::Pause {
    reason: None,
    until: None,
    origin: None,
};

#[tokio::test]
async fn a_pause_carries_its_reason_and_end_and_bad_ones_are_refused() {
    let until_s = unix_s(SystemTime::now()) + 3600;
    let until = SystemTime::UNIX_EPOCH + Duration::from_secs(until_s);
    let action = ControlAction::Pause {
        reason: Some("CHG-7 & co".to_owned()),
        until: Some(until),
        origin: None,
    };
    let path = action.request_path(Some("a"));
    assert_eq!(
        path,
        format!("/pause?watch=a&reason=CHG-7%20%26%20co&until={until_s}")
    );
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let mut control = h.control.take().expect("receiver");
    let looped = tokio::spawn(async move {
        let request = control.recv().await.expect("a request");
        let action = request.action.clone();
        let _ = request.reply.send(Ok(ControlAnswer::default()));
        action
    });
    let (code, body) = h.post(&path).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(looped.await.unwrap(), action);
    for bad in [
        "/pause?until=12",
        "/pause?until=soon",
        "/pause?reason=",
        "/pause?delete_dr=true",
        // A reason is printable: no control character (a bell, a newline, an escape) reaches
        // the event, the log or the status.
        "/pause?reason=a%07b",
        "/pause?reason=line%0Abreak",
        "/pause?reason=%1B%5B31m",
    ] {
        let (code, body) = h.post(bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    let long = "x".repeat(MAX_PAUSE_REASON + 1);
    assert_eq!(h.post(&format!("/pause?reason={long}")).await.0, 400);
    h.stop().await;
}

/// `failback --keep-data` reaches a running agent: the flag travels in the request and the
/// loop gets it, beside `--delete-dr`; anything but true or false is refused.
#[tokio::test]
async fn a_failback_carries_keep_data_and_delete_dr_to_the_loop() {
    let action = ControlAction::Failback {
        delete_dr: true,
        keep_data: true,
    };
    let path = action.request_path(Some("a"));
    assert_eq!(path, "/failback?watch=a&delete_dr=true&keep_data=true");
    let plain = ControlAction::Failback {
        delete_dr: false,
        keep_data: false,
    };
    assert_eq!(plain.request_path(Some("a")), "/failback?watch=a");
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let mut control = h.control.take().expect("receiver");
    let looped = tokio::spawn(async move {
        let mut got = Vec::new();
        for _ in 0..2 {
            let request = control.recv().await.expect("a request");
            got.push(request.action.clone());
            let _ = request.reply.send(Ok(ControlAnswer::default()));
        }
        got
    });
    for path in [&path, "/failback?watch=a&keep_data=true"] {
        let (code, body) = h.post(path).await;
        assert_eq!(code, 200, "{path}: {body}");
    }
    assert_eq!(
        looped.await.unwrap(),
        [
            action,
            ControlAction::Failback {
                delete_dr: false,
                keep_data: true,
            }
        ]
    );
    for bad in [
        "/failback?watch=a&keep_data=yes",
        "/failback?watch=a&keep_data=",
        "/failback?watch=a&keep_data=true&keep_data=true",
        "/failover?watch=a&keep_data=true",
        "/abort?watch=a&keep_data=true",
    ] {
        let (code, body) = h.post(bad).await;
        assert_eq!(code, 400, "{bad}: {body}");
    }
    h.stop().await;
}

fn unix_s(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs()
}

/// Issue 23: an end the status cannot show (year 10000) or no clock can hold (2^63 s and
/// beyond) stopped the watch that saved it. Every `until` outside 1 s to 7 days ahead, or
/// not whole seconds, is a one-line 400 and never reaches the loop.
#[tokio::test]
async fn a_pause_end_outside_1_s_to_7_days_is_refused_and_reaches_nothing() {
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 64, CONTROL_TIMEOUT).await;
    let mut control = h.control.take().expect("receiver");
    let now = unix_s(SystemTime::now());
    let cases = [
        ("253402300800".to_owned(), "7 days"),
        ((1u64 << 63).to_string(), "beyond any representable time"),
        (u64::MAX.to_string(), "beyond any representable time"),
        (
            "18446744073709551616".to_owned(),
            "beyond any representable time",
        ),
        ("-5".to_owned(), "whole seconds"),
        ((now - 60).to_string(), "not at least 1 s after now"),
        (format!("{now}.5"), "whole seconds"),
        (now.to_string(), "not at least 1 s after now"),
        ((now + 8 * 24 * 3600).to_string(), "7 days"),
    ];
    for (until, says) in &cases {
        for path in [
            format!("/pause?watch=a&until={until}"),
            format!("/pause?until={until}&reason=x"),
        ] {
            let (code, body) = h.post(&path).await;
            assert_eq!(code, 400, "{path}: {body}");
            let error = json_body(&body)["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(error.contains(says), "{path}: {error}");
            assert!(error.contains("1 s to 7 days"), "{path}: {error}");
            assert!(!error.contains('\n'), "{path}: {error}");
        }
    }
    assert!(
        control.try_recv().is_err(),
        "a refused pause reached the loop"
    );
    // The same server still takes a pause inside the bounds.
    let looped = tokio::spawn(async move {
        let request = control.recv().await.expect("a request");
        let _ = request.reply.send(Ok(ControlAnswer::default()));
        request.action
    });
    let until = now + 7 * 24 * 3600 - 60;
    let (code, body) = h.post(&format!("/pause?watch=a&until={until}")).await;
    assert_eq!(code, 200, "{body}");
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(until);
    assert_eq!(
        timeout(BOUND, looped).await.expect("bounded").unwrap(),
        ControlAction::Pause {
            reason: None,
            until: Some(expected),
            origin: None,
        }
    );
    h.stop().await;
}

#[tokio::test]
async fn pause_and_resume_are_forwarded_to_the_loop() {
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let fake = fake_loop(h.control.take().expect("receiver"));

    let (code, body) = h.post(&PAUSE.request_path(None)).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_body(&body),
        json!({ "agent_id": "agent-a", "watches": { "a": { "state": "pause" }, "b": { "state": "pause" } } })
    );

    let (code, body) = h
        .post(&ControlAction::Resume { origin: None }.request_path(Some("a")))
        .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_body(&body),
        json!({ "agent_id": "agent-a", "watches": { "a": { "state": "resume" } } })
    );

    // A name that needs percent-encoding arrives intact.
    let path = PAUSE.request_path(Some("a b/c"));
    assert_eq!(path, "/pause?watch=a%20b%2Fc");
    let (code, body) = h.post(&path).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        json_body(&body)["watches"],
        json!({ "a b/c": { "state": "pause" } })
    );

    let (code, body) = h.post("/pause?watch=nope").await;
    assert_eq!(code, 404, "{body}");
    assert!(
        json_body(&body)["error"]
            .as_str()
            .is_some_and(|e| e.contains("no watch named \"nope\"")),
        "{body}"
    );

    // A typo must not turn into "pause everything".
    let (code, body) = h.post("/pause?wach=a").await;
    assert_eq!(code, 400, "{body}");
    assert!(json_body(&body)["error"].is_string(), "{body}");
    assert_eq!(h.post("/pause?watch=").await.0, 400);
    assert_eq!(h.post("/pause?watch=a&watch=b").await.0, 400);
    assert_eq!(h.post("/pause?watch=%zz").await.0, 400);

    h.stop().await;
    timeout(BOUND, fake)
        .await
        .expect("the fake loop ends once the server is gone")
        .expect("fake loop");
}

#[tokio::test]
async fn control_answers_503_when_the_loop_is_gone() {
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    drop(h.control.take());
    let (code, body) = h.post("/pause").await;
    assert_eq!(code, 503, "{body}");
    assert!(json_body(&body)["error"].is_string(), "{body}");

    // A loop that drops the request unanswered is reported the same way.
    let mut h2 = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let mut control = h2.control.take().expect("receiver");
    let dropper = tokio::spawn(async move {
        let req = control.recv().await.expect("a request");
        drop(req);
    });
    assert_eq!(h2.post("/resume").await.0, 503);
    timeout(BOUND, dropper)
        .await
        .expect("bounded")
        .expect("task");
    h.stop().await;
    h2.stop().await;
}

#[tokio::test]
async fn server_keeps_answering_while_the_loop_is_stuck() {
    // The loop holds its receiver but never reads it: the queue (capacity 1) fills up.
    let control_timeout = Duration::from_secs(2);
    let h = Harness::start(Health::new(Duration::from_secs(60)), 1, control_timeout).await;
    let addr = h.addr;
    let pauses: Vec<_> = (0..2)
        .map(|_| {
            let token = h.token.clone();
            tokio::spawn(async move { request(addr, "POST", "/pause", Some(&token), BOUND).await })
        })
        .collect();
    let queue = h.control.as_ref().expect("receiver");
    let deadline = Instant::now() + BOUND;
    while queue.is_empty() {
        assert!(Instant::now() < deadline, "no pause reached the queue");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // While the pauses wait on the loop, the read-only endpoints answer at once.
    for path in ["/healthz", "/status", "/metrics"] {
        let (code, _) = request(addr, "GET", path, Some(&h.token), Duration::from_secs(1))
            .await
            .unwrap_or_else(|e| panic!("{path} while the loop is stuck: {e}"));
        assert_eq!(code, 200, "{path}");
    }
    assert!(
        pauses.iter().all(|p| !p.is_finished()),
        "the reads must not have waited for the pauses"
    );

    for pause in pauses {
        let (code, body) = timeout(BOUND, pause)
            .await
            .expect("bounded")
            .expect("task")
            .expect("request");
        assert_eq!(code, 504, "{body}");
        let error = json_body(&body)["error"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(error.contains("did not answer within 2s"), "{error}");
    }
    h.stop().await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_wrong_methods_405() {
    let h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let (code, body) = h.get("/nope").await;
    assert_eq!(code, 404);
    assert!(body.contains("/healthz"), "{body}");
    assert_eq!(h.post("/metrics").await.0, 405);
    // A GET must never pause anything (a browser or a prefetcher could send it): without
    // the token it is refused before routing (401), and with it the method is wrong (405).
    assert_eq!(h.get("/pause").await.0, 401);
    let (code, _) = request(h.addr, "GET", "/pause", Some(&h.token), BOUND)
        .await
        .expect("answer");
    assert_eq!(code, 405);
    h.stop().await;
}

// ---- the client ---------------------------------------------------------------------------

#[tokio::test]
async fn client_names_the_address_when_nothing_listens() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    };
    let err = request(addr, "POST", "/pause", None, BOUND)
        .await
        .expect_err("nothing listens");
    assert!(matches!(err, AdminClientError::Connect { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("admin_listen"), "{message}");
}

#[tokio::test]
async fn client_times_out_on_a_silent_server() {
    // Accepts the connection, then never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let silent = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        // Hold the connection open until the client gives up.
        let mut stream = stream;
        let mut buf = Vec::new();
        let _ = timeout(BOUND, stream.read_to_end(&mut buf)).await;
    });
    let err = request(addr, "GET", "/status", None, Duration::from_millis(200))
        .await
        .expect_err("silent server");
    assert!(matches!(err, AdminClientError::Timeout { .. }), "{err:?}");
    assert!(err.to_string().contains("within 200ms"), "{err}");
    timeout(BOUND, silent)
        .await
        .expect("bounded")
        .expect("task");
}

#[tokio::test]
async fn client_rejects_a_malformed_request() {
    let addr: SocketAddr = "127.0.0.1:9".parse().expect("addr");
    let err = request(addr, "GET", "no spaces allowed", None, BOUND)
        .await
        .expect_err("bad path");
    assert!(
        matches!(err, AdminClientError::InvalidRequest { .. }),
        "{err:?}"
    );
}

/// Sends one raw HTTP/1.1 request with `headers` and returns the status code.
async fn raw_status(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> u16 {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = timeout(BOUND, tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect in time")
        .expect("connect");
    let mut text =
        format!("{method} {path} HTTP/1.1\r\nContent-Length: 0\r\nConnection: close\r\n");
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    stream.write_all(text.as_bytes()).await.expect("send");
    let mut answer = Vec::new();
    timeout(BOUND, stream.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .expect("read");
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {answer}"))
}

/// Issue 10, case 3: a web page's request (any `Origin`), or one made under another host name
/// (DNS rebinding), never reaches a control endpoint or `/status`; `/metrics` and `/healthz`
/// stay open, and the CLI's own requests still work.
#[tokio::test]
async fn browser_requests_never_reach_the_controls() {
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let mut control = h.control.take().expect("receiver");
    let local = h.addr.to_string();
    for path in [
        "/failover?watch=a",
        "/pause",
        "/resume",
        "/failback?watch=a&delete_dr=true",
        "/abort?watch=a",
    ] {
        let origin = [("Host", local.as_str()), ("Origin", "http://evil.example")];
        assert_eq!(
            raw_status(h.addr, "POST", path, &origin).await,
            403,
            "{path}"
        );
        let rebound = [("Host", "evil.example:9187")];
        assert_eq!(
            raw_status(h.addr, "POST", path, &rebound).await,
            403,
            "{path}"
        );
    }
    assert_eq!(
        raw_status(h.addr, "GET", "/status", &[("Host", "evil.example")]).await,
        403
    );
    assert!(
        control.try_recv().is_err(),
        "no refused request reached the loop"
    );
    let bearer = h.token.bearer();
    for host in [local.as_str(), "localhost:9187", "[::1]:9187", "127.0.0.1"] {
        let headers = [("Host", host), ("Authorization", bearer.as_str())];
        assert_eq!(
            raw_status(h.addr, "GET", "/status", &headers).await,
            200,
            "{host}"
        );
    }
    for path in ["/metrics", "/healthz"] {
        let headers = [
            ("Host", "agent.example:9187"),
            ("Origin", "http://evil.example"),
        ];
        assert_eq!(
            raw_status(h.addr, "GET", path, &headers).await,
            200,
            "{path}"
        );
    }
    // The CLI's own client is let through.
    h.control = Some(control);
    let fake = fake_loop(h.control.take().expect("receiver"));
    assert_eq!(h.post(&PAUSE.request_path(None)).await.0, 200);
    h.stop().await;
    timeout(BOUND, fake)
        .await
        .expect("the fake loop ends once the server is gone")
        .expect("fake loop");
}

/// Issue 10, case 3: a control request without the owner's token, or with another one, is
/// refused before it reaches the loop; `/status` needs none; the owner's token works.
#[tokio::test]
async fn controls_need_the_owners_token() {
    let mut h = Harness::start(Health::new(Duration::from_secs(60)), 4, CONTROL_TIMEOUT).await;
    let mut control = h.control.take().expect("receiver");
    let stranger = AdminToken::generate().expect("token");
    assert_ne!(stranger, h.token, "two tokens are never the same");
    for path in [
        "/failover?watch=a",
        "/pause",
        "/resume",
        "/failback?watch=a&delete_dr=true",
        "/abort?watch=a&delete_dr=true",
    ] {
        for token in [None, Some(&stranger)] {
            let (code, body) = request(h.addr, "POST", path, token, BOUND)
                .await
                .expect("answer");
            assert_eq!(code, 401, "{path}: {body}");
            assert!(body.contains("admin.token"), "{body}");
        }
        let local = h.addr.to_string();
        for header in [
            "Bearer",
            "Bearer ",
            "Basic abc",
            &format!("b{}", &h.token.bearer()[1..]),
        ] {
            let headers = [("Host", local.as_str()), ("Authorization", header)];
            assert_eq!(
                raw_status(h.addr, "POST", path, &headers).await,
                401,
                "{header}"
            );
        }
    }
    assert!(
        control.try_recv().is_err(),
        "no refused request reached the loop"
    );
    assert_eq!(h.read("/status").await.0, 200);
    h.control = Some(control);
    let fake = fake_loop(h.control.take().expect("receiver"));
    assert_eq!(h.post("/pause").await.0, 200);
    h.stop().await;
    timeout(BOUND, fake).await.expect("bounded").expect("task");
}

#[test]
fn tokens_never_show_and_load_says_what_to_do() {
    use std::os::unix::fs::PermissionsExt as _;
    let token = AdminToken::generate().expect("token");
    assert_eq!(format!("{token:?}"), "AdminToken(<redacted>)");
    let text = token.as_file_text();
    let text = text.trim();
    assert!(text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()));

    let dir = tempfile::tempdir().expect("dir");
    let missing = AdminToken::load(dir.path()).expect_err("no file");
    assert!(
        missing.to_string().contains("is `valkey-dr run` running"),
        "{missing}"
    );
    std::fs::write(crate::layout::token_file(dir.path()), "not a token\n").expect("write");
    let garbled = AdminToken::load(dir.path()).expect_err("garbled");
    assert!(
        garbled.to_string().contains("does not hold an admin token"),
        "{garbled}"
    );
    std::fs::write(crate::layout::token_file(dir.path()), token.as_file_text()).expect("write");
    assert_eq!(AdminToken::load(dir.path()).expect("loads"), token);
    // As root, a mode of 000 still reads: the refusal is checked only where it applies.
    std::fs::set_permissions(
        crate::layout::token_file(dir.path()),
        std::fs::Permissions::from_mode(0o000),
    )
    .expect("chmod");
    if std::fs::read(crate::layout::token_file(dir.path())).is_err() {
        let denied = AdminToken::load(dir.path()).expect_err("denied");
        assert!(
            denied.to_string().contains("as the agent's user"),
            "{denied}"
        );
    }
}

/// Issue 10, case 4: a client that never finishes its headers is cut off at the header
/// timeout, and connections beyond the limit are closed at once, while the server keeps
/// answering everyone else.
#[tokio::test]
async fn slow_and_surplus_connections_are_closed() {
    let limits = ServerLimits {
        header_timeout: Duration::from_millis(500),
        max_connections: 4,
        ..ServerLimits::default()
    };
    let h = Harness::start_with(Health::new(Duration::from_secs(60)), 4, limits).await;

    // A slow-loris client: half a request, then nothing.
    let started = Instant::now();
    let mut loris = TcpStream::connect(h.addr).await.expect("connect");
    loris
        .write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .expect("send");
    let mut answer = Vec::new();
    timeout(BOUND, loris.read_to_end(&mut answer))
        .await
        .expect("the server closes a slow client within the bound")
        .expect("read");
    let held = started.elapsed();
    assert!(
        held >= Duration::from_millis(400) && held < Duration::from_secs(3),
        "closed after {held:?}, header timeout 500ms"
    );

    // Four idle connections take every place; a fifth is closed without an answer.
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(h.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut surplus = TcpStream::connect(h.addr).await.expect("connect");
    let _ = surplus
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let read = timeout(Duration::from_secs(2), surplus.read_to_end(&mut answer))
        .await
        .expect("a surplus connection is closed at once");
    assert!(
        read.is_err() || answer.is_empty(),
        "a surplus connection got an answer: {}",
        String::from_utf8_lossy(&answer)
    );

    // Once the idle ones hit the header timeout, their places are free again.
    let deadline = Instant::now() + BOUND;
    loop {
        match timeout(
            Duration::from_secs(1),
            request(h.addr, "GET", "/healthz", None, BOUND),
        )
        .await
        {
            Ok(Ok((200, _))) => break,
            other => assert!(
                Instant::now() < deadline,
                "the server never served again: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(idle);
    h.stop().await;
}

/// Issue 10 (bounds): the admin client, which also asks peers for votes, reads at most
/// `MAX_ANSWER_BYTES` of an answer, whatever the other end sends.
#[tokio::test]
async fn client_reads_no_more_than_its_limit() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.expect("accept");
        let mut head = [0u8; 1024];
        let _ = stream.read(&mut head).await;
        let size = MAX_ANSWER_BYTES * 2;
        let _ = stream
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n").as_bytes())
            .await;
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..size / chunk.len() {
            if stream.write_all(&chunk).await.is_err() {
                break;
            }
        }
    });
    let err = request(addr, "GET", "/vote?watch=a", None, BOUND)
        .await
        .expect_err("too large");
    assert!(matches!(err, AdminClientError::TooLarge { .. }), "{err:?}");
    assert!(
        err.to_string().contains("larger than 4194304 bytes"),
        "{err}"
    );
    timeout(BOUND, server)
        .await
        .expect("bounded")
        .expect("task");
}

// ---- room for the owner (issue 23) ---------------------------------------------------------

/// A request to the harness's unix socket, with the owner's token or none.
async fn on_socket(h: &Harness, method: &str, path: &str, owner: bool) -> (u16, String) {
    let endpoint = crate::control::AdminEndpoint::Socket(h.socket.clone());
    let token = owner.then_some(&h.token);
    crate::control::client::request_to(&endpoint, method, path, token, BOUND)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on the socket: {e}"))
}

/// A TCP connection to `addr` from `from` (another loopback address), held open.
async fn connect_from(from: &str, addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{from}:0").parse().expect("address"))
        .expect("bind the client's address");
    timeout(BOUND, socket.connect(addr))
        .await
        .expect("connect in time")
        .expect("connect")
}

/// Whether the server closes `stream` without answering a request sent on it.
async fn closed_unanswered(mut stream: TcpStream) -> bool {
    let _ = stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    match timeout(Duration::from_secs(2), stream.read_to_end(&mut answer)).await {
        Ok(read) => read.is_err() || answer.is_empty(),
        Err(_) => false,
    }
}

#[test]
fn each_address_has_its_own_places_and_gets_them_back() {
    let addresses = Arc::new(PerAddress::new(2));
    let a: std::net::IpAddr = "10.0.0.1".parse().expect("ip");
    let b: std::net::IpAddr = "10.0.0.2".parse().expect("ip");
    let first = addresses.take(a).expect("a's first place");
    let second = addresses.take(a).expect("a's second place");
    assert!(addresses.take(a).is_none(), "a has two places");
    // The same IPv4 address arriving IPv4-mapped on a dual-stack socket counts as itself.
    let mapped: std::net::IpAddr = "::ffff:10.0.0.1".parse().expect("ip");
    assert!(
        addresses.take(mapped).is_none(),
        "mapped is the same address"
    );
    let other = addresses.take(b).expect("b has its own places");
    drop(first);
    assert_eq!(addresses.open(a), 1);
    let again = addresses
        .take(a)
        .expect("a place given back is taken again");
    drop((second, again, other));
    assert_eq!(addresses.open(a), 0);
    assert!(
        addresses.counts().is_empty(),
        "an address with nothing open is forgotten"
    );

    // IPv6 counts by /64: one host's addresses share its places; another /64 has its own.
    let addresses = Arc::new(PerAddress::new(1));
    let host: std::net::IpAddr = "2001:db8:1:2::1".parse().expect("ip");
    let same_64: std::net::IpAddr = "2001:db8:1:2:ffff::9".parse().expect("ip");
    let other_64: std::net::IpAddr = "2001:db8:1:3::1".parse().expect("ip");
    let _held = addresses.take(host).expect("first");
    assert!(addresses.take(same_64).is_none(), "same /64");
    assert!(addresses.take(other_64).is_some(), "another /64");
}

#[test]
fn the_limits_grow_with_the_watches() {
    let none = ServerLimits::for_watches(0);
    assert_eq!((none.per_address, none.max_connections), (8, 128));
    let many = ServerLimits::for_watches(100);
    assert_eq!(many.per_address, 108);
    assert_eq!(many.max_connections, 432, "four addresses at their cap");
    assert_eq!(many.socket_connections, SOCKET_CONNECTIONS);
}

/// One address holding its share of connections leaves the others theirs: a new connection
/// from it is closed at once, while one from another address (kubelet, Prometheus) and the
/// owner's socket are served.
#[tokio::test]
async fn one_address_cannot_take_the_places_of_the_others() {
    let limits = ServerLimits {
        per_address: 3,
        max_connections: 8,
        socket_connections: 2,
        ..ServerLimits::default()
    };
    let h = Harness::start_serving(
        Health::new(Duration::from_secs(60)),
        4,
        limits,
        Controls::Socket,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", h.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let surplus = connect_from("127.0.0.2", h.addr).await;
    assert!(
        closed_unanswered(surplus).await,
        "a fourth connection from 127.0.0.2 was served"
    );
    let started = Instant::now();
    assert_eq!(h.get("/healthz").await, (200, "ok\n".to_owned()));
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(on_socket(&h, "GET", "/status", true).await.0, 200);
    drop(held);
    h.stop().await;
}

/// Everyone's TCP places taken: the owner's socket, counted apart, still serves.
#[tokio::test]
async fn a_full_tcp_server_leaves_the_socket_alone() {
    let limits = ServerLimits {
        per_address: 8,
        max_connections: 4,
        ..ServerLimits::default()
    };
    let h = Harness::start_with(Health::new(Duration::from_secs(60)), 4, limits).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(h.addr).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let surplus = TcpStream::connect(h.addr).await.expect("connect");
    assert!(closed_unanswered(surplus).await, "TCP is full");
    assert_eq!(on_socket(&h, "GET", "/healthz", false).await.0, 200);
    assert_eq!(on_socket(&h, "GET", "/status", true).await.0, 200);
    drop(held);
    h.stop().await;
}

/// `/status` names the agent's ARN, endpoints and peers: over TCP it needs the owner's token
/// (401 with a one-line reason without it), and on the socket too.
#[tokio::test]
async fn status_needs_the_owners_token() {
    let h = Harness::start_serving(
        Health::new(Duration::from_secs(60)),
        4,
        ServerLimits::default(),
        Controls::Socket,
    )
    .await;
    let (code, body) = h.get("/status").await;
    assert_eq!(code, 401, "{body}");
    let reason = json_body(&body)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("admin.token") && !reason.contains('\n'),
        "{reason}"
    );
    let wrong = AdminToken::generate().expect("token");
    let (code, _) = request(h.addr, "GET", "/status", Some(&wrong), BOUND)
        .await
        .expect("answer");
    assert_eq!(code, 401, "another token");
    let (code, body) = h.read("/status").await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_body(&body)["agent"]["id"], "agent-a");

    assert_eq!(on_socket(&h, "GET", "/status", false).await.0, 401);
    let (code, body) = on_socket(&h, "GET", "/status", true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_body(&body)["agent"]["id"], "agent-a");
    // /metrics and /healthz stay open on both.
    assert_eq!(h.get("/metrics").await.0, 200);
    assert_eq!(on_socket(&h, "GET", "/metrics", false).await.0, 200);
    h.stop().await;
}

/// With `controls = "socket"` (the default), every owner's control over TCP is refused, with
/// or without the token, naming the socket and the key; on the socket it is applied.
#[tokio::test]
async fn controls_over_tcp_are_refused_when_they_are_on_the_socket() {
    let mut h = Harness::start_serving(
        Health::new(Duration::from_secs(60)),
        4,
        ServerLimits::default(),
        Controls::Socket,
    )
    .await;
    let mut control = h.control.take().expect("receiver");
    for path in [
        "/pause?watch=a",
        "/resume",
        "/failover?watch=a",
        "/failback?watch=a",
        "/abort?watch=a",
        "/approve?watch=a&by=alice",
    ] {
        for token in [Some(&h.token), None] {
            let (code, body) = request(h.addr, "POST", path, token, BOUND)
                .await
                .expect("answer");
            assert_eq!(code, 403, "{path}: {body}");
            let reason = json_body(&body)["error"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            assert!(
                reason.contains(&h.socket.display().to_string())
                    && reason.contains("controls = \"socket\"")
                    && !reason.contains('\n'),
                "{path}: {reason}"
            );
        }
    }
    assert!(control.try_recv().is_err(), "nothing reached the loop");
    let fake = fake_loop(control);
    let (code, body) = on_socket(&h, "POST", "/pause?watch=a", true).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json_body(&body)["watches"]["a"]["state"], "pause");
    assert_eq!(on_socket(&h, "POST", "/pause?watch=a", false).await.0, 401);
    h.stop().await;
    timeout(BOUND, fake).await.expect("bounded").expect("task");
}

/// The socket is the agent's user's alone (0600); a stale one from a killed agent is
/// replaced, while a live one, a file, a directory or a symlink in its place is left alone.
#[tokio::test]
async fn the_socket_replaces_only_a_stale_socket() {
    use std::os::unix::fs::{FileTypeExt as _, PermissionsExt as _};
    let dir = tempfile::tempdir().expect("dir");
    let path = crate::layout::socket_file(dir.path());

    let live = bind_socket(&path).expect("bind");
    let meta = std::fs::symlink_metadata(&path).expect("stat");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let err = bind_socket(&path).expect_err("a live socket");
    assert!(matches!(err, SocketError::InUse { .. }), "{err:?}");

    // A killed agent leaves its socket behind, with nobody listening.
    drop(live);
    assert!(path.exists(), "the stale socket stays after its listener");
    let again = bind_socket(&path).expect("a stale socket is replaced");
    let served = tokio::net::UnixStream::connect(&path).await;
    assert!(served.is_ok(), "the new socket listens: {served:?}");
    remove_socket(&path, (0, 0));
    assert!(path.exists(), "another file's identity removes nothing");
    remove_socket(&path, again.id());
    assert!(!path.exists(), "its own socket is removed");

    std::fs::write(&path, "mine").expect("write");
    let err = bind_socket(&path).expect_err("a file");
    assert!(err.to_string().contains("not a socket (a file)"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).expect("kept"), "mine");
    std::fs::remove_file(&path).expect("rm");

    let target = dir.path().join("elsewhere");
    std::fs::write(&target, "target").expect("write");
    std::os::unix::fs::symlink(&target, &path).expect("symlink");
    let err = bind_socket(&path).expect_err("a symlink");
    assert!(err.to_string().contains("(a symlink)"), "{err}");
    assert_eq!(std::fs::read_to_string(&target).expect("kept"), "target");
    assert!(
        std::fs::symlink_metadata(&path).is_ok(),
        "the symlink stays"
    );
}

mod fuzz;
mod property;
