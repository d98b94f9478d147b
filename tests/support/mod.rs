#![allow(
    clippy::panic,
    reason = "test support: a failed expectation fails the test"
)]
//! Helpers shared by the integration tests: a broker per test, client builders with
//! test-friendly timings, and message collection with deadlines.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use courier::{Backoff, ClientBuilder, Message, Subscription};
pub use courier_testkit::{BrokerKind, BrokerOptions, TestBroker};

/// Start the broker the environment asks for (`COURIER_TEST_BROKER`).
///
/// # Panics
///
/// When no broker can be started: the test cannot run.
pub async fn broker() -> TestBroker {
    broker_with(BrokerOptions::new()).await
}

/// Start a broker with options.
///
/// # Panics
///
/// When no broker can be started: the test cannot run.
pub async fn broker_with(options: BrokerOptions) -> TestBroker {
    match TestBroker::start_with(options).await {
        Ok(broker) => broker,
        Err(e) => panic!("cannot start a test broker: {e}"),
    }
}

/// A unique client id for this process.
pub fn client_id(name: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A builder pointed at `broker`, with a unique client id, a clean session and quick
/// reconnects.
pub fn client(broker: &TestBroker, name: &str) -> ClientBuilder {
    courier::Client::builder()
        .address(broker.host(), broker.port())
        .client_id(client_id(name))
        .clean_session(true)
        .reconnect_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .start_backoff(Backoff::exponential(
            Duration::from_millis(50),
            Duration::from_millis(500),
        ))
        .connect_timeout(Duration::from_secs(5))
}

/// Receive `n` messages or fail after `within`.
///
/// # Panics
///
/// When fewer than `n` messages arrive in time.
pub async fn recv_n(sub: &mut Subscription, n: usize, within: Duration) -> Vec<Message> {
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + within;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, sub.recv()).await {
            Ok(Some(msg)) => got.push(msg),
            Ok(None) => panic!("subscription ended after {} of {n} messages", got.len()),
            Err(_) => panic!("only {} of {n} messages within {within:?}", got.len()),
        }
    }
    got
}

/// Assert that nothing arrives on `sub` for `quiet`.
///
/// # Panics
///
/// When a message arrives.
pub async fn assert_silent(sub: &mut Subscription, quiet: Duration) {
    if let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.recv()).await {
        panic!("expected no message, got {msg:?}");
    }
}

/// Run `f` only with a real Mosquitto; print why it is skipped otherwise.
pub fn needs_mosquitto(broker: &TestBroker, test: &str) -> bool {
    !broker.skip_unless_restartable(test)
}

/// True when the suite runs against Mosquitto; otherwise prints why `test` is skipped.
/// For tests that need Mosquitto before a broker is started (e.g. password files).
pub fn mosquitto_mode(test: &str) -> bool {
    let mosquitto = matches!(
        courier_testkit::BrokerKind::from_env(),
        Ok(courier_testkit::BrokerKind::Mosquitto)
    );
    if !mosquitto {
        eprintln!("SKIP {test}: needs a real Mosquitto, COURIER_TEST_BROKER=embedded");
    }
    mosquitto
}

/// Everything `sub` receives until it stays quiet for `quiet`, as topics with
/// consecutive repeats removed. MQTT lets a broker send one copy per matching
/// subscription (rumqttd does, Mosquitto 2 does not); this compares routing
/// regardless.
pub async fn topics_until_quiet(sub: &mut Subscription, quiet: Duration) -> Vec<String> {
    let mut topics: Vec<String> = Vec::new();
    while let Ok(Some(msg)) = tokio::time::timeout(quiet, sub.recv()).await {
        if topics.last().map(String::as_str) != Some(msg.topic()) {
            topics.push(msg.topic().to_owned());
        }
    }
    topics
}

/// Waits for the next `Connected` event and returns its `session_present`.
///
/// # Panics
///
/// When none comes within `within`.
pub async fn next_connected(events: &mut courier::EventStream, within: Duration) -> bool {
    use futures_util::StreamExt;
    let found = tokio::time::timeout(within, async {
        while let Some(e) = events.next().await {
            if let courier::Event::Connected { session_present } = e {
                return Some(session_present);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(present)) => present,
        Ok(None) => panic!("the event stream ended"),
        Err(_) => panic!("no connect within {within:?}"),
    }
}

/// Minimal MQTT 3.1.1 framing for scripted brokers: for what no real broker will do
/// on cue (withhold acks, resend QoS 2, send an unknown PUBREL, refuse a filter).
pub mod wire {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// One packet: the first byte (type and flags) and the rest after the length.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Packet {
        /// Type in the high nibble, flags in the low one.
        pub header: u8,
        /// Everything after the remaining-length field.
        pub body: Vec<u8>,
    }

    impl Packet {
        /// The packet type (1 = CONNECT, 3 = PUBLISH, 8 = SUBSCRIBE, ...).
        pub fn kind(&self) -> u8 {
            self.header >> 4
        }

        /// For a PUBLISH: (dup, qos, topic, packet id, payload).
        pub fn publish(&self) -> Option<(bool, u8, String, u16, Vec<u8>)> {
            if self.kind() != 3 {
                return None;
            }
            let qos = (self.header >> 1) & 3;
            let len = usize::from(u16::from_be_bytes([
                *self.body.first()?,
                *self.body.get(1)?,
            ]));
            let topic = String::from_utf8(self.body.get(2..2 + len)?.to_vec()).ok()?;
            let mut at = 2 + len;
            let pkid = if qos > 0 {
                at += 2;
                u16::from_be_bytes([self.body[at - 2], self.body[at - 1]])
            } else {
                0
            };
            Some((
                self.header & 0x08 != 0,
                qos,
                topic,
                pkid,
                self.body.get(at..)?.to_vec(),
            ))
        }

        /// The packet id of a QoS 1/2 PUBLISH (0 for anything else).
        pub fn pkid_of_publish(&self) -> u16 {
            self.publish().map_or(0, |p| p.3)
        }

        /// The packet id of an ack-like packet (first two body bytes).
        pub fn pkid(&self) -> u16 {
            u16::from_be_bytes([self.body[0], self.body[1]])
        }
    }

    /// Read one packet.
    ///
    /// # Errors
    ///
    /// When the connection closes or breaks.
    pub async fn read(socket: &mut TcpStream) -> std::io::Result<Packet> {
        let header = socket.read_u8().await?;
        let (mut len, mut shift) = (0usize, 0);
        loop {
            let b = socket.read_u8().await?;
            len |= usize::from(b & 0x7f) << shift;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let mut body = vec![0; len];
        socket.read_exact(&mut body).await?;
        Ok(Packet { header, body })
    }

    /// Write one packet.
    ///
    /// # Errors
    ///
    /// When the connection breaks.
    pub async fn write(socket: &mut TcpStream, header: u8, body: &[u8]) -> std::io::Result<()> {
        let mut out = vec![header];
        let mut len = body.len();
        loop {
            let mut b = (len % 128) as u8;
            len /= 128;
            if len > 0 {
                b |= 0x80;
            }
            out.push(b);
            if len == 0 {
                break;
            }
        }
        out.extend_from_slice(body);
        socket.write_all(&out).await
    }

    /// A QoS 1/2 PUBLISH from the broker.
    ///
    /// # Errors
    ///
    /// When the connection breaks.
    pub async fn publish(
        socket: &mut TcpStream,
        topic: &str,
        qos: u8,
        pkid: u16,
        dup: bool,
        payload: &[u8],
    ) -> std::io::Result<()> {
        let mut body = (topic.len() as u16).to_be_bytes().to_vec();
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&pkid.to_be_bytes());
        body.extend_from_slice(payload);
        write(
            socket,
            0x30 | (qos << 1) | if dup { 0x08 } else { 0 },
            &body,
        )
        .await
    }

    /// Accept a client, read its CONNECT and answer CONNACK with `session_present`.
    ///
    /// # Errors
    ///
    /// When the client does not send CONNECT first, or the connection breaks.
    pub async fn accept(
        listener: &TcpListener,
        session_present: bool,
    ) -> std::io::Result<TcpStream> {
        let (mut socket, _) = listener.accept().await?;
        let connect = read(&mut socket).await?;
        if connect.kind() != 1 {
            return Err(std::io::Error::other(format!(
                "expected CONNECT, got {connect:?}"
            )));
        }
        write(&mut socket, 0x20, &[u8::from(session_present), 0]).await?;
        Ok(socket)
    }

    /// Read packets until one satisfies `want`, answering PINGREQ on the way.
    ///
    /// # Errors
    ///
    /// When the connection closes first.
    pub async fn read_until(
        socket: &mut TcpStream,
        want: impl Fn(&Packet) -> bool,
    ) -> std::io::Result<Packet> {
        loop {
            let p = read(socket).await?;
            if p.kind() == 12 {
                write(socket, 0xd0, &[]).await?;
                continue;
            }
            if want(&p) {
                return Ok(p);
            }
        }
    }
}

/// Publish `payload` to `topic` (QoS 1) on a task of its own, to await later.
pub fn spawn_publish(
    client: &courier::Client,
    topic: &str,
    payload: &str,
) -> tokio::task::JoinHandle<Result<(), courier::PublishError>> {
    let (client, topic, payload) = (client.clone(), topic.to_owned(), payload.to_owned());
    tokio::spawn(async move { client.publish(topic, payload).await })
}
