//! The daemon's probe model end to end (issue 12): each path keeps one TLS connection between
//! rounds, as the applications' pooled clients do; a kept connection that breaks is replaced
//! within the round; fresh connections are still made every `handshake_interval`, so a cache
//! that refuses new connections while the old ones live is still found down.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Agent, TestLab, agent_get, wait_until, watch_status};
use valkey_dr_lab::{Fault, PRIMARY_CACHE};

const WATCH: &str = "sessions";
/// The lab's schedule: 1 s interval, 500 ms timeout, fall 3.
const INTERVAL: Duration = Duration::from_secs(1);
const TIMEOUT: Duration = Duration::from_millis(500);
const FALL: u32 = 3;
/// Slack for a loaded test machine on top of each bound.
const SLACK: Duration = Duration::from_secs(1);

struct Setup {
    lab: TestLab,
    config: std::path::PathBuf,
    state_dir: std::path::PathBuf,
}

/// A lab and an agent.toml variant with `handshake_interval` set.
async fn setup(handshake_interval: &str) -> Setup {
    let lab = TestLab::start().await;
    let config = lab.config_variant(
        "probe-model.toml",
        &[(
            "timeout = \"500ms\"\n",
            &format!("timeout = \"500ms\"\nhandshake_interval = \"{handshake_interval}\"\n"),
        )],
    );
    let state_dir = lab.dir.path().join("state");
    Setup {
        lab,
        config,
        state_dir,
    }
}

impl Setup {
    /// An agent whose paths both probe on a kept connection (bounded wait).
    async fn agent_on_kept_connections(&self) -> Agent {
        let agent = Agent::start(&self.config, &self.state_dir, &[]).await;
        assert!(
            wait_until(Duration::from_secs(15), || async {
                connections(&agent).await == ["reused", "reused"]
            })
            .await,
            "the paths never reused their connections: {:?}\n{}",
            connections(&agent).await,
            agent.log_text()
        );
        agent
    }
}

/// The `connection` each path of the last round used, per `/status`.
async fn connections(agent: &Agent) -> Vec<String> {
    let Some(status) = watch_status(agent, WATCH).await else {
        return Vec::new();
    };
    status["last_observation"]["paths"]
        .as_array()
        .map(|paths| {
            paths
                .iter()
                .map(|p| p["connection"].as_str().unwrap_or("?").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of one series of `/metrics`, by its exact name and labels.
async fn metric(agent: &Agent, series: &str) -> Option<f64> {
    let (_, body) = agent_get(agent.admin()?, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

/// Fresh connections `path` made for one of `reasons`.
async fn fresh(agent: &Agent, path: &str, reasons: &[&str]) -> f64 {
    let mut total = 0.0;
    for reason in reasons {
        let series = format!(
            "valkey_dr_probe_connections_total{{watch=\"{WATCH}\",path=\"{path}\",connection=\"{reason}\"}}"
        );
        total += metric(agent, &series)
            .await
            .unwrap_or_else(|| panic!("no {series}"));
    }
    total
}

/// Waits (bounded) for the watch to be `down`; returns how long it took from `since`.
async fn time_to_down(agent: &Agent, since: tokio::time::Instant, limit: Duration) -> Duration {
    assert!(
        agent.wait_state(WATCH, "down", limit).await,
        "not down within {limit:?}: {:#}\n{}",
        watch_status(agent, WATCH)
            .await
            .map_or(Value::Null, |s| s["last_observation"].clone()),
        agent.log_text()
    );
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cache_is_detected_on_kept_connections() {
    let s = setup("30s").await;
    let agent = s.agent_on_kept_connections().await;
    let t0 = tokio::time::Instant::now();
    s.lab
        .fault(Fault::Kill {
            cache: PRIMARY_CACHE.to_owned(),
        })
        .await;
    let bound = INTERVAL * FALL + TIMEOUT + SLACK;
    let took = time_to_down(&agent, t0, bound + SLACK).await;
    assert!(took <= bound, "down after {took:?} > {bound:?}");
    let status = watch_status(&agent, WATCH).await.expect("status");
    for path in status["last_observation"]["paths"].as_array().unwrap() {
        assert_eq!(path["error_kind"], "connect_refused", "{status:#}");
        assert_ne!(
            path["connection"], "reused",
            "judged on a fresh connection: {path:#}"
        );
    }
    agent.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_connection_cut_by_the_server_is_replaced_with_no_failed_round() {
    let s = setup("30s").await;
    let agent = s.agent_on_kept_connections().await;
    let before = [
        fresh(&agent, "dns", &["retry"]).await,
        fresh(&agent, "direct", &["retry"]).await,
    ];
    let rounds_before = watch_status(&agent, WATCH).await.unwrap()["rounds"]
        .as_u64()
        .unwrap();

    // The cache drops every client connection (as a node replacement or a `CLIENT KILL`
    // would); the lab's front then closes the agent's side.
    let socket = s.lab.lab.valkey_socket(PRIMARY_CACHE).expect("socket");
    let client = redis::Client::open(format!("unix://{}", socket.display())).unwrap();
    let mut admin = tokio::time::timeout(
        Duration::from_secs(5),
        client.get_multiplexed_async_connection(),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .query_async(&mut admin)
        .await
        .expect("CLIENT KILL");
    assert!(
        killed >= 2,
        "the agent's two connections were killed ({killed})"
    );

    // Both paths make a fresh connection, then reuse it again (`/status` is republished
    // every 250 ms, so it must show a round after the replacement).
    let rounds = |status: &Value| status["rounds"].as_u64().unwrap_or(0);
    assert!(
        wait_until(Duration::from_secs(10), || async {
            fresh(&agent, "dns", &["retry"]).await > before[0]
                && fresh(&agent, "direct", &["retry"]).await > before[1]
                && watch_status(&agent, WATCH)
                    .await
                    .is_some_and(|s| rounds(&s) >= rounds_before + 2)
                && connections(&agent).await == ["reused", "reused"]
        })
        .await,
        "no replacement seen: {:?}\n{}",
        connections(&agent).await,
        agent.log_text()
    );
    let status = watch_status(&agent, WATCH).await.unwrap();
    assert_eq!(status["state"], "healthy", "{status:#}");
    for path in ["dns", "direct"] {
        support::assert_null_field(&status["paths"][path], "last_failure");
    }
    for path in ["dns", "direct"] {
        // The family and its labels are as named here: the path's `ok` series counts.
        let ok =
            format!("valkey_dr_probe_total{{watch=\"{WATCH}\",path=\"{path}\",result=\"ok\"}}");
        assert!(
            metric(&agent, &ok).await.is_some_and(|n| n > 0.0),
            "{ok} is missing or 0"
        );
        // A failure's series appears with its first count: absent, or 0.
        for result in ["timeout", "protocol", "connect_refused"] {
            let series = format!(
                "valkey_dr_probe_total{{watch=\"{WATCH}\",path=\"{path}\",result=\"{result}\"}}"
            );
            assert!(
                metric(&agent, &series).await.unwrap_or(0.0) == 0.0,
                "{series} moved"
            );
        }
    }
    agent.kill9().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_connections_refused_while_old_ones_live_is_down_within_handshake_interval() {
    const HANDSHAKE_INTERVAL: Duration = Duration::from_secs(3);
    let s = setup("3s").await;
    let agent = s.agent_on_kept_connections().await;
    let t0 = tokio::time::Instant::now();
    s.lab
        .fault(Fault::RefuseNew {
            cache: PRIMARY_CACHE.to_owned(),
        })
        .await;
    let bound = HANDSHAKE_INTERVAL + INTERVAL * FALL + TIMEOUT;
    let took = time_to_down(&agent, t0, bound + SLACK * 3).await;
    assert!(took <= bound + SLACK, "down after {took:?} > {bound:?}");
    let status = watch_status(&agent, WATCH).await.expect("status");
    // The kept connections kept answering; what failed are the fresh ones.
    for path in status["last_observation"]["paths"].as_array().unwrap() {
        assert_eq!(path["ok"], false, "{status:#}");
        assert_ne!(path["connection"], "reused", "{path:#}");
        // The reset lands in the TLS handshake, or (loopback is that fast) already in the
        // connect: both are outage kinds.
        assert!(
            path["error_kind"] == "protocol" || path["error_kind"] == "connect_refused",
            "a reset at the connect or the handshake: {path:#}"
        );
    }
    s.lab
        .fault(Fault::Clear {
            cache: PRIMARY_CACHE.to_owned(),
        })
        .await;
    assert!(
        agent
            .wait_state(WATCH, "healthy", Duration::from_secs(10))
            .await,
        "{}",
        agent.log_text()
    );
    agent.kill9().await;
}

/// `Prober::cname_now` asks the name servers with no cache: a record moved in DNS shows there
/// at once, while a round's dns path still answers from its cache until the TTL runs out, as
/// an application's resolver does (issue 21: an agent that voted holds its vote from the moment
/// the record answers the standby, not one TTL later).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cname_now_sees_a_moved_record_at_once_where_the_dns_path_waits_out_its_ttl() {
    use aws_sdk_route53::types::{ChangeAction, RrType};
    use support::raw_aws::{change, rrset, send};
    use valkey_dr::config::{Config, ProcessEnv};
    use valkey_dr_probes::{PathKind, Prober, ResolverSettings, same_name};

    let lab = TestLab::start().await;
    let info = lab.lab.info();
    let config = Config::load(&info.config, &ProcessEnv).expect("the lab's agent.toml parses");
    let spec = valkey_dr::spec::probe_spec(&config, &config.watches[0])
        .await
        .expect("the lab's probe");
    let prober = Prober::new(&ResolverSettings {
        nameservers: vec![info.dns],
    })
    .expect("a resolver");
    let target = |o: &valkey_dr_probes::Observation| {
        o.path(PathKind::Dns)
            .and_then(|p| p.target.clone())
            .unwrap_or_default()
    };
    let first = prober.round(&spec).await;
    assert!(same_name(&target(&first), &spec.endpoint), "{first:?}");
    let asked = std::time::Instant::now();
    assert_eq!(
        prober.cname_now(&info.record, Duration::from_secs(2)).await,
        Ok(Some(spec.endpoint.trim_end_matches('.').to_owned()))
    );

    let r53 = aws_sdk_route53::Client::new(&support::deploy::sdk(&lab, "us-east-1").await);
    let ttl = i64::try_from(info.ttl_s).expect("a TTL");
    send(
        &r53,
        vec![change(
            ChangeAction::Upsert,
            rrset(&info.record, RrType::Cname, ttl, &["moved.example"]),
        )],
        None,
    )
    .await
    .expect("the record moves");
    assert!(
        wait_until(Duration::from_secs(10), || async {
            prober.cname_now(&info.record, Duration::from_secs(2)).await
                == Ok(Some("moved.example".to_owned()))
        })
        .await,
        "cname_now never saw the record move"
    );
    let cached = prober.round(&spec).await;
    assert!(
        asked.elapsed() < Duration::from_secs(info.ttl_s),
        "the check below needs the first answer still cached"
    );
    assert!(
        same_name(&target(&cached), &spec.endpoint),
        "the dns path answers from its cache until the TTL runs out: {cached:?}"
    );
}
