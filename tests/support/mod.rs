#![allow(
    clippy::panic,
    reason = "test support: a failed expectation fails the test"
)]
//! Helpers shared by the integration tests: a broker per test, client builders with
//! test-friendly timings, and message collection with deadlines.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use courier::{Backoff, ClientBuilder, Message, Subscription};
pub use courier_testkit::{BrokerKind, BrokerOptions, Capability, TestBroker};

pub mod faults;
pub mod pki;
pub mod transport;

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
    quick_reconnects()
        .address(broker.host(), broker.port())
        .client_id(client_id(name))
}

/// A builder with a clean session, quick reconnects and a 5 s connect timeout.
pub fn quick_reconnects() -> ClientBuilder {
    courier::Client::builder()
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

/// Poll `check` until it holds or `within` passed; returns whether it held.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
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

/// True when `broker` has every capability in `needs`; otherwise prints why
/// `test` is skipped ([`TestBroker::skip_unless`]).
pub fn needs(broker: &TestBroker, test: &str, needs: &[Capability]) -> bool {
    !broker.skip_unless(test, needs)
}

/// [`needs`] before a broker is started: for the broker the environment selects
/// (`COURIER_TEST_BROKER`), e.g. before starting several or one with a password file.
///
/// # Panics
///
/// When `COURIER_TEST_BROKER` is invalid.
pub fn selected_broker_has(test: &str, needs: &[Capability]) -> bool {
    match BrokerKind::from_env() {
        Ok(kind) => !kind.skip_unless(test, needs),
        Err(e) => panic!("{e}"),
    }
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
///
/// A thin adapter over the test kit's framing ([`courier_testkit::mqtt`]), which
/// [`courier_testkit::MockBroker`] also uses; new tests should use the mock broker.
pub mod wire {
    use std::ops::Deref;

    use courier_testkit::mqtt;
    use tokio::net::{TcpListener, TcpStream};

    /// One packet: the first byte (type and flags) and the rest after the length
    /// (`header` and `body`, through [`Deref`] to [`mqtt::Packet`]).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Packet(pub mqtt::Packet);

    impl Deref for Packet {
        type Target = mqtt::Packet;

        fn deref(&self) -> &mqtt::Packet {
            &self.0
        }
    }

    impl Packet {
        /// For a PUBLISH: (dup, qos, topic, packet id, payload).
        pub fn publish(&self) -> Option<(bool, u8, String, u16, Vec<u8>)> {
            self.0
                .publish()
                .map(|p| (p.dup, p.qos, p.topic, p.pkid, p.payload))
        }

        /// The packet id of a QoS 1/2 PUBLISH (0 for anything else).
        pub fn pkid_of_publish(&self) -> u16 {
            self.publish().map_or(0, |p| p.3)
        }

        /// The packet id of an ack-like packet (first two body bytes; 0 if shorter).
        pub fn pkid(&self) -> u16 {
            match self.0.body.as_slice() {
                [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                _ => 0,
            }
        }
    }

    /// Read one packet.
    ///
    /// # Errors
    ///
    /// When the connection closes or breaks.
    pub async fn read(socket: &mut TcpStream) -> std::io::Result<Packet> {
        mqtt::read_packet(socket).await.map(Packet)
    }

    /// Write one packet.
    ///
    /// # Errors
    ///
    /// When the connection breaks.
    pub async fn write(socket: &mut TcpStream, header: u8, body: &[u8]) -> std::io::Result<()> {
        mqtt::write_packet(socket, &mqtt::Packet::new(header, body)).await
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
        let publish = mqtt::Publish::new(topic, payload).qos(qos, pkid).dup(dup);
        mqtt::write_packet(socket, &mqtt::Packet::from_publish(&publish)).await
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
        if connect.kind() != mqtt::CONNECT {
            return Err(std::io::Error::other(format!(
                "expected CONNECT, got {connect:?}"
            )));
        }
        mqtt::write_packet(&mut socket, &mqtt::Packet::connack(session_present, 0)).await?;
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
            if p.kind() == mqtt::PINGREQ {
                mqtt::write_packet(socket, &mqtt::Packet::pingresp()).await?;
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
