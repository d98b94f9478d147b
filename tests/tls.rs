#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failure fails the test"
)]
//! TLS through rustls against Mosquitto's TLS listener, with certificates made for the
//! test: a trusted CA connects, an unknown CA is a typed TLS error.

use courier::{Client, ConnectError, TlsConfig};
use courier_integration_tests::pki::{Pki, ca, pki};
use courier_integration_tests::{
    BrokerOptions, Capability, TestBroker, broker_with, client_id, recv_n, selected_broker_has,
};

/// A Mosquitto with a TLS listener (certificates from `pki`) beside its plain one;
/// returns it and the TLS port.
async fn tls_broker(pki: &Pki) -> (TestBroker, u16) {
    tls_broker_with(pki, &[]).await
}

/// [`tls_broker`] with `extra` config lines after the TLS listener's (they apply to
/// it).
async fn tls_broker_with(pki: &Pki, extra: &[&str]) -> (TestBroker, u16) {
    let tls_port = courier_testkit::free_port().unwrap();
    let d = pki.dir.display();
    let mut lines = BrokerOptions::new()
        .config_line(format!("listener {tls_port} 127.0.0.1"))
        .config_line(format!("cafile {d}/ca.pem"))
        .config_line(format!("certfile {d}/server.pem"))
        .config_line(format!("keyfile {d}/server.key"));
    for line in extra {
        lines = lines.config_line(*line);
    }
    (broker_with(lines).await, tls_port)
}

#[tokio::test]
async fn tls_connects_with_the_right_ca_and_refuses_another() {
    if !selected_broker_has(
        "tls_connects_with_the_right_ca_and_refuses_another",
        &[Capability::MosquittoConfig],
    ) {
        return;
    }
    let pki = pki();
    let (broker, tls_port) = tls_broker(&pki).await;

    let secure = Client::builder()
        .address("localhost", tls_port)
        .client_id(client_id("tls"))
        .clean_session(true)
        .tls(TlsConfig::from_pem(pki.ca_pem.as_bytes(), None).unwrap())
        .connect()
        .await
        .unwrap();
    let mut sub = secure.subscribe("tls/#").await.unwrap();
    secure.publish("tls/x", "over TLS").await.unwrap();
    let got = recv_n(&mut sub, 1, std::time::Duration::from_secs(5)).await;
    assert_eq!(got[0].payload_str().unwrap(), "over TLS");
    secure.stop().await;

    let stranger = ca("another CA");
    let err = Client::builder()
        .address("localhost", tls_port)
        .client_id(client_id("tls-bad"))
        .tls(TlsConfig::from_pem(stranger.pem().as_bytes(), None).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err:?}");
    drop(broker);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// Against Mosquitto's TLS listener: an untrusted certificate is reported with the
/// broker's address and rustls's reason in the text (the `rustls::Error` as the
/// source), and a client without TLS is reset by the broker before CONNACK.
#[tokio::test]
async fn tls_errors_name_the_broker_and_the_reason() {
    if !selected_broker_has(
        "tls_errors_name_the_broker_and_the_reason",
        &[Capability::MosquittoConfig],
    ) {
        return;
    }
    let pki = pki();
    let (broker, tls_port) = tls_broker(&pki).await;
    let builder = || {
        Client::builder()
            .address("localhost", tls_port)
            .client_id(client_id("tls-error"))
    };

    let stranger = ca("another CA");
    let err = builder()
        .tls(TlsConfig::from_pem(stranger.pem().as_bytes(), None).unwrap())
        .connect()
        .await
        .unwrap_err();
    println!("{err}");
    assert_eq!(
        err.to_string(),
        format!(
            "TLS handshake with localhost:{tls_port} failed: invalid peer certificate: \
             UnknownIssuer"
        )
    );
    let source = std::error::Error::source(&err).unwrap();
    assert!(
        source.downcast_ref::<rustls::Error>().is_some(),
        "{source:?}"
    );

    let err = builder().connect().await.unwrap_err();
    println!("{err}");
    assert!(
        matches!(&err, ConnectError::ClosedBeforeConnAck { broker, .. } if *broker == format!("localhost:{tls_port}")),
        "{err:?}"
    );
    assert!(
        err.to_string().starts_with(&format!(
            "the connection to localhost:{tls_port} ended before CONNACK"
        )),
        "{err}"
    );
    drop(broker);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

/// Mutual TLS (Mosquitto's `require_certificate true`): a client without a
/// certificate is refused during the TLS exchange, and that is reported as a TLS
/// failure naming the broker (it used to be `ConnectError::Tcp`); with the CA's
/// client certificate it connects.
#[tokio::test]
async fn a_broker_requiring_a_client_certificate_refuses_one_without_as_tls() {
    if !selected_broker_has(
        "a_broker_requiring_a_client_certificate_...",
        &[Capability::MosquittoConfig],
    ) {
        return;
    }
    let pki = pki();
    let (_broker, tls_port) = tls_broker_with(&pki, &["require_certificate true"]).await;
    let builder = || {
        Client::builder()
            .address("localhost", tls_port)
            .client_id(client_id("mtls"))
    };
    let err = builder()
        .tls(TlsConfig::from_pem(pki.ca_pem.as_bytes(), None).unwrap())
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Tls { broker, .. } if *broker == format!("localhost:{tls_port}")),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).unwrap();
    assert!(
        source.downcast_ref::<rustls::Error>().is_some(),
        "the TLS alert is the source: {source:?}"
    );

    let client_auth = (pki.client_pem.as_bytes(), pki.client_key.as_bytes());
    let c = builder()
        .tls(TlsConfig::from_pem(pki.ca_pem.as_bytes(), Some(client_auth)).unwrap())
        .connect()
        .await
        .unwrap();
    c.stop().await;
}
