//! [`JsonCodec`]: JSON through serde_json, the client's default codec.

use bytes::{BufMut, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Codec, DecodeVisitor, Decoder, Encoder, Format};
use crate::error::BoxError;

/// JSON through `serde_json`: the client's default codec.
///
/// Encodes straight into the output buffer; decoding rejects trailing data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JsonCodec;

impl Format for JsonCodec {
    fn name(&self) -> &'static str {
        "json"
    }

    fn content_type(&self) -> Option<&'static str> {
        Some("application/json")
    }
}

impl Codec for JsonCodec {
    fn encode_erased(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        self.encode(value, dst)
    }

    fn decode_erased(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError> {
        let mut deserializer = serde_json::Deserializer::from_slice(src);
        visitor.visit(&mut <dyn erased_serde::Deserializer<'_>>::erase(
            &mut deserializer,
        ))?;
        deserializer.end()?;
        Ok(())
    }
}

impl<T: Serialize + ?Sized> Encoder<T> for JsonCodec {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
        serde_json::to_writer(dst.writer(), item).map_err(Into::into)
    }
}

impl<T: DeserializeOwned> Decoder<T> for JsonCodec {
    fn decode(&self, src: &[u8]) -> Result<T, BoxError> {
        serde_json::from_slice(src).map_err(Into::into)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode_value, decode_with, encode_value, encode_with};
    use std::collections::BTreeMap;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Reading {
        sensor: String,
        values: Vec<f64>,
        tags: BTreeMap<String, String>,
    }

    fn reading() -> Reading {
        Reading {
            sensor: "t1".into(),
            values: vec![1.5, -2.0],
            tags: BTreeMap::from([("site".into(), "ams".into())]),
        }
    }

    #[test]
    fn erased_and_generic_paths_agree() {
        let erased = encode_value(&JsonCodec, &reading()).ok();
        let generic = encode_with(&JsonCodec, &reading()).ok();
        assert_eq!(erased, generic);
        let bytes = erased.unwrap_or_default();
        assert_eq!(
            std::str::from_utf8(&bytes).ok(),
            Some(r#"{"sensor":"t1","values":[1.5,-2.0],"tags":{"site":"ams"}}"#)
        );
        assert_eq!(
            decode_value::<Reading>(&JsonCodec, &bytes).ok(),
            Some(reading())
        );
        assert_eq!(
            decode_with::<Reading, _>(&JsonCodec, &bytes).ok(),
            Some(reading())
        );
    }

    #[test]
    fn decode_errors_name_codec_and_type() {
        let err = decode_value::<Reading>(&JsonCodec, b"{not json").err();
        let err = err.map(|e| (e.codec(), e.type_name()));
        assert_eq!(err.map(|e| e.0), Some("json"));
        assert!(err.is_some_and(|e| e.1.ends_with("Reading")));
    }

    #[test]
    fn decode_rejects_trailing_data() {
        assert!(decode_value::<u32>(&JsonCodec, b"1 2").is_err());
        assert!(decode_with::<u32, _>(&JsonCodec, b"1 2").is_err());
        assert_eq!(decode_value::<u32>(&JsonCodec, b" 7 ").ok(), Some(7));
    }

    #[test]
    fn encode_error_for_unrepresentable_values() {
        // JSON object keys must be strings.
        let map = BTreeMap::from([((1, 2), 3)]);
        assert_eq!(
            encode_value(&JsonCodec, &map).err().map(|e| e.codec()),
            Some("json")
        );
        assert!(encode_with(&JsonCodec, &map).is_err());
    }
}
