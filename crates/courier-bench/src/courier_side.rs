//! The courier side of every workload.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use courier::{Client, ClientBuilder, Message, PublishError, QoS};
use futures_util::StreamExt;
use tokio::task::JoinHandle;
use tokio::time::{MissedTickBehavior, interval, timeout};

use crate::measure::{Clock, Measure, Metric, m, percentiles};
use crate::probe::{Progress, Recorder, now_ns, stamped};
use crate::workload::{
    BURST_GAP, BURST_WARMUP, Ctx, HOST, KEEP_ALIVE, Throughput, WARMUP, payload, share,
};
use crate::{BoxResult, raw_side};

/// How long a receiver may wait for the rest once the senders are done.
const DRAIN: Duration = Duration::from_secs(2);

/// A builder with the bench's common settings: clean session, 60 s keep-alive.
pub(crate) fn builder(ctx: &Ctx, name: &str) -> ClientBuilder {
    Client::builder()
        .url(&ctx.url)
        .client_id(ctx.id(name))
        .clean_session(true)
        .keep_alive(KEEP_ALIVE)
}

fn qos_of(level: u8) -> QoS {
    match level {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

/// `tasks` tasks that together publish `n` messages, each awaiting its publish.
fn spawn_publishers(
    client: &Client,
    topic: &str,
    payload: &Bytes,
    qos: QoS,
    n: u64,
    tasks: usize,
) -> Vec<JoinHandle<Result<(), PublishError>>> {
    (0..tasks)
        .map(|i| {
            let count = share(n, tasks, i);
            let (client, topic, payload) = (client.clone(), topic.to_owned(), payload.clone());
            tokio::spawn(async move {
                for _ in 0..count {
                    client
                        .publish(topic.as_str(), payload.clone())
                        .qos(qos)
                        .await?;
                }
                Ok(())
            })
        })
        .collect()
}

async fn join(handles: Vec<JoinHandle<Result<(), PublishError>>>) -> BoxResult<()> {
    for handle in handles {
        handle.await??;
    }
    Ok(())
}

/// (1) `tasks` publisher tasks send `n` QoS 0 messages; a `Stream` subscriber counts.
pub(crate) async fn qos0(ctx: &Ctx, n: u64, tasks: usize) -> BoxResult<Vec<Measure>> {
    let topic = ctx.topic("q0");
    let sub_client = builder(ctx, "q0-sub").connect().await?;
    let mut sub = sub_client
        .subscribe(topic.as_str())
        .qos(QoS::AtMostOnce)
        .await?;
    let publisher = builder(ctx, "q0-pub")
        .max_inflight(tasks.min(32_767) as u16)
        .connect()
        .await?;
    let progress = Arc::new(Progress::new(n));
    let clock = Clock::start(ctx.broker_pid)?;
    let start_ns = now_ns();
    let receiver = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(_msg) = sub.recv().await {
                if progress.hit() {
                    break;
                }
            }
            sub
        })
    };
    join(spawn_publishers(
        &publisher,
        &topic,
        &payload(64),
        QoS::AtMostOnce,
        n,
        tasks,
    ))
    .await?;
    progress.wait(DRAIN).await;
    receiver.abort();
    let got = progress.count();
    let wall = Duration::from_nanos(progress.last_ns().saturating_sub(start_ns));
    let mut out = clock.finish(got, Some(wall))?;
    out.push(m(
        Metric::LossPct,
        (n - got.min(n)) as f64 * 100.0 / n as f64,
    ));
    publisher.stop().await;
    sub_client.stop().await;
    Ok(out)
}

/// (2), (3), (8), stretch: `tasks` tasks each awaiting its publish, window = tasks
/// (or courier's defaults).
pub(crate) async fn throughput(ctx: &Ctx, t: Throughput) -> BoxResult<Vec<Measure>> {
    let client = if t.defaults {
        Client::builder()
            .url(&ctx.url)
            .client_id(ctx.id("thr-default"))
            .connect()
            .await?
    } else {
        builder(ctx, "thr")
            .max_inflight(t.tasks.min(32_767) as u16)
            .connect()
            .await?
    };
    let topic = ctx.topic("thr");
    if t.one_task {
        let body = payload(t.payload);
        let qos = qos_of(t.qos);
        let clock = Clock::start(ctx.broker_pid)?;
        let mut publishes = futures_util::stream::iter(0..t.n)
            .map(|_| {
                client
                    .publish(topic.as_str(), body.clone())
                    .qos(qos)
                    .into_future()
            })
            .buffer_unordered(t.tasks);
        while let Some(result) = publishes.next().await {
            result?;
        }
        let out = clock.finish(t.n, None)?;
        drop(publishes);
        client.stop().await;
        return Ok(out);
    }
    let clock = Clock::start(ctx.broker_pid)?;
    join(spawn_publishers(
        &client,
        &topic,
        &payload(t.payload),
        qos_of(t.qos),
        t.n,
        t.tasks,
    ))
    .await?;
    let out = clock.finish(t.n, None)?;
    client.stop().await;
    Ok(out)
}

/// (4) one publish at a time, each awaited.
pub(crate) async fn rtt(ctx: &Ctx, n: u64) -> BoxResult<Vec<Measure>> {
    let client = builder(ctx, "rtt").connect().await?;
    let topic = ctx.topic("rtt");
    let body = payload(64);
    let mut latencies = Vec::with_capacity(n as usize);
    for i in 0..(n as usize + WARMUP) {
        let t = Instant::now();
        client
            .publish(topic.as_str(), body.clone())
            .qos(QoS::AtLeastOnce)
            .await?;
        if i >= WARMUP {
            latencies.push(t.elapsed());
        }
    }
    client.stop().await;
    Ok(percentiles(&mut latencies))
}

/// (5) publish at `rate` msg/s; a handler on another client records the latency.
pub(crate) async fn e2e(ctx: &Ctx, n: u64, rate: u64) -> BoxResult<Vec<Measure>> {
    let topic = ctx.topic("e2e");
    let sub_client = builder(ctx, "e2e-sub").connect().await?;
    let recorder = Arc::new(Recorder::new(n, WARMUP as u64));
    let handle = {
        let recorder = recorder.clone();
        sub_client
            .subscribe(topic.as_str())
            .qos(QoS::AtLeastOnce)
            .handler(move |_client: Client, msg: Message| {
                let recorder = recorder.clone();
                async move { recorder.record(msg.payload()) }
            })
            .await?
    };
    let publisher = builder(ctx, "e2e-pub").connect().await?;
    let mut tick = interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    for _ in 0..n {
        tick.tick().await;
        publisher
            .publish(topic.as_str(), stamped(64))
            .qos(QoS::AtLeastOnce)
            .await?;
    }
    if !recorder.wait(DRAIN).await {
        return Err("courier e2e: messages missing".into());
    }
    let _ = handle.unsubscribe().await;
    publisher.stop().await;
    sub_client.stop().await;
    Ok(percentiles(&mut recorder.take()))
}

/// (6) drain a backlog of `n` QoS 1 messages the broker queued for a persistent
/// session, into a handler or a `Stream`.
pub(crate) async fn dispatch(ctx: &Ctx, n: u64, stream: bool) -> BoxResult<Vec<Measure>> {
    let id = ctx.id("disp");
    let topic = ctx.topic("disp");
    raw_side::prepare_backlog(ctx, &id, &topic, n).await?;
    let clock = Clock::start(ctx.broker_pid)?;
    // Subscribe before the connection is up so the backlog, sent right after CONNACK,
    // finds its route.
    let client = builder(ctx, "disp")
        .client_id(id.clone())
        .clean_session(false)
        .start()?;
    let progress = Arc::new(Progress::new(n));
    let wait = Duration::from_secs(60);
    if stream {
        let mut sub = client
            .subscribe(topic.as_str())
            .qos(QoS::AtLeastOnce)
            .await?;
        let progress = progress.clone();
        let _ = timeout(wait, async {
            while sub.next().await.is_some() {
                if progress.hit() {
                    break;
                }
            }
        })
        .await;
    } else {
        let handle = {
            let progress = progress.clone();
            client
                .subscribe(topic.as_str())
                .qos(QoS::AtLeastOnce)
                .handler(move |_client: Client, _msg: Message| {
                    let progress = progress.clone();
                    async move {
                        progress.hit();
                    }
                })
                .await?
        };
        progress.wait(wait).await;
        drop(handle);
    }
    let got = progress.count();
    let out = clock.finish(got, None)?;
    client.stop().await;
    raw_side::clear_session(ctx, &id).await?;
    if got < n {
        return Err(format!("courier dispatch: {got} of {n} messages").into());
    }
    Ok(out)
}

/// (9) `size` publishes started at once from one task, then a pause; the time from
/// the start to the last acknowledgement.
pub(crate) async fn burst(ctx: &Ctx, bursts: u64, size: usize) -> BoxResult<Vec<Measure>> {
    let client = builder(ctx, "burst").connect().await?;
    let topic = ctx.topic("burst");
    let body = payload(64);
    let mut latencies = Vec::with_capacity(bursts as usize);
    for i in 0..(bursts + BURST_WARMUP) {
        let t = Instant::now();
        let publishes = (0..size).map(|_| {
            client
                .publish(topic.as_str(), body.clone())
                .qos(QoS::AtLeastOnce)
                .into_future()
        });
        for acked in futures_util::future::join_all(publishes).await {
            acked?;
        }
        if i >= BURST_WARMUP {
            latencies.push(t.elapsed());
        }
        tokio::time::sleep(BURST_GAP).await;
    }
    client.stop().await;
    Ok(percentiles(&mut latencies))
}

/// (7) open `conns` idle connections and keep them.
pub(crate) async fn open_idle(port: u16, conns: usize) -> BoxResult<Vec<Client>> {
    let mut clients = Vec::with_capacity(conns);
    for i in 0..conns {
        let client = Client::builder()
            .address(HOST, port)
            .client_id(format!("bench-mem-courier-{}-{i}", std::process::id()))
            .clean_session(true)
            .keep_alive(KEEP_ALIVE)
            .connect()
            .await?;
        clients.push(client);
    }
    Ok(clients)
}

/// (10) `subs` subscriptions made at once, one SUBSCRIBE each, each with a counting
/// handler; then 16 tasks publish `n` QoS 1 messages spread over their topics. The
/// subscribe rate, and the delivery rate through `subs` routes.
pub(crate) async fn routes(ctx: &Ctx, subs: usize, n: u64) -> BoxResult<Vec<Measure>> {
    let base = ctx.topic("routes");
    let client = builder(ctx, "routes-sub").connect().await?;
    let progress = Arc::new(Progress::new(n));
    let started = Instant::now();
    let handles = futures_util::future::try_join_all((0..subs).map(|i| {
        let progress = progress.clone();
        client
            .subscribe(format!("{base}/{i}"))
            .qos(QoS::AtLeastOnce)
            .handler(move |_client: Client, _msg: Message| {
                let progress = progress.clone();
                async move {
                    progress.hit();
                }
            })
    }))
    .await?;
    let subscribe_rate = subs as f64 / started.elapsed().as_secs_f64().max(1e-9);
    let tasks = 16;
    let publisher = builder(ctx, "routes-pub")
        .max_inflight(tasks as u16)
        .connect()
        .await?;
    let body = payload(64);
    let clock = Clock::start(ctx.broker_pid)?;
    let publishers: Vec<_> = (0..tasks)
        .map(|task| {
            let (publisher, base, body) = (publisher.clone(), base.clone(), body.clone());
            tokio::spawn(async move {
                for k in 0..share(n, tasks, task) {
                    let topic = format!("{base}/{}", (k as usize * tasks + task) % subs);
                    publisher.publish(topic, body.clone()).await?;
                }
                Ok(())
            })
        })
        .collect();
    join(publishers).await?;
    progress.wait(DRAIN).await;
    let got = progress.count();
    let mut out = clock.finish(got, None)?;
    out.push(m(Metric::SubscribeRate, subscribe_rate));
    publisher.stop().await;
    client.stop().await;
    drop(handles);
    if got < n {
        return Err(format!("courier routes: {got} of {n} messages").into());
    }
    Ok(out)
}
