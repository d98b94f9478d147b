#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]
//! Session edges: what happens to each message when a session starts, ends or is
//! cut, and the facts about a session a user must be able to read (session present,
//! granted QoS, refusals).
//!
//! Each test reproduces an item of the "session edges" issue against a real
//! Mosquitto: the persistent-session ones need its queueing of messages for an
//! offline client, which the embedded broker does not do the same way.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::{
    Client, ClientBuilder, ConnectionState, Event, Message, PublishError, QoS, RefusedReason,
};
use courier_integration_tests::{
    BrokerOptions, Capability, TestBroker, broker, broker_with, client, client_id, eventually,
    needs, next_connected, quick_reconnects, recv_n, selected_broker_has,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

/// A builder for a persistent session with id `id` on `broker`.
fn persistent(broker: &TestBroker, id: &str) -> ClientBuilder {
    quick_reconnects()
        .address(broker.host(), broker.port())
        .client_id(id)
        .clean_session(false)
}

/// Make the session `id` exist at the broker with a subscription to `filter`, then
/// end the connection (gracefully) and leave the session behind.
async fn leave_session(broker: &TestBroker, id: &str, filter: &str, qos: QoS) {
    let c = persistent(broker, id).connect().await.unwrap();
    let sub = c.subscribe(filter).qos(qos).await.unwrap();
    c.stop().await;
    drop(sub);
}

/// Publish `n` messages `0..n` to `topic/<i>` at `qos` from a client of its own.
async fn publish_numbered(broker: &TestBroker, topic: &str, n: usize, qos: QoS) {
    let p = client(broker, "numbered").connect().await.unwrap();
    for i in 0..n {
        p.publish(format!("{topic}/{i}"), i.to_string())
            .qos(qos)
            .await
            .unwrap();
    }
    p.stop().await;
}

/// The events up to and including `Stopped`.
async fn until_stopped(events: &mut courier::EventStream) -> Vec<Event> {
    let mut seen = Vec::new();
    while let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await {
        let stopped = matches!(event, Event::Stopped);
        seen.push(event);
        if stopped {
            break;
        }
    }
    seen
}

fn payloads(messages: &[Message]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.payload_str().unwrap().to_owned())
        .collect()
}

/// Item 1: with the README's pattern (`connect()`, then `subscribe`) and a persistent
/// session, the messages the broker queued while the client was away used to be
/// acknowledged and dropped before the subscription existed (0 of 5). They are held
/// until the subscription is made.
#[tokio::test]
async fn messages_queued_while_away_reach_the_subscription_made_after_connect() {
    let broker = broker().await;
    if !needs(
        &broker,
        "messages_queued_while_away_reach_...",
        &[Capability::PersistentSessions],
    ) {
        return;
    }
    let id = client_id("away");
    leave_session(&broker, &id, "away/#", QoS::AtLeastOnce).await;
    publish_numbered(&broker, "away", 5, QoS::AtLeastOnce).await;

    let c = persistent(&broker, &id).connect().await.unwrap();
    let mut events = c.events();
    let mut sub = c.subscribe("away/#").await.unwrap();
    let got = recv_n(&mut sub, 5, Duration::from_secs(5)).await;
    assert_eq!(payloads(&got), ["0", "1", "2", "3", "4"]);
    c.stop().await;
    for event in until_stopped(&mut events).await {
        assert!(!matches!(event, Event::Unrouted { .. }), "{event}");
    }
}

/// Item 1, second half: QoS 1 messages a previous process received but never
/// acknowledged come back to the subscription made after the next connect (0 of 2
/// before). The first process's handler never finishes; its stop ends at the grace
/// period without acknowledging.
#[tokio::test]
async fn unacknowledged_messages_of_the_last_session_reach_the_next_one() {
    let broker = broker().await;
    if !needs(
        &broker,
        "unacknowledged_messages_of_the_last_session_...",
        &[Capability::PersistentSessions, Capability::ResendOnResume],
    ) {
        return;
    }
    let id = client_id("unacked");
    let first = persistent(&broker, &id)
        .graceful_shutdown_period(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let _handle = first
        .subscribe("unacked/#")
        .handler(move |_: Client, msg: Message| {
            let arrived = arrived_tx.clone();
            async move {
                let _ = arrived.send(msg.topic().to_owned());
                std::future::pending::<()>().await;
            }
        })
        .await
        .unwrap();
    publish_numbered(&broker, "unacked", 2, QoS::AtLeastOnce).await;
    assert!(arrived.recv().await.is_some(), "the first message arrived");
    first.stop().await;

    let c = persistent(&broker, &id).connect().await.unwrap();
    let mut sub = c.subscribe("unacked/#").await.unwrap();
    let got = recv_n(&mut sub, 2, Duration::from_secs(5)).await;
    assert_eq!(payloads(&got), ["0", "1"]);
    c.stop().await;
}

/// Item 2: handlers used to keep running after `stop()` returned, and a QoS 2
/// stop/restart handled 10 messages 19 times. Now no handler runs after `stop()`
/// returns, what was not handled is not acknowledged, and across the two sessions
/// each message is handled exactly once.
#[tokio::test]
async fn a_qos2_stop_and_restart_handles_each_message_exactly_once() {
    let broker = broker().await;
    if !needs(
        &broker,
        "a_qos2_stop_and_restart_...",
        &[Capability::PersistentSessions, Capability::Qos2],
    ) {
        return;
    }
    let id = client_id("exactly-once");
    let handled: Arc<Mutex<BTreeMap<String, usize>>> = Arc::default();
    let stop_returned = Arc::new(AtomicBool::new(false));
    let ran_after_stop = Arc::new(AtomicUsize::new(0));
    let first = persistent(&broker, &id).connect().await.unwrap();
    let _handle = first
        .subscribe("once/#")
        .qos(QoS::ExactlyOnce)
        .handler({
            let (handled, stop_returned, ran_after_stop) = (
                handled.clone(),
                stop_returned.clone(),
                ran_after_stop.clone(),
            );
            move |_: Client, msg: Message| {
                let (handled, stop_returned, ran_after_stop) = (
                    handled.clone(),
                    stop_returned.clone(),
                    ran_after_stop.clone(),
                );
                async move {
                    if stop_returned.load(Ordering::SeqCst) {
                        ran_after_stop.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stop_returned.load(Ordering::SeqCst) {
                        ran_after_stop.fetch_add(1, Ordering::SeqCst);
                    }
                    let payload = msg.payload_str().unwrap_or_default().to_owned();
                    *handled.lock().unwrap().entry(payload).or_default() += 1;
                }
            }
        })
        .await
        .unwrap();
    publish_numbered(&broker, "once", 10, QoS::ExactlyOnce).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    first.stop().await;
    stop_returned.store(true, Ordering::SeqCst);
    let in_first = handled.lock().unwrap().values().sum::<usize>();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        ran_after_stop.load(Ordering::SeqCst),
        0,
        "no handler ran after stop()"
    );
    assert!(
        in_first < 10,
        "the stop came before every message was handled"
    );

    let second = persistent(&broker, &id).connect().await.unwrap();
    let _handle = second
        .subscribe("once/#")
        .qos(QoS::ExactlyOnce)
        .handler({
            let handled = handled.clone();
            move |_: Client, msg: Message| {
                let handled = handled.clone();
                async move {
                    let payload = msg.payload_str().unwrap_or_default().to_owned();
                    *handled.lock().unwrap().entry(payload).or_default() += 1;
                }
            }
        })
        .await
        .unwrap();
    let all = eventually(Duration::from_secs(10), || {
        handled.lock().unwrap().values().sum::<usize>() >= 10
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await; // room for a duplicate
    second.stop().await;
    let handled = handled.lock().unwrap().clone();
    let expected: BTreeMap<String, usize> = (0..10).map(|i| (i.to_string(), 1)).collect();
    assert!(all, "{handled:?}");
    assert_eq!(handled, expected, "each message handled exactly once");
}

/// Item 2 for streams: from the moment `stop()` is called a stream yields nothing,
/// and what it had not yielded comes back in the next session.
#[tokio::test]
async fn a_stream_ends_at_stop_and_its_unread_messages_come_back() {
    let broker = broker().await;
    if !needs(
        &broker,
        "a_stream_ends_at_stop_...",
        &[Capability::PersistentSessions, Capability::ResendOnResume],
    ) {
        return;
    }
    let id = client_id("unread");
    let first = persistent(&broker, &id).connect().await.unwrap();
    let mut sub = first.subscribe("unread/#").await.unwrap();
    publish_numbered(&broker, "unread", 3, QoS::AtLeastOnce).await;
    let read = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert_eq!(payloads(&read), ["0"]);
    first.stop().await;
    assert!(
        sub.recv().await.is_none(),
        "nothing is yielded after stop()"
    );
    drop(sub);

    let second = persistent(&broker, &id).connect().await.unwrap();
    let mut sub = second.subscribe("unread/#").await.unwrap();
    let got = recv_n(&mut sub, 2, Duration::from_secs(5)).await;
    assert_eq!(payloads(&got), ["1", "2"]);
    second.stop().await;
}

/// Item 3: `stop()` used to take the whole 30 s grace period while the broker was
/// down, held by a publish its caller had already given up on. Not connected, it
/// returns at once, and a publish still waiting fails with an error that says it
/// may have been delivered.
#[tokio::test]
async fn stop_returns_at_once_while_not_connected() {
    let port = courier_testkit::free_port().unwrap();
    let c = quick_reconnects()
        .address("127.0.0.1", port)
        .client_id(client_id("down"))
        .start()
        .unwrap();
    let given_up = c
        .publish("down", "x")
        .timeout(Duration::from_millis(300))
        .await;
    assert!(
        matches!(given_up, Err(PublishError::Timeout(_))),
        "{given_up:?}"
    );
    let waiting = tokio::spawn({
        let c = c.clone();
        async move { c.publish("down", "y").await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    tokio::time::timeout(Duration::from_secs(1), c.stop())
        .await
        .expect("stop() returns within 1 s when not connected");
    let waited = waiting.await.unwrap();
    assert!(
        matches!(waited, Err(PublishError::StoppedInFlight)),
        "{waited:?}"
    );
    assert!(waited.unwrap_err().may_have_been_delivered());
}

/// Item 4: `abort()` ends the connection without DISCONNECT, so the broker publishes
/// the last will; the publish in flight resolves with a typed error. The broker is
/// frozen meanwhile so that the publish is still unacknowledged when the abort
/// comes.
#[tokio::test]
async fn abort_cuts_the_connection_the_will_is_published_and_calls_fail() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "abort_cuts_the_connection_...",
        &[Capability::Freeze],
    ) {
        return;
    }
    let watcher = client(&broker, "will-watcher").connect().await.unwrap();
    let mut wills = watcher.subscribe("wills/#").await.unwrap();
    let c = client(&broker, "aborted")
        .last_will("wills/aborted", "gone", QoS::AtLeastOnce, false)
        .connect()
        .await
        .unwrap();
    broker.pause().unwrap();
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { c.publish("abort/x", "x").await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(Duration::from_secs(2), c.abort())
        .await
        .expect("abort() returns at once");
    let result = in_flight.await.unwrap();
    assert!(matches!(result, Err(PublishError::Aborted)), "{result:?}");
    assert_eq!(c.state(), ConnectionState::Stopped);
    broker.resume().unwrap();
    let will = recv_n(&mut wills, 1, Duration::from_secs(10)).await;
    assert_eq!(will[0].topic(), "wills/aborted");
    assert_eq!(will[0].payload_str().unwrap(), "gone");
    watcher.stop().await;
}

/// Item 4, the other side: a graceful stop sends DISCONNECT, so no will; and it
/// reports `Disconnected` before `Stopped` (item 7: it used to emit `Stopped` only).
#[tokio::test]
async fn a_graceful_stop_publishes_no_will_and_reports_disconnected_then_stopped() {
    let broker = broker().await;
    let watcher = client(&broker, "no-will-watcher").connect().await.unwrap();
    let mut wills = watcher.subscribe("wills/#").await.unwrap();
    let c = client(&broker, "graceful")
        .last_will("wills/graceful", "gone", QoS::AtLeastOnce, false)
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    c.stop().await;
    let seen = until_stopped(&mut events).await;
    assert!(
        matches!(&seen[..], [Event::Disconnected { .. }, Event::Stopped]),
        "{seen:?}"
    );
    courier_integration_tests::assert_silent(&mut wills, Duration::from_millis(500)).await;
    watcher.stop().await;
}

/// Item 5: whether the broker kept the session is readable after `connect()` and
/// after every reconnect.
#[tokio::test]
async fn session_present_is_readable_after_connect_and_reconnect() {
    let mut broker = broker_with(BrokerOptions::new().persistence(true)).await;
    if !needs(
        &broker,
        "session_present_is_readable_...",
        &[Capability::Restart, Capability::SessionsAcrossRestart],
    ) {
        return;
    }
    let id = client_id("present");
    let first = persistent(&broker, &id).connect().await.unwrap();
    assert_eq!(first.session_present(), Some(false), "a new session");
    first.stop().await;
    let again = persistent(&broker, &id).connect().await.unwrap();
    assert_eq!(again.session_present(), Some(true), "the session was kept");
    let mut events = again.events();
    broker.restart().await.unwrap();
    assert!(next_connected(&mut events, Duration::from_secs(10)).await);
    assert_eq!(
        again.session_present(),
        Some(true),
        "kept across the restart"
    );
    again.stop().await;

    let clean = client(&broker, "clean").start().unwrap();
    assert_eq!(clean.session_present(), None, "before the first connect");
    clean.wait_connected().await.unwrap();
    assert_eq!(clean.session_present(), Some(false));
    clean.stop().await;
}

/// Item 5: a broker that grants a lower QoS than asked for (Mosquitto's `max_qos 1`)
/// says so through the subscription, and the messages arrive at the granted QoS.
#[tokio::test]
async fn the_granted_qos_is_readable_and_messages_arrive_at_it() {
    let broker = broker_with(BrokerOptions::new().config_line("max_qos 1")).await;
    if !needs(
        &broker,
        "the_granted_qos_is_readable_...",
        &[Capability::MosquittoConfig],
    ) {
        return;
    }
    let c = client(&broker, "max-qos").connect().await.unwrap();
    let mut sub = c.subscribe("capped/#").qos(QoS::ExactlyOnce).await.unwrap();
    let grant = &sub.grants()[0];
    assert_eq!(grant.requested, QoS::ExactlyOnce);
    assert_eq!(grant.granted, Some(QoS::AtLeastOnce));
    c.publish("capped/x", "x")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let got = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].qos(), QoS::AtLeastOnce);
    c.stop().await;
}

/// The dynamic-security plugin, if this Mosquitto has it.
fn dynsec_plugin() -> Option<std::path::PathBuf> {
    let found = std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|dir| dir.path().join("mosquitto_dynamic_security.so"))
        .find(|path| path.exists());
    found.or_else(|| {
        let path = std::path::PathBuf::from("/usr/lib/mosquitto_dynamic_security.so");
        path.exists().then_some(path)
    })
}

/// Item 5: one filter of a SUBSCRIBE denied by an ACL (Mosquitto's dynamic-security
/// plugin, a role that denies `acl/denied/#` to anonymous clients) used to fail the
/// whole call and unsubscribe the granted filters. The refusal is readable and the
/// granted filter keeps receiving.
#[tokio::test]
async fn a_filter_denied_by_an_acl_is_refused_and_the_others_keep_receiving() {
    if !selected_broker_has(
        "a_filter_denied_by_an_acl_...",
        &[Capability::MosquittoConfig],
    ) {
        return;
    }
    let Some(plugin) = dynsec_plugin() else {
        eprintln!("SKIP a_filter_denied_by_an_acl_...: no mosquitto_dynamic_security.so");
        return;
    };
    let dir = std::env::temp_dir().join(format!("courier-dynsec-{}", client_id("acl")));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("dynamic-security.json");
    std::fs::write(
        &config,
        r#"{
  "defaultACLAccess": {"publishClientSend": true, "publishClientReceive": true,
                       "subscribe": true, "unsubscribe": true},
  "clients": [],
  "groups": [{"groupname": "anonymous", "roles": [{"rolename": "deny-one"}], "clients": []}],
  "roles": [{"rolename": "deny-one", "acls": [
    {"acltype": "subscribePattern", "topic": "acl/denied/#", "priority": 0, "allow": false}
  ]}],
  "anonymousGroup": "anonymous"
}"#,
    )
    .unwrap();
    let broker = broker_with(
        BrokerOptions::new()
            .config_line(format!("plugin {}", plugin.display()))
            .config_line(format!("plugin_opt_config_file {}", config.display())),
    )
    .await;
    let c = client(&broker, "acl").connect().await.unwrap();
    let mut sub = c
        .subscribe_many([
            ("acl/open/#", QoS::AtLeastOnce),
            ("acl/denied/#", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    assert_eq!(sub.filters(), ["acl/open/#"]);
    assert!(sub.grants()[1].is_refused(), "{:?}", sub.grants());
    c.publish("acl/open/x", "still here").await.unwrap();
    let got = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].payload_str().unwrap(), "still here");
    c.stop().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Item 6: a `start()`ed client used to retry a refused CONNECT until `stop()`, and
/// `wait_connected()` said only `Closed`. With `retry_refused(false)` the refusal
/// stops it and `wait_connected()` returns the broker's reason (Mosquitto answers a
/// wrong password with return code 5, not authorized).
#[tokio::test]
async fn a_refusal_stops_a_started_client_when_asked_and_says_why() {
    if !selected_broker_has(
        "a_refusal_stops_a_started_client_...",
        &[Capability::Credentials],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().credentials("svc", "right")).await;
    let c = client(&broker, "refused")
        .username("svc")
        .password("wrong")
        .retry_refused(false)
        .start()
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), c.wait_connected())
        .await
        .expect("the refusal ends the wait")
        .unwrap_err();
    assert_eq!(
        err.refused_reason(),
        Some(RefusedReason::NotAuthorized),
        "{err}"
    );
    assert_eq!(c.state(), ConnectionState::Stopped);

    // By default a refusal is retried (a credential provider may fix it).
    let retrying = client(&broker, "retrying")
        .username("svc")
        .password("wrong")
        .start()
        .unwrap();
    let mut events = retrying.events();
    let mut failed = 0;
    while failed < 3 {
        match tokio::time::timeout(Duration::from_secs(5), events.next()).await {
            Ok(Some(Event::ConnectFailed { .. })) => failed += 1,
            Ok(Some(_)) => {}
            other => panic!("expected retries, got {other:?}"),
        }
    }
    assert_eq!(retrying.state(), ConnectionState::Connecting);
    retrying.stop().await;
}

/// Item 1's rule for a message no subscription claims: never dropped silently. A
/// message queued for a subscription the application no longer makes is reported
/// as `Unrouted` after the hold period, or handed to the fallback handler.
#[tokio::test]
async fn a_message_no_subscription_claims_is_reported_or_goes_to_the_fallback() {
    let broker = broker().await;
    if !needs(
        &broker,
        "a_message_no_subscription_claims_...",
        &[Capability::PersistentSessions],
    ) {
        return;
    }
    let id = client_id("orphan");
    leave_session(&broker, &id, "orphan/#", QoS::AtLeastOnce).await;
    publish_numbered(&broker, "orphan", 1, QoS::AtLeastOnce).await;

    let reported = persistent(&broker, &id)
        .unrouted_hold(Duration::from_millis(200))
        .start()
        .unwrap();
    let mut events = reported.events();
    let unrouted = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = events.next().await {
            if let Event::Unrouted { topic, qos } = event {
                return Some((topic, qos));
            }
        }
        None
    })
    .await
    .expect("an Unrouted event");
    assert_eq!(unrouted, Some(("orphan/0".to_owned(), QoS::AtLeastOnce)));
    reported.stop().await;

    publish_numbered(&broker, "orphan", 1, QoS::AtLeastOnce).await;
    let (tx, mut fallback) = mpsc::unbounded_channel();
    let handled = persistent(&broker, &id)
        .unrouted_hold(Duration::from_millis(200))
        .unrouted_handler(move |_: Client, msg: Message| {
            let _ = tx.send(msg.topic().to_owned());
            async {}
        })
        .connect()
        .await
        .unwrap();
    let topic = tokio::time::timeout(Duration::from_secs(5), fallback.recv())
        .await
        .expect("the fallback handler got the message");
    assert_eq!(topic.as_deref(), Some("orphan/0"));
    handled.stop().await;

    let after = persistent(&broker, &id).connect().await.unwrap();
    assert_eq!(
        after.session_present(),
        Some(true),
        "both were acknowledged: nothing is left in the session"
    );
    let mut sub = after.subscribe("orphan/#").await.unwrap();
    courier_integration_tests::assert_silent(&mut sub, Duration::from_millis(300)).await;
    after.stop().await;
}
