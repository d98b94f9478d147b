//! [`Message`]: an MQTT message received from the broker.

use std::fmt;
use std::num::NonZeroU16;
use std::sync::Arc;

use bytes::Bytes;

use crate::codec::{Codec, Decoder, decode_with};
use crate::error::DecodeError;
use crate::payload::FromPayload;
use crate::qos::QoS;

/// A message delivered by the broker. Cheap to clone (one reference count).
#[derive(Clone)]
pub struct Message {
    inner: Arc<Inner>,
}

struct Inner {
    topic: String,
    payload: Bytes,
    qos: QoS,
    retained: bool,
    duplicate: bool,
    packet_id: Option<NonZeroU16>,
    properties: Vec<(String, String)>,
    codec: Arc<dyn Codec>,
}

/// The fields of a [`Message`], for building one (in tests, or in a middleware that
/// rewrites messages).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MessageParts {
    /// The topic the message was published to.
    pub topic: String,
    /// The payload bytes.
    pub payload: Bytes,
    /// The QoS the message was delivered with.
    pub qos: QoS,
    /// The retain flag: true when the broker sent a stored retained message.
    pub retained: bool,
    /// The DUP flag: the broker may have sent this message before.
    pub duplicate: bool,
    /// The packet identifier (QoS 1 and 2 only).
    pub packet_id: Option<NonZeroU16>,
    /// User properties. MQTT 3.1.1 carries none on the wire; a middleware that reads
    /// an envelope (e.g. trace context) puts them here, as MQTT 5 will.
    pub properties: Vec<(String, String)>,
}

impl MessageParts {
    /// Parts for a QoS 0 message on `topic` with `payload`, no flags set.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        MessageParts {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::AtMostOnce,
            retained: false,
            duplicate: false,
            packet_id: None,
            properties: Vec::new(),
        }
    }
}

impl Message {
    /// Assemble a message whose [`decode`](Message::decode) uses `codec`.
    pub fn from_parts(parts: MessageParts, codec: Arc<dyn Codec>) -> Self {
        Message {
            inner: Arc::new(Inner {
                topic: parts.topic,
                payload: parts.payload,
                qos: parts.qos,
                retained: parts.retained,
                duplicate: parts.duplicate,
                packet_id: parts.packet_id,
                properties: parts.properties,
                codec,
            }),
        }
    }

    /// The topic the message was published to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The payload bytes.
    pub fn payload(&self) -> &Bytes {
        &self.inner.payload
    }

    /// The payload as UTF-8 text.
    ///
    /// # Errors
    ///
    /// When the payload is not valid UTF-8.
    pub fn payload_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.inner.payload)
    }

    /// The QoS the broker delivered the message with.
    pub fn qos(&self) -> QoS {
        self.inner.qos
    }

    /// True when this is a retained message the broker stored earlier.
    pub fn retained(&self) -> bool {
        self.inner.retained
    }

    /// True when the broker flagged the message as a possible redelivery (DUP).
    pub fn duplicate(&self) -> bool {
        self.inner.duplicate
    }

    /// The packet identifier, for QoS 1 and 2 messages.
    pub fn packet_id(&self) -> Option<NonZeroU16> {
        self.inner.packet_id
    }

    /// The user properties (see [`MessageParts::properties`]).
    pub fn properties(&self) -> &[(String, String)] {
        &self.inner.properties
    }

    /// The first user property named `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.inner
            .properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// A copy of the fields, to build a changed message with
    /// [`with_parts`](Self::with_parts) (e.g. in a handler middleware).
    pub fn to_parts(&self) -> MessageParts {
        let i = &self.inner;
        MessageParts {
            topic: i.topic.clone(),
            payload: i.payload.clone(),
            qos: i.qos,
            retained: i.retained,
            duplicate: i.duplicate,
            packet_id: i.packet_id,
            properties: i.properties.clone(),
        }
    }

    /// A message with these fields and this message's codec.
    pub fn with_parts(&self, parts: MessageParts) -> Message {
        Message::from_parts(parts, self.inner.codec.clone())
    }

    /// The codec [`decode`](Message::decode) uses: the client's default codec.
    pub fn codec(&self) -> &dyn Codec {
        &*self.inner.codec
    }

    /// Decode the payload: any `T: DeserializeOwned` with the client's codec (JSON by
    /// default), or a codec wrapper such as `Json<T>`, `MsgPack<T>` or `Protobuf<M>`
    /// with that codec (the Go `DecodePayload`).
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T` when the payload does not decode.
    pub fn decode<T: FromPayload>(&self) -> Result<T, DecodeError> {
        T::from_payload(&self.inner.payload, &*self.inner.codec)
    }

    /// Decode the payload into a `T` with any [`Decoder`], including chains and
    /// transforms: `msg.decode_with::<Order, _>(&JsonCodec.or(MsgPackCodec::new()))`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T` when the payload does not decode.
    pub fn decode_with<T, D: Decoder<T> + ?Sized>(&self, decoder: &D) -> Result<T, DecodeError> {
        decode_with(decoder, &self.inner.payload)
    }
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("topic", &self.inner.topic)
            .field("qos", &self.inner.qos)
            .field("retained", &self.inner.retained)
            .field("duplicate", &self.inner.duplicate)
            .field("packet_id", &self.inner.packet_id)
            .field("payload_len", &self.inner.payload.len())
            .finish()
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;
    use crate::codec::JsonCodec;

    #[test]
    fn decodes_through_the_client_codec() {
        let msg = Message::from_parts(
            MessageParts::new("a/b", r#"{"time": 5}"#),
            Arc::new(JsonCodec),
        );
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct Tick {
            time: u64,
        }
        assert_eq!(msg.decode::<Tick>().ok(), Some(Tick { time: 5 }));
        let err = msg.decode::<Vec<String>>().err();
        assert!(err.is_some_and(|e| e.type_name().contains("Vec")));
        assert_eq!(msg.topic(), "a/b");
        assert_eq!(msg.payload_str().ok(), Some(r#"{"time": 5}"#));
    }
}
