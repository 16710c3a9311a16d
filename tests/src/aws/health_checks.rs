//! Route 53's health checks (REST-XML, under `/2013-04-01/healthcheck`): `CreateHealthCheck`,
//! `GetHealthCheck`, `ListHealthChecks`, `DeleteHealthCheck` and `GetHealthCheckStatus`, of
//! the two types a private zone's failover can use (tests/FIDELITY.md, rows R11–R16):
//!
//! - `CLOUDWATCH_METRIC`: follows its alarm (`AlarmIdentifier` {Region, Name}) in
//!   `tests/src/aws/cloudwatch.rs`: `OK` healthy, `ALARM` unhealthy, and
//!   `InsufficientDataHealthStatus` (`Healthy`, `Unhealthy`, `LastKnownStatus`) when the
//!   alarm is `INSUFFICIENT_DATA`, absent, or CloudWatch in its region cannot be read. It
//!   reads the alarm as it was [`super::AwsOptions::health_check_delay`] ago: how fast an
//!   alarm's change reaches Route 53 is not documented, so it is the lab's knob.
//! - `CALCULATED`: healthy while at least `HealthThreshold` of its `ChildHealthChecks` are,
//!   at once.
//!
//! `Inverted` flips either; `Disabled` makes a check healthy. The status is Route 53's data
//! plane: it is computed whenever the DNS server ([`crate::dns`], through [`HealthStatus`])
//! or `GetHealthCheckStatus` asks, from the health checks' own state, so it keeps following
//! the alarms while Route 53's API is down. The API's calls go through the control plane's
//! gate like every other Route 53 call.
//!
//! Where the lab departs from Route 53: the other types (`HTTP`, `TCP`, …, `RECOVERY_CONTROL`)
//! and `UpdateHealthCheck` are not emulated (refused, or a 404 from the lab);
//! `CloudWatchAlarmConfiguration` is not echoed; a deleted check's children and records read
//! it as healthy (no source says what Route 53 does then).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use axum::extract::{Path, RawQuery, State};
use axum::http::header::LOCATION;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::Response;
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use super::calls::HttpRequest;
use super::cloudwatch::{AlarmReading, AlarmState, CloudWatch};
use super::xml::Xml;
use super::{ApiError, AwsService, lock, sigv4, timestamp};
use crate::Shared;
use crate::dns::HealthStatus;

const NAMESPACE: &str = "https://route53.amazonaws.com/doc/2013-04-01/";
/// A calculated check has at most this many children, and `HealthThreshold` at most this.
pub(crate) const MAX_CHILDREN: usize = 256;
/// Route 53's default quota of health checks per account.
const MAX_HEALTH_CHECKS: usize = 200;
/// `CallerReference`: 1–64 characters.
const MAX_CALLER_REFERENCE: usize = 64;
/// An alarm's name in `AlarmIdentifier`: 1–256 characters.
const MAX_ALARM_NAME: usize = 256;
/// `ListHealthChecks` pages by 100 unless `maxitems` says otherwise, at most 1000.
const DEFAULT_MAX_ITEMS: usize = 100;
const MAX_MAX_ITEMS: usize = 1000;
/// How deep calculated checks may nest before the lab stops following them.
const MAX_NESTING: usize = 8;

/// `InsufficientDataHealthStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Insufficient {
    Healthy,
    Unhealthy,
    LastKnownStatus,
}

impl Insufficient {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Healthy" => Self::Healthy,
            "Unhealthy" => Self::Unhealthy,
            "LastKnownStatus" => Self::LastKnownStatus,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "Healthy",
            Self::Unhealthy => "Unhealthy",
            Self::LastKnownStatus => "LastKnownStatus",
        }
    }
}

/// What a health check watches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    /// `CLOUDWATCH_METRIC`.
    Alarm {
        region: String,
        name: String,
        insufficient: Insufficient,
    },
    /// `CALCULATED`.
    Calculated {
        children: Vec<String>,
        threshold: u32,
    },
}

/// A health check's configuration: what `CallerReference` idempotency compares.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Config {
    kind: Kind,
    inverted: bool,
    disabled: bool,
}

#[derive(Debug, Clone)]
struct HealthCheck {
    id: String,
    caller_reference: String,
    config: Config,
    /// Before `created` + the delay, an alarm check has not read its alarm yet.
    created: Instant,
}

#[derive(Debug, Default)]
struct Registry {
    checks: BTreeMap<String, HealthCheck>,
    /// Every `CallerReference` used, with its check's id, deleted ones included: Route 53
    /// refuses a reference of a deleted check.
    references: BTreeMap<String, String>,
    next: u64,
}

/// The account's health checks, shared by the Route 53 API and the DNS server.
pub(crate) struct HealthChecks {
    cloudwatch: Arc<CloudWatch>,
    /// How long ago an alarm check reads its alarm.
    delay: std::time::Duration,
    state: Mutex<Registry>,
}

impl HealthChecks {
    pub(crate) fn new(cloudwatch: Arc<CloudWatch>, delay: std::time::Duration) -> Self {
        Self {
            cloudwatch,
            delay,
            state: Mutex::new(Registry::default()),
        }
    }

    /// Whether a check with this id exists.
    pub(crate) fn exists(&self, id: &str) -> bool {
        lock(&self.state).checks.contains_key(id)
    }

    /// The check's status at `now`; `None` when there is no such check.
    pub(crate) fn healthy_at(&self, id: &str, now: Instant) -> Option<bool> {
        let checks = lock(&self.state).checks.clone();
        self.status(&checks, id, now, 0)
    }

    fn status(
        &self,
        checks: &BTreeMap<String, HealthCheck>,
        id: &str,
        now: Instant,
        depth: usize,
    ) -> Option<bool> {
        let check = checks.get(id)?;
        if check.config.disabled {
            return Some(true);
        }
        let raw = match &check.config.kind {
            Kind::Alarm {
                region,
                name,
                insufficient,
            } => self.alarm_status(check, region, name, *insufficient, now),
            Kind::Calculated {
                children,
                threshold,
            } => {
                let healthy = children
                    .iter()
                    .filter(|child| {
                        depth < MAX_NESTING
                            && self.status(checks, child, now, depth + 1).unwrap_or(true)
                    })
                    .count();
                healthy >= *threshold as usize
            }
        };
        Some(raw != check.config.inverted)
    }

    /// An alarm check's status before `Inverted`: the alarm as it was `delay` ago.
    fn alarm_status(
        &self,
        check: &HealthCheck,
        region: &str,
        name: &str,
        insufficient: Insufficient,
        now: Instant,
    ) -> bool {
        let at = now
            .checked_sub(self.delay)
            .filter(|at| *at >= check.created);
        let reading = match at {
            Some(at) => self.cloudwatch.reading(region, name, at),
            // Not read yet: no data.
            None => AlarmReading::Absent,
        };
        match reading {
            AlarmReading::State(AlarmState::Ok) => true,
            AlarmReading::State(AlarmState::Alarm) => false,
            AlarmReading::State(AlarmState::InsufficientData)
            | AlarmReading::Absent
            | AlarmReading::Unreadable => match insufficient {
                Insufficient::Healthy => true,
                Insufficient::Unhealthy => false,
                // "For new health checks that have no last known status, the default status
                // for the health check is healthy."
                Insufficient::LastKnownStatus => at
                    .and_then(|at| self.cloudwatch.last_known(region, name, at))
                    .is_none_or(|state| state == AlarmState::Ok),
            },
        }
    }
}

impl HealthStatus for HealthChecks {
    fn healthy(&self, id: &str) -> bool {
        // A record whose check was deleted: no source says; the lab counts it healthy.
        self.healthy_at(id, Instant::now()).unwrap_or(true)
    }
}

// --- the API ------------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
struct CreateXml {
    #[serde(rename = "CallerReference")]
    caller_reference: String,
    #[serde(rename = "HealthCheckConfig")]
    config: ConfigXml,
}

#[derive(Debug, Deserialize)]
struct ConfigXml {
    #[serde(rename = "Type")]
    kind: String,
    #[serde(rename = "Inverted")]
    inverted: Option<bool>,
    #[serde(rename = "Disabled")]
    disabled: Option<bool>,
    #[serde(rename = "HealthThreshold")]
    health_threshold: Option<i64>,
    #[serde(rename = "ChildHealthChecks")]
    children: Option<ChildrenXml>,
    #[serde(rename = "AlarmIdentifier")]
    alarm: Option<AlarmXml>,
    #[serde(rename = "InsufficientDataHealthStatus")]
    insufficient: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ChildrenXml {
    #[serde(rename = "ChildHealthCheck", default)]
    child: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct AlarmXml {
    #[serde(rename = "Region")]
    region: String,
    #[serde(rename = "Name")]
    name: String,
}

fn invalid_input(message: impl Into<String>) -> ApiError {
    ApiError::sender("InvalidInput", message)
}

fn no_such(id: &str) -> ApiError {
    ApiError::not_found(
        "NoSuchHealthCheck",
        format!("A health check with id {id} does not exist."),
    )
}

/// The configuration a request asks for, checked against the model and Route 53's rules.
fn config(raw: ConfigXml, existing: &BTreeMap<String, HealthCheck>) -> Result<Config, ApiError> {
    let kind = match raw.kind.as_str() {
        "CLOUDWATCH_METRIC" => {
            let alarm = raw.alarm.ok_or_else(|| {
                invalid_input(
                    "Invalid request: a health check of type CLOUDWATCH_METRIC needs an \
                     AlarmIdentifier",
                )
            })?;
            let length = alarm.name.chars().count();
            if length == 0 || length > MAX_ALARM_NAME {
                return Err(invalid_input(format!(
                    "Invalid request: AlarmIdentifier.Name must have length between 1 and \
                     {MAX_ALARM_NAME}"
                )));
            }
            if alarm.region.is_empty() {
                return Err(invalid_input(
                    "Invalid request: AlarmIdentifier.Region is required",
                ));
            }
            let insufficient = match raw.insufficient.as_deref() {
                None => Insufficient::LastKnownStatus,
                Some(s) => Insufficient::parse(s).ok_or_else(|| {
                    invalid_input(format!(
                        "Invalid request: InsufficientDataHealthStatus {s:?} is not one of \
                         Healthy, Unhealthy, LastKnownStatus"
                    ))
                })?,
            };
            Kind::Alarm {
                region: alarm.region,
                name: alarm.name,
                insufficient,
            }
        }
        "CALCULATED" => {
            let children = raw.children.map(|c| c.child).unwrap_or_default();
            if children.len() > MAX_CHILDREN {
                return Err(invalid_input(format!(
                    "Invalid request: ChildHealthChecks has {} members; at most \
                     {MAX_CHILDREN} are allowed",
                    children.len()
                )));
            }
            let mut seen = std::collections::BTreeSet::new();
            for child in &children {
                if !seen.insert(child) {
                    return Err(invalid_input(format!(
                        "Invalid request: child health check {child} is listed twice"
                    )));
                }
                if !existing.contains_key(child) {
                    return Err(no_such(child));
                }
            }
            let threshold = raw.health_threshold.ok_or_else(|| {
                invalid_input(
                    "Invalid request: a health check of type CALCULATED needs a HealthThreshold",
                )
            })?;
            let threshold = u32::try_from(threshold)
                .ok()
                .filter(|t| *t as usize <= MAX_CHILDREN)
                .ok_or_else(|| {
                    invalid_input(format!(
                        "Invalid request: HealthThreshold {threshold} is not between 0 and \
                         {MAX_CHILDREN}"
                    ))
                })?;
            Kind::Calculated {
                children,
                threshold,
            }
        }
        "HTTP" | "HTTPS" | "HTTP_STR_MATCH" | "HTTPS_STR_MATCH" | "TCP" | "RECOVERY_CONTROL" => {
            return Err(invalid_input(format!(
                "Invalid request: health checks of type {} are not emulated by valkey-dr-lab's \
                 Route 53 (CLOUDWATCH_METRIC and CALCULATED are)",
                raw.kind
            )));
        }
        other => {
            return Err(invalid_input(format!(
                "Invalid request: Type {other:?} is not a health check type"
            )));
        }
    };
    Ok(Config {
        kind,
        inverted: raw.inverted.unwrap_or(false),
        disabled: raw.disabled.unwrap_or(false),
    })
}

fn write_check(x: &mut Xml, check: &HealthCheck) {
    x.element("HealthCheck", |x| {
        x.text("Id", &check.id)
            .text("CallerReference", &check.caller_reference)
            .element("HealthCheckConfig", |x| {
                match &check.config.kind {
                    Kind::Alarm { .. } => x.text("Type", "CLOUDWATCH_METRIC"),
                    Kind::Calculated { .. } => x.text("Type", "CALCULATED"),
                };
                x.text("Inverted", check.config.inverted)
                    .text("Disabled", check.config.disabled);
                match &check.config.kind {
                    Kind::Alarm {
                        region,
                        name,
                        insufficient,
                    } => {
                        x.element("AlarmIdentifier", |x| {
                            x.text("Region", region).text("Name", name);
                        })
                        .text("InsufficientDataHealthStatus", insufficient.as_str());
                    }
                    Kind::Calculated {
                        children,
                        threshold,
                    } => {
                        x.text("HealthThreshold", threshold)
                            .element("ChildHealthChecks", |x| {
                                for child in children {
                                    x.text("ChildHealthCheck", child);
                                }
                            });
                    }
                }
            })
            .text("HealthCheckVersion", 1);
    });
}

/// The call's common part: its log entry's HTTP request.
fn begin<'a>(
    lab: &'a Shared,
    action: &str,
    method: &str,
    path: String,
    query: String,
    body: &[u8],
) -> super::Exchange<'a> {
    let mut call = lab.aws.exchange(AwsService::Route53);
    call.action = action.to_string();
    call.http = HttpRequest {
        method: method.to_string(),
        path,
        query,
        body: String::from_utf8_lossy(body).into_owned(),
        target: None,
    };
    call
}

fn arn(id: &str) -> String {
    format!("arn:aws:route53:::healthcheck/{id}")
}

/// `POST /2013-04-01/healthcheck`: CreateHealthCheck. 201 with the check and its `Location`;
/// the same `CallerReference` and settings again answer the existing check, different
/// settings (or a deleted check's reference) `HealthCheckAlreadyExists` (409).
pub(crate) async fn create(
    State(lab): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = begin(
        &lab,
        "CreateHealthCheck",
        "POST",
        "/2013-04-01/healthcheck".into(),
        String::new(),
        &body,
    );
    let parsed = quick_xml::de::from_str::<CreateXml>(&String::from_utf8_lossy(&body))
        .map_err(|e| invalid_input(format!("Invalid XML ; {e}")));
    call.request = match &parsed {
        Ok(r) => json!({ "caller_reference": r.caller_reference, "type": r.config.kind }),
        Err(_) => json!({ "malformed": true }),
    };
    let mut location = None;
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let request = parsed?;
        let reference = request.caller_reference;
        let length = reference.chars().count();
        if length == 0 || length > MAX_CALLER_REFERENCE {
            return Err(invalid_input(format!(
                "Invalid request: CallerReference must have length between 1 and \
                 {MAX_CALLER_REFERENCE}"
            )));
        }
        let health = &lab.aws.health;
        let mut state = lock(&health.state);
        let config = config(request.config, &state.checks)?;
        if let Some(id) = state.references.get(&reference).cloned() {
            return match state.checks.get(&id) {
                Some(existing) if existing.config == config => {
                    location = Some(id.clone());
                    Ok(
                        Xml::with_declaration().root("CreateHealthCheckResponse", NAMESPACE, |x| {
                            write_check(x, existing)
                        }),
                    )
                }
                _ => Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "HealthCheckAlreadyExists",
                    format!(
                        "A health check with the caller reference {reference} already exists, \
                         or existed and was deleted, with other settings."
                    ),
                )),
            };
        }
        if state.checks.len() >= MAX_HEALTH_CHECKS {
            return Err(ApiError::sender(
                "TooManyHealthChecks",
                format!("The account has reached its limit of {MAX_HEALTH_CHECKS} health checks."),
            ));
        }
        state.next += 1;
        let id = format!("6c1ab0c0-0000-4000-8000-{:012x}", state.next);
        let check = HealthCheck {
            id: id.clone(),
            caller_reference: reference.clone(),
            config,
            created: Instant::now(),
        };
        let xml = Xml::with_declaration().root("CreateHealthCheckResponse", NAMESPACE, |x| {
            write_check(x, &check)
        });
        state.references.insert(reference, id.clone());
        state.checks.insert(id.clone(), check);
        info!(health_check = %id, "CreateHealthCheck");
        location = Some(id);
        Ok(xml)
    })();
    let created = outcome.is_ok();
    let mut response = call.finish(outcome);
    if created && response.status() == StatusCode::OK {
        *response.status_mut() = StatusCode::CREATED;
        if let Some(id) = location
            && let Ok(value) = HeaderValue::from_str(&format!(
                "https://route53.amazonaws.com/2013-04-01/healthcheck/{id}"
            ))
        {
            response.headers_mut().insert(LOCATION, value);
        }
    }
    response
}

/// `GET /2013-04-01/healthcheck/{id}`: GetHealthCheck.
pub(crate) async fn get(
    State(lab): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = begin(
        &lab,
        "GetHealthCheck",
        "GET",
        format!("/2013-04-01/healthcheck/{id}"),
        String::new(),
        &[],
    );
    call.request = json!({ "id": id });
    call.resource = Some(arn(&id));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let state = lock(&lab.aws.health.state);
        let check = state.checks.get(&id).ok_or_else(|| no_such(&id))?;
        Ok(
            Xml::with_declaration().root("GetHealthCheckResponse", NAMESPACE, |x| {
                write_check(x, check)
            }),
        )
    })();
    call.finish(outcome)
}

/// `GET /2013-04-01/healthcheck`: ListHealthChecks, by id from `marker`, `maxitems` a page.
pub(crate) async fn list(
    State(lab): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let mut call = begin(
        &lab,
        "ListHealthChecks",
        "GET",
        "/2013-04-01/healthcheck".into(),
        query.clone(),
        &[],
    );
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |k: &str| params.iter().find(|(p, _)| p == k).map(|(_, v)| v.clone());
    let (marker, max_items) = (param("marker"), param("maxitems"));
    call.request = json!({ "marker": marker, "maxitems": max_items });
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let max = match &max_items {
            None => DEFAULT_MAX_ITEMS,
            Some(text) => match text.parse::<usize>() {
                Ok(n) if n >= 1 => n.min(MAX_MAX_ITEMS),
                _ => return Err(invalid_input(format!("Invalid request: maxitems {text:?}"))),
            },
        };
        let state = lock(&lab.aws.health.state);
        let mut checks: Vec<&HealthCheck> = state
            .checks
            .values()
            .filter(|c| marker.as_deref().is_none_or(|m| c.id.as_str() >= m))
            .collect();
        let next = checks.get(max).map(|c| c.id.clone());
        checks.truncate(max);
        Ok(
            Xml::with_declaration().root("ListHealthChecksResponse", NAMESPACE, |x| {
                x.element("HealthChecks", |x| {
                    for check in &checks {
                        write_check(x, check);
                    }
                })
                .text("Marker", marker.as_deref().unwrap_or(""))
                .text("IsTruncated", next.is_some())
                .text_opt("NextMarker", next.as_deref())
                .text("MaxItems", max);
            }),
        )
    })();
    call.finish(outcome)
}

/// `DELETE /2013-04-01/healthcheck/{id}`: DeleteHealthCheck. Route 53 deletes a check that
/// records or calculated checks still name (it "doesn't prevent you from deleting it").
pub(crate) async fn delete(
    State(lab): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = begin(
        &lab,
        "DeleteHealthCheck",
        "DELETE",
        format!("/2013-04-01/healthcheck/{id}"),
        String::new(),
        &[],
    );
    call.request = json!({ "id": id });
    call.resource = Some(arn(&id));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let mut state = lock(&lab.aws.health.state);
        state.checks.remove(&id).ok_or_else(|| no_such(&id))?;
        info!(health_check = %id, "DeleteHealthCheck");
        Ok(Xml::with_declaration().root("DeleteHealthCheckResponse", NAMESPACE, |_| {}))
    })();
    call.finish(outcome)
}

/// `GET /2013-04-01/healthcheck/{id}/status`: GetHealthCheckStatus, one observation (the
/// lab has one checker). A calculated check has no observations to give: Route 53 refuses it.
pub(crate) async fn status(
    State(lab): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let mut call = begin(
        &lab,
        "GetHealthCheckStatus",
        "GET",
        format!("/2013-04-01/healthcheck/{id}/status"),
        String::new(),
        &[],
    );
    call.request = json!({ "id": id });
    call.resource = Some(arn(&id));
    let outcome = (|| {
        call.region = Some(sigv4::credential_scope(&headers)?.region);
        call.gate()?;
        let health = &lab.aws.health;
        let kind = lock(&health.state)
            .checks
            .get(&id)
            .map(|c| c.config.kind.clone())
            .ok_or_else(|| no_such(&id))?;
        if let Kind::Calculated { .. } = kind {
            return Err(invalid_input(
                "Invalid request: GetHealthCheckStatus cannot get the status of a calculated \
                 health check",
            ));
        }
        let healthy = health
            .healthy_at(&id, Instant::now())
            .ok_or_else(|| no_such(&id))?;
        let report = if healthy {
            "Success: the health check is healthy"
        } else {
            "Failure: the health check is unhealthy"
        };
        Ok(
            Xml::with_declaration().root("GetHealthCheckStatusResponse", NAMESPACE, |x| {
                x.element("HealthCheckObservations", |x| {
                    x.element("HealthCheckObservation", |x| {
                        x.text("Region", crate::ROUTE53_CONTROL_REGION).element(
                            "StatusReport",
                            |x| {
                                x.text("Status", report)
                                    .text("CheckedTime", timestamp(SystemTime::now()));
                            },
                        );
                    });
                });
            }),
        )
    })();
    call.finish(outcome)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn check(id: &str, kind: Kind, inverted: bool) -> HealthCheck {
        HealthCheck {
            id: id.to_string(),
            caller_reference: id.to_string(),
            config: Config {
                kind,
                inverted,
                disabled: false,
            },
            created: Instant::now(),
        }
    }

    fn alarm(name: &str, insufficient: Insufficient) -> Kind {
        Kind::Alarm {
            region: "us-east-1".into(),
            name: name.into(),
            insufficient,
        }
    }

    #[test]
    fn alarm_checks_without_data_take_their_insufficient_status() {
        let cw = Arc::new(CloudWatch::new(Duration::from_secs(1)));
        let checks = HealthChecks::new(cw, Duration::ZERO);
        let mut state = lock(&checks.state);
        for (id, insufficient, inverted) in [
            ("h", Insufficient::Healthy, false),
            ("u", Insufficient::Unhealthy, false),
            ("l", Insufficient::LastKnownStatus, false),
            ("i", Insufficient::Healthy, true),
        ] {
            state.checks.insert(
                id.into(),
                check(id, alarm("absent", insufficient), inverted),
            );
        }
        drop(state);
        let now = Instant::now();
        let status = |id| checks.healthy_at(id, now);
        assert_eq!(status("h"), Some(true));
        assert_eq!(status("u"), Some(false));
        assert_eq!(status("l"), Some(true), "no last known status: healthy");
        assert_eq!(status("i"), Some(false), "inverted");
        assert_eq!(status("nope"), None);
        assert!(checks.healthy("nope"), "a deleted check reads healthy");
    }

    #[test]
    fn calculated_checks_count_healthy_children_against_the_threshold() {
        let cw = Arc::new(CloudWatch::new(Duration::from_secs(1)));
        let checks = HealthChecks::new(cw, Duration::ZERO);
        let mut state = lock(&checks.state);
        for (id, ok) in [("a", true), ("b", true), ("c", false)] {
            let insufficient = if ok {
                Insufficient::Healthy
            } else {
                Insufficient::Unhealthy
            };
            state
                .checks
                .insert(id.into(), check(id, alarm(id, insufficient), false));
        }
        let children: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        for (id, threshold, inverted) in [
            ("t2", 2, false),
            ("t3", 3, false),
            ("t0", 0, false),
            ("t9", 9, false),
            ("n3", 3, true),
        ] {
            state.checks.insert(
                id.into(),
                check(
                    id,
                    Kind::Calculated {
                        children: children.clone(),
                        threshold,
                    },
                    inverted,
                ),
            );
        }
        drop(state);
        let now = Instant::now();
        let status = |id| checks.healthy_at(id, now).unwrap();
        assert!(status("t2"), "2 of 3 healthy, threshold 2");
        assert!(!status("t3"));
        assert!(status("t0"), "threshold 0: always healthy");
        assert!(
            !status("t9"),
            "a threshold above the children: never healthy"
        );
        assert!(status("n3"), "inverted");
    }

    #[test]
    fn configurations_are_checked() {
        let existing = BTreeMap::new();
        let raw = |kind: &str| ConfigXml {
            kind: kind.to_string(),
            inverted: None,
            disabled: None,
            health_threshold: Some(1),
            children: Some(ChildrenXml { child: Vec::new() }),
            alarm: Some(AlarmXml {
                region: "us-east-1".into(),
                name: "a".into(),
            }),
            insufficient: Some("Healthy".into()),
        };
        assert!(config(raw("CLOUDWATCH_METRIC"), &existing).is_ok());
        assert!(config(raw("CALCULATED"), &existing).is_ok());
        assert_eq!(
            config(raw("HTTP"), &existing).unwrap_err().code,
            "InvalidInput"
        );
        let mut too_many = raw("CALCULATED");
        too_many.children = Some(ChildrenXml {
            child: (0..257).map(|i| i.to_string()).collect(),
        });
        assert_eq!(
            config(too_many, &existing).unwrap_err().code,
            "InvalidInput"
        );
        let mut unknown_child = raw("CALCULATED");
        unknown_child.children = Some(ChildrenXml {
            child: vec!["x".into()],
        });
        assert_eq!(
            config(unknown_child, &existing).unwrap_err().code,
            "NoSuchHealthCheck"
        );
        let mut threshold = raw("CALCULATED");
        threshold.health_threshold = Some(257);
        assert_eq!(
            config(threshold, &existing).unwrap_err().code,
            "InvalidInput"
        );
        let mut status = raw("CLOUDWATCH_METRIC");
        status.insufficient = Some("Maybe".into());
        assert_eq!(config(status, &existing).unwrap_err().code, "InvalidInput");
        let mut no_alarm = raw("CLOUDWATCH_METRIC");
        no_alarm.alarm = None;
        assert_eq!(
            config(no_alarm, &existing).unwrap_err().code,
            "InvalidInput"
        );
    }

    #[test]
    fn the_sdk_request_body_parses() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?><CreateHealthCheckRequest xmlns="https://route53.amazonaws.com/doc/2013-04-01/"><CallerReference>r1</CallerReference><HealthCheckConfig><Type>CALCULATED</Type><Inverted>false</Inverted><HealthThreshold>2</HealthThreshold><ChildHealthChecks><ChildHealthCheck>a</ChildHealthCheck><ChildHealthCheck>b</ChildHealthCheck></ChildHealthChecks></HealthCheckConfig></CreateHealthCheckRequest>"#;
        let parsed: CreateXml = quick_xml::de::from_str(body).unwrap();
        assert_eq!(parsed.caller_reference, "r1");
        assert_eq!(parsed.config.children.unwrap().child, vec!["a", "b"]);
        assert_eq!(parsed.config.health_threshold, Some(2));
    }
}
