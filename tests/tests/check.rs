//! `valkey-dr check` end to end: the real binary against a lab of real valkey-servers,
//! TLS fronts and DNS over UDP/TCP, one lab per test.

mod support;

use std::time::Duration;

use support::{TestLab, check, check_text};
use valkey_dr_lab::{Fault, PRIMARY_CACHE, SPARE_CACHE};

fn primary(lab: &TestLab) -> valkey_dr_lab::CacheInfo {
    lab.lab
        .info()
        .cache(PRIMARY_CACHE)
        .expect("primary")
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_round_is_ok_with_every_field_filled() {
    let lab = TestLab::start().await;
    let primary = primary(&lab);
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert_eq!(run.json["status"], "OK");
    let watch = &run.json["watches"][0];
    assert_eq!(watch["name"], "sessions");
    assert_eq!(watch["status"], "OK");
    assert_eq!(watch["drift"], false);
    for path in ["dns", "direct"] {
        let p = run.path(0, path);
        assert_eq!(p["ok"], true, "{path}: {}", run.output);
        support::assert_null_field(p, "error_kind");
        support::assert_null_field(p, "error");
        assert_eq!(
            p["target"],
            primary.endpoint.as_str(),
            "{path} target is the endpoint name"
        );
        assert_eq!(p["address"], primary.address.to_string());
        let latency = p["latency_ms"].as_f64().expect("latency_ms");
        assert!(latency > 0.0 && latency < 500.0, "{path} latency {latency}");
        let ttl = p["ttl_s"].as_u64().expect("ttl_s");
        assert!(ttl > 0 && ttl <= 60, "{path} ttl {ttl}");
        for step in ["resolve", "connect", "tls", "ping", "set", "get"] {
            assert!(p["steps_ms"][step].is_number(), "{path} lacks step {step}");
        }
    }
    let dns_ttl = run.path(0, "dns")["ttl_s"].as_u64().unwrap();
    assert!(
        dns_ttl <= lab.lab.info().ttl_s,
        "dns TTL {dns_ttl} is the record's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_primary_times_out_on_both_paths_within_bound() {
    let lab = TestLab::start().await;
    lab.fault(Fault::Pause {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 2, "{}", run.output);
    assert_eq!(run.json["status"], "CRITICAL");
    let bound_ms = 500.0 + 250.0;
    for path in ["dns", "direct"] {
        let p = run.path(0, path);
        assert_eq!(p["error_kind"], "timeout", "{path}: {}", run.output);
        let latency = p["latency_ms"].as_f64().unwrap();
        assert!(
            latency <= bound_ms,
            "{path} took {latency} ms > {bound_ms} ms"
        );
        assert!(latency >= 450.0, "{path} gave up early: {latency} ms");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_primary_is_connect_refused() {
    let lab = TestLab::start().await;
    lab.fault(Fault::Kill {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 2, "{}", run.output);
    for path in ["dns", "direct"] {
        assert_eq!(
            run.path(0, path)["error_kind"],
            "connect_refused",
            "{path}: {}",
            run.output
        );
    }
    lab.fault(Fault::Clear {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 0, "after clear: {}", run.output);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blackholed_primary_times_out() {
    let lab = TestLab::start().await;
    lab.fault(Fault::Blackhole {
        cache: PRIMARY_CACHE.into(),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 2, "{}", run.output);
    for path in ["dns", "direct"] {
        let p = run.path(0, path);
        assert_eq!(p["error_kind"], "timeout", "{path}: {}", run.output);
        assert!(p["latency_ms"].as_f64().unwrap() <= 750.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_is_measured_but_passes_under_the_timeout() {
    let lab = TestLab::start().await;
    lab.fault(Fault::Latency {
        cache: PRIMARY_CACHE.into(),
        delay: Duration::from_millis(20),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    let latency = run.path(0, "direct")["latency_ms"].as_f64().unwrap();
    // The front delays every chunk it reads, from either side: the ClientHello, the client's
    // Finished with PING, SET and GET (sent together right behind it), and the server's
    // replies: at least 3 x 20 ms; small enough to stay far below the 500 ms timeout on a
    // loaded machine.
    assert!(
        latency >= 60.0,
        "latency {latency} ms does not show the injected delay"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_down_fails_only_the_dns_path_with_a_warning() {
    let lab = TestLab::start().await;
    lab.fault(Fault::DnsDown).await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 1, "{}", run.output);
    assert_eq!(run.json["status"], "WARNING");
    let kind = run.path(0, "dns")["error_kind"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(kind.starts_with("dns_"), "dns path kind {kind}");
    assert_eq!(run.path(0, "direct")["ok"], true, "{}", run.output);
    lab.fault(Fault::DnsUp).await;
    assert_eq!(check(&lab.config(), &[]).await.code, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_pointed_elsewhere_is_drift() {
    let lab = TestLab::start().await;
    let spare = lab.lab.info().cache(SPARE_CACHE).expect("spare").clone();
    lab.fault(Fault::PointRecord {
        cache: SPARE_CACHE.into(),
    })
    .await;
    let run = check(&lab.config(), &[]).await;
    assert_eq!(run.code, 1, "{}", run.output);
    let watch = &run.json["watches"][0];
    assert_eq!(watch["drift"], true);
    assert_eq!(watch["drift_target"], spare.endpoint.as_str());
    assert_eq!(run.path(0, "dns")["target"], spare.endpoint.as_str());
    assert_eq!(run.path(0, "dns")["ok"], true, "the spare itself works");
    assert!(watch["notes"].to_string().contains("drift"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_lab_passes_with_password_env_and_never_shows_it() {
    let secret = "lab-Pa55-word-not-for-logs";
    let lab = TestLab::start_with(|o| o.password = Some(secret.into())).await;
    let env = lab
        .lab
        .info()
        .password_env
        .clone()
        .expect("password env in lab.json");
    let run = check(&lab.config(), &[(&env, secret)]).await;
    assert_eq!(run.code, 0, "{}", run.output);
    assert!(run.path(0, "dns")["steps_ms"]["auth"].is_number());
    assert!(!run.output.contains(secret));
    let (code, text) = check_text(&lab.config(), &[(&env, secret)]).await;
    assert_eq!(code, 0, "{text}");
    assert!(!text.contains(secret));

    let run = check(&lab.config(), &[(&env, "wrong-password")]).await;
    assert_eq!(run.code, 2, "{}", run.output);
    for path in ["dns", "direct"] {
        assert_eq!(
            run.path(0, path)["error_kind"],
            "auth",
            "{path}: {}",
            run.output
        );
    }
    assert!(!run.output.contains("wrong-password"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_ca_is_tls() {
    let lab = TestLab::start().await;
    let other_ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .and_then(|mut p| {
            p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            p.self_signed(&rcgen::KeyPair::generate()?)
        })
        .expect("other CA");
    let ca = lab.dir.path().join("other-ca.pem");
    std::fs::write(&ca, other_ca.pem()).unwrap();
    let lab_ca = lab.lab.info().ca_file.display().to_string();
    let config = lab.config_variant(
        "wrong-ca.toml",
        &[(
            &format!("ca_file = \"{lab_ca}\""),
            &format!("ca_file = \"{}\"", ca.display()),
        )],
    );
    let run = check(&config, &[]).await;
    assert_eq!(run.code, 2, "{}", run.output);
    for path in ["dns", "direct"] {
        assert_eq!(
            run.path(0, path)["error_kind"],
            "tls",
            "{path}: {}",
            run.output
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_tls_name_fails_tls_and_warns() {
    let lab = TestLab::start().await;
    let config = lab.config_variant(
        "record-name.toml",
        &[(
            "tls_server_name = \"endpoint\"",
            "tls_server_name = \"record\"",
        )],
    );
    let run = check(&config, &[]).await;
    assert_eq!(run.code, 1, "{}", run.output);
    assert_eq!(run.path(0, "dns")["error_kind"], "tls");
    assert_eq!(run.path(0, "direct")["ok"], true);
    let notes = run.json["watches"][0]["notes"].to_string();
    assert!(notes.contains("does not cover the record name"), "{notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probe_keys_carry_the_prefix_and_expire_within_60s() {
    let lab = TestLab::start().await;
    for _ in 0..3 {
        assert_eq!(check(&lab.config(), &[]).await.code, 0);
    }
    let socket = lab.lab.valkey_socket(PRIMARY_CACHE).expect("socket");
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    let mut conn = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    // 3 rounds × (dns + direct), each writing one key.
    assert_eq!(keys.len(), 6, "{keys:?}");
    for key in keys {
        assert!(key.starts_with("valkey-dr:probe:lab-agent:"), "{key}");
        let ttl: i64 = redis::cmd("TTL")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!((1..=60).contains(&ttl), "{key} has TTL {ttl}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_output_is_a_table_with_the_verdict() {
    let lab = TestLab::start().await;
    lab.fault(Fault::DnsDown).await;
    let (code, text) = check_text(&lab.config(), &[]).await;
    assert_eq!(code, 1, "{text}");
    let mut lines = text.lines();
    let plugin = lines.next().unwrap();
    assert!(
        plugin.starts_with(
            "VALKEY-DR WARNING - WARNING: the dns path fails while the direct path works | "
        ),
        "{plugin}"
    );
    let header = lines.next().unwrap();
    for column in [
        "WATCH", "STATUS", "PATH", "RESULT", "LATENCY", "TTL", "ADDRESS", "TARGET",
    ] {
        assert!(header.contains(column), "{header}");
    }
    assert!(text.contains("sessions  WARNING"), "{text}");
    assert!(text.trim_end().ends_with("WARNING"), "{text}");
}

/// The Nagios plugin contract: `VALKEY-DR <STATUS> - <summary> | <perfdata>` on the first
/// line, perfdata as `'label'=value[UOM];warn;crit;min;max`, and stdout never empty, with
/// exit 3 (UNKNOWN), not clap's 2 (CRITICAL), for a mistyped flag or an invalid config.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_line_is_a_nagios_plugin_line_with_perfdata() {
    let lab = TestLab::start().await;
    let (code, text) = check_text(&lab.config(), &[]).await;
    assert_eq!(code, 0, "{text}");
    let first = text.lines().next().unwrap();
    let (summary, perfdata) = first.split_once(" | ").expect("perfdata after ` | `");
    assert!(summary.starts_with("VALKEY-DR OK - "), "{first}");
    assert!(
        summary.contains("dns ") && summary.contains("direct "),
        "{first}"
    );
    let mut labels = Vec::new();
    for item in perfdata.split(' ') {
        let (label, rest) = item.split_once('=').expect("label=value");
        assert!(label.starts_with('\'') && label.ends_with('\''), "{item}");
        let fields: Vec<&str> = rest.split(';').collect();
        assert_eq!(fields.len(), 5, "value;warn;crit;min;max: {item}");
        let unit_at = fields[0]
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .expect("a unit");
        let (value, unit) = fields[0].split_at(unit_at);
        let value: f64 = value.parse().expect("a number");
        match unit {
            "ms" => {
                // The lab's probe timeout is 500 ms: warn at half, critical at it.
                assert!(value > 0.0 && value < 500.0, "{item}");
                assert_eq!(&fields[1..], ["250", "500", "0", "500"], "{item}");
            }
            "s" => {
                // The lab's TTL is 30 s; the resolver the probe asks may count it down.
                assert!((1.0..=30.0).contains(&value), "the lab's TTL: {item}");
                assert_eq!(&fields[1..], ["60", "", "0", ""], "{item}");
            }
            other => panic!("unit {other:?} in {item}"),
        }
        labels.push(label.trim_matches('\'').to_owned());
    }
    assert_eq!(labels, ["sessions_dns", "sessions_direct", "sessions_ttl"]);

    // A mistyped flag: UNKNOWN, with the plugin line on stdout.
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["check", "--wach", "x", "--config"])
        .arg(lab.config())
        .env_remove("VALKEY_DR_CONFIG");
    let out = support::run_bounded(command).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(stdout.starts_with("VALKEY-DR UNKNOWN - "), "{stdout}");
    assert!(stdout.contains("--wach"), "names the bad flag: {stdout}");
    // Other commands keep the usual usage exit code.
    let mut command = tokio::process::Command::new(support::agent_bin());
    command
        .args(["status", "--wach", "x"])
        .env_remove("VALKEY_DR_CONFIG");
    let out = support::run_bounded(command).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());

    // An invalid config: UNKNOWN, and stdout says why.
    let broken = lab.config_variant("broken.toml", &[("fall = ", "fall = 0 # ")]);
    let (code, text) = check_text(&broken, &[]).await;
    assert_eq!(code, 3, "{text}");
    assert!(
        text.starts_with("VALKEY-DR UNKNOWN - invalid config: "),
        "{text}"
    );
    assert!(text.lines().next().unwrap().contains("fall"), "{text}");
}
