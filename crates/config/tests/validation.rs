//! Semantic validation beyond the schema, unknown fields, positions, and
//! robustness against hostile input.

use std::path::Path;

use meshwork_config::diag::{Diagnostic, Level};
use meshwork_config::load_str;

fn errors(yaml: &str) -> Vec<Diagnostic> {
    load_str(Path::new("t.yaml"), yaml)
        .diagnostics
        .into_iter()
        .filter(|d| d.level == Level::Error)
        .collect()
}

/// The single error of `yaml`: its path and message.
fn one_error(yaml: &str) -> (String, String, u32) {
    let errs = errors(yaml);
    assert_eq!(errs.len(), 1, "{errs:#?}");
    let d = &errs[0];
    (
        d.path.clone().unwrap_or_default(),
        d.message.clone(),
        d.line.unwrap_or(0),
    )
}

const VS_HEAD: &str = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: r, namespace: shop}\nspec:\n  hosts: [reviews]\n  http:\n";

#[test]
fn virtual_service_checks() {
    let (path, msg, line) = one_error(&format!(
        "{VS_HEAD}  - route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 0\n    - destination: {{host: reviews, subset: v2}}\n      weight: 0\n"
    ));
    assert_eq!(
        (path.as_str(), msg.as_str(), line),
        ("spec.http[0].route", "total destination weight = 0", 7)
    );

    let (path, msg, _) = one_error(&format!(
        "{VS_HEAD}  - redirect: {{uri: /x}}\n    route:\n    - destination: {{host: reviews}}\n"
    ));
    assert_eq!(path, "spec.http[0]");
    assert!(msg.contains("both route and redirect"));

    let big = "a".repeat(1025);
    let (path, msg, _) = one_error(&format!(
        "{VS_HEAD}  - match:\n    - uri: {{regex: \"{big}\"}}\n    route:\n    - destination: {{host: reviews}}\n"
    ));
    assert_eq!(path, "spec.http[0].match[0].uri.regex");
    assert!(msg.contains("too large"), "{msg}");

    let (path, _, _) = one_error(&format!(
        "{VS_HEAD}  - match:\n    - uri: {{regex: \"(unclosed\"}}\n    route:\n    - destination: {{host: reviews}}\n"
    ));
    assert_eq!(path, "spec.http[0].match[0].uri.regex");

    let (path, msg, _) = one_error(&format!(
        "{VS_HEAD}  - route:\n    - destination: {{host: reviews, subset: V_1}}\n"
    ));
    assert_eq!(path, "spec.http[0].route[0].destination.subset");
    assert!(msg.contains("subset name is invalid"));

    // Durations below 1ms are rejected by the schema's rule.
    let (path, _, _) = one_error(&format!(
        "{VS_HEAD}  - timeout: 10us\n    route:\n    - destination: {{host: reviews}}\n"
    ));
    assert_eq!(path, "spec.http[0].timeout");

    // oneOf: a StringMatch sets one of exact, prefix, regex.
    let (path, msg, _) = one_error(&format!(
        "{VS_HEAD}  - match:\n    - uri: {{exact: /a, prefix: /b}}\n    route:\n    - destination: {{host: reviews}}\n"
    ));
    assert_eq!(path, "spec.http[0].match[0].uri");
    assert!(msg.contains("exact, prefix"), "{msg}");

    let ok = load_str(
        Path::new("t.yaml"),
        &format!(
            "{VS_HEAD}  - match:\n    - uri: {{prefix: /api}}\n    route:\n    - destination: {{host: reviews, subset: v1}}\n      weight: 75\n    - destination: {{host: reviews, subset: v2}}\n      weight: 25\n    retries: {{attempts: 2, retryOn: \"5xx,503\"}}\n"
        ),
    );
    assert!(ok.diagnostics.is_empty(), "{:#?}", ok.diagnostics);
    assert_eq!(ok.resources.len(), 1);
}

#[test]
fn destination_rule_and_gateway_checks() {
    let (path, msg, line) = one_error(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: r}\nspec:\n  host: reviews\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v1\n    labels: {version: v2}\n",
    );
    assert_eq!((path.as_str(), line), ("spec.subsets[1].name", 9));
    assert!(msg.contains("duplicate subset names"));

    let (path, msg, _) = one_error(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 443, name: https, protocol: HTTPS}\n    hosts: ['*.example.com']\n",
    );
    assert_eq!(path, "spec.servers[0].tls");
    assert!(msg.contains("TLS settings"));

    let (path, _, _) = one_error(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: g}\nspec:\n  servers:\n  - port: {number: 80, name: http, protocol: HTTP}\n    hosts: ['bad ns/x.com']\n",
    );
    assert_eq!(path, "spec.servers[0].hosts[0]");
}

#[test]
fn security_checks() {
    let (path, _, _) = one_error(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: p}\nspec:\n  action: CUSTOM\n  rules: [{}]\n",
    );
    assert_eq!(path, "spec.provider");
    let (path, msg, _) = one_error(
        "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {name: p}\nspec:\n  jwtRules:\n  - issuer: me\n    jwksUri: ftp://keys\n",
    );
    assert_eq!(path, "spec.jwtRules[0].jwksUri");
    assert!(msg.contains("http"));
    // Mutually exclusive fields spelled by the schema's CEL rule.
    let errs = errors(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: p}\nspec:\n  portLevelMtls:\n    '8080': {mode: DISABLE}\n",
    );
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn unknown_fields_warn_and_still_load() {
    let loaded = load_str(
        Path::new("t.yaml"),
        &format!("{VS_HEAD}  - route:\n    - destination: {{host: reviews}}\n      wieght: 10\n"),
    );
    assert_eq!(loaded.resources.len(), 1);
    let d = &loaded.diagnostics[0];
    assert_eq!(
        (d.level, d.code, d.line),
        (Level::Warning, "IST0133", Some(9))
    );
    assert_eq!(d.path.as_deref(), Some("spec.http[0].route[0].wieght"));
    assert_eq!(
        d.resource.as_ref().map(ToString::to_string).as_deref(),
        Some("VirtualService shop/r")
    );
}

#[test]
fn every_kind_and_version_loads() {
    for (api, kind, spec) in [
        (
            "networking.istio.io/v1alpha3",
            "Sidecar",
            "egress: [{hosts: ['./*']}]",
        ),
        (
            "networking.istio.io/v1beta1",
            "WorkloadEntry",
            "address: 10.0.0.1",
        ),
        (
            "networking.istio.io/v1",
            "WorkloadGroup",
            "template: {serviceAccount: sa}",
        ),
        (
            "networking.istio.io/v1beta1",
            "ProxyConfig",
            "concurrency: 2",
        ),
        (
            "security.istio.io/v1beta1",
            "PeerAuthentication",
            "mtls: {mode: STRICT}",
        ),
        (
            "telemetry.istio.io/v1",
            "Telemetry",
            "tracing: [{randomSamplingPercentage: 10.0}]",
        ),
    ] {
        let yaml =
            format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{{spec}}}\n");
        let loaded = load_str(Path::new("t.yaml"), &yaml);
        assert!(
            loaded.diagnostics.is_empty(),
            "{kind}: {:#?}",
            loaded.diagnostics
        );
        assert_eq!(loaded.resources.len(), 1, "{kind}");
    }
    let wrong = errors(
        "apiVersion: networking.istio.io/v2\nkind: Gateway\nmetadata: {name: x}\nspec: {}\n",
    );
    assert_eq!(wrong[0].path.as_deref(), Some("apiVersion"));
}

#[test]
fn hostile_input_never_panics() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/fixtures/istio"
    );
    let mut texts = Vec::new();
    for sub in ["validation", "bookinfo"] {
        for e in std::fs::read_dir(format!("{dir}/{sub}")).expect("fixtures") {
            texts.push(std::fs::read_to_string(e.expect("entry").path()).expect("text"));
        }
    }
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    for text in &texts {
        let lines: Vec<&str> = text.lines().collect();
        // Every truncation, and lines shuffled or re-indented at random.
        for cut in 0..lines.len() {
            let _ = load_str(Path::new("t.yaml"), &lines[..cut].join("\n"));
        }
        for _ in 0..50 {
            let mut mutated: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
            for _ in 0..3 {
                let i = (next() as usize) % mutated.len().max(1);
                let j = (next() as usize) % mutated.len().max(1);
                if mutated.is_empty() {
                    break;
                }
                match next() % 4 {
                    0 => mutated.swap(i, j),
                    1 => mutated[i] = format!("  {}", mutated[i]),
                    2 => mutated[i] = mutated[i].replace(':', ": [").replace('-', "{"),
                    _ => {
                        mutated[i] =
                            mutated[i].replace(|c: char| c.is_ascii_digit(), "99999999999999999999")
                    }
                }
            }
            let _ = load_str(Path::new("t.yaml"), &mutated.join("\n"));
        }
    }
}
