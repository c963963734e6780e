//! Which endpoints take traffic: EDS health (UNHEALTHY and DRAINING are
//! never chosen), EDS priorities (locality failover: the preferred level
//! takes everything while healthy, the next one when it is not),
//! locality-weighted balancing (DestinationRule `distribute`) and Envoy's
//! panic threshold — through a real proxy and real backends.

mod cluster_harness;
mod support;

use std::collections::HashSet;
use std::time::Duration;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::cluster::v3::cluster::CommonLbConfig;
use envoy_types::pb::envoy::config::cluster::v3::cluster::common_lb_config::{
    LocalityConfigSpecifier, LocalityWeightedLbConfig,
};
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

/// What translate sends a region1/zone1 proxy for `distribute {from:
/// region1/zone1/*, to: {region1/zone1/*: 80, region1/zone2/*: 20}}`: two
/// zone1 subzones at 40 each, zone2 (two endpoints) at 20, region2 emptied.
fn distributed(zone2_second: HealthStatus, backends: [u16; 4]) -> ClusterLoadAssignment {
    let group =
        |zone: &str, sub: &str, weight: u32, eps: &[(u16, HealthStatus)]| LocalityLbEndpoints {
            locality: Some(Locality {
                region: if zone.is_empty() {
                    "region2"
                } else {
                    "region1"
                }
                .into(),
                zone: if zone.is_empty() { "zone1" } else { zone }.into(),
                sub_zone: sub.into(),
            }),
            load_balancing_weight: Some(envoy_types::pb::google::protobuf::UInt32Value {
                value: weight,
            }),
            lb_endpoints: eps
                .iter()
                .map(|&(port, health)| LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(addr(port)),
                        ..Default::default()
                    })),
                    health_status: health as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
    let [a, b, c, d] = backends;
    ClusterLoadAssignment {
        cluster_name: "backend".into(),
        endpoints: vec![
            group("zone1", "a", 40, &[(a, HealthStatus::Healthy)]),
            group("zone1", "b", 40, &[(b, HealthStatus::Healthy)]),
            group(
                "zone2",
                "a",
                20,
                &[(c, HealthStatus::Healthy), (d, zone2_second)],
            ),
            group("", "a", 1, &[]),
        ],
        ..Default::default()
    }
}

/// Waits until /config_dump shows `healthy` healthy endpoints.
async fn wait_for_endpoints(mesh: &Mesh, healthy: usize) {
    for _ in 0..250 {
        let (_, dump) = mesh.admin("/config_dump").await;
        let dump: serde_json::Value = serde_json::from_str(&dump).unwrap_or_default();
        let eps = &dump["configs"][2]["dynamic_active_clusters"][0]["endpoints"];
        let n = eps
            .as_array()
            .map_or(0, |a| a.iter().filter(|e| e["healthy"] == true).count());
        if n == healthy {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never saw {healthy} healthy endpoints");
}

/// Requests (of `n`) answered by each backend name.
async fn counts(port: u16, n: usize) -> std::collections::HashMap<String, usize> {
    let proxy = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut seen = std::collections::HashMap::new();
    for _ in 0..n {
        let (status, body) = http_get(proxy, "/").await.unwrap();
        assert_eq!(status, 200, "{body}");
        *seen
            .entry(body.split(':').next().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locality_weighted_balancing_follows_distribute_weights() {
    let names = ["z1a", "z1b", "z2a", "z2b"];
    let mut ports = [0u16; 4];
    for (p, n) in ports.iter_mut().zip(names) {
        *p = http_backend(n).await;
    }
    let mut cluster = no_panic(eds_cluster("backend", false));
    if let Some(c) = cluster.common_lb_config.as_mut() {
        c.locality_config_specifier = Some(LocalityConfigSpecifier::LocalityWeightedLbConfig(
            LocalityWeightedLbConfig {},
        ));
    }
    let (mesh, port) = start(cluster, &[]).await;
    mesh.ads.set(
        TypeUrl::Endpoint,
        [(
            "backend".to_string(),
            pack(&distributed(HealthStatus::Healthy, ports)),
        )],
    );
    wait_for_endpoints(&mesh, 4).await;
    // /config_dump shows the locality weights and the cluster's setting.
    let (_, dump) = mesh.admin("/config_dump").await;
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    let c = &dump["configs"][2]["dynamic_active_clusters"][0];
    assert_eq!(c["policy"]["locality_weighted_lb_config"], true);
    let eps = &c["endpoints"];
    assert_eq!(eps[0]["locality"], "region1/zone1/a");
    assert_eq!(eps[0]["locality_weight"], 40);
    assert_eq!(eps[2]["locality_weight"], 20);
    // 2,000 requests: zone1 takes 80% and zone2 20%. With p = 0.2 the
    // standard deviation is ~0.9%, so ±4% is a bound of >4 sigma.
    const N: usize = 2000;
    let seen = counts(port, N).await;
    let share = |names: &[&str]| {
        names
            .iter()
            .map(|n| seen.get(*n).copied().unwrap_or(0))
            .sum::<usize>() as f64
            / N as f64
    };
    let zone2 = share(&["z2a", "z2b"]);
    assert!(
        (0.16..=0.24).contains(&zone2),
        "zone2 share {zone2}: {seen:?}"
    );
    // Within a locality the cluster's round robin spreads evenly.
    for n in names {
        assert!(
            seen.get(n).copied().unwrap_or(0) > 0,
            "{n} unused: {seen:?}"
        );
    }
    let (z1a, z1b) = (share(&["z1a"]), share(&["z1b"]));
    assert!((z1a - z1b).abs() <= 0.06, "{seen:?}");

    // Half of zone2 unhealthy: its weight scales by min(1, 1/2 x 1.4) =
    // 0.7, so zone2 gets 14/94 (~14.9%) and only from its healthy endpoint.
    mesh.ads.set(
        TypeUrl::Endpoint,
        [(
            "backend".to_string(),
            pack(&distributed(HealthStatus::Unhealthy, ports)),
        )],
    );
    wait_for_endpoints(&mesh, 3).await;
    let seen = counts(port, N).await;
    assert_eq!(seen.get("z2b"), None, "{seen:?}");
    let zone2 = seen.get("z2a").copied().unwrap_or(0) as f64 / N as f64;
    assert!(
        (0.11..=0.19).contains(&zone2),
        "zone2 share {zone2}: {seen:?}"
    );
}
