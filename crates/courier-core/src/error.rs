//! Errors, one type per operation.
//!
//! Foreign errors (rumqttc, serde, io) are kept as [`source`](std::error::Error::source)s
//! rather than public variants, so upgrading a dependency never breaks a `match`.

use std::time::Duration;

use crate::topic::TopicError;

/// A type-erased error, as used by tower and async-nats.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Declares a codec error type: which codec failed, on which Rust type, and why.
macro_rules! codec_error {
    ($(#[$doc:meta])* $name:ident, $verb:literal, $role:literal) => {
        $(#[$doc])*
        #[derive(Debug, thiserror::Error)]
        #[error("cannot {} {type_name} with the {codec} codec: {source}", $verb)]
        pub struct $name {
            codec: &'static str,
            type_name: &'static str,
            #[source]
            source: BoxError,
        }

        impl $name {
            #[doc = concat!("A failure of `codec` to ", $verb, " ", $role, " of type `type_name`.")]
            pub fn new(codec: &'static str, type_name: &'static str, source: impl Into<BoxError>) -> Self {
                $name {
                    codec,
                    type_name,
                    source: source.into(),
                }
            }

            /// The codec that failed, e.g. `"json"`.
            pub fn codec(&self) -> &'static str {
                self.codec
            }

            #[doc = concat!("The Rust type of ", $role, ".")]
            pub fn type_name(&self) -> &'static str {
                self.type_name
            }
        }
    };
}

codec_error!(
    /// A payload could not be encoded.
    EncodeError,
    "encode",
    "the value"
);

codec_error!(
    /// A payload could not be decoded into the requested type.
    DecodeError,
    "decode",
    "the target"
);

/// Invalid client options, reported by `connect()`/`start()`/`run()` before anything is
/// sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No broker address was given.
    #[error("no broker address: set one with `address` or `url`")]
    MissingAddress,
    /// The address or URL could not be understood.
    #[error("invalid broker address {address:?}: {reason}")]
    InvalidAddress {
        /// The address as given, with any password in it replaced by `***`.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A query option of a broker URL is unknown or has an invalid value.
    #[error("broker URL option {option:?}: {reason}")]
    InvalidUrlOption {
        /// The option's name as given (truncated to 200 characters).
        option: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Keep-alive must be zero (off) or whole seconds from 1 to 65,535.
    #[error("keep-alive {0:?} is out of range: use zero or 1 s to 65535 s")]
    KeepAlive(Duration),
    /// MQTT 3.1.1 requires a client id when the session is persistent [MQTT-3.1.3-7].
    #[error("an empty client id requires clean_session(true)")]
    EmptyClientIdWithPersistentSession,
    /// MQTT 3.1.1 forbids a password without a user name [MQTT-3.1.2-22].
    #[error("a password was set without a user name")]
    PasswordWithoutUsername,
    /// A numeric option is out of its range.
    #[error("{option} = {value} is out of range ({range})")]
    OutOfRange {
        /// The option's name.
        option: &'static str,
        /// The value given.
        value: u64,
        /// The accepted range, in words.
        range: &'static str,
    },
    /// A duration option that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// The client must be started from within a Tokio runtime.
    #[error("no Tokio runtime: build the client from within a Tokio runtime")]
    NoRuntime,
    /// The last-will topic is not a valid topic name.
    #[error("invalid last-will topic {topic:?}")]
    InvalidLastWill {
        /// The topic as given (truncated to 200 characters).
        topic: String,
        /// The rule it breaks.
        #[source]
        source: TopicError,
    },
    /// The TLS configuration could not be built.
    #[error("invalid TLS configuration")]
    Tls(#[source] BoxError),
    /// A WebSocket header (set with `ClientBuilder::websocket_header`) has a name or
    /// value HTTP does not allow. The value is never shown.
    #[error("invalid WebSocket header {name:?}")]
    InvalidHeader {
        /// The header's name as given (truncated to 200 characters).
        name: String,
    },
    /// A field of CONNECT (client id, user name, password, will topic or will
    /// payload) is longer than the 65,535 bytes MQTT can frame (its length is a
    /// 16-bit field).
    #[error("{field} is {len} bytes long: MQTT allows at most 65535")]
    TooLong {
        /// The field: `client_id`, `username`, `password`, `last_will topic` or
        /// `last_will payload`.
        field: &'static str,
        /// Its length in bytes.
        len: usize,
    },
}

/// Why the broker refused a connection (the CONNACK return code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RefusedReason {
    /// 0x01: the broker does not speak MQTT 3.1.1.
    UnacceptableProtocolVersion,
    /// 0x02: the client id was rejected.
    IdentifierRejected,
    /// 0x03: the MQTT service is unavailable.
    ServerUnavailable,
    /// 0x04: bad user name or password.
    BadUserNamePassword,
    /// 0x05: the client is not authorized to connect. Mosquitto 2 answers a wrong
    /// password with this one (see [`RefusedReason::is_auth_failure`]).
    NotAuthorized,
}

impl RefusedReason {
    /// The CONNACK return code.
    pub fn code(self) -> u8 {
        match self {
            RefusedReason::UnacceptableProtocolVersion => 1,
            RefusedReason::IdentifierRejected => 2,
            RefusedReason::ServerUnavailable => 3,
            RefusedReason::BadUserNamePassword => 4,
            RefusedReason::NotAuthorized => 5,
        }
    }

    /// True for a refusal of the credentials: return code 4 (bad user name or
    /// password) or 5 (not authorized). Brokers differ in which they send for a wrong
    /// password: MQTT 3.1.1 provides 4, but Mosquitto 2 answers 5, as it does to a
    /// client without credentials under `allow_anonymous false`. Match on this rather
    /// than on one code.
    pub fn is_auth_failure(self) -> bool {
        matches!(
            self,
            RefusedReason::BadUserNamePassword | RefusedReason::NotAuthorized
        )
    }
}

impl std::fmt::Display for RefusedReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            RefusedReason::UnacceptableProtocolVersion => "unacceptable protocol version",
            RefusedReason::IdentifierRejected => "client identifier rejected",
            RefusedReason::ServerUnavailable => "server unavailable",
            RefusedReason::BadUserNamePassword => "bad user name or password",
            RefusedReason::NotAuthorized => "not authorized",
        };
        write!(f, "{text} (return code {})", self.code())
    }
}

/// A connection attempt failed.
///
/// Every variant about the network names the broker (`host:port`, as configured), and
/// its text includes the underlying cause, which is also its
/// [`source`](std::error::Error::source). No variant holds the credentials sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The broker answered CONNACK with a refusal.
    #[error("broker {broker} refused the connection: {reason}")]
    Refused {
        /// The broker, `host:port`.
        broker: String,
        /// The CONNACK return code.
        reason: RefusedReason,
    },
    /// No CONNACK within the connect timeout, which covers the whole attempt: name
    /// resolution, TCP, TLS and CONNECT.
    #[error("no CONNACK from {broker} within {timeout:?}")]
    Timeout {
        /// The broker, `host:port`.
        broker: String,
        /// The connect timeout.
        timeout: Duration,
    },
    /// The broker's host name could not be resolved.
    #[error("cannot resolve {broker}: {source}")]
    Dns {
        /// The broker, `host:port`.
        broker: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The TCP connection could not be made (refused, unreachable).
    #[error("TCP connection to {broker} failed: {source}")]
    Tcp {
        /// The broker, `host:port`.
        broker: String,
        /// The system's error.
        source: std::io::Error,
    },
    /// The TLS handshake failed. With a certificate problem the source is the
    /// `rustls::Error`.
    #[error("TLS handshake with {broker} failed: {source}")]
    Tls {
        /// The broker, `host:port`.
        broker: String,
        /// Why, as rustls or the system reported it.
        source: BoxError,
    },
    /// The peer answered CONNECT with something other than a CONNACK: it is not an
    /// MQTT broker (a web server, another protocol), or it broke MQTT's first rule
    /// [MQTT-3.2.0-1].
    #[error(
        "{broker} is not an MQTT broker: it answered CONNECT with \"{}\"",
        .first_bytes.escape_ascii()
    )]
    NotMqtt {
        /// The peer, `host:port`.
        broker: String,
        /// The start of its answer (at most 64 bytes).
        first_bytes: Vec<u8>,
    },
    /// The connection ended after TCP (and TLS) were up and before CONNACK: the
    /// peer closed it without an answer, or it broke (`source`). Mosquitto resets
    /// it, for example, when a client without TLS reaches its TLS listener.
    #[error(
        "the connection to {broker} ended before CONNACK{}",
        .source.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
    )]
    ClosedBeforeConnAck {
        /// The peer, `host:port`.
        broker: String,
        /// The system's error when the connection broke; `None` when the peer
        /// closed it.
        source: Option<std::io::Error>,
    },
    /// A custom [`Transport`](crate::client::Transport) (or the Unix socket) could
    /// not open its stream: its error, text kept.
    #[error("cannot open the transport to {broker}: {source}")]
    Transport {
        /// The broker, as the transport names it.
        broker: String,
        /// The transport's error.
        source: std::io::Error,
    },
    /// The HTTP CONNECT proxy could not be reached, or answered no HTTP.
    #[error("cannot reach {broker} through proxy {proxy}: {source}")]
    Proxy {
        /// The broker, `host:port`.
        broker: String,
        /// The proxy, `host:port`.
        proxy: String,
        /// The system's error, or what is wrong with the answer.
        source: std::io::Error,
    },
    /// The HTTP CONNECT proxy refused the tunnel: 407 (credentials missing or
    /// wrong), 403 (not allowed), 502 (the broker unreachable from the proxy), ...
    #[error("proxy {proxy} refused the tunnel to {broker}: HTTP {status}")]
    ProxyRefused {
        /// The broker, `host:port`.
        broker: String,
        /// The proxy, `host:port`.
        proxy: String,
        /// The proxy's HTTP status code.
        status: u16,
    },
    /// The WebSocket upgrade failed: the server answered another HTTP status than
    /// 101 (404 for a wrong path, say), or no HTTP at all.
    #[error("WebSocket handshake with {broker} failed: {source}")]
    WebSocket {
        /// The broker, `host:port`.
        broker: String,
        /// The server's HTTP status, when it answered HTTP.
        status: Option<u16>,
        /// What went wrong.
        source: BoxError,
    },
    /// The credential provider failed or timed out.
    #[error("credential provider failed: {0}")]
    Credentials(#[source] BoxError),
    /// The CONNECT packet could not be sent as configured (e.g. it exceeds the
    /// maximum packet size).
    #[error("protocol error while connecting to {broker}: {source}")]
    Protocol {
        /// The broker, `host:port`.
        broker: String,
        /// What went wrong.
        source: BoxError,
    },
    /// The client was stopped before it connected.
    #[error("client stopped")]
    Closed,
    /// The options are invalid; nothing was attempted.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

impl ConnectError {
    /// The broker's refusal reason, if the broker refused.
    pub fn refused_reason(&self) -> Option<RefusedReason> {
        match self {
            ConnectError::Refused { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// True when the broker refused the credentials (see
    /// [`RefusedReason::is_auth_failure`]).
    pub fn is_auth_failure(&self) -> bool {
        self.refused_reason()
            .is_some_and(RefusedReason::is_auth_failure)
    }

    /// True if the attempt timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self, ConnectError::Timeout { .. })
    }

    /// The broker (`host:port`) the attempt was made to; `None` when no attempt
    /// reached the network (credentials, options, stopped).
    pub fn broker(&self) -> Option<&str> {
        match self {
            ConnectError::Refused { broker, .. }
            | ConnectError::Timeout { broker, .. }
            | ConnectError::Dns { broker, .. }
            | ConnectError::Tcp { broker, .. }
            | ConnectError::Tls { broker, .. }
            | ConnectError::NotMqtt { broker, .. }
            | ConnectError::ClosedBeforeConnAck { broker, .. }
            | ConnectError::Protocol { broker, .. }
            | ConnectError::Transport { broker, .. }
            | ConnectError::Proxy { broker, .. }
            | ConnectError::ProxyRefused { broker, .. }
            | ConnectError::WebSocket { broker, .. } => Some(broker),
            ConnectError::Credentials(_) | ConnectError::Closed | ConnectError::Config(_) => None,
        }
    }
}

/// A publish failed. A publish that returns an error may still have reached the broker
/// only when the error says so ([`PublishError::may_have_been_delivered`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PublishError {
    /// The topic name is invalid; nothing was sent.
    #[error("invalid topic name {topic:?}")]
    InvalidTopic {
        /// The topic as given (truncated to 200 characters).
        topic: String,
        /// The rule it breaks.
        #[source]
        source: TopicError,
    },
    /// The packet would exceed the maximum packet size; nothing was sent.
    #[error("publish packet of {size} bytes exceeds the maximum packet size of {max} bytes")]
    PacketTooLarge {
        /// The encoded packet size.
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The payload could not be encoded; nothing was sent.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// No acknowledgement within the timeout. The message may still be delivered: it
    /// stays in flight and is retransmitted after a reconnect.
    #[error("no acknowledgement within {0:?}")]
    Timeout(Duration),
    /// The broker lost the session holding this message and the client is configured
    /// to fail rather than re-publish ([`SessionLossPolicy::Fail`](crate::client::SessionLossPolicy)).
    #[error("the broker lost the session before acknowledging the message")]
    SessionLost,
    /// The connection was lost and the client does not reconnect.
    #[error("connection lost before the broker acknowledged the message")]
    ConnectionLost,
    /// The client is stopped or stopping; the message was not sent.
    #[error("client stopped")]
    Closed,
    /// The client stopped before the broker acknowledged the message (the graceful
    /// shutdown period ended, or the client was not connected); it may have been
    /// delivered.
    #[error(
        "client stopped before the broker acknowledged the message (it may have been delivered)"
    )]
    StoppedInFlight,
    /// [`Client::abort`](crate::Client::abort) cut the connection before the broker
    /// acknowledged the message; it may have been delivered.
    #[error(
        "client aborted before the broker acknowledged the message (it may have been delivered)"
    )]
    Aborted,
    /// A middleware refused or failed the publish.
    #[error("publish middleware failed")]
    Middleware(#[source] BoxError),
}

impl PublishError {
    /// True for [`PublishError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, PublishError::Timeout(_))
    }

    /// True for [`PublishError::Closed`].
    pub fn is_closed(&self) -> bool {
        matches!(self, PublishError::Closed)
    }

    /// True when the message may have reached the broker despite the error.
    pub fn may_have_been_delivered(&self) -> bool {
        matches!(
            self,
            PublishError::Timeout(_)
                | PublishError::SessionLost
                | PublishError::ConnectionLost
                | PublishError::StoppedInFlight
                | PublishError::Aborted
        )
    }
}

/// A subscribe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SubscribeError {
    /// A topic filter is invalid; nothing was sent.
    #[error("invalid topic filter {filter:?}")]
    InvalidFilter {
        /// The filter as given (truncated to 200 characters).
        filter: String,
        /// The rule it breaks.
        #[source]
        source: TopicError,
    },
    /// No filter was given.
    #[error("no topic filter given")]
    NoFilters,
    /// The broker refused these filters (SUBACK return code 0x80).
    #[error("broker refused the subscription to {0:?}")]
    Rejected(Vec<String>),
    /// No SUBACK within the timeout.
    #[error("no SUBACK within {0:?}")]
    Timeout(Duration),
    /// The client is stopped or stopping.
    #[error("client stopped")]
    Closed,
    /// A middleware refused or failed the subscribe.
    #[error("subscribe middleware failed")]
    Middleware(#[source] BoxError),
}

impl SubscribeError {
    /// True for [`SubscribeError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, SubscribeError::Timeout(_))
    }
}

/// An unsubscribe failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UnsubscribeError {
    /// A topic filter is invalid; nothing was sent.
    #[error("invalid topic filter {filter:?}")]
    InvalidFilter {
        /// The filter as given (truncated to 200 characters).
        filter: String,
        /// The rule it breaks.
        #[source]
        source: TopicError,
    },
    /// No filter was given.
    #[error("no topic filter given")]
    NoFilters,
    /// No UNSUBACK within the timeout.
    #[error("no UNSUBACK within {0:?}")]
    Timeout(Duration),
    /// The client is stopped or stopping.
    #[error("client stopped")]
    Closed,
    /// A middleware refused or failed the unsubscribe.
    #[error("unsubscribe middleware failed")]
    Middleware(#[source] BoxError),
}

/// Shortens user input quoted in an error message.
#[cfg(feature = "client")]
pub(crate) fn quote_input(input: &str) -> String {
    const LIMIT: usize = 200;
    if input.len() <= LIMIT {
        return input.to_owned();
    }
    let mut end = LIMIT;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &input[..end], input.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(feature = "client")]
    fn quote_input_truncates_long_input_on_a_char_boundary() {
        let long = "é".repeat(300);
        let quoted = quote_input(&long);
        assert!(quoted.starts_with(&"é".repeat(100)));
        assert!(quoted.ends_with("(600 bytes)"));
        assert_eq!(quote_input("a/b"), "a/b");
    }

    #[test]
    fn connect_errors_name_the_broker_and_the_cause() {
        let broker = || "broker.example:1883".to_owned();
        let cases = [
            (
                ConnectError::NotMqtt {
                    broker: broker(),
                    first_bytes: b"\x00\xffSSH-2.0\r\n".to_vec(),
                },
                r#"broker.example:1883 is not an MQTT broker: it answered CONNECT with "\x00\xffSSH-2.0\r\n""#,
            ),
            (
                ConnectError::ClosedBeforeConnAck {
                    broker: broker(),
                    source: None,
                },
                "the connection to broker.example:1883 ended before CONNACK",
            ),
            (
                ConnectError::ClosedBeforeConnAck {
                    broker: broker(),
                    source: Some(std::io::ErrorKind::ConnectionReset.into()),
                },
                "the connection to broker.example:1883 ended before CONNACK: connection reset",
            ),
            (
                ConnectError::Refused {
                    broker: broker(),
                    reason: RefusedReason::NotAuthorized,
                },
                "broker broker.example:1883 refused the connection: not authorized (return code 5)",
            ),
        ];
        for (error, text) in cases {
            assert_eq!(error.to_string(), text);
            assert_eq!(error.broker(), Some("broker.example:1883"));
        }
    }

    #[test]
    fn auth_failures_are_codes_4_and_5() {
        let auth: Vec<u8> = [
            RefusedReason::UnacceptableProtocolVersion,
            RefusedReason::IdentifierRejected,
            RefusedReason::ServerUnavailable,
            RefusedReason::BadUserNamePassword,
            RefusedReason::NotAuthorized,
        ]
        .into_iter()
        .filter(|r| r.is_auth_failure())
        .map(RefusedReason::code)
        .collect();
        assert_eq!(auth, [4, 5]);
    }

    #[test]
    fn codec_errors_give_the_codecs_reason() {
        let error = DecodeError::new("json", "Order", "missing field `id`");
        assert_eq!(
            error.to_string(),
            "cannot decode Order with the json codec: missing field `id`"
        );
    }

    #[test]
    fn refused_reason_reports_its_code() {
        assert_eq!(RefusedReason::NotAuthorized.code(), 5);
        assert_eq!(
            RefusedReason::BadUserNamePassword.to_string(),
            "bad user name or password (return code 4)"
        );
    }
}
