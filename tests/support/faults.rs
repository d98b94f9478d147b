#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "test fixtures: a failure fails the test"
)]
#![allow(
    missing_docs,
    reason = "the fault scenarios' fixtures, moved from faults.rs: documented where a name does not explain them"
)]
//! The fault scenarios' machinery, shared by `faults.rs` (over TCP) and
//! `transport.rs` (over WebSocket): numbered message streams, their arrivals and
//! metrics, client event logs, and the scenarios F1–F3 (broker restarts) and F4 (a
//! half-open link) with the link they run over as a parameter.

use std::collections::{HashMap, HashSet};
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use courier::{Backoff, Client, ClientBuilder, Event, Message, PublishError, QoS, Subscription};
use courier_testkit::mqtt::{PUBLISH, PUBREL};
use courier_testkit::{Direction, FaultProxy, WsFront};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::{
    BrokerOptions, Capability, TestBroker, broker, broker_with, client, client_id, eventually,
    quick_reconnects, selected_broker_has,
};

/// How a scenario's clients reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// MQTT over TCP.
    Tcp,
    /// MQTT over WebSocket, through a [`WsFront`] before the broker (or its proxy).
    WebSocket,
}

impl Link {
    /// The metrics label of `scenario` over this link: `F4`, `F4-ws`.
    pub fn label(self, scenario: &str) -> String {
        match self {
            Link::Tcp => scenario.to_owned(),
            Link::WebSocket => format!("{scenario}-ws"),
        }
    }
}

pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---------------------------------------------------------------------------------
// Measurement

/// A small deterministic generator (xorshift64*), seeded per scenario.
#[derive(Debug)]
pub struct Rng {
    pub state: u64,
    pub seed: u64,
}

impl Rng {
    pub fn new(scenario: &str) -> Rng {
        let seed = std::env::var("COURIER_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let nanos = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as u64);
                nanos ^ u64::from(std::process::id())
            });
        let mut state = seed ^ 0x9e37_79b9_7f4a_7c15;
        for b in scenario.bytes() {
            state = state.rotate_left(5) ^ u64::from(b);
        }
        Rng {
            state: state.max(1),
            seed,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// The metrics line of one scenario.
#[derive(Debug, Default)]
pub struct Metrics {
    pub lost: usize,
    pub duplicated: usize,
    pub reordered: usize,
    pub hung: usize,
    pub detect_ms: Option<u128>,
    pub recover_ms: Option<u128>,
    pub notes: Vec<String>,
}

impl Metrics {
    pub fn note(&mut self, note: impl Into<String>) {
        self.notes.push(note.into());
    }

    pub fn detected(&mut self, d: Duration) {
        self.detect_ms = Some(self.detect_ms.unwrap_or(0).max(d.as_millis()));
    }

    pub fn recovered(&mut self, d: Duration) {
        self.recover_ms = Some(self.recover_ms.unwrap_or(0).max(d.as_millis()));
    }

    pub fn print(&self, scenario: &str) {
        let opt = |v: Option<u128>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
        println!(
            "[{scenario}] lost={} duplicated={} reordered={} hung={} detect_ms={} recover_ms={} | {}",
            self.lost,
            self.duplicated,
            self.reordered,
            self.hung,
            opt(self.detect_ms),
            opt(self.recover_ms),
            self.notes.join(" ")
        );
    }
}

/// Arrivals of one stream of numbered messages.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: HashMap<u64, usize>,
    pub max_seen: Option<u64>,
    pub reordered: usize,
    pub total: usize,
}

impl Tally {
    pub fn record(&mut self, seq: u64) {
        self.total += 1;
        let count = self.counts.entry(seq).or_default();
        *count += 1;
        if *count == 1 {
            if self.max_seen.is_some_and(|max| seq < max) {
                self.reordered += 1;
            }
            self.max_seen = Some(self.max_seen.map_or(seq, |max| max.max(seq)));
        }
    }

    pub fn unique(&self) -> usize {
        self.counts.len()
    }

    pub fn lost(&self, expected: u64) -> usize {
        (0..expected)
            .filter(|s| !self.counts.contains_key(s))
            .count()
    }

    pub fn duplicated(&self) -> usize {
        self.total - self.unique()
    }

    pub fn add_to(&self, metrics: &mut Metrics, expected: u64) {
        metrics.lost += self.lost(expected);
        metrics.duplicated += self.duplicated();
        metrics.reordered += self.reordered;
    }
}

/// `stream:seq:padding`.
pub fn payload(stream: &str, seq: u64, padding: usize) -> String {
    format!("{stream}:{seq}:{}", "x".repeat(padding))
}

#[derive(Debug, Default)]
pub struct ArrivalsInner {
    pub streams: HashMap<String, Tally>,
    /// Probe topics and when they arrived.
    pub probes: HashMap<String, Instant>,
}

/// Everything a subscriber received, by stream.
#[derive(Debug, Clone, Default)]
pub struct Arrivals(Arc<Mutex<ArrivalsInner>>);

impl Arrivals {
    pub fn record(&self, msg: &Message) {
        let mut inner = self.0.lock().unwrap();
        if msg.topic().contains("/probe/") {
            inner
                .probes
                .entry(msg.topic().to_owned())
                .or_insert_with(Instant::now);
            return;
        }
        let text = msg.payload_str().unwrap_or_default();
        let mut fields = text.split(':');
        if let (Some(stream), Some(Ok(seq))) = (fields.next(), fields.next().map(str::parse)) {
            inner
                .streams
                .entry(stream.to_owned())
                .or_default()
                .record(seq);
        }
    }

    pub fn tally(&self, stream: &str) -> Tally {
        let inner = self.0.lock().unwrap();
        inner.streams.get(stream).cloned().unwrap_or_default()
    }

    pub fn probe(&self, topic: &str) -> Option<Instant> {
        self.0.lock().unwrap().probes.get(topic).copied()
    }

    /// Waits until every stream has `expected` distinct messages, then `quiet` more
    /// for late duplicates. False if they did not all come within `within`.
    pub async fn settle(&self, streams: &[(&str, u64)], within: Duration, quiet: Duration) -> bool {
        let complete = eventually(within, || {
            streams
                .iter()
                .all(|(s, n)| self.tally(s).unique() as u64 >= *n)
        })
        .await;
        tokio::time::sleep(quiet).await;
        complete
    }
}

/// Two publishers (QoS 1 and QoS 2 streams) and a QoS 2 subscriber collecting
/// arrivals, all built by `via` (e.g. through a proxy), with their event logs.
#[derive(Debug)]
pub struct StreamRig {
    pub arrivals: Arrivals,
    pub sub_client: Client,
    pub collector: JoinHandle<()>,
    pub p1: Client,
    pub p2: Client,
    pub logs: [EventLog; 3],
}

impl StreamRig {
    pub async fn start(via: impl Fn(&str) -> ClientBuilder, prefix: &str) -> StreamRig {
        let arrivals = Arrivals::default();
        let sub_client = via(&format!("{prefix}-sub")).connect().await.unwrap();
        let sub = sub_client
            .subscribe(format!("{prefix}/#"))
            .qos(QoS::ExactlyOnce)
            .await
            .unwrap();
        let collector = spawn_collector(sub, arrivals.clone());
        let p1 = via(&format!("{prefix}-q1")).connect().await.unwrap();
        let p2 = via(&format!("{prefix}-q2")).connect().await.unwrap();
        let logs = [
            EventLog::watch(&sub_client),
            EventLog::watch(&p1),
            EventLog::watch(&p2),
        ];
        StreamRig {
            arrivals,
            sub_client,
            collector,
            p1,
            p2,
            logs,
        }
    }
}

/// Records everything `sub` yields until the task is aborted.
pub fn spawn_collector(mut sub: Subscription, arrivals: Arrivals) -> JoinHandle<()> {
    tokio::spawn(async move {
        while let Some(msg) = sub.recv().await {
            arrivals.record(&msg);
        }
    })
}

/// Every lifecycle event of a client, with when it came.
#[derive(Debug, Clone, Default)]
pub struct EventLog(pub Arc<Mutex<Vec<(Instant, Event)>>>);

impl EventLog {
    pub fn watch(client: &Client) -> EventLog {
        let log = EventLog::default();
        let mut events = client.events();
        let sink = log.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                sink.0.lock().unwrap().push((Instant::now(), event));
            }
        });
        log
    }

    pub fn first_after(&self, after: Instant, want: impl Fn(&Event) -> bool) -> Option<Instant> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(t, e)| *t >= after && want(e))
            .map(|(t, _)| *t)
    }

    pub async fn wait_for(
        &self,
        after: Instant,
        want: impl Fn(&Event) -> bool,
        within: Duration,
    ) -> Option<Instant> {
        let mut found = None;
        eventually(within, || {
            found = self.first_after(after, &want);
            found.is_some()
        })
        .await;
        found
    }

    pub fn count(&self, want: impl Fn(&Event) -> bool) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, e)| want(e))
            .count()
    }

    /// `session_present` of every `Connected` event so far.
    pub fn sessions(&self) -> Vec<bool> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Connected { session_present } => Some(*session_present),
                _ => None,
            })
            .collect()
    }

    /// For each `Disconnected`, how long until the next `Connected`.
    pub fn outages(&self) -> Vec<Duration> {
        let events = self.0.lock().unwrap();
        let mut out = Vec::new();
        let mut down: Option<Instant> = None;
        for (t, e) in events.iter() {
            match e {
                Event::Disconnected { .. } if down.is_none() => down = Some(*t),
                Event::Connected { .. } => {
                    if let Some(since) = down.take() {
                        out.push(*t - since);
                    }
                }
                _ => {}
            }
        }
        out
    }

    pub fn reasons(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Disconnected { reason } => Some(reason.clone()),
                _ => None,
            })
            .collect()
    }
}

pub fn is_connected(e: &Event) -> bool {
    matches!(e, Event::Connected { .. })
}

pub fn is_disconnected(e: &Event) -> bool {
    matches!(e, Event::Disconnected { .. })
}

/// Polls a future once, now.
pub async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *fut).poll(cx) {
            Poll::Ready(v) => Some(v),
            Poll::Pending => None,
        })
    })
    .await
}

/// A stream of numbered publishes from one client.
#[derive(Debug, Clone)]
pub struct Stream {
    pub name: &'static str,
    pub topic: String,
    pub n: u64,
    pub qos: QoS,
    /// At most this many unresolved at once (the client's window).
    pub window: usize,
    /// Wait this long between publishes.
    pub pace: Option<Duration>,
    pub padding: usize,
}

impl Stream {
    pub fn new(name: &'static str, topic: impl Into<String>, n: u64, qos: QoS) -> Stream {
        Stream {
            name,
            topic: topic.into(),
            n,
            qos,
            window: 20,
            pace: None,
            padding: 0,
        }
    }
}

/// Publishes `stream` in order (each publish is queued before the next is made) with
/// up to `window` awaiting their acknowledgement, in any order. `resolved` counts finished ones.
/// Returns the errors.
pub async fn publish_stream(
    client: Client,
    stream: Stream,
    resolved: Arc<AtomicUsize>,
) -> Vec<(u64, PublishError)> {
    type Publishing<'a> =
        Pin<Box<dyn Future<Output = (u64, Result<(), PublishError>)> + Send + 'a>>;
    let mut errors = Vec::new();
    let mut record = |(seq, result): (u64, Result<(), PublishError>)| {
        resolved.fetch_add(1, Ordering::SeqCst);
        if let Err(e) = result {
            errors.push((seq, e));
        }
    };
    let mut in_flight: FuturesUnordered<Publishing<'_>> = FuturesUnordered::new();
    let mut ticker = stream.pace.map(|p| {
        let mut ticker = tokio::time::interval(p);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    for seq in 0..stream.n {
        while in_flight.len() >= stream.window {
            if let Some(result) = in_flight.next().await {
                record(result);
            }
        }
        if let Some(ticker) = ticker.as_mut() {
            loop {
                tokio::select! {
                    biased;
                    _ = ticker.tick() => break,
                    Some(result) = in_flight.next(), if !in_flight.is_empty() => record(result),
                }
            }
        }
        let publish = client
            .publish(
                stream.topic.clone(),
                payload(stream.name, seq, stream.padding),
            )
            .qos(stream.qos)
            .into_future();
        let mut publish: Publishing<'_> = Box::pin(async move { (seq, publish.await) });
        // Poll once so it is queued now, in sequence order.
        match poll_once(&mut publish).await {
            Some(result) => record(result),
            None => in_flight.push(publish),
        }
    }
    while let Some(result) = in_flight.next().await {
        record(result);
    }
    errors
}

#[derive(Debug)]
pub struct Publisher {
    pub resolved: Arc<AtomicUsize>,
    pub task: JoinHandle<Vec<(u64, PublishError)>>,
    pub n: u64,
}

impl Publisher {
    pub fn spawn(client: &Client, stream: Stream) -> Publisher {
        let resolved = Arc::new(AtomicUsize::new(0));
        let n = stream.n;
        let task = tokio::spawn(publish_stream(client.clone(), stream, resolved.clone()));
        Publisher { resolved, task, n }
    }

    pub fn resolved(&self) -> u64 {
        self.resolved.load(Ordering::SeqCst) as u64
    }

    pub fn done(&self) -> bool {
        self.resolved() >= self.n
    }

    /// (errors, hung): waits up to `within` for every publish to resolve.
    pub async fn finish(self, within: Duration) -> (Vec<(u64, PublishError)>, usize) {
        match tokio::time::timeout(within, self.task).await {
            Ok(result) => (result.unwrap(), 0),
            Err(_) => (
                Vec::new(),
                (self.n - self.resolved.load(Ordering::SeqCst) as u64) as usize,
            ),
        }
    }
}

/// A client builder with quick reconnects pointed at `addr` (a proxy or mock).
pub fn client_at(addr: SocketAddr, name: &str) -> ClientBuilder {
    Client::builder()
        .address("127.0.0.1", addr.port())
        .client_id(client_id(name))
        .clean_session(true)
        .reconnect_backoff(Backoff::exponential(ms(50), ms(500)))
        .start_backoff(Backoff::exponential(ms(50), ms(500)))
        .connect_timeout(secs(5))
}

pub fn addr_of(broker: &TestBroker) -> SocketAddr {
    format!("{}:{}", broker.host(), broker.port())
        .parse()
        .unwrap()
}

pub fn describe(errors: &[(u64, PublishError)]) -> String {
    errors.first().map_or_else(String::new, |(seq, e)| {
        format!(
            "{} errors, the first for message {seq}: {e:?}",
            errors.len()
        )
    })
}

// ---------------------------------------------------------------------------------
// F1–F3: broker restarts

#[derive(Debug)]
pub struct RestartPlan {
    /// The scenario's name: its label, topic and random seed.
    pub scenario: &'static str,
    /// How the publisher and the subscriber reach the broker (a QoS 2 subscriber's
    /// wire is captured over TCP).
    pub link: Link,
    pub qos: QoS,
    pub n: u64,
    pub restarts: u64,
    /// SIGKILL without persistence (the session is lost) instead of SIGTERM with
    /// persistence (the session survives).
    pub kill: bool,
}

#[derive(Debug, Default)]
pub struct RestartOutcome {
    pub metrics: Metrics,
    pub errors: Vec<(u64, PublishError)>,
    pub publisher_sessions: Vec<bool>,
    pub subscriber_sessions: Vec<bool>,
    /// Per restart: CONNACK to a probe through the re-made subscription (kill only).
    pub probe_ms: Vec<u128>,
    /// QoS 2 only: messages the subscriber handled twice that the broker did not
    /// re-send after releasing them.
    pub client_duplicates: Vec<u64>,
    pub complete: bool,
}

/// A persistent subscriber (handler for QoS 2, stream otherwise) and a publisher
/// stream, with the broker restarted `restarts` times spread over the stream.
pub async fn restart_scenario(plan: &RestartPlan) -> Option<RestartOutcome> {
    let mut capabilities = vec![Capability::Restart];
    if !plan.kill {
        capabilities.push(Capability::SessionsAcrossRestart);
    }
    if plan.qos == QoS::ExactlyOnce {
        capabilities.push(Capability::Qos2);
    }
    if !selected_broker_has(plan.scenario, &capabilities) {
        return None;
    }
    let mut broker = broker_with(
        BrokerOptions::new()
            .persistence(!plan.kill)
            .max_queued_messages(100_000),
    )
    .await;
    let front = match plan.link {
        Link::Tcp => None,
        Link::WebSocket => Some(WsFront::start(addr_of(&broker)).await.unwrap()),
    };
    let url = front.as_ref().map_or_else(|| broker.url(), WsFront::url);
    let direct = |name: &str| quick_reconnects().url(&url).client_id(client_id(name));
    let mut rng = Rng::new(plan.scenario);
    let topic = plan.scenario.to_lowercase();
    let arrivals = Arrivals::default();
    // At QoS 2 the subscriber's wire is captured: it tells the client's duplicates
    // from the broker's re-sends of messages it had released (see `resent_after_pubrel`).
    let wire = if plan.qos == QoS::ExactlyOnce {
        let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
        proxy.capture(true);
        Some(proxy)
    } else {
        None
    };
    let sub_builder = match &wire {
        Some(proxy) => client_at(proxy.addr(), &format!("{topic}-sub")),
        None => direct(&format!("{topic}-sub")),
    };
    let sub_client = sub_builder.clean_session(false).connect().await.unwrap();
    let collector = if plan.qos == QoS::ExactlyOnce {
        let seen = arrivals.clone();
        sub_client
            .subscribe(format!("{topic}/#"))
            .qos(plan.qos)
            .handler(move |_c: Client, m: Message| {
                seen.record(&m);
                async {}
            })
            .await
            .unwrap();
        None
    } else {
        let sub = sub_client
            .subscribe(format!("{topic}/#"))
            .qos(plan.qos)
            .await
            .unwrap();
        Some(spawn_collector(sub, arrivals.clone()))
    };
    let publisher = direct(&format!("{topic}-pub"))
        .clean_session(false)
        .max_inflight(20)
        .write_timeout(secs(15))
        .connect()
        .await
        .unwrap();
    let pub_log = EventLog::watch(&publisher);
    let sub_log = EventLog::watch(&sub_client);
    let stream = Publisher::spawn(
        &publisher,
        Stream::new("s", format!("{topic}/data"), plan.n, plan.qos),
    );

    let mut out = RestartOutcome::default();
    for k in 1..=plan.restarts {
        let at = k * plan.n / (plan.restarts + 1);
        assert!(
            eventually(secs(60), || stream.resolved() >= at).await,
            "stalled at {} of {}",
            stream.resolved(),
            plan.n
        );
        tokio::time::sleep(ms(rng.range(0, 150))).await;
        let fault = Instant::now();
        if plan.kill {
            broker.kill().await.unwrap();
        } else {
            broker.stop().await.unwrap();
        }
        broker.start_again().await.unwrap();
        let back = Instant::now();
        let detected = pub_log
            .wait_for(fault, is_disconnected, secs(10))
            .await
            .expect("publisher saw the restart");
        out.metrics.detected(detected - fault);
        let connected = pub_log
            .wait_for(detected, is_connected, secs(10))
            .await
            .expect("publisher reconnected");
        out.metrics
            .recovered(connected.saturating_duration_since(back));
        let sub_connected = sub_log
            .wait_for(fault, is_connected, secs(10))
            .await
            .expect("subscriber reconnected");
        if plan.kill {
            // G5: the subscription is re-made within 1 s of CONNACK. The subscriber
            // publishes probes to itself until one comes back through it.
            let probe = format!("{topic}/probe/{k}");
            let deadline = Instant::now() + secs(5);
            while arrivals.probe(&probe).is_none() && Instant::now() < deadline {
                let c = sub_client.clone();
                let t = probe.clone();
                tokio::spawn(async move { c.publish(t, "probe").qos(QoS::AtMostOnce).await });
                eventually(ms(50), || arrivals.probe(&probe).is_some()).await;
            }
            let arrived = arrivals.probe(&probe).expect("probe delivered");
            out.probe_ms
                .push(arrived.saturating_duration_since(sub_connected).as_millis());
        }
    }
    let (errors, hung) = stream.finish(secs(60)).await;
    out.errors = errors;
    out.metrics.hung = hung;
    out.complete = arrivals
        .settle(
            &[("s", plan.n)],
            secs(if plan.kill { 3 } else { 30 }),
            secs(1),
        )
        .await;
    let tally = arrivals.tally("s");
    tally.add_to(&mut out.metrics, plan.n);
    if let Some(proxy) = &wire {
        let resent = resent_after_pubrel(&proxy.captured());
        out.client_duplicates = tally
            .counts
            .iter()
            .filter(|(seq, count)| **count > 1 && !resent.contains(seq))
            .map(|(seq, _)| *seq)
            .collect();
        out.metrics.note(format!(
            "broker_resent_after_pubrel={} client_duplicates={}",
            resent.len(),
            out.client_duplicates.len()
        ));
    }
    out.publisher_sessions = pub_log.sessions();
    out.subscriber_sessions = sub_log.sessions();
    out.metrics.note(format!(
        "messages={} restarts={} signal={} seed={} publish_errors={} publisher_session_present={:?} subscriber_session_present={:?}",
        plan.n,
        plan.restarts,
        if plan.kill { "SIGKILL" } else { "SIGTERM" },
        rng.seed,
        out.errors.len(),
        out.publisher_sessions,
        out.subscriber_sessions,
    ));
    if plan.kill {
        out.metrics
            .note(format!("resubscribe_probe_ms={:?}", out.probe_ms));
    }
    if let Some(collector) = collector {
        collector.abort();
    }
    publisher.stop().await;
    sub_client.stop().await;
    Some(out)
}

/// Messages (by sequence number) that the broker sent again as PUBLISH after it had
/// sent their PUBREL, which it MUST NOT do [MQTT-4.3.3-1]: the client completed the
/// exchange with PUBCOMP, so it must take such a PUBLISH as a new message
/// [MQTT-4.3.3-2]. Mosquitto 2.0.11 does this after a SIGTERM restart for QoS 2
/// messages that waited for PUBCOMP when it stopped: in F2 wire traces it re-sent
/// PUBREL for the first 20 of them (its default `max_inflight_messages`) and
/// PUBLISH (DUP=1) for the rest, which no client can tell from new messages.
fn resent_after_pubrel(wire: &[courier_testkit::proxy::CapturedPacket]) -> HashSet<u64> {
    let seq_of = |p: &courier_testkit::proxy::CapturedPacket| {
        let payload = p.payload.as_deref()?;
        std::str::from_utf8(payload)
            .ok()?
            .split(':')
            .nth(1)?
            .parse::<u64>()
            .ok()
    };
    let mut last_publish: HashMap<u16, u64> = HashMap::new();
    let mut released = HashSet::new();
    let mut resent = HashSet::new();
    for p in wire
        .iter()
        .filter(|p| p.direction == Direction::BrokerToClient)
    {
        match (p.kind(), p.pkid) {
            (PUBLISH, Some(pkid)) => {
                if let Some(seq) = seq_of(p) {
                    if released.contains(&seq) {
                        resent.insert(seq);
                    }
                    last_publish.insert(pkid, seq);
                }
            }
            (PUBREL, Some(pkid)) => {
                if let Some(seq) = last_publish.get(&pkid) {
                    released.insert(*seq);
                }
            }
            _ => {}
        }
    }
    resent
}

// ---------------------------------------------------------------------------------
// F4: a half-open link

/// F4. Plan: a half-open link (proxy blackhole) for 30 s with keep-alive 5 s, an idle
/// client and one publishing QoS 0; disconnect detected within 2×KA + 1 s (rumqttc:
/// the second unanswered ping), reconnect within (backoff step + 1 s) of the link
/// coming back, QoS 1 published during the outage lost = 0. Scaled: keep-alive 2 s
/// (bound 5 s); the link comes back 0.5 s after both clients noticed. Runs on either
/// broker.
///
/// Over [`Link::WebSocket`] the clients reach the proxy through a [`WsFront`]: the
/// front keeps their WebSocket open while the proxy swallows what it forwards.
///
/// # Panics
///
/// F1 over `link`: 5 SIGTERM restarts of a persistent broker spread over a stream of
/// 2,000 QoS 1 publishes (inflight 20): lost = 0, hung = 0, every publish `Ok`, the
/// sessions present after each restart, duplicates bounded by restarts × (the
/// client's inflight + the broker's).
///
/// # Panics
///
/// When a promise is broken.
pub async fn f1_restarts_lose_no_qos1_message(link: Link) {
    let plan = RestartPlan {
        link,
        scenario: "F1",
        qos: QoS::AtLeastOnce,
        n: 2000,
        restarts: 5,
        kill: false,
    };
    let Some(out) = restart_scenario(&plan).await else {
        return;
    };
    out.metrics.print(&link.label("F1"));
    assert!(out.errors.is_empty(), "{}", describe(&out.errors));
    assert_eq!(out.metrics.hung, 0);
    assert_eq!(out.metrics.lost, 0);
    assert!(out.complete);
    assert!(out.metrics.duplicated <= 5 * (20 + 20));
    assert_eq!(out.publisher_sessions, vec![true; 5]);
    assert_eq!(out.subscriber_sessions, vec![true; 5]);
}

/// When a promise is broken.
pub async fn f4_half_open_link(link: Link) {
    const KA: u64 = 2;
    let broker = broker().await;
    let proxy = FaultProxy::start(addr_of(&broker)).await.unwrap();
    let arrivals = Arrivals::default();
    let watcher = client(&broker, "f4-watch").connect().await.unwrap();
    let sub = watcher
        .subscribe("f4/#")
        .qos(QoS::AtLeastOnce)
        .await
        .unwrap();
    let collector = spawn_collector(sub, arrivals.clone());
    let front = match link {
        Link::Tcp => None,
        Link::WebSocket => Some(WsFront::start(proxy.addr()).await.unwrap()),
    };
    let via_proxy = |name: &str| {
        let builder = client_at(proxy.addr(), name);
        match &front {
            Some(front) => builder.url(&front.url()),
            None => builder,
        }
        .keep_alive(secs(KA))
        .clean_session(false)
        .write_timeout(secs(30))
    };
    let idle = via_proxy("f4-idle").connect().await.unwrap();
    let busy = via_proxy("f4-busy").connect().await.unwrap();
    let (idle_log, busy_log) = (EventLog::watch(&idle), EventLog::watch(&busy));
    let qos0 = Publisher::spawn(
        &busy,
        Stream {
            pace: Some(ms(50)),
            window: 1,
            ..Stream::new("q0", "f4/q0", 1_000_000, QoS::AtMostOnce)
        },
    );
    tokio::time::sleep(ms(700)).await;

    let mut metrics = Metrics::default();
    let fault = Instant::now();
    proxy.blackhole();
    tokio::time::sleep(ms(200)).await;
    let qos1 = Publisher::spawn(&busy, Stream::new("q1", "f4/q1", 20, QoS::AtLeastOnce));
    let bound = secs(2 * KA + 1);
    let mut detections = Vec::new();
    for log in [&idle_log, &busy_log] {
        let down = log
            .wait_for(fault, is_disconnected, bound + secs(5))
            .await
            .expect("the half-open link was detected");
        detections.push(down - fault);
        metrics.detected(down - fault);
    }
    tokio::time::sleep(ms(500)).await;
    let healed = Instant::now();
    proxy.pass();
    let mut recoveries = Vec::new();
    for log in [&idle_log, &busy_log] {
        let up = log
            .wait_for(fault, is_connected, secs(10))
            .await
            .expect("reconnected once the link came back");
        assert!(up >= healed, "connected through a blackhole");
        recoveries.push(up - healed);
        metrics.recovered(up - healed);
    }
    let (errors, hung) = qos1.finish(secs(20)).await;
    metrics.hung = hung;
    let complete = arrivals.settle(&[("q1", 20)], secs(10), ms(500)).await;
    arrivals.tally("q1").add_to(&mut metrics, 20);
    qos0.task.abort();
    metrics.note(format!(
        "keep_alive_s={KA} bound_ms={} detect_each_ms={:?} recover_each_ms={:?} qos0_received={} disconnects(idle,busy)=({},{}) reasons={:?}",
        bound.as_millis(),
        detections.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        recoveries.iter().map(Duration::as_millis).collect::<Vec<_>>(),
        arrivals.tally("q0").unique(),
        idle_log.count(is_disconnected),
        busy_log.count(is_disconnected),
        busy_log.reasons(),
    ));
    metrics.print(&link.label("F4"));
    assert!(errors.is_empty(), "{}", describe(&errors));
    assert_eq!(metrics.hung, 0);
    assert!(complete);
    assert_eq!(metrics.lost, 0);
    for d in &detections {
        assert!(*d <= bound, "detected after {d:?}, bound {bound:?}");
    }
    // Backoff step (at most 500 ms + 25 % jitter) + 1 s.
    for r in &recoveries {
        assert!(*r <= ms(1625), "reconnected {r:?} after the link came back");
    }
    collector.abort();
    for c in [idle, busy, watcher] {
        c.stop().await;
    }
}
