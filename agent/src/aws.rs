//! AWS SDK setup, shared by every call the agent makes.
//!
//! Clients are built lazily, only when a command or a watch needs them: the daemon's
//! footprint matters on session-store hosts, and most rounds never talk to AWS.

use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider, future};
use aws_runtime::env_config::file::{EnvConfigFileKind, EnvConfigFiles};

use crate::config::{Config, WatchConfig};

/// The SDK config for `region`: the default credential chain (or `[aws] profile`) and, for
/// the lab and tests, `[aws] endpoint_url`. `AWS_ENDPOINT_URL*` variables are honoured by the
/// SDK itself.
pub async fn sdk_config(config: &Config, region: &str) -> SdkConfig {
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(Region::new(region.to_owned()));
    if let Some(path) = &config.aws.credentials_file {
        // The named file is the only source: no environment variable, no instance role, no
        // other profile file can stand in for it (or hide that it is wrong).
        let files = EnvConfigFiles::builder()
            .with_file(EnvConfigFileKind::Credentials, path)
            .build();
        let mut provider = ProfileFileCredentialsProvider::builder().profile_files(files);
        if let Some(profile) = &config.aws.profile {
            provider = provider.profile_name(profile);
        }
        loader = loader.credentials_provider(provider.build());
    } else if let Some(profile) = &config.aws.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(url) = &config.aws.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// How long the instance metadata may take to say which region the agent runs in.
pub const IMDS_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where this agent's own region came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionSource {
    /// `[agent] region`.
    Config,
    /// A variable of the environment (`AWS_REGION`, `AWS_DEFAULT_REGION`).
    Environment(&'static str),
    /// The EC2 instance metadata service (`placement/region`).
    InstanceMetadata,
}

impl std::fmt::Display for RegionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionSource::Config => f.write_str("[agent] region"),
            RegionSource::Environment(name) => f.write_str(name),
            RegionSource::InstanceMetadata => f.write_str("the instance metadata"),
        }
    }
}

/// The region this agent runs in: `[agent] region`, else `AWS_REGION` or
/// `AWS_DEFAULT_REGION` (set by ECS, Lambda, EKS Pod Identity and IRSA's webhook), else the
/// instance metadata (at most [`IMDS_WAIT`], and never with `AWS_EC2_METADATA_DISABLED=true`;
/// `AWS_EC2_METADATA_SERVICE_ENDPOINT` moves it, as for the SDK). `None` when nothing says.
pub async fn own_region(config: &Config) -> Option<(String, RegionSource)> {
    if let Some(region) = &config.agent.region {
        return Some((region.clone(), RegionSource::Config));
    }
    for name in ["AWS_REGION", "AWS_DEFAULT_REGION"] {
        if let Some(region) = std::env::var(name).ok().filter(|r| !r.trim().is_empty()) {
            return Some((region.trim().to_owned(), RegionSource::Environment(name)));
        }
    }
    let imds = aws_config::imds::region::ImdsRegionProvider::builder().build();
    match tokio::time::timeout(IMDS_WAIT, imds.region()).await {
        Ok(Some(region)) => Some((region.to_string(), RegionSource::InstanceMetadata)),
        Ok(None) | Err(_) => None,
    }
}

/// The SDK config of the Route 53 client a failover uses: one attempt per call, bounded by
/// `ROUTE53_ATTEMPT_TIMEOUT`. The executor retries Route 53 itself, without end and at least
/// once a second (`ExecutorLimits::route53_max_backoff`), so that the record moves the moment
/// Route 53 answers again; the SDK's own retries would add their growing, jittered backoff
/// (seconds) inside each of those tries. The bound turns a change whose answer never comes
/// into a retry that finds what it did, instead of a wait on a dead connection.
pub fn route53_for_failover(sdk: &SdkConfig) -> SdkConfig {
    single_attempt(sdk)
        .to_builder()
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(std::time::Duration::from_secs(3))
                .operation_attempt_timeout(ROUTE53_ATTEMPT_TIMEOUT)
                .build(),
        )
        .build()
}

/// `sdk` for the witness: one attempt per call. The witness asks every round while a path
/// fails and is bounded by its own timeout; the SDK's retries of a throttled call back off
/// for seconds with jitter, past that bound, and would turn a throttled answer (which proves
/// the agent reaches the API) into no answer at all.
pub fn single_attempt(sdk: &SdkConfig) -> SdkConfig {
    sdk.to_builder()
        .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(1))
        .build()
}

/// How long one Route 53 call of a failover may take: its API answers in well under a second
/// when it works.
pub const ROUTE53_ATTEMPT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The region Route 53 clients of `w` are built with. Route 53 is global within a partition,
/// and the SDK's endpoint rules turn any region of a partition into that partition's
/// endpoint and signing region (us-east-1 in `aws`, cn-northwest-1 in `aws-cn`,
/// us-gov-west-1 in `aws-us-gov`). The DR region is the one that is up during the outage the
/// agent acts on; a fixed us-east-1 was wrong outside `aws`.
pub fn route53_region(w: &WatchConfig) -> &str {
    &w.dr.region
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

#[cfg(test)]
mod tests {
    use aws_sdk_route53::config::endpoint::{DefaultResolver, Params, ResolveEndpoint};

    use super::*;
    use crate::config::partition;

    /// Issue 8, defect 6: Route 53 was always signed for us-east-1, wrong in aws-cn and
    /// aws-us-gov. The agent's Route 53 region now comes from the watch, and the SDK's rules
    /// map it onto the partition's endpoint and signing region.
    #[test]
    fn route53_is_reached_in_the_watch_partition() {
        for (primary, dr, endpoint, signing) in [
            (
                "us-east-1",
                "us-west-2",
                "https://route53.amazonaws.com",
                "us-east-1",
            ),
            (
                "cn-north-1",
                "cn-northwest-1",
                "https://route53.amazonaws.com.cn",
                "cn-northwest-1",
            ),
            (
                "us-gov-west-1",
                "us-gov-east-1",
                "https://route53.us-gov.amazonaws.com",
                "us-gov-west-1",
            ),
        ] {
            let text = format!(
                "[[watch]]\nname = \"s\"\nrecord = \"v.app.internal.\"\nhosted_zone_id = \"Z1\"\n\
                 [watch.primary]\nregion = \"{primary}\"\ncache_name = \"app\"\nendpoint = \"app.example\"\n\
                 [watch.dr]\nregion = \"{dr}\"\ncache_name = \"app-dr\"\n"
            );
            let config = Config::parse(
                &text,
                std::path::Path::new("/etc/valkey-dr/agent.toml"),
                &crate::config::ProcessEnv,
            )
            .expect("valid");
            let region = route53_region(&config.watches[0]);
            assert_eq!(partition(region), partition(primary));
            let params = Params::builder().region(region).build().unwrap();
            let resolved =
                futures::executor::block_on(DefaultResolver::new().resolve_endpoint(&params))
                    .unwrap();
            assert_eq!(resolved.url(), endpoint, "{region}");
            let schemes = format!("{:?}", resolved.properties().get("authSchemes"));
            assert!(schemes.contains(signing), "{region}: {schemes}");
        }
    }
}
