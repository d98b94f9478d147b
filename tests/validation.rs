//! Bad input is refused locally with a typed error, nothing is sent, and the client
//! carries on. Valid but unusual topics pass unchanged.

use std::time::Duration;

use courier::{
    Client, ConfigError, ConnectError, Event, PublishError, QoS, SubscribeError, TopicError,
    UnsubscribeError,
};
use courier_integration_tests::{Capability, assert_silent, broker, client, needs, recv_n};
use futures_util::StreamExt;

#[tokio::test]
async fn invalid_topic_names_are_refused_and_nothing_is_sent() {
    let broker = broker().await;
    // Its `#` spy must see no other test's messages.
    if !needs(
        &broker,
        "invalid_topic_names_are_refused_and_nothing_is_sent",
        &[Capability::OwnBroker],
    ) {
        return;
    }
    let c = client(&broker, "badtopic")
        .max_packet_size(1024)
        .connect()
        .await
        .unwrap();
    let mut events = c.events();
    let spy = client(&broker, "spy").connect().await.unwrap();
    let mut everything = spy.subscribe("#").await.unwrap();
    let long = "a".repeat(70_000);
    let cases: [(&str, TopicError); 8] = [
        ("a/+/b", TopicError::WildcardInName),
        ("a/#", TopicError::WildcardInName),
        ("#", TopicError::WildcardInName),
        ("+", TopicError::WildcardInName),
        ("sport+", TopicError::WildcardInName),
        ("", TopicError::Empty),
        ("a\0b", TopicError::NulCharacter),
        (long.as_str(), TopicError::TooLong { len: 70_000 }),
    ];
    for (topic, expected) in cases {
        for qos in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce] {
            let err = c.publish(topic, "x").qos(qos).await.unwrap_err();
            match err {
                PublishError::InvalidTopic {
                    source,
                    topic: quoted,
                } => {
                    assert_eq!(source, expected);
                    assert!(quoted.len() <= 230, "the error quotes a bounded prefix");
                }
                other => panic!("{topic:.20}: {other:?}"),
            }
        }
    }
    // Oversized: refused before it can poison rumqttc's queue; later publishes work.
    let err = c.publish("big", vec![0u8; 2000]).await.unwrap_err();
    assert!(
        matches!(err, PublishError::PacketTooLarge { max: 1024, .. }),
        "{err:?}"
    );
    let err = c.publish_value("big", &"x".repeat(2000)).await.unwrap_err();
    assert!(
        matches!(err, PublishError::PacketTooLarge { .. }),
        "{err:?}"
    );
    // Unencodable values are typed encode errors.
    let bad = std::collections::BTreeMap::from([((1, 2), 3)]);
    let err = c.publish_value("enc", &bad).await.unwrap_err();
    assert!(
        matches!(&err, PublishError::Encode(e) if e.codec() == "json"),
        "{err:?}"
    );

    assert_silent(&mut everything, Duration::from_millis(300)).await;
    c.publish("ok", "fine").await.unwrap();
    assert_eq!(
        recv_n(&mut everything, 1, Duration::from_secs(5)).await[0].topic(),
        "ok"
    );
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        assert!(
            !matches!(e, Event::Disconnected { .. }),
            "no reconnect: {e}"
        );
    }
    spy.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn unusual_but_valid_topics_pass_unchanged() {
    let broker = broker().await;
    // Its `#` subscription must see no other test's messages.
    if !needs(
        &broker,
        "unusual_but_valid_topics_pass_unchanged",
        &[Capability::OwnBroker],
    ) {
        return;
    }
    let c = client(&broker, "odd").connect().await.unwrap();
    let mut everything = c.subscribe("#").await.unwrap();
    let mut topics = vec![
        "/",
        "a//b",
        "/leading",
        "trailing/",
        "with space",
        "Case/case",
        "é/ü/日本",
        "\u{feff}bom",
    ];
    if !broker.supports(Capability::NonAsciiTopics) {
        // rumqttd 0.20's router panics slicing non-ASCII topics (a broker bug).
        topics.retain(|t| t.is_ascii());
    }
    if !broker.supports(Capability::SpacesAndDotsInTopics) {
        // NATS maps topics to subjects, where both are separators: it closes the
        // connection of a client publishing such a topic.
        topics.retain(|t| !t.contains([' ', '.']));
    }
    for topic in &topics {
        c.publish(*topic, *topic).await.unwrap();
    }
    let got = recv_n(&mut everything, topics.len(), Duration::from_secs(5)).await;
    for (msg, topic) in got.iter().zip(&topics) {
        assert_eq!(msg.topic(), *topic);
        assert_eq!(msg.payload_str().unwrap(), *topic);
    }
    c.stop().await;
}

#[tokio::test]
async fn invalid_filters_are_refused() {
    let broker = broker().await;
    let c = client(&broker, "badfilter").connect().await.unwrap();
    let long = "a".repeat(65_536);
    type Expect = fn(&TopicError) -> bool;
    let cases: [(&str, Expect); 13] = [
        ("a/#/b", |e| *e == TopicError::InvalidMultiLevelWildcard),
        ("a#", |e| *e == TopicError::InvalidMultiLevelWildcard),
        ("#a", |e| *e == TopicError::InvalidMultiLevelWildcard),
        ("a/b#", |e| *e == TopicError::InvalidMultiLevelWildcard),
        ("a+", |e| *e == TopicError::InvalidSingleLevelWildcard),
        ("a/++", |e| *e == TopicError::InvalidSingleLevelWildcard),
        ("a/+b/c", |e| *e == TopicError::InvalidSingleLevelWildcard),
        ("", |e| *e == TopicError::Empty),
        ("a\0", |e| *e == TopicError::NulCharacter),
        ("$share//t", |e| {
            matches!(e, TopicError::InvalidSharedSubscription { .. })
        }),
        ("$share/g", |e| {
            matches!(e, TopicError::InvalidSharedSubscription { .. })
        }),
        ("$share/a+b/t", |e| {
            matches!(e, TopicError::InvalidSharedSubscription { .. })
        }),
        (long.as_str(), |e| matches!(e, TopicError::TooLong { .. })),
    ];
    for (filter, expected) in cases {
        match c.subscribe(filter).await {
            Err(SubscribeError::InvalidFilter { source, .. }) => {
                assert!(expected(&source), "{filter:.20}: {source:?}")
            }
            other => panic!("{filter:.20}: {other:?}"),
        }
        match c.unsubscribe([filter]).await {
            Err(UnsubscribeError::InvalidFilter { source, .. }) => {
                assert!(expected(&source), "{filter:.20}: {source:?}")
            }
            other => panic!("{filter:.20}: {other:?}"),
        }
    }
    let none: [(&str, QoS); 0] = [];
    assert!(matches!(
        c.subscribe_many(none).await,
        Err(SubscribeError::NoFilters)
    ));
    assert!(matches!(
        c.unsubscribe(Vec::<String>::new()).await,
        Err(UnsubscribeError::NoFilters)
    ));
    // A valid shared subscription works (group `a`, filter `b`).
    let _shared = c.subscribe("$share/a/b").await.unwrap();
    assert!(c.is_connected());
    assert_eq!(c.info().subscriptions.len(), 1);
    c.stop().await;
}

#[tokio::test]
async fn invalid_options_are_config_errors() {
    let base = || Client::builder().address("127.0.0.1", 1883);
    let cases = [
        base().client_id(""),
        base().client_id("x").password("p"),
        base().client_id("x").keep_alive(Duration::from_millis(500)),
        base().client_id("x").max_inflight(0),
        base().client_id("x").max_packet_size(0),
        base().client_id("x").connect_timeout(Duration::ZERO),
        base()
            .client_id("x")
            .last_will("will/#", "gone", QoS::AtLeastOnce, false),
        Client::builder().client_id("x"),
        Client::builder().client_id("x").url("ftp://host"),
    ];
    for builder in cases {
        let shown = format!("{builder:?}");
        match builder.connect().await {
            Err(ConnectError::Config(e)) => assert!(!e.to_string().is_empty()),
            other => panic!("{shown}: {other:?}"),
        }
    }
    assert!(matches!(
        base().client_id("").start(),
        Err(ConfigError::EmptyClientIdWithPersistentSession)
    ));
}
