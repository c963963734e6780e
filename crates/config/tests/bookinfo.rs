//! Istio's Bookinfo samples load and analyze clean with the application's
//! manifests.

use std::path::PathBuf;

use meshwork_config::analyze::{Format, analyze_paths, render};
use meshwork_config::diag::Level;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/istio/bookinfo"
);

fn path(name: &str) -> PathBuf {
    PathBuf::from(DIR).join(name)
}

/// cert-manager creates this Service at run time for its ACME challenges;
/// the certmanager sample routes to it.
const CERT_MANAGER_RESOLVER: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: cert-manager-resolver, namespace: istio-system}\nspec:\n  ports: [{name: http, port: 8089}]\n";

#[test]
fn every_sample_analyzes_without_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let resolver = dir.path().join("resolver.yaml");
    std::fs::write(&resolver, CERT_MANAGER_RESOLVER).expect("write");
    let mut samples: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("bookinfo fixtures")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.file_name().is_some_and(|n| n != "bookinfo.yaml"))
        .collect();
    samples.sort();
    assert!(samples.len() >= 20);
    for sample in samples {
        // Subsets are defined by destination-rule-all.yaml, which Istio's
        // docs apply before the routing samples.
        let paths = vec![
            path("bookinfo.yaml"),
            path("destination-rule-all.yaml"),
            sample.clone(),
            resolver.clone(),
        ];
        let report = analyze_paths(&paths);
        let errors: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(ToString::to_string)
            .collect();
        assert!(errors.is_empty(), "{}: {errors:#?}", sample.display());
        assert_eq!(report.exit_code(), 0);
        // The only warnings: subsets of versions bookinfo.yaml does not deploy.
        for d in report
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Warning)
        {
            assert_eq!(d.code, "IST0127", "{}: {d}", sample.display());
        }
    }
}

#[test]
fn whole_directory_loads_every_document() {
    let report = analyze_paths(&[PathBuf::from(DIR)]);
    let parse_errors: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.code == "MW0001" || d.code == "IST0106")
        .collect();
    assert!(parse_errors.is_empty(), "{parse_errors:?}");
    assert!(report.resources > 40, "{}", report.resources);
    // Without cert-manager's resolver Service the certmanager sample's route
    // points nowhere: that is the one error.
    let errors: Vec<_> = report
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("cert-manager-resolver"));
    assert_eq!(report.exit_code(), 79);
    for format in [Format::Text, Format::Json, Format::Yaml] {
        let out = render(&report, format).expect("renders");
        assert!(out.contains("IST0101"), "{format:?}");
    }
}

#[test]
fn bookinfo_app_alone_is_clean() {
    let report = analyze_paths(&[path("bookinfo.yaml")]);
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    let text = render(&report, Format::Text).expect("renders");
    assert!(text.contains("No validation issues"));
}
