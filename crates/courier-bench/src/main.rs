//! courier-rs benchmarks: every workload run for courier and for raw rumqttc doing the
//! same job, against one Mosquitto started for the run, alternating A/B, reported as
//! medians, min-max and the ratio courier / raw.
//!
//! ```text
//! cargo run --release -p courier-bench                 # everything (about 4.5 minutes)
//! cargo run --release -p courier-bench -- --quick      # smoke run (1 round, small counts)
//! cargo run --release -p courier-bench -- --only qos1,rtt --rounds 7 --scale 2
//! ```
//!
//! Options, each also an environment variable:
//!
//! - `--rounds N` (`COURIER_BENCH_ROUNDS`, default 9): A/B rounds per workload.
//! - `--scale F` (`COURIER_BENCH_SCALE`, default 1): message counts times F.
//! - `--conns N` (`COURIER_BENCH_CONNS`, default 1000): connections of the memory
//!   workload.
//! - `--only a,b` (`COURIER_BENCH_ONLY`): workload groups among qos0, qos1, qos2,
//!   unordered, rtt, e2e, dispatch, memory, payload, defaults, burst, routes; `qos1:16`
//!   selects one task count.
//! - `--workers N` (`COURIER_BENCH_WORKERS`): Tokio worker threads (default: one per
//!   core).
//! - `--side courier|raw`: one side only (for profiling).
//! - `--broker-nodelay` (`COURIER_BENCH_BROKER_NODELAY=1`): Mosquitto with
//!   `set_tcp_nodelay true` (Nagle's algorithm off; Mosquitto's default is on).
//! - `--transport ws` (`COURIER_BENCH_TRANSPORT=ws`): compare courier over WebSocket
//!   (through the test kit's `WsFront` before the broker) with courier over TCP,
//!   instead of courier with raw rumqttc; the memory workload is left out, the targets
//!   do not apply.
//! - `--quick`: 1 round, counts x0.1, 200 connections.
//!
//! See `crates/courier/guides/benchmarks.md`.

mod courier_side;
mod measure;
mod memory;
mod probe;
mod raw_side;
mod report;
mod workload;

use std::sync::Arc;
use std::time::Instant;

use courier_testkit::{BrokerKind, BrokerOptions, TestBroker, WsFront};

use crate::report::Table;
use crate::workload::{Ctx, Side, Work};

pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type BoxResult<T> = Result<T, BoxError>;

/// Command-line settings.
#[derive(Debug)]
struct Args {
    rounds: usize,
    scale: f64,
    conns: usize,
    only: Option<Vec<String>>,
    quick: bool,
    /// Run one side only (for profiling).
    side: Option<Side>,
    /// Tokio worker threads (default: one per core).
    workers: Option<usize>,
    /// Courier over WebSocket against courier over TCP.
    websocket: bool,
    /// Mosquitto with `set_tcp_nodelay true`.
    broker_nodelay: bool,
}

const USAGE: &str = "usage: courier-bench [--quick] [--rounds N] [--scale F] [--conns N] \
                     [--only qos0,qos1,qos2,unordered,rtt,e2e,dispatch,memory,payload,defaults,burst,routes] \
                     [--side courier|raw] [--workers N] [--broker-nodelay] [--transport tcp|ws]";

fn parse_args(args: &[String]) -> BoxResult<Args> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut parsed = Args {
        rounds: env("COURIER_BENCH_ROUNDS").map_or(Ok(9), |v| v.parse())?,
        scale: env("COURIER_BENCH_SCALE").map_or(Ok(1.0), |v| v.parse())?,
        conns: env("COURIER_BENCH_CONNS").map_or(Ok(1000), |v| v.parse())?,
        only: env("COURIER_BENCH_ONLY").map(|v| v.split(',').map(str::to_owned).collect()),
        quick: false,
        side: None,
        websocket: std::env::var("COURIER_BENCH_TRANSPORT").is_ok_and(|t| t == "ws"),
        workers: env("COURIER_BENCH_WORKERS")
            .map(|v| v.parse())
            .transpose()?,
        broker_nodelay: env("COURIER_BENCH_BROKER_NODELAY").is_some_and(|v| v == "1"),
    };
    let mut explicit_rounds = false;
    let mut explicit_scale = false;
    let mut explicit_conns = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{arg} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--quick" => parsed.quick = true,
            "--rounds" => {
                parsed.rounds = value()?.parse()?;
                explicit_rounds = true;
            }
            "--scale" => {
                parsed.scale = value()?.parse()?;
                explicit_scale = true;
            }
            "--conns" => {
                parsed.conns = value()?.parse()?;
                explicit_conns = true;
            }
            "--only" => parsed.only = Some(value()?.split(',').map(str::to_owned).collect()),
            "--workers" => parsed.workers = Some(value()?.parse()?),
            "--broker-nodelay" => parsed.broker_nodelay = true,
            "--transport" => {
                parsed.websocket = match value()?.as_str() {
                    "ws" => true,
                    "tcp" => false,
                    other => return Err(format!("--transport tcp|ws, not {other}").into()),
                }
            }
            "--side" => {
                parsed.side = Some(match value()?.as_str() {
                    "courier" => Side::Courier,
                    "raw" => Side::Raw,
                    other => return Err(format!("--side courier|raw, not {other}").into()),
                });
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}").into()),
        }
    }
    if parsed.quick {
        if !explicit_rounds {
            parsed.rounds = 1;
        }
        if !explicit_scale {
            parsed.scale = 0.1;
        }
        if !explicit_conns {
            parsed.conns = 200;
        }
    }
    parsed.rounds = parsed.rounds.max(1);
    Ok(parsed)
}

fn main() -> BoxResult<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some(memory::SUBCOMMAND) {
        return memory::child_main(&argv[1..]);
    }
    let args = parse_args(&argv)?;
    // Before the broker starts, so it inherits the limit too.
    memory::raise_nofile()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.workers {
        runtime.worker_threads(n.max(1));
    }
    runtime.enable_all().build()?.block_on(run(&argv, args))
}

async fn run(argv: &[String], args: Args) -> BoxResult<()> {
    let mut options = BrokerOptions::new()
        .kind(BrokerKind::Mosquitto)
        .max_inflight_messages(1000)
        .max_queued_messages(1_000_000)
        .config_line("max_connections -1")
        // The testkit logs everything (debug included, one line per packet);
        // keep only what readiness detection needs.
        .config_line("log_type none")
        .config_line("log_type error")
        .config_line("log_type warning")
        .config_line("log_type notice")
        .config_line("log_type information");
    if args.broker_nodelay {
        options = options.config_line("set_tcp_nodelay true");
    }
    let broker = TestBroker::start_with(options).await?;
    let ctx = Arc::new(Ctx::new(broker.port(), measure::find_broker_pid()));
    let front = if args.websocket {
        let broker_addr = std::net::SocketAddr::from(([127, 0, 0, 1], broker.port()));
        Some(WsFront::start(broker_addr).await?)
    } else {
        None
    };
    let lanes: Vec<Lane> = match &front {
        Some(front) => vec![
            Lane::new(
                "courier over ws",
                Side::Courier,
                Arc::new(ctx.via(front.url())),
            ),
            Lane::new("courier over tcp", Side::Courier, Arc::clone(&ctx)),
        ],
        None => vec![
            Lane::new("courier", Side::Courier, Arc::clone(&ctx)),
            Lane::new("raw rumqttc", Side::Raw, Arc::clone(&ctx)),
        ],
    };
    let works: Vec<Work> = workload::all(args.scale, args.conns)
        .into_iter()
        .filter(|w| {
            args.only
                .as_ref()
                .is_none_or(|only| only.iter().any(|o| w.selected_by(o)))
        })
        // The memory workload measures a child process over TCP.
        .filter(|w| !(args.websocket && w.group() == "memory"))
        .collect();
    eprintln!(
        "courier-bench: Mosquitto on port {} (pid {:?}), {} workloads x {} rounds x 2 sides",
        ctx.port,
        ctx.broker_pid,
        works.len(),
        args.rounds
    );
    let started = Instant::now();
    // `--side` keeps the lanes of that side.
    let order: Vec<usize> = (0..lanes.len())
        .filter(|&i| args.side.is_none_or(|side| lanes[i].side == side))
        .collect();
    warm_up(&lanes, &order).await?;
    let mut table = Table::new(args.rounds, [lanes[0].name, lanes[1].name], front.is_none());
    for work in &works {
        for round in 0..args.rounds {
            // A B, B A, A B, ...: neither side always runs first.
            let mut order = order.clone();
            if round % 2 == 1 {
                order.reverse();
            }
            for lane in order {
                let Lane { name, side, ctx } = &lanes[lane];
                let result = tokio::spawn(work.run(*side, Arc::clone(ctx))).await?;
                match result {
                    Ok(measures) => {
                        eprintln!(
                            "  [{}] {} round {}/{} {name}: {}",
                            work.group(),
                            work.label(),
                            round + 1,
                            args.rounds,
                            report::brief(&measures)
                        );
                        table.add(work, lane, &measures);
                    }
                    Err(e) => {
                        eprintln!("  [{}] {name} FAILED: {e}", work.label());
                        table.fail(work, lane, &e.to_string());
                    }
                }
            }
        }
    }
    let command = if argv.is_empty() {
        "cargo run --release -p courier-bench".to_owned()
    } else {
        format!("cargo run --release -p courier-bench -- {}", argv.join(" "))
    };
    println!(
        "{}",
        table.render(&command, started.elapsed(), args.scale, args.quick)
    );
    drop(front);
    drop(broker);
    Ok(())
}

/// One column of the comparison: a side, and where its clients connect.
struct Lane {
    name: &'static str,
    side: Side,
    ctx: Arc<Ctx>,
}

impl Lane {
    fn new(name: &'static str, side: Side, ctx: Arc<Ctx>) -> Self {
        Lane { name, side, ctx }
    }
}

/// One short untimed run of each side, so the first measured run does not pay for
/// lazy initialisation.
async fn warm_up(lanes: &[Lane], order: &[usize]) -> BoxResult<()> {
    let work = Work::Throughput(workload::Throughput {
        qos: 1,
        tasks: 16,
        n: 5_000,
        payload: 64,
        defaults: false,
        one_task: false,
    });
    for &lane in order {
        let Lane { side, ctx, .. } = &lanes[lane];
        tokio::spawn(work.run(*side, Arc::clone(ctx))).await??;
    }
    Ok(())
}
