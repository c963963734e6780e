//! The processes of a pod: the init step (`meshwork iptables` inside the
//! pod's namespace), the sidecar (`meshwork proxy` as uid 1337) and the
//! containers' commands, each as a [`ProcSpec`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::plan::{Plan, Pod};
use crate::supervise::ProcSpec;

/// The proxy's uid and gid, as Istio's.
pub const PROXY_UID: u32 = 1337;

/// Where the mesh's shared pieces are, for building commands.
#[derive(Clone, Debug)]
pub struct Env {
    /// The `meshwork` binary (readable and executable by uid 1337).
    pub binary: PathBuf,
    /// The state directory (logs, tokens).
    pub state_dir: PathBuf,
    /// The control plane's xDS address.
    pub xds: SocketAddr,
    /// The CA's address and root certificate, when the control plane has a CA.
    pub ca: Option<(SocketAddr, PathBuf)>,
    /// Extra `meshwork proxy` flags.
    pub proxy_flags: Vec<String>,
}

/// A pod's network namespace name: `mw-<mesh>-<namespace>-<pod>`.
pub fn netns_name(mesh: &str, pod: &Pod) -> String {
    format!("mw-{mesh}-{}-{}", pod.namespace, pod.name)
}

/// A short, stable tag for interface names (which may have 15 bytes).
pub fn tag(mesh: &str) -> String {
    // FNV-1a: stable across runs and builds.
    let mut h: u32 = 0x811c_9dc5;
    for b in mesh.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{:06x}", h & 0x00ff_ffff)
}

/// The bridge's name: `mwb-<tag>`.
pub fn bridge_name(mesh: &str) -> String {
    format!("mwb-{}", tag(mesh))
}

/// The host end of pod `index`'s veth pair: `mwv<tag>-<index>`... kept
/// within 15 bytes.
pub fn veth_name(mesh: &str, index: usize) -> String {
    format!("v{}-{index}", tag(mesh))
}

/// A pod's token file (readable by the proxy only).
pub fn token_path(state_dir: &Path, pod: &Pod) -> PathBuf {
    state_dir
        .join("pods")
        .join(format!("{}.{}", pod.namespace, pod.name))
        .join("token")
}

/// A log file of a pod's process.
pub fn log_path(state_dir: &Path, pod: &Pod, what: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{}.{}.{what}.log", pod.namespace, pod.name))
}

fn labels_flag(pod: &Pod) -> String {
    pod.labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// `ip netns exec <netns> <argv…>`.
fn in_netns(netns: &str, argv: Vec<String>) -> (String, Vec<String>) {
    let mut args = vec!["netns".to_string(), "exec".into(), netns.into()];
    args.extend(argv);
    ("ip".into(), args)
}

/// Arguments of `meshwork iptables` for a pod (istio-iptables' defaults,
/// plus excluding the control plane so a sidecar-less pod still reaches it).
pub fn iptables_args(gateway: Ipv4Addr) -> Vec<String> {
    [
        "iptables",
        "-p",
        "15001",
        "-z",
        "15006",
        "-u",
        "1337",
        "-m",
        "REDIRECT",
        "-i",
        "*",
        "-x",
        &format!("{gateway}/32"),
        "-b",
        "*",
        "-d",
        "15090,15021,15020",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// The sidecar's `meshwork proxy` flags.
pub fn proxy_args(env: &Env, pod: &Pod) -> Vec<String> {
    let mut a: Vec<String> = vec![
        "proxy".into(),
        "--xds-address".into(),
        env.xds.to_string(),
        "--node-id".into(),
        format!(
            "sidecar~{}~{}.{}~{}.svc.cluster.local",
            pod.ip, pod.name, pod.namespace, pod.namespace
        ),
        "--instance-ip".into(),
        pod.ip.to_string(),
        "--namespace".into(),
        pod.namespace.clone(),
        "--workload".into(),
        pod.workload.clone(),
        "--service-account".into(),
        pod.service_account.clone(),
        "--concurrency".into(),
        "1".into(),
    ];
    let labels = labels_flag(pod);
    if !labels.is_empty() {
        a.push("--labels".into());
        a.push(labels);
    }
    if let Some((addr, root)) = &env.ca {
        a.extend([
            "--ca-address".into(),
            addr.to_string(),
            "--ca-root-cert".into(),
            root.display().to_string(),
            "--ca-token-file".into(),
            token_path(&env.state_dir, pod).display().to_string(),
        ]);
    }
    a.extend(env.proxy_flags.iter().cloned());
    a
}

/// The sidecar as uid 1337 inside the pod's namespace.
pub fn sidecar_spec(env: &Env, netns: &str, pod: &Pod) -> ProcSpec {
    let uid = PROXY_UID.to_string();
    let mut argv: Vec<String> = vec![
        "setpriv".into(),
        "--reuid".into(),
        uid.clone(),
        "--regid".into(),
        uid,
        "--clear-groups".into(),
        env.binary.display().to_string(),
    ];
    argv.extend(proxy_args(env, pod));
    let (program, args) = in_netns(netns, argv);
    ProcSpec {
        label: format!("{}/{}/istio-proxy", pod.namespace, pod.name),
        program,
        args,
        env: vec![("NO_COLOR".into(), "1".into())],
        log: log_path(&env.state_dir, pod, "istio-proxy"),
        restart: true,
    }
}

/// A container's command: `meshwork` as the first word means this binary.
pub fn resolve_argv(binary: &Path, argv: &[String]) -> Vec<String> {
    let mut out = argv.to_vec();
    if let Some(first) = out.first_mut()
        && first == "meshwork"
    {
        *first = binary.display().to_string();
    }
    out
}

/// Each container of the pod as a process inside its namespace.
pub fn container_specs(env: &Env, plan: &Plan, netns: &str, pod: &Pod) -> Vec<ProcSpec> {
    let base = pod.base_env(&plan.services);
    pod.containers
        .iter()
        .map(|c| {
            let (program, args) = in_netns(netns, resolve_argv(&env.binary, &c.argv));
            let mut e = base.clone();
            e.extend(c.env.iter().cloned());
            ProcSpec {
                label: format!("{}/{}/{}", pod.namespace, pod.name, c.name),
                program,
                args,
                env: e,
                log: log_path(&env.state_dir, pod, &c.name),
                restart: true,
            }
        })
        .collect()
}

/// A random bootstrap token (32 hex digits).
pub fn new_token() -> String {
    use rand::Rng;
    let mut rng = rand::rng();
    (0..16)
        .map(|_| format!("{:02x}", rng.random::<u8>()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        Pod {
            name: "shipping-v2-0".into(),
            namespace: "default".into(),
            workload: "shipping-v2".into(),
            labels: [
                ("app".into(), "shipping".into()),
                ("version".into(), "v2".into()),
            ]
            .into(),
            service_account: "shipping".into(),
            ip: Ipv4Addr::new(10, 88, 0, 5),
            sidecar: true,
            containers: vec![],
        }
    }

    #[test]
    fn names_fit_interface_limits_and_are_stable() {
        assert_eq!(tag("demo"), tag("demo"));
        assert_ne!(tag("demo"), tag("demo2"));
        assert!(bridge_name("a-very-long-mesh-name").len() <= 15);
        assert!(veth_name("a-very-long-mesh-name", 999).len() <= 15);
        assert_eq!(netns_name("demo", &pod()), "mw-demo-default-shipping-v2-0");
    }

    #[test]
    fn sidecar_runs_as_1337_in_the_pod_with_identity_flags() {
        let env = Env {
            binary: "/run/meshwork/local/demo/bin/meshwork".into(),
            state_dir: "/run/meshwork/local/demo".into(),
            xds: "10.88.0.1:15010".parse().unwrap(),
            ca: Some((
                "10.88.0.1:15012".parse().unwrap(),
                "/run/meshwork/local/demo/root-cert.pem".into(),
            )),
            proxy_flags: vec![],
        };
        let s = sidecar_spec(&env, "mw-demo-default-shipping-v2-0", &pod());
        assert_eq!(s.program, "ip");
        let line = s.args.join(" ");
        assert!(line.starts_with(
            "netns exec mw-demo-default-shipping-v2-0 setpriv --reuid 1337 --regid 1337 --clear-groups /run/meshwork/local/demo/bin/meshwork proxy --xds-address 10.88.0.1:15010"
        ), "{line}");
        assert!(line.contains("--labels app=shipping,version=v2"), "{line}");
        assert!(
            line.contains(
                "--ca-token-file /run/meshwork/local/demo/pods/default.shipping-v2-0/token"
            ),
            "{line}"
        );
        assert!(line.contains(
            "--node-id sidecar~10.88.0.5~shipping-v2-0.default~default.svc.cluster.local"
        ));
    }

    #[test]
    fn meshwork_commands_use_this_binary() {
        let argv = resolve_argv(
            Path::new("/bin/mw"),
            &["meshwork".into(), "demo-app".into(), "order".into()],
        );
        assert_eq!(argv, ["/bin/mw", "demo-app", "order"]);
        assert_eq!(
            resolve_argv(Path::new("/bin/mw"), &["python3".into()]),
            ["python3"]
        );
        assert_eq!(new_token().len(), 32);
        assert_ne!(new_token(), new_token());
        assert!(iptables_args(Ipv4Addr::new(10, 88, 0, 1)).contains(&"10.88.0.1/32".to_string()));
    }
}
