//! [`WsFront`]: a WebSocket front for a TCP broker, as Mosquitto's or EMQX's
//! WebSocket listener is, for testing MQTT over `ws://` and `wss://`.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_util::sync::CancellationToken;

use crate::accept::serve_until_cancelled;

/// The WebSocket path a front serves unless told otherwise.
pub(crate) const DEFAULT_PATH: &str = "/mqtt";

/// Listens on a free loopback port, accepts WebSocket upgrades on one path with
/// subprotocol `mqtt` (404 for another path, 400 without the subprotocol), and pipes
/// binary messages to and from a TCP connection to the broker, one per client.
///
/// Bytes from the broker go out as they are read (several MQTT packets in one message,
/// or a packet split over several with [`max_message`](Self::max_message)). Dropping
/// the front stops accepting and closes its connections.
pub struct WsFront {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    path: String,
    tls: Option<TlsAcceptor>,
    /// Split what the broker sends into messages of at most this many bytes.
    max_message: AtomicUsize,
    upgrades: AtomicU64,
    /// The headers of the last upgrade request, as `name: value` lines.
    last_headers: Mutex<Vec<(String, String)>>,
    shutdown: CancellationToken,
}

impl WsFront {
    /// A `ws://` front for the broker at `upstream`, serving `/mqtt`.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start(upstream: SocketAddr) -> io::Result<WsFront> {
        Self::start_with(upstream, DEFAULT_PATH, None).await
    }

    /// A `wss://` front serving `/mqtt` with this certificate chain and
    /// private key (PEM).
    ///
    /// # Errors
    ///
    /// The PEM cannot be used, or the listener cannot be bound.
    pub async fn start_tls(
        upstream: SocketAddr,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> io::Result<WsFront> {
        let invalid =
            |e: &dyn std::fmt::Display| io::Error::new(io::ErrorKind::InvalidInput, e.to_string());
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(&e))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| invalid(&e))?;
        let config = ServerConfig::builder_with_provider(Arc::new(
            tokio_rustls::rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| invalid(&e))?;
        let acceptor = TlsAcceptor::from(Arc::new(config));
        Self::start_with(upstream, DEFAULT_PATH, Some(acceptor)).await
    }

    /// A `ws://` front serving `path` (e.g. `/ws`, as RabbitMQ's `web_mqtt` does).
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start_on_path(upstream: SocketAddr, path: &str) -> io::Result<WsFront> {
        Self::start_with(upstream, path, None).await
    }

    async fn start_with(
        upstream: SocketAddr,
        path: &str,
        tls: Option<TlsAcceptor>,
    ) -> io::Result<WsFront> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            path: path.to_owned(),
            tls,
            max_message: AtomicUsize::new(usize::MAX),
            upgrades: AtomicU64::new(0),
            last_headers: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        });
        let tls = shared.tls.is_some();
        tokio::spawn(serve_until_cancelled(
            listener,
            shared.shutdown.clone(),
            Arc::clone(&shared),
            |shared, tcp| async move {
                serve(&shared, tcp).await;
            },
        ));
        Ok(WsFront { addr, tls, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// The front's URL: `ws://127.0.0.1:PORT/path`, or `wss://localhost:PORT/path`
    /// with TLS (test certificates name `localhost`).
    pub fn url(&self) -> String {
        if self.tls {
            format!("wss://localhost:{}{}", self.port(), self.shared.path)
        } else {
            format!("ws://127.0.0.1:{}{}", self.port(), self.shared.path)
        }
    }

    /// Send what the broker sends in WebSocket messages of at most `bytes` bytes
    /// (MQTT packets split across messages), from the next read on.
    pub fn max_message(&self, bytes: usize) {
        self.shared
            .max_message
            .store(bytes.max(1), Ordering::SeqCst);
    }

    /// WebSocket upgrades accepted so far.
    pub fn upgrades(&self) -> u64 {
        self.shared.upgrades.load(Ordering::SeqCst)
    }

    /// The value of header `name` (case-insensitive) in the last upgrade request.
    pub fn last_header(&self, name: &str) -> Option<String> {
        let headers = self
            .shared
            .last_headers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    }
}

impl std::fmt::Debug for WsFront {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WsFront")
            .field("addr", &self.addr)
            .field("tls", &self.tls)
            .field("path", &self.shared.path)
            .field("upstream", &self.shared.upstream)
            .finish_non_exhaustive()
    }
}

impl Drop for WsFront {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

async fn serve(shared: &Shared, tcp: TcpStream) {
    let _ = tcp.set_nodelay(true);
    match &shared.tls {
        Some(acceptor) => {
            if let Ok(tls) = acceptor.accept(tcp).await {
                relay(shared, tls).await;
            }
        }
        None => relay(shared, tcp).await,
    }
}

/// Upgrade `client`, then pipe its binary messages to a new connection to the broker
/// and the broker's bytes back, until either side closes.
async fn relay<S: AsyncRead + AsyncWrite + Unpin>(shared: &Shared, client: S) {
    // The callback's type is tungstenite's, its error an HTTP response.
    #[allow(clippy::result_large_err, reason = "tungstenite's callback type")]
    let check = |request: &Request, mut response: Response| {
        let headers: Vec<(String, String)> = request
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        *shared
            .last_headers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = headers;
        if request.uri().path() != shared.path {
            return Err(refusal(StatusCode::NOT_FOUND));
        }
        let mqtt = request
            .headers()
            .get_all("Sec-WebSocket-Protocol")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == "mqtt");
        if !mqtt {
            return Err(refusal(StatusCode::BAD_REQUEST));
        }
        response
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", HeaderValue::from_static("mqtt"));
        Ok(response)
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(client, check).await else {
        return;
    };
    shared.upgrades.fetch_add(1, Ordering::SeqCst);
    let Ok(broker) = TcpStream::connect(shared.upstream).await else {
        return;
    };
    let _ = broker.set_nodelay(true);
    let (mut from_broker, mut to_broker) = broker.into_split();
    let (mut to_client, mut from_client) = ws.split();
    let upstream = async {
        while let Some(Ok(message)) = from_client.next().await {
            match message {
                Message::Binary(data) if to_broker.write_all(&data).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_broker.shutdown().await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from_broker.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let max = shared.max_message.load(Ordering::SeqCst);
            for chunk in buf[..n].chunks(max) {
                let message = Message::binary(chunk.to_vec());
                if to_client.send(message).await.is_err() {
                    return;
                }
            }
        }
        let _ = to_client.close().await;
    };
    tokio::select! {
        () = upstream => {}
        () = downstream => {}
    }
}

fn refusal(status: StatusCode) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    response
}
