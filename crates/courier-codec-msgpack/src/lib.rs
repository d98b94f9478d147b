//! MessagePack payloads for courier-rs, through `rmp-serde`.
//!
//! [`MsgPackCodec`] writes structs as **maps** (field names included) by default, so
//! Go and JavaScript peers can read them; [`MsgPackCodec::compact`] writes them as
//! arrays (smaller, but both sides must agree on field order). [`MsgPack`] picks
//! MessagePack for one publish or one decode, whatever the client's codec is.
//!
//! This crate never compiles the MQTT client: it depends on `courier-core` without
//! its `client` feature.
//!
//! ```
//! use courier_codec_msgpack::{MsgPack, MsgPackCodec};
//!
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Tick { time: u64 }
//!
//! let bytes = MsgPack(Tick { time: 7 }).to_bytes()?;
//! assert_eq!(&bytes[..], b"\x81\xa4time\x07"); // {"time": 7} as a map
//! let MsgPack(tick) = MsgPack::<Tick>::from_slice(&bytes)?;
//! assert_eq!(tick, Tick { time: 7 });
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use courier_core::codec::{
    Codec, DecodeVisitor, Decoder, Encoder, Format, decode_with, encode_with,
};
use courier_core::error::{BoxError, DecodeError, EncodeError};
use courier_core::payload::{FromPayload, IntoPayload};

/// MessagePack through `rmp-serde`. Structs are maps by default
/// ([`compact`](Self::compact) for arrays); decoding rejects trailing data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsgPackCodec {
    struct_map: bool,
}

impl Default for MsgPackCodec {
    fn default() -> Self {
        MsgPackCodec { struct_map: true }
    }
}

impl MsgPackCodec {
    /// Structs as maps with field names: what Go and JS MessagePack libraries expect.
    pub fn new() -> Self {
        Self::default()
    }

    /// Structs as arrays (no field names): smaller, but both sides must share the
    /// field order. Either form decodes either encoding.
    pub fn compact() -> Self {
        MsgPackCodec { struct_map: false }
    }

    fn write<T: Serialize + ?Sized>(&self, value: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
        let serializer = rmp_serde::Serializer::new(dst.writer());
        if self.struct_map {
            value.serialize(&mut serializer.with_struct_map())?;
        } else {
            value.serialize(&mut rmp_serde::Serializer::new(serializer.into_inner()))?;
        }
        Ok(())
    }
}

/// Fails when the decoder stopped before the end of the input.
fn check_consumed(position: u64, len: usize) -> Result<(), BoxError> {
    if position == len as u64 {
        Ok(())
    } else {
        Err(format!("{} bytes of trailing data", len as u64 - position).into())
    }
}

impl Format for MsgPackCodec {
    fn name(&self) -> &'static str {
        "msgpack"
    }

    fn content_type(&self) -> Option<&'static str> {
        Some("application/msgpack")
    }
}

impl Codec for MsgPackCodec {
    fn encode_erased(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        self.write(value, dst)
    }

    fn decode_erased(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError> {
        let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(src));
        visitor.visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(
            &mut deserializer,
        ))?;
        check_consumed(deserializer.position(), src.len())
    }
}

impl<T: Serialize + ?Sized> Encoder<T> for MsgPackCodec {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
        self.write(item, dst)
    }
}

impl<T: DeserializeOwned> Decoder<T> for MsgPackCodec {
    fn decode(&self, src: &[u8]) -> Result<T, BoxError> {
        let mut deserializer = rmp_serde::Deserializer::new(std::io::Cursor::new(src));
        let value = T::deserialize(&mut deserializer)?;
        check_consumed(deserializer.position(), src.len())?;
        Ok(value)
    }
}

/// A value sent or read as MessagePack (structs as maps), whatever the client's
/// default codec is: `client.publish("t", MsgPack(&order))`,
/// `let MsgPack(order) = msg.decode::<MsgPack<Order>>()?`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MsgPack<T>(pub T);

impl<T: Serialize> MsgPack<T> {
    /// Encode the wrapped value.
    ///
    /// # Errors
    ///
    /// When the value cannot be serialized.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        encode_with(&MsgPackCodec::new(), &self.0)
    }
}

impl<T: DeserializeOwned> MsgPack<T> {
    /// Decode MessagePack bytes into a `T`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T`.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, DecodeError> {
        decode_with(&MsgPackCodec::new(), bytes).map(MsgPack)
    }
}

impl<T: Serialize> IntoPayload for MsgPack<T> {
    fn into_payload(self, _default: &dyn Codec) -> Result<Bytes, EncodeError> {
        self.to_bytes()
    }
}

impl<T: DeserializeOwned> FromPayload for MsgPack<T> {
    fn from_payload(payload: &Bytes, _default: &dyn Codec) -> Result<Self, DecodeError> {
        Self::from_slice(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::codec::{decode_value, encode_value};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Inner {
        tags: BTreeMap<String, i64>,
        raw: Vec<u8>,
    }

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Outer {
        id: u64,
        name: String,
        inner: Vec<Inner>,
        note: Option<String>,
    }

    fn sample() -> Outer {
        Outer {
            id: 42,
            name: "sensor".into(),
            inner: vec![Inner {
                tags: BTreeMap::from([("a".into(), -1)]),
                raw: vec![0, 255],
            }],
            note: None,
        }
    }

    #[test]
    fn nested_structs_round_trip_on_both_paths() {
        for codec in [MsgPackCodec::new(), MsgPackCodec::compact()] {
            let generic = encode_with(&codec, &sample()).ok().unwrap_or_default();
            let erased = encode_value(&codec, &sample()).ok().unwrap_or_default();
            assert_eq!(generic, erased);
            assert_eq!(
                decode_with::<Outer, _>(&codec, &generic).ok(),
                Some(sample())
            );
            assert_eq!(decode_value::<Outer>(&codec, &erased).ok(), Some(sample()));
        }
    }

    #[test]
    fn maps_by_default_arrays_when_compact() {
        let named = encode_with(&MsgPackCodec::new(), &sample())
            .ok()
            .unwrap_or_default();
        let compact = encode_with(&MsgPackCodec::compact(), &sample())
            .ok()
            .unwrap_or_default();
        assert_eq!(named[0] & 0xf0, 0x80, "fixmap");
        assert_eq!(compact[0] & 0xf0, 0x90, "fixarray");
        assert!(compact.len() < named.len());
        // Either form decodes either encoding.
        assert_eq!(
            decode_with::<Outer, _>(&MsgPackCodec::new(), &compact).ok(),
            Some(sample())
        );
    }

    #[test]
    fn trailing_data_and_garbage_are_typed_errors() {
        let mut bytes = encode_with(&MsgPackCodec::new(), &7u32)
            .ok()
            .unwrap_or_default()
            .to_vec();
        bytes.push(0);
        let err = decode_with::<u32, _>(&MsgPackCodec::new(), &bytes).err();
        assert_eq!(err.as_ref().map(DecodeError::codec), Some("msgpack"));
        assert!(decode_value::<u32>(&MsgPackCodec::new(), &bytes).is_err());
        let err = MsgPack::<Outer>::from_slice(&[0xc1]).err();
        assert!(err.is_some_and(|e| e.type_name().ends_with("Outer")));
    }
}
