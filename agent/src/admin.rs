//! The admin server: `/metrics`, `/healthz`, `/status`, `/vote`, and the `POST` controls
//! (`/pause`, `/resume`, `/failover`, `/failback`, `/abort`, `/approve`). What it accepts and
//! answers is the [`crate::control`] layer's; the client is there too.
//!
//! The server runs on its own task and only reads shared state (the
//! [`Metrics`](crate::metrics::Metrics), [`Health`], the status channel), so it keeps
//! answering while the daemon loop is busy with a failover or stuck: that is exactly when an
//! operator needs `/status` and Prometheus needs `/metrics`.
//! The one exception is pause/resume, which must be applied by the loop; those requests wait
//! for its answer for at most [`CONTROL_TIMEOUT`] and then say so with a `504`.
//!
//! Only the owner drives it. Every control endpoint and `/status` need the token the agent
//! writes, mode 0600, to `state_dir/admin.token` when it starts ([`AdminToken`]): the CLI
//! reads it, so running the CLI as the agent's user (or root) is what grants control.
//! `/status` and the controls also refuse anything a browser sends ([`from_a_browser`]).
//! `/metrics` and `/healthz` stay open, for Prometheus and kubelet on a pod IP.
//!
//! It listens twice ([`Listeners`]): on `admin_listen`, and on the owner's unix socket
//! `state_dir/admin.sock` ([`bind_socket`]), which serves everything. With `[agent] controls =
//! "socket"` (the default) the owner's controls are served only on the socket and TCP
//! answers them with a 403 that names it; the peers' relayed pauses and `/vote` stay on TCP.
//!
//! The server is bounded: a client has [`HEADER_TIMEOUT`] to send its request headers, and a
//! connection lives at most [`CONNECTION_LIFETIME`]. On TCP one address is served at most
//! [`ServerLimits::per_address`] connections at once and everyone
//! [`ServerLimits::max_connections`]; the socket has its own
//! [`ServerLimits::socket_connections`]. More are closed as they are accepted, so a flood or
//! a slow-loris client cannot take the agent's file descriptors, which its probes need, nor
//! the places of kubelet, Prometheus and the owner.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::extract::State as AxumState;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::TokioIo;
use tokio::sync::{mpsc, oneshot, watch};

use crate::control::status::{
    ControlAnswer, ErrorAnswer, ReadinessStatus, StatusDocument, VoteAnswer,
};
use crate::control::{AdminToken, ControlAction, ControlRequest};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

#[cfg(test)]
mod tests;

/// How long `POST /pause` and `POST /resume` wait for the daemon loop before answering `504`.
/// The loop picks control requests up between rounds, so this covers a slow round; a
/// failover in progress may hold it longer, and the operator is told to retry. Give the
/// client a longer timeout than this, so the server's explanation arrives.
pub const CONTROL_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a client may take to send a request's headers; the connection is closed after.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one connection may stay open, idle keep-alive included. A control request waits
/// [`CONTROL_TIMEOUT`] at most, so this leaves room for a few requests and no more.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

/// How long a stopping server lets the requests in flight finish.
const SHUTDOWN_DRAIN: Duration = Duration::from_millis(1500);

/// TCP connections served at once from everyone, at the least: see [`ServerLimits::for_watches`].
pub const MAX_CONNECTIONS: usize = 128;

/// TCP connections served at once from one address, at the least: a CLI with
/// `controls = "tcp"`, a Prometheus scrape, kubelet's probes and a peer's relay need one
/// each. A flood from one address takes no more, and leaves the rest of
/// [`MAX_CONNECTIONS`] to everyone else.
pub const PER_ADDRESS: usize = 8;

/// Connections served at once on the unix socket, which only the agent's user can open: the
/// owner's CLI opens one per command. Counted apart from TCP, so no TCP client can take them.
pub const SOCKET_CONNECTIONS: usize = 16;

/// The content type of OpenMetrics text, which `prometheus-client` writes (`# EOF` included).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the daemon loop still completes rounds, for `/healthz`.
///
/// The loop calls [`Health::tick`] after every round; the admin server calls
/// [`Health::healthy`]. The last tick is one atomic, so neither ever waits for the other.
/// Time is tokio's, so tests can control it.
#[derive(Debug)]
pub struct Health {
    /// When the loop started; ticks are stored relative to it.
    start: Instant,
    /// Nanoseconds from `start` to the last tick, plus one; 0 until the first tick.
    last_tick: AtomicU64,
    /// Three intervals: one late round is normal under load, three missed ones are not.
    limit: Duration,
    /// Each watch whose task ended unexpectedly and waits to be started again: the other
    /// watches still tick, so the stalled-loop test alone would call the agent healthy.
    down: std::sync::Mutex<BTreeMap<String, TaskDown>>,
}

/// A watch's task that ended unexpectedly and has not been started again yet.
#[derive(Debug, Clone)]
struct TaskDown {
    /// Why it ended, one escaped line: `panicked (MESSAGE)`.
    cause: String,
    /// Which restart comes next.
    restart: u32,
    /// When it comes.
    at: Instant,
}

impl Health {
    /// Health for a loop that runs every `interval` (the smallest watch interval), starting
    /// now. Before the first tick, the loop counts as stalled once the limit has passed
    /// since now, so an agent stuck in its first round is reported too.
    pub fn new(interval: Duration) -> Self {
        Health::starting_at(interval, Instant::now())
    }

    fn starting_at(interval: Duration, start: Instant) -> Self {
        Health {
            start,
            last_tick: AtomicU64::new(0),
            limit: interval.saturating_mul(3),
            down: std::sync::Mutex::default(),
        }
    }

    /// Records that `watch`'s task ended (`cause`, one escaped line) and is started again,
    /// for the `restart`th time, at `at`: `/healthz` fails until [`Health::task_up`].
    pub fn task_down(&self, watch: &str, cause: &str, restart: u32, at: Instant) {
        let down = TaskDown {
            cause: cause.to_owned(),
            restart,
            at,
        };
        self.tasks().insert(watch.to_owned(), down);
    }

    /// Records that `watch`'s task runs again.
    pub fn task_up(&self, watch: &str) {
        self.tasks().remove(watch);
    }

    fn tasks(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, TaskDown>> {
        // Held only to copy a few strings: a panic while holding it left the map whole.
        self.down
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that the loop completed a round.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let since_start = now.saturating_duration_since(self.start).as_nanos();
        let stored = u64::try_from(since_start)
            .unwrap_or(u64::MAX - 1)
            .saturating_add(1);
        self.last_tick.store(stored, Ordering::Relaxed);
    }

    /// `Ok` while every watch's task runs and the last round (or the start) is no older than
    /// three intervals; otherwise a one-line reason for the `503` body.
    pub fn healthy(&self) -> Result<(), String> {
        self.healthy_at(Instant::now())
    }

    fn healthy_at(&self, now: Instant) -> Result<(), String> {
        if let Some((watch, down)) = self.tasks().iter().next() {
            let wait = down.at.saturating_duration_since(now);
            // Whole seconds, rounded up: "restarting in 0s" would be a lie until it happens.
            let secs = wait.as_millis().div_ceil(1000);
            return Err(format!(
                "watch {watch}'s task {}, restarting in {secs}s (restart {})",
                down.cause, down.restart
            ));
        }
        self.looping_at(now)
    }

    /// `Ok` while the last round (or the start) is no older than three intervals: what the
    /// systemd watchdog is fed on. A watch's task being restarted is the daemon's own
    /// business, and restarting the whole agent would not do it sooner.
    pub fn looping(&self) -> Result<(), String> {
        self.looping_at(Instant::now())
    }

    fn looping_at(&self, now: Instant) -> Result<(), String> {
        let limit = crate::text::duration(self.limit);
        match self.last_tick.load(Ordering::Relaxed) {
            0 => {
                let age = now.saturating_duration_since(self.start);
                if age > self.limit {
                    return Err(format!(
                        "loop stalled: no round completed in {:.1}s since start, limit {limit}",
                        age.as_secs_f64()
                    ));
                }
            }
            stored => {
                let at = self.start + Duration::from_nanos(stored - 1);
                let age = now.saturating_duration_since(at);
                if age > self.limit {
                    return Err(format!(
                        "loop stalled: last round {:.1}s ago, limit {limit}",
                        age.as_secs_f64()
                    ));
                }
            }
        }
        Ok(())
    }
}

/// What the admin server reads. Everything is shared with the loop and cheap to clone.
#[derive(Debug, Clone)]
pub struct AdminState {
    /// Encoded on every scrape.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Ticked by the loop, read by `/healthz`.
    pub health: Arc<Health>,
    /// The loop publishes a fresh status after every round; `/status` serves the latest
    /// without waiting for the loop.
    pub status: watch::Receiver<StatusDocument>,
    /// The readiness task's latest pass, added to `/status` as `readiness` when asked.
    pub readiness: watch::Receiver<ReadinessStatus>,
    /// Where pause/resume requests go.
    pub control: mpsc::Sender<ControlRequest>,
    /// What a control request must present.
    pub token: AdminToken,
    /// What a peer's `/vote` request must present; `None` without peers.
    pub peer_token: Option<AdminToken>,
    /// Where a pause or resume is relayed; `None` without peers.
    pub peers: Option<Arc<crate::peers::Peers>>,
    /// Each watch's approval slot: `POST /approve` reaches the held executor through it at
    /// once, without waiting for the watch's probe round to end.
    pub approvals: Arc<BTreeMap<String, Arc<crate::executor::Approvals>>>,
}

/// The server's bounds; [`ServerLimits::for_watches`] in the daemon, shorter in tests.
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// [`CONTROL_TIMEOUT`].
    pub control_timeout: Duration,
    /// [`HEADER_TIMEOUT`].
    pub header_timeout: Duration,
    /// [`CONNECTION_LIFETIME`].
    pub connection_lifetime: Duration,
    /// TCP connections served at once from everyone ([`MAX_CONNECTIONS`] at the least).
    pub max_connections: usize,
    /// TCP connections served at once from one address ([`PER_ADDRESS`] at the least); IPv6
    /// addresses count by their /64, which one host usually holds whole.
    pub per_address: usize,
    /// Connections served at once on the unix socket ([`SOCKET_CONNECTIONS`]).
    pub socket_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::for_watches(0)
    }
}

impl ServerLimits {
    /// The bounds for an agent with `watches` watches. A peer asks for a vote on each watch
    /// that looks down, all at once when a region fails, one connection each: so an address
    /// may hold one connection per watch besides [`PER_ADDRESS`], or a peer's votes would be
    /// refused exactly when they count. Everyone together may hold four addresses' worth, so
    /// an address at its cap leaves room for kubelet, Prometheus and the peers.
    pub fn for_watches(watches: usize) -> Self {
        let per_address = PER_ADDRESS.saturating_add(watches);
        ServerLimits {
            control_timeout: CONTROL_TIMEOUT,
            header_timeout: HEADER_TIMEOUT,
            connection_lifetime: CONNECTION_LIFETIME,
            max_connections: MAX_CONNECTIONS.max(per_address.saturating_mul(4)),
            per_address,
            socket_connections: SOCKET_CONNECTIONS,
        }
    }
}

/// What the admin server listens on, and which of them serves the owner's controls.
#[derive(Debug)]
pub struct Listeners {
    /// `admin_listen`: `/metrics`, `/healthz`, `/status` with the owner's token, `/vote`, the
    /// peers' relayed pauses, and the owner's controls only with `controls = "tcp"`. `None`
    /// while it is not bound: the socket is served without waiting for it.
    pub tcp: Option<tokio::net::TcpListener>,
    /// `state_dir/admin.sock`: everything, for the owner; `None` when it could not be bound.
    pub socket: Option<tokio::net::UnixListener>,
    /// Where the socket is, for the refusals on TCP that point there.
    pub socket_path: std::path::PathBuf,
    /// `[agent] controls`.
    pub controls: crate::config::Controls,
}

/// Serves the admin endpoints on `listeners` until `shutdown` is cancelled, then lets the
/// requests in flight finish (each bounded by the control timeout at most) and returns.
/// TCP and the socket have their own connection limits, so a TCP flood never reaches the
/// owner's channel.
pub async fn serve(
    listeners: Listeners,
    state: AdminState,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> std::io::Result<()> {
    let on_tcp = match listeners.controls {
        crate::config::Controls::Tcp => OwnerControls::Here,
        crate::config::Controls::Socket => OwnerControls::OnSocket(Arc::from(format!(
            "the owner's controls are served only on the unix socket {} ([agent] controls = \"socket\"): run the valkey-dr CLI as the agent's user on its host, or set controls = \"tcp\"",
            listeners.socket_path.display()
        ))),
    };
    let tcp_app = router(state.clone(), limits.control_timeout, on_tcp);
    let socket_app = router(state, limits.control_timeout, OwnerControls::Here);
    let socket = async {
        match listeners.socket {
            Some(socket) => serve_socket(socket, socket_app, shutdown.clone(), limits).await,
            None => Ok(()),
        }
    };
    let tcp = async {
        match listeners.tcp {
            Some(tcp) => serve_tcp(tcp, tcp_app, shutdown.clone(), limits).await,
            None => Ok(()),
        }
    };
    let (tcp, socket) = tokio::join!(tcp, socket);
    tcp.and(socket)
}

/// The TCP accept loop: each connection needs a place of its address's
/// ([`ServerLimits::per_address`]) and one of everyone's ([`ServerLimits::max_connections`]);
/// one that finds none is closed at once.
async fn serve_tcp(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let addresses = Arc::new(PerAddress::new(limits.per_address));
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if accept_failed(&mut refusals, &e, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let Some(slot) = addresses.take(peer.ip()) else {
            refusals.note(format_args!(
                "{} admin connections from {} are open, the most served at once from one address: closing a new one",
                limits.per_address,
                peer.ip()
            ));
            drop(stream);
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.note(format_args!(
                "{} admin connections are open, the most served at once: closing a new one",
                limits.max_connections
            ));
            drop(stream);
            continue;
        };
        spawn_connection(stream, &app, (permit, slot), &shutdown, limits);
    }
    drain(&permits, limits.max_connections).await;
    Ok(())
}

/// The unix socket's accept loop, with its own [`ServerLimits::socket_connections`].
async fn serve_socket(
    listener: tokio::net::UnixListener,
    app: Router,
    shutdown: CancellationToken,
    limits: ServerLimits,
) -> std::io::Result<()> {
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.socket_connections));
    let mut refusals = Refusals::default();
    loop {
        let accepted = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                if accept_failed(&mut refusals, &e, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            refusals.note(format_args!(
                "{} connections on the admin socket are open, the most served at once: closing a new one",
                limits.socket_connections
            ));
            drop(stream);
            continue;
        };
        spawn_connection(stream, &app, permit, &shutdown, limits);
    }
    drain(&permits, limits.socket_connections).await;
    Ok(())
}

/// Notes a failed accept and waits a little: out of descriptors (EMFILE, ENFILE) the
/// listener stays readable, so accepting again at once would spin. `true`: stop serving.
async fn accept_failed(
    refusals: &mut Refusals,
    e: &std::io::Error,
    shutdown: &CancellationToken,
) -> bool {
    refusals.note(format_args!("accepting an admin connection failed: {e}"));
    tokio::select! {
        () = shutdown.cancelled() => true,
        () = tokio::time::sleep(Duration::from_millis(100)) => false,
    }
}

/// Serves one connection on its own task, holding `places` until it ends: at most
/// [`ServerLimits::header_timeout`] for the headers and
/// [`ServerLimits::connection_lifetime`] in all.
fn spawn_connection<S, P>(
    stream: S,
    app: &Router,
    places: P,
    shutdown: &CancellationToken,
    limits: ServerLimits,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    P: Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(app.clone());
    let shutdown = shutdown.clone();
    tokio::spawn(async move {
        let _places = places;
        let mut http = hyper::server::conn::http1::Builder::new();
        http.timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout);
        let connection = http.serve_connection(TokioIo::new(stream), service);
        let mut connection = std::pin::pin!(connection);
        let lifetime = tokio::time::sleep(limits.connection_lifetime);
        tokio::select! {
            _ = connection.as_mut() => return,
            // Dropping the connection closes it.
            () = lifetime => return,
            () = shutdown.cancelled() => connection.as_mut().graceful_shutdown(),
        }
        let _ = tokio::time::timeout(limits.control_timeout, connection).await;
    });
}

/// Lets the requests in flight finish (each holds a permit until its connection ends), for
/// at most SHUTDOWN_DRAIN: the daemon waits 2 s for this task, then removes nothing, so the
/// drain must end first for admin.json, admin.token and admin.sock to go with the agent.
async fn drain(permits: &tokio::sync::Semaphore, all: usize) {
    let all = u32::try_from(all).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_DRAIN, permits.acquire_many(all)).await;
}

/// How many TCP connections each address holds, against [`ServerLimits::per_address`].
#[derive(Debug)]
struct PerAddress {
    limit: usize,
    open: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// One connection's place in its address's count, given back when dropped.
#[derive(Debug)]
struct AddressSlot {
    addresses: Arc<PerAddress>,
    key: std::net::IpAddr,
}

impl PerAddress {
    fn new(limit: usize) -> Self {
        PerAddress {
            limit,
            open: std::sync::Mutex::default(),
        }
    }

    fn counts(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<std::net::IpAddr, usize>> {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A place for a connection from `ip`, if its address has one left.
    fn take(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<AddressSlot> {
        let key = address_key(ip);
        let mut open = self.counts();
        let count = open.entry(key).or_insert(0);
        if *count >= self.limit {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            addresses: self.clone(),
            key,
        })
    }

    /// Connections open from `ip`'s address.
    #[cfg(test)]
    fn open(&self, ip: std::net::IpAddr) -> usize {
        self.counts().get(&address_key(ip)).copied().unwrap_or(0)
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self.addresses.counts();
        if let Some(count) = open.get_mut(&self.key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// What a connection from `ip` counts against: the IPv4 address (also when it arrives
/// IPv4-mapped on a dual-stack socket), or an IPv6 address's /64, since one host is usually
/// given a whole /64 and could otherwise take a place per address.
fn address_key(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip.to_canonical() {
        std::net::IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            std::net::IpAddr::V6(std::net::Ipv6Addr::from(bits))
        }
        v4 => v4,
    }
}

/// Why the admin socket could not be set up. One line each, saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum SocketError {
    /// Something that is not a socket has the socket's name: it is left alone.
    #[error(
        "{} exists and is not a socket (a {kind}): the agent replaces only a stale socket of its own; move it away",
        .path.display()
    )]
    NotASocket {
        /// The socket's path.
        path: PathBuf,
        /// What is there instead.
        kind: &'static str,
    },
    /// A live agent answers on it: a second agent on one `state_dir`.
    #[error(
        "{} is served by a running process (another agent with this state_dir? see admin.json's pid): the socket is left to it",
        .path.display()
    )]
    InUse {
        /// The socket's path.
        path: PathBuf,
    },
    /// Examining, removing, binding or restricting it failed.
    #[error("cannot set up the admin socket {}: {what}", .path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The step that failed.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The admin socket as bound: the listener, and which file it is, so that only that file is
/// removed at the end.
#[derive(Debug)]
pub struct BoundSocket {
    /// Accepts the owner's connections.
    pub listener: tokio::net::UnixListener,
    /// The file's device and inode.
    id: (u64, u64),
}

/// Binds the owner's unix socket at `path` (in `state_dir`, which only the agent's user may
/// write), mode 0600. A stale socket left by a killed agent is replaced; anything else there
/// (a file, a directory, a symlink, which is never followed) and a socket a live process
/// answers on are left alone, and the error says so. Must run inside the runtime.
pub fn bind_socket(path: &Path) -> Result<BoundSocket, SocketError> {
    use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
    let io = |what: &'static str| {
        move |source| SocketError::Io {
            path: path.to_owned(),
            what,
            source,
        }
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io("examining it")(e)),
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(SocketError::InUse {
                        path: path.to_owned(),
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    // Nobody listens: a killed agent's. unlink(2) never follows a symlink.
                    std::fs::remove_file(path).map_err(io("removing the stale socket"))?;
                }
                Err(e) => return Err(io("checking whether it is stale")(e)),
            }
        }
        Ok(meta) => {
            let kind = meta.file_type();
            return Err(SocketError::NotASocket {
                path: path.to_owned(),
                kind: if kind.is_symlink() {
                    "symlink"
                } else if kind.is_dir() {
                    "directory"
                } else if kind.is_file() {
                    "file"
                } else {
                    "special file"
                },
            });
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(io("binding it"))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("making it 0600"))?;
    let meta = std::fs::symlink_metadata(path).map_err(io("examining it"))?;
    Ok(BoundSocket {
        listener,
        id: (meta.dev(), meta.ino()),
    })
}

/// Removes the socket `bound` created at `path`, if it is still that file.
pub fn remove_socket(path: &Path, bound_id: (u64, u64)) {
    use std::os::unix::fs::MetadataExt as _;
    if std::fs::symlink_metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == bound_id) {
        let _ = std::fs::remove_file(path);
    }
}

impl BoundSocket {
    /// The file's identity, for [`remove_socket`].
    pub fn id(&self) -> (u64, u64) {
        self.id
    }
}

/// Warnings about refused or failed connections, at most one per [`Refusals::EVERY`], with
/// how many there were since the last one: a flood must not flood the log too.
#[derive(Default)]
struct Refusals {
    last: Option<Instant>,
    since: u64,
}

impl Refusals {
    const EVERY: Duration = Duration::from_secs(10);

    fn note(&mut self, what: std::fmt::Arguments<'_>) {
        self.since += 1;
        let now = Instant::now();
        if self
            .last
            .is_none_or(|at| now.duration_since(at) >= Self::EVERY)
        {
            tracing::warn!(count = self.since, "{what}");
            self.last = Some(now);
            self.since = 0;
        }
    }
}

/// The handlers' state: the shared state plus the pause/resume bound (shorter in tests).
#[derive(Clone)]
struct Shared {
    admin: AdminState,
    control_timeout: Duration,
}

/// Where one listener's router serves the owner's controls.
#[derive(Clone)]
enum OwnerControls {
    /// On this listener, with the owner's token.
    Here,
    /// Only on the unix socket: the one-line refusal that says where, and which key.
    OnSocket(Arc<str>),
}

fn router(admin: AdminState, control_timeout: Duration, owner: OwnerControls) -> Router {
    // Only the agent's own CLI drives it: a browser's request (any Origin) or one made under
    // another host name (DNS rebinding) never reaches the status or a control endpoint.
    // /metrics and /healthz stay open for Prometheus and kubelet on a pod IP.
    // The controls and /status also need the owner's token, and `/vote` the peers' shared
    // one. Pause and resume also come from peers, relayed by the agent an operator paused.
    let mut pauses = Router::new()
        .route("/pause", post(pause))
        .route("/resume", post(resume))
        .route("/release", post(release))
        .layer(axum::middleware::from_fn_with_state(
            Tokens {
                owner: admin.token.clone(),
                peer: admin.peer_token.clone(),
            },
            owner_or_peer,
        ));
    let mut controls = Router::new()
        .route("/failover", post(failover))
        .route("/failback", post(failback))
        .route("/abort", post(abort))
        .route("/approve", post(approve))
        .layer(axum::middleware::from_fn_with_state(
            Gate {
                token: Some(admin.token.clone()),
                refusal: NOT_THE_OWNER,
            },
            needs_token,
        ));
    if let OwnerControls::OnSocket(refusal) = owner {
        // Here only the peers may relay a pause or resume; the owner's requests, with its
        // token or none, are told where the controls are.
        let elsewhere = Elsewhere {
            owner: admin.token.clone(),
            refusal,
        };
        pauses = pauses.layer(axum::middleware::from_fn_with_state(
            elsewhere.clone(),
            not_the_owners_here,
        ));
        controls = Router::new()
            .route("/failover", post(not_here))
            .route("/failback", post(not_here))
            .route("/abort", post(not_here))
            .route("/approve", post(not_here))
            .with_state(elsewhere);
    }
    let vote_route =
        Router::new()
            .route("/vote", get(vote))
            .layer(axum::middleware::from_fn_with_state(
                Gate {
                    token: admin.peer_token.clone(),
                    refusal: "a vote request needs the peers' shared token",
                },
                needs_token,
            ));
    let owned = status_route(&admin.token)
        .merge(controls)
        .merge(pauses)
        .merge(vote_route)
        .layer(axum::middleware::from_fn(not_from_a_browser));
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .merge(owned)
        .fallback(not_found)
        .with_state(Shared {
            admin,
            control_timeout,
        })
}

/// `GET /status`, behind the owner's token.
fn status_route(owner: &AdminToken) -> Router<Shared> {
    Router::new()
        .route("/status", get(status))
        .layer(axum::middleware::from_fn_with_state(
            Gate {
                token: Some(owner.clone()),
                refusal: STATUS_NEEDS_THE_OWNER,
            },
            needs_token,
        ))
}

/// Why `/status` without the owner's token is refused: it names the agent's ARN and account,
/// the endpoints, the peers and the pause reasons.
const STATUS_NEEDS_THE_OWNER: &str = "/status needs the owner's token (`Authorization: Bearer` \
     with the contents of admin.token in the agent's state_dir); `valkey-dr status` sends it \
     when run as the agent's user";

/// The owner's controls are on the socket, not on this listener.
#[derive(Clone)]
struct Elsewhere {
    owner: AdminToken,
    refusal: Arc<str>,
}

/// The owner's controls on a listener that does not serve them: `403` saying where they are.
async fn not_here(AxumState(elsewhere): AxumState<Elsewhere>) -> Response {
    error_json(StatusCode::FORBIDDEN, elsewhere.refusal.to_string())
}

/// A pause or resume with the owner's token, or with no token, on a listener that does not
/// serve the owner's controls: `403` saying where they are. Anything else goes on to the
/// peers' check.
async fn not_the_owners_here(
    AxumState(elsewhere): AxumState<Elsewhere>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let header = request.headers().get(header::AUTHORIZATION);
    if header.is_none() || elsewhere.owner.admits(header.map(|h| h.as_bytes())) {
        return error_json(StatusCode::FORBIDDEN, elsewhere.refusal.to_string());
    }
    next.run(request).await
}

/// The token a group of routes needs, and what a request without it is told.
#[derive(Clone)]
struct Gate {
    /// `None`: the routes are off (no peers), and answer 404 as if they did not exist.
    token: Option<AdminToken>,
    /// The 401's reason.
    refusal: &'static str,
}

/// Lets a request through only with `Authorization: Bearer <token>` of its [`Gate`].
async fn needs_token(
    AxumState(gate): AxumState<Gate>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &gate.token else {
        return error_json(
            StatusCode::NOT_FOUND,
            "this agent has no peers configured".to_owned(),
        );
    };
    let header = request.headers().get(header::AUTHORIZATION);
    if token.admits(header.map(|h| h.as_bytes())) {
        next.run(request).await
    } else {
        error_json(StatusCode::UNAUTHORIZED, gate.refusal.to_owned())
    }
}

/// Who sent a pause or resume: the owner's CLI, or a peer relaying its own owner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Caller {
    /// With the owner's token: applied here and relayed to the peers.
    Owner,
    /// With the peers' token: applied here only, so a relay never loops.
    Peer,
}

impl Caller {
    /// The parameters a request of this caller may carry: a peer's relay adds its origin,
    /// when it was sent, and its signature.
    fn parameters(self, own: &'static [&'static str]) -> &'static [&'static str] {
        match (self, own.len()) {
            (Caller::Owner, _) => own,
            (Caller::Peer, 1) => &["watch", "origin", "at", "signature"],
            (Caller::Peer, _) => &["watch", "reason", "until", "origin", "at", "signature"],
        }
    }
}

/// The tokens a pause or resume may carry.
#[derive(Clone)]
struct Tokens {
    owner: AdminToken,
    peer: Option<AdminToken>,
}

/// Lets a pause or resume through with the owner's token or the peers' one, and tells the
/// handler which ([`Caller`]).
async fn owner_or_peer(
    AxumState(tokens): AxumState<Tokens>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let caller = {
        let header = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|h| h.as_bytes());
        if tokens.owner.admits(header) {
            Some(Caller::Owner)
        } else if tokens.peer.as_ref().is_some_and(|p| p.admits(header)) {
            Some(Caller::Peer)
        } else {
            None
        }
    };
    match caller {
        Some(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        None => error_json(StatusCode::UNAUTHORIZED, NOT_THE_OWNER.to_owned()),
    }
}

/// Why a control request without the owner's token is refused.
const NOT_THE_OWNER: &str = "a control request needs the owner's token (`Authorization: Bearer` \
     with the contents of admin.token in the agent's state_dir); the valkey-dr CLI sends it \
     when run as the agent's user";

/// Refuses a request that carries an `Origin` header (browsers send one with every
/// cross-site request, and with every POST) or names a host other than an IP address or
/// `localhost` (a DNS-rebound page); `403` with the reason.
async fn not_from_a_browser(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match from_a_browser(request.headers()) {
        Some(why) => error_json(StatusCode::FORBIDDEN, why),
        None => next.run(request).await,
    }
}

/// Why a request looks like a browser's, if it does.
fn from_a_browser(headers: &axum::http::HeaderMap) -> Option<String> {
    if headers.contains_key(header::ORIGIN) {
        return Some(
            "a request with an Origin header is refused: the admin API obeys only the agent's own CLI, never a web page"
                .to_owned(),
        );
    }
    let host = headers.get(header::HOST)?;
    let text = host.to_str().unwrap_or_default();
    // `127.0.0.1:9187`, `[::1]:9187`, `localhost:9187`, with or without the port.
    let name = match text.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => text.rsplit_once(':').map_or(text, |(h, _)| h),
    };
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        None
    } else {
        Some(
            "the Host header names neither an IP address nor localhost: the admin API answers only requests made to its address"
                .to_owned(),
        )
    }
}

async fn metrics(AxumState(shared): AxumState<Shared>) -> Response {
    (
        [(header::CONTENT_TYPE, OPENMETRICS)],
        shared.admin.metrics.encode(),
    )
        .into_response()
}

async fn healthz(AxumState(shared): AxumState<Shared>) -> Response {
    match shared.admin.health.healthy() {
        Ok(()) => (StatusCode::OK, "ok\n").into_response(),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")).into_response(),
    }
}

async fn status(AxumState(shared): AxumState<Shared>) -> Response {
    let mut latest = shared.admin.status.borrow().clone();
    latest.readiness = Some(shared.admin.readiness.borrow().clone());
    sorted_json(latest).into_response()
}

/// A peer asks for this agent's vote on one watch (see [`crate::peers`]); the answer is
/// signed with this agent's key over the asker's nonce.
async fn vote(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    let mut params = match query_params(uri.query(), &["watch", "nonce"]) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let Some(watch) = params.remove("watch") else {
        return error_json(StatusCode::BAD_REQUEST, "`watch` is required".to_owned());
    };
    let nonce = params.remove("nonce").unwrap_or_default();
    if !(32..=128).contains(&nonce.len()) || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error_json(
            StatusCode::BAD_REQUEST,
            "`nonce` is required: 32–128 hex digits, fresh for each ask".to_owned(),
        );
    }
    let Some(peers) = shared.admin.peers.clone() else {
        return error_json(
            StatusCode::NOT_FOUND,
            "this agent has no peers configured".to_owned(),
        );
    };
    let answer = {
        let status = shared.admin.status.borrow();
        status
            .watch(&watch)
            .map(|w| VoteAnswer::of(&status.agent.id, w, SystemTime::now()))
    };
    match answer {
        Some(answer) => sorted_json(answer.sign(nonce, peers.identity())).into_response(),
        None => error_json(
            StatusCode::NOT_FOUND,
            format!("no watch named {watch:?} here"),
        ),
    }
}

async fn pause(
    AxumState(shared): AxumState<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    uri: Uri,
) -> Response {
    let params = match query_params(
        uri.query(),
        caller.parameters(&["watch", "reason", "until"]),
    ) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let reason = params.get("reason").cloned();
    if let Some(reason) = &reason
        && (reason.is_empty()
            || reason.chars().count() > MAX_PAUSE_REASON
            || reason.chars().any(char::is_control))
    {
        return error_json(
            StatusCode::BAD_REQUEST,
            format!("`reason` must be 1-{MAX_PAUSE_REASON} printable characters"),
        );
    }
    // Bounded here, before anything is saved: an end the status cannot show or a clock
    // cannot hold would stop the watch that holds it (issue 23).
    let until = match params
        .get("until")
        .map(|raw| crate::control::pause_until(raw, SystemTime::now()))
        .transpose()
    {
        Ok(until) => until,
        Err(e) => return error_json(StatusCode::BAD_REQUEST, e.to_string()),
    };
    let mut action = ControlAction::Pause {
        reason,
        until,
        origin: None,
    };
    let watch = params.get("watch").cloned();
    if caller == Caller::Peer {
        let origin = match relay_origin(&shared, &action, watch.as_deref(), &params) {
            Ok(Relay::Apply(origin)) => origin,
            Ok(Relay::Skip(answer)) => return answer,
            Err(refused) => return *refused,
        };
        if until.is_none() {
            return error_json(
                StatusCode::BAD_REQUEST,
                "a pause relayed with the peers' token needs `until` (1 s to 7 days from now): only the owner pauses without an end".to_owned(),
            );
        }
        if let ControlAction::Pause { origin: o, .. } = &mut action {
            *o = Some(origin);
        }
    }
    relay_to_peers(&shared, caller, action, watch).await
}

async fn resume(
    AxumState(shared): AxumState<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    uri: Uri,
) -> Response {
    let params = match query_params(uri.query(), caller.parameters(&["watch"])) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let watch = params.get("watch").cloned();
    let mut origin = None;
    if caller == Caller::Peer {
        let action = ControlAction::Resume { origin: None };
        // A watch its owner paused stays paused: the daemon ends only a pause relayed from a
        // peer with a relayed resume (policies' `resume_relayed`), and says so per watch.
        origin = match relay_origin(&shared, &action, watch.as_deref(), &params) {
            Ok(Relay::Apply(origin)) => Some(origin),
            Ok(Relay::Skip(answer)) => return answer,
            Err(refused) => return *refused,
        };
    }
    relay_to_peers(&shared, caller, ControlAction::Resume { origin }, watch).await
}

/// `POST /release?watch=NAME`, a peer's failback relayed (`[watch.switch] kind =
/// "health_check"`): this agent's verdict goes to 0 and is held no longer. Only peers send
/// it, signed; the owner fails back with `valkey-dr failback`, which releases every agent.
async fn release(
    AxumState(shared): AxumState<Shared>,
    axum::Extension(caller): axum::Extension<Caller>,
    uri: Uri,
) -> Response {
    if caller == Caller::Owner {
        return error_json(
            StatusCode::BAD_REQUEST,
            "only a peer's failback relays a release; run `valkey-dr failback`, which flushes the old primary, then releases every agent".to_owned(),
        );
    }
    let params = match query_params(uri.query(), caller.parameters(&["watch"])) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let watch = params.get("watch").cloned();
    let action = ControlAction::Release { origin: None };
    let origin = match relay_origin(&shared, &action, watch.as_deref(), &params) {
        Ok(Relay::Apply(origin)) => Some(origin),
        Ok(Relay::Skip(answer)) => return answer,
        Err(refused) => return *refused,
    };
    relay_to_peers(&shared, caller, ControlAction::Release { origin }, watch).await
}

/// What to do with a relay whose signature verified.
enum Relay {
    /// Apply it: it comes from this peer.
    Apply(String),
    /// Answer `200` and apply nothing: this agent's own relay (reached through a name that
    /// covers every agent), or one already applied (replayed, or at a second address).
    Skip(Response),
}

/// The peer a relayed `action` comes from, when its `origin`, `at` and `signature` verify
/// against `peer_keys` and it is no older than [`crate::peers::MAX_RELAY_AGE`]; else the
/// `401` that says why.
fn relay_origin(
    shared: &Shared,
    action: &ControlAction,
    watch: Option<&str>,
    params: &BTreeMap<String, String>,
) -> Result<Relay, Box<Response>> {
    let refuse = |why: String| {
        Box::new(error_json(
            StatusCode::UNAUTHORIZED,
            format!("a relayed {} is refused: {why}", action.as_str()),
        ))
    };
    let Some(peers) = &shared.admin.peers else {
        return Err(refuse("this agent has no peers configured".to_owned()));
    };
    let (Some(origin), Some(at), Some(signature)) = (
        params.get("origin"),
        params.get("at"),
        params.get("signature"),
    ) else {
        return Err(refuse(
            "unsigned: a relay carries `origin`, `at` and `signature` (the relaying agent's key in peer_keys)".to_owned(),
        ));
    };
    let Ok(at_ms) = at.parse::<u64>() else {
        return Err(refuse(format!("`at` {at:?} is not Unix milliseconds")));
    };
    let now_ms = crate::peers::unix_ms(SystemTime::now());
    let max_ms = u64::try_from(crate::peers::MAX_RELAY_AGE.as_millis()).unwrap_or(u64::MAX);
    if now_ms.abs_diff(at_ms) > max_ms {
        return Err(refuse(format!(
            "stale: sent at {at_ms} ms, {} s from this agent's clock, more than {} s",
            now_ms.abs_diff(at_ms) / 1000,
            max_ms / 1000
        )));
    }
    let (until, reason) = crate::peers::relay_fields(action);
    let message =
        crate::identity::relay_message(origin, action.as_str(), watch, until, reason, at_ms);
    match peers.keys().verify(origin, &message, Some(signature)) {
        Ok(()) if origin == peers.agent_id() || !peers.first_arrival(signature) => {
            let answer = ControlAnswer {
                agent_id: Some(peers.agent_id().to_owned()),
                ..ControlAnswer::default()
            };
            Ok(Relay::Skip(
                (StatusCode::OK, sorted_json(answer)).into_response(),
            ))
        }
        Ok(()) => Ok(Relay::Apply(origin.clone())),
        Err(why) => Err(refuse(format!(
            "{} (origin {})",
            why.as_str(),
            valkey_dr_probes::foreign_text(origin.as_bytes(), 64)
        ))),
    }
}

/// The longest pause reason: a ticket and a sentence.
pub const MAX_PAUSE_REASON: usize = 200;

/// Applies a pause or resume here and, when the owner asked and peers are configured, on
/// every peer too (with the peers' token, which a peer never relays further): a paused agent
/// whose peers are not paused could still be outvoted into nothing, but any one of them could
/// still fail over. The answer lists each peer's result.
async fn relay_to_peers(
    shared: &Shared,
    caller: Caller,
    action: ControlAction,
    watch: Option<String>,
) -> Response {
    let relayed = action.clone();
    let mut answer = match control(shared, action, watch.clone()).await {
        Ok(answer) => answer,
        Err(refused) => return refused,
    };
    // Names this agent, so that a relay that reaches it through a shared name skips it.
    answer.agent_id = Some(shared.admin.status.borrow().agent.id.clone());
    if caller == Caller::Owner
        && let Some(peers) = &shared.admin.peers
    {
        answer.peers = Some(peers.relay(&relayed, watch.as_deref()).await);
    }
    (StatusCode::OK, sorted_json(answer)).into_response()
}

async fn failover(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    with_delete_dr(&shared, &uri, |_| ControlAction::Failover, false).await
}

/// `POST /failback?watch=NAME[&delete_dr=true][&keep_data=true]`.
async fn failback(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    let params = match query_params(uri.query(), &["watch", "delete_dr", "keep_data"]) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let (delete_dr, keep_data) = match (
        flag_param(&params, "delete_dr"),
        flag_param(&params, "keep_data"),
    ) {
        (Ok(delete_dr), Ok(keep_data)) => (delete_dr, keep_data),
        (Err(reason), _) | (_, Err(reason)) => {
            return error_json(StatusCode::BAD_REQUEST, reason);
        }
    };
    let action = ControlAction::Failback {
        delete_dr,
        keep_data,
    };
    match control(&shared, action, params.get("watch").cloned()).await {
        Ok(answer) => (StatusCode::OK, sorted_json(answer)).into_response(),
        Err(refused) => refused,
    }
}

/// A `true`/`false` parameter; absent is false.
fn flag_param(params: &BTreeMap<String, String>, name: &str) -> Result<bool, String> {
    match params.get(name).map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(format!("`{name}` is {other:?}; use true or false")),
    }
}

async fn abort(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    with_delete_dr(
        &shared,
        &uri,
        |delete_dr| ControlAction::Abort { delete_dr },
        true,
    )
    .await
}

/// `POST /approve?watch=NAME&by=WHO`: `by` names the person (1–100 printable characters).
async fn approve(AxumState(shared): AxumState<Shared>, uri: Uri) -> Response {
    let params = match query_params(uri.query(), &["watch", "by"]) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    if !params.contains_key("watch") {
        return error_json(
            StatusCode::BAD_REQUEST,
            "`watch` is required: an approval is for one watch's held failover".into(),
        );
    }
    let by = params.get("by").map(String::as_str).unwrap_or("");
    if by.is_empty() || by.chars().count() > 100 || by.chars().any(char::is_control) {
        return error_json(
            StatusCode::BAD_REQUEST,
            "`by` must name who approves: 1–100 printable characters, e.g. alice@ops-host".into(),
        );
    }
    let watch = params.get("watch").cloned().unwrap_or_default();
    let Some(approvals) = shared.admin.approvals.get(&watch) else {
        let names: Vec<&String> = shared.admin.approvals.keys().collect();
        return error_json(
            StatusCode::NOT_FOUND,
            format!("no watch named {watch:?}; valid: {names:?}"),
        );
    };
    let answer = approvals.approve(&watch, by.to_owned()).await;
    let mut answers = ControlAnswer::default();
    answers.watches.insert(watch, answer.into());
    (StatusCode::OK, sorted_json(answers)).into_response()
}

/// `delete_dr=true` is the one parameter besides `watch`, and only for abort (failback has its
/// own, [`failback`]).
async fn with_delete_dr(
    shared: &Shared,
    uri: &Uri,
    action: impl FnOnce(bool) -> ControlAction,
    takes_delete_dr: bool,
) -> Response {
    let allowed: &[&str] = if takes_delete_dr {
        &["watch", "delete_dr"]
    } else {
        &["watch"]
    };
    let params = match query_params(uri.query(), allowed) {
        Ok(params) => params,
        Err(reason) => return error_json(StatusCode::BAD_REQUEST, reason),
    };
    let delete_dr = match params.get("delete_dr").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return error_json(
                StatusCode::BAD_REQUEST,
                format!("`delete_dr` is {other:?}; use true or false"),
            );
        }
    };
    match control(shared, action(delete_dr), params.get("watch").cloned()).await {
        Ok(answer) => (StatusCode::OK, sorted_json(answer)).into_response(),
        Err(refused) => refused,
    }
}

async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        "not found; try GET /metrics, /healthz, /status, /vote?watch=NAME or POST /pause, /resume, /failover, /failback, /abort, /approve [?watch=NAME]\n",
    )
        .into_response()
}

/// Hands a control request to the loop and relays its answer, waiting at most
/// `control_timeout` for both a place in the queue and the answer; the error response
/// when there is none.
async fn control(
    shared: &Shared,
    action: ControlAction,
    watch: Option<String>,
) -> Result<ControlAnswer, Response> {
    let (reply, answer) = oneshot::channel();
    let name = action.as_str();
    let request = ControlRequest {
        action,
        watch: watch.clone(),
        reply,
    };
    let exchange = async {
        shared.admin.control.send(request).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(shared.control_timeout, exchange).await {
        Ok(Some(Ok(summary))) => {
            tracing::info!(action = name, watch = ?watch, "control request applied");
            Ok(summary)
        }
        Ok(Some(Err(reason))) => Err(error_json(StatusCode::NOT_FOUND, reason)),
        Ok(None) => Err(error_json(
            StatusCode::SERVICE_UNAVAILABLE,
            "the daemon loop is not running (shutting down?); check the agent's logs".to_owned(),
        )),
        Err(_) => Err(error_json(
            StatusCode::GATEWAY_TIMEOUT,
            format!(
                "the daemon loop did not answer within {}; it may be busy with a failover: \
                 check /status and retry",
                crate::text::duration(shared.control_timeout)
            ),
        )),
    }
}

/// A JSON body with its object keys sorted, as the documents have always been written
/// (see [`crate::control::status`]).
fn sorted_json(value: impl serde::Serialize) -> Response {
    match serde_json::to_value(value) {
        Ok(value) => axum::Json(value).into_response(),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot write the answer: {e}\n"),
        )
            .into_response(),
    }
}

fn error_json(status: StatusCode, reason: String) -> Response {
    (status, sorted_json(ErrorAnswer { error: reason })).into_response()
}

/// The parameters of a control request, percent-decoded. Any parameter not in `allowed` is
/// an error rather than ignored: a mistyped `?wach=a` must not pause every watch.
fn query_params(query: Option<&str>, allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut params = BTreeMap::new();
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        if !allowed.contains(&key) {
            let list: Vec<String> = allowed.iter().map(|a| format!("`{a}`")).collect();
            return Err(format!(
                "unknown parameter {key:?}; the parameters here are {}",
                list.join(", ")
            ));
        }
        let value = percent_decode(value)?;
        if value.is_empty() {
            return Err(if key == "watch" {
                "empty `watch`; leave it out to address every watch".to_owned()
            } else {
                format!("empty `{key}`")
            });
        }
        if params.insert(key.to_owned(), value).is_some() {
            return Err(format!("`{key}` given more than once"));
        }
    }
    Ok(params)
}

/// Decodes `%XX` escapes and `+` (a space, as forms send it).
fn percent_decode(s: &str) -> Result<String, String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        rest = tail;
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = rest
                    .get(..2)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("bad percent-encoding in {s:?}"))?;
                bytes.push(hex);
                rest = &rest[2..];
            }
            _ => bytes.push(b),
        }
    }
    String::from_utf8(bytes).map_err(|_| format!("{s:?} does not decode to UTF-8"))
}
