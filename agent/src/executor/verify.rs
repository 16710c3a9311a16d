//! The executor's real-traffic checks, made with the same probes the agent watches with.

use std::sync::Arc;
use std::time::Duration;

use valkey_dr_probes::{PathKind, ProbeSpec, Prober, same_name};

use valkey_dr_probes::ErrorKind;

use super::{Verifier, VerifyFailure};

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
                    humantime::format_duration(self.dns_bound)
                ));
            }
            tokio::time::sleep(self.poll).await;
        }
    }
}
