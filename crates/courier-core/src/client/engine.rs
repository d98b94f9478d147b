//! The connection engine: owns the socket and runs rumqttc's protocol state machine
//! ([`MqttState`]) and packet codec over it, in place of rumqttc's `EventLoop`.
//!
//! It keeps the `EventLoop` contract the driver was built on (the same `Event`s, in
//! the same order, the same `pending` list and `clean()` semantics) but batches the
//! I/O: rumqttc writes and flushes every request on its own, one `write` system call
//! per publish, while the engine takes every request that is ready (up to
//! [`WRITE_BATCH`] bytes) and every packet that has arrived, then writes once.
//!
//! Every await point is cancel safe: reads append to the read buffer, writes advance
//! the write buffer, so a cancelled poll loses no byte (rumqttc's is not, #601).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use futures_util::FutureExt;
use rumqttc::{
    ConnAck, Connect, ConnectReturnCode, Event, LastWill, Login, MqttState, Packet, PubComp, QoS,
    Request, StateError,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Sleep;

use super::budget::InboundBudget;
use super::lifecycle::deadline_after;
use super::options::ValidOptions;
use super::publish::wire_qos;
use super::requests::RequestQueue;
use super::transport::{self, TransportStream};

/// Stop taking requests into one write once this many bytes are queued.
const WRITE_BATCH: usize = 64 * 1024;
/// Room made in the read buffer before each read.
const READ_CHUNK: usize = 4 * 1024;
/// A CONNACK: its fixed header (type 2, no flags; two bytes follow), then the
/// session-present flag and the return code.
const CONNACK_HEAD: [u8; 2] = [0x20, 0x02];
const CONNACK_LEN: usize = 4;
/// The most of a peer's non-MQTT answer kept for the error.
const NOT_MQTT_PREVIEW: usize = 64;

/// Why the connection (or an attempt at one) ended.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    #[error("cannot resolve {host}")]
    Dns {
        host: String,
        #[source]
        source: io::Error,
    },
    #[error("network i/o failed: {0}")]
    Io(#[from] io::Error),
    #[cfg(feature = "tls")]
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] io::Error),
    #[error("broker refused the connection: {0:?}")]
    Refused(ConnectReturnCode),
    /// The peer's answer to CONNECT is no CONNACK: its first bytes.
    #[error("not an MQTT broker: it answered CONNECT with \"{}\"", .0.escape_ascii())]
    NotMqtt(Vec<u8>),
    #[error("malformed packet from the broker: {0:?}")]
    Decode(rumqttc::Error),
    /// The broker broke a rule of the protocol.
    #[error("protocol violation by the broker: {0}")]
    Protocol(&'static str),
    #[error("protocol state: {0}")]
    State(#[from] StateError),
    #[error("connection closed by the broker")]
    Closed,
    /// The connection ended between TCP (and TLS) and CONNACK: closed, or broken
    /// with the error.
    #[error("connection ended before CONNACK")]
    ClosedBeforeConnAck(#[source] Option<io::Error>),
    #[error("write did not complete within {0:?}")]
    WriteTimeout(Duration),
    #[error("no PINGRESP within the keep-alive period")]
    KeepAliveTimeout,
    #[error("not connected")]
    NotConnected,
    /// A custom transport could not open its stream.
    #[error("{0}")]
    Transport(io::Error),
    /// The HTTP CONNECT proxy could not be reached, or its answer was no HTTP.
    #[error("proxy {proxy}: {source}")]
    Proxy {
        proxy: String,
        #[source]
        source: io::Error,
    },
    /// The HTTP CONNECT proxy answered with a status other than 2xx.
    #[error("proxy {proxy} refused the tunnel: HTTP {status}")]
    ProxyRefused { proxy: String, status: u16 },
    /// The WebSocket upgrade failed: an HTTP status other than 101, or no HTTP.
    #[cfg(feature = "websocket")]
    #[error("WebSocket handshake failed: {source}")]
    WebSocket {
        status: Option<u16>,
        #[source]
        source: crate::error::BoxError,
    },
}

/// An incoming PUBLISH larger than the maximum packet size: its bytes were skipped
/// as they arrived (never buffered whole), its header kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TooLarge {
    pub(crate) topic: String,
    pub(crate) qos: QoS,
    pub(crate) pkid: u16,
    /// The whole packet's size in bytes.
    pub(crate) size: usize,
}

/// What a poll of the engine gives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Polled {
    /// An event of rumqttc's state machine.
    Wire(Event),
    /// A message too large to take, skipped.
    TooLarge(TooLarge),
}

/// The oversized messages skipped, in their place among rumqttc's events.
#[derive(Debug, Default)]
struct Skipped {
    /// Events taken from `MqttState::events` so far.
    handed: u64,
    /// Each skipped message with the number of events handed out before it.
    queue: VecDeque<(u64, TooLarge)>,
}

/// One live connection: the socket and its buffers.
struct Link {
    socket: Box<dyn TransportStream>,
    read: BytesMut,
    write: BytesMut,
    /// Fires every keep-alive period to send PINGREQ; `None` with keep-alive 0.
    keepalive: Option<Pin<Box<Sleep>>>,
    /// A PINGREQ went out and its PINGRESP has not arrived.
    awaiting_pingresp: bool,
    /// Bytes were read and nothing has been written since: the kernel delays the
    /// TCP acknowledgement of that read.
    unanswered_read: bool,
    /// SUBSCRIBEs and UNSUBSCRIBEs sent and not answered yet.
    awaiting_sub_acks: usize,
    /// Bytes of an oversized packet still to skip as they arrive.
    discard: usize,
}

/// One client's connection: the link while connected, and the protocol state and
/// requests that outlive it across reconnects.
pub(crate) struct Engine {
    /// rumqttc's protocol state: packet ids, in-flight publishes, queued events.
    pub(crate) state: MqttState,
    /// Requests to send first after the next CONNACK (then the queue's).
    pub(crate) pending: VecDeque<Request>,
    requests: Arc<RequestQueue>,
    /// While spent, nothing more is read from the socket.
    budget: Arc<InboundBudget>,
    /// Requests taken from the queue, not yet allowed out (packet ids all in use).
    queued: VecDeque<Request>,
    link: Option<Link>,
    /// Credentials for the next CONNECT.
    pub(crate) login: Option<Login>,
    /// Packet ids in use at once before new publishes wait.
    inflight_limit: u16,
    max_packet_size: usize,
    keep_alive: Duration,
    write_timeout: Duration,
    /// The DISCONNECT was taken: nothing may follow it [MQTT-3.14.4-1].
    disconnecting: bool,
    skipped: Skipped,
}

impl Engine {
    /// `inflight_limit` is the packet-id range: publishes beyond it wait for an ack.
    pub(crate) fn new(
        requests: Arc<RequestQueue>,
        budget: Arc<InboundBudget>,
        inflight_limit: u16,
        opts: &ValidOptions,
    ) -> Self {
        let mut state = MqttState::new(inflight_limit, true);
        // rumqttc preallocates room for 100 events (about 14 KiB); a few suffice.
        state.events = VecDeque::new();
        let b = &opts.builder;
        Engine {
            state,
            pending: VecDeque::new(),
            requests,
            budget,
            queued: VecDeque::new(),
            link: None,
            login: opts
                .static_credentials
                .as_ref()
                .map(|c| Login::new(c.username(), c.password().unwrap_or_default())),
            inflight_limit,
            max_packet_size: b.max_packet_size,
            keep_alive: b.keep_alive,
            write_timeout: b.write_timeout,
            disconnecting: false,
            skipped: Skipped::default(),
        }
    }

    /// Open the connection: TCP, TLS when configured, CONNECT and its CONNACK.
    /// Returns the CONNACK's session-present flag. Cancel safe: nothing is kept
    /// before the CONNACK.
    pub(crate) async fn connect(&mut self, opts: &ValidOptions) -> Result<bool, LinkError> {
        let b = &opts.builder;
        let socket = opts
            .transport
            .connect()
            .await
            .map_err(transport::link_error)?;
        let mut link = Link {
            socket,
            read: BytesMut::new(),
            write: BytesMut::new(),
            keepalive: None,
            awaiting_pingresp: false,
            unanswered_read: false,
            awaiting_sub_acks: 0,
            discard: 0,
        };
        let mut connect = Connect::new(b.client_id.as_str());
        connect.keep_alive = u16::try_from(b.keep_alive.as_secs()).unwrap_or(u16::MAX);
        connect.clean_session = b.clean_session;
        connect.login = self.login.clone();
        connect.last_will = b.last_will.as_ref().map(|will| LastWill {
            topic: will.topic.clone(),
            message: will.payload.clone(),
            qos: wire_qos(will.qos),
            retain: will.retain,
        });
        link.encode(&Packet::Connect(connect), self.max_packet_size)?;
        let ack = link
            .handshake(self.max_packet_size)
            .await
            .map_err(|error| match error {
                // With TLS 1.3 a broker refuses a client certificate (or the lack of
                // one) after the client finished its side of the handshake: the
                // alert arrives with the first read.
                #[cfg(feature = "tls")]
                LinkError::Io(e) if is_tls_error(&e) => LinkError::Tls(e),
                LinkError::Io(e) => LinkError::ClosedBeforeConnAck(Some(e)),
                LinkError::Closed => LinkError::ClosedBeforeConnAck(None),
                other => other,
            })?;
        if ack.code != ConnectReturnCode::Success {
            return Err(LinkError::Refused(ack.code));
        }
        if !self.keep_alive.is_zero() {
            link.keepalive = Some(Box::pin(tokio::time::sleep(self.keep_alive)));
        }
        // Acknowledgements queued since the last connection was lost: no message of
        // this one has been handled yet.
        self.drop_acks();
        self.link = Some(link);
        Ok(ack.session_present)
    }

    /// The next event of the live connection. On an error the connection is closed
    /// and [`clean`](Self::clean)ed. Cancel safe.
    pub(crate) async fn poll(&mut self) -> Result<Polled, LinkError> {
        let result = self.next_event().await;
        if result.is_err() {
            self.clean();
        }
        result
    }

    /// Events read and not handed out yet: the next [`poll`](Self::poll) returns
    /// one without reading the socket.
    pub(crate) fn has_events(&self) -> bool {
        !self.state.events.is_empty() || !self.skipped.queue.is_empty()
    }

    /// The next event read and not handed out yet, in arrival order.
    pub(crate) fn next_buffered(&mut self) -> Option<Polled> {
        let skipped = &mut self.skipped;
        if skipped
            .queue
            .front()
            .is_some_and(|(before, _)| *before <= skipped.handed)
        {
            return skipped.queue.pop_front().map(|(_, t)| Polled::TooLarge(t));
        }
        let event = self.state.events.pop_front()?;
        skipped.handed += 1;
        Some(Polled::Wire(event))
    }

    /// Drop the connection. Unacknowledged publishes and PUBRELs, then every request
    /// not sent yet except acknowledgements, move to `pending`.
    pub(crate) fn clean(&mut self) {
        self.link = None;
        self.pending.extend(self.state.clean());
        self.drop_acks();
        self.pending.append(&mut self.queued);
    }

    /// Drop the acknowledgements (PUBACK, PUBREC) of incoming messages waiting to go
    /// out: they answer PUBLISHes of a connection that is gone. The broker re-sends
    /// those PUBLISHes on the next one [MQTT-4.4.0-1], and the re-sends are answered.
    /// Sent unasked, an acknowledgement can meet a message the broker holds in its
    /// queue: Mosquitto answers such a PUBREC with PUBREL, then sends the message
    /// as a new one, a duplicate (rumqttc's `clean()` drops PUBACKs only).
    fn drop_acks(&mut self) {
        self.requests.take_all(&mut self.queued);
        self.queued
            .retain(|request| !matches!(request, Request::PubAck(_) | Request::PubRec(_)));
    }

    /// A request can be taken now: replays always, new ones while ids are free;
    /// none after the DISCONNECT.
    fn can_take(&self) -> bool {
        if self.disconnecting {
            return false;
        }
        !self.pending.is_empty()
            || (self.state.inflight() < self.inflight_limit && self.state.collision.is_none())
    }

    async fn next_event(&mut self) -> Result<Polled, LinkError> {
        loop {
            // Events are handed out only once what produced them is written.
            let written = self.link.as_ref().is_none_or(|l| l.write.is_empty());
            if written {
                if let Some(event) = self.next_buffered() {
                    return Ok(event);
                }
            }
            // Bytes read with the CONNACK may hold whole packets already.
            if let Some(link) = self.link.as_mut().filter(|l| !l.read.is_empty()) {
                link.receive(&mut self.state, self.max_packet_size, &mut self.skipped)?;
            }
            self.take_ready()?;
            self.flush().await?;
            if let Some(event) = self.next_buffered() {
                return Ok(event);
            }
            let take_new = self.pending.is_empty() && self.queued.is_empty() && self.can_take();
            let keep_alive = self.keep_alive;
            let Engine {
                state,
                requests,
                budget,
                link,
                max_packet_size,
                skipped,
                ..
            } = self;
            let requests = &**requests;
            let budget = &**budget;
            // While the budget is spent, read nothing: what the broker sends waits in
            // the socket (see `budget`).
            let reading = !budget.is_spent();
            let link = link.as_mut().ok_or(LinkError::NotConnected)?;
            let max = *max_packet_size;
            link.ack_unanswered_read(state.inflight() > 0);
            let keepalive = &mut link.keepalive;
            let ping_due = async {
                match keepalive.as_mut() {
                    Some(sleep) => sleep.as_mut().await,
                    None => std::future::pending().await,
                }
            };
            // `pending` is handled by `take_ready` below without waiting.
            tokio::select! {
                filled = fill(&mut link.socket, &mut link.read), if reading => {
                    filled?;
                    link.receive(state, max, skipped)?;
                    link.unanswered_read = true;
                }
                () = std::future::poll_fn(|cx| budget.poll_room(cx)), if !reading => {}
                () = std::future::poll_fn(|cx| requests.poll_ready(cx)), if take_new => {}
                () = ping_due => {
                    if let Some(sleep) = link.keepalive.as_mut() {
                        sleep.as_mut().reset(deadline_after(keep_alive));
                    }
                    if !reading {
                        // The PINGRESP waits unread behind the messages held back;
                        // keep pinging so that the broker keeps the connection.
                        link.awaiting_pingresp = false;
                    }
                    link.ping(max)?;
                }
            }
            requests.stop_waiting();
        }
    }

    /// Encode every request that is ready and allowed, up to [`WRITE_BATCH`] bytes.
    fn take_ready(&mut self) -> Result<(), LinkError> {
        loop {
            let queued = self.link.as_ref().map_or(0, |l| l.write.len());
            if queued >= WRITE_BATCH || !self.can_take() {
                return Ok(());
            }
            let request = match self.pending.pop_front() {
                Some(request) => request,
                None => {
                    if self.queued.is_empty() {
                        self.requests.take_all(&mut self.queued);
                    }
                    match self.queued.pop_front() {
                        Some(request) => request,
                        None => return Ok(()),
                    }
                }
            };
            self.disconnecting = matches!(request, Request::Disconnect(_));
            let link = self.link.as_mut().ok_or(LinkError::NotConnected)?;
            link.send(&mut self.state, request, self.max_packet_size)?;
        }
    }

    /// Write the write buffer out, within the write timeout.
    async fn flush(&mut self) -> Result<(), LinkError> {
        let Some(link) = self.link.as_mut() else {
            return Ok(());
        };
        if link.write.is_empty() {
            return Ok(());
        }
        link.unanswered_read = false;
        // Usually the socket takes it all at once: no timer needed.
        if let Some(done) = link.drain().now_or_never() {
            return done;
        }
        tokio::time::timeout(self.write_timeout, link.drain())
            .await
            .map_err(|_| LinkError::WriteTimeout(self.write_timeout))?
    }
}

impl Link {
    fn encode(&mut self, packet: &Packet, max: usize) -> Result<(), LinkError> {
        packet
            .write(&mut self.write, max)
            .map(drop)
            .map_err(|e| LinkError::State(StateError::Deserialization(e)))
    }

    /// Run `request` through the state machine and queue what it sends.
    fn send(
        &mut self,
        state: &mut MqttState,
        request: Request,
        max: usize,
    ) -> Result<(), LinkError> {
        if let Some(packet) = state.handle_outgoing_packet(request)? {
            if matches!(packet, Packet::Subscribe(_) | Packet::Unsubscribe(_)) {
                self.awaiting_sub_acks += 1;
            }
            self.encode(&packet, max)?;
        }
        Ok(())
    }

    /// Send PINGREQ, or fail when the previous one is still unanswered.
    ///
    /// The engine keeps the keep-alive itself rather than through
    /// `MqttState`, which also drops the connection after two pings while a publish
    /// waits for its packet id to be acknowledged (rumqttc #1014): the broker may
    /// hold one acknowledgement back for long, and the ack watchdog
    /// (`ack_timeout`) is the place to decide how long is too long.
    fn ping(&mut self, max: usize) -> Result<(), LinkError> {
        if self.awaiting_pingresp {
            return Err(LinkError::KeepAliveTimeout);
        }
        self.awaiting_pingresp = true;
        self.encode(&Packet::PingReq, max)
    }

    /// Handle every complete packet in the read buffer, queueing the replies. A
    /// PUBLISH over `max` is skipped and noted in `skipped`.
    fn receive(
        &mut self,
        state: &mut MqttState,
        max: usize,
        skipped: &mut Skipped,
    ) -> Result<(), LinkError> {
        loop {
            if self.discard > 0 {
                let n = self.discard.min(self.read.len());
                self.read.advance(n);
                self.discard -= n;
                if self.discard > 0 {
                    return Ok(());
                }
            }
            if let Some(&first) = self.read.first() {
                check_flags(first)?;
            }
            let packet = match Packet::read(&mut self.read, max) {
                Ok(Packet::Publish(publish)) => {
                    check_topic(&publish.topic)?;
                    Packet::Publish(publish)
                }
                Ok(packet) => packet,
                Err(rumqttc::Error::InsufficientBytes(_)) => return Ok(()),
                Err(rumqttc::Error::PayloadSizeLimitExceeded(_)) => match self.skip_oversized()? {
                    Some(too_large) => {
                        let before = skipped.handed + state.events.len() as u64;
                        skipped.queue.push_back((before, too_large));
                        continue;
                    }
                    None => return Ok(()),
                },
                Err(e) => return Err(LinkError::Decode(e)),
            };
            match &packet {
                Packet::PingResp => self.awaiting_pingresp = false,
                Packet::SubAck(_) | Packet::UnsubAck(_) => {
                    self.awaiting_sub_acks = self.awaiting_sub_acks.saturating_sub(1);
                }
                Packet::PubRel(rel) => {
                    // Every PUBREL is answered with PUBCOMP [MQTT-4.3.3-11], also for
                    // an id this process never saw: the broker re-sends PUBRELs after
                    // a reconnect, even those a previous process had PUBREC'd.
                    // `MqttState` would call those unsolicited and drop the
                    // connection (rumqttc #664), so it never sees PUBREL.
                    self.encode(&Packet::PubComp(PubComp::new(rel.pkid)), max)?;
                    state.events.push_back(Event::Incoming(packet));
                    continue;
                }
                _ => {}
            }
            if let Some(reply) = state.handle_incoming_packet(packet)? {
                self.encode(&reply, max)?;
            }
        }
    }

    /// The read buffer starts with a packet over the maximum size (rumqttc checked
    /// its fixed header). A PUBLISH is skipped: its topic and packet id are read,
    /// once they have arrived (at most 65,541 bytes), then its bytes are dropped,
    /// those still to come as they arrive. Any other packet that large is an
    /// error. `None` while the PUBLISH's header is incomplete.
    fn skip_oversized(&mut self) -> Result<Option<TooLarge>, LinkError> {
        let read = &self.read[..];
        let malformed = |why: &'static str| LinkError::Protocol(why);
        let first = read.first().copied().unwrap_or_default();
        if first >> 4 != 3 {
            return Err(malformed("a packet over the maximum packet size"));
        }
        let qos = match (first >> 1) & 0b11 {
            0 => QoS::AtMostOnce,
            1 => QoS::AtLeastOnce,
            2 => QoS::ExactlyOnce,
            _ => return Err(malformed("a PUBLISH with QoS 3")),
        };
        // The remaining length: 1 to 4 bytes, each but the last with its top bit set.
        let mut remaining = 0usize;
        let mut header = 1;
        for (i, byte) in read.iter().skip(1).take(4).enumerate() {
            remaining |= usize::from(byte & 0x7f) << (7 * i);
            header += 1;
            if byte & 0x80 == 0 {
                break;
            }
        }
        let total = header + remaining;
        let Some(topic_len) = read
            .get(header..header + 2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return Ok(None);
        };
        let id_len = if qos == QoS::AtMostOnce { 0 } else { 2 };
        let known = header + 2 + topic_len + id_len;
        if known > total {
            return Err(malformed("a PUBLISH shorter than its topic"));
        }
        if read.len() < known {
            return Ok(None);
        }
        let topic = std::str::from_utf8(&read[header + 2..header + 2 + topic_len])
            .map_err(|_| malformed("a topic that is not UTF-8"))?
            .to_owned();
        check_topic(&topic)?;
        let pkid = if id_len == 0 {
            0
        } else {
            u16::from_be_bytes([read[known - 2], read[known - 1]])
        };
        let now = total.min(read.len());
        self.read.advance(now);
        self.discard = total - now;
        Ok(Some(TooLarge {
            topic,
            qos,
            pkid,
            size: total,
        }))
    }

    /// Before the engine waits for the socket: if what was last read got no reply
    /// (nothing written since) while the broker owes this client an answer (a
    /// PUBACK, PUBREC or PUBCOMP for a publish in flight, a SUBACK or UNSUBACK),
    /// acknowledge the read at the TCP level now.
    ///
    /// Mosquitto leaves Nagle's algorithm on by default (`set_tcp_nodelay false`): a
    /// small packet (a PUBACK, a SUBACK) waits until the broker's previous segment
    /// is acknowledged. When this client has nothing to send, that acknowledgement
    /// waits for the kernel's delayed-ACK timer (40 ms on Linux), and so does every
    /// answer the broker has queued behind it. Measured before this: of 16 QoS 1
    /// publishes sent at once, the last PUBACK came about 42 ms after the first in
    /// most bursts; and a subscriber whose session backlog arrived before its SUBACK
    /// (its acks wait for a consumer that waits for the SUBACK) started 44 ms late.
    /// A read answered by a write needs nothing: the write carries the ACK. Nor does
    /// one while nothing is owed: a QoS 0 subscriber acknowledging every read at
    /// once cost 3× the client CPU per message.
    fn ack_unanswered_read(&mut self, publishes_in_flight: bool) {
        let answer_due = publishes_in_flight || self.awaiting_sub_acks > 0;
        if std::mem::take(&mut self.unanswered_read) && answer_due {
            self.socket.ack_now();
        }
    }

    /// Send the CONNECT queued and read its answer.
    async fn handshake(&mut self, max: usize) -> Result<ConnAck, LinkError> {
        self.drain().await?;
        self.read_connack(max).await
    }

    /// Read the answer to CONNECT. The broker's first packet must be CONNACK
    /// [MQTT-3.2.0-1], whose bytes are known but for the last two: a peer that sends
    /// anything else is not an MQTT broker, and is reported as soon as its first bytes
    /// show it (a web server that keeps the connection open is no timeout).
    async fn read_connack(&mut self, max: usize) -> Result<ConnAck, LinkError> {
        loop {
            let head = &self.read[..self.read.len().min(CONNACK_HEAD.len())];
            if !CONNACK_HEAD.starts_with(head) {
                return Err(self.not_mqtt());
            }
            if self.read.len() >= CONNACK_LEN {
                // Parsing consumes the bytes: keep them for the error.
                let not_mqtt = self.not_mqtt();
                return match self.next_packet(max) {
                    Ok(Some(Packet::ConnAck(ack))) => Ok(ack),
                    _ => Err(not_mqtt),
                };
            }
            match self.fill().await {
                Err(LinkError::Closed) if !self.read.is_empty() => return Err(self.not_mqtt()),
                filled => filled?,
            }
        }
    }

    /// The peer's answer so far, as a [`LinkError::NotMqtt`].
    fn not_mqtt(&self) -> LinkError {
        let shown = self.read.len().min(NOT_MQTT_PREVIEW);
        LinkError::NotMqtt(self.read[..shown].to_vec())
    }

    fn next_packet(&mut self, max: usize) -> Result<Option<Packet>, LinkError> {
        match Packet::read(&mut self.read, max) {
            Ok(packet) => Ok(Some(packet)),
            Err(rumqttc::Error::InsufficientBytes(_)) => Ok(None),
            Err(e) => Err(LinkError::Decode(e)),
        }
    }

    async fn fill(&mut self) -> Result<(), LinkError> {
        fill(&mut self.socket, &mut self.read).await
    }

    /// Write the whole write buffer. Cancel safe: written bytes leave the buffer.
    async fn drain(&mut self) -> Result<(), LinkError> {
        self.socket.write_all_buf(&mut self.write).await?;
        self.socket.flush().await?;
        Ok(())
    }
}

/// The flags of a packet a broker sends are fixed but for PUBLISH's
/// [MQTT-2.2.2-1/2]: a packet with other flags is a protocol violation, and the
/// connection is closed [MQTT-4.8.0-1]. A PUBLISH must not have both QoS bits
/// [MQTT-3.3.1-4] nor DUP at QoS 0 [MQTT-3.3.1-2].
fn check_flags(first: u8) -> Result<(), LinkError> {
    let flags = first & 0x0f;
    let ok = match first >> 4 {
        // PUBLISH: DUP, QoS, RETAIN.
        3 => {
            let qos = (flags >> 1) & 0b11;
            qos != 3 && !(qos == 0 && flags & 0b1000 != 0)
        }
        // PUBREL (also SUBSCRIBE and UNSUBSCRIBE, which a broker never sends).
        6 | 8 | 10 => flags == 0b0010,
        _ => flags == 0,
    };
    if ok {
        Ok(())
    } else {
        Err(LinkError::Protocol("reserved flags set in a packet header"))
    }
}

/// A topic a broker sends is a topic name: not empty [MQTT-4.7.3-1], no wildcard
/// [MQTT-3.3.2-2] and no NUL [MQTT-4.7.3-2]. Anything else is a protocol
/// violation, and the connection is closed rather than the message delivered to
/// subscriptions that would match it wrongly.
fn check_topic(topic: &str) -> Result<(), LinkError> {
    if topic.is_empty() {
        return Err(LinkError::Protocol("a PUBLISH with an empty topic"));
    }
    if topic.bytes().any(|b| matches!(b, b'+' | b'#' | 0)) {
        return Err(LinkError::Protocol(
            "a PUBLISH whose topic has a wildcard or NUL",
        ));
    }
    Ok(())
}

/// Read what the socket has into `read`. Cancel safe.
async fn fill(socket: &mut Box<dyn TransportStream>, read: &mut BytesMut) -> Result<(), LinkError> {
    read.reserve(READ_CHUNK);
    match socket.read_buf(read).await? {
        0 => Err(LinkError::Closed),
        _ => Ok(()),
    }
}

/// True when `error` carries a TLS failure (a rustls error, such as an alert
/// from the broker).
#[cfg(feature = "tls")]
pub(crate) fn is_tls_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<rustls::Error>())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    use rumqttc::{Outgoing, Publish, QoS as WireQoS};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, DuplexStream};

    use super::*;
    use crate::client::Client;

    /// A socket that counts the write calls that took bytes.
    struct Counted {
        inner: DuplexStream,
        writes: Arc<AtomicUsize>,
        quick_acks: Arc<AtomicUsize>,
    }

    impl AsyncRead for Counted {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_read(cx, buf)
        }
    }

    impl TransportStream for Counted {
        fn ack_now(&self) {
            self.quick_acks.fetch_add(1, Ordering::SeqCst);
        }
    }

    impl AsyncWrite for Counted {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
            if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
                self.writes.fetch_add(1, Ordering::SeqCst);
            }
            polled
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.inner).poll_shutdown(cx)
        }
    }

    impl Engine {
        /// [`poll`](Engine::poll), for a rumqttc event.
        async fn poll_wire(&mut self) -> Result<Event, LinkError> {
            match self.poll().await? {
                Polled::Wire(event) => Ok(event),
                other => panic!("expected a rumqttc event, got {other:?}"),
            }
        }
    }

    struct Rig {
        engine: Engine,
        requests: Arc<RequestQueue>,
        broker: DuplexStream,
        writes: Arc<AtomicUsize>,
        /// Calls of `TransportStream::ack_now`.
        quick_acks: Arc<AtomicUsize>,
    }

    /// An engine attached to an in-memory connection, as if just connected. `pipe` is
    /// the connection's buffer size in bytes.
    fn rig(inflight_limit: u16, pipe: usize) -> Rig {
        rig_with_budget(inflight_limit, pipe, InboundBudget::new(usize::MAX))
    }

    /// [`rig`] whose engine reads only while `budget` has room.
    fn rig_with_budget(inflight_limit: u16, pipe: usize, budget: Arc<InboundBudget>) -> Rig {
        let opts = Client::builder()
            .address("localhost", 1883)
            .client_id("engine-test")
            .keep_alive(Duration::ZERO)
            .validate()
            .unwrap();
        let requests = Arc::new(RequestQueue::default());
        let mut engine = Engine::new(requests.clone(), budget, inflight_limit, &opts);
        let (client_end, broker) = tokio::io::duplex(pipe);
        let writes = Arc::new(AtomicUsize::new(0));
        let quick_acks = Arc::new(AtomicUsize::new(0));
        engine.link = Some(Link {
            socket: Box::new(Counted {
                inner: client_end,
                writes: writes.clone(),
                quick_acks: quick_acks.clone(),
            }),
            read: BytesMut::new(),
            write: BytesMut::new(),
            keepalive: None,
            awaiting_pingresp: false,
            unanswered_read: false,
            awaiting_sub_acks: 0,
            discard: 0,
        });
        Rig {
            engine,
            requests,
            broker,
            writes,
            quick_acks,
        }
    }

    /// Queue three QoS 1 publishes on a rig with two packet ids: ids 1 and 2 go out.
    async fn fill_two_ids(rig: &mut Rig) {
        for _ in 0..3 {
            rig.requests
                .push(publish(b"x", WireQoS::AtLeastOnce))
                .unwrap();
        }
        for pkid in [1, 2] {
            assert_eq!(
                rig.engine.poll_wire().await.unwrap(),
                Event::Outgoing(Outgoing::Publish(pkid))
            );
        }
    }

    /// Write `packet` from the broker's end.
    async fn from_broker(broker: &mut DuplexStream, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, usize::MAX).unwrap();
        broker.write_all(&bytes).await.unwrap();
    }

    fn publish(payload: &[u8], qos: WireQoS) -> Request {
        Request::Publish(Publish::new("t", qos, payload.to_vec()))
    }

    /// Read whole packets from the broker's end until `n` have arrived.
    async fn read_packets(broker: &mut DuplexStream, n: usize) -> Vec<Packet> {
        let mut buf = BytesMut::new();
        let mut packets = Vec::new();
        while packets.len() < n {
            while let Ok(packet) = Packet::read(&mut buf, usize::MAX) {
                packets.push(packet);
            }
            if packets.len() < n {
                broker.read_buf(&mut buf).await.unwrap();
            }
        }
        packets
    }

    #[tokio::test]
    async fn ready_requests_go_out_in_one_write() {
        let mut rig = rig(100, 64 * 1024);
        for _ in 0..10 {
            rig.requests
                .push(publish(b"x", WireQoS::AtLeastOnce))
                .unwrap();
        }
        let first = rig.engine.poll_wire().await.unwrap();
        assert_eq!(first, Event::Outgoing(Outgoing::Publish(1)));
        assert_eq!(rig.writes.load(Ordering::SeqCst), 1);
        let packets = read_packets(&mut rig.broker, 10).await;
        assert!(packets.iter().all(|p| matches!(p, Packet::Publish(_))));
    }

    /// Poll until the engine waits for the socket again (the poll is cancel safe).
    async fn until_idle(engine: &mut Engine) {
        let idle = tokio::time::timeout(Duration::from_millis(50), engine.poll_wire()).await;
        assert!(idle.is_err(), "nothing more to hand out");
    }

    /// The broker sends a QoS 0 message; the engine hands it out and goes idle.
    async fn message_then_idle(rig: &mut Rig) {
        let mut publish = Publish::new("t", WireQoS::AtMostOnce, b"m".to_vec());
        publish.pkid = 0;
        from_broker(&mut rig.broker, Packet::Publish(publish)).await;
        assert!(matches!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Incoming(Packet::Publish(_))
        ));
        until_idle(&mut rig.engine).await;
    }

    #[tokio::test]
    async fn an_unanswered_read_is_acknowledged_at_once_while_the_broker_owes_an_answer() {
        let mut rig = rig(10, 64 * 1024);
        let quick_acks = |rig: &Rig| rig.quick_acks.load(Ordering::SeqCst);

        message_then_idle(&mut rig).await;
        assert_eq!(quick_acks(&rig), 0, "nothing owed: the kernel's timing");

        rig.requests
            .push(publish(b"x", WireQoS::AtLeastOnce))
            .unwrap();
        assert_eq!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Outgoing(Outgoing::Publish(1))
        );
        read_packets(&mut rig.broker, 1).await;
        message_then_idle(&mut rig).await;
        assert_eq!(
            quick_acks(&rig),
            1,
            "a PUBACK is owed: acknowledged at once"
        );

        let mut incoming = Publish::new("t", WireQoS::AtLeastOnce, b"m".to_vec());
        incoming.pkid = 7;
        from_broker(&mut rig.broker, Packet::Publish(incoming)).await;
        rig.engine.poll_wire().await.unwrap();
        rig.requests
            .push(Request::PubAck(rumqttc::PubAck::new(7)))
            .unwrap();
        assert_eq!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Outgoing(Outgoing::PubAck(7))
        );
        until_idle(&mut rig.engine).await;
        assert_eq!(quick_acks(&rig), 1, "the PUBACK written carried the ack");

        from_broker(&mut rig.broker, Packet::PubAck(rumqttc::PubAck::new(1))).await;
        rig.engine.poll_wire().await.unwrap();
        let subscribe = rumqttc::Subscribe::new("t", WireQoS::AtLeastOnce);
        rig.requests.push(Request::Subscribe(subscribe)).unwrap();
        assert_eq!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Outgoing(Outgoing::Subscribe(2))
        );
        message_then_idle(&mut rig).await;
        assert_eq!(
            quick_acks(&rig),
            2,
            "a SUBACK is owed: acknowledged at once"
        );
    }

    #[tokio::test]
    async fn new_publishes_wait_for_a_free_packet_id() {
        let mut rig = rig(2, 64 * 1024);
        fill_two_ids(&mut rig).await;
        let waiting = tokio::time::timeout(Duration::from_millis(50), rig.engine.poll_wire()).await;
        assert!(
            waiting.is_err(),
            "the third publish waits: ids 1 and 2 are in use"
        );
        from_broker(&mut rig.broker, Packet::PubAck(rumqttc::PubAck::new(1))).await;
        let events = [
            rig.engine.poll_wire().await.unwrap(),
            rig.engine.poll_wire().await.unwrap(),
        ];
        assert!(events.contains(&Event::Incoming(Packet::PubAck(rumqttc::PubAck::new(1)))));
        assert!(events.contains(&Event::Outgoing(Outgoing::Publish(1))));
        assert_eq!(read_packets(&mut rig.broker, 3).await.len(), 3);
    }

    #[tokio::test]
    async fn packets_already_buffered_are_handled_without_a_read() {
        let mut rig = rig(10, 1024);
        let mut incoming = Publish::new("t", WireQoS::AtMostOnce, b"hi".to_vec());
        incoming.pkid = 0;
        let link = rig.engine.link.as_mut().unwrap();
        Packet::Publish(incoming.clone())
            .write(&mut link.read, 1024)
            .unwrap();
        // Nothing more arrives: the packet read along with the CONNACK must come out.
        let event = tokio::time::timeout(Duration::from_secs(1), rig.engine.poll_wire())
            .await
            .expect("handled without waiting for the socket")
            .unwrap();
        assert_eq!(event, Event::Incoming(Packet::Publish(incoming)));
    }

    #[tokio::test]
    async fn a_cancelled_poll_loses_no_byte() {
        // A 16-byte pipe: the 1 KiB publish cannot be written in one go.
        let mut rig = rig(10, 16);
        let payload = vec![7u8; 1024];
        rig.requests
            .push(publish(&payload, WireQoS::AtLeastOnce))
            .unwrap();
        let cut = tokio::time::timeout(Duration::from_millis(20), rig.engine.poll_wire()).await;
        assert!(cut.is_err(), "the write is stuck until the broker reads");
        let reader = tokio::spawn(async move {
            let packets = read_packets(&mut rig.broker, 1).await;
            (packets, rig.broker)
        });
        let event = rig.engine.poll_wire().await.unwrap();
        assert_eq!(event, Event::Outgoing(Outgoing::Publish(1)));
        let (packets, _broker) = reader.await.unwrap();
        match &packets[..] {
            [Packet::Publish(p)] => assert_eq!(&p.payload[..], &payload[..]),
            other => panic!("expected the publish intact, got {other:?}"),
        }
    }

    /// Turn the rig's keep-alive on with a short period.
    fn keep_alive(rig: &mut Rig, period: Duration) {
        rig.engine.keep_alive = period;
        if let Some(link) = rig.engine.link.as_mut() {
            link.keepalive = Some(Box::pin(tokio::time::sleep(period)));
        }
    }

    #[tokio::test]
    async fn an_unanswered_ping_ends_the_connection() {
        let mut rig = rig(10, 1024);
        keep_alive(&mut rig, Duration::from_millis(20));
        let ended = tokio::time::timeout(Duration::from_secs(2), rig.engine.poll_wire())
            .await
            .expect("the connection ends at the second period");
        assert!(
            matches!(ended, Err(LinkError::KeepAliveTimeout)),
            "{ended:?}"
        );
        assert_eq!(
            read_packets(&mut rig.broker, 1).await,
            vec![Packet::PingReq]
        );
    }

    #[tokio::test]
    async fn answered_pings_keep_the_connection_with_a_publish_parked() {
        let mut rig = rig(2, 1024);
        fill_two_ids(&mut rig).await;
        // Id 2 is acknowledged, id 1 never is: the third publish gets id 1 again and
        // is parked (rumqttc's event loop would drop the connection at the second
        // ping after that).
        from_broker(&mut rig.broker, Packet::PubAck(rumqttc::PubAck::new(2))).await;
        keep_alive(&mut rig, Duration::from_millis(20));
        let mut broker = rig.broker;
        let pings = Arc::new(AtomicUsize::new(0));
        let counted = pings.clone();
        let answering = tokio::spawn(async move {
            let mut buf = BytesMut::new();
            let mut pong = BytesMut::new();
            Packet::PingResp.write(&mut pong, 16).unwrap();
            while broker.read_buf(&mut buf).await.is_ok_and(|n| n > 0) {
                while let Ok(packet) = Packet::read(&mut buf, usize::MAX) {
                    if packet == Packet::PingReq {
                        counted.fetch_add(1, Ordering::SeqCst);
                        broker.write_all(&pong).await.unwrap();
                    }
                }
            }
        });
        let mut events = Vec::new();
        let until = tokio::time::Instant::now() + Duration::from_millis(300);
        while let Ok(polled) = tokio::time::timeout_at(until, rig.engine.poll_wire()).await {
            events.push(polled.unwrap());
        }
        assert!(
            events.contains(&Event::Outgoing(Outgoing::AwaitAck(1))),
            "{events:?}"
        );
        assert!(rig.engine.state.collision.is_some(), "still parked");
        assert!(
            events.contains(&Event::Incoming(Packet::PingResp)),
            "{events:?}"
        );
        assert!(
            pings.load(Ordering::SeqCst) >= 5,
            "a ping every 20 ms for 300 ms"
        );
        answering.abort();
    }

    #[tokio::test]
    async fn a_pubrel_for_an_unknown_id_gets_its_pubcomp() {
        let mut rig = rig(10, 1024);
        from_broker(&mut rig.broker, Packet::PubRel(rumqttc::PubRel::new(42))).await;
        assert_eq!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Incoming(Packet::PubRel(rumqttc::PubRel::new(42)))
        );
        assert_eq!(
            read_packets(&mut rig.broker, 1).await,
            vec![Packet::PubComp(PubComp::new(42))]
        );
    }

    #[tokio::test]
    async fn acknowledgements_are_not_replayed_on_the_next_connection() {
        let mut rig = rig(10, 1024);
        for request in [
            Request::PubRec(rumqttc::PubRec::new(3)),
            publish(b"x", WireQoS::AtLeastOnce),
            Request::PubAck(rumqttc::PubAck::new(4)),
        ] {
            rig.requests.push(request).unwrap();
        }
        rig.engine.clean();
        assert_eq!(
            Vec::from(rig.engine.pending.clone()),
            vec![publish(b"x", WireQoS::AtLeastOnce)]
        );
    }

    #[tokio::test]
    async fn nothing_is_written_after_the_disconnect() {
        let mut rig = rig(10, 1024);
        for request in [
            Request::Disconnect(rumqttc::Disconnect),
            publish(b"late", WireQoS::AtMostOnce),
            Request::PubAck(rumqttc::PubAck::new(4)),
        ] {
            rig.requests.push(request).unwrap();
        }
        assert_eq!(
            rig.engine.poll_wire().await.unwrap(),
            Event::Outgoing(Outgoing::Disconnect)
        );
        until_idle(&mut rig.engine).await;
        drop(rig.engine);
        let mut rest = Vec::new();
        rig.broker.read_to_end(&mut rest).await.unwrap();
        let mut bytes = BytesMut::from(&rest[..]);
        assert_eq!(
            Packet::read(&mut bytes, usize::MAX).unwrap(),
            Packet::Disconnect
        );
        assert!(
            bytes.is_empty(),
            "{} bytes after the DISCONNECT",
            bytes.len()
        );
    }

    /// A PUBLISH over the limit between two small ones, written in small pieces:
    /// the engine skips it without buffering it and hands it out in its place.
    #[tokio::test]
    async fn an_oversized_publish_is_skipped_in_its_place() {
        let mut rig = rig(10, 64 * 1024);
        rig.engine.max_packet_size = 1024;
        let mut bytes = BytesMut::new();
        for (pkid, size) in [(1u16, 10usize), (2, 4000), (3, 10)] {
            let mut publish = Publish::new("big/t", WireQoS::AtLeastOnce, vec![b'x'; size]);
            publish.pkid = pkid;
            Packet::Publish(publish)
                .write(&mut bytes, usize::MAX)
                .unwrap();
        }
        let broker = &mut rig.broker;
        let writer = async move {
            for chunk in bytes.chunks(300) {
                broker.write_all(chunk).await.unwrap();
                tokio::task::yield_now().await;
            }
        };
        let mut polled = Vec::new();
        let reader = async {
            while polled.len() < 3 {
                polled.push(rig.engine.poll().await.unwrap());
            }
        };
        tokio::join!(writer, reader);
        let pkids: Vec<_> = polled
            .iter()
            .map(|p| match p {
                Polled::Wire(Event::Incoming(Packet::Publish(p))) => (p.pkid, false),
                Polled::TooLarge(t) => (t.pkid, true),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(pkids, vec![(1, false), (2, true), (3, false)]);
        let Polled::TooLarge(big) = &polled[1] else {
            unreachable!()
        };
        assert_eq!(big.topic, "big/t");
        assert_eq!(big.qos, WireQoS::AtLeastOnce);
        assert!(big.size > 4000, "{}", big.size);
        let link = rig.engine.link.as_ref().unwrap();
        assert!(link.read.capacity() < 4000, "never buffered whole");
    }

    #[tokio::test]
    async fn an_oversized_packet_other_than_publish_ends_the_connection() {
        let mut rig = rig(10, 64 * 1024);
        rig.engine.max_packet_size = 64;
        // A SUBACK claiming 1,000 bytes.
        rig.broker
            .write_all(&[0x90, 0xe8, 0x07, 0, 1])
            .await
            .unwrap();
        let ended = rig.engine.poll().await;
        assert!(matches!(ended, Err(LinkError::Protocol(_))), "{ended:?}");
    }

    /// What a broker may not send: each ends the connection as a protocol error.
    #[tokio::test]
    async fn reserved_flags_and_invalid_topics_end_the_connection() {
        let publish = |topic: &[u8]| {
            let mut bytes = vec![0x30, (2 + topic.len() + 1) as u8, 0, topic.len() as u8];
            bytes.extend_from_slice(topic);
            bytes.push(b'x');
            bytes
        };
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("PUBACK with flags", vec![0x41, 0x02, 0x00, 0x01]),
            ("PUBREL without its flag", vec![0x60, 0x02, 0x00, 0x01]),
            ("PINGRESP with flags", vec![0xd8, 0x00]),
            ("PUBLISH QoS 0 with DUP", {
                let mut p = publish(b"t");
                p[0] |= 0x08;
                p
            }),
            ("PUBLISH with QoS 3", {
                let mut p = publish(b"t");
                p[0] |= 0x06;
                p
            }),
            ("empty topic", publish(b"")),
            ("wildcard +", publish(b"a/+")),
            ("wildcard #", publish(b"a/#")),
            ("NUL", publish(b"a\0b")),
        ];
        for (case, bytes) in cases {
            let mut rig = rig(10, 1024);
            rig.broker.write_all(&bytes).await.unwrap();
            let ended = rig.engine.poll().await;
            assert!(
                matches!(ended, Err(LinkError::Protocol(_))),
                "{case}: {ended:?}"
            );
        }
        let mut rig = rig(10, 1024);
        rig.broker.write_all(&publish(b"a/b")).await.unwrap();
        assert!(matches!(
            rig.engine.poll().await,
            Ok(Polled::Wire(Event::Incoming(Packet::Publish(_))))
        ));
    }

    #[tokio::test]
    async fn a_spent_budget_stops_reading_but_not_pinging() {
        use crate::codec::JsonCodec;
        use crate::message::{Message, MessageParts};

        let budget = InboundBudget::new(1);
        let message = Message::from_parts(MessageParts::new("t", "x"), Arc::new(JsonCodec));
        let charge = budget.charge(&message);
        let mut rig = rig_with_budget(10, 64 * 1024, budget);
        keep_alive(&mut rig, Duration::from_millis(20));
        let mut incoming = Publish::new("t", WireQoS::AtMostOnce, b"m".to_vec());
        incoming.pkid = 0;
        from_broker(&mut rig.broker, Packet::Publish(incoming)).await;
        // Three keep-alive periods without a PINGRESP: pings go on, no timeout.
        let idle = tokio::time::timeout(Duration::from_millis(70), rig.engine.poll()).await;
        assert!(idle.is_err(), "nothing read while the budget is spent");
        let pings = read_packets(&mut rig.broker, 3).await;
        assert!(pings.iter().all(|p| *p == Packet::PingReq), "{pings:?}");
        drop(charge);
        assert!(matches!(
            rig.engine.poll().await.unwrap(),
            Polled::Wire(Event::Incoming(Packet::Publish(_)))
        ));
    }
}
