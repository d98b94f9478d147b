//! Routing incoming messages to the subscriptions whose filters match.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::mpsc;

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

/// The receiving end: a handler task or a `Subscription` stream.
#[derive(Debug)]
pub(crate) struct Source {
    rx: mpsc::UnboundedReceiver<Delivery>,
    queued: Arc<AtomicUsize>,
}

/// A subscription's queue. QoS 1/2 deliveries are always accepted (the broker's
/// in-flight window bounds them, since they are acknowledged only once consumed);
/// QoS 0 deliveries beyond `capacity` are dropped.
pub(crate) fn queue(capacity: usize, label: &str) -> (Sink, Source) {
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
        Source { rx, queued },
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
        self.routes.clear();
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
        let (a, _ra) = queue(10, "t");
        let (b, _rb) = queue(10, "t");
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
        let (a, _ra) = queue(10, "t");
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
        let (sink, mut source) = queue(1, "t");
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
}
