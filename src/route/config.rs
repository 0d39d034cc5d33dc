//! `[[route]]` as the file gives it: conditions (client CIDRs, MAC patterns and MAC list files,
//! file globs) and a target; the boot files ProxyDHCP offers the machines a rule picks, by
//! architecture, and how long it waits before answering; plus the warnings `tftplb check`
//! prints for rules that can never match and pools no rule reaches.

use std::path::Path;
use std::time::Duration;

use globset::Glob;
use ipnet::IpNet;
use serde::Deserialize;

use crate::config::keys::parse_nets;

/// A MAC address.
pub type Mac = [u8; 6];

/// `[[route]]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    name: Option<String>,
    #[serde(default)]
    clients: Vec<String>,
    #[serde(default)]
    macs: Vec<String>,
    #[serde(default)]
    files: Vec<String>,
    ignore_case: Option<bool>,
    pool: Option<String>,
    action: Option<RouteAction>,
    boot_file: Option<BootFiles>,
    #[serde(default, with = "humantime_serde")]
    delay: Option<Duration>,
    max_blksize: Option<u16>,
    max_windowsize: Option<u16>,
    #[serde(default)]
    drop_options: Vec<String>,
}

/// What a rule does to the options of the requests it sends to a pool, for firmware that
/// hangs on some of them (blksize 1468 with tsize, or anything above blksize 1024): lowered
/// to a maximum, or left out. The client learns from the OACK what it got.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionsPolicy {
    pub max_blksize: Option<u16>,
    pub max_windowsize: Option<u16>,
    /// Option names (lower case) removed from the request.
    pub drop: Vec<String>,
}

impl OptionsPolicy {
    pub fn is_empty(&self) -> bool {
        *self == OptionsPolicy::default()
    }

    fn check(&self, key: &str, target: &Target, problems: &mut Vec<String>) {
        if !self.is_empty() && !matches!(target, Target::Pool(_)) {
            problems.push(format!(
                "{key}: max_blksize, max_windowsize and drop_options are for a rule to a pool"
            ));
        }
        if let Some(b) = self.max_blksize
            && !(crate::protocol::options::MIN_BLKSIZE..=crate::protocol::options::MAX_BLKSIZE)
                .contains(&b)
        {
            problems.push(format!(
                "{key}.max_blksize: {b} is outside 8..=65464 (RFC 2348)"
            ));
        }
        if self.max_windowsize == Some(0) {
            problems.push(format!(
                "{key}.max_windowsize: must be at least 1 (RFC 7440)"
            ));
        }
        for (j, name) in self.drop.iter().enumerate() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_graphic()) {
                problems.push(format!(
                    "{key}.drop_options[{j}]: {name:?} is not an option name"
                ));
            }
        }
    }
}

/// `boot_file = { bios = …, efi64 = …, ipxe = … }`: what ProxyDHCP offers, by the client's
/// architecture (DHCP option 93) and, for iPXE's own DHCP round (user class `iPXE`), `ipxe`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootFiles {
    /// Option 93 type 0, or no option 93 (PXE 2.1 BIOS ROMs).
    pub bios: Option<String>,
    /// Type 6: IA32 UEFI.
    pub efi32: Option<String>,
    /// Types 7 and 9: x64 UEFI (9 is what some firmware sends for EFI BC).
    pub efi64: Option<String>,
    /// Type 11: ARM64 UEFI.
    pub arm64: Option<String>,
    /// iPXE's own round: a script name or URL. Without it iPXE gets its architecture's file,
    /// which loops forever when that file is iPXE itself.
    pub ipxe: Option<String>,
}

/// The longest ProxyDHCP delay: PXE ROMs collect offers for about 4 s per DISCOVER and give up
/// after a few rounds; held answers are state a spoofed request creates, so they stay short.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// The longest boot file name: the BOOTP `file` field holds 128 bytes with its terminating NUL.
pub const BOOT_FILE_MAX: usize = 127;

impl BootFiles {
    fn entries(&self) -> [(&'static str, &Option<String>); 5] {
        [
            ("bios", &self.bios),
            ("efi32", &self.efi32),
            ("efi64", &self.efi64),
            ("arm64", &self.arm64),
            ("ipxe", &self.ipxe),
        ]
    }

    fn check(&self, key: &str, problems: &mut Vec<String>) {
        if self.entries().iter().all(|(_, f)| f.is_none()) {
            problems.push(format!(
                "{key}.boot_file: give at least one of bios, efi32, efi64, arm64, ipxe"
            ));
        }
        for (arch, file) in self.entries() {
            match file.as_deref() {
                Some("") => problems.push(format!("{key}.boot_file.{arch}: empty file name")),
                Some(f) if f.len() > BOOT_FILE_MAX || f.contains('\0') => problems.push(format!(
                    "{key}.boot_file.{arch}: longer than {BOOT_FILE_MAX} bytes or holds a NUL"
                )),
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteAction {
    /// ERROR 2: this network is not served.
    Refuse,
    /// No answer at all: another PXE server may answer.
    Ignore,
}

/// What a rule does with a request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pool(String),
    Refuse,
    Ignore,
}

/// A validated rule.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    pub clients: Vec<IpNet>,
    pub macs: Vec<MacPattern>,
    /// The `macs` entries as written (for shadowing checks and the status page).
    pub mac_sources: Vec<String>,
    pub files: Vec<String>,
    /// Whether `files` match names in any case; `None`: a refuse or ignore rule does (it must
    /// not be walked around by case), a rule to a pool does when the pool ignores case.
    pub ignore_case: Option<bool>,
    pub target: Target,
    /// What ProxyDHCP offers the machines this rule picks; `None`: it offers them nothing.
    pub boot_file: Option<BootFiles>,
    /// How long ProxyDHCP waits before it answers (so that other PXE servers win theirs).
    pub delay: Duration,
    /// What it does to the options of the requests it sends to its pool.
    pub options: OptionsPolicy,
}

/// A MAC pattern: six octets, each fixed or `*`; a trailing `*` covers the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacPattern([Option<u8>; 6]);

impl MacPattern {
    pub fn parse(s: &str) -> Option<MacPattern> {
        let parts: Vec<&str> = s.split([':', '-']).collect();
        let mut octets = [None; 6];
        for (i, p) in parts.iter().enumerate() {
            match *p {
                "*" if i == parts.len() - 1 => return (i < 6).then_some(MacPattern(octets)),
                "*" => {}
                hex if hex.len() == 2 => {
                    *octets.get_mut(i)? = Some(u8::from_str_radix(hex, 16).ok()?)
                }
                _ => return None,
            }
        }
        (parts.len() == 6).then_some(MacPattern(octets))
    }

    pub fn matches(&self, mac: &Mac) -> bool {
        self.0
            .iter()
            .zip(mac)
            .all(|(p, m)| p.is_none_or(|p| p == *m))
    }
}

impl RawRoute {
    /// Validates rule `i`; `pools` are the pool names; MAC list files are read now (and on
    /// every reload).
    pub fn validate(
        self,
        i: usize,
        pools: &[String],
        problems: &mut Vec<String>,
    ) -> Option<RouteConfig> {
        let key = format!("route[{i}]");
        let target = match (self.pool, self.action) {
            (Some(p), None) if pools.contains(&p) => Target::Pool(p),
            (Some(p), None) => {
                problems.push(format!("{key}.pool: no pool named {p:?}"));
                return None;
            }
            (None, Some(RouteAction::Refuse)) => Target::Refuse,
            (None, Some(RouteAction::Ignore)) => Target::Ignore,
            _ => {
                problems.push(format!("{key}: give exactly one of pool or action"));
                return None;
            }
        };
        for (j, g) in self.files.iter().enumerate() {
            if let Err(e) = Glob::new(g) {
                problems.push(format!(
                    "{key}.files[{j}]: invalid glob {g:?}: {}",
                    e.kind()
                ));
            }
        }
        if let Some(b) = &self.boot_file {
            b.check(&key, problems);
            if !matches!(target, Target::Pool(_)) {
                problems.push(format!(
                    "{key}.boot_file: a rule that refuses or ignores boots nothing"
                ));
            }
            if !self.files.is_empty() {
                problems.push(format!(
                    "{key}.boot_file: a rule with files cannot pick a machine before it asks for one"
                ));
            }
        } else if self.delay.is_some() {
            problems.push(format!(
                "{key}.delay: only a rule with boot_file answers DHCP"
            ));
        }
        if self.delay.is_some_and(|d| d > MAX_DELAY) {
            problems.push(format!(
                "{key}.delay: at most {}s (PXE clients wait a few seconds for offers)",
                MAX_DELAY.as_secs()
            ));
        }
        let options = OptionsPolicy {
            max_blksize: self.max_blksize,
            max_windowsize: self.max_windowsize,
            drop: self
                .drop_options
                .iter()
                .map(|o| o.to_ascii_lowercase())
                .collect(),
        };
        options.check(&key, &target, problems);
        Some(RouteConfig {
            name: self.name.unwrap_or_else(|| key.clone()),
            clients: parse_nets(&format!("{key}.clients"), &self.clients, problems),
            macs: parse_macs(&key, &self.macs, problems),
            mac_sources: self.macs,
            files: self.files,
            ignore_case: self.ignore_case,
            target,
            boot_file: self.boot_file,
            delay: self.delay.unwrap_or_default(),
            options,
        })
    }
}

fn parse_macs(key: &str, items: &[String], problems: &mut Vec<String>) -> Vec<MacPattern> {
    let mut out = Vec::new();
    for (j, item) in items.iter().enumerate() {
        match item.strip_prefix("file:") {
            Some(path) => match read_mac_file(Path::new(path)) {
                Ok(list) => out.extend(list),
                Err(e) => problems.push(format!("{key}.macs[{j}]: {e}")),
            },
            None => match MacPattern::parse(item) {
                Some(p) => out.push(p),
                None => problems.push(format!("{key}.macs[{j}]: invalid MAC pattern {item:?}")),
            },
        }
    }
    out
}

/// One MAC pattern a line; `#` starts a comment; blank lines are skipped.
fn read_mac_file(path: &Path) -> Result<Vec<MacPattern>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .enumerate()
        .filter_map(|(n, line)| {
            let entry = line.split('#').next().unwrap_or("").trim();
            (!entry.is_empty()).then(|| {
                MacPattern::parse(entry)
                    .ok_or_else(|| format!("{}:{}: invalid MAC {entry:?}", path.display(), n + 1))
            })
        })
        .collect()
}

/// Warnings for `tftplb check`: rules shadowed by an earlier broader one, pools never reached.
pub fn warnings(routes: &[RouteConfig], pools: &[String], default_pool: &str) -> Vec<String> {
    let mut out = Vec::new();
    for (i, later) in routes.iter().enumerate() {
        if let Some(j) = (0..i).find(|&j| covers(&routes[j], later)) {
            out.push(format!(
                "route[{i}] ({}) can never match: route[{j}] ({}) matches everything it does",
                later.name, routes[j].name
            ));
        }
    }
    for p in pools {
        let reached =
            p == default_pool || routes.iter().any(|r| r.target == Target::Pool(p.clone()));
        if !reached {
            out.push(format!(
                "pool {p:?} is reached by no route and is not the default pool"
            ));
        }
    }
    out
}

/// Whether rule `a` matches every request rule `b` matches (a conservative, syntactic check).
fn covers(a: &RouteConfig, b: &RouteConfig) -> bool {
    let clients = a.clients.is_empty()
        || (!b.clients.is_empty()
            && b.clients
                .iter()
                .all(|n| a.clients.iter().any(|m| m.contains(n))));
    let files = a.files.is_empty()
        || a.files.iter().any(|g| g == "*" || g == "**")
        || (!b.files.is_empty() && b.files.iter().all(|g| a.files.contains(g)));
    let macs = a.mac_sources.is_empty()
        || (!b.mac_sources.is_empty() && b.mac_sources.iter().all(|m| a.mac_sources.contains(m)));
    clients && files && macs
}
