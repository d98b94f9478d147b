#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed expectation fails the test"
)]
//! The cluster against embedded rumqttd brokers: quick checks of the pool, the
//! subscription kinds and a channel resolver (the Mosquitto scenarios are in the
//! workspace's `tests/cluster.rs`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier_cluster::{
    Address, Balance, ChannelResolver, ClusterBuilder, ClusterConfigError, ClusterConnectError,
    Mode, StaticResolver,
};
use courier_core::{Backoff, Client, ClientBuilder, Message, QoS};
use courier_testkit::{EmbeddedBroker, free_port};

async fn embedded() -> Address {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port().unwrap()));
    // An embedded broker lives until the process exits.
    std::mem::drop(EmbeddedBroker::start(addr).await.unwrap());
    Address::from(addr)
}

fn template() -> ClientBuilder {
    Client::builder()
        .clean_session(true)
        .connect_timeout(Duration::from_secs(5))
        .start_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(200),
        ))
}

async fn eventually(mut check: impl FnMut() -> bool) -> bool {
    for _ in 0..250 {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn pool_spreads_publishes_and_places_subscriptions() {
    let broker = embedded().await;
    let cluster = ClusterBuilder::new(template().address(broker.host.clone(), broker.port))
        .client_id("embedded-pool")
        .pool_size(2)
        .balance(Balance::RoundRobin)
        .connect()
        .await
        .unwrap();
    assert_eq!(cluster.info().mode, Mode::Pool.as_str());
    assert!(eventually(|| cluster.info().connected_count() == 2).await);

    let mut plain = cluster.subscribe("e/plain").await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    let handle = cluster
        .subscribe_many([("$share/g/e/shared", QoS::AtLeastOnce)])
        .handler(move |_c: Client, _m: Message| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .await
        .unwrap();
    let info = cluster.info();
    let ids: Vec<&str> = info
        .connections
        .iter()
        .map(|c| c.client.client_id.as_str())
        .collect();
    assert_eq!(ids, ["embedded-pool-0", "embedded-pool-1"]);
    let on = |filter: &str| {
        info.connections
            .iter()
            .filter(|c| c.client.subscriptions.contains_key(filter))
            .count()
    };
    assert_eq!(on("e/plain"), 1);
    assert_eq!(on("$share/g/e/shared"), 2);

    for i in 0..10 {
        cluster.publish("e/plain", i.to_string()).await.unwrap();
        cluster
            .publish_value("e/shared", &i)
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    for i in 0..10 {
        let msg = tokio::time::timeout(Duration::from_secs(5), plain.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(msg.payload_str().unwrap(), i.to_string());
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), plain.recv())
            .await
            .is_err(),
        "a plain subscription delivers each message once"
    );
    assert!(eventually(|| handled.load(Ordering::SeqCst) == 10).await);
    let per_conn: Vec<u64> = cluster
        .info()
        .connections
        .iter()
        .map(|c| c.published)
        .collect();
    assert_eq!(per_conn, [10, 10], "round-robin");

    handle.unsubscribe().await.unwrap();
    plain.unsubscribe().await.unwrap();
    let info = cluster.info();
    assert!(info.subscriptions.is_empty());
    assert!(
        info.connections
            .iter()
            .all(|c| c.client.subscriptions.is_empty())
    );
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["mode"], "pool");
    assert_eq!(json["connections"][0]["client_id"], "embedded-pool-0");
    cluster.stop().await;
    cluster.stop().await;
    assert!(cluster.publish("e/plain", "x").await.is_err());
}

#[tokio::test]
async fn multi_mode_follows_a_channel_resolver() {
    let (a, b) = (embedded().await, embedded().await);
    let (resolver, handle) = ChannelResolver::new();
    handle.update(vec![a.clone(), b.clone()]);
    let cluster = ClusterBuilder::new(template())
        .client_id("embedded-multi")
        .multi_connection(resolver)
        .connect()
        .await
        .unwrap();
    assert!(eventually(|| cluster.info().connected_count() == 2).await);
    let mut sub = cluster.subscribe("$share/m/m/#").await.unwrap();
    handle.update(vec![b.clone()]);
    assert!(
        eventually(|| {
            let info = cluster.info();
            info.connections.len() == 1 && info.addresses == [b.to_string()]
        })
        .await
    );
    cluster.publish("m/1", "after").await.unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(msg.payload_str().unwrap(), "after");
    // Back again: the freed index is reused.
    handle.update(vec![a.clone(), b.clone()]);
    assert!(eventually(|| cluster.info().connected_count() == 2).await);
    let mut ids: Vec<String> = cluster
        .info()
        .connections
        .into_iter()
        .map(|c| c.client.client_id)
        .collect();
    ids.sort();
    assert_eq!(ids, ["embedded-multi-0", "embedded-multi-1"]);
    cluster.stop().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), sub.recv())
            .await
            .unwrap()
            .is_none(),
        "the stream ends when the cluster stops"
    );
}

#[tokio::test]
async fn configuration_errors_are_typed() {
    let resolver = StaticResolver::new([Address::new("localhost", 1883)]);
    let err = |b: ClusterBuilder| b.start().err();
    assert!(matches!(
        err(ClusterBuilder::new(template())
            .client_id("x")
            .pool_size(3)
            .multi_connection(resolver.clone())),
        Some(ClusterConfigError::PoolWithMultiConnection { pool_size: 3 })
    ));
    assert!(matches!(
        err(ClusterBuilder::new(template()).client_id("x").pool_size(0)),
        Some(ClusterConfigError::ZeroPoolSize)
    ));
    assert!(matches!(
        err(ClusterBuilder::new(template()).pool_size(2)),
        Some(ClusterConfigError::MissingClientId)
    ));
    assert!(matches!(
        err(ClusterBuilder::new(template())
            .client_id("x")
            .failover_delay(Duration::ZERO)),
        Some(ClusterConfigError::ZeroFailoverDelay)
    ));
    // The template is checked at once when the addresses are known.
    assert!(matches!(
        err(ClusterBuilder::new(template()).client_id("x")),
        Some(ClusterConfigError::Client(
            courier_core::ConfigError::MissingAddress
        ))
    ));
    assert!(matches!(
        err(
            ClusterBuilder::new(template().keep_alive(Duration::from_millis(10)))
                .client_id("x")
                .multi_connection(resolver)
        ),
        Some(ClusterConfigError::Client(
            courier_core::ConfigError::KeepAlive(_)
        ))
    ));
}

#[tokio::test]
async fn connect_fails_when_every_connection_fails() {
    let port = free_port().unwrap();
    let result = ClusterBuilder::new(template().address("127.0.0.1", port))
        .client_id("nobody")
        .pool_size(2)
        .connect()
        .await;
    assert!(
        matches!(result, Err(ClusterConnectError::Connect(_))),
        "{result:?}"
    );
}

#[test]
fn outside_a_runtime_is_a_config_error() {
    assert!(matches!(
        ClusterBuilder::new(template()).client_id("x").start().err(),
        Some(ClusterConfigError::Client(
            courier_core::ConfigError::NoRuntime
        ))
    ));
}

/// The template's `on_connect` runs once per connection and gets the client on the
/// cluster, not the connection's own handle: what it subscribes is the cluster's.
#[tokio::test]
async fn on_connect_gets_the_client_on_the_cluster() {
    let broker = embedded().await;
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    let template = template()
        .address(broker.host.clone(), broker.port)
        .on_connect(move |client: Client, _present| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(client.info().mode);
            }
        });
    let cluster = ClusterBuilder::new(template)
        .client_id("embedded-callbacks")
        .pool_size(2)
        .connect()
        .await
        .unwrap();
    assert!(eventually(|| seen.lock().unwrap().len() == 2).await);
    assert_eq!(*seen.lock().unwrap(), ["pool", "pool"]);
    cluster.stop().await;
}
