//! Lifecycle: graceful stop with work in flight, drop, run-until-shutdown, callbacks,
//! info snapshot.

use std::future::IntoFuture;
use std::time::{Duration, Instant};

use courier::{Client, ConnectionState, Event, PublishError, QoS};
use courier_integration_tests::{Capability, broker, client, needs, recv_n, spawn_publish};
use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::mpsc;

/// `stop()` waits for publishes already in flight to be acknowledged.
#[tokio::test]
async fn stop_waits_for_in_flight_acknowledgements() {
    let broker = broker().await;
    // QoS 2 where the broker has it: the longest handshake to drain.
    let qos = if broker.supports(Capability::Qos2) {
        QoS::ExactlyOnce
    } else {
        QoS::AtLeastOnce
    };
    let c = client(&broker, "drain").connect().await.unwrap();
    let mut events = c.events();
    let publishes = tokio::spawn({
        let c = c.clone();
        async move {
            join_all((0..300).map(|i| c.publish(format!("drain/{i}"), "x").qos(qos).into_future()))
                .await
        }
    });
    tokio::task::yield_now().await;
    c.stop().await;
    let results = publishes.await.unwrap();
    let ok = results.iter().filter(|r| r.is_ok()).count();
    let closed = results
        .iter()
        .filter(|r| matches!(r, Err(PublishError::Closed)))
        .count();
    // Publishes that made it in before stop() are all acknowledged; later ones are
    // refused as Closed; none is lost in between.
    assert_eq!(
        ok + closed,
        300,
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    assert!(ok > 0);
    assert_eq!(c.state(), ConnectionState::Stopped);
    assert!(matches!(
        c.publish("after", "x").await,
        Err(PublishError::Closed)
    ));
    let mut saw_stopped = false;
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(50), events.next()).await {
        saw_stopped |= matches!(e, Event::Stopped);
    }
    assert!(saw_stopped);
}

/// What cannot be acknowledged within the graceful period fails with
/// `StoppedInFlight` (it may have been delivered), and `stop()` still returns promptly.
#[tokio::test]
async fn stop_gives_up_after_the_graceful_period() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "stop_gives_up_after_the_graceful_period",
        &[Capability::Freeze],
    ) {
        return;
    }
    let c = client(&broker, "giveup")
        .graceful_shutdown_period(Duration::from_millis(300))
        .write_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    broker.pause().unwrap();
    let pending = spawn_publish(&c, "stuck", "x");
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    c.stop().await;
    let took = started.elapsed();
    let result = pending.await.unwrap();
    assert!(
        matches!(result, Err(PublishError::StoppedInFlight)),
        "{result:?}"
    );
    assert!(result.unwrap_err().may_have_been_delivered());
    assert!(took < Duration::from_secs(3), "stop took {took:?}");
    broker.resume().unwrap();
}

#[tokio::test]
async fn dropping_every_handle_stops_the_client() {
    let broker = broker().await;
    let c = client(&broker, "dropped").connect().await.unwrap();
    let mut state = c.state_watch();
    drop(c);
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == ConnectionState::Stopped),
    )
    .await
    .unwrap()
    .unwrap();
}

/// `run(shutdown)` starts, runs callbacks, and stops when the future completes.
#[tokio::test]
async fn run_until_shutdown_with_an_on_connect_callback() {
    let broker = broker().await;
    let spy = client(&broker, "spy").connect().await.unwrap();
    let mut hello = spy.subscribe("hello").await.unwrap();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let run = tokio::spawn(
        client(&broker, "runner")
            .on_connect(|client: Client, session_present| async move {
                let _ = client
                    .publish("hello", format!("session present: {session_present}"))
                    .await;
            })
            .run(async {
                let _ = done_rx.await;
            }),
    );
    let got = recv_n(&mut hello, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].payload_str().unwrap(), "session present: false");
    done_tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    spy.stop().await;
}

/// Connection-lost and reconnect callbacks fire with the reason and attempt.
#[tokio::test]
async fn lifecycle_callbacks_fire() {
    let mut broker = broker().await;
    if !needs(&broker, "lifecycle_callbacks_fire", &[Capability::Restart]) {
        return;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    let (lost, reconnect, connect) = (tx.clone(), tx.clone(), tx);
    let c = client(&broker, "callbacks")
        .on_connect(move |_c: Client, present| {
            let _ = connect.send(format!("connect {present}"));
            async {}
        })
        .on_connection_lost(move |_c: Client, reason| {
            let _ = lost.send(format!("lost {reason}"));
            async {}
        })
        .on_reconnect(move |_c: Client, attempt| {
            let _ = reconnect.send(format!("reconnect {attempt}"));
            async {}
        })
        .connect()
        .await
        .unwrap();
    broker.restart().await.unwrap();
    let mut seen = Vec::new();
    while seen
        .iter()
        .filter(|s: &&String| s.starts_with("connect"))
        .count()
        < 2
    {
        let next = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .unwrap()
            .unwrap();
        seen.push(next);
    }
    assert_eq!(seen[0], "connect false");
    assert!(seen.iter().any(|s| s.starts_with("lost ")), "{seen:?}");
    assert!(seen.iter().any(|s| s == "reconnect 1"), "{seen:?}");
    c.stop().await;
}

#[tokio::test]
async fn info_lists_subscriptions_and_never_the_password() {
    let broker = broker().await;
    let c = client(&broker, "info").connect().await.unwrap();
    let _a = c.subscribe("a/#").qos(QoS::ExactlyOnce).await.unwrap();
    let _b = c.subscribe("b").qos(QoS::AtMostOnce).await.unwrap();
    let json = serde_json::to_value(c.info()).unwrap();
    assert_eq!(json["subscriptions"], serde_json::json!({"a/#": 2, "b": 0}));
    assert_eq!(json["clean_session"], true);
    assert_eq!(json["auto_reconnect"], true);
    assert_eq!(json["publishes_in_flight"], 0);
    let shown = format!(
        "{:?}",
        client(&broker, "x").username("u").password("hunter2")
    );
    assert!(!shown.contains("hunter2"));
    c.stop().await;
}
