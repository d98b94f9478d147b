//! Several connections behind one client: a pool of three connections to one broker,
//! then multi-connection mode over every broker with a shared subscription that two
//! "workers" (two clusters) split between them.
//!
//! ```text
//! cargo run --example cluster                                   # 2 embedded brokers
//! MQTT_URLS=mqtt://10.0.0.1:1883,mqtt://10.0.0.2:1883 cargo run --example cluster
//! ```
//! Without `MQTT_URLS`, two embedded brokers (rumqttd) are started on free ports.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier::cluster::{Address, ClusterBuilder, StaticResolver};
use courier::{Client, ClientBuilder, Message, QoS};
use courier_testkit::{EmbeddedBroker, free_port};

fn template() -> ClientBuilder {
    Client::builder()
        .clean_session(true)
        .connect_timeout(Duration::from_secs(5))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,rumqttd=off".into()),
        )
        .init();

    let mut embedded = Vec::new();
    let addresses: Vec<Address> = match std::env::var("MQTT_URLS") {
        Ok(urls) => urls
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()?,
        Err(_) => {
            let mut addresses = Vec::new();
            for _ in 0..2 {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()?));
                embedded.push(EmbeddedBroker::start(addr).await?);
                addresses.push(Address::from(addr));
            }
            println!("Started 2 embedded brokers: {addresses:?} (set MQTT_URLS to use yours)");
            addresses
        }
    };
    let first = addresses.first().ok_or("MQTT_URLS is empty")?;
    let pid = std::process::id();

    // 1. A pool: three connections to one broker, publishes spread over them.
    let pool = ClusterBuilder::new(template().address(first.host.clone(), first.port))
        .client_id(format!("courier-cluster-pool-{pid}"))
        .pool_size(3)
        .connect()
        .await?;
    let sends = (0..30).map(|i| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.publish(format!("demo/pool/{i}"), "hi").await })
    });
    for send in sends {
        send.await??;
    }
    for conn in pool.info().connections {
        println!(
            "pool: {} via {} carried {} publishes",
            conn.client.client_id, conn.address, conn.published
        );
    }
    pool.stop().await;

    // 2. Multi-connection mode: one connection per broker. Two workers share the
    //    jobs through `$share/workers/...`, made on every connection.
    let resolver = StaticResolver::new(addresses.clone());
    let mut workers: Vec<(Client, Arc<AtomicUsize>)> = Vec::new();
    for w in 0..2 {
        let worker = ClusterBuilder::new(template())
            .client_id(format!("courier-cluster-worker{w}-{pid}"))
            .multi_connection(resolver.clone())
            .connect()
            .await?;
        let handled = Arc::new(AtomicUsize::new(0));
        let count = handled.clone();
        worker
            .subscribe("$share/workers/demo/jobs/#")
            .qos(QoS::AtLeastOnce)
            .handler(move |_client: Client, _msg: Message| {
                count.fetch_add(1, Ordering::SeqCst);
                async {}
            })
            .await?;
        workers.push((worker, handled));
    }
    let producer = ClusterBuilder::new(template())
        .client_id(format!("courier-cluster-producer-{pid}"))
        .multi_connection(resolver)
        .connect()
        .await?;
    // Wait for every connection before publishing, so each broker gets some.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while producer.info().connected_count() < addresses.len()
        && tokio::time::Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    const JOBS: usize = 40;
    for i in 0..JOBS {
        producer
            .publish(format!("demo/jobs/{i}"), format!("job {i}"))
            .qos(QoS::AtLeastOnce)
            .await?;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let total = || {
        workers
            .iter()
            .map(|(_, n)| n.load(Ordering::SeqCst))
            .sum::<usize>()
    };
    while total() < JOBS && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (w, (_, handled)) in workers.iter().enumerate() {
        println!(
            "multi: worker {w} handled {} of {JOBS} jobs",
            handled.load(Ordering::SeqCst)
        );
    }
    println!(
        "multi: producer info:\n{}",
        serde_json::to_string_pretty(&producer.info())?
    );
    producer.stop().await;
    for (worker, _) in workers {
        worker.stop().await;
    }
    drop(embedded);
    Ok(())
}
