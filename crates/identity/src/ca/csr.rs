//! Checking a workload's CSR before signing: well-formed PKCS#10, a
//! signature that verifies with its own key (proof the caller holds the
//! key), and no name other than the caller's own SPIFFE id.

use rustls::pki_types::CertificateSigningRequestDer;
use rustls::pki_types::pem::PemObject;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::prelude::{FromDer, GeneralName, ParsedExtension};

use super::CaError;
use crate::SpiffeId;

/// Returns the CSR's public key once the CSR passed every check.
pub(super) fn check(
    csr_pem: &str,
    caller: &SpiffeId,
) -> Result<rcgen::SubjectPublicKeyInfo, CaError> {
    let der = CertificateSigningRequestDer::from_pem_slice(csr_pem.as_bytes()).map_err(|e| {
        CaError::InvalidCsr(format!("expected a PEM CERTIFICATE REQUEST block ({e})"))
    })?;
    let (rest, csr) = X509CertificationRequest::from_der(der.as_ref())
        .map_err(|e| CaError::InvalidCsr(format!("not a PKCS#10 request: {e}")))?;
    if !rest.is_empty() {
        return Err(CaError::InvalidCsr(
            "trailing bytes after the request".into(),
        ));
    }
    csr.verify_signature().map_err(|e| {
        CaError::InvalidCsr(format!(
            "the request's signature does not verify with its public key ({e})"
        ))
    })?;
    let caller_uri = caller.to_string();
    if let Some(extensions) = csr.requested_extensions() {
        for ext in extensions {
            let ParsedExtension::SubjectAlternativeName(san) = ext else {
                continue;
            };
            for name in &san.general_names {
                let requested = match name {
                    GeneralName::URI(u) if *u == caller_uri => continue,
                    GeneralName::URI(u) => format!("URI SAN {u}"),
                    GeneralName::DNSName(d) => format!("DNS SAN {d}"),
                    GeneralName::IPAddress(_) => "an IP address SAN".to_string(),
                    GeneralName::RFC822Name(m) => format!("email SAN {m}"),
                    other => format!("SAN {other:?}"),
                };
                return Err(CaError::IdentityMismatch {
                    requested,
                    caller: caller_uri,
                });
            }
        }
    }
    rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
        .map_err(|e| CaError::InvalidCsr(format!("unsupported public key (use ECDSA P-256): {e}")))
}
