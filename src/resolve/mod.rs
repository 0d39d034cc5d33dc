//! Backends given by hostname (`address = "pvs01.corp.example:69"`): every A/AAAA address of the
//! name becomes a backend of the pool. A watcher re-resolves each name when its records expire
//! (the TTL, clamped to `[resolver] min_ttl`..`max_ttl`) and sends every changed answer on a
//! channel; the control surface installs the expanded configuration: new sessions use the new
//! addresses, running ones finish where they are. A failed lookup keeps the last good answer.
//! The watcher learns of reloads by a channel too: a new configuration restarts it on its names.

pub mod config;

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use config::ResolverSettings;
use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::pool::config::BackendConfig;

/// Resolved addresses per host name.
pub type Resolved = HashMap<String, BTreeSet<IpAddr>>;

/// The configuration with every named backend replaced by its resolved addresses (a name not
/// resolved yet contributes none; an address already listed is not added twice).
pub fn expand(config: &Config, resolved: &Resolved) -> Config {
    let mut out = config.clone();
    for pool in &mut out.pools {
        for named in &pool.named {
            for ip in resolved.get(&named.host).into_iter().flatten() {
                let address = SocketAddr::new(*ip, named.port);
                if !pool.backends.iter().any(|b| b.address == address) {
                    pool.backends.push(BackendConfig {
                        address,
                        ..named.template.clone()
                    });
                }
            }
        }
    }
    out
}

/// Every host name the configuration names.
pub fn names(config: &Config) -> BTreeSet<String> {
    config
        .pools
        .iter()
        .flat_map(|p| p.named.iter().map(|n| n.host.clone()))
        .collect()
}

/// Re-resolves the configuration's names until dropped.
#[derive(Debug)]
pub struct NameWatch {
    stop: CancellationToken,
}

impl Drop for NameWatch {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl NameWatch {
    /// Watches the names of the configuration `configs` holds, and of every one it is sent
    /// later (a reload); each change of the addresses found is sent on the returned channel.
    pub fn start(configs: watch::Receiver<Arc<Config>>) -> (NameWatch, watch::Receiver<Resolved>) {
        let stop = CancellationToken::new();
        let (found, resolved) = watch::channel(Resolved::new());
        tokio::spawn(follow(configs, found, stop.clone()));
        (NameWatch { stop }, resolved)
    }
}

/// Resolves the current configuration's names until a new configuration arrives, then starts
/// over with its names (what a reload removed is forgotten).
async fn follow(
    mut configs: watch::Receiver<Arc<Config>>,
    found: watch::Sender<Resolved>,
    stop: CancellationToken,
) {
    loop {
        let config = configs.borrow_and_update().clone();
        let names = names(&config);
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = configs.changed() => if changed.is_err() { return },
            _ = resolve(names, config.resolver.clone(), &found) => {}
        }
    }
}

/// Re-resolves `names` as their records expire; never returns while there are names and a
/// resolver (the caller's `select!` ends it).
async fn resolve(
    names: BTreeSet<String>,
    settings: ResolverSettings,
    found: &watch::Sender<Resolved>,
) {
    if names.is_empty() {
        return std::future::pending().await;
    }
    let resolver = match build_resolver(&settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the DNS resolver: named backends stay unresolved");
            return std::future::pending().await;
        }
    };
    let mut known = Resolved::new();
    loop {
        let mut next = settings.max_ttl;
        for name in &names {
            let (ips, ttl) = lookup(&resolver, name, &settings).await;
            next = next.min(ttl);
            if let Some(ips) = ips.filter(|ips| known.get(name) != Some(ips)) {
                tracing::info!(name, addresses = ?ips, "backend name resolved to new addresses");
                known.insert(name.clone(), ips);
                found.send_replace(known.clone());
            }
        }
        tokio::time::sleep(next).await;
    }
}

/// The name's addresses and when to ask again; `None` addresses when the lookup failed.
async fn lookup(
    resolver: &Resolver<TokioRuntimeProvider>,
    name: &str,
    s: &ResolverSettings,
) -> (Option<BTreeSet<IpAddr>>, Duration) {
    match resolver.lookup_ip(name).await {
        Ok(found) => {
            let ttl = found
                .valid_until()
                .saturating_duration_since(std::time::Instant::now());
            (
                Some(found.iter().collect()),
                ttl.clamp(s.min_ttl, s.max_ttl),
            )
        }
        Err(e) => {
            tracing::warn!(name, error = %e, "backend name lookup failed: keeping the last answer");
            (None, s.min_ttl)
        }
    }
}

fn build_resolver(s: &ResolverSettings) -> Result<Resolver<TokioRuntimeProvider>, String> {
    let provider = TokioRuntimeProvider::default();
    let builder = if s.nameservers.is_empty() {
        Resolver::builder(provider).map_err(|e| e.to_string())?
    } else {
        let servers = s.nameservers.iter().map(|a| nameserver(*a)).collect();
        Resolver::builder_with_config(HickoryConfig::from_name_servers(servers), provider)
    };
    builder.build().map_err(|e| e.to_string())
}

fn nameserver(addr: SocketAddr) -> NameServerConfig {
    let mut udp = ConnectionConfig::udp();
    udp.port = addr.port();
    let mut tcp = ConnectionConfig::tcp();
    tcp.port = addr.port();
    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
}
