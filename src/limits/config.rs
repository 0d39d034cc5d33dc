//! `[limits]`: who may ask and how fast, as the file gives it.

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::keys::parse_nets;

/// `[limits]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    #[serde(default = "default_rate")]
    pub(crate) rate_per_client: u32,
    #[serde(default = "default_burst")]
    pub(crate) burst_per_client: u32,
    #[serde(default = "default_per_client")]
    pub(crate) max_sessions_per_client: usize,
    #[serde(default)]
    pub(crate) allow: Vec<String>,
    #[serde(default)]
    pub(crate) deny: Vec<String>,
    #[serde(default)]
    pub(crate) silent: bool,
}

impl Default for RawLimits {
    fn default() -> Self {
        RawLimits {
            rate_per_client: default_rate(),
            burst_per_client: default_burst(),
            max_sessions_per_client: default_per_client(),
            allow: Vec::new(),
            deny: Vec::new(),
            silent: false,
        }
    }
}

/// A boot needs a handful of files in a few seconds; a storm of retries is what this stops.
fn default_rate() -> u32 {
    20
}

fn default_burst() -> u32 {
    40
}

/// One client IP rarely runs more than a few transfers at once (NAT'd labs may need more).
fn default_per_client() -> usize {
    16
}

/// Validated `[limits]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitsConfig {
    /// New sessions per second per client IP; 0 turns the limit off.
    pub rate_per_client: u32,
    pub burst_per_client: u32,
    /// Concurrent sessions per client IP; 0 = unlimited.
    pub max_sessions_per_client: usize,
    pub allow: Vec<IpNet>,
    pub deny: Vec<IpNet>,
    pub silent: bool,
}

impl RawLimits {
    pub fn validate(self, problems: &mut Vec<String>) -> LimitsConfig {
        if self.rate_per_client > 0 && self.burst_per_client == 0 {
            problems.push(
                "limits.burst_per_client: must be at least 1 when rate_per_client is set".into(),
            );
        }
        LimitsConfig {
            rate_per_client: self.rate_per_client,
            burst_per_client: self.burst_per_client,
            max_sessions_per_client: self.max_sessions_per_client,
            allow: parse_nets("limits.allow", &self.allow, problems),
            deny: parse_nets("limits.deny", &self.deny, problems),
            silent: self.silent,
        }
    }
}
