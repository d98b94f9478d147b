#![allow(
    clippy::panic,
    reason = "test support: a failed expectation fails the test"
)]
//! Helpers shared by the integration tests: a broker per test, client builders with
//! test-friendly timings, and message collection with deadlines.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use courier::{Backoff, ClientBuilder, Message, Subscription};
pub use courier_testkit::{BrokerKind, BrokerOptions, TestBroker};

/// Start the broker the environment asks for (`COURIER_TEST_BROKER`).
///
/// # Panics
///
/// When no broker can be started: the test cannot run.
pub async fn broker() -> TestBroker {
    broker_with(BrokerOptions::new()).await
}

/// Start a broker with options.
///
/// # Panics
///
/// When no broker can be started: the test cannot run.
pub async fn broker_with(options: BrokerOptions) -> TestBroker {
    match TestBroker::start_with(options).await {
        Ok(broker) => broker,
        Err(e) => panic!("cannot start a test broker: {e}"),
    }
}

/// A unique client id for this process.
pub fn client_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder pointed at `broker`, with a unique client id, a clean session and quick
/// reconnects.
pub fn client(broker: &TestBroker, name: &str) -> ClientBuilder {
    courier::Client::builder()
        .address(broker.host(), broker.port())
        .client_id(client_id(name))
        .clean_session(true)
        .reconnect_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .start_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .connect_timeout(Duration::from_secs(5))
}

/// Receive `n` messages or fail after `within`.
///
/// # Panics
///
/// When fewer than `n` messages arrive in time.
pub async fn recv_n(sub: &mut Subscription, n: usize, within: Duration) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(msg)) => got.push(msg),
            Ok(None) => panic!("subscription ended after {} of {n} messages", got.len()),
            Err(_) => panic!("only {} of {n} messages within {within:?}", got.len()),
        }
    }
    got
}

/// Assert that nothing arrives on `sub` for `quiet`.
///
/// # Panics
///
/// When a message arrives.
pub async fn assert_silent(sub: &mut Subscription, quiet: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.recv()).await {
        panic!("expected no message, got {msg:?}");
    }
}

/// Run `f` only with a real Mosquitto; print why it is skipped otherwise.
pub fn needs_mosquitto(broker: &TestBroker, test: &str) -> bool {
    !broker.skip_unless_restartable(test)
}

/// True when the suite runs against Mosquitto; otherwise prints why `test` is skipped.
/// For tests that need Mosquitto before a broker is started (e.g. password files).
pub fn mosquitto_mode(test: &str) -> bool {
    let mosquitto = matches!(
        courier_testkit::BrokerKind::from_env(),
        Ok(courier_testkit::BrokerKind::Mosquitto)
    );
    if !mosquitto {
        eprintln!("SKIP {test}: needs a real Mosquitto, COURIER_TEST_BROKER=embedded");
    }
    mosquitto
}

/// Everything `sub` receives until it stays quiet for `quiet`, as topics with
/// consecutive repeats removed. MQTT lets a broker send one copy per matching
/// subscription (rumqttd does, Mosquitto 2 does not); this compares routing
/// regardless.
pub async fn topics_until_quiet(sub: &mut Subscription, quiet: Duration) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.recv()).await {
        if topics.last().map(String::as_str) != Some(msg.topic()) {
            topics.push(msg.topic().to_owned());
        }
    }
    topics
}

/// Waits for the next `Connected` event and returns its `session_present`.
///
/// # Panics
///
/// When none comes within `within`.
pub async fn next_connected(events: &mut courier::EventStream, within: Duration) -> bool {
    use futures_util::StreamExt;
    let found = tokio::time::timeout(within, async {
        while let Some(e) = events.next().await {
            if let courier::Event::Connected { session_present } = e {
                return Some(session_present);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(present)) => present,
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no connect within {within:?}"),
    }
}
