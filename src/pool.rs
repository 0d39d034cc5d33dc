//! A pool at run time: its backends with live counters, its balancing policy, and the
//! client-affinity table (`affinity = "client"`: a client IP's transfers stay on one backend for
//! `affinity_ttl`, so the EDK2 tsize probe, the download after it, and pxelinux's config, kernel
//! and initrd all come from the same server).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::balance::{self, Backend, Balancer};
use crate::config::{Affinity, PoolConfig};

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    balancer: Box<dyn Balancer>,
    affinity: Affinity,
    affinity_ttl: Duration,
    sticky: DashMap<IpAddr, Sticky>,
}

#[derive(Debug, Clone, Copy)]
struct Sticky {
    backend: usize,
    until: Instant,
}

impl Pool {
    pub fn new(cfg: &PoolConfig) -> Pool {
        Pool {
            name: cfg.name.clone(),
            backends: cfg
                .backends
                .iter()
                .map(|b| Arc::new(Backend::new(b)))
                .collect(),
            balancer: balance::for_policy(cfg.balance, &cfg.backends),
            affinity: cfg.affinity,
            affinity_ttl: cfg.affinity_ttl,
            sticky: DashMap::new(),
        }
    }

    /// The backend for a new session from `client`, skipping those `accept` refuses: the
    /// client's sticky backend when there is one, else the policy's choice.
    pub fn choose(&self, client: IpAddr, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        self.sticky_backend(client, accept)
            .or_else(|| self.balancer.select(&self.backends, client, accept))
    }

    fn sticky_backend(&self, client: IpAddr, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
        if self.affinity != Affinity::Client {
            return None;
        }
        let s = *self.sticky.get(&client)?;
        (s.until > Instant::now() && accept(s.backend)).then_some(s.backend)
    }

    /// Records that `client` was served by `backend` (with client affinity).
    pub fn remember(&self, client: IpAddr, backend: usize) {
        if self.affinity == Affinity::Client {
            let until = Instant::now() + self.affinity_ttl;
            self.sticky.insert(client, Sticky { backend, until });
        }
    }

    /// Drops expired affinity entries, so the table stays bounded by the clients of one TTL.
    pub fn expire_affinity(&self, now: Instant) {
        self.sticky.retain(|_, s| s.until > now);
    }

    pub fn affinity_entries(&self) -> usize {
        self.sticky.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BackendConfig, Balance};

    fn pool(affinity: Affinity) -> Pool {
        Pool::new(&PoolConfig {
            name: "p".into(),
            balance: Balance::RoundRobin,
            affinity,
            affinity_ttl: Duration::from_secs(60),
            backends: (0..3)
                .map(|i| BackendConfig {
                    address: ([127, 0, 0, 1], 7000 + i).into(),
                    weight: 1,
                })
                .collect(),
        })
    }

    #[test]
    fn client_affinity_sticks_until_refused_or_expired() {
        let p = pool(Affinity::Client);
        let ip = IpAddr::from([10, 0, 0, 9]);
        let first = p.choose(ip, &|_| true).unwrap();
        p.remember(ip, first);
        for _ in 0..5 {
            assert_eq!(p.choose(ip, &|_| true), Some(first));
        }
        assert_ne!(p.choose(ip, &|i| i != first), Some(first));
        p.expire_affinity(Instant::now() + Duration::from_secs(61));
        assert_eq!(p.affinity_entries(), 0);
    }

    #[test]
    fn transfer_affinity_keeps_no_client_state() {
        let p = pool(Affinity::Transfer);
        let ip = IpAddr::from([10, 0, 0, 9]);
        p.remember(ip, 1);
        assert_eq!(p.affinity_entries(), 0);
        let picks: std::collections::HashSet<_> = (0..3).map(|_| p.choose(ip, &|_| true)).collect();
        assert_eq!(picks.len(), 3);
    }
}
