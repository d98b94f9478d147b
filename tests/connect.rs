//! Connecting: success, refusal with the broker's reason, timeout, TCP and DNS
//! failures, credentials fetched per attempt, background start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use courier::{Client, ConnectError, ConnectionState, Credentials, Event, RefusedReason};
use courier_integration_tests::{
    BrokerOptions, Capability, broker, broker_with, client, needs, selected_broker_has,
};
use futures_util::StreamExt;

#[tokio::test]
async fn connect_resolves_after_connack() {
    let broker = broker().await;
    let c = client(&broker, "ok").connect().await.unwrap();
    assert!(c.is_connected());
    assert_eq!(c.state(), ConnectionState::Connected);
    let info = serde_json::to_value(c.info()).unwrap();
    assert_eq!(info["connected"], true);
    assert_eq!(info["session_present"], false, "a clean session");
    assert_eq!(
        info["addresses"][0],
        format!("{}:{}", broker.host(), broker.port())
    );
    assert_eq!(info["client_id"], c.client_id());
    c.stop().await;
    assert_eq!(c.state(), ConnectionState::Stopped);
}

#[tokio::test]
async fn refused_connection_reports_the_brokers_reason() {
    if !selected_broker_has(
        "refused_connection_reports_the_brokers_reason",
        &[Capability::Credentials],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().credentials("alice", "right")).await;
    let err = client(&broker, "refused")
        .username("alice")
        .password("wrong")
        .connect()
        .await
        .unwrap_err();
    let reason = err.refused_reason();
    assert!(
        matches!(
            reason,
            Some(RefusedReason::BadUserNamePassword | RefusedReason::NotAuthorized)
        ),
        "{err:?}"
    );
    let ok = client(&broker, "accepted")
        .username("alice")
        .password("right")
        .connect()
        .await
        .unwrap();
    ok.stop().await;
}

#[tokio::test]
async fn no_connack_is_a_timeout() {
    // A listener that accepts and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let started = std::time::Instant::now();
    let err = Client::builder()
        .address("127.0.0.1", port)
        .client_id("silent")
        .connect_timeout(Duration::from_millis(400))
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn nothing_listening_is_a_tcp_error() {
    let port = courier_testkit::free_port().unwrap();
    let err = Client::builder()
        .address("127.0.0.1", port)
        .client_id("nobody")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Tcp { source, .. } if source.kind() == std::io::ErrorKind::ConnectionRefused),
        "{err:?}"
    );
}

#[tokio::test]
async fn unknown_host_is_a_dns_error() {
    let err = Client::builder()
        .address("no-such-host.invalid", 1883)
        .client_id("dns")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ConnectError::Dns { broker, .. } if broker == "no-such-host.invalid:1883"),
        "{err:?}"
    );
}

#[tokio::test]
async fn invalid_options_fail_before_connecting() {
    let err = Client::builder()
        .address("127.0.0.1", 1)
        .keep_alive(Duration::from_millis(10))
        .client_id("x")
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ConnectError::Config(courier::ConfigError::KeepAlive(_))
        ),
        "{err:?}"
    );
}

/// The provider is asked before every attempt, and a failing provider is retried.
#[tokio::test]
async fn credentials_are_fetched_before_every_connect() {
    if !selected_broker_has(
        "credentials_are_fetched_before_every_connect",
        &[Capability::Credentials, Capability::Restart],
    ) {
        return;
    }
    let mut broker = broker_with(BrokerOptions::new().credentials("svc", "token-2")).await;
    let calls = Arc::new(AtomicU32::new(0));
    let counter = calls.clone();
    // First call fails, second returns a bad token, then the good one.
    let c = client(&broker, "creds")
        .credential_provider(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move {
                match n {
                    0 => Err("vault unavailable"),
                    1 => Ok(Credentials::new("svc", "token-1")),
                    _ => Ok(Credentials::new("svc", "token-2")),
                }
            }
        })
        .start()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), c.wait_connected())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    broker.restart().await.unwrap();
    let mut events = c.events();
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(e) = events.next().await {
            if matches!(e, Event::Connected { .. }) {
                break;
            }
        }
    })
    .await
    .unwrap();
    assert!(
        calls.load(Ordering::SeqCst) >= 4,
        "asked again for the reconnect"
    );
    c.stop().await;
}

/// `start()` keeps retrying in the background until the broker is there.
#[tokio::test]
async fn start_retries_until_the_broker_appears() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "start_retries_until_the_broker_appears",
        &[Capability::Restart],
    ) {
        return;
    }
    broker.stop().await.unwrap();
    let c = client(&broker, "later").start().unwrap();
    let mut events = c.events();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!c.is_connected());
    broker.start_again().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), c.wait_connected())
        .await
        .unwrap()
        .unwrap();
    let mut failures = 0;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        if matches!(e, Event::ConnectFailed { .. }) {
            failures += 1;
        }
    }
    assert!(
        failures >= 1,
        "the attempts while the broker was down were reported"
    );
    c.stop().await;
}
