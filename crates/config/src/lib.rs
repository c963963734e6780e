//! Meshwork's configuration: Istio's resource kinds as typed models, YAML
//! and JSON loading that remembers file and line, validation equal to
//! Istio's (CRD schema + semantic checks), and `istioctl analyze`-style
//! analyzers across resources.
//!
//! ```
//! use meshwork_config::load::load_str;
//! let loaded = load_str("vs.yaml".as_ref(), "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r}\nspec:\n  hosts: [reviews]\n  http:\n  - route:\n    - destination: {host: reviews}\n");
//! assert_eq!(loaded.resources.len(), 1);
//! assert!(loaded.diagnostics.is_empty());
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod analyze;
pub mod diag;
pub mod duration;
pub mod load;
pub mod model;
pub mod node;
pub mod protocol;
pub mod resource;
pub mod schema;
pub mod validate;
pub mod yaml;

pub use diag::{Diagnostic, Level};
pub use load::{Loaded, load_paths, load_str};
pub use resource::{Kind, Resource, Spec};
