//! One probe round against a Valkey Serverless cache.
//!
//! A round checks a watch on up to three *paths*: `dns` (through the Route 53 record, the way
//! an application sees the cache), `direct` (to the cache endpoint) and optionally `reader`
//! (the endpoint's read port, 6380). Every path runs the same timed steps: resolve, connect,
//! TLS, auth, `PING`, `SET key value EX 60`, `GET` and compare. Failures are classified into
//! [`ErrorKind`]s that the policy engine can reason about.
//!
//! A daemon keeps one connection per path between rounds ([`Connections`]), as the
//! applications' pooled clients do, and replaces it by a fresh connect and handshake every
//! `handshake_interval`, when the path's target changes, and after any error; a failure on a
//! kept connection is retried at once on a fresh one, so a dead connection is never taken for
//! a dead cache. One-shots (`check`, the executor's verification) connect afresh every time.
//!
//! Besides the probes, [`Prober::session`] opens the same kind of connection for a few
//! commands of the agent's own (the failback's emptying of the old primary); what it sends
//! is the agent's.
//!
//! This crate measures; it never decides. Besides those connections it keeps only the
//! resolver cache (which is the point: the dns path honours TTLs the way applications do) and
//! the IAM token cache. Every await on the network is bounded by the probe timeout, so a hung
//! server can never stall a round past it.
#![deny(missing_docs)]

mod cert;
mod error;
mod iam;
mod path;
mod resolve;
mod session;
mod tls;
mod wire;

pub use error::{ErrorKind, ProbeError, Step, foreign_text};
pub use iam::{IamError, IamSigner, IamTokenSource};
pub use path::{Connection, Connections};
pub use resolve::{ResolverSettings, SetupError, build_resolver};
pub use session::{CommandError, Reply, Session};
pub use tls::{TlsSetupError, client_config};

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;

/// Which way a path reaches the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Through the Route 53 record (CNAME), as applications do.
    Dns,
    /// Straight to the cache endpoint name.
    Direct,
    /// The endpoint's reader port (6380 on Serverless).
    Reader,
    /// The warm standby's endpoint (`[watch.dr] standby = "warm"`): not the watch's cache,
    /// never part of its verdict; what a failover would switch to.
    Standby,
}

impl PathKind {
    /// The stable name used in JSON, metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Dns => "dns",
            PathKind::Direct => "direct",
            PathKind::Reader => "reader",
            PathKind::Standby => "standby",
        }
    }
}

impl fmt::Display for PathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which name the dns path checks the server certificate against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsServerName {
    /// The CNAME target, i.e. the ElastiCache endpoint name the certificate is issued for.
    Endpoint,
    /// The record name, as a strict application that connects by the record would.
    Record,
}

/// TLS settings for a watch. `None` in [`ProbeSpec::tls`] means plaintext.
#[derive(Clone)]
pub struct TlsSettings {
    /// The verifier (roots, or the loudly-logged insecure skip) prepared once per watch.
    pub client_config: Arc<rustls::ClientConfig>,
    /// Which name the dns path verifies against.
    pub server_name: TlsServerName,
}

impl fmt::Debug for TlsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsSettings")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A secret string (a password or a token). Its `Debug` never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send it over the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// How a probe authenticates.
#[derive(Debug, Clone)]
pub enum Auth {
    /// No authentication (the default user, no password).
    None,
    /// `AUTH [username] password`.
    Password {
        /// The ACL user; `None` authenticates as `default`.
        username: Option<String>,
        /// The password, read from an environment variable or a file, never from config text.
        password: Secret,
    },
    /// `AUTH username <SigV4 token>`, with tokens refreshed before they expire.
    Iam {
        /// The ACL user the token is issued for.
        username: String,
        /// Where tokens come from; shared across rounds so tokens are reused until near expiry.
        tokens: Arc<IamTokenSource>,
    },
}

/// Everything one round needs to probe one watch. Built once from config, reused every round.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    /// The watch name, carried into the observation.
    pub watch: String,
    /// The Route 53 record applications use, fully qualified (trailing dot).
    pub record: String,
    /// The endpoint the agent believes is active; the direct path's target. A dns path whose
    /// CNAME target differs from it is *drift*.
    pub endpoint: String,
    /// The cache port (6379 on Serverless).
    pub port: u16,
    /// The reader port (6380 on Serverless), when the reader path is probed.
    pub reader_port: Option<u16>,
    /// Bounds each path as a whole: resolve through GET must finish within it.
    pub timeout: Duration,
    /// How long a kept connection serves before a fresh connect and handshake replaces it
    /// (less up to a tenth at random). One-shot rounds ignore it.
    pub handshake_interval: Duration,
    /// Every key the probe writes starts with this.
    pub key_prefix: String,
    /// The agent id, part of the probe key so that several agents never collide.
    pub agent_id: String,
    /// `None` for plaintext (lab or tests only; Serverless accepts TLS only).
    pub tls: Option<TlsSettings>,
    /// How to authenticate.
    pub auth: Auth,
}

/// The timing of one step of a path.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct StepTiming {
    /// The step.
    pub step: Step,
    /// How long it took (up to the failure, for the failing step).
    #[serde(serialize_with = "serialize_ms")]
    pub duration: Duration,
}

/// What one path saw in one round.
#[derive(Debug, Clone, Serialize)]
pub struct PathResult {
    /// Which path.
    pub path: PathKind,
    /// The failure, if any. `None` means every step passed.
    pub error: Option<ProbeError>,
    /// Time from the start of the path to its end (success or failure).
    #[serde(serialize_with = "serialize_ms")]
    pub latency: Duration,
    /// Each step that ran, in order, with its duration.
    pub steps: Vec<StepTiming>,
    /// The name the connection was aimed at after resolution: for the dns path the CNAME
    /// target (without trailing dot), for the others the endpoint.
    pub target: Option<String>,
    /// The address the path connected (or tried to connect) to.
    pub address: Option<SocketAddr>,
    /// The remaining TTL of the answer the resolver used, as an application would see it.
    #[serde(serialize_with = "serialize_opt_secs")]
    pub ttl: Option<Duration>,
    /// For the dns path over TLS, once a handshake succeeded: whether the server's certificate
    /// also names the record, i.e. whether an application that connects by the record name and
    /// checks hostnames strictly would accept it. `None` for other paths, plaintext, or when no
    /// handshake completed.
    pub record_name_verified: Option<bool>,
    /// When the earliest certificate of the chain the server presented expires; `None`
    /// without TLS or when no handshake completed.
    pub cert_expiry: Option<std::time::SystemTime>,
    /// The connection the round used: kept from earlier rounds, or fresh and why.
    pub connection: Connection,
}

impl PathResult {
    /// Whether every step passed.
    pub fn ok(&self) -> bool {
        self.error.is_none()
    }
}

/// The result of one probe round for one watch.
#[derive(Debug, Clone, Serialize)]
pub struct Observation {
    /// The watch name.
    pub watch: String,
    /// When the round started (wall clock, for reports only; decisions take time as an argument).
    pub started_at: SystemTime,
    /// The endpoint the agent believed active when it probed.
    pub expected_target: String,
    /// One result per probed path, in the order dns, direct, reader.
    pub paths: Vec<PathResult>,
}

impl Observation {
    /// The result of one path, if it was probed.
    pub fn path(&self, kind: PathKind) -> Option<&PathResult> {
        self.paths.iter().find(|p| p.path == kind)
    }

    /// The record's CNAME target when it differs from the endpoint the agent believes active.
    /// Names compare case-insensitively and without the trailing dot, as DNS does.
    pub fn drift(&self) -> Option<&str> {
        let target = self.path(PathKind::Dns)?.target.as_deref()?;
        (!same_name(target, &self.expected_target)).then_some(target)
    }
}

/// Whether two DNS names are the same name (case-insensitive, trailing dot optional).
pub fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.')
        .eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn serialize_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1e6).round() / 1e3)
}

fn serialize_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&d.as_secs()),
        None => s.serialize_none(),
    }
}

/// Runs probe rounds. Holds the resolver (and so its TTL-honouring cache) across rounds.
pub struct Prober {
    resolver: resolve::Resolver,
    /// The same name servers with no cache, for [`Prober::cname_now`].
    fresh: resolve::Resolver,
}

impl Prober {
    /// A prober using the given resolver settings.
    pub fn new(settings: &ResolverSettings) -> Result<Self, SetupError> {
        Ok(Prober {
            resolver: build_resolver(settings)?,
            fresh: resolve::build_fresh_resolver(settings)?,
        })
    }

    /// The CNAME target `record` has now, asked of the name servers with no cache and bounded
    /// by `within`: a switch made in DNS (a failover pair's answer) shows the moment it
    /// happens, where the dns path waits out the TTL as applications do. `Ok(None)`: the
    /// record has no CNAME.
    pub async fn cname_now(
        &self,
        record: &str,
        within: Duration,
    ) -> Result<Option<String>, ProbeError> {
        match tokio::time::timeout(within, resolve::cname_now(&self.fresh, record)).await {
            Ok(answer) => answer,
            Err(_) => Err(ProbeError::new(
                ErrorKind::DnsTimeout,
                error::Step::Resolve,
                format!("{record}: the resolver did not answer within {within:?}"),
            )),
        }
    }

    /// One round for one watch: every path concurrently, each bounded by `spec.timeout`, on
    /// fresh connections closed at the end of the round.
    pub async fn round(&self, spec: &ProbeSpec) -> Observation {
        path::round(&self.resolver, spec, None).await
    }

    /// One round for one watch on the connections it keeps between rounds (see
    /// [`Connections`]): each path reuses its connection, or makes (and keeps) a fresh one.
    pub async fn round_kept(&self, spec: &ProbeSpec, kept: &mut Connections) -> Observation {
        path::round(&self.resolver, spec, Some(kept)).await
    }

    /// Only the direct path of `spec`, on a fresh connection: for the old primary after a
    /// failover, when the record points at the DR cache and only the primary's own endpoint
    /// says anything about it.
    pub async fn direct(&self, spec: &ProbeSpec) -> PathResult {
        self.direct_on(spec, None).await
    }

    /// The warm standby at `spec`'s endpoint (a probe spec with the DR cache's own
    /// authentication), on the standby slot of `kept`: resolve, connect, TLS, `AUTH`,
    /// `PING`/`SET`/`GET`, as the direct path does, reported as the `standby` path.
    pub async fn standby_kept(&self, spec: &ProbeSpec, kept: &mut Connections) -> PathResult {
        path::run_path(
            &self.resolver,
            spec,
            PathKind::Standby,
            &spec.endpoint,
            spec.port,
            Some(&mut kept.standby),
        )
        .await
    }

    /// [`Prober::direct`] on the direct slot of `kept`.
    pub async fn direct_kept(&self, spec: &ProbeSpec, kept: &mut Connections) -> PathResult {
        self.direct_on(spec, Some(kept)).await
    }

    async fn direct_on(&self, spec: &ProbeSpec, kept: Option<&mut Connections>) -> PathResult {
        path::run_path(
            &self.resolver,
            spec,
            PathKind::Direct,
            &spec.endpoint,
            spec.port,
            kept.map(|k| &mut k.direct),
        )
        .await
    }

    /// A connection to the endpoint of `spec` for commands of the caller's own (the
    /// failback's emptying of the old primary): resolve, connect, TLS and `AUTH` as the direct
    /// path makes them, within the probe timeout; then [`Session::command`].
    pub async fn session(&self, spec: &ProbeSpec) -> Result<Session, ProbeError> {
        let wire = path::open_direct(&self.resolver, spec).await?;
        Ok(Session {
            wire,
            broken: false,
        })
    }

    /// One round for many watches at once. A hung watch never delays the others past its
    /// own timeout.
    pub async fn rounds(&self, specs: &[ProbeSpec]) -> Vec<Observation> {
        futures::future::join_all(specs.iter().map(|s| self.round(s))).await
    }
}
