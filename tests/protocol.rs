#![allow(
    clippy::unwrap_used,
    reason = "test fixtures: a failure fails the test"
)]
//! Protocol corners no real broker produces on cue, against a scripted broker:
//! retransmission with DUP, QoS 2 resumption with PUBREL, an unknown PUBREL, a QoS 2
//! re-send before PUBREL, acknowledgement order, and the in-flight window.

use std::future::IntoFuture;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier::{Backoff, Client, ClientBuilder, Event, Message, QoS};
use courier_integration_tests::wire;
use futures_util::StreamExt;
use tokio::net::TcpListener;

async fn listener() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn builder(port: u16) -> ClientBuilder {
    Client::builder()
        .address("127.0.0.1", port)
        .client_id("scripted")
        .reconnect_backoff(Backoff::exponential(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .write_timeout(Duration::from_secs(5))
}

const TIMEOUT: Duration = Duration::from_secs(5);

/// After a reconnect with the session kept, an unacknowledged QoS 1 PUBLISH is sent
/// again with DUP=1 and its packet id [MQTT-3.3.1-1, MQTT-4.4.0-1] (rumqttc alone
/// resends it with DUP=0), and the publish resolves on the new PUBACK.
#[tokio::test]
async fn a_retransmitted_publish_has_dup_set_and_the_same_id() {
    let (listener, port) = listener().await;
    let c = builder(port).connect_timeout(TIMEOUT);
    let script = tokio::spawn(async move {
        let mut first = wire::accept(&listener, false).await?;
        let original = wire::read_until(&mut first, |p| p.kind() == 3).await?;
        drop(first); // connection lost before PUBACK
        let mut second = wire::accept(&listener, true).await?;
        let again = wire::read_until(&mut second, |p| p.kind() == 3).await?;
        wire::write(&mut second, 0x40, &again.pkid_of_publish().to_be_bytes()).await?;
        Ok::<_, std::io::Error>((original.publish(), again.publish(), second))
    });
    let client = c.connect().await.unwrap();
    let result = tokio::time::timeout(
        TIMEOUT,
        client.publish("t", "payload").qos(QoS::AtLeastOnce),
    )
    .await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    let (original, again, _socket) = script.await.unwrap().unwrap();
    let (dup0, _, _, id0, payload0) = original.unwrap();
    let (dup1, qos1, topic1, id1, payload1) = again.unwrap();
    assert!(!dup0, "first transmission has DUP=0");
    assert!(dup1, "retransmission has DUP=1");
    assert_eq!(
        (qos1, topic1.as_str(), id1, payload1),
        (1, "t", id0, payload0)
    );
}

/// A QoS 2 publish whose PUBREC arrived resumes with PUBREL, not PUBLISH, after a
/// reconnect [MQTT-4.3.3-1], and resolves on PUBCOMP.
#[tokio::test]
async fn qos2_resumes_with_pubrel_after_pubrec() {
    let (listener, port) = listener().await;
    let script = tokio::spawn(async move {
        let mut first = wire::accept(&listener, false).await?;
        let publish = wire::read_until(&mut first, |p| p.kind() == 3).await?;
        let id = publish.pkid_of_publish();
        wire::write(&mut first, 0x50, &id.to_be_bytes()).await?; // PUBREC
        wire::read_until(&mut first, |p| p.kind() == 6).await?; // PUBREL
        drop(first); // lost before PUBCOMP
        let mut second = wire::accept(&listener, true).await?;
        let next = wire::read_until(&mut second, |p| p.kind() == 3 || p.kind() == 6).await?;
        wire::write(&mut second, 0x70, &id.to_be_bytes()).await?; // PUBCOMP
        Ok::<_, std::io::Error>((id, next, second))
    });
    let client = builder(port).connect().await.unwrap();
    let result =
        tokio::time::timeout(TIMEOUT, client.publish("q2", "x").qos(QoS::ExactlyOnce)).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    let (id, next, _socket) = script.await.unwrap().unwrap();
    assert_eq!(next.kind(), 6, "resumed with PUBREL, not PUBLISH: {next:?}");
    assert_eq!(next.header, 0x62);
    assert_eq!(next.pkid(), id);
}

/// A PUBREL for an id the client does not know (e.g. after a reconnect) is answered
/// with PUBCOMP and the connection stays up (rumqttc alone disconnects, #664).
#[tokio::test]
async fn an_unknown_pubrel_gets_pubcomp_without_a_disconnect() {
    let (listener, port) = listener().await;
    let script = tokio::spawn(async move {
        let mut socket = wire::accept(&listener, true).await?;
        wire::write(&mut socket, 0x62, &7u16.to_be_bytes()).await?;
        let comp = wire::read_until(&mut socket, |p| p.kind() == 7).await?;
        let publish = wire::read_until(&mut socket, |p| p.kind() == 3).await?;
        wire::write(&mut socket, 0x40, &publish.pkid_of_publish().to_be_bytes()).await?;
        Ok::<_, std::io::Error>((comp, socket))
    });
    let client = builder(port).connect().await.unwrap();
    let mut events = client.events();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let result = tokio::time::timeout(TIMEOUT, client.publish("after", "x")).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    let (comp, _socket) = script.await.unwrap().unwrap();
    assert_eq!(comp.pkid(), 7);
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        assert!(!matches!(e, Event::Disconnected { .. }), "{e}");
    }
}

/// A QoS 2 message re-sent (DUP) before its PUBREL is answered with PUBREC again but
/// delivered once [MQTT-4.3.3-2]; after PUBCOMP the same id is a new message.
#[tokio::test]
async fn a_qos2_resend_before_pubrel_is_delivered_once() {
    let (listener, port) = listener().await;
    let script = tokio::spawn(async move {
        let mut s = wire::accept(&listener, false).await?;
        let sub = wire::read_until(&mut s, |p| p.kind() == 8).await?;
        wire::write(&mut s, 0x90, &[sub.body[0], sub.body[1], 2]).await?;
        wire::publish(&mut s, "q2/in", 2, 5, false, b"once").await?;
        let rec1 = wire::read_until(&mut s, |p| p.kind() == 5).await?;
        wire::publish(&mut s, "q2/in", 2, 5, true, b"once").await?;
        let rec2 = wire::read_until(&mut s, |p| p.kind() == 5).await?;
        wire::write(&mut s, 0x62, &5u16.to_be_bytes()).await?;
        let comp = wire::read_until(&mut s, |p| p.kind() == 7).await?;
        wire::publish(&mut s, "q2/in", 2, 5, false, b"new").await?;
        let rec3 = wire::read_until(&mut s, |p| p.kind() == 5).await?;
        Ok::<_, std::io::Error>(([rec1.pkid(), rec2.pkid(), comp.pkid(), rec3.pkid()], s))
    });
    let client = builder(port).connect().await.unwrap();
    let handled = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = handled.clone();
    client
        .subscribe("q2/#")
        .qos(QoS::ExactlyOnce)
        .handler(move |_c: Client, m: Message| {
            log.lock()
                .unwrap()
                .push(m.payload_str().unwrap().to_owned());
            async {}
        })
        .await
        .unwrap();
    let (ids, _socket) = tokio::time::timeout(TIMEOUT, script)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(ids, [5, 5, 5, 5]);
    assert_eq!(*handled.lock().unwrap(), ["once", "new"]);
}

/// Acknowledgements go out in the order the messages arrived [MQTT-4.6.0-2], even
/// when a later message is consumed first, and only once consumed.
#[tokio::test]
async fn acknowledgements_follow_arrival_order() {
    let (listener, port) = listener().await;
    let script = tokio::spawn(async move {
        let mut s = wire::accept(&listener, false).await?;
        for _ in 0..2 {
            let sub = wire::read_until(&mut s, |p| p.kind() == 8).await?;
            wire::write(&mut s, 0x90, &[sub.body[0], sub.body[1], 1]).await?;
        }
        wire::publish(&mut s, "slow", 1, 1, false, b"a").await?;
        wire::publish(&mut s, "fast", 1, 2, false, b"b").await?;
        let first = wire::read_until(&mut s, |p| p.kind() == 4).await?;
        let second = wire::read_until(&mut s, |p| p.kind() == 4).await?;
        Ok::<_, std::io::Error>(([first.pkid(), second.pkid()], s))
    });
    let client = builder(port).connect().await.unwrap();
    let slow_done = Arc::new(AtomicUsize::new(0));
    let done = slow_done.clone();
    client
        .subscribe("slow")
        .handler(move |_c: Client, _m: Message| {
            let done = done.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                done.store(1, Ordering::SeqCst);
            }
        })
        .await
        .unwrap();
    let mut fast = client.subscribe("fast").await.unwrap();
    let b = tokio::time::timeout(TIMEOUT, fast.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(b.payload_str().unwrap(), "b");
    assert_eq!(
        slow_done.load(Ordering::SeqCst),
        0,
        "b was consumed while a was still handled"
    );
    let (order, _socket) = tokio::time::timeout(TIMEOUT, script)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(order, [1, 2]);
}

/// With a window of 2, a third publish waits (no error) until an acknowledgement
/// frees a slot; out-of-order acknowledgements neither hang nor confuse the mapping.
#[tokio::test]
async fn the_in_flight_window_holds_back_and_tolerates_out_of_order_acks() {
    let (listener, port) = listener().await;
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel();
    let (release_tx, mut release_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let script = tokio::spawn(async move {
        let mut s = wire::accept(&listener, false).await?;
        let mut ids = Vec::new();
        for _ in 0..2 {
            let p = wire::read_until(&mut s, |p| p.kind() == 3).await?;
            let (_, _, topic, id, _) = p.publish().unwrap();
            let _ = seen_tx.send(topic);
            ids.push(id);
        }
        let _ = release_rx.recv().await;
        wire::write(&mut s, 0x40, &ids[1].to_be_bytes()).await?; // ack the second first
        let p = wire::read_until(&mut s, |p| p.kind() == 3).await?;
        let (_, _, topic, id, _) = p.publish().unwrap();
        let _ = seen_tx.send(topic);
        wire::write(&mut s, 0x40, &id.to_be_bytes()).await?;
        wire::write(&mut s, 0x40, &ids[0].to_be_bytes()).await?;
        Ok::<_, std::io::Error>(s)
    });
    let client = builder(port).max_inflight(2).connect().await.unwrap();
    let publishes: Vec<_> = ["p1", "p2", "p3"]
        .into_iter()
        .map(|t| {
            let c = client.clone();
            tokio::spawn(async move { c.publish(t, "x").into_future().await })
        })
        .collect();
    let mut seen = Vec::new();
    for _ in 0..2 {
        seen.push(
            tokio::time::timeout(TIMEOUT, seen_rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(
        tokio::time::timeout(Duration::from_millis(300), seen_rx.recv())
            .await
            .is_err(),
        "third held back"
    );
    assert_eq!(
        client.info().publishes_in_flight,
        2,
        "two in flight; the third waits for a slot"
    );
    release_tx.send(()).unwrap();
    seen.push(
        tokio::time::timeout(TIMEOUT, seen_rx.recv())
            .await
            .unwrap()
            .unwrap(),
    );
    seen.sort();
    assert_eq!(seen, ["p1", "p2", "p3"]);
    for p in publishes {
        let r = tokio::time::timeout(TIMEOUT, p).await.unwrap().unwrap();
        assert!(r.is_ok(), "{r:?}");
    }
    let _socket = script.await.unwrap().unwrap();
}

/// The ack watchdog: a broker that answers pings but never acknowledges a publish
/// makes the client drop the connection after `ack_timeout` and retransmit; the
/// publish then resolves on the new connection's PUBACK.
#[tokio::test]
async fn the_ack_watchdog_reconnects_when_acks_stop() {
    let (listener, port) = listener().await;
    let script = tokio::spawn(async move {
        let mut first = wire::accept(&listener, false).await?;
        wire::read_until(&mut first, |p| p.kind() == 3).await?; // never acked
        let hold = tokio::spawn(async move {
            // Keep answering pings on the stalled connection until it is dropped.
            let _ = wire::read_until(&mut first, |_| false).await;
        });
        let mut second = wire::accept(&listener, true).await?;
        let again = wire::read_until(&mut second, |p| p.kind() == 3).await?;
        wire::write(&mut second, 0x40, &again.pkid_of_publish().to_be_bytes()).await?;
        hold.abort();
        Ok::<_, std::io::Error>((again, second))
    });
    let client = builder(port)
        .ack_timeout(Duration::from_millis(400))
        .keep_alive(Duration::from_secs(30))
        .write_timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let mut events = client.events();
    let started = std::time::Instant::now();
    let result = tokio::time::timeout(TIMEOUT, client.publish("stalled", "x")).await;
    assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    let took = started.elapsed();
    let (again, _socket) = script.await.unwrap().unwrap();
    assert!(again.publish().unwrap().0, "retransmitted with DUP");
    assert!(
        took >= Duration::from_millis(400),
        "not before the timeout: {took:?}"
    );
    let mut saw = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        saw |= matches!(e, Event::AckTimeout { .. });
    }
    assert!(saw, "an AckTimeout event was emitted");
    println!("ack watchdog: reconnected and acknowledged after {took:?} (ack_timeout 400 ms)");
}
