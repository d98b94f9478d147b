//! Byte transforms stacked on a codec: [`Transformed`], with [`Base64`] (the Go
//! `WithUseBase64Decoder`) and [`Gzip`] behind the `base64` and `gzip` features.

use std::fmt;

use bytes::BytesMut;

use super::{Codec, DecodeVisitor, Decoder, Encoder, Format};
use crate::error::BoxError;

/// A reversible transformation of encoded bytes (compression, base64, an envelope).
pub trait ByteTransform: Send + Sync + fmt::Debug + 'static {
    /// A short name for errors, e.g. `"base64"`.
    fn name(&self) -> &'static str;

    /// Transform `src` (a codec's output) and append the result to `dst`.
    ///
    /// # Errors
    ///
    /// When the transform cannot process the bytes.
    fn apply(&self, src: &[u8], dst: &mut BytesMut) -> Result<(), BoxError>;

    /// Undo [`apply`](Self::apply) on received bytes, before decoding.
    ///
    /// # Errors
    ///
    /// When `src` is not a valid output of the transform. Must never panic and must
    /// bound the memory it allocates, whatever the bytes.
    fn revert(&self, src: &[u8]) -> Result<Vec<u8>, BoxError>;
}

/// A codec whose output goes through a [`ByteTransform`]. Build it with
/// [`CodecExt::then`](super::CodecExt::then): `JsonCodec.then(Base64)`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transformed<C, X> {
    codec: C,
    transform: X,
}

impl<C, X> Transformed<C, X> {
    /// `codec`, with `transform` applied to its output.
    pub fn new(codec: C, transform: X) -> Self {
        Transformed { codec, transform }
    }
}

/// Names the transform in its errors.
#[derive(Debug)]
struct TransformError {
    transform: &'static str,
    source: BoxError,
}

impl fmt::Display for TransformError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} transform failed: {}", self.transform, self.source)
    }
}

impl std::error::Error for TransformError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl<C: Format, X: ByteTransform> Transformed<C, X> {
    fn wrap(&self, source: BoxError) -> BoxError {
        Box::new(TransformError {
            transform: self.transform.name(),
            source,
        })
    }

    fn apply_to(
        &self,
        dst: &mut BytesMut,
        encode: impl FnOnce(&mut BytesMut) -> Result<(), BoxError>,
    ) -> Result<(), BoxError> {
        let mut encoded = BytesMut::new();
        encode(&mut encoded)?;
        self.transform
            .apply(&encoded, dst)
            .map_err(|e| self.wrap(e))
    }
}

impl<C: Format, X: ByteTransform> Format for Transformed<C, X> {
    fn name(&self) -> &'static str {
        self.codec.name()
    }

    /// None: the payload is no longer the codec's plain format.
    fn content_type(&self) -> Option<&'static str> {
        None
    }
}

impl<T: ?Sized, C: Encoder<T>, X: ByteTransform> Encoder<T> for Transformed<C, X> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
        self.apply_to(dst, |buf| self.codec.encode(item, buf))
    }
}

impl<T, C: Decoder<T>, X: ByteTransform> Decoder<T> for Transformed<C, X> {
    fn decode(&self, src: &[u8]) -> Result<T, BoxError> {
        let raw = self.transform.revert(src).map_err(|e| self.wrap(e))?;
        self.codec.decode(&raw)
    }
}

impl<C: Codec, X: ByteTransform> Codec for Transformed<C, X> {
    fn encode_erased(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        self.apply_to(dst, |buf| self.codec.encode_erased(value, buf))
    }

    fn decode_erased(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError> {
        let raw = self.transform.revert(src).map_err(|e| self.wrap(e))?;
        self.codec.decode_erased(&raw, visitor)
    }
}

/// Standard base64 with padding (RFC 4648), as the Go `WithUseBase64Decoder` reads.
#[cfg(feature = "base64")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Base64;

#[cfg(feature = "base64")]
impl ByteTransform for Base64 {
    fn name(&self) -> &'static str {
        "base64"
    }

    fn apply(&self, src: &[u8], dst: &mut BytesMut) -> Result<(), BoxError> {
        use base64::Engine;
        dst.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(src)
                .as_bytes(),
        );
        Ok(())
    }

    fn revert(&self, src: &[u8]) -> Result<Vec<u8>, BoxError> {
        use base64::Engine;
        // Tolerate the trailing newline many tools append.
        let trimmed = src.strip_suffix(b"\n").unwrap_or(src);
        Ok(base64::engine::general_purpose::STANDARD.decode(trimmed)?)
    }
}

/// gzip compression (flate2, pure Rust). Decompression stops at
/// [`max_decompressed`](Gzip::max_decompressed) bytes (default 64 MiB), so a
/// "zip bomb" cannot exhaust memory.
#[cfg(feature = "gzip")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gzip {
    level: u32,
    max_decompressed: u64,
}

#[cfg(feature = "gzip")]
impl Default for Gzip {
    fn default() -> Self {
        Gzip {
            level: 6,
            max_decompressed: 64 * 1024 * 1024,
        }
    }
}

#[cfg(feature = "gzip")]
impl Gzip {
    /// gzip at the default level (6), decompressing at most 64 MiB.
    pub fn new() -> Self {
        Self::default()
    }

    /// Compression level, 0 (none) to 9 (best); clamped.
    pub fn level(mut self, level: u32) -> Self {
        self.level = level.min(9);
        self
    }

    /// The most bytes one payload may decompress to.
    pub fn max_decompressed(mut self, bytes: u64) -> Self {
        self.max_decompressed = bytes;
        self
    }
}

#[cfg(feature = "gzip")]
impl ByteTransform for Gzip {
    fn name(&self) -> &'static str {
        "gzip"
    }

    fn apply(&self, src: &[u8], dst: &mut BytesMut) -> Result<(), BoxError> {
        use bytes::BufMut;
        use std::io::Write;
        let mut encoder =
            flate2::write::GzEncoder::new(dst.writer(), flate2::Compression::new(self.level));
        encoder.write_all(src)?;
        encoder.finish()?;
        Ok(())
    }

    fn revert(&self, src: &[u8]) -> Result<Vec<u8>, BoxError> {
        use std::io::Read;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(src)
            .take(self.max_decompressed.saturating_add(1))
            .read_to_end(&mut out)?;
        if out.len() as u64 > self.max_decompressed {
            return Err(
                format!("decompresses to more than {} bytes", self.max_decompressed).into(),
            );
        }
        Ok(out)
    }
}

#[cfg(all(test, feature = "json", feature = "base64", feature = "gzip"))]
mod tests {
    use super::*;
    use crate::codec::{CodecExt, JsonCodec, decode_value, decode_with, encode_value, encode_with};

    #[test]
    fn base64_json_round_trips_both_ways() {
        let codec = JsonCodec.then(Base64);
        let bytes = encode_with(&codec, &vec![1, 2, 3]).ok().unwrap_or_default();
        assert_eq!(&bytes[..], b"WzEsMiwzXQ==");
        assert_eq!(
            decode_with::<Vec<u8>, _>(&codec, &bytes).ok(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(
            decode_value::<Vec<u8>>(&codec, b"WzEsMiwzXQ==\n").ok(),
            Some(vec![1, 2, 3])
        );
        assert_eq!(encode_value(&codec, &vec![1, 2, 3]).ok(), Some(bytes));
    }

    #[test]
    fn gzip_round_trips_and_bounds_decompression() {
        let codec = JsonCodec.then(Gzip::new());
        let big = "a".repeat(10_000);
        let bytes = encode_with(&codec, &big).ok().unwrap_or_default();
        assert!(bytes.len() < 200, "compressed to {}", bytes.len());
        assert_eq!(
            decode_with::<String, _>(&codec, &bytes).ok(),
            Some(big.clone())
        );
        let small_limit = JsonCodec.then(Gzip::new().max_decompressed(1000));
        let err = decode_with::<String, _>(&small_limit, &bytes)
            .err()
            .map(|e| e.to_string());
        assert!(err.is_some());
    }

    #[test]
    fn a_failed_transform_is_named() {
        let err = decode_with::<u32, _>(&JsonCodec.then(Base64), b"***").err();
        let source = err
            .as_ref()
            .and_then(|e| std::error::Error::source(e))
            .map(ToString::to_string);
        assert!(source.is_some_and(|s| s.starts_with("base64 transform failed")));
    }
}
