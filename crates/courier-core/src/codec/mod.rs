//! Payload codecs: how typed values become bytes and back.
//!
//! Two kinds of trait, for two jobs:
//!
//! - [`Encoder<T>`] and [`Decoder<T>`] are generic over the item, like tokio-util's
//!   codec traits, so one codec serves every type it can handle: every
//!   `T: Serialize` for JSON and MessagePack, every `prost::Message` for protobuf,
//!   whatever your own format takes. Per-call wrappers ([`Encoded`](crate::payload::Encoded),
//!   `Json`, `MsgPack`, `Protobuf`) and [`Message::decode_with`](crate::Message::decode_with)
//!   use them.
//! - [`Codec`] is the object-safe, serde-based trait a client holds as its default
//!   codec (`Arc<dyn Codec>`): values cross it as `erased_serde` objects, so it still
//!   serves every `T: Serialize`/`DeserializeOwned`. [`encode_value`] and
//!   [`decode_value`] are its typed entry points.
//!
//! Both kinds share [`Format`] (a name for errors and telemetry, and a content type
//! for MQTT 5). Combinators work with both: [`Fallback`] (`a.or(b)`: try codecs in
//! order, like the Go `ChainEncoderFunc`/`ChainDecoderFunc`) and
//! [`Transformed`] (`codec.then(Base64)`: byte transforms
//! such as base64 or gzip stacked on a codec).
//!
//! JSON ([`JsonCodec`]) is built in because it is the client's default codec; other
//! formats live in their own crates.

use std::fmt;

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{BoxError, DecodeError, EncodeError};

mod chain;
#[cfg(feature = "json")]
mod json;
pub mod transform;

pub use chain::{ChainError, Fallback};
#[cfg(feature = "json")]
pub use json::JsonCodec;
pub use transform::{ByteTransform, Transformed};

/// Re-exported so codec authors use the same version courier does.
pub use erased_serde;

/// What every codec tells about itself.
pub trait Format: Send + Sync + 'static {
    /// A short name used in errors and telemetry, e.g. `"json"`.
    fn name(&self) -> &'static str;

    /// The MIME type of the payloads, for MQTT 5's content-type property.
    fn content_type(&self) -> Option<&'static str> {
        None
    }
}

/// Encodes values of type `T`.
pub trait Encoder<T: ?Sized>: Format {
    /// Append the encoding of `item` to `dst`.
    ///
    /// # Errors
    ///
    /// When the format cannot represent the value.
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), BoxError>;
}

/// Decodes values of type `T`.
pub trait Decoder<T>: Format {
    /// Decode a `T` from the whole of `src`.
    ///
    /// # Errors
    ///
    /// When the bytes are not valid for the format or do not fit `T`. Must never
    /// panic, whatever the bytes.
    fn decode(&self, src: &[u8]) -> Result<T, BoxError>;
}

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

/// A serde-based format a client can hold as its default codec.
///
/// Implement it for your own serde format by wrapping the format's serializer and
/// deserializer with `erased_serde` (see the custom-codec guide, `courier::guides::custom_codec`).
pub trait Codec: Format + fmt::Debug {
    /// Serialize `value` and append the bytes to `dst`.
    ///
    /// # Errors
    ///
    /// When the format cannot represent the value.
    fn encode_erased(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError>;

    /// Build a deserializer over `src`, hand it to `visitor`, then check that the
    /// whole input was consumed.
    ///
    /// # Errors
    ///
    /// When the bytes are not valid for the format, do not fit the target type, or
    /// have trailing data. Must never panic, whatever the bytes.
    fn decode_erased(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError>;
}

/// Combinators available on every codec.
pub trait CodecExt: Sized {
    /// Try `self`, then `fallback` (for decoding: the first codec that accepts the
    /// bytes wins; for encoding: the first that can represent the value).
    fn or<B>(self, fallback: B) -> Fallback<Self, B> {
        Fallback::new(self, fallback)
    }

    /// Stack a byte transform on the codec's output (and undo it before decoding).
    fn then<X: ByteTransform>(self, transform: X) -> Transformed<Self, X> {
        Transformed::new(self, transform)
    }
}

impl<C: Format> CodecExt for C {}

/// Encode `value` with the object-safe `codec` into a fresh buffer.
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
        .encode_erased(&value, &mut buf)
        .map_err(|source| EncodeError::new(codec.name(), std::any::type_name::<T>(), source))?;
    Ok(buf.freeze())
}

/// Decode `src` into a `T` with the object-safe `codec`.
///
/// # Errors
///
/// A [`DecodeError`] naming the codec and the target type.
pub fn decode_value<T: DeserializeOwned>(codec: &dyn Codec, src: &[u8]) -> Result<T, DecodeError> {
    let fail =
        |source: BoxError| DecodeError::new(codec.name(), std::any::type_name::<T>(), source);
    let mut slot = Slot(None);
    codec.decode_erased(src, &mut slot).map_err(fail)?;
    slot.0
        .ok_or_else(|| fail("the codec did not produce a value".into()))
}

/// Encode `item` with a generic `encoder` into a fresh buffer.
///
/// # Errors
///
/// An [`EncodeError`] naming the codec and the type.
pub fn encode_with<T: ?Sized, E: Encoder<T> + ?Sized>(
    encoder: &E,
    item: &T,
) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    encoder
        .encode(item, &mut buf)
        .map_err(|source| EncodeError::new(encoder.name(), std::any::type_name::<T>(), source))?;
    Ok(buf.freeze())
}

/// Decode `src` into a `T` with a generic `decoder`.
///
/// # Errors
///
/// A [`DecodeError`] naming the codec and the target type.
pub fn decode_with<T, D: Decoder<T> + ?Sized>(decoder: &D, src: &[u8]) -> Result<T, DecodeError> {
    decoder
        .decode(src)
        .map_err(|source| DecodeError::new(decoder.name(), std::any::type_name::<T>(), source))
}

/// The [`DecodeVisitor`] behind [`decode_value`]: keeps the decoded value.
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
