//! The witness: proof that the agent itself can reach the outside before it judges a cache
//! dead. An agent on a host that lost its network sees every cache fail; without a witness it
//! would fail over a healthy region.

use std::time::Duration;

use aws_sdk_elasticache::Client;
use tokio::net::TcpStream;
use tokio::sync::OnceCell;
use valkey_dr_policies::Witness as Verdict;

use crate::config::{Config, WitnessConfig};

/// One watch's witness. AWS clients are built on first use: most rounds never need one.
pub struct Witness {
    kind: WitnessConfig,
    region: String,
    config: Config,
    client: OnceCell<Client>,
}

impl Witness {
    /// The witness configured for watch `index` of `config`.
    pub fn new(config: &Config, index: usize) -> Self {
        let watch = &config.watches[index];
        Witness {
            kind: watch.witness.clone(),
            region: watch.dr.region.clone(),
            config: config.clone(),
            client: OnceCell::new(),
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
                        humantime::format_duration(*timeout)
                    )),
                }
            }
            WitnessConfig::Aws { timeout } => self.aws(*timeout).await,
        }
    }

    async fn aws(&self, timeout: Duration) -> Verdict {
        let client = self
            .client
            .get_or_init(|| async {
                Client::new(&crate::aws::sdk_config(&self.config, &self.region).await)
            })
            .await;
        let call = client.describe_serverless_caches().max_results(1).send();
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Verdict::Ok,
            Ok(Err(e)) => Verdict::Failed(format!(
                "DescribeServerlessCaches in {}: {}",
                self.region,
                aws_sdk_elasticache::error::DisplayErrorContext(&e)
            )),
            Err(_) => Verdict::Failed(format!(
                "DescribeServerlessCaches in {}: no answer within {}",
                self.region,
                humantime::format_duration(timeout)
            )),
        }
    }
}
