//! Subscribing: wildcard routing, several filters, handlers that publish, slow
//! handlers, unsubscribing, refused subscriptions.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use courier::{Client, Event, Message, QoS, SubscribeError};
use courier_integration_tests::{
    Capability, assert_silent, broker, client, eventually, needs, recv_n, topics_until_quiet, wire,
};
use futures_util::StreamExt;
use tokio::sync::mpsc;

#[tokio::test]
async fn messages_route_to_every_matching_filter() {
    let broker = broker().await;
    let c = client(&broker, "routes").connect().await.unwrap();
    let mut plus = c.subscribe("home/+/temp").await.unwrap();
    let mut hash = c.subscribe("home/#").await.unwrap();
    let mut exact = c.subscribe("home/kitchen/temp").await.unwrap();
    c.publish("home/kitchen/temp", "21").await.unwrap();
    c.publish("home/hall/light", "on").await.unwrap();
    c.publish("home", "parent level matches #").await.unwrap();
    let quiet = Duration::from_millis(400);
    assert_eq!(
        topics_until_quiet(&mut hash, quiet).await,
        ["home/kitchen/temp", "home/hall/light", "home"]
    );
    assert_eq!(
        topics_until_quiet(&mut plus, quiet).await,
        ["home/kitchen/temp"]
    );
    assert_eq!(
        topics_until_quiet(&mut exact, quiet).await,
        ["home/kitchen/temp"]
    );
    c.stop().await;
}

#[tokio::test]
async fn subscribe_many_delivers_each_message_once() {
    let broker = broker().await;
    let c = client(&broker, "many").connect().await.unwrap();
    let mut sub = c
        .subscribe_many([
            ("a/#", QoS::AtLeastOnce),
            ("a/+", QoS::AtMostOnce),
            ("b", QoS::ExactlyOnce),
        ])
        .await
        .unwrap();
    assert_eq!(sub.filters(), ["a/#", "a/+", "b"]);
    c.publish("a/x", "1").await.unwrap();
    c.publish("b", "2").await.unwrap();
    let mut arrivals = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_millis(400), sub.recv()).await {
        arrivals.push(msg.topic().to_owned());
    }
    if broker.supports(Capability::OneCopyForOverlaps) {
        // One copy per message from the broker, and the stream takes it once even
        // though two of its filters match a/x.
        assert_eq!(arrivals, ["a/x", "b"]);
    } else {
        // rumqttd sends one copy per matching subscription (MQTT allows it); each
        // copy still reaches the stream once, so a/x shows up at most twice.
        let mut distinct = arrivals.clone();
        distinct.dedup();
        assert_eq!(distinct, ["a/x", "b"], "{arrivals:?}");
        assert!(arrivals.len() <= 3, "{arrivals:?}");
    }
    c.stop().await;
}

/// A handler gets a client and can publish from inside, awaiting the ack, without
/// freezing the connection (rumqttc #1025).
#[tokio::test]
async fn handlers_can_publish_from_inside() {
    let broker = broker().await;
    let service = client(&broker, "echo").connect().await.unwrap();
    service
        .subscribe("req/+")
        .handler(|client: Client, msg: Message| async move {
            let reply = format!("re: {}", msg.payload_str()?);
            client
                .publish(msg.topic().replace("req/", "resp/"), reply)
                .await?;
            Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
        })
        .await
        .unwrap();
    let caller = client(&broker, "caller").connect().await.unwrap();
    let mut responses = caller.subscribe("resp/#").await.unwrap();
    for i in 0..20 {
        caller
            .publish(format!("req/{i}"), format!("ping {i}"))
            .await
            .unwrap();
    }
    let got = recv_n(&mut responses, 20, Duration::from_secs(10)).await;
    assert_eq!(got[0].payload_str().unwrap(), "re: ping 0");
    assert_eq!(got[19].topic(), "resp/19");
    caller.stop().await;
    service.stop().await;
}

/// A handler that takes seconds per message neither stalls keep-alive nor the
/// client's other work; its messages arrive in order.
#[tokio::test]
async fn a_slow_handler_does_not_stall_the_connection() {
    let broker = broker().await;
    let c = client(&broker, "slow")
        .keep_alive(Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    let (tx, mut rx) = mpsc::unbounded_channel();
    c.subscribe("slow/#")
        .handler(move |_c: Client, msg: Message| {
            let tx = tx.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(800)).await;
                let _ = tx.send(msg.payload_str().map(str::to_owned).unwrap_or_default());
            }
        })
        .await
        .unwrap();
    let mut fast = c.subscribe("fast").await.unwrap();
    for i in 0..4 {
        c.publish(format!("slow/{i}"), i.to_string()).await.unwrap();
    }
    // While the handler is busy for ~3 s (3 keep-alive periods), the client still
    // publishes, subscribes and receives.
    for i in 0..5 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        c.publish("fast", i.to_string()).await.unwrap();
        assert_eq!(
            recv_n(&mut fast, 1, Duration::from_secs(2)).await[0]
                .payload_str()
                .unwrap(),
            i.to_string()
        );
    }
    let mut handled = Vec::new();
    while handled.len() < 4 {
        handled.push(
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert_eq!(handled, ["0", "1", "2", "3"]);
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        assert!(
            !matches!(e, Event::Disconnected { .. }),
            "connection dropped: {e}"
        );
    }
    assert!(c.is_connected());
    c.stop().await;
}

#[tokio::test]
async fn unsubscribe_stops_delivery() {
    let broker = broker().await;
    let c = client(&broker, "unsub").connect().await.unwrap();
    let mut sub = c.subscribe("news/#").await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let count = handled.clone();
    c.subscribe("alerts")
        .handler(move |_c: Client, _m: Message| {
            count.fetch_add(1, Ordering::SeqCst);
            async {}
        })
        .await
        .unwrap();
    c.publish("news/1", "a").await.unwrap();
    c.publish("alerts", "a").await.unwrap();
    recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert!(
        eventually(Duration::from_secs(5), || handled.load(Ordering::SeqCst)
            == 1)
        .await,
        "the handler got the first alert"
    );
    c.unsubscribe(["news/#", "alerts"]).await.unwrap();
    assert!(c.info().subscriptions.is_empty());
    let probe = client(&broker, "probe").connect().await.unwrap();
    probe.publish("news/2", "b").await.unwrap();
    probe.publish("alerts", "b").await.unwrap();
    // The stream ends (its subscription is gone) without the second message.
    let next = tokio::time::timeout(Duration::from_millis(500), sub.recv()).await;
    assert!(matches!(next, Ok(None)), "{next:?}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(handled.load(Ordering::SeqCst), 1);
    probe.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes_at_the_broker() {
    let broker = broker().await;
    let c = client(&broker, "drop").connect().await.unwrap();
    let sub = c.subscribe("gone/#").await.unwrap();
    assert!(c.info().subscriptions.contains_key("gone/#"));
    drop(sub);
    assert!(c.info().subscriptions.is_empty());
    let mut other = c.subscribe("other").await.unwrap();
    c.publish("other", "x").await.unwrap();
    recv_n(&mut other, 1, Duration::from_secs(5)).await;
    c.stop().await;
}

/// Filters the broker refuses (SUBACK return code 0x80): a subscription keeps the
/// filters granted beside them and says which were refused; one whose every filter is
/// refused is an error, and no local subscription stays behind. A scripted broker
/// refuses `secret/...` filters here; `tests/session.rs` does the same with a real
/// Mosquitto and an ACL.
#[tokio::test]
async fn refused_filters_are_reported_and_granted_ones_kept() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let script = tokio::spawn(async move {
        let mut socket = wire::accept(&listener, false).await?;
        loop {
            let p = wire::read(&mut socket).await?;
            match p.kind() {
                8 => {
                    let mut suback = vec![p.body[0], p.body[1]];
                    for (filter, _) in p.subscribe_filters().unwrap_or_default() {
                        suback.push(if filter.starts_with("secret/") {
                            0x80
                        } else {
                            0x01
                        });
                    }
                    wire::write(&mut socket, 0x90, &suback).await?;
                }
                10 => wire::write(&mut socket, 0xb0, &[p.body[0], p.body[1]]).await?,
                12 => wire::write(&mut socket, 0xd0, &[]).await?,
                _ => return Ok::<(), std::io::Error>(()),
            }
        }
    });
    let c = Client::builder()
        .address("127.0.0.1", port)
        .client_id("acl")
        .connect()
        .await
        .unwrap();
    let sub = c
        .subscribe_many([
            ("allowed/x", QoS::ExactlyOnce),
            ("secret/#", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    assert_eq!(sub.filters(), ["allowed/x"]);
    let grants: Vec<(&str, Option<QoS>)> = sub
        .grants()
        .iter()
        .map(|g| (g.filter.as_str(), g.granted))
        .collect();
    assert_eq!(
        grants,
        [("allowed/x", Some(QoS::AtLeastOnce)), ("secret/#", None)]
    );
    assert_eq!(
        c.info().subscriptions.keys().collect::<Vec<_>>(),
        ["allowed/x"]
    );
    let err = c.subscribe("secret/only").await.unwrap_err();
    assert!(
        matches!(&err, SubscribeError::Rejected(f) if f == &["secret/only".to_owned()]),
        "{err:?}"
    );
    assert_eq!(
        c.info().subscriptions.keys().collect::<Vec<_>>(),
        ["allowed/x"],
        "nothing of the refused subscription stays"
    );
    c.stop().await;
    script.abort();
}

#[tokio::test]
async fn qos2_messages_arrive_exactly_once() {
    let broker = broker().await;
    if !needs(
        &broker,
        "qos2_messages_arrive_exactly_once",
        &[Capability::Qos2],
    ) {
        return;
    }
    let c = client(&broker, "q2").connect().await.unwrap();
    let mut sub = c.subscribe("q2/#").qos(QoS::ExactlyOnce).await.unwrap();
    for i in 0..50 {
        c.publish(format!("q2/{i}"), i.to_string())
            .qos(QoS::ExactlyOnce)
            .await
            .unwrap();
    }
    let got = recv_n(&mut sub, 50, Duration::from_secs(10)).await;
    let payloads: Vec<String> = got
        .iter()
        .map(|m| m.payload_str().unwrap().to_owned())
        .collect();
    let expected: Vec<String> = (0..50).map(|i| i.to_string()).collect();
    assert_eq!(payloads, expected);
    assert_silent(&mut sub, Duration::from_millis(300)).await;
    c.stop().await;
}

/// Undecodable payloads give the subscriber a typed error; nothing else breaks.
#[tokio::test]
async fn garbage_payloads_are_typed_decode_errors() {
    #[derive(Debug, serde::Deserialize)]
    struct Reading {
        _celsius: f64,
    }
    let broker = broker().await;
    let c = client(&broker, "garbage").connect().await.unwrap();
    let mut sub = c.subscribe("sensor").await.unwrap();
    c.publish("sensor", &[0xff, 0x00, 0x7b][..]).await.unwrap();
    c.publish("sensor", r#"{"_celsius": 20.5}"#).await.unwrap();
    let got = recv_n(&mut sub, 2, Duration::from_secs(5)).await;
    let err = got[0].decode::<Reading>().unwrap_err();
    assert_eq!(err.codec(), "json");
    assert!(err.type_name().ends_with("Reading"));
    assert!(got[1].decode::<Reading>().is_ok());
    assert!(c.is_connected());
    c.stop().await;
}

/// What a gated handler saw: how many ran at once (now, and at the most), and the
/// order in which messages started.
#[derive(Default)]
struct Gated {
    active: AtomicUsize,
    most: AtomicUsize,
    started: std::sync::Mutex<Vec<String>>,
    done: AtomicUsize,
}

/// `concurrency(n)` lets a handler run up to `n` messages at once (never more),
/// started in arrival order; each is handled once. The default runs one at a time.
#[tokio::test]
async fn handler_concurrency_bounds_messages_in_progress() {
    const N: usize = 12;
    let broker = broker().await;
    let c = client(&broker, "concurrency").connect().await.unwrap();
    for (limit, filter) in [(4, "conc/four/+"), (1, "conc/one/+")] {
        let seen = Arc::new(Gated::default());
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let (s, g) = (seen.clone(), gate.clone());
        let builder = c.subscribe(filter).qos(QoS::AtLeastOnce);
        let builder = if limit == 1 {
            builder
        } else {
            builder.concurrency(limit)
        };
        builder
            .handler(move |_c: Client, msg: Message| {
                let (seen, gate) = (s.clone(), g.clone());
                async move {
                    let now = seen.active.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.most.fetch_max(now, Ordering::SeqCst);
                    seen.started.lock().unwrap().push(msg.topic().to_owned());
                    let _permit = gate.acquire().await;
                    seen.active.fetch_sub(1, Ordering::SeqCst);
                    seen.done.fetch_add(1, Ordering::SeqCst);
                }
            })
            .await
            .unwrap();
        let prefix = filter.trim_end_matches('+');
        for n in 0..N {
            c.publish(format!("{prefix}{n:02}"), "x")
                .qos(QoS::AtLeastOnce)
                .await
                .unwrap();
        }
        assert!(
            eventually(Duration::from_secs(5), || seen
                .active
                .load(Ordering::SeqCst)
                == limit)
            .await
        );
        // Let them through one at a time: a free slot is taken by the next message.
        for _ in 0..N {
            gate.add_permits(1);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            eventually(Duration::from_secs(5), || seen.done.load(Ordering::SeqCst)
                == N)
            .await
        );
        let started = seen.started.lock().unwrap().clone();
        let expected: Vec<String> = (0..N).map(|n| format!("{prefix}{n:02}")).collect();
        println!(
            "subscribe: concurrency {limit}: most at once={} handled={}",
            seen.most.load(Ordering::SeqCst),
            seen.done.load(Ordering::SeqCst)
        );
        assert_eq!(
            seen.most.load(Ordering::SeqCst),
            limit,
            "never more than the limit"
        );
        assert_eq!(started, expected, "started in arrival order, each once");
    }
    c.stop().await;
}
