//! Interop with a real proxyless gRPC client (issue 4): Python grpcio, with
//! GRPC_XDS_BOOTSTRAP pointing at `meshwork control`, calls
//! `xds:///greeter.default.svc.cluster.local:50051` (and the shorter names
//! translate emits for a client of namespace `default`) and is routed the
//! way the VirtualService says: header `x-user: jason` to v2, everything
//! else 80% v1 / 20% v2 (checked within 5 binomial sigmas).
//!
//! The control plane is the real binary on free loopback ports, configured
//! by a directory holding a ServiceEntry with two STATIC endpoints (two
//! gRPC servers that `tests/interop/grpc_xds.py` starts on loopback), a
//! DestinationRule with subsets v1/v2 and the VirtualService.
//!
//! Requirements: python3 with grpcio (`scripts/test` installs it). Without
//! grpcio the test fails, unless MESHWORK_SKIP_GRPC_INTEROP=1.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use meshwork_e2e::pod::text;
use meshwork_e2e::process::Proc;
use meshwork_e2e::{binary, poll};
use serde_json::Value;

const SCRIPT_DEADLINE: Duration = Duration::from_secs(150);

#[test]
fn grpcio_is_routed_by_a_virtual_service_over_xds() {
    if std::env::var("MESHWORK_SKIP_GRPC_INTEROP").is_ok_and(|v| v == "1") {
        eprintln!("SKIPPED grpc interop: MESHWORK_SKIP_GRPC_INTEROP=1");
        return;
    }
    let grpc = Command::new("python3")
        .args(["-c", "import grpc; print(grpc.__version__)"])
        .output();
    match grpc {
        Ok(o) if o.status.success() => eprintln!("grpcio {}", text(&o.stdout).trim()),
        Ok(o) => panic!(
            "python3 cannot import grpc (grpcio); run scripts/test, which installs it \
             (or set MESHWORK_SKIP_GRPC_INTEROP=1 to skip this test):\n{}",
            text(&o.stderr)
        ),
        Err(e) => panic!("python3 is required for the gRPC interop test: {e}"),
    }
    let bin = binary::meshwork();

    let [v1_port, v2_port, xds_port, debug_port] = free_ports();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("greeter.yaml"), config(v1_port, v2_port)).unwrap();
    let xds = format!("127.0.0.1:{xds_port}");
    let debug = format!("127.0.0.1:{debug_port}");

    let mut control_cmd = Command::new(&bin);
    control_cmd
        .arg("control")
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--xds-address", &xds, "--debug-address", &debug])
        .env("RUST_LOG", "info");
    let mut control = Proc::spawn("meshwork control", control_cmd);
    let ready = poll(Duration::from_secs(20), || {
        http_get(&debug, "/ready").filter(|b| b.contains("ready"))
    });
    if ready.is_none() {
        panic!(
            "meshwork control did not become ready on {debug} (exit: {:?})\n{}",
            control.try_wait(),
            control.transcript()
        );
    }

    let script = meshwork_e2e::manifest_dir().join("interop/grpc_xds.py");
    let mut client_cmd = Command::new("python3");
    client_cmd
        .arg(&script)
        .args(["--xds", &xds])
        .args(["--v1-port", &v1_port.to_string()])
        .args(["--v2-port", &v2_port.to_string()])
        .args(["--deadline", &(SCRIPT_DEADLINE.as_secs() - 30).to_string()])
        .env("PYTHONUNBUFFERED", "1");
    let mut client = Proc::spawn("grpc_xds.py", client_cmd);
    let status = client.wait_timeout(SCRIPT_DEADLINE);
    // Let the output readers drain the pipes of the exited process.
    std::thread::sleep(Duration::from_millis(200));
    let syncz = http_get(&debug, "/debug/syncz").unwrap_or_else(|| "(unavailable)".into());
    let report = || {
        format!(
            "{}\n{}\n--- /debug/syncz ---\n{}",
            client.transcript(),
            control.transcript(),
            pretty(&syncz)
        )
    };
    match status {
        Some(s) if s.success() => {}
        Some(s) => panic!("the grpcio client failed ({s})\n{}", report()),
        None => panic!(
            "the grpcio client did not finish within {SCRIPT_DEADLINE:?}\n{}",
            report()
        ),
    }
    let out = client.stdout_lines();
    for l in out.iter().filter(|l| l.contains("calls")) {
        eprintln!("{l}");
    }
    assert!(
        out.iter().any(|l| l == "grpc xDS interop: OK"),
        "no success line\n{}",
        report()
    );
    // Nothing was NACKed on the way.
    let nodes: Value = serde_json::from_str(&syncz)
        .unwrap_or_else(|e| panic!("syncz is not JSON ({e})\n{}", report()));
    let nodes = nodes.as_array().expect("syncz is a list");
    assert!(
        nodes.iter().any(|n| n["proxy"]
            .as_str()
            .is_some_and(|p| p.contains("grpc-client.default"))),
        "the grpc client is not in syncz\n{}",
        report()
    );
    for node in nodes {
        for (type_name, state) in node.as_object().into_iter().flatten() {
            assert!(
                state.get("nack").is_none_or(Value::is_null),
                "{type_name} NACKed\n{}",
                report()
            );
        }
    }
}

fn config(v1_port: u16, v2_port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [greeter.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{name: grpc, number: 50051, protocol: GRPC}}]
  endpoints:
  - {{address: 127.0.0.1, ports: {{grpc: {v1_port}}}, labels: {{version: v1}}}}
  - {{address: 127.0.0.1, ports: {{grpc: {v2_port}}}, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: greeter, namespace: default}}
spec:
  host: greeter.default.svc.cluster.local
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: greeter, namespace: default}}
spec:
  hosts: [greeter.default.svc.cluster.local]
  http:
  - match:
    - headers:
        x-user: {{exact: jason}}
    route:
    - destination: {{host: greeter.default.svc.cluster.local, subset: v2}}
  - route:
    - destination: {{host: greeter.default.svc.cluster.local, subset: v1}}
      weight: 80
    - destination: {{host: greeter.default.svc.cluster.local, subset: v2}}
      weight: 20
"#
    )
}

/// Distinct free loopback ports (all held until all are chosen).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

/// A plain HTTP/1.0 GET on loopback; the body, if the status is 200.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).ok()?;
    let resp = String::from_utf8_lossy(&buf);
    let (head, body) = resp.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}
