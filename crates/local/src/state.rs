//! What a running local mesh made, kept in `<state-dir>/state.json` (by
//! default `/run/meshwork/local/<name>/`) and written before each thing is
//! made, so `meshwork down`, Ctrl-C and the next `meshwork up` after a
//! crash can remove exactly that: processes, namespaces, the bridge, host
//! iptables rules and `/etc/netns` directories.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::host;

/// Signals, for [`signal`].
pub use rustix::process::Signal as Sig;

/// The default parent of every mesh's state directory.
pub const STATE_ROOT: &str = "/run/meshwork/local";

/// A pod as the operator CLI needs it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Pod name (`<deployment>-<n>`).
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Its network namespace (empty in explicit mode).
    pub netns: String,
    /// Its address.
    pub ip: String,
    /// The sidecar's admin address (inside the pod's namespace).
    pub admin: String,
    /// The sidecar's merged metrics address (15020), reachable from the host.
    pub metrics: String,
    /// Explicit mode: where the application listens (the sidecar's
    /// ingress `defaultEndpoint` address).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    /// Explicit mode: where the sidecar's egress listeners are bound, one
    /// address per Service (the pod's `*_SERVICE_HOST`s), as `first-last`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub egress: String,
}

/// A process started in the host namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostProcess {
    /// Its pid.
    pub pid: i32,
    /// Its start time (`/proc/<pid>/stat` field 22), so a reused pid is
    /// never mistaken for it.
    pub start: u64,
}

/// Everything one local mesh made.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Mesh name.
    pub name: String,
    /// `netns` or `explicit`.
    pub mode: String,
    /// Pid of `meshwork up`.
    pub owner: i32,
    /// The watched config directory.
    pub config_dir: PathBuf,
    /// Control plane xDS address.
    pub xds: Option<SocketAddr>,
    /// Control plane debug address (15014).
    pub debug: Option<SocketAddr>,
    /// The bridge (netns mode).
    pub bridge: Option<String>,
    /// Network namespaces.
    pub netns: Vec<String>,
    /// Host veth ends.
    pub veths: Vec<String>,
    /// Host iptables rules (as passed after `-I`).
    pub host_rules: Vec<Vec<String>>,
    /// `/etc/netns/<ns>` directories.
    pub etc_dirs: Vec<PathBuf>,
    /// Processes in the host namespace (control plane, explicit mode).
    pub processes: Vec<HostProcess>,
    /// Pods.
    pub pods: Vec<PodRecord>,
    /// Explicit mode: the [`MESH_ENV`] value its processes carry.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub marker: String,
}

/// Environment variable carried by every process of an explicit-mode
/// mesh (its state directory), so that cleanup after a crash finds them
/// all, restarted ones included, without network namespaces to search.
pub const MESH_ENV: &str = "MESHWORK_LOCAL_MESH";

/// Where a user who is not root keeps meshes (`/run` is root's):
/// `$XDG_RUNTIME_DIR/meshwork/local`, else `/tmp/meshwork-<uid>/local`.
pub fn user_root() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => PathBuf::from(d).join("meshwork").join("local"),
        None => std::env::temp_dir()
            .join(format!("meshwork-{}", rustix::process::geteuid().as_raw()))
            .join("local"),
    }
}

/// The state root to write to: `root`, except that the default root
/// ([`STATE_ROOT`]) becomes [`user_root`] for a user who is not root.
pub fn writable_root(root: &Path) -> PathBuf {
    if root == Path::new(STATE_ROOT) && !rustix::process::geteuid().is_root() {
        user_root()
    } else {
        root.to_path_buf()
    }
}

/// The state directory of mesh `name` under `root`.
pub fn state_dir(root: &Path, name: &str) -> PathBuf {
    root.join(name)
}

impl State {
    /// The file inside a state directory.
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    /// Reads a state directory's file, if there is one.
    pub fn load(dir: &Path) -> Option<State> {
        let text = std::fs::read(State::file(dir)).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join("state.json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(tmp, State::file(dir))
    }

    /// Every mesh with a state file under `root`; for the default root
    /// also those under this user's [`user_root`] (explicit meshes run
    /// without root keep their state there).
    pub fn all(root: &Path) -> Vec<(PathBuf, State)> {
        let mut roots = vec![root.to_path_buf()];
        if root == Path::new(STATE_ROOT) && user_root() != root {
            roots.push(user_root());
        }
        let mut out: Vec<(PathBuf, State)> = roots
            .iter()
            .filter_map(|r| std::fs::read_dir(r).ok())
            .flat_map(|rd| rd.flatten())
            .filter_map(|e| Some((e.path(), State::load(&e.path())?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether the `meshwork up` that wrote it still runs.
    pub fn owner_alive(&self) -> bool {
        self.owner > 0 && Path::new(&format!("/proc/{}", self.owner)).exists()
    }
}

/// A process's start time, from `/proc/<pid>/stat`.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command may contain spaces and parentheses: fields follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Sends a signal to a pid, ignoring a process that is already gone.
pub fn signal(pid: i32, sig: rustix::process::Signal) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, sig);
    }
}

fn alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rfind(')')
                    .map(|i| s[i + 1..].trim_start().starts_with('Z'))
            })
            .unwrap_or(true)
}

/// Processes of this user whose environment has `MESH_ENV=<marker>`.
pub fn marked_pids(marker: &str) -> Vec<i32> {
    if marker.is_empty() {
        return Vec::new();
    }
    let want = format!("{MESH_ENV}={marker}");
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.split(|b| *b == 0).any(|kv| kv == want.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Stops processes: SIGTERM, up to `grace` to exit, then SIGKILL.
pub fn stop_pids(pids: &[i32], grace: std::time::Duration) {
    use rustix::process::Signal;
    for p in pids {
        signal(*p, Signal::TERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && pids.iter().any(|p| alive(*p)) {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for p in pids.iter().filter(|p| alive(**p)) {
        signal(*p, Signal::KILL);
    }
}

/// Removes everything the state records (processes first, then
/// namespaces, links, rules and files), tolerating what is already gone.
/// Returns a line per thing removed, for the user.
pub fn teardown(state: &State, grace: std::time::Duration) -> Vec<String> {
    let mut done = Vec::new();
    let mut pids: Vec<i32> = state
        .processes
        .iter()
        .filter(|p| start_time(p.pid) == Some(p.start))
        .map(|p| p.pid)
        .collect();
    let existing = host::namespaces();
    for ns in &state.netns {
        if existing.contains(ns) {
            pids.extend(host::netns_pids(ns));
        }
    }
    if state.mode == "explicit" {
        pids.extend(marked_pids(&state.marker));
    }
    pids.sort_unstable();
    pids.dedup();
    pids.retain(|p| *p != std::process::id() as i32);
    if !pids.is_empty() {
        stop_pids(&pids, grace);
        done.push(format!("stopped {} processes", pids.len()));
    }
    for ns in &state.netns {
        if existing.contains(ns) {
            host::run_quiet("ip", &["netns", "delete", ns]);
            done.push(format!("deleted network namespace {ns}"));
        }
    }
    for v in &state.veths {
        if host::link_exists(v) {
            host::run_quiet("ip", &["link", "delete", v]);
        }
    }
    if let Some(b) = &state.bridge
        && host::link_exists(b)
    {
        host::run_quiet("ip", &["link", "delete", b]);
        done.push(format!("deleted bridge {b}"));
    }
    for r in &state.host_rules {
        host::delete_rule(r);
    }
    if !state.host_rules.is_empty() {
        done.push(format!(
            "removed {} host iptables rules",
            state.host_rules.len()
        ));
    }
    for d in &state.etc_dirs {
        if d.starts_with("/etc/netns") && d.exists() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_loads_and_lists() {
        let root = tempfile::tempdir().unwrap();
        let dir = state_dir(root.path(), "demo");
        let s = State {
            name: "demo".into(),
            mode: "netns".into(),
            owner: std::process::id() as i32,
            netns: vec!["mw-demo-order-0".into()],
            ..State::default()
        };
        s.save(&dir).unwrap();
        assert_eq!(State::load(&dir).unwrap(), s);
        assert!(s.owner_alive());
        let all = State::all(root.path());
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.name, "demo");
        assert!(State::load(&root.path().join("none")).is_none());
    }

    #[test]
    fn start_time_of_self_is_stable() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert_eq!(start_time(i32::MAX), None);
    }
}
