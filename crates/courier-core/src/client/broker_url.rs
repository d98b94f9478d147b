//! Broker URLs, parsed with the `url` crate:
//! `scheme://[user[:password]@]host[:port][/][?option=value&...]`.
//!
//! Schemes (any letter case): `mqtt` and `tcp` (port 1883 by default), `mqtts`,
//! `ssl` and `tls` (TLS, port 8883 by default), `ws` and `wss` (MQTT over WebSocket,
//! over TLS for `wss`; ports 80 and 443 by default; the path is the WebSocket's,
//! [`/mqtt`](DEFAULT_WS_PATH) when the URL has none), and `unix:///path/to.sock` (a
//! Unix domain socket; no host, port or credentials). Query options: `client_id`,
//! `keep_alive` (whole seconds) and `clean_session` (`true` or `false`). A password
//! never appears in an error or in `Debug` output: it is replaced by `***`.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use percent_encoding::percent_decode_str;
use url::{Host, Url};

use super::options::ClientBuilder;
use crate::error::{ConfigError, quote_input};

/// The WebSocket path of a `ws://` or `wss://` URL without one. Mosquitto, EMQX and
/// HiveMQ serve MQTT on `/mqtt`; RabbitMQ's `web_mqtt` on `/ws` (give it in the URL).
pub const DEFAULT_WS_PATH: &str = "/mqtt";

/// What replaces a password wherever a URL is shown.
const REDACTED: &str = "***";

/// A broker URL taken apart: where to connect, whether over TLS, and the
/// credentials and options it carries.
///
/// [`ClientBuilder::url`] parses with this type. It is public so that programs can
/// look at an address (to probe it, say) with exactly the client's rules.
///
/// ```
/// use courier_core::BrokerUrl;
///
/// let url = BrokerUrl::parse("MQTTS://svc:s3cret@broker.example?client_id=svc-1")?;
/// assert_eq!((url.host(), url.port(), url.tls()), ("broker.example", 8883, true));
/// assert_eq!(url.client_id(), Some("svc-1"));
/// assert!(!format!("{url:?}").contains("s3cret"));
/// # Ok::<(), courier_core::ConfigError>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    host: String,
    port: u16,
    tls: bool,
    route: Route,
    username: Option<String>,
    password: Option<String>,
    client_id: Option<String>,
    keep_alive: Option<Duration>,
    clean_session: Option<bool>,
}

impl BrokerUrl {
    /// Parse `input`.
    ///
    /// # Errors
    ///
    /// [`ConfigError::InvalidAddress`] when the URL cannot be parsed, its scheme is
    /// not an MQTT one, or it has no host; [`ConfigError::InvalidUrlOption`] for an
    /// unknown query option or an invalid value. Neither repeats a password.
    pub fn parse(input: &str) -> Result<Self, ConfigError> {
        parse(input).map_err(AddressProblem::into_error)
    }

    /// [`parse`](Self::parse) with the error kept cloneable, for the builder.
    pub(crate) fn parse_kept(input: &str) -> Result<Self, AddressProblem> {
        parse(input)
    }

    /// The host name or IP address (an IPv6 address without its brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The port: the URL's, or the scheme's default (1883, or 8883 with TLS).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the scheme asks for TLS (`mqtts`, `ssl`, `tls`, `wss`).
    pub fn tls(&self) -> bool {
        self.tls
    }

    /// The WebSocket path of a `ws://` or `wss://` URL (the URL's, else
    /// [`DEFAULT_WS_PATH`]); `None` for other schemes.
    pub fn websocket_path(&self) -> Option<&str> {
        match &self.route {
            Route::WebSocket { path } => Some(path),
            _ => None,
        }
    }

    /// The socket path of a `unix://` URL (whose [`host`](Self::host) is empty and
    /// [`port`](Self::port) 0); `None` for other schemes.
    pub fn unix_path(&self) -> Option<&str> {
        match &self.route {
            Route::Unix(path) => Some(path),
            _ => None,
        }
    }

    /// The user name before the `@`, percent-decoded.
    pub fn username(&self) -> Option<&str> {
        self.username.as_deref()
    }

    /// The `client_id` query option.
    pub fn client_id(&self) -> Option<&str> {
        self.client_id.as_deref()
    }

    /// The `keep_alive` query option.
    pub fn keep_alive(&self) -> Option<Duration> {
        self.keep_alive
    }

    /// The `clean_session` query option.
    pub fn clean_session(&self) -> Option<bool> {
        self.clean_session
    }

    /// Set on `builder` what this URL says: the address always, credentials and
    /// options only when present. (TLS is the caller's part.)
    pub(crate) fn apply_to(self, builder: &mut ClientBuilder) {
        builder.host = Some(self.host).filter(|host| !host.is_empty());
        builder.port = self.port;
        builder.route = self.route;
        if let Some(username) = self.username {
            builder.username = Some(username);
            builder.password = self.password;
        }
        if let Some(id) = self.client_id {
            builder.client_id = id;
        }
        if let Some(keep_alive) = self.keep_alive {
            builder.keep_alive = keep_alive;
        }
        if let Some(clean) = self.clean_session {
            builder.clean_session = clean;
        }
    }
}

impl fmt::Debug for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerUrl")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("route", &self.route)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| REDACTED))
            .field("client_id", &self.client_id)
            .field("keep_alive", &self.keep_alive)
            .field("clean_session", &self.clean_session)
            .finish()
    }
}

/// How a URL reaches its broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// MQTT right on the TCP (or TLS) stream.
    Tcp,
    /// MQTT in WebSocket binary messages, upgraded at this path.
    WebSocket { path: String },
    /// A Unix domain socket at this path.
    Unix(String),
}

/// A problem with the address given to `url()`, kept (cloneably) in the builder until
/// `validate()` turns it into a [`ConfigError`]. No variant holds a password.
#[derive(Debug, Clone)]
pub(crate) enum AddressProblem {
    Invalid {
        /// The URL as given, its password redacted.
        address: String,
        reason: &'static str,
    },
    Option {
        option: String,
        reason: &'static str,
    },
    Tls(String),
}

impl AddressProblem {
    pub(crate) fn into_error(self) -> ConfigError {
        match self {
            AddressProblem::Invalid { address, reason } => {
                ConfigError::InvalidAddress { address, reason }
            }
            AddressProblem::Option { option, reason } => {
                ConfigError::InvalidUrlOption { option, reason }
            }
            AddressProblem::Tls(reason) => ConfigError::Tls(reason.into()),
        }
    }
}

fn parse(input: &str) -> Result<BrokerUrl, AddressProblem> {
    let invalid = |reason| AddressProblem::Invalid {
        address: quote_input(&redact(input)),
        reason,
    };
    if !input.contains("://") {
        return Err(invalid("missing scheme (mqtt:// or mqtts://)"));
    }
    let url = Url::parse(input).map_err(|e| invalid(url_error_reason(e)))?;
    let (tls, default_port, websocket) = match url.scheme() {
        "mqtt" | "tcp" => (false, 1883, false),
        "mqtts" | "ssl" | "tls" => (true, 8883, false),
        "ws" => (false, 80, true),
        "wss" => (true, 443, true),
        "unix" => return parse_unix(&url, invalid),
        _ => {
            return Err(invalid(
                "unsupported scheme: use mqtt://, mqtts://, ws://, wss:// or unix://",
            ));
        }
    };
    let host = match url.host() {
        Some(Host::Domain(name)) if !name.is_empty() => name.to_owned(),
        Some(Host::Ipv4(ip)) => ip.to_string(),
        Some(Host::Ipv6(ip)) => ip.to_string(),
        _ => return Err(invalid("empty host")),
    };
    if url.fragment().is_some() {
        return Err(invalid("a fragment is not used by MQTT: remove it"));
    }
    let route = match (websocket, url.path()) {
        (true, "" | "/") => Route::WebSocket {
            path: DEFAULT_WS_PATH.to_owned(),
        },
        (true, path) => Route::WebSocket {
            path: path.to_owned(),
        },
        (false, "" | "/") => Route::Tcp,
        (false, _) => {
            return Err(invalid(
                "a path is used by ws:// and wss:// only: remove it",
            ));
        }
    };
    let username = match url.username() {
        "" => None,
        name => Some(decode(name).ok_or_else(|| invalid("the user name is not UTF-8"))?),
    };
    let password = match url.password() {
        None => None,
        Some(_) if username.is_none() => return Err(invalid("a password without a user name")),
        Some(p) => Some(decode(p).ok_or_else(|| invalid("the password is not UTF-8"))?),
    };
    with_query_options(
        BrokerUrl {
            host,
            port: url.port().unwrap_or(default_port),
            tls,
            route,
            username,
            password,
            client_id: None,
            keep_alive: None,
            clean_session: None,
        },
        &url,
    )
}

/// A `unix:///path/to.sock` URL: a path, no host, port or credentials.
fn parse_unix(
    url: &Url,
    invalid: impl Fn(&'static str) -> AddressProblem,
) -> Result<BrokerUrl, AddressProblem> {
    if url.host_str().is_some_and(|host| !host.is_empty()) || url.port().is_some() {
        return Err(invalid(
            "a unix:// URL has no host or port: unix:///path/to.sock",
        ));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("a unix:// URL carries no credentials"));
    }
    if url.fragment().is_some() {
        return Err(invalid("a fragment is not used by MQTT: remove it"));
    }
    let path = decode(url.path()).ok_or_else(|| invalid("the socket path is not UTF-8"))?;
    if matches!(path.as_str(), "" | "/") {
        return Err(invalid("no socket path: unix:///path/to.sock"));
    }
    with_query_options(
        BrokerUrl {
            host: String::new(),
            port: 0,
            tls: false,
            route: Route::Unix(path),
            username: None,
            password: None,
            client_id: None,
            keep_alive: None,
            clean_session: None,
        },
        url,
    )
}

/// `parsed` with the options of `url`'s query applied.
fn with_query_options(mut parsed: BrokerUrl, url: &Url) -> Result<BrokerUrl, AddressProblem> {
    for (key, value) in url.query_pairs() {
        apply_option(&mut parsed, &key, value)?;
    }
    Ok(parsed)
}

/// One `key=value` of the query.
fn apply_option(url: &mut BrokerUrl, key: &str, value: Cow<'_, str>) -> Result<(), AddressProblem> {
    let problem = |reason| AddressProblem::Option {
        option: quote_input(key),
        reason,
    };
    match key {
        "client_id" => url.client_id = Some(value.into_owned()),
        "keep_alive" => {
            let seconds = value
                .parse()
                .map_err(|_| problem("not a whole number of seconds"))?;
            url.keep_alive = Some(Duration::from_secs(seconds));
        }
        "clean_session" => {
            url.clean_session = Some(match value.as_ref() {
                "true" => true,
                "false" => false,
                _ => return Err(problem("use true or false")),
            });
        }
        _ => {
            return Err(problem(
                "unknown option: use client_id, keep_alive or clean_session",
            ));
        }
    }
    Ok(())
}

fn decode(s: &str) -> Option<String> {
    percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

fn url_error_reason(e: url::ParseError) -> &'static str {
    match e {
        url::ParseError::InvalidPort => "invalid port (1 to 65535)",
        url::ParseError::EmptyHost => "empty host",
        url::ParseError::InvalidIpv6Address => "invalid IPv6 address",
        url::ParseError::InvalidIpv4Address => "invalid IPv4 address",
        url::ParseError::InvalidDomainCharacter => "invalid character in the host",
        _ => "not a URL",
    }
}

/// `input` with the password of its `user:password@` part, if any, replaced. Works
/// on text the `url` crate refuses too, so that no error can echo a password.
pub(crate) fn redact(input: &str) -> Cow<'_, str> {
    let authority_start = input.find("://").map_or(0, |scheme_end| scheme_end + 3);
    let rest = &input[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_len].rfind('@') else {
        return Cow::Borrowed(input);
    };
    let Some(colon) = rest[..at].find(':') else {
        return Cow::Borrowed(input);
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    Cow::Owned(format!(
        "{}{REDACTED}{}",
        &input[..password_start],
        &input[password_end..]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(input: &str) -> BrokerUrl {
        match BrokerUrl::parse(input) {
            Ok(url) => url,
            Err(e) => panic!("{input}: {e}"),
        }
    }

    fn reason(input: &str) -> &'static str {
        match BrokerUrl::parse(input) {
            Err(ConfigError::InvalidAddress { reason, .. }) => reason,
            other => panic!("{input}: expected InvalidAddress, got {other:?}"),
        }
    }

    #[test]
    fn hosts_ports_and_schemes() {
        let cases = [
            ("mqtt://broker", "broker", 1883, false),
            ("tcp://10.0.0.1:1884", "10.0.0.1", 1884, false),
            ("mqtts://b.example:8884/", "b.example", 8884, true),
            ("ssl://b.example", "b.example", 8883, true),
            ("tls://b.example", "b.example", 8883, true),
            ("mqtt://[::1]:1999", "::1", 1999, false),
            ("MQTT://broker", "broker", 1883, false),
            ("Mqtts://broker", "broker", 8883, true),
        ];
        for (input, host, port, tls) in cases {
            let url = ok(input);
            assert_eq!(
                (url.host(), url.port(), url.tls()),
                (host, port, tls),
                "{input}"
            );
        }
    }

    #[test]
    fn bad_urls_say_why() {
        assert_eq!(
            reason("broker:1883"),
            "missing scheme (mqtt:// or mqtts://)"
        );
        assert_eq!(
            reason("http://x"),
            "unsupported scheme: use mqtt://, mqtts://, ws://, wss:// or unix://"
        );
        assert_eq!(
            reason("mqtt://localhost:99999"),
            "invalid port (1 to 65535)"
        );
        assert_eq!(reason("mqtt://x:notaport"), "invalid port (1 to 65535)");
        assert_eq!(reason("mqtt://[::1"), "invalid IPv6 address");
        assert_eq!(reason("mqtt://:1883"), "empty host");
        assert_eq!(
            reason("mqtt://x/some/path"),
            "a path is used by ws:// and wss:// only: remove it"
        );
        assert_eq!(
            reason("unix://host/x.sock"),
            "a unix:// URL has no host or port: unix:///path/to.sock"
        );
        assert_eq!(reason("unix:///"), "no socket path: unix:///path/to.sock");
        assert_eq!(reason("mqtt://:pw@x"), "a password without a user name");
    }

    #[test]
    fn websocket_and_unix_urls() {
        let ws = ok("ws://broker");
        assert_eq!(
            (ws.port(), ws.tls(), ws.websocket_path()),
            (80, false, Some("/mqtt"))
        );
        let wss = ok("WSS://broker:8884/ws?client_id=x");
        assert_eq!((wss.port(), wss.tls()), (8884, true));
        assert_eq!(wss.websocket_path(), Some("/ws"));
        assert_eq!(wss.client_id(), Some("x"));
        assert_eq!(ok("mqtt://broker").websocket_path(), None);
        let unix = ok("unix:///run/mosquitto%20x.sock?client_id=u");
        assert_eq!(unix.unix_path(), Some("/run/mosquitto x.sock"));
        assert_eq!(
            (unix.host(), unix.port(), unix.client_id()),
            ("", 0, Some("u"))
        );
    }

    #[test]
    fn query_options() {
        let url = ok("mqtt://broker?client_id=svc%201&keep_alive=30&clean_session=true");
        assert_eq!(url.client_id(), Some("svc 1"));
        assert_eq!(url.keep_alive(), Some(Duration::from_secs(30)));
        assert_eq!(url.clean_session(), Some(true));
        // The issue's example: a query right after the host is not a port.
        assert_eq!(ok("mqtt://localhost?client_id=x").client_id(), Some("x"));
        assert_eq!(
            ok("mqtt://localhost/?clean_session=false").clean_session(),
            Some(false)
        );
    }

    #[test]
    fn bad_query_options_name_the_option() {
        for (input, option, why) in [
            (
                "mqtt://b?qos=1",
                "qos",
                "unknown option: use client_id, keep_alive or clean_session",
            ),
            (
                "mqtt://b?keep_alive=soon",
                "keep_alive",
                "not a whole number of seconds",
            ),
            (
                "mqtt://b?clean_session=yes",
                "clean_session",
                "use true or false",
            ),
        ] {
            match BrokerUrl::parse(input) {
                Err(ConfigError::InvalidUrlOption { option: o, reason }) => {
                    assert_eq!((o.as_str(), reason), (option, why), "{input}");
                }
                other => panic!("{input}: expected InvalidUrlOption, got {other:?}"),
            }
        }
    }

    #[test]
    fn credentials_are_decoded() {
        let url = ok("mqtt://svc%40corp:p%3Ass@broker");
        assert_eq!(url.username(), Some("svc@corp"));
        assert_eq!(url.password.as_deref(), Some("p:ss"));
        let user_only = ok("mqtt://svc@broker");
        assert_eq!(
            (user_only.username(), user_only.password.as_deref()),
            (Some("svc"), None)
        );
    }

    #[test]
    fn no_error_or_debug_output_shows_the_password() {
        let secret = "s3cr%65t";
        let inputs = [
            format!("mqtt://u:{secret}@host:99999"),
            format!("http://u:{secret}@host"),
            format!("mqtt://u:{secret}@[::1"),
            format!("mqtt://u:{secret}@host/path"),
            format!("mqtt://u:{secret}@host?nope=1"),
            format!("mqtt://u:{secret}@host?keep_alive=x"),
            format!("mqtt://u:{secret}@"),
            format!("mqtt://u:{secret}@@host:1:2"),
            format!("u:{secret}@host:1883"),
        ];
        for input in &inputs {
            let err = BrokerUrl::parse(input).err();
            let Some(err) = err else {
                panic!("{input} parsed")
            };
            for shown in [err.to_string(), format!("{err:?}")] {
                assert!(!shown.contains("s3cr"), "{input} shown as {shown}");
            }
        }
        let parsed = ok(&format!("mqtt://u:{secret}@host"));
        assert_eq!(parsed.password.as_deref(), Some("s3cret"));
        assert!(!format!("{parsed:?}").contains("s3cr"));
    }

    #[test]
    fn the_builder_takes_the_url_options_and_later_setters_win() {
        let b = ClientBuilder::new().client_id("before").url(
            "tcp://svc:hunter3@broker:1884?client_id=from-url&keep_alive=5&clean_session=true",
        );
        assert_eq!((b.host.as_deref(), b.port), (Some("broker"), 1884));
        assert_eq!(b.client_id, "from-url");
        assert_eq!(b.keep_alive, Duration::from_secs(5));
        assert!(b.clean_session);
        assert_eq!(
            (b.username.as_deref(), b.password.as_deref()),
            (Some("svc"), Some("hunter3"))
        );
        assert!(!format!("{b:?}").contains("hunter3"));
        let b = b.client_id("after").url("mqtt://other");
        assert_eq!(b.client_id, "after");
        assert_eq!(b.username.as_deref(), Some("svc"));
    }

    #[test]
    fn the_builder_reports_a_bad_url_without_its_password() {
        let err = ClientBuilder::new()
            .client_id("t")
            .url("mqtt://u:hunter2@broker:70000")
            .validate()
            .err();
        let Some(err) = err else {
            panic!("a bad port was accepted")
        };
        assert!(matches!(err, ConfigError::InvalidAddress { .. }));
        assert!(!err.to_string().contains("hunter2"));
        assert!(err.to_string().contains("mqtt://u:***@broker:70000"));
    }

    #[test]
    fn redaction_keeps_the_rest() {
        assert_eq!(redact("mqtt://u:pw@h:1/x?y"), "mqtt://u:***@h:1/x?y");
        assert_eq!(redact("mqtt://u@h"), "mqtt://u@h");
        assert_eq!(redact("mqtt://h?a=b@c:d"), "mqtt://h?a=b@c:d");
        assert_eq!(redact("u:pw@h:1883"), "u:***@h:1883");
    }
}
