//! Backends given by hostname (`address = "pvs01.corp.example:69"`): every A/AAAA address of the
//! name becomes a backend of the pool. A watcher re-resolves each name when its records expire
//! (the TTL, clamped to `[resolver] min_ttl`..`max_ttl`) and, when an answer changes, the
//! control surface installs the expanded configuration: new sessions use the new addresses,
//! running ones finish where they are. A failed lookup keeps the last good answer.

use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Weak;
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig as HickoryConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::config::{BackendConfig, Config};
use crate::control::Control;

/// `[resolver]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawResolver {
    #[serde(default)]
    nameservers: Vec<String>,
    #[serde(default = "default_min_ttl", with = "humantime_serde")]
    min_ttl: Duration,
    #[serde(default = "default_max_ttl", with = "humantime_serde")]
    max_ttl: Duration,
}

impl Default for RawResolver {
    fn default() -> Self {
        RawResolver {
            nameservers: Vec::new(),
            min_ttl: default_min_ttl(),
            max_ttl: default_max_ttl(),
        }
    }
}

/// Floor: a TTL of 0 must not turn into a lookup loop.
fn default_min_ttl() -> Duration {
    Duration::from_secs(5)
}
/// Ceiling: a day-long TTL must not hide a moved boot server for a day.
fn default_max_ttl() -> Duration {
    Duration::from_secs(300)
}

/// Validated `[resolver]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverSettings {
    /// Name servers to ask; empty uses the system's (`/etc/resolv.conf`).
    pub nameservers: Vec<SocketAddr>,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
}

impl RawResolver {
    pub fn validate(self, problems: &mut Vec<String>) -> ResolverSettings {
        let nameservers = self
            .nameservers
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let parsed = s
                    .parse::<SocketAddr>()
                    .or_else(|_| s.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
                parsed
                    .map_err(|_| {
                        problems.push(format!("resolver.nameservers[{i}]: invalid address {s:?}"))
                    })
                    .ok()
            })
            .collect();
        if self.min_ttl.is_zero() || self.min_ttl > self.max_ttl {
            problems
                .push("resolver.min_ttl: must be above 0 and not above resolver.max_ttl".into());
        }
        ResolverSettings {
            nameservers,
            min_ttl: self.min_ttl,
            max_ttl: self.max_ttl,
        }
    }
}

/// A backend named by host: expanded to one backend per address of the name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedBackend {
    pub host: String,
    pub port: u16,
    /// The backend as configured; its address is replaced by each resolved one.
    pub template: BackendConfig,
}

/// `host:port` where host is a DNS name (not an IP); `None` when it is not that.
pub fn parse_host_port(text: &str) -> Option<(String, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let valid = !host.is_empty()
        && host.len() <= 253
        && host.parse::<IpAddr>().is_err()
        && host.trim_end_matches('.').split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
        });
    valid.then(|| (host.to_string(), port))
}

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
    /// Starts watching `config`'s names (none: no task), reporting changes to `control`.
    pub fn start(config: &Config, control: Weak<Control>) -> Option<NameWatch> {
        let names = names(config);
        if names.is_empty() {
            return None;
        }
        let stop = CancellationToken::new();
        let settings = config.resolver.clone();
        tokio::spawn(watch(names, settings, control, stop.clone()));
        Some(NameWatch { stop })
    }
}

async fn watch(
    names: BTreeSet<String>,
    settings: ResolverSettings,
    control: Weak<Control>,
    stop: CancellationToken,
) {
    let resolver = match build_resolver(&settings) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the DNS resolver: named backends stay unresolved");
            return;
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
                let Some(control) = control.upgrade() else {
                    return;
                };
                control.names_resolved(known.clone());
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(next) => {}
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ports_are_told_from_addresses() {
        assert_eq!(
            parse_host_port("pvs01.corp.example:69"),
            Some(("pvs01.corp.example".into(), 69))
        );
        assert_eq!(parse_host_port("boot.:6969"), Some(("boot.".into(), 6969)));
        assert_eq!(parse_host_port("10.0.0.5:69"), None, "an IP is not a name");
        assert_eq!(parse_host_port("pvs01:0"), None);
        assert_eq!(parse_host_port("bad_name:69"), None);
        assert_eq!(parse_host_port("pvs01"), None);
    }
}
