//! The consumers' gate: how [`Client::stop`](super::Client::stop) ends delivery before
//! it disconnects.
//!
//! Closing the gate makes every handler take no further message and every
//! `Subscription` stream end, so that what was not consumed is not acknowledged and
//! the broker delivers it again in the next session. A handler already handling a
//! message finishes it (its acknowledgement leaves before the DISCONNECT); one still
//! running when the grace period is over is cancelled, and its message is not
//! acknowledged either.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
pub(crate) struct Consumers {
    closed: AtomicBool,
    /// Handlers in the middle of a message.
    busy: AtomicUsize,
    /// Notified when the last busy handler finishes.
    idle: Notify,
    /// Cancels the handlers still running after the grace period.
    cancel: CancellationToken,
}

/// A handler at work on one message; dropping it marks the handler idle.
#[derive(Debug)]
pub(crate) struct Busy<'a>(&'a Consumers);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        if self.0.busy.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Consumers {
    /// Deliver no further message: handlers stop taking them, streams end. True for
    /// the call that closed the gate.
    pub(crate) fn close(&self) -> bool {
        !self.closed.swap(true, Ordering::SeqCst)
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::SeqCst)
    }

    /// A handler is about to handle a message; `None` once the gate is closed (the
    /// message is then left unacknowledged).
    pub(crate) fn enter(&self) -> Option<Busy<'_>> {
        // Counted before looking at the flag, and `close` sets the flag before
        // `is_idle` counts: either the handler sees the gate closed, or the stop sees
        // the handler busy.
        self.busy.fetch_add(1, Ordering::SeqCst);
        let busy = Busy(self);
        (!self.is_closed()).then_some(busy)
    }

    pub(crate) fn is_idle(&self) -> bool {
        self.busy.load(Ordering::SeqCst) == 0
    }

    /// Notified when the last busy handler finishes; enable it before checking
    /// [`is_idle`](Self::is_idle).
    pub(crate) fn idle_signal(&self) -> &Notify {
        &self.idle
    }

    /// Cancel the handlers still at work.
    pub(crate) fn cancel_running(&self) {
        self.cancel.cancel();
    }

    /// Completes when running handlers must give up.
    pub(crate) fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_admits_no_handler() {
        let consumers = Consumers::default();
        let busy = consumers.enter();
        assert!(busy.is_some());
        assert!(!consumers.is_idle());
        assert!(consumers.close());
        assert!(!consumers.close(), "closed once");
        assert!(consumers.enter().is_none());
        assert!(!consumers.is_idle(), "the running handler still counts");
        drop(busy);
        assert!(consumers.is_idle());
    }
}
