//! Istio's Bookinfo traffic-management tasks through translate and the real
//! proxy: weighted reviews splits, header routing for user jason, and the
//! ratings delay and abort faults for jason only.

mod common;
mod live;

use std::sync::Arc;
use std::time::{Duration, Instant};

use live::{Live, requests_total};

async fn bookinfo(vs: &str) -> Arc<Live> {
    let res = common::load(&["bookinfo.yaml", "destination-rule-all.yaml", vs], "");
    Arc::new(Live::start(res, "productpage-v1", &[9080], None).await)
}

/// Sends `n` requests (8 at a time) and counts answers per backend.
pub async fn split(
    live: &Arc<Live>,
    host: &str,
    n: usize,
) -> std::collections::BTreeMap<String, usize> {
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let live = live.clone();
        let host = host.to_string();
        tasks.push(tokio::spawn(async move {
            let mut got = Vec::new();
            for _ in 0..n / 8 {
                let r = live.get(9080, &host, "/reviews/0", &[]).await;
                assert_eq!(r.status, 200, "{}", r.body);
                got.push(r.backend().to_string());
            }
            got
        }));
    }
    let mut counts = std::collections::BTreeMap::new();
    for t in tasks {
        for b in t.await.unwrap() {
            *counts.entry(b).or_insert(0) += 1;
        }
    }
    counts
}

/// Within 5 standard deviations of a binomial share.
fn within_5_sigma(hits: usize, n: usize, p: f64) -> bool {
    let sigma = (n as f64 * p * (1.0 - p)).sqrt();
    (hits as f64 - n as f64 * p).abs() <= 5.0 * sigma
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reviews_90_10_and_80_20() {
    for (vs, v1) in [
        ("virtual-service-reviews-90-10.yaml", 0.9),
        ("virtual-service-reviews-80-20.yaml", 0.8),
    ] {
        let live = bookinfo(vs).await;
        let n = 2000;
        let counts = split(&live, "reviews:9080", n).await;
        let hits = counts.get("reviews-v1").copied().unwrap_or(0);
        assert_eq!(counts.values().sum::<usize>(), n, "{counts:?}");
        assert!(within_5_sigma(hits, n, v1), "{vs}: {counts:?}");
        assert!(!counts.contains_key("reviews-v3"), "{vs}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jason_goes_to_reviews_v2() {
    let live = bookinfo("virtual-service-reviews-test-v2.yaml").await;
    for _ in 0..20 {
        let r = live
            .get(9080, "reviews:9080", "/reviews/0", &[("end-user", "jason")])
            .await;
        assert_eq!(r.backend(), "reviews-v2");
        let r = live
            .get(9080, "reviews:9080", "/reviews/0", &[("end-user", "other")])
            .await;
        assert_eq!(r.backend(), "reviews-v1");
        let r = live.get(9080, "reviews:9080", "/reviews/0", &[]).await;
        assert_eq!(r.backend(), "reviews-v1");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_delay_7s_for_jason_only() {
    let live = bookinfo("virtual-service-ratings-test-delay.yaml").await;
    let start = Instant::now();
    let r = live.get(9080, "ratings:9080", "/ratings/0", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "others are not delayed"
    );
    let start = Instant::now();
    let r = live
        .get(9080, "ratings:9080", "/ratings/0", &[("end-user", "jason")])
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.backend(), "ratings-v1");
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "{:?}",
        start.elapsed()
    );
    let m = live.metrics().await;
    assert_eq!(requests_total(&m, &["response_flags=\"DI\""]), 1, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratings_abort_500_for_jason_only() {
    let live = bookinfo("virtual-service-ratings-test-abort.yaml").await;
    for _ in 0..10 {
        let r = live
            .get(9080, "ratings:9080", "/ratings/0", &[("end-user", "jason")])
            .await;
        assert_eq!(r.status, 500);
        assert_eq!(r.body, "fault filter abort");
        let r = live.get(9080, "ratings:9080", "/ratings/0", &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.backend(), "ratings-v1");
    }
    assert_eq!(
        live.seen("ratings-v1").len(),
        10,
        "aborted requests never reach ratings"
    );
    let m = live.metrics().await;
    assert_eq!(
        requests_total(&m, &["response_flags=\"FI\"", "response_code=\"500\""]),
        10,
        "{m}"
    );
}
