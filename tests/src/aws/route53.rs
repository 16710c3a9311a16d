//! Route 53's REST-XML API over the lab's one private hosted zone ([`HOSTED_ZONE_ID`]):
//! `ChangeResourceRecordSets`, `ListResourceRecordSets`, `GetChange` and `GetHostedZone`; any
//! other path under `/2013-04-01/` only to refuse it while the control plane is down.
//!
//! The zone's record sets are the lab DNS server's own data (`dns::Zone`), so an accepted
//! change is answered by the DNS at once, before `GetChange` says `INSYNC` (on AWS too, the
//! authoritative servers may answer a change while it is still `PENDING`; the executor must
//! not rely on either order). A change goes `PENDING` → `INSYNC` after the insync delay.
//!
//! A change batch is applied as AWS documents: every change is checked in order against the
//! zone as the earlier changes of the batch leave it, every failure is reported in one
//! `InvalidChangeBatch` (`[msg, msg]`, AWS's wording), and the zone changes only when none
//! failed. `DELETE` must match the record set's TTL and values exactly; `CREATE` fails on an
//! existing name and type; a CNAME can share its name with nothing and cannot sit at the apex.
//!
//! Failover record sets (`SetIdentifier`, `Failover` PRIMARY|SECONDARY, `HealthCheckId`)
//! are kept beside simple ones, keyed by their set identifier, and checked as Route 53
//! does (tests/FIDELITY.md, row R13): a failover record needs a set identifier, a name and
//! type have at most one PRIMARY and one SECONDARY and never both a simple and a failover
//! record, a health check must exist (`NoSuchHealthCheck`), and `DELETE` must match the
//! identifier, role and health check too. The DNS server answers the pair by the health
//! checks' status (`crate::dns`).
//!
//! Where the lab departs from AWS: record types are limited to A, AAAA, CNAME, NS, SOA and TXT,
//! and alias, weighted, latency, geo, multivalue and CIDR record sets are refused with
//! `InvalidInput` saying so, as is a `HealthCheckId` on a simple record; the agent uses none
//! of them. The messages of the failover rules are the lab's words: no source quotes
//! Route 53's.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, RecordType};
use hyper::body::Bytes;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::json;
use tracing::info;

use super::calls::HttpRequest;
use super::xml::Xml;
use super::{ApiError, AwsService, lock, route53_unavailable, sigv4, timestamp};
use crate::Shared;
use crate::config::HOSTED_ZONE_ID;
use crate::dns::{Failover, RrKey, RrSet, RrSets};

const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// `ListResourceRecordSets` returns at most this many record sets per page.
const MAX_ITEMS: usize = 300;
/// GetChange remembers this many changes (the newest).
const MAX_CHANGES: usize = 10_000;
/// The longest character-string a TXT value may hold.
const MAX_TXT_STRING: usize = 255;
/// `SetIdentifier`: 1–128 characters.
const MAX_SET_IDENTIFIER: usize = 128;

/// The changes the API has accepted, for `GetChange`.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    list: VecDeque<ChangeInfo>,
}

#[derive(Debug, Clone)]
struct ChangeInfo {
    /// `C` and 13 characters, as AWS's are.
    id: String,
    submitted_at: String,
    accepted: Instant,
    comment: Option<String>,
}

impl ChangeInfo {
    fn write(&self, x: &mut Xml, insync: bool) {
        x.element("ChangeInfo", |x| {
            x.text("Id", format!("/change/{}", self.id))
                .text("Status", if insync { "INSYNC" } else { "PENDING" })
                .text("SubmittedAt", &self.submitted_at)
                .text_opt("Comment", self.comment.as_deref());
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Delete,
    Upsert,
}

/// One change of a batch, parsed and checked on its own.
#[derive(Debug, Clone)]
struct Change {
    action: Action,
    name: Name,
    rtype: RecordType,
    /// `None` for a simple record set.
    set_identifier: Option<String>,
    set: RrSet,
}

impl Change {
    fn key(&self) -> RrKey {
        (self.name.clone(), self.rtype, self.set_identifier.clone())
    }

    /// How Route 53 names the record set in its messages.
    fn label(&self) -> String {
        match &self.set_identifier {
            None => format!("[name='{}', type='{}']", self.name, self.rtype),
            Some(id) => format!(
                "[name='{}', type='{}', set-identifier='{id}']",
                self.name, self.rtype
            ),
        }
    }
}

// The request body, as the SDK writes it.
#[derive(Debug, Deserialize)]
struct ChangeRequestXml {
    #[serde(rename = "ChangeBatch")]
    change_batch: ChangeBatchXml,
}

#[derive(Debug, Deserialize)]
struct ChangeBatchXml {
    #[serde(rename = "Comment")]
    comment: Option<String>,
    #[serde(rename = "Changes")]
    changes: ChangesXml,
}

#[derive(Debug, Deserialize)]
struct ChangesXml {
    #[serde(rename = "Change", default)]
    change: Vec<ChangeXml>,
}

#[derive(Debug, Clone, Deserialize)]
struct ChangeXml {
    #[serde(rename = "Action")]
    action: String,
    #[serde(rename = "ResourceRecordSet")]
    set: RrSetXml,
}

#[derive(Debug, Clone, Deserialize)]
struct RrSetXml {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Type")]
    rtype: String,
    #[serde(rename = "TTL")]
    ttl: Option<i64>,
    #[serde(rename = "ResourceRecords")]
    records: Option<RecordsXml>,
    #[serde(rename = "AliasTarget")]
    alias: Option<IgnoredAny>,
    /// Every routing policy (weighted, latency, failover, geo, multivalue) needs one.
    #[serde(rename = "SetIdentifier")]
    set_identifier: Option<String>,
    /// `PRIMARY` or `SECONDARY`: a failover record set.
    #[serde(rename = "Failover")]
    failover: Option<String>,
    #[serde(rename = "HealthCheckId")]
    health_check_id: Option<String>,
    #[serde(rename = "TrafficPolicyInstanceId")]
    traffic_policy: Option<String>,
    /// The other routing policies, refused.
    #[serde(rename = "Weight")]
    weight: Option<IgnoredAny>,
    #[serde(rename = "Region")]
    region: Option<IgnoredAny>,
    #[serde(rename = "GeoLocation")]
    geo_location: Option<IgnoredAny>,
    #[serde(rename = "MultiValueAnswer")]
    multi_value_answer: Option<IgnoredAny>,
    #[serde(rename = "CidrRoutingConfig")]
    cidr_routing: Option<IgnoredAny>,
    #[serde(rename = "GeoProximityLocation")]
    geo_proximity: Option<IgnoredAny>,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordsXml {
    #[serde(rename = "ResourceRecord", default)]
    record: Vec<RecordXml>,
}

#[derive(Debug, Clone, Deserialize)]
struct RecordXml {
    #[serde(rename = "Value")]
    value: String,
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::sender("InvalidInput", message)
}

fn invalid_change_batch(messages: &[String]) -> ApiError {
    ApiError::sender("InvalidChangeBatch", format!("[{}]", messages.join(", ")))
}

/// The zone id from the path: `ZLAB…`, also accepted as `/hostedzone/ZLAB…`.
fn check_zone(raw: &str) -> Result<(), ApiError> {
    let id = raw
        .trim_start_matches('/')
        .strip_prefix("hostedzone/")
        .unwrap_or(raw.trim_start_matches('/'));
    if id == HOSTED_ZONE_ID {
        Ok(())
    } else {
        Err(ApiError::not_found(
            "NoSuchHostedZone",
            format!("No hosted zone found with ID: {id}"),
        ))
    }
}

/// The zone's ARN, for `iam-deny` messages.
fn zone_arn(raw: &str) -> String {
    let id = raw.trim_start_matches('/');
    let id = id.strip_prefix("hostedzone/").unwrap_or(id);
    format!("arn:aws:route53:::hostedzone/{id}")
}

/// A record name as Route 53 keeps it: lowercase, fully qualified. Route 53's escapes are `\`
/// and three octal digits (`\052` is `*`), which is how hickory reads them too.
fn record_name(raw: &str) -> Result<Name, String> {
    let mut name = Name::from_ascii(raw).map_err(|e| e.to_string())?;
    name.set_fqdn(true);
    Ok(name.to_lowercase())
}

/// A name as `ListResourceRecordSets` returns it: every character other than `a-z`, `0-9`,
/// `-` and `_` as `\` and three octal digits, `*` included (`\052`), however it was given.
fn listed_name(name: &Name) -> String {
    let mut out = String::new();
    for label in name.iter() {
        for &b in label {
            if b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_' {
                out.push(char::from(b));
            } else {
                out.push_str(&format!("\\{b:03o}"));
            }
        }
        out.push('.');
    }
    if out.is_empty() {
        out.push('.');
    }
    out
}

fn record_type(raw: &str) -> Result<RecordType, ApiError> {
    let supported = [
        RecordType::A,
        RecordType::AAAA,
        RecordType::CNAME,
        RecordType::NS,
        RecordType::SOA,
        RecordType::TXT,
    ];
    RecordType::from_str(raw)
        .ok()
        .filter(|t| supported.contains(t))
        .ok_or_else(|| {
            invalid_input(format!(
                "Invalid request: record type {raw:?} is not supported by valkey-dr-lab's Route 53 \
                 (A, AAAA, CNAME, NS, SOA and TXT are)"
            ))
        })
}

/// Route 53's complaint about one value.
fn bad_value(problem: &str, value: &str) -> String {
    format!("Invalid Resource Record: FATAL problem: {problem} encountered with '{value}'")
}

/// The character-strings of a TXT value: one or more `"…"`, with `\"`, `\\` and `\ddd`.
fn txt_strings(value: &str) -> Result<Vec<Vec<u8>>, String> {
    let unquoted = || {
        bad_value(
            "InvalidCharacterString (Value should be enclosed in quotation marks)",
            value,
        )
    };
    let bytes = value.trim().as_bytes();
    let mut strings = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if bytes[i] != b'"' {
            return Err(unquoted());
        }
        i += 1;
        let mut current = Vec::new();
        loop {
            match bytes.get(i) {
                None => return Err(unquoted()),
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\\') => {
                    let digits = bytes
                        .get(i + 1..i + 4)
                        .filter(|d| d.iter().all(u8::is_ascii_digit));
                    if let Some(digits) = digits {
                        let code = digits
                            .iter()
                            .fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
                        current.push(u8::try_from(code).map_err(|_| unquoted())?);
                        i += 4;
                    } else {
                        current.push(*bytes.get(i + 1).ok_or_else(unquoted)?);
                        i += 2;
                    }
                }
                Some(&b) => {
                    current.push(b);
                    i += 1;
                }
            }
        }
        if current.len() > MAX_TXT_STRING {
            return Err(bad_value(
                "CharacterStringTooLong (Value is too long)",
                value,
            ));
        }
        strings.push(current);
    }
    if strings.is_empty() {
        return Err(unquoted());
    }
    Ok(strings)
}

/// A value as DNS data, or Route 53's complaint about it.
fn rdata(rtype: RecordType, value: &str) -> Result<RData, String> {
    let name = |text: &str| {
        record_name(text).map_err(|e| bad_value(&format!("DomainNameInvalid ({e})"), value))
    };
    match rtype {
        RecordType::A => value
            .trim()
            .parse::<Ipv4Addr>()
            .map(|ip| RData::A(A(ip)))
            .map_err(|_| {
                bad_value(
                    "ARRDATAIllegalIPv4Address (Value is not a valid IPv4 address)",
                    value,
                )
            }),
        RecordType::AAAA => value
            .trim()
            .parse::<Ipv6Addr>()
            .map(|ip| RData::AAAA(AAAA(ip)))
            .map_err(|_| {
                bad_value(
                    "AAAARRDATAIllegalIPv6Address (Value is not a valid IPv6 address)",
                    value,
                )
            }),
        RecordType::CNAME => Ok(RData::CNAME(CNAME(name(value.trim())?))),
        RecordType::NS => Ok(RData::NS(NS(name(value.trim())?))),
        RecordType::TXT => {
            let strings = txt_strings(value)?;
            Ok(RData::TXT(TXT::from_bytes(
                strings.iter().map(Vec::as_slice).collect(),
            )))
        }
        RecordType::SOA => {
            let fields: Vec<&str> = value.split_whitespace().collect();
            let invalid = || bad_value("SOARRDATAInvalid (Value is not a valid SOA)", value);
            let [mname, rname, serial, refresh, retry, expire, minimum] = fields.as_slice() else {
                return Err(invalid());
            };
            let number = |s: &str| s.parse::<u32>().map_err(|_| invalid());
            let signed = |s: &str| s.parse::<i32>().map_err(|_| invalid());
            Ok(RData::SOA(SOA::new(
                name(mname)?,
                name(rname)?,
                number(serial)?,
                signed(refresh)?,
                signed(retry)?,
                signed(expire)?,
                number(minimum)?,
            )))
        }
        _ => Err(bad_value("UnsupportedType", value)),
    }
}

/// Parses one change: `InvalidInput` for what AWS's request schema rejects, and the values'
/// problems (reported with the batch's other `InvalidChangeBatch` messages).
fn change(raw: &ChangeXml) -> Result<Result<Change, Vec<String>>, ApiError> {
    let action = match raw.action.as_str() {
        "CREATE" => Action::Create,
        "DELETE" => Action::Delete,
        "UPSERT" => Action::Upsert,
        other => {
            return Err(invalid_input(format!(
                "Invalid request: Action {other:?} is not one of CREATE, DELETE, UPSERT"
            )));
        }
    };
    let set = &raw.set;
    let name = record_name(&set.name)
        .map_err(|e| invalid_input(format!("Invalid request: Name {:?}: {e}", set.name)))?;
    let rtype = record_type(&set.rtype)?;
    let other_policy = set.weight.is_some()
        || set.region.is_some()
        || set.geo_location.is_some()
        || set.multi_value_answer.is_some()
        || set.cidr_routing.is_some()
        || set.geo_proximity.is_some();
    if set.alias.is_some() || set.traffic_policy.is_some() || other_policy {
        return Err(invalid_input(format!(
            "Invalid request: {name} {rtype}: alias, traffic-policy and routing-policy record \
             sets other than failover are not supported by valkey-dr-lab's Route 53"
        )));
    }
    let failover = match set.failover.as_deref() {
        None => None,
        Some("PRIMARY") => Some(Failover::Primary),
        Some("SECONDARY") => Some(Failover::Secondary),
        Some(other) => {
            return Err(invalid_input(format!(
                "Invalid request: Failover {other:?} is not one of PRIMARY, SECONDARY"
            )));
        }
    };
    match (&set.set_identifier, failover) {
        (None, Some(_)) => {
            return Err(invalid_input(format!(
                "Invalid request: the failover record set {name} {rtype} has no SetIdentifier"
            )));
        }
        (Some(id), None) => {
            return Err(invalid_input(format!(
                "Invalid request: {name} {rtype} has SetIdentifier {id:?} but no routing \
                 policy"
            )));
        }
        (Some(id), Some(_)) if id.is_empty() || id.chars().count() > MAX_SET_IDENTIFIER => {
            return Err(invalid_input(format!(
                "Invalid request: SetIdentifier must have length between 1 and \
                 {MAX_SET_IDENTIFIER}"
            )));
        }
        _ => {}
    }
    if set.health_check_id.is_some() && failover.is_none() {
        return Err(invalid_input(format!(
            "Invalid request: {name} {rtype}: a HealthCheckId on a simple record set is not \
             supported by valkey-dr-lab's Route 53 (failover record sets take one)"
        )));
    }
    let (Some(ttl), Some(records)) = (set.ttl, &set.records) else {
        return Err(invalid_input(format!(
            "Invalid request: Expected exactly one of [AliasTarget, all of [TTL, and \
             ResourceRecords], or TrafficPolicyInstanceId], but found none in Change with \
             [Action={}, Name={name}, Type={rtype}, SetIdentifier=null]",
            raw.action
        )));
    };
    let ttl = u32::try_from(ttl)
        .ok()
        .filter(|t| *t <= i32::MAX as u32)
        .ok_or_else(|| {
            invalid_input(format!(
                "Invalid request: TTL {ttl} is not between 0 and 2147483647"
            ))
        })?;
    if records.record.is_empty() {
        return Err(invalid_input(format!(
            "Invalid request: {name} {rtype} has no ResourceRecord"
        )));
    }
    let mut problems = Vec::new();
    let mut parsed = Vec::new();
    for record in &records.record {
        match rdata(rtype, &record.value) {
            Ok(data) => parsed.push(data),
            Err(problem) => problems.push(problem),
        }
    }
    if rtype == RecordType::CNAME && records.record.len() > 1 {
        // AWS's words for it (barnybug/cli53#81, schwamster/serverless-certificate-creator#28).
        problems.push(format!(
            "The request contains an invalid set of changes for a resource record set 'CNAME {name}'"
        ));
    }
    if !problems.is_empty() {
        return Ok(Err(problems));
    }
    Ok(Ok(Change {
        action,
        name,
        rtype,
        set_identifier: set.set_identifier.clone(),
        set: RrSet {
            ttl,
            values: records.record.iter().map(|r| r.value.clone()).collect(),
            rdata: parsed,
            failover,
            health_check: set.health_check_id.clone(),
        },
    }))
}

/// The same values, in any order (what an exact `DELETE` compares; names compare in any case).
fn same_values(a: &[RData], b: &[RData]) -> bool {
    let mut rest: Vec<&RData> = b.iter().collect();
    a.len() == b.len()
        && a.iter().all(|x| match rest.iter().position(|y| *y == x) {
            Some(i) => {
                rest.swap_remove(i);
                true
            }
            None => false,
        })
}

/// Applies one change to the batch's working copy of the zone.
fn apply_one(apex: &Name, zone: &mut RrSets, change: &Change) -> Result<(), String> {
    let (name, rtype) = (&change.name, change.rtype);
    if !apex.zone_of(name) {
        return Err(format!(
            "RRSet with DNS name {name} is not permitted in zone {apex}"
        ));
    }
    let key = change.key();
    let label = change.label();
    match change.action {
        Action::Delete => {
            let Some(current) = zone.get(&key) else {
                return Err(format!(
                    "Tried to delete resource record set {label} but it was not found"
                ));
            };
            if current.ttl != change.set.ttl
                || !same_values(&current.rdata, &change.set.rdata)
                || current.failover != change.set.failover
                || current.health_check != change.set.health_check
            {
                return Err(format!(
                    "Tried to delete resource record set {label} but the values provided do not match the current values"
                ));
            }
            if name == apex && rtype == RecordType::SOA {
                return Err("A HostedZone must contain exactly one SOA record.".to_string());
            }
            if name == apex && rtype == RecordType::NS {
                return Err(
                    "A HostedZone must contain at least one NS record for the zone itself."
                        .to_string(),
                );
            }
            zone.remove(&key);
        }
        Action::Create | Action::Upsert => {
            if change.action == Action::Create && zone.contains_key(&key) {
                return Err(format!(
                    "Tried to create resource record set {label} but it already exists"
                ));
            }
            // The other record sets of this name and type.
            let mut siblings = zone
                .iter()
                .filter(|((owner, t, id), _)| owner == name && *t == rtype && *id != key.2);
            match (&change.set_identifier, change.set.failover) {
                (None, _) => {
                    if siblings.next().is_some() {
                        return Err(format!(
                            "Tried to create resource record set {label} but failover record \
                             sets with the same name and type already exist"
                        ));
                    }
                }
                (Some(_), role) => {
                    if zone.contains_key(&(name.clone(), rtype, None)) {
                        return Err(format!(
                            "Tried to create resource record set {label} but a simple record \
                             set with the same name and type already exists"
                        ));
                    }
                    if let Some(role) = role
                        && siblings.any(|(_, set)| set.failover == Some(role))
                    {
                        return Err(format!(
                            "Tried to create resource record set {label} but a {} record set \
                             with the same name and type already exists",
                            role.as_str()
                        ));
                    }
                }
            }
            if rtype == RecordType::CNAME && name == apex {
                return Err(format!(
                    "RRSet of type CNAME with DNS name {name} is not permitted at apex in zone {apex}"
                ));
            }
            let others = |wanted: &dyn Fn(RecordType) -> bool| {
                zone.keys()
                    .any(|(owner, other, _)| owner == name && *other != rtype && wanted(*other))
            };
            if rtype == RecordType::CNAME && others(&|_| true) {
                return Err(format!(
                    "RRSet of type CNAME with DNS name {name} is not permitted as it conflicts with other records with the same DNS name in zone {apex}"
                ));
            }
            if rtype != RecordType::CNAME && others(&|t| t == RecordType::CNAME) {
                // Two spaces before CNAME, as AWS writes it (kubernetes-sigs/external-dns#1517).
                return Err(format!(
                    "RRSet of type {rtype} with DNS name {name} is not permitted because a conflicting RRSet of type  CNAME with the same DNS name already exists in zone {apex}"
                ));
            }
            zone.insert(key, change.set.clone());
        }
    }
    Ok(())
}

/// The batch applied to a copy of the zone, or every change's failure.
fn apply_batch(apex: &Name, zone: &RrSets, changes: &[Change]) -> Result<RrSets, Vec<String>> {
    let mut work = zone.clone();
    let errors: Vec<String> = changes
        .iter()
        .filter_map(|c| apply_one(apex, &mut work, c).err())
        .collect();
    if errors.is_empty() {
        Ok(work)
    } else {
        Err(errors)
    }
}

fn change_summary(zone: &str, body: &Result<ChangeRequestXml, String>) -> serde_json::Value {
    match body {
        Ok(request) => json!({
            "zone": zone,
            "comment": request.change_batch.comment,
            "changes": request.change_batch.changes.change.iter().map(|c| {
                let mut change = json!({
                    "action": c.action,
                    "name": c.set.name,
                    "type": c.set.rtype,
                    "ttl": c.set.ttl,
                    "values": c.set.records.as_ref().map(|r| r.record.iter().map(|v| v.value.clone()).collect::<Vec<_>>()),
                });
                if let Some(id) = &c.set.set_identifier {
                    change["set_identifier"] = json!(id);
                    change["failover"] = json!(c.set.failover);
                    change["health_check_id"] = json!(c.set.health_check_id);
                }
                change
            }).collect::<Vec<_>>(),
        }),
        Err(_) => json!({ "zone": zone, "malformed": true }),
    }
}

/// `POST /2013-04-01/hostedzone/{zone}/rrset`: ChangeResourceRecordSets.
pub(crate) async fn change_rrsets(
    State(lab): State<Arc<Shared>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = lab.aws.exchange(AwsService::Route53);
    call.action = "ChangeResourceRecordSets".to_string();
    let text = String::from_utf8_lossy(&body);
    call.http = HttpRequest {
        method: "POST".to_string(),
        path: format!("/2013-04-01/hostedzone/{zone}/rrset"),
        query: String::new(),
        body: text.to_string(),
        target: None,
    };
    let parsed = quick_xml::de::from_str::<ChangeRequestXml>(&text).map_err(|e| e.to_string());
    call.request = change_summary(&zone, &parsed);
    call.resource = Some(zone_arn(&zone));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        check_zone(&zone)?;
        lab.aws.zone_ready_for_change()?;
        let request = parsed.map_err(|e| invalid_input(format!("Invalid XML ; {e}")))?;
        let batch = request.change_batch;
        if batch.changes.change.is_empty() {
            return Err(invalid_input(
                "Invalid XML ; The content of element 'Changes' is not complete. One of \
                 '{\"https://route53.amazonaws.com/doc/2013-04-01/\":Change}' is expected.",
            ));
        }
        let mut changes = Vec::new();
        let mut problems = Vec::new();
        for raw in &batch.changes.change {
            match change(raw)? {
                Ok(c) => changes.push(c),
                Err(p) => problems.extend(p),
            }
        }
        if !problems.is_empty() {
            return Err(invalid_change_batch(&problems));
        }
        if let Some(id) = changes
            .iter()
            .filter(|c| c.action != Action::Delete)
            .filter_map(|c| c.set.health_check.as_deref())
            .find(|id| !lab.aws.health.exists(id))
        {
            return Err(ApiError::not_found(
                "NoSuchHealthCheck",
                format!("A health check with id {id} does not exist."),
            ));
        }
        let apex = lab.zone.apex();
        lab.zone
            .update_rrsets(|zone| {
                let next = apply_batch(&apex, zone, &changes)?;
                *zone = next;
                Ok(())
            })
            .map_err(|messages: Vec<String>| invalid_change_batch(&messages))?;
        let info = ChangeInfo {
            id: format!("C{:013}", lab.aws.next_id()),
            submitted_at: timestamp(SystemTime::now()),
            accepted: Instant::now(),
            comment: batch.comment,
        };
        {
            let mut log = lock(&lab.aws.route53);
            if log.list.len() == MAX_CHANGES {
                log.list.pop_front();
            }
            log.list.push_back(info.clone());
        }
        lab.aws.change_accepted();
        info!(change = %info.id, changes = changes.len(), "ChangeResourceRecordSets applied");
        Ok(
            Xml::with_declaration().root("ChangeResourceRecordSetsResponse", NAMESPACE, |x| {
                info.write(x, false)
            }),
        )
    })();
    call.finish(outcome)
}

/// The sort key AWS documents: the name with its labels reversed (`com.example.www.`), then
/// the type.
fn sort_key(name: &Name, rtype: RecordType) -> (String, String) {
    let mut labels: Vec<String> = name
        .iter()
        .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
        .collect();
    labels.reverse();
    let mut key = labels.join(".");
    key.push('.');
    (key, rtype.to_string())
}

/// `GET /2013-04-01/hostedzone/{zone}/rrset`: ListResourceRecordSets.
pub(crate) async fn list_rrsets(
    State(lab): State<Arc<Shared>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let mut call = lab.aws.exchange(AwsService::Route53);
    call.action = "ListResourceRecordSets".to_string();
    call.http = HttpRequest {
        method: "GET".to_string(),
        path: format!("/2013-04-01/hostedzone/{zone}/rrset"),
        query: query.clone().unwrap_or_default(),
        body: String::new(),
        target: None,
    };
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let param = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let (start_name, start_type, start_id, max_items) = (
        param("name"),
        param("type"),
        param("identifier"),
        param("maxitems"),
    );
    call.request = json!({
        "zone": zone, "name": start_name, "type": start_type, "identifier": start_id,
        "maxitems": max_items,
    });
    call.resource = Some(zone_arn(&zone));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        check_zone(&zone)?;
        let max_items = match &max_items {
            None => MAX_ITEMS,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_ITEMS),
                _ => return Err(invalid_input(format!("Invalid request: maxitems {text:?}"))),
            },
        };
        let start = match (&start_name, &start_type) {
            (None, Some(_)) => {
                return Err(invalid_input(
                    "Invalid request: a type was given without a name",
                ));
            }
            (None, None) => None,
            (Some(name), rtype) => {
                let name = record_name(name)
                    .map_err(|e| invalid_input(format!("Invalid request: name {name:?}: {e}")))?;
                let rtype = rtype.as_deref().map(record_type).transpose()?;
                let (key, _) = sort_key(&name, RecordType::A);
                Some((
                    key,
                    rtype.map(|t| t.to_string()).unwrap_or_default(),
                    start_id.clone().unwrap_or_default(),
                ))
            }
        };
        type Listed = (
            (String, String, String),
            Name,
            RecordType,
            Option<String>,
            RrSet,
        );
        let mut sets: Vec<Listed> = lab
            .zone
            .rrsets()
            .into_iter()
            .map(|((name, rtype, id), set)| {
                let (k, t) = sort_key(&name, rtype);
                ((k, t, id.clone().unwrap_or_default()), name, rtype, id, set)
            })
            .collect();
        sets.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(start) = &start {
            sets.retain(|(key, ..)| key >= start);
        }
        let next = sets
            .get(max_items)
            .map(|(_, name, rtype, id, _)| (name.clone(), *rtype, id.clone()));
        sets.truncate(max_items);
        Ok(
            Xml::with_declaration().root("ListResourceRecordSetsResponse", NAMESPACE, |x| {
                x.element("ResourceRecordSets", |x| {
                    for (_, name, rtype, id, set) in &sets {
                        x.element("ResourceRecordSet", |x| {
                            x.text("Name", listed_name(name))
                                .text("Type", rtype)
                                .text_opt("SetIdentifier", id.as_deref())
                                .text_opt("Failover", set.failover.map(Failover::as_str))
                                .text("TTL", set.ttl)
                                .element("ResourceRecords", |x| {
                                    for value in &set.values {
                                        x.element("ResourceRecord", |x| {
                                            x.text("Value", value);
                                        });
                                    }
                                })
                                .text_opt("HealthCheckId", set.health_check.as_deref());
                        });
                    }
                })
                .text("IsTruncated", next.is_some());
                if let Some((name, rtype, id)) = &next {
                    x.text("NextRecordName", listed_name(name))
                        .text("NextRecordType", rtype)
                        .text_opt("NextRecordIdentifier", id.as_deref());
                }
                x.text("MaxItems", max_items);
            }),
        )
    })();
    call.finish(outcome)
}

/// `GET /2013-04-01/change/{id}`: GetChange.
pub(crate) async fn get_change(
    State(lab): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = lab.aws.exchange(AwsService::Route53);
    call.action = "GetChange".to_string();
    call.http = HttpRequest {
        method: "GET".to_string(),
        path: format!("/2013-04-01/change/{id}"),
        query: String::new(),
        body: String::new(),
        target: None,
    };
    let id = id
        .trim_start_matches('/')
        .strip_prefix("change/")
        .unwrap_or(id.trim_start_matches('/'))
        .to_string();
    call.request = json!({ "id": id });
    call.resource = Some(format!("arn:aws:route53:::change/{id}"));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let info = lock(&lab.aws.route53)
            .list
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| {
                ApiError::not_found(
                    "NoSuchChange",
                    format!("A change with the specified change ID {id} does not exist."),
                )
            })?;
        let insync = info.accepted.elapsed() >= lab.aws.options.insync_delay;
        Ok(Xml::with_declaration().root("GetChangeResponse", NAMESPACE, |x| info.write(x, insync)))
    })();
    call.finish(outcome)
}

/// Any other request on Route 53's endpoint (`/2013-04-01/…`: an action the lab does not
/// emulate, such as `ListHostedZones`): while the control plane is down it is refused as
/// every other call is; otherwise it is a plain 404 from the lab, which emulates only the
/// actions above. Not logged: the call log holds the emulated actions, which the botocore
/// check reads.
pub(crate) async fn other(State(lab): State<Arc<Shared>>) -> Response {
    if !lab.aws.route53_down() {
        return (
            StatusCode::NOT_FOUND,
            "valkey-dr-lab's Route 53 emulates ChangeResourceRecordSets, ListResourceRecordSets, \
             GetChange, GetHostedZone and the health checks' Create, Get, List, Delete and \
             GetHealthCheckStatus only",
        )
            .into_response();
    }
    let request_id = lab.aws.request_id();
    let error = route53_unavailable();
    (
        error.status,
        [
            (CONTENT_TYPE, AwsService::Route53.content_type().to_string()),
            (
                HeaderName::from_static("x-amzn-requestid"),
                request_id.clone(),
            ),
        ],
        error.body(AwsService::Route53, &request_id),
    )
        .into_response()
}

/// The name servers a public zone's delegation set lists (AWS's are `ns-N.awsdns-NN.tld`);
/// nothing resolves them, the lab's zone is served on its own loopback port.
const PUBLIC_NAME_SERVERS: [&str; 4] = [
    "ns-101.awsdns-12.com",
    "ns-602.awsdns-11.net",
    "ns-1203.awsdns-22.org",
    "ns-1804.awsdns-33.co.uk",
];
/// The VPCs the private zone is associated with: the lab VPC in the primary and DR regions.
const ZONE_VPC_REGIONS: [&str; 2] = [crate::PRIMARY_REGION, crate::config::DR_REGION];

/// `GET /2013-04-01/hostedzone/{zone}`: GetHostedZone. The lab's zone is private and
/// associated with [`ZONE_VPC_REGIONS`]'s lab VPC; `zone-public` makes it a public zone,
/// answered as AWS answers one: a delegation set and no VPCs.
pub(crate) async fn get_hosted_zone(
    State(lab): State<Arc<Shared>>,
    Path(zone): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = lab.aws.exchange(AwsService::Route53);
    call.action = "GetHostedZone".to_string();
    call.http = HttpRequest {
        method: "GET".to_string(),
        path: format!("/2013-04-01/hostedzone/{zone}"),
        query: String::new(),
        body: String::new(),
        target: None,
    };
    call.request = json!({ "zone": zone });
    call.resource = Some(zone_arn(&zone));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        check_zone(&zone)?;
        let public = lab.aws.zone_public();
        let count = lab.zone.rrsets().len();
        Ok(
            Xml::with_declaration().root("GetHostedZoneResponse", NAMESPACE, |x| {
                x.element("HostedZone", |x| {
                    x.text("Id", format!("/hostedzone/{HOSTED_ZONE_ID}"))
                        .text("Name", crate::ZONE)
                        .text("CallerReference", "valkey-dr-lab")
                        .element("Config", |x| {
                            x.text("Comment", "valkey-dr lab zone")
                                .text("PrivateZone", !public);
                        })
                        .text("ResourceRecordSetCount", count);
                });
                if public {
                    x.element("DelegationSet", |x| {
                        x.element("NameServers", |x| {
                            for ns in PUBLIC_NAME_SERVERS {
                                x.text("NameServer", ns);
                            }
                        });
                    });
                } else {
                    x.element("VPCs", |x| {
                        for region in ZONE_VPC_REGIONS
                            .into_iter()
                            .filter(|r| lab.aws.zone_vpc_associated(r))
                        {
                            x.element("VPC", |x| {
                                x.text("VPCRegion", region)
                                    .text("VPCId", crate::config::LAB_VPC_ID);
                            });
                        }
                    });
                }
            }),
        )
    })();
    call.finish(outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::Zone;

    fn name(s: &str) -> Name {
        record_name(s).unwrap()
    }

    fn zone() -> Zone {
        let zone = Zone::new(
            name("lab.internal"),
            name("valkey.lab.internal"),
            30,
            std::sync::Arc::new(crate::dns::AllHealthy),
        );
        zone.point_record(&name("old-abc123.serverless.use1.cache.amazonaws.com"));
        zone
    }

    fn change(action: &str, rname: &str, rtype: &str, ttl: i64, values: &[&str]) -> ChangeXml {
        ChangeXml {
            action: action.to_string(),
            set: RrSetXml {
                name: rname.to_string(),
                rtype: rtype.to_string(),
                ttl: Some(ttl),
                records: Some(RecordsXml {
                    record: values
                        .iter()
                        .map(|v| RecordXml {
                            value: v.to_string(),
                        })
                        .collect(),
                }),
                alias: None,
                set_identifier: None,
                failover: None,
                health_check_id: None,
                traffic_policy: None,
                weight: None,
                region: None,
                geo_location: None,
                multi_value_answer: None,
                cidr_routing: None,
                geo_proximity: None,
            },
        }
    }

    fn batch(zone: &Zone, raw: &[ChangeXml]) -> Result<(), Vec<String>> {
        let changes: Vec<Change> = raw
            .iter()
            .map(|c| super::change(c).unwrap().unwrap())
            .collect();
        let apex = zone.apex();
        zone.update_rrsets(|sets| {
            *sets = apply_batch(&apex, sets, &changes)?;
            Ok(())
        })
    }

    fn cname(zone: &Zone) -> Option<(u32, Vec<String>)> {
        zone.rrsets()
            .get(&(name("valkey.lab.internal"), RecordType::CNAME, None))
            .map(|s| (s.ttl, s.values.clone()))
    }

    #[test]
    fn compare_and_swap_succeeds_and_conflicts_change_nothing() {
        let z = zone();
        let old = "old-abc123.serverless.use1.cache.amazonaws.com.";
        let new = "new-def456.serverless.usw2.cache.amazonaws.com";
        batch(
            &z,
            &[
                change("DELETE", "valkey.lab.internal", "CNAME", 30, &[old]),
                change("CREATE", "valkey.lab.internal.", "CNAME", 45, &[new]),
            ],
        )
        .unwrap();
        assert_eq!(cname(&z), Some((45, vec![new.to_string()])));

        // Someone else's swap: the DELETE no longer matches, so the CREATE after it collides.
        let err = batch(
            &z,
            &[
                change("DELETE", "valkey.lab.internal", "CNAME", 30, &[old]),
                change("CREATE", "valkey.lab.internal", "CNAME", 30, &[old]),
            ],
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but the values provided do not match the current values",
                "Tried to create resource record set [name='valkey.lab.internal.', type='CNAME'] but it already exists",
            ]
        );
        assert_eq!(cname(&z), Some((45, vec![new.to_string()])));

        // A DELETE of the right values at the wrong TTL does not match either; names compare in
        // any case and with or without the final dot.
        assert!(
            batch(
                &z,
                &[change("DELETE", "valkey.lab.internal", "CNAME", 30, &[new])]
            )
            .is_err()
        );
        batch(
            &z,
            &[change(
                "DELETE",
                "VALKEY.lab.internal",
                "CNAME",
                45,
                &["NEW-def456.serverless.usw2.cache.amazonaws.com."],
            )],
        )
        .unwrap();
        assert_eq!(cname(&z), None);
        let err = batch(
            &z,
            &[change("DELETE", "valkey.lab.internal", "CNAME", 45, &[new])],
        )
        .unwrap_err();
        assert_eq!(
            err,
            vec![
                "Tried to delete resource record set [name='valkey.lab.internal.', type='CNAME'] but it was not found"
            ]
        );
    }

    #[test]
    fn cname_rules_zone_limits_and_upsert() {
        let z = zone();
        let lock = "_valkey-dr-lock.valkey.lab.internal";
        batch(
            &z,
            &[change(
                "CREATE",
                lock,
                "TXT",
                30,
                &["\"owner=a\" \"exp=1\""],
            )],
        )
        .unwrap();
        assert_eq!(
            batch(&z, &[change("CREATE", lock, "CNAME", 30, &["x.example."])]).unwrap_err(),
            vec![
                "RRSet of type CNAME with DNS name _valkey-dr-lock.valkey.lab.internal. is not permitted as it conflicts with other records with the same DNS name in zone lab.internal."
            ]
        );
        assert_eq!(
            batch(
                &z,
                &[change(
                    "CREATE",
                    "valkey.lab.internal",
                    "TXT",
                    30,
                    &["\"x\""]
                )]
            )
            .unwrap_err(),
            vec![
                "RRSet of type TXT with DNS name valkey.lab.internal. is not permitted because a conflicting RRSet of type  CNAME with the same DNS name already exists in zone lab.internal."
            ]
        );
        assert_eq!(
            batch(
                &z,
                &[change(
                    "UPSERT",
                    "lab.internal",
                    "CNAME",
                    30,
                    &["x.example."]
                )]
            )
            .unwrap_err(),
            vec![
                "RRSet of type CNAME with DNS name lab.internal. is not permitted at apex in zone lab.internal."
            ]
        );
        assert_eq!(
            batch(
                &z,
                &[change("CREATE", "www.example.com", "A", 30, &["127.0.0.1"])]
            )
            .unwrap_err(),
            vec!["RRSet with DNS name www.example.com. is not permitted in zone lab.internal."]
        );
        batch(&z, &[change("UPSERT", lock, "TXT", 60, &["\"owner=b\""])]).unwrap();
        let set = z.rrsets()[&(name(lock), RecordType::TXT, None)].clone();
        assert_eq!((set.ttl, set.values), (60, vec!["\"owner=b\"".to_string()]));
        let soa = z.rrsets()[&(name("lab.internal"), RecordType::SOA, None)].clone();
        let values: Vec<&str> = soa.values.iter().map(String::as_str).collect();
        assert_eq!(
            batch(&z, &[change("DELETE", "lab.internal", "SOA", 900, &values)]).unwrap_err(),
            vec!["A HostedZone must contain exactly one SOA record."]
        );
    }

    fn failover(action: &str, id: &str, role: &str, check: Option<&str>, value: &str) -> ChangeXml {
        let mut c = change(action, "valkey.lab.internal", "CNAME", 30, &[value]);
        c.set.set_identifier = Some(id.to_string());
        c.set.failover = Some(role.to_string());
        c.set.health_check_id = check.map(str::to_string);
        c
    }

    #[test]
    fn failover_pairs_follow_route53s_rules() {
        let z = zone();
        let old = "old-abc123.serverless.use1.cache.amazonaws.com.";
        let primary = failover("CREATE", "primary", "PRIMARY", Some("hc-1"), old);
        let secondary = failover("CREATE", "standby", "SECONDARY", None, "standby.example.");
        // A failover pair cannot sit beside the simple record of the same name and type.
        let err = batch(&z, &[primary.clone(), secondary.clone()]).unwrap_err();
        assert_eq!(err.len(), 2);
        assert!(
            err[0].contains("set-identifier='primary'] but a simple record set"),
            "{err:?}"
        );
        // Replacing the simple record by the pair in one batch works.
        batch(
            &z,
            &[
                change("DELETE", "valkey.lab.internal", "CNAME", 30, &[old]),
                primary.clone(),
                secondary.clone(),
            ],
        )
        .unwrap();
        let sets = z.rrsets();
        let key = |id: &str| {
            (
                name("valkey.lab.internal"),
                RecordType::CNAME,
                Some(id.to_string()),
            )
        };
        assert_eq!(sets[&key("primary")].failover, Some(Failover::Primary));
        assert_eq!(sets[&key("primary")].health_check.as_deref(), Some("hc-1"));
        // A second PRIMARY, and a simple record beside the pair, are refused.
        let err = batch(
            &z,
            &[failover("CREATE", "other", "PRIMARY", None, "x.example.")],
        )
        .unwrap_err();
        assert!(err[0].contains("a PRIMARY record set"), "{err:?}");
        let err = batch(
            &z,
            &[change(
                "CREATE",
                "valkey.lab.internal",
                "CNAME",
                30,
                &["x.example."],
            )],
        )
        .unwrap_err();
        assert!(
            err[0].contains("failover record sets with the same name"),
            "{err:?}"
        );
        // DELETE must match the health check too.
        let mut wrong = primary.clone();
        wrong.action = "DELETE".into();
        wrong.set.health_check_id = Some("hc-2".into());
        let err = batch(&z, &[wrong]).unwrap_err();
        assert!(err[0].contains("do not match"), "{err:?}");
        // The model's rules: a failover record needs a SetIdentifier, a SetIdentifier a
        // policy, Failover is PRIMARY or SECONDARY.
        let mut no_id = primary.clone();
        no_id.set.set_identifier = None;
        assert_eq!(super::change(&no_id).unwrap_err().code, "InvalidInput");
        let mut no_policy = primary.clone();
        no_policy.set.failover = None;
        assert_eq!(super::change(&no_policy).unwrap_err().code, "InvalidInput");
        let bad_role = failover("CREATE", "x", "TERTIARY", None, "x.example.");
        assert_eq!(super::change(&bad_role).unwrap_err().code, "InvalidInput");
        let mut weighted = primary;
        weighted.set.weight = Some(IgnoredAny);
        assert_eq!(super::change(&weighted).unwrap_err().code, "InvalidInput");
    }

    #[test]
    fn values_are_checked_as_route53_does() {
        assert_eq!(
            txt_strings(r#""a b" "c\"d" "\065""#).unwrap(),
            vec![b"a b".to_vec(), b"c\"d".to_vec(), b"A".to_vec()]
        );
        assert_eq!(
            txt_strings("owner=a").unwrap_err(),
            "Invalid Resource Record: FATAL problem: InvalidCharacterString (Value should be enclosed in quotation marks) encountered with 'owner=a'"
        );
        assert!(txt_strings("\"open").is_err());
        assert!(txt_strings(&format!("\"{}\"", "x".repeat(256))).is_err());
        assert!(rdata(RecordType::A, "300.1.1.1").is_err());
        assert!(rdata(RecordType::CNAME, "a..b").is_err());
        let problems = super::change(&change(
            "CREATE",
            "v.lab.internal",
            "CNAME",
            30,
            &["a.example.", "b.example."],
        ))
        .unwrap()
        .unwrap_err();
        assert_eq!(problems.len(), 1);
        let err =
            super::change(&change("MOVE", "v.lab.internal", "A", 30, &["1.2.3.4"])).unwrap_err();
        assert_eq!(err.code, "InvalidInput");
        assert_eq!(
            super::change(&change("CREATE", "v.lab.internal", "MX", 30, &["10 x."]))
                .unwrap_err()
                .code,
            "InvalidInput"
        );
    }

    #[test]
    fn the_sdk_request_body_parses() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><ChangeResourceRecordSetsRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><ChangeBatch><Comment>failover f-1</Comment><Changes><Change><Action>DELETE</Action><ResourceRecordSet><Name>valkey.lab.internal.</Name><Type>CNAME</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>old.example.</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change><Change><Action>CREATE</Action><ResourceRecordSet><Name>valkey.lab.internal.</Name><Type>CNAME</Type><TTL>30</TTL><ResourceRecords><ResourceRecord><Value>new.example.</Value></ResourceRecord></ResourceRecords></ResourceRecordSet></Change></Changes></ChangeBatch></ChangeResourceRecordSetsRequest>"#;
        let parsed: ChangeRequestXml = quick_xml::de::from_str(body).unwrap();
        assert_eq!(parsed.change_batch.comment.as_deref(), Some("failover f-1"));
        let changes = &parsed.change_batch.changes.change;
        assert_eq!(changes.len(), 2);
        assert_eq!(
            changes[1].set.records.as_ref().unwrap().record[0].value,
            "new.example."
        );
    }

    #[test]
    fn listed_names_escape_in_octal() {
        assert_eq!(
            listed_name(&name("*.w.lab.internal")),
            "\\052.w.lab.internal."
        );
        assert_eq!(
            listed_name(&name("\\052.w.lab.internal.")),
            "\\052.w.lab.internal."
        );
        assert_eq!(
            listed_name(&name("_valkey-dr-lock.Valkey.lab.internal")),
            "_valkey-dr-lock.valkey.lab.internal."
        );
        assert_eq!(
            listed_name(&name("a\\137b.lab.internal")),
            "a_b.lab.internal."
        );
    }

    #[test]
    fn sort_keys_reverse_the_labels() {
        let mut keys = vec![
            sort_key(&name("valkey.lab.internal"), RecordType::CNAME),
            sort_key(&name("lab.internal"), RecordType::SOA),
            sort_key(
                &name("_valkey-dr-lock.valkey.lab.internal"),
                RecordType::TXT,
            ),
            sort_key(&name("lab.internal"), RecordType::NS),
        ];
        keys.sort();
        let names: Vec<String> = keys.into_iter().map(|(k, t)| format!("{k} {t}")).collect();
        assert_eq!(
            names,
            vec![
                "internal.lab. NS",
                "internal.lab. SOA",
                "internal.lab.valkey. CNAME",
                "internal.lab.valkey._valkey-dr-lock. TXT",
            ]
        );
    }
}
