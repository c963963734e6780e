//! `meshwork proxy-status`: every proxy connected to the control plane
//! with the sync state of CDS, LDS, EDS and RDS (SYNCED, STALE, NACKED),
//! like `istioctl proxy-status`, from the control plane's `/debug/syncz`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshwork_local::ops::{status, target};
use meshwork_local::{fetch, state};

/// Which control plane.
#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// The control plane's debug address (15014); default: the running local mesh's.
    #[arg(long)]
    debug_address: Option<SocketAddr>,
    /// Local mesh name (when several run).
    #[arg(long)]
    name: Option<String>,
    /// Where meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    state_root: PathBuf,
    /// Output: `table` or `json` (the raw /debug/syncz).
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
    /// Also list proxies that have disconnected.
    #[arg(long)]
    all: bool,
}

/// The control plane's debug address for these arguments.
pub fn debug_address(
    explicit: Option<SocketAddr>,
    root: &std::path::Path,
    name: Option<&str>,
) -> anyhow::Result<SocketAddr> {
    if let Some(a) = explicit {
        return Ok(a);
    }
    let (_, s) = target::mesh(root, name).map_err(anyhow::Error::msg)?;
    s.debug
        .ok_or_else(|| anyhow::anyhow!("mesh {:?} records no control plane address", s.name))
}

/// Prints the status.
pub async fn run(a: ProxyStatusArgs) -> anyhow::Result<i32> {
    let addr = debug_address(a.debug_address, &a.state_root, a.name.as_deref())?;
    let (code, body) = fetch::get(addr, "/debug/syncz", Duration::from_secs(5))
        .await
        .map_err(|e| {
            anyhow::anyhow!("{e}; is the control plane running (meshwork up / meshwork control)?")
        })?;
    if code != 200 {
        anyhow::bail!("{addr}/debug/syncz answered {code}");
    }
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", status::table(&v, a.all));
    }
    Ok(0)
}
