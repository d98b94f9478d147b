#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure fails the test"
)]
//! courier's own log events name their client and broker.
//!
//! A test binary of its own: `tracing` caches whether a callsite is enabled across
//! the process, and a subscriber set for one test (`set_default`) races with the
//! other tests' threads creating the same connection span; alone in its process the
//! test sees what an application with one subscriber sees.

use std::time::Duration;

use courier::QoS;
use courier_integration_tests::{broker, client};
use futures_util::StreamExt as _;

/// A `Vec<u8>` behind a mutex, as a `tracing-subscriber` writer.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// courier's log events from a connection's background work carry the client id and
/// the broker, from the connection's span, even under a filter that shows warnings
/// only. The over-size warning names neither itself.
#[tokio::test]
async fn background_log_events_name_the_client_and_the_broker() {
    let captured = Captured::default();
    let writer = captured.clone();
    let _subscriber = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    );
    let broker = broker().await;
    let small = client(&broker, "otel-log")
        .max_packet_size(256)
        .connect()
        .await
        .unwrap();
    let mut events = small.events();
    let _sub = small.subscribe("otel/log").await.unwrap();
    let publisher = client(&broker, "otel-log-pub").connect().await.unwrap();
    publisher
        .publish("otel/log", vec![b'x'; 1024])
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), async {
        while !matches!(
            events.next().await,
            Some(courier::Event::MessageTooLarge { .. }) | None
        ) {}
    })
    .await
    .unwrap();
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = text
        .lines()
        .find(|l| l.contains("over max_packet_size"))
        .unwrap_or_else(|| panic!("no over-size warning in:\n{text}"));
    let span = format!(
        "courier{{client_id={} broker={}:{}}}",
        small.client_id(),
        broker.host(),
        broker.port()
    );
    assert!(line.contains(&span), "{span} not in {line}");
    publisher.stop().await;
    small.stop().await;
}
