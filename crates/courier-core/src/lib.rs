//! # courier-core
//!
//! The core of [courier-rs](https://github.com/courier-rs/courier-rs), an opinionated
//! MQTT client that wraps [`rumqttc`](https://docs.rs/rumqttc) with what a production
//! service needs: publishes that resolve on the broker's acknowledgement, typed
//! payloads through codecs, reconnects with backoff and re-subscription, and typed
//! errors for every bad input.
//!
//! Most users depend on the `courier` facade crate, which re-exports this one.
//!
//! No rumqttc type appears in this crate's public API, so MQTT 5 can come in behind
//! the same API.
//!
//! ## Features
//!
//! | Feature | Description | Default |
//! |---|---|---|
//! | `client` | The MQTT client (pulls in rumqttc, tokio, rustls). Without it: types, traits, codecs and topic rules only. | yes |
//! | `json` | [`JsonCodec`], the client's default codec (serde_json). | yes |
//! | `tls` | TLS through rustls (ring provider): `ClientBuilder::tls`, `mqtts://` URLs. | yes |
//! | `base64` | The [`Base64`](codec::transform::Base64) byte transform. | no |
//! | `gzip` | The [`Gzip`](codec::transform::Gzip) byte transform. | no |
//! | `websocket` | MQTT over WebSocket: `ws://` and `wss://` URLs, `ClientBuilder::websocket_header` (tokio-tungstenite). | no |
//! | `test-util` | [`testing`]: an in-memory fake broker to unit-test code that uses a `Client`, without a broker. | no |
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use courier_core::{Client, QoS};
//!
//! let client = Client::builder()
//!     .address("localhost", 1883)
//!     .client_id("readme")
//!     .connect()
//!     .await?;
//! // Resolves once the broker acknowledged (PUBACK).
//! client.publish_value("sensors/1", &serde_json::json!({"t": 21.5})).qos(QoS::AtLeastOnce).await?;
//! client.stop().await;
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod codec;
pub mod error;
pub mod message;
pub mod payload;
pub mod qos;
pub mod topic;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "test-util")]
#[cfg_attr(docsrs, doc(cfg(feature = "test-util")))]
pub mod testing;

#[cfg(feature = "json")]
pub use codec::JsonCodec;
pub use codec::{Codec, CodecExt, Decoder, Encoder, Fallback, Format};
pub use error::{
    BoxError, ConfigError, ConnectError, DecodeError, EncodeError, PublishError, RefusedReason,
    SubscribeError, UnsubscribeError,
};
pub use message::{Message, MessageParts};
pub use payload::{Encoded, FromPayload, IntoPayload};
pub use qos::QoS;
pub use topic::{TopicError, TopicFilter};

#[cfg(feature = "tls")]
pub use client::TlsConfig;
#[cfg(all(feature = "client", unix))]
pub use client::UnixSocket;
#[cfg(feature = "client")]
pub use client::{
    Backend, Backoff, BrokerUrl, Client, ClientBuilder, ClientInfo, ConnectionInfo,
    ConnectionState, CredentialProvider, Credentials, Event, EventStream, FilterGrant, Handler,
    ProxyConfig, PublishBuilder, SessionLossPolicy, SubscribeBuilder, Subscription,
    SubscriptionHandle, Transport, TransportStream,
};
