//! The registry over Bookinfo, ServiceEntries, WorkloadEntries and hostile input.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use meshwork_registry::{
    Platform, Protocol, Registry, Resolution, StaticPlatform, TargetPort,
    instances_from_deployments,
};

const BOOKINFO: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/istio/bookinfo/bookinfo.yaml"
);

fn load(text: &str) -> Vec<meshwork_config::Resource> {
    let loaded = meshwork_config::load_str("test.yaml".as_ref(), text);
    assert!(
        loaded
            .diagnostics
            .iter()
            .all(|d| d.level != meshwork_config::Level::Error),
        "{:#?}",
        loaded.diagnostics
    );
    loaded.resources
}

#[test]
fn bookinfo_services_and_endpoints() {
    let loaded = meshwork_config::load_paths(&[PathBuf::from(BOOKINFO)]);
    let platform = StaticPlatform::new(instances_from_deployments(
        &loaded.resources,
        Ipv4Addr::new(10, 1, 0, 1),
    ));
    let reg = Registry::build(&loaded.resources, &platform.instances());
    let hosts: Vec<&str> = reg.services().map(|s| s.hostname.as_str()).collect();
    assert_eq!(
        hosts,
        [
            "details.default.svc.cluster.local",
            "productpage.default.svc.cluster.local",
            "ratings.default.svc.cluster.local",
            "reviews.default.svc.cluster.local",
        ]
    );
    let reviews = reg.service("reviews.default.svc.cluster.local").unwrap();
    assert_eq!(reviews.ports[0].protocol, Protocol::Http);
    assert_eq!(reviews.resolution, Resolution::ClientSideLb);
    let eps = reg.endpoints("reviews.default.svc.cluster.local", 9080);
    assert_eq!(eps.len(), 3);
    let mut versions: Vec<&str> = eps.iter().map(|e| e.labels["version"].as_str()).collect();
    versions.sort();
    assert_eq!(versions, ["v1", "v2", "v3"]);
    assert!(
        eps.iter()
            .all(|e| e.service_account == "bookinfo-reviews" && e.port == 9080)
    );
    assert!(
        reg.endpoints("reviews.default.svc.cluster.local", 1)
            .is_empty()
    );
    assert!(reg.warnings().is_empty(), "{:?}", reg.warnings());
    let json = reg.to_json();
    assert_eq!(json["services"].as_array().unwrap().len(), 4);
    assert_eq!(
        json["services"][3]["service"]["ports"][0]["protocol"],
        "HTTP"
    );
}

#[test]
fn named_target_ports_resolve_per_workload() {
    let res = load(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {app: web}\n  ports: [{name: grpc-api, port: 80, targetPort: api}, {name: web, port: 81}]\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: x, ports: [{name: api, containerPort: 8443}]}]\n",
    );
    let inst = instances_from_deployments(&res, Ipv4Addr::new(10, 2, 0, 1));
    let reg = Registry::build(&res, &inst);
    let svc = reg.service("web.shop.svc.cluster.local").unwrap();
    assert_eq!(svc.ports[0].target_port, TargetPort::Name("api".into()));
    assert_eq!(svc.ports[0].protocol, Protocol::Grpc);
    assert_eq!(svc.ports[1].protocol, Protocol::Unsupported);
    assert_eq!(reg.endpoints(&svc.hostname, 80)[0].port, 8443);
    assert_eq!(reg.endpoints(&svc.hostname, 81)[0].port, 81);
}

#[test]
fn service_entries_with_inline_selected_and_dns_endpoints() {
    let res = load(concat!(
        "apiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: db, namespace: data}\n",
        "spec:\n  hosts: [db.internal]\n  addresses: [240.0.0.5]\n  location: MESH_INTERNAL\n  resolution: STATIC\n",
        "  ports: [{name: tcp, number: 5432, protocol: TCP}]\n",
        "  endpoints: [{address: 10.9.0.1, labels: {role: primary}}, {address: 10.9.0.2, ports: {tcp: 6432}}]\n",
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: vm, namespace: data}\n",
        "spec:\n  hosts: [vm.internal]\n  location: MESH_INTERNAL\n  resolution: STATIC\n",
        "  ports: [{name: http, number: 80, protocol: HTTP, targetPort: 8080}]\n  workloadSelector: {labels: {app: vm}}\n",
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-1, namespace: data}\n",
        "spec: {address: 10.9.1.1, labels: {app: vm}, serviceAccount: vm-sa, locality: eu/west/a}\n",
        "---\napiVersion: networking.istio.io/v1\nkind: WorkloadEntry\nmetadata: {name: vm-other, namespace: other}\n",
        "spec: {address: 10.9.1.2, labels: {app: vm}}\n",
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: google}\n",
        "spec:\n  hosts: [www.google.com]\n  resolution: DNS\n  ports: [{name: https, number: 443, protocol: HTTPS}]\n",
    ));
    let reg = Registry::build(&res, &[]);
    let db = reg.service("db.internal").unwrap();
    assert!(!db.mesh_external);
    assert_eq!(db.addresses, ["240.0.0.5"]);
    let ports: Vec<(String, u16)> = reg
        .endpoints("db.internal", 5432)
        .iter()
        .map(|e| (e.address.clone(), e.port))
        .collect();
    assert_eq!(
        ports,
        [("10.9.0.1".into(), 5432), ("10.9.0.2".into(), 6432)]
    );
    let vm = reg.endpoints("vm.internal", 80);
    assert_eq!(vm.len(), 1, "only WorkloadEntries of the same namespace");
    assert_eq!((vm[0].port, vm[0].workload.as_str()), (8080, "vm-1"));
    assert_eq!(vm[0].locality, "eu/west/a");
    let google = reg.service("www.google.com").unwrap();
    assert!(google.mesh_external);
    assert_eq!(google.resolution, Resolution::DnsLb);
    assert_eq!(
        reg.endpoints("www.google.com", 443)[0].address,
        "www.google.com"
    );
}

#[test]
fn workload_group_with_address_is_an_entry() {
    let res = load(concat!(
        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {name: legacy}\n",
        "spec:\n  metadata: {labels: {app: legacy}}\n  template: {address: 10.7.0.1, serviceAccount: legacy}\n",
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: legacy}\nspec:\n  selector: {app: legacy}\n  ports: [{name: tcp, port: 7000}]\n",
    ));
    let reg = Registry::build(&res, &[]);
    let eps = reg.endpoints("legacy.default.svc.cluster.local", 7000);
    assert_eq!(eps.len(), 1);
    assert_eq!(
        (eps[0].address.as_str(), eps[0].workload.as_str()),
        ("10.7.0.1", "legacy")
    );
}

#[test]
fn duplicate_hosts_and_bad_input_are_reported_not_fatal() {
    let res = load(concat!(
        "apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec:\n  clusterIP: None\n  ports: [{name: http, port: 80}]\n",
        "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: dup}\n",
        "spec:\n  hosts: [a.default.svc.cluster.local]\n  resolution: STATIC\n  ports: [{name: http, number: 80, protocol: HTTP}]\n",
    ));
    let reg = Registry::build(&res, &[]);
    assert_eq!(reg.services().count(), 1);
    assert_eq!(
        reg.service("a.default.svc.cluster.local")
            .unwrap()
            .resolution,
        Resolution::Passthrough
    );
    assert_eq!(reg.warnings().len(), 1, "{:?}", reg.warnings());
    // Nothing at all, and instances without services, are fine too.
    assert_eq!(Registry::build(&[], &[]).services().count(), 0);
}
