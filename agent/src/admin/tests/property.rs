//! A property test over the whole admin API: random methods, paths, query strings, headers
//! and bodies, with the owner's token, the peers' token, a wrong one or none, sent as raw
//! bytes to a real server over TCP or its unix socket, as the daemon runs it by default
//! (the owner's controls on the socket). Whatever arrives, the server answers with a status
//! (it never panics or hangs up), never with a 5xx, and nothing reaches the daemon loop (the
//! only way to change state) without the token and the channel that route needs.

use std::sync::Mutex;

use proptest::prelude::*;

use super::*;
use crate::control::{MAX_PAUSE, MIN_PAUSE};
use crate::tests::fuzz::{Budget, run, text};

/// The acceptance's count (issue 23): at least this many requests per run.
const REQUESTS: u64 = 10_000;

/// Who a request claims to be.
#[derive(Debug, Clone)]
enum Auth {
    None,
    Owner,
    Peer,
    /// `Bearer` and a token of the right shape that is not one of them.
    Wrong(String),
    /// The owner's token with one character changed.
    NearlyOwner(usize),
    /// Any header value.
    Raw(String),
}

/// Where a request is sent.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Channel {
    Tcp,
    Socket,
}

#[derive(Debug, Clone)]
struct RawRequest {
    channel: Channel,
    method: String,
    path: String,
    query: Option<String>,
    auth: Auth,
    origin: bool,
    host: Option<String>,
    body: Vec<u8>,
}

const ROUTES: &[&str] = &[
    "/pause",
    "/resume",
    "/failover",
    "/failback",
    "/abort",
    "/approve",
    "/status",
    "/vote",
    "/metrics",
    "/healthz",
    "/",
    "//pause",
    "/pause/",
    "/PAUSE",
    "/%70ause",
    "/pause%00",
    "*",
];

fn request() -> impl Strategy<Value = RawRequest> {
    let method = prop_oneof![
        4 => prop::sample::select(&["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"][..])
            .prop_map(str::to_owned),
        1 => "[A-Z]{1,10}",
    ];
    let path = prop_oneof![
        5 => prop::sample::select(ROUTES).prop_map(str::to_owned),
        1 => "/[a-zA-Z0-9/._%~-]{0,24}",
    ];
    let auth = prop_oneof![
        2 => Just(Auth::None),
        3 => Just(Auth::Owner),
        2 => Just(Auth::Peer),
        1 => "[a-zA-Z0-9_-]{43}".prop_map(Auth::Wrong),
        1 => (0usize..43).prop_map(Auth::NearlyOwner),
        1 => "[ -~]{0,40}".prop_map(Auth::Raw),
    ];
    let host = prop::option::of(prop::sample::select(
        &["localhost", "127.0.0.1:1", "evil.example", "[::1]", ""][..],
    ));
    let channel = prop::sample::select(&[Channel::Tcp, Channel::Socket][..]);
    (
        (channel, method),
        path,
        prop::option::of(text(10)),
        auth,
        prop::bool::weighted(0.1),
        host,
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(
            |((channel, method), path, query, auth, origin, host, body)| RawRequest {
                channel,
                method,
                path,
                query,
                auth,
                origin,
                host: host.map(str::to_owned),
                body,
            },
        )
}

/// A query string as it may travel in a request line: what cannot is percent-encoded.
fn in_request_line(query: &str) -> String {
    let mut out = String::new();
    for c in query.chars() {
        if c.is_ascii_graphic() && c != '#' {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

impl RawRequest {
    fn bytes(&self, owner: &AdminToken, peer: &AdminToken) -> Vec<u8> {
        let target = match &self.query {
            Some(q) => format!("{}?{}", self.path, in_request_line(q)),
            None => self.path.clone(),
        };
        let mut head = format!("{} {target} HTTP/1.1\r\n", self.method);
        if let Some(host) = &self.host {
            head.push_str(&format!("Host: {host}\r\n"));
        }
        let authorization = match &self.auth {
            Auth::None => None,
            Auth::Owner => Some(owner.bearer()),
            Auth::Peer => Some(peer.bearer()),
            Auth::Wrong(token) => Some(format!("Bearer {token}")),
            Auth::NearlyOwner(at) => {
                let mut bearer: Vec<char> = owner.bearer().chars().collect();
                let at = "Bearer ".len() + at % (bearer.len() - "Bearer ".len());
                bearer[at] = if bearer[at] == 'A' { 'B' } else { 'A' };
                Some(bearer.into_iter().collect())
            }
            Auth::Raw(value) => Some(value.clone()),
        };
        if let Some(value) = authorization {
            head.push_str(&format!("Authorization: {value}\r\n"));
        }
        if self.origin {
            head.push_str("Origin: https://attacker.example\r\n");
        }
        head.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&self.body);
        bytes
    }

    /// Whether the request carries the token, and comes on the channel, its route needs to
    /// reach the loop: the owner's token on the socket, or a peer's relayed pause or resume
    /// on TCP (which also needs a signature these requests never carry).
    fn may_change_state(&self) -> bool {
        let pause_or_resume = matches!(self.path.as_str(), "/pause" | "/resume");
        match self.channel {
            Channel::Socket => matches!(self.auth, Auth::Owner),
            Channel::Tcp => pause_or_resume && matches!(self.auth, Auth::Peer),
        }
    }
}

/// What reached the loop.
type Received = Arc<Mutex<Vec<String>>>;

/// The loop: records every request, checks a pause's end, answers as a loop with watches
/// `a` and `b` would.
fn recording_loop(mut control: mpsc::Receiver<ControlRequest>, received: Received) {
    tokio::spawn(async move {
        while let Some(req) = control.recv().await {
            let mut note = format!("{} {:?}", req.action.as_str(), req.watch);
            if let ControlAction::Pause {
                until: Some(until), ..
            } = &req.action
            {
                let ahead = until
                    .duration_since(SystemTime::now())
                    .unwrap_or(Duration::ZERO);
                // A second of slack for the time the request took to arrive.
                if ahead + Duration::from_secs(1) < MIN_PAUSE || ahead > MAX_PAUSE {
                    note = format!("OUT OF BOUNDS: pause {ahead:?} ahead");
                }
            }
            received.lock().expect("lock").push(note);
            let answer = match req.watch.as_deref() {
                None | Some("a" | "b") => Ok(ControlAnswer::default()),
                Some(w) => Err(format!("no watch named {w:?}; valid: a, b")),
            };
            let _ = req.reply.send(answer);
        }
    });
}

/// Sends `bytes` on `channel` and reads the status line's code; `None` when the server hung
/// up first.
async fn exchange(server: &Server, channel: Channel, bytes: &[u8]) -> Option<u16> {
    match channel {
        Channel::Tcp => answer(TcpStream::connect(server.addr).await.ok()?, bytes).await,
        Channel::Socket => {
            answer(
                tokio::net::UnixStream::connect(&server.socket).await.ok()?,
                bytes,
            )
            .await
        }
    }
}

async fn answer<S>(mut stream: S, bytes: &[u8]) -> Option<u16>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    stream.write_all(bytes).await.ok()?;
    let mut answer = Vec::new();
    let _ = timeout(BOUND, stream.read_to_end(&mut answer)).await.ok()?;
    let line = answer.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    line.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

#[test]
fn random_requests_never_panic_the_server_nor_change_state_without_the_token() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let owner = AdminToken::generate().expect("token");
    let peer = AdminToken::generate().expect("token");
    let received = Received::default();
    let dir = tempfile::tempdir().expect("dir");
    let server = runtime.block_on(Server::start(&owner, &peer, dir.path(), received.clone()));
    let budget = Budget {
        cases: REQUESTS,
        time: Duration::from_secs(300),
    };
    let ran = run("admin API", budget, request(), |req| {
        let before = received.lock().expect("lock").len();
        let status = runtime
            .block_on(exchange(&server, req.channel, &req.bytes(&owner, &peer)))
            .ok_or("no status line: the server hung up")?;
        let reached = received.lock().expect("lock")[before..].to_vec();
        if status >= 500 {
            return Err(format!("answered {status}"));
        }
        if !reached.is_empty() && !req.may_change_state() {
            return Err(format!("reached the loop without the token: {reached:?}"));
        }
        if !reached.is_empty() && status != 200 {
            return Err(format!(
                "reached the loop, yet answered {status}: {reached:?}"
            ));
        }
        if let Some(bad) = reached.iter().find(|r| r.starts_with("OUT OF BOUNDS")) {
            return Err(bad.clone());
        }
        Ok(!reached.is_empty())
    });
    assert_eq!(
        ran.cases, REQUESTS,
        "every request was sent within the bound"
    );
    assert!(
        ran.accepted > 0,
        "some requests were valid and reached the loop: {ran:?}"
    );
    runtime.block_on(server.stop());
}

/// The server under test, as the daemon runs it: the owner's controls on the socket.
struct Server {
    addr: SocketAddr,
    socket: std::path::PathBuf,
    task: JoinHandle<std::io::Result<()>>,
    shutdown: CancellationToken,
}

impl Server {
    async fn start(
        owner: &AdminToken,
        peer: &AdminToken,
        dir: &std::path::Path,
        received: Received,
    ) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let socket = crate::layout::socket_file(dir);
        let bound = bind_socket(&socket).expect("bind the socket");
        let (control_tx, control_rx) = mpsc::channel(4);
        recording_loop(control_rx, received);
        let state = AdminState {
            metrics: Arc::new(Metrics::new()),
            health: Arc::new(Health::new(Duration::from_secs(3600))),
            status: watch::channel(status_doc(vec![watch_status("a", "healthy")])).1,
            readiness: watch::channel(ReadinessStatus::pending()).1,
            control: control_tx,
            token: owner.clone(),
            peer_token: Some(peer.clone()),
            peers: None,
            approvals: Arc::default(),
        };
        let listeners = Listeners {
            tcp: Some(listener),
            socket: Some(bound.listener),
            socket_path: socket.clone(),
            controls: crate::config::Controls::Socket,
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(serve(
            listeners,
            state,
            shutdown.clone(),
            ServerLimits::default(),
        ));
        Server {
            addr,
            socket,
            task,
            shutdown,
        }
    }

    /// Checks that it still answers and runs, then stops it.
    async fn stop(self) {
        let healthz = b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
        for channel in [Channel::Tcp, Channel::Socket] {
            let status = exchange(&self, channel, healthz).await;
            assert_eq!(status, Some(200), "{channel:?} still answers afterwards");
        }
        assert!(!self.task.is_finished(), "the server is still running");
        self.shutdown.cancel();
        timeout(BOUND, self.task)
            .await
            .expect("stops within the bound")
            .expect("server task")
            .expect("serve");
    }
}
