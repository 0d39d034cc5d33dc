//! Routing: an ordered list of rules sends each request to a pool, refuses it, or ignores it
//! (stays silent so another PXE server on the segment answers). The first rule whose every
//! given condition matches decides; no match goes to the default pool.
//!
//! Conditions: client CIDRs, filename globs, and MAC patterns. tftplb learns a client's MAC
//! from the names it asks for (pxelinux's `pxelinux.cfg/01-aa-bb-cc-dd-ee-ff`, iPXE-style
//! `aa:bb:cc:dd:ee:ff` or `aabbccddeeff` path segments) and remembers it for that client IP for
//! `mac_memory`, so the kernel and initrd that follow take the same rule. With
//! `neighbour_lookup`, it also reads the kernel's neighbour table for on-link IPv4 clients.
//! A rule with `macs` never matches a client whose MAC is unknown.

pub mod boot;
pub mod config;

use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lru::LruCache;

pub use config::{Mac, MacPattern, OptionsPolicy, RouteConfig, Target};

use crate::pool::config::PoolConfig;
use crate::protocol::names::NameGlobs;

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// To this pool; `rule` is the index of the rule that decided, `None` for the default.
    Pool {
        pool: String,
        rule: Option<usize>,
    },
    Refuse {
        rule: usize,
    },
    Ignore {
        rule: usize,
    },
}

/// The rules in force, with their hit counters.
#[derive(Debug)]
pub struct Router {
    rules: Vec<Rule>,
    default_pool: String,
    neighbour_lookup: bool,
}

#[derive(Debug)]
struct Rule {
    cfg: RouteConfig,
    files: Option<NameGlobs>,
    hits: AtomicU64,
}

impl Router {
    /// The rules of `routes`; `pools` tell which pools ignore case (for rules that do not say).
    pub fn new(
        routes: &[RouteConfig],
        pools: &[PoolConfig],
        default_pool: &str,
        neighbour_lookup: bool,
    ) -> Router {
        let rules = routes
            .iter()
            .map(|r| Rule {
                cfg: r.clone(),
                files: NameGlobs::new(&r.files, rule_ignores_case(r, pools)),
                hits: AtomicU64::new(0),
            })
            .collect();
        Router {
            rules,
            default_pool: default_pool.to_string(),
            neighbour_lookup,
        }
    }

    /// The first matching rule's decision, or the default pool. `mac` is what is known of the
    /// client's MAC; the neighbour table is read only when a rule needs a MAC.
    pub fn decide(&self, client: IpAddr, name: &[u8], mac: Option<Mac>) -> Decision {
        let mut mac = mac;
        let mut looked_up = false;
        for (i, rule) in self.rules.iter().enumerate() {
            // The neighbour table, where it knows the client, beats what its names claim.
            if !rule.cfg.macs.is_empty() && !looked_up && self.neighbour_lookup {
                looked_up = true;
                mac = neighbour_mac(client).or(mac);
            }
            if rule.matches(client, name, mac.as_ref()) {
                rule.hits.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(crate::metrics::ROUTE_HITS, "route" => rule.cfg.name.clone())
                    .increment(1);
                return match &rule.cfg.target {
                    Target::Pool(p) => Decision::Pool {
                        pool: p.clone(),
                        rule: Some(i),
                    },
                    Target::Refuse => Decision::Refuse { rule: i },
                    Target::Ignore => Decision::Ignore { rule: i },
                };
            }
        }
        Decision::Pool {
            pool: self.default_pool.clone(),
            rule: None,
        }
    }

    /// (name, hits) of every rule, for the status page.
    pub fn hits(&self) -> Vec<(String, u64)> {
        self.rules
            .iter()
            .map(|r| (r.cfg.name.clone(), r.hits.load(Ordering::Relaxed)))
            .collect()
    }

    /// The options policy of the rule that decided (`None`: the default pool, no policy).
    pub fn options_of(&self, rule: Option<usize>) -> Option<&OptionsPolicy> {
        let options = &self.rules.get(rule?)?.cfg.options;
        (!options.is_empty()).then_some(options)
    }

    pub fn has_mac_rules(&self) -> bool {
        self.rules.iter().any(|r| !r.cfg.macs.is_empty())
    }
}

impl Rule {
    fn matches(&self, client: IpAddr, name: &[u8], mac: Option<&Mac>) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        (self.cfg.clients.is_empty() || self.cfg.clients.iter().any(|n| n.contains(&client)))
            && self.files.as_ref().is_none_or(|g| g.matches(name))
            && (self.cfg.macs.is_empty()
                || mac.is_some_and(|m| self.cfg.macs.iter().any(|p| p.matches(m))))
    }
}

/// Whether a rule's `files` ignore case: as it says; else a refuse or ignore rule does (a deny
/// must not be walked around by case), and a rule to a pool does when the pool does.
fn rule_ignores_case(rule: &RouteConfig, pools: &[PoolConfig]) -> bool {
    rule.ignore_case.unwrap_or_else(|| match &rule.target {
        Target::Pool(name) => pools.iter().any(|p| &p.name == name && p.ignore_case),
        Target::Refuse | Target::Ignore => true,
    })
}

/// The MAC a requested (normalised) name reveals: pxelinux `01-aa-bb-cc-dd-ee-ff` (ARP type 1
/// prefix), or a path segment that is a MAC with `:`/`-` separators or 12 bare hex digits
/// (iPXE `${net0/mac}`).
pub fn mac_in_filename(name: &[u8]) -> Option<Mac> {
    name.split(|&b| b == b'/').find_map(|seg| {
        let seg = std::str::from_utf8(seg).ok()?;
        let seg = seg.split('.').next().unwrap_or(seg);
        let seg = seg
            .strip_prefix("01-")
            .filter(|s| s.len() == 17)
            .unwrap_or(seg);
        parse_mac(seg)
    })
}

fn parse_mac(s: &str) -> Option<Mac> {
    let hex: String = match s.len() {
        17 if s.split([':', '-']).count() == 6 => s.split([':', '-']).collect(),
        12 => s.to_string(),
        _ => return None,
    };
    let mut mac = [0u8; 6];
    for (i, m) in mac.iter_mut().enumerate() {
        *m = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(mac)
}

/// The kernel's neighbour entry for an on-link IPv4 client (`/proc/net/arp`, complete entries).
pub fn neighbour_mac(client: IpAddr) -> Option<Mac> {
    let text = std::fs::read_to_string("/proc/net/arp").ok()?;
    let ip = client.to_string();
    text.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 4 && f[0] == ip && f[2] == "0x2")
            .then(|| parse_mac(f[3]))
            .flatten()
    })
}

/// MACs learned from requests, per client IP, for `mac_memory`. Names are the client's word
/// (any source may claim any MAC in a name), so a name's MAC is remembered only once the route
/// decision admitted the request, and the table holds at most `mac_memory_max` clients: the
/// least recently used are forgotten first, and each one forgotten is counted.
#[derive(Debug)]
pub struct MacMemory {
    seen: Mutex<LruCache<IpAddr, (Mac, Instant)>>,
}

impl Default for MacMemory {
    fn default() -> Self {
        MacMemory {
            seen: Mutex::new(LruCache::unbounded()),
        }
    }
}

impl MacMemory {
    /// What is known of the client's MAC: the one `filename` reveals, else the one remembered
    /// (unexpired). Remembers nothing.
    pub fn recall(&self, client: IpAddr, filename: &[u8]) -> Option<Mac> {
        if let Some(mac) = mac_in_filename(filename) {
            return Some(mac);
        }
        let now = Instant::now();
        let mut seen = self.lock();
        let (mac, until) = *seen.get(&client)?;
        (until > now).then_some(mac)
    }

    /// Remembers the MAC `filename` reveals for `ttl` (call it once the request is admitted),
    /// forgetting the least recently used clients beyond `max`.
    pub fn remember(&self, client: IpAddr, filename: &[u8], ttl: Duration, max: usize) {
        let Some(mac) = mac_in_filename(filename) else {
            return;
        };
        let mut seen = self.lock();
        seen.put(client, (mac, Instant::now() + ttl));
        let mut evicted = 0;
        while seen.len() > max.max(1) {
            seen.pop_lru();
            evicted += 1;
        }
        crate::metrics::mac_memory(seen.len(), evicted);
    }

    /// Clients remembered now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn expire(&self, now: Instant) {
        let mut seen = self.lock();
        let stale: Vec<IpAddr> = seen
            .iter()
            .filter(|(_, (_, until))| *until <= now)
            .map(|(ip, _)| *ip)
            .collect();
        for ip in stale {
            seen.pop(&ip);
        }
        crate::metrics::mac_memory(seen.len(), 0);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<IpAddr, (Mac, Instant)>> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::config::{RawRoute, warnings};
    use super::*;
    use crate::protocol::names::normalise;

    fn route(toml_text: &str, pools: &[&str]) -> Result<RouteConfig, Vec<String>> {
        let raw: RawRoute = toml::from_str(toml_text).unwrap();
        let pools: Vec<String> = pools.iter().map(|p| p.to_string()).collect();
        let mut problems = Vec::new();
        let r = raw.validate(0, &pools, &mut problems);
        if problems.is_empty() {
            Ok(r.unwrap())
        } else {
            Err(problems)
        }
    }

    #[test]
    fn macs_are_found_in_pxelinux_and_ipxe_names() {
        let mac = Some([0xaa, 0xbb, 0xcc, 0x01, 0x02, 0x03]);
        assert_eq!(mac_in_filename(b"pxelinux.cfg/01-aa-bb-cc-01-02-03"), mac);
        assert_eq!(mac_in_filename(b"/ipxe/aa:bb:cc:01:02:03.ipxe"), mac);
        assert_eq!(mac_in_filename(b"boot/AABBCC010203/menu"), mac);
        assert_eq!(mac_in_filename(b"pxelinux.cfg/C0A801C3"), None);
        assert_eq!(mac_in_filename(b"pxelinux.cfg/default"), None);
    }

    #[test]
    fn mac_patterns() {
        let p = MacPattern::parse("00:1a:2b:*").unwrap();
        assert!(p.matches(&[0x00, 0x1a, 0x2b, 1, 2, 3]));
        assert!(!p.matches(&[0x00, 0x1a, 0x2c, 1, 2, 3]));
        assert!(
            MacPattern::parse("00-1a-2b-3c-4d-5e")
                .unwrap()
                .matches(&[0, 0x1a, 0x2b, 0x3c, 0x4d, 0x5e])
        );
        assert!(MacPattern::parse("00:1a").is_none());
        assert!(MacPattern::parse("zz:1a:2b:*").is_none());
    }

    #[test]
    fn first_matching_rule_decides_and_counts() {
        let thin = route(
            "clients = [\"10.20.0.0/16\"]\nfiles = [\"pxelinux.cfg/*\"]\npool = \"thin\"",
            &["thin"],
        )
        .unwrap();
        let quiet = route("clients = [\"10.30.0.0/16\"]\naction = \"ignore\"", &[]).unwrap();
        let router = Router::new(&[thin, quiet], &[], "pc", false);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            router.decide(ip("10.20.1.1"), &normalise(b"/pxelinux.cfg/default"), None),
            Decision::Pool {
                pool: "thin".into(),
                rule: Some(0)
            }
        );
        assert_eq!(
            router.decide(ip("10.20.1.1"), &normalise(b"vmlinuz"), None),
            Decision::Pool {
                pool: "pc".into(),
                rule: None
            }
        );
        assert_eq!(
            router.decide(ip("10.30.1.1"), &normalise(b"x"), None),
            Decision::Ignore { rule: 1 }
        );
        assert_eq!(
            router.hits(),
            vec![("route[0]".to_string(), 1), ("route[0]".to_string(), 1)]
        );
    }

    #[test]
    fn a_mac_rule_needs_a_known_mac() {
        let r = route("macs = [\"00:1a:2b:*\"]\npool = \"thin\"", &["thin"]).unwrap();
        let router = Router::new(&[r], &[], "pc", false);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert_eq!(
            router.decide(ip, &normalise(b"k"), None),
            Decision::Pool {
                pool: "pc".into(),
                rule: None
            }
        );
        let hit = router.decide(ip, &normalise(b"k"), Some([0, 0x1a, 0x2b, 9, 9, 9]));
        assert_eq!(
            hit,
            Decision::Pool {
                pool: "thin".into(),
                rule: Some(0)
            }
        );
    }

    #[test]
    fn problems_are_named_and_mac_files_are_read() {
        let e = route("pool = \"nope\"", &["a"]).unwrap_err();
        assert_eq!(e, vec!["route[0].pool: no pool named \"nope\"".to_string()]);
        let e = route("macs = [\"xx\"]\naction = \"refuse\"", &[]).unwrap_err();
        assert!(e[0].contains("route[0].macs[0]"), "{e:?}");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("thin.txt");
        std::fs::write(
            &f,
            "# thin clients\n00:1a:2b:00:00:01\n\n00-1a-2b-00-00-02 # desk 2\n",
        )
        .unwrap();
        let r = route(
            &format!("macs = [\"file:{}\"]\npool = \"thin\"", f.display()),
            &["thin"],
        )
        .unwrap();
        assert_eq!(r.macs.len(), 2);
    }

    #[test]
    fn options_policies_are_checked_by_key() {
        let r = route(
            "pool = \"p\"\nmax_blksize = 1024\ndrop_options = [\"TSize\"]",
            &["p"],
        )
        .unwrap();
        assert_eq!(r.options.drop, vec!["tsize".to_string()]);
        let e = route("action = \"refuse\"\nmax_windowsize = 4", &[]).unwrap_err();
        assert!(e[0].contains("for a rule to a pool"), "{e:?}");
        let e = route("pool = \"p\"\nmax_blksize = 4\nmax_windowsize = 0", &["p"]).unwrap_err();
        assert!(e[0].starts_with("route[0].max_blksize"), "{e:?}");
        assert!(e[1].starts_with("route[0].max_windowsize"), "{e:?}");
        let router = Router::new(&[r], &[], "p", false);
        assert!(router.options_of(Some(0)).is_some() && router.options_of(None).is_none());
    }

    #[test]
    fn shadowed_rules_and_unreached_pools_are_warned() {
        let broad = route("clients = [\"10.0.0.0/8\"]\npool = \"a\"", &["a", "b"]).unwrap();
        let narrow = route(
            "clients = [\"10.20.0.0/16\"]\nfiles = [\"x\"]\npool = \"b\"",
            &["a", "b"],
        )
        .unwrap();
        let w = warnings(
            &[broad.clone(), narrow.clone()],
            &["a".into(), "b".into(), "c".into()],
            "a",
        );
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("route[1]") && w[0].contains("never match"));
        assert!(w[1].contains("\"c\""));
        assert!(warnings(&[narrow, broad], &["a".into(), "b".into()], "a").is_empty());
    }
}
