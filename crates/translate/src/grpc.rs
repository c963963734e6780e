//! Proxyless gRPC clients: for each service port a Listener named
//! `host:port` (one per name a client may dial) holding an ApiListener
//! whose HttpConnectionManager reads RDS `<fqdn>:<port>` over ADS, and that
//! route configuration with one virtual host (gRFC A27).

use std::collections::HashSet;

use envoy_types::pb::envoy::config::listener::v3::{ApiListener, Listener};
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use meshwork_registry::Protocol;
use meshwork_xds::pack;

use crate::Generated;
use crate::meta::ProxyMeta;
use crate::names::grpc_targets;
use crate::pb::{bool_value, hcm_rds};
use crate::route::virtual_host;
use crate::scope::Scope;
use crate::snapshot::MeshSnapshot;

/// Listeners and route configurations for a proxyless client.
pub(crate) fn listeners_and_routes(
    snap: &MeshSnapshot,
    proxy: &ProxyMeta,
    scope: &Scope<'_>,
    out: &mut Generated,
) {
    for svc in &scope.services {
        for port in svc.ports.iter().filter(|p| p.protocol != Protocol::Udp) {
            let rds = format!("{}:{}", svc.hostname, port.port);
            let mut taken = HashSet::new();
            let Some(mut vh) = virtual_host(snap, proxy, svc, port.port, &mut taken) else {
                continue;
            };
            // gRPC clients have no CORS filter (and NACK configs they cannot use).
            for r in &mut vh.routes {
                r.typed_per_filter_config.remove(crate::policy::CORS_FILTER);
            }
            let rc = RouteConfiguration {
                name: rds.clone(),
                virtual_hosts: vec![vh],
                validate_clusters: bool_value(false),
                ..Default::default()
            };
            out.routes.insert(rds.clone(), pack(&rc));
            let hcm = pack(&hcm_rds(&rds, &rds));
            for name in grpc_targets(svc, port.port, &proxy.namespace) {
                let l = Listener {
                    name: name.clone(),
                    api_listener: Some(ApiListener {
                        api_listener: Some(hcm.clone()),
                    }),
                    ..Default::default()
                };
                out.listeners.insert(name, pack(&l));
            }
        }
    }
}
