//! OpenTelemetry with courier-otel, wired the way Rust services usually are: the
//! application traces with `tracing`, `tracing-opentelemetry` turns its spans into
//! OpenTelemetry spans (printed to stdout by opentelemetry-stdout), and metrics are
//! served for Prometheus (metrics-exporter-prometheus, with Prometheus' names). The
//! trace context goes from publisher to handler in the envelope: each `place_order`
//! span, its `otelcourier.Publish`, the subscriber's `otelcourier.Callback` and the
//! handler's `ship_order` span are one trace.
//!
//! ```text
//! cargo run --example otel                       # localhost:1883, or MQTT_URL
//! OTEL_EXAMPLE_SERVE_SECS=60 cargo run --example otel &
//! curl -s localhost:9464/metrics | grep courier_  # port: OTEL_EXAMPLE_PORT
//! ```
//! If nothing listens at the broker URL, an embedded broker is started there.

use std::time::Duration;

use courier::otel::opentelemetry::{global, trace::TracerProvider as _};
use courier::otel::{CourierOtel, OtelBuilderExt as _, metrics::LATENCY_BUCKETS, topic};
use courier::{Client, Message};
use courier_examples::{broker_url, ensure_broker};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Instrument as _;
use tracing_subscriber::filter::{EnvFilter, LevelFilter, Targets};
use tracing_subscriber::prelude::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Traces: the SDK with the stdout exporter. `tracing-opentelemetry` exports the
    // application's `tracing` spans through it; courier-otel makes its own spans with
    // the OpenTelemetry API, on the global provider, as children of the current
    // `tracing` span (the facade's `otel-tracing` feature).
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(opentelemetry_stdout::SpanExporter::default())
        .build();
    global::set_tracer_provider(provider.clone());
    tracing_subscriber::registry()
        .with(tracing_subscriber::fmt::layer().with_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,rumqttd=off".into()),
        ))
        .with(
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("otel-example"))
                .with_filter(
                    Targets::new()
                        .with_default(LevelFilter::INFO)
                        .with_target("rumqttd", LevelFilter::OFF),
                ),
        )
        .init();

    let url = broker_url();
    let _embedded = ensure_broker(&url).await?;

    // Metrics: a Prometheus page with Prometheus' names (`_total` on counters, the
    // unit on histograms: `courier_publish_latency_seconds`) and courier-otel's
    // recommended latency buckets (without them the exporter renders summaries).
    let port: u16 = match std::env::var("OTEL_EXAMPLE_PORT") {
        Ok(p) => p.parse()?,
        Err(_) => 9464,
    };
    let mut prometheus = PrometheusBuilder::new()
        .with_recommended_naming(true)
        .with_http_listener(([127, 0, 0, 1], port));
    for (metric, buckets) in LATENCY_BUCKETS {
        prometheus =
            prometheus.set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)?;
    }
    let (recorder, exporter) = prometheus.build()?;
    let metrics_page = recorder.handle();
    metrics::set_global_recorder(recorder)?;
    tokio::spawn(exporter);

    // One configuration, installed on both clients (each with its own client id).
    let otel = CourierOtel::new("otel-example")
        .envelope(true)
        .topic_transformer(topic::numeric_levels_as("{id}"));
    let pid = std::process::id();

    let sub_id = format!("courier-otel-sub-{pid}");
    let subscriber = Client::builder()
        .url(&url)
        .client_id(&sub_id)
        .with_otel(&otel.clone().client_id(&sub_id))
        .connect()
        .await?;
    let (handled_tx, mut handled) = tokio::sync::mpsc::channel(8);
    let _subscription = subscriber
        .subscribe("orders/+/created")
        .handler(move |_client: Client, message: Message| {
            let handled_tx = handled_tx.clone();
            // Runs inside the otelcourier.Callback span: `ship_order` is its child.
            async move {
                println!(
                    "handled {} {} (traceparent {})",
                    message.topic(),
                    message.payload_str().unwrap_or("<binary>"),
                    message.property("traceparent").unwrap_or("-"),
                );
                let _ = handled_tx.send(()).await;
            }
            .instrument(tracing::info_span!("ship_order"))
        })
        .await?;

    let pub_id = format!("courier-otel-pub-{pid}");
    let publisher = Client::builder()
        .url(&url)
        .client_id(&pub_id)
        .with_otel(&otel.clone().client_id(&pub_id))
        .connect()
        .await?;
    for id in 1..=3 {
        // The application's span: otelcourier.Publish is its child.
        let order = serde_json::json!({ "id": id });
        async {
            publisher
                .publish_value(format!("orders/{id}/created"), &order)
                .await
        }
        .instrument(tracing::info_span!("place_order", order_id = id))
        .await?;
    }
    for _ in 1..=3 {
        tokio::time::timeout(Duration::from_secs(5), handled.recv())
            .await?
            .ok_or("the handler stopped")?;
    }
    // A failure on purpose: a wildcard is no topic name. Its span has an error status
    // and courier_publish_failures_total counts it.
    if let Err(e) = publisher.publish("orders/+/created", "x").await {
        println!("expected failure: {e}");
    }

    println!("\nMetrics, served at http://127.0.0.1:{port}/metrics:");
    for line in metrics_page
        .render()
        .lines()
        .filter(|l| l.starts_with("courier_") && !l.contains("_bucket{"))
    {
        println!("  {line}");
    }

    let serve = std::env::var("OTEL_EXAMPLE_SERVE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if serve > 0 {
        println!("Serving the metrics page for {serve} s (Ctrl-C to stop).");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(serve)) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }

    publisher.stop().await;
    subscriber.stop().await;
    provider.shutdown()?;
    Ok(())
}
