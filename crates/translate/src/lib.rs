//! Meshwork's translation from Istio configuration and the service registry
//! to xDS resources, with Istio's names: for sidecar proxies (outbound port
//! listeners, `virtualOutbound`, `virtualInbound`, `outbound|port|subset|host`
//! and `inbound|port||` clusters, route configurations per port) and for
//! proxyless gRPC clients (a `host:port` listener with an ApiListener, plus
//! RDS, CDS and EDS).
//!
//! Everything here is a pure function of a [`MeshSnapshot`] and a
//! [`ProxyMeta`]: no I/O, no clocks, deterministic output. [`generate`]
//! computes one proxy's resources from scratch; [`generate_cached`] returns
//! the same, sharing work between the proxies of a snapshot through a
//! [`GenerationCache`].
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod authn;
mod cache;
mod change;
mod cluster;
mod delegate;
mod dr;
mod dr_warnings;
mod grpc;
mod listener;
mod meta;
mod names;
mod pb;
mod policy;
mod resources;
mod route;
mod scope;
mod sidecar_listeners;
mod snapshot;
mod tcp_route;
mod tls;
mod vhds;
mod vs;
mod warnings;

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::google::protobuf::Any;
use meshwork_xds::TypeUrl;

pub use cache::{GenerationCache, generate_cached};
pub use meta::{ProxyKind, ProxyMeta};
pub use resources::Resources;
pub use snapshot::MeshSnapshot;
pub use warnings::{Warning, warnings};

/// The xDS resources generated for one proxy, keyed by resource name.
/// Each map is shared ([`Resources`]), so cloning is cheap.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// Listeners (LDS) by name.
    pub listeners: Resources,
    /// Route configurations (RDS) by name.
    pub routes: Resources,
    /// Clusters (CDS) by name.
    pub clusters: Resources,
    /// Cluster load assignments (EDS) by `cluster_name`.
    pub endpoints: Resources,
    /// VHDS virtual hosts by `<route configuration>/<virtual host>`; only
    /// for proxies that ask for VHDS (`MESHWORK_VHDS`), else empty.
    pub virtual_hosts: Resources,
}

impl Generated {
    /// The resources of one type.
    pub fn by_type(&self, t: TypeUrl) -> &BTreeMap<String, Arc<Any>> {
        self.resources(t)
    }

    /// The resources of one type, as their shared map.
    pub fn resources(&self, t: TypeUrl) -> &Resources {
        match t {
            TypeUrl::Listener => &self.listeners,
            TypeUrl::Route => &self.routes,
            TypeUrl::Cluster => &self.clusters,
            TypeUrl::Endpoint => &self.endpoints,
            TypeUrl::VirtualHost => &self.virtual_hosts,
        }
    }
}

/// Generates every xDS resource `proxy` should receive from `snapshot`.
pub fn generate(snapshot: &MeshSnapshot, proxy: &ProxyMeta) -> Generated {
    let scope = scope::Scope::for_proxy(snapshot, proxy);
    let mut out = Generated::default();
    match proxy.kind {
        ProxyKind::Sidecar => {
            let ports = cluster::inbound_ports(snapshot, proxy);
            cluster::outbound(snapshot, proxy, &scope, false, None, &mut out);
            cluster::inbound(proxy, &ports, &mut out);
            listener::outbound(snapshot, proxy, &scope, &mut out);
            let mtls = authn::inbound_mtls(snapshot, proxy);
            listener::inbound(&ports, &mtls, &mut out);
            sidecar_listeners::ingress(snapshot, proxy, &mtls, &mut out);
            route::outbound(snapshot, proxy, &scope, &mut out);
        }
        ProxyKind::Proxyless => {
            cluster::outbound(snapshot, proxy, &scope, true, None, &mut out);
            grpc::listeners_and_routes(snapshot, proxy, &scope, &mut out);
        }
    }
    out
}
