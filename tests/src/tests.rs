//! Lab-level tests: real valkey-server processes, real sockets, all on loopback.
//!
//! Every wait is bounded; nothing sleeps to let things settle.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::*;
use crate::dns::tests::query_udp;
use crate::valkey::resp_command;

const WAIT: Duration = Duration::from_secs(10);

async fn start(dir: &Path) -> Lab {
    Lab::start(LabOptions {
        seed: Some(42),
        ..LabOptions::new(dir)
    })
    .await
    .expect("the lab starts")
}

fn connector(ca_file: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls(
    info: &LabInfo,
    cache: &CacheInfo,
    server_name: &str,
) -> io::Result<TlsStream<TcpStream>> {
    let tcp = timeout(WAIT, TcpStream::connect(cache.address)).await??;
    let name = ServerName::try_from(server_name.to_string()).unwrap();
    timeout(WAIT, connector(&info.ca_file).connect(name, tcp)).await?
}

/// Sends one command and reads a one-line reply (`+PONG`, `-NOAUTH ...`, `:3`).
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    parts: &[&[u8]],
    wait: Duration,
) -> io::Result<String> {
    stream.write_all(&resp_command(parts)).await?;
    timeout(wait, read_line(stream)).await?
}

async fn read_line<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<String> {
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\r\n") {
        if stream.read(&mut byte).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        reply.push(byte[0]);
    }
    reply.truncate(reply.len() - 2);
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

async fn ping_through_front(info: &LabInfo, cache: &CacheInfo) -> io::Result<String> {
    let mut stream = tls(info, cache, &cache.endpoint).await?;
    command(&mut stream, &[b"PING"], WAIT).await
}

/// Polls until the process is gone (reaped, not merely a zombie).
async fn assert_process_gone(pid: u32) {
    let deadline = Instant::now() + WAIT;
    while cache::process_state(pid).is_some() {
        assert!(
            Instant::now() < deadline,
            "valkey-server pid {pid} still exists ({:?})",
            cache::process_state(pid)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn start_writes_lab_json_and_agent_toml() {
    let dir = tempfile::tempdir().unwrap();
    let begun = std::time::Instant::now();
    let lab = start(dir.path()).await;
    eprintln!("lab started in {:?}", begun.elapsed());
    let info = lab.info().clone();

    assert_eq!(LabInfo::read(dir.path()).unwrap(), info);
    assert_eq!(info.zone, "lab.internal.");
    assert_eq!(info.record, "valkey.lab.internal.");
    assert_eq!(info.ttl_s, 30);
    assert_eq!(info.password_env, None);
    assert!(info.dns.ip().is_loopback() && info.control.ip().is_loopback());
    let roles: Vec<_> = info
        .caches
        .iter()
        .map(|c| (c.name.as_str(), c.region.as_str(), c.role))
        .collect();
    assert_eq!(
        roles,
        vec![
            ("app-sessions", "us-east-1", Role::Primary),
            ("app-sessions-spare", "us-east-2", Role::Spare)
        ]
    );
    for cache in &info.caches {
        assert_eq!(cache.address.port(), info.port, "one port for every front");
        let ip = cache.address.ip().to_string();
        assert!(ip.starts_with("127.") && !ip.starts_with("127.0."), "{ip}");
    }
    assert!(
        info.caches[0]
            .endpoint
            .ends_with(".serverless.use1.cache.amazonaws.com")
    );
    assert!(
        info.caches[1]
            .endpoint
            .ends_with(".serverless.use2.cache.amazonaws.com")
    );
    assert_ne!(info.caches[0].address.ip(), info.caches[1].address.ip());

    let toml_text = std::fs::read_to_string(&info.config).unwrap();
    let parsed: toml::Table = toml::from_str(&toml_text).unwrap();
    let watch = &parsed["watch"].as_array().unwrap()[0];
    assert_eq!(
        parsed["dns"]["nameservers"].as_array().unwrap()[0].as_str(),
        Some(info.dns.to_string().as_str())
    );
    assert_eq!(watch["port"].as_integer(), Some(i64::from(info.port)));
    assert_eq!(
        watch["primary"]["endpoint"].as_str(),
        Some(info.caches[0].endpoint.as_str())
    );
    assert_eq!(
        watch["probe"]["ca_file"].as_str(),
        Some(&*info.ca_file.to_string_lossy())
    );

    let via_http = fetch_info(info.control).await.unwrap();
    assert_eq!(via_http, info);

    let second = Lab::start(LabOptions::new(dir.path())).await;
    assert!(matches!(second, Err(LabError::DirInUse { .. })));
    lab.shutdown().await;
}

#[tokio::test]
async fn dns_serves_the_chain_to_the_primary_and_follows_faults() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let (primary, spare) = (&info.caches[0], &info.caches[1]);

    let answer = query_udp(info.dns, RECORD, RecordType::A, WAIT)
        .await
        .unwrap();
    let rendered: Vec<String> = answer
        .answers()
        .iter()
        .map(|r| r.data().to_string())
        .collect();
    assert_eq!(
        rendered,
        vec![
            format!("{}.", primary.endpoint),
            primary.address.ip().to_string()
        ]
    );
    assert_eq!(answer.answers()[0].ttl(), 30);

    lab.fault(Fault::PointRecord {
        cache: spare.name.clone(),
    })
    .await
    .unwrap();
    let answer = query_udp(info.dns, RECORD, RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(
        answer.answers()[1].data().to_string(),
        spare.address.ip().to_string()
    );

    lab.fault(Fault::DnsDown).await.unwrap();
    let short = Duration::from_millis(300);
    assert!(
        query_udp(info.dns, RECORD, RecordType::A, short)
            .await
            .is_none()
    );
    let endpoint = query_udp(info.dns, &primary.endpoint, RecordType::A, WAIT)
        .await
        .expect("endpoint names still resolve");
    assert_eq!(endpoint.response_code(), ResponseCode::NoError);
    lab.fault(Fault::DnsUp).await.unwrap();
    assert!(
        query_udp(info.dns, RECORD, RecordType::A, WAIT)
            .await
            .is_some()
    );

    let err = lab
        .fault(Fault::PointRecord {
            cache: "nope".into(),
        })
        .await
        .unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("app-sessions, app-sessions-spare"),
        "{message}"
    );
    lab.shutdown().await;
}

#[tokio::test]
async fn the_certificate_names_the_endpoint_only() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = &info.caches[0];

    assert_eq!(ping_through_front(&info, primary).await.unwrap(), "+PONG");
    let by_record = tls(&info, primary, "valkey.lab.internal")
        .await
        .unwrap_err();
    assert!(
        by_record.to_string().contains("not valid for name"),
        "{by_record}"
    );
    let by_ip = tls(&info, primary, &primary.address.ip().to_string())
        .await
        .unwrap_err();
    assert!(by_ip.to_string().contains("not valid for name"), "{by_ip}");
    lab.shutdown().await;
}

#[tokio::test]
async fn kill_refuses_connections_until_clear() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = info.caches[0].clone();
    let old_pid = lab.valkey_pid(&primary.name).unwrap();
    let mut open = tls(&info, &primary, &primary.endpoint).await.unwrap();
    assert_eq!(command(&mut open, &[b"PING"], WAIT).await.unwrap(), "+PONG");

    lab.fault(Fault::Kill {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    assert_eq!(lab.valkey_pid(&primary.name), None);
    assert_process_gone(old_pid).await;
    let refused = TcpStream::connect(primary.address).await.unwrap_err();
    assert_eq!(refused.kind(), io::ErrorKind::ConnectionRefused);
    assert!(
        command(&mut open, &[b"PING"], WAIT).await.is_err(),
        "an existing connection survived the kill"
    );
    // Killing a dead server is not an error; pausing one is.
    lab.fault(Fault::Kill {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    assert!(matches!(
        lab.fault(Fault::Pause {
            cache: primary.name.clone()
        })
        .await,
        Err(LabError::CacheNotRunning { .. })
    ));
    // The spare is untouched.
    assert_eq!(
        ping_through_front(&info, &info.caches[1]).await.unwrap(),
        "+PONG"
    );

    lab.fault(Fault::Clear {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let new_pid = lab.valkey_pid(&primary.name).unwrap();
    assert_ne!(new_pid, old_pid);
    assert_eq!(ping_through_front(&info, &primary).await.unwrap(), "+PONG");

    // A server that dies on its own closes its front just the same.
    // SAFETY: plain syscall on the lab's child, which the lab has not reaped.
    unsafe { libc::kill(new_pid as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(primary.address).await.is_ok() {
        assert!(Instant::now() < deadline, "the front outlived its server");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(lab.valkey_pid(&primary.name), None);
    lab.fault(Fault::Clear {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    assert_eq!(ping_through_front(&info, &primary).await.unwrap(), "+PONG");
    let last_pid = lab.valkey_pid(&primary.name).unwrap();
    lab.shutdown().await;
    assert_process_gone(last_pid).await;
}

#[tokio::test]
async fn pause_hangs_commands_until_resume() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = info.caches[0].clone();

    lab.fault(Fault::Pause {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let pid = lab.valkey_pid(&primary.name).unwrap();
    assert_eq!(cache::process_state(pid), Some('T'));
    // The front is in-process: the handshake still completes.
    let mut stream = tls(&info, &primary, &primary.endpoint).await.unwrap();
    let hung = command(&mut stream, &[b"PING"], Duration::from_millis(300)).await;
    assert_eq!(hung.unwrap_err().kind(), io::ErrorKind::TimedOut);

    lab.fault(Fault::Resume {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    // The PING sent while paused is answered now.
    assert_eq!(
        timeout(WAIT, read_line(&mut stream))
            .await
            .unwrap()
            .unwrap(),
        "+PONG"
    );
    lab.shutdown().await;
    assert_process_gone(pid).await;
}

#[tokio::test]
async fn latency_delays_and_blackhole_silences_until_clear() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = info.caches[0].clone();
    let delay = Duration::from_millis(150);

    lab.fault(Fault::Latency {
        cache: primary.name.clone(),
        delay,
    })
    .await
    .unwrap();
    let mut stream = tls(&info, &primary, &primary.endpoint).await.unwrap();
    let sent = Instant::now();
    assert_eq!(
        command(&mut stream, &[b"PING"], WAIT).await.unwrap(),
        "+PONG"
    );
    let round_trip = sent.elapsed();
    assert!(
        round_trip >= delay * 2,
        "one delay each way, got {round_trip:?}"
    );

    lab.fault(Fault::Blackhole {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let tcp = TcpStream::connect(primary.address)
        .await
        .expect("a blackhole accepts TCP");
    let name = ServerName::try_from(primary.endpoint.clone()).unwrap();
    let handshake = timeout(
        Duration::from_millis(500),
        connector(&info.ca_file).connect(name, tcp),
    )
    .await;
    assert!(handshake.is_err(), "the handshake should time out");
    // The connection opened before the blackhole stalls too.
    let stalled = command(&mut stream, &[b"PING"], Duration::from_millis(500)).await;
    assert_eq!(stalled.unwrap_err().kind(), io::ErrorKind::TimedOut);

    lab.fault(Fault::Clear {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let sent = Instant::now();
    assert_eq!(ping_through_front(&info, &primary).await.unwrap(), "+PONG");
    assert!(sent.elapsed() < delay * 2, "latency was not cleared");
    lab.shutdown().await;
}

/// What a client sees when it dials a front under `refuse-new`: the TCP connect succeeds (the
/// front accepts), then the first read fails with `ECONNRESET`.
async fn assert_new_connection_reset(cache: &CacheInfo) {
    let mut tcp = timeout(WAIT, TcpStream::connect(cache.address))
        .await
        .expect("connect in time")
        .expect("refuse-new accepts TCP");
    let mut byte = [0u8; 1];
    let read = timeout(WAIT, tcp.read(&mut byte))
        .await
        .expect("the reset comes in time");
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset),
        "a new connection under refuse-new"
    );
}

#[tokio::test]
async fn refuse_new_resets_new_connections_and_spares_open_ones() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = info.caches[0].clone();
    let mut live = tls(&info, &primary, &primary.endpoint).await.unwrap();
    assert_eq!(command(&mut live, &[b"PING"], WAIT).await.unwrap(), "+PONG");

    lab.fault(Fault::RefuseNew {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    assert_new_connection_reset(&primary).await;
    let handshake = tls(&info, &primary, &primary.endpoint).await.unwrap_err();
    assert!(
        matches!(
            handshake.kind(),
            io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
        ),
        "a TLS client dialling under refuse-new: {handshake:?}"
    );
    // The connection opened before the fault works on, round after round.
    for _ in 0..3 {
        assert_eq!(command(&mut live, &[b"PING"], WAIT).await.unwrap(), "+PONG");
    }
    assert_eq!(
        command(&mut live, &[b"SET", b"k", b"v"], WAIT)
            .await
            .unwrap(),
        "+OK"
    );
    // The spare is untouched.
    assert_eq!(
        ping_through_front(&info, &info.caches[1]).await.unwrap(),
        "+PONG"
    );

    lab.fault(Fault::Clear {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    assert_eq!(ping_through_front(&info, &primary).await.unwrap(), "+PONG");
    assert_eq!(command(&mut live, &[b"PING"], WAIT).await.unwrap(), "+PONG");
    lab.shutdown().await;
}

/// A client that keeps one connection open (the agent's probes since issue 12) must see every
/// outage a new connection sees: each fault acts on connections already open, as the real
/// failure would.
#[tokio::test]
async fn faults_act_on_connections_already_open() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();
    let primary = info.caches[0].clone();
    let clear = || Fault::Clear {
        cache: primary.name.clone(),
    };
    let mut live = tls(&info, &primary, &primary.endpoint).await.unwrap();
    assert_eq!(command(&mut live, &[b"PING"], WAIT).await.unwrap(), "+PONG");
    let short = Duration::from_millis(500);

    // Latency: each chunk of the open connection is held, in each direction.
    let delay = Duration::from_millis(150);
    lab.fault(Fault::Latency {
        cache: primary.name.clone(),
        delay,
    })
    .await
    .unwrap();
    let sent = Instant::now();
    assert_eq!(command(&mut live, &[b"PING"], WAIT).await.unwrap(), "+PONG");
    assert!(sent.elapsed() >= delay * 2, "{:?}", sent.elapsed());
    lab.fault(clear()).await.unwrap();

    // Blackhole and region outage: the open connection stalls, and what was sent during the
    // stall is answered once the fault is lifted.
    for (fault, lift) in [
        (
            Fault::Blackhole {
                cache: primary.name.clone(),
            },
            clear(),
        ),
        (
            Fault::RegionOutage {
                region: primary.region.clone(),
                route53: false,
            },
            Fault::RegionRestore {
                region: primary.region.clone(),
            },
        ),
    ] {
        lab.fault(fault.clone()).await.unwrap();
        let stalled = command(&mut live, &[b"PING"], short).await;
        assert_eq!(
            stalled.map_err(|e| e.kind()),
            Err(io::ErrorKind::TimedOut),
            "{fault}: an open connection still answered"
        );
        lab.fault(lift).await.unwrap();
        assert_eq!(
            timeout(WAIT, read_line(&mut live)).await.unwrap().unwrap(),
            "+PONG",
            "after {fault}"
        );
    }

    // Pause: the open connection hangs until the server is continued.
    lab.fault(Fault::Pause {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let hung = command(&mut live, &[b"PING"], short).await;
    assert_eq!(hung.map_err(|e| e.kind()), Err(io::ErrorKind::TimedOut));
    lab.fault(clear()).await.unwrap();
    assert_eq!(
        timeout(WAIT, read_line(&mut live)).await.unwrap().unwrap(),
        "+PONG"
    );

    // Kill: the open connection is cut, not left hanging.
    lab.fault(Fault::Kill {
        cache: primary.name.clone(),
    })
    .await
    .unwrap();
    let cut = command(&mut live, &[b"PING"], WAIT).await;
    assert!(
        cut.as_ref()
            .is_err_and(|e| e.kind() != io::ErrorKind::TimedOut),
        "a killed cache's open connection: {cut:?}"
    );
    lab.fault(clear()).await.unwrap();
    assert_eq!(ping_through_front(&info, &primary).await.unwrap(), "+PONG");
    lab.shutdown().await;
}

#[tokio::test]
async fn dropping_the_lab_leaves_no_process() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let pids: Vec<u32> = lab
        .info()
        .caches
        .iter()
        .map(|c| lab.valkey_pid(&c.name).unwrap())
        .collect();
    drop(lab);
    for pid in pids {
        assert_process_gone(pid).await;
    }
}

#[tokio::test]
async fn the_control_api_applies_faults_and_names_valid_caches() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();

    let applied = send_fault(info.control, &Fault::DnsDown).await.unwrap();
    assert_eq!(applied, "dns-down");
    assert!(
        query_udp(info.dns, RECORD, RecordType::A, Duration::from_millis(300))
            .await
            .is_none()
    );
    send_fault(info.control, &Fault::DnsUp).await.unwrap();

    let err = send_fault(
        info.control,
        &Fault::Kill {
            cache: "app-sessions-dr".into(),
        },
    )
    .await
    .unwrap_err();
    match err {
        LabError::Rejected {
            status, message, ..
        } => {
            assert_eq!(status, 404);
            assert!(
                message.contains("app-sessions, app-sessions-spare"),
                "{message}"
            );
        }
        other => panic!("unexpected {other}"),
    }
    lab.shutdown().await;
    let gone = send_fault(info.control, &Fault::DnsUp).await.unwrap_err();
    assert!(matches!(gone, LabError::Control { .. }), "{gone}");
}

#[tokio::test]
async fn a_password_is_required_and_named_in_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let lab = Lab::start(LabOptions {
        password: Some("s3cret \"quoted\"".to_string()),
        ..LabOptions::new(dir.path())
    })
    .await
    .unwrap();
    let info = lab.info().clone();
    assert_eq!(info.password_env.as_deref(), Some("VALKEY_DR_LAB_PASSWORD"));
    let toml_text = std::fs::read_to_string(&info.config).unwrap();
    assert!(toml_text.contains("password_env = \"VALKEY_DR_LAB_PASSWORD\"\n"));

    let primary = &info.caches[0];
    let mut stream = tls(&info, primary, &primary.endpoint).await.unwrap();
    let denied = command(&mut stream, &[b"PING"], WAIT).await.unwrap();
    assert!(denied.starts_with("-NOAUTH"), "{denied}");
    let auth = command(&mut stream, &[b"AUTH", b"s3cret \"quoted\""], WAIT)
        .await
        .unwrap();
    assert_eq!(auth, "+OK");
    assert_eq!(
        command(&mut stream, &[b"PING"], WAIT).await.unwrap(),
        "+PONG"
    );

    // The password is not on any command line, nor left on disk.
    let pid = lab.valkey_pid(&primary.name).unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains("s3cret"));
    let cache_dir = dir.path().join("caches").join(&primary.name);
    assert!(!cache_dir.join("password.conf").exists());

    // A restarted server gets the password again.
    for fault in [
        Fault::Kill {
            cache: primary.name.clone(),
        },
        Fault::Clear {
            cache: primary.name.clone(),
        },
    ] {
        lab.fault(fault).await.unwrap();
    }
    let mut stream = tls(&info, primary, &primary.endpoint).await.unwrap();
    let denied = command(&mut stream, &[b"PING"], WAIT).await.unwrap();
    assert!(denied.starts_with("-NOAUTH"), "{denied}");
    assert!(!cache_dir.join("password.conf").exists());
    lab.shutdown().await;
}

#[tokio::test]
async fn caches_can_be_added_and_removed_at_run_time() {
    let dir = tempfile::tempdir().unwrap();
    let lab = start(dir.path()).await;
    let info = lab.info().clone();

    let dr = lab
        .add_cache(CacheSpec {
            name: "app-sessions-dr".into(),
            region: "us-west-2".into(),
            role: Role::Dr,
        })
        .await
        .unwrap();
    assert_eq!(dr.address.port(), info.port);
    assert!(dr.endpoint.starts_with("app-sessions-dr-"));
    assert!(
        dr.endpoint
            .ends_with(".serverless.usw2.cache.amazonaws.com")
    );
    assert_eq!(LabInfo::read(dir.path()).unwrap().caches.len(), 3);
    assert_eq!(lab.current_info().cache_with_role(Role::Dr), Some(&dr));
    let a = query_udp(info.dns, &dr.endpoint, RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(
        a.answers()[0].data().to_string(),
        dr.address.ip().to_string()
    );
    assert_eq!(a.answers()[0].ttl(), ENDPOINT_TTL);
    assert_eq!(ping_through_front(&info, &dr).await.unwrap(), "+PONG");

    // Keys are visible over the unix socket, as tests will check the agent's probe keys.
    let socket = lab.valkey_socket(&dr.name).unwrap();
    let mut direct = UnixStream::connect(&socket).await.unwrap();
    assert_eq!(
        command(&mut direct, &[b"SET", b"valkey-dr:probe:x", b"1"], WAIT)
            .await
            .unwrap(),
        "+OK"
    );
    assert_eq!(
        command(&mut direct, &[b"DBSIZE"], WAIT).await.unwrap(),
        ":1"
    );

    assert!(matches!(
        lab.add_cache(CacheSpec {
            name: "app-sessions-dr".into(),
            region: "us-west-2".into(),
            role: Role::Dr,
        })
        .await,
        Err(LabError::CacheExists { .. })
    ));

    let pid = lab.valkey_pid(&dr.name).unwrap();
    lab.remove_cache(&dr.name).await.unwrap();
    assert_process_gone(pid).await;
    let nx = query_udp(info.dns, &dr.endpoint, RecordType::A, WAIT)
        .await
        .unwrap();
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert_eq!(
        TcpStream::connect(dr.address).await.unwrap_err().kind(),
        io::ErrorKind::ConnectionRefused
    );
    assert_eq!(LabInfo::read(dir.path()).unwrap().caches.len(), 2);
    lab.shutdown().await;
}

#[tokio::test]
async fn bad_options_and_long_paths_fail_cleanly() {
    assert!(matches!(
        Lab::start(LabOptions::default()).await,
        Err(LabError::NoDir)
    ));
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        Lab::start(LabOptions {
            ttl: Duration::from_millis(1500),
            ..LabOptions::new(dir.path())
        })
        .await,
        Err(LabError::InvalidOption { option: "ttl", .. })
    ));
    let long = dir.path().join("d".repeat(120));
    let err = Lab::start(LabOptions::new(&long)).await.err().unwrap();
    assert!(matches!(err, LabError::SocketPathTooLong { .. }), "{err}");
    // The failed start released the directory.
    let again = Lab::start(LabOptions::new(&long)).await.err().unwrap();
    assert!(
        matches!(again, LabError::SocketPathTooLong { .. }),
        "{again}"
    );
}

#[test]
fn role_paths_are_iam_paths() {
    for ok in ["/", "/aws-reserved/sso.amazonaws.com/", "/a/", "///"] {
        assert!(validate_role_path(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "//",
        "aws-reserved/",
        "/no-trailing-slash",
        "/with space/",
        "/é/",
    ] {
        assert!(
            matches!(
                validate_role_path(bad),
                Err(LabError::InvalidOption {
                    option: "role-path",
                    ..
                })
            ),
            "{bad}"
        );
    }
    assert!(validate_role_path(&format!("/{}/", "a".repeat(511))).is_err());
}

#[test]
fn the_lab_can_be_shared_between_tasks() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Lab>();
}
