//! `[[pool]]` and `[[pool.backend]]`: the backends, their balancing and failure policies, as the
//! file gives them. A backend given by host name stays a [`NamedBackend`] here; `resolve`
//! expands it at run time.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::config::keys::{check_unique, parse_addr};
use crate::health::config::{AdminState, HealthConfig, RawHealth, validate_health};
use crate::tftp::cache::config::{PoolCacheConfig, RawPoolCache};

#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    pub balance: Balance,
    pub affinity: Affinity,
    pub affinity_ttl: Duration,
    pub when_all_down: AllDown,
    pub resume: bool,
    pub health: Option<HealthConfig>,
    /// Backends given by host name: one backend per resolved address (see `resolve`).
    pub named: Vec<NamedBackend>,
    /// Filename globs this pool serves; empty serves every name.
    pub files: Vec<String>,
    /// The backends ignore case in names (Windows: WDS, PVS): `files` globs, and routes to
    /// this pool unless they say otherwise, match names in any case.
    pub ignore_case: bool,
    /// Whether write requests are relayed to this pool's backends.
    pub allow_write: bool,
    /// Files served from memory (`[pool.cache]`), when configured.
    pub cache: Option<PoolCacheConfig>,
    pub backends: Vec<BackendConfig>,
}

/// What a pool does when no backend is eligible (all down, unknown, draining or inconsistent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AllDown {
    /// Answer ERROR 0 "no healthy boot server".
    Refuse,
    /// Fail open: try every enabled backend regardless of health.
    TryAll,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendConfig {
    pub address: SocketAddr,
    pub weight: u32,
    pub state: AdminState,
    /// Concurrent sessions at most (0 = unlimited); above it new sessions go to the next backend.
    pub max_sessions: usize,
}

/// Backend selection policy of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Balance {
    RoundRobin,
    Weighted,
    LeastSessions,
    SourceHash,
}

/// Which requests stick to one backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    /// Every packet of one transfer goes to one backend (always true).
    Transfer,
    /// A client IP's transfers go to the backend of its last transfer for `affinity_ttl`.
    Client,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPool {
    name: String,
    #[serde(default = "default_balance")]
    balance: Balance,
    #[serde(default = "default_affinity")]
    affinity: Affinity,
    #[serde(default = "default_affinity_ttl", with = "humantime_serde")]
    affinity_ttl: Duration,
    #[serde(default = "default_when_all_down")]
    when_all_down: AllDown,
    #[serde(default = "default_resume")]
    resume: bool,
    health: Option<RawHealth>,
    #[serde(default)]
    files: Vec<String>,
    #[serde(default)]
    ignore_case: bool,
    #[serde(default)]
    allow_write: bool,
    cache: Option<RawPoolCache>,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    address: String,
    #[serde(default = "default_weight")]
    weight: u32,
    #[serde(default = "default_admin_state")]
    state: AdminState,
    #[serde(default)]
    max_sessions: usize,
}

fn default_balance() -> Balance {
    Balance::RoundRobin
}

fn default_affinity() -> Affinity {
    Affinity::Transfer
}

fn default_affinity_ttl() -> Duration {
    Duration::from_secs(300)
}

fn default_weight() -> u32 {
    1
}

/// Fail open: a boot that might work beats one refused on the word of a probe.
fn default_when_all_down() -> AllDown {
    AllDown::TryAll
}

fn default_resume() -> bool {
    true
}

fn default_admin_state() -> AdminState {
    AdminState::Enabled
}

pub fn validate_pools(raw: Vec<RawPool>, problems: &mut Vec<String>) -> Vec<PoolConfig> {
    if raw.is_empty() {
        problems.push("pool: at least one [[pool]] is needed".into());
    }
    let mut names = HashSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, p)| {
            if !names.insert(p.name.clone()) {
                problems.push(format!("pool[{i}].name: duplicate pool name {:?}", p.name));
            }
            validate_pool(i, p, problems)
        })
        .collect()
}

fn validate_pool(i: usize, raw: RawPool, problems: &mut Vec<String>) -> PoolConfig {
    let key = format!("pool[{i}]");
    if raw.name.trim().is_empty() {
        problems.push(format!("{key}.name: must not be empty"));
    }
    if raw.backend.is_empty() {
        problems.push(format!(
            "{key}.backend: at least one [[pool.backend]] is needed"
        ));
    }
    let mut backends = Vec::new();
    let mut named = Vec::new();
    for (j, b) in raw.backend.iter().enumerate() {
        let key = format!("{key}.backend[{j}]");
        match parse_host_port(&b.address) {
            Some((host, port)) => named.push(NamedBackend {
                host,
                port,
                template: backend_template(
                    &key,
                    b,
                    SocketAddr::from(([0, 0, 0, 0], port)),
                    problems,
                ),
            }),
            None => backends.extend(validate_backend(&key, b, problems)),
        }
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.address).collect();
    check_unique(&addrs, &format!("{key}.backend"), problems);
    if raw.affinity == Affinity::Client && raw.affinity_ttl.is_zero() {
        problems.push(format!(
            "{key}.affinity_ttl: must be above 0 with affinity = \"client\""
        ));
    }
    let health = raw
        .health
        .map(|h| validate_health(&format!("{key}.health"), h, problems));
    for (j, g) in raw.files.iter().enumerate() {
        if let Err(e) = globset::Glob::new(g) {
            problems.push(format!(
                "{key}.files[{j}]: invalid glob {g:?}: {}",
                e.kind()
            ));
        }
    }
    let cache = raw
        .cache
        .map(|c| c.validate(&format!("{key}.cache"), problems));
    PoolConfig {
        name: raw.name,
        balance: raw.balance,
        affinity: raw.affinity,
        affinity_ttl: raw.affinity_ttl,
        when_all_down: raw.when_all_down,
        resume: raw.resume,
        health,
        named,
        files: raw.files,
        ignore_case: raw.ignore_case,
        allow_write: raw.allow_write,
        cache,
        backends,
    }
}

fn validate_backend(
    key: &str,
    raw: &RawBackend,
    problems: &mut Vec<String>,
) -> Option<BackendConfig> {
    let address = parse_addr(&format!("{key}.address"), &raw.address, problems)?;
    if address.port() == 0 {
        problems.push(format!("{key}.address: port 0 is not a backend port"));
    }
    Some(backend_template(key, raw, address, problems))
}

/// The backend's settings at `address` (for a named backend, each resolved address).
fn backend_template(
    key: &str,
    raw: &RawBackend,
    address: SocketAddr,
    problems: &mut Vec<String>,
) -> BackendConfig {
    if raw.weight == 0 || raw.weight > 1000 {
        problems.push(format!(
            "{key}.weight: must be 1..=1000, not {}",
            raw.weight
        ));
    }
    BackendConfig {
        address,
        weight: raw.weight,
        state: raw.state,
        max_sessions: raw.max_sessions,
    }
}

/// A backend named by host: `resolve` expands it to one backend per address of the name.
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
