//! Protocol Buffers payloads for courier-rs, through `prost`.
//!
//! [`ProstCodec`] encodes and decodes every `prost::Message`; [`Protobuf`] picks it
//! for one publish or one decode. Messages can come from `prost-build` or be written
//! with prost's derive macros (no `protoc` needed). `prost` is re-exported so the
//! versions always match.
//!
//! This crate never compiles the MQTT client: it depends on `courier-core` without
//! its `client` feature.
//!
//! ```
//! use courier_codec_protobuf::{Protobuf, prost};
//!
//! #[derive(Clone, PartialEq, prost::Message)]
//! struct Tick {
//!     #[prost(uint64, tag = "1")]
//!     time: u64,
//! }
//!
//! let bytes = Protobuf(Tick { time: 7 }).to_bytes()?;
//! assert_eq!(&bytes[..], [0x08, 0x07]);
//! let Protobuf(tick) = Protobuf::<Tick>::from_slice(&bytes)?;
//! assert_eq!(tick.time, 7);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub use prost;

use bytes::{Bytes, BytesMut};
use prost::Message;

use courier_core::codec::{Codec, Decoder, Encoder, Format, decode_with, encode_with};
use courier_core::error::{BoxError, DecodeError, EncodeError};
use courier_core::payload::{FromPayload, IntoPayload};

/// Protocol Buffers through `prost`, for every `prost::Message`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProstCodec;

impl Format for ProstCodec {
    fn name(&self) -> &'static str {
        "protobuf"
    }

    fn content_type(&self) -> Option<&'static str> {
        Some("application/x-protobuf")
    }
}

impl<M: Message> Encoder<M> for ProstCodec {
    fn encode(&self, item: &M, dst: &mut BytesMut) -> Result<(), BoxError> {
        dst.reserve(item.encoded_len());
        item.encode(dst).map_err(Into::into)
    }
}

impl<M: Message + Default> Decoder<M> for ProstCodec {
    fn decode(&self, src: &[u8]) -> Result<M, BoxError> {
        M::decode(src).map_err(Into::into)
    }
}

/// A protobuf message sent or read with [`ProstCodec`], whatever the client's default
/// codec is: `client.publish("t", Protobuf(msg))`,
/// `let Protobuf(msg) = m.decode::<Protobuf<MyMsg>>()?`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Protobuf<M>(pub M);

impl<M: Message> Protobuf<M> {
    /// Encode the wrapped message.
    ///
    /// # Errors
    ///
    /// Only if the buffer cannot grow (prost reports no other encode error).
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        encode_with(&ProstCodec, &self.0)
    }
}

impl<M: Message + Default> Protobuf<M> {
    /// Decode protobuf bytes into an `M`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `M`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_with(&ProstCodec, bytes).map(Protobuf)
    }
}

impl<M: Message> IntoPayload for Protobuf<M> {
    fn into_payload(self, _default: &dyn Codec) -> Result<Bytes, EncodeError> {
        self.to_bytes()
    }
}

impl<M: Message + Default> FromPayload for Protobuf<M> {
    fn from_payload(payload: &Bytes, _default: &dyn Codec) -> Result<Self, DecodeError> {
        Self::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Point {
        #[prost(sint32, tag = "1")]
        x: i32,
        #[prost(sint32, tag = "2")]
        y: i32,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct Path {
        #[prost(string, tag = "1")]
        name: String,
        #[prost(message, repeated, tag = "2")]
        points: Vec<Point>,
        #[prost(map = "string, int64", tag = "3")]
        labels: std::collections::HashMap<String, i64>,
    }

    #[test]
    fn nested_messages_round_trip() {
        let path = Path {
            name: "route".into(),
            points: vec![Point { x: 1, y: -2 }, Point { x: 300, y: 0 }],
            labels: [("lane".to_owned(), 3)].into(),
        };
        let bytes = Protobuf(path.clone()).to_bytes().ok().unwrap_or_default();
        assert_eq!(bytes.len(), path.encoded_len());
        assert_eq!(
            Protobuf::<Path>::from_slice(&bytes).ok(),
            Some(Protobuf(path))
        );
    }

    #[test]
    fn garbage_is_a_typed_decode_error() {
        let err = Protobuf::<Path>::from_slice(&[0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]).err();
        assert_eq!(err.as_ref().map(DecodeError::codec), Some("protobuf"));
        assert!(err.is_some_and(|e| e.type_name().ends_with("Path")));
    }
}
