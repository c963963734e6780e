//! Locating the `meshwork` binary.
//!
//! `env!("CARGO_BIN_EXE_meshwork")` only exists inside the package that owns
//! the binary, so the e2e suites find it next to their own executable:
//! cargo puts test executables in `<target>/<profile>/deps/` and binaries in
//! `<target>/<profile>/`. Before the first use, [`meshwork`] runs
//! `cargo build -p meshwork` for that profile (a no-op when the binary is
//! fresh) so that `cargo test -p meshwork-e2e` never runs a stale proxy.
//! Set `MESHWORK_BIN` to test a binary built elsewhere instead.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The `meshwork` binary for the profile this test was built with.
pub fn meshwork() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MESHWORK_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "MESHWORK_BIN={} is not a file", p.display());
            return p;
        }
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .filter(|d| d.file_name().is_some_and(|n| n == "deps"))
            .and_then(Path::parent)
            .unwrap_or_else(|| panic!("{} is not in <target>/<profile>/deps", exe.display()));
        let bin = profile_dir.join("meshwork");
        build(profile_dir, &bin);
        bin
    })
    .clone()
}

fn build(profile_dir: &Path, bin: &Path) {
    let manifest_dir = crate::manifest_dir();
    let workspace = manifest_dir
        .parent()
        .expect("tests/ is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        .args(["-p", "meshwork", "--bin", "meshwork"]);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some(profile) => {
            cmd.args(["--profile", profile]);
        }
    }
    eprintln!("e2e: building the meshwork binary: {cmd:?}");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
    assert!(
        bin.is_file(),
        "{cmd:?} succeeded but {} does not exist (a different target dir?); set MESHWORK_BIN",
        bin.display()
    );
}
