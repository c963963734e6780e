//! Release builds only: lays out the functions the sidecar proxy runs
//! (`layout/hot-functions.txt`, written by `bench/hot-layout`) side by side
//! in one `.text.hot` output section, ahead of the rest of `.text`.
//!
//! Why: the one binary holds every subcommand (about 15 MB of code) and the
//! kernel maps code in whole page-cache folios / 64 KiB fault-around
//! windows, so the ~3 MB the proxy runs, scattered over all of it, kept
//! 8-10 MB of the binary resident. Grouped, far fewer windows are touched.
//! The patterns carry no build hashes, so a stale line only stops matching;
//! behaviour never depends on this file. `MESHWORK_NO_HOT_LAYOUT=1` turns it off.

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=layout/hot-functions.txt");
    println!("cargo:rerun-if-env-changed=MESHWORK_NO_HOT_LAYOUT");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let elf = std::env::var("CARGO_CFG_TARGET_OS").is_ok_and(|os| os == "linux");
    if !release || !elf || std::env::var_os("MESHWORK_NO_HOT_LAYOUT").is_some() {
        return;
    }
    let list = match std::fs::read_to_string("layout/hot-functions.txt") {
        Ok(list) => list,
        Err(e) => {
            println!("cargo:warning=no hot-text layout: layout/hot-functions.txt: {e}");
            return;
        }
    };
    // A linker-script fragment: INSERT keeps the linker's default layout
    // for everything else. Unquoted names are globs (`*` for build hashes).
    let mut script = String::from("SECTIONS\n{\n  .text.hot :\n  {\n");
    for line in list.lines().map(str::trim) {
        let valid = line
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.$*".contains(c));
        if line.is_empty() || line.starts_with('#') || !valid {
            continue;
        }
        // LLVM puts functions it deems cold (hashbrown's rehash, ...) in
        // `.text.unlikely.*`; those that ran belong with the hot ones.
        let _ = writeln!(script, "    *(.text.{line} .text.unlikely.{line})");
    }
    script.push_str("  }\n}\nINSERT BEFORE .text;\n");
    let Some(out) = std::env::var_os("OUT_DIR").map(PathBuf::from) else {
        return;
    };
    let path = out.join("hot-text.ld");
    if let Err(e) = std::fs::write(&path, script) {
        println!("cargo:warning=no hot-text layout: {}: {e}", path.display());
        return;
    }
    println!(
        "cargo:rustc-link-arg-bin=meshwork=-Wl,-T,{}",
        path.display()
    );
    // RELR relative relocations (glibc 2.36+): the dynamic loader reads a
    // few KiB instead of a 700 KiB `.rela.dyn` that then stayed mapped.
    println!("cargo:rustc-link-arg-bin=meshwork=-Wl,-z,pack-relative-relocs");
}
