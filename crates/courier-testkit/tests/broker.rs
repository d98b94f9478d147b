//! Tests of the test brokers, speaking raw MQTT 3.1.1 over TCP.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use courier_testkit::mqtt::{self, Packet};
use courier_testkit::{
    BrokerKind, BrokerOptions, Capability, EmbeddedBroker, TestBroker, free_port,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// CONNACK return codes of MQTT 3.1.1.
const ACCEPTED: u8 = 0;
const BAD_USERNAME_OR_PASSWORD: u8 = 4;
const NOT_AUTHORIZED: u8 = 5;

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// A broker of `kind` with these options, or `None` (test skipped) when the
/// environment selects another kind (which may be all that is installed).
async fn selected_or_skip(
    kind: BrokerKind,
    test_name: &str,
    options: BrokerOptions,
) -> io::Result<Option<TestBroker>> {
    let selected = BrokerKind::from_env()?;
    if selected != kind {
        eprintln!(
            "SKIP {test_name}: tests {}, COURIER_TEST_BROKER={}",
            kind.name(),
            selected.name()
        );
        return Ok(None);
    }
    Ok(Some(TestBroker::start_with(options.kind(kind)).await?))
}

/// A Mosquitto broker with these options, or `None` (test skipped) when the
/// environment selects another broker.
async fn mosquitto_or_skip(
    test_name: &str,
    options: BrokerOptions,
) -> io::Result<Option<TestBroker>> {
    selected_or_skip(BrokerKind::Mosquitto, test_name, options).await
}

fn protocol_error(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn put_str(s: &str, out: &mut Vec<u8>) {
    let len = u16::try_from(s.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn packet(first_byte: u8, body: &[u8]) -> Vec<u8> {
    Packet::new(first_byte, body).encode()
}

/// Reads one packet: (first byte, body).
async fn read_packet(stream: &mut TcpStream) -> io::Result<(u8, Vec<u8>)> {
    let packet = timeout(IO_TIMEOUT, mqtt::read_packet(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no packet from the broker"))??;
    Ok((packet.header, packet.body))
}

/// Connects with MQTT 3.1.1 and returns the stream and the CONNACK return code.
async fn mqtt_connect(
    port: u16,
    client_id: &str,
    credentials: Option<(&str, &str)>,
) -> io::Result<(TcpStream, u8)> {
    let mut stream = timeout(IO_TIMEOUT, TcpStream::connect(loopback(port)))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    let mut flags = 0x02; // clean session
    if credentials.is_some() {
        flags |= 0x80 | 0x40;
    }
    let mut body = Vec::new();
    put_str("MQTT", &mut body);
    body.extend_from_slice(&[4, flags, 0, 60]);
    put_str(client_id, &mut body);
    if let Some((username, password)) = credentials {
        put_str(username, &mut body);
        put_str(password, &mut body);
    }
    stream.write_all(&packet(0x10, &body)).await?;
    let (first, body) = read_packet(&mut stream).await?;
    if first != 0x20 || body.len() != 2 {
        return Err(protocol_error(format!(
            "expected CONNACK, got {first:#04x} {body:?}"
        )));
    }
    Ok((stream, body[1]))
}

async fn mqtt_disconnect(mut stream: TcpStream) -> io::Result<()> {
    stream.write_all(&[0xe0, 0x00]).await?;
    stream.shutdown().await
}

/// Publishes a retained QoS 1 message and waits for the PUBACK.
async fn publish_retained(stream: &mut TcpStream, topic: &str, payload: &[u8]) -> io::Result<()> {
    let mut body = Vec::new();
    put_str(topic, &mut body);
    body.extend_from_slice(&7u16.to_be_bytes());
    body.extend_from_slice(payload);
    stream.write_all(&packet(0x33, &body)).await?;
    let (first, body) = read_packet(stream).await?;
    if first != 0x40 || body != [0, 7] {
        return Err(protocol_error(format!(
            "expected PUBACK 7, got {first:#04x} {body:?}"
        )));
    }
    Ok(())
}

/// Subscribes with QoS 0 and waits for the SUBACK.
async fn subscribe(stream: &mut TcpStream, filter: &str) -> io::Result<()> {
    let mut body = 9u16.to_be_bytes().to_vec();
    put_str(filter, &mut body);
    body.push(0);
    stream.write_all(&packet(0x82, &body)).await?;
    let (first, body) = read_packet(stream).await?;
    if first != 0x90 || body != [0, 9, 0] {
        return Err(protocol_error(format!(
            "expected SUBACK 9 granting QoS 0, got {first:#04x} {body:?}"
        )));
    }
    Ok(())
}

/// Reads a QoS 0 PUBLISH: (retain flag, topic, payload).
async fn read_publish(stream: &mut TcpStream) -> io::Result<(bool, String, Vec<u8>)> {
    let (first, body) = read_packet(stream).await?;
    if first & 0xf0 != 0x30 || first & 0x06 != 0 || body.len() < 2 {
        return Err(protocol_error(format!(
            "expected a QoS 0 PUBLISH, got {first:#04x} {body:?}"
        )));
    }
    let topic_len = usize::from(u16::from_be_bytes([body[0], body[1]]));
    let topic = body
        .get(2..2 + topic_len)
        .ok_or_else(|| protocol_error("PUBLISH topic truncated"))?;
    let topic = String::from_utf8_lossy(topic).into_owned();
    Ok((first & 0x01 != 0, topic, body[2 + topic_len..].to_vec()))
}

#[tokio::test]
async fn mosquitto_starts_and_accepts_mqtt() -> io::Result<()> {
    let Some(broker) =
        mosquitto_or_skip("mosquitto_starts_and_accepts_mqtt", BrokerOptions::new()).await?
    else {
        return Ok(());
    };
    assert_eq!(broker.kind(), BrokerKind::Mosquitto);
    assert!(broker.supports(Capability::Restart));
    assert_eq!(broker.host(), "127.0.0.1");
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    assert!(broker.persistence_dir().is_none());

    let (stream, code) = mqtt_connect(broker.port(), "testkit-basic", None).await?;
    assert_eq!(code, ACCEPTED, "log:\n{}", broker.log());
    mqtt_disconnect(stream).await?;

    let log = broker.log();
    assert!(log.contains("mosquitto version"), "log:\n{log}");
    Ok(())
}

#[tokio::test]
async fn stop_kill_and_start_again_keep_the_port() -> io::Result<()> {
    let Some(mut broker) = mosquitto_or_skip(
        "stop_kill_and_start_again_keep_the_port",
        BrokerOptions::new(),
    )
    .await?
    else {
        return Ok(());
    };
    let port = broker.port();

    broker.stop().await?;
    assert!(TcpStream::connect(loopback(port)).await.is_err());
    broker.stop().await?; // stopping a stopped broker is fine
    broker.start_again().await?;
    assert_eq!(broker.port(), port);
    let (stream, code) = mqtt_connect(port, "testkit-again", None).await?;
    assert_eq!(code, ACCEPTED);

    // A second start while running is refused.
    let err = broker.start_again().await.err().map(|e| e.kind());
    assert_eq!(err, Some(io::ErrorKind::AlreadyExists));

    // Kill while a client is connected: the client sees the connection drop.
    broker.kill().await?;
    let mut stream = stream;
    let mut buf = [0u8; 1];
    let read = timeout(IO_TIMEOUT, stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "{read:?}");
    broker.start_again().await?;
    let (stream, code) = mqtt_connect(port, "testkit-after-kill", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;

    broker.restart().await?;
    assert_eq!(broker.port(), port);
    let (stream, code) = mqtt_connect(port, "testkit-after-restart", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;

    let log = broker.log();
    assert!(
        log.matches("mosquitto version 2").count() >= 8,
        "log should hold all four runs (start and stop lines):\n{log}"
    );
    Ok(())
}

#[tokio::test]
async fn persistence_survives_a_graceful_restart() -> io::Result<()> {
    let Some(mut broker) = mosquitto_or_skip(
        "persistence_survives_a_graceful_restart",
        BrokerOptions::new().persistence(true),
    )
    .await?
    else {
        return Ok(());
    };
    let dir = broker
        .persistence_dir()
        .map(std::path::Path::to_path_buf)
        .ok_or_else(|| io::Error::other("no persistence dir"))?;

    let (mut stream, code) = mqtt_connect(broker.port(), "testkit-persist-pub", None).await?;
    assert_eq!(code, ACCEPTED);
    publish_retained(&mut stream, "testkit/retained", b"kept across restarts").await?;
    mqtt_disconnect(stream).await?;

    broker.stop().await?;
    let db = dir.join("mosquitto.db");
    assert!(
        db.is_file(),
        "{} missing; log:\n{}",
        db.display(),
        broker.log()
    );
    broker.start_again().await?;

    let (mut stream, code) = mqtt_connect(broker.port(), "testkit-persist-sub", None).await?;
    assert_eq!(code, ACCEPTED);
    subscribe(&mut stream, "testkit/#").await?;
    let (retain, topic, payload) = read_publish(&mut stream).await?;
    assert!(retain);
    assert_eq!(topic, "testkit/retained");
    assert_eq!(payload, b"kept across restarts");
    mqtt_disconnect(stream).await?;
    Ok(())
}

#[tokio::test]
async fn credentials_are_enforced() -> io::Result<()> {
    let Some(broker) = mosquitto_or_skip(
        "credentials_are_enforced",
        BrokerOptions::new().credentials("alice", "s3cret"),
    )
    .await?
    else {
        return Ok(());
    };
    let port = broker.port();

    let (stream, code) = mqtt_connect(port, "testkit-good", Some(("alice", "s3cret"))).await?;
    assert_eq!(code, ACCEPTED, "log:\n{}", broker.log());
    mqtt_disconnect(stream).await?;

    let (_, code) = mqtt_connect(port, "testkit-bad", Some(("alice", "wrong"))).await?;
    assert!(
        code == BAD_USERNAME_OR_PASSWORD || code == NOT_AUTHORIZED,
        "wrong password gave CONNACK {code}"
    );

    let (_, code) = mqtt_connect(port, "testkit-anon", None).await?;
    assert!(
        code == BAD_USERNAME_OR_PASSWORD || code == NOT_AUTHORIZED,
        "anonymous gave CONNACK {code}"
    );
    Ok(())
}

#[tokio::test]
async fn limits_and_extra_config_lines_are_accepted() -> io::Result<()> {
    let Some(broker) = mosquitto_or_skip(
        "limits_and_extra_config_lines_are_accepted",
        BrokerOptions::new()
            .message_size_limit(64 * 1024)
            .max_inflight_messages(5)
            .max_queued_messages(50)
            .config_line("retain_available true"),
    )
    .await?
    else {
        return Ok(());
    };
    let (stream, code) = mqtt_connect(broker.port(), "testkit-limits", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;
    Ok(())
}

#[tokio::test]
async fn a_bad_config_line_fails_with_the_log() -> io::Result<()> {
    if BrokerKind::from_env()? == BrokerKind::Embedded {
        eprintln!("SKIP a_bad_config_line_fails_with_the_log: needs a real Mosquitto");
        return Ok(());
    }
    let result = TestBroker::start_with(
        BrokerOptions::new()
            .kind(BrokerKind::Mosquitto)
            .config_line("no_such_option 1"),
    )
    .await;
    let message = result.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        message.contains("no_such_option"),
        "error should quote Mosquitto's complaint: {message:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dropping_kills_mosquitto() -> io::Result<()> {
    let Some(broker) = mosquitto_or_skip("dropping_kills_mosquitto", BrokerOptions::new()).await?
    else {
        return Ok(());
    };
    let port = broker.port();
    drop(broker);
    assert!(TcpStream::connect(loopback(port)).await.is_err());
    Ok(())
}

#[test]
fn dropping_outside_a_runtime_kills_mosquitto() -> io::Result<()> {
    if BrokerKind::from_env()? == BrokerKind::Embedded {
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let broker = runtime.block_on(TestBroker::start_with(
        BrokerOptions::new().kind(BrokerKind::Mosquitto),
    ))?;
    drop(runtime);
    let port = broker.port();
    drop(broker);
    assert!(std::net::TcpStream::connect(loopback(port)).is_err());
    Ok(())
}

#[tokio::test]
async fn default_start_follows_the_environment() -> io::Result<()> {
    let broker = TestBroker::start().await?;
    assert_eq!(broker.kind(), BrokerKind::from_env()?);
    let (stream, code) = mqtt_connect(broker.port(), "testkit-default", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;
    Ok(())
}

#[tokio::test]
async fn embedded_test_broker_accepts_mqtt_but_cannot_restart() -> io::Result<()> {
    let mut broker =
        TestBroker::start_with(BrokerOptions::new().kind(BrokerKind::Embedded)).await?;
    assert_eq!(broker.kind(), BrokerKind::Embedded);
    assert_eq!(broker.url(), format!("mqtt://127.0.0.1:{}", broker.port()));
    assert!(!broker.supports(Capability::Restart));
    assert!(broker.skip_unless("embedded_test_broker", &[Capability::Restart]));
    assert_eq!(broker.log(), "");

    let (mut stream, code) = mqtt_connect(broker.port(), "testkit-embedded", None).await?;
    assert_eq!(code, ACCEPTED);
    subscribe(&mut stream, "testkit/embedded").await?;
    mqtt_disconnect(stream).await?;

    for result in [
        broker.stop().await,
        broker.kill().await,
        broker.start_again().await,
        broker.restart().await,
    ] {
        assert_eq!(
            result.err().map(|e| e.kind()),
            Some(io::ErrorKind::Unsupported)
        );
    }

    assert_refuses_credentials(BrokerKind::Embedded).await;
    Ok(())
}

#[tokio::test]
async fn embedded_broker_on_a_given_address() -> io::Result<()> {
    let addr = loopback(free_port()?);
    let broker = EmbeddedBroker::start(addr).await?;
    assert_eq!(broker.addr(), addr);
    let (stream, code) = mqtt_connect(addr.port(), "testkit-embedded-addr", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;

    // The address is taken now.
    let second = EmbeddedBroker::start(addr).await;
    assert_eq!(
        second.err().map(|e| e.kind()),
        Some(io::ErrorKind::AddrInUse)
    );
    // Port 0 cannot be reported back.
    let zero = EmbeddedBroker::start(loopback(0)).await;
    assert_eq!(
        zero.err().map(|e| e.kind()),
        Some(io::ErrorKind::InvalidInput)
    );
    Ok(())
}

#[tokio::test]
async fn start_again_reports_a_taken_port() -> io::Result<()> {
    let Some(mut broker) =
        mosquitto_or_skip("start_again_reports_a_taken_port", BrokerOptions::new()).await?
    else {
        return Ok(());
    };
    let port = broker.port();
    broker.stop().await?;

    let squatter = std::net::TcpListener::bind(loopback(port))?;
    let err = broker.start_again().await.err();
    assert_eq!(
        err.as_ref().map(io::Error::kind),
        Some(io::ErrorKind::AddrInUse),
        "{err:?}"
    );
    drop(squatter);

    broker.start_again().await?;
    let (stream, code) = mqtt_connect(port, "testkit-after-squatter", None).await?;
    assert_eq!(code, ACCEPTED);
    mqtt_disconnect(stream).await?;
    Ok(())
}

#[tokio::test]
async fn nats_serves_mqtt_and_restarts_on_the_same_port_with_its_store() -> io::Result<()> {
    let test = "nats_serves_mqtt_and_restarts_on_the_same_port_with_its_store";
    let Some(mut broker) = selected_or_skip(BrokerKind::Nats, test, BrokerOptions::new()).await?
    else {
        return Ok(());
    };
    assert!(broker.supports(Capability::Restart));
    assert_eq!(broker.web_mqtt_url(), None);
    let port = broker.port();
    let (mut stream, code) = mqtt_connect(port, "testkit-nats", None).await?;
    assert_eq!(code, ACCEPTED, "log:\n{}", broker.log());
    publish_retained(&mut stream, "testkit/nats/retained", b"kept").await?;
    mqtt_disconnect(stream).await?;

    broker.restart().await?;
    assert_eq!(broker.port(), port);
    // The retained message lives in JetStream's store, which survives the restart.
    let (mut stream, code) = mqtt_connect(port, "testkit-nats-again", None).await?;
    assert_eq!(code, ACCEPTED);
    subscribe(&mut stream, "testkit/nats/retained").await?;
    let (retain, topic, payload) = read_publish(&mut stream).await?;
    assert!(retain);
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("testkit/nats/retained", &b"kept"[..])
    );
    mqtt_disconnect(stream).await?;

    broker.kill().await?;
    assert!(TcpStream::connect(loopback(port)).await.is_err());
    broker.start_again().await?;
    let log = broker.log();
    assert_eq!(log.matches("Server is ready").count(), 3, "log:\n{log}");
    Ok(())
}

#[tokio::test]
async fn nats_credentials_are_enforced() -> io::Result<()> {
    let Some(broker) = selected_or_skip(
        BrokerKind::Nats,
        "nats_credentials_are_enforced",
        BrokerOptions::new().credentials("alice", "s3cret"),
    )
    .await?
    else {
        return Ok(());
    };
    let port = broker.port();
    let (_, anonymous) = mqtt_connect(port, "testkit-nats-anon", None).await?;
    let (_, wrong) = mqtt_connect(port, "testkit-nats-wrong", Some(("alice", "nope"))).await?;
    let (stream, right) =
        mqtt_connect(port, "testkit-nats-right", Some(("alice", "s3cret"))).await?;
    assert_eq!(right, ACCEPTED, "log:\n{}", broker.log());
    assert_ne!(anonymous, ACCEPTED);
    assert_ne!(wrong, ACCEPTED);
    mqtt_disconnect(stream).await?;
    Ok(())
}

#[tokio::test]
async fn rabbitmq_node_is_shared_and_serves_mqtt_and_web_mqtt() -> io::Result<()> {
    let test = "rabbitmq_node_is_shared_and_serves_mqtt_and_web_mqtt";
    let Some(mut first) =
        selected_or_skip(BrokerKind::RabbitMq, test, BrokerOptions::new()).await?
    else {
        return Ok(());
    };
    let second = TestBroker::start_with(BrokerOptions::new().kind(BrokerKind::RabbitMq)).await?;
    assert_eq!(first.port(), second.port(), "one node per test process");
    assert!(first.skip_unless(test, &[Capability::Restart]));
    assert_eq!(
        first.stop().await.err().map(|e| e.kind()),
        Some(io::ErrorKind::Unsupported)
    );
    let (mut stream, code) = mqtt_connect(first.port(), "testkit-rabbit", None).await?;
    assert_eq!(code, ACCEPTED, "log:\n{}", first.log());
    publish_retained(&mut stream, "testkit/rabbit/retained", b"kept").await?;
    subscribe(&mut stream, "testkit/rabbit/retained").await?;
    let (_, topic, payload) = read_publish(&mut stream).await?;
    assert_eq!(
        (topic.as_str(), payload.as_slice()),
        ("testkit/rabbit/retained", &b"kept"[..])
    );
    mqtt_disconnect(stream).await?;

    let no_endpoint = || io::Error::other("RabbitMQ has no Web MQTT endpoint");
    let url = first.web_mqtt_url().ok_or_else(no_endpoint)?;
    let ws_port = first.web_mqtt_port().ok_or_else(no_endpoint)?;
    assert_eq!(url, format!("ws://127.0.0.1:{ws_port}/ws"));
    // The endpoint answers a WebSocket upgrade for the `mqtt` subprotocol.
    let mut ws = TcpStream::connect(loopback(ws_port)).await?;
    ws.write_all(
        format!(
            "GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{ws_port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
        )
        .as_bytes(),
    )
    .await?;
    let mut response = [0u8; 256];
    let n = timeout(IO_TIMEOUT, ws.read(&mut response))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no upgrade response"))??;
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");

    assert_refuses_credentials(BrokerKind::RabbitMq).await;
    Ok(())
}

/// Starting a `kind` broker with credentials is `Unsupported`: it cannot enforce them.
async fn assert_refuses_credentials(kind: BrokerKind) {
    let with_credentials = TestBroker::start_with(
        BrokerOptions::new()
            .kind(kind)
            .credentials("alice", "s3cret"),
    )
    .await;
    assert_eq!(
        with_credentials.err().map(|e| e.kind()),
        Some(io::ErrorKind::Unsupported),
        "{kind:?}"
    );
}
