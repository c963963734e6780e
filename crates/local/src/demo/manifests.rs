//! The demo's manifests, embedded in the binary and written to a directory
//! the user can edit while the demo runs (the control plane watches it).

use std::path::Path;

/// (file name, content) of every demo manifest.
pub const FILES: [(&str, &str); 6] = [
    ("00-namespaces.yaml", NAMESPACES),
    ("10-services.yaml", SERVICES),
    ("20-deployments.yaml", DEPLOYMENTS),
    ("30-shipping-canary.yaml", SHIPPING_CANARY),
    ("40-inventory-circuit-breaker.yaml", INVENTORY_BREAKER),
    ("50-mtls.yaml", MTLS),
];

/// The VirtualService file whose weights shift the shipping traffic.
pub const CANARY_FILE: &str = "30-shipping-canary.yaml";

const NAMESPACES: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: istio-system
---
apiVersion: v1
kind: Namespace
metadata:
  name: default
";

const SERVICES: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: order}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: inventory}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: shipping}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: loadgen}
---
apiVersion: v1
kind: Service
metadata: {name: order}
spec:
  selector: {app: order}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: inventory}
spec:
  selector: {app: inventory}
  ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: shipping}
spec:
  selector: {app: shipping}
  ports: [{name: http, port: 8080}]
";

const DEPLOYMENTS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: order}
spec:
  selector: {matchLabels: {app: order}}
  template:
    metadata: {labels: {app: order, version: v1}}
    spec:
      serviceAccountName: order
      containers:
      - name: order
        command: [meshwork, demo-app, order]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: inventory}
spec:
  selector: {matchLabels: {app: inventory}}
  template:
    metadata: {labels: {app: inventory, version: v1}}
    spec:
      serviceAccountName: inventory
      containers:
      - name: inventory
        command: [meshwork, demo-app, inventory]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shipping-v1}
spec:
  selector: {matchLabels: {app: shipping, version: v1}}
  template:
    metadata: {labels: {app: shipping, version: v1}}
    spec:
      serviceAccountName: shipping
      containers:
      - name: shipping
        command: [meshwork, demo-app, shipping]
        env: [{name: VERSION, value: v1}]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: shipping-v2}
spec:
  selector: {matchLabels: {app: shipping, version: v2}}
  template:
    metadata: {labels: {app: shipping, version: v2}}
    spec:
      serviceAccountName: shipping
      containers:
      - name: shipping
        command: [meshwork, demo-app, shipping]
        env: [{name: VERSION, value: v2}, {name: DELAY_MS, value: \"5\"}]
        ports: [{containerPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: loadgen}
spec:
  selector: {matchLabels: {app: loadgen}}
  template:
    metadata: {labels: {app: loadgen, version: v1}}
    spec:
      serviceAccountName: loadgen
      containers:
      - name: loadgen
        command: [meshwork, demo-app, loadgen]
        env: [{name: RATE, value: \"50\"}]
";

const SHIPPING_CANARY: &str = "\
# Shipping canary: 90% of orders are quoted by v1, 10% by v2.
# Edit the weights while the demo runs: the split follows within a second.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: shipping}
spec:
  hosts: [shipping]
  http:
  - route:
    - destination: {host: shipping, subset: v1}
      weight: 90
    - destination: {host: shipping, subset: v2}
      weight: 10
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: shipping}
spec:
  host: shipping
  subsets:
  - name: v1
    labels: {version: v1}
  - name: v2
    labels: {version: v2}
";

const INVENTORY_BREAKER: &str = "\
# Inventory circuit breaker: few connections and pending requests, and
# endpoints that keep failing are ejected for a while.
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: inventory}
spec:
  host: inventory
  trafficPolicy:
    connectionPool:
      tcp: {maxConnections: 50}
      http: {http1MaxPendingRequests: 100, maxRequestsPerConnection: 0}
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 5s
      baseEjectionTime: 30s
      maxEjectionPercent: 100
";

const MTLS: &str = "\
# Mesh-wide strict mutual TLS: every workload accepts only mTLS.
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: STRICT
";

/// Writes the manifests into `dir` unless it already has them (the user's
/// edits are kept); returns whether they were written.
pub fn write(dir: &Path) -> std::io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    if FILES.iter().all(|(name, _)| dir.join(name).exists()) {
        return Ok(false);
    }
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(true)
}

/// The canary file with new weights for v1 and v2.
pub fn canary_with_weights(v1: u32, v2: u32) -> String {
    SHIPPING_CANARY
        .replacen("weight: 90", &format!("weight: {v1}"), 1)
        .replacen("weight: 10", &format!("weight: {v2}"), 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_config::Level;

    #[test]
    fn manifests_load_without_errors_and_plan_five_pods() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write(dir.path()).unwrap());
        assert!(!write(dir.path()).unwrap(), "a second write keeps edits");
        let loaded = meshwork_config::load_paths(&[dir.path().to_path_buf()]);
        let errors: Vec<String> = loaded
            .diagnostics
            .iter()
            .filter(|d| d.level == Level::Error)
            .map(|d| d.to_string())
            .collect();
        assert!(errors.is_empty(), "{errors:?}");
        let mut diags = Vec::new();
        let plan = crate::plan::plan(
            &loaded.resources,
            "10.88.0.0/24".parse().unwrap(),
            "10.96.0.0/24".parse().unwrap(),
            &mut diags,
        )
        .unwrap();
        let names: Vec<&str> = plan.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "order-0",
                "inventory-0",
                "shipping-v1-0",
                "shipping-v2-0",
                "loadgen-0"
            ]
        );
        assert_eq!(plan.services.len(), 3);
        let edited = canary_with_weights(50, 50);
        assert!(edited.contains("weight: 50") && !edited.contains("weight: 90"));
    }
}
