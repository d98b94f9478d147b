//! The transport seam: what carries MQTT's bytes between the client and the broker.
//!
//! The engine runs MQTT over any [`TransportStream`] a [`Transport`] opens. The
//! built-in transports are implementations of the same seam, chosen from the URL and
//! the builder: TCP (optionally through an HTTP CONNECT [proxy](super::ProxyConfig)),
//! then TLS when configured, then WebSocket for `ws://`/`wss://` URLs (feature
//! `websocket`); and [`UnixSocket`] for `unix://` URLs. A program sets its own with
//! [`ClientBuilder::transport`](super::ClientBuilder::transport): QUIC, an in-memory
//! pipe, a socket handed over by a supervisor.

use std::io;
#[cfg(unix)]
use std::path::PathBuf;
#[cfg(feature = "tls")]
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};

use super::credentials::BoxFuture;
use super::engine::LinkError;
use super::proxy::ProxyConfig;

/// A byte stream MQTT runs over: anything readable and writable.
///
/// Implement it for the stream type a custom [`Transport`] opens (one line: the
/// method has a default). The engine batches its writes, and flushes after each batch.
pub trait TransportStream: AsyncRead + AsyncWrite + Send + Unpin {
    /// Acknowledge what was read now rather than after the system's delay (Linux's
    /// `TCP_QUICKACK`): the engine calls this when it read a packet it owes no
    /// answer to while the broker owes it one. The default does nothing, right for
    /// any stream that is not TCP underneath.
    fn ack_now(&self) {}
}

impl TransportStream for TcpStream {
    fn ack_now(&self) {
        quick_ack(self);
    }
}

#[cfg(unix)]
impl TransportStream for tokio::net::UnixStream {}

impl TransportStream for tokio::io::DuplexStream {}

impl TransportStream for Box<dyn TransportStream> {
    fn ack_now(&self) {
        (**self).ack_now();
    }
}

#[cfg(feature = "tls")]
impl<S: TransportStream> TransportStream for tokio_rustls::client::TlsStream<S> {
    fn ack_now(&self) {
        self.get_ref().0.ack_now();
    }
}

/// Opens the byte stream to a broker, once per connection attempt.
///
/// The connect timeout covers the whole of [`connect`](Self::connect) (and the MQTT
/// CONNECT after it). An error fails the attempt with
/// [`ConnectError::Transport`](crate::ConnectError::Transport), which names the
/// broker by [`peer`](Self::peer) and keeps the error's text; the client backs off and
/// calls `connect` again.
///
/// ```
/// use std::io;
/// use courier_core::client::{BoxFuture, Transport, TransportStream};
///
/// /// Reaches the broker through a TCP socket of its own choosing.
/// struct Tcp(std::net::SocketAddr);
///
/// impl Transport for Tcp {
///     fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>> {
///         Box::pin(async move {
///             let stream = tokio::net::TcpStream::connect(self.0).await?;
///             Ok(Box::new(stream) as Box<dyn TransportStream>)
///         })
///     }
///
///     fn peer(&self) -> String {
///         self.0.to_string()
///     }
/// }
/// ```
pub trait Transport: Send + Sync + 'static {
    /// Open a stream to the broker. The client then sends CONNECT on it.
    ///
    /// # Errors
    ///
    /// Any `io::Error`: the attempt fails with it (see the trait's documentation).
    ///
    /// # Cancel safety
    ///
    /// The future is dropped when the connect timeout expires or the client stops.
    fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>>;

    /// The broker as errors and logs name it, e.g. `unix:/run/mosquitto.sock`.
    fn peer(&self) -> String;
}

/// A broker's Unix domain socket, such as Mosquitto's `listener 0 /path/to.sock`
/// (the `unix:///path/to.sock` URL sets this transport).
#[cfg(unix)]
#[derive(Debug, Clone)]
pub struct UnixSocket {
    path: PathBuf,
}

#[cfg(unix)]
impl UnixSocket {
    /// The socket at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        UnixSocket { path: path.into() }
    }
}

#[cfg(unix)]
impl Transport for UnixSocket {
    fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>> {
        Box::pin(async move {
            let stream = tokio::net::UnixStream::connect(&self.path).await?;
            Ok(Box::new(stream) as Box<dyn TransportStream>)
        })
    }

    fn peer(&self) -> String {
        format!("unix:{}", self.path.display())
    }
}

/// The built-in network transport: TCP to the broker or through a proxy, then TLS
/// when configured, then WebSocket for `ws://`/`wss://` URLs.
pub(crate) struct Network {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) nodelay: bool,
    pub(crate) proxy: Option<ProxyConfig>,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<Arc<rustls::ClientConfig>>,
    #[cfg(feature = "websocket")]
    pub(crate) websocket: Option<super::websocket::WebSocketSettings>,
}

impl Network {
    async fn open(&self) -> Result<Box<dyn TransportStream>, LinkError> {
        let tcp = match &self.proxy {
            Some(proxy) => proxy.tunnel(&self.host, self.port, self.nodelay).await?,
            None => tcp_connect(&self.host, self.port, self.nodelay).await?,
        };
        let stream: Box<dyn TransportStream> = Box::new(tcp);
        #[cfg(feature = "tls")]
        let stream: Box<dyn TransportStream> = match &self.tls {
            Some(config) => Box::new(tls_connect(&self.host, Arc::clone(config), stream).await?),
            None => stream,
        };
        #[cfg(feature = "websocket")]
        let stream: Box<dyn TransportStream> = match &self.websocket {
            Some(ws) => Box::new(ws.handshake(&self.peer(), self.secure(), stream).await?),
            None => stream,
        };
        Ok(stream)
    }

    #[cfg(all(feature = "websocket", feature = "tls"))]
    fn secure(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(all(feature = "websocket", not(feature = "tls")))]
    fn secure(&self) -> bool {
        false
    }
}

impl Transport for Network {
    fn connect(&self) -> BoxFuture<'_, io::Result<Box<dyn TransportStream>>> {
        Box::pin(async move { self.open().await.map_err(io::Error::other) })
    }

    fn peer(&self) -> String {
        host_port(&self.host, self.port)
    }
}

/// `host:port`, an IPv6 host in brackets.
pub(crate) fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The [`LinkError`] a transport's error stands for: a built-in transport's own
/// (carried inside the `io::Error`), else [`LinkError::Transport`].
pub(crate) fn link_error(error: io::Error) -> LinkError {
    if !error.get_ref().is_some_and(|inner| inner.is::<LinkError>()) {
        return LinkError::Transport(error);
    }
    match error
        .into_inner()
        .map(|inner| inner.downcast::<LinkError>())
    {
        Some(Ok(link)) => *link,
        Some(Err(other)) => LinkError::Transport(io::Error::other(other)),
        None => LinkError::Transport(io::Error::other("the transport failed")),
    }
}

/// Connect to `host:port`, trying each address it resolves to.
pub(crate) async fn tcp_connect(
    host: &str,
    port: u16,
    nodelay: bool,
) -> Result<TcpStream, LinkError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| LinkError::Dns {
            host: host.to_owned(),
            source,
        })?;
    let mut last = None;
    for addr in addrs {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_nodelay(nodelay)?;
        match socket.connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
    }
    Err(match last {
        Some(e) => LinkError::Io(e),
        None => LinkError::Dns {
            host: host.to_owned(),
            source: io::Error::new(io::ErrorKind::NotFound, "no address"),
        },
    })
}

#[cfg(feature = "tls")]
async fn tls_connect(
    host: &str,
    config: Arc<rustls::ClientConfig>,
    stream: Box<dyn TransportStream>,
) -> Result<tokio_rustls::client::TlsStream<Box<dyn TransportStream>>, LinkError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_owned())
        .map_err(|e| LinkError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    tokio_rustls::TlsConnector::from(config)
        .connect(name, stream)
        .await
        .map_err(LinkError::Tls)
}

/// Linux's `TCP_QUICKACK`: a delayed acknowledgement goes out at once. Best effort:
/// on failure it goes out after the delay, as it would anyway.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn quick_ack(tcp: &TcpStream) {
    let _ = socket2::SockRef::from(tcp).set_tcp_quickack(true);
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn quick_ack(_tcp: &TcpStream) {}
