//! The registry's model: services, their ports and their endpoints.

use std::collections::BTreeMap;

use serde::{Serialize, Serializer};

/// A port protocol as Istio names them. Kubernetes ports name it with
/// their `appProtocol` or the prefix of their name; ports that name none are
/// [`Protocol::Unsupported`] and get protocol detection, as in Istio.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Protocol {
    /// `HTTP` (HTTP/1.1).
    Http,
    /// `HTTP2`.
    Http2,
    /// `GRPC`.
    Grpc,
    /// `GRPC-Web`.
    GrpcWeb,
    /// `HTTP_PROXY`.
    HttpProxy,
    /// `HTTPS` (TLS the mesh does not terminate).
    Https,
    /// `TCP`.
    Tcp,
    /// `TLS`.
    Tls,
    /// `UDP` (not proxied).
    Udp,
    /// `Mongo`.
    Mongo,
    /// `Redis`.
    Redis,
    /// `MySQL`.
    Mysql,
    /// No protocol named: detected per connection (`UnsupportedProtocol`).
    Unsupported,
}

impl Protocol {
    /// Istio's name for the protocol.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Http => "HTTP",
            Protocol::Http2 => "HTTP2",
            Protocol::Grpc => "GRPC",
            Protocol::GrpcWeb => "GRPC-Web",
            Protocol::HttpProxy => "HTTP_PROXY",
            Protocol::Https => "HTTPS",
            Protocol::Tcp => "TCP",
            Protocol::Tls => "TLS",
            Protocol::Udp => "UDP",
            Protocol::Mongo => "Mongo",
            Protocol::Redis => "Redis",
            Protocol::Mysql => "MySQL",
            Protocol::Unsupported => "UnsupportedProtocol",
        }
    }

    /// Parses a protocol name, case-insensitively (unknown names are
    /// [`Protocol::Unsupported`]).
    pub fn parse(s: &str) -> Protocol {
        Protocol::from_config(meshwork_config::protocol::Protocol::parse(s))
    }

    /// The protocol of a Kubernetes Service port (`appProtocol`, else the
    /// name's prefix).
    pub fn of_service_port(name: Option<&str>, app: Option<&str>, l4: Option<&str>) -> Protocol {
        meshwork_config::protocol::Protocol::of_service_port(name, app, l4)
            .map(Protocol::from_config)
            .unwrap_or(Protocol::Unsupported)
    }

    fn from_config(p: meshwork_config::protocol::Protocol) -> Protocol {
        use meshwork_config::protocol::Protocol as P;
        match p {
            P::Http => Protocol::Http,
            P::Http2 => Protocol::Http2,
            P::Https => Protocol::Https,
            P::Grpc => Protocol::Grpc,
            P::GrpcWeb => Protocol::GrpcWeb,
            P::HttpProxy => Protocol::HttpProxy,
            P::Tcp => Protocol::Tcp,
            P::Tls => Protocol::Tls,
            P::Udp => Protocol::Udp,
            P::Mongo => Protocol::Mongo,
            P::Redis => Protocol::Redis,
            P::Mysql => Protocol::Mysql,
            P::Unsupported => Protocol::Unsupported,
        }
    }

    /// Whether the proxy terminates HTTP on this port.
    pub fn is_http(self) -> bool {
        matches!(
            self,
            Protocol::Http
                | Protocol::Http2
                | Protocol::Grpc
                | Protocol::GrpcWeb
                | Protocol::HttpProxy
        )
    }

    /// Whether upstream connections speak HTTP/2.
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::Http2 | Protocol::Grpc | Protocol::GrpcWeb)
    }

    /// Whether the protocol is detected per connection.
    pub fn is_unsupported(self) -> bool {
        self == Protocol::Unsupported
    }
}

impl Serialize for Protocol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// The port on the endpoints a service port forwards to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(untagged)]
pub enum TargetPort {
    /// A number.
    Number(u16),
    /// A container port name, resolved per workload.
    Name(String),
}

/// One port of a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Port {
    /// The port's name (may be empty).
    pub name: String,
    /// The service port number.
    pub port: u16,
    /// Its protocol.
    pub protocol: Protocol,
    /// The port on the endpoints.
    pub target_port: TargetPort,
}

/// How clients find a service's endpoints (Istio's resolution modes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Resolution {
    /// The proxy balances over the endpoints the registry lists (EDS).
    ClientSideLb,
    /// The endpoints are hostnames resolved by DNS, every address used.
    DnsLb,
    /// The endpoints are hostnames resolved by DNS, one address at a time.
    DnsRoundRobinLb,
    /// Connections go to the address the client dialled.
    Passthrough,
}

/// Where a service was defined.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind")]
pub enum ServiceOrigin {
    /// A Kubernetes Service.
    Kubernetes,
    /// A ServiceEntry (one service per host).
    ServiceEntry {
        /// The ServiceEntry's name.
        name: String,
    },
}

/// A service of the mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Service {
    /// The fully qualified host name (`reviews.default.svc.cluster.local`,
    /// or a ServiceEntry host as written).
    pub hostname: String,
    /// The namespace of the defining resource.
    pub namespace: String,
    /// The short name (the Service name; the host for ServiceEntries).
    pub name: String,
    /// Ports, in declaration order.
    pub ports: Vec<Port>,
    /// Virtual IPs (or CIDRs for ServiceEntries), if any.
    pub addresses: Vec<String>,
    /// The labels of the workloads it selects (empty: none).
    pub selector: BTreeMap<String, String>,
    /// Whether the service is outside the mesh.
    pub mesh_external: bool,
    /// How clients find its endpoints.
    pub resolution: Resolution,
    /// Namespaces it is visible to (`*` all, `.` its own); empty means all.
    pub export_to: Vec<String>,
    /// The resource that defined it.
    pub origin: ServiceOrigin,
}

impl Service {
    /// The port numbered `port`.
    pub fn port(&self, port: u16) -> Option<&Port> {
        self.ports.iter().find(|p| p.port == port)
    }

    /// Whether a proxy in `namespace` may see this service.
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to.is_empty()
            || self
                .export_to
                .iter()
                .any(|e| e == "*" || e == namespace || (e == "." && self.namespace == namespace))
    }
}

/// One endpoint of a service port.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ServiceEndpoint {
    /// Its address: an IP, or a host name for DNS services.
    pub address: String,
    /// The port to connect to (the target port).
    pub port: u16,
    /// The workload's labels.
    pub labels: BTreeMap<String, String>,
    /// The workload name (Deployment or WorkloadEntry), empty if unknown.
    pub workload: String,
    /// The workload's namespace.
    pub namespace: String,
    /// Its service account.
    pub service_account: String,
    /// Whether it runs a sidecar.
    pub has_sidecar: bool,
    /// Whether it may take traffic.
    pub healthy: bool,
    /// `region/zone/subzone`, empty if unknown.
    pub locality: String,
    /// Relative load-balancing weight (at least 1).
    pub weight: u32,
}

impl ServiceEndpoint {
    /// Whether the endpoint carries every label of `selector`.
    pub fn matches(&self, selector: &BTreeMap<String, String>) -> bool {
        labels_match(selector, &self.labels)
    }
}

/// Whether `labels` carry every key/value of `selector`.
pub(crate) fn labels_match(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}
