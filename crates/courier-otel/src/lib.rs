//! # courier-otel
//!
//! OpenTelemetry for [courier-rs](https://github.com/courier-rs/courier-rs) (the Go
//! `otelcourier`): spans around every publish, subscribe, unsubscribe and handled
//! message, metrics for each of them plus connection gauges, and W3C trace-context
//! propagation from publisher to subscriber.
//!
//! - **Traces** go through the OpenTelemetry API ([`opentelemetry`], re-exported):
//!   the application chooses the SDK and exporter; by default spans go to the
//!   global tracer provider. Their parent is the current OpenTelemetry context;
//!   with the `tracing-bridge` feature, failing that, the current `tracing` span's
//!   (`tracing-opentelemetry`), so that courier's spans join the trace of an
//!   application instrumented with `tracing`.
//! - **Metrics** go through the OpenTelemetry metric API (the global meter provider
//!   by default) and through the [`metrics`](::metrics) facade (the recorder the
//!   application installs: Prometheus, StatsD, ...); see [`metrics`].
//! - **Propagation** injects the trace context into the publish's properties and
//!   extracts it from delivered messages, with the application's global propagator
//!   (W3C Trace Context while none is set). MQTT 3.1.1 has no headers, so the
//!   properties reach the subscriber only through the opt-in [envelope] (or, later,
//!   MQTT 5 user properties). Messages read from a `Subscription` stream are traced
//!   with [`OtelLayer::receive`].
//!
//! One call installs everything on a client builder, the Go `ApplyMiddlewares`:
//!
//! ```no_run
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use courier_core::Client;
//! use courier_otel::CourierOtel;
//!
//! let otel = CourierOtel::new("orders-service")
//!     .client_id("orders-1")
//!     .envelope(true);
//! let client = otel
//!     .install(Client::builder().address("localhost", 1883).client_id("orders-1"))
//!     .connect()
//!     .await?;
//! client.publish("orders/created", "{}").await?; // an otelcourier.Publish span
//! client.stop().await;
//! # Ok(()) }
//! ```
//!
//! See the telemetry guide (`courier::guides::otel` in the `courier-mqtt` docs) for every
//! span, metric and attribute.
#![cfg_attr(docsrs, feature(doc_cfg))]

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use courier_core::ClientBuilder;
use opentelemetry::global::{BoxedTracer, ObjectSafeTracerProvider};
use opentelemetry::metrics::{Meter, MeterProvider};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::{InstrumentationScope, KeyValue};

pub mod carrier;
pub mod envelope;
mod layer;
pub mod metrics;
pub mod propagation;
pub mod semconv;
pub mod topic;

pub use opentelemetry;

pub use envelope::{EnvelopeLayer, Enveloped};
pub use layer::{Otel, OtelLayer};
pub use propagation::W3cTraceContextPropagator;

use layer::{Paths, Propagation, Shared, TopicTransformer};

/// The instrumentation scope of this crate's tracer: `courier-otel` and its version.
pub fn instrumentation_scope() -> InstrumentationScope {
    InstrumentationScope::builder(env!("CARGO_PKG_NAME"))
        .with_version(env!("CARGO_PKG_VERSION"))
        .build()
}

/// The telemetry configuration of a client (the Go `otelcourier.New(service, opts...)`).
/// Setters consume and return it; [`install`](Self::install) adds the middleware to a
/// [`ClientBuilder`].
///
/// Defaults: traces and metrics on for publish, subscribe, unsubscribe and handlers;
/// the global tracer and meter providers (as set when `install` is called) and the
/// `metrics` facade; the global propagator ([`W3cTraceContextPropagator`] while
/// none is set); topics as metric labels unchanged; no envelope.
#[derive(Clone)]
#[must_use = "a CourierOtel does nothing until installed on a client builder"]
pub struct CourierOtel {
    service: String,
    client_id: Option<String>,
    tracer: Option<Arc<BoxedTracer>>,
    meter: Option<Meter>,
    propagation: Propagation,
    topic_transformer: TopicTransformer,
    attributes: Vec<KeyValue>,
    paths: Paths,
    traces: bool,
    metrics: bool,
    otel_metrics: bool,
    facade_metrics: bool,
    envelope: bool,
}

impl fmt::Debug for CourierOtel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CourierOtel")
            .field("service", &self.service)
            .field("client_id", &self.client_id)
            .field(
                "tracer",
                &self.tracer.as_ref().map_or("global", |_| "custom"),
            )
            .field("meter", &self.meter.as_ref().map_or("global", |_| "custom"))
            .field("propagation", &self.propagation)
            .field("attributes", &self.attributes)
            .field("paths", &self.paths)
            .field("traces", &self.traces)
            .field("metrics", &self.metrics)
            .field("otel_metrics", &self.otel_metrics)
            .field("facade_metrics", &self.facade_metrics)
            .field("envelope", &self.envelope)
            .finish_non_exhaustive()
    }
}

impl CourierOtel {
    /// Telemetry for the service `service_name` (the `service.name` attribute).
    pub fn new(service_name: impl Into<String>) -> Self {
        CourierOtel {
            service: service_name.into(),
            client_id: None,
            tracer: None,
            meter: None,
            propagation: Propagation::Global,
            topic_transformer: Arc::new(str::to_owned),
            attributes: Vec::new(),
            paths: Paths {
                publish: true,
                subscribe: true,
                unsubscribe: true,
                handler: true,
            },
            traces: true,
            metrics: true,
            otel_metrics: true,
            facade_metrics: true,
            envelope: false,
        }
    }

    /// The `mqtt.clientid` attribute and label. [`install`](Self::install) takes it
    /// from the builder when not given here; with [`layer`](Self::layer) alone, set it
    /// (handler spans and metrics fall back to the id of the
    /// [`Client`](courier_core::Client) they are handed).
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// Spans from this tracer provider (e.g. `opentelemetry_sdk`'s
    /// `SdkTracerProvider`) instead of the global one. The tracer is taken now, with
    /// this crate's [instrumentation scope](instrumentation_scope).
    pub fn tracer_provider<P>(mut self, provider: &P) -> Self
    where
        P: ObjectSafeTracerProvider + ?Sized,
    {
        self.tracer = Some(Arc::new(BoxedTracer::new(
            provider.boxed_tracer(instrumentation_scope()),
        )));
        self
    }

    /// Record the OpenTelemetry metrics with this meter provider (e.g.
    /// `opentelemetry_sdk`'s `SdkMeterProvider`) instead of the global one. The meter
    /// is taken now, with this crate's [instrumentation scope](instrumentation_scope).
    pub fn meter_provider<P>(mut self, provider: &P) -> Self
    where
        P: MeterProvider + ?Sized,
    {
        self.meter = Some(provider.meter_with_scope(instrumentation_scope()));
        self
    }

    /// Inject and extract trace context with `propagator` instead of the global one.
    pub fn propagator(
        mut self,
        propagator: impl TextMapPropagator + Send + Sync + 'static,
    ) -> Self {
        self.propagation = Propagation::Custom(Arc::new(propagator));
        self
    }

    /// Inject and extract trace context with the global propagator
    /// (`opentelemetry::global::set_text_map_propagator`), looked up at every call:
    /// the default, which this restores after [`propagator`](Self::propagator).
    /// While the global propagator is OpenTelemetry's default no-op one (no
    /// fields), the [`W3cTraceContextPropagator`] is used instead. To propagate
    /// nothing, pass `opentelemetry::propagation::NoopTextMapPropagator` to
    /// [`propagator`](Self::propagator).
    pub fn global_propagator(mut self) -> Self {
        self.propagation = Propagation::Global;
        self
    }

    /// Map each topic to the metrics' `mqtt.topic` label (default: unchanged), to
    /// keep the number of series low. See [`topic`] for ready transformers.
    pub fn topic_transformer(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.topic_transformer = Arc::new(f);
        self
    }

    /// Add an attribute to every span and, as a label, to every metric.
    pub fn attribute(mut self, attribute: KeyValue) -> Self {
        self.attributes.push(attribute);
        self
    }

    /// Add attributes to every span and, as labels, to every metric.
    pub fn attributes(mut self, attributes: impl IntoIterator<Item = KeyValue>) -> Self {
        self.attributes.extend(attributes);
        self
    }

    /// Instrument publishes (default true).
    pub fn publish(mut self, on: bool) -> Self {
        self.paths.publish = on;
        self
    }

    /// Instrument subscribes (default true).
    pub fn subscribe(mut self, on: bool) -> Self {
        self.paths.subscribe = on;
        self
    }

    /// Instrument unsubscribes (default true).
    pub fn unsubscribe(mut self, on: bool) -> Self {
        self.paths.unsubscribe = on;
        self
    }

    /// Instrument message handlers (default true).
    pub fn handler(mut self, on: bool) -> Self {
        self.paths.handler = on;
        self
    }

    /// Create spans and propagate trace context (default true).
    pub fn traces(mut self, on: bool) -> Self {
        self.traces = on;
        self
    }

    /// Record metrics at all (default true): `false` turns off both places below
    /// ([`otel_metrics`](Self::otel_metrics), [`facade_metrics`](Self::facade_metrics))
    /// and the connection gauges.
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// Record metrics through the OpenTelemetry metric API (default true): the
    /// global meter provider or [`meter_provider`](Self::meter_provider)'s.
    pub fn otel_metrics(mut self, on: bool) -> Self {
        self.otel_metrics = on;
        self
    }

    /// Record metrics through the [`metrics`](::metrics) facade (default true): the
    /// recorder the application installed.
    pub fn facade_metrics(mut self, on: bool) -> Self {
        self.facade_metrics = on;
        self
    }

    /// Carry message properties (the trace context) inside the payload, for MQTT
    /// 3.1.1 (default false). Every consumer of the topics this client publishes to
    /// must then open the envelope: see [`envelope`].
    pub fn envelope(mut self, on: bool) -> Self {
        self.envelope = on;
        self
    }

    /// The middleware for one client, to place by hand with the builder's
    /// `*_layer` methods (and [`OtelLayer::event_callback`] with `on_event`).
    /// [`install`](Self::install) does all of it.
    pub fn layer(&self) -> OtelLayer {
        let tracer = self.traces.then(|| {
            self.tracer.clone().unwrap_or_else(|| {
                Arc::new(opentelemetry::global::tracer_with_scope(
                    instrumentation_scope(),
                ))
            })
        });
        let mut metric_attributes =
            vec![KeyValue::new(semconv::SERVICE_NAME, self.service.clone())];
        metric_attributes.extend(self.attributes.iter().cloned());
        let meter = (self.metrics && self.otel_metrics).then(|| {
            self.meter
                .clone()
                .unwrap_or_else(|| opentelemetry::global::meter_with_scope(instrumentation_scope()))
        });
        let recorder = metrics::Recorder::new(meter.as_ref(), self.metrics && self.facade_metrics);
        OtelLayer {
            shared: Arc::new(Shared {
                service: self.service.clone(),
                client_id: self.client_id.clone(),
                tracer,
                propagation: self.propagation.clone(),
                topic_transformer: self.topic_transformer.clone(),
                attributes: self.attributes.clone(),
                paths: self.paths,
                recorder,
                metric_attributes,
                connected_once: AtomicBool::new(false),
            }),
        }
    }

    /// Add the middleware to `builder` (the Go `ApplyMiddlewares`): publish,
    /// subscribe, unsubscribe, stop and handler layers for the enabled paths, the
    /// envelope layers when [`envelope`](Self::envelope) is on (innermost on publish,
    /// after the trace context is injected; outermost on handlers, before it is
    /// extracted), and an `on_event` callback for the connection gauges.
    ///
    /// Layers added before `install` run outside these, layers added after run
    /// inside. With the envelope on, install last if your own publish layers
    /// change the payload, and note that handler layers added before `install` see
    /// enveloped payloads.
    pub fn install(&self, builder: ClientBuilder) -> ClientBuilder {
        let layer = if self.client_id.is_none() && !builder.configured_client_id().is_empty() {
            // Label with the builder's client id unless one was given explicitly.
            self.clone()
                .client_id(builder.configured_client_id())
                .layer()
        } else {
            self.layer()
        };
        let mut builder = builder;
        if self.metrics && self.facade_metrics {
            metrics::describe();
        }
        let envelope = EnvelopeLayer::new();
        builder = match (self.paths.publish, self.envelope) {
            (true, true) => builder.publish_layer((layer.clone(), envelope)),
            (true, false) => builder.publish_layer(layer.clone()),
            (false, true) => builder.publish_layer(envelope),
            (false, false) => builder,
        };
        if self.paths.subscribe {
            builder = builder.subscribe_layer(layer.clone());
        }
        if self.paths.unsubscribe {
            builder = builder.unsubscribe_layer(layer.clone());
        }
        builder = match (self.paths.handler, self.envelope) {
            (true, true) => builder.handler_layer((envelope, layer.clone())),
            (true, false) => builder.handler_layer(layer.clone()),
            (false, true) => builder.handler_layer(envelope),
            (false, false) => builder,
        };
        if self.metrics {
            builder = builder
                .stop_layer(layer.clone())
                .on_event(layer.event_callback());
        }
        builder
    }
}

/// [`CourierOtel::install`] as a builder method: `builder.with_otel(&otel)`.
pub trait OtelBuilderExt {
    /// Install `otel`'s middleware; see [`CourierOtel::install`].
    fn with_otel(self, otel: &CourierOtel) -> Self;
}

impl OtelBuilderExt for ClientBuilder {
    fn with_otel(self, otel: &CourierOtel) -> Self {
        otel.install(self)
    }
}
