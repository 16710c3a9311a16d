//! The executor's real traffic, made with the same probes the agent watches with: checks of
//! a new endpoint and of the record, and a failback's emptying of the old primary.

use std::sync::Arc;
use std::time::Duration;

use valkey_dr_probes::{PathKind, ProbeSpec, Prober, Reply, Session, same_name};

use valkey_dr_probes::ErrorKind;

use super::{FLUSH_COMMAND, Verifier, VerifyFailure};

/// The least a `DBSIZE` or a flush is given to answer: the probe timeout is sized for a
/// `PING`, and a cache just back from an outage may be slower at first.
const MIN_COMMAND_BOUND: Duration = Duration::from_secs(10);

/// What a refusal of the flush means, and the two ways out: emptying the old primary needs a
/// command the probe user's access string may not allow.
const FLUSH_DENIED_FIX: &str = "the probe user may not empty the primary: allow it FLUSHALL \
     in its ElastiCache access string (e.g. +flushall, or +@keyspace), or fail back with \
     --keep-data";

/// Verifies with probe rounds built from the watch's own probe settings (TLS, auth, prefix).
pub struct ProbeVerifier {
    prober: Arc<Prober>,
    spec: ProbeSpec,
    /// How long the record may take to point at the new endpoint: the TTL that resolvers may
    /// still serve the old answer for, plus a margin for propagation.
    dns_bound: Duration,
    /// Pause between resolution attempts.
    poll: Duration,
}

impl ProbeVerifier {
    /// A verifier for the watch that `spec` probes; `ttl` is the record's TTL.
    pub fn new(prober: Arc<Prober>, spec: ProbeSpec, ttl: Duration) -> Self {
        ProbeVerifier {
            prober,
            spec,
            dns_bound: ttl + Duration::from_secs(30),
            poll: Duration::from_millis(500),
        }
    }

    fn spec_for(&self, endpoint: &str, port: u16) -> ProbeSpec {
        let mut spec = self.spec.clone();
        spec.endpoint = endpoint.trim_end_matches('.').to_owned();
        spec.port = port;
        spec.reader_port = None;
        spec
    }
}

impl ProbeVerifier {
    /// A session to `endpoint:port` as the probes connect, for one command.
    async fn session(&self, endpoint: &str, port: u16) -> Result<Session, VerifyFailure> {
        let spec = self.spec_for(endpoint, port);
        self.prober.session(&spec).await.map_err(|e| {
            let denied = e.kind == ErrorKind::Auth;
            VerifyFailure {
                message: if denied {
                    format!("{endpoint}:{port}: {e}: {FLUSH_DENIED_FIX}")
                } else {
                    format!("{endpoint}:{port}: {e}")
                },
                own_side: matches!(e.kind, ErrorKind::Local),
            }
        })
    }

    /// Sends `args` to `endpoint:port` on a fresh session.
    async fn one_command(
        &self,
        endpoint: &str,
        port: u16,
        args: &[&str],
    ) -> Result<Reply, VerifyFailure> {
        let mut session = self.session(endpoint, port).await?;
        let bound = self.spec.timeout.max(MIN_COMMAND_BOUND);
        let reply = session
            .command(args, bound)
            .await
            .map_err(|e| VerifyFailure {
                message: format!("{endpoint}:{port}: {e}"),
                own_side: false,
            })?;
        match reply {
            Reply::Error { code, text } => {
                let denied = matches!(code.as_str(), "NOPERM" | "NOAUTH" | "WRONGPASS");
                Err(VerifyFailure {
                    message: if denied {
                        format!(
                            "{endpoint}:{port}: {} refused: {text}: {FLUSH_DENIED_FIX}",
                            args.join(" ")
                        )
                    } else {
                        format!("{endpoint}:{port}: {} refused: {text}", args.join(" "))
                    },
                    own_side: false,
                })
            }
            reply => Ok(reply),
        }
    }
}

impl ProbeVerifier {
    /// One whole round on the watched cache (the dns and the direct path): `Ok` when both
    /// answer PING/SET/GET.
    pub async fn healthy(&self) -> Result<(), String> {
        let observation = self.prober.round(&self.spec).await;
        let failures: Vec<String> = [PathKind::Dns, PathKind::Direct]
            .into_iter()
            .filter_map(|kind| match observation.path(kind) {
                Some(p) => p.error.as_ref().map(|e| format!("{}: {e}", kind.as_str())),
                None => Some(format!("{}: not probed", kind.as_str())),
            })
            .collect();
        if failures.is_empty() {
            Ok(())
        } else {
            Err(failures.join("; "))
        }
    }
}

impl Verifier for ProbeVerifier {
    async fn direct(&self, endpoint: &str, port: u16) -> Result<(), VerifyFailure> {
        // Only the direct path: the record still points at the failed primary here, and
        // probing it too would cost a whole probe timeout before every switch.
        let path = self.prober.direct(&self.spec_for(endpoint, port)).await;
        match path.error {
            None => Ok(()),
            Some(e) => {
                // AWS says the cache is `available` at this name: a resolver that does not
                // answer it, or a host that cannot open a socket, is this agent's own fault.
                let own_side = matches!(
                    e.kind,
                    ErrorKind::DnsNxdomain
                        | ErrorKind::DnsTimeout
                        | ErrorKind::DnsError
                        | ErrorKind::Local
                );
                let message = if own_side {
                    format!("{endpoint}:{port}: {e} (this agent's own resolver or host)")
                } else {
                    format!("{endpoint}:{port}: {e}")
                };
                Err(VerifyFailure { message, own_side })
            }
        }
    }

    async fn resolves_to(&self, endpoint: &str) -> bool {
        let spec = self.spec_for(endpoint, self.spec.port);
        let observation = self.prober.round(&spec).await;
        observation
            .path(PathKind::Dns)
            .and_then(|p| p.target.as_deref())
            .is_some_and(|t| same_name(t, endpoint))
    }

    async fn count_keys(&self, endpoint: &str, port: u16) -> Result<u64, VerifyFailure> {
        match self.one_command(endpoint, port, &["DBSIZE"]).await? {
            Reply::Integer(n) if n >= 0 => Ok(n as u64),
            other => Err(VerifyFailure {
                message: format!("{endpoint}:{port}: DBSIZE: expected a count, got {other:?}"),
                own_side: false,
            }),
        }
    }

    async fn flush(&self, endpoint: &str, port: u16) -> Result<(), VerifyFailure> {
        match self.one_command(endpoint, port, &FLUSH_COMMAND).await? {
            Reply::Status(ok) if ok == "OK" => Ok(()),
            other => Err(VerifyFailure {
                message: format!(
                    "{endpoint}:{port}: {}: expected OK, got {other:?}",
                    FLUSH_COMMAND.join(" ")
                ),
                own_side: false,
            }),
        }
    }

    async fn through_record(&self, endpoint: &str) -> Result<(), String> {
        let spec = self.spec_for(endpoint, self.spec.port);
        let deadline = tokio::time::Instant::now() + self.dns_bound;
        loop {
            let observation = self.prober.round(&spec).await;
            let last = match observation.path(PathKind::Dns) {
                Some(p) => match (&p.target, &p.error) {
                    (Some(t), None) if same_name(t, endpoint) => return Ok(()),
                    (Some(t), None) => format!("{} still resolves to {t}", spec.record),
                    (_, Some(e)) => e.to_string(),
                    (None, None) => "no answer".to_owned(),
                },
                None => "no dns path".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "after {}: {last}",
                    crate::text::duration(self.dns_bound)
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
