//! The peers: nginx (one worker, keep-alive upstream) and HAProxy (one
//! thread), configured for the same loads on loopback and started as real
//! processes from the system packages (`bench/run` installs them).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::backend::Backend;
use crate::setup::{Entries, Setup};

/// Where the packaged nginx keeps its dynamic stream module.
const NGINX_STREAM_MODULE: &str = "/usr/lib/nginx/modules/ngx_stream_module.so";

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("meshwork-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn found(binary: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(binary).is_file()))
}

fn nginx_conf(dir: &Path, p: &Entries, b: &Backend) -> String {
    let d = dir.display();
    let stream_module = if Path::new(NGINX_STREAM_MODULE).exists() {
        format!("load_module {NGINX_STREAM_MODULE};")
    } else {
        String::new()
    };
    let proxy = "proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\";";
    format!(
        r#"{stream_module}
user root;
daemon off;
master_process on;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    upstream be {{ server {http}; keepalive 128; keepalive_requests 100000000; }}
    upstream be_grpc {{ server {http}; keepalive 128; keepalive_requests 100000000; }}
    server {{ listen {h1}; location / {{ {proxy} }} }}
    server {{ listen {h2} http2; location / {{ {proxy} }} }}
    server {{ listen {grpc} http2; location / {{ grpc_pass grpc://be_grpc; }} }}
}}
stream {{
    server {{ listen {tcp}; proxy_pass {btcp}; proxy_half_close on; }}
    server {{ listen {l4}; proxy_pass {http}; }}
}}
"#,
        http = b.http,
        h1 = p.h1,
        h2 = p.h2,
        grpc = p.grpc,
        tcp = p.tcp,
        l4 = p.l4,
        btcp = b.tcp,
    )
}

/// nginx with one worker process.
pub async fn nginx(b: &Backend) -> anyhow::Result<Option<Setup>> {
    if !found("nginx") {
        eprintln!("nginx not found: skipping it (bench/run installs it with apt-get)");
        return Ok(None);
    }
    let dir = scratch("nginx")?;
    let p = Entries::free()?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_conf(&dir, &p, b))?;
    let child = tokio::process::Command::new("nginx")
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let setup = Setup::started("nginx", p, vec![child])
        .await?
        .with_scratch(dir);
    // The master forks its worker after binding: measure both.
    tokio::time::sleep(Duration::from_millis(200)).await;
    Ok(Some(setup.with_children()))
}

fn haproxy_conf(p: &Entries, b: &Backend) -> String {
    format!(
        r#"global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    option http-keep-alive
    http-reuse always
frontend fe_h1
    bind {h1}
    default_backend be_h1
frontend fe_h2
    bind {h2} proto h2
    default_backend be_h2
backend be_h1
    server s1 {http}
backend be_h2
    server s1 {http} proto h2
listen tcp
    mode tcp
    bind {tcp}
    server s1 {btcp}
listen l4
    mode tcp
    bind {l4}
    server s1 {http}
"#,
        h1 = p.h1,
        h2 = p.h2,
        tcp = p.tcp,
        l4 = p.l4,
        http = b.http,
        btcp = b.tcp,
    )
}

/// HAProxy with one thread.
pub async fn haproxy(b: &Backend) -> anyhow::Result<Option<Setup>> {
    if !found("haproxy") {
        eprintln!("haproxy not found: skipping it (bench/run installs it with apt-get)");
        return Ok(None);
    }
    let dir = scratch("haproxy")?;
    let p = Entries::free()?;
    let conf = dir.join("haproxy.cfg");
    std::fs::write(&conf, haproxy_conf(&p, b))?;
    let child = tokio::process::Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    // gRPC rides the h2 frontend (HAProxy proxies h2 end to end).
    let at = Entries { grpc: p.h2, ..p };
    Ok(Some(
        Setup::started("haproxy", at, vec![child])
            .await?
            .with_scratch(dir),
    ))
}
