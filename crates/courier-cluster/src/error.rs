//! Errors of building and connecting a cluster.

use std::sync::Arc;
use std::time::Duration;

use courier_core::{ConfigError, ConnectError};

/// An invalid cluster configuration, reported by
/// [`ClusterBuilder::start`](crate::ClusterBuilder::start) and
/// [`connect`](crate::ClusterBuilder::connect) before anything connects.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterConfigError {
    /// A pool (several connections to one address) and multi-connection mode (one
    /// connection per address) were both asked for.
    #[error(
        "pool_size({pool_size}) and multi_connection mode are mutually exclusive: multi-connection mode opens one connection per resolved address"
    )]
    PoolWithMultiConnection {
        /// The pool size that was set.
        pool_size: usize,
    },
    /// `pool_size(0)`.
    #[error("pool_size must be at least 1")]
    ZeroPoolSize,
    /// No base client id: each connection needs its own (`<id>-0`, `<id>-1`, ...).
    #[error(
        "no client id: set one on the template or with ClusterBuilder::client_id (connections get <id>-0, <id>-1, ...)"
    )]
    MissingClientId,
    /// `failover_delay(Duration::ZERO)`.
    #[error("failover_delay must be greater than zero")]
    ZeroFailoverDelay,
    /// The client template is invalid (or there is no Tokio runtime).
    #[error(transparent)]
    Client(#[from] ConfigError),
}

/// [`ClusterBuilder::connect`](crate::ClusterBuilder::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterConnectError {
    /// The configuration is invalid; nothing was attempted.
    #[error(transparent)]
    Config(#[from] ClusterConfigError),
    /// Every connection failed its first attempt; this is the first one's error.
    #[error("no connection could be made")]
    Connect(#[source] Arc<ConnectError>),
    /// No connection was up within the connect timeout (or the resolver gave no
    /// address in that time).
    #[error("no connection within {0:?}")]
    Timeout(Duration),
    /// The cluster was stopped first.
    #[error("cluster stopped")]
    Closed,
}
