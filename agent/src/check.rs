//! `valkey-dr check`: one probe round, judged the way Nagios-style monitoring expects.
//!
//! The verdict per watch: OK when every path works and the record points where the agent
//! believes it should; WARNING when one path fails while the other works, when the record
//! drifted, or when strict applications would reject the certificate; CRITICAL when both the
//! dns and the direct path fail. UNKNOWN (exit 3) is for when no round could run at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{Value, json};
use valkey_dr_probes::{
    Connections, ErrorKind, Observation, PathKind, PathResult, ProbeSpec, Prober, ResolverSettings,
    TlsServerName,
};

use crate::config::Config;
use crate::failover::active_dr_endpoint;
use crate::spec::{SpecError, dr_spec, probe_specs};

/// A Nagios status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Everything works.
    Ok,
    /// Works, but something needs a look.
    Warning,
    /// The cache cannot be used.
    Critical,
    /// No verdict could be reached.
    Unknown,
}

impl Status {
    /// The Nagios exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// The upper-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// The verdict for one watch.
#[derive(Debug, Clone)]
pub struct WatchReport {
    /// The watch name.
    pub name: String,
    /// The record probed.
    pub record: String,
    /// Its verdict.
    pub status: Status,
    /// The CNAME target when it is not the endpoint believed active.
    pub drift: Option<String>,
    /// Why the verdict is not OK, and other notes for people.
    pub notes: Vec<String>,
    /// The probe timeout, the critical bound of each path's latency in the perfdata.
    pub timeout: Duration,
    /// The raw round.
    pub observation: Observation,
}

/// The verdict for every watch of a round.
#[derive(Debug, Clone)]
pub struct CheckReport {
    /// When the round started.
    pub checked_at: SystemTime,
    /// One per watch, in config order.
    pub watches: Vec<WatchReport>,
}

impl CheckReport {
    /// The worst status of any watch.
    pub fn status(&self) -> Status {
        self.watches
            .iter()
            .map(|w| w.status)
            .max()
            .unwrap_or(Status::Unknown)
    }
}

/// One round over the selected watches, judged.
pub async fn run(config: &Config, only: Option<&str>) -> Result<CheckReport, SpecError> {
    let mut specs = probe_specs(config, only).await?;
    // After a failover the DR cache is the active one: check it, as the agent does, with
    // its own credentials.
    for spec in &mut specs {
        if let Some((host, port)) = active_dr_endpoint(config, &spec.watch)
            && let Ok(w) = config.watch(&spec.watch)
        {
            *spec = ProbeSpec {
                endpoint: host,
                port,
                ..dr_spec(config, w, spec).await
            };
        }
    }
    let prober = Prober::new(&ResolverSettings {
        nameservers: config.dns.nameservers.clone(),
    })
    .map_err(|e| SpecError::Resolver(Box::new(e)))?;
    let standbys = standby_specs(config, &specs).await;
    let checked_at = SystemTime::now();
    let (observations, standby_paths) = tokio::join!(
        prober.rounds(&specs),
        futures::future::join_all(standbys.iter().map(|s| async {
            let spec = s.as_ref()?;
            Some(prober.standby_kept(spec, &mut Connections::default()).await)
        }))
    );
    let watches = specs
        .iter()
        .zip(observations)
        .zip(standby_paths)
        .map(|((spec, mut obs), standby)| {
            obs.paths.extend(standby);
            judge(spec, obs)
        })
        .collect();
    Ok(CheckReport {
        checked_at,
        watches,
    })
}

/// For each watch of `specs`: its warm standby's probe spec (the DR cache's authentication,
/// aimed where `state_dir` keeps that the standby serves), when it has one and the primary
/// serves (after a failover the standby is the active cache, probed as such).
async fn standby_specs(config: &Config, specs: &[ProbeSpec]) -> Vec<Option<ProbeSpec>> {
    let mut out = Vec::with_capacity(specs.len());
    for spec in specs {
        let standby = match config.watch(&spec.watch) {
            Ok(w)
                if w.dr.standby == crate::config::StandbyMode::Warm
                    && active_dr_endpoint(config, &spec.watch).is_none() =>
            {
                match crate::standby::read(&config.agent.state_dir, &w.name) {
                    Some(k) => Some(ProbeSpec {
                        endpoint: k.endpoint,
                        port: k.port,
                        ..dr_spec(config, w, spec).await
                    }),
                    None => None,
                }
            }
            _ => None,
        };
        out.push(standby);
    }
    out
}

/// The verdict for one observation.
pub fn judge(spec: &ProbeSpec, observation: Observation) -> WatchReport {
    let mut notes = Vec::new();
    let failed = |k| observation.path(k).is_some_and(|p: &PathResult| !p.ok());
    let dns_failed = failed(PathKind::Dns);
    let direct_failed = failed(PathKind::Direct);
    let mut status = match (dns_failed, direct_failed) {
        (true, true) => {
            notes.push("both the dns and the direct path fail".to_owned());
            Status::Critical
        }
        (true, false) => {
            notes.push("the dns path fails while the direct path works".to_owned());
            Status::Warning
        }
        (false, true) => {
            notes.push("the direct path fails while the dns path works".to_owned());
            Status::Warning
        }
        (false, false) => Status::Ok,
    };
    if failed(PathKind::Reader) {
        notes.push("the reader path fails".to_owned());
        status = status.max(Status::Warning);
    }
    if failed(PathKind::Standby) {
        notes.push(
            "the warm standby fails: a failover would build on demand (see `valkey-dr preflight`)"
                .to_owned(),
        );
        status = status.max(Status::Warning);
    }
    let drift = observation.drift().map(str::to_owned);
    if let Some(target) = &drift {
        notes.push(format!(
            "drift: {} points at {target}, not at the active endpoint {}",
            spec.record, spec.endpoint
        ));
        status = status.max(Status::Warning);
    }
    if let Some(dns) = observation.path(PathKind::Dns) {
        let record = spec.record.trim_end_matches('.');
        match (spec.tls.as_ref().map(|t| t.server_name), dns.error.as_ref()) {
            (Some(TlsServerName::Record), Some(e)) if e.kind == ErrorKind::Tls => {
                notes.push(format!(
                    "the certificate does not cover the record name {record}: applications that verify against the record will fail too; use tls_server_name = \"endpoint\" here, and have applications verify the endpoint name"
                ));
                status = status.max(Status::Warning);
            }
            (Some(TlsServerName::Endpoint), None) if dns.record_name_verified == Some(false) => {
                // Informational only: on AWS the certificate never covers a private record
                // name, so this is the normal healthy state, not a reason to warn.
                notes.push(format!(
                    "note: the certificate does not cover the record name {record}: applications that verify hostnames strictly against the record (not the endpoint) will fail"
                ));
            }
            _ => {}
        }
    }
    WatchReport {
        name: observation.watch.clone(),
        record: spec.record.clone(),
        status,
        drift,
        notes,
        timeout: spec.timeout,
        observation,
    }
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One path's result in the stable JSON form (README.md).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PathReport {
    /// The address connected to.
    pub address: Option<String>,
    /// Which connection the probe used.
    pub connection: String,
    /// The failure, in words.
    pub error: Option<String>,
    /// The failure's kind.
    pub error_kind: Option<String>,
    /// The whole path's time.
    pub latency_ms: f64,
    /// Whether every step passed.
    pub ok: bool,
    /// `dns`, `direct`, `reader`.
    pub path: String,
    /// Each step's time.
    pub steps_ms: BTreeMap<String, f64>,
    /// The CNAME target the dns path resolved.
    pub target: Option<String>,
    /// The TTL the dns path saw.
    pub ttl_s: Option<u64>,
}

impl PathReport {
    /// The report of `p`.
    pub fn of(p: &PathResult) -> Self {
        PathReport {
            address: p.address.map(|a| a.to_string()),
            connection: p.connection.as_str().to_owned(),
            error: p.error.as_ref().map(|e| e.to_string()),
            error_kind: p.error.as_ref().map(|e| e.kind.as_str().to_owned()),
            latency_ms: ms(p.latency),
            ok: p.ok(),
            path: p.path.as_str().to_owned(),
            steps_ms: p
                .steps
                .iter()
                .map(|s| (s.step.as_str().to_owned(), ms(s.duration)))
                .collect(),
            target: p.target.clone(),
            ttl_s: p.ttl.map(|t| t.as_secs()),
        }
    }
}

/// A whole round in the stable JSON form: when, what was expected, and every path.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ObservationReport {
    /// When the round started (RFC 3339, milliseconds).
    pub at: String,
    /// Where the record points when it is not where expected.
    pub drift_target: Option<String>,
    /// Where the record should point.
    pub expected_target: String,
    /// Every path.
    pub paths: Vec<PathReport>,
}

impl ObservationReport {
    /// The report of `o`.
    pub fn of(o: &Observation) -> Self {
        ObservationReport {
            at: crate::text::rfc3339_millis(o.started_at),
            drift_target: o.drift().map(str::to_owned),
            expected_target: o.expected_target.clone(),
            paths: o.paths.iter().map(PathReport::of).collect(),
        }
    }

    /// As an event carries it (the notification's wire document).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// The stable JSON form (documented in README.md).
pub fn to_json(report: &CheckReport) -> Value {
    let watches: Vec<Value> = report
        .watches
        .iter()
        .map(|w| {
            json!({
                "name": w.name,
                "status": w.status.as_str(),
                "record": w.record,
                "expected_target": w.observation.expected_target,
                "drift": w.drift.is_some(),
                "drift_target": w.drift,
                "notes": w.notes,
                "paths": w.observation.paths.iter().map(PathReport::of).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "status": report.status().as_str(),
        "exit_code": report.status().exit_code(),
        "checked_at": humantime::format_rfc3339_millis(report.checked_at).to_string(),
        "watches": watches,
    })
}

/// The Nagios plugin line: `VALKEY-DR <STATUS> - <summary> | <perfdata>`.
///
/// The summary is one line (why the worst watch is not OK, or each watch's latencies). The
/// perfdata follows the plugin guidelines, `'label'=value[UOM];warn;crit;min;max`: each path's
/// latency in ms (warning at half the probe timeout, critical at the timeout) and the TTL the
/// dns path saw (warning above 60 s, the longest TTL that keeps a switch within a minute).
pub fn nagios_line(report: &CheckReport) -> String {
    let status = report.status();
    let summary = match report.watches.as_slice() {
        [] => "no watch was probed".to_owned(),
        [w] => watch_summary(w),
        many => many
            .iter()
            .map(|w| format!("{} {}", w.name, watch_summary(w)))
            .collect::<Vec<_>>()
            .join("; "),
    };
    let mut perf = Vec::new();
    for w in &report.watches {
        let timeout_ms = ms(w.timeout);
        for p in &w.observation.paths {
            perf.push(format!(
                "'{}_{}'={:.3}ms;{:.0};{:.0};0;{:.0}",
                perf_label(&w.name),
                p.path.as_str(),
                ms(p.latency),
                timeout_ms / 2.0,
                timeout_ms,
                timeout_ms,
            ));
        }
        if let Some(ttl) = w.observation.path(PathKind::Dns).and_then(|p| p.ttl) {
            perf.push(format!(
                "'{}_ttl'={}s;{};;0;",
                perf_label(&w.name),
                ttl.as_secs(),
                MAX_GOOD_TTL_S
            ));
        }
    }
    format!(
        "VALKEY-DR {} - {} | {}",
        status.as_str(),
        one_line(&summary),
        perf.join(" ")
    )
}

/// The longest record TTL that keeps a switch within a minute (README.md: 30-60 s).
const MAX_GOOD_TTL_S: u64 = 60;

/// A watch in a few words: why it is not OK, or how fast each path answered.
fn watch_summary(w: &WatchReport) -> String {
    if w.status != Status::Ok
        && let Some(first) = w.notes.first()
    {
        return format!("{}: {first}", w.status.as_str());
    }
    let paths: Vec<String> = w
        .observation
        .paths
        .iter()
        .map(|p| format!("{} {:.1}ms", p.path.as_str(), ms(p.latency)))
        .collect();
    format!(
        "{} answers: {}",
        w.record.trim_end_matches('.'),
        paths.join(", ")
    )
}

/// Nagios reads up to the first `|` as text and the rest as perfdata, and one line only.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '|' => '/',
            c if c.is_control() => ' ',
            c => c,
        })
        .collect()
}

/// A perfdata label: quotes are the delimiters, `=` ends the label.
fn perf_label(name: &str) -> String {
    name.chars()
        .map(|c| {
            if matches!(c, '\'' | '=') || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect()
}

/// The plugin output for a check that reached no verdict: the Nagios line (stdout is never
/// empty) with the cause; no perfdata.
pub fn unknown_line(cause: &str) -> String {
    format!("VALKEY-DR UNKNOWN - {}", one_line(cause))
}

/// A compact table a person reads at a glance, under the Nagios line.
pub fn to_text(report: &CheckReport) -> String {
    let mut rows = vec![vec![
        "WATCH".to_owned(),
        "STATUS".to_owned(),
        "PATH".to_owned(),
        "RESULT".to_owned(),
        "LATENCY".to_owned(),
        "TTL".to_owned(),
        "ADDRESS".to_owned(),
        "TARGET".to_owned(),
    ]];
    for w in &report.watches {
        for (i, p) in w.observation.paths.iter().enumerate() {
            let (name, status) = if i == 0 {
                (w.name.clone(), w.status.as_str().to_owned())
            } else {
                (String::new(), String::new())
            };
            rows.push(vec![
                name,
                status,
                p.path.as_str().to_owned(),
                match &p.error {
                    None => "ok".to_owned(),
                    Some(e) => format!("{} at {}", e.kind, e.step),
                },
                format!("{:.1}ms", ms(p.latency)),
                p.ttl
                    .map(|t| format!("{}s", t.as_secs()))
                    .unwrap_or_else(|| "-".into()),
                p.address
                    .map(|a| a.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.target.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
    }
    let mut out = nagios_line(report);
    out.push('\n');
    for line in crate::text::aligned(&rows) {
        let _ = writeln!(out, "{line}");
    }
    for w in &report.watches {
        for p in &w.observation.paths {
            if let Some(e) = &p.error {
                let _ = writeln!(out, "{} {}: {}", w.name, p.path, e);
            }
        }
        for note in &w.notes {
            let _ = writeln!(out, "{}: {}", w.name, note);
        }
    }
    let _ = writeln!(out, "{}", report.status().as_str());
    out
}
