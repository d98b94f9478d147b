//! [`ClientBuilder`]: every option of a single-connection client, validated at build.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Client;
use super::backoff::Backoff;
use super::broker_url::{AddressProblem, BrokerUrl, Route};
use super::credentials::{BoxFuture, CredentialProvider, Credentials};
use super::handler::Handler;
use super::middleware::{
    BoxHandler, BoxPublisher, BoxStopper, BoxSubscriber, BoxUnsubscriber, Layer, Layers, Publisher,
    Stopper, Subscriber, Unsubscriber,
};
use super::proxy::ProxyConfig;
#[cfg(feature = "tls")]
use super::tls::TlsConfig;
use super::transport::{Network, Transport};
use crate::codec::{Codec, JsonCodec};
use crate::error::{ConfigError, ConnectError};
use crate::qos::QoS;
use crate::topic::validate_topic_name;

/// The largest packet MQTT 3.1.1 can frame: 268,435,455 bytes of remaining length
/// plus a 5-byte fixed header.
pub const MQTT_MAX_PACKET_SIZE: usize = 268_435_460;

/// What to do with publishes in flight when the broker comes back without our session
/// (clean session, or a broker restarted without persistence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SessionLossPolicy {
    /// Send them again as new messages (the default): nothing is lost, a message the
    /// broker had already taken may arrive twice (QoS 2 included).
    #[default]
    Republish,
    /// Fail their futures with [`PublishError::SessionLost`](crate::PublishError::SessionLost).
    Fail,
}

pub(crate) type ConnectCallback = Arc<dyn Fn(Client, bool) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type LostCallback = Arc<dyn Fn(Client, String) -> BoxFuture<'static, ()> + Send + Sync>;
pub(crate) type EventCallback = Arc<dyn Fn(&super::Event) + Send + Sync>;
pub(crate) type ReconnectCallback =
    Arc<dyn Fn(Client, u32) -> BoxFuture<'static, ()> + Send + Sync>;

/// A last-will message the broker publishes if the client vanishes without DISCONNECT.
#[derive(Debug, Clone)]
pub(crate) struct LastWill {
    pub(crate) topic: String,
    pub(crate) payload: Bytes,
    pub(crate) qos: QoS,
    pub(crate) retain: bool,
}

/// Builds a [`Client`]. Setters consume and return the builder; nothing is checked
/// until [`connect`](ClientBuilder::connect) or [`start`](ClientBuilder::start), which
/// report every invalid option as a [`ConfigError`].
///
/// Defaults follow the Go original where one exists: keep-alive 60 s, connect timeout
/// 15 s, write (acknowledgement) timeout 10 s, persistent session (`clean_session`
/// false), auto-reconnect on with backoff capped at 5 min, graceful shutdown 30 s.
/// Courier adds: TCP_NODELAY on, 100 publishes in flight, 16 MiB maximum packet size
/// and JSON as the codec.
#[must_use = "a builder does nothing until connect() or start()"]
#[derive(Clone)]
pub struct ClientBuilder {
    pub(crate) host: Option<String>,
    pub(crate) port: u16,
    /// How the URL reaches the broker (TCP unless a `ws://` or `unix://` URL said).
    pub(crate) route: Route,
    /// A custom transport, in place of the route.
    pub(crate) transport: Option<Arc<dyn Transport>>,
    pub(crate) proxy: Option<ProxyConfig>,
    /// Headers of the WebSocket upgrade, checked by `validate()`.
    #[cfg(feature = "websocket")]
    pub(crate) websocket_headers: Vec<(String, String)>,
    /// Why the last `url()` could not be used, reported by `validate()`.
    pub(crate) address_error: Option<AddressProblem>,
    pub(crate) client_id: String,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) credential_provider: Option<Arc<dyn CredentialProvider>>,
    pub(crate) credential_timeout: Duration,
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<TlsConfig>,
    /// `tls` was chosen by an `mqtts://` URL rather than by `tls()`.
    #[cfg(feature = "tls")]
    pub(crate) tls_from_url: bool,
    pub(crate) keep_alive: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) ack_timeout: Option<Duration>,
    pub(crate) clean_session: bool,
    pub(crate) auto_reconnect: bool,
    pub(crate) reconnect_backoff: Backoff,
    pub(crate) start_backoff: Backoff,
    pub(crate) graceful_shutdown: Duration,
    pub(crate) stable_after: Duration,
    pub(crate) max_inflight: u16,
    pub(crate) max_queued_qos0: usize,
    pub(crate) max_packet_size: usize,
    pub(crate) tcp_nodelay: bool,
    pub(crate) session_loss: SessionLossPolicy,
    pub(crate) codec: Arc<dyn Codec>,
    pub(crate) subscription_buffer: usize,
    pub(crate) max_inbound_buffer: usize,
    pub(crate) unrouted_hold: Duration,
    pub(crate) unrouted_handler: Option<BoxHandler>,
    pub(crate) retry_refused: bool,
    pub(crate) last_will: Option<LastWill>,
    pub(crate) on_connect: Option<ConnectCallback>,
    pub(crate) on_connection_lost: Option<LostCallback>,
    pub(crate) on_reconnect: Option<ReconnectCallback>,
    pub(crate) layers: Layers,
    pub(crate) event_callbacks: Vec<EventCallback>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            host: None,
            port: 1883,
            route: Route::Tcp,
            transport: None,
            proxy: None,
            #[cfg(feature = "websocket")]
            websocket_headers: Vec::new(),
            address_error: None,
            client_id: String::new(),
            username: None,
            password: None,
            credential_provider: None,
            credential_timeout: Duration::from_secs(10),
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "tls")]
            tls_from_url: false,
            keep_alive: Duration::from_secs(60),
            connect_timeout: Duration::from_secs(15),
            write_timeout: Duration::from_secs(10),
            ack_timeout: None,
            clean_session: false,
            auto_reconnect: true,
            reconnect_backoff: Backoff::default(),
            start_backoff: Backoff::exponential(
                Duration::from_millis(100),
                Duration::from_secs(30),
            ),
            graceful_shutdown: Duration::from_secs(30),
            stable_after: Duration::from_secs(5),
            max_inflight: 100,
            max_queued_qos0: 10_000,
            max_packet_size: 16 * 1024 * 1024,
            tcp_nodelay: true,
            session_loss: SessionLossPolicy::Republish,
            codec: Arc::new(JsonCodec),
            subscription_buffer: 65_536,
            max_inbound_buffer: 64 * 1024 * 1024,
            unrouted_hold: Duration::from_secs(5),
            unrouted_handler: None,
            retry_refused: true,
            last_will: None,
            on_connect: None,
            on_connection_lost: None,
            on_reconnect: None,
            layers: Layers::default(),
            event_callbacks: Vec::new(),
        }
    }
}

impl ClientBuilder {
    /// A builder with the defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// The broker's host and port (the Go `WithAddress`). After a `ws://` or
    /// `wss://` URL the connection stays a WebSocket (to this host and port); after a
    /// `unix://` URL it is TCP again.
    pub fn address(mut self, host: impl Into<String>, port: u16) -> Self {
        self.host = Some(host.into());
        self.port = port;
        self.address_error = None;
        if matches!(self.route, Route::Unix(_)) {
            self.route = Route::Tcp;
        }
        self
    }

    /// The broker as a URL, parsed by [`BrokerUrl`]:
    /// `mqtt://[user[:password]@]host[:port][?option=value&...]` (or `tcp://`, default
    /// port 1883) or `mqtts://...` (or `ssl://`, `tls://`, default port 8883, TLS with
    /// the system's roots unless [`tls`](Self::tls) is also set); `ws://` and `wss://`
    /// with a WebSocket path (feature `websocket`); `unix:///path/to.sock`. Schemes are
    /// case-insensitive. The query options `client_id`, `keep_alive` (seconds) and
    /// `clean_session` (`true`/`false`), and the user name and password, override what
    /// was set before; setters called after `url` override them in turn. A bad URL is
    /// reported by `connect`/`start` as a [`ConfigError`] that never shows the password.
    pub fn url(mut self, url: &str) -> Self {
        match BrokerUrl::parse_kept(url) {
            Ok(parsed) => {
                self.address_error = None;
                self.use_url_tls(parsed.tls());
                #[cfg(not(feature = "websocket"))]
                if parsed.websocket_path().is_some() {
                    self.address_error = Some(AddressProblem::Invalid {
                        address: crate::error::quote_input(&super::broker_url::redact(url)),
                        reason: "ws:// and wss:// need courier's `websocket` feature",
                    });
                }
                parsed.apply_to(&mut self);
            }
            Err(problem) => self.address_error = Some(problem),
        }
        self
    }

    /// The MQTT client identifier. Required with a persistent session (the default).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = id.into();
        self
    }

    /// The client id set so far (empty if none): lets middleware installers such as
    /// `courier-otel` label what they record.
    pub fn configured_client_id(&self) -> &str {
        &self.client_id
    }

    /// A static user name.
    pub fn username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// A static password (never shown by `Debug` or logs).
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// Fetch credentials before every connect and reconnect (the Go
    /// `WithCredentialFetcher`); overrides [`username`](Self::username)/[`password`](Self::password).
    pub fn credential_provider(mut self, provider: impl CredentialProvider) -> Self {
        self.credential_provider = Some(Arc::new(provider));
        self
    }

    /// How long one credential fetch may take (default 10 s).
    pub fn credential_timeout(mut self, timeout: Duration) -> Self {
        self.credential_timeout = timeout;
        self
    }

    /// Apply the TLS choice of a URL scheme.
    #[cfg(feature = "tls")]
    fn use_url_tls(&mut self, tls: bool) {
        if self.tls_from_url {
            // Undo what an earlier url() chose; a tls() setting is kept.
            self.tls = None;
            self.tls_from_url = false;
        }
        if tls && self.tls.is_none() {
            match TlsConfig::native_roots() {
                Ok(config) => {
                    self.tls = Some(config);
                    self.tls_from_url = true;
                }
                Err(e) => self.address_error = Some(AddressProblem::Tls(e.to_string())),
            }
        }
    }

    /// Without the `tls` feature an `mqtts://` URL is a configuration error.
    #[cfg(not(feature = "tls"))]
    fn use_url_tls(&mut self, tls: bool) {
        if tls {
            self.address_error = Some(AddressProblem::Tls(
                "TLS is not compiled in: enable courier's `tls` feature".to_owned(),
            ));
        }
    }

    /// Connect over TLS.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self.tls_from_url = false;
        self
    }

    /// Open the broker connection with `transport` (QUIC, an in-memory pipe, a
    /// socket from a supervisor, ...) instead of the one the address or URL selects.
    /// The broker needs no address then: errors and logs name it by
    /// [`Transport::peer`]. MQTT runs over the stream as over TCP; TLS, WebSocket and
    /// proxy settings are the transport's own business and are not applied.
    pub fn transport(mut self, transport: impl Transport) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// Tunnel the TCP connection through an HTTP CONNECT proxy; TLS, WebSocket and
    /// MQTT run through the tunnel.
    pub fn proxy(mut self, proxy: ProxyConfig) -> Self {
        self.proxy = Some(proxy);
        self
    }

    /// Send this HTTP header with the WebSocket upgrade of a `ws://` or `wss://`
    /// URL (an authorisation token for a cloud broker, say); may be called several
    /// times. An invalid name or value is reported by `connect`/`start` as
    /// [`ConfigError::InvalidHeader`]; no error or `Debug` output shows the value.
    #[cfg(feature = "websocket")]
    pub fn websocket_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.websocket_headers.push((name.into(), value.into()));
        self
    }

    /// MQTT keep-alive: zero (off) or whole seconds from 1 to 65,535 (default 60 s).
    /// A dead connection is detected within twice this interval.
    pub fn keep_alive(mut self, keep_alive: Duration) -> Self {
        self.keep_alive = keep_alive;
        self
    }

    /// Bound on TCP + TLS + CONNECT..CONNACK (default 15 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Bound on a publish, subscribe or unsubscribe, from the call until the broker's
    /// acknowledgement (default 10 s; the Go `WithWriteTimeout`). Per publish it can be
    /// changed with `PublishBuilder::timeout`.
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// The ack watchdog (the Go `WithAckTimeout`; default off): when a sent publish
    /// waits longer than this for its PUBACK/PUBREC/PUBCOMP while the connection looks
    /// alive, the client drops the connection and reconnects, retransmitting what is
    /// in flight. Catches a broker that keeps answering pings but stopped acking.
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = Some(timeout);
        self
    }

    /// Start a clean session on every connect (default false: the broker keeps our
    /// subscriptions and queued messages while we are away).
    pub fn clean_session(mut self, clean: bool) -> Self {
        self.clean_session = clean;
        self
    }

    /// Reconnect after the connection is lost (default true).
    pub fn auto_reconnect(mut self, on: bool) -> Self {
        self.auto_reconnect = on;
        self
    }

    /// Delays between reconnect attempts (default: 1 s doubling to 5 min, ±25 % jitter).
    pub fn reconnect_backoff(mut self, backoff: Backoff) -> Self {
        self.reconnect_backoff = backoff;
        self
    }

    /// Delays between first-connect attempts of [`start`](Self::start) (default: 100 ms
    /// doubling to 30 s, the Go `ExponentialStartStrategy`).
    pub fn start_backoff(mut self, backoff: Backoff) -> Self {
        self.start_backoff = backoff;
        self
    }

    /// How long a connection must stay up after its CONNACK to count as
    /// established (default 5 s). One that ends sooner counts as a failed attempt
    /// for the reconnect backoff, so that a broker that drops every connection at
    /// once (two clients sharing a client id, garbage after CONNACK) is not
    /// reconnected to in a tight loop; the backoff starts over once a connection
    /// lasts this long. Zero turns this off: every loss is followed by an
    /// immediate attempt, as for a connection that lasted.
    pub fn stable_after(mut self, period: Duration) -> Self {
        self.stable_after = period;
        self
    }

    /// How long [`Client::stop`] waits for in-flight publishes to be acknowledged
    /// (default 30 s).
    pub fn graceful_shutdown_period(mut self, period: Duration) -> Self {
        self.graceful_shutdown = period;
        self
    }

    /// The in-flight window: QoS 1/2 publishes sent but not yet acknowledged
    /// (1 to 32,767; default 100). Further publishes wait for a slot.
    pub fn max_inflight(mut self, n: u16) -> Self {
        self.max_inflight = n;
        self
    }

    /// How many QoS 0 publishes may wait to be written (default 10,000); further ones
    /// wait for room, so a dead connection cannot grow memory without bound.
    pub fn max_queued_qos0(mut self, n: usize) -> Self {
        self.max_queued_qos0 = n;
        self
    }

    /// Largest packet sent or accepted, in bytes (64 to 268,435,460; default 16 MiB).
    /// A larger publish is refused locally with `PublishError::PacketTooLarge`.
    pub fn max_packet_size(mut self, bytes: usize) -> Self {
        self.max_packet_size = bytes;
        self
    }

    /// TCP_NODELAY (default true: with Nagle on, paced publishes were measured at a
    /// 33 ms p99 against 0.4 ms without).
    pub fn tcp_nodelay(mut self, on: bool) -> Self {
        self.tcp_nodelay = on;
        self
    }

    /// What happens to in-flight publishes when the broker lost our session.
    pub fn session_loss_policy(mut self, policy: SessionLossPolicy) -> Self {
        self.session_loss = policy;
        self
    }

    /// The codec for [`Client::publish_value`] and [`Message::decode`](crate::Message::decode)
    /// (default JSON).
    pub fn codec(mut self, codec: impl Codec) -> Self {
        self.codec = Arc::new(codec);
        self
    }

    /// Per subscription, how many QoS 0 messages may wait for a slow consumer before
    /// new ones are dropped with an `Event::SlowConsumer` (default 65,536: bursts of
    /// a consumer that keeps up on average lose nothing; 1,024 lost 4-11 % in the
    /// benchmark's burst). QoS 0 messages are also dropped while the received
    /// messages waiting for consumers take [`max_inbound_buffer`](Self::max_inbound_buffer),
    /// so that QoS 0 never makes the client stop reading. QoS 1 and 2 messages are
    /// never dropped: they are acknowledged only once consumed, so the broker's
    /// in-flight window holds back the rest.
    pub fn subscription_buffer(mut self, n: usize) -> Self {
        self.subscription_buffer = n;
        self
    }

    /// The most memory received messages may take while they wait for their
    /// consumers (queued in subscriptions or held), counted as payload + topic +
    /// 256 bytes a message (default 64 MiB). Once it is reached the client reads
    /// nothing more from the connection until consumers catch up: what the broker
    /// sends meanwhile waits in the kernel's socket buffers and at the broker, and
    /// nothing is dropped. Publishing, acknowledging and keep-alive go on.
    pub fn max_inbound_buffer(mut self, bytes: usize) -> Self {
        self.max_inbound_buffer = bytes;
        self
    }

    /// How long after the first connect a message that matches no subscription is
    /// held, unacknowledged, for one to be made (default 5 s; zero turns holding
    /// off).
    ///
    /// A persistent session's broker sends the messages it queued while the client
    /// was away right after the connect, before the application subscribed again
    /// (`connect()` returns first). Held, they go to the first subscription made for
    /// them. While a message is held, the acknowledgements of the messages after it
    /// wait (they leave in arrival order). When the period is over, held and later
    /// unmatched messages go to the [`unrouted_handler`](Self::unrouted_handler),
    /// or, without one, are acknowledged and reported as
    /// [`Event::Unrouted`](super::Event::Unrouted).
    pub fn unrouted_hold(mut self, period: Duration) -> Self {
        self.unrouted_hold = period;
        self
    }

    /// Receive the messages that match no subscription (after the
    /// [`unrouted_hold`](Self::unrouted_hold) period), instead of dropping them
    /// with an [`Event::Unrouted`](super::Event::Unrouted). It runs like a
    /// subscription's handler: one message at a time, on its own task, wrapped in
    /// the [`handler_layer`](Self::handler_layer)s, each message acknowledged when
    /// it returns.
    pub fn unrouted_handler(mut self, handler: impl Handler) -> Self {
        self.unrouted_handler = Some(BoxHandler::new(handler));
        self
    }

    /// Whether to try again, with backoff, when the broker refuses the connection
    /// (a CONNACK return code: bad credentials, not authorized, client id rejected,
    /// ...; default true, so that a fixed ACL or a credential provider's next
    /// credentials get the client in). With false, a refusal stops the client:
    /// [`Client::wait_connected`] returns the refusal, and a `start()`ed client does
    /// not retry forever with credentials that cannot work.
    pub fn retry_refused(mut self, retry: bool) -> Self {
        self.retry_refused = retry;
        self
    }

    /// A last-will message the broker publishes if this client vanishes.
    pub fn last_will(
        mut self,
        topic: impl Into<String>,
        payload: impl Into<Bytes>,
        qos: QoS,
        retain: bool,
    ) -> Self {
        self.last_will = Some(LastWill {
            topic: topic.into(),
            payload: payload.into(),
            qos,
            retain,
        });
        self
    }

    /// Called after every successful connect with `session_present` (the Go
    /// `OnConnect`). Runs on its own task with a client handle.
    pub fn on_connect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Client, bool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |c, present| Box::pin(f(c, present))));
        self
    }

    /// Called when an established connection is lost, with the reason (the Go
    /// `OnConnectionLost`).
    pub fn on_connection_lost<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Client, String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_connection_lost = Some(Arc::new(move |c, reason| Box::pin(f(c, reason))));
        self
    }

    /// Called before each reconnect attempt with the attempt number (the Go
    /// `OnReconnect`).
    pub fn on_reconnect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Client, u32) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_reconnect = Some(Arc::new(move |c, attempt| Box::pin(f(c, attempt))));
        self
    }

    /// Call `f` with every [`Event`](super::Event), synchronously, as it happens (keep
    /// it quick: it runs on the client's own task). Several may be set; telemetry
    /// uses this to keep connection gauges. For async work, use
    /// [`Client::events`](super::Client::events) instead.
    pub fn on_event(mut self, f: impl Fn(&super::Event) + Send + Sync + 'static) -> Self {
        self.event_callbacks.push(Arc::new(f));
        self
    }

    /// Wrap every publish in `layer` (the Go `UsePublisherMiddleware`, set at build
    /// time). Several layers in one call, as a tuple `(A, B)`, compose with no
    /// allocation between them, `A` outermost; each call adds one boxed hop, and the
    /// first call is the outermost.
    pub fn publish_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxPublisher> + Send + Sync + 'static,
        L::Service: Publisher,
    {
        self.layers
            .publish
            .push(Arc::new(move |next| BoxPublisher::new(layer.layer(next))));
        self
    }

    /// Wrap every subscribe (single and multiple) in `layer`; see
    /// [`publish_layer`](Self::publish_layer).
    pub fn subscribe_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxSubscriber> + Send + Sync + 'static,
        L::Service: Subscriber,
    {
        self.layers
            .subscribe
            .push(Arc::new(move |next| BoxSubscriber::new(layer.layer(next))));
        self
    }

    /// Wrap every unsubscribe in `layer`; see [`publish_layer`](Self::publish_layer).
    pub fn unsubscribe_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxUnsubscriber> + Send + Sync + 'static,
        L::Service: Unsubscriber,
    {
        self.layers.unsubscribe.push(Arc::new(move |next| {
            BoxUnsubscriber::new(layer.layer(next))
        }));
        self
    }

    /// Wrap [`Client::stop`] in `layer`; see [`publish_layer`](Self::publish_layer).
    pub fn stop_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxStopper> + Send + Sync + 'static,
        L::Service: Stopper,
    {
        self.layers
            .stop
            .push(Arc::new(move |next| BoxStopper::new(layer.layer(next))));
        self
    }

    /// Wrap every message handler in `layer` (applied when a handler subscribes);
    /// see [`publish_layer`](Self::publish_layer). `Subscription` streams have no
    /// handler and are not wrapped.
    pub fn handler_layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<BoxHandler> + Send + Sync + 'static,
        L::Service: Handler,
    {
        self.layers
            .handler
            .push(Arc::new(move |next| BoxHandler::new(layer.layer(next))));
        self
    }

    /// Validate, connect, and return once the broker accepted the connection (CONNACK).
    /// The client then runs in the background, reconnecting as configured, until
    /// [`Client::stop`].
    ///
    /// # Errors
    ///
    /// [`ConnectError::Config`] for invalid options; otherwise why the first attempt
    /// failed (refused with the broker's reason, timeout, DNS, TCP, TLS).
    ///
    /// # Cancel safety
    ///
    /// Cancelling stops the client: nothing keeps running in the background.
    pub async fn connect(self) -> Result<Client, ConnectError> {
        super::lifecycle::connect(self.validate()?).await
    }

    /// Validate and start in the background, retrying the first connect with
    /// exponential backoff (the Go `ExponentialStartStrategy`). Returns at once;
    /// publishes wait for the connection (bounded by the write timeout).
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for invalid options, or when called outside a Tokio runtime.
    pub fn start(self) -> Result<Client, ConfigError> {
        super::lifecycle::start(self.validate()?)
    }

    /// [`start`](Self::start), then run until `shutdown` completes, then
    /// [`stop`](Client::stop) gracefully (the Go `Run(ctx)`). Pass
    /// `token.cancelled()` for a `CancellationToken`, or `tokio::signal::ctrl_c()`.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] for invalid options.
    ///
    /// # Cancel safety
    ///
    /// Cancelling this future drops the client without a graceful stop.
    pub async fn run<F: Future>(self, shutdown: F) -> Result<(), ConfigError> {
        let client = self.start()?;
        shutdown.await;
        client.stop().await;
        Ok(())
    }

    pub(crate) fn validate(self) -> Result<ValidOptions, ConfigError> {
        if let Some(problem) = self.address_error {
            return Err(problem.into_error());
        }
        let transport = self.transport_to_use()?;
        let ka = self.keep_alive;
        if !ka.is_zero()
            && (ka < Duration::from_secs(1)
                || ka > Duration::from_secs(65_535)
                || ka.subsec_nanos() != 0)
        {
            return Err(ConfigError::KeepAlive(ka));
        }
        if self.client_id.is_empty() && !self.clean_session {
            return Err(ConfigError::EmptyClientIdWithPersistentSession);
        }
        if self.password.is_some() && self.username.is_none() {
            return Err(ConfigError::PasswordWithoutUsername);
        }
        if self.max_inflight == 0 || self.max_inflight > 32_767 {
            return Err(ConfigError::OutOfRange {
                option: "max_inflight",
                value: u64::from(self.max_inflight),
                range: "1 to 32767",
            });
        }
        if !(64..=MQTT_MAX_PACKET_SIZE).contains(&self.max_packet_size) {
            return Err(ConfigError::OutOfRange {
                option: "max_packet_size",
                value: self.max_packet_size as u64,
                range: "64 to 268435460",
            });
        }
        for (option, value) in [
            ("max_queued_qos0", self.max_queued_qos0),
            ("subscription_buffer", self.subscription_buffer),
            ("max_inbound_buffer", self.max_inbound_buffer),
        ] {
            if value == 0 {
                return Err(ConfigError::OutOfRange {
                    option,
                    value: 0,
                    range: "at least 1",
                });
            }
        }
        // The QoS 0 window is a semaphore, which holds at most this many permits.
        if self.max_queued_qos0 > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::OutOfRange {
                option: "max_queued_qos0",
                value: self.max_queued_qos0 as u64,
                range: "1 to 2^61 - 1",
            });
        }
        for (name, d) in [
            ("connect_timeout", self.connect_timeout),
            ("write_timeout", self.write_timeout),
            ("credential_timeout", self.credential_timeout),
            ("ack_timeout", self.ack_timeout.unwrap_or(Duration::MAX)),
        ] {
            if d.is_zero() {
                return Err(ConfigError::ZeroDuration(name));
            }
        }
        check_length("client_id", self.client_id.len())?;
        check_length("username", self.username.as_ref().map_or(0, String::len))?;
        check_length("password", self.password.as_ref().map_or(0, String::len))?;
        if let Some(will) = &self.last_will {
            check_length("last_will topic", will.topic.len())?;
            check_length("last_will payload", will.payload.len())?;
            validate_topic_name(&will.topic).map_err(|source| ConfigError::InvalidLastWill {
                topic: crate::error::quote_input(&will.topic),
                source,
            })?;
        }
        if self.reconnect_backoff.initial_is_zero()
            && self.reconnect_backoff.max().is_some_and(|m| m.is_zero())
        {
            return Err(ConfigError::ZeroDuration("reconnect_backoff"));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(ConfigError::NoRuntime);
        }
        let static_credentials = self.username.clone().map(|u| match self.password.clone() {
            Some(p) => Credentials::new(u, p),
            None => Credentials::username_only(u),
        });
        Ok(ValidOptions {
            transport,
            static_credentials,
            builder: self,
        })
    }
}

impl ClientBuilder {
    /// The transport set, else the one the route selects.
    fn transport_to_use(&self) -> Result<Arc<dyn Transport>, ConfigError> {
        let not_tcp = |peer: String| ConfigError::InvalidAddress {
            address: peer,
            reason: "a proxy tunnels TCP only: not a Unix socket or a custom transport",
        };
        if let Some(transport) = &self.transport {
            if self.proxy.is_some() {
                return Err(not_tcp(transport.peer()));
            }
            return Ok(Arc::clone(transport));
        }
        match &self.route {
            Route::Unix(path) => {
                if self.proxy.is_some() {
                    return Err(not_tcp(format!("unix:{path}")));
                }
                unix_socket(path)
            }
            Route::Tcp | Route::WebSocket { .. } => Ok(Arc::new(self.network()?)),
        }
    }

    /// The built-in network transport to the configured host and port.
    fn network(&self) -> Result<Network, ConfigError> {
        let host = self.host.clone().ok_or(ConfigError::MissingAddress)?;
        if host.is_empty() {
            return Err(ConfigError::InvalidAddress {
                address: host,
                reason: "empty host",
            });
        }
        if self.port == 0 {
            return Err(ConfigError::InvalidAddress {
                address: format!("{host}:0"),
                reason: "port 0",
            });
        }
        Ok(Network {
            host,
            port: self.port,
            nodelay: self.tcp_nodelay,
            proxy: self.proxy.clone(),
            #[cfg(feature = "tls")]
            tls: self.tls.as_ref().map(TlsConfig::rustls),
            #[cfg(feature = "websocket")]
            websocket: self.websocket_settings()?,
        })
    }

    /// The WebSocket upgrade of a `ws://`/`wss://` route, its headers checked.
    #[cfg(feature = "websocket")]
    fn websocket_settings(
        &self,
    ) -> Result<Option<super::websocket::WebSocketSettings>, ConfigError> {
        let Route::WebSocket { path } = &self.route else {
            return Ok(None);
        };
        let headers = self
            .websocket_headers
            .iter()
            .map(|(name, value)| super::websocket::WsHeader::new(name, value))
            .collect::<Result<_, _>>()?;
        Ok(Some(super::websocket::WebSocketSettings {
            path: path.clone(),
            headers,
        }))
    }
}

#[cfg(unix)]
fn unix_socket(path: &str) -> Result<Arc<dyn Transport>, ConfigError> {
    Ok(Arc::new(super::transport::UnixSocket::new(path)))
}

#[cfg(not(unix))]
fn unix_socket(path: &str) -> Result<Arc<dyn Transport>, ConfigError> {
    Err(ConfigError::InvalidAddress {
        address: format!("unix:{path}"),
        reason: "Unix sockets exist on Unix only",
    })
}

/// The most bytes a string or binary field of CONNECT can hold: its length is
/// framed in 16 bits.
const MAX_FIELD_LEN: usize = 65_535;

/// `field` of `len` bytes fits CONNECT's 16-bit length (longer, it used to go out
/// with a wrapped length: a mis-framed packet).
fn check_length(field: &'static str, len: usize) -> Result<(), ConfigError> {
    if len > MAX_FIELD_LEN {
        return Err(ConfigError::TooLong { field, len });
    }
    Ok(())
}

/// Credentials fit CONNECT (checked at build for static ones, at each connect for
/// those of a credential provider).
pub(crate) fn check_credentials(credentials: &Credentials) -> Result<(), ConfigError> {
    check_length("username", credentials.username().len())?;
    check_length("password", credentials.password().map_or(0, str::len))
}

/// Options that passed validation.
pub(crate) struct ValidOptions {
    /// What opens the connection to the broker.
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) static_credentials: Option<Credentials>,
    pub(crate) builder: ClientBuilder,
}

impl ValidOptions {
    /// The broker as errors and logs name it: `host:port` (an IPv6 host in
    /// brackets), or as a custom transport or Unix socket names it.
    pub(crate) fn broker(&self) -> String {
        self.transport.peer()
    }
}

impl ClientBuilder {
    #[cfg(feature = "tls")]
    fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    #[cfg(not(feature = "tls"))]
    fn uses_tls(&self) -> bool {
        false
    }

    /// The names of the WebSocket headers set (their values are secret).
    #[cfg(feature = "websocket")]
    fn websocket_header_names(&self) -> Vec<&str> {
        self.websocket_headers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    }

    #[cfg(not(feature = "websocket"))]
    fn websocket_header_names(&self) -> Vec<&str> {
        Vec::new()
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("credential_provider", &self.credential_provider.is_some())
            .field("tls", &self.uses_tls())
            .field("route", &self.route)
            .field("transport", &self.transport.as_ref().map(|t| t.peer()))
            .field("proxy", &self.proxy)
            .field("websocket_headers", &self.websocket_header_names())
            .field("keep_alive", &self.keep_alive)
            .field("connect_timeout", &self.connect_timeout)
            .field("write_timeout", &self.write_timeout)
            .field("ack_timeout", &self.ack_timeout)
            .field("clean_session", &self.clean_session)
            .field("auto_reconnect", &self.auto_reconnect)
            .field("reconnect_backoff", &self.reconnect_backoff)
            .field("graceful_shutdown", &self.graceful_shutdown)
            .field("stable_after", &self.stable_after)
            .field("max_inflight", &self.max_inflight)
            .field("max_packet_size", &self.max_packet_size)
            .field("tcp_nodelay", &self.tcp_nodelay)
            .field("session_loss", &self.session_loss)
            .field("max_inbound_buffer", &self.max_inbound_buffer)
            .field("unrouted_hold", &self.unrouted_hold)
            .field("unrouted_handler", &self.unrouted_handler.is_some())
            .field("retry_refused", &self.retry_refused)
            .field("codec", &self.codec)
            .field("layers", &self.layers)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> ClientBuilder {
        ClientBuilder::new()
            .address("localhost", 1883)
            .client_id("t")
    }

    fn err(b: ClientBuilder) -> Option<ConfigError> {
        b.validate().err()
    }

    #[tokio::test]
    async fn defaults_validate() {
        assert!(valid().validate().is_ok());
    }

    #[tokio::test]
    async fn invalid_options_are_typed_errors() {
        assert!(matches!(
            err(ClientBuilder::new()),
            Some(ConfigError::MissingAddress)
        ));
        assert!(matches!(
            err(valid().keep_alive(Duration::from_millis(500))),
            Some(ConfigError::KeepAlive(_))
        ));
        assert!(matches!(
            err(valid().keep_alive(Duration::from_secs(70_000))),
            Some(ConfigError::KeepAlive(_))
        ));
        assert!(valid().keep_alive(Duration::ZERO).validate().is_ok());
        assert!(matches!(
            err(valid().client_id("")),
            Some(ConfigError::EmptyClientIdWithPersistentSession)
        ));
        assert!(valid().client_id("").clean_session(true).validate().is_ok());
        assert!(matches!(
            err(valid().password("p")),
            Some(ConfigError::PasswordWithoutUsername)
        ));
        assert!(matches!(
            err(valid().max_inflight(0)),
            Some(ConfigError::OutOfRange {
                option: "max_inflight",
                ..
            })
        ));
        assert!(matches!(
            err(valid().max_packet_size(10)),
            Some(ConfigError::OutOfRange { .. })
        ));
        assert!(matches!(
            err(valid().write_timeout(Duration::ZERO)),
            Some(ConfigError::ZeroDuration("write_timeout"))
        ));
        assert!(matches!(
            err(valid().last_will("a/#", "x", QoS::AtMostOnce, false)),
            Some(ConfigError::InvalidLastWill { .. })
        ));
        assert!(matches!(
            err(valid().url("http://x")),
            Some(ConfigError::InvalidAddress { .. })
        ));
        assert!(matches!(
            err(valid().url("mqtt://x:notaport")),
            Some(ConfigError::InvalidAddress { .. })
        ));
    }

    #[tokio::test]
    async fn transports_are_chosen_by_url_and_builder() {
        let peer = |b: ClientBuilder| b.validate().map(|o| o.broker());
        assert_eq!(peer(valid()).unwrap(), "localhost:1883");
        assert_eq!(
            peer(valid().url("unix:///run/m.sock")).unwrap(),
            "unix:/run/m.sock"
        );
        assert_eq!(
            peer(valid().url("unix:///run/m.sock").address("h", 1884)).unwrap(),
            "h:1884"
        );
        #[cfg(unix)]
        assert_eq!(
            peer(
                ClientBuilder::new()
                    .client_id("t")
                    .transport(super::super::transport::UnixSocket::new("/s"))
            )
            .unwrap(),
            "unix:/s"
        );
        assert!(matches!(
            err(valid()
                .url("unix:///run/m.sock")
                .proxy(ProxyConfig::new("p", 3128))),
            Some(ConfigError::InvalidAddress { .. })
        ));
        #[cfg(feature = "websocket")]
        {
            let with_header = |value: &str| {
                valid()
                    .url("ws://h/mqtt")
                    .websocket_header("Authorization", value)
            };
            assert!(with_header("Bearer x").validate().is_ok());
            let bad = err(with_header("s3cret\n"));
            assert!(
                matches!(&bad, Some(ConfigError::InvalidHeader { .. })),
                "{bad:?}"
            );
            assert!(!format!("{bad:?}").contains("s3cret"));
        }
        #[cfg(not(feature = "websocket"))]
        assert!(matches!(
            err(valid().url("ws://h")),
            Some(ConfigError::InvalidAddress { .. })
        ));
    }

    #[test]
    fn outside_a_runtime_is_a_config_error() {
        assert!(matches!(err(valid()), Some(ConfigError::NoRuntime)));
    }

    #[test]
    fn debug_redacts_the_password() {
        let shown = format!("{:?}", valid().username("u").password("s3cret"));
        assert!(!shown.contains("s3cret"));
        assert!(shown.contains("<redacted>"));
    }
}
