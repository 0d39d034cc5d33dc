//! Which addresses a balanced name answers with, and in what rotating order: pure functions of
//! the pool's health, so the policy is tested without sockets or hickory.
//!
//! The policy follows gdnsd and PowerDNS practice: only backends whose probes passed (never one
//! still `Unknown`), a shorter TTL while the answer is not the whole pool, and a floor: when
//! fewer than half of the probed, enabled backends are healthy, answer with all of them rather
//! than send every booting client to the last survivor. When none is healthy, `when_all_down`
//! decides on purpose.
//!
//! Rotation is a smooth weighted round robin (nginx's): a cyclic sequence in which each address
//! appears `weight` times, spread out. The answer starting at position `p` lists the distinct
//! addresses met walking the sequence from `p`; every query starts one position further. Most
//! clients take the first address, so first places are shared in proportion to weight.

use std::net::IpAddr;

use crate::dns::config::{DnsAllDown, DnsName, NameSource};
use crate::health::{AdminState, Health};
use crate::tftp::runtime::Runtime;

/// One backend address as the DNS sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub ip: IpAddr,
    pub weight: u32,
    /// Enabled by the operator (not draining, not disabled).
    pub enabled: bool,
    /// At least one probe has finished (health is not `Unknown`).
    pub probed: bool,
    /// Up, enabled and consistent: the balancer would send new sessions here.
    pub eligible: bool,
}

/// Why the answer is what it is (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every configured address is healthy.
    AllHealthy,
    /// Some are not: the healthy ones.
    Healthy,
    /// Fewer than half healthy: every enabled, probed address.
    Floor,
    /// None healthy, `when_all_down = "all"`.
    AllDown,
    /// None healthy, `when_all_down = "fallback"`.
    Fallback,
    /// None healthy and `servfail`, or nothing at all to answer with.
    ServFail,
}

/// The addresses of one balanced name right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Address and weight, in configuration order, each IP once.
    pub addrs: Vec<(IpAddr, u32)>,
    /// Answer with the degraded TTL.
    pub degraded: bool,
    pub outcome: Outcome,
}

/// The members of `name` in `runtime`: a pool's backends (IPs merged; ports are not DNS's
/// business), or the fixed `addresses`: as their probes judge them with `[dns.name.health]`,
/// else always eligible.
pub fn members(name: &DnsName, runtime: &Runtime) -> Vec<Member> {
    let pool = match &name.source {
        NameSource::Addresses(ips) => match runtime.probed(&name.probed_pool_name()) {
            Some(probed) => probed,
            None => {
                return ips
                    .iter()
                    .map(|&ip| Member {
                        ip,
                        weight: 1,
                        enabled: true,
                        probed: true,
                        eligible: true,
                    })
                    .collect();
            }
        },
        NameSource::Pool(pool) => match runtime.pool(pool) {
            Some(pool) => pool,
            None => return Vec::new(),
        },
    };
    pool_members(pool)
}

/// A pool's backends as DNS members, one per IP (weights added, health or-ed).
fn pool_members(pool: &crate::pool::Pool) -> Vec<Member> {
    let mut out: Vec<Member> = Vec::with_capacity(pool.backends.len());
    for b in &pool.backends {
        let m = Member {
            ip: b.address.ip(),
            weight: b.weight,
            enabled: b.state.admin() == AdminState::Enabled,
            probed: b.state.health() != Health::Unknown,
            eligible: b.state.eligible(),
        };
        match out.iter_mut().find(|o| o.ip == m.ip) {
            Some(o) => {
                o.weight = o.weight.saturating_add(m.weight);
                o.enabled |= m.enabled;
                o.probed |= m.probed;
                o.eligible |= m.eligible;
            }
            None => out.push(m),
        }
    }
    out
}

/// Applies the health, floor and all-down rules to `members`.
pub fn select(members: &[Member], when_all_down: DnsAllDown, fallback: &[IpAddr]) -> Selection {
    let pick = |f: &dyn Fn(&Member) -> bool| -> Vec<(IpAddr, u32)> {
        members
            .iter()
            .filter(|m| f(m))
            .map(|m| (m.ip, m.weight))
            .collect()
    };
    let healthy = pick(&|m| m.eligible);
    // The floor counts what the operator offers and the probes have judged.
    let candidates = pick(&|m| m.enabled && m.probed);
    let degraded = healthy.len() < members.len();
    let (addrs, outcome) = if !healthy.is_empty() && healthy.len() * 2 >= candidates.len() {
        let o = if degraded {
            Outcome::Healthy
        } else {
            Outcome::AllHealthy
        };
        (healthy, o)
    } else if !healthy.is_empty() {
        (candidates, Outcome::Floor)
    } else {
        match when_all_down {
            DnsAllDown::All if !candidates.is_empty() => (candidates, Outcome::AllDown),
            DnsAllDown::Fallback => (
                fallback.iter().map(|&ip| (ip, 1)).collect(),
                Outcome::Fallback,
            ),
            _ => (Vec::new(), Outcome::ServFail),
        }
    };
    Selection {
        addrs,
        degraded: degraded || outcome != Outcome::AllHealthy,
        outcome,
    }
}

/// Longest rotation sequence; heavier weights are scaled down proportionally beyond it.
const MAX_SEQUENCE: u64 = 1024;

/// The cyclic rotation sequence for `weights` (indices into them): smooth weighted round robin
/// over the weights divided by their gcd, so equal weights give `0, 1, 2, …`.
pub fn rotation(weights: &[u32]) -> Vec<usize> {
    if weights.is_empty() {
        return Vec::new();
    }
    let g = weights.iter().fold(0, |g, &w| gcd(g, w.max(1)));
    let mut w: Vec<u64> = weights.iter().map(|&x| u64::from(x.max(1) / g)).collect();
    let total: u64 = w.iter().sum();
    if total > MAX_SEQUENCE {
        w.iter_mut()
            .for_each(|x| *x = (*x * MAX_SEQUENCE / total).max(1));
    }
    let total: i64 = w.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; w.len()];
    (0..total)
        .map(|_| {
            for (c, &wi) in current.iter_mut().zip(&w) {
                *c += wi as i64;
            }
            let best = (0..w.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The answer order starting at `start` in `sequence`: distinct indices, at most `max`.
pub fn answer_order(sequence: &[usize], count: usize, start: usize, max: usize) -> Vec<usize> {
    let want = count.min(max);
    let mut out = Vec::with_capacity(want);
    for k in 0..sequence.len() {
        if out.len() == want {
            break;
        }
        let i = sequence[(start + k) % sequence.len()];
        if !out.contains(&i) {
            out.push(i);
        }
    }
    // Scaled weights never drop an index, but keep every address even if one were missing.
    for i in 0..count {
        if out.len() == want {
            break;
        }
        if !out.contains(&i) {
            out.push(i);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(last: u8, eligible: bool) -> Member {
        Member {
            ip: IpAddr::from([10, 0, 0, last]),
            weight: 1,
            enabled: true,
            probed: true,
            eligible,
        }
    }

    fn ips(s: &Selection) -> Vec<u8> {
        s.addrs
            .iter()
            .map(|(ip, _)| match ip {
                IpAddr::V4(v) => v.octets()[3],
                IpAddr::V6(_) => 0,
            })
            .collect()
    }

    #[test]
    fn all_healthy_is_not_degraded() {
        let s = select(&[m(1, true), m(2, true)], DnsAllDown::All, &[]);
        assert_eq!(ips(&s), [1, 2]);
        assert_eq!(s.outcome, Outcome::AllHealthy);
        assert!(!s.degraded);
    }

    #[test]
    fn a_down_backend_leaves_and_the_ttl_shortens() {
        let s = select(&[m(1, true), m(2, false)], DnsAllDown::All, &[]);
        assert_eq!(ips(&s), [1]);
        assert_eq!(s.outcome, Outcome::Healthy);
        assert!(s.degraded);
    }

    #[test]
    fn fewer_than_half_healthy_answers_all() {
        let s = select(
            &[m(1, true), m(2, false), m(3, false)],
            DnsAllDown::All,
            &[],
        );
        assert_eq!(ips(&s), [1, 2, 3]);
        assert_eq!(s.outcome, Outcome::Floor);
        assert!(s.degraded);
    }

    #[test]
    fn unknown_and_disabled_backends_are_never_answered() {
        let unknown = Member {
            probed: false,
            ..m(3, false)
        };
        let disabled = Member {
            enabled: false,
            ..m(4, false)
        };
        // 1 healthy of 2 candidates (1, 2): no floor, and 3 and 4 never appear.
        let s = select(
            &[m(1, true), m(2, false), unknown, disabled],
            DnsAllDown::All,
            &[],
        );
        assert_eq!(ips(&s), [1]);
        // Nothing probed yet: nothing to say.
        let s = select(&[unknown], DnsAllDown::All, &[]);
        assert_eq!(s.outcome, Outcome::ServFail);
    }

    #[test]
    fn all_down_policies() {
        let down = [m(1, false), m(2, false)];
        assert_eq!(ips(&select(&down, DnsAllDown::All, &[])), [1, 2]);
        let s = select(&down, DnsAllDown::Servfail, &[]);
        assert_eq!(s.outcome, Outcome::ServFail);
        let fb = [IpAddr::from([10, 0, 0, 9])];
        let s = select(&down, DnsAllDown::Fallback, &fb);
        assert_eq!((ips(&s), s.outcome), (vec![9], Outcome::Fallback));
    }

    #[test]
    fn equal_weights_rotate_one_step_per_answer() {
        let seq = rotation(&[1, 1, 1]);
        assert_eq!(seq, [0, 1, 2]);
        assert_eq!(answer_order(&seq, 3, 0, 8), [0, 1, 2]);
        assert_eq!(answer_order(&seq, 3, 1, 8), [1, 2, 0]);
        assert_eq!(answer_order(&seq, 3, 2, 2), [2, 0]);
    }

    #[test]
    fn first_places_follow_weight() {
        let seq = rotation(&[3, 1]);
        assert_eq!(seq.len(), 4);
        let firsts: Vec<usize> = (0..seq.len())
            .map(|s| answer_order(&seq, 2, s, 8)[0])
            .collect();
        assert_eq!(firsts.iter().filter(|&&i| i == 0).count(), 3);
        // Every answer still lists both.
        assert!((0..seq.len()).all(|s| answer_order(&seq, 2, s, 8).len() == 2));
        // Huge weights stay bounded.
        assert!(rotation(&[1000, 999, 1]).len() <= 1100);
    }
}
