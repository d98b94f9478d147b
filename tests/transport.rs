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
use courier::{
    ClientBuilder, ConnectError, ProxyConfig, QoS, TlsConfig, Transport, TransportStream,
    UnixSocket,
};
use courier_integration_tests::faults::{
    Link, f1_restarts_lose_no_qos1_message, f4_half_open_link,
};
use courier_integration_tests::pki::pki;
use courier_integration_tests::transport::{highest_qos, pubsub_each_qos};
use courier_integration_tests::{
    BrokerOptions, Capability, TestBroker, broker, broker_with, client_id, needs, quick_reconnects,
    selected_broker_has,
};
use courier_testkit::{ConnectProxy, FaultProxy, WsFront};

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
    if !selected_broker_has(
        "unix_socket_url_and_transport_carry_each_qos",
        &[Capability::UnixSocket],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().unix_socket(true)).await;
    let path = broker.unix_socket().unwrap().to_owned();
    pubsub_each_qos(
        &format!("unix://{}", path.display()),
        highest_qos(&broker),
        |b| b,
    )
    .await;
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
        .qos(QoS::AtLeastOnce)
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

// ---------------------------------------------------------------------------------
// WebSocket

#[tokio::test]
async fn websocket_carries_each_qos() {
    let broker = broker().await;
    let front = WsFront::start(addr_of(&broker)).await.unwrap();
    pubsub_each_qos(&front.url(), highest_qos(&broker), |b| b).await;
    assert_eq!(front.upgrades(), 2, "both clients went through the front");
}

/// A broker's own WebSocket listener (RabbitMQ's `rabbitmq_web_mqtt`, at `/ws`), not
/// the test kit's front: runs in the suite's RabbitMQ pass.
#[tokio::test]
async fn websocket_reaches_a_brokers_own_listener() {
    let broker = broker().await;
    if !needs(
        &broker,
        "websocket_reaches_a_brokers_own_listener",
        &[Capability::WebSocketListener],
    ) {
        return;
    }
    let url = broker.web_mqtt_url().unwrap();
    pubsub_each_qos(&url, highest_qos(&broker), |b| b).await;
}

#[tokio::test]
async fn websocket_reassembles_packets_split_across_messages() {
    let broker = broker().await;
    let front = WsFront::start(addr_of(&broker)).await.unwrap();
    front.max_message(3);
    pubsub_each_qos(&front.url(), highest_qos(&broker), |b| b).await;
}

#[tokio::test]
async fn wss_carries_each_qos_with_the_clients_tls_config() {
    let broker = broker().await;
    let pki = pki();
    let front = WsFront::start_tls(addr_of(&broker), &pki.server_pem, &pki.server_key)
        .await
        .unwrap();
    assert!(front.url().starts_with("wss://"));
    let tls = TlsConfig::from_pem(pki.ca_pem.as_bytes(), None).unwrap();
    pubsub_each_qos(&front.url(), highest_qos(&broker), |b| b.tls(tls.clone())).await;
    assert_eq!(front.upgrades(), 2);
    let _ = std::fs::remove_dir_all(&pki.dir);
}

#[tokio::test]
async fn a_wrong_websocket_path_is_a_typed_error_with_the_status() {
    let broker = broker().await;
    let front = WsFront::start(addr_of(&broker)).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/elsewhere", front.port());
    let error = connect_error(quick_reconnects().url(&url)).await;
    assert!(
        matches!(&error, ConnectError::WebSocket { status: Some(404), broker, .. }
            if *broker == format!("127.0.0.1:{}", front.port())),
        "{error:?}"
    );
    assert_eq!(front.upgrades(), 0);
}

#[tokio::test]
async fn websocket_headers_are_sent_and_never_shown() {
    const SECRET: &str = "Bearer s3cr3t-t0ken";
    let broker = broker().await;
    let front = WsFront::start(addr_of(&broker)).await.unwrap();
    let with_header = |url: &str| {
        quick_reconnects()
            .url(url)
            .websocket_header("Authorization", SECRET)
    };
    let client = with_header(&front.url())
        .client_id(client_id("ws-header"))
        .connect()
        .await
        .unwrap();
    assert_eq!(front.last_header("authorization").as_deref(), Some(SECRET));
    client.stop().await;
    let wrong_path = format!("ws://127.0.0.1:{}/elsewhere", front.port());
    let shown = format!("{:?}", with_header(&wrong_path));
    assert!(
        shown.contains("Authorization") && !shown.contains("s3cr3t"),
        "{shown}"
    );
    let error = connect_error(with_header(&wrong_path)).await;
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains("s3cr3t"), "{shown}");
}

// ---------------------------------------------------------------------------------
// HTTP CONNECT proxy

#[tokio::test]
async fn a_proxy_tunnels_mqtt() {
    let broker = broker().await;
    let proxy = ConnectProxy::start().await.unwrap();
    let via = ProxyConfig::new("127.0.0.1", proxy.port());
    pubsub_each_qos(&broker.url(), highest_qos(&broker), |b| {
        b.proxy(via.clone())
    })
    .await;
    assert_eq!(proxy.tunnels(), 2, "both clients went through the proxy");
}

#[tokio::test]
async fn a_proxy_tunnels_websocket_with_credentials() {
    let broker = broker().await;
    let front = WsFront::start(addr_of(&broker)).await.unwrap();
    let proxy = ConnectProxy::with_credentials("alice", "pr0xy-pw")
        .await
        .unwrap();
    let url = format!("http://alice:pr0xy-pw@127.0.0.1:{}", proxy.port());
    let via = ProxyConfig::from_url(&url).unwrap();
    pubsub_each_qos(&front.url(), highest_qos(&broker), |b| b.proxy(via.clone())).await;
    assert_eq!((proxy.tunnels(), front.upgrades()), (2, 2));
}

#[tokio::test]
async fn a_proxy_refusal_is_a_typed_error_without_the_password() {
    let broker = broker().await;
    let proxy = ConnectProxy::with_credentials("alice", "right")
        .await
        .unwrap();
    let proxy_addr = format!("127.0.0.1:{}", proxy.port());
    for via in [
        ProxyConfig::new("127.0.0.1", proxy.port()),
        ProxyConfig::new("127.0.0.1", proxy.port()).credentials("alice", "wr0ng-pw"),
    ] {
        let builder = quick_reconnects().url(&broker.url()).proxy(via);
        let shown = format!("{builder:?}");
        assert!(!shown.contains("wr0ng-pw"), "{shown}");
        let error = connect_error(builder).await;
        assert!(
            matches!(&error, ConnectError::ProxyRefused { status: 407, proxy, broker: b }
                if *proxy == proxy_addr && *b == format!("127.0.0.1:{}", broker.port())),
            "{error:?}"
        );
        let shown = format!("{error} {error:?}");
        assert!(!shown.contains("wr0ng-pw"), "{shown}");
    }
    assert_eq!((proxy.tunnels(), proxy.refused()), (0, 2));
}

#[tokio::test]
async fn an_unreachable_proxy_is_a_proxy_error() {
    let port = courier_testkit::free_port().unwrap();
    let error = connect_error(
        quick_reconnects()
            .address("broker.invalid", 1883)
            .proxy(ProxyConfig::new("127.0.0.1", port)),
    )
    .await;
    assert!(
        matches!(&error, ConnectError::Proxy { proxy, source, .. }
            if *proxy == format!("127.0.0.1:{port}") && source.kind() == io::ErrorKind::ConnectionRefused),
        "{error:?}"
    );
}

// ---------------------------------------------------------------------------------
// The fault suite's promises over WebSocket

/// F1 over WebSocket: 5 SIGTERM restarts of the broker behind the front during a
/// stream of 2,000 QoS 1 publishes; lost = 0, every publish Ok, sessions kept.
#[tokio::test]
async fn f1_ws_broker_restarts_lose_no_qos1_message() {
    f1_restarts_lose_no_qos1_message(Link::WebSocket).await;
}

/// F4 over WebSocket: the link behind the front goes silent; keep-alive detects it
/// within 2 × keep-alive + 1 s, the clients reconnect once it is back, and no QoS 1
/// message published meanwhile is lost.
#[tokio::test]
async fn f4_ws_half_open_link_is_detected_and_recovered() {
    f4_half_open_link(Link::WebSocket).await;
}
