//! The embedded schemas are exactly Istio's CRD schemas (without their
//! descriptions): regenerate with `codegen/gen.py` when this fails.

use meshwork_config::schema::schemas;
use meshwork_config::yaml::parse_stream;
use serde_json::Value;

const CRDS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/fixtures/istio/crds/crd-all.gen.yaml"
);

fn strip(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| *k != "description")
                .map(|(k, v)| (k.clone(), strip(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(strip).collect()),
        other => other.clone(),
    }
}

#[test]
fn embedded_schemas_match_the_crds() {
    let text = std::fs::read_to_string(CRDS).expect("CRDs present");
    let mut checked = 0;
    for doc in parse_stream(&text) {
        let crd = doc.content.expect("CRD file parses").to_json();
        let kind = crd["spec"]["names"]["kind"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let group = crd["spec"]["group"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        for v in crd["spec"]["versions"].as_array().into_iter().flatten() {
            let api = format!("{group}/{}", v["name"].as_str().unwrap_or_default());
            let Some(embedded) = schemas().get(&api, &kind) else {
                assert!(
                    matches!(
                        kind.as_str(),
                        "EnvoyFilter" | "WasmPlugin" | "TrafficExtension"
                    ),
                    "{api} {kind} is not embedded"
                );
                continue;
            };
            let spec = strip(&v["schema"]["openAPIV3Schema"]["properties"]["spec"]);
            assert_eq!(embedded.spec, spec, "{api} {kind}");
            checked += 1;
        }
    }
    assert!(checked >= 30, "{checked}");
}
