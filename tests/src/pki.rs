//! The lab's certificate authority.
//!
//! Like ElastiCache Serverless, each cache's certificate names its endpoint only: not the
//! private-zone record an application dials, and not an IP. That is what makes
//! `tls_server_name = "record"` fail against the lab exactly as it fails against AWS.
//!
//! By default ([`CertProfile::AwsRsa`]) a front presents what an ElastiCache endpoint presents:
//! an RSA 2048 leaf and the RSA 2048 intermediate that signed it (AWS's is an "Amazon RSA 2048
//! Mxx" under Amazon Root CA 1). Clients trust only the root (`ca.pem`), so they must be sent
//! the intermediate and must verify two RSA signatures, which is what a probe pays on AWS.
//! [`CertProfile::Ecdsa`] keeps the lab's older, cheaper shape (an ECDSA P-256 leaf straight
//! under the root) for benchmarks that compare the two.
//!
//! No front resumes TLS sessions unless the lab is started with `tls_resumption`: no AWS
//! document says whether a serverless endpoint does, and the lab is never kinder than AWS, so
//! by default every handshake is a full one (tests/FIDELITY.md, T4).

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, PKCS_RSA_SHA256,
};
use rustls::ServerConfig;
use rustls::server::{NoServerSessionStorage, ServerSessionMemoryCache};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::LabError;

const CA_NAME: &str = "valkey-dr lab CA";
/// Named after the intermediates AWS endpoints chain through ("Amazon RSA 2048 M01".."M04").
const INTERMEDIATE_NAME: &str = "valkey-dr lab RSA 2048 M01";

/// Lab-only test keys (see `tests/fixtures/tls/README.md`): rcgen's ring backend signs with RSA
/// keys but cannot generate them, so the RSA keys are fixed. They protect nothing.
const INTERMEDIATE_KEY_PEM: &str = include_str!("../fixtures/tls/lab-intermediate-rsa2048.key.pem");
const LEAF_KEY_PEM: &str = include_str!("../fixtures/tls/lab-leaf-rsa2048.key.pem");

/// The certificate chain a lab's fronts present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CertProfile {
    /// As ElastiCache endpoints: an RSA 2048 leaf for the endpoint name, sent with the RSA 2048
    /// intermediate that signed it, under the lab root.
    #[default]
    AwsRsa,
    /// An ECDSA P-256 leaf straight under the lab root, sent alone: the lab's original shape,
    /// cheaper for both sides of a handshake.
    Ecdsa,
}

impl CertProfile {
    /// The name `valkey-dr-lab up --cert-profile` takes.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AwsRsa => "aws-rsa",
            Self::Ecdsa => "ecdsa",
        }
    }
}

impl fmt::Display for CertProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A certificate profile name that is not one of the known ones.
#[derive(Debug, thiserror::Error)]
#[error("unknown certificate profile {given:?}: expected aws-rsa or ecdsa")]
pub struct UnknownCertProfile {
    /// What was given.
    pub given: String,
}

impl FromStr for CertProfile {
    type Err = UnknownCertProfile;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "aws-rsa" => Ok(Self::AwsRsa),
            "ecdsa" => Ok(Self::Ecdsa),
            other => Err(UnknownCertProfile {
                given: other.to_string(),
            }),
        }
    }
}

/// Sessions a front remembers for resumption when it is on: a few per client is plenty, and
/// the bound keeps a front's memory fixed whatever dials it.
const RESUMPTION_SESSIONS: usize = 256;

/// The RSA intermediate of the `aws-rsa` profile.
struct Intermediate {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A CA generated fresh for each lab; its certificate is written to `<dir>/ca.pem`.
///
/// The root key is always a fresh ECDSA P-256 key that never leaves the process (Amazon Root
/// CA 1 is RSA 2048): with the fixed RSA test keys, a fixed root key would let any copy of this
/// repository mint certificates that every lab's `ca.pem` trusts.
pub(crate) struct LabCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
    /// `Some` with the `aws-rsa` profile.
    intermediate: Option<Intermediate>,
    /// Whether fronts resume sessions ([`crate::LabOptions::tls_resumption`]).
    resumption: bool,
}

fn rsa_key(name: &str, pem: &str) -> Result<KeyPair, LabError> {
    KeyPair::from_pkcs8_pem_and_sign_algo(pem, &PKCS_RSA_SHA256).map_err(|source| {
        LabError::Certificate {
            name: name.to_string(),
            source,
        }
    })
}

/// How long a front's certificate is valid: 395 days, like an Amazon-issued one.
pub const LEAF_VALIDITY_DAYS: i64 = 395;

impl LabCa {
    /// A fresh CA whose fronts present `profile`'s chain, and resume TLS sessions only when
    /// `resumption` is set.
    pub(crate) fn generate(profile: CertProfile, resumption: bool) -> Result<Self, LabError> {
        let error = |source| LabError::Certificate {
            name: CA_NAME.to_string(),
            source,
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
        params.distinguished_name.push(DnType::CommonName, CA_NAME);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(error)?;
        let issuer = CertifiedIssuer::self_signed(params, key).map_err(error)?;
        let intermediate = match profile {
            CertProfile::Ecdsa => None,
            CertProfile::AwsRsa => Some(Intermediate::generate(&issuer)?),
        };
        Ok(Self {
            issuer,
            intermediate,
            resumption,
        })
    }

    /// The CA certificate, PEM-encoded.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A rustls server configuration presenting a certificate for `endpoint` alone, followed
    /// by the intermediate when the profile has one.
    pub(crate) fn server_config(&self, endpoint: &str) -> Result<Arc<ServerConfig>, LabError> {
        let cert_error = |source| LabError::Certificate {
            name: endpoint.to_string(),
            source,
        };
        let mut params = CertificateParams::new(vec![endpoint.to_string()]).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, endpoint);
        // Like the certificates AWS gives a serverless cache (issued by Amazon, about 13
        // months): never rcgen's default of year 4096, so an expiry check sees a real date
        // (tests/FIDELITY.md, T3).
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(LEAF_VALIDITY_DAYS);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let (chain, key): (Vec<CertificateDer<'static>>, KeyPair) = match &self.intermediate {
            None => {
                let key = KeyPair::generate().map_err(cert_error)?;
                let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;
                (vec![cert.der().clone()], key)
            }
            Some(intermediate) => {
                // RSA keys are expensive to make and rcgen cannot: every leaf shares the fixed
                // test key. Only the certificate (name, serial) differs per endpoint.
                let key = rsa_key(endpoint, LEAF_KEY_PEM)?;
                params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
                let cert = params
                    .signed_by(&key, &intermediate.issuer)
                    .map_err(cert_error)?;
                (
                    vec![cert.der().clone(), intermediate.issuer.der().clone()],
                    key,
                )
            }
        };

        let tls_error = |source| LabError::Tls {
            name: endpoint.to_string(),
            source,
        };
        // The provider is explicit: a process-wide default would be shared with whatever else
        // runs in the process (the agent, in end-to-end tests) and could differ between them.
        let mut config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_error)?
                .with_no_client_auth()
                .with_single_cert(
                    chain,
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .map_err(tls_error)?;
        if self.resumption {
            // Stateful resumption: TLS 1.3 tickets that name a session in this front's cache
            // (rustls' default, made explicit), and TLS 1.2 session ids.
            config.session_storage = ServerSessionMemoryCache::new(RESUMPTION_SESSIONS);
            config.send_tls13_tickets = 2;
        } else {
            // Nothing to resume with: no session ids are stored and no tickets sent (the
            // default ticketer makes none either), so every handshake is a full one.
            config.session_storage = Arc::new(NoServerSessionStorage {});
            config.send_tls13_tickets = 0;
        }
        Ok(Arc::new(config))
    }
}

impl Intermediate {
    fn generate(root: &CertifiedIssuer<'static, KeyPair>) -> Result<Self, LabError> {
        let error = |source| LabError::Certificate {
            name: INTERMEDIATE_NAME.to_string(),
            source,
        };
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(error)?;
        params.distinguished_name.push(DnType::CountryName, "US");
        params
            .distinguished_name
            .push(DnType::OrganizationName, "valkey-dr lab");
        params
            .distinguished_name
            .push(DnType::CommonName, INTERMEDIATE_NAME);
        // Like AWS's intermediates: it may sign leaves, not further CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = rsa_key(INTERMEDIATE_NAME, INTERMEDIATE_KEY_PEM)?;
        let issuer = CertifiedIssuer::signed_by(params, key, root).map_err(error)?;
        Ok(Self { issuer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_parse_and_print_as_the_flag_spells_them() {
        for profile in [CertProfile::AwsRsa, CertProfile::Ecdsa] {
            assert_eq!(profile.as_str().parse::<CertProfile>().unwrap(), profile);
        }
        assert_eq!(CertProfile::default(), CertProfile::AwsRsa);
        let err = "rsa".parse::<CertProfile>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown certificate profile \"rsa\": expected aws-rsa or ecdsa"
        );
    }

    #[test]
    fn the_fixture_keys_load_as_rsa_signing_keys() {
        for (name, pem) in [
            ("intermediate", INTERMEDIATE_KEY_PEM),
            ("leaf", LEAF_KEY_PEM),
        ] {
            let key = rsa_key(name, pem).unwrap();
            assert!(key.is_compatible(&PKCS_RSA_SHA256), "{name}");
        }
    }

    #[test]
    fn each_profile_builds_a_server_config() {
        for profile in [CertProfile::AwsRsa, CertProfile::Ecdsa] {
            for resumption in [false, true] {
                let ca = LabCa::generate(profile, resumption).unwrap();
                let config = ca
                    .server_config("app-sessions-abc123.serverless.use1.cache.amazonaws.com")
                    .unwrap();
                assert!(ca.pem().starts_with("-----BEGIN CERTIFICATE-----"));
                assert_eq!(config.session_storage.can_cache(), resumption);
                assert_eq!(config.send_tls13_tickets > 0, resumption);
                assert!(
                    !config.ticketer.enabled(),
                    "no stateless tickets either way"
                );
            }
        }
    }
}
