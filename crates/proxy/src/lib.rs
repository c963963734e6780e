//! Meshwork's data plane: the sidecar proxy.
//!
//! Configured only by xDS (it never sees Istio types), it accepts
//! connections on its listeners (including the iptables capture ports 15001
//! and 15006), detects their protocol, routes HTTP requests and TCP
//! connections to clusters, balances over endpoints and reports Istio's
//! standard metrics and one access-log line per request.
#![deny(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod body;
pub mod circuit;
pub mod ctx;
pub mod detect;
pub mod drain;
pub mod h1_wire;
pub mod h2_client;
pub mod h2_frame;
pub mod hash;
pub mod heap;
pub mod http;
pub mod io;
pub mod listen;
pub mod locality;
pub mod model;
pub mod options;
pub mod outlier;
pub mod run;
pub mod store;
pub mod tables;
pub mod tcp;
pub mod tls;
pub mod upstream;
pub mod upstream_conn;
pub mod upstream_h1;
pub mod upstream_h1_codec;
pub mod upstream_h1_parse;
pub mod upstream_h2;
