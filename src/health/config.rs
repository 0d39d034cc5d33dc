//! `[pool.health]` and the admin state of a backend, as the file gives them.

use std::time::Duration;

use serde::Deserialize;

use crate::protocol::names::check_filename;

/// What the operator says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
#[repr(u8)]
pub enum AdminState {
    Enabled = 0,
    /// No new sessions; running ones finish.
    Draining = 1,
    /// No new sessions, not even when every backend is down.
    Disabled = 2,
}

impl AdminState {
    pub(crate) fn from_u8(v: u8) -> AdminState {
        match v {
            1 => AdminState::Draining,
            2 => AdminState::Disabled,
            _ => AdminState::Enabled,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Enabled => "enabled",
            AdminState::Draining => "draining",
            AdminState::Disabled => "disabled",
        }
    }
}

/// How a probe judges a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Expect {
    /// The file must download completely.
    Download,
    /// Any TFTP answer will do (ERROR 1 "file not found" still proves the server is alive).
    AnyReply,
}

/// Active health probes of a pool's backends: a real TFTP download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub file: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    pub expect: Expect,
    pub sha256: Option<String>,
    pub consistency: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    file: String,
    #[serde(default = "default_health_interval", with = "humantime_serde")]
    interval: Duration,
    #[serde(default = "default_health_timeout", with = "humantime_serde")]
    timeout: Duration,
    #[serde(default = "default_rise")]
    rise: u32,
    #[serde(default = "default_fall")]
    fall: u32,
    #[serde(default = "default_expect")]
    expect: Expect,
    sha256: Option<String>,
    #[serde(default)]
    consistency: bool,
}

fn default_health_interval() -> Duration {
    Duration::from_secs(2)
}

fn default_health_timeout() -> Duration {
    Duration::from_secs(1)
}

fn default_rise() -> u32 {
    2
}

fn default_fall() -> u32 {
    3
}

fn default_expect() -> Expect {
    Expect::Download
}

pub fn validate_health(key: &str, raw: RawHealth, problems: &mut Vec<String>) -> HealthConfig {
    if let Err(why) = check_filename(raw.file.as_bytes()) {
        problems.push(format!("{key}.file: {why}"));
    }
    if raw.interval.is_zero() || raw.timeout.is_zero() {
        problems.push(format!("{key}.interval, {key}.timeout: must be above 0"));
    }
    if raw.timeout > raw.interval {
        problems.push(format!(
            "{key}.timeout: must not be longer than {key}.interval"
        ));
    }
    if raw.rise == 0 || raw.fall == 0 {
        problems.push(format!("{key}.rise, {key}.fall: must be at least 1"));
    }
    let sha256 = raw.sha256.map(|h| h.to_ascii_lowercase());
    if let Some(h) = sha256
        .as_ref()
        .filter(|h| h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()))
    {
        problems.push(format!("{key}.sha256: not 64 hex digits: {h:?}"));
    }
    if raw.expect == Expect::AnyReply && (sha256.is_some() || raw.consistency) {
        problems.push(format!(
            "{key}.expect: \"any-reply\" cannot check content (sha256, consistency)"
        ));
    }
    HealthConfig {
        file: raw.file,
        interval: raw.interval,
        timeout: raw.timeout,
        rise: raw.rise,
        fall: raw.fall,
        expect: raw.expect,
        sha256,
        consistency: raw.consistency,
    }
}
