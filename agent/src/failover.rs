//! Failover and failback with the real AWS clients, shared by the daemon (automatic runs and
//! the manual ones it is asked for) and by the CLI when no agent is running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use valkey_dr_probes::{ProbeSpec, Prober, same_name};

use crate::config::{Config, WatchConfig};
use crate::executor::api::{CacheApi, Change, ChangeStatus, DnsApi, RecordSet};
use crate::executor::sdk::{SdkCache, SdkDns};
use crate::executor::verify::ProbeVerifier;
use crate::executor::{Entry, Executor, FailoverError, Journal, Limits, Step, Verifier};
use crate::{aws, plan, store};

/// The journal of a watch's current (or last) failover.
pub fn journal_path(state_dir: &Path, watch: &str) -> PathBuf {
    state_dir.join(format!("failover-{watch}.json"))
}

/// Reads a watch's journal, if there is one.
pub fn load_journal(state_dir: &Path, watch: &str) -> Result<Option<Journal>, store::StoreError> {
    store::read_json(&journal_path(state_dir, watch))
}

/// A failover id: UTC time to the second, the agent, and a few random bits, so that agents
/// sharing one id (one config copied to several hosts) never share a failover.
pub fn new_failover_id(agent_id: &str, now: SystemTime) -> String {
    let nanos = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .subsec_nanos();
    let salt = (nanos ^ std::process::id().rotate_left(16)) & 0xffff;
    format!("fo-{}-{agent_id}-{salt:04x}", compact_utc(now))
}

/// `20261126t071500z`: a UTC timestamp usable in names and tags.
pub fn compact_utc(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

/// Everything one watch's failover or failback needs: the DR region's ElastiCache, Route 53,
/// and probes built from the watch's own settings.
pub struct Runner {
    /// ElastiCache in the DR region.
    pub cache: SdkCache,
    /// Route 53.
    pub dns: SdkDns,
    /// Real-traffic checks.
    pub verifier: ProbeVerifier,
    journal: PathBuf,
    limits: Limits,
    hosted_zone_id: String,
    record: String,
    ttl: u32,
    dr_cache: String,
}

impl Runner {
    /// A runner for `w`, probing as `spec` (the watch's probe settings) does.
    pub async fn new(
        config: &Config,
        w: &WatchConfig,
        prober: Arc<Prober>,
        spec: ProbeSpec,
    ) -> Self {
        let cache = SdkCache::new(&aws::sdk_config(config, &w.dr.region).await);
        let dns = SdkDns::new(&aws::sdk_config(config, &w.dr.region).await);
        Runner {
            cache,
            dns,
            verifier: ProbeVerifier::new(prober, spec, w.ttl),
            journal: journal_path(&config.agent.state_dir, &w.name),
            limits: Limits {
                // A serverless cache takes about a minute on AWS; polling twice a second keeps
                // what the agent adds on top well under a second, at ~120 cheap calls.
                poll: Duration::from_millis(500),
                alert_every: w.policy.reminder_interval.min(Duration::from_secs(5 * 60)),
                ..Limits::default()
            },
            hosted_zone_id: w.hosted_zone_id.clone(),
            record: w.record.clone(),
            ttl: w.ttl.as_secs() as u32,
            dr_cache: w.dr.cache_name.clone(),
        }
    }

    /// A fresh journal for a new failover of `w`, written to disk before anything else is
    /// (the daemon persists "failing over" only after this).
    pub fn begin(
        &self,
        config: &Config,
        w: &WatchConfig,
        now: SystemTime,
    ) -> Result<Journal, String> {
        // The previous failover's journal is kept under `failovers/` for the record; an
        // unfinished one is never replaced (it must be resumed, not forgotten).
        match store::read_json::<Journal>(&self.journal) {
            Ok(Some(previous)) if previous.unfinished() => {
                return Err(format!(
                    "failover {} is unfinished in {}; it resumes when the agent starts",
                    previous.plan.failover_id,
                    self.journal.display()
                ));
            }
            Ok(Some(previous)) => {
                let dir = self.journal.with_file_name("failovers");
                store::ensure_dir(&dir)
                    .and_then(|()| {
                        store::write_json(
                            &dir.join(format!("{}.json", previous.plan.failover_id)),
                            &previous,
                        )
                    })
                    .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
            }
            Ok(None) => {}
            Err(e) => return Err(format!("{:#}", anyhow::Error::from(e))),
        }
        let id = new_failover_id(&config.agent.id, now);
        let journal = Journal::new(plan::executor_plan(config, w, &id));
        store::write_json(&self.journal, &journal)
            .map_err(|e| format!("{:#}", anyhow::Error::from(e)))?;
        Ok(journal)
    }

    /// Runs (or resumes) the failover of `journal`.
    pub async fn failover(
        &self,
        journal: Journal,
        progress: &(dyn Fn(&Journal, &Entry) + Send + Sync),
        alert: &(dyn Fn(Step, &str) + Send + Sync),
    ) -> Result<Journal, (Journal, FailoverError)> {
        Executor {
            cache: &self.cache,
            dns: &self.dns,
            verify: &self.verifier,
            path: self.journal.clone(),
            limits: self.limits.clone(),
            progress,
            alert,
        }
        .run(journal)
        .await
    }

    /// Points the record back at the primary: an exact compare-and-swap from the DR endpoint,
    /// then `INSYNC`, then a probe through the record; with `delete_dr`, deletes the DR cache
    /// afterwards. The caller has checked that the primary passes `rise` rounds.
    pub async fn failback(
        &self,
        dr_endpoint: &str,
        primary: &str,
        delete_dr: bool,
        progress: &(dyn Fn(&str, &str) + Send + Sync),
    ) -> Result<FailbackReport, String> {
        let mut steps = BTreeMap::new();
        let started = Instant::now();
        let target = format!("{}.", primary.trim_end_matches('.'));

        let t = Instant::now();
        let current = self
            .dns
            .record(&self.hosted_zone_id, &self.record, "CNAME")
            .await
            .map_err(|e| format!("switch_dns: reading {}: {e}", self.record))?;
        let change = match &current {
            Some(r) if r.values.iter().any(|v| same_name(v, &target)) => None,
            Some(r) if r.values.iter().any(|v| same_name(v, dr_endpoint)) => {
                let back = RecordSet {
                    name: self.record.clone(),
                    rtype: "CNAME".into(),
                    ttl: self.ttl,
                    values: vec![target.clone()],
                };
                let batch = [Change::Delete(r.clone()), Change::Create(back)];
                let id = self
                    .dns
                    .change(&self.hosted_zone_id, &batch)
                    .await
                    .map_err(|e| format!("switch_dns: {e}; the record was not changed"))?;
                Some(id)
            }
            other => {
                return Err(format!(
                    "switch_dns: {} points at {}, neither the DR cache {dr_endpoint} nor the primary; not overwriting it",
                    self.record,
                    other
                        .as_ref()
                        .map(|r| r.values.join(","))
                        .unwrap_or_else(|| "nothing".into())
                ));
            }
        };
        steps.insert("switch_dns", t.elapsed());
        progress(
            "switch_dns",
            &match &change {
                Some(id) => format!("{} → {target} ({id})", self.record),
                None => format!("{} already points at {target}", self.record),
            },
        );

        let t = Instant::now();
        if let Some(id) = &change {
            let deadline = Instant::now() + self.limits.insync_timeout;
            loop {
                match self.dns.change_status(id).await {
                    Ok(ChangeStatus::InSync) => break,
                    Ok(ChangeStatus::Pending) => {}
                    Err(e) if e.is_transient() => tracing::warn!(error = %e, "GetChange; retrying"),
                    Err(e) => return Err(format!("wait_insync: {e}")),
                }
                if Instant::now() >= deadline {
                    return Err(format!("wait_insync: {id} not INSYNC in time"));
                }
                tokio::time::sleep(self.limits.poll).await;
            }
        }
        steps.insert("wait_insync", t.elapsed());
        progress("wait_insync", "INSYNC");

        let t = Instant::now();
        self.verifier
            .through_record(primary)
            .await
            .map_err(|e| format!("verify_dns: {e}"))?;
        steps.insert("verify_dns", t.elapsed());
        progress(
            "verify_dns",
            &format!("{} resolves to {primary} and answers", self.record),
        );

        let mut deleted = None;
        if delete_dr {
            let t = Instant::now();
            self.cache.delete(&self.dr_cache).await.map_err(|e| {
                format!("delete_dr: {e} (the record already points at the primary)")
            })?;
            steps.insert("delete_dr", t.elapsed());
            progress("delete_dr", &format!("deleting {}", self.dr_cache));
            deleted = Some(self.dr_cache.clone());
        }
        Ok(FailbackReport {
            record: self.record.clone(),
            target,
            change_id: change,
            deleted,
            steps_ms: steps
                .into_iter()
                .map(|(k, v)| (k, v.as_millis() as u64))
                .collect(),
            total_ms: started.elapsed().as_millis() as u64,
        })
    }
}

/// What a failback did.
#[derive(Debug, Clone, Serialize)]
pub struct FailbackReport {
    /// The record.
    pub record: String,
    /// What it points at now.
    pub target: String,
    /// The Route 53 change, when one was needed.
    pub change_id: Option<String>,
    /// The DR cache deleted, with `--delete-dr`.
    pub deleted: Option<String>,
    /// How long each step took.
    pub steps_ms: BTreeMap<&'static str, u64>,
    /// In all.
    pub total_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_ids_are_names_safe_and_differ_between_calls() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(compact_utc(t), "20261118t110640z");
        let id = new_failover_id("host-1", t);
        assert!(id.starts_with("fo-20261118t110640z-host-1-"), "{id}");
        assert!(id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
        let later = new_failover_id("host-1", t + Duration::from_nanos(1));
        assert_ne!(id, later);
    }
}
