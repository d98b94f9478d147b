//! The cluster behind a [`Client`](courier_core::Client) built by a
//! [`ClusterBuilder`], and the supervisor that keeps its connections in line with the
//! mode and the resolver's addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::time::Duration;

use courier_core::{ClientBuilder, ConfigError, ConnectionState, Event, PublishError};
use futures_util::future::join_all;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::{Instant, timeout_at};
use tokio_util::sync::CancellationToken;

use crate::address::Address;
use crate::builder::{Addressing, Balance, ClusterBuilder, Mode, SharedPredicate};
use crate::conn::{Conn, ConnMeta, Health, Signals, monitor};
use crate::error::{ClusterConfigError, ClusterConnectError};
use crate::resolver::AddressStream;
use crate::subscribe::{SubEntry, sync_task};

/// The core client's default write timeout, used until a connection exists.
const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The core client's default connect timeout, used until a connection exists.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// The configuration that stays fixed.
pub(crate) struct Config {
    pub(crate) client_id: String,
    pub(crate) pool_size: usize,
    pub(crate) mode: Mode,
    pub(crate) follows_resolver: bool,
    pub(crate) multi: bool,
    pub(crate) balance: Balance,
    pub(crate) shared: SharedPredicate,
    pub(crate) failover_delay: Duration,
}

/// State shared by handles, the supervisor and the per-connection tasks.
pub(crate) struct Inner {
    pub(crate) config: Config,
    /// What each connection is built from: the client's connection template, set
    /// once the client on the cluster exists.
    template: OnceLock<ClientBuilder>,
    state: Mutex<State>,
    pub(crate) signals: Signals,
    shutdown: CancellationToken,
    /// Set once every connection of a `stop()` has stopped.
    done: watch::Sender<bool>,
    /// Connected while any connection is.
    pub(crate) connection_state: watch::Sender<ConnectionState>,
    /// Every connection's events.
    pub(crate) events: broadcast::Sender<Event>,
    write_timeout: OnceLock<Duration>,
    rr: AtomicUsize,
    next_conn_id: AtomicU64,
}

/// Mutable state, behind one lock (never held across an await).
#[derive(Default)]
pub(crate) struct State {
    /// The resolver's latest (non-empty) list, deduplicated.
    pub(crate) addresses: Vec<Address>,
    /// Single-connection mode with a resolver: the address in use.
    pub(crate) active: Option<Address>,
    /// The connections in use, in address-list order.
    pub(crate) live: Vec<Arc<Conn>>,
    /// Removed connections still finishing their in-flight work.
    pub(crate) draining: Vec<Arc<Conn>>,
    /// The connection carrying the subscriptions that are not shared.
    pub(crate) primary: Option<u64>,
    pub(crate) subs: BTreeMap<u64, SubEntry>,
    pub(crate) next_sub: u64,
    pub(crate) stopped: bool,
    /// A template error found by the supervisor, for `connect()`.
    pub(crate) config_error: Option<ConfigError>,
    config_error_logged: bool,
}

impl State {
    pub(crate) fn live_conn(&self, id: u64) -> Option<&Arc<Conn>> {
        self.live.iter().find(|c| c.meta.id == id)
    }
}

/// A connection the mode asks for.
#[derive(Debug, Clone)]
struct Spec {
    address: Option<Address>,
    /// The pool slot; `None` in multi mode (allocated).
    index: Option<usize>,
}

impl Spec {
    fn matches(&self, meta: &ConnMeta) -> bool {
        meta.address == self.address && self.index.is_none_or(|i| i == meta.index)
    }
}

/// The capacity of the cluster's event channel: that of a client's, for each of a
/// few connections.
const EVENT_BUFFER: usize = 4096;

/// The cluster, with no connection yet, and the resolver's stream.
pub(crate) fn prepare(builder: ClusterBuilder) -> (Arc<Inner>, Option<AddressStream>) {
    let ClusterBuilder {
        template: _,
        client_id,
        pool_size,
        addressing,
        balance,
        shared,
        failover_delay,
    } = builder;
    let mode = match addressing {
        Addressing::Multi(_) => Mode::Multi,
        _ if pool_size > 1 => Mode::Pool,
        _ => Mode::Single,
    };
    let updates: Option<AddressStream> = match &addressing {
        Addressing::Template => None,
        Addressing::Failover(r) | Addressing::Multi(r) => Some(r.updates()),
    };
    let inner = Arc::new(Inner {
        config: Config {
            client_id: client_id.unwrap_or_default(),
            pool_size,
            mode,
            follows_resolver: updates.is_some(),
            multi: matches!(addressing, Addressing::Multi(_)),
            balance,
            shared,
            failover_delay,
        },
        template: OnceLock::new(),
        state: Mutex::new(State::default()),
        signals: Signals {
            changes: Arc::new(watch::channel(0).0),
            wake: Arc::new(Notify::new()),
        },
        shutdown: CancellationToken::new(),
        done: watch::channel(false).0,
        connection_state: watch::channel(ConnectionState::Connecting).0,
        events: broadcast::channel(EVENT_BUFFER).0,
        write_timeout: OnceLock::new(),
        rr: AtomicUsize::new(0),
        next_conn_id: AtomicU64::new(0),
    });
    (inner, updates)
}

/// Start the cluster's connections from `template` (the client's connection
/// template), and the tasks that keep them in line.
pub(crate) fn launch(
    inner: &Arc<Inner>,
    template: ClientBuilder,
    mut updates: Option<AddressStream>,
) -> Result<(), ClusterConfigError> {
    let _ = inner.template.set(template);
    // A list that is ready now (a static resolver) is used at once, so that template
    // errors are reported here.
    if let Some(stream) = updates.as_mut() {
        if let Some(Some(list)) = stream.next().now_or_never() {
            inner.set_addresses(list);
        }
    }
    if let Err(e) = inner.reconcile() {
        inner.shutdown_now();
        return Err(e.into());
    }
    tokio::spawn(supervise(
        Arc::downgrade(inner),
        updates,
        inner.signals.wake.clone(),
        inner.shutdown.clone(),
    ));
    tokio::spawn(follow_state(
        Arc::downgrade(inner),
        inner.signals.changes.subscribe(),
    ));
    Ok(())
}

/// Keeps the cluster's state in line with its connections': connected while any
/// is, stopped once stopped.
async fn follow_state(weak: Weak<Inner>, mut changes: watch::Receiver<u64>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        let state = inner.current_state();
        inner.connection_state.send_if_modified(|s| {
            let changed = *s != state;
            *s = state;
            changed
        });
        drop(inner);
        if state == ConnectionState::Stopped || changes.changed().await.is_err() {
            return;
        }
    }
}

/// Follows the resolver and health changes, reconciling after each.
async fn supervise(
    weak: Weak<Inner>,
    mut updates: Option<AddressStream>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            update = next_update(&mut updates) => match update {
                Some(list) => match weak.upgrade() {
                    Some(inner) => inner.set_addresses(list),
                    None => return,
                },
                None => {
                    tracing::info!("courier-cluster: the resolver's stream ended; keeping the last address list");
                    updates = None;
                }
            },
            () = wake.notified() => {}
        }
        let Some(inner) = weak.upgrade() else { return };
        if let Err(error) = inner.reconcile() {
            let mut st = inner.lock();
            if !st.config_error_logged {
                tracing::error!(%error, "courier-cluster: cannot build a connection from the template");
                st.config_error_logged = true;
            }
            st.config_error = Some(error);
        }
    }
}

async fn next_update(updates: &mut Option<AddressStream>) -> Option<Vec<Address>> {
    match updates {
        Some(stream) => stream.next().await,
        None => std::future::pending().await,
    }
}

impl Inner {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn write_timeout(&self) -> Duration {
        self.write_timeout
            .get()
            .copied()
            .unwrap_or(DEFAULT_WRITE_TIMEOUT)
    }

    pub(crate) fn is_shared(&self, filter: &str) -> bool {
        (self.config.shared)(filter)
    }

    fn set_addresses(&self, list: Vec<Address>) {
        let mut seen = BTreeSet::new();
        let list: Vec<Address> = list
            .into_iter()
            .filter(|a| seen.insert(a.clone()))
            .collect();
        if list.is_empty() {
            tracing::warn!(
                "courier-cluster: the resolver gave an empty list; keeping the connections"
            );
            return;
        }
        tracing::info!(addresses = ?list, "courier-cluster: address list");
        self.lock().addresses = list;
    }

    fn client_id_for(&self, index: usize) -> String {
        let base = &self.config.client_id;
        if base.is_empty() || !(self.config.multi || self.config.pool_size > 1) {
            base.clone()
        } else {
            format!("{base}-{index}")
        }
    }

    /// The connections the mode asks for now; `None` to keep what there is.
    fn desired(&self, st: &mut State) -> Option<Vec<Spec>> {
        let pool = |address: Option<Address>| {
            (0..self.config.pool_size)
                .map(|i| Spec {
                    address: address.clone(),
                    index: Some(i),
                })
                .collect()
        };
        if !self.config.follows_resolver {
            return Some(pool(None));
        }
        if st.addresses.is_empty() {
            return None;
        }
        if self.config.multi {
            return Some(
                st.addresses
                    .iter()
                    .map(|a| Spec {
                        address: Some(a.clone()),
                        index: None,
                    })
                    .collect(),
            );
        }
        let n = st.addresses.len();
        let current = st
            .active
            .as_ref()
            .and_then(|a| st.addresses.iter().position(|x| x == a));
        let index = match current {
            None => 0,
            Some(i) => {
                let group: Vec<_> = st
                    .live
                    .iter()
                    .filter(|c| c.meta.address.as_ref() == Some(&st.addresses[i]))
                    .collect();
                let down = !group.is_empty() && group.iter().all(|c| !c.meta.is_up());
                if down && n > 1 {
                    tracing::warn!(
                        from = %st.addresses[i],
                        to = %st.addresses[(i + 1) % n],
                        "courier-cluster: connection down, failing over"
                    );
                    (i + 1) % n
                } else {
                    i
                }
            }
        };
        let address = st.addresses[index].clone();
        st.active = Some(address.clone());
        Some(pool(Some(address)))
    }

    /// Bring the connections in line with the mode and the addresses, and pick the
    /// primary.
    pub(crate) fn reconcile(self: &Arc<Self>) -> Result<(), ConfigError> {
        // Nothing to build connections from before `launch`.
        let Some(template) = self.template.get() else {
            return Ok(());
        };
        let mut result = Ok(());
        let mut to_drain = Vec::new();
        let mut to_drop = Vec::new();
        let mut resync = Vec::new();
        {
            let mut st = self.lock();
            if st.stopped {
                return Ok(());
            }
            if let Some(desired) = self.desired(&mut st) {
                let live = std::mem::take(&mut st.live);
                for conn in live {
                    if desired.iter().any(|s| s.matches(&conn.meta)) {
                        st.live.push(conn);
                        continue;
                    }
                    tracing::info!(client_id = %conn.meta.client_id, address = %conn.client.address(), "courier-cluster: removing connection");
                    let up = conn.meta.is_up();
                    conn.meta.remove();
                    for entry in st.subs.values_mut() {
                        entry.placed.remove(&conn.meta.id);
                    }
                    if up {
                        st.draining.push(conn.clone());
                        to_drain.push(conn);
                    } else {
                        to_drop.push(conn);
                    }
                }
                for spec in &desired {
                    if st.live.iter().any(|c| spec.matches(&c.meta)) {
                        continue;
                    }
                    let index = spec.index.unwrap_or_else(|| {
                        (0..)
                            .find(|i| {
                                !st.live
                                    .iter()
                                    .chain(&st.draining)
                                    .any(|c| c.meta.index == *i)
                            })
                            .unwrap_or(0)
                    });
                    let client_id = self.client_id_for(index);
                    if !client_id.is_empty()
                        && st.draining.iter().any(|c| c.meta.client_id == client_id)
                    {
                        // Same id as a connection still draining: the broker would
                        // drop one of them. Wait for the drain.
                        continue;
                    }
                    match self.create_conn(template, spec.address.clone(), index, client_id) {
                        Ok(conn) => st.live.push(conn),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    }
                }
                let position = |meta: &ConnMeta| desired.iter().position(|s| s.matches(meta));
                st.live.sort_by_key(|c| position(&c.meta));
            }
            let primary = choose_primary(&st);
            if primary != st.primary {
                for id in [st.primary, primary].into_iter().flatten() {
                    if let Some(conn) = st.live_conn(id) {
                        resync.push(conn.meta.clone());
                    }
                }
                st.primary = primary;
            }
        }
        self.signals.bump();
        for conn in to_drain {
            tokio::spawn(drain(conn, Arc::downgrade(self), self.signals.clone()));
        }
        // The cluster held the only long-lived handle: the client stops at once.
        drop(to_drop);
        for meta in resync {
            meta.resync.notify_one();
        }
        result
    }

    fn create_conn(
        self: &Arc<Self>,
        template: &ClientBuilder,
        address: Option<Address>,
        index: usize,
        client_id: String,
    ) -> Result<Arc<Conn>, ConfigError> {
        let mut builder = template.clone().client_id(client_id.clone());
        if let Some(a) = &address {
            builder = builder.address(a.host.clone(), a.port);
        }
        let client = builder.start()?;
        let _ = self.write_timeout.set(client.write_timeout());
        let id = self.next_conn_id.fetch_add(1, Ordering::Relaxed);
        let meta = Arc::new(ConnMeta::new(id, index, address, client_id));
        tracing::info!(client_id = %meta.client_id, address = %client.address(), "courier-cluster: connection added");
        tokio::spawn(monitor(
            meta.clone(),
            client.state_watch(),
            client.events(),
            self.events.clone(),
            self.signals.clone(),
            self.config.failover_delay,
        ));
        tokio::spawn(sync_task(
            Arc::downgrade(self),
            meta.clone(),
            client.state_watch(),
        ));
        Ok(Arc::new(Conn { meta, client }))
    }

    /// Stop everything at once (the last handle was dropped, or start failed).
    pub(crate) fn shutdown_now(&self) {
        let (live, subs) = {
            let mut st = self.lock();
            st.stopped = true;
            (std::mem::take(&mut st.live), std::mem::take(&mut st.subs))
        };
        self.shutdown.cancel();
        self.signals.bump();
        for conn in &live {
            conn.meta.remove();
        }
        drop(subs);
        drop(live);
        self.finished();
    }

    /// Every connection has stopped: mark it, and send `Event::Stopped` once.
    fn finished(&self) {
        if !self.done.send_replace(true) {
            let _ = self.events.send(Event::Stopped);
        }
    }

    /// Pick a connection for a publish: up, not tried yet, connected if any is.
    fn try_pick(&self, tried: &[u64]) -> Result<Option<Arc<Conn>>, PublishError> {
        let st = self.lock();
        if st.stopped {
            return Err(PublishError::Closed);
        }
        let n = st.live.len();
        if n == 0 {
            return Ok(None);
        }
        let start = self.rr.fetch_add(1, Ordering::Relaxed);
        for connected_only in [true, false] {
            let mut best: Option<(&Arc<Conn>, usize)> = None;
            for k in 0..n {
                let conn = &st.live[(start.wrapping_add(k)) % n];
                if !conn.meta.is_up()
                    || tried.contains(&conn.meta.id)
                    || (connected_only && !conn.client.is_connected())
                {
                    continue;
                }
                match self.config.balance {
                    Balance::RoundRobin => return Ok(Some(conn.clone())),
                    _ => {
                        let in_flight = conn.client.publishes_in_flight();
                        if best.is_none_or(|(_, b)| in_flight < b) {
                            best = Some((conn, in_flight));
                            if in_flight == 0 {
                                break;
                            }
                        }
                    }
                }
            }
            if let Some((conn, _)) = best {
                return Ok(Some(conn.clone()));
            }
        }
        Ok(None)
    }

    /// Wait for a connection to publish on, until `deadline`.
    pub(crate) async fn pick(
        &self,
        tried: &[u64],
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Arc<Conn>, PublishError> {
        if let Some(conn) = self.try_pick(tried)? {
            return Ok(conn);
        }
        let mut changes = self.signals.changes.subscribe();
        loop {
            if let Some(conn) = self.try_pick(tried)? {
                return Ok(conn);
            }
            match timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(PublishError::Closed),
                Err(_) => return Err(PublishError::Timeout(timeout)),
            }
        }
    }
}

/// The primary: the current one while it is up, else the first live one that is up.
fn choose_primary(st: &State) -> Option<u64> {
    if let Some(current) = st.primary.and_then(|id| st.live_conn(id)) {
        if current.meta.is_up() {
            return Some(current.meta.id);
        }
    }
    st.live
        .iter()
        .find(|c| c.meta.is_up())
        .or_else(|| st.primary.and_then(|id| st.live_conn(id)))
        .or_else(|| st.live.first())
        .map(|c| c.meta.id)
}

/// Close a removed connection gracefully: in-flight publishes get their
/// acknowledgements (up to the graceful shutdown period). If it goes down
/// meanwhile, it is dropped at once (its publishes are re-sent elsewhere).
async fn drain(conn: Arc<Conn>, inner: Weak<Inner>, signals: Signals) {
    let mut health = conn.meta.health.subscribe();
    tokio::select! {
        () = conn.client.stop() => {}
        _ = health.wait_for(|h| *h != Health::Up) => {}
    }
    let id = conn.meta.id;
    tracing::info!(client_id = %conn.meta.client_id, "courier-cluster: connection closed");
    drop(conn);
    if let Some(inner) = inner.upgrade() {
        let removed = {
            let mut st = inner.lock();
            let at = st.draining.iter().position(|c| c.meta.id == id);
            at.map(|i| st.draining.remove(i))
        };
        drop(removed);
    }
    signals.bump();
    signals.wake.notify_one();
}

/// Marks the first `stop()` as finished, however it ends, and says so.
struct DoneGuard<'a>(&'a Inner);

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.0.finished();
    }
}

impl Inner {
    /// Connected while any connection is; stopped once stopped; otherwise
    /// reconnecting once any connection had been up, connecting before.
    fn current_state(&self) -> ConnectionState {
        let st = self.lock();
        if st.stopped {
            return ConnectionState::Stopped;
        }
        let states: Vec<ConnectionState> = st.live.iter().map(|c| c.client.state()).collect();
        if states.iter().any(|s| s.is_connected()) {
            ConnectionState::Connected
        } else if *self.connection_state.borrow() == ConnectionState::Connecting {
            ConnectionState::Connecting
        } else {
            ConnectionState::Reconnecting
        }
    }

    /// Publishes waiting for an acknowledgement, over every connection.
    pub(crate) fn publishes_in_flight(&self) -> usize {
        let st = self.lock();
        st.live
            .iter()
            .chain(&st.draining)
            .map(|c| c.client.publishes_in_flight())
            .sum()
    }

    /// Until one connection is up, every one failed, or the connect timeout.
    pub(crate) async fn wait_first_connection(&self) -> Result<(), ClusterConnectError> {
        let mut changes = self.signals.changes.subscribe();
        let started = Instant::now();
        loop {
            let timeout = {
                let mut st = self.lock();
                if st.stopped {
                    return Err(ClusterConnectError::Closed);
                }
                if let Some(e) = st.config_error.take() {
                    return Err(ClusterConfigError::Client(e).into());
                }
                if st.live.iter().any(|c| c.client.is_connected()) {
                    return Ok(());
                }
                let errors: Vec<_> = st.live.iter().map(|c| c.meta.last_error()).collect();
                if !errors.is_empty() && errors.iter().all(Option::is_some) {
                    if let Some(Some(first)) = errors.into_iter().next() {
                        return Err(ClusterConnectError::Connect(first));
                    }
                }
                st.live
                    .first()
                    .map_or(DEFAULT_CONNECT_TIMEOUT, |c| c.client.connect_timeout())
            };
            match timeout_at(deadline_after(started, timeout), changes.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ClusterConnectError::Closed),
                Err(_) => return Err(ClusterConnectError::Timeout(timeout)),
            }
        }
    }

    /// Refuse new work and take every connection (drained ones included) and
    /// subscription; true for the first call.
    fn take_all(&self) -> (Vec<Arc<Conn>>, bool) {
        let (conns, subs, first) = {
            let mut st = self.lock();
            let first = !st.stopped;
            st.stopped = true;
            let mut conns: Vec<_> = std::mem::take(&mut st.live);
            for conn in &conns {
                conn.meta.remove();
            }
            conns.extend(st.draining.iter().cloned());
            (conns, std::mem::take(&mut st.subs), first)
        };
        self.shutdown.cancel();
        self.signals.bump();
        drop(subs);
        (conns, first)
    }

    /// Stop gracefully: refuse new publishes, close every connection with
    /// [`Client::stop`](courier_core::Client::stop) (each waits up to its graceful
    /// shutdown period for in-flight publishes). Calling it again waits for the
    /// same stop. Once called, the cluster refuses new work even if the future is
    /// dropped; dropping the first call's future closes the connections at once.
    pub(crate) async fn stop(&self) {
        let (conns, first) = self.take_all();
        if first {
            // Also when this future is dropped: the connections then close at once
            // (their last handles go with it).
            let _done = DoneGuard(self);
            join_all(conns.iter().map(|c| c.client.stop())).await;
            drop(conns);
        } else {
            drop(conns);
            let mut done = self.done.subscribe();
            let _ = done.wait_for(|d| *d).await;
        }
    }

    /// End every connection at once, without DISCONNECT.
    pub(crate) async fn abort(&self) {
        let (conns, _) = self.take_all();
        let _done = DoneGuard(self);
        join_all(conns.iter().map(|c| c.client.abort())).await;
    }

    /// The addresses, comma-separated, for messages.
    pub(crate) fn address(&self) -> String {
        let st = self.lock();
        let mut seen: Vec<String> = Vec::new();
        for conn in &st.live {
            let address = conn.client.address();
            if !seen.contains(&address) {
                seen.push(address);
            }
        }
        seen.join(",")
    }
}

/// `period` after `from`, or a far-off instant when that does not fit (a timeout of
/// `Duration::MAX` waits for good instead of panicking).
pub(crate) fn deadline_after(from: Instant, period: Duration) -> Instant {
    const FAR: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
    from.checked_add(period).unwrap_or_else(|| from + FAR)
}
