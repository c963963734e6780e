//! End to end: `meshwork demo` on a local mesh of real processes.
//!
//! The demo runs five pods (order, inventory, shipping v1 and v2, a load
//! generator), each in its own network namespace on a bridge with Istio's
//! iptables rules and a sidecar running as uid 1337, and the control plane
//! with its CA in the host namespace. The test checks, from the proxies'
//! own metrics and the operator CLI:
//!
//! - orders succeed through the sidecars, over mutual TLS
//!   (`connection_security_policy="mutual_tls"` on the destination side);
//! - the shipping canary splits 90/10 within five standard deviations;
//! - `meshwork proxy-status` shows every proxy SYNCED for CDS/LDS/EDS/RDS,
//!   and `meshwork proxy-config` shows the shipping subsets and the
//!   workload certificate;
//! - editing the VirtualService file moves the traffic;
//! - a workload that exits is restarted;
//! - after `meshwork demo` is killed (a crash), a second `meshwork up`
//!   cleans up what it left and runs; Ctrl-C then removes every process,
//!   network namespace, the bridge, the host iptables rules and the
//!   `/etc/netns` directories.
//!
//! Requirements: root, iproute2, iptables, setpriv. Without them the test
//! prints why and passes.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshwork_e2e::binary::meshwork;
use meshwork_e2e::mesh::{
    Down, alive, assert_all_synced, assert_demo_traffic, cli, demo_totals, running_state,
};
use meshwork_e2e::netns::skip_reason;
use meshwork_e2e::poll;
use meshwork_e2e::process::Proc;
use meshwork_local::demo::{manifests, summary};
use meshwork_local::state::State;

/// What is left of the mesh on the host: namespaces, links, rules, files,
/// processes.
fn leftovers(name: &str, bridge: &str, pids: &[i32]) -> Vec<String> {
    let mut left = Vec::new();
    let prefix = format!("mw-{name}-");
    let netns = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["netns", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    left.extend(
        netns
            .lines()
            .filter(|l| l.starts_with(&prefix))
            .map(|l| format!("netns {l}")),
    );
    if Path::new("/sys/class/net").join(bridge).exists() {
        left.push(format!("bridge {bridge}"));
    }
    let rules = String::from_utf8_lossy(
        &Command::new("iptables")
            .args(["-S"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    left.extend(
        rules
            .lines()
            .filter(|l| l.contains(bridge))
            .map(|l| format!("rule {l}")),
    );
    if let Ok(rd) = std::fs::read_dir("/etc/netns") {
        left.extend(
            rd.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| format!("dir {}", e.path().display())),
        );
    }
    for p in pids {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        if !stat.is_empty() && !stat.contains(") Z") {
            left.push(format!(
                "process {p}: {}",
                stat.split(' ').nth(1).unwrap_or("")
            ));
        }
    }
    left
}

/// Every process of the mesh: in its pods' namespaces, and the control plane.
fn mesh_pids(s: &State) -> Vec<i32> {
    let mut pids: Vec<i32> = s.processes.iter().map(|p| p.pid).collect();
    for ns in &s.netns {
        pids.extend(netns_pids(ns));
    }
    pids
}

/// Pids of the processes in a network namespace.
fn netns_pids(ns: &str) -> Vec<i32> {
    let out = Command::new("ip")
        .args(["netns", "pids", ns])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .collect()
}

#[test]
fn demo_runs_through_sidecars_with_mtls_and_cleans_up() {
    if let Some(why) = skip_reason() {
        eprintln!("skipping: {why}");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let demo_dir = tmp.path().join("demo");
    let name = format!("e2e{}", std::process::id() % 100_000);
    let octet = 100 + std::process::id() % 150;
    let pod_cidr = format!("10.86.{octet}.0/24");
    let service_cidr = format!("10.98.{octet}.0/24");
    let _down = Down {
        bin: meshwork(),
        name: name.clone(),
        root: root.clone(),
    };
    let mut demo = Command::new(meshwork());
    demo.args(["demo", "--plain", "--duration", "10m", "--name", &name])
        .args(["--pod-cidr", &pod_cidr, "--service-cidr", &service_cidr])
        .arg("--dir")
        .arg(&demo_dir)
        .arg("--state-root")
        .arg(&root)
        .env("NO_COLOR", "1");
    let mut demo = Proc::spawn("meshwork demo", demo);
    let dir = root.join(&name);
    let state = running_state(&dir, demo.pid(), &demo, 5);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let targets: Vec<(String, std::net::SocketAddr)> = state
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.metrics.parse().unwrap()))
        .collect();

    // proxy-status: every proxy connected and SYNCED.
    assert_all_synced(&root, 5);

    // proxy-config: the canary's subsets, and a workload certificate.
    let clusters = cli(&root, &["proxy-config", "clusters", "order-0"]);
    for subset in ["v1", "v2"] {
        assert!(
            clusters
                .lines()
                .any(|l| l.starts_with("shipping.default.svc.cluster.local")
                    && l.contains(&format!(" {subset} "))),
            "{clusters}"
        );
    }
    let secrets = cli(&root, &["proxy-config", "secrets", "order-0"]);
    assert!(
        secrets.contains("spiffe://cluster.local/ns/default/sa/order"),
        "{secrets}"
    );

    // Orders flow over STRICT mTLS; the split is 90/10 within 5 sigma.
    let totals = demo_totals(&targets, 800.0, &demo);
    assert_demo_traffic(&totals, 800.0);

    // Editing the VirtualService moves the traffic: all of it to v2.
    std::fs::write(
        demo_dir.join(manifests::CANARY_FILE),
        manifests::canary_with_weights(0, 100),
    )
    .unwrap();
    let moved = poll(Duration::from_secs(20), || {
        let before = rt.block_on(summary::scrape(&targets));
        std::thread::sleep(Duration::from_secs(1));
        let w = rt.block_on(summary::scrape(&targets)).since(&before);
        let v = w.versions("shipping");
        let (v1, v2) = (
            v.get("v1").copied().unwrap_or(0.0),
            v.get("v2").copied().unwrap_or(0.0),
        );
        (v1 == 0.0 && v2 >= 10.0).then_some(v2)
    });
    assert!(
        moved.is_some(),
        "the split did not follow the edit\n{}",
        demo.transcript()
    );

    // A crash: kill `meshwork demo` outright; its pods keep running.
    let bridge = state.bridge.clone().unwrap();
    let first_pids = mesh_pids(&state);
    demo.signal("KILL");
    demo.wait_timeout(Duration::from_secs(10))
        .expect("demo killed");
    assert!(
        !leftovers(&name, &bridge, &first_pids).is_empty(),
        "a killed demo leaves its pods"
    );

    // A second `meshwork up` cleans up the leftovers first, then runs.
    let mut up = Command::new(meshwork());
    up.args([
        "up",
        "--name",
        &name,
        "--pod-cidr",
        &pod_cidr,
        "--service-cidr",
        &service_cidr,
    ])
    .arg("-f")
    .arg(&demo_dir)
    .arg("--state-root")
    .arg(&root);
    let mut up = Proc::spawn("meshwork up", up);
    let second = running_state(&dir, up.pid(), &up, 5);
    assert!(
        up.transcript().contains("cleaned up what an earlier run"),
        "{}",
        up.transcript()
    );
    let old: BTreeSet<i32> = first_pids.iter().copied().collect();
    let still: Vec<&i32> = old.iter().filter(|p| alive(**p)).collect();
    assert!(
        still.is_empty(),
        "processes of the crashed run survive: {still:?}"
    );

    // A workload that exits is restarted.
    let inventory_ns = second
        .netns
        .iter()
        .find(|n| n.ends_with("-inventory-0"))
        .unwrap()
        .clone();
    let app_pid = |ns: &str| {
        netns_pids(ns).into_iter().find(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains("demo-app\0inventory"))
                .unwrap_or(false)
        })
    };
    let before =
        poll(Duration::from_secs(30), || app_pid(&inventory_ns)).expect("inventory app runs");
    Command::new("kill")
        .args(["-KILL", &before.to_string()])
        .status()
        .unwrap();
    let after = poll(Duration::from_secs(30), || {
        app_pid(&inventory_ns).filter(|p| *p != before)
    });
    assert!(
        after.is_some(),
        "inventory was not restarted\n{}",
        up.transcript()
    );
    assert!(
        up.transcript().contains("restarting in"),
        "{}",
        up.transcript()
    );

    // Ctrl-C removes everything.
    let pids = mesh_pids(&second);
    assert!(
        pids.len() >= 10,
        "sidecars and apps of 5 pods, and the control plane: {pids:?}"
    );
    up.signal("INT");
    let status = up.wait_timeout(Duration::from_secs(60));
    assert!(
        status.is_some_and(|s| s.success()),
        "meshwork up did not stop cleanly\n{}",
        up.transcript()
    );
    let left = leftovers(&name, &bridge, &pids);
    assert!(
        left.is_empty(),
        "left behind: {left:?}\n{}",
        up.transcript()
    );
    assert!(!dir.exists(), "state directory {} remains", dir.display());
}
