//! [`ClusterInfo`]: a serializable snapshot, like the Go `InfoHandler`'s JSON.

use std::collections::BTreeMap;

use courier_core::ClientInfo;
use serde::Serialize;

use crate::builder::Mode;

/// The cluster's configuration and state, for status pages and debugging.
/// Serializes to JSON like the Go `InfoHandler` output.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterInfo {
    /// Single, pool or multi.
    pub mode: Mode,
    /// Connections per address (1 unless [`pool_size`](crate::ClusterBuilder::pool_size)).
    pub pool_size: usize,
    /// The resolver's current list (`host:port`), or the template's address.
    pub addresses: Vec<String>,
    /// Single-connection mode with a resolver: the address in use.
    pub active_address: Option<String>,
    /// Every connection, the ones being drained included.
    pub connections: Vec<ConnectionInfo>,
    /// The cluster's subscriptions: filter and QoS.
    pub subscriptions: BTreeMap<String, u8>,
}

/// One connection of a [`ClusterInfo`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConnectionInfo {
    /// The broker address (`host:port`).
    pub address: String,
    /// Whether it carries the subscriptions that are not shared.
    pub primary: bool,
    /// Removed from the address list and being closed.
    pub draining: bool,
    /// Up, or down for less than the failover delay.
    pub healthy: bool,
    /// Publishes acknowledged through the cluster on this connection.
    pub published: u64,
    /// The connection's own snapshot: client id, connected, subscriptions, publishes
    /// in flight, ... (flattened in JSON).
    #[serde(flatten)]
    pub client: ClientInfo,
}

impl ClusterInfo {
    /// The connections that are not being drained.
    pub fn live(&self) -> impl Iterator<Item = &ConnectionInfo> {
        self.connections.iter().filter(|c| !c.draining)
    }
}
