//! The step machine against an in-memory cloud with AWS's documented semantics: atomic change
//! batches, exact-match DELETE, CREATE failing on an existing record, and caches that go
//! `creating` → `available`.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::api::CacheStatus;
use super::*;
use crate::config::GateAt;

const ZONE: &str = "ZTEST";
const RECORD: &str = "valkey.app.internal.";
const OLD: &str = "primary-abc.serverless.use1.cache.amazonaws.com.";

#[derive(Default)]
struct Cloud {
    caches: BTreeMap<String, (CacheInfo, BTreeMap<String, String>, u32)>,
    records: BTreeMap<(String, String), RecordSet>,
    /// Every create and change sent, in order, with its outcome: refused ones too, so that a
    /// second create (which the fake refuses as AlreadyExists) or a second flip (refused by
    /// the compare-and-swap) is still seen.
    attempts: Vec<Attempt>,
    /// Transient failures to return before the next success, per call name.
    transient: BTreeMap<&'static str, u32>,
    /// Describe calls a new cache stays `creating` for (u32::MAX: stuck).
    creating_for: u32,
    create_fails: bool,
    /// Fails this call permanently once (a stand-in for a crash after the previous step).
    fail_once: Option<&'static str>,
    /// Describe calls a new cache stays invisible for (AWS's eventual consistency).
    invisible_for: u32,
    /// Describe calls each hidden cache has left before it shows.
    hidden: BTreeMap<String, u32>,
    /// At the switch's read of the record (between the lease and the switch), another agent
    /// takes the lease over, as after a long pause of ours.
    steal_lease_before_switch: bool,
    /// Fails the next call, whatever it is, permanently once (armed at a journal entry).
    fail_next: bool,
    /// How many calls `fail_once`, `fail_next` and `transient` failed.
    injected: u32,
    /// The next this-many change batches that touch the CNAME (`.0`) or only the lease
    /// (`.1`) are applied, and their answers lost (a transient error instead): the
    /// executor's retry re-sends what already committed, as the SDK does after a timeout.
    commit_then_drop: (u32, u32),
    /// Route 53's API answers every call with a transient error while set.
    route53_down: bool,
    /// The DR region's ElastiCache API refuses every call while set.
    elasticache_down: bool,
    /// The warm standby refuses connections (`verify_direct` of it fails).
    standby_refuses: bool,
    /// The keys the warm standby holds.
    standby_keys: u64,
    /// `GetChange` answers `PENDING` for ever (Route 53's API stuck), so only the data plane
    /// can say the change is in effect.
    change_stays_pending: bool,
    /// `verify_direct` fails on the agent's own side (its resolver refuses the DR name).
    own_resolver_refuses: bool,
    /// The keys the old primary holds (its sessions), for a failback's flush.
    primary_keys: u64,
    /// Every flush sent to the primary, in order.
    flushes: u32,
    /// The probe user may not flush (its access string denies `FLUSHALL`).
    flush_denied: bool,
    /// The first `DBSIZE` after a flush fails (a stand-in for a crash between the flush and
    /// its journal entry).
    fail_count_after_flush: bool,
}

/// A mutating call that the fake counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    /// `CreateServerlessCache`.
    Create,
    /// A change batch that touches the CNAME (the lease's TXT alone is not one).
    CnameChange,
}

/// One mutating call as the fake answered it.
#[derive(Debug, Clone)]
struct Attempt {
    what: Mutation,
    /// `None` when it succeeded; the error otherwise.
    refused: Option<String>,
}

impl Cloud {
    /// The calls of `what` that succeeded.
    fn succeeded(&self, what: Mutation) -> usize {
        self.of(what).filter(|a| a.refused.is_none()).count()
    }

    /// The calls of `what` sent, refused or not.
    fn attempted(&self, what: Mutation) -> usize {
        self.of(what).count()
    }

    /// The calls of `what` sent after the first one that succeeded: a second create or flip,
    /// even one that the cloud refused.
    fn after_success(&self, what: Mutation) -> Vec<Attempt> {
        self.of(what)
            .skip_while(|a| a.refused.is_some())
            .skip(1)
            .cloned()
            .collect()
    }

    fn of(&self, what: Mutation) -> impl Iterator<Item = &Attempt> {
        self.attempts.iter().filter(move |a| a.what == what)
    }
}

/// Exactly one `what` succeeded and none was even attempted after it.
#[track_caller]
fn assert_once(fake: &Fake, what: Mutation, context: &str) {
    let c = fake.cloud();
    assert_eq!(
        c.succeeded(what),
        1,
        "{context}: successful {what:?} calls: {:?}",
        c.attempts
    );
    assert!(
        c.after_success(what).is_empty(),
        "{context}: {what:?} attempted after the first succeeded: {:?}",
        c.after_success(what)
    );
}

/// `what` was never even attempted.
#[track_caller]
fn assert_never(fake: &Fake, what: Mutation, context: &str) {
    let c = fake.cloud();
    assert_eq!(
        c.attempted(what),
        0,
        "{context}: {what:?} attempted: {:?}",
        c.attempts
    );
}

struct Fake(Mutex<Cloud>);

impl Fake {
    fn new() -> Fake {
        let mut cloud = Cloud {
            creating_for: 2,
            ..Cloud::default()
        };
        cloud.records.insert(
            (RECORD.into(), "CNAME".into()),
            RecordSet {
                name: RECORD.into(),
                rtype: "CNAME".into(),
                ttl: 30,
                values: vec![OLD.into()],
            },
        );
        Fake(Mutex::new(cloud))
    }

    fn cloud(&self) -> std::sync::MutexGuard<'_, Cloud> {
        self.0.lock().unwrap()
    }

    fn fault(&self, call: &'static str) -> Result<(), ApiError> {
        let mut c = self.cloud();
        if c.route53_down && matches!(call, "record" | "change" | "change_status") {
            return Err(ApiError::Transient {
                call: call.into(),
                message: "ServiceUnavailable".into(),
            });
        }
        if c.elasticache_down && matches!(call, "describe" | "create" | "tags" | "delete") {
            return Err(ApiError::Permanent {
                call: call.into(),
                message: "the DR region's API is down".into(),
            });
        }
        if c.fail_once == Some(call) || c.fail_next {
            c.fail_once = c.fail_once.filter(|f| *f != call);
            c.fail_next = false;
            c.injected += 1;
            return Err(ApiError::Permanent {
                call: call.into(),
                message: "injected".into(),
            });
        }
        if let Some(n) = c.transient.get_mut(call).filter(|n| **n > 0) {
            *n -= 1;
            c.injected += 1;
            return Err(ApiError::Transient {
                call: call.into(),
                message: "Throttling".into(),
            });
        }
        Ok(())
    }

    fn cname(&self) -> Vec<String> {
        self.cloud().records[&(RECORD.to_owned(), "CNAME".to_owned())]
            .values
            .clone()
    }

    /// Keeps `what`'s outcome in the record of attempts.
    fn attempted<T>(&self, what: Mutation, outcome: Result<T, ApiError>) -> Result<T, ApiError> {
        self.cloud().attempts.push(Attempt {
            what,
            refused: outcome.as_ref().err().map(ToString::to_string),
        });
        outcome
    }

    fn create_now(&self, spec: &CacheSpec) -> Result<CacheInfo, ApiError> {
        self.fault("create")?;
        let mut c = self.cloud();
        let name = spec.name().to_owned();
        if c.caches.contains_key(&name) {
            return Err(ApiError::AlreadyExists { name });
        }
        let info = CacheInfo {
            name: name.clone(),
            arn: format!(
                "arn:aws:elasticache:{}:1:serverlesscache:{name}",
                spec.region
            ),
            status: CacheStatus::Creating,
            endpoint: None,
        };
        let wait = c.creating_for;
        let tags = spec
            .input
            .tags
            .iter()
            .map(|t| (t.key.clone(), t.value.clone()))
            .collect();
        c.caches.insert(name.clone(), (info.clone(), tags, wait));
        let invisible_for = c.invisible_for;
        if invisible_for > 0 {
            c.hidden.insert(name, invisible_for);
        }
        Ok(info)
    }

    fn change_now(&self, changes: &[Change]) -> Result<String, ApiError> {
        self.fault("change")?;
        let mut c = self.cloud();
        let mut next = c.records.clone();
        for change in changes {
            match change {
                Change::Delete(r) => {
                    let key = (r.name.clone(), r.rtype.clone());
                    if next.get(&key) != Some(r) {
                        return Err(ApiError::Conflict {
                            message: format!(
                                "Tried to delete resource record set [name='{}', type='{}'] but the values provided do not match the current values",
                                r.name, r.rtype
                            ),
                        });
                    }
                    next.remove(&key);
                }
                Change::Create(r) => {
                    let key = (r.name.clone(), r.rtype.clone());
                    if next.contains_key(&key) {
                        return Err(ApiError::Conflict {
                            message: format!(
                                "Tried to create resource record set [name='{}', type='{}'] but it already exists",
                                r.name, r.rtype
                            ),
                        });
                    }
                    next.insert(key, r.clone());
                }
            }
        }
        c.records = next;
        let touches_cname = changes
            .iter()
            .any(|ch| matches!(ch, Change::Create(r) | Change::Delete(r) if r.rtype == "CNAME"));
        let drop = if touches_cname {
            &mut c.commit_then_drop.0
        } else {
            &mut c.commit_then_drop.1
        };
        if *drop > 0 {
            *drop -= 1;
            c.injected += 1;
            return Err(ApiError::Transient {
                call: "route53:ChangeResourceRecordSets".into(),
                message: "operation timed out (the change committed)".into(),
            });
        }
        Ok("/change/C1".into())
    }
}

impl CacheApi for Fake {
    async fn create(&self, spec: &CacheSpec) -> Result<CacheInfo, ApiError> {
        let outcome = self.create_now(spec);
        self.attempted(Mutation::Create, outcome)
    }

    async fn describe(&self, name: &str) -> Result<Option<CacheInfo>, ApiError> {
        self.fault("describe")?;
        let mut c = self.cloud();
        if let Some(n) = c.hidden.get_mut(name).filter(|n| **n > 0) {
            *n -= 1;
            return Ok(None);
        }
        let fails = c.create_fails;
        Ok(c.caches.get_mut(name).map(|(info, _, wait)| {
            if *wait == 0 && info.status == CacheStatus::Creating {
                if fails {
                    info.status = CacheStatus::CreateFailed;
                } else {
                    info.status = CacheStatus::Available;
                    info.endpoint = Some((
                        format!("{name}-xyz.serverless.usw2.cache.amazonaws.com"),
                        6379,
                    ));
                }
            } else if *wait != u32::MAX {
                *wait = wait.saturating_sub(1);
            }
            info.clone()
        }))
    }

    async fn tags(&self, arn: &str) -> Result<BTreeMap<String, String>, ApiError> {
        self.fault("tags")?;
        let c = self.cloud();
        let (info, tags, _) = c
            .caches
            .values()
            .find(|(i, _, _)| i.arn == arn)
            .cloned()
            .unwrap_or((
                CacheInfo {
                    name: String::new(),
                    arn: arn.into(),
                    status: CacheStatus::Available,
                    endpoint: None,
                },
                BTreeMap::new(),
                0,
            ));
        // AWS refuses tags of a cache that is creating or deleting.
        if matches!(info.status, CacheStatus::Creating | CacheStatus::Deleting) {
            return Err(ApiError::NotReady {
                call: "elasticache:ListTagsForResource".into(),
                message: format!(
                    "InvalidServerlessCacheStateFault: {} is {}",
                    info.name,
                    info.status.as_str()
                ),
            });
        }
        Ok(tags)
    }

    async fn delete(&self, name: &str) -> Result<(), ApiError> {
        self.fault("delete")?;
        self.cloud().caches.remove(name);
        Ok(())
    }
}

impl DnsApi for Fake {
    async fn record(
        &self,
        _zone: &str,
        name: &str,
        rtype: &str,
    ) -> Result<Option<RecordSet>, ApiError> {
        self.fault("record")?;
        let mut c = self.cloud();
        if c.steal_lease_before_switch && rtype == "CNAME" {
            // Once we hold the lease, the switch's own read of the record is the moment
            // another agent takes it over (a long pause of ours, a clock that jumped).
            let mut other = plan(true);
            other.failover_id = "fo-other".into();
            other.owner = "agent-b".into();
            let value = lease_value(&other, SystemTime::now() + Duration::from_secs(600));
            for ((name, rtype), set) in c.records.iter_mut() {
                if rtype == "TXT" && name == &other.lease_name() {
                    set.values = vec![value.clone()];
                }
            }
        }
        Ok(c.records.get(&(name.to_owned(), rtype.to_owned())).cloned())
    }

    async fn change(&self, _zone: &str, changes: &[Change]) -> Result<String, ApiError> {
        let outcome = self.change_now(changes);
        if changes
            .iter()
            .any(|ch| matches!(ch, Change::Create(r) | Change::Delete(r) if r.rtype == "CNAME"))
        {
            self.attempted(Mutation::CnameChange, outcome)
        } else {
            outcome
        }
    }

    async fn change_status(&self, _id: &str) -> Result<ChangeStatus, ApiError> {
        self.fault("change_status")?;
        if self.cloud().change_stays_pending {
            return Ok(ChangeStatus::Pending);
        }
        Ok(ChangeStatus::InSync)
    }
}

impl Verifier for Fake {
    async fn direct(&self, endpoint: &str, _port: u16) -> Result<(), VerifyFailure> {
        self.fault("direct").map_err(|e| VerifyFailure {
            message: e.to_string(),
            own_side: false,
        })?;
        let c = self.cloud();
        if c.standby_refuses && valkey_dr_probes::same_name(endpoint, STANDBY) {
            return Err(VerifyFailure {
                message: format!("{endpoint}: connect: connection refused"),
                own_side: false,
            });
        }
        if c.own_resolver_refuses {
            return Err(VerifyFailure {
                message: format!(
                    "{endpoint}: resolve: dns_error: the resolver answered Query Refused"
                ),
                own_side: true,
            });
        }
        Ok(())
    }
    async fn through_record(&self, endpoint: &str) -> Result<(), String> {
        self.fault("through_record").map_err(|e| e.to_string())?;
        let values = self.cname();
        if values
            .iter()
            .any(|v| valkey_dr_probes::same_name(v, endpoint))
        {
            Ok(())
        } else {
            Err(format!("record points at {values:?}"))
        }
    }

    async fn resolves_to(&self, endpoint: &str) -> bool {
        self.cname()
            .iter()
            .any(|v| valkey_dr_probes::same_name(v, endpoint))
    }

    async fn count_keys(&self, _endpoint: &str, _port: u16) -> Result<u64, VerifyFailure> {
        self.fault("count_keys").map_err(|e| VerifyFailure {
            message: e.to_string(),
            own_side: false,
        })?;
        let mut c = self.cloud();
        if valkey_dr_probes::same_name(_endpoint, STANDBY) {
            return Ok(c.standby_keys);
        }
        if c.fail_count_after_flush && c.flushes > 0 {
            c.fail_count_after_flush = false;
            return Err(VerifyFailure {
                message: "DBSIZE: connection lost".into(),
                own_side: false,
            });
        }
        Ok(c.primary_keys)
    }

    async fn flush(&self, endpoint: &str, _port: u16) -> Result<(), VerifyFailure> {
        self.fault("flush").map_err(|e| VerifyFailure {
            message: e.to_string(),
            own_side: false,
        })?;
        let mut c = self.cloud();
        if c.flush_denied {
            return Err(VerifyFailure {
                message: format!(
                    "{endpoint}: FLUSHALL ASYNC refused: NOPERM User probe has no permissions to run the 'flushall' command"
                ),
                own_side: false,
            });
        }
        if valkey_dr_probes::same_name(endpoint, STANDBY) {
            c.standby_keys = 0;
            return Ok(());
        }
        c.flushes += 1;
        c.primary_keys = 0;
        Ok(())
    }
}

fn plan(lease: bool) -> Plan {
    Plan {
        failover_id: "fo-1".into(),
        watch: "sessions".into(),
        owner: "agent-a".into(),
        hosted_zone_id: ZONE.into(),
        record: RECORD.into(),
        ttl: 30,
        cache: CacheSpec {
            region: "us-west-2".into(),
            input: api::CreateRequest {
                serverless_cache_name: "app-sessions-dr".into(),
                tags: vec![
                    api::Tag {
                        key: FAILOVER_TAG.into(),
                        value: "fo-1".into(),
                    },
                    api::Tag {
                        key: WATCH_TAG.into(),
                        value: "sessions".into(),
                    },
                    api::Tag {
                        key: RECORD_TAG.into(),
                        value: RECORD.into(),
                    },
                ],
                ..Default::default()
            },
        },
        create_timeout: Duration::from_secs(5),
        lease: lease.then(|| Duration::from_secs(600)),
        adopt_existing: false,
        kind: Kind::Failover,
        approval: false,
        automatic: false,
        expected_target: None,
        standby: None,
    }
}

fn limits() -> ExecutorLimits {
    ExecutorLimits {
        attempts: 5,
        backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
        route53_max_backoff: Duration::from_millis(5),
        poll: Duration::from_millis(1),
        not_found_grace: Duration::from_secs(2),
        insync_timeout: Duration::from_secs(5),
        alert_every: Duration::from_secs(60),
        lease_poll: Duration::from_millis(5),
    }
}

async fn run(
    fake: &Fake,
    dir: &std::path::Path,
    journal: Journal,
) -> Result<Journal, (Journal, FailoverError)> {
    run_with(fake, dir, journal, None).await
}

/// The executor over `fake`, its journal in `dir`, held by `holding` when given.
async fn run_with(
    fake: &Fake,
    dir: &std::path::Path,
    journal: Journal,
    holding: Option<&Holding<'_>>,
) -> Result<Journal, (Journal, FailoverError)> {
    let progress = |_: &Journal, _: &JournalEntry| {};
    Executor {
        cache: fake,
        dns: fake,
        verify: fake,
        path: dir.join("failover.json"),
        limits: limits(),
        progress: &progress,
        alert: &|_, _| {},
        lease_clock: LeaseClock::default(),
        holding,
    }
    .run(journal)
    .await
}

/// The executor over `fake`, its journal in `dir`, telling `alert` what keeps failing.
fn alerting<'a>(
    fake: &'a Fake,
    dir: &std::path::Path,
    alert: &'a (dyn Fn(Step, &str) + Send + Sync),
) -> Executor<'a, Fake, Fake, Fake> {
    fn no_progress(_: &Journal, _: &JournalEntry) {}
    Executor {
        cache: fake,
        dns: fake,
        verify: fake,
        path: dir.join("failover.json"),
        limits: limits(),
        progress: &no_progress,
        alert,
        lease_clock: LeaseClock::default(),
        holding: None,
    }
}

/// A gate that is open while `file` exists: a real program, as operators write them.
fn file_gate(at: GateAt, file: &std::path::Path) -> crate::config::GateConfig {
    crate::config::GateConfig {
        name: "vpn".into(),
        at,
        check: crate::config::GateCheck::Command {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "test -f {} || {{ echo 'vpn not failed over' >&2; exit 1; }}",
                    file.display()
                ),
            ],
        },
        timeout: Duration::from_secs(5),
        on_timeout: crate::config::OnTimeout::Hold,
    }
}

/// Runs with gates and approvals; every hold's news is kept.
async fn run_held(
    fake: &Fake,
    dir: &std::path::Path,
    journal: Journal,
    gates: &Gates,
    approvals: &Approvals,
    news: &Mutex<Vec<HoldNews>>,
) -> Result<Journal, (Journal, FailoverError)> {
    let heard = |_: &Journal, n: &HoldNews| news.lock().unwrap().push(n.clone());
    let holding = Holding {
        gates,
        gate_interval: Duration::from_millis(20),
        reminder_interval: Duration::from_millis(100),
        approvals,
        news: &heard,
    };
    run_with(fake, dir, journal, Some(&holding)).await
}

/// Waits (bounded) until the journal on disk is held before `step`.
async fn until_held(dir: &std::path::Path, step: Step) -> Journal {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(j)) = store::read_json::<Journal>(&dir.join("failover.json"))
            && j.held().is_some_and(|h| h.step == step)
        {
            return j;
        }
        if tokio::time::Instant::now() >= deadline {
            let j = store::read_json::<Journal>(&dir.join("failover.json"));
            panic!("never held before {step:?}: {j:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until the journal on disk is held with at least `checks` checks and `also`
/// holds.
async fn until_checks(dir: &std::path::Path, checks: u32, also: impl Fn() -> bool) -> Journal {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(j)) = store::read_json::<Journal>(&dir.join("failover.json"))
            && j.held().is_some_and(|h| h.checks >= checks)
            && also()
        {
            return j;
        }
        if tokio::time::Instant::now() >= deadline {
            let j = store::read_json::<Journal>(&dir.join("failover.json"));
            panic!("never held with {checks} checks: {j:?}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_closed_switch_dns_gate_holds_with_the_cache_built_and_the_record_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("vpn-failed-over");
    let fake = Fake::new();
    let gates = Gates::new(&[file_gate(GateAt::SwitchDns, &open)]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    let run = run_held(
        &fake,
        dir.path(),
        Journal::new(plan(true)),
        &gates,
        &approvals,
        &news,
    );
    let watch = async {
        let held = until_held(dir.path(), Step::SwitchDns).await;
        assert!(
            held.done(Step::VerifyDirect),
            "built and verified before the hold"
        );
        assert_eq!(held.held().unwrap().gate, "vpn");
        assert_eq!(
            held.held().unwrap().answer,
            "vpn: exit status: 1: vpn not failed over"
        );
        // Held for a few reminders: the record never moves.
        let reminded = || {
            news.lock()
                .unwrap()
                .iter()
                .filter(|n| **n == HoldNews::Held { first: false })
                .count()
        };
        until_checks(dir.path(), 1, || reminded() >= 2).await;
        assert_eq!(fake.cname(), [OLD]);
        assert_once(&fake, Mutation::Create, "held");
        assert_never(&fake, Mutation::CnameChange, "held");
        std::fs::write(&open, "").unwrap();
    };
    let (result, ()) = tokio::join!(run, watch);
    let journal = result.unwrap();
    assert!(journal.complete());
    assert_once(&fake, Mutation::Create, "opened");
    assert_once(&fake, Mutation::CnameChange, "opened");
    let hold = &journal.holds[0];
    assert_eq!(
        (hold.step, hold.how),
        (Step::SwitchDns, Some(HoldEnd::Opened))
    );
    assert!(
        hold.checks >= 5,
        "checked every gate_interval: {}",
        hold.checks
    );
    let news = news.lock().unwrap();
    assert_eq!(news[0], HoldNews::Held { first: true });
    let reminders = news
        .iter()
        .filter(|n| **n == HoldNews::Held { first: false })
        .count();
    assert!(reminders >= 2, "reminded every reminder_interval: {news:?}");
    assert_eq!(news.last(), Some(&HoldNews::Opened));
}

#[tokio::test]
async fn an_approval_lets_a_prepared_failover_switch_and_says_who() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let gates = Gates::new(&[]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    let journal = Journal::new(Plan {
        approval: true,
        ..plan(true)
    });
    let run = run_held(&fake, dir.path(), journal, &gates, &approvals, &news);
    let approve = async {
        let held = until_held(dir.path(), Step::SwitchDns).await;
        assert!(held.held().unwrap().approval);
        assert_eq!(fake.cname(), [OLD]);
        // An approval for another failover, or another step, is stale: it lets nothing by.
        approvals.give(Approval {
            failover_id: "fo-other".into(),
            step: Step::SwitchDns,
            by: "mallory@x".into(),
        });
        // Two more checks of the hold, with the stale approval given: still held.
        let checks = held.held().unwrap().checks;
        let after = until_checks(dir.path(), checks + 2, || true).await;
        assert!(after.held().is_some(), "{:?}", after.holds);
        assert_eq!(fake.cname(), [OLD]);
        approvals.give(Approval {
            failover_id: "fo-1".into(),
            step: Step::SwitchDns,
            by: "alice@ops".into(),
        });
    };
    let (result, ()) = tokio::join!(run, approve);
    let journal = result.unwrap();
    assert!(journal.complete());
    assert_once(&fake, Mutation::CnameChange, "approved");
    let hold = &journal.holds[0];
    assert_eq!(hold.how, Some(HoldEnd::Approved));
    assert_eq!(hold.approved_by.as_deref(), Some("alice@ops"));
    assert!(
        matches!(news.lock().unwrap().last(), Some(HoldNews::Approved(a)) if a.by == "alice@ops")
    );
}

#[tokio::test]
async fn a_provision_gate_that_times_out_with_abort_builds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let gate = crate::config::GateConfig {
        name: "change-freeze".into(),
        at: GateAt::Provision,
        check: crate::config::GateCheck::Command {
            command: vec!["sleep".into(), "10".into()],
        },
        timeout: Duration::from_millis(200),
        on_timeout: crate::config::OnTimeout::Abort,
    };
    let gates = Gates::new(&[gate]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    let (journal, e) = run_held(
        &fake,
        dir.path(),
        Journal::new(plan(true)),
        &gates,
        &approvals,
        &news,
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, FailoverError::GateAborted { ref gate, step: Step::Provision, .. } if gate == "change-freeze"),
        "{e}"
    );
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::Aborted { .. })
    ));
    assert_never(&fake, Mutation::Create, "aborted at provision");
    assert_never(&fake, Mutation::CnameChange, "aborted at provision");
    let c = fake.cloud();
    assert!(
        !c.records
            .keys()
            .any(|(n, _)| n.starts_with("_valkey-dr-lock")),
        "no lease taken"
    );
    assert!(journal.entries.is_empty(), "no step began");
}

#[tokio::test]
async fn a_restart_while_held_stays_held_and_a_begun_switch_is_not_held_again() {
    let dir = tempfile::tempdir().unwrap();
    let open = dir.path().join("open");
    let fake = Fake::new();
    let gates = Gates::new(&[file_gate(GateAt::SwitchDns, &open)]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    // The first run is held, then dropped (as a kill -9 would end it).
    tokio::select! {
        _ = run_held(&fake, dir.path(), Journal::new(plan(true)), &gates, &approvals, &news) => panic!("finished while the gate was closed"),
        j = until_held(dir.path(), Step::SwitchDns) => assert_eq!(j.holds.len(), 1),
    }
    let saved: Journal = store::read_json(&dir.path().join("failover.json"))
        .unwrap()
        .unwrap();
    let checks_before = saved.holds[0].checks;
    // The restart resumes into the same hold (one hold, more checks), builds nothing new.
    let resumed = run_held(&fake, dir.path(), saved, &gates, &approvals, &news);
    let open_later = async {
        // Held on the resumed run: its own checks of the closed gate are on disk.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let j = loop {
            if let Ok(Some(j)) = store::read_json::<Journal>(&dir.path().join("failover.json"))
                && j.runs == 2
                && j.held().is_some_and(|h| h.checks >= checks_before + 2)
            {
                break j;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the resumed run never checked the gate while held"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        assert_eq!(
            j.holds.len(),
            1,
            "the same hold, not a second: {:?}",
            j.holds
        );
        assert_eq!(j.held().unwrap().step, Step::SwitchDns);
        assert_eq!(fake.cname(), [OLD]);
        assert_once(&fake, Mutation::Create, "held after the restart");
        assert_never(&fake, Mutation::CnameChange, "held after the restart");
        std::fs::write(&open, "").unwrap();
    };
    let (result, ()) = tokio::join!(resumed, open_later);
    assert!(result.unwrap().complete());
    assert_once(&fake, Mutation::Create, "resumed from a hold");
    assert_once(&fake, Mutation::CnameChange, "resumed from a hold");
    // A journal whose switch had begun passed its gates then: never held again.
    std::fs::remove_file(&open).unwrap();
    let dir2 = tempfile::tempdir().unwrap();
    let fresh = Fake::new();
    let mut j = run(&fresh, dir2.path(), Journal::new(plan(false)))
        .await
        .unwrap();
    j.outcome = None;
    j.entries.retain(|e| {
        e.step < Step::SwitchDns || (e.step == Step::SwitchDns && e.phase == Phase::Started)
    });
    let again = tokio::time::timeout(
        Duration::from_secs(5),
        run_held(&fresh, dir2.path(), j, &gates, &approvals, &news),
    )
    .await
    .expect("a begun switch must not wait at its gate");
    assert!(again.unwrap().holds.is_empty());
}

#[tokio::test]
async fn happy_path_runs_every_step_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .unwrap();
    assert!(journal.complete());
    assert_eq!(journal.timings().len(), 8);
    assert_once(&fake, Mutation::Create, "happy path");
    assert_once(&fake, Mutation::CnameChange, "happy path");
    let c = fake.cloud();
    let cname = &c.records[&(RECORD.to_owned(), "CNAME".to_owned())];
    assert_eq!(
        cname.values,
        ["app-sessions-dr-xyz.serverless.usw2.cache.amazonaws.com."]
    );
    assert_eq!(cname.ttl, 30);
    assert!(
        !c.records
            .keys()
            .any(|(n, _)| n.starts_with("_valkey-dr-lock")),
        "lease released"
    );
    let saved: Journal = store::read_json(&dir.path().join("failover.json"))
        .unwrap()
        .unwrap();
    assert_eq!(saved, journal);
}

/// The payload of the panic that cuts a run off in the middle, as a crash would.
struct Interrupted;

#[tokio::test]
async fn an_interruption_after_any_step_resumes_without_a_second_create_or_flip() {
    use futures::FutureExt as _;
    // The run is cut off right after a journal entry is on disk (a panic in the progress
    // callback, where the daemon's crash hook aborts): after each step's `started` entry and
    // after its `done` entry, for all 8 steps. The rerun, from the journal on disk, must
    // finish the job without sending a second create or a second switch.
    let mut points = 0;
    for step in Step::ALL {
        for phase in [Phase::Started, Phase::Done] {
            let at = format!("{step:?} {phase:?}");
            let dir = tempfile::tempdir().unwrap();
            let fake = Fake::new();
            let cut = |_: &Journal, e: &JournalEntry| {
                if (e.step, e.phase) == (step, phase) {
                    std::panic::panic_any(Interrupted);
                }
            };
            let executor = Executor {
                cache: &fake,
                dns: &fake,
                verify: &fake,
                path: dir.path().join("failover.json"),
                limits: limits(),
                progress: &cut,
                alert: &|_, _| {},
                lease_clock: LeaseClock::default(),
                holding: None,
            };
            let cut_off = std::panic::AssertUnwindSafe(executor.run(Journal::new(plan(true))))
                .catch_unwind()
                .await
                .map(|_| ())
                .expect_err("cut off");
            assert!(cut_off.is::<Interrupted>(), "{at}");
            let saved: Journal = store::read_json(&dir.path().join("failover.json"))
                .unwrap()
                .unwrap();
            let last = saved.entries.last().unwrap();
            assert_eq!((last.step, last.phase), (step, phase), "{at}");
            assert!(saved.outcome.is_none(), "{at}");
            let journal = run(&fake, dir.path(), saved)
                .await
                .unwrap_or_else(|(_, e)| panic!("{at}: {e}"));
            assert!(journal.complete(), "{at}");
            assert_eq!(journal.runs, 2, "{at}");
            assert_once(&fake, Mutation::Create, &at);
            assert_once(&fake, Mutation::CnameChange, &at);
            assert_eq!(fake.cname(), [DR], "{at}");
            points += 1;
        }
    }
    assert_eq!(points, 16, "every step, after `started` and after `done`");
}

#[tokio::test]
async fn a_switch_that_landed_before_a_crash_is_recognised_not_repeated() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().fail_once = Some("change_status");
    let (mut journal, _) = run(&fake, dir.path(), Journal::new(plan(false)))
        .await
        .unwrap_err();
    // Forget that switch_dns finished, as if the crash came between the API call and the
    // journal write.
    journal.entries.retain(|e| e.step < Step::SwitchDns);
    journal.change_id = None;
    let journal = run(&fake, dir.path(), journal).await.unwrap();
    assert!(journal.complete());
    assert_once(&fake, Mutation::CnameChange, "resumed after the switch");
}

#[tokio::test]
async fn transient_errors_are_retried() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().transient.insert("create", 3);
    fake.cloud().transient.insert("change", 3);
    let journal = run(&fake, dir.path(), Journal::new(plan(false)))
        .await
        .unwrap();
    assert!(journal.complete());
    assert_once(&fake, Mutation::Create, "retried");
    assert_once(&fake, Mutation::CnameChange, "retried");
    assert_eq!(fake.cloud().injected, 6, "every injected throttle was hit");
}

#[tokio::test]
async fn create_failed_and_stuck_caches_leave_the_record_alone() {
    for stuck in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        if stuck {
            fake.cloud().creating_for = u32::MAX;
        } else {
            fake.cloud().create_fails = true;
        }
        let mut p = plan(false);
        p.create_timeout = Duration::from_millis(50);
        let (journal, err) = run(&fake, dir.path(), Journal::new(p)).await.unwrap_err();
        let last = journal.entries.last().unwrap();
        assert_eq!(
            (last.step, last.phase),
            (Step::WaitAvailable, Phase::Failed)
        );
        assert!(
            matches!(
                err,
                FailoverError::CreateFailed { .. } | FailoverError::CreateTimeout { .. }
            ),
            "{err}"
        );
        assert_eq!(fake.cname(), [OLD], "record untouched");
    }
}

#[tokio::test]
async fn a_record_changed_by_hand_is_not_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().fail_once = Some("direct");
    // The agent decided while the record pointed at the primary: Route 53 is read only just
    // before the switch, and a record changed meanwhile is someone else's.
    let p = Plan {
        expected_target: Some(OLD.into()),
        ..plan(false)
    };
    let (journal, _) = run(&fake, dir.path(), Journal::new(p)).await.unwrap_err();
    fake.cloud()
        .records
        .get_mut(&(RECORD.to_owned(), "CNAME".to_owned()))
        .unwrap()
        .values = vec!["someone-else.example.".into()];
    let (_, err) = run(&fake, dir.path(), journal).await.unwrap_err();
    assert!(matches!(err, FailoverError::RecordChanged { .. }), "{err}");
    assert_eq!(fake.cname(), ["someone-else.example."]);
}

/// Another agent's lease, as `expires` from now (negative: in the past).
fn others_lease(fake: &Fake, expires: SystemTime, extra: &str) -> RecordSet {
    let mut other = plan(true);
    other.failover_id = "fo-other".into();
    other.owner = "agent-b".into();
    let lease = RecordSet {
        name: other.lease_name(),
        rtype: "TXT".into(),
        ttl: 30,
        values: vec![format!("{}{extra}", lease_value(&other, expires))],
    };
    fake.cloud()
        .records
        .insert((lease.name.clone(), "TXT".into()), lease.clone());
    lease
}

/// Issue 20: a stale lease is taken over; a live one is waited on (the DR cache is built and
/// verified meanwhile, the record untouched), and once its holder points the record at the DR
/// cache, this agent stands down to follow it, having switched nothing.
#[tokio::test]
async fn a_live_lease_is_waited_on_and_a_stale_one_is_taken_over() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    others_lease(&fake, SystemTime::now() - Duration::from_secs(60), "");
    run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("a stale lease is taken over");
    assert_once(&fake, Mutation::CnameChange, "one switch");

    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    others_lease(&fake, SystemTime::now() + Duration::from_secs(600), "");
    let (result, ()) = tokio::join!(run(&fake, dir.path(), Journal::new(plan(true))), async {
        let j = until_step(dir.path(), Step::Lease).await;
        assert!(
            j.done(Step::VerifyDirect),
            "built and verified first: {j:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fake.cname(), [OLD], "waiting, not switching");
        // The holder switches the record to the cache both agents share.
        point_record_at(&fake, DR);
    });
    let (journal, err) = result.expect_err("stands down once the holder switched");
    assert!(
        matches!(&err, FailoverError::StoodDown { holder } if holder.contains("already pointed")),
        "{err}"
    );
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::StoodDown { .. })
    ));
    assert_never(&fake, Mutation::CnameChange, "the holder switched, not us");
}

/// Issue 20: a holder whose failover fails hands its lease over (expired now, with its
/// reason); the agent waiting on it takes over at its next look and switches.
#[tokio::test]
async fn a_lease_handed_over_is_taken_at_the_next_look() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let held = others_lease(&fake, SystemTime::now() + Duration::from_secs(600), "");
    let (result, ()) = tokio::join!(run(&fake, dir.path(), Journal::new(plan(true))), async {
        until_step(dir.path(), Step::Lease).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        let mut other = plan(true);
        other.failover_id = "fo-other".into();
        other.owner = "agent-b".into();
        let handed = RecordSet {
            values: vec![handed_over_value(
                &other,
                SystemTime::now(),
                "agent-b at verify_direct: refused",
            )],
            ..held.clone()
        };
        fake.cloud()
            .records
            .insert((held.name.clone(), "TXT".into()), handed);
    });
    let journal = result.map_err(|(_, e)| e).expect("takes over and switches");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [DR]);
    assert_once(&fake, Mutation::CnameChange, "one switch");
}

/// Issue 20: with Route 53's API down from the start, the DR cache is built and verified
/// anyway, people hear that only Route 53 holds the failover, and the record moves as soon
/// as Route 53 answers again.
#[tokio::test]
async fn nothing_before_the_build_waits_on_route53() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().route53_down = true;
    let alerts = Mutex::new(Vec::new());
    let alert = |step: Step, text: &str| alerts.lock().unwrap().push((step, text.to_owned()));
    let executor = alerting(&fake, dir.path(), &alert);
    let (result, ()) = tokio::join!(executor.run(Journal::new(plan(true))), async {
        let j = until_step(dir.path(), Step::Lease).await;
        assert!(
            j.done(Step::Provision) && j.done(Step::VerifyDirect),
            "{j:?}"
        );
        assert_eq!(fake.cloud().succeeded(Mutation::Create), 1);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(fake.cname(), [OLD]);
        fake.cloud().route53_down = false;
    });
    let journal = result.map_err(|(_, e)| e).expect("completes");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [DR]);
    let alerts = alerts.into_inner().unwrap();
    assert!(
        alerts.iter().any(|(step, text)| *step == Step::Lease
            && text.contains("is built and verified at")
            && text.contains("Route 53's API has not answered for")
            && text.contains("the record moves as soon as it does")),
        "{alerts:?}"
    );
}

/// Issue 20: a throttled DR region is retried until `create_timeout`, not a handful of times.
#[tokio::test]
async fn a_throttled_build_is_retried_until_create_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().transient.insert("describe", 40);
    fake.cloud().transient.insert("create", 40);
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("completes after the throttling");
    assert!(journal.complete());
    assert_once(&fake, Mutation::Create, "one create");

    // Throttled past `create_timeout`: it fails on a transient error, which the policy takes
    // as no reason for a cooldown (`failover::settle`).
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().transient.insert("describe", u32::MAX);
    let mut p = plan(true);
    p.create_timeout = Duration::from_millis(200);
    let (_, err) = run(&fake, dir.path(), Journal::new(p))
        .await
        .expect_err("gives up at create_timeout");
    assert!(
        matches!(&err, FailoverError::Api { source, .. } if source.is_transient()),
        "{err}"
    );
    assert_never(&fake, Mutation::Create, "never got to create");
}

/// Issue 20: a change that committed and lost its answer is recognised as ours on the
/// takeover and on the switch: no stand-down against ourselves, one switch.
#[tokio::test]
async fn a_change_whose_answer_was_lost_is_ours() {
    for (cname, lease) in [(0, 1), (1, 0), (1, 1)] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        others_lease(&fake, SystemTime::now() - Duration::from_secs(60), "");
        fake.cloud().commit_then_drop = (cname, lease);
        let journal = run(&fake, dir.path(), Journal::new(plan(true)))
            .await
            .map_err(|(_, e)| e)
            .unwrap_or_else(|e| panic!("drop cname={cname} lease={lease}: {e}"));
        assert!(journal.complete());
        assert_eq!(fake.cname(), [DR]);
        // A switch whose answer was lost counts as refused here, and so does its re-send
        // (the exact DELETE no longer matches): what matters is that the record moved once.
        assert_eq!(
            fake.cloud().succeeded(Mutation::CnameChange),
            (1 - cname) as usize,
            "drop cname={cname} lease={lease}"
        );
        assert_eq!(fake.cloud().injected, cname + lease);
        let lock = plan(true).lease_name();
        assert!(
            !fake.cloud().records.contains_key(&(lock, "TXT".into())),
            "our lease was released, not left to block others"
        );
    }
}

/// Issue 20: `GetChange` stuck at `PENDING` (Route 53's API) no longer holds the failover: the
/// agent's own resolvers seeing the new target decide, and the journal says so.
#[tokio::test]
async fn the_data_plane_decides_when_get_change_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().change_stays_pending = true;
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("completes");
    let insync = journal
        .entry(Step::WaitInsync, Phase::Done)
        .expect("wait_insync done");
    assert!(
        insync.detail.contains("decided by the data plane"),
        "{}",
        insync.detail
    );

    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("completes");
    let insync = journal.entry(Step::WaitInsync, Phase::Done).unwrap();
    assert!(
        insync.detail.contains("decided by GetChange"),
        "{}",
        insync.detail
    );
}

/// Issue 20: a verification that fails on the agent's own side is named so, before any lease
/// is taken: nothing stands in the way of the agents that can see the DR cache.
#[tokio::test]
async fn an_own_side_failure_is_named_and_takes_no_lease() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().own_resolver_refuses = true;
    let (journal, err) = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .expect_err("fails");
    assert!(matches!(err, FailoverError::OwnSide { .. }), "{err}");
    assert!(err.to_string().contains("own side"), "{err}");
    assert!(journal.lease.is_none());
    assert!(
        !fake
            .cloud()
            .records
            .keys()
            .any(|(name, _)| name.starts_with("_valkey-dr-lock.")),
        "no lease was taken"
    );
    assert_never(&fake, Mutation::CnameChange, "nothing switched");
}

/// Issue 20: a failover that fails after taking the lease hands it over at once: expired,
/// with its reason, so that waiting agents take over.
#[tokio::test]
async fn a_failure_after_the_lease_hands_it_over_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().fail_once = Some("change_status");
    let (journal, _) = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .expect_err("fails at wait_insync");
    assert!(journal.lease.is_none());
    let lock = plan(true).lease_name();
    let handed = fake.cloud().records[&(lock, "TXT".to_owned())].clone();
    let value = handed.values.join(" ");
    assert!(
        value.contains("handed over: agent-a at wait_insync"),
        "{value}"
    );
    assert!(
        lease_expiry(&value).is_some_and(|t| t <= SystemTime::now()),
        "{value}"
    );
    assert_eq!(lease_field(&value, "failover"), Some("fo-1"));
}

/// Issue 20: two agents of one watch that both reach the build end with one cache and one
/// switch: the loser adopts the winner's cache, waits on its lease, and stands down.
#[tokio::test]
async fn two_agents_racing_to_the_build_make_one_cache_and_one_switch() {
    let fake = Fake::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (a, b) = (started_now("agent-a"), started_now("agent-b"));
    let (ra, rb) = tokio::join!(
        run(&fake, dir_a.path(), Journal::new(a)),
        run(&fake, dir_b.path(), Journal::new(b))
    );
    let completed = [ra.is_ok(), rb.is_ok()].iter().filter(|ok| **ok).count();
    assert_eq!(completed, 1, "one completes, the other stands down");
    for r in [ra, rb] {
        if let Err((_, e)) = r {
            assert!(matches!(e, FailoverError::StoodDown { .. }), "{e}");
        }
    }
    assert_once(&fake, Mutation::Create, "one cache");
    assert_once(&fake, Mutation::CnameChange, "one switch");
    assert_eq!(fake.cname(), [DR]);
}

/// The plan of `owner`'s failover begun now, with an id that carries its time as the
/// daemon's ids do, and the cache tagged with it.
fn started_now(owner: &str) -> Plan {
    let mut p = plan(true);
    p.failover_id = crate::failover::new_failover_id(owner, SystemTime::now());
    p.owner = owner.into();
    p.cache.input.tags[0].value = p.failover_id.clone();
    p
}

/// Issue 20: a cache of the same watch and record is adopted only from a failover that began
/// within `create_timeout` (a race); one an earlier failover left behind holds that DR
/// period's sessions and stops the failover, as any cache not ours does.
#[tokio::test]
async fn a_cache_left_by_an_earlier_failover_is_not_adopted() {
    let fake = Fake::new();
    let mut old = started_now("agent-b");
    old.failover_id = crate::failover::new_failover_id(
        "agent-b",
        SystemTime::now() - Duration::from_secs(6 * 24 * 3600),
    );
    old.cache.input.tags[0].value = old.failover_id.clone();
    fake.create(&old.cache).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (_, err) = run(&fake, dir.path(), Journal::new(started_now("agent-a")))
        .await
        .expect_err("not adopted");
    assert!(matches!(err, FailoverError::ForeignCache { .. }), "{err}");
    assert_never(&fake, Mutation::CnameChange, "nothing switched");
    assert!(!began_within("fo-1", Duration::from_secs(3600)));
    assert!(!began_within("fo-2026x", Duration::from_secs(3600)));
}

/// Waits (bounded) until the journal on disk has begun `step`.
async fn until_step(dir: &std::path::Path, step: Step) -> Journal {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(j)) = store::read_json::<Journal>(&dir.join("failover.json"))
            && j.started(step)
        {
            return j;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never reached {step:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Issue 10: a lease whose expiry no agent can read is taken over as stale, with an alert,
/// instead of making every failover stand down for ever.
#[tokio::test]
async fn an_unreadable_lease_is_taken_over_with_an_alert() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let name = plan(true).lease_name();
    fake.cloud().records.insert(
        (name.clone(), "TXT".into()),
        RecordSet {
            name,
            rtype: "TXT".into(),
            ttl: 30,
            values: vec!["\"owner=agent-b failover=fo-other expires=soon\"".into()],
        },
    );
    let alerts = Mutex::new(Vec::new());
    let alert = |step: Step, text: &str| alerts.lock().unwrap().push((step, text.to_owned()));
    let journal = alerting(&fake, dir.path(), &alert)
        .run(Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("the failover goes on");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [DR]);
    let alerts = alerts.into_inner().unwrap();
    assert!(
        alerts
            .iter()
            .any(|(step, text)| *step == Step::Lease && text.contains("no readable expiry")),
        "{alerts:?}"
    );
}

/// Issue 10: the lease is checked in the very batch that swaps the record, so a lease taken
/// over between our lease step and the switch (a long pause of ours, a clock that jumped)
/// leaves the record untouched and this agent stands down.
#[tokio::test]
async fn the_record_moves_only_while_we_hold_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().steal_lease_before_switch = true;
    let (journal, err) = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .expect_err("stands down");
    assert!(matches!(err, FailoverError::StoodDown { .. }), "{err}");
    assert!(
        err.to_string().contains("taken before the DNS switch"),
        "{err}"
    );
    assert_eq!(fake.cname(), [OLD], "the record is untouched");
    let c = fake.cloud();
    assert_eq!(
        (
            c.attempted(Mutation::CnameChange),
            c.succeeded(Mutation::CnameChange)
        ),
        (1, 0),
        "the one switch was sent and refused: {:?}",
        c.attempts
    );
    drop(c);
    assert!(journal.change_id.is_none());
}

#[tokio::test]
async fn a_foreign_cache_is_refused_unless_adoption_is_allowed() {
    for adopt in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        let mut foreign = plan(false).cache;
        foreign.input.tags.clear();
        fake.create(&foreign).await.unwrap();
        let mut p = plan(false);
        p.adopt_existing = adopt;
        let result = run(&fake, dir.path(), Journal::new(p)).await;
        assert_eq!(result.is_ok(), adopt);
        // The foreign cache's create was the only one: the executor never even tried.
        assert_once(&fake, Mutation::Create, "never a second create");
        if let Err((_, err)) = result {
            assert!(matches!(err, FailoverError::ForeignCache { .. }), "{err}");
        }
    }
}

#[test]
fn lease_values_round_trip_their_expiry() {
    let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let v = lease_value(&plan(true), t);
    assert_eq!(v, "\"owner=agent-a failover=fo-1 expires=1800000000\"");
    assert_eq!(lease_expiry(&v), Some(t));
    assert_eq!(lease_field(&v, "failover"), Some("fo-1"));
    assert_eq!(
        lease_field("\"owner=a failover=fo-10 expires=1\"", "failover"),
        Some("fo-10")
    );
}

#[tokio::test]
async fn a_late_agent_finds_another_agents_finished_failover_and_stands_down() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    run(&fake, dir.path(), Journal::new(started_now("agent-a")))
        .await
        .map_err(|(_, e)| e)
        .expect("the first agent's failover completes");
    // A second agent, slower to judge, starts its own failover after the first released the
    // lease: it must neither fail nor build or switch anything.
    let late = started_now("agent-b");
    let late_dir = tempfile::tempdir().unwrap();
    let (journal, err) = run(&fake, late_dir.path(), Journal::new(late))
        .await
        .expect_err("nothing left to do");
    assert!(
        matches!(&err, FailoverError::StoodDown { holder } if holder.contains("already pointed")),
        "{err}"
    );
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::StoodDown { .. })
    ));
    assert_once(&fake, Mutation::Create, "never a second create");
    assert_once(&fake, Mutation::CnameChange, "never a second flip");
    assert!(
        !fake
            .cloud()
            .records
            .keys()
            .any(|(name, _)| name.starts_with("_valkey-dr-lock.")),
        "the late agent gave its lease back"
    );
}

/// Issue 8, defect 2: right after CreateServerlessCache, Describe may not find the cache for a
/// few seconds. That is "not visible yet", not create-failed: the failover completes.
#[tokio::test]
async fn a_new_cache_missing_from_describe_for_a_while_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().invisible_for = 5;
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("completes");
    assert!(journal.complete());
    assert_once(&fake, Mutation::Create, "invisible for a while");
    assert_once(&fake, Mutation::CnameChange, "invisible for a while");
}

/// ...but a cache that stays missing past the grace period is gone, and the record stays.
#[tokio::test]
async fn a_cache_that_stays_missing_fails_the_wait_and_leaves_the_record() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().invisible_for = u32::MAX;
    let mut l = limits();
    l.not_found_grace = Duration::from_millis(30);
    let progress = |_: &Journal, _: &JournalEntry| {};
    let (journal, err) = Executor {
        cache: &fake,
        dns: &fake,
        verify: &fake,
        path: dir.path().join("failover.json"),
        limits: l,
        progress: &progress,
        alert: &|_, _| {},
        lease_clock: LeaseClock::default(),
        holding: None,
    }
    .run(Journal::new(plan(false)))
    .await
    .expect_err("gone");
    assert!(err.to_string().contains("no longer exists"), "{err}");
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::Failed {
            step: Step::WaitAvailable,
            ..
        })
    ));
    assert_eq!(fake.cname(), [OLD]);
}

/// Issue 8, defect 3: a resumed failover (or one whose Create the SDK retried) finds its own
/// cache still `creating`, whose tags AWS will not list yet. It waits for them and adopts
/// the cache instead of failing for good.
#[tokio::test]
async fn an_own_cache_still_creating_is_adopted_once_its_tags_can_be_read() {
    for invisible in [0, 3] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        fake.cloud().creating_for = 4;
        fake.cloud().invisible_for = invisible;
        // A previous run (or the SDK's own retry) created it; this run starts from scratch.
        fake.create(&plan(false).cache).await.unwrap();
        let journal = run(&fake, dir.path(), Journal::new(plan(false)))
            .await
            .map_err(|(_, e)| e)
            .expect("adopts its own cache");
        assert!(journal.complete());
        let provision = journal.entry(Step::Provision, Phase::Done).unwrap();
        assert!(
            provision.detail.contains("adopted")
                && provision.detail.contains("built by this failover"),
            "{provision:?}"
        );
        // Describe found it at once: no create was sent. Describe did not show it yet: the
        // one create sent was refused, and the journal above says the cache was adopted.
        let c = fake.cloud();
        assert_eq!(c.succeeded(Mutation::Create), 1, "{:?}", c.attempts);
        let late = c.after_success(Mutation::Create);
        if invisible == 0 {
            assert!(late.is_empty(), "never a second create: {late:?}");
        } else {
            assert_eq!(late.len(), 1, "one create, then adopted: {late:?}");
            assert!(
                late[0]
                    .refused
                    .as_deref()
                    .is_some_and(|e| e.contains("already exists")),
                "{late:?}"
            );
        }
    }
}

fn failback_journal(delete_dr: bool) -> Journal {
    failback_journal_keeping(delete_dr, false)
}

fn failback_journal_keeping(delete_dr: bool, keep_data: bool) -> Journal {
    let mut plan = plan(false);
    plan.failover_id = "fb-1".into();
    plan.kind = Kind::Failback {
        from: DR.trim_end_matches('.').into(),
        delete_dr,
        keep_data,
    };
    let mut journal = Journal::new(plan);
    journal.endpoint = Some((OLD.trim_end_matches('.').into(), 6379));
    journal
}

const DR: &str = "app-sessions-dr-xyz.serverless.usw2.cache.amazonaws.com.";

fn point_record_at(fake: &Fake, target: &str) {
    fake.cloud()
        .records
        .get_mut(&(RECORD.to_owned(), "CNAME".to_owned()))
        .unwrap()
        .values = vec![target.into()];
}

/// Issue 8, defect 9: failback gets the executor's Route 53 retries (a burst of
/// PriorRequestNotComplete or Throttling is waited out, not a failure) and its exact
/// compare-and-swap, from a journal.
#[tokio::test]
async fn failback_is_a_journalled_plan_with_route53_retries() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.create(&plan(false).cache).await.unwrap();
    point_record_at(&fake, DR);
    fake.cloud().transient.insert("change", 6);
    let journal = run(&fake, dir.path(), failback_journal(true))
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes through the retries");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [OLD]);
    assert!(
        fake.cloud().caches.is_empty(),
        "--delete-dr deleted the DR cache"
    );
    let steps: Vec<_> = journal.timings().into_keys().collect();
    assert_eq!(
        steps,
        [
            "delete_dr",
            "flush_primary",
            "lease",
            "switch_dns",
            "verify_dns",
            "wait_insync"
        ]
    );
}

/// Issue 10: `failback --delete-dr` deletes only a cache that a failover of valkey-dr built
/// (it carries our failover tag); a cache of the DR name without it is kept, and the step
/// says so. The switch back itself completes.
#[tokio::test]
async fn failback_deletes_only_a_dr_cache_that_we_built() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let mut foreign = plan(false).cache;
    foreign.input.tags.clear();
    fake.create(&foreign).await.unwrap();
    point_record_at(&fake, DR);
    let journal = run(&fake, dir.path(), failback_journal(true))
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [OLD]);
    assert!(
        fake.cloud().caches.contains_key("app-sessions-dr"),
        "a cache without our tag is never deleted"
    );
    let said = serde_json::to_string(&journal).unwrap();
    assert!(
        said.contains("kept: it carries no valkey-dr:failover-id tag"),
        "{said}"
    );
}

/// ...and a record that points at neither the DR cache nor the primary is not touched.
#[tokio::test]
async fn failback_leaves_a_record_that_someone_else_changed() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, "elsewhere.example.");
    let (journal, err) = run(&fake, dir.path(), failback_journal(false))
        .await
        .expect_err("refused");
    assert!(matches!(err, FailoverError::RecordChanged { .. }), "{err}");
    assert!(journal.change_id.is_none());
    assert_eq!(fake.cname(), ["elsewhere.example."]);
}

/// A failback interrupted after its change landed resumes and recognises it.
#[tokio::test]
async fn a_failback_resumed_after_its_switch_does_not_switch_again() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    fake.cloud().fail_once = Some("change_status");
    let (journal, _) = run(&fake, dir.path(), failback_journal(false))
        .await
        .expect_err("interrupted at wait_insync");
    assert!(journal.done(Step::SwitchDns));
    assert_once(&fake, Mutation::CnameChange, "the failback's switch");
    let mut resumed = journal;
    resumed.outcome = None;
    let journal = run(&fake, dir.path(), resumed)
        .await
        .map_err(|(_, e)| e)
        .expect("resumes");
    assert!(journal.complete());
    assert_once(&fake, Mutation::CnameChange, "no second flip");
    assert_eq!(fake.cname(), [OLD]);
}

/// Issue 20, item 7: a failback empties the old primary after reading the record and before
/// pointing it back, and the journal says what was emptied (the key count before and after,
/// and the command), so that sessions logged out or revoked during the DR period are gone.
#[tokio::test]
async fn a_failback_empties_the_primary_before_the_switch_and_journals_what_it_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    fake.cloud().primary_keys = 1234;
    let journal = run(&fake, dir.path(), failback_journal(false))
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [OLD]);
    assert_eq!(fake.cloud().flushes, 1);
    assert_eq!(fake.cloud().primary_keys, 0);
    let primary = format!("{}:6379", OLD.trim_end_matches('.'));
    assert_eq!(
        journal.flushed,
        Some(Flushed {
            endpoint: primary.clone(),
            command: "FLUSHALL ASYNC".into(),
            keys_before: 1234,
            keys_after: Some(0),
            sent: 1,
        })
    );
    let order: Vec<(Step, Phase)> = journal.entries.iter().map(|e| (e.step, e.phase)).collect();
    let flushed_at = order
        .iter()
        .position(|s| *s == (Step::FlushPrimary, Phase::Done))
        .expect("flush_primary done");
    let switch_at = order
        .iter()
        .position(|s| *s == (Step::SwitchDns, Phase::Started))
        .expect("switch_dns started");
    let lease_at = order
        .iter()
        .position(|s| *s == (Step::Lease, Phase::Done))
        .expect("lease done");
    assert!(lease_at < flushed_at && flushed_at < switch_at, "{order:?}");
    let detail = &journal.entries[flushed_at].detail;
    assert_eq!(
        detail,
        &format!("FLUSHALL ASYNC on {primary}: 1234 keys before, 0 after")
    );
    // What is journalled survives a read back, as the next version reads it.
    let on_disk: Journal = store::read_json(&dir.path().join("failover.json"))
        .unwrap()
        .unwrap();
    assert_eq!(on_disk.flushed, journal.flushed);
}

/// `failback --keep-data`: no flush step at all; the primary keeps what it held.
#[tokio::test]
async fn keep_data_skips_the_flush() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    fake.cloud().primary_keys = 77;
    let journal = run(&fake, dir.path(), failback_journal_keeping(false, true))
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert!(journal.complete());
    assert_eq!(fake.cname(), [OLD]);
    assert_eq!(fake.cloud().flushes, 0);
    assert_eq!(fake.cloud().primary_keys, 77);
    assert_eq!(journal.flushed, None);
    assert!(!journal.started(Step::FlushPrimary));
}

/// A failback that crashed between its flush and the journal entry saying so resumes and
/// flushes again (the record still points at the DR cache, so nobody is served by the
/// primary), and the journal keeps the count the first run found, not the near-empty one.
#[tokio::test]
async fn a_failback_resumed_before_its_switch_flushes_again_and_keeps_the_first_count() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    {
        let mut c = fake.cloud();
        c.primary_keys = 500;
        c.fail_count_after_flush = true;
    }
    let (journal, err) = run(&fake, dir.path(), failback_journal(false))
        .await
        .expect_err("stopped after the flush");
    assert!(
        matches!(
            err,
            FailoverError::Verify {
                step: "flush_primary",
                ..
            }
        ),
        "{err}"
    );
    assert!(!journal.done(Step::FlushPrimary));
    assert_eq!(fake.cname(), [DR], "the record is untouched");
    assert_never(
        &fake,
        Mutation::CnameChange,
        "no switch after a failed flush",
    );
    let first = journal
        .flushed
        .clone()
        .expect("the count before is journalled");
    assert_eq!(
        (first.keys_before, first.keys_after, first.sent),
        (500, None, 1)
    );

    // Probe keys written meanwhile; the failback is resumed.
    fake.cloud().primary_keys = 3;
    let mut resumed = journal;
    resumed.outcome = None;
    let journal = run(&fake, dir.path(), resumed)
        .await
        .map_err(|(_, e)| e)
        .expect("resumes");
    assert!(journal.complete());
    assert_eq!(fake.cloud().flushes, 2, "flushed again before the switch");
    let flushed = journal.flushed.clone().unwrap();
    assert_eq!(
        (flushed.keys_before, flushed.keys_after, flushed.sent),
        (500, Some(0), 2)
    );
    assert_once(&fake, Mutation::CnameChange, "one switch");
    assert_eq!(fake.cname(), [OLD]);
}

/// Never once the record points at the primary: someone pointed it back by hand before the
/// failback's flush, so the primary serves live sessions and keeps them.
#[tokio::test]
async fn a_primary_the_record_already_points_at_is_never_emptied() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().primary_keys = 42;
    // The record points at the primary already (Fake::new's CNAME).
    let journal = run(&fake, dir.path(), failback_journal(false))
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert!(journal.complete());
    assert_eq!(fake.cloud().flushes, 0);
    assert_eq!(fake.cloud().primary_keys, 42);
    assert_eq!(journal.flushed, None);
    let said = journal
        .entry(Step::FlushPrimary, Phase::Done)
        .map(|e| e.detail.clone())
        .unwrap_or_default();
    assert!(said.contains("already points at the primary"), "{said}");
    assert_never(&fake, Mutation::CnameChange, "nothing to switch");
}

/// ...and never once the switch has begun, whatever the record says when the run resumes.
#[tokio::test]
async fn a_failback_whose_switch_began_never_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    fake.cloud().primary_keys = 9;
    let mut journal = failback_journal(false);
    let at = SystemTime::now();
    journal.old_target = Some(RecordSet {
        name: RECORD.into(),
        rtype: "CNAME".into(),
        ttl: 30,
        values: vec![DR.into()],
    });
    for (step, phase) in [
        (Step::Lease, Phase::Started),
        (Step::Lease, Phase::Done),
        (Step::SwitchDns, Phase::Started),
    ] {
        journal.entries.push(JournalEntry {
            step,
            phase,
            at,
            detail: String::new(),
        });
    }
    let journal = run(&fake, dir.path(), journal)
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert!(journal.complete());
    assert_eq!(fake.cloud().flushes, 0);
    assert_eq!(fake.cloud().primary_keys, 9);
    assert_eq!(fake.cname(), [OLD]);
}

/// A flush the probe user may not run (NOPERM: a configuration error) stops the failback
/// before the switch: the record stays on the DR cache, and the error says what to do.
#[tokio::test]
async fn a_flush_the_probe_user_may_not_run_stops_the_failback_with_the_record_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, DR);
    {
        let mut c = fake.cloud();
        c.primary_keys = 10;
        c.flush_denied = true;
    }
    let (journal, err) = run(&fake, dir.path(), failback_journal(false))
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("NOPERM"), "{err}");
    assert!(matches!(
        journal.outcome,
        Some(FailoverOutcome::Failed {
            step: Step::FlushPrimary,
            ..
        })
    ));
    assert_never(&fake, Mutation::CnameChange, "the record is not switched");
    assert_eq!(fake.cname(), [DR]);
    assert_eq!(fake.cloud().primary_keys, 10);
}

/// A failback journal written before the flush existed has no `keep_data`: resumed, it does
/// what was asked for then and empties nothing; a new one says `keep_data` either way.
#[test]
fn a_failback_journal_from_before_the_flush_keeps_the_data() {
    let old: Kind =
        serde_json::from_str(r#"{"failback":{"from":"dr.example","delete_dr":false}}"#).unwrap();
    assert_eq!(
        old,
        Kind::Failback {
            from: "dr.example".into(),
            delete_dr: false,
            keep_data: true,
        }
    );
    assert!(!old.steps().contains(&Step::FlushPrimary));
    let new = Kind::Failback {
        from: "dr.example".into(),
        delete_dr: true,
        keep_data: false,
    };
    let json = serde_json::to_string(&new).unwrap();
    assert!(json.contains(r#""keep_data":false"#), "{json}");
    assert_eq!(
        new.steps(),
        [
            Step::Lease,
            Step::FlushPrimary,
            Step::SwitchDns,
            Step::WaitInsync,
            Step::VerifyDns,
            Step::DeleteDr
        ]
    );
}

#[tokio::test]
async fn an_approval_ends_a_hold_even_in_the_middle_of_a_slow_gate_check() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    // A gate that answers only after 30 s: the approval must not wait for it. It says when
    // it started, so the approval comes while it runs.
    let began = dir.path().join("gate-began");
    let slow = crate::config::GateConfig {
        name: "slow".into(),
        at: GateAt::SwitchDns,
        check: crate::config::GateCheck::Command {
            command: vec![
                "sh".into(),
                "-c".into(),
                format!("touch {}; sleep 30; exit 1", began.display()),
            ],
        },
        timeout: Duration::from_secs(60),
        on_timeout: crate::config::OnTimeout::Hold,
    };
    let gates = Gates::new(&[slow]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    let journal = Journal::new(Plan {
        approval: true,
        ..plan(true)
    });
    let mut recorded = approvals.recorded();
    let run = run_held(&fake, dir.path(), journal, &gates, &approvals, &news);
    let approve = async {
        // The first gate check has begun (and runs for 30 s).
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !began.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the gate check never began"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let j: Journal = store::read_json(&dir.path().join("failover.json"))
            .unwrap()
            .unwrap();
        assert!(j.done(Step::VerifyDirect), "checked after verify_direct");
        assert_eq!(fake.cname(), [OLD]);
        approvals.give(Approval {
            failover_id: "fo-1".into(),
            step: Step::SwitchDns,
            by: "alice@ops".into(),
        });
    };
    let started = tokio::time::Instant::now();
    let (result, ()) = tokio::join!(run, approve);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the approval waited for the gate: {:?}",
        started.elapsed()
    );
    let journal = result.unwrap();
    assert!(journal.complete());
    assert_eq!(
        *recorded.borrow_and_update(),
        1,
        "the approval was journalled"
    );
    let hold = &journal.holds[0];
    assert_eq!(
        (hold.how, hold.approved_by.as_deref()),
        (Some(HoldEnd::Approved), Some("alice@ops")),
        "who approved is kept even when the first check had not answered: {hold:?}"
    );
    assert_eq!(approvals.held(), None);
    assert_once(&fake, Mutation::Create, "approved mid-check");
    assert_once(&fake, Mutation::CnameChange, "approved mid-check");
}

#[tokio::test]
async fn a_hold_approved_before_a_crash_or_no_longer_configured_does_not_hold_again() {
    let gates_none = Gates::new(&[]);
    let approvals = Approvals::default();
    let news = Mutex::new(Vec::new());
    for (how, approval) in [(Some(HoldEnd::Approved), true), (None, false)] {
        let dir = tempfile::tempdir().unwrap();
        let fake = Fake::new();
        // Run to the hold's point, then write the hold as a crash would have left it.
        let mut j = run(&fake, dir.path(), Journal::new(plan(false)))
            .await
            .unwrap();
        j.outcome = None;
        j.entries.retain(|e| e.step < Step::SwitchDns);
        j.change_id = None;
        j.plan.approval = approval;
        j.holds.push(Hold {
            step: Step::SwitchDns,
            since: SystemTime::now(),
            gate: String::new(),
            answer: "waiting for a person's approval".into(),
            approval,
            checks: 3,
            ended: how.is_some().then(SystemTime::now),
            how,
            approved_by: how.is_some().then(|| "alice@ops".to_owned()),
        });
        point_record_at(&fake, OLD);
        fake.cloud().attempts.clear();
        let journal = tokio::time::timeout(
            Duration::from_secs(5),
            run_held(&fake, dir.path(), j, &gates_none, &approvals, &news),
        )
        .await
        .expect("not held again")
        .unwrap();
        assert!(journal.complete());
        assert!(journal.held().is_none());
        let last = journal.holds.last().unwrap();
        let expected = if how.is_none() {
            HoldEnd::Lifted
        } else {
            HoldEnd::Approved
        };
        assert_eq!(last.how, Some(expected), "{last:?}");
        let case = how.map_or("never ended", HoldEnd::as_str);
        assert_once(&fake, Mutation::CnameChange, case);
        assert_never(&fake, Mutation::Create, case);
    }
}

/// Journals written before `Hold.how` was an enum spell its values as plain strings; they
/// read back as the enum and are written again byte for byte.
#[test]
fn an_old_journals_hold_endings_round_trip() {
    for (text, how) in [
        ("opened", HoldEnd::Opened),
        ("approved", HoldEnd::Approved),
        ("aborted", HoldEnd::Aborted),
        ("stood_down", HoldEnd::StoodDown),
        ("lifted", HoldEnd::Lifted),
    ] {
        let old = format!(
            r#"{{"step":"switch_dns","since":{{"secs_since_epoch":1700000000,"nanos_since_epoch":0}},"gate":"vpn","answer":"closed","approval":false,"checks":2,"ended":{{"secs_since_epoch":1700000060,"nanos_since_epoch":0}},"how":"{text}","approved_by":null}}"#
        );
        let hold: Hold = serde_json::from_str(&old).unwrap();
        assert_eq!(hold.how, Some(how));
        assert_eq!(serde_json::to_string(&hold).unwrap(), old);
        // What people read (history, status text) is the journal's word.
        assert_eq!(how.to_string(), text);
    }
    let open = r#"{"step":"provision","since":{"secs_since_epoch":1700000000,"nanos_since_epoch":0},"gate":"","answer":"","approval":true,"checks":0}"#;
    let hold: Hold = serde_json::from_str(open).unwrap();
    assert_eq!((hold.ended, hold.how), (None, None));
}

/// The warm standby's endpoint in these tests.
const STANDBY: &str = "app-sessions-dr-warm.serverless.usw2.cache.amazonaws.com";

fn with_standby(mut plan: Plan) -> Plan {
    plan.standby = Some((STANDBY.into(), 6379));
    plan
}

/// Issue 20, warm standby: a failover whose standby served in the last round builds nothing
/// and asks the DR region's API nothing (it is down here): verify, then switch.
#[tokio::test]
async fn a_ready_warm_standby_is_switched_to_without_any_elasticache_call() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().elasticache_down = true;
    let journal = run(&fake, dir.path(), Journal::new(with_standby(plan(true))))
        .await
        .map_err(|(_, e)| e)
        .expect("the failover completes with the DR region's API down");
    assert!(journal.complete());
    assert_never(&fake, Mutation::Create, "nothing built");
    assert_once(&fake, Mutation::CnameChange, "one switch");
    assert_eq!(fake.cname(), [format!("{STANDBY}.")]);
    let detail = |step: Step| {
        journal
            .entry(step, Phase::Done)
            .map(|e| e.detail.clone())
            .unwrap_or_default()
    };
    assert!(
        detail(Step::Provision).contains("warm standby")
            && detail(Step::Provision).contains("no API called"),
        "{}",
        detail(Step::Provision)
    );
    assert!(
        detail(Step::WaitAvailable).starts_with("skipped"),
        "{}",
        detail(Step::WaitAvailable)
    );
}

/// A standby that does not serve when the failover verifies it stops the failover before any
/// Route 53 call, as a transient end (no cooldown): the next decision takes the on-demand path.
#[tokio::test]
async fn a_warm_standby_that_does_not_serve_stops_before_the_record_and_spends_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    fake.cloud().standby_refuses = true;
    let (journal, err) = run(&fake, dir.path(), Journal::new(with_standby(plan(true))))
        .await
        .expect_err("the standby does not serve");
    assert!(matches!(err, FailoverError::StandbyDown { .. }), "{err}");
    assert!(err.to_string().contains("on-demand path"), "{err}");
    assert!(journal.lease.is_none(), "no lease taken");
    assert_never(&fake, Mutation::CnameChange, "the record is untouched");
    assert_never(&fake, Mutation::Create, "nothing built by this failover");
    let began = SystemTime::now();
    let state = valkey_dr_policies::WatchState {
        failing_over_since: Some(began),
        failovers: vec![began],
        ..Default::default()
    };
    let settled = crate::failover::settle(&state, &journal, Some(&err), SystemTime::now());
    assert!(
        settled.next.failovers.is_empty(),
        "no cooldown: {:?}",
        settled.next.failovers
    );
}

/// A failover that builds on demand (its standby failed the last round) adopts the cache of
/// the DR name when it is the watch's standby, and builds no second one.
#[tokio::test]
async fn an_on_demand_failover_adopts_the_watchs_standby() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    let mut standby = plan(false).cache;
    standby.input.tags = vec![
        api::Tag {
            key: STANDBY_TAG.into(),
            value: "sessions".into(),
        },
        api::Tag {
            key: RECORD_TAG.into(),
            value: RECORD.into(),
        },
    ];
    fake.create(&standby).await.unwrap();
    let journal = run(&fake, dir.path(), Journal::new(plan(true)))
        .await
        .map_err(|(_, e)| e)
        .expect("adopted");
    assert_once(&fake, Mutation::Create, "the standby's create only");
    let provision = journal.entry(Step::Provision, Phase::Done).unwrap();
    assert!(
        provision.detail.contains("the warm standby of this watch"),
        "{}",
        provision.detail
    );
}

/// After a failback from a warm standby, the standby is emptied once the record points back
/// at the primary: it is the standby again, and a later failover brings back none of this DR
/// period's sessions. With `--delete-dr` there is nothing to empty.
#[tokio::test]
async fn a_failback_from_a_warm_standby_empties_it_after_the_switch() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new();
    point_record_at(&fake, &format!("{STANDBY}."));
    fake.cloud().standby_keys = 42;
    let mut journal = failback_journal(false);
    journal.plan.kind = Kind::Failback {
        from: STANDBY.into(),
        delete_dr: false,
        keep_data: false,
    };
    journal.plan.standby = Some((STANDBY.into(), 6379));
    assert_eq!(journal.plan.steps().last(), Some(&Step::EmptyStandby));
    let journal = run(&fake, dir.path(), journal)
        .await
        .map_err(|(_, e)| e)
        .expect("the failback completes");
    assert_eq!(fake.cname(), [OLD]);
    assert_eq!(fake.cloud().standby_keys, 0, "the standby was emptied");
    let emptied = journal
        .entry(Step::EmptyStandby, Phase::Done)
        .expect("empty_standby ran");
    assert!(
        emptied.detail.contains("42 keys before, 0 after"),
        "{}",
        emptied.detail
    );
    let switched = journal
        .entries
        .iter()
        .position(|e| e.step == Step::VerifyDns && e.phase == Phase::Done);
    let flushed = journal
        .entries
        .iter()
        .position(|e| e.step == Step::EmptyStandby && e.phase == Phase::Started);
    assert!(
        switched < flushed,
        "emptied only after the record points back"
    );

    let mut deleting = failback_journal(true);
    deleting.plan.standby = Some((STANDBY.into(), 6379));
    assert!(!deleting.plan.steps().contains(&Step::EmptyStandby));
}

/// Issue 22: a `create-failed` or `deleting` cache of the DR name stops the failover at once,
/// before any create and with the record untouched; waiting for its tags (which AWS refuses in
/// those states) took the whole `create_timeout` before.
#[tokio::test]
async fn a_leftover_create_failed_or_deleting_cache_stops_the_failover_at_once() {
    for status in [CacheStatus::CreateFailed, CacheStatus::Deleting] {
        let fake = Fake::new();
        let mut p = plan(true);
        p.create_timeout = Duration::from_secs(3600);
        let name = p.cache.name().to_owned();
        fake.cloud().caches.insert(
            name.clone(),
            (
                CacheInfo {
                    name: name.clone(),
                    arn: format!("arn:aws:elasticache:us-west-2:1:serverlesscache:{name}"),
                    status: status.clone(),
                    endpoint: None,
                },
                BTreeMap::new(),
                u32::MAX,
            ),
        );
        let dir = tempfile::tempdir().unwrap();
        let started = std::time::Instant::now();
        let (_, err) = tokio::time::timeout(
            Duration::from_secs(10),
            run(&fake, dir.path(), Journal::new(p)),
        )
        .await
        .expect("it does not wait out create_timeout")
        .expect_err("a leftover stops it");
        assert!(
            matches!(&err, FailoverError::Leftover { status: s, .. } if s == status.as_str()),
            "{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        assert_never(&fake, Mutation::Create, "nothing created");
        assert_never(&fake, Mutation::CnameChange, "nothing switched");
    }
}
