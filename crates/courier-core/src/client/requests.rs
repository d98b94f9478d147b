//! The queue of requests from the client's handles to the connection engine.
//!
//! Pushing and waking are separate steps: callers push while holding the lock that
//! keeps their own bookkeeping in the queue's order, and wake the engine after
//! releasing it, so no wake-up (which may cost a system call) happens under a lock
//! other tasks wait on. The engine takes everything queued in one go.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

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

    /// Wake the engine if it waits for requests.
    pub(crate) fn wake(&self) {
        self.engine.wake();
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
        self.engine.register(cx.waker());
        if self.lock().requests.is_empty() {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    }
}
