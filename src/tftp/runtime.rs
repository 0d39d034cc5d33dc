//! The configuration as the program runs it: pools with their live backends, and the session
//! settings. [`Current`] holds it in an `ArcSwap`: a request reads the current snapshot without
//! a lock, a reload builds a new one from the old (keeping backends) and swaps it in, and each
//! session keeps the snapshot it started with to its end. Services beside TFTP (DNS, probers)
//! learn of each swap from a `watch` channel instead of polling the holder.

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::Config;
use crate::health::HealthEvents;
use crate::limits::Limiter;
use crate::pool::Pool;
use crate::route::Router;
use crate::tftp::config::RelaySettings;

#[derive(Debug)]
pub struct Runtime {
    pub config: Arc<Config>,
    /// Sessions admitted at most: `tftp.max_sessions`, lowered to what the open-file limit
    /// holds (see [`sessions_within_file_limit`]).
    max_sessions: usize,
    pub pools: Vec<Arc<Pool>>,
    /// The probed `addresses` of DNS names (`[dns.name.health]`), one pool per name: probed
    /// like backends, read by the DNS, never routed to.
    pub probed_addresses: Vec<Arc<Pool>>,
    pub settings: RelaySettings,
    pub limiter: Limiter,
    pub router: Router,
}

impl Runtime {
    /// Builds the runtime for `config`; pools of `previous` with the same name hand over the
    /// backends they still list.
    pub fn new(config: Config, previous: Option<&Runtime>, events: &HealthEvents) -> Runtime {
        let pools = config
            .pools
            .iter()
            .map(|p| {
                let old = previous.and_then(|r| r.pool(&p.name));
                Arc::new(Pool::new(p, old.map(|o| o.as_ref()), events))
            })
            .collect();
        let probed_addresses = config
            .dns
            .iter()
            .flat_map(|d| &d.names)
            .filter_map(|n| n.probed_pool())
            .map(|p| {
                let old = previous.and_then(|r| r.probed(&p.name));
                Arc::new(Pool::new(&p, old.map(|o| o.as_ref()), events))
            })
            .collect();
        let settings = config.tftp.relay_settings();
        let tftp = &config.tftp;
        let router = Router::new(
            &config.routes,
            &config.pools,
            &tftp.default_pool,
            tftp.neighbour_lookup,
        );
        let backends: usize = config.pools.iter().map(|p| p.backends.len()).sum();
        let max_sessions = match file_limit() {
            Some(limit) => tftp
                .max_sessions
                .min(sessions_within_file_limit(limit, backends)),
            None => tftp.max_sessions,
        };
        crate::tftp::relay::set_lingering_cap(max_sessions);
        Runtime {
            max_sessions,
            router,
            limiter: Limiter::new(config.limits.clone()),
            config: Arc::new(config),
            pools,
            probed_addresses,
            settings,
        }
    }

    /// The pool probing a DNS name's addresses, by `DnsName::probed_pool_name`.
    pub fn probed(&self, name: &str) -> Option<&Arc<Pool>> {
        self.probed_addresses.iter().find(|p| p.name == name)
    }

    /// Every pool the probers watch: the backends', then the DNS names' addresses.
    pub fn probed_pools(&self) -> Vec<Arc<Pool>> {
        self.pools
            .iter()
            .chain(&self.probed_addresses)
            .cloned()
            .collect()
    }

    /// Where requests go when no rule says otherwise.
    pub fn default_pool(&self) -> &Arc<Pool> {
        self.pool(&self.config.tftp.default_pool)
            .unwrap_or(&self.pools[0])
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }

    /// Sessions admitted at most; beyond it requests are left unanswered and clients retry.
    pub fn max_sessions(&self) -> usize {
        self.max_sessions
    }
}

/// Open files kept for everything but sessions: the runtimes' own (epoll, eventfd, signal
/// pipe), the port-69, DNS and admin sockets and the admin's connections, the log.
const RESERVED_FILES: u64 = 96;

/// Files one session may hold: its two sockets, and a third for a backend leg that lingers
/// after a takeover or an unanswered request (quarantine), or a write's final-ACK dally.
const FILES_PER_SESSION: u64 = 3;

/// How many sessions fit under an open-file limit of `limit` with `backends` probed (a probe
/// holds a socket per backend): an accepted transfer must never die for lack of a descriptor,
/// so admission stops here, silently, and clients retry when sessions end.
pub fn sessions_within_file_limit(limit: u64, backends: usize) -> usize {
    let reserved = RESERVED_FILES + backends as u64;
    let sessions = limit.saturating_sub(reserved) / FILES_PER_SESSION;
    usize::try_from(sessions).unwrap_or(usize::MAX).max(1)
}

/// The process's soft open-file limit, if it can be read.
pub fn file_limit() -> Option<u64> {
    nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_limit_bounds_the_sessions() {
        assert_eq!(sessions_within_file_limit(160, 2), 20);
        assert_eq!(sessions_within_file_limit(20_000, 3), 6_633);
        assert_eq!(sessions_within_file_limit(262_144, 3), 87_348);
        assert_eq!(
            sessions_within_file_limit(50, 3),
            1,
            "one at least: say so, don't refuse all"
        );
    }
}

/// The runtime new sessions start with, and the channel that tells watchers of every swap.
#[derive(Debug)]
pub struct Current {
    runtime: ArcSwap<Runtime>,
    swaps: watch::Sender<Arc<Runtime>>,
    events: HealthEvents,
}

impl Current {
    pub fn new(runtime: Runtime, events: HealthEvents) -> Current {
        let runtime = Arc::new(runtime);
        Current {
            runtime: ArcSwap::new(runtime.clone()),
            swaps: watch::channel(runtime).0,
            events,
        }
    }

    /// The configuration new sessions start with (lock-free).
    pub fn load(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Builds the runtime of `config` from the current one (backends kept), swaps it in,
    /// tells the watchers, and returns it. Running sessions keep theirs.
    pub fn install(&self, config: Config) -> Arc<Runtime> {
        let next = Arc::new(Runtime::new(
            config,
            Some(&self.runtime.load()),
            &self.events,
        ));
        self.runtime.store(next.clone());
        self.swaps.send_replace(next.clone());
        next
    }

    /// A receiver that sees every runtime installed from now on (and holds the current one).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Runtime>> {
        self.swaps.subscribe()
    }

    /// Counts health, admin and drift changes; watchers (DNS, status page) follow it.
    pub fn health_events(&self) -> &HealthEvents {
        &self.events
    }
}
