//! Small helpers for building a "pod" in a network namespace and running
//! its workloads: addresses, the Python interpreter the workloads use, and
//! text conversions for failure messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::netns::Netns;

/// Puts each `addr/32` on a dummy interface, or on `lo` where the kernel has
/// no dummy driver; either way they are local addresses of the namespace only.
pub fn add_addresses(ns: &Netns, addrs: &[&str]) {
    let dummy = ns.output(["ip", "link", "add", "mw0", "type", "dummy"]);
    let dev = if dummy.status.success() {
        ns.run(["ip", "link", "set", "mw0", "up"]);
        "mw0"
    } else {
        "lo"
    };
    for addr in addrs {
        ns.run(["ip", "addr", "add", &format!("{addr}/32"), "dev", dev]);
    }
}

/// The interpreter itself (not a pyenv shim), so it runs the same inside
/// the namespace.
pub fn python3() -> PathBuf {
    let o = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is required for the e2e workloads");
    assert!(o.status.success(), "python3: {}", text(&o.stderr));
    PathBuf::from(text(&o.stdout).trim())
}

/// A path as UTF-8 (test paths always are).
pub fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Bytes (a process's output) as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
