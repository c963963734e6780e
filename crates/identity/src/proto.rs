//! Istio's certificate service messages (`istio.v1.auth`, from Istio's
//! `security/proto/providers`/`istio/api` `ca.proto`), written as prost
//! structs so no `protoc` is needed: the service has one RPC and two small
//! messages, and the field numbers below are the wire contract.

/// `istio.v1.auth.IstioCertificateRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateRequest {
    /// PEM-encoded certificate signing request.
    #[prost(string, tag = "1")]
    pub csr: String,
    /// Requested lifetime in seconds (0: the CA's default).
    #[prost(int64, tag = "3")]
    pub validity_duration: i64,
    /// Optional metadata (Istio uses it for impersonation by istiod; ignored).
    #[prost(message, optional, tag = "4")]
    pub metadata: Option<prost_types::Struct>,
}

/// `istio.v1.auth.IstioCertificateResponse`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct IstioCertificateResponse {
    /// PEM certificates: the leaf first, then intermediates, then the
    /// root(s); the last one is the root the chain ends in.
    #[prost(string, repeated, tag = "1")]
    pub cert_chain: Vec<String>,
}

/// gRPC service name.
pub const SERVICE_NAME: &str = "istio.v1.auth.IstioCertificateService";
/// Full path of `CreateCertificate`.
pub const CREATE_CERTIFICATE_PATH: &str =
    "/istio.v1.auth.IstioCertificateService/CreateCertificate";
