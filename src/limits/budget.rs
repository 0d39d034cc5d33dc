//! Budgets of events per second: a token bucket (refilled at `rate` a second up to `burst`),
//! and a fixed table of them keyed by source address.
//!
//! Why a fixed table: state kept per source must not grow with the number of sources, which a
//! flood of spoofed packets chooses. The table has a fixed number of buckets, picked by a hash
//! of the address seeded once per table (a sender cannot aim at another's bucket on purpose);
//! sources that share a bucket share its budget. No clock inside: every call takes `now`, so
//! the rules are tested with explicit instants.

use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// `burst` events at once, then `rate` a second.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    rate: u32,
    burst: u32,
    tokens: f32,
    /// When `tokens` was last brought up to date (none yet: a full bucket).
    at: Option<Instant>,
}

impl Budget {
    pub const fn new(rate: u32, burst: u32) -> Budget {
        Budget {
            rate,
            burst,
            tokens: 0.0,
            at: None,
        }
    }

    /// Whether one more event fits the budget at `now`; if so, it is spent.
    pub fn take(&mut self, now: Instant) -> bool {
        let burst = self.burst as f32;
        self.tokens = match self.at {
            None => burst,
            Some(at) => {
                let refill = now.saturating_duration_since(at).as_secs_f32() * self.rate as f32;
                (self.tokens + refill).min(burst)
            }
        };
        self.at = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// A [`Budget`] per source address, in a fixed number of buckets.
#[derive(Debug)]
pub struct KeyedBudget {
    buckets: Mutex<Box<[Budget]>>,
    hasher: std::collections::hash_map::RandomState,
}

impl KeyedBudget {
    /// `buckets` budgets of `rate` a second after a `burst` each.
    pub fn new(rate: u32, burst: u32, buckets: usize) -> KeyedBudget {
        KeyedBudget {
            buckets: Mutex::new(vec![Budget::new(rate, burst); buckets.max(1)].into()),
            hasher: Default::default(),
        }
    }

    /// Whether one more event from `source` fits its budget at `now`; if so, it is spent.
    pub fn take(&self, source: IpAddr, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let i = (self.hasher.hash_one(source) % buckets.len() as u64) as usize;
        buckets[i].take(now)
    }
}

/// Log lines about single packets (a failed send, a failed receive): at most ten a second in
/// the whole process, so that a flood of failing packets cannot flood the log as well.
pub fn may_log_packet_error() -> bool {
    static LOG: Mutex<Budget> = Mutex::new(Budget::new(10, 10));
    let mut budget = LOG.lock().unwrap_or_else(|p| p.into_inner());
    budget.take(Instant::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Budget::new(10, 3);
        assert!((0..3).all(|_| b.take(t0)), "the burst at once");
        assert!(!b.take(t0));
        assert!(!b.take(t0 + ms(99)), "one token takes 100 ms at 10/s");
        assert!(b.take(t0 + ms(100)));
        assert!(!b.take(t0 + ms(100)));
        // A long pause refills to the burst, not beyond.
        let later = t0 + Duration::from_secs(60);
        assert!((0..3).all(|_| b.take(later)));
        assert!(!b.take(later));
    }

    #[test]
    fn a_clock_that_goes_back_refills_nothing() {
        let t0 = Instant::now() + Duration::from_secs(1);
        let mut b = Budget::new(10, 1);
        assert!(b.take(t0));
        assert!(!b.take(t0 - ms(500)));
    }

    #[test]
    fn each_source_has_its_own_budget_and_the_table_never_grows() {
        let t0 = Instant::now();
        let table = KeyedBudget::new(1, 2, 4096);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(table.take(a, t0) && table.take(a, t0));
        assert!(!table.take(a, t0));
        // Most other sources still have their budget (a few may share a's bucket).
        let others = (2..=200u8)
            .filter(|i| table.take(IpAddr::from([192, 0, 2, *i]), t0))
            .count();
        assert!(others >= 190, "{others} of 199");
        assert_eq!(table.buckets.lock().unwrap().len(), 4096);
    }
}
