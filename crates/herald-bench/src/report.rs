//! Figures: /proc readings (bench CPU, server CPU and RSS), latency histograms, the result
//! table and JSON, the once-a-second progress line, and the side-by-side comparison.
//! It must not drive connections; scenarios hand it numbers.

use anyhow::{Context, Result};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Linux reports /proc CPU times in USER_HZ, which is 100 on every mainstream configuration.
const USER_HZ: f64 = 100.0;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Nanoseconds since the process's bench epoch; timestamps travel inside message bodies.
pub fn now_nanos() -> u64 {
    let e = *EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Fixes the epoch; call once at start so the first reading is not the epoch itself.
pub fn init_epoch() {
    let _ = EPOCH.get_or_init(Instant::now);
}

/// user+system CPU seconds of a process, from field 14/15 of /proc/PID/stat.
pub fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat_cpu(&stat)
}

fn parse_stat_cpu(stat: &str) -> Option<f64> {
    // The command name (field 2) may contain spaces; fields after its closing ')' are fixed.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state), so utime (14) is index 11 and stime (15) index 12.
    let ut: f64 = f.get(11)?.parse().ok()?;
    let st: f64 = f.get(12)?.parse().ok()?;
    Some((ut + st) / USER_HZ)
}

/// CPU seconds of several processes (the nodes of a cluster) added up; None without pids or
/// if one cannot be read.
pub fn cpu_seconds_of(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| cpu_seconds(&p.to_string())).sum()
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status (is the server pid right?)"))?;
    parse_vmrss(&status).context("no VmRSS line in /proc status")
}

fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A latency histogram in microseconds (1 µs .. 100 s, 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    match Histogram::new_with_bounds(1, 100_000_000, 3) {
        Ok(h) => h,
        Err(_) => unreachable!("constant bounds are valid"),
    }
}

/// Records a latency given in nanoseconds.
pub fn record_ns(h: &mut Histogram<u64>, ns: u64) {
    h.saturating_record((ns / 1000).max(1));
}

/// One named figure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Metric {
    /// Stable key (compare matches on it).
    pub name: String,
    /// The value.
    pub value: f64,
    /// Unit for display.
    pub unit: String,
}

/// What one scenario run produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Scenario name.
    pub scenario: String,
    /// The parameters it ran with.
    pub params: serde_json::Value,
    /// Figures in display order.
    pub metrics: Vec<Metric>,
    /// Lines printed after the table (e.g. the ids a check found missing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// Why the run counts as failed (the process then exits non-zero); None: it passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &str, params: serde_json::Value) -> Self {
        Self {
            scenario: scenario.into(),
            params,
            metrics: Vec::new(),
            notes: Vec::new(),
            failure: None,
        }
    }

    /// Appends a figure.
    pub fn add(&mut self, name: &str, value: f64, unit: &str) {
        self.metrics.push(Metric {
            name: name.into(),
            value,
            unit: unit.into(),
        });
    }

    /// Appends p50/p99/p999/max of a histogram, in milliseconds.
    pub fn add_latency(&mut self, prefix: &str, h: &Histogram<u64>, p999: bool) {
        let ms = |us: u64| us as f64 / 1000.0;
        self.add(&format!("{prefix}_p50"), ms(h.value_at_quantile(0.5)), "ms");
        self.add(
            &format!("{prefix}_p99"),
            ms(h.value_at_quantile(0.99)),
            "ms",
        );
        if p999 {
            self.add(
                &format!("{prefix}_p999"),
                ms(h.value_at_quantile(0.999)),
                "ms",
            );
        }
        self.add(&format!("{prefix}_max"), ms(h.max()), "ms");
    }

    /// Appends the bench's own CPU use and, if known, the server's, over `wall`; returns the
    /// server's CPU seconds so a scenario can report work per server CPU-second, a figure
    /// that holds up when other processes share the cores.
    pub fn add_cpu(
        &mut self,
        bench_cpu0: f64,
        server: Option<(&[u32], f64)>,
        wall: Duration,
    ) -> Option<f64> {
        let w = wall.as_secs_f64().max(1e-9);
        if let Some(c) = cpu_seconds("self") {
            self.add("bench_cpu_s", c - bench_cpu0, "s");
            self.add(
                "bench_cpu_pct",
                100.0 * (c - bench_cpu0) / w,
                "% of one core",
            );
        }
        let (pids, c0) = server?;
        let c = cpu_seconds_of(pids)?;
        self.add("server_cpu_pct", 100.0 * (c - c0) / w, "% of one core");
        Some(c - c0)
    }

    /// Prints the table on stdout.
    pub fn print_table(&self) {
        println!("== {} {}", self.scenario, self.params);
        println!("{:<24} {:>14}  unit", "metric", "value");
        for m in &self.metrics {
            println!("{:<24} {:>14}  {}", m.name, fmt_value(m.value), m.unit);
        }
        for n in &self.notes {
            println!("{n}");
        }
        if let Some(f) = &self.failure {
            println!("FAILED: {f}");
        }
    }

    /// Writes the JSON file if asked to.
    pub fn write_json(&self, path: Option<&std::path::Path>) -> Result<()> {
        if let Some(p) = path {
            let s = serde_json::to_string_pretty(self)?;
            std::fs::write(p, s).with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

fn fmt_value(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

/// Counters the progress line prints; scenarios bump the ones they use.
#[derive(Debug, Default)]
pub struct Progress {
    /// Sessions logged in.
    pub ok: AtomicU64,
    /// Failed sessions.
    pub failed: AtomicU64,
    /// Messages sent.
    pub sent: AtomicU64,
    /// Messages (or publishes) received.
    pub received: AtomicU64,
}

/// Prints one line per second to stderr until the returned handle is aborted.
pub fn spawn_progress(label: &'static str, p: Arc<Progress>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.tick().await;
        let mut last_recv = 0;
        loop {
            tick.tick().await;
            let recv = p.received.load(Ordering::Relaxed);
            eprintln!(
                "[{label} {:>4.0}s] ok={} failed={} sent={} received={} (+{}/s)",
                start.elapsed().as_secs_f64(),
                p.ok.load(Ordering::Relaxed),
                p.failed.load(Ordering::Relaxed),
                p.sent.load(Ordering::Relaxed),
                recv,
                recv - last_recv
            );
            last_recv = recv;
        }
    })
}

/// Prints sets of reports side by side, one column per server (a server without reports is left
/// out), then the ratio of the last column to each earlier one. Rows are every (scenario,
/// metric) any server reported, in the order first seen; a figure a server lacks shows "n/a".
pub fn compare(columns: &[(&str, &[Report])]) {
    print!("{}", compare_table(columns));
}

fn compare_table(columns: &[(&str, &[Report])]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let cols: Vec<&(&str, &[Report])> = columns.iter().filter(|(_, r)| !r.is_empty()).collect();
    let Some(((last_name, last), earlier)) = cols.split_last().map(|(l, e)| (**l, e)) else {
        return out;
    };
    let mut rows: Vec<(&str, &str, &str)> = Vec::new();
    for (_, reports) in &cols {
        for r in reports.iter() {
            for m in &r.metrics {
                let key = (r.scenario.as_str(), m.name.as_str(), m.unit.as_str());
                if !rows.iter().any(|k| k.0 == key.0 && k.1 == key.1) {
                    rows.push(key);
                }
            }
        }
    }
    let value = |reports: &[Report], scenario: &str, metric: &str| {
        reports
            .iter()
            .find(|r| r.scenario == scenario)
            .and_then(|r| r.metrics.iter().find(|m| m.name == metric))
            .map(|m| m.value)
    };
    let _ = write!(out, "{:<10} {:<24}", "scenario", "metric");
    for (name, _) in &cols {
        let _ = write!(out, " {name:>14}");
    }
    for (name, _) in earlier {
        let _ = write!(out, " {:>16}", format!("{last_name}/{name}"));
    }
    out.push_str("  unit\n");
    for (scenario, metric, unit) in rows {
        let _ = write!(out, "{scenario:<10} {metric:<24}");
        for (_, reports) in &cols {
            let v = value(reports, scenario, metric).map_or_else(|| "n/a".into(), fmt_value);
            let _ = write!(out, " {v:>14}");
        }
        let subject = value(last, scenario, metric);
        for (_, reports) in earlier {
            let ratio = match (subject, value(reports, scenario, metric)) {
                (Some(s), Some(o)) if o != 0.0 => format!("{:.2}", s / o),
                _ => "-".into(),
            };
            let _ = write!(out, " {ratio:>16}");
        }
        let _ = writeln!(out, "  {unit}");
    }
    out
}

/// Reads a report written with `--json`.
pub fn load(path: &std::path::Path) -> Result<Report> {
    let s = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(serde_json::from_str(&s)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parsing() {
        let stat = "1234 (a b) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_stat_cpu(stat), Some(3.0));
        assert_eq!(parse_vmrss("Name:\tx\nVmRSS:\t  2048 kB\n"), Some(2048));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }

    fn report(scenario: &str, metrics: &[(&str, f64)]) -> Report {
        let mut r = Report::new(scenario, serde_json::Value::Null);
        r.metrics = metrics
            .iter()
            .map(|(n, v)| Metric {
                name: (*n).into(),
                value: *v,
                unit: "u".into(),
            })
            .collect();
        r
    }

    #[test]
    fn compare_three_columns_with_ratios_to_the_last() {
        let p = [report("login", &[("rate", 500.0)])];
        let e = [
            report("login", &[("rate", 1000.0)]),
            report("push", &[("p99", 2.0)]),
        ];
        let h = [report("login", &[("rate", 5000.0)])];
        let t = compare_table(&[("prosody", &p), ("ejabberd", &e), ("herald", &h)]);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].contains("herald/prosody") && lines[0].contains("herald/ejabberd"));
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(
            cells,
            ["login", "rate", "500", "1000", "5000", "10.00", "5.00", "u"]
        );
        let cells: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(cells, ["push", "p99", "n/a", "2", "n/a", "-", "-", "u"]);
        // A server without reports is left out, with its ratio.
        let t = compare_table(&[("prosody", &[]), ("ejabberd", &e), ("herald", &h)]);
        assert!(!t.contains("prosody") && t.contains("herald/ejabberd"));
    }

    #[test]
    fn own_process_is_readable() {
        assert!(cpu_seconds("self").is_some());
        assert!(rss_kib(std::process::id()).unwrap() > 0);
    }
}
