//! `courier_core::testing::FakeBroker`: each capability of the fake, through the
//! ordinary `Client` API.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests: a failed unwrap is a failed test"
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier_core::client::middleware::{Publisher, publish_fn};
use courier_core::testing::FakeBroker;
use courier_core::{
    BoxError, Client, ConnectionState, Event, EventStream, Message, MessageParts, PublishError,
    QoS, SubscribeError, UnsubscribeError,
};
use futures_util::{FutureExt, StreamExt};
use tokio::sync::mpsc;

const SECOND: Duration = Duration::from_secs(1);

/// The next event that is not a `Connected` left from the client's creation.
async fn next_event(events: &mut EventStream) -> Event {
    tokio::time::timeout(SECOND, events.next())
        .await
        .expect("an event")
        .expect("the stream goes on")
}

/// A handler subscription on `filter` that sends what it gets to the returned
/// channel.
async fn forward(client: &Client, filter: &str, qos: QoS) -> mpsc::UnboundedReceiver<Message> {
    let (tx, rx) = mpsc::unbounded_channel();
    client
        .subscribe(filter)
        .qos(qos)
        .handler(move |_: Client, msg: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(msg);
                Ok::<(), BoxError>(())
            }
        })
        .await
        .unwrap();
    rx
}

#[tokio::test]
async fn publishes_are_recorded_as_sent() {
    let broker = FakeBroker::new();
    let client = broker.client();
    client.publish("a/b", "raw").await.unwrap();
    client
        .publish_value("orders/1", &serde_json::json!({"id": 1}))
        .qos(QoS::ExactlyOnce)
        .retain(true)
        .await
        .unwrap();

    let published = broker.published();
    assert_eq!(published.len(), 2);
    assert_eq!(published[0].topic, "a/b");
    assert_eq!(published[0].payload_str().unwrap(), "raw");
    assert_eq!(published[0].qos, QoS::AtLeastOnce);
    assert!(!published[0].retain);
    assert_eq!(published[0].client_id, "fake");
    assert_eq!(published[1].qos, QoS::ExactlyOnce);
    assert!(published[1].retain);
    let order: serde_json::Value = published[1].decode().unwrap();
    assert_eq!(order["id"], 1);

    assert_eq!(broker.published_to("orders/+").len(), 1);
    assert_eq!(broker.take_published().len(), 2);
    assert!(broker.published().is_empty(), "taken");
}

#[tokio::test]
async fn the_client_checks_run_as_on_a_connection() {
    let broker = FakeBroker::new();
    let client = broker.client_with(Client::builder().max_packet_size(64));
    let invalid = client.publish("a/+", "x").await.unwrap_err();
    assert!(
        matches!(invalid, PublishError::InvalidTopic { .. }),
        "{invalid}"
    );
    let large = client.publish("a", vec![0u8; 100]).await.unwrap_err();
    assert!(
        matches!(large, PublishError::PacketTooLarge { .. }),
        "{large}"
    );
    let filter = client.subscribe("a/#/b").await.unwrap_err();
    assert!(
        matches!(filter, SubscribeError::InvalidFilter { .. }),
        "{filter}"
    );
    let none = client.unsubscribe(Vec::<String>::new()).await.unwrap_err();
    assert!(matches!(none, UnsubscribeError::NoFilters), "{none}");
    assert!(broker.published().is_empty());
}

#[tokio::test]
async fn middleware_runs_once_per_publish_and_what_it_sends_is_recorded() {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let builder =
        Client::builder()
            .client_id("svc")
            .publish_layer(publish_fn(move |mut request, next| {
                counted.fetch_add(1, Ordering::SeqCst);
                request
                    .properties
                    .push(("trace".to_owned(), "t-1".to_owned()));
                async move { next.publish(request).await }
            }));
    let broker = FakeBroker::new();
    let client = broker.client_with(builder);
    let mut own = client.subscribe("a").await.unwrap();
    client.publish("a", "1").await.unwrap();
    client.publish("a", "2").await.unwrap();

    assert_eq!(calls.load(Ordering::SeqCst), 2);
    let published = broker.published();
    assert_eq!(published[0].client_id, "svc");
    assert_eq!(published[0].property("trace"), Some("t-1"));
    // MQTT 3.1.1 has no properties on the wire: the subscriber gets none.
    let received = own.recv().await.unwrap();
    assert_eq!(received.payload_str().unwrap(), "1");
    assert!(received.properties().is_empty());
}

#[tokio::test]
async fn an_awaited_inject_resolves_once_the_handler_returned() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let handled = Arc::new(AtomicUsize::new(0));
    let seen = handled.clone();
    client
        .subscribe("jobs/+")
        .handler(move |_: Client, _: Message| {
            let seen = seen.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                seen.fetch_add(1, Ordering::SeqCst);
                Ok::<(), BoxError>(())
            }
        })
        .await
        .unwrap();

    for (n, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        assert_eq!(broker.inject("jobs/1", "x").qos(qos).await, 1, "{qos}");
        assert_eq!(
            handled.load(Ordering::SeqCst),
            n + 1,
            "{qos}: handled before"
        );
    }
    assert_eq!(broker.inject("other", "x").await, 0, "no subscription");
}

#[tokio::test]
async fn a_failing_handler_still_consumes_the_message_and_is_reported() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut events = client.events();
    client
        .subscribe("a")
        .handler(|_: Client, _: Message| async { Err::<(), BoxError>("boom".into()) })
        .await
        .unwrap();
    assert_eq!(broker.inject("a", "x").await, 1);
    match next_event(&mut events).await {
        Event::HandlerFailed { topic, error } => {
            assert_eq!(topic, "a");
            assert_eq!(error, "boom");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn a_stream_consumes_a_message_when_it_yields_it() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut stream = client.subscribe("s/#").await.unwrap();
    let injected = tokio::spawn(broker.inject("s/1", "x").into_future());
    let received = stream.recv().await.unwrap();
    assert_eq!(received.topic(), "s/1");
    assert_eq!(injected.await.unwrap(), 1);

    // Not read: the await waits, `deliver` does not.
    assert_eq!(broker.inject("s/2", "x").deliver(), 1);
    let waiting = tokio::time::timeout(Duration::from_millis(50), broker.inject("s/3", "x")).await;
    assert!(waiting.is_err(), "nobody read it");
}

#[tokio::test]
async fn messages_arrive_at_no_more_than_the_qos_granted() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut qos0 = forward(&client, "q/0", QoS::AtMostOnce).await;
    let mut qos1 = forward(&client, "q/1", QoS::AtLeastOnce).await;

    assert_eq!(broker.inject("q/0", "x").qos(QoS::ExactlyOnce).await, 1);
    let m = qos0.recv().await.unwrap();
    assert_eq!(m.qos(), QoS::AtMostOnce);
    assert_eq!(m.packet_id(), None);

    assert_eq!(broker.inject("q/1", "x").qos(QoS::ExactlyOnce).await, 1);
    let m = qos1.recv().await.unwrap();
    assert_eq!(m.qos(), QoS::AtLeastOnce);
    assert!(m.packet_id().is_some());

    assert_eq!(broker.inject("q/1", "x").qos(QoS::AtMostOnce).await, 1);
    assert_eq!(qos1.recv().await.unwrap().qos(), QoS::AtMostOnce);

    let dup = broker
        .inject_parts(MessageParts::new("q/1", "x"))
        .duplicate(true)
        .property("k", "v");
    assert_eq!(dup.await, 1);
    let m = qos1.recv().await.unwrap();
    assert!(m.duplicate());
    assert_eq!(m.property("k"), Some("v"));
}

#[tokio::test]
async fn qos0_is_dropped_from_a_full_buffer_and_qos1_is_not() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut stream = client.subscribe("b").buffer(1).await.unwrap();
    let qos0 = |payload: &'static str| broker.inject("b", payload).qos(QoS::AtMostOnce);
    assert_eq!(qos0("1").deliver(), 1);
    assert_eq!(qos0("2").deliver(), 0, "the buffer holds one");
    assert_eq!(qos0("3").await, 0, "dropped: nothing to wait for");
    assert_eq!(
        broker.inject("b", "4").deliver(),
        1,
        "QoS 1 is always queued"
    );
    let payloads: Vec<String> = [stream.recv().await, stream.recv().await]
        .into_iter()
        .map(|m| m.unwrap().payload_str().unwrap().to_owned())
        .collect();
    assert_eq!(payloads, ["1", "4"]);
}

#[tokio::test]
async fn retained_messages_reach_later_subscriptions() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut live = client.subscribe("status/#").await.unwrap();
    assert_eq!(
        broker.inject("status/a", "up").retain(true).deliver(),
        1,
        "delivered now too"
    );
    assert!(
        !live.recv().await.unwrap().retained(),
        "unflagged when live"
    );
    client
        .publish("status/b", "down")
        .qos(QoS::AtMostOnce)
        .retain(true)
        .await
        .unwrap();
    assert!(!live.recv().await.unwrap().retained());
    assert_eq!(broker.retained("status/a").as_deref(), Some(&b"up"[..]));

    let mut later = client.subscribe("status/+").await.unwrap();
    let a = later.recv().await.unwrap();
    assert_eq!((a.topic(), a.retained()), ("status/a", true));
    assert_eq!(a.qos(), QoS::AtLeastOnce);
    let b = later.recv().await.unwrap();
    assert_eq!(
        (b.topic(), b.retained(), b.qos()),
        ("status/b", true, QoS::AtMostOnce)
    );

    // An empty retained payload clears it.
    broker.inject("status/a", "").retain(true).deliver();
    assert_eq!(broker.retained("status/a"), None);
    let mut last = client.subscribe("status/a").await.unwrap();
    // Streams are read here, after: `deliver` does not wait for them.
    assert_eq!(broker.inject("status/a", "again").deliver(), 3);
    let again = last.recv().await.unwrap();
    assert_eq!(
        again.payload_str().unwrap(),
        "again",
        "no retained message first"
    );
}

#[tokio::test]
async fn clients_of_one_fake_see_each_other_and_share_groups_take_turns() {
    let broker = FakeBroker::new();
    let producer = broker.client();
    let (w1, w2) = (broker.client(), broker.client());
    let mut first = w1.subscribe("$share/workers/jobs/+").await.unwrap();
    let mut second = w2.subscribe("$share/workers/jobs/+").await.unwrap();
    let mut audit = w2.subscribe("jobs/#").await.unwrap();

    for n in 0..4 {
        producer.publish(format!("jobs/{n}"), "x").await.unwrap();
    }
    // A publish is queued to its subscribers before it resolves.
    let mut counts = [0, 0, 0];
    for (count, sub) in counts.iter_mut().zip([&mut first, &mut second, &mut audit]) {
        while sub.recv().now_or_never().flatten().is_some() {
            *count += 1;
        }
    }
    assert_eq!(
        counts,
        [2, 2, 4],
        "one member of the group each, all to the rest"
    );

    // One subscription matched by two of its filters gets a message once.
    let mut both = producer
        .subscribe_many([("jobs/+", QoS::AtLeastOnce), ("jobs/#", QoS::AtLeastOnce)])
        .await
        .unwrap();
    assert_eq!(broker.inject("jobs/9", "x").deliver(), 3);
    assert!(both.recv().await.is_some());
    assert!(both.recv().now_or_never().is_none());
}

#[tokio::test]
async fn queued_failures_fail_the_next_calls_once() {
    let broker = FakeBroker::new();
    let client = broker.client();
    broker.fail_next_publish(PublishError::ConnectionLost);
    broker.fail_next_publish(PublishError::Timeout(SECOND));
    assert!(matches!(
        client.publish("a", "1").await,
        Err(PublishError::ConnectionLost)
    ));
    assert!(client.publish("a", "2").await.unwrap_err().is_timeout());
    client.publish("a", "3").await.unwrap();
    let topics: Vec<String> = broker.published().into_iter().map(|p| p.topic).collect();
    assert_eq!(topics, ["a"], "failed publishes are not recorded");

    broker.fail_next_subscribe(SubscribeError::Timeout(SECOND));
    assert!(client.subscribe("x").await.unwrap_err().is_timeout());
    assert!(broker.subscriptions().is_empty());
    let sub = client.subscribe("x").await.unwrap();

    broker.fail_next_unsubscribe(UnsubscribeError::Closed);
    assert!(matches!(
        client.unsubscribe(["x"]).await,
        Err(UnsubscribeError::Closed)
    ));
    assert_eq!(broker.subscriptions(), ["x"], "nothing ended");
    sub.unsubscribe().await.unwrap();
    assert!(broker.subscriptions().is_empty());
}

#[tokio::test]
async fn a_rule_fails_the_publishes_it_picks() {
    let broker = FakeBroker::new();
    let client = broker.client();
    broker.fail_publishes_when(|request| {
        (request.qos == QoS::ExactlyOnce).then(|| PublishError::Middleware("no QoS 2".into()))
    });
    client.publish("a", "x").await.unwrap();
    let refused = client.publish("a", "x").qos(QoS::ExactlyOnce).await;
    assert!(matches!(refused, Err(PublishError::Middleware(_))));
    broker.clear_failures();
    client
        .publish("a", "x")
        .qos(QoS::ExactlyOnce)
        .await
        .unwrap();
    assert_eq!(broker.published().len(), 2);
}

#[tokio::test]
async fn refused_filters_and_the_qos_limit_show_in_the_grants() {
    let broker = FakeBroker::new();
    let client = broker.client();
    broker.refuse_filter("secret/#");
    broker.set_max_qos(QoS::AtLeastOnce);
    let sub = client
        .subscribe_many([("secret/#", QoS::AtLeastOnce), ("open/#", QoS::ExactlyOnce)])
        .await
        .unwrap();
    assert_eq!(sub.filters(), ["open/#"]);
    assert!(sub.grants()[0].is_refused());
    assert_eq!(sub.grants()[1].granted, Some(QoS::AtLeastOnce));
    match client.subscribe("secret/#").await {
        Err(SubscribeError::Rejected(filters)) => assert_eq!(filters, ["secret/#"]),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(broker.inject("secret/x", "x").await, 0);
}

#[tokio::test]
async fn disconnect_and_reconnect_drive_the_state_events_and_callbacks() {
    let broker = FakeBroker::new();
    let (lost_tx, mut lost) = mpsc::unbounded_channel();
    let (connect_tx, mut connected) = mpsc::unbounded_channel();
    let builder = Client::builder()
        .write_timeout(Duration::from_millis(50))
        .on_connection_lost(move |_, reason| {
            let _ = lost_tx.send(reason);
            async {}
        })
        .on_connect(move |_, session_present| {
            let _ = connect_tx.send(session_present);
            async {}
        });
    let client = broker.client_with(builder);
    assert_eq!(client.state(), ConnectionState::Connected);
    assert_eq!(connected.recv().await, Some(false), "the first connect");
    assert_eq!(client.session_present(), Some(false));
    let mut events = client.events();
    let mut sub = client.subscribe("in").await.unwrap();

    broker.disconnect();
    assert!(!broker.is_connected());
    assert_eq!(client.state(), ConnectionState::Disconnected);
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(lost.recv().await.is_some());

    // Waits for the connection, times out, stays queued.
    let timed_out = client.publish("out", "1").await.unwrap_err();
    assert!(timed_out.is_timeout());
    assert_eq!(client.publishes_in_flight(), 1);
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.publish("out", "2").timeout(SECOND).await }
    });
    assert!(client.subscribe("x").await.unwrap_err().is_timeout());
    assert_eq!(
        broker.inject("in", "qos0").qos(QoS::AtMostOnce).deliver(),
        0
    );
    let kept = tokio::spawn(broker.inject("in", "qos1").into_future());
    tokio::task::yield_now().await;
    assert!(broker.published().is_empty());

    broker.reconnect();
    assert_eq!(client.state(), ConnectionState::Connected);
    assert!(matches!(
        next_event(&mut events).await,
        Event::Connected {
            session_present: true
        }
    ));
    assert_eq!(connected.recv().await, Some(true));
    waiting.await.unwrap().unwrap();
    let topics: Vec<String> = broker
        .published()
        .into_iter()
        .map(|p| p.payload_str().unwrap().to_owned())
        .collect();
    assert_eq!(topics, ["1", "2"], "in order");
    assert_eq!(client.publishes_in_flight(), 0);
    let received = sub.recv().await.unwrap();
    assert_eq!(received.payload_str().unwrap(), "qos1", "QoS 0 was lost");
    assert_eq!(kept.await.unwrap(), 1);
}

#[tokio::test]
async fn a_clean_session_is_not_present_and_keeps_nothing() {
    let broker = FakeBroker::new();
    let client = broker.client_with(Client::builder().clean_session(true));
    let mut sub = client.subscribe("in").await.unwrap();
    broker.disconnect();
    assert_eq!(broker.inject("in", "lost").deliver(), 0);
    broker.reconnect();
    assert_eq!(client.session_present(), Some(false));
    assert_eq!(broker.inject("in", "new").deliver(), 1);
    assert_eq!(sub.recv().await.unwrap().payload_str().unwrap(), "new");
}

#[tokio::test]
async fn a_client_made_while_disconnected_connects_on_reconnect() {
    let broker = FakeBroker::new();
    broker.disconnect();
    let client = broker.client();
    assert_eq!(client.state(), ConnectionState::Connecting);
    assert_eq!(client.session_present(), None);
    let connected = tokio::spawn({
        let client = client.clone();
        async move { client.wait_connected().await }
    });
    broker.reconnect();
    connected.await.unwrap().unwrap();
    assert_eq!(client.session_present(), Some(false));
}

#[tokio::test]
async fn stop_ends_the_client_and_its_subscriptions() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut events = client.events();
    let mut sub = client.subscribe("a").await.unwrap();
    client.stop().await;
    assert_eq!(client.state(), ConnectionState::Stopped);
    assert!(sub.recv().await.is_none());
    assert!(client.publish("a", "x").await.unwrap_err().is_closed());
    assert!(matches!(
        client.subscribe("b").await,
        Err(SubscribeError::Closed)
    ));
    assert!(broker.subscriptions().is_empty());
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(next_event(&mut events).await, Event::Stopped));
    assert_eq!(broker.inject("a", "x").await, 0);
}

#[tokio::test]
async fn stop_fails_the_publishes_waiting_for_the_connection() {
    let broker = FakeBroker::new();
    let client = broker.client();
    broker.disconnect();
    let waiting = tokio::spawn({
        let client = client.clone();
        async move { client.publish("a", "x").await }
    });
    tokio::task::yield_now().await;
    client.stop().await;
    assert!(matches!(
        waiting.await.unwrap(),
        Err(PublishError::StoppedInFlight)
    ));
    broker.reconnect();
    assert!(broker.published().is_empty());
}

#[tokio::test]
async fn abort_publishes_the_last_will() {
    let broker = FakeBroker::new();
    let watcher = broker.client();
    let mut wills = watcher.subscribe("status/+").await.unwrap();
    let client = broker.client_with(Client::builder().client_id("svc").last_will(
        "status/svc",
        "offline",
        QoS::AtLeastOnce,
        true,
    ));
    client.abort().await;
    assert_eq!(client.state(), ConnectionState::Stopped);
    let will = wills.recv().await.unwrap();
    assert_eq!(will.payload_str().unwrap(), "offline");
    assert_eq!(broker.published()[0].client_id, "svc");
    assert_eq!(
        broker.retained("status/svc").as_deref(),
        Some(&b"offline"[..])
    );

    // A graceful stop sends no will.
    let quiet =
        broker.client_with(Client::builder().last_will("status/q", "x", QoS::AtLeastOnce, false));
    quiet.stop().await;
    assert_eq!(broker.published().len(), 1);
}

#[tokio::test]
async fn a_lost_connection_publishes_the_will_and_stops_a_client_that_does_not_reconnect() {
    let broker = FakeBroker::new();
    let watcher = broker.client();
    let mut wills = watcher.subscribe("status/+").await.unwrap();
    let once = broker.client_with(
        Client::builder()
            .client_id("once")
            .auto_reconnect(false)
            .write_timeout(Duration::from_secs(60))
            .last_will("status/once", "gone", QoS::AtLeastOnce, false),
    );
    let mut events = once.events();
    broker.disconnect();
    assert_eq!(once.state(), ConnectionState::Stopped);
    assert!(matches!(
        next_event(&mut events).await,
        Event::Disconnected { .. }
    ));
    assert!(matches!(next_event(&mut events).await, Event::Stopped));
    assert!(once.publish("a", "x").await.unwrap_err().is_closed());
    let will = &broker.published()[0];
    assert_eq!(
        (will.topic.as_str(), will.client_id.as_str()),
        ("status/once", "once")
    );

    // The watcher was cut off too: it gets the will on reconnect.
    broker.reconnect();
    assert_eq!(wills.recv().await.unwrap().payload_str().unwrap(), "gone");
}

#[tokio::test]
async fn dropping_the_last_handle_closes_the_client() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut state = client.state_watch();
    let _sub = client.subscribe("a").await.unwrap();
    drop(client);
    state
        .wait_for(|s| *s == ConnectionState::Stopped)
        .await
        .unwrap();
    assert!(broker.subscriptions().is_empty());
}

#[tokio::test]
async fn waiting_for_a_publish_or_a_subscription_from_a_task() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let task = tokio::spawn({
        let client = client.clone();
        async move {
            let mut sub = client.subscribe("cmd").await.unwrap();
            let msg = sub.recv().await.unwrap();
            client.publish("ack", msg.payload().clone()).await.unwrap();
        }
    });
    broker.wait_for_subscription("cmd", SECOND).await.unwrap();
    assert_eq!(broker.inject("cmd", "go").deliver(), 1);
    let ack = broker.next_published(SECOND).await.unwrap();
    assert_eq!(
        (ack.topic.as_str(), ack.payload_str().unwrap()),
        ("ack", "go")
    );
    task.await.unwrap();

    let nothing = broker.next_published(Duration::from_millis(10)).await;
    assert_eq!(nothing.unwrap_err().waited(), Duration::from_millis(10));
    assert!(
        broker
            .wait_for_subscription("nope", Duration::from_millis(10))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn unsubscribing_ends_subscriptions_and_resubscribing_works() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let mut sub = client.subscribe("a").await.unwrap();
    client.unsubscribe(["a"]).await.unwrap();
    assert!(sub.recv().await.is_none());
    assert_eq!(broker.inject("a", "x").await, 0);

    // Dropping a subscription unsubscribes from a task; a new one on the same
    // filter made meanwhile stays.
    drop(client.subscribe("b").await.unwrap());
    let mut again = client.subscribe("b").await.unwrap();
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
    assert_eq!(broker.subscriptions(), ["b"]);
    assert_eq!(broker.inject("b", "x").deliver(), 1);
    assert!(again.recv().await.is_some());
}

#[tokio::test]
async fn info_describes_the_fake_client() {
    let broker = FakeBroker::new();
    let client = broker.client();
    let _sub = client
        .subscribe_many([("a/+", QoS::AtMostOnce), ("b", QoS::ExactlyOnce)])
        .await
        .unwrap();
    let info = client.info();
    assert_eq!(info.mode, "fake");
    assert_eq!(info.client_id, "fake");
    assert_eq!(info.addresses, ["fake"]);
    assert!(info.connected);
    assert_eq!(info.subscriptions.get("a/+"), Some(&0));
    assert_eq!(info.subscriptions.get("b"), Some(&2));
    assert_eq!(client.address(), "fake");
}
