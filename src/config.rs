//! Configuration: TOML → raw serde structs (`deny_unknown_fields`) → [`validate`] → typed [`Config`].
//!
//! Validation collects every problem, each named by its key path
//! (`pool[1].backend[0].address: invalid socket address "10.0.0.5:99999"`), so an operator fixes
//! a file in one pass. Every default is a named function, and every key is documented in
//! `config/tftplb.example.toml`, which a test parses.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::health::AdminState;
use crate::limits::{LimitsConfig, RawLimits};

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub tftp: TftpConfig,
    pub limits: LimitsConfig,
    pub pools: Vec<PoolConfig>,
    /// Ordered routing rules; the first match decides.
    pub routes: Vec<crate::route::RouteConfig>,
    /// Things `tftplb check` points out that are not errors (shadowed rules, unreached pools).
    pub warnings: Vec<String>,
    pub resolver: crate::resolve::ResolverSettings,
    pub dns: Option<crate::dns::config::DnsConfig>,
    pub admin: crate::admin::config::AdminConfig,
}

#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub listen: Vec<SocketAddr>,
    pub setup_timeout: Duration,
    pub stall_timeout: Duration,
    pub setup_attempts: u32,
    pub idle_timeout: Duration,
    pub max_sessions: usize,
    pub shutdown_grace: Duration,
    /// The pool requests go to when no route matches.
    pub default_pool: String,
    /// How long a MAC learned from a request stays attached to the client IP.
    pub mac_memory: Duration,
    /// Read the kernel's neighbour table for on-link clients' MACs.
    pub neighbour_lookup: bool,
    /// Blocks of a read fetched ahead of the client (0: relay packet for packet).
    pub read_ahead: u16,
}

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
    pub named: Vec<crate::resolve::NamedBackend>,
    /// Filename globs this pool serves; empty serves every name.
    pub files: Vec<String>,
    /// Whether write requests are relayed to this pool's backends.
    pub allow_write: bool,
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
    route: Vec<crate::route::RawRoute>,
    #[serde(default)]
    resolver: crate::resolve::RawResolver,
    dns: Option<crate::dns::config::RawDns>,
    #[serde(default)]
    admin: crate::admin::config::RawAdmin,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTftp {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default = "default_setup_timeout", with = "humantime_serde")]
    setup_timeout: Duration,
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    stall_timeout: Duration,
    #[serde(default = "default_setup_attempts")]
    setup_attempts: u32,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    shutdown_grace: Duration,
    default_pool: Option<String>,
    #[serde(default = "default_mac_memory", with = "humantime_serde")]
    mac_memory: Duration,
    #[serde(default)]
    neighbour_lookup: bool,
    #[serde(default = "default_read_ahead")]
    read_ahead: u16,
}

impl Default for RawTftp {
    fn default() -> Self {
        RawTftp {
            listen: default_listen(),
            setup_timeout: default_setup_timeout(),
            stall_timeout: default_stall_timeout(),
            setup_attempts: default_setup_attempts(),
            idle_timeout: default_idle_timeout(),
            max_sessions: default_max_sessions(),
            shutdown_grace: default_shutdown_grace(),
            default_pool: None,
            mac_memory: default_mac_memory(),
            neighbour_lookup: false,
            read_ahead: default_read_ahead(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPool {
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
    allow_write: bool,
    #[serde(default)]
    backend: Vec<RawBackend>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
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

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:69".to_string()]
}
/// Well under the first retry of PXE clients (iPXE 0.25 s backoff start, EDK2 4 s).
fn default_setup_timeout() -> Duration {
    Duration::from_millis(700)
}
/// A backend that sends no DATA for this long mid-transfer is replaced (when `resume` is on).
fn default_stall_timeout() -> Duration {
    Duration::from_secs(2)
}
/// Two hops per block cost a lock-step transfer through a pure relay about half its speed; two
/// blocks fetched ahead give most of it back, four no more (bench/README.md: 0.92 and 0.95 of
/// direct against 0.62), at 4.4 KiB per session at blksize 1468.
fn default_read_ahead() -> u16 {
    2
}
fn default_setup_attempts() -> u32 {
    3
}
/// Above EDK2's retry budget (4 s × 6 tries), short enough to free state.
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_sessions() -> usize {
    10_000
}
/// Running transfers may finish for this long after SIGTERM; a 5 MiB kernel needs seconds.
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}
/// A boot (NBP, config, kernel, initrd) takes minutes at most.
fn default_mac_memory() -> Duration {
    Duration::from_secs(600)
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
    let routes: Vec<crate::route::RouteConfig> = raw
        .route
        .into_iter()
        .enumerate()
        .filter_map(|(i, r)| r.validate(i, &names, &mut problems))
        .collect();
    let warnings = crate::route::warnings(&routes, &names, &tftp.default_pool);
    let resolver = raw.resolver.validate(&mut problems);
    let dns = raw
        .dns
        .map(|d| crate::dns::config::validate_dns(d, &pools, &mut problems));
    let admin = crate::admin::config::validate_admin(raw.admin, &mut problems);
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
        })
    } else {
        Err(ConfigError { problems })
    }
}

fn validate_tftp(raw: RawTftp, problems: &mut Vec<String>) -> TftpConfig {
    if raw.listen.is_empty() {
        problems.push("tftp.listen: at least one address is needed".into());
    }
    let listen = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_addr(&format!("tftp.listen[{i}]"), a, problems))
        .collect::<Vec<_>>();
    check_unique(&listen, "tftp.listen", problems);
    if raw.setup_timeout.is_zero() {
        problems.push("tftp.setup_timeout: must be above 0".into());
    }
    if raw.setup_attempts == 0 {
        problems.push("tftp.setup_attempts: must be at least 1".into());
    }
    if raw.idle_timeout < raw.setup_timeout {
        problems.push("tftp.idle_timeout: must not be shorter than tftp.setup_timeout".into());
    }
    if raw.max_sessions == 0 {
        problems.push("tftp.max_sessions: must be at least 1".into());
    }
    if raw.stall_timeout.is_zero() {
        problems.push("tftp.stall_timeout: must be above 0".into());
    }
    if raw.read_ahead == 1 || raw.read_ahead > MAX_READ_AHEAD {
        problems.push(format!(
            "tftp.read_ahead: 2 to {MAX_READ_AHEAD} blocks, or 0 to turn read-ahead off (one block \
             ahead leaves each block's two round trips in series: nothing gained)"
        ));
    }
    TftpConfig {
        listen,
        setup_timeout: raw.setup_timeout,
        stall_timeout: raw.stall_timeout,
        setup_attempts: raw.setup_attempts,
        idle_timeout: raw.idle_timeout,
        max_sessions: raw.max_sessions,
        shutdown_grace: raw.shutdown_grace,
        default_pool: raw.default_pool.unwrap_or_default(),
        mac_memory: raw.mac_memory,
        neighbour_lookup: raw.neighbour_lookup,
        read_ahead: raw.read_ahead,
    }
}

/// More blocks ahead buy nothing for lock-step and cost memory in every session.
const MAX_READ_AHEAD: u16 = 64;

fn validate_pools(raw: Vec<RawPool>, problems: &mut Vec<String>) -> Vec<PoolConfig> {
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
        match crate::resolve::parse_host_port(&b.address) {
            Some((host, port)) => named.push(crate::resolve::NamedBackend {
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
        allow_write: raw.allow_write,
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

fn validate_health(key: &str, raw: RawHealth, problems: &mut Vec<String>) -> HealthConfig {
    if let Err(why) = crate::tftp::admission::check_filename(&raw.file) {
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

fn parse_addr(key: &str, text: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!("{key}: invalid socket address {text:?}"));
            None
        }
    }
}

fn check_unique(addrs: &[SocketAddr], key: &str, problems: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for a in addrs {
        if !seen.insert(a) {
            problems.push(format!("{key}: {a} is listed twice"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
