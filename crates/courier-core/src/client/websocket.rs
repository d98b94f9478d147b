//! MQTT over WebSocket (`ws://`, `wss://`) with tokio-tungstenite: the upgrade with
//! subprotocol `mqtt`, and [`WsStream`], which presents the binary messages as the
//! byte stream the engine reads and writes.
//!
//! MQTT packets may be split across WebSocket messages or share one: reads hand out
//! each message's bytes in order, whatever their framing. Each write of the engine
//! (one batch of packets) goes out as one binary message. tungstenite's limits
//! apply to what the broker sends: a frame over 16 MiB or a message over 64 MiB ends
//! the connection (the engine's skipping of oversized PUBLISHes works within them).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

use super::engine::LinkError;
use super::transport::TransportStream;
use crate::error::ConfigError;

/// The subprotocol MQTT 3.1.1 registers for WebSocket [MQTT-6.0.0-3].
const SUBPROTOCOL: &str = "mqtt";

/// A header sent with the upgrade request. Its value is secret to `Debug`.
#[derive(Clone)]
pub(crate) struct WsHeader {
    name: HeaderName,
    value: HeaderValue,
}

impl WsHeader {
    /// Check `name` and `value` as HTTP allows them.
    pub(crate) fn new(name: &str, value: &str) -> Result<Self, ConfigError> {
        let invalid = || ConfigError::InvalidHeader {
            name: crate::error::quote_input(name),
        };
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(value).map_err(|_| invalid())?;
        value.set_sensitive(true);
        Ok(WsHeader { name, value })
    }
}

/// How to upgrade a connection to WebSocket.
#[derive(Clone)]
pub(crate) struct WebSocketSettings {
    pub(crate) path: String,
    pub(crate) headers: Vec<WsHeader>,
}

impl WebSocketSettings {
    /// Upgrade `stream` to a WebSocket to `broker` (`host:port`).
    pub(crate) async fn handshake(
        &self,
        broker: &str,
        secure: bool,
        stream: Box<dyn TransportStream>,
    ) -> Result<WsStream, LinkError> {
        let scheme = if secure { "wss" } else { "ws" };
        let failed =
            |status, source: crate::error::BoxError| LinkError::WebSocket { status, source };
        let mut request = format!("{scheme}://{broker}{}", self.path)
            .into_client_request()
            .map_err(|e| failed(None, Box::new(e)))?;
        let headers = request.headers_mut();
        headers.insert(
            "Sec-WebSocket-Protocol",
            HeaderValue::from_static(SUBPROTOCOL),
        );
        for header in &self.headers {
            headers.append(header.name.clone(), header.value.clone());
        }
        match tokio_tungstenite::client_async(request, stream).await {
            Ok((inner, _response)) => Ok(WsStream {
                inner,
                read: Bytes::new(),
            }),
            Err(WsError::Http(response)) => Err(failed(
                Some(response.status().as_u16()),
                format!("the server answered HTTP {}", response.status()).into(),
            )),
            #[cfg(feature = "tls")]
            Err(WsError::Io(e)) if super::engine::is_tls_error(&e) => Err(LinkError::Tls(e)),
            Err(e) => Err(failed(None, Box::new(e))),
        }
    }
}

/// A WebSocket as a byte stream.
///
/// Cancel safe as the engine needs: a read that returns `Pending` has taken no byte
/// (a message is kept whole until all its bytes are handed out), and a write either
/// queues all of its bytes as one message or, `Pending`, none.
pub(crate) struct WsStream {
    inner: WebSocketStream<Box<dyn TransportStream>>,
    /// What is left of the last binary message read.
    read: Bytes,
}

impl AsyncRead for WsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            if !self.read.is_empty() {
                let n = self.read.len().min(buf.remaining());
                buf.put_slice(&self.read[..n]);
                self.read.advance(n);
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.inner).poll_next(cx)) {
                Some(Ok(Message::Binary(data))) => self.read = data,
                // A close (or a WebSocket already closed) ends the stream.
                Some(Ok(Message::Close(_))) | None => return Poll::Ready(Ok(())),
                // tungstenite answers pings itself.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                Some(Ok(Message::Text(_))) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "the broker sent a WebSocket text message (MQTT is binary)",
                    )));
                }
                Some(Err(e)) => return Poll::Ready(Err(into_io(e))),
            }
        }
    }
}

impl AsyncWrite for WsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let inner = Pin::new(&mut self.inner);
        ready!(inner.poll_ready(cx)).map_err(into_io)?;
        Pin::new(&mut self.inner)
            .start_send(Message::Binary(Bytes::copy_from_slice(buf)))
            .map_err(into_io)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx).map_err(into_io)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx).map_err(into_io)
    }
}

impl TransportStream for WsStream {
    fn ack_now(&self) {
        self.inner.get_ref().ack_now();
    }
}

/// A WebSocket error as the engine's I/O error: the socket's own error as it was; a
/// closed WebSocket as an aborted connection; a broken protocol as invalid data.
fn into_io(error: WsError) -> io::Error {
    match error {
        WsError::Io(e) => e,
        WsError::ConnectionClosed | WsError::AlreadyClosed => {
            io::Error::new(io::ErrorKind::ConnectionAborted, "the WebSocket is closed")
        }
        other => io::Error::new(io::ErrorKind::InvalidData, other),
    }
}

#[cfg(test)]
mod tests {
    use futures_util::{SinkExt, StreamExt};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

    use super::*;

    /// A client `WsStream` and the server's end of the WebSocket, over a pipe.
    async fn pair() -> (WsStream, WebSocketStream<tokio::io::DuplexStream>) {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let settings = WebSocketSettings {
            path: "/mqtt".to_owned(),
            headers: Vec::new(),
        };
        // The server answers with the subprotocol, as brokers do (tungstenite refuses
        // an upgrade without it).
        #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
        let mqtt = |_: &Request, mut response: Response| {
            response.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(SUBPROTOCOL),
            );
            Ok(response)
        };
        let (ws, server) = tokio::join!(
            settings.handshake("broker:80", false, Box::new(client)),
            tokio_tungstenite::accept_hdr_async(server, mqtt)
        );
        (ws.unwrap(), server.unwrap())
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message() {
        let (mut ws, mut server) = pair().await;
        ws.write_all(b"\x30\x03\x00\x01a").await.unwrap();
        ws.flush().await.unwrap();
        ws.write_all(b"second batch").await.unwrap();
        ws.flush().await.unwrap();
        for expected in [&b"\x30\x03\x00\x01a"[..], b"second batch"] {
            match server.next().await {
                Some(Ok(Message::Binary(data))) => assert_eq!(&data[..], expected),
                other => panic!("expected a binary message, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reads_are_a_byte_stream_whatever_the_messages() {
        let (mut ws, mut server) = pair().await;
        for part in [&b"ab"[..], b"", b"cdef", b"g"] {
            server
                .send(Message::Binary(Bytes::copy_from_slice(part)))
                .await
                .unwrap();
        }
        server.send(Message::Ping(Bytes::new())).await.unwrap();
        server.send(Message::Close(None)).await.unwrap();
        // Reads smaller than a message keep the rest for the next read.
        let mut got = Vec::new();
        let mut small = [0u8; 3];
        loop {
            let n = ws.read(&mut small).await.unwrap();
            if n == 0 {
                break;
            }
            got.extend_from_slice(&small[..n]);
        }
        assert_eq!(got, b"abcdefg");
    }

    #[tokio::test]
    async fn a_text_message_is_invalid_data() {
        let (mut ws, mut server) = pair().await;
        server.send(Message::text("hello")).await.unwrap();
        let error = ws.read(&mut [0u8; 8]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }
}
