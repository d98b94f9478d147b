#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "tests: a failed expectation fails the test"
)]
//! courier-cluster against a real clustered broker: three NATS servers with routes,
//! JetStream replicating the MQTT streams on all three, an MQTT listener on each
//! (`courier_testkit::NatsCluster`).
//!
//! "Acknowledged" below means a QoS 1 publish resolved `Ok`: the node's PUBACK came
//! back. NATS sends it once the message is stored in the `$MQTT_msgs` stream, which is
//! replicated on the three nodes, a write needing a majority (two). "Kept" means the
//! message is then in the stream of the surviving majority and reaches a subscriber
//! on a surviving node. Killing one node must lose none of those.
//!
//! The tests print their measurements (`cluster-nats: …` lines, `-- --nocapture`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier_cluster::{Address, ChannelResolver, ClusterBuilder, Mode, StaticResolver};
use courier_core::{Backoff, Client, ClientBuilder, PublishError, QoS, Subscription};
use courier_testkit::{BrokerKind, NatsCluster};
use tokio::time::Instant;

/// One cluster at a time: three clusters of three JetStream servers at once on a
/// two-core machine measure the machine, not the failover.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Starts the cluster (holding [`ONE_AT_A_TIME`] for the test), or `None` (test
/// skipped) when the environment does not select NATS.
async fn nats_cluster_or_skip(
    test: &str,
) -> Option<(NatsCluster, tokio::sync::MutexGuard<'static, ()>)> {
    let selected = BrokerKind::from_env().unwrap();
    if selected != BrokerKind::Nats {
        eprintln!(
            "SKIP {test}: needs a NATS cluster, COURIER_TEST_BROKER={}",
            selected.name()
        );
        return None;
    }
    let turn = ONE_AT_A_TIME.lock().await;
    Some((NatsCluster::start(3).await.unwrap(), turn))
}

fn addresses(cluster: &NatsCluster) -> Vec<Address> {
    cluster
        .ports()
        .into_iter()
        .map(|port| Address::from((cluster.host(), port)))
        .collect()
}

fn template() -> ClientBuilder {
    Client::builder()
        .clean_session(true)
        .connect_timeout(Duration::from_secs(5))
        .start_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .reconnect_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
}

fn client_id(name: &str) -> String {
    format!("nats-cluster-{name}-{}", std::process::id())
}

async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// A QoS 1 subscriber on one node that records the sequence numbers it receives.
struct Subscriber {
    client: Client,
    received: Arc<Mutex<Vec<u64>>>,
}

impl Subscriber {
    async fn start(cluster: &NatsCluster, node: usize, filter: &str) -> Subscriber {
        let client = template()
            .address(cluster.host(), cluster.ports()[node])
            .client_id(client_id(&format!("sub{node}")))
            .connect()
            .await
            .unwrap();
        let sub = client
            .subscribe(filter)
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
        let received: Arc<Mutex<Vec<u64>>> = Arc::default();
        tokio::spawn(record(sub, received.clone()));
        Subscriber { client, received }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// How often each sequence number arrived.
    fn tally(&self) -> BTreeMap<u64, usize> {
        let mut tally = BTreeMap::new();
        for n in self.received.lock().unwrap().iter() {
            *tally.entry(*n).or_default() += 1;
        }
        tally
    }
}

async fn record(mut sub: Subscription, into: Arc<Mutex<Vec<u64>>>) {
    while let Some(msg) = sub.recv().await {
        into.lock()
            .unwrap()
            .push(msg.payload_str().unwrap().parse().unwrap());
    }
}

/// A client on node 0 and one on node 1: QoS 1 messages cross the route in order.
#[tokio::test]
async fn a_publisher_on_one_node_reaches_a_subscriber_on_another() {
    const N: u64 = 200;
    let Some((cluster, _turn)) =
        nats_cluster_or_skip("a_publisher_on_one_node_reaches_a_subscriber_on_another").await
    else {
        return;
    };
    let subscriber = Subscriber::start(&cluster, 1, "nats-cross/+").await;
    let publisher = template()
        .address(cluster.host(), cluster.ports()[0])
        .client_id(client_id("pub0"))
        .connect()
        .await
        .unwrap();
    for n in 0..N {
        publisher
            .publish(format!("nats-cross/{}", n % 4), n.to_string())
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    assert!(eventually(Duration::from_secs(10), || subscriber.count() >= N as usize).await);
    let received = subscriber.received.lock().unwrap().clone();
    println!(
        "cluster-nats: cross-node: published={N} received={}",
        received.len()
    );
    assert_eq!(received, (0..N).collect::<Vec<_>>());
    publisher.stop().await;
    subscriber.client.stop().await;
}

/// Multi-broker mode over the three nodes publishes a QoS 1 stream while the node one
/// of its connections uses is killed: every acknowledged publish reaches a subscriber
/// on another node, the publishes after the failover succeed, and the node's return
/// brings its connection back.
#[tokio::test]
async fn killing_a_node_fails_over_and_loses_no_acknowledged_message() {
    const N: u64 = 1500;
    const KILL_AT: u64 = 500;
    const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);
    let Some((mut cluster, _turn)) =
        nats_cluster_or_skip("killing_a_node_fails_over_and_loses_no_acknowledged_message").await
    else {
        return;
    };
    let subscriber = Subscriber::start(&cluster, 2, "nats-failover/#").await;
    let publisher = ClusterBuilder::new(template())
        .client_id(client_id("multi"))
        .multi_connection(StaticResolver::new(addresses(&cluster)))
        .connect()
        .await
        .unwrap();
    assert_eq!(publisher.info().mode, Mode::Multi.as_str());
    assert!(
        eventually(Duration::from_secs(10), || publisher
            .info()
            .connected_count()
            == 3)
        .await
    );

    let mut acked = Vec::new();
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut killed_at = None;
    let mut first_ok_after_kill = None;
    let started = Instant::now();
    for n in 0..N {
        if n == KILL_AT {
            cluster.kill(0).await.unwrap();
            killed_at = Some(Instant::now());
        }
        let result = publisher
            .publish(format!("nats-failover/{}", n % 8), n.to_string())
            .qos(QoS::AtLeastOnce)
            .timeout(PUBLISH_TIMEOUT)
            .await;
        match result {
            Ok(()) => {
                acked.push(n);
                if killed_at.is_some() && first_ok_after_kill.is_none() {
                    first_ok_after_kill = Some(Instant::now());
                }
            }
            Err(e) => *errors.entry(error_kind(&e)).or_default() += 1,
        }
    }
    let published_in = started.elapsed();
    let killed_node = format!("{}:{}", cluster.host(), cluster.ports()[0]);
    let killed_node_connected = publisher
        .info()
        .connections
        .iter()
        .any(|c| c.address == killed_node && c.client.connected);
    // Every acknowledged message must arrive; wait for them, then for stragglers.
    let all_arrived = eventually(Duration::from_secs(40), || {
        let tally = subscriber.tally();
        acked.iter().all(|n| tally.contains_key(n))
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let tally = subscriber.tally();
    let lost: Vec<u64> = acked
        .iter()
        .copied()
        .filter(|n| !tally.contains_key(n))
        .collect();
    let duplicated: usize = tally.values().map(|c| c - 1).sum();
    let unacked_but_delivered = tally.keys().filter(|n| !acked.contains(n)).count();
    let acked_after_kill = acked.iter().filter(|n| **n >= KILL_AT).count();
    let failover_ms = match (killed_at, first_ok_after_kill) {
        (Some(k), Some(ok)) => ok.duration_since(k).as_millis(),
        _ => 0,
    };

    cluster.start_again(0).await.unwrap();
    let reconnected = eventually(Duration::from_secs(20), || {
        publisher.info().connected_count() == 3
    })
    .await;
    println!(
        "cluster-nats: failover: published={N} kill_at={KILL_AT} acked={} acked_after_kill={acked_after_kill} \
         errors={errors:?} lost={} duplicated={duplicated} unacked_but_delivered={unacked_but_delivered} \
         failover_ms={failover_ms} published_in_ms={} killed_node_connected={killed_node_connected} reconnected={reconnected}",
        acked.len(),
        lost.len(),
        published_in.as_millis(),
    );
    assert!(all_arrived, "acknowledged but never delivered: {lost:?}");
    assert!(lost.is_empty());
    assert!(
        !killed_node_connected,
        "the killed node's connection is down"
    );
    assert!(
        acked_after_kill as u64 >= (N - KILL_AT) / 2,
        "the other two nodes took the publishes after the kill: {acked_after_kill}"
    );
    assert!(reconnected, "the node's return brings its connection back");
    publisher.stop().await;
    subscriber.client.stop().await;
}

fn error_kind(error: &PublishError) -> String {
    let text = format!("{error:?}");
    text.split(['(', ' ', '{'])
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Membership changes reach the cluster through its resolver: a node added to the
/// list gets a connection and traffic, a node removed loses its connection, and the
/// messages published meanwhile all arrive.
#[tokio::test]
async fn the_resolver_learns_membership_changes() {
    const N: u64 = 90;
    let Some((cluster, _turn)) =
        nats_cluster_or_skip("the_resolver_learns_membership_changes").await
    else {
        return;
    };
    let nodes = addresses(&cluster);
    let subscriber = Subscriber::start(&cluster, 1, "nats-members/#").await;
    let (resolver, handle) = ChannelResolver::new();
    handle.update(nodes[..2].to_vec());
    let publisher = ClusterBuilder::new(template())
        .client_id(client_id("members"))
        .multi_connection(resolver)
        .connect()
        .await
        .unwrap();
    let connected_to = |publisher: &Client| -> Vec<String> {
        let mut addresses: Vec<String> = publisher
            .info()
            .connections
            .iter()
            .filter(|c| c.client.connected)
            .map(|c| c.address.clone())
            .collect();
        addresses.sort();
        addresses
    };
    let names = |list: &[Address]| -> Vec<String> {
        let mut names: Vec<String> = list
            .iter()
            .map(|a| format!("{}:{}", a.host, a.port))
            .collect();
        names.sort();
        names
    };
    assert!(
        eventually(Duration::from_secs(10), || connected_to(&publisher)
            == names(&nodes[..2]))
        .await
    );
    publish_range(&publisher, 0..N / 3).await;

    handle.update(nodes.clone());
    assert!(
        eventually(Duration::from_secs(10), || connected_to(&publisher)
            == names(&nodes))
        .await,
        "a node joined: {:?}",
        connected_to(&publisher)
    );
    publish_range(&publisher, N / 3..2 * N / 3).await;
    let joined_published = publisher
        .info()
        .connections
        .iter()
        .find(|c| c.address == names(&nodes[2..])[0])
        .map_or(0, |c| c.published);

    handle.update(nodes[1..].to_vec());
    assert!(
        eventually(Duration::from_secs(10), || connected_to(&publisher)
            == names(&nodes[1..]))
        .await,
        "a node left: {:?}",
        connected_to(&publisher)
    );
    publish_range(&publisher, 2 * N / 3..N).await;

    assert!(eventually(Duration::from_secs(10), || subscriber.count() >= N as usize).await);
    let tally = subscriber.tally();
    println!(
        "cluster-nats: membership: published={N} received={} distinct={} joined_node_published={joined_published}",
        subscriber.count(),
        tally.len()
    );
    assert_eq!(
        tally.keys().copied().collect::<Vec<_>>(),
        (0..N).collect::<Vec<_>>()
    );
    assert!(
        joined_published > 0,
        "the joined node got some of the publishes"
    );
    publisher.stop().await;
    subscriber.client.stop().await;
}

async fn publish_range(publisher: &Client, range: std::ops::Range<u64>) {
    for n in range {
        publisher
            .publish(format!("nats-members/{}", n % 3), n.to_string())
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
}
