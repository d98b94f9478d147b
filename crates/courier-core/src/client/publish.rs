//! Publishing: [`PublishBuilder`] and the acknowledgement-awaiting send.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use rumqttc::Request;
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::time::timeout_at;

use super::lifecycle::deadline_after;

use std::sync::Weak;

use super::middleware::{PublishRequest, Publisher};
use super::outbound::PendingPublish;
use super::{Client, Link, Shared};
use crate::codec::encode_value;
use crate::error::{EncodeError, PublishError, quote_input};
use crate::payload::IntoPayload;
use crate::qos::QoS;
use crate::topic::validate_topic_name;

/// A publish being set up. Await it to send; it resolves when the broker acknowledged
/// the message: PUBACK for QoS 1, PUBCOMP for QoS 2, written to the connection for
/// QoS 0.
#[must_use = "a publish does nothing until awaited"]
#[derive(Debug)]
pub struct PublishBuilder<'a> {
    client: &'a Client,
    topic: String,
    payload: Result<Bytes, EncodeError>,
    qos: QoS,
    retain: bool,
    timeout: Option<Duration>,
}

impl PublishBuilder<'_> {
    /// The QoS (default [`QoS::AtLeastOnce`]).
    pub fn qos(mut self, qos: QoS) -> Self {
        self.qos = qos;
        self
    }

    /// Ask the broker to retain the message for future subscribers (default false).
    pub fn retain(mut self, retain: bool) -> Self {
        self.retain = retain;
        self
    }

    /// Bound the wait for a slot in the in-flight window plus the acknowledgement
    /// (default: the client's write timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

impl<'a> IntoFuture for PublishBuilder<'a> {
    type Output = Result<(), PublishError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    /// # Cancel safety
    ///
    /// Dropping the future before the message was queued sends nothing; after that,
    /// the message is still delivered (and retransmitted as needed), only the
    /// acknowledgement is no longer awaited.
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let mut request = PublishRequest::new(self.topic, self.payload?);
            request.qos = self.qos;
            request.retain = self.retain;
            request.timeout = self.timeout;
            match self.client.link() {
                Link::Connection(shared) => match &shared.chains().publisher {
                    Some(chain) => chain.publish(request).await,
                    None => send(shared, request).await,
                },
                Link::Backend(remote) => remote.publish(request).await,
            }
        })
    }
}

/// The last hop of the publish chain: sends to the broker.
#[derive(Debug)]
pub(crate) struct ClientPublisher(pub(crate) Weak<Shared>);

impl Publisher for ClientPublisher {
    async fn publish(&self, request: PublishRequest) -> Result<(), PublishError> {
        match self.0.upgrade() {
            Some(shared) => send(&shared, request).await,
            None => Err(PublishError::Closed),
        }
    }
}

impl Client {
    /// Publish raw bytes or text (`&str`, `String`, `Vec<u8>`, `Bytes`, ...) or a codec
    /// wrapper such as `Json(value)`. Returns a builder: set `.qos()`, `.retain()`,
    /// `.timeout()`, then `.await` it.
    ///
    /// # Errors
    ///
    /// When awaited: invalid topic, oversized packet, encode failure (nothing sent);
    /// no acknowledgement within the timeout; client stopped.
    ///
    /// # Cancel safety
    ///
    /// See [`PublishBuilder`]'s `IntoFuture`: cancelling after the message was queued
    /// does not unsend it.
    pub fn publish(
        &self,
        topic: impl Into<String>,
        payload: impl IntoPayload,
    ) -> PublishBuilder<'_> {
        PublishBuilder {
            client: self,
            topic: topic.into(),
            payload: payload.into_payload(self.codec()),
            qos: QoS::default(),
            retain: false,
            timeout: None,
        }
    }

    /// Publish a value encoded with the client's codec (JSON by default), like the
    /// Go `Publish(ctx, topic, value)`.
    ///
    /// # Errors
    ///
    /// As [`publish`](Self::publish), plus [`PublishError::Encode`] when the codec
    /// cannot encode the value.
    ///
    /// # Cancel safety
    ///
    /// As [`publish`](Self::publish).
    pub fn publish_value<T: Serialize + ?Sized>(
        &self,
        topic: impl Into<String>,
        value: &T,
    ) -> PublishBuilder<'_> {
        PublishBuilder {
            client: self,
            topic: topic.into(),
            payload: encode_value(self.codec(), value),
            qos: QoS::default(),
            retain: false,
            timeout: None,
        }
    }
}

/// Size of a PUBLISH packet on the wire.
pub(crate) fn packet_size(topic_len: usize, payload_len: usize, qos: QoS) -> usize {
    let remaining = 2 + topic_len + payload_len + if qos == QoS::AtMostOnce { 0 } else { 2 };
    let length_bytes = match remaining {
        0..=127 => 1,
        128..=16_383 => 2,
        16_384..=2_097_151 => 3,
        _ => 4,
    };
    1 + length_bytes + remaining
}

pub(crate) fn wire_qos(qos: QoS) -> rumqttc::QoS {
    match qos {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

async fn send(shared: &Shared, request: PublishRequest) -> Result<(), PublishError> {
    let PublishRequest {
        topic,
        payload,
        qos,
        retain,
        timeout,
        ..
    } = request;
    let timeout = timeout.unwrap_or(shared.opts.builder.write_timeout);
    validate_topic_name(&topic).map_err(|source| PublishError::InvalidTopic {
        topic: quote_input(&topic),
        source,
    })?;
    let max = shared.opts.builder.max_packet_size;
    let size = packet_size(topic.len(), payload.len(), qos);
    if size > max {
        return Err(PublishError::PacketTooLarge { size, max });
    }
    if shared.is_closing() {
        return Err(PublishError::Closed);
    }
    let deadline = deadline_after(timeout);
    let window = if qos == QoS::AtMostOnce {
        &shared.qos0_window
    } else {
        &shared.window
    };
    // A free slot is the common case: take it without registering a timer.
    match window.try_acquire() {
        Ok(permit) => permit.forget(),
        Err(tokio::sync::TryAcquireError::Closed) => return Err(PublishError::Closed),
        Err(tokio::sync::TryAcquireError::NoPermits) => {
            match timeout_at(deadline, window.acquire()).await {
                Ok(Ok(permit)) => permit.forget(),
                Ok(Err(_)) => return Err(PublishError::Closed),
                Err(_) => return Err(PublishError::Timeout(timeout)),
            }
        }
    }
    let (tx, rx) = oneshot::channel();
    let wire = wire_qos(qos);
    {
        let mut outbound = shared.outbound();
        if shared.is_closing() {
            drop(outbound);
            window.add_permits(1);
            return Err(PublishError::Closed);
        }
        let mut packet = rumqttc::Publish::from_bytes(topic, wire, payload);
        packet.retain = retain;
        outbound.push_publish(PendingPublish {
            waiter: Some(tx),
            packet: (qos != QoS::AtMostOnce).then(|| packet.clone()),
            waiting_since: None,
        });
        // Queued under the outbound lock, so the FIFO keeps the queue's order.
        if shared.requests.push(Request::Publish(packet)).is_err() {
            outbound.pop_last_publish();
            drop(outbound);
            window.add_permits(1);
            return Err(PublishError::Closed);
        }
    }
    shared.requests.wake();
    match timeout_at(deadline, rx).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(PublishError::Closed),
        Err(_) => Err(PublishError::Timeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packet_size_matches_rumqttc() {
        for (topic, payload, qos) in [
            (1, 0, QoS::AtMostOnce),
            (10, 100, QoS::AtLeastOnce),
            (5, 200, QoS::ExactlyOnce),
            (3, 20_000, QoS::AtLeastOnce),
            (3, 3_000_000, QoS::AtMostOnce),
        ] {
            let mut p = rumqttc::Publish::new("x".repeat(topic), wire_qos(qos), vec![0u8; payload]);
            if qos != QoS::AtMostOnce {
                p.pkid = 1;
            }
            assert_eq!(
                packet_size(topic, payload, qos),
                p.size(),
                "{topic} {payload} {qos}"
            );
        }
    }
}
