//! Configuration: TOML → raw serde structs (`deny_unknown_fields`) → [`validate`] → typed [`Config`].
//!
//! This is the root that loads the file, gathers the sections and reports errors by key path;
//! each section's types and checks live beside the module that runs them (`tftp::config`,
//! `pool::config`, `health::config`, `route::config`, `limits::config`, `resolve::config`,
//! `dns::config`, `admin::config`, `cluster::config`, `proxy_dhcp::config`), and [`keys`]
//! holds the parsing helpers they share.
//!
//! Validation collects every problem, each named by its key path
//! (`pool[1].backend[0].address: invalid socket address "10.0.0.5:99999"`), so an operator fixes
//! a file in one pass. Every default is a named function, and every key is documented in
//! `config/tftplb.example.toml`, which a test parses.

pub mod keys;

use std::fmt;
use std::path::Path;

use serde::Deserialize;

use crate::admin::config::{AdminConfig, RawAdmin, validate_admin};
use crate::cluster::config::{ClusterConfig, RawCluster};
use crate::dns::config::{DnsConfig, RawDns, validate_dns};
use crate::limits::config::{LimitsConfig, RawLimits};
use crate::pool::config::{PoolConfig, RawPool, validate_pools};
use crate::proxy_dhcp::config::{ProxyDhcpConfig, RawProxyDhcp};
use crate::resolve::config::{RawResolver, ResolverSettings};
use crate::route::config::{RawRoute, RouteConfig, warnings};
use crate::tftp::cache::config::{CacheConfig, RawCache};
use crate::tftp::config::{RawTftp, TftpConfig, validate_tftp};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub tftp: TftpConfig,
    pub limits: LimitsConfig,
    pub pools: Vec<PoolConfig>,
    /// Ordered routing rules; the first match decides.
    pub routes: Vec<RouteConfig>,
    /// Things `tftplb check` points out that are not errors (shadowed rules, unreached pools).
    pub warnings: Vec<String>,
    pub resolver: ResolverSettings,
    pub dns: Option<DnsConfig>,
    pub admin: AdminConfig,
    /// Session sync with other front ends (`[cluster]`), when configured.
    pub cluster: Option<ClusterConfig>,
    /// The PXE service (`[proxy_dhcp]`), when configured.
    pub proxy_dhcp: Option<ProxyDhcpConfig>,
    /// Memory for boot files served from memory (`[cache]`; pools opt in with `[pool.cache]`).
    pub cache: CacheConfig,
}

/// Every problem found in a configuration file.
#[derive(Debug)]
pub struct ConfigError {
    pub problems: Vec<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn one(problem: String) -> ConfigError {
        ConfigError {
            problems: vec![problem],
        }
    }
}

impl Config {
    /// Reads, parses and validates a file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::one(format!("{}: {e}", path.display())))?;
        Config::parse(&text).map_err(|e| ConfigError {
            problems: e
                .problems
                .into_iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
        })
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::one(toml_error(&e)))?;
        validate(raw)
    }

    /// The pool requests go to when no route matches (`tftp.default_pool`, else the first).
    pub fn default_pool(&self) -> &PoolConfig {
        self.pools
            .iter()
            .find(|p| p.name == self.tftp.default_pool)
            .unwrap_or(&self.pools[0])
    }
}

fn toml_error(e: &toml::de::Error) -> String {
    // toml's message spans several lines with a source excerpt; keep it, but on one entry.
    e.to_string().trim_end().to_string()
}

// ---- raw, as written in the file ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    tftp: RawTftp,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    pool: Vec<RawPool>,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    resolver: RawResolver,
    dns: Option<RawDns>,
    cluster: Option<RawCluster>,
    proxy_dhcp: Option<RawProxyDhcp>,
    #[serde(default)]
    cache: RawCache,
    #[serde(default)]
    admin: RawAdmin,
}

// ---- validation ----

/// Turns the raw file into a [`Config`], or lists every problem with its key path.
fn validate(raw: RawConfig) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let mut tftp = validate_tftp(raw.tftp, &mut problems);
    let limits = raw.limits.validate(&mut problems);
    let pools = validate_pools(raw.pool, &mut problems);
    let names: Vec<String> = pools.iter().map(|p| p.name.clone()).collect();
    tftp.default_pool = match tftp.default_pool.as_str() {
        "" => names.first().cloned().unwrap_or_default(),
        named if names.iter().any(|n| n == named) => named.to_string(),
        named => {
            problems.push(format!("tftp.default_pool: no pool named {named:?}"));
            String::new()
        }
    };
    let routes: Vec<RouteConfig> = raw
        .route
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.validate(i, &names, &mut problems))
        .collect();
    let warnings = warnings(&routes, &names, &tftp.default_pool);
    let resolver = raw.resolver.validate(&mut problems);
    let dns = raw.dns.map(|d| validate_dns(d, &pools, &mut problems));
    let admin = validate_admin(raw.admin, &mut problems);
    let cluster = raw.cluster.map(|c| c.validate(&mut problems));
    let proxy_dhcp = raw.proxy_dhcp.map(|p| p.validate(&mut problems));
    let cache = raw.cache.validate(&mut problems);
    if problems.is_empty() {
        Ok(Config {
            tftp,
            limits,
            pools,
            routes,
            warnings,
            resolver,
            dns,
            admin,
            cluster,
            proxy_dhcp,
            cache,
        })
    } else {
        Err(ConfigError { problems })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::pool::config::{Affinity, Balance};

    const MINIMAL: &str = r#"
        [[pool]]
        name = "pvs"
        [[pool.backend]]
        address = "10.0.0.11:69"
    "#;

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        assert_eq!(c.tftp.listen, vec!["0.0.0.0:69".parse().unwrap()]);
        assert_eq!(c.tftp.setup_timeout, Duration::from_millis(700));
        assert_eq!(c.tftp.idle_timeout, Duration::from_secs(30));
        let p = c.default_pool();
        assert_eq!(p.balance, Balance::RoundRobin);
        assert_eq!(p.affinity, Affinity::Transfer);
        assert_eq!(p.backends[0].weight, 1);
    }

    #[test]
    fn every_problem_is_named_by_its_key_path() {
        let text = r#"
            [tftp]
            listen = ["0.0.0.0:69", "nonsense"]
            [[pool]]
            name = "a"
            [[pool.backend]]
            address = "10.0.0.1:69"
            [[pool]]
            name = "a"
            [[pool.backend]]
            address = "10.0.0.5:99999"
            [[pool.backend]]
            address = "10.0.0.6:69"
            weight = 0
        "#;
        let e = Config::parse(text).unwrap_err();
        let all = e.to_string();
        assert!(
            all.contains("tftp.listen[1]: invalid socket address \"nonsense\""),
            "{all}"
        );
        assert!(
            all.contains("pool[1].name: duplicate pool name \"a\""),
            "{all}"
        );
        assert!(
            all.contains("pool[1].backend[0].address: invalid socket address \"10.0.0.5:99999\""),
            "{all}"
        );
        assert!(all.contains("pool[1].backend[1].weight"), "{all}");
        assert_eq!(e.problems.len(), 4, "{all}");
    }

    #[test]
    fn unknown_keys_and_bad_enums_are_refused_by_name() {
        let e = Config::parse("[tftp]\nlisten_on = []\n").unwrap_err();
        assert!(e.to_string().contains("listen_on"), "{e}");
        let text = MINIMAL.replace("name = \"pvs\"", "name = \"pvs\"\nbalance = \"random\"");
        let e = Config::parse(&text).unwrap_err();
        assert!(e.to_string().contains("random"), "{e}");
    }

    #[test]
    fn no_pool_is_an_error() {
        let e = Config::parse("").unwrap_err();
        assert!(e.to_string().contains("pool: at least one"), "{e}");
    }
}
