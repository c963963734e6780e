//! SPIFFE ids in Istio's shape: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

/// A workload identity as Istio names it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    /// Trust domain, `cluster.local` by default in Istio.
    pub trust_domain: String,
    /// Kubernetes-style namespace of the workload.
    pub namespace: String,
    /// Service account the workload runs as.
    pub service_account: String,
}

/// Why a string is not an Istio SPIFFE id.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "`{input}` is not a SPIFFE id of the form spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
)]
pub struct SpiffeIdError {
    /// The rejected text.
    pub input: String,
}

impl SpiffeId {
    /// Builds an id from its three parts.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Self {
        SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        }
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "spiffe://{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SpiffeIdError {
            input: s.to_string(),
        };
        let rest = s.strip_prefix("spiffe://").ok_or_else(err)?;
        let mut parts = rest.split('/');
        let (Some(td), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(err());
        };
        if [td, ns, sa].iter().any(|p| p.is_empty()) {
            return Err(err());
        }
        Ok(SpiffeId::new(td, ns, sa))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/order"
            .parse()
            .unwrap();
        assert_eq!(id, SpiffeId::new("cluster.local", "default", "order"));
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/order");
    }

    #[test]
    fn rejects_other_shapes() {
        for bad in [
            "spiffe://cluster.local/ns/default",
            "spiffe://cluster.local/ns//sa/x",
            "https://cluster.local/ns/a/sa/b",
            "spiffe://td/ns/a/sa/b/extra",
        ] {
            assert!(bad.parse::<SpiffeId>().is_err(), "{bad}");
        }
    }
}
