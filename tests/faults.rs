#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]
//! Fault injection: the scenarios F1–F13 of the reliability plan, scaled down to run
//! in CI (the plan's sizes are in each test's comment; the F14 soak runs only with
//! `--ignored`), against Mosquitto
//! restarted by signal, the test kit's [`FaultProxy`] (half-open links, resets after
//! random byte counts, cuts at an exact MQTT packet, latency and throttling, refused
//! connections) and its scripted [`MockBroker`] (what no real broker does on cue).
//!
//! Every scenario prints one metrics line, also when it passes (see it with
//! `cargo test --test faults -- --nocapture`):
//!
//! `[F1] lost=0 duplicated=3 reordered=0 hung=0 detect_ms=1 recover_ms=84 | ...`
//!
//! - `lost`: expected messages that never arrived (or, where stated, publishes that
//!   were never acknowledged);
//! - `duplicated`: arrivals beyond the first of a message;
//! - `reordered`: first arrivals that came after a later message of the same stream;
//! - `hung`: publish futures still unresolved at the deadline;
//! - `detect_ms`: fault to the client's `Disconnected` event (worst case);
//! - `recover_ms`: fault removed (broker back, link restored) to `Connected` (worst
//!   case); `-` where it does not apply.
//!
//! Random choices (restart spacing, cut sizes) come from a seed printed with the
//! metrics; set `COURIER_FAULT_SEED` to replay one.
//!
//! Tests marked `#[ignore = "needs client fix: ..."]` assert a goal the client misses
//! today; their comments give the evidence. Scenarios that need Mosquitto (restarts,
//! persistent sessions through the proxy, password files, `message_size_limit`) print
//! `SKIP` with `COURIER_TEST_BROKER=embedded`; the others run on either broker.
//!
//! Already covered elsewhere, so not repeated here: one SIGTERM restart mid-stream
//! (`reconnect.rs`, `broker_restart_mid_stream_loses_no_qos1_message`), re-publish or
//! `SessionLost` by policy after a lost session and exact backoff delays with the
//! broker stopped (`reconnect.rs`), DUP on a retransmitted QoS 1 publish, QoS 2
//! resumption with PUBREL, an unknown PUBREL, a QoS 2 re-send before PUBREL and a
//! window of 2 with out-of-order acks on one connection (`protocol.rs`), a slow
//! handler (`subscribe.rs`), oversized and invalid publishes refused locally
//! (`validation.rs`), refused, TCP, DNS and credential-provider errors on the first
//! connect (`connect.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::{
    Backoff, Client, ClientBuilder, Credentials, Event, Message, PublishError, QoS, RefusedReason,
};
use courier_integration_tests::faults::{
    Arrivals, EventLog, Link, Metrics, Publisher, RestartOutcome, RestartPlan, Rng, Stream,
    StreamRig, addr_of, client_at, describe, f1_restarts_lose_no_qos1_message, f4_half_open_link,
    is_connected, is_disconnected, ms, payload, restart_scenario, secs, spawn_collector,
};
use courier_integration_tests::{
    BrokerOptions, Capability, broker, broker_with, client, eventually, needs, selected_broker_has,
};
use courier_testkit::mqtt::{
    self, MALFORMED_REMAINING_LENGTH, MALFORMED_RESERVED_TYPE, PUBCOMP, PUBLISH, PUBREC, PUBREL,
    Publish, SUBSCRIBE,
};
use courier_testkit::{Close, Direction, FaultProxy, MockBroker, MockConnection};
use tokio::task::JoinHandle;
use tokio::time::Instant;

// ---------------------------------------------------------------------------------
// F1–F3: broker restarts

/// F1. Plan: 20 SIGTERM restarts at random 1–4 s, 10,000 QoS 1 publishes, inflight 20,
/// persistent sessions, `persistence true`. Scaled: 5 restarts spread over 2,000
/// messages (each 1/6 of the stream apart, plus up to 150 ms of random delay).
/// Pass: lost = 0, hung = 0, every publish Ok, session present after each restart,
/// duplicates reported and bounded by restarts × (inflight + broker inflight).
#[tokio::test]
async fn f1_sigterm_restarts_lose_no_qos1_message() {
    f1_restarts_lose_no_qos1_message(Link::Tcp).await;
}

/// F2. Plan: F1 at QoS 2 with 5,000 messages. Scaled: 5 restarts over 1,000 messages.
/// Pass: lost = 0 and duplicated = 0 at the handler, every publish Ok. Order is
/// reported here and asserted by the next test. Duplicates the broker caused by
/// re-sending a message after its PUBREL (Mosquitto does, `resent_after_pubrel`)
/// are shown on the wire, counted and reported apart: the client must deliver
/// those; every other duplicate fails the test.
#[tokio::test]
async fn f2_sigterm_restarts_deliver_qos2_exactly_once() {
    let Some(out) = restart_scenario(&f2_plan()).await else {
        return;
    };
    out.metrics.print("F2");
    assert!(out.errors.is_empty(), "{}", describe(&out.errors));
    assert_eq!(out.metrics.hung, 0);
    assert_eq!(out.metrics.lost, 0);
    assert!(
        out.client_duplicates.is_empty(),
        "handled twice without a re-send after PUBREL: {:?}",
        out.client_duplicates
    );
    assert_eq!(out.publisher_sessions, vec![true; 5]);
}

fn f2_plan() -> RestartPlan {
    RestartPlan {
        link: Link::Tcp,
        scenario: "F2",
        qos: QoS::ExactlyOnce,
        n: 1000,
        restarts: 5,
        kill: false,
    }
}

/// F2, order: the plan requires strict order per publisher at QoS 2. Before the
/// client re-sorted its replay, 5–20 messages arrived late after each restart
/// (reordered=6..75 per run): messages whose PUBREL was sent but not completed
/// before the restart were released after the re-sent PUBLISHes of newer messages,
/// because rumqttc's `clean()` replays all PUBLISHes first, then PUBRELs by
/// ascending packet id. `f6_resent_pubrels_precede_resent_publishes` pins the wire
/// order the client sends now.
#[tokio::test]
async fn f2_sigterm_restarts_keep_qos2_order() {
    let Some(out) = restart_scenario(&f2_plan()).await else {
        return;
    };
    out.metrics.print("F2-order");
    assert_eq!(out.metrics.lost, 0);
    assert_eq!(out.metrics.reordered, 0);
}

/// F3. Plan: 20 SIGKILL restarts without persistence (the session is lost each time),
/// 10,000 QoS 1. Scaled: 5 kills over 1,000 messages. Pass: hung = 0 (every publish
/// resolves within the write timeout); session present = 0 reported after every kill
/// (G7); the subscription re-made within 1 s of CONNACK, proved by a probe after every
/// kill (G5). `lost` counts publishes never acknowledged (asserted to be 0 by the next
/// test); messages the broker lost for the subscriber are `subscriber_missing`.
#[tokio::test]
async fn f3_sigkill_restarts_resubscribe_and_resolve_every_publish() {
    if !selected_broker_has(
        "f3_sigkill_restarts_resubscribe_and_resolve_every_publish",
        &[Capability::SessionsLostWhenKilled],
    ) {
        return;
    }
    let Some(out) = f3_run("F3").await else {
        return;
    };
    assert_eq!(out.metrics.hung, 0);
    assert!(
        out.errors
            .iter()
            .all(|(_, e)| matches!(e, PublishError::Timeout(_) | PublishError::SessionLost)),
        "{}",
        describe(&out.errors)
    );
    assert_eq!(out.publisher_sessions, vec![false; 5]);
    assert_eq!(out.subscriber_sessions, vec![false; 5]);
    assert_eq!(out.probe_ms.len(), 5);
    assert!(
        out.probe_ms.iter().all(|ms| *ms <= 1000),
        "{:?}",
        out.probe_ms
    );
}

/// F3, the plan's "with `republish_on_session_loss` all acknowledged": with the default
/// `SessionLossPolicy::Republish` every publish must resolve Ok. Observed in about one
/// run in three: one publish fails with `Timeout` and its message never reaches the
/// broker, after a kill that the client noticed on a write (`Broken pipe`);
/// `f3_a_failed_write_at_disconnect_keeps_publish_tracking` reproduces it every time.
#[tokio::test]
async fn f3_sigkill_restarts_acknowledge_every_publish() {
    let Some(out) = f3_run("F3-acked").await else {
        return;
    };
    assert!(out.errors.is_empty(), "{}", describe(&out.errors));
}

async fn f3_run(label: &str) -> Option<RestartOutcome> {
    let plan = RestartPlan {
        link: Link::Tcp,
        scenario: "F3",
        qos: QoS::AtLeastOnce,
        n: 1000,
        restarts: 5,
        kill: true,
    };
    let mut out = restart_scenario(&plan).await?;
    let missing = out.metrics.lost;
    out.metrics.lost = out.errors.len();
    out.metrics.note(format!("subscriber_missing={missing}"));
    out.metrics.print(label);
    Some(out)
}

// ---------------------------------------------------------------------------------
// F4–F6, F12: the link, through the fault proxy

/// F4. Plan: a half-open link (proxy blackhole) for 30 s with keep-alive 5 s, an idle
/// client and one publishing QoS 0; disconnect detected within 2×KA + 1 s (rumqttc:
/// the second unanswered ping), reconnect within (backoff step + 1 s) of the link
/// coming back, QoS 1 published during the outage lost = 0. Scaled: keep-alive 2 s
/// (bound 5 s); the link comes back 0.5 s after both clients noticed. Runs on either
/// broker.
#[tokio::test]
async fn f4_half_open_link_is_detected_and_recovered() {
    f4_half_open_link(Link::Tcp).await;
}

/// F5. Plan: the proxy closes the connection (RST or FIN) after a random 1–64 KiB,
/// 200 times, under QoS 1 and QoS 2 streams; QoS 1 lost = 0, QoS 2 lost = dup = 0, no
/// error but reconnectable ones. Scaled: up to 16 cuts (alternately RST and FIN) over
/// two streams of 600 messages of 256 bytes, publishers and the subscriber all
/// through the proxy (so inbound QoS 2 is cut too). Needs Mosquitto (persistent
/// sessions).
#[tokio::test]
async fn f5_resets_after_random_byte_counts_lose_nothing() {
    const N: u64 = 600;
    const MAX_CUTS: u64 = 16;
    if !selected_broker_has(
        "f5_resets_after_random_byte_counts_lose_nothing",
        &[Capability::PersistentSessions, Capability::Qos2],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().max_queued_messages(100_000)).await;
    let mut rng = Rng::new("F5");
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let via_proxy = |name: &str| {
        client_at(proxy.addr(), name)
            .clean_session(false)
            .max_inflight(20)
            .write_timeout(secs(60))
            // Cuts within 5 s of CONNACK would otherwise count as failed
            // attempts and slow the reconnects this test wants many of.
            .stable_after(Duration::ZERO)
    };
    let StreamRig {
        arrivals,
        sub_client,
        collector,
        p1,
        p2,
        logs,
    } = StreamRig::start(via_proxy, "f5").await;
    let stream = |name, qos| Stream {
        padding: 256,
        ..Stream::new(name, format!("f5/{name}"), N, qos)
    };
    let q1 = Publisher::spawn(&p1, stream("q1", QoS::AtLeastOnce));
    let q2 = Publisher::spawn(&p2, stream("q2", QoS::ExactlyOnce));

    let mut metrics = Metrics::default();
    let mut sizes = Vec::new();
    let mut cut_times = Vec::new();
    let clients = [&sub_client, &p1, &p2];
    while proxy.cuts() < MAX_CUTS && !(q1.done() && q2.done()) {
        let n = rng.range(1024, 64 * 1024);
        let how = if proxy.cuts() % 2 == 0 {
            Close::Rst
        } else {
            Close::Fin
        };
        let before = proxy.cuts();
        proxy.cut_after_bytes_with(n, how);
        eventually(secs(30), || {
            proxy.cuts() > before || (q1.done() && q2.done())
        })
        .await;
        if proxy.cuts() > before {
            sizes.push(n);
            cut_times.push(Instant::now());
            // Let everyone reconnect before the next cut, so cuts hit streams
            // rather than handshakes (those happen too, at times).
            eventually(secs(3), || clients.iter().all(|c| c.is_connected())).await;
        }
    }
    // Detection: the first disconnect (or failed connect) any client reports after
    // each cut.
    let noticed = |e: &Event| is_disconnected(e) || matches!(e, Event::ConnectFailed { .. });
    for cut in &cut_times {
        let first = logs
            .iter()
            .filter_map(|l| l.first_after(*cut - ms(50), noticed))
            .min();
        if let Some(t) = first {
            metrics.detected(t.saturating_duration_since(*cut));
        }
    }
    proxy.pass();
    let (mut errors, hung1) = q1.finish(secs(60)).await;
    let (errors2, hung2) = q2.finish(secs(60)).await;
    errors.extend(errors2);
    metrics.hung = hung1 + hung2;
    let complete = arrivals
        .settle(&[("q1", N), ("q2", N)], secs(30), secs(1))
        .await;
    let (t1, t2) = (arrivals.tally("q1"), arrivals.tally("q2"));
    t1.add_to(&mut metrics, N);
    t2.add_to(&mut metrics, N);
    for log in &logs {
        for outage in log.outages() {
            metrics.recovered(outage);
        }
    }
    metrics.note(format!(
        "cuts={} cut_after_bytes={sizes:?} seed={} qos1(lost={},dup={},reordered={}) qos2(lost={},dup={},reordered={}) reconnects={} publish_errors={}",
        proxy.cuts(),
        rng.seed,
        t1.lost(N),
        t1.duplicated(),
        t1.reordered,
        t2.lost(N),
        t2.duplicated(),
        t2.reordered,
        logs.iter().map(|l| l.count(is_connected)).sum::<usize>(),
        errors.len()
    ));
    metrics.print("F5");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(metrics.hung, 0);
    assert!(proxy.cuts() >= 4, "the faults happened mid-stream");
    assert!(complete);
    assert_eq!(t1.lost(N), 0);
    assert_eq!((t2.lost(N), t2.duplicated()), (0, 0));
    collector.abort();
    for c in [p1, p2, sub_client] {
        c.stop().await;
    }
}

fn wire_summary(packets: &[&courier_testkit::proxy::CapturedPacket]) -> String {
    packets
        .iter()
        .map(|p| {
            format!(
                "{}{}{}",
                mqtt::type_name(p.kind()),
                p.pkid.map(|id| format!("#{id}")).unwrap_or_default(),
                if p.kind() == PUBLISH && p.dup() {
                    "(dup)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The captured packets of `connection` going `direction`, of the given kinds.
fn on_wire(
    wire: &[courier_testkit::proxy::CapturedPacket],
    connection: u64,
    direction: Direction,
    kinds: &[u8],
) -> Vec<courier_testkit::proxy::CapturedPacket> {
    wire.iter()
        .filter(|p| {
            p.connection == connection && p.direction == direction && kinds.contains(&p.kind())
        })
        .cloned()
        .collect()
}

/// The connections that started (CONNECT) during a capture, in order; packets of
/// connections from before the capture may trail in and are ignored.
fn connections(wire: &[courier_testkit::proxy::CapturedPacket]) -> Vec<u64> {
    wire.iter()
        .filter(|p| p.kind() == mqtt::CONNECT)
        .map(|p| p.connection)
        .collect()
}

/// F6, outbound. Plan: a cut at each step of an outgoing QoS 2 exchange (proxy or
/// mock), one message per case; after the reconnect the wire shows PUBLISH with DUP=1
/// and the same id when the broker may not have it, PUBREL (never PUBLISH) once
/// PUBREC came [MQTT-4.3.3-1]; the subscriber's handler runs exactly once. The proxy
/// resets the publisher's connection right before forwarding: its PUBLISH, the
/// broker's PUBREC, its PUBREL, the broker's PUBCOMP. Needs Mosquitto.
#[tokio::test]
async fn f6_qos2_publish_resumes_at_the_step_it_was_cut() {
    if !selected_broker_has(
        "f6_qos2_publish_resumes_at_the_step_it_was_cut",
        &[Capability::PersistentSessions, Capability::Qos2],
    ) {
        return;
    }
    let broker = broker().await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let arrivals = Arrivals::default();
    let watcher = client(&broker, "f6-watch").connect().await.unwrap();
    let seen = arrivals.clone();
    watcher
        .subscribe("f6/out/#")
        .qos(QoS::ExactlyOnce)
        .handler(move |_c: Client, m: Message| {
            seen.record(&m);
            async {}
        })
        .await
        .unwrap();
    let cases: [(&'static str, u8, Direction); 4] = [
        ("publish", PUBLISH, Direction::ClientToBroker),
        ("pubrec", PUBREC, Direction::BrokerToClient),
        ("pubrel", PUBREL, Direction::ClientToBroker),
        ("pubcomp", PUBCOMP, Direction::BrokerToClient),
    ];
    let mut metrics = Metrics::default();
    let mut failures = Vec::new();
    for (name, kind, direction) in cases {
        proxy.capture(true);
        let publisher = client_at(proxy.addr(), &format!("f6-{name}"))
            .clean_session(false)
            .write_timeout(secs(10))
            .connect()
            .await
            .unwrap();
        let log = EventLog::watch(&publisher);
        let cuts = proxy.cuts();
        proxy.cut_on(kind, direction, 1);
        let started = Instant::now();
        let result = publisher
            .publish(format!("f6/out/{name}"), payload(name, 0, 0))
            .qos(QoS::ExactlyOnce)
            .await;
        let took = started.elapsed();
        tokio::time::sleep(ms(300)).await;
        let wire = proxy.captured();
        let ids = connections(&wire);
        let kinds = [PUBLISH, PUBREL];
        let before = on_wire(&wire, ids[0], Direction::ClientToBroker, &kinds);
        let after = ids
            .get(1)
            .map(|c| on_wire(&wire, *c, Direction::ClientToBroker, &kinds))
            .unwrap_or_default();
        let tally = arrivals.tally(name);
        metrics.lost += tally.lost(1);
        metrics.duplicated += tally.duplicated();
        if let Some(down) = log.first_after(started, is_disconnected) {
            metrics.detected(down - started);
            if let Some(up) = log.first_after(down, is_connected) {
                metrics.recovered(up - down);
            }
        }
        metrics.note(format!(
            "cut-before-{name}: [{}] -> [{}] in {}ms;",
            wire_summary(&before.iter().collect::<Vec<_>>()),
            wire_summary(&after.iter().collect::<Vec<_>>()),
            took.as_millis()
        ));
        // Expected on the new connection.
        let id = after.first().and_then(|p| p.pkid);
        let ok = match kind {
            PUBLISH | PUBREC => {
                after.len() == 2
                    && after[0].kind() == PUBLISH
                    && after[0].dup()
                    && after[1].kind() == PUBREL
                    && after[1].pkid == id
                    && before.iter().all(|p| p.pkid == id && !p.dup())
            }
            _ => {
                after.len() == 1
                    && after[0].kind() == PUBREL
                    && before
                        .first()
                        .is_some_and(|p| p.pkid == id && p.kind() == PUBLISH)
            }
        };
        if result.is_err() || proxy.cuts() != cuts + 1 || !ok || tally.total != 1 {
            failures.push(format!(
                "{name}: result {result:?}, cuts {}, wire ok {ok}, handled {}",
                proxy.cuts() - cuts,
                tally.total
            ));
        }
        publisher.stop().await;
    }
    metrics.print("F6-out");
    assert!(failures.is_empty(), "{failures:#?}");
    watcher.stop().await;
}

/// F6, inbound: the same cuts on the subscriber's side of a QoS 2 delivery. The proxy
/// resets the subscriber's connection right before forwarding: the broker's PUBLISH,
/// the client's PUBREC, the broker's PUBREL, the client's PUBCOMP. After the
/// reconnect (session present) the broker resends PUBLISH or PUBREL; the client must
/// answer PUBREC or PUBCOMP (a PUBREL for an id rumqttc forgot is not an error,
/// rumqttc #664), run the handler exactly once, and not disconnect again. Needs
/// Mosquitto.
#[tokio::test]
async fn f6_qos2_delivery_resumes_at_the_step_it_was_cut() {
    if !selected_broker_has(
        "f6_qos2_delivery_resumes_at_the_step_it_was_cut",
        &[Capability::PersistentSessions, Capability::Qos2],
    ) {
        return;
    }
    let broker = broker().await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let publisher = client(&broker, "f6-in-pub").connect().await.unwrap();
    let cases: [(&'static str, u8, Direction); 4] = [
        ("publish", PUBLISH, Direction::BrokerToClient),
        ("pubrec", PUBREC, Direction::ClientToBroker),
        ("pubrel", PUBREL, Direction::BrokerToClient),
        ("pubcomp", PUBCOMP, Direction::ClientToBroker),
    ];
    let mut metrics = Metrics::default();
    let mut failures = Vec::new();
    for (name, kind, direction) in cases {
        proxy.capture(true);
        let arrivals = Arrivals::default();
        let seen = arrivals.clone();
        let subscriber = client_at(proxy.addr(), &format!("f6-in-{name}"))
            .clean_session(false)
            .connect()
            .await
            .unwrap();
        subscriber
            .subscribe(format!("f6/in/{name}"))
            .qos(QoS::ExactlyOnce)
            .handler(move |_c: Client, m: Message| {
                seen.record(&m);
                async {}
            })
            .await
            .unwrap();
        let log = EventLog::watch(&subscriber);
        let cuts = proxy.cuts();
        proxy.cut_on(kind, direction, 1);
        let started = Instant::now();
        publisher
            .publish(format!("f6/in/{name}"), payload(name, 0, 0))
            .qos(QoS::ExactlyOnce)
            .await
            .unwrap();
        // Until the exchange completed on the new connection, then a quiet period.
        eventually(secs(10), || {
            let wire = proxy.captured();
            connections(&wire).get(1).is_some_and(|c| {
                !on_wire(&wire, *c, Direction::ClientToBroker, &[PUBCOMP]).is_empty()
            })
        })
        .await;
        tokio::time::sleep(ms(500)).await;
        let wire = proxy.captured();
        let ids = connections(&wire);
        let kinds = [PUBLISH, PUBREC, PUBREL, PUBCOMP];
        let after_in = ids
            .get(1)
            .map(|c| on_wire(&wire, *c, Direction::BrokerToClient, &kinds))
            .unwrap_or_default();
        let after_out = ids
            .get(1)
            .map(|c| on_wire(&wire, *c, Direction::ClientToBroker, &kinds))
            .unwrap_or_default();
        let tally = arrivals.tally(name);
        metrics.lost += tally.lost(1);
        metrics.duplicated += tally.duplicated();
        let downs = log.count(is_disconnected);
        if let Some(down) = log.first_after(started, is_disconnected) {
            metrics.detected(down - started);
            if let Some(up) = log.first_after(down, is_connected) {
                metrics.recovered(up - down);
            }
        }
        metrics.note(format!(
            "cut-before-{name}: broker resent [{}], client answered [{}];",
            wire_summary(&after_in.iter().collect::<Vec<_>>()),
            wire_summary(&after_out.iter().collect::<Vec<_>>()),
        ));
        let answered_pubcomp = after_out.last().is_some_and(|p| p.kind() == PUBCOMP);
        if proxy.cuts() != cuts + 1 || tally.total != 1 || downs != 1 || !answered_pubcomp {
            failures.push(format!(
                "{name}: cuts {}, handled {}, disconnects {downs}, client sent [{}]",
                proxy.cuts() - cuts,
                tally.total,
                wire_summary(&after_out.iter().collect::<Vec<_>>())
            ));
        }
        subscriber.stop().await;
    }
    metrics.print("F6-in");
    assert!(failures.is_empty(), "{failures:#?}");
    publisher.stop().await;
}

/// Connects a client built by `builder` to `mock`, answering CONNACK with
/// `session_present`.
async fn connect_mock(
    mock: &MockBroker,
    builder: ClientBuilder,
    session_present: bool,
) -> (Client, MockConnection) {
    let (client, conn) = tokio::join!(builder.connect(), mock.accept_with(session_present));
    (client.unwrap(), conn.unwrap())
}

/// Three QoS 2 publishes a, b, c; the broker sends PUBREC for c, then a (so the client
/// sends PUBREL c, PUBREL a) and drops the connection before any PUBCOMP; on the next
/// connection (session present) returns the client's first three packets, then
/// completes everything. Returns (ids of a, b, c; first three packets; all Ok).
async fn qos2_resume_after_mixed_steps() -> ([u16; 3], Vec<mqtt::Packet>, bool) {
    let mock = MockBroker::start().await.unwrap();
    let builder = client_at(mock.addr(), "f6-order")
        .clean_session(false)
        .write_timeout(secs(10));
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let publishes = Publisher::spawn(&client, Stream::new("o", "f6/order", 3, QoS::ExactlyOnce));
    let mut ids = [0u16; 3];
    for id in &mut ids {
        *id = conn.expect(PUBLISH, secs(5)).await.unwrap().pkid().unwrap();
    }
    conn.send_pubrec(ids[2]).await.unwrap();
    conn.send_pubrec(ids[0]).await.unwrap();
    let live: Vec<Option<u16>> = [
        conn.expect(PUBREL, secs(5)).await.unwrap(),
        conn.expect(PUBREL, secs(5)).await.unwrap(),
    ]
    .iter()
    .map(mqtt::Packet::pkid)
    .collect();
    assert_eq!(live, [Some(ids[2]), Some(ids[0])], "PUBREL in PUBREC order");
    conn.reset();
    let mut again = mock.accept_timeout(true, secs(5)).await.unwrap();
    let mut first = Vec::new();
    for _ in 0..3 {
        first.push(again.recv_timeout(secs(5)).await.unwrap().unwrap());
    }
    let replayed = first.clone();
    let responder = tokio::spawn(async move {
        for p in &replayed {
            again.ack(p).await?;
        }
        loop {
            let p = again.recv().await?;
            again.ack(&p).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let (errors, hung) = publishes.finish(secs(10)).await;
    let ok = errors.is_empty() && hung == 0;
    client.stop().await;
    responder.abort();
    (ids, first, ok)
}

fn describe_packets(packets: &[mqtt::Packet]) -> String {
    packets
        .iter()
        .map(|p| {
            format!(
                "{}#{}{}",
                mqtt::type_name(p.kind()),
                p.pkid().unwrap_or(0),
                if p.kind() == PUBLISH && p.dup() {
                    "(dup)"
                } else {
                    ""
                }
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// F6 with the mock broker, several QoS 2 messages at different steps: after the
/// reconnect the client resends PUBREL for those past PUBREC and PUBLISH (DUP, same
/// id) for the other, never PUBLISH for a message past PUBREC, and every publish
/// completes. (The order is checked by the next test.)
#[tokio::test]
async fn f6_mixed_qos2_steps_resume_with_the_right_packets() {
    let (ids, first, ok) = qos2_resume_after_mixed_steps().await;
    let mut metrics = Metrics {
        hung: usize::from(!ok),
        ..Metrics::default()
    };
    metrics.note(format!(
        "ids(a,b,c)={ids:?} before_cut=[PUBREL#{} PUBREL#{}] replay=[{}]",
        ids[2],
        ids[0],
        describe_packets(&first)
    ));
    metrics.print("F6-mock");
    assert!(ok, "every publish resolves Ok");
    let mut got: Vec<(u8, Option<u16>, bool)> = first
        .iter()
        .map(|p| (p.kind(), p.pkid(), p.kind() == PUBLISH && p.dup()))
        .collect();
    got.sort();
    let mut want = vec![
        (PUBLISH, Some(ids[1]), true),
        (PUBREL, Some(ids[0]), false),
        (PUBREL, Some(ids[2]), false),
    ];
    want.sort();
    assert_eq!(got, want);
}

/// F6/F2, order: after the reconnect, PUBRELs must go out in the order their PUBRECs
/// came [MQTT-4.6.0-4], and before the re-sent PUBLISH of a newer message (a broker
/// that delivers on PUBREL, as Mosquitto does, otherwise releases the newer message
/// first: the reordering seen in F2 and F5). Observed:
/// `PUBLISH#2(dup) PUBREL#1 PUBREL#3` (rumqttc's `clean()` order: PUBLISH first,
/// then PUBREL by ascending id) instead of `PUBREL#3 PUBREL#1 PUBLISH#2(dup)`.
#[tokio::test]
async fn f6_resent_pubrels_precede_resent_publishes() {
    let (ids, first, ok) = qos2_resume_after_mixed_steps().await;
    println!("[F6-order] replay=[{}]", describe_packets(&first));
    assert!(ok);
    let got: Vec<(u8, Option<u16>)> = first.iter().map(|p| (p.kind(), p.pkid())).collect();
    assert_eq!(
        got,
        [
            (PUBREL, Some(ids[2])),
            (PUBREL, Some(ids[0])),
            (PUBLISH, Some(ids[1])),
        ]
    );
}

// ---------------------------------------------------------------------------------
// F7, F8: the mock broker

/// Subscribes `client` to `filter` at QoS 2 with a handler that records each payload
/// in `handled`, then runs `then` on it; the mock behind `conn` grants the SUBSCRIBE.
async fn subscribe_qos2_recording<F, Fut>(
    client: &Client,
    conn: &mut MockConnection,
    filter: &str,
    handled: &Arc<Mutex<Vec<String>>>,
    then: F,
) where
    F: Fn(String) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let record = handled.clone();
    let subscribing = tokio::spawn({
        let client = client.clone();
        let filter = filter.to_owned();
        async move {
            client
                .subscribe(filter)
                .qos(QoS::ExactlyOnce)
                .handler(move |_c: Client, m: Message| {
                    let text = m.payload_str().unwrap_or_default().to_owned();
                    record.lock().unwrap().push(text.clone());
                    then(text)
                })
                .await
        }
    });
    let sub = conn.expect(SUBSCRIBE, secs(5)).await.unwrap();
    conn.ack(&sub).await.unwrap();
    subscribing.await.unwrap().unwrap();
}

/// F7. Plan (mock): a duplicate QoS 2 PUBLISH (DUP=1, same id) before PUBREL, then
/// PUBREL; a PUBREL for an unknown id after a reconnect. Pass: the handler runs once,
/// PUBREC is sent again, the unknown PUBREL gets PUBCOMP and the connection stays up.
/// The one-connection version is `protocol.rs`; here the duplicates cross a
/// reconnect with session present (rumqttc forgets its incoming QoS 2 ids then), one
/// of them while its handler is still running, and the id is reused afterwards.
#[tokio::test]
async fn f7_qos2_duplicates_and_unknown_pubrel_across_a_reconnect() {
    let mock = MockBroker::start().await.unwrap();
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    let builder = client_at(mock.addr(), "f7").clean_session(false);
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let log = EventLog::watch(&client);
    subscribe_qos2_recording(&client, &mut conn, "f7/#", &handled, |text| async move {
        if text == "slow" {
            tokio::time::sleep(ms(400)).await;
        }
    })
    .await;

    let q2 = |id: u16, text: &str, dup: bool| Publish::new("f7/t", text).qos(2, id).dup(dup);
    conn.send_publish(&q2(9, "first", false)).await.unwrap();
    assert_eq!(conn.expect(PUBREC, secs(5)).await.unwrap().pkid(), Some(9));
    conn.send_publish(&q2(10, "slow", false)).await.unwrap();
    tokio::time::sleep(ms(50)).await;
    let cut = Instant::now();
    conn.reset(); // 9 awaits PUBREL, 10 is still being handled

    let mut conn = mock.accept_timeout(true, secs(5)).await.unwrap();
    let mut recs = 0;
    conn.send_publish(&q2(9, "first", true)).await.unwrap();
    assert_eq!(conn.expect(PUBREC, secs(5)).await.unwrap().pkid(), Some(9));
    recs += 1;
    conn.send_publish(&q2(10, "slow", true)).await.unwrap();
    assert_eq!(
        conn.recv_until(PUBREC, secs(5)).await.unwrap().pkid(),
        Some(10)
    );
    recs += 1;
    conn.send_pubrel(9).await.unwrap();
    conn.send_pubrel(10).await.unwrap();
    let mut comps = Vec::new();
    while comps.len() < 2 {
        let p = conn.recv_timeout(secs(5)).await.unwrap().unwrap();
        match p.kind() {
            PUBCOMP => comps.push(p.pkid().unwrap()),
            PUBREC => recs += 1, // 10 acknowledged once its handler finished
            _ => panic!("unexpected {p:?}"),
        }
    }
    comps.sort_unstable();
    assert_eq!(comps, [9, 10]);
    conn.send_pubrel(77).await.unwrap();
    assert_eq!(
        conn.expect(PUBCOMP, secs(5)).await.unwrap().pkid(),
        Some(77)
    );
    // The id is free again: a new message.
    conn.send_publish(&q2(9, "second", false)).await.unwrap();
    assert_eq!(conn.expect(PUBREC, secs(5)).await.unwrap().pkid(), Some(9));
    conn.send_pubrel(9).await.unwrap();
    assert_eq!(conn.expect(PUBCOMP, secs(5)).await.unwrap().pkid(), Some(9));
    conn.expect_silence(ms(500)).await.unwrap();

    let handled = handled.lock().unwrap().clone();
    let mut metrics = Metrics {
        duplicated: handled.len().saturating_sub(3),
        lost: ["first", "slow", "second"]
            .iter()
            .filter(|m| !handled.iter().any(|h| h == *m))
            .count(),
        ..Metrics::default()
    };
    if let Some(down) = log.first_after(cut, is_disconnected) {
        metrics.detected(down - cut);
    }
    if let Some(up) = log.first_after(cut, is_connected) {
        metrics.recovered(up - cut);
    }
    let disconnects = log.count(is_disconnected);
    metrics.note(format!(
        "handled={handled:?} pubrecs_on_reconnect={recs} unknown_pubrel=PUBCOMP disconnects={disconnects}"
    ));
    metrics.print("F7");
    assert_eq!(handled, ["first", "slow", "second"]);
    assert_eq!(disconnects, 1, "only the cut: {:?}", log.reasons());
    client.stop().await;
}

/// F7, acknowledgements across a reconnect (mock): two QoS 2 messages whose
/// handlers finish after the connection that brought them is gone, one while the
/// client is disconnected, one after it reconnected. Pass: no PUBREC goes out before
/// the broker re-sends each PUBLISH [MQTT-4.4.0-1], the re-sends are acknowledged,
/// and each handler ran once. An unsolicited PUBREC is what made Mosquitto deliver
/// QoS 2 messages twice in F2 wire traces: it answers with PUBREL even for a message
/// still in its queue, then sends that message as a new one.
#[tokio::test]
async fn f7_acknowledgements_wait_for_the_re_send_after_a_reconnect() {
    let mock = MockBroker::start().await.unwrap();
    let handled = Arc::new(Mutex::new(Vec::<String>::new()));
    // The handler of "a" waits for release level 1, that of "b" for level 2.
    let (release, released) = tokio::sync::watch::channel(0u8);
    let builder = client_at(mock.addr(), "f7-ack").clean_session(false);
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    subscribe_qos2_recording(&client, &mut conn, "f7ack/#", &handled, move |text| {
        let mut released = released.clone();
        let level = if text == "a" { 1 } else { 2 };
        async move {
            let _ = released.wait_for(|l| *l >= level).await;
        }
    })
    .await;

    let q2 = |id: u16, text: &str, dup: bool| Publish::new("f7ack/t", text).qos(2, id).dup(dup);
    conn.send_publish(&q2(21, "a", false)).await.unwrap();
    conn.send_publish(&q2(22, "b", false)).await.unwrap();
    // One message at a time per handler: "b" starts once "a" is done.
    assert!(eventually(secs(5), || handled.lock().unwrap().len() == 1).await);
    conn.reset();
    release.send_replace(1); // "a" finishes while the client is disconnected
    assert!(eventually(secs(5), || handled.lock().unwrap().len() == 2).await);
    let mut conn = mock.accept_timeout(true, secs(5)).await.unwrap();
    release.send_replace(2); // "b" finishes on the new connection
    conn.expect_silence(ms(300)).await.unwrap();

    conn.send_publish(&q2(21, "a", true)).await.unwrap();
    conn.send_publish(&q2(22, "b", true)).await.unwrap();
    let recs = [
        conn.expect(PUBREC, secs(5)).await.unwrap().pkid(),
        conn.expect(PUBREC, secs(5)).await.unwrap().pkid(),
    ];
    assert_eq!(recs, [Some(21), Some(22)]);
    for id in [21, 22] {
        conn.send_pubrel(id).await.unwrap();
        assert_eq!(
            conn.expect(PUBCOMP, secs(5)).await.unwrap().pkid(),
            Some(id)
        );
    }
    conn.expect_silence(ms(200)).await.unwrap();
    assert_eq!(*handled.lock().unwrap(), ["a", "b"]);
    client.stop().await;
}

/// Malformed frames from the broker (decode side of the bad-input list): a reserved
/// packet type 0, a remaining length over four bytes, a PUBLISH with both QoS bits
/// set [MQTT-3.3.1-4]. The client must close the connection [MQTT-4.8.0-1] without
/// panicking, reconnect, and go on working.
#[tokio::test]
async fn f7_malformed_frames_close_the_connection_and_the_client_recovers() {
    let mock = MockBroker::start().await.unwrap();
    let builder = client_at(mock.addr(), "f7-malformed").clean_session(false);
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let log = EventLog::watch(&client);
    let qos3 = Publish::new("bad", "x").qos(3, 1);
    let frames: [(&str, Vec<u8>); 3] = [
        ("reserved-type-0", MALFORMED_RESERVED_TYPE.to_vec()),
        (
            "remaining-length-5-bytes",
            MALFORMED_REMAINING_LENGTH.to_vec(),
        ),
        ("publish-qos-3", mqtt::Packet::from_publish(&qos3).encode()),
    ];
    let mut metrics = Metrics::default();
    let mut outcomes = Vec::new();
    for (name, frame) in frames {
        let sent = Instant::now();
        conn.send_raw(&frame).await.unwrap();
        let closed = conn.expect_closed(secs(5)).await.is_ok();
        conn = mock.accept_timeout(true, secs(5)).await.unwrap();
        let reason = log
            .wait_for(sent, is_disconnected, secs(1))
            .await
            .map(|_| log.reasons().last().cloned().unwrap_or_default());
        if let Some(down) = log.first_after(sent, is_disconnected) {
            metrics.detected(down - sent);
        }
        outcomes.push((name, closed, reason));
    }
    let publish = tokio::spawn({
        let client = client.clone();
        async move { client.publish("after", "ok").await }
    });
    let p = conn.expect(PUBLISH, secs(5)).await.unwrap();
    conn.ack(&p).await.unwrap();
    let after = publish.await.unwrap();
    metrics.note(format!("outcomes={outcomes:?} publish_after={after:?}"));
    metrics.print("F7-malformed");
    for (name, closed, reason) in &outcomes {
        assert!(closed, "{name}: the client closed the connection");
        assert!(reason.is_some(), "{name}: reported as a disconnect");
    }
    assert!(after.is_ok());
    client.stop().await;
}

/// Spawns one QoS 1 publish per topic, in order.
fn spawn_publishes(
    client: &Client,
    topics: impl IntoIterator<Item = String>,
) -> Vec<JoinHandle<Result<(), PublishError>>> {
    topics
        .into_iter()
        .map(|topic| {
            let client = client.clone();
            tokio::spawn(async move { client.publish(topic, "x").qos(QoS::AtLeastOnce).await })
        })
        .collect()
}

/// F8. Plan: a broker that withholds PUBACKs (as HiveMQ's NoPuback test), in-flight
/// window 10, 12 QoS 1 publishes: exactly 10 PUBLISH on the wire, publishes 11 and 12
/// wait (no error, nothing more on the wire for 2 s; scaled to 1 s); all 12 complete
/// once the acks come; out-of-order acks (3 and 4 before 1) neither hang nor confuse
/// the mapping. (`protocol.rs` has the same with a window of 2.)
#[tokio::test]
async fn f8_window_of_10_holds_back_and_out_of_order_acks_complete() {
    let mock = MockBroker::start().await.unwrap();
    let builder = client_at(mock.addr(), "f8")
        .max_inflight(10)
        .write_timeout(secs(30));
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let log = EventLog::watch(&client);
    let tasks = spawn_publishes(&client, (1..=12).map(|i| format!("f8/{i}")));
    let mut sent: Vec<(String, u16)> = Vec::new();
    for _ in 0..10 {
        let p = conn.expect(PUBLISH, secs(5)).await.unwrap();
        sent.push((p.topic().unwrap(), p.pkid().unwrap()));
    }
    let held = conn.expect_silence(secs(1)).await;
    let resolved_while_held = tasks.iter().filter(|t| t.is_finished()).count();
    let in_flight = client.info().publishes_in_flight;

    // Ack the 3rd and 4th first: two slots free, the last two go out.
    let id_of = |sent: &[(String, u16)], i: usize| sent[i].1;
    conn.send_puback(id_of(&sent, 2)).await.unwrap();
    conn.send_puback(id_of(&sent, 3)).await.unwrap();
    for _ in 0..2 {
        let p = conn.expect(PUBLISH, secs(5)).await.unwrap();
        sent.push((p.topic().unwrap(), p.pkid().unwrap()));
    }
    let third_and_fourth_done = eventually(secs(2), || {
        let topics = ["f8/3", "f8/4"];
        sent.iter()
            .enumerate()
            .filter(|(_, (t, _))| topics.contains(&t.as_str()))
            .all(|(_, (t, _))| {
                let i: usize = t[3..].parse().unwrap();
                tasks[i - 1].is_finished()
            })
    })
    .await;
    let first_still_waiting = !tasks[0].is_finished();
    // Then everything else, newest first.
    for i in (0..sent.len()).rev().filter(|i| *i != 2 && *i != 3) {
        conn.send_puback(sent[i].1).await.unwrap();
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(tokio::time::timeout(secs(5), task).await);
    }
    let hung = results.iter().filter(|r| r.is_err()).count();
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| match r {
            Ok(Ok(Err(e))) => Some(e.to_string()),
            _ => None,
        })
        .collect();
    let mut topics: Vec<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    let mut metrics = Metrics {
        hung,
        lost: 12 - topics.len(),
        duplicated: sent.len() - topics.len(),
        ..Metrics::default()
    };
    metrics.note(format!(
        "on_wire_while_withheld=10 extra_within_1s={} resolved_while_withheld={resolved_while_held} publishes_in_flight={in_flight} acks=3,4,then-rest-newest-first failed={failed:?} disconnects={}",
        usize::from(held.is_err()),
        log.count(is_disconnected)
    ));
    metrics.print("F8");
    assert!(held.is_ok(), "only 10 in flight: {held:?}");
    assert_eq!(resolved_while_held, 0);
    assert_eq!(in_flight, 10, "10 in flight; 11 and 12 wait for a slot");
    assert!(third_and_fourth_done);
    assert!(first_still_waiting);
    assert_eq!((hung, failed.len()), (0, 0));
    assert_eq!(topics.len(), 12);
    assert_eq!(log.count(is_disconnected), 0);
    client.stop().await;
}

/// The broker withholds the PUBACK of the first publish for 3 s (over two keep-alive
/// periods of 1 s) while acknowledging all others at once; 30 QoS 1 publishes, window
/// 10. Packet ids cycle through 2 × the window (20 here), so about the 20th publish
/// after the withheld one gets its id: rumqttc's `MqttState` parks it (`AwaitAck`) and
/// takes no new publish until that id is acknowledged. rumqttc's event loop would
/// also drop the connection after two pings (`CollisionTimeout`, rumqttc #1014,
/// #1056); courier's engine keeps the keep-alive itself and does not.
/// Returns (metrics, errors, hung, disconnect reasons).
async fn withheld_ack_with_id_reuse() -> (Metrics, Vec<(u64, PublishError)>, usize, Vec<String>) {
    let mock = MockBroker::start().await.unwrap();
    let builder = client_at(mock.addr(), "f8-collision")
        .max_inflight(10)
        .keep_alive(secs(1))
        .clean_session(false)
        .write_timeout(secs(30));
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let log = EventLog::watch(&client);
    let stream = Publisher::spawn(
        &client,
        Stream {
            window: 10,
            ..Stream::new("c", "f8/collision", 30, QoS::AtLeastOnce)
        },
    );
    let first = conn.expect(PUBLISH, secs(5)).await.unwrap();
    let withheld = first.pkid().unwrap();
    let mut on_wire = 1;
    let until = Instant::now() + secs(3);
    let mut reconnects = 0;
    while Instant::now() < until {
        match tokio::time::timeout_at(until, conn.recv()).await {
            Err(_) => break,
            Ok(Ok(p)) if p.kind() == PUBLISH => {
                on_wire += 1;
                if p.pkid() != Some(withheld) {
                    conn.ack(&p).await.unwrap();
                }
            }
            Ok(Ok(_)) => {}
            Ok(Err(_)) => {
                // The client dropped the connection: take it back.
                conn = mock.accept_timeout(true, secs(5)).await.unwrap();
                reconnects += 1;
            }
        }
    }
    let resolved_while_withheld = stream.resolved();
    conn.send_puback(withheld).await.unwrap();
    // From now on acknowledge everything, across reconnects.
    let responder = tokio::spawn(async move {
        loop {
            match conn.recv().await {
                Ok(p) => conn.ack(&p).await?,
                Err(_) => conn = mock.accept_timeout(true, secs(10)).await?,
            }
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    let (errors, hung) = stream.finish(secs(10)).await;
    responder.abort();
    let mut metrics = Metrics {
        hung,
        ..Metrics::default()
    };
    let reasons = log.reasons();
    metrics.note(format!(
        "withheld_id={withheld} publishes_on_wire_while_withheld={on_wire} resolved_while_withheld={resolved_while_withheld} errors={} reconnects={reconnects} disconnect_reasons={reasons:?}",
        errors.len(),
    ));
    client.stop().await;
    (metrics, errors, hung, reasons)
}

/// F8, packet id reuse while one acknowledgement is withheld: nothing hangs or fails,
/// every publish completes once the id is acknowledged.
#[tokio::test]
async fn f8_a_withheld_ack_with_packet_id_reuse_does_not_hang() {
    let (metrics, errors, hung, _) = withheld_ack_with_id_reuse().await;
    metrics.print("F8-collision");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(hung, 0);
}

/// F8 plan: out-of-order acknowledgements cause no `CollisionTimeout` (#1014, #1056):
/// the connection stays up through three keep-alive periods with the ack withheld.
#[tokio::test]
async fn f8_a_withheld_ack_with_packet_id_reuse_keeps_the_connection() {
    let (metrics, errors, hung, reasons) = withheld_ack_with_id_reuse().await;
    metrics.print("F8-collision-connection");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(hung, 0);
    assert!(reasons.is_empty(), "{reasons:?}");
}

// ---------------------------------------------------------------------------------
// F9–F13

/// F9. Plan: broker down for 120 s (stopped, or proxy `refuse`), a connected client:
/// attempts follow exponential backoff with jitter and a cap, at most
/// ⌈log2(cap/initial)⌉ + down/cap + 2 attempts, reconnect ≤ 1 s + the current backoff
/// step after the broker returns. Scaled: the proxy accepts and resets every
/// connection for 4 s, backoff 100 ms doubling to 800 ms with the default ±25 %
/// jitter. (`reconnect.rs` checks the exact delays with the broker stopped and no
/// jitter.) Runs on either broker.
#[tokio::test]
async fn f9_refused_reconnects_back_off_and_recover_promptly() {
    const DOWN_MS: u64 = 4000;
    let broker = broker().await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let (initial, cap) = (ms(100), ms(800));
    let client = client_at(proxy.addr(), "f9")
        .reconnect_backoff(Backoff::exponential(initial, cap))
        .connect()
        .await
        .unwrap();
    let log = EventLog::watch(&client);
    let fault = Instant::now();
    proxy.refuse(true);
    proxy.close_rst();
    tokio::time::sleep(ms(DOWN_MS)).await;
    let attempts = log.count(|e| matches!(e, Event::ConnectFailed { .. }));
    let refused = proxy.refused();
    let (delays, errors): (Vec<u128>, Vec<String>) = {
        let events = log.0.lock().unwrap();
        (
            events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::Reconnecting { delay, .. } => Some(delay.as_millis()),
                    _ => None,
                })
                .collect(),
            events
                .iter()
                .filter_map(|(_, e)| match e {
                    Event::ConnectFailed { error, .. } => Some(format!("{error:?}")),
                    _ => None,
                })
                .collect(),
        )
    };
    let healed = Instant::now();
    proxy.refuse(false);
    let up = log
        .wait_for(healed, is_connected, secs(5))
        .await
        .expect("reconnected");
    let mut metrics = Metrics::default();
    if let Some(down) = log.first_after(fault, is_disconnected) {
        metrics.detected(down - fault);
    }
    metrics.recovered(up - healed);
    // ⌈log2(cap / initial)⌉ + down / cap + 2
    let bound = 3 + (DOWN_MS / 800) as usize + 2;
    let last_delay = delays.last().copied().unwrap_or(0);
    metrics.note(format!(
        "down_ms={DOWN_MS} attempts={attempts} bound={bound} refused_at_proxy={refused} delays_ms={delays:?} first_error={:?}",
        errors.first()
    ));
    metrics.print("F9");
    assert!(attempts >= 3, "it kept trying");
    assert!(attempts <= bound, "{attempts} attempts, bound {bound}");
    assert!(delays.iter().all(|d| *d <= 1000), "capped at 800 ms + 25 %");
    assert!(
        up - healed <= Duration::from_millis(last_delay as u64) + secs(1),
        "reconnected {:?} after the broker came back",
        up - healed
    );
    client.stop().await;
}

/// F10. Plan: a handler that blocks 1 s per message, 200 QoS 1 messages, keep-alive
/// 5 s: no keep-alive disconnect, no deadlock; publishing from inside a handler does
/// not freeze the loop (rumqttc #1025, #263). Scaled: 5 messages, keep-alive 2 s (the
/// broker drops a client silent for 1.5 × keep-alive), each handler awaits a QoS 1
/// publish of its own. Runs on either broker. The handler here awaits a 1 s sleep; a
/// handler that blocks its thread is the next test.
#[tokio::test]
async fn f10_a_slow_handler_publishing_from_inside_keeps_the_connection() {
    slow_handler_scenario("F10", false).await;
}

/// F10 with `std::thread::sleep` in the handler (it really blocks a worker thread), on
/// a two-worker runtime: the driver must still be polled on the other worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn f10_a_thread_blocking_handler_keeps_the_connection() {
    slow_handler_scenario("F10-blocking", true).await;
}

async fn slow_handler_scenario(scenario: &str, block_thread: bool) {
    const N: u64 = 5;
    let broker = broker().await;
    if !needs(&broker, scenario, &[Capability::NoResendWhileConnected]) {
        return;
    }
    let c = client(&broker, &format!("{scenario}-c"))
        .keep_alive(secs(2))
        .connect()
        .await
        .unwrap();
    let log = EventLog::watch(&c);
    let replies = Arrivals::default();
    let watcher = client(&broker, &format!("{scenario}-watch"))
        .connect()
        .await
        .unwrap();
    let reply_sub = watcher
        .subscribe("f10/reply")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let collector = spawn_collector(reply_sub, replies.clone());
    let handled = Arc::new(Mutex::new(Vec::<(u64, Duration)>::new()));
    let record = handled.clone();
    c.subscribe("f10/in")
        .qos(QoS::AtLeastOnce)
        .handler(move |client: Client, m: Message| {
            let record = record.clone();
            async move {
                let started = Instant::now();
                let seq: u64 = m
                    .payload_str()
                    .unwrap_or_default()
                    .split(':')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(u64::MAX);
                if block_thread {
                    std::thread::sleep(secs(1));
                } else {
                    tokio::time::sleep(secs(1)).await;
                }
                let reply = client
                    .publish("f10/reply", payload("r", seq, 0))
                    .qos(QoS::AtLeastOnce)
                    .await;
                record.lock().unwrap().push((seq, started.elapsed()));
                reply.map_err(|e| e.to_string())
            }
        })
        .await
        .unwrap();
    let started = Instant::now();
    for seq in 0..N {
        watcher
            .publish("f10/in", payload("in", seq, 0))
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let complete = replies.settle(&[("r", N)], secs(N + 10), ms(200)).await;
    let took = started.elapsed();
    let order: Vec<u64> = handled.lock().unwrap().iter().map(|(s, _)| *s).collect();
    let mut metrics = Metrics::default();
    replies.tally("r").add_to(&mut metrics, N);
    metrics.note(format!(
        "messages={N} handler=1s({}) keep_alive_s=2 took_ms={} handled_in_order={order:?} disconnects={} handler_failures={}",
        if block_thread { "thread::sleep" } else { "async sleep" },
        took.as_millis(),
        log.count(is_disconnected),
        log.count(|e| matches!(e, Event::HandlerFailed { .. })),
    ));
    metrics.print(scenario);
    assert!(complete, "every handler published its reply");
    assert_eq!(order, (0..N).collect::<Vec<_>>());
    assert_eq!(log.count(is_disconnected), 0, "{:?}", log.reasons());
    assert_eq!(log.count(|e| matches!(e, Event::HandlerFailed { .. })), 0);
    collector.abort();
    c.stop().await;
    watcher.stop().await;
}

/// F11. Plan: an oversized publish (over the configured maximum, and over the broker's
/// `message_size_limit`): refused locally with `PacketTooLarge`, no reconnect, later
/// publishes fine. The local refusal is `validation.rs`. Here: a publish over
/// Mosquitto's `message_size_limit` (1,000 bytes) but under the client's maximum
/// (16 MiB), at each QoS. Observed with Mosquitto 2.0.11 and MQTT 3.1.1: the broker
/// acknowledges QoS 1 and 2 normally (PUBACK, PUBREC/PUBCOMP; MQTT 3.1.1 has no way to
/// refuse) and drops the message; QoS 0 is dropped; the connection stays up. So the
/// publish resolves Ok and the message is silently lost: no client can detect it;
/// keep `max_packet_size` at or below the broker's limit to have it refused locally.
#[tokio::test]
async fn f11_a_publish_over_the_brokers_size_limit_is_acked_and_dropped() {
    if !selected_broker_has(
        "f11_a_publish_over_the_brokers_size_limit_is_acked_and_dropped",
        &[Capability::MessageSizeLimit],
    ) {
        return;
    }
    let broker = broker_with(BrokerOptions::new().message_size_limit(1000)).await;
    let c = client(&broker, "f11").connect().await.unwrap();
    let log = EventLog::watch(&c);
    let arrivals = Arrivals::default();
    let watcher = client(&broker, "f11-watch").connect().await.unwrap();
    let sub = watcher
        .subscribe("f11/#")
        .qos(QoS::ExactlyOnce)
        .await
        .unwrap();
    let collector = spawn_collector(sub, arrivals.clone());
    let mut results = Vec::new();
    for (i, qos) in [QoS::AtMostOnce, QoS::AtLeastOnce, QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        let r = c
            .publish("f11/big", payload("big", i as u64, 2000))
            .qos(qos)
            .timeout(secs(5))
            .await;
        results.push(format!("{qos:?}:{r:?}"));
    }
    let big_results_ok = results.iter().all(|r| r.ends_with("Ok(())"));
    for i in 0..3u64 {
        c.publish("f11/small", payload("small", i, 10))
            .qos(QoS::AtLeastOnce)
            .await
            .unwrap();
    }
    let small = arrivals.settle(&[("small", 3)], secs(5), ms(300)).await;
    let big = arrivals.tally("big");
    let mut metrics = Metrics {
        lost: big.lost(3),
        ..Metrics::default()
    };
    metrics.note(format!(
        "message_size_limit=1000 payload=2000+ results=[{}] big_delivered={} later_small_delivered={small} disconnects={}",
        results.join(", "),
        big.unique(),
        log.count(is_disconnected)
    ));
    metrics.print("F11");
    assert!(
        big_results_ok,
        "observed: the broker acknowledges: {results:?}"
    );
    assert_eq!(big.unique(), 0, "observed: the broker drops it");
    assert!(small, "later publishes go through");
    assert_eq!(log.count(is_disconnected), 0);
    collector.abort();
    c.stop().await;
    watcher.stop().await;
}

/// F12. Plan: proxy delay 200 ms + throttle 64 KiB/s for 5 min, mixed QoS with 1 KiB
/// payloads, keep-alive 5 s: no keep-alive timeout, lost = 0 for QoS 1 and 2. Scaled:
/// 12 s (over two keep-alive periods), publisher and subscriber both behind the proxy,
/// 3 × 12 messages per second (about 37 KiB/s, under the link's rate). Runs on either
/// broker.
#[tokio::test]
async fn f12_a_slow_narrow_link_keeps_the_connection_and_loses_nothing() {
    const SECONDS: u64 = 12;
    const PER_SECOND: u64 = 12;
    let broker = broker_with(BrokerOptions::new().max_queued_messages(100_000)).await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    proxy.delay(ms(200));
    proxy.throttle(64 * 1024);
    let via_proxy = |name: &str| {
        client_at(proxy.addr(), name)
            .keep_alive(secs(5))
            .clean_session(false)
            .write_timeout(secs(30))
    };
    let arrivals = Arrivals::default();
    let sub_client = via_proxy("f12-sub").connect().await.unwrap();
    let sub = sub_client
        .subscribe("f12/#")
        .qos(QoS::ExactlyOnce)
        .await
        .unwrap();
    let collector = spawn_collector(sub, arrivals.clone());
    let publisher = via_proxy("f12-pub").connect().await.unwrap();
    let logs = [EventLog::watch(&sub_client), EventLog::watch(&publisher)];
    let n = SECONDS * PER_SECOND;
    // A broker without QoS 2 closes the connection of a QoS 2 publisher (NATS).
    let qos2 = broker.supports(Capability::Qos2);
    let levels: &[(&str, QoS)] = if qos2 {
        &[
            ("q0", QoS::AtMostOnce),
            ("q1", QoS::AtLeastOnce),
            ("q2", QoS::ExactlyOnce),
        ]
    } else {
        &[("q0", QoS::AtMostOnce), ("q1", QoS::AtLeastOnce)]
    };
    let streams: Vec<Publisher> = levels
        .iter()
        .map(|&(name, qos)| {
            Publisher::spawn(
                &publisher,
                Stream {
                    pace: Some(Duration::from_micros(1_000_000 / PER_SECOND)),
                    padding: 1024,
                    window: 50,
                    ..Stream::new(name, format!("f12/{name}"), n, qos)
                },
            )
        })
        .collect();
    let started = Instant::now();
    let mut errors = Vec::new();
    let mut hung = 0;
    for stream in streams {
        let (e, h) = stream.finish(secs(SECONDS + 30)).await;
        errors.extend(e);
        hung += h;
    }
    let published_in = started.elapsed();
    let acknowledged: Vec<(&str, u64)> = levels[1..].iter().map(|&(name, _)| (name, n)).collect();
    let complete = arrivals.settle(&acknowledged, secs(20), secs(1)).await;
    let mut metrics = Metrics {
        hung,
        ..Metrics::default()
    };
    let (t0, t1, t2) = (
        arrivals.tally("q0"),
        arrivals.tally("q1"),
        qos2.then(|| arrivals.tally("q2")),
    );
    t1.add_to(&mut metrics, n);
    if let Some(t2) = &t2 {
        t2.add_to(&mut metrics, n);
    }
    let disconnects: usize = logs.iter().map(|l| l.count(is_disconnected)).sum();
    metrics.note(format!(
        "delay_ms=200 throttle=64KiB/s keep_alive_s=5 messages_per_qos={n} payload=1KiB published_in_ms={} qos0_lost={} disconnects={disconnects} link_bytes(c2b,b2c)=({},{})",
        published_in.as_millis(),
        t0.lost(n),
        proxy.bytes(Direction::ClientToBroker),
        proxy.bytes(Direction::BrokerToClient),
    ));
    metrics.print("F12");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(hung, 0);
    assert_eq!(disconnects, 0, "{:?}", logs[1].reasons());
    assert!(complete);
    assert_eq!(t1.lost(n), 0);
    if let Some(t2) = t2 {
        assert_eq!((t2.lost(n), t2.duplicated()), (0, 0));
    }
    collector.abort();
    publisher.stop().await;
    sub_client.stop().await;
}

/// Collects the `ConnectFailed` errors of `log` as text, and the delays announced.
fn failures(log: &EventLog) -> (Vec<String>, Vec<Duration>) {
    let events = log.0.lock().unwrap();
    let errors = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::ConnectFailed { error, .. } => Some(format!("{error}")),
            _ => None,
        })
        .collect();
    let delays = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Reconnecting { delay, .. } => Some(*delay),
            _ => None,
        })
        .collect();
    (errors, delays)
}

/// F13. Plan: TLS and credential failures (wrong password: CONNACK 4/5), connection
/// refused, DNS failure: a typed error reaches the caller or observer, backoff applies
/// (no busy loop), credentials can be refreshed between attempts. `connect.rs` covers
/// the first `connect()` of each kind and `tls.rs` bad certificates. Here the client
/// keeps trying in the background (`start()`), with a credential provider asked before
/// every attempt, for 2 s: refused TCP and an unresolvable host, then a broker
/// appears on the refused port; and (Mosquitto only) a wrong password, right after
/// three attempts. Start backoff 100 ms doubling to 800 ms, no jitter: at most 5
/// attempts in 2 s.
#[tokio::test]
async fn f13_connect_failures_are_typed_backed_off_and_refresh_credentials() {
    let backoff = Backoff::exponential(ms(100), ms(800)).jitter(0.0);
    let provider_calls = || {
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let provider = move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, std::io::Error>(Credentials::new("u", format!("token-{n}"))) }
        };
        (calls, provider)
    };
    let mut metrics = Metrics::default();

    // Refused TCP, then a broker appears on that port.
    let port = courier_testkit::free_port().unwrap();
    let (tcp_calls, provider) = provider_calls();
    let tcp = Client::builder()
        .address("127.0.0.1", port)
        .client_id("f13-tcp")
        .credential_provider(provider)
        .start_backoff(backoff.clone())
        .start()
        .unwrap();
    let tcp_log = EventLog::watch(&tcp);
    // An unresolvable host.
    let (dns_calls, provider) = provider_calls();
    let dns = Client::builder()
        .address("no-such-host.invalid", 1883)
        .client_id("f13-dns")
        .credential_provider(provider)
        .start_backoff(backoff.clone())
        .start()
        .unwrap();
    let dns_log = EventLog::watch(&dns);
    tokio::time::sleep(secs(2)).await;
    let (tcp_errors, tcp_delays) = failures(&tcp_log);
    let (dns_errors, dns_delays) = failures(&dns_log);
    let appeared = Instant::now();
    let mock = MockBroker::start_on(SocketAddr::from(([127, 0, 0, 1], port)))
        .await
        .unwrap();
    let conn = mock.accept_timeout(false, secs(3)).await;
    let tcp_up = tcp_log.wait_for(appeared, is_connected, secs(3)).await;
    if let Some(up) = tcp_up {
        metrics.recovered(up - appeared);
    }
    let login = conn.as_ref().ok().and_then(|c| c.connect_packet().cloned());
    let tcp_attempts = tcp_calls.load(Ordering::SeqCst);
    let typed = |errors: &[String], want: &str| errors.iter().all(|e| e.contains(want));
    metrics.note(format!(
        "refused: attempts_in_2s={} errors={:?} delays={tcp_delays:?} provider_calls={tcp_attempts} connected_after_ms={:?} password_sent={:?};",
        tcp_errors.len(),
        tcp_errors.first(),
        tcp_up.map(|t| (t - appeared).as_millis()),
        login.as_ref().and_then(|c| c.password.clone()).map(String::from_utf8)
    ));
    metrics.note(format!(
        "dns: attempts_in_2s={} errors={:?} delays={dns_delays:?} provider_calls={};",
        dns_errors.len(),
        dns_errors.first(),
        dns_calls.load(Ordering::SeqCst)
    ));

    // Wrong password three times, then the right one.
    let mut password_case = None;
    if selected_broker_has("f13 (wrong password)", &[Capability::Credentials]) {
        let broker = broker_with(BrokerOptions::new().credentials("svc", "right")).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let started = Instant::now();
        let c = client(&broker, "f13-password")
            .credential_provider(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    Ok::<_, std::io::Error>(Credentials::new(
                        "svc",
                        if n < 3 { "wrong" } else { "right" },
                    ))
                }
            })
            .start_backoff(backoff.clone())
            .start()
            .unwrap();
        let log = EventLog::watch(&c);
        let connected = tokio::time::timeout(secs(10), c.wait_connected()).await;
        let took = started.elapsed();
        let refused: Vec<Option<RefusedReason>> = log
            .0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::ConnectFailed { error, .. } => Some(error.refused_reason()),
                _ => None,
            })
            .collect();
        metrics.note(format!(
            "wrong-password: refusals={refused:?} provider_calls={} connected_after_ms={}",
            calls.load(Ordering::SeqCst),
            took.as_millis()
        ));
        password_case = Some((
            connected.is_ok(),
            refused,
            calls.load(Ordering::SeqCst),
            took,
        ));
        c.stop().await;
    }
    metrics.print("F13");

    // 100 + 200 + 400 + 800 ms: attempts at 0, 0.1, 0.3, 0.7, 1.5 s.
    assert!((3..=5).contains(&tcp_errors.len()), "{tcp_errors:?}");
    assert!(
        typed(
            &tcp_errors,
            &format!("TCP connection to 127.0.0.1:{port} failed")
        ),
        "{tcp_errors:?}"
    );
    assert!((3..=5).contains(&dns_errors.len()), "{dns_errors:?}");
    assert!(typed(&dns_errors, "cannot resolve"), "{dns_errors:?}");
    assert_eq!(
        tcp_delays.iter().take(4).copied().collect::<Vec<_>>(),
        [ms(100), ms(200), ms(400), ms(800)]
    );
    assert!(tcp_up.is_some(), "connected once a broker listened");
    assert_eq!(tcp_attempts, tcp_errors.len() + 1, "one fetch per attempt");
    assert_eq!(
        login.and_then(|c| c.password),
        Some(format!("token-{}", tcp_errors.len()).into_bytes()),
        "the last attempt used freshly fetched credentials"
    );
    if let Some((connected, refused, calls, took)) = password_case {
        assert!(connected);
        assert_eq!(refused.len(), 3);
        assert!(refused.iter().all(|r| matches!(
            r,
            Some(RefusedReason::BadUserNamePassword | RefusedReason::NotAuthorized)
        )));
        assert_eq!(calls, 4);
        assert!(took >= ms(700), "backed off: {took:?}");
    }
    drop(conn);
    tcp.stop().await;
    dns.stop().await;
}

/// The connection breaks while the client is writing (the broker resets it under a
/// steady QoS 1 stream), and the broker comes back without the session. Repeated 20
/// times: the write fails in about half of them, the read in the others. Pass: every
/// publish is acknowledged and every message reached the broker. Observed: after a
/// write failure (`Broken pipe`, `Connection reset` on flush) a publish is never sent
/// again and another publish times out: rumqttc had already queued the
/// `Outgoing::Publish(id)` event of the packet whose write failed in
/// `MqttState::events`; `EventLoop::clean()` keeps that buffer, so the client reads
/// the stale event after the next CONNACK, after it re-published the in-flight
/// messages as new ones (session lost), and maps it to the wrong request: one message
/// is dropped silently (its packet sits in the replay as a retransmission, which a lost
/// session discards, and no slot holds it) and the FIFO is off by one from then on.
/// This is the intermittent F3 failure (`Timeout` for one publish, one message missing).
#[tokio::test]
async fn f3_a_failed_write_at_disconnect_keeps_publish_tracking() {
    const N: u64 = 3000;
    let mock = MockBroker::start().await.unwrap();
    let builder = client_at(mock.addr(), "f3-write")
        .clean_session(false)
        .max_inflight(20)
        .reconnect_backoff(Backoff::exponential(ms(10), ms(20)))
        .write_timeout(secs(5));
    let (client, mut conn) = connect_mock(&mock, builder, false).await;
    let log = EventLog::watch(&client);
    let stream = Publisher::spawn(&client, Stream::new("w", "f3/write", N, QoS::AtLeastOnce));
    let mut seen = std::collections::HashSet::new();
    let mut rounds = 0;
    loop {
        let mut n = 0;
        let reset_after = if rounds < 20 { 40 } else { u64::MAX };
        while n < reset_after && !(rounds >= 20 && stream.done()) {
            match conn.recv_timeout(secs(6)).await {
                Ok(Some(p)) if p.kind() == PUBLISH => {
                    let text =
                        String::from_utf8_lossy(&p.payload().unwrap_or_default()).into_owned();
                    if let Some(seq) = text.split(':').nth(1).and_then(|s| s.parse::<u64>().ok()) {
                        seen.insert(seq);
                    }
                    conn.ack(&p).await.unwrap();
                    n += 1;
                }
                Ok(Some(_)) => {}
                _ => break,
            }
        }
        if rounds >= 20 || stream.done() {
            break;
        }
        conn.reset();
        conn = mock.accept_timeout(false, secs(5)).await.unwrap();
        rounds += 1;
    }
    let (errors, hung) = stream.finish(secs(10)).await;
    let missing: Vec<u64> = (0..N).filter(|s| !seen.contains(s)).collect();
    let reasons = log.reasons();
    let write_failures = reasons
        .iter()
        .filter(|r| r.contains("Broken pipe") || r.contains("reset"))
        .count();
    let metrics = Metrics {
        lost: missing.len(),
        hung,
        notes: vec![format!(
            "resets={rounds} write_or_reset_errors={write_failures} missing={missing:?} publish_errors={} {}",
            errors.len(),
            describe(&errors)
        )],
        ..Metrics::default()
    };
    metrics.print("F3-write");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert!(missing.is_empty(), "never sent: {missing:?}");
    client.stop().await;
}

// ---------------------------------------------------------------------------------
// F14: soak

/// F14. Plan: 30 min with one random fault (F1, F4, F5, F9 kinds) every 5–30 s, QoS 1
/// and QoS 2 streams: QoS 1 lost = 0, QoS 2 lost = dup = 0. Not run in CI:
/// `cargo test --test faults -- --ignored f14 --nocapture`, length in seconds from
/// `COURIER_SOAK_SECS` (default 1800). Publishers and the subscriber go through the
/// proxy; faults: SIGTERM restart (persistence on), a half-open link for 2 × KA + 1 s,
/// a reset after 1–64 KiB, refused connections for 1–5 s. (The plan's shared
/// subscription group and RSS checks are not covered.)
#[tokio::test]
#[ignore = "soak (F14): run with --ignored; COURIER_SOAK_SECS sets its length (default 1800)"]
async fn f14_soak_with_random_faults() {
    const KA: u64 = 2;
    const RATE: u64 = 20;
    if !selected_broker_has(
        "f14_soak_with_random_faults",
        &[
            Capability::Restart,
            Capability::SessionsAcrossRestart,
            Capability::Qos2,
        ],
    ) {
        return;
    }
    let total: u64 = std::env::var("COURIER_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1800);
    let mut rng = Rng::new("F14");
    let mut broker = broker_with(
        BrokerOptions::new()
            .persistence(true)
            .max_queued_messages(1_000_000),
    )
    .await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let via_proxy = |name: &str| {
        client_at(proxy.addr(), name)
            .clean_session(false)
            .keep_alive(secs(KA))
            .write_timeout(secs(120))
    };
    let StreamRig {
        arrivals,
        sub_client,
        collector,
        p1,
        p2,
        logs,
    } = StreamRig::start(via_proxy, "f14").await;
    let n = total * RATE;
    let stream = |name, qos| Stream {
        pace: Some(Duration::from_micros(1_000_000 / RATE)),
        padding: 128,
        ..Stream::new(name, format!("f14/{name}"), n, qos)
    };
    let q1 = Publisher::spawn(&p1, stream("q1", QoS::AtLeastOnce));
    let q2 = Publisher::spawn(&p2, stream("q2", QoS::ExactlyOnce));
    let mut faults: HashMap<&str, usize> = HashMap::new();
    while !(q1.done() && q2.done()) {
        let pause = rng.range(5, 30).min(total / 4 + 1);
        if eventually(secs(pause), || q1.done() && q2.done()).await {
            break;
        }
        let kind = match rng.range(0, 3) {
            0 => {
                broker.stop().await.unwrap();
                broker.start_again().await.unwrap();
                "sigterm-restart"
            }
            1 => {
                proxy.blackhole();
                tokio::time::sleep(secs(2 * KA + 1)).await;
                proxy.pass();
                "half-open"
            }
            2 => {
                let before = proxy.cuts();
                proxy.cut_after_bytes_with(
                    rng.range(1024, 64 * 1024),
                    if rng.range(0, 1) == 0 {
                        Close::Rst
                    } else {
                        Close::Fin
                    },
                );
                eventually(secs(10), || proxy.cuts() > before).await;
                proxy.pass();
                "reset-after-bytes"
            }
            _ => {
                proxy.refuse(true);
                proxy.close_rst();
                tokio::time::sleep(secs(rng.range(1, 5))).await;
                proxy.refuse(false);
                "refused"
            }
        };
        *faults.entry(kind).or_default() += 1;
    }
    let (mut errors, hung1) = q1.finish(secs(120)).await;
    let (errors2, hung2) = q2.finish(secs(120)).await;
    errors.extend(errors2);
    let complete = arrivals
        .settle(&[("q1", n), ("q2", n)], secs(60), secs(10))
        .await;
    let mut metrics = Metrics {
        hung: hung1 + hung2,
        ..Metrics::default()
    };
    let (t1, t2) = (arrivals.tally("q1"), arrivals.tally("q2"));
    t1.add_to(&mut metrics, n);
    t2.add_to(&mut metrics, n);
    for log in &logs {
        for outage in log.outages() {
            metrics.recovered(outage);
        }
    }
    metrics.note(format!(
        "seconds={total} messages_per_stream={n} faults={faults:?} seed={} qos1(lost={},dup={}) qos2(lost={},dup={},reordered={}) reconnects={} publish_errors={}",
        rng.seed,
        t1.lost(n),
        t1.duplicated(),
        t2.lost(n),
        t2.duplicated(),
        t2.reordered,
        logs.iter().map(|l| l.count(is_connected)).sum::<usize>(),
        errors.len()
    ));
    metrics.print("F14");
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(metrics.hung, 0);
    assert!(complete);
    assert_eq!(t1.lost(n), 0);
    assert_eq!((t2.lost(n), t2.duplicated()), (0, 0));
    collector.abort();
    for c in [p1, p2, sub_client] {
        c.stop().await;
    }
}
