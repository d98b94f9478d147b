#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failure fails the test"
)]
//! Certificates made for a test (rcgen): a CA, a server and a client certificate.

use std::path::PathBuf;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

use crate::client_id;

/// A CA, a server certificate for `localhost` and `127.0.0.1` it signed, and a client
/// certificate it signed, all PEM; the CA and server files are written to `dir`.
#[derive(Debug)]
pub struct Pki {
    /// The CA certificate.
    pub ca_pem: String,
    /// A client certificate the CA signed, and its key (PEM), for mutual TLS.
    pub client_pem: String,
    /// The client certificate's key.
    pub client_key: String,
    /// The server certificate (for `localhost` and `127.0.0.1`).
    pub server_pem: String,
    /// The server certificate's key.
    pub server_key: String,
    /// Holds `ca.pem`, `server.pem` and `server.key`.
    pub dir: PathBuf,
}

/// A self-signed CA named `name`.
pub fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// Make a [`Pki`] in a fresh temporary directory.
pub fn pki() -> Pki {
    let dir = std::env::temp_dir().join(format!("courier-tls-{}", client_id("pki")));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = ca("courier test CA");
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let mut client_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    client_params
        .distinguished_name
        .push(DnType::CommonName, "courier test client");
    let client = client_params.signed_by(&client_key, &ca).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), cert.pem()).unwrap();
    std::fs::write(dir.join("server.key"), key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca.pem(),
        client_pem: client.pem(),
        client_key: client_key.serialize_pem(),
        server_pem: cert.pem(),
        server_key: key.serialize_pem(),
        dir,
    }
}
