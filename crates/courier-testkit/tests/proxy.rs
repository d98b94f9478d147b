//! Tests of the fault proxy: against a local echo (or sink) server for the byte
//! faults, and against a test broker (Mosquitto unless the environment asks for
//! the embedded one) for the MQTT-aware cut and capture.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use courier_testkit::mqtt::{
    self, CONNACK, PUBACK, PUBLISH, Packet, Publish, read_packet, write_packet,
};
use courier_testkit::{Close, Direction, FaultProxy, TestBroker};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(5);

/// A server echoing every byte back on each connection.
async fn echo_server() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = socket.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok(addr)
}

/// A server that only counts the bytes it receives (over all connections).
async fn sink_server() -> io::Result<(SocketAddr, Arc<AtomicUsize>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let count = Arc::new(AtomicUsize::new(0));
    let total = count.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let total = total.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    total.fetch_add(n, Ordering::SeqCst);
                }
            });
        }
    });
    Ok((addr, count))
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 % 251) as u8).collect()
}

async fn round_trip(stream: &mut TcpStream, data: &[u8]) -> io::Result<Vec<u8>> {
    let (mut r, mut w) = stream.split();
    let mut back = vec![0u8; data.len()];
    let (written, read) = tokio::join!(w.write_all(data), r.read_exact(&mut back));
    written?;
    read?;
    Ok(back)
}

async fn wait_count(count: &AtomicUsize, n: usize, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while count.load(Ordering::SeqCst) < n {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

#[tokio::test]
async fn pass_forwards_both_ways_and_counts() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    assert_eq!(proxy.addr().port(), proxy.port());
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    let data = pattern(100_000);
    let back = timeout(T, round_trip(&mut stream, &data)).await??;
    assert_eq!(back, data);
    assert_eq!(proxy.accepted(), 1);
    assert_eq!(proxy.active(), 1);
    assert_eq!(proxy.bytes(Direction::ClientToBroker), 100_000);
    assert_eq!(proxy.bytes(Direction::BrokerToClient), 100_000);
    // FIN from the client travels through; the proxy forgets the connection.
    stream.shutdown().await?;
    let mut rest = Vec::new();
    timeout(T, stream.read_to_end(&mut rest)).await??;
    assert!(rest.is_empty());
    let deadline = Instant::now() + T;
    while proxy.active() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(proxy.active(), 0);
    Ok(())
}

#[tokio::test]
async fn split_writes_keeps_the_stream_intact() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    proxy.split_writes(3);
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    let data = pattern(5_000);
    assert_eq!(timeout(T, round_trip(&mut stream, &data)).await??, data);
    Ok(())
}

#[tokio::test]
async fn delay_adds_latency_each_way() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    proxy.delay(Duration::from_millis(150));
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    let started = Instant::now();
    assert_eq!(
        timeout(T, round_trip(&mut stream, b"ping")).await??,
        b"ping"
    );
    let rtt = started.elapsed();
    assert!(rtt >= Duration::from_millis(300), "{rtt:?}");
    assert!(rtt < Duration::from_secs(2), "{rtt:?}");
    proxy.pass();
    let started = Instant::now();
    round_trip(&mut stream, b"pong").await?;
    assert!(started.elapsed() < Duration::from_millis(150));
    Ok(())
}

#[tokio::test]
async fn throttle_caps_the_rate() -> io::Result<()> {
    let (sink, count) = sink_server().await?;
    let proxy = FaultProxy::start(sink).await?;
    proxy.throttle(32 * 1024);
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    let started = Instant::now();
    stream.write_all(&pattern(24 * 1024)).await?;
    assert!(wait_count(&count, 24 * 1024, T).await);
    let took = started.elapsed();
    // 24 KiB at 32 KiB/s: about 0.75 s (the first 1/20 s worth goes at once).
    assert!(took >= Duration::from_millis(550), "{took:?}");
    assert!(took < Duration::from_secs(3), "{took:?}");
    Ok(())
}

#[tokio::test]
async fn blackhole_holds_data_and_keeps_the_connection_open() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    assert_eq!(round_trip(&mut stream, b"before").await?, b"before");
    proxy.blackhole();
    stream.write_all(b"during").await?;
    let mut buf = [0u8; 6];
    assert!(
        timeout(Duration::from_millis(300), stream.read(&mut buf))
            .await
            .is_err(),
        "nothing comes back while blackholed, and no EOF either"
    );
    // New connections are accepted but get nothing through either.
    let mut other = TcpStream::connect(proxy.addr()).await?;
    other.write_all(b"x").await?;
    assert!(
        timeout(Duration::from_millis(200), other.read(&mut buf))
            .await
            .is_err()
    );
    proxy.pass();
    timeout(T, stream.read_exact(&mut buf)).await??;
    assert_eq!(&buf, b"during");
    Ok(())
}

#[tokio::test]
async fn close_rst_resets_and_close_fin_ends_cleanly() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    let mut a = TcpStream::connect(proxy.addr()).await?;
    round_trip(&mut a, b"a").await?;
    proxy.close_rst();
    let mut buf = [0u8; 1];
    let read = timeout(T, a.read(&mut buf)).await?;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );

    let mut b = TcpStream::connect(proxy.addr()).await?;
    round_trip(&mut b, b"b").await?;
    proxy.close_fin();
    assert_eq!(timeout(T, b.read(&mut buf)).await??, 0, "EOF");

    // Later connections are forwarded as usual.
    let mut c = TcpStream::connect(proxy.addr()).await?;
    assert_eq!(round_trip(&mut c, b"c").await?, b"c");
    assert_eq!(proxy.accepted(), 3);
    Ok(())
}

#[tokio::test]
async fn cut_after_bytes_forwards_exactly_n_then_resets() -> io::Result<()> {
    let (sink, count) = sink_server().await?;
    let proxy = FaultProxy::start(sink).await?;
    let mut stream = TcpStream::connect(proxy.addr()).await?;
    stream.write_all(&pattern(100)).await?;
    assert!(wait_count(&count, 100, T).await);
    proxy.cut_after_bytes(37);
    let _ = stream.write_all(&pattern(1000)).await;
    assert!(proxy.wait_cuts(1, T).await);
    let mut buf = [0u8; 1];
    let read = timeout(T, stream.read(&mut buf)).await?;
    assert_eq!(
        read.map_err(|e| e.kind()),
        Err(io::ErrorKind::ConnectionReset)
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(count.load(Ordering::SeqCst), 137);
    assert_eq!(proxy.bytes(Direction::ClientToBroker), 137);

    // One shot: the next connection is not cut; FIN variant.
    let mut again = TcpStream::connect(proxy.addr()).await?;
    again.write_all(&pattern(50)).await?;
    assert!(wait_count(&count, 187, T).await);
    proxy.cut_after_bytes_with(0, Close::Fin);
    let _ = again.write_all(b"more").await;
    assert!(proxy.wait_cuts(2, T).await);
    assert!(matches!(
        timeout(T, again.read(&mut buf)).await?,
        Ok(0) | Err(_)
    ));
    assert_eq!(count.load(Ordering::SeqCst), 187);
    Ok(())
}

#[tokio::test]
async fn refuse_accepts_and_resets_new_connections() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    let mut open = TcpStream::connect(proxy.addr()).await?;
    assert_eq!(round_trip(&mut open, b"first").await?, b"first");
    proxy.refuse(true);
    let mut refused = TcpStream::connect(proxy.addr()).await?;
    let _ = refused.write_all(b"hello").await;
    let mut buf = [0u8; 5];
    assert!(matches!(
        timeout(T, refused.read(&mut buf)).await?,
        Ok(0) | Err(_)
    ));
    assert_eq!(proxy.refused(), 1);
    assert_eq!(
        round_trip(&mut open, b"still").await?,
        b"still",
        "open connections are not affected"
    );
    proxy.refuse(false);
    let mut fine = TcpStream::connect(proxy.addr()).await?;
    assert_eq!(round_trip(&mut fine, b"again").await?, b"again");
    assert_eq!(proxy.accepted(), 3);
    Ok(())
}

#[tokio::test]
async fn dropping_the_proxy_closes_its_connections() -> io::Result<()> {
    let proxy = FaultProxy::start(echo_server().await?).await?;
    let addr = proxy.addr();
    let mut stream = TcpStream::connect(addr).await?;
    round_trip(&mut stream, b"x").await?;
    drop(proxy);
    let mut buf = [0u8; 1];
    assert!(matches!(
        timeout(T, stream.read(&mut buf)).await?,
        Ok(0) | Err(_)
    ));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
    Ok(())
}

async fn mqtt_connect(addr: SocketAddr, client_id: &str) -> io::Result<TcpStream> {
    let mut stream = TcpStream::connect(addr).await?;
    let mut body = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 30];
    body.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    body.extend_from_slice(client_id.as_bytes());
    write_packet(&mut stream, &Packet::new(0x10, body)).await?;
    let connack = timeout(T, read_packet(&mut stream)).await??;
    assert_eq!(
        (connack.kind(), connack.body.as_slice()),
        (CONNACK, &[0, 0][..])
    );
    Ok(stream)
}

/// The packet-aware cut against a real broker: the PUBACK of the second
/// publish is never forwarded and the connection is reset right there; the
/// capture shows what did go through.
#[tokio::test]
async fn cut_on_a_packet_type_and_capture_against_a_broker() -> io::Result<()> {
    let broker = TestBroker::start().await?;
    let upstream: SocketAddr = format!("{}:{}", broker.host(), broker.port())
        .parse()
        .map_err(io::Error::other)?;
    let proxy = FaultProxy::start(upstream).await?;
    proxy.capture(true);
    let mut stream = mqtt_connect(proxy.addr(), "proxy-cut").await?;
    proxy.cut_on(PUBACK, Direction::BrokerToClient, 2);
    for pkid in [1u16, 2] {
        let publish = Publish::new("proxy/cut", format!("m{pkid}")).qos(1, pkid);
        write_packet(&mut stream, &Packet::from_publish(&publish)).await?;
    }
    let first = timeout(T, read_packet(&mut stream)).await??;
    assert_eq!((first.kind(), first.pkid()), (PUBACK, Some(1)));
    let second = timeout(T, read_packet(&mut stream)).await?;
    assert!(
        second.is_err(),
        "reset before the second PUBACK: {second:?}"
    );
    assert_eq!(proxy.cuts(), 1);

    let captured = proxy.captured();
    let wire = |direction: Direction| -> Vec<(u8, Option<u16>)> {
        captured
            .iter()
            .filter(|p| p.direction == direction)
            .map(|p| (p.kind(), p.pkid))
            .collect()
    };
    assert_eq!(
        wire(Direction::ClientToBroker),
        vec![
            (mqtt::CONNECT, None),
            (PUBLISH, Some(1)),
            (PUBLISH, Some(2))
        ]
    );
    assert_eq!(
        wire(Direction::BrokerToClient),
        vec![(CONNACK, None), (PUBACK, Some(1))]
    );
    assert_eq!(captured[2].topic.as_deref(), Some("proxy/cut"));
    assert_eq!(captured[2].qos(), 1);
    assert!(!captured[2].dup());

    // The trigger was one shot: a new connection works end to end.
    let mut again = mqtt_connect(proxy.addr(), "proxy-cut").await?;
    let publish = Publish::new("proxy/cut", "m3").qos(1, 3).dup(true);
    write_packet(&mut again, &Packet::from_publish(&publish)).await?;
    let ack = timeout(T, read_packet(&mut again)).await??;
    assert_eq!((ack.kind(), ack.pkid()), (PUBACK, Some(3)));
    assert!(
        proxy
            .captured()
            .iter()
            .any(|p| p.connection == 2 && p.kind() == PUBLISH && p.dup())
    );
    Ok(())
}
