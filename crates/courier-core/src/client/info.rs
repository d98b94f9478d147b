//! [`ClientInfo`]: a serializable snapshot, like the Go `InfoHandler`'s JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the client is and what it is doing, for status pages and debugging.
/// Serializes to JSON like the Go `InfoHandler` output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// Broker addresses (`host:port`).
    pub addresses: Vec<String>,
    /// The MQTT client id.
    pub client_id: String,
    /// The static user name, if any (never the password).
    pub username: Option<String>,
    /// Whether each connect starts a clean session.
    pub clean_session: bool,
    /// Whether the client reconnects after a loss.
    pub auto_reconnect: bool,
    /// Whether the client is connected now.
    pub connected: bool,
    /// Whether the broker kept the session at the latest connect (`None` before the
    /// first).
    pub session_present: Option<bool>,
    /// Subscribed filters and their QoS.
    pub subscriptions: BTreeMap<String, u8>,
    /// Publishes waiting for an acknowledgement.
    pub publishes_in_flight: usize,
}
