//! `valkey-dr dr-cache delete`: removes a cache of a watch's DR name that no failover can
//! use, the leftovers readiness calls `fail` (the `dr_name` check):
//!
//! - a `create-failed` build: it serves nothing and holds nothing, and AWS refuses its tags
//!   (tests/FIDELITY.md, E3), so no tag can be checked; its name is the watch's own DR name;
//! - an `available` cache an earlier failover built (tagged `valkey-dr:failover-id`) that the
//!   record does not point at: left by a failback or abort without `--delete-dr`, or by a
//!   lost journal.
//!
//! It refuses a cache that valkey-dr did not build, the watch's warm standby (`standby
//! delete` is for that), a cache still `creating` (a failover may be building it), and one
//! the record points at. Whether the record points at it is read from Route 53 itself, not
//! from the journal, which may be the very thing that was lost. Nothing here runs in the
//! daemon: it never deletes a cache by itself.

use std::collections::BTreeMap;

use valkey_dr_probes::same_name;

use crate::config::{Config, WatchConfig};
use crate::executor::api::{ApiError, CacheApi, CacheStatus, DnsApi};
use crate::executor::{FAILOVER_TAG, WATCH_TAG, is_standby_of};

/// Why `dr-cache delete` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum DrCacheError {
    /// The cache is still being built: a failover may be building it.
    #[error(
        "{name} in {region} is creating: a failover may be building it; run this again once it is available or create-failed"
    )]
    Creating {
        /// The cache.
        name: String,
        /// The DR region.
        region: String,
    },
    /// The cache is not one valkey-dr built for this watch.
    #[error(
        "{name} in {region} was not built by a failover of watch {watch} (tags: {tags}); left alone: delete it by hand if it is not needed, or set adopt_existing = true to use it"
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
    /// The cache is the watch's warm standby.
    #[error(
        "{name} is watch {watch}'s warm standby: `valkey-dr standby delete --watch {watch}` removes it"
    )]
    Standby {
        /// The cache.
        name: String,
        /// The watch.
        watch: String,
    },
    /// The record points at the cache.
    #[error("the record {record} points at {name} ({endpoint}): fail back first")]
    Serving {
        /// The cache.
        name: String,
        /// The record.
        record: String,
        /// The cache's endpoint.
        endpoint: String,
    },
    /// An API call failed.
    #[error("{0}")]
    Api(#[from] ApiError),
    /// The delete did not finish in time.
    #[error("{0}")]
    Step(String),
}

impl DrCacheError {
    /// The exit code: 2 for what a person must look at, 1 for what may pass.
    pub fn exit_code(&self) -> i32 {
        match self {
            DrCacheError::Api(e) if e.is_transient() => 1,
            DrCacheError::Step(_) | DrCacheError::Creating { .. } => 1,
            _ => 2,
        }
    }
}

/// Deletes the leftover cache of `w`'s DR name (see the module doc), reading the record
/// through `dns` when the cache serves an endpoint.
pub async fn delete<C: CacheApi, D: DnsApi>(
    cache: &C,
    dns: &D,
    w: &WatchConfig,
) -> Result<String, DrCacheError> {
    let name = w.dr.cache_name.clone();
    let region = w.dr.region.clone();
    let deadline = tokio::time::Instant::now() + w.dr.create_timeout;
    let Some(found) = crate::standby::patiently(deadline, || cache.describe(&name)).await? else {
        return Ok(format!(
            "{name} in {region} does not exist: nothing to delete"
        ));
    };
    let why = match &found.status {
        CacheStatus::Deleting => {
            return Ok(format!(
                "{name} in {region} is already being deleted: a failover can build it again once it is gone"
            ));
        }
        CacheStatus::Creating => return Err(DrCacheError::Creating { name, region }),
        CacheStatus::CreateFailed => {
            "a failed build: it serves nothing and holds nothing (AWS refuses the tags of a create-failed cache)".to_owned()
        }
        _ => {
            let tags = crate::standby::patiently(deadline, || cache.tags(&found.arn)).await?;
            built_by(w, &tags)?
        }
    };
    if let Some((host, _)) = &found.endpoint {
        let fqdn = format!("{}.", w.record.trim_end_matches('.'));
        let record =
            crate::standby::patiently(deadline, || dns.record(&w.hosted_zone_id, &fqdn, "CNAME"))
                .await?;
        if record
            .iter()
            .flat_map(|r| &r.values)
            .any(|v| same_name(v, host))
        {
            return Err(DrCacheError::Serving {
                name,
                record: w.record.clone(),
                endpoint: host.clone(),
            });
        }
    }
    let limits = crate::drill::DrillLimits::default();
    let done = crate::drill::delete(cache, &name, w.dr.create_timeout, &limits)
        .await
        .map_err(|e| DrCacheError::Step(e.to_string()))?;
    Ok(format!("{done} ({why}); a failover can build it again"))
}

/// Which failover of `w` built the cache with `tags`, or why it is not one to delete.
fn built_by(w: &WatchConfig, tags: &BTreeMap<String, String>) -> Result<String, DrCacheError> {
    if is_standby_of(tags, &w.name, &w.record) {
        return Err(DrCacheError::Standby {
            name: w.dr.cache_name.clone(),
            watch: w.name.clone(),
        });
    }
    match (tags.get(FAILOVER_TAG), tags.get(WATCH_TAG)) {
        (Some(id), watch) if watch.is_none_or(|x| *x == w.name) => {
            Ok(format!("built by failover {id}, not serving the record"))
        }
        _ => Err(DrCacheError::Foreign {
            name: w.dr.cache_name.clone(),
            region: w.dr.region.clone(),
            watch: w.name.clone(),
            tags: crate::standby::ours(tags),
        }),
    }
}

/// [`delete`] against AWS: the DR region's ElastiCache and the watch's Route 53.
pub async fn delete_in_aws(config: &Config, w: &WatchConfig) -> Result<String, DrCacheError> {
    let cache =
        crate::executor::sdk::SdkCache::new(&crate::aws::sdk_config(config, &w.dr.region).await);
    let dns = crate::executor::sdk::SdkDns::new(
        &crate::aws::sdk_config(config, crate::aws::route53_region(w)).await,
    );
    delete(&cache, &dns, w).await
}
