//! [`OtelLayer`] and the middleware it builds, [`Otel<S>`]: spans, metrics and
//! trace-context propagation around every publish, subscribe, unsubscribe, stop and
//! handled message.

use std::error::Error;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use ::metrics::Label;
use courier_core::client::middleware::{
    Handler, Layer, PublishRequest, Publisher, Stopper, SubscribeRequest, Subscribed, Subscriber,
    UnsubscribeRequest, Unsubscriber,
};
use courier_core::{
    BoxError, Client, Event, Message, PublishError, QoS, SubscribeError, UnsubscribeError,
};
use opentelemetry::context::FutureExt as _;
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use crate::carrier::{PropertiesExtractor, PropertiesInjector};
use crate::metrics::Flow;
use crate::semconv::{self, metric_names, operation, span_names};

/// Maps a topic to the value of the metrics' `mqtt.topic` label.
pub(crate) type TopicTransformer = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Where trace context is injected from and extracted with.
#[derive(Clone)]
pub(crate) enum Propagation {
    /// `opentelemetry::global::get_text_map_propagator`, looked up at every call.
    Global,
    /// A propagator of the application's choice.
    Custom(Arc<dyn TextMapPropagator + Send + Sync>),
}

impl fmt::Debug for Propagation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Propagation::Global => f.write_str("Global"),
            Propagation::Custom(p) => f.debug_tuple("Custom").field(p).finish(),
        }
    }
}

impl Propagation {
    fn inject(&self, cx: &Context, properties: &mut Vec<(String, String)>) {
        let mut injector = PropertiesInjector::new(properties);
        match self {
            Propagation::Global => opentelemetry::global::get_text_map_propagator(|p| {
                p.inject_context(cx, &mut injector);
            }),
            Propagation::Custom(p) => p.inject_context(cx, &mut injector),
        }
    }

    fn extract(&self, properties: &[(String, String)]) -> Context {
        let extractor = PropertiesExtractor::new(properties);
        let current = Context::current();
        match self {
            Propagation::Global => opentelemetry::global::get_text_map_propagator(|p| {
                p.extract_with_context(&current, &extractor)
            }),
            Propagation::Custom(p) => p.extract_with_context(&current, &extractor),
        }
    }
}

/// Which operations are instrumented.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Paths {
    pub(crate) publish: bool,
    pub(crate) subscribe: bool,
    pub(crate) unsubscribe: bool,
    pub(crate) handler: bool,
}

/// What one installation shares between its layers and its event callback.
pub(crate) struct Shared {
    pub(crate) service: String,
    pub(crate) client_id: Option<String>,
    /// `None` when traces are off.
    pub(crate) tracer: Option<Arc<BoxedTracer>>,
    pub(crate) propagation: Propagation,
    pub(crate) topic_transformer: TopicTransformer,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) paths: Paths,
    pub(crate) metrics: bool,
    /// `service.name` and the extra attributes, as metric labels.
    pub(crate) base_labels: Vec<Label>,
    /// A `Connected` event was seen: the next one is a reconnect.
    pub(crate) connected_once: AtomicBool,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("service", &self.service)
            .field("client_id", &self.client_id)
            .field("traces", &self.tracer.is_some())
            .field("propagation", &self.propagation)
            .field("attributes", &self.attributes)
            .field("paths", &self.paths)
            .field("metrics", &self.metrics)
            .finish_non_exhaustive()
    }
}

impl Shared {
    /// The attributes every span gets.
    fn span_attributes(&self, client_id: Option<&str>, op: &'static str) -> Vec<KeyValue> {
        let mut attrs = vec![
            KeyValue::new(semconv::SERVICE_NAME, self.service.clone()),
            KeyValue::new(semconv::MESSAGING_SYSTEM, semconv::MESSAGING_SYSTEM_MQTT),
            KeyValue::new(semconv::MESSAGING_OPERATION_TYPE, op),
        ];
        if let Some(id) = client_id.or(self.client_id.as_deref()) {
            attrs.push(KeyValue::new(semconv::MQTT_CLIENT_ID, id.to_owned()));
            attrs.push(KeyValue::new(semconv::MESSAGING_CLIENT_ID, id.to_owned()));
        }
        attrs.extend(self.attributes.iter().cloned());
        attrs
    }

    /// Start a span, as the child of `parent`, and return the context holding it.
    fn start_span(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: Vec<KeyValue>,
        parent: &Context,
    ) -> Option<Context> {
        let tracer = self.tracer.as_deref()?;
        let span = tracer
            .span_builder(name)
            .with_kind(kind)
            .with_attributes(attributes)
            .start_with_context(tracer, parent);
        Some(parent.with_span(span))
    }

    /// Metric labels: `service.name`, the extra attributes, `mqtt.clientid` when
    /// known, and the transformed topic.
    /// One label set per filter, when metrics are on.
    fn filter_labels<'f>(&self, filters: impl Iterator<Item = &'f str>) -> Vec<Vec<Label>> {
        if !self.metrics {
            return Vec::new();
        }
        filters
            .map(|filter| self.labels(None, Some(filter)))
            .collect()
    }

    fn labels(&self, client_id: Option<&str>, topic: Option<&str>) -> Vec<Label> {
        let mut labels = self.base_labels.clone();
        if let Some(id) = client_id.or(self.client_id.as_deref()) {
            labels.push(Label::new(semconv::MQTT_CLIENT_ID, id.to_owned()));
        }
        if let Some(topic) = topic {
            labels.push(Label::new(
                semconv::MQTT_TOPIC,
                (self.topic_transformer)(topic),
            ));
        }
        labels
    }

    fn set_connected(&self, connected: bool) {
        if self.metrics {
            ::metrics::gauge!(metric_names::CONNECTED, self.labels(None, None)).set(if connected {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Keep the connection gauges (the `on_event` callback).
    pub(crate) fn on_event(&self, event: &Event) {
        if !self.metrics {
            return;
        }
        match event {
            Event::Connected { .. } => {
                self.set_connected(true);
                let reconnects =
                    ::metrics::counter!(metric_names::RECONNECTS, self.labels(None, None));
                if self.connected_once.swap(true, Ordering::Relaxed) {
                    reconnects.increment(1);
                } else {
                    // Register the series at zero.
                    reconnects.increment(0);
                }
            }
            Event::Disconnected { .. } | Event::Stopped => self.set_connected(false),
            _ => {}
        }
    }

    /// Count a publish in flight until the guard drops.
    fn inflight(&self) -> Option<Inflight> {
        self.metrics.then(|| {
            let gauge = ::metrics::gauge!(metric_names::INFLIGHT, self.labels(None, None));
            gauge.increment(1.0);
            Inflight(gauge)
        })
    }
}

/// Decrements the in-flight gauge when dropped (completed, failed or cancelled).
struct Inflight(::metrics::Gauge);

impl Drop for Inflight {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// One instrumented operation: counts the attempt when started, records latency,
/// failure and the span's end when finished, or, if dropped first (cancelled, or
/// the handler panicked), as a failure.
struct Op<'a> {
    shared: &'a Shared,
    flow: Flow,
    /// The context holding the operation's span (traces on).
    cx: Option<Context>,
    /// One label set per filter (metrics on): each gets its own attempt.
    labels: Vec<Vec<Label>>,
    started: Instant,
    finished: bool,
}

impl<'a> Op<'a> {
    fn start(shared: &'a Shared, flow: Flow, cx: Option<Context>, labels: Vec<Vec<Label>>) -> Self {
        for set in &labels {
            flow.attempt(set);
        }
        Op {
            shared,
            flow,
            cx,
            labels,
            started: Instant::now(),
            finished: false,
        }
    }

    /// The context to run the next service in: the span's, or the current one.
    fn context(&self) -> Context {
        self.cx.clone().unwrap_or_else(Context::current)
    }

    fn finish(mut self, error: Option<&(dyn Error + 'static)>) {
        self.finished = true;
        self.record(error.map(Failure::Error));
    }

    fn record(&mut self, failure: Option<Failure<'_>>) {
        let seconds = self.started.elapsed().as_secs_f64();
        if self.shared.metrics {
            for set in &self.labels {
                if failure.is_some() {
                    self.flow.failure(set);
                }
                self.flow.latency(set, seconds);
            }
        }
        if let Some(cx) = &self.cx {
            let span = cx.span();
            match failure {
                Some(Failure::Error(e)) => {
                    span.record_error(e);
                    span.set_status(Status::error(format!("{}: {e}", self.flow.error_message())));
                }
                Some(Failure::Dropped) => {
                    span.add_event(
                        "exception",
                        vec![KeyValue::new(
                            "exception.message",
                            "cancelled or panicked before completion",
                        )],
                    );
                    span.set_status(Status::error(format!(
                        "{}: cancelled or panicked before completion",
                        self.flow.error_message()
                    )));
                }
                None => {}
            }
            span.end();
        }
    }
}

impl Drop for Op<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finished = true;
            self.record(Some(Failure::Dropped));
        }
    }
}

#[derive(Clone, Copy)]
enum Failure<'e> {
    Error(&'e (dyn Error + 'static)),
    Dropped,
}

fn qos_value(qos: QoS) -> i64 {
    i64::from(u8::from(qos))
}

/// The layer of [`Otel`]: one type for every slot. Its service implements
/// [`Publisher`], [`Subscriber`], [`Unsubscriber`], [`Stopper`] or [`Handler`]
/// whenever the service it wraps does. Made by
/// [`CourierOtel::layer`](crate::CourierOtel::layer); the layers of one
/// `OtelLayer` (and its clones) share their configuration and connection state, so
/// use one per client.
#[derive(Debug, Clone)]
pub struct OtelLayer {
    pub(crate) shared: Arc<Shared>,
}

impl OtelLayer {
    /// The callback for [`ClientBuilder::on_event`](courier_core::ClientBuilder::on_event)
    /// that keeps `courier.connected` and `courier.reconnects`.
    pub fn event_callback(&self) -> impl Fn(&Event) + Send + Sync + 'static {
        let shared = self.shared.clone();
        move |event| shared.on_event(event)
    }
}

impl<S> Layer<S> for OtelLayer {
    type Service = Otel<S>;

    fn layer(&self, inner: S) -> Otel<S> {
        Otel {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The middleware [`OtelLayer`] builds.
#[derive(Debug, Clone)]
pub struct Otel<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> Otel<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Unwrap the service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Publisher> Publisher for Otel<S> {
    async fn publish(&self, mut request: PublishRequest) -> Result<(), PublishError> {
        let shared = &*self.shared;
        if !shared.paths.publish {
            return self.inner.publish(request).await;
        }
        let cx = if shared.tracer.is_some() {
            let mut attrs = shared.span_attributes(None, operation::PUBLISH);
            attrs.extend([
                KeyValue::new(semconv::MQTT_TOPIC, request.topic.clone()),
                KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, request.topic.clone()),
                KeyValue::new(semconv::MQTT_QOS, qos_value(request.qos)),
                KeyValue::new(semconv::MQTT_RETAINED, request.retain),
                KeyValue::new(
                    semconv::MESSAGING_MESSAGE_BODY_SIZE,
                    i64::try_from(request.payload.len()).unwrap_or(i64::MAX),
                ),
            ]);
            shared.start_span(
                span_names::PUBLISH,
                SpanKind::Producer,
                attrs,
                &Context::current(),
            )
        } else {
            None
        };
        if let Some(cx) = &cx {
            shared.propagation.inject(cx, &mut request.properties);
        }
        let labels = if shared.metrics {
            vec![shared.labels(None, Some(&request.topic))]
        } else {
            Vec::new()
        };
        let op = Op::start(shared, Flow::Publish, cx, labels);
        let _inflight = shared.inflight();
        let result = self.inner.publish(request).with_context(op.context()).await;
        op.finish(result.as_ref().err().map(|e| e as &(dyn Error + 'static)));
        result
    }
}

impl<S: Subscriber> Subscriber for Otel<S> {
    async fn subscribe(&self, request: SubscribeRequest) -> Result<Subscribed, SubscribeError> {
        let shared = &*self.shared;
        if !shared.paths.subscribe {
            return self.inner.subscribe(request).await;
        }
        let cx = if shared.tracer.is_some() {
            let mut attrs = shared.span_attributes(None, operation::SUBSCRIBE);
            let name = match request.filters.as_slice() {
                [(filter, qos)] => {
                    attrs.extend([
                        KeyValue::new(semconv::MQTT_TOPIC, filter.clone()),
                        KeyValue::new(semconv::MESSAGING_DESTINATION_NAME, filter.clone()),
                        KeyValue::new(semconv::MQTT_QOS, qos_value(*qos)),
                    ]);
                    span_names::SUBSCRIBE
                }
                filters => {
                    let mut with_qos: Vec<String> = filters
                        .iter()
                        .map(|(f, q)| format!("{f} | qos[{}]", u8::from(*q)))
                        .collect();
                    with_qos.sort();
                    attrs.push(KeyValue::new(
                        semconv::MQTT_TOPIC_WITH_QOS,
                        string_array(with_qos),
                    ));
                    span_names::SUBSCRIBE_MULTIPLE
                }
            };
            shared.start_span(name, SpanKind::Client, attrs, &Context::current())
        } else {
            None
        };
        let labels = shared.filter_labels(request.filters.iter().map(|(f, _)| f.as_str()));
        let op = Op::start(shared, Flow::Subscribe, cx, labels);
        let result = self
            .inner
            .subscribe(request)
            .with_context(op.context())
            .await;
        op.finish(result.as_ref().err().map(|e| e as &(dyn Error + 'static)));
        result
    }
}

impl<S: Unsubscriber> Unsubscriber for Otel<S> {
    async fn unsubscribe(&self, request: UnsubscribeRequest) -> Result<(), UnsubscribeError> {
        let shared = &*self.shared;
        if !shared.paths.unsubscribe {
            return self.inner.unsubscribe(request).await;
        }
        let cx = if shared.tracer.is_some() {
            let mut attrs = shared.span_attributes(None, operation::UNSUBSCRIBE);
            attrs.push(KeyValue::new(
                semconv::MQTT_TOPIC,
                string_array(request.filters.clone()),
            ));
            shared.start_span(
                span_names::UNSUBSCRIBE,
                SpanKind::Client,
                attrs,
                &Context::current(),
            )
        } else {
            None
        };
        let labels = shared.filter_labels(request.filters.iter().map(String::as_str));
        let op = Op::start(shared, Flow::Unsubscribe, cx, labels);
        let result = self
            .inner
            .unsubscribe(request)
            .with_context(op.context())
            .await;
        op.finish(result.as_ref().err().map(|e| e as &(dyn Error + 'static)));
        result
    }
}

impl<S: Stopper> Stopper for Otel<S> {
    async fn stop(&self) {
        self.inner.stop().await;
        self.shared.set_connected(false);
    }
}

impl<S: Handler> Handler for Otel<S> {
    async fn handle(&self, client: Client, message: Message) -> Result<(), BoxError> {
        let shared = &*self.shared;
        if !shared.paths.handler {
            return self.inner.handle(client, message).await;
        }
        let client_id = match &shared.client_id {
            Some(_) => None,
            None => Some(client.client_id().to_owned()).filter(|id| !id.is_empty()),
        };
        let cx = if shared.tracer.is_some() {
            let parent = shared.propagation.extract(message.properties());
            let mut attrs = shared.span_attributes(client_id.as_deref(), operation::PROCESS);
            attrs.extend([
                KeyValue::new(semconv::MQTT_TOPIC, message.topic().to_owned()),
                KeyValue::new(
                    semconv::MESSAGING_DESTINATION_NAME,
                    message.topic().to_owned(),
                ),
                KeyValue::new(semconv::MQTT_QOS, qos_value(message.qos())),
                KeyValue::new(semconv::MQTT_RETAINED, message.retained()),
                KeyValue::new(
                    semconv::MESSAGING_MESSAGE_BODY_SIZE,
                    i64::try_from(message.payload().len()).unwrap_or(i64::MAX),
                ),
            ]);
            shared.start_span(span_names::CALLBACK, SpanKind::Consumer, attrs, &parent)
        } else {
            None
        };
        let labels = if shared.metrics {
            vec![shared.labels(client_id.as_deref(), Some(message.topic()))]
        } else {
            Vec::new()
        };
        let op = Op::start(shared, Flow::Callback, cx, labels);
        let result = self
            .inner
            .handle(client, message)
            .with_context(op.context())
            .await;
        op.finish(
            result
                .as_ref()
                .err()
                .map(|e| &**e as &(dyn Error + 'static)),
        );
        result
    }
}

fn string_array(values: Vec<String>) -> Value {
    Value::Array(Array::String(
        values.into_iter().map(StringValue::from).collect(),
    ))
}
