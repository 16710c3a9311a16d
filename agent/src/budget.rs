//! The agent's budget of AWS calls: a failover comes first.
//!
//! Route 53's API takes 5 requests a second per account, whoever sends them
//! (tests/FIDELITY.md, R1), and the DR region's ElastiCache API is at its busiest in a regional
//! outage. Three kinds of callers share them:
//!
//! - *recovery*: a failover or a failback, held with [`recovery`] for as long as it runs;
//! - *background*: readiness passes, `preflight` and drills (every call through
//!   [`background`]);
//! - *interactive*: `status` (every call through [`interactive`]).
//!
//! While a recovery runs, background calls wait, so that none of them spends a request the
//! recovery needs, however many watches a readiness pass has. The wait is bounded: a recovery
//! has priority for [`PREEMPT_MAX`] from its start, then background calls go on (a failover
//! held for hours by an approval, or retrying for ever while Route 53's API is down, must
//! not stop readiness for that long). Background calls to Route 53 also take at most a fifth
//! of its rate ([`ROUTE53_BACKGROUND_RATE`]), whatever else runs. Interactive calls never
//! wait for a recovery to end (a person asking what is going on during one must get an
//! answer), but while one runs their Route 53 calls keep to the background rate.
//!
//! The processes of one `state_dir` share the budget ([`share`]): a recovery holds a shared
//! lock on `layout::budget_lock` (an open-file-description lock, which the kernel drops when
//! the process dies, so a crash leaves nothing to clean up), and another process's
//! background calls wait while any is held, for at most [`PREEMPT_MAX`] from when they saw
//! it. So a `preflight` or a drill started by hand on the daemon's host waits for the
//! daemon's failover. Agents on other hosts have their own budgets: the account's Route 53
//! rate is shared with them too, which only their own restraint (the background rate)
//! protects.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{LazyLock, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a recovery keeps background calls waiting, from its start.
pub const PREEMPT_MAX: Duration = Duration::from_secs(600);
/// Background calls to Route 53 per second at most: a fifth of its 5 a second.
pub const ROUTE53_BACKGROUND_RATE: f64 = 1.0;
/// How many background Route 53 calls may go at once after a quiet spell.
const ROUTE53_BACKGROUND_BURST: f64 = 2.0;
/// How often a background call looks again whether another process's recovery has ended.
const SHARED_POLL: Duration = Duration::from_millis(250);

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

/// Waits until interactive call `call` may go: at once, except that while a recovery runs
/// (in this process or, once shared, another) a Route 53 call keeps to the background rate.
pub async fn interactive(call: &str) {
    BUDGET.interactive(call).await;
}

/// Shares this process's budget with the other processes of `state_dir` (see the module doc).
/// Once per process; a later call changes nothing. When the lock file cannot be opened, the
/// budget stays this process's own, and a warning says so; with no `state_dir` at all (no
/// agent of this config ever ran on this host), silently.
pub fn share(state_dir: &Path) {
    match BUDGET.share(state_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(
            "this process's AWS calls will not wait for a failover that another valkey-dr process runs: cannot open {}: {e}",
            crate::layout::budget_lock(state_dir).display()
        ),
    }
}

/// What the shared lock file is, once [`share`]d.
struct Shared {
    file: File,
    path: PathBuf,
}

/// One budget (the process's is [`BUDGET`]; tests make their own).
struct Budget {
    state: Mutex<State>,
    ended: Notify,
    shared: OnceLock<Shared>,
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
            shared: OnceLock::new(),
            preempt_max,
            rate,
            burst,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn share(&self, state_dir: &Path) -> std::io::Result<()> {
        if self.shared.get().is_some() {
            return Ok(());
        }
        let path = crate::layout::budget_lock(state_dir);
        // A shared lock needs the file open for reading only: a user who may read the lock
        // file but not write in `state_dir` still sees the daemon's recoveries.
        let file = match File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
        {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(&path)?,
            Err(e) => return Err(e),
        };
        // Under the state lock, so that a recovery that started before this call takes the
        // shared lock too.
        let s = self.lock();
        if self.shared.set(Shared { file, path }).is_ok() && !s.recoveries.is_empty() {
            self.hold_shared(true);
        }
        Ok(())
    }

    /// Takes (`true`) or drops this process's shared lock, if the budget is shared. It never
    /// blocks: nobody takes the lock exclusively.
    fn hold_shared(&self, hold: bool) {
        if let Some(shared) = self.shared.get()
            && let Err(e) = lock::hold(&shared.file, hold)
        {
            tracing::warn!(
                "cannot {} the budget's lock {}: other valkey-dr processes may not wait for this recovery: {e}",
                if hold { "take" } else { "drop" },
                shared.path.display()
            );
        }
    }

    /// Whether another process of the shared `state_dir` runs a recovery.
    fn held_elsewhere(&self) -> bool {
        self.shared
            .get()
            .is_some_and(|shared| lock::held_elsewhere(&shared.file).unwrap_or(false))
    }

    fn start(&self) -> u64 {
        let mut s = self.lock();
        s.next_id += 1;
        let id = s.next_id;
        if s.recoveries.is_empty() {
            self.hold_shared(true);
        }
        s.recoveries.push((id, Instant::now()));
        id
    }

    fn end(&self, id: u64) {
        {
            let mut s = self.lock();
            s.recoveries.retain(|(r, _)| *r != id);
            if s.recoveries.is_empty() {
                self.hold_shared(false);
            }
        }
        self.ended.notify_waiters();
    }

    /// Whether a recovery runs, here or in another process of the shared `state_dir`.
    fn recovering(&self) -> bool {
        !self.lock().recoveries.is_empty() || self.held_elsewhere()
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
        self.wait_elsewhere(call).await;
        if call.starts_with("route53:") {
            let at = self.reserve_route53();
            tokio::time::sleep_until(at).await;
        }
    }

    /// Waits while another process of the shared `state_dir` runs a recovery, for at most
    /// `preempt_max` from now; says so once per process.
    async fn wait_elsewhere(&self, call: &str) {
        if !self.held_elsewhere() {
            return;
        }
        static SAID: std::sync::Once = std::sync::Once::new();
        SAID.call_once(|| {
            tracing::warn!(
                "waiting for a failover or failback that another valkey-dr process runs to end ({} is locked), at most {}: its AWS calls come first; {call} is the first call to wait",
                self.shared.get().map_or_else(String::new, |s| s.path.display().to_string()),
                crate::text::duration(self.preempt_max)
            );
        });
        let until = Instant::now() + self.preempt_max;
        while Instant::now() < until && self.held_elsewhere() {
            tokio::time::sleep(SHARED_POLL.min(until - Instant::now())).await;
        }
    }

    async fn interactive(&self, call: &str) {
        if call.starts_with("route53:") && self.recovering() {
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

/// The shared lock: Linux's open-file-description locks (`fcntl(F_OFD_SETLK)`), which
/// belong to one open file rather than to the process, so two opens in one process (the
/// tests) see each other's as another process would, and `F_OFD_GETLK` asks whether another
/// open holds one without taking anything.
#[cfg(target_os = "linux")]
mod lock {
    use std::fs::File;
    use std::os::fd::AsRawFd as _;

    fn fcntl(file: &File, command: libc::c_int, kind: libc::c_int) -> std::io::Result<libc::flock> {
        // SAFETY: `flock` is plain data; all zero is a valid value, which the lines below
        // complete (whole file, from offset 0; `l_pid` must be 0 for OFD locks).
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = kind as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: a valid descriptor, a command that takes a `struct flock *`, and a pointer
        // to one that lives across the call.
        if unsafe { libc::fcntl(file.as_raw_fd(), command, &mut lock) } == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(lock)
    }

    /// Takes or drops a shared (read) lock on the whole file.
    pub fn hold(file: &File, hold: bool) -> std::io::Result<()> {
        let kind = if hold { libc::F_RDLCK } else { libc::F_UNLCK };
        fcntl(file, libc::F_OFD_SETLK, kind).map(drop)
    }

    /// Whether another open file holds a lock on it: an exclusive lock would conflict.
    pub fn held_elsewhere(file: &File) -> std::io::Result<bool> {
        let lock = fcntl(file, libc::F_OFD_GETLK, libc::F_WRLCK)?;
        Ok(i32::from(lock.l_type) != libc::F_UNLCK)
    }
}

/// Elsewhere the budget is not shared between processes.
#[cfg(not(target_os = "linux"))]
mod lock {
    use std::fs::File;

    pub fn hold(_: &File, _: bool) -> std::io::Result<()> {
        Ok(())
    }

    pub fn held_elsewhere(_: &File) -> std::io::Result<bool> {
        Ok(false)
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

    #[tokio::test]
    async fn another_process_s_recovery_holds_background_calls_through_state_dir() {
        // Two budgets sharing one state_dir stand for two processes: the lock belongs to an
        // open file, so they see each other's as another process's.
        let dir = tempfile::tempdir().unwrap();
        let daemon = leaked(Duration::from_secs(60), 100.0, 100.0);
        let preflight = leaked(Duration::from_millis(800), 100.0, 100.0);
        daemon.share(dir.path()).unwrap();
        preflight.share(dir.path()).unwrap();
        // A recovery in the daemon: the preflight's calls wait, the daemon's own status does
        // not see its own lock as another's.
        let recovery = Recovery(daemon, daemon.start());
        assert!(preflight.held_elsewhere());
        assert!(!daemon.held_elsewhere());
        let waiting = tokio::spawn(async move {
            let started = Instant::now();
            preflight.background("iam:SimulatePrincipalPolicy").await;
            started.elapsed()
        });
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!waiting.is_finished(), "it waits while the other recovers");
        drop(recovery);
        let waited = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("it goes once the other's recovery ends")
            .unwrap();
        assert!(
            waited >= Duration::from_millis(400) && waited < Duration::from_millis(800),
            "{waited:?}"
        );
        assert!(!preflight.held_elsewhere());
        // A recovery that never ends holds the other's calls for preempt_max at most.
        let _held = Recovery(daemon, daemon.start());
        let started = Instant::now();
        tokio::time::timeout(
            Duration::from_secs(5),
            preflight.background("kms:DescribeKey"),
        )
        .await
        .expect("bounded by preempt_max");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(750) && waited < Duration::from_secs(2),
            "{waited:?}"
        );
        // Interactive calls never wait for it; their Route 53 calls keep to the rate.
        let started = Instant::now();
        preflight
            .interactive("elasticache:DescribeServerlessCaches")
            .await;
        assert!(started.elapsed() < Duration::from_millis(100));
        assert!(preflight.recovering());
    }

    #[tokio::test]
    async fn a_recovery_started_before_the_budget_was_shared_takes_the_lock_when_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let daemon = leaked(Duration::from_secs(60), 100.0, 100.0);
        let other = leaked(Duration::from_secs(60), 100.0, 100.0);
        other.share(dir.path()).unwrap();
        let recovery = Recovery(daemon, daemon.start());
        assert!(!other.held_elsewhere(), "not shared yet");
        daemon.share(dir.path()).unwrap();
        assert!(other.held_elsewhere());
        drop(recovery);
        assert!(!other.held_elsewhere());
    }

    #[tokio::test]
    async fn interactive_route53_calls_keep_to_the_rate_only_while_a_recovery_runs() {
        let budget = leaked(Duration::from_secs(60), 10.0, 2.0);
        let started = Instant::now();
        for _ in 0..6 {
            budget.interactive("route53:ListResourceRecordSets").await;
        }
        assert!(
            started.elapsed() < Duration::from_millis(100),
            "no recovery"
        );
        let _recovery = Recovery(budget, budget.start());
        let started = Instant::now();
        for _ in 0..6 {
            budget.interactive("route53:ListResourceRecordSets").await;
        }
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(350) && took < Duration::from_secs(2),
            "{took:?}"
        );
    }
}
