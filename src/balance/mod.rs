//! Backend selection: one [`Balancer`] trait, one small file per policy (pingora's shape).
//!
//! A policy only chooses; it never knows why a backend is unacceptable. The caller passes an
//! `accept` filter (already tried in this session, and later health and admin state), so each
//! policy is a few lines over a slice of [`Backend`]s.

mod least_sessions;
mod round_robin;
mod source_hash;
mod weighted;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::health::BackendState;
use crate::pool::config::{BackendConfig, Balance};

pub use least_sessions::LeastSessions;
pub use round_robin::RoundRobin;
pub use source_hash::SourceHash;
pub use weighted::Weighted;

/// A backend boot server and its live counters, shared by the pool and its sessions.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub weight: u32,
    /// Concurrent sessions at most; 0 = unlimited.
    pub max_sessions: usize,
    /// Health and admin state, read lock-free on every selection.
    pub state: BackendState,
    active: AtomicUsize,
    total: AtomicU64,
    bytes: AtomicU64,
}

impl Backend {
    pub fn new(cfg: &BackendConfig, state: BackendState) -> Backend {
        Backend {
            address: cfg.address,
            weight: cfg.weight,
            max_sessions: cfg.max_sessions,
            state,
            active: AtomicUsize::new(0),
            total: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// A backend without probes (up from the start), for tests and tools.
    pub fn unprobed(cfg: &BackendConfig) -> Backend {
        let state = BackendState::new(false, cfg.state, crate::health::health_events());
        Backend::new(cfg, state)
    }

    /// Sessions now relayed to this backend.
    pub fn active_sessions(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Sessions ever started on this backend.
    pub fn total_sessions(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Whether another session fits under `max_sessions`.
    pub fn has_room(&self) -> bool {
        self.max_sessions == 0 || self.active_sessions() < self.max_sessions
    }

    /// File bytes relayed from this backend by finished sessions.
    pub fn bytes_served(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn add_bytes(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a session on this backend until the returned guard drops.
    pub fn claim(self: &std::sync::Arc<Self>) -> SessionClaim {
        self.active.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
        SessionClaim {
            backend: self.clone(),
        }
    }
}

/// One live session on a backend; dropping it releases the count (least-sessions reads it).
#[derive(Debug)]
pub struct SessionClaim {
    backend: std::sync::Arc<Backend>,
}

impl SessionClaim {
    pub fn backend(&self) -> &std::sync::Arc<Backend> {
        &self.backend
    }
}

impl Drop for SessionClaim {
    fn drop(&mut self) {
        self.backend.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A backend selection policy.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// The index in `backends` of the backend for a new session from `client`, among those
    /// `accept` allows; `None` when it allows none.
    fn select(
        &self,
        backends: &[std::sync::Arc<Backend>],
        client: IpAddr,
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize>;
}

/// The policy a pool's `balance` key names.
pub fn for_policy(policy: Balance, backends: &[BackendConfig]) -> Box<dyn Balancer> {
    match policy {
        Balance::RoundRobin => Box::new(RoundRobin::default()),
        Balance::Weighted => Box::new(Weighted::new(backends)),
        Balance::LeastSessions => Box::new(LeastSessions::default()),
        Balance::SourceHash => Box::new(SourceHash),
    }
}

/// The first index at or after `start` (cyclically) that `accept` allows.
fn first_accepted(n: usize, start: usize, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
    (0..n).map(|i| (start + i) % n).find(|&i| accept(i))
}

#[cfg(test)]
pub(crate) fn test_backends(weights: &[u32]) -> Vec<std::sync::Arc<Backend>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &weight)| {
            let cfg = BackendConfig {
                address: SocketAddr::from(([127, 0, 0, 1], 7000 + i as u16)),
                weight,
                state: crate::health::AdminState::Enabled,
                max_sessions: 0,
            };
            std::sync::Arc::new(Backend::unprobed(&cfg))
        })
        .collect()
}
