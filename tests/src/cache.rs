//! One lab cache: a supervised valkey-server child and its TLS front.
//!
//! The supervisor task owns the `Child`. It alone reaps the process, so every signal goes
//! through it and can never hit a recycled pid. When the process exits, for whatever reason,
//! the supervisor closes the front before it reports the exit: a dead node's address refuses
//! connections, and `kill` returns only once that is true.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::process::Child;
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::{Instant, sleep, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::front::Front;
use crate::iam::IamAuth;
use crate::valkey::ValkeySpec;
use crate::{CacheInfo, LabError};

/// How long a `kill` waits for the process to be reaped and the front closed.
const EXIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `pause` waits for the kernel to report the process stopped.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
/// On lab shutdown, valkey-server gets this long to exit on SIGTERM before SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(2);

type SignalRequest = (libc::c_int, oneshot::Sender<io::Result<()>>);

/// The handle on one valkey-server process.
struct Process {
    pid: u32,
    signals: mpsc::UnboundedSender<SignalRequest>,
    /// Becomes `Some(exit status)` once the process is reaped and the front closed.
    exited: watch::Receiver<Option<String>>,
}

struct ProcessState {
    process: Option<Process>,
    paused: bool,
}

/// How clients must authenticate to one cache: what its TLS front enforces before it
/// forwards anything to the valkey-server behind it.
///
/// The default is what the lab-wide options give ([`crate::LabOptions::iam_user`]);
/// [`crate::Lab::add_cache_with`] (and, for the emulated `CreateServerlessCache`,
/// `Shared::add_cache_with`) sets it per cache.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CacheAuth {
    /// `Some(user)`: the cache uses IAM auth, as a serverless cache whose user group holds an
    /// IAM-enabled user does. The front accepts only `AUTH <user> <token>` or `HELLO <ver> AUTH
    /// <user> <token>` with a token presigned for this cache, its region and this user with the
    /// lab's credentials; anything else gets Valkey's `NOAUTH` or `WRONGPASS`. `None` (the
    /// default): the front forwards everything, and only the server's password (if the lab has
    /// one) applies.
    pub iam_user: Option<String>,
}

impl CacheAuth {
    /// IAM auth for `user`.
    pub fn iam(user: impl Into<String>) -> Self {
        Self {
            iam_user: Some(user.into()),
        }
    }
}

/// One cache of the lab.
pub(crate) struct Cache {
    pub(crate) info: CacheInfo,
    spec: ValkeySpec,
    front: Arc<Front>,
    /// The live process's pid, 0 once it has exited. Read by `Lab`'s `Drop`, which must kill
    /// synchronously and cannot take async locks.
    live_pid: Arc<AtomicU32>,
    /// Serialises faults on this cache.
    state: Mutex<ProcessState>,
    /// Cancelled when the cache is removed or the lab stops.
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Cache {
    /// Starts the server, waits for it, then opens the front on `listener`.
    pub(crate) async fn start(
        info: CacheInfo,
        spec: ValkeySpec,
        tls: Arc<rustls::ServerConfig>,
        auth: &CacheAuth,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Result<Arc<Self>, LabError> {
        let iam = auth.iam_user.as_ref().map(|user| IamAuth {
            cache_name: info.name.clone(),
            region: info.region.clone(),
            user: user.clone(),
        });
        let front = Front::new(
            &info.name,
            info.address,
            tls,
            spec.socket.clone(),
            iam,
            cancel.clone(),
            tracker.clone(),
        );
        let cache = Arc::new(Self {
            info,
            spec,
            front,
            live_pid: Arc::new(AtomicU32::new(0)),
            state: Mutex::new(ProcessState {
                process: None,
                paused: false,
            }),
            cancel,
            tracker,
        });
        {
            let mut state = cache.state.lock().await;
            state.process = Some(cache.start_process().await?);
        }
        cache.front.open(listener).await;
        Ok(cache)
    }

    pub(crate) fn socket(&self) -> PathBuf {
        self.spec.socket.clone()
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.info.address
    }

    /// The running server's pid, if it is running.
    pub(crate) fn pid(&self) -> Option<u32> {
        match self.live_pid.load(Ordering::SeqCst) {
            0 => None,
            pid => Some(pid),
        }
    }

    /// SIGKILLs the live process without waiting; for `Drop`, where nothing can be awaited.
    pub(crate) fn kill_now(&self) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain syscall. The supervisor zeroes `live_pid` right after reaping, so
            // the pid is ours unless the kernel recycled it in that instant.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }

    async fn start_process(&self) -> Result<Process, LabError> {
        self.spec.prepare()?;
        let child = match self.spec.spawn() {
            Ok(child) => child,
            Err(e) => {
                self.spec.forget_password_file();
                return Err(e);
            }
        };
        let pid = child.id().unwrap_or(0);
        self.live_pid.store(pid, Ordering::SeqCst);
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let (exit_tx, exited) = watch::channel(None);
        self.tracker.spawn(supervise(
            child,
            signal_rx,
            exit_tx,
            self.front.clone(),
            self.live_pid.clone(),
            self.cancel.clone(),
            self.info.name.clone(),
        ));
        let process = Process {
            pid,
            signals,
            exited,
        };
        let ready = self
            .spec
            .wait_ready(|| process.exited.borrow().clone())
            .await;
        // valkey-server reads the password file at start-up only (it answers PING only after
        // that), so it need not stay on disk.
        self.spec.forget_password_file();
        let ready = match ready {
            Ok(()) => self.spec.apply_access().await,
            Err(e) => Err(e),
        };
        if let Err(e) = ready {
            let _ = process
                .signal(&self.info.name, libc::SIGKILL, "SIGKILL")
                .await;
            let _ = process.wait_exited(&self.info.name).await;
            return Err(e);
        }
        info!(cache = %self.info.name, pid, socket = %self.spec.socket.display(), "valkey-server ready");
        Ok(process)
    }

    fn running(state: &ProcessState) -> Option<&Process> {
        state
            .process
            .as_ref()
            .filter(|p| p.exited.borrow().is_none())
    }

    /// SIGKILL; returns once the process is reaped and the front refuses connections.
    pub(crate) async fn kill(&self) -> Result<(), LabError> {
        let mut state = self.state.lock().await;
        if let Some(process) = Self::running(&state) {
            process
                .signal(&self.info.name, libc::SIGKILL, "SIGKILL")
                .await?;
            process.wait_exited(&self.info.name).await?;
        } else if let Some(process) = &state.process {
            // Died on its own; make sure the front has finished closing.
            process.wait_exited(&self.info.name).await?;
        }
        state.paused = false;
        Ok(())
    }

    /// SIGSTOP; returns once the kernel reports the process stopped.
    pub(crate) async fn pause(&self) -> Result<(), LabError> {
        let mut state = self.state.lock().await;
        let process = Self::running(&state).ok_or_else(|| LabError::CacheNotRunning {
            cache: self.info.name.clone(),
        })?;
        process
            .signal(&self.info.name, libc::SIGSTOP, "SIGSTOP")
            .await?;
        wait_stopped(process.pid, &self.info.name).await?;
        state.paused = true;
        Ok(())
    }

    /// SIGCONT.
    pub(crate) async fn resume(&self) -> Result<(), LabError> {
        let mut state = self.state.lock().await;
        let process = Self::running(&state).ok_or_else(|| LabError::CacheNotRunning {
            cache: self.info.name.clone(),
        })?;
        process
            .signal(&self.info.name, libc::SIGCONT, "SIGCONT")
            .await?;
        state.paused = false;
        Ok(())
    }

    pub(crate) async fn set_latency(&self, delay: Duration) {
        let _state = self.state.lock().await;
        self.front.set_latency(Some(delay));
    }

    pub(crate) async fn blackhole(&self) {
        let _state = self.state.lock().await;
        self.front.set_blackhole(true);
    }

    pub(crate) async fn refuse_new(&self) {
        let _state = self.state.lock().await;
        self.front.set_refuse_new(true);
    }

    pub(crate) async fn huge_reply(&self) {
        let _state = self.state.lock().await;
        self.front.set_huge_reply(true);
    }

    /// Undoes every fault: network faults off, a stopped server continued, a dead one
    /// restarted on the same socket, the front listening again on the same address.
    pub(crate) async fn clear(&self) -> Result<(), LabError> {
        let mut state = self.state.lock().await;
        self.front.clear_faults();
        match Self::running(&state) {
            // Continuing a process that is not stopped is harmless, and it also covers a
            // SIGSTOP sent from outside the lab.
            Some(process) => {
                process
                    .signal(&self.info.name, libc::SIGCONT, "SIGCONT")
                    .await?;
            }
            None => {
                if let Some(old) = &state.process {
                    old.wait_exited(&self.info.name).await?;
                }
                state.process = Some(self.start_process().await?);
            }
        }
        state.paused = false;
        self.front.reopen().await
    }

    /// Stops the server and closes the front, for removal of the cache.
    pub(crate) async fn stop(&self) {
        let state = self.state.lock().await;
        self.cancel.cancel();
        if let Some(process) = &state.process
            && let Err(e) = process.wait_exited(&self.info.name).await
        {
            warn!(cache = %self.info.name, error = %e, "valkey-server did not stop");
        }
        self.front.close().await;
    }
}

impl Process {
    async fn signal(
        &self,
        cache: &str,
        signal: libc::c_int,
        name: &'static str,
    ) -> Result<(), LabError> {
        let error = |source| LabError::Signal {
            cache: cache.to_string(),
            signal: name,
            pid: self.pid,
            source,
        };
        let (ack, done) = oneshot::channel();
        if self.signals.send((signal, ack)).is_err() {
            // The supervisor has gone: the process has exited already.
            return Err(error(io::Error::from_raw_os_error(libc::ESRCH)));
        }
        match done.await {
            Ok(result) => result.map_err(error),
            Err(_) => Err(error(io::Error::from_raw_os_error(libc::ESRCH))),
        }
    }

    async fn wait_exited(&self, cache: &str) -> Result<(), LabError> {
        let mut exited = self.exited.clone();
        match timeout(EXIT_TIMEOUT, exited.wait_for(Option::is_some)).await {
            Ok(_) => Ok(()),
            Err(_) => Err(LabError::Timeout {
                what: format!("valkey-server of cache {cache} (pid {}) to exit", self.pid),
                after: EXIT_TIMEOUT,
            }),
        }
    }
}

/// Owns the child: forwards signals, reaps it, closes the front when it dies.
async fn supervise(
    mut child: Child,
    mut signals: mpsc::UnboundedReceiver<SignalRequest>,
    exit_tx: watch::Sender<Option<String>>,
    front: Arc<Front>,
    live_pid: Arc<AtomicU32>,
    cancel: CancellationToken,
    cache: String,
) {
    let pid = child.id().unwrap_or(0);
    let status = loop {
        tokio::select! {
            status = child.wait() => break describe(status),
            Some((signal, ack)) = signals.recv() => {
                // The child is not reaped while this task runs, so `pid` is still ours.
                let _ = ack.send(send_signal(pid, signal));
            }
            _ = cancel.cancelled() => break stop(&mut child, pid).await,
        }
    };
    live_pid.store(0, Ordering::SeqCst);
    if cancel.is_cancelled() {
        info!(%cache, pid, %status, "valkey-server stopped");
    } else {
        warn!(%cache, pid, %status, "valkey-server exited");
    }
    front.close().await;
    let _ = exit_tx.send(Some(status));
}

/// Lab shutdown: SIGTERM (plus SIGCONT, in case it is paused), then SIGKILL after a grace.
async fn stop(child: &mut Child, pid: u32) -> String {
    let _ = send_signal(pid, libc::SIGTERM);
    let _ = send_signal(pid, libc::SIGCONT);
    if let Ok(status) = timeout(TERM_GRACE, child.wait()).await {
        return describe(status);
    }
    let _ = child.start_kill();
    match timeout(EXIT_TIMEOUT, child.wait()).await {
        Ok(status) => describe(status),
        // kill_on_drop and the parent-death signal still cover it.
        Err(_) => "did not exit after SIGKILL".to_string(),
    }
}

fn describe(status: io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => status.to_string(),
        Err(e) => format!("wait failed: {e}"),
    }
}

fn send_signal(pid: u32, signal: libc::c_int) -> io::Result<()> {
    if pid == 0 {
        return Err(io::Error::from_raw_os_error(libc::ESRCH));
    }
    // SAFETY: plain syscall on a child this process has not reaped.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Polls `/proc/<pid>/stat` until the process state is `T` (stopped).
async fn wait_stopped(pid: u32, cache: &str) -> Result<(), LabError> {
    let started = Instant::now();
    while started.elapsed() < STOP_TIMEOUT {
        if process_state(pid) == Some('T') {
            return Ok(());
        }
        sleep(Duration::from_millis(5)).await;
    }
    Err(LabError::Timeout {
        what: format!("valkey-server of cache {cache} (pid {pid}) to stop"),
        after: STOP_TIMEOUT,
    })
}

/// The state letter from `/proc/<pid>/stat` (`R`, `S`, `T`, `Z`, ...), `None` if gone.
pub(crate) fn process_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().next()?.chars().next()
}
