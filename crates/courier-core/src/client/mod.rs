//! The MQTT client: one connection to one broker, driven on a background task with
//! rumqttc's protocol state machine and packet codec.
//!
//! Layout: `options` builds and validates (`broker_url` parses URLs for it); `lifecycle` starts and stops the
//! background task that `driver` runs; `engine` owns the socket; `requests` queues
//! what handles send to it; `outbound` and `inbound` map courier's requests to
//! packet ids and acknowledgements; `router` routes incoming messages to
//! `subscription`s; `consumers` lets a stop end their delivery first; `budget`
//! bounds the memory of what waits for them. A client runs on a connection of its
//! own or on a `backend` (several connections, or a test double).

mod backend;
mod backoff;
mod broker_url;
mod budget;
mod consumers;
mod credentials;
mod dispatch;
mod driver;
mod engine;
mod events;
mod handler;
mod inbound;
mod info;
mod lifecycle;
pub mod middleware;
mod options;
mod outbound;
mod proxy;
mod publish;
mod requests;
mod router;
mod subscription;
#[cfg(feature = "tls")]
mod tls;
mod transport;
mod watchdog;
#[cfg(feature = "websocket")]
mod websocket;

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use tokio::sync::{Semaphore, broadcast, watch};
use tokio_util::sync::CancellationToken;

pub use backend::Backend;
pub use backoff::Backoff;
pub use broker_url::{BrokerUrl, DEFAULT_WS_PATH};
pub use credentials::{BoxFuture, CredentialProvider, Credentials};
pub use events::{ConnectionState, Event, EventStream};
pub use handler::{Handler, HandlerResult};
pub use info::{ClientInfo, ConnectionInfo};
pub use options::{ClientBuilder, MQTT_MAX_PACKET_SIZE, SessionLossPolicy};
pub use proxy::ProxyConfig;
pub use publish::PublishBuilder;
pub use subscription::{FilterGrant, SubscribeBuilder, Subscription, SubscriptionHandle};
#[cfg(feature = "tls")]
pub use tls::TlsConfig;
#[cfg(unix)]
pub use transport::UnixSocket;
pub use transport::{Transport, TransportStream};
#[cfg(feature = "test-util")]
pub(crate) use {events::EVENT_BUFFER, publish::packet_size};

use crate::codec::Codec;
use crate::error::{RefusedReason, UnsubscribeError};
use middleware::Stopper;
use options::ValidOptions;
use outbound::Outbound;
use router::Router;

/// A handle to a running MQTT client. Cheap to clone; every clone drives the same
/// connection (or connections).
///
/// Create one with [`Client::builder`]: it owns one connection to one broker. The
/// same type runs on several connections (a pool, or one per broker of a cluster:
/// the `courier-cluster` crate) or on an in-memory fake for tests
/// (`courier_core::testing`, the `test-util` feature), through
/// [`ClientBuilder::build_on`]: code written against
/// `Client` runs on any of them. The client lives until [`Client::stop`] or until
/// every handle made from the builder's client is dropped (handles given to
/// message handlers do not keep it alive).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier_core::{Client, QoS};
///
/// let client = Client::builder()
///     .address("localhost", 1883)
///     .client_id("orders-svc")
///     .connect()
///     .await?;
/// client.publish("orders/created", r#"{"id":1}"#).qos(QoS::AtLeastOnce).await?;
/// client.stop().await;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    link: Link,
    _owner: Option<Arc<Owner>>,
}

/// What a client runs on.
#[derive(Clone, Debug)]
pub(crate) enum Link {
    /// A connection of its own.
    Connection(Arc<Shared>),
    /// A backend: several connections, or a test double.
    Backend(Arc<backend::Remote>),
}

/// Stops the client when the last user-held handle goes away.
#[derive(Debug)]
struct Owner(Link);

impl Drop for Owner {
    fn drop(&mut self) {
        match &self.0 {
            Link::Connection(shared) => shared.begin_shutdown(),
            Link::Backend(remote) => remote.close(),
        }
    }
}

/// State shared by handles, the driver task, subscribers and handlers.
pub(crate) struct Shared {
    pub(crate) opts: ValidOptions,
    pub(crate) requests: Arc<requests::RequestQueue>,
    pub(crate) outbound: Mutex<Outbound>,
    pub(crate) window: Arc<Semaphore>,
    pub(crate) qos0_window: Arc<Semaphore>,
    pub(crate) inbound: Arc<inbound::Inbound>,
    pub(crate) consumers: Arc<consumers::Consumers>,
    /// Bounds the memory of received messages waiting for consumers.
    pub(crate) budget: Arc<budget::InboundBudget>,
    pub(crate) router: RwLock<Router>,
    pub(crate) state: watch::Sender<ConnectionState>,
    /// Made by the first [`Client::events`]: its buffer (1,024 events) is the
    /// largest allocation of an idle client, and without a reader nothing is kept.
    pub(crate) events: std::sync::OnceLock<broadcast::Sender<Event>>,
    pub(crate) closing: AtomicBool,
    /// [`Client::abort`] was called: the connection is cut, not closed.
    pub(crate) aborted: AtomicBool,
    /// The last CONNACK's session-present flag: 0 before the first, 1 false, 2 true.
    pub(crate) session_present: AtomicU8,
    /// The refusal that stopped the client (`retry_refused(false)`).
    pub(crate) refused: Mutex<Option<RefusedReason>>,
    pub(crate) shutdown: CancellationToken,
    /// Set by the ack watchdog to make the driver drop the connection.
    pub(crate) force_reconnect: tokio::sync::Notify,
    /// The middleware chains, built right after this struct (their last hops hold a
    /// weak reference to it).
    pub(crate) chains: std::sync::OnceLock<Chains>,
    pub(crate) driver: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Cancels the driver task whoever holds its join handle (for `abort`).
    pub(crate) driver_abort: std::sync::OnceLock<tokio::task::AbortHandle>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("client_id", &self.opts.builder.client_id)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

/// The built middleware chains; `None` where no layer was set (the direct path).
#[derive(Debug, Default)]
pub(crate) struct Chains {
    pub(crate) publisher: Option<middleware::BoxPublisher>,
    pub(crate) subscriber: Option<middleware::BoxSubscriber>,
    pub(crate) unsubscriber: Option<middleware::BoxUnsubscriber>,
    pub(crate) stopper: Option<middleware::BoxStopper>,
}

impl Chains {
    /// Wrap each operation's last hop in the layers set on the builder; no chain
    /// where no layer was set.
    pub(crate) fn build(
        layers: &middleware::Layers,
        publisher: impl FnOnce() -> middleware::BoxPublisher,
        subscriber: impl FnOnce() -> middleware::BoxSubscriber,
        unsubscriber: impl FnOnce() -> middleware::BoxUnsubscriber,
        stopper: impl FnOnce() -> middleware::BoxStopper,
    ) -> Chains {
        use middleware::apply;
        Chains {
            publisher: (!layers.publish.is_empty()).then(|| apply(&layers.publish, publisher())),
            subscriber: (!layers.subscribe.is_empty())
                .then(|| apply(&layers.subscribe, subscriber())),
            unsubscriber: (!layers.unsubscribe.is_empty())
                .then(|| apply(&layers.unsubscribe, unsubscriber())),
            stopper: (!layers.stop.is_empty()).then(|| apply(&layers.stop, stopper())),
        }
    }
}

impl Shared {
    pub(crate) fn chains(&self) -> &Chains {
        static NONE: Chains = Chains {
            publisher: None,
            subscriber: None,
            unsubscriber: None,
            stopper: None,
        };
        self.chains.get().unwrap_or(&NONE)
    }

    pub(crate) fn outbound(&self) -> MutexGuard<'_, Outbound> {
        self.outbound.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn router_read(&self) -> std::sync::RwLockReadGuard<'_, Router> {
        self.router.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn router_write(&self) -> std::sync::RwLockWriteGuard<'_, Router> {
        self.router.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(%event, "courier event");
        for callback in &self.opts.builder.event_callbacks {
            callback(&event);
        }
        if let Some(events) = self.events.get() {
            let _ = events.send(event);
        }
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// End delivery: handlers take no further message, streams end, nothing is
    /// routed any more, and what is not consumed is not acknowledged.
    pub(crate) fn end_delivery(&self) {
        let _ = self.consumers.close();
        self.router_write().close();
    }

    /// Refuse new work and make the driver stop: with a DISCONNECT when connected
    /// (it must not be interrupted mid-poll), by cancellation otherwise.
    pub(crate) fn begin_shutdown(&self) {
        self.closing.store(true, Ordering::Release);
        let _ = self
            .requests
            .send(rumqttc::Request::Disconnect(rumqttc::Disconnect));
        self.shutdown.cancel();
    }
}

impl Client {
    /// A builder with the defaults (see [`ClientBuilder`]).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    pub(crate) fn owned(shared: Arc<Shared>) -> Self {
        let link = Link::Connection(shared);
        Client {
            _owner: Some(Arc::new(Owner(link.clone()))),
            link,
        }
    }

    pub(crate) fn on_backend(remote: Arc<backend::Remote>) -> Self {
        let link = Link::Backend(remote);
        Client {
            _owner: Some(Arc::new(Owner(link.clone()))),
            link,
        }
    }

    /// A handle that does not keep the client running (for handlers and callbacks).
    pub(crate) fn unowned(shared: Arc<Shared>) -> Self {
        Client {
            link: Link::Connection(shared),
            _owner: None,
        }
    }

    /// A handle on `remote` that does not keep it running.
    pub(crate) fn remote_handle(remote: Arc<backend::Remote>) -> Self {
        Client {
            link: Link::Backend(remote),
            _owner: None,
        }
    }

    /// A weak reference for a backend's connection callbacks: the client on a
    /// backend; for a client with a connection of its own, nothing (its callbacks
    /// already get it).
    pub(crate) fn downgrade(&self) -> backend::WeakClient {
        match &self.link {
            Link::Backend(remote) => backend::WeakClient::new(Arc::downgrade(remote)),
            Link::Connection(_) => backend::WeakClient::new(std::sync::Weak::new()),
        }
    }

    /// This client's handle for its handlers: it does not keep the client running.
    pub(crate) fn handle(&self) -> Self {
        Client {
            link: self.link.clone(),
            _owner: None,
        }
    }

    pub(crate) fn link(&self) -> &Link {
        &self.link
    }

    /// The options the client itself uses (codec, timeouts, buffer, layers).
    pub(crate) fn settings(&self) -> &ClientBuilder {
        match &self.link {
            Link::Connection(shared) => &shared.opts.builder,
            Link::Backend(remote) => &remote.settings,
        }
    }

    /// The stop gate of this client's streams and handlers.
    pub(crate) fn consumers(&self) -> &Arc<consumers::Consumers> {
        match &self.link {
            Link::Connection(shared) => &shared.consumers,
            Link::Backend(remote) => &remote.consumers,
        }
    }

    pub(crate) fn emit(&self, event: Event) {
        match &self.link {
            Link::Connection(shared) => shared.emit(event),
            Link::Backend(remote) => remote.emit(event),
        }
    }

    /// True when the broker accepted the connection and it has not been lost since
    /// (on several connections: when at least one is up).
    pub fn is_connected(&self) -> bool {
        self.state().is_connected()
    }

    /// The current connection state.
    pub fn state(&self) -> ConnectionState {
        match &self.link {
            Link::Connection(shared) => *shared.state.borrow(),
            Link::Backend(remote) => *remote.backend.state().borrow(),
        }
    }

    /// A watch of the connection state, to await changes.
    pub fn state_watch(&self) -> watch::Receiver<ConnectionState> {
        match &self.link {
            Link::Connection(shared) => shared.state.subscribe(),
            Link::Backend(remote) => remote.backend.state(),
        }
    }

    /// Wait until connected (the Go `WaitForConnection`). Combine with
    /// `tokio::time::timeout` to bound it.
    ///
    /// # Errors
    ///
    /// When the client stops first: [`ConnectError::Refused`](crate::ConnectError::Refused)
    /// with the broker's reason when a refusal stopped it
    /// ([`ClientBuilder::retry_refused`]), [`ConnectError::Closed`](crate::ConnectError::Closed)
    /// otherwise.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn wait_connected(&self) -> Result<(), crate::ConnectError> {
        let mut rx = self.state_watch();
        let connected = rx
            .wait_for(|s| s.is_connected() || *s == ConnectionState::Stopped)
            .await
            .is_ok_and(|s| s.is_connected());
        if connected {
            return Ok(());
        }
        let Link::Connection(shared) = &self.link else {
            return Err(crate::ConnectError::Closed);
        };
        let refused = *shared
            .refused
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Err(match refused {
            Some(reason) => crate::ConnectError::Refused {
                broker: shared.opts.broker(),
                reason,
            },
            None => crate::ConnectError::Closed,
        })
    }

    /// Whether the broker kept this client's session (its subscriptions and queued
    /// messages) at the latest connect: the CONNACK's session-present flag, updated
    /// at every reconnect. `None` before the first connection (and on backends
    /// with several connections).
    pub fn session_present(&self) -> Option<bool> {
        match &self.link {
            Link::Connection(shared) => match shared.session_present.load(Ordering::Acquire) {
                0 => None,
                flag => Some(flag == 2),
            },
            Link::Backend(remote) => remote.backend.session_present(),
        }
    }

    /// Lifecycle events from now on (connected, disconnected, reconnecting, slow
    /// consumers, handler failures, stopped).
    pub fn events(&self) -> EventStream {
        match &self.link {
            Link::Connection(shared) => EventStream::new(
                shared
                    .events
                    .get_or_init(|| broadcast::channel(events::EVENT_BUFFER).0)
                    .subscribe(),
            ),
            Link::Backend(remote) => EventStream::new(remote.backend.events().subscribe()),
        }
    }

    /// The codec used by [`publish_value`](Self::publish_value) and
    /// [`Message::decode`](crate::Message::decode).
    pub fn codec(&self) -> &dyn Codec {
        &*self.settings().codec
    }

    /// The MQTT client id (on several connections: the base of theirs).
    pub fn client_id(&self) -> &str {
        &self.settings().client_id
    }

    /// The effective keep-alive interval.
    pub fn keep_alive(&self) -> std::time::Duration {
        self.settings().keep_alive
    }

    /// The effective write (acknowledgement) timeout.
    pub fn write_timeout(&self) -> std::time::Duration {
        self.settings().write_timeout
    }

    /// The effective connect timeout.
    pub fn connect_timeout(&self) -> std::time::Duration {
        self.settings().connect_timeout
    }

    /// A snapshot of the client's configuration and state (the Go `InfoHandler`);
    /// on several connections, with each connection's.
    pub fn info(&self) -> ClientInfo {
        let shared = match &self.link {
            Link::Connection(shared) => shared,
            Link::Backend(remote) => return remote.backend.info(),
        };
        let b = &shared.opts.builder;
        ClientInfo {
            mode: ClientInfo::SINGLE.to_owned(),
            pool_size: 1,
            addresses: vec![shared.opts.broker()],
            active_address: None,
            client_id: b.client_id.clone(),
            username: shared
                .opts
                .static_credentials
                .as_ref()
                .map(|c| c.username().to_owned()),
            clean_session: b.clean_session,
            auto_reconnect: b.auto_reconnect,
            connected: self.is_connected(),
            session_present: self.session_present(),
            subscriptions: shared
                .router_read()
                .subscriptions()
                .into_iter()
                .map(|(f, q)| (f, q.as_u8()))
                .collect(),
            publishes_in_flight: shared.outbound().publishes_in_flight(),
            connections: Vec::new(),
        }
    }

    /// Publishes waiting for an acknowledgement (sent or queued): cheap, for load
    /// balancing across connections.
    pub fn publishes_in_flight(&self) -> usize {
        match &self.link {
            Link::Connection(shared) => shared.outbound().publishes_in_flight(),
            Link::Backend(remote) => remote.backend.publishes_in_flight(),
        }
    }

    /// The broker address (`host:port`, an IPv6 host in brackets) this client
    /// connects to (on several connections: their addresses, comma-separated).
    pub fn address(&self) -> String {
        match &self.link {
            Link::Connection(shared) => shared.opts.broker(),
            Link::Backend(remote) => remote.backend.address(),
        }
    }

    /// Unsubscribe from `filters`: every local subscription on them ends, and the
    /// broker is told to stop sending.
    ///
    /// # Errors
    ///
    /// Invalid or no filters (nothing sent), no UNSUBACK within the write timeout, or
    /// the client is stopped.
    ///
    /// # Cancel safety
    ///
    /// The local subscriptions end at once; cancelling only stops waiting for the
    /// broker's acknowledgement.
    pub async fn unsubscribe<I, S>(&self, filters: I) -> Result<(), UnsubscribeError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let request = middleware::UnsubscribeRequest {
            filters: filters.into_iter().map(Into::into).collect(),
        };
        subscription::unsubscribe_via_chain(&self.link, request).await
    }

    /// Stop gracefully, in this order, all within the graceful shutdown period
    /// ([`ClientBuilder::graceful_shutdown_period`], 30 s by default):
    ///
    /// 1. Delivery ends: handlers take no further message (one already being handled
    ///    is finished and acknowledged) and [`Subscription`] streams end. Messages not
    ///    consumed are not acknowledged; a persistent session's broker delivers them
    ///    again in the next session.
    /// 2. Once the handlers are done, new publishes and subscriptions are refused,
    ///    and the client waits for the publishes in flight to be acknowledged.
    /// 3. DISCONNECT is sent and the background task ends.
    ///
    /// While not connected it does not wait (a broker that is down acknowledges
    /// nothing): it returns at once. A handler still running at the end of the period
    /// is cancelled, and its message is not acknowledged. Publishes still
    /// unacknowledged fail with
    /// [`PublishError::StoppedInFlight`](crate::PublishError::StoppedInFlight): they may
    /// have been delivered. When this returns, no handler runs
    /// and no stream yields. Calling it again (from any clone) waits for the same stop.
    /// On several connections, steps 2 and 3 are each connection's.
    ///
    /// # Cancel safety
    ///
    /// Once called, the stop proceeds even if this future is dropped; awaiting it again
    /// waits for the end.
    pub async fn stop(&self) {
        match &self.link {
            Link::Connection(shared) => match &shared.chains().stopper {
                Some(chain) => chain.stop().await,
                None => lifecycle::stop(shared).await,
            },
            Link::Backend(remote) => remote.stop_via_chain().await,
        }
    }

    /// End the connection at once without DISCONNECT, as a crash would: the broker
    /// publishes the last will (see [`ClientBuilder::last_will`]) and keeps a
    /// persistent session. Nothing more is sent, not even the acknowledgements of
    /// messages being handled; handlers are cancelled and streams end. Publishes,
    /// subscribes and unsubscribes in flight fail
    /// ([`PublishError::Aborted`](crate::PublishError::Aborted) says a publish may
    /// have been delivered). It bypasses the stop middleware. Also ends a graceful
    /// [`stop`](Self::stop) in progress.
    ///
    /// # Cancel safety
    ///
    /// Once called, the abort proceeds even if this future is dropped; awaiting it
    /// again waits for the end.
    pub async fn abort(&self) {
        match &self.link {
            Link::Connection(shared) => lifecycle::abort(shared).await,
            Link::Backend(remote) => remote.abort().await,
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id())
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}
