//! `meshwork up` in explicit mode (see [`crate::explicit`]): no root, no
//! network namespaces, no iptables. The control plane, every sidecar and
//! every workload run as host processes of the current user, each carrying
//! the mesh's [`crate::state::MESH_ENV`] marker so that `meshwork down`,
//! Ctrl-C or the next `up` after a crash finds and stops all of them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use meshwork_registry::Registry;

use crate::explicit::{self, Addrs};
use crate::plan::{Plan, Pod};
use crate::platform::PlatformFile;
use crate::pods::{self, Env};
use crate::state::{HostProcess, PodRecord, State, start_time};
use crate::supervise::{ProcSpec, Supervisor};
use crate::up::{
    Mesh, UpError, UpOptions, check_port, clean_leftovers, io, load_plan, progress, start_control,
    wait_sidecars, with_marker, write_tokens,
};

/// Brings the mesh up in explicit mode. The caller keeps the returned
/// [`Mesh`] and calls [`Mesh::down`] to stop it.
pub async fn up(opts: &UpOptions) -> Result<Mesh, UpError> {
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
    progress(explicit::NOTICE);
    let range = explicit::pod_range(opts.pod_cidr).map_err(UpError::User)?;
    let (resources, mut plan) = load_plan(opts, range)?;
    explicit::check_room(range, plan.services.len()).map_err(UpError::User)?;
    explicit::label_pods(&mut plan);
    std::fs::create_dir_all(&dir).map_err(io("state directory"))?;
    let gateway = range.gateway();
    let mut state = State {
        name: opts.name.clone(),
        mode: "explicit".into(),
        owner: std::process::id() as i32,
        config_dir: std::fs::canonicalize(&opts.config_dir).unwrap_or(opts.config_dir.clone()),
        xds: Some(SocketAddr::from((gateway, 15010))),
        debug: Some(SocketAddr::from((gateway, 15014))),
        marker: dir.display().to_string(),
        ..State::default()
    };
    state.save(&dir).map_err(io("state file"))?;
    let supervisor = Supervisor::new();
    let registry = {
        let instances = PlatformFile::from_plan(&plan).instances;
        Registry::build(&resources, &instances)
    };
    let result = start_all(opts, &plan, &registry, &dir, &supervisor, &mut state).await;
    let mesh = Mesh {
        state,
        dir,
        plan,
        supervisor,
    };
    match result {
        Ok(()) => Ok(mesh),
        Err(e) => {
            mesh.down().await;
            Err(e)
        }
    }
}

/// Every address:port explicit mode binds, so a clash is reported before
/// anything starts.
fn ports_to_check(
    plan: &Plan,
    registry: &Registry,
    gateway: std::net::Ipv4Addr,
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = [15010, 15012, 15014]
        .map(|p| SocketAddr::from((gateway, p)))
        .to_vec();
    let egress = explicit::egress_listeners(plan, registry);
    for pod in plan.pods.iter().filter(|p| p.sidecar) {
        let a = explicit::addrs(pod.ip);
        for p in [15000, 15020, 15021, 15090] {
            out.push(SocketAddr::from((a.pod, p)));
        }
        for p in explicit::ingress_ports(registry, pod).keys() {
            out.push(SocketAddr::from((a.pod, *p)));
        }
        for e in &egress {
            if let Some(ip) = a.egress(e.index) {
                out.push(SocketAddr::from((ip, e.port)));
            }
        }
    }
    out
}

async fn start_all(
    opts: &UpOptions,
    plan: &Plan,
    registry: &Registry,
    dir: &Path,
    supervisor: &Supervisor,
    state: &mut State,
) -> Result<(), UpError> {
    let gateway = explicit::pod_range(opts.pod_cidr)
        .map_err(UpError::User)?
        .gateway();
    for addr in ports_to_check(plan, registry, gateway) {
        check_port(addr)?;
    }
    let generated = generated_dir(dir);
    let sidecars =
        explicit::write_sidecars(plan, registry, &generated).map_err(io("generated Sidecars"))?;
    progress(format!(
        "one Sidecar per pod (ingress/egress listeners bound to its addresses) in {}",
        sidecars.display()
    ));
    let tokens_path = write_tokens(plan, dir, None)?;
    let platform_path = dir.join("platform.json");
    PlatformFile::from_plan(plan)
        .write(&platform_path)
        .map_err(io("platform file"))?;
    let ca = start_control(
        &opts.binary,
        supervisor,
        state,
        dir,
        gateway,
        std::slice::from_ref(&generated),
        &platform_path,
        &tokens_path,
    )
    .await?;
    let env = Env {
        binary: opts.binary.clone(),
        state_dir: dir.to_path_buf(),
        xds: SocketAddr::from((gateway, 15010)),
        ca,
        proxy_flags: opts.proxy_flags.clone(),
    };
    let services = plan.services.len();
    for pod in &plan.pods {
        let a = explicit::addrs(pod.ip);
        let egress = a.egress_span(services);
        progress(format!(
            "pod {}/{}: pod address {}, app {}, services at {egress}",
            pod.namespace, pod.name, a.pod, a.app
        ));
        state.pods.push(PodRecord {
            name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            netns: String::new(),
            ip: a.pod.to_string(),
            admin: SocketAddr::from((a.pod, 15000)).to_string(),
            metrics: SocketAddr::from((a.pod, 15020)).to_string(),
            app: a.app.to_string(),
            egress,
        });
        if pod.sidecar {
            let spec = sidecar_spec(&env, state, pod, &a);
            spawn(supervisor, state, dir, spec)?;
        }
    }
    wait_sidecars(plan, dir).await?;
    for pod in &plan.pods {
        let a = explicit::addrs(pod.ip);
        for c in &pod.containers {
            let mut e = explicit::container_env(pod, &a, plan);
            e.extend(c.env.iter().cloned());
            let spec = ProcSpec {
                label: format!("{}/{}/{}", pod.namespace, pod.name, c.name),
                program: pods::resolve_argv(&opts.binary, &c.argv)
                    .first()
                    .cloned()
                    .unwrap_or_default(),
                args: pods::resolve_argv(&opts.binary, &c.argv)
                    .into_iter()
                    .skip(1)
                    .collect(),
                env: with_marker(state, e),
                log: pods::log_path(dir, pod, &c.name),
                restart: true,
            };
            spawn(supervisor, state, dir, spec)?;
        }
    }
    Ok(())
}

/// Starts a process, records it in the state file.
fn spawn(
    supervisor: &Supervisor,
    state: &mut State,
    dir: &Path,
    spec: ProcSpec,
) -> Result<(), UpError> {
    let pid = supervisor
        .spawn(spec)
        .map_err(|e| UpError::User(e.to_string()))?;
    state.processes.push(HostProcess {
        pid: pid as i32,
        start: start_time(pid as i32).unwrap_or(0),
    });
    state.save(dir).map_err(io("state file"))
}

/// The sidecar as a host process of this user, its admin, health and
/// metrics ports on the pod address (each pod has its own).
fn sidecar_spec(env: &Env, state: &State, pod: &Pod, a: &Addrs) -> ProcSpec {
    let mut args = pods::proxy_args(env, pod);
    for (flag, port) in [
        ("--admin-address", 15000),
        ("--health-address", 15021),
        ("--stats-address", 15090),
        ("--merged-stats-address", 15020),
    ] {
        args.extend([
            flag.to_string(),
            SocketAddr::from((a.pod, port)).to_string(),
        ]);
    }
    ProcSpec {
        label: format!("{}/{}/istio-proxy", pod.namespace, pod.name),
        program: env.binary.display().to_string(),
        args,
        env: with_marker(state, vec![("NO_COLOR".into(), "1".into())]),
        log: pods::log_path(&env.state_dir, pod, "istio-proxy"),
        restart: true,
    }
}

/// Where generated configuration lives in a mesh's state directory.
pub fn generated_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("explicit-config")
}
