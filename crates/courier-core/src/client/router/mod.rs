//! Routing incoming messages to the subscriptions whose filters match, and holding
//! the messages no subscription matches yet.
//!
//! Routes are indexed by filter level ([`index`]), so routing a message and adding
//! or removing a subscription cost the topic's depth, not the number of
//! subscriptions.
//!
//! A persistent session's broker sends what it queued for the client right after
//! CONNACK, before the application had a chance to subscribe again. Such a message
//! is held, unacknowledged, for the hold period after the first connection (the
//! `unrouted_hold` option), and goes to the first subscription made for it. Past
//! that period it goes to the fallback handler (`unrouted_handler`), or, without
//! one, is acknowledged and reported as `Event::Unrouted`.

mod index;
mod queue;

use std::collections::{BTreeMap, HashMap, VecDeque};

use tokio::time::Instant;

use crate::qos::QoS;
use crate::topic::TopicFilter;
use index::FilterIndex;
pub(crate) use queue::{Ack, Delivery, Offer, Sink, Source, queue};

#[derive(Debug)]
struct Route {
    filter: TopicFilter,
    qos: QoS,
    sink: Sink,
}

/// Every local subscription. Several may share a filter; the broker holds one
/// subscription per filter, at the highest QoS asked for.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: HashMap<u64, Route>,
    /// The route ids of each filter (as sent to the broker).
    by_filter: HashMap<String, Vec<u64>>,
    /// The routes by the part of their filter that topics match.
    index: FilterIndex,
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
        let id = self.next_id;
        self.index.insert(filter.matching_filter(), id);
        self.by_filter
            .entry(filter.as_str().to_owned())
            .or_default()
            .push(id);
        self.routes.insert(id, Route { filter, qos, sink });
        id
    }

    /// Remove the routes `ids`; returns the filters no route uses any more.
    pub(crate) fn remove(&mut self, ids: &[u64]) -> Vec<String> {
        let mut unused = Vec::new();
        for id in ids {
            let Some(route) = self.routes.remove(id) else {
                continue;
            };
            self.index.remove(route.filter.matching_filter(), *id);
            let filter = route.filter.as_str();
            if let Some(left) = self.by_filter.get_mut(filter) {
                left.retain(|other| other != id);
                if left.is_empty() {
                    self.by_filter.remove(filter);
                    unused.push(filter.to_owned());
                }
            }
        }
        unused
    }

    /// Remove every route of these filters.
    pub(crate) fn remove_filters(&mut self, filters: &[String]) {
        for filter in filters {
            let ids = self
                .by_filter
                .get(filter.as_str())
                .cloned()
                .unwrap_or_default();
            self.remove(&ids);
        }
    }

    /// The highest QoS the local subscriptions on `filter` ask for.
    pub(crate) fn highest_qos(&self, filter: &str) -> Option<QoS> {
        self.by_filter
            .get(filter)?
            .iter()
            .filter_map(|id| self.routes.get(id))
            .map(|route| route.qos)
            .max()
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
        self.by_filter.clear();
        self.index.clear();
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
        let mut first = None;
        self.index.matches(delivery.message.topic(), &mut |id| {
            first = first.or(Some(id));
        });
        if let Some(route) = first.and_then(|id| self.routes.get(&id)) {
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
        let claiming: Vec<&Route> = routes.iter().filter_map(|id| self.routes.get(id)).collect();
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
        self.by_filter
            .keys()
            .filter_map(|filter| Some((filter.clone(), self.highest_qos(filter)?)))
            .collect()
    }

    /// The distinct queues whose filters match `topic`.
    pub(crate) fn matching(&self, topic: &str, out: &mut Vec<Sink>) {
        out.clear();
        self.index.matches(topic, &mut |id| {
            if let Some(route) = self.routes.get(&id) {
                if !out.iter().any(|s| s.same_queue(&route.sink)) {
                    out.push(route.sink.clone());
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::super::budget::InboundBudget;
    use super::*;
    use crate::codec::JsonCodec;
    use crate::message::{Message, MessageParts};

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

    fn unmatched(router: &mut Router, topic: &str, now: Instant) -> Unmatched {
        let message = msg(topic);
        let delivery = Delivery {
            charge: InboundBudget::new(usize::MAX).charge(&message),
            message,
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
        while let Ok(delivery) = source.try_recv() {
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
        assert!(source.try_recv().is_ok());
        router.close();
        assert!(matches!(
            unmatched(&mut router, "d", later),
            Unmatched::Stopping
        ));
    }
}
