//! The agent's budget of AWS calls: a failover comes first.
//!
//! Route 53's API takes 5 requests a second per account, whoever sends them
//! (tests/FIDELITY.md, R1), and the DR region's ElastiCache API is at its busiest in a regional
//! outage. Two kinds of callers share them in the daemon:
//!
//! - *recovery*: a failover or a failback, held with [`recovery`] for as long as it runs;
//! - *background*: readiness passes and `preflight` (every call through [`background`]).
//!
//! While a recovery runs, background calls wait, so that none of them spends a request the
//! recovery needs, however many watches a readiness pass has. The wait is bounded: a recovery
//! has priority for [`PREEMPT_MAX`] from its start, then background calls go on (a failover
//! held for hours by an approval, or retrying for ever while Route 53's API is down, must
//! not stop readiness for that long). Background calls to Route 53 also take at most a fifth
//! of its rate ([`ROUTE53_BACKGROUND_RATE`]), whatever else runs.
//!
//! The budget is one per process: the daemon is where readiness and failovers meet. Commands
//! that run in their own process (`valkey-dr failover`, `drill`, `preflight`) keep to their own.

use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a recovery keeps background calls waiting, from its start.
pub const PREEMPT_MAX: Duration = Duration::from_secs(600);
/// Background calls to Route 53 per second at most: a fifth of its 5 a second.
pub const ROUTE53_BACKGROUND_RATE: f64 = 1.0;
/// How many background Route 53 calls may go at once after a quiet spell.
const ROUTE53_BACKGROUND_BURST: f64 = 2.0;

/// The process's budget.
static BUDGET: LazyLock<Budget> = LazyLock::new(|| {
    Budget::new(
        PREEMPT_MAX,
        ROUTE53_BACKGROUND_RATE,
        ROUTE53_BACKGROUND_BURST,
    )
});

/// Held while a failover or failback runs: see the module doc.
#[must_use = "the recovery has priority only while this is held"]
pub struct Recovery(&'static Budget, u64);

impl Drop for Recovery {
    fn drop(&mut self) {
        self.0.end(self.1);
    }
}

/// A recovery starts: background calls wait until it ends (at most [`PREEMPT_MAX`]).
pub fn recovery() -> Recovery {
    let budget: &'static Budget = &BUDGET;
    Recovery(budget, budget.start())
}

/// Waits until background call `call` (`route53:ListResourceRecordSets`, ...) may go: after
/// any recovery (see the module doc), and within Route 53's background rate.
pub async fn background(call: &str) {
    BUDGET.background(call).await;
}

/// One budget (the process's is [`BUDGET`]; tests make their own).
struct Budget {
    state: Mutex<State>,
    ended: Notify,
    preempt_max: Duration,
    rate: f64,
    burst: f64,
}

struct State {
    /// Each running recovery, by id, with its start.
    recoveries: Vec<(u64, Instant)>,
    next_id: u64,
    /// Route 53 background tokens, as of `refilled`; below zero once reserved ahead.
    tokens: f64,
    refilled: Instant,
}

impl Budget {
    fn new(preempt_max: Duration, rate: f64, burst: f64) -> Self {
        Budget {
            state: Mutex::new(State {
                recoveries: Vec::new(),
                next_id: 0,
                tokens: burst,
                refilled: Instant::now(),
            }),
            ended: Notify::new(),
            preempt_max,
            rate,
            burst,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        s.recoveries.push((id, Instant::now()));
        id
    }

    fn end(&self, id: u64) {
        self.lock().recoveries.retain(|(r, _)| *r != id);
        self.ended.notify_waiters();
    }

    /// Until when background calls wait for the running recoveries; `None` when none has
    /// priority any more.
    fn preempted_until(&self) -> Option<Instant> {
        let now = Instant::now();
        self.lock()
            .recoveries
            .iter()
            .map(|(_, started)| *started + self.preempt_max)
            .filter(|until| *until > now)
            .max()
    }

    async fn background(&self, call: &str) {
        loop {
            let ended = self.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            let Some(until) = self.preempted_until() else {
                break;
            };
            tokio::select! {
                () = ended => {}
                () = tokio::time::sleep_until(until) => break,
            }
        }
        if call.starts_with("route53:") {
            let at = self.reserve_route53();
            tokio::time::sleep_until(at).await;
        }
    }

    /// Takes a Route 53 background token: when the call may go.
    fn reserve_route53(&self) -> Instant {
        let mut s = self.lock();
        let now = Instant::now();
        let refill = now.duration_since(s.refilled).as_secs_f64() * self.rate;
        s.tokens = (s.tokens + refill).min(self.burst);
        s.refilled = now;
        s.tokens -= 1.0;
        if s.tokens >= 0.0 {
            now
        } else {
            now + Duration::from_secs_f64(-s.tokens / self.rate)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaked(preempt_max: Duration, rate: f64, burst: f64) -> &'static Budget {
        Box::leak(Box::new(Budget::new(preempt_max, rate, burst)))
    }

    #[tokio::test]
    async fn background_calls_wait_for_a_recovery_to_end() {
        let budget = leaked(Duration::from_secs(60), 100.0, 100.0);
        let recovery = Recovery(budget, budget.start());
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            budget
                .background("elasticache:DescribeServerlessCaches")
                .await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "it waits while the recovery runs");
        drop(recovery);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes once the recovery ends")
            .unwrap();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        // With no recovery, nothing waits.
        let started = Instant::now();
        budget.background("kms:DescribeKey").await;
        assert!(started.elapsed() < Duration::from_millis(100));
    }

    #[tokio::test]
    async fn a_recovery_has_priority_for_preempt_max_only() {
        let budget = leaked(Duration::from_millis(300), 100.0, 100.0);
        let _held = Recovery(budget, budget.start());
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(5), budget.background("iam:GetRole"))
            .await
            .expect("bounded by preempt_max");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(250) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
    }

    #[tokio::test]
    async fn background_route53_calls_keep_to_their_rate() {
        let budget = leaked(Duration::from_secs(60), 10.0, 2.0);
        let started = Instant::now();
        for _ in 0..6 {
            budget.background("route53:GetHostedZone").await;
        }
        // A burst of 2, then 4 more at 10 a second: about 0.4 s.
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(2),
            "{took:?}"
        );
        // Other APIs are not rate-limited here.
        let started = Instant::now();
        for _ in 0..20 {
            budget
                .background("elasticache:DescribeServerlessCaches")
                .await;
        }
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
