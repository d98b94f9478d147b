//! Metrics: the instruments, where they are recorded, and the recommended histogram
//! buckets.
//!
//! Every measurement goes to two places, each of which costs next to nothing until
//! the application installs something behind it (and each can be turned off):
//!
//! - the **OpenTelemetry metric API**, through the global meter provider or
//!   [`CourierOtel::meter_provider`](crate::CourierOtel::meter_provider): the Go
//!   names, latency histograms in seconds (unit `s`) with the Go bucket boundaries.
//!   For OTLP pipelines, and for Prometheus through `opentelemetry-prometheus` (which
//!   adds the `_total` and `_seconds` suffixes itself);
//! - the [`metrics`] facade, for the recorder the application installs
//!   (`metrics-exporter-prometheus`, StatsD, ...). There the exporter decides how
//!   histograms are bucketed; [`LATENCY_BUCKETS`] pairs each latency histogram with
//!   the Go boundaries, and `with_recommended_naming(true)` gives Prometheus' names
//!   (`courier_publish_attempts_total`, `courier_publish_latency_seconds`):
//!
//! ```ignore
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let mut builder = PrometheusBuilder::new()
//!     .with_recommended_naming(true)
//!     .with_http_listener(([127, 0, 0, 1], 9464));
//! for (metric, buckets) in courier_otel::metrics::LATENCY_BUCKETS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)?;
//! }
//! builder.install()?;
//! ```
//!
//! Without buckets the Prometheus exporter renders histograms as summaries
//! (quantiles). Other boundaries: [`exponential_buckets_range`].

use ::metrics::{Label, Unit, describe_counter, describe_gauge, describe_histogram};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};

use crate::semconv::metric_names as names;

/// Publish latency buckets, in seconds: 10 exponential steps from 100 µs to 1 s.
pub const PUBLISH_LATENCY_BUCKETS: &[f64] = &[
    0.0001,
    0.000_278_256,
    0.000_774_264,
    0.002_154_43,
    0.005_994_84,
    0.016_681,
    0.046_415_9,
    0.129_155,
    0.359_381,
    1.0,
];

/// Subscribe and unsubscribe latency buckets, in seconds: 7 exponential steps from
/// 1 ms to 1 s.
pub const SUBSCRIBE_LATENCY_BUCKETS: &[f64] =
    &[0.001, 0.003_162_28, 0.01, 0.031_622_8, 0.1, 0.316_228, 1.0];

/// Handler (callback) latency buckets, in seconds: 15 exponential steps from 1 ms
/// to 10 s.
pub const CALLBACK_LATENCY_BUCKETS: &[f64] = &[
    0.001,
    0.001_930_7,
    0.003_727_59,
    0.007_196_86,
    0.013_895,
    0.026_827,
    0.051_794_7,
    0.1,
    0.193_07,
    0.372_759,
    0.719_686,
    1.3895,
    2.6827,
    5.179_47,
    10.0,
];

/// Each latency histogram's name with its recommended buckets, for the exporter
/// (see the [module docs](self)).
pub const LATENCY_BUCKETS: [(&str, &[f64]); 4] = [
    (names::PUBLISH_LATENCY, PUBLISH_LATENCY_BUCKETS),
    (names::SUBSCRIBE_LATENCY, SUBSCRIBE_LATENCY_BUCKETS),
    (names::UNSUBSCRIBE_LATENCY, SUBSCRIBE_LATENCY_BUCKETS),
    (names::CALLBACK_LATENCY, CALLBACK_LATENCY_BUCKETS),
];

/// `count` boundaries growing exponentially from `min` to `max` (both included),
/// like Prometheus' Go `ExponentialBucketsRange`. Empty when `count` is 0 or the
/// range is not positive and increasing; `[min]` when `count` is 1.
pub fn exponential_buckets_range(min: f64, max: f64, count: usize) -> Vec<f64> {
    if count == 0 || !(min > 0.0 && max > min && max.is_finite()) {
        return Vec::new();
    }
    if count == 1 {
        return vec![min];
    }
    let steps = (count - 1) as f64;
    let factor = (max / min).powf(1.0 / steps);
    (0..count)
        .map(|i| {
            if i == count - 1 {
                max
            } else {
                min * factor.powi(i as i32)
            }
        })
        .collect()
}

const CONNECTED_HELP: &str = "1 while the MQTT client is connected, 0 otherwise";
const RECONNECTS_HELP: &str = "Number of successful MQTT reconnects after the first connection";
const INFLIGHT_HELP: &str = "MQTT publishes started and not yet acknowledged or failed";

/// Register the descriptions and units of every metric with the installed `metrics`
/// recorder (the exporter's `# HELP` lines, and with
/// `metrics-exporter-prometheus`'s `with_recommended_naming(true)` the `_seconds`
/// suffix of the latency histograms).
/// [`CourierOtel::install`](crate::CourierOtel::install) calls it; call it again
/// after installing a recorder later.
pub fn describe() {
    for flow in Flow::ALL {
        let (attempts, failures, latency) = flow.names();
        let words = flow.words();
        describe_counter!(attempts, format!("Number of MQTT {words} attempts"));
        describe_counter!(failures, format!("Number of MQTT {words} failures"));
        describe_histogram!(
            latency,
            Unit::Seconds,
            format!("Latency of MQTT {words} calls")
        );
    }
    describe_gauge!(names::CONNECTED, CONNECTED_HELP);
    describe_counter!(names::RECONNECTS, RECONNECTS_HELP);
    describe_gauge!(names::INFLIGHT, INFLIGHT_HELP);
}

/// The operations that have attempts, failures and latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Publish,
    Subscribe,
    Unsubscribe,
    Callback,
}

impl Flow {
    const ALL: [Flow; 4] = [
        Flow::Publish,
        Flow::Subscribe,
        Flow::Unsubscribe,
        Flow::Callback,
    ];

    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Flow::Publish => (
                names::PUBLISH_ATTEMPTS,
                names::PUBLISH_FAILURES,
                names::PUBLISH_LATENCY,
            ),
            Flow::Subscribe => (
                names::SUBSCRIBE_ATTEMPTS,
                names::SUBSCRIBE_FAILURES,
                names::SUBSCRIBE_LATENCY,
            ),
            Flow::Unsubscribe => (
                names::UNSUBSCRIBE_ATTEMPTS,
                names::UNSUBSCRIBE_FAILURES,
                names::UNSUBSCRIBE_LATENCY,
            ),
            Flow::Callback => (
                names::CALLBACK_ATTEMPTS,
                names::CALLBACK_FAILURES,
                names::CALLBACK_LATENCY,
            ),
        }
    }

    /// The recommended latency buckets.
    fn buckets(self) -> &'static [f64] {
        match self {
            Flow::Publish => PUBLISH_LATENCY_BUCKETS,
            Flow::Subscribe | Flow::Unsubscribe => SUBSCRIBE_LATENCY_BUCKETS,
            Flow::Callback => CALLBACK_LATENCY_BUCKETS,
        }
    }

    /// The words for a failed operation, the span status's description prefix.
    pub(crate) fn error_message(self) -> &'static str {
        match self {
            Flow::Publish => "publish error",
            Flow::Subscribe => "subscribe error",
            Flow::Unsubscribe => "unsubscribe error",
            Flow::Callback => "callback error",
        }
    }

    /// The words in the descriptions.
    fn words(self) -> &'static str {
        match self {
            Flow::Publish => "publish",
            Flow::Subscribe => "subscribe",
            Flow::Unsubscribe => "unsubscribe",
            Flow::Callback => "subscribe callback",
        }
    }
}

/// One flow's OpenTelemetry instruments.
#[derive(Debug)]
struct FlowInstruments {
    attempts: Counter<u64>,
    failures: Counter<u64>,
    latency: Histogram<f64>,
}

/// The OpenTelemetry instruments of one installation: the Go names, latency in
/// seconds (unit `s`) with the Go bucket boundaries.
#[derive(Debug)]
struct Instruments {
    flows: [FlowInstruments; 4],
    connected: Gauge<u64>,
    reconnects: Counter<u64>,
    inflight: UpDownCounter<i64>,
}

impl Instruments {
    fn new(meter: &Meter) -> Self {
        let flow = |flow: Flow| {
            let (attempts, failures, latency) = flow.names();
            let words = flow.words();
            FlowInstruments {
                attempts: meter
                    .u64_counter(attempts)
                    .with_description(format!("Number of MQTT {words} attempts"))
                    .build(),
                failures: meter
                    .u64_counter(failures)
                    .with_description(format!("Number of MQTT {words} failures"))
                    .build(),
                latency: meter
                    .f64_histogram(latency)
                    .with_description(format!("Latency of MQTT {words} calls"))
                    .with_unit("s")
                    .with_boundaries(flow.buckets().to_vec())
                    .build(),
            }
        };
        Instruments {
            flows: Flow::ALL.map(flow),
            connected: meter
                .u64_gauge(names::CONNECTED)
                .with_description(CONNECTED_HELP)
                .build(),
            reconnects: meter
                .u64_counter(names::RECONNECTS)
                .with_description(RECONNECTS_HELP)
                .build(),
            inflight: meter
                .i64_up_down_counter(names::INFLIGHT)
                .with_description(INFLIGHT_HELP)
                .build(),
        }
    }

    fn flow(&self, flow: Flow) -> &FlowInstruments {
        // `Flow::ALL` is in declaration order.
        &self.flows[flow as usize]
    }
}

/// Where one installation records its metrics: the OpenTelemetry instruments
/// (`None` when off) and the `metrics` facade (when `facade`).
#[derive(Debug)]
pub(crate) struct Recorder {
    otel: Option<Instruments>,
    facade: bool,
}

/// The facade's labels for a set of attributes.
fn labels(attributes: &[KeyValue]) -> Vec<Label> {
    attributes
        .iter()
        .map(|kv| Label::new(kv.key.as_str().to_owned(), kv.value.as_str().into_owned()))
        .collect()
}

impl Recorder {
    /// Recording to the instruments of `meter` (when given) and to the facade (when
    /// `facade`).
    pub(crate) fn new(meter: Option<&Meter>, facade: bool) -> Self {
        Recorder {
            otel: meter.map(Instruments::new),
            facade,
        }
    }

    /// Whether anything is recorded at all.
    pub(crate) fn is_on(&self) -> bool {
        self.otel.is_some() || self.facade
    }

    /// Count an attempt, and register the failure counter at zero so that the
    /// failure ratio exists before the first failure.
    pub(crate) fn attempt(&self, flow: Flow, attributes: &[KeyValue]) {
        if let Some(otel) = &self.otel {
            otel.flow(flow).attempts.add(1, attributes);
            otel.flow(flow).failures.add(0, attributes);
        }
        if self.facade {
            let (attempts, failures, _) = flow.names();
            let labels = labels(attributes);
            ::metrics::counter!(attempts, labels.clone()).increment(1);
            ::metrics::counter!(failures, labels).increment(0);
        }
    }

    pub(crate) fn failure(&self, flow: Flow, attributes: &[KeyValue]) {
        if let Some(otel) = &self.otel {
            otel.flow(flow).failures.add(1, attributes);
        }
        if self.facade {
            ::metrics::counter!(flow.names().1, labels(attributes)).increment(1);
        }
    }

    pub(crate) fn latency(&self, flow: Flow, attributes: &[KeyValue], seconds: f64) {
        if let Some(otel) = &self.otel {
            otel.flow(flow).latency.record(seconds, attributes);
        }
        if self.facade {
            ::metrics::histogram!(flow.names().2, labels(attributes)).record(seconds);
        }
    }

    pub(crate) fn connected(&self, attributes: &[KeyValue], connected: bool) {
        if let Some(otel) = &self.otel {
            otel.connected.record(u64::from(connected), attributes);
        }
        if self.facade {
            ::metrics::gauge!(names::CONNECTED, labels(attributes)).set(if connected {
                1.0
            } else {
                0.0
            });
        }
    }

    /// Count `n` reconnects (0 registers the series).
    pub(crate) fn reconnects(&self, attributes: &[KeyValue], n: u64) {
        if let Some(otel) = &self.otel {
            otel.reconnects.add(n, attributes);
        }
        if self.facade {
            ::metrics::counter!(names::RECONNECTS, labels(attributes)).increment(n);
        }
    }

    /// One more (`up`) or one less publish in flight.
    pub(crate) fn inflight(&self, attributes: &[KeyValue], up: bool) {
        if let Some(otel) = &self.otel {
            otel.inflight.add(if up { 1 } else { -1 }, attributes);
        }
        if self.facade {
            let gauge = ::metrics::gauge!(names::INFLIGHT, labels(attributes));
            if up {
                gauge.increment(1.0);
            } else {
                gauge.decrement(1.0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| ((x - y) / y).abs() < 1e-4)
    }

    #[test]
    fn constants_match_the_go_ranges() {
        assert!(close(
            &exponential_buckets_range(0.0001, 1.0, 10),
            PUBLISH_LATENCY_BUCKETS
        ));
        assert!(close(
            &exponential_buckets_range(0.001, 1.0, 7),
            SUBSCRIBE_LATENCY_BUCKETS
        ));
        assert!(close(
            &exponential_buckets_range(0.001, 10.0, 15),
            CALLBACK_LATENCY_BUCKETS
        ));
    }

    #[test]
    fn degenerate_ranges() {
        assert!(exponential_buckets_range(0.0, 1.0, 3).is_empty());
        assert!(exponential_buckets_range(1.0, 1.0, 3).is_empty());
        assert!(exponential_buckets_range(1.0, 2.0, 0).is_empty());
        assert_eq!(exponential_buckets_range(1.0, 2.0, 1), vec![1.0]);
        assert_eq!(exponential_buckets_range(1.0, 4.0, 3), vec![1.0, 2.0, 4.0]);
    }
}
