//! Property test: no value a `ClientBuilder` setter accepts makes the client panic.
//! Every combination of durations and numeric settings either fails `start()` with
//! a `ConfigError` or runs: a publish and a subscribe with those settings against a
//! port nobody listens on, then a stop (issue 14, item 5: `Duration::MAX` timeouts
//! and backoff caps, `max_queued_qos0(usize::MAX)` used to panic).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, Once, PoisonError};
use std::time::Duration;

use courier_core::{Backoff, Client, QoS};
use proptest::prelude::*;

/// Panics anywhere in the process, the client's background tasks included (Tokio
/// catches those, so they would not fail the test by themselves).
static PANICS: AtomicUsize = AtomicUsize::new(0);

/// Held by each test: the panic count is process-wide, so they take turns.
static SERIAL: Mutex<()> = Mutex::new(());

fn count_panics() -> MutexGuard<'static, ()> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, Ordering::SeqCst);
            default(info);
        }));
    });
    SERIAL.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Durations from zero to `Duration::MAX`, the edges more often than chance would.
fn duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        1 => Just(Duration::ZERO),
        8 => nonzero_duration(),
    ]
}

fn nonzero_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::MAX),
        Just(Duration::from_nanos(1)),
        Just(Duration::from_secs(u64::MAX)),
        (0u64..5_000).prop_map(Duration::from_millis),
        (1u64.., 0u32..1_000_000_000).prop_map(|(s, n)| Duration::new(s, n)),
    ]
}

fn count() -> impl Strategy<Value = usize> {
    prop_oneof![
        Just(0usize),
        Just(1usize),
        Just(usize::MAX),
        Just(usize::MAX >> 3),
        Just((usize::MAX >> 3) + 1),
        0usize..100_000,
        any::<usize>(),
    ]
}

#[derive(Debug, Clone)]
struct Settings {
    keep_alive: Duration,
    connect_timeout: Duration,
    write_timeout: Duration,
    ack_timeout: Duration,
    credential_timeout: Duration,
    graceful_shutdown: Duration,
    unrouted_hold: Duration,
    publish_timeout: Duration,
    stable_after: Duration,
    backoff: (Duration, Duration, f64),
    max_inflight: u16,
    max_queued_qos0: usize,
    max_packet_size: usize,
    subscription_buffer: usize,
}

fn settings() -> impl Strategy<Value = Settings> {
    let durations = (
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
        duration(),
    );
    let backoff = (
        duration(),
        duration(),
        prop_oneof![Just(0.0), Just(1.0), any::<f64>()],
    );
    // Mostly in range, so that most cases get past validation and run.
    let packet_size = prop_oneof![
        3 => 64usize..=courier_core::client::MQTT_MAX_PACKET_SIZE,
        1 => count(),
    ];
    let numbers = (any::<u16>(), count(), packet_size, count());
    (durations, backoff, numbers).prop_map(
        |((ka, ct, wt, at, cr, gs, uh, pt, sa), backoff, (mi, q0, mp, sb))| Settings {
            keep_alive: ka,
            connect_timeout: ct,
            write_timeout: wt,
            ack_timeout: at,
            credential_timeout: cr,
            graceful_shutdown: gs,
            unrouted_hold: uh,
            publish_timeout: pt,
            stable_after: sa,
            backoff,
            max_inflight: mi,
            max_queued_qos0: q0,
            max_packet_size: mp,
            subscription_buffer: sb,
        },
    )
}

/// A local port with nothing listening on it.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

async fn run(s: Settings, port: u16) {
    let (initial, max, jitter) = s.backoff;
    let built = Client::builder()
        .address("127.0.0.1", port)
        .client_id("settings-props")
        .keep_alive(s.keep_alive)
        .connect_timeout(s.connect_timeout)
        .write_timeout(s.write_timeout)
        .ack_timeout(s.ack_timeout)
        .credential_timeout(s.credential_timeout)
        .graceful_shutdown_period(s.graceful_shutdown)
        .unrouted_hold(s.unrouted_hold)
        .stable_after(s.stable_after)
        .reconnect_backoff(Backoff::exponential(initial, max).jitter(jitter))
        .start_backoff(Backoff::exponential(initial, max).jitter(jitter))
        .max_inflight(s.max_inflight)
        .max_queued_qos0(s.max_queued_qos0)
        .max_packet_size(s.max_packet_size)
        .subscription_buffer(s.subscription_buffer)
        .start();
    let Ok(client) = built else {
        return; // refused as a ConfigError: fine
    };
    // Nobody answers: each call ends by its own timeout or waits; either is fine,
    // only a panic is not. The bound keeps the case short.
    let bound = Duration::from_millis(20);
    for qos in [QoS::AtMostOnce, QoS::AtLeastOnce] {
        let publish = client.publish("t", "x").qos(qos).timeout(s.publish_timeout);
        let _ = tokio::time::timeout(bound, publish).await;
    }
    let _ = tokio::time::timeout(bound, client.subscribe("t/#")).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), client.stop()).await;
    assert!(stopped.is_ok(), "stop() returned");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn no_setting_a_setter_accepts_makes_the_client_panic(s in settings()) {
        let _serial = count_panics();
        let before = PANICS.load(Ordering::SeqCst);
        let port = closed_port();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(run(s, port));
        drop(runtime);
        prop_assert_eq!(PANICS.load(Ordering::SeqCst), before, "a panic happened");
    }
}

/// The values of the issue, one by one: each runs, or is a `ConfigError`.
#[test]
fn the_reported_values_run_or_are_refused_without_a_panic() {
    let _serial = count_panics();
    let base = Settings {
        keep_alive: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(1),
        write_timeout: Duration::from_secs(1),
        ack_timeout: Duration::from_secs(1),
        credential_timeout: Duration::from_secs(1),
        graceful_shutdown: Duration::from_secs(1),
        unrouted_hold: Duration::from_secs(1),
        publish_timeout: Duration::from_secs(1),
        stable_after: Duration::MAX,
        backoff: (Duration::from_millis(1), Duration::from_millis(2), 0.25),
        max_inflight: 10,
        max_queued_qos0: 10,
        max_packet_size: 1024,
        subscription_buffer: 10,
    };
    let cases = [
        Settings {
            publish_timeout: Duration::MAX,
            ..base.clone()
        },
        Settings {
            write_timeout: Duration::MAX,
            ..base.clone()
        },
        Settings {
            graceful_shutdown: Duration::MAX,
            ..base.clone()
        },
        Settings {
            ack_timeout: Duration::MAX,
            ..base.clone()
        },
        Settings {
            backoff: (Duration::MAX, Duration::MAX, 1.0),
            ..base.clone()
        },
        Settings {
            backoff: (Duration::from_millis(1), Duration::MAX, 0.25),
            ..base.clone()
        },
        Settings {
            max_queued_qos0: usize::MAX,
            ..base.clone()
        },
    ];
    for case in cases {
        let before = PANICS.load(Ordering::SeqCst);
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(run(case.clone(), closed_port()));
        drop(runtime);
        assert_eq!(
            PANICS.load(Ordering::SeqCst),
            before,
            "panicked with {case:?}"
        );
    }
    let refused = tokio::runtime::Runtime::new().unwrap().block_on(async {
        Client::builder()
            .address("127.0.0.1", 1883)
            .client_id("q")
            .max_queued_qos0(usize::MAX)
            .start()
            .err()
    });
    assert!(
        matches!(
            refused,
            Some(courier_core::ConfigError::OutOfRange {
                option: "max_queued_qos0",
                ..
            })
        ),
        "{refused:?}"
    );
}
