//! The queue of requests from the client's handles to the connection engine.
//!
//! Pushing and waking are separate steps: callers push while holding the lock that
//! keeps their own bookkeeping in the queue's order, and wake the engine after
//! releasing it, so no wake-up (which may cost a system call) happens under a lock
//! other tasks wait on. The engine takes everything queued in one go.
//!
//! Only an engine waiting for requests (or yielding to a publisher, see
//! [`RequestQueue::wake_on_next`]) is woken. A wake-up that reaches the engine
//! while it runs makes the runtime re-queue it and rouse another worker thread, and
//! a busy engine takes what is queued before it waits again anyway. Waking it only
//! when it waits took the defaults row of the benchmark (128 tasks publishing QoS 1)
//! from 1.04-1.15 to 1.32-1.44 of raw rumqttc's msg/s (`crates/courier/guides/benchmarks.md`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;
use rumqttc::Request;

/// The engine is gone: the client stopped.
#[derive(Debug)]
pub(crate) struct Closed;

#[derive(Debug, Default)]
struct Queue {
    requests: VecDeque<Request>,
    closed: bool,
}

#[derive(Debug, Default)]
pub(crate) struct RequestQueue {
    queue: Mutex<Queue>,
    engine: AtomicWaker,
    /// The engine waits for requests (set by [`poll_ready`](Self::poll_ready),
    /// cleared by [`stop_waiting`](Self::stop_waiting) and by the wake-up).
    waiting: AtomicBool,
}

impl RequestQueue {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `request` without waking the engine; call [`wake`](Self::wake) next.
    pub(crate) fn push(&self, request: Request) -> Result<(), Closed> {
        let mut queue = self.lock();
        if queue.closed {
            return Err(Closed);
        }
        queue.requests.push_back(request);
        Ok(())
    }

    /// Queue `request` and wake the engine.
    pub(crate) fn send(&self, request: Request) -> Result<(), Closed> {
        self.push(request)?;
        self.wake();
        Ok(())
    }

    /// Wake the engine if it waits for requests. A busy engine is not woken: it
    /// takes what is queued before it waits again.
    pub(crate) fn wake(&self) {
        if self.waiting.swap(false, Ordering::SeqCst) {
            self.engine.wake();
        }
    }

    /// Have the next request wake the engine although it is not waiting for one: the
    /// driver is about to yield to a publisher it just settled, and that publisher's
    /// next request should resume it at once (on the same worker thread, right after
    /// the publisher) rather than when the runtime gets round to the yield. Undone
    /// by [`stop_waiting`](Self::stop_waiting) or by the wake-up.
    pub(crate) fn wake_on_next(&self, waker: &Waker) {
        self.engine.register(waker);
        self.waiting.store(true, Ordering::SeqCst);
    }

    /// The engine stopped waiting for requests (another event came first).
    pub(crate) fn stop_waiting(&self) {
        self.waiting.store(false, Ordering::SeqCst);
    }

    /// Refuse further requests.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
    }

    /// Move every queued request to the end of `into`.
    pub(crate) fn take_all(&self, into: &mut VecDeque<Request>) {
        into.append(&mut self.lock().requests);
    }

    /// Ready once a request is queued; registers the engine for a wake-up otherwise.
    pub(crate) fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        // Set before looking: a request pushed after the look sees the flag (the
        // queue's lock orders the two) and wakes the engine.
        self.wake_on_next(cx.waker());
        if self.lock().requests.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::{Wake, Waker};

    use rumqttc::PubAck;

    use super::*;

    #[derive(Default)]
    struct Counting(AtomicUsize);

    impl Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A queue whose engine polled it empty and now waits; the engine's waker counts
    /// its wake-ups.
    fn waiting_queue() -> (RequestQueue, Arc<Counting>, Waker) {
        let queue = RequestQueue::default();
        let woken = Arc::new(Counting::default());
        let waker = Waker::from(woken.clone());
        assert!(
            queue
                .poll_ready(&mut Context::from_waker(&waker))
                .is_pending()
        );
        (queue, woken, waker)
    }

    fn ack() -> Request {
        Request::PubAck(PubAck::new(1))
    }

    #[test]
    fn a_waiting_engine_is_woken_by_a_request() {
        let (queue, woken, waker) = waiting_queue();
        queue.send(ack()).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1);
        assert!(
            queue
                .poll_ready(&mut Context::from_waker(&waker))
                .is_ready()
        );
    }

    #[test]
    fn an_engine_that_yields_is_woken_by_the_next_request_only() {
        let queue = RequestQueue::default();
        let woken = Arc::new(Counting::default());
        queue.wake_on_next(&Waker::from(woken.clone()));
        queue.send(ack()).unwrap();
        queue.send(ack()).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 1, "one wake-up, then busy");
    }

    #[test]
    fn a_busy_engine_is_not_woken_and_finds_the_request() {
        let (queue, woken, waker) = waiting_queue();
        queue.stop_waiting();
        queue.send(ack()).unwrap();
        assert_eq!(woken.0.load(Ordering::SeqCst), 0);
        let ready = queue.poll_ready(&mut Context::from_waker(&waker));
        assert!(ready.is_ready(), "nothing lost");
    }
}
