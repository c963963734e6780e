//! The benchmark suite against peers: the same backend reached directly,
//! through Meshwork (one plaintext hop; two hops over mTLS), nginx (one
//! worker) and HAProxy (one thread), on loopback, under HTTP/1.1 at a fixed
//! rate over 4 and 64 connections, maximum HTTP/1.1 throughput, h2c and
//! gRPC unary at a fixed rate, and TCP bulk. Setups are interleaved within
//! every round (A B A B …) and rounds repeated; medians are reported with
//! each proxy's CPU per 1,000 requests and peak resident memory.
//!
//! Run it through `bench/run` (installs the peers, builds, runs this).
//! `suite --help` lists the flags.

mod backend;
mod load;
mod mesh;
mod peers;
mod procstat;
mod report;
mod setup;

use std::collections::BTreeMap;
use std::path::PathBuf;

use load::Outcome;
use report::{Cpu, Sample};
use setup::Setup;

const USAGE: &str = "usage: suite [--quick] [--rounds N] [--secs S] [--rate R] \
[--concurrency N] [--setups a,b,...] [--loads a,b,...] [--out DIR]

  --quick          1 round of 2 s per load (development)
  --rounds N       rounds, every setup once per load in each (default 3)
  --secs S         seconds per fixed-rate or throughput run (default 5)
  --rate R         requests/s of the fixed-rate loads (default 1000)
  --concurrency N  meshwork proxy worker threads (default 1, like nginx's
                   1 worker and HAProxy's 1 thread)
  --setups LIST    subset of: direct,meshwork1,meshwork2,nginx,haproxy,
                   baseline1 (one hop through the meshwork binary named by
                   env MESHWORK_BASELINE, e.g. a build of an earlier commit:
                   an A/B comparison of two builds in one interleaved run)
  --loads LIST     subset of: http1-4c,http1-l4,http1-64c,http1-max,h2c,grpc,
                   tcp (http1-l4: the http1-4c load through each proxy's
                   plain TCP relay, the cost of moving the bytes alone)
  --out DIR        where results go (default bench/results)
Env MESHWORK_PROXY_WRAPPER runs each meshwork proxy under a profiler,
e.g. \"valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p\".";

/// Every load, in the order they run.
const LOADS: [&str; 7] = [
    "http1-4c",
    "http1-l4",
    "http1-64c",
    "http1-max",
    "h2c",
    "grpc",
    "tcp",
];

/// Command-line options.
struct Opts {
    rounds: usize,
    secs: f64,
    rate: u32,
    concurrency: usize,
    setups: Vec<String>,
    loads: Vec<String>,
    out: PathBuf,
    tcp_bytes: u64,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        rounds: 3,
        secs: 5.0,
        rate: 1000,
        concurrency: 1,
        setups: ["direct", "meshwork1", "meshwork2", "nginx", "haproxy"]
            .map(String::from)
            .to_vec(),
        loads: LOADS.map(String::from).to_vec(),
        out: PathBuf::from("bench/results"),
        tcp_bytes: 1 << 30,
    };
    let mut args = std::env::args().skip(1);
    let list = |v: String| v.split(',').map(str::to_string).collect::<Vec<_>>();
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--quick" => {
                o.rounds = 1;
                o.secs = 2.0;
                o.tcp_bytes = 256 << 20;
            }
            "--rounds" => o.rounds = val()?.parse()?,
            "--secs" => o.secs = val()?.parse()?,
            "--rate" => o.rate = val()?.parse()?,
            "--concurrency" => o.concurrency = val()?.parse()?,
            "--setups" => o.setups = list(val()?),
            "--loads" => o.loads = list(val()?),
            "--out" => o.out = PathBuf::from(val()?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => anyhow::bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    anyhow::ensure!(
        o.rounds > 0 && o.secs > 0.0 && o.rate > 0,
        "rounds, secs and rate must be positive"
    );
    Ok(o)
}

/// Runs one load against one setup.
async fn run(load: &str, s: &Setup, o: &Opts, secs: f64) -> Outcome {
    match load {
        "http1-4c" => load::h1_fixed(s.at.h1, o.rate, 4, secs).await,
        "http1-64c" => load::h1_fixed(s.at.h1, o.rate, 64, secs).await,
        "http1-max" => load::h1_max(s.at.h1, 64, secs).await,
        "h2c" => load::h2_fixed(s.at.h2, o.rate, 4, secs, false).await,
        "grpc" => load::h2_fixed(s.at.grpc, o.rate, 4, secs, true).await,
        "tcp" => load::tcp_bulk(s.at.tcp, o.tcp_bytes).await,
        "http1-l4" => load::h1_fixed(s.at.l4, o.rate, 4, secs).await,
        _ => Outcome::default(),
    }
}

fn shell(cmd: &str) -> String {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let o = parse()?;
    for l in &o.loads {
        anyhow::ensure!(LOADS.contains(&l.as_str()), "unknown load {l:?}\n{USAGE}");
    }
    let exe = std::env::current_exe()?.with_file_name("meshwork");
    anyhow::ensure!(
        exe.exists(),
        "{} not found: run bench/run (it builds it)",
        exe.display()
    );
    let wrapper: Vec<String> = std::env::var("MESHWORK_PROXY_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let cmd = mesh::ProxyCmd {
        exe: &exe,
        concurrency: o.concurrency,
        wrapper: &wrapper,
    };

    let b = backend::start()?;
    let mut setups: Vec<Setup> = Vec::new();
    for name in &o.setups {
        let s = match name.as_str() {
            "direct" => Some(Setup::direct(&b)),
            "meshwork1" => Some(mesh::one_hop("meshwork one hop", &cmd, &b).await?),
            "baseline1" => {
                let exe = std::env::var_os("MESHWORK_BASELINE")
                    .map(PathBuf::from)
                    .ok_or_else(|| anyhow::anyhow!("baseline1 needs env MESHWORK_BASELINE"))?;
                let base = mesh::ProxyCmd { exe: &exe, ..cmd };
                Some(mesh::one_hop("baseline one hop", &base, &b).await?)
            }
            "meshwork2" => Some(mesh::two_hops(&cmd, &b).await?),
            "nginx" => peers::nginx(&b).await?,
            "haproxy" => peers::haproxy(&b).await?,
            other => anyhow::bail!("unknown setup {other:?}\n{USAGE}"),
        };
        setups.extend(s);
    }

    let mut samples: BTreeMap<(usize, usize), (String, String, Vec<Sample>)> = BTreeMap::new();
    for round in 1..=o.rounds {
        for (li, l) in o.loads.iter().enumerate() {
            for (si, s) in setups.iter().enumerate() {
                if round == 1 {
                    // Warm up this path for this load (connections, pools,
                    // lazy allocations) right before its first run, so the
                    // first load's peak memory is its own.
                    let w = run(l, s, &o, 0.5).await;
                    if w.errors > 0 || w.latencies.is_empty() {
                        eprintln!(
                            "warning: {} fails {l} in warm-up ({} errors)",
                            s.name, w.errors
                        );
                    }
                }
                procstat::reset_peak(&s.pids);
                let (user0, sys0) = procstat::cpu_split(&s.pids);
                let switches0 = procstat::context_switches(&s.pids);
                let out = run(l, s, &o, o.secs).await;
                let (user1, sys1) = procstat::cpu_split(&s.pids);
                let cpu = Cpu {
                    user_s: user1 - user0,
                    sys_s: sys1 - sys0,
                    switches: procstat::context_switches(&s.pids) - switches0,
                };
                let sample = Sample::of(
                    &out,
                    cpu,
                    procstat::peak_rss_mb(&s.pids),
                    procstat::anon_rss_mb(&s.pids),
                );
                eprintln!(
                    "round {round} {l:<9} {:<24} p50 {:>6} µs  p99 {:>7} µs  {:>7.0} req/s  cpu {:.2} s (usr {:.2} sys {:.2}, {:.1} switches/req)  rss {:.1} MB  errors {}",
                    s.name,
                    sample.p50,
                    sample.p99,
                    sample.rps,
                    sample.cpu_s,
                    cpu.user_s,
                    cpu.sys_s,
                    cpu.switches as f64 / sample.requests.max(1.0),
                    sample.rss_mb,
                    sample.errors
                );
                samples
                    .entry((li, si))
                    .or_insert_with(|| (l.clone(), s.name.to_string(), Vec::new()))
                    .2
                    .push(sample);
            }
        }
    }
    for s in setups {
        s.stop().await;
    }

    let records = report::records(&samples);
    let date = shell("date -u +%Y-%m-%d");
    let host = shell("hostname");
    let header = format!(
        "# Meshwork benchmark {date} on {host}\n\n{} rounds × {} s per load, fixed rate {} req/s, meshwork --concurrency {}; \
CPU: {}; kernel {}. Loopback; load generator and backend share the machine with the proxies.",
        o.rounds,
        o.secs,
        o.rate,
        o.concurrency,
        shell("nproc"),
        shell("uname -r"),
    );
    let md = report::markdown(&records, &header);
    println!("{md}");
    std::fs::create_dir_all(&o.out)?;
    // A second run on the same day and machine gets its own file.
    let md_path = (1..)
        .map(|n| match n {
            1 => o.out.join(format!("{date}-{host}.md")),
            n => o.out.join(format!("{date}-{host}-{n}.md")),
        })
        .find(|p| !p.exists())
        .unwrap_or_else(|| o.out.join(format!("{date}-{host}.md")));
    std::fs::write(&md_path, &md)?;
    let json_path = o.out.join("latest.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&records)? + "\n")?;
    eprintln!("wrote {} and {}", md_path.display(), json_path.display());
    Ok(())
}
