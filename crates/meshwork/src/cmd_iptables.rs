//! `meshwork iptables`: the init-container program. Installs Istio's
//! sidecar interception rules (istio-iptables' flags and rules) in the
//! current network namespace, or removes them (`--cleanup`).

use clap::Args;
use meshwork_local::iptables::{self, Settings};

/// istio-iptables' flags.
#[derive(Args, Debug)]
pub struct IptablesArgs {
    /// Port all outbound TCP is redirected to.
    #[arg(short = 'p', long = "envoy-port", default_value_t = 15001)]
    proxy_port: u16,
    /// Port all inbound TCP is redirected to.
    #[arg(short = 'z', long = "inbound-capture-port", default_value_t = 15006)]
    inbound_capture_port: u16,
    /// Uid of the proxy (its own traffic is not captured).
    #[arg(short = 'u', long = "proxy-uid", default_value_t = 1337)]
    proxy_uid: u32,
    /// Gid of the proxy (its own traffic is not captured).
    #[arg(short = 'g', long = "proxy-gid", default_value_t = 1337)]
    proxy_gid: u32,
    /// Inbound interception mode (REDIRECT).
    #[arg(
        short = 'm',
        long = "istio-inbound-interception-mode",
        default_value = "REDIRECT"
    )]
    inbound_mode: String,
    /// Inbound ports to capture, comma separated, `*` for all.
    #[arg(short = 'b', long = "istio-inbound-ports", default_value = "*")]
    inbound_ports: String,
    /// Inbound ports never captured (with `-b '*'`).
    #[arg(
        short = 'd',
        long = "istio-local-exclude-ports",
        default_value = "15090,15021,15020"
    )]
    exclude_inbound_ports: String,
    /// Outbound IP ranges to capture, comma separated, `*` for all.
    #[arg(short = 'i', long = "istio-service-cidr", default_value = "*")]
    outbound_ranges: String,
    /// Outbound IP ranges never captured.
    #[arg(short = 'x', long = "istio-service-exclude-cidr", default_value = "")]
    exclude_outbound_ranges: String,
    /// Outbound ports never captured.
    #[arg(
        short = 'o',
        long = "istio-local-outbound-ports-exclude",
        default_value = ""
    )]
    exclude_outbound_ports: String,
    /// Print the iptables-restore script instead of installing it.
    #[arg(long)]
    dry_run: bool,
    /// Remove the rules and chains instead (istio-clean-iptables).
    #[arg(long)]
    cleanup: bool,
}

/// Installs (or prints, or removes) the rules.
pub fn run(a: &IptablesArgs) -> anyhow::Result<i32> {
    if a.cleanup {
        iptables::uninstall()?;
        eprintln!("removed the ISTIO_* rules and chains");
        return Ok(0);
    }
    let s = Settings {
        proxy_port: a.proxy_port,
        inbound_capture_port: a.inbound_capture_port,
        proxy_uid: a.proxy_uid,
        proxy_gid: a.proxy_gid,
        inbound_mode: a.inbound_mode.clone(),
        inbound_ports: a.inbound_ports.clone(),
        exclude_inbound_ports: a.exclude_inbound_ports.clone(),
        outbound_ranges: a.outbound_ranges.clone(),
        exclude_outbound_ranges: a.exclude_outbound_ranges.clone(),
        exclude_outbound_ports: a.exclude_outbound_ports.clone(),
    };
    if a.dry_run {
        print!("{}", iptables::install_script(&s)?);
        return Ok(0);
    }
    iptables::install(&s)?;
    Ok(0)
}
