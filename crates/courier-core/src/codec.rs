//! Payload codecs: how typed values become bytes and back.
//!
//! A [`Codec`] is object safe so a client can hold one as its default
//! (`Arc<dyn Codec>`) while still serving every `T: Serialize` and every
//! `T: DeserializeOwned`: values cross the trait as `erased_serde` objects.
//! [`encode_value`] and [`decode_value`] are the typed entry points.
//!
//! JSON ([`JsonCodec`]) is built in because it is the client's default codec;
//! other formats live in their own crates and implement [`Codec`] the same way.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, DecodeError, EncodeError};

/// Re-exported so codec authors use the same version courier does.
pub use erased_serde;

/// Receives the erased deserializer a [`Codec`] builds over the payload bytes.
///
/// Implemented by [`decode_value`]; codec authors only call [`DecodeVisitor::visit`].
pub trait DecodeVisitor {
    /// Deserialize the target value from `deserializer`.
    ///
    /// # Errors
    ///
    /// Whatever the target type's `Deserialize` implementation reports.
    fn visit(
        &mut self,
        deserializer: &mut dyn erased_serde::Deserializer<'_>,
    ) -> Result<(), erased_serde::Error>;
}

/// A serde-based payload format, usable as a client's default codec.
///
/// Implement it for your own format by wrapping the format's serializer and
/// deserializer with `erased_serde` (see [`JsonCodec`]'s source for a model).
pub trait Codec: Send + Sync + fmt::Debug + 'static {
    /// A short name used in errors and telemetry, e.g. `"json"`.
    fn name(&self) -> &'static str;

    /// The MIME type of the payloads, for MQTT 5's content-type property.
    fn content_type(&self) -> Option<&'static str> {
        None
    }

    /// Serialize `value` and append the bytes to `dst`.
    ///
    /// # Errors
    ///
    /// When the format cannot represent the value.
    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError>;

    /// Build a deserializer over `src` and hand it to `visitor`, then check that the
    /// whole input was consumed.
    ///
    /// # Errors
    ///
    /// When the bytes are not valid for the format, do not fit the target type, or
    /// have trailing data. Must never panic, whatever the bytes.
    fn decode(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError>;
}

/// Encode `value` with `codec` into a fresh buffer.
///
/// # Errors
///
/// An [`EncodeError`] naming the codec and the type.
pub fn encode_value<T: Serialize + ?Sized>(
    codec: &dyn Codec,
    value: &T,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    codec
        .encode(&value, &mut buf)
        .map_err(|source| EncodeError::new(codec.name(), std::any::type_name::<T>(), source))?;
    Ok(buf.freeze())
}

/// Decode `src` into a `T` with `codec`.
///
/// # Errors
///
/// A [`DecodeError`] naming the codec and the target type.
pub fn decode_value<T: DeserializeOwned>(codec: &dyn Codec, src: &[u8]) -> Result<T, DecodeError> {
    struct Slot<T>(Option<T>);

    impl<T: DeserializeOwned> DecodeVisitor for Slot<T> {
        fn visit(
            &mut self,
            deserializer: &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error> {
            self.0 = Some(erased_serde::deserialize(deserializer)?);
            Ok(())
        }
    }

    let fail =
        |source: BoxError| DecodeError::new(codec.name(), std::any::type_name::<T>(), source);
    let mut slot = Slot(None);
    codec.decode(src, &mut slot).map_err(fail)?;
    slot.0
        .ok_or_else(|| fail("the codec did not produce a value".into()))
}

/// JSON through `serde_json`: the client's default codec.
///
/// Encodes straight into the output buffer; decoding rejects trailing data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl Codec for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn content_type(&self) -> Option<&'static str> {
        Some("application/json")
    }

    fn encode(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        use bytes::BufMut;
        let mut serializer = serde_json::Serializer::new(dst.writer());
        value
            .erased_serialize(&mut <dyn erased_serde::Serializer>::erase(&mut serializer))
            .map_err(|e| Box::new(e) as BoxError)
    }

    fn decode(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError> {
        let mut deserializer = serde_json::Deserializer::from_slice(src);
        visitor.visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(
            &mut deserializer,
        ))?;
        deserializer.end()?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        values: Vec<f64>,
        tags: BTreeMap<String, String>,
    }

    #[test]
    fn json_round_trips_a_nested_struct() {
        let reading = Reading {
            sensor: "t1".into(),
            values: vec![1.5, -2.0],
            tags: BTreeMap::from([("site".into(), "ams".into())]),
        };
        let bytes = encode_value(&JsonCodec, &reading).ok();
        let bytes = bytes.as_deref().unwrap_or_default();
        assert_eq!(
            std::str::from_utf8(bytes).ok(),
            Some(r#"{"sensor":"t1","values":[1.5,-2.0],"tags":{"site":"ams"}}"#)
        );
        let back: Result<Reading, _> = decode_value(&JsonCodec, bytes);
        assert_eq!(back.ok(), Some(reading));
    }

    #[test]
    fn json_decode_errors_name_codec_and_type() {
        let err = decode_value::<Reading>(&JsonCodec, b"{not json").err();
        let err = err.map(|e| (e.codec(), e.type_name()));
        assert_eq!(err.map(|e| e.0), Some("json"));
        assert!(err.is_some_and(|e| e.1.ends_with("Reading")));
    }

    #[test]
    fn json_decode_rejects_trailing_data() {
        assert!(decode_value::<u32>(&JsonCodec, b"1 2").is_err());
        assert_eq!(decode_value::<u32>(&JsonCodec, b" 7 ").ok(), Some(7));
    }

    #[test]
    fn json_encode_error_for_unrepresentable_values() {
        // JSON object keys must be strings.
        let map = BTreeMap::from([((1, 2), 3)]);
        let err = encode_value(&JsonCodec, &map).err();
        assert_eq!(err.map(|e| e.codec()), Some("json"));
    }
}
