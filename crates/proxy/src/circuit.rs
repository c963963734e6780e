//! Envoy's circuit breakers for one cluster: connections, requests waiting
//! for a connection (HTTP/1.1), requests in flight and retries in flight
//! (or a retry budget). A request over a limit is not queued: it gets a
//! local 503 with the `UO` response flag.
//!
//! An HTTP/1.1 request occupies a connection until its response ends, so
//! busy connections are counted per cluster and per endpoint. A request
//! starts when fewer than `max_connections` are busy — or, as in Envoy,
//! when its endpoint has none (every endpoint may have one connection, so
//! requests queued to it can make progress); otherwise it waits, unless
//! `max_pending_requests` already wait.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::Notify;

use crate::balance::Endpoint;
use crate::model::cluster_policy::CircuitLimits;

/// Which limit a request ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Overflow {
    /// `max_requests`.
    #[error("too many requests in flight (max_requests)")]
    Requests,
    /// `max_pending_requests`.
    #[error("too many requests waiting for a connection (max_pending_requests)")]
    Pending,
    /// `max_retries` or the retry budget.
    #[error("too many retries in flight (max_retries)")]
    Retries,
}

/// One cluster's breakers; share as `Arc<Breakers>`.
#[derive(Debug)]
pub struct Breakers {
    limits: CircuitLimits,
    requests: AtomicU32,
    pending: AtomicU32,
    retries: AtomicU32,
    /// HTTP/1.1 connections busy with a request.
    h1_busy: AtomicU32,
    /// Upstream connections open.
    connections: AtomicU32,
    /// Woken when a busy connection frees up.
    freed: Notify,
}

/// Held while a request is in flight (until its response body ends).
#[derive(Debug)]
pub struct RequestPermit {
    breakers: Arc<Breakers>,
    /// The endpoint whose HTTP/1.1 connection it occupies.
    h1: Option<Arc<Endpoint>>,
}

impl Drop for RequestPermit {
    fn drop(&mut self) {
        self.breakers.requests.fetch_sub(1, Ordering::Relaxed);
        if let Some(e) = self.h1.take() {
            e.h1_busy.fetch_sub(1, Ordering::AcqRel);
            self.breakers.h1_busy.fetch_sub(1, Ordering::AcqRel);
            self.breakers.freed.notify_waiters();
        }
    }
}

/// Held by an open upstream connection.
#[derive(Debug)]
pub struct ConnectionPermit(Arc<Breakers>);

impl Drop for ConnectionPermit {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Held while a retry is in flight.
#[derive(Debug)]
pub struct RetryPermit(Arc<Breakers>);

impl Drop for RetryPermit {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts a waiting request until dropped (also when the wait is cancelled).
struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Breakers {
    /// Breakers with these limits.
    pub fn new(limits: CircuitLimits) -> Arc<Self> {
        Arc::new(Breakers {
            limits,
            requests: AtomicU32::new(0),
            pending: AtomicU32::new(0),
            retries: AtomicU32::new(0),
            h1_busy: AtomicU32::new(0),
            connections: AtomicU32::new(0),
            freed: Notify::new(),
        })
    }

    /// The limits.
    pub fn limits(&self) -> &CircuitLimits {
        &self.limits
    }

    /// Requests in flight now.
    pub fn active_requests(&self) -> u32 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Admits a request to `endpoint`; `http1` requests need a connection
    /// of their own (see the module docs) and may wait for one.
    pub async fn admit(
        self: &Arc<Self>,
        endpoint: &Arc<Endpoint>,
        http1: bool,
    ) -> Result<RequestPermit, Overflow> {
        if self.requests.fetch_add(1, Ordering::Relaxed) >= self.limits.max_requests {
            self.requests.fetch_sub(1, Ordering::Relaxed);
            return Err(Overflow::Requests);
        }
        // From here the permit gives the counts back on every path.
        let mut permit = RequestPermit {
            breakers: self.clone(),
            h1: None,
        };
        if !http1 {
            return Ok(permit);
        }
        let mut waiting = None;
        loop {
            let freed = self.freed.notified();
            if self.try_connection(endpoint) {
                permit.h1 = Some(endpoint.clone());
                return Ok(permit);
            }
            if waiting.is_none() {
                if self.pending.fetch_add(1, Ordering::Relaxed) >= self.limits.max_pending_requests
                {
                    self.pending.fetch_sub(1, Ordering::Relaxed);
                    return Err(Overflow::Pending);
                }
                waiting = Some(PendingGuard(&self.pending));
            }
            freed.await;
        }
    }

    /// Takes a busy-connection slot for `endpoint` if the limits allow.
    fn try_connection(&self, endpoint: &Endpoint) -> bool {
        let mine = endpoint.h1_busy.fetch_add(1, Ordering::AcqRel);
        let total = self.h1_busy.fetch_add(1, Ordering::AcqRel);
        if total < self.limits.max_connections || mine == 0 {
            return true;
        }
        endpoint.h1_busy.fetch_sub(1, Ordering::AcqRel);
        self.h1_busy.fetch_sub(1, Ordering::AcqRel);
        false
    }

    /// Counts one upstream connection for as long as the permit lives.
    /// Never waits and never refuses: HTTP/1.1 requests are already held
    /// to `max_connections` busy connections by [`admit`](Self::admit),
    /// and Envoy too opens a connection to an endpoint that has none even
    /// over the limit. `_wait` is kept for callers that pass a bound.
    pub async fn connection(
        self: &Arc<Self>,
        _wait: std::time::Duration,
    ) -> Result<ConnectionPermit, Overflow> {
        self.connections.fetch_add(1, Ordering::Relaxed);
        Ok(ConnectionPermit(self.clone()))
    }

    /// Upstream connections open now.
    pub fn open_connections(&self) -> u32 {
        self.connections.load(Ordering::Relaxed)
    }

    /// Admits a retry: within the retry budget when there is one (a
    /// percentage of requests in flight and waiting, at least its minimum
    /// concurrency), else within `max_retries`.
    pub fn admit_retry(self: &Arc<Self>) -> Result<RetryPermit, Overflow> {
        let limit = match &self.limits.retry_budget {
            Some(b) => {
                let base =
                    self.requests.load(Ordering::Relaxed) + self.pending.load(Ordering::Relaxed);
                ((f64::from(base) * b.percent / 100.0) as u32).max(b.min_concurrency)
            }
            None => self.limits.max_retries,
        };
        if self.retries.fetch_add(1, Ordering::Relaxed) >= limit {
            self.retries.fetch_sub(1, Ordering::Relaxed);
            return Err(Overflow::Retries);
        }
        Ok(RetryPermit(self.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::cluster::EndpointModel;
    use crate::model::cluster_policy::RetryBudget;

    fn limits(conns: u32, pending: u32, requests: u32) -> CircuitLimits {
        CircuitLimits {
            max_connections: conns,
            max_pending_requests: pending,
            max_requests: requests,
            ..Default::default()
        }
    }

    fn endpoint(port: u16) -> Arc<Endpoint> {
        Arc::new(Endpoint::new(EndpointModel {
            address: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            hostname: None,
            weight: 1,
            healthy: true,
            workload: None,
            locality: String::new(),
            locality_weight: 1,
            priority: 0,
            transport_match: Default::default(),
        }))
    }

    #[tokio::test]
    async fn http1_requests_wait_then_overflow() {
        let b = Breakers::new(limits(1, 1, 100));
        let e = endpoint(1);
        let first = b.admit(&e, true).await.unwrap();
        let waiter = {
            let (b, e) = (b.clone(), e.clone());
            tokio::spawn(async move { b.admit(&e, true).await.map(|_| ()) })
        };
        while b.pending.load(Ordering::Relaxed) == 0 {
            tokio::task::yield_now().await;
        }
        assert_eq!(b.admit(&e, true).await.err(), Some(Overflow::Pending));
        drop(first);
        assert!(waiter.await.unwrap().is_ok());
        assert_eq!(b.active_requests(), 0);
        assert_eq!(b.pending.load(Ordering::Relaxed), 0);
        assert_eq!(b.h1_busy.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn every_endpoint_may_have_one_connection() {
        let b = Breakers::new(limits(1, 0, 100));
        let (x, y) = (endpoint(1), endpoint(2));
        let _a = b.admit(&x, true).await.unwrap();
        // Over max_connections, but y has none: Envoy opens one anyway.
        let _c = b.admit(&y, true).await.unwrap();
        assert_eq!(b.admit(&x, true).await.err(), Some(Overflow::Pending));
    }

    #[tokio::test]
    async fn max_requests_caps_http2() {
        let b = Breakers::new(limits(1, 0, 2));
        let e = endpoint(1);
        let _a = b.admit(&e, false).await.unwrap();
        let _c = b.admit(&e, false).await.unwrap();
        assert_eq!(b.admit(&e, false).await.err(), Some(Overflow::Requests));
    }

    #[test]
    fn retries_and_budget() {
        let b = Breakers::new(CircuitLimits {
            max_retries: 1,
            ..Default::default()
        });
        let _r = b.admit_retry().unwrap();
        assert_eq!(b.admit_retry().err(), Some(Overflow::Retries));
        let b = Breakers::new(CircuitLimits {
            retry_budget: Some(RetryBudget {
                percent: 50.0,
                min_concurrency: 2,
            }),
            ..Default::default()
        });
        let _a = b.admit_retry().unwrap();
        let _c = b.admit_retry().unwrap();
        assert!(b.admit_retry().is_err());
    }
}
