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
    /// The client stopped.
    Stopped,
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
            Event::Stopped => f.write_str("stopped"),
        }
    }
}

/// A stream of [`Event`]s from the moment it was created. A reader that falls more
/// than 16 events behind skips the oldest.
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
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Err(BroadcastStreamRecvError::Lagged(_)))) => continue,
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}
