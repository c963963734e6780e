//! Which endpoints take traffic: EDS health (UNHEALTHY and DRAINING are
//! never chosen), EDS priorities (locality failover: the preferred level
//! takes everything while healthy, the next one when it is not), and
//! Envoy's panic threshold — through a real proxy and real backends.

mod cluster_harness;
mod support;

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::CommonLbConfig;
use envoy_types::pb::envoy::config::core::v3::{HealthStatus, Locality};
use envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use envoy_types::pb::envoy::r#type::v3::Percent;
use meshwork_xds::{TypeUrl, pack};
use support::{
    Mesh, addr, eds_cluster, free_port, http_backend, http_get, http_listener, route_to,
};

/// (backend port, health, priority, zone)
type Ep = (u16, HealthStatus, u32, &'static str);

fn assignment(eps: &[Ep]) -> ClusterLoadAssignment {
    let mut zones: Vec<(u32, &str)> = eps.iter().map(|e| (e.2, e.3)).collect();
    zones.dedup();
    ClusterLoadAssignment {
        cluster_name: "backend".into(),
        endpoints: zones
            .iter()
            .map(|&(priority, zone)| LocalityLbEndpoints {
                locality: Some(Locality {
                    region: "r1".into(),
                    zone: zone.into(),
                    ..Default::default()
                }),
                priority,
                lb_endpoints: eps
                    .iter()
                    .filter(|e| e.2 == priority && e.3 == zone)
                    .map(|e| LbEndpoint {
                        host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                            address: Some(addr(e.0)),
                            ..Default::default()
                        })),
                        health_status: e.1 as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    }
}

async fn start(cluster: Cluster, eps: &[Ep]) -> (Mesh, u16) {
    let mesh = Mesh::start().await;
    let port = free_port();
    mesh.ads
        .set(TypeUrl::Cluster, [("backend".to_string(), pack(&cluster))]);
    mesh.ads.set(
        TypeUrl::Endpoint,
        [("backend".to_string(), pack(&assignment(eps)))],
    );
    mesh.ads.set(
        TypeUrl::Route,
        [("r".to_string(), pack(&route_to("r", "backend", None)))],
    );
    mesh.ads.set(
        TypeUrl::Listener,
        [("l".to_string(), pack(&http_listener("l", port, "r")))],
    );
    mesh.wait_ready(port).await;
    (mesh, port)
}

/// The backends that answered `n` requests (`503` counts as "none").
async fn spread(port: u16, n: usize) -> HashSet<String> {
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut seen = HashSet::new();
    for _ in 0..n {
        let (status, body) = http_get(proxy, "/").await.unwrap();
        seen.insert(if status == 200 {
            body.split(':').next().unwrap().to_string()
        } else {
            format!("status {status}")
        });
    }
    seen
}

fn no_panic(mut c: Cluster) -> Cluster {
    c.common_lb_config = Some(CommonLbConfig {
        healthy_panic_threshold: Some(Percent { value: 0.0 }),
        ..Default::default()
    });
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unhealthy_and_draining_endpoints_are_not_chosen() {
    let (ok, sick, draining) = (
        http_backend("ok").await,
        http_backend("sick").await,
        http_backend("draining").await,
    );
    let (_mesh, port) = start(
        no_panic(eds_cluster("backend", false)),
        &[
            (ok, HealthStatus::Healthy, 0, "z1"),
            (sick, HealthStatus::Unhealthy, 0, "z1"),
            (draining, HealthStatus::Draining, 0, "z1"),
        ],
    )
    .await;
    assert_eq!(spread(port, 30).await, HashSet::from(["ok".to_string()]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priorities_fail_over_when_the_local_level_is_unhealthy() {
    let (local, remote) = (http_backend("local").await, http_backend("remote").await);
    let healthy = [
        (local, HealthStatus::Healthy, 0, "z1"),
        (remote, HealthStatus::Healthy, 1, "z2"),
    ];
    let (mesh, port) = start(no_panic(eds_cluster("backend", false)), &healthy).await;
    assert_eq!(spread(port, 30).await, HashSet::from(["local".to_string()]));

    // The local endpoint turns unhealthy: everything fails over.
    mesh.ads.set(
        TypeUrl::Endpoint,
        [(
            "backend".to_string(),
            pack(&assignment(&[
                (local, HealthStatus::Unhealthy, 0, "z1"),
                (remote, HealthStatus::Healthy, 1, "z2"),
            ])),
        )],
    );
    let mut moved = false;
    for _ in 0..100 {
        if spread(port, 1).await.contains("remote") {
            moved = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(moved, "never failed over");
    assert_eq!(
        spread(port, 30).await,
        HashSet::from(["remote".to_string()])
    );

    // /config_dump shows localities and priorities.
    let (_, dump) = mesh.admin("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let eps = &dump["configs"][2]["dynamic_active_clusters"][0]["endpoints"];
    assert_eq!(eps[1]["priority"], 1);
    assert_eq!(eps[1]["locality"], "r1/z2/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn panic_threshold_as_envoy() {
    let (a, b) = (http_backend("a").await, http_backend("b").await);
    let eps = [
        (a, HealthStatus::Unhealthy, 0, "z1"),
        (b, HealthStatus::Unhealthy, 0, "z1"),
    ];
    // No common_lb_config: Envoy's 50% threshold, so all-unhealthy panics
    // and both endpoints take traffic.
    let (_m1, port) = start(eds_cluster("backend", false), &eps).await;
    let seen = spread(port, 40).await;
    assert_eq!(seen, HashSet::from(["a".to_string(), "b".to_string()]));
    // Threshold 0 (what translate sends): no panic, no healthy upstream.
    let (_m2, port) = start(no_panic(eds_cluster("backend", false)), &eps).await;
    assert_eq!(
        spread(port, 5).await,
        HashSet::from(["status 503".to_string()])
    );
}
