//! Middleware: chains around publish, subscribe, unsubscribe, stop and every message
//! handler (the Go `UsePublisherMiddleware` & co.), composed with `tower_layer::Layer`.
//!
//! Each operation has a trait taking `&self` and returning `impl Future + Send`
//! ([`Publisher`], [`Subscriber`], [`Unsubscriber`], [`Stopper`], and
//! [`Handler`]). A middleware is a struct wrapping the next service,
//! implementing the same trait with one `async fn`, plus a [`Layer`] that builds it:
//!
//! ```
//! use std::time::Instant;
//! use courier_core::PublishError;
//! use courier_core::client::middleware::{Layer, PublishRequest, Publisher};
//!
//! /// Logs every publish with its latency.
//! #[derive(Debug, Clone)]
//! struct Logged<P> { next: P }
//!
//! impl<P: Publisher> Publisher for Logged<P> {
//!     async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
//!         let (topic, started) = (request.topic.clone(), Instant::now());
//!         let result = self.next.publish(request).await;
//!         println!("publish {topic}: {:?} in {:?}", result.is_ok(), started.elapsed());
//!         result
//!     }
//! }
//!
//! #[derive(Debug, Clone)]
//! struct LoggedLayer;
//!
//! impl<P> Layer<P> for LoggedLayer {
//!     type Service = Logged<P>;
//!     fn layer(&self, next: P) -> Logged<P> { Logged { next } }
//! }
//! // Client::builder().publish_layer(LoggedLayer)
//! ```
//!
//! Layers given in one call as a tuple `(A, B, C)` are composed statically, `A`
//! outermost, with no allocation between them; the chain is type-erased once. Each
//! `*_layer` call adds one such erased chain, and the first call is the outermost.
//! For application code, [`publish_fn`] (and its siblings) turn an async closure
//! into a middleware, at the cost of one boxed call per hop.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
pub use tower_layer::{Identity, Layer, Stack, layer_fn};

use super::Client;
use super::budget::InboundBudget;
use super::credentials::BoxFuture;
pub use super::handler::Handler;
use super::router::{Ack, Delivery, Offer, Sink};
use super::subscription::FilterGrant;
use crate::error::{BoxError, PublishError, SubscribeError, UnsubscribeError, quote_input};
use crate::message::Message;
use crate::qos::QoS;
use crate::topic::{TopicFilter, validate_topic_filter};

/// A publish on its way through the chain. Middleware may read and change it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PublishRequest {
    /// The topic name (validated by the client after the chain).
    pub topic: String,
    /// The encoded payload.
    pub payload: Bytes,
    /// The QoS.
    pub qos: QoS,
    /// The retain flag.
    pub retain: bool,
    /// A per-call timeout; `None` uses the client's write timeout.
    pub timeout: Option<Duration>,
    /// User properties. MQTT 3.1.1 has no place for them on the wire, so the client
    /// does not send them; a middleware may move them into the payload (an envelope),
    /// and MQTT 5 will carry them as user properties.
    pub properties: Vec<(String, String)>,
}

impl PublishRequest {
    /// A QoS 1 publish of `payload` to `topic`, no retain, default timeout.
    pub fn new(topic: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        PublishRequest {
            topic: topic.into(),
            payload: payload.into(),
            qos: QoS::default(),
            retain: false,
            timeout: None,
            properties: Vec::new(),
        }
    }
}

/// A subscribe on its way through the chain: the filters and their QoS, and the
/// subscription's queue. Middleware may change the filters (the messages then route
/// by the changed filters). A clone feeds the same queue: a backend with several
/// connections subscribes each with a clone.
#[derive(Clone)]
#[non_exhaustive]
pub struct SubscribeRequest {
    /// The topic filters with the QoS asked for each.
    pub filters: Vec<(String, QoS)>,
    pub(crate) sink: Sink,
}

impl SubscribeRequest {
    /// The filters, checked and parsed, with their QoS.
    ///
    /// # Errors
    ///
    /// [`SubscribeError::NoFilters`], or [`SubscribeError::InvalidFilter`] for the
    /// first invalid one.
    pub fn parse_filters(&self) -> Result<Vec<(TopicFilter, QoS)>, SubscribeError> {
        if self.filters.is_empty() {
            return Err(SubscribeError::NoFilters);
        }
        self.filters
            .iter()
            .map(|(filter, qos)| {
                TopicFilter::new(filter.as_str())
                    .map(|parsed| (parsed, *qos))
                    .map_err(|source| SubscribeError::InvalidFilter {
                        filter: quote_input(filter),
                        source,
                    })
            })
            .collect()
    }

    /// For a [`Backend`](super::Backend) that is not a connection (a test double):
    /// hand `message` to this subscription's stream or handler, as a connection does
    /// with what its broker sends. A QoS 0 message is dropped when the subscription's
    /// buffer is full; QoS 1 and 2 messages are always queued.
    pub fn deliver(&self, message: Message) -> DeliveryReceipt {
        // Every QoS gets a receipt: a test double waits for QoS 0 messages too.
        let (tx, rx) = tokio::sync::oneshot::channel();
        let delivery = Delivery {
            charge: InboundBudget::new(usize::MAX).charge(&message),
            message,
            ack: Some(Ack::Receipt(tx)),
        };
        let offer = self.sink.offer(delivery);
        DeliveryReceipt {
            settled: rx,
            queued: offer == Offer::Queued,
        }
    }
}

/// What became of a message given to [`SubscribeRequest::deliver`].
#[derive(Debug)]
#[must_use = "await `consumed` to learn whether the subscriber took the message"]
pub struct DeliveryReceipt {
    settled: tokio::sync::oneshot::Receiver<bool>,
    queued: bool,
}

impl DeliveryReceipt {
    /// Whether the message was queued for the subscriber (false: a QoS 0 message
    /// dropped from a full buffer, or the client stops).
    pub fn queued(&self) -> bool {
        self.queued
    }

    /// Wait until the subscriber is done with the message, where a connection would
    /// acknowledge a QoS 1 or 2 message to the broker: true once its handler returned
    /// (or its stream yielded it), false when it was not queued (a QoS 0 message
    /// dropped from a full buffer), was left unacknowledged (the client stopped
    /// first) or the subscription ended before taking it. The same for every QoS.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn consumed(self) -> bool {
        self.settled.await.unwrap_or(false)
    }
}

impl fmt::Debug for SubscribeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscribeRequest")
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

/// A granted subscription, as the chain returns it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Subscribed {
    /// The filters the broker granted.
    pub filters: Vec<String>,
    /// The broker's answer for each filter asked for, refusals included.
    pub grants: Vec<FilterGrant>,
    pub(crate) routes: Vec<u64>,
}

impl Subscribed {
    /// For a [`Backend`](super::Backend): the broker's answer for each filter (the
    /// granted filters are those not refused), and the backend's routes for the
    /// subscription, which [`Backend::release`](super::Backend::release) gets back.
    pub fn new(grants: Vec<FilterGrant>, routes: Vec<u64>) -> Self {
        Subscribed {
            filters: grants
                .iter()
                .filter(|g| !g.is_refused())
                .map(|g| g.filter.clone())
                .collect(),
            grants,
            routes,
        }
    }

    /// The routes the backend made for the subscription.
    pub fn routes(&self) -> &[u64] {
        &self.routes
    }
}

/// An unsubscribe on its way through the chain.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct UnsubscribeRequest {
    /// The topic filters to drop.
    pub filters: Vec<String>,
}

impl UnsubscribeRequest {
    /// Check the filters.
    ///
    /// # Errors
    ///
    /// [`UnsubscribeError::NoFilters`], or [`UnsubscribeError::InvalidFilter`] for
    /// the first invalid one.
    pub fn validate(&self) -> Result<(), UnsubscribeError> {
        if self.filters.is_empty() {
            return Err(UnsubscribeError::NoFilters);
        }
        for filter in &self.filters {
            validate_topic_filter(filter).map_err(|source| UnsubscribeError::InvalidFilter {
                filter: quote_input(filter),
                source,
            })?;
        }
        Ok(())
    }
}

/// Declares a middleware trait's type erasure: a private `Dyn*` trait with a blanket
/// impl boxing the future (rama-core's pattern), and a cloneable `Box*` handle.
macro_rules! erased_service {
    (
        $(#[$doc:meta])* $boxed:ident, $dyn:ident, $trait:ident :: $method:ident,
        ($($arg:ident : $ty:ty),*) -> $out:ty
    ) => {
        trait $dyn: Send + Sync + 'static {
            fn call_boxed(&self, $($arg: $ty),*) -> BoxFuture<'_, $out>;
        }

        impl<S: $trait> $dyn for S {
            fn call_boxed(&self, $($arg: $ty),*) -> BoxFuture<'_, $out> {
                Box::pin(self.$method($($arg),*))
            }
        }

        $(#[$doc])*
        #[derive(Clone)]
        pub struct $boxed(Arc<dyn $dyn>);

        impl $boxed {
            /// Erase `service`'s type.
            pub fn new(service: impl $trait) -> Self {
                $boxed(Arc::new(service))
            }
        }

        impl $trait for $boxed {
            fn $method(&self, $($arg: $ty),*) -> impl Future<Output = $out> + Send {
                self.0.call_boxed($($arg),*)
            }
        }

        impl fmt::Debug for $boxed {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(stringify!($boxed))
            }
        }
    };
}

/// Publishes: the client's last hop sends to the broker.
pub trait Publisher: Send + Sync + 'static {
    /// Publish, resolving on the broker's acknowledgement.
    fn publish(
        &self,
        request: PublishRequest,
    ) -> impl Future<Output = Result<(), PublishError>> + Send;
}

/// Subscribes: the client's last hop routes the filters and sends SUBSCRIBE.
pub trait Subscriber: Send + Sync + 'static {
    /// Subscribe, resolving on the broker's SUBACK.
    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> impl Future<Output = Result<Subscribed, SubscribeError>> + Send;
}

/// Unsubscribes: the client's last hop sends UNSUBSCRIBE.
pub trait Unsubscriber: Send + Sync + 'static {
    /// Unsubscribe, resolving on the broker's UNSUBACK.
    fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> impl Future<Output = Result<(), UnsubscribeError>> + Send;
}

/// Stops the client: the last hop is the graceful stop.
pub trait Stopper: Send + Sync + 'static {
    /// Stop gracefully.
    fn stop(&self) -> impl Future<Output = ()> + Send;
}

erased_service!(
    /// A type-erased [`Publisher`]: the `next` of a [`publish_fn`] middleware.
    BoxPublisher, DynPublisher, Publisher::publish, (request: PublishRequest) -> Result<(), PublishError>
);
erased_service!(
    /// A type-erased [`Subscriber`].
    BoxSubscriber, DynSubscriber, Subscriber::subscribe, (request: SubscribeRequest) -> Result<Subscribed, SubscribeError>
);
erased_service!(
    /// A type-erased [`Unsubscriber`].
    BoxUnsubscriber, DynUnsubscriber, Unsubscriber::unsubscribe, (request: UnsubscribeRequest) -> Result<(), UnsubscribeError>
);
erased_service!(
    /// A type-erased [`Stopper`].
    BoxStopper, DynStopper, Stopper::stop, () -> ()
);
erased_service!(
    /// A type-erased [`Handler`].
    BoxHandler, DynHandler, Handler::handle, (client: Client, message: Message) -> Result<(), BoxError>
);

/// Declares a closure middleware: `*_fn(|request, next| async move { .. })`.
macro_rules! fn_middleware {
    (
        $(#[$doc:meta])* $ctor:ident, $layer:ident, $service:ident, $trait:ident :: $method:ident, $boxed:ident,
        ($($arg:ident : $ty:ty),*) -> $out:ty
    ) => {
        $(#[$doc])*
        pub fn $ctor<F, Fut>(f: F) -> $layer<F>
        where
            F: Fn($($ty,)* $boxed) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = $out> + Send + 'static,
        {
            $layer { f: Arc::new(f) }
        }

        #[doc = concat!("The layer [`", stringify!($ctor), "`] returns.")]
        pub struct $layer<F> {
            f: Arc<F>,
        }

        impl<F> Clone for $layer<F> {
            fn clone(&self) -> Self {
                $layer { f: self.f.clone() }
            }
        }

        impl<F> fmt::Debug for $layer<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($layer)).field("f", &std::any::type_name::<F>()).finish()
            }
        }

        impl<S: $trait, F> Layer<S> for $layer<F> {
            type Service = $service<F>;

            fn layer(&self, next: S) -> $service<F> {
                $service {
                    f: self.f.clone(),
                    next: $boxed::new(next),
                }
            }
        }

        #[doc = concat!("The middleware [`", stringify!($ctor), "`] builds.")]
        pub struct $service<F> {
            f: Arc<F>,
            next: $boxed,
        }

        impl<F> fmt::Debug for $service<F> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($service)).field("f", &std::any::type_name::<F>()).finish()
            }
        }

        impl<F, Fut> $trait for $service<F>
        where
            F: Fn($($ty,)* $boxed) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = $out> + Send + 'static,
        {
            fn $method(&self, $($arg: $ty),*) -> impl Future<Output = $out> + Send {
                (self.f)($($arg,)* self.next.clone())
            }
        }
    };
}

fn_middleware!(
    /// A publish middleware from an async closure of the request and the next
    /// publisher, for application code (one boxed call per hop):
    /// `publish_fn(|req, next| async move { next.publish(req).await })`.
    publish_fn, PublishFnLayer, PublishFn, Publisher::publish, BoxPublisher,
    (request: PublishRequest) -> Result<(), PublishError>
);
fn_middleware!(
    /// A subscribe middleware from an async closure (see [`publish_fn`]).
    subscribe_fn, SubscribeFnLayer, SubscribeFn, Subscriber::subscribe, BoxSubscriber,
    (request: SubscribeRequest) -> Result<Subscribed, SubscribeError>
);
fn_middleware!(
    /// An unsubscribe middleware from an async closure (see [`publish_fn`]).
    unsubscribe_fn, UnsubscribeFnLayer, UnsubscribeFn, Unsubscriber::unsubscribe, BoxUnsubscriber,
    (request: UnsubscribeRequest) -> Result<(), UnsubscribeError>
);
fn_middleware!(
    /// A handler middleware from an async closure of the client, the message and the
    /// next handler (see [`publish_fn`]).
    handler_fn, HandlerFnLayer, HandlerFn, Handler::handle, BoxHandler,
    (client: Client, message: Message) -> Result<(), BoxError>
);

/// A layer applied at build time, erased: `Fn(inner) -> chain`.
pub(crate) type ErasedLayer<B> = Arc<dyn Fn(B) -> B + Send + Sync>;

/// Apply `layers` (first = outermost) around `inner`.
pub(crate) fn apply<B>(layers: &[ErasedLayer<B>], inner: B) -> B {
    layers.iter().rev().fold(inner, |next, layer| layer(next))
}

/// The middleware set on a builder.
#[derive(Clone, Default)]
pub(crate) struct Layers {
    pub(crate) publish: Vec<ErasedLayer<BoxPublisher>>,
    pub(crate) subscribe: Vec<ErasedLayer<BoxSubscriber>>,
    pub(crate) unsubscribe: Vec<ErasedLayer<BoxUnsubscriber>>,
    pub(crate) stop: Vec<ErasedLayer<BoxStopper>>,
    pub(crate) handler: Vec<ErasedLayer<BoxHandler>>,
}

impl fmt::Debug for Layers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layers")
            .field("publish", &self.publish.len())
            .field("subscribe", &self.subscribe.len())
            .field("unsubscribe", &self.unsubscribe.len())
            .field("stop", &self.stop.len())
            .field("handler", &self.handler.len())
            .finish()
    }
}
