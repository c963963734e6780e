//! HTTP/1.1 `Upgrade` (WebSocket and others): after the upstream's `101`,
//! both connections become one byte tunnel.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::balance::ActiveGuard;

/// Joins the downstream and upstream upgraded connections in a background
/// task; the endpoint stays counted as busy while the tunnel lives.
pub fn tunnel(downstream: OnUpgrade, upstream: OnUpgrade, active: ActiveGuard) {
    tokio::spawn(async move {
        let _active = active;
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded tunnel ended with an error");
        }
    });
}
