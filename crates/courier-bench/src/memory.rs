//! (7) resident memory per idle connection, measured in a child process per side (the
//! bench binary re-executed with `mem-child`), so the two never share a heap.

use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};

use crate::measure::{Measure, Metric, m, rss_kib};
use crate::workload::{Ctx, Side};
use crate::{BoxResult, courier_side, raw_side};

/// The subcommand the bench binary is re-executed with.
pub(crate) const SUBCOMMAND: &str = "mem-child";

/// Raise the soft open-files limit to the hard one (each connection is a socket, and
/// the broker, our child, inherits the limit).
pub(crate) fn raise_nofile() -> BoxResult<u64> {
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    Ok(hard)
}

/// Run the child for `side` and read its result.
pub(crate) async fn measure(ctx: &Ctx, side: Side, conns: usize) -> BoxResult<Vec<Measure>> {
    let exe = std::env::current_exe()?;
    let side = match side {
        Side::Courier => "courier",
        Side::Raw => "raw",
    };
    let output = tokio::process::Command::new(exe)
        .args([SUBCOMMAND, side, &ctx.port.to_string(), &conns.to_string()])
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "{SUBCOMMAND} {side} failed ({}): {}{}",
            output.status,
            stdout,
            String::from_utf8_lossy(&output.stderr)
        )
        .into());
    }
    let field = |name: &str| -> BoxResult<f64> {
        stdout
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{SUBCOMMAND} {side}: no {name} in {stdout:?}").into())
    };
    let before = field("before_kib")?;
    let after = field("after_kib")?;
    Ok(vec![m(
        Metric::RssKib,
        (after - before) / conns.max(1) as f64,
    )])
}

/// The child: `mem-child <courier|raw> <port> <conns>`. Prints
/// `before_kib=.. after_kib=..`.
pub(crate) fn child_main(args: &[String]) -> BoxResult<()> {
    let [side, port, conns] = args else {
        return Err(format!("usage: {SUBCOMMAND} <courier|raw> <port> <connections>").into());
    };
    let port: u16 = port.parse()?;
    let conns: usize = conns.parse()?;
    raise_nofile()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        // Warm up: one connection opened and closed, so lazily initialised state
        // (runtime, allocator arenas, statics) is not counted per connection.
        match side.as_str() {
            "courier" => {
                for client in courier_side::open_idle(port, 1).await? {
                    client.stop().await;
                }
            }
            "raw" => {
                for client in raw_side::open_idle(port, 1).await? {
                    client.disconnect().await?;
                }
            }
            other => return Err(format!("unknown side {other}").into()),
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = rss_kib()?;
        // Keep the connections open until the process exits: tearing down 1,000 of
        // them one by one is not what is measured.
        if side == "courier" {
            let _clients = courier_side::open_idle(port, conns).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            report(before)
        } else {
            let _clients = raw_side::open_idle(port, conns).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            report(before)
        }
    })
}

/// Print the result and exit with the connections still open.
fn report(before: u64) -> BoxResult<()> {
    let after = rss_kib()?;
    println!("before_kib={before} after_kib={after}");
    std::process::exit(0);
}
