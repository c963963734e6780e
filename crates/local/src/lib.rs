//! Meshwork's local mesh: runs a mesh from Kubernetes-style manifests on
//! one Linux host, without Kubernetes.
//!
//! Each Deployment replica becomes a pod ([`plan`]): its own network
//! namespace on a bridge ([`host`]), Istio's interception rules
//! ([`iptables`]), a sidecar `meshwork proxy` and the container's command
//! ([`pods`]), all supervised with restart backoff ([`supervise`]). The
//! control plane runs in the host namespace and learns the pods and the
//! services' virtual addresses from a file ([`platform`]). What was made
//! is recorded ([`state`]) so that `meshwork down`, Ctrl-C or the next
//! `meshwork up` after a crash removes all of it. Without root, [`explicit`]
//! mode runs the same pods as host processes on loopback addresses,
//! configured through Istio's Sidecar resource ([`up_explicit`]). [`demo`] is the
//! online-ordering demo; [`ops`] serves the operator CLI.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod cidr;
pub mod demo;
pub mod env;
pub mod explicit;
pub mod fetch;
pub mod host;
pub mod iptables;
pub mod ops;
pub mod plan;
pub mod platform;
pub mod pods;
pub mod promtext;
pub mod state;
pub mod supervise;
pub mod up;
pub mod up_explicit;
