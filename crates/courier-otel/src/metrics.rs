//! Metrics through the [`metrics`] facade, and the recommended histogram buckets.
//!
//! The facade records values; the exporter the application installs (Prometheus,
//! OTLP, StatsD, ...) decides how histograms are bucketed. The Go original's bucket
//! boundaries are given here as constants, with [`LATENCY_BUCKETS`] pairing each
//! latency histogram with its boundaries, ready for `metrics-exporter-prometheus`:
//!
//! ```ignore
//! use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
//!
//! let mut builder = PrometheusBuilder::new().with_http_listener(([127, 0, 0, 1], 9464));
//! for (metric, buckets) in courier_otel::metrics::LATENCY_BUCKETS {
//!     builder = builder.set_buckets_for_metric(Matcher::Full(metric.to_owned()), buckets)?;
//! }
//! builder.install()?;
//! ```
//!
//! Without buckets the Prometheus exporter renders histograms as summaries
//! (quantiles). Other boundaries: [`exponential_buckets_range`].

use ::metrics::{Label, Unit, describe_counter, describe_gauge, describe_histogram};

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

/// Register the descriptions and units of every metric with the installed recorder
/// (the exporter's `# HELP` lines). [`CourierOtel::install`](crate::CourierOtel::install)
/// calls it; call it again after installing a recorder later.
pub fn describe() {
    for (flow, attempts, failures, latency) in [
        (
            "publish",
            names::PUBLISH_ATTEMPTS,
            names::PUBLISH_FAILURES,
            names::PUBLISH_LATENCY,
        ),
        (
            "subscribe",
            names::SUBSCRIBE_ATTEMPTS,
            names::SUBSCRIBE_FAILURES,
            names::SUBSCRIBE_LATENCY,
        ),
        (
            "unsubscribe",
            names::UNSUBSCRIBE_ATTEMPTS,
            names::UNSUBSCRIBE_FAILURES,
            names::UNSUBSCRIBE_LATENCY,
        ),
        (
            "subscribe callback",
            names::CALLBACK_ATTEMPTS,
            names::CALLBACK_FAILURES,
            names::CALLBACK_LATENCY,
        ),
    ] {
        describe_counter!(attempts, format!("Number of MQTT {flow} attempts"));
        describe_counter!(failures, format!("Number of MQTT {flow} failures"));
        describe_histogram!(
            latency,
            Unit::Seconds,
            format!("Latency of MQTT {flow} calls")
        );
    }
    describe_gauge!(
        names::CONNECTED,
        "1 while the MQTT client is connected, 0 otherwise"
    );
    describe_counter!(
        names::RECONNECTS,
        "Number of successful MQTT reconnects after the first connection"
    );
    describe_gauge!(
        names::INFLIGHT,
        "MQTT publishes started and not yet acknowledged or failed"
    );
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

    /// The words for a failed operation, the span status's description prefix.
    pub(crate) fn error_message(self) -> &'static str {
        match self {
            Flow::Publish => "publish error",
            Flow::Subscribe => "subscribe error",
            Flow::Unsubscribe => "unsubscribe error",
            Flow::Callback => "callback error",
        }
    }

    /// Count an attempt, and register the failure counter at zero so that the
    /// failure ratio exists before the first failure.
    pub(crate) fn attempt(self, labels: &[Label]) {
        ::metrics::counter!(self.names().0, labels.to_vec()).increment(1);
        ::metrics::counter!(self.names().1, labels.to_vec()).increment(0);
    }

    pub(crate) fn failure(self, labels: &[Label]) {
        ::metrics::counter!(self.names().1, labels.to_vec()).increment(1);
    }

    pub(crate) fn latency(self, labels: &[Label], seconds: f64) {
        ::metrics::histogram!(self.names().2, labels.to_vec()).record(seconds);
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
