//! The SOA serial: it moves when, and only when, what the zone answers moves.
//!
//! Secondaries and monitoring compare serials to learn that a zone changed; a serial taken
//! from the clock at every rebuild (each health event, each reload, the 30 s safety rebuild)
//! says "changed" twice a minute when nothing did. So the server keeps the [`Content`] the
//! current zone was built from, and [`Versions::update`] gives a new serial only when a
//! rebuild's content differs: the clock's seconds if that is ahead of the old serial in
//! RFC 1982 serial arithmetic, else the old serial plus one, so the serial only ever grows
//! (a clock stepped back, two changes in one second). Pure: the clock is an argument.

use super::config::{DnsConfig, DnsName, DnsRecord};
use super::zone::NameState;
use std::time::Duration;

/// What the answers of a zone are made of: the zone's settings and records, and what each
/// balanced name answers now. Transport settings (listen, TCP timeout, rate limits) are not
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    zone: String,
    ttls: [Duration; 3],
    max_answers: usize,
    nameservers: Vec<String>,
    hostmaster: String,
    names: Vec<DnsName>,
    records: Vec<DnsRecord>,
    states: Vec<NameState>,
}

impl Content {
    /// The content of a zone built from `cfg` whose balanced names answer `states`.
    pub fn of(cfg: &DnsConfig, states: &[NameState]) -> Content {
        Content {
            zone: cfg.zone.clone(),
            ttls: [cfg.ttl, cfg.degraded_ttl, cfg.negative_ttl],
            max_answers: cfg.max_answers,
            nameservers: cfg.nameservers.clone(),
            hostmaster: cfg.hostmaster.clone(),
            names: cfg.names.clone(),
            records: cfg.records.clone(),
            states: states.to_vec(),
        }
    }
}

/// The serial of the zone being served and the content it was given for.
#[derive(Debug)]
pub struct Versions {
    content: Content,
    serial: u32,
}

impl Versions {
    /// The first version: the clock's seconds (never 0, which some tools read as "unset").
    pub fn new(content: Content, clock: u32) -> Versions {
        Versions {
            content,
            serial: clock.max(1),
        }
    }

    pub fn serial(&self) -> u32 {
        self.serial
    }

    /// What the balanced names answer in the current version.
    pub fn states(&self) -> &[NameState] {
        &self.content.states
    }

    /// The new serial if `content` differs from the current one, else `None` (keep the zone).
    pub fn update(&mut self, content: Content, clock: u32) -> Option<u32> {
        if content == self.content {
            return None;
        }
        self.content = content;
        self.serial = next_serial(self.serial, clock);
        Some(self.serial)
    }
}

/// `clock` if it is ahead of `old` (RFC 1982: by less than 2^31), else `old + 1`.
pub fn next_serial(old: u32, clock: u32) -> u32 {
    let ahead = clock.wrapping_sub(old);
    if ahead != 0 && ahead < 1 << 31 {
        clock
    } else {
        old.wrapping_add(1).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::select::{Outcome, Selection};

    fn content(addrs: &[u8]) -> Content {
        let cfg = crate::config::Config::parse(
            "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"10.0.0.1:69\"\n\
             [dns]\nzone = \"boot.test.\"\n[[dns.name]]\nname = \"pvs\"\npool = \"p\"\n",
        )
        .expect("test config parses")
        .dns
        .expect("[dns]");
        let state = NameState {
            name: "pvs.boot.test.".into(),
            selection: Selection {
                addrs: addrs.iter().map(|&a| ([10, 0, 0, a].into(), 1)).collect(),
                degraded: false,
                outcome: Outcome::AllHealthy,
            },
        };
        Content::of(&cfg, &[state])
    }

    #[test]
    fn the_same_content_keeps_its_serial_whatever_the_clock() {
        let mut v = Versions::new(content(&[1, 2]), 1_000);
        assert_eq!(v.serial(), 1_000);
        for clock in [1_030, 1_060, 5_000_000] {
            assert_eq!(v.update(content(&[1, 2]), clock), None, "at {clock}");
        }
        assert_eq!(v.serial(), 1_000);
    }

    #[test]
    fn a_change_takes_the_clock_when_it_is_ahead() {
        let mut v = Versions::new(content(&[1, 2]), 1_000);
        assert_eq!(v.update(content(&[1]), 1_030), Some(1_030));
        assert_eq!(v.update(content(&[1, 2]), 1_031), Some(1_031));
        assert_eq!(v.serial(), 1_031);
    }

    #[test]
    fn a_change_within_the_same_second_or_after_a_clock_step_back_still_grows() {
        let mut v = Versions::new(content(&[1, 2]), 1_000);
        assert_eq!(v.update(content(&[1]), 1_000), Some(1_001));
        assert_eq!(v.update(content(&[2]), 1_000), Some(1_002));
        assert_eq!(
            v.update(content(&[1, 2]), 10),
            Some(1_003),
            "clock stepped back"
        );
    }

    #[test]
    fn serial_arithmetic_wraps_and_skips_zero() {
        assert_eq!(next_serial(u32::MAX, 5), 5, "5 is ahead of 2^32-1");
        assert_eq!(next_serial(u32::MAX, u32::MAX), 1, "0 is skipped");
        assert_eq!(
            next_serial(10, 10 + (1 << 31)),
            11,
            "2^31 ahead is undefined: +1"
        );
        assert_eq!(Versions::new(content(&[1]), 0).serial(), 1);
    }
}
