//! `[resolver]`: where backends given by host name are looked up, and how often.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

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
