//! The results table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::measure::{Measure, Metric, median};
use crate::workload::{Target, Work};

/// Results of one workload.
#[derive(Debug)]
struct Group {
    work: Work,
    values: BTreeMap<Metric, [Vec<f64>; 2]>,
    failures: Vec<String>,
}

/// Every workload's results, in run order.
#[derive(Debug)]
pub(crate) struct Table {
    rounds: usize,
    /// The two columns compared (A, then B); the ratio is A / B.
    lanes: [&'static str; 2],
    /// The targets apply (courier against raw rumqttc).
    targets: bool,
    groups: Vec<Group>,
    load_before: String,
}

impl Table {
    pub(crate) fn new(rounds: usize, lanes: [&'static str; 2], targets: bool) -> Self {
        Table {
            rounds,
            lanes,
            targets,
            groups: Vec::new(),
            load_before: loadavg(),
        }
    }

    fn group(&mut self, work: &Work) -> &mut Group {
        let label = work.label();
        let at = match self.groups.iter().position(|g| g.work.label() == label) {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    work: *work,
                    values: BTreeMap::new(),
                    failures: Vec::new(),
                });
                self.groups.len() - 1
            }
        };
        &mut self.groups[at]
    }

    /// Record the measures of `lane` (0 for A, 1 for B).
    pub(crate) fn add(&mut self, work: &Work, lane: usize, measures: &[Measure]) {
        let group = self.group(work);
        for measure in measures {
            group.values.entry(measure.metric).or_default()[lane].push(measure.value);
        }
    }

    pub(crate) fn fail(&mut self, work: &Work, lane: usize, error: &str) {
        let name = self.lanes[lane];
        self.group(work).failures.push(format!("{name}: {error}"));
    }

    /// The markdown report: context, then one row per workload and metric.
    pub(crate) fn render(
        &self,
        command: &str,
        elapsed: Duration,
        scale: f64,
        quick: bool,
    ) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "### Run of {}", utc_now());
        let _ = writeln!(out);
        let _ = writeln!(out, "- Command: `{command}`");
        let _ = writeln!(
            out,
            "- Machine: {} cores ({}), {}; broker {}",
            std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model(),
            kernel(),
            mosquitto_version()
        );
        let _ = writeln!(
            out,
            "- {} rounds per side, alternating A/B; message counts x{scale}{}; took {:.0} s",
            self.rounds,
            if quick { " (quick)" } else { "" },
            elapsed.as_secs_f64()
        );
        let _ = writeln!(
            out,
            "- courier at `{}`; load average before {}, after {} (other work on the \
             machine skews results)",
            command_output("git", &["rev-parse", "--short", "HEAD"])
                .unwrap_or_else(|| "?".to_owned()),
            self.load_before,
            loadavg()
        );
        let _ = writeln!(out);
        let [a, b] = self.lanes;
        let _ = writeln!(
            out,
            "| # | Workload | Metric | {a} median (min–max) | {b} median (min–max) \
             | A/B | Target | Met |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|---|");
        for group in &self.groups {
            // A rate bought with lost messages is no rate: a workload that lost any
            // on courier's side misses its rate target.
            let lossless = group
                .values
                .get(&Metric::LossPct)
                .is_none_or(|[courier, _]| courier.iter().all(|loss| *loss == 0.0));
            for (metric, [courier, raw]) in &group.values {
                let ratio = median(courier) / median(raw);
                let target = if self.targets {
                    group.work.target(*metric)
                } else {
                    Target::None
                };
                let (mut target_text, met) = match target {
                    Target::None => (String::new(), ""),
                    Target::AtLeast(x) => (format!("≥ {x:.2}"), yes_no(ratio >= x)),
                    Target::AtMost(x) => (format!("≤ {x:.2}"), yes_no(ratio <= x)),
                    Target::Above(x) => (format!("> {x:.2}"), yes_no(ratio > x)),
                };
                let judged_by_loss = *metric == Metric::Rate
                    && !matches!(target, Target::None)
                    && group.values.contains_key(&Metric::LossPct);
                let met = if judged_by_loss {
                    target_text.push_str(", no loss");
                    if lossless { met } else { yes_no(false) }
                } else {
                    met
                };
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    group.work.number(),
                    group.work.label(),
                    metric.label(),
                    summary(*metric, courier),
                    summary(*metric, raw),
                    if ratio.is_finite() {
                        format!("{ratio:.2}")
                    } else {
                        "–".to_owned()
                    },
                    target_text,
                    met
                );
            }
            for failure in &group.failures {
                let _ = writeln!(
                    out,
                    "| {} | {} | FAILED | {failure} | | | | |",
                    group.work.number(),
                    group.work.label()
                );
            }
        }
        out
    }
}

fn yes_no(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// `median (min–max)` of a metric's values.
fn summary(metric: Metric, values: &[f64]) -> String {
    if values.is_empty() {
        return "–".to_owned();
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "{} ({}–{})",
        value(metric, median(values)),
        value(metric, min),
        value(metric, max)
    )
}

/// One value in the metric's unit and precision.
fn value(metric: Metric, v: f64) -> String {
    match metric {
        Metric::Rate | Metric::SubscribeRate => thousands(v.round() as u64),
        Metric::LossPct | Metric::CtxSwitches => format!("{v:.2}"),
        Metric::P50Us | Metric::P99Us if v >= 1000.0 => thousands(v.round() as u64),
        _ => format!("{v:.1}"),
    }
}

fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A one-line summary of one run, for progress output.
pub(crate) fn brief(measures: &[Measure]) -> String {
    measures
        .iter()
        .map(|m| format!("{}={}", m.metric.label(), value(m.metric, m.value)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new(program)
        .args(args)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    let text = if text.is_empty() {
        String::from_utf8_lossy(&output.stderr).trim().to_owned()
    } else {
        text
    };
    (!text.is_empty()).then_some(text)
}

fn utc_now() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]).unwrap_or_else(|| "?".to_owned())
}

/// The 1, 5 and 15 minute load averages.
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}

fn kernel() -> String {
    command_output("uname", &["-sr"]).unwrap_or_else(|| "?".to_owned())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "?".to_owned())
}

fn mosquitto_version() -> String {
    ["/usr/sbin/mosquitto", "mosquitto"]
        .iter()
        .find_map(|bin| command_output(bin, &["-h"]))
        .and_then(|text| text.lines().next().map(str::to_owned))
        .unwrap_or_else(|| "mosquitto ?".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(thousands(12), "12");
        assert_eq!(value(Metric::Rate, 56_000.4), "56,000");
        assert_eq!(
            summary(Metric::LossPct, &[0.0, 1.0, 0.5]),
            "0.50 (0.00–1.00)"
        );
    }
}
