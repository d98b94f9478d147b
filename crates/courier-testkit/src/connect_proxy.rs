//! [`ConnectProxy`]: a small HTTP CONNECT proxy, as corporate networks put between
//! clients and the internet, for testing clients that tunnel through one.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::accept::serve_until_cancelled;

/// The most bytes of a request header read.
const MAX_REQUEST: usize = 8 * 1024;

/// Listens on a free loopback port and answers `CONNECT host:port` with a tunnel
/// (`200`), or `407` when credentials are required and missing or wrong, `400` for
/// anything but CONNECT, `502` when the target cannot be reached. Counts the tunnels
/// opened, so that a test can assert a client really went through it. Dropping the
/// proxy stops accepting and closes its tunnels.
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// The `Proxy-Authorization` value required, if any.
    authorization: Option<String>,
    tunnels: AtomicU64,
    refused: AtomicU64,
    shutdown: CancellationToken,
}

impl ConnectProxy {
    /// A proxy that lets anyone through.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn start() -> io::Result<ConnectProxy> {
        Self::start_with(None).await
    }

    /// A proxy that requires these basic credentials.
    ///
    /// # Errors
    ///
    /// The listener cannot be bound.
    pub async fn with_credentials(username: &str, password: &str) -> io::Result<ConnectProxy> {
        let token =
            base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
        Self::start_with(Some(format!("Basic {token}"))).await
    }

    async fn start_with(authorization: Option<String>) -> io::Result<ConnectProxy> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            authorization,
            tunnels: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            shutdown: CancellationToken::new(),
        });
        tokio::spawn(serve_until_cancelled(
            listener,
            shared.shutdown.clone(),
            Arc::clone(&shared),
            |shared, client| async move {
                let _ = serve(&shared, client).await;
            },
        ));
        Ok(ConnectProxy { addr, shared })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Tunnels opened so far (answered `200`).
    pub fn tunnels(&self) -> u64 {
        self.shared.tunnels.load(Ordering::SeqCst)
    }

    /// Requests refused so far (`400`, `407` or `502`).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// One client: its CONNECT request, then the tunnel.
async fn serve(shared: &Shared, mut client: TcpStream) -> io::Result<()> {
    let (target, authorization, rest) = match read_request(&mut client).await? {
        Some(request) => request,
        None => return refuse(shared, &mut client, "400 Bad Request", "").await,
    };
    if shared.authorization.is_some() && authorization != shared.authorization {
        let challenge = "Proxy-Authenticate: Basic realm=\"courier-testkit\"\r\n";
        return refuse(
            shared,
            &mut client,
            "407 Proxy Authentication Required",
            challenge,
        )
        .await;
    }
    let Ok(mut broker) = TcpStream::connect(&target).await else {
        return refuse(shared, &mut client, "502 Bad Gateway", "").await;
    };
    let _ = broker.set_nodelay(true);
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;
    shared.tunnels.fetch_add(1, Ordering::SeqCst);
    broker.write_all(&rest).await?;
    tokio::io::copy_bidirectional(&mut client, &mut broker).await?;
    Ok(())
}

async fn refuse(
    shared: &Shared,
    client: &mut TcpStream,
    status: &str,
    headers: &str,
) -> io::Result<()> {
    shared.refused.fetch_add(1, Ordering::SeqCst);
    let answer = format!("HTTP/1.1 {status}\r\n{headers}Content-Length: 0\r\n\r\n");
    client.write_all(answer.as_bytes()).await
}

/// The CONNECT target, the `Proxy-Authorization` value and any bytes after the
/// request; `None` for a request that is not a well-formed CONNECT.
async fn read_request(
    client: &mut TcpStream,
) -> io::Result<Option<(String, Option<String>, Vec<u8>)>> {
    let mut request = Vec::new();
    while request.len() < MAX_REQUEST {
        let mut chunk = [0u8; 1024];
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        request.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&request) {
            Ok(httparse::Status::Complete(len)) => {
                if parsed.method != Some("CONNECT") {
                    return Ok(None);
                }
                let Some(target) = parsed.path.map(str::to_owned) else {
                    return Ok(None);
                };
                let authorization = parsed
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("Proxy-Authorization"))
                    .map(|h| String::from_utf8_lossy(h.value).into_owned());
                return Ok(Some((target, authorization, request[len..].to_vec())));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Ok(None),
        }
    }
    Ok(None)
}
