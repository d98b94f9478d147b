//! [`ClientInfo`]: a serializable snapshot, like the Go `InfoHandler`'s JSON.

use std::collections::BTreeMap;

use serde::Serialize;

/// What the client is and what it is doing, for status pages and debugging.
/// Serializes to JSON like the Go `InfoHandler` output. A client on several
/// connections lists each in [`connections`](Self::connections).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientInfo {
    /// How the client connects: [`SINGLE`](Self::SINGLE) for a connection of its
    /// own, or its backend's mode (courier-cluster: `single` with a resolver,
    /// `pool`, `multi`; the fake of `courier_core::testing`: `fake`).
    pub mode: String,
    /// Connections per address (1 but for a pool).
    pub pool_size: usize,
    /// Broker addresses (`host:port`; a Unix socket as `unix:/path`, a custom
    /// transport as its `Transport::peer`).
    pub addresses: Vec<String>,
    /// With a resolver in single-connection mode: the address in use.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub active_address: Option<String>,
    /// The MQTT client id (on several connections: the base of theirs).
    pub client_id: String,
    /// The static user name, if any (never the password).
    pub username: Option<String>,
    /// Whether each connect starts a clean session.
    pub clean_session: bool,
    /// Whether the client reconnects after a loss.
    pub auto_reconnect: bool,
    /// Whether the client is connected now (on several connections: at least one).
    pub connected: bool,
    /// Whether the broker kept the session at the latest connect (`None` before the
    /// first, and on several connections).
    pub session_present: Option<bool>,
    /// Subscribed filters and their QoS.
    pub subscriptions: BTreeMap<String, u8>,
    /// Publishes waiting for an acknowledgement.
    pub publishes_in_flight: usize,
    /// On several connections: each one, those being drained included.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connections: Vec<ConnectionInfo>,
}

impl ClientInfo {
    /// The mode of a client with a connection of its own.
    pub const SINGLE: &'static str = "single";

    /// A snapshot with `mode` and `client_id`, a pool size of 1 and nothing else
    /// set, for a [`Backend`](super::Backend) to fill in.
    pub fn new(mode: impl Into<String>, client_id: impl Into<String>) -> Self {
        ClientInfo {
            mode: mode.into(),
            pool_size: 1,
            addresses: Vec::new(),
            active_address: None,
            client_id: client_id.into(),
            username: None,
            clean_session: false,
            auto_reconnect: false,
            connected: false,
            session_present: None,
            subscriptions: BTreeMap::new(),
            publishes_in_flight: 0,
            connections: Vec::new(),
        }
    }

    /// The connections in use (not being drained).
    pub fn live(&self) -> impl Iterator<Item = &ConnectionInfo> {
        self.connections.iter().filter(|c| !c.draining)
    }

    /// How many connections are up: of a client with a connection of its own, 1
    /// while connected.
    pub fn connected_count(&self) -> usize {
        if self.connections.is_empty() {
            usize::from(self.connected)
        } else {
            self.live().filter(|c| c.client.connected).count()
        }
    }
}

/// One connection of a client on several connections.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The broker address (`host:port`, or as the transport names it; see
    /// [`ClientInfo::addresses`]).
    pub address: String,
    /// Whether it carries the subscriptions that are not shared.
    pub primary: bool,
    /// Removed from the address list and being closed.
    pub draining: bool,
    /// Up, or down for less than the failover delay.
    pub healthy: bool,
    /// Publishes acknowledged through the client on this connection.
    pub published: u64,
    /// The connection's own snapshot: client id, connected, subscriptions, publishes
    /// in flight, ... (flattened in JSON).
    #[serde(flatten)]
    pub client: ClientInfo,
}

impl ConnectionInfo {
    /// The entry of a connection at `address` whose own snapshot is `client`; not
    /// primary, not draining, healthy, nothing published yet.
    pub fn new(address: impl Into<String>, client: ClientInfo) -> Self {
        ConnectionInfo {
            address: address.into(),
            primary: false,
            draining: false,
            healthy: true,
            published: 0,
            client,
        }
    }
}
