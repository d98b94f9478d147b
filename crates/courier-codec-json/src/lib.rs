//! JSON payloads for courier-rs.
//!
//! [`JsonCodec`] is the client's default codec (it lives in `courier-core` so the
//! client can default to it; this crate re-exports it). [`Json`] picks JSON for one
//! publish or one decode, whatever the client's codec is, and works without a client.
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
use courier_core::codec::{Codec, decode_with, encode_with};
use courier_core::error::{DecodeError, EncodeError};
use courier_core::payload::{FromPayload, IntoPayload};

/// A value sent or read as JSON, whatever the client's default codec is:
/// `client.publish("t", Json(&order))`, `let Json(order) = msg.decode::<Json<Order>>()?`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Json<T>(pub T);

impl<T: Serialize> Json<T> {
    /// Encode the wrapped value.
    ///
    /// # Errors
    ///
    /// When the value cannot be represented in JSON (e.g. a map with non-string keys).
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        encode_with(&JsonCodec, &self.0)
    }
}

impl<T: DeserializeOwned> Json<T> {
    /// Decode JSON bytes into a `T`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_with(&JsonCodec, bytes).map(Json)
    }
}

impl<T: Serialize> IntoPayload for Json<T> {
    fn into_payload(self, _default: &dyn Codec) -> Result<Bytes, EncodeError> {
        self.to_bytes()
    }
}

impl<T: DeserializeOwned> FromPayload for Json<T> {
    fn from_payload(payload: &Bytes, _default: &dyn Codec) -> Result<Self, DecodeError> {
        Self::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::codec::{CodecExt, Format, transform::Base64};
    use std::collections::HashMap;

    #[test]
    fn wrappers_ignore_the_default_codec() {
        // Base64-wrapped JSON as the "client codec": Json must still write plain JSON.
        let default = JsonCodec.then(Base64);
        assert_ne!(default.name(), "");
        let bytes = Json(vec![1, 2]).into_payload(&default).ok();
        assert_eq!(bytes.as_deref(), Some(&b"[1,2]"[..]));
        let back = Json::<Vec<u8>>::from_payload(&Bytes::from_static(b"[1,2]"), &default).ok();
        assert_eq!(back, Some(Json(vec![1, 2])));
    }

    #[test]
    fn garbage_is_a_typed_decode_error() {
        let err = Json::<HashMap<String, u32>>::from_slice(b"\xff\x00{").err();
        assert_eq!(err.as_ref().map(DecodeError::codec), Some("json"));
        assert!(err.is_some_and(|e| e.type_name().contains("HashMap")));
    }
}
