//! Throw-away Linux network namespaces.
//!
//! Each [`Netns`] is named `<prefix>-<pid>-<n>`, so concurrent test
//! processes never collide, and is deleted when dropped (also while a
//! failing test unwinds). Deleting a namespace removes its interfaces,
//! addresses and iptables rules with it; processes started inside must be
//! stopped first (see [`crate::process::Proc`], dropped before the
//! namespace when declared after it).

use std::ffi::OsStr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

/// Why namespace tests cannot run here (not root, no `ip netns`), or `None`
/// when they can and therefore must.
pub fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse::<u32>().ok());
    if euid != Some(0) {
        return Some(format!(
            "needs root to create network namespaces (effective uid {euid:?})"
        ));
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns list` failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` (iproute2) is not available: {e}")),
    }
}

/// A network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with `lo` up, after deleting namespaces
    /// with this prefix left behind by test processes that no longer exist
    /// (killed before their cleanup could run). Panics on failure.
    pub fn create(prefix: &str) -> Netns {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        remove_stale(prefix);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.run(["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `program args…` to be run inside the namespace (`ip netns exec`,
    /// which execs the program: the child's pid is the program's).
    pub fn command<I, S>(&self, program: impl AsRef<OsStr>, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec"])
            .arg(&self.name)
            .arg(program)
            .args(args);
        cmd
    }

    /// Runs a command inside the namespace; panics with its stderr unless it
    /// succeeds. Returns its stdout.
    pub fn run<I, S>(&self, argv: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = argv.into_iter();
        let program = argv.next().expect("a program");
        run(&mut self.command(program, argv))
    }

    /// Runs a command inside the namespace and returns its output, whatever
    /// its exit status.
    pub fn output<I, S>(&self, argv: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut argv = argv.into_iter();
        let program = argv.next().expect("a program");
        let mut cmd = self.command(program, argv);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "e2e: cannot delete network namespace {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("e2e: cannot delete network namespace {}: {e}", self.name),
        }
    }
}

/// Runs `cmd`; panics with its stderr unless it succeeds. Returns stdout.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deletes `<prefix>-<pid>-<n>` namespaces whose process is gone.
fn remove_stale(prefix: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line.split_whitespace().next() else {
            continue;
        };
        let Some(rest) = name.strip_prefix(prefix).and_then(|r| r.strip_prefix('-')) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("e2e: deleting stale network namespace {name}");
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}
