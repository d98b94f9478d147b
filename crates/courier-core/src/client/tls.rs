//! TLS through rustls (with the `ring` provider, so no C toolchain beyond `cc` is needed).

use std::fmt;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

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

/// *ring* as rustls provides it. rustls 0.23.48 deprecates this constructor for
/// lacking post-quantum key exchange; an application that wants that installs its
/// provider as the process default, which [`TlsConfig::crypto_provider`] prefers.
/// Assembling *ring*'s provider here instead would copy rustls's table of signature
/// algorithms.
#[allow(
    deprecated,
    reason = "ring stays the default provider: no C toolchain beyond cc, no cmake"
)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
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
