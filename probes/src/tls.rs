//! The TLS client configuration a watch probes with.
//!
//! The crypto provider is always ring, named explicitly: aws-lc-rs is also in the dependency
//! graph (through the AWS SDK), and rustls refuses to pick a process-wide default when both are
//! compiled in. Naming it here means the probe never depends on who installed what.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

/// The TLS client configuration could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsSetupError {
    /// The CA file could not be read.
    #[error("could not read CA file {path}")]
    ReadCaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file is not valid PEM.
    #[error("could not parse CA file {path} as PEM")]
    ParseCaFile {
        /// The file.
        path: PathBuf,
        /// What the PEM parser reported.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The CA file holds no certificate, so it would add nothing (usually a wrong path or a
    /// key file given by mistake).
    #[error("CA file {path} holds no PEM certificate")]
    NoCertificateInCaFile {
        /// The file.
        path: PathBuf,
    },
    /// A certificate in the CA file is not usable as a trust anchor.
    #[error("CA file {path}: certificate #{index} is not a usable trust anchor")]
    BadCaCertificate {
        /// The file.
        path: PathBuf,
        /// Which certificate, counting from 1 in file order.
        index: usize,
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
    /// Verification is on but there is nothing to verify against: every handshake would fail.
    #[error("no trusted roots: the system certificate store is empty and no ca_file was given")]
    NoRoots,
    /// The crypto provider cannot do the default protocol versions.
    #[error("the ring provider does not support the default TLS versions")]
    Protocol {
        /// What rustls reported.
        #[source]
        source: rustls::Error,
    },
}

/// ring, with the SHA-256 AES-128 suite offered first: a probe opens a fresh connection per
/// path per round, so handshake cost is most of its CPU, and SHA-384's key schedule costs
/// more for no gain in a health check. Every default suite stays available.
fn probe_provider() -> rustls::crypto::CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    let preferred = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256;
    provider
        .cipher_suites
        .sort_by_key(|s| s.suite() != preferred.suite());
    provider
}

/// Builds the client configuration for a watch.
///
/// Roots are the system store plus every certificate in `ca_file`. With
/// `insecure_skip_verify`, any certificate for any name is accepted (handshake signatures are
/// still checked); that is for labs only and is logged at `warn` each time a config is built.
pub fn client_config(
    ca_file: Option<&Path>,
    insecure_skip_verify: bool,
) -> Result<Arc<ClientConfig>, TlsSetupError> {
    let provider = Arc::new(probe_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsSetupError::Protocol { source })?;
    let config = if insecure_skip_verify {
        tracing::warn!(
            "TLS certificate verification is OFF (insecure_skip_verify): any server can \
             impersonate the cache"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate::new(&provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(root_store(ca_file)?)
            .with_no_client_auth()
    };
    Ok(Arc::new(config))
}

/// The system roots plus those in `ca_file`.
fn root_store(ca_file: Option<&Path>) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    // A host's store often holds a few unparseable or expired entries; one bad file must not
    // stop the agent, so partial errors are logged and the rest is used.
    let native = rustls_native_certs::load_native_certs();
    for error in &native.errors {
        tracing::debug!(%error, "skipping part of the system certificate store");
    }
    let (added, ignored) = roots.add_parsable_certificates(native.certs);
    if ignored > 0 {
        tracing::debug!(
            added,
            ignored,
            "ignored unparseable system root certificates"
        );
    }
    if let Some(path) = ca_file {
        for (index, cert) in ca_certificates(path)?.into_iter().enumerate() {
            roots
                .add(cert)
                .map_err(|source| TlsSetupError::BadCaCertificate {
                    path: path.to_owned(),
                    index: index + 1,
                    source,
                })?;
        }
    }
    if roots.is_empty() {
        return Err(TlsSetupError::NoRoots);
    }
    Ok(roots)
}

/// Every certificate in a PEM file, in file order (other PEM sections are skipped).
fn ca_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsSetupError> {
    let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadCaFile {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsSetupError::ParseCaFile {
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsSetupError::NoCertificateInCaFile {
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// Accepts any certificate chain for any name, but still checks that the server holds the key
/// of the certificate it sent, so the handshake itself stays sound.
#[derive(Debug)]
struct AcceptAnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl AcceptAnyCertificate {
    fn new(provider: &CryptoProvider) -> Self {
        AcceptAnyCertificate {
            algorithms: provider.signature_verification_algorithms,
        }
    }
}

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn ca_pem() -> String {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).expect("self-signed CA").pem()
    }

    fn file_with(contents: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(contents.as_bytes())
            .expect("write temp file");
        file
    }

    #[test]
    fn ca_file_certificates_are_added() {
        let pem = format!("{}{}", ca_pem(), ca_pem());
        let file = file_with(&pem);
        assert_eq!(ca_certificates(file.path()).expect("two certs").len(), 2);
        client_config(Some(file.path()), false).expect("config with a CA file");
    }

    #[test]
    fn a_missing_ca_file_names_the_path() {
        let err = client_config(Some(Path::new("/nonexistent/valkey-dr-ca.pem")), false)
            .expect_err("missing file");
        assert!(matches!(err, TlsSetupError::ReadCaFile { .. }), "{err:?}");
        assert!(
            err.to_string().contains("/nonexistent/valkey-dr-ca.pem"),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_some());
    }

    #[test]
    fn a_ca_file_without_certificates_is_an_error() {
        let key = rcgen::KeyPair::generate().expect("key");
        let file = file_with(&key.serialize_pem());
        let err = client_config(Some(file.path()), false).expect_err("no certificate");
        assert!(
            matches!(err, TlsSetupError::NoCertificateInCaFile { .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains(&file.path().display().to_string()));
        let empty = file_with("");
        assert!(matches!(
            client_config(Some(empty.path()), false),
            Err(TlsSetupError::NoCertificateInCaFile { .. })
        ));
    }

    #[test]
    fn the_insecure_verifier_accepts_any_certificate_for_any_name() {
        let provider = rustls::crypto::ring::default_provider();
        let verifier = AcceptAnyCertificate::new(&provider);
        let garbage = CertificateDer::from(vec![1, 2, 3]);
        let name = ServerName::try_from("not-the-cert-name.example").expect("name");
        assert!(
            verifier
                .verify_server_cert(&garbage, &[], &name, &[], UnixTime::now())
                .is_ok()
        );
        assert!(!verifier.supported_verify_schemes().is_empty());
    }

    #[test]
    fn insecure_config_needs_no_roots() {
        client_config(None, true).expect("insecure config");
    }
}
