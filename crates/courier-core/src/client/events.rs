//! Connection state and lifecycle events.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_core::Stream;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::error::ConnectError;

/// Where the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConnectionState {
    /// Connecting for the first time.
    Connecting,
    /// Connected: the broker sent CONNACK.
    Connected,
    /// The connection was lost; waiting before the next attempt.
    Disconnected,
    /// Reconnecting after a loss.
    Reconnecting,
    /// Stopped for good ([`Client::stop`](super::Client::stop), or no reconnect).
    Stopped,
}

impl ConnectionState {
    /// True for [`ConnectionState::Connected`].
    pub fn is_connected(self) -> bool {
        self == ConnectionState::Connected
    }
}

/// Something that happened to the client, as seen by [`Client::events`](super::Client::events).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Event {
    /// Connected (CONNACK). `session_present` tells whether the broker kept our session.
    Connected {
        /// The broker still had our session.
        session_present: bool,
    },
    /// An established connection was lost.
    Disconnected {
        /// Why, in words.
        reason: String,
    },
    /// A connection attempt failed.
    ConnectFailed {
        /// 1 for the first attempt after a loss (or the first connect).
        attempt: u32,
        /// Why it failed.
        error: Arc<ConnectError>,
    },
    /// Waiting before the next connection attempt.
    Reconnecting {
        /// The attempt that follows the delay.
        attempt: u32,
        /// How long the client waits first.
        delay: Duration,
    },
    /// The broker closed the connection within a few seconds of accepting it, with
    /// no error on this side: most likely another client connected with the same
    /// client id and took the session over (the broker drops the older connection
    /// on every takeover, so two such clients take it from each other in turn). The
    /// client backs off before reconnecting, as after a failed attempt
    /// ([`Event::Reconnecting`] follows), so that this never turns into a
    /// reconnect storm.
    SessionTakenOver {
        /// How long the connection lived after its CONNACK.
        lived: Duration,
    },
    /// The ack watchdog found a publish unacknowledged for longer than `ack_timeout`
    /// and is forcing a reconnect.
    AckTimeout {
        /// How long the oldest publish had waited.
        waited: Duration,
    },
    /// A subscription's buffer was full and QoS 0 messages were dropped.
    SlowConsumer {
        /// The subscription's filters (comma-separated when it has several).
        filter: String,
        /// Messages dropped since the last such event for this subscription.
        dropped: u64,
    },
    /// A message handler returned an error or panicked. The message is acknowledged.
    HandlerFailed {
        /// The message's topic.
        topic: String,
        /// What the handler reported.
        error: String,
    },
    /// A message matched no subscription, neither when it arrived nor within the
    /// hold period after the first connect (`ClientBuilder::unrouted_hold`), and no
    /// fallback handler is set (`ClientBuilder::unrouted_handler`): it was
    /// acknowledged and dropped.
    Unrouted {
        /// The message's topic.
        topic: String,
        /// Its QoS.
        qos: crate::QoS,
    },
    /// The client's background task panicked: a bug, or a panic in something it
    /// runs synchronously (an `on_event` callback, a custom `Backoff`). The client
    /// stops as if the connection were lost for good: publishes in flight fail
    /// with `ConnectionLost`, `wait_connected()` returns, [`Event::Stopped`]
    /// follows.
    Crashed {
        /// The panic's message.
        reason: String,
    },
    /// A message larger than `ClientBuilder::max_packet_size` arrived. Its bytes
    /// were skipped as they came (never held in memory), and it was acknowledged
    /// and dropped, so that the broker does not send it again on every reconnect
    /// (a message it cannot deliver would otherwise block the ones after it for
    /// good). See `docs/subscribe.md`, "Messages over the size limit".
    MessageTooLarge {
        /// The message's topic.
        topic: String,
        /// Its QoS.
        qos: crate::QoS,
        /// The packet's size in bytes.
        size: usize,
        /// The client's `max_packet_size`.
        max: usize,
    },
    /// The client stopped.
    Stopped,
    /// This reader fell more than 1,024 events behind and missed the `missed` oldest;
    /// yielded by [`EventStream`] in their place. Callbacks set with the builder see
    /// every event and never this one.
    Lagged {
        /// How many events this reader missed.
        missed: u64,
    },
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Event::Connected { session_present } => {
                write!(f, "connected (session present: {session_present})")
            }
            Event::Disconnected { reason } => write!(f, "disconnected: {reason}"),
            Event::ConnectFailed { attempt, error } => {
                write!(f, "connect attempt {attempt} failed: {error}")
            }
            Event::Reconnecting { attempt, delay } => {
                write!(f, "reconnect attempt {attempt} in {delay:?}")
            }
            Event::SessionTakenOver { lived } => write!(
                f,
                "the broker closed the connection {lived:?} after accepting it \
                 (another client with the same client id?)"
            ),
            Event::AckTimeout { waited } => {
                write!(f, "no acknowledgement for {waited:?}: reconnecting")
            }
            Event::SlowConsumer { filter, dropped } => {
                write!(
                    f,
                    "slow consumer on {filter:?}: {dropped} QoS 0 messages dropped"
                )
            }
            Event::HandlerFailed { topic, error } => {
                write!(f, "handler for {topic:?} failed: {error}")
            }
            Event::Unrouted { topic, qos } => {
                write!(
                    f,
                    "no subscription for a QoS {qos} message on {topic:?}: dropped"
                )
            }
            Event::MessageTooLarge {
                topic,
                qos,
                size,
                max,
            } => write!(
                f,
                "a {qos} message on {topic:?} of {size} bytes is over the {max}-byte limit: \
                 acknowledged and dropped"
            ),
            Event::Crashed { reason } => {
                write!(f, "the client's background task panicked: {reason}")
            }
            Event::Stopped => f.write_str("stopped"),
            Event::Lagged { missed } => {
                write!(f, "{missed} events missed: the reader fell behind")
            }
        }
    }
}

/// How many events a reader of [`EventStream`] may fall behind before it misses
/// some. A failed attempt makes two events: this holds those of over 500 attempts,
/// four minutes of an outage at the test suite's 50 ms to 500 ms backoff (the former
/// 16 lasted under 4 s) and far longer at the default backoff. The buffer (about
/// 85 KiB) is made by the first `events()` call: a client nobody reads events from
/// does not pay for it (1,000 idle connections measured 114.6 KiB each with it made
/// at start, 34.5 KiB without).
pub(crate) const EVENT_BUFFER: usize = 1024;

/// A stream of [`Event`]s from the moment it was created. A reader that falls more
/// than 1,024 events behind misses the oldest, and is told how many with an
/// [`Event::Lagged`] in their place.
#[derive(Debug)]
pub struct EventStream {
    inner: BroadcastStream<Event>,
}

impl EventStream {
    pub(crate) fn new(rx: tokio::sync::broadcast::Receiver<Event>) -> Self {
        EventStream {
            inner: BroadcastStream::new(rx),
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.inner).poll_next(cx).map(|next| {
            next.map(|received| match received {
                Ok(event) => event,
                Err(BroadcastStreamRecvError::Lagged(missed)) => Event::Lagged { missed },
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;
    use tokio::sync::broadcast;

    use super::*;

    #[tokio::test]
    async fn a_lagging_reader_is_told_how_many_events_it_missed() {
        let (tx, rx) = broadcast::channel(2);
        let mut events = EventStream::new(rx);
        for attempt in 1..=5 {
            tx.send(Event::Reconnecting {
                attempt,
                delay: Duration::ZERO,
            })
            .unwrap();
        }
        drop(tx);
        let read: Vec<String> = events.by_ref().map(|e| e.to_string()).collect().await;
        assert_eq!(
            read,
            [
                "3 events missed: the reader fell behind",
                "reconnect attempt 4 in 0ns",
                "reconnect attempt 5 in 0ns",
            ]
        );
    }
}
