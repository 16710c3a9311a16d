//! `valkey-dr status`: the record according to Route 53 and to DNS, both caches, the agent,
//! and the last failover.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;
use valkey_dr_policies::WatchState;
use valkey_dr_probes::{PathKind, Prober, ResolverSettings};

use super::running_agent;
use crate::config::{Config, WatchConfig};
use crate::control::status::{FailoverSummary, PauseStatus, SwitchStatus, TaskStatus, WatchStatus};
use crate::executor::api::{CacheApi as _, CacheStatus, DnsApi as _};
use crate::executor::sdk::{SdkCache, SdkDns};
use crate::text::chain;
use crate::{failover, store};

/// What `status` found (its JSON is `--output json`'s, README.md).
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// `[agent] id`.
    pub agent_id: String,
    /// How a person types a command for this config (with `--config` when it is not the
    /// default file): the text view's hints use it.
    pub command: String,
    /// `[agent] mode`.
    pub mode: String,
    /// Each watch asked about.
    pub watches: Vec<WatchReport>,
}

/// One watch in [`StatusReport`].
#[derive(Debug, Clone, Serialize)]
pub struct WatchReport {
    /// The agent's view: the running daemon's, or the state saved last.
    pub agent: AgentView,
    /// `ttl`, in seconds.
    pub configured_ttl: u64,
    /// The record as DNS answers it.
    pub dns: Option<Looked<DnsView>>,
    /// The DR cache.
    pub dr: CacheView,
    /// The last failover, from its journal.
    pub last_failover: Option<Looked<FailoverSummary>>,
    /// The watch.
    pub name: String,
    /// The primary cache.
    pub primary: CacheView,
    /// The record.
    pub record: String,
    /// The record as Route 53's API has it.
    pub route53: RecordView,
}

/// Something looked up, or why it could not be.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Looked<T> {
    /// Found.
    Found(T),
    /// Not found: why.
    Failed {
        /// Why, in one line.
        error: String,
    },
}

/// The record as Route 53's API has it.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RecordView {
    /// The CNAME.
    Found {
        /// Its value.
        target: Option<String>,
        /// Its TTL, in seconds.
        ttl: u32,
    },
    /// There is no CNAME.
    Missing {
        /// Always `no CNAME record`.
        error: String,
        /// Always `None`.
        target: Option<String>,
    },
    /// Route 53 did not answer.
    Failed {
        /// Why.
        error: String,
    },
}

/// The record as the dns path resolved it.
#[derive(Debug, Clone, Serialize)]
pub struct DnsView {
    /// The address connected to.
    pub address: Option<String>,
    /// `ok`, or the probe's failure.
    pub probe: String,
    /// The CNAME target.
    pub target: Option<String>,
    /// The TTL left, in seconds.
    pub ttl: Option<u64>,
}

/// A cache, as `DescribeServerlessCaches` sees it.
#[derive(Debug, Clone, Serialize)]
pub struct CacheView {
    /// Its name.
    pub cache: String,
    /// Its endpoint, `host:port` (`null` until it has one); left out when it is absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<Option<String>>,
    /// Why it could not be described.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Its region.
    pub region: String,
    /// Its status, or `absent`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The agent's view of a watch.
#[derive(Debug, Clone, Serialize)]
pub struct AgentView {
    /// The pause, when paused.
    pub pause: Option<PauseStatus>,
    /// Whether a daemon runs the watch.
    pub running: bool,
    /// Whether the DR cache serves it, as saved.
    pub served_by_dr: Option<bool>,
    /// Its policy state.
    pub state: Option<String>,
    /// The daemon's task for the watch, once it has ended unexpectedly: `restarting` while it
    /// is down (the watch is not probed then), `running` once started again. Left out when
    /// it never ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<TaskStatus>,
    /// `[watch.switch] kind = "health_check"`: the verdict the running agent publishes.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub switch: Option<SwitchStatus>,
}

/// `valkey-dr status` for `only` (every watch when `None`): the report, and 1 when some
/// part of it could not be read (0 otherwise).
pub async fn status(config: &Config, only: Option<&str>) -> (i32, StatusReport) {
    let agent = match running_agent(config).await {
        Some(agent) => agent.status(Duration::from_secs(5)).await.ok(),
        None => None,
    };
    let mut look = Looker::new(config).await;
    let mut watches = Vec::new();
    for w in &config.watches {
        if only.is_none_or(|n| n == w.name) {
            let running = agent.as_ref().and_then(|doc| doc.watch(&w.name));
            let mut report = look.watch(w, running).await;
            // A task that panicked before its first round has no entry, but a daemon runs it.
            if let Some(task) = agent.as_ref().and_then(|doc| doc.tasks.get(&w.name)) {
                report.agent.running = true;
                report.agent.task = Some(task.clone());
            }
            watches.push(report);
        }
    }
    let report = StatusReport {
        agent_id: config.agent.id.clone(),
        command: config.command_line("").trim_end().to_owned(),
        mode: config.agent.mode.as_str().to_owned(),
        watches,
    };
    (i32::from(look.failed), report)
}

/// The clients one `status` run shares across watches, and whether anything failed.
struct Looker<'c> {
    config: &'c Config,
    prober: Option<Prober>,
    dns: SdkDns,
    caches: BTreeMap<String, SdkCache>,
    failed: bool,
}

impl<'c> Looker<'c> {
    async fn new(config: &'c Config) -> Looker<'c> {
        let prober = Prober::new(&ResolverSettings {
            nameservers: config.dns.nameservers.clone(),
        })
        .ok();
        // One Route 53 client for every watch: the config holds one partition (see
        // `aws::route53_region`).
        let dns = SdkDns::new(
            &crate::aws::sdk_config(config, crate::aws::route53_region(&config.watches[0])).await,
        );
        Looker {
            config,
            prober,
            dns,
            caches: BTreeMap::new(),
            failed: false,
        }
    }

    async fn watch(&mut self, w: &WatchConfig, running: Option<&WatchStatus>) -> WatchReport {
        let route53 = self.record(w).await;
        let dns = self.resolved(w).await;
        let primary = self.cache(&w.primary.region, &w.primary.cache_name).await;
        let dr = self.cache(&w.dr.region, &w.dr.cache_name).await;
        let state_dir = &self.config.agent.state_dir;
        let saved = store::read_json::<WatchState>(&crate::layout::state_file(state_dir, &w.name))
            .ok()
            .flatten();
        let last_failover = match failover::load_journal(state_dir, &w.name) {
            Ok(j) => j.map(|j| Looked::Found(FailoverSummary::of(&j))),
            Err(e) => Some(Looked::Failed { error: chain(&e) }),
        };
        WatchReport {
            agent: agent_view(running, saved.as_ref()),
            configured_ttl: w.ttl.as_secs(),
            dns,
            dr,
            last_failover,
            name: w.name.clone(),
            primary,
            record: w.record.clone(),
            route53,
        }
    }

    async fn record(&mut self, w: &WatchConfig) -> RecordView {
        // A failover's Route 53 calls come first (`budget`).
        crate::budget::interactive("route53:ListResourceRecordSets").await;
        match self.dns.record(&w.hosted_zone_id, &w.record, "CNAME").await {
            Ok(Some(r)) => RecordView::Found {
                target: r.values.into_iter().next(),
                ttl: r.ttl,
            },
            Ok(None) => RecordView::Missing {
                error: "no CNAME record".to_owned(),
                target: None,
            },
            Err(e) => {
                self.failed = true;
                RecordView::Failed {
                    error: e.to_string(),
                }
            }
        }
    }

    async fn resolved(&mut self, w: &WatchConfig) -> Option<Looked<DnsView>> {
        let spec = match crate::spec::probe_spec(self.config, w).await {
            Ok(spec) => spec,
            Err(e) => {
                self.failed = true;
                return Some(Looked::Failed { error: chain(&e) });
            }
        };
        let Some(prober) = &self.prober else {
            return Some(Looked::Failed {
                error: "no resolver".to_owned(),
            });
        };
        let o = prober.round(&spec).await;
        let p = o.path(PathKind::Dns)?;
        Some(Looked::Found(DnsView {
            address: p.address.map(|a| a.to_string()),
            probe: p
                .error
                .as_ref()
                .map_or_else(|| "ok".to_owned(), |e| e.to_string()),
            target: p.target.clone(),
            ttl: p.ttl.map(|t| t.as_secs()),
        }))
    }

    /// `DescribeServerlessCaches` of `name` in `region`, with one client per region for the
    /// whole run (each SDK config resolves its own credentials).
    async fn cache(&mut self, region: &str, name: &str) -> CacheView {
        if !self.caches.contains_key(region) {
            let client = SdkCache::new(&crate::aws::sdk_config(self.config, region).await);
            self.caches.insert(region.to_owned(), client);
        }
        let mut view = CacheView {
            cache: name.to_owned(),
            endpoint: None,
            error: None,
            region: region.to_owned(),
            status: None,
        };
        match self.caches[region].describe(name).await {
            Ok(Some(info)) => {
                view.status = Some(cache_status(&info.status));
                view.endpoint = Some(info.endpoint.map(|(h, p)| format!("{h}:{p}")));
            }
            Ok(None) => view.status = Some("absent".to_owned()),
            Err(e) => {
                self.failed = true;
                view.error = Some(e.to_string());
            }
        }
        view
    }
}

/// A cache status as its JSON names it (`available`, `create-failed`, ...).
fn cache_status(status: &CacheStatus) -> String {
    match serde_json::to_value(status) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{status:?}"),
    }
}

/// The running daemon's view of the watch, or else the state saved last.
fn agent_view(running: Option<&WatchStatus>, saved: Option<&WatchState>) -> AgentView {
    AgentView {
        pause: match (running, saved) {
            (Some(a), _) => a.pause.clone(),
            (None, Some(s)) => PauseStatus::of(s),
            (None, None) => None,
        },
        running: running.is_some(),
        served_by_dr: saved.map(|s| s.served_by_dr),
        state: match (running, saved) {
            (Some(a), _) => Some(a.state.clone()),
            (None, Some(s)) => Some(s.state().as_str().to_owned()),
            (None, None) => None,
        },
        task: None,
        switch: running.and_then(|a| a.switch.clone()),
    }
}
