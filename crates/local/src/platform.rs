//! The local mesh as a [`Platform`]: `meshwork up` writes its pods and the
//! services' virtual addresses to a JSON file; `meshwork control
//! --platform-file FILE` reads it with [`FilePlatform`] and rebuilds its
//! registry whenever the file changes. A file keeps the control plane a
//! separate process (it can be restarted, inspected and run on its own).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_registry::{Platform, WorkloadInstance};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::plan::Plan;

/// How often the control plane looks at the file.
const POLL: Duration = Duration::from_millis(200);

/// The file's content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlatformFile {
    /// Running pods.
    pub instances: Vec<WorkloadInstance>,
    /// Service host name → virtual address.
    pub service_addresses: BTreeMap<String, IpAddr>,
}

impl PlatformFile {
    /// The platform view of a plan.
    pub fn from_plan(plan: &Plan) -> PlatformFile {
        PlatformFile {
            instances: plan
                .pods
                .iter()
                .map(|p| WorkloadInstance {
                    name: p.name.clone(),
                    namespace: p.namespace.clone(),
                    workload: p.workload.clone(),
                    labels: p.labels.clone(),
                    address: IpAddr::V4(p.ip),
                    service_account: p.service_account.clone(),
                    has_sidecar: p.sidecar,
                })
                .collect(),
            service_addresses: plan
                .services
                .iter()
                .map(|s| (s.hostname(), IpAddr::V4(s.vip)))
                .collect(),
        }
    }

    /// Writes the file atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("tmp");
        let text = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, path)
    }

    /// Reads the file.
    pub fn read(path: &Path) -> Result<PlatformFile, String> {
        let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// A [`Platform`] backed by a [`PlatformFile`] that is re-read when it
/// changes.
pub struct FilePlatform {
    current: Arc<Mutex<PlatformFile>>,
    version: watch::Sender<u64>,
}

impl FilePlatform {
    /// Reads `path` (a missing or broken file is an empty platform, logged)
    /// and starts polling it on the current tokio runtime.
    pub fn start(path: PathBuf) -> Arc<FilePlatform> {
        let mut last = std::fs::read(&path).ok();
        let first = PlatformFile::read(&path).unwrap_or_else(|e| {
            tracing::warn!("platform file: {e}; starting with no instances");
            PlatformFile::default()
        });
        let p = Arc::new(FilePlatform {
            current: Arc::new(Mutex::new(first)),
            version: watch::Sender::new(0),
        });
        let weak = Arc::downgrade(&p);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(POLL).await;
                let Some(p) = weak.upgrade() else { return };
                let now = std::fs::read(&path).ok();
                if now == last {
                    continue;
                }
                last = now;
                match PlatformFile::read(&path) {
                    Ok(f) => {
                        tracing::info!(instances = f.instances.len(), "platform file changed");
                        *p.current.lock().unwrap_or_else(|e| e.into_inner()) = f;
                        p.version.send_modify(|v| *v = v.wrapping_add(1));
                    }
                    Err(e) => tracing::warn!("platform file: {e}; keeping the last good one"),
                }
            }
        });
        p
    }
}

impl Platform for FilePlatform {
    fn instances(&self) -> Vec<WorkloadInstance> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .instances
            .clone()
    }

    fn changes(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    fn service_addresses(&self) -> BTreeMap<String, IpAddr> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .service_addresses
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_and_follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("platform.json");
        let mut f = PlatformFile::default();
        f.service_addresses.insert(
            "order.default.svc.cluster.local".into(),
            "10.96.0.2".parse().unwrap(),
        );
        f.write(&path).unwrap();
        let p = FilePlatform::start(path.clone());
        assert_eq!(p.service_addresses().len(), 1);
        assert!(p.instances().is_empty());
        let mut rx = p.changes();
        f.instances.push(WorkloadInstance {
            name: "order-0".into(),
            namespace: "default".into(),
            workload: "order".into(),
            labels: BTreeMap::new(),
            address: "10.88.0.2".parse().unwrap(),
            service_account: "order".into(),
            has_sidecar: true,
        });
        f.write(&path).unwrap();
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.instances()[0].name, "order-0");
        // A broken file keeps the last good content.
        std::fs::write(&path, "{not json").unwrap();
        tokio::time::sleep(POLL * 3).await;
        assert_eq!(p.instances().len(), 1);
    }
}
