//! Publishing through a cluster: [`ClusterPublish`].

use std::fmt;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use courier_core::codec::{Codec, encode_value};
use courier_core::{EncodeError, IntoPayload, PublishError, QoS};
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::{ClusterClient, deadline_after};
use crate::conn::Health;

type Encode<'a> = Box<dyn FnOnce(&dyn Codec) -> Result<Bytes, EncodeError> + Send + 'a>;

/// A publish being set up. Await it to send; it resolves when a broker
/// acknowledged the message (PUBACK for QoS 1, PUBCOMP for QoS 2, written for QoS 0).
///
/// It goes to one connection chosen by the cluster's [`Balance`](crate::Balance).
/// If that connection closes, is removed or goes down before the acknowledgement,
/// the message is sent again on another connection (at least once: a broker that
/// had taken it may deliver it twice), within the same timeout.
#[must_use = "a publish does nothing until awaited"]
pub struct ClusterPublish<'a> {
    cluster: &'a ClusterClient,
    topic: String,
    payload: Encode<'a>,
    qos: QoS,
    retain: bool,
    timeout: Option<Duration>,
}

impl fmt::Debug for ClusterPublish<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterPublish")
            .field("topic", &self.topic)
            .field("qos", &self.qos)
            .field("retain", &self.retain)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl ClusterPublish<'_> {
    /// The QoS (default [`QoS::AtLeastOnce`]).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Ask the broker to retain the message (default false).
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Bound the whole publish, re-sends included (default: the template's write
    /// timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a> IntoFuture for ClusterPublish<'a> {
    type Output = Result<(), PublishError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// # Cancel safety
    ///
    /// Dropping the future before the message was queued on a connection sends
    /// nothing; after that, that connection still delivers it, only the
    /// acknowledgement is no longer awaited (and no re-send happens).
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

impl ClusterPublish<'_> {
    async fn send(self) -> Result<(), PublishError> {
        let inner = &self.cluster.inner;
        let timeout = self.timeout.unwrap_or_else(|| inner.write_timeout());
        let deadline = deadline_after(Instant::now(), timeout);
        let mut encode = Some(self.payload);
        let mut payload = Bytes::new();
        let mut tried: Vec<u64> = Vec::new();
        loop {
            let conn = inner.pick(&tried, deadline, timeout).await?;
            if let Some(encode) = encode.take() {
                payload = encode(conn.client.codec())?;
            }
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(PublishError::Timeout(timeout));
            }
            let mut health = conn.meta.health.subscribe();
            let attempt = conn
                .client
                .publish(self.topic.clone(), payload.clone())
                .qos(self.qos)
                .retain(self.retain)
                .timeout(remaining)
                .into_future();
            let outcome = tokio::select! {
                result = attempt => Some(result),
                _ = health.wait_for(|h| *h != Health::Up) => None,
            };
            match outcome {
                Some(Ok(())) => {
                    conn.meta.published.fetch_add(1, Ordering::Relaxed);
                    return Ok(());
                }
                Some(Err(
                    PublishError::Closed
                    | PublishError::StoppedInFlight
                    | PublishError::Aborted
                    | PublishError::ConnectionLost
                    | PublishError::SessionLost,
                )) => {
                    tracing::debug!(client_id = %conn.meta.client_id, "courier-cluster: connection closed under a publish; re-sending");
                    tried.push(conn.meta.id);
                }
                // The connection went down with the message unacknowledged: re-send
                // elsewhere (it may still arrive from there after a reconnect).
                None => {
                    tracing::debug!(client_id = %conn.meta.client_id, "courier-cluster: connection down under a publish; re-sending");
                }
                Some(Err(PublishError::Timeout(_))) => return Err(PublishError::Timeout(timeout)),
                Some(Err(e)) => return Err(e),
            }
        }
    }
}

impl ClusterClient {
    /// Publish raw bytes or text (`&str`, `String`, `Vec<u8>`, `Bytes`, ...) or a codec
    /// wrapper such as `Json(value)`, like [`Client::publish`](courier_core::Client::publish).
    /// Returns a builder: set `.qos()`, `.retain()`, `.timeout()`, then `.await` it.
    ///
    /// # Errors
    ///
    /// When awaited: invalid topic, oversized packet, encode failure (nothing sent);
    /// no acknowledgement within the timeout (re-sends included); cluster stopped.
    ///
    /// # Cancel safety
    ///
    /// See [`ClusterPublish`]'s `IntoFuture`.
    pub fn publish<'a>(
        &'a self,
        topic: impl Into<String>,
        payload: impl IntoPayload + Send + 'a,
    ) -> ClusterPublish<'a> {
        ClusterPublish {
            cluster: self,
            topic: topic.into(),
            payload: Box::new(move |codec| payload.into_payload(codec)),
            qos: QoS::default(),
            retain: false,
            timeout: None,
        }
    }

    /// Publish a value encoded with the template's codec (JSON by default), like
    /// [`Client::publish_value`](courier_core::Client::publish_value).
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`PublishError::Encode`] when the codec
    /// cannot encode the value.
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Self::publish).
    pub fn publish_value<'a, T: Serialize + Sync + ?Sized>(
        &'a self,
        topic: impl Into<String>,
        value: &'a T,
    ) -> ClusterPublish<'a> {
        ClusterPublish {
            cluster: self,
            topic: topic.into(),
            payload: Box::new(move |codec| encode_value(codec, value)),
            qos: QoS::default(),
            retain: false,
            timeout: None,
        }
    }
}
