//! # courier
//!
//! An opinionated MQTT client for Rust, the port of Gojek's
//! [Courier](https://github.com/gojek/courier-go). It wraps
//! [`rumqttc`](https://docs.rs/rumqttc) and adds what a production service needs:
//!
//! - **Publishes that resolve on the broker's acknowledgement** (PUBACK for QoS 1,
//!   PUBCOMP for QoS 2), pipelined through an in-flight window, never hanging past a
//!   timeout.
//! - **Typed payloads** through codecs (JSON by default).
//! - **Subscriptions** as a `Stream` or a handler, re-made after every reconnect that
//!   lost the session; a slow consumer never stalls the connection, it holds back the
//!   broker instead of losing messages.
//! - **Reconnects** with exponential backoff and jitter; in-flight publishes are
//!   retransmitted (with DUP) or re-published, never silently dropped.
//! - **Typed errors** for every bad input, checked before anything is sent.
//! - **One `Client` type** for one connection, a pool or a broker cluster (the
//!   `cluster` feature): a service scales out by changing how its client is built.
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use courier::{Client, QoS};
//!
//! let client = Client::builder()
//!     .address("localhost", 1883)
//!     .client_id("quickstart")
//!     .connect()
//!     .await?;
//!
//! let mut orders = client.subscribe("orders/+").qos(QoS::AtLeastOnce).await?;
//! client.publish_value("orders/created", &serde_json::json!({"id": 1})).await?;
//! if let Some(msg) = orders.recv().await {
//!     let order: serde_json::Value = msg.decode()?;
//!     println!("{}: {order}", msg.topic());
//! }
//! client.stop().await;
//! # Ok(()) }
//! ```
//!
//! ## Install
//!
//! The package is `courier-mqtt` (the name `courier` is another crate's); the library
//! is `courier`:
//!
//! ```text
//! cargo add courier-mqtt tokio --features tokio/full
//! ```
//!
//! ## Guides
//!
//! The [`guides`] cover each part in depth, with compiled examples:
//! [getting started](guides::getting_started), [connecting](guides::connect),
//! [publishing](guides::publish), [subscribing](guides::subscribe),
//! [middleware](guides::middleware), [telemetry](guides::otel),
//! [reliability](guides::reliability), [scaling](guides::scaling),
//! [testing](guides::testing), [interoperability](guides::interop),
//! [custom codecs](guides::custom_codec) and
//! [benchmarks](guides::benchmarks).
//!
//! ## Features
//!
//! | Feature | Description | Default |
//! |---|---|---|
//! | `json` | `Json<T>`: publish or decode JSON whatever the client's codec | yes |
//! | `tls` | TLS through rustls: `ClientBuilder::tls`, `mqtts://` URLs | yes |
//! | `protobuf` | `ProstCodec` and `Protobuf<M>` for prost messages; `courier::prost` | no |
//! | `msgpack` | `MsgPackCodec` (structs as maps, or compact) and `MsgPack<T>` | no |
//! | `base64` | The `Base64` byte transform: `JsonCodec.then(Base64)` | no |
//! | `gzip` | The `Gzip` byte transform (bounded decompression) | no |
//! | `otel` | OpenTelemetry spans, metrics (OpenTelemetry metric API and the `metrics` facade), trace-context propagation: `courier::otel` | no |
//! | `otel-tracing` | `otel`, with courier's spans joining the current `tracing` span's trace (tracing-opentelemetry) | no |
//! | `cluster` | Pools, multi-broker clusters, resolvers, shared subscriptions: `courier::cluster::ClusterBuilder` builds a `Client` on several connections | no |
//! | `test-util` | `courier::testing::FakeBroker`: an in-memory broker to unit-test code that uses a `Client`, no broker needed (for dev-dependencies) | no |
//! | `websocket` | MQTT over WebSocket: `ws://` and `wss://` URLs, `ClientBuilder::websocket_header` (tokio-tungstenite) | no |
//! | `full` | Every feature above | no |
//!
//! JSON as the client's default codec ([`JsonCodec`]) is always available. Features
//! only add: enabling one never changes a type or a default.
//!
//! ## Important notes
//!
//! - Awaiting a publish waits for the broker. To fire many, spawn or join them: they
//!   pipeline through the in-flight window (`ClientBuilder::max_inflight`).
//! - With a persistent session (the default, `clean_session(false)`), the broker
//!   delivers messages queued while the client was away right after connecting. To
//!   receive them, subscribe before the connection is up: build with
//!   [`ClientBuilder::start`] and subscribe at once.
//! - Incoming QoS 1/2 messages are acknowledged only after every matching handler
//!   finished (or every stream yielded them), in arrival order. A subscription that is
//!   not consumed therefore holds back the broker's QoS 1/2 deliveries to the whole
//!   client once the broker's in-flight window is full: drop subscriptions you no
//!   longer read.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub use courier_core::*;

/// JSON payloads: [`Json<T>`](json::Json) and [`JsonCodec`].
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub mod json {
    pub use courier_codec_json::*;
}

#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
pub use courier_codec_json::Json;

/// Protocol Buffers payloads: [`Protobuf<M>`](protobuf::Protobuf) and
/// [`ProstCodec`].
#[cfg(feature = "protobuf")]
#[cfg_attr(docsrs, doc(cfg(feature = "protobuf")))]
pub mod protobuf {
    pub use courier_codec_protobuf::*;
}

#[cfg(feature = "protobuf")]
#[cfg_attr(docsrs, doc(cfg(feature = "protobuf")))]
pub use courier_codec_protobuf::{ProstCodec, Protobuf, prost};

/// MessagePack payloads: [`MsgPack<T>`](msgpack::MsgPack) and
/// [`MsgPackCodec`].
#[cfg(feature = "msgpack")]
#[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
pub mod msgpack {
    pub use courier_codec_msgpack::*;
}

#[cfg(feature = "msgpack")]
#[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
pub use courier_codec_msgpack::{MsgPack, MsgPackCodec};

/// OpenTelemetry (the `otel` feature, the crate `courier-otel`): spans around every
/// publish, subscribe, unsubscribe and handled message, counters and histograms plus
/// connection gauges, and trace-context propagation.
///
/// [`CourierOtel`](otel::CourierOtel) holds the settings and installs them on a
/// client builder in one call ([`install`](otel::CourierOtel::install), or
/// `with_otel` from [`OtelBuilderExt`](otel::OtelBuilderExt)). Spans go to the
/// global tracer provider unless you pass one (with the `otel-tracing` feature they
/// also join the current `tracing` span's trace); metrics go to the global
/// OpenTelemetry meter provider and to whatever recorder the application installed
/// for the `metrics` crate; trace context goes through the global propagator (W3C
/// when none is set). MQTT 3.1.1 has no headers, so the
/// trace context reaches subscribers only with the opt-in envelope
/// ([`envelope(true)`](otel::CourierOtel::envelope)), which every consumer of the
/// topic must then open.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier::Client;
/// use courier::otel::CourierOtel;
///
/// let otel = CourierOtel::new("orders-service").client_id("orders-1");
/// let client = otel
///     .install(Client::builder().url("mqtt://localhost:1883").client_id("orders-1"))
///     .connect()
///     .await?;
/// client.publish("orders/created", "{}").await?; // an otelcourier.Publish span
/// # Ok(()) }
/// ```
///
/// Every span, metric and attribute: the [telemetry guide](crate::guides::otel).
#[cfg(feature = "otel")]
#[cfg_attr(docsrs, doc(cfg(feature = "otel")))]
pub mod otel {
    pub use courier_otel::*;
}

/// Several connections behind one client (the `cluster` feature, the crate
/// `courier-cluster`): connection pools, one connection per broker of a cluster,
/// resolvers, failover and `$share` subscriptions.
///
/// A [`ClusterBuilder`](cluster::ClusterBuilder) takes a [`ClientBuilder`] as the
/// template of every connection and builds a [`Client`]: the same type, with the
/// same publish and subscribe builders, middleware, codec, events and `info()`, so
/// code written for one connection runs on several. In pool and multi-connection modes a publish goes to the connection
/// with the fewest in flight; `$share/...` subscriptions are made on every
/// connection, other filters on one. Addresses come from a resolver: static, DNS, or
/// a channel you feed from your own discovery.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier::Client;
/// use courier::cluster::{Address, ClusterBuilder, StaticResolver};
///
/// let brokers = StaticResolver::new([
///     Address::new("mqtt-1.internal", 1883),
///     Address::new("mqtt-2.internal", 1883),
/// ]);
/// let cluster = ClusterBuilder::new(Client::builder().clean_session(true))
///     .client_id("jobs-svc")
///     .multi_connection(brokers)
///     .connect()
///     .await?;
/// cluster.publish("jobs/created", "42").await?;
/// # Ok(()) }
/// ```
///
/// When to use which mode, and what failover promises: the
/// [scaling guide](crate::guides::scaling).
#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster {
    pub use courier_cluster::*;
}

/// Test doubles (the `test-util` feature, for dev-dependencies):
/// [`FakeBroker`](testing::FakeBroker), an in-memory broker whose clients are
/// ordinary [`Client`]s. It records their publishes, injects incoming messages and
/// waits until their handlers are done, fails calls on request, and cuts and
/// restores the connection, so that code using a `Client` is unit-tested without a
/// broker.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier::testing::FakeBroker;
///
/// let broker = FakeBroker::new();
/// let client = broker.client();
/// let mut orders = client.subscribe("orders/+").await?;
/// broker.inject("orders/1", r#"{"id":1}"#).deliver();
/// assert_eq!(orders.recv().await.map(|m| m.topic().to_owned()).as_deref(), Some("orders/1"));
/// client.publish("orders/1/confirmed", "ok").await?;
/// assert_eq!(broker.take_published()[0].topic, "orders/1/confirmed");
/// # Ok(()) }
/// ```
///
/// A service and its test, injecting and failing: the
/// [testing guide](crate::guides::testing).
#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing {
    pub use courier_core::testing::*;
}

/// Extension traits, imported anonymously: `use courier::prelude::*;`.
pub mod prelude {
    pub use courier_core::codec::CodecExt as _;
    #[cfg(feature = "otel")]
    pub use courier_otel::OtelBuilderExt as _;
}

#[cfg(feature = "base64")]
#[cfg_attr(docsrs, doc(cfg(feature = "base64")))]
pub use courier_core::codec::transform::Base64;

#[cfg(feature = "gzip")]
#[cfg_attr(docsrs, doc(cfg(feature = "gzip")))]
pub use courier_core::codec::transform::Gzip;

/// The guides, one page each. Their Rust code is compiled as doctests (with every
/// feature on: `cargo test -p courier-mqtt --all-features --doc`); blocks that need a
/// broker are `no_run`. The same Markdown files are in the repository under
/// `crates/courier/guides/`.
///
/// | Guide | What it covers |
/// |---|---|
/// | [Getting started](guides::getting_started) | MQTT and QoS in short, installation, the quick start explained |
/// | [Connecting](guides::connect) | addresses and URLs, TLS, credentials, sessions, reconnects, state, events, `stop`, `info` |
/// | [Publishing](guides::publish) | payloads and codecs, QoS, what awaiting means, the in-flight window, errors |
/// | [Subscribing](guides::subscribe) | streams and handlers, wildcards, shared subscriptions, acknowledgements, slow consumers |
/// | [Middleware](guides::middleware) | the chains, writing a layer, closures, cost |
/// | [Telemetry](guides::otel) | OpenTelemetry spans, metrics and trace propagation |
/// | [Reliability](guides::reliability) | what is promised per QoS and session setting, and what is not |
/// | [Scaling](guides::scaling) | pools, broker clusters, resolvers, shared subscriptions, failover |
/// | [Interoperability](guides::interop) | Mosquitto, NATS, RabbitMQ, rumqttd: what passes where, each broker's deviations, running the suite against one |
/// | [Testing](guides::testing) | unit tests without a broker: the fake broker, injected messages, failures, connection loss |
/// | [Custom codecs](guides::custom_codec) | writing a codec, chaining codecs, byte transforms |
/// | [Benchmarks](guides::benchmarks) | what is measured against raw rumqttc, the figures, how to reproduce them |
#[cfg(any(doc, all(doctest, feature = "full")))]
pub mod guides {
    macro_rules! guide {
        ($(#[$attr:meta])* $module:ident, $file:literal) => {
            $(#[$attr])*
            #[doc = include_str!(concat!("../guides/", $file))]
            pub mod $module {}
        };
    }
    guide!(getting_started, "getting-started.md");
    guide!(connect, "connect.md");
    guide!(publish, "publish.md");
    guide!(subscribe, "subscribe.md");
    guide!(middleware, "middleware.md");
    guide!(otel, "otel.md");
    guide!(reliability, "reliability.md");
    guide!(scaling, "scaling.md");
    guide!(testing, "testing.md");
    guide!(interop, "interop.md");
    guide!(custom_codec, "custom-codec.md");
    guide!(benchmarks, "benchmarks.md");
}

#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct PackageReadmeDoctests;
