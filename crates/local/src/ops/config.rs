//! `meshwork proxy-config {listeners|routes|clusters|endpoints|secrets}`:
//! tables from a sidecar's admin `/config_dump` and `/certs`, shaped like
//! `istioctl proxy-config`'s (`-o json` prints the raw documents instead).

use serde_json::Value;

use super::status::render;

/// What to show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    /// Listeners (LDS).
    Listeners,
    /// Route configurations (RDS).
    Routes,
    /// Clusters (CDS).
    Clusters,
    /// Endpoints of every cluster (EDS and health).
    Endpoints,
    /// Certificates (SDS `default` and `ROOTCA`).
    Secrets,
}

impl std::str::FromStr for Section {
    type Err = String;
    fn from_str(s: &str) -> Result<Section, String> {
        Ok(match s {
            "listeners" | "listener" | "l" => Section::Listeners,
            "routes" | "route" | "r" => Section::Routes,
            "clusters" | "cluster" | "c" => Section::Clusters,
            "endpoints" | "endpoint" | "ep" => Section::Endpoints,
            "secrets" | "secret" | "s" => Section::Secrets,
            other => {
                return Err(format!(
                    "unknown section {other:?}: one of listeners, routes, clusters, endpoints, secrets"
                ));
            }
        })
    }
}

impl Section {
    /// The admin path holding this section.
    pub fn admin_path(self) -> &'static str {
        match self {
            Section::Secrets => "/certs",
            _ => "/config_dump",
        }
    }
}

fn dump_part<'a>(dump: &'a Value, type_suffix: &str, key: &str) -> Vec<&'a Value> {
    dump["configs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| {
            c["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with(type_suffix))
        })
        .flat_map(|c| c[key].as_array().into_iter().flatten())
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A cluster's discovery type without its details: `Eds("…")` → `EDS`.
fn kind(v: &Value) -> String {
    let t = s(v);
    let head = t.split(['(', ' ', '{']).next().unwrap_or("").to_string();
    match head.as_str() {
        "Eds" => "EDS".into(),
        "Static" => "STATIC".into(),
        "OriginalDst" => "ORIGINAL_DST".into(),
        "StrictDns" => "STRICT_DNS".into(),
        "LogicalDns" => "LOGICAL_DNS".into(),
        _ => head,
    }
}

/// `outbound|8080|v1|shipping.default.svc.cluster.local` → (fqdn, port,
/// subset, direction).
fn cluster_parts(name: &str) -> (String, String, String, String) {
    let p: Vec<&str> = name.split('|').collect();
    if p.len() == 4 {
        (
            if p[3].is_empty() {
                "-".into()
            } else {
                p[3].into()
            },
            p[1].into(),
            if p[2].is_empty() {
                "-".into()
            } else {
                p[2].into()
            },
            p[0].to_ascii_uppercase(),
        )
    } else {
        (name.into(), "-".into(), "-".into(), "-".into())
    }
}

/// The table for `section` from the admin document (`/config_dump`, or
/// `/certs` for secrets).
pub fn table(section: Section, doc: &Value) -> String {
    match section {
        Section::Clusters => {
            let rows: Vec<Vec<String>> =
                dump_part(doc, "ClustersConfigDump", "dynamic_active_clusters")
                    .iter()
                    .map(|c| {
                        let (fqdn, port, subset, dir) =
                            cluster_parts(c["name"].as_str().unwrap_or(""));
                        vec![fqdn, port, subset, dir, kind(&c["type"])]
                    })
                    .collect();
            render(
                &["SERVICE FQDN", "PORT", "SUBSET", "DIRECTION", "TYPE"],
                &rows,
            )
        }
        Section::Endpoints => {
            let mut rows = Vec::new();
            for c in dump_part(doc, "ClustersConfigDump", "dynamic_active_clusters") {
                for e in c["endpoints"].as_array().into_iter().flatten() {
                    rows.push(vec![
                        s(&e["address"]),
                        if e["healthy"].as_bool().unwrap_or(true) {
                            "HEALTHY"
                        } else {
                            "UNHEALTHY"
                        }
                        .into(),
                        if e["outlier_ejected"].as_bool().unwrap_or(false) {
                            "EJECTED"
                        } else {
                            "OK"
                        }
                        .into(),
                        s(&c["name"]),
                    ]);
                }
            }
            render(&["ENDPOINT", "STATUS", "OUTLIER CHECK", "CLUSTER"], &rows)
        }
        Section::Listeners => {
            let mut rows = Vec::new();
            for l in dump_part(doc, "ListenersConfigDump", "dynamic_listeners") {
                let chains: Vec<&Value> = l["filter_chains"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(
                        l["default_filter_chain"]
                            .as_object()
                            .map(|_| &l["default_filter_chain"]),
                    )
                    .collect();
                for c in chains {
                    let f = &c["filter"];
                    let dest = if let Some(h) = f.get("http_connection_manager") {
                        match &h["rds"] {
                            Value::String(r) => format!("Route: {r}"),
                            other => format!("Inline Route: {}", s(&other["inline"])),
                        }
                    } else if let Some(t) = f.get("tcp_proxy") {
                        format!("Cluster: {}", s(&t["clusters"]))
                    } else {
                        "-".into()
                    };
                    rows.push(vec![s(&l["name"]), s(&l["address"]), s(&c["name"]), dest]);
                }
            }
            render(&["LISTENER", "ADDRESS", "CHAIN", "DESTINATION"], &rows)
        }
        Section::Routes => {
            let mut rows = Vec::new();
            for r in dump_part(doc, "RoutesConfigDump", "dynamic_route_configs") {
                for vh in r["virtual_hosts"].as_array().into_iter().flatten() {
                    let domains: Vec<String> = vh["domains"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d.as_str().map(String::from))
                        .collect();
                    let shown = if domains.len() > 2 {
                        format!("{} +{} more", domains[0], domains.len() - 1)
                    } else {
                        domains.join(", ")
                    };
                    for rt in vh["routes"].as_array().into_iter().flatten() {
                        let action = &rt["action"];
                        let to = action
                            .get("route")
                            .map(|a| s(&a["clusters"]))
                            .or_else(|| {
                                action
                                    .get("direct_response")
                                    .map(|d| format!("direct {}", s(d)))
                            })
                            .unwrap_or_else(|| "redirect".into());
                        rows.push(vec![
                            s(&r["name"]),
                            s(&vh["name"]),
                            shown.clone(),
                            s(&rt["match"]),
                            to,
                        ]);
                    }
                }
            }
            render(&["NAME", "VHOST NAME", "DOMAINS", "MATCH", "TO"], &rows)
        }
        Section::Secrets => {
            let mut rows = Vec::new();
            for group in doc["certificates"].as_array().into_iter().flatten() {
                for (kind, key) in [("Cert Chain", "cert_chain"), ("CA", "ca_cert")] {
                    for c in group[key].as_array().into_iter().flatten() {
                        let valid = c.get("error").is_none();
                        rows.push(vec![
                            s(&c["path"]),
                            kind.into(),
                            if valid { "ACTIVE" } else { "INVALID" }.into(),
                            s(&c["serial_number"]),
                            s(&c["expiration_time"]),
                            s(&c["valid_from"]),
                        ]);
                    }
                }
            }
            let mut out = render(
                &[
                    "RESOURCE NAME",
                    "TYPE",
                    "STATUS",
                    "SERIAL NUMBER",
                    "NOT AFTER",
                    "NOT BEFORE",
                ],
                &rows,
            );
            if let Some(id) = doc["spiffe_id"].as_str() {
                out.push_str(&format!("identity: {id}\n"));
            } else if rows.is_empty() {
                out.push_str(
                    "(no certificates: this proxy has no CA configured, so it runs without mTLS)\n",
                );
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dump() -> Value {
        json!({"configs": [
            {"@type": "type.googleapis.com/envoy.admin.v3.ListenersConfigDump", "dynamic_listeners": [
                {"name": "0.0.0.0_8080", "address": "0.0.0.0:8080", "filter_chains": [
                    {"name": "http", "filter": {"http_connection_manager": {"rds": "8080"}}}],
                 "default_filter_chain": {"name": "PassthroughFilterChain", "filter": {"tcp_proxy": {"clusters": ["PassthroughCluster"]}}}}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.RoutesConfigDump", "dynamic_route_configs": [
                {"name": "8080", "virtual_hosts": [{"name": "shipping.default.svc.cluster.local:8080",
                  "domains": ["shipping.default.svc.cluster.local", "shipping", "shipping.default"],
                  "routes": [{"match": "Prefix(\"/\")", "action": {"route": {"clusters": "[v1 90, v2 10]"}}}]}]}]},
            {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump", "dynamic_active_clusters": [
                {"name": "outbound|8080|v1|shipping.default.svc.cluster.local", "type": "Eds(\"outbound|8080|v1|shipping.default.svc.cluster.local\")",
                 "endpoints": [{"address": "10.88.0.4:8080", "healthy": true, "outlier_ejected": false}]},
                {"name": "PassthroughCluster", "type": "OriginalDst", "endpoints": []}]}
        ]})
    }

    #[test]
    fn tables_like_istioctl() {
        let d = dump();
        let c = table(Section::Clusters, &d);
        assert!(
            c.contains("shipping.default.svc.cluster.local   8080   v1       OUTBOUND    EDS"),
            "{c}"
        );
        assert!(c.contains("PassthroughCluster"), "{c}");
        let e = table(Section::Endpoints, &d);
        assert!(e.contains("10.88.0.4:8080   HEALTHY   OK"), "{e}");
        let l = table(Section::Listeners, &d);
        assert!(
            l.contains("Route: 8080") && l.contains("Cluster: [\"PassthroughCluster\"]"),
            "{l}"
        );
        let r = table(Section::Routes, &d);
        assert!(
            r.contains("shipping.default.svc.cluster.local +2 more"),
            "{r}"
        );
        assert!(r.contains("[v1 90, v2 10]"), "{r}");
        let none = table(Section::Secrets, &json!({"certificates": []}));
        assert!(none.contains("no certificates"), "{none}");
        let certs = json!({"spiffe_id": "spiffe://cluster.local/ns/default/sa/order", "certificates": [
            {"ca_cert": [{"path": "ROOTCA", "serial_number": "01", "expiration_time": "2036-01-01T00:00:00Z", "valid_from": "2026-01-01T00:00:00Z"}],
             "cert_chain": [{"path": "default", "serial_number": "02", "expiration_time": "2026-11-23T00:00:00Z", "valid_from": "2026-11-22T00:00:00Z"}]}]});
        let sec = table(Section::Secrets, &certs);
        assert!(
            sec.contains("default         Cert Chain   ACTIVE   02"),
            "{sec}"
        );
        assert!(sec.contains("ROOTCA          CA"), "{sec}");
        assert!(
            sec.contains("identity: spiffe://cluster.local/ns/default/sa/order"),
            "{sec}"
        );
        assert!("nope".parse::<Section>().is_err());
    }
}
