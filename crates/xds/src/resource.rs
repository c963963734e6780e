//! xDS resource types: their type URLs and `Any` packing.

use envoy_types::pb::google::protobuf::Any;
use prost::{Message, Name};

/// The resource types Meshwork serves, in the order Envoy applies them
/// (clusters before their endpoints, listeners before routes, route
/// configurations before their VHDS virtual hosts).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TypeUrl {
    /// CDS: `envoy.config.cluster.v3.Cluster`.
    Cluster,
    /// EDS: `envoy.config.endpoint.v3.ClusterLoadAssignment`.
    Endpoint,
    /// LDS: `envoy.config.listener.v3.Listener`.
    Listener,
    /// RDS: `envoy.config.route.v3.RouteConfiguration`.
    Route,
    /// VHDS: `envoy.config.route.v3.VirtualHost`, delta xDS only; named
    /// `<route configuration name>/<virtual host name>` and subscribed to
    /// by route configuration name.
    VirtualHost,
}

impl TypeUrl {
    /// Every type, in subscription order.
    pub const ALL: [TypeUrl; 5] = [
        TypeUrl::Cluster,
        TypeUrl::Endpoint,
        TypeUrl::Listener,
        TypeUrl::Route,
        TypeUrl::VirtualHost,
    ];

    /// The full type URL as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "type.googleapis.com/envoy.config.cluster.v3.Cluster",
            TypeUrl::Endpoint => {
                "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
            }
            TypeUrl::Listener => "type.googleapis.com/envoy.config.listener.v3.Listener",
            TypeUrl::Route => "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
            TypeUrl::VirtualHost => "type.googleapis.com/envoy.config.route.v3.VirtualHost",
        }
    }

    /// Parses a wire type URL; `None` for types Meshwork does not serve.
    pub fn parse(url: &str) -> Option<TypeUrl> {
        TypeUrl::ALL.into_iter().find(|t| t.as_str() == url)
    }

    /// The short name `istioctl proxy-status` uses (CDS, EDS, LDS, RDS;
    /// VHDS for virtual hosts).
    pub fn short_name(self) -> &'static str {
        match self {
            TypeUrl::Cluster => "CDS",
            TypeUrl::Endpoint => "EDS",
            TypeUrl::Listener => "LDS",
            TypeUrl::Route => "RDS",
            TypeUrl::VirtualHost => "VHDS",
        }
    }

    /// Whether an empty subscription means "everything" (state of the world
    /// wildcard), as for listeners and clusters.
    pub fn is_wildcard_by_default(self) -> bool {
        matches!(self, TypeUrl::Cluster | TypeUrl::Listener)
    }
}

impl std::fmt::Display for TypeUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.short_name())
    }
}

/// Packs a message into an `Any` with its canonical type URL.
pub fn pack<T: Message + Name>(msg: &T) -> Any {
    Any {
        type_url: T::type_url(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks an `Any`, checking its type URL first.
pub fn unpack<T: Message + Name + Default>(any: &Any) -> Result<T, String> {
    let want = T::full_name();
    let got = any.type_url.rsplit('/').next().unwrap_or_default();
    if got != want {
        return Err(format!("expected {want}, got {}", any.type_url));
    }
    T::decode(any.value.as_slice()).map_err(|e| format!("cannot decode {want}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::cluster::v3::Cluster;
    use envoy_types::pb::envoy::config::listener::v3::Listener;

    #[test]
    fn type_urls_match_prost_names() {
        assert_eq!(TypeUrl::Cluster.as_str(), Cluster::type_url());
        assert_eq!(TypeUrl::Listener.as_str(), Listener::type_url());
        for t in TypeUrl::ALL {
            assert_eq!(TypeUrl::parse(t.as_str()), Some(t));
        }
    }

    #[test]
    fn unpack_checks_type_and_bytes() {
        let c = Cluster {
            name: "a".into(),
            ..Default::default()
        };
        let any = pack(&c);
        assert_eq!(unpack::<Cluster>(&any).unwrap().name, "a");
        assert!(unpack::<Listener>(&any).is_err());
        let garbage = Any {
            type_url: Cluster::type_url(),
            value: vec![0xff, 0xff, 0xff],
        };
        assert!(unpack::<Cluster>(&garbage).is_err());
    }
}
