//! VHDS form of route configurations: a proxy with `MESHWORK_VHDS` gets
//! each route configuration with only its catch-all virtual host inline and
//! `vhds` over ADS, plus one `VirtualHost` resource per service virtual
//! host named `<route configuration>/<virtual host>`, with exactly the
//! content the inline form carries. Other proxies are unchanged.

mod common;

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{ApiVersion, Node};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, VirtualHost};
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};
use meshwork_translate::{Generated, GenerationCache, ProxyMeta, generate, generate_cached};
use meshwork_xds::{TypeUrl, unpack};

fn route(g: &Generated, name: &str) -> RouteConfiguration {
    unpack(&g.routes[name]).expect("route configuration decodes")
}

/// Both forms for the productpage sidecar of Bookinfo (reviews 80/20).
fn both() -> (Generated, Generated) {
    let (snap, instances) = common::bookinfo();
    let mut proxy = common::sidecar(&instances, "productpage-v1");
    let inline = generate(&snap, &proxy);
    proxy.vhds = true;
    (inline, generate(&snap, &proxy))
}

#[test]
fn inline_proxies_get_no_virtual_host_resources() {
    let (inline, _) = both();
    assert!(inline.virtual_hosts.is_empty());
    assert!(!inline.routes.is_empty());
    for name in inline.routes.keys() {
        let rc = route(&inline, name);
        assert!(rc.vhds.is_none(), "{name}: inline form has no vhds");
        assert!(rc.virtual_hosts.len() > 1, "{name}: services inline");
    }
}

#[test]
fn vhds_form_splits_service_virtual_hosts_out() {
    let (inline, split) = both();
    // Everything but the route tables is the same.
    for t in [TypeUrl::Listener, TypeUrl::Cluster, TypeUrl::Endpoint] {
        assert_eq!(inline.by_type(t), split.by_type(t), "{t}");
    }
    assert_eq!(
        inline.routes.keys().collect::<Vec<_>>(),
        split.routes.keys().collect::<Vec<_>>()
    );
    let mut expected_vhosts = Vec::new();
    for name in inline.routes.keys() {
        let full = route(&inline, name);
        let mut rc = route(&split, name);
        let vhds = rc.vhds.take().expect("vhds set");
        let source = vhds.config_source.expect("config source");
        assert!(matches!(
            source.config_source_specifier,
            Some(ConfigSourceSpecifier::Ads(_))
        ));
        assert_eq!(source.resource_api_version, ApiVersion::V3 as i32);
        let (catch_all, services): (Vec<VirtualHost>, Vec<VirtualHost>) = full
            .virtual_hosts
            .iter()
            .cloned()
            .partition(|vh| vh.name == "allow_any" || vh.name == "block_all");
        assert_eq!(catch_all.len(), 1, "{name}: one catch-all");
        assert_eq!(
            rc.virtual_hosts, catch_all,
            "{name}: only the catch-all inline"
        );
        // Every other field as in the inline form.
        rc.virtual_hosts = full.virtual_hosts.clone();
        assert_eq!(rc, full, "{name}");
        for vh in services {
            let resource = format!("{name}/{}", vh.name);
            let any = split
                .virtual_hosts
                .get(&resource)
                .unwrap_or_else(|| panic!("no VirtualHost {resource}"));
            assert_eq!(any.type_url, TypeUrl::VirtualHost.as_str());
            let got: VirtualHost = unpack(any).expect("virtual host decodes");
            assert_eq!(got, vh, "{resource}: same content as inline");
            expected_vhosts.push(resource);
        }
    }
    expected_vhosts.sort();
    assert_eq!(
        split.virtual_hosts.keys().cloned().collect::<Vec<_>>(),
        expected_vhosts
    );
    assert!(
        expected_vhosts.contains(&"9080/reviews.default.svc.cluster.local:9080".to_string()),
        "{expected_vhosts:?}"
    );
}

/// The generation cache keeps the two forms apart.
#[test]
fn cache_keys_by_vhds() {
    let (snap, instances) = common::bookinfo();
    let inline = common::sidecar(&instances, "productpage-v1");
    let mut vhds = inline.clone();
    vhds.vhds = true;
    let cache = GenerationCache::new();
    for p in [&inline, &vhds, &inline, &vhds] {
        assert_eq!(generate_cached(&snap, p, &cache), generate(&snap, p));
    }
}

fn node(metadata: &[(&str, Kind)]) -> Node {
    Node {
        id: "sidecar~10.1.0.1~productpage-v1-0.default~default.svc.cluster.local".into(),
        metadata: Some(Struct {
            fields: metadata
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        Value {
                            kind: Some(v.clone()),
                        },
                    )
                })
                .collect(),
        }),
        ..Default::default()
    }
}

#[test]
fn node_metadata_asks_for_vhds() {
    let asks = |md: &[(&str, Kind)]| ProxyMeta::from_node(&node(md)).vhds;
    assert!(asks(&[("MESHWORK_VHDS", Kind::StringValue("true".into()))]));
    assert!(asks(&[("MESHWORK_VHDS", Kind::BoolValue(true))]));
    assert!(!asks(&[(
        "MESHWORK_VHDS",
        Kind::StringValue("false".into())
    )]));
    assert!(!asks(&[("MESHWORK_VHDS", Kind::NumberValue(1.0))]));
    assert!(!asks(&[]));
}
