//! A subscription's queue: the [`Sink`] the driver (or a backend) offers deliveries
//! to, and the [`Source`] a handler task or a `Subscription` stream reads them from.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::super::budget::Charge;
use super::super::consumers::Consumers;
use super::super::inbound::AckToken;
use crate::message::Message;
use crate::qos::QoS;

/// A message on its way to one subscription.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) message: Message,
    /// Settles the subscription's share of the message; `None` for QoS 0 from a
    /// connection (a backend's receipt settles every QoS).
    pub(crate) ack: Option<Ack>,
    /// Its share of the inbound budget, until it is consumed or dropped.
    pub(crate) charge: Charge,
}

/// How a subscriber says it is done with a QoS 1/2 message.
#[derive(Debug)]
pub(crate) enum Ack {
    /// To the broker, through the connection's inbound ledger (in order).
    Broker(AckToken),
    /// To a backend that is not a connection (a test double), as a yes/no.
    Receipt(oneshot::Sender<bool>),
}

impl Ack {
    /// The subscriber is done with the message. Dropped unconsumed otherwise, an
    /// `Ack` also completes (the subscriber is gone and wants no more), except while
    /// its client stops.
    pub(crate) fn consume(self) {
        match self {
            Ack::Broker(token) => token.consume(),
            Ack::Receipt(tx) => {
                let _ = tx.send(true);
            }
        }
    }

    /// The client stops before the subscriber took the message: leave it
    /// unacknowledged.
    pub(crate) fn abandon(self) {
        match self {
            Ack::Broker(token) => token.abandon(),
            Ack::Receipt(tx) => {
                let _ = tx.send(false);
            }
        }
    }
}

impl Delivery {
    /// Leave the message unacknowledged: its client stops before it was consumed.
    pub(crate) fn abandon(self) {
        if let Some(ack) = self.ack {
            ack.abandon();
        }
    }
}

/// The sending end of one subscription's queue.
#[derive(Debug, Clone)]
pub(crate) struct Sink {
    tx: mpsc::UnboundedSender<Delivery>,
    queued: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
    capacity: usize,
    label: Arc<str>,
    gate: Arc<Consumers>,
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
/// in-flight window bounds them, since they are acknowledged only once consumed,
/// and the inbound budget stops reading when a broker ignores it); QoS 0 deliveries
/// beyond `capacity`, or while the inbound budget is spent, are dropped: QoS 0 has
/// no flow control, and must not make the client stop reading for everyone.
/// `gate` is the stop gate of the client the subscription belongs to.
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
            gate: gate.clone(),
        },
        Source { rx, queued, gate },
    )
}

/// Outcome of offering a message to a queue.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Offer {
    Queued,
    /// Dropped; carries the running count when it is worth an event (1st, then every
    /// 1000th drop since the last report).
    Dropped(Option<u64>),
    /// The subscription's client stops delivering: left unacknowledged.
    Stopping,
}

impl Sink {
    pub(crate) fn offer(&self, delivery: Delivery) -> Offer {
        if self.gate.is_closed() {
            delivery.abandon();
            return Offer::Stopping;
        }
        if delivery.message.qos() == QoS::AtMostOnce
            && (self.queued.load(Ordering::Relaxed) >= self.capacity
                || delivery.charge.budget_spent())
        {
            let n = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            return Offer::Dropped((n == 1 || n % 1000 == 0).then_some(n));
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        if self.tx.send(delivery).is_err() {
            // The consumer is gone; the delivery (and its ack) dropped with it.
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

    pub(crate) fn same_queue(&self, other: &Sink) -> bool {
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

    /// The next delivery if one is queued (for tests).
    #[cfg(test)]
    pub(crate) fn try_recv(&mut self) -> Result<Delivery, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    pub(crate) async fn recv(&mut self) -> Option<Delivery> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl Drop for Source {
    /// What is still queued when the client stops is left unacknowledged (a
    /// connection's broker delivers it again), also where the messages came from
    /// connections that are not stopping yet (a cluster's).
    fn drop(&mut self) {
        if self.gate.is_closed() {
            self.rx.close();
            while let Ok(delivery) = self.rx.try_recv() {
                delivery.abandon();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::budget::InboundBudget;
    use super::*;
    use crate::codec::JsonCodec;
    use crate::message::MessageParts;

    fn msg(topic: &str) -> Message {
        Message::from_parts(MessageParts::new(topic, "x"), Arc::new(JsonCodec))
    }

    fn delivery(topic: &str) -> Delivery {
        let message = msg(topic);
        Delivery {
            charge: InboundBudget::new(usize::MAX).charge(&message),
            message,
            ack: None,
        }
    }

    #[test]
    fn full_queues_drop_qos0_only() {
        let (sink, mut source) = queue(1, "t", Arc::default());
        assert_eq!(sink.offer(delivery("a")), Offer::Queued);
        assert_eq!(sink.offer(delivery("a")), Offer::Dropped(Some(1)));
        assert_eq!(sink.offer(delivery("a")), Offer::Dropped(None));
        let waker = futures_util::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(matches!(
            source.poll_recv(&mut cx),
            std::task::Poll::Ready(Some(_))
        ));
        assert_eq!(sink.offer(delivery("a")), Offer::Queued);
    }

    #[test]
    fn qos0_is_dropped_while_the_inbound_budget_is_spent() {
        let (sink, _source) = queue(10, "t", Arc::default());
        let message = msg("a");
        let budget = InboundBudget::new(1);
        let spent = Delivery {
            charge: budget.charge(&message),
            message,
            ack: None,
        };
        assert_eq!(
            sink.offer(spent),
            Offer::Dropped(Some(1)),
            "room, but no budget"
        );
        assert_eq!(sink.offer(delivery("a")), Offer::Queued);
    }
}
