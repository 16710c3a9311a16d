//! The warm standby (`[watch.dr] standby = "warm"`): the DR cache built in advance, so that a
//! failover needs neither the DR region's control plane nor a build inside the RTO.
//!
//! - `valkey-dr standby create` builds it with the watch's full DR spec, tagged
//!   [`STANDBY_TAG`] (the watch), waits for `available` and proves it serves PING/SET/GET;
//!   `valkey-dr standby delete` removes it (only that cache, and never while the record
//!   points at it). The daemon never creates or deletes infrastructure by itself.
//! - The readiness pass (a control-plane read, in steady state) finds it with
//!   `DescribeServerlessCaches` and compares it with `[watch.dr]` (the `standby` check); where
//!   it serves is kept in [`Book`] and in `state_dir` ([`crate::layout::standby_file`]), so
//!   that a failover, even right after a restart in the middle of an outage, knows its
//!   endpoint without asking any API.
//! - The watch task probes it every round on the `standby` path, on a kept connection; a
//!   round in which it does not serve makes the `standby` check fail at once, without waiting
//!   for the next readiness pass.
//! - A failover whose last round saw it serve verifies it and switches: no `provision`, no
//!   `wait_available` (the executor, `Plan::standby`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::config::{Config, StandbyMode, WatchConfig};
use crate::executor::api::{ApiError, CacheApi, CacheInfo, CacheSpec, CacheStatus};
use crate::executor::{RECORD_TAG, STANDBY_TAG, WATCH_TAG, is_standby_of, wait};
use crate::layout;
use crate::store::{self, StoreError};

/// Where a watch's warm standby serves, as the last look that found it `available` said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Known {
    /// The cache (`[watch.dr] cache_name`).
    pub cache_name: String,
    /// The DR region.
    pub region: String,
    /// Its endpoint's address.
    pub endpoint: String,
    /// Its port.
    pub port: u16,
    /// When a Describe last found it so.
    pub seen_at: SystemTime,
}

/// What the `standby` path saw in a watch's last rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Served {
    /// Rounds in a row in which it failed; 0 when the last one served.
    pub failures: u32,
    /// The last failure, as one line.
    pub error: Option<String>,
}

/// Every watch's warm standby, shared by the readiness pass (which finds it), the watch tasks
/// (which probe it and fail over to it) and readiness (which hears when a probe fails).
#[derive(Debug, Default)]
pub struct Book {
    state_dir: PathBuf,
    known: Mutex<BTreeMap<String, Known>>,
    served: Mutex<BTreeMap<String, Served>>,
    /// Wakes readiness when a standby starts or stops serving.
    pub changed: Notify,
}

impl Book {
    /// The book of `config`'s warm watches, from what `state_dir` kept.
    pub fn load(config: &Config) -> Arc<Self> {
        let state_dir = config.agent.state_dir.clone();
        let known = config
            .watches
            .iter()
            .filter(|w| w.dr.standby == StandbyMode::Warm)
            .filter_map(|w| Some((w.name.clone(), read(&state_dir, &w.name)?)))
            .filter(|(_, k)| !k.endpoint.is_empty())
            .collect();
        Arc::new(Book {
            state_dir,
            known: Mutex::new(known),
            ..Book::default()
        })
    }

    /// Where `watch`'s standby serves, if known.
    pub fn known(&self, watch: &str) -> Option<Known> {
        lock(&self.known).get(watch).cloned()
    }

    /// A readiness pass found `watch`'s standby at `found` (or found none): remembered, and
    /// kept in `state_dir` when it changed.
    pub fn found(&self, watch: &str, found: Option<Known>) {
        let mut known = lock(&self.known);
        let before = known.get(watch).map(|k| (&k.endpoint, k.port));
        if before == found.as_ref().map(|k| (&k.endpoint, k.port)) {
            if let (Some(k), Some(f)) = (known.get_mut(watch), found) {
                k.seen_at = f.seen_at;
            }
            return;
        }
        let path = layout::standby_file(&self.state_dir, watch);
        let saved = match &found {
            Some(k) => store::write_json(&path, k),
            None => std::fs::remove_file(&path)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|source| StoreError::Io {
                    action: "remove",
                    path,
                    source,
                }),
        };
        if let Err(e) = saved {
            tracing::error!(watch, error = %crate::text::chain(&e), "cannot keep where the warm standby serves; a restart during an outage would build on demand");
        }
        match found {
            Some(k) => known.insert(watch.to_owned(), k),
            None => known.remove(watch),
        };
        drop(known);
        self.changed.notify_one();
    }

    /// The `standby` path's result of one round of `watch`.
    pub fn probed(&self, watch: &str, error: Option<String>) {
        let mut served = lock(&self.served);
        let entry = served.entry(watch.to_owned()).or_default();
        let was_serving = entry.failures == 0;
        match error {
            None => *entry = Served::default(),
            Some(e) => {
                entry.failures = entry.failures.saturating_add(1);
                entry.error = Some(e);
            }
        }
        let now_serving = entry.failures == 0;
        drop(served);
        if was_serving != now_serving {
            self.changed.notify_one();
        }
    }

    /// The `standby` path was not probed this round (the standby is not known yet, or it is
    /// the active cache): what it saw before no longer says anything.
    pub fn not_probed(&self, watch: &str) {
        let removed = lock(&self.served).remove(watch);
        if removed.is_some_and(|s| s.failures > 0) {
            self.changed.notify_one();
        }
    }

    /// What the `standby` path saw last; `None` before its first round.
    pub fn served(&self, watch: &str) -> Option<Served> {
        lock(&self.served).get(watch).cloned()
    }

    /// The standby a failover of `watch` may switch to now: known, and serving in the last
    /// round.
    pub fn ready(&self, watch: &str) -> Option<Known> {
        let serving = self.served(watch).is_some_and(|s| s.failures == 0);
        serving.then(|| self.known(watch)).flatten()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What `state_dir` kept of `watch`'s standby; an unreadable file counts as none (the next
/// readiness pass finds it again).
pub fn read(state_dir: &Path, watch: &str) -> Option<Known> {
    let path = layout::standby_file(state_dir, watch);
    match store::read_json::<Known>(&path) {
        Ok(known) => known,
        Err(e) => {
            tracing::warn!(watch, error = %crate::text::chain(&e), "ignoring what was kept of the warm standby; the next readiness pass finds it again");
            None
        }
    }
}

/// The `CreateServerlessCache` request of `w`'s standby: the full DR spec, tagged as the
/// watch's standby.
pub fn cache_spec(w: &WatchConfig) -> CacheSpec {
    CacheSpec {
        region: w.dr.region.clone(),
        input: crate::plan::create_request(
            w,
            &w.dr.cache_name,
            Some(format!(
                "valkey-dr warm standby of watch {} ({})",
                w.name, w.record
            )),
            &[
                (STANDBY_TAG, &w.name),
                (WATCH_TAG, &w.name),
                (RECORD_TAG, &w.record),
            ],
        ),
    }
}

/// Why `standby create` or `standby delete` did nothing, or stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandbyError {
    /// The watch builds on demand.
    #[error(
        "watch {watch} has [watch.dr] standby = \"none\": set standby = \"warm\" first, so that the daemon probes the standby and fails over to it"
    )]
    NotWarm {
        /// The watch.
        watch: String,
    },
    /// A cache of the name exists and is not the watch's standby.
    #[error(
        "{name} in {region} exists and is not watch {watch}'s standby (tags: {tags}); left alone"
    )]
    Foreign {
        /// The cache.
        name: String,
        /// The DR region.
        region: String,
        /// The watch.
        watch: String,
        /// Its valkey-dr tags.
        tags: String,
    },
    /// The standby serves the record: deleting it would take the watch's cache away.
    #[error("{name} serves the record {record} since failover {failover_id}: fail back first")]
    Serving {
        /// The cache.
        name: String,
        /// The record.
        record: String,
        /// The failover that switched to it.
        failover_id: String,
    },
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The build or the delete did not finish in time, or the cache does not serve.
    #[error("{0}")]
    Step(String),
    /// The probe cannot be set up.
    #[error("{0}")]
    Setup(String),
}

impl StandbyError {
    /// The exit code: 2 for what the config or the account must fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            StandbyError::NotWarm { .. } | StandbyError::Foreign { .. } => 2,
            StandbyError::Api(e) if !e.is_transient() => 2,
            _ => 1,
        }
    }
}

/// How `standby create` and `delete` wait: the drill's bounds.
fn limits() -> crate::drill::DrillLimits {
    crate::drill::DrillLimits::default()
}

/// Transient errors are asked again until `deadline`.
pub(crate) async fn patiently<T, F, Fut>(
    deadline: tokio::time::Instant,
    mut call: F,
) -> Result<T, ApiError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ApiError>>,
{
    let limits = limits();
    let mut pause = limits.backoff;
    loop {
        match call().await {
            Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < deadline => {
                tracing::warn!(error = %e, "retrying in {}", crate::text::duration(pause));
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(limits.max_backoff);
            }
            other => return other,
        }
    }
}

/// `Ok` when `tags` (of the cache named `[watch.dr] cache_name`) mark `w`'s standby.
fn standby_of(w: &WatchConfig, tags: &BTreeMap<String, String>) -> Result<(), StandbyError> {
    if is_standby_of(tags, &w.name, &w.record) {
        Ok(())
    } else {
        Err(StandbyError::Foreign {
            name: w.dr.cache_name.clone(),
            region: w.dr.region.clone(),
            watch: w.name.clone(),
            tags: ours(tags),
        })
    }
}

/// The valkey-dr tags of `tags`, for messages.
pub(crate) fn ours(tags: &BTreeMap<String, String>) -> String {
    let shown: Vec<String> = tags
        .iter()
        .filter(|(k, _)| k.starts_with("valkey-dr:"))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if shown.is_empty() {
        "none of valkey-dr's".to_owned()
    } else {
        shown.join(", ")
    }
}

/// Builds `w`'s standby (or finds the one already built), waits until it is `available` and
/// proves it serves; where it serves is kept in `state_dir`. Bounded by `create_timeout`.
pub async fn create<C: CacheApi, V: crate::executor::Verifier>(
    cache: &C,
    verifier: &V,
    config: &Config,
    w: &WatchConfig,
) -> Result<String, StandbyError> {
    if w.dr.standby != StandbyMode::Warm {
        return Err(StandbyError::NotWarm {
            watch: w.name.clone(),
        });
    }
    let started = tokio::time::Instant::now();
    let deadline = started + w.dr.create_timeout;
    let spec = cache_spec(w);
    let name = spec.name().to_owned();
    let limits = limits();
    let existing = patiently(deadline, || cache.describe(&name)).await?;
    let built = match existing {
        Some(_) => "already built".to_owned(),
        None => match patiently(deadline, || cache.create(&spec)).await {
            Ok(info) => format!("created ({})", info.status.as_str()),
            // An earlier attempt whose answer was lost, or a race: the tags decide below.
            Err(ApiError::AlreadyExists { .. }) => "already built".to_owned(),
            Err(e) => return Err(e.into()),
        },
    };
    let (found, tags) = wait::settled_tags(cache, &name, deadline, limits.polling())
        .await?
        .ok_or_else(|| {
            StandbyError::Step(format!(
                "{name} was created, yet DescribeServerlessCaches does not find it"
            ))
        })?;
    standby_of(w, &tags)?;
    let (host, port) = match found {
        CacheInfo {
            status: CacheStatus::Available,
            endpoint: Some(endpoint),
            ..
        } => endpoint,
        _ => wait::until_available(cache, &name, deadline, Duration::ZERO, limits.polling())
            .await
            .map_err(|e| StandbyError::Step(format!("{e} (create_timeout)")))?,
    };
    crate::drill::verify_direct(verifier, &host, port, &limits)
        .await
        .map_err(|e| StandbyError::Step(format!("{name} does not serve: {e}")))?;
    let known = Known {
        cache_name: name.clone(),
        region: w.dr.region.clone(),
        endpoint: host.clone(),
        port,
        seen_at: SystemTime::now(),
    };
    let path = layout::standby_file(&config.agent.state_dir, &w.name);
    if let Err(e) = store::write_json(&path, &known) {
        tracing::warn!(error = %crate::text::chain(&e), "where the standby serves is not kept; the daemon's next readiness pass finds it");
    }
    Ok(format!(
        "the warm standby {name} in {} is available at {host}:{port} and serves PING/SET/GET ({built}; {})",
        w.dr.region,
        crate::text::seconds(started.elapsed())
    ))
}

/// Deletes `w`'s standby: only a cache tagged as its standby, and never while the record
/// points at it (the watch's last failover switched to it and no failback followed).
pub async fn delete<C: CacheApi>(
    cache: &C,
    config: &Config,
    w: &WatchConfig,
) -> Result<String, StandbyError> {
    let name = w.dr.cache_name.clone();
    let deadline = tokio::time::Instant::now() + w.dr.create_timeout;
    let limits = limits();
    let Some(found) = patiently(deadline, || cache.describe(&name)).await? else {
        forget(config, w);
        return Ok(format!(
            "{name} in {} does not exist: nothing to delete",
            w.dr.region
        ));
    };
    let tags = patiently(deadline, || cache.tags(&found.arn)).await?;
    standby_of(w, &tags)?;
    if let Some((failover_id, endpoint)) = serving_since(config, w)
        && found
            .endpoint
            .as_ref()
            .is_some_and(|(h, _)| valkey_dr_probes::same_name(h, &endpoint))
    {
        return Err(StandbyError::Serving {
            name,
            record: w.record.clone(),
            failover_id,
        });
    }
    let done = crate::drill::delete(cache, &name, w.dr.create_timeout, &limits)
        .await
        .map_err(|e| StandbyError::Step(e.to_string()))?;
    forget(config, w);
    Ok(format!("the warm standby: {done}"))
}

/// The failover (and the endpoint it switched to) that the watch's journal says the record
/// points at, when no failback followed it.
fn serving_since(config: &Config, w: &WatchConfig) -> Option<(String, String)> {
    let state_dir = &config.agent.state_dir;
    let journal = crate::failover::load_journal(state_dir, &w.name)
        .ok()
        .flatten()?;
    let (endpoint, _) = journal.completed_endpoint()?;
    let state =
        store::read_json::<valkey_dr_policies::WatchState>(&layout::state_file(state_dir, &w.name))
            .ok()
            .flatten();
    // No saved state: the record may well still point at it; refusing is the safe side.
    let served = state.is_none_or(|s| s.served_by_dr);
    served.then(|| (journal.plan.failover_id.clone(), endpoint))
}

fn forget(config: &Config, w: &WatchConfig) {
    let path = layout::standby_file(&config.agent.state_dir, &w.name);
    let _ = std::fs::remove_file(path);
}

/// [`create`] against AWS: the DR region's ElastiCache, and the watch's own probe aimed at
/// the standby (for IAM auth, with tokens for the standby).
pub async fn create_in_aws(config: &Config, w: &WatchConfig) -> Result<String, StandbyError> {
    if w.dr.standby != StandbyMode::Warm {
        return Err(StandbyError::NotWarm {
            watch: w.name.clone(),
        });
    }
    let verifier = crate::drill::verifier(config, w, &w.dr.cache_name)
        .await
        .map_err(|e| StandbyError::Setup(crate::text::chain(&e)))?;
    let cache = dr_cache(config, w).await;
    create(&cache, &verifier, config, w).await
}

/// [`delete`] against AWS.
pub async fn delete_in_aws(config: &Config, w: &WatchConfig) -> Result<String, StandbyError> {
    delete(&dr_cache(config, w).await, config, w).await
}

async fn dr_cache(config: &Config, w: &WatchConfig) -> crate::executor::sdk::SdkCache {
    crate::executor::sdk::SdkCache::new(&crate::aws::sdk_config(config, &w.dr.region).await)
}
