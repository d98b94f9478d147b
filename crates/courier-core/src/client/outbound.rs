//! Outbound bookkeeping: maps each courier request to the packet id rumqttc's
//! `MqttState` gives it.
//!
//! `MqttState` assigns packet ids itself and reports no per-publish acknowledgement,
//! only a stream of events. Courier's requests enter the request queue in the
//! same order as they are pushed onto the FIFOs here (both under one lock), and
//! rumqttc emits `Outgoing::Publish(pkid)` (or `Outgoing::AwaitAck(pkid)` on a packet
//! id collision) for first transmissions in that same order, so the front of the FIFO
//! is always the request a first-transmission event is about. From then on the
//! request is tracked by packet id until its PUBACK or PUBCOMP.
//!
//! Across a disconnect, the engine moves unacknowledged publishes and PUBRELs plus
//! every request not sent yet into `Engine::pending`. [`Outbound::on_disconnect`]
//! takes that list over (setting DUP on the retransmissions, which rumqttc forgets,
//! and rescuing a publish stuck in rumqttc's collision slot, which it never clears),
//! and [`Outbound::on_connack`] hands it back: unchanged when the broker kept the
//! session, or rebuilt when it did not (rumqttc would drop it all): subscriptions
//! re-made first, in-flight publishes re-published or failed by policy.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use rumqttc::{Publish, QoS as WireQoS, Request, Subscribe, SubscribeFilter, Unsubscribe};
use tokio::sync::{Notify, Semaphore, oneshot};

use super::options::SessionLossPolicy;
use crate::error::PublishError;

pub(crate) type PublishResult = Result<(), PublishError>;
/// Per subscribed filter, the granted QoS or `None` for a refusal (0x80).
pub(crate) type SubackResult = Vec<Option<u8>>;

/// A publish the caller is waiting on.
#[derive(Debug)]
pub(crate) struct PendingPublish {
    pub(crate) waiter: Option<oneshot::Sender<PublishResult>>,
    /// The packet, kept for QoS 1/2 so it can be re-published after a session loss.
    pub(crate) packet: Option<Publish>,
    /// When the packet (or its PUBREL) last went out and started waiting for an ack.
    pub(crate) waiting_since: Option<Instant>,
}

/// A publish's outcome, to hand to its caller once the outbound lock is released
/// (the wake-up may cost a system call).
#[derive(Debug)]
#[must_use = "the caller waits until `notify` is called"]
pub(crate) struct Settled {
    waiter: Option<oneshot::Sender<PublishResult>>,
    result: PublishResult,
}

impl Settled {
    fn new(entry: PendingPublish, result: PublishResult) -> Self {
        Settled {
            waiter: entry.waiter,
            result,
        }
    }

    /// Hand the outcome over; true when a caller was still waiting for it.
    pub(crate) fn notify(self) -> bool {
        self.waiter
            .is_some_and(|waiter| waiter.send(self.result).is_ok())
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).
    publish: Option<PendingPublish>,
    /// QoS 2 after PUBREC, waiting for PUBCOMP.
    release: Option<PendingPublish>,
    /// Order of the first transmission, for replaying PUBLISHes in send order.
    sent_seq: u64,
    /// Order of the PUBREC, for replaying PUBRELs in PUBREC order [MQTT-4.6.0-4].
    rec_seq: u64,
}

/// A SUBSCRIBE or UNSUBSCRIBE and who waits for its acknowledgement.
#[derive(Debug)]
pub(crate) struct PendingRequest<R, T> {
    pub(crate) request: R,
    pub(crate) waiter: Option<oneshot::Sender<T>>,
}

/// Requests matched to their acknowledgement by FIFO order, then packet id.
#[derive(Debug)]
struct AckQueue<R, T> {
    queued: VecDeque<PendingRequest<R, T>>,
    sent: VecDeque<(u16, PendingRequest<R, T>)>,
    /// Sent before a disconnect and never acknowledged: rumqttc does not retransmit
    /// these, so they are sent again after the next CONNACK.
    lost: Vec<PendingRequest<R, T>>,
}

impl<R, T> Default for AckQueue<R, T> {
    fn default() -> Self {
        AckQueue {
            queued: VecDeque::new(),
            sent: VecDeque::new(),
            lost: Vec::new(),
        }
    }
}

impl<R: Clone, T> AckQueue<R, T> {
    fn on_sent(&mut self, pkid: u16) {
        match self.queued.pop_front() {
            Some(entry) => self.sent.push_back((pkid, entry)),
            None => tracing::error!(pkid, "courier: untracked outgoing request"),
        }
    }

    fn on_ack(&mut self, pkid: u16) -> Option<PendingRequest<R, T>> {
        let at = self.sent.iter().position(|(id, _)| *id == pkid)?;
        self.sent.remove(at).map(|(_, entry)| entry)
    }

    fn on_disconnect(&mut self) {
        self.lost
            .extend(self.sent.drain(..).map(|(_, entry)| entry));
    }

    /// Put `entries` at the FIFO front, in order, and return their requests, which
    /// must be sent before anything else.
    fn requeue_front(&mut self, entries: Vec<PendingRequest<R, T>>) -> Vec<R> {
        let requests = entries.iter().map(|e| e.request.clone()).collect();
        for entry in entries.into_iter().rev() {
            self.queued.push_front(entry);
        }
        requests
    }

    fn is_empty(&self) -> bool {
        self.queued.is_empty() && self.sent.is_empty() && self.lost.is_empty()
    }

    fn drain(&mut self) -> impl Iterator<Item = PendingRequest<R, T>> + '_ {
        self.lost
            .drain(..)
            .chain(self.sent.drain(..).map(|(_, e)| e))
            .chain(self.queued.drain(..))
    }
}

/// What rumqttc had pending at a disconnect, sorted for the next CONNACK.
#[derive(Debug, Default)]
struct Replay {
    /// Unacknowledged publishes (DUP set) and PUBRELs, by packet id.
    resend: Vec<Request>,
    /// Requests never sent (publishes without a packet id yet, subscribes, ...), in
    /// FIFO order.
    fresh: Vec<Request>,
}

/// The outbound half of a connection's state; lives behind one mutex.
#[derive(Debug)]
pub(crate) struct Outbound {
    publishes: VecDeque<PendingPublish>,
    /// Sent publishes by packet id; only ids in use have an entry, so an idle
    /// connection costs nothing here.
    slots: HashMap<u16, Slot>,
    /// The ids rumqttc cycles through: 1..=pkid_range.
    pkid_range: u16,
    collided: Option<(u16, PendingPublish)>,
    subscribes: AckQueue<Subscribe, SubackResult>,
    unsubscribes: AckQueue<Unsubscribe, ()>,
    replay: Option<Replay>,
    /// Publishes tracked anywhere above (FIFO, slots, collision slot).
    tracked: usize,
    /// Stamps `sent_seq`/`rec_seq`.
    seq: u64,
    window: Arc<Semaphore>,
    qos0_window: Arc<Semaphore>,
    idle: Arc<Notify>,
}

impl Outbound {
    /// `pkid_range` is the id range rumqttc cycles through (its `inflight` option).
    pub(crate) fn new(
        pkid_range: u16,
        window: Arc<Semaphore>,
        qos0_window: Arc<Semaphore>,
    ) -> Self {
        Outbound {
            publishes: VecDeque::new(),
            slots: HashMap::new(),
            pkid_range,
            collided: None,
            subscribes: AckQueue::default(),
            unsubscribes: AckQueue::default(),
            replay: None,
            tracked: 0,
            seq: 0,
            window,
            qos0_window,
            idle: Arc::new(Notify::new()),
        }
    }

    /// Notified whenever the last tracked publish resolves.
    pub(crate) fn idle_signal(&self) -> Arc<Notify> {
        self.idle.clone()
    }

    /// Record a publish just pushed onto the request queue.
    pub(crate) fn push_publish(&mut self, entry: PendingPublish) {
        self.tracked += 1;
        self.publishes.push_back(entry);
    }

    /// Undo the last [`push_publish`](Self::push_publish) when the channel refused it.
    pub(crate) fn pop_last_publish(&mut self) -> Option<PendingPublish> {
        let entry = self.publishes.pop_back();
        self.tracked -= usize::from(entry.is_some());
        entry
    }

    pub(crate) fn push_subscribe(&mut self, entry: PendingRequest<Subscribe, SubackResult>) {
        self.subscribes.queued.push_back(entry);
    }

    pub(crate) fn pop_last_subscribe(&mut self) {
        self.subscribes.queued.pop_back();
    }

    pub(crate) fn push_unsubscribe(&mut self, entry: PendingRequest<Unsubscribe, ()>) {
        self.unsubscribes.queued.push_back(entry);
    }

    pub(crate) fn pop_last_unsubscribe(&mut self) {
        self.unsubscribes.queued.pop_back();
    }

    /// No publish, subscribe or unsubscribe is waiting for anything.
    pub(crate) fn is_idle(&self) -> bool {
        self.tracked == 0 && self.subscribes.is_empty() && self.unsubscribes.is_empty()
    }

    /// Publishes waiting for an acknowledgement (sent or not).
    pub(crate) fn publishes_in_flight(&self) -> usize {
        self.tracked
    }

    fn finish(&mut self, entry: PendingPublish, qos0: bool, result: PublishResult) -> Settled {
        self.tracked -= 1;
        if qos0 {
            self.qos0_window.add_permits(1);
        } else {
            self.window.add_permits(1);
        }
        if self.is_idle() {
            self.idle.notify_waiters();
        }
        Settled::new(entry, result)
    }

    /// `Outgoing::Publish(pkid)`: a publish was written to the connection.
    /// Returns the outcome of a QoS 0 publish, which is done once written.
    pub(crate) fn on_publish_sent(&mut self, pkid: u16) -> Option<Settled> {
        if pkid == 0 {
            let entry = self.publishes.pop_front();
            if entry.is_none() {
                tracing::error!("courier: untracked QoS 0 publish");
            }
            return entry.map(|entry| self.finish(entry, true, Ok(())));
        }
        if pkid > self.pkid_range {
            tracing::error!(pkid, "courier: packet id outside the tracked range");
            return None;
        }
        if let Some(entry) = self.slots.get_mut(&pkid).and_then(|s| s.publish.as_mut()) {
            entry.waiting_since = Some(Instant::now()); // a retransmission
            return None;
        }
        let entry = match self.collided.take() {
            Some((id, entry)) if id == pkid => Some(entry),
            other => {
                self.collided = other;
                self.publishes.pop_front()
            }
        };
        match entry {
            Some(mut entry) => {
                entry.waiting_since = Some(Instant::now());
                self.seq += 1;
                let slot = self.slots.entry(pkid).or_default();
                slot.publish = Some(entry);
                slot.sent_seq = self.seq;
            }
            None => tracing::error!(pkid, "courier: untracked publish"),
        }
        None
    }

    /// `Outgoing::AwaitAck(pkid)`: rumqttc found `pkid` still in use and parked the
    /// request (the front of the FIFO) until that id is acknowledged.
    pub(crate) fn on_collision(&mut self, pkid: u16) {
        if let Some(entry) = self.publishes.pop_front() {
            self.collided = Some((pkid, entry));
        }
    }

    /// PUBACK.
    pub(crate) fn on_puback(&mut self, pkid: u16) -> Option<Settled> {
        let entry = self.slots.get_mut(&pkid).and_then(|s| s.publish.take())?;
        self.prune(pkid);
        Some(self.finish(entry, false, Ok(())))
    }

    /// PUBREC: the broker has the QoS 2 message; the PUBREL/PUBCOMP leg follows.
    pub(crate) fn on_pubrec(&mut self, pkid: u16) {
        if let Some(slot) = self.slots.get_mut(&pkid) {
            if let Some(mut entry) = slot.publish.take() {
                entry.waiting_since = Some(Instant::now());
                slot.release = Some(entry);
                self.seq += 1;
                slot.rec_seq = self.seq;
            }
        }
    }

    /// PUBCOMP.
    pub(crate) fn on_pubcomp(&mut self, pkid: u16) -> Option<Settled> {
        let entry = self.slots.get_mut(&pkid).and_then(|s| s.release.take())?;
        self.prune(pkid);
        Some(self.finish(entry, false, Ok(())))
    }

    /// Forget `pkid`'s slot once nothing waits on it.
    fn prune(&mut self, pkid: u16) {
        if self
            .slots
            .get(&pkid)
            .is_some_and(|s| s.publish.is_none() && s.release.is_none())
        {
            self.slots.remove(&pkid);
        }
    }

    /// When the longest-waiting sent publish started waiting for its ack.
    pub(crate) fn oldest_unacknowledged(&self) -> Option<Instant> {
        self.slots
            .values()
            .flat_map(|s| [&s.publish, &s.release])
            .filter_map(|e| e.as_ref()?.waiting_since)
            .min()
    }

    pub(crate) fn on_subscribe_sent(&mut self, pkid: u16) {
        self.subscribes.on_sent(pkid);
    }

    pub(crate) fn on_suback(&mut self, pkid: u16, result: SubackResult) {
        if let Some(entry) = self.subscribes.on_ack(pkid) {
            if let Some(waiter) = entry.waiter {
                let _ = waiter.send(result);
            }
        }
        self.notify_if_idle();
    }

    pub(crate) fn on_unsubscribe_sent(&mut self, pkid: u16) {
        self.unsubscribes.on_sent(pkid);
    }

    pub(crate) fn on_unsuback(&mut self, pkid: u16) {
        if let Some(entry) = self.unsubscribes.on_ack(pkid) {
            if let Some(waiter) = entry.waiter {
                let _ = waiter.send(());
            }
        }
        self.notify_if_idle();
    }

    fn notify_if_idle(&mut self) {
        if self.is_idle() {
            self.idle.notify_waiters();
        }
    }

    /// The connection broke and rumqttc moved what it had into `pending` (and
    /// possibly its collision slot). Take both over until the next CONNACK.
    pub(crate) fn on_disconnect(
        &mut self,
        pending: &mut VecDeque<Request>,
        collision: Option<Publish>,
    ) {
        let mut replay = self.replay.take().unwrap_or_default();
        if let Some(mut parked) = collision {
            if let Some((_, entry)) = self.collided.take() {
                self.publishes.push_front(entry);
            }
            parked.pkid = 0;
            replay.fresh.insert(0, Request::Publish(parked));
        }
        for request in pending.drain(..) {
            match request {
                Request::Publish(mut publish) if publish.pkid != 0 => {
                    publish.dup = true;
                    replay.resend.push(Request::Publish(publish));
                }
                Request::PubRel(_) => replay.resend.push(request),
                Request::Publish(_)
                | Request::Subscribe(_)
                | Request::Unsubscribe(_)
                | Request::Disconnect(_) => replay.fresh.push(request),
                // Acknowledgements of incoming messages belong to the old connection;
                // the broker redelivers and they are sent again.
                _ => {}
            }
        }
        // rumqttc lists publishes before PUBRELs, each by packet id; MQTT wants PUBRELs
        // in PUBREC order and publishes in their original order [MQTT-4.6.0-1/4].
        let slots = &self.slots;
        replay.resend.sort_by_key(|request| match request {
            Request::PubRel(rel) => (0, slots.get(&rel.pkid).map_or(0, |s| s.rec_seq)),
            Request::Publish(p) => (1, slots.get(&p.pkid).map_or(0, |s| s.sent_seq)),
            _ => (2, 0),
        });
        self.subscribes.on_disconnect();
        self.unsubscribes.on_disconnect();
        self.replay = Some(replay);
    }

    /// A CONNACK arrived. Returns the requests rumqttc must send first, in order.
    ///
    /// `active` is every subscribed filter with its QoS; when the broker has no
    /// session for us they are re-made first (except those a pending SUBSCRIBE is
    /// about to send anyway).
    pub(crate) fn on_connack(
        &mut self,
        session_present: bool,
        policy: SessionLossPolicy,
        active: &[(String, WireQoS)],
    ) -> VecDeque<Request> {
        let replay = self.replay.take().unwrap_or_default();
        let mut subscribes: Vec<_> = if session_present {
            Vec::new()
        } else {
            let pending: Vec<&str> = self
                .subscribes
                .queued
                .iter()
                .chain(&self.subscribes.lost)
                .flat_map(|e| e.request.filters.iter().map(|f| f.path.as_str()))
                .collect();
            let missing: Vec<(String, WireQoS)> = active
                .iter()
                .filter(|(filter, _)| !pending.contains(&filter.as_str()))
                .cloned()
                .collect();
            subscribe_packets(&missing)
                .into_iter()
                .map(|request| PendingRequest {
                    request,
                    waiter: None,
                })
                .collect()
        };
        subscribes.append(&mut self.subscribes.lost);
        let lost_unsubscribes = std::mem::take(&mut self.unsubscribes.lost);
        let mut out: VecDeque<Request> = self
            .subscribes
            .requeue_front(subscribes)
            .into_iter()
            .map(Request::Subscribe)
            .collect();
        out.extend(
            self.unsubscribes
                .requeue_front(lost_unsubscribes)
                .into_iter()
                .map(Request::Unsubscribe),
        );

        if session_present {
            // Retransmissions start a new wait.
            let now = Instant::now();
            for entry in self
                .slots
                .values_mut()
                .flat_map(|s| [&mut s.publish, &mut s.release])
            {
                if let Some(entry) = entry.as_mut() {
                    entry.waiting_since = Some(now);
                }
            }
            out.extend(replay.resend);
        } else {
            // The broker forgot every packet id: each tracked publish is either sent
            // again as a new message or failed.
            let mut sent: Vec<Slot> = self.slots.drain().map(|(_, slot)| slot).collect();
            sent.sort_by_key(|slot| slot.sent_seq);
            let again: Vec<PendingPublish> = sent
                .into_iter()
                .flat_map(|slot| [slot.release, slot.publish])
                .flatten()
                .collect();
            let mut failed = Vec::new();
            for entry in again.into_iter().rev() {
                match (policy, entry.packet.clone()) {
                    (SessionLossPolicy::Republish, Some(mut packet)) => {
                        packet.pkid = 0;
                        packet.dup = false;
                        self.publishes.push_front(entry);
                        out_fresh_front(&mut out, Request::Publish(packet));
                    }
                    _ => failed.push(entry),
                }
            }
            for entry in failed {
                let _ = self
                    .finish(entry, false, Err(PublishError::SessionLost))
                    .notify();
            }
        }
        out.extend(replay.fresh);
        out
    }

    /// Fail everything still tracked (the client is stopping or gave up).
    pub(crate) fn fail_all(&mut self, error: impl Fn() -> PublishError) {
        let mut entries: Vec<(PendingPublish, bool)> = Vec::new();
        for entry in self.publishes.drain(..) {
            let qos0 = entry.packet.is_none();
            entries.push((entry, qos0));
        }
        if let Some((_, entry)) = self.collided.take() {
            entries.push((entry, false));
        }
        for (_, slot) in self.slots.drain() {
            entries.extend(slot.publish.map(|e| (e, false)));
            entries.extend(slot.release.map(|e| (e, false)));
        }
        for (entry, qos0) in entries {
            let _ = self.finish(entry, qos0, Err(error())).notify();
        }
        self.subscribes.drain().for_each(drop);
        self.unsubscribes.drain().for_each(drop);
        self.replay = None;
        self.idle.notify_waiters();
    }
}

/// Insert a re-published packet before the first not-yet-sent publish already in
/// `out`, keeping subscriptions first.
fn out_fresh_front(out: &mut VecDeque<Request>, request: Request) {
    let at = out
        .iter()
        .position(|r| matches!(r, Request::Publish(_) | Request::PubRel(_)))
        .unwrap_or(out.len());
    out.insert(at, request);
}

/// The SUBSCRIBE packets that re-make `filters`, at most 64 filters each.
fn subscribe_packets(filters: &[(String, WireQoS)]) -> Vec<Subscribe> {
    filters
        .chunks(64)
        .map(|chunk| {
            Subscribe::new_many(
                chunk
                    .iter()
                    .map(|(path, qos)| SubscribeFilter::new(path.clone(), *qos)),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        out: Outbound,
        window: Arc<Semaphore>,
    }

    fn fixture(range: u16) -> Fixture {
        let window = Arc::new(Semaphore::new(0));
        let qos0 = Arc::new(Semaphore::new(0));
        Fixture {
            out: Outbound::new(range, window.clone(), qos0),
            window,
        }
    }

    fn publish(out: &mut Outbound, topic: &str, qos: WireQoS) -> oneshot::Receiver<PublishResult> {
        let (tx, rx) = oneshot::channel();
        let packet = (qos != WireQoS::AtMostOnce)
            .then(|| Publish::new(topic, qos, topic.as_bytes().to_vec()));
        out.push_publish(PendingPublish {
            waiter: Some(tx),
            packet,
            waiting_since: None,
        });
        rx
    }

    fn settle(settled: Option<Settled>) {
        if let Some(settled) = settled {
            let _ = settled.notify();
        }
    }

    fn done(rx: &mut oneshot::Receiver<PublishResult>) -> Option<bool> {
        rx.try_recv().ok().map(|r| r.is_ok())
    }

    #[test]
    fn acks_resolve_the_publish_that_got_that_packet_id() {
        let Fixture { mut out, window } = fixture(10);
        let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
        let mut b = publish(&mut out, "b", WireQoS::AtLeastOnce);
        let mut c = publish(&mut out, "c", WireQoS::AtMostOnce);
        settle(out.on_publish_sent(1));
        settle(out.on_publish_sent(2));
        settle(out.on_publish_sent(0));
        assert_eq!(done(&mut c), Some(true), "QoS 0 resolves when written");
        settle(out.on_puback(2));
        assert_eq!(done(&mut b), Some(true));
        assert_eq!(done(&mut a), None, "a is not acked yet");
        settle(out.on_puback(1));
        assert_eq!(done(&mut a), Some(true));
        assert_eq!(window.available_permits(), 2);
        assert!(out.is_idle());
    }

    #[test]
    fn qos2_resolves_on_pubcomp_not_pubrec() {
        let Fixture { mut out, .. } = fixture(10);
        let mut a = publish(&mut out, "a", WireQoS::ExactlyOnce);
        settle(out.on_publish_sent(1));
        out.on_pubrec(1);
        assert_eq!(done(&mut a), None);
        // rumqttc may reuse id 1 for a new publish once PUBREC freed it.
        let mut b = publish(&mut out, "b", WireQoS::AtLeastOnce);
        settle(out.on_publish_sent(1));
        settle(out.on_puback(1));
        assert_eq!(done(&mut b), Some(true));
        assert_eq!(done(&mut a), None);
        settle(out.on_pubcomp(1));
        assert_eq!(done(&mut a), Some(true));
    }

    #[test]
    fn a_collision_is_resolved_when_the_id_frees() {
        let Fixture { mut out, .. } = fixture(2);
        let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
        let mut b = publish(&mut out, "b", WireQoS::AtLeastOnce);
        settle(out.on_publish_sent(1));
        out.on_collision(1); // b got id 1 too and was parked
        settle(out.on_puback(1));
        assert_eq!(done(&mut a), Some(true));
        settle(out.on_publish_sent(1)); // rumqttc sends the parked publish
        assert_eq!(done(&mut b), None);
        settle(out.on_puback(1));
        assert_eq!(done(&mut b), Some(true));
    }

    #[test]
    fn retransmits_keep_their_mapping_and_get_dup() {
        let Fixture { mut out, .. } = fixture(10);
        let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
        let mut b = publish(&mut out, "b", WireQoS::AtLeastOnce);
        settle(out.on_publish_sent(1));
        // Connection drops: rumqttc's pending holds a's retransmission and b, unsent.
        let mut sent_a = Publish::new("a", WireQoS::AtLeastOnce, b"a".to_vec());
        sent_a.pkid = 1;
        let mut pending = VecDeque::from([
            Request::Publish(sent_a),
            Request::Publish(Publish::new("b", WireQoS::AtLeastOnce, b"b".to_vec())),
        ]);
        out.on_disconnect(&mut pending, None);
        let replay = out.on_connack(true, SessionLossPolicy::Republish, &[]);
        assert!(matches!(&replay[0], Request::Publish(p) if p.pkid == 1 && p.dup));
        assert!(matches!(&replay[1], Request::Publish(p) if p.pkid == 0 && !p.dup));
        settle(out.on_publish_sent(1)); // retransmission of a
        settle(out.on_publish_sent(2)); // b, first transmission
        settle(out.on_puback(2));
        assert_eq!(done(&mut b), Some(true));
        assert_eq!(done(&mut a), None);
        settle(out.on_puback(1));
        assert_eq!(done(&mut a), Some(true));
    }

    #[test]
    fn session_loss_republishes_or_fails_by_policy() {
        for policy in [SessionLossPolicy::Republish, SessionLossPolicy::Fail] {
            let Fixture { mut out, .. } = fixture(10);
            let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
            let mut q2 = publish(&mut out, "q2", WireQoS::ExactlyOnce);
            settle(out.on_publish_sent(1));
            settle(out.on_publish_sent(2));
            out.on_pubrec(2);
            let mut sent_a = Publish::new("a", WireQoS::AtLeastOnce, b"a".to_vec());
            sent_a.pkid = 1;
            let mut pending = VecDeque::from([
                Request::Publish(sent_a),
                Request::PubRel(rumqttc::PubRel::new(2)),
            ]);
            out.on_disconnect(&mut pending, None);
            let replay = out.on_connack(false, policy, &[("x/#".into(), WireQoS::AtLeastOnce)]);
            assert!(
                matches!(&replay[0], Request::Subscribe(_)),
                "resubscribe first"
            );
            match policy {
                SessionLossPolicy::Republish => {
                    let topics: Vec<_> = replay
                        .iter()
                        .filter_map(|r| match r {
                            Request::Publish(p) if p.pkid == 0 && !p.dup => Some(p.topic.clone()),
                            _ => None,
                        })
                        .collect();
                    assert_eq!(topics, vec!["a", "q2"]);
                    out.on_subscribe_sent(3);
                    settle(out.on_publish_sent(4));
                    settle(out.on_publish_sent(5));
                    settle(out.on_puback(4));
                    out.on_pubrec(5);
                    settle(out.on_pubcomp(5));
                    assert_eq!(done(&mut a), Some(true));
                    assert_eq!(done(&mut q2), Some(true));
                }
                _ => {
                    assert_eq!(replay.len(), 1);
                    assert_eq!(done(&mut a), Some(false));
                    assert_eq!(done(&mut q2), Some(false));
                }
            }
        }
    }

    #[test]
    fn a_parked_collision_is_rescued_at_disconnect() {
        let Fixture { mut out, .. } = fixture(2);
        let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
        let mut b = publish(&mut out, "b", WireQoS::AtLeastOnce);
        settle(out.on_publish_sent(1));
        out.on_collision(1);
        let mut parked = Publish::new("b", WireQoS::AtLeastOnce, b"b".to_vec());
        parked.pkid = 1;
        let mut sent_a = Publish::new("a", WireQoS::AtLeastOnce, b"a".to_vec());
        sent_a.pkid = 1;
        let mut pending = VecDeque::from([Request::Publish(sent_a)]);
        out.on_disconnect(&mut pending, Some(parked));
        let replay = out.on_connack(true, SessionLossPolicy::Republish, &[]);
        assert_eq!(replay.len(), 2);
        assert!(matches!(&replay[1], Request::Publish(p) if p.pkid == 0 && p.topic == "b"));
        settle(out.on_publish_sent(1));
        settle(out.on_publish_sent(2));
        settle(out.on_puback(1));
        settle(out.on_puback(2));
        assert_eq!(done(&mut a), Some(true));
        assert_eq!(done(&mut b), Some(true));
    }

    #[test]
    fn subscribes_lost_in_flight_are_sent_again() {
        let Fixture { mut out, .. } = fixture(10);
        let (tx, mut rx) = oneshot::channel();
        let sub = Subscribe::new("t", WireQoS::AtLeastOnce);
        out.push_subscribe(PendingRequest {
            request: sub,
            waiter: Some(tx),
        });
        out.on_subscribe_sent(1);
        out.on_disconnect(&mut VecDeque::new(), None);
        let replay = out.on_connack(true, SessionLossPolicy::Republish, &[]);
        assert!(matches!(&replay[0], Request::Subscribe(_)));
        out.on_subscribe_sent(7);
        out.on_suback(7, vec![Some(1)]);
        assert_eq!(rx.try_recv().ok(), Some(vec![Some(1)]));
        assert!(out.is_idle());
    }

    #[test]
    fn fail_all_resolves_every_waiter() {
        let Fixture { mut out, .. } = fixture(10);
        let mut a = publish(&mut out, "a", WireQoS::AtLeastOnce);
        let mut b = publish(&mut out, "b", WireQoS::AtMostOnce);
        settle(out.on_publish_sent(1));
        out.fail_all(|| PublishError::Closed);
        assert_eq!(done(&mut a), Some(false));
        assert_eq!(done(&mut b), Some(false));
        assert!(out.is_idle());
    }
}
