//! TLS transport sockets from xDS, compiled: Envoy's
//! `envoy.transport_sockets.tls` with an `UpstreamTlsContext` (clusters) or
//! a `DownstreamTlsContext` (filter chains), and cluster
//! `transport_socket_matches` (Istio's auto mTLS).
//!
//! Certificates come from SDS secrets as pilot-agent serves them (`default`:
//! the workload's SVID, `ROOTCA`: its trust bundle, `file-cert:CERT~KEY` and
//! `file-root:CA` for DestinationRule certificates on disk) or from inline /
//! file data sources. Files are read here, when the resource arrives, so a
//! missing file rejects the resource with its path.

use std::collections::BTreeMap;
use std::sync::Arc;

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
use envoy_types::pb::envoy::config::core::v3::{DataSource, TransportSocket};
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::common_tls_context::ValidationContextType;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, CommonTlsContext, DownstreamTlsContext, SdsSecretConfig,
    UpstreamTlsContext,
};
use envoy_types::pb::envoy::r#type::matcher::v3::StringMatcher;
use envoy_types::pb::envoy::r#type::matcher::v3::string_matcher::MatchPattern;
use envoy_types::pb::google::protobuf::value::Kind;
use envoy_types::pb::google::protobuf::{Any, Struct};

use crate::model::CompileError;

const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";
const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";

/// Istio's SDS name for the workload certificate.
pub const SDS_DEFAULT: &str = "default";
/// Istio's SDS name for the mesh trust bundle.
pub const SDS_ROOTCA: &str = "ROOTCA";

/// Where our certificate comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CertRef {
    /// The workload SVID (SDS `default`).
    Workload,
    /// PEM chain and key (inline, files, or `file-cert:` SDS).
    Pem {
        /// PEM certificate chain.
        chain: Vec<u8>,
        /// PEM private key.
        key: Vec<u8>,
    },
}

/// Which roots the peer must chain to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootsRef {
    /// No validation context: not verified (Envoy's behaviour).
    None,
    /// The mesh trust bundle (SDS `ROOTCA`): SPIFFE checks apply.
    Workload,
    /// PEM roots (inline, file, or `file-root:` SDS).
    Pem(Vec<u8>),
}

/// The parts shared by both directions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsCommon {
    /// Our certificate, if any.
    pub cert: Option<CertRef>,
    /// How the peer is verified.
    pub roots: RootsRef,
    /// Exact subject alt names the peer must carry one of (empty: any).
    pub allowed_sans: Vec<String>,
    /// ALPN protocols, in preference order.
    pub alpn: Vec<String>,
}

/// A compiled `UpstreamTlsContext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamTlsSpec {
    /// Common settings.
    pub common: TlsCommon,
    /// SNI to send (none when empty).
    pub sni: Option<String>,
}

impl UpstreamTlsSpec {
    /// Whether it needs the workload's SVID or bundle (SDS `default` / `ROOTCA`).
    pub fn uses_workload_identity(&self) -> bool {
        self.common.cert == Some(CertRef::Workload) || self.common.roots == RootsRef::Workload
    }
}

/// A compiled `DownstreamTlsContext`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DownstreamTlsSpec {
    /// Common settings.
    pub common: TlsCommon,
    /// Refuse clients without a valid certificate (Istio STRICT/PERMISSIVE mTLS chains).
    pub require_client_certificate: bool,
}

/// One entry of a cluster's `transport_socket_matches`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportMatch {
    /// Its name (`tlsMode-istio`).
    pub name: String,
    /// Metadata an endpoint must carry under `envoy.transport_socket_match`.
    pub criteria: BTreeMap<String, String>,
    /// TLS, or plaintext when `None`.
    pub tls: Option<Arc<UpstreamTlsSpec>>,
}

/// How a cluster talks to its endpoints: plaintext or TLS, per endpoint.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TransportModel {
    /// The cluster's `transport_socket` (`None`: plaintext).
    pub default: Option<Arc<UpstreamTlsSpec>>,
    /// `transport_socket_matches`, first match wins.
    pub matches: Vec<TransportMatch>,
}

impl TransportModel {
    /// Compiles a cluster's transport socket and matches.
    pub fn compile(c: &Cluster) -> Result<Self, CompileError> {
        let default = c
            .transport_socket
            .as_ref()
            .map(upstream_socket)
            .transpose()
            .map_err(|e| format!("transport_socket: {e}"))?
            .flatten();
        let matches = c
            .transport_socket_matches
            .iter()
            .map(|m| {
                let tls = m
                    .transport_socket
                    .as_ref()
                    .map(upstream_socket)
                    .transpose()
                    .map_err(|e| format!("transport_socket_matches {:?}: {e}", m.name))?
                    .flatten();
                Ok(TransportMatch {
                    name: m.name.clone(),
                    criteria: m.r#match.as_ref().map(struct_strings).unwrap_or_default(),
                    tls,
                })
            })
            .collect::<Result<_, CompileError>>()?;
        Ok(TransportModel { default, matches })
    }

    /// Which socket an endpoint gets: 0 for the default, `i + 1` for
    /// `matches[i]`. Its metadata are the endpoint's
    /// `envoy.transport_socket_match` values.
    pub fn select(&self, metadata: &BTreeMap<String, String>) -> usize {
        self.matches
            .iter()
            .position(|m| m.criteria.iter().all(|(k, v)| metadata.get(k) == Some(v)))
            .map_or(0, |i| i + 1)
    }

    /// The TLS settings of socket `index` (see [`TransportModel::select`]).
    pub fn spec(&self, index: usize) -> Option<&Arc<UpstreamTlsSpec>> {
        match index {
            0 => self.default.as_ref(),
            i => self.matches.get(i - 1).and_then(|m| m.tls.as_ref()),
        }
    }

    /// How many sockets (default + matches).
    pub fn sockets(&self) -> usize {
        1 + self.matches.len()
    }

    /// Whether every socket is plaintext.
    pub fn is_plaintext(&self) -> bool {
        (0..self.sockets()).all(|i| self.spec(i).is_none())
    }
}

/// String-ish values of a protobuf `Struct` (the match criteria and the
/// endpoint metadata Envoy compares).
pub fn struct_strings(s: &Struct) -> BTreeMap<String, String> {
    s.fields
        .iter()
        .filter_map(|(k, v)| {
            let v = match v.kind.as_ref()? {
                Kind::StringValue(s) => s.clone(),
                Kind::BoolValue(b) => b.to_string(),
                Kind::NumberValue(n) => n.to_string(),
                _ => return None,
            };
            Some((k.clone(), v))
        })
        .collect()
}

fn type_name(any: &Any) -> &str {
    any.type_url.rsplit('/').next().unwrap_or_default()
}

fn typed(ts: &TransportSocket) -> Result<Option<&Any>, CompileError> {
    match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) => Ok(Some(any)),
        None if ts.name == "envoy.transport_sockets.raw_buffer" || ts.name == "raw_buffer" => {
            Ok(None)
        }
        None => Err(format!(
            "transport socket {:?} has no typed_config",
            ts.name
        )),
    }
}

/// Compiles an upstream transport socket; `None` for raw_buffer.
pub fn upstream_socket(ts: &TransportSocket) -> Result<Option<Arc<UpstreamTlsSpec>>, CompileError> {
    let Some(any) = typed(ts)? else {
        return Ok(None);
    };
    match type_name(any) {
        RAW_BUFFER => Ok(None),
        UPSTREAM_TLS => {
            let ctx: UpstreamTlsContext = meshwork_xds::unpack(any)?;
            let common = compile_common(ctx.common_tls_context.as_ref())?;
            Ok(Some(Arc::new(UpstreamTlsSpec {
                common,
                sni: (!ctx.sni.is_empty()).then(|| ctx.sni.clone()),
            })))
        }
        other => Err(format!("transport socket {other:?} is not supported")),
    }
}

/// Compiles a filter chain's transport socket; `None` for raw_buffer.
pub fn downstream_socket(
    ts: &TransportSocket,
) -> Result<Option<Arc<DownstreamTlsSpec>>, CompileError> {
    let Some(any) = typed(ts)? else {
        return Ok(None);
    };
    match type_name(any) {
        RAW_BUFFER => Ok(None),
        DOWNSTREAM_TLS => {
            let ctx: DownstreamTlsContext = meshwork_xds::unpack(any)?;
            let common = compile_common(ctx.common_tls_context.as_ref())?;
            if common.cert.is_none() {
                return Err("DownstreamTlsContext without a certificate".into());
            }
            Ok(Some(Arc::new(DownstreamTlsSpec {
                common,
                require_client_certificate: ctx
                    .require_client_certificate
                    .as_ref()
                    .is_some_and(|b| b.value),
            })))
        }
        other => Err(format!("transport socket {other:?} is not supported")),
    }
}

fn compile_common(c: Option<&CommonTlsContext>) -> Result<TlsCommon, CompileError> {
    let Some(c) = c else {
        return Ok(TlsCommon {
            cert: None,
            roots: RootsRef::None,
            allowed_sans: Vec::new(),
            alpn: Vec::new(),
        });
    };
    if c.tls_certificates.len() + c.tls_certificate_sds_secret_configs.len() > 1 {
        return Err("more than one TLS certificate is not supported".into());
    }
    let cert = if let Some(t) = c.tls_certificates.first() {
        Some(CertRef::Pem {
            chain: data(t.certificate_chain.as_ref(), "certificate_chain")?,
            key: data(t.private_key.as_ref(), "private_key")?,
        })
    } else if let Some(s) = c.tls_certificate_sds_secret_configs.first() {
        Some(sds_cert(s)?)
    } else {
        None
    };
    let (roots, allowed_sans) = match &c.validation_context_type {
        None => (RootsRef::None, Vec::new()),
        Some(ValidationContextType::ValidationContext(v)) => validation(v)?,
        Some(ValidationContextType::ValidationContextSdsSecretConfig(s)) => {
            (sds_roots(s)?, Vec::new())
        }
        Some(ValidationContextType::CombinedValidationContext(cv)) => {
            let (inline_roots, sans) = match &cv.default_validation_context {
                Some(v) => validation(v)?,
                None => (RootsRef::None, Vec::new()),
            };
            let roots = match &cv.validation_context_sds_secret_config {
                Some(s) => sds_roots(s)?,
                None => inline_roots,
            };
            (roots, sans)
        }
        #[allow(deprecated)]
        Some(ValidationContextType::ValidationContextCertificateProvider(_))
        | Some(ValidationContextType::ValidationContextCertificateProviderInstance(_)) => {
            return Err("certificate provider validation contexts are not supported".into());
        }
    };
    Ok(TlsCommon {
        cert,
        roots,
        allowed_sans,
        alpn: c.alpn_protocols.clone(),
    })
}

#[allow(deprecated)]
fn validation(v: &CertificateValidationContext) -> Result<(RootsRef, Vec<String>), CompileError> {
    let roots = match &v.trusted_ca {
        Some(ds) => RootsRef::Pem(data(Some(ds), "trusted_ca")?),
        None => RootsRef::None,
    };
    let mut sans = v
        .match_subject_alt_names
        .iter()
        .map(exact)
        .collect::<Result<Vec<_>, _>>()?;
    for m in &v.match_typed_subject_alt_names {
        sans.push(exact(
            m.matcher.as_ref().ok_or("SAN matcher without a matcher")?,
        )?);
    }
    Ok((roots, sans))
}

fn exact(m: &StringMatcher) -> Result<String, CompileError> {
    match &m.match_pattern {
        Some(MatchPattern::Exact(s)) if !m.ignore_case => Ok(s.clone()),
        other => Err(format!(
            "subject alt name matcher {other:?} is not supported (only exact)"
        )),
    }
}

fn sds_cert(s: &SdsSecretConfig) -> Result<CertRef, CompileError> {
    if s.name == SDS_DEFAULT {
        return Ok(CertRef::Workload);
    }
    if let Some(rest) = s.name.strip_prefix("file-cert:") {
        let (chain, key) = rest
            .split_once('~')
            .ok_or_else(|| format!("SDS secret {:?}: expected file-cert:CERT~KEY", s.name))?;
        return Ok(CertRef::Pem {
            chain: read(chain)?,
            key: read(key)?,
        });
    }
    Err(format!(
        "SDS certificate {:?} is unknown (served: default, file-cert:CERT~KEY)",
        s.name
    ))
}

fn sds_roots(s: &SdsSecretConfig) -> Result<RootsRef, CompileError> {
    if s.name == SDS_ROOTCA {
        return Ok(RootsRef::Workload);
    }
    if let Some(path) = s.name.strip_prefix("file-root:") {
        return Ok(RootsRef::Pem(read(path)?));
    }
    Err(format!(
        "SDS validation context {:?} is unknown (served: ROOTCA, file-root:CA)",
        s.name
    ))
}

fn read(path: &str) -> Result<Vec<u8>, CompileError> {
    std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))
}

fn data(ds: Option<&DataSource>, what: &str) -> Result<Vec<u8>, CompileError> {
    match ds.and_then(|d| d.specifier.as_ref()) {
        Some(Specifier::Filename(f)) => read(f),
        Some(Specifier::InlineBytes(b)) => Ok(b.clone()),
        Some(Specifier::InlineString(s)) => Ok(s.as_bytes().to_vec()),
        Some(Specifier::EnvironmentVariable(v)) => std::env::var(v)
            .map(String::into_bytes)
            .map_err(|_| format!("{what}: environment variable {v:?} is not set")),
        None => Err(format!("{what} has no data source")),
    }
}
