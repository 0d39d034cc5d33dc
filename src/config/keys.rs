//! Helpers every section's validation shares: parse a value, name the key path of a bad one.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub fn parse_addr(key: &str, text: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    match text.parse() {
        Ok(a) => Some(a),
        Err(_) => {
            problems.push(format!("{key}: invalid socket address {text:?}"));
            None
        }
    }
}

pub fn check_unique(addrs: &[SocketAddr], key: &str, problems: &mut Vec<String>) {
    let mut seen = HashSet::new();
    for a in addrs {
        if !seen.insert(a) {
            problems.push(format!("{key}: {a} is listed twice"));
        }
    }
}

/// Parses CIDRs (a bare address is a /32 or /128), naming each bad entry by its key path.
pub fn parse_nets(key: &str, items: &[String], problems: &mut Vec<String>) -> Vec<IpNet> {
    items
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            let parsed = s
                .parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from));
            parsed
                .map_err(|_| problems.push(format!("{key}[{i}]: invalid CIDR {s:?}")))
                .ok()
        })
        .collect()
}
