//! Test doubles (the `test-util` feature): [`FakeBroker`], an in-memory broker
//! whose clients are ordinary [`Client`]s, to unit-test code that publishes and
//! subscribes without a broker, a network or sleeps.
//!
//! ```toml
//! [dev-dependencies]
//! courier-mqtt = { version = "0.1", features = ["test-util"] }
//! ```
//!
//! A client from [`FakeBroker::client`] (or [`FakeBroker::client_with`], to keep a
//! builder's codec, middleware and timeouts) is the same `Client` type a service
//! gets from [`ClientBuilder::connect`]: its publish and subscribe builders, its
//! middleware, codec, handler tasks, events and `stop` all run as they do on a
//! connection. Only the broker is in memory. The fake:
//!
//! - **records publishes** ([`published`](FakeBroker::published),
//!   [`take_published`](FakeBroker::take_published),
//!   [`next_published`](FakeBroker::next_published)), after the client's
//!   middleware, as the broker would get them;
//! - **routes messages like a broker**: a publish, or a message the test
//!   [`inject`](FakeBroker::inject)s, goes to every subscription whose filter
//!   matches its topic (`+` and `#` wildcards), to one member of each shared group
//!   (`$share/<group>/...`, in turn), at no more than the QoS granted. A client
//!   subscribed to what it publishes gets its own message, and several clients of
//!   one fake see each other's publishes. Retained messages are kept and sent,
//!   flagged retained, to later subscriptions on matching filters (not to shared
//!   ones); an empty retained payload clears the topic's. MQTT 3.1.1 carries no
//!   user properties: subscribers never get a publish's
//!   [`properties`](crate::client::middleware::PublishRequest::properties)
//!   (they are recorded);
//! - **tells when a message was handled**: awaiting an [`Inject`] resolves once
//!   every subscription it went to consumed it (its handler returned, or its stream
//!   yielded it), so a test asserts on a handler's effects right after, whatever
//!   the QoS;
//! - **fails on request**: the next publish, subscribe or unsubscribe
//!   ([`fail_next_publish`](FakeBroker::fail_next_publish) and siblings, queued),
//!   the publishes a rule picks ([`fail_publishes_when`](FakeBroker::fail_publishes_when)),
//!   refused filters ([`refuse_filter`](FakeBroker::refuse_filter)) and a lower
//!   granted QoS ([`set_max_qos`](FakeBroker::set_max_qos));
//! - **drops and restores the connection** ([`disconnect`](FakeBroker::disconnect),
//!   [`reconnect`](FakeBroker::reconnect)), with the state changes, events and
//!   callbacks a connection has, to test reconnect logic.
//!
//! It does not check credentials, keep-alives or packet ids, enforce the in-flight
//! window, or report [`Event::SlowConsumer`](crate::Event::SlowConsumer).
//!
//! # Example
//!
//! A handler that answers pings, tested without a broker:
//!
//! ```
//! use courier_core::testing::FakeBroker;
//! use courier_core::{BoxError, Client, Message};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let broker = FakeBroker::new();
//! let client = broker.client();
//! client
//!     .subscribe("ping/+")
//!     .handler(|client: Client, msg: Message| async move {
//!         let id = msg.topic().trim_start_matches("ping/").to_owned();
//!         client.publish(format!("pong/{id}"), msg.payload().clone()).await?;
//!         Ok::<(), BoxError>(())
//!     })
//!     .await?;
//!
//! // Resolves once the handler returned: 1 subscription took the message.
//! assert_eq!(broker.inject("ping/7", "hello").await, 1);
//!
//! let sent = broker.take_published();
//! assert_eq!(sent.len(), 1);
//! assert_eq!(sent[0].topic, "pong/7");
//! assert_eq!(sent[0].payload_str()?, "hello");
//! client.stop().await;
//! # Ok(()) }
//! ```
//!
//! # Connection
//!
//! The fake starts connected, and a client made while it is disconnected starts
//! [`Connecting`](ConnectionState::Connecting). [`disconnect`](FakeBroker::disconnect)
//! cuts every client of the fake at once, as a network failure would: their state
//! becomes [`Disconnected`](ConnectionState::Disconnected), they send
//! [`Event::Disconnected`](crate::Event::Disconnected) and run their
//! `on_connection_lost` callbacks; the fake publishes the last will of those that
//! have one ([`ClientBuilder::last_will`]), as a broker does when a connection ends
//! without DISCONNECT. A client built with `auto_reconnect(false)` then stops for
//! good, its waiting publishes failing with [`PublishError::ConnectionLost`]. While
//! disconnected, the others behave as a connection does:
//!
//! - a publish waits for the connection until its timeout (the client's write
//!   timeout, or the publish's own) and then fails with
//!   [`PublishError::Timeout`], but stays queued and reaches the broker on
//!   `reconnect`, as a connection retransmits it;
//! - a subscribe or unsubscribe waits the same way, failing with `Timeout`
//!   (an unsubscribe ends the subscriptions at once; a subscribe that times out
//!   subscribes nothing);
//! - an injected QoS 1 or 2 message is kept for the subscriptions of persistent
//!   sessions (`clean_session(false)`, the default) and delivered on
//!   `reconnect`; a QoS 0 one is lost.
//!
//! [`reconnect`](FakeBroker::reconnect) connects them again: the queued publishes and
//! messages go out in order, the state becomes
//! [`Connected`](ConnectionState::Connected), and each client sends
//! [`Event::Connected`](crate::Event::Connected) (session present unless it asked
//! for a clean session) and runs its `on_reconnect` and `on_connect` callbacks.
//!
//! # Stopping
//!
//! [`Client::stop`], [`Client::abort`] and dropping the last handle end a client of
//! the fake: its state becomes [`Stopped`](ConnectionState::Stopped), its
//! subscriptions end, and its later publishes, subscribes and unsubscribes fail
//! with `Closed`. Publishes still waiting for the connection fail with
//! [`PublishError::StoppedInFlight`] (stop) or [`PublishError::Aborted`] (abort).
//! An abort while connected makes the fake publish the client's last will, as a
//! broker does when a client vanishes.

mod broker;

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::join_all;

#[cfg(doc)]
use crate::client::ConnectionState;
use crate::client::middleware::{DeliveryReceipt, PublishRequest};
use crate::client::{Client, ClientBuilder};
use crate::codec::Codec;
use crate::error::{DecodeError, PublishError, SubscribeError, UnsubscribeError};
use crate::message::MessageParts;
use crate::payload::FromPayload;
use crate::qos::QoS;
use crate::topic::filter_matches;

use broker::{Broker, Injected};

/// An in-memory MQTT broker for tests, and the clients on it: see the
/// [module documentation](self).
///
/// Cheap to clone; every clone is the same broker.
#[derive(Clone)]
pub struct FakeBroker {
    broker: Arc<Broker>,
}

impl Default for FakeBroker {
    fn default() -> Self {
        FakeBroker::new()
    }
}

impl fmt::Debug for FakeBroker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.broker.lock();
        f.debug_struct("FakeBroker")
            .field("connected", &state.is_connected())
            .field("published", &state.published.len())
            .field("subscriptions", &state.filters())
            .finish_non_exhaustive()
    }
}

impl FakeBroker {
    /// An empty broker, connected.
    pub fn new() -> Self {
        FakeBroker {
            broker: Arc::new(Broker::new()),
        }
    }

    /// A client on this broker, with client id `"fake"` and the defaults of
    /// [`Client::builder`] (JSON codec, no middleware).
    pub fn client(&self) -> Client {
        self.client_with(Client::builder().client_id("fake"))
    }

    /// A client on this broker built from `builder`: its codec, middleware, write
    /// timeout, maximum packet size, subscription buffer, graceful shutdown period,
    /// clean-session and auto-reconnect flags, last will, callbacks and client id
    /// (`"fake"` when it has none). It needs no address; the other connection
    /// options are not used.
    pub fn client_with(&self, builder: ClientBuilder) -> Client {
        self.broker.client(builder)
    }

    // ---- publishes -------------------------------------------------------------

    /// Every publish the broker got so far (and not taken), oldest first. A publish
    /// that failed (see [`fail_next_publish`](Self::fail_next_publish)) is not
    /// there; one waiting for the connection is there once it reached the broker.
    pub fn published(&self) -> Vec<Published> {
        self.broker.lock().published.iter().cloned().collect()
    }

    /// The publishes to topics matching `filter` (`+` and `#` wildcards), oldest
    /// first.
    pub fn published_to(&self, filter: &str) -> Vec<Published> {
        self.broker
            .lock()
            .published
            .iter()
            .filter(|p| filter_matches(filter, &p.topic))
            .cloned()
            .collect()
    }

    /// Take every publish recorded so far, oldest first: the record is empty after.
    pub fn take_published(&self) -> Vec<Published> {
        self.broker.lock().published.drain(..).collect()
    }

    /// Take the oldest publish recorded, waiting up to `timeout` for one: for code
    /// that publishes from a task of its own.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] when nothing was published within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a publish is taken only when this resolves.
    pub async fn next_published(&self, timeout: Duration) -> Result<Published, WaitTimeout> {
        let mut changes = self.broker.changes();
        let next = async {
            loop {
                if let Some(published) = self.broker.lock().published.pop_front() {
                    return published;
                }
                if changes.changed().await.is_err() {
                    // The broker outlives `self`: never the case.
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, next)
            .await
            .map_err(|_| WaitTimeout::new("a publish".to_owned(), timeout))
    }

    /// The payload of the retained message on `topic`, if one is kept.
    pub fn retained(&self, topic: &str) -> Option<Bytes> {
        self.broker
            .lock()
            .retained
            .get(topic)
            .map(|parts| parts.payload.clone())
    }

    // ---- incoming messages -----------------------------------------------------

    /// A message to deliver on `topic`, as if another client published it: QoS 1
    /// and not retained unless set on the returned [`Inject`]. Await it to wait
    /// until its subscribers consumed it, or call [`Inject::deliver`].
    pub fn inject(&self, topic: impl Into<String>, payload: impl Into<Bytes>) -> Inject {
        let mut parts = MessageParts::new(topic, payload);
        parts.qos = QoS::AtLeastOnce;
        self.inject_parts(parts)
    }

    /// A message to deliver with these fields: [`retained`](MessageParts::retained)
    /// is read as the retain flag of the publish (the subscriptions it is delivered
    /// to now get it unflagged; later ones get it flagged retained), and the packet
    /// id is the fake's.
    pub fn inject_parts(&self, parts: MessageParts) -> Inject {
        Inject {
            broker: self.clone(),
            parts,
        }
    }

    // ---- subscriptions ---------------------------------------------------------

    /// The topic filters subscribed to, by every client of the fake, sorted, each
    /// once.
    pub fn subscriptions(&self) -> Vec<String> {
        self.broker.lock().filters().into_iter().collect()
    }

    /// Wait up to `timeout` until a client subscribes to exactly `filter`: for code
    /// that subscribes from a task of its own, before injecting messages for it.
    ///
    /// # Errors
    ///
    /// [`WaitTimeout`] when no client subscribed to `filter` within `timeout`.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn wait_for_subscription(
        &self,
        filter: &str,
        timeout: Duration,
    ) -> Result<(), WaitTimeout> {
        let mut changes = self.broker.changes();
        let subscribed = async {
            while !self.broker.lock().has_filter(filter) {
                if changes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(timeout, subscribed)
            .await
            .map_err(|_| WaitTimeout::new(format!("a subscription to {filter:?}"), timeout))
    }

    // ---- failures --------------------------------------------------------------

    /// Make the next publish of any client of the fake fail with `error`, at once,
    /// after the client's checks (topic, size, stopped) and middleware. Several
    /// calls queue errors for the publishes that follow, in order. A failed publish
    /// is not recorded or delivered.
    pub fn fail_next_publish(&self, error: PublishError) {
        self.broker.lock().faults.publish.push_back(error);
    }

    /// Make every publish for which `rule` returns an error fail with it (after the
    /// queued errors of [`fail_next_publish`](Self::fail_next_publish)); it replaces
    /// the rule set before. A failed publish is not recorded or delivered.
    ///
    /// ```
    /// # use courier_core::testing::FakeBroker;
    /// use courier_core::PublishError;
    ///
    /// let broker = FakeBroker::new();
    /// broker.fail_publishes_when(|request| {
    ///     request.topic.starts_with("audit/").then_some(PublishError::ConnectionLost)
    /// });
    /// ```
    pub fn fail_publishes_when<F>(&self, rule: F)
    where
        F: Fn(&PublishRequest) -> Option<PublishError> + Send + Sync + 'static,
    {
        self.broker.lock().faults.publish_rule = Some(Arc::new(rule));
    }

    /// Make the next subscribe fail with `error`, at once, after the client's
    /// checks; nothing is subscribed. Several calls queue errors, in order.
    pub fn fail_next_subscribe(&self, error: SubscribeError) {
        self.broker.lock().faults.subscribe.push_back(error);
    }

    /// Make the next unsubscribe fail with `error`, at once, after the client's
    /// checks; no subscription ends. Dropping a [`Subscription`](crate::Subscription)
    /// or calling its `unsubscribe` makes an unsubscribe too. Several calls queue
    /// errors, in order.
    pub fn fail_next_unsubscribe(&self, error: UnsubscribeError) {
        self.broker.lock().faults.unsubscribe.push_back(error);
    }

    /// Refuse `filter` (compared as written, `$share/...` prefix included) in later
    /// subscribes, as a broker's ACL does: its [`FilterGrant`](crate::FilterGrant)
    /// says refused, and a subscribe whose filters are all refused fails with
    /// [`SubscribeError::Rejected`].
    pub fn refuse_filter(&self, filter: impl Into<String>) {
        self.broker.lock().faults.refused.insert(filter.into());
    }

    /// Grant at most `qos` in later subscribes (Mosquitto's `max_qos`): messages
    /// then arrive at no more than `qos`.
    pub fn set_max_qos(&self, qos: QoS) {
        self.broker.lock().faults.max_qos = Some(qos);
    }

    /// Forget the failures asked for: queued errors, the publish rule, refused
    /// filters and the QoS limit.
    pub fn clear_failures(&self) {
        self.broker.lock().faults = broker::Faults::default();
    }

    // ---- connection ------------------------------------------------------------

    /// Cut the connection of every client of the fake, as a network failure would
    /// (see [Connection](self#connection)): their last wills are published. Does
    /// nothing while disconnected.
    pub fn disconnect(&self) {
        self.broker.disconnect();
    }

    /// Connect every client of the fake again (see [Connection](self#connection)).
    /// Does nothing while connected.
    pub fn reconnect(&self) {
        self.broker.reconnect();
    }

    /// Whether the clients are connected (between [`disconnect`](Self::disconnect)
    /// and [`reconnect`](Self::reconnect) they are not).
    pub fn is_connected(&self) -> bool {
        self.broker.is_connected()
    }
}

/// A publish the fake broker got: what the client sent after its middleware.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Published {
    /// The topic.
    pub topic: String,
    /// The payload bytes, encoded.
    pub payload: Bytes,
    /// The QoS it was published with.
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
    /// The user properties the middleware set (recorded; MQTT 3.1.1 does not send
    /// them).
    pub properties: Vec<(String, String)>,
    /// The client id of the client that published it.
    pub client_id: String,
    /// The publishing client's codec, for [`decode`](Self::decode).
    codec: Arc<dyn Codec>,
}

impl Published {
    /// The payload as UTF-8 text.
    ///
    /// # Errors
    ///
    /// When the payload is not valid UTF-8.
    pub fn payload_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.payload)
    }

    /// Decode the payload with the publishing client's codec (JSON by default), as
    /// [`Message::decode`](crate::Message::decode) does.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] naming the codec and `T` when the payload does not decode.
    pub fn decode<T: FromPayload>(&self) -> Result<T, DecodeError> {
        T::from_payload(&self.payload, &*self.codec)
    }

    /// The first user property named `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A message to deliver to the fake's subscribers, from [`FakeBroker::inject`].
///
/// Await it to deliver the message and wait until every subscription it went to
/// consumed it: its handler returned (with an error too, which the client reports
/// as [`Event::HandlerFailed`](crate::Event::HandlerFailed)), or its stream yielded
/// it. It resolves to how many did. Or call [`deliver`](Self::deliver) to hand it
/// over without waiting.
///
/// A message nobody reads keeps the await waiting (a stream not polled, a handler
/// that never returns, or the fake disconnected): bound it with
/// `tokio::time::timeout`.
#[must_use = "a message is delivered when awaited or on `deliver()`"]
#[derive(Debug)]
pub struct Inject {
    broker: FakeBroker,
    parts: MessageParts,
}

impl Inject {
    /// The QoS it is published with (default [`QoS::AtLeastOnce`]); each
    /// subscription gets it at no more than the QoS it was granted.
    pub fn qos(mut self, qos: QoS) -> Self {
        self.parts.qos = qos;
        self
    }

    /// Whether it is published with the retain flag (default false): the fake keeps
    /// it for later subscriptions on matching filters, which get it flagged
    /// retained (the subscriptions it is delivered to now get it unflagged, as from
    /// a broker). An empty payload clears the topic's retained message.
    pub fn retain(mut self, retain: bool) -> Self {
        self.parts.retained = retain;
        self
    }

    /// Set the DUP flag, as on a redelivery (default false).
    pub fn duplicate(mut self, duplicate: bool) -> Self {
        self.parts.duplicate = duplicate;
        self
    }

    /// Add a user property (MQTT 3.1.1 has none on the wire; a handler middleware
    /// that reads an envelope sets them).
    pub fn property(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.parts.properties.push((key.into(), value.into()));
        self
    }

    /// Hand the message to the matching subscriptions now, without waiting for them
    /// to consume it; returns how many queued it (a full buffer drops a QoS 0
    /// message). 0 while the fake is disconnected: a QoS 1 or 2 message is then
    /// delivered on [`reconnect`](FakeBroker::reconnect).
    pub fn deliver(self) -> usize {
        match self.broker.broker.inject(self.parts) {
            Injected::Now(receipts) => receipts.iter().filter(|r| r.queued()).count(),
            Injected::Later(_) => 0,
        }
    }
}

impl IntoFuture for Inject {
    type Output = usize;
    type IntoFuture = Pin<Box<dyn Future<Output = usize> + Send>>;

    /// # Cancel safety
    ///
    /// The message is delivered on the first poll; cancelling only stops waiting
    /// for its subscribers.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let receipts = match self.broker.broker.inject(self.parts) {
                Injected::Now(receipts) => receipts,
                Injected::Later(later) => later.await.unwrap_or_default(),
            };
            join_all(receipts.into_iter().map(DeliveryReceipt::consumed))
                .await
                .into_iter()
                .filter(|consumed| *consumed)
                .count()
        })
    }
}

/// Nothing happened within the time a [`FakeBroker`] wait was given.
#[derive(Debug, Clone, thiserror::Error)]
#[error("waited {waited:?} for {what}, in vain")]
pub struct WaitTimeout {
    what: String,
    waited: Duration,
}

impl WaitTimeout {
    fn new(what: String, waited: Duration) -> Self {
        WaitTimeout { what, waited }
    }

    /// How long it waited.
    pub fn waited(&self) -> Duration {
        self.waited
    }
}
