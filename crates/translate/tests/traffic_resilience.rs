//! Retries, timeouts, fault injection and mirroring from VirtualService
//! YAML, through translate and the real proxy, observed on real backends.

mod common;
mod live;
mod traffic;

use std::time::{Duration, Instant};

use live::requests_total;

const RETRIES: &str = r#"  - match: [{headers: {x-policy: {exact: 5xx}}}]
    retries: {attempts: 3, retryOn: 5xx}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: gateway}}}]
    retries: {attempts: 3, retryOn: gateway-error}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: 4xx}}}]
    retries: {attempts: 2, retryOn: retriable-4xx}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: codes}}}]
    retries: {attempts: 2, retryOn: "418"}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: none}}}]
    retries: {attempts: 0}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: pertry}}}]
    timeout: 10s
    retries: {attempts: 2, perTryTimeout: 200ms, retryOn: 5xx}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{headers: {x-policy: {exact: timeout}}}]
    timeout: 300ms
    retries: {attempts: 0}
    route: [{destination: {host: web, subset: v1}}]
  - route: [{destination: {host: web, subset: v1}}]
"#;

/// Attempts the backend saw for `path`, with their attempt-count headers.
fn attempts(live: &live::Live, path: &str) -> Vec<String> {
    live.seen("web-v1")
        .iter()
        .filter(|s| s.path == path)
        .map(|s| {
            s.headers
                .get("x-envoy-attempt-count")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_as_configured_and_istio_default() {
    let live = traffic::start(&traffic::web_vs(RETRIES)).await;
    let p = |policy: &'static str, path: &'static str| {
        let live = live.clone();
        async move {
            live.get(8080, "web:8080", path, &[("x-policy", policy)])
                .await
        }
    };
    // 5xx: 1 + 3 attempts, then the last answer with URX.
    assert_eq!(p("5xx", "/status/500").await.status, 500);
    assert_eq!(attempts(&live, "/status/500"), ["1", "2", "3", "4"]);
    // gateway-error: a backend failing twice then answering.
    assert_eq!(p("gateway", "/flaky/a/2").await.status, 200);
    assert_eq!(attempts(&live, "/flaky/a/2").len(), 3);
    assert_eq!(p("gateway", "/status/501").await.status, 501);
    assert_eq!(
        attempts(&live, "/status/501").len(),
        1,
        "501 is not a gateway error"
    );
    // retriable-4xx (409) and status codes in retryOn.
    assert_eq!(p("4xx", "/status/409").await.status, 409);
    assert_eq!(attempts(&live, "/status/409").len(), 3);
    assert_eq!(p("codes", "/status/418").await.status, 418);
    assert_eq!(attempts(&live, "/status/418").len(), 3);
    // attempts 0 disables retries.
    assert_eq!(p("none", "/status/503").await.status, 503);
    assert_eq!(attempts(&live, "/status/503").len(), 1);
    // No retries field: Istio's default (2 retries, 503 among the reasons).
    assert_eq!(p("default", "/status/503").await.status, 503);
    assert_eq!(attempts(&live, "/status/503").len(), 4, "1 before + 3 now");
    assert_eq!(p("default", "/status/502").await.status, 502);
    assert_eq!(attempts(&live, "/status/502").len(), 1);
    let m = live.metrics().await;
    assert!(requests_total(&m, &["response_flags=\"URX\""]) >= 4, "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_bodies_are_replayed_within_the_buffer_limit() {
    let live = traffic::start(&traffic::web_vs(RETRIES)).await;
    let body = "x".repeat(100_000);
    let r = live
        .send(
            "POST",
            8080,
            "web:8080",
            "/flaky/body/2",
            &[("x-policy", "5xx")],
            &body,
        )
        .await;
    assert_eq!(r.status, 200);
    let seen: Vec<_> = live
        .seen("web-v1")
        .into_iter()
        .filter(|s| s.path == "/flaky/body/2")
        .collect();
    assert_eq!(seen.len(), 3);
    assert!(
        seen.iter()
            .all(|s| s.body.len() == body.len() && s.method == "POST")
    );
    // Past the buffer limit (1 MiB) the body streams once and is not retried.
    let big = "y".repeat(2 * 1024 * 1024 + 1);
    let r = live
        .send(
            "POST",
            8080,
            "web:8080",
            "/flaky/big/5",
            &[("x-policy", "5xx")],
            &big,
        )
        .await;
    assert_eq!(r.status, 503);
    let seen: Vec<_> = live
        .seen("web-v1")
        .into_iter()
        .filter(|s| s.path == "/flaky/big/5")
        .collect();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), big.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeouts_cut_slow_backends() {
    let live = traffic::start(&traffic::web_vs(RETRIES)).await;
    let start = Instant::now();
    let r = live
        .get(8080, "web:8080", "/delay/5000", &[("x-policy", "timeout")])
        .await;
    assert_eq!(r.status, 504);
    assert!(r.header("x-meshwork-reason").starts_with("UT "), "{r:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    // Per-try timeout: three attempts, each cut, then 504.
    let start = Instant::now();
    let r = live
        .get(8080, "web:8080", "/delay/4000", &[("x-policy", "pertry")])
        .await;
    assert_eq!(r.status, 504);
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(attempts(&live, "/delay/4000").len(), 3);
    // The route timeout spans the response body: headers in time, a body
    // that would come late is cut.
    let start = Instant::now();
    let err = live
        .try_get(8080, "web:8080", "/drip/5000", &[("x-policy", "timeout")])
        .await;
    assert!(err.is_err(), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(4),
        "{:?}",
        start.elapsed()
    );
    let m = live.metrics().await;
    assert_eq!(
        requests_total(&m, &["response_code=\"504\"", "UT"]),
        2,
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_failures_retried_on_another_host_by_default() {
    let live = traffic::start("").await;
    for _ in 0..20 {
        let r = live.get(8080, "flaky:8080", "/", &[]).await;
        assert_eq!((r.status, r.backend()), (200, "flaky-ok"), "{r:?}");
    }
}

const FAULTS: &str = r#"  - match: [{uri: {prefix: /delayed}}]
    fault: {delay: {fixedDelay: 500ms, percentage: {value: 100}}}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /half}}]
    fault: {abort: {httpStatus: 418, percentage: {value: 50}}}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /grpc}}]
    fault: {abort: {grpcStatus: UNAVAILABLE, percentage: {value: 100}}}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /never}}]
    fault: {abort: {httpStatus: 500}}
    route: [{destination: {host: web, subset: v1}}]
  - route: [{destination: {host: web, subset: v1}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_delay_and_abort_with_percentages() {
    let live = traffic::start(&traffic::web_vs(FAULTS)).await;
    let start = Instant::now();
    let r = live.get(8080, "web:8080", "/delayed", &[]).await;
    assert_eq!(r.backend(), "web-v1");
    assert!(start.elapsed() >= Duration::from_millis(500));
    let n = 400;
    let mut aborted = 0;
    for _ in 0..n {
        let r = live.get(8080, "web:8080", "/half", &[]).await;
        match r.status {
            418 => aborted += 1,
            200 => assert_eq!(r.backend(), "web-v1"),
            s => panic!("unexpected {s}"),
        }
    }
    // 50% within 5 standard deviations (sigma = 10 for n = 400).
    assert!((150..=250).contains(&aborted), "{aborted} of {n}");
    let r = live.get(8080, "web:8080", "/grpc", &[]).await;
    assert_eq!((r.status, r.header("grpc-status")), (200, "14"));
    // No percentage: Istio aborts none.
    assert_eq!(live.get(8080, "web:8080", "/never", &[]).await.status, 200);
    let m = live.metrics().await;
    assert_eq!(requests_total(&m, &["response_flags=\"DI\""]), 1, "{m}");
    assert_eq!(
        requests_total(&m, &["response_flags=\"FI\""]),
        aborted + 1,
        "{m}"
    );
}

const MIRRORS: &str = r#"  - match: [{uri: {prefix: /slow}}]
    mirror: {host: slowshadow}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /dead}}]
    mirror: {host: deadshadow}
    route: [{destination: {host: web, subset: v1}}]
  - match: [{uri: {prefix: /some}}]
    mirrors: [{destination: {host: shadow}, percentage: {value: 25}}]
    route: [{destination: {host: web, subset: v1}}]
  - mirror: {host: shadow}
    mirrorPercentage: {value: 100}
    route: [{destination: {host: web, subset: v1}}]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrors_get_a_shadow_copy_and_never_slow_the_primary() {
    let live = traffic::start(&traffic::web_vs(MIRRORS)).await;
    let r = live
        .send("POST", 8080, "web:8080", "/copy", &[], "payload")
        .await;
    assert_eq!((r.status, r.backend()), (200, "web-v1"));
    assert!(
        r.body.starts_with("web-v1 "),
        "the client sees the primary only"
    );
    let mut shadow = Vec::new();
    for _ in 0..100 {
        shadow = live.seen("shadow-v1");
        if !shadow.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(shadow.len(), 1);
    assert_eq!(shadow[0].host, "web-shadow:8080");
    assert_eq!(
        (shadow[0].method.as_str(), &shadow[0].body[..]),
        ("POST", &b"payload"[..])
    );
    // A slow or dead mirror changes nothing for the client.
    let start = Instant::now();
    assert_eq!(live.get(8080, "web:8080", "/slow", &[]).await.status, 200);
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(live.get(8080, "web:8080", "/dead", &[]).await.status, 200);
    // `mirrors` with a percentage.
    let n = 400;
    for _ in 0..n {
        assert_eq!(live.get(8080, "web:8080", "/some", &[]).await.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let copies = live
        .seen("shadow-v1")
        .iter()
        .filter(|s| s.path == "/some")
        .count();
    // 25% within 5 standard deviations (sigma ~ 8.7).
    assert!((57..=143).contains(&copies), "{copies} of {n}");
    let dump = live.config_dump().await;
    assert!(dump.contains("shadow"), "mirror policies in /config_dump");
}
