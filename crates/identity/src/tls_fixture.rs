//! A small certificate authority for tests and benchmarks (rcgen): real
//! ECDSA P-256 roots and X.509-SVIDs, so tests exercise real TLS. The
//! control plane's CA lives elsewhere; this one has no network side.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::{Identity, SpiffeId, Svid, TrustBundle};

/// A self-signed root that issues SVIDs.
pub struct TestCa {
    /// Trust domain of the ids it issues.
    pub trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa")
            .field("trust_domain", &self.trust_domain)
            .finish()
    }
}

fn offset(t: SystemTime) -> time::OffsetDateTime {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

impl TestCa {
    /// A new root for `trust_domain`, valid for ten years.
    pub fn new(trust_domain: &str) -> Result<Self, rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::OrganizationName, trust_domain);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = SystemTime::now();
        params.not_before = offset(now - Duration::from_secs(3600));
        params.not_after = offset(now + Duration::from_secs(10 * 365 * 86400));
        let root = params.self_signed(&key)?.der().clone();
        Ok(TestCa {
            trust_domain: trust_domain.into(),
            issuer: Issuer::new(params, key),
            root,
        })
    }

    /// The root certificate.
    pub fn root(&self) -> CertificateDer<'static> {
        self.root.clone()
    }

    /// Issues a leaf with the given URI SANs and validity window.
    pub fn issue_uris(
        &self,
        uris: &[&str],
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), rcgen::Error> {
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::default();
        params.subject_alt_names = uris
            .iter()
            .map(|u| Ok(SanType::URI((*u).try_into()?)))
            .collect::<Result<_, rcgen::Error>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.not_before = offset(not_before);
        params.not_after = offset(not_after);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        Ok((vec![cert.der().clone()], key))
    }

    /// Issues an SVID for `spiffe://<td>/ns/<ns>/sa/<sa>` valid from an hour
    /// ago for `lifetime`.
    pub fn svid(&self, ns: &str, sa: &str, lifetime: Duration) -> Result<Svid, rcgen::Error> {
        let id = SpiffeId::new(self.trust_domain.clone(), ns, sa);
        let not_before = SystemTime::now() - Duration::from_secs(3600);
        let not_after = SystemTime::now() + lifetime;
        let (chain, key) = self.issue_uris(&[&id.to_string()], not_before, not_after)?;
        Ok(Svid {
            id,
            chain,
            key,
            not_before,
            not_after,
        })
    }

    /// A complete identity (SVID valid for a day, bundle = this root).
    pub fn identity(&self, ns: &str, sa: &str) -> Result<Arc<Identity>, rcgen::Error> {
        Ok(Arc::new(Identity {
            svid: self.svid(ns, sa, Duration::from_secs(86400))?,
            bundle: self.bundle(),
        }))
    }

    /// A bundle holding only this root.
    pub fn bundle(&self) -> TrustBundle {
        TrustBundle {
            trust_domain: self.trust_domain.clone(),
            roots: vec![self.root()],
        }
    }
}
