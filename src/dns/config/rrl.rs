//! `[dns.rrl]`: response-rate limiting for the zone's UDP answers, validated.
//!
//! Off unless the section is there, as in NSD, Knot and BIND. The option-66 name is mostly
//! asked by a few site resolvers, which `exempt` lets through; everyone else gets `rate`
//! answers per second per source prefix (/24, /56), and beyond it every `slip`-th answer goes
//! out truncated so a real resolver retries over TCP, which cannot be spoofed. The limiter that
//! applies it is `dns::rrl`.

use ipnet::IpNet;
use serde::Deserialize;

use crate::config::keys::parse_nets;

/// A validated `[dns.rrl]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RrlConfig {
    /// Answers per second to one source prefix; also the burst it may take at once.
    pub rate: u32,
    /// Every `slip`-th answer over the rate is sent truncated (TC) instead of dropped; 0 never.
    pub slip: u32,
    /// Sources are counted together per prefix of this length.
    pub ipv4_prefix: u8,
    pub ipv6_prefix: u8,
    /// Sources never limited (the site's resolvers).
    pub exempt: Vec<IpNet>,
    /// Count and log what would be limited; answer everything.
    pub log_only: bool,
    /// Prefixes tracked at once: the limiter's memory is fixed at this many slots.
    pub table_size: usize,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRrl {
    #[serde(default = "default_rate")]
    rate: u32,
    #[serde(default = "default_slip")]
    slip: u32,
    #[serde(default = "default_ipv4_prefix")]
    ipv4_prefix: u8,
    #[serde(default = "default_ipv6_prefix")]
    ipv6_prefix: u8,
    #[serde(default)]
    exempt: Vec<String>,
    #[serde(default)]
    log_only: bool,
    #[serde(default = "default_table_size")]
    table_size: usize,
}

/// NSD's default: a boot storm of a whole /24 asking at once stays under it.
fn default_rate() -> u32 {
    200
}
/// NSD's and BIND's: every second limited answer is a truncated one.
fn default_slip() -> u32 {
    2
}
fn default_ipv4_prefix() -> u8 {
    24
}
/// A site's usual allocation: one customer is one bucket.
fn default_ipv6_prefix() -> u8 {
    56
}
/// About 1 MiB of buckets.
fn default_table_size() -> usize {
    16_384
}

const MAX_RATE: u32 = 1_000_000;
const MAX_SLIP: u32 = 100;
const MAX_TABLE: usize = 1 << 24;

/// Checks `[dns.rrl]`; pushes every problem with its key path.
pub(crate) fn validate_rrl(raw: RawRrl, problems: &mut Vec<String>) -> RrlConfig {
    if !(1..=MAX_RATE).contains(&raw.rate) {
        problems.push(format!(
            "dns.rrl.rate: must be 1..={MAX_RATE} answers per second, not {}",
            raw.rate
        ));
    }
    if raw.slip > MAX_SLIP {
        problems.push(format!(
            "dns.rrl.slip: must be 0..={MAX_SLIP}, not {}",
            raw.slip
        ));
    }
    for (key, len, max) in [
        ("ipv4_prefix", raw.ipv4_prefix, 32),
        ("ipv6_prefix", raw.ipv6_prefix, 128),
    ] {
        if !(1..=max).contains(&len) {
            problems.push(format!("dns.rrl.{key}: must be 1..={max}, not {len}"));
        }
    }
    if !(1..=MAX_TABLE).contains(&raw.table_size) {
        problems.push(format!(
            "dns.rrl.table_size: must be 1..={MAX_TABLE}, not {}",
            raw.table_size
        ));
    }
    RrlConfig {
        rate: raw.rate,
        slip: raw.slip,
        ipv4_prefix: raw.ipv4_prefix,
        ipv6_prefix: raw.ipv6_prefix,
        exempt: parse_nets("dns.rrl.exempt", &raw.exempt, problems),
        log_only: raw.log_only,
        table_size: raw.table_size,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    const BASE: &str = "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"10.0.0.1:69\"\n\
                        [dns]\nzone = \"boot.test.\"\n";

    fn parse(rrl: &str) -> Result<Config, String> {
        Config::parse(&format!("{BASE}{rrl}")).map_err(|e| e.to_string())
    }

    #[test]
    fn off_without_the_section_and_defaults_with_it() {
        let c = parse("").unwrap();
        assert_eq!(c.dns.unwrap().rrl, None);
        let c = parse("[dns.rrl]\n").unwrap();
        let r = c.dns.unwrap().rrl.expect("on");
        assert_eq!(
            (r.rate, r.slip, r.ipv4_prefix, r.ipv6_prefix),
            (200, 2, 24, 56)
        );
        assert!(r.exempt.is_empty() && !r.log_only);
        assert_eq!(r.table_size, 16_384);
    }

    #[test]
    fn exempt_takes_cidrs_and_bare_addresses() {
        let c = parse("[dns.rrl]\nexempt = [\"10.1.0.0/16\", \"2001:db8::53\"]\nlog_only = true\n")
            .unwrap();
        let r = c.dns.unwrap().rrl.unwrap();
        let exempt: Vec<String> = r.exempt.iter().map(|n| n.to_string()).collect();
        assert_eq!(exempt, ["10.1.0.0/16", "2001:db8::53/128"]);
        assert!(r.log_only);
    }

    #[test]
    fn every_problem_is_named_by_its_key_path() {
        let e = parse(
            "[dns.rrl]\nrate = 0\nslip = 101\nipv4_prefix = 33\nipv6_prefix = 0\n\
             table_size = 0\nexempt = [\"10.0.0.0/40\"]\n",
        )
        .unwrap_err();
        for needle in [
            "dns.rrl.rate: must be 1..=",
            "dns.rrl.slip: must be 0..=100",
            "dns.rrl.ipv4_prefix: must be 1..=32",
            "dns.rrl.ipv6_prefix: must be 1..=128",
            "dns.rrl.table_size: must be 1..=",
            "dns.rrl.exempt[0]: invalid CIDR",
        ] {
            assert!(e.contains(needle), "{needle:?} missing in:\n{e}");
        }
        let e = parse("[dns.rrl]\nresponses_per_second = 5\n").unwrap_err();
        assert!(e.contains("responses_per_second"), "{e}");
    }
}
