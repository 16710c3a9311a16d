//! The drill's steps against an in-memory ElastiCache that goes `creating` → `available`
//! (or `create-failed`, or stays `creating`), refuses to delete a cache still `creating`, and
//! answers `deleting` after a delete, as AWS documents.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use super::*;
use crate::executor::VerifyFailure;
use crate::executor::api::CacheInfo;

const NAME: &str = "app-sessions-dr-drill-20261126t0715z";

#[derive(Default)]
struct Cloud {
    /// The drill cache: its status and the Describe calls it stays `creating` for.
    cache: Option<(CacheStatus, u32)>,
    /// Describe calls a new cache stays `creating` for (u32::MAX: for ever).
    creating_for: u32,
    create_fails: bool,
    /// Errors to return from the next calls, per call.
    errors: BTreeMap<&'static str, VecDeque<ApiError>>,
    /// Verify failures before it works.
    verify_failures: u32,
    /// Every call, in order.
    calls: Vec<&'static str>,
    /// The drill cache's tags.
    tags: BTreeMap<String, String>,
}

struct Fake(Mutex<Cloud>);

impl Fake {
    fn new() -> Fake {
        Fake(Mutex::new(Cloud {
            creating_for: 2,
            ..Cloud::default()
        }))
    }

    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.0.lock().unwrap()
    }

    fn fail(&self, call: &'static str, errors: impl IntoIterator<Item = ApiError>) {
        self.cloud().errors.entry(call).or_default().extend(errors);
    }

    fn called(&self, call: &'static str) -> Result<(), ApiError> {
        let mut c = self.cloud();
        c.calls.push(call);
        match c.errors.get_mut(call).and_then(VecDeque::pop_front) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn count(&self, call: &str) -> usize {
        self.cloud().calls.iter().filter(|c| **c == call).count()
    }
}

fn transient(call: &str) -> ApiError {
    ApiError::Transient {
        call: call.into(),
        message: "Throttling".into(),
    }
}

fn info(status: CacheStatus) -> CacheInfo {
    let endpoint = (status == CacheStatus::Available).then(|| {
        (
            format!("{NAME}-x1.serverless.usw2.cache.amazonaws.com"),
            6379,
        )
    });
    CacheInfo {
        name: NAME.into(),
        arn: format!("arn:aws:elasticache:us-west-2:1:serverlesscache:{NAME}"),
        status,
        endpoint,
    }
}

impl CacheApi for Fake {
    async fn create(&self, spec: &CacheSpec) -> Result<CacheInfo, ApiError> {
        self.called("create")?;
        let mut c = self.cloud();
        if c.cache.is_some() {
            return Err(ApiError::AlreadyExists { name: NAME.into() });
        }
        c.tags = spec
            .input
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        // A cache with no time to spend `creating` is up at once.
        let wait = c.creating_for;
        let status = if wait == 0 && !c.create_fails {
            CacheStatus::Available
        } else {
            CacheStatus::Creating
        };
        c.cache = Some((status.clone(), wait));
        Ok(info(status))
    }

    async fn describe(&self, _name: &str) -> Result<Option<CacheInfo>, ApiError> {
        self.called("describe")?;
        let mut c = self.cloud();
        let fails = c.create_fails;
        Ok(c.cache.as_mut().map(|(status, wait)| {
            if *status == CacheStatus::Creating {
                if *wait == 0 {
                    *status = if fails {
                        CacheStatus::CreateFailed
                    } else {
                        CacheStatus::Available
                    };
                } else if *wait != u32::MAX {
                    *wait -= 1;
                }
            }
            info(status.clone())
        }))
    }

    async fn tags(&self, _arn: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.called("tags")?;
        let c = self.cloud();
        // AWS refuses tags of a cache that is creating or deleting.
        match &c.cache {
            Some((status @ (CacheStatus::Creating | CacheStatus::Deleting), _)) => {
                Err(ApiError::NotReady {
                    call: "elasticache:ListTagsForResource".into(),
                    message: format!("InvalidServerlessCacheStateFault: {}", status.as_str()),
                })
            }
            _ => Ok(c.tags.clone()),
        }
    }

    async fn delete(&self, _name: &str) -> Result<(), ApiError> {
        self.called("delete")?;
        let mut c = self.cloud();
        match &mut c.cache {
            Some((CacheStatus::Creating, _)) => Err(ApiError::Transient {
                call: "elasticache:DeleteServerlessCache".into(),
                message: "InvalidServerlessCacheStateFault: creating".into(),
            }),
            Some((status, _)) => {
                *status = CacheStatus::Deleting;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

impl Verifier for Fake {
    async fn direct(&self, host: &str, port: u16) -> Result<(), VerifyFailure> {
        let mut c = self.cloud();
        c.calls.push("verify");
        if c.verify_failures > 0 {
            c.verify_failures -= 1;
            return Err(VerifyFailure {
                message: format!("{host}:{port}: connect: connect_refused"),
                own_side: false,
            });
        }
        Ok(())
    }

    async fn through_record(&self, _endpoint: &str) -> Result<(), String> {
        panic!("a drill never resolves through the record");
    }

    async fn resolves_to(&self, _endpoint: &str) -> bool {
        panic!("a drill never resolves through the record");
    }

    async fn count_keys(&self, _endpoint: &str, _port: u16) -> Result<u64, VerifyFailure> {
        panic!("a drill never empties a cache");
    }

    async fn flush(&self, _endpoint: &str, _port: u16) -> Result<(), VerifyFailure> {
        panic!("a drill never empties a cache");
    }
}

fn limits() -> DrillLimits {
    DrillLimits {
        create_attempts: 3,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
        poll: Duration::from_millis(1),
        max_poll: Duration::from_millis(2),
        not_found_grace: Duration::from_millis(20),
        verify_attempts: 3,
    }
}

fn plan(keep: bool) -> DrillPlan {
    DrillPlan {
        watch: "sessions".into(),
        id: "20261126t0715z".into(),
        spec: CacheSpec {
            region: "us-west-2".into(),
            input: crate::executor::api::CreateRequest {
                serverless_cache_name: NAME.into(),
                tags: vec![crate::executor::api::Tag {
                    key: DRILL_TAG.into(),
                    value: "20261126t0715z".into(),
                }],
                ..Default::default()
            },
        },
        create_timeout: Duration::from_secs(5),
        keep,
        ttl: Duration::from_secs(30),
    }
}

async fn drill(fake: &Fake, plan: &DrillPlan) -> DrillReport {
    run(fake, fake, plan, &limits()).await
}

fn results(report: &DrillReport) -> Vec<(&str, StepResult)> {
    report
        .steps
        .iter()
        .map(|s| (s.step.as_str(), s.result))
        .collect()
}

use StepResult::{Failed, Ok as Done, Skipped};

#[tokio::test]
async fn a_drill_builds_verifies_and_deletes_its_cache() {
    let fake = Fake::new();
    let report = drill(&fake, &plan(false)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(
        results(&report),
        [
            ("create", Done),
            ("wait_available", Done),
            ("verify", Done),
            ("delete", Done)
        ]
    );
    assert_eq!(report.failed_step, None);
    assert_eq!(report.error, None);
    assert_eq!(
        report.endpoint.as_deref(),
        Some("app-sessions-dr-drill-20261126t0715z-x1.serverless.usw2.cache.amazonaws.com:6379")
    );
    assert!(!report.cache_remains && !report.kept);
    assert!(report.within_rto);
    assert_eq!(report.rto_ms, 4 * 3600 * 1000);
    assert!(report.rto_ratio < 0.001);
    assert!(report.recovery_ms <= report.total_ms);
    assert_eq!(report.record_ttl_s, 30);
    assert_eq!(fake.count("create"), 1);
    assert_eq!(fake.count("delete"), 1);
    assert_eq!(
        fake.cloud().cache.as_ref().map(|c| c.0.clone()),
        Some(CacheStatus::Deleting)
    );
}

#[tokio::test]
async fn keep_leaves_the_cache_running() {
    let fake = Fake::new();
    let report = drill(&fake, &plan(true)).await;
    assert!(report.ok);
    assert_eq!(report.steps[3].result, Skipped);
    assert!(report.steps[3].detail.contains("--keep"));
    assert!(report.kept && report.cache_remains);
    assert_eq!(fake.count("delete"), 0);
    assert_eq!(
        fake.cloud().cache.as_ref().map(|c| c.0.clone()),
        Some(CacheStatus::Available)
    );
}

#[tokio::test]
async fn create_failed_fails_the_drill_and_still_deletes() {
    let fake = Fake::new();
    fake.cloud().create_fails = true;
    let report = drill(&fake, &plan(false)).await;
    assert!(!report.ok && !report.within_rto);
    assert_eq!(
        results(&report),
        [
            ("create", Done),
            ("wait_available", Failed),
            ("verify", Skipped),
            ("delete", Done)
        ]
    );
    assert_eq!(report.failed_step.as_deref(), Some("wait_available"));
    assert!(report.error.as_deref().unwrap().contains("create-failed"));
    assert!(!report.cache_remains);
}

#[tokio::test]
async fn a_cache_stuck_creating_times_out_and_is_reported_left_behind() {
    let fake = Fake::new();
    fake.cloud().creating_for = u32::MAX;
    let mut plan = plan(false);
    plan.create_timeout = Duration::from_millis(30);
    let report = drill(&fake, &plan).await;
    assert!(!report.ok);
    assert_eq!(report.failed_step.as_deref(), Some("wait_available"));
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("not available after"),
        "{report:#?}"
    );
    // Still `creating`, so AWS refuses the delete until the bound passes.
    assert_eq!(report.steps[3].result, Failed);
    assert!(report.steps[3].detail.contains("by hand"));
    assert!(report.cache_remains);
}

#[tokio::test]
async fn transient_describe_errors_count_as_still_waiting() {
    let fake = Fake::new();
    fake.fail("describe", [transient("describe"), transient("describe")]);
    let report = drill(&fake, &plan(false)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(report.steps[1].step, "wait_available");
    assert_eq!(report.steps[1].result, Done, "{report:#?}");
    // Both errors were answered (the queue is empty), to the wait's first Describe calls:
    // three more made the cache available, after the two that failed.
    assert!(
        fake.cloud().errors["describe"].is_empty(),
        "an injected error was never hit"
    );
    let describes_in_the_wait = fake
        .cloud()
        .calls
        .iter()
        .skip_while(|c| **c != "create")
        .take_while(|c| **c != "delete")
        .filter(|c| **c == "describe")
        .count();
    assert!(
        describes_in_the_wait >= 5,
        "{describes_in_the_wait} Describe calls in the wait: {:?}",
        fake.cloud().calls
    );
}

#[tokio::test]
async fn a_permanent_describe_error_fails_the_wait() {
    let fake = Fake::new();
    fake.cloud().creating_for = 0;
    fake.fail(
        "describe",
        [ApiError::Permanent {
            call: "elasticache:DescribeServerlessCaches".into(),
            message: "AccessDenied: no".into(),
        }],
    );
    let report = drill(&fake, &plan(false)).await;
    assert_eq!(report.failed_step.as_deref(), Some("wait_available"));
    assert!(report.error.as_deref().unwrap().contains("AccessDenied"));
    assert_eq!(report.steps[3].result, Done, "the cache is still deleted");
}

#[tokio::test]
async fn a_refused_create_leaves_nothing_to_delete() {
    let fake = Fake::new();
    fake.fail(
        "create",
        [ApiError::Permanent {
            call: "elasticache:CreateServerlessCache".into(),
            message: "InvalidParameterValue: subnet".into(),
        }],
    );
    let report = drill(&fake, &plan(false)).await;
    assert_eq!(
        results(&report),
        [
            ("create", Failed),
            ("wait_available", Skipped),
            ("verify", Skipped),
            ("delete", Skipped)
        ]
    );
    assert_eq!(report.failed_step.as_deref(), Some("create"));
    assert!(!report.cache_remains);
    assert_eq!(fake.count("delete"), 0);
}

#[tokio::test]
async fn a_lost_create_answer_is_retried_and_the_cache_adopted() {
    let fake = Fake::new();
    // The first attempt creates the cache, but its answer is lost.
    fake.cloud().cache = Some((CacheStatus::Creating, 1));
    fake.cloud().tags = BTreeMap::from([(DRILL_TAG.into(), "20261126t0715z".into())]);
    fake.fail("create", [transient("create")]);
    let report = drill(&fake, &plan(false)).await;
    assert!(report.ok, "{report:#?}");
    assert!(report.steps[0].detail.contains("earlier attempt"));
    assert_eq!(fake.count("create"), 2);
}

#[tokio::test]
async fn a_cache_of_that_name_that_is_not_ours_is_left_alone() {
    let fake = Fake::new();
    fake.cloud().cache = Some((CacheStatus::Available, 0));
    fake.cloud().tags = BTreeMap::from([(DRILL_TAG.into(), "20261126t0714z".into())]);
    let report = drill(&fake, &plan(false)).await;
    assert_eq!(report.failed_step.as_deref(), Some("create"));
    assert!(report.error.as_deref().unwrap().contains("already exists"));
    assert_eq!(report.steps[3].result, Skipped);
    assert_eq!(fake.count("delete"), 0);
    assert!(!report.cache_remains, "nothing of this drill remains");
}

/// Issue 8, defect 7: the SDK retries a Create inside one call after a timeout or a 5xx that
/// had in fact created the cache; the retry's AlreadyExists reaches the drill on its first
/// attempt. The drill tag says the cache is this drill's: it is verified and deleted, not
/// left running and billed.
#[tokio::test]
async fn an_already_exists_for_our_own_cache_is_ours_and_deleted() {
    let fake = Fake::new();
    fake.cloud().cache = Some((CacheStatus::Creating, 2));
    fake.cloud().tags = BTreeMap::from([(DRILL_TAG.into(), "20261126t0715z".into())]);
    let report = drill(&fake, &plan(false)).await;
    assert!(report.ok, "{report:#?}");
    assert_eq!(fake.count("create"), 1);
    assert!(
        fake.count("tags") >= 2,
        "tags were refused while creating, then read"
    );
    assert_eq!(report.steps[3].result, Done, "{report:#?}");
    assert_eq!(fake.count("delete"), 1);
    assert!(!report.cache_remains);
}

#[tokio::test]
async fn create_that_never_answers_still_tries_to_delete() {
    let fake = Fake::new();
    fake.fail("create", (0..3).map(|_| transient("create")));
    let report = drill(&fake, &plan(false)).await;
    assert_eq!(report.failed_step.as_deref(), Some("create"));
    assert_eq!(fake.count("create"), 3);
    assert_eq!(report.steps[3].result, Done);
    assert_eq!(fake.count("delete"), 1);
}

#[tokio::test]
async fn verify_is_retried_a_bounded_number_of_times() {
    let fake = Fake::new();
    fake.cloud().verify_failures = 2;
    let report = drill(&fake, &plan(false)).await;
    assert!(report.ok);
    assert!(report.steps[2].detail.contains("attempt 3"));

    let fake = Fake::new();
    fake.cloud().verify_failures = 10;
    let report = drill(&fake, &plan(false)).await;
    assert_eq!(report.failed_step.as_deref(), Some("verify"));
    assert!(
        report
            .error
            .as_deref()
            .unwrap()
            .contains("after 3 attempts")
    );
    assert_eq!(fake.count("verify"), 3);
    assert!(!report.within_rto);
    assert_eq!(report.steps[3].result, Done, "a failed drill still deletes");
}

#[tokio::test]
async fn a_delete_refused_for_good_fails_the_drill() {
    let fake = Fake::new();
    fake.fail(
        "delete",
        [ApiError::Permanent {
            call: "elasticache:DeleteServerlessCache".into(),
            message: "AccessDenied: no".into(),
        }],
    );
    let report = drill(&fake, &plan(false)).await;
    assert!(!report.ok);
    assert!(
        report.within_rto,
        "the cache served in time; only cleanup failed"
    );
    assert_eq!(report.failed_step.as_deref(), Some("delete"));
    assert!(report.cache_remains);
}

#[test]
fn the_drill_id_is_the_utc_minute() {
    let at = humantime::parse_rfc3339("2026-11-26T07:15:42Z").unwrap();
    assert_eq!(drill_id(at), "20261126t0715z");
}

/// No environment at all: the test configs need none.
struct NoEnv;

impl crate::config::Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
    fn read_file(&self, path: &Path) -> std::io::Result<String> {
        Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            path.display().to_string(),
        ))
    }
    fn hostname(&self) -> Option<String> {
        Some("test-host".into())
    }
}

fn watch() -> WatchConfig {
    let config = crate::config::Config::parse(
        r#"
[agent]
id = "a"
state_dir = "/tmp/x"
[[watch]]
name = "sessions"
record = "valkey.app.internal."
hosted_zone_id = "Z1"
[watch.primary]
region = "us-east-1"
cache_name = "app-sessions"
endpoint = "app-sessions-abc.serverless.use1.cache.amazonaws.com"
[watch.dr]
region = "us-west-2"
cache_name = "app-sessions-dr"
subnet_ids = ["subnet-1"]
security_group_ids = ["sg-1"]
tags = { app = "sessions" }
[watch.probe]
tls = false
"#,
        Path::new("agent.toml"),
        &NoEnv,
    )
    .expect("the test config is valid");
    config.watches[0].clone()
}

#[test]
fn the_spec_is_the_failovers_under_the_drill_name() {
    let w = watch();
    let name = cache_name(&w, "20261126t0715z").unwrap();
    assert_eq!(name, NAME);
    let spec = cache_spec(&w, &name, "20261126t0715z");
    assert_eq!(spec.name(), NAME);
    assert_eq!(spec.region, "us-west-2");
    let input = serde_json::to_value(&spec.input).unwrap();
    assert_eq!(input["ServerlessCacheName"], NAME);
    assert_eq!(input["SubnetIds"], serde_json::json!(["subnet-1"]));
    assert_eq!(
        input["Tags"],
        serde_json::json!([
            {"Key": "app", "Value": "sessions"},
            {"Key": "valkey-dr:drill", "Value": "20261126t0715z"},
        ])
    );
    assert!(input["Description"].as_str().unwrap().contains("drill"));
    assert_eq!(spec.tag(DRILL_TAG), Some("20261126t0715z"));
    assert_eq!(spec.tag(crate::executor::FAILOVER_TAG), None);
}

#[test]
fn a_drill_name_longer_than_elasticache_allows_is_a_setup_error() {
    let mut w = watch();
    w.dr.cache_name = "a-very-long-dr-cache-name".into();
    let err = cache_name(&w, "20261126t0715z").unwrap_err();
    assert_eq!(err.exit_code(), 2);
    let text = err.to_string();
    assert!(text.contains("at most 19 characters"), "{text}");
}

#[test]
fn reports_go_under_the_drills_directory() {
    assert_eq!(
        report_path(
            Path::new("/var/lib/valkey-dr"),
            "sessions",
            "20261126t0715z"
        ),
        Path::new("/var/lib/valkey-dr/drills/drill-sessions-20261126t0715z.json")
    );
}

#[tokio::test]
async fn the_text_report_names_every_step_and_the_verdict() {
    let fake = Fake::new();
    fake.cloud().create_fails = true;
    let report = drill(&fake, &plan(false)).await;
    let text = to_text(&report, Some(Path::new("/s/drills/d.json")));
    for word in STEPS {
        assert!(text.contains(word), "{text}");
    }
    assert!(text.contains("FAILED"), "{text}");
    assert!(text.contains("failed at wait_available"), "{text}");
    assert!(text.contains("NOT within RTO"), "{text}");
    assert!(text.contains("report: /s/drills/d.json"), "{text}");
    let json = serde_json::to_value(&report).unwrap();
    for key in [
        "watch",
        "drill_id",
        "cache_name",
        "region",
        "started_at",
        "finished_at",
        "ok",
        "failed_step",
        "error",
        "endpoint",
        "kept",
        "cache_remains",
        "steps",
        "total_ms",
        "recovery_ms",
        "rto_ms",
        "rto_ratio",
        "within_rto",
        "record_ttl_s",
    ] {
        assert!(json.get(key).is_some(), "no {key} in {json}");
    }
}

fn past(dir: &Path, id: &str, ok: bool, create_ms: u64, wait_ms: u64) {
    let step = |name: &str, ms: u64, result: StepResult| StepReport {
        step: name.into(),
        result,
        duration_ms: ms,
        detail: String::new(),
    };
    let report = DrillReport {
        watch: "sessions".into(),
        drill_id: id.into(),
        cache_name: format!("app-sessions-dr-drill-{id}"),
        region: "us-west-2".into(),
        started_at: format!("2026-0{}-01T00:00:00Z", &id[5..6]),
        finished_at: format!("2026-0{}-01T00:10:00Z", &id[5..6]),
        ok,
        failed_step: (!ok).then(|| "wait_available".into()),
        error: None,
        endpoint: None,
        kept: false,
        cache_remains: false,
        steps: vec![
            step("create", create_ms, StepResult::Ok),
            step(
                "wait_available",
                wait_ms,
                if ok {
                    StepResult::Ok
                } else {
                    StepResult::Failed
                },
            ),
            step(
                "verify",
                100,
                if ok {
                    StepResult::Ok
                } else {
                    StepResult::Skipped
                },
            ),
            step("delete", 900, StepResult::Ok),
        ],
        total_ms: create_ms + wait_ms + 1000,
        recovery_ms: create_ms + wait_ms + 100,
        rto_ms: RTO.as_millis() as u64,
        rto_ratio: 0.0,
        within_rto: ok,
        record_ttl_s: 30,
    };
    store::write_json(&report_path(dir, "sessions", id), &report).unwrap();
}

#[test]
fn history_lists_drills_oldest_first_and_flags_slow_provisioning() {
    let dir = tempfile::tempdir().unwrap();
    store::ensure_dir(&dir.path().join("drills")).unwrap();
    // Written out of order; ids sort by their month here.
    past(dir.path(), "20260301t0000z", true, 1_000, 9_000); // 10 s
    past(dir.path(), "20260101t0000z", true, 1_000, 7_000); // 8 s
    past(dir.path(), "20260201t0000z", false, 1_000, 60_000); // failed: no provisioning
    past(dir.path(), "20260401t0000z", true, 2_000, 20_000); // 22 s > 2 x median(8, 10) = 18
    // Another watch's report and a stray file are not this watch's history.
    let mut other: DrillReport =
        store::read_json(&report_path(dir.path(), "sessions", "20260101t0000z"))
            .unwrap()
            .unwrap();
    other.watch = "sessions-b".into();
    store::write_json(
        &report_path(dir.path(), "sessions-b", "20260101t0000z"),
        &other,
    )
    .unwrap();
    std::fs::write(dir.path().join("drills").join("drill-sessions-x.json"), "{").unwrap();

    let h = history(dir.path(), "sessions").unwrap();
    let ids: Vec<&str> = h.iter().map(|d| d.drill_id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "20260101t0000z",
            "20260201t0000z",
            "20260301t0000z",
            "20260401t0000z"
        ]
    );
    assert_eq!(h[0].provisioning_ms, Some(8_000));
    assert_eq!(h[0].baseline_ms, None);
    assert_eq!(
        h[1].provisioning_ms, None,
        "a failed wait is no provisioning time"
    );
    assert_eq!(h[2].baseline_ms, Some(8_000));
    assert!(!h[2].slow, "10 s against 8 s");
    assert_eq!(h[3].baseline_ms, Some(9_000), "the median of 8 s and 10 s");
    assert!(h[3].slow, "22 s is over twice 9 s");
    assert_eq!(h[3].phases_ms["wait_available"], 20_000);
    assert!(
        !h[1].phases_ms.contains_key("verify"),
        "skipped steps are left out"
    );

    let text = history_text("sessions", &h);
    assert_eq!(text.matches("SLOW").count(), 1, "{text}");
    assert!(text.contains("failed at wait_available"), "{text}");

    let (finished, phases) = last_ok(dir.path(), "sessions").unwrap();
    assert_eq!(
        finished,
        humantime::parse_rfc3339_weak("2026-04-01T00:10:00Z").unwrap()
    );
    assert!(phases.contains(&("create".to_owned(), Duration::from_secs(2))));
    assert!(history(dir.path(), "nobody").unwrap().is_empty());
    assert!(
        history(&dir.path().join("missing"), "sessions")
            .unwrap()
            .is_empty()
    );
}
