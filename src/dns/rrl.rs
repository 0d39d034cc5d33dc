//! Response-rate limiting: how many UDP answers one source prefix gets, like NSD's and Knot's.
//!
//! A UDP query's source can be spoofed, so without a limit anyone can make the zone send its
//! answers to a victim. Sources are counted per prefix (/24, /56 by default), each with a token
//! bucket of `rate` answers per second; over it, an answer is dropped, except every `slip`-th,
//! which goes out truncated (TC, no records) so that a real resolver behind that prefix retries
//! over TCP, which cannot be spoofed. Exempt sources (the site's resolvers) are never counted;
//! in log-only mode nothing is dropped, and what would have been is reported.
//!
//! Memory is fixed: the buckets live in a table of `table_size` slots indexed by a keyed hash
//! of the prefix (random per process, so a sender cannot aim at another prefix's slot), and a
//! prefix that lands on a slot held by another takes it over with a fresh bucket. A flood from
//! a million prefixes costs no more than one from a few; its price is that an evicted prefix
//! starts afresh, i.e. the limiter fails open, never shut.
//!
//! [`Table`] decides with the instant it is given and no clock of its own, so it is tested
//! with explicit instants; [`Limiter`] shares it between the UDP tasks behind a mutex (one
//! hash and a few arithmetic operations per query).

use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipnet::IpNet;

use super::config::rrl::RrlConfig;

/// What to do with one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Send it.
    Answer,
    /// Send nothing.
    Drop,
    /// Send it truncated: the header and question with TC set, no records.
    Slip,
}

/// The decision for one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// What to send.
    pub action: Action,
    /// Over the rate: `Drop` or `Slip`, what was done or, in log-only mode, would have been.
    pub limited: Option<Action>,
    /// This prefix has just gone over its rate (and no such line was logged in the last
    /// second): log it.
    pub log: Option<IpNet>,
}

impl Decision {
    const ANSWER: Decision = Decision {
        action: Action::Answer,
        limited: None,
        log: None,
    };
}

/// At most one "over the rate" log line per this long, however many prefixes go over.
const LOG_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
struct Bucket {
    prefix: IpNet,
    tokens: f64,
    stamp: Instant,
    /// Answers over the rate since the prefix went over (picks the slips).
    over: u32,
}

/// The buckets, in a fixed number of slots.
#[derive(Debug)]
pub struct Table {
    cfg: RrlConfig,
    slots: Vec<Option<Bucket>>,
    hasher: RandomState,
    last_log: Option<Instant>,
}

impl Table {
    pub fn new(cfg: RrlConfig) -> Table {
        Table {
            slots: vec![None; cfg.table_size.max(1)],
            cfg,
            hasher: RandomState::new(),
            last_log: None,
        }
    }

    /// The prefix `source` is counted in.
    pub fn prefix(&self, source: IpAddr) -> IpNet {
        let ip = source.to_canonical();
        let len = match ip {
            IpAddr::V4(_) => self.cfg.ipv4_prefix,
            IpAddr::V6(_) => self.cfg.ipv6_prefix,
        };
        IpNet::new(ip, len).map_or(IpNet::from(ip), |n| n.trunc())
    }

    /// Decides one answer to `source` at `now`.
    pub fn decide(&mut self, source: IpAddr, now: Instant) -> Decision {
        if self
            .cfg
            .exempt
            .iter()
            .any(|n| n.contains(&source.to_canonical()))
        {
            return Decision::ANSWER;
        }
        let prefix = self.prefix(source);
        let rate = f64::from(self.cfg.rate);
        let i = (self.hasher.hash_one(prefix) % self.slots.len() as u64) as usize;
        let bucket = match &mut self.slots[i] {
            Some(b) if b.prefix == prefix => b,
            slot => slot.insert(Bucket {
                prefix,
                tokens: rate,
                stamp: now,
                over: 0,
            }),
        };
        let elapsed = now.saturating_duration_since(bucket.stamp).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(rate);
        bucket.stamp = bucket.stamp.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            bucket.over = 0;
            return Decision::ANSWER;
        }
        bucket.over = bucket.over.saturating_add(1);
        let first = bucket.over == 1;
        let slip = self.cfg.slip > 0 && bucket.over % self.cfg.slip == 0;
        let limited = if slip { Action::Slip } else { Action::Drop };
        let log = (first && self.last_log.is_none_or(|t| now >= t + LOG_EVERY)).then(|| {
            self.last_log = Some(now);
            prefix
        });
        Decision {
            action: if self.cfg.log_only {
                Action::Answer
            } else {
                limited
            },
            limited: Some(limited),
            log,
        }
    }
}

/// A [`Table`] shared by the UDP tasks.
#[derive(Debug)]
pub struct Limiter {
    table: Mutex<Table>,
    cfg: RrlConfig,
}

impl Limiter {
    pub fn new(cfg: RrlConfig) -> Limiter {
        Limiter {
            table: Mutex::new(Table::new(cfg.clone())),
            cfg,
        }
    }

    /// The settings it was built with (a reload that changes them builds a new one).
    pub fn config(&self) -> &RrlConfig {
        &self.cfg
    }

    pub fn decide(&self, source: IpAddr, now: Instant) -> Decision {
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        table.decide(source, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rate: u32, slip: u32) -> RrlConfig {
        RrlConfig {
            rate,
            slip,
            ipv4_prefix: 24,
            ipv6_prefix: 56,
            exempt: vec!["192.0.2.53/32".parse().unwrap()],
            log_only: false,
            table_size: 64,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The actions for `n` answers to `source`, all at `now`.
    fn burst(t: &mut Table, source: &str, n: usize, now: Instant) -> Vec<Action> {
        (0..n).map(|_| t.decide(ip(source), now).action).collect()
    }

    use Action::{Answer, Drop, Slip};

    #[test]
    fn rate_answers_at_once_then_drops_with_every_slip_th_truncated() {
        let mut t = Table::new(cfg(3, 2));
        let now = Instant::now();
        assert_eq!(
            burst(&mut t, "10.1.1.1", 8, now),
            [Answer, Answer, Answer, Drop, Slip, Drop, Slip, Drop]
        );
    }

    #[test]
    fn tokens_come_back_at_the_rate() {
        let mut t = Table::new(cfg(10, 0));
        let t0 = Instant::now();
        assert!(
            burst(&mut t, "10.1.1.1", 10, t0)
                .iter()
                .all(|a| *a == Answer)
        );
        assert_eq!(t.decide(ip("10.1.1.1"), t0).action, Drop, "slip 0: never");
        let later = t0 + Duration::from_millis(250);
        assert_eq!(
            burst(&mut t, "10.1.1.1", 3, later),
            [Answer, Answer, Drop],
            "a quarter second brings 2.5 answers"
        );
        // A long silence refills to the burst, no more.
        let much_later = t0 + Duration::from_secs(3600);
        assert_eq!(
            burst(&mut t, "10.1.1.1", 11, much_later)
                .iter()
                .filter(|a| **a == Answer)
                .count(),
            10
        );
    }

    #[test]
    fn sources_are_counted_per_prefix() {
        let mut t = Table::new(cfg(2, 0));
        let now = Instant::now();
        assert_eq!(burst(&mut t, "10.1.1.1", 2, now), [Answer, Answer]);
        assert_eq!(t.decide(ip("10.1.1.200"), now).action, Drop, "same /24");
        assert_eq!(t.decide(ip("10.1.2.1"), now).action, Answer, "next /24");
        assert_eq!(burst(&mut t, "2001:db8:0:1::1", 2, now), [Answer, Answer]);
        assert_eq!(
            t.decide(ip("2001:db8:0:ff::2"), now).action,
            Drop,
            "same /56"
        );
        assert_eq!(t.decide(ip("2001:db8:0:100::1"), now).action, Answer);
        // An IPv4-mapped source is its IPv4 prefix.
        assert_eq!(t.decide(ip("::ffff:10.1.1.9"), now).action, Drop);
        assert_eq!(t.prefix(ip("::ffff:10.1.1.9")).to_string(), "10.1.1.0/24");
    }

    #[test]
    fn an_exempt_source_is_never_limited() {
        let mut t = Table::new(cfg(1, 2));
        let now = Instant::now();
        assert!(
            burst(&mut t, "192.0.2.53", 100, now)
                .iter()
                .all(|a| *a == Answer)
        );
        // Its neighbours in the /24 are.
        assert_eq!(burst(&mut t, "192.0.2.54", 2, now), [Answer, Drop]);
    }

    #[test]
    fn log_only_answers_everything_and_says_what_it_would_have_done() {
        let mut t = Table::new(RrlConfig {
            log_only: true,
            ..cfg(1, 2)
        });
        let now = Instant::now();
        let d: Vec<Decision> = (0..3).map(|_| t.decide(ip("10.1.1.1"), now)).collect();
        assert!(d.iter().all(|d| d.action == Answer));
        let limited: Vec<Option<Action>> = d.iter().map(|d| d.limited).collect();
        assert_eq!(limited, [None, Some(Drop), Some(Slip)]);
    }

    #[test]
    fn going_over_is_logged_once_per_prefix_and_at_most_once_a_second() {
        let mut t = Table::new(cfg(1, 0));
        let t0 = Instant::now();
        let logs = |t: &mut Table, src: &str, now| {
            (0..3)
                .filter_map(|_| t.decide(ip(src), now).log)
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(logs(&mut t, "10.1.1.1", t0), ["10.1.1.0/24"]);
        assert!(logs(&mut t, "10.2.2.2", t0).is_empty(), "within the second");
        let half = t0 + Duration::from_millis(500);
        assert!(
            logs(&mut t, "10.1.1.1", half).is_empty(),
            "still over: said already"
        );
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(logs(&mut t, "10.3.3.3", t1), ["10.3.3.0/24"]);
    }

    #[test]
    fn a_flood_from_many_prefixes_stays_in_the_table() {
        let mut t = Table::new(cfg(1, 0));
        let now = Instant::now();
        for i in 0..100_000u32 {
            let [_, a, b, c] = i.to_be_bytes();
            t.decide(IpAddr::from([10, a, b, c]), now);
            t.decide(IpAddr::from([11, a, b, 0]), now);
        }
        assert_eq!((t.slots.len(), t.slots.capacity()), (64, 64));
        // What config/tftplb.example.toml says of table_size.
        assert!(std::mem::size_of::<Option<Bucket>>() <= 64);
    }

    #[test]
    fn an_instant_from_the_past_takes_nothing_back() {
        let mut t = Table::new(cfg(2, 0));
        let t0 = Instant::now() + Duration::from_secs(10);
        assert_eq!(burst(&mut t, "10.1.1.1", 2, t0), [Answer, Answer]);
        let earlier = t0 - Duration::from_secs(5);
        assert_eq!(t.decide(ip("10.1.1.1"), earlier).action, Drop);
        assert_eq!(
            t.decide(ip("10.1.1.1"), t0 + Duration::from_secs(1)).action,
            Answer
        );
    }
}
