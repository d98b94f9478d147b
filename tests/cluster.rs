#![allow(
    clippy::unwrap_used,
    reason = "tests: a failed expectation fails the test"
)]
//! Several connections behind one client (courier-cluster): multi-connection mode over
//! three Mosquittos, shared subscriptions, brokers removed, killed and added back,
//! single-connection failover, a pool of four, and the pool throughput benchmark.
//!
//! Every test prints a `cluster:` metrics line (msgs, lost, dup) even when it passes.
//! The benchmark is ignored; run it with:
//!
//! ```text
//! cargo test --release -p courier-integration-tests --test cluster -- --ignored --nocapture pool_throughput
//! ```

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use courier::cluster::{
    Address, Balance, ChannelResolver, ClusterBuilder, ClusterConfigError, Mode, StaticResolver,
};
use courier::{Client, ClientBuilder, Message, QoS, Subscription};
use courier_integration_tests::{
    Capability, TestBroker, broker, client, client_id, eventually, quick_reconnects,
    selected_broker_has,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

/// A client template with quick reconnects and clean sessions.
fn template() -> ClientBuilder {
    quick_reconnects().graceful_shutdown_period(Duration::from_secs(5))
}

fn address(broker: &TestBroker) -> Address {
    Address::new(broker.host(), broker.port())
}

/// A plain client on one broker that records the numeric payloads it receives.
struct Counter {
    client: Client,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl Counter {
    async fn start(broker: &TestBroker, filter: &str) -> Counter {
        let client = client(broker, "counter").connect().await.unwrap();
        let mut sub = client
            .subscribe(filter)
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        tokio::spawn(async move {
            while let Some(msg) = sub.recv().await {
                if let Ok(n) = msg.payload_str().unwrap_or_default().parse() {
                    record.lock().unwrap().push(n);
                }
            }
        });
        Counter { client, seen }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn count_in(&self, range: std::ops::Range<u64>) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|n| range.contains(n))
            .count()
    }

    /// Wait until the count stays the same for `quiet`.
    async fn settle(&self, quiet: Duration) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut last = self.count();
        let mut since = Instant::now();
        while Instant::now() < deadline && since.elapsed() < quiet {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let now = self.count();
            if now != last {
                last = now;
                since = Instant::now();
            }
        }
    }
}

/// (distinct, lost, duplicated) of `expected` sequence numbers over several counters.
fn tally<'a>(
    counters: impl IntoIterator<Item = &'a Counter>,
    expected: u64,
) -> (usize, usize, usize) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    for counter in counters {
        for n in counter.seen.lock().unwrap().iter() {
            *seen.entry(*n).or_default() += 1;
        }
    }
    let lost = (0..expected).filter(|n| !seen.contains_key(n)).count();
    let dup = seen.values().map(|c| c - 1).sum();
    (seen.len(), lost, dup)
}

/// Publish `range` as `"{prefix}/{n}"` with payload `n`, `window` at a time.
async fn publish_range(
    cluster: &Client,
    prefix: &str,
    range: std::ops::Range<u64>,
    window: usize,
) -> Vec<Result<(), courier::PublishError>> {
    futures_util::stream::iter(range)
        .map(|n| {
            cluster
                .publish(format!("{prefix}/{n}"), n.to_string())
                .qos(QoS::AtLeastOnce)
                .into_future()
        })
        .buffered(window)
        .collect()
        .await
}

async fn three_brokers() -> [TestBroker; 3] {
    [broker().await, broker().await, broker().await]
}

/// Receive until `n` messages arrived or `within` passed.
async fn drain_n(sub: &mut Subscription, n: usize, within: Duration) -> Vec<Message> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(msg)) => got.push(msg),
            _ => break,
        }
    }
    got
}

/// The distinct payloads a subscription yields until it stays quiet for 500 ms.
async fn distinct_until_quiet(sub: &mut Subscription) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(500), sub.recv()).await {
            Ok(Some(msg)) => {
                seen.insert(msg.payload_str().unwrap().to_owned());
            }
            _ => break,
        }
    }
    seen
}

/// Multi-connection mode over three brokers: publishes reach all three, a plain
/// subscription lives on one connection (the primary), a shared one on all three
/// and sees everything.
#[tokio::test]
async fn multi_mode_spreads_publishes_over_every_broker() {
    const N: u64 = 300;
    if !selected_broker_has(
        "multi_mode_spreads_publishes_over_every_broker",
        &[
            Capability::OwnBroker,
            Capability::SharedSubscriptions,
            Capability::SteadyUnderLoad,
        ],
    ) {
        return;
    }
    let brokers = three_brokers().await;
    let mut counters = Vec::new();
    for b in &brokers {
        counters.push(Counter::start(b, "spread/#").await);
    }
    let cluster = ClusterBuilder::new(template())
        .client_id(client_id("multi"))
        .multi_connection(StaticResolver::new(brokers.iter().map(address)))
        .connect()
        .await
        .unwrap();
    assert_eq!(cluster.info().mode, Mode::Multi.as_str());
    assert!(
        eventually(Duration::from_secs(10), || cluster.info().connected_count()
            == 3)
        .await
    );
    let mut plain = cluster.subscribe("spread/#").await.unwrap();
    let mut shared = cluster.subscribe("$share/all/spread/#").await.unwrap();

    let results = publish_range(&cluster, "spread", 0..N, 32).await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        eventually(Duration::from_secs(10), || counters
            .iter()
            .map(Counter::count)
            .sum::<usize>()
            >= N as usize)
        .await
    );
    let (distinct, lost, dup) = tally(&counters, N);
    let per_broker: Vec<usize> = counters.iter().map(Counter::count).collect();
    // Read both streams at once: an unread subscription holds back its connection.
    let (everything, plain_got) = tokio::join!(
        distinct_until_quiet(&mut shared),
        distinct_until_quiet(&mut plain)
    );

    let info = cluster.info();
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["mode"], "multi");
    assert_eq!(info.connections.len(), 3);
    let ids: Vec<&str> = info
        .connections
        .iter()
        .map(|c| c.client.client_id.as_str())
        .collect();
    let primary: Vec<_> = info.connections.iter().filter(|c| c.primary).collect();
    assert_eq!(primary.len(), 1);
    let with_plain = info
        .connections
        .iter()
        .filter(|c| c.client.subscriptions.contains_key("spread/#"))
        .count();
    let with_shared = info
        .connections
        .iter()
        .filter(|c| c.client.subscriptions.contains_key("$share/all/spread/#"))
        .count();
    // The plain subscription sees what its broker got: the primary's share.
    let primary_broker = brokers
        .iter()
        .position(|b| primary[0].address == format!("{}:{}", b.host(), b.port()))
        .unwrap();
    println!(
        "cluster: multi mode: msgs={N} distinct={distinct} lost={lost} dup={dup} per_broker={per_broker:?} shared_sub_got={} plain_sub_got={} client_ids={ids:?}",
        everything.len(),
        plain_got.len()
    );
    assert_eq!((lost, dup), (0, 0));
    assert!(per_broker.iter().all(|n| *n > 0), "{per_broker:?}");
    assert_eq!(everything.len(), N as usize);
    assert_eq!(
        with_plain, 1,
        "a plain subscription lives on one connection"
    );
    assert_eq!(
        with_shared, 3,
        "a shared subscription lives on every connection"
    );
    assert_eq!(plain_got.len(), per_broker[primary_broker]);
    assert!(ids.iter().all(|id| id.rsplit_once('-').is_some()));
    cluster.stop().await;
    assert!(cluster.publish("spread/x", "late").await.is_err());
    for c in counters {
        c.client.stop().await;
    }
}

/// A shared subscription in two clusters over three brokers: every QoS 1 message is
/// handled exactly once, and both clusters get some.
#[tokio::test]
async fn shared_subscription_splits_messages_between_two_clusters() {
    const N: u64 = 300;
    if !selected_broker_has(
        "shared_subscription_splits_messages_between_two_clusters",
        &[Capability::OwnBroker, Capability::SharedSubscriptions],
    ) {
        return;
    }
    let brokers = three_brokers().await;
    let resolver = StaticResolver::new(brokers.iter().map(address));
    let mut clusters = Vec::new();
    let handled: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    for k in 0..2 {
        let cluster = ClusterBuilder::new(template())
            .client_id(client_id("shared"))
            .multi_connection(resolver.clone())
            .connect()
            .await
            .unwrap();
        assert!(
            eventually(Duration::from_secs(10), || cluster.info().connected_count()
                == 3)
            .await
        );
        let record = handled.clone();
        cluster
            .subscribe("$share/g/jobs/#")
            .qos(QoS::AtLeastOnce)
            .handler(move |_client: Client, msg: Message| {
                let n: u64 = msg.payload_str().unwrap().parse().unwrap();
                record.lock().unwrap().push((k, n));
                async {}
            })
            .await
            .unwrap();
        clusters.push(cluster);
    }
    let results = publish_range(&clusters[0], "jobs", 0..N, 32).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        eventually(Duration::from_secs(10), || handled.lock().unwrap().len()
            >= N as usize)
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await; // any duplicate would show now
    let handled = handled.lock().unwrap().clone();
    let mut per_message: BTreeMap<u64, usize> = BTreeMap::new();
    let mut per_cluster = [0usize; 2];
    for (k, n) in &handled {
        *per_message.entry(*n).or_default() += 1;
        per_cluster[*k] += 1;
    }
    let lost = (0..N).filter(|n| !per_message.contains_key(n)).count();
    let dup: usize = per_message.values().map(|c| c - 1).sum();
    println!(
        "cluster: shared subscription: msgs={N} handled={} lost={lost} dup={dup} per_cluster={per_cluster:?}",
        handled.len()
    );
    assert_eq!((lost, dup), (0, 0));
    assert!(per_cluster.iter().all(|n| *n > 0), "{per_cluster:?}");
    for c in clusters {
        c.stop().await;
    }
}

/// A channel resolver drops a broker from the list mid-stream, then the broker is
/// killed: every QoS 1 publish resolves Ok and reaches a subscriber. Adding it back
/// brings traffic and the cluster's subscriptions back to it.
#[tokio::test]
async fn removing_then_killing_a_broker_loses_no_qos1_publish() {
    const N: u64 = 2000;
    const M: u64 = 300;
    if !selected_broker_has(
        "removing_then_killing_a_broker_loses_no_qos1_publish",
        &[
            Capability::OwnBroker,
            Capability::Restart,
            Capability::SharedSubscriptions,
        ],
    ) {
        return;
    }
    let mut brokers = three_brokers().await;
    let mut counters = Vec::new();
    for b in &brokers {
        counters.push(Counter::start(b, "steady/#").await);
    }
    let (resolver, handle) = ChannelResolver::new();
    handle.update(brokers.iter().map(address).collect());
    let cluster = ClusterBuilder::new(template())
        .client_id(client_id("steady"))
        .multi_connection(resolver)
        .failover_delay(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || cluster.info().connected_count()
            == 3)
        .await
    );
    let mut back = cluster.subscribe("$share/c/back/#").await.unwrap();

    let done = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let cluster = cluster.clone();
        let done = done.clone();
        async move {
            let mut results = Vec::with_capacity(N as usize);
            for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
                results.extend(
                    join_all(chunk.iter().map(|n| {
                        cluster
                            .publish(format!("steady/{n}"), n.to_string())
                            .into_future()
                    }))
                    .await,
                );
                done.fetch_add(chunk.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            results
        }
    });
    while done.load(Ordering::SeqCst) < N as usize / 4 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let removed_at = done.load(Ordering::SeqCst);
    let gone = address(&brokers[2]).to_string();
    handle.update(vec![address(&brokers[0]), address(&brokers[1])]);
    let drain_started = Instant::now();
    assert!(
        eventually(Duration::from_secs(10), || cluster
            .info()
            .connections
            .iter()
            .all(|c| c.address != gone))
        .await,
        "the removed connection drains and closes"
    );
    let drained = drain_started.elapsed();
    counters[2].settle(Duration::from_millis(300)).await;
    let killed_at = done.load(Ordering::SeqCst);
    brokers[2].kill().await.unwrap();

    let results = sender.await.unwrap();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(
        eventually(Duration::from_secs(10), || tally(&counters, N).1 == 0).await,
        "every message reaches a subscriber"
    );
    let (distinct, lost, dup) = tally(&counters, N);
    let after_kill = counters[2].count_in(killed_at as u64..N);
    println!(
        "cluster: remove+kill: msgs={N} failed={} distinct={distinct} lost={lost} dup={dup} removed_after={removed_at} killed_after={killed_at} drained_in={drained:?} on_removed_broker_after_kill={after_kill}",
        failed.len()
    );
    assert!(failed.is_empty(), "first failure: {:?}", failed.first());
    assert_eq!(lost, 0);
    assert!(killed_at < N as usize, "the kill happened mid-stream");

    // Add it back: it gets traffic and the shared subscription again.
    brokers[2].start_again().await.unwrap();
    handle.update(brokers.iter().map(address).collect());
    assert!(
        eventually(Duration::from_secs(10), || {
            let info = cluster.info();
            info.connections.iter().any(|c| {
                c.address == gone
                    && c.client.connected
                    && c.client.subscriptions.contains_key("$share/c/back/#")
            })
        })
        .await,
        "the re-added broker is connected and subscribed"
    );
    assert!(counters[2].client.wait_connected().await.is_ok());
    tokio::time::sleep(Duration::from_millis(200)).await; // the counter re-subscribes
    let results = publish_range(&cluster, "steady", N..N + M, 32).await;
    assert!(results.iter().all(Result::is_ok));
    assert!(
        eventually(Duration::from_secs(10), || counters[2].count_in(N..N + M)
            > 0)
        .await,
        "the re-added broker carries traffic"
    );
    let direct = client(&brokers[2], "direct").connect().await.unwrap();
    direct.publish("back/1", "direct").await.unwrap();
    let got = drain_n(&mut back, 1, Duration::from_secs(5)).await;
    println!(
        "cluster: re-added broker: msgs={M} on_readded={} subscription_delivered={}",
        counters[2].count_in(N..N + M),
        got.len()
    );
    assert_eq!(
        got.len(),
        1,
        "the subscription was re-made on the re-added broker"
    );
    direct.stop().await;
    cluster.stop().await;
    for c in counters {
        c.client.stop().await;
    }
}

/// Multi-connection mode: a broker that stays in the list is killed mid-stream. New
/// publishes avoid it at once, those waiting on it are re-sent elsewhere after the
/// failover delay: every publish resolves Ok. (Messages the killed broker had
/// acknowledged but not yet forwarded die with it: printed as `lost`, not asserted.)
#[tokio::test]
async fn killing_a_listed_broker_fails_no_publish() {
    const N: u64 = 1000;
    if !selected_broker_has(
        "killing_a_listed_broker_fails_no_publish",
        &[Capability::OwnBroker, Capability::Restart],
    ) {
        return;
    }
    let mut brokers = three_brokers().await;
    let mut counters = Vec::new();
    for b in &brokers {
        counters.push(Counter::start(b, "kill/#").await);
    }
    let cluster = ClusterBuilder::new(template())
        .client_id(client_id("kill"))
        .multi_connection(StaticResolver::new(brokers.iter().map(address)))
        .failover_delay(Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || cluster.info().connected_count()
            == 3)
        .await
    );
    let done = Arc::new(AtomicUsize::new(0));
    let sender = tokio::spawn({
        let cluster = cluster.clone();
        let done = done.clone();
        async move {
            let mut results = Vec::with_capacity(N as usize);
            for chunk in (0..N).collect::<Vec<_>>().chunks(20) {
                results.extend(
                    join_all(chunk.iter().map(|n| {
                        cluster
                            .publish(format!("kill/{n}"), n.to_string())
                            .into_future()
                    }))
                    .await,
                );
                done.fetch_add(chunk.len(), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            results
        }
    });
    while done.load(Ordering::SeqCst) < N as usize * 3 / 10 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let killed_at = done.load(Ordering::SeqCst);
    brokers[1].kill().await.unwrap();
    let results = sender.await.unwrap();
    let failed: Vec<_> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let survivors = [&counters[0], &counters[2]];
    eventually(Duration::from_secs(5), || {
        counters.iter().map(Counter::count).sum::<usize>() >= N as usize
    })
    .await;
    let (distinct, lost, dup) = tally(&counters, N);
    let after = survivors
        .iter()
        .map(|c| c.count_in(killed_at as u64 + 100..N))
        .sum::<usize>();
    let killed = address(&brokers[1]).to_string();
    let healthy = || {
        cluster
            .info()
            .connections
            .iter()
            .find(|c| c.address == killed)
            .map(|c| c.healthy)
    };
    println!(
        "cluster: kill listed broker: msgs={N} failed={} distinct={distinct} lost={lost} dup={dup} killed_after={killed_at} later_on_survivors={after} killed_conn_healthy={:?}",
        failed.len(),
        healthy()
    );
    assert!(failed.is_empty(), "first failure: {:?}", failed.first());
    assert!(killed_at < N as usize, "the kill happened mid-stream");
    // The stream can end within the failover delay (500 ms) when no publish was
    // waiting on the killed broker: it is marked down once the delay has passed.
    assert!(
        eventually(Duration::from_secs(5), || healthy() == Some(false)).await,
        "the killed broker's connection is marked down after the failover delay"
    );
    assert_eq!(
        after,
        (N - killed_at as u64 - 100) as usize,
        "later publishes all went to the brokers still up"
    );
    cluster.stop().await;
    for c in counters {
        c.client.stop().await;
    }
}

/// Single-connection mode with a resolver: when the broker dies the cluster fails
/// over to the next address, publishes in flight resolve Ok there, and the
/// subscription moves with it.
#[tokio::test]
async fn single_mode_fails_over_to_the_next_address() {
    const N: u64 = 100;
    if !selected_broker_has(
        "single_mode_fails_over_to_the_next_address",
        &[Capability::OwnBroker, Capability::Restart],
    ) {
        return;
    }
    let mut brokers = [broker().await, broker().await];
    let counters = [
        Counter::start(&brokers[0], "fo/#").await,
        Counter::start(&brokers[1], "fo/#").await,
    ];
    let cluster = ClusterBuilder::new(template())
        .client_id(client_id("failover"))
        .resolver(StaticResolver::new(brokers.iter().map(address)))
        .failover_delay(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let first = address(&brokers[0]).to_string();
    let second = address(&brokers[1]).to_string();
    assert_eq!(cluster.info().active_address, Some(first.clone()));
    let mut sub = cluster.subscribe("fo/#").await.unwrap();
    let results = publish_range(&cluster, "fo", 0..N / 2, 10).await;
    assert!(results.iter().all(Result::is_ok));

    // Everything the first broker acknowledged reached its subscriber before it dies.
    assert!(
        eventually(Duration::from_secs(10), || counters[0].count()
            >= (N / 2) as usize)
        .await
    );
    brokers[0].kill().await.unwrap();
    let killed = Instant::now();
    let results = publish_range(&cluster, "fo", N / 2..N, 10).await;
    let failover = killed.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert!(
        eventually(Duration::from_secs(10), || counters[1].count()
            >= (N / 2) as usize)
        .await
    );
    let info = cluster.info();
    let direct = client(&brokers[1], "direct").connect().await.unwrap();
    // The subscription moved: a message published straight to the second broker
    // arrives (after the ones the cluster published itself).
    let mut moved = false;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !moved && Instant::now() < deadline {
        direct.publish("fo/direct", "x").await.unwrap();
        let got = drain_n(&mut sub, N as usize, Duration::from_millis(300)).await;
        moved = got.iter().any(|m| m.topic() == "fo/direct");
    }
    let (_, lost, dup) = tally(&counters, N);
    println!(
        "cluster: single-mode failover: msgs={N} failed={failed} lost={lost} dup={dup} second_half_on_new_broker={} failover_publishes_took={failover:?} subscription_moved={moved}",
        counters[1].count_in(N / 2..N)
    );
    assert_eq!(failed, 0);
    assert_eq!(lost, 0);
    assert_eq!(counters[0].count_in(0..N / 2), (N / 2) as usize);
    assert_eq!(info.active_address, Some(second));
    assert_eq!(info.connections.len(), 1);
    assert!(moved, "the subscription moved to the new broker");
    direct.stop().await;
    cluster.stop().await;
}

/// A pool of four connections to one broker: 10,000 QoS 1 publishes from concurrent
/// tasks are all acknowledged, every connection carries some; a plain subscription
/// lives on one connection.
#[tokio::test]
async fn pool_of_four_spreads_10k_publishes() {
    const N: u64 = 10_000;
    const TASKS: u64 = 8;
    let broker = broker().await;
    let cluster = pool_of(template(), &broker, "pool", 4).await;
    assert_eq!(cluster.info().mode, Mode::Pool.as_str());
    let mut plain = cluster.subscribe("pool/plain").await.unwrap();
    let started = Instant::now();
    let results = join_all((0..TASKS).map(|t| {
        let cluster = cluster.clone();
        tokio::spawn(async move {
            let per = N / TASKS;
            publish_range(&cluster, "pool/load", t * per..(t + 1) * per, 64).await
        })
    }))
    .await;
    let elapsed = started.elapsed();
    let failed = results
        .into_iter()
        .flat_map(Result::unwrap)
        .filter(Result::is_err)
        .count();
    cluster.publish("pool/plain", "once").await.unwrap();
    let plain_got = drain_n(&mut plain, 2, Duration::from_millis(500)).await;
    let info = cluster.info();
    let per_conn: Vec<u64> = info.connections.iter().map(|c| c.published).collect();
    let ids: Vec<&str> = info
        .connections
        .iter()
        .map(|c| c.client.client_id.as_str())
        .collect();
    let with_plain = info
        .connections
        .iter()
        .filter(|c| c.client.subscriptions.contains_key("pool/plain"))
        .count();
    println!(
        "cluster: pool of 4: msgs={N} failed={failed} lost={failed} dup=0 per_connection={per_conn:?} took={elapsed:?} plain_sub_got={} client_ids={ids:?}",
        plain_got.len()
    );
    assert_eq!(failed, 0);
    assert_eq!(per_conn.iter().sum::<u64>(), N + 1);
    assert!(per_conn.iter().all(|n| *n > 0), "{per_conn:?}");
    assert_eq!(with_plain, 1);
    assert_eq!(plain_got.len(), 1, "a plain subscription delivers once");
    assert!(
        ids.iter()
            .enumerate()
            .all(|(i, id)| id.ends_with(&format!("-{i}")))
    );
    cluster.stop().await;
}

/// A client on a pool of `size` connections to `broker` built from `template`,
/// once they are all up.
async fn pool_of(template: ClientBuilder, broker: &TestBroker, name: &str, size: usize) -> Client {
    pool_with(template, broker, name, size, Balance::default()).await
}

/// [`pool_of`] with a chosen balance.
async fn pool_with(
    template: ClientBuilder,
    broker: &TestBroker,
    name: &str,
    size: usize,
    balance: Balance,
) -> Client {
    let pool = ClusterBuilder::new(template.address(broker.host(), broker.port()))
        .client_id(client_id(name))
        .pool_size(size)
        .balance(balance)
        .connect()
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(10), || pool.info().connected_count()
            == size)
        .await
    );
    pool
}

/// A service written once against `Client`: answers each `<prefix>/in/<x>` with
/// `<prefix>/out/<x>`, publishing through the client its handler is given.
async fn run_echo_service(client: &Client, prefix: &str, modes: Arc<Mutex<Vec<String>>>) {
    let out = format!("{prefix}/out");
    client
        .subscribe(format!("{prefix}/in/+"))
        .qos(QoS::AtLeastOnce)
        .handler(move |client: Client, msg: Message| {
            let out = out.clone();
            let modes = modes.clone();
            async move {
                modes.lock().unwrap().push(client.info().mode);
                let id = msg
                    .topic()
                    .rsplit('/')
                    .next()
                    .unwrap_or_default()
                    .to_owned();
                client
                    .publish(format!("{out}/{id}"), msg.payload().clone())
                    .await
            }
        })
        .await
        .unwrap();
}

/// The same service code on one connection and on a pool: both answer, the
/// handler's client is the one it subscribed on (the pool, not one connection),
/// and the publish middleware runs once per publish, not once per connection.
#[tokio::test]
async fn one_service_runs_on_a_connection_and_on_a_pool() {
    let broker = broker().await;
    let publishes = Arc::new(AtomicUsize::new(0));
    let count = publishes.clone();
    let counted = move |builder: ClientBuilder| {
        let count = count.clone();
        builder.publish_layer(courier::client::middleware::publish_fn(
            move |request, next: courier::client::middleware::BoxPublisher| {
                count.fetch_add(1, Ordering::SeqCst);
                async move {
                    use courier::client::middleware::Publisher;
                    next.publish(request).await
                }
            },
        ))
    };
    let single = counted(client(&broker, "svc-one")).connect().await.unwrap();
    let pool = pool_of(counted(template()), &broker, "svc-pool", 2).await;
    let watcher = client(&broker, "svc-watch").connect().await.unwrap();
    let mut answers = watcher.subscribe("svc/+/out/+").await.unwrap();
    let modes = Arc::new(Mutex::new(Vec::new()));
    run_echo_service(&single, "svc/one", modes.clone()).await;
    run_echo_service(&pool, "svc/pool", modes.clone()).await;
    let before = publishes.load(Ordering::SeqCst);
    for n in 0..5 {
        watcher
            .publish(format!("svc/one/in/{n}"), "x")
            .await
            .unwrap();
        watcher
            .publish(format!("svc/pool/in/{n}"), "x")
            .await
            .unwrap();
    }
    let got = drain_n(&mut answers, 10, Duration::from_secs(10)).await;
    let mut topics: Vec<String> = got.iter().map(|m| m.topic().to_owned()).collect();
    topics.sort();
    let handled = publishes.load(Ordering::SeqCst) - before;
    let mut modes = modes.lock().unwrap().clone();
    modes.sort();
    modes.dedup();
    println!(
        "cluster: one service, two kinds: answers={} middleware_calls={handled} handler_client_modes={modes:?}",
        topics.len()
    );
    let expected: Vec<String> = ["one", "pool"]
        .iter()
        .flat_map(|kind| (0..5).map(move |n| format!("svc/{kind}/out/{n}")))
        .collect();
    assert_eq!(topics, expected);
    assert_eq!(handled, 10, "the publish middleware runs once per publish");
    assert_eq!(modes, ["pool", "single"]);
    let mut events = pool.events();
    watcher.stop().await;
    single.stop().await;
    pool.stop().await;
    let mut stopped = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(300), events.next()).await
    {
        stopped += usize::from(matches!(event, courier::Event::Stopped));
    }
    assert_eq!(stopped, 1, "a pool says once that it stopped");
    assert_eq!(pool.state(), courier::ConnectionState::Stopped);
}

/// Dropping a subscription's stream and subscribing again to the same filters at
/// once: the new subscription keeps them (the dropped one's unsubscribe at the
/// brokers must not end it), on the primary and on every connection alike.
#[tokio::test]
async fn a_new_subscription_survives_the_dropped_one_on_the_same_filter() {
    let broker = broker().await;
    let pool = pool_of(template(), &broker, "resub", 2).await;
    let publisher = client(&broker, "resub-pub").connect().await.unwrap();
    let mut filters = vec!["resub/plain"];
    if broker.supports(Capability::SharedSubscriptions) {
        filters.push("$share/g/resub/shared");
    } else {
        eprintln!(
            "a_new_subscription_survives_the_dropped_one_on_the_same_filter: $share not tried"
        );
    }
    for filter in filters {
        let first = pool.subscribe(filter).qos(QoS::AtLeastOnce).await.unwrap();
        drop(first);
        let mut second = pool.subscribe(filter).qos(QoS::AtLeastOnce).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let topic = filter.trim_start_matches("$share/g/");
        publisher
            .publish(topic, "after")
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
        let got = drain_n(&mut second, 1, Duration::from_secs(5)).await;
        println!("cluster: resubscribe {filter}: got={}", got.len());
        assert_eq!(
            got.len(),
            1,
            "{filter}: the new subscription still receives"
        );
        assert!(pool.info().subscriptions.contains_key(filter));
    }
    publisher.stop().await;
    pool.stop().await;
}

/// A template for a persistent session with `broker`.
fn persistent(broker: &TestBroker) -> ClientBuilder {
    template()
        .clean_session(false)
        .address(broker.host(), broker.port())
}

/// A client on a cluster (single mode) with a persistent session, and its id.
async fn persistent_cluster(broker: &TestBroker, name: &str) -> (Client, String) {
    let id = client_id(name);
    let cluster = ClusterBuilder::new(persistent(broker))
        .client_id(id.clone())
        .connect()
        .await
        .unwrap();
    (cluster, id)
}

/// Publish `keep/0` .. `keep/4` (payloads `0` .. `4`) at QoS 1 from a client of
/// its own, which is returned.
async fn publish_five(broker: &TestBroker) -> Client {
    let publisher = client(broker, "keep-pub").connect().await.unwrap();
    for n in 0..5 {
        publisher
            .publish(format!("keep/{n}"), n.to_string())
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    publisher
}

/// The payloads the broker delivers again to the next session of `id` on
/// `keep/+`, sorted.
async fn next_session_gets(broker: &TestBroker, id: String) -> Vec<String> {
    let next = persistent(broker).client_id(id).connect().await.unwrap();
    let mut again = next
        .subscribe("keep/+")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut got: Vec<String> = drain_n(&mut again, 5, Duration::from_secs(3))
        .await
        .iter()
        .map(|m| m.payload_str().unwrap().to_owned())
        .collect();
    got.sort();
    next.stop().await;
    got
}

/// Stopping a client on a cluster leaves what its stream did not yield
/// unacknowledged: the broker delivers it again in the next session.
#[tokio::test]
async fn stopping_a_cluster_client_loses_no_unconsumed_message() {
    if !selected_broker_has(
        "stopping_a_cluster_client_loses_no_unconsumed_message",
        &[Capability::PersistentSessions, Capability::ResendOnResume],
    ) {
        return;
    }
    let broker = broker().await;
    let (cluster, id) = persistent_cluster(&broker, "keep").await;
    let mut sub = cluster
        .subscribe("keep/+")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let publisher = publish_five(&broker).await;
    let consumed = drain_n(&mut sub, 2, Duration::from_secs(5)).await;
    assert_eq!(consumed.len(), 2);
    // The other three arrive and wait, unread, in the stream's queue.
    tokio::time::sleep(Duration::from_millis(200)).await;
    cluster.stop().await;
    assert!(sub.recv().await.is_none(), "the stream ended with the stop");
    drop(sub);
    let redelivered = next_session_gets(&broker, id).await;
    println!("cluster: stop with unread messages: consumed=2 redelivered={redelivered:?}");
    assert_eq!(
        redelivered,
        ["2", "3", "4"],
        "unconsumed: back; consumed: not"
    );
    publisher.stop().await;
}

/// Stopping a client on a cluster while its handler is at work: the handler
/// finishes the message at hand, and the messages queued behind it are left
/// unacknowledged, though the connection they came on is still up when the
/// handler's queue goes: the broker delivers exactly those again.
#[tokio::test]
async fn stopping_a_cluster_client_mid_handler_loses_no_message() {
    if !selected_broker_has(
        "stopping_a_cluster_client_mid_handler_loses_no_message",
        &[Capability::PersistentSessions, Capability::ResendOnResume],
    ) {
        return;
    }
    let broker = broker().await;
    let (cluster, id) = persistent_cluster(&broker, "keep-handler").await;
    let handled = Arc::new(Mutex::new(Vec::new()));
    let record = handled.clone();
    cluster
        .subscribe("keep/+")
        .qos(QoS::AtLeastOnce)
        .handler(move |_client: Client, msg: Message| {
            let record = record.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                let payload = msg.payload_str().unwrap_or_default().to_owned();
                record.lock().unwrap().push(payload);
            }
        })
        .await
        .unwrap();
    let publisher = publish_five(&broker).await;
    assert!(
        eventually(Duration::from_secs(5), || !handled
            .lock()
            .unwrap()
            .is_empty())
        .await
    );
    cluster.stop().await;
    let done: Vec<String> = handled.lock().unwrap().clone();
    let redelivered = next_session_gets(&broker, id).await;
    let mut all: Vec<String> = done.iter().chain(&redelivered).cloned().collect();
    all.sort();
    println!("cluster: stop mid-handler: handled={done:?} redelivered={redelivered:?}");
    assert!(
        !redelivered.is_empty(),
        "messages were still queued at the stop"
    );
    assert_eq!(
        all,
        ["0", "1", "2", "3", "4"],
        "each message once: handled or back"
    );
    publisher.stop().await;
}

/// Pool and multi-connection mode are mutually exclusive.
#[tokio::test]
async fn pool_with_multi_connection_is_a_config_error() {
    let result = ClusterBuilder::new(template())
        .client_id("x")
        .pool_size(2)
        .multi_connection(StaticResolver::new([Address::new("localhost", 1883)]))
        .balance(Balance::RoundRobin)
        .start();
    let error = result.err().unwrap();
    println!("cluster: config error: {error}");
    assert!(matches!(
        error,
        ClusterConfigError::PoolWithMultiConnection { pool_size: 2 }
    ));
    assert!(matches!(
        ClusterBuilder::new(template()).pool_size(2).start().err(),
        Some(ClusterConfigError::MissingClientId)
    ));
}

/// Throughput of 100,000 QoS 1 publishes through pools of 1, 2 and 4 connections
/// (a benchmark: prints msgs/s, asserts only that every publish succeeded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --release -- --ignored --nocapture pool_throughput"]
async fn pool_throughput() {
    const N: u64 = 100_000;
    const TASKS: u64 = 4;
    let broker = broker().await;
    // Baseline: one plain client, same load.
    let plain = client(&broker, "bench-plain").connect().await.unwrap();
    let started = Instant::now();
    let results = join_all((0..TASKS).map(|t| {
        let plain = plain.clone();
        tokio::spawn(async move {
            let per = N / TASKS;
            futures_util::stream::iter(t * per..(t + 1) * per)
                .map(|n| {
                    plain
                        .publish(format!("bench/plain/{n}"), n.to_string())
                        .into_future()
                })
                .buffered(256)
                .collect::<Vec<_>>()
                .await
        })
    }))
    .await;
    let elapsed = started.elapsed();
    let failed = results
        .into_iter()
        .flat_map(Result::unwrap)
        .filter(Result::is_err)
        .count();
    println!(
        "cluster: pool throughput: plain Client (baseline) msgs={N} failed={failed} took={elapsed:?} rate={:.0} msgs/s",
        N as f64 / elapsed.as_secs_f64()
    );
    plain.stop().await;
    for (pool, balance) in [
        (1usize, Balance::LeastInFlight),
        (2, Balance::LeastInFlight),
        (4, Balance::LeastInFlight),
        (4, Balance::RoundRobin),
    ] {
        let cluster = pool_with(template(), &broker, "bench", pool, balance).await;
        // Warm up.
        let warm = publish_range(&cluster, "bench/warm", 0..2000, 256).await;
        assert!(warm.iter().all(Result::is_ok));
        let started = Instant::now();
        let results = join_all((0..TASKS).map(|t| {
            let cluster = cluster.clone();
            tokio::spawn(async move {
                let per = N / TASKS;
                publish_range(&cluster, "bench/load", t * per..(t + 1) * per, 256).await
            })
        }))
        .await;
        let elapsed = started.elapsed();
        let failed = results
            .into_iter()
            .flat_map(Result::unwrap)
            .filter(Result::is_err)
            .count();
        println!(
            "cluster: pool throughput: pool_size={pool} balance={balance:?} msgs={N} failed={failed} took={elapsed:?} rate={:.0} msgs/s",
            N as f64 / elapsed.as_secs_f64()
        );
        assert_eq!(failed, 0);
        cluster.stop().await;
    }
}
