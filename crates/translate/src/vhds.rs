//! VHDS (virtual host discovery) for proxies that ask for it: a route
//! configuration is sent without its service virtual hosts, and each of
//! them becomes its own delta-xDS `VirtualHost` resource, so that one
//! changed VirtualService sends one virtual host instead of the whole
//! route table.
//!
//! The split form keeps the route configuration's Istio name and every
//! other field, keeps only the catch-all virtual host (`allow_any` or
//! `block_all`) inline and adds `vhds: {config_source: {ads: {}},
//! resource_api_version: V3}`. The service virtual hosts are named
//! `<route configuration>/<virtual host>` (as Envoy names VHDS resources)
//! and carry exactly what the inline form carried. Proxies without
//! `MESHWORK_VHDS` get the inline form, unchanged.

use envoy_types::pb::envoy::config::core::v3::config_source::ConfigSourceSpecifier;
use envoy_types::pb::envoy::config::core::v3::{AggregatedConfigSource, ApiVersion, ConfigSource};
use envoy_types::pb::envoy::config::route::v3::{RouteConfiguration, Vhds};
use meshwork_xds::pack;

use crate::Generated;

/// Names of Istio's catch-all virtual hosts, which stay inline.
const CATCH_ALL: [&str; 2] = ["allow_any", "block_all"];

/// The VHDS resource name of virtual host `vhost` of route configuration
/// `route_config`.
pub(crate) fn resource_name(route_config: &str, vhost: &str) -> String {
    format!("{route_config}/{vhost}")
}

/// Adds the route configuration `rc` to `out`: inline, or split into the
/// VHDS form and its virtual host resources when `vhds` is asked for.
pub(crate) fn emit(mut rc: RouteConfiguration, vhds: bool, out: &mut Generated) {
    if vhds {
        let (inline, split): (Vec<_>, Vec<_>) = std::mem::take(&mut rc.virtual_hosts)
            .into_iter()
            .partition(|vh| CATCH_ALL.contains(&vh.name.as_str()));
        for vh in split {
            out.virtual_hosts
                .insert(resource_name(&rc.name, &vh.name), pack(&vh));
        }
        rc.virtual_hosts = inline;
        rc.vhds = Some(Vhds {
            config_source: Some(ConfigSource {
                config_source_specifier: Some(ConfigSourceSpecifier::Ads(
                    AggregatedConfigSource {},
                )),
                resource_api_version: ApiVersion::V3 as i32,
                ..Default::default()
            }),
        });
    }
    out.routes.insert(rc.name.clone(), pack(&rc));
}
