//! Counters and latency recorders shared by the courier and raw sides, so both do
//! exactly the same work per message.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::Notify;

/// The process-wide time base of payload timestamps.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// Nanoseconds since the time base.
pub(crate) fn now_ns() -> u64 {
    base().elapsed().as_nanos() as u64
}

/// A `len`-byte payload starting with the current timestamp.
pub(crate) fn stamped(len: usize) -> Bytes {
    let mut v = vec![0x5a; len.max(8)];
    v[..8].copy_from_slice(&now_ns().to_le_bytes());
    Bytes::from(v)
}

/// Counts received messages and remembers when the last one arrived.
#[derive(Debug)]
pub(crate) struct Progress {
    target: u64,
    count: AtomicU64,
    last_ns: AtomicU64,
    done: Notify,
}

impl Progress {
    pub(crate) fn new(target: u64) -> Self {
        Progress {
            target,
            count: AtomicU64::new(0),
            last_ns: AtomicU64::new(0),
            done: Notify::new(),
        }
    }

    /// One more message; true when it was the last expected one.
    pub(crate) fn hit(&self) -> bool {
        self.last_ns.store(now_ns(), Ordering::Relaxed);
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        if n == self.target {
            self.done.notify_one();
        }
        n >= self.target
    }

    pub(crate) fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// When the last message arrived, as [`now_ns`].
    pub(crate) fn last_ns(&self) -> u64 {
        self.last_ns.load(Ordering::Relaxed)
    }

    /// Wait until every expected message arrived, at most `within`. True if they did.
    pub(crate) async fn wait(&self, within: Duration) -> bool {
        if self.count() >= self.target {
            return true;
        }
        let _ = tokio::time::timeout(within, self.done.notified()).await;
        self.count() >= self.target
    }
}

/// Records the latency of stamped payloads.
#[derive(Debug)]
pub(crate) struct Recorder {
    skip: u64,
    progress: Progress,
    latencies: Mutex<Vec<Duration>>,
}

impl Recorder {
    /// Expect `target` messages, not recording the first `skip`.
    pub(crate) fn new(target: u64, skip: u64) -> Self {
        Recorder {
            skip,
            progress: Progress::new(target),
            latencies: Mutex::new(Vec::with_capacity(target as usize)),
        }
    }

    pub(crate) fn record(&self, payload: &[u8]) {
        let now = now_ns();
        let mut ts = [0u8; 8];
        if let Some(head) = payload.get(..8) {
            ts.copy_from_slice(head);
        }
        let latency = Duration::from_nanos(now.saturating_sub(u64::from_le_bytes(ts)));
        if self.progress.count() >= self.skip {
            self.latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(latency);
        }
        self.progress.hit();
    }

    pub(crate) async fn wait(&self, within: Duration) -> bool {
        self.progress.wait(within).await
    }

    pub(crate) fn take(&self) -> Vec<Duration> {
        std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }
}
