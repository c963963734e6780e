//! What one VirtualService change costs a proxy that takes its route table
//! through VHDS: applying one changed VirtualHost to a 1,000-host table
//! (compile, domain checks, the table rebuilt and the snapshot swapped),
//! and the Host lookup in such a table.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use envoy_types::pb::envoy::config::core::v3::{Address, SocketAddress};
use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use envoy_types::pb::envoy::config::route::v3::route::Action;
use envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, Vhds, VirtualHost,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
};
use meshwork_proxy::store::ConfigStore;
use meshwork_xds::client::{DeltaResource, DeltaUpdate, ResourceSink};
use meshwork_xds::{TypeUrl, pack};

const HOSTS: usize = 1000;

/// Istio's shape: a service's FQDN and short names, with and without port.
fn vhost(i: usize, cluster: &str) -> VirtualHost {
    let fqdn = format!("svc-{i}.ns-{}.svc.cluster.local", i % 10);
    let short = format!("svc-{i}");
    let mut domains = Vec::new();
    for d in [fqdn.clone(), short, format!("svc-{i}.ns-{}", i % 10)] {
        domains.push(format!("{d}:8080"));
        domains.push(d);
    }
    VirtualHost {
        name: format!("{fqdn}:8080"),
        domains,
        routes: vec![Route {
            r#match: Some(RouteMatch {
                path_specifier: Some(PathSpecifier::Prefix("/".into())),
                ..Default::default()
            }),
            action: Some(Action::Route(RouteAction {
                cluster_specifier: Some(ClusterSpecifier::Cluster(cluster.into())),
                ..Default::default()
            })),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn resource(i: usize, cluster: &str) -> DeltaResource {
    let vh = vhost(i, cluster);
    DeltaResource {
        name: format!("8080/{}", vh.name),
        version: cluster.to_string(),
        resource: pack(&vh),
    }
}

fn store() -> ConfigStore {
    let store = ConfigStore::new();
    let hcm = HttpConnectionManager {
        stat_prefix: "l".into(),
        route_specifier: Some(RouteSpecifier::Rds(Rds {
            route_config_name: "8080".into(),
            ..Default::default()
        })),
        ..Default::default()
    };
    let listener = Listener {
        name: "0.0.0.0_8080".into(),
        address: Some(Address {
            address: Some(AddressKind::SocketAddress(SocketAddress {
                address: "0.0.0.0".into(),
                ..Default::default()
            })),
        }),
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(ConfigType::TypedConfig(pack(&hcm))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let rc = RouteConfiguration {
        name: "8080".into(),
        vhds: Some(Vhds::default()),
        ..Default::default()
    };
    let delta = |t, r: &[DeltaResource], subscribed: &[String]| {
        let errors = store.apply_delta(
            t,
            DeltaUpdate {
                resources: r,
                removed: &[],
                subscribed,
            },
        );
        assert!(errors.is_empty(), "{errors:?}");
    };
    let named = |name: &str, any| DeltaResource {
        name: name.into(),
        version: "1".into(),
        resource: any,
    };
    delta(
        TypeUrl::Listener,
        &[named("0.0.0.0_8080", pack(&listener))],
        &[],
    );
    delta(TypeUrl::Route, &[named("8080", pack(&rc))], &[]);
    let hosts: Vec<DeltaResource> = (0..HOSTS).map(|i| resource(i, "a")).collect();
    delta(TypeUrl::VirtualHost, &hosts, &["8080".to_string()]);
    store
}

fn bench(c: &mut Criterion) {
    let store = store();
    let changes = [[resource(500, "b")], [resource(500, "a")]];
    let mut n = 0;
    c.bench_function("vhds_apply_one_of_1000", |b| {
        b.iter(|| {
            n += 1;
            let update = DeltaUpdate {
                resources: &changes[n % 2],
                removed: &[],
                subscribed: &[],
            };
            black_box(store.apply_delta(TypeUrl::VirtualHost, update))
        })
    });
    let tables = store.tables().load_full();
    let table = &tables.routes["8080"];
    assert_eq!(table.virtual_hosts.len(), HOSTS);
    c.bench_function("find_vhost_in_1000", |b| {
        b.iter(|| black_box(table.find_vhost(black_box("svc-731.ns-1:8080"))))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
