//! [`InboundBudget`]: bounds the memory taken by received messages that wait for
//! their consumers, whatever the broker sends.
//!
//! Each message handed to a subscription (or held for one) is charged its payload,
//! its topic and a fixed overhead until it is consumed or dropped. While the
//! charges reach the budget (`ClientBuilder::max_inbound_buffer`), the engine reads
//! nothing more from the socket: what the broker sends beyond it waits in the
//! kernel's buffers and then at the broker (TCP flow control), rather than in this
//! process's memory, and nothing is dropped. Writing goes on meanwhile:
//! acknowledgements, publishes and pings.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::message::Message;

/// What a message costs beyond its payload and topic: the delivery, the message's
/// allocation and the inbound ledger's entry (about 240 bytes, measured).
const OVERHEAD: usize = 256;

#[derive(Debug)]
pub(crate) struct InboundBudget {
    used: AtomicUsize,
    limit: usize,
    /// The engine, waiting for room to read again.
    engine: AtomicWaker,
}

/// One delivery's share of the budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    budget: Arc<InboundBudget>,
    bytes: usize,
}

impl Charge {
    /// The budget this charge is part of is spent (this charge included).
    pub(crate) fn budget_spent(&self) -> bool {
        self.budget.is_spent()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        let before = self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
        if before >= self.budget.limit && before - self.bytes < self.budget.limit {
            self.budget.engine.wake();
        }
    }
}

impl InboundBudget {
    /// A budget of `limit` bytes.
    pub(crate) fn new(limit: usize) -> Arc<Self> {
        Arc::new(InboundBudget {
            used: AtomicUsize::new(0),
            limit,
            engine: AtomicWaker::new(),
        })
    }

    /// Charge a delivery of `message`.
    pub(crate) fn charge(self: &Arc<Self>, message: &Message) -> Charge {
        let bytes = message.payload().len() + message.topic().len() + OVERHEAD;
        self.used.fetch_add(bytes, Ordering::AcqRel);
        Charge {
            budget: self.clone(),
            bytes,
        }
    }

    /// The charges reach the budget: read nothing more for now.
    pub(crate) fn is_spent(&self) -> bool {
        self.used.load(Ordering::Acquire) >= self.limit
    }

    /// Ready once there is room again; registers the engine to be woken otherwise.
    pub(crate) fn poll_room(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.engine.register(cx.waker());
        if self.is_spent() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::JsonCodec;
    use crate::message::MessageParts;

    #[test]
    fn charges_spend_the_budget_and_dropping_them_gives_it_back() {
        let message =
            Message::from_parts(MessageParts::new("t", vec![0u8; 100]), Arc::new(JsonCodec));
        let one = 100 + 1 + OVERHEAD;
        let budget = InboundBudget::new(2 * one);
        let first = budget.charge(&message);
        assert!(!budget.is_spent());
        let second = budget.charge(&message);
        assert!(budget.is_spent());
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(budget.poll_room(&mut cx).is_pending());
        drop(second);
        assert!(budget.poll_room(&mut cx).is_ready());
        drop(first);
        assert_eq!(budget.used.load(Ordering::Acquire), 0);
    }
}
