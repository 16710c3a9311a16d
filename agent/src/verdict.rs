//! The verdict an agent publishes for a watch whose record Route 53's health checks switch
//! (`[watch.switch] kind = "health_check"`), and its ballot: the value it stands by, kept in
//! `state_dir` so that a restart publishes it again before its first round.
//!
//! The switch calls no control plane. Each agent puts one datapoint a probe interval into
//! CloudWatch in `metric_region` (`PutMetricData`, a regional data-plane call), 1 "the
//! primary is down" or 0; the alarms, the health checks and Route 53's answers do the rest
//! (README, "The health-check switch"). Publishing is idempotent, so agents need no lease.
//!
//! The ballot changes rarely (a vote, the switch seen, a failback) and each change is written
//! to disk before it is published, with the reason, as its journal. A [`Publisher`] owns it:
//! its task publishes the current value every interval and at once on a change, each call
//! bounded, so that a CloudWatch that hangs never delays a probe round.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aws_sdk_cloudwatch::types::{Dimension, MetricDatum};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::{Config, HealthCheckSwitch, WatchConfig};
use crate::executor::api::ApiError;
use crate::store::{self, StoreError};

/// The metric every agent publishes its verdict to: 1 "the primary is down, fail over", 0
/// "it is not".
pub const METRIC_NAME: &str = "PrimaryDown";
/// The dimension naming the watch.
pub const WATCH_DIMENSION: &str = "Watch";
/// The dimension naming the agent (`[agent] id`).
pub const AGENT_DIMENSION: &str = "Agent";
/// The resolution of every datapoint: standard, the only one Route 53's alarm-based health
/// checks take (tests/FIDELITY.md).
const STORAGE_RESOLUTION_SECONDS: i32 = 60;
/// The longest one `PutMetricData` may take; shorter with a shorter probe interval.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
/// How many changes the ballot's journal keeps.
const JOURNAL_ENTRIES: usize = 64;

/// The value an agent stands by for one watch, and why, as saved in `state_dir`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ballot {
    /// 1 "the primary is down", 0 "it is not".
    pub value: u8,
    /// Since when it holds.
    pub since: Option<SystemTime>,
    /// When this agent saw the record answer the standby while it published 1: it publishes 1
    /// from then on, whatever its rounds say, until a failback releases it, so that traffic
    /// never swings back by itself to a primary holding stale sessions.
    pub switched_at: Option<SystemTime>,
    /// Each change, newest last (at most [`JOURNAL_ENTRIES`]).
    pub journal: Vec<BallotEntry>,
}

/// One change of a ballot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BallotEntry {
    /// When.
    pub at: SystemTime,
    /// The value from then on.
    pub value: u8,
    /// Whether it holds until a failback from then on.
    #[serde(default)]
    pub held: bool,
    /// Why, in words.
    pub why: String,
}

impl Ballot {
    /// Whether the ballot holds 1 until a failback.
    pub fn held(&self) -> bool {
        self.switched_at.is_some()
    }

    /// Moves the ballot to `value` (and `held`), journalling why; `false` when nothing changed.
    fn change(&mut self, value: u8, held: bool, why: &str, now: SystemTime) -> bool {
        if self.value == value && self.held() == held {
            return false;
        }
        if self.value != value || self.since.is_none() {
            self.since = Some(now);
        }
        self.value = value;
        self.switched_at = held.then(|| self.switched_at.unwrap_or(now));
        self.journal.push(BallotEntry {
            at: now,
            value,
            held,
            why: why.to_owned(),
        });
        let extra = self.journal.len().saturating_sub(JOURNAL_ENTRIES);
        self.journal.drain(..extra);
        true
    }
}

/// What the last publications did, for `/status` and the metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Published {
    /// The value CloudWatch last accepted, and when.
    pub last: Option<(u8, SystemTime)>,
    /// The last attempt's failure, one line; `None` after a success.
    pub error: Option<PublishError>,
    /// Since when the attempts fail.
    pub failing_since: Option<SystemTime>,
    /// Datapoints CloudWatch accepted since the agent started.
    pub accepted: u64,
}

/// Why a publication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// Credentials missing or refused, or `cloudwatch:PutMetricData` not allowed: a
    /// configuration error, never the agent's isolation.
    #[error("{0}")]
    Denied(String),
    /// Throttling, 5xx, a timeout, no connection: tried again next interval.
    #[error("{0}")]
    Transient(String),
}

/// Where one watch's verdicts go: the ballot's file and CloudWatch.
pub struct Publisher {
    ballot: Mutex<Ballot>,
    path: PathBuf,
    want: watch::Sender<u8>,
    published: Arc<Mutex<Published>>,
    client: aws_sdk_cloudwatch::Client,
    datum: Datum,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("path", &self.path)
            .field("namespace", &self.datum.namespace)
            .finish_non_exhaustive()
    }
}

impl Drop for Publisher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What identifies this agent's datapoints.
#[derive(Debug, Clone)]
struct Datum {
    namespace: String,
    watch: String,
    agent: String,
    region: String,
    timeout: Duration,
}

impl Datum {
    fn datum(&self, value: u8) -> MetricDatum {
        let dimension =
            |name: &str, value: &str| Dimension::builder().name(name).value(value).build();
        MetricDatum::builder()
            .metric_name(METRIC_NAME)
            .dimensions(dimension(WATCH_DIMENSION, &self.watch))
            .dimensions(dimension(AGENT_DIMENSION, &self.agent))
            .value(f64::from(value))
            .timestamp(aws_sdk_cloudwatch::primitives::DateTime::from(
                SystemTime::now(),
            ))
            .storage_resolution(STORAGE_RESOLUTION_SECONDS)
            .build()
    }
}

impl Publisher {
    /// Loads the ballot of `w` (a fresh 0 when none was saved) and starts publishing it every
    /// probe interval into `h.metric_region`. A ballot file that cannot be read is an error:
    /// a held 1 must never be forgotten silently.
    pub async fn start(
        config: &Config,
        w: &WatchConfig,
        h: &HealthCheckSwitch,
    ) -> Result<Arc<Publisher>, StoreError> {
        let path = crate::layout::ballot_file(&config.agent.state_dir, &w.name);
        let ballot = store::read_json::<Ballot>(&path)?.unwrap_or_default();
        let sdk =
            crate::aws::single_attempt(&crate::aws::sdk_config(config, &h.metric_region).await);
        let client = aws_sdk_cloudwatch::Client::new(&sdk);
        let datum = Datum {
            namespace: h.namespace.clone(),
            watch: w.name.clone(),
            agent: config.agent.id.clone(),
            region: h.metric_region.clone(),
            timeout: PUBLISH_TIMEOUT
                .min(w.probe.interval)
                .max(Duration::from_secs(1)),
        };
        let (want, wanted) = watch::channel(ballot.value);
        let published = Arc::new(Mutex::new(Published::default()));
        let task = tokio::spawn(publish_every(
            w.probe.interval,
            wanted,
            client.clone(),
            datum.clone(),
            published.clone(),
        ));
        Ok(Arc::new(Publisher {
            ballot: Mutex::new(ballot),
            path,
            want,
            published,
            client,
            datum,
            task,
        }))
    }

    /// The ballot as it stands.
    pub fn ballot(&self) -> Ballot {
        lock(&self.ballot).clone()
    }

    /// What the publications did.
    pub fn published(&self) -> Published {
        lock(&self.published).clone()
    }

    /// Stands by `value` (held until a failback with `held`), saved before it is published:
    /// `Ok(true)` when that changed the ballot. A held ballot only moves through
    /// [`Publisher::release`]. On a write error nothing changes.
    pub async fn vote(
        &self,
        value: u8,
        held: bool,
        why: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        let current = self.ballot();
        if current.held() && !held {
            return Ok(false);
        }
        self.set(current, value, held, why, now).await
    }

    /// A failback's release: 0, held no longer.
    pub async fn release(&self, why: &str, now: SystemTime) -> Result<bool, StoreError> {
        self.set(self.ballot(), 0, false, why, now).await
    }

    async fn set(
        &self,
        mut ballot: Ballot,
        value: u8,
        held: bool,
        why: &str,
        now: SystemTime,
    ) -> Result<bool, StoreError> {
        if !ballot.change(value, held, why, now) {
            return Ok(false);
        }
        let path = self.path.clone();
        let saved = ballot.clone();
        tokio::task::spawn_blocking(move || store::write_json(&path, &saved))
            .await
            .unwrap_or_else(|e| {
                Err(StoreError::Io {
                    action: "write",
                    path: self.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            })?;
        *lock(&self.ballot) = ballot;
        self.want.send_replace(value);
        Ok(true)
    }

    /// Publishes the ballot's value now and waits for CloudWatch's answer (a failback's
    /// release, which must be out before it waits for the record).
    pub async fn publish_now(&self) -> Result<(), PublishError> {
        let value = self.ballot().value;
        publish_once(&self.client, &self.datum, value, &self.published).await
    }

    /// Where the datapoints go, in words: `ValkeyDR/PrimaryDown{Watch=…, Agent=…} in us-west-2`.
    pub fn target(&self) -> String {
        let d = &self.datum;
        format!(
            "{}/{METRIC_NAME}{{{WATCH_DIMENSION}={}, {AGENT_DIMENSION}={}}} in {}",
            d.namespace, d.watch, d.agent, d.region
        )
    }
}

/// The publishing task: the wanted value at once when it changes, and again every
/// `interval`, so that the alarm's every period holds a datapoint.
async fn publish_every(
    interval: Duration,
    mut wanted: watch::Receiver<u8>,
    client: aws_sdk_cloudwatch::Client,
    datum: Datum,
    published: Arc<Mutex<Published>>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            changed = wanted.changed() => {
                if changed.is_err() {
                    return;
                }
                ticker.reset();
            }
        }
        let value = *wanted.borrow_and_update();
        if let Err(e) = publish_once(&client, &datum, value, &published).await {
            tracing::debug!(watch = %datum.watch, error = %e, "verdict not published");
        }
    }
}

/// One `PutMetricData` of `value`, bounded by the datum's timeout; the outcome goes into
/// `published`.
async fn publish_once(
    client: &aws_sdk_cloudwatch::Client,
    datum: &Datum,
    value: u8,
    published: &Mutex<Published>,
) -> Result<(), PublishError> {
    let call = "cloudwatch:PutMetricData";
    let sent = client
        .put_metric_data()
        .namespace(&datum.namespace)
        .metric_data(datum.datum(value))
        .send();
    let result = match tokio::time::timeout(datum.timeout, sent).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(
            match crate::executor::sdk::classify(call, Some(&datum.region), METRIC_NAME, &e) {
                ApiError::Denied { call, message } => {
                    PublishError::Denied(format!("{call} in {}: {message}", datum.region))
                }
                other => PublishError::Transient(format!("{other} in {}", datum.region)),
            },
        ),
        Err(_) => Err(PublishError::Transient(format!(
            "{call} in {}: no answer within {}",
            datum.region,
            crate::text::duration(datum.timeout)
        ))),
    };
    let now = SystemTime::now();
    let mut p = lock(published);
    match &result {
        Ok(()) => {
            p.last = Some((value, now));
            p.error = None;
            p.failing_since = None;
            p.accepted += 1;
        }
        Err(e) => {
            p.error = Some(e.clone());
            p.failing_since.get_or_insert(now);
        }
    }
    result
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    #[test]
    fn a_ballot_journals_each_change_and_nothing_else() {
        let mut b = Ballot::default();
        assert!(!b.change(0, false, "fine", at(1)), "0 is where it starts");
        assert!(b.change(1, false, "down", at(2)));
        assert!(!b.change(1, false, "still down", at(3)));
        assert_eq!(b.since, Some(at(2)));
        assert!(b.change(1, true, "the record answers the standby", at(4)));
        assert_eq!((b.since, b.switched_at), (Some(at(2)), Some(at(4))));
        assert!(b.change(0, false, "failback", at(5)));
        assert_eq!((b.value, b.held(), b.since), (0, false, Some(at(5))));
        let values: Vec<_> = b.journal.iter().map(|e| (e.value, e.held)).collect();
        assert_eq!(values, [(1, false), (1, true), (0, false)]);
    }

    #[test]
    fn a_ballot_keeps_its_last_changes_only() {
        let mut b = Ballot::default();
        for i in 0..(JOURNAL_ENTRIES as u64 + 10) {
            b.change((i % 2 == 0).into(), false, "flap", at(i));
        }
        assert_eq!(b.journal.len(), JOURNAL_ENTRIES);
        assert_eq!(
            b.journal.last().map(|e| e.at),
            Some(at(JOURNAL_ENTRIES as u64 + 9))
        );
    }
}
