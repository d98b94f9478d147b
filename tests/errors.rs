#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]
//! Errors carry the facts to act on (issue 13, items 7 and 8): the broker's address
//! and the cause in every connect error's text, a non-MQTT peer named as such,
//! Mosquitto's real refusal code for a wrong password, serde's reason in a decode
//! error, the client id and broker in retry logs, and an event reader that can count
//! every failed attempt of an outage (or is told how many events it missed).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use courier::{Client, ConnectError, Event, RefusedReason};
use courier_integration_tests::{
    BrokerOptions, Capability, broker, broker_with, client, needs, recv_n, selected_broker_has,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Mosquitto 2 answers a wrong password with return code 5 (not authorized), not 4
/// (bad user name or password), and so it does a client without credentials; the
/// error says so, with the broker's address, and `is_auth_failure` covers it.
#[tokio::test]
async fn wrong_password_is_refused_with_code_5_naming_the_broker() {
    if !selected_broker_has(
        "wrong_password_is_refused_with_code_5_naming_the_broker",
        &[Capability::Credentials],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().credentials("alice", "right")).await;
    let err = client(&broker, "wrong-password")
        .username("alice")
        .password("s3cret-wrong")
        .connect()
        .await
        .unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert_eq!(err.refused_reason(), Some(RefusedReason::NotAuthorized));
    assert!(err.is_auth_failure());
    assert_eq!(
        text,
        format!(
            "broker {}:{} refused the connection: not authorized (return code 5)",
            broker.host(),
            broker.port()
        )
    );
    assert!(!format!("{err:?}").contains("s3cret"), "{err:?}");

    // No credentials at all, anonymous access off: the same code.
    let err = client(&broker, "anonymous").connect().await.unwrap_err();
    assert_eq!(err.refused_reason(), Some(RefusedReason::NotAuthorized));
}

/// A stopped Mosquitto: the TCP error names the address and the system's reason.
#[tokio::test]
async fn tcp_failure_names_the_broker_and_the_cause() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "tcp_failure_names_the_broker_and_the_cause",
        &[Capability::Restart],
    ) {
        return;
    }
    let builder = client(&broker, "tcp-refused");
    broker.stop().await.unwrap();
    let err = builder.connect().await.unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(
        text.starts_with(&format!(
            "TCP connection to {}:{} failed: ",
            broker.host(),
            broker.port()
        )),
        "{text}"
    );
    assert!(text.contains("Connection refused"), "{text}");
}

/// A frozen Mosquitto accepts the TCP connection (the kernel does) and never answers
/// CONNECT: the timeout names the broker.
#[tokio::test]
async fn connack_timeout_names_the_broker() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "connack_timeout_names_the_broker",
        &[Capability::Freeze],
    ) {
        return;
    }
    broker.pause().unwrap();
    let err = client(&broker, "frozen")
        .connect_timeout(Duration::from_millis(500))
        .connect()
        .await
        .unwrap_err();
    broker.resume().unwrap();
    let text = err.to_string();
    println!("{text}");
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(
        text,
        format!(
            "no CONNACK from {}:{} within 500ms",
            broker.host(),
            broker.port()
        )
    );
}

/// A plain TCP server that answers every connection with `reply`; with `hold` it
/// keeps the connection open afterwards, otherwise it closes it.
async fn http_like_server(reply: &'static [u8], hold: bool) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut request = [0u8; 256];
            let _ = socket.read(&mut request).await;
            let _ = socket.write_all(reply).await;
            if hold {
                held.push(socket);
            }
        }
    });
    port
}

/// A web server on the broker's port: the error says it is not an MQTT broker and
/// shows what it answered, whether it then closes the connection or keeps it open.
#[tokio::test]
async fn a_non_mqtt_peer_is_reported_as_such() {
    const REPLY: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\r\n";
    for hold in [false, true] {
        let port = http_like_server(REPLY, hold).await;
        let err = Client::builder()
            .address("127.0.0.1", port)
            .client_id("not-mqtt")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .unwrap_err();
        let text = err.to_string();
        println!("hold={hold}: {text}");
        assert!(
            matches!(&err, ConnectError::NotMqtt { first_bytes, .. } if first_bytes == REPLY),
            "{err:?}"
        );
        assert_eq!(
            text,
            format!(
                "127.0.0.1:{port} is not an MQTT broker: it answered CONNECT with \
                 \"HTTP/1.1 400 Bad Request\\r\\n\\r\\n\""
            ),
            "hold={hold}"
        );
    }
}

/// A JSON payload without a required field: the decode error gives serde's reason.
#[tokio::test]
async fn decode_error_gives_the_codecs_reason() {
    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code, reason = "only decoded")]
    struct Order {
        id: u64,
        item: String,
    }
    let broker = broker().await;
    let c = client(&broker, "decode").connect().await.unwrap();
    let mut sub = c.subscribe("errors/decode").await.unwrap();
    c.publish("errors/decode", r#"{"item":"tea"}"#)
        .await
        .unwrap();
    let got = recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    let err = got[0].decode::<Order>().unwrap_err();
    let text = err.to_string();
    println!("{text}");
    assert!(text.starts_with("cannot decode "), "{text}");
    assert!(
        text.ends_with("Order with the json codec: missing field `id` at line 1 column 14"),
        "{text}"
    );
    c.stop().await;
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// The lines that hold both `needle` and `also`.
    fn lines_with(&self, needle: &str, also: &str) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .filter(|line| line.contains(needle) && line.contains(also))
            .map(str::to_owned)
            .collect()
    }
}

/// Every warning of this test process, from the first call on. A process-wide
/// subscriber: a thread-local one (`set_default`) can miss events while tests on
/// other threads, with no subscriber, register the same call sites.
fn captured_logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::WARN)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        captured
    })
}

/// Mosquitto goes away under a connected client: the warnings of the loss and of the
/// failed retries name the client id and the broker.
#[tokio::test]
async fn retry_logs_name_the_client_and_the_broker() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "retry_logs_name_the_client_and_the_broker",
        &[Capability::Restart],
    ) {
        return;
    }
    let captured = captured_logs();
    let c = client(&broker, "logs").connect().await.unwrap();
    let mut events = c.events();
    broker.stop().await.unwrap();
    let mut failed = 0;
    while failed < 2 {
        match tokio::time::timeout(Duration::from_secs(10), events.next()).await {
            Ok(Some(Event::ConnectFailed { .. })) => failed += 1,
            Ok(Some(_)) => {}
            other => panic!("expected two failed attempts, got {other:?}"),
        }
    }
    c.stop().await;
    let address = format!("{}:{}", broker.host(), broker.port());
    let fields = format!("client_id={} broker={address}", c.client_id());
    let lost = captured.lines_with("connection lost", c.client_id());
    let retries = captured.lines_with("connect attempt failed", c.client_id());
    println!("{lost:?}\n{retries:?}");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert!(retries.len() >= 2, "{retries:?}");
    for line in lost.iter().chain(&retries) {
        assert!(line.contains(&fields), "{line}");
    }
}

/// Mosquitto is down for 20 s while a reader of `events()` is busy: afterwards it
/// can account for every failed attempt, each seen as `ConnectFailed` or counted in
/// a report of missed events in its place.
#[tokio::test]
async fn an_event_reader_accounts_for_every_failed_attempt_of_an_outage() {
    let mut broker = broker().await;
    if !needs(
        &broker,
        "an_event_reader_accounts_for_every_failed_attempt_of_an_outage",
        &[Capability::Restart],
    ) {
        return;
    }
    let c = client(&broker, "outage").connect().await.unwrap();
    let mut events = c.events();
    broker.stop().await.unwrap();
    // The reader is busy elsewhere for the whole outage.
    tokio::time::sleep(Duration::from_secs(20)).await;
    broker.start_again().await.unwrap();

    let mut expected_attempt = 1;
    let mut seen = 0u32;
    let mut missed = 0u64;
    let mut received = 0usize;
    loop {
        let event = tokio::time::timeout(Duration::from_secs(10), events.next())
            .await
            .expect("reconnects once the broker is back")
            .expect("the stream goes on");
        received += 1;
        match event {
            Event::ConnectFailed { attempt, .. } => {
                let gap = attempt - expected_attempt;
                assert!(
                    u64::from(gap) <= missed,
                    "attempts {expected_attempt}..{attempt} were neither seen nor reported \
                     missed ({missed} missed)"
                );
                missed = 0;
                seen += 1;
                expected_attempt = attempt + 1;
            }
            Event::Lagged { missed: n } => missed += n,
            Event::Connected { .. } => break,
            _ => {}
        }
    }
    let failed = expected_attempt - 1;
    println!("{failed} failed attempts, {seen} seen, {received} events read");
    assert!(
        received > 16,
        "the outage produced more events than the old 16-event buffer held"
    );
    assert_eq!(
        seen, failed,
        "every attempt seen: the buffer covers the outage"
    );
    c.stop().await;
}
