//! The fake broker's state, and the [`Backend`] each of its clients runs on.
//!
//! One mutex guards everything (the broker is for tests: simplicity over
//! throughput). Nothing that may call user code runs under it: events, callbacks
//! and publish rules are called after it is released.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::num::NonZeroU16;
use std::sync::atomic::{AtomicU8, AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, oneshot, watch};

use super::Published;
use crate::client::middleware::{
    DeliveryReceipt, Layers, PublishRequest, SubscribeRequest, Subscribed, UnsubscribeRequest,
};
use crate::client::{
    Backend, BoxFuture, Client, ClientBuilder, ClientInfo, ConnectionState, EVENT_BUFFER, Event,
    FilterGrant, packet_size,
};
use crate::error::{PublishError, SubscribeError, UnsubscribeError, quote_input};
use crate::message::{Message, MessageParts};
use crate::qos::QoS;
use crate::topic::{TopicFilter, validate_topic_name};

/// [`ClientInfo::mode`] of a client on the fake.
pub(super) const MODE: &str = "fake";
/// The address a client on the fake reports, and its client id when its builder
/// has none.
pub(super) const ADDRESS: &str = "fake";
/// The reason of the [`Event::Disconnected`] that [`Broker::disconnect`] sends.
const CUT: &str = "the fake broker cut the connection";

/// Decides whether a publish fails: see `FakeBroker::fail_publishes_when`.
pub(super) type PublishRule = Arc<dyn Fn(&PublishRequest) -> Option<PublishError> + Send + Sync>;

/// What a `FakeBroker` and its clients share.
pub(super) struct Broker {
    state: Mutex<State>,
}

/// The failures asked for.
#[derive(Default)]
pub(super) struct Faults {
    pub(super) publish: VecDeque<PublishError>,
    pub(super) publish_rule: Option<PublishRule>,
    pub(super) subscribe: VecDeque<SubscribeError>,
    pub(super) unsubscribe: VecDeque<UnsubscribeError>,
    pub(super) refused: BTreeSet<String>,
    /// The highest QoS granted; `None` grants what is asked.
    pub(super) max_qos: Option<QoS>,
}

pub(super) struct State {
    connected: bool,
    /// Ids of sessions, subscriptions and routes.
    next_id: u64,
    /// The clients not stopped, by id.
    sessions: BTreeMap<u64, Arc<Session>>,
    subscriptions: BTreeMap<u64, Sub>,
    routes: BTreeMap<u64, Route>,
    /// Per session and filter: how many UNSUBSCRIBEs the client owes for filters
    /// `release` found unused. `release` already removed their routes; the
    /// UNSUBSCRIBE the client sends next must not remove a subscription made on the
    /// same filter meanwhile (by another task), as it would not on a broker that
    /// reads the client's packets in order.
    owed_unsubscribes: HashMap<(u64, String), usize>,
    /// Per shared filter: the member whose turn is next.
    share_turns: HashMap<String, usize>,
    pub(super) published: VecDeque<Published>,
    pub(super) retained: BTreeMap<String, MessageParts>,
    /// What waits for `reconnect`, in order.
    held: VecDeque<Held>,
    pub(super) faults: Faults,
    /// Bumped on every change a waiter may look for (a publish, a subscription).
    changes: watch::Sender<u64>,
}

/// One client on the fake: its part of the state that is not the broker's.
pub(super) struct Session {
    id: u64,
    /// The client's builder, without its middleware.
    settings: ClientBuilder,
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<Event>,
    /// A handle that does not keep the client running, for its events and
    /// callbacks. It holds the client, which holds this: taken when the client ends.
    handle: Mutex<Option<Client>>,
    /// The latest connect's session-present flag: 0 before the first, 1 false, 2
    /// true.
    session_present: AtomicU8,
    packet_ids: AtomicU16,
}

/// A subscription: one `SubscribeRequest`, one queue.
struct Sub {
    session: u64,
    request: SubscribeRequest,
}

/// One filter of a subscription.
struct Route {
    sub: u64,
    session: u64,
    filter: TopicFilter,
    granted: QoS,
}

/// Waiting for `reconnect`.
enum Held {
    /// A client's publish, not yet at the broker.
    Publish {
        session: Arc<Session>,
        request: PublishRequest,
        done: oneshot::Sender<Result<(), PublishError>>,
    },
    /// A QoS 1 or 2 message (injected, or a last will) the broker keeps for its
    /// subscribers.
    Inject {
        parts: MessageParts,
        receipts: oneshot::Sender<Vec<DeliveryReceipt>>,
    },
}

/// What became of an injected message.
pub(super) enum Injected {
    /// Handed to these subscriptions.
    Now(Vec<DeliveryReceipt>),
    /// Kept until the clients are connected again.
    Later(oneshot::Receiver<Vec<DeliveryReceipt>>),
}

/// How a client ends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// `Client::stop`.
    Stop,
    /// `Client::abort`.
    Abort,
    /// The last handle went away.
    Close,
    /// The connection was lost, and the client does not reconnect.
    Lost,
}

impl Ending {
    /// What the publishes still waiting for a connection fail with.
    fn error(self) -> PublishError {
        match self {
            Ending::Stop => PublishError::StoppedInFlight,
            Ending::Abort => PublishError::Aborted,
            Ending::Close => PublishError::Closed,
            Ending::Lost => PublishError::ConnectionLost,
        }
    }
}

/// Why a client waiting for the connection stopped waiting.
enum NotConnected {
    Stopped,
    Timeout(Duration),
}

impl Broker {
    pub(super) fn new() -> Self {
        Broker {
            state: Mutex::new(State {
                connected: true,
                next_id: 0,
                sessions: BTreeMap::new(),
                subscriptions: BTreeMap::new(),
                routes: BTreeMap::new(),
                owed_unsubscribes: HashMap::new(),
                share_turns: HashMap::new(),
                published: VecDeque::new(),
                retained: BTreeMap::new(),
                held: VecDeque::new(),
                faults: Faults::default(),
                changes: watch::channel(0).0,
            }),
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A client on this broker, with `builder`'s codec, middleware and timeouts.
    pub(super) fn client(self: &Arc<Self>, mut builder: ClientBuilder) -> Client {
        if builder.client_id.is_empty() {
            ADDRESS.clone_into(&mut builder.client_id);
        }
        let (session, connected) = {
            let mut state = self.lock();
            let id = state.next_id();
            let connected = state.connected;
            let session = Arc::new(Session {
                id,
                // The client runs the middleware; the session keeps the rest.
                settings: ClientBuilder {
                    layers: Layers::default(),
                    ..builder.clone()
                },
                state: watch::channel(if connected {
                    ConnectionState::Connected
                } else {
                    ConnectionState::Connecting
                })
                .0,
                events: broadcast::channel(EVENT_BUFFER).0,
                handle: Mutex::new(None),
                session_present: AtomicU8::new(if connected { 1 } else { 0 }),
                packet_ids: AtomicU16::new(0),
            });
            state.sessions.insert(id, session.clone());
            (session, connected)
        };
        let client = builder.build_on(FakeBackend {
            broker: self.clone(),
            session: session.clone(),
        });
        *session.handle() = Some(client.handle());
        if connected {
            session.on_connected(false, true);
        }
        client
    }

    /// Cut every client's connection: see `FakeBroker::disconnect`.
    pub(super) fn disconnect(&self) {
        let sessions: Vec<Arc<Session>> = {
            let mut state = self.lock();
            if !state.connected {
                return;
            }
            state.connected = false;
            let sessions: Vec<_> = state.sessions.values().cloned().collect();
            for session in &sessions {
                session.state.send_replace(ConnectionState::Disconnected);
                // No DISCONNECT came: the broker publishes the last will.
                state.publish_will(session);
            }
            sessions
        };
        for session in sessions {
            session.on_lost(CUT);
            if !session.settings.auto_reconnect {
                self.end(&session, Ending::Lost);
            }
        }
    }

    /// Connect every client again: see `FakeBroker::reconnect`.
    pub(super) fn reconnect(&self) {
        let sessions: Vec<(Arc<Session>, bool, bool)> = {
            let mut state = self.lock();
            if state.connected {
                return;
            }
            state.connected = true;
            let sessions = state
                .sessions
                .values()
                .map(|session| {
                    let first = session.session_present.load(Ordering::Acquire) == 0;
                    let present = !first && !session.settings.clean_session;
                    session
                        .session_present
                        .store(if present { 2 } else { 1 }, Ordering::Release);
                    session.state.send_replace(ConnectionState::Connected);
                    (session.clone(), present, first)
                })
                .collect();
            state.flush_held();
            sessions
        };
        for (session, present, first) in sessions {
            session.on_connected(present, first);
        }
    }

    pub(super) fn is_connected(&self) -> bool {
        self.lock().is_connected()
    }

    /// Hand `parts` to the matching subscriptions, or keep it for them while they
    /// are cut off; keep it as retained when flagged so.
    pub(super) fn inject(&self, parts: MessageParts) -> Injected {
        let mut state = self.lock();
        if parts.retained {
            state.retain(&parts);
        }
        state.route_or_hold(parts)
    }

    /// Changes to wait for; subscribe before looking at the state.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.lock().changes.subscribe()
    }

    /// End a client (once: later calls do nothing).
    fn end(&self, session: &Session, ending: Ending) {
        let was = {
            let mut state = self.lock();
            if state.sessions.remove(&session.id).is_none() {
                return;
            }
            let id = session.id;
            state.routes.retain(|_, route| route.session != id);
            state.prune();
            state.owed_unsubscribes.retain(|(owner, _), _| *owner != id);
            let held = std::mem::take(&mut state.held);
            for entry in held {
                match entry {
                    Held::Publish {
                        session: owner,
                        done,
                        ..
                    } if owner.id == id => {
                        let _ = done.send(Err(ending.error()));
                    }
                    other => state.held.push_back(other),
                }
            }
            // A crash: the broker publishes the client's last will (after a lost
            // connection, it did already).
            if ending == Ending::Abort && state.connected {
                state.publish_will(session);
            }
            state.changed();
            session.state.send_replace(ConnectionState::Stopped)
        };
        // As a connection's DISCONNECT (an abort sends none).
        if was == ConnectionState::Connected && matches!(ending, Ending::Stop | Ending::Close) {
            session.emit(Event::Disconnected {
                reason: "client stopped".to_owned(),
            });
        }
        session.emit(Event::Stopped);
        let handle = session.handle().take();
        drop(handle);
    }
}

impl State {
    pub(super) fn is_connected(&self) -> bool {
        self.connected
    }

    fn next_id(&mut self) -> u64 {
        self.next_id = self.next_id.wrapping_add(1);
        self.next_id
    }

    fn changed(&self) {
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// A publish reached the broker: record it, keep it if retained, route it (or
    /// keep it for the subscribers while they are cut off: a last will).
    fn accept(&mut self, from: &Session, request: PublishRequest) {
        let PublishRequest {
            topic,
            payload,
            qos,
            retain,
            properties,
            ..
        } = request;
        // MQTT 3.1.1 carries no user properties: subscribers get none.
        let mut parts = MessageParts::new(topic.clone(), payload.clone());
        parts.qos = qos;
        if retain {
            self.retain(&parts);
        }
        // A broker does not wait for its subscribers. (Cut off from them, it holds
        // a last will.)
        drop(self.route_or_hold(parts));
        self.published.push_back(Published {
            topic,
            payload,
            qos,
            retain,
            properties,
            client_id: from.settings.client_id.clone(),
            codec: from.settings.codec.clone(),
        });
        self.changed();
    }

    /// Publish `session`'s last will, if it has one, on its behalf.
    fn publish_will(&mut self, session: &Session) {
        if let Some(will) = &session.settings.last_will {
            let mut request = PublishRequest::new(will.topic.clone(), will.payload.clone());
            request.qos = will.qos;
            request.retain = will.retain;
            self.accept(session, request);
        }
    }

    /// Keep `parts` as its topic's retained message (an empty payload clears it).
    fn retain(&mut self, parts: &MessageParts) {
        if parts.payload.is_empty() {
            self.retained.remove(&parts.topic);
        } else {
            self.retained.insert(parts.topic.clone(), parts.clone());
        }
    }

    /// Route `parts` now, or keep it (QoS 1 and 2) for the clients while they are
    /// cut off.
    fn route_or_hold(&mut self, parts: MessageParts) -> Injected {
        if self.connected {
            return Injected::Now(self.route(&parts, false));
        }
        if parts.qos == QoS::AtMostOnce {
            // Nobody is connected to receive it, and a broker queues no QoS 0.
            return Injected::Now(Vec::new());
        }
        let (receipts, later) = oneshot::channel();
        self.held.push_back(Held::Inject { parts, receipts });
        Injected::Later(later)
    }

    /// Hand `parts` to every subscription matching its topic, and to one member of
    /// each shared group; `held`: it waited for a reconnect, which a clean session
    /// did not keep.
    fn route(&mut self, parts: &MessageParts, held: bool) -> Vec<DeliveryReceipt> {
        // Per subscription, the highest QoS granted among its matching filters.
        let mut targets: BTreeMap<u64, QoS> = BTreeMap::new();
        // Per shared filter: its members (clients) and their matching routes.
        let mut groups: BTreeMap<&str, Members> = BTreeMap::new();
        for route in self.routes.values() {
            if !route.filter.matches(&parts.topic) {
                continue;
            }
            let Some(session) = self.sessions.get(&route.session) else {
                continue;
            };
            if held && session.settings.clean_session {
                continue;
            }
            if route.filter.is_shared() {
                groups
                    .entry(route.filter.as_str())
                    .or_default()
                    .entry(route.session)
                    .or_default()
                    .push((route.sub, route.granted));
            } else {
                raise(&mut targets, route.sub, route.granted);
            }
        }
        for (filter, members) in groups {
            let turn = self.share_turns.entry(filter.to_owned()).or_insert(0);
            let chosen = members.values().nth(*turn % members.len().max(1));
            *turn = turn.wrapping_add(1);
            for (sub, granted) in chosen.into_iter().flatten() {
                raise(&mut targets, *sub, *granted);
            }
        }
        targets
            .into_iter()
            .filter_map(|(sub, granted)| self.deliver(sub, parts, granted, false))
            .collect()
    }

    /// Hand `parts` to one subscription, at no more than the `granted` QoS.
    fn deliver(
        &self,
        sub: u64,
        parts: &MessageParts,
        granted: QoS,
        retained: bool,
    ) -> Option<DeliveryReceipt> {
        let sub = self.subscriptions.get(&sub)?;
        let session = self.sessions.get(&sub.session)?;
        let mut parts = parts.clone();
        parts.qos = parts.qos.min(granted);
        parts.retained = retained;
        parts.packet_id = (parts.qos != QoS::AtMostOnce).then(|| session.next_packet_id());
        let message = Message::from_parts(parts, session.settings.codec.clone());
        Some(sub.request.deliver(message))
    }

    /// Grant the filters not refused, route them, and send the retained messages
    /// they match.
    fn subscribe(
        &mut self,
        session: u64,
        filters: Vec<(TopicFilter, QoS)>,
        request: SubscribeRequest,
    ) -> Result<Subscribed, SubscribeError> {
        let max = self.faults.max_qos.unwrap_or(QoS::ExactlyOnce);
        let grants: Vec<FilterGrant> = filters
            .iter()
            .map(|(filter, requested)| FilterGrant {
                filter: filter.as_str().to_owned(),
                requested: *requested,
                granted: (!self.faults.refused.contains(filter.as_str()))
                    .then(|| (*requested).min(max)),
            })
            .collect();
        if grants.iter().all(FilterGrant::is_refused) {
            return Err(SubscribeError::Rejected(
                grants.into_iter().map(|g| g.filter).collect(),
            ));
        }
        let sub = self.next_id();
        self.subscriptions.insert(sub, Sub { session, request });
        let mut routes = Vec::new();
        for ((filter, _), grant) in filters.into_iter().zip(&grants) {
            let Some(granted) = grant.granted else {
                continue;
            };
            let id = self.next_id();
            self.routes.insert(
                id,
                Route {
                    sub,
                    session,
                    filter,
                    granted,
                },
            );
            routes.push(id);
        }
        // Retained messages, once per subscription, flagged retained; none for
        // shared subscriptions (as MQTT 5 says).
        let retained: Vec<(MessageParts, QoS)> = self
            .retained
            .values()
            .filter_map(|parts| {
                routes
                    .iter()
                    .filter_map(|id| self.routes.get(id))
                    .filter(|r| !r.filter.is_shared() && r.filter.matches(&parts.topic))
                    .map(|r| r.granted)
                    .max()
                    .map(|granted| (parts.clone(), granted))
            })
            .collect();
        for (parts, granted) in retained {
            drop(self.deliver(sub, &parts, granted, true));
        }
        self.changed();
        Ok(Subscribed::new(grants, routes))
    }

    /// Remove a client's `routes` of a subscription it unsubscribes; the filters it
    /// no longer uses are returned, for the UNSUBSCRIBE that follows.
    fn release(&mut self, session: u64, routes: &[u64]) -> Vec<String> {
        let unused = self.remove_routes(session, routes);
        for filter in &unused {
            *self
                .owed_unsubscribes
                .entry((session, filter.clone()))
                .or_insert(0) += 1;
        }
        unused
    }

    /// Remove a client's `routes` of a subscription it dropped: nothing follows
    /// (the fake has no broker to tell).
    fn forget(&mut self, session: u64, routes: &[u64]) {
        self.remove_routes(session, routes);
    }

    /// Remove a client's `routes`; the filters it no longer uses are returned.
    fn remove_routes(&mut self, session: u64, routes: &[u64]) -> Vec<String> {
        let mut freed = BTreeSet::new();
        for id in routes {
            if self.routes.get(id).is_some_and(|r| r.session == session) {
                if let Some(route) = self.routes.remove(id) {
                    freed.insert(route.filter.as_str().to_owned());
                }
            }
        }
        self.prune();
        let unused: Vec<String> = freed
            .into_iter()
            .filter(|filter| !self.uses(session, filter))
            .collect();
        self.changed();
        unused
    }

    /// Of `filters`, those an UNSUBSCRIBE removes now: not those the client owed
    /// (see [`State::owed_unsubscribes`]).
    fn settle_owed(&mut self, session: u64, filters: &[String]) -> Vec<String> {
        filters
            .iter()
            .filter(|filter| {
                let key = (session, (*filter).clone());
                match self.owed_unsubscribes.get_mut(&key) {
                    Some(owed) if *owed > 1 => {
                        *owed -= 1;
                        false
                    }
                    Some(_) => {
                        self.owed_unsubscribes.remove(&key);
                        false
                    }
                    None => true,
                }
            })
            .cloned()
            .collect()
    }

    /// End a client's subscriptions on `filters`.
    fn remove_filters(&mut self, session: u64, filters: &[String]) {
        self.routes.retain(|_, route| {
            route.session != session || !filters.iter().any(|f| f == route.filter.as_str())
        });
        self.prune();
        self.changed();
    }

    /// Drop the subscriptions left without routes: their streams and handlers end.
    fn prune(&mut self) {
        let routes = &self.routes;
        self.subscriptions
            .retain(|id, _| routes.values().any(|route| route.sub == *id));
    }

    fn uses(&self, session: u64, filter: &str) -> bool {
        self.routes
            .values()
            .any(|route| route.session == session && route.filter.as_str() == filter)
    }

    /// Whether any client subscribes to exactly `filter`.
    pub(super) fn has_filter(&self, filter: &str) -> bool {
        self.routes
            .values()
            .any(|route| route.filter.as_str() == filter)
    }

    /// The filters subscribed to, of every client.
    pub(super) fn filters(&self) -> BTreeSet<String> {
        self.routes
            .values()
            .map(|route| route.filter.as_str().to_owned())
            .collect()
    }

    /// A client's filters, with the highest QoS granted on each.
    fn filters_of(&self, session: u64) -> BTreeMap<String, u8> {
        let mut filters = BTreeMap::new();
        for route in self.routes.values().filter(|r| r.session == session) {
            let qos = filters.entry(route.filter.as_str().to_owned()).or_insert(0);
            *qos = (*qos).max(route.granted.as_u8());
        }
        filters
    }

    /// A client's publishes waiting for the connection.
    fn in_flight(&self, session: u64) -> usize {
        self.held
            .iter()
            .filter(|held| matches!(held, Held::Publish { session: s, .. } if s.id == session))
            .count()
    }

    /// The clients are connected again: what waited goes out, in order.
    fn flush_held(&mut self) {
        while let Some(held) = self.held.pop_front() {
            match held {
                Held::Publish {
                    session,
                    request,
                    done,
                } => {
                    self.accept(&session, request);
                    let _ = done.send(Ok(()));
                }
                Held::Inject { parts, receipts } => {
                    let _ = receipts.send(self.route(&parts, true));
                }
            }
        }
    }
}

/// The members of a shared group, by session: their subscriptions and the QoS
/// granted to each.
type Members = BTreeMap<u64, Vec<(u64, QoS)>>;

/// Raise `sub`'s QoS in `targets` to at least `granted`.
fn raise(targets: &mut BTreeMap<u64, QoS>, sub: u64, granted: QoS) {
    let qos = targets.entry(sub).or_insert(granted);
    *qos = (*qos).max(granted);
}

impl Session {
    fn handle(&self) -> MutexGuard<'_, Option<Client>> {
        self.handle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn client(&self) -> Option<Client> {
        self.handle().clone()
    }

    fn next_packet_id(&self) -> NonZeroU16 {
        let n = self.packet_ids.fetch_add(1, Ordering::Relaxed);
        NonZeroU16::new(n % u16::MAX + 1).unwrap_or(NonZeroU16::MIN)
    }

    /// Through the client, so that its `on_event` callbacks see it too.
    fn emit(&self, event: Event) {
        match self.client() {
            Some(client) => client.emit(event),
            None => {
                let _ = self.events.send(event);
            }
        }
    }

    /// Connected (again): the event and the callbacks, as a connection sends them.
    fn on_connected(&self, session_present: bool, first: bool) {
        let client = self.client();
        if let (false, Some(callback), Some(client)) = (first, &self.settings.on_reconnect, &client)
        {
            spawn(callback(client.clone(), 1));
        }
        self.emit(Event::Connected { session_present });
        if let (Some(callback), Some(client)) = (&self.settings.on_connect, client) {
            spawn(callback(client, session_present));
        }
    }

    /// The connection was lost.
    fn on_lost(&self, reason: &str) {
        self.emit(Event::Disconnected {
            reason: reason.to_owned(),
        });
        if let (Some(callback), Some(client)) = (&self.settings.on_connection_lost, self.client()) {
            spawn(callback(client, reason.to_owned()));
        }
    }
}

/// Run a callback on the current runtime (outside one, the client is going away).
fn spawn(future: BoxFuture<'static, ()>) {
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        drop(runtime.spawn(future));
    }
}

/// The backend of one client on the fake.
struct FakeBackend {
    broker: Arc<Broker>,
    session: Arc<Session>,
}

impl FakeBackend {
    fn alive(&self, state: &State) -> bool {
        state.sessions.contains_key(&self.session.id)
    }

    /// Wait until connected, within the write timeout, as a connection waits for
    /// its acknowledgement.
    async fn wait_connected(&self) -> Result<(), NotConnected> {
        let timeout = self.session.settings.write_timeout;
        let mut state = self.session.state.subscribe();
        let waited = tokio::time::timeout(
            timeout,
            state.wait_for(|s| s.is_connected() || *s == ConnectionState::Stopped),
        )
        .await;
        match waited {
            Ok(Ok(s)) if s.is_connected() => Ok(()),
            Ok(_) => Err(NotConnected::Stopped),
            Err(_) => Err(NotConnected::Timeout(timeout)),
        }
    }

    async fn run_publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        let settings = &self.session.settings;
        validate_topic_name(&request.topic).map_err(|source| PublishError::InvalidTopic {
            topic: quote_input(&request.topic),
            source,
        })?;
        let size = packet_size(request.topic.len(), request.payload.len(), request.qos);
        let max = settings.max_packet_size;
        if size > max {
            return Err(PublishError::PacketTooLarge { size, max });
        }
        let timeout = request.timeout.unwrap_or(settings.write_timeout);
        let rule = {
            let mut state = self.broker.lock();
            if !self.alive(&state) {
                return Err(PublishError::Closed);
            }
            if let Some(error) = state.faults.publish.pop_front() {
                return Err(error);
            }
            state.faults.publish_rule.clone()
        };
        // Outside the lock: the rule is the test's code.
        if let Some(error) = rule.and_then(|rule| rule(&request)) {
            return Err(error);
        }
        let done = {
            let mut state = self.broker.lock();
            if !self.alive(&state) {
                return Err(PublishError::Closed);
            }
            if state.connected {
                state.accept(&self.session, request);
                return Ok(());
            }
            let (done, waiter) = oneshot::channel();
            state.held.push_back(Held::Publish {
                session: self.session.clone(),
                request,
                done,
            });
            waiter
        };
        // Like a connection's: the publish stays queued when the wait times out.
        match tokio::time::timeout(timeout, done).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(PublishError::Closed),
            Err(_) => Err(PublishError::Timeout(timeout)),
        }
    }

    async fn run_subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        let filters = request.parse_filters()?;
        {
            let mut state = self.broker.lock();
            if !self.alive(&state) {
                return Err(SubscribeError::Closed);
            }
            if let Some(error) = state.faults.subscribe.pop_front() {
                return Err(error);
            }
        }
        self.wait_connected().await.map_err(|e| match e {
            NotConnected::Stopped => SubscribeError::Closed,
            NotConnected::Timeout(t) => SubscribeError::Timeout(t),
        })?;
        let mut state = self.broker.lock();
        if !self.alive(&state) {
            return Err(SubscribeError::Closed);
        }
        state.subscribe(self.session.id, filters, request)
    }

    async fn run_unsubscribe(&self, request: UnsubscribeRequest) -> Result<(), UnsubscribeError> {
        request.validate()?;
        let filters = request.filters;
        {
            let mut state = self.broker.lock();
            if !self.alive(&state) {
                return Err(UnsubscribeError::Closed);
            }
            let removed = state.settle_owed(self.session.id, &filters);
            if let Some(error) = state.faults.unsubscribe.pop_front() {
                return Err(error);
            }
            // Like a connection: the subscriptions end at once, the answer may wait.
            state.remove_filters(self.session.id, &removed);
        }
        self.wait_connected().await.map_err(|e| match e {
            NotConnected::Stopped => UnsubscribeError::Closed,
            NotConnected::Timeout(t) => UnsubscribeError::Timeout(t),
        })
    }
}

impl Backend for FakeBackend {
    fn publish(&self, request: PublishRequest) -> BoxFuture<'_, Result<(), PublishError>> {
        Box::pin(self.run_publish(request))
    }

    fn subscribe(
        &self,
        request: SubscribeRequest,
    ) -> BoxFuture<'_, Result<Subscribed, SubscribeError>> {
        Box::pin(self.run_subscribe(request))
    }

    fn unsubscribe(
        &self,
        request: UnsubscribeRequest,
    ) -> BoxFuture<'_, Result<(), UnsubscribeError>> {
        Box::pin(self.run_unsubscribe(request))
    }

    fn release(&self, routes: &[u64]) -> Vec<String> {
        self.broker.lock().release(self.session.id, routes)
    }

    fn forget(&self, routes: &[u64]) {
        self.broker.lock().forget(self.session.id, routes);
    }

    fn stop(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.broker.end(&self.session, Ending::Stop) })
    }

    fn abort(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move { self.broker.end(&self.session, Ending::Abort) })
    }

    fn close(&self) {
        self.broker.end(&self.session, Ending::Close);
    }

    fn state(&self) -> watch::Receiver<ConnectionState> {
        self.session.state.subscribe()
    }

    fn events(&self) -> &broadcast::Sender<Event> {
        &self.session.events
    }

    fn info(&self) -> ClientInfo {
        let settings = &self.session.settings;
        let mut info = ClientInfo::new(MODE, settings.client_id.clone());
        info.addresses = vec![ADDRESS.to_owned()];
        info.clean_session = settings.clean_session;
        info.auto_reconnect = settings.auto_reconnect;
        info.connected = self.session.state.borrow().is_connected();
        info.session_present = self.session_present();
        let state = self.broker.lock();
        info.subscriptions = state.filters_of(self.session.id);
        info.publishes_in_flight = state.in_flight(self.session.id);
        info
    }

    fn publishes_in_flight(&self) -> usize {
        self.broker.lock().in_flight(self.session.id)
    }

    fn address(&self) -> String {
        ADDRESS.to_owned()
    }

    fn session_present(&self) -> Option<bool> {
        match self.session.session_present.load(Ordering::Acquire) {
            0 => None,
            flag => Some(flag == 2),
        }
    }
}
