//! Inbound bookkeeping: acknowledge each received QoS 1/2 message once every
//! subscriber took it, in the order the messages arrived [MQTT-4.6.0-2/3], and
//! deliver a QoS 2 message once however often the broker re-sends it before PUBREL.
//!
//! The client runs rumqttc with manual acknowledgements: a message is acknowledged
//! only after its handlers finished or its streams yielded it, so the broker's own
//! in-flight window holds back further messages while consumers are slow, and a
//! crash before that point gets the message redelivered.
//!
//! While [`Client::stop`](super::Client::stop) winds down, a message dropped
//! without being consumed (left in a queue, or its handler cancelled) is abandoned:
//! not acknowledged, so the broker delivers it again in the next session, and no
//! longer holding back the acknowledgements of the messages after it.
//!
//! A PUBREC answers a PUBLISH received on the current connection. When the
//! connection that brought a QoS 2 message is gone by the time its consumers are
//! done, no PUBREC is sent: the broker re-sends the PUBLISH after reconnecting
//! [MQTT-4.4.0-1] and the re-send is answered. An unsolicited PUBREC can be taken
//! for a message the broker still holds in its queue: Mosquitto answers it with
//! PUBREL, then sends the message again as a new one (a duplicate).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use rumqttc::{PubAck, PubRec, QoS as WireQoS, Request};

use super::consumers::Consumers;
use super::requests::RequestQueue;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Qos2 {
    /// Delivered to subscribers, PUBREC not sent yet; last received on connection
    /// number `connection`.
    Delivering { connection: u64 },
    /// PUBREC sent, waiting for PUBREL.
    Received,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    pkid: u16,
    qos: WireQoS,
    remaining: usize,
    /// A consumer dropped it unconsumed while stopping: it is not acknowledged.
    abandoned: bool,
}

/// What to do with an incoming publish.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A new message: deliver it.
    Deliver,
    /// A QoS 2 re-send already delivered and acknowledged: answer PUBREC again.
    AckAgain,
    /// A QoS 2 re-send still being delivered: its PUBREC follows when done.
    Ignore,
}

#[derive(Debug, Default)]
struct State {
    epoch: u64,
    /// Counts lost connections: a message received on an earlier one is not
    /// acknowledged before the broker re-sends it.
    connection: u64,
    next_seq: u64,
    queue: VecDeque<Entry>,
    qos2: HashMap<u16, Qos2>,
}

/// Shared between the driver (which registers messages) and the acknowledgement
/// tokens held by subscribers.
#[derive(Debug)]
pub(crate) struct Inbound {
    state: Mutex<State>,
    requests: Arc<RequestQueue>,
    consumers: Arc<Consumers>,
}

/// A message registered by [`Inbound::register`].
#[derive(Debug)]
pub(crate) struct Registered {
    inbound: Arc<Inbound>,
    epoch: u64,
    seq: u64,
}

impl Registered {
    /// One consumer's share of the message.
    pub(crate) fn token(&self) -> AckToken {
        AckToken {
            inbound: self.inbound.clone(),
            epoch: self.epoch,
            seq: self.seq,
            consumed: false,
            abandoned: false,
        }
    }
}

/// One subscriber's share of a message. [`consume`](Self::consume) it once the
/// subscriber is done with the message. Dropped unconsumed it also completes the
/// share (the subscriber is gone and wants no more), except while the client
/// stops: then the message is abandoned, to be delivered again.
#[derive(Debug)]
pub(crate) struct AckToken {
    inbound: Arc<Inbound>,
    epoch: u64,
    seq: u64,
    consumed: bool,
    abandoned: bool,
}

impl AckToken {
    /// The subscriber is done with the message.
    pub(crate) fn consume(mut self) {
        self.consumed = true;
    }

    /// The subscriber's client stops before it took the message: leave it
    /// unacknowledged, for the broker to deliver again.
    pub(crate) fn abandon(mut self) {
        self.abandoned = true;
    }
}

impl Drop for AckToken {
    fn drop(&mut self) {
        let abandoned = self.abandoned || (!self.consumed && self.inbound.consumers.is_closed());
        self.inbound.complete(self.epoch, self.seq, abandoned);
    }
}

impl Inbound {
    pub(crate) fn new(requests: Arc<RequestQueue>, consumers: Arc<Consumers>) -> Arc<Self> {
        Arc::new(Inbound {
            state: Mutex::new(State::default()),
            requests,
            consumers,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Decide what to do with a publish that just arrived.
    pub(crate) fn admit(&self, pkid: u16, qos: WireQoS) -> Admission {
        if qos != WireQoS::ExactlyOnce {
            return Admission::Deliver;
        }
        let mut guard = self.lock();
        let state = &mut *guard;
        match state.qos2.get_mut(&pkid) {
            Some(Qos2::Received) => Admission::AckAgain,
            Some(Qos2::Delivering { connection }) => {
                *connection = state.connection;
                Admission::Ignore
            }
            None => {
                state.qos2.insert(
                    pkid,
                    Qos2::Delivering {
                        connection: state.connection,
                    },
                );
                Admission::Deliver
            }
        }
    }

    /// Register a QoS 1/2 message going to `consumers` consumers; each takes a
    /// [`Registered::token`]. With no consumer it is acknowledged at once.
    pub(crate) fn register(
        self: &Arc<Self>,
        pkid: u16,
        qos: WireQoS,
        consumers: usize,
    ) -> Registered {
        let (epoch, seq, queued) = {
            let mut state = self.lock();
            let seq = state.next_seq;
            state.next_seq += 1;
            state.queue.push_back(Entry {
                seq,
                pkid,
                qos,
                remaining: consumers,
                abandoned: false,
            });
            let queued = consumers == 0 && self.release_done(&mut state);
            (state.epoch, seq, queued)
        };
        if queued {
            self.requests.wake();
        }
        Registered {
            inbound: self.clone(),
            epoch,
            seq,
        }
    }

    fn complete(&self, epoch: u64, seq: u64, abandoned: bool) {
        let queued = {
            let mut state = self.lock();
            if state.epoch != epoch {
                return;
            }
            // Entries leave from the front only, so sequence numbers index the queue.
            let at = state.queue.front().map(|front| seq.wrapping_sub(front.seq));
            let entry = at
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| state.queue.get_mut(at));
            if let Some(entry) = entry {
                entry.remaining = entry.remaining.saturating_sub(1);
                entry.abandoned |= abandoned;
            }
            self.release_done(&mut state)
        };
        if queued {
            self.requests.wake();
        }
    }

    /// Queue the acknowledgements at the head of the queue whose messages are done,
    /// under the lock, so they keep the arrival order. True when any was queued; the
    /// caller wakes the engine once the lock is released.
    fn release_done(&self, state: &mut State) -> bool {
        let mut queued = false;
        while state.queue.front().is_some_and(|e| e.remaining == 0) {
            let Some(entry) = state.queue.pop_front() else {
                break;
            };
            if entry.abandoned {
                continue; // delivered again in the next session
            }
            if entry.qos == WireQoS::ExactlyOnce {
                let Some(step) = state.qos2.get_mut(&entry.pkid) else {
                    continue; // the broker already released it
                };
                let current = *step
                    == Qos2::Delivering {
                        connection: state.connection,
                    };
                *step = Qos2::Received;
                if !current {
                    continue; // answered when the broker re-sends it
                }
            }
            queued |= self.queue_ack(entry.pkid, entry.qos);
        }
        queued
    }

    /// PUBACK (QoS 1) or PUBREC (QoS 2) for `pkid`, now.
    pub(crate) fn send_ack(&self, pkid: u16, qos: WireQoS) {
        if self.queue_ack(pkid, qos) {
            self.requests.wake();
        }
    }

    /// Queue the acknowledgement without waking the engine; false when stopping.
    fn queue_ack(&self, pkid: u16, qos: WireQoS) -> bool {
        let request = match qos {
            WireQoS::ExactlyOnce => Request::PubRec(PubRec::new(pkid)),
            _ => Request::PubAck(PubAck::new(pkid)),
        };
        let queued = self.requests.push(request).is_ok();
        if !queued {
            tracing::debug!(
                pkid,
                "courier: acknowledgement not queued (client stopping)"
            );
        }
        queued
    }

    /// PUBREL: the QoS 2 exchange for `pkid` is over; the id may be reused.
    pub(crate) fn on_pubrel(&self, pkid: u16) {
        self.lock().qos2.remove(&pkid);
    }

    /// The connection is gone: messages received on it are acknowledged only when
    /// the broker re-sends them on the next one.
    pub(crate) fn on_connection_lost(&self) {
        self.lock().connection += 1;
    }

    /// The broker has no session for us: forget every packet id of the old one.
    pub(crate) fn on_session_lost(&self) {
        let mut state = self.lock();
        state.epoch += 1;
        state.queue.clear();
        state.qos2.clear();
    }

    #[cfg(test)]
    fn queued(&self) -> usize {
        self.lock().queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inbound() -> (Arc<Inbound>, Arc<RequestQueue>) {
        inbound_gated(Arc::default())
    }

    fn inbound_gated(consumers: Arc<Consumers>) -> (Arc<Inbound>, Arc<RequestQueue>) {
        let requests = Arc::new(RequestQueue::default());
        (Inbound::new(requests.clone(), consumers), requests)
    }

    /// A new QoS 2 message `pkid` going to `consumers` consumers, admitted and
    /// registered as the driver does.
    fn arrive(inbound: &Arc<Inbound>, pkid: u16, consumers: usize) -> Registered {
        assert_eq!(
            inbound.admit(pkid, WireQoS::ExactlyOnce),
            Admission::Deliver
        );
        inbound.register(pkid, WireQoS::ExactlyOnce, consumers)
    }

    /// The packet ids of the PUBRECs queued so far.
    fn sent(requests: &mut Arc<RequestQueue>) -> Vec<u16> {
        let mut taken = std::collections::VecDeque::new();
        requests.take_all(&mut taken);
        taken
            .into_iter()
            .filter_map(|r| match r {
                Request::PubRec(p) => Some(p.pkid),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn acks_go_out_in_arrival_order() {
        let (inbound, mut el) = inbound();
        let a = arrive(&inbound, 1, 1).token();
        let second = arrive(&inbound, 2, 2);
        drop([second.token(), second.token()]);
        assert!(sent(&mut el).is_empty(), "2 waits for 1 to be done");
        drop(a);
        assert_eq!(sent(&mut el), vec![1, 2]);
        assert_eq!(inbound.queued(), 0);
    }

    #[test]
    fn a_message_is_acked_after_every_subscriber() {
        let (inbound, mut el) = inbound();
        let registered = arrive(&inbound, 9, 3);
        let mut tokens = vec![registered.token(), registered.token(), registered.token()];
        tokens.pop();
        tokens.pop();
        assert!(sent(&mut el).is_empty());
        tokens.pop();
        assert_eq!(sent(&mut el), vec![9]);
    }

    #[test]
    fn qos2_resends_are_delivered_once() {
        let (inbound, mut el) = inbound();
        let token = arrive(&inbound, 5, 1).token();
        assert_eq!(inbound.admit(5, WireQoS::ExactlyOnce), Admission::Ignore);
        drop(token);
        assert_eq!(sent(&mut el), vec![5]);
        assert_eq!(inbound.admit(5, WireQoS::ExactlyOnce), Admission::AckAgain);
        inbound.on_pubrel(5);
        assert_eq!(inbound.admit(5, WireQoS::ExactlyOnce), Admission::Deliver);
    }

    #[test]
    fn a_message_of_a_lost_connection_is_acked_when_sent_again() {
        let (inbound, mut el) = inbound();
        let token = arrive(&inbound, 5, 1).token();
        inbound.on_connection_lost();
        drop(token);
        assert!(sent(&mut el).is_empty(), "no PUBREC before the re-send");
        assert_eq!(inbound.admit(5, WireQoS::ExactlyOnce), Admission::AckAgain);
    }

    #[test]
    fn a_message_sent_again_while_consumed_is_acked_on_the_new_connection() {
        let (inbound, mut el) = inbound();
        let token = arrive(&inbound, 5, 1).token();
        inbound.on_connection_lost();
        assert_eq!(inbound.admit(5, WireQoS::ExactlyOnce), Admission::Ignore);
        drop(token);
        assert_eq!(sent(&mut el), vec![5]);
    }

    #[test]
    fn tokens_of_a_lost_session_send_nothing() {
        let (inbound, mut el) = inbound();
        let token = arrive(&inbound, 3, 1).token();
        inbound.on_session_lost();
        drop(token);
        assert!(sent(&mut el).is_empty());
    }

    #[test]
    fn a_message_nobody_consumes_is_acked_at_once_in_order() {
        let (inbound, mut el) = inbound();
        let first = arrive(&inbound, 1, 1).token();
        let _ = arrive(&inbound, 2, 0);
        assert!(sent(&mut el).is_empty(), "2 waits for 1");
        drop(first);
        assert_eq!(sent(&mut el), vec![1, 2]);
        let _ = arrive(&inbound, 3, 0);
        assert_eq!(sent(&mut el), vec![3]);
    }

    #[test]
    fn while_stopping_an_unconsumed_message_is_abandoned_not_acked() {
        let consumers = Arc::new(Consumers::default());
        let (inbound, mut el) = inbound_gated(consumers.clone());
        let handled = arrive(&inbound, 1, 1).token();
        let queued = arrive(&inbound, 2, 1).token();
        let later = arrive(&inbound, 3, 1).token();
        assert!(consumers.close());
        drop(queued);
        assert!(sent(&mut el).is_empty(), "1 is still being handled");
        handled.consume();
        later.consume();
        assert_eq!(
            sent(&mut el),
            vec![1, 3],
            "2 is left for the next session and holds back nothing"
        );
    }
}
