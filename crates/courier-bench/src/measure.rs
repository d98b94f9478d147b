//! Clocks and counters: wall time, client CPU (getrusage), broker CPU (schedstat),
//! resident memory, percentiles.

use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};

use crate::BoxResult;

/// One measured quantity of one run.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measure {
    pub(crate) metric: Metric,
    pub(crate) value: f64,
}

/// What a [`Measure`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Metric {
    /// Messages per second (higher is better).
    Rate,
    /// Subscriptions made per second, each with its own SUBSCRIBE (higher is better).
    SubscribeRate,
    /// Messages lost, percent.
    LossPct,
    /// Latency, median, microseconds.
    P50Us,
    /// Latency, 99th percentile, microseconds.
    P99Us,
    /// Resident memory per connection, KiB.
    RssKib,
    /// Client CPU (user + system, whole bench process) per message, microseconds.
    ClientCpuUs,
    /// Broker CPU per message, microseconds.
    BrokerCpuUs,
    /// Context switches of the bench process per message (voluntary + involuntary).
    CtxSwitches,
}

impl Metric {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Metric::Rate => "msg/s",
            Metric::SubscribeRate => "subscriptions/s",
            Metric::LossPct => "loss %",
            Metric::P50Us => "p50 µs",
            Metric::P99Us => "p99 µs",
            Metric::RssKib => "RSS KiB/conn",
            Metric::ClientCpuUs => "client CPU µs/msg",
            Metric::BrokerCpuUs => "broker CPU µs/msg",
            Metric::CtxSwitches => "client context switches/msg",
        }
    }
}

pub(crate) fn m(metric: Metric, value: f64) -> Measure {
    Measure { metric, value }
}

/// CPU time (user + system) of this whole process, in microseconds, and its
/// context switches.
pub(crate) fn process_usage() -> BoxResult<(f64, f64)> {
    let usage = getrusage(UsageWho::RUSAGE_SELF)?;
    let us = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 * 1e6 + tv.tv_usec() as f64;
    Ok((
        us(usage.user_time()) + us(usage.system_time()),
        (usage.voluntary_context_switches() + usage.involuntary_context_switches()) as f64,
    ))
}

/// CPU time of a (single-threaded) process, in microseconds, from
/// `/proc/<pid>/schedstat` (nanosecond resolution).
pub(crate) fn pid_cpu_us(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).ok()?;
    let ns: f64 = text.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e3)
}

/// The pid of our Mosquitto child (the test broker), found in `/proc`.
pub(crate) fn find_broker_pid() -> Option<u32> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) state ppid ..."; comm may hold spaces, so split at the last ')'.
        let Some((head, tail)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = tail
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u32>().ok());
        if head.ends_with("(mosquitto") && ppid == Some(me) {
            return Some(pid);
        }
    }
    None
}

/// Wall time, client CPU and broker CPU from `start` to `finish`.
#[derive(Debug)]
pub(crate) struct Clock {
    wall: Instant,
    usage: (f64, f64),
    broker: Option<(u32, f64)>,
}

impl Clock {
    pub(crate) fn start(broker_pid: Option<u32>) -> BoxResult<Clock> {
        Ok(Clock {
            broker: broker_pid.and_then(|pid| pid_cpu_us(pid).map(|us| (pid, us))),
            usage: process_usage()?,
            wall: Instant::now(),
        })
    }

    /// Rate and CPU per message for `messages` handled since `start`, with the wall
    /// time ending `wall` after the start (or now).
    pub(crate) fn finish(&self, messages: u64, wall: Option<Duration>) -> BoxResult<Vec<Measure>> {
        let wall = wall.unwrap_or_else(|| self.wall.elapsed());
        let (cpu, switches) = process_usage()?;
        let n = messages.max(1) as f64;
        let mut out = vec![
            m(Metric::Rate, n / wall.as_secs_f64().max(1e-9)),
            m(Metric::ClientCpuUs, (cpu - self.usage.0) / n),
            m(Metric::CtxSwitches, (switches - self.usage.1) / n),
        ];
        if let Some((pid, before)) = self.broker {
            if let Some(after) = pid_cpu_us(pid) {
                out.push(m(Metric::BrokerCpuUs, (after - before) / n));
            }
        }
        Ok(out)
    }
}

/// p50 and p99 (nearest rank) of latencies, in microseconds.
pub(crate) fn percentiles(latencies: &mut [Duration]) -> Vec<Measure> {
    if latencies.is_empty() {
        return Vec::new();
    }
    latencies.sort_unstable();
    let at = |p: usize| {
        let i = (latencies.len() * p).div_ceil(100).saturating_sub(1);
        latencies[i.min(latencies.len() - 1)].as_secs_f64() * 1e6
    };
    vec![m(Metric::P50Us, at(50)), m(Metric::P99Us, at(99))]
}

/// Resident set size of this process, KiB (`VmRSS` of `/proc/self/status`).
pub(crate) fn rss_kib() -> BoxResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| "no VmRSS in /proc/self/status".into())
}

/// Median of `values` (mean of the middle two for an even count).
pub(crate) fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_percentiles() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        let mut lat: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = percentiles(&mut lat);
        assert_eq!(p[0].value.round(), 50.0);
        assert_eq!(p[1].value.round(), 99.0);
    }
}
