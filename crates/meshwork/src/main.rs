//! `meshwork`: one binary for the whole mesh. Each subcommand is a thin
//! shell over a library crate.
#![forbid(unsafe_code)]

mod cmd_analyze;
mod cmd_control;
mod cmd_proxy;
mod logging;

use clap::{Parser, Subcommand};

/// Meshwork: a service mesh with Istio's configuration API, xDS v3 and one binary.
#[derive(Parser)]
#[command(name = "meshwork", version, about, long_about = None)]
struct Cli {
    /// Log filter for diagnostics on stderr (e.g. `info`, `meshwork_proxy=debug`).
    #[arg(long, global = true, env = "MESHWORK_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the sidecar proxy: captures a workload's traffic (15001 outbound,
    /// 15006 inbound), routes it as its xDS configuration says, and serves
    /// admin (15000), health (15021) and metrics (15090, 15020).
    Proxy(Box<cmd_proxy::ProxyArgs>),
    /// Run the control plane (istiod's role): serves xDS on 15010 from a
    /// watched directory of Istio and Kubernetes YAML, with debug and
    /// metrics on 15014.
    Control(cmd_control::ControlArgs),
    /// Load, validate and analyze Istio configuration like `istioctl analyze`
    /// (prints findings with file:line and field path; exit 79 on errors).
    Analyze(cmd_analyze::AnalyzeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log = logging::init(&cli.log_level)?;
    let code = match cli.command {
        Command::Analyze(args) => cmd_analyze::run(&args)?,
        Command::Control(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(cmd_control::run(args))?;
            0
        }
        Command::Proxy(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .worker_threads(args.concurrency.max(1))
                .thread_name("meshwork-proxy")
                .build()?;
            rt.block_on(cmd_proxy::run(*args, log))?;
            0
        }
    };
    std::process::exit(code);
}
