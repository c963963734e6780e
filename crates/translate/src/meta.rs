//! Who is asking: a proxy's identity from its xDS `Node`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Struct, Value};

/// What kind of xDS client a proxy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProxyKind {
    /// A sidecar proxy (Meshwork's or Envoy).
    Sidecar,
    /// A proxyless gRPC client (its bootstrap says `GENERATOR: grpc`).
    Proxyless,
}

/// A proxy's identity and the workload it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProxyMeta {
    /// The node id as sent (`sidecar~10.1.2.3~pod.ns~ns.svc.cluster.local`).
    pub node_id: String,
    /// Sidecar or proxyless client.
    pub kind: ProxyKind,
    /// The workload instance's address, if known.
    pub ip: Option<IpAddr>,
    /// The workload's namespace.
    pub namespace: String,
    /// The workload's name (the Deployment).
    pub workload: String,
    /// The workload's labels.
    pub labels: BTreeMap<String, String>,
    /// The workload's service account.
    pub service_account: String,
    /// `region/zone/subzone` (the node's locality, else its topology
    /// labels); empty when unknown. Locality failover orders endpoints by it.
    pub locality: String,
    /// Whether the proxy takes its route tables' virtual hosts through
    /// VHDS (node metadata `MESHWORK_VHDS: "true"`, sent by Meshwork's
    /// sidecar over delta xDS); others get Istio's inline route tables.
    pub vhds: bool,
}

fn string(v: &Value) -> Option<&str> {
    match v.kind.as_ref()? {
        Kind::StringValue(s) => Some(s),
        _ => None,
    }
}

fn field<'a>(md: Option<&'a Struct>, key: &str) -> Option<&'a str> {
    md?.fields
        .get(key)
        .and_then(string)
        .filter(|s| !s.is_empty())
}

/// A boolean metadata entry: the string `"true"` (as Istio's node
/// metadata carries booleans) or a protobuf bool.
fn flag(md: Option<&Struct>, key: &str) -> bool {
    match md
        .and_then(|m| m.fields.get(key))
        .and_then(|v| v.kind.as_ref())
    {
        Some(Kind::StringValue(s)) => s.eq_ignore_ascii_case("true"),
        Some(Kind::BoolValue(b)) => *b,
        _ => false,
    }
}

impl ProxyMeta {
    /// Reads a node as Istio's proxies and gRPC bootstraps send it: the id
    /// `type~ip~pod.namespace~namespace.svc.cluster.local` and the metadata
    /// keys `NAMESPACE`, `WORKLOAD_NAME`, `SERVICE_ACCOUNT`, `LABELS`
    /// (a struct) and `GENERATOR` (`grpc` for proxyless clients). Missing or
    /// malformed parts fall back to what the id says, then to defaults.
    pub fn from_node(node: &Node) -> ProxyMeta {
        let md = node.metadata.as_ref();
        let parts: Vec<&str> = node.id.split('~').collect();
        let ip = parts.get(1).and_then(|ip| ip.parse().ok());
        let (pod, pod_ns) = parts
            .get(2)
            .map(|id| match id.split_once('.') {
                Some((pod, ns)) => (pod, Some(ns)),
                None => (*id, None),
            })
            .unwrap_or(("", None));
        let domain_ns = parts.get(3).and_then(|d| d.split('.').next());
        let namespace = field(md, "NAMESPACE")
            .or(pod_ns)
            .or(domain_ns)
            .filter(|s| !s.is_empty())
            .unwrap_or("default")
            .to_string();
        let labels = md
            .and_then(|m| m.fields.get("LABELS"))
            .and_then(|v| match v.kind.as_ref() {
                Some(Kind::StructValue(s)) => Some(s),
                _ => None,
            })
            .map(|s| {
                s.fields
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), string(v)?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        let generator = field(md, "GENERATOR");
        ProxyMeta {
            node_id: node.id.clone(),
            kind: if generator == Some("grpc") || parts.first() == Some(&"proxyless") {
                ProxyKind::Proxyless
            } else {
                ProxyKind::Sidecar
            },
            ip,
            namespace,
            workload: field(md, "WORKLOAD_NAME").unwrap_or(pod).to_string(),
            labels,
            service_account: field(md, "SERVICE_ACCOUNT")
                .unwrap_or("default")
                .to_string(),
            locality: String::new(),
            vhds: flag(md, "MESHWORK_VHDS"),
        }
        .with_locality(node)
    }

    /// Fills `locality` from `node.locality`, else from the topology labels
    /// Istio reads (`topology.kubernetes.io/region`, `…/zone`,
    /// `topology.istio.io/subzone`) or the `istio-locality` label
    /// (`region.zone.subzone`).
    fn with_locality(mut self, node: &Node) -> Self {
        let from_node = node
            .locality
            .as_ref()
            .map(|l| format!("{}/{}/{}", l.region, l.zone, l.sub_zone))
            .filter(|l| l != "//");
        let label = |k: &str| self.labels.get(k).cloned().unwrap_or_default();
        let from_labels = {
            let l = format!(
                "{}/{}/{}",
                label("topology.kubernetes.io/region"),
                label("topology.kubernetes.io/zone"),
                label("topology.istio.io/subzone")
            );
            (l != "//").then_some(l)
        };
        let from_istio = self
            .labels
            .get("istio-locality")
            .map(|l| l.replace('.', "/"));
        self.locality = from_node.or(from_labels).or(from_istio).unwrap_or_default();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value {
        Value {
            kind: Some(Kind::StringValue(v.into())),
        }
    }

    #[test]
    fn istio_node() {
        let labels = Struct {
            fields: [("app".to_string(), s("reviews"))].into_iter().collect(),
        };
        let md = Struct {
            fields: [
                ("NAMESPACE".to_string(), s("shop")),
                ("WORKLOAD_NAME".to_string(), s("reviews-v1")),
                ("SERVICE_ACCOUNT".to_string(), s("bookinfo-reviews")),
                (
                    "LABELS".to_string(),
                    Value {
                        kind: Some(Kind::StructValue(labels)),
                    },
                ),
            ]
            .into_iter()
            .collect(),
        };
        let node = Node {
            id: "sidecar~10.1.2.3~reviews-v1-0.shop~shop.svc.cluster.local".into(),
            metadata: Some(md),
            ..Default::default()
        };
        let m = ProxyMeta::from_node(&node);
        assert_eq!(m.kind, ProxyKind::Sidecar);
        assert_eq!(m.ip, Some("10.1.2.3".parse().unwrap()));
        assert_eq!(
            (m.namespace.as_str(), m.workload.as_str()),
            ("shop", "reviews-v1")
        );
        assert_eq!(m.labels["app"], "reviews");
        assert_eq!(m.service_account, "bookinfo-reviews");
    }

    #[test]
    fn grpc_node_and_garbage() {
        let node = Node {
            id: "sidecar~10.0.0.9~client.apps~apps.svc.cluster.local".into(),
            metadata: Some(Struct {
                fields: [("GENERATOR".to_string(), s("grpc"))].into_iter().collect(),
            }),
            ..Default::default()
        };
        let m = ProxyMeta::from_node(&node);
        assert_eq!(m.kind, ProxyKind::Proxyless);
        assert_eq!(
            (m.namespace.as_str(), m.workload.as_str()),
            ("apps", "client")
        );
        let m = ProxyMeta::from_node(&Node {
            id: "~~~".into(),
            ..Default::default()
        });
        assert_eq!((m.namespace.as_str(), m.ip), ("default", None));
    }
}
