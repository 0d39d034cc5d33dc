//! `[proxy_dhcp]`: where the PXE service listens (an IPv4 address per boot segment: its
//! interface's broadcasts on port 67, and the address itself on port 4011), what it advertises
//! as next-server, and the bounds of its state. Which machines get which file is the routes'
//! business (`route::boot`).

use std::net::Ipv4Addr;

use serde::Deserialize;

/// `[proxy_dhcp]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProxyDhcp {
    #[serde(default = "default_enabled")]
    enabled: bool,
    #[serde(default)]
    listen: Vec<String>,
    advertise: Option<String>,
    #[serde(default = "default_port")]
    port: u16,
    #[serde(default = "default_pxe_port")]
    pxe_port: u16,
    #[serde(default = "default_max_clients")]
    max_clients: usize,
    #[serde(default = "default_max_pending")]
    max_pending: usize,
}

/// A `[proxy_dhcp]` section serves unless it says `enabled = false`.
fn default_enabled() -> bool {
    true
}

/// DHCP's server port, where PXE clients broadcast their DISCOVER.
fn default_port() -> u16 {
    67
}

/// The PXE boot server port, where clients send their DHCPREQUEST for the boot file.
fn default_pxe_port() -> u16 {
    4011
}

/// PXE machines remembered for the status page and `/api/pxe/clients` (least recently seen
/// forgotten first).
fn default_max_clients() -> usize {
    4096
}

/// Delayed answers waiting at most, per interface; a flood beyond it is dropped and counted.
fn default_max_pending() -> usize {
    1024
}

/// Validated `[proxy_dhcp]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyDhcpConfig {
    pub enabled: bool,
    /// Addresses of this host, one per boot segment (an address names its interface).
    pub listen: Vec<Ipv4Addr>,
    /// The next-server clients are told; `None`: the address the request came in on.
    pub advertise: Option<Ipv4Addr>,
    pub port: u16,
    pub pxe_port: u16,
    pub max_clients: usize,
    pub max_pending: usize,
}

impl RawProxyDhcp {
    pub fn validate(self, problems: &mut Vec<String>) -> ProxyDhcpConfig {
        let mut listen = Vec::new();
        for (i, a) in self.listen.iter().enumerate() {
            match a.parse::<Ipv4Addr>() {
                Ok(ip) if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() => {
                    problems.push(format!(
                        "proxy_dhcp.listen[{i}]: {ip} names no interface; give this host's address on the boot segment"
                    ))
                }
                Ok(ip) if listen.contains(&ip) => {
                    problems.push(format!("proxy_dhcp.listen[{i}]: {ip} is given twice"))
                }
                Ok(ip) => listen.push(ip),
                Err(_) => problems.push(format!(
                    "proxy_dhcp.listen[{i}]: invalid IPv4 address {a:?}"
                )),
            }
        }
        if self.enabled && self.listen.is_empty() {
            problems.push("proxy_dhcp.listen: give at least one address of this host".into());
        }
        let advertise = self.advertise.as_deref().and_then(|a| {
            a.parse::<Ipv4Addr>()
                .map_err(|_| {
                    problems.push(format!("proxy_dhcp.advertise: invalid IPv4 address {a:?}"))
                })
                .ok()
        });
        if self.port == self.pxe_port && self.port != 0 {
            problems.push(format!(
                "proxy_dhcp.pxe_port: must differ from port ({})",
                self.port
            ));
        }
        for (key, n) in [
            ("max_clients", self.max_clients),
            ("max_pending", self.max_pending),
        ] {
            if n == 0 {
                problems.push(format!("proxy_dhcp.{key}: must be at least 1"));
            }
        }
        ProxyDhcpConfig {
            enabled: self.enabled,
            listen,
            advertise,
            port: self.port,
            pxe_port: self.pxe_port,
            max_clients: self.max_clients,
            max_pending: self.max_pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<ProxyDhcpConfig, Vec<String>> {
        let raw: RawProxyDhcp = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let c = raw.validate(&mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn defaults_are_the_pxe_ports() {
        let c = check("listen = [\"10.77.0.1\"]").unwrap();
        assert!(c.enabled);
        assert_eq!((c.port, c.pxe_port), (67, 4011));
        assert_eq!(c.advertise, None);
    }

    #[test]
    fn problems_are_named_by_key() {
        let p = check("listen = [\"0.0.0.0\", \"x\", \"10.0.0.1\", \"10.0.0.1\"]\nadvertise = \"y\"\nmax_pending = 0").unwrap_err();
        assert!(
            p[0].starts_with("proxy_dhcp.listen[0]: 0.0.0.0 names no interface"),
            "{p:?}"
        );
        assert!(p[1].starts_with("proxy_dhcp.listen[1]: invalid"), "{p:?}");
        assert!(
            p[2].starts_with("proxy_dhcp.listen[3]: 10.0.0.1 is given twice"),
            "{p:?}"
        );
        assert!(p[3].starts_with("proxy_dhcp.advertise"), "{p:?}");
        assert!(p[4].starts_with("proxy_dhcp.max_pending"), "{p:?}");
        let p = check("").unwrap_err();
        assert!(
            p[0].starts_with("proxy_dhcp.listen: give at least one"),
            "{p:?}"
        );
        assert!(check("enabled = false").is_ok());
        let p = check("listen = [\"10.0.0.1\"]\npxe_port = 67").unwrap_err();
        assert!(
            p[0].starts_with("proxy_dhcp.pxe_port: must differ"),
            "{p:?}"
        );
    }
}
