//! DestinationRule `consistentHash` through a real proxy configured by
//! `translate`: the same header, cookie or source sticks to one endpoint,
//! different keys spread over the endpoints, with ring hash and Maglev.

mod cluster_harness;
mod support;

use std::collections::{HashMap, HashSet};

use cluster_harness::{Backend, Proxy, config};

fn rule(consistent_hash: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: inventory, namespace: default}}
spec:
  host: inventory.default.svc.cluster.local
  trafficPolicy:
    loadBalancer:
      consistentHash: {consistent_hash}
"
    )
}

async fn backends() -> Vec<Backend> {
    vec![
        Backend::start("a").await,
        Backend::start("b").await,
        Backend::start("c").await,
    ]
}

/// 30 users, 4 requests each: every user sticks to one backend; returns
/// how many users each backend got.
async fn users_stick(proxy: &Proxy) -> HashMap<String, usize> {
    let mut per_backend = HashMap::new();
    for u in 0..30 {
        let user = format!("user-{u}");
        let mut seen = HashSet::new();
        for _ in 0..4 {
            let r = proxy.get("/", &[("x-user", &user)]).await;
            assert_eq!(r.status, 200, "{r:?}");
            seen.insert(r.header("x-backend").unwrap().to_string());
        }
        assert_eq!(seen.len(), 1, "{user} went to {seen:?}");
        *per_backend
            .entry(seen.into_iter().next().unwrap())
            .or_insert(0) += 1;
    }
    per_backend
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_hash_with_ring_hash_and_maglev() {
    let b = backends().await;
    let refs: Vec<&Backend> = b.iter().collect();
    let proxy = Proxy::start(&config(
        &refs,
        &rule("{httpHeaderName: x-user, ringHash: {minimumRingSize: 1024}}"),
    ))
    .await;
    let ring = users_stick(&proxy).await;
    assert_eq!(
        ring.len(),
        3,
        "30 users should reach all 3 backends: {ring:?}"
    );
    assert!(ring.values().all(|n| *n >= 3), "{ring:?}");

    proxy.update(&config(
        &refs,
        &rule("{httpHeaderName: x-user, maglev: {tableSize: 65537}}"),
    ));
    // Wait for the new cluster (its lb policy shows in /config_dump).
    let name = "outbound|9080||inventory.default.svc.cluster.local";
    for _ in 0..100 {
        if proxy.dumped_cluster(name).await["lb_policy"]
            .as_str()
            .unwrap()
            .starts_with("Maglev")
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let maglev = users_stick(&proxy).await;
    assert_eq!(maglev.len(), 3, "{maglev:?}");
    assert!(maglev.values().all(|n| *n >= 3), "{maglev:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cookie_is_generated_then_followed() {
    let b = backends().await;
    let refs: Vec<&Backend> = b.iter().collect();
    let proxy = Proxy::start(&config(
        &refs,
        &rule("{httpCookie: {name: session, ttl: 60s, path: /}}"),
    ))
    .await;
    let mut backends_seen = HashSet::new();
    for _ in 0..12 {
        // A new client: the proxy hands out an affinity cookie.
        let first = proxy.get("/", &[]).await;
        let set = first
            .header("set-cookie")
            .unwrap_or_else(|| panic!("no set-cookie: {first:?}"));
        assert!(set.starts_with("session=\""), "{set}");
        assert!(
            set.contains("Max-Age=60") && set.contains("Path=/"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        let home = first.header("x-backend").unwrap().to_string();
        // It comes back with the cookie: always the same backend, no new cookie.
        for _ in 0..4 {
            let r = proxy.get("/", &[("cookie", &cookie)]).await;
            assert_eq!(r.header("x-backend"), Some(home.as_str()), "{cookie}");
            assert!(r.header("set-cookie").is_none());
        }
        backends_seen.insert(home);
    }
    assert!(
        backends_seen.len() >= 2,
        "12 cookies all on {backends_seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_ip_and_query_parameter() {
    let b = backends().await;
    let refs: Vec<&Backend> = b.iter().collect();
    let proxy = Proxy::start(&config(&refs, &rule("{useSourceIp: true}"))).await;
    let mut seen = HashSet::new();
    for _ in 0..10 {
        seen.insert(
            proxy
                .get("/", &[])
                .await
                .header("x-backend")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(seen.len(), 1, "one client address, one backend: {seen:?}");

    let proxy = Proxy::start(&config(&refs, &rule("{httpQueryParameterName: user}"))).await;
    let mut homes = HashSet::new();
    for u in 0..20 {
        let path = format!("/?user={u}");
        let home = proxy
            .get(&path, &[])
            .await
            .header("x-backend")
            .unwrap()
            .to_string();
        for _ in 0..3 {
            let r = proxy.get(&path, &[]).await;
            assert_eq!(r.header("x-backend"), Some(home.as_str()));
        }
        homes.insert(home);
    }
    assert_eq!(homes.len(), 3, "{homes:?}");
}
