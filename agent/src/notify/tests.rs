//! Sinks against real sockets on 127.0.0.1 and real child processes. Logs are captured per
//! test on its own thread, hence the current-thread runtimes: one process-wide subscriber
//! writes each line to the buffer of the thread that logged it. (A scoped subscriber per
//! test is not enough: tracing caches each call site's interest across threads, and a test
//! running beside another could lose a line, as one did under load.)

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use valkey_dr_probes::Secret;

use super::{Limits, Notifier, Queue};
use crate::config::NotifyConfig;
use crate::event::{Event, EventName};

/// Upper bound on every wait for something that should happen promptly.
const PROMPTLY: Duration = Duration::from_secs(5);

fn event(name: EventName) -> Event {
    Event {
        event: name,
        watch: "sessions".into(),
        state: "down".into(),
        previous_state: "suspect".into(),
        reasons: vec![
            "dns: dns_nxdomain x3".into(),
            "direct: connect_timeout x3".into(),
        ],
        observation: None,
        agent_id: "agent-a".into(),
        at: UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        of: None,
        failover_id: Some("fo-1".into()),
        detail: None,
    }
}

fn webhook(url: String, timeout: Duration) -> NotifyConfig {
    NotifyConfig::Webhook {
        url: Secret::new(url),
        url_env: None,
        timeout,
    }
}

fn command(argv: &[&str], timeout: Duration) -> NotifyConfig {
    NotifyConfig::Command {
        command: argv.iter().map(|s| s.to_string()).collect(),
        timeout,
    }
}

/// Log output captured for the current thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    /// Where this thread's log lines go while a test captures them.
    static CAPTURED: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

/// Ends a thread's capture.
struct Capturing;

impl Drop for Capturing {
    fn drop(&mut self) {
        CAPTURED.with(|c| c.borrow_mut().take());
    }
}

/// Writes a log line to the capturing thread's buffer, or nowhere.
struct ThreadLogs;

impl io::Write for ThreadLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        CAPTURED.with(|c| {
            if let Some(logs) = c.borrow().as_ref() {
                logs.0.lock().unwrap().extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Logs, Capturing) {
        static INSTALLED: std::sync::Once = std::sync::Once::new();
        INSTALLED.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(|| ThreadLogs)
                .with_max_level(tracing::Level::TRACE)
                .with_ansi(false)
                .finish();
            // Another test binary's subscriber is never here: this is the only one.
            let _ = tracing::subscriber::set_global_default(subscriber);
        });
        let logs = Logs::default();
        CAPTURED.with(|c| *c.borrow_mut() = Some(logs.clone()));
        (logs, Capturing)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Polls until a line contains every one of `needles`, for at most `within`.
    async fn wait_for(&self, needles: &[&str], within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.line_with(needles).is_some() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    fn line_with(&self, needles: &[&str]) -> Option<String> {
        self.text()
            .lines()
            .find(|line| needles.iter().all(|n| line.contains(n)))
            .map(str::to_string)
    }
}

impl io::Write for Logs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        self.clone()
    }
}

/// What the test server saw of one request.
#[derive(Debug)]
struct Received {
    /// Request line and headers, lowercased.
    head: String,
    body: Value,
    at: Instant,
}

enum Reply {
    Status(u16),
    /// A status with this body.
    Body(u16, &'static [u8]),
    /// Read the request, never answer, keep the connection open.
    Silent,
}

/// A one-purpose HTTP/1.1 server on 127.0.0.1:0: the n-th connection gets the n-th reply;
/// after the last one it stops listening.
async fn http_server(replies: Vec<Reply>) -> (SocketAddr, mpsc::UnboundedReceiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut silent = Vec::new();
        for reply in replies {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let Some(request) = read_request(&mut stream).await else {
                continue;
            };
            let _ = tx.send(request);
            match reply {
                Reply::Status(code) => {
                    let response = format!(
                        "HTTP/1.1 {code} Test\r\ncontent-length: 4\r\nconnection: close\r\n\r\nnope"
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                }
                Reply::Body(code, body) => {
                    let head = format!(
                        "HTTP/1.1 {code} Test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(body).await;
                }
                Reply::Silent => silent.push(stream),
            }
        }
        drop(listener);
        // Silent connections stay open until the test's runtime ends.
        std::future::pending::<()>().await;
    });
    (addr, rx)
}

async fn read_request(stream: &mut TcpStream) -> Option<Received> {
    let read = async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let n = stream.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body = serde_json::from_slice(&buf[head_end..head_end + length]).ok()?;
        Some(Received {
            head,
            body,
            at: Instant::now(),
        })
    };
    tokio::time::timeout(PROMPTLY, read).await.ok().flatten()
}

async fn next_request(rx: &mut mpsc::UnboundedReceiver<Received>) -> Received {
    tokio::time::timeout(PROMPTLY, rx.recv())
        .await
        .expect("no request in time")
        .expect("server stopped")
}

async fn stop(shutdown: CancellationToken, sinks: tokio::task::JoinHandle<()>, within: Duration) {
    shutdown.cancel();
    tokio::time::timeout(within, sinks)
        .await
        .expect("sinks did not stop in time")
        .expect("sinks task panicked");
}

#[tokio::test]
async fn webhook_posts_the_event_as_json() {
    let (addr, mut requests) = http_server(vec![Reply::Status(200)]).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    let sent = event(EventName::Down);
    notifier.notify(sent.clone());
    let got = next_request(&mut requests).await;

    assert!(
        got.head.starts_with("post /hook http/1.1\r\n"),
        "{}",
        got.head
    );
    assert!(got.head.contains("\r\ncontent-type: application/json\r\n"));
    let body = &got.body;
    assert_eq!(body["event"], "down");
    assert_eq!(body["watch"], "sessions");
    assert_eq!(body["state"], "down");
    assert_eq!(body["previous_state"], "suspect");
    assert_eq!(
        body["reasons"],
        json!(["dns: dns_nxdomain x3", "direct: connect_timeout x3"])
    );
    assert_eq!(body["agent_id"], "agent-a");
    assert_eq!(body["at"], "2023-11-14T22:13:20.000Z");
    assert_eq!(body["failover_id"], "fo-1");
    assert_eq!(body["text"], sent.text());
    stop(shutdown, sinks, PROMPTLY).await;
}

/// Issue 23: a webhook's error body reached the log with its control characters, so a
/// receiver could colour, rewrite or forge log lines.
#[tokio::test]
async fn a_webhook_error_body_is_logged_escaped_on_one_line() {
    let (logs, _guard) = Logs::capture();
    let body: &[u8] = b"\x1b[31minvalid_payload\nERROR forged line";
    let (addr, mut requests) = http_server(vec![Reply::Body(400, body)]).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    notifier.notify(event(EventName::Down));
    next_request(&mut requests).await;
    let escaped = "HTTP 400 Bad Request: \\x1b[31minvalid_payload\\nERROR forged line";
    assert!(
        logs.wait_for(&["webhook notification not delivered", escaped], PROMPTLY)
            .await,
        "{}",
        logs.text()
    );
    let text = logs.text();
    assert!(!text.contains('\x1b'), "{text}");
    assert!(
        !text.lines().any(|l| l.starts_with("ERROR forged")),
        "{text}"
    );
    stop(shutdown, sinks, PROMPTLY).await;
}

/// Issue 23: a server's error text reached chat as markup, so `<!channel>` paged a whole
/// channel and `<https://x|y>` showed a link under another name.
#[tokio::test]
async fn server_text_in_an_event_reaches_chat_as_text_not_markup() {
    let (addr, mut requests) = http_server(vec![Reply::Status(200)]).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );
    // What the probes make of a server's error reply: cut and escaped for control
    // characters, its markup untouched.
    let said = valkey_dr_probes::foreign_text(b"-ERR <!channel> see <https://x|y> & co", 256);
    let mut sent = event(EventName::ConfigError);
    sent.reasons = vec![format!("direct: auth: server said {said}")];

    notifier.notify(sent.clone());
    let body = next_request(&mut requests).await.body;
    let text = body["text"].as_str().unwrap();
    assert!(
        text.ends_with(
            ": direct: auth: server said -ERR &lt;!channel&gt; see &lt;https://x|y&gt; &amp; co"
        ),
        "{text}"
    );
    assert!(!text.contains('<') && !text.contains('>'), "{text}");
    // The data fields are the contract's, as they were.
    assert_eq!(body["reasons"], json!(sent.reasons));
    assert_eq!(body["event"], "config_error");
    stop(shutdown, sinks, PROMPTLY).await;
}

#[tokio::test]
async fn webhook_retries_5xx_and_delivers_on_the_third_attempt() {
    let (logs, _guard) = Logs::capture();
    let replies = vec![Reply::Status(503), Reply::Status(503), Reply::Status(200)];
    let (addr, mut requests) = http_server(replies).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    notifier.notify(event(EventName::Down));
    let first = next_request(&mut requests).await;
    next_request(&mut requests).await;
    let third = next_request(&mut requests).await;

    assert_eq!(third.body["event"], "down");
    // Backoff of 200 ms then 800 ms between the three attempts.
    assert!(third.at - first.at >= Duration::from_millis(1000));
    assert!(
        logs.wait_for(&["webhook notification delivered", "attempts=3"], PROMPTLY)
            .await,
        "{}",
        logs.text()
    );
    assert!(logs.line_with(&["attempt=2", "status=503"]).is_some());
    stop(shutdown, sinks, PROMPTLY).await;
}

#[tokio::test]
async fn webhook_4xx_is_not_retried() {
    let (logs, _guard) = Logs::capture();
    let (addr, mut requests) = http_server(vec![Reply::Status(400), Reply::Status(200)]).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    notifier.notify(event(EventName::Down));
    assert_eq!(next_request(&mut requests).await.body["event"], "down");
    assert!(
        logs.wait_for(
            &[
                "webhook notification not delivered",
                "attempts=1",
                "status=400"
            ],
            PROMPTLY
        )
        .await,
        "{}",
        logs.text()
    );
    // The next request the server sees is the next event, not a retry of the first.
    notifier.notify(event(EventName::Recovered));
    assert_eq!(next_request(&mut requests).await.body["event"], "recovered");
    stop(shutdown, sinks, PROMPTLY).await;
}

#[tokio::test]
async fn webhook_attempt_is_bounded_by_its_timeout_and_never_by_the_caller() {
    let (logs, _guard) = Logs::capture();
    let (addr, mut requests) = http_server(vec![Reply::Silent, Reply::Silent]).await;
    let shutdown = CancellationToken::new();
    let timeout = Duration::from_millis(300);
    let url = format!("http://{addr}/hook");
    let limits = Limits {
        grace: Duration::from_millis(200),
        ..Limits::DEFAULT
    };
    let (notifier, sinks) =
        Notifier::spawn_with(&[webhook(url, timeout)], shutdown.clone(), limits);

    let before = Instant::now();
    notifier.notify(event(EventName::Down));
    assert!(before.elapsed() < Duration::from_millis(50));

    let first = next_request(&mut requests).await;
    let second = next_request(&mut requests).await;
    // The first attempt gave up at its timeout, then the 200 ms backoff.
    let gap = second.at - first.at;
    assert!(gap >= timeout + Duration::from_millis(200), "{gap:?}");
    assert!(gap < timeout + Duration::from_millis(1200), "{gap:?}");
    assert!(
        logs.line_with(&["attempt=1", "no response within 300ms"])
            .is_some(),
        "{}",
        logs.text()
    );
    stop(shutdown, sinks, PROMPTLY).await;
}

#[tokio::test]
async fn dead_webhook_delays_neither_the_command_nor_shutdown_past_its_grace() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let (addr, mut requests) = http_server(vec![Reply::Silent]).await;
    let shutdown = CancellationToken::new();
    let configs = [
        webhook(format!("http://{addr}/hook"), Duration::from_secs(30)),
        command(
            &[
                "/bin/sh",
                "-c",
                "cat > \"$1\"",
                "notify-test",
                out.to_str().unwrap(),
            ],
            PROMPTLY,
        ),
    ];
    let grace = Duration::from_millis(300);
    let limits = Limits {
        grace,
        ..Limits::DEFAULT
    };
    let (notifier, sinks) = Notifier::spawn_with(&configs, shutdown.clone(), limits);

    notifier.notify(event(EventName::Down));
    next_request(&mut requests).await;
    assert!(
        logs.wait_for(&["notification command succeeded"], PROMPTLY)
            .await,
        "{}",
        logs.text()
    );
    // The webhook is still waiting on its first attempt (timeout 30 s).
    assert!(logs.line_with(&["webhook attempt failed"]).is_none());

    let before = Instant::now();
    stop(shutdown, sinks, grace + Duration::from_secs(1)).await;
    assert!(before.elapsed() >= grace);
    assert!(logs.line_with(&["shutdown grace", "queued=0"]).is_some());
}

#[tokio::test]
async fn shutdown_drains_queued_events_in_order() {
    let replies = (0..3).map(|_| Reply::Status(200)).collect();
    let (addr, mut requests) = http_server(replies).await;
    let shutdown = CancellationToken::new();
    let url = format!("http://{addr}/hook");
    let (notifier, sinks) = Notifier::spawn(
        &[webhook(url, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    let names = [
        EventName::Suspect,
        EventName::Down,
        EventName::FailoverIntent,
    ];
    for name in names {
        notifier.notify(event(name));
    }
    stop(shutdown, sinks, PROMPTLY).await;

    for name in names {
        assert_eq!(
            next_request(&mut requests).await.body["event"],
            name.as_str()
        );
    }
}

#[tokio::test]
async fn webhook_url_never_reaches_the_logs() {
    let (logs, _guard) = Logs::capture();
    let (addr, mut requests) = http_server(vec![Reply::Status(400)]).await;
    // A port with nothing listening: connection refused.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let token = "services/T000/B000/s3cr3t-t0ken?sig=abc";
    let shutdown = CancellationToken::new();
    let configs = [
        webhook(format!("http://{addr}/{token}"), PROMPTLY),
        webhook(format!("http://{closed}/{token}"), PROMPTLY),
    ];
    let grace = Duration::from_millis(200);
    let limits = Limits {
        grace,
        ..Limits::DEFAULT
    };
    let (notifier, sinks) = Notifier::spawn_with(&configs, shutdown.clone(), limits);

    notifier.notify(event(EventName::Down));
    let got = next_request(&mut requests).await;
    assert!(
        got.head.contains("s3cr3t-t0ken"),
        "the token must go on the wire"
    );
    let refused = format!("url=http://{closed}/<redacted>");
    assert!(
        logs.wait_for(&["webhook attempt failed", &refused, "attempt=2"], PROMPTLY)
            .await,
        "{}",
        logs.text()
    );
    let rejected = format!("url=http://{addr}/<redacted>");
    assert!(
        logs.wait_for(&["not delivered", &rejected, "status=400"], PROMPTLY)
            .await
    );

    let text = logs.text();
    assert!(!text.contains("s3cr3t"), "{text}");
    assert!(!text.contains("sig=abc"), "{text}");
    assert!(!format!("{notifier:?}").contains("s3cr3t"));
    stop(shutdown, sinks, grace + Duration::from_secs(1)).await;
    assert!(!logs.text().contains("s3cr3t"));
}

#[tokio::test]
async fn command_gets_the_event_in_env_and_as_json_on_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let (stdin_file, env_file) = (dir.path().join("stdin"), dir.path().join("env"));
    let script = "cat > \"$1\"; env | grep '^VALKEY_DR_' > \"$2\"";
    let argv = [
        "/bin/sh",
        "-c",
        script,
        "notify-test",
        stdin_file.to_str().unwrap(),
        env_file.to_str().unwrap(),
    ];
    let shutdown = CancellationToken::new();
    let (notifier, sinks) = Notifier::spawn(
        &[command(&argv, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    let mut sent = event(EventName::Reminder);
    sent.of = Some(EventName::Down);
    sent.failover_id = None;
    notifier.notify(sent.clone());
    // Shutdown drains the queue: when the sinks have stopped, the command has run.
    stop(shutdown, sinks, PROMPTLY).await;

    let stdin: Value = serde_json::from_str(&read(&stdin_file)).unwrap();
    assert_eq!(stdin, sent.to_json());
    let env: BTreeMap<String, String> = read(&env_file)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let expected: BTreeMap<String, String> = [
        ("VALKEY_DR_EVENT", "reminder"),
        ("VALKEY_DR_WATCH", "sessions"),
        ("VALKEY_DR_STATE", "down"),
        ("VALKEY_DR_PREVIOUS_STATE", "suspect"),
        (
            "VALKEY_DR_REASONS",
            "dns: dns_nxdomain x3; direct: connect_timeout x3",
        ),
        ("VALKEY_DR_AGENT_ID", "agent-a"),
        ("VALKEY_DR_AT", "2023-11-14T22:13:20.000Z"),
        ("VALKEY_DR_OF", "down"),
        ("VALKEY_DR_TEXT", &sent.text()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(env, expected);
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[tokio::test]
async fn command_past_its_timeout_is_killed() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let argv = [
        "/bin/sh",
        "-c",
        "echo $$ > \"$1\"; exec sleep 30",
        "notify-test",
        pid_file.to_str().unwrap(),
    ];
    let timeout = Duration::from_millis(300);
    let shutdown = CancellationToken::new();
    let (notifier, sinks) = Notifier::spawn(
        &[command(&argv, timeout)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    let before = Instant::now();
    notifier.notify(event(EventName::Down));
    assert!(
        logs.wait_for(
            &["notification command timed out; killed", "signal: 9"],
            timeout + Duration::from_secs(1)
        )
        .await,
        "{}",
        logs.text()
    );
    assert!(before.elapsed() >= timeout);
    let pid = read(&pid_file).trim().to_string();
    assert!(!pid.is_empty());
    #[cfg(target_os = "linux")]
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} alive"
    );
    stop(shutdown, sinks, PROMPTLY).await;
}

/// Issue 10: a command runs in its own process group and, at its timeout, the whole group
/// is killed: a script's background child does not outlive it.
#[tokio::test]
async fn a_timed_out_command_takes_its_children_with_it() {
    let (logs, _guard) = Logs::capture();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pids");
    let argv = [
        "/bin/sh",
        "-c",
        "sleep 30 & echo \"$$ $!\" > \"$1\"; wait",
        "notify-test",
        pid_file.to_str().unwrap(),
    ];
    let timeout = Duration::from_millis(300);
    let shutdown = CancellationToken::new();
    let (notifier, sinks) = Notifier::spawn(
        &[command(&argv, timeout)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );
    notifier.notify(event(EventName::Down));
    assert!(
        logs.wait_for(
            &["notification command timed out; killed"],
            timeout + Duration::from_secs(2)
        )
        .await,
        "{}",
        logs.text()
    );
    let pids = read(&pid_file);
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    // The shell's child is reparented and reaped by init: give it a moment to go.
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in &pids {
        let proc = format!("/proc/{pid}/stat");
        while std::fs::read_to_string(&proc).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(Instant::now() < deadline, "pid {pid} still alive");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop(shutdown, sinks, PROMPTLY).await;
}

#[tokio::test]
async fn failed_command_is_logged_with_its_status_and_stderr() {
    let (logs, _guard) = Logs::capture();
    let argv = ["/bin/sh", "-c", "echo paging failed >&2; exit 3"];
    let shutdown = CancellationToken::new();
    let (notifier, sinks) = Notifier::spawn(
        &[command(&argv, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    notifier.notify(event(EventName::Down));
    stop(shutdown, sinks, PROMPTLY).await;
    let line = logs
        .line_with(&["notification command failed"])
        .unwrap_or_else(|| panic!("{}", logs.text()));
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("exit status: 3"), "{line}");
    assert!(line.contains("stderr=paging failed"), "{line}");
}

#[tokio::test]
async fn missing_program_is_logged_and_the_sink_goes_on() {
    let (logs, _guard) = Logs::capture();
    let shutdown = CancellationToken::new();
    let argv = ["/nonexistent/valkey-dr-notify"];
    let (notifier, sinks) = Notifier::spawn(
        &[command(&argv, PROMPTLY)],
        shutdown.clone(),
        Arc::new(|_, _| {}),
    );

    notifier.notify(event(EventName::Down));
    notifier.notify(event(EventName::Recovered));
    stop(shutdown, sinks, PROMPTLY).await;
    let text = logs.text();
    assert_eq!(
        text.matches("notification command could not be started")
            .count(),
        2,
        "{text}"
    );
}

#[test]
fn full_queue_drops_the_oldest_event() {
    let (logs, _guard) = Logs::capture();
    let queue = Queue::new("test".into(), "command", 2, Arc::new(|_, _| {}));
    for name in [
        EventName::Suspect,
        EventName::Down,
        EventName::FailoverIntent,
    ] {
        queue.push(event(name));
    }
    assert_eq!(queue.pop().unwrap().event, EventName::Down);
    assert_eq!(queue.pop().unwrap().event, EventName::FailoverIntent);
    assert!(queue.pop().is_none());
    let line = logs
        .line_with(&["notification queue full"])
        .unwrap_or_else(|| panic!("{}", logs.text()));
    assert!(line.contains("event=suspect"), "{line}");
    assert!(line.contains("dropped_total=1"), "{line}");
}

#[tokio::test]
async fn every_event_is_logged_even_without_sinks() {
    let (logs, _guard) = Logs::capture();
    Notifier::disabled().notify(event(EventName::Down));
    let shutdown = CancellationToken::new();
    let (notifier, sinks) = Notifier::spawn(&[], shutdown.clone(), Arc::new(|_, _| {}));
    notifier.notify(event(EventName::Recovered));
    stop(shutdown, sinks, PROMPTLY).await;

    let down = logs.line_with(&["event=down"]).unwrap();
    assert!(down.contains("WARN"), "{down}");
    assert!(down.contains("watch=sessions"), "{down}");
    assert!(down.contains("failover_id=\"fo-1\"") || down.contains("failover_id=fo-1"));
    assert!(down.contains(&event(EventName::Down).text()), "{down}");
    let recovered = logs.line_with(&["event=recovered"]).unwrap();
    assert!(recovered.contains("INFO"), "{recovered}");
}

#[tokio::test]
async fn unusable_webhook_url_disables_only_that_sink() {
    let (logs, _guard) = Logs::capture();
    let (addr, mut requests) = http_server(vec![Reply::Status(200)]).await;
    let shutdown = CancellationToken::new();
    let configs = [
        webhook("http://".into(), PROMPTLY),
        webhook(format!("http://{addr}/hook"), PROMPTLY),
    ];
    let (notifier, sinks) = Notifier::spawn(&configs, shutdown.clone(), Arc::new(|_, _| {}));
    assert!(
        logs.line_with(&["sink disabled"]).is_some(),
        "{}",
        logs.text()
    );

    notifier.notify(event(EventName::Down));
    assert_eq!(next_request(&mut requests).await.body["event"], "down");
    stop(shutdown, sinks, PROMPTLY).await;
}

/// Every event's fate reaches the outcome callback: delivered (`ok`) or given up (`failed`),
/// per sink kind (`valkey_dr_notifications_total`).
#[tokio::test]
async fn each_delivery_is_counted_by_sink_and_result() {
    // A 400 is final (no retry): the webhook gives up on the first event and delivers the
    // second; the command `true` delivers, `false` fails.
    let (addr, mut requests) = http_server(vec![Reply::Status(400), Reply::Status(200)]).await;
    let shutdown = CancellationToken::new();
    let seen: Arc<Mutex<Vec<(&'static str, &'static str)>>> = Arc::default();
    let record = seen.clone();
    let (notifier, sinks) = Notifier::spawn(
        &[
            webhook(format!("http://{addr}/hook"), PROMPTLY),
            command(&["true"], PROMPTLY),
            command(&["false"], PROMPTLY),
        ],
        shutdown.clone(),
        Arc::new(move |sink, result| record.lock().unwrap().push((sink, result))),
    );
    notifier.notify(event(EventName::Down));
    notifier.notify(event(EventName::Recovered));
    next_request(&mut requests).await;
    next_request(&mut requests).await;
    let deadline = Instant::now() + PROMPTLY;
    while seen.lock().unwrap().len() < 6 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut outcomes = seen.lock().unwrap().clone();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        [
            ("command", "failed"),
            ("command", "failed"),
            ("command", "ok"),
            ("command", "ok"),
            ("webhook", "failed"),
            ("webhook", "ok"),
        ]
    );
    stop(shutdown, sinks, PROMPTLY).await;
}
