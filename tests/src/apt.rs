//! Debian packages a test needs (`crun` and `umoci` for the container image, `promtool` for the
//! alert rules), installed on demand with `apt-get`, the way [`crate::PipPackage`] installs
//! Python tools: only when the command is missing, under a file lock (tests run in parallel, in
//! several processes), bounded in time, from the package registry only.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::LabError;
use crate::valkey::{FileLock, run_logged};

/// An index refresh and an install from a slow mirror both fit; a hung apt-get does not.
const APT_TIMEOUT: Duration = Duration::from_secs(900);
/// Long enough for another test process to finish its own install.
const LOCK_TIMEOUT: Duration = Duration::from_secs(1800);

/// A command that a Debian package provides.
#[derive(Debug, Clone, Copy)]
pub struct DebPackage {
    /// The package's name (`prometheus`).
    pub package: &'static str,
    /// The command the test runs (`promtool`).
    pub command: &'static str,
}

/// `promtool`, for `promtool check rules` and `promtool test rules`.
pub const PROMTOOL: DebPackage = DebPackage {
    package: "prometheus",
    command: "promtool",
};
/// `umoci`, which writes the OCI image layout and unpacks it into a runtime bundle.
pub const UMOCI: DebPackage = DebPackage {
    package: "umoci",
    command: "umoci",
};
/// `crun`, the OCI runtime that runs the image's bundle.
pub const CRUN: DebPackage = DebPackage {
    package: "crun",
    command: "crun",
};

impl DebPackage {
    /// The command's path on `PATH`, after installing the package when it is missing.
    pub fn ensure(&self) -> Result<PathBuf, LabError> {
        if let Some(found) = on_path(self.command) {
            return Ok(found);
        }
        let failed = |reason: String| LabError::AptInstall {
            package: self.package.to_string(),
            reason,
        };
        let target = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target");
        fs::create_dir_all(&target).map_err(|e| failed(format!("creating target/: {e}")))?;
        let lock_path = target.join("apt.lock");
        let _lock = FileLock::acquire(&lock_path, LOCK_TIMEOUT, || {
            eprintln!(
                "valkey-dr-lab: waiting for another process running apt-get (lock {})",
                lock_path.display()
            );
        })
        .map_err(|e| failed(format!("locking {}: {e}", lock_path.display())))?;
        // Another process may have installed it while we waited.
        if let Some(found) = on_path(self.command) {
            return Ok(found);
        }
        let log_path = target.join(format!("apt-{}.log", self.package));
        eprintln!(
            "valkey-dr-lab: {} is missing; installing Debian's {} (output in {})",
            self.command,
            self.package,
            log_path.display()
        );
        // A fresh machine may have no package lists yet: install, and on failure refresh
        // them once and try again.
        let install = || {
            apt_get(
                &[
                    "install",
                    "-y",
                    "-q",
                    "--no-install-recommends",
                    self.package,
                ],
                &log_path,
            )
        };
        if install().is_err() {
            apt_get(&["update", "-q"], &log_path).map_err(failed)?;
            install().map_err(failed)?;
        }
        on_path(self.command).ok_or_else(|| {
            failed(format!(
                "apt-get installed {} but {} is not on PATH",
                self.package, self.command
            ))
        })
    }
}

fn apt_get(args: &[&str], log_path: &Path) -> Result<(), String> {
    let log =
        File::create(log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    // SAFETY: geteuid has no preconditions and touches no memory.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        std::process::Command::new("apt-get")
    } else {
        let mut sudo = std::process::Command::new("sudo");
        sudo.args(["-n", "apt-get"]);
        sudo
    };
    command
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    run_logged(
        &mut command,
        if root { "apt-get" } else { "sudo" },
        "apt-get",
        APT_TIMEOUT,
        log_path,
    )
}

/// The first executable `name` on `PATH` (and in the sbin directories, where a non-root
/// `PATH` may leave out what apt-get installed).
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
