//! One probe round: the dns, direct and reader paths, run at the same time, each a timed
//! sequence of steps bounded as a whole by the probe timeout.
//!
//! Every step awaits under the path's single deadline (`timeout_at`), so a server that accepts
//! and then never answers (SIGSTOP, a blackholed front) fails the path at the deadline, not
//! later.
//!
//! A path either makes a fresh connection for the round alone (a one-shot, as `check`), or
//! keeps one in a [`Slot`] between rounds, as the applications' pooled clients do. A kept
//! connection runs `PING`/`SET`/`GET` every round; when it fails, a fresh one is made at once,
//! within the same deadline, so a dead connection is never taken for a dead cache. It is
//! replaced by a fresh connect and handshake every `handshake_interval`, when the name or
//! address the path resolves to changes, and after any error, so "new connections fail" is
//! still seen within `handshake_interval`. The commands go over the probe's own small RESP
//! client ([`crate::wire`]): nothing runs in the background, so nothing outlives a dropped
//! connection.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::error::{ErrorKind, ProbeError, Step, local_failure, server_text};
use crate::resolve::{self, Resolver};
use crate::wire::{Frame, Io, MAX_REPLY_BYTES, Wire, WireError};
use crate::{Auth, Observation, PathKind, PathResult, ProbeSpec, StepTiming, TlsServerName};

/// Probe keys expire after this many seconds, so a probe never leaves data behind for long,
/// even when the `GET` (or the agent) never comes.
const KEY_TTL_SECS_TEXT: &str = "60";

/// One round for one watch: every path concurrently, results in the order dns, direct, reader.
/// With `held`, each path keeps its connection in its slot between rounds; without, every
/// path connects afresh and closes at the end of the round.
pub(crate) async fn round(
    resolver: &Resolver,
    spec: &ProbeSpec,
    held: Option<&mut Connections>,
) -> Observation {
    let started_at = SystemTime::now();
    let (dns_slot, direct_slot, reader_slot) = match held {
        Some(c) => (Some(&mut c.dns), Some(&mut c.direct), Some(&mut c.reader)),
        None => (None, None, None),
    };
    let dns = run_path(
        resolver,
        spec,
        PathKind::Dns,
        &spec.record,
        spec.port,
        dns_slot,
    );
    let direct = run_path(
        resolver,
        spec,
        PathKind::Direct,
        &spec.endpoint,
        spec.port,
        direct_slot,
    );
    let paths = match spec.reader_port {
        Some(reader_port) => {
            let reader = run_path(
                resolver,
                spec,
                PathKind::Reader,
                &spec.endpoint,
                reader_port,
                reader_slot,
            );
            let (dns, direct, reader) = tokio::join!(dns, direct, reader);
            vec![dns, direct, reader]
        }
        None => {
            let (dns, direct) = tokio::join!(dns, direct);
            vec![dns, direct]
        }
    };
    Observation {
        watch: spec.watch.clone(),
        started_at,
        expected_target: spec.endpoint.clone(),
        paths,
    }
}

/// The connections one watch keeps between rounds, one slot per path. Dropping it closes
/// them all.
#[derive(Default)]
pub struct Connections {
    pub(crate) dns: Slot,
    pub(crate) direct: Slot,
    pub(crate) reader: Slot,
    pub(crate) standby: Slot,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections")
            .field("dns", &self.dns.live.is_some())
            .field("direct", &self.direct.live.is_some())
            .field("reader", &self.reader.live.is_some())
            .field("standby", &self.standby.live.is_some())
            .finish()
    }
}

impl Connections {
    /// How many connections are open now.
    pub fn open(&self) -> usize {
        [&self.dns, &self.direct, &self.reader, &self.standby]
            .iter()
            .filter(|s| s.live.is_some())
            .count()
    }
}

/// One path's kept connection, and whether its last round failed.
#[derive(Default)]
pub(crate) struct Slot {
    live: Option<Live>,
    /// The path's last round ended in an error: the next connection is made
    /// [`Connection::AfterError`].
    failed: bool,
}

/// A connection kept between rounds.
struct Live {
    wire: Wire,
    /// The name it was made for (for the dns path, the CNAME target) and the address.
    target: Option<String>,
    address: SocketAddr,
    /// When to replace it by a fresh one: `handshake_interval` after it opened, less a
    /// random tenth so that many watches started together do not all reconnect in one round.
    replace_at: Instant,
    record_name_verified: Option<bool>,
    cert_expiry: Option<SystemTime>,
}

impl Live {
    /// Why it must not be used for this round, if it must not.
    fn unusable(
        &self,
        target: Option<&str>,
        address: SocketAddr,
        now: Instant,
    ) -> Option<Connection> {
        if self.target.as_deref() != target || self.address != address {
            Some(Connection::TargetChanged)
        } else if now >= self.replace_at {
            Some(Connection::Interval)
        } else {
            None
        }
    }
}

/// The connection a round's path used: the one kept from earlier rounds, or a fresh connect
/// and handshake and why it was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Connection {
    /// The connection kept from an earlier round.
    Reused,
    /// Fresh, for this round alone (a one-shot such as `check`).
    OneShot,
    /// Fresh: the path had no connection yet.
    First,
    /// Fresh: the kept one had lived `handshake_interval`.
    Interval,
    /// Fresh: the path now resolves to another name or address (the record moved).
    TargetChanged,
    /// Fresh: the path's previous round failed.
    AfterError,
    /// Fresh, in the same round: the kept connection failed (or the server had closed it),
    /// and the result is this one's.
    Retry,
}

impl Connection {
    /// Every value, for metrics that must show each from the start.
    pub const ALL: [Connection; 7] = [
        Connection::Reused,
        Connection::OneShot,
        Connection::First,
        Connection::Interval,
        Connection::TargetChanged,
        Connection::AfterError,
        Connection::Retry,
    ];

    /// The stable name used in JSON, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Connection::Reused => "reused",
            Connection::OneShot => "one_shot",
            Connection::First => "first",
            Connection::Interval => "interval",
            Connection::TargetChanged => "target_changed",
            Connection::AfterError => "after_error",
            Connection::Retry => "retry",
        }
    }
}

/// What a path has seen so far; filled in step by step so a failure still reports it.
struct PathRun {
    /// The whole path must be done by then.
    deadline: Instant,
    /// The probe timeout, for messages.
    timeout: Duration,
    steps: Vec<StepTiming>,
    target: Option<String>,
    address: Option<SocketAddr>,
    ttl: Option<Duration>,
    record_name_verified: Option<bool>,
    cert_expiry: Option<std::time::SystemTime>,
}

impl PathRun {
    /// Runs one step under the path deadline and records how long it took.
    async fn step<T>(
        &mut self,
        step: Step,
        work: impl Future<Output = Result<T, ProbeError>>,
    ) -> Result<T, ProbeError> {
        let begin = Instant::now();
        let result = match timeout_at(self.deadline, work).await {
            Ok(result) => result,
            Err(_) => Err(deadline_error(step, self.timeout)),
        };
        self.steps.push(StepTiming {
            step,
            duration: begin.elapsed(),
        });
        result
    }
}

/// The error for a step cut off by the path deadline.
fn deadline_error(step: Step, timeout: Duration) -> ProbeError {
    let kind = match step {
        Step::Resolve => ErrorKind::DnsTimeout,
        Step::Connect => ErrorKind::ConnectTimeout,
        Step::Tls | Step::Auth | Step::Ping | Step::Set | Step::Get => ErrorKind::Timeout,
    };
    ProbeError::new(
        kind,
        step,
        format!("no answer within the probe timeout ({timeout:?} for the whole path)"),
    )
}

pub(crate) async fn run_path(
    resolver: &Resolver,
    spec: &ProbeSpec,
    kind: PathKind,
    name: &str,
    port: u16,
    slot: Option<&mut Slot>,
) -> PathResult {
    let start = Instant::now();
    let mut run = PathRun {
        deadline: start + spec.timeout,
        timeout: spec.timeout,
        steps: Vec::with_capacity(7),
        target: None,
        address: None,
        ttl: None,
        record_name_verified: None,
        cert_expiry: None,
    };
    let mut connection = if slot.is_some() {
        Connection::First
    } else {
        Connection::OneShot
    };
    let slot = slot.map(|slot| (slot, &mut connection));
    let error = probe(&mut run, resolver, spec, kind, name, port, slot)
        .await
        .err();
    PathResult {
        path: kind,
        error,
        latency: start.elapsed(),
        steps: run.steps,
        target: run.target,
        address: run.address,
        ttl: run.ttl,
        record_name_verified: run.record_name_verified,
        cert_expiry: run.cert_expiry,
        connection,
    }
}

/// A path's round: resolve, then the kept connection when it may serve, else (or when it
/// fails) a fresh one. With a slot, the connection that succeeded is kept in it, and any
/// error leaves it empty.
async fn probe(
    run: &mut PathRun,
    resolver: &Resolver,
    spec: &ProbeSpec,
    kind: PathKind,
    name: &str,
    port: u16,
    slot: Option<(&mut Slot, &mut Connection)>,
) -> Result<(), ProbeError> {
    let Some((slot, connection)) = slot else {
        return probe_fresh(run, resolver, spec, kind, name, port)
            .await
            .map(drop);
    };
    let kept = slot.live.take();
    if slot.failed {
        *connection = Connection::AfterError;
    }
    let result = async {
        let resolved = resolve_step(run, resolver, spec, kind, name, port).await?;
        let now = Instant::now();
        if let Some(mut live) = kept {
            match live.unusable(run.target.as_deref(), resolved, now) {
                Some(why) => *connection = why,
                None => {
                    // The kept connection gets half the round: when it hangs, a fresh one
                    // still has time to show whether the cache answers.
                    let whole = run.deadline;
                    run.deadline = whole.min(now + spec.timeout / 2);
                    let reused = steps(run, spec, &mut live.wire).await;
                    run.deadline = whole;
                    match reused {
                        Ok(()) => {
                            run.record_name_verified = live.record_name_verified;
                            run.cert_expiry = live.cert_expiry;
                            *connection = Connection::Reused;
                            return Ok(live);
                        }
                        Err(_) => {
                            // Judged on the fresh connection alone: keep the resolve step,
                            // drop the kept connection's.
                            run.steps.truncate(1);
                            *connection = Connection::Retry;
                        }
                    }
                }
            }
        }
        connect_fresh(run, spec, kind, resolved).await
    }
    .await;
    match result {
        Ok(live) => {
            slot.live = Some(live);
            slot.failed = false;
            Ok(())
        }
        Err(err) => {
            slot.failed = true;
            Err(err)
        }
    }
}

/// How long a fresh connection is kept: `handshake_interval`, less up to a tenth at random.
fn lifetime(handshake_interval: Duration) -> Duration {
    handshake_interval.mul_f64(1.0 - rand::random::<f64>() / 10.0)
}

/// A one-shot path: resolve and a fresh connection, closed at the end.
async fn probe_fresh(
    run: &mut PathRun,
    resolver: &Resolver,
    spec: &ProbeSpec,
    kind: PathKind,
    name: &str,
    port: u16,
) -> Result<Live, ProbeError> {
    let address = resolve_step(run, resolver, spec, kind, name, port).await?;
    connect_fresh(run, spec, kind, address).await
}

/// Resolves the path's name; notes the target, TTL and address in `run`.
async fn resolve_step(
    run: &mut PathRun,
    resolver: &Resolver,
    spec: &ProbeSpec,
    kind: PathKind,
    name: &str,
    port: u16,
) -> Result<SocketAddr, ProbeError> {
    if kind != PathKind::Dns {
        run.target = Some(spec.endpoint.clone());
    }
    let resolved = run
        .step(Step::Resolve, resolve::resolve(resolver, name))
        .await?;
    run.ttl = resolved.ttl;
    if kind == PathKind::Dns {
        run.target = Some(
            resolved
                .cname_target
                .unwrap_or_else(|| without_root(&spec.record).to_owned()),
        );
    }
    let address = SocketAddr::new(resolved.ip, port);
    run.address = Some(address);
    Ok(address)
}

/// A fresh connection: connect, TLS, then `AUTH`, `PING`, `SET`, `GET` on it.
async fn connect_fresh(
    run: &mut PathRun,
    spec: &ProbeSpec,
    kind: PathKind,
    address: SocketAddr,
) -> Result<Live, ProbeError> {
    let tcp = run.step(Step::Connect, connect(address)).await?;
    match &spec.tls {
        None => session(run, spec, tcp, address).await,
        Some(tls) => {
            let target = run.target.as_deref().unwrap_or(&spec.endpoint);
            let server_name = tls_server_name(kind, tls.server_name, &spec.record, target);
            let config = tls.client_config.clone();
            let stream = run
                .step(Step::Tls, handshake(config, server_name, tcp))
                .await?;
            {
                let (_, session) = stream.get_ref();
                run.cert_expiry = session
                    .peer_certificates()
                    .and_then(|chain| chain.iter().filter_map(|c| crate::cert::not_after(c)).min());
            }
            if kind == PathKind::Dns {
                let (_, session) = stream.get_ref();
                let leaf = session.peer_certificates().and_then(|chain| chain.first());
                run.record_name_verified =
                    Some(leaf.is_some_and(|leaf| certificate_names(leaf, &spec.record)));
            }
            session(run, spec, stream, address).await
        }
    }
}

/// A fresh connection to the endpoint of `spec`, made as the direct path makes one (resolve
/// the endpoint, connect, TLS against the endpoint's name, `AUTH`), every step within the
/// probe timeout, and nothing sent after `AUTH`: for a [`crate::Session`].
pub(crate) async fn open_direct(resolver: &Resolver, spec: &ProbeSpec) -> Result<Wire, ProbeError> {
    let mut run = PathRun {
        deadline: Instant::now() + spec.timeout,
        timeout: spec.timeout,
        steps: Vec::with_capacity(4),
        target: None,
        address: None,
        ttl: None,
        record_name_verified: None,
        cert_expiry: None,
    };
    let address = resolve_step(
        &mut run,
        resolver,
        spec,
        PathKind::Direct,
        &spec.endpoint,
        spec.port,
    )
    .await?;
    let tcp = run.step(Step::Connect, connect(address)).await?;
    let mut wire = match &spec.tls {
        None => Wire::new(tcp),
        Some(tls) => {
            let name = without_root(&spec.endpoint).to_owned();
            let config = tls.client_config.clone();
            Wire::new(run.step(Step::Tls, handshake(config, name, tcp)).await?)
        }
    };
    if !matches!(spec.auth, Auth::None) {
        run.step(Step::Auth, authenticate(&mut wire, &spec.auth))
            .await?;
    }
    Ok(wire)
}

/// The name a path checks the certificate against.
///
/// ElastiCache certificates name the endpoint, never the private record, so by default the dns
/// path checks the CNAME target (the endpoint it actually reached). `Record` checks the record
/// name instead, the way an application that connects by the record and checks strictly would.
fn tls_server_name(kind: PathKind, setting: TlsServerName, record: &str, target: &str) -> String {
    match (kind, setting) {
        (PathKind::Dns, TlsServerName::Record) => without_root(record).to_owned(),
        _ => without_root(target).to_owned(),
    }
}

/// Whether `cert` is valid for `name` (names only: the chain was checked in the handshake).
/// A certificate or name that does not even parse is not valid for it.
fn certificate_names(cert: &CertificateDer<'_>, name: &str) -> bool {
    let Ok(name) = ServerName::try_from(without_root(name)) else {
        return false;
    };
    ParsedCertificate::try_from(cert)
        .is_ok_and(|cert| rustls::client::verify_server_name(&cert, &name).is_ok())
}

/// A DNS name without its trailing root dot.
fn without_root(name: &str) -> &str {
    name.strip_suffix('.').unwrap_or(name)
}

async fn connect(address: SocketAddr) -> Result<TcpStream, ProbeError> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|err| classify_connect_error(address, &err))?;
    // Commands are tiny request/response exchanges: waiting to coalesce them only adds latency.
    stream
        .set_nodelay(true)
        .map_err(|err| classify_connect_error(address, &err))?;
    Ok(stream)
}

/// Maps a failed TCP connect.
///
/// The agent's own host failing to make a socket (out of descriptors, no local port, no
/// buffers) is `local`: nothing reached the network, so it says nothing about the cache and
/// must never count as an outage. Only an explicit refusal (RST, or a local "nothing listens")
/// is `connect_refused`. When the network does not deliver (the kernel gave up, or ICMP says
/// the host or network is unreachable) the connection "did not open", as with a blackhole:
/// `connect_timeout`. Any other failure to open a socket is reported as refused, with the OS
/// message.
fn classify_connect_error(address: SocketAddr, err: &io::Error) -> ProbeError {
    if let Some(local) = local_failure(err) {
        return ProbeError::new(
            ErrorKind::Local,
            Step::Connect,
            format!("{address}: {local}"),
        );
    }
    let kind = match err.kind() {
        io::ErrorKind::TimedOut
        | io::ErrorKind::HostUnreachable
        | io::ErrorKind::NetworkUnreachable => ErrorKind::ConnectTimeout,
        _ => ErrorKind::ConnectRefused,
    };
    ProbeError::new(kind, Step::Connect, format!("{address}: {err}"))
}

async fn handshake(
    config: Arc<rustls::ClientConfig>,
    server_name: String,
    tcp: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ProbeError> {
    let name = ServerName::try_from(server_name.clone()).map_err(|err| {
        ProbeError::new(
            ErrorKind::Tls,
            Step::Tls,
            format!("{server_name:?} is not a valid TLS server name: {err}"),
        )
    })?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|err| classify_tls_error(&server_name, &err))
}

/// Maps a failed TLS handshake.
///
/// Only what our side rejects about the server's identity (its certificate, its name, no
/// certificate at all) is `tls`: a setup problem that the policy never fails over on. Anything
/// else — an alert the server sent (an overloaded or failing endpoint sends `internal_error`
/// or `handshake_failure`), a peer that misbehaves, a connection that breaks mid-handshake —
/// says nothing about our setup and is `protocol`, which counts as an outage.
fn classify_tls_error(server_name: &str, err: &io::Error) -> ProbeError {
    let rejected_identity = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|e| {
            matches!(
                e,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            )
        });
    let kind = if rejected_identity {
        ErrorKind::Tls
    } else {
        ErrorKind::Protocol
    };
    // The text can quote the peer (its alert, the names in its certificate).
    let text = server_text(err.to_string().as_bytes());
    ProbeError::new(kind, Step::Tls, format!("{server_name}: {text}"))
}

/// The error for a step whose reply went past [`MAX_REPLY_BYTES`]: the server answered, with
/// far more than any healthy reply to a probe, so the exchange made no sense (`protocol`).
fn reply_cap_error(step: Step) -> ProbeError {
    ProbeError::new(
        ErrorKind::Protocol,
        step,
        format!(
            "the reply exceeded {} KiB, the most a probe reads per path and round; \
             a healthy reply to {} is a few bytes",
            MAX_REPLY_BYTES / 1024,
            step.as_str().to_ascii_uppercase()
        ),
    )
}

/// The Valkey part of a fresh connection: `AUTH` (when configured), then `PING`, `SET`,
/// `GET`. Returns the connection, ready to be kept.
async fn session(
    run: &mut PathRun,
    spec: &ProbeSpec,
    stream: impl Io + 'static,
    address: SocketAddr,
) -> Result<Live, ProbeError> {
    let mut wire = Wire::new(stream);
    if !matches!(spec.auth, Auth::None) {
        run.step(Step::Auth, authenticate(&mut wire, &spec.auth))
            .await?;
    }
    steps(run, spec, &mut wire).await?;
    Ok(Live {
        wire,
        target: run.target.clone(),
        address,
        replace_at: Instant::now() + lifetime(spec.handshake_interval),
        record_name_verified: run.record_name_verified,
        cert_expiry: run.cert_expiry,
    })
}

/// `PING`, `SET key value EX 60` and `GET key`, sent at once (pipelined) and compared, each a
/// timed step: a step lasts from the previous reply (for `PING`, from the send) to its own.
async fn steps(run: &mut PathRun, spec: &ProbeSpec, wire: &mut Wire) -> Result<(), ProbeError> {
    wire.start_round();
    wire.key.clear();
    wire.value.clear();
    let _ = write!(
        wire.key,
        "{}{}:{:016x}",
        spec.key_prefix,
        spec.agent_id,
        rand::random::<u64>()
    );
    let _ = write!(wire.value, "{:032x}", rand::random::<u128>());
    let (key, value) = (
        std::mem::take(&mut wire.key),
        std::mem::take(&mut wire.value),
    );
    wire.command(&[b"PING"]);
    wire.command(&[
        b"SET",
        key.as_bytes(),
        value.as_bytes(),
        b"EX",
        KEY_TTL_SECS_TEXT.as_bytes(),
    ]);
    wire.command(&[b"GET", key.as_bytes()]);
    let result = async {
        run.step(Step::Ping, async {
            wire.send().await.map_err(|e| wire_error(Step::Ping, e))?;
            ping(wire).await
        })
        .await?;
        run.step(Step::Set, set(wire, &key)).await?;
        run.step(Step::Get, get(wire, &key, &value)).await
    }
    .await;
    (wire.key, wire.value) = (key, value);
    result
}

/// The error for a reply that could not be read.
fn wire_error(step: Step, err: WireError) -> ProbeError {
    match err {
        WireError::TooLarge => reply_cap_error(step),
        WireError::Closed => ProbeError::new(
            ErrorKind::Protocol,
            step,
            "connection lost: the server closed the connection",
        ),
        WireError::Io(err) => ProbeError::new(
            ErrorKind::Protocol,
            step,
            format!(
                "connection lost: {}",
                server_text(with_sources(&err).as_bytes())
            ),
        ),
        WireError::Unparseable(what) => ProbeError::new(
            ErrorKind::Protocol,
            step,
            format!("unreadable reply: {what}"),
        ),
    }
}

async fn authenticate(wire: &mut Wire, auth: &Auth) -> Result<(), ProbeError> {
    match auth {
        Auth::None => return Ok(()),
        Auth::Password { username, password } => match username {
            Some(user) => wire.command(&[b"AUTH", user.as_bytes(), password.expose().as_bytes()]),
            None => wire.command(&[b"AUTH", password.expose().as_bytes()]),
        },
        Auth::Iam { username, tokens } => {
            // No credentials to sign with is a setup problem, like a wrong password: `auth`.
            let token = tokens
                .token()
                .await
                .map_err(|err| ProbeError::new(ErrorKind::Auth, Step::Auth, with_sources(&err)))?;
            wire.command(&[b"AUTH", username.as_bytes(), token.expose().as_bytes()]);
        }
    }
    // Never format the command or its arguments anywhere: they hold the secret. `send`
    // wipes them once written.
    wire.send().await.map_err(|e| wire_error(Step::Auth, e))?;
    let frame = wire.frame().await.map_err(|e| wire_error(Step::Auth, e))?;
    match frame {
        Frame::Simple(r) if wire.bytes(&r) == b"OK" => Ok(()),
        Frame::Error(r) => Err(classify_auth_error(wire.bytes(&r))),
        other => Err(ProbeError::new(
            ErrorKind::Protocol,
            Step::Auth,
            format!("AUTH: expected OK, got {}", frame_type(&other)),
        )),
    }
}

/// Maps a refused `AUTH`. The message holds the server's error code only: a reply to `AUTH`
/// is the one place a careless server could echo what it was sent.
fn classify_auth_error(reply: &[u8]) -> ProbeError {
    let (code, detail) = split_error(reply);
    let kind = match code {
        // A generic ERR on AUTH is a configuration problem only when it says so (a password
        // sent to a server that has none). Other ERRs on the first reply, such as "max number
        // of clients reached" from an overloaded server, are not ours to fix and must not hide
        // an outage as a config error.
        "ERR" if is_auth_message(detail) => ErrorKind::Auth,
        "ERR" => ErrorKind::Protocol,
        code => server_error_kind(code),
    };
    let code = server_text(code.as_bytes());
    ProbeError::new(kind, Step::Auth, format!("AUTH rejected: {code}"))
}

/// An error reply's code (its first word) and the rest.
fn split_error(reply: &[u8]) -> (&str, &str) {
    let text = std::str::from_utf8(reply).unwrap_or("ERR");
    text.split_once(' ').unwrap_or((text, ""))
}

/// The texts Valkey and Redis use for authentication failures reported as a plain `ERR`.
fn is_auth_message(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["password", "username", "auth"]
        .iter()
        .any(|w| detail.contains(w))
}

async fn ping(wire: &mut Wire) -> Result<(), ProbeError> {
    let frame = wire.frame().await.map_err(|e| wire_error(Step::Ping, e))?;
    match frame {
        Frame::Simple(r) if wire.bytes(&r) == b"PONG" => Ok(()),
        other => Err(unexpected(wire, Step::Ping, "expected PONG", &other)),
    }
}

async fn set(wire: &mut Wire, key: &str) -> Result<(), ProbeError> {
    let frame = wire.frame().await.map_err(|e| wire_error(Step::Set, e))?;
    match frame {
        Frame::Simple(r) if wire.bytes(&r) == b"OK" => Ok(()),
        other => Err(unexpected(
            wire,
            Step::Set,
            &format!("SET {key}: expected OK"),
            &other,
        )),
    }
}

async fn get(wire: &mut Wire, key: &str, value: &str) -> Result<(), ProbeError> {
    let frame = wire.frame().await.map_err(|e| wire_error(Step::Get, e))?;
    match frame {
        Frame::Bulk(r) if wire.bytes(&r) == value.as_bytes() => Ok(()),
        Frame::Bulk(r) => Err(ProbeError::new(
            ErrorKind::ValueMismatch,
            Step::Get,
            format!(
                "GET {key}: expected {value:?}, got \"{}\"",
                server_text(wire.bytes(&r))
            ),
        )),
        Frame::Nil => Err(ProbeError::new(
            ErrorKind::ValueMismatch,
            Step::Get,
            format!("GET {key}: the key just written is missing"),
        )),
        other => Err(unexpected(
            wire,
            Step::Get,
            &format!("GET {key}: expected a string"),
            &other,
        )),
    }
}

/// A reply that is not the one `step` expects: a server error by its code, anything else as
/// `protocol` with its type and a short, escaped view of it.
fn unexpected(wire: &Wire, step: Step, expected: &str, frame: &Frame) -> ProbeError {
    match frame {
        Frame::Error(r) => {
            let reply = wire.bytes(r);
            let (code, _) = split_error(reply);
            ProbeError::new(
                server_error_kind(code),
                step,
                format!("server replied {}", server_text(reply)),
            )
        }
        other => ProbeError::new(
            ErrorKind::Protocol,
            step,
            format!("{expected}, got {}", describe(wire, other)),
        ),
    }
}

/// The kind for a server error code.
///
/// Permission and authentication refusals are setup problems (`auth`), whatever command drew
/// them. Codes with no kind of their own (`ERR`, `LOADING`, `BUSY`, `MASTERDOWN`...) mean the
/// server did not do what a healthy cache does: `protocol`.
fn server_error_kind(code: &str) -> ErrorKind {
    match code {
        "WRONGPASS" | "NOAUTH" | "NOPERM" => ErrorKind::Auth,
        "OOM" => ErrorKind::Oom,
        "READONLY" => ErrorKind::Readonly,
        _ => ErrorKind::Protocol,
    }
}

/// An error and its sources, joined by `: ` (errors here never repeat their source).
fn with_sources(err: &dyn StdError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(err) = source {
        let next = err.to_string();
        // Some foreign errors do repeat their source; do not print it twice.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = err.source();
    }
    text
}

/// A reply's type, without its content.
fn frame_type(frame: &Frame) -> &'static str {
    match frame {
        Frame::Nil => "nil",
        Frame::Int(_) => "an integer",
        Frame::Bulk(_) => "a bulk string",
        Frame::Array => "an array",
        Frame::Simple(_) => "a simple string",
        Frame::Error(_) => "an error",
        Frame::Other(_) => "a RESP3 value",
    }
}

/// A reply for a message: its type and a short, escaped view of its content.
fn describe(wire: &Wire, frame: &Frame) -> String {
    match frame {
        Frame::Simple(r) | Frame::Bulk(r) | Frame::Error(r) => {
            format!("{} \"{}\"", frame_type(frame), server_text(wire.bytes(r)))
        }
        Frame::Int(i) => format!("{} {i}", frame_type(frame)),
        other => frame_type(other).to_owned(),
    }
}

#[cfg(test)]
mod tests;
