//! Graceful drain: stop accepting, ask every connection to finish (HTTP/2
//! GOAWAY, HTTP/1 `Connection: close`), and wait for in-flight work up to
//! the drain period.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The drain signal and the set of live connections.
#[derive(Clone, Debug)]
pub struct Drain {
    signal: watch::Sender<bool>,
    tracker: TaskTracker,
}

impl Default for Drain {
    fn default() -> Self {
        Self::new()
    }
}

impl Drain {
    /// Not draining.
    pub fn new() -> Self {
        Drain {
            signal: watch::Sender::new(false),
            tracker: TaskTracker::new(),
        }
    }

    /// Tracks a connection task so draining waits for it.
    pub fn spawn<F>(&self, fut: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(fut);
    }

    /// Whether draining has started.
    pub fn is_draining(&self) -> bool {
        *self.signal.borrow()
    }

    /// Resolves when draining starts.
    pub async fn started(&self) {
        let mut rx = self.signal.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Starts draining and waits for live connections, at most `period`.
    /// Returns how many connections were still open at the deadline.
    pub async fn drain(&self, period: Duration) -> usize {
        self.signal.send_replace(true);
        self.tracker.close();
        let _ = tokio::time::timeout(period, self.tracker.wait()).await;
        self.tracker.len()
    }

    /// Live connections.
    pub fn active(&self) -> usize {
        self.tracker.len()
    }
}
