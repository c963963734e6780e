//! A loaded resource: its kind, metadata, typed spec, and where it came from.

use std::fmt;
use std::path::PathBuf;

use crate::diag::{Code, Diagnostic, ResourceRef};
use crate::model::istio;
use crate::model::k8s;
use crate::model::meta::ObjectMeta;
use crate::node::{FieldPath, Node};

/// Every kind Meshwork reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// networking.istio.io VirtualService.
    VirtualService,
    /// networking.istio.io DestinationRule.
    DestinationRule,
    /// networking.istio.io Gateway.
    Gateway,
    /// networking.istio.io ServiceEntry.
    ServiceEntry,
    /// networking.istio.io WorkloadEntry.
    WorkloadEntry,
    /// networking.istio.io WorkloadGroup.
    WorkloadGroup,
    /// networking.istio.io Sidecar.
    Sidecar,
    /// networking.istio.io ProxyConfig.
    ProxyConfig,
    /// security.istio.io PeerAuthentication.
    PeerAuthentication,
    /// security.istio.io RequestAuthentication.
    RequestAuthentication,
    /// security.istio.io AuthorizationPolicy.
    AuthorizationPolicy,
    /// telemetry.istio.io Telemetry.
    Telemetry,
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Service.
    Service,
    /// core/v1 ServiceAccount.
    ServiceAccount,
    /// apps/v1 Deployment.
    Deployment,
}

impl Kind {
    /// All kinds.
    pub const ALL: [Kind; 16] = [
        Kind::VirtualService,
        Kind::DestinationRule,
        Kind::Gateway,
        Kind::ServiceEntry,
        Kind::WorkloadEntry,
        Kind::WorkloadGroup,
        Kind::Sidecar,
        Kind::ProxyConfig,
        Kind::PeerAuthentication,
        Kind::RequestAuthentication,
        Kind::AuthorizationPolicy,
        Kind::Telemetry,
        Kind::Namespace,
        Kind::Service,
        Kind::ServiceAccount,
        Kind::Deployment,
    ];

    /// The kind's name as manifests spell it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::VirtualService => "VirtualService",
            Kind::DestinationRule => "DestinationRule",
            Kind::Gateway => "Gateway",
            Kind::ServiceEntry => "ServiceEntry",
            Kind::WorkloadEntry => "WorkloadEntry",
            Kind::WorkloadGroup => "WorkloadGroup",
            Kind::Sidecar => "Sidecar",
            Kind::ProxyConfig => "ProxyConfig",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::RequestAuthentication => "RequestAuthentication",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::Telemetry => "Telemetry",
            Kind::Namespace => "Namespace",
            Kind::Service => "Service",
            Kind::ServiceAccount => "ServiceAccount",
            Kind::Deployment => "Deployment",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// The API group (`""` for core).
    pub fn group(self) -> &'static str {
        match self {
            Kind::PeerAuthentication | Kind::RequestAuthentication | Kind::AuthorizationPolicy => {
                "security.istio.io"
            }
            Kind::Telemetry => "telemetry.istio.io",
            Kind::Namespace | Kind::Service | Kind::ServiceAccount => "",
            Kind::Deployment => "apps",
            _ => "networking.istio.io",
        }
    }

    /// Whether this is an Istio kind (validated against Istio's schema).
    pub fn is_istio(self) -> bool {
        self.group().ends_with("istio.io")
    }

    /// Whether objects of this kind live outside namespaces.
    pub fn cluster_scoped(self) -> bool {
        self == Kind::Namespace
    }

    /// Whether `api_version` (`group/version`, or `v1` for core) serves this kind.
    pub fn accepts(self, api_version: &str) -> bool {
        match self {
            Kind::Namespace | Kind::Service | Kind::ServiceAccount => api_version == "v1",
            Kind::Deployment => api_version == "apps/v1",
            _ => crate::schema::schemas()
                .get(api_version, self.name())
                .is_some(),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The typed spec of a resource.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum Spec {
    VirtualService(Box<istio::VirtualService>),
    DestinationRule(Box<istio::DestinationRule>),
    Gateway(Box<istio::Gateway>),
    ServiceEntry(Box<istio::ServiceEntry>),
    WorkloadEntry(Box<istio::WorkloadEntry>),
    WorkloadGroup(Box<istio::WorkloadGroup>),
    Sidecar(Box<istio::Sidecar>),
    ProxyConfig(Box<istio::ProxyConfig>),
    PeerAuthentication(Box<istio::PeerAuthentication>),
    RequestAuthentication(Box<istio::RequestAuthentication>),
    AuthorizationPolicy(Box<istio::AuthorizationPolicy>),
    Telemetry(Box<istio::Telemetry>),
    Namespace(k8s::NamespaceSpec),
    Service(Box<k8s::ServiceSpec>),
    ServiceAccount(k8s::ServiceAccountSpec),
    Deployment(Box<k8s::DeploymentSpec>),
}

/// One resource, loaded from a document.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// `apiVersion` as written.
    pub api_version: String,
    /// The kind.
    pub kind: Kind,
    /// Metadata.
    pub meta: ObjectMeta,
    /// The typed spec.
    pub spec: Spec,
    /// The file it came from (`-` for stdin).
    pub file: PathBuf,
    /// 1-based line where the document starts.
    pub line: u32,
    /// The document as parsed, for mapping field paths to lines.
    pub node: Node,
}

impl Resource {
    /// The namespace, `default` when the manifest names none (and empty for
    /// cluster-scoped kinds).
    pub fn namespace(&self) -> &str {
        if self.kind.cluster_scoped() {
            return "";
        }
        match self.meta.namespace.as_deref() {
            Some(ns) if !ns.is_empty() => ns,
            _ => "default",
        }
    }

    /// The name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }

    /// `Kind namespace/name`.
    pub fn reference(&self) -> ResourceRef {
        ResourceRef {
            kind: self.kind.name().to_string(),
            namespace: self.namespace().to_string(),
            name: self.meta.name.clone(),
        }
    }

    /// The line of the field at `path` (or of its nearest existing parent).
    pub fn line_of(&self, path: &FieldPath) -> u32 {
        self.node.line_of(path)
    }

    /// A finding about this resource, at field `path`.
    pub fn diag(&self, code: Code, path: &FieldPath, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(code, message)
            .at(self.file.clone(), self.line_of(path))
            .on(self.reference())
            .field(path.to_string())
    }
}
