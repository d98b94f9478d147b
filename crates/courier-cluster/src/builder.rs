//! [`ClusterBuilder`]: pool size, resolver, mode, balancing and the shared
//! subscription predicate.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{Client, ClientBuilder, ConfigError};
use serde::Serialize;

use crate::backend::ClusterBackend;
use crate::cluster;
use crate::error::{ClusterConfigError, ClusterConnectError};
use crate::resolver::Resolver;

/// How publishes are spread over the connections that are up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Balance {
    /// The connection with the fewest publishes waiting for an acknowledgement, ties
    /// broken round-robin (the default): a slow broker or connection gets less.
    #[default]
    LeastInFlight,
    /// Strict rotation (the Go pool's behaviour).
    RoundRobin,
}

/// What the cluster connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// One connection (to the template's address, or to one resolved address at a
    /// time, failing over to the next).
    Single,
    /// `pool_size` connections to the same address (the Go `WithPoolSize`).
    Pool,
    /// One connection per resolved address (the Go `UseMultiConnectionMode`).
    Multi,
}

impl Mode {
    /// `single`, `pool` or `multi`, as [`ClientInfo::mode`](courier_core::ClientInfo::mode)
    /// says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Single => "single",
            Mode::Pool => "pool",
            Mode::Multi => "multi",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Decides whether a filter is a shared subscription.
pub(crate) type SharedPredicate = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// Which addresses the cluster follows.
#[derive(Clone)]
pub(crate) enum Addressing {
    /// The template's address.
    Template,
    /// One resolved address at a time, failing over along the list.
    Failover(Arc<dyn Resolver>),
    /// Every resolved address.
    Multi(Arc<dyn Resolver>),
}

/// Builds a [`Client`](courier_core::Client) on several connections from a
/// [`ClientBuilder`] template: every connection is the template with its own client
/// id (and, with a resolver, its own address). The client runs the template's
/// middleware and codec once for all of them, so a service written against
/// `Client` runs unchanged on one connection, a pool or a cluster.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier_cluster::{Address, ClusterBuilder, StaticResolver};
/// use courier_core::Client;
///
/// // Four connections to one broker.
/// let pool = ClusterBuilder::new(Client::builder().address("localhost", 1883))
///     .client_id("orders-svc")
///     .pool_size(4)
///     .connect()
///     .await?;
///
/// // One connection per broker of a cluster.
/// let nodes = StaticResolver::new([Address::new("10.0.0.1", 1883), Address::new("10.0.0.2", 1883)]);
/// let multi = ClusterBuilder::new(Client::builder())
///     .client_id("orders-svc")
///     .multi_connection(nodes)
///     .connect()
///     .await?;
/// # pool.stop().await; multi.stop().await;
/// # Ok(()) }
/// ```
#[must_use = "a builder does nothing until connect() or start()"]
#[derive(Clone)]
pub struct ClusterBuilder {
    pub(crate) template: ClientBuilder,
    pub(crate) client_id: Option<String>,
    pub(crate) pool_size: usize,
    pub(crate) addressing: Addressing,
    pub(crate) balance: Balance,
    pub(crate) shared: SharedPredicate,
    pub(crate) failover_delay: Duration,
}

impl ClusterBuilder {
    /// A cluster of connections built from `template` (address, credentials, TLS,
    /// timeouts, codec, middleware: everything but the client id, and the address
    /// when a resolver is set). Defaults: one connection, least-in-flight balancing,
    /// filters starting with `$share/` are shared, failover after 5 s down.
    pub fn new(template: ClientBuilder) -> Self {
        let client_id =
            Some(template.configured_client_id().to_owned()).filter(|id| !id.is_empty());
        ClusterBuilder {
            template,
            client_id,
            pool_size: 1,
            addressing: Addressing::Template,
            balance: Balance::default(),
            shared: Arc::new(|filter: &str| filter.starts_with("$share/")),
            failover_delay: Duration::from_secs(5),
        }
    }

    /// The base client id (default: the template's). With one connection it is used
    /// as is; with several, connection `n` is `<id>-<n>` (`n` from 0, reused after a
    /// connection is gone, so persistent sessions are not left behind). Without one
    /// here or on the template, `start()` fails with `MissingClientId`.
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// `n` connections to the same address (the Go `WithPoolSize`; default 1). With
    /// [`resolver`](Self::resolver), the pool follows the current address. Not with
    /// [`multi_connection`](Self::multi_connection).
    pub fn pool_size(mut self, n: usize) -> Self {
        self.pool_size = n;
        self
    }

    /// Follow `resolver` in single-connection mode (the Go `WithResolver`): connect
    /// to one address of the list, and fail over to the next one when the
    /// connection has been down for the [`failover_delay`](Self::failover_delay) or
    /// the address leaves the list. Replaces an earlier `multi_connection`.
    pub fn resolver(mut self, resolver: impl Resolver) -> Self {
        self.addressing = Addressing::Failover(Arc::new(resolver));
        self
    }

    /// One connection per address of `resolver` (the Go `UseMultiConnectionMode`):
    /// publishes are spread over all of them, shared subscriptions are made on each,
    /// others on one. Addresses that appear are connected; those that leave are
    /// drained and closed. Replaces an earlier `resolver`.
    pub fn multi_connection(mut self, resolver: impl Resolver) -> Self {
        self.addressing = Addressing::Multi(Arc::new(resolver));
        self
    }

    /// How publishes are spread (default [`Balance::LeastInFlight`]).
    pub fn balance(mut self, balance: Balance) -> Self {
        self.balance = balance;
        self
    }

    /// Which filters are shared subscriptions, made on every connection (the Go
    /// `SharedSubscriptionPredicate`; default: those starting with `$share/`). Other
    /// filters are made on one connection only, so each message arrives once.
    pub fn shared_subscription_predicate(
        mut self,
        predicate: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.shared = Arc::new(predicate);
        self
    }

    /// How long a connection may be down (lost, or never up) before the cluster
    /// gives up on it (default 5 s): its unacknowledged publishes are re-sent on
    /// another connection, its single-connection subscriptions move, and in
    /// single-connection mode with a resolver the cluster fails over to the next
    /// address. Publishes never pick a connection that is down, whatever this is.
    pub fn failover_delay(mut self, delay: Duration) -> Self {
        self.failover_delay = delay;
        self
    }

    /// The mode this configuration gives.
    pub fn mode(&self) -> Mode {
        match self.addressing {
            Addressing::Multi(_) => Mode::Multi,
            _ if self.pool_size > 1 => Mode::Pool,
            _ => Mode::Single,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ClusterConfigError> {
        if self.pool_size == 0 {
            return Err(ClusterConfigError::ZeroPoolSize);
        }
        if self.pool_size > 1 && matches!(self.addressing, Addressing::Multi(_)) {
            return Err(ClusterConfigError::PoolWithMultiConnection {
                pool_size: self.pool_size,
            });
        }
        if self.client_id.is_none() {
            return Err(ClusterConfigError::MissingClientId);
        }
        if self.failover_delay.is_zero() {
            return Err(ClusterConfigError::ZeroFailoverDelay);
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime.into());
        }
        Ok(())
    }

    /// Validate and start in the background: every connection is started with
    /// [`ClientBuilder::start`], so brokers that are down are retried. Returns at
    /// once; publishes wait for a connection (bounded by their timeout).
    ///
    /// # Errors
    ///
    /// A [`ClusterConfigError`]: conflicting options, or an invalid template (found
    /// at once for the template address and for resolvers that have a list ready,
    /// such as [`StaticResolver`](crate::StaticResolver); otherwise when the first
    /// list arrives, logged, and reported by [`connect`](Self::connect)).
    pub fn start(self) -> Result<Client, ClusterConfigError> {
        self.start_backend().map(|(client, _)| client)
    }

    /// [`start`](Self::start), then wait until at least one connection is up.
    ///
    /// # Errors
    ///
    /// A [`ClusterConfigError`]; [`ClusterConnectError::Connect`] when every
    /// connection failed its first attempt; [`ClusterConnectError::Timeout`] when
    /// none is up within the template's connect timeout (also when the resolver
    /// gave no address in that time). On error, nothing keeps running.
    ///
    /// # Cancel safety
    ///
    /// Cancelling stops the cluster: nothing keeps running in the background.
    pub async fn connect(self) -> Result<Client, ClusterConnectError> {
        let (client, inner) = self.start_backend()?;
        match inner.wait_first_connection().await {
            Ok(()) => Ok(client),
            Err(e) => {
                client.stop().await;
                Err(e)
            }
        }
    }

    /// The client on the cluster: the template's middleware and codec run on it,
    /// once; the connections are built from the template for that client (see
    /// [`ClientBuilder::connection_template`]).
    fn start_backend(self) -> Result<(Client, Arc<cluster::Inner>), ClusterConfigError> {
        self.validate()?;
        let surface = self
            .template
            .clone()
            .client_id(self.client_id.clone().unwrap_or_default());
        let template = self.template.clone();
        let (inner, updates) = cluster::prepare(self);
        let client = surface.build_on(ClusterBackend(inner.clone()));
        // On error the client goes, and with it the cluster.
        cluster::launch(&inner, template.connection_template(&client), updates)?;
        Ok((client, inner))
    }
}

impl fmt::Debug for ClusterBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resolver = match self.addressing {
            Addressing::Template => "none",
            Addressing::Failover(_) => "failover",
            Addressing::Multi(_) => "multi-connection",
        };
        f.debug_struct("ClusterBuilder")
            .field("template", &self.template)
            .field("client_id", &self.client_id)
            .field("pool_size", &self.pool_size)
            .field("resolver", &resolver)
            .field("balance", &self.balance)
            .field("failover_delay", &self.failover_delay)
            .finish_non_exhaustive()
    }
}
