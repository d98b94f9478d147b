//! One connection of a cluster: the client, what the cluster knows about it, and
//! the task that watches its health.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use courier_core::{Client, ConnectError, ConnectionState, Event, EventStream};
use futures_util::StreamExt;
use tokio::sync::{Notify, broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::address::Address;

/// Whether the cluster uses a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// Connected, or not connected for less than the failover delay.
    Up,
    /// Not connected for the failover delay (or lost while being removed):
    /// publishes waiting on it are re-sent elsewhere.
    Down,
    /// The client stopped for good.
    Gone,
}

/// A connection: the client handle (the only one that keeps it running) and its
/// bookkeeping. Dropping the last `Arc<Conn>` stops the client at once.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) meta: Arc<ConnMeta>,
    pub(crate) client: Client,
}

/// What the cluster's tasks share about a connection, without keeping it alive.
#[derive(Debug)]
pub(crate) struct ConnMeta {
    pub(crate) id: u64,
    /// The client id suffix (`<id>-<index>`); also the pool slot.
    pub(crate) index: usize,
    /// The resolved address, `None` for the template's.
    pub(crate) address: Option<Address>,
    pub(crate) client_id: String,
    pub(crate) health: watch::Sender<Health>,
    /// No longer wanted: draining or dropped.
    pub(crate) removed: AtomicBool,
    /// Cancelled when removed: subscription work on it stops.
    pub(crate) retired: CancellationToken,
    /// Wakes the subscription sync task.
    pub(crate) resync: Notify,
    /// Wakes the health monitor.
    pub(crate) kick: Notify,
    /// Publishes acknowledged through the cluster on this connection.
    pub(crate) published: AtomicU64,
    /// The first error of the latest failed connect attempt.
    pub(crate) last_error: Mutex<Option<Arc<ConnectError>>>,
    /// Filters whose subscriptions ended here and that nothing here uses any more:
    /// the broker is still subscribed until the cluster unsubscribes them.
    released: Mutex<BTreeSet<String>>,
}

impl ConnMeta {
    pub(crate) fn new(id: u64, index: usize, address: Option<Address>, client_id: String) -> Self {
        ConnMeta {
            id,
            index,
            address,
            client_id,
            health: watch::channel(Health::Up).0,
            removed: AtomicBool::new(false),
            retired: CancellationToken::new(),
            resync: Notify::new(),
            kick: Notify::new(),
            published: AtomicU64::new(0),
            last_error: Mutex::new(None),
            released: Mutex::new(BTreeSet::new()),
        }
    }

    pub(crate) fn health(&self) -> Health {
        *self.health.borrow()
    }

    pub(crate) fn is_up(&self) -> bool {
        self.health() == Health::Up
    }

    pub(crate) fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Acquire)
    }

    /// Mark as no longer wanted.
    pub(crate) fn remove(&self) {
        self.removed.store(true, Ordering::Release);
        self.retired.cancel();
        self.kick.notify_one();
    }

    /// Record filters this connection no longer uses but is still subscribed to.
    pub(crate) fn note_released(&self, filters: Vec<String>) {
        self.released
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(filters);
    }

    /// Of `filters`, those this connection is subscribed to at its broker: used by
    /// a subscription on `client`, or released and not yet unsubscribed (these are
    /// taken: the caller unsubscribes them).
    pub(crate) fn subscribed_of(&self, client: &Client, filters: &[String]) -> Vec<String> {
        let used = client.info().subscriptions;
        let mut released = self.released.lock().unwrap_or_else(PoisonError::into_inner);
        filters
            .iter()
            .filter(|f| {
                let was_released = released.remove(f.as_str());
                was_released || used.contains_key(f.as_str())
            })
            .cloned()
            .collect()
    }

    pub(crate) fn last_error(&self) -> Option<Arc<ConnectError>> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_last_error(&self, error: Arc<ConnectError>) {
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(error);
    }

    /// Returns true when the health changed.
    fn set_health(&self, health: Health) -> bool {
        self.health.send_if_modified(|h| {
            let changed = *h != health;
            *h = health;
            changed
        })
    }
}

/// Signals from a connection's monitor to the rest of the cluster.
#[derive(Debug, Clone)]
pub(crate) struct Signals {
    /// Bumped on every state or health change (publishers and `connect` wait on it).
    pub(crate) changes: Arc<watch::Sender<u64>>,
    /// Wakes the supervisor (health changes need a reconcile).
    pub(crate) wake: Arc<Notify>,
}

impl Signals {
    pub(crate) fn bump(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// Watches a connection: turns its state into [`Health`] (down once not connected
/// for `delay`, at once when removed), records connect errors, and passes its
/// events on to the cluster's.
pub(crate) async fn monitor(
    meta: Arc<ConnMeta>,
    mut state: watch::Receiver<ConnectionState>,
    events: EventStream,
    forward: broadcast::Sender<Event>,
    signals: Signals,
    delay: Duration,
) {
    let mut events = Some(events);
    // Counts as down from the moment it starts connecting.
    let mut since: Option<Instant> = Some(Instant::now());
    let mut last_state = None;
    loop {
        let current = *state.borrow_and_update();
        let now = Instant::now();
        let health = match current {
            ConnectionState::Connected => {
                since = None;
                Health::Up
            }
            ConnectionState::Stopped => Health::Gone,
            _ => {
                let t = *since.get_or_insert(now);
                if meta.is_removed() || now.duration_since(t) >= delay {
                    Health::Down
                } else {
                    Health::Up
                }
            }
        };
        let health_changed = meta.set_health(health);
        if health_changed || last_state != Some(current) {
            signals.bump();
        }
        if health_changed {
            signals.wake.notify_one();
        }
        last_state = Some(current);
        if health == Health::Gone {
            return;
        }
        let deadline = match (current.is_connected(), health, since) {
            // No deadline when it does not fit: the connection is never judged down.
            (false, Health::Up, Some(t)) => t.checked_add(delay),
            _ => None,
        };
        tokio::select! {
            changed = state.changed() => {
                if changed.is_err() {
                    meta.set_health(Health::Gone);
                    signals.bump();
                    signals.wake.notify_one();
                    return;
                }
            }
            event = next_event(&mut events) => match event {
                Some(event) => {
                    if let Event::ConnectFailed { error, .. } = &event {
                        meta.set_last_error(error.clone());
                        signals.bump();
                    }
                    // The cluster says once when it stops, not once per connection.
                    if !matches!(event, Event::Stopped) {
                        let _ = forward.send(event);
                    }
                }
                None => events = None,
            },
            () = sleep_until(deadline) => {}
            () = meta.kick.notified() => {}
        }
    }
}

async fn next_event(events: &mut Option<EventStream>) -> Option<Event> {
    match events {
        Some(events) => events.next().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
