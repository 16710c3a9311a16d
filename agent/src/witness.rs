//! The witness: proof that the agent itself can reach the outside before it judges a cache
//! dead. An agent on a host that lost its network sees every cache fail; without a witness it
//! would fail over a healthy region.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use valkey_dr_policies::Witness as Verdict;

use crate::config::{Config, WitnessConfig};
use crate::executor::api::ApiError;
use crate::executor::sdk::SdkCache;

/// One watch's witness.
pub struct Witness {
    kind: WitnessConfig,
    region: String,
    aws: Arc<AwsWitnesses>,
}

impl Witness {
    /// The witness configured for watch `index` of `config`; AWS checks go through `aws`,
    /// which every watch of the agent shares.
    pub fn new(config: &Config, index: usize, aws: Arc<AwsWitnesses>) -> Self {
        let watch = &config.watches[index];
        Witness {
            kind: watch.witness.clone(),
            region: watch.dr.region.clone(),
            aws,
        }
    }

    /// Checks the witness now, bounded by its timeout.
    pub async fn check(&self) -> Verdict {
        match &self.kind {
            WitnessConfig::None => Verdict::NotConfigured,
            WitnessConfig::Tcp { address, timeout } => {
                match tokio::time::timeout(*timeout, TcpStream::connect(address)).await {
                    Ok(Ok(_)) => Verdict::Ok,
                    Ok(Err(e)) => Verdict::Failed(format!("tcp witness {address}: {e}")),
                    Err(_) => Verdict::Failed(format!(
                        "tcp witness {address}: no connection within {}",
                        crate::text::duration(*timeout)
                    )),
                }
            }
            WitnessConfig::Aws { timeout } => self.aws.check(&self.region, *timeout).await,
        }
    }
}

/// The witness's page size: the smallest `MaxResults` that `DescribeServerlessCaches` accepts.
/// AWS refuses anything outside 20-100 ("Invalid value for max records. Must be between 20 and
/// 100", tests/FIDELITY.md) although the API reference documents no range; a page of 1 made
/// every witness call fail on AWS, so every failing round read as `isolated`.
pub const WITNESS_PAGE: i32 = 20;

/// The AWS witness (`DescribeServerlessCaches` in a watch's DR region), shared by every watch:
/// one client per region, one call in flight per region, and a verdict reused for
/// `fresh_for`. In an outage every watch fails at once; without this, 100 watches would make
/// 100 calls a round and could throttle the agent into `isolated` by themselves.
pub struct AwsWitnesses {
    config: Config,
    fresh_for: Duration,
    regions: std::sync::Mutex<BTreeMap<String, Arc<RegionWitness>>>,
}

#[derive(Default)]
struct RegionWitness {
    client: OnceCell<SdkCache>,
    /// Held while a call is in flight; waiters then read the fresh verdict.
    last: tokio::sync::Mutex<Option<(Instant, Verdict)>>,
}

impl AwsWitnesses {
    /// Verdicts are reused for `fresh_for` (the shortest probe interval is a good choice: a
    /// round never sees a verdict older than one round).
    pub fn new(config: &Config, fresh_for: Duration) -> Self {
        AwsWitnesses {
            config: config.clone(),
            fresh_for,
            regions: std::sync::Mutex::new(BTreeMap::new()),
        }
    }

    async fn check(&self, region: &str, timeout: Duration) -> Verdict {
        let entry = {
            let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
            regions.entry(region.to_owned()).or_default().clone()
        };
        let mut last = entry.last.lock().await;
        if let Some((at, verdict)) = &*last
            && at.elapsed() < self.fresh_for
        {
            return verdict.clone();
        }
        let client = entry
            .client
            .get_or_init(|| async {
                SdkCache::new(&crate::aws::single_attempt(
                    &crate::aws::sdk_config(&self.config, region).await,
                ))
            })
            .await;
        let verdict = match tokio::time::timeout(timeout, client.answers(WITNESS_PAGE)).await {
            Ok(Ok(())) => Verdict::Ok,
            // Refused credentials or permissions prove nothing about the agent's network:
            // a configuration error, never isolation (the engine says so once, and blocks a
            // failover that could not succeed).
            Ok(Err(e @ ApiError::Denied { .. })) => Verdict::Denied(e.to_string()),
            Ok(Err(e)) => Verdict::Failed(e.to_string()),
            Err(_) => Verdict::Failed(format!(
                "DescribeServerlessCaches in {region}: no answer within {}",
                crate::text::duration(timeout)
            )),
        };
        *last = Some((Instant::now(), verdict.clone()));
        verdict
    }
}
