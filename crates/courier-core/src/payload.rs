//! What can be published ([`IntoPayload`]) and what a payload can be decoded into
//! ([`FromPayload`]).

use bytes::Bytes;
use serde::de::DeserializeOwned;

use crate::codec::{Codec, Encoder, decode_value, encode_with};
use crate::error::{DecodeError, EncodeError};

/// A value that can become a publish payload.
///
/// Raw bytes and strings are sent untouched. Codec wrappers (`Json(v)`,
/// `MsgPack(v)`, `Protobuf(m)`, or [`Encoded`] for any codec) encode with their own
/// codec. To encode a value with the client's default codec, use
/// `Client::publish_value`.
pub trait IntoPayload {
    /// Produce the payload bytes. `default_codec` is the client's codec, for
    /// wrappers that defer to it.
    ///
    /// # Errors
    ///
    /// When encoding fails.
    fn into_payload(self, default_codec: &dyn Codec) -> Result<Bytes, EncodeError>;
}

impl IntoPayload for Bytes {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(self)
    }
}

impl IntoPayload for &Bytes {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(self.clone())
    }
}

impl IntoPayload for Vec<u8> {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::from(self))
    }
}

impl IntoPayload for String {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::from(self))
    }
}

impl IntoPayload for &[u8] {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(self))
    }
}

impl<const N: usize> IntoPayload for &[u8; N] {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(self))
    }
}

impl IntoPayload for &str {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl IntoPayload for &String {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(self.as_bytes()))
    }
}

impl IntoPayload for &Vec<u8> {
    fn into_payload(self, _: &dyn Codec) -> Result<Bytes, EncodeError> {
        Ok(Bytes::copy_from_slice(self))
    }
}

/// What a received payload can be decoded into by `Message::decode`.
///
/// Every `T: DeserializeOwned` decodes with the client's default codec; codec
/// wrappers (`Json<T>`, `MsgPack<T>`, `Protobuf<M>`) pick their own codec, whatever
/// the client's.
pub trait FromPayload: Sized {
    /// Decode `payload`; `default_codec` is the client's codec.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and the target type.
    fn from_payload(payload: &Bytes, default_codec: &dyn Codec) -> Result<Self, DecodeError>;
}

impl<T: DeserializeOwned> FromPayload for T {
    fn from_payload(payload: &Bytes, default_codec: &dyn Codec) -> Result<Self, DecodeError> {
        decode_value(default_codec, payload)
    }
}

/// A value published with a codec of your choice, including chains and transforms:
/// `client.publish("t", Encoded(JsonCodec.then(Base64), &value))`.
#[derive(Debug, Clone, Copy)]
pub struct Encoded<C, T>(pub C, pub T);

impl<C: Encoder<T>, T> IntoPayload for Encoded<C, T> {
    fn into_payload(self, _default: &dyn Codec) -> Result<Bytes, EncodeError> {
        encode_with(&self.0, &self.1)
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;
    use crate::codec::JsonCodec;

    #[test]
    fn raw_payloads_are_sent_untouched() {
        let c = &JsonCodec;
        let expect = Some(Bytes::from_static(b"hi"));
        assert_eq!("hi".into_payload(c).ok(), expect);
        assert_eq!(String::from("hi").into_payload(c).ok(), expect);
        assert_eq!(b"hi".into_payload(c).ok(), expect);
        assert_eq!(b"hi".to_vec().into_payload(c).ok(), expect);
        assert_eq!(Bytes::from_static(b"hi").into_payload(c).ok(), expect);
    }
}
