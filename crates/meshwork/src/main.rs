//! `meshwork`: one binary for the whole mesh. Each subcommand is a thin
//! shell over a library crate.
#![forbid(unsafe_code)]

mod cmd_analyze;
mod cmd_control;
mod cmd_demo;
mod cmd_demo_app;
mod cmd_down;
mod cmd_iptables;
mod cmd_proxy;
mod cmd_proxy_config;
mod cmd_proxy_status;
mod cmd_up;
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
    /// Run a mesh on this host from a directory of Kubernetes-style
    /// manifests and Istio config: each Deployment replica a pod in its own
    /// network namespace with a sidecar; Ctrl-C removes everything.
    Up(cmd_up::UpArgs),
    /// Stop a local mesh and remove everything it made (also after a crash).
    Down(cmd_down::DownArgs),
    /// The online-ordering demo on a local mesh, with a live summary from
    /// the proxies' metrics.
    Demo(cmd_demo::DemoArgs),
    /// Install Istio's sidecar interception rules in this network namespace
    /// (istio-iptables, the init container).
    Iptables(cmd_iptables::IptablesArgs),
    /// Every connected proxy's CDS/LDS/EDS/RDS sync state, like `istioctl proxy-status`.
    ProxyStatus(cmd_proxy_status::ProxyStatusArgs),
    /// A sidecar's listeners, routes, clusters, endpoints or secrets, like
    /// `istioctl proxy-config`.
    ProxyConfig(cmd_proxy_config::ProxyConfigArgs),
    /// One of the demo's services (used by `meshwork demo`).
    #[command(hide = true)]
    DemoApp(cmd_demo_app::DemoAppArgs),
    /// Print the body of a plain-HTTP GET (used by proxy-config inside a pod).
    #[command(hide = true)]
    HttpGet(cmd_proxy_config::HttpGetArgs),
}

/// Runs an async subcommand on a small runtime.
fn block_on<F: std::future::Future<Output = anyhow::Result<i32>>>(f: F) -> anyhow::Result<i32> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(f)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let log = logging::init(&cli.log_level)?;
    let code = match cli.command {
        Command::Analyze(args) => cmd_analyze::run(&args)?,
        Command::Up(args) => block_on(cmd_up::run(args))?,
        Command::Down(args) => cmd_down::run(&args)?,
        Command::Demo(args) => block_on(cmd_demo::run(args))?,
        Command::Iptables(args) => cmd_iptables::run(&args)?,
        Command::ProxyStatus(args) => block_on(cmd_proxy_status::run(args))?,
        Command::ProxyConfig(args) => block_on(cmd_proxy_config::run(args))?,
        Command::DemoApp(args) => block_on(async { cmd_demo_app::run(args).await.map(|()| 0) })?,
        Command::HttpGet(args) => block_on(cmd_proxy_config::http_get(args))?,
        Command::Control(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(cmd_control::run(args))?;
            0
        }
        Command::Proxy(args) => {
            // One worker: tokio's current-thread scheduler, with no work
            // stealing, no cross-thread wake-ups and no atomics on the
            // task queues (like nginx's one worker). More: multi-thread.
            let rt = if args.concurrency <= 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("meshwork-proxy")
                    .build()?
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .enable_all()
                    .worker_threads(args.concurrency)
                    .thread_name("meshwork-proxy")
                    .build()?
            };
            rt.block_on(cmd_proxy::run(*args, log))?;
            0
        }
    };
    std::process::exit(code);
}
