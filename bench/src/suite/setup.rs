//! A setup under test: where each kind of load goes and which processes to
//! measure.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::process::Child;

/// Where a setup takes each kind of load.
#[derive(Clone, Copy, Debug)]
pub struct Entries {
    /// HTTP/1.1 entry.
    pub h1: SocketAddr,
    /// h2c entry.
    pub h2: SocketAddr,
    /// gRPC entry.
    pub grpc: SocketAddr,
    /// TCP entry (to the backend's sink, for bulk throughput).
    pub tcp: SocketAddr,
    /// A plain TCP relay to the backend's HTTP port: HTTP/1.1 requests
    /// through it cost the proxy only the moving of their bytes (the
    /// `http1-l4` load), the floor under what an HTTP hop can cost.
    pub l4: SocketAddr,
}

impl Entries {
    /// Fresh loopback addresses for every entry.
    pub fn free() -> anyhow::Result<Self> {
        Ok(Entries {
            h1: free_addr()?,
            h2: free_addr()?,
            grpc: free_addr()?,
            tcp: free_addr()?,
            l4: free_addr()?,
        })
    }
}

/// One way from the load generator to the backend.
pub struct Setup {
    /// Name in the tables and JSON.
    pub name: &'static str,
    /// Where each load goes.
    pub at: Entries,
    /// Processes whose CPU and memory count (empty for direct).
    pub pids: Vec<u32>,
    children: Vec<Child>,
    /// A directory of config files, removed at the end.
    scratch: Option<std::path::PathBuf>,
}

/// A loopback address nobody listens on right now.
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

impl Setup {
    /// The backend itself.
    pub fn direct(b: &crate::backend::Backend) -> Self {
        Setup {
            name: "direct",
            at: Entries {
                h1: b.http,
                h2: b.http,
                grpc: b.http,
                tcp: b.tcp,
                l4: b.http,
            },
            pids: Vec::new(),
            children: Vec::new(),
            scratch: None,
        }
    }

    /// A setup whose processes have been spawned; waits until every entry
    /// accepts connections (60 s at most: profilers are slow to start).
    pub async fn started(
        name: &'static str,
        at: Entries,
        mut children: Vec<Child>,
    ) -> anyhow::Result<Self> {
        let pids = children.iter().filter_map(Child::id).collect();
        for addr in [at.h1, at.h2, at.grpc, at.tcp, at.l4] {
            let mut ok = false;
            for _ in 0..2400 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    ok = true;
                    break;
                }
                for c in &mut children {
                    if let Ok(Some(status)) = c.try_wait() {
                        anyhow::bail!("{name} exited at start ({status})");
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            anyhow::ensure!(ok, "{name} does not accept connections on {addr}");
        }
        Ok(Setup {
            name,
            at,
            pids,
            children,
            scratch: None,
        })
    }

    /// Removes `dir` when the setup stops.
    pub fn with_scratch(mut self, dir: std::path::PathBuf) -> Self {
        self.scratch = Some(dir);
        self
    }

    /// Also measures the children of the started processes.
    pub fn with_children(mut self) -> Self {
        self.pids = self
            .pids
            .iter()
            .flat_map(|p| crate::procstat::with_children(*p))
            .collect();
        self
    }

    /// Stops the processes with SIGTERM (a proxy drains, a profiler
    /// writes its data), then kills what is left.
    pub async fn stop(mut self) {
        for c in &self.children {
            if let Some(pid) = c.id() {
                let _ = std::process::Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
            }
        }
        for c in &mut self.children {
            if tokio::time::timeout(Duration::from_secs(30), c.wait())
                .await
                .is_err()
            {
                let _ = c.kill().await;
            }
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
