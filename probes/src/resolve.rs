//! Name resolution for the probe paths, with the resolver cache kept across rounds.
//!
//! The dns path must see what an application sees: the record's CNAME chain, and an answer that
//! stays cached until its TTL runs out. So the resolver keeps its cache and intermediate CNAME
//! records, and reports how long the answer it used remains valid.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_resolver::config::{
    NameServerConfig, NameServerConfigGroup, ResolveHosts, ResolverConfig,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::ProtoErrorKind;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, Record};
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::{ResolveError, ResolveErrorKind, TokioResolver};

use crate::error::{ErrorKind, ProbeError, Step, local_failure, server_text};

/// The resolver a [`crate::Prober`] holds for its lifetime, so its cache spans rounds.
pub(crate) type Resolver = TokioResolver;

/// How long one query to one server may take before hickory retries it.
///
/// The path's own deadline bounds the lookup as a whole; this bound decides how soon a lost UDP
/// packet is retried within that deadline (with a 2 s probe timeout, one retry fits), and how long
/// an abandoned query can linger in the background after the path has given up.
const QUERY_TIMEOUT: Duration = Duration::from_secs(1);

/// Retries after the first try. Like `options attempts:` in resolv.conf, but small: a probe that
/// needs more than one retry has already failed by the time it would get an answer.
const QUERY_RETRIES: usize = 1;

/// Where the resolver sends its queries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to query (UDP, with TCP on truncation or error). Empty means the host's
    /// resolver configuration (`/etc/resolv.conf`), as applications on the host would use.
    pub nameservers: Vec<SocketAddr>,
}

/// The resolver could not be set up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The host's resolver configuration could not be read.
    #[error("could not read the system resolver configuration (/etc/resolv.conf)")]
    SystemConfig {
        /// What hickory reported.
        #[source]
        source: ResolveError,
    },
}

/// Builds the resolver for [`ResolverSettings`].
///
/// The cache stays on (the dns path must honour TTLs as applications do), intermediate CNAME
/// records are kept (the dns path reports the CNAME target), and each query is bounded so an
/// abandoned lookup never outlives a probe by much. With explicit name servers, `/etc/hosts` is
/// not consulted: the point of naming servers is to see exactly what they answer.
pub fn build_resolver(settings: &ResolverSettings) -> Result<Resolver, SetupError> {
    build_with_cache(settings, RESOLVER_CACHE_ENTRIES)
}

/// [`build_resolver`] with no cache: every lookup asks the name servers
/// ([`crate::Prober::cname_now`]).
pub(crate) fn build_fresh_resolver(settings: &ResolverSettings) -> Result<Resolver, SetupError> {
    build_with_cache(settings, 0)
}

fn build_with_cache(settings: &ResolverSettings, entries: usize) -> Result<Resolver, SetupError> {
    let mut builder = if settings.nameservers.is_empty() {
        TokioResolver::builder_tokio().map_err(|source| SetupError::SystemConfig { source })?
    } else {
        let mut servers = Vec::with_capacity(settings.nameservers.len() * 2);
        for addr in &settings.nameservers {
            servers.push(NameServerConfig::new(*addr, Protocol::Udp));
            servers.push(NameServerConfig::new(*addr, Protocol::Tcp));
        }
        let config = ResolverConfig::from_parts(None, vec![], NameServerConfigGroup::from(servers));
        let mut builder =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default());
        builder.options_mut().use_hosts_file = ResolveHosts::Never;
        builder
    };
    let options = builder.options_mut();
    options.timeout = QUERY_TIMEOUT;
    options.attempts = QUERY_RETRIES;
    options.preserve_intermediates = true;
    options.try_tcp_on_error = true;
    // hickory's default cache holds 32 answers; every watch needs at least two (the record and
    // the endpoint), so past ~16 watches answers would be evicted and the dns path would stop
    // honouring TTLs. A few thousand small entries cost little and cover any sane agent.
    options.cache_size = entries;
    Ok(builder.build())
}

/// The last CNAME target of `name`'s chain as the name servers answer now (through
/// `resolver`, which keeps no cache), or `None` when `name` has no CNAME.
pub(crate) async fn cname_now(
    resolver: &Resolver,
    name: &str,
) -> Result<Option<String>, ProbeError> {
    let lookup = match resolver
        .lookup(name, hickory_resolver::proto::rr::RecordType::CNAME)
        .await
    {
        Ok(lookup) => lookup,
        Err(err) if err.is_no_records_found() => return Ok(None),
        Err(err) => return Err(classify_resolve_error(name, &err)),
    };
    Ok(cname_target(lookup.query().name(), lookup.records()).map(|t| dns_name_text(&t)))
}

/// Answers the resolver keeps (see `build_resolver`).
const RESOLVER_CACHE_ENTRIES: usize = 4096;

/// The outcome of resolving one name for one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    /// The first address of the answer: the one the path connects to.
    pub(crate) ip: IpAddr,
    /// The last CNAME target of the chain (without trailing dot), or `None` without a CNAME.
    pub(crate) cname_target: Option<String>,
    /// How long the answer stays valid in the cache; `None` for an IP literal (no answer at all).
    pub(crate) ttl: Option<Duration>,
}

/// Resolves `name` to its first address (A first, AAAA if there is no A), through the cache.
///
/// The caller bounds this with the path deadline; errors come back classified for the
/// `resolve` step.
pub(crate) async fn resolve(resolver: &Resolver, name: &str) -> Result<Resolved, ProbeError> {
    // An IP literal needs no lookup (lab setups and tests use them); it has no TTL to report.
    if let Ok(ip) = name.parse::<IpAddr>() {
        return Ok(Resolved {
            ip,
            cname_target: None,
            ttl: None,
        });
    }
    let lookup = resolver
        .lookup_ip(name)
        .await
        .map_err(|err| classify_resolve_error(name, &err))?;
    let Some(ip) = lookup.iter().next() else {
        return Err(ProbeError::new(
            ErrorKind::DnsNxdomain,
            Step::Resolve,
            format!("{name}: the answer has no A or AAAA record"),
        ));
    };
    let answer = lookup.as_lookup();
    let cname_target =
        cname_target(answer.query().name(), answer.records()).map(|target| dns_name_text(&target));
    // `valid_until` is when the cache entry expires: the remaining TTL an application sees.
    let ttl = answer
        .valid_until()
        .saturating_duration_since(std::time::Instant::now());
    Ok(Resolved {
        ip,
        cname_target,
        ttl: Some(ttl),
    })
}

/// Follows the CNAME chain from `query` through `records` and returns its last target, or
/// `None` when `query` has no CNAME. Names compare case-insensitively, as DNS does.
pub(crate) fn cname_target(query: &Name, records: &[Record]) -> Option<Name> {
    let mut current: Option<&Name> = None;
    // A chain can hold each record at most once; the bound stops a CNAME loop.
    for _ in 0..records.len() {
        let from = current.unwrap_or(query);
        let next = records.iter().find_map(|record| match record.data() {
            RData::CNAME(cname) if record.name() == from => Some(&cname.0),
            _ => None,
        });
        match next {
            Some(target) => current = Some(target),
            None => break,
        }
    }
    current.cloned()
}

/// A DNS name as text, without the trailing dot (the form used in reports and for TLS names).
pub(crate) fn dns_name_text(name: &Name) -> String {
    let text = name.to_ascii();
    text.strip_suffix('.').unwrap_or(&text).to_owned()
}

/// Maps a resolver failure to a probe error for the `resolve` step.
///
/// An answer without records is a missing name to the probe whether the server said NXDOMAIN
/// or NODATA: either way there is nothing to connect to. Other response codes (SERVFAIL,
/// REFUSED) mean the resolver failed, not that the name is gone. A query that could not even
/// be sent because the agent's host had no socket to send it from is `local`.
pub(crate) fn classify_resolve_error(name: &str, err: &ResolveError) -> ProbeError {
    // hickory's own text for these embeds a debug dump of the last query tried (often the
    // AAAA fallback), which reads as if the probe asked the wrong question.
    let (kind, message) = match err.kind() {
        ResolveErrorKind::Proto(proto) => match proto.kind() {
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NXDomain,
                ..
            } => (
                ErrorKind::DnsNxdomain,
                format!("{name}: no such name (NXDOMAIN)"),
            ),
            ProtoErrorKind::NoRecordsFound {
                response_code: ResponseCode::NoError,
                ..
            } => (
                ErrorKind::DnsNxdomain,
                format!("{name}: no A or AAAA record (NODATA)"),
            ),
            ProtoErrorKind::NoRecordsFound { response_code, .. } => (
                ErrorKind::DnsError,
                format!("{name}: the resolver answered {response_code}"),
            ),
            ProtoErrorKind::Timeout => (
                ErrorKind::DnsTimeout,
                format!("{name}: the resolver did not answer"),
            ),
            ProtoErrorKind::Io(io) => match local_failure(io) {
                Some(local) => (ErrorKind::Local, format!("{name}: {local}")),
                None => (ErrorKind::DnsError, format!("{name}: {}", error_text(err))),
            },
            _ => (ErrorKind::DnsError, format!("{name}: {}", error_text(err))),
        },
        _ => (ErrorKind::DnsError, format!("{name}: {}", error_text(err))),
    };
    ProbeError::new(kind, Step::Resolve, message)
}

/// hickory's text for an error, which can quote what a name server sent.
fn error_text(err: &ResolveError) -> String {
    server_text(err.to_string().as_bytes())
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use hickory_resolver::proto::ProtoError;
    use hickory_resolver::proto::op::Query;
    use hickory_resolver::proto::rr::RecordType;
    use hickory_resolver::proto::rr::rdata::{A, CNAME};

    use super::*;

    fn name(s: &str) -> Name {
        Name::from_str(s).expect("valid test name")
    }

    fn cname(from: &str, to: &str) -> Record {
        Record::from_rdata(name(from), 30, RData::CNAME(CNAME(name(to))))
    }

    fn a(owner: &str) -> Record {
        Record::from_rdata(name(owner), 30, RData::A(A::new(10, 0, 0, 1)))
    }

    #[test]
    fn cname_target_follows_the_whole_chain() {
        let records = [
            cname("cache.app.internal.", "alias.app.internal."),
            cname(
                "alias.app.internal.",
                "app-sessions-abc.serverless.use1.cache.amazonaws.com.",
            ),
            a("app-sessions-abc.serverless.use1.cache.amazonaws.com."),
        ];
        let target =
            cname_target(&name("cache.app.internal."), &records).map(|n| dns_name_text(&n));
        assert_eq!(
            target.as_deref(),
            Some("app-sessions-abc.serverless.use1.cache.amazonaws.com")
        );
    }

    #[test]
    fn cname_target_ignores_record_order_and_case() {
        let records = [
            a("Target.Example."),
            cname("ALIAS.example.", "target.example."),
            cname("cache.example.", "alias.example."),
        ];
        let target = cname_target(&name("Cache.Example."), &records).map(|n| dns_name_text(&n));
        assert_eq!(target.as_deref(), Some("target.example"));
    }

    #[test]
    fn no_cname_means_no_target() {
        assert_eq!(
            cname_target(&name("direct.example."), &[a("direct.example.")]),
            None
        );
        let unrelated = [cname("other.example.", "x.example."), a("x.example.")];
        assert_eq!(cname_target(&name("direct.example."), &unrelated), None);
    }

    #[test]
    fn a_cname_loop_ends() {
        let records = [
            cname("a.example.", "b.example."),
            cname("b.example.", "a.example."),
        ];
        assert!(cname_target(&name("a.example."), &records).is_some());
    }

    fn no_records(code: ResponseCode) -> ResolveError {
        let proto = ProtoError::from(ProtoErrorKind::NoRecordsFound {
            query: Box::new(Query::query(name("cache.example."), RecordType::A)),
            soa: None,
            ns: None,
            negative_ttl: None,
            response_code: code,
            trusted: true,
            authorities: None,
        });
        ResolveError::from(proto)
    }

    #[test]
    fn resolver_errors_are_classified() {
        let kind = |err: ResolveError| classify_resolve_error("cache.example.", &err).kind;
        assert_eq!(
            kind(no_records(ResponseCode::NXDomain)),
            ErrorKind::DnsNxdomain
        );
        assert_eq!(
            kind(no_records(ResponseCode::NoError)),
            ErrorKind::DnsNxdomain
        );
        assert_eq!(
            kind(no_records(ResponseCode::ServFail)),
            ErrorKind::DnsError
        );
        assert_eq!(kind(no_records(ResponseCode::Refused)), ErrorKind::DnsError);
        assert_eq!(
            kind(ResolveError::from(ProtoError::from(
                ProtoErrorKind::Timeout
            ))),
            ErrorKind::DnsTimeout
        );
        assert_eq!(
            kind(ResolveError::from(ProtoError::from(
                ProtoErrorKind::NoConnections
            ))),
            ErrorKind::DnsError
        );
        let io = |errno| {
            ResolveError::from(ProtoError::from(ProtoErrorKind::from(
                std::io::Error::from_raw_os_error(errno),
            )))
        };
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::EADDRNOTAVAIL,
        ] {
            assert_eq!(kind(io(errno)), ErrorKind::Local, "errno {errno}");
        }
        let emfile = classify_resolve_error("cache.example.", &io(libc::EMFILE));
        assert!(
            emfile.message.contains("EMFILE") && emfile.message.contains("LimitNOFILE"),
            "{}",
            emfile.message
        );
        assert_eq!(kind(io(libc::ECONNREFUSED)), ErrorKind::DnsError);
        let err = classify_resolve_error("cache.example.", &no_records(ResponseCode::NXDomain));
        assert_eq!(err.step, Step::Resolve);
        assert!(
            err.message.starts_with("cache.example.: "),
            "{}",
            err.message
        );
    }

    #[tokio::test]
    async fn ip_literals_skip_the_resolver() {
        let resolver = build_resolver(&ResolverSettings {
            // Never queried: an IP literal resolves to itself.
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
        })
        .expect("explicit name servers need no system config");
        let resolved = resolve(&resolver, "127.0.0.1").await.expect("literal");
        assert_eq!(resolved.ip, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(resolved.cname_target, None);
        assert_eq!(resolved.ttl, None);
    }
}
