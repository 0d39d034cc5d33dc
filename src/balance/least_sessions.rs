//! Least sessions: a new session goes to the backend with the fewest live sessions per unit of
//! weight. Ties rotate, so an idle pool still spreads a burst instead of piling onto backend 0.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backend, Balancer};

#[derive(Debug, Default)]
pub struct LeastSessions {
    tie_break: AtomicUsize,
}

impl Balancer for LeastSessions {
    fn select(
        &self,
        backends: &[Arc<Backend>],
        _: IpAddr,
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let n = backends.len();
        let start = self.tie_break.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n.max(1))
            .filter(|&i| accept(i))
            // Compare active/weight without division: a/wa < b/wb ⇔ a·wb < b·wa.
            .min_by(|&a, &b| {
                let load = |i: usize, other: usize| {
                    backends[i].active_sessions() as u64 * u64::from(backends[other].weight)
                };
                load(a, b).cmp(&load(b, a))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_backends;

    #[test]
    fn picks_the_least_loaded_and_rotates_ties() {
        let b = test_backends(&[1, 1, 1]);
        let ls = LeastSessions::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let _c0 = b[0].claim();
        let _c1 = b[1].claim();
        assert_eq!(ls.select(&b, ip, &|_| true), Some(2));
        let _c2 = b[2].claim();
        let picks: std::collections::HashSet<_> = (0..3)
            .map(|_| ls.select(&b, ip, &|_| true).unwrap())
            .collect();
        assert_eq!(picks.len(), 3, "ties rotate");
        drop(_c1);
        assert_eq!(ls.select(&b, ip, &|_| true), Some(1));
        assert!(matches!(ls.select(&b, ip, &|i| i != 1), Some(0) | Some(2)));
    }

    #[test]
    fn weight_scales_the_load() {
        let b = test_backends(&[3, 1]);
        let ls = LeastSessions::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let claims: Vec<_> = (0..2).map(|_| b[0].claim()).collect();
        // 2/3 < 0/1 is false, but 2/3 < 1/1 is true.
        assert_eq!(ls.select(&b, ip, &|_| true), Some(1));
        let _c = b[1].claim();
        assert_eq!(ls.select(&b, ip, &|_| true), Some(0));
        drop(claims);
    }
}
