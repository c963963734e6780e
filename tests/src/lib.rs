//! Support for Meshwork's end-to-end suites: they run the real `meshwork`
//! binary and real workloads inside Linux network namespaces with iptables
//! interception, the way a sidecar runs in a pod.
//!
//! - [`netns`]: a throw-away network namespace (deleted on drop, also on
//!   panic), commands run inside it, and the skip rule for machines that
//!   cannot create one.
//! - [`process`]: child processes killed on drop, with their output
//!   captured line by line for assertions and failure messages.
//! - [`binary`]: where the `meshwork` binary is, building it first.
//! - [`pod`]: addresses, the workloads' Python, text helpers.
//! - [`mesh`]: the local-mesh suites' CLI, state and traffic checks.
#![forbid(unsafe_code)]

pub mod binary;
pub mod mesh;
pub mod netns;
pub mod pod;
pub mod process;

use std::time::{Duration, Instant};

/// Polls `f` until it returns `Some` or `timeout` passes (then `None`).
/// Tests assert on the result; the interval is only the polling pace.
pub fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// This crate's directory. Cargo sets `CARGO_MANIFEST_DIR` when it runs a
/// test, and that is preferred over the compile-time value: a test binary
/// reused from a shared target dir may have been compiled in another
/// checkout of the workspace.
pub fn manifest_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}
