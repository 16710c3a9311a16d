//! The alerting assets: `deploy/prometheus/valkey-dr.rules.yml` (with its promtool unit tests)
//! and `deploy/grafana/valkey-dr.json`.
//!
//! - promtool accepts the rules, and their unit tests pass; a copy with one wrong expectation
//!   fails, so the unit tests can fail.
//! - Every alert has a unit test that sees it fire, and a runbook section its `runbook_url`
//!   points at.
//! - Every metric name the rules, their unit tests and the dashboard use is one a real agent
//!   exposes: a lab and a `valkey-dr run` daemon are started and `/metrics` is scraped, so a
//!   renamed metric breaks this test instead of silently breaking an alert.
//!
//! promtool comes from Debian's `prometheus` package, installed on demand
//! ([`valkey_dr_lab::apt::PROMTOOL`]).

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use support::{Agent, TestLab, Webhook, agent_get, region_outage, run_bounded};

const WATCH: &str = "sessions";
const RULES: &str = "valkey-dr.rules.yml";
const RULES_TEST: &str = "valkey-dr.rules.test.yml";
/// promtool reads two small files; on a loaded machine, seconds.
const PROMTOOL_DEADLINE: Duration = Duration::from_secs(120);

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn prometheus_dir() -> PathBuf {
    repo().join("deploy/prometheus")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn promtool(args: &[&str], dir: &Path) -> (bool, String) {
    let promtool = tokio::task::spawn_blocking(|| valkey_dr_lab::apt::PROMTOOL.ensure())
        .await
        .expect("the install ran")
        .unwrap_or_else(|e| panic!("promtool is needed: {e}"));
    let mut command = tokio::process::Command::new(promtool);
    command.args(args).current_dir(dir).kill_on_drop(true);
    let out = tokio::time::timeout(PROMTOOL_DEADLINE, command.output())
        .await
        .expect("promtool finished within the deadline")
        .expect("promtool ran");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The value of a `key: value` YAML line, unquoted.
fn yaml_value<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let rest = line.trim_start().trim_start_matches("- ");
    let value = rest.strip_prefix(key)?.strip_prefix(':')?.trim();
    Some(value.trim_matches('"').trim_matches('\''))
}

/// Every alert of the rules file with its `runbook_url`, in order. The file is written one
/// key per line; that this reading finds every rule is checked against promtool's count.
fn alerts() -> Vec<(String, String)> {
    let text = read(&prometheus_dir().join(RULES));
    let mut alerts: Vec<(String, Option<String>)> = Vec::new();
    for line in text.lines() {
        if let Some(name) = yaml_value(line, "alert") {
            alerts.push((name.to_owned(), None));
        } else if let Some(url) = yaml_value(line, "runbook_url") {
            let last = alerts.last_mut().expect("runbook_url inside an alert");
            assert!(last.1.is_none(), "{}: two runbook_urls", last.0);
            last.1 = Some(url.to_owned());
        }
    }
    alerts
        .into_iter()
        .map(|(name, url)| {
            let url = url.unwrap_or_else(|| panic!("{name} has no runbook_url"));
            (name, url)
        })
        .collect()
}

#[tokio::test]
async fn rules_pass_promtool_and_their_unit_tests() {
    let dir = prometheus_dir();
    let (ok, output) = promtool(&["check", "rules", RULES], &dir).await;
    assert!(ok, "promtool check rules:\n{output}");
    let count: usize = output
        .split("SUCCESS: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no rule count in:\n{output}"));
    let alerts = alerts();
    assert_eq!(
        alerts.len(),
        count,
        "every rule is an alert, and this test reads each of them: {alerts:?}"
    );
    assert!(
        !read(&dir.join(RULES)).contains("record:"),
        "no recording rules"
    );

    let (ok, output) = promtool(&["test", "rules", RULES_TEST], &dir).await;
    assert!(ok, "promtool test rules:\n{output}");
    assert!(output.contains("SUCCESS"), "{output}");

    // Every alert is seen firing in a unit test (`exp_alerts:` with alerts under it), and
    // some are seen not firing (`exp_alerts: []`).
    let tests = read(&dir.join(RULES_TEST));
    let lines: Vec<&str> = tests.lines().collect();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(name) = yaml_value(line, "alertname") else {
            continue;
        };
        let expected = lines
            .get(i + 1)
            .and_then(|l| yaml_value(l, "exp_alerts"))
            .unwrap_or_else(|| panic!("exp_alerts after alertname {name}"));
        if expected == "[]" {
            silent.insert(name.to_owned());
        } else {
            firing.insert(name.to_owned());
        }
    }
    for (alert, _) in &alerts {
        assert!(firing.contains(alert), "no unit test sees {alert} fire");
    }
    assert!(
        silent.len() * 2 >= alerts.len(),
        "most alerts are also seen not firing: {silent:?}"
    );
}

#[tokio::test]
async fn a_wrong_expectation_fails_the_unit_tests() {
    let scratch = tempfile::tempdir().expect("tempdir");
    std::fs::copy(prometheus_dir().join(RULES), scratch.path().join(RULES)).expect("copy");
    let tests = read(&prometheus_dir().join(RULES_TEST));
    let right = "exp_labels: {severity: critical, watch: sessions, state: down}";
    assert_eq!(tests.matches(right).count(), 1, "the down alert's test");
    std::fs::write(
        scratch.path().join(RULES_TEST),
        tests.replace(right, &right.replace("critical", "warning")),
    )
    .expect("write");
    let (ok, output) = promtool(&["test", "rules", RULES_TEST], scratch.path()).await;
    assert!(!ok, "a wrong severity passed:\n{output}");
    assert!(output.contains("ValkeyDrWatchDown"), "{output}");
}

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

#[test]
fn every_alert_links_a_runbook_section() {
    let runbook = read(&repo().join("docs/RUNBOOK.md"));
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    let alerts = alerts();
    assert!(alerts.len() >= 20, "{alerts:?}");
    for (alert, url) in alerts {
        let target = url
            .strip_prefix("docs/RUNBOOK.md#")
            .unwrap_or_else(|| panic!("{alert}: runbook_url {url} is not docs/RUNBOOK.md#…"));
        assert!(
            anchors.contains(target),
            "{alert}: docs/RUNBOOK.md has no section #{target}"
        );
        assert_eq!(
            target,
            alert.to_lowercase(),
            "{alert}: each alert has a section named after it"
        );
    }
}

/// Every `valkey_dr_*` and `process_*` name in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|w| w.starts_with("valkey_dr_") || w.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// Every string under an `expr` or templating `query` key in the dashboard.
fn dashboard_queries(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| dashboard_queries(v, out)),
        _ => {}
    }
}

fn dashboard() -> Value {
    let path = repo().join("deploy/grafana/valkey-dr.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn the_dashboard_is_a_grafana_dashboard_over_a_chosen_prometheus() {
    let d = dashboard();
    assert!(
        d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion"
    );
    assert_eq!(d["uid"], "valkey-dr");
    let vars = d["templating"]["list"].as_array().expect("templating");
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("no ${name} variable"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    assert_eq!(
        var("watch")["query"]["query"],
        "label_values(valkey_dr_state, watch)"
    );
    let panels = d["panels"].as_array().expect("panels");
    let mut exprs = 0;
    for p in panels.iter().filter(|p| p["type"] != "row") {
        let title = p["title"].as_str().unwrap_or("?");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
            exprs += 1;
        }
    }
    assert!(exprs >= 20, "{exprs} queries");
    let mut ids: Vec<u64> = panels.iter().filter_map(|p| p["id"].as_u64()).collect();
    let n = ids.len();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), n, "panel ids are unique");
}

/// The sample names `/metrics` can carry, from its `# TYPE` lines (a counter `x` is sampled
/// as `x_total`, a histogram as `x_bucket`, `x_sum` and `x_count`, an info `x` as `x_info`).
fn exposed_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(name), Some(kind)) = (words.next(), words.next()) else {
            panic!("a TYPE line without a type: {line}");
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" | "gaugehistogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            "info" => &["_info"],
            "stateset" | "gauge" | "unknown" | "untyped" => &[""],
            other => panic!("unknown metric type {other}: {line}"),
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// The lab's zone TTL; the agent writes the DR record with 30 s (the design's range).
const LAB_TTL: Duration = Duration::from_secs(5);
const HEALTHY_BOUND: Duration = Duration::from_secs(20);
/// An outage to a completed failover in the lab: detection, a 300 ms provisioning, the
/// switch, `INSYNC` after 500 ms and the old record's 5 s TTL.
const FAILOVER_BOUND: Duration = Duration::from_secs(60);
/// A family appears in `/metrics` with its first sample: the readiness pass, a notification.
const SERIES_BOUND: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_rules_and_dashboard_use_is_exposed_by_a_real_agent() {
    let mut used: Vec<(String, BTreeSet<String>)> = vec![
        (
            RULES.to_owned(),
            metric_names(&read(&prometheus_dir().join(RULES))),
        ),
        (
            RULES_TEST.to_owned(),
            metric_names(&read(&prometheus_dir().join(RULES_TEST))),
        ),
    ];
    let mut queries = Vec::new();
    dashboard_queries(&dashboard(), &mut queries);
    used.push((
        "valkey-dr.json".to_owned(),
        metric_names(&queries.join("\n")),
    ));
    for (file, names) in &used {
        assert!(names.len() >= 10, "{file} uses {names:?}");
    }

    // prometheus-client leaves a family out until its first sample (unless the agent
    // announces it), so the agent is taken through what sets each one: a drill (drill
    // metrics), readiness passes, notifications, a region outage (the witness, a completed
    // failover and its steps), and a pause.
    let lab = TestLab::start_with(|o| {
        o.ttl = LAB_TTL;
        o.insync_delay = Duration::from_millis(500);
        o.provision_delay = Duration::from_millis(300);
    })
    .await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let config = lab.config_variant(
        "alerting.toml",
        &[
            ("ttl = \"5s\"", "ttl = \"30s\""),
            ("mode = \"alert-only\"", "mode = \"auto-failover\""),
            ("reminder_interval = \"1m\"\n", &notify),
        ],
    );
    let state_dir = lab.dir.path().join("state");

    let mut drill = tokio::process::Command::new(support::agent_bin());
    drill
        .args(["drill", "--config"])
        .arg(&config)
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(drill).await;
    assert!(
        out.status.success(),
        "the drill: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let agent = Agent::start(&config, &state_dir, &[]).await;
    assert!(
        agent.wait_state(WATCH, "healthy", HEALTHY_BOUND).await,
        "never healthy:\n{}",
        agent.log_text()
    );
    lab.fault(region_outage()).await;
    assert!(
        agent.wait_state(WATCH, "failed_over", FAILOVER_BOUND).await,
        "no failover: {:?}\n{}",
        hook.names(),
        agent.log_text()
    );
    let mut pause = tokio::process::Command::new(support::agent_bin());
    pause
        .args([
            "pause",
            "--watch",
            WATCH,
            "--reason",
            "alerting test",
            "--for",
            "1h",
        ])
        .arg("--config")
        .arg(&config)
        .env_remove("VALKEY_DR_CONFIG");
    let out = run_bounded(pause).await;
    assert!(
        out.status.success(),
        "pause: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let admin = agent.admin().expect("admin address");
    let all_used: BTreeSet<String> = used.iter().flat_map(|(_, n)| n.iter().cloned()).collect();
    let deadline = tokio::time::Instant::now() + SERIES_BOUND;
    let exposition = loop {
        let scraped = agent_get(admin, "/metrics").await;
        let done = tokio::time::Instant::now() >= deadline;
        match scraped {
            Some((200, text)) if done || all_used.is_subset(&exposed_names(&text)) => break text,
            _ if done => panic!("/metrics did not answer:\n{}", agent.log_text()),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    };
    let exposed = exposed_names(&exposition);
    assert!(exposed.contains("valkey_dr_up"), "{exposition}");

    let mut missing = Vec::new();
    for (file, names) in &used {
        for name in names.difference(&exposed) {
            missing.push(format!("{file}: {name}"));
        }
    }
    assert!(
        missing.is_empty(),
        "metric names a real agent does not expose:\n  {}\nexposed: {exposed:?}",
        missing.join("\n  ")
    );
    agent.kill9().await;
}
