//! Notification sinks: tell people (and their tools) about [`Event`]s without ever slowing
//! the daemon down.
//!
//! Every event is logged first, always: the log is the record of last resort. Then it is
//! queued to each configured sink. Each sink owns a bounded queue and one task that delivers
//! in order, so a dead webhook delays neither the command notifier nor the caller. When a
//! queue is full the OLDEST queued event is dropped (with a warning): the newest one says
//! what is true now, which is what a paged human needs, and the log still has every event.
//!
//! - **webhook**: a JSON POST of [`Event::to_json`] (Slack-compatible `text`). Each attempt is
//!   bounded by the configured timeout; 5xx, 429, connection errors and timeouts are retried
//!   with exponential backoff, other 4xx are not (the request itself is wrong). The URL often
//!   carries a token, so only its redacted form is ever logged.
//! - **command**: argv run without a shell, like Sentinel's notification-script: the event in
//!   `VALKEY_DR_*` variables and as JSON on stdin, killed at the timeout, never retried.
//!
//! On shutdown each sink keeps delivering what is queued for a bounded grace, then stops.

use std::fmt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use std::{collections::VecDeque, error::Error as _};

use backon::{ExponentialBuilder, Retryable};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_rustls::{ConfigBuilderExt, HttpsConnector};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::text::outside;
use tracing::{debug, error, info, warn};

use crate::config::{NotifyConfig, redact_url};
use crate::event::Event;

/// Webhook retries after the first attempt. With a 200 ms first delay growing ×4 (200 ms,
/// 800 ms, 3.2 s) a webhook gets past a restart or a brief 503 without turning one event into
/// minutes of work: at most 4 × timeout + 4.2 s per event.
const WEBHOOK_RETRIES: usize = 3;
const WEBHOOK_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const WEBHOOK_BACKOFF_FACTOR: f32 = 4.0;

/// How much of a command's stdout/stderr, or of a webhook's error body, reaches the log.
const OUTPUT_CAP: usize = 4096;

/// How long a command's output may still be read after it exited (a background child of
/// its own may hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_secs(1);

/// How long to wait for a killed command to be reaped; SIGKILL cannot be ignored, so this is
/// only slack for a loaded host.
const REAP_TIMEOUT: Duration = Duration::from_secs(1);

/// Sizes and bounds of the sink tasks; tests shrink them.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Undelivered events a sink holds before it drops the oldest. A sink that is behind by
    /// 256 events is down; when it comes back only the recent ones are worth sending.
    queue: usize,
    /// How long sinks keep delivering after shutdown, well inside systemd's stop timeout.
    grace: Duration,
}

impl Limits {
    const DEFAULT: Limits = Limits {
        queue: 256,
        grace: Duration::from_secs(5),
    };
}

/// Hands events to the log and to every configured sink. Cheap to clone; [`Notifier::notify`]
/// never blocks.
#[derive(Clone)]
pub struct Notifier {
    queues: Arc<[Arc<Queue>]>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.queues.iter().map(|q| &q.sink))
            .finish()
    }
}

impl Notifier {
    /// A notifier with no sinks: events are only logged.
    pub fn disabled() -> Notifier {
        Notifier {
            queues: Arc::new([]),
        }
    }

    /// Starts one task per sink. The handle completes once `shutdown` is cancelled and every
    /// sink has drained its queue or used up the shutdown grace (5 s).
    ///
    /// A sink that cannot be built (an unparsable URL) is logged as an error and skipped, so
    /// that the others still work. Must be called inside a tokio runtime.
    ///
    /// `outcome` hears of every event each sink delivered (`ok`), gave up on (`failed`) or
    /// dropped from a full queue (`dropped`), with the sink's kind (`webhook`, `command`):
    /// the daemon counts them as `valkey_dr_notifications_total`.
    pub fn spawn(
        configs: &[NotifyConfig],
        shutdown: CancellationToken,
        outcome: DeliveryListener,
    ) -> (Notifier, JoinHandle<()>) {
        Notifier::spawn_counted(configs, shutdown, Limits::DEFAULT, outcome)
    }

    #[cfg(test)]
    fn spawn_with(
        configs: &[NotifyConfig],
        shutdown: CancellationToken,
        limits: Limits,
    ) -> (Notifier, JoinHandle<()>) {
        Notifier::spawn_counted(configs, shutdown, limits, Arc::new(|_, _| {}))
    }

    fn spawn_counted(
        configs: &[NotifyConfig],
        shutdown: CancellationToken,
        limits: Limits,
        outcome: DeliveryListener,
    ) -> (Notifier, JoinHandle<()>) {
        let mut queues = Vec::new();
        let mut tasks = Vec::new();
        for sink in configs.iter().filter_map(Sink::new) {
            let queue = Arc::new(Queue::new(
                sink.label(),
                sink.kind(),
                limits.queue,
                outcome.clone(),
            ));
            tasks.push(tokio::spawn(run_sink(
                sink,
                queue.clone(),
                shutdown.clone(),
                limits.grace,
            )));
            queues.push(queue);
        }
        let all_stopped = tokio::spawn(async move {
            shutdown.cancelled().await;
            for task in tasks {
                if let Err(e) = task.await {
                    error!(error = %e, "notification sink task failed");
                }
            }
        });
        let notifier = Notifier {
            queues: queues.into(),
        };
        (notifier, all_stopped)
    }

    /// Logs `event` and queues it to every sink; returns at once.
    pub fn notify(&self, event: Event) {
        let event = event.bounded();
        log_event(&event);
        for queue in self.queues.iter() {
            queue.push(event.clone());
        }
    }
}

fn log_event(event: &Event) {
    let text = event.text();
    let failover_id = event.failover_id.as_deref();
    if event.event.is_warning() {
        warn!(event = %event.event, watch = %event.watch, state = %event.state, failover_id, "{text}");
    } else {
        info!(event = %event.event, watch = %event.watch, state = %event.state, failover_id, "{text}");
    }
}

/// Hears what became of each event a sink had: `(sink kind, result)`, result `ok`,
/// `failed` or `dropped`.
pub type DeliveryListener = Arc<dyn Fn(&'static str, &'static str) + Send + Sync>;

/// One sink's pending events: a bounded FIFO that drops its oldest entry when full.
struct Queue {
    /// The sink, as logs name it (never a full webhook URL).
    sink: String,
    /// `webhook` or `command`, for [`DeliveryListener`].
    kind: &'static str,
    outcome: DeliveryListener,
    capacity: usize,
    events: Mutex<VecDeque<Event>>,
    /// Wakes the sink task; `notify_one` keeps a permit, so a push between the task's empty
    /// `pop` and its wait is not lost.
    ready: Notify,
    dropped: AtomicU64,
}

impl Queue {
    fn new(sink: String, kind: &'static str, capacity: usize, outcome: DeliveryListener) -> Queue {
        Queue {
            sink,
            kind,
            outcome,
            capacity: capacity.max(1),
            events: Mutex::new(VecDeque::new()),
            ready: Notify::new(),
            dropped: AtomicU64::new(0),
        }
    }

    fn push(&self, event: Event) {
        let oldest = {
            let mut events = self.lock();
            let oldest = (events.len() >= self.capacity)
                .then(|| events.pop_front())
                .flatten();
            events.push_back(event);
            oldest
        };
        self.ready.notify_one();
        if let Some(old) = oldest {
            (self.outcome)(self.kind, "dropped");
            let dropped_total = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            warn!(
                sink = %self.sink,
                event = %old.event,
                watch = %old.watch,
                dropped_total,
                "notification queue full ({} events); dropped the oldest",
                self.capacity
            );
        }
    }

    fn pop(&self) -> Option<Event> {
        self.lock().pop_front()
    }

    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        // A panic elsewhere cannot leave a VecDeque half-updated, so a poisoned lock is usable.
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Delivers `queue` in order until shutdown, then drains it for at most `grace`.
async fn run_sink(sink: Sink, queue: Arc<Queue>, shutdown: CancellationToken, grace: Duration) {
    let deliver_all = async {
        loop {
            match queue.pop() {
                Some(event) => {
                    let delivered = sink.deliver(&event).await;
                    (queue.outcome)(queue.kind, if delivered { "ok" } else { "failed" });
                }
                None if shutdown.is_cancelled() => return,
                None => tokio::select! {
                    () = queue.ready.notified() => {}
                    () = shutdown.cancelled() => {}
                },
            }
        }
    };
    let grace_over = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        () = deliver_all => debug!(sink = %queue.sink, "notification sink stopped"),
        () = grace_over => warn!(
            sink = %queue.sink,
            queued = queue.len(),
            "shutdown grace of {grace:?} over; abandoning the delivery in progress and the queued events"
        ),
    }
}

enum Sink {
    /// Boxed: the HTTPS client is large next to a command.
    Webhook(Box<Webhook>),
    Command(Command),
}

impl Sink {
    fn new(config: &NotifyConfig) -> Option<Sink> {
        match config {
            NotifyConfig::Webhook { url, timeout, .. } => {
                Webhook::new(url.expose(), *timeout).map(|w| Sink::Webhook(Box::new(w)))
            }
            NotifyConfig::Command { command, timeout } => {
                if command.is_empty() {
                    error!("notification command has an empty argv; sink disabled");
                    return None;
                }
                Some(Sink::Command(Command {
                    argv: command.clone(),
                    timeout: *timeout,
                }))
            }
        }
    }

    fn label(&self) -> String {
        match self {
            Sink::Webhook(w) => format!("webhook {}", w.redacted),
            Sink::Command(c) => format!("command {}", c.argv[0]),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Sink::Webhook(_) => "webhook",
            Sink::Command(_) => "command",
        }
    }

    /// Whether the event was delivered.
    async fn deliver(&self, event: &Event) -> bool {
        match self {
            Sink::Webhook(w) => w.deliver(event).await,
            Sink::Command(c) => c.deliver(event).await,
        }
    }
}

pub(crate) struct Webhook {
    /// The full URL, token included: it goes on the wire and nowhere else.
    uri: Uri,
    /// What logs say instead.
    redacted: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    backoff: ExponentialBuilder,
}

/// Why one webhook attempt (or http gate check) failed.
pub(crate) enum Failure {
    /// A status other than 2xx, and the start of the body as it came (shown escaped).
    Status(StatusCode, String),
    Timeout(Duration),
    Transport(hyper_util::client::legacy::Error),
}

impl Failure {
    /// The request got no answer within its timeout.
    pub(crate) fn timed_out(&self) -> bool {
        matches!(self, Failure::Timeout(_))
    }

    fn retryable(&self) -> bool {
        match self {
            Failure::Status(status, _) => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            Failure::Timeout(_) | Failure::Transport(_) => true,
        }
    }

    fn status(&self) -> Option<u16> {
        match self {
            Failure::Status(status, _) => Some(status.as_u16()),
            _ => None,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Status(status, body) if body.is_empty() => write!(f, "HTTP {status}"),
            // The body is the server's text: escaped to one line wherever it is shown.
            Failure::Status(status, body) => write!(f, "HTTP {status}: {}", outside(body)),
            Failure::Timeout(limit) => write!(f, "no response within {limit:?}"),
            Failure::Transport(e) => {
                // The chain names hosts and OS errors, never the URL's path or query.
                write!(f, "{e}")?;
                let mut source = e.source();
                while let Some(cause) = source {
                    write!(f, ": {cause}")?;
                    source = cause.source();
                }
                Ok(())
            }
        }
    }
}

impl Webhook {
    /// A client for `url`, each request bounded by `timeout`; `None` (logged) when the URL
    /// or the TLS setup is unusable.
    pub(crate) fn new(url: &str, timeout: Duration) -> Option<Webhook> {
        let redacted = redact_url(url);
        let uri = match url.parse::<Uri>() {
            Ok(uri)
                if matches!(uri.scheme_str(), Some("http" | "https"))
                    && uri.authority().is_some() =>
            {
                uri
            }
            _ => {
                error!(url = %redacted, "webhook URL is not an absolute http(s) URL; sink disabled");
                return None;
            }
        };
        let tls = match tls_config(&redacted) {
            Ok(tls) => tls,
            Err(e) => {
                error!(url = %redacted, error = %e, "webhook TLS setup failed; sink disabled");
                return None;
            }
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Some(Webhook {
            uri,
            redacted,
            timeout,
            client: Client::builder(TokioExecutor::new()).build(connector),
            // No jitter: a handful of agents cannot stampede a webhook, and fixed delays make
            // the retry schedule predictable in logs and tests.
            backoff: ExponentialBuilder::new()
                .with_min_delay(WEBHOOK_FIRST_BACKOFF)
                .with_factor(WEBHOOK_BACKOFF_FACTOR)
                .with_max_times(WEBHOOK_RETRIES),
        })
    }

    async fn deliver(&self, event: &Event) -> bool {
        let body = Bytes::from(event.to_json().to_string());
        let attempts = AtomicU32::new(0);
        let (body, counter) = (&body, &attempts);
        let result = (move || async move {
            let attempt = counter.fetch_add(1, Ordering::Relaxed) + 1;
            let result = self.send(Method::POST, body.clone()).await;
            if let Err(failure) = &result {
                warn!(
                    sink = "webhook",
                    url = %self.redacted,
                    event = %event.event,
                    watch = %event.watch,
                    attempt,
                    status = failure.status(),
                    retryable = failure.retryable(),
                    "webhook attempt failed: {failure}"
                );
            }
            result
        })
        .retry(self.backoff)
        .when(Failure::retryable)
        .await;
        let attempts = attempts.load(Ordering::Relaxed);
        let delivered = result.is_ok();
        match result {
            Ok(()) => info!(
                sink = "webhook",
                url = %self.redacted,
                event = %event.event,
                watch = %event.watch,
                attempts,
                "webhook notification delivered"
            ),
            Err(failure) => error!(
                sink = "webhook",
                url = %self.redacted,
                event = %event.event,
                watch = %event.watch,
                attempts,
                status = failure.status(),
                "webhook notification not delivered: {failure}"
            ),
        }
        delivered
    }

    /// One request, bounded by the timeout: Ok for a 2xx answer.
    pub(crate) async fn send(&self, method: Method, body: Bytes) -> Result<(), Failure> {
        let with_body = !body.is_empty();
        let mut request = Request::new(Full::new(body));
        *request.method_mut() = method;
        *request.uri_mut() = self.uri.clone();
        let headers = request.headers_mut();
        if with_body {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("valkey-dr/", env!("CARGO_PKG_VERSION"))),
        );
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(Failure::Transport)?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            Err(Failure::Status(
                status,
                body_start(response.into_body()).await,
            ))
        };
        timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(Failure::Timeout(self.timeout)))
    }
}

/// The rustls config for webhooks, on ring explicitly: aws-lc-rs is linked too (by the AWS
/// SDK), so a process-default provider would be ambiguous.
fn tls_config(url: &str) -> Result<rustls::ClientConfig, rustls::Error> {
    let builder = || {
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
    };
    Ok(match builder()?.with_native_roots() {
        Ok(builder) => builder.with_no_client_auth(),
        Err(e) => {
            // Plain http:// webhooks still work; https:// ones fail each attempt, logged.
            warn!(url, error = %e, "no usable system root certificates; https webhooks cannot be verified");
            builder()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    })
}

/// The first [`OUTPUT_CAP`] bytes of an error response: services such as Slack say why there
/// (`invalid_payload`, `no_service`).
async fn body_start(mut body: Incoming) -> String {
    let mut kept = Vec::new();
    while kept.len() < OUTPUT_CAP {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    kept.extend_from_slice(&data);
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let more = kept.len() > OUTPUT_CAP;
    kept.truncate(OUTPUT_CAP);
    printable(&kept, more)
}

/// A command's output or a response's body as it came, cut to [`OUTPUT_CAP`] bytes: lines
/// are kept so that a gate can take its first. It is outside text: [`outside`] escapes it
/// before it reaches a log line or an event.
fn printable(bytes: &[u8], truncated: bool) -> String {
    let mut text = String::from_utf8_lossy(bytes).trim().to_string();
    if truncated {
        text.push_str(" …(truncated)");
    }
    text
}

struct Command {
    argv: Vec<String>,
    timeout: Duration,
}

impl Command {
    async fn deliver(&self, event: &Event) -> bool {
        let program = &self.argv[0];
        let input = event.to_json().to_string();
        match run_command(&self.argv, event_env(event), &input, self.timeout).await {
            Ran::Exited {
                status,
                stdout,
                stderr,
            } if status.success() => {
                info!(sink = "command", program, event = %event.event, watch = %event.watch, %status, "notification command succeeded");
                let (stdout, stderr) = (outside(&stdout), outside(&stderr));
                debug!(sink = "command", program, %stdout, %stderr, "notification command output");
                return true;
            }
            Ran::Exited {
                status,
                stdout,
                stderr,
            } => {
                let (stdout, stderr) = (outside(&stdout), outside(&stderr));
                warn!(sink = "command", program, event = %event.event, watch = %event.watch, %status, %stdout, %stderr, "notification command failed");
            }
            Ran::NotStarted(e) => {
                warn!(sink = "command", program, event = %event.event, watch = %event.watch, error = %e, "notification command could not be started");
            }
            Ran::WaitFailed(e) => {
                warn!(sink = "command", program, event = %event.event, watch = %event.watch, error = %e, "notification command could not be waited for");
            }
            Ran::TimedOut { status } => {
                warn!(sink = "command", program, event = %event.event, watch = %event.watch, timeout = ?self.timeout, %status, "notification command timed out; killed");
            }
        }
        false
    }
}

/// How a command run by [`run_command`] ended.
pub(crate) enum Ran {
    /// It exited (or was killed by a signal of its own), with the start of its output.
    Exited {
        status: std::process::ExitStatus,
        stdout: String,
        stderr: String,
    },
    /// It could not be started (no such file, not executable).
    NotStarted(std::io::Error),
    /// It could not be waited for.
    WaitFailed(std::io::Error),
    /// It did not finish within the timeout: its whole process group was killed.
    TimedOut {
        /// How it ended after the kill (or why that is unknown).
        status: String,
    },
}

/// Runs `argv` (no shell) with `input` on stdin, `env` on top of a clean environment, in its
/// own process group, killed (the whole group) at `limit`: the notification command sink
/// and command gates run programs this one way.
pub(crate) async fn run_command(
    argv: &[String],
    env: Vec<(&'static str, String)>,
    input: &str,
    limit: Duration,
) -> Ran {
    let mut child = match isolated_command(argv, env).spawn() {
        Ok(child) => child,
        Err(e) => return Ran::NotStarted(e),
    };
    // Dropped unfinished (the caller gave up: an abort, a shutdown, an approval in the middle
    // of a gate check), the whole group goes, not only its leader.
    let mut group = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()));
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    // The output is read on its own tasks, so that a full pipe never blocks the command, and
    // a background child that keeps the pipe open after the command exited is not waited
    // for beyond OUTPUT_GRACE.
    let stdout = tokio::spawn(captured(stdout));
    let stderr = tokio::spawn(captured(stderr));
    let run = async {
        if let Some(mut stdin) = stdin {
            // A command that ignores stdin may exit first (EPIPE): not a failure.
            let _ = stdin.write_all(input.as_bytes()).await;
        }
        child.wait().await
    };
    let outcome = match timeout(limit, run).await {
        Ok(Ok(status)) => return exited(status, stdout, stderr, &mut group).await,
        Ok(Err(e)) => Ran::WaitFailed(e),
        Err(_) => {
            let killed = kill_group(&mut child);
            let reaped = timeout(REAP_TIMEOUT, child.wait()).await;
            group.0 = None;
            Ran::TimedOut {
                status: match (&killed, &reaped) {
                    (_, Ok(Ok(status))) => status.to_string(),
                    (Err(e), _) => format!("kill failed: {e}"),
                    _ => "not reaped".to_string(),
                },
            }
        }
    };
    stdout.abort();
    stderr.abort();
    outcome
}

/// The command for `argv`, not yet started: piped stdio, its own process group, killed when
/// dropped, and a clean environment with `env` on top.
fn isolated_command(argv: &[String], env: Vec<(&'static str, String)>) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(&argv[0]);
    command
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that at the timeout the whole group goes: a shell
        // script's children (curl, sleep) as well as the script, and none of them is
        // left holding the output pipes or running on after the agent gave up.
        .process_group(0)
        .kill_on_drop(true);
    // The agent's environment holds secrets (the probe password under whatever name
    // password_env gives, AWS credentials, webhook URLs): the command gets a clean
    // environment with only what a script needs to run, plus what it is told.
    command.env_clear();
    for name in ["PATH", "HOME", "LANG", "LC_ALL", "TZ"] {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env);
    command
}

/// A command that exited, with what it wrote; each output is waited for at most
/// OUTPUT_GRACE. Disarms `group` when both outputs closed.
async fn exited(
    status: std::process::ExitStatus,
    stdout: tokio::task::JoinHandle<String>,
    stderr: tokio::task::JoinHandle<String>,
    group: &mut GroupGuard,
) -> Ran {
    let output = |task: tokio::task::JoinHandle<String>| async move {
        let abort = task.abort_handle();
        match timeout(OUTPUT_GRACE, task).await {
            Ok(Ok(text)) => Some(text),
            _ => {
                abort.abort();
                None
            }
        }
    };
    let (stdout, stderr) = tokio::join!(output(stdout), output(stderr));
    if stdout.is_some() && stderr.is_some() {
        // Reaped, and nothing of its group holds the pipes: the group may be gone and
        // its id reused, so it is not signalled. Otherwise a background child of the
        // command still exists (and keeps the group's id taken): it goes.
        group.0 = None;
    }
    let (stdout, stderr) = (stdout.unwrap_or_default(), stderr.unwrap_or_default());
    Ran::Exited {
        status,
        stdout,
        stderr,
    }
}

/// Kills a command's process group when dropped armed.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            // SAFETY: killpg only sends a signal; the group is the child's own, made at spawn.
            unsafe { libc::killpg(pgid, libc::SIGKILL) };
        }
    }
}

/// Kills the child's process group (it leads its own, see `process_group(0)`), or the child
/// alone when its id is gone.
fn kill_group(child: &mut tokio::process::Child) -> std::io::Result<()> {
    let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) else {
        return child.start_kill();
    };
    // SAFETY: killpg only sends a signal; the group is the child's own, made at spawn.
    if unsafe { libc::killpg(pid, libc::SIGKILL) } == 0 {
        Ok(())
    } else {
        child.start_kill()
    }
}

/// The event as the command's environment, like Sentinel's notification-script arguments.
fn event_env(event: &Event) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("VALKEY_DR_EVENT", event.event.as_str().to_owned()),
        ("VALKEY_DR_WATCH", event.watch.clone()),
        ("VALKEY_DR_STATE", event.state.clone()),
        ("VALKEY_DR_PREVIOUS_STATE", event.previous_state.clone()),
        ("VALKEY_DR_REASONS", event.reasons.join("; ")),
        ("VALKEY_DR_AGENT_ID", event.agent_id.clone()),
        (
            "VALKEY_DR_AT",
            humantime::format_rfc3339_millis(event.at).to_string(),
        ),
        ("VALKEY_DR_TEXT", event.text()),
    ];
    if let Some(id) = &event.failover_id {
        env.push(("VALKEY_DR_FAILOVER_ID", id.clone()));
    }
    if let Some(of) = &event.of {
        env.push(("VALKEY_DR_OF", of.as_str().to_owned()));
    }
    env
}

/// The first [`OUTPUT_CAP`] bytes of a command's output; the rest is read and discarded so
/// that a chatty command never blocks on a full pipe.
async fn captured(stream: Option<impl AsyncRead + Unpin>) -> String {
    let Some(mut stream) = stream else {
        return String::new();
    };
    let mut kept = Vec::new();
    let _ = (&mut stream)
        .take(OUTPUT_CAP as u64)
        .read_to_end(&mut kept)
        .await;
    let more = tokio::io::copy(&mut stream, &mut tokio::io::sink())
        .await
        .unwrap_or(0);
    printable(&kept, more > 0)
}

#[cfg(test)]
mod tests;
