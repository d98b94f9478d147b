//! Subscribing: [`SubscribeBuilder`], the [`Subscription`] stream, handler tasks and
//! unsubscribing.

use std::future::{Future, IntoFuture};
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};

use futures_core::Stream;
use futures_util::future::join_all;
use rumqttc::Request;
use tokio::sync::oneshot;
use tokio::time::timeout;

use super::dispatch::run_handler;
use super::handler::Handler;
use super::middleware::{
    BoxHandler, SubscribeRequest, Subscribed, Subscriber, UnsubscribeRequest, Unsubscriber, apply,
};
use super::outbound::PendingRequest;
use super::publish::wire_qos;
use super::router::{Source, queue};
use super::{Client, Link, Shared};
use crate::error::{SubscribeError, UnsubscribeError};
use crate::message::Message;
use crate::qos::QoS;

/// The broker's answer (SUBACK return code) for one filter of a SUBSCRIBE.
///
/// A broker may grant a lower QoS than asked for (Mosquitto's `max_qos`, for
/// example): messages on the filter then arrive at most at the granted QoS. It may
/// refuse a filter (return code 0x80, e.g. denied by an ACL); when it refuses some
/// filters of a subscription and grants others, the subscription is made with the
/// granted ones, and when it refuses all, subscribing fails with
/// [`SubscribeError::Rejected`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FilterGrant {
    /// The topic filter.
    pub filter: String,
    /// The QoS asked for.
    pub requested: QoS,
    /// The QoS granted, or `None` when the broker refused the filter.
    pub granted: Option<QoS>,
}

impl FilterGrant {
    /// The answer for `filter`, asked for at `requested`: granted at `granted`, or
    /// refused (`None`). For backends that are not a connection.
    pub fn new(filter: impl Into<String>, requested: QoS, granted: Option<QoS>) -> Self {
        FilterGrant {
            filter: filter.into(),
            requested,
            granted,
        }
    }

    /// True when the broker refused the filter.
    pub fn is_refused(&self) -> bool {
        self.granted.is_none()
    }
}

/// A subscription being set up. Await it for a [`Subscription`] stream, or call
/// [`handler`](Self::handler) for the callback style.
#[must_use = "a subscription does nothing until awaited"]
#[derive(Debug)]
pub struct SubscribeBuilder<'a> {
    client: &'a Client,
    filters: Vec<(String, Option<QoS>)>,
    qos: QoS,
    buffer: Option<usize>,
    concurrency: NonZeroUsize,
}

impl<'a> SubscribeBuilder<'a> {
    /// The QoS for filters given without one (default [`QoS::AtLeastOnce`]).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// How many QoS 0 messages may wait before new ones are dropped (default: the
    /// client's `subscription_buffer`).
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = Some(n.max(1));
        self
    }

    /// For [`handler`](Self::handler): how many messages it may handle at once
    /// (default 1: one at a time, each finished before the next starts). With more,
    /// messages still start in arrival order but may finish in any order; each is
    /// acknowledged once its handler returned, and the connection sends the
    /// acknowledgements in arrival order. Use it for handlers that wait on I/O, and
    /// on a pool or cluster for shared subscriptions whose work should spread the
    /// way the connections do. 0 counts as 1.
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN);
        self
    }

    fn label(&self) -> String {
        let filters: Vec<&str> = self.filters.iter().map(|(f, _)| f.as_str()).collect();
        filters.join(",")
    }

    /// Run `handler` for every message, on a task of its own: one at a time unless
    /// [`concurrency`](Self::concurrency) says more. Resolves once the broker granted
    /// the subscription (SUBACK).
    ///
    /// # Errors
    ///
    /// Invalid or no filters (nothing sent), every filter refused by the broker
    /// (SUBACK 0x80; when only some are refused, the subscription is made with the
    /// others: see [`SubscriptionHandle::grants`]), no SUBACK within the write
    /// timeout, or the client is stopped. On any error no filter of this call stays
    /// subscribed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling before the SUBACK removes the subscription again (and
    /// unsubscribes at the broker if the SUBSCRIBE went out).
    pub async fn handler<H: Handler>(
        self,
        handler: H,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let (subscribed, source) = self.register().await?;
        let client = self.client.handle();
        let layers = &client.settings().layers.handler;
        if layers.is_empty() {
            tokio::spawn(run_handler(
                client.clone(),
                handler,
                source,
                self.concurrency,
            ));
        } else {
            let chain = apply(layers, BoxHandler::new(handler));
            tokio::spawn(run_handler(client.clone(), chain, source, self.concurrency));
        }
        Ok(SubscriptionHandle {
            client,
            routes: subscribed.routes,
            filters: subscribed.filters,
            grants: subscribed.grants,
        })
    }

    /// Route the filters to a new queue and subscribe through the chain.
    async fn register(&self) -> Result<(Subscribed, Source), SubscribeError> {
        let client = self.client;
        let capacity = self.buffer.unwrap_or(client.settings().subscription_buffer);
        let (sink, source) = queue(capacity, &self.label(), client.consumers().clone());
        let request = SubscribeRequest {
            filters: self
                .filters
                .iter()
                .map(|(f, q)| (f.clone(), q.unwrap_or(self.qos)))
                .collect(),
            sink,
        };
        let subscribed = match client.link() {
            Link::Connection(shared) => match &shared.chains().subscriber {
                Some(chain) => chain.subscribe(request).await?,
                None => subscribe(shared, request).await?,
            },
            Link::Backend(remote) => remote.subscribe(request).await?,
        };
        Ok((subscribed, source))
    }
}

impl<'a> IntoFuture for SubscribeBuilder<'a> {
    type Output = Result<Subscription, SubscribeError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// # Cancel safety
    ///
    /// Cancel safe: cancelling before the SUBACK removes the subscription again (and
    /// unsubscribes at the broker if the SUBSCRIBE went out).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let (subscribed, source) = self.register().await?;
            Ok(Subscription {
                client: self.client.handle(),
                source,
                routes: subscribed.routes,
                filters: subscribed.filters,
                grants: subscribed.grants,
                unsubscribed: false,
            })
        })
    }
}

impl Client {
    /// Subscribe to one topic filter (`+` and `#` wildcards, `$share/<group>/...`).
    /// Await the builder for a [`Subscription`] stream, or call
    /// [`SubscribeBuilder::handler`].
    ///
    /// # Errors
    ///
    /// See [`SubscribeBuilder::handler`].
    ///
    /// # Cancel safety
    ///
    /// See [`SubscribeBuilder::handler`].
    pub fn subscribe(&self, filter: impl Into<String>) -> SubscribeBuilder<'_> {
        SubscribeBuilder {
            client: self,
            filters: vec![(filter.into(), None)],
            qos: QoS::default(),
            buffer: None,
            concurrency: NonZeroUsize::MIN,
        }
    }

    /// Subscribe to several filters in one SUBSCRIBE, each with its QoS (the Go
    /// `SubscribeMultiple`). One stream or handler receives them all, once per message
    /// even where filters overlap.
    ///
    /// # Errors
    ///
    /// See [`SubscribeBuilder::handler`].
    ///
    /// # Cancel safety
    ///
    /// See [`SubscribeBuilder::handler`].
    pub fn subscribe_many<I, S>(&self, filters: I) -> SubscribeBuilder<'_>
    where
        I: IntoIterator<Item = (S, QoS)>,
        S: Into<String>,
    {
        SubscribeBuilder {
            client: self,
            filters: filters
                .into_iter()
                .map(|(f, q)| (f.into(), Some(q)))
                .collect(),
            qos: QoS::default(),
            buffer: None,
            concurrency: NonZeroUsize::MIN,
        }
    }
}

impl Client {
    /// For a [`Backend`](super::Backend) with several connections: subscribe the
    /// queue of a subscription made on the client over the backend (the request
    /// the backend got, or a clone with some of its filters), so that this client's
    /// messages on those filters go there. The returned handle does not end the
    /// subscription when dropped; [`SubscriptionHandle::detach`] or
    /// [`SubscriptionHandle::unsubscribe`] do.
    ///
    /// # Errors
    ///
    /// As [`SubscribeBuilder::handler`].
    ///
    /// # Cancel safety
    ///
    /// As [`SubscribeBuilder::handler`].
    pub async fn subscribe_request(
        &self,
        request: SubscribeRequest,
    ) -> Result<SubscriptionHandle, SubscribeError> {
        let subscribed = match self.link() {
            Link::Connection(shared) => match &shared.chains().subscriber {
                Some(chain) => chain.subscribe(request).await?,
                None => subscribe(shared, request).await?,
            },
            Link::Backend(remote) => remote.subscribe(request).await?,
        };
        Ok(SubscriptionHandle {
            client: self.handle(),
            routes: subscribed.routes,
            filters: subscribed.filters,
            grants: subscribed.grants,
        })
    }
}

/// The last hop of the subscribe chain: routes the filters and sends SUBSCRIBE.
#[derive(Debug)]
pub(crate) struct ClientSubscriber(pub(crate) Weak<Shared>);

impl Subscriber for ClientSubscriber {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        match self.0.upgrade() {
            Some(shared) => subscribe(&shared, request).await,
            None => Err(SubscribeError::Closed),
        }
    }
}

/// The last hop of the unsubscribe chain: drops the routes and sends UNSUBSCRIBE.
#[derive(Debug)]
pub(crate) struct ClientUnsubscriber(pub(crate) Weak<Shared>);

impl Unsubscriber for ClientUnsubscriber {
    async fn unsubscribe(&self, request: UnsubscribeRequest) -> Result<(), UnsubscribeError> {
        match self.0.upgrade() {
            Some(shared) => unsubscribe(&shared, request.filters).await,
            None => Err(UnsubscribeError::Closed),
        }
    }
}

async fn subscribe(
    shared: &Arc<Shared>,
    request: SubscribeRequest,
) -> Result<Subscribed, SubscribeError> {
    let parsed = request.parse_filters()?;
    let sink = request.sink;
    if shared.is_closing() {
        return Err(SubscribeError::Closed);
    }
    // Route first: the broker sends retained messages right after its SUBACK. The
    // guard removes the routes again unless the broker granted them, also when this
    // future is cancelled. Held messages these filters match move to the new queue
    // now, ahead of anything that arrives later.
    let (mut guard, packet) = {
        let mut router = shared.router_write();
        let routes: Vec<u64> = parsed
            .iter()
            .map(|(f, q)| router.add(f.clone(), *q, sink.clone()))
            .collect();
        router.claim_held(&routes);
        // The broker keeps one subscription per filter, replaced by each SUBSCRIBE:
        // ask for the highest QoS any local subscription on the filter wants.
        let packet = rumqttc::Subscribe::new_many(parsed.iter().map(|(f, q)| {
            let qos = router.highest_qos(f.as_str()).unwrap_or(*q);
            rumqttc::SubscribeFilter::new(f.as_str().to_owned(), wire_qos(qos))
        }));
        (
            RouteGuard {
                shared: shared.clone(),
                routes,
                armed: true,
            },
            packet,
        )
    };
    let (tx, rx) = oneshot::channel();
    {
        let mut outbound = shared.outbound();
        outbound.push_subscribe(PendingRequest {
            request: packet.clone(),
            waiter: Some(tx),
        });
        if shared.requests.push(Request::Subscribe(packet)).is_err() {
            outbound.pop_last_subscribe();
            return Err(SubscribeError::Closed);
        }
    }
    shared.requests.wake();
    let write_timeout = shared.opts.builder.write_timeout;
    let codes = match timeout(write_timeout, rx).await {
        Ok(Ok(codes)) => codes,
        Ok(Err(_)) => return Err(SubscribeError::Closed),
        Err(_) => return Err(SubscribeError::Timeout(write_timeout)),
    };
    let grants: Vec<FilterGrant> = parsed
        .iter()
        .zip(codes.iter().copied().chain(std::iter::repeat(None)))
        .map(|((filter, requested), code)| FilterGrant {
            filter: filter.as_str().to_owned(),
            requested: *requested,
            granted: code.and_then(|c| QoS::try_from(c).ok()),
        })
        .collect();
    if grants.iter().all(|g| g.granted.is_none()) {
        return Err(SubscribeError::Rejected(
            grants.into_iter().map(|g| g.filter).collect(),
        ));
    }
    for grant in &grants {
        match grant.granted {
            None => {
                tracing::warn!(
                    client_id = %shared.opts.builder.client_id,
                    broker = %shared.opts.broker(),
                    filter = %grant.filter,
                    "courier: the broker refused this filter"
                )
            }
            Some(qos) if qos < grant.requested => tracing::warn!(
                client_id = %shared.opts.builder.client_id,
                broker = %shared.opts.broker(),
                filter = %grant.filter,
                requested = %grant.requested,
                granted = %qos,
                "courier: the broker granted a lower QoS than asked for"
            ),
            Some(_) => {}
        }
    }
    // Routes of refused filters go; the broker sends nothing for them.
    let refused: Vec<u64> = guard
        .routes
        .iter()
        .zip(&grants)
        .filter(|(_, g)| g.granted.is_none())
        .map(|(route, _)| *route)
        .collect();
    if !refused.is_empty() {
        shared.router_write().remove(&refused);
        guard.routes.retain(|route| !refused.contains(route));
    }
    Ok(Subscribed {
        routes: guard.keep(),
        filters: grants
            .iter()
            .filter(|g| g.granted.is_some())
            .map(|g| g.filter.clone())
            .collect(),
        grants,
    })
}

/// Routes of a subscription not yet granted: dropped, it removes them and tells the
/// broker to forget filters nothing else uses.
struct RouteGuard {
    shared: Arc<Shared>,
    routes: Vec<u64>,
    armed: bool,
}

impl RouteGuard {
    fn keep(mut self) -> Vec<u64> {
        self.armed = false;
        std::mem::take(&mut self.routes)
    }
}

impl Drop for RouteGuard {
    fn drop(&mut self) {
        if self.armed {
            let unused = self.shared.router_write().remove(&self.routes);
            unsubscribe_unused(&self.shared, unused);
        }
    }
}

/// Queue one UNSUBSCRIBE per filter (rumqttc sends one filter per packet).
fn queue_unsubscribes(
    shared: &Shared,
    filters: Vec<String>,
    wait: bool,
) -> Result<Vec<oneshot::Receiver<()>>, UnsubscribeError> {
    let mut outbound = shared.outbound();
    let mut receivers = Vec::new();
    for filter in filters {
        let (tx, rx) = oneshot::channel();
        outbound.push_unsubscribe(PendingRequest {
            request: rumqttc::Unsubscribe::new(filter.clone()),
            waiter: wait.then_some(tx),
        });
        let queued = shared
            .requests
            .push(Request::Unsubscribe(rumqttc::Unsubscribe::new(filter)));
        if queued.is_err() {
            outbound.pop_last_unsubscribe();
            return Err(UnsubscribeError::Closed);
        }
        receivers.push(rx);
    }
    drop(outbound);
    shared.requests.wake();
    Ok(receivers)
}

/// Tell the broker to drop filters no local subscription uses, without waiting.
fn unsubscribe_unused(shared: &Shared, filters: Vec<String>) {
    if filters.is_empty() || shared.is_closing() {
        return;
    }
    let _ = queue_unsubscribes(shared, filters, false);
}

/// Unsubscribe through the chain.
pub(crate) async fn unsubscribe_via_chain(
    link: &Link,
    request: UnsubscribeRequest,
) -> Result<(), UnsubscribeError> {
    match link {
        Link::Connection(shared) => match &shared.chains().unsubscriber {
            Some(chain) => chain.unsubscribe(request).await,
            None => unsubscribe(shared, request.filters).await,
        },
        Link::Backend(remote) => remote.unsubscribe(request).await,
    }
}

/// Drop a subscription's routes; the filters nothing else uses are returned.
fn release(link: &Link, routes: &[u64]) -> Vec<String> {
    match link {
        Link::Connection(shared) => shared.router_write().remove(routes),
        Link::Backend(remote) => remote.backend.release(routes),
    }
}

/// Drop a subscription's routes and tell the broker, without waiting, about the
/// filters left unused.
fn forget(link: &Link, routes: &[u64]) {
    match link {
        Link::Connection(shared) => {
            let unused = shared.router_write().remove(routes);
            unsubscribe_unused(shared, unused);
        }
        Link::Backend(remote) => remote.backend.forget(routes),
    }
}

/// End a subscription: drop its routes, then unsubscribe (waiting for the broker)
/// from the filters nothing else uses.
async fn end(link: &Link, routes: &[u64]) -> Result<(), UnsubscribeError> {
    let unused = release(link, routes);
    if unused.is_empty() {
        return Ok(());
    }
    unsubscribe_via_chain(link, UnsubscribeRequest { filters: unused }).await
}

async fn unsubscribe(shared: &Arc<Shared>, filters: Vec<String>) -> Result<(), UnsubscribeError> {
    let request = UnsubscribeRequest { filters };
    request.validate()?;
    let filters = request.filters;
    if shared.is_closing() {
        return Err(UnsubscribeError::Closed);
    }
    shared.router_write().remove_filters(&filters);
    let receivers = queue_unsubscribes(shared, filters, true)?;
    let write_timeout = shared.opts.builder.write_timeout;
    match timeout(write_timeout, join_all(receivers)).await {
        Ok(results) if results.iter().all(Result::is_ok) => Ok(()),
        Ok(_) => Err(UnsubscribeError::Closed),
        Err(_) => Err(UnsubscribeError::Timeout(write_timeout)),
    }
}

/// A stream of the messages matching a subscription. Each QoS 1/2 message is
/// acknowledged to the broker when the stream yields it, so an unread stream holds
/// back the broker (nothing is lost); QoS 0 messages beyond the buffer are dropped.
///
/// Dropping it unsubscribes (the broker is told once no other subscription uses the
/// filter).
#[derive(Debug)]
pub struct Subscription {
    client: Client,
    source: Source,
    routes: Vec<u64>,
    filters: Vec<String>,
    grants: Vec<FilterGrant>,
    unsubscribed: bool,
}

impl Subscription {
    /// The next message; `None` once the client stops (from the moment
    /// [`Client::stop`] is called: messages not yielded by then are not acknowledged,
    /// and a persistent session's broker delivers them again).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken only when this resolves.
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// The next message, acknowledged (in order) as it is yielded.
    fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.source.poll_recv(cx).map(|delivery| {
            delivery.map(|delivery| {
                if let Some(ack) = delivery.ack {
                    ack.consume();
                }
                // The message is the stream's now: its budget is given back.
                drop(delivery.charge);
                delivery.message
            })
        })
    }

    /// The filters the broker granted (refused ones are left out; see
    /// [`grants`](Self::grants)).
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// The broker's answer for each filter asked for, in the order asked: the QoS it
    /// granted, or a refusal.
    pub fn grants(&self) -> &[FilterGrant] {
        &self.grants
    }

    /// Unsubscribe and wait for the broker's UNSUBACK (when no other subscription
    /// uses the filters; otherwise only this stream ends).
    ///
    /// # Errors
    ///
    /// No UNSUBACK within the write timeout, or the client is stopped.
    ///
    /// # Cancel safety
    ///
    /// The stream ends at once; cancelling only stops waiting for the broker.
    pub async fn unsubscribe(mut self) -> Result<(), UnsubscribeError> {
        self.unsubscribed = true;
        end(self.client.link(), &self.routes).await
    }
}

impl Stream for Subscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.poll_message(cx)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.unsubscribed {
            forget(self.client.link(), &self.routes);
        }
    }
}

/// A handler subscription. The handler keeps running when this is dropped; call
/// [`unsubscribe`](Self::unsubscribe) (or [`Client::unsubscribe`]) to end it.
#[derive(Debug)]
pub struct SubscriptionHandle {
    client: Client,
    routes: Vec<u64>,
    filters: Vec<String>,
    grants: Vec<FilterGrant>,
}

impl SubscriptionHandle {
    /// The filters the broker granted (refused ones are left out; see
    /// [`grants`](Self::grants)).
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// The broker's answer for each filter asked for, in the order asked: the QoS it
    /// granted, or a refusal.
    pub fn grants(&self) -> &[FilterGrant] {
        &self.grants
    }

    /// Stop the handler (after the message it is handling) and unsubscribe at the
    /// broker when no other subscription uses the filters.
    ///
    /// # Errors
    ///
    /// No UNSUBACK within the write timeout, or the client is stopped.
    ///
    /// # Cancel safety
    ///
    /// The handler stops at once; cancelling only stops waiting for the broker.
    pub async fn unsubscribe(self) -> Result<(), UnsubscribeError> {
        end(self.client.link(), &self.routes).await
    }

    /// End the subscription here without telling the broker: no message goes to
    /// it any more. Returns the filters no subscription of the client uses any
    /// more, for the caller to unsubscribe (a backend that unsubscribes them on all
    /// its connections at once).
    pub fn detach(self) -> Vec<String> {
        release(self.client.link(), &self.routes)
    }

    /// End the subscription here, and tell the broker, without waiting, to stop
    /// sending the filters no subscription of the client uses any more (what
    /// dropping a [`Subscription`] stream does). A subscription made on those
    /// filters afterwards keeps them.
    pub fn forget(self) {
        forget(self.client.link(), &self.routes);
    }
}
