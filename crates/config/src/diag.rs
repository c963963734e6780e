//! Findings: what loading, validation and analysis report to the user.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// How serious a finding is, as `istioctl analyze` grades them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    /// Informational: nothing is wrong yet.
    Info,
    /// Probably a mistake, but the configuration applies.
    Warning,
    /// The configuration is wrong; the resource is rejected or broken.
    Error,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Info => "Info",
            Level::Warning => "Warning",
            Level::Error => "Error",
        })
    }
}

/// A message type: Istio's code where one exists, `MW` codes for our own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Code {
    /// The code, e.g. `IST0101`.
    pub id: &'static str,
    /// The message name, e.g. `ReferencedResourceNotFound`.
    pub name: &'static str,
    /// The level findings of this type have.
    pub level: Level,
}

/// The message types Meshwork reports.
pub mod codes {
    use super::{Code, Level};

    /// A document that is not valid YAML/JSON or not a Kubernetes object.
    pub const PARSE_ERROR: Code = Code {
        id: "MW0001",
        name: "ParseError",
        level: Level::Error,
    };
    /// A kind Meshwork does not read; the document is skipped.
    pub const UNSUPPORTED_KIND: Code = Code {
        id: "MW0002",
        name: "UnsupportedKind",
        level: Level::Info,
    };
    /// A file or directory could not be read.
    pub const READ_ERROR: Code = Code {
        id: "MW0003",
        name: "ReadError",
        level: Level::Error,
    };
    /// A referenced resource does not exist (Istio's IST0101).
    pub const REFERENCED_RESOURCE_NOT_FOUND: Code = Code {
        id: "IST0101",
        name: "ReferencedResourceNotFound",
        level: Level::Error,
    };
    /// The resource breaks the schema or Istio's validation (IST0106).
    pub const SCHEMA_VALIDATION_ERROR: Code = Code {
        id: "IST0106",
        name: "SchemaValidationError",
        level: Level::Error,
    };
    /// Two VirtualServices bound to the mesh gateway define the same host (IST0109).
    pub const CONFLICTING_MESH_GATEWAY_VS_HOSTS: Code = Code {
        id: "IST0109",
        name: "ConflictingMeshGatewayVirtualServiceHosts",
        level: Level::Error,
    };
    /// A DestinationRule and a PeerAuthentication disagree on mTLS (IST0113).
    pub const MTLS_POLICY_CONFLICT: Code = Code {
        id: "IST0113",
        name: "MTLSPolicyConflict",
        level: Level::Error,
    };
    /// A Service port whose name and protocol say nothing (IST0118).
    pub const PORT_NAME_NOT_UNDER_NAMING_CONVENTION: Code = Code {
        id: "IST0118",
        name: "PortNameIsNotUnderNamingConvention",
        level: Level::Info,
    };
    /// No workload matches the resource's labels (IST0127).
    pub const NO_MATCHING_WORKLOADS_FOUND: Code = Code {
        id: "IST0127",
        name: "NoMatchingWorkloadsFound",
        level: Level::Warning,
    };
    /// A VirtualService host that its Gateway does not serve (IST0132).
    pub const VS_HOST_NOT_FOUND_IN_GATEWAY: Code = Code {
        id: "IST0132",
        name: "VirtualServiceHostNotFoundInGateway",
        level: Level::Warning,
    };
    /// A field we read but do not act on, or do not know (IST0133).
    pub const SCHEMA_WARNING: Code = Code {
        id: "IST0133",
        name: "SchemaWarning",
        level: Level::Warning,
    };
    /// Gateways with the same selector, port and host (IST0145).
    pub const CONFLICTING_GATEWAYS: Code = Code {
        id: "IST0145",
        name: "ConflictingGateways",
        level: Level::Error,
    };
}

/// `Kind namespace/name` of the resource a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct ResourceRef {
    /// The kind, e.g. `VirtualService`.
    pub kind: String,
    /// The namespace (`default` when the manifest does not say).
    pub namespace: String,
    /// The name.
    pub name: String,
}

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Diagnostic {
    /// Error, Warning or Info.
    pub level: Level,
    /// The message code, e.g. `IST0101`.
    pub code: &'static str,
    /// The message name, e.g. `ReferencedResourceNotFound`.
    pub name: &'static str,
    /// The file the resource came from (`-` for stdin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// 1-based line of the offending field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    /// The resource the finding is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceRef>,
    /// The field path, e.g. `spec.http[0].route[1].weight`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// What is wrong.
    pub message: String,
}

impl Diagnostic {
    /// A finding of type `code` with `message`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            level: code.level,
            code: code.id,
            name: code.name,
            file: None,
            line: None,
            resource: None,
            path: None,
            message: message.into(),
        }
    }

    /// The same finding, at `file:line`.
    pub fn at(mut self, file: PathBuf, line: u32) -> Self {
        self.file = Some(file);
        self.line = Some(line);
        self
    }

    /// The same finding, about `resource`.
    pub fn on(mut self, resource: ResourceRef) -> Self {
        self.resource = Some(resource);
        self
    }

    /// The same finding, on field `path`.
    pub fn field(mut self, path: impl Into<String>) -> Self {
        let p = path.into();
        self.path = (!p.is_empty()).then_some(p);
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}]", self.level, self.code)?;
        if let Some(file) = &self.file {
            write!(f, " {}", file.display())?;
            if let Some(line) = self.line {
                write!(f, ":{line}")?;
            }
        }
        if let Some(r) = &self.resource {
            write!(f, " ({r})")?;
        }
        match &self.path {
            Some(p) => write!(f, " {p}: {}", self.message),
            None => write!(f, " {}", self.message),
        }
    }
}
