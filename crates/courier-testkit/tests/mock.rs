//! Tests of the scripted mock broker, with a raw MQTT client.

use std::io;
use std::time::Duration;

use courier_testkit::MockBroker;
use courier_testkit::mqtt::{
    self, CONNACK, MALFORMED_RESERVED_TYPE, PINGRESP, PUBACK, PUBCOMP, PUBLISH, PUBREC, Packet,
    Publish, SUBACK, SUBSCRIBE, read_packet, write_packet,
};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

async fn raw_client(port: u16) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0xc0, 0, 7];
    for field in ["mock-client", "user", "secret"] {
        body.extend_from_slice(&(field.len() as u16).to_be_bytes());
        body.extend_from_slice(field.as_bytes());
    }
    write_packet(&mut stream, &Packet::new(0x10, body)).await?;
    Ok(stream)
}

async fn read(stream: &mut TcpStream) -> io::Result<Packet> {
    timeout(T, read_packet(stream)).await?
}

#[tokio::test]
async fn a_scripted_session() -> io::Result<()> {
    let broker = MockBroker::start().await?;
    let (client, conn) = tokio::join!(raw_client(broker.port()), broker.accept_with(true));
    let (mut client, mut conn) = (client?, conn?);
    let connect = conn.connect_packet().cloned();
    assert_eq!(
        connect.as_ref().map(|c| c.client_id.as_str()),
        Some("mock-client")
    );
    assert_eq!(connect.as_ref().map(|c| c.keep_alive), Some(7));
    assert_eq!(
        connect.as_ref().and_then(|c| c.password.clone()),
        Some(b"secret".to_vec())
    );
    let connack = read(&mut client).await?;
    assert_eq!(
        (connack.kind(), connack.body.clone()),
        (CONNACK, vec![1, 0])
    );

    // SUBSCRIBE, parsed and acknowledged with what it asked for.
    let mut body = 3u16.to_be_bytes().to_vec();
    body.extend_from_slice(&[0, 3, b'a', b'/', b'#', 2]);
    write_packet(&mut client, &Packet::new(0x82, body)).await?;
    let sub = conn.expect(SUBSCRIBE, T).await?;
    assert_eq!(sub.subscribe_filters(), Some(vec![("a/#".to_owned(), 2)]));
    conn.ack(&sub).await?;
    let suback = read(&mut client).await?;
    assert_eq!(
        (suback.kind(), suback.body.clone()),
        (SUBACK, vec![0, 3, 2])
    );

    // A duplicate QoS 2 PUBLISH and an unknown PUBREL go out as scripted.
    conn.send_publish(&Publish::new("a/b", "x").qos(2, 9).dup(true))
        .await?;
    conn.send_pubrel(77).await?;
    let publish = read(&mut client).await?;
    let fields = publish.publish();
    assert_eq!(fields, Some(Publish::new("a/b", "x").qos(2, 9).dup(true)));
    let pubrel = read(&mut client).await?;
    assert_eq!((pubrel.header, pubrel.pkid()), (0x62, Some(77)));

    // The client's packets come back parsed, pings are answered on the side.
    write_packet(&mut client, &Packet::new(0xc0, Vec::new())).await?;
    write_packet(&mut client, &Packet::ack(PUBREC, 9)).await?;
    write_packet(&mut client, &Packet::ack(PUBCOMP, 77)).await?;
    let publish = Publish::new("out", "y").qos(1, 4).dup(true);
    write_packet(&mut client, &Packet::from_publish(&publish)).await?;
    assert_eq!(conn.expect(PUBREC, T).await?.pkid(), Some(9));
    assert!(conn.expect(PUBLISH, T).await.is_err(), "PUBCOMP came first");
    let got = conn.recv_until(PUBLISH, T).await?;
    assert!(got.dup());
    assert_eq!(got.publish(), Some(publish));
    let pingresp = read(&mut client).await?;
    assert_eq!(pingresp.kind(), PINGRESP);
    conn.ack(&got).await?;
    assert_eq!(read(&mut client).await?.kind(), PUBACK);
    assert_eq!(
        conn.received()
            .iter()
            .map(|p| mqtt::type_name(p.kind()))
            .collect::<Vec<_>>(),
        [
            "CONNECT",
            "SUBSCRIBE",
            "PINGREQ",
            "PUBREC",
            "PUBCOMP",
            "PUBLISH"
        ]
    );
    conn.expect_silence(Duration::from_millis(100)).await?;

    // A malformed frame, then the client goes away.
    conn.send_raw(MALFORMED_RESERVED_TYPE).await?;
    let mut raw = [0u8; 2];
    client.read_exact(&mut raw).await?;
    assert_eq!(raw, [0, 0]);
    drop(client);
    conn.expect_closed(T).await?;
    Ok(())
}

#[tokio::test]
async fn accept_raw_lets_the_test_refuse() -> io::Result<()> {
    let broker = MockBroker::start().await?;
    let (client, conn) = tokio::join!(raw_client(broker.port()), broker.accept_raw());
    let (mut client, mut conn) = (client?, conn?);
    conn.expect(mqtt::CONNECT, T).await?;
    conn.send_connack(false, 5).await?;
    let connack = read(&mut client).await?;
    assert_eq!(connack.body, vec![0, 5]);
    conn.reset();
    let mut buf = [0u8; 1];
    assert!(matches!(
        timeout(T, client.read(&mut buf)).await?,
        Ok(0) | Err(_)
    ));
    assert!(
        broker
            .accept_timeout(false, Duration::from_millis(100))
            .await
            .is_err()
    );
    Ok(())
}
