//! JSON payloads for courier-rs.
//!
//! [`JsonCodec`] is the client's default codec (it lives in `courier-core` so the
//! client can default to it; this crate re-exports it). [`Json`] picks JSON for one
//! publish, whatever the client's codec is, and decodes without a client.
//!
//! This crate never compiles the MQTT client: it depends on `courier-core` without its
//! `client` feature.
//!
//! ```
//! use courier_codec_json::Json;
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Tick { time: u64 }
//!
//! let bytes = Json(Tick { time: 7 }).to_bytes()?;
//! assert_eq!(&bytes[..], br#"{"time":7}"#);
//! let Json(tick) = Json::<Tick>::from_slice(&bytes)?;
//! assert_eq!(tick, Tick { time: 7 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use courier_core::codec::JsonCodec;
use courier_core::codec::{Codec, decode_value, encode_value};
use courier_core::error::{DecodeError, EncodeError};
use courier_core::payload::IntoPayload;

/// A value sent or read as JSON, whatever the client's default codec is:
/// `client.publish("t", Json(&order))`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Json<T>(pub T);

impl<T: Serialize> Json<T> {
    /// Encode the wrapped value.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented in JSON (e.g. a map with non-string keys).
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        encode_value(&JsonCodec, &self.0)
    }
}

impl<T: DeserializeOwned> Json<T> {
    /// Decode JSON bytes into a `T`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_value(&JsonCodec, bytes).map(Json)
    }
}

impl<T: Serialize> IntoPayload for Json<T> {
    fn into_payload(self, _default: &dyn Codec) -> Result<Bytes, EncodeError> {
        self.to_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn wrapper_ignores_the_default_codec() {
        #[derive(Debug)]
        struct Other;
        impl Codec for Other {
            fn name(&self) -> &'static str {
                "other"
            }
            fn encode(
                &self,
                _: &dyn courier_core::codec::erased_serde::Serialize,
                _: &mut bytes::BytesMut,
            ) -> Result<(), courier_core::BoxError> {
                Err("must not be called".into())
            }
            fn decode(
                &self,
                _: &[u8],
                _: &mut dyn courier_core::codec::DecodeVisitor,
            ) -> Result<(), courier_core::BoxError> {
                Err("must not be called".into())
            }
        }
        let bytes = Json(vec![1, 2]).into_payload(&Other).ok();
        assert_eq!(bytes.as_deref(), Some(&b"[1,2]"[..]));
    }

    #[test]
    fn garbage_is_a_typed_decode_error() {
        let err = Json::<HashMap<String, u32>>::from_slice(b"\xff\x00{").err();
        assert_eq!(err.as_ref().map(DecodeError::codec), Some("json"));
        assert!(err.is_some_and(|e| e.type_name().contains("HashMap")));
    }
}
