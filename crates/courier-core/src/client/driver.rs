//! The background task: polls the connection [`Engine`], turns its events into
//! resolved publishes, subscription acknowledgements and deliveries, and reconnects
//! with backoff.
//!
//! While connected the task stops when the engine reports the DISCONNECT it was asked
//! to send, so that the DISCONNECT goes out; while connecting or backing off it stops
//! by cancellation.

use std::num::NonZeroU16;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use rumqttc::{
    ConnectReturnCode, Event as WireEvent, Login, Outgoing, Packet, Publish, QoS as WireQoS,
    SubscribeReasonCode,
};
use tokio::sync::oneshot;
use tokio::time::timeout;
use tracing::Instrument as _;

use super::engine::{Engine, LinkError, Polled, TooLarge};
use super::events::{ConnectionState, Event};
use super::inbound::Admission;
use super::lifecycle::deadline_after;
use super::options::check_credentials;
use super::outbound::Settled;
use super::publish::wire_qos;
use super::router::{Ack, Delivery, Offer, Sink, Unmatched};
use super::{Client, Shared};
use crate::error::{ConnectError, PublishError, RefusedReason};
use crate::message::{Message, MessageParts};
use crate::qos::QoS;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    engine: Engine,
    /// Reports the first connect's outcome to `connect()`; `None` for `start()`.
    first: Option<oneshot::Sender<Result<(), ConnectError>>>,
    targets: Vec<Sink>,
    /// A subscriber was handed a QoS 1/2 message since the driver last yielded.
    consumers_woken: bool,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        engine: Engine,
        first: Option<oneshot::Sender<Result<(), ConnectError>>>,
    ) -> Self {
        Driver {
            shared,
            engine,
            first,
            targets: Vec::new(),
            consumers_woken: false,
        }
    }

    pub(crate) async fn run(mut self) {
        let fail_fast = self.first.is_some();
        // Failed attempts since the last CONNACK (or the start): numbers attempts.
        let mut failures: u32 = 0;
        // Connections in a row that ended within `stable_after` of their
        // CONNACK: each counts as one more failure for the backoff delay.
        let mut unstable: u32 = 0;
        let mut ever_connected = false;
        let ending = loop {
            let attempt = failures.saturating_add(1);
            if ever_connected {
                self.shared
                    .state
                    .send_replace(ConnectionState::Reconnecting);
                self.callback_reconnect(attempt);
            }
            let shutdown = self.shared.shutdown.clone();
            let result = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break Ending::Graceful,
                r = self.connect_once() => r,
            };
            let connected_at = match result {
                Ok(session_present) => {
                    failures = 0;
                    if !ever_connected {
                        self.hold_unmatched();
                    }
                    ever_connected = true;
                    self.on_connected(session_present);
                    if let Some(first) = self.first.take() {
                        let _ = first.send(Ok(()));
                    }
                    tokio::time::Instant::now()
                }
                Err(error) => {
                    failures = failures.saturating_add(1);
                    let opts = &self.shared.opts;
                    tracing::warn!(
                        client_id = %opts.builder.client_id,
                        broker = %opts.broker(),
                        attempt,
                        %error,
                        "courier: connect attempt failed"
                    );
                    if fail_fast && !ever_connected {
                        if let Some(first) = self.first.take() {
                            let _ = first.send(Err(error));
                        }
                        break Ending::Lost;
                    }
                    let refused = error.refused_reason();
                    self.shared.emit(Event::ConnectFailed {
                        attempt,
                        error: Arc::new(error),
                    });
                    if let Some(reason) =
                        refused.filter(|_| !self.shared.opts.builder.retry_refused)
                    {
                        tracing::warn!(
                            client_id = %opts.builder.client_id,
                            broker = %opts.broker(),
                            %reason,
                            "courier: the broker refused the connection; not retrying (retry_refused is off)"
                        );
                        *self
                            .shared
                            .refused
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(reason);
                        break Ending::Lost;
                    }
                    let step = failures.saturating_add(unstable);
                    if self
                        .back_off(ever_connected, step, failures.saturating_add(1))
                        .await
                        .is_break()
                    {
                        break Ending::Graceful;
                    }
                    continue;
                }
            };
            let Some(lost) = self.serve().await else {
                // Our DISCONNECT went out.
                self.shared
                    .state
                    .send_replace(ConnectionState::Disconnected);
                self.shared.emit(Event::Disconnected {
                    reason: "client stopped".to_owned(),
                });
                break Ending::Graceful;
            };
            let lived = connected_at.elapsed();
            let stable = lived >= self.shared.opts.builder.stable_after;
            self.on_connection_lost(lost, lived, stable);
            if !self.shared.opts.builder.auto_reconnect || self.shared.shutdown.is_cancelled() {
                break if self.shared.shutdown.is_cancelled() {
                    Ending::Graceful
                } else {
                    Ending::Lost
                };
            }
            if stable {
                unstable = 0;
            } else {
                // A connection that died right after CONNACK counts as a failed
                // attempt for the backoff: without this, a broker that closes every
                // connection at once (a session takeover, garbage after CONNACK) is
                // reconnected to in a tight loop.
                unstable = unstable.saturating_add(1);
                if self.back_off(true, unstable, 1).await.is_break() {
                    break Ending::Graceful;
                }
            }
        };
        finish(&self.shared, ending);
    }

    /// Wait out the backoff delay `step` (the failures in a row: the reconnect
    /// backoff once connected, the start backoff before) before attempt `next`,
    /// saying so with [`Event::Reconnecting`]. `Break` when the client is stopped
    /// meanwhile.
    async fn back_off(&mut self, ever_connected: bool, step: u32, next: u32) -> ControlFlow<()> {
        let b = &self.shared.opts.builder;
        let backoff = if ever_connected {
            &b.reconnect_backoff
        } else {
            &b.start_backoff
        };
        let delay = backoff.delay(step);
        self.shared.state.send_replace(if ever_connected {
            ConnectionState::Disconnected
        } else {
            ConnectionState::Connecting
        });
        self.shared.emit(Event::Reconnecting {
            attempt: next,
            delay,
        });
        tokio::select! {
            biased;
            _ = self.shared.shutdown.cancelled() => ControlFlow::Break(()),
            _ = tokio::time::sleep(delay) => ControlFlow::Continue(()),
        }
    }

    /// Open the hold period for messages no subscription matches yet (see
    /// [`router`](super::router)), and release what is still held when it ends.
    fn hold_unmatched(&self) {
        let until = deadline_after(self.shared.opts.builder.unrouted_hold);
        self.shared.router_write().hold_until(until);
        let shared = self.shared.clone();
        let release = async move {
            tokio::select! {
                _ = shared.shutdown.cancelled() => return,
                () = tokio::time::sleep_until(until) => {}
            }
            let unclaimed = shared
                .router_write()
                .release_held(tokio::time::Instant::now());
            for delivery in unclaimed {
                report_unclaimed(&shared, delivery);
            }
        };
        // In the connection's span, as the driver: its warnings name the client.
        tokio::spawn(release.in_current_span());
    }

    async fn connect_once(&mut self) -> Result<bool, ConnectError> {
        let b = &self.shared.opts.builder;
        if let Some(provider) = &b.credential_provider {
            let creds = timeout(b.credential_timeout, provider.credentials())
                .await
                .map_err(|_| ConnectError::Credentials("credential provider timed out".into()))?
                .map_err(ConnectError::Credentials)?;
            check_credentials(&creds).map_err(|e| ConnectError::Credentials(Box::new(e)))?;
            self.engine.login = Some(Login::new(
                creds.username(),
                creds.password().unwrap_or_default(),
            ));
        }
        // Safe to cancel: until CONNACK, the engine keeps no connection state.
        let opts = &self.shared.opts;
        match timeout(b.connect_timeout, self.engine.connect(opts)).await {
            Err(_) => Err(ConnectError::Timeout {
                broker: opts.broker(),
                timeout: b.connect_timeout,
            }),
            Ok(result) => result.map_err(|error| classify(error, opts.broker())),
        }
    }

    fn on_connected(&mut self, session_present: bool) {
        let shared = &self.shared;
        tracing::info!(session_present, client_id = %shared.opts.builder.client_id, "courier: connected");
        shared
            .session_present
            .store(1 + u8::from(session_present), Ordering::Release);
        if !session_present {
            shared.inbound.on_session_lost();
        }
        let active: Vec<_> = shared
            .router_read()
            .subscriptions()
            .into_iter()
            .map(|(filter, qos)| (filter, wire_qos(qos)))
            .collect();
        let mut first = shared.outbound().on_connack(
            session_present,
            shared.opts.builder.session_loss,
            &active,
        );
        first.extend(self.engine.pending.drain(..));
        self.engine.pending = first;
        shared.state.send_replace(ConnectionState::Connected);
        shared.emit(Event::Connected { session_present });
        if let Some(callback) = &shared.opts.builder.on_connect {
            tokio::spawn(callback(Client::unowned(shared.clone()), session_present));
        }
    }

    /// Poll the connection until it ends: `None` after our DISCONNECT, or why it was
    /// lost.
    async fn serve(&mut self) -> Option<Lost> {
        let Some(ack_timeout) = self.shared.opts.builder.ack_timeout else {
            loop {
                let polled = self.engine.poll().await;
                if let ControlFlow::Break(end) = self.on_polled(polled).await {
                    return end;
                }
            }
        };
        // With the ack watchdog on, a forced reconnect interrupts the poll (which is
        // cancel safe); `clean()` keeps every unacknowledged publish for retransmission.
        loop {
            let shared = self.shared.clone();
            let polled = tokio::select! {
                biased;
                _ = shared.force_reconnect.notified() => {
                    self.engine.clean();
                    return Some(Lost {
                        reason: format!("no acknowledgement within {ack_timeout:?}"),
                        by_broker: false,
                    });
                }
                polled = self.engine.poll() => polled,
            };
            if let ControlFlow::Break(end) = self.on_polled(polled).await {
                return end;
            }
        }
    }

    /// Handle what one poll of the engine gave; `Break` ends [`serve`](Self::serve)
    /// with its outcome.
    async fn on_polled(&mut self, polled: Result<Polled, LinkError>) -> ControlFlow<Option<Lost>> {
        match polled.map(|polled| self.handle_polled(polled)) {
            Ok(Next::Poll) => {}
            Ok(Next::Yield) => {
                self.consumers_woken = false;
                self.yield_to_publisher().await;
            }
            Ok(Next::YieldAtBatchEnd) => self.consumers_woken = true,
            Ok(Next::Stop) => return ControlFlow::Break(None),
            Err(error) => return ControlFlow::Break(Some(Lost::from(&error))),
        }
        if self.consumers_woken && !self.engine.has_events() {
            self.consumers_woken = false;
            tokio::task::yield_now().await;
        }
        ControlFlow::Continue(())
    }

    /// Let the publisher just settled run, and resume as soon as it has queued its
    /// next request (or, if it queues none, once the runtime comes back to the
    /// yield).
    async fn yield_to_publisher(&mut self) {
        let requests = &self.shared.requests;
        std::future::poll_fn(|cx| {
            requests.wake_on_next(cx.waker());
            std::task::Poll::Ready(())
        })
        .await;
        tokio::task::yield_now().await;
        requests.stop_waiting();
    }

    /// Account for a connection that ended, `lived` after its CONNACK; not
    /// `stable` when that was under `ClientBuilder::stable_after`.
    fn on_connection_lost(&mut self, lost: Lost, lived: Duration, stable: bool) {
        let Lost { reason, by_broker } = lost;
        let opts = &self.shared.opts;
        tracing::warn!(
            client_id = %opts.builder.client_id,
            broker = %opts.broker(),
            %reason,
            ?lived,
            "courier: connection lost"
        );
        if by_broker && !stable {
            tracing::warn!(
                client_id = %opts.builder.client_id,
                ?lived,
                "courier: the broker closed the connection right after accepting it: \
                 is another client connected with the same client id?"
            );
            self.shared.emit(Event::SessionTakenOver { lived });
        }
        // Events rumqttc buffered before the failure belong to the old connection
        // (rumqttc keeps them across `clean()`): account for them now, or the first
        // poll after the next CONNACK would map them onto the replayed requests.
        while let Some(polled) = self.engine.next_buffered() {
            self.handle_polled(polled);
        }
        self.shared.inbound.on_connection_lost();
        drop(self.shared.router_write().drop_held_qos1());
        let collision = self.engine.state.collision.take();
        self.shared
            .outbound()
            .on_disconnect(&mut self.engine.pending, collision);
        self.shared
            .state
            .send_replace(ConnectionState::Disconnected);
        self.shared.emit(Event::Disconnected {
            reason: reason.clone(),
        });
        if let Some(callback) = &self.shared.opts.builder.on_connection_lost {
            tokio::spawn(callback(Client::unowned(self.shared.clone()), reason));
        }
    }

    fn callback_reconnect(&self, attempt: u32) {
        if let Some(callback) = &self.shared.opts.builder.on_reconnect {
            tokio::spawn(callback(Client::unowned(self.shared.clone()), attempt));
        }
    }

    fn handle_polled(&mut self, polled: Polled) -> Next {
        match polled {
            Polled::Wire(event) => self.handle(event),
            Polled::TooLarge(too_large) => {
                self.on_too_large(too_large);
                Next::Poll
            }
        }
    }

    /// A message over `max_packet_size` was skipped: acknowledge it (in its turn,
    /// like any message) so that the broker does not send it again on every
    /// reconnect, and report it.
    fn on_too_large(&mut self, too_large: TooLarge) {
        let TooLarge {
            topic,
            qos: wire,
            pkid,
            size,
        } = too_large;
        let shared = &self.shared;
        if wire != WireQoS::AtMostOnce {
            match shared.inbound.admit(pkid, wire) {
                Admission::Deliver => shared.inbound.register(pkid, wire, 1).token().consume(),
                Admission::AckAgain => {
                    shared.inbound.send_ack(pkid, wire);
                    return;
                }
                Admission::Ignore => return,
            }
        }
        let max = shared.opts.builder.max_packet_size;
        let qos = from_wire(wire);
        tracing::warn!(
            %topic,
            %qos,
            size,
            max,
            client_id = %shared.opts.builder.client_id,
            "courier: a message over max_packet_size was acknowledged and dropped"
        );
        shared.emit(Event::MessageTooLarge {
            topic,
            qos,
            size,
            max,
        });
    }

    fn handle(&mut self, event: WireEvent) -> Next {
        match event {
            WireEvent::Incoming(Packet::Publish(publish)) => return self.on_message(publish),
            WireEvent::Incoming(Packet::PubAck(ack)) => {
                let settled = self.shared.outbound().on_puback(ack.pkid);
                return settle(settled);
            }
            WireEvent::Incoming(Packet::PubRec(rec)) => self.shared.outbound().on_pubrec(rec.pkid),
            WireEvent::Incoming(Packet::PubComp(comp)) => {
                let settled = self.shared.outbound().on_pubcomp(comp.pkid);
                return settle(settled);
            }
            WireEvent::Incoming(Packet::PubRel(rel)) => self.shared.inbound.on_pubrel(rel.pkid),
            WireEvent::Incoming(Packet::SubAck(ack)) => {
                let codes = ack
                    .return_codes
                    .iter()
                    .map(|code| match code {
                        SubscribeReasonCode::Success(qos) => Some(*qos as u8),
                        SubscribeReasonCode::Failure => None,
                    })
                    .collect();
                self.shared.outbound().on_suback(ack.pkid, codes);
            }
            WireEvent::Incoming(Packet::UnsubAck(ack)) => {
                self.shared.outbound().on_unsuback(ack.pkid)
            }
            WireEvent::Outgoing(Outgoing::Publish(pkid)) => {
                let settled = self.shared.outbound().on_publish_sent(pkid);
                return settle(settled);
            }
            WireEvent::Outgoing(Outgoing::AwaitAck(pkid)) => {
                self.shared.outbound().on_collision(pkid)
            }
            WireEvent::Outgoing(Outgoing::Subscribe(pkid)) => {
                self.shared.outbound().on_subscribe_sent(pkid)
            }
            WireEvent::Outgoing(Outgoing::Unsubscribe(pkid)) => {
                self.shared.outbound().on_unsubscribe_sent(pkid)
            }
            WireEvent::Outgoing(Outgoing::Disconnect) => return Next::Stop,
            _ => {}
        }
        Next::Poll
    }

    fn on_message(&mut self, publish: Publish) -> Next {
        let shared = &self.shared;
        match shared.inbound.admit(publish.pkid, publish.qos) {
            Admission::Deliver => {}
            Admission::AckAgain => {
                shared.inbound.send_ack(publish.pkid, publish.qos);
                return Next::Poll;
            }
            Admission::Ignore => return Next::Poll,
        }
        let qos = from_wire(publish.qos);
        let (pkid, wire) = (publish.pkid, publish.qos);
        let mut parts = MessageParts::new(publish.topic, publish.payload);
        parts.qos = qos;
        parts.retained = publish.retain;
        parts.duplicate = publish.dup;
        parts.packet_id = NonZeroU16::new(pkid);
        let message = Message::from_parts(parts, shared.opts.builder.codec.clone());
        shared
            .router_read()
            .matching(message.topic(), &mut self.targets);
        if self.targets.is_empty() {
            return self.on_unmatched(message, pkid, wire);
        }
        let registered = (qos != QoS::AtMostOnce)
            .then(|| shared.inbound.register(pkid, wire, self.targets.len()));
        let mut next = Next::Poll;
        for sink in self.targets.drain(..) {
            let delivery = Delivery {
                charge: shared.budget.charge(&message),
                message: message.clone(),
                ack: registered.as_ref().map(|r| Ack::Broker(r.token())),
            };
            match sink.offer(delivery) {
                // A QoS 0 message has no ack to join the write: no yield (it cost
                // 1.4x the CPU per message in the QoS 0 row).
                Offer::Queued if registered.is_some() => next = Next::YieldAtBatchEnd,
                Offer::Queued => {}
                Offer::Dropped(Some(dropped)) => shared.emit(Event::SlowConsumer {
                    filter: sink.label().to_owned(),
                    dropped,
                }),
                Offer::Dropped(None) | Offer::Stopping => {}
            }
        }
        next
    }

    /// A message no subscription matched: held for one to come, given to the
    /// fallback handler, or reported and acknowledged.
    fn on_unmatched(&mut self, message: Message, pkid: u16, wire: WireQoS) -> Next {
        let shared = &self.shared;
        let registered =
            (message.qos() != QoS::AtMostOnce).then(|| shared.inbound.register(pkid, wire, 1));
        let delivery = Delivery {
            charge: shared.budget.charge(&message),
            message,
            ack: registered.as_ref().map(|r| Ack::Broker(r.token())),
        };
        let placed = shared.router_write().place_unmatched(
            delivery,
            tokio::time::Instant::now(),
            shared.opts.builder.subscription_buffer,
        );
        match placed {
            Unmatched::Routed(Offer::Queued) | Unmatched::Fallback(Offer::Queued)
                if registered.is_some() =>
            {
                Next::YieldAtBatchEnd
            }
            Unmatched::Unclaimed(delivery) => {
                report_unclaimed(shared, delivery);
                Next::Poll
            }
            _ => Next::Poll,
        }
    }
}

/// Acknowledge a message nobody takes, and say so.
fn report_unclaimed(shared: &Shared, delivery: Delivery) {
    let topic = delivery.message.topic().to_owned();
    let qos = delivery.message.qos();
    tracing::warn!(
        %topic,
        %qos,
        client_id = %shared.opts.builder.client_id,
        "courier: no subscription for a message; acknowledged and dropped (set an unrouted_handler to receive such messages)"
    );
    drop(delivery);
    shared.emit(Event::Unrouted { topic, qos });
}

/// Why an established connection ended.
struct Lost {
    /// In words, for `Event::Disconnected` and the logs.
    reason: String,
    /// The broker closed (or reset) the connection, with no error on this side.
    by_broker: bool,
}

impl From<&LinkError> for Lost {
    fn from(error: &LinkError) -> Self {
        let by_broker = match error {
            LinkError::Closed => true,
            LinkError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        };
        Lost {
            reason: error.to_string(),
            by_broker,
        }
    }
}

/// What the driver does after handling an event.
enum Next {
    Poll,
    /// A publisher was woken by its acknowledgement: let it run before polling on.
    /// It usually publishes again at once, and that request joins this round of
    /// writes instead of waiting for the next. Without this, N publishing tasks fall
    /// into lock-step with the broker (measured: 0.7-0.8 of raw rumqttc's msg/s at 16
    /// and 128 tasks, 1.0-1.3 with it). Its request wakes the driver directly
    /// ([`RequestQueue::wake_on_next`](super::requests::RequestQueue::wake_on_next)):
    /// a plain yield resumed only after the worker thread had gone searching for
    /// work and woken the other one (16 tasks: 132k-141k msg/s against 168k-173k;
    /// commit ae721b6).
    Yield,
    /// A subscriber was handed a QoS 1/2 message: let it run once the events of
    /// this read are handed out, before the engine writes, so that the acks of the
    /// whole batch join that write. A yield per message cost a wake-up of the other
    /// worker thread each (measured in the dispatch row: 0.98-0.99 of raw rumqttc's
    /// msg/s with a yield per message, 1.16-1.17 with one per batch).
    YieldAtBatchEnd,
    /// The client's DISCONNECT was sent.
    Stop,
}

fn from_wire(qos: WireQoS) -> QoS {
    match qos {
        WireQoS::AtMostOnce => QoS::AtMostOnce,
        WireQoS::AtLeastOnce => QoS::AtLeastOnce,
        WireQoS::ExactlyOnce => QoS::ExactlyOnce,
    }
}

/// Notify a settled publish (outside the outbound lock, which the caller released).
fn settle(settled: Option<Settled>) -> Next {
    if settled.is_some_and(Settled::notify) {
        Next::Yield
    } else {
        Next::Poll
    }
}

/// The [`ConnectError`] for why an attempt to connect to `broker` failed.
fn classify(error: LinkError, broker: String) -> ConnectError {
    match error {
        LinkError::Refused(code) => ConnectError::Refused {
            broker,
            reason: match code {
                ConnectReturnCode::RefusedProtocolVersion => {
                    RefusedReason::UnacceptableProtocolVersion
                }
                ConnectReturnCode::BadClientId => RefusedReason::IdentifierRejected,
                ConnectReturnCode::ServiceUnavailable => RefusedReason::ServerUnavailable,
                ConnectReturnCode::BadUserNamePassword => RefusedReason::BadUserNamePassword,
                ConnectReturnCode::NotAuthorized | ConnectReturnCode::Success => {
                    RefusedReason::NotAuthorized
                }
            },
        },
        LinkError::Dns { source, .. } => ConnectError::Dns { broker, source },
        LinkError::Io(source) => ConnectError::Tcp { broker, source },
        #[cfg(feature = "tls")]
        LinkError::Tls(e) => ConnectError::Tls {
            broker,
            source: unwrap_io(e),
        },
        LinkError::NotMqtt(first_bytes) => ConnectError::NotMqtt {
            broker,
            first_bytes,
        },
        LinkError::ClosedBeforeConnAck(source) => {
            ConnectError::ClosedBeforeConnAck { broker, source }
        }
        LinkError::Transport(source) => ConnectError::Transport { broker, source },
        LinkError::Proxy { proxy, source } => ConnectError::Proxy {
            broker,
            proxy,
            source,
        },
        LinkError::ProxyRefused { proxy, status } => ConnectError::ProxyRefused {
            broker,
            proxy,
            status,
        },
        #[cfg(feature = "websocket")]
        LinkError::WebSocket { status, source } => ConnectError::WebSocket {
            broker,
            status,
            source,
        },
        other => ConnectError::Protocol {
            broker,
            source: Box::new(other),
        },
    }
}

/// The error an `io::Error` wraps (e.g. a `rustls::Error`), so that it is the source
/// one can downcast; the `io::Error` itself when it wraps none.
#[cfg(feature = "tls")]
fn unwrap_io(error: std::io::Error) -> crate::error::BoxError {
    if error.get_ref().is_none() {
        return Box::new(error);
    }
    let kind = error.kind();
    error
        .into_inner()
        .unwrap_or_else(|| Box::new(std::io::Error::from(kind)))
}

/// How the client ended, which decides what its unfinished publishes fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    /// Stopped: [`PublishError::StoppedInFlight`].
    Graceful,
    /// The connection was lost for good: [`PublishError::ConnectionLost`].
    Lost,
    /// [`Client::abort`]: [`PublishError::Aborted`].
    Aborted,
}

/// Wind down: fail whatever is still waiting, end every subscription, mark stopped.
pub(crate) fn finish(shared: &Shared, ending: Ending) {
    let ending = if shared.aborted.load(Ordering::Acquire) {
        Ending::Aborted
    } else {
        ending
    };
    shared.closing.store(true, Ordering::Release);
    shared.shutdown.cancel();
    shared.requests.close();
    shared.window.close();
    shared.qos0_window.close();
    shared.outbound().fail_all(|| match ending {
        Ending::Graceful => PublishError::StoppedInFlight,
        Ending::Lost => PublishError::ConnectionLost,
        Ending::Aborted => PublishError::Aborted,
    });
    shared.inbound.on_session_lost();
    let _ = shared.consumers.close();
    shared.consumers.cancel_running();
    shared.router_write().clear();
    if shared.state.send_replace(ConnectionState::Stopped) != ConnectionState::Stopped {
        tracing::info!(client_id = %shared.opts.builder.client_id, "courier: stopped");
        shared.emit(Event::Stopped);
    }
}
