//! A small interpreter for the CEL rules (`x-kubernetes-validations`) that
//! Istio's CRD schemas carry: enough of the language for every rule there,
//! checked by a test over the embedded schemas.

pub mod eval;
pub mod parse;

pub use eval::{Val, eval};
pub use parse::{Expr, parse};
