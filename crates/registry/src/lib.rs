//! Meshwork's service registry: the services of the mesh and their
//! endpoints, built from configuration (ServiceEntry, WorkloadEntry,
//! WorkloadGroup, Kubernetes Service and Deployment manifests) and from the
//! workload instances a [`Platform`] reports (the local mesh's processes,
//! later Kubernetes pods).
//!
//! A [`Registry`] is an immutable snapshot; the control plane builds a new
//! one whenever its configuration or a platform's instances change
//! ([`Platform::changes`]).
//!
//! ```
//! use meshwork_registry::{Registry, StaticPlatform, Platform, WorkloadInstance};
//! let loaded = meshwork_config::load_str("svc.yaml".as_ref(),
//!     "apiVersion: v1\nkind: Service\nmetadata: {name: reviews}\nspec:\n  selector: {app: reviews}\n  ports: [{name: http, port: 9080}]\n");
//! let pod = WorkloadInstance {
//!     name: "reviews-v1-0".into(), namespace: "default".into(), workload: "reviews-v1".into(),
//!     labels: [("app".to_string(), "reviews".to_string())].into(),
//!     address: "10.0.0.7".parse().unwrap(), service_account: "bookinfo-reviews".into(), has_sidecar: true,
//! };
//! let platform = StaticPlatform::new(vec![pod]);
//! let registry = Registry::build(&loaded.resources, &platform.instances());
//! let svc = registry.service("reviews.default.svc.cluster.local").unwrap();
//! assert_eq!(svc.ports[0].protocol.name(), "HTTP");
//! assert_eq!(registry.endpoints(&svc.hostname, 9080)[0].address, "10.0.0.7");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod build;
mod platform;
mod service;

pub use build::{DOMAIN_SUFFIX, Registry, fqdn};
pub use platform::{Platform, StaticPlatform, WorkloadInstance, instances_from_deployments};
pub use service::{
    Port, Protocol, Resolution, Service, ServiceEndpoint, ServiceOrigin, TargetPort,
};
