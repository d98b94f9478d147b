//! [`Backend`]: what a [`Client`] runs on when it is not one connection of its own.
//!
//! A client built with [`ClientBuilder::connect`](super::ClientBuilder::connect) owns
//! one MQTT connection. The same `Client` type also runs on a backend: several
//! connections (a pool, or one per broker of a cluster: courier-cluster) or an
//! in-memory test double (`courier_core::testing`). The client keeps what is the
//! same for every backend: the publish and subscribe builders, the middleware
//! chains, the codec, the handler tasks and the stop gate. The backend carries the
//! requests to its brokers (after the middleware) and delivers their messages.

use std::sync::{Arc, Weak};

use tokio::sync::{Mutex as AsyncMutex, broadcast, watch};

use super::consumers::Consumers;
use super::credentials::BoxFuture;
use super::events::{ConnectionState, Event};
use super::handler::Handler;
use super::info::ClientInfo;
use super::lifecycle::deadline_after;
use super::middleware::{
    BoxHandler, BoxPublisher, BoxStopper, BoxSubscriber, BoxUnsubscriber, PublishRequest,
    Publisher, Stopper, SubscribeRequest, Subscribed, Subscriber, UnsubscribeRequest, Unsubscriber,
    apply,
};
use super::options::ClientBuilder;
use super::{Chains, Client};
use crate::error::{BoxError, PublishError, SubscribeError, UnsubscribeError};
use crate::message::Message;

/// The connections (or the stand-in for them) behind a [`Client`] built with
/// [`ClientBuilder::build_on`].
///
/// Requests reach it after the client's middleware. A [`SubscribeRequest`] carries
/// the subscription's queue: the backend hands each message matching its filters to
/// [`SubscribeRequest::deliver`] (a connection does this for every message its
/// broker sends), and the client's stream or handler takes them from there.
/// Implement it for a connection strategy of your own; courier-cluster's pools and
/// clusters and the fake of `courier_core::testing` are backends.
pub trait Backend: Send + Sync + 'static {
    /// Publish, resolving on the broker's acknowledgement.
    fn publish(&self, request: PublishRequest) -> BoxFuture<'_, Result<(), PublishError>>;

    /// Subscribe, resolving once granted. The [`Subscribed`] names routes (ids of the
    /// backend's choosing) that [`release`](Self::release) later gets back.
    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscribed, SubscribeError>>;

    /// Unsubscribe from filters: every subscription on them ends.
    fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> BoxFuture<'_, Result<(), UnsubscribeError>>;

    /// A subscription is being unsubscribed: stop delivering to its routes, and
    /// return the filters no subscription uses any more; the client then
    /// unsubscribes them through [`unsubscribe`](Self::unsubscribe) and waits.
    fn release(&self, routes: &[u64]) -> Vec<String>;

    /// A subscription's stream was dropped: stop delivering to its routes, and tell
    /// the brokers, without waiting, to stop sending the filters no subscription
    /// uses any more. A subscription made on them later must keep them: queue the
    /// broker's part now, in order, rather than unsubscribe later.
    fn forget(&self, routes: &[u64]);

    /// Stop gracefully: the client already ended delivery and waited for its
    /// handlers; wait for the publishes in flight and disconnect.
    fn stop(&self) -> BoxFuture<'_, ()>;

    /// End at once, as a crash would, without DISCONNECT.
    fn abort(&self) -> BoxFuture<'_, ()>;

    /// The last handle of the client went away: close at once, without waiting.
    fn close(&self);

    /// A watch of the connection state: connected while the backend can publish.
    fn state(&self) -> watch::Receiver<ConnectionState>;

    /// Where the backend's events go; the client sends its own (handler failures)
    /// there too.
    fn events(&self) -> &broadcast::Sender<Event>;

    /// A snapshot of the configuration and the state.
    fn info(&self) -> ClientInfo;

    /// Publishes waiting for an acknowledgement.
    fn publishes_in_flight(&self) -> usize;

    /// The broker address(es) it connects to, for messages.
    fn address(&self) -> String;

    /// The session-present flag of the latest connect, where there is one.
    fn session_present(&self) -> Option<bool> {
        None
    }
}

/// A client on a [`Backend`]: the parts of a client that are the same for every
/// backend.
pub(crate) struct Remote {
    pub(crate) backend: Arc<dyn Backend>,
    /// The options the client itself uses: codec, timeouts, buffer, layers.
    pub(crate) settings: ClientBuilder,
    pub(crate) chains: Chains,
    /// The stop gate of this client's streams and handlers.
    pub(crate) consumers: Arc<Consumers>,
    /// Set once a stop has been carried out.
    stopped: watch::Sender<bool>,
    /// Held by the task carrying out the stop.
    stopping: AsyncMutex<bool>,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("client_id", &self.settings.client_id)
            .field("address", &self.backend.address())
            .finish_non_exhaustive()
    }
}

impl Remote {
    pub(crate) fn new(settings: ClientBuilder, backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new_cyclic(|weak: &Weak<Remote>| {
            let chains = Chains::build(
                &settings.layers,
                || BoxPublisher::new(BackendPublisher(backend.clone())),
                || BoxSubscriber::new(BackendSubscriber(backend.clone())),
                || BoxUnsubscriber::new(BackendUnsubscriber(backend.clone())),
                || BoxStopper::new(RemoteStopper(weak.clone())),
            );
            Remote {
                backend,
                settings,
                chains,
                consumers: Arc::new(Consumers::default()),
                stopped: watch::channel(false).0,
                stopping: AsyncMutex::new(false),
            }
        })
    }

    pub(crate) async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        match &self.chains.publisher {
            Some(chain) => chain.publish(request).await,
            None => self.backend.publish(request).await,
        }
    }

    pub(crate) async fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> Result<Subscribed, SubscribeError> {
        match &self.chains.subscriber {
            Some(chain) => chain.subscribe(request).await,
            None => self.backend.subscribe(request).await,
        }
    }

    pub(crate) async fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> Result<(), UnsubscribeError> {
        match &self.chains.unsubscriber {
            Some(chain) => chain.unsubscribe(request).await,
            None => self.backend.unsubscribe(request).await,
        }
    }

    /// The graceful stop, through the stop chain.
    pub(crate) async fn stop_via_chain(self: &Arc<Self>) {
        match &self.chains.stopper {
            Some(chain) => chain.stop().await,
            None => self.stop().await,
        }
    }

    /// End delivery, let the handlers at work finish within the graceful shutdown
    /// period, then stop the backend. Carried out on a task of its own, so that it
    /// goes on when the caller gives up waiting; every caller waits for its end.
    pub(crate) async fn stop(self: &Arc<Self>) {
        let mut done = self.stopped.subscribe();
        let remote = self.clone();
        let task = tokio::spawn(async move {
            let mut started = remote.stopping.lock().await;
            if *started {
                return;
            }
            *started = true;
            if remote.consumers.close() {
                remote.wait_for_handlers().await;
            }
            remote.backend.stop().await;
            remote.stopped.send_replace(true);
        });
        drop(task);
        let _ = done.wait_for(|stopped| *stopped).await;
    }

    /// Wait until no handler is at work, or the graceful shutdown period is over;
    /// then cancel the ones still running (their messages are not acknowledged).
    async fn wait_for_handlers(&self) {
        let deadline = deadline_after(self.settings.graceful_shutdown);
        let consumers = &self.consumers;
        loop {
            let idle = consumers.idle_signal().notified();
            tokio::pin!(idle);
            idle.as_mut().enable();
            if consumers.is_idle() {
                break;
            }
            tokio::select! {
                () = idle => {}
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(
                        client_id = %self.settings.client_id,
                        "courier: handlers still running at the end of the graceful shutdown period; cancelled"
                    );
                    break;
                }
            }
        }
        consumers.cancel_running();
    }

    pub(crate) async fn abort(&self) {
        let _ = self.consumers.close();
        self.consumers.cancel_running();
        self.backend.abort().await;
        self.stopped.send_replace(true);
    }

    /// The last user handle went away.
    pub(crate) fn close(&self) {
        let _ = self.consumers.close();
        self.consumers.cancel_running();
        self.backend.close();
    }

    pub(crate) fn emit(&self, event: Event) {
        tracing::debug!(%event, "courier event");
        for callback in &self.settings.event_callbacks {
            callback(&event);
        }
        let _ = self.backend.events().send(event);
    }
}

/// A handler that gets the client on the backend instead of a connection's handle.
struct OnSurface {
    handler: BoxHandler,
    surface: WeakClient,
}

impl Handler for OnSurface {
    fn handle(
        &self,
        client: Client,
        message: Message,
    ) -> impl std::future::Future<Output = Result<(), BoxError>> + Send {
        self.handler
            .handle(self.surface.upgrade_or(client), message)
    }
}

/// A client held without keeping it alive (connection callbacks of a backend
/// refer to the client on the backend this way: a strong reference would be a
/// cycle through the backend).
#[derive(Clone)]
pub(crate) struct WeakClient(Weak<Remote>);

impl WeakClient {
    pub(crate) fn new(remote: Weak<Remote>) -> Self {
        WeakClient(remote)
    }

    /// The client, as a handle that does not keep it running, or `fallback` once it
    /// is gone.
    fn upgrade_or(&self, fallback: Client) -> Client {
        self.0.upgrade().map_or(fallback, Client::remote_handle)
    }
}

/// The last hop of a backend client's publish chain.
struct BackendPublisher(Arc<dyn Backend>);

impl Publisher for BackendPublisher {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        self.0.publish(request).await
    }
}

/// The last hop of a backend client's subscribe chain.
struct BackendSubscriber(Arc<dyn Backend>);

impl Subscriber for BackendSubscriber {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        self.0.subscribe(request).await
    }
}

/// The last hop of a backend client's unsubscribe chain.
struct BackendUnsubscriber(Arc<dyn Backend>);

impl Unsubscriber for BackendUnsubscriber {
    async fn unsubscribe(&self, request: UnsubscribeRequest) -> Result<(), UnsubscribeError> {
        self.0.unsubscribe(request).await
    }
}

/// The last hop of a backend client's stop chain.
struct RemoteStopper(Weak<Remote>);

impl Stopper for RemoteStopper {
    async fn stop(&self) {
        if let Some(remote) = self.0.upgrade() {
            remote.stop().await;
        }
    }
}

impl ClientBuilder {
    /// A client on `backend` instead of a connection of its own. The client uses
    /// this builder's codec, middleware, write timeout, subscription buffer,
    /// graceful shutdown period, event callbacks and client id (for logs); the
    /// connection options are the backend's business. For backends:
    /// courier-cluster's `ClusterBuilder::connect` and the fake of
    /// `courier_core::testing` call it.
    pub fn build_on(self, backend: impl Backend) -> Client {
        Client::on_backend(Remote::new(self, Arc::new(backend)))
    }

    /// The template a backend builds its connections from, for `client`, the
    /// client on the backend: without the middleware (the client runs it once for
    /// all connections; the unrouted handler keeps the handler layers), and with the
    /// lifecycle callbacks (`on_connect`, `on_connection_lost`, `on_reconnect`) and
    /// the unrouted handler given `client` instead of the connection's own handle,
    /// so that what they publish or subscribe goes through the backend. They are
    /// still called once per connection.
    pub fn connection_template(mut self, client: &Client) -> Self {
        let surface = client.downgrade();
        if let Some(handler) = self.unrouted_handler.take() {
            let handler = apply(&self.layers.handler, handler);
            self.unrouted_handler = Some(BoxHandler::new(OnSurface {
                handler,
                surface: surface.clone(),
            }));
        }
        self.layers = super::middleware::Layers::default();
        if let Some(callback) = self.on_connect.take() {
            let surface = surface.clone();
            self.on_connect = Some(Arc::new(move |conn, present| {
                callback(surface.upgrade_or(conn), present)
            }));
        }
        if let Some(callback) = self.on_connection_lost.take() {
            let surface = surface.clone();
            self.on_connection_lost = Some(Arc::new(move |conn, reason| {
                callback(surface.upgrade_or(conn), reason)
            }));
        }
        if let Some(callback) = self.on_reconnect.take() {
            self.on_reconnect = Some(Arc::new(move |conn, attempt| {
                callback(surface.upgrade_or(conn), attempt)
            }));
        }
        self
    }
}
