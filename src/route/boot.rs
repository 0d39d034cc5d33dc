//! Which machines ProxyDHCP answers, and with which boot file. The same ordered rules as TFTP
//! decide, read for a machine that has no address yet: a rule's `clients` are matched against
//! the segment the request came from (the relay's `giaddr`, else the client's own `ciaddr`,
//! else the address tftplb heard it on) and its `macs` against the hardware address.
//!
//! Only rules that say something about booting take part: a rule with `boot_file` answers, a
//! rule that refuses or ignores keeps its machines for another server. Rules with `files` (no
//! file is asked yet) and pool rules without boot files are passed over. The first rule that
//! takes part and matches decides; when none does, the machine is not registered here and gets
//! no answer (the whitelist), unless a later catch-all rule with a `delay` answers it late.

use std::net::IpAddr;
use std::time::Duration;

use super::config::{BootFiles, Mac, Target};
use super::{Router, Rule};

/// A client's architecture, from DHCP option 93 (RFC 4578, IANA processor architecture types).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootArch {
    Bios,
    Efi32,
    Efi64,
    Arm64,
    /// A type tftplb has no file kind for (Itanium, ARM32, HTTP boot…).
    Other(u16),
}

impl BootArch {
    /// The kind of option 93's first type; none at all is a PXE 2.1 BIOS ROM.
    pub fn from_option93(code: Option<u16>) -> BootArch {
        match code {
            None | Some(0) => BootArch::Bios,
            Some(6) => BootArch::Efi32,
            Some(7) | Some(9) => BootArch::Efi64,
            Some(11) => BootArch::Arm64,
            Some(other) => BootArch::Other(other),
        }
    }

    /// The name the status page and the API show.
    pub fn name(&self) -> String {
        match self {
            BootArch::Bios => "bios".into(),
            BootArch::Efi32 => "efi32".into(),
            BootArch::Efi64 => "efi64".into(),
            BootArch::Arm64 => "arm64".into(),
            BootArch::Other(code) => format!("type {code}"),
        }
    }
}

/// What ProxyDHCP knows of a machine when it decides.
#[derive(Debug, Clone, Copy)]
pub struct BootQuery {
    /// The segment: the relay's address, the client's own, or the one tftplb heard it on.
    pub segment: IpAddr,
    pub mac: Mac,
    pub arch: BootArch,
    /// iPXE's own DHCP round (user class `iPXE`).
    pub ipxe: bool,
}

/// ProxyDHCP's answer to a machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootDecision {
    /// Offer `file`, after `delay`; `rule` is the index of the rule that decided.
    Offer {
        rule: usize,
        file: String,
        delay: Duration,
    },
    /// The rule that matched has no file for this architecture.
    NoFileForArch { rule: usize },
    /// A rule that refuses or ignores matched: another server boots it.
    NotOurs { rule: usize },
    /// No rule with boot files matched: the machine is not registered here.
    Unregistered,
}

impl BootDecision {
    /// The reason a machine got no answer, as metrics and the status page name it.
    pub fn reason(&self) -> &'static str {
        match self {
            BootDecision::Offer { .. } => "answered",
            BootDecision::NoFileForArch { .. } => "no-file-for-arch",
            BootDecision::NotOurs { .. } => "not-ours",
            BootDecision::Unregistered => "unregistered",
        }
    }
}

impl Router {
    /// The first rule that boots or denies machines and matches this one decides.
    pub fn boot(&self, q: &BootQuery) -> BootDecision {
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.cfg.files.is_empty() || !rule.matches_machine(q.segment, &q.mac) {
                continue;
            }
            match (&rule.cfg.target, &rule.cfg.boot_file) {
                (Target::Refuse | Target::Ignore, _) => return BootDecision::NotOurs { rule: i },
                (Target::Pool(_), None) => continue,
                (Target::Pool(_), Some(files)) => {
                    return match file_for(files, q) {
                        Some(file) => BootDecision::Offer {
                            rule: i,
                            file: file.to_string(),
                            delay: rule.cfg.delay,
                        },
                        None => BootDecision::NoFileForArch { rule: i },
                    };
                }
            }
        }
        BootDecision::Unregistered
    }

    /// Whether any rule offers boot files (ProxyDHCP without one answers nobody).
    pub fn boots_anything(&self) -> bool {
        self.rules.iter().any(|r| r.cfg.boot_file.is_some())
    }
}

impl Rule {
    fn matches_machine(&self, segment: IpAddr, mac: &Mac) -> bool {
        (self.cfg.clients.is_empty() || self.cfg.clients.iter().any(|n| n.contains(&segment)))
            && (self.cfg.macs.is_empty() || self.cfg.macs.iter().any(|p| p.matches(mac)))
    }
}

/// iPXE's round takes `ipxe` when given, else its architecture's file like any other.
fn file_for<'a>(files: &'a BootFiles, q: &BootQuery) -> Option<&'a str> {
    let by_arch = match q.arch {
        BootArch::Bios => &files.bios,
        BootArch::Efi32 => &files.efi32,
        BootArch::Efi64 => &files.efi64,
        BootArch::Arm64 => &files.arm64,
        BootArch::Other(_) => &None,
    };
    let ipxe = files.ipxe.as_ref().filter(|_| q.ipxe);
    ipxe.or(by_arch.as_ref()).map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::config::RawRoute;

    fn rule(i: usize, text: &str) -> crate::route::RouteConfig {
        let raw: RawRoute = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        let r = raw.validate(i, &["ipxe".into(), "pvs".into()], &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        r.unwrap()
    }

    fn query(mac: Mac, arch: BootArch, ipxe: bool) -> BootQuery {
        BootQuery {
            segment: "10.77.0.1".parse().unwrap(),
            mac,
            arch,
            ipxe,
        }
    }

    const PILOT: Mac = [0x52, 0x54, 0, 0, 0, 1];
    const OTHER: Mac = [0x52, 0x54, 0, 0, 0, 2];
    const PHONE: Mac = [0x00, 0x04, 0xf2, 1, 2, 3];

    fn router(catch_all: bool) -> Router {
        let mut rules = vec![
            rule(0, "macs = [\"00:04:f2:*\"]\naction = \"ignore\""),
            rule(
                1,
                "macs = [\"52:54:00:00:00:01\"]\npool = \"ipxe\"\n\
                 boot_file = { bios = \"undionly.kpxe\", efi64 = \"ipxe.efi\", ipxe = \"boot.ipxe\" }",
            ),
            rule(2, "clients = [\"10.0.0.0/8\"]\npool = \"pvs\""),
            rule(3, "files = [\"*.BIN\"]\npool = \"pvs\""),
        ];
        if catch_all {
            rules.push(rule(
                4,
                "pool = \"pvs\"\ndelay = \"2s\"\nboot_file = { bios = \"ARDBP32.BIN\" }",
            ));
        }
        Router::new(&rules, &[], "pvs", false)
    }

    #[test]
    fn a_registered_machine_gets_its_architecture_s_file() {
        let r = router(false);
        let offer = |arch, ipxe| match r.boot(&query(PILOT, arch, ipxe)) {
            BootDecision::Offer { rule, file, delay } => {
                assert_eq!((rule, delay), (1, Duration::ZERO));
                file
            }
            other => panic!("{other:?}"),
        };
        assert_eq!(offer(BootArch::Bios, false), "undionly.kpxe");
        assert_eq!(offer(BootArch::Efi64, false), "ipxe.efi");
        assert_eq!(offer(BootArch::Efi64, true), "boot.ipxe");
        assert_eq!(offer(BootArch::Bios, true), "boot.ipxe");
        assert_eq!(
            r.boot(&query(PILOT, BootArch::Arm64, false)),
            BootDecision::NoFileForArch { rule: 1 }
        );
    }

    #[test]
    fn others_get_nothing_unless_a_catch_all_answers_late() {
        let r = router(false);
        let q = query(OTHER, BootArch::Bios, false);
        assert_eq!(r.boot(&q), BootDecision::Unregistered);
        assert_eq!(
            r.boot(&query(PHONE, BootArch::Bios, false)),
            BootDecision::NotOurs { rule: 0 }
        );
        let late = router(true);
        assert_eq!(
            late.boot(&q),
            BootDecision::Offer {
                rule: 4,
                file: "ARDBP32.BIN".into(),
                delay: Duration::from_secs(2)
            }
        );
        // The phones' rule still keeps them for their own server.
        assert_eq!(
            late.boot(&query(PHONE, BootArch::Bios, false)),
            BootDecision::NotOurs { rule: 0 }
        );
        // iPXE with no `ipxe` entry takes the architecture's file.
        assert!(matches!(
            late.boot(&query(OTHER, BootArch::Bios, true)),
            BootDecision::Offer { .. }
        ));
    }

    #[test]
    fn architectures_from_option_93() {
        assert_eq!(BootArch::from_option93(None), BootArch::Bios);
        assert_eq!(BootArch::from_option93(Some(0)), BootArch::Bios);
        assert_eq!(BootArch::from_option93(Some(7)), BootArch::Efi64);
        assert_eq!(BootArch::from_option93(Some(9)), BootArch::Efi64);
        assert_eq!(BootArch::from_option93(Some(11)), BootArch::Arm64);
        assert_eq!(BootArch::from_option93(Some(16)), BootArch::Other(16));
    }

    #[test]
    fn boot_files_are_checked_by_key() {
        let bad = |text: &str| {
            let raw: RawRoute = toml::from_str(text).unwrap();
            let mut problems = Vec::new();
            raw.validate(3, &["p".into()], &mut problems);
            problems
        };
        let p = bad("pool = \"p\"\nboot_file = {}");
        assert!(
            p[0].starts_with("route[3].boot_file: give at least one"),
            "{p:?}"
        );
        let p = bad("action = \"ignore\"\nboot_file = { bios = \"x\" }");
        assert!(p[0].contains("refuses or ignores"), "{p:?}");
        let p = bad("pool = \"p\"\nfiles = [\"x\"]\nboot_file = { bios = \"x\" }");
        assert!(
            p[0].contains("route[3].boot_file: a rule with files"),
            "{p:?}"
        );
        let p = bad("pool = \"p\"\ndelay = \"2s\"");
        assert!(p[0].starts_with("route[3].delay"), "{p:?}");
        let p = bad("pool = \"p\"\ndelay = \"1h\"\nboot_file = { bios = \"x\" }");
        assert!(p[0].starts_with("route[3].delay: at most 10s"), "{p:?}");
        let long = "a".repeat(128);
        let p = bad(&format!(
            "pool = \"p\"\nboot_file = {{ efi64 = \"{long}\" }}"
        ));
        assert!(p[0].starts_with("route[3].boot_file.efi64"), "{p:?}");
    }
}
