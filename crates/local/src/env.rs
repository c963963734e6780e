//! Kubernetes-style service environment variables
//! (`ORDER_SERVICE_HOST`, `ORDER_SERVICE_PORT`, `ORDER_SERVICE_PORT_HTTP`,
//! `ORDER_PORT_8080_TCP_ADDR` …), as the kubelet sets them: how a
//! workload finds its dependencies without DNS, and how explicit mode
//! points workloads at their sidecar.

/// The variables for service `name` at `host` with `ports` ((name, port),
/// the first is the main one).
pub fn service_env(name: &str, host: &str, ports: &[(String, u16)]) -> Vec<(String, String)> {
    let prefix = name.to_ascii_uppercase().replace(['-', '.'], "_");
    let mut out = Vec::new();
    let Some((_, first)) = ports.first() else {
        return out;
    };
    out.push((format!("{prefix}_SERVICE_HOST"), host.to_string()));
    out.push((format!("{prefix}_SERVICE_PORT"), first.to_string()));
    out.push((format!("{prefix}_PORT"), format!("tcp://{host}:{first}")));
    for (pname, port) in ports {
        if !pname.is_empty() {
            let p = pname.to_ascii_uppercase().replace(['-', '.'], "_");
            out.push((format!("{prefix}_SERVICE_PORT_{p}"), port.to_string()));
        }
        let base = format!("{prefix}_PORT_{port}_TCP");
        out.push((base.clone(), format!("tcp://{host}:{port}")));
        out.push((format!("{base}_PROTO"), "tcp".into()));
        out.push((format!("{base}_PORT"), port.to_string()));
        out.push((format!("{base}_ADDR"), host.to_string()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn kubelet_names() {
        let env: BTreeMap<_, _> = service_env(
            "shipping-v2",
            "10.96.0.3",
            &[("http".into(), 8080), ("".into(), 9090)],
        )
        .into_iter()
        .collect();
        assert_eq!(env["SHIPPING_V2_SERVICE_HOST"], "10.96.0.3");
        assert_eq!(env["SHIPPING_V2_SERVICE_PORT"], "8080");
        assert_eq!(env["SHIPPING_V2_SERVICE_PORT_HTTP"], "8080");
        assert_eq!(env["SHIPPING_V2_PORT"], "tcp://10.96.0.3:8080");
        assert_eq!(env["SHIPPING_V2_PORT_9090_TCP_ADDR"], "10.96.0.3");
        assert_eq!(env["SHIPPING_V2_PORT_9090_TCP_PORT"], "9090");
        assert!(service_env("x", "h", &[]).is_empty());
    }
}
