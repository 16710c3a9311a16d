//! Waiting for a serverless cache, shared by the executor and the drill: the same AWS
//! behaviours apply to both (tests/FIDELITY.md), so they are handled in one place.
//!
//! - Right after `CreateServerlessCache`, `DescribeServerlessCaches` by name may answer
//!   `ServerlessCacheNotFoundFault` for a few seconds (eventual consistency): "not found" is
//!   "not visible yet" for a grace period, and only after it "gone".
//! - `ListTagsForResource` refuses a cache that is `creating` or `deleting`
//!   (`InvalidServerlessCacheStateFault`): whose a cache is can only be read once it settles.
//! - A transient Describe error is one more poll without news, never a reason to give up.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use super::api::{ApiError, CacheApi, CacheInfo, CacheStatus};

/// How a wait for `available` ended without one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The build failed; the cache will never serve.
    #[error("{name} reached create-failed")]
    CreateFailed {
        /// The cache.
        name: String,
    },
    /// Someone is deleting it.
    #[error("{name} is being deleted by someone else")]
    Deleting {
        /// The cache.
        name: String,
    },
    /// Describe still finds no such cache after the grace period.
    #[error("{name} no longer exists (not found for {})", crate::text::duration(*.after))]
    Vanished {
        /// The cache.
        name: String,
        /// How long it was not found.
        after: Duration,
    },
    /// The bound passed first.
    #[error("{name} still not available after {}; last: {last}", crate::text::duration(*.waited))]
    Timeout {
        /// The cache.
        name: String,
        /// How long we waited.
        waited: Duration,
        /// What the last poll saw.
        last: String,
    },
    /// A call failed in a way waiting cannot mend (permissions, a malformed request).
    #[error(transparent)]
    Api(#[from] ApiError),
}

/// How to poll.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    /// The first pause between polls.
    pub every: Duration,
    /// The longest pause: pauses double from `every` up to it.
    pub max: Duration,
    /// How long "not found" counts as "not visible yet".
    pub not_found_grace: Duration,
}

/// Polls `name` until it is `available` with an endpoint, bounded by `deadline`.
/// `waited_before` is how long an earlier run already waited (a resumed failover), counted
/// against the grace period and in the timeout's message.
pub async fn until_available<C: CacheApi>(
    cache: &C,
    name: &str,
    deadline: Instant,
    waited_before: Duration,
    polling: Polling,
) -> Result<(String, u16), WaitError> {
    let started_at = Instant::now();
    let waited = || waited_before + started_at.elapsed();
    let mut delay = polling.every;
    let mut not_found_since: Option<Duration> = None;
    loop {
        let last = match cache.describe(name).await {
            Ok(Some(info)) => {
                not_found_since = None;
                match (&info.status, info.endpoint) {
                    (CacheStatus::Available, Some(endpoint)) => return Ok(endpoint),
                    (CacheStatus::CreateFailed, _) => {
                        return Err(WaitError::CreateFailed { name: name.into() });
                    }
                    (CacheStatus::Deleting, _) => {
                        return Err(WaitError::Deleting { name: name.into() });
                    }
                    (status, _) => format!("status {}", status.as_str()),
                }
            }
            Ok(None) => {
                let since = *not_found_since.get_or_insert_with(&waited);
                let after = waited().saturating_sub(since);
                if after >= polling.not_found_grace {
                    return Err(WaitError::Vanished {
                        name: name.into(),
                        after,
                    });
                }
                "not found yet (DescribeServerlessCaches is eventually consistent)".into()
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(cache = name, error = %e, "describe failed; still waiting");
                e.to_string()
            }
            Err(e) => return Err(e.into()),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError::Timeout {
                name: name.into(),
                waited: waited(),
                last,
            });
        }
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(polling.max);
    }
}

/// The cache `name` and its tags, waiting (bounded by `deadline`) while it is in a state that
/// refuses `ListTagsForResource`, and through transient errors. `None` when Describe has not
/// found it for the whole grace period (a cache just created may not show at first).
pub async fn settled_tags<C: CacheApi>(
    cache: &C,
    name: &str,
    deadline: Instant,
    polling: Polling,
) -> Result<Option<(CacheInfo, BTreeMap<String, String>)>, ApiError> {
    let started = Instant::now();
    let mut delay = polling.every;
    loop {
        let last = match cache.describe(name).await {
            Ok(Some(info)) => match cache.tags(&info.arn).await {
                Ok(tags) => return Ok(Some((info, tags))),
                Err(e @ (ApiError::NotReady { .. } | ApiError::Transient { .. })) => e,
                Err(e) => return Err(e),
            },
            Ok(None) if started.elapsed() >= polling.not_found_grace => return Ok(None),
            Ok(None) => ApiError::Transient {
                call: "elasticache:DescribeServerlessCaches".into(),
                message: format!("{name} not found yet (eventual consistency)"),
            },
            Err(e) if e.is_transient() => e,
            Err(e) => return Err(e),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(match last {
                ApiError::Transient { call, message } | ApiError::NotReady { call, message } => {
                    ApiError::Permanent {
                        call,
                        message: format!("{message}; gave up waiting for {name} to settle"),
                    }
                }
                other => other,
            });
        }
        tracing::info!(cache = name, reason = %last, "waiting to read the cache's tags");
        tokio::time::sleep(delay.min(deadline - now)).await;
        delay = (delay * 2).min(polling.max);
    }
}
