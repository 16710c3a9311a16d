//! Gates against real programs and a real HTTP server on loopback.

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::{get, post};
use serde_json::json;

use super::*;
use valkey_dr_probes::Secret;

fn command(
    name: &str,
    at: GateAt,
    argv: &[&str],
    timeout: Duration,
    on_timeout: OnTimeout,
) -> GateConfig {
    GateConfig {
        name: name.to_owned(),
        at,
        check: GateCheck::Command {
            command: argv.iter().map(|s| (*s).to_owned()).collect(),
        },
        timeout,
        on_timeout,
    }
}

fn http(name: &str, url: String, method: GateMethod, timeout: Duration) -> GateConfig {
    GateConfig {
        name: name.to_owned(),
        at: GateAt::SwitchDns,
        check: GateCheck::Http {
            url: Secret::new(url),
            url_env: None,
            method,
        },
        timeout,
        on_timeout: OnTimeout::Hold,
    }
}

const SECOND: Duration = Duration::from_secs(1);

/// Waits (bounded) until the process whose pid a gate's script wrote to `pid_file` is gone
/// (or a zombie nobody reaps yet): the gate's whole process group was killed.
async fn assert_gone(pid_file: &std::path::Path, outlived: &str) {
    let pid: i32 = std::fs::read_to_string(pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    // SAFETY: signal 0 only checks that the process exists.
    while unsafe { libc::kill(pid, 0) } == 0 {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if state.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gate's child {pid} outlived {outlived}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_command_opens_on_exit_0_and_holds_with_what_it_said_otherwise() {
    let open = command("vpn", GateAt::SwitchDns, &["true"], SECOND, OnTimeout::Hold);
    let closed = command(
        "freeze",
        GateAt::SwitchDns,
        &["sh", "-c", "echo 'change freeze until 18:00' >&2; exit 3"],
        SECOND,
        OnTimeout::Hold,
    );
    let input = json!({ "watch": "sessions" });
    assert_eq!(
        Gates::new(std::slice::from_ref(&open))
            .check(GateAt::SwitchDns, &input)
            .await,
        Passage::Open
    );
    assert_eq!(
        Gates::new(&[open, closed.clone()])
            .check(GateAt::SwitchDns, &input)
            .await,
        Passage::Held {
            gate: "freeze".into(),
            answer: "freeze: exit status: 3: change freeze until 18:00".into(),
        }
    );
    // A gate elsewhere is not asked.
    assert_eq!(
        Gates::new(&[closed]).check(GateAt::Provision, &input).await,
        Passage::Open
    );
}

/// Issue 23: a gate's words reach the log and the `failover_held` event; a terminal
/// escape in them must arrive as text.
#[tokio::test]
async fn a_gate_command_s_answer_reaches_the_hold_escaped() {
    let closed = command(
        "freeze",
        GateAt::SwitchDns,
        &[
            "sh",
            "-c",
            "printf '\\033[31mfrozen\\033]0;owned\\007 <!channel>\\n' >&2; exit 3",
        ],
        SECOND,
        OnTimeout::Hold,
    );
    assert_eq!(
        Gates::new(&[closed])
            .check(GateAt::SwitchDns, &json!({ "watch": "sessions" }))
            .await,
        Passage::Held {
            gate: "freeze".into(),
            answer: "freeze: exit status: 3: \\x1b[31mfrozen\\x1b]0;owned\\x07 <!channel>".into(),
        }
    );
}

#[tokio::test]
async fn a_command_reads_the_failover_on_stdin_and_its_gate_in_the_environment() {
    let gate = command(
        "stdin",
        GateAt::Provision,
        &[
            "sh",
            "-c",
            r#"read line; case "$line" in *'"failover_id":"fo-1"'*) [ "$VALKEY_DR_GATE_AT" = provision ] && [ "$VALKEY_DR_GATE" = stdin ] ;; *) echo "got $line"; exit 1 ;; esac"#,
        ],
        SECOND,
        OnTimeout::Hold,
    );
    let gates = Gates::new(&[gate]);
    assert_eq!(
        gates
            .check(GateAt::Provision, &json!({ "failover_id": "fo-1" }))
            .await,
        Passage::Open
    );
    assert!(matches!(
        gates.check(GateAt::Provision, &json!({ "failover_id": "fo-2" })).await,
        Passage::Held { answer, .. } if answer.contains("got {\"failover_id\":\"fo-2\"}")
    ));
}

#[tokio::test]
async fn a_missing_program_holds_and_says_it_cannot_run() {
    let gate = command(
        "gone",
        GateAt::SwitchDns,
        &["/nonexistent/vpn-ready"],
        SECOND,
        OnTimeout::Abort,
    );
    let Passage::Held { gate, answer } = Gates::new(&[gate])
        .check(GateAt::SwitchDns, &json!({}))
        .await
    else {
        panic!("a program that cannot run must hold, not abort or open");
    };
    assert_eq!(gate, "gone");
    assert!(
        answer.starts_with("gone: cannot run /nonexistent/vpn-ready: "),
        "{answer}"
    );
}

#[tokio::test]
async fn a_command_past_its_timeout_is_killed_with_its_group_and_holds_or_aborts() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    for (on_timeout, abort) in [(OnTimeout::Hold, false), (OnTimeout::Abort, true)] {
        let gate = command(
            "slow",
            GateAt::Provision,
            &["sh", "-c", &script],
            Duration::from_millis(300),
            on_timeout,
        );
        let started = Instant::now();
        let passage = Gates::new(&[gate])
            .check(GateAt::Provision, &json!({}))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let answer = "no answer within 300ms; killed".to_owned();
        if abort {
            assert_eq!(
                passage,
                Passage::Abort {
                    gate: "slow".into(),
                    answer
                }
            );
        } else {
            assert_eq!(
                passage,
                Passage::Held {
                    gate: "slow".into(),
                    answer: format!("slow: {answer}")
                }
            );
        }
        // The script's own child went with it: the group was killed, not just the shell.
        assert_gone(&pid_file, "the timeout").await;
    }
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{address}")
}

#[tokio::test]
async fn an_http_gate_opens_on_2xx_holds_on_anything_else_and_posts_the_failover() {
    let base = serve(
        Router::new()
            .route("/ok", get(|| async { "ready" }))
            .route(
                "/not-yet",
                get(|| async {
                    (
                        hyper::StatusCode::SERVICE_UNAVAILABLE,
                        "vpn still in us-east-1\nmore",
                    )
                }),
            )
            .route(
                "/post",
                post(|body: String| async move {
                    if body.contains("\"failover_id\":\"fo-9\"") {
                        (hyper::StatusCode::OK, String::new())
                    } else {
                        (hyper::StatusCode::CONFLICT, format!("body was {body}"))
                    }
                }),
            )
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                    "late"
                }),
            ),
    )
    .await;
    let input = json!({ "failover_id": "fo-9" });
    let input = &input;
    let check =
        |g: GateConfig| async move { Gates::new(&[g]).check(GateAt::SwitchDns, input).await };
    assert_eq!(
        check(http("ok", format!("{base}/ok"), GateMethod::Get, SECOND)).await,
        Passage::Open
    );
    assert_eq!(
        check(http(
            "vpn",
            format!("{base}/not-yet"),
            GateMethod::Get,
            SECOND
        ))
        .await,
        Passage::Held {
            gate: "vpn".into(),
            answer: "vpn: HTTP 503 Service Unavailable: vpn still in us-east-1".into()
        }
    );
    assert_eq!(
        check(http(
            "post",
            format!("{base}/post"),
            GateMethod::Post,
            SECOND
        ))
        .await,
        Passage::Open
    );
    let started = Instant::now();
    assert_eq!(
        check(http(
            "slow",
            format!("{base}/slow"),
            GateMethod::Get,
            Duration::from_millis(200)
        ))
        .await,
        Passage::Held {
            gate: "slow".into(),
            answer: "slow: no answer within 200ms".into()
        }
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // Nothing listens: held, with the cause, never open.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    assert!(matches!(
        check(http("down", format!("http://{closed}/"), GateMethod::Get, SECOND)).await,
        Passage::Held { answer, .. } if answer.starts_with("down: ") && answer.to_lowercase().contains("refused")
    ));
}

#[tokio::test]
async fn a_gate_check_given_up_midway_takes_its_whole_process_group_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("child.pid");
    let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
    let gate = command(
        "slow",
        GateAt::SwitchDns,
        &["sh", "-c", &script],
        Duration::from_secs(60),
        OnTimeout::Hold,
    );
    let gates = Gates::new(&[gate]);
    // Given up after a moment, as an approval or an abort does.
    let given_up = tokio::time::timeout(
        Duration::from_millis(500),
        gates.check(GateAt::SwitchDns, &json!({})),
    )
    .await;
    assert!(given_up.is_err());
    assert_gone(&pid_file, "the check").await;
}

#[tokio::test]
async fn a_gate_that_exits_0_while_a_child_holds_its_output_open_is_open() {
    let gate = command(
        "quick",
        GateAt::SwitchDns,
        &["sh", "-c", "sleep 30 & exit 0"],
        Duration::from_secs(10),
        OnTimeout::Abort,
    );
    let started = Instant::now();
    assert_eq!(
        Gates::new(&[gate])
            .check(GateAt::SwitchDns, &json!({}))
            .await,
        Passage::Open
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

/// A gate reads the same JSON as when the input was built with `json!`: keys sorted, absent
/// values as `null`.
#[test]
fn the_input_a_gate_reads_keeps_its_wire_form() {
    let input = crate::gate::GateInput {
        agent_id: "agent-a".into(),
        at: "switch_dns",
        dr_cache: "sessions-dr".into(),
        dr_endpoint: Some("sessions-dr.example:6379".into()),
        failover_id: "fo-1".into(),
        held_since: None,
        record: "cache.internal.example".into(),
        watch: "sessions".into(),
    };
    let as_before = json!({
        "watch": "sessions",
        "failover_id": "fo-1",
        "agent_id": "agent-a",
        "at": "switch_dns",
        "record": "cache.internal.example",
        "dr_cache": "sessions-dr",
        "dr_endpoint": "sessions-dr.example:6379",
        "held_since": null,
    });
    assert_eq!(
        serde_json::to_string(&input).unwrap(),
        as_before.to_string()
    );
}
