//! The configuration as the program runs it: pools with their live backends, and the session
//! settings. The frontend holds it in an `ArcSwap`: a request reads the current snapshot without
//! a lock, a reload builds a new one from the old (keeping backends) and swaps it in, and each
//! session keeps the snapshot it started with to its end.

use std::sync::Arc;

use crate::config::Config;
use crate::health::HealthEvents;
use crate::limits::Limiter;
use crate::pool::Pool;
use crate::route::Router;
use crate::tftp::relay::RelaySettings;

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
        let settings = RelaySettings {
            setup_timeout: config.tftp.setup_timeout,
            setup_attempts: config.tftp.setup_attempts,
            idle_timeout: config.tftp.idle_timeout,
            stall_timeout: config.tftp.stall_timeout,
            read_ahead: config.tftp.read_ahead,
        };
        let tftp = &config.tftp;
        let router = Router::new(&config.routes, &tftp.default_pool, tftp.neighbour_lookup);
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
