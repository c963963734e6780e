//! Meshwork's translation from Istio configuration and the service registry
//! to xDS resources, with Istio's names: for sidecar proxies (outbound port
//! listeners, `virtualOutbound`, `virtualInbound`, `outbound|port|subset|host`
//! and `inbound|port||` clusters, route configurations per port) and for
//! proxyless gRPC clients (a `host:port` listener with an ApiListener, plus
//! RDS, CDS and EDS).
//!
//! Everything here is a pure function of a [`MeshSnapshot`] and a
//! [`ProxyMeta`]: no I/O, no clocks, deterministic output.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod cluster;
mod grpc;
mod listener;
mod meta;
mod names;
mod pb;
mod route;
mod scope;
mod snapshot;
mod vs;

use std::collections::BTreeMap;

use envoy_types::pb::google::protobuf::Any;
use meshwork_xds::TypeUrl;

pub use meta::{ProxyKind, ProxyMeta};
pub use snapshot::MeshSnapshot;

/// The xDS resources generated for one proxy, keyed by resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Generated {
    /// Listeners (LDS) by name.
    pub listeners: BTreeMap<String, Any>,
    /// Route configurations (RDS) by name.
    pub routes: BTreeMap<String, Any>,
    /// Clusters (CDS) by name.
    pub clusters: BTreeMap<String, Any>,
    /// Cluster load assignments (EDS) by `cluster_name`.
    pub endpoints: BTreeMap<String, Any>,
}

impl Generated {
    /// The resources of one type.
    pub fn by_type(&self, t: TypeUrl) -> &BTreeMap<String, Any> {
        match t {
            TypeUrl::Listener => &self.listeners,
            TypeUrl::Route => &self.routes,
            TypeUrl::Cluster => &self.clusters,
            TypeUrl::Endpoint => &self.endpoints,
        }
    }
}

/// Generates every xDS resource `proxy` should receive from `snapshot`.
pub fn generate(snapshot: &MeshSnapshot, proxy: &ProxyMeta) -> Generated {
    let scope = scope::Scope::for_proxy(snapshot, proxy);
    let mut out = Generated::default();
    match proxy.kind {
        ProxyKind::Sidecar => {
            cluster::outbound(snapshot, proxy, &scope, false, &mut out);
            cluster::inbound(snapshot, proxy, &mut out);
            listener::sidecar(snapshot, proxy, &scope, &mut out);
            route::outbound(snapshot, proxy, &scope, &mut out);
        }
        ProxyKind::Proxyless => {
            cluster::outbound(snapshot, proxy, &scope, true, &mut out);
            grpc::listeners_and_routes(snapshot, proxy, &scope, &mut out);
        }
    }
    out
}
