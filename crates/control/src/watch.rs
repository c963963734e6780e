//! Watching a config directory, with debounce: a reload runs once changes
//! have been quiet for `quiet` (100 ms by default), and at most `max` (1 s)
//! after the first change of a burst, so a steady trickle of edits cannot
//! starve pushes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use std::time::Instant;
use tokio::sync::mpsc;

/// Debounce timings.
#[derive(Clone, Copy, Debug)]
pub struct Debounce {
    /// Quiet time after the last change.
    pub quiet: Duration,
    /// Longest wait after the first change of a burst.
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

/// Errors starting the watcher.
#[derive(Debug, thiserror::Error)]
#[error("cannot watch {path}: {source}")]
pub struct WatchError {
    path: PathBuf,
    source: notify::Error,
}

/// A running watch; dropping it stops watching.
pub struct DirWatch {
    _watcher: notify::RecommendedWatcher,
    events: mpsc::UnboundedReceiver<()>,
    debounce: Debounce,
}

impl DirWatch {
    /// Watches `dir` recursively.
    pub fn new(dir: &Path, debounce: Debounce) -> Result<Self, WatchError> {
        let (tx, events) = mpsc::unbounded_channel();
        let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            if let Ok(ev) = res
                && !matches!(ev.kind, notify::EventKind::Access(_))
            {
                let _ = tx.send(());
            }
        })
        .map_err(|source| WatchError {
            path: dir.to_path_buf(),
            source,
        })?;
        watcher
            .watch(dir, RecursiveMode::Recursive)
            .map_err(|source| WatchError {
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(DirWatch {
            _watcher: watcher,
            events,
            debounce,
        })
    }

    /// Waits for the next burst of changes to settle and returns when it
    /// began. `None` when the watcher stopped.
    pub async fn next_burst(&mut self) -> Option<Instant> {
        self.events.recv().await?;
        let first = tokio::time::Instant::now();
        let mut last = first;
        loop {
            let deadline = (last + self.debounce.quiet).min(first + self.debounce.max);
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(())) => last = tokio::time::Instant::now(),
                Ok(None) => return None,
                Err(_) => return Some(first.into_std()),
            }
        }
    }
}
