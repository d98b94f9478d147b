//! Minimal MQTT 3.1.1 framing, shared by [`FaultProxy`](crate::proxy::FaultProxy)
//! (to find packet boundaries in a byte stream) and
//! [`MockBroker`](crate::mock::MockBroker) (to read and write whole packets).
//!
//! It parses exactly what tests look at (packet type, flags, packet id, topic,
//! payload, subscribe filters, the CONNECT fields) and deliberately validates
//! little else, so that tests can also build malformed packets.

use std::io;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// CONNECT (client to broker).
pub const CONNECT: u8 = 1;
/// CONNACK (broker to client).
pub const CONNACK: u8 = 2;
/// PUBLISH (either way).
pub const PUBLISH: u8 = 3;
/// PUBACK: QoS 1 acknowledgement.
pub const PUBACK: u8 = 4;
/// PUBREC: QoS 2, first acknowledgement.
pub const PUBREC: u8 = 5;
/// PUBREL: QoS 2, release (flags must be `0010`).
pub const PUBREL: u8 = 6;
/// PUBCOMP: QoS 2, completion.
pub const PUBCOMP: u8 = 7;
/// SUBSCRIBE (flags must be `0010`).
pub const SUBSCRIBE: u8 = 8;
/// SUBACK.
pub const SUBACK: u8 = 9;
/// UNSUBSCRIBE (flags must be `0010`).
pub const UNSUBSCRIBE: u8 = 10;
/// UNSUBACK.
pub const UNSUBACK: u8 = 11;
/// PINGREQ.
pub const PINGREQ: u8 = 12;
/// PINGRESP.
pub const PINGRESP: u8 = 13;
/// DISCONNECT (client to broker).
pub const DISCONNECT: u8 = 14;

/// The largest remaining length MQTT can encode (four length bytes).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// A frame with the reserved packet type 0: every client must treat it as a
/// protocol violation.
pub const MALFORMED_RESERVED_TYPE: &[u8] = &[0x00, 0x00];

/// A PUBLISH whose remaining length runs over five bytes (the maximum is four).
pub const MALFORMED_REMAINING_LENGTH: &[u8] = &[0x30, 0xff, 0xff, 0xff, 0xff, 0x7f];

/// The name of a packet type (`"PUBLISH"`), or `"RESERVED"` for 0 and 15.
pub fn type_name(kind: u8) -> &'static str {
    match kind {
        CONNECT => "CONNECT",
        CONNACK => "CONNACK",
        PUBLISH => "PUBLISH",
        PUBACK => "PUBACK",
        PUBREC => "PUBREC",
        PUBREL => "PUBREL",
        PUBCOMP => "PUBCOMP",
        SUBSCRIBE => "SUBSCRIBE",
        SUBACK => "SUBACK",
        UNSUBSCRIBE => "UNSUBSCRIBE",
        UNSUBACK => "UNSUBACK",
        PINGREQ => "PINGREQ",
        PINGRESP => "PINGRESP",
        DISCONNECT => "DISCONNECT",
        _ => "RESERVED",
    }
}

/// One MQTT packet: the fixed header's first byte and the bytes after the
/// remaining-length field.
#[derive(Clone, PartialEq, Eq)]
pub struct Packet {
    /// Packet type in the high nibble, flags in the low one.
    pub header: u8,
    /// Everything after the remaining-length field.
    pub body: Vec<u8>,
}

/// The fields of a PUBLISH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    /// The topic name.
    pub topic: String,
    /// The application payload.
    pub payload: Vec<u8>,
    /// 0, 1 or 2 (3 makes a malformed packet).
    pub qos: u8,
    /// The packet id (QoS 1 and 2 only; ignored for QoS 0).
    pub pkid: u16,
    /// The DUP flag.
    pub dup: bool,
    /// The RETAIN flag.
    pub retain: bool,
}

impl Publish {
    /// A QoS 0 message, not retained, not a duplicate.
    pub fn new(topic: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        Publish {
            topic: topic.into(),
            payload: payload.into(),
            qos: 0,
            pkid: 0,
            dup: false,
            retain: false,
        }
    }

    /// Sets the QoS and packet id.
    pub fn qos(mut self, qos: u8, pkid: u16) -> Self {
        self.qos = qos;
        self.pkid = pkid;
        self
    }

    /// Sets the DUP flag.
    pub fn dup(mut self, dup: bool) -> Self {
        self.dup = dup;
        self
    }

    /// Sets the RETAIN flag.
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }
}

/// The fields of a CONNECT that tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// The protocol level (4 for MQTT 3.1.1).
    pub protocol_level: u8,
    /// The clean-session flag.
    pub clean_session: bool,
    /// Keep-alive in seconds.
    pub keep_alive: u16,
    /// The client identifier.
    pub client_id: String,
    /// The user name, if any.
    pub username: Option<String>,
    /// The password, if any.
    pub password: Option<Vec<u8>>,
}

impl Packet {
    /// A packet from its first byte and body.
    pub fn new(header: u8, body: impl Into<Vec<u8>>) -> Self {
        Packet {
            header,
            body: body.into(),
        }
    }

    /// The packet type (1 = CONNECT, 3 = PUBLISH, ...; see the constants).
    pub fn kind(&self) -> u8 {
        self.header >> 4
    }

    /// The four flag bits of the fixed header.
    pub fn flags(&self) -> u8 {
        self.header & 0x0f
    }

    /// The DUP flag (meaningful for PUBLISH).
    pub fn dup(&self) -> bool {
        self.header & 0x08 != 0
    }

    /// The QoS bits (meaningful for PUBLISH).
    pub fn qos(&self) -> u8 {
        (self.header >> 1) & 0x03
    }

    /// The RETAIN flag (meaningful for PUBLISH).
    pub fn retain(&self) -> bool {
        self.header & 0x01 != 0
    }

    /// The packet id: of a QoS 1/2 PUBLISH, or of PUBACK, PUBREC, PUBREL, PUBCOMP,
    /// SUBSCRIBE, SUBACK, UNSUBSCRIBE and UNSUBACK. `None` for other packets and
    /// truncated bodies.
    pub fn pkid(&self) -> Option<u16> {
        match self.kind() {
            PUBLISH => {
                if self.qos() == 0 {
                    return None;
                }
                let len = usize::from(read_u16(&self.body, 0)?);
                read_u16(&self.body, 2 + len)
            }
            PUBACK..=UNSUBACK => read_u16(&self.body, 0),
            _ => None,
        }
    }

    /// The fields of a PUBLISH (`None` for other packets or a truncated body).
    pub fn publish(&self) -> Option<Publish> {
        if self.kind() != PUBLISH {
            return None;
        }
        let len = usize::from(read_u16(&self.body, 0)?);
        let topic = String::from_utf8_lossy(self.body.get(2..2 + len)?).into_owned();
        let qos = self.qos();
        let (pkid, at) = if qos == 0 {
            (0, 2 + len)
        } else {
            (read_u16(&self.body, 2 + len)?, 4 + len)
        };
        Some(Publish {
            topic,
            payload: self.body.get(at..)?.to_vec(),
            qos,
            pkid,
            dup: self.dup(),
            retain: self.retain(),
        })
    }

    /// The topic of a PUBLISH.
    pub fn topic(&self) -> Option<String> {
        self.publish().map(|p| p.topic)
    }

    /// The payload of a PUBLISH.
    pub fn payload(&self) -> Option<Vec<u8>> {
        self.publish().map(|p| p.payload)
    }

    /// The (filter, requested QoS) pairs of a SUBSCRIBE.
    pub fn subscribe_filters(&self) -> Option<Vec<(String, u8)>> {
        if self.kind() != SUBSCRIBE {
            return None;
        }
        let mut at = 2;
        let mut filters = Vec::new();
        while at < self.body.len() {
            let (filter, next) = read_str(&self.body, at)?;
            filters.push((filter, *self.body.get(next)?));
            at = next + 1;
        }
        Some(filters)
    }

    /// The filters of an UNSUBSCRIBE.
    pub fn unsubscribe_filters(&self) -> Option<Vec<String>> {
        if self.kind() != UNSUBSCRIBE {
            return None;
        }
        let mut at = 2;
        let mut filters = Vec::new();
        while at < self.body.len() {
            let (filter, next) = read_str(&self.body, at)?;
            filters.push(filter);
            at = next;
        }
        Some(filters)
    }

    /// The fields of a CONNECT (`None` for other packets or a truncated body).
    pub fn connect(&self) -> Option<Connect> {
        if self.kind() != CONNECT {
            return None;
        }
        let (_protocol, at) = read_str(&self.body, 0)?;
        let protocol_level = *self.body.get(at)?;
        let flags = *self.body.get(at + 1)?;
        let keep_alive = read_u16(&self.body, at + 2)?;
        let (client_id, mut at) = read_str(&self.body, at + 4)?;
        if flags & 0x04 != 0 {
            let (_will_topic, next) = read_str(&self.body, at)?;
            let will_len = usize::from(read_u16(&self.body, next)?);
            at = next + 2 + will_len;
        }
        let username = if flags & 0x80 != 0 {
            let (name, next) = read_str(&self.body, at)?;
            at = next;
            Some(name)
        } else {
            None
        };
        let password = if flags & 0x40 != 0 {
            let len = usize::from(read_u16(&self.body, at)?);
            Some(self.body.get(at + 2..at + 2 + len)?.to_vec())
        } else {
            None
        };
        Some(Connect {
            protocol_level,
            clean_session: flags & 0x02 != 0,
            keep_alive,
            client_id,
            username,
            password,
        })
    }

    /// The packet as bytes on the wire.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 5);
        out.push(self.header);
        put_remaining_length(self.body.len(), &mut out);
        out.extend_from_slice(&self.body);
        out
    }

    /// A PUBLISH with these fields.
    pub fn from_publish(publish: &Publish) -> Packet {
        let mut body = Vec::with_capacity(publish.topic.len() + publish.payload.len() + 4);
        put_str(&publish.topic, &mut body);
        if publish.qos > 0 {
            body.extend_from_slice(&publish.pkid.to_be_bytes());
        }
        body.extend_from_slice(&publish.payload);
        let header = (PUBLISH << 4)
            | (u8::from(publish.dup) << 3)
            | ((publish.qos & 0x03) << 1)
            | u8::from(publish.retain);
        Packet { header, body }
    }

    /// PUBACK, PUBREC, PUBREL (with its required flags `0010`), PUBCOMP or
    /// UNSUBACK for `pkid`.
    pub fn ack(kind: u8, pkid: u16) -> Packet {
        let flags = if kind == PUBREL { 0x02 } else { 0 };
        Packet::new((kind << 4) | flags, pkid.to_be_bytes())
    }

    /// CONNACK with the session-present flag and a return code (0 = accepted).
    pub fn connack(session_present: bool, code: u8) -> Packet {
        Packet::new(CONNACK << 4, [u8::from(session_present), code])
    }

    /// SUBACK for `pkid` with one return code per filter (0..=2 granted QoS,
    /// 0x80 failure).
    pub fn suback(pkid: u16, codes: &[u8]) -> Packet {
        let mut body = pkid.to_be_bytes().to_vec();
        body.extend_from_slice(codes);
        Packet::new(SUBACK << 4, body)
    }

    /// PINGRESP.
    pub fn pingresp() -> Packet {
        Packet::new(PINGRESP << 4, Vec::new())
    }
}

impl std::fmt::Debug for Packet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = f.debug_struct(type_name(self.kind()));
        s.field("header", &format_args!("{:#04x}", self.header));
        if let Some(p) = self.publish() {
            s.field("topic", &p.topic)
                .field("qos", &p.qos)
                .field("pkid", &p.pkid)
                .field("dup", &p.dup)
                .field("retain", &p.retain)
                .field("payload", &String::from_utf8_lossy(&p.payload));
        } else if let Some(pkid) = self.pkid() {
            s.field("pkid", &pkid);
            if self.body.len() > 2 {
                s.field("rest", &&self.body[2..]);
            }
        } else {
            s.field("body", &self.body);
        }
        s.finish()
    }
}

fn read_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*bytes.get(at)?, *bytes.get(at + 1)?]))
}

/// A length-prefixed string at `at` and the offset after it.
fn read_str(bytes: &[u8], at: usize) -> Option<(String, usize)> {
    let len = usize::from(read_u16(bytes, at)?);
    let text = bytes.get(at + 2..at + 2 + len)?;
    Some((String::from_utf8_lossy(text).into_owned(), at + 2 + len))
}

/// Appends a length-prefixed string (truncated to 65,535 bytes).
pub(crate) fn put_str(s: &str, out: &mut Vec<u8>) {
    let bytes = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
    out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
    out.extend_from_slice(bytes);
}

/// Appends the variable-length encoding of `len`.
pub(crate) fn put_remaining_length(mut len: usize, out: &mut Vec<u8>) {
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
}

fn invalid(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

/// Takes one whole packet off the front of `buf`, if it holds one.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidData`] when the remaining length runs over four bytes.
pub fn split_packet(buf: &mut Vec<u8>) -> io::Result<Option<Packet>> {
    let Some(&header) = buf.first() else {
        return Ok(None);
    };
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let Some(&byte) = buf.get(at) else {
            return Ok(None);
        };
        len |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte & 0x80 == 0 {
            break;
        }
        if at > 4 {
            return Err(invalid("remaining length longer than four bytes"));
        }
    }
    if buf.len() < at + len {
        return Ok(None);
    }
    let body = buf[at..at + len].to_vec();
    buf.drain(..at + len);
    Ok(Some(Packet { header, body }))
}

/// Reads one packet. Not cancel safe (a cancelled read loses a partial packet);
/// [`MockConnection`](crate::mock::MockConnection) buffers instead.
///
/// # Errors
///
/// End of stream or a broken connection; [`io::ErrorKind::InvalidData`] for a
/// remaining length over four bytes.
pub async fn read_packet<R: AsyncRead + Unpin>(reader: &mut R) -> io::Result<Packet> {
    let header = reader.read_u8().await?;
    let mut len = 0usize;
    for i in 0..4 {
        let byte = reader.read_u8().await?;
        len |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            let mut body = vec![0; len];
            reader.read_exact(&mut body).await?;
            return Ok(Packet { header, body });
        }
    }
    Err(invalid("remaining length longer than four bytes"))
}

/// Writes one packet and flushes.
///
/// # Errors
///
/// A broken connection.
pub async fn write_packet<W: AsyncWrite + Unpin>(
    writer: &mut W,
    packet: &Packet,
) -> io::Result<()> {
    writer.write_all(&packet.encode()).await?;
    writer.flush().await
}

/// The fixed header of a packet seen in a byte stream, and the start of its body.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) header: u8,
    pub(crate) remaining_length: usize,
    /// The first bytes of the body (up to [`HEAD_BYTES`]).
    pub(crate) head: Vec<u8>,
}

/// How much of each body [`Scanner`] keeps (enough for a topic and packet id).
const HEAD_BYTES: usize = 1024;

/// What [`Scanner::feed`] found in a chunk.
#[derive(Debug)]
pub(crate) enum ScanEvent {
    /// A packet starts at this offset of the chunk.
    Start { offset: usize, header: u8 },
    /// A packet ends just before this offset of the chunk.
    End { offset: usize, frame: Frame },
}

#[derive(Debug)]
enum ScanState {
    Header,
    Length {
        header: u8,
        value: usize,
        bytes: usize,
    },
    Body {
        frame: Frame,
        left: usize,
    },
    /// Not MQTT (or a malformed length): stop parsing, keep forwarding.
    Lost,
}

/// Finds packet boundaries in a byte stream fed in arbitrary chunks.
#[derive(Debug)]
pub(crate) struct Scanner {
    state: ScanState,
}

impl Scanner {
    pub(crate) fn new() -> Self {
        Scanner {
            state: ScanState::Header,
        }
    }

    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<ScanEvent> {
        let mut events = Vec::new();
        let mut at = 0;
        while at < chunk.len() {
            match &mut self.state {
                ScanState::Lost => break,
                ScanState::Header => {
                    let header = chunk[at];
                    events.push(ScanEvent::Start { offset: at, header });
                    self.state = ScanState::Length {
                        header,
                        value: 0,
                        bytes: 0,
                    };
                    at += 1;
                }
                ScanState::Length {
                    header,
                    value,
                    bytes,
                } => {
                    let byte = chunk[at];
                    at += 1;
                    *value |= usize::from(byte & 0x7f) << (7 * *bytes);
                    *bytes += 1;
                    if byte & 0x80 != 0 {
                        if *bytes >= 4 {
                            self.state = ScanState::Lost;
                        }
                        continue;
                    }
                    let frame = Frame {
                        header: *header,
                        remaining_length: *value,
                        head: Vec::new(),
                    };
                    if *value == 0 {
                        events.push(ScanEvent::End { offset: at, frame });
                        self.state = ScanState::Header;
                    } else {
                        let left = *value;
                        self.state = ScanState::Body { frame, left };
                    }
                }
                ScanState::Body { frame, left } => {
                    let take = (*left).min(chunk.len() - at);
                    let keep = take.min(HEAD_BYTES.saturating_sub(frame.head.len()));
                    frame.head.extend_from_slice(&chunk[at..at + keep]);
                    at += take;
                    *left -= take;
                    if *left == 0 {
                        let frame = std::mem::replace(
                            frame,
                            Frame {
                                header: 0,
                                remaining_length: 0,
                                head: Vec::new(),
                            },
                        );
                        events.push(ScanEvent::End { offset: at, frame });
                        self.state = ScanState::Header;
                    }
                }
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_round_trips() {
        let p = Publish::new("a/b", b"hello".to_vec())
            .qos(2, 513)
            .dup(true)
            .retain(true);
        let packet = Packet::from_publish(&p);
        assert_eq!(packet.header, 0x3d);
        assert_eq!(packet.pkid(), Some(513));
        assert_eq!(packet.publish(), Some(p));
        let mut wire = packet.encode();
        wire.extend_from_slice(&Packet::ack(PUBREL, 7).encode());
        assert_eq!(split_packet(&mut wire).ok().flatten(), Some(packet));
        let rel = split_packet(&mut wire).ok().flatten();
        assert_eq!(rel.as_ref().map(|r| r.header), Some(0x62));
        assert_eq!(rel.and_then(|r| r.pkid()), Some(7));
        assert!(wire.is_empty());
    }

    #[test]
    fn a_long_remaining_length_is_invalid() {
        let mut wire = MALFORMED_REMAINING_LENGTH.to_vec();
        assert!(split_packet(&mut wire).is_err());
    }

    #[test]
    fn subscribe_and_connect_parse() {
        let mut body = 9u16.to_be_bytes().to_vec();
        put_str("a/#", &mut body);
        body.push(1);
        put_str("b", &mut body);
        body.push(2);
        let sub = Packet::new(0x82, body);
        assert_eq!(sub.pkid(), Some(9));
        assert_eq!(
            sub.subscribe_filters(),
            Some(vec![("a/#".to_owned(), 1), ("b".to_owned(), 2)])
        );

        let mut body = Vec::new();
        put_str("MQTT", &mut body);
        body.extend_from_slice(&[4, 0xc0, 0, 30]);
        put_str("cid", &mut body);
        put_str("user", &mut body);
        put_str("pw", &mut body);
        let connect = Packet::new(0x10, body).connect();
        assert_eq!(
            connect,
            Some(Connect {
                protocol_level: 4,
                clean_session: false,
                keep_alive: 30,
                client_id: "cid".into(),
                username: Some("user".into()),
                password: Some(b"pw".to_vec()),
            })
        );
    }

    #[test]
    fn the_scanner_finds_boundaries_across_chunks() {
        let mut wire = Packet::from_publish(&Publish::new("t", vec![7u8; 300]).qos(1, 4)).encode();
        let first_len = wire.len();
        wire.extend_from_slice(&Packet::pingresp().encode());
        wire.extend_from_slice(&Packet::ack(PUBACK, 4).encode());
        let mut scanner = Scanner::new();
        let mut starts = Vec::new();
        let mut ends = Vec::new();
        let mut base = 0;
        for chunk in wire.chunks(7) {
            for event in scanner.feed(chunk) {
                match event {
                    ScanEvent::Start { offset, header } => starts.push((base + offset, header)),
                    ScanEvent::End { offset, frame } => {
                        ends.push((base + offset, frame.header, frame.head.len()))
                    }
                }
            }
            base += chunk.len();
        }
        assert_eq!(
            starts,
            vec![(0, 0x32), (first_len, 0xd0), (first_len + 2, 0x40)]
        );
        assert_eq!(
            ends,
            vec![
                (first_len, 0x32, first_len - 3),
                (first_len + 2, 0xd0, 0),
                (first_len + 6, 0x40, 2)
            ]
        );
    }
}
