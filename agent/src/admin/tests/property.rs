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
use crate::peers::Peers;
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

/// A relayed pause or resume signed as a peer signs it, in place of the random path and
/// query: by `b` (listed in `peer_keys`) or by a key nobody lists, sent now or 60 s ago.
#[derive(Debug, Clone, Copy)]
struct SignedRelay {
    pause: bool,
    by_b: bool,
    fresh: bool,
    /// Which watch: `a`, or every watch.
    watch_a: bool,
}

/// The peers that sign relays.
struct Signers {
    b: Peers,
    stranger: Peers,
}

#[derive(Debug, Clone)]
struct RawRequest {
    channel: Channel,
    relay: Option<SignedRelay>,
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
    let relay = prop::option::weighted(
        0.2,
        (
            any::<bool>(),
            prop::bool::weighted(0.8),
            prop::bool::weighted(0.8),
            any::<bool>(),
        )
            .prop_map(|(pause, by_b, fresh, watch_a)| SignedRelay {
                pause,
                by_b,
                fresh,
                watch_a,
            }),
    );
    (
        (channel, method, relay),
        path,
        prop::option::of(text(10)),
        auth,
        prop::bool::weighted(0.1),
        host,
        prop::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(
            |((channel, method, relay), path, query, auth, origin, host, body)| RawRequest {
                channel,
                relay,
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
    fn bytes(&self, owner: &AdminToken, peer: &AdminToken, signers: &Signers) -> Vec<u8> {
        let target = match (&self.relay, &self.query) {
            (Some(relay), _) => relay.path(signers),
            (None, Some(q)) => format!("{}?{}", self.path, in_request_line(q)),
            (None, None) => self.path.clone(),
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

    /// Whether the request carries what its route needs to reach the loop: the owner's token
    /// on the socket, or the peers' token with a fresh relay signed by a listed peer (on
    /// either: the socket serves every route, to whoever may open it).
    fn may_change_state(&self) -> bool {
        let signed_by_b = self
            .relay
            .is_some_and(|r| r.by_b && r.fresh && matches!(self.auth, Auth::Peer));
        let owner_on_socket = self.channel == Channel::Socket && matches!(self.auth, Auth::Owner);
        signed_by_b || owner_on_socket
    }
}

impl SignedRelay {
    /// The signed path, as the signer's relay sends it now.
    fn path(self, signers: &Signers) -> String {
        let action = if self.pause {
            ControlAction::Pause {
                reason: Some("relayed".to_owned()),
                until: Some(SystemTime::now() + Duration::from_secs(600)),
                origin: None,
            }
        } else {
            ControlAction::Resume { origin: None }
        };
        let signer = if self.by_b {
            &signers.b
        } else {
            &signers.stranger
        };
        let at = if self.fresh {
            SystemTime::now()
        } else {
            SystemTime::now() - Duration::from_secs(60)
        };
        signer.signed_relay_path(&action, self.watch_a.then_some("a"), at)
    }
}

fn signers() -> (Signers, crate::identity::PeerKeys) {
    let peer = |name: &str| {
        let (text, public) = crate::identity::Identity::generate().expect("key");
        let identity = crate::identity::Identity::from_file_text(&text).expect("key");
        let keys = crate::identity::PeerKeys::new(&BTreeMap::new());
        let peers = Peers::new(
            Vec::new(),
            Some(2),
            AdminToken::shared("x"),
            name.to_owned(),
            identity,
            keys,
        );
        (peers, public)
    };
    let ((b, b_public), (stranger, _)) = (peer("b"), peer("c"));
    let listed = crate::identity::PeerKeys::new(&BTreeMap::from([("b".to_owned(), b_public)]));
    (Signers { b, stranger }, listed)
}

/// What reached the loop.
type Received = Arc<Mutex<Vec<String>>>;

/// The end of a note of what reached the loop when the loop refused it (no such watch), which
/// the server then answers with 404.
const REFUSED: &str = " (refused by the loop)";

/// The loop: records every request, checks a pause's end, answers as a loop with watches
/// `a` and `b` would.
fn recording_loop(mut control: mpsc::Receiver<ControlRequest>, received: Received) {
    tokio::spawn(async move {
        while let Some(req) = control.recv().await {
            let relayed = match &req.action {
                ControlAction::Pause { origin, .. } | ControlAction::Resume { origin } => {
                    origin.as_deref().map(|o| format!(" relayed from {o}"))
                }
                _ => None,
            };
            let mut note = format!(
                "{} {:?}{}",
                req.action.as_str(),
                req.watch,
                relayed.unwrap_or_default()
            );
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
            let answer = match req.watch.as_deref() {
                None | Some("a" | "b") => Ok(ControlAnswer::default()),
                Some(w) => Err(format!("no watch named {w:?}; valid: a, b")),
            };
            if answer.is_err() {
                note.push_str(REFUSED);
            }
            received.lock().expect("lock").push(note);
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
    let (signers, listed) = signers();
    let server = runtime.block_on(Server::start(
        &owner,
        &peer,
        dir.path(),
        received.clone(),
        listed,
    ));
    let budget = Budget {
        cases: REQUESTS,
        time: Duration::from_secs(300),
    };
    let ran = run("admin API", budget, request(), |req| {
        let before = received.lock().expect("lock").len();
        let status = runtime
            .block_on(exchange(
                &server,
                req.channel,
                &req.bytes(&owner, &peer, &signers),
            ))
            .ok_or("no status line: the server hung up")?;
        let reached = received.lock().expect("lock")[before..].to_vec();
        if status >= 500 {
            return Err(format!("answered {status}"));
        }
        if !reached.is_empty() && !req.may_change_state() {
            return Err(format!("reached the loop without the token: {reached:?}"));
        }
        let refused = reached.iter().any(|r| r.ends_with(REFUSED));
        if !reached.is_empty() && status != if refused { 404 } else { 200 } {
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
    let received = received.lock().expect("lock").clone();
    assert!(
        received.iter().any(|r| r.ends_with("relayed from b")),
        "some signed relays reached the loop: {received:?}"
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
        listed: crate::identity::PeerKeys,
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
            peers: Some(Arc::new(Peers::new(
                Vec::new(),
                Some(2),
                peer.clone(),
                "agent-a".to_owned(),
                crate::identity::Identity::from_file_text(
                    &crate::identity::Identity::generate().expect("key").0,
                )
                .expect("key"),
                listed,
            ))),
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
