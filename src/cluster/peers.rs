//! Which peers are alive, by their heartbeats: a peer silent for `peer_dead_after` is taken
//! for dead (its sessions are taken over where this node can bind their addresses), and is
//! alive again with its next record. Pure: instants in, flips out.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A peer's liveness.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerState {
    pub last_heard: Option<Instant>,
    pub up: bool,
}

/// The peers' liveness.
#[derive(Debug, Default)]
pub struct Peers {
    peers: HashMap<SocketAddr, PeerState>,
    /// When this node started listening: a peer never heard is dead only after a full
    /// `dead_after` from then.
    since: Option<Instant>,
}

impl Peers {
    pub fn new(peers: &[SocketAddr], now: Instant) -> Peers {
        let mut p = Peers {
            peers: HashMap::new(),
            since: Some(now),
        };
        p.configure(peers);
        p
    }

    /// The configured peers changed (a reload): new ones start unheard, gone ones are
    /// forgotten.
    pub fn configure(&mut self, peers: &[SocketAddr]) {
        self.peers.retain(|a, _| peers.contains(a));
        for &a in peers {
            self.peers.entry(a).or_insert(PeerState {
                last_heard: None,
                up: false,
            });
        }
    }

    /// Whether `from` is a configured peer.
    pub fn knows(&self, from: SocketAddr) -> bool {
        self.peers.contains_key(&from)
    }

    /// A valid record came from `from`; whether it was taken for dead until now.
    pub fn heard(&mut self, from: SocketAddr, now: Instant) -> bool {
        match self.peers.get_mut(&from) {
            Some(p) => {
                p.last_heard = Some(now);
                !std::mem::replace(&mut p.up, true)
            }
            None => false,
        }
    }

    /// The peers that have just been silent for `dead_after`; they are marked dead.
    pub fn newly_dead(&mut self, now: Instant, dead_after: Duration) -> Vec<SocketAddr> {
        let since = self.since.unwrap_or(now);
        let mut dead = Vec::new();
        for (addr, p) in &mut self.peers {
            let last = p.last_heard.unwrap_or(since);
            if p.up && now.saturating_duration_since(last) >= dead_after {
                p.up = false;
                dead.push(*addr);
            }
        }
        dead
    }

    /// Every peer and its state, in address order.
    pub fn list(&self) -> Vec<(SocketAddr, PeerState)> {
        let mut all: Vec<_> = self.peers.iter().map(|(a, p)| (*a, *p)).collect();
        all.sort_by_key(|(a, _)| *a);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_is_dead_after_its_silence_and_alive_with_its_next_record() {
        let t0 = Instant::now();
        let a: SocketAddr = "10.0.0.2:6969".parse().unwrap();
        let stranger: SocketAddr = "10.0.0.9:6969".parse().unwrap();
        let mut peers = Peers::new(&[a], t0);
        let dead_after = Duration::from_secs(3);
        assert!(peers.knows(a) && !peers.knows(stranger));
        assert!(!peers.heard(stranger, t0));
        assert!(peers.heard(a, t0), "first heard: it comes up");
        assert!(!peers.heard(a, t0 + Duration::from_secs(1)));
        assert!(
            peers
                .newly_dead(t0 + Duration::from_millis(3_900), dead_after)
                .is_empty()
        );
        assert_eq!(
            peers.newly_dead(t0 + Duration::from_secs(4), dead_after),
            vec![a]
        );
        assert!(
            peers
                .newly_dead(t0 + Duration::from_secs(9), dead_after)
                .is_empty(),
            "once"
        );
        assert!(peers.heard(a, t0 + Duration::from_secs(10)), "back");
        peers.configure(&[]);
        assert!(!peers.knows(a));
    }
}
