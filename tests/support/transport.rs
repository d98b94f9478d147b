//! The body of the transport tests: publish and subscribe at each QoS over a broker
//! URL, whatever carries it (TCP, WebSocket, a Unix socket, a proxy).

use std::future::IntoFuture;
use std::time::Duration;

use courier::{ClientBuilder, QoS};

use crate::{Capability, TestBroker, client_id, quick_reconnects, recv_n};

/// The highest QoS `broker` delivers end to end (NATS and RabbitMQ stop at 1).
pub fn highest_qos(broker: &TestBroker) -> QoS {
    if broker.supports(Capability::Qos2) {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    }
}

/// A subscriber at `highest` and a publisher, both on `url` with `configure` applied
/// (TLS roots, a proxy, headers): one message at each QoS up to `highest`, one of
/// 100 KiB (more than one read, and than one WebSocket message of the broker's), and
/// 50 QoS 1 messages at once (several packets per read) all arrive, with their
/// payloads, at their QoS or above.
///
/// # Panics
///
/// When a client cannot connect or a message does not arrive within 10 s.
pub async fn pubsub_each_qos(
    url: &str,
    highest: QoS,
    configure: impl Fn(ClientBuilder) -> ClientBuilder,
) {
    let builder = |name: &str| configure(quick_reconnects().url(url).client_id(client_id(name)));
    let topic = client_id("transport");
    let subscriber = builder("sub")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let mut sub = subscriber
        .subscribe(format!("{topic}/#"))
        .qos(highest)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let publisher = builder("pub")
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"));
    let large = "x".repeat(100 * 1024);
    let mut sent: Vec<_> = [
        (QoS::AtMostOnce, "zero".to_owned()),
        (QoS::AtLeastOnce, "one".to_owned()),
        (QoS::ExactlyOnce, "two".to_owned()),
        (QoS::AtLeastOnce, large),
    ]
    .into_iter()
    .filter(|(qos, _)| *qos <= highest)
    .collect();
    for (qos, payload) in &sent {
        publisher
            .publish(format!("{topic}/single"), payload.clone())
            .qos(*qos)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    let burst: Vec<_> = (0..50)
        .map(|i| {
            publisher
                .publish(format!("{topic}/burst"), format!("burst-{i}"))
                .qos(QoS::AtLeastOnce)
                .into_future()
        })
        .collect();
    for result in futures_util::future::join_all(burst).await {
        result.unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    sent.extend((0..50).map(|i| (QoS::AtLeastOnce, format!("burst-{i}"))));
    let mut got: Vec<_> = recv_n(&mut sub, sent.len(), Duration::from_secs(10))
        .await
        .iter()
        .map(|m| (m.payload_str().unwrap_or_default().to_owned(), m.qos()))
        .collect();
    got.sort();
    let mut sent: Vec<_> = sent.into_iter().map(|(qos, p)| (p, qos)).collect();
    sent.sort();
    let payloads = |v: &[(String, QoS)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
    assert!(
        payloads(&got) == payloads(&sent),
        "{url}: received other payloads than were sent"
    );
    // At the publish's QoS (Mosquitto), or above it (rumqttd delivers at the
    // subscription's).
    for ((payload, got_qos), (_, sent_qos)) in got.iter().zip(&sent) {
        assert!(
            got_qos >= sent_qos,
            "{url}: {payload:.12} arrived at {got_qos:?}, sent at {sent_qos:?}"
        );
    }
    publisher.stop().await;
    subscriber.stop().await;
}
