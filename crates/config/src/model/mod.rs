//! Typed models: Istio kinds (generated from the CRD schemas), object
//! metadata and the core Kubernetes kinds.

pub mod istio;
pub mod k8s;
pub mod meta;
