//! Outbound capture the way Istio's sidecar does it, with the real binary.
//!
//! Inside a fresh network namespace, iptables REDIRECTs the app's outbound
//! TCP to `meshwork proxy`'s capture port 15001 (the proxy itself runs as
//! uid 1337 and is exempt, as with `istio-iptables`). The proxy gets its
//! config over ADS on a Unix domain socket served by this test process (the
//! filesystem is shared across namespaces), as Istio's `virtualOutbound`
//! listener with `use_original_dst`, a `bind_to_port: false` listener
//! `0.0.0.0_9999` and an ORIGINAL_DST `PassthroughCluster`. The test proves:
//!
//! - HTTP to `<addr>:9999` is dispatched by its original destination
//!   (SO_ORIGINAL_DST) to `0.0.0.0_9999`, routed by RDS to
//!   `outbound|9999||backend.default.svc.cluster.local` and answered by the
//!   backend; the access log line names the original destination;
//! - TCP to `<addr>:7777`, which no listener claims, takes the 15001
//!   listener's own PassthroughCluster chain to the original destination,
//!   with half-close carried through (the echo server answers only after it
//!   sees the client's FIN);
//! - SIGTERM drains and exits 0 within the drain period.
//!
//! Requirements: root, iproute2 (`ip netns`), iptables, setpriv
//! (util-linux) and python3 for workloads. Without root or `ip netns` the
//! test prints why and passes; with them it must run (a missing iptables or
//! python3 fails it). The `meshwork` binary is built first if needed (see
//! `meshwork_e2e::binary`); `MESHWORK_BIN` overrides it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use meshwork_e2e::netns::{self, Netns};
use meshwork_e2e::pod::{add_addresses, path, python3, text};
use meshwork_e2e::process::Proc;
use meshwork_e2e::{binary, poll};
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::Cluster;
use meshwork_xds::envoy_types::pb::envoy::config::cluster::v3::cluster::{
    ClusterDiscoveryType, DiscoveryType, LbPolicy,
};
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::address::Address as AddressKind;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::socket_address::PortSpecifier;
use meshwork_xds::envoy_types::pb::envoy::config::core::v3::{
    Address, SocketAddress, TrafficDirection,
};
use meshwork_xds::envoy_types::pb::envoy::config::endpoint::v3::lb_endpoint::HostIdentifier;
use meshwork_xds::envoy_types::pb::envoy::config::endpoint::v3::{
    ClusterLoadAssignment, Endpoint, LbEndpoint, LocalityLbEndpoints,
};
use meshwork_xds::envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
use meshwork_xds::envoy_types::pb::envoy::config::listener::v3::{Filter, FilterChain, Listener};
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::route::Action;
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::route_action::ClusterSpecifier;
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::route_match::PathSpecifier;
use meshwork_xds::envoy_types::pb::envoy::config::route::v3::{
    Route, RouteAction, RouteConfiguration, RouteMatch, VirtualHost,
};
use meshwork_xds::envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::http_connection_manager::RouteSpecifier;
use meshwork_xds::envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::{
    HttpConnectionManager, Rds,
};
use meshwork_xds::envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
    TcpProxy, tcp_proxy,
};
use meshwork_xds::envoy_types::pb::google::protobuf::{BoolValue, Duration as PbDuration};
use meshwork_xds::server::AdsServer;
use meshwork_xds::{TypeUrl, pack};
use serde_json::Value;

/// Istio's uid for the proxy, exempt from capture.
const PROXY_UID: &str = "1337";
const OUTBOUND: &str = "outbound|9999||backend.default.svc.cluster.local";
const PASSTHROUGH: &str = "PassthroughCluster";
const NODE_ID: &str = "sidecar~127.0.0.1~client.default~default.svc.cluster.local";
const DRAIN: Duration = Duration::from_secs(2);

#[test]
fn outbound_capture_dispatches_on_the_original_destination() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("SKIPPED original_dst e2e: {why}");
        return;
    }
    let started = Instant::now();
    for tool in ["iptables", "setpriv"] {
        let ok = Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "{tool} is required (apt-get install iptables util-linux)"
        );
    }
    let python = python3();
    let bin = binary::meshwork();

    // Files shared with the namespace: the workloads' scripts, the backend's
    // document root and the xDS socket. uid 1337 must reach the socket.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    let token = format!("meshwork e2e document {}", std::process::id());
    std::fs::write(www.join("hello.txt"), &token).unwrap();
    let client_py = dir.path().join("client.py");
    std::fs::write(&client_py, CLIENT_PY).unwrap();
    let echo_py = dir.path().join("echo_server.py");
    std::fs::write(&echo_py, ECHO_SERVER_PY).unwrap();

    // The control plane: ADS over a Unix domain socket.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let ads = AdsServer::new();
    serve_config(&ads);
    let sock = dir.path().join("xds.sock");
    let uds = {
        let _rt = rt.enter();
        tokio::net::UnixListener::bind(&sock).unwrap()
    };
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    rt.spawn(ads.clone().serve_unix(uds));

    // The pod: a namespace with an address to call and istio-iptables' rules.
    // Declared before the processes so that they stop before it is deleted.
    let ns = Netns::create("mw-e2e");
    let addr = format!("10.233.{}.2", std::process::id() % 250);
    add_addresses(&ns, &[&addr]);
    ns.run([
        "iptables",
        "-t",
        "nat",
        "-I",
        "OUTPUT",
        "-m",
        "owner",
        "--uid-owner",
        PROXY_UID,
        "-j",
        "RETURN",
    ]);
    for port in ["9999", "7777"] {
        ns.run([
            "iptables",
            "-t",
            "nat",
            "-A",
            "OUTPUT",
            "-p",
            "tcp",
            "-d",
            &addr,
            "--dport",
            port,
            "-j",
            "REDIRECT",
            "--to-ports",
            "15001",
        ]);
    }

    let www_s = www.to_str().unwrap();
    let _http_backend = Proc::spawn(
        "http backend",
        ns.command(
            &python,
            [
                "-m",
                "http.server",
                "8000",
                "--bind",
                "127.0.0.1",
                "--directory",
                www_s,
            ],
        ),
    );
    let _echo_backend = Proc::spawn(
        "echo backend",
        ns.command(&python, [path(&echo_py), "7777"]),
    );
    let client = |args: &[&str]| {
        let mut argv = vec![python.to_str().unwrap(), path(&client_py)];
        argv.extend_from_slice(args);
        ns.output(argv)
    };
    for port in ["8000", "7777"] {
        let o = client(&["wait-tcp", "127.0.0.1", port, "10"]);
        assert!(o.status.success(), "backend on {port}: {}", text(&o.stderr));
    }

    // The sidecar, as uid 1337.
    let xds_address = format!("unix://{}", sock.display());
    let drain = format!("{}s", DRAIN.as_secs());
    let mut command = ns.command(
        "setpriv",
        [
            "--reuid",
            PROXY_UID,
            "--regid",
            PROXY_UID,
            "--clear-groups",
            path(&bin),
            "proxy",
            "--xds-address",
            &xds_address,
            "--workload",
            "client",
            "--namespace",
            "default",
            "--drain-period",
            &drain,
        ],
    );
    command.env("NO_COLOR", "1");
    let mut proxy = Proc::spawn("meshwork proxy", command);
    let o = client(&["wait-ready", "http://127.0.0.1:15021/healthz/ready", "30"]);
    assert!(
        o.status.success(),
        "proxy never became ready: {}\n{}",
        text(&o.stderr),
        proxy.transcript()
    );
    let node = ads.nodes().get(NODE_ID).cloned();
    assert!(
        node.as_ref().is_some_and(|n| n.connected
            && [TypeUrl::Listener, TypeUrl::Route, TypeUrl::Cluster]
                .iter()
                .all(|t| n.types.get(t).is_some_and(
                    |s| !s.acked_version.is_empty() && s.acked_version == s.sent_version
                ))),
        "the proxy ACKed its config over the socket: {node:?}"
    );

    // 1. HTTP through the capture port to the listener of the original port.
    let url = format!("http://{addr}:9999/hello.txt");
    let o = client(&["get", &url, "10"]);
    assert!(
        o.status.success(),
        "GET {url} through the capture port failed: {}\n{}",
        text(&o.stderr),
        proxy.transcript()
    );
    assert_eq!(text(&o.stdout), token, "the backend's document");
    let line = access_log(&proxy, |l| {
        l["downstream_local_address"] == format!("{addr}:9999").as_str()
            && l["upstream_cluster"] == OUTBOUND
    });
    assert_eq!(line["response_code"], 200, "{line}");
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["upstream_host"], "127.0.0.1:8000", "{line}");
    assert_eq!(line["path"], "/hello.txt", "{line}");

    // 2. TCP to a port no listener claims: the PassthroughCluster chain of
    // the capture listener, to the original destination, with half-close.
    let o = client(&["echo", &addr, "7777", "262144"]);
    assert!(
        o.status.success(),
        "echo via PassthroughCluster failed: {}\n{}",
        text(&o.stderr),
        proxy.transcript()
    );
    let echo: Value = serde_json::from_str(&text(&o.stdout)).unwrap();
    assert_eq!(echo["sent"], 262144, "{echo}");
    assert_eq!(echo["echoed_intact"], true, "{echo}");
    assert_eq!(
        echo["after_eof"], "|eof-seen",
        "the server saw our FIN and answered on the other half: {echo}"
    );
    let line = access_log(&proxy, |l| {
        l["downstream_local_address"] == format!("{addr}:7777").as_str()
            && l["upstream_cluster"] == PASSTHROUGH
    });
    assert_eq!(
        line["upstream_host"],
        format!("{addr}:7777").as_str(),
        "{line}"
    );
    assert_eq!(line["response_flags"], "-", "{line}");
    assert_eq!(line["bytes_received"], 262144, "{line}");

    // 3. SIGTERM: drain and exit 0.
    proxy.signal("TERM");
    let margin = Duration::from_secs(5);
    let status = proxy.wait_timeout(DRAIN + margin).unwrap_or_else(|| {
        panic!(
            "proxy still running {:?} after SIGTERM\n{}",
            DRAIN + margin,
            proxy.transcript()
        )
    });
    assert!(
        status.success(),
        "proxy exit: {status}\n{}",
        proxy.transcript()
    );
    eprintln!(
        "original_dst e2e in namespace {} took {:?}",
        ns.name(),
        started.elapsed()
    );
}

// === the pod ===

/// The first access log line (JSON) that `pred` accepts, waiting for the
/// log writer; panics with the proxy's output when none comes.
fn access_log(proxy: &Proc, pred: impl Fn(&Value) -> bool) -> Value {
    poll(Duration::from_secs(10), || {
        proxy
            .stdout_lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| pred(l))
    })
    .unwrap_or_else(|| panic!("no matching access log line\n{}", proxy.transcript()))
}

/// The app's side. `get` retries only a refused connection (the capture
/// listener binds just after readiness turns 200), until its deadline.
const CLIENT_PY: &str = r#"
import json, socket, sys, time, urllib.error, urllib.request

cmd, args = sys.argv[1], sys.argv[2:]
if cmd == "wait-tcp":
    host, port, end = args[0], int(args[1]), time.monotonic() + float(args[2])
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            sys.exit(0)
        except OSError as e:
            if time.monotonic() > end:
                sys.exit(f"{host}:{port} does not accept connections: {e}")
            time.sleep(0.05)
elif cmd == "wait-ready":
    url, end = args[0], time.monotonic() + float(args[1])
    while True:
        try:
            if urllib.request.urlopen(url, timeout=1).status == 200:
                sys.exit(0)
        except (urllib.error.URLError, OSError) as e:
            last = e
        if time.monotonic() > end:
            sys.exit(f"{url} not ready: {last}")
        time.sleep(0.05)
elif cmd == "get":
    url, end = args[0], time.monotonic() + float(args[1])
    while True:
        try:
            r = urllib.request.urlopen(url, timeout=10)
            sys.stdout.write(r.read().decode())
            sys.exit(0)
        except urllib.error.HTTPError as e:
            sys.exit(f"HTTP {e.code} {dict(e.headers)} {e.read()!r}")
        except urllib.error.URLError as e:
            if not isinstance(e.reason, ConnectionRefusedError) or time.monotonic() > end:
                raise
            time.sleep(0.05)
elif cmd == "echo":
    host, port, n = args[0], int(args[1]), int(args[2])
    payload = bytes(i % 251 for i in range(n))
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(payload)
    s.shutdown(socket.SHUT_WR)
    got = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        got += chunk
    print(json.dumps({
        "sent": n,
        "received": len(got),
        "echoed_intact": got[:n] == payload,
        "after_eof": got[n:].decode(errors="replace"),
    }))
else:
    sys.exit(f"unknown command {cmd}")
"#;

/// Echoes until the client's FIN, then answers `|eof-seen` and closes.
const ECHO_SERVER_PY: &str = r#"
import socketserver, sys

class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            data = self.request.recv(65536)
            if not data:
                break
            self.request.sendall(data)
        self.request.sendall(b"|eof-seen")

class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

Server(("0.0.0.0", int(sys.argv[1])), Echo).serve_forever()
"#;

// === the control plane's config, named as istiod names it ===

fn serve_config(ads: &AdsServer) {
    let outbound_listener = Listener {
        name: "0.0.0.0_9999".into(),
        address: Some(socket("0.0.0.0", 9999)),
        bind_to_port: Some(BoolValue { value: false }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            filters: vec![Filter {
                name: "envoy.filters.network.http_connection_manager".into(),
                config_type: Some(ConfigType::TypedConfig(pack(&HttpConnectionManager {
                    stat_prefix: "outbound_0.0.0.0_9999".into(),
                    route_specifier: Some(RouteSpecifier::Rds(Rds {
                        route_config_name: "9999".into(),
                        ..Default::default()
                    })),
                    ..Default::default()
                }))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let virtual_outbound = Listener {
        name: "virtualOutbound".into(),
        address: Some(socket("0.0.0.0", 15001)),
        use_original_dst: Some(BoolValue { value: true }),
        traffic_direction: TrafficDirection::Outbound as i32,
        filter_chains: vec![FilterChain {
            name: "PassthroughFilterChain".into(),
            filters: vec![Filter {
                name: "envoy.filters.network.tcp_proxy".into(),
                config_type: Some(ConfigType::TypedConfig(pack(&TcpProxy {
                    stat_prefix: PASSTHROUGH.into(),
                    cluster_specifier: Some(tcp_proxy::ClusterSpecifier::Cluster(
                        PASSTHROUGH.into(),
                    )),
                    ..Default::default()
                }))),
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let route = RouteConfiguration {
        name: "9999".into(),
        virtual_hosts: vec![VirtualHost {
            name: "backend.default.svc.cluster.local:9999".into(),
            domains: vec!["*".into()],
            routes: vec![Route {
                name: "default".into(),
                r#match: Some(RouteMatch {
                    path_specifier: Some(PathSpecifier::Prefix("/".into())),
                    ..Default::default()
                }),
                action: Some(Action::Route(RouteAction {
                    cluster_specifier: Some(ClusterSpecifier::Cluster(OUTBOUND.into())),
                    ..Default::default()
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let timeout = Some(PbDuration {
        seconds: 2,
        nanos: 0,
    });
    let passthrough = Cluster {
        name: PASSTHROUGH.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(
            DiscoveryType::OriginalDst as i32,
        )),
        lb_policy: LbPolicy::ClusterProvided as i32,
        connect_timeout: timeout,
        ..Default::default()
    };
    let backend = Cluster {
        name: OUTBOUND.into(),
        cluster_discovery_type: Some(ClusterDiscoveryType::Type(DiscoveryType::Static as i32)),
        connect_timeout: timeout,
        load_assignment: Some(ClusterLoadAssignment {
            cluster_name: OUTBOUND.into(),
            endpoints: vec![LocalityLbEndpoints {
                lb_endpoints: vec![LbEndpoint {
                    host_identifier: Some(HostIdentifier::Endpoint(Endpoint {
                        address: Some(socket("127.0.0.1", 8000)),
                        ..Default::default()
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    ads.set(
        TypeUrl::Cluster,
        [
            (PASSTHROUGH.to_string(), pack(&passthrough)),
            (OUTBOUND.to_string(), pack(&backend)),
        ],
    );
    ads.set(TypeUrl::Route, [("9999".to_string(), pack(&route))]);
    ads.set(
        TypeUrl::Listener,
        [
            ("virtualOutbound".to_string(), pack(&virtual_outbound)),
            ("0.0.0.0_9999".to_string(), pack(&outbound_listener)),
        ],
    );
}

fn socket(ip: &str, port: u32) -> Address {
    Address {
        address: Some(AddressKind::SocketAddress(SocketAddress {
            address: ip.into(),
            port_specifier: Some(PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}
