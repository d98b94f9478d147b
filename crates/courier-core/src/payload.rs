//! [`IntoPayload`]: what can be published.

use bytes::Bytes;

use crate::codec::Codec;
use crate::error::EncodeError;

/// A value that can become a publish payload.
///
/// Raw bytes and strings are sent untouched. Codec wrappers (such as
/// `courier_codec_json::Json`) encode with their own codec. To encode a value with
/// the client's default codec, use `Client::publish_value`.
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
