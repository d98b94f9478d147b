//! Exponential backoff with jitter and a cap, for reconnects and background starts.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// How long to wait before reconnect attempt `n` (1-based).
///
/// The default doubles from 1 s up to the cap of 5 min (the Go original's
/// `WithMaxReconnectInterval`), each delay spread by ±25 % jitter so that a
/// fleet of clients does not reconnect in lockstep.
#[derive(Clone)]
pub struct Backoff {
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    Exponential {
        initial: Duration,
        max: Duration,
        jitter: f64,
    },
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
}

impl Backoff {
    /// Doubling delays from `initial` up to `max`, with ±25 % jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff {
            kind: Kind::Exponential {
                initial,
                max,
                jitter: 0.25,
            },
        }
    }

    /// Set the jitter fraction (0.0 = none, 0.25 = ±25 %); clamped to 0.0..=1.0.
    /// No effect on a [`Backoff::custom`] backoff.
    pub fn jitter(mut self, fraction: f64) -> Self {
        if let Kind::Exponential { jitter, .. } = &mut self.kind {
            *jitter = if fraction.is_finite() {
                fraction.clamp(0.0, 1.0)
            } else {
                0.0
            };
        }
        self
    }

    /// Any function of the attempt number (1-based), as async-nats'
    /// `reconnect_delay_callback`.
    pub fn custom(delay: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Backoff {
            kind: Kind::Custom(Arc::new(delay)),
        }
    }

    /// The delay before attempt `attempt` (1-based; 0 is treated as 1).
    pub fn delay(&self, attempt: u32) -> Duration {
        match &self.kind {
            Kind::Custom(f) => f(attempt.max(1)),
            Kind::Exponential {
                initial,
                max,
                jitter,
            } => {
                let exp = attempt.saturating_sub(1).min(32);
                let base = initial.saturating_mul(1u32 << exp.min(31)).min(*max);
                if *jitter == 0.0 {
                    return base;
                }
                let spread = 1.0 + *jitter * (fastrand::f64() * 2.0 - 1.0);
                scale(base, spread).min(scale(*max, 1.0 + *jitter))
            }
        }
    }

    /// The cap of an exponential backoff (`None` for a custom one).
    pub fn max(&self) -> Option<Duration> {
        match &self.kind {
            Kind::Exponential { max, .. } => Some(*max),
            Kind::Custom(_) => None,
        }
    }

    pub(crate) fn initial_is_zero(&self) -> bool {
        matches!(&self.kind, Kind::Exponential { initial, .. } if initial.is_zero())
    }
}

/// `d` × `factor` (finite, ≥ 0), saturating at `Duration::MAX` where
/// `Duration::mul_f64` would panic.
fn scale(d: Duration, factor: f64) -> Duration {
    Duration::try_from_secs_f64(d.as_secs_f64() * factor).unwrap_or(Duration::MAX)
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::exponential(Duration::from_secs(1), Duration::from_secs(300))
    }
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Exponential {
                initial,
                max,
                jitter,
            } => f
                .debug_struct("Backoff::exponential")
                .field("initial", initial)
                .field("max", max)
                .field("jitter", jitter)
                .finish(),
            Kind::Custom(_) => f.write_str("Backoff::custom(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_without_jitter() {
        let b =
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).jitter(0.0);
        let got: Vec<u128> = (1..=6).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(1));
    }

    #[test]
    fn jitter_stays_within_its_fraction() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
        for _ in 0..1000 {
            let d = b.delay(3).as_secs_f64();
            assert!((3.0..=5.0).contains(&d), "{d}");
        }
    }

    #[test]
    fn huge_delays_saturate_instead_of_panicking() {
        let b = Backoff::exponential(Duration::MAX, Duration::MAX).jitter(0.5);
        for attempt in [1, 2, 40, u32::MAX] {
            assert!(b.delay(attempt) >= Duration::from_secs(u64::MAX / 2));
        }
    }

    #[test]
    fn custom_backoff_is_called_with_the_attempt() {
        let b = Backoff::custom(|n| Duration::from_secs(u64::from(n)));
        assert_eq!(b.delay(0), Duration::from_secs(1));
        assert_eq!(b.delay(7), Duration::from_secs(7));
        assert_eq!(b.max(), None);
    }
}
