//! `istio.v1.auth.IstioCertificateService/CreateCertificate` served with
//! tonic. The service is written by hand (one unary RPC: route the path,
//! decode with prost, answer) instead of generated, so the build needs no
//! `protoc` and no build script.
//!
//! Callers authenticate with `authorization: Bearer <token>`; the token
//! file says which namespace and service account the token belongs to, and
//! that — never the CSR — is the identity put in the certificate.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::server::{Grpc, NamedService, UnaryService};
use tonic::{Request, Response, Status};

use crate::SpiffeId;
use crate::ca::{CaError, CertificateAuthority};
use crate::pem::cert_to_pem;
use crate::proto::{
    CREATE_CERTIFICATE_PATH, IstioCertificateRequest, IstioCertificateResponse, SERVICE_NAME,
};
use crate::tokens::TokenFile;

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The certificate service: a CA and the tokens that authenticate callers.
#[derive(Clone)]
pub struct CaService {
    inner: Arc<Inner>,
}

struct Inner {
    ca: Arc<CertificateAuthority>,
    tokens: Option<TokenFile>,
}

impl CaService {
    /// Serves `ca`; callers are looked up in `tokens` (no file: every
    /// caller is refused).
    pub fn new(ca: Arc<CertificateAuthority>, tokens: Option<TokenFile>) -> Self {
        CaService {
            inner: Arc::new(Inner { ca, tokens }),
        }
    }
}

impl Inner {
    fn authenticate<T>(&self, req: &Request<T>) -> Result<SpiffeId, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .ok_or_else(|| {
                Status::unauthenticated("missing `authorization: Bearer <token>` metadata")
            })?
            .to_str()
            .map_err(|_| Status::unauthenticated("authorization metadata is not text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                Status::unauthenticated("authorization metadata must be `Bearer <token>`")
            })?;
        let Some(tokens) = &self.tokens else {
            return Err(Status::unauthenticated(
                "the CA has no token file (--ca-tokens); no caller can authenticate",
            ));
        };
        let table = tokens.table().map_err(|e| {
            tracing::error!(error = %e, "cannot read the CA token file");
            Status::unavailable(format!("the CA cannot read its token file: {e}"))
        })?;
        let (ns, sa) = table
            .lookup(token)
            .ok_or_else(|| Status::unauthenticated("unknown bootstrap token"))?;
        Ok(SpiffeId::new(self.ca.trust_domain(), ns, sa))
    }

    fn create(
        &self,
        req: Request<IstioCertificateRequest>,
    ) -> Result<IstioCertificateResponse, Status> {
        let caller = self.authenticate(&req)?;
        let msg = req.into_inner();
        let ttl = match msg.validity_duration {
            d if d < 0 => {
                return Err(Status::invalid_argument(
                    "validity_duration must not be negative",
                ));
            }
            0 => None,
            d => Some(Duration::from_secs(d as u64)),
        };
        let chain = self.ca.sign_csr(&msg.csr, &caller, ttl).map_err(|e| {
            tracing::warn!(%caller, error = %e, "certificate request refused");
            status(e)
        })?;
        tracing::info!(%caller, "certificate issued");
        Ok(IstioCertificateResponse {
            cert_chain: chain.iter().map(|c| cert_to_pem(c)).collect(),
        })
    }
}

fn status(e: CaError) -> Status {
    match e {
        CaError::InvalidCsr(_) | CaError::TtlTooLong { .. } => {
            Status::invalid_argument(e.to_string())
        }
        CaError::IdentityMismatch { .. } => Status::permission_denied(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

// === impl the tonic service ===

struct CreateCertificate(Arc<Inner>);

impl UnaryService<IstioCertificateRequest> for CreateCertificate {
    type Response = IstioCertificateResponse;
    type Future = BoxFuture<Response<IstioCertificateResponse>, Status>;

    fn call(&mut self, req: Request<IstioCertificateRequest>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.create(req).map(Response::new) })
    }
}

impl tower::Service<http::Request<Body>> for CaService {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if req.uri().path() == CREATE_CERTIFICATE_PATH {
            let method = CreateCertificate(self.inner.clone());
            Box::pin(async move {
                let mut grpc = Grpc::new(tonic_prost::ProstCodec::default());
                Ok(grpc.unary(method, req).await)
            })
        } else {
            let path = req.uri().path().to_string();
            Box::pin(async move {
                Ok(
                    Status::unimplemented(format!("no method {path} on {SERVICE_NAME}"))
                        .into_http(),
                )
            })
        }
    }
}

impl NamedService for CaService {
    const NAME: &'static str = SERVICE_NAME;
}
