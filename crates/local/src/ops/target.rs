//! Finding what the operator CLI talks to: the running mesh (by name, or
//! the only one), its control plane's debug address, and a pod's admin
//! port, reached inside the pod's network namespace by running this
//! binary there (`ip netns exec <ns> meshwork http-get …`), since admin
//! listens on the pod's loopback only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::state::{PodRecord, State};

/// The mesh to talk to: `name` if given, else the only running one.
pub fn mesh(root: &Path, name: Option<&str>) -> Result<(PathBuf, State), String> {
    let all = State::all(root);
    if let Some(n) = name {
        return all.into_iter().find(|(_, s)| s.name == n).ok_or_else(|| {
            format!(
                "no local mesh named {n:?} is running (nothing in {})",
                root.display()
            )
        });
    }
    match all.len() {
        0 => Err(format!(
            "no local mesh is running (nothing in {}); start one with `meshwork up -f DIR` or `meshwork demo`, or pass the control plane's debug address",
            root.display()
        )),
        1 => Ok(all.into_iter().next().unwrap_or_default()),
        _ => Err(format!(
            "several local meshes run ({}); pick one with --name",
            all.iter()
                .map(|(_, s)| s.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// A pod by `name`, `name.namespace` or `namespace/name`.
pub fn pod<'a>(state: &'a State, name: &str) -> Result<&'a PodRecord, String> {
    let (pod, ns) = if let Some((ns, p)) = name.split_once('/') {
        (p, Some(ns))
    } else if let Some((p, ns)) = name.split_once('.') {
        (p, Some(ns))
    } else {
        (name, None)
    };
    let found: Vec<&PodRecord> = state
        .pods
        .iter()
        .filter(|p| p.name == pod && ns.is_none_or(|n| p.namespace == n))
        .collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(format!(
            "no pod {name:?} in mesh {:?}; pods: {}",
            state.name,
            state
                .pods
                .iter()
                .map(|p| format!("{}.{}", p.name, p.namespace))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        _ => Err(format!(
            "pod name {name:?} is ambiguous; say name.namespace"
        )),
    }
}

/// GETs `path` from a pod's admin port and returns the body.
pub async fn admin_get(binary: &Path, pod: &PodRecord, path: &str) -> Result<String, String> {
    let admin: SocketAddr = pod
        .admin
        .parse()
        .map_err(|_| format!("bad admin address {:?}", pod.admin))?;
    if pod.netns.is_empty() {
        let (status, body) = crate::fetch::get(admin, path, Duration::from_secs(5))
            .await
            .map_err(|e| e.to_string())?;
        if status != 200 {
            return Err(format!("{path}: status {status}"));
        }
        return Ok(String::from_utf8_lossy(&body).into_owned());
    }
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .arg(binary)
        .args(["http-get", &format!("http://{admin}{path}")])
        .output()
        .await
        .map_err(|e| format!("cannot run `ip netns exec` ({e}); proxy-config needs root"))?;
    if !out.status.success() {
        return Err(format!(
            "cannot reach the admin port of {}.{}: {}",
            pod.name,
            pod.namespace,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
