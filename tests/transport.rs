#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]
//! Transports: MQTT over a Unix socket, a custom [`Transport`], WebSocket (`ws://`,
//! `wss://`, through the test kit's [`WsFront`]) and an HTTP CONNECT proxy (the test
//! kit's [`ConnectProxy`]), each carrying publishes and subscriptions at every QoS, and
//! the typed errors of each.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier::client::BoxFuture;
use courier::{ClientBuilder, ConnectError, Transport, TransportStream, UnixSocket};
use courier_integration_tests::transport::pubsub_each_qos;
use courier_integration_tests::{
    BrokerOptions, TestBroker, broker, broker_with, client_id, mosquitto_mode, quick_reconnects,
};
use courier_testkit::FaultProxy;

fn addr_of(broker: &TestBroker) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], broker.port()))
}

/// The first connect's error with `builder`.
async fn connect_error(builder: ClientBuilder) -> ConnectError {
    match builder.client_id(client_id("refused")).connect().await {
        Ok(_) => panic!("connected"),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------
// Unix sockets and custom transports

#[tokio::test]
async fn unix_socket_url_and_transport_carry_each_qos() {
    if !mosquitto_mode("unix_socket_url_and_transport_carry_each_qos") {
        return;
    }
    let broker = broker_with(BrokerOptions::new().unix_socket(true)).await;
    let path = broker.unix_socket().unwrap().to_owned();
    pubsub_each_qos(&format!("unix://{}", path.display()), |b| b).await;
    // The builder call: the address is not needed.
    let client = quick_reconnects()
        .client_id(client_id("unix-builder"))
        .transport(UnixSocket::new(&path))
        .connect()
        .await
        .unwrap();
    client.stop().await;
}

#[tokio::test]
async fn a_missing_unix_socket_is_a_transport_error_naming_it() {
    let error = connect_error(quick_reconnects().url("unix:///nonexistent/courier.sock")).await;
    assert!(
        matches!(&error, ConnectError::Transport { broker, source }
            if broker == "unix:/nonexistent/courier.sock" && source.kind() == io::ErrorKind::NotFound),
        "{error:?}"
    );
    assert_eq!(error.broker(), Some("unix:/nonexistent/courier.sock"));
}

/// A transport of the test's own: TCP to an address, counting its connects.
struct Counting {
    addr: SocketAddr,
    connects: Arc<AtomicUsize>,
}

impl Transport for Counting {
    fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>> {
        Box::pin(async move {
            self.connects.fetch_add(1, Ordering::SeqCst);
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            Ok(Box::new(stream) as Box<dyn TransportStream>)
        })
    }

    fn peer(&self) -> String {
        format!("counting:{}", self.addr)
    }
}

#[tokio::test]
async fn a_custom_transport_opens_every_connection() {
    let broker = broker().await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let connects = Arc::new(AtomicUsize::new(0));
    let client = quick_reconnects()
        .client_id(client_id("custom"))
        .transport(Counting {
            addr: proxy.addr(),
            connects: Arc::clone(&connects),
        })
        .connect()
        .await
        .unwrap();
    assert_eq!(connects.load(Ordering::SeqCst), 1);
    let mut events = client.events();
    proxy.close_rst();
    courier_integration_tests::next_connected(&mut events, Duration::from_secs(10)).await;
    assert_eq!(connects.load(Ordering::SeqCst), 2);
    assert_eq!(proxy.accepted(), 2);
    client
        .publish("custom/after", "x")
        .qos(courier::QoS::AtLeastOnce)
        .await
        .unwrap();
    client.stop().await;
}

/// A transport that always fails with its own error.
struct Unreachable;

impl Transport for Unreachable {
    fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>> {
        Box::pin(async { Err(io::Error::other("no route to the moon")) })
    }

    fn peer(&self) -> String {
        "moon:1883".to_owned()
    }
}

#[tokio::test]
async fn a_custom_transport_error_keeps_its_text_and_names_the_peer() {
    let error = connect_error(quick_reconnects().transport(Unreachable)).await;
    assert!(
        matches!(&error, ConnectError::Transport { .. }),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        "cannot open the transport to moon:1883: no route to the moon"
    );
}
