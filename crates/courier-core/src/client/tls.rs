//! TLS through rustls (with the `ring` provider, so no C toolchain beyond `cc` is needed).

use std::fmt;
use std::sync::Arc;

use rustls::crypto::{
    CryptoProvider, GetRandomFailed, KeyProvider, SecureRandom, WebPkiSupportedAlgorithms,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::SigningKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};

use crate::error::{BoxError, ConfigError};

/// TLS settings for the broker connection.
#[derive(Clone)]
pub struct TlsConfig {
    config: Arc<ClientConfig>,
}

impl TlsConfig {
    /// Use a ready rustls configuration (ALPN, client auth, custom verifiers, ...).
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        TlsConfig { config }
    }

    /// Trust the operating system's root certificates.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] when no root certificate could be loaded.
    pub fn native_roots() -> Result<Self, ConfigError> {
        let mut roots = RootCertStore::empty();
        let loaded = rustls_native_certs::load_native_certs();
        for cert in loaded.certs {
            // Skip certificates rustls cannot parse rather than fail the whole store.
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(ConfigError::Tls("no usable native root certificate".into()));
        }
        Self::build(roots, None)
    }

    /// Trust the CA certificates in `ca_pem` (PEM text), optionally presenting a
    /// client certificate chain and key (PEM) for mutual TLS.
    ///
    /// # Errors
    ///
    /// [`ConfigError::Tls`] when the PEM holds no certificate, or the key is invalid.
    pub fn from_pem(
        ca_pem: &[u8],
        client_auth: Option<(&[u8], &[u8])>,
    ) -> Result<Self, ConfigError> {
        let tls_err = |e: BoxError| ConfigError::Tls(e);
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| tls_err(Box::new(e)))?;
            roots.add(cert).map_err(|e| tls_err(Box::new(e)))?;
        }
        if roots.is_empty() {
            return Err(tls_err("no CA certificate in the PEM input".into()));
        }
        let client_auth = match client_auth {
            None => None,
            Some((chain, key)) => {
                let chain = CertificateDer::pem_slice_iter(chain)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_err(Box::new(e)))?;
                let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| tls_err(Box::new(e)))?;
                Some((chain, key))
            }
        };
        Self::build(roots, client_auth)
    }

    fn build(
        roots: RootCertStore,
        client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    ) -> Result<Self, ConfigError> {
        let builder = ClientConfig::builder_with_provider(Self::crypto_provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Tls(Box::new(e)))?
            .with_root_certificates(roots);
        let config = match client_auth {
            None => builder.with_no_client_auth(),
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ConfigError::Tls(Box::new(e)))?,
        };
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// The crypto provider the constructors above use, for building your own rustls
    /// `ClientConfig` with [`from_rustls`](Self::from_rustls): the process-wide
    /// default when the application installed one
    /// ([`CryptoProvider::install_default`]), otherwise *ring* with rustls's default
    /// cipher suites and key-exchange groups.
    pub fn crypto_provider() -> Arc<CryptoProvider> {
        match CryptoProvider::get_default() {
            Some(installed) => installed.clone(),
            None => Arc::new(ring_provider()),
        }
    }

    pub(crate) fn rustls(&self) -> Arc<ClientConfig> {
        self.config.clone()
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("alpn_protocols", &self.config.alpn_protocols.len())
            .finish_non_exhaustive()
    }
}

/// *ring* as a rustls provider, assembled from the parts rustls and webpki export
/// (`rustls::crypto::ring::default_provider` is deprecated since rustls 0.23.48 for
/// lacking post-quantum key exchange; an application that wants one installs it as
/// the process default, which [`TlsConfig::crypto_provider`] prefers).
fn ring_provider() -> CryptoProvider {
    CryptoProvider {
        cipher_suites: rustls::crypto::ring::DEFAULT_CIPHER_SUITES.to_vec(),
        kx_groups: rustls::crypto::ring::DEFAULT_KX_GROUPS.to_vec(),
        signature_verification_algorithms: RING_SIGNATURES,
        secure_random: &RingParts,
        key_provider: &RingParts,
    }
}

/// The certificate signatures webpki verifies with *ring*, and which of them each TLS
/// signature scheme may use (TLS 1.2 does not bind an ECDSA scheme to its curve).
const RING_SIGNATURES: WebPkiSupportedAlgorithms = {
    use webpki::ring as alg;
    WebPkiSupportedAlgorithms {
        all: &[
            alg::ECDSA_P256_SHA256,
            alg::ECDSA_P256_SHA384,
            alg::ECDSA_P384_SHA256,
            alg::ECDSA_P384_SHA384,
            alg::ED25519,
            alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY,
            alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY,
            alg::RSA_PKCS1_2048_8192_SHA256,
            alg::RSA_PKCS1_2048_8192_SHA384,
            alg::RSA_PKCS1_2048_8192_SHA512,
            alg::RSA_PKCS1_2048_8192_SHA256_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA384_ABSENT_PARAMS,
            alg::RSA_PKCS1_2048_8192_SHA512_ABSENT_PARAMS,
        ],
        mapping: &[
            (
                SignatureScheme::ECDSA_NISTP384_SHA384,
                &[alg::ECDSA_P384_SHA384, alg::ECDSA_P256_SHA384],
            ),
            (
                SignatureScheme::ECDSA_NISTP256_SHA256,
                &[alg::ECDSA_P256_SHA256, alg::ECDSA_P384_SHA256],
            ),
            (SignatureScheme::ED25519, &[alg::ED25519]),
            (
                SignatureScheme::RSA_PSS_SHA512,
                &[alg::RSA_PSS_2048_8192_SHA512_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA384,
                &[alg::RSA_PSS_2048_8192_SHA384_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PSS_SHA256,
                &[alg::RSA_PSS_2048_8192_SHA256_LEGACY_KEY],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA512,
                &[alg::RSA_PKCS1_2048_8192_SHA512],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA384,
                &[alg::RSA_PKCS1_2048_8192_SHA384],
            ),
            (
                SignatureScheme::RSA_PKCS1_SHA256,
                &[alg::RSA_PKCS1_2048_8192_SHA256],
            ),
        ],
    }
};

/// *ring*'s system random source and rustls's *ring* key loader.
#[derive(Debug)]
struct RingParts;

impl SecureRandom for RingParts {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), buf)
            .map_err(|_| GetRandomFailed)
    }
}

impl KeyProvider for RingParts {
    fn load_private_key(
        &self,
        key_der: PrivateKeyDer<'static>,
    ) -> Result<Arc<dyn SigningKey>, rustls::Error> {
        rustls::crypto::ring::sign::any_supported_type(&key_der)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_without_certificates_is_a_config_error() {
        let err = TlsConfig::from_pem(b"not a pem", None).err();
        assert!(matches!(err, Some(ConfigError::Tls(_))));
    }

    #[test]
    fn the_ring_provider_is_complete_and_consistent() {
        let provider = ring_provider();
        assert!(!provider.cipher_suites.is_empty());
        assert!(!provider.kx_groups.is_empty());
        let mut random = [0u8; 32];
        assert!(provider.secure_random.fill(&mut random).is_ok());
        assert_ne!(random, [0u8; 32]);
        let builder = ClientConfig::builder_with_provider(Arc::new(provider))
            .with_safe_default_protocol_versions();
        assert!(builder.is_ok());
    }
}
