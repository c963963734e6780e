//! `meshwork down`: stops a local mesh and removes everything it made
//! (processes, network namespaces, bridge, iptables rules, /etc/netns),
//! also after a crash of `meshwork up`.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshwork_local::state::{self, State};

/// Which mesh.
#[derive(Args, Debug)]
pub struct DownArgs {
    /// Mesh name (default: every local mesh).
    #[arg(long)]
    name: Option<String>,
    /// Where meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    state_root: PathBuf,
}

/// Stops the mesh(es).
pub fn run(a: &DownArgs) -> anyhow::Result<i32> {
    let all = State::all(&a.state_root);
    let chosen: Vec<_> = all
        .into_iter()
        .filter(|(_, s)| a.name.as_deref().is_none_or(|n| s.name == n))
        .collect();
    if chosen.is_empty() {
        eprintln!(
            "no local mesh{} to stop",
            a.name
                .as_deref()
                .map(|n| format!(" named {n:?}"))
                .unwrap_or_default()
        );
        return Ok(0);
    }
    for (dir, s) in chosen {
        eprintln!("==> stopping mesh {:?}", s.name);
        if s.owner_alive() && s.owner != std::process::id() as i32 {
            // Let `meshwork up` stop its own processes in order.
            state::signal(s.owner, state::Sig::TERM);
            let deadline = std::time::Instant::now() + Duration::from_secs(20);
            while s.owner_alive() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        // Whatever is left (or everything, after a crash).
        if let Some(left) = State::load(&dir) {
            for line in state::teardown(&left, Duration::from_secs(3)) {
                eprintln!("==> {line}");
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        eprintln!("==> mesh {:?} is down", s.name);
    }
    Ok(0)
}
