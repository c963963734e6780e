//! Benchmark (not a test): the latency two mTLS sidecars add over two
//! plaintext ones. One process, all on 127.0.0.1: client → client sidecar
//! → (ISTIO_MUTUAL | plaintext) → server sidecar → backend, at a paced
//! 1,000 requests/s over one keep-alive connection (the sidecars reuse their
//! upstream connection too), alternating rounds so drift hits both alike.
//!
//! `cargo run --release -p meshwork-proxy --example mtls_latency [rounds] [requests-per-round]`

#[path = "../tests/mtls_support/mod.rs"]
mod mtls_support;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use meshwork_identity::tls_fixture::TestCa;
use meshwork_telemetry::AccessLogger;
use mtls_support::{Mode, chain};

async fn round(port: u16, n: usize) -> Vec<Duration> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let uri: http::Uri = format!("http://127.0.0.1:{port}/").parse().unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 100 {
        tick.tick().await;
        let start = Instant::now();
        let resp = client.get(uri.clone()).await.expect("request");
        assert_eq!(resp.status(), 200);
        let _ = resp.into_body().collect().await;
        if i >= 100 {
            // The first 100 warm up connections and pools.
            out.push(start.elapsed());
        }
    }
    out
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p) as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let per_round: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(3000);
    let ca = TestCa::new("cluster.local").unwrap();
    let backend = support::http_backend("app").await;
    let plain = chain(&ca, backend, Mode::Disable, AccessLogger::disabled()).await;
    let mtls = chain(&ca, backend, Mode::Strict, AccessLogger::disabled()).await;
    let (mut p, mut m) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        p.extend(round(plain.outbound, per_round).await);
        m.extend(round(mtls.outbound, per_round).await);
    }
    p.sort();
    m.sort();
    let show = |what: &str, v: &[Duration]| {
        println!(
            "{what:>9}: n={} p50={:?} p90={:?} p99={:?}",
            v.len(),
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        );
    };
    show("plaintext", &p);
    show("mTLS", &m);
    let extra = pct(&m, 0.5).as_nanos() as i128 - pct(&p, 0.5).as_nanos() as i128;
    println!(
        "extra p50 of two mTLS sidecars: {:.1} µs (goal < 20 µs)",
        extra as f64 / 1000.0
    );
    let server = mtls.server.metrics().await;
    assert!(server.contains("connection_security_policy=\"mutual_tls\""));
}
