//! Paths against a scripted stand-in for Valkey on 127.0.0.1:0 (plaintext and TLS), so every
//! classification is exercised through the real connect/TLS/RESP code without a server
//! binary. The end-to-end suites in `tests/` run the same paths against real valkey-server.

use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::{
    Connection, Connections, IamTokenSource, Prober, ResolverSettings, Secret, TlsSettings,
};

/// What the stand-in does with one command.
enum Reply {
    /// Send these bytes.
    Raw(&'static str),
    /// Never answer, like a SIGSTOP'd server.
    Stall,
    /// Close the connection.
    Close,
    /// Behave like a healthy server.
    Normal,
    /// Answer with a bulk string of this many bytes, written in chunks as it would be
    /// streamed, never held whole.
    Bulk(usize),
    /// Send these bytes (built at run time).
    Owned(String),
}

type Script = Arc<dyn Fn(&[String]) -> Reply + Send + Sync>;

/// Every command the stand-in received, per connection order.
type Received = Arc<Mutex<Vec<Vec<String>>>>;

struct Server {
    address: SocketAddr,
    received: Received,
    /// Connections accepted so far.
    accepted: Arc<AtomicUsize>,
}

impl Server {
    fn commands(&self, name: &str) -> Vec<Vec<String>> {
        self.received
            .lock()
            .expect("lock")
            .iter()
            .filter(|cmd| cmd[0].eq_ignore_ascii_case(name))
            .cloned()
            .collect()
    }
}

async fn server(script: impl Fn(&[String]) -> Reply + Send + Sync + 'static) -> Server {
    serve(Arc::new(script), None).await
}

async fn serve(script: Script, tls: Option<tokio_rustls::TlsAcceptor>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let received = Received::default();
    let store = Arc::new(Mutex::new(HashMap::<String, String>::new()));
    let log = received.clone();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (script, log, store) = (script.clone(), log.clone(), store.clone());
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    None => session(tcp, script, log, store).await,
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            session(stream, script, log, store).await;
                        }
                    }
                }
            });
        }
    });
    Server {
        address,
        received,
        accepted,
    }
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    script: Script,
    log: Received,
    store: Arc<Mutex<HashMap<String, String>>>,
) {
    let mut stream = BufReader::new(stream);
    while let Some(cmd) = read_command(&mut stream).await {
        log.lock().expect("lock").push(cmd.clone());
        let reply = match script(&cmd) {
            Reply::Raw(bytes) => bytes.to_owned(),
            Reply::Owned(bytes) => bytes,
            Reply::Stall => return std::future::pending().await,
            Reply::Close => return,
            Reply::Normal => normal_reply(&cmd, &store),
            Reply::Bulk(len) => {
                if write_bulk(&mut stream, len).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if stream.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn write_bulk<S: AsyncWrite + Unpin>(stream: &mut S, len: usize) -> io::Result<()> {
    let chunk = [b'x'; 16 * 1024];
    stream.write_all(format!("${len}\r\n").as_bytes()).await?;
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).await?;
        left -= n;
    }
    stream.write_all(b"\r\n").await
}

fn normal_reply(cmd: &[String], store: &Mutex<HashMap<String, String>>) -> String {
    let mut store = store.lock().expect("lock");
    match cmd[0].to_ascii_uppercase().as_str() {
        "PING" => "+PONG\r\n".to_owned(),
        "AUTH" => "+OK\r\n".to_owned(),
        "SET" => {
            store.insert(cmd[1].clone(), cmd[2].clone());
            "+OK\r\n".to_owned()
        }
        "GET" => match store.get(&cmd[1]) {
            Some(v) => format!("${}\r\n{v}\r\n", v.len()),
            None => "$-1\r\n".to_owned(),
        },
        _ => "-ERR unknown command\r\n".to_owned(),
    }
}

/// Reads one RESP array of bulk strings (what clients send).
async fn read_command<S: AsyncRead + Unpin>(stream: &mut BufReader<S>) -> Option<Vec<String>> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let count: usize = line.trim_end().strip_prefix('*')?.parse().ok()?;
    let mut args = Vec::with_capacity(count);
    for _ in 0..count {
        line.clear();
        stream.read_line(&mut line).await.ok()?;
        let len: usize = line.trim_end().strip_prefix('$')?.parse().ok()?;
        let mut arg = vec![0; len + 2];
        stream.read_exact(&mut arg).await.ok()?;
        arg.truncate(len);
        args.push(String::from_utf8(arg).ok()?);
    }
    Some(args)
}

fn prober() -> Prober {
    // Every test uses IP literals, which never reach a name server.
    Prober::new(&ResolverSettings {
        nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
    })
    .expect("prober")
}

fn spec(address: SocketAddr) -> ProbeSpec {
    ProbeSpec {
        watch: "sessions".to_owned(),
        record: "127.0.0.1".to_owned(),
        endpoint: "127.0.0.1".to_owned(),
        port: address.port(),
        reader_port: None,
        timeout: Duration::from_secs(2),
        handshake_interval: Duration::from_secs(30),
        key_prefix: "valkey-dr:probe:".to_owned(),
        agent_id: "agent-1".to_owned(),
        tls: None,
        auth: Auth::None,
    }
}

/// The steps of a path on a fresh plaintext connection without credentials.
const PLAINTEXT_FRESH: [Step; 5] = [
    Step::Resolve,
    Step::Connect,
    Step::Ping,
    Step::Set,
    Step::Get,
];

fn steps(path: &PathResult) -> Vec<Step> {
    path.steps.iter().map(|s| s.step).collect()
}

fn only_error(observation: &Observation) -> ProbeError {
    let errors: Vec<_> = observation
        .paths
        .iter()
        .map(|p| p.error.clone().expect("every path fails"))
        .collect();
    assert!(
        errors
            .windows(2)
            .all(|w| (w[0].kind, w[0].step) == (w[1].kind, w[1].step)),
        "{errors:?}"
    );
    errors[0].clone()
}

#[tokio::test]
async fn a_healthy_round_runs_every_step_on_every_path() {
    let server = server(|_| Reply::Normal).await;
    let observation = prober().round(&spec(server.address)).await;

    assert_eq!(observation.watch, "sessions");
    assert_eq!(observation.expected_target, "127.0.0.1");
    let kinds: Vec<_> = observation.paths.iter().map(|p| p.path).collect();
    assert_eq!(kinds, [PathKind::Dns, PathKind::Direct]);
    for path in &observation.paths {
        assert!(path.ok(), "{path:?}");
        assert_eq!(steps(path), PLAINTEXT_FRESH);
        assert_eq!(path.address, Some(server.address));
        assert_eq!(path.target.as_deref(), Some("127.0.0.1"));
        assert!(path.latency >= path.steps.iter().map(|s| s.duration).sum::<Duration>());
    }
    assert_eq!(observation.drift(), None);

    let sets = server.commands("SET");
    assert_eq!(sets.len(), 2);
    for set in &sets {
        assert!(set[1].starts_with("valkey-dr:probe:agent-1:"), "{set:?}");
        assert_eq!(set[3..], ["EX".to_owned(), "60".to_owned()]);
    }
    assert_ne!(sets[0][1], sets[1][1], "each path writes its own key");
    assert_ne!(sets[0][2], sets[1][2], "each path writes its own value");
    assert!(
        server.commands("CLIENT").is_empty(),
        "nothing untimed is sent"
    );
}

#[tokio::test]
async fn the_reader_path_uses_the_reader_port() {
    let primary = server(|_| Reply::Normal).await;
    let reader = server(|_| Reply::Normal).await;
    let mut spec = spec(primary.address);
    spec.reader_port = Some(reader.address.port());
    let observation = prober().round(&spec).await;
    let kinds: Vec<_> = observation.paths.iter().map(|p| p.path).collect();
    assert_eq!(kinds, [PathKind::Dns, PathKind::Direct, PathKind::Reader]);
    let reader_path = observation.path(PathKind::Reader).expect("reader");
    assert!(reader_path.ok(), "{reader_path:?}");
    assert_eq!(reader_path.address, Some(reader.address));
    assert_eq!(reader.commands("GET").len(), 1);
}

#[tokio::test]
async fn password_auth_is_sent_and_timed() {
    let server = server(|_| Reply::Normal).await;
    let mut spec = spec(server.address);
    spec.auth = Auth::Password {
        username: Some("probe".to_owned()),
        password: Secret::new("s3cret-pass"),
    };
    let observation = prober().round(&spec).await;
    for path in &observation.paths {
        assert!(path.ok(), "{path:?}");
        assert_eq!(
            steps(path),
            [
                Step::Resolve,
                Step::Connect,
                Step::Auth,
                Step::Ping,
                Step::Set,
                Step::Get
            ]
        );
    }
    assert_eq!(server.commands("AUTH")[0], ["AUTH", "probe", "s3cret-pass"]);
}

#[tokio::test]
async fn a_wrong_password_is_auth_and_never_shows_the_password() {
    let server = server(|cmd| match cmd[0].as_str() {
        "AUTH" => Reply::Raw("-WRONGPASS invalid username-password pair s3cret-pass\r\n"),
        _ => Reply::Normal,
    })
    .await;
    let mut spec = spec(server.address);
    spec.auth = Auth::Password {
        username: None,
        password: Secret::new("s3cret-pass"),
    };
    let observation = prober().round(&spec).await;
    let err = only_error(&observation);
    assert_eq!((err.kind, err.step), (ErrorKind::Auth, Step::Auth));
    assert_eq!(err.message, "AUTH rejected: WRONGPASS");
    let json = format!("{observation:?}");
    assert!(!json.contains("s3cret-pass"), "{json}");
    assert_eq!(server.commands("AUTH")[0], ["AUTH", "s3cret-pass"]);
}

#[tokio::test]
async fn noauth_without_credentials_is_auth() {
    let server = server(|_| Reply::Raw("-NOAUTH Authentication required.\r\n")).await;
    let err = only_error(&prober().round(&spec(server.address)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Auth, Step::Ping));
}

#[tokio::test]
async fn iam_tokens_authenticate_as_the_user() {
    let server = server(|_| Reply::Normal).await;
    let mut spec = spec(server.address);
    let credentials = Credentials::new("AKIDEXAMPLE", "secretkey", None, None, "test");
    spec.auth = Auth::Iam {
        username: "probe".to_owned(),
        tokens: Arc::new(IamTokenSource::new(
            "app-sessions",
            "probe",
            "us-east-1",
            SharedCredentialsProvider::new(credentials),
        )),
    };
    let observation = prober().round(&spec).await;
    assert!(
        observation.paths.iter().all(PathResult::ok),
        "{observation:?}"
    );
    let auths = server.commands("AUTH");
    assert_eq!(auths.len(), 2);
    assert_eq!(auths[0][1], "probe");
    assert!(
        auths[0][2].starts_with("app-sessions/?Action=connect&User=probe&"),
        "{auths:?}"
    );
    assert_eq!(auths[0][2], auths[1][2], "both paths share one token");
}

#[tokio::test]
async fn write_refusals_are_classified() {
    for (reply, kind) in [
        (
            "-OOM command not allowed when used memory > 'maxmemory'.\r\n",
            ErrorKind::Oom,
        ),
        (
            "-READONLY You can't write against a read only replica.\r\n",
            ErrorKind::Readonly,
        ),
        ("-NOPERM no permissions on this key\r\n", ErrorKind::Auth),
        (
            "-LOADING loading the dataset in memory\r\n",
            ErrorKind::Protocol,
        ),
    ] {
        let server = server(move |cmd| match cmd[0].as_str() {
            "SET" => Reply::Raw(reply),
            _ => Reply::Normal,
        })
        .await;
        let err = only_error(&prober().round(&spec(server.address)).await);
        assert_eq!((err.kind, err.step), (kind, Step::Set), "{reply}");
    }
}

#[tokio::test]
async fn a_different_or_missing_value_is_a_mismatch() {
    for reply in ["$5\r\nstale\r\n", "$-1\r\n"] {
        let server = server(move |cmd| match cmd[0].as_str() {
            "GET" => Reply::Raw(reply),
            _ => Reply::Normal,
        })
        .await;
        let err = only_error(&prober().round(&spec(server.address)).await);
        assert_eq!(
            (err.kind, err.step),
            (ErrorKind::ValueMismatch, Step::Get),
            "{reply}"
        );
    }
}

#[tokio::test]
async fn nonsense_replies_and_broken_connections_are_protocol() {
    for reply in [
        Reply::Raw("+PANG\r\n"),
        Reply::Raw("?what\r\n"),
        Reply::Close,
    ] {
        let reply = Arc::new(reply);
        let server = server(move |_| match *reply {
            Reply::Raw(bytes) => Reply::Raw(bytes),
            Reply::Close => Reply::Close,
            _ => Reply::Normal,
        })
        .await;
        let err = only_error(&prober().round(&spec(server.address)).await);
        assert_eq!(
            (err.kind, err.step),
            (ErrorKind::Protocol, Step::Ping),
            "{err}"
        );
    }
}

#[tokio::test]
async fn a_stalled_server_times_out_at_the_deadline() {
    let server = server(|_| Reply::Stall).await;
    let mut spec = spec(server.address);
    spec.timeout = Duration::from_millis(300);
    let begin = Instant::now();
    let observation = prober().round(&spec).await;
    let elapsed = begin.elapsed();
    let err = only_error(&observation);
    assert_eq!((err.kind, err.step), (ErrorKind::Timeout, Step::Ping));
    assert!(elapsed >= spec.timeout, "{elapsed:?}");
    // The overshoot is a millisecond or two on an idle host; the margin is for a loaded
    // 2-core CI machine, not for the code.
    assert!(
        elapsed < spec.timeout + Duration::from_millis(200),
        "{elapsed:?}"
    );
    for path in &observation.paths {
        assert!(path.latency < spec.timeout + Duration::from_millis(200));
    }
}

#[tokio::test]
async fn a_stall_after_ping_times_out_at_the_same_deadline() {
    let server = server(|cmd| match cmd[0].as_str() {
        "SET" => Reply::Stall,
        _ => Reply::Normal,
    })
    .await;
    let mut spec = spec(server.address);
    spec.timeout = Duration::from_millis(300);
    let begin = Instant::now();
    let err = only_error(&prober().round(&spec).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Timeout, Step::Set));
    assert!(begin.elapsed() < spec.timeout + Duration::from_millis(200));
}

#[tokio::test]
async fn a_closed_port_is_refused() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let observation = prober().round(&spec(address)).await;
    let err = only_error(&observation);
    assert_eq!(
        (err.kind, err.step),
        (ErrorKind::ConnectRefused, Step::Connect)
    );
    assert_eq!(steps(&observation.paths[0]), [Step::Resolve, Step::Connect]);
    assert_eq!(observation.paths[0].address, Some(address));
}

struct TestPki {
    ca_file: tempfile::NamedTempFile,
    acceptor: tokio_rustls::TlsAcceptor,
}

/// A CA and a server certificate it signed for `names`.
fn pki(names: &[&str]) -> TestPki {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("CA");
    let key = rcgen::KeyPair::generate().expect("server key");
    let params =
        rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
            .expect("server params");
    let cert = params.signed_by(&key, &ca).expect("server cert");

    let mut ca_file = tempfile::NamedTempFile::new().expect("CA file");
    ca_file.write_all(ca.pem().as_bytes()).expect("write CA");
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
    .expect("server config");
    TestPki {
        ca_file,
        acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
    }
}

fn tls_spec(address: SocketAddr, config: Arc<rustls::ClientConfig>) -> ProbeSpec {
    let mut spec = spec(address);
    spec.tls = Some(TlsSettings {
        client_config: config,
        server_name: TlsServerName::Endpoint,
    });
    spec
}

#[tokio::test]
async fn tls_paths_verify_the_certificate() {
    let pki = pki(&["127.0.0.1"]);
    let server = serve(Arc::new(|_: &[String]| Reply::Normal), Some(pki.acceptor)).await;
    let config = crate::client_config(Some(pki.ca_file.path()), false).expect("client config");
    let observation = prober().round(&tls_spec(server.address, config)).await;
    for path in &observation.paths {
        assert!(path.ok(), "{path:?}");
        assert_eq!(
            steps(path),
            [
                Step::Resolve,
                Step::Connect,
                Step::Tls,
                Step::Ping,
                Step::Set,
                Step::Get
            ]
        );
    }
    let dns = observation.path(PathKind::Dns).expect("dns path");
    assert_eq!(dns.record_name_verified, Some(true));
    let direct = observation.path(PathKind::Direct).expect("direct path");
    assert_eq!(direct.record_name_verified, None);
}

#[test]
fn certificate_names_checks_the_subject_names() {
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = rcgen::CertificateParams::new(vec![
        "app-sessions-x.serverless.use1.cache.amazonaws.com".to_owned(),
        "*.app.internal".to_owned(),
    ])
    .expect("params")
    .self_signed(&key)
    .expect("cert");
    let cert = cert.der();
    assert!(certificate_names(
        cert,
        "app-sessions-x.serverless.use1.cache.amazonaws.com"
    ));
    assert!(certificate_names(cert, "cache.app.internal."));
    assert!(!certificate_names(cert, "cache.other.internal."));
    assert!(!certificate_names(cert, "not a name"));
    assert!(!certificate_names(
        &CertificateDer::from(vec![1, 2, 3]),
        "cache.app.internal"
    ));
}

#[tokio::test]
async fn a_certificate_for_another_name_is_tls() {
    let pki = pki(&["app-sessions.serverless.use1.cache.amazonaws.com"]);
    let server = serve(Arc::new(|_: &[String]| Reply::Normal), Some(pki.acceptor)).await;
    let config = crate::client_config(Some(pki.ca_file.path()), false).expect("client config");
    let err = only_error(&prober().round(&tls_spec(server.address, config)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Tls, Step::Tls), "{err}");
}

#[tokio::test]
async fn an_unknown_ca_is_tls() {
    let pki = pki(&["127.0.0.1"]);
    let other = self::pki(&["127.0.0.1"]);
    let server = serve(Arc::new(|_: &[String]| Reply::Normal), Some(pki.acceptor)).await;
    let config = crate::client_config(Some(other.ca_file.path()), false).expect("client config");
    let err = only_error(&prober().round(&tls_spec(server.address, config)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Tls, Step::Tls), "{err}");
}

#[tokio::test]
async fn insecure_skip_verify_accepts_any_certificate() {
    let pki = pki(&["somewhere-else.example"]);
    let server = serve(Arc::new(|_: &[String]| Reply::Normal), Some(pki.acceptor)).await;
    let config = crate::client_config(None, true).expect("client config");
    let observation = prober().round(&tls_spec(server.address, config)).await;
    assert!(
        observation.paths.iter().all(PathResult::ok),
        "{observation:?}"
    );
}

#[tokio::test]
async fn a_silent_tls_server_times_out_in_the_handshake() {
    // Accepts connections and never reads or writes, like a front whose process is stopped.
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let config = crate::client_config(None, true).expect("client config");
    let mut spec = tls_spec(address, config);
    spec.timeout = Duration::from_millis(200);
    let begin = Instant::now();
    let err = only_error(&prober().round(&spec).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Timeout, Step::Tls));
    assert!(begin.elapsed() < spec.timeout + Duration::from_millis(200));
}

#[test]
fn the_dns_path_checks_the_configured_name() {
    let record = "cache.app.internal.";
    let target = "app-sessions-x.serverless.use1.cache.amazonaws.com";
    let endpoint = "app-sessions-x.serverless.use1.cache.amazonaws.com.";
    assert_eq!(
        tls_server_name(PathKind::Dns, TlsServerName::Endpoint, record, target),
        target
    );
    assert_eq!(
        tls_server_name(PathKind::Dns, TlsServerName::Record, record, target),
        "cache.app.internal"
    );
    for kind in [PathKind::Direct, PathKind::Reader] {
        for setting in [TlsServerName::Endpoint, TlsServerName::Record] {
            assert_eq!(
                tls_server_name(kind, setting, record, endpoint),
                without_root(endpoint)
            );
        }
    }
}

#[test]
fn server_error_codes_map_to_kinds() {
    assert_eq!(server_error_kind("WRONGPASS"), ErrorKind::Auth);
    assert_eq!(server_error_kind("NOAUTH"), ErrorKind::Auth);
    assert_eq!(server_error_kind("NOPERM"), ErrorKind::Auth);
    assert_eq!(server_error_kind("OOM"), ErrorKind::Oom);
    assert_eq!(server_error_kind("READONLY"), ErrorKind::Readonly);
    assert_eq!(server_error_kind("ERR"), ErrorKind::Protocol);
    assert_eq!(server_error_kind("MASTERDOWN"), ErrorKind::Protocol);
}

#[test]
fn connect_errors_map_to_kinds() {
    let address = SocketAddr::from(([10, 0, 0, 1], 6379));
    let kind = |k: io::ErrorKind| classify_connect_error(address, &io::Error::from(k)).kind;
    assert_eq!(
        kind(io::ErrorKind::ConnectionRefused),
        ErrorKind::ConnectRefused
    );
    assert_eq!(kind(io::ErrorKind::TimedOut), ErrorKind::ConnectTimeout);
    assert_eq!(
        kind(io::ErrorKind::HostUnreachable),
        ErrorKind::ConnectTimeout
    );
    assert_eq!(
        kind(io::ErrorKind::NetworkUnreachable),
        ErrorKind::ConnectTimeout
    );
    assert_eq!(
        kind(io::ErrorKind::ConnectionReset),
        ErrorKind::ConnectRefused
    );
    // The agent's own host out of descriptors, ports or buffers is never the cache's fault.
    for errno in [
        libc::EMFILE,
        libc::ENFILE,
        libc::EADDRNOTAVAIL,
        libc::ENOBUFS,
        libc::ENOMEM,
    ] {
        let err = classify_connect_error(address, &io::Error::from_raw_os_error(errno));
        assert_eq!((err.kind, err.step), (ErrorKind::Local, Step::Connect));
        assert!(
            err.message.starts_with("10.0.0.1:6379: the agent's host"),
            "{}",
            err.message
        );
    }
    let emfile = classify_connect_error(address, &io::Error::from_raw_os_error(libc::EMFILE));
    assert!(emfile.message.contains("(EMFILE)") && emfile.message.contains("LimitNOFILE"));
    assert_eq!(
        classify_connect_error(address, &io::Error::from_raw_os_error(libc::ECONNREFUSED)).kind,
        ErrorKind::ConnectRefused
    );
}

#[test]
fn tls_errors_map_to_kinds() {
    let bad_cert = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer),
    );
    assert_eq!(classify_tls_error("c", &bad_cert).kind, ErrorKind::Tls);
    let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
    assert_eq!(classify_tls_error("c", &eof).kind, ErrorKind::Protocol);
    // An alert from a failing server is not a setup problem: it must count as an outage.
    let alert = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::AlertReceived(rustls::AlertDescription::InternalError),
    );
    assert_eq!(classify_tls_error("c", &alert).kind, ErrorKind::Protocol);
    let no_cert = io::Error::new(
        io::ErrorKind::InvalidData,
        rustls::Error::NoCertificatesPresented,
    );
    assert_eq!(classify_tls_error("c", &no_cert).kind, ErrorKind::Tls);
}

#[test]
fn plain_err_on_auth_is_auth_only_when_it_is_about_credentials() {
    assert!(is_auth_message(
        "AUTH <password> called without any password configured for the default user"
    ));
    assert!(is_auth_message(
        "invalid username-password pair or user is disabled."
    ));
    assert!(!is_auth_message("max number of clients reached"));
}

#[test]
fn deadlines_map_to_the_step_kind() {
    let t = Duration::from_secs(2);
    assert_eq!(deadline_error(Step::Resolve, t).kind, ErrorKind::DnsTimeout);
    assert_eq!(
        deadline_error(Step::Connect, t).kind,
        ErrorKind::ConnectTimeout
    );
    for step in [Step::Tls, Step::Auth, Step::Ping, Step::Set, Step::Get] {
        assert_eq!(deadline_error(step, t).kind, ErrorKind::Timeout);
    }
}

#[tokio::test]
async fn replies_in_messages_are_cut_and_escaped() {
    // Each reply, as a wire read it, described for a message.
    async fn described(reply: &[u8]) -> String {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let mut wire = Wire::new(client);
        server.write_all(reply).await.unwrap();
        let frame = wire.frame().await.expect("a reply");
        describe(&wire, &frame)
    }
    let long = format!("$1000\r\n{}\r\n", "x".repeat(1000));
    assert_eq!(
        described(long.as_bytes()).await,
        format!("a bulk string \"{}… (1000 bytes)\"", "x".repeat(256))
    );
    assert_eq!(
        described(b"+\x1b]0;pwned\x07\x1b[2Jok\r\n").await,
        "a simple string \"\\x1b]0;pwned\\x07\\x1b[2Jok\""
    );
    assert_eq!(
        described(b"$2\r\n\xff\xfe\r\n").await,
        "a bulk string \"\u{fffd}\u{fffd}\""
    );
    assert_eq!(described(b":7\r\n").await, "an integer 7");
    assert_eq!(described(b"%1\r\n").await, "a RESP3 value");
}

#[tokio::test]
async fn server_error_text_is_cut_and_escaped() {
    let reply = format!("-ERR \x1b[31mred\x1b[0m {}\r\n", "y".repeat(10 * 1024));
    let server = server(move |cmd| match cmd[0].as_str() {
        "PING" => Reply::Owned(reply.clone()),
        _ => Reply::Normal,
    })
    .await;
    let err = only_error(&prober().round(&spec(server.address)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::Protocol, Step::Ping));
    assert!(!err.message.contains('\x1b'), "{:?}", err.message);
    assert!(
        err.message
            .starts_with("server replied ERR \\x1b[31mred\\x1b[0m yyy"),
        "{:?}",
        err.message
    );
    assert!(err.message.ends_with(" bytes)"), "{:?}", err.message);
    assert!(err.message.len() < 400, "{} bytes", err.message.len());
}

#[tokio::test]
async fn a_mismatched_value_is_shown_escaped() {
    let server = server(|cmd| match cmd[0].as_str() {
        "GET" => Reply::Raw("$8\r\n\x1b[2Jgone\r\n"),
        _ => Reply::Normal,
    })
    .await;
    let err = only_error(&prober().round(&spec(server.address)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::ValueMismatch, Step::Get));
    assert!(
        err.message.ends_with("got \"\\x1b[2Jgone\""),
        "{:?}",
        err.message
    );
}

#[tokio::test]
async fn a_huge_reply_is_cut_off_at_the_cap_as_protocol() {
    let server = server(|cmd| match cmd[0].as_str() {
        "GET" => Reply::Bulk(100 * 1024 * 1024),
        _ => Reply::Normal,
    })
    .await;
    let begin = Instant::now();
    let observation = prober().round(&spec(server.address)).await;
    let err = only_error(&observation);
    assert_eq!(
        (err.kind, err.step),
        (ErrorKind::Protocol, Step::Get),
        "{err}"
    );
    assert!(err.message.contains("exceeded 64 KiB"), "{:?}", err.message);
    // Cut off, not read to the end and not left to the deadline.
    assert!(
        begin.elapsed() < Duration::from_secs(1),
        "{:?}",
        begin.elapsed()
    );
}

#[tokio::test]
async fn a_reply_under_the_cap_is_read_whole() {
    // 60 KiB is far more than a probe needs but within the cap: it is read and compared.
    let server = server(|cmd| match cmd[0].as_str() {
        "GET" => Reply::Bulk(60 * 1024),
        _ => Reply::Normal,
    })
    .await;
    let err = only_error(&prober().round(&spec(server.address)).await);
    assert_eq!((err.kind, err.step), (ErrorKind::ValueMismatch, Step::Get));
    assert!(
        err.message.ends_with("… (61440 bytes)\""),
        "{:?}",
        err.message
    );
}

#[tokio::test]
async fn the_cap_holds_through_tls() {
    let pki = pki(&["127.0.0.1"]);
    let server = serve(
        Arc::new(|cmd: &[String]| match cmd[0].as_str() {
            "GET" => Reply::Bulk(10 * 1024 * 1024),
            _ => Reply::Normal,
        }),
        Some(pki.acceptor.clone()),
    )
    .await;
    let config = crate::client_config(Some(pki.ca_file.path()), false).expect("client config");
    let err = only_error(&prober().round(&tls_spec(server.address, config)).await);
    assert_eq!(
        (err.kind, err.step),
        (ErrorKind::Protocol, Step::Get),
        "{err}"
    );
    assert!(err.message.contains("exceeded 64 KiB"), "{:?}", err.message);
}

#[tokio::test]
async fn rounds_can_be_spawned() {
    fn assert_send<T: Send>(_: &T) {}
    let prober = prober();
    let spec = spec(SocketAddr::from(([127, 0, 0, 1], 1)));
    assert_send(&prober.round(&spec));
}

/// Replies normally, except `failing` (counted from 1, over every connection) of the commands
/// named `name`, which get `reply`.
fn failing_calls(
    name: &'static str,
    failing: std::ops::RangeInclusive<usize>,
    reply: fn() -> Reply,
) -> impl Fn(&[String]) -> Reply + Send + Sync + 'static {
    let seen = AtomicUsize::new(0);
    move |cmd: &[String]| {
        if cmd[0].eq_ignore_ascii_case(name) {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if failing.contains(&n) {
                return reply();
            }
        }
        Reply::Normal
    }
}

fn connections(observation: &Observation) -> Vec<Connection> {
    observation.paths.iter().map(|p| p.connection).collect()
}

#[tokio::test]
async fn a_kept_connection_serves_later_rounds_without_a_new_handshake() {
    let pki = pki(&["127.0.0.1"]);
    let server = serve(
        Arc::new(|_: &[String]| Reply::Normal),
        Some(pki.acceptor.clone()),
    )
    .await;
    let config = crate::client_config(Some(pki.ca_file.path()), false).expect("client config");
    let spec = tls_spec(server.address, config);
    let prober = prober();
    let mut kept = Connections::default();

    let first = prober.round_kept(&spec, &mut kept).await;
    assert_eq!(connections(&first), [Connection::First, Connection::First]);
    assert!(
        first.paths.iter().all(|p| steps(p).contains(&Step::Tls)),
        "{first:?}"
    );
    assert_eq!(kept.open(), 2);
    for _ in 0..3 {
        let again = prober.round_kept(&spec, &mut kept).await;
        for path in &again.paths {
            assert!(path.ok(), "{path:?}");
            assert_eq!(path.connection, Connection::Reused);
            assert_eq!(
                steps(path),
                [Step::Resolve, Step::Ping, Step::Set, Step::Get]
            );
            assert!(
                path.cert_expiry.is_some(),
                "the kept handshake's certificate still shows"
            );
        }
    }
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "one connection per path"
    );
    assert_eq!(
        server.commands("SET").len(),
        8,
        "every round writes on every path"
    );

    // A one-shot round never touches (or keeps) a connection.
    let once = prober.round(&spec).await;
    assert_eq!(
        connections(&once),
        [Connection::OneShot, Connection::OneShot]
    );
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    drop(kept);
}

#[tokio::test]
async fn a_kept_connection_the_server_closes_is_replaced_in_the_same_round() {
    // PINGs 3 and 4 (the second round's, one per path) are answered by closing the connection.
    let server = server(failing_calls("PING", 3..=4, || Reply::Close)).await;
    let spec = spec(server.address);
    let prober = prober();
    let mut kept = Connections::default();
    assert!(
        prober
            .round_kept(&spec, &mut kept)
            .await
            .paths
            .iter()
            .all(PathResult::ok)
    );

    let second = prober.round_kept(&spec, &mut kept).await;
    for path in &second.paths {
        assert!(path.ok(), "a dead connection is not a dead cache: {path:?}");
        assert_eq!(path.connection, Connection::Retry);
        assert_eq!(
            steps(path),
            PLAINTEXT_FRESH,
            "the result is the fresh connection's alone"
        );
    }
    assert_eq!(server.accepted.load(Ordering::SeqCst), 4);
    let third = prober.round_kept(&spec, &mut kept).await;
    assert_eq!(
        connections(&third),
        [Connection::Reused, Connection::Reused]
    );
}

#[tokio::test]
async fn a_failure_on_the_kept_and_the_fresh_connection_fails_the_path_and_reconnects_next() {
    // Round 2's SETs fail on the kept connections (3, 4) and on the fresh ones (5, 6).
    let server = server(failing_calls("SET", 3..=6, || {
        Reply::Raw("-ERR broken\r\n")
    }))
    .await;
    let spec = spec(server.address);
    let prober = prober();
    let mut kept = Connections::default();
    prober.round_kept(&spec, &mut kept).await;

    let failed = prober.round_kept(&spec, &mut kept).await;
    assert_eq!(only_error(&failed).step, Step::Set);
    assert_eq!(connections(&failed), [Connection::Retry, Connection::Retry]);
    assert_eq!(kept.open(), 0, "an error keeps nothing");

    let next = prober.round_kept(&spec, &mut kept).await;
    assert!(next.paths.iter().all(PathResult::ok), "{next:?}");
    assert_eq!(
        connections(&next),
        [Connection::AfterError, Connection::AfterError]
    );
}

#[tokio::test]
async fn a_kept_connection_is_replaced_after_handshake_interval_and_on_a_new_target() {
    let first = server(|_| Reply::Normal).await;
    let other = server(|_| Reply::Normal).await;
    let mut spec = spec(first.address);
    spec.handshake_interval = Duration::from_millis(50);
    let prober = prober();
    let mut kept = Connections::default();
    prober.round_kept(&spec, &mut kept).await;
    assert_eq!(
        connections(&prober.round_kept(&spec, &mut kept).await),
        [Connection::Reused, Connection::Reused]
    );
    tokio::time::sleep(Duration::from_millis(60)).await;
    let renewed = prober.round_kept(&spec, &mut kept).await;
    assert_eq!(
        connections(&renewed),
        [Connection::Interval, Connection::Interval]
    );
    assert!(
        renewed
            .paths
            .iter()
            .all(|p| steps(p).contains(&Step::Connect))
    );

    // The same name now reaches another address: a fresh connection goes there.
    spec.port = other.address.port();
    spec.handshake_interval = Duration::from_secs(30);
    let moved = prober.round_kept(&spec, &mut kept).await;
    assert_eq!(
        connections(&moved),
        [Connection::TargetChanged, Connection::TargetChanged]
    );
    assert!(moved.paths.iter().all(|p| p.address == Some(other.address)));
    assert_eq!(other.commands("SET").len(), 2);
}
