//! The workloads, their labels and targets, and the shared context of a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::measure::{Measure, Metric};
use crate::{BoxResult, courier_side, memory, raw_side};

/// The broker's address.
pub(crate) const HOST: &str = "127.0.0.1";
/// Keep-alive of every client, courier and raw.
pub(crate) const KEEP_ALIVE: Duration = Duration::from_secs(60);
/// Largest packet either side accepts (courier's default).
pub(crate) const MAX_PACKET: usize = 16 * 1024 * 1024;
/// Latency samples dropped at the start of a latency run.
pub(crate) const WARMUP: usize = 200;

/// Shared by every run: where the broker is, unique ids.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub(crate) port: u16,
    /// The broker URL courier's clients connect to: the broker's, or a WebSocket
    /// front's.
    pub(crate) url: String,
    pub(crate) broker_pid: Option<u32>,
    seq: AtomicU64,
}

impl Ctx {
    pub(crate) fn new(port: u16, broker_pid: Option<u32>) -> Self {
        Ctx {
            port,
            url: format!("mqtt://{HOST}:{port}"),
            broker_pid,
            seq: AtomicU64::new(0),
        }
    }

    /// The same broker, courier's clients connecting to `url` instead.
    pub(crate) fn via(&self, url: String) -> Self {
        Ctx {
            port: self.port,
            url,
            broker_pid: self.broker_pid,
            // Ids and topics apart from this context's.
            seq: AtomicU64::new(1 << 32),
        }
    }

    /// A client id unique to this process and call.
    pub(crate) fn id(&self, name: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("bench-{name}-{}-{n}", std::process::id())
    }

    /// A topic unique to this process and call.
    pub(crate) fn topic(&self, name: &str) -> String {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        format!("bench/{name}/{}/{n}", std::process::id())
    }
}

/// A payload of `len` bytes.
pub(crate) fn payload(len: usize) -> Bytes {
    Bytes::from(vec![0x5a; len])
}

/// How many of `n` messages task `i` of `tasks` sends.
pub(crate) fn share(n: u64, tasks: usize, i: usize) -> u64 {
    let tasks = tasks as u64;
    let i = i as u64;
    n / tasks + u64::from(i < n % tasks)
}

/// Which implementation a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Courier,
    Raw,
}

/// Publish throughput parameters.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Throughput {
    /// 1 or 2.
    pub(crate) qos: u8,
    /// Courier: concurrent tasks each awaiting its publish. Raw: the in-flight window
    /// of a pipelined publisher.
    pub(crate) tasks: usize,
    pub(crate) n: u64,
    pub(crate) payload: usize,
    /// Both sides with their library defaults (the stretch goal).
    pub(crate) defaults: bool,
    /// Courier: the `tasks` publishes are driven from one task
    /// (`buffer_unordered(tasks)`) instead of `tasks` tasks.
    pub(crate) one_task: bool,
}

/// One workload.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Work {
    /// (1) QoS 0 publisher + subscriber.
    Qos0 { n: u64, tasks: usize },
    /// (2), (3), (8) and the stretch goal.
    Throughput(Throughput),
    /// (4) sequential QoS 1 round trips.
    Rtt { n: u64 },
    /// (5) publish -> handler latency at a fixed rate.
    E2e { n: u64, rate: u64 },
    /// (6) a broker-side backlog of QoS 1 messages drained by a handler or a Stream.
    Dispatch { n: u64, stream: bool },
    /// (7) RSS per idle connection.
    Memory { conns: usize },
    /// (9, no target in the issue) `size` QoS 1 publishes started at once, every
    /// [`BURST_GAP`]: the time from the start to the last acknowledgement.
    Burst { bursts: u64, size: usize },
    /// (10, no target in the issue) `subs` subscriptions, one SUBSCRIBE each, then
    /// `n` QoS 1 messages spread over their topics.
    Routes { subs: usize, n: u64 },
}

/// Pause between two bursts of workload (9).
pub(crate) const BURST_GAP: Duration = Duration::from_millis(5);
/// Untimed bursts before the timed ones.
pub(crate) const BURST_WARMUP: u64 = 10;

/// What a ratio must satisfy.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Target {
    None,
    AtLeast(f64),
    AtMost(f64),
    Above(f64),
}

impl Work {
    /// The workload number (S for the stretch goal).
    pub(crate) fn number(&self) -> &'static str {
        match self {
            Work::Qos0 { .. } => "1",
            Work::Throughput(t) if t.defaults => "S",
            Work::Throughput(t) if t.one_task => "2b",
            Work::Throughput(t) if t.payload != 64 => "8",
            Work::Throughput(t) if t.qos == 1 => "2",
            Work::Throughput(_) => "3",
            Work::Rtt { .. } => "4",
            Work::E2e { .. } => "5",
            Work::Dispatch { .. } => "6",
            Work::Memory { .. } => "7",
            Work::Burst { .. } => "9",
            Work::Routes { .. } => "10",
        }
    }

    pub(crate) fn label(&self) -> String {
        match *self {
            Work::Qos0 { n, tasks } => format!("QoS 0 pub→sub, {tasks} tasks, {n} msgs"),
            Work::Throughput(t) if t.defaults => format!(
                "QoS 1, both with defaults (courier {} tasks, window 100; rumqttc inflight 100, \
                 no NODELAY), {} msgs",
                t.tasks, t.n
            ),
            Work::Throughput(t) if t.one_task => format!(
                "QoS {}, {} B, {} in flight from one task (courier: buffer_unordered), {} msgs",
                t.qos, t.payload, t.tasks, t.n
            ),
            Work::Throughput(t) => format!(
                "QoS {}, {} B, {} task{}, {} msgs",
                t.qos,
                t.payload,
                t.tasks,
                if t.tasks == 1 { "" } else { "s" },
                t.n
            ),
            Work::Rtt { n } => format!("QoS 1 sequential round trip, {n} msgs"),
            Work::E2e { n, rate } => {
                format!("QoS 1 publish→handler latency at {rate} msg/s, {n} msgs")
            }
            Work::Dispatch { n, stream } => format!(
                "dispatch of {n} queued QoS 1 msgs to a {}",
                if stream { "Stream" } else { "handler" }
            ),
            Work::Memory { conns } => format!("RSS per idle connection, {conns} connections"),
            Work::Burst { bursts, size } => format!(
                "QoS 1 bursts of {size} publishes at once, time to the last ack, {bursts} bursts"
            ),
            Work::Routes { subs, n } => format!(
                "{subs} subscriptions (one SUBSCRIBE each), then {n} QoS 1 msgs over their topics"
            ),
        }
    }

    /// Short name for `--only`.
    pub(crate) fn group(&self) -> &'static str {
        match self {
            Work::Qos0 { .. } => "qos0",
            Work::Throughput(t) if t.defaults => "defaults",
            Work::Throughput(t) if t.one_task => "unordered",
            Work::Throughput(t) if t.payload != 64 => "payload",
            Work::Throughput(t) if t.qos == 1 => "qos1",
            Work::Throughput(_) => "qos2",
            Work::Rtt { .. } => "rtt",
            Work::E2e { .. } => "e2e",
            Work::Dispatch { .. } => "dispatch",
            Work::Memory { .. } => "memory",
            Work::Burst { .. } => "burst",
            Work::Routes { .. } => "routes",
        }
    }

    /// Whether `--only` entry `name` (`group` or `group:tasks`) selects this workload.
    pub(crate) fn selected_by(&self, name: &str) -> bool {
        match name.split_once(':') {
            None => name == self.group(),
            Some((group, tasks)) => {
                group == self.group()
                    && match self {
                        Work::Throughput(t) => tasks.parse() == Ok(t.tasks),
                        Work::Qos0 { tasks: t, .. } => tasks.parse() == Ok(*t),
                        _ => false,
                    }
            }
        }
    }

    /// The target for `metric`, as a bound on courier / raw.
    pub(crate) fn target(&self, metric: Metric) -> Target {
        match (self, metric) {
            (Work::Qos0 { .. }, Metric::Rate) => Target::AtLeast(0.95),
            (Work::Throughput(t), Metric::Rate) if t.defaults => Target::Above(1.0),
            (Work::Throughput(t), Metric::Rate) if t.one_task => Target::None,
            (Work::Throughput(t), Metric::Rate) if t.payload != 64 => Target::None,
            (Work::Throughput(t), Metric::Rate) if t.qos == 1 && t.tasks == 1 => Target::None,
            (Work::Throughput(_), Metric::Rate) => Target::AtLeast(0.95),
            (Work::Rtt { .. } | Work::E2e { .. }, Metric::P50Us) => Target::AtMost(1.10),
            (Work::Dispatch { .. }, Metric::Rate) => Target::AtLeast(0.95),
            (Work::Memory { .. }, Metric::RssKib) => Target::AtMost(1.10),
            _ => Target::None,
        }
    }

    pub(crate) async fn run(self, side: Side, ctx: Arc<Ctx>) -> BoxResult<Vec<Measure>> {
        match (self, side) {
            (Work::Qos0 { n, tasks }, Side::Courier) => courier_side::qos0(&ctx, n, tasks).await,
            (Work::Qos0 { n, tasks }, Side::Raw) => raw_side::qos0(&ctx, n, tasks).await,
            (Work::Throughput(t), Side::Courier) => courier_side::throughput(&ctx, t).await,
            (Work::Throughput(t), Side::Raw) => raw_side::throughput(&ctx, t).await,
            (Work::Rtt { n }, Side::Courier) => courier_side::rtt(&ctx, n).await,
            (Work::Rtt { n }, Side::Raw) => raw_side::rtt(&ctx, n).await,
            (Work::E2e { n, rate }, Side::Courier) => courier_side::e2e(&ctx, n, rate).await,
            (Work::E2e { n, rate }, Side::Raw) => raw_side::e2e(&ctx, n, rate).await,
            (Work::Dispatch { n, stream }, Side::Courier) => {
                courier_side::dispatch(&ctx, n, stream).await
            }
            (Work::Dispatch { n, .. }, Side::Raw) => raw_side::dispatch(&ctx, n).await,
            (Work::Memory { conns }, side) => memory::measure(&ctx, side, conns).await,
            (Work::Burst { bursts, size }, Side::Courier) => {
                courier_side::burst(&ctx, bursts, size).await
            }
            (Work::Burst { bursts, size }, Side::Raw) => raw_side::burst(&ctx, bursts, size).await,
            (Work::Routes { subs, n }, Side::Courier) => courier_side::routes(&ctx, subs, n).await,
            (Work::Routes { subs, n }, Side::Raw) => raw_side::routes(&ctx, subs, n).await,
        }
    }
}

/// Every workload at `scale` times the default message counts.
pub(crate) fn all(scale: f64, conns: usize) -> Vec<Work> {
    let n = |base: u64| ((base as f64 * scale).round() as u64).max(200);
    let thr = |qos: u8, tasks: usize, count: u64, payload: usize| {
        Work::Throughput(Throughput {
            qos,
            tasks,
            n: n(count),
            payload,
            defaults: false,
            one_task: false,
        })
    };
    vec![
        Work::Qos0 {
            n: n(100_000),
            tasks: 128,
        },
        thr(1, 1, 5_000, 64),
        thr(1, 16, 30_000, 64),
        thr(1, 128, 40_000, 64),
        thr(2, 1, 3_000, 64),
        thr(2, 16, 20_000, 64),
        thr(2, 128, 30_000, 64),
        Work::Throughput(Throughput {
            qos: 1,
            tasks: 16,
            n: n(30_000),
            payload: 64,
            defaults: false,
            one_task: true,
        }),
        Work::Throughput(Throughput {
            qos: 1,
            tasks: 128,
            n: n(40_000),
            payload: 64,
            defaults: false,
            one_task: true,
        }),
        Work::Rtt { n: n(5_000) },
        Work::E2e {
            n: n(3_000),
            rate: 1_000,
        },
        Work::Dispatch {
            n: n(100_000),
            stream: false,
        },
        Work::Dispatch {
            n: n(100_000),
            stream: true,
        },
        Work::Memory { conns },
        thr(1, 16, 20_000, 1024),
        thr(1, 128, 20_000, 1024),
        thr(1, 16, 2_000, 64 * 1024),
        thr(1, 128, 2_000, 64 * 1024),
        Work::Throughput(Throughput {
            qos: 1,
            tasks: 128,
            n: n(40_000),
            payload: 64,
            defaults: true,
            one_task: false,
        }),
        Work::Burst {
            bursts: ((100.0 * scale).round() as u64).max(20),
            size: 16,
        },
        Work::Routes {
            subs: 10_000,
            n: n(50_000),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (n, tasks) in [(10, 3), (5, 16), (40_000, 128), (1, 1)] {
            let total: u64 = (0..tasks).map(|i| share(n, tasks, i)).sum();
            assert_eq!(total, n);
        }
    }
}
