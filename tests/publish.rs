//! Publishing against a real broker: every QoS arrives, acknowledgements are awaited,
//! many publishes pipeline.

use std::time::{Duration, Instant};

use courier::{Json, PublishError, QoS};
use courier_integration_tests::{Capability, broker, client, needs, recv_n};
use futures_util::future::join_all;

#[tokio::test]
async fn each_qos_reaches_a_subscriber_with_its_payload() {
    let broker = broker().await;
    let sub_client = client(&broker, "sub").connect().await.unwrap();
    let pub_client = client(&broker, "pub").connect().await.unwrap();
    let mut sub = sub_client
        .subscribe("qos/#")
        .qos(QoS::ExactlyOnce)
        .await
        .unwrap();
    let mut levels = vec![QoS::AtMostOnce, QoS::AtLeastOnce];
    if broker.supports(Capability::Qos2) {
        levels.push(QoS::ExactlyOnce);
    } else {
        eprintln!(
            "each_qos_reaches_a_subscriber_with_its_payload: QoS 2 not tried, the broker lacks it"
        );
    }
    for qos in levels {
        let topic = format!("qos/{}", qos.as_u8());
        pub_client
            .publish(topic.as_str(), format!("payload {}", qos.as_u8()))
            .qos(qos)
            .await
            .unwrap();
        let got = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
        assert_eq!(got[0].topic(), topic);
        assert_eq!(
            got[0].payload_str().unwrap(),
            format!("payload {}", qos.as_u8())
        );
        if broker.supports(Capability::MinQosDelivery) {
            // MQTT delivers at min(publish QoS, granted QoS); rumqttd 0.20 uses the
            // granted QoS instead (see the capability table).
            assert_eq!(
                got[0].qos(),
                qos,
                "granted QoS 2, so delivered at the publish QoS"
            );
        }
        assert_eq!(
            got[0].packet_id().is_some(),
            got[0].qos() != QoS::AtMostOnce
        );
    }
    pub_client.stop().await;
    sub_client.stop().await;
}

#[tokio::test]
async fn typed_values_round_trip_through_the_codec() {
    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Order {
        id: u64,
        items: Vec<String>,
        meta: std::collections::BTreeMap<String, f64>,
    }
    let broker = broker().await;
    let c = client(&broker, "typed").connect().await.unwrap();
    let mut sub = c.subscribe("orders/+").await.unwrap();
    let order = Order {
        id: 7,
        items: vec!["tea".into(), "cake".into()],
        meta: [("total".to_owned(), 9.5)].into(),
    };
    c.publish_value("orders/created", &order).await.unwrap();
    c.publish("orders/json", Json(&order)).await.unwrap();
    for msg in recv_n(&mut sub, 2, Duration::from_secs(5)).await {
        assert_eq!(msg.decode::<Order>().unwrap(), order);
    }
    c.stop().await;
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers() {
    let broker = broker().await;
    if !needs(
        &broker,
        "retained_messages_reach_later_subscribers",
        &[Capability::RetainedForWildcards],
    ) {
        return;
    }
    let c = client(&broker, "retain").connect().await.unwrap();
    c.publish("retained/state", "on")
        .retain(true)
        .await
        .unwrap();
    let mut sub = c.subscribe("retained/#").await.unwrap();
    let got = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert!(got[0].retained());
    assert_eq!(got[0].payload_str().unwrap(), "on");
    c.stop().await;
}

/// A publish resolves only once the broker acknowledged it: with the broker frozen
/// (SIGSTOP, connection open, nothing answered) it stays pending, and resolves once
/// the broker resumes.
#[tokio::test]
async fn publish_resolves_only_on_the_brokers_ack() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "publish_resolves_only_on_the_brokers_ack",
        &[Capability::Freeze, Capability::Qos2],
    ) {
        return;
    }
    let c = client(&broker, "ack")
        .keep_alive(Duration::from_secs(30))
        .connect()
        .await
        .unwrap();
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        broker.pause().unwrap();
        let publish = c.publish("ack/test", "x").qos(qos).into_future();
        let mut publish = Box::pin(publish);
        let early = tokio::time::timeout(Duration::from_millis(700), &mut publish).await;
        assert!(
            early.is_err(),
            "{qos}: resolved before the broker could ack: {early:?}"
        );
        assert_eq!(c.info().publishes_in_flight, 1);
        broker.resume().unwrap();
        let result = tokio::time::timeout(Duration::from_secs(5), publish).await;
        assert!(matches!(result, Ok(Ok(()))), "{qos}: {result:?}");
        assert_eq!(c.info().publishes_in_flight, 0);
    }
    c.stop().await;
}

/// Without an acknowledgement the publish fails with a timeout instead of hanging.
#[tokio::test]
async fn publish_times_out_without_an_ack() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "publish_times_out_without_an_ack",
        &[Capability::Freeze],
    ) {
        return;
    }
    let c = client(&broker, "timeout").connect().await.unwrap();
    broker.pause().unwrap();
    let started = Instant::now();
    let result = c
        .publish("t", "x")
        .timeout(Duration::from_millis(300))
        .await;
    assert!(
        matches!(result, Err(PublishError::Timeout(_))),
        "{result:?}"
    );
    assert!(
        result
            .as_ref()
            .is_err_and(PublishError::may_have_been_delivered)
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    broker.resume().unwrap();
    c.stop().await;
}

/// 1,000 publishes awaited concurrently all succeed, each exactly one delivery, and
/// pipeline through the in-flight window rather than one round trip at a time.
#[tokio::test]
async fn a_thousand_concurrent_publishes_are_all_acknowledged() {
    const N: usize = 1000;
    let broker = broker().await;
    let c = client(&broker, "many")
        .max_inflight(100)
        .connect()
        .await
        .unwrap();
    let sub_client = client(&broker, "many-sub").connect().await.unwrap();
    let mut sub = sub_client.subscribe("many/#").await.unwrap();
    let started = Instant::now();
    let results = join_all((0..N).map(|i| {
        let c = c.clone();
        async move { c.publish(format!("many/{}", i % 10), i.to_string()).await }
    }))
    .await;
    let elapsed = started.elapsed();
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    let got = recv_n(&mut sub, N, Duration::from_secs(20)).await;
    let mut seen: Vec<usize> = got
        .iter()
        .map(|m| m.payload_str().unwrap().parse().unwrap())
        .collect();
    seen.sort_unstable();
    seen.dedup();
    assert_eq!(seen.len(), N);
    println!(
        "{N} concurrent QoS 1 publishes acknowledged in {elapsed:?} ({:.0} msg/s, in-flight window 100)",
        N as f64 / elapsed.as_secs_f64()
    );
    c.stop().await;
    sub_client.stop().await;
}
