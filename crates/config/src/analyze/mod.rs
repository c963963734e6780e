//! Analyzers across resources, as `istioctl analyze` runs them, with
//! Istio's message codes: references to unknown hosts, gateways and
//! subsets (IST0101), subsets no workload backs (IST0127), mTLS conflicts
//! between DestinationRules and PeerAuthentications (IST0113), conflicting
//! gateways (IST0145), Service ports without a protocol (IST0118).

mod gateways;
pub mod index;
mod output;
mod policy;
mod references;
mod services;

use std::path::PathBuf;

pub use output::{Format, render};

use crate::diag::{Diagnostic, Level};
use crate::load::load_paths;
use crate::resource::{Resource, Spec};
use index::Index;

/// Exit code `istioctl analyze` uses when it finds errors.
pub const EXIT_ERRORS: i32 = 79;

/// Run every analyzer over `resources` (already loaded and validated).
pub fn analyze(resources: &[Resource]) -> Vec<Diagnostic> {
    let ix = Index::new(resources);
    let mut out = Vec::new();
    for r in resources {
        match &r.spec {
            Spec::VirtualService(vs) => references::virtual_service(r, vs, &ix, &mut out),
            Spec::Service(svc) => services::port_protocols(r, svc, &mut out),
            _ => {}
        }
    }
    for (r, dr, host) in &ix.destination_rules {
        policy::subsets(r, dr, host, &ix, &mut out);
        policy::mtls_conflict(r, dr, host, &ix, &mut out);
    }
    gateways::conflicting(&ix, &mut out);
    out
}

/// Everything `meshwork analyze` reports for a set of files.
#[derive(Debug, Default)]
pub struct Report {
    /// Loading, validation and analysis findings, sorted by file and line.
    pub diagnostics: Vec<Diagnostic>,
    /// How many resources were analyzed.
    pub resources: usize,
}

impl Report {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.level == Level::Error)
    }

    /// The process exit code: 0 when clean or warnings only, 79 on errors.
    pub fn exit_code(&self) -> i32 {
        if self.has_errors() { EXIT_ERRORS } else { 0 }
    }
}

/// Load, validate and analyze `paths` (`-` for stdin).
pub fn analyze_paths(paths: &[PathBuf]) -> Report {
    let loaded = load_paths(paths);
    let mut diagnostics = loaded.diagnostics;
    diagnostics.extend(analyze(&loaded.resources));
    // By file and line; at one place, errors first.
    diagnostics.sort_by(|a, b| {
        (&a.file, a.line, b.level, a.code).cmp(&(&b.file, b.line, a.level, b.code))
    });
    Report {
        diagnostics,
        resources: loaded.resources.len(),
    }
}
