//! AWS SDK setup, shared by every call the agent makes.
//!
//! Clients are built lazily, only when a command or a watch needs them: the daemon's
//! footprint matters on session-store hosts, and most rounds never talk to AWS.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};

use crate::config::Config;

/// The SDK config for `region`: the default credential chain (or `[aws] profile`) and, for
/// the lab and tests, `[aws] endpoint_url`. `AWS_ENDPOINT_URL*` variables are honoured by the
/// SDK itself.
pub async fn sdk_config(config: &Config, region: &str) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
    if let Some(profile) = &config.aws.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// The credentials provider of an SDK config. A config without one (no chain configured at
/// all) gets a provider that always fails, so callers report a clear error per call.
pub fn credentials(sdk: &SdkConfig) -> SharedCredentialsProvider {
    sdk.credentials_provider()
        .unwrap_or_else(|| SharedCredentialsProvider::new(NoCredentials))
}

#[derive(Debug)]
struct NoCredentials;

impl ProvideCredentials for NoCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(Err(CredentialsError::not_loaded(
            "no AWS credential source is configured (instance role, AWS_* variables or a profile)",
        )))
    }
}
