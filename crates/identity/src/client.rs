//! The sidecar's certificate client: a fresh key and CSR, one
//! `CreateCertificate` call over TLS authenticated by the bootstrap token,
//! and the answer checked and turned into an [`Identity`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::uri::PathAndQuery;
use rustls::pki_types::CertificateDer;
use tonic::metadata::MetadataValue;

use crate::certinfo::CertInfo;
use crate::csr::new_key_and_csr;
use crate::pem::certs_from_pem;
use crate::proto::{CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse};
use crate::transport::{TransportError, client_config, connect};
use crate::{Identity, SpiffeId, Svid, TrustBundle};

/// The server name the control plane's certificate carries (istiod's).
pub const DEFAULT_CA_SERVER_NAME: &str = "istiod.istio-system.svc";

/// Where and how to ask for certificates.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// The CA's gRPC address, `host:port` (Istio's 15012).
    pub address: String,
    /// Name the CA's serving certificate must carry.
    pub server_name: String,
    /// PEM file of the root(s) that the CA's serving certificate chains to.
    pub root_cert: PathBuf,
    /// File holding this workload's bootstrap token.
    pub token_file: PathBuf,
    /// The identity this workload expects to receive.
    pub id: SpiffeId,
    /// Requested lifetime (`None`: the CA's default).
    pub ttl: Option<Duration>,
    /// Connect and request timeout.
    pub timeout: Duration,
}

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A local file (root, token) could not be read.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// TLS or connection failure (an untrusted CA shows up here).
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The CA answered with an error.
    #[error("the CA refused the request: {}: {}", .0.code(), .0.message())]
    Refused(tonic::Status),
    /// The answer is not a usable certificate chain for this workload.
    #[error("unusable answer from the CA: {0}")]
    BadResponse(String),
    /// Key or CSR generation failed.
    #[error("cannot create a key and CSR: {0}")]
    Csr(#[from] rcgen::Error),
}

impl ClientError {
    /// The gRPC status when the CA refused the request.
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            ClientError::Refused(s) => Some(s),
            _ => None,
        }
    }
}

/// Obtains a new certificate. `learned_roots` (from an earlier answer) are
/// trusted for the CA connection besides the configured root file.
pub async fn fetch_identity(
    opts: &ClientOptions,
    learned_roots: &[CertificateDer<'static>],
) -> Result<Identity, ClientError> {
    let file = |path: &PathBuf| {
        let path = path.clone();
        move |message: String| ClientError::File { path, message }
    };
    let root_text = std::fs::read_to_string(&opts.root_cert)
        .map_err(|e| file(&opts.root_cert)(e.to_string()))?;
    let mut roots = certs_from_pem(&root_text).map_err(|e| file(&opts.root_cert)(e.to_string()))?;
    roots.extend(
        learned_roots
            .iter()
            .filter(|r| !roots.contains(r))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let token = std::fs::read_to_string(&opts.token_file)
        .map_err(|e| file(&opts.token_file)(e.to_string()))?;
    let token = token.trim();
    let bearer: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| file(&opts.token_file)("the token is not valid header text".into()))?;

    let tls = Arc::new(client_config(&roots)?);
    let channel = connect(&opts.address, &opts.server_name, tls, opts.timeout).await?;
    let key_csr = new_key_and_csr(&opts.id)?;
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: key_csr.csr_pem,
        validity_duration: opts.ttl.map(|t| t.as_secs() as i64).unwrap_or(0),
        metadata: None,
    });
    req.metadata_mut().insert("authorization", bearer);
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| ClientError::Refused(tonic::Status::unavailable(e.to_string())))?;
    let resp: tonic::Response<IstioCertificateResponse> = grpc
        .unary(
            req,
            PathAndQuery::from_static(CREATE_CERTIFICATE_PATH),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .map_err(ClientError::Refused)?;
    let (chain, bundle) = split_chain(&resp.into_inner().cert_chain, &opts.id)?;
    let leaf = CertInfo::parse(&chain[0]).map_err(|e| ClientError::BadResponse(e.to_string()))?;
    Ok(Identity {
        svid: Svid {
            id: opts.id.clone(),
            chain,
            key: key_csr.key,
            not_before: leaf.not_before,
            not_after: leaf.not_after,
        },
        bundle: TrustBundle {
            trust_domain: opts.id.trust_domain.clone(),
            roots: bundle,
        },
    })
}

type Chain = Vec<CertificateDer<'static>>;

/// Splits `cert_chain` into (leaf + intermediates, roots): the roots are
/// the self-signed certificates after the leaf. Checks the leaf names
/// exactly `expected`.
pub fn split_chain(pems: &[String], expected: &SpiffeId) -> Result<(Chain, Chain), ClientError> {
    let bad = |m: String| ClientError::BadResponse(m);
    let mut chain = Vec::new();
    let mut roots = Vec::new();
    for (i, pem) in pems.iter().enumerate() {
        let mut certs = certs_from_pem(pem).map_err(|e| bad(format!("cert_chain[{i}]: {e}")))?;
        if certs.len() != 1 {
            return Err(bad(format!(
                "cert_chain[{i}] holds {} certificates",
                certs.len()
            )));
        }
        let cert = certs.remove(0);
        let info = CertInfo::parse(&cert).map_err(|e| bad(format!("cert_chain[{i}]: {e}")))?;
        if i > 0 && info.self_signed {
            roots.push(cert);
        } else {
            chain.push(cert);
        }
    }
    if chain.is_empty() || roots.is_empty() {
        return Err(bad(
            "cert_chain must hold a leaf and at least one root".into()
        ));
    }
    let leaf = CertInfo::parse(&chain[0]).map_err(|e| bad(e.to_string()))?;
    let want = expected.to_string();
    if leaf.uris != [want.clone()] {
        return Err(bad(format!(
            "the certificate names {:?}, expected exactly [{want}]",
            leaf.uris
        )));
    }
    Ok((chain, roots))
}
