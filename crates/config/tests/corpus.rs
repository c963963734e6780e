//! Istio's own validation corpus: every `*-valid.yaml` document is
//! accepted, every `*-invalid.yaml` document is rejected with the error its
//! `_err` key names.

use std::path::{Path, PathBuf};

use meshwork_config::diag::Level;
use meshwork_config::load::{Loaded, load_node};
use meshwork_config::node::take_key;
use meshwork_config::yaml::parse_stream;

const DIR: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/istio/validation"
);

fn corpus(suffix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(DIR)
        .expect("validation corpus present")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(suffix))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {suffix} files in {DIR}");
    files
}

/// Each document of `file`, with its `_err` (removed) and what loading it found.
fn documents(file: &Path) -> Vec<(u32, Option<String>, Loaded)> {
    let text = std::fs::read_to_string(file).expect("readable corpus file");
    parse_stream(&text)
        .into_iter()
        .map(|doc| {
            let mut node = doc.content.expect("corpus documents are valid YAML");
            let err = take_key(&mut node, "_err").and_then(|n| n.as_str().map(str::to_string));
            let mut loaded = Loaded::default();
            load_node(file, node, &mut loaded);
            (doc.line, err, loaded)
        })
        .collect()
}

#[test]
fn valid_documents_are_accepted() {
    let mut count = 0;
    let mut failures = Vec::new();
    for file in corpus("-valid.yaml") {
        for (line, _, loaded) in documents(&file) {
            count += 1;
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.level == Level::Error || d.message.starts_with("unknown field"))
                .map(ToString::to_string)
                .collect();
            if !errors.is_empty() || loaded.resources.len() != 1 {
                failures.push(format!("{}:{line}: {errors:?}", file.display()));
            }
        }
    }
    assert!(count >= 15, "only {count} valid documents found");
    assert!(
        failures.is_empty(),
        "valid documents rejected:\n{}",
        failures.join("\n")
    );
}

#[test]
fn invalid_documents_are_rejected_on_the_named_field() {
    let mut count = 0;
    let mut failures = Vec::new();
    for file in corpus("-invalid.yaml") {
        for (line, err, loaded) in documents(&file) {
            let expected = err.unwrap_or_else(|| panic!("{}:{line}: no _err", file.display()));
            count += 1;
            let errors: Vec<String> = loaded
                .diagnostics
                .iter()
                .filter(|d| d.level == Level::Error)
                .map(|d| format!("{}: {}", d.path.as_deref().unwrap_or(""), d.message))
                .collect();
            let hit = errors.iter().any(|e| e.contains(&expected));
            if !hit || !loaded.resources.is_empty() {
                failures.push(format!(
                    "{}:{line}: expected {expected:?}, got {errors:?}",
                    file.display()
                ));
            }
            // Every error names a file, a line and the resource.
            for d in &loaded.diagnostics {
                assert!(
                    d.file.is_some() && d.line.is_some() && d.resource.is_some(),
                    "{d}"
                );
            }
        }
    }
    assert!(count >= 25, "only {count} invalid documents found");
    assert!(
        failures.is_empty(),
        "wrong or missing errors:\n{}",
        failures.join("\n")
    );
}
