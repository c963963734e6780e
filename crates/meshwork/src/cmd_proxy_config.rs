//! `meshwork proxy-config {listeners|routes|clusters|endpoints|secrets} POD`:
//! what a sidecar has, as tables (or `-o json`), from its admin port
//! (reached inside the pod's network namespace). Also the hidden
//! `meshwork http-get URL` it runs there.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use meshwork_local::ops::config::{self, Section};
use meshwork_local::ops::target;
use meshwork_local::{fetch, state};

/// Which proxy, which part.
#[derive(Args, Debug)]
pub struct ProxyConfigArgs {
    /// listeners, routes, clusters, endpoints or secrets.
    section: Section,
    /// Pod: `name`, `name.namespace` or `namespace/name`.
    pod: String,
    /// Output: `table` or `json` (the raw admin document).
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
    /// Local mesh name (when several run).
    #[arg(long)]
    name: Option<String>,
    /// Where meshes keep their state.
    #[arg(long, default_value = state::STATE_ROOT)]
    state_root: PathBuf,
}

/// Prints the section.
pub async fn run(a: ProxyConfigArgs) -> anyhow::Result<i32> {
    let (_, s) = target::mesh(&a.state_root, a.name.as_deref()).map_err(anyhow::Error::msg)?;
    let pod = target::pod(&s, &a.pod).map_err(anyhow::Error::msg)?;
    let binary = std::env::current_exe()?;
    let body = target::admin_get(&binary, pod, a.section.admin_path())
        .await
        .map_err(anyhow::Error::msg)?;
    let doc: serde_json::Value = serde_json::from_str(&body)
        .map_err(|e| anyhow::anyhow!("the admin port answered something that is not JSON: {e}"))?;
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        print!("{}", config::table(a.section, &doc));
    }
    Ok(0)
}

/// `meshwork http-get URL` (hidden): prints the body of a plain-HTTP GET.
#[derive(Args, Debug)]
pub struct HttpGetArgs {
    /// `http://host:port/path`.
    url: String,
}

/// GETs the URL; exits 1 unless it answers 200.
pub async fn http_get(a: HttpGetArgs) -> anyhow::Result<i32> {
    let rest = a
        .url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = authority
        .parse()
        .map_err(|_| anyhow::anyhow!("{authority:?} is not ip:port"))?;
    let (code, body) = fetch::get(addr, path, Duration::from_secs(10)).await?;
    use std::io::Write;
    std::io::stdout().write_all(&body)?;
    if code != 200 {
        eprintln!("{} answered {code}", a.url);
        return Ok(1);
    }
    Ok(0)
}
