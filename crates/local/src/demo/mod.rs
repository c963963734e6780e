//! `meshwork demo`: the online-ordering application on the local mesh.
//! [`app`] holds the services (run as `meshwork demo-app <role>`),
//! [`manifests`] their Kubernetes and Istio configuration, [`summary`] the
//! live view computed from the proxies' metrics.

pub mod app;
pub mod manifests;
pub mod summary;
