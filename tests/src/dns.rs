//! The lab's DNS server: the private zone plus the endpoint names.
//!
//! In AWS two different DNS systems answer the agent. The Route 53 **private hosted zone**
//! (here `lab.internal.`) holds the record applications use, a CNAME to the active cache's
//! endpoint; the VPC resolver serves it. The **ElastiCache endpoint names**
//! (`*.cache.amazonaws.com`) are public AWS DNS. One server on 127.0.0.1 (UDP and TCP on the
//! same port) plays both, from an in-memory table the lab changes at run time.
//!
//! `dns-down` models the private zone (or the resolver path to it) failing while the endpoint
//! names still resolve: queries for names in the zone get **no response at all**, so clients
//! time out (`dns_timeout`, not NXDOMAIN or SERVFAIL), and the agent's *direct* path keeps
//! working. That is the "dns path down, direct path up" case the policy must call `Degraded`
//! rather than a regional failure.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Edns, Header, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, NS, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_server::ServerFuture;
use hickory_server::authority::MessageResponseBuilder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use tracing::debug;

use crate::LabError;

/// TTL of the endpoint names' A records, as ElastiCache serves them.
pub const ENDPOINT_TTL: u32 = 60;
/// Route 53's default SOA TTL for a hosted zone; with `SOA_MINIMUM` it sets the negative TTL.
const SOA_TTL: u32 = 900;
/// Route 53's default SOA minimum.
const SOA_MINIMUM: u32 = 86_400;
/// The suffix under which the lab owns every name: unknown endpoints are NXDOMAIN.
const ENDPOINT_SUFFIX: &str = "cache.amazonaws.com.";
/// Route 53's default TTL for a hosted zone's NS records.
const NS_TTL: u32 = 172_800;
/// The name server and hostmaster the zone's SOA names (never resolved).
const NAME_SERVER: &str = "ns.lab.invalid.";
const HOSTMASTER: &str = "hostmaster.lab.invalid.";
/// A TCP client that sends nothing for this long is dropped.
const TCP_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How many ports to try when the TCP side of a UDP port is taken.
const BIND_ATTEMPTS: usize = 16;

/// One record set of the private zone, the way Route 53 holds it: the values as they were
/// written (what `ListResourceRecordSets` returns, TXT quotes included) and the same values as
/// DNS data (what the server answers); for a failover record, its role and health check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RrSet {
    pub(crate) ttl: u32,
    pub(crate) values: Vec<String>,
    pub(crate) rdata: Vec<RData>,
    /// `PRIMARY` or `SECONDARY`, for a failover record set (its key has a set identifier).
    pub(crate) failover: Option<Failover>,
    /// The Route 53 health check whose status decides whether the record is answered.
    pub(crate) health_check: Option<String>,
}

impl RrSet {
    /// A simple record set: no routing policy, no health check.
    pub(crate) fn simple(ttl: u32, values: Vec<String>, rdata: Vec<RData>) -> Self {
        Self {
            ttl,
            values,
            rdata,
            failover: None,
            health_check: None,
        }
    }
}

/// A failover record's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failover {
    /// Answered while its health check is healthy (or it has none).
    Primary,
    /// Answered while the primary is unhealthy.
    Secondary,
}

impl Failover {
    /// The API's spelling.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Primary => "PRIMARY",
            Self::Secondary => "SECONDARY",
        }
    }
}

/// A record set's key: owner name (lowercase, fully qualified), type, and set identifier
/// (`None` for a simple record set).
pub(crate) type RrKey = (Name, RecordType, Option<String>);

/// The private zone's record sets by key.
pub(crate) type RrSets = BTreeMap<RrKey, RrSet>;

/// Whether a Route 53 health check is healthy now: what the DNS server asks to choose
/// between a failover pair's records (the health checks live in `crate::aws`).
pub(crate) trait HealthStatus: Send + Sync + 'static {
    /// The check's status; a check that does not exist counts as healthy.
    fn healthy(&self, id: &str) -> bool;
}

/// Every check healthy: a zone without health checks (unit tests).
#[cfg(test)]
pub(crate) struct AllHealthy;

#[cfg(test)]
impl HealthStatus for AllHealthy {
    fn healthy(&self, _id: &str) -> bool {
        true
    }
}

/// The names the lab serves; changed at run time by faults and the Route 53 API.
#[derive(Debug, Clone)]
struct Table {
    zone: Name,
    record: Name,
    record_ttl: u32,
    /// The private zone's data: its SOA and NS, the record's CNAME once the lab points it
    /// somewhere, and whatever the Route 53 API writes (the executor's TXT lease). The Route 53
    /// emulation reads and changes this same map, so DNS answers follow a change at once.
    rrsets: RrSets,
    /// Endpoint name (lowercase, fully qualified) → the cache's loopback IP.
    endpoints: BTreeMap<Name, Ipv4Addr>,
    /// `dns-down`: the private zone does not answer.
    zone_down: bool,
}

/// The lab's DNS data, shared by the server and the lab.
pub(crate) struct Zone {
    table: RwLock<Table>,
    /// The health checks failover records name.
    health: Arc<dyn HealthStatus>,
}

/// What the server does with one query.
#[derive(Debug, PartialEq)]
pub(crate) enum Reply {
    /// Say nothing: the client times out.
    Silent,
    Answer {
        code: ResponseCode,
        authoritative: bool,
        answers: Vec<Record>,
        authority: Vec<Record>,
    },
}

/// Parses a name and makes it fully qualified and lowercase.
pub(crate) fn fqdn(name: &str) -> Result<Name, LabError> {
    let mut parsed = Name::from_ascii(name).map_err(|e| LabError::InvalidOption {
        option: "DNS name",
        reason: format!("{name:?}: {e}"),
    })?;
    parsed.set_fqdn(true);
    Ok(parsed.to_lowercase())
}

impl Zone {
    pub(crate) fn new(
        zone: Name,
        record: Name,
        record_ttl: u32,
        health: Arc<dyn HealthStatus>,
    ) -> Self {
        let name = |text: &str| Name::from_ascii(text).unwrap_or_else(|_| Name::root());
        let soa = SOA::new(
            name(NAME_SERVER),
            name(HOSTMASTER),
            1,
            7200,
            900,
            1_209_600,
            SOA_MINIMUM,
        );
        let mut rrsets = RrSets::new();
        // Route 53 gives every hosted zone these two at its apex.
        rrsets.insert(
            (zone.clone(), RecordType::SOA, None),
            RrSet::simple(
                SOA_TTL,
                vec![format!(
                    "{} {} {} {} {} {} {}",
                    soa.mname(),
                    soa.rname(),
                    soa.serial(),
                    soa.refresh(),
                    soa.retry(),
                    soa.expire(),
                    soa.minimum()
                )],
                vec![RData::SOA(soa)],
            ),
        );
        rrsets.insert(
            (zone.clone(), RecordType::NS, None),
            RrSet::simple(
                NS_TTL,
                vec![NAME_SERVER.to_string()],
                vec![RData::NS(NS(name(NAME_SERVER)))],
            ),
        );
        Self {
            table: RwLock::new(Table {
                zone,
                record,
                record_ttl,
                rrsets,
                endpoints: BTreeMap::new(),
                zone_down: false,
            }),
            health,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Table> {
        // A panic while holding the lock cannot leave the table half-written (every change is
        // a single assignment), so a poisoned lock is still safe to use.
        self.table.write().unwrap_or_else(|e| e.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn set_endpoint(&self, endpoint: &Name, ip: Ipv4Addr) {
        self.write().endpoints.insert(endpoint.to_lowercase(), ip);
    }

    pub(crate) fn remove_endpoint(&self, endpoint: &Name) {
        self.write().endpoints.remove(&endpoint.to_lowercase());
    }

    /// Sets the record's CNAME (at the record's configured TTL), as a hand-made change would.
    pub(crate) fn point_record(&self, target: &Name) {
        let mut table = self.write();
        let target = target.to_lowercase();
        let set = RrSet::simple(
            table.record_ttl,
            vec![target.to_string()],
            vec![RData::CNAME(CNAME(target))],
        );
        let key = (table.record.clone(), RecordType::CNAME, None);
        table.rrsets.insert(key, set);
    }

    /// The zone's apex (fully qualified, lowercase).
    pub(crate) fn apex(&self) -> Name {
        self.read().zone.clone()
    }

    /// Reads the zone's record sets.
    pub(crate) fn rrsets(&self) -> RrSets {
        self.read().rrsets.clone()
    }

    /// Changes the zone's record sets under the write lock, so that a change batch is applied
    /// whole or not at all and no query sees half of it.
    pub(crate) fn update_rrsets<R>(&self, change: impl FnOnce(&mut RrSets) -> R) -> R {
        change(&mut self.write().rrsets)
    }

    pub(crate) fn set_zone_down(&self, down: bool) {
        self.write().zone_down = down;
    }

    fn reply(&self, name: &Name, class: DNSClass, qtype: RecordType) -> Reply {
        self.read()
            .reply(&name.to_lowercase(), class, qtype, self.health.as_ref())
    }
}

impl Table {
    /// The SOA for negative answers' authority section.
    fn soa(&self, health: &dyn HealthStatus) -> Vec<Record> {
        self.records(&self.zone, RecordType::SOA, health)
    }

    /// The record set answered for (name, type): the simple one, else the failover pair's
    /// choice ([`Table::failover_choice`]).
    fn chosen(&self, name: &Name, rtype: RecordType, health: &dyn HealthStatus) -> Option<&RrSet> {
        if let Some(set) = self.rrsets.get(&(name.clone(), rtype, None)) {
            return Some(set);
        }
        let group: Vec<&RrSet> = self
            .rrsets
            .iter()
            .filter(|((owner, t, id), _)| owner == name && *t == rtype && id.is_some())
            .map(|(_, set)| set)
            .collect();
        failover_choice(&group, health)
    }

    fn records(&self, name: &Name, rtype: RecordType, health: &dyn HealthStatus) -> Vec<Record> {
        self.chosen(name, rtype, health)
            .map(|set| {
                set.rdata
                    .iter()
                    .map(|rdata| Record::from_rdata(name.clone(), set.ttl, rdata.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn endpoint_a(&self, name: &Name) -> Option<Record> {
        self.endpoints
            .get(name)
            .map(|ip| Record::from_rdata(name.clone(), ENDPOINT_TTL, RData::A(A(*ip))))
    }

    fn reply(
        &self,
        name: &Name,
        class: DNSClass,
        qtype: RecordType,
        health: &dyn HealthStatus,
    ) -> Reply {
        let answer = |code, answers, authority| Reply::Answer {
            code,
            authoritative: true,
            answers,
            authority,
        };
        if class != DNSClass::IN {
            return Reply::Answer {
                code: ResponseCode::Refused,
                authoritative: false,
                answers: vec![],
                authority: vec![],
            };
        }

        if self.zone.zone_of(name) {
            if self.zone_down {
                return Reply::Silent;
            }
            let cname = self.records(name, RecordType::CNAME, health);
            if !cname.is_empty() && qtype != RecordType::CNAME {
                let mut answers = cname;
                // The target's data rides along, as the VPC resolver returns the whole chain.
                if matches!(qtype, RecordType::A | RecordType::ANY) {
                    let targets: Vec<Name> = answers
                        .iter()
                        .filter_map(|r| match r.data() {
                            RData::CNAME(target) => Some(target.0.to_lowercase()),
                            _ => None,
                        })
                        .collect();
                    answers.extend(targets.iter().filter_map(|t| self.endpoint_a(t)));
                }
                return answer(ResponseCode::NoError, answers, vec![]);
            }
            let answers: Vec<Record> = if qtype == RecordType::ANY {
                let types: std::collections::BTreeSet<RecordType> = self
                    .rrsets
                    .keys()
                    .filter(|(owner, ..)| owner == name)
                    .map(|(_, rtype, _)| *rtype)
                    .collect();
                types
                    .into_iter()
                    .flat_map(|rtype| self.records(name, rtype, health))
                    .collect()
            } else {
                self.records(name, qtype, health)
            };
            if !answers.is_empty() {
                return answer(ResponseCode::NoError, answers, vec![]);
            }
            // The name exists (it owns other data, or names below it do): no data of this type.
            if self.rrsets.keys().any(|(owner, ..)| name.zone_of(owner)) {
                return answer(ResponseCode::NoError, vec![], self.soa(health));
            }
            return answer(ResponseCode::NXDomain, vec![], self.soa(health));
        }

        if let Some(a) = self.endpoint_a(name) {
            return match qtype {
                RecordType::A | RecordType::ANY => answer(ResponseCode::NoError, vec![a], vec![]),
                // Endpoints have IPv4 only: AAAA and the rest are NOERROR with no data.
                _ => answer(ResponseCode::NoError, vec![], vec![]),
            };
        }
        let suffix = Name::from_ascii(ENDPOINT_SUFFIX).unwrap_or_else(|_| Name::root());
        if suffix.zone_of(name) {
            // A deleted (or never created) cache's endpoint does not exist.
            return answer(ResponseCode::NXDomain, vec![], vec![]);
        }
        // Not a recursive resolver: anything else is none of the lab's business.
        Reply::Answer {
            code: ResponseCode::Refused,
            authoritative: false,
            answers: vec![],
            authority: vec![],
        }
    }
}

/// The record a failover group answers (tests/FIDELITY.md, rows R13 and R16): PRIMARY while
/// it is healthy (a record without a health check is healthy), else SECONDARY while it is;
/// when none is healthy, Route 53 "considers all the records in the group to be healthy" and
/// chooses by the routing policy, so PRIMARY again (or whichever one there is).
fn failover_choice<'a>(group: &[&'a RrSet], health: &dyn HealthStatus) -> Option<&'a RrSet> {
    let role = |wanted: Failover| group.iter().copied().find(|s| s.failover == Some(wanted));
    let healthy = |set: &&RrSet| {
        set.health_check
            .as_deref()
            .is_none_or(|id| health.healthy(id))
    };
    let (primary, secondary) = (role(Failover::Primary), role(Failover::Secondary));
    primary
        .filter(healthy)
        .or(secondary.filter(healthy))
        .or(primary)
        .or(secondary)
}

/// What one of the lab's DNS servers answers from.
pub(crate) trait Answers: Send + Sync + 'static {
    /// The reply to one question.
    fn reply(&self, name: &Name, class: DNSClass, qtype: RecordType) -> Reply;
}

impl Answers for Zone {
    fn reply(&self, name: &Name, class: DNSClass, qtype: RecordType) -> Reply {
        Zone::reply(self, name, class, qtype)
    }
}

/// The resolver of an agent cut off from the world: it answers the names it was given with
/// their addresses (an `A` record, at the endpoints' TTL) and refuses every other question,
/// as a broken or hijacked resolver does. AWS's API still answers such an agent.
pub(crate) struct CutOff {
    pub(crate) answers: BTreeMap<Name, Ipv4Addr>,
}

impl Answers for CutOff {
    fn reply(&self, name: &Name, _class: DNSClass, qtype: RecordType) -> Reply {
        let name = name.to_lowercase();
        match self.answers.get(&name) {
            Some(ip) if qtype == RecordType::A => Reply::Answer {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: vec![Record::from_rdata(name, ENDPOINT_TTL, RData::A(A(*ip)))],
                authority: vec![],
            },
            Some(_) => Reply::Answer {
                code: ResponseCode::NoError,
                authoritative: false,
                answers: vec![],
                authority: vec![],
            },
            None => Reply::Answer {
                code: ResponseCode::Refused,
                authoritative: false,
                answers: vec![],
                authority: vec![],
            },
        }
    }
}

/// The hickory-server handler over what a server answers from.
pub(crate) struct Handler {
    zone: Arc<dyn Answers>,
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler>(
        &self,
        request: &Request,
        mut response: R,
    ) -> ResponseInfo {
        let mut header = Header::response_from_request(request.header());
        header.set_recursion_available(true);
        let builder = MessageResponseBuilder::from_message_request(request);

        if request.message_type() != MessageType::Query || request.op_code() != OpCode::Query {
            header.set_response_code(ResponseCode::NotImp);
            return send(&mut response, builder.build_no_records(header)).await;
        }
        let Ok(info) = request.request_info() else {
            header.set_response_code(ResponseCode::FormErr);
            return send(&mut response, builder.build_no_records(header)).await;
        };
        let name = Name::from(info.query.name());
        let reply = self
            .zone
            .reply(&name, info.query.query_class(), info.query.query_type());
        debug!(%name, qtype = %info.query.query_type(), ?reply, "dns query");

        match reply {
            // hickory-server sends nothing unless the handler does; the ResponseInfo is only
            // for its bookkeeping.
            Reply::Silent => header.into(),
            Reply::Answer {
                code,
                authoritative,
                answers,
                authority,
            } => {
                header.set_response_code(code);
                header.set_authoritative(authoritative);
                let mut builder = builder;
                if let Some(edns) = request.edns() {
                    let mut ours = Edns::new();
                    ours.set_max_payload(edns.max_payload().max(512));
                    ours.set_version(0);
                    builder.edns(ours);
                }
                let message = builder.build(header, answers.iter(), [], authority.iter(), []);
                send(&mut response, message).await
            }
        }
    }
}

async fn send<'a, R: ResponseHandler>(
    response: &mut R,
    message: hickory_server::authority::MessageResponse<
        '_,
        'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
        impl Iterator<Item = &'a Record> + Send + 'a,
    >,
) -> ResponseInfo {
    let header = *message.header();
    match response.send_response(message).await {
        Ok(info) => info,
        Err(e) => {
            debug!(error = %e, "sending a DNS response failed");
            header.into()
        }
    }
}

/// Binds UDP and TCP on the same 127.0.0.1 port and starts serving `zone`.
pub(crate) async fn serve(
    zone: Arc<dyn Answers>,
) -> Result<(ServerFuture<Handler>, SocketAddr), LabError> {
    let any = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    let mut last: Option<(SocketAddr, std::io::Error)> = None;
    for _ in 0..BIND_ATTEMPTS {
        let udp = tokio::net::UdpSocket::bind(any)
            .await
            .map_err(|source| LabError::Bind {
                what: "the DNS server (UDP)",
                addr: any,
                source,
            })?;
        let addr = udp.local_addr().map_err(|source| LabError::Bind {
            what: "the DNS server (UDP)",
            addr: any,
            source,
        })?;
        match tokio::net::TcpListener::bind(addr).await {
            Ok(tcp) => {
                let mut server = ServerFuture::new(Handler { zone });
                server.register_socket(udp);
                server.register_listener(tcp, TCP_IDLE_TIMEOUT);
                return Ok((server, addr));
            }
            // Someone holds TCP on that port; another UDP port will do.
            Err(e) => last = Some((addr, e)),
        }
    }
    let (addr, source) = last.unwrap_or_else(|| (any, std::io::Error::other("no attempt made")));
    Err(LabError::Bind {
        what: "the DNS server (TCP on the UDP port)",
        addr,
        source,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use hickory_proto::op::{Message, Query};

    fn name(s: &str) -> Name {
        fqdn(s).unwrap()
    }

    fn zone() -> Zone {
        let zone = Zone::new(
            name("lab.internal."),
            name("valkey.lab.internal."),
            30,
            Arc::new(AllHealthy),
        );
        zone.point_record(&name("app-abc123.serverless.use1.cache.amazonaws.com."));
        zone.set_endpoint(
            &name("app-abc123.serverless.use1.cache.amazonaws.com."),
            Ipv4Addr::new(127, 1, 2, 3),
        );
        zone.set_endpoint(
            &name("spare-xyz789.serverless.use2.cache.amazonaws.com."),
            Ipv4Addr::new(127, 4, 5, 6),
        );
        zone
    }

    fn records(reply: &Reply) -> (ResponseCode, Vec<String>) {
        match reply {
            Reply::Silent => panic!("silent"),
            Reply::Answer { code, answers, .. } => (
                *code,
                answers
                    .iter()
                    .map(|r| format!("{} {} {}", r.name(), r.ttl(), r.data()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn the_record_answers_the_whole_chain() {
        let z = zone();
        let reply = z.reply(&name("VALKEY.lab.internal."), DNSClass::IN, RecordType::A);
        assert_eq!(
            records(&reply),
            (
                ResponseCode::NoError,
                vec![
                    "valkey.lab.internal. 30 app-abc123.serverless.use1.cache.amazonaws.com."
                        .to_string(),
                    "app-abc123.serverless.use1.cache.amazonaws.com. 60 127.1.2.3".to_string()
                ]
            )
        );
        let (_, cname_only) = records(&z.reply(
            &name("valkey.lab.internal."),
            DNSClass::IN,
            RecordType::CNAME,
        ));
        assert_eq!(cname_only.len(), 1);
    }

    #[test]
    fn unknown_names_are_nxdomain_and_aaaa_is_nodata() {
        let z = zone();
        let reply = z.reply(&name("nope.lab.internal."), DNSClass::IN, RecordType::A);
        assert!(matches!(
            reply,
            Reply::Answer { code: ResponseCode::NXDomain, authoritative: true, ref authority, .. }
                if authority.len() == 1
        ));
        let reply = z.reply(
            &name("gone-aaaaaa.serverless.use1.cache.amazonaws.com."),
            DNSClass::IN,
            RecordType::A,
        );
        assert_eq!(records(&reply).0, ResponseCode::NXDomain);
        let reply = z.reply(
            &name("app-abc123.serverless.use1.cache.amazonaws.com."),
            DNSClass::IN,
            RecordType::AAAA,
        );
        assert_eq!(records(&reply), (ResponseCode::NoError, vec![]));
        let reply = z.reply(&name("example.com."), DNSClass::IN, RecordType::A);
        assert_eq!(records(&reply).0, ResponseCode::Refused);
    }

    #[test]
    fn zone_down_silences_only_the_zone() {
        let z = zone();
        z.set_zone_down(true);
        assert_eq!(
            z.reply(&name("valkey.lab.internal."), DNSClass::IN, RecordType::A),
            Reply::Silent
        );
        assert_eq!(
            z.reply(&name("nope.lab.internal."), DNSClass::IN, RecordType::A),
            Reply::Silent
        );
        let (code, answers) = records(&z.reply(
            &name("app-abc123.serverless.use1.cache.amazonaws.com."),
            DNSClass::IN,
            RecordType::A,
        ));
        assert_eq!((code, answers.len()), (ResponseCode::NoError, 1));
        z.set_zone_down(false);
        assert_ne!(
            z.reply(&name("valkey.lab.internal."), DNSClass::IN, RecordType::A),
            Reply::Silent
        );
    }

    #[test]
    fn point_record_moves_the_cname() {
        let z = zone();
        z.point_record(&name("spare-xyz789.serverless.use2.cache.amazonaws.com."));
        let (_, answers) =
            records(&z.reply(&name("valkey.lab.internal."), DNSClass::IN, RecordType::A));
        assert_eq!(
            answers,
            vec![
                "valkey.lab.internal. 30 spare-xyz789.serverless.use2.cache.amazonaws.com."
                    .to_string(),
                "spare-xyz789.serverless.use2.cache.amazonaws.com. 60 127.4.5.6".to_string()
            ]
        );
    }

    /// Health checks by id, set by the test.
    struct Checks(std::sync::Mutex<BTreeMap<String, bool>>);

    impl HealthStatus for Checks {
        fn healthy(&self, id: &str) -> bool {
            self.0.lock().unwrap().get(id).copied().unwrap_or(true)
        }
    }

    #[test]
    fn a_failover_pair_answers_primary_while_it_is_healthy() {
        let checks = Arc::new(Checks(std::sync::Mutex::new(BTreeMap::new())));
        let z = Zone::new(
            name("lab.internal."),
            name("valkey.lab.internal."),
            30,
            checks.clone(),
        );
        let record = name("valkey.lab.internal.");
        let target =
            |t: &str| RrSet::simple(30, vec![t.to_string()], vec![RData::CNAME(CNAME(name(t)))]);
        z.update_rrsets(|sets| {
            let mut primary = target("primary.example.");
            primary.failover = Some(Failover::Primary);
            primary.health_check = Some("p".into());
            let mut secondary = target("standby.example.");
            secondary.failover = Some(Failover::Secondary);
            secondary.health_check = Some("s".into());
            sets.insert(
                (record.clone(), RecordType::CNAME, Some("a".into())),
                primary,
            );
            sets.insert(
                (record.clone(), RecordType::CNAME, Some("b".into())),
                secondary,
            );
        });
        let answer = || {
            let (_, answers) = records(&z.reply(&record, DNSClass::IN, RecordType::CNAME));
            answers
        };
        let set = |id: &str, healthy: bool| {
            checks.0.lock().unwrap().insert(id.to_string(), healthy);
        };
        assert_eq!(answer(), vec!["valkey.lab.internal. 30 primary.example."]);
        set("p", false);
        assert_eq!(answer(), vec!["valkey.lab.internal. 30 standby.example."]);
        set("s", false);
        assert_eq!(
            answer(),
            vec!["valkey.lab.internal. 30 primary.example."],
            "none healthy: all count as healthy, and PRIMARY is chosen"
        );
        set("p", true);
        assert_eq!(answer(), vec!["valkey.lab.internal. 30 primary.example."]);
    }

    #[test]
    fn route53_record_sets_are_answered() {
        use hickory_proto::rr::rdata::TXT;
        let z = zone();
        let lock = name("_valkey-dr-lock.valkey.lab.internal.");
        z.update_rrsets(|sets| {
            sets.insert(
                (lock.clone(), RecordType::TXT, None),
                RrSet::simple(
                    10,
                    vec!["\"owner=a\"".to_string()],
                    vec![RData::TXT(TXT::new(vec!["owner=a".to_string()]))],
                ),
            )
        });
        let (code, answers) = records(&z.reply(&lock, DNSClass::IN, RecordType::TXT));
        assert_eq!(code, ResponseCode::NoError);
        assert_eq!(answers.len(), 1);
        assert!(answers[0].starts_with("_valkey-dr-lock.valkey.lab.internal. 10 "));
        // The lease's name has no A record: NODATA, not NXDOMAIN.
        let reply = z.reply(&lock, DNSClass::IN, RecordType::A);
        assert!(matches!(
            reply,
            Reply::Answer { code: ResponseCode::NoError, ref answers, ref authority, .. }
                if answers.is_empty() && authority.len() == 1
        ));
        // The apex has Route 53's SOA and NS.
        let (_, ns) = records(&z.reply(&name("lab.internal."), DNSClass::IN, RecordType::NS));
        assert_eq!(ns, vec!["lab.internal. 172800 ns.lab.invalid.".to_string()]);
        let (_, any) = records(&z.reply(&name("lab.internal."), DNSClass::IN, RecordType::ANY));
        assert_eq!(any.len(), 2);
        // Without its CNAME the record is gone.
        z.update_rrsets(|sets| {
            sets.remove(&(name("valkey.lab.internal."), RecordType::CNAME, None))
        });
        let reply = z.reply(&name("valkey.lab.internal."), DNSClass::IN, RecordType::A);
        // It still has the lease below it: an empty non-terminal answers NODATA.
        assert_eq!(records(&reply), (ResponseCode::NoError, vec![]));
        z.update_rrsets(|sets| sets.remove(&(lock.clone(), RecordType::TXT, None)));
        let reply = z.reply(&name("valkey.lab.internal."), DNSClass::IN, RecordType::A);
        assert_eq!(records(&reply).0, ResponseCode::NXDomain);
    }

    /// Sends one query over UDP; `None` when nothing comes back within `wait`.
    pub(crate) async fn query_udp(
        server: SocketAddr,
        qname: &str,
        qtype: RecordType,
        wait: Duration,
    ) -> Option<Message> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut message = Message::new();
        message
            .set_id(4242)
            .set_recursion_desired(true)
            .add_query(Query::query(name(qname), qtype));
        socket
            .send_to(&message.to_vec().unwrap(), server)
            .await
            .unwrap();
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(wait, socket.recv(&mut buf))
            .await
            .ok()?
            .unwrap();
        Some(Message::from_vec(&buf[..n]).unwrap())
    }

    /// Sends one query over TCP (two-byte length prefix); `None` on silence within `wait`.
    pub(crate) async fn query_tcp(
        server: SocketAddr,
        qname: &str,
        qtype: RecordType,
        wait: Duration,
    ) -> Option<Message> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        let mut message = Message::new();
        message
            .set_id(4243)
            .set_recursion_desired(true)
            .add_query(Query::query(name(qname), qtype));
        let bytes = message.to_vec().unwrap();
        let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&bytes);
        stream.write_all(&framed).await.unwrap();
        tokio::time::timeout(wait, async {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.ok()?;
            let mut body = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut body).await.ok()?;
            Some(Message::from_vec(&body).unwrap())
        })
        .await
        .ok()
        .flatten()
    }

    fn rendered(message: &Message) -> Vec<String> {
        message
            .answers()
            .iter()
            .map(|r| format!("{} {}", r.record_type(), r.data()))
            .collect()
    }

    #[tokio::test]
    async fn serves_udp_and_tcp_on_one_port() {
        let z = Arc::new(zone());
        let (mut server, addr) = serve(z.clone()).await.unwrap();
        assert!(addr.ip().is_loopback());
        let wait = Duration::from_secs(5);

        for message in [
            query_udp(addr, "valkey.lab.internal.", RecordType::A, wait).await,
            query_tcp(addr, "valkey.lab.internal.", RecordType::A, wait).await,
        ] {
            let message = message.expect("an answer");
            assert!(message.authoritative());
            assert_eq!(message.response_code(), ResponseCode::NoError);
            assert_eq!(
                rendered(&message),
                vec![
                    "CNAME app-abc123.serverless.use1.cache.amazonaws.com.",
                    "A 127.1.2.3"
                ]
            );
        }

        let nx = query_udp(addr, "missing.lab.internal.", RecordType::A, wait)
            .await
            .unwrap();
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert!(nx.authoritative());

        z.set_zone_down(true);
        let short = Duration::from_millis(300);
        assert!(
            query_udp(addr, "valkey.lab.internal.", RecordType::A, short)
                .await
                .is_none()
        );
        assert!(
            query_tcp(addr, "valkey.lab.internal.", RecordType::A, short)
                .await
                .is_none()
        );
        let endpoint = query_tcp(
            addr,
            "app-abc123.serverless.use1.cache.amazonaws.com.",
            RecordType::A,
            wait,
        )
        .await
        .expect("endpoints answer while the zone is down");
        assert_eq!(rendered(&endpoint), vec!["A 127.1.2.3"]);

        z.set_zone_down(false);
        z.point_record(&name("spare-xyz789.serverless.use2.cache.amazonaws.com."));
        let moved = query_udp(addr, "valkey.lab.internal.", RecordType::A, wait)
            .await
            .unwrap();
        assert_eq!(
            rendered(&moved),
            vec![
                "CNAME spare-xyz789.serverless.use2.cache.amazonaws.com.",
                "A 127.4.5.6"
            ]
        );
        server.shutdown_gracefully().await.unwrap();
    }

    #[tokio::test]
    async fn hickory_resolver_follows_the_chain() {
        use hickory_proto::xfer::Protocol;
        use hickory_resolver::Resolver;
        use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
        use hickory_resolver::name_server::TokioConnectionProvider;

        let z = Arc::new(zone());
        let (mut server, addr) = serve(z).await.unwrap();
        let mut config = ResolverConfig::new();
        config.add_name_server(NameServerConfig::new(addr, Protocol::Udp));
        let mut opts = ResolverOpts::default();
        opts.timeout = Duration::from_secs(2);
        opts.attempts = 1;
        let resolver = Resolver::builder_with_config(config, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        let lookup = resolver
            .lookup_ip("valkey.lab.internal.")
            .await
            .expect("the record resolves");
        let ips: Vec<_> = lookup.iter().collect();
        assert_eq!(ips, vec![std::net::IpAddr::from([127, 1, 2, 3])]);
        let cname = lookup
            .as_lookup()
            .records()
            .iter()
            .find(|r| r.record_type() == RecordType::CNAME)
            .expect("the CNAME is part of the answer");
        assert_eq!(
            cname.data().to_string(),
            "app-abc123.serverless.use1.cache.amazonaws.com."
        );
        server.shutdown_gracefully().await.unwrap();
    }
}
