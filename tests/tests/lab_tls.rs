//! The lab's TLS fronts are as strict as ElastiCache Serverless endpoints: the certificate
//! chain they present, and the IAM auth tokens they verify. Real valkey-servers, real TLS,
//! one lab per test.

mod support;

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use rustls::pki_types::{CertificateDer, ServerName};
use support::{TestLab, check};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use valkey_dr_lab::{
    CacheAuth, CacheInfo, CacheSpec, CertProfile, LAB_AWS_ENV, PRIMARY_CACHE, PRIMARY_REGION, Role,
    SPARE_CACHE,
};
use valkey_dr_probes::IamSigner;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
use x509_parser::public_key::PublicKey;

/// Every network step of these tests is bounded by this.
const STEP: Duration = Duration::from_secs(10);

const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";

fn primary(lab: &TestLab) -> CacheInfo {
    lab.lab
        .info()
        .cache(PRIMARY_CACHE)
        .expect("primary")
        .clone()
}

/// A TLS connection to the cache's front, verified the way the agent's probes verify it: the
/// probe crate's own client configuration (ring), trusting `ca.pem` alone.
async fn connect(lab: &TestLab, cache: &CacheInfo) -> TlsStream<TcpStream> {
    let config = valkey_dr_probes::client_config(Some(&lab.lab.info().ca_file), false)
        .expect("client config from ca.pem");
    let tcp = timeout(STEP, TcpStream::connect(cache.address))
        .await
        .expect("connect in time")
        .expect("connect");
    let name = ServerName::try_from(cache.endpoint.clone()).expect("endpoint is a DNS name");
    timeout(STEP, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("the chain verifies against ca.pem")
}

fn peer_chain(stream: &TlsStream<TcpStream>) -> Vec<CertificateDer<'static>> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .expect("the server sent certificates")
        .iter()
        .map(|c| c.clone().into_owned())
        .collect()
}

/// (key algorithm, key bits, DNS SANs, is a CA) of a certificate.
fn describe(der: &CertificateDer<'_>) -> (&'static str, usize, Vec<String>, bool) {
    let (_, cert) = X509Certificate::from_der(der.as_ref()).expect("parses as X.509");
    let key = cert.public_key().parsed().expect("public key parses");
    let kind = match key {
        PublicKey::RSA(_) => "rsa",
        PublicKey::EC(_) => "ec",
        _ => "other",
    };
    let sans = cert
        .subject_alternative_name()
        .expect("SAN extension is valid")
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(|name| match name {
                    GeneralName::DNSName(dns) => dns.to_string(),
                    other => format!("{other:?}"),
                })
                .collect()
        })
        .unwrap_or_default();
    (kind, key.key_size(), sans, cert.is_ca())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_present_an_rsa_leaf_and_intermediate_by_default() {
    let lab = TestLab::start().await;
    let primary = primary(&lab);
    let stream = connect(&lab, &primary).await;
    let chain = peer_chain(&stream);
    assert_eq!(chain.len(), 2, "leaf and intermediate");
    let (kind, bits, sans, ca) = describe(&chain[0]);
    assert_eq!((kind, bits, ca), ("rsa", 2048, false), "the leaf");
    assert_eq!(
        sans,
        vec![primary.endpoint.clone()],
        "the endpoint name only"
    );
    let (kind, bits, sans, ca) = describe(&chain[1]);
    assert_eq!((kind, bits, ca), ("rsa", 2048, true), "the intermediate");
    assert!(sans.is_empty());
    // ca.pem holds the root alone: the intermediate comes from the server or not at all.
    let ca_pem = std::fs::read_to_string(&lab.lab.info().ca_file).unwrap();
    assert_eq!(ca_pem.matches("BEGIN CERTIFICATE").count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecdsa_profile_keeps_a_p256_leaf_under_the_root() {
    let lab = TestLab::start_with(|o| o.cert_profile = CertProfile::Ecdsa).await;
    let primary = primary(&lab);
    let chain = peer_chain(&connect(&lab, &primary).await);
    assert_eq!(chain.len(), 1);
    let (kind, bits, sans, ca) = describe(&chain[0]);
    assert_eq!((kind, bits, ca), ("ec", 256, false));
    assert_eq!(sans, vec![primary.endpoint.clone()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_probes_the_rsa_chain_and_iam_fronts() {
    let lab = TestLab::start_with(|o| o.iam_user = Some("probe".into())).await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    for path in ["dns", "direct"] {
        assert_eq!(run.path(0, path)["ok"], true, "{path}: {}", run.output);
        assert!(run.path(0, path)["steps_ms"]["auth"].is_number(), "{path}");
    }

    // The agent's tokens are for user `probe`: as another user, the front refuses them.
    let other_user = lab.config_variant(
        "other-user.toml",
        &[("username = \"probe\"", "username = \"admin\"")],
    );
    let run = check(&other_user, &[]).await;
    assert_ne!(run.code, 0, "{}", run.output);
    assert_eq!(
        run.path(0, "direct")["error_kind"],
        "auth",
        "{}",
        run.output
    );
}

/// The lab's credentials, as every agent the lab starts has them.
fn lab_credentials(secret: Option<&str>) -> Credentials {
    let get = |name: &str| {
        LAB_AWS_ENV
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .expect("LAB_AWS_ENV has it")
    };
    let secret = secret.map_or_else(|| get("AWS_SECRET_ACCESS_KEY"), str::to_string);
    Credentials::new(get("AWS_ACCESS_KEY_ID"), secret, None, None, "lab")
}

fn token(cache: &str, user: &str, region: &str, at: SystemTime) -> String {
    IamSigner::new(cache, user, region)
        .sign(&lab_credentials(None), at)
        .expect("signs")
        .expose()
        .to_string()
}

/// A RESP array of bulk strings.
fn command(args: &[&str]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend_from_slice(format!("${}\r\n{arg}\r\n", arg.len()).as_bytes());
    }
    out
}

/// Sends one command and returns one whole reply (simple, error, integer, bulk or a RESP3
/// map of simple values), bounded by [`STEP`].
async fn call(stream: &mut TlsStream<TcpStream>, args: &[&str]) -> Vec<u8> {
    stream.write_all(&command(args)).await.expect("write");
    let mut reply = Vec::new();
    timeout(STEP, async {
        let mut chunk = [0u8; 4096];
        while !complete(&reply) {
            let n = stream.read(&mut chunk).await.expect("read");
            assert!(n > 0, "connection closed after {reply:?}");
            reply.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no whole reply to {:?} in time: {reply:?}", args[0]));
    reply
}

/// Whether `buf` holds one whole reply.
fn complete(buf: &[u8]) -> bool {
    reply_len(buf).is_some()
}

/// The length of the whole RESP2/RESP3 reply at the start of `buf`, if it has all arrived.
fn reply_len(buf: &[u8]) -> Option<usize> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    let header = std::str::from_utf8(&buf[1..end]).ok()?;
    let after = end + 2;
    match buf.first()? {
        b'$' | b'=' | b'!' => match header.parse::<i64>().ok()? {
            n if n < 0 => Some(after),
            n => (buf.len() >= after + n as usize + 2).then_some(after + n as usize + 2),
        },
        kind @ (b'*' | b'%' | b'~' | b'>') => {
            let count = header.parse::<i64>().ok()?.max(0) as usize;
            let elements = if *kind == b'%' { count * 2 } else { count };
            let mut pos = after;
            for _ in 0..elements {
                pos += reply_len(&buf[pos..])?;
            }
            Some(pos)
        }
        _ => Some(after),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_from_the_agents_signer_opens_the_cache() {
    let lab = TestLab::start_with(|o| o.iam_user = Some("probe".into())).await;
    let primary = primary(&lab);
    let good = token(PRIMARY_CACHE, "probe", PRIMARY_REGION, SystemTime::now());

    let mut stream = connect(&lab, &primary).await;
    assert_eq!(call(&mut stream, &["PING"]).await, NOAUTH);
    assert_eq!(
        call(&mut stream, &["AUTH", "probe", &good]).await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut stream, &["PING"]).await, b"+PONG\r\n");
    assert_eq!(call(&mut stream, &["SET", "k", "v"]).await, b"+OK\r\n");
    assert_eq!(call(&mut stream, &["GET", "k"]).await, b"$1\r\nv\r\n");

    // HELLO 3 with AUTH: the backend answers the HELLO (a RESP3 map) and the session goes on.
    let mut stream = connect(&lab, &primary).await;
    let hello = call(
        &mut stream,
        &["HELLO", "3", "AUTH", "probe", &good, "SETNAME", "lab-test"],
    )
    .await;
    assert!(
        hello.starts_with(b"%"),
        "{}",
        String::from_utf8_lossy(&hello)
    );
    assert_eq!(call(&mut stream, &["GET", "k"]).await, b"$1\r\nv\r\n");
    assert_eq!(
        call(&mut stream, &["CLIENT", "GETNAME"]).await,
        b"$8\r\nlab-test\r\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_tokens_get_wrongpass_and_nothing_is_forwarded() {
    let lab = TestLab::start_with(|o| o.iam_user = Some("probe".into())).await;
    let primary = primary(&lab);
    let now = SystemTime::now();
    let good = token(PRIMARY_CACHE, "probe", PRIMARY_REGION, now);
    let mut bad_signature = good.clone();
    let last = bad_signature.pop().expect("non-empty");
    bad_signature.push(if last == '0' { '1' } else { '0' });
    let other_secret = IamSigner::new(PRIMARY_CACHE, "probe", PRIMARY_REGION)
        .sign(&lab_credentials(Some("not-the-lab-secret")), now)
        .unwrap()
        .expose()
        .to_string();
    let cases = [
        (
            "another cache's name",
            "probe",
            token(SPARE_CACHE, "probe", PRIMARY_REGION, now),
        ),
        (
            "another region",
            "probe",
            token(PRIMARY_CACHE, "probe", "us-west-2", now),
        ),
        (
            "another user (token and AUTH)",
            "admin",
            token(PRIMARY_CACHE, "admin", PRIMARY_REGION, now),
        ),
        (
            "a token for another user",
            "probe",
            token(PRIMARY_CACHE, "admin", PRIMARY_REGION, now),
        ),
        (
            "expired",
            "probe",
            token(
                PRIMARY_CACHE,
                "probe",
                PRIMARY_REGION,
                now - Duration::from_secs(16 * 60),
            ),
        ),
        ("a bad signature", "probe", bad_signature),
        ("another secret", "probe", other_secret),
        ("not a token", "probe", "hunter2".to_string()),
    ];
    let mut stream = connect(&lab, &primary).await;
    for (what, user, token) in &cases {
        assert_eq!(
            call(&mut stream, &["AUTH", user, token]).await,
            WRONGPASS,
            "AUTH with {what}"
        );
        assert_eq!(
            call(&mut stream, &["HELLO", "3", "AUTH", user, token]).await,
            WRONGPASS,
            "HELLO with {what}"
        );
        assert_eq!(call(&mut stream, &["PING"]).await, NOAUTH, "after {what}");
    }
    // A password alone is the default user, which an IAM cache does not enable.
    assert_eq!(call(&mut stream, &["AUTH", &good]).await, WRONGPASS);
    assert_eq!(call(&mut stream, &["SET", "k", "v"]).await, NOAUTH);
    // Nothing reached the server: the key was never written.
    assert_eq!(
        call(&mut stream, &["AUTH", "probe", &good]).await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut stream, &["GET", "k"]).await, b"$-1\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_auth_is_per_cache_and_follows_the_cache_region() {
    // No lab-wide IAM user: the primary is open, a cache added with CacheAuth::iam is not.
    let lab = TestLab::start().await;
    let mut open = connect(&lab, &primary(&lab)).await;
    assert_eq!(call(&mut open, &["PING"]).await, b"+PONG\r\n");

    let west = lab
        .lab
        .add_cache_with(
            CacheSpec {
                name: "iam-west".into(),
                region: "us-west-2".into(),
                role: Role::Spare,
            },
            CacheAuth::iam("probe"),
        )
        .await
        .expect("cache starts");
    let mut gated = connect(&lab, &west).await;
    assert_eq!(call(&mut gated, &["PING"]).await, NOAUTH);
    let east_token = token("iam-west", "probe", PRIMARY_REGION, SystemTime::now());
    assert_eq!(
        call(&mut gated, &["AUTH", "probe", &east_token]).await,
        WRONGPASS
    );
    let west_token = token("iam-west", "probe", "us-west-2", SystemTime::now());
    assert_eq!(
        call(&mut gated, &["AUTH", "probe", &west_token]).await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut gated, &["PING"]).await, b"+PONG\r\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unauthenticated_client_is_held_to_valkeys_limits() {
    let lab = TestLab::start_with(|o| o.iam_user = Some("probe".into())).await;
    let primary = primary(&lab);
    let mut stream = connect(&lab, &primary).await;
    let args: Vec<String> = (0..11).map(|i| i.to_string()).collect();
    let mut big = vec!["SET"];
    big.extend(args.iter().map(String::as_str));
    assert_eq!(
        call(&mut stream, &big).await,
        b"-ERR Protocol error: unauthenticated multibulk length\r\n"
    );
    // ...and the connection is closed.
    let mut rest = Vec::new();
    let read = timeout(STEP, stream.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "still open: {read:?} {rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iam_lab_refuses_a_password_too() {
    let dir = tempfile::tempdir().unwrap();
    let err = valkey_dr_lab::Lab::start(valkey_dr_lab::LabOptions {
        iam_user: Some("probe".into()),
        password: Some("secret".into()),
        ..valkey_dr_lab::LabOptions::new(dir.path())
    })
    .await
    .err()
    .expect("refused");
    assert!(
        matches!(
            err,
            valkey_dr_lab::LabError::InvalidOption {
                option: "iam-user",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_created_through_the_api_requires_tokens_for_itself() {
    use aws_config::{BehaviorVersion, Region};
    use valkey_dr_lab::config::{DR_CACHE, DR_REGION};

    let lab = TestLab::start_with(|o| {
        o.iam_user = Some("probe".into());
        o.provision_delay = Duration::from_millis(200);
    })
    .await;
    let sdk = aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new(DR_REGION))
        .endpoint_url(&lab.lab.info().aws_endpoint)
        .credentials_provider(lab_credentials(None))
        .load()
        .await;
    aws_sdk_elasticache::Client::new(&sdk)
        .create_serverless_cache()
        .serverless_cache_name(DR_CACHE)
        .engine("valkey")
        .major_engine_version("8")
        .subnet_ids("subnet-lab0001")
        .subnet_ids("subnet-lab0002")
        .security_group_ids("sg-lab0001")
        .send()
        .await
        .expect("CreateServerlessCache");
    let created = support::wait_until(Duration::from_secs(20), || async {
        lab.lab.current_info().cache(DR_CACHE).is_some()
    })
    .await;
    assert!(created, "the DR cache came up");
    let dr = lab.lab.current_info().cache(DR_CACHE).unwrap().clone();

    let mut stream = connect(&lab, &dr).await;
    // What an agent that signs for the primary sends to the DR cache (issue 8, item 4).
    let for_primary = token(PRIMARY_CACHE, "probe", PRIMARY_REGION, SystemTime::now());
    assert_eq!(
        call(&mut stream, &["AUTH", "probe", &for_primary]).await,
        WRONGPASS
    );
    let for_dr = token(DR_CACHE, "probe", DR_REGION, SystemTime::now());
    assert_eq!(
        call(&mut stream, &["AUTH", "probe", &for_dr]).await,
        b"+OK\r\n"
    );
    assert_eq!(call(&mut stream, &["PING"]).await, b"+PONG\r\n");
}

/// Opens a TLS connection with `config`, sends PING and reads the answer (which also reads any
/// session tickets the front sent after its handshake), and says how the handshake went.
async fn handshake_kind(
    config: &std::sync::Arc<rustls::ClientConfig>,
    cache: &CacheInfo,
) -> rustls::HandshakeKind {
    let tcp = timeout(STEP, TcpStream::connect(cache.address))
        .await
        .expect("connect in time")
        .expect("connect");
    let name = ServerName::try_from(cache.endpoint.clone()).expect("endpoint is a DNS name");
    let mut stream = timeout(STEP, TlsConnector::from(config.clone()).connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    assert_eq!(call(&mut stream, &["PING"]).await, b"+PONG\r\n");
    let kind = stream.get_ref().1.handshake_kind().expect("handshake done");
    let _ = timeout(STEP, stream.shutdown()).await;
    kind
}

/// tests/FIDELITY.md, T4: no AWS source says whether a serverless endpoint resumes TLS
/// sessions, so by default the fronts never do; `tls_resumption` turns it on for benches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fronts_resume_no_tls_session_unless_asked() {
    for (resumption, second) in [
        (false, rustls::HandshakeKind::Full),
        (true, rustls::HandshakeKind::Resumed),
    ] {
        let lab = TestLab::start_with(|o| o.tls_resumption = resumption).await;
        let primary = primary(&lab);
        // The probes' own client configuration: it offers resumption (issue 12), so what
        // decides is the server.
        let client = valkey_dr_probes::client_config(Some(&lab.lab.info().ca_file), false)
            .expect("the probes' client config");
        assert_eq!(
            handshake_kind(&client, &primary).await,
            rustls::HandshakeKind::Full,
            "the first connection (resumption {resumption})"
        );
        assert_eq!(
            handshake_kind(&client, &primary).await,
            second,
            "the second connection from the same client config (resumption {resumption})"
        );
        lab.lab.shutdown().await;
    }
}
