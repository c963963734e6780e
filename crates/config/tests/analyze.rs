//! Each analyzer: one case that triggers it, one that does not.

use std::path::Path;

use meshwork_config::analyze::analyze;
use meshwork_config::diag::{Diagnostic, Level};
use meshwork_config::load_str;

fn run(yaml: &str) -> Vec<Diagnostic> {
    let loaded = load_str(Path::new("test.yaml"), yaml);
    let errors: Vec<_> = loaded
        .diagnostics
        .iter()
        .filter(|d| d.level == Level::Error)
        .collect();
    assert!(errors.is_empty(), "fixture does not load: {errors:?}");
    analyze(&loaded.resources)
}

fn codes(diags: &[Diagnostic]) -> Vec<&str> {
    diags.iter().map(|d| d.code).collect()
}

const APP: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: default}
spec:
  selector: {app: reviews}
  ports:
  - {name: http, port: 9080}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: default}
spec:
  selector:
    matchLabels: {app: reviews, version: v1}
  template:
    metadata:
      labels: {app: reviews, version: v1}
    spec:
      containers:
      - name: reviews
        image: reviews:1
        ports:
        - containerPort: 9080
"#;

fn vs(dest_host: &str, subset: &str, gateways: &str) -> String {
    format!(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: reviews, namespace: default}}\nspec:\n  hosts: [reviews]\n  gateways: {gateways}\n  http:\n  - route:\n    - destination:\n        host: {dest_host}\n        subset: {subset}\n"
    )
}

const DR: &str = r#"
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: default}
spec:
  host: reviews
  subsets:
  - name: v1
    labels: {version: v1}
"#;

#[test]
fn unknown_destination_host() {
    let bad = run(&format!("{APP}{DR}{}", vs("ratings", "v1", "[mesh]")));
    let d = bad.iter().find(|d| d.code == "IST0101").expect("IST0101");
    assert_eq!(
        d.path.as_deref(),
        Some("spec.http[0].route[0].destination.host")
    );
    assert!(d.message.contains("\"ratings\""), "{d}");
    assert_eq!(d.line, Some(45));
    let good = run(&format!("{APP}{DR}{}", vs("reviews", "v1", "[mesh]")));
    assert!(good.is_empty(), "{good:?}");
}

#[test]
fn service_entry_hosts_are_known() {
    let se = "---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {name: ext}\nspec:\n  hosts: ['*.example.com']\n  ports: [{number: 443, name: https, protocol: TLS}]\n  resolution: NONE\n";
    let vs = "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: ext}\nspec:\n  hosts: [api.example.com]\n  tls:\n  - match: [{sniHosts: [api.example.com], port: 443}]\n    route: [{destination: {host: api.example.com}}]\n";
    assert!(run(&format!("{se}{vs}")).is_empty());
    assert_eq!(codes(&run(vs)), ["IST0101"]);
}

#[test]
fn unknown_gateway() {
    let gw = "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: default}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['*']\n";
    let bad = run(&format!("{APP}{DR}{}", vs("reviews", "v1", "[other-gw]")));
    assert_eq!(codes(&bad), ["IST0101"]);
    assert_eq!(bad[0].path.as_deref(), Some("spec.gateways[0]"));
    assert!(bad[0].message.contains("gateway"));
    let good = run(&format!(
        "{APP}{DR}{gw}{}",
        vs("reviews", "v1", "[default/gw]")
    ));
    assert!(good.is_empty(), "{good:?}");
}

#[test]
fn unknown_subset() {
    let bad = run(&format!("{APP}{DR}{}", vs("reviews", "v9", "[mesh]")));
    assert_eq!(codes(&bad), ["IST0101"]);
    assert_eq!(
        bad[0].path.as_deref(),
        Some("spec.http[0].route[0].destination.subset")
    );
    assert!(bad[0].message.contains("reviews+v9"));
    // Without any DestinationRule, a subset cannot be found either.
    assert_eq!(
        codes(&run(&format!("{APP}{}", vs("reviews", "v1", "[mesh]")))),
        ["IST0101"]
    );
}

#[test]
fn subset_without_workloads() {
    let dr = DR.replace(
        "- name: v1\n    labels: {version: v1}",
        "- name: v1\n    labels: {version: v1}\n  - name: v2\n    labels: {version: v2}",
    );
    let bad = run(&format!("{APP}{dr}"));
    assert_eq!(codes(&bad), ["IST0127"]);
    assert_eq!(bad[0].level, Level::Warning);
    assert_eq!(bad[0].path.as_deref(), Some("spec.subsets[1]"));
    assert!(run(&format!("{APP}{DR}")).is_empty());
}

#[test]
fn strict_peer_authentication_against_disabled_tls() {
    let pa = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec:\n  mtls: {mode: STRICT}\n";
    let dr = "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: plain, namespace: default}\nspec:\n  host: reviews.default.svc.cluster.local\n  trafficPolicy:\n    tls: {mode: DISABLE}\n";
    let bad = run(&format!("{APP}{pa}{dr}"));
    assert_eq!(codes(&bad), ["IST0113"]);
    assert_eq!(bad[0].path.as_deref(), Some("spec.trafficPolicy.tls.mode"));
    // A namespace-level PERMISSIVE policy overrides the mesh-wide STRICT one.
    let permissive = "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: default}\nspec:\n  mtls: {mode: PERMISSIVE}\n";
    assert!(run(&format!("{APP}{pa}{permissive}{dr}")).is_empty());
    let mutual = dr.replace("DISABLE", "ISTIO_MUTUAL");
    assert!(run(&format!("{APP}{pa}{mutual}")).is_empty());
}

#[test]
fn conflicting_gateways() {
    let gw = |name: &str, host: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  selector: {{istio: ingressgateway}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: ['{host}']\n"
        )
    };
    let bad = run(&format!(
        "{}{}",
        gw("a", "*.example.com"),
        gw("b", "shop.example.com")
    ));
    assert_eq!(codes(&bad), ["IST0145", "IST0145"]);
    assert!(bad[0].message.contains("default/b"), "{}", bad[0]);
    assert!(
        run(&format!(
            "{}{}",
            gw("a", "shop.example.com"),
            gw("b", "blog.example.com")
        ))
        .is_empty()
    );
}

#[test]
fn service_port_without_protocol() {
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports:\n  - {name: web, port: 80}\n";
    let bad = run(svc);
    assert_eq!(codes(&bad), ["IST0118"]);
    assert_eq!(bad[0].level, Level::Info);
    assert!(run(&svc.replace("name: web, port", "name: http-web, port")).is_empty());
    assert!(
        run(&svc.replace(
            "{name: web, port: 80}",
            "{name: web, port: 80, appProtocol: http}"
        ))
        .is_empty()
    );
}
