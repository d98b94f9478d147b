//! The Go docs' two middlewares, in Rust: a logging middleware around publishes and a
//! metrics middleware counting and timing publishes and handled messages.
//!
//! ```text
//! cargo run --example middleware     # localhost:1883, or MQTT_URL
//! ```

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use courier::client::middleware::{Handler, Layer, PublishRequest, Publisher, handler_fn};
use courier::{Client, Message, PublishError, QoS};
use courier_examples::{broker_url, ensure_broker};

/// Logs every publish: topic, QoS, outcome and latency.
#[derive(Debug, Clone)]
struct Logging<P> {
    next: P,
}

impl<P: Publisher> Publisher for Logging<P> {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        let (topic, qos, started) = (request.topic.clone(), request.qos, Instant::now());
        let result = self.next.publish(request).await;
        match &result {
            Ok(()) => println!("[log] published {topic} ({qos}) in {:?}", started.elapsed()),
            Err(e) => println!("[log] publish to {topic} failed: {e}"),
        }
        result
    }
}

/// The layer that wraps a publisher in [`Logging`].
#[derive(Debug, Clone, Copy)]
struct LoggingLayer;

impl<P> Layer<P> for LoggingLayer {
    type Service = Logging<P>;

    fn layer(&self, next: P) -> Logging<P> {
        Logging { next }
    }
}

/// Counters a metrics middleware keeps (a real service would use the `metrics` crate
/// or courier-otel).
#[derive(Debug, Default)]
struct Stats {
    attempts: AtomicU64,
    failures: AtomicU64,
    total_micros: AtomicU64,
}

/// Counts and times publishes.
#[derive(Debug, Clone)]
struct Metrics<P> {
    stats: Arc<Stats>,
    next: P,
}

impl<P: Publisher> Publisher for Metrics<P> {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        let started = Instant::now();
        self.stats.attempts.fetch_add(1, Ordering::Relaxed);
        let result = self.next.publish(request).await;
        if result.is_err() {
            self.stats.failures.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.stats.total_micros.fetch_add(micros, Ordering::Relaxed);
        result
    }
}

/// The layer that wraps a publisher in [`Metrics`].
#[derive(Debug, Clone)]
struct MetricsLayer(Arc<Stats>);

impl<P> Layer<P> for MetricsLayer {
    type Service = Metrics<P>;

    fn layer(&self, next: P) -> Metrics<P> {
        Metrics {
            stats: self.0.clone(),
            next,
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;
    let stats = Arc::new(Stats::default());
    let handled = Arc::new(AtomicU64::new(0));
    let counter = handled.clone();

    let client = Client::builder()
        .url(&url)
        .client_id(format!("courier-middleware-{}", std::process::id()))
        .clean_session(true)
        // One call, a tuple: logging outermost, then metrics; no allocation between.
        .publish_layer((LoggingLayer, MetricsLayer(stats.clone())))
        // A closure middleware around every handler (application-code style).
        .handler_layer(handler_fn(move |client: Client, message: Message, next| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                next.handle(client, message).await
            }
        }))
        .connect()
        .await?;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    client
        .subscribe("metrics/demo/#")
        .handler(move |_c: Client, m: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(m.topic().to_owned());
            }
        })
        .await?;
    for i in 0..3 {
        client
            .publish(format!("metrics/demo/{i}"), format!("reading {i}"))
            .qos(QoS::AtLeastOnce)
            .await?;
    }
    let _ = client.publish("metrics/demo/+", "invalid topic").await; // counted as a failure
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv()).await?;
    }
    let attempts = stats.attempts.load(Ordering::Relaxed);
    println!(
        "[metrics] publishes: {attempts} attempts, {} failures, {} µs mean; messages handled: {}",
        stats.failures.load(Ordering::Relaxed),
        stats.total_micros.load(Ordering::Relaxed) / attempts.max(1),
        handled.load(Ordering::Relaxed)
    );
    client.stop().await;
    Ok(())
}
