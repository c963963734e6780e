//! Supervision: each process of the mesh runs under a task that restarts
//! it with exponential backoff when it exits (1 s, 2 s, 4 s … 30 s, reset
//! after it has stayed up for a while), logs to a file, and is stopped
//! with SIGTERM (then SIGKILL) when the mesh stops.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// First restart delay.
const BACKOFF_START: Duration = Duration::from_secs(1);
/// Longest restart delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Up this long counts as healthy again: the backoff starts over.
const STABLE_AFTER: Duration = Duration::from_secs(20);

/// One supervised process.
#[derive(Clone, Debug)]
pub struct ProcSpec {
    /// Label for messages, e.g. `order-0/app`.
    pub label: String,
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Restart it when it exits.
    pub restart: bool,
}

/// The next restart delay after `last`.
pub fn next_backoff(last: Option<Duration>, ran_for: Duration) -> Duration {
    match last {
        _ if ran_for >= STABLE_AFTER => BACKOFF_START,
        None => BACKOFF_START,
        Some(d) => (d * 2).min(BACKOFF_MAX),
    }
}

/// Running processes: label → pid (0 while restarting), and restart counts.
#[derive(Clone, Default)]
pub struct Supervisor {
    pids: Arc<Mutex<BTreeMap<String, (u32, u32)>>>,
    stop: Arc<watch::Sender<bool>>,
    tasks: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Supervisor {
    /// A supervisor with nothing running.
    pub fn new() -> Supervisor {
        Supervisor {
            stop: Arc::new(watch::Sender::new(false)),
            ..Default::default()
        }
    }

    /// Starts `spec` now; fails if it cannot be started even once (missing
    /// program, unwritable log).
    pub fn spawn(&self, spec: ProcSpec) -> std::io::Result<u32> {
        let child = start(&spec)?;
        let pid = child.id().unwrap_or(0);
        self.set(&spec.label, pid, false);
        let me = self.clone();
        let task = tokio::spawn(async move { me.watch(spec, child).await });
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(task);
        Ok(pid)
    }

    fn set(&self, label: &str, pid: u32, restarted: bool) {
        let mut m = self.pids.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(label.to_string()).or_insert((0, 0));
        e.0 = pid;
        if restarted {
            e.1 += 1;
        }
    }

    async fn watch(self, spec: ProcSpec, mut child: tokio::process::Child) {
        let mut stop = self.stop.subscribe();
        let mut backoff = None;
        loop {
            let started = Instant::now();
            let status = tokio::select! {
                s = child.wait() => s,
                _ = stopped(&mut stop) => {
                    stop_child(&mut child).await;
                    return;
                }
            };
            self.set(&spec.label, 0, false);
            let stopping = *stop.borrow();
            if stopping || !spec.restart {
                return;
            }
            let delay = next_backoff(backoff, started.elapsed());
            backoff = Some(delay);
            eprintln!(
                "{} exited ({}); restarting in {}s (log: {})",
                spec.label,
                status
                    .map(|s| s.to_string())
                    .unwrap_or_else(|e| e.to_string()),
                delay.as_secs(),
                spec.log.display()
            );
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stopped(&mut stop) => return,
            }
            match start(&spec) {
                Ok(c) => {
                    self.set(&spec.label, c.id().unwrap_or(0), true);
                    child = c;
                }
                Err(e) => {
                    eprintln!("{}: cannot restart: {e}", spec.label);
                    return;
                }
            }
        }
    }

    /// Pids of the processes now running.
    pub fn pids(&self) -> Vec<u32> {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|(p, _)| *p)
            .filter(|p| *p != 0)
            .collect()
    }

    /// How often the process with this label was restarted.
    pub fn restarts(&self, label: &str) -> u32 {
        self.pids
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(label)
            .map(|(_, r)| *r)
            .unwrap_or(0)
    }

    /// Stops every process (SIGTERM, then SIGKILL after a grace period) and
    /// waits for them.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let tasks: Vec<_> =
            std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            let _ = t.await;
        }
    }
}

/// Resolves once the supervisor stops.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await.map(|_| ());
}

/// SIGTERM, five seconds, SIGKILL.
async fn stop_child(child: &mut tokio::process::Child) {
    if let Some(pid) = child.id() {
        crate::state::signal(pid as i32, rustix::process::Signal::TERM);
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

fn start(spec: &ProcSpec) -> std::io::Result<tokio::process::Child> {
    if let Some(dir) = spec.log.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)?;
    let err = log.try_clone()?;
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(err))
        .kill_on_drop(true);
    // Its own process group: Ctrl-C in the terminal reaches `meshwork up`
    // only, which then stops everything in order.
    cmd.process_group(0);
    cmd.spawn().map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot start {} for {}: {e}", spec.program, spec.label),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_when_stable() {
        let quick = Duration::from_millis(10);
        let mut d = next_backoff(None, quick);
        assert_eq!(d, Duration::from_secs(1));
        for _ in 0..10 {
            d = next_backoff(Some(d), quick);
        }
        assert_eq!(d, BACKOFF_MAX);
        assert_eq!(next_backoff(Some(d), STABLE_AFTER), BACKOFF_START);
    }

    #[tokio::test]
    async fn restarts_an_exited_process_and_stops_on_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let sup = Supervisor::new();
        let spec = ProcSpec {
            label: "flaky".into(),
            program: "sh".into(),
            args: vec!["-c".into(), "echo run >> \"$OUT\"; exit 3".into()],
            env: vec![("OUT".into(), dir.path().join("runs").display().to_string())],
            log: dir.path().join("flaky.log"),
            restart: true,
        };
        sup.spawn(spec).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while sup.restarts("flaky") < 1 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(sup.restarts("flaky") >= 1);
        let long = ProcSpec {
            label: "sleeper".into(),
            program: "sleep".into(),
            args: vec!["60".into()],
            env: vec![],
            log: dir.path().join("sleeper.log"),
            restart: true,
        };
        let pid = sup.spawn(long).unwrap();
        sup.shutdown().await;
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || {
                let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                s.contains(") Z")
            }
        );
        let missing = ProcSpec {
            label: "missing".into(),
            program: "/nonexistent/program".into(),
            args: vec![],
            env: vec![],
            log: dir.path().join("m.log"),
            restart: true,
        };
        let err = Supervisor::new().spawn(missing).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/program"), "{err}");
    }
}
