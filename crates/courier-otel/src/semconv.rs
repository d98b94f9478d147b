//! Names: attribute keys, span names and metric names.
//!
//! The OpenTelemetry messaging semantic conventions are still experimental (the
//! `opentelemetry-semantic-conventions` crate has them only behind
//! `semconv_experimental`), so this crate defines the few it uses as its own
//! constants, as the Go original (`otelcourier/semconv.go`) does.

/// The message's topic (spans: the topic as published or received; metrics: the
/// topic after the [topic transformer](crate::CourierOtel::topic_transformer)). On
/// an unsubscribe span it is the array of filters.
pub const MQTT_TOPIC: &str = "mqtt.topic";
/// The QoS level, 0, 1 or 2 (spans).
pub const MQTT_QOS: &str = "mqtt.qos";
/// The retain flag (spans).
pub const MQTT_RETAINED: &str = "mqtt.retained";
/// The MQTT client identifier (spans and metrics).
pub const MQTT_CLIENT_ID: &str = "mqtt.clientid";
/// The filters of a SUBSCRIBE with several filters, as `"filter | qos[n]"` strings
/// (the `otelcourier.SubscribeMultiple` span).
pub const MQTT_TOPIC_WITH_QOS: &str = "mqtt.topicwithqos";
/// The service the client belongs to (spans and metrics).
pub const SERVICE_NAME: &str = "service.name";

/// OTel messaging convention: the messaging system, always [`MESSAGING_SYSTEM_MQTT`].
pub const MESSAGING_SYSTEM: &str = "messaging.system";
/// The value of [`MESSAGING_SYSTEM`].
pub const MESSAGING_SYSTEM_MQTT: &str = "mqtt";
/// OTel messaging convention: the topic a message is published to or received from.
pub const MESSAGING_DESTINATION_NAME: &str = "messaging.destination.name";
/// OTel messaging convention: the kind of operation, one of the [`operation`] values.
pub const MESSAGING_OPERATION_TYPE: &str = "messaging.operation.type";
/// OTel messaging convention: the client identifier (same value as [`MQTT_CLIENT_ID`]).
pub const MESSAGING_CLIENT_ID: &str = "messaging.client.id";
/// OTel messaging convention: the payload size in bytes (publish and callback spans;
/// for the callback, without the envelope).
pub const MESSAGING_MESSAGE_BODY_SIZE: &str = "messaging.message.body.size";

/// Values of [`MESSAGING_OPERATION_TYPE`].
pub mod operation {
    /// A publish (the `otelcourier.Publish` span).
    pub const PUBLISH: &str = "publish";
    /// A delivered message handled by a callback (the `otelcourier.Callback` span);
    /// the conventions' name for push-based consumption.
    pub const PROCESS: &str = "process";
    /// A message read from a `Subscription` stream (the `otelcourier.Receive`
    /// span); the conventions' name for pull-based consumption.
    pub const RECEIVE: &str = "receive";
    /// A SUBSCRIBE (not in the conventions).
    pub const SUBSCRIBE: &str = "subscribe";
    /// An UNSUBSCRIBE (not in the conventions).
    pub const UNSUBSCRIBE: &str = "unsubscribe";
}

/// Span names, as in the Go original.
pub mod span_names {
    /// A publish, `SpanKind::Producer`.
    pub const PUBLISH: &str = "otelcourier.Publish";
    /// A SUBSCRIBE with one filter, `SpanKind::Client`.
    pub const SUBSCRIBE: &str = "otelcourier.Subscribe";
    /// A SUBSCRIBE with several filters, `SpanKind::Client`.
    pub const SUBSCRIBE_MULTIPLE: &str = "otelcourier.SubscribeMultiple";
    /// An UNSUBSCRIBE, `SpanKind::Client`.
    pub const UNSUBSCRIBE: &str = "otelcourier.Unsubscribe";
    /// One delivered message handled by a subscription's handler, `SpanKind::Consumer`,
    /// the child of the publisher's span when the trace context travelled with the
    /// message. (The Go original names this span after the callback function; Rust
    /// closures have no useful name, so it is fixed.)
    pub const CALLBACK: &str = "otelcourier.Callback";
    /// One message read from a `Subscription` stream, `SpanKind::Consumer`, started by
    /// [`OtelLayer::receive`](crate::OtelLayer::receive); the child of the
    /// publisher's span when the trace context travelled with the message.
    pub const RECEIVE: &str = "otelcourier.Receive";
}

/// Metric names, as in the Go original. Prometheus exporters turn the dots into
/// underscores and, following Prometheus' conventions, add `_total` to counters and
/// the unit to the latency histograms: `courier.publish.attempts` is scraped as
/// `courier_publish_attempts_total` and `courier.publish.latency` as
/// `courier_publish_latency_seconds` (`opentelemetry-prometheus` does so by itself;
/// `metrics-exporter-prometheus` with `with_recommended_naming(true)`).
pub mod metric_names {
    /// Publishes attempted (counter).
    pub const PUBLISH_ATTEMPTS: &str = "courier.publish.attempts";
    /// Publishes that failed (counter).
    pub const PUBLISH_FAILURES: &str = "courier.publish.failures";
    /// Publish latency until the broker's acknowledgement, in seconds (histogram).
    pub const PUBLISH_LATENCY: &str = "courier.publish.latency";
    /// Subscribe attempts, one per filter (counter).
    pub const SUBSCRIBE_ATTEMPTS: &str = "courier.subscribe.attempts";
    /// Subscribe failures, one per filter (counter).
    pub const SUBSCRIBE_FAILURES: &str = "courier.subscribe.failures";
    /// Subscribe latency until the SUBACK, in seconds (histogram).
    pub const SUBSCRIBE_LATENCY: &str = "courier.subscribe.latency";
    /// Unsubscribe attempts, one per filter (counter).
    pub const UNSUBSCRIBE_ATTEMPTS: &str = "courier.unsubscribe.attempts";
    /// Unsubscribe failures, one per filter (counter).
    pub const UNSUBSCRIBE_FAILURES: &str = "courier.unsubscribe.failures";
    /// Unsubscribe latency until the UNSUBACK, in seconds (histogram).
    pub const UNSUBSCRIBE_LATENCY: &str = "courier.unsubscribe.latency";
    /// Messages handed to a handler (counter).
    pub const CALLBACK_ATTEMPTS: &str = "courier.subscribe.callback.attempts";
    /// Handler calls that returned an error or panicked (counter).
    pub const CALLBACK_FAILURES: &str = "courier.subscribe.callback.failures";
    /// Handler run time, in seconds (histogram).
    pub const CALLBACK_LATENCY: &str = "courier.subscribe.callback.latency";
    /// 1 while the client is connected, 0 otherwise (gauge).
    pub const CONNECTED: &str = "courier.connected";
    /// Successful reconnects after the first connection (counter).
    pub const RECONNECTS: &str = "courier.reconnects";
    /// Publishes in flight: started through the publish chain and not yet
    /// acknowledged or failed (gauge).
    pub const INFLIGHT: &str = "courier.inflight";
}
