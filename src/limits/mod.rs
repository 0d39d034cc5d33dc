//! Abuse limits on port 69: who may ask (CIDR allow/deny), how fast (new sessions per second
//! per client IP, governor), how many at once per client. Each refusal is counted, answered
//! with a TFTP ERROR that says why (or silence, with `silent = true`), and logged through a
//! rate limiter of its own so a flood cannot flood the log either.
//!
//! Memory stays bounded under a flood: the rate limiter forgets idle clients on every
//! housekeeping tick, and the per-client session counts only hold clients with live sessions.
//! Those counts hold only sessions whose client answered: a spoofed request names someone
//! else's address, and must not use up that client's sessions.

pub mod budget;
pub mod config;

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use config::LimitsConfig;
use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Why a request was refused by a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    Denied,
    RateLimited,
    TooManyFromClient,
}

impl Limited {
    pub fn as_str(self) -> &'static str {
        match self {
            Limited::Denied => "client-denied",
            Limited::RateLimited => "rate-limited",
            Limited::TooManyFromClient => "client-session-limit",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            Limited::Denied => "access denied for this client",
            Limited::RateLimited => "too many requests from this client, retry later",
            Limited::TooManyFromClient => "too many transfers from this client",
        }
    }
}

/// ERROR replies on port 69 per source address: a second's worth at once, then this many a
/// second. A request names its source, and an ERROR goes to whatever source it names: beyond
/// this, a flood of refused requests naming one victim gets silence. A booting client is
/// refused a handful of times at most (pxelinux asks a dozen names in a row).
const ERROR_REPLIES_PER_SECOND: u32 = 16;
const ERROR_REPLIES_BURST: u32 = 32;
/// Buckets of the ERROR reply budget: fixed, whatever the number of sources (a few hundred
/// KiB); sources that share one share its budget.
const ERROR_REPLY_BUCKETS: usize = 4096;

/// The limits in force (rebuilt on reload) plus the live per-client counts (kept across).
#[derive(Debug)]
pub struct Limiter {
    cfg: LimitsConfig,
    rate: Option<DefaultKeyedRateLimiter<IpAddr>>,
    log: DefaultDirectRateLimiter,
    replies: budget::KeyedBudget,
}

impl Limiter {
    pub fn new(cfg: LimitsConfig) -> Limiter {
        let rate = NonZeroU32::new(cfg.rate_per_client).map(|r| {
            let burst = NonZeroU32::new(cfg.burst_per_client).unwrap_or(r);
            RateLimiter::keyed(Quota::per_second(r).allow_burst(burst))
        });
        let log = RateLimiter::direct(Quota::per_second(NonZeroU32::new(10).expect("10 > 0")));
        let replies = budget::KeyedBudget::new(
            ERROR_REPLIES_PER_SECOND,
            ERROR_REPLIES_BURST,
            ERROR_REPLY_BUCKETS,
        );
        Limiter {
            cfg,
            rate,
            log,
            replies,
        }
    }

    pub fn silent(&self) -> bool {
        self.cfg.silent
    }

    /// Is this client allowed to ask at all? Deny wins; an empty allow list allows everyone.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), Limited> {
        let ip = canonical(ip);
        if self.cfg.deny.iter().any(|n| n.contains(&ip)) {
            return Err(Limited::Denied);
        }
        if !self.cfg.allow.is_empty() && !self.cfg.allow.iter().any(|n| n.contains(&ip)) {
            return Err(Limited::Denied);
        }
        Ok(())
    }

    /// One new session's worth of the client's rate budget.
    pub fn check_rate(&self, ip: IpAddr) -> Result<(), Limited> {
        match &self.rate {
            Some(r) => r.check_key(&ip).map_err(|_| Limited::RateLimited),
            None => Ok(()),
        }
    }

    /// A place for a new session from `ip` in its client's count, refused when the client
    /// already has `max_sessions_per_client` sessions it answered. The session counts only once
    /// its client answers ([`ClientSlot::answered`]): requests from a source that never answers
    /// (spoofed ones, naming this client's address) cannot lock the client out.
    pub fn claim_client(
        &self,
        counts: &Arc<ClientCounts>,
        ip: IpAddr,
    ) -> Result<ClientSlot, Limited> {
        let max = self.cfg.max_sessions_per_client;
        if max > 0 && counts.answered(ip) >= max {
            return Err(Limited::TooManyFromClient);
        }
        Ok(ClientSlot {
            counts: counts.clone(),
            ip,
            max,
            counted: AtomicBool::new(false),
        })
    }

    /// Whether an ERROR may go to `ip` now, in reply to a request refused on port 69.
    pub fn may_answer(&self, ip: IpAddr) -> bool {
        self.replies.take(canonical(ip), std::time::Instant::now())
    }

    /// Whether a refusal may be logged now (at most 10 lines a second).
    pub fn may_log(&self) -> bool {
        self.log.check().is_ok()
    }

    /// Forgets clients whose rate budget is full again (housekeeping).
    pub fn forget_idle(&self) {
        if let Some(r) = &self.rate {
            r.retain_recent();
            r.shrink_to_fit();
        }
    }

    pub fn tracked_clients(&self) -> usize {
        self.rate.as_ref().map_or(0, |r| r.len())
    }
}

/// An IPv4 client seen through an IPv6 socket matches IPv4 CIDRs.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Live sessions per client IP whose client has answered; entries exist only while a client
/// has some.
#[derive(Debug, Default)]
pub struct ClientCounts {
    live: DashMap<IpAddr, AtomicUsize>,
}

impl ClientCounts {
    fn answered(&self, ip: IpAddr) -> usize {
        self.live.get(&ip).map_or(0, |n| n.load(Ordering::Relaxed))
    }

    /// Counts one more session for `ip`, unless it has `max` already (0: no limit).
    fn count(&self, ip: IpAddr, max: usize) -> Result<(), Limited> {
        let entry = self.live.entry(ip).or_insert_with(|| AtomicUsize::new(0));
        let now = entry.fetch_add(1, Ordering::Relaxed);
        if max > 0 && now >= max {
            entry.fetch_sub(1, Ordering::Relaxed);
            drop(entry);
            self.live
                .remove_if(&ip, |_, n| n.load(Ordering::Relaxed) == 0);
            return Err(Limited::TooManyFromClient);
        }
        Ok(())
    }

    /// Client IPs with sessions they answered.
    pub fn clients(&self) -> usize {
        self.live.len()
    }
}

/// A session's place in its client's count: not counted until the client answers, given back
/// on drop.
#[derive(Debug)]
pub struct ClientSlot {
    counts: Arc<ClientCounts>,
    ip: IpAddr,
    max: usize,
    counted: AtomicBool,
}

impl ClientSlot {
    /// The client answered its session: from now on the session counts against the client's
    /// limit. Refused when that would make more than the limit (several of its requests were
    /// answered at once); the session must then end.
    pub fn answered(&self) -> Result<(), Limited> {
        if self.counted.swap(true, Ordering::Relaxed) {
            return Ok(());
        }
        self.counts.count(self.ip, self.max).inspect_err(|_| {
            self.counted.store(false, Ordering::Relaxed);
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        if !self.counted.load(Ordering::Relaxed) {
            return;
        }
        if let Some(n) = self.counts.live.get(&self.ip) {
            n.fetch_sub(1, Ordering::Relaxed);
        }
        self.counts
            .live
            .remove_if(&self.ip, |_, n| n.load(Ordering::Relaxed) == 0);
    }
}

#[cfg(test)]
mod tests {
    use super::config::RawLimits;
    use super::*;

    fn limiter(raw: RawLimits) -> Limiter {
        let mut problems = Vec::new();
        let cfg = raw.validate(&mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        Limiter::new(cfg)
    }

    #[test]
    fn deny_wins_and_allow_lists_restrict() {
        let l = limiter(RawLimits {
            allow: vec!["10.0.0.0/8".into(), "192.0.2.7".into()],
            deny: vec!["10.9.0.0/16".into()],
            ..RawLimits::default()
        });
        assert_eq!(l.check_address("10.1.2.3".parse().unwrap()), Ok(()));
        assert_eq!(l.check_address("192.0.2.7".parse().unwrap()), Ok(()));
        assert_eq!(l.check_address("::ffff:10.1.2.3".parse().unwrap()), Ok(()));
        assert_eq!(
            l.check_address("10.9.1.1".parse().unwrap()),
            Err(Limited::Denied)
        );
        assert_eq!(
            l.check_address("172.16.0.1".parse().unwrap()),
            Err(Limited::Denied)
        );
    }

    #[test]
    fn bad_cidrs_are_named() {
        let mut problems = Vec::new();
        RawLimits {
            deny: vec!["10.0.0.0/33".into()],
            ..RawLimits::default()
        }
        .validate(&mut problems);
        assert_eq!(
            problems,
            vec!["limits.deny[0]: invalid CIDR \"10.0.0.0/33\"".to_string()]
        );
    }

    #[test]
    fn rate_is_per_client_with_burst() {
        let l = limiter(RawLimits {
            rate_per_client: 1,
            burst_per_client: 3,
            ..RawLimits::default()
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert_eq!(l.check_rate(a), Ok(()));
        }
        assert_eq!(l.check_rate(a), Err(Limited::RateLimited));
        assert_eq!(l.check_rate(b), Ok(()), "another client has its own budget");
    }

    #[test]
    fn error_replies_to_one_source_are_bounded_and_others_keep_theirs() {
        let l = limiter(RawLimits::default());
        let victim: IpAddr = "192.0.2.1".parse().unwrap();
        let answered = (0..1000).filter(|_| l.may_answer(victim)).count();
        // The burst, and whatever the rate refilled while the loop ran.
        assert!((32..=40).contains(&answered), "{answered}");
        assert!(l.may_answer("192.0.2.99".parse().unwrap()));
    }

    #[test]
    fn concurrent_sessions_per_client_are_capped_and_released() {
        let l = limiter(RawLimits {
            max_sessions_per_client: 2,
            ..RawLimits::default()
        });
        let counts = Arc::new(ClientCounts::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let s1 = l.claim_client(&counts, ip).unwrap();
        let s2 = l.claim_client(&counts, ip).unwrap();
        s1.answered().unwrap();
        s2.answered().unwrap();
        assert_eq!(
            l.claim_client(&counts, ip).unwrap_err(),
            Limited::TooManyFromClient
        );
        drop(s1);
        let s3 = l.claim_client(&counts, ip).unwrap();
        s3.answered().unwrap();
        drop(s3);
        drop(s2);
        assert_eq!(counts.clients(), 0, "no entry left behind");
    }

    #[test]
    fn sessions_whose_client_never_answers_do_not_count() {
        let l = limiter(RawLimits {
            max_sessions_per_client: 2,
            ..RawLimits::default()
        });
        let counts = Arc::new(ClientCounts::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let spoofed: Vec<_> = (0..16)
            .map(|_| l.claim_client(&counts, ip).unwrap())
            .collect();
        assert_eq!(counts.clients(), 0, "nothing counted for them");
        let real = l
            .claim_client(&counts, ip)
            .expect("the real client is not locked out");
        real.answered().unwrap();
        // Answered at once, more of them than the limit: the one beyond is refused.
        spoofed[0].answered().unwrap();
        assert_eq!(spoofed[1].answered(), Err(Limited::TooManyFromClient));
        drop(spoofed);
        drop(real);
        assert_eq!(counts.clients(), 0);
    }
}
