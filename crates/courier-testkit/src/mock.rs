//! A scripted MQTT 3.1.1 broker, for what no real broker does on cue.
//!
//! [`MockBroker`] only listens; each [`accept`](MockBroker::accept) returns a
//! [`MockConnection`] that the test drives step by step: read the client's
//! packets with their parsed fields (type, flags with DUP, packet id, topic,
//! payload, filters), and send anything: PUBLISH with any QoS, DUP flag and
//! packet id, a PUBREL for an id the client never saw, acknowledgements in any
//! order or not at all, malformed frames ([`send_raw`](MockConnection::send_raw)
//! with [`MALFORMED_RESERVED_TYPE`](crate::mqtt::MALFORMED_RESERVED_TYPE), for
//! example). Nothing is answered automatically except PINGREQ (switch that off
//! with [`answer_pings`](MockConnection::answer_pings)).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use courier_testkit::mock::MockBroker;
//! use courier_testkit::mqtt::{PUBLISH, Publish};
//!
//! let broker = MockBroker::start().await?;
//! // point the client at broker.addr() ...
//! let mut conn = broker.accept_with(true).await?; // CONNACK, session present
//! let publish = conn.expect(PUBLISH, Duration::from_secs(5)).await?;
//! assert!(publish.dup());
//! conn.send_publish(&Publish::new("t", "x").qos(2, 7).dup(true)).await?;
//! conn.send_pubrel(99).await?; // an id the client does not know
//! # Ok(())
//! # }
//! ```

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout, timeout_at};

use crate::mqtt::{
    CONNECT, Connect, PINGREQ, PUBACK, PUBCOMP, PUBLISH, PUBREC, PUBREL, Packet, Publish,
    SUBSCRIBE, UNSUBACK, UNSUBSCRIBE, split_packet, type_name,
};

/// How long [`MockBroker::accept`] waits for the CONNECT after the TCP accept.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

fn timed_out(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what)
}

/// A listener on 127.0.0.1 that hands each client connection to the test.
#[derive(Debug)]
pub struct MockBroker {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MockBroker {
    /// Listens on a free port of 127.0.0.1.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start() -> io::Result<MockBroker> {
        Self::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Listens on `addr` (for example a port a client was already given).
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> io::Result<MockBroker> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        Ok(MockBroker { listener, addr })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Accepts a client, reads its CONNECT and answers CONNACK accepted, with
    /// session present = 0.
    ///
    /// # Errors
    ///
    /// See [`accept_with`](Self::accept_with).
    pub async fn accept(&self) -> io::Result<MockConnection> {
        self.accept_with(false).await
    }

    /// Accepts a client, reads its CONNECT (within 5 s) and answers CONNACK
    /// accepted with this session-present flag.
    ///
    /// # Errors
    ///
    /// The first packet is not a CONNECT, none came in time, or the
    /// connection broke.
    pub async fn accept_with(&self, session_present: bool) -> io::Result<MockConnection> {
        let mut conn = self.accept_raw().await?;
        conn.expect(CONNECT, CONNECT_TIMEOUT).await?;
        conn.send(&Packet::connack(session_present, 0)).await?;
        Ok(conn)
    }

    /// Accepts a client and reads nothing: the test answers the CONNECT itself
    /// (for example with a refusal, [`Packet::connack`]`(false, 5)`, or not at
    /// all).
    ///
    /// # Errors
    ///
    /// The accept failed.
    pub async fn accept_raw(&self) -> io::Result<MockConnection> {
        let (stream, peer) = self.listener.accept().await?;
        stream.set_nodelay(true)?;
        Ok(MockConnection {
            stream,
            peer,
            buf: Vec::new(),
            received: Vec::new(),
            connect: None,
            answer_pings: true,
        })
    }

    /// [`accept_with`](Self::accept_with), failing with
    /// [`io::ErrorKind::TimedOut`] when no client came within `within`.
    ///
    /// # Errors
    ///
    /// No client in time, or those of [`accept_with`](Self::accept_with).
    pub async fn accept_timeout(
        &self,
        session_present: bool,
        within: Duration,
    ) -> io::Result<MockConnection> {
        timeout(within, self.accept_with(session_present))
            .await
            .map_err(|_| timed_out(format!("no client connected within {within:?}")))?
    }
}

/// One client connection to a [`MockBroker`], driven by the test.
#[derive(Debug)]
pub struct MockConnection {
    stream: TcpStream,
    peer: SocketAddr,
    buf: Vec<u8>,
    received: Vec<Packet>,
    connect: Option<Connect>,
    answer_pings: bool,
}

impl MockConnection {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The client's CONNECT, once read.
    pub fn connect_packet(&self) -> Option<&Connect> {
        self.connect.as_ref()
    }

    /// Every packet read from the client so far, PINGREQs included.
    pub fn received(&self) -> &[Packet] {
        &self.received
    }

    /// Whether PINGREQ is answered with PINGRESP and kept from
    /// [`recv`](Self::recv) (default true). With false, PINGREQs are returned
    /// like any packet and not answered.
    pub fn answer_pings(&mut self, on: bool) {
        self.answer_pings = on;
    }

    /// The next packet from the client.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::UnexpectedEof`] when the client closed the connection,
    /// [`io::ErrorKind::InvalidData`] for a frame with a remaining length over
    /// four bytes, or a broken connection.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe (bytes are buffered until a packet is whole), except while
    /// a PINGRESP is being written.
    pub async fn recv(&mut self) -> io::Result<Packet> {
        loop {
            if let Some(packet) = split_packet(&mut self.buf)? {
                self.received.push(packet.clone());
                if packet.kind() == CONNECT {
                    self.connect = packet.connect();
                }
                if self.answer_pings && packet.kind() == PINGREQ {
                    self.send(&Packet::pingresp()).await?;
                    continue;
                }
                return Ok(packet);
            }
            let mut chunk = [0u8; 8192];
            let n = self.stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the client closed the connection",
                ));
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// The next packet, or `None` if none came within `within`.
    ///
    /// # Errors
    ///
    /// Those of [`recv`](Self::recv).
    pub async fn recv_timeout(&mut self, within: Duration) -> io::Result<Option<Packet>> {
        match timeout(within, self.recv()).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// The next packet, which must be of type `kind` (see the constants in
    /// [`crate::mqtt`]) and come within `within`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when nothing came in time,
    /// [`io::ErrorKind::InvalidData`] for another packet type, or those of
    /// [`recv`](Self::recv).
    pub async fn expect(&mut self, kind: u8, within: Duration) -> io::Result<Packet> {
        let packet = timeout(within, self.recv()).await.map_err(|_| {
            timed_out(format!(
                "no {} from the client within {within:?}",
                type_name(kind)
            ))
        })??;
        if packet.kind() != kind {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected {}, got {packet:?}", type_name(kind)),
            ));
        }
        Ok(packet)
    }

    /// Reads until a packet of type `kind` comes (the others are skipped, and
    /// kept in [`received`](Self::received)), within `within` in total.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`], or those of [`recv`](Self::recv).
    pub async fn recv_until(&mut self, kind: u8, within: Duration) -> io::Result<Packet> {
        let deadline = Instant::now() + within;
        loop {
            let packet = timeout_at(deadline, self.recv()).await.map_err(|_| {
                timed_out(format!(
                    "no {} from the client within {within:?}",
                    type_name(kind)
                ))
            })??;
            if packet.kind() == kind {
                return Ok(packet);
            }
        }
    }

    /// Succeeds when, for `within`, the client sends nothing (but PINGREQ) and
    /// keeps the connection open.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidData`] naming the packet that came, or those of
    /// [`recv`](Self::recv) (the client closing the connection included).
    pub async fn expect_silence(&mut self, within: Duration) -> io::Result<()> {
        match self.recv_timeout(within).await? {
            None => Ok(()),
            Some(packet) => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("expected silence, got {packet:?}"),
            )),
        }
    }

    /// Waits until the client closes the connection (or resets it), skipping
    /// whatever it sends first.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] when it is still open after `within`.
    pub async fn expect_closed(&mut self, within: Duration) -> io::Result<()> {
        let deadline = Instant::now() + within;
        loop {
            match timeout_at(deadline, self.recv()).await {
                Err(_) => {
                    return Err(timed_out(format!(
                        "the client kept the connection open for {within:?}"
                    )));
                }
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Ok(()),
            }
        }
    }

    /// Sends one packet.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send(&mut self, packet: &Packet) -> io::Result<()> {
        self.send_raw(&packet.encode()).await
    }

    /// Sends raw bytes: a malformed frame, half a packet, several packets at
    /// once.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Sends CONNACK (after [`MockBroker::accept_raw`]).
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_connack(&mut self, session_present: bool, code: u8) -> io::Result<()> {
        self.send(&Packet::connack(session_present, code)).await
    }

    /// Sends a PUBLISH with any QoS, DUP flag, packet id and RETAIN flag.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_publish(&mut self, publish: &Publish) -> io::Result<()> {
        self.send(&Packet::from_publish(publish)).await
    }

    /// Sends PUBACK for `pkid`.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_puback(&mut self, pkid: u16) -> io::Result<()> {
        self.send(&Packet::ack(PUBACK, pkid)).await
    }

    /// Sends PUBREC for `pkid`.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_pubrec(&mut self, pkid: u16) -> io::Result<()> {
        self.send(&Packet::ack(PUBREC, pkid)).await
    }

    /// Sends PUBREL for `pkid` (known to the client or not).
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_pubrel(&mut self, pkid: u16) -> io::Result<()> {
        self.send(&Packet::ack(PUBREL, pkid)).await
    }

    /// Sends PUBCOMP for `pkid`.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_pubcomp(&mut self, pkid: u16) -> io::Result<()> {
        self.send(&Packet::ack(PUBCOMP, pkid)).await
    }

    /// Sends SUBACK for `pkid` with these return codes (0..=2 granted QoS,
    /// 0x80 failure).
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_suback(&mut self, pkid: u16, codes: &[u8]) -> io::Result<()> {
        self.send(&Packet::suback(pkid, codes)).await
    }

    /// Sends UNSUBACK for `pkid`.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn send_unsuback(&mut self, pkid: u16) -> io::Result<()> {
        self.send(&Packet::ack(UNSUBACK, pkid)).await
    }

    /// Sends what a well-behaved broker answers to `packet`: PUBACK or PUBREC
    /// for a QoS 1 or 2 PUBLISH, PUBCOMP for PUBREL, SUBACK granting the
    /// requested QoS for SUBSCRIBE, UNSUBACK for UNSUBSCRIBE; nothing for
    /// other packets.
    ///
    /// # Errors
    ///
    /// A broken connection.
    pub async fn ack(&mut self, packet: &Packet) -> io::Result<()> {
        let Some(pkid) = packet.pkid() else {
            return Ok(());
        };
        match packet.kind() {
            PUBLISH if packet.qos() == 1 => self.send_puback(pkid).await,
            PUBLISH => self.send_pubrec(pkid).await,
            PUBREL => self.send_pubcomp(pkid).await,
            SUBSCRIBE => {
                let codes: Vec<u8> = packet
                    .subscribe_filters()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, qos)| *qos)
                    .collect();
                self.send_suback(pkid, &codes).await
            }
            UNSUBSCRIBE => self.send_unsuback(pkid).await,
            _ => Ok(()),
        }
    }

    /// Closes the connection with FIN.
    ///
    /// # Errors
    ///
    /// The shutdown failed (the connection is dropped anyway).
    pub async fn close(mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// Resets the connection (RST, `SO_LINGER` 0).
    pub fn reset(self) {
        let _ = self.stream.set_zero_linger();
    }
}
