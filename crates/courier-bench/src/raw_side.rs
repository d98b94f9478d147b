//! The raw rumqttc side of every workload: an `AsyncClient` plus its `EventLoop`
//! polled on a task, doing the same job as courier at the same in-flight window.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, NetworkOptions, Outgoing, Packet,
    QoS,
};
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, timeout};

use crate::BoxResult;
use crate::measure::{Clock, Measure, Metric, m, percentiles};
use crate::probe::{Progress, Recorder, now_ns, stamped};
use crate::workload::{
    BURST_GAP, BURST_WARMUP, Ctx, HOST, KEEP_ALIVE, MAX_PACKET, Throughput, WARMUP, payload,
};

const DRAIN: Duration = Duration::from_secs(2);

/// Options with the bench's common settings: clean session, 60 s keep-alive, the same
/// packet size limit as courier.
pub(crate) fn options(ctx: &Ctx, id: String) -> MqttOptions {
    let mut opts = MqttOptions::new(id, HOST, ctx.port);
    opts.set_keep_alive(KEEP_ALIVE);
    opts.set_clean_session(true);
    opts.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    opts
}

/// Connect and wait for the CONNACK. `nodelay`: TCP_NODELAY, as courier sets it.
pub(crate) async fn connect(
    opts: MqttOptions,
    cap: usize,
    nodelay: bool,
) -> BoxResult<(AsyncClient, EventLoop)> {
    let (client, mut eventloop) = AsyncClient::new(opts, cap);
    if nodelay {
        let mut network = NetworkOptions::new();
        network.set_tcp_nodelay(true);
        eventloop.set_network_options(network);
    }
    loop {
        if let Event::Incoming(Packet::ConnAck(_)) = eventloop.poll().await? {
            return Ok((client, eventloop));
        }
    }
}

/// Send DISCONNECT and poll until it is out.
pub(crate) async fn disconnect(client: &AsyncClient, eventloop: &mut EventLoop) {
    if client.disconnect().await.is_err() {
        return;
    }
    loop {
        match eventloop.poll().await {
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Poll until DISCONNECT went out or the connection failed.
fn spawn_idle_loop(mut eventloop: EventLoop) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
}

async fn subscribe(
    client: &AsyncClient,
    eventloop: &mut EventLoop,
    topic: &str,
    qos: QoS,
) -> BoxResult<()> {
    client.subscribe(topic, qos).await?;
    loop {
        if let Event::Incoming(Packet::SubAck(_)) = eventloop.poll().await? {
            return Ok(());
        }
    }
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// A task publishing `n` messages as fast as the request channel takes them.
fn spawn_publisher(
    client: AsyncClient,
    topic: String,
    payload: Bytes,
    qos: QoS,
    n: u64,
) -> JoinHandle<BoxResult<AsyncClient>> {
    tokio::spawn(async move {
        for _ in 0..n {
            client
                .publish_bytes(topic.as_str(), qos, false, payload.clone())
                .await?;
        }
        Ok(client)
    })
}

/// A task polling the event loop until `n` publishes were acknowledged (QoS 1/2) or
/// written (QoS 0).
fn spawn_ack_counter(
    mut eventloop: EventLoop,
    qos: QoS,
    n: u64,
) -> JoinHandle<Result<EventLoop, ConnectionError>> {
    tokio::spawn(async move {
        let mut done = 0;
        while done < n {
            let event = eventloop.poll().await?;
            let counts = matches!(
                (qos, &event),
                (QoS::AtMostOnce, Event::Outgoing(Outgoing::Publish(_)))
                    | (QoS::AtLeastOnce, Event::Incoming(Packet::PubAck(_)))
                    | (QoS::ExactlyOnce, Event::Incoming(Packet::PubComp(_)))
            );
            done += u64::from(counts);
        }
        Ok(eventloop)
    })
}

/// (2), (3), (8), stretch: a pipelined publisher with `tasks` messages in flight
/// (`set_inflight`), counting acknowledgements in the event-loop task. With
/// `defaults`: rumqttc's defaults (inflight 100, no TCP_NODELAY) and a request
/// channel of 10, as in its examples.
pub(crate) async fn throughput(ctx: &Ctx, t: Throughput) -> BoxResult<Vec<Measure>> {
    let (opts, cap, nodelay) = if t.defaults {
        (
            MqttOptions::new(ctx.id("thr-default"), HOST, ctx.port),
            10,
            false,
        )
    } else {
        let mut opts = options(ctx, ctx.id("thr"));
        opts.set_inflight(t.tasks.clamp(1, 65_535) as u16);
        (opts, t.tasks.max(1), true)
    };
    let (client, eventloop) = connect(opts, cap, nodelay).await?;
    let topic = ctx.topic("thr");
    let qos = qos_of(t.qos);
    // From the first publish to the last acknowledgement (before the DISCONNECT).
    let clock = Clock::start(ctx.broker_pid)?;
    let publisher = spawn_publisher(client, topic, payload(t.payload), qos, t.n);
    let counter = spawn_ack_counter(eventloop, qos, t.n);
    let client = publisher.await??;
    let mut eventloop = counter.await??;
    let out = clock.finish(t.n, None)?;
    disconnect(&client, &mut eventloop).await;
    Ok(out)
}

/// (1) one publisher task with a request channel of `tasks` (courier's number of
/// publishing tasks), one subscriber event loop counting.
pub(crate) async fn qos0(ctx: &Ctx, n: u64, tasks: usize) -> BoxResult<Vec<Measure>> {
    let topic = ctx.topic("q0");
    let (sub_client, mut sub_loop) = connect(options(ctx, ctx.id("q0-sub")), 10, true).await?;
    subscribe(&sub_client, &mut sub_loop, &topic, QoS::AtMostOnce).await?;
    let (pub_client, pub_loop) = connect(options(ctx, ctx.id("q0-pub")), tasks, true).await?;
    let progress = Arc::new(Progress::new(n));
    let clock = Clock::start(ctx.broker_pid)?;
    let start_ns = now_ns();
    let receiver = {
        let progress = progress.clone();
        tokio::spawn(async move {
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(_))) => {
                        if progress.hit() {
                            break;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            sub_loop
        })
    };
    let publisher = spawn_publisher(pub_client, topic, payload(64), QoS::AtMostOnce, n);
    let writer = spawn_ack_counter(pub_loop, QoS::AtMostOnce, n);
    let pub_client = publisher.await??;
    let mut pub_loop = writer.await??;
    progress.wait(DRAIN).await;
    let got = progress.count();
    let wall = Duration::from_nanos(progress.last_ns().saturating_sub(start_ns));
    let mut out = clock.finish(got, Some(wall))?;
    out.push(m(
        Metric::LossPct,
        (n - got.min(n)) as f64 * 100.0 / n as f64,
    ));
    disconnect(&pub_client, &mut pub_loop).await;
    if receiver.is_finished() {
        let mut sub_loop = receiver.await?;
        disconnect(&sub_client, &mut sub_loop).await;
    } else {
        receiver.abort();
    }
    Ok(out)
}

/// (4) one publish at a time: queue it, poll until its PUBACK.
pub(crate) async fn rtt(ctx: &Ctx, n: u64) -> BoxResult<Vec<Measure>> {
    let (client, mut eventloop) = connect(options(ctx, ctx.id("rtt")), 10, true).await?;
    let topic = ctx.topic("rtt");
    let body = payload(64);
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..(n as usize + WARMUP) {
        let t = Instant::now();
        client
            .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, body.clone())
            .await?;
        loop {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                break;
            }
        }
        if i >= WARMUP {
            latencies.push(t.elapsed());
        }
    }
    disconnect(&client, &mut eventloop).await;
    Ok(percentiles(&mut latencies))
}

/// (5) publish at `rate` msg/s; the subscriber's event-loop task records the latency.
pub(crate) async fn e2e(ctx: &Ctx, n: u64, rate: u64) -> BoxResult<Vec<Measure>> {
    let topic = ctx.topic("e2e");
    let (sub_client, mut sub_loop) = connect(options(ctx, ctx.id("e2e-sub")), 10, true).await?;
    subscribe(&sub_client, &mut sub_loop, &topic, QoS::AtLeastOnce).await?;
    let recorder = Arc::new(Recorder::new(n, WARMUP as u64));
    let receiver = {
        let recorder = recorder.clone();
        tokio::spawn(async move {
            loop {
                match sub_loop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => recorder.record(&p.payload),
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
    };
    let (pub_client, pub_loop) = connect(options(ctx, ctx.id("e2e-pub")), 10, true).await?;
    let pub_task = spawn_idle_loop(pub_loop);
    let mut tick = interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for _ in 0..n {
        tick.tick().await;
        pub_client
            .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, stamped(64))
            .await?;
    }
    let complete = recorder.wait(DRAIN).await;
    pub_client.disconnect().await?;
    sub_client.disconnect().await?;
    pub_task.await?;
    receiver.await?;
    if !complete {
        return Err("raw e2e: messages missing".into());
    }
    Ok(percentiles(&mut recorder.take()))
}

/// For (6): make a persistent session `id` subscribed to `topic` at QoS 1, then
/// (with the session offline) have the broker queue `n` QoS 1 messages for it.
/// Untimed; the same for both sides.
pub(crate) async fn prepare_backlog(ctx: &Ctx, id: &str, topic: &str, n: u64) -> BoxResult<()> {
    let mut opts = options(ctx, id.to_owned());
    opts.set_clean_session(false);
    let (client, mut eventloop) = connect(opts, 10, true).await?;
    subscribe(&client, &mut eventloop, topic, QoS::AtLeastOnce).await?;
    disconnect(&client, &mut eventloop).await;

    let mut opts = options(ctx, ctx.id("preload"));
    opts.set_inflight(100);
    let (client, eventloop) = connect(opts, 100, true).await?;
    let publisher = spawn_publisher(client, topic.to_owned(), payload(64), QoS::AtLeastOnce, n);
    let counter = spawn_ack_counter(eventloop, QoS::AtLeastOnce, n);
    let client = publisher.await??;
    let mut eventloop = counter.await??;
    disconnect(&client, &mut eventloop).await;
    Ok(())
}

/// Remove the broker's session `id` (connect with a clean session, disconnect).
pub(crate) async fn clear_session(ctx: &Ctx, id: &str) -> BoxResult<()> {
    let (client, mut eventloop) = connect(options(ctx, id.to_owned()), 10, true).await?;
    disconnect(&client, &mut eventloop).await;
    Ok(())
}

/// Poll `eventloop` until `n` publishes arrived (rumqttc acknowledges them) or a
/// minute passed; how many arrived.
async fn count_publishes(eventloop: &mut EventLoop, n: u64) -> BoxResult<u64> {
    let mut got = 0;
    let received = timeout(Duration::from_secs(60), async {
        while got < n {
            if let Event::Incoming(Packet::Publish(_)) = eventloop.poll().await? {
                got += 1;
            }
        }
        Ok::<_, ConnectionError>(())
    })
    .await;
    if let Ok(result) = received {
        result?;
    }
    Ok(got)
}

/// (6) drain the backlog in the event loop (rumqttc acknowledges automatically).
pub(crate) async fn dispatch(ctx: &Ctx, n: u64) -> BoxResult<Vec<Measure>> {
    let id = ctx.id("disp");
    let topic = ctx.topic("disp");
    prepare_backlog(ctx, &id, &topic, n).await?;
    let clock = Clock::start(ctx.broker_pid)?;
    let mut opts = options(ctx, id.clone());
    opts.set_clean_session(false);
    let (client, mut eventloop) = connect(opts, 10, true).await?;
    let got = count_publishes(&mut eventloop, n).await?;
    let out = clock.finish(got, None)?;
    disconnect(&client, &mut eventloop).await;
    clear_session(ctx, &id).await?;
    if got < n {
        return Err(format!("raw dispatch: {got} of {n} messages").into());
    }
    Ok(out)
}

/// (9) `size` publishes queued at once (request channel `size`), then the event
/// loop polled until their PUBACKs are in, then a pause.
pub(crate) async fn burst(ctx: &Ctx, bursts: u64, size: usize) -> BoxResult<Vec<Measure>> {
    let (client, mut eventloop) = connect(options(ctx, ctx.id("burst")), size, true).await?;
    let topic = ctx.topic("burst");
    let body = payload(64);
    let mut latencies = Vec::with_capacity(bursts as usize);
    for i in 0..(bursts + BURST_WARMUP) {
        let t = Instant::now();
        for _ in 0..size {
            client
                .publish_bytes(topic.as_str(), QoS::AtLeastOnce, false, body.clone())
                .await?;
        }
        let mut acked = 0;
        while acked < size {
            if let Event::Incoming(Packet::PubAck(_)) = eventloop.poll().await? {
                acked += 1;
            }
        }
        if i >= BURST_WARMUP {
            latencies.push(t.elapsed());
        }
        tokio::time::sleep(BURST_GAP).await;
    }
    disconnect(&client, &mut eventloop).await;
    Ok(percentiles(&mut latencies))
}

/// (7) open `conns` idle connections with rumqttc's defaults (request channel 10),
/// each event loop polled on its own task.
pub(crate) async fn open_idle(port: u16, conns: usize) -> BoxResult<Vec<AsyncClient>> {
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        let opts = MqttOptions::new(
            format!("bench-mem-raw-{}-{i}", std::process::id()),
            HOST,
            port,
        );
        let (client, eventloop) = connect(opts, 10, false).await?;
        spawn_idle_loop(eventloop);
        clients.push(client);
    }
    Ok(clients)
}

/// (10) `subs` filters subscribed through one pipelined client (one SUBSCRIBE each,
/// counting SUBACKs), then `n` QoS 1 messages over their topics from a pipelined
/// publisher with 16 in flight, counted in the subscriber's event loop (rumqttc has
/// no routing: the application would do it).
pub(crate) async fn routes(ctx: &Ctx, subs: usize, n: u64) -> BoxResult<Vec<Measure>> {
    let base = ctx.topic("routes");
    let (sub_client, mut sub_loop) = connect(options(ctx, ctx.id("routes-sub")), 100, true).await?;
    let started = Instant::now();
    let subscriber = {
        let (client, base) = (sub_client.clone(), base.clone());
        tokio::spawn(async move {
            for i in 0..subs {
                client
                    .subscribe(format!("{base}/{i}"), QoS::AtLeastOnce)
                    .await?;
            }
            Ok::<_, rumqttc::ClientError>(())
        })
    };
    let mut acked = 0;
    while acked < subs {
        if let Event::Incoming(Packet::SubAck(_)) = sub_loop.poll().await? {
            acked += 1;
        }
    }
    subscriber.await??;
    let subscribe_rate = subs as f64 / started.elapsed().as_secs_f64().max(1e-9);

    let tasks = 16;
    let mut opts = options(ctx, ctx.id("routes-pub"));
    opts.set_inflight(tasks as u16);
    let (client, eventloop) = connect(opts, tasks, true).await?;
    let clock = Clock::start(ctx.broker_pid)?;
    let publisher = {
        let base = base.clone();
        tokio::spawn(async move {
            let body = payload(64);
            for k in 0..n {
                let topic = format!("{base}/{}", k as usize % subs);
                client
                    .publish_bytes(topic, QoS::AtLeastOnce, false, body.clone())
                    .await?;
            }
            Ok::<_, rumqttc::ClientError>(client)
        })
    };
    let counter = spawn_ack_counter(eventloop, QoS::AtLeastOnce, n);
    let got = count_publishes(&mut sub_loop, n).await?;
    let mut out = clock.finish(got, None)?;
    out.push(m(Metric::SubscribeRate, subscribe_rate));
    let client = publisher.await??;
    let mut eventloop = counter.await??;
    disconnect(&client, &mut eventloop).await;
    disconnect(&sub_client, &mut sub_loop).await;
    if got < n {
        return Err(format!("raw routes: {got} of {n} messages").into());
    }
    Ok(out)
}
