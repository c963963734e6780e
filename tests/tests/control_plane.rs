//! The control plane end to end, with real processes (issue 4).
//!
//! One network namespace plays a pod and its node: `meshwork control`
//! (watching a config directory), `meshwork proxy` (the sidecar, fed by the
//! control plane over xDS on 127.0.0.1:15010), two HTTP backends (`v1`,
//! `v2`) and two app clients, with Istio's iptables rules (all outbound TCP
//! REDIRECTed to 15001; uid 1337, which both meshwork processes run as, and
//! 127.0.0.1 exempt). The config is a ServiceEntry
//! `shipping.default.svc.cluster.local` (a VIP, port 8080 HTTP, STATIC, with
//! the two backends as inline endpoints labelled `version: v1|v2`), a
//! DestinationRule with subsets `v1` and `v2`, and a VirtualService. The
//! clients call `http://<VIP>:8080/` with `Host: shipping.default.svc...`
//! continuously, one on a keep-alive connection and one with a new
//! connection per request, and log every response. The test proves:
//!
//! 1. the control plane serves a config the proxy ACKs (`/debug/syncz`:
//!    connected, CDS/EDS/LDS/RDS SYNCED) and the VirtualService (100% v1)
//!    routes every request to v1;
//! 2. rewriting the VirtualService file to 100% v2 converges: after some
//!    time (measured from the file's rename into place and printed, with
//!    `pilot_proxy_convergence_time` from `/metrics`) every response is v2;
//! 3. SIGKILL of the control plane: the proxy keeps its last config and
//!    traffic flows on for 3 s;
//! 4. a restarted control plane: the proxy reconnects by itself (syncz:
//!    connected, all four types SYNCED) and a further change (50/50) takes
//!    effect (both versions answer, in roughly equal shares);
//!
//! and not a single request fails in all of it; the keep-alive client's one
//! connection carries on through every change.
//!
//! Requirements: root, iproute2 (`ip netns`), iptables, setpriv
//! (util-linux) and python3. Without root or `ip netns` the test prints why
//! and passes; with them it must run. The `meshwork` binary is built first
//! if needed (see `meshwork_e2e::binary`); `MESHWORK_BIN` overrides it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshwork_e2e::netns::{self, Netns};
use meshwork_e2e::pod::{add_addresses, path, python3, text};
use meshwork_e2e::process::Proc;
use meshwork_e2e::{binary, poll};
use serde_json::Value;

/// Istio's uid for the proxy, exempt from capture.
const PROXY_UID: &str = "1337";
const HOST: &str = "shipping.default.svc.cluster.local";
const BACKEND_PORT: &str = "9080";
const XDS: &str = "127.0.0.1:15010";
const DEBUG: &str = "127.0.0.1:15014";
const TYPES: [&str; 4] = ["CDS", "EDS", "LDS", "RDS"];
/// How long an answer may take to show up (convergence, reconnect); the
/// test's pass condition never waits for it to pass.
const DEADLINE: Duration = Duration::from_secs(45);

#[test]
fn control_plane_pushes_changes_and_survives_a_restart() {
    if let Some(why) = netns::skip_reason() {
        eprintln!("SKIPPED control_plane e2e: {why}");
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

    // Addresses of the namespace: the node's, the two backends', the VIP.
    let net = format!("10.233.{}", std::process::id() % 250);
    let instance_ip = format!("{net}.10");
    let (v1_addr, v2_addr) = (format!("{net}.11"), format!("{net}.12"));
    let vip = format!("{net}.100");
    let node_id = format!("sidecar~{instance_ip}~client.default~default.svc.cluster.local");

    // Files shared with the namespace, readable by uid 1337: the scripts and
    // the watched config directory (and a staging directory beside it, so
    // that an edit lands in one rename, as a config sync tool writes).
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    let staging = dir.path().join("staging");
    for d in [dir.path(), &config, &staging] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let app_py = dir.path().join("app.py");
    write_file(&app_py, APP_PY);
    write_file(
        &config.join("shipping.yaml"),
        &service_config(&vip, &v1_addr, &v2_addr),
    );
    let vs = config.join("virtualservice.yaml");
    write_file(&vs, &virtual_service(100, 0));

    // The pod. Declared before the processes so that they stop before it
    // is deleted.
    let ns = Netns::create("mw-cp");
    add_addresses(&ns, &[&instance_ip, &v1_addr, &v2_addr, &vip]);
    let pod = Pod {
        ns: &ns,
        python: &python,
        app_py: &app_py,
    };
    let _backends: Vec<Proc> = [("v1", &v1_addr), ("v2", &v2_addr)]
        .into_iter()
        .map(|(version, addr)| {
            Proc::spawn(
                &format!("backend {version}"),
                ns.command(
                    &python,
                    [path(&app_py), "serve", addr, BACKEND_PORT, version],
                ),
            )
        })
        .collect();
    for addr in [&v1_addr, &v2_addr] {
        pod.app(&["wait-tcp", addr, BACKEND_PORT, "10"]);
    }
    istio_iptables(&ns);

    // The control plane, then the sidecar, both as uid 1337.
    let control_args = [
        "control",
        "--config-dir",
        path(&config),
        "--xds-address",
        XDS,
        "--debug-address",
        DEBUG,
    ];
    let mut control = Proc::spawn("meshwork control", as_proxy_uid(&ns, &bin, &control_args));
    pod.wait_ready(&format!("http://{DEBUG}/ready"), &control);
    let labels = "app=client,version=v1";
    let proxy_args = [
        "proxy",
        "--xds-address",
        XDS,
        "--workload",
        "client",
        "--namespace",
        "default",
        "--instance-ip",
        &instance_ip,
        "--labels",
        labels,
    ];
    let proxy = Proc::spawn("meshwork proxy", as_proxy_uid(&ns, &bin, &proxy_args));
    pod.wait_ready("http://127.0.0.1:15021/healthz/ready", &proxy);
    let synced = pod.wait_synced(&node_id);
    eprintln!("control_plane e2e: initial sync: {}", summary(&synced));

    // The app: two clients calling the service by its VIP, for the rest of
    // the test (they stop on their own after 5 minutes at the latest).
    let vip_s = vip.as_str();
    let clients: Vec<Proc> = ["keepalive", "new"]
        .into_iter()
        .map(|mode| {
            Proc::spawn(
                &format!("client ({mode})"),
                ns.command(
                    &python,
                    [path(&app_py), "loop", vip_s, "8080", HOST, mode, "300"],
                ),
            )
        })
        .collect();
    let log = Log {
        clients: &clients,
        pod: &pod,
        proxy: &proxy,
    };

    // 1. 100% v1: every response so far is v1.
    let t0 = now();
    log.wait("both clients answered 20 times", |r| {
        ["keepalive", "new"]
            .iter()
            .all(|m| r.iter().filter(|x| x.mode == *m && x.start >= t0).count() >= 20)
            .then_some(())
    });
    log.assert_no_failures("100% v1");
    let wrong: Vec<_> = log
        .responses()
        .into_iter()
        .filter(|r| r.version != "v1")
        .collect();
    assert!(
        wrong.is_empty(),
        "100% v1, yet: {wrong:?}\n{}",
        log.evidence()
    );

    // 2. Rewrite the VirtualService to 100% v2 and measure convergence.
    let before = pod.convergence_metric();
    let t_v2 = replace_file(&staging, &vs, &virtual_service(0, 100));
    let hold = 1.0;
    let conv = log.wait("every response is v2 for 1 s", |r| {
        let k = converged(r, "keepalive", t_v2, "v2", hold)?;
        let n = converged(r, "new", t_v2, "v2", hold)?;
        Some((k, n))
    });
    log.assert_no_failures("the switch to v2");
    let synced = pod.wait_synced(&node_id);
    let after = pod.convergence_metric();
    let pushed = after.delta(&before);
    eprintln!(
        "control_plane e2e: 100% v1 -> 100% v2 converged (file rename -> every response v2): \
         keep-alive client {}, new-connection client {}; \
         pilot_proxy_convergence_time for this change: {pushed}; sync: {}",
        conv.0,
        conv.1,
        summary(&synced)
    );
    assert!(
        pushed.count >= 1.0,
        "the change was pushed and ACKed ({pushed})"
    );

    // 3. SIGKILL the control plane: traffic keeps flowing on the last config.
    control.signal("KILL");
    control
        .wait_timeout(Duration::from_secs(10))
        .expect("control plane exits on SIGKILL");
    let t_kill = now();
    let outage = 3.0;
    log.wait("3 s of traffic without a control plane", |r| {
        ["keepalive", "new"]
            .iter()
            .all(|m| r.iter().any(|x| x.mode == *m && x.start >= t_kill + outage))
            .then_some(())
    });
    log.assert_no_failures("the control plane's outage");
    let ready = pod.get("http://127.0.0.1:15021/healthz/ready");
    assert!(
        ready.is_ok(),
        "the proxy outlives its control plane and stays ready: {ready:?}\n{}",
        tail(&proxy, 40)
    );
    let during: Vec<_> = log
        .responses()
        .into_iter()
        .filter(|r| r.start >= t_kill)
        .collect();
    let stray: Vec<_> = during.iter().filter(|r| r.version != "v2").collect();
    assert!(
        stray.is_empty(),
        "the proxy kept 100% v2 while the control plane was down: {stray:?}"
    );
    eprintln!(
        "control_plane e2e: {} requests answered during a {outage} s control plane outage",
        during.len()
    );

    // 4. Restart it: the proxy reconnects and a further change takes effect.
    let t_restart = Instant::now();
    control = Proc::spawn(
        "meshwork control (restarted)",
        as_proxy_uid(&ns, &bin, &control_args),
    );
    pod.wait_ready(&format!("http://{DEBUG}/ready"), &control);
    let synced = pod.wait_synced(&node_id);
    let reconnect = t_restart.elapsed();
    let connected = pod.metric("pilot_xds");
    eprintln!(
        "control_plane e2e: proxy reconnected and SYNCED {reconnect:?} after the restart \
         (pilot_xds {connected:?}): {}",
        summary(&synced)
    );
    assert_eq!(connected, Some(1.0), "pilot_xds counts the proxy");

    let before = pod.convergence_metric();
    let t_split = replace_file(&staging, &vs, &virtual_service(50, 50));
    let sample = log.wait("200 responses after the 50/50 split took effect", |r| {
        let first_v1 = r
            .iter()
            .filter(|x| x.start >= t_split && x.version == "v1")
            .map(|x| x.start)
            .reduce(f64::min)?;
        let after: Vec<Resp> = r.iter().filter(|x| x.start >= first_v1).cloned().collect();
        (after.len() >= 200).then_some((first_v1 - t_split, after))
    });
    log.assert_no_failures("the 50/50 split");
    let (first_v1, after) = sample;
    for mode in ["keepalive", "new"] {
        for version in ["v1", "v2"] {
            let n = after
                .iter()
                .filter(|r| r.mode == mode && r.version == version)
                .count();
            assert!(
                n >= 10,
                "{mode} client got {n} {version} answers of {} after the 50/50 split",
                after.len()
            );
        }
    }
    let v1_share = after.iter().filter(|r| r.version == "v1").count() as f64 / after.len() as f64;
    assert!(
        (0.3..=0.7).contains(&v1_share),
        "50/50 split, v1 share {v1_share:.2} of {}",
        after.len()
    );
    let synced = pod.wait_synced(&node_id);
    let pushed = pod.convergence_metric().delta(&before);
    eprintln!(
        "control_plane e2e: 100% v2 -> 50/50 after the restart: first v1 answer {first_v1:.3} s \
         after the file rename; v1 share {v1_share:.2} of {} responses; \
         pilot_proxy_convergence_time for this change: {pushed}; sync: {}",
        after.len(),
        summary(&synced)
    );

    // Over the whole run: no failure, and between convergence to v2 and the
    // split nothing but v2.
    log.assert_no_failures("the whole run");
    let all = log.responses();
    for (mode, c) in [("keepalive", conv.0), ("new", conv.1)] {
        let stray: Vec<_> = all
            .iter()
            .filter(|r| r.mode == mode && r.start >= t_v2 + c.upper && r.start < t_split)
            .filter(|r| r.version != "v2")
            .collect();
        assert!(
            stray.is_empty(),
            "{mode}: v2 only from convergence to the split: {stray:?}"
        );
    }
    // The keep-alive client's one connection saw every change: routes are
    // looked up per request, and an RDS change drains nothing.
    let ports = |mode: &str| {
        let mut p: Vec<u16> = all
            .iter()
            .filter(|r| r.mode == mode)
            .map(|r| r.port)
            .collect();
        p.sort_unstable();
        p.dedup();
        p.len()
    };
    assert_eq!(
        ports("keepalive"),
        1,
        "the keep-alive client kept one connection through every change"
    );
    eprintln!(
        "control_plane e2e: {} requests ({} connections), 0 failed, in namespace {}; took {:?}",
        all.len(),
        1 + ports("new"),
        ns.name(),
        started.elapsed()
    );
}

// === the pod ===

/// The namespace and the helper script run inside it.
struct Pod<'a> {
    ns: &'a Netns,
    python: &'a Path,
    app_py: &'a Path,
}

impl Pod<'_> {
    /// Runs `app.py args…` in the namespace; panics with its stderr unless
    /// it succeeds. Returns stdout.
    fn app(&self, args: &[&str]) -> String {
        self.try_app(args)
            .unwrap_or_else(|e| panic!("app.py {args:?}: {e}"))
    }

    fn try_app(&self, args: &[&str]) -> Result<String, String> {
        let mut argv = vec![path(self.python), path(self.app_py)];
        argv.extend_from_slice(args);
        let o = self.ns.output(argv);
        if o.status.success() {
            Ok(text(&o.stdout))
        } else {
            Err(text(&o.stderr))
        }
    }

    /// GET inside the namespace (loopback ports of the control plane and
    /// the proxy).
    fn get(&self, url: &str) -> Result<String, String> {
        self.try_app(&["get", url])
    }

    fn wait_ready(&self, url: &str, proc: &Proc) {
        if let Err(e) = self.try_app(&["wait-ready", url, "30"]) {
            panic!("{url} never became ready: {e}\n{}", tail(proc, 40));
        }
    }

    /// `/debug/syncz` of the control plane.
    fn syncz(&self) -> Result<Value, String> {
        let body = self.get(&format!("http://{DEBUG}/debug/syncz"))?;
        serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
    }

    /// Waits until `node` is connected with CDS, EDS, LDS and RDS SYNCED;
    /// returns its syncz entry. A NACK fails at once.
    fn wait_synced(&self, node: &str) -> Value {
        let mut last = Value::Null;
        let found = poll(DEADLINE, || {
            let entry = self
                .syncz()
                .ok()?
                .as_array()?
                .iter()
                .find(|e| e["proxy"] == node)?
                .clone();
            let nacked: Vec<_> = TYPES
                .iter()
                .filter(|t| entry[**t]["state"] == "NACKED")
                .collect();
            assert!(
                nacked.is_empty(),
                "the proxy NACKed {nacked:?}: {entry:#}\n{}",
                self.config_dump()
            );
            last = entry.clone();
            (entry["connected"] == true && TYPES.iter().all(|t| entry[*t]["state"] == "SYNCED"))
                .then_some(entry)
        });
        found.unwrap_or_else(|| {
            panic!(
                "{node} not connected and SYNCED within {DEADLINE:?}; last syncz entry: {last:#}\n{}",
                self.config_dump()
            )
        })
    }

    /// The proxy's `/config_dump`, for failure messages.
    fn config_dump(&self) -> String {
        match self.get("http://127.0.0.1:15000/config_dump") {
            Ok(body) => format!("--- proxy /config_dump ---\n{}", cut(&body, 30_000)),
            Err(e) => format!("--- proxy /config_dump unavailable: {e}"),
        }
    }

    /// A metric without labels from the control plane's `/metrics`.
    fn metric(&self, name: &str) -> Option<f64> {
        let body = self.get(&format!("http://{DEBUG}/metrics")).ok()?;
        body.lines().find_map(|l| {
            let (n, v) = l.split_once(' ')?;
            (n == name).then(|| v.trim().parse().ok()).flatten()
        })
    }

    fn convergence_metric(&self) -> Histogram {
        Histogram {
            count: self
                .metric("pilot_proxy_convergence_time_count")
                .unwrap_or(0.0),
            sum: self
                .metric("pilot_proxy_convergence_time_sum")
                .unwrap_or(0.0),
        }
    }
}

/// `pilot_proxy_convergence_time`'s count and sum.
#[derive(Clone, Copy, Debug)]
struct Histogram {
    count: f64,
    sum: f64,
}

impl Histogram {
    fn delta(&self, before: &Histogram) -> Histogram {
        Histogram {
            count: self.count - before.count,
            sum: self.sum - before.sum,
        }
    }
}

impl std::fmt::Display for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mean = if self.count > 0.0 {
            self.sum / self.count
        } else {
            0.0
        };
        write!(
            f,
            "{} observations, mean {:.1} ms",
            self.count,
            mean * 1000.0
        )
    }
}

/// `meshwork args…` inside the namespace as uid 1337.
fn as_proxy_uid(ns: &Netns, bin: &Path, args: &[&str]) -> Command {
    let mut argv = vec![
        "--reuid",
        PROXY_UID,
        "--regid",
        PROXY_UID,
        "--clear-groups",
        path(bin),
    ];
    argv.extend_from_slice(args);
    let mut cmd = ns.command("setpriv", argv);
    cmd.env("NO_COLOR", "1");
    cmd
}

/// istio-iptables' outbound capture: every TCP connection out of the pod
/// goes to 15001, except the proxy's own (uid 1337) and loopback's.
fn istio_iptables(ns: &Netns) {
    let nat = |rule: &[&str]| {
        let mut argv = vec!["iptables", "-t", "nat", "-A", "OUTPUT"];
        argv.extend_from_slice(rule);
        ns.run(argv);
    };
    nat(&["-m", "owner", "--uid-owner", PROXY_UID, "-j", "RETURN"]);
    nat(&["-d", "127.0.0.1/32", "-j", "RETURN"]);
    nat(&["-p", "tcp", "-j", "REDIRECT", "--to-ports", "15001"]);
}

// === the app's log ===

/// One response (or failure) as a client logged it.
#[derive(Clone, Debug)]
struct Resp {
    mode: String,
    /// When the request started (seconds since the epoch).
    start: f64,
    ok: bool,
    status: u16,
    /// The client's local port: which connection carried it.
    port: u16,
    /// The body: the backend's version.
    version: String,
}

impl Resp {
    /// A transport error or a status other than 200.
    fn failed(&self) -> bool {
        !self.ok || self.status != 200
    }

    fn parse(line: &str) -> Option<Resp> {
        let mut f = line.splitn(7, ' ');
        let (kind, mode, start, _end) = (f.next()?, f.next()?, f.next()?, f.next()?);
        let start = start.parse().ok()?;
        let rest: Vec<&str> = f.collect();
        let (ok, status, port, version) = match kind {
            "ok" => (
                true,
                rest.first()?.parse().ok()?,
                rest.get(1)?.parse().ok()?,
                rest.get(2).copied().unwrap_or_default().to_string(),
            ),
            "fail" => (false, 0, 0, rest.join(" ")),
            _ => return None,
        };
        Some(Resp {
            mode: mode.to_string(),
            start,
            ok,
            status,
            port,
            version,
        })
    }
}

struct Log<'a> {
    clients: &'a [Proc],
    pod: &'a Pod<'a>,
    proxy: &'a Proc,
}

impl Log<'_> {
    /// Every response so far, per client in order.
    fn responses(&self) -> Vec<Resp> {
        self.clients
            .iter()
            .flat_map(|c| c.stdout_lines())
            .filter_map(|l| Resp::parse(&l))
            .collect()
    }

    /// Polls `f` over the responses until it answers, within [`DEADLINE`];
    /// a failed request fails the test at once.
    fn wait<T>(&self, what: &str, mut f: impl FnMut(&[Resp]) -> Option<T>) -> T {
        let found = poll(DEADLINE, || {
            let r = self.responses();
            if r.iter().any(Resp::failed) {
                return Some(None);
            }
            f(&r).map(Some)
        });
        self.assert_no_failures(what);
        found
            .flatten()
            .unwrap_or_else(|| panic!("not within {DEADLINE:?}: {what}\n{}", self.evidence()))
    }

    fn assert_no_failures(&self, during: &str) {
        let failed: Vec<_> = self.responses().into_iter().filter(Resp::failed).collect();
        assert!(
            failed.is_empty(),
            "{} failed requests during {during}: {failed:#?}\n{}",
            failed.len(),
            self.evidence()
        );
    }

    /// What explains a failure: the clients' last lines, syncz, the proxy's
    /// config and log.
    fn evidence(&self) -> String {
        let clients: Vec<String> = self.clients.iter().map(|c| tail(c, 20)).collect();
        format!(
            "{}\n--- syncz ---\n{}\n{}\n{}",
            clients.join("\n"),
            self.pod
                .syncz()
                .map(|v| format!("{v:#}"))
                .unwrap_or_else(|e| e),
            self.pod.config_dump(),
            tail(self.proxy, 40)
        )
    }
}

/// Convergence of one client to `want` after `since`: every response of
/// the client started at or after `since + upper` is `want` (for at least
/// `hold` seconds and 20 responses so far), and the one started at
/// `since + lower` was not.
#[derive(Clone, Copy, Debug)]
struct Convergence {
    lower: f64,
    upper: f64,
}

impl std::fmt::Display for Convergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.0} ms (last old answer at {:.0} ms)",
            self.upper * 1000.0,
            self.lower * 1000.0
        )
    }
}

fn converged(r: &[Resp], mode: &str, since: f64, want: &str, hold: f64) -> Option<Convergence> {
    let mine: Vec<&Resp> = r
        .iter()
        .filter(|x| x.mode == mode && x.start >= since)
        .collect();
    let last_old = mine.iter().rposition(|x| x.version != want);
    let tail = &mine[last_old.map_or(0, |i| i + 1)..];
    let (first, last) = (tail.first()?, tail.last()?);
    (tail.len() >= 20 && last.start - first.start >= hold).then(|| Convergence {
        lower: last_old.map_or(0.0, |i| mine[i].start - since),
        upper: first.start - since,
    })
}

// === files ===

fn write_file(p: &Path, content: &str) {
    std::fs::write(p, content).unwrap();
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
}

/// Replaces `target` with `content` in one rename; returns the time of the
/// rename (seconds since the epoch).
fn replace_file(staging: &Path, target: &Path, content: &str) -> f64 {
    let staged = staging.join(target.file_name().unwrap());
    write_file(&staged, content);
    let t = now();
    std::fs::rename(&staged, target).unwrap();
    t
}

fn service_config(vip: &str, v1: &str, v2: &str) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: shipping, namespace: default}}
spec:
  hosts: [{HOST}]
  addresses: [{vip}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports: [{{name: http, number: 8080, protocol: HTTP}}]
  endpoints:
  - {{address: {v1}, labels: {{app: shipping, version: v1}}, ports: {{http: {BACKEND_PORT}}}}}
  - {{address: {v2}, labels: {{app: shipping, version: v2}}, ports: {{http: {BACKEND_PORT}}}}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: shipping, namespace: default}}
spec:
  host: {HOST}
  subsets:
  - {{name: v1, labels: {{version: v1}}}}
  - {{name: v2, labels: {{version: v2}}}}
"#
    )
}

/// A canary VirtualService: `v1` percent to subset v1, `v2` to v2.
fn virtual_service(v1: u32, v2: u32) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: shipping, namespace: default}}
spec:
  hosts: [{HOST}]
  http:
  - route:
    - destination: {{host: {HOST}, subset: v1}}
      weight: {v1}
    - destination: {{host: {HOST}, subset: v2}}
      weight: {v2}
"#
    )
}

// === helpers ===

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A one-line summary of a syncz entry.
fn summary(entry: &Value) -> String {
    let types: Vec<String> = TYPES
        .iter()
        .map(|t| {
            format!(
                "{t} {} (sent {}, acked {})",
                entry[*t]["state"].as_str().unwrap_or("?"),
                entry[*t]["sent"],
                entry[*t]["acked"]
            )
        })
        .collect();
    format!("connected {}, {}", entry["connected"], types.join(", "))
}

/// The last `n` lines of a process's output.
fn tail(p: &Proc, n: usize) -> String {
    let t = p.transcript();
    let lines: Vec<&str> = t.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// The workloads (backends, the app's clients) and the test's probes.
const APP_PY: &str = include_str!("workloads/control_plane_app.py");
