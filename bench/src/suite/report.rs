//! Results: medians over rounds per (setup, load), added latency over
//! direct, ratios against the best peer (nginx or HAProxy), as a markdown
//! table (printed and written to bench/results/<date>-<host>.md) and as
//! JSON records (bench/results/latest.json).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::Outcome;

/// The figures of one run of one load against one setup.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    /// Latency quantiles, µs.
    pub p50: u64,
    /// 90th percentile, µs.
    pub p90: u64,
    /// 99th percentile, µs.
    pub p99: u64,
    /// Slowest request, µs.
    pub max: u64,
    /// Requests per second.
    pub rps: f64,
    /// Failed requests.
    pub errors: u64,
    /// Proxy CPU seconds used during the run.
    pub cpu_s: f64,
    /// Proxy peak resident memory during the run, MB.
    pub rss_mb: f64,
    /// TCP bulk throughput, MB/s.
    pub mb_per_s: f64,
    /// Requests answered.
    pub requests: f64,
    /// Proxy anonymous resident memory at the end of the run, MB.
    pub anon_mb: f64,
    /// Of `cpu_s`, the kernel's share (system time).
    pub cpu_sys_s: f64,
    /// Context switches of the proxy's threads during the run.
    pub switches: u64,
}

/// What a proxy's processes spent during one run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Cpu {
    /// User CPU seconds.
    pub user_s: f64,
    /// System CPU seconds.
    pub sys_s: f64,
    /// Context switches.
    pub switches: u64,
}

impl Sample {
    /// Figures of an outcome plus the proxy's CPU and memory.
    pub fn of(o: &Outcome, cpu: Cpu, rss_mb: f64, anon_mb: f64) -> Self {
        Sample {
            p50: o.pct(0.5),
            p90: o.pct(0.9),
            p99: o.pct(0.99),
            max: o.latencies.last().copied().unwrap_or(0),
            rps: o.rps(),
            errors: o.errors,
            cpu_s: cpu.user_s + cpu.sys_s,
            rss_mb,
            mb_per_s: o.bytes as f64 / 1e6 / o.elapsed.as_secs_f64().max(1e-9),
            requests: o.latencies.len() as f64,
            anon_mb,
            cpu_sys_s: cpu.sys_s,
            switches: cpu.switches,
        }
    }
}

/// One JSON record: the medians of one (setup, load) over the rounds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Record {
    /// Setup name.
    pub setup: String,
    /// Load name.
    pub load: String,
    /// Median p50 latency, µs (TCP bulk: time of the whole transfer).
    pub p50_us: u64,
    /// Median p90, µs.
    pub p90_us: u64,
    /// Median p99, µs.
    pub p99_us: u64,
    /// Median max, µs.
    pub max_us: u64,
    /// Median requests per second.
    pub rps: f64,
    /// Proxy CPU seconds per 1,000 requests (None for direct and TCP).
    pub cpu_s_per_1k_req: Option<f64>,
    /// Of that, the kernel's share (system time: the sockets' work).
    pub cpu_sys_s_per_1k_req: Option<f64>,
    /// Context switches of the proxy's threads per request (sleeps in
    /// epoll and preemptions).
    pub switches_per_req: Option<f64>,
    /// Highest peak resident memory over the rounds, MB (sum of the
    /// setup's proxy processes; None for direct).
    pub rss_mb: Option<f64>,
    /// Of that, anonymous memory (heap, stacks; not the mapped binary) at
    /// the end of the runs, MB.
    pub anon_mb: Option<f64>,
    /// p50 minus direct's p50, µs.
    pub added_p50_us: Option<i64>,
    /// p99 minus direct's p99, µs.
    pub added_p99_us: Option<i64>,
    /// TCP bulk only: MB/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub throughput_mb_s: Option<f64>,
    /// TCP bulk only: proxy CPU seconds per GB moved.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_s_per_gb: Option<f64>,
    /// Failed requests over all rounds.
    pub errors: u64,
    /// Rounds measured.
    pub rounds: usize,
}

fn median_u(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

fn median_f(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// Builds the records from every sample, keyed by (load, setup) in run order.
pub fn records(samples: &BTreeMap<(usize, usize), (String, String, Vec<Sample>)>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::new();
    for (load, setup, runs) in samples.values() {
        let measured = setup != "direct";
        let tcp = load.starts_with("tcp");
        let cpu_per_1k = median_f(
            runs.iter()
                .map(|s| s.cpu_s / (s.requests / 1000.0).max(1e-9))
                .collect(),
        );
        let cpu_per_gb = median_f(
            runs.iter()
                .map(|s| s.cpu_s / (s.mb_per_s * (s.p50 as f64 / 1e6) / 1000.0).max(1e-9))
                .collect(),
        );
        out.push(Record {
            setup: setup.clone(),
            load: load.clone(),
            p50_us: median_u(runs.iter().map(|s| s.p50).collect()),
            p90_us: median_u(runs.iter().map(|s| s.p90).collect()),
            p99_us: median_u(runs.iter().map(|s| s.p99).collect()),
            max_us: median_u(runs.iter().map(|s| s.max).collect()),
            rps: median_f(runs.iter().map(|s| s.rps).collect()),
            cpu_s_per_1k_req: (measured && !tcp).then_some(cpu_per_1k),
            cpu_sys_s_per_1k_req: (measured && !tcp).then(|| {
                median_f(
                    runs.iter()
                        .map(|s| s.cpu_sys_s / (s.requests / 1000.0).max(1e-9))
                        .collect(),
                )
            }),
            switches_per_req: (measured && !tcp).then(|| {
                median_f(
                    runs.iter()
                        .map(|s| s.switches as f64 / s.requests.max(1.0))
                        .collect(),
                )
            }),
            rss_mb: measured.then(|| runs.iter().map(|s| s.rss_mb).fold(0.0, f64::max)),
            anon_mb: measured.then(|| runs.iter().map(|s| s.anon_mb).fold(0.0, f64::max)),
            added_p50_us: None,
            added_p99_us: None,
            throughput_mb_s: tcp.then(|| median_f(runs.iter().map(|s| s.mb_per_s).collect())),
            cpu_s_per_gb: (measured && tcp).then_some(cpu_per_gb),
            errors: runs.iter().map(|s| s.errors).sum(),
            rounds: runs.len(),
        });
    }
    let direct: BTreeMap<String, (u64, u64)> = out
        .iter()
        .filter(|r| r.setup == "direct")
        .map(|r| (r.load.clone(), (r.p50_us, r.p99_us)))
        .collect();
    for r in &mut out {
        if let Some((d50, d99)) = direct.get(&r.load)
            && r.setup != "direct"
            && !r.load.starts_with("tcp")
        {
            r.added_p50_us = Some(r.p50_us as i64 - *d50 as i64);
            r.added_p99_us = Some(r.p99_us as i64 - *d99 as i64);
        }
    }
    out
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "–".into(), |v| v.to_string())
}

fn f3(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.3}"))
}

fn f1(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.1}"))
}

fn is_peer(setup: &str) -> bool {
    setup == "nginx" || setup == "haproxy"
}

/// The best peer's value of a figure for a load (lower or higher is better).
fn best_peer(
    records: &[Record],
    load: &str,
    f: impl Fn(&Record) -> Option<f64>,
    lower: bool,
) -> Option<f64> {
    let vals = records
        .iter()
        .filter(|r| r.load == load && is_peer(&r.setup))
        .filter_map(f);
    if lower {
        vals.reduce(f64::min)
    } else {
        vals.reduce(f64::max)
    }
}

/// User CPU seconds per 1,000 requests: the process's own code, without
/// the kernel's socket work every proxy pays alike.
fn user_cpu(r: &Record) -> Option<f64> {
    Some(r.cpu_s_per_1k_req? - r.cpu_sys_s_per_1k_req?)
}

fn ratio(ours: Option<f64>, best: Option<f64>) -> String {
    match (ours, best) {
        // A ratio to a peer figure at or below zero (an added latency lost
        // in the noise) means nothing.
        (Some(o), Some(b)) if b > 1e-9 && o >= 0.0 => format!("{:.2}×", o / b),
        _ => "–".into(),
    }
}

/// The markdown report: absolute figures, then Meshwork against the best peer.
pub fn markdown(records: &[Record], header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}\n");
    let _ = writeln!(s, "## Absolute figures (medians over rounds)\n");
    let _ = writeln!(
        s,
        "| load | setup | p50 µs | p90 µs | p99 µs | max µs | added p50 µs | added p99 µs | req/s | MB/s | CPU s / 1k req | of it sys | switches / req | CPU s / GB | peak RSS MB | anon MB | errors |"
    );
    let _ = writeln!(
        s,
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    );
    for r in records {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.load,
            r.setup,
            r.p50_us,
            r.p90_us,
            r.p99_us,
            r.max_us,
            opt(r.added_p50_us),
            opt(r.added_p99_us),
            r.rps,
            f1(r.throughput_mb_s),
            f3(r.cpu_s_per_1k_req),
            f3(r.cpu_sys_s_per_1k_req),
            f1(r.switches_per_req),
            f3(r.cpu_s_per_gb),
            f1(r.rss_mb),
            f1(r.anon_mb),
            r.errors
        );
    }
    let _ = writeln!(
        s,
        "\n## Meshwork against the best peer (nginx or HAProxy; < 1× is better, except req/s and MB/s)\n"
    );
    let _ = writeln!(
        s,
        "| load | setup | added p50 | added p99 | req/s | MB/s | CPU / req | user CPU / req | CPU / GB | peak RSS |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|");
    for r in records
        .iter()
        .filter(|r| r.setup.starts_with("meshwork") || r.setup.starts_with("baseline"))
    {
        // Two hops: compare per hop (half the added latency, CPU and memory).
        let hops = if r.setup.contains("two hops") {
            2.0
        } else {
            1.0
        };
        let per_hop = |v: Option<f64>| v.map(|v| v / hops);
        let l = r.load.as_str();
        let added50 = |r: &Record| r.added_p50_us.map(|v| v as f64);
        let added99 = |r: &Record| r.added_p99_us.map(|v| v as f64);
        let _ = writeln!(
            s,
            "| {} | {}{} | {} | {} | {} | {} | {} | {} | {} | {} |",
            l,
            r.setup,
            if hops > 1.0 { " (per hop)" } else { "" },
            ratio(per_hop(added50(r)), best_peer(records, l, added50, true)),
            ratio(per_hop(added99(r)), best_peer(records, l, added99, true)),
            ratio(Some(r.rps), best_peer(records, l, |r| Some(r.rps), false)),
            ratio(
                r.throughput_mb_s,
                best_peer(records, l, |r| r.throughput_mb_s, false)
            ),
            ratio(
                per_hop(r.cpu_s_per_1k_req),
                best_peer(records, l, |r| r.cpu_s_per_1k_req, true)
            ),
            ratio(per_hop(user_cpu(r)), best_peer(records, l, user_cpu, true)),
            ratio(
                per_hop(r.cpu_s_per_gb),
                best_peer(records, l, |r| r.cpu_s_per_gb, true)
            ),
            ratio(per_hop(r.rss_mb), best_peer(records, l, |r| r.rss_mb, true)),
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(setup: &str, cpu: f64, sys: f64) -> Record {
        Record {
            setup: setup.into(),
            load: "http1-4c".into(),
            cpu_s_per_1k_req: Some(cpu),
            cpu_sys_s_per_1k_req: Some(sys),
            ..Record::default()
        }
    }

    #[test]
    fn user_cpu_is_compared_apart_from_the_total() {
        let records = [
            record("meshwork one hop", 0.060, 0.030),
            record("nginx", 0.050, 0.035),
            record("haproxy", 0.055, 0.030),
        ];
        let report = markdown(&records, "# test");
        let row = report
            .lines()
            .find(|l| l.starts_with("| http1-4c | meshwork one hop |") && l.contains('×'))
            .expect("the ratio row");
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        // CPU / req against nginx's 0.050; user CPU against nginx's 0.015.
        assert_eq!(cells[7], "1.20×", "{row}");
        assert_eq!(cells[8], "2.00×", "{row}");
    }
}
