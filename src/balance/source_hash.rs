//! Source hash: the client IP decides the backend (rendezvous hashing, weighted), so a client
//! lands on the same backend across boots without any state, and when a backend is refused only
//! the clients that were on it move.

use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use super::{Backend, Balancer};

#[derive(Debug, Default)]
pub struct SourceHash;

impl Balancer for SourceHash {
    fn select(
        &self,
        backends: &[Arc<Backend>],
        client: IpAddr,
        accept: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        (0..backends.len())
            .filter(|&i| accept(i))
            .max_by(|&a, &b| score(&backends[a], client).total_cmp(&score(&backends[b], client)))
    }
}

/// Weighted rendezvous score: -w / ln(u) with u the hash of (client, backend) in (0, 1).
fn score(backend: &Backend, client: IpAddr) -> f64 {
    let mut h = std::hash::DefaultHasher::new();
    (client, backend.address).hash(&mut h);
    let u = ((h.finish() >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    -f64::from(backend.weight) / u.ln()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_backends;

    #[test]
    fn same_client_same_backend_and_only_its_clients_move() {
        let b = test_backends(&[1, 1, 1]);
        let sh = SourceHash;
        let clients: Vec<IpAddr> = (0..300u16)
            .map(|i| IpAddr::from([10, 0, (i >> 8) as u8, i as u8]))
            .collect();
        let before: Vec<_> = clients
            .iter()
            .map(|&c| sh.select(&b, c, &|_| true).unwrap())
            .collect();
        let again: Vec<_> = clients
            .iter()
            .map(|&c| sh.select(&b, c, &|_| true).unwrap())
            .collect();
        assert_eq!(before, again);
        for k in 0..3 {
            let n = before.iter().filter(|&&i| i == k).count();
            assert!((50..150).contains(&n), "backend {k} got {n} of 300");
        }
        let after: Vec<_> = clients
            .iter()
            .map(|&c| sh.select(&b, c, &|i| i != 1).unwrap())
            .collect();
        for (x, y) in before.iter().zip(&after) {
            if *x != 1 {
                assert_eq!(x, y, "a client not on the refused backend moved");
            }
        }
    }
}
