//! The lab's certificate authority.
//!
//! Like ElastiCache Serverless, each cache's certificate names its endpoint only: not the
//! private-zone record an application dials, and not an IP. That is what makes
//! `tls_server_name = "record"` fail against the lab exactly as it fails against AWS.

use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::ServerConfig;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::LabError;

const CA_NAME: &str = "valkey-dr lab CA";

/// A CA generated fresh for each lab; its certificate is written to `<dir>/ca.pem`.
pub(crate) struct LabCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl LabCa {
    pub(crate) fn generate() -> Result<Self, LabError> {
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
        Ok(Self { issuer })
    }

    /// The CA certificate, PEM-encoded.
    pub(crate) fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A rustls server configuration presenting a certificate for `endpoint` alone.
    pub(crate) fn server_config(&self, endpoint: &str) -> Result<Arc<ServerConfig>, LabError> {
        let cert_error = |source| LabError::Certificate {
            name: endpoint.to_string(),
            source,
        };
        let mut params = CertificateParams::new(vec![endpoint.to_string()]).map_err(cert_error)?;
        params.distinguished_name.push(DnType::CommonName, endpoint);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().map_err(cert_error)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(cert_error)?;

        let tls_error = |source| LabError::Tls {
            name: endpoint.to_string(),
            source,
        };
        // The provider is explicit: a process-wide default would be shared with whatever else
        // runs in the process (the agent, in end-to-end tests) and could differ between them.
        let config =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .map_err(tls_error)?
                .with_no_client_auth()
                .with_single_cert(
                    vec![cert.der().clone()],
                    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
                )
                .map_err(tls_error)?;
        Ok(Arc::new(config))
    }
}
