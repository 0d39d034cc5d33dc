//! The `[dns]` section: raw serde structs, their validation, and the typed [`DnsConfig`].
//!
//! Kept apart from `src/config/mod.rs` so that file only gains one field and one call, and free of
//! hickory: names are checked and normalised here as plain lowercase strings ending in a dot
//! (`pvs.boot.example.internal.`), and `src/dns/zone.rs` turns them into hickory names. A name
//! written without a trailing dot is relative to the zone (`"pvs"`), `"@"` is the apex.
//! `[dns.rrl]`, the response-rate limit, has a file of its own ([`rrl`]).

pub mod rrl;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use serde::Deserialize;

use crate::health::config::{AdminState, HealthConfig, RawHealth, validate_health};
use crate::pool::config::{Affinity, AllDown, BackendConfig, Balance, PoolConfig};
use rrl::{RawRrl, RrlConfig, validate_rrl};

/// A validated `[dns]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub listen: Vec<SocketAddr>,
    /// The zone apex, lowercase, ending in a dot.
    pub zone: String,
    pub ttl: Duration,
    pub degraded_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_answers: usize,
    /// NS records of the apex, absolute.
    pub nameservers: Vec<String>,
    /// The SOA RNAME (mailbox as a name), absolute.
    pub hostmaster: String,
    pub tcp_timeout: Duration,
    pub names: Vec<DnsName>,
    pub records: Vec<DnsRecord>,
    /// Response-rate limiting of UDP answers; `None` (off) unless `[dns.rrl]` is given.
    pub rrl: Option<RrlConfig>,
}

/// A balanced name: answered from live health, rotating.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsName {
    /// Absolute, lowercase.
    pub name: String,
    pub source: NameSource,
    pub when_all_down: DnsAllDown,
    pub fallback: Vec<IpAddr>,
    /// For `addresses`: probe each on `port` with a TFTP download, as backends are
    /// (`[dns.name.health]`), and answer only the ones that pass.
    pub probe: Option<AddressProbe>,
}

/// How the fixed addresses of a name (tftplb front ends) are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressProbe {
    pub health: HealthConfig,
    /// The TFTP port the probes ask (`probe_port`, 69 unless a test says otherwise).
    pub port: u16,
}

impl DnsName {
    /// The name of [`DnsName::probed_pool`] (the runtime finds it by this name).
    pub fn probed_pool_name(&self) -> String {
        format!("dns:{}", self.name)
    }

    /// The pool that probes this name's addresses, when it has `[dns.name.health]`: one
    /// backend per address, named after the DNS name. It is not in `[[pool]]`, so no
    /// transfer is ever routed to it; the probers and the DNS read its health.
    pub fn probed_pool(&self) -> Option<PoolConfig> {
        let (NameSource::Addresses(ips), Some(probe)) = (&self.source, &self.probe) else {
            return None;
        };
        let backends = ips
            .iter()
            .map(|&ip| BackendConfig {
                address: SocketAddr::new(ip, probe.port),
                weight: 1,
                state: AdminState::Enabled,
                max_sessions: 0,
            })
            .collect();
        Some(PoolConfig {
            name: self.probed_pool_name(),
            balance: Balance::RoundRobin,
            affinity: Affinity::Transfer,
            affinity_ttl: Duration::ZERO,
            when_all_down: AllDown::Refuse,
            resume: false,
            health: Some(probe.health.clone()),
            named: Vec::new(),
            files: Vec::new(),
            ignore_case: false,
            allow_write: false,
            cache: None,
            backends,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameSource {
    /// The healthy backends of this pool.
    Pool(String),
    /// A fixed list (several tftplb front ends), rotated; probed with `[dns.name.health]`.
    Addresses(Vec<IpAddr>),
}

/// What a balanced name answers when none of its backends is healthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DnsAllDown {
    /// Every enabled, probed address: a boot that might work beats none.
    All,
    /// SERVFAIL: resolvers try again soon (and DHCP clients fall back to next-server).
    Servfail,
    /// The `fallback` addresses (a standby site, a tftplb front end).
    Fallback,
}

/// A static record of the zone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    /// Absolute, lowercase.
    pub name: String,
    pub data: RecordData,
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    /// Absolute target.
    Cname(String),
    Txt(String),
}

impl RecordData {
    pub fn type_str(&self) -> &'static str {
        match self {
            RecordData::A(_) => "A",
            RecordData::Aaaa(_) => "AAAA",
            RecordData::Cname(_) => "CNAME",
            RecordData::Txt(_) => "TXT",
        }
    }
}

// ---- raw ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDns {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    zone: String,
    #[serde(default = "default_ttl", with = "humantime_serde")]
    ttl: Duration,
    #[serde(default = "default_degraded_ttl", with = "humantime_serde")]
    degraded_ttl: Duration,
    #[serde(default = "default_negative_ttl", with = "humantime_serde")]
    negative_ttl: Duration,
    #[serde(default = "default_max_answers")]
    max_answers: usize,
    #[serde(default = "default_nameservers")]
    nameservers: Vec<String>,
    #[serde(default = "default_hostmaster")]
    hostmaster: String,
    #[serde(default = "default_tcp_timeout", with = "humantime_serde")]
    tcp_timeout: Duration,
    #[serde(default)]
    name: Vec<RawName>,
    #[serde(default)]
    record: Vec<RawRecord>,
    rrl: Option<RawRrl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawName {
    name: String,
    pool: Option<String>,
    addresses: Option<Vec<String>>,
    #[serde(default = "default_when_all_down")]
    when_all_down: DnsAllDown,
    #[serde(default)]
    fallback: Vec<String>,
    health: Option<RawHealth>,
    probe_port: Option<u16>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecord {
    name: String,
    #[serde(rename = "type")]
    kind: RawType,
    value: String,
    #[serde(default, with = "humantime_serde")]
    ttl: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
enum RawType {
    A,
    Aaaa,
    Cname,
    Txt,
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:53".to_string()]
}
/// Short enough that a failover reaches clients behind caching resolvers within seconds.
fn default_ttl() -> Duration {
    Duration::from_secs(10)
}
/// While the answer is not the full healthy set, ask caches to come back sooner.
fn default_degraded_ttl() -> Duration {
    Duration::from_secs(5)
}
/// How long resolvers cache "no such name" (SOA minimum).
fn default_negative_ttl() -> Duration {
    Duration::from_secs(10)
}
/// gdnsd's and PowerDNS's usual cap; 8 A records fit 512 bytes with room to spare.
fn default_max_answers() -> usize {
    8
}
fn default_nameservers() -> Vec<String> {
    vec!["ns".to_string()]
}
fn default_hostmaster() -> String {
    "hostmaster".to_string()
}
/// A TCP client that sends nothing for this long is disconnected.
fn default_tcp_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_when_all_down() -> DnsAllDown {
    DnsAllDown::All
}

// ---- validation ----

/// Checks `[dns]` against the pools; pushes every problem with its key path.
pub(crate) fn validate_dns(
    raw: RawDns,
    pools: &[PoolConfig],
    problems: &mut Vec<String>,
) -> DnsConfig {
    let zone = match absolute_name(&raw.zone, None) {
        Ok(z) => z,
        Err(why) => {
            problems.push(format!("dns.zone: {why}: {:?}", raw.zone));
            ".".to_string()
        }
    };
    if zone == "." {
        problems.push("dns.zone: the root zone cannot be served".into());
    }
    let listen = validate_listen(&raw.listen, problems);
    validate_ttls(&raw, problems);
    if raw.max_answers == 0 || raw.max_answers > 64 {
        problems.push(format!(
            "dns.max_answers: must be 1..=64, not {}",
            raw.max_answers
        ));
    }
    if raw.tcp_timeout.is_zero() {
        problems.push("dns.tcp_timeout: must be above 0".into());
    }
    let nameservers = names_in(&raw.nameservers, "dns.nameservers", &zone, problems);
    if nameservers.is_empty() {
        problems.push("dns.nameservers: at least one name server is needed".into());
    }
    let hostmaster =
        one_name(&raw.hostmaster, "dns.hostmaster", &zone, false, problems).unwrap_or_default();
    let names = validate_names(raw.name, &zone, pools, problems);
    let records = validate_records(raw.record, &zone, raw.ttl, problems);
    check_conflicts(&names, &records, &zone, problems);
    let rrl = raw.rrl.map(|r| validate_rrl(r, problems));
    DnsConfig {
        listen,
        zone,
        ttl: raw.ttl,
        degraded_ttl: raw.degraded_ttl,
        negative_ttl: raw.negative_ttl,
        max_answers: raw.max_answers,
        nameservers,
        hostmaster,
        tcp_timeout: raw.tcp_timeout,
        names,
        records,
        rrl,
    }
}

fn validate_listen(raw: &[String], problems: &mut Vec<String>) -> Vec<SocketAddr> {
    if raw.is_empty() {
        problems.push("dns.listen: at least one address is needed".into());
    }
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<SocketAddr>() {
            Ok(addr) if !seen.insert(addr) => {
                problems.push(format!("dns.listen: {addr} is listed twice"));
                None
            }
            Ok(addr) => Some(addr),
            Err(_) => {
                problems.push(format!("dns.listen[{i}]: invalid socket address {a:?}"));
                None
            }
        })
        .collect()
}

fn validate_ttls(raw: &RawDns, problems: &mut Vec<String>) {
    let one = Duration::from_secs(1);
    for (key, v) in [
        ("ttl", raw.ttl),
        ("degraded_ttl", raw.degraded_ttl),
        ("negative_ttl", raw.negative_ttl),
    ] {
        // Caches treat 0 as "do not cache" and some clamp sub-second values to 0.
        if v < one {
            problems.push(format!("dns.{key}: must be at least 1s, not {v:?}"));
        }
        if v.as_secs() > u64::from(u32::MAX >> 1) {
            problems.push(format!("dns.{key}: too long"));
        }
    }
    if raw.degraded_ttl > raw.ttl {
        problems.push("dns.degraded_ttl: must not be longer than dns.ttl".into());
    }
}

/// Normalises each of `raw`; see [`one_name`].
fn names_in(raw: &[String], key: &str, zone: &str, problems: &mut Vec<String>) -> Vec<String> {
    raw.iter()
        .enumerate()
        .filter_map(|(i, n)| one_name(n, &format!("{key}[{i}]"), zone, false, problems))
        .collect()
}

/// `raw` made absolute (relative to `zone` unless it ends in a dot); with `inside`, it must be
/// in the zone.
fn one_name(
    raw: &str,
    key: &str,
    zone: &str,
    inside: bool,
    problems: &mut Vec<String>,
) -> Option<String> {
    match absolute_name(raw, Some(zone)) {
        Ok(a) if inside && !in_zone(&a, zone) => {
            problems.push(format!("{key}: {a:?} is not inside the zone {zone:?}"));
            None
        }
        Ok(a) => Some(a),
        Err(why) => {
            problems.push(format!("{key}: {why}: {raw:?}"));
            None
        }
    }
}

fn validate_names(
    raw: Vec<RawName>,
    zone: &str,
    pools: &[PoolConfig],
    problems: &mut Vec<String>,
) -> Vec<DnsName> {
    let mut seen = HashSet::new();
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, n)| {
            let key = format!("dns.name[{i}]");
            let name = one_name(&n.name, &format!("{key}.name"), zone, true, problems)?;
            if !seen.insert(name.clone()) {
                problems.push(format!("{key}.name: {name:?} is listed twice"));
            }
            let source = match (n.pool, n.addresses) {
                (Some(p), None) => {
                    if !pools.iter().any(|c| c.name == p) {
                        problems.push(format!("{key}.pool: no [[pool]] is named {p:?}"));
                    }
                    NameSource::Pool(p)
                }
                (None, Some(a)) => {
                    if a.is_empty() {
                        problems.push(format!("{key}.addresses: at least one is needed"));
                    }
                    NameSource::Addresses(ips(&a, &format!("{key}.addresses"), problems))
                }
                _ => {
                    problems.push(format!("{key}: give exactly one of pool, addresses"));
                    return None;
                }
            };
            let fallback = ips(&n.fallback, &format!("{key}.fallback"), problems);
            match n.when_all_down {
                DnsAllDown::Fallback if fallback.is_empty() => problems.push(format!(
                    "{key}.fallback: at least one address is needed with when_all_down = \"fallback\""
                )),
                DnsAllDown::All | DnsAllDown::Servfail if !fallback.is_empty() => {
                    problems.push(format!(
                        "{key}.fallback: only used with when_all_down = \"fallback\""
                    ))
                }
                _ => {}
            }
            let probe = address_probe(&key, &source, n.health, n.probe_port, problems);
            Some(DnsName {
                name,
                source,
                when_all_down: n.when_all_down,
                fallback,
                probe,
            })
        })
        .collect()
}

/// `[dns.name.health]` and `probe_port`, which only a name with `addresses` takes: a pool's
/// backends are probed by `[pool.health]`.
fn address_probe(
    key: &str,
    source: &NameSource,
    health: Option<RawHealth>,
    port: Option<u16>,
    problems: &mut Vec<String>,
) -> Option<AddressProbe> {
    let Some(raw) = health else {
        if port.is_some() {
            problems.push(format!("{key}.probe_port: only used with [{key}.health]"));
        }
        return None;
    };
    if let NameSource::Pool(_) = source {
        problems.push(format!(
            "{key}.health: only for addresses (a pool's backends are probed by its [pool.health])"
        ));
        return None;
    }
    let health = validate_health(&format!("{key}.health"), raw, problems);
    if port == Some(0) {
        problems.push(format!("{key}.probe_port: must be above 0"));
    }
    Some(AddressProbe {
        health,
        port: port.unwrap_or(69),
    })
}

fn ips(raw: &[String], key: &str, problems: &mut Vec<String>) -> Vec<IpAddr> {
    let mut seen = HashSet::new();
    raw.iter()
        .enumerate()
        .filter_map(|(i, a)| match a.parse::<IpAddr>() {
            Ok(ip) if !seen.insert(ip) => {
                problems.push(format!("{key}: {ip} is listed twice"));
                None
            }
            Ok(ip) => Some(ip),
            Err(_) => {
                problems.push(format!("{key}[{i}]: invalid IP address {a:?}"));
                None
            }
        })
        .collect()
}

fn validate_records(
    raw: Vec<RawRecord>,
    zone: &str,
    ttl: Duration,
    problems: &mut Vec<String>,
) -> Vec<DnsRecord> {
    raw.into_iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let key = format!("dns.record[{i}]");
            let name = one_name(&r.name, &format!("{key}.name"), zone, true, problems)?;
            if r.ttl.is_some_and(|t| t < Duration::from_secs(1)) {
                problems.push(format!("{key}.ttl: must be at least 1s"));
            }
            let value_key = format!("{key}.value");
            let data = match r.kind {
                RawType::A => r.value.parse().ok().map(RecordData::A),
                RawType::Aaaa => r.value.parse().ok().map(RecordData::Aaaa),
                RawType::Cname => absolute_name(&r.value, Some(zone))
                    .ok()
                    .map(RecordData::Cname),
                RawType::Txt if r.value.len() <= 255 => Some(RecordData::Txt(r.value.clone())),
                RawType::Txt => None,
            };
            let Some(data) = data else {
                problems.push(format!(
                    "{value_key}: not a valid {:?} value: {:?}",
                    r.kind, r.value
                ));
                return None;
            };
            Some(DnsRecord {
                name,
                data,
                ttl: r.ttl.unwrap_or(ttl),
            })
        })
        .collect()
}

/// A CNAME owns its name alone (RFC 1034 3.6.2), and the apex cannot be one; a balanced name
/// carries no static addresses.
fn check_conflicts(
    names: &[DnsName],
    records: &[DnsRecord],
    zone: &str,
    problems: &mut Vec<String>,
) {
    let mut types: HashMap<&str, Vec<&'static str>> = HashMap::new();
    for n in names {
        types.entry(&n.name).or_default().push("balanced name");
    }
    for r in records {
        types.entry(&r.name).or_default().push(r.data.type_str());
    }
    for (name, kinds) in &types {
        let cnames = kinds.iter().filter(|k| **k == "CNAME").count();
        if cnames > 0 && (kinds.len() > 1 || *name == zone) {
            problems.push(format!(
                "dns.record: {name:?}: a CNAME cannot share its name with other records or be the apex ({})",
                kinds.join(", ")
            ));
        }
        if kinds.contains(&"balanced name") && kinds.iter().any(|k| *k == "A" || *k == "AAAA") {
            problems.push(format!(
                "dns.record: {name:?} is a balanced [[dns.name]]; it cannot also have static A/AAAA records"
            ));
        }
    }
}

/// `name` made absolute (relative names are under `origin`; `"@"` is `origin`), lowercase,
/// with a trailing dot; or why it is not a valid host name.
pub fn absolute_name(name: &str, origin: Option<&str>) -> Result<String, &'static str> {
    let name = name.trim();
    let full = match (name, origin) {
        ("@", Some(o)) => o.to_string(),
        ("", _) => return Err("empty name"),
        (n, _) if n.ends_with('.') => n.to_string(),
        (n, Some(".")) => format!("{n}."),
        (n, Some(o)) => format!("{n}.{o}"),
        (n, None) => format!("{n}."),
    };
    let full = full.to_ascii_lowercase();
    if full == "." {
        return Ok(full);
    }
    if full.len() > 254 {
        return Err("longer than 253 characters");
    }
    for label in full.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err("each label must be 1..=63 characters");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err("only letters, digits, '-' and '_' are allowed");
        }
    }
    Ok(full)
}

/// Is absolute `name` at or below absolute `zone`?
pub fn in_zone(name: &str, zone: &str) -> bool {
    zone == "." || name == zone || name.ends_with(&format!(".{zone}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const POOL: &str = "[[pool]]\nname = \"pvs\"\n[[pool.backend]]\naddress = \"10.0.0.11:69\"\n";

    fn parse(dns: &str) -> Result<Config, String> {
        Config::parse(&format!("{POOL}\n{dns}")).map_err(|e| e.to_string())
    }

    #[test]
    fn names_are_made_absolute_and_lowercase() {
        let z = "boot.example.internal.";
        assert_eq!(
            absolute_name("PVS", Some(z)).unwrap(),
            "pvs.boot.example.internal."
        );
        assert_eq!(absolute_name("@", Some(z)).unwrap(), z);
        assert_eq!(absolute_name("Boot.Example.Internal", None).unwrap(), z);
        assert!(absolute_name("a..b", Some(z)).is_err());
        assert!(absolute_name("bad name", Some(z)).is_err());
        assert!(in_zone("pvs.boot.example.internal.", z));
        assert!(!in_zone("xboot.example.internal.", z));
    }

    #[test]
    fn a_full_section_parses_with_defaults() {
        let c = parse(
            r#"
            [dns]
            listen = ["127.0.0.1:5353"]
            zone = "Boot.Example.Internal"
            [[dns.name]]
            name = "pvs"
            pool = "pvs"
            [[dns.name]]
            name = "tftp"
            addresses = ["192.0.2.10", "2001:db8::10"]
            when_all_down = "fallback"
            fallback = ["192.0.2.99"]
            [[dns.record]]
            name = "ns"
            type = "A"
            value = "192.0.2.1"
            [[dns.record]]
            name = "boot"
            type = "CNAME"
            value = "pvs"
            "#,
        )
        .unwrap();
        let d = c.dns.unwrap();
        assert_eq!(d.zone, "boot.example.internal.");
        assert_eq!(d.ttl, Duration::from_secs(10));
        assert_eq!(d.degraded_ttl, Duration::from_secs(5));
        assert_eq!(d.max_answers, 8);
        assert_eq!(d.nameservers, vec!["ns.boot.example.internal."]);
        assert_eq!(d.hostmaster, "hostmaster.boot.example.internal.");
        assert_eq!(d.names[0].source, NameSource::Pool("pvs".into()));
        assert_eq!(d.names[0].when_all_down, DnsAllDown::All);
        assert_eq!(
            d.records[1].data,
            RecordData::Cname("pvs.boot.example.internal.".into())
        );
    }

    #[test]
    fn probed_addresses_become_a_pool_no_transfer_is_routed_to() {
        let c = parse(
            r#"
            [dns]
            listen = ["127.0.0.1:5353"]
            zone = "boot.example.internal."
            [[dns.name]]
            name = "tftp"
            addresses = ["192.0.2.10", "192.0.2.20"]
            probe_port = 6969
            [dns.name.health]
            file = "ARDBP32.BIN"
            rise = 1
            "#,
        )
        .unwrap();
        let name = &c.dns.as_ref().unwrap().names[0];
        let probe = name.probe.as_ref().unwrap();
        assert_eq!((probe.port, probe.health.rise), (6969, 1));
        let pool = name.probed_pool().unwrap();
        assert_eq!(pool.name, "dns:tftp.boot.example.internal.");
        let backends: Vec<String> = pool
            .backends
            .iter()
            .map(|b| b.address.to_string())
            .collect();
        assert_eq!(backends, ["192.0.2.10:6969", "192.0.2.20:6969"]);
        assert!(
            !c.pools.iter().any(|p| p.name.starts_with("dns:")),
            "not routable"
        );
        let port = parse(
            "[dns]\nzone = \"z.\"\n[[dns.name]]\nname = \"a\"\naddresses = [\"192.0.2.1\"]\n\
             [dns.name.health]\nfile = \"f\"\n",
        )
        .unwrap();
        assert_eq!(port.dns.unwrap().names[0].probe.as_ref().unwrap().port, 69);
    }

    #[test]
    fn only_addresses_take_a_probe() {
        let e = parse(
            r#"
            [dns]
            zone = "boot.example.internal."
            [[dns.name]]
            name = "pvs"
            pool = "pvs"
            [dns.name.health]
            file = "ARDBP32.BIN"
            [[dns.name]]
            name = "tftp"
            addresses = ["192.0.2.10"]
            probe_port = 69
            "#,
        )
        .unwrap_err();
        assert!(e.contains("dns.name[0].health: only for addresses"), "{e}");
        assert!(
            e.contains("dns.name[1].probe_port: only used with [dns.name[1].health]"),
            "{e}"
        );
    }

    #[test]
    fn every_dns_problem_is_named_by_its_key_path() {
        let e = parse(
            r#"
            [dns]
            listen = ["nonsense"]
            zone = "boot.example.internal."
            ttl = "10s"
            degraded_ttl = "0s"
            max_answers = 0
            [[dns.name]]
            name = "pvs"
            pool = "nope"
            [[dns.name]]
            name = "other.example.com."
            addresses = ["192.0.2.1"]
            [[dns.name]]
            name = "both"
            when_all_down = "fallback"
            addresses = ["192.0.2.1"]
            [[dns.record]]
            name = "x"
            type = "A"
            value = "not-an-ip"
            [[dns.record]]
            name = "pvs"
            type = "CNAME"
            value = "y"
            "#,
        )
        .unwrap_err();
        for needle in [
            "dns.listen[0]: invalid socket address",
            "dns.degraded_ttl: must be at least 1s",
            "dns.max_answers: must be 1..=64",
            "dns.name[0].pool: no [[pool]] is named \"nope\"",
            "dns.name[1].name: \"other.example.com.\" is not inside the zone",
            "dns.name[2].fallback: at least one address is needed",
            "dns.record[0].value: not a valid A value",
            "a CNAME cannot share its name",
        ] {
            assert!(e.contains(needle), "{needle:?} missing in:\n{e}");
        }
    }

    #[test]
    fn unknown_dns_keys_are_refused() {
        let e = parse("[dns]\nzone = \"z.\"\nttl_seconds = 3\n").unwrap_err();
        assert!(e.contains("ttl_seconds"), "{e}");
        let e = parse(
            "[dns]\nzone = \"z.\"\n[[dns.record]]\nname = \"a\"\ntype = \"MX\"\nvalue = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("MX"), "{e}");
    }
}
