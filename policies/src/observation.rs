//! What one probe round tells the engine.
//!
//! These are the engine's own types rather than the probes crate's, so that the decision
//! rules can be read, tested and changed without pulling in sockets, TLS or a resolver. The
//! agent maps a probe round onto an [`Observation`].

use serde::{Deserialize, Serialize};

/// Why a probe path failed, as the probes report it.
///
/// The engine splits the kinds in two (see [`FailureKind::is_outage`]): kinds that say the
/// cache or its region cannot be reached, which may lead to a failover, and kinds that say
/// the cache answered but our setup is wrong, which only ever raise an alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
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
    /// The TLS handshake failed.
    Tls,
    /// Authentication failed (`WRONGPASS`, `NOAUTH`).
    Auth,
    /// The server refused the write for lack of memory.
    Oom,
    /// The server refused the write as read-only.
    Readonly,
    /// A command did not answer in time.
    Timeout,
    /// The reply made no sense.
    Protocol,
    /// `GET` did not return what `SET` wrote.
    ValueMismatch,
    /// The agent's own host failed the probe (out of file descriptors, no local address or
    /// port, no buffers) before anything reached the network.
    Local,
}

impl FailureKind {
    /// Every kind, in declaration order; tests and exhaustive tables use it.
    pub const ALL: [FailureKind; 13] = [
        FailureKind::DnsNxdomain,
        FailureKind::DnsTimeout,
        FailureKind::DnsError,
        FailureKind::ConnectRefused,
        FailureKind::ConnectTimeout,
        FailureKind::Tls,
        FailureKind::Auth,
        FailureKind::Oom,
        FailureKind::Readonly,
        FailureKind::Timeout,
        FailureKind::Protocol,
        FailureKind::ValueMismatch,
        FailureKind::Local,
    ];

    /// The snake_case name used in logs, metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::DnsNxdomain => "dns_nxdomain",
            FailureKind::DnsTimeout => "dns_timeout",
            FailureKind::DnsError => "dns_error",
            FailureKind::ConnectRefused => "connect_refused",
            FailureKind::ConnectTimeout => "connect_timeout",
            FailureKind::Tls => "tls",
            FailureKind::Auth => "auth",
            FailureKind::Oom => "oom",
            FailureKind::Readonly => "readonly",
            FailureKind::Timeout => "timeout",
            FailureKind::Protocol => "protocol",
            FailureKind::ValueMismatch => "value_mismatch",
            FailureKind::Local => "local",
        }
    }

    /// Whether this kind says the cache or its region cannot be reached, so that it may count
    /// toward `Down` and a failover.
    ///
    /// The others mean the cache answered and refused us, which a new cache in another
    /// region would do just the same, so failing over would log every user out for nothing:
    /// - `auth`: wrong credentials or user group;
    /// - `oom`, `readonly`: the cache is full or read-only, which is a capacity or
    ///   maintenance matter that a human must judge;
    /// - `value_mismatch`: someone else writes our probe keys, or a proxy is in the way;
    /// - `tls`: a handshake needs the server to answer, so a failure is almost always an
    ///   expired or mismatched certificate or a wrong CA file. A dead region times out or
    ///   refuses the connection before TLS starts, which the connect kinds already report;
    /// - `local`: the agent's own host could not make the probe (out of descriptors, ports or
    ///   buffers). Nothing reached the network, so it says nothing about the cache, and a
    ///   failover would not give the agent more descriptors.
    pub fn is_outage(self) -> bool {
        match self {
            FailureKind::DnsNxdomain
            | FailureKind::DnsTimeout
            | FailureKind::DnsError
            | FailureKind::ConnectRefused
            | FailureKind::ConnectTimeout
            | FailureKind::Timeout
            | FailureKind::Protocol => true,
            FailureKind::Tls
            | FailureKind::Auth
            | FailureKind::Oom
            | FailureKind::Readonly
            | FailureKind::ValueMismatch
            | FailureKind::Local => false,
        }
    }
}

impl FailureKind {
    /// Whether the kind is a resolver failure. Both paths resolve a name through the agent's
    /// own resolver (the dns path the record, the direct path the endpoint), so a round where
    /// both fail this way points at that resolver, not at the cache.
    pub fn is_dns(self) -> bool {
        matches!(
            self,
            FailureKind::DnsNxdomain | FailureKind::DnsTimeout | FailureKind::DnsError
        )
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one probe path in one round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathStatus {
    /// Every step of the path (resolve, connect, TLS, auth, PING, SET, GET) succeeded.
    Ok,
    /// The path failed, and this is the kind of the first failing step.
    Failed(FailureKind),
}

impl PathStatus {
    /// The failure kind, if the path failed.
    pub fn failure(self) -> Option<FailureKind> {
        match self {
            PathStatus::Ok => None,
            PathStatus::Failed(kind) => Some(kind),
        }
    }
}

/// The agent's check of its own reach to the outside (by default `DescribeServerlessCaches`
/// in the DR region).
///
/// Without it, an agent whose own host lost the network would see every probe fail and
/// judge a healthy region dead.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Witness {
    /// The agent reached the witness this round.
    Ok,
    /// The witness was not called: both paths answered, which itself proves the agent
    /// reaches the network. Not evidence about the witness, so no event claims it is ok.
    Unneeded,
    /// The agent could not reach the witness; the string says why.
    Failed(String),
    /// The watch has no witness (`kind = "none"`); the engine then trusts the probes alone.
    NotConfigured,
    /// The witness call was refused for the agent's credentials or permissions (or no
    /// credentials could be loaded). A configuration error, never isolation: it is announced
    /// as `config_error`, and it blocks a failover, which would fail at its first call.
    Denied(String),
}

/// Everything the agent learned about one watch in one probe round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The path through the record, the way an application sees the cache.
    pub dns: PathStatus,
    /// The path straight to the active cache's endpoint. Comparing it with `dns` separates
    /// a record or resolver problem from a cache problem.
    pub direct: PathStatus,
    /// The record's CNAME target when it points somewhere other than the cache the agent
    /// believes is active. Someone else changed the record, so the agent must not act on it.
    pub drift: Option<String>,
    /// This round's witness result.
    pub witness: Witness,
    /// While the watch is served by the DR cache: the old primary's probe result this round,
    /// so that the engine can say when failback is possible. `None` when it was not probed.
    pub old_primary: Option<PathStatus>,
}
