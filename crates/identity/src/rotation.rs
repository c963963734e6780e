//! Keeping the workload's certificate current: one background task obtains
//! the first certificate, renews it at about half its lifetime (with
//! jitter, so a fleet does not renew in lockstep), retries failures with
//! exponential backoff while the old certificate keeps serving, and
//! publishes every new [`Identity`] into a `watch` — the [`IdentityWatch`].

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::CertificateDer;
use tokio::sync::watch;

use crate::client::{ClientOptions, fetch_identity};
use crate::{Identity, IdentityWatch};

/// When to renew and how to retry.
#[derive(Clone, Debug)]
pub struct RotationPolicy {
    /// Share of the lifetime after which to renew (Istio: 0.5).
    pub renew_at: f64,
    /// Random spread around `renew_at`, as a share of the lifetime.
    pub jitter: f64,
    /// First retry delay after a failure.
    pub initial_backoff: Duration,
    /// Longest retry delay.
    pub max_backoff: Duration,
}

impl Default for RotationPolicy {
    fn default() -> Self {
        RotationPolicy {
            renew_at: 0.5,
            jitter: 0.05,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(30),
        }
    }
}

impl RotationPolicy {
    /// How long from now until the certificate valid over
    /// `[not_before, not_after]` should be renewed.
    pub fn renew_in(&self, not_before: SystemTime, not_after: SystemTime) -> Duration {
        let lifetime = not_after
            .duration_since(not_before)
            .unwrap_or_default()
            .as_secs_f64();
        let spread = (rand::random::<f64>() * 2.0 - 1.0) * self.jitter;
        let share = (self.renew_at + spread).clamp(0.05, 0.95);
        let at = not_before + Duration::from_secs_f64(lifetime * share);
        at.duration_since(SystemTime::now()).unwrap_or_default()
    }
}

/// Starts the certificate client. The watch holds `None` until the first
/// certificate arrives; the task ends when every receiver is dropped.
pub fn spawn(
    opts: ClientOptions,
    policy: RotationPolicy,
) -> (IdentityWatch, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(None);
    let task = tokio::spawn(run(opts, policy, tx));
    (rx, task)
}

async fn run(
    opts: ClientOptions,
    policy: RotationPolicy,
    tx: watch::Sender<Option<Arc<Identity>>>,
) {
    let mut learned: Vec<CertificateDer<'static>> = Vec::new();
    let mut backoff = policy.initial_backoff;
    loop {
        let wait = match fetch_identity(&opts, &learned).await {
            Ok(identity) => {
                learned = identity.bundle.roots.clone();
                let wait = policy.renew_in(identity.svid.not_before, identity.svid.not_after);
                tracing::info!(
                    id = %identity.svid.id,
                    roots = identity.bundle.roots.len(),
                    renew_in = ?wait,
                    "workload certificate obtained"
                );
                tx.send_replace(Some(Arc::new(identity)));
                backoff = policy.initial_backoff;
                wait
            }
            Err(e) => {
                let wait = backoff.mul_f64(0.8 + rand::random::<f64>() * 0.4);
                tracing::warn!(error = %e, retry_in = ?wait, "cannot obtain a workload certificate");
                backoff = (backoff * 2).min(policy.max_backoff);
                wait
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_near_half_life() {
        let policy = RotationPolicy::default();
        let now = SystemTime::now();
        for _ in 0..100 {
            let d = policy.renew_in(now, now + Duration::from_secs(1000));
            assert!(
                d >= Duration::from_secs(440) && d <= Duration::from_secs(551),
                "{d:?}"
            );
        }
        let past = now - Duration::from_secs(2000);
        assert_eq!(policy.renew_in(past, now), Duration::ZERO);
    }
}
