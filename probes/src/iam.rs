//! IAM authentication tokens for ElastiCache Serverless.
//!
//! A token is a SigV4 presigned `connect` request to the cache, used as the `AUTH` password.
//! It is valid for 15 minutes, so a source keeps one and signs a new one shortly before it (or
//! the credentials behind it) expires: one credentials fetch per ~14 minutes, not per round.

use std::fmt;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sigv4::http_request::{
    SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
};
use aws_sigv4::sign::v4::SigningParams;
use aws_smithy_runtime_api::client::identity::Identity;

use crate::Secret;

/// How long ElastiCache accepts a token after it is signed (the maximum it allows).
const TOKEN_VALIDITY: Duration = Duration::from_secs(900);

/// How long before a token (or its credentials) expires a new one is signed, so that a token
/// handed out is never about to expire while the `AUTH` is in flight.
const REFRESH_MARGIN: Duration = Duration::from_secs(60);

/// An IAM token could not be produced.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IamError {
    /// The credentials provider failed.
    #[error("could not get AWS credentials to sign an IAM token for cache {cache_name}")]
    Credentials {
        /// The cache the token was for.
        cache_name: String,
        /// What the provider reported.
        #[source]
        source: CredentialsError,
    },
    /// SigV4 signing failed (an invalid cache name, for example).
    #[error("could not sign an IAM token for cache {cache_name}")]
    Sign {
        /// The cache the token was for.
        cache_name: String,
        /// What the signer reported.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// Signs IAM auth tokens for one cache and user. Pure: the credentials and the time are
/// arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamSigner {
    /// The serverless cache name (not its endpoint): the host the token is presigned for.
    cache_name: String,
    /// The ACL user the token authenticates.
    user: String,
    /// The cache's region, part of the SigV4 scope.
    region: String,
}

impl IamSigner {
    /// A signer for `user` on the serverless cache `cache_name` in `region`.
    pub fn new(
        cache_name: impl Into<String>,
        user: impl Into<String>,
        region: impl Into<String>,
    ) -> Self {
        IamSigner {
            cache_name: cache_name.into(),
            user: user.into(),
            region: region.into(),
        }
    }

    /// The cache the tokens are for.
    pub fn cache_name(&self) -> &str {
        &self.cache_name
    }

    /// The user the tokens are for.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The region the tokens are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The token for `credentials` signed at `now`: the presigned URL of
    /// `GET http://<cache>/?Action=connect&User=<user>&ResourceType=ServerlessCache`, for the
    /// `elasticache` service, valid for 900 s, without its `http://` scheme.
    pub fn sign(&self, credentials: &Credentials, now: SystemTime) -> Result<Secret, IamError> {
        let sign_error = |source: Box<dyn std::error::Error + Send + Sync>| IamError::Sign {
            cache_name: self.cache_name.clone(),
            source,
        };
        let target = format!(
            "{}/?Action=connect&User={}&ResourceType=ServerlessCache",
            self.cache_name,
            uri_encode(&self.user)
        );
        let url = format!("http://{target}");
        let request = SignableRequest::new(
            "GET",
            url.as_str(),
            std::iter::empty(),
            SignableBody::empty(),
        )
        .map_err(|err| sign_error(err.into()))?;
        let mut settings = SigningSettings::default();
        settings.signature_location = SignatureLocation::QueryParams;
        settings.expires_in = Some(TOKEN_VALIDITY);
        let identity = Identity::from(credentials.clone());
        let params = SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("elasticache")
            .time(now)
            .settings(settings)
            .build()
            .map_err(|err| sign_error(err.into()))?;
        let (instructions, _signature) = sign(request, &params.into())
            .map_err(|err| sign_error(err.into()))?
            .into_parts();
        let mut token = target;
        // The signature goes last, where botocore and the AWS SDKs put it; ElastiCache does not
        // care about the order, but identical strings make tokens easy to compare by eye.
        let (signature, auth): (Vec<_>, Vec<_>) = instructions
            .params()
            .iter()
            .partition(|(name, _)| *name == "X-Amz-Signature");
        for (name, value) in auth.into_iter().chain(signature) {
            token.push('&');
            token.push_str(name);
            token.push('=');
            token.push_str(&uri_encode(value));
        }
        Ok(Secret::new(token))
    }
}

/// Percent-encodes everything but the RFC 3986 unreserved characters, as SigV4 requires for
/// query values (so `/` in the credential scope becomes `%2F`).
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// A token and when it must be replaced.
struct CachedToken {
    token: Secret,
    /// When it was signed; a clock stepped back before this makes the token look "from the
    /// future" to AWS, so it is replaced.
    signed_at: SystemTime,
    /// The token is reused until then.
    refresh_at: SystemTime,
}

/// Hands out IAM tokens for one cache and user, reusing a token until shortly before it, or
/// the credentials it was signed with, expires.
pub struct IamTokenSource {
    signer: IamSigner,
    credentials: SharedCredentialsProvider,
    /// Held across the credentials fetch so concurrent paths sign once. The fetch runs inside
    /// a path's deadline; a path that gives up drops its future and so releases the lock.
    cache: tokio::sync::Mutex<Option<CachedToken>>,
}

impl fmt::Debug for IamTokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IamTokenSource")
            .field("cache_name", &self.signer.cache_name)
            .field("user", &self.signer.user)
            .field("region", &self.signer.region)
            .finish_non_exhaustive()
    }
}

impl IamTokenSource {
    /// A token source for `user` on the serverless cache `cache_name` in `region`.
    pub fn new(
        cache_name: impl Into<String>,
        user: impl Into<String>,
        region: impl Into<String>,
        credentials: SharedCredentialsProvider,
    ) -> Self {
        IamTokenSource {
            signer: IamSigner::new(cache_name, user, region),
            credentials,
            cache: tokio::sync::Mutex::new(None),
        }
    }

    /// The signer, for reports (cache, user, region).
    pub fn signer(&self) -> &IamSigner {
        &self.signer
    }

    /// A token valid for at least about a minute more.
    ///
    /// May call the credentials provider (IMDS, STS...): the caller bounds it with a timeout.
    pub async fn token(&self) -> Result<Secret, IamError> {
        self.token_at(SystemTime::now()).await
    }

    pub(crate) async fn token_at(&self, now: SystemTime) -> Result<Secret, IamError> {
        let mut cache = self.cache.lock().await;
        if let Some(cached) = cache.as_ref()
            && now >= cached.signed_at
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let credentials = self
            .credentials
            .provide_credentials()
            .await
            .map_err(|source| IamError::Credentials {
                cache_name: self.signer.cache_name.clone(),
                source,
            })?;
        let token = self.signer.sign(&credentials, now)?;
        let token_expiry = now + TOKEN_VALIDITY;
        let expiry = credentials
            .expiry()
            .map_or(token_expiry, |creds| creds.min(token_expiry));
        let refresh_at = expiry.checked_sub(REFRESH_MARGIN).unwrap_or(now);
        *cache = Some(CachedToken {
            token: token.clone(),
            signed_at: now,
            refresh_at,
        });
        Ok(token)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use aws_credential_types::provider::future;

    use super::*;

    /// 2026-01-02T03:04:05Z.
    fn vector_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_323_045)
    }

    fn vector_credentials(session_token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        )
    }

    fn query_params(token: &str) -> BTreeMap<String, String> {
        let (_, query) = token.split_once('?').expect("token has a query");
        query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("name=value");
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    // The expected tokens were computed independently with botocore 1.44.8:
    //
    //     import datetime
    //     from unittest import mock
    //     import botocore.auth
    //     from botocore.awsrequest import AWSRequest
    //     from botocore.credentials import Credentials
    //
    //     creds = Credentials('AKIDEXAMPLE', 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY')
    //     # second vector: Credentials(..., 'FwoGZXIvYXdzEXAMPLE/token+with=chars')
    //     req = AWSRequest(method='GET', url='http://app-sessions/', params={
    //         'Action': 'connect', 'User': 'probe', 'ResourceType': 'ServerlessCache'})
    //     fixed = datetime.datetime(2026, 1, 2, 3, 4, 5)
    //     # add_auth stamps the request with get_current_datetime(); pin it.
    //     with mock.patch('botocore.auth.get_current_datetime', return_value=fixed):
    //         botocore.auth.SigV4QueryAuth(creds, 'elasticache', 'us-east-1',
    //                                      expires=900).add_auth(req)
    //     print(req.url.removeprefix('http://'))
    const BOTOCORE_TOKEN: &str = "app-sessions/?Action=connect&User=probe&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20260102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Signature=ce87ddf584f094fe38d98b2813de1edce5f855fe82b351a5d178c1ba3a0b1bbf";
    const BOTOCORE_TOKEN_WITH_SESSION: &str = "app-sessions/?Action=connect&User=probe&ResourceType=ServerlessCache&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIDEXAMPLE%2F20260102%2Fus-east-1%2Felasticache%2Faws4_request&X-Amz-Date=20260102T030405Z&X-Amz-Expires=900&X-Amz-SignedHeaders=host&X-Amz-Security-Token=FwoGZXIvYXdzEXAMPLE%2Ftoken%2Bwith%3Dchars&X-Amz-Signature=f757ea64d02ff7aa234b0b063b04d3aa9a4d97f747921a5c9583ee9c0b83e787";

    #[test]
    fn token_matches_botocore() {
        let signer = IamSigner::new("app-sessions", "probe", "us-east-1");
        let token = signer
            .sign(&vector_credentials(None), vector_time())
            .expect("sign");
        // Same parameters, same order: the strings are identical, not just equivalent.
        assert_eq!(token.expose(), BOTOCORE_TOKEN);
    }

    #[test]
    fn token_with_session_token_matches_botocore() {
        let signer = IamSigner::new("app-sessions", "probe", "us-east-1");
        let token = signer
            .sign(
                &vector_credentials(Some("FwoGZXIvYXdzEXAMPLE/token+with=chars")),
                vector_time(),
            )
            .expect("sign");
        assert_eq!(
            query_params(token.expose()),
            query_params(BOTOCORE_TOKEN_WITH_SESSION)
        );
        assert_eq!(token.expose(), BOTOCORE_TOKEN_WITH_SESSION);
    }

    #[test]
    fn user_names_are_encoded() {
        assert_eq!(uri_encode("probe-user_1.a~b"), "probe-user_1.a~b");
        assert_eq!(uri_encode("a b/c+d=é"), "a%20b%2Fc%2Bd%3D%C3%A9");
    }

    /// Fixed credentials, counting how often they are fetched.
    #[derive(Debug, Default)]
    struct Counting {
        calls: Arc<AtomicUsize>,
        expiry: Option<SystemTime>,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let mut credentials = vector_credentials(None);
            *credentials.expiry_mut() = self.expiry;
            future::ProvideCredentials::ready(Ok(credentials))
        }
    }

    fn source(expiry: Option<SystemTime>) -> (IamTokenSource, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let provider = Counting {
            calls: calls.clone(),
            expiry,
        };
        let source = IamTokenSource::new(
            "app-sessions",
            "probe",
            "us-east-1",
            SharedCredentialsProvider::new(provider),
        );
        (source, calls)
    }

    #[tokio::test]
    async fn tokens_are_reused_until_a_minute_before_expiry() {
        let (source, calls) = source(None);
        let t0 = vector_time();
        let first = source.token_at(t0).await.expect("first token");
        let at_800 = source
            .token_at(t0 + Duration::from_secs(800))
            .await
            .expect("800 s");
        assert_eq!(first, at_800, "a 15-minute token is reused after 800 s");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let at_860 = source
            .token_at(t0 + Duration::from_secs(860))
            .await
            .expect("860 s");
        assert_ne!(
            first, at_860,
            "within a minute of expiry a new token is signed"
        );
        assert!(at_860.expose().contains("X-Amz-Date=20260102T031825Z"));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn tokens_follow_credentials_that_expire_sooner() {
        let t0 = vector_time();
        let (source, calls) = source(Some(t0 + Duration::from_secs(300)));
        let first = source.token_at(t0).await.expect("first token");
        let at_200 = source
            .token_at(t0 + Duration::from_secs(200))
            .await
            .expect("200 s");
        assert_eq!(first, at_200);
        source
            .token_at(t0 + Duration::from_secs(250))
            .await
            .expect("250 s");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_clock_stepped_back_gets_a_new_token() {
        let (source, calls) = source(None);
        let t0 = vector_time();
        source.token_at(t0).await.expect("first token");
        source
            .token_at(t0 - Duration::from_secs(30))
            .await
            .expect("earlier");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn debug_shows_no_secret() {
        let credentials = vector_credentials(Some("SESSIONTOKENVALUE"));
        let source = IamTokenSource::new(
            "app-sessions",
            "probe",
            "us-east-1",
            SharedCredentialsProvider::new(credentials),
        );
        let debug = format!("{source:?}");
        assert!(debug.contains("app-sessions"), "{debug}");
        for secret in ["wJalrXUtnFEMI", "SESSIONTOKENVALUE", "AKIDEXAMPLE"] {
            assert!(!debug.contains(secret), "{debug}");
        }
    }

    #[tokio::test]
    async fn credential_failures_name_the_cache() {
        let source = IamTokenSource::new(
            "app-sessions",
            "probe",
            "us-east-1",
            SharedCredentialsProvider::new(Failing),
        );
        let err = source.token().await.expect_err("no credentials");
        assert!(err.to_string().contains("app-sessions"), "{err}");
        assert!(std::error::Error::source(&err).is_some());
    }

    #[derive(Debug)]
    struct Failing;

    impl ProvideCredentials for Failing {
        fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            future::ProvideCredentials::ready(Err(CredentialsError::not_loaded_no_source()))
        }
    }
}
