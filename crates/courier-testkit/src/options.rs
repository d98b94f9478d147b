//! Options for a test broker.

use crate::BrokerKind;

/// Options for a test broker. Builder style, all setters consume `self`.
///
/// Most options configure Mosquitto. The embedded broker honours
/// [`message_size_limit`](Self::message_size_limit) (as rumqttd's maximum
/// packet size, so only approximately), rejects
/// [`credentials`](Self::credentials) and ignores the rest. NATS honours
/// [`credentials`](Self::credentials) only (its JetStream store persists
/// anyway); RabbitMQ, one node shared by the tests of a process, rejects
/// [`credentials`](Self::credentials) and ignores the rest.
#[derive(Debug, Clone, Default)]
pub struct BrokerOptions {
    pub(crate) kind: Option<BrokerKind>,
    pub(crate) persistence: bool,
    pub(crate) credentials: Option<(String, String)>,
    pub(crate) message_size_limit: Option<u32>,
    pub(crate) max_inflight_messages: Option<u32>,
    pub(crate) max_queued_messages: Option<u32>,
    pub(crate) config_lines: Vec<String>,
    pub(crate) unix_socket: bool,
}

impl BrokerOptions {
    /// Default options: broker kind from [`BrokerKind::from_env`], anonymous
    /// access, no persistence, Mosquitto's default limits.
    pub fn new() -> Self {
        Self::default()
    }

    /// Uses this broker kind instead of the one chosen by
    /// [`BrokerKind::from_env`].
    pub fn kind(mut self, kind: BrokerKind) -> Self {
        self.kind = Some(kind);
        self
    }

    /// Mosquitto: `persistence true` with a private persistence directory
    /// that survives [`TestBroker::stop`](crate::TestBroker::stop) /
    /// [`start_again`](crate::TestBroker::start_again) (Mosquitto writes
    /// `mosquitto.db` there on a graceful stop). Ignored by the embedded broker.
    pub fn persistence(mut self, on: bool) -> Self {
        self.persistence = on;
        self
    }

    /// Mosquitto: `allow_anonymous false` and a password file with this one
    /// user (made with `mosquitto_passwd -b -c`).
    ///
    /// Not supported by the embedded broker: starting one with credentials
    /// fails with [`std::io::ErrorKind::Unsupported`].
    pub fn credentials(mut self, username: &str, password: &str) -> Self {
        self.credentials = Some((username.to_owned(), password.to_owned()));
        self
    }

    /// Mosquitto: `message_size_limit <bytes>` (largest accepted PUBLISH
    /// payload). Embedded: rumqttd's `max_payload_size` (largest packet).
    pub fn message_size_limit(mut self, bytes: u32) -> Self {
        self.message_size_limit = Some(bytes);
        self
    }

    /// Mosquitto: `max_inflight_messages <n>` (QoS 1/2 messages in flight
    /// per client). Ignored by the embedded broker.
    pub fn max_inflight_messages(mut self, n: u32) -> Self {
        self.max_inflight_messages = Some(n);
        self
    }

    /// Mosquitto: `max_queued_messages <n>` (messages queued per client
    /// beyond those in flight). Ignored by the embedded broker.
    pub fn max_queued_messages(mut self, n: u32) -> Self {
        self.max_queued_messages = Some(n);
        self
    }

    /// Mosquitto: a second listener on a Unix domain socket in the broker's
    /// private directory (`listener 0 <dir>/mosquitto.sock`), its path given by
    /// [`TestBroker::unix_socket`](crate::TestBroker::unix_socket).
    ///
    /// Not supported by the embedded broker: starting one with it fails with
    /// [`std::io::ErrorKind::Unsupported`].
    pub fn unix_socket(mut self, on: bool) -> Self {
        self.unix_socket = on;
        self
    }

    /// A raw extra line for the Mosquitto config file, appended after the
    /// generated ones; may be called several times. Ignored by the embedded
    /// broker.
    pub fn config_line(mut self, line: impl Into<String>) -> Self {
        self.config_lines.push(line.into());
        self
    }
}
