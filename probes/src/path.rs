//! One probe round: the dns, direct and reader paths, run at the same time, each a timed
//! sequence of steps bounded as a whole by the probe timeout.
//!
//! Every step awaits under the path's single deadline (`timeout_at`), so a server that accepts
//! and then never answers (SIGSTOP, a blackholed front) fails the path at the deadline, not
//! later. Nothing outlives the path: the redis connection driver is aborted when the path ends.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ProtocolVersion, RedisConnectionInfo, RedisError, Value};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::server::ParsedCertificate;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::error::{ErrorKind, ProbeError, Step, local_failure, server_text};
use crate::resolve::{self, Resolver};
use crate::{Auth, Observation, PathKind, PathResult, ProbeSpec, StepTiming, TlsServerName};

/// Probe keys expire after this many seconds, so a probe never leaves data behind for long,
/// even when the `GET` (or the agent) never comes.
const KEY_TTL_SECS: u64 = 60;

/// The most a path reads from the server in one round, in bytes.
///
/// A healthy exchange is a few dozen bytes (`+PONG`, `+OK`, a 32-byte value). A server that
/// answers with megabytes (a broken proxy, a key overwritten with a blob, a hostile endpoint)
/// must cost the agent no more than this: without a bound, a 400 MiB `GET` reply took the
/// agent to 1 GB of RSS.
pub(crate) const MAX_REPLY_BYTES: usize = 64 * 1024;

/// One round for one watch: every path concurrently, results in the order dns, direct, reader.
pub(crate) async fn round(resolver: &Resolver, spec: &ProbeSpec) -> Observation {
    let started_at = SystemTime::now();
    let dns = run_path(resolver, spec, PathKind::Dns, &spec.record, spec.port);
    let direct = run_path(resolver, spec, PathKind::Direct, &spec.endpoint, spec.port);
    let paths = match spec.reader_port {
        Some(reader_port) => {
            let reader = run_path(
                resolver,
                spec,
                PathKind::Reader,
                &spec.endpoint,
                reader_port,
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
    let error = probe(&mut run, resolver, spec, kind, name, port)
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
    }
}

async fn probe(
    run: &mut PathRun,
    resolver: &Resolver,
    spec: &ProbeSpec,
    kind: PathKind,
    name: &str,
    port: u16,
) -> Result<(), ProbeError> {
    if kind != PathKind::Dns {
        run.target = Some(spec.endpoint.clone());
    }
    let resolved = run
        .step(Step::Resolve, resolve::resolve(resolver, name))
        .await?;
    run.ttl = resolved.ttl;
    let cname_target = resolved.cname_target;
    if kind == PathKind::Dns {
        run.target = Some(cname_target.unwrap_or_else(|| without_root(&spec.record).to_owned()));
    }
    let address = SocketAddr::new(resolved.ip, port);
    run.address = Some(address);

    let tcp = run.step(Step::Connect, connect(address)).await?;
    match &spec.tls {
        None => exchange(run, spec, tcp).await,
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
            exchange(run, spec, stream).await
        }
    }
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

/// Aborts the connection driver when the path ends, however it ends, so no task or socket
/// outlives the round (a stalled server would otherwise keep the driver waiting forever).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A stream that fails its reads once more than [`MAX_REPLY_BYTES`] have come through it, so
/// that redis-rs never buffers more than that from one path's connection.
///
/// The flag outlives the stream (redis-rs owns the stream, in a task of its own) and tells the
/// path why its command failed: redis-rs reports a read error as a lost connection.
struct Capped<S> {
    inner: S,
    /// Bytes read so far.
    read: usize,
    exceeded: Arc<AtomicBool>,
}

impl<S> Capped<S> {
    fn new(inner: S) -> (Self, Arc<AtomicBool>) {
        let exceeded = Arc::new(AtomicBool::new(false));
        let capped = Capped {
            inner,
            read: 0,
            exceeded: exceeded.clone(),
        };
        (capped, exceeded)
    }
}

/// The error a [`Capped`] read fails with.
fn reply_too_large() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("the server sent more than {} KiB", MAX_REPLY_BYTES / 1024),
    )
}

impl<S: AsyncRead + Unpin> AsyncRead for Capped<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read > MAX_REPLY_BYTES {
            return Poll::Ready(Err(reply_too_large()));
        }
        // One byte past the cap is enough to know it is exceeded; never ask the inner stream
        // for more, so that a single read (of a socket buffer several MiB deep) cannot bring
        // in more than the cap either.
        let allowed = MAX_REPLY_BYTES + 1 - this.read;
        let n = if buf.remaining() <= allowed {
            let before = buf.filled().len();
            ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
            buf.filled().len() - before
        } else {
            let mut limited = ReadBuf::new(buf.initialize_unfilled_to(allowed));
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut limited))?;
            let n = limited.filled().len();
            buf.advance(n);
            n
        };
        this.read += n;
        if this.read > MAX_REPLY_BYTES {
            this.exceeded.store(true, Ordering::Relaxed);
            return Poll::Ready(Err(reply_too_large()));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Capped<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
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

/// The Valkey part of a path: `AUTH` (when configured), `PING`, `SET`, `GET`, reading at most
/// [`MAX_REPLY_BYTES`] from the server.
async fn exchange<S>(run: &mut PathRun, spec: &ProbeSpec, stream: S) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (stream, exceeded) = Capped::new(stream);
    let result = commands(run, spec, stream).await;
    match result {
        Err(err) if exceeded.load(Ordering::Relaxed) => Err(reply_cap_error(err.step)),
        other => other,
    }
}

async fn commands<S>(run: &mut PathRun, spec: &ProbeSpec, stream: S) -> Result<(), ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let first_step = match spec.auth {
        Auth::None => Step::Ping,
        Auth::Password { .. } | Auth::Iam { .. } => Step::Auth,
    };
    // No credentials, database or client name: redis-rs sends nothing while setting up, so
    // every byte on the wire belongs to a timed step. Our deadline bounds each command, so
    // redis-rs's own response timeout is off.
    let info = RedisConnectionInfo::default()
        .set_protocol(ProtocolVersion::RESP2)
        .set_skip_set_lib_name();
    let config = AsyncConnectionConfig::new().set_response_timeout(None);
    let (mut con, driver) = timeout_at(
        run.deadline,
        MultiplexedConnection::new_with_config(&info, stream, config),
    )
    .await
    .map_err(|_| deadline_error(first_step, run.timeout))?
    .map_err(|err| classify_redis_error(first_step, &err))?;
    let _driver = AbortOnDrop(tokio::spawn(driver));

    if first_step == Step::Auth {
        run.step(Step::Auth, authenticate(&mut con, &spec.auth))
            .await?;
    }
    run.step(Step::Ping, ping(&mut con)).await?;
    let key = format!(
        "{}{}:{:016x}",
        spec.key_prefix,
        spec.agent_id,
        rand::random::<u64>()
    );
    let value = format!("{:032x}", rand::random::<u128>());
    run.step(Step::Set, set(&mut con, &key, &value)).await?;
    run.step(Step::Get, get(&mut con, &key, &value)).await
}

async fn authenticate(con: &mut MultiplexedConnection, auth: &Auth) -> Result<(), ProbeError> {
    let mut cmd = redis::cmd("AUTH");
    match auth {
        Auth::None => return Ok(()),
        Auth::Password { username, password } => {
            if let Some(username) = username {
                cmd.arg(username);
            }
            cmd.arg(password.expose());
        }
        Auth::Iam { username, tokens } => {
            // No credentials to sign with is a setup problem, like a wrong password: `auth`.
            let token = tokens
                .token()
                .await
                .map_err(|err| ProbeError::new(ErrorKind::Auth, Step::Auth, with_sources(&err)))?;
            cmd.arg(username).arg(token.expose());
        }
    }
    // Never format `cmd` or its arguments anywhere: they hold the secret.
    match cmd.query_async::<Value>(con).await {
        Ok(Value::Okay) => Ok(()),
        Ok(other) => Err(ProbeError::new(
            ErrorKind::Protocol,
            Step::Auth,
            format!("AUTH: expected OK, got {}", value_type(&other)),
        )),
        Err(err) => Err(classify_auth_error(&err)),
    }
}

/// Maps a failed `AUTH`. The message holds the server's error code only: a reply to `AUTH` is
/// the one place a careless server could echo what it was sent.
fn classify_auth_error(err: &RedisError) -> ProbeError {
    match err.code() {
        Some(code) => {
            let kind = match code {
                // A generic ERR on AUTH is a configuration problem only when it says so (a
                // password sent to a server that has none). Other ERRs on the first reply,
                // such as "max number of clients reached" from an overloaded server, are not
                // ours to fix and must not hide an outage as a config error.
                "ERR" if is_auth_message(err.detail().unwrap_or_default()) => ErrorKind::Auth,
                "ERR" => ErrorKind::Protocol,
                code => server_error_kind(code),
            };
            let code = server_text(code.as_bytes());
            ProbeError::new(kind, Step::Auth, format!("AUTH rejected: {code}"))
        }
        None => classify_redis_error(Step::Auth, err),
    }
}

/// The texts Valkey and Redis use for authentication failures reported as a plain `ERR`.
fn is_auth_message(detail: &str) -> bool {
    let detail = detail.to_ascii_lowercase();
    ["password", "username", "auth"]
        .iter()
        .any(|w| detail.contains(w))
}

async fn ping(con: &mut MultiplexedConnection) -> Result<(), ProbeError> {
    match redis::cmd("PING").query_async::<Value>(con).await {
        Ok(Value::SimpleString(pong)) if pong == "PONG" => Ok(()),
        Ok(other) => Err(ProbeError::new(
            ErrorKind::Protocol,
            Step::Ping,
            format!("expected PONG, got {}", describe(&other)),
        )),
        Err(err) => Err(classify_redis_error(Step::Ping, &err)),
    }
}

async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) -> Result<(), ProbeError> {
    let reply = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .arg("EX")
        .arg(KEY_TTL_SECS)
        .query_async::<Value>(con)
        .await;
    match reply {
        Ok(Value::Okay) => Ok(()),
        Ok(other) => Err(ProbeError::new(
            ErrorKind::Protocol,
            Step::Set,
            format!("SET {key}: expected OK, got {}", describe(&other)),
        )),
        Err(err) => Err(classify_redis_error(Step::Set, &err)),
    }
}

async fn get(con: &mut MultiplexedConnection, key: &str, value: &str) -> Result<(), ProbeError> {
    match redis::cmd("GET").arg(key).query_async::<Value>(con).await {
        Ok(Value::BulkString(got)) if got == value.as_bytes() => Ok(()),
        Ok(Value::BulkString(got)) => Err(ProbeError::new(
            ErrorKind::ValueMismatch,
            Step::Get,
            format!(
                "GET {key}: expected {value:?}, got \"{}\"",
                server_text(&got)
            ),
        )),
        Ok(Value::Nil) => Err(ProbeError::new(
            ErrorKind::ValueMismatch,
            Step::Get,
            format!("GET {key}: the key just written is missing"),
        )),
        Ok(other) => Err(ProbeError::new(
            ErrorKind::Protocol,
            Step::Get,
            format!("GET {key}: expected a string, got {}", describe(&other)),
        )),
        Err(err) => Err(classify_redis_error(Step::Get, &err)),
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

/// Maps a failed command (not `AUTH`, see [`classify_auth_error`]).
///
/// A server error is classified by its code. An I/O timeout is `timeout`. Anything else (reset,
/// EOF, a reply that does not parse) means the connection did not carry a sane exchange:
/// `protocol`.
fn classify_redis_error(step: Step, err: &RedisError) -> ProbeError {
    // Every text here can carry the server's bytes: its error reply, or a reply that did not
    // parse, quoted by redis-rs.
    let text = |raw: &str| server_text(raw.trim_end().as_bytes());
    let (kind, message) = match err.code() {
        Some(code) => {
            let reply = format!("{code} {}", err.detail().unwrap_or_default());
            (
                server_error_kind(code),
                format!("server replied {}", text(&reply)),
            )
        }
        None if err.is_timeout() => (ErrorKind::Timeout, text(&with_sources(err))),
        None if err.is_connection_dropped() => (
            ErrorKind::Protocol,
            format!("connection lost: {}", text(&with_sources(err))),
        ),
        None => (ErrorKind::Protocol, text(&with_sources(err))),
    };
    ProbeError::new(kind, step, message)
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
fn value_type(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a bulk string",
        Value::Array(_) => "an array",
        Value::SimpleString(_) => "a simple string",
        Value::Okay => "OK",
        _ => "a RESP3 value",
    }
}

/// A reply for a message: its type and a short, escaped view of its content.
fn describe(value: &Value) -> String {
    match value {
        Value::SimpleString(s) => {
            format!("{} \"{}\"", value_type(value), server_text(s.as_bytes()))
        }
        Value::BulkString(b) => format!("{} \"{}\"", value_type(value), server_text(b)),
        Value::Int(i) => format!("{} {i}", value_type(value)),
        other => value_type(other).to_owned(),
    }
}

#[cfg(test)]
mod tests;
