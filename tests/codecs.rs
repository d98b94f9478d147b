//! Codecs through a real broker: every codec round-trips between two clients, chains
//! read mixed payloads, and garbage gives subscribers typed errors while the client
//! keeps running.

use std::time::Duration;

use courier::prelude::*;
use courier::{
    Base64, Client, Event, Gzip, Json, JsonCodec, Message, MsgPack, MsgPackCodec, ProstCodec,
    Protobuf, QoS, prost,
};
use courier_integration_tests::{broker, client, recv_n};
use futures_util::StreamExt;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Line {
    sku: String,
    qty: u32,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    lines: Vec<Line>,
    meta: std::collections::BTreeMap<String, String>,
    note: Option<String>,
}

fn order() -> Order {
    Order {
        id: 7,
        lines: vec![
            Line {
                sku: "tea".into(),
                qty: 2,
            },
            Line {
                sku: "cake".into(),
                qty: 1,
            },
        ],
        meta: [("channel".to_owned(), "web".to_owned())].into(),
        note: None,
    }
}

/// Written with prost's derive macros (no protoc), through courier's re-export.
#[derive(Clone, PartialEq, prost::Message)]
#[prost(prost_path = "::courier::prost")]
struct Reading {
    #[prost(string, tag = "1")]
    sensor: String,
    #[prost(double, repeated, tag = "2")]
    values: Vec<f64>,
    #[prost(message, optional, tag = "3")]
    origin: Option<Origin>,
}

#[derive(Clone, PartialEq, prost::Message)]
#[prost(prost_path = "::courier::prost")]
struct Origin {
    #[prost(string, tag = "1")]
    site: String,
}

fn reading() -> Reading {
    Reading {
        sensor: "t1".into(),
        values: vec![21.5, -3.25],
        origin: Some(Origin { site: "ams".into() }),
    }
}

const WAIT: Duration = Duration::from_secs(5);

#[tokio::test]
async fn every_codec_round_trips_between_two_clients() {
    let broker = broker().await;
    let publisher = client(&broker, "codec-pub").connect().await.unwrap();
    let receiver = client(&broker, "codec-sub").connect().await.unwrap();
    let mut sub = receiver.subscribe("codec/#").await.unwrap();

    publisher
        .publish("codec/json", Json(order()))
        .await
        .unwrap();
    publisher
        .publish("codec/msgpack", MsgPack(order()))
        .await
        .unwrap();
    publisher
        .publish(
            "codec/msgpack-compact",
            courier::Encoded(MsgPackCodec::compact(), order()),
        )
        .await
        .unwrap();
    publisher
        .publish("codec/protobuf", Protobuf(reading()))
        .await
        .unwrap();
    publisher
        .publish_value("codec/default", &order())
        .await
        .unwrap();

    let got = recv_n(&mut sub, 5, WAIT).await;
    let Json(a) = got[0].decode::<Json<Order>>().unwrap();
    let MsgPack(b) = got[1].decode::<MsgPack<Order>>().unwrap();
    let c: Order = got[2].decode_with(&MsgPackCodec::new()).unwrap();
    let Protobuf(d) = got[3].decode::<Protobuf<Reading>>().unwrap();
    let e: Order = got[4].decode().unwrap();
    assert_eq!([a, b, c, e], [order(), order(), order(), order()]);
    assert_eq!(d, reading());
    publisher.stop().await;
    receiver.stop().await;
}

/// A client whose default codec is MessagePack encodes `publish_value` and decodes
/// `decode::<T>()` with it.
#[tokio::test]
async fn a_client_default_codec_applies_to_values_and_decodes() {
    let broker = broker().await;
    let packer = client(&broker, "packer")
        .codec(MsgPackCodec::new())
        .connect()
        .await
        .unwrap();
    let mut sub = packer.subscribe("packed").await.unwrap();
    packer.publish_value("packed", &order()).await.unwrap();
    let got = recv_n(&mut sub, 1, WAIT).await;
    assert_eq!(
        got[0].payload()[0] & 0xf0,
        0x80,
        "a MessagePack map on the wire"
    );
    assert_eq!(got[0].decode::<Order>().unwrap(), order());
    assert!(got[0].decode::<Json<Order>>().is_err(), "not JSON");
    packer.stop().await;
}

/// A chained default codec (JSON, else MessagePack, else base64 JSON, else gzip JSON)
/// reads every form, as the Go `ChainDecoderFunc` does.
#[tokio::test]
async fn a_chain_decodes_mixed_payloads() {
    let broker = broker().await;
    let receiver = client(&broker, "chain")
        .codec(
            JsonCodec
                .or(MsgPackCodec::new())
                .or(JsonCodec.then(Base64))
                .or(JsonCodec.then(Gzip::new())),
        )
        .connect()
        .await
        .unwrap();
    let mut sub = receiver.subscribe("mixed").await.unwrap();
    let publisher = client(&broker, "mixer").connect().await.unwrap();
    publisher.publish("mixed", Json(order())).await.unwrap();
    publisher.publish("mixed", MsgPack(order())).await.unwrap();
    publisher
        .publish("mixed", courier::Encoded(JsonCodec.then(Base64), order()))
        .await
        .unwrap();
    publisher
        .publish(
            "mixed",
            courier::Encoded(JsonCodec.then(Gzip::new()), order()),
        )
        .await
        .unwrap();
    for msg in recv_n(&mut sub, 4, WAIT).await {
        assert_eq!(msg.decode::<Order>().unwrap(), order(), "{msg:?}");
    }
    publisher.stop().await;
    receiver.stop().await;
}

/// Garbage reaches every decoder as a typed error naming codec and type; the handler
/// reports it, the client keeps running and the next good message decodes.
#[tokio::test]
async fn garbage_gives_typed_errors_and_the_client_keeps_running() {
    let broker = broker().await;
    let receiver = client(&broker, "garbage").connect().await.unwrap();
    let mut events = receiver.events();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<String>>();
    receiver
        .subscribe("dirty")
        .qos(QoS::AtLeastOnce)
        .handler(move |_c: Client, msg: Message| {
            let tx = tx.clone();
            async move {
                let errors: Vec<String> = [
                    msg.decode::<Json<Order>>().err(),
                    msg.decode::<MsgPack<Order>>().err(),
                    msg.decode::<Protobuf<Reading>>().err(),
                    msg.decode_with::<Order, _>(&JsonCodec.or(MsgPackCodec::new()))
                        .err(),
                    msg.decode_with::<Reading, _>(&ProstCodec).err(),
                ]
                .into_iter()
                .flatten()
                .map(|e| {
                    format!(
                        "{}:{}",
                        e.codec(),
                        e.type_name().rsplit("::").next().unwrap_or_default()
                    )
                })
                .collect();
                let failed = !errors.is_empty();
                let _ = tx.send(errors);
                if failed {
                    return Err("undecodable payload".into());
                }
                Ok::<(), courier::BoxError>(())
            }
        })
        .await
        .unwrap();
    let publisher = client(&broker, "dirty-pub").connect().await.unwrap();
    publisher
        .publish("dirty", &[0xc1, 0xff, 0x0a, 0xff][..])
        .await
        .unwrap();
    let errors = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        errors,
        [
            "json:Order",
            "msgpack:Order",
            "protobuf:Reading",
            "json:Order",
            "protobuf:Reading"
        ]
    );
    let failure = tokio::time::timeout(WAIT, async {
        while let Some(e) = events.next().await {
            if let Event::HandlerFailed { topic, error } = e {
                return (topic, error);
            }
        }
        panic!("no HandlerFailed event")
    })
    .await
    .unwrap();
    assert_eq!(failure.0, "dirty");
    // Still connected and delivering.
    publisher.publish("dirty", Json(order())).await.unwrap();
    let errors = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(!errors.iter().any(|e| e.starts_with("json")), "{errors:?}");
    assert!(receiver.is_connected());
    publisher.stop().await;
    receiver.stop().await;
}
