//! TLS in the data path: compiled transport sockets ([`spec`]), upstream
//! TLS for clusters ([`client`]), TLS termination on filter chains
//! ([`server`]) and the downstream stream that may be either ([`stream`]).
//!
//! The workload's certificate and bundle (SDS `default` / `ROOTCA`) come
//! from one [`MeshTls`] per proxy, which follows the identity watch, so
//! rotation reaches the next handshake without touching live connections.

pub mod client;
pub mod server;
pub mod spec;
pub mod stream;

use std::sync::Arc;

use meshwork_identity::tls::{CertSource, MeshTls, PeerPolicy, RootSource, certified_key};
use meshwork_identity::verify::Roots;

use spec::{CertRef, RootsRef, TlsCommon};

/// The verified identity of a TLS peer (its SPIFFE id / first URI SAN),
/// carried in response extensions from the upstream connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPrincipal(pub Arc<str>);

/// Resolves the certificate and the peer policy of a compiled context.
pub(crate) fn sources(
    common: &TlsCommon,
    mesh: Option<&Arc<MeshTls>>,
) -> Result<(CertSource, PeerPolicy), String> {
    let need_mesh = || {
        mesh.cloned().ok_or_else(|| {
            "SDS secret needs the workload certificate, but this proxy runs without a CA (no --ca-address)"
                .to_string()
        })
    };
    let cert = match &common.cert {
        None => CertSource::None,
        Some(CertRef::Workload) => CertSource::Mesh(need_mesh()?),
        Some(CertRef::Pem { chain, key }) => {
            let chain = meshwork_identity::tls::pem_chain("certificate chain", chain)
                .map_err(|e| e.to_string())?;
            let key =
                meshwork_identity::tls::pem_key("private key", key).map_err(|e| e.to_string())?;
            CertSource::Static(certified_key(chain, key).map_err(|e| e.to_string())?)
        }
    };
    let roots = match &common.roots {
        RootsRef::None => RootSource::None,
        RootsRef::Workload => RootSource::Mesh(need_mesh()?),
        RootsRef::Pem(pem) => {
            let certs =
                meshwork_identity::tls::pem_chain("trusted CA", pem).map_err(|e| e.to_string())?;
            RootSource::Static(Arc::new(
                Roots::from_certs(&certs).map_err(|e| e.to_string())?,
            ))
        }
    };
    Ok((
        cert,
        PeerPolicy {
            roots,
            allowed_sans: common.allowed_sans.clone(),
        },
    ))
}
