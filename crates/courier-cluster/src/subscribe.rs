//! Subscribing through a cluster: shared filters on every connection, others on the
//! primary, each connection feeding the one queue of the client's subscription.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Weak};
use std::time::Duration;

use courier_core::client::middleware::{SubscribeRequest, Subscribed, UnsubscribeRequest};
use courier_core::{
    ConnectionState, FilterGrant, QoS, SubscribeError, SubscriptionHandle, UnsubscribeError,
};
use futures_util::future::join_all;
use tokio::sync::watch;
use tokio::time::{Instant, timeout_at};

use crate::cluster::{Inner, deadline_after};
use crate::conn::{Conn, ConnMeta};

/// How long a connection's subscription sync waits after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Filters with their QoS, as a subscribe request carries them.
type Filters = Vec<(String, QoS)>;

/// One filter of a cluster subscription.
#[derive(Debug, Clone)]
pub(crate) struct SubFilter {
    pub(crate) filter: String,
    pub(crate) qos: QoS,
    /// Made on every connection (else on the primary only).
    pub(crate) shared: bool,
}

/// A cluster subscription: what it wants, where its messages go, and where it is
/// made.
pub(crate) struct SubEntry {
    pub(crate) filters: Vec<SubFilter>,
    /// The client's request: its clones carry the subscription's queue to each
    /// connection.
    request: SubscribeRequest,
    /// Per connection id.
    pub(crate) placed: HashMap<u64, Placement>,
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
    fn wanted(&self, primary: bool) -> Filters {
        self.filters
            .iter()
            .filter(|f| f.shared || primary)
            .map(|f| (f.filter.clone(), f.qos))
            .collect()
    }

    /// The request for `filters` on one connection, into this subscription's queue.
    fn request_for(&self, filters: Filters) -> SubscribeRequest {
        let mut request = self.request.clone();
        request.filters = filters;
        request
    }

    /// End the subscription on every connection where it is made, without telling
    /// the brokers: each connection of `conns` notes the filters it no longer uses,
    /// for the unsubscribe that follows.
    pub(crate) fn detach(&mut self, conns: &[Arc<Conn>]) {
        for (conn_id, placement) in &mut self.placed {
            let conn = conns.iter().find(|c| c.meta.id == *conn_id);
            for handle in std::mem::take(&mut placement.handles) {
                let unused = handle.detach();
                if let Some(conn) = conn {
                    conn.meta.note_released(unused);
                }
            }
        }
    }
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

/// The cluster's answer for each filter asked for, from the connections' answers:
/// granted where any connection granted it, at the lowest QoS granted.
fn merge_grants(requested: &[(String, QoS)], answers: &[Vec<FilterGrant>]) -> Vec<FilterGrant> {
    requested
        .iter()
        .map(|(filter, qos)| {
            let granted = answers
                .iter()
                .flatten()
                .filter(|g| &g.filter == filter)
                .filter_map(|g| g.granted)
                .min();
            FilterGrant::new(filter.clone(), *qos, granted)
        })
        .collect()
}

/// What one sync pass did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Synced {
    Idle,
    Worked,
    Failed,
}

impl Inner {
    /// Register the client's subscription and make it on the connections that are
    /// up. Its route (for [`release`](Self::release)) is the cluster's id for it.
    pub(crate) async fn subscribe(
        self: &Arc<Self>,
        request: SubscribeRequest,
    ) -> Result<Subscribed, SubscribeError> {
        request.parse_filters()?;
        let requested = request.filters.clone();
        let filters: Vec<SubFilter> = requested
            .iter()
            .map(|(filter, qos)| SubFilter {
                shared: self.is_shared(filter),
                filter: filter.clone(),
                qos: *qos,
            })
            .collect();
        let mut entry = Some(SubEntry {
            filters,
            request,
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
                let targets: Vec<(Arc<Conn>, SubscribeRequest)> = match &entry {
                    Some(e) => st
                        .live
                        .iter()
                        .filter(|c| c.meta.is_up())
                        .map(|c| (c.clone(), e.wanted(primary == Some(c.meta.id))))
                        .filter(|(_, wanted)| !wanted.is_empty())
                        .map(|(c, wanted)| (c, e.request_for(wanted)))
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
        let results = join_all(
            targets
                .into_iter()
                .map(|(conn, request)| async move { self.place(&conn, id, request).await }),
        )
        .await;
        let mut error: Option<SubscribeError> = None;
        let mut answers = Vec::new();
        for result in results {
            match result {
                Ok(grants) => answers.push(grants),
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
        if fatal || answers.is_empty() {
            drop(rollback);
            return Err(error.unwrap_or(SubscribeError::Timeout(timeout)));
        }
        rollback.disarm();
        // Connections where it failed (or that changed meanwhile) catch up.
        let st = self.lock();
        if let Some(entry) = st.subs.get(&id) {
            for conn_id in entry.placed.keys() {
                if let Some(conn) = st.live_conn(*conn_id) {
                    conn.meta.resync.notify_one();
                }
            }
        }
        drop(st);
        Ok(Subscribed::new(
            merge_grants(&requested, &answers),
            vec![id],
        ))
    }

    /// Subscribe `request` (some filters of subscription `id`) on `conn` and record
    /// the result; the connection's answer for each filter.
    async fn place(
        self: &Arc<Self>,
        conn: &Arc<Conn>,
        id: u64,
        request: SubscribeRequest,
    ) -> Result<Vec<FilterGrant>, SubscribeError> {
        let names: Vec<String> = request.filters.iter().map(|(f, _)| f.clone()).collect();
        let placed = conn.client.subscribe_request(request).await;
        let mut st = self.lock();
        let live = !st.stopped && !conn.meta.is_removed();
        let entry = st.subs.get_mut(&id);
        match (placed, entry) {
            (Ok(handle), Some(entry)) if live => {
                let grants = handle.grants().to_vec();
                let placement = entry.placed.entry(conn.meta.id).or_default();
                placement.pending = false;
                placement.filters.extend(names);
                placement.handles.push(handle);
                Ok(grants)
            }
            (Ok(handle), _) => {
                drop(st);
                undo(handle);
                Ok(Vec::new())
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

    /// A subscription of the client ended: no connection makes it any more, its
    /// queue gets nothing more; the filters no other subscription uses are returned
    /// for the client to unsubscribe.
    pub(crate) fn release(&self, ids: &[u64]) -> Vec<String> {
        let mut st = self.lock();
        let conns: Vec<Arc<Conn>> = st.live.iter().chain(&st.draining).cloned().collect();
        let mut ended: Vec<SubEntry> = ids.iter().filter_map(|id| st.subs.remove(id)).collect();
        let in_use: BTreeSet<&str> = st
            .subs
            .values()
            .flat_map(|e| e.filters.iter().map(|f| f.filter.as_str()))
            .collect();
        let mut unused = BTreeSet::new();
        for entry in &mut ended {
            entry.detach(&conns);
            for f in &entry.filters {
                if !in_use.contains(f.filter.as_str()) {
                    unused.insert(f.filter.clone());
                }
            }
        }
        unused.into_iter().collect()
    }

    /// A subscription of the client was dropped: no connection makes it any more,
    /// and each connection tells its broker, without waiting, about the filters it
    /// no longer uses (in order with later subscribes, so these keep theirs).
    pub(crate) fn forget(&self, ids: &[u64]) {
        let ended: Vec<SubEntry> = {
            let mut st = self.lock();
            ids.iter().filter_map(|id| st.subs.remove(id)).collect()
        };
        for handle in ended
            .into_iter()
            .flat_map(|e| e.placed.into_values())
            .flat_map(|p| p.handles)
        {
            handle.forget();
        }
    }

    /// Unsubscribe from `filters` on every connection: every subscription on them
    /// ends, and the brokers are told to stop sending. Connections that are down
    /// drop the subscriptions at once and tell their broker when back.
    pub(crate) async fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> Result<(), UnsubscribeError> {
        request.validate()?;
        let filters = request.filters;
        let (conns, mut removed) = {
            let mut st = self.lock();
            if st.stopped {
                return Err(UnsubscribeError::Closed);
            }
            let mut removed = Vec::new();
            for (id, entry) in &mut st.subs {
                entry.filters.retain(|f| !filters.contains(&f.filter));
                for placement in entry.placed.values_mut() {
                    placement.filters.retain(|f| !filters.contains(f));
                }
                if entry.filters.is_empty() {
                    removed.push(*id);
                }
            }
            let removed: Vec<SubEntry> = removed
                .into_iter()
                .filter_map(|id| st.subs.remove(&id))
                .collect();
            (st.live.clone(), removed)
        };
        for entry in &mut removed {
            entry.detach(&conns);
        }
        // Each connection unsubscribes what its broker has of them (a broker need
        // not answer for filters it never had: rumqttd does not).
        let work: Vec<(Arc<Conn>, Vec<String>)> = conns
            .into_iter()
            .map(|c| {
                let mine = c.meta.subscribed_of(&c.client, &filters);
                (c, mine)
            })
            .filter(|(_, mine)| !mine.is_empty())
            .collect();
        let (up, down): (Vec<_>, Vec<_>) =
            work.into_iter().partition(|(c, _)| c.client.is_connected());
        for (conn, filters) in down {
            tokio::spawn(async move {
                tokio::select! {
                    _ = conn.client.unsubscribe(filters) => {}
                    () = conn.meta.retired.cancelled() => {}
                }
            });
        }
        let results = join_all(
            up.into_iter()
                .map(|(c, filters)| async move { c.client.unsubscribe(filters).await }),
        )
        .await;
        results.into_iter().collect()
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
                    work.push((*id, entry.request_for(missing)));
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
        for (id, request) in work {
            let result = tokio::select! {
                result = self.place(&conn, id, request) => result,
                () = meta.retired.cancelled() => return Synced::Idle,
            };
            match result {
                Ok(_) if outcome != Synced::Failed => outcome = Synced::Worked,
                Ok(_) => {}
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
        if let Some(entry) = self.id.take().and_then(|id| self.inner.remove_entry(id)) {
            for handle in entry.placed.into_values().flat_map(|p| p.handles) {
                undo(handle);
            }
        }
    }
}

/// Unsubscribe what was made on one connection for a subscription that is gone.
fn undo(handle: SubscriptionHandle) {
    // Outside a runtime (shutting down) the connection is going away anyway.
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            let _ = handle.unsubscribe().await;
        });
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
