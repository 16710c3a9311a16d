//! Probe failures, classified so the policy engine can tell a dead region from a bad setup.

use std::fmt;

use serde::Serialize;

/// One step of a path, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Name resolution (the record for the dns path, the endpoint otherwise).
    Resolve,
    /// TCP connect.
    Connect,
    /// TLS handshake.
    Tls,
    /// `AUTH` (skipped, and not reported, without credentials).
    Auth,
    /// `PING`.
    Ping,
    /// `SET <key> <value> EX 60`.
    Set,
    /// `GET <key>` and compare.
    Get,
}

impl Step {
    /// The stable name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Resolve => "resolve",
            Step::Connect => "connect",
            Step::Tls => "tls",
            Step::Auth => "auth",
            Step::Ping => "ping",
            Step::Set => "set",
            Step::Get => "get",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The class of a probe failure (DESIGN.md, "Probes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The name does not exist.
    DnsNxdomain,
    /// The resolver did not answer in time.
    DnsTimeout,
    /// Any other resolver failure.
    DnsError,
    /// The connection was refused.
    ConnectRefused,
    /// The connection did not open in time.
    ConnectTimeout,
    /// The TLS handshake failed (certificate, name, protocol).
    Tls,
    /// Authentication failed (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The server refused the write for lack of memory.
    Oom,
    /// The server refused the write as read-only.
    Readonly,
    /// A command (or the TLS handshake) did not answer in time.
    Timeout,
    /// The reply made no sense, or the connection broke mid-command.
    Protocol,
    /// `GET` did not return what `SET` wrote.
    ValueMismatch,
}

impl ErrorKind {
    /// The stable name used in JSON, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::DnsNxdomain => "dns_nxdomain",
            ErrorKind::DnsTimeout => "dns_timeout",
            ErrorKind::DnsError => "dns_error",
            ErrorKind::ConnectRefused => "connect_refused",
            ErrorKind::ConnectTimeout => "connect_timeout",
            ErrorKind::Tls => "tls",
            ErrorKind::Auth => "auth",
            ErrorKind::Oom => "oom",
            ErrorKind::Readonly => "readonly",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ValueMismatch => "value_mismatch",
        }
    }

    /// Whether the kind is a DNS failure.
    pub fn is_dns(self) -> bool {
        matches!(
            self,
            ErrorKind::DnsNxdomain | ErrorKind::DnsTimeout | ErrorKind::DnsError
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A classified probe failure: which step failed, how, and a human message.
///
/// The message never contains a secret: errors from `AUTH` are reduced to the server's error
/// code before they get here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{step}: {kind}: {message}")]
pub struct ProbeError {
    /// The class, for the policy engine.
    pub kind: ErrorKind,
    /// The step that failed.
    pub step: Step,
    /// What happened, for people.
    pub message: String,
}

impl ProbeError {
    /// A new error.
    pub fn new(kind: ErrorKind, step: Step, message: impl Into<String>) -> Self {
        ProbeError {
            kind,
            step,
            message: message.into(),
        }
    }
}
