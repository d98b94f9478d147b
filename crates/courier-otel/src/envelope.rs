//! The envelope: message properties (trace context) carried inside the payload, for
//! MQTT 3.1.1, which has no headers. Opt-in: every consumer of an enveloped topic
//! must open the envelope (install [`CourierOtel`](crate::CourierOtel) with
//! [`envelope(true)`](crate::CourierOtel::envelope), add [`EnvelopeLayer`] as a
//! handler layer, or call [`open_message`] on messages from a `Subscription`).
//!
//! # Format, version 1
//!
//! | bytes | content |
//! |---|---|
//! | 4 | magic: `00 43 45 56` (NUL, `C`, `E`, `V`) |
//! | 1 | format version: `01` |
//! | 2 | number of properties, big-endian |
//! | per property | key length (2 bytes, big-endian), key (UTF-8), value length (2 bytes, big-endian), value (UTF-8) |
//! | rest | the original payload, byte for byte |
//!
//! A publish without properties is sent unchanged: the envelope costs nothing when
//! there is no trace context to carry. The magic starts with a NUL byte, which no
//! JSON, text or Protocol Buffers payload starts with. A payload that does not start
//! with the magic, has another version, or does not parse is passed through
//! untouched.
//!
//! # MQTT 5
//!
//! The envelope only exists because MQTT 3.1.1 has nowhere else to put properties.
//! Under MQTT 5 the client will send [`PublishRequest::properties`] as user
//! properties and fill [`Message::properties`] from them; the trace middleware
//! already reads and writes those lists, so user code does not change. Turn the
//! envelope off then (the handler side may keep it on while old publishers remain:
//! it passes non-enveloped messages through).

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use courier_core::client::middleware::{Handler, Layer, PublishRequest, Publisher};
use courier_core::{BoxError, Client, Message, PublishError};

/// The 4 bytes every envelope starts with.
pub const MAGIC: [u8; 4] = *b"\0CEV";
/// The format version this crate writes (and the only one it reads).
pub const VERSION: u8 = 1;

/// Why properties could not be put in an envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// A key or value is longer than 65,535 bytes.
    PropertyTooLong {
        /// The property's key (truncated to 64 bytes).
        key: String,
    },
    /// More than 65,535 properties.
    TooManyProperties(usize),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::PropertyTooLong { key } => {
                write!(f, "envelope property {key:?} is longer than 65535 bytes")
            }
            EnvelopeError::TooManyProperties(n) => {
                write!(f, "{n} envelope properties: at most 65535")
            }
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// True when `payload` starts with the envelope's magic and version.
pub fn is_envelope(payload: &[u8]) -> bool {
    payload.len() >= 7 && payload[..4] == MAGIC && payload[4] == VERSION
}

/// Wrap `body` in an envelope carrying `properties`.
///
/// # Errors
///
/// When a key or value is longer than 65,535 bytes, or there are more than 65,535
/// properties.
pub fn seal(properties: &[(String, String)], body: &[u8]) -> Result<Bytes, EnvelopeError> {
    let count = u16::try_from(properties.len())
        .map_err(|_| EnvelopeError::TooManyProperties(properties.len()))?;
    let header: usize = properties.iter().map(|(k, v)| 4 + k.len() + v.len()).sum();
    let mut out = BytesMut::with_capacity(7 + header + body.len());
    out.put_slice(&MAGIC);
    out.put_u8(VERSION);
    out.put_u16(count);
    for (key, value) in properties {
        for field in [key, value] {
            let len = u16::try_from(field.len()).map_err(|_| EnvelopeError::PropertyTooLong {
                key: truncate(key, 64).to_owned(),
            })?;
            out.put_u16(len);
            out.put_slice(field.as_bytes());
        }
    }
    out.put_slice(body);
    Ok(out.freeze())
}

/// Unwrap an envelope: its properties and the original payload (sharing `payload`'s
/// memory). `None` when `payload` is not an envelope this version reads.
pub fn open(payload: &Bytes) -> Option<(Vec<(String, String)>, Bytes)> {
    if !is_envelope(payload) {
        return None;
    }
    let mut at = 5;
    let read_u16 = |at: &mut usize| -> Option<usize> {
        let bytes = payload.get(*at..*at + 2)?;
        *at += 2;
        Some(usize::from(u16::from_be_bytes([bytes[0], bytes[1]])))
    };
    let read_str = |at: &mut usize| -> Option<String> {
        let len = read_u16(at)?;
        let bytes = payload.get(*at..*at + len)?;
        *at += len;
        String::from_utf8(bytes.to_vec()).ok()
    };
    let count = read_u16(&mut at)?;
    let mut properties = Vec::with_capacity(count.min(64));
    for _ in 0..count {
        let key = read_str(&mut at)?;
        let value = read_str(&mut at)?;
        properties.push((key, value));
    }
    Some((properties, payload.slice(at..)))
}

/// `message` with its envelope opened: the original payload, and the envelope's
/// properties after any the message already had. `None` when the payload is not an
/// envelope.
pub fn open_message(message: &Message) -> Option<Message> {
    let (properties, body) = open(message.payload())?;
    let mut parts = message.to_parts();
    parts.payload = body;
    parts.properties.extend(properties);
    Some(message.with_parts(parts))
}

fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The envelope as middleware: as a publish layer it moves
/// [`PublishRequest::properties`] into the payload (when there are any), as a
/// handler layer it opens enveloped messages and puts the properties back on the
/// [`Message`]. [`CourierOtel::install`](crate::CourierOtel::install) places it
/// innermost on publish (after the trace context is injected) and outermost on
/// handlers (before it is extracted).
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvelopeLayer {
    _private: (),
}

impl EnvelopeLayer {
    /// The layer.
    pub fn new() -> Self {
        EnvelopeLayer { _private: () }
    }
}

impl<S> Layer<S> for EnvelopeLayer {
    type Service = Enveloped<S>;

    fn layer(&self, inner: S) -> Enveloped<S> {
        Enveloped { inner }
    }
}

/// The middleware [`EnvelopeLayer`] builds: a [`Publisher`] that seals, a
/// [`Handler`] that opens.
#[derive(Debug, Clone)]
pub struct Enveloped<S> {
    inner: S,
}

impl<S> Enveloped<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Publisher> Publisher for Enveloped<S> {
    async fn publish(&self, mut request: PublishRequest) -> Result<(), PublishError> {
        if !request.properties.is_empty() {
            let properties = std::mem::take(&mut request.properties);
            request.payload = seal(&properties, &request.payload)
                .map_err(|e| PublishError::Middleware(Box::new(e)))?;
        }
        self.inner.publish(request).await
    }
}

impl<S: Handler> Handler for Enveloped<S> {
    async fn handle(&self, client: Client, message: Message) -> Result<(), BoxError> {
        let message = open_message(&message).unwrap_or(message);
        self.inner.handle(client, message).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use courier_core::{JsonCodec, MessageParts};

    use super::*;

    fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn seal_then_open_round_trips() {
        let p = props(&[
            ("traceparent", "00-ab-cd-01"),
            ("k", ""),
            ("ключ", "значение"),
        ]);
        let sealed = seal(&p, b"{\"id\":1}").unwrap_or_default();
        assert!(is_envelope(&sealed));
        assert_eq!(&sealed[..5], b"\0CEV\x01");
        let (back, body) = open(&sealed).unwrap_or_default();
        assert_eq!(back, p);
        assert_eq!(&body[..], b"{\"id\":1}");
    }

    #[test]
    fn exact_layout() {
        let sealed = seal(&props(&[("a", "bc")]), b"xy").unwrap_or_default();
        assert_eq!(
            &sealed[..],
            b"\0CEV\x01\x00\x01\x00\x01a\x00\x02bcxy".as_slice()
        );
        let empty = seal(&[], b"").unwrap_or_default();
        assert_eq!(&empty[..], b"\0CEV\x01\x00\x00".as_slice());
        assert_eq!(open(&empty), Some((Vec::new(), Bytes::new())));
    }

    #[test]
    fn other_payloads_pass_through() {
        for payload in [
            &b""[..],
            b"{\"json\":true}",
            b"\0CEV",
            b"\0CEV\x02\x00\x00body",
            // Claims one property but is cut short.
            b"\0CEV\x01\x00\x01\x00\x05ab",
            // Invalid UTF-8 key.
            b"\0CEV\x01\x00\x01\x00\x01\xff\x00\x00",
        ] {
            assert_eq!(open(&Bytes::copy_from_slice(payload)), None, "{payload:?}");
        }
    }

    #[test]
    fn oversized_properties_are_refused() {
        let long = "x".repeat(70_000);
        assert!(matches!(
            seal(&props(&[("k", &long)]), b""),
            Err(EnvelopeError::PropertyTooLong { .. })
        ));
    }

    #[test]
    fn open_message_restores_payload_and_properties() {
        let sealed = seal(&props(&[("traceparent", "tp")]), b"hello").unwrap_or_default();
        let mut parts = MessageParts::new("t", sealed);
        parts.properties = props(&[("existing", "1")]);
        let msg = Message::from_parts(parts, Arc::new(JsonCodec));
        let opened = open_message(&msg).unwrap_or(msg);
        assert_eq!(&opened.payload()[..], b"hello");
        assert_eq!(opened.property("traceparent"), Some("tp"));
        assert_eq!(opened.property("existing"), Some("1"));
        assert_eq!(opened.topic(), "t");
    }
}
