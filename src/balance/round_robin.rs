//! Round robin: each new session goes to the next acceptable backend in turn.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backend, Balancer, first_accepted};

#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl Balancer for RoundRobin {
    fn select(
        &self,
        backends: &[Arc<Backend>],
        _: IpAddr,
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if backends.is_empty() {
            return None;
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % backends.len();
        first_accepted(backends.len(), start, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_backends;

    #[test]
    fn cycles_and_skips_refused_backends() {
        let b = test_backends(&[1, 1, 1]);
        let rr = RoundRobin::default();
        let ip = IpAddr::from([10, 0, 0, 1]);
        let picks: Vec<_> = (0..6)
            .map(|_| rr.select(&b, ip, &|_| true).unwrap())
            .collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let picks: Vec<_> = (0..4)
            .map(|_| rr.select(&b, ip, &|i| i != 1).unwrap())
            .collect();
        assert!(!picks.contains(&1));
        assert_eq!(rr.select(&b, ip, &|_| false), None);
    }
}
