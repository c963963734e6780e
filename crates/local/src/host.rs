//! The host side of pods: a bridge with the first address of the pod range,
//! one network namespace per pod joined to it by a veth pair, the pod's
//! `/etc/netns/<ns>/{hosts,resolv.conf}` (which `ip netns exec` mounts over
//! `/etc`), and FORWARD rules so bridged pod traffic passes a host firewall.
//! Everything goes through `ip` and `iptables`, like a CNI plugin's
//! commands, so what was made can be seen and removed by hand too.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;

use crate::cidr::Cidr;
use crate::plan::{PlannedService, Pod};

/// A failed host command, with what to do about it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HostError(pub String);

/// Runs a command; its stderr becomes the error.
pub fn run(program: &str, args: &[&str]) -> Result<String, HostError> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        HostError(format!(
            "cannot run {program} ({e}); install iproute2 and iptables (apt-get install iproute2 iptables)"
        ))
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(HostError(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Runs a command whose failure does not matter (cleanup of something that
/// may already be gone).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

/// Whether a network interface exists on the host.
pub fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Network namespaces that exist (`ip netns list`).
pub fn namespaces() -> Vec<String> {
    run("ip", &["netns", "list"])
        .map(|s| {
            s.lines()
                .filter_map(|l| l.split_whitespace().next().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Creates the bridge with the range's first address.
pub fn create_bridge(name: &str, cidr: Cidr) -> Result<(), HostError> {
    let addr = format!("{}/{}", cidr.gateway(), cidr.prefix);
    run("ip", &["link", "add", "name", name, "type", "bridge"])?;
    run("ip", &["addr", "add", &addr, "dev", name])?;
    run("ip", &["link", "set", name, "up"])?;
    Ok(())
}

/// The FORWARD rules letting traffic through the bridge (a host firewall
/// with a DROP policy, e.g. Docker's, would stop pod-to-pod traffic when
/// bridged frames go through iptables).
pub fn forward_rules(bridge: &str) -> Vec<Vec<String>> {
    [["-i", bridge], ["-o", bridge]]
        .iter()
        .map(|[dir, b]| {
            ["FORWARD", dir, b, "-j", "ACCEPT"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        })
        .collect()
}

/// Inserts an iptables rule (`iptables -I <rule>`) in the host namespace.
pub fn insert_rule(rule: &[String]) -> Result<(), HostError> {
    let mut args = vec!["-w", "-I"];
    args.extend(rule.iter().map(String::as_str));
    run("iptables", &args).map(|_| ())
}

/// Deletes an iptables rule (`iptables -D <rule>`), if present.
pub fn delete_rule(rule: &[String]) {
    let mut args = vec!["-w", "-D"];
    args.extend(rule.iter().map(String::as_str));
    run_quiet("iptables", &args);
}

/// Creates a pod's namespace with `eth0` at `ip` on the bridge, loopback
/// up and a default route through the bridge.
pub fn create_pod_netns(
    netns: &str,
    veth: &str,
    bridge: &str,
    ip: Ipv4Addr,
    cidr: Cidr,
) -> Result<(), HostError> {
    run("ip", &["netns", "add", netns])?;
    run(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns,
        ],
    )?;
    run("ip", &["link", "set", veth, "master", bridge, "up"])?;
    let addr = format!("{ip}/{}", cidr.prefix);
    let gw = cidr.gateway().to_string();
    let inside = |args: &[&str]| {
        let mut a = vec!["netns", "exec", netns, "ip"];
        a.extend_from_slice(args);
        run("ip", &a)
    };
    inside(&["addr", "add", &addr, "dev", "eth0"])?;
    inside(&["link", "set", "eth0", "up"])?;
    inside(&["link", "set", "lo", "up"])?;
    inside(&["route", "add", "default", "via", &gw])?;
    Ok(())
}

/// Pids of the processes in a namespace (`ip netns pids`).
pub fn netns_pids(netns: &str) -> Vec<i32> {
    run("ip", &["netns", "pids", netns])
        .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The `/etc/netns/<netns>` directory `ip netns exec` mounts over `/etc`.
pub fn etc_dir(netns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(netns)
}

/// A pod's `/etc/hosts`: itself, and every service of its namespace under
/// `name`, `name.ns`, `name.ns.svc` and `name.ns.svc.cluster.local`
/// (services of other namespaces under their qualified names only).
pub fn hosts_file(pod: &Pod, services: &[PlannedService]) -> String {
    let mut out = String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost\n");
    out.push_str(&format!("{}\t{}\n", pod.ip, pod.name));
    for s in services {
        let fq = s.hostname();
        let ns = format!("{}.{}", s.name, s.namespace);
        let svc = format!("{ns}.svc");
        if s.namespace == pod.namespace {
            out.push_str(&format!("{}\t{fq} {svc} {ns} {}\n", s.vip, s.name));
        } else {
            out.push_str(&format!("{}\t{fq} {svc} {ns}\n", s.vip));
        }
    }
    out
}

/// A pod's `/etc/resolv.conf`: Kubernetes' search path for its namespace
/// (names are answered by its hosts file; there is no DNS server).
pub fn resolv_conf(pod: &Pod) -> String {
    format!(
        "search {ns}.svc.cluster.local svc.cluster.local cluster.local\nnameserver 127.0.0.53\noptions ndots:5 attempts:1 timeout:1\n",
        ns = pod.namespace
    )
}

/// Writes the pod's `/etc/netns/<netns>` files.
pub fn write_etc(netns: &str, pod: &Pod, services: &[PlannedService]) -> Result<(), HostError> {
    let dir = etc_dir(netns);
    let err = |e: std::io::Error| HostError(format!("{}: {e}", dir.display()));
    std::fs::create_dir_all(&dir).map_err(err)?;
    std::fs::write(dir.join("hosts"), hosts_file(pod, services)).map_err(err)?;
    std::fs::write(dir.join("resolv.conf"), resolv_conf(pod)).map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str) -> Pod {
        Pod {
            name: "order-0".into(),
            namespace: ns.into(),
            workload: "order".into(),
            labels: Default::default(),
            service_account: "order".into(),
            ip: Ipv4Addr::new(10, 88, 0, 2),
            sidecar: true,
            containers: Vec::new(),
        }
    }

    #[test]
    fn hosts_answer_short_names_in_the_pods_namespace_only() {
        let services = vec![
            PlannedService {
                name: "shipping".into(),
                namespace: "default".into(),
                vip: Ipv4Addr::new(10, 96, 0, 3),
                ports: vec![("http".into(), 8080)],
            },
            PlannedService {
                name: "ledger".into(),
                namespace: "finance".into(),
                vip: Ipv4Addr::new(10, 96, 0, 4),
                ports: vec![],
            },
        ];
        let hosts = hosts_file(&pod("default"), &services);
        assert!(hosts.contains(
            "10.96.0.3\tshipping.default.svc.cluster.local shipping.default.svc shipping.default shipping\n"
        ));
        assert!(hosts.contains(
            "10.96.0.4\tledger.finance.svc.cluster.local ledger.finance.svc ledger.finance\n"
        ));
        assert!(hosts.contains("10.88.0.2\torder-0\n"));
        assert!(resolv_conf(&pod("shop")).starts_with("search shop.svc.cluster.local "));
        let rules = forward_rules("mwb-1");
        assert_eq!(rules[0], ["FORWARD", "-i", "mwb-1", "-j", "ACCEPT"]);
    }
}
