//! [`Fallback`]: try codecs in order (the Go `ChainEncoderFunc`/`ChainDecoderFunc`).

use std::fmt;

use bytes::BytesMut;

use super::{Codec, DecodeVisitor, Decoder, Encoder, Format};
use crate::error::BoxError;

/// Tries `first`, then `second`: the first codec that can decode the bytes (or encode
/// the value) wins. Build it with [`CodecExt::or`](super::CodecExt::or); chain more
/// with further `.or(..)`. When all fail, the error is a [`ChainError`] that keeps
/// every attempt's cause.
///
/// A fallback of [`Codec`]s is a [`Codec`] itself, so it can be a client's default:
/// `.codec(JsonCodec.or(MsgPackCodec::new()))` reads JSON and MessagePack payloads
/// alike (and encodes with JSON).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Fallback<A, B> {
    first: A,
    second: B,
}

impl<A, B> Fallback<A, B> {
    /// `first`, falling back to `second`.
    pub fn new(first: A, second: B) -> Self {
        Fallback { first, second }
    }

    /// The codec tried first.
    pub fn first(&self) -> &A {
        &self.first
    }

    /// The codec tried when the first fails.
    pub fn second(&self) -> &B {
        &self.second
    }
}

/// Every codec of a [`Fallback`] failed; one cause per attempt, in order.
#[derive(Debug)]
pub struct ChainError {
    attempts: Vec<(&'static str, BoxError)>,
}

impl ChainError {
    /// Combine the errors of two attempts, flattening nested chains.
    fn of(first: (&'static str, BoxError), second: (&'static str, BoxError)) -> Self {
        let mut attempts = Vec::new();
        for (name, error) in [first, second] {
            match error.downcast::<ChainError>() {
                Ok(chain) => attempts.extend(chain.attempts),
                Err(error) => attempts.push((name, error)),
            }
        }
        ChainError { attempts }
    }

    /// Each attempt's codec name and error, in the order tried.
    pub fn attempts(
        &self,
    ) -> impl Iterator<
        Item = (
            &'static str,
            &(dyn std::error::Error + Send + Sync + 'static),
        ),
    > {
        self.attempts.iter().map(|(name, e)| (*name, &**e))
    }
}

impl fmt::Display for ChainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("every codec failed")?;
        for (i, (name, error)) in self.attempts.iter().enumerate() {
            write!(f, "{} {name}: {error}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for ChainError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.attempts
            .first()
            .map(|(_, e)| &**e as &(dyn std::error::Error + 'static))
    }
}

impl<A: Format, B: Format> Format for Fallback<A, B> {
    /// The first codec's name: it is the one used to encode.
    fn name(&self) -> &'static str {
        self.first.name()
    }

    fn content_type(&self) -> Option<&'static str> {
        self.first.content_type()
    }
}

/// Run `first`; on failure undo its partial output and run `second`.
fn attempt(
    dst: &mut BytesMut,
    names: (&'static str, &'static str),
    first: impl FnOnce(&mut BytesMut) -> Result<(), BoxError>,
    second: impl FnOnce(&mut BytesMut) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let start = dst.len();
    let first_error = match first(dst) {
        Ok(()) => return Ok(()),
        Err(e) => e,
    };
    dst.truncate(start);
    second(dst).map_err(|second_error| {
        ChainError::of((names.0, first_error), (names.1, second_error)).into()
    })
}

impl<T: ?Sized, A: Encoder<T>, B: Encoder<T>> Encoder<T> for Fallback<A, B> {
    fn encode(&self, item: &T, dst: &mut BytesMut) -> Result<(), BoxError> {
        attempt(
            dst,
            (self.first.name(), self.second.name()),
            |dst| self.first.encode(item, dst),
            |dst| self.second.encode(item, dst),
        )
    }
}

impl<T, A: Decoder<T>, B: Decoder<T>> Decoder<T> for Fallback<A, B> {
    fn decode(&self, src: &[u8]) -> Result<T, BoxError> {
        let first_error = match self.first.decode(src) {
            Ok(value) => return Ok(value),
            Err(e) => e,
        };
        self.second.decode(src).map_err(|second_error| {
            ChainError::of(
                (self.first.name(), first_error),
                (self.second.name(), second_error),
            )
            .into()
        })
    }
}

impl<A: Codec, B: Codec> Codec for Fallback<A, B> {
    fn encode_erased(
        &self,
        value: &dyn erased_serde::Serialize,
        dst: &mut BytesMut,
    ) -> Result<(), BoxError> {
        attempt(
            dst,
            (self.first.name(), self.second.name()),
            |dst| self.first.encode_erased(value, dst),
            |dst| self.second.encode_erased(value, dst),
        )
    }

    fn decode_erased(&self, src: &[u8], visitor: &mut dyn DecodeVisitor) -> Result<(), BoxError> {
        let first_error = match self.first.decode_erased(src, visitor) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        self.second
            .decode_erased(src, visitor)
            .map_err(|second_error| {
                ChainError::of(
                    (self.first.name(), first_error),
                    (self.second.name(), second_error),
                )
                .into()
            })
    }
}

#[cfg(all(test, feature = "json"))]
mod tests {
    use super::*;
    use crate::codec::{CodecExt, JsonCodec, decode_value, decode_with};

    /// A codec that only reads the decimal text of a u32 ("plain").
    #[derive(Debug, Clone, Copy)]
    struct Plain;

    impl Format for Plain {
        fn name(&self) -> &'static str {
            "plain"
        }
    }

    impl Decoder<u32> for Plain {
        fn decode(&self, src: &[u8]) -> Result<u32, BoxError> {
            Ok(std::str::from_utf8(src)?.trim_matches('\'').parse()?)
        }
    }

    impl Encoder<u32> for Plain {
        fn encode(&self, item: &u32, dst: &mut BytesMut) -> Result<(), BoxError> {
            dst.extend_from_slice(format!("'{item}'").as_bytes());
            Ok(())
        }
    }

    #[test]
    fn the_first_codec_that_decodes_wins() {
        let chain = JsonCodec.or(Plain);
        assert_eq!(decode_with::<u32, _>(&chain, b"7").ok(), Some(7));
        assert_eq!(decode_with::<u32, _>(&chain, b"'8'").ok(), Some(8));
    }

    #[test]
    fn when_all_fail_every_cause_is_kept() {
        let chain = JsonCodec.or(Plain).or(Plain);
        let err = decode_with::<u32, _>(&chain, b"nope").err();
        let source = err.as_ref().and_then(|e| std::error::Error::source(e));
        let chain_error = source.and_then(|s| s.downcast_ref::<ChainError>());
        let names: Vec<&str> = chain_error
            .map(|c| c.attempts().map(|(n, _)| n).collect())
            .unwrap_or_default();
        assert_eq!(names, ["json", "plain", "plain"]);
        assert!(
            chain_error.is_some_and(|c| c.to_string().starts_with("every codec failed: json: "))
        );
    }

    #[test]
    fn erased_fallback_serves_as_a_default_codec() {
        let chain: &dyn Codec = &JsonCodec.or(JsonCodec);
        assert_eq!(
            decode_value::<Vec<u8>>(chain, b"[1,2]").ok(),
            Some(vec![1, 2])
        );
        assert!(decode_value::<Vec<u8>>(chain, b"\xff").is_err());
    }

    #[test]
    fn a_failed_encode_leaves_no_partial_output() {
        #[derive(Debug)]
        struct Half;
        impl Format for Half {
            fn name(&self) -> &'static str {
                "half"
            }
        }
        impl Encoder<u32> for Half {
            fn encode(&self, _: &u32, dst: &mut BytesMut) -> Result<(), BoxError> {
                dst.extend_from_slice(b"partial");
                Err("no".into())
            }
        }
        let mut dst = BytesMut::from(&b"keep:"[..]);
        assert!(Half.or(Plain).encode(&3, &mut dst).is_ok());
        assert_eq!(&dst[..], b"keep:'3'");
    }
}
