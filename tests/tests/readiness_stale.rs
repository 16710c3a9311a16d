//! Issue 22, defect 4: a readiness check that cannot run (`unknown`) counts as ready for one
//! pass, not for ever. The real daemon against a lab whose IAM refuses
//! `iam:SimulatePrincipalPolicy`, so that `permissions` is `unknown` and nothing fails: ready
//! at first, `not_ready` naming `permissions` once it has not been verified for
//! `readiness_stale`, and `ready` again as soon as a pass verifies it.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{Agent, TestLab, Webhook, agent_get, wait_until};
use valkey_dr_lab::Fault;

const WATCH: &str = "sessions";

/// The check the fault leaves `unknown`.
const CHECK: &str = "permissions";

/// `readiness_interval` in this test.
const INTERVAL: Duration = Duration::from_secs(1);

/// `readiness_stale` in this test: three passes.
const STALE: Duration = Duration::from_secs(3);

/// What `/status` and `/metrics` say about [`CHECK`] of [`WATCH`].
#[derive(Debug, Default)]
struct Seen {
    /// The check's `result` in `/status`'s readiness.
    result: Option<String>,
    /// Its `found`.
    found: Option<String>,
    /// Its `fix`.
    fix: Option<String>,
    /// The watch's `ready` in `/status`'s readiness.
    ready: Option<bool>,
    /// `valkey_dr_ready{watch,check}`.
    metric: Option<i64>,
}

impl Seen {
    /// `/status` says `result`, and it and the metric agree on whether the watch is ready.
    fn agree_on(&self, result: &str) -> bool {
        let ready = result != "fail";
        self.result.as_deref() == Some(result)
            && self.ready == Some(ready)
            && self.metric == Some(i64::from(ready))
    }
}

async fn seen(agent: &Agent) -> Seen {
    let Some(addr) = agent.admin() else {
        return Seen::default();
    };
    let status = agent
        .status_get()
        .await
        .and_then(|(_, b)| serde_json::from_str::<Value>(&b).ok());
    let watch = status.as_ref().and_then(|s| {
        s["readiness"]["watches"]
            .as_array()?
            .iter()
            .find(|w| w["name"] == WATCH)
            .cloned()
    });
    let check = watch.as_ref().and_then(|w| {
        w["checks"]
            .as_array()?
            .iter()
            .find(|c| c["check"] == CHECK)
            .cloned()
    });
    let text = |field: &str| {
        check
            .as_ref()
            .and_then(|c| c[field].as_str())
            .map(str::to_owned)
    };
    let series = format!("valkey_dr_ready{{watch=\"{WATCH}\",check=\"{CHECK}\"}} ");
    let metric = agent_get(addr, "/metrics").await.and_then(|(_, m)| {
        m.lines()
            .find_map(|l| l.strip_prefix(&series))
            .and_then(|v| v.trim().parse::<i64>().ok())
    });
    Seen {
        result: text("result"),
        found: text("found"),
        fix: text("fix"),
        ready: watch.as_ref().and_then(|w| w["ready"].as_bool()),
        metric,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_22_a_check_unknown_for_longer_than_readiness_stale_is_not_ready_until_verified() {
    let lab = TestLab::start().await;
    let hook = Webhook::start().await;
    let notify = hook.reminding("1m");
    let config = lab.config_variant(
        "stale.toml",
        &[
            (
                "log_format = \"text\"",
                &format!(
                    "log_format = \"text\"\nreadiness_interval = \"{}\"\nreadiness_stale = \"{}\"",
                    humantime::format_duration(INTERVAL),
                    humantime::format_duration(STALE)
                ),
            ),
            ("reminder_interval = \"1m\"\n", &notify),
        ],
    );
    // Only preflight asks IAM to simulate: without it `permissions` cannot be checked, and
    // every other check still passes (tests/tests/preflight.rs).
    lab.fault(Fault::IamDeny {
        action: "iam:SimulatePrincipalPolicy".into(),
    })
    .await;
    let state_dir = lab.dir.path().join("state");
    let started = tokio::time::Instant::now();
    let agent = Agent::start_clean(&config, &state_dir).await;

    // One pass that could not check is still ready.
    let unknown = wait_until(STALE, || async { seen(&agent).await.agree_on("unknown") }).await;
    assert!(
        unknown,
        "{:?}\n{:?}\n{}",
        seen(&agent).await,
        hook.names(),
        agent.log_text()
    );
    assert_eq!(hook.count("not_ready"), 0, "{:?}", hook.names());

    // Unverified for longer than readiness_stale, it fails: within two passes of that, with
    // a margin for a loaded machine.
    let limit = STALE + 2 * INTERVAL + Duration::from_secs(5);
    let not_ready = wait_until(limit, || async { hook.count("not_ready") > 0 }).await;
    assert!(not_ready, "{:?}\n{}", hook.names(), agent.log_text());
    let (at, event) = hook
        .events()
        .into_iter()
        .find(|(_, e)| e["event"] == "not_ready")
        .unwrap();
    assert!(
        at.duration_since(started) >= STALE,
        "not_ready came {:?} after the start, before readiness_stale: {event:#}",
        at.duration_since(started)
    );
    assert_eq!(
        event["detail"]["failing"],
        serde_json::json!([CHECK]),
        "{event:#}"
    );
    let reasons = event["reasons"].to_string();
    for part in [
        "not verified for",
        "readiness_stale = 3s",
        // The unknown finding's own text and fix are kept.
        "iam:SimulatePrincipalPolicy",
    ] {
        assert!(reasons.contains(part), "{part:?}: {event:#}");
    }
    // `/status` is republished with the pass, so it may trail the event by a moment.
    let failing = wait_until(Duration::from_secs(5), || async {
        seen(&agent).await.agree_on("fail")
    })
    .await;
    let now = seen(&agent).await;
    assert!(failing, "{now:?}\n{}", agent.log_text());
    assert!(
        now.found.as_deref().is_some_and(
            |f| f.starts_with("not verified for") && f.contains("(readiness_stale = 3s): ")
        ),
        "{now:?}"
    );
    assert!(
        now.fix
            .as_deref()
            .is_some_and(|f| f.contains("iam:SimulatePrincipalPolicy")),
        "{now:?}"
    );

    // The first pass that verifies it brings it back.
    lab.fault(Fault::IamAllow {
        action: "iam:SimulatePrincipalPolicy".into(),
    })
    .await;
    let ready = wait_until(Duration::from_secs(10), || async {
        hook.count("ready") > 0
    })
    .await;
    assert!(ready, "{:?}\n{}", hook.names(), agent.log_text());
    let ok = wait_until(Duration::from_secs(5), || async {
        seen(&agent).await.agree_on("ok")
    })
    .await;
    assert!(ok, "{:?}", seen(&agent).await);
    assert_eq!(
        hook.count("not_ready"),
        1,
        "said once, not every pass: {:?}",
        hook.names()
    );
    agent.kill9().await;
}
