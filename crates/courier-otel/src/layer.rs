//! [`OtelLayer`] and the middleware it builds, [`Otel<S>`]: spans, metrics and
//! trace-context propagation around every publish, subscribe, unsubscribe, stop and
//! handled message.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use courier_core::client::middleware::{
    Handler, Layer, PublishRequest, Publisher, Stopper, SubscribeRequest, Subscribed, Subscriber,
    UnsubscribeRequest, Unsubscriber,
};
use courier_core::{
    BoxError, Client, Event, Message, PublishError, QoS, SubscribeError, UnsubscribeError,
};
use opentelemetry::context::{FutureExt as _, WithContext};
use opentelemetry::global::BoxedTracer;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Array, Context, KeyValue, StringValue, Value};

use crate::carrier::{PropertiesExtractor, PropertiesInjector};
use crate::metrics::{Flow, Recorder};
use crate::propagation::W3cTraceContextPropagator;
use crate::semconv::{self, operation, span_names};

/// Maps a topic to the value of the metrics' `mqtt.topic` label.
pub(crate) type TopicTransformer = Arc<dyn Fn(&str) -> String + Send + Sync>;

/// Where trace context is injected from and extracted with.
#[derive(Clone)]
pub(crate) enum Propagation {
    /// `opentelemetry::global::get_text_map_propagator`, looked up at every call;
    /// the [`W3cTraceContextPropagator`] while the global one is the default no-op
    /// (no fields).
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
    /// Run `f` with the propagator.
    fn with<R>(&self, mut f: impl FnMut(&dyn TextMapPropagator) -> R) -> R {
        match self {
            Propagation::Global => opentelemetry::global::get_text_map_propagator(|p| {
                if p.fields().next().is_some() {
                    f(p)
                } else {
                    f(&W3cTraceContextPropagator::new())
                }
            }),
            Propagation::Custom(p) => f(&**p),
        }
    }

    fn inject(&self, cx: &Context, properties: &mut Vec<(String, String)>) {
        let mut injector = PropertiesInjector::new(properties);
        self.with(|p| p.inject_context(cx, &mut injector));
    }

    /// The context of `properties` on top of `base`.
    fn extract(&self, base: &Context, properties: &[(String, String)]) -> Context {
        let extractor = PropertiesExtractor::new(properties);
        self.with(|p| p.extract_with_context(base, &extractor))
    }
}

/// The parent of the spans courier starts: the current OpenTelemetry context when it
/// holds a span (the plain OpenTelemetry SDK, or `tracing-opentelemetry` with its
/// default context activation); otherwise, with the `tracing-bridge` feature, the
/// OpenTelemetry context of the current `tracing` span (`tracing-opentelemetry`
/// without context activation). The span itself is always made with the
/// OpenTelemetry API: the `tracing` span only lends its context.
fn parent_context() -> Context {
    let current = Context::current();
    #[cfg(feature = "tracing-bridge")]
    if !current.span().span_context().is_valid() {
        use tracing_opentelemetry::OpenTelemetrySpanExt as _;
        let span = tracing::Span::current();
        if !span.is_none() {
            let cx = span.context();
            if cx.span().span_context().is_valid() {
                return cx;
            }
        }
    }
    current
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
    pub(crate) recorder: Recorder,
    /// `service.name` and the extra attributes: the labels of every metric.
    pub(crate) metric_attributes: Vec<KeyValue>,
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
            .field("recorder", &self.recorder)
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
    fn filter_labels<'f>(&self, filters: impl Iterator<Item = &'f str>) -> Vec<Vec<KeyValue>> {
        if !self.recorder.is_on() {
            return Vec::new();
        }
        filters
            .map(|filter| self.labels(None, Some(filter)))
            .collect()
    }

    fn labels(&self, client_id: Option<&str>, topic: Option<&str>) -> Vec<KeyValue> {
        let mut labels = self.metric_attributes.clone();
        if let Some(id) = client_id.or(self.client_id.as_deref()) {
            labels.push(KeyValue::new(semconv::MQTT_CLIENT_ID, id.to_owned()));
        }
        if let Some(topic) = topic {
            labels.push(KeyValue::new(
                semconv::MQTT_TOPIC,
                (self.topic_transformer)(topic),
            ));
        }
        labels
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        if self.recorder.is_on() {
            self.recorder.connected(&self.labels(None, None), connected);
        }
    }

    /// Keep the connection gauges (the `on_event` callback).
    pub(crate) fn on_event(&self, event: &Event) {
        if !self.recorder.is_on() {
            return;
        }
        match event {
            Event::Connected { .. } => {
                self.set_connected(true);
                // The first connection registers the series at zero.
                let reconnect = self.connected_once.swap(true, Ordering::Relaxed);
                self.recorder
                    .reconnects(&self.labels(None, None), u64::from(reconnect));
            }
            Event::Disconnected { .. } | Event::Stopped => self.set_connected(false),
            _ => {}
        }
    }

    /// Count a publish in flight until the guard drops.
    fn inflight(&self) -> Option<Inflight<'_>> {
        self.recorder.is_on().then(|| {
            let labels = self.labels(None, None);
            self.recorder.inflight(&labels, true);
            Inflight {
                recorder: &self.recorder,
                labels,
            }
        })
    }

    /// Start the consumer span of a delivered `message`: the child of the trace
    /// context it carries, or of the current context when it carries none.
    fn consumer_span(
        &self,
        name: &'static str,
        op: &'static str,
        client_id: Option<&str>,
        message: &Message,
    ) -> Option<Context> {
        self.tracer.as_ref()?;
        let parent = self
            .propagation
            .extract(&parent_context(), message.properties());
        let mut attrs = self.span_attributes(client_id, op);
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
        self.start_span(name, SpanKind::Consumer, attrs, &parent)
    }
}

/// Takes the publish out of the in-flight count when dropped (completed, failed or
/// cancelled).
struct Inflight<'a> {
    recorder: &'a Recorder,
    labels: Vec<KeyValue>,
}

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.recorder.inflight(&self.labels, false);
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
    labels: Vec<Vec<KeyValue>>,
    started: Instant,
    finished: bool,
}

impl<'a> Op<'a> {
    fn start(
        shared: &'a Shared,
        flow: Flow,
        cx: Option<Context>,
        labels: Vec<Vec<KeyValue>>,
    ) -> Self {
        for set in &labels {
            shared.recorder.attempt(flow, set);
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

    /// The next service's future, made and run in [`context`](Self::context). Made
    /// in it too: a closure handler creates its future (and often a `tracing` span
    /// with `.instrument`) when called, before the first poll.
    fn within<F: Future>(&self, make: impl FnOnce() -> F) -> WithContext<F> {
        let cx = self.context();
        let future = {
            let _attached = cx.clone().attach();
            make()
        };
        future.with_context(cx)
    }

    fn finish(mut self, error: Option<&(dyn Error + 'static)>) {
        self.finished = true;
        self.record(error.map(Failure::Error));
    }

    fn record(&mut self, failure: Option<Failure<'_>>) {
        let seconds = self.started.elapsed().as_secs_f64();
        let recorder = &self.shared.recorder;
        for set in &self.labels {
            if failure.is_some() {
                recorder.failure(self.flow, set);
            }
            recorder.latency(self.flow, set, seconds);
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
    /// Trace a message read from a [`Subscription`](courier_core::Subscription)
    /// stream, which has no handler chain: starts an `otelcourier.Receive` span
    /// (`SpanKind::Consumer`, `messaging.operation.type = receive`, the attributes
    /// of the callback span), the child of the trace context the message carries
    /// (else of the current context), and returns the context holding it. Run the
    /// processing in it (`future.with_context(cx)`, or with `tracing`,
    /// `span.set_parent(cx)`); publishes made there continue the trace. The span
    /// ends when the last clone of the context is dropped. `None` when traces are
    /// off.
    ///
    /// Under MQTT 3.1.1 with the [envelope](crate::envelope), open it first
    /// ([`envelope::open_message`](crate::envelope::open_message)): the context
    /// is read from [`Message::properties`].
    pub fn receive(&self, message: &Message) -> Option<Context> {
        let shared = &*self.shared;
        shared.consumer_span(span_names::RECEIVE, operation::RECEIVE, None, message)
    }

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
                &parent_context(),
            )
        } else {
            None
        };
        if let Some(cx) = &cx {
            shared.propagation.inject(cx, &mut request.properties);
        }
        let labels = if shared.recorder.is_on() {
            vec![shared.labels(None, Some(&request.topic))]
        } else {
            Vec::new()
        };
        let op = Op::start(shared, Flow::Publish, cx, labels);
        let _inflight = shared.inflight();
        let result = op.within(|| self.inner.publish(request)).await;
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
            shared.start_span(name, SpanKind::Client, attrs, &parent_context())
        } else {
            None
        };
        let labels = shared.filter_labels(request.filters.iter().map(|(f, _)| f.as_str()));
        let op = Op::start(shared, Flow::Subscribe, cx, labels);
        let result = op.within(|| self.inner.subscribe(request)).await;
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
                &parent_context(),
            )
        } else {
            None
        };
        let labels = shared.filter_labels(request.filters.iter().map(String::as_str));
        let op = Op::start(shared, Flow::Unsubscribe, cx, labels);
        let result = op.within(|| self.inner.unsubscribe(request)).await;
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
        let cx = shared.consumer_span(
            span_names::CALLBACK,
            operation::PROCESS,
            client_id.as_deref(),
            &message,
        );
        let labels = if shared.recorder.is_on() {
            vec![shared.labels(client_id.as_deref(), Some(message.topic()))]
        } else {
            Vec::new()
        };
        let op = Op::start(shared, Flow::Callback, cx, labels);
        let result = op.within(|| self.inner.handle(client, message)).await;
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

#[cfg(test)]
mod tests {
    use opentelemetry::propagation::text_map_propagator::FieldIter;
    use opentelemetry::propagation::{Extractor, Injector};
    use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};

    use super::*;

    /// An application's propagator: writes one field of its own.
    #[derive(Debug)]
    struct Marker(Vec<String>);

    impl TextMapPropagator for Marker {
        fn inject_context(&self, _cx: &Context, injector: &mut dyn Injector) {
            injector.set("x-marker", "1".to_owned());
        }

        fn extract_with_context(&self, cx: &Context, _extractor: &dyn Extractor) -> Context {
            cx.clone()
        }

        fn fields(&self) -> FieldIter<'_> {
            FieldIter::new(&self.0)
        }
    }

    fn injected(propagation: &Propagation) -> Vec<String> {
        let cx = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from(1),
            SpanId::from(2),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut properties = Vec::new();
        propagation.inject(&cx, &mut properties);
        properties.into_iter().map(|(k, _)| k).collect()
    }

    /// The default is the global propagator; W3C stands in for OpenTelemetry's
    /// no-op default. (The only test here that sets the global propagator.)
    #[test]
    fn the_global_propagator_with_w3c_standing_in_for_the_noop() {
        assert_eq!(injected(&Propagation::Global), ["traceparent"]);
        opentelemetry::global::set_text_map_propagator(Marker(vec!["x-marker".to_owned()]));
        assert_eq!(injected(&Propagation::Global), ["x-marker"]);
        let custom = Propagation::Custom(Arc::new(W3cTraceContextPropagator::new()));
        assert_eq!(injected(&custom), ["traceparent"]);
    }
}
