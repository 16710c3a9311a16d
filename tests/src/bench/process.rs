//! Child processes a benchmark owns, and what `/proc` says about them.
//!
//! Every child dies with the bench: `kill_on_drop` covers an early return or a panic, and the
//! parent-death signal covers a `kill -9` of the bench itself. [`Owned::stop`] is the orderly
//! way, bounded.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::process::{Child, Command};

/// How long a SIGKILLed child may take to be reaped before we give up on it.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running child, killed when dropped.
pub struct Owned {
    /// For messages: "valkey-dr", "sentinel", "master".
    name: &'static str,
    child: Child,
    pid: u32,
    /// stdout and stderr, for the error message when it dies early.
    log: PathBuf,
}

impl Owned {
    /// Spawns `command` with stdout and stderr appended to `log`. Call from an async task,
    /// never from `spawn_blocking`: the parent-death signal fires when the *spawning thread*
    /// exits, and blocking-pool threads exit after a few idle seconds.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> anyhow::Result<Owned> {
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // No daemon may outlive the bench, even after `kill -9` of the bench.
        valkey_dr_lab::die_with_parent(&mut command);
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({:?})", command.as_std().get_program()))?;
        let pid = child
            .id()
            .with_context(|| format!("{name} exited at once"))?;
        Ok(Owned {
            name,
            child,
            pid,
            log: log.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails, with the end of its log, when the process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!(
                "{} (pid {}) exited ({status}); end of {}:\n{}",
                self.name,
                self.pid,
                self.log.display(),
                self.log_tail()
            ),
            Err(e) => Err(e).with_context(|| format!("checking on {}", self.name)),
        }
    }

    /// SIGSTOP / SIGCONT, for outages the bench makes itself.
    pub fn signal(&self, signal: libc::c_int) -> anyhow::Result<()> {
        // SAFETY: kill(2) on the pid of a child we have not reaped, so it cannot be reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, signal) } == -1 {
            return Err(io::Error::last_os_error())
                .with_context(|| format!("signal {signal} to {} (pid {})", self.name, self.pid));
        }
        Ok(())
    }

    /// The last lines of its log.
    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL and reap, bounded. Nothing is measured after this, so there is no need for a
    /// graceful stop; a stopped (SIGSTOP) process dies of SIGKILL too.
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        if tokio::time::timeout(REAP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            eprintln!(
                "bench: {} (pid {}) was not reaped within {REAP_TIMEOUT:?}",
                self.name, self.pid
            );
        }
    }
}

/// Clock ticks per second, for `/proc/<pid>/stat`'s utime and stime.
pub fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant; it touches no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// utime + stime of the process, in clock ticks (threads included, reaped children not).
pub fn cpu_ticks(pid: u32) -> io::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu_ticks(&text)
        .ok_or_else(|| io::Error::other(format!("unexpected /proc/{pid}/stat: {text:?}")))
}

/// The fields after the command name (which may hold spaces and parentheses) start with the
/// state, field 3; utime and stime are fields 14 and 15.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Resident memory now and at its peak.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

pub fn memory(pid: u32) -> io::Result<Memory> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_memory(&text)
        .ok_or_else(|| io::Error::other(format!("no VmRSS/VmHWM in /proc/{pid}/status")))
}

fn parse_memory(status: &str) -> Option<Memory> {
    Some(Memory {
        rss_kib: field(status, "VmRSS:")?,
        hwm_kib: field(status, "VmHWM:")?,
    })
}

/// The first number after `name` on its line of a `/proc/<pid>` file (`VmRSS:\t6144 kB`,
/// `Threads:\t3`, smaps' `Rss:   6144 kB`).
pub fn field(text: &str, name: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(name))?;
    line[name.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_an_awkward_command_name() {
        let stat = "4242 (valkey (x) dr) S 1 4242 4242 0 -1 4194560 900 0 0 0 37 12 0 0 20 0 3 0";
        assert_eq!(parse_cpu_ticks(stat), Some(49));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn status_memory_lines() {
        let status = "Name:\tvalkey-dr\nVmHWM:\t    8200 kB\nVmRSS:\t    6144 kB\n";
        let m = parse_memory(status).unwrap();
        assert_eq!((m.rss_kib, m.hwm_kib), (6144, 8200));
        assert!(parse_memory("Name:\tx\n").is_none());
    }

    #[test]
    fn this_process_can_be_read() {
        let pid = std::process::id();
        assert!(memory(pid).unwrap().rss_kib > 0);
        cpu_ticks(pid).unwrap();
    }
}
