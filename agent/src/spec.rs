//! The probes of each watch, built from the config once: the endpoint (from the config, or
//! looked up), TLS settings shared by the watches that share them, and the authentication
//! for the primary cache or the DR cache. `check`, the daemon, the executor's verifier and
//! the drill all probe through these.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use valkey_dr_probes::{Auth, IamTokenSource, ProbeSpec, TlsSettings};

use crate::config::{Config, Credential, WatchConfig};

/// Why the probes could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `--watch` named no configured watch.
    #[error("{0}")]
    UnknownWatch(String),
    /// A watch's probe settings could not be turned into a probe (CA file, credentials, ...).
    #[error("watch {watch}: {message}")]
    Setup {
        /// The watch.
        watch: String,
        /// What failed.
        message: String,
    },
    /// The resolver could not be built.
    #[error("cannot set up the DNS resolver")]
    Resolver(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Builds the probes for the selected watches. Done once; the daemon reuses them every round.
pub async fn probe_specs(config: &Config, only: Option<&str>) -> Result<Vec<ProbeSpec>, SpecError> {
    let watches: Vec<&WatchConfig> = match only {
        Some(name) => vec![config.watch(name).map_err(SpecError::UnknownWatch)?],
        None => config.watches.iter().collect(),
    };
    let mut specs = Vec::with_capacity(watches.len());
    let mut tls = TlsConfigs::default();
    for w in watches {
        specs.push(probe_spec_with(config, w, &mut tls).await?);
    }
    Ok(specs)
}

/// TLS client configs by (`ca_file`, `insecure_skip_verify`). Watches that share them share
/// one config: the system root store is parsed once, not once per watch (100 watches would
/// otherwise hold 100 copies of it).
type TlsConfigs = HashMap<(Option<PathBuf>, bool), Arc<rustls::ClientConfig>>;

/// The probe for one watch.
pub async fn probe_spec(config: &Config, w: &WatchConfig) -> Result<ProbeSpec, SpecError> {
    probe_spec_with(config, w, &mut TlsConfigs::default()).await
}

/// Why `watch.primary.endpoint` could not be looked up; each says what to set.
#[derive(Debug, thiserror::Error)]
enum PrimaryEndpointError {
    /// The cache has no endpoint yet (it is being created, say).
    #[error(
        "watch.primary.endpoint is not set and {cache} in {region} has no endpoint yet (status {status:?}); set watch.primary.endpoint"
    )]
    NoEndpoint {
        /// The primary cache.
        cache: String,
        /// Its region.
        region: String,
        /// What `DescribeServerlessCaches` said of it.
        status: crate::executor::api::CacheStatus,
    },
    /// No serverless cache of that name in that region.
    #[error(
        "watch.primary.endpoint is not set and there is no serverless cache {cache} in {region}; set watch.primary.endpoint or fix watch.primary.cache_name"
    )]
    NoCache {
        /// The primary cache.
        cache: String,
        /// Its region.
        region: String,
    },
    /// `DescribeServerlessCaches` failed. The advice follows the error, so it is part of the
    /// message and not a `source`.
    #[error(
        "watch.primary.endpoint is not set and looking it up failed: {error}; set watch.primary.endpoint to the cache's endpoint"
    )]
    Lookup {
        /// The call's error.
        error: crate::executor::api::ApiError,
    },
    /// `DescribeServerlessCaches` did not answer in time.
    #[error(
        "watch.primary.endpoint is not set and DescribeServerlessCaches in {region} did not answer within 20s; set watch.primary.endpoint"
    )]
    TimedOut {
        /// The primary region.
        region: String,
    },
}

/// `watch.primary.endpoint` when the config leaves it out: `DescribeServerlessCaches` of the
/// primary cache in the primary region, bounded. It needs the primary region's API, so an
/// agent that must start during that region's outage needs the endpoint in its config.
async fn primary_endpoint(
    config: &Config,
    w: &WatchConfig,
) -> Result<String, PrimaryEndpointError> {
    use crate::executor::api::CacheApi as _;
    let cache = crate::executor::sdk::SdkCache::new(
        &crate::aws::sdk_config(config, &w.primary.region).await,
    );
    let lookup = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        cache.describe(&w.primary.cache_name),
    );
    let (name, region) = (w.primary.cache_name.clone(), w.primary.region.clone());
    match lookup.await {
        Ok(Ok(Some(info))) => {
            info.endpoint
                .map(|(host, _)| host)
                .ok_or(PrimaryEndpointError::NoEndpoint {
                    cache: name,
                    region,
                    status: info.status,
                })
        }
        Ok(Ok(None)) => Err(PrimaryEndpointError::NoCache {
            cache: name,
            region,
        }),
        Ok(Err(error)) => Err(PrimaryEndpointError::Lookup { error }),
        Err(_) => Err(PrimaryEndpointError::TimedOut { region }),
    }
}

async fn probe_spec_with(
    config: &Config,
    w: &WatchConfig,
    tls_configs: &mut TlsConfigs,
) -> Result<ProbeSpec, SpecError> {
    let setup = |message: String| SpecError::Setup {
        watch: w.name.clone(),
        message,
    };
    let endpoint = match &w.primary.endpoint {
        Some(endpoint) => endpoint.clone(),
        None => primary_endpoint(config, w)
            .await
            .map_err(|e| setup(e.to_string()))?,
    };
    let tls = if w.probe.tls {
        let key = (w.probe.ca_file.clone(), w.probe.insecure_skip_verify);
        let client_config = match tls_configs.get(&key) {
            Some(c) => c.clone(),
            None => {
                let c = valkey_dr_probes::client_config(
                    w.probe.ca_file.as_deref(),
                    w.probe.insecure_skip_verify,
                )
                .map_err(|e| setup(crate::text::chain(&e)))?;
                tls_configs.insert(key, c.clone());
                c
            }
        };
        Some(TlsSettings {
            client_config,
            server_name: w.probe.tls_server_name,
        })
    } else {
        None
    };
    let auth = auth_for(config, w, &w.primary.cache_name, &w.primary.region).await;
    Ok(ProbeSpec {
        watch: w.name.clone(),
        record: w.record.clone(),
        endpoint,
        port: w.port,
        reader_port: w.reader_port,
        timeout: w.probe.timeout,
        handshake_interval: w.probe.handshake_interval,
        key_prefix: w.probe.key_prefix.clone(),
        agent_id: config.agent.id.clone(),
        tls,
        auth,
    })
}

/// How the probes of `w` authenticate to the serverless cache `cache_name` in `region`. An IAM
/// token is signed for one cache in one region: the DR cache needs tokens of its own, or AWS
/// refuses the probe of the very cache a failover just built.
pub async fn auth_for(config: &Config, w: &WatchConfig, cache_name: &str, region: &str) -> Auth {
    match &w.probe.credential {
        Credential::None => Auth::None,
        Credential::Password {
            username, password, ..
        } => Auth::Password {
            username: username.clone(),
            password: password.clone(),
        },
        Credential::Iam { username } => {
            let sdk = crate::aws::sdk_config(config, region).await;
            Auth::Iam {
                username: username.clone(),
                tokens: Arc::new(IamTokenSource::new(
                    cache_name,
                    username,
                    region,
                    crate::aws::credentials(&sdk),
                )),
            }
        }
    }
}

/// The probe of `w`'s DR cache: `primary` (the watch's probe) with the DR cache's own
/// authentication. Its endpoint is set once the DR cache has one.
pub async fn dr_spec(config: &Config, w: &WatchConfig, primary: &ProbeSpec) -> ProbeSpec {
    ProbeSpec {
        auth: auth_for(config, w, &w.dr.cache_name, &w.dr.region).await,
        ..primary.clone()
    }
}
