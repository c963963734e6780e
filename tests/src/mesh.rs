//! Helpers for the local-mesh suites (`meshwork up`/`demo` in network
//! namespace and explicit mode): the operator CLI, the mesh's state, a
//! guard that runs `meshwork down`, and the demo's traffic checks from the
//! proxies' own metrics.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use meshwork_local::demo::summary::{self, Totals};
use meshwork_local::ops::status;
use meshwork_local::state::State;

use crate::binary::meshwork;
use crate::poll;
use crate::process::Proc;

/// Runs `meshwork down` for a mesh when dropped (also when an assertion
/// fails), so a failing run leaves nothing behind.
pub struct Down {
    /// The binary.
    pub bin: PathBuf,
    /// The mesh.
    pub name: String,
    /// Its state root.
    pub root: PathBuf,
}

impl Drop for Down {
    fn drop(&mut self) {
        let _ = Command::new(&self.bin)
            .args(["down", "--name", &self.name, "--state-root"])
            .arg(&self.root)
            .output();
    }
}

/// `meshwork <args> --state-root <root>`, which must succeed; its stdout.
pub fn cli(root: &Path, args: &[&str]) -> String {
    let out = Command::new(meshwork())
        .args(args)
        .arg("--state-root")
        .arg(root)
        .output()
        .expect("run meshwork");
    assert!(
        out.status.success(),
        "meshwork {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether a process wrote a line containing `text` to stdout.
pub fn proc_has(p: &Proc, text: &str) -> bool {
    p.stdout_lines().iter().any(|l| l.contains(text))
}

/// Whether a process runs (a zombie waiting for a reaper does not).
pub fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    !stat.is_empty() && !stat.contains(") Z")
}

/// The mesh's state once `meshwork up` (pid `owner`) has started `pods`
/// pods and said so.
pub fn running_state(dir: &Path, owner: u32, proc: &Proc, pods: usize) -> State {
    poll(Duration::from_secs(120), || {
        State::load(dir).filter(|s| {
            s.owner == owner as i32 && s.pods.len() == pods && proc_has(proc, "mesh \"")
        })
    })
    .unwrap_or_else(|| panic!("the mesh did not come up\n{}", proc.transcript()))
}

/// Waits until `meshwork proxy-status` shows every proxy SYNCED for
/// CDS/LDS/EDS/RDS and checks that `pods` rows say so; returns the table.
pub fn assert_all_synced(root: &Path, pods: usize) -> String {
    let synced = poll(Duration::from_secs(30), || {
        let json: serde_json::Value =
            serde_json::from_str(&cli(root, &["proxy-status", "-o", "json"])).ok()?;
        status::all_synced(&json).then_some(json)
    });
    let table = cli(root, &["proxy-status"]);
    assert!(synced.is_some(), "not every proxy is SYNCED:\n{table}");
    assert_eq!(
        table
            .lines()
            .filter(|l| l.matches("SYNCED").count() == 4)
            .count(),
        pods,
        "{table}"
    );
    table
}

/// The demo's totals once at least `orders` orders and as many shipping
/// requests were seen (from the pods' merged metrics at `targets`). Both
/// are waited for: an order is counted by its sidecar only after its
/// response is written, after its shipping call was counted.
pub fn demo_totals(
    targets: &[(String, std::net::SocketAddr)],
    orders: f64,
    context: &Proc,
) -> Totals {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let enough = poll(Duration::from_secs(90), || {
        let t = rt.block_on(summary::scrape(targets));
        let n: f64 = t.versions("shipping").values().sum();
        let placed = t
            .by_key
            .get(&("order".to_string(), "v1".to_string()))
            .map_or(0.0, |o| o.requests);
        (n >= orders && placed >= orders).then_some(t)
    });
    enough.unwrap_or_else(|| panic!("too few orders\n{}", context.transcript()))
}

/// Orders succeeded (99%), every request arrived over mutual TLS
/// (`connection_security_policy="mutual_tls"` on the destination side),
/// and shipping v2 got 10% within five standard deviations.
pub fn assert_demo_traffic(totals: &Totals, orders: f64) {
    let v = totals.versions("shipping");
    let n: f64 = v.values().sum();
    let p2 = v.get("v2").copied().unwrap_or(0.0) / n;
    let sigma = (0.1_f64 * 0.9 / n).sqrt();
    assert!(
        (p2 - 0.1).abs() < 5.0 * sigma,
        "v2 share {p2:.3} of {n} requests (sigma {sigma:.4}): {v:?}"
    );
    let order = &totals.by_key[&("order".to_string(), "v1".to_string())];
    assert!(order.requests >= orders, "{order:?}");
    assert!(
        order.ok / order.requests >= 0.99,
        "orders failed: {order:?}"
    );
    for ((svc, ver), a) in &totals.by_key {
        assert_eq!(
            a.mtls, a.requests,
            "{svc} {ver}: not all requests arrived over mutual TLS: {a:?}"
        );
    }
}
