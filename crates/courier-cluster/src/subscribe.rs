//! Subscribing through a cluster: shared filters on every connection, others on the
//! primary; one merged [`ClusterSubscription`] stream or one handler for all.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use courier_core::topic::validate_topic_filter;
use courier_core::{
    BoxError, Client, ConnectionState, Handler, Message, QoS, SubscribeError, Subscription,
    SubscriptionHandle, UnsubscribeError,
};
use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::future::{BoxFuture, join_all};
use futures_util::stream::SelectAll;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout_at};

use crate::cluster::{ClusterClient, Inner, deadline_after};
use crate::conn::{Conn, ConnMeta};

/// How long a connection's subscription sync waits after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Filters with their QoS, as `subscribe_many` takes them.
type Filters = Vec<(String, QoS)>;

/// One filter of a cluster subscription.
#[derive(Debug, Clone)]
pub(crate) struct SubFilter {
    pub(crate) filter: String,
    pub(crate) qos: QoS,
    /// Made on every connection (else on the primary only).
    pub(crate) shared: bool,
}

/// A cluster subscription: what it wants, and where it is made.
pub(crate) struct SubEntry {
    pub(crate) filters: Vec<SubFilter>,
    pub(crate) buffer: Option<usize>,
    pub(crate) kind: SubKind,
    /// Per connection id.
    pub(crate) placed: HashMap<u64, Placement>,
}

/// Where a subscription's messages go.
pub(crate) enum SubKind {
    /// Per-connection `Subscription`s, merged by a [`ClusterSubscription`].
    Stream(mpsc::UnboundedSender<Subscription>),
    /// One handler on every connection.
    Handler(Arc<dyn Placer>),
}

/// What is subscribed on one connection.
#[derive(Debug, Default)]
pub(crate) struct Placement {
    pub(crate) filters: BTreeSet<String>,
    /// A subscribe is under way: nobody else touches this placement.
    pub(crate) pending: bool,
    pub(crate) handles: Vec<SubscriptionHandle>,
}

impl SubEntry {
    /// The filters a connection should have.
    fn wanted(&self, primary: bool) -> Vec<(String, QoS)> {
        self.filters
            .iter()
            .filter(|f| f.shared || primary)
            .map(|f| (f.filter.clone(), f.qos))
            .collect()
    }

    fn placer(&self) -> Option<Arc<dyn Placer>> {
        match &self.kind {
            SubKind::Stream(_) => None,
            SubKind::Handler(p) => Some(p.clone()),
        }
    }

    fn take_handles(&mut self) -> Vec<SubscriptionHandle> {
        self.placed
            .values_mut()
            .flat_map(|p| std::mem::take(&mut p.handles))
            .collect()
    }
}

/// Subscribes a handler on one connection.
pub(crate) trait Placer: Send + Sync {
    fn place(
        &self,
        client: Client,
        filters: Vec<(String, QoS)>,
        buffer: Option<usize>,
    ) -> BoxFuture<'static, Result<SubscriptionHandle, SubscribeError>>;
}

/// One handler shared by several subscriptions (one per connection): clones share
/// the same `H`. The cluster wraps handlers in it; use it directly to give one
/// handler to several clients.
pub struct SharedHandler<H>(Arc<H>);

impl<H> SharedHandler<H> {
    /// Share `handler`.
    pub fn new(handler: H) -> Self {
        SharedHandler(Arc::new(handler))
    }

    /// Share an `Arc`'d handler.
    pub fn from_arc(handler: Arc<H>) -> Self {
        SharedHandler(handler)
    }
}

impl<H> Clone for SharedHandler<H> {
    fn clone(&self) -> Self {
        SharedHandler(self.0.clone())
    }
}

impl<H> fmt::Debug for SharedHandler<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("SharedHandler")
            .field(&std::any::type_name::<H>())
            .finish()
    }
}

impl<H: Handler> Handler for SharedHandler<H> {
    fn handle(
        &self,
        client: Client,
        message: Message,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        self.0.handle(client, message)
    }
}

impl<H: Handler> Placer for SharedHandler<H> {
    fn place(
        &self,
        client: Client,
        filters: Vec<(String, QoS)>,
        buffer: Option<usize>,
    ) -> BoxFuture<'static, Result<SubscriptionHandle, SubscribeError>> {
        let handler = self.clone();
        Box::pin(async move {
            let mut builder = client.subscribe_many(filters);
            if let Some(n) = buffer {
                builder = builder.buffer(n);
            }
            builder.handler(handler).await
        })
    }
}

/// A subscription made on one connection.
enum Placed {
    Stream(Subscription),
    Handle(SubscriptionHandle),
}

impl Placed {
    /// Its cluster subscription is gone: unsubscribe it.
    fn undo(self) {
        match self {
            // Dropping it unsubscribes.
            Placed::Stream(sub) => drop(sub),
            Placed::Handle(handle) => {
                // Outside a runtime (shutting down) the client is going away anyway.
                if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                    runtime.spawn(async move {
                        let _ = handle.unsubscribe().await;
                    });
                }
            }
        }
    }
}

fn quote(input: &str) -> String {
    input.chars().take(200).collect()
}

/// Check filters for an unsubscribe.
pub(crate) fn validate_filters(filters: &[String]) -> Result<(), UnsubscribeError> {
    if filters.is_empty() {
        return Err(UnsubscribeError::NoFilters);
    }
    for filter in filters {
        validate_topic_filter(filter).map_err(|source| UnsubscribeError::InvalidFilter {
            filter: quote(filter),
            source,
        })?;
    }
    Ok(())
}

/// Errors that another attempt would not fix.
fn is_final(error: &SubscribeError) -> bool {
    matches!(
        error,
        SubscribeError::Rejected(_)
            | SubscribeError::InvalidFilter { .. }
            | SubscribeError::NoFilters
            | SubscribeError::Middleware(_)
    )
}

/// What one sync pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    Idle,
    Worked,
    Failed,
}

impl Inner {
    /// Register a subscription and make it on the connections that are up.
    async fn subscribe_entry(
        self: &Arc<Self>,
        filters: Vec<(String, QoS)>,
        buffer: Option<usize>,
        kind: SubKind,
    ) -> Result<u64, SubscribeError> {
        if filters.is_empty() {
            return Err(SubscribeError::NoFilters);
        }
        for (filter, _) in &filters {
            validate_topic_filter(filter).map_err(|source| SubscribeError::InvalidFilter {
                filter: quote(filter),
                source,
            })?;
        }
        let filters: Vec<SubFilter> = filters
            .into_iter()
            .map(|(filter, qos)| SubFilter {
                shared: self.is_shared(&filter),
                filter,
                qos,
            })
            .collect();
        let placer = match &kind {
            SubKind::Stream(_) => None,
            SubKind::Handler(p) => Some(p.clone()),
        };
        let mut entry = Some(SubEntry {
            filters,
            buffer,
            kind,
            placed: HashMap::new(),
        });
        let timeout = self.write_timeout();
        let deadline = deadline_after(Instant::now(), timeout);
        let mut changes = self.signals.changes.subscribe();
        let (id, targets) = loop {
            {
                let mut st = self.lock();
                if st.stopped {
                    return Err(SubscribeError::Closed);
                }
                let primary = st.primary;
                let targets: Vec<(Arc<Conn>, Filters)> = match &entry {
                    Some(e) => st
                        .live
                        .iter()
                        .filter(|c| c.meta.is_up())
                        .map(|c| (c.clone(), e.wanted(primary == Some(c.meta.id))))
                        .filter(|(_, wanted)| !wanted.is_empty())
                        .collect(),
                    None => Vec::new(),
                };
                if !targets.is_empty() {
                    if let Some(mut e) = entry.take() {
                        for (conn, _) in &targets {
                            e.placed.insert(
                                conn.meta.id,
                                Placement {
                                    pending: true,
                                    ..Placement::default()
                                },
                            );
                        }
                        let id = st.next_sub;
                        st.next_sub += 1;
                        st.subs.insert(id, e);
                        break (id, targets);
                    }
                }
            }
            match timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(SubscribeError::Closed),
                Err(_) => return Err(SubscribeError::Timeout(timeout)),
            }
        };
        // Removes the subscription again on error, and when this future is dropped.
        let rollback = Rollback {
            inner: self.clone(),
            id: Some(id),
        };
        let results =
            join_all(targets.iter().map(|(conn, wanted)| {
                self.place(conn, id, wanted.clone(), buffer, placer.clone())
            }))
            .await;
        let mut error: Option<SubscribeError> = None;
        let mut any_ok = false;
        for result in results {
            match result {
                Ok(()) => any_ok = true,
                Err(e) => {
                    if error
                        .as_ref()
                        .is_none_or(|kept| is_final(&e) && !is_final(kept))
                    {
                        error = Some(e);
                    }
                }
            }
        }
        let fatal = error.as_ref().is_some_and(is_final);
        if fatal || !any_ok {
            drop(rollback);
            return Err(error.unwrap_or(SubscribeError::Timeout(timeout)));
        }
        rollback.disarm();
        // Connections where it failed (or that changed meanwhile) catch up.
        for (conn, _) in &targets {
            conn.meta.resync.notify_one();
        }
        Ok(id)
    }

    /// Subscribe `filters` of subscription `id` on `conn` and record the result.
    async fn place(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        id: u64,
        filters: Vec<(String, QoS)>,
        buffer: Option<usize>,
        placer: Option<Arc<dyn Placer>>,
    ) -> Result<(), SubscribeError> {
        let names: Vec<String> = filters.iter().map(|(f, _)| f.clone()).collect();
        let placed = match placer {
            None => {
                let mut builder = conn.client.subscribe_many(filters);
                if let Some(n) = buffer {
                    builder = builder.buffer(n);
                }
                builder.await.map(Placed::Stream)
            }
            Some(placer) => placer
                .place(conn.client.clone(), filters, buffer)
                .await
                .map(Placed::Handle),
        };
        let mut st = self.lock();
        let live = !st.stopped && !conn.meta.is_removed();
        let entry = st.subs.get_mut(&id);
        match (placed, entry) {
            (Ok(placed), Some(entry)) if live => {
                let placement = entry.placed.entry(conn.meta.id).or_default();
                placement.pending = false;
                placement.filters.extend(names);
                match placed {
                    Placed::Stream(sub) => {
                        if let SubKind::Stream(tx) = &entry.kind {
                            // A receiver that is gone drops (and so unsubscribes) it.
                            let _ = tx.send(sub);
                        }
                    }
                    Placed::Handle(handle) => placement.handles.push(handle),
                }
                Ok(())
            }
            (Ok(placed), _) => {
                drop(st);
                placed.undo();
                Ok(())
            }
            (Err(e), Some(entry)) => {
                if let Some(placement) = entry.placed.get_mut(&conn.meta.id) {
                    placement.pending = false;
                }
                Err(e)
            }
            (Err(e), None) => Err(e),
        }
    }

    /// Bring one connection's subscriptions in line: make what is missing, drop the
    /// single-connection filters it no longer carries.
    async fn sync_conn(self: &Arc<Self>, meta: &ConnMeta) -> Synced {
        let (conn, work, extra) = {
            let mut st = self.lock();
            if st.stopped {
                return Synced::Idle;
            }
            let Some(conn) = st.live_conn(meta.id).cloned() else {
                return Synced::Idle;
            };
            let primary = st.primary == Some(meta.id);
            let mut work = Vec::new();
            let mut extra = BTreeSet::new();
            for (id, entry) in &mut st.subs {
                let wanted = entry.wanted(primary);
                let placer = entry.placer();
                let buffer = entry.buffer;
                let placement = entry.placed.entry(meta.id).or_default();
                if placement.pending {
                    continue;
                }
                let stale: Vec<String> = placement
                    .filters
                    .iter()
                    .filter(|f| !wanted.iter().any(|(w, _)| w == *f))
                    .cloned()
                    .collect();
                for filter in stale {
                    placement.filters.remove(&filter);
                    extra.insert(filter);
                }
                let missing: Vec<(String, QoS)> = wanted
                    .into_iter()
                    .filter(|(f, _)| !placement.filters.contains(f))
                    .collect();
                if !missing.is_empty() {
                    placement.pending = true;
                    work.push((*id, missing, buffer, placer));
                }
            }
            (conn, work, extra)
        };
        let mut outcome = Synced::Idle;
        if !extra.is_empty() {
            outcome = Synced::Worked;
            let conn = conn.clone();
            let filters: Vec<String> = extra.into_iter().collect();
            tracing::debug!(client_id = %meta.client_id, ?filters, "courier-cluster: moving subscriptions off this connection");
            tokio::spawn(async move {
                tokio::select! {
                    _ = conn.client.unsubscribe(filters) => {}
                    () = conn.meta.retired.cancelled() => {}
                }
            });
        }
        for (id, filters, buffer, placer) in work {
            let result = tokio::select! {
                result = self.place(&conn, id, filters, buffer, placer) => result,
                () = meta.retired.cancelled() => return Synced::Idle,
            };
            match result {
                Ok(()) if outcome != Synced::Failed => outcome = Synced::Worked,
                Ok(()) => {}
                Err(error) => {
                    tracing::warn!(client_id = %meta.client_id, %error, "courier-cluster: cannot subscribe on this connection; retrying");
                    outcome = Synced::Failed;
                }
            }
        }
        outcome
    }

    /// Forget a subscription: no connection makes it again.
    fn remove_entry(&self, id: u64) -> Option<SubEntry> {
        self.lock().subs.remove(&id)
    }
}

/// Removes a subscription that did not complete.
struct Rollback {
    inner: Arc<Inner>,
    id: Option<u64>,
}

impl Rollback {
    fn disarm(mut self) {
        self.id = None;
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if let Some(mut entry) = self.id.take().and_then(|id| self.inner.remove_entry(id)) {
            for handle in entry.take_handles() {
                Placed::Handle(handle).undo();
            }
        }
    }
}

/// Per connection: once connected, make the subscriptions it should have; again
/// whenever the set or the primary changes, and after failures.
pub(crate) async fn sync_task(
    weak: Weak<Inner>,
    meta: Arc<ConnMeta>,
    mut state: watch::Receiver<ConnectionState>,
) {
    loop {
        tokio::select! {
            () = meta.retired.cancelled() => return,
            connected = state.wait_for(|s| s.is_connected()) => {
                if connected.is_err() {
                    return;
                }
            }
        }
        let outcome = {
            let Some(inner) = weak.upgrade() else { return };
            inner.sync_conn(&meta).await
        };
        let pause = match outcome {
            Synced::Worked => continue,
            Synced::Idle => None,
            Synced::Failed => Some(RETRY_PAUSE),
        };
        tokio::select! {
            () = meta.retired.cancelled() => return,
            () = meta.resync.notified() => {}
            () = sleep(pause) => {}
        }
    }
}

async fn sleep(pause: Option<Duration>) {
    match pause {
        Some(pause) => tokio::time::sleep(pause).await,
        None => std::future::pending().await,
    }
}

/// A subscription being set up on a cluster. Await it for a [`ClusterSubscription`]
/// stream, or call [`handler`](Self::handler).
#[must_use = "a subscription does nothing until awaited"]
#[derive(Debug)]
pub struct ClusterSubscribe<'a> {
    cluster: &'a ClusterClient,
    filters: Vec<(String, Option<QoS>)>,
    qos: QoS,
    buffer: Option<usize>,
}

impl ClusterSubscribe<'_> {
    /// The QoS for filters given without one (default [`QoS::AtLeastOnce`]).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Per connection, how many QoS 0 messages may wait before new ones are dropped
    /// (default: the template's `subscription_buffer`).
    pub fn buffer(mut self, n: usize) -> Self {
        self.buffer = Some(n.max(1));
        self
    }

    fn resolved(&self) -> Vec<(String, QoS)> {
        self.filters
            .iter()
            .map(|(f, q)| (f.clone(), q.unwrap_or(self.qos)))
            .collect()
    }

    /// Run `handler` for every message, on every connection that carries the
    /// subscription (one at a time per connection; connections run in parallel).
    /// The handler gets that connection's [`Client`]. Resolves once the
    /// subscription is granted on the connections that are up (at least one).
    ///
    /// The handler keeps running when the returned handle is dropped, and is
    /// subscribed on connections that appear later; call
    /// [`ClusterSubscriptionHandle::unsubscribe`] to end it.
    ///
    /// # Errors
    ///
    /// Invalid or no filters (nothing sent); a filter refused by a broker; no
    /// connection granted it within the write timeout; the cluster is stopped. On
    /// error nothing stays subscribed.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: cancelling before it resolves removes the subscription again.
    pub async fn handler<H: Handler>(
        self,
        handler: H,
    ) -> Result<ClusterSubscriptionHandle, SubscribeError> {
        let filters = self.resolved();
        let names = filters.iter().map(|(f, _)| f.clone()).collect();
        let inner = self.cluster.inner.clone();
        let placer: Arc<dyn Placer> = Arc::new(SharedHandler::new(handler));
        let id = inner
            .subscribe_entry(filters, self.buffer, SubKind::Handler(placer))
            .await?;
        Ok(ClusterSubscriptionHandle {
            inner,
            id,
            filters: names,
        })
    }
}

impl<'a> IntoFuture for ClusterSubscribe<'a> {
    type Output = Result<ClusterSubscription, SubscribeError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled subscribe is removed again once it settles.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let filters = self.resolved();
            let names = filters.iter().map(|(f, _)| f.clone()).collect();
            let inner = self.cluster.inner.clone();
            let (tx, rx) = mpsc::unbounded_channel();
            let mut guard = EntryGuard {
                inner: inner.clone(),
                id: None,
            };
            let id = inner
                .subscribe_entry(filters, self.buffer, SubKind::Stream(tx))
                .await?;
            guard.id = Some(id);
            Ok(ClusterSubscription {
                guard,
                incoming: rx,
                streams: SelectAll::new(),
                filters: names,
                incoming_closed: false,
            })
        })
    }
}

impl ClusterClient {
    /// Subscribe to one topic filter. Shared filters (by the predicate; `$share/...`
    /// by default) are made on every connection, others on the primary only. Await
    /// the builder for one [`ClusterSubscription`] stream merging every
    /// connection's messages, or call [`ClusterSubscribe::handler`].
    ///
    /// # Errors
    ///
    /// See [`ClusterSubscribe::handler`].
    ///
    /// # Cancel safety
    ///
    /// See [`ClusterSubscribe::handler`].
    pub fn subscribe(&self, filter: impl Into<String>) -> ClusterSubscribe<'_> {
        ClusterSubscribe {
            cluster: self,
            filters: vec![(filter.into(), None)],
            qos: QoS::default(),
            buffer: None,
        }
    }

    /// Subscribe to several filters, each with its QoS (the Go `SubscribeMultiple`);
    /// each filter is placed by the shared-subscription rule.
    ///
    /// # Errors
    ///
    /// See [`ClusterSubscribe::handler`].
    ///
    /// # Cancel safety
    ///
    /// See [`ClusterSubscribe::handler`].
    pub fn subscribe_many<I, S>(&self, filters: I) -> ClusterSubscribe<'_>
    where
        I: IntoIterator<Item = (S, QoS)>,
        S: Into<String>,
    {
        ClusterSubscribe {
            cluster: self,
            filters: filters
                .into_iter()
                .map(|(f, q)| (f.into(), Some(q)))
                .collect(),
            qos: QoS::default(),
            buffer: None,
        }
    }
}

/// Removes a stream subscription from the cluster when dropped.
struct EntryGuard {
    inner: Arc<Inner>,
    id: Option<u64>,
}

impl Drop for EntryGuard {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            drop(self.inner.remove_entry(id));
        }
    }
}

/// The messages of a cluster subscription, from every connection that carries it,
/// as one stream. Each QoS 1/2 message is acknowledged to its broker when the
/// stream yields it (an unread stream holds back the brokers; nothing is lost).
///
/// Dropping it unsubscribes everywhere. It ends when the cluster stops (or
/// [`ClusterClient::unsubscribe`] removes its filters).
pub struct ClusterSubscription {
    guard: EntryGuard,
    incoming: mpsc::UnboundedReceiver<Subscription>,
    streams: SelectAll<Subscription>,
    filters: Vec<String>,
    incoming_closed: bool,
}

impl fmt::Debug for ClusterSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSubscription")
            .field("filters", &self.filters)
            .field("connections", &self.streams.len())
            .finish_non_exhaustive()
    }
}

impl ClusterSubscription {
    /// The next message, from whichever connection; `None` once the cluster stopped.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a message is taken only when this resolves.
    pub async fn recv(&mut self) -> Option<Message> {
        self.next().await
    }

    /// The filters of this subscription.
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Unsubscribe on every connection and wait for the brokers' UNSUBACKs.
    ///
    /// # Errors
    ///
    /// The first error of a connection (no UNSUBACK within the write timeout);
    /// connections that stopped meanwhile are not an error.
    ///
    /// # Cancel safety
    ///
    /// The stream ends at once; cancelling only stops waiting for the brokers.
    pub async fn unsubscribe(mut self) -> Result<(), UnsubscribeError> {
        if let Some(id) = self.guard.id.take() {
            drop(self.guard.inner.remove_entry(id));
        }
        while let Ok(sub) = self.incoming.try_recv() {
            self.streams.push(sub);
        }
        let subs: Vec<Subscription> = std::mem::take(&mut self.streams).into_iter().collect();
        let results = join_all(subs.into_iter().map(Subscription::unsubscribe)).await;
        results
            .into_iter()
            .filter(|r| !matches!(r, Err(UnsubscribeError::Closed)))
            .collect()
    }
}

impl Stream for ClusterSubscription {
    type Item = Message;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let this = &mut *self;
        while !this.incoming_closed {
            match this.incoming.poll_recv(cx) {
                Poll::Ready(Some(sub)) => this.streams.push(sub),
                Poll::Ready(None) => this.incoming_closed = true,
                Poll::Pending => break,
            }
        }
        match this.streams.poll_next_unpin(cx) {
            Poll::Ready(Some(message)) => Poll::Ready(Some(message)),
            Poll::Ready(None) if this.incoming_closed => Poll::Ready(None),
            Poll::Ready(None) | Poll::Pending => Poll::Pending,
        }
    }
}

/// A handler subscription on a cluster. The handler keeps running when this is
/// dropped; call [`unsubscribe`](Self::unsubscribe) (or
/// [`ClusterClient::unsubscribe`]) to end it.
pub struct ClusterSubscriptionHandle {
    inner: Arc<Inner>,
    id: u64,
    filters: Vec<String>,
}

impl fmt::Debug for ClusterSubscriptionHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterSubscriptionHandle")
            .field("filters", &self.filters)
            .finish_non_exhaustive()
    }
}

impl ClusterSubscriptionHandle {
    /// The filters of this subscription.
    pub fn filters(&self) -> &[String] {
        &self.filters
    }

    /// Stop the handler on every connection and unsubscribe at the brokers.
    ///
    /// # Errors
    ///
    /// The first error of a connection (no UNSUBACK within the write timeout);
    /// connections that stopped meanwhile are not an error.
    ///
    /// # Cancel safety
    ///
    /// No connection subscribes it again; cancelling only stops waiting for the
    /// brokers.
    pub async fn unsubscribe(self) -> Result<(), UnsubscribeError> {
        let handles = match self.inner.remove_entry(self.id) {
            Some(mut entry) => entry.take_handles(),
            None => return Ok(()),
        };
        let results = join_all(handles.into_iter().map(SubscriptionHandle::unsubscribe)).await;
        results
            .into_iter()
            .filter(|r| !matches!(r, Err(UnsubscribeError::Closed)))
            .collect()
    }
}
