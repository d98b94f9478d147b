//! Reconnecting: broker restarts with and without the session, in-flight publishes,
//! re-subscription, backoff. These need a broker that can be restarted (Mosquitto).

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::time::{Duration, Instant};

use courier::{Client, Event, PublishError, QoS, SessionLossPolicy};
use courier_integration_tests::{
    BrokerOptions, Capability, broker, broker_with, client, needs, next_connected, recv_n,
    spawn_publish,
};
use futures_util::StreamExt;
use futures_util::future::join_all;

/// 2,000 QoS 1 publishes stream through a broker restart (SIGTERM, persistence on):
/// every publish resolves Ok and the persistent subscriber gets every message.
#[tokio::test]
async fn broker_restart_mid_stream_loses_no_qos1_message() {
    const N: usize = 2000;
    let mut broker = broker_with(
        BrokerOptions::new()
            .persistence(true)
            .max_queued_messages(100_000),
    )
    .await;
    if !needs(
        &broker,
        "broker_restart_mid_stream_loses_no_qos1_message",
        &[Capability::Restart, Capability::SessionsAcrossRestart],
    ) {
        return;
    }
    let sub_client = client(&broker, "restart-sub")
        .clean_session(false)
        .connect()
        .await
        .unwrap();
    let mut sub = sub_client
        .subscribe("seq/#")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let publisher = client(&broker, "restart-pub")
        .clean_session(false)
        .write_timeout(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    let mut pub_events = publisher.events();

    let receiver = tokio::spawn(async move {
        let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while seen.len() < N {
            match tokio::time::timeout_at(deadline, sub.recv()).await {
                Ok(Some(msg)) => {
                    *seen
                        .entry(msg.payload_str().unwrap().parse().unwrap())
                        .or_default() += 1
                }
                _ => break,
            }
        }
        seen
    });

    let p = publisher.clone();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = done.clone();
    let sender = tokio::spawn(async move {
        let mut results = Vec::with_capacity(N);
        for batch in (0..N).collect::<Vec<_>>().chunks(20) {
            results.extend(
                join_all(batch.iter().map(|i| {
                    p.publish(format!("seq/{}", i % 7), i.to_string())
                        .into_future()
                }))
                .await,
            );
            progress.fetch_add(batch.len(), std::sync::atomic::Ordering::SeqCst);
        }
        results
    });
    while done.load(std::sync::atomic::Ordering::SeqCst) < N / 4 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let done_at_fault = done.load(std::sync::atomic::Ordering::SeqCst);
    let fault = Instant::now();
    broker.restart().await.unwrap();
    let session_present = next_connected(&mut pub_events, Duration::from_secs(15)).await;
    let recovered = fault.elapsed();

    let results = sender.await.unwrap();
    let failed: Vec<&PublishError> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    let seen = receiver.await.unwrap();
    let lost = (0..N).filter(|i| !seen.contains_key(i)).count();
    let dup: usize = seen.values().map(|n| n - 1).sum();
    println!(
        "restart mid-stream: {N} QoS 1 publishes ({done_at_fault} acked before the restart), failed {}, lost {lost}, duplicated {dup}, reconnected (session present: {session_present}) {recovered:?} after the restart began",
        failed.len()
    );
    assert!(done_at_fault < N, "the restart happened mid-stream");
    assert!(failed.is_empty(), "first failure: {:?}", failed.first());
    assert!(session_present, "persistence keeps the session");
    assert_eq!(lost, 0);
    publisher.stop().await;
    sub_client.stop().await;
}

/// Without persistence a restart loses the session: the client re-subscribes on its
/// own and messages flow again.
#[tokio::test]
async fn subscriptions_are_remade_when_the_session_is_lost() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "subscriptions_are_remade_when_the_session_is_lost",
        &[Capability::Restart, Capability::SessionsLostWhenKilled],
    ) {
        return;
    }
    let c = client(&broker, "resub")
        .clean_session(false)
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    let mut sub = c.subscribe("resub/+").await.unwrap();
    let handled = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = handled.clone();
    c.subscribe("resub-handler")
        .handler(move |_c: Client, _m: courier::Message| {
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async {}
        })
        .await
        .unwrap();
    broker.kill().await.unwrap();
    broker.start_again().await.unwrap();
    let session_present = next_connected(&mut events, Duration::from_secs(10)).await;
    assert!(!session_present);
    // The re-subscription is sent before anything else after CONNACK; a probe from
    // another client proves it took effect.
    let probe = client(&broker, "probe").connect().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        probe.publish("resub/1", "after restart").await.unwrap();
        if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(200), sub.recv()).await {
            assert_eq!(msg.payload_str().unwrap(), "after restart");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no delivery after the session was lost"
        );
    }
    probe.publish("resub-handler", "x").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(handled.load(std::sync::atomic::Ordering::SeqCst), 1);
    probe.stop().await;
    c.stop().await;
}

/// A publish in flight when the broker loses the session is re-published by default,
/// or fails with `SessionLost` when asked: never silently dropped.
#[tokio::test]
async fn in_flight_publishes_survive_or_fail_a_lost_session() {
    for policy in [SessionLossPolicy::Republish, SessionLossPolicy::Fail] {
        let mut broker = broker().await;
        if !needs(
            &broker,
            "in_flight_publishes_survive_or_fail_a_lost_session",
            &[Capability::Restart, Capability::Freeze, Capability::Qos2],
        ) {
            return;
        }
        let c = client(&broker, "inflight")
            .clean_session(false)
            .session_loss_policy(policy)
            .write_timeout(Duration::from_secs(15))
            .connect()
            .await
            .unwrap();
        broker.pause().unwrap();
        let pending = tokio::spawn({
            let c = c.clone();
            async move {
                join_all([
                    c.publish("inflight/1", "one")
                        .qos(QoS::AtLeastOnce)
                        .retain(true)
                        .into_future(),
                    c.publish("inflight/2", "two")
                        .qos(QoS::ExactlyOnce)
                        .retain(true)
                        .into_future(),
                ])
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(c.info().publishes_in_flight, 2);
        broker.kill().await.unwrap(); // killed while frozen: nothing acked, session gone
        broker.start_again().await.unwrap();
        let results = tokio::time::timeout(Duration::from_secs(15), pending)
            .await
            .unwrap()
            .unwrap();
        match policy {
            SessionLossPolicy::Republish => {
                assert!(results.iter().all(Result::is_ok), "{results:?}");
                // Retained, so a subscriber arriving now proves they reached the
                // restarted broker.
                let watcher = client(&broker, "watcher").connect().await.unwrap();
                let mut sub = watcher.subscribe("inflight/#").await.unwrap();
                let mut got: Vec<String> = recv_n(&mut sub, 2, Duration::from_secs(5))
                    .await
                    .iter()
                    .map(|m| m.payload_str().unwrap().to_owned())
                    .collect();
                got.sort();
                assert_eq!(got, ["one", "two"]);
                watcher.stop().await;
            }
            _ => assert!(
                results
                    .iter()
                    .all(|r| matches!(r, Err(PublishError::SessionLost))),
                "{results:?}"
            ),
        }
        c.stop().await;
    }
}

/// Without auto-reconnect a lost connection stops the client and fails what is in
/// flight with `ConnectionLost`.
#[tokio::test]
async fn without_auto_reconnect_a_loss_fails_pending_publishes() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "without_auto_reconnect_a_loss_fails_pending_publishes",
        &[Capability::Restart, Capability::Freeze],
    ) {
        return;
    }
    let c = client(&broker, "noreconnect")
        .auto_reconnect(false)
        .connect()
        .await
        .unwrap();
    broker.pause().unwrap();
    let pending = spawn_publish(&c, "x", "y");
    tokio::time::sleep(Duration::from_millis(200)).await;
    broker.kill().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(result, Err(PublishError::ConnectionLost)),
        "{result:?}"
    );
    let mut state = c.state_watch();
    tokio::time::timeout(
        Duration::from_secs(5),
        state.wait_for(|s| *s == courier::ConnectionState::Stopped),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(matches!(
        c.publish("x", "y").await,
        Err(PublishError::Closed)
    ));
}

/// Reconnect attempts back off exponentially while the broker is down (no storm).
#[tokio::test]
async fn reconnect_attempts_back_off() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "reconnect_attempts_back_off",
        &[Capability::Restart],
    ) {
        return;
    }
    let c = client(&broker, "backoff")
        .reconnect_backoff(
            courier::Backoff::exponential(Duration::from_millis(100), Duration::from_millis(800))
                .jitter(0.0),
        )
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    broker.stop().await.unwrap();
    let mut delays = Vec::new();
    let window = tokio::time::Instant::now() + Duration::from_millis(2500);
    while let Ok(Some(e)) = tokio::time::timeout_at(window, events.next()).await {
        if let Event::Reconnecting { delay, .. } = e {
            delays.push(delay.as_millis());
        }
    }
    println!("reconnect delays while the broker was down for 2.5 s: {delays:?} ms");
    assert_eq!(&delays[..4], [100, 200, 400, 800]);
    assert!(delays[4..].iter().all(|d| *d == 800), "capped: {delays:?}");
    assert!(delays.len() <= 7, "no storm: {} attempts", delays.len() + 1);
    broker.start_again().await.unwrap();
    tokio::time::timeout(Duration::from_secs(3), c.wait_connected())
        .await
        .unwrap()
        .unwrap();
    c.stop().await;
}
