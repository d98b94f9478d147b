//! The cluster's [`ClientInfo`]: its mode and addresses, every connection's own
//! snapshot, and the subscriptions.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use courier_core::{ClientInfo, ConnectionInfo};

use crate::cluster::Inner;
use crate::conn::Conn;

impl Inner {
    /// A snapshot of the cluster (the Go `InfoHandler`): mode, addresses, every
    /// connection (the ones being drained included) and the subscriptions.
    pub(crate) fn info(&self) -> ClientInfo {
        let config = &self.config;
        let st = self.lock();
        let connection = |conn: &Arc<Conn>, draining: bool| {
            let mut info = ConnectionInfo::new(conn.client.address(), conn.client.info());
            info.primary = !draining && st.primary == Some(conn.meta.id);
            info.draining = draining;
            info.healthy = conn.meta.is_up();
            info.published = conn.meta.published.load(Ordering::Relaxed);
            info
        };
        let connections: Vec<ConnectionInfo> = st
            .live
            .iter()
            .map(|c| connection(c, false))
            .chain(st.draining.iter().map(|c| connection(c, true)))
            .collect();
        let addresses = if config.follows_resolver {
            st.addresses.iter().map(ToString::to_string).collect()
        } else {
            let mut seen: Vec<String> = Vec::new();
            for c in &connections {
                if !seen.contains(&c.address) {
                    seen.push(c.address.clone());
                }
            }
            seen
        };
        let mut subscriptions = BTreeMap::new();
        for entry in st.subs.values() {
            for f in &entry.filters {
                let qos = subscriptions.entry(f.filter.clone()).or_insert(0u8);
                *qos = (*qos).max(f.qos.as_u8());
            }
        }
        let mut info = ClientInfo::new(config.mode.as_str(), config.client_id.clone());
        info.pool_size = config.pool_size;
        info.addresses = addresses;
        info.active_address = st.active.as_ref().map(ToString::to_string);
        if let Some(first) = connections.first() {
            info.username.clone_from(&first.client.username);
            info.clean_session = first.client.clean_session;
            info.auto_reconnect = first.client.auto_reconnect;
        }
        info.connected = connections.iter().any(|c| c.client.connected);
        info.subscriptions = subscriptions;
        info.publishes_in_flight = connections
            .iter()
            .map(|c| c.client.publishes_in_flight)
            .sum();
        info.connections = connections;
        info
    }
}
