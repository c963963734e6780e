//! End to end: `meshwork demo --explicit`, the local mesh without network
//! namespaces (what `meshwork up` does without root): five pods as host
//! processes on their own loopback addresses, each sidecar configured by
//! a generated Istio Sidecar (ingress/egress listeners bound to the pod's
//! addresses, `captureMode: NONE`), the workloads reaching their
//! dependencies through `*_SERVICE_HOST`/`*_SERVICE_PORT`. The test checks:
//!
//! - every proxy SYNCED, and `proxy-config listeners` shows the bound
//!   listeners (`<service address>_8080` per service, `<pod>_8080`) and no
//!   capture listeners;
//! - a plain client in a pod's environment (`meshwork http-get`, and curl
//!   when installed) reaches `http://$INVENTORY_SERVICE_HOST:
//!   $INVENTORY_SERVICE_PORT/` with no Host override, through the sidecars
//!   over mutual TLS (plaintext to inventory's own sidecar is refused);
//! - orders succeed through the sidecars over mutual TLS (the demo app
//!   sends no Host override either), the shipping split holds roughly
//!   (90/10 within five sigma);
//! - `meshwork analyze` without `-f` analyzes the running mesh's
//!   directories and says which;
//! - after `meshwork demo` is killed (a crash), `meshwork down` stops every
//!   process of the mesh (found by its marker) and removes its state;
//! - a demo whose stdout is closed (`meshwork demo | head`) stops and
//!   cleans up by itself.
//!
//! Needs no root; runs on any Linux host.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use meshwork_e2e::binary::meshwork;
use meshwork_e2e::mesh::{
    Down, alive, assert_all_synced, assert_demo_traffic, cli, demo_totals, running_state,
};
use meshwork_e2e::poll;
use meshwork_e2e::process::Proc;
use meshwork_local::state::{State, marked_pids};

/// The demo in explicit mode on pod range `127.1.<octet>.0/24`.
fn demo(name: &str, octet: u32, dir: &Path, root: &Path) -> Command {
    let mut c = Command::new(meshwork());
    c.args(["demo", "--explicit", "--plain", "--duration", "10m"])
        .args(["--name", name])
        .args(["--pod-cidr", &format!("127.1.{octet}.0/24")])
        .arg("--dir")
        .arg(dir)
        .arg("--state-root")
        .arg(root)
        .env("NO_COLOR", "1");
    c
}

/// The environment of pod `pod`'s application process (the one that has
/// `POD_NAME=<pod>`; its sidecar has none), as `meshwork up` gave it.
fn app_env(s: &State, pod: &str) -> Vec<(String, String)> {
    for pid in mesh_pids(s) {
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let env: Vec<(String, String)> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                Some((k.to_string(), v.to_string()))
            })
            .collect();
        if env.iter().any(|(k, v)| k == "POD_NAME" && v == pod) {
            return env;
        }
    }
    panic!("no application process of {pod}");
}

/// Runs `script` with `sh -c` in exactly the environment `env` (plus
/// `MESHWORK`, the binary): status, stdout, stderr.
fn in_pod(env: &[(String, String)], script: &str) -> (bool, String, String) {
    let out = Command::new("/bin/sh")
        .args(["-c", script])
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("MESHWORK", meshwork())
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .expect("run sh");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A plain client in order-0's environment reaches inventory at
/// `$INVENTORY_SERVICE_HOST:$INVENTORY_SERVICE_PORT` with the Host header
/// it dials, through order-0's sidecar and inventory-0's (STRICT mTLS:
/// plaintext straight to inventory-0's sidecar is refused).
fn plain_clients_reach_inventory(state: &State, env: &[(String, String)]) {
    let get = |url: &str| format!("exec \"$MESHWORK\" http-get \"{url}\"");
    let url = "http://$INVENTORY_SERVICE_HOST:$INVENTORY_SERVICE_PORT/reserve?item=plain";
    let (ok, body, err) = in_pod(env, &get(url));
    assert!(ok, "meshwork http-get {url}: {err}");
    assert!(
        body.contains("\"item\":\"plain\"") && body.contains("\"reserved\""),
        "inventory did not answer: {body}"
    );
    // The other services have their own addresses: the same Host-less
    // request reaches shipping at its own.
    let (ok, body, err) = in_pod(
        env,
        &get("http://$SHIPPING_SERVICE_HOST:$SHIPPING_SERVICE_PORT/quote"),
    );
    assert!(ok && body.contains("\"shipping\":\"v"), "{body}{err}");
    if Path::new("/usr/bin/curl").exists() || Path::new("/bin/curl").exists() {
        let (ok, body, err) = in_pod(
            env,
            &format!(
                "exec curl -sS --fail --max-time 10 \"{}\"",
                url.replace("plain", "curl")
            ),
        );
        assert!(
            ok && body.contains("\"item\":\"curl\""),
            "curl: {body}{err}"
        );
    }
    let inventory = state.pods.iter().find(|p| p.name == "inventory-0").unwrap();
    let (ok, body, _) = in_pod(env, &get(&format!("http://{}:8080/reserve", inventory.ip)));
    assert!(!ok, "plaintext to a STRICT sidecar answered: {body}");
}

/// Every process the mesh may have: recorded, and marked (restarted ones).
fn mesh_pids(s: &State) -> Vec<i32> {
    let mut pids: Vec<i32> = s.processes.iter().map(|p| p.pid).collect();
    pids.extend(marked_pids(&s.marker));
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[test]
fn explicit_demo_runs_through_bound_sidecars_with_mtls_and_cleans_up() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("state");
    let demo_dir = tmp.path().join("demo");
    let name = format!("ex{}", std::process::id() % 100_000);
    let octet = 100 + std::process::id() % 150;
    let _down = Down {
        bin: meshwork(),
        name: name.clone(),
        root: root.clone(),
    };
    let mut run = Proc::spawn(
        "meshwork demo --explicit",
        demo(&name, octet, &demo_dir, &root),
    );
    let dir = root.join(&name);
    let state = running_state(&dir, run.pid(), &run, 5);
    assert_eq!(state.mode, "explicit");
    assert!(state.netns.is_empty() && state.bridge.is_none());
    let order = state.pods.iter().find(|p| p.name == "order-0").unwrap();
    assert!(
        order.ip.starts_with(&format!("127.1.{octet}.")),
        "{order:?}"
    );

    assert_all_synced(&root, 5);
    let env = app_env(&state, "order-0");
    let var = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k} in order-0's environment"))
    };
    let (inventory, shipping) = (var("INVENTORY_SERVICE_HOST"), var("SHIPPING_SERVICE_HOST"));
    assert_ne!(inventory, shipping, "each service its own address");
    let listeners = cli(&root, &["proxy-config", "listeners", "order-0"]);
    for bound in [
        format!("{inventory}_8080"),
        format!("{shipping}_8080"),
        format!("{}_8080", order.ip),
    ] {
        assert!(listeners.contains(&bound), "no {bound}:\n{listeners}");
    }
    plain_clients_reach_inventory(&state, &env);
    assert!(
        !listeners.contains("virtualOutbound") && !listeners.contains("virtualInbound"),
        "{listeners}"
    );

    let targets: Vec<(String, std::net::SocketAddr)> = state
        .pods
        .iter()
        .map(|p| (p.name.clone(), p.metrics.parse().unwrap()))
        .collect();
    let totals = demo_totals(&targets, 400.0, &run);
    assert_demo_traffic(&totals, 400.0);

    // analyze without -f: the running mesh's manifests and generated Sidecars.
    let out = Command::new(meshwork())
        .args(["analyze", "--mesh", &name, "--state-root"])
        .arg(&root)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("analyzing the configuration of the running mesh")
            && said.contains(&demo_dir.canonicalize().unwrap().display().to_string())
            && said.contains("explicit-config"),
        "{said}"
    );
    assert!(
        out.status.success(),
        "{said}\n{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A crash: the demo dies, its processes stay; `meshwork down` ends them.
    let pids = mesh_pids(&state);
    assert!(
        pids.len() >= 11,
        "control plane, 5 sidecars, 5 apps: {pids:?}"
    );
    run.signal("KILL");
    run.wait_timeout(Duration::from_secs(10))
        .expect("demo killed");
    assert!(
        pids.iter().any(|p| alive(*p)),
        "a killed demo leaves its pods"
    );
    cli(&root, &["down", "--name", &name]);
    let left: Vec<&i32> = pids.iter().filter(|p| alive(**p)).collect();
    assert!(
        left.is_empty(),
        "left behind: {left:?}\n{}",
        run.transcript()
    );
    assert!(marked_pids(&state.marker).is_empty());
    assert!(!dir.exists(), "state directory {} remains", dir.display());

    // `meshwork demo | head`: once stdout is closed, it stops and cleans up.
    let errors = std::fs::File::create(tmp.path().join("demo2.err")).unwrap();
    let mut child = demo(&name, octet, &demo_dir, &root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(errors)
        .spawn()
        .unwrap();
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let Ok(line) = line else { break };
        let summary = line.starts_with("--- ");
        seen.push(line);
        if summary {
            break; // the reader (and the pipe) is dropped here
        }
    }
    let second = State::load(&dir).expect("second demo's state");
    let exited = poll(Duration::from_secs(40), || child.try_wait().ok().flatten());
    let log = std::fs::read_to_string(tmp.path().join("demo2.err")).unwrap_or_default();
    if exited.is_none() {
        let _ = child.kill();
    }
    assert!(
        exited.is_some_and(|s| s.success()),
        "demo did not stop after stdout closed ({exited:?})\n{}\n{log}",
        seen.join("\n")
    );
    assert!(log.contains("stdout is closed"), "{log}");
    let left: Vec<i32> = mesh_pids(&second)
        .into_iter()
        .filter(|p| alive(*p))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}\n{log}");
    assert!(!dir.exists(), "state directory {} remains", dir.display());
}
