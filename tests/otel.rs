#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test helpers: a failure fails the test"
)]
//! courier-otel against a real broker: a trace that travels from publisher to
//! handler in the envelope, spans and counters for failures, latency histograms,
//! the connection gauges, disabled paths, and the Prometheus page.
//!
//! The `metrics` recorder is global and can be set once per process: the first test
//! installs a Prometheus recorder (with its HTTP listener, on a thread and runtime of
//! its own so it outlives every test), and each test tells its series apart by a
//! service name of its own. Traces go to an in-memory exporter per test.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use courier::otel::opentelemetry::Context;
use courier::otel::opentelemetry::context::FutureExt as _;
use courier::otel::opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use courier::otel::semconv::{self, metric_names, span_names};
use courier::otel::{CourierOtel, OtelBuilderExt as _, metrics as otel_metrics};
use courier::{Client, Message, QoS};
use courier_integration_tests::{broker, client, client_id};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry_sdk::metrics::data::{AggregatedMetrics, MetricData};
use opentelemetry_sdk::metrics::{InMemoryMetricExporter, PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracer, SdkTracerProvider, SpanData};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing::Instrument as _;
use tracing_subscriber::layer::SubscriberExt as _;

/// The process-wide Prometheus recorder and the address of its HTTP listener.
struct Prometheus {
    handle: PrometheusHandle,
    addr: SocketAddr,
}

fn prometheus() -> &'static Prometheus {
    static PROMETHEUS: OnceLock<Prometheus> = OnceLock::new();
    PROMETHEUS.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let addr = std::net::TcpListener::bind("127.0.0.1:0")
                    .and_then(|l| l.local_addr())
                    .unwrap();
                let mut builder = PrometheusBuilder::new()
                    .with_recommended_naming(true)
                    .with_http_listener(addr);
                for (metric, buckets) in otel_metrics::LATENCY_BUCKETS {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)
                        .unwrap();
                }
                let (recorder, exporter) = builder.build().unwrap();
                let handle = recorder.handle();
                metrics::set_global_recorder(recorder).unwrap();
                tx.send(Prometheus { handle, addr }).unwrap();
                let _ = exporter.await;
            });
        });
        rx.recv().unwrap()
    })
}

/// A service name of this test's own, to filter its series by.
fn service(name: &str) -> String {
    client_id(&format!("svc-{name}"))
}

/// The sum of the series `name` (Prometheus form) whose labels include all `labels`
/// (Prometheus form: `service_name`, `mqtt_topic`, ...).
fn metric(name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_in(&prometheus().handle.render(), name, labels)
}

/// The sum of the series `name` in the Prometheus page `text` whose labels include
/// all `labels`.
fn metric_in(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric_name, rest) = series.split_once('{').unwrap_or((series, ""));
            let matches = metric_name == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            matches.then(|| value.parse::<f64>().ok()).flatten()
        })
        .sum()
}

/// Wait until `metric(name, labels)` satisfies `ok` (2 s at most); return it.
async fn wait_metric(name: &str, labels: &[(&str, &str)], ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let value = metric(name, labels);
        if ok(value) || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A tracer provider exporting to memory as each span ends.
fn tracing() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

/// The finished spans once `ok` holds for them (2 s at most).
async fn spans_until(
    exporter: &InMemorySpanExporter,
    ok: impl Fn(&[SpanData]) -> bool,
) -> Vec<SpanData> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        let spans = exporter.get_finished_spans().unwrap();
        if ok(&spans) || tokio::time::Instant::now() > deadline {
            return spans;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn named<'a>(spans: &'a [SpanData], name: &str) -> Vec<&'a SpanData> {
    spans.iter().filter(|s| s.name == name).collect()
}

fn the<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
    match named(spans, name).as_slice() {
        [span] => span,
        other => panic!("expected one {name} span, got {}: {spans:#?}", other.len()),
    }
}

fn attr(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

fn is_error(span: &SpanData) -> bool {
    matches!(span.status, Status::Error { .. })
}

/// GET `/metrics` with a raw HTTP/1.0 request; the body.
async fn scrape(addr: SocketAddr) -> String {
    let fetch = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&response).into_owned())
    };
    let response = tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .expect("the metrics page did not answer in 5 s")
        .unwrap();
    assert!(response.starts_with("HTTP/1."), "{response}");
    assert!(response.contains(" 200 "), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// A publish from client A, handled by client B with the envelope on: one trace,
/// the consumer span a child of the producer span; counters and latencies recorded.
#[tokio::test]
async fn a_trace_travels_from_publisher_to_handler_in_the_envelope() {
    prometheus();
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let svc = service("trace");
    let otel = CourierOtel::new(&svc)
        .tracer_provider(&provider)
        .envelope(true);

    let sub_id = client_id("otel-sub");
    let subscriber = client(&broker, "otel-sub")
        .client_id(&sub_id)
        .with_otel(&otel.clone().client_id(&sub_id))
        .connect()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let _handle = subscriber
        .subscribe("otel/trace/+")
        .qos(QoS::AtLeastOnce)
        .handler(move |_client: Client, message: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(message);
            }
        })
        .await
        .unwrap();

    let pub_id = client_id("otel-pub");
    let publisher = otel
        .clone()
        .client_id(&pub_id)
        .install(client(&broker, "otel-pub").client_id(&pub_id))
        .connect()
        .await
        .unwrap();
    publisher.publish("otel/trace/7", "hello").await.unwrap();

    let message = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("no message in 5 s")
        .unwrap();
    assert_eq!(message.payload_str().unwrap(), "hello", "envelope removed");
    assert!(message.property("traceparent").is_some());

    let spans = spans_until(&exporter, |s| !named(s, span_names::CALLBACK).is_empty()).await;
    let producer = the(&spans, span_names::PUBLISH);
    let consumer = the(&spans, span_names::CALLBACK);
    let subscribe = the(&spans, span_names::SUBSCRIBE);
    assert_eq!(producer.span_kind, SpanKind::Producer);
    assert_eq!(consumer.span_kind, SpanKind::Consumer);
    assert_eq!(subscribe.span_kind, SpanKind::Client);
    assert_eq!(
        consumer.span_context.trace_id(),
        producer.span_context.trace_id()
    );
    assert_eq!(consumer.parent_span_id, producer.span_context.span_id());
    assert!(consumer.parent_span_is_remote);
    assert!(!is_error(producer) && !is_error(consumer) && !is_error(subscribe));

    assert_eq!(attr(producer, semconv::MQTT_TOPIC).unwrap(), "otel/trace/7");
    assert_eq!(attr(producer, semconv::MQTT_QOS).unwrap(), "1");
    assert_eq!(attr(producer, semconv::MQTT_RETAINED).unwrap(), "false");
    assert_eq!(attr(producer, semconv::MQTT_CLIENT_ID).unwrap(), pub_id);
    assert_eq!(attr(producer, semconv::SERVICE_NAME).unwrap(), svc);
    assert_eq!(attr(producer, semconv::MESSAGING_SYSTEM).unwrap(), "mqtt");
    assert_eq!(
        attr(producer, semconv::MESSAGING_OPERATION_TYPE).unwrap(),
        "publish"
    );
    assert_eq!(
        attr(producer, semconv::MESSAGING_DESTINATION_NAME).unwrap(),
        "otel/trace/7"
    );
    assert_eq!(attr(consumer, semconv::MQTT_TOPIC).unwrap(), "otel/trace/7");
    assert_eq!(attr(consumer, semconv::MQTT_CLIENT_ID).unwrap(), sub_id);
    assert_eq!(
        attr(consumer, semconv::MESSAGING_MESSAGE_BODY_SIZE).unwrap(),
        "5"
    );
    assert_eq!(
        attr(subscribe, semconv::MQTT_TOPIC).unwrap(),
        "otel/trace/+"
    );

    let by_service = [("service_name", svc.as_str())];
    let publish_labels = [
        ("service_name", svc.as_str()),
        ("mqtt_clientid", pub_id.as_str()),
        ("mqtt_topic", "otel/trace/7"),
    ];
    assert_eq!(
        metric("courier_publish_attempts_total", &publish_labels),
        1.0
    );
    assert_eq!(metric("courier_publish_failures_total", &by_service), 0.0);
    assert_eq!(
        metric("courier_publish_latency_seconds_count", &publish_labels),
        1.0
    );
    assert_eq!(metric("courier_subscribe_attempts_total", &by_service), 1.0);
    assert_eq!(
        metric("courier_subscribe_latency_seconds_count", &by_service),
        1.0
    );
    let callback_labels = [
        ("service_name", svc.as_str()),
        ("mqtt_clientid", sub_id.as_str()),
        ("mqtt_topic", "otel/trace/7"),
    ];
    assert_eq!(
        wait_metric(
            "courier_subscribe_callback_latency_seconds_count",
            &callback_labels,
            |v| v >= 1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            "courier_subscribe_callback_attempts_total",
            &callback_labels
        ),
        1.0
    );
    assert_eq!(
        metric("courier_subscribe_callback_failures_total", &by_service),
        0.0
    );
    assert_eq!(metric("courier_inflight", &by_service), 0.0);

    publisher.stop().await;
    subscriber.stop().await;
}

/// A publish to an invalid topic, a subscribe to an invalid filter and a failing
/// handler count as failures and mark their spans as errors.
#[tokio::test]
async fn failures_are_counted_and_marked_on_spans() {
    prometheus();
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let svc = service("fail");
    let id = client_id("otel-fail");
    let c = CourierOtel::new(&svc)
        .client_id(&id)
        .tracer_provider(&provider)
        .install(client(&broker, "otel-fail").client_id(&id))
        .connect()
        .await
        .unwrap();

    assert!(c.publish("bad/+/topic", "x").await.is_err());
    assert!(c.subscribe("bad/#/filter").await.is_err());
    assert!(c.unsubscribe(["bad/#/again"]).await.is_err());
    let _handle = c
        .subscribe("otel/fail")
        .handler(|_c: Client, _m: Message| async { Err::<(), _>("boom") })
        .await
        .unwrap();
    c.publish("otel/fail", "x").await.unwrap();

    let by_service = [("service_name", svc.as_str())];
    assert_eq!(
        wait_metric(
            "courier_subscribe_callback_failures_total",
            &by_service,
            |v| v >= 1.0
        )
        .await,
        1.0
    );
    assert_eq!(
        metric("courier_subscribe_callback_attempts_total", &by_service),
        1.0
    );
    let bad_topic = [
        ("service_name", svc.as_str()),
        ("mqtt_topic", "bad/+/topic"),
    ];
    assert_eq!(metric("courier_publish_failures_total", &bad_topic), 1.0);
    assert_eq!(metric("courier_publish_attempts_total", &by_service), 2.0);
    assert_eq!(metric("courier_publish_failures_total", &by_service), 1.0);
    assert_eq!(
        metric("courier_publish_latency_seconds_count", &by_service),
        2.0
    );
    let bad_filter = [
        ("service_name", svc.as_str()),
        ("mqtt_topic", "bad/#/filter"),
    ];
    assert_eq!(metric("courier_subscribe_failures_total", &bad_filter), 1.0);
    assert_eq!(metric("courier_subscribe_attempts_total", &by_service), 2.0);
    assert_eq!(metric("courier_subscribe_failures_total", &by_service), 1.0);
    assert_eq!(
        metric("courier_unsubscribe_failures_total", &by_service),
        1.0
    );
    assert_eq!(
        metric("courier_unsubscribe_latency_seconds_count", &by_service),
        1.0
    );

    let spans = spans_until(&exporter, |s| !named(s, span_names::CALLBACK).is_empty()).await;
    let publishes = named(&spans, span_names::PUBLISH);
    let failed_publish = publishes
        .iter()
        .find(|s| attr(s, semconv::MQTT_TOPIC).as_deref() == Some("bad/+/topic"))
        .unwrap();
    assert!(is_error(failed_publish));
    assert!(failed_publish.events.iter().any(|e| e.name == "exception"));
    let subscribes = named(&spans, span_names::SUBSCRIBE);
    let failed_subscribe = subscribes
        .iter()
        .find(|s| attr(s, semconv::MQTT_TOPIC).as_deref() == Some("bad/#/filter"))
        .unwrap();
    assert!(is_error(failed_subscribe));
    assert!(is_error(the(&spans, span_names::UNSUBSCRIBE)));
    let callback = the(&spans, span_names::CALLBACK);
    assert!(is_error(callback));
    assert!(callback.events.iter().any(|e| e.name == "exception"));
    // Without the envelope the context does not travel: the callback is a new trace.
    assert!(!callback.parent_span_is_remote);

    c.stop().await;
}

/// `courier.connected` is 1 while connected and 0 after stop; `courier.reconnects`
/// exists at 0; `courier.inflight` returns to 0.
#[tokio::test]
async fn the_connected_gauge_follows_the_connection() {
    prometheus();
    let broker = broker().await;
    let svc = service("gauge");
    let id = client_id("otel-gauge");
    let c = CourierOtel::new(&svc)
        .client_id(&id)
        .traces(false)
        .install(client(&broker, "otel-gauge").client_id(&id))
        .connect()
        .await
        .unwrap();
    let labels = [
        ("service_name", svc.as_str()),
        ("mqtt_clientid", id.as_str()),
    ];
    assert_eq!(
        wait_metric("courier_connected", &labels, |v| v == 1.0).await,
        1.0
    );
    assert_eq!(metric("courier_reconnects_total", &labels), 0.0);
    assert!(
        prometheus()
            .handle
            .render()
            .contains(&format!("courier_reconnects_total{{service_name=\"{svc}\""))
    );

    let publishes: Vec<_> = (0..5)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.publish(format!("otel/gauge/{i}"), "x").await })
        })
        .collect();
    for p in publishes {
        p.await.unwrap().unwrap();
    }
    assert_eq!(metric("courier_publish_attempts_total", &labels), 5.0);
    assert_eq!(metric("courier_inflight", &labels), 0.0);

    c.stop().await;
    assert_eq!(
        wait_metric("courier_connected", &labels, |v| v == 0.0).await,
        0.0
    );
}

/// One SUBSCRIBE with several filters is an `otelcourier.SubscribeMultiple` span
/// with one attempt per filter; an unsubscribe is an `otelcourier.Unsubscribe` span.
#[tokio::test]
async fn subscribe_multiple_and_unsubscribe_spans() {
    prometheus();
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let svc = service("multi");
    let c = CourierOtel::new(&svc)
        .tracer_provider(&provider)
        .topic_transformer(courier::otel::topic::numeric_levels_as("{id}"))
        .install(client(&broker, "otel-multi"))
        .connect()
        .await
        .unwrap();
    let subscription = c
        .subscribe_many([
            ("otel/a/1", QoS::AtMostOnce),
            ("otel/b/2", QoS::AtLeastOnce),
        ])
        .await
        .unwrap();
    c.unsubscribe(["otel/a/1", "otel/b/2"]).await.unwrap();
    drop(subscription);

    let spans = spans_until(&exporter, |s| !named(s, span_names::UNSUBSCRIBE).is_empty()).await;
    let multi = the(&spans, span_names::SUBSCRIBE_MULTIPLE);
    assert_eq!(multi.span_kind, SpanKind::Client);
    assert_eq!(
        attr(multi, semconv::MQTT_TOPIC_WITH_QOS).unwrap(),
        "[\"otel/a/1 | qos[0]\",\"otel/b/2 | qos[1]\"]"
    );
    let unsubscribe = the(&spans, span_names::UNSUBSCRIBE);
    assert_eq!(unsubscribe.span_kind, SpanKind::Client);
    assert!(
        attr(unsubscribe, semconv::MQTT_TOPIC)
            .unwrap()
            .contains("otel/b/2")
    );
    assert!(named(&spans, span_names::SUBSCRIBE).is_empty());

    // The transformer keeps identifiers out of the labels.
    let a = [
        ("service_name", svc.as_str()),
        ("mqtt_topic", "otel/a/{id}"),
    ];
    let b = [
        ("service_name", svc.as_str()),
        ("mqtt_topic", "otel/b/{id}"),
    ];
    assert_eq!(metric("courier_subscribe_attempts_total", &a), 1.0);
    assert_eq!(metric("courier_subscribe_attempts_total", &b), 1.0);
    assert_eq!(metric("courier_unsubscribe_attempts_total", &a), 1.0);
    assert_eq!(metric("courier_unsubscribe_attempts_total", &b), 1.0);
    assert_eq!(
        metric(
            "courier_subscribe_attempts_total",
            &[("service_name", svc.as_str()), ("mqtt_topic", "otel/a/1")]
        ),
        0.0
    );
    c.stop().await;
}

/// Disabled paths record nothing; without the envelope a subscriber without
/// courier-otel gets the payload untouched.
#[tokio::test]
async fn disabled_paths_and_no_envelope_leave_messages_alone() {
    prometheus();
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let svc = service("off");
    let c = CourierOtel::new(&svc)
        .tracer_provider(&provider)
        .publish(false)
        .install(client(&broker, "otel-off"))
        .connect()
        .await
        .unwrap();
    let plain = client(&broker, "plain").connect().await.unwrap();
    let mut sub = plain.subscribe("otel/off").await.unwrap();
    c.publish("otel/off", "raw").await.unwrap();
    let got = courier_integration_tests::recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].payload_str().unwrap(), "raw");
    assert!(got[0].properties().is_empty());

    let traced = CourierOtel::new(&svc)
        .tracer_provider(&provider)
        .install(client(&broker, "otel-on"))
        .connect()
        .await
        .unwrap();
    traced.publish("otel/off", "also raw").await.unwrap();
    let got = courier_integration_tests::recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    assert_eq!(got[0].payload_str().unwrap(), "also raw");

    let spans = spans_until(&exporter, |s| !named(s, span_names::PUBLISH).is_empty()).await;
    assert_eq!(named(&spans, span_names::PUBLISH).len(), 1, "{spans:#?}");
    assert_eq!(
        metric(
            "courier_publish_attempts_total",
            &[("service_name", svc.as_str())]
        ),
        1.0
    );

    let quiet = CourierOtel::new(service("quiet").as_str())
        .tracer_provider(&provider)
        .traces(false)
        .metrics(false)
        .install(client(&broker, "otel-quiet"))
        .connect()
        .await
        .unwrap();
    quiet.publish("otel/off", "x").await.unwrap();
    assert_eq!(
        named(&exporter.get_finished_spans().unwrap(), span_names::PUBLISH).len(),
        1
    );
    for c in [c, plain, traced, quiet] {
        c.stop().await;
    }
}

/// The Prometheus page the exporter serves has the `courier_publish_attempts_total`
/// series (Prometheus names: `with_recommended_naming`).
#[tokio::test]
async fn the_prometheus_page_serves_courier_publish_attempts() {
    let prom = prometheus();
    let broker = broker().await;
    let svc = service("scrape");
    let c = CourierOtel::new(&svc)
        .traces(false)
        .install(client(&broker, "otel-scrape"))
        .connect()
        .await
        .unwrap();
    c.publish("otel/scrape", "x").await.unwrap();
    let body = scrape(prom.addr).await;
    let series = body
        .lines()
        .find(|l| {
            l.starts_with("courier_publish_attempts_total{") && l.contains(&format!("\"{svc}\""))
        })
        .unwrap_or_else(|| panic!("no courier_publish_attempts_total for {svc} in:\n{body}"));
    assert!(series.ends_with(" 1"), "{series}");
    assert!(body.contains("# TYPE courier_publish_latency_seconds histogram"));
    assert!(body.contains("courier_publish_latency_seconds_bucket{"));
    c.stop().await;
}

/// Names used in crates/courier/guides/otel.md stay what the exporter shows.
#[test]
fn metric_names_are_the_go_ones() {
    assert_eq!(metric_names::PUBLISH_ATTEMPTS, "courier.publish.attempts");
    assert_eq!(
        metric_names::CALLBACK_LATENCY,
        "courier.subscribe.callback.latency"
    );
    assert_eq!(
        span_names::SUBSCRIBE_MULTIPLE,
        "otelcourier.SubscribeMultiple"
    );
}

/// How the application traces: the plain OpenTelemetry SDK (its spans made with the
/// OpenTelemetry API, the context attached by hand), or `tracing` with
/// `tracing-opentelemetry`, with or without the layer's context activation.
#[derive(Debug, Clone, Copy)]
enum App {
    Sdk,
    Tracing { context_activation: bool },
}

impl App {
    /// Make the application's own span `name` in the current context and end it.
    fn child_span(self, tracer: &SdkTracer, name: &'static str) {
        match self {
            App::Sdk => tracer.start(name).end(),
            App::Tracing { .. } => drop(tracing::info_span!("app", otel.name = name).entered()),
        }
    }

    /// Publish inside the application's span `app.request`.
    async fn publish_in_span(self, tracer: &SdkTracer, client: &Client, topic: &str) {
        match self {
            App::Sdk => {
                let cx = Context::current_with_span(tracer.start("app.request"));
                async { client.publish(topic, "x").await }
                    .with_context(cx.clone())
                    .await
                    .unwrap();
                cx.span().end();
            }
            App::Tracing { .. } => async { client.publish(topic, "x").await }
                .instrument(tracing::info_span!("app", otel.name = "app.request"))
                .await
                .unwrap(),
        }
    }
}

/// The application's span around a publish is the parent of `otelcourier.Publish`,
/// the subscriber's `otelcourier.Callback` is the child of that, and the span the
/// application makes in its handler is the child of the callback: one trace across
/// the broker, in each setup, with no wiring but `CourierOtel` itself.
async fn app_spans_and_courier_spans_form_one_trace(app: App) {
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let tracer = provider.tracer("app");
    let _subscriber = match app {
        App::Sdk => None,
        App::Tracing { context_activation } => Some(tracing::subscriber::set_default(
            tracing_subscriber::registry().with(
                tracing_opentelemetry::layer()
                    .with_tracer(tracer.clone())
                    .with_context_activation(context_activation),
            ),
        )),
    };
    let otel = CourierOtel::new(service("app"))
        .tracer_provider(&provider)
        .envelope(true);
    let sub = otel
        .install(client(&broker, "otel-app-sub"))
        .connect()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(1);
    let handler_tracer = tracer.clone();
    let _handle = sub
        .subscribe("otel/app")
        .handler(move |_client: Client, _message: Message| {
            app.child_span(&handler_tracer, "app.handle");
            let tx = tx.clone();
            async move {
                let _ = tx.send(()).await;
            }
        })
        .await
        .unwrap();
    let publisher = otel
        .install(client(&broker, "otel-app-pub"))
        .connect()
        .await
        .unwrap();
    app.publish_in_span(&tracer, &publisher, "otel/app").await;
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .unwrap();

    let spans = spans_until(&exporter, |s| {
        named(s, "app.handle").len() == 1 && named(s, span_names::CALLBACK).len() == 1
    })
    .await;
    let request = the(&spans, "app.request");
    let publish = the(&spans, span_names::PUBLISH);
    let callback = the(&spans, span_names::CALLBACK);
    let handle = the(&spans, "app.handle");
    let trace = request.span_context.trace_id();
    for span in [publish, callback, handle] {
        assert_eq!(span.span_context.trace_id(), trace, "{app:?}: {spans:#?}");
    }
    assert_eq!(
        publish.parent_span_id,
        request.span_context.span_id(),
        "{app:?}"
    );
    assert_eq!(publish.span_kind, SpanKind::Producer);
    assert_eq!(
        callback.parent_span_id,
        publish.span_context.span_id(),
        "{app:?}"
    );
    assert!(callback.parent_span_is_remote);
    assert_eq!(callback.span_kind, SpanKind::Consumer);
    assert_eq!(
        handle.parent_span_id,
        callback.span_context.span_id(),
        "{app:?}"
    );
    publisher.stop().await;
    sub.stop().await;
}

#[tokio::test]
async fn plain_sdk_app_spans_and_courier_spans_form_one_trace() {
    app_spans_and_courier_spans_form_one_trace(App::Sdk).await;
}

/// `tracing-opentelemetry` as configured by default: entering a `tracing` span makes
/// its context the current OpenTelemetry context.
#[tokio::test]
async fn tracing_app_spans_and_courier_spans_form_one_trace() {
    app_spans_and_courier_spans_form_one_trace(App::Tracing {
        context_activation: true,
    })
    .await;
}

/// Without context activation only the `tracing-bridge` feature (the facade's
/// `otel-tracing`) finds the parent: the current `tracing` span's context.
#[tokio::test]
async fn tracing_app_without_context_activation_still_forms_one_trace() {
    app_spans_and_courier_spans_form_one_trace(App::Tracing {
        context_activation: false,
    })
    .await;
}

/// A message read from a `Subscription` stream gets its consumer span from
/// `OtelLayer::receive`: the child of the publisher's span, and the parent of what
/// the application does in its context.
#[tokio::test]
async fn stream_messages_join_the_trace_through_receive() {
    let broker = broker().await;
    let (provider, exporter) = tracing();
    let otel = CourierOtel::new(service("stream"))
        .tracer_provider(&provider)
        .envelope(true);
    let reader = client(&broker, "otel-stream-sub").connect().await.unwrap();
    let mut sub = reader.subscribe("otel/stream").await.unwrap();
    let publisher = otel
        .install(client(&broker, "otel-stream-pub"))
        .connect()
        .await
        .unwrap();
    publisher.publish("otel/stream", "x").await.unwrap();
    let got = courier_integration_tests::recv_n(&mut sub, 1, Duration::from_secs(5)).await;
    let message = courier::otel::envelope::open_message(&got[0]).unwrap();
    assert_eq!(message.payload_str().unwrap(), "x");

    let layer = otel.client_id(reader.client_id()).layer();
    let cx = layer.receive(&message).unwrap();
    {
        let _attached = cx.clone().attach();
        provider.tracer("app").start("app.process").end();
    }
    drop(cx);

    let spans = spans_until(&exporter, |s| named(s, span_names::RECEIVE).len() == 1).await;
    let publish = the(&spans, span_names::PUBLISH);
    let receive = the(&spans, span_names::RECEIVE);
    let process = the(&spans, "app.process");
    assert_eq!(receive.span_kind, SpanKind::Consumer);
    assert_eq!(receive.parent_span_id, publish.span_context.span_id());
    assert_eq!(
        receive.span_context.trace_id(),
        publish.span_context.trace_id()
    );
    assert_eq!(
        attr(receive, semconv::MESSAGING_OPERATION_TYPE).as_deref(),
        Some("receive")
    );
    assert_eq!(
        attr(receive, semconv::MQTT_CLIENT_ID).as_deref(),
        Some(reader.client_id())
    );
    assert_eq!(process.parent_span_id, receive.span_context.span_id());
    publisher.stop().await;
    reader.stop().await;
}

/// Through the OpenTelemetry metric API (an SDK meter provider, in memory): the Go
/// names, latency in seconds with the Go buckets, and the values of a known workload.
#[tokio::test]
async fn opentelemetry_metrics_have_the_go_names_units_and_values() {
    let broker = broker().await;
    let exporter = InMemoryMetricExporter::default();
    let provider = SdkMeterProvider::builder()
        .with_reader(PeriodicReader::builder(exporter.clone()).build())
        .build();
    let otel = CourierOtel::new(service("otel-metrics"))
        .traces(false)
        .facade_metrics(false)
        .meter_provider(&provider);
    let c = otel
        .install(client(&broker, "otel-metrics"))
        .connect()
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::channel(3);
    let _handle = c
        .subscribe("otel/metrics/+")
        .handler(move |_client: Client, _message: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(()).await;
            }
        })
        .await
        .unwrap();
    for n in 1..=3 {
        c.publish(format!("otel/metrics/{n}"), "x")
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    assert!(c.publish("otel/metrics/+", "x").await.is_err());
    for _ in 0..3 {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .unwrap();
    }
    provider.force_flush().unwrap();
    let exported = exporter.get_finished_metrics().unwrap();
    let latest = exported.last().unwrap();
    let scope = latest
        .scope_metrics()
        .find(|s| s.scope().name() == "courier-otel")
        .unwrap();
    let find = |name: &str| {
        scope
            .metrics()
            .find(|m| m.name() == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let sum = |name: &str| match find(name).data() {
        AggregatedMetrics::U64(MetricData::Sum(sum)) => {
            sum.data_points().map(|p| p.value()).sum::<u64>()
        }
        other => panic!("{name}: {other:?}"),
    };
    assert_eq!(sum(metric_names::PUBLISH_ATTEMPTS), 4);
    assert_eq!(sum(metric_names::PUBLISH_FAILURES), 1);
    assert_eq!(sum(metric_names::SUBSCRIBE_ATTEMPTS), 1);
    assert_eq!(sum(metric_names::CALLBACK_ATTEMPTS), 3);
    assert_eq!(sum(metric_names::CALLBACK_FAILURES), 0);
    assert_eq!(sum(metric_names::RECONNECTS), 0);
    assert_eq!(find(metric_names::PUBLISH_ATTEMPTS).unit(), "");
    let latency = find(metric_names::PUBLISH_LATENCY);
    assert_eq!(latency.unit(), "s");
    let AggregatedMetrics::F64(MetricData::Histogram(histogram)) = latency.data() else {
        panic!("{latency:?}");
    };
    let points: Vec<_> = histogram.data_points().collect();
    assert_eq!(points.iter().map(|p| p.count()).sum::<u64>(), 4);
    assert!(points.iter().all(|p| {
        p.bounds()
            .eq(otel_metrics::PUBLISH_LATENCY_BUCKETS.iter().copied())
    }));
    assert_eq!(find(metric_names::CALLBACK_LATENCY).unit(), "s");
    match find(metric_names::CONNECTED).data() {
        AggregatedMetrics::U64(MetricData::Gauge(g)) => {
            assert_eq!(g.data_points().map(|p| p.value()).collect::<Vec<_>>(), [1]);
        }
        other => panic!("{other:?}"),
    }
    match find(metric_names::INFLIGHT).data() {
        AggregatedMetrics::I64(MetricData::Sum(s)) => {
            assert_eq!(s.data_points().map(|p| p.value()).sum::<i64>(), 0);
        }
        other => panic!("{other:?}"),
    }
    c.stop().await;
}

/// Build the `otel` example (a no-op when `cargo test --workspace` built it); the
/// path of its executable.
fn example_executable() -> std::path::PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap();
    let output = std::process::Command::new(cargo)
        .current_dir(workspace)
        .args([
            "build",
            "--quiet",
            "-p",
            "courier-examples",
            "--example",
            "otel",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(output.status.success(), "building the example failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "otel")
        .find_map(|m| m["executable"].as_str().map(Into::into))
        .expect("no executable for the otel example")
}

/// The example's own Prometheus page, scraped after its known workload (3 orders
/// published and handled, 1 publish to a wildcard that fails): Prometheus' names
/// (`_total` on counters, `_seconds` on the latency histograms), their HELP and TYPE
/// lines, and the values.
#[tokio::test]
async fn the_example_serves_prometheus_names_units_and_values() {
    use tokio::io::AsyncBufReadExt as _;

    let executable = tokio::task::spawn_blocking(example_executable)
        .await
        .unwrap();
    let broker = broker().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let mut example = tokio::process::Command::new(executable)
        .env("MQTT_URL", broker.url())
        .env("OTEL_EXAMPLE_PORT", port.to_string())
        .env("OTEL_EXAMPLE_SERVE_SECS", "60")
        .env("RUST_LOG", "off")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(example.stdout.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.starts_with("Serving the metrics page") {
                return;
            }
        }
        panic!("the example ended before serving its metrics page");
    })
    .await
    .unwrap();
    let body = scrape(SocketAddr::from(([127, 0, 0, 1], port))).await;
    example.kill().await.unwrap();

    let orders = [("mqtt_topic", "orders/{id}/created")];
    let wildcard = [("mqtt_topic", "orders/+/created")];
    let value = |name: &str, labels: &[(&str, &str)]| metric_in(&body, name, labels);
    for (name, kind) in [
        ("courier_publish_attempts_total", "counter"),
        ("courier_publish_failures_total", "counter"),
        ("courier_subscribe_callback_attempts_total", "counter"),
        ("courier_reconnects_total", "counter"),
        ("courier_publish_latency_seconds", "histogram"),
        ("courier_subscribe_callback_latency_seconds", "histogram"),
        ("courier_connected", "gauge"),
        ("courier_inflight", "gauge"),
    ] {
        assert!(
            body.contains(&format!("# TYPE {name} {kind}\n")),
            "no {kind} {name} in:\n{body}"
        );
    }
    assert!(
        body.contains("# HELP courier_publish_latency_seconds Latency of MQTT publish calls\n")
    );
    assert!(
        !body.contains("\ncourier_publish_attempts{")
            && !body.contains("\ncourier_publish_latency_bucket{"),
        "names without Prometheus' suffixes in:\n{body}"
    );
    let inf = [orders[0], ("le", "+Inf")];
    for (name, labels, expected) in [
        ("courier_publish_attempts_total", &orders[..], 3.0),
        ("courier_publish_failures_total", &orders, 0.0),
        ("courier_publish_attempts_total", &wildcard, 1.0),
        ("courier_publish_failures_total", &wildcard, 1.0),
        ("courier_publish_latency_seconds_count", &orders, 3.0),
        ("courier_publish_latency_seconds_bucket", &inf, 3.0),
        ("courier_subscribe_callback_attempts_total", &orders, 3.0),
        ("courier_subscribe_callback_failures_total", &orders, 0.0),
        (
            "courier_subscribe_callback_latency_seconds_count",
            &orders,
            3.0,
        ),
        ("courier_subscribe_attempts_total", &wildcard, 1.0),
        // Two clients, both connected, nothing in flight, no reconnect.
        ("courier_connected", &[], 2.0),
        ("courier_inflight", &[], 0.0),
        ("courier_reconnects_total", &[], 0.0),
    ] {
        assert_eq!(
            value(name, labels),
            expected,
            "{name} {labels:?} in:\n{body}"
        );
    }
}
