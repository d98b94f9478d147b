//! HTTP CONNECT proxies: the client asks the proxy for a tunnel to the broker, then
//! speaks TLS, WebSocket or MQTT through it.
//!
//! The CONNECT exchange is written here (the response is parsed with `httparse`):
//! the one crate for it, `async-http-proxy` (last release 2022), insists on the
//! reason phrase "Connection established" (many proxies answer "OK"), reads through
//! a buffer that can swallow bytes of the tunnel, and pulls in a second `base64`.
//! Only basic credentials are supported.

use std::fmt;

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::engine::LinkError;
use super::transport::{host_port, tcp_connect};
use crate::error::{ConfigError, quote_input};

/// The most bytes of a proxy's answer read before it is called no HTTP.
const MAX_ANSWER: usize = 8 * 1024;
/// The most header lines of a proxy's answer parsed.
const MAX_HEADERS: usize = 32;

/// An HTTP proxy that tunnels the broker connection (`CONNECT host:port`), with
/// optional basic credentials. `Debug` and errors never show the password.
///
/// ```
/// use courier_core::client::ProxyConfig;
///
/// let proxy = ProxyConfig::from_url("http://alice:s3cret@proxy.internal:3128")?;
/// assert_eq!(proxy, ProxyConfig::new("proxy.internal", 3128).credentials("alice", "s3cret"));
/// assert!(!format!("{proxy:?}").contains("s3cret"));
/// # Ok::<(), courier_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyConfig {
    host: String,
    port: u16,
    credentials: Option<(String, String)>,
}

impl ProxyConfig {
    /// The proxy at `host:port`, without credentials.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        ProxyConfig {
            host: host.into(),
            port,
            credentials: None,
        }
    }

    /// Send basic credentials (`Proxy-Authorization: Basic ...`).
    #[must_use]
    pub fn credentials(mut self, username: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((username.into(), password.into()));
        self
    }

    /// A proxy given as `http://[user:password@]host[:port]` (port 80 by default),
    /// percent-encoded as URLs are.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidAddress`] (without the password) when the URL cannot be
    /// parsed, is not `http://`, has no host, has a path or query, or a password
    /// without a user name.
    pub fn from_url(input: &str) -> Result<Self, ConfigError> {
        let invalid = |reason| ConfigError::InvalidAddress {
            address: quote_input(&super::broker_url::redact(input)),
            reason,
        };
        let url = url::Url::parse(input).map_err(|_| invalid("not a URL"))?;
        if url.scheme() != "http" {
            return Err(invalid("a proxy URL must start with http://"));
        }
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err(invalid("a proxy URL has no path or query"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(name)) if !name.is_empty() => name.to_owned(),
            Some(url::Host::Ipv4(ip)) => ip.to_string(),
            Some(url::Host::Ipv6(ip)) => ip.to_string(),
            _ => return Err(invalid("empty host")),
        };
        let mut proxy = ProxyConfig::new(host, url.port().unwrap_or(80));
        if url.username().is_empty() && url.password().is_some() {
            return Err(invalid("a password without a user name"));
        }
        if !url.username().is_empty() {
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .map_err(|_| invalid("the credentials are not UTF-8"))
            };
            let password = decode(url.password().unwrap_or_default())?;
            proxy = proxy.credentials(decode(url.username())?, password);
        }
        Ok(proxy)
    }

    /// The proxy as errors name it: `host:port`.
    pub fn address(&self) -> String {
        host_port(&self.host, self.port)
    }

    /// A TCP connection to the proxy, tunnelled to `host:port`.
    pub(crate) async fn tunnel(
        &self,
        host: &str,
        port: u16,
        nodelay: bool,
    ) -> Result<TcpStream, LinkError> {
        let failed = |source| LinkError::Proxy {
            proxy: self.address(),
            source,
        };
        let mut tcp = match tcp_connect(&self.host, self.port, nodelay).await {
            Ok(tcp) => tcp,
            Err(LinkError::Io(source) | LinkError::Dns { source, .. }) => {
                return Err(failed(source));
            }
            Err(other) => return Err(other),
        };
        tcp.write_all(self.request(host, port).as_bytes())
            .await
            .map_err(failed)?;
        let status = read_status(&mut tcp).await.map_err(failed)?;
        if !(200..300).contains(&status) {
            return Err(LinkError::ProxyRefused {
                proxy: self.address(),
                status,
            });
        }
        Ok(tcp)
    }

    /// The CONNECT request for `host:port`.
    fn request(&self, host: &str, port: u16) -> String {
        let target = host_port(host, port);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some((username, password)) = &self.credentials {
            let token =
                base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
            request.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
        }
        request.push_str("\r\n");
        request
    }
}

impl fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProxyConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("username", &self.credentials.as_ref().map(|(u, _)| u))
            .field("password", &self.credentials.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Read the proxy's answer to CONNECT, up to the blank line that ends its header, and
/// return its status code. The protocols tunnelled (MQTT, TLS, WebSocket) speak
/// first from the client, so nothing may follow the answer yet: bytes after it are
/// an error rather than being lost.
async fn read_status(tcp: &mut TcpStream) -> std::io::Result<u16> {
    let no_http = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_owned());
    let mut answer = Vec::with_capacity(256);
    loop {
        if answer.len() >= MAX_ANSWER {
            return Err(no_http("its answer to CONNECT is no HTTP (too long)"));
        }
        let mut chunk = [0u8; 512];
        let n = tcp.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "it closed the connection without answering CONNECT",
            ));
        }
        answer.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&answer) {
            Ok(httparse::Status::Complete(len)) => {
                if len != answer.len() {
                    return Err(no_http("it sent bytes after its answer to CONNECT"));
                }
                return response
                    .code
                    .ok_or_else(|| no_http("its answer to CONNECT has no status"));
            }
            Ok(httparse::Status::Partial) => {}
            Err(_) => return Err(no_http("its answer to CONNECT is no HTTP")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_url_takes_credentials_and_defaults_the_port() {
        let proxy = ProxyConfig::from_url("http://u%40x:p%3Aw@proxy").unwrap();
        assert_eq!(
            proxy,
            ProxyConfig::new("proxy", 80).credentials("u@x", "p:w")
        );
        assert!(ProxyConfig::from_url("socks5://proxy:1080").is_err());
        assert!(ProxyConfig::from_url("http://:pw@proxy").is_err());
        let error = ProxyConfig::from_url("http://u:s3cret@proxy/path").unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn request_carries_basic_credentials() {
        let request = ProxyConfig::new("p", 1)
            .credentials("Aladdin", "open sesame")
            .request("broker", 1883);
        assert!(request.starts_with("CONNECT broker:1883 HTTP/1.1\r\nHost: broker:1883\r\n"));
        assert!(request.contains("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
    }
}
