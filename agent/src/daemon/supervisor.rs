//! Keeps each watch's task running. A task that ends while the agent is not shutting down
//! (a panic: a bug, or a state no code expected) would leave its cache unwatched, with the
//! other watches still ticking `/healthz`. So its end is announced (`config_error`, with the
//! cause), `/healthz` and `/status` say the watch is down, and the task is started again
//! from its saved state after a backoff: 1 s, doubling to 60 s, back to 1 s once a task has
//! run [`HEALTHY_STRETCH`].
//!
//! The supervisor owns the task's control channel: each start gets a fresh one, whose sender
//! replaces the last in the watch's [`ControlSlot`], so `dispatch_control` never holds a
//! sender whose task is gone (while it is down, a request is answered `watch stopped` at
//! once).

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;
use tokio::task::JoinError;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admin::Health;
use crate::control::status::TaskStatus;

use super::{ControlRx, ControlTx};

/// The wait before the first restart, and after a task that ran [`HEALTHY_STRETCH`].
pub(super) const FIRST_BACKOFF: Duration = Duration::from_secs(1);

/// The longest wait between restarts: a task that keeps failing is still tried each minute.
pub(super) const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How long a task must have run for its end to count as new trouble, not the same one.
pub(super) const HEALTHY_STRETCH: Duration = Duration::from_secs(300);

/// How many control requests wait for a watch's task.
const CONTROL_QUEUE: usize = 4;

/// Where a watch's task hears control requests: the sender of its current control channel.
#[derive(Debug, Clone)]
pub(super) struct ControlSlot(Arc<Mutex<ControlTx>>);

impl ControlSlot {
    /// A slot whose channel no task hears yet.
    pub(super) fn new() -> ControlSlot {
        ControlSlot(Arc::new(Mutex::new(mpsc::channel(CONTROL_QUEUE).0)))
    }

    /// The current task's sender.
    pub(super) fn sender(&self) -> ControlTx {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A fresh channel for the task about to start: its sender takes the slot.
    fn renew(&self) -> ControlRx {
        let (tx, rx) = mpsc::channel(CONTROL_QUEUE);
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = tx;
        rx
    }
}

/// Announces a task's end: the watch, the reasons and the task's status, for the
/// `config_error` event.
pub(super) type Announce = Arc<dyn Fn(&str, Vec<String>, &TaskStatus) + Send + Sync>;

/// Who hears of a watch's task that ended, and of its restart.
pub(super) struct Watchers {
    /// `/healthz` fails while the task is down.
    pub health: Arc<Health>,
    /// The `config_error` event.
    pub announce: Announce,
    /// `/status` `tasks`.
    pub news: mpsc::UnboundedSender<(String, TaskStatus)>,
}

/// Runs the task `start` makes (with its control channel) for watch `name` until
/// `shutdown`, starting it again each time it ends before.
pub(super) async fn keep_running<F, Fut>(
    name: String,
    slot: ControlSlot,
    mut start: F,
    watchers: Watchers,
    shutdown: CancellationToken,
) where
    F: FnMut(ControlRx) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut restarts = 0;
    let mut backoff = Backoff::default();
    loop {
        let started = Instant::now();
        let ended = tokio::spawn(start(slot.renew())).await;
        let cause = ended_cause(ended);
        if shutdown.is_cancelled() {
            if let Some(cause) = cause.filter(|c| c.starts_with("panicked")) {
                tracing::error!(watch = %name, "the watch's task {cause} while shutting down");
            }
            return;
        }
        let cause = cause.unwrap_or_else(|| "returned while the agent ran".to_owned());
        restarts += 1;
        let wait = backoff.after(started.elapsed());
        watchers.down(&name, &cause, restarts, wait);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        watchers.up(&name, &cause, restarts);
    }
}

impl Watchers {
    fn down(&self, name: &str, cause: &str, restarts: u32, wait: Duration) {
        let wait_text = crate::text::duration(wait);
        tracing::error!(watch = %name, restart = restarts, "the watch's task {cause}; starting it again from its saved state in {wait_text}");
        self.health
            .task_down(name, cause, restarts, Instant::now() + wait);
        let status = TaskStatus {
            last_panic: cause.to_owned(),
            restart_at: Some(crate::text::rfc3339_seconds(SystemTime::now() + wait)),
            restarts,
            task: "restarting".to_owned(),
        };
        let reasons = vec![
            format!("watch {name}'s task {cause}: the watch is not probed"),
            format!(
                "restarting it in {wait_text} (restart {restarts}) from its saved state (pause, cooldown and streaks are kept)"
            ),
        ];
        (self.announce)(name, reasons, &status);
        let _ = self.news.send((name.to_owned(), status));
    }

    fn up(&self, name: &str, cause: &str, restarts: u32) {
        tracing::info!(watch = %name, restart = restarts, "the watch's task started again");
        self.health.task_up(name);
        let status = TaskStatus {
            last_panic: cause.to_owned(),
            restart_at: None,
            restarts,
            task: "running".to_owned(),
        };
        let _ = self.news.send((name.to_owned(), status));
    }
}

/// Why a task ended, one escaped line (`panicked (MESSAGE)`); `None` when it returned.
fn ended_cause(ended: Result<(), JoinError>) -> Option<String> {
    let error = ended.err()?;
    if !error.is_panic() {
        return Some("was cancelled".to_owned());
    }
    let panic = error.into_panic();
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".to_owned());
    Some(format!("panicked ({})", crate::text::outside(message)))
}

/// The waits between restarts.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            next: FIRST_BACKOFF,
        }
    }
}

impl Backoff {
    /// The wait before starting again a task that ran `ran`.
    fn after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_STRETCH {
            self.next = FIRST_BACKOFF;
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(MAX_BACKOFF);
        wait
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    use tokio::sync::oneshot;

    use super::*;
    use crate::control::status::WatchAnswer;
    use crate::control::{ControlAction, ControlRequest};

    /// What the test's watchers heard: each announcement and each `/status` news.
    type Heard = Arc<Mutex<Vec<(String, Vec<String>, TaskStatus)>>>;

    fn watchers(
        health: &Arc<Health>,
    ) -> (
        Watchers,
        Heard,
        mpsc::UnboundedReceiver<(String, TaskStatus)>,
    ) {
        let heard: Heard = Arc::default();
        let told = heard.clone();
        let (news, news_rx) = mpsc::unbounded_channel();
        let watchers = Watchers {
            health: health.clone(),
            announce: Arc::new(move |watch, reasons, status| {
                told.lock()
                    .unwrap()
                    .push((watch.to_owned(), reasons, status.clone()));
            }),
            news,
        };
        (watchers, heard, news_rx)
    }

    /// Asks watch `sessions` to resume through `dispatch_control`, as the admin server does.
    async fn resume(requests: &mpsc::Sender<ControlRequest>) -> WatchAnswer {
        let (reply, answer) = oneshot::channel();
        let request = ControlRequest {
            action: ControlAction::Resume { origin: None },
            watch: Some("sessions".to_owned()),
            reply,
        };
        requests.send(request).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), answer)
            .await
            .expect("dispatch answers within 5s")
            .unwrap()
            .unwrap();
        answer.watches["sessions"].clone()
    }

    /// Issue 23: a watch task that panicked stayed dead, and the agent still said healthy.
    /// The body panics on its first start (with a control character in the message) and
    /// serves control requests on its second.
    #[tokio::test]
    async fn a_task_that_panics_is_announced_shown_down_and_started_again_with_working_controls() {
        let health = Arc::new(Health::new(Duration::from_secs(5)));
        let (watchers, heard, mut news) = watchers(&health);
        let slot = ControlSlot::new();
        let starts = Arc::new(AtomicU32::new(0));
        let counted = starts.clone();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone();
        let body = move |mut control: ControlRx| {
            let start = counted.fetch_add(1, Ordering::SeqCst);
            let stop = stop.clone();
            async move {
                assert!(start > 0, "year 10000\nis not a time");
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        Some((_, reply)) = control.recv() => {
                            let _ = reply.send(WatchAnswer::error(format!("heard by start {start}")));
                        }
                    }
                }
            }
        };
        let (requests, requests_rx) = mpsc::channel(4);
        let slots = BTreeMap::from([("sessions".to_owned(), slot.clone())]);
        tokio::spawn(super::super::dispatch_control(requests_rx, slots));
        let supervisor = tokio::spawn(keep_running(
            "sessions".to_owned(),
            slot,
            body,
            watchers,
            shutdown.clone(),
        ));

        let (watch, down) = tokio::time::timeout(Duration::from_secs(5), news.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(watch, "sessions");
        let cause = "panicked (year 10000\\nis not a time)";
        assert_eq!(down.task, "restarting");
        assert_eq!((down.restarts, down.last_panic.as_str()), (1, cause));
        assert!(down.restart_at.is_some(), "{down:?}");
        assert_eq!(
            health.healthy(),
            Err(format!(
                "watch sessions's task {cause}, restarting in 1s (restart 1)"
            ))
        );
        {
            let heard = heard.lock().unwrap();
            assert_eq!(heard.len(), 1, "{heard:?}");
            assert_eq!(heard[0].0, "sessions");
            assert!(heard[0].1[0].contains(cause), "{heard:?}");
            assert_eq!(heard[0].2, down);
        }
        // While it is down, a control request is answered at once, not left waiting.
        let answer = resume(&requests).await;
        assert_eq!(answer.error.as_deref(), Some("watch stopped"));

        let (_, up) = tokio::time::timeout(Duration::from_secs(5), news.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((up.task.as_str(), up.restarts), ("running", 1));
        assert_eq!(health.healthy(), Ok(()));
        // The same control path reaches the task started again.
        let answer = resume(&requests).await;
        assert_eq!(answer.error.as_deref(), Some("heard by start 1"));
        assert_eq!(starts.load(Ordering::SeqCst), 2);

        shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(5), supervisor)
            .await
            .expect("the supervisor stops with the agent")
            .unwrap();
        assert_eq!(heard.lock().unwrap().len(), 1, "shutdown is no failure");
    }

    #[test]
    fn the_backoff_doubles_to_a_minute_and_starts_over_after_a_healthy_stretch() {
        let mut backoff = Backoff::default();
        let quick = Duration::from_millis(10);
        let waits: Vec<u64> = (0..8).map(|_| backoff.after(quick).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(backoff.after(HEALTHY_STRETCH), FIRST_BACKOFF);
        assert_eq!(backoff.after(quick), Duration::from_secs(2));
    }
}
