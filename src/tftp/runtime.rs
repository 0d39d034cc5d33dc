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
    pub pools: Vec<Arc<Pool>>,
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
        let settings = config.tftp.relay_settings();
        let tftp = &config.tftp;
        let router = Router::new(
            &config.routes,
            &config.pools,
            &tftp.default_pool,
            tftp.neighbour_lookup,
        );
        Runtime {
            router,
            limiter: Limiter::new(config.limits.clone()),
            config: Arc::new(config),
            pools,
            settings,
        }
    }

    /// Where requests go when no rule says otherwise.
    pub fn default_pool(&self) -> &Arc<Pool> {
        self.pool(&self.config.tftp.default_pool)
            .unwrap_or(&self.pools[0])
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.iter().find(|p| p.name == name)
    }

    pub fn max_sessions(&self) -> usize {
        self.config.tftp.max_sessions
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
