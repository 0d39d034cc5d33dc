//! Weighted round robin: backends get new sessions in proportion to their weight, interleaved
//! (smooth weighted round robin, as nginx does it). The schedule is computed once, so selecting
//! is one atomic increment: no lock on the request path.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Backend, Balancer, first_accepted};
use crate::pool::config::BackendConfig;

#[derive(Debug)]
pub struct Weighted {
    schedule: Vec<usize>,
    next: AtomicUsize,
}

impl Weighted {
    pub fn new(backends: &[BackendConfig]) -> Weighted {
        Weighted {
            schedule: smooth_schedule(&backends.iter().map(|b| b.weight).collect::<Vec<_>>()),
            next: AtomicUsize::new(0),
        }
    }
}

/// One full cycle of smooth weighted round robin: index i appears weights[i] times, spread out.
fn smooth_schedule(weights: &[u32]) -> Vec<usize> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, &w) in current.iter_mut().zip(weights) {
                *c += i64::from(w);
            }
            let best = (0..weights.len())
                .max_by_key(|&i| (current[i], -(i as i64)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

impl Balancer for Weighted {
    fn select(
        &self,
        backends: &[Arc<Backend>],
        _: IpAddr,
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        if self.schedule.is_empty() || backends.is_empty() {
            return None;
        }
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.schedule.len();
        let preferred = self.schedule[slot] % backends.len();
        if accept(preferred) {
            return Some(preferred);
        }
        first_accepted(backends.len(), preferred + 1, accept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_proportional_and_interleaved() {
        let s = smooth_schedule(&[5, 1, 1]);
        assert_eq!(s.len(), 7);
        assert_eq!(s.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(s, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn spreads_by_weight() {
        let cfg: Vec<BackendConfig> = [3u32, 1]
            .iter()
            .enumerate()
            .map(|(i, &weight)| BackendConfig {
                address: ([127, 0, 0, 1], 7000 + i as u16).into(),
                weight,
                state: crate::health::AdminState::Enabled,
                max_sessions: 0,
            })
            .collect();
        let b: Vec<_> = cfg.iter().map(|c| Arc::new(Backend::unprobed(c))).collect();
        let w = Weighted::new(&cfg);
        let ip = IpAddr::from([10, 0, 0, 1]);
        let zeros = (0..400)
            .filter(|_| w.select(&b, ip, &|_| true) == Some(0))
            .count();
        assert_eq!(zeros, 300);
        assert_eq!(w.select(&b, ip, &|i| i == 1), Some(1));
    }
}
