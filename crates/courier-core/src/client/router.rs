//! Routing incoming messages to the subscriptions whose filters match, and holding
//! the messages no subscription matches yet.
//!
//! A persistent session's broker sends what it queued for the client right after
//! CONNACK, before the application had a chance to subscribe again. Such a message
//! is held, unacknowledged, for the hold period after the first connection (the
//! `unrouted_hold` option), and goes to the first subscription made for it. Past
//! that period it goes to the fallback handler (`unrouted_handler`), or, without
//! one, is acknowledged and reported as `Event::Unrouted`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::consumers::Consumers;
use super::inbound::AckToken;
use crate::message::Message;
use crate::qos::QoS;
use crate::topic::TopicFilter;

/// A message on its way to one subscription.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: Message,
    /// Dropping it tells the broker (in order) that this subscription is done.
    pub(crate) ack: Option<AckToken>,
}

/// The sending end of one subscription's queue.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: mpsc::UnboundedSender<Delivery>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    capacity: usize,
    label: Arc<str>,
}

/// The receiving end: a handler task or a `Subscription` stream. It ends when the
/// client stops delivering (the consumers' gate closes), leaving what is queued
/// unconsumed.
#[derive(Debug)]
pub(crate) struct Source {
    rx: mpsc::UnboundedReceiver<Delivery>,
    queued: Arc<AtomicUsize>,
    gate: Arc<Consumers>,
}

/// A subscription's queue. QoS 1/2 deliveries are always accepted (the broker's
/// in-flight window bounds them, since they are acknowledged only once consumed);
/// QoS 0 deliveries beyond `capacity` are dropped.
pub(crate) fn queue(capacity: usize, label: &str, gate: Arc<Consumers>) -> (Sink, Source) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(AtomicUsize::new(0));
    (
        Sink {
            tx,
            queued: queued.clone(),
            dropped: Arc::new(AtomicU64::new(0)),
            capacity,
            label: label.into(),
        },
        Source { rx, queued, gate },
    )
}

/// Outcome of offering a QoS 0 message to a full queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// Dropped; carries the running count when it is worth an event (1st, then every
    /// 1000th drop since the last report).
    Dropped(Option<u64>),
}

impl Sink {
    pub(crate) fn offer(&self, delivery: Delivery) -> Offer {
        if delivery.ack.is_none() && self.queued.load(Ordering::Relaxed) >= self.capacity {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            return Offer::Dropped((n == 1 || n % 1000 == 0).then_some(n));
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(delivery).is_err() {
            // The consumer is gone; the delivery (and its ack token) dropped with it.
            self.queued.fetch_sub(1, Ordering::Relaxed);
        } else {
            self.dropped.store(0, Ordering::Relaxed);
        }
        Offer::Queued
    }

    /// The subscription's filters, for events.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn same_queue(&self, other: &Sink) -> bool {
        Arc::ptr_eq(&self.queued, &other.queued)
    }
}

impl Source {
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Delivery>> {
        if self.gate.is_closed() {
            return std::task::Poll::Ready(None);
        }
        let polled = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(_)) = &polled {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        polled
    }

    pub(crate) async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

#[derive(Debug)]
struct Route {
    id: u64,
    filter: TopicFilter,
    qos: QoS,
    sink: Sink,
}

/// Every local subscription. Several may share a filter; the broker holds one
/// subscription per filter, at the highest QoS asked for.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Vec<Route>,
    next_id: u64,
    /// Messages no subscription matched, unacknowledged, oldest first.
    held: VecDeque<Delivery>,
    /// QoS 0 messages among `held` (bounded like a subscription's buffer).
    held_qos0: usize,
    /// Until when unmatched messages are held (set at the first CONNACK).
    hold_until: Option<Instant>,
    /// The fallback handler's queue (`unrouted_handler`).
    fallback: Option<Sink>,
    /// The client stops delivering: nothing is routed any more.
    closed: bool,
}

/// What became of a message no subscription matched.
#[derive(Debug)]
pub(crate) enum Unmatched {
    /// A subscription made meanwhile took it.
    Routed(Offer),
    /// Held for a subscription to come.
    Held,
    /// Given to the fallback handler.
    Fallback(Offer),
    /// Nobody takes it: the caller reports it and drops it (acknowledging it).
    Unclaimed(Delivery),
    /// The client stops: dropped unconsumed, to be delivered again.
    Stopping,
}

impl Router {
    pub(crate) fn add(&mut self, filter: TopicFilter, qos: QoS, sink: Sink) -> u64 {
        self.next_id += 1;
        self.routes.push(Route {
            id: self.next_id,
            filter,
            qos,
            sink,
        });
        self.next_id
    }

    /// Remove the routes `ids`; returns the filters no route uses any more.
    pub(crate) fn remove(&mut self, ids: &[u64]) -> Vec<String> {
        let mut removed: Vec<String> = Vec::new();
        self.routes.retain(|r| {
            let drop = ids.contains(&r.id);
            if drop {
                removed.push(r.filter.as_str().to_owned());
            }
            !drop
        });
        removed.sort();
        removed.dedup();
        removed.retain(|f| !self.routes.iter().any(|r| r.filter.as_str() == f));
        removed
    }

    /// Remove every route of these filters.
    pub(crate) fn remove_filters(&mut self, filters: &[String]) {
        self.routes
            .retain(|r| !filters.iter().any(|f| f == r.filter.as_str()));
    }

    pub(crate) fn clear(&mut self) {
        self.close();
        self.held.clear();
        self.held_qos0 = 0;
    }

    /// Route nothing more: every subscription's queue is dropped (which ends the
    /// streams and handlers waiting on them), and held messages stay unconsumed.
    pub(crate) fn close(&mut self) {
        self.closed = true;
        self.routes.clear();
        self.fallback = None;
    }

    /// Give unmatched messages, after the hold period, to `sink`.
    pub(crate) fn set_fallback(&mut self, sink: Sink) {
        self.fallback = Some(sink);
    }

    /// Hold unmatched messages until `until` (the first CONNACK plus the hold
    /// period); a later call does not move an earlier deadline.
    pub(crate) fn hold_until(&mut self, until: Instant) {
        self.hold_until.get_or_insert(until);
    }

    /// Place a message that matched no route when the driver looked (`capacity`
    /// bounds the QoS 0 messages held).
    pub(crate) fn place_unmatched(
        &mut self,
        delivery: Delivery,
        now: Instant,
        capacity: usize,
    ) -> Unmatched {
        if self.closed {
            return Unmatched::Stopping;
        }
        if let Some(route) = self
            .routes
            .iter()
            .find(|r| r.filter.matches(delivery.message.topic()))
        {
            return Unmatched::Routed(route.sink.offer(delivery));
        }
        if self.hold_until.is_some_and(|until| now < until) {
            if delivery.ack.is_none() {
                if self.held_qos0 >= capacity {
                    return Unmatched::Unclaimed(delivery);
                }
                self.held_qos0 += 1;
            }
            self.held.push_back(delivery);
            return Unmatched::Held;
        }
        match &self.fallback {
            Some(fallback) => Unmatched::Fallback(fallback.offer(delivery)),
            None => Unmatched::Unclaimed(delivery),
        }
    }

    /// Move the held messages that `routes` match to their queue, oldest first.
    pub(crate) fn claim_held(&mut self, routes: &[u64]) {
        if self.held.is_empty() {
            return;
        }
        let claiming: Vec<&Route> = self
            .routes
            .iter()
            .filter(|r| routes.contains(&r.id))
            .collect();
        let mut unclaimed = VecDeque::with_capacity(self.held.len());
        for delivery in self.held.drain(..) {
            let topic = delivery.message.topic();
            match claiming.iter().find(|r| r.filter.matches(topic)) {
                Some(route) => {
                    self.held_qos0 -= usize::from(delivery.ack.is_none());
                    let _ = route.sink.offer(delivery);
                }
                None => unclaimed.push_back(delivery),
            }
        }
        self.held = unclaimed;
    }

    /// Once the hold period is over, give every held message to the fallback
    /// handler; returns those nobody takes (to report and acknowledge).
    pub(crate) fn release_held(&mut self, now: Instant) -> Vec<Delivery> {
        if self.closed || self.hold_until.is_none_or(|until| now < until) {
            return Vec::new();
        }
        self.held_qos0 = 0;
        let held = std::mem::take(&mut self.held);
        match &self.fallback {
            Some(fallback) => {
                for delivery in held {
                    let _ = fallback.offer(delivery);
                }
                Vec::new()
            }
            None => held.into(),
        }
    }

    /// The connection is gone: the QoS 1 messages held are dropped (the broker sends
    /// them again, and their acknowledgements are never sent); QoS 0 and 2 stay (a
    /// QoS 2 re-send is recognised and not delivered twice).
    pub(crate) fn drop_held_qos1(&mut self) -> VecDeque<Delivery> {
        let (dropped, kept) = std::mem::take(&mut self.held)
            .into_iter()
            .partition(|d| d.message.qos() == QoS::AtLeastOnce);
        self.held = kept;
        dropped
    }

    /// Each subscribed filter with the highest QoS asked for it.
    pub(crate) fn subscriptions(&self) -> BTreeMap<String, QoS> {
        let mut map = BTreeMap::new();
        for r in &self.routes {
            let qos = map.entry(r.filter.as_str().to_owned()).or_insert(r.qos);
            *qos = (*qos).max(r.qos);
        }
        map
    }

    /// The distinct queues whose filters match `topic`.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<Sink>) {
        out.clear();
        for r in &self.routes {
            if r.filter.matches(topic) && !out.iter().any(|s| s.same_queue(&r.sink)) {
                out.push(r.sink.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::codec::JsonCodec;
    use crate::message::MessageParts;

    fn msg(topic: &str) -> Message {
        Message::from_parts(MessageParts::new(topic, "x"), Arc::new(JsonCodec))
    }

    fn filter(f: &str) -> TopicFilter {
        TopicFilter::new(f).unwrap_or_else(|e| panic!("{f}: {e}"))
    }

    #[test]
    fn routes_to_every_matching_queue_once() {
        let mut router = Router::default();
        let (a, _ra) = queue(10, "t", Arc::default());
        let (b, _rb) = queue(10, "t", Arc::default());
        router.add(filter("s/+"), QoS::AtLeastOnce, a.clone());
        router.add(filter("s/#"), QoS::AtLeastOnce, a);
        router.add(filter("$share/g/s/x"), QoS::AtMostOnce, b);
        let mut out = Vec::new();
        router.matching("s/x", &mut out);
        assert_eq!(out.len(), 2);
        router.matching("t/x", &mut out);
        assert!(out.is_empty());
        router.matching("$s/x", &mut out);
        assert!(out.is_empty());
    }

    #[test]
    fn removing_reports_filters_left_unused() {
        let mut router = Router::default();
        let (a, _ra) = queue(10, "t", Arc::default());
        let one = router.add(filter("x"), QoS::AtMostOnce, a.clone());
        let two = router.add(filter("x"), QoS::ExactlyOnce, a.clone());
        let three = router.add(filter("y"), QoS::AtMostOnce, a);
        assert_eq!(router.subscriptions().get("x"), Some(&QoS::ExactlyOnce));
        assert!(router.remove(&[one]).is_empty());
        assert_eq!(
            router.remove(&[two, three]),
            vec!["x".to_owned(), "y".to_owned()]
        );
        assert!(router.subscriptions().is_empty());
    }

    #[test]
    fn full_queues_drop_qos0_only() {
        let (sink, mut source) = queue(1, "t", Arc::default());
        assert_eq!(
            sink.offer(Delivery {
                message: msg("a"),
                ack: None
            }),
            Offer::Queued
        );
        assert_eq!(
            sink.offer(Delivery {
                message: msg("a"),
                ack: None
            }),
            Offer::Dropped(Some(1))
        );
        assert_eq!(
            sink.offer(Delivery {
                message: msg("a"),
                ack: None
            }),
            Offer::Dropped(None)
        );
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(matches!(
            source.poll_recv(&mut cx),
            std::task::Poll::Ready(Some(_))
        ));
        assert_eq!(
            sink.offer(Delivery {
                message: msg("a"),
                ack: None
            }),
            Offer::Queued
        );
    }

    fn unmatched(router: &mut Router, topic: &str, now: Instant) -> Unmatched {
        let delivery = Delivery {
            message: msg(topic),
            ack: None,
        };
        router.place_unmatched(delivery, now, 10)
    }

    #[tokio::test]
    async fn unmatched_messages_are_held_for_the_first_subscription_made_for_them() {
        let mut router = Router::default();
        let now = Instant::now();
        router.hold_until(now + Duration::from_secs(5));
        for topic in ["q/1", "other", "q/2"] {
            assert!(matches!(
                unmatched(&mut router, topic, now),
                Unmatched::Held
            ));
        }
        let (sink, mut source) = queue(10, "q/+", Arc::default());
        let route = router.add(filter("q/+"), QoS::AtLeastOnce, sink);
        router.claim_held(&[route]);
        let mut got = Vec::new();
        while let Ok(delivery) = source.rx.try_recv() {
            got.push(delivery.message.topic().to_owned());
        }
        assert_eq!(got, ["q/1", "q/2"], "in arrival order");
        assert_eq!(router.held.len(), 1, "\"other\" waits on");
    }

    #[tokio::test]
    async fn after_the_hold_unmatched_messages_go_to_the_fallback_or_are_unclaimed() {
        let mut router = Router::default();
        let now = Instant::now();
        router.hold_until(now + Duration::from_secs(5));
        assert!(matches!(unmatched(&mut router, "a", now), Unmatched::Held));
        assert!(
            router.release_held(now).is_empty(),
            "nothing is released before the end of the hold"
        );
        let later = now + Duration::from_secs(5);
        let released = router.release_held(later);
        assert_eq!(released.len(), 1);
        assert!(matches!(
            unmatched(&mut router, "b", later),
            Unmatched::Unclaimed(_)
        ));
        let (fallback, mut source) = queue(10, "fallback", Arc::default());
        router.set_fallback(fallback);
        assert!(matches!(
            unmatched(&mut router, "c", later),
            Unmatched::Fallback(Offer::Queued)
        ));
        assert!(source.rx.try_recv().is_ok());
        router.close();
        assert!(matches!(
            unmatched(&mut router, "d", later),
            Unmatched::Stopping
        ));
    }
}
