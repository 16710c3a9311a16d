//! CloudWatch, per region: `PutMetricData`, `PutMetricAlarm`, `DescribeAlarms` and
//! `DeleteAlarms`, and the evaluation of every metric alarm by period, which Route 53's
//! alarm-based health checks read (`tests/src/aws/health_checks.rs`).
//!
//! # Protocol
//!
//! The SDK clients speak Smithy RPC v2 CBOR, with AWS's Query compatibility: `POST
//! /service/GraniteServiceVersion20100801/operation/{Operation}` with `smithy-protocol:
//! rpc-v2-cbor`, `Content-Type: application/cbor`, `x-amzn-query-mode: true` and a CBOR body
//! (gzip-compressed, `Content-Encoding: gzip`, when a `PutMetricData` body is larger than
//! the SDK's compression threshold). Answers are CBOR with the same `smithy-protocol` header;
//! an error is a CBOR map `{"__type": "com.amazonaws.cloudwatch#Shape", "message": …}` plus
//! the header `x-amzn-query-error: Code;Sender` (or `;Receiver`), from which the SDK takes
//! the Query error code (`InvalidParameterValue`) over the shape name. The CBOR itself is
//! `tests/src/aws/cbor.rs`'s.
//!
//! # Alarms, by period
//!
//! Every metric is standard resolution: its datapoints are filed under the lab minute they
//! arrive in, a lab minute lasting [`super::AwsOptions::alarm_period`] (1 s by default for
//! CloudWatch's 60 s), counted from the lab's start. An alarm of `Period` P seconds
//! evaluates at the end of each of its periods (P / 60 lab minutes), from the period it was
//! put in: the statistic of each of the last `EvaluationPeriods` periods (each missing when
//! no datapoint arrived in it) against `Threshold`, `DatapointsToAlarm` of them breaching to
//! go to `ALARM`, missing periods counted as `TreatMissingData` says; a new alarm starts in
//! `INSUFFICIENT_DATA` (tests/FIDELITY.md, rows C1–C3). The state's history is kept, so a
//! health check can read the state an alarm had a while ago.
//!
//! # Where the lab departs from CloudWatch
//!
//! - A datapoint's `Timestamp` is checked (no more than two weeks old, two hours ahead) but
//!   the datapoint is filed under the minute it arrives in: the lab's minutes are compressed.
//! - Periods of 10, 20 and 30 s (high resolution), metric math (`Metrics`), extended
//!   statistics and anomaly-detection operators are refused with `InvalidParameterValue`,
//!   saying so: the lab evaluates standard-resolution alarms only, the only ones Route 53's
//!   health checks support.
//! - The evaluation range is the last `EvaluationPeriods` periods, not the longer range
//!   CloudWatch retrieves to look past missing datapoints; `ignore` keeps the state only when
//!   every period of the range is missing, and otherwise counts as `missing`.
//! - Alarm actions are stored and echoed, never run.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper::body::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};
use tracing::info;

use super::calls::HttpRequest;
use super::cbor::{self, Cbor};
use super::{ACCOUNT_ID, ApiError, AwsService, lock, sigv4};
use crate::Shared;

/// The path every operation is posted to, before the operation's name.
pub(crate) const OPERATION_PATH: &str = "/service/GraniteServiceVersion20100801/operation/";
/// The `smithy-protocol` header's value in requests and answers.
const PROTOCOL: &str = "rpc-v2-cbor";
/// The shape ids of errors are in this namespace.
const SHAPE_NAMESPACE: &str = "com.amazonaws.cloudwatch#";
/// CloudWatch's limit on a `PutMetricData` request, compressed or not: 1 MB.
const MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// `PutMetricData`: at most this many datums per call.
const MAX_METRIC_DATA: usize = 1000;
/// At most this many dimensions per metric.
const MAX_DIMENSIONS: usize = 30;
/// Names (namespace, metric, alarm, dimension name): 1–255 characters.
const MAX_NAME: usize = 255;
/// A dimension's value: 1–1024 characters.
const MAX_DIMENSION_VALUE: usize = 1024;
/// `Values`/`Counts` of one datum: at most 150.
const MAX_VALUES: usize = 150;
/// A value's magnitude: CloudWatch refuses anything beyond 2^360.
const VALUE_EXPONENT: i32 = 360;
/// `DescribeAlarms`/`DeleteAlarms`: at most 100 names.
const MAX_ALARM_NAMES: usize = 100;
/// `DescribeAlarms`: `MaxRecords` 1–100, 50 when absent.
const MAX_RECORDS: usize = 100;
const DEFAULT_RECORDS: usize = 50;
/// CloudWatch's minute, the standard resolution.
const MINUTE_S: u64 = 60;
/// `Period × EvaluationPeriods`: at most a day for periods under an hour, a week otherwise.
const MAX_RANGE_SHORT_S: u64 = 86_400;
const MAX_RANGE_LONG_S: u64 = 604_800;
/// A datapoint's `Timestamp` may be this old, or this far ahead.
const MAX_AGE: Duration = Duration::from_secs(14 * 86_400);
const MAX_AHEAD: Duration = Duration::from_secs(2 * 3600);
/// How many lab minutes of datapoints a metric keeps: a week, the longest alarm range.
const KEPT_MINUTES: u64 = MAX_RANGE_LONG_S / MINUTE_S;
/// How many state changes an alarm remembers, for health checks reading an earlier state.
const KEPT_TRANSITIONS: usize = 1000;

/// An alarm's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlarmState {
    /// The statistic is within the threshold.
    Ok,
    /// `DatapointsToAlarm` of the last `EvaluationPeriods` breach.
    Alarm,
    /// A new alarm, or (with `missing`) nothing in the whole range.
    InsufficientData,
}

impl AlarmState {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "OK",
            Self::Alarm => "ALARM",
            Self::InsufficientData => "INSUFFICIENT_DATA",
        }
    }
}

/// The statistics Route 53's alarm checks support, all of CloudWatch's standard ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statistic {
    SampleCount,
    Average,
    Sum,
    Minimum,
    Maximum,
}

impl Statistic {
    const NAMES: [&'static str; 5] = ["SampleCount", "Average", "Sum", "Minimum", "Maximum"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "SampleCount" => Self::SampleCount,
            "Average" => Self::Average,
            "Sum" => Self::Sum,
            "Minimum" => Self::Minimum,
            "Maximum" => Self::Maximum,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::SampleCount => "SampleCount",
            Self::Average => "Average",
            Self::Sum => "Sum",
            Self::Minimum => "Minimum",
            Self::Maximum => "Maximum",
        }
    }

    fn of(self, a: &Aggregate) -> f64 {
        match self {
            Self::SampleCount => a.count,
            Self::Average => a.sum / a.count,
            Self::Sum => a.sum,
            Self::Minimum => a.min,
            Self::Maximum => a.max,
        }
    }
}

/// The static-threshold comparisons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Comparison {
    GreaterThanOrEqual,
    GreaterThan,
    LessThan,
    LessThanOrEqual,
}

impl Comparison {
    const NAMES: [&'static str; 4] = [
        "GreaterThanOrEqualToThreshold",
        "GreaterThanThreshold",
        "LessThanThreshold",
        "LessThanOrEqualToThreshold",
    ];
    /// The anomaly-detection operators: valid for CloudWatch, not emulated.
    const BAND: [&'static str; 3] = [
        "LessThanLowerOrGreaterThanUpperThreshold",
        "LessThanLowerThreshold",
        "GreaterThanUpperThreshold",
    ];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "GreaterThanOrEqualToThreshold" => Self::GreaterThanOrEqual,
            "GreaterThanThreshold" => Self::GreaterThan,
            "LessThanThreshold" => Self::LessThan,
            "LessThanOrEqualToThreshold" => Self::LessThanOrEqual,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    fn breaches(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::GreaterThanOrEqual => value >= threshold,
            Self::GreaterThan => value > threshold,
            Self::LessThan => value < threshold,
            Self::LessThanOrEqual => value <= threshold,
        }
    }

    fn words(self) -> &'static str {
        match self {
            Self::GreaterThanOrEqual => "greater than or equal to",
            Self::GreaterThan => "greater than",
            Self::LessThan => "less than",
            Self::LessThanOrEqual => "less than or equal to",
        }
    }
}

/// `TreatMissingData`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TreatMissing {
    Missing,
    NotBreaching,
    Breaching,
    Ignore,
}

impl TreatMissing {
    const NAMES: [&'static str; 4] = ["missing", "notBreaching", "breaching", "ignore"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "missing" => Self::Missing,
            "notBreaching" => Self::NotBreaching,
            "breaching" => Self::Breaching,
            "ignore" => Self::Ignore,
            _ => return None,
        })
    }

    fn as_str(self) -> &'static str {
        Self::NAMES[self as usize]
    }
}

/// What a metric received in one lab minute: enough for every standard statistic.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Aggregate {
    count: f64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Aggregate {
    fn add(&mut self, other: &Aggregate) {
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }
}

/// A metric: its namespace, name and exact set of dimensions, as CloudWatch tells metrics
/// apart (an alarm reads only the metric with exactly its dimensions).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct MetricId {
    namespace: String,
    name: String,
    dimensions: BTreeMap<String, String>,
}

/// One metric alarm, its configuration and its evaluation.
#[derive(Debug, Clone)]
struct Alarm {
    name: String,
    description: Option<String>,
    actions_enabled: bool,
    ok_actions: Vec<String>,
    alarm_actions: Vec<String>,
    insufficient_data_actions: Vec<String>,
    metric: MetricId,
    statistic: Statistic,
    /// In CloudWatch seconds, a multiple of 60.
    period_s: u64,
    unit: Option<String>,
    evaluation_periods: u64,
    datapoints_to_alarm: u64,
    threshold: f64,
    comparison: Comparison,
    treat_missing: TreatMissing,
    configured_at: SystemTime,
    /// The next period (by index, in periods of this alarm from the lab's start) whose end
    /// evaluates the alarm.
    next_period: u64,
    state: AlarmState,
    reason: String,
    state_updated: SystemTime,
    /// Each state the alarm took and the instant it took it, oldest first, starting with
    /// `INSUFFICIENT_DATA` when it was first put.
    transitions: VecDeque<(Instant, AlarmState)>,
}

impl Alarm {
    /// The period, in lab minutes.
    fn minutes(&self) -> u64 {
        self.period_s / MINUTE_S
    }
}

/// One region's metrics and alarms.
#[derive(Debug, Default)]
struct Region {
    /// Each metric's aggregate per lab minute (by index from the lab's start).
    metrics: BTreeMap<MetricId, BTreeMap<u64, Aggregate>>,
    alarms: BTreeMap<String, Alarm>,
}

/// When CloudWatch in a region became unreadable, and when it became readable again (`None`:
/// still unreadable).
type Span = (Instant, Option<Instant>);

/// CloudWatch's state in every region, shared with Route 53's health checks.
pub(crate) struct CloudWatch {
    /// How long a CloudWatch minute lasts in the lab.
    minute: Duration,
    /// Minute 0 starts here.
    started: Instant,
    regions: Mutex<BTreeMap<String, Region>>,
    /// Each region's spans of being unreadable (`cloudwatch-down`, a region outage): when
    /// each began and ended, for health checks reading a while ago.
    unreadable: Mutex<BTreeMap<String, Vec<Span>>>,
}

/// What a health check reads of an alarm at some instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AlarmReading {
    /// CloudWatch answered with the alarm's state.
    State(AlarmState),
    /// The alarm did not exist then.
    Absent,
    /// CloudWatch in the alarm's region could not be read.
    Unreadable,
}

impl CloudWatch {
    /// CloudWatch with minutes of `minute` (zero is taken as a millisecond), starting now.
    pub(crate) fn new(minute: Duration) -> Self {
        Self {
            minute: minute.max(Duration::from_millis(1)),
            started: Instant::now(),
            regions: Mutex::new(BTreeMap::new()),
            unreadable: Mutex::new(BTreeMap::new()),
        }
    }

    /// The lab minute `at` falls in.
    fn minute_of(&self, at: Instant) -> u64 {
        (at.saturating_duration_since(self.started).as_nanos() / self.minute.as_nanos()) as u64
    }

    /// When lab minute `index` starts.
    fn minute_start(&self, index: u64) -> Instant {
        self.started + self.minute * u32::try_from(index).unwrap_or(u32::MAX)
    }

    /// Records that CloudWatch in `region` became unreadable (or readable again) at `at`.
    pub(crate) fn set_readable(&self, region: &str, readable: bool, at: Instant) {
        let mut spans = lock(&self.unreadable);
        let spans = spans.entry(region.to_string()).or_default();
        let open = spans.last().is_some_and(|(_, end)| end.is_none());
        match (readable, open) {
            (false, false) => spans.push((at, None)),
            (true, true) => {
                if let Some(last) = spans.last_mut() {
                    last.1 = Some(at);
                }
            }
            _ => {}
        }
    }

    /// Whether CloudWatch in `region` could be read at `at`, and if not, since when.
    fn unreadable_since(&self, region: &str, at: Instant) -> Option<Instant> {
        lock(&self.unreadable).get(region).and_then(|spans| {
            spans
                .iter()
                .find(|(start, end)| *start <= at && end.is_none_or(|end| at < end))
                .map(|(start, _)| *start)
        })
    }

    /// What a reader of alarm `name` in `region` saw at `at` (at most now).
    pub(crate) fn reading(&self, region: &str, name: &str, at: Instant) -> AlarmReading {
        if self.unreadable_since(region, at).is_some() {
            return AlarmReading::Unreadable;
        }
        self.state_at(region, name, at)
            .map_or(AlarmReading::Absent, AlarmReading::State)
    }

    /// The last `OK` or `ALARM` a reader of the alarm saw at or before `at` (what Route 53's
    /// `LastKnownStatus` uses), looking no later than when CloudWatch became unreadable.
    pub(crate) fn last_known(&self, region: &str, name: &str, at: Instant) -> Option<AlarmState> {
        let seen_until = self.unreadable_since(region, at).unwrap_or(at);
        let mut regions = lock(&self.regions);
        let region = regions.get_mut(region)?;
        let alarm = region.alarms.get_mut(name)?;
        self.evaluate(alarm, Instant::now(), &region.metrics);
        alarm
            .transitions
            .iter()
            .rev()
            .filter(|(when, _)| *when <= seen_until)
            .map(|(_, state)| *state)
            .find(|state| *state != AlarmState::InsufficientData)
    }

    /// The alarm's state at `at`, its evaluations brought up to now first; `None` when it did
    /// not exist then.
    fn state_at(&self, region: &str, name: &str, at: Instant) -> Option<AlarmState> {
        let mut regions = lock(&self.regions);
        let region = regions.get_mut(region)?;
        let alarm = region.alarms.get_mut(name)?;
        self.evaluate(alarm, Instant::now(), &region.metrics);
        alarm
            .transitions
            .iter()
            .rev()
            .find(|(when, _)| *when <= at)
            .map(|(_, state)| *state)
    }

    /// Brings every alarm of a region's evaluations up to `now`.
    fn evaluate_region(&self, region: &mut Region, now: Instant) {
        let metrics = &region.metrics;
        for alarm in region.alarms.values_mut() {
            self.evaluate(alarm, now, metrics);
        }
    }

    /// Evaluates `alarm` at the end of each of its periods that has ended by `now` and not
    /// been evaluated yet.
    fn evaluate(
        &self,
        alarm: &mut Alarm,
        now: Instant,
        metrics: &BTreeMap<MetricId, BTreeMap<u64, Aggregate>>,
    ) {
        let minutes = alarm.minutes();
        let empty = BTreeMap::new();
        let data = metrics.get(&alarm.metric).unwrap_or(&empty);
        loop {
            let end = self.minute_start((alarm.next_period + 1) * minutes);
            if end > now {
                break;
            }
            let period = alarm.next_period;
            alarm.next_period += 1;
            // The statistic of each period of the range, oldest first (None: missing).
            let first = (period + 1).saturating_sub(alarm.evaluation_periods);
            let points: Vec<Option<f64>> = (first..=period)
                .map(|p| {
                    let mut total: Option<Aggregate> = None;
                    for (_, a) in data.range(p * minutes..(p + 1) * minutes) {
                        match &mut total {
                            Some(t) => t.add(a),
                            None => total = Some(*a),
                        }
                    }
                    total.map(|t| alarm.statistic.of(&t))
                })
                .collect();
            let Some((state, reason)) = decide(alarm, &points) else {
                continue;
            };
            if state != alarm.state {
                alarm.state = state;
                alarm.reason = reason;
                let since = now.saturating_duration_since(end);
                alarm.state_updated = SystemTime::now().checked_sub(since).unwrap_or(UNIX_EPOCH);
                alarm.transitions.push_back((end, state));
                if alarm.transitions.len() > KEPT_TRANSITIONS {
                    alarm.transitions.pop_front();
                }
            }
        }
    }

    /// The alarm's state now, as `DescribeAlarms` would say it.
    #[cfg(test)]
    fn state_now(&self, region: &str, name: &str) -> Option<AlarmState> {
        self.state_at(region, name, Instant::now())
    }
}

/// The state one evaluation gives, with its reason, from the statistic of each period of the
/// range (oldest first; `None`: missing); `None` when the alarm keeps its state (`ignore`
/// with every period missing). As "Configuring how CloudWatch alarms treat missing data"
/// documents (tests/FIDELITY.md, row C2): with every period missing, `missing` goes to
/// `INSUFFICIENT_DATA`, `ignore` keeps the state, `breaching` and `notBreaching` fill them
/// in; with some missing, `breaching`/`notBreaching` fill them in, `missing` and `ignore`
/// leave them out; `DatapointsToAlarm` breaching periods make `ALARM`, fewer make `OK`.
fn decide(alarm: &Alarm, points: &[Option<f64>]) -> Option<(AlarmState, String)> {
    let real = points.iter().filter(|p| p.is_some()).count();
    if real == 0 {
        match alarm.treat_missing {
            TreatMissing::Missing => {
                return Some((
                    AlarmState::InsufficientData,
                    format!(
                        "Insufficient Data: {} datapoints were unknown.",
                        points.len()
                    ),
                ));
            }
            TreatMissing::Ignore => return None,
            TreatMissing::Breaching | TreatMissing::NotBreaching => {}
        }
    }
    let filled = |missing_breaches: bool| {
        points
            .iter()
            .filter(|p| match p {
                Some(v) => alarm.comparison.breaches(*v, alarm.threshold),
                None => missing_breaches,
            })
            .count() as u64
    };
    let breaching = match alarm.treat_missing {
        TreatMissing::Breaching => filled(true),
        _ => filled(false),
    };
    let state = if breaching >= alarm.datapoints_to_alarm {
        AlarmState::Alarm
    } else {
        AlarmState::Ok
    };
    let reason = format!(
        "Threshold Crossed: {breaching} out of the last {} datapoints {} {} the threshold ({}) \
         (minimum {} datapoints for OK -> ALARM transition).",
        points.len(),
        if breaching == 1 { "was" } else { "were" },
        alarm.comparison.words(),
        alarm.threshold,
        alarm.datapoints_to_alarm
    );
    Some((state, reason))
}

// --- requests -----------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DimensionIn {
    name: Option<String>,
    value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StatisticSetIn {
    sample_count: f64,
    sum: f64,
    minimum: f64,
    maximum: f64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DatumIn {
    metric_name: Option<String>,
    #[serde(default)]
    dimensions: Vec<DimensionIn>,
    timestamp: Option<f64>,
    value: Option<f64>,
    statistic_values: Option<StatisticSetIn>,
    values: Option<Vec<f64>>,
    counts: Option<Vec<f64>>,
    /// Checked only against the model's enum.
    unit: Option<String>,
    storage_resolution: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutMetricDataIn {
    namespace: Option<String>,
    metric_data: Option<Vec<DatumIn>>,
    entity_metric_data: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutMetricAlarmIn {
    alarm_name: Option<String>,
    alarm_description: Option<String>,
    actions_enabled: Option<bool>,
    #[serde(rename = "OKActions", default)]
    ok_actions: Vec<String>,
    #[serde(default)]
    alarm_actions: Vec<String>,
    #[serde(default)]
    insufficient_data_actions: Vec<String>,
    metric_name: Option<String>,
    namespace: Option<String>,
    statistic: Option<String>,
    extended_statistic: Option<String>,
    #[serde(default)]
    dimensions: Vec<DimensionIn>,
    period: Option<i64>,
    unit: Option<String>,
    evaluation_periods: Option<i64>,
    datapoints_to_alarm: Option<i64>,
    threshold: Option<f64>,
    comparison_operator: Option<String>,
    treat_missing_data: Option<String>,
    metrics: Option<Value>,
    threshold_metric_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DescribeAlarmsIn {
    alarm_names: Option<Vec<String>>,
    alarm_name_prefix: Option<String>,
    alarm_types: Option<Vec<String>>,
    state_value: Option<String>,
    max_records: Option<i64>,
    next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DeleteAlarmsIn {
    alarm_names: Option<Vec<String>>,
}

/// The units CloudWatch knows (botocore `cloudwatch` shape `StandardUnit`).
const UNITS: [&str; 27] = [
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

fn invalid_value(name: &str, value: impl std::fmt::Display) -> ApiError {
    ApiError::sender(
        "InvalidParameterValue",
        format!("The value {value} for parameter {name} is invalid."),
    )
}

fn missing(name: &str) -> ApiError {
    ApiError::sender(
        "MissingParameter",
        format!("The parameter {name} is required."),
    )
}

/// A constraint of the model broken, in the words of AWS's validation errors.
fn validation(value: impl std::fmt::Display, member: &str, constraint: &str) -> ApiError {
    ApiError::sender(
        "ValidationError",
        format!(
            "1 validation error detected: Value '{value}' at '{member}' failed to satisfy \
             constraint: {constraint}"
        ),
    )
}

/// A name of 1–`max` characters.
fn check_len(value: &str, member: &str, max: usize) -> Result<(), ApiError> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(validation(
            value,
            member,
            &format!("Member must have length between 1 and {max}"),
        ));
    }
    Ok(())
}

fn check_unit(unit: Option<&str>, member: &str) -> Result<(), ApiError> {
    match unit {
        Some(u) if !UNITS.contains(&u) => Err(validation(
            u,
            member,
            &format!("Member must satisfy enum value set: [{}]", UNITS.join(", ")),
        )),
        _ => Ok(()),
    }
}

/// A metric's dimensions: at most 30, names 1–255 and values 1–1024 characters, no name
/// twice.
fn dimensions(raw: &[DimensionIn], member: &str) -> Result<BTreeMap<String, String>, ApiError> {
    if raw.len() > MAX_DIMENSIONS {
        return Err(validation(
            format!("[{} dimensions]", raw.len()),
            member,
            &format!("Member must have length less than or equal to {MAX_DIMENSIONS}"),
        ));
    }
    let mut out = BTreeMap::new();
    for (i, d) in raw.iter().enumerate() {
        let at = format!("{member}.member.{}", i + 1);
        let name = d
            .name
            .as_deref()
            .ok_or_else(|| missing(&format!("{at}.Name")))?;
        let value = d
            .value
            .as_deref()
            .ok_or_else(|| missing(&format!("{at}.Value")))?;
        check_len(name, &format!("{at}.name"), MAX_NAME)?;
        check_len(value, &format!("{at}.value"), MAX_DIMENSION_VALUE)?;
        if out.insert(name.to_string(), value.to_string()).is_some() {
            return Err(ApiError::sender(
                "InvalidParameterValue",
                format!("The dimension {name} is specified more than once in {member}."),
            ));
        }
    }
    Ok(out)
}

/// A value CloudWatch stores: between -2^360 and 2^360 (the CBOR reader already refused NaN
/// and the infinities).
fn check_value(value: f64, member: &str) -> Result<(), ApiError> {
    if value.abs() > 2f64.powi(VALUE_EXPONENT) {
        return Err(invalid_value(member, value));
    }
    Ok(())
}

/// A namespace of the caller's: 1–255 characters, not starting with `:` nor with `AWS/`
/// (reserved for AWS's own metrics).
fn check_namespace(namespace: &str) -> Result<(), ApiError> {
    check_len(namespace, "namespace", MAX_NAME)?;
    if namespace.starts_with(':') {
        return Err(validation(
            namespace,
            "namespace",
            "Member must satisfy regular expression pattern: [^:].*",
        ));
    }
    if namespace.starts_with("AWS/") {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!(
                "The value {namespace} for parameter Namespace is invalid: namespaces starting \
                 with AWS/ are reserved for use by Amazon Web Services products."
            ),
        ));
    }
    Ok(())
}

/// One datum as the minute's aggregate, after every check.
fn datum(
    d: &DatumIn,
    i: usize,
    now: SystemTime,
) -> Result<(String, BTreeMap<String, String>, Aggregate), ApiError> {
    let at = format!("MetricData.member.{i}");
    let name = d
        .metric_name
        .as_deref()
        .ok_or_else(|| missing(&format!("{at}.MetricName")))?;
    check_len(name, &format!("{at}.metricName"), MAX_NAME)?;
    let dims = dimensions(&d.dimensions, &format!("{at}.Dimensions"))?;
    check_unit(d.unit.as_deref(), &format!("{at}.unit"))?;
    match d.storage_resolution {
        None | Some(1) | Some(60) => {}
        Some(other) => {
            return Err(invalid_value(&format!("{at}.StorageResolution"), other));
        }
    }
    if let Some(ts) = d.timestamp {
        // Seconds before the epoch, or beyond what a time can hold, are as far out of range.
        let when = Duration::try_from_secs_f64(ts)
            .ok()
            .and_then(|since| UNIX_EPOCH.checked_add(since));
        let in_range = when.is_some_and(|when| {
            let too_old = now.duration_since(when).is_ok_and(|age| age > MAX_AGE);
            let too_new = when
                .duration_since(now)
                .is_ok_and(|ahead| ahead > MAX_AHEAD);
            !too_old && !too_new
        });
        if !in_range {
            return Err(invalid_value(&format!("{at}.Timestamp"), ts));
        }
    }
    let given = [
        d.value.is_some(),
        d.statistic_values.is_some(),
        d.values.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(ApiError::sender(
            "InvalidParameterCombination",
            format!(
                "The parameters {at}.Value, {at}.StatisticValues and {at}.Values are mutually \
                 exclusive and you have specified more than one."
            ),
        ));
    }
    let aggregate = if let Some(v) = d.value {
        check_value(v, &format!("{at}.Value"))?;
        Aggregate {
            count: 1.0,
            sum: v,
            min: v,
            max: v,
        }
    } else if let Some(s) = &d.statistic_values {
        for (v, m) in [
            (s.sample_count, "SampleCount"),
            (s.sum, "Sum"),
            (s.minimum, "Minimum"),
            (s.maximum, "Maximum"),
        ] {
            check_value(v, &format!("{at}.StatisticValues.{m}"))?;
        }
        if s.sample_count <= 0.0 || s.minimum > s.maximum {
            return Err(invalid_value(
                &format!("{at}.StatisticValues"),
                format!(
                    "{{SampleCount={}, Minimum={}, Maximum={}}}",
                    s.sample_count, s.minimum, s.maximum
                ),
            ));
        }
        Aggregate {
            count: s.sample_count,
            sum: s.sum,
            min: s.minimum,
            max: s.maximum,
        }
    } else if let Some(values) = &d.values {
        if values.is_empty() || values.len() > MAX_VALUES {
            return Err(validation(
                format!("[{} values]", values.len()),
                &format!("{at}.values"),
                &format!("Member must have length between 1 and {MAX_VALUES}"),
            ));
        }
        let counts = match &d.counts {
            Some(c) if c.len() != values.len() => {
                return Err(ApiError::sender(
                    "InvalidParameterValue",
                    format!("The arrays {at}.Values and {at}.Counts must be of the same size."),
                ));
            }
            Some(c) => c.clone(),
            None => vec![1.0; values.len()],
        };
        let mut a = Aggregate {
            count: 0.0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        };
        for (v, c) in values.iter().zip(&counts) {
            check_value(*v, &format!("{at}.Values"))?;
            if *c <= 0.0 {
                return Err(invalid_value(&format!("{at}.Counts"), c));
            }
            a.add(&Aggregate {
                count: *c,
                sum: v * c,
                min: *v,
                max: *v,
            });
        }
        a
    } else {
        return Err(ApiError::sender(
            "MissingParameter",
            format!(
                "At least one of the parameters {at}.Value, {at}.StatisticValues or {at}.Values must be specified."
            ),
        ));
    };
    Ok((name.to_string(), dims, aggregate))
}

fn put_metric_data(
    cw: &CloudWatch,
    region: &str,
    input: PutMetricDataIn,
) -> Result<Cbor, ApiError> {
    let namespace = input.namespace.ok_or_else(|| missing("Namespace"))?;
    check_namespace(&namespace)?;
    if input.entity_metric_data.is_some() {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            "valkey-dr-lab's CloudWatch does not emulate EntityMetricData; send MetricData.",
        ));
    }
    let data = input.metric_data.unwrap_or_default();
    if data.is_empty() {
        return Err(missing("MetricData"));
    }
    if data.len() > MAX_METRIC_DATA {
        return Err(validation(
            format!("[{} datums]", data.len()),
            "metricData",
            &format!("Member must have length less than or equal to {MAX_METRIC_DATA}"),
        ));
    }
    let now = SystemTime::now();
    let parsed: Vec<_> = data
        .iter()
        .enumerate()
        .map(|(i, d)| datum(d, i + 1, now))
        .collect::<Result<_, _>>()?;
    let arrived = Instant::now();
    let minute = cw.minute_of(arrived);
    let mut regions = lock(&cw.regions);
    let region = regions.entry(region.to_string()).or_default();
    // Alarms are brought up to now first, so a datapoint never lands in a period already
    // evaluated.
    cw.evaluate_region(region, arrived);
    for (name, dims, aggregate) in parsed {
        let series = region
            .metrics
            .entry(MetricId {
                namespace: namespace.clone(),
                name,
                dimensions: dims,
            })
            .or_default();
        series
            .entry(minute)
            .and_modify(|a| a.add(&aggregate))
            .or_insert(aggregate);
        let oldest = minute.saturating_sub(KEPT_MINUTES);
        while series.first_key_value().is_some_and(|(m, _)| *m < oldest) {
            series.pop_first();
        }
    }
    Ok(Cbor::Map(Vec::new()))
}

fn alarm_arn(region: &str, name: &str) -> String {
    format!("arn:aws:cloudwatch:{region}:{ACCOUNT_ID}:alarm:{name}")
}

fn put_metric_alarm(
    cw: &CloudWatch,
    region: &str,
    input: PutMetricAlarmIn,
) -> Result<Cbor, ApiError> {
    let name = input.alarm_name.ok_or_else(|| missing("AlarmName"))?;
    check_len(&name, "alarmName", MAX_NAME)?;
    if let Some(d) = &input.alarm_description
        && d.chars().count() > 1024
    {
        return Err(validation(
            "[description]",
            "alarmDescription",
            "Member must have length less than or equal to 1024",
        ));
    }
    if input.metrics.is_some() || input.threshold_metric_id.is_some() {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            "valkey-dr-lab's CloudWatch does not emulate metric math or anomaly detection \
             alarms (Metrics, ThresholdMetricId); Route 53 health checks support neither.",
        ));
    }
    let metric_name = input.metric_name.ok_or_else(|| missing("MetricName"))?;
    check_len(&metric_name, "metricName", MAX_NAME)?;
    let namespace = input.namespace.ok_or_else(|| missing("Namespace"))?;
    check_len(&namespace, "namespace", MAX_NAME)?;
    let statistic = match (&input.statistic, &input.extended_statistic) {
        (Some(_), Some(_)) => {
            return Err(ApiError::sender(
                "InvalidParameterCombination",
                "Exactly one of Statistic and ExtendedStatistic must be specified.",
            ));
        }
        (None, Some(p)) => {
            return Err(ApiError::sender(
                "InvalidParameterValue",
                format!(
                    "valkey-dr-lab's CloudWatch does not emulate extended statistics ({p}); \
                     Route 53 health checks support only {}.",
                    Statistic::NAMES.join(", ")
                ),
            ));
        }
        (None, None) => {
            return Err(ApiError::sender(
                "MissingParameter",
                "Exactly one of Statistic and ExtendedStatistic must be specified.",
            ));
        }
        (Some(s), None) => Statistic::parse(s).ok_or_else(|| {
            validation(
                s,
                "statistic",
                &format!(
                    "Member must satisfy enum value set: [{}]",
                    Statistic::NAMES.join(", ")
                ),
            )
        })?,
    };
    let dims = dimensions(&input.dimensions, "Dimensions")?;
    check_unit(input.unit.as_deref(), "unit")?;
    let period = input.period.ok_or_else(|| missing("Period"))?;
    if period < 1 {
        return Err(validation(
            period,
            "period",
            "Member must have value greater than or equal to 1",
        ));
    }
    let period = period as u64;
    if [10, 20, 30].contains(&period) {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!(
                "valkey-dr-lab's CloudWatch evaluates standard-resolution alarms only (a Period \
                 that is a multiple of 60), the only ones Route 53 health checks support; \
                 Period {period} is a high-resolution period."
            ),
        ));
    }
    if !period.is_multiple_of(MINUTE_S) {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!("The parameter Period must be 10, 20, 30 or a multiple of 60, not {period}."),
        ));
    }
    let evaluation_periods = input
        .evaluation_periods
        .ok_or_else(|| missing("EvaluationPeriods"))?;
    if evaluation_periods < 1 {
        return Err(validation(
            evaluation_periods,
            "evaluationPeriods",
            "Member must have value greater than or equal to 1",
        ));
    }
    let evaluation_periods = evaluation_periods as u64;
    let range_limit = if period < 3600 {
        MAX_RANGE_SHORT_S
    } else {
        MAX_RANGE_LONG_S
    };
    if period.saturating_mul(evaluation_periods) > range_limit {
        return Err(ApiError::sender(
            "InvalidParameterCombination",
            format!(
                "The evaluation period (Period {period} multiplied by EvaluationPeriods \
                 {evaluation_periods}) must not be longer than {range_limit} seconds."
            ),
        ));
    }
    let datapoints_to_alarm = input
        .datapoints_to_alarm
        .unwrap_or(evaluation_periods as i64);
    if datapoints_to_alarm < 1 || datapoints_to_alarm as u64 > evaluation_periods {
        return Err(ApiError::sender(
            "InvalidParameterValue",
            format!(
                "DatapointsToAlarm ({datapoints_to_alarm}) must be between 1 and \
                 EvaluationPeriods ({evaluation_periods})."
            ),
        ));
    }
    let threshold = input.threshold.ok_or_else(|| missing("Threshold"))?;
    let comparison_raw = input
        .comparison_operator
        .ok_or_else(|| missing("ComparisonOperator"))?;
    let comparison = match Comparison::parse(&comparison_raw) {
        Some(c) => c,
        None if Comparison::BAND.contains(&comparison_raw.as_str()) => {
            return Err(ApiError::sender(
                "InvalidParameterValue",
                format!(
                    "valkey-dr-lab's CloudWatch does not emulate anomaly detection \
                     ({comparison_raw})."
                ),
            ));
        }
        None => {
            let all: Vec<&str> = Comparison::NAMES
                .iter()
                .chain(&Comparison::BAND)
                .copied()
                .collect();
            return Err(validation(
                &comparison_raw,
                "comparisonOperator",
                &format!("Member must satisfy enum value set: [{}]", all.join(", ")),
            ));
        }
    };
    let treat_missing = match input.treat_missing_data.as_deref() {
        None => TreatMissing::Missing,
        Some(t) => TreatMissing::parse(t).ok_or_else(|| {
            ApiError::sender(
                "InvalidParameterValue",
                format!(
                    "The value {t} for parameter TreatMissingData is invalid; it must be one of \
                     {}.",
                    TreatMissing::NAMES.join(", ")
                ),
            )
        })?,
    };
    for (actions, member) in [
        (&input.ok_actions, "OKActions"),
        (&input.alarm_actions, "AlarmActions"),
        (&input.insufficient_data_actions, "InsufficientDataActions"),
    ] {
        if actions.len() > 5 {
            return Err(validation(
                format!("[{} actions]", actions.len()),
                member,
                "Member must have length less than or equal to 5",
            ));
        }
    }
    let now = Instant::now();
    let mut regions = lock(&cw.regions);
    let region_state = regions.entry(region.to_string()).or_default();
    cw.evaluate_region(region_state, now);
    let minutes = period / MINUTE_S;
    let current_period = cw.minute_of(now) / minutes;
    let configured_at = SystemTime::now();
    let alarm = Alarm {
        name: name.clone(),
        description: input.alarm_description,
        actions_enabled: input.actions_enabled.unwrap_or(true),
        ok_actions: input.ok_actions,
        alarm_actions: input.alarm_actions,
        insufficient_data_actions: input.insufficient_data_actions,
        metric: MetricId {
            namespace,
            name: metric_name,
            dimensions: dims,
        },
        statistic,
        period_s: period,
        unit: input.unit,
        evaluation_periods,
        datapoints_to_alarm: datapoints_to_alarm as u64,
        threshold,
        comparison,
        treat_missing,
        configured_at,
        next_period: current_period,
        state: AlarmState::InsufficientData,
        reason: "Unchecked: Initial alarm creation".to_string(),
        state_updated: configured_at,
        transitions: VecDeque::from([(now, AlarmState::InsufficientData)]),
    };
    match region_state.alarms.get_mut(&name) {
        // "When you update an existing alarm, its state is left unchanged, but the update
        // completely overwrites the previous configuration of the alarm."
        Some(existing) => {
            let kept = (
                existing.state,
                existing.reason.clone(),
                existing.state_updated,
                std::mem::take(&mut existing.transitions),
            );
            *existing = alarm;
            (
                existing.state,
                existing.reason,
                existing.state_updated,
                existing.transitions,
            ) = kept;
        }
        None => {
            region_state.alarms.insert(name.clone(), alarm);
        }
    }
    info!(region, alarm = %name, "PutMetricAlarm");
    Ok(Cbor::Map(Vec::new()))
}

fn names(list: Option<Vec<String>>, member: &str) -> Result<Vec<String>, ApiError> {
    let list = list.unwrap_or_default();
    if list.len() > MAX_ALARM_NAMES {
        return Err(validation(
            format!("[{} names]", list.len()),
            member,
            &format!("Member must have length less than or equal to {MAX_ALARM_NAMES}"),
        ));
    }
    for name in &list {
        check_len(name, member, MAX_NAME)?;
    }
    Ok(list)
}

fn strings(list: &[String]) -> Cbor {
    Cbor::Array(list.iter().map(Cbor::text).collect())
}

fn describe_alarm(region: &str, a: &Alarm) -> Cbor {
    Cbor::map([
        ("AlarmName", Some(Cbor::text(&a.name))),
        ("AlarmArn", Some(Cbor::text(alarm_arn(region, &a.name)))),
        ("AlarmDescription", a.description.as_deref().map(Cbor::text)),
        (
            "AlarmConfigurationUpdatedTimestamp",
            Some(Cbor::Timestamp(a.configured_at)),
        ),
        ("ActionsEnabled", Some(Cbor::Bool(a.actions_enabled))),
        ("OKActions", Some(strings(&a.ok_actions))),
        ("AlarmActions", Some(strings(&a.alarm_actions))),
        (
            "InsufficientDataActions",
            Some(strings(&a.insufficient_data_actions)),
        ),
        ("StateValue", Some(Cbor::text(a.state.as_str()))),
        ("StateReason", Some(Cbor::text(&a.reason))),
        (
            "StateUpdatedTimestamp",
            Some(Cbor::Timestamp(a.state_updated)),
        ),
        ("MetricName", Some(Cbor::text(&a.metric.name))),
        ("Namespace", Some(Cbor::text(&a.metric.namespace))),
        ("Statistic", Some(Cbor::text(a.statistic.as_str()))),
        (
            "Dimensions",
            Some(Cbor::Array(
                a.metric
                    .dimensions
                    .iter()
                    .map(|(k, v)| {
                        Cbor::map([
                            ("Name", Some(Cbor::text(k))),
                            ("Value", Some(Cbor::text(v))),
                        ])
                    })
                    .collect(),
            )),
        ),
        ("Period", Some(Cbor::Int(a.period_s as i64))),
        ("Unit", a.unit.as_deref().map(Cbor::text)),
        (
            "EvaluationPeriods",
            Some(Cbor::Int(a.evaluation_periods as i64)),
        ),
        (
            "DatapointsToAlarm",
            Some(Cbor::Int(a.datapoints_to_alarm as i64)),
        ),
        ("Threshold", Some(Cbor::Double(a.threshold))),
        (
            "ComparisonOperator",
            Some(Cbor::text(a.comparison.as_str())),
        ),
        (
            "TreatMissingData",
            Some(Cbor::text(a.treat_missing.as_str())),
        ),
        (
            "StateTransitionedTimestamp",
            Some(Cbor::Timestamp(a.state_updated)),
        ),
    ])
}

fn describe_alarms(
    cw: &CloudWatch,
    region: &str,
    input: DescribeAlarmsIn,
) -> Result<Cbor, ApiError> {
    let wanted = names(input.alarm_names, "alarmNames")?;
    if !wanted.is_empty() && input.alarm_name_prefix.is_some() {
        return Err(ApiError::sender(
            "InvalidParameterCombination",
            "AlarmNames and AlarmNamePrefix are mutually exclusive.",
        ));
    }
    let state_filter = match input.state_value.as_deref() {
        None => None,
        Some(s @ ("OK" | "ALARM" | "INSUFFICIENT_DATA")) => Some(s.to_string()),
        Some(other) => {
            return Err(validation(
                other,
                "stateValue",
                "Member must satisfy enum value set: [OK, ALARM, INSUFFICIENT_DATA]",
            ));
        }
    };
    let types = input.alarm_types.unwrap_or_default();
    for t in &types {
        if t != "MetricAlarm" && t != "CompositeAlarm" {
            return Err(validation(
                t,
                "alarmTypes",
                "Member must satisfy enum value set: [CompositeAlarm, MetricAlarm]",
            ));
        }
    }
    let metric_alarms = types.is_empty() || types.iter().any(|t| t == "MetricAlarm");
    let max = match input.max_records {
        None => DEFAULT_RECORDS,
        Some(n) if (1..=MAX_RECORDS as i64).contains(&n) => n as usize,
        Some(n) => {
            return Err(validation(
                n,
                "maxRecords",
                &format!("Member must have value between 1 and {MAX_RECORDS}"),
            ));
        }
    };
    let skip = match input.next_token.as_deref() {
        None => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError::sender("InvalidNextToken", "The next token is invalid."))?,
    };
    let now = Instant::now();
    let mut regions = lock(&cw.regions);
    let region_state = regions.entry(region.to_string()).or_default();
    cw.evaluate_region(region_state, now);
    let selected: Vec<&Alarm> = region_state
        .alarms
        .values()
        .filter(|_| metric_alarms)
        .filter(|a| wanted.is_empty() || wanted.contains(&a.name))
        .filter(|a| {
            input
                .alarm_name_prefix
                .as_deref()
                .is_none_or(|p| a.name.starts_with(p))
        })
        .filter(|a| {
            state_filter
                .as_deref()
                .is_none_or(|s| a.state.as_str() == s)
        })
        .collect();
    let page: Vec<Cbor> = selected
        .iter()
        .skip(skip)
        .take(max)
        .map(|a| describe_alarm(region, a))
        .collect();
    let next = (skip + max < selected.len()).then(|| Cbor::text((skip + max).to_string()));
    Ok(Cbor::map([
        ("MetricAlarms", Some(Cbor::Array(page))),
        ("CompositeAlarms", Some(Cbor::Array(Vec::new()))),
        ("NextToken", next),
    ]))
}

fn delete_alarms(cw: &CloudWatch, region: &str, input: DeleteAlarmsIn) -> Result<Cbor, ApiError> {
    let wanted = names(input.alarm_names, "alarmNames")?;
    if wanted.is_empty() {
        return Err(missing("AlarmNames"));
    }
    let mut regions = lock(&cw.regions);
    let region_state = regions.entry(region.to_string()).or_default();
    // "If you specify any incorrect alarm names, the alarms you specify with correct names are
    // still deleted" (tests/FIDELITY.md, row C3): the call succeeds.
    for name in &wanted {
        region_state.alarms.remove(name);
    }
    Ok(Cbor::Map(Vec::new()))
}

// --- the HTTP side ------------------------------------------------------------------------

/// An error's shape name in the model, from its Query code.
fn shape_of(code: &str) -> &str {
    match code {
        "InvalidParameterValue" => "InvalidParameterValueException",
        "InvalidParameterCombination" => "InvalidParameterCombinationException",
        "MissingParameter" => "MissingRequiredParameterException",
        "LimitExceeded" => "LimitExceededFault",
        "InternalServiceError" => "InternalServiceFault",
        other => other,
    }
}

/// An error answer: the CBOR map `{"__type", "message"}` and `x-amzn-query-error`.
pub(crate) fn error_body(error: &ApiError) -> Cbor {
    Cbor::map([
        (
            "__type",
            Some(Cbor::text(format!(
                "{SHAPE_NAMESPACE}{}",
                shape_of(&error.code)
            ))),
        ),
        ("message", Some(Cbor::text(&error.message))),
    ])
}

/// The body as sent, gunzipped when `Content-Encoding: gzip`, at most 1 MB either way.
fn body_bytes(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("Request size exceeded {MAX_REQUEST_BYTES} bytes"),
        )
    };
    if body.len() > MAX_REQUEST_BYTES {
        return Err(too_large());
    }
    let encoding = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match encoding {
        "" | "identity" => Ok(body.to_vec()),
        "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body)
                .take(MAX_REQUEST_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| {
                    ApiError::sender(
                        "SerializationException",
                        format!("The gzip-encoded body could not be decompressed: {e}"),
                    )
                })?;
            if out.len() > MAX_REQUEST_BYTES {
                return Err(too_large());
            }
            Ok(out)
        }
        other => Err(ApiError::sender(
            "SerializationException",
            format!("Content-Encoding {other:?} is not supported; gzip is."),
        )),
    }
}

fn parse<T: serde::de::DeserializeOwned>(input: &Value) -> Result<T, ApiError> {
    serde_json::from_value(input.clone()).map_err(|e| {
        ApiError::sender(
            "SerializationException",
            format!("The request body does not match the operation's input: {e}"),
        )
    })
}

/// `POST /service/GraniteServiceVersion20100801/operation/{operation}`.
pub(crate) async fn handle(
    State(lab): State<Arc<Shared>>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut call = lab.aws.exchange(AwsService::Cloudwatch);
    call.action = operation.clone();
    let decoded = body_bytes(&headers, &body).and_then(|bytes| {
        cbor::decode(&bytes).map_err(|e| {
            ApiError::sender(
                "SerializationException",
                format!("The request body is not valid CBOR: {e}"),
            )
        })
    });
    call.http = HttpRequest {
        method: "POST".to_string(),
        path: format!("{OPERATION_PATH}{operation}"),
        query: String::new(),
        body: decoded.as_ref().map(Value::to_string).unwrap_or_default(),
        target: None,
    };
    call.request = match &decoded {
        Ok(v) => summary(&operation, v),
        Err(_) => json!({ "malformed": true }),
    };
    if let Some(encoding) = headers
        .get(axum::http::header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
    {
        call.request["content_encoding"] = json!(encoding);
    }
    let outcome = (|| -> Result<Cbor, ApiError> {
        let scope = sigv4::credential_scope(&headers)?;
        let region = scope.region.clone();
        call.region = Some(region.clone());
        call.resource = resource(&operation, &region, decoded.as_ref().ok());
        call.gate()?;
        let protocol = headers.get("smithy-protocol").and_then(|v| v.to_str().ok());
        if protocol != Some(PROTOCOL) {
            return Err(ApiError::sender(
                "SerializationException",
                format!(
                    "The smithy-protocol header must be {PROTOCOL:?}, not {:?}.",
                    protocol.unwrap_or("")
                ),
            ));
        }
        let input = decoded.clone()?;
        let cw = &lab.aws.cloudwatch;
        match operation.as_str() {
            "PutMetricData" => put_metric_data(cw, &region, parse(&input)?),
            "PutMetricAlarm" => put_metric_alarm(cw, &region, parse(&input)?),
            "DescribeAlarms" => describe_alarms(cw, &region, parse(&input)?),
            "DeleteAlarms" => delete_alarms(cw, &region, parse(&input)?),
            other => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "UnknownOperationException",
                format!(
                    "valkey-dr-lab's CloudWatch emulates PutMetricData, PutMetricAlarm, \
                     DescribeAlarms and DeleteAlarms, not {other}."
                ),
            )),
        }
    })();
    let (status, error, answer) = match outcome {
        Ok(answer) => (StatusCode::OK, None, answer),
        Err(e) => (e.status, Some(e.clone()), error_body(&e)),
    };
    let kind = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    let query_error = error.as_ref().map(|e| format!("{};{kind}", e.code));
    call.binary = true;
    call.query_error = query_error.clone();
    let mut response = call.finish_raw(
        status,
        error.as_ref().map(|e| e.code.clone()),
        answer.to_json().to_string(),
        answer.encode(),
        "application/cbor",
    );
    let headers = response.headers_mut();
    headers.insert(
        HeaderName::from_static("smithy-protocol"),
        HeaderValue::from_static(PROTOCOL),
    );
    if let Some(query_error) = query_error
        && let Ok(value) = HeaderValue::from_str(&query_error)
    {
        headers.insert(HeaderName::from_static("x-amzn-query-error"), value);
    }
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/cbor"));
    response.into_response()
}

/// What the call log says was asked.
fn summary(operation: &str, input: &Value) -> Value {
    match operation {
        "PutMetricData" => json!({
            "namespace": input.get("Namespace"),
            "metrics": input.get("MetricData").and_then(Value::as_array).map(|data| {
                data.iter().map(|d| json!({
                    "name": d.get("MetricName"),
                    "dimensions": d.get("Dimensions"),
                    "value": d.get("Value"),
                })).collect::<Vec<_>>()
            }),
        }),
        "PutMetricAlarm" => json!({
            "alarm": input.get("AlarmName"),
            "metric": input.get("MetricName"),
            "period": input.get("Period"),
            "evaluation_periods": input.get("EvaluationPeriods"),
            "datapoints_to_alarm": input.get("DatapointsToAlarm"),
        }),
        _ => json!({ "alarms": input.get("AlarmNames") }),
    }
}

/// The ARN an `iam-deny` message names: the alarm for the alarm actions, none for
/// `PutMetricData` (which has no resource-level permissions).
fn resource(operation: &str, region: &str, input: Option<&Value>) -> Option<String> {
    let name = match operation {
        "PutMetricAlarm" => input?.get("AlarmName")?.as_str()?,
        "DescribeAlarms" | "DeleteAlarms" => {
            input?.get("AlarmNames")?.as_array()?.first()?.as_str()?
        }
        _ => return None,
    };
    Some(alarm_arn(region, name))
}

/// What CloudWatch answers while it is down in the region (`cloudwatch-down`, a region
/// outage): the common 503 of every AWS API.
pub(crate) fn unavailable(region: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "ServiceUnavailable",
        format!("The service is unavailable in {region}. Please try again later."),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(m: u64, n: u64, treat: TreatMissing) -> Alarm {
        Alarm {
            name: "a".into(),
            description: None,
            actions_enabled: true,
            ok_actions: vec![],
            alarm_actions: vec![],
            insufficient_data_actions: vec![],
            metric: MetricId {
                namespace: "ValkeyDR".into(),
                name: "PrimaryDown".into(),
                dimensions: BTreeMap::new(),
            },
            statistic: Statistic::Maximum,
            period_s: 60,
            unit: None,
            evaluation_periods: n,
            datapoints_to_alarm: m,
            threshold: 1.0,
            comparison: Comparison::GreaterThanOrEqual,
            treat_missing: treat,
            configured_at: SystemTime::now(),
            next_period: 0,
            state: AlarmState::InsufficientData,
            reason: String::new(),
            state_updated: SystemTime::now(),
            transitions: VecDeque::new(),
        }
    }

    fn state(a: &Alarm, points: &[Option<f64>]) -> Option<AlarmState> {
        decide(a, points).map(|(s, _)| s)
    }

    #[test]
    fn m_of_n_with_each_treatment_of_missing_data() {
        use AlarmState::*;
        let (b, g, m) = (Some(1.0), Some(0.0), None);
        let missing = alarm(2, 3, TreatMissing::Missing);
        assert_eq!(state(&missing, &[b, g, b]), Some(Alarm));
        assert_eq!(state(&missing, &[b, g, g]), Some(Ok));
        assert_eq!(state(&missing, &[m, m, m]), Some(InsufficientData));
        assert_eq!(state(&missing, &[m, b, b]), Some(Alarm));
        assert_eq!(
            state(&missing, &[m, m, b]),
            Some(Ok),
            "one breach of two needed"
        );
        let breaching = alarm(2, 3, TreatMissing::Breaching);
        assert_eq!(state(&breaching, &[m, m, g]), Some(Alarm));
        assert_eq!(state(&breaching, &[m, m, m]), Some(Alarm));
        assert_eq!(state(&breaching, &[g, g, m]), Some(Ok));
        let not_breaching = alarm(2, 3, TreatMissing::NotBreaching);
        assert_eq!(state(&not_breaching, &[m, m, b]), Some(Ok));
        assert_eq!(state(&not_breaching, &[m, m, m]), Some(Ok));
        assert_eq!(state(&not_breaching, &[b, m, b]), Some(Alarm));
        let ignore = alarm(2, 3, TreatMissing::Ignore);
        assert_eq!(state(&ignore, &[m, m, m]), None, "keeps its state");
        assert_eq!(state(&ignore, &[b, m, b]), Some(Alarm));
        let reason = decide(&missing, &[b, g, b]).unwrap().1;
        assert!(
            reason.starts_with("Threshold Crossed: 2 out of the last 3"),
            "{reason}"
        );
    }

    #[test]
    fn statistics_and_comparisons() {
        let a = Aggregate {
            count: 4.0,
            sum: 2.0,
            min: 0.0,
            max: 1.0,
        };
        let got: Vec<f64> = Statistic::NAMES
            .iter()
            .map(|s| Statistic::parse(s).unwrap().of(&a))
            .collect();
        assert_eq!(got, vec![4.0, 0.5, 2.0, 0.0, 1.0]);
        assert!(Statistic::parse("p99").is_none());
        for name in Comparison::NAMES {
            assert_eq!(Comparison::parse(name).unwrap().as_str(), name);
        }
        assert!(Comparison::LessThanOrEqual.breaches(1.0, 1.0));
        assert!(!Comparison::GreaterThan.breaches(1.0, 1.0));
    }

    /// An alarm evaluated by periods of 20 ms: OK, then ALARM once two of three periods
    /// breach, then OK; a health check reading a while ago sees the earlier state.
    #[test]
    fn alarms_change_state_by_period() {
        let minute = Duration::from_millis(20);
        let cw = CloudWatch::new(minute);
        let put = |value: f64| {
            put_metric_data(
                &cw,
                "us-east-1",
                serde_json::from_value(json!({"Namespace": "ValkeyDR",
                    "MetricData": [{"MetricName": "PrimaryDown", "Value": value,
                        "Dimensions": [{"Name": "Agent", "Value": "a"}]}]}))
                .unwrap(),
            )
            .unwrap();
        };
        put_metric_alarm(
            &cw,
            "us-east-1",
            serde_json::from_value(json!({"AlarmName": "down-a", "MetricName": "PrimaryDown",
                "Namespace": "ValkeyDR", "Statistic": "Maximum", "Period": 60,
                "EvaluationPeriods": 3, "DatapointsToAlarm": 2, "Threshold": 1.0,
                "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                "TreatMissingData": "missing",
                "Dimensions": [{"Name": "Agent", "Value": "a"}]}))
            .unwrap(),
        )
        .unwrap();
        assert_eq!(
            cw.state_now("us-east-1", "down-a"),
            Some(AlarmState::InsufficientData)
        );
        let wait_for = |wanted: AlarmState, feed: f64| {
            let deadline = Instant::now() + Duration::from_secs(5);
            while cw.state_now("us-east-1", "down-a") != Some(wanted) {
                assert!(Instant::now() < deadline, "never {wanted:?}");
                put(feed);
                std::thread::sleep(minute / 4);
            }
        };
        wait_for(AlarmState::Ok, 0.0);
        wait_for(AlarmState::Alarm, 1.0);
        let alarmed = Instant::now();
        wait_for(AlarmState::Ok, 0.0);
        assert_eq!(
            cw.reading("us-east-1", "down-a", alarmed),
            AlarmReading::State(AlarmState::Alarm)
        );
        assert_eq!(
            cw.reading("us-east-1", "other", alarmed),
            AlarmReading::Absent
        );
        let down = Instant::now();
        cw.set_readable("us-east-1", false, down);
        assert_eq!(
            cw.reading("us-east-1", "down-a", Instant::now()),
            AlarmReading::Unreadable
        );
        assert_eq!(
            cw.last_known("us-east-1", "down-a", Instant::now()),
            Some(AlarmState::Ok)
        );
        cw.set_readable("us-east-1", true, Instant::now());
        assert!(matches!(
            cw.reading("us-east-1", "down-a", Instant::now()),
            AlarmReading::State(_)
        ));
        assert_eq!(
            cw.reading("us-east-1", "down-a", down),
            AlarmReading::Unreadable,
            "the span is remembered"
        );
    }

    #[test]
    fn inputs_are_checked_as_cloudwatch_does() {
        let cw = CloudWatch::new(Duration::from_secs(1));
        let data = |v: Value| put_metric_data(&cw, "r", serde_json::from_value(v).unwrap());
        let code = |r: Result<Cbor, ApiError>| r.unwrap_err().code;
        assert_eq!(
            code(data(json!({"Namespace": "AWS/EC2",
                "MetricData": [{"MetricName": "m", "Value": 1.0}]}))),
            "InvalidParameterValue"
        );
        let dims: Vec<Value> = (0..31)
            .map(|i| json!({"Name": format!("d{i}"), "Value": "v"}))
            .collect();
        assert_eq!(
            code(data(json!({"Namespace": "N",
                "MetricData": [{"MetricName": "m", "Value": 1.0, "Dimensions": dims}]}))),
            "ValidationError"
        );
        assert_eq!(
            code(data(json!({"Namespace": "N",
                "MetricData": [{"MetricName": "m", "Value": 1e200, }]}))),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(data(json!({"Namespace": "N",
                "MetricData": [{"MetricName": "m", "Value": 1.0, "Values": [1.0]}]}))),
            "InvalidParameterCombination"
        );
        assert_eq!(
            code(data(
                json!({"Namespace": "N", "MetricData": [{"MetricName": "m"}]})
            )),
            "MissingParameter"
        );
        assert_eq!(
            code(data(json!({"Namespace": "N",
                "MetricData": [{"MetricName": "m", "Value": 1.0, "StorageResolution": 5}]}))),
            "InvalidParameterValue"
        );
        assert!(
            data(json!({"Namespace": "N", "MetricData": [{"MetricName": "m",
                "Values": [0.0, 1.0], "Counts": [3.0, 1.0]}]}))
            .is_ok()
        );
        for ts in [0.0, -1.0, 1e300] {
            assert_eq!(
                code(data(json!({"Namespace": "N",
                    "MetricData": [{"MetricName": "m", "Value": 1.0, "Timestamp": ts}]}))),
                "InvalidParameterValue",
                "{ts}"
            );
        }

        let alarm = |extra: Value| {
            let mut base = json!({"AlarmName": "a", "MetricName": "m", "Namespace": "N",
                "Statistic": "Maximum", "Period": 60, "EvaluationPeriods": 3,
                "Threshold": 1.0, "ComparisonOperator": "GreaterThanOrEqualToThreshold"});
            for (k, v) in extra.as_object().unwrap() {
                base[k] = v.clone();
            }
            put_metric_alarm(&cw, "r", serde_json::from_value(base).unwrap())
        };
        assert!(alarm(json!({})).is_ok());
        assert_eq!(code(alarm(json!({"Period": 45}))), "InvalidParameterValue");
        assert_eq!(code(alarm(json!({"Period": 10}))), "InvalidParameterValue");
        assert_eq!(
            code(alarm(json!({"Period": 3000, "EvaluationPeriods": 30}))),
            "InvalidParameterCombination"
        );
        assert!(alarm(json!({"Period": 3600, "EvaluationPeriods": 168})).is_ok());
        assert_eq!(
            code(alarm(json!({"DatapointsToAlarm": 4}))),
            "InvalidParameterValue"
        );
        assert_eq!(code(alarm(json!({"Statistic": "p99"}))), "ValidationError");
        assert_eq!(
            code(alarm(
                json!({"Statistic": null, "ExtendedStatistic": "p99"})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(alarm(json!({"TreatMissingData": "maybe"}))),
            "InvalidParameterValue"
        );
        assert_eq!(
            code(alarm(
                json!({"ComparisonOperator": "GreaterThanUpperThreshold"})
            )),
            "InvalidParameterValue"
        );
        assert_eq!(code(alarm(json!({"Threshold": null}))), "MissingParameter");

        let listed = |names: Value| {
            describe_alarms(&cw, "r", serde_json::from_value(names).unwrap())
                .unwrap()
                .to_json()["MetricAlarms"]
                .as_array()
                .unwrap()
                .len()
        };
        assert_eq!(listed(json!({"AlarmNames": ["a"]})), 1);
        delete_alarms(
            &cw,
            "r",
            serde_json::from_value(json!({"AlarmNames": ["a", "nope"]})).unwrap(),
        )
        .expect("an incorrect name does not fail the call");
        assert_eq!(
            listed(json!({"AlarmNames": ["a"]})),
            0,
            "the correct one is deleted"
        );
        assert_eq!(
            code(delete_alarms(
                &cw,
                "r",
                serde_json::from_value(json!({})).unwrap()
            )),
            "MissingParameter"
        );
    }

    #[test]
    fn errors_carry_the_shape_and_the_query_code() {
        let e = ApiError::sender("InvalidParameterValue", "bad");
        assert_eq!(
            error_body(&e).to_json(),
            json!({"__type": "com.amazonaws.cloudwatch#InvalidParameterValueException",
                "message": "bad"})
        );
        assert_eq!(
            error_body(&unavailable("us-west-2")).to_json()["__type"],
            "com.amazonaws.cloudwatch#ServiceUnavailable"
        );
    }

    #[test]
    fn gzip_bodies_are_decompressed() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello").unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(
            axum::http::header::CONTENT_ENCODING,
            HeaderValue::from_static("gzip"),
        );
        assert_eq!(
            body_bytes(&headers, &gz.finish().unwrap()).unwrap(),
            b"hello"
        );
        assert_eq!(
            body_bytes(&headers, b"not gzip").unwrap_err().code,
            "SerializationException"
        );
    }
}
