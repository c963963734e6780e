//! `meshwork up`: brings a mesh up from a manifest directory (network
//! namespace mode here; explicit mode in [`crate::up_explicit`]), keeps
//! it running, and takes it down again.

use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use meshwork_config::Level;

use crate::cidr::Cidr;
use crate::fetch;
use crate::host;
use crate::plan::{Plan, plan};
use crate::platform::PlatformFile;
use crate::pods::{self, Env, PROXY_UID};
use crate::state::{HostProcess, PodRecord, State, start_time, teardown};
use crate::supervise::{ProcSpec, Supervisor};

/// How to bring a mesh up.
#[derive(Clone, Debug)]
pub struct UpOptions {
    /// Mesh name (state directory, namespace and interface names).
    pub name: String,
    /// The manifest directory (watched by the control plane).
    pub config_dir: PathBuf,
    /// Parent of state directories.
    pub state_root: PathBuf,
    /// Pod addresses (the first is the bridge's).
    pub pod_cidr: Cidr,
    /// Service virtual addresses.
    pub service_cidr: Cidr,
    /// The `meshwork` binary.
    pub binary: PathBuf,
    /// Extra flags for every sidecar.
    pub proxy_flags: Vec<String>,
    /// Explicit mode: no root, no network namespaces (see [`crate::explicit`]).
    pub explicit: bool,
}

/// Why a mesh could not come up.
#[derive(Debug, thiserror::Error)]
pub enum UpError {
    /// Something the user must fix, said plainly.
    #[error("{0}")]
    User(String),
    /// A host command failed.
    #[error(transparent)]
    Host(#[from] host::HostError),
    /// Other I/O.
    #[error("{0}")]
    Io(String),
}

pub(crate) fn io(what: &str) -> impl Fn(std::io::Error) -> UpError + '_ {
    move |e| UpError::Io(format!("{what}: {e}"))
}

/// A running mesh.
pub struct Mesh {
    /// What was made.
    pub state: State,
    /// Its state directory.
    pub dir: PathBuf,
    /// The plan it runs.
    pub plan: Plan,
    pub(crate) supervisor: Supervisor,
}

/// Why namespace mode cannot run here, if it cannot (not root, no `ip`,
/// no `iptables-restore`, no `setpriv`).
pub fn netns_unavailable() -> Option<String> {
    if !rustix::process::geteuid().is_root() {
        return Some(
            "not running as root (network namespaces and iptables need root; run with sudo)".into(),
        );
    }
    if host::run("ip", &["netns", "list"]).is_err() {
        return Some("`ip netns` is not available (apt-get install iproute2)".into());
    }
    for (tool, pkg) in [("iptables-restore", "iptables"), ("setpriv", "util-linux")] {
        if std::process::Command::new(tool)
            .arg("--version")
            .output()
            .is_err()
        {
            return Some(format!("{tool} is missing (apt-get install {pkg})"));
        }
    }
    None
}

/// Whether `meshwork <sub> --help` lists `flag` (the control plane's and
/// proxy's CA flags arrive with the identity work; older binaries lack them).
pub fn supports(binary: &Path, sub: &str, flag: &str) -> bool {
    std::process::Command::new(binary)
        .args([sub, "--help"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
        .unwrap_or(false)
}

/// Removes what a mesh that is no longer running left behind; refuses if
/// it still runs.
pub fn clean_leftovers(dir: &Path) -> Result<Vec<String>, UpError> {
    let Some(old) = State::load(dir) else {
        return Ok(Vec::new());
    };
    if old.owner_alive() && old.owner != std::process::id() as i32 {
        return Err(UpError::User(format!(
            "mesh {:?} is already running (meshwork up, pid {}); stop it first with `meshwork down --name {}`",
            old.name, old.owner, old.name
        )));
    }
    let mut done = teardown(&old, Duration::from_secs(2));
    let _ = std::fs::remove_file(State::file(dir));
    if !done.is_empty() {
        done.insert(
            0,
            format!(
                "cleaned up what an earlier run of {:?} left behind:",
                old.name
            ),
        );
    }
    Ok(done)
}

/// A copy of the binary that uid 1337 can execute (the build directory is
/// often under a private home directory).
fn shared_binary(src: &Path, dir: &Path) -> Result<PathBuf, UpError> {
    if usable_by_others(src) {
        return Ok(src.to_path_buf());
    }
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(io("state directory"))?;
    let dst = bin_dir.join("meshwork");
    std::fs::copy(src, &dst).map_err(|e| {
        UpError::User(format!(
            "cannot copy the meshwork binary {} to {}: {e}",
            src.display(),
            dst.display()
        ))
    })?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o755)).map_err(io("binary"))?;
    Ok(dst)
}

/// Whether every directory above `path` is searchable and the file
/// executable by other users.
fn usable_by_others(path: &Path) -> bool {
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    mode(path) & 0o005 == 0o005
        && path
            .ancestors()
            .skip(1)
            .filter(|a| !a.as_os_str().is_empty())
            .all(|a| mode(a) & 0o001 != 0)
}

/// Fails with a clear message when `addr` cannot be bound (in use).
pub(crate) fn check_port(addr: SocketAddr) -> Result<(), UpError> {
    std::net::TcpListener::bind(addr).map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::PermissionDenied {
            return UpError::User(format!(
                "cannot listen on {addr} ({e}): ports below 1024 need root, or `sysctl net.ipv4.ip_unprivileged_port_start=0`"
            ));
        }
        UpError::User(format!(
            "port {addr} is taken ({e}); stop whatever uses it (another `meshwork up`? `meshwork down`) or pick another --pod-cidr"
        ))
    })
}

pub(crate) fn progress(msg: impl AsRef<str>) {
    eprintln!("==> {}", msg.as_ref());
}

/// Brings the mesh up (in network namespace mode, or explicit mode when
/// `opts.explicit`). The caller keeps the returned [`Mesh`] and calls
/// [`Mesh::down`] to stop it.
pub async fn up(opts: &UpOptions) -> Result<Mesh, UpError> {
    if opts.explicit {
        return crate::up_explicit::up(opts).await;
    }
    let dir = crate::state::state_dir(&opts.state_root, &opts.name);
    for line in clean_leftovers(&dir)? {
        progress(line);
    }
    if !opts.config_dir.is_dir() {
        return Err(UpError::User(format!(
            "{} is not a directory of manifests",
            opts.config_dir.display()
        )));
    }
    let (_, plan) = load_plan(opts, opts.pod_cidr)?;
    std::fs::create_dir_all(&dir).map_err(io("state directory"))?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io("state directory"))?;
    let binary = shared_binary(&opts.binary, &dir)?;
    let gateway = opts.pod_cidr.gateway();
    let xds = SocketAddr::from((gateway, 15010));
    let debug = SocketAddr::from((gateway, 15014));
    let mut state = State {
        name: opts.name.clone(),
        mode: "netns".into(),
        owner: std::process::id() as i32,
        config_dir: std::fs::canonicalize(&opts.config_dir).unwrap_or(opts.config_dir.clone()),
        xds: Some(xds),
        debug: Some(debug),
        ..State::default()
    };
    let save = |s: &State| s.save(&dir).map_err(io("state file"));

    let bridge = pods::bridge_name(&opts.name);
    if host::link_exists(&bridge) {
        return Err(UpError::User(format!(
            "interface {bridge} exists but no state file says who made it; remove it (`ip link delete {bridge}`) or use another --name"
        )));
    }
    state.bridge = Some(bridge);
    state.host_rules = host::forward_rules(state.bridge.as_deref().unwrap_or_default());
    save(&state)?;

    let supervisor = Supervisor::new();
    let mesh = Mesh {
        state: state.clone(),
        dir: dir.clone(),
        plan: plan.clone(),
        supervisor: supervisor.clone(),
    };
    match start_all(opts, &plan, &dir, &binary, &supervisor, &mut state).await {
        Ok(()) => Ok(Mesh { state, ..mesh }),
        Err(e) => {
            Mesh { state, ..mesh }.down().await;
            Err(e)
        }
    }
}

async fn start_all(
    opts: &UpOptions,
    plan: &Plan,
    dir: &Path,
    binary: &Path,
    supervisor: &Supervisor,
    state: &mut State,
) -> Result<(), UpError> {
    let save = |s: &State| s.save(dir).map_err(io("state file"));
    let gateway = opts.pod_cidr.gateway();
    let xds = SocketAddr::from((gateway, 15010));

    // The bridge first: the control plane listens on its address.
    let bridge = state.bridge.clone().unwrap_or_default();
    progress(format!(
        "bridge {bridge} at {gateway}/{}",
        opts.pod_cidr.prefix
    ));
    host::create_bridge(&bridge, opts.pod_cidr)?;
    for r in &state.host_rules {
        host::insert_rule(r)?;
    }
    for port in [15010, 15012, 15014] {
        check_port(SocketAddr::from((gateway, port)))?;
    }

    let tokens_path = write_tokens(plan, dir, Some(PROXY_UID))?;
    let platform_path = dir.join("platform.json");
    PlatformFile::from_plan(plan)
        .write(&platform_path)
        .map_err(io("platform file"))?;

    // The control plane, in the host namespace.
    let ca = start_control(
        binary,
        supervisor,
        state,
        dir,
        gateway,
        &[],
        &platform_path,
        &tokens_path,
    )
    .await?;

    let env = Env {
        binary: binary.to_path_buf(),
        state_dir: dir.to_path_buf(),
        xds,
        ca,
        proxy_flags: opts.proxy_flags.clone(),
    };
    // Pods: namespace, files, rules, sidecar.
    for (i, pod) in plan.pods.iter().enumerate() {
        let netns = pods::netns_name(&opts.name, pod);
        let veth = pods::veth_name(&opts.name, i);
        progress(format!(
            "pod {}/{} at {} (netns {netns})",
            pod.namespace, pod.name, pod.ip
        ));
        state.netns.push(netns.clone());
        state.veths.push(veth.clone());
        state.etc_dirs.push(host::etc_dir(&netns));
        state.pods.push(PodRecord {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            netns: netns.clone(),
            ip: pod.ip.to_string(),
            admin: "127.0.0.1:15000".into(),
            metrics: SocketAddr::from((pod.ip, 15020)).to_string(),
            ..PodRecord::default()
        });
        save(state)?;
        host::create_pod_netns(
            &netns,
            &veth,
            state.bridge.as_deref().unwrap_or(""),
            pod.ip,
            opts.pod_cidr,
        )?;
        host::write_etc(&netns, pod, &plan.services)?;
        if pod.sidecar {
            let mut a = vec![
                "netns",
                "exec",
                &netns,
                binary.to_str().unwrap_or("meshwork"),
            ];
            let ipt = pods::iptables_args(gateway);
            a.extend(ipt.iter().map(String::as_str));
            host::run("ip", &a)?;
            supervisor
                .spawn(pods::sidecar_spec(&env, &netns, pod))
                .map_err(|e| UpError::User(e.to_string()))?;
        }
    }
    // Wait for every sidecar (config and certificate), then start the apps.
    wait_sidecars(plan, dir).await?;
    for pod in &plan.pods {
        let netns = pods::netns_name(&opts.name, pod);
        for spec in pods::container_specs(&env, plan, &netns, pod) {
            supervisor
                .spawn(spec)
                .map_err(|e| UpError::User(e.to_string()))?;
        }
    }
    save(state)?;
    Ok(())
}

/// Loads the manifests and plans the pods (addresses from `pod_range`),
/// printing what cannot run; fails when nothing can.
pub(crate) fn load_plan(
    opts: &UpOptions,
    pod_range: Cidr,
) -> Result<(Vec<meshwork_config::Resource>, Plan), UpError> {
    progress(format!(
        "loading manifests from {}",
        opts.config_dir.display()
    ));
    let loaded = meshwork_config::load_paths(std::slice::from_ref(&opts.config_dir));
    let mut diags = loaded.diagnostics;
    let plan = plan(&loaded.resources, pod_range, opts.service_cidr, &mut diags)
        .map_err(|e| UpError::User(e.to_string()))?;
    for d in &diags {
        let skipped = if d.level == Level::Error {
            " (skipped)"
        } else {
            ""
        };
        eprintln!("    {d}{skipped}");
    }
    if plan.pods.is_empty() {
        return Err(UpError::User(format!(
            "no Deployment with a command in {}; nothing to run",
            opts.config_dir.display()
        )));
    }
    Ok((loaded.resources, plan))
}

/// Waits until every sidecar reports ready on its pod address (config and
/// certificate), so workloads start with a working mesh.
pub(crate) async fn wait_sidecars(plan: &Plan, dir: &Path) -> Result<(), UpError> {
    progress("waiting for the sidecars to be ready (config and certificate)");
    for pod in plan.pods.iter().filter(|p| p.sidecar) {
        let health = SocketAddr::from((pod.ip, 15021));
        fetch::wait_ok(health, "/healthz/ready", Duration::from_secs(60))
            .await
            .map_err(|e| {
                UpError::User(format!(
                    "the sidecar of {}/{} is not ready: {e}; see {}",
                    pod.namespace,
                    pod.name,
                    pods::log_path(dir, pod, "istio-proxy").display()
                ))
            })?;
    }
    Ok(())
}

/// `env` plus, in explicit mode, the mesh's [`crate::state::MESH_ENV`]
/// marker (how cleanup finds every process of the mesh).
pub(crate) fn with_marker(state: &State, mut env: Vec<(String, String)>) -> Vec<(String, String)> {
    if !state.marker.is_empty() {
        env.push((crate::state::MESH_ENV.into(), state.marker.clone()));
    }
    env
}

/// Writes one bootstrap token per pod (owned by `owner` when given, for a
/// sidecar running as another user) and the CA's table; returns the table.
pub(crate) fn write_tokens(
    plan: &Plan,
    dir: &Path,
    owner: Option<u32>,
) -> Result<PathBuf, UpError> {
    let mut tokens = String::from("# <token> <namespace> <service-account>, one per pod\n");
    for pod in &plan.pods {
        let t = pods::new_token();
        tokens.push_str(&format!("{t} {} {}\n", pod.namespace, pod.service_account));
        let path = pods::token_path(dir, pod);
        if let Some(d) = path.parent() {
            std::fs::create_dir_all(d).map_err(io("token directory"))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .map_err(io("token directory"))?;
        }
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, &t).map_err(io("token"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400))
            .map_err(io("token"))?;
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&path, Some(uid), Some(uid)).map_err(io("token"))?;
        }
    }
    let tokens_path = dir.join("ca-tokens");
    std::fs::write(&tokens_path, tokens).map_err(io("tokens"))?;
    std::fs::set_permissions(&tokens_path, std::fs::Permissions::from_mode(0o600))
        .map_err(io("tokens"))?;
    Ok(tokens_path)
}

/// Starts the control plane on `gateway` (15010, 15012, 15014) watching
/// the user's directory and `extra_dirs`, records it, and waits until it
/// is ready and has written its root certificate. Returns the CA's
/// address and root for the sidecars (none for a binary without a CA).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn start_control(
    binary: &Path,
    supervisor: &Supervisor,
    state: &mut State,
    dir: &Path,
    gateway: Ipv4Addr,
    extra_dirs: &[PathBuf],
    platform_path: &Path,
    tokens_path: &Path,
) -> Result<Option<(SocketAddr, PathBuf)>, UpError> {
    let save = |s: &State| s.save(dir).map_err(io("state file"));
    let xds = SocketAddr::from((gateway, 15010));
    let debug = SocketAddr::from((gateway, 15014));
    let with_ca = supports(binary, "control", "--ca-tokens");
    let mut args: Vec<String> = vec![
        "control".into(),
        "--config-dir".into(),
        state.config_dir.display().to_string(),
    ];
    for d in extra_dirs {
        args.extend(["--config-dir".into(), d.display().to_string()]);
    }
    args.extend([
        "--platform-file".into(),
        platform_path.display().to_string(),
        "--xds-address".into(),
        xds.to_string(),
        "--debug-address".into(),
        debug.to_string(),
    ]);
    let ca = if with_ca {
        args.extend([
            "--state-dir".into(),
            dir.display().to_string(),
            "--ca-tokens".into(),
            tokens_path.display().to_string(),
            "--trust-domain".into(),
            "cluster.local".into(),
        ]);
        if supports(binary, "control", "--ca-address") {
            args.extend(["--ca-address".into(), format!("{gateway}:15012")]);
        }
        Some((
            SocketAddr::from((gateway, 15012)),
            dir.join("root-cert.pem"),
        ))
    } else {
        progress("this control plane has no CA yet: sidecars run without certificates (plaintext)");
        None
    };
    progress(format!(
        "control plane: xDS {xds}, debug {debug}{}",
        if with_ca {
            format!(", CA {gateway}:15012")
        } else {
            String::new()
        }
    ));
    let pid = supervisor
        .spawn(ProcSpec {
            label: "control".into(),
            program: binary.display().to_string(),
            args,
            env: with_marker(state, vec![("NO_COLOR".into(), "1".into())]),
            log: dir.join("logs").join("control.log"),
            restart: true,
        })
        .map_err(|e| UpError::User(e.to_string()))?;
    state.processes.push(HostProcess {
        pid: pid as i32,
        start: start_time(pid as i32).unwrap_or(0),
    });
    save(state)?;
    fetch::wait_ok(debug, "/ready", Duration::from_secs(30))
        .await
        .map_err(|e| {
            UpError::User(format!(
                "the control plane did not become ready: {e}; see {}",
                dir.join("logs/control.log").display()
            ))
        })?;
    if let Some((_, root)) = &ca {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !root.exists() {
            if tokio::time::Instant::now() >= deadline {
                return Err(UpError::User(format!(
                    "the control plane did not write its root certificate {}",
                    root.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    Ok(ca)
}

impl Mesh {
    /// Prints what runs where.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "mesh {:?} ({} mode): control plane xDS {}, debug {}\n",
            self.state.name,
            self.state.mode,
            self.state.xds.map(|a| a.to_string()).unwrap_or_default(),
            self.state.debug.map(|a| a.to_string()).unwrap_or_default()
        ));
        if self.state.mode == "explicit" {
            out.push_str(&crate::explicit::describe_pods(&self.state));
        } else {
            out.push_str(&format!(
                "{:<28} {:<12} {:<16} {}\n",
                "POD", "NAMESPACE", "IP", "NETNS"
            ));
            for p in &self.state.pods {
                out.push_str(&format!(
                    "{:<28} {:<12} {:<16} {}\n",
                    p.name, p.namespace, p.ip, p.netns
                ));
            }
        }
        if self.state.mode == "explicit" {
            out.push_str(&crate::explicit::describe_services(&self.plan));
            out.push_str(&format!("logs: {}\n", self.dir.join("logs").display()));
            return out;
        }
        out.push_str(&format!(
            "{:<28} {:<12} {}\n",
            "SERVICE", "NAMESPACE", "VIP:PORTS"
        ));
        for s in &self.plan.services {
            let ports: Vec<String> = s.ports.iter().map(|(_, p)| p.to_string()).collect();
            out.push_str(&format!(
                "{:<28} {:<12} {}:{}\n",
                s.name,
                s.namespace,
                s.vip,
                ports.join(",")
            ));
        }
        out.push_str(&format!("logs: {}\n", self.dir.join("logs").display()));
        out
    }

    /// The debug address of the control plane.
    pub fn debug_addr(&self) -> Option<SocketAddr> {
        self.state.debug
    }

    /// Pods' merged-metrics addresses (15020), by pod name.
    pub fn metrics_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.state
            .pods
            .iter()
            .filter_map(|p| Some((p.name.clone(), p.metrics.parse().ok()?)))
            .collect()
    }

    /// Stops every process and removes everything the mesh made.
    pub async fn down(self) {
        progress("stopping workloads, sidecars and the control plane");
        self.supervisor.shutdown().await;
        let state = self.state.clone();
        let lines = tokio::task::spawn_blocking(move || teardown(&state, Duration::from_secs(3)))
            .await
            .unwrap_or_default();
        for l in lines {
            progress(l);
        }
        let _ = std::fs::remove_file(State::file(&self.dir));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The default pod range for mesh `name` (`10.88.0.0/24` for the default).
pub fn default_pod_cidr() -> Cidr {
    Cidr {
        network: Ipv4Addr::new(10, 88, 0, 0),
        prefix: 24,
    }
}
