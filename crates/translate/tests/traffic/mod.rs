//! A small mesh for the traffic tests: a `client` workload whose sidecar is
//! under test, `web` (v1, v2, subsets), `shadow`, `slowshadow` (every
//! answer takes 2 s) and `flaky` (one dead instance, one live), all HTTP
//! on port 8080, plus the VirtualService YAML of each test.
#![allow(dead_code)]

use std::sync::Arc;

use super::common;
use super::live::{DEAD_LABEL, Live, SLOW_LABEL};

/// A Service on port 8080 and one Deployment per version (with extra pod labels).
pub fn app(name: &str, versions: &[(&str, &str)]) -> String {
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default, labels: {{app: {name}}}}}\nspec:\n  ports: [{{port: 8080, name: http}}]\n  selector: {{app: {name}}}\n"
    )];
    for (v, extra) in versions {
        docs.push(format!(
            "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}-{v}, namespace: default}}\nspec:\n  replicas: 1\n  selector: {{matchLabels: {{app: {name}, version: {v}}}}}\n  template:\n    metadata: {{labels: {{app: {name}, version: {v}{extra}}}}}\n    spec: {{containers: [{{name: {name}, image: x}}]}}\n"
        ));
    }
    docs.join("---\n")
}

/// The mesh without VirtualServices.
pub fn mesh() -> String {
    let dead = format!(", {DEAD_LABEL}: \"true\"");
    let slow = format!(", {SLOW_LABEL}: \"2000\"");
    [
        app("client", &[("v1", "")]),
        app("web", &[("v1", ""), ("v2", "")]),
        app("shadow", &[("v1", "")]),
        app("slowshadow", &[("v1", slow.as_str())]),
        app("deadshadow", &[("v1", dead.as_str())]),
        app("flaky", &[("dead", dead.as_str()), ("ok", "")]),
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: web, namespace: default}\nspec:\n  host: web\n  subsets:\n  - {name: v1, labels: {version: v1}}\n  - {name: v2, labels: {version: v2}}\n".to_string(),
    ]
    .join("---\n")
}

/// The client's sidecar with `extra` YAML (VirtualServices) on top of [`mesh`].
pub async fn start(extra: &str) -> Arc<Live> {
    let yaml = format!("{}---\n{extra}", mesh());
    let res = common::load(&[], &yaml);
    Arc::new(Live::start(res, "client-v1", &[8080], None).await)
}

/// A VirtualService for `web` with these HTTP routes (YAML list items).
pub fn web_vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: web, namespace: default}}\nspec:\n  hosts: [web]\n  http:\n{http}"
    )
}
