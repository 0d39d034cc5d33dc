//! A pool at run time: its backends with live counters and health, its balancing policy, its
//! all-down policy, and the client-affinity table (`affinity = "client"`: a client IP's
//! transfers stay on one backend for `affinity_ttl`, so the EDK2 tsize probe and the download
//! after it, and pxelinux's config, kernel and initrd, all come from the same server).
//!
//! When no backend is eligible, `when_all_down` decides, on purpose: refuse, or fail open and try
//! every enabled backend. A reloaded pool keeps the `Backend` of every address it still lists,
//! so health, counters and admin state survive a reload.

pub mod config;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use crate::balance::{self, Backend, Balancer};
use crate::health::config::HealthConfig;
use crate::health::{AdminState, BackendState, HealthEvents};
use crate::pool::config::{Affinity, AllDown, PoolConfig};
use crate::protocol::names::NameGlobs;
use crate::tftp::cache::config::PoolCacheConfig;

#[derive(Debug)]
pub struct Pool {
    pub name: String,
    pub backends: Vec<Arc<Backend>>,
    pub health: Option<HealthConfig>,
    pub when_all_down: AllDown,
    pub resume: bool,
    pub allow_write: bool,
    /// Filename globs served; `None` serves every name.
    files: Option<NameGlobs>,
    /// Files served from memory (`[pool.cache]`), with their globs.
    pub cache: Option<(PoolCacheConfig, NameGlobs)>,
    ignore_case: bool,
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

/// The answer to "where does this new session go?".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Choice {
    Backend(usize),
    /// No backend is eligible and the pool refuses rather than fail open.
    NoHealthy,
    /// Every acceptable backend was excluded by the caller (all tried).
    Exhausted,
    /// Every eligible backend is at its `max_sessions`.
    Full,
}

impl Pool {
    /// Builds a pool; backends that `previous` already had (same address) are kept as they are.
    pub fn new(cfg: &PoolConfig, previous: Option<&Pool>, events: &HealthEvents) -> Pool {
        let backends = cfg
            .backends
            .iter()
            .map(|b| {
                let kept = previous.and_then(|p| {
                    p.backends.iter().find(|o| {
                        o.address == b.address
                            && o.weight == b.weight
                            && o.max_sessions == b.max_sessions
                    })
                });
                match kept {
                    Some(k) => {
                        k.state.set_admin_from_file(&k.address.to_string(), b.state);
                        k.clone()
                    }
                    None => {
                        let state =
                            BackendState::new(cfg.health.is_some(), b.state, events.clone());
                        Arc::new(Backend::new(b, state))
                    }
                }
            })
            .collect();
        let pool = Pool {
            name: cfg.name.clone(),
            backends,
            health: cfg.health.clone(),
            when_all_down: cfg.when_all_down,
            resume: cfg.resume,
            allow_write: cfg.allow_write,
            files: NameGlobs::new(&cfg.files, cfg.ignore_case),
            cache: cfg.cache.as_ref().and_then(|c| {
                NameGlobs::new(&c.files, cfg.ignore_case).map(|globs| (c.clone(), globs))
            }),
            ignore_case: cfg.ignore_case,
            balancer: balance::for_policy(cfg.balance, &cfg.backends),
            affinity: cfg.affinity,
            affinity_ttl: cfg.affinity_ttl,
            sticky: DashMap::new(),
        };
        if let Some(old) = previous {
            pool.carry_affinity(old);
        }
        pool
    }

    /// The backend for a new session from `client` among those `accept` allows: the client's
    /// sticky backend when there is one, else the policy's choice among eligible backends, else
    /// what `when_all_down` says.
    pub fn choose(&self, client: IpAddr, accept: &dyn Fn(usize) -> bool) -> Choice {
        let eligible = |i: usize| {
            accept(i) && self.backends[i].state.eligible() && self.backends[i].has_room()
        };
        if let Some(i) = self.pick(client, &eligible) {
            return Choice::Backend(i);
        }
        if self
            .backends
            .iter()
            .any(|b| b.state.eligible() && b.has_room())
        {
            return Choice::Exhausted;
        }
        if self.backends.iter().any(|b| b.state.eligible()) {
            return Choice::Full;
        }
        match self.when_all_down {
            AllDown::Refuse => Choice::NoHealthy,
            AllDown::TryAll => {
                let enabled = |i: usize| {
                    let b = &self.backends[i];
                    accept(i) && b.state.admin() == AdminState::Enabled && b.has_room()
                };
                self.pick(client, &enabled)
                    .map_or(Choice::Exhausted, Choice::Backend)
            }
        }
    }

    fn pick(&self, client: IpAddr, accept: &dyn Fn(usize) -> bool) -> Option<usize> {
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

    /// Keeps the clients' sticky backends of the pool this one replaces (by address: indices
    /// move when backends come and go), so a reload mid-boot does not split a boot.
    fn carry_affinity(&self, old: &Pool) {
        for e in old.sticky.iter() {
            let address = old.backends.get(e.value().backend).map(|b| b.address);
            if let Some(backend) = address.and_then(|a| self.index_of(a)) {
                self.sticky.insert(
                    *e.key(),
                    Sticky {
                        backend,
                        until: e.value().until,
                    },
                );
            }
        }
    }

    /// Drops expired affinity entries, so the table stays bounded by the clients of one TTL.
    pub fn expire_affinity(&self, now: Instant) {
        self.sticky.retain(|_, s| s.until > now);
    }

    pub fn affinity_entries(&self) -> usize {
        self.sticky.len()
    }

    /// Whether this pool serves a (normalised) name: its `files` globs, ignoring case when
    /// the pool says so.
    pub fn serves(&self, name: &[u8]) -> bool {
        self.files.as_ref().is_none_or(|globs| globs.matches(name))
    }

    /// The name a copy of this (normalised) file is kept under, when the pool keeps it in
    /// memory: folded to lower case where the pool ignores case, so every spelling shares one.
    pub fn cached_name(&self, name: &[u8]) -> Option<Vec<u8>> {
        let (_, globs) = self.cache.as_ref()?;
        globs.matches(name).then(|| match self.ignore_case {
            true => name.to_ascii_lowercase(),
            false => name.to_vec(),
        })
    }

    /// Index of the backend at `address`.
    pub fn index_of(&self, address: std::net::SocketAddr) -> Option<usize> {
        self.backends.iter().position(|b| b.address == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::{Health, ProbeRecord, health_events};
    use crate::pool::config::{BackendConfig, Balance};

    fn pool_cfg(affinity: Affinity, probed: bool, when_all_down: AllDown) -> PoolConfig {
        PoolConfig {
            name: "p".into(),
            balance: Balance::RoundRobin,
            affinity,
            affinity_ttl: Duration::from_secs(60),
            when_all_down,
            resume: true,
            named: vec![],
            files: vec![],
            ignore_case: false,
            allow_write: false,
            cache: None,
            health: probed.then(|| HealthConfig {
                file: "f".into(),
                interval: Duration::from_secs(2),
                timeout: Duration::from_secs(1),
                rise: 2,
                fall: 3,
                expect: crate::health::config::Expect::Download,
                sha256: None,
                consistency: false,
            }),
            backends: (0..3)
                .map(|i| BackendConfig {
                    address: ([127, 0, 0, 1], 7000 + i).into(),
                    weight: 1,
                    state: AdminState::Enabled,
                    max_sessions: 0,
                })
                .collect(),
        }
    }

    fn pool(affinity: Affinity) -> Pool {
        Pool::new(
            &pool_cfg(affinity, false, AllDown::TryAll),
            None,
            &health_events(),
        )
    }

    fn pass(p: &Pool, i: usize) {
        let rec = ProbeRecord {
            ok: true,
            detail: "ok".into(),
            at: std::time::SystemTime::now(),
            duration: Duration::ZERO,
            sha256: None,
        };
        p.backends[i].state.record_probe("b", rec, 2, 3);
    }

    #[test]
    fn client_affinity_sticks_until_refused_or_expired() {
        let p = pool(Affinity::Client);
        let ip = IpAddr::from([10, 0, 0, 9]);
        let Choice::Backend(first) = p.choose(ip, &|_| true) else {
            panic!()
        };
        p.remember(ip, first);
        for _ in 0..5 {
            assert_eq!(p.choose(ip, &|_| true), Choice::Backend(first));
        }
        assert_ne!(p.choose(ip, &|i| i != first), Choice::Backend(first));
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

    #[test]
    fn only_probed_backends_are_used_and_the_all_down_policy_decides_the_rest() {
        let ip = IpAddr::from([10, 0, 0, 9]);
        let refuse = Pool::new(
            &pool_cfg(Affinity::Transfer, true, AllDown::Refuse),
            None,
            &health_events(),
        );
        assert_eq!(
            refuse.choose(ip, &|_| true),
            Choice::NoHealthy,
            "nothing probed yet"
        );
        pass(&refuse, 2);
        assert_eq!(refuse.backends[2].state.health(), Health::Up);
        for _ in 0..3 {
            assert_eq!(refuse.choose(ip, &|_| true), Choice::Backend(2));
        }
        assert_eq!(refuse.choose(ip, &|i| i != 2), Choice::Exhausted);
        let open = Pool::new(
            &pool_cfg(Affinity::Transfer, true, AllDown::TryAll),
            None,
            &health_events(),
        );
        assert!(
            matches!(open.choose(ip, &|_| true), Choice::Backend(_)),
            "fail open"
        );
        open.backends
            .iter()
            .for_each(|b| b.state.set_admin("b", AdminState::Disabled));
        assert_eq!(
            open.choose(ip, &|_| true),
            Choice::Exhausted,
            "disabled stays out even then"
        );
    }

    #[test]
    fn a_runtime_drain_survives_a_reload_unless_the_file_changes_the_state() {
        let events = health_events();
        let cfg = pool_cfg(Affinity::Client, false, AllDown::TryAll);
        let old = Pool::new(&cfg, None, &events);
        old.backends[0].state.set_admin("b", AdminState::Draining);
        let ip = IpAddr::from([10, 0, 0, 9]);
        old.remember(ip, 2);
        let same = Pool::new(&cfg, Some(&old), &events);
        assert_eq!(same.backends[0].state.admin(), AdminState::Draining);
        assert_eq!(
            same.choose(ip, &|_| true),
            Choice::Backend(2),
            "affinity carried over"
        );
        let mut changed = cfg.clone();
        changed.backends[0].state = AdminState::Disabled;
        let next = Pool::new(&changed, Some(&same), &events);
        assert_eq!(next.backends[0].state.admin(), AdminState::Disabled);
    }

    #[test]
    fn a_reload_keeps_backend_state_of_addresses_it_still_lists() {
        let events = health_events();
        let cfg = pool_cfg(Affinity::Transfer, true, AllDown::Refuse);
        let old = Pool::new(&cfg, None, &events);
        pass(&old, 0);
        let _claim = old.backends[0].claim();
        let mut next = cfg.clone();
        next.backends.remove(1);
        let new = Pool::new(&next, Some(&old), &events);
        assert_eq!(new.backends.len(), 2);
        assert!(Arc::ptr_eq(&new.backends[0], &old.backends[0]));
        assert_eq!(new.backends[0].active_sessions(), 1);
        assert_eq!(new.backends[0].state.health(), Health::Up);
    }
}
