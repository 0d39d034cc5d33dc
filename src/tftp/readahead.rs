//! Read-ahead for lock-step reads: the relay acknowledges the backend's DATA itself and serves
//! the client from a small buffer, as a TFTP sender in its own right.
//!
//! Why: relaying packet for packet puts two extra hops into every block's round trip, so a
//! lock-step transfer through a pure relay runs at about half the direct speed. With a few
//! blocks fetched ahead, the backend leg and the client leg run side by side and a block costs
//! the slower of the two round trips instead of their sum.
//!
//! The rules, all on file positions (the session maps wire numbers and rollovers):
//! - a block from the backend is stored when it is the next one; the backend gets our ACK as
//!   soon as there is room for the block after it (the final block is acknowledged at once), so
//!   the buffer never holds more than `ahead` blocks past the client's ACK, plus one slot for
//!   the block a takeover's catch-up may bring;
//! - the backend's retransmission of the block we acknowledged last gets that ACK again (ours
//!   was lost); nothing else is ever re-sent to the backend;
//! - the client gets the next block when it acknowledges the previous one; a duplicate ACK gets
//!   nothing (RFC 1123 §4.2.3.1, sorcerer's apprentice); the relay's timer re-sends the one
//!   unacknowledged block after the transfer's timeout.
//!
//! No sockets, no clock: the relay task does the sending and the timing. The ring is allocated
//! once, when the first block arrives; nothing is allocated per block.

use std::ops::RangeInclusive;

/// What to send after an event: blocks to the client (positions, in order) and an ACK to the
/// backend (a position; the relay writes it in the backend's numbering).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub to_client: RangeInclusive<u64>,
    pub ack_backend: Option<u64>,
}

impl Step {
    fn nothing() -> Step {
        Step {
            to_client: none(),
            ack_backend: None,
        }
    }
}

/// An empty range of positions.
fn none() -> RangeInclusive<u64> {
    RangeInclusive::new(1, 0)
}

/// The buffer and the positions of both legs of one lock-step read.
#[derive(Debug)]
pub struct ReadAhead {
    /// Blocks the backend may be ahead of the client's ACK.
    ahead: u64,
    /// Bytes per slot: a DATA datagram of the negotiated blksize.
    slot: usize,
    blksize: usize,
    ring: Box<[u8]>,
    lens: Box<[u32]>,
    /// Highest position the client acknowledged.
    acked: u64,
    /// Highest position stored (every position up to it arrived).
    received: u64,
    /// Highest position sent to the client.
    sent: u64,
    /// Highest position acknowledged to the current backend leg.
    backend_acked: u64,
    final_pos: Option<u64>,
}

/// Most bytes one session's read-ahead may hold; a large blksize gets fewer blocks ahead.
const MAX_BYTES: usize = 64 * 1024;

impl ReadAhead {
    /// Read-ahead of up to `ahead` blocks of `blksize` bytes, for a transfer whose client has
    /// acknowledged position `start` (0: nothing yet).
    pub fn new(ahead: u16, blksize: u16, start: u64) -> ReadAhead {
        let blksize = usize::from(blksize);
        let ahead = usize::from(ahead).min(MAX_BYTES / blksize).max(1);
        let slots = ahead + 1;
        let slot = 4 + blksize;
        ReadAhead {
            ahead: ahead as u64,
            slot,
            blksize,
            ring: vec![0; slots * slot].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            acked: start,
            received: start,
            sent: start,
            backend_acked: start,
            final_pos: None,
        }
    }

    /// A DATA datagram of position `pos` from the backend, already numbered for the client.
    pub fn on_data(&mut self, pos: u64, datagram: &[u8]) -> Step {
        let next = self.received + 1;
        if pos == next && pos <= self.acked + self.slots() && self.final_pos.is_none() {
            self.store(pos, datagram);
        } else if pos == self.backend_acked && pos == self.received {
            // The backend did not get our ACK and sent the block again.
            return Step {
                to_client: none(),
                ack_backend: Some(pos),
            };
        }
        self.step()
    }

    /// The client acknowledged position `pos`.
    pub fn on_ack(&mut self, pos: u64) -> Step {
        if pos <= self.acked || pos > self.sent {
            return Step::nothing(); // a duplicate (or nonsense): never answered by a resend
        }
        self.acked = pos;
        self.step()
    }

    /// A new backend leg took over and caught up to `received` (the relay acknowledged that
    /// block to it while catching up).
    pub fn resumed(&mut self) {
        self.backend_acked = self.received;
    }

    /// The block(s) the client has not acknowledged yet, for the retransmission timer.
    pub fn unacked(&self) -> RangeInclusive<u64> {
        self.acked + 1..=self.sent
    }

    /// The datagram of a stored position (numbered for the client).
    pub fn datagram(&self, pos: u64) -> &[u8] {
        let i = self.index(pos);
        let start = i * self.slot;
        &self.ring[start..start + self.lens[i] as usize]
    }

    /// Highest position received from the backend: where a takeover resumes.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The backend acknowledged-to position is all there is and the file is not complete: the
    /// backend owes us the next block (a silence now is the backend's).
    pub fn waiting_on_backend(&self) -> bool {
        self.final_pos.is_none() && self.backend_acked == self.received
    }

    /// The backend's part is over: its final block is stored and acknowledged.
    pub fn backend_done(&self) -> bool {
        self.final_pos.is_some_and(|f| self.backend_acked >= f)
    }

    /// The client acknowledged the final block.
    pub fn complete(&self) -> bool {
        self.final_pos == Some(self.acked)
    }

    fn slots(&self) -> u64 {
        self.ahead + 1
    }

    fn index(&self, pos: u64) -> usize {
        (pos % self.slots()) as usize
    }

    fn store(&mut self, pos: u64, datagram: &[u8]) {
        let i = self.index(pos);
        let n = datagram.len().min(self.slot);
        self.ring[i * self.slot..i * self.slot + n].copy_from_slice(&datagram[..n]);
        self.lens[i] = n as u32;
        self.received = pos;
        if n - 4 < self.blksize {
            self.final_pos = Some(pos);
        }
    }

    /// What the positions now allow: the next block to the client (lock-step: when it has
    /// acknowledged all it got), and our ACK of the newest block when there is room after it.
    fn step(&mut self) -> Step {
        let to_client = if self.sent == self.acked && self.received > self.sent {
            self.sent += 1;
            self.sent..=self.sent
        } else {
            none()
        };
        let room = self.received < self.acked + self.ahead;
        let ack_backend =
            (self.backend_acked < self.received && (room || self.final_pos.is_some())).then(|| {
                self.backend_acked = self.received;
                self.received
            });
        Step {
            to_client,
            ack_backend,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::packet::Packet;

    fn data(pos: u64, len: usize) -> Vec<u8> {
        Packet::Data {
            block: pos as u16,
            data: vec![pos as u8; len],
        }
        .encode()
    }

    fn step(to_client: RangeInclusive<u64>, ack_backend: Option<u64>) -> Step {
        Step {
            to_client,
            ack_backend,
        }
    }

    #[test]
    fn the_backend_runs_ahead_by_the_configured_blocks_then_waits_for_the_client() {
        let mut r = ReadAhead::new(3, 8, 0);
        assert_eq!(r.on_data(1, &data(1, 8)), step(1..=1, Some(1)));
        assert_eq!(r.on_data(2, &data(2, 8)), step(none(), Some(2)));
        // Three ahead of the client's ACK (0): no room after block 3, the ACK waits.
        assert_eq!(r.on_data(3, &data(3, 8)), step(none(), None));
        assert!(!r.waiting_on_backend());
        assert_eq!(r.on_ack(1), step(2..=2, Some(3)));
        assert_eq!(r.datagram(2), data(2, 8).as_slice());
        assert!(r.waiting_on_backend());
    }

    #[test]
    fn a_duplicate_ack_is_never_answered_with_a_resend() {
        let mut r = ReadAhead::new(4, 8, 0);
        r.on_data(1, &data(1, 8));
        r.on_data(2, &data(2, 8));
        assert_eq!(r.on_ack(1), step(2..=2, None));
        assert_eq!(r.on_ack(1), Step::nothing());
        assert_eq!(r.on_ack(0), Step::nothing());
        assert_eq!(r.on_ack(5), Step::nothing(), "never sent");
        assert_eq!(r.unacked(), 2..=2);
    }

    #[test]
    fn the_backends_retransmission_gets_our_ack_again() {
        let mut r = ReadAhead::new(4, 8, 0);
        assert_eq!(r.on_data(1, &data(1, 8)).ack_backend, Some(1));
        assert_eq!(r.on_data(1, &data(1, 8)), step(none(), Some(1)));
    }

    #[test]
    fn the_final_block_is_acknowledged_at_once_and_completes_on_the_clients_ack() {
        let mut r = ReadAhead::new(1, 8, 0);
        assert_eq!(r.on_data(1, &data(1, 8)), step(1..=1, None));
        assert_eq!(r.on_ack(1), step(none(), Some(1)));
        assert_eq!(r.on_data(2, &data(2, 3)), step(2..=2, Some(2)));
        assert!(r.backend_done() && !r.complete());
        assert_eq!(r.on_ack(2), Step::nothing());
        assert!(r.complete());
    }

    #[test]
    fn a_whole_transfer_delivers_every_block_in_order() {
        for ahead in [1u16, 2, 4, 16] {
            let mut r = ReadAhead::new(ahead, 8, 0);
            let blocks = 50u64;
            let mut backend_next = 1; // what the backend sends next once acked
            let mut delivered = Vec::new();
            let mut pending_client: Vec<u64> = Vec::new();
            let s = r.on_data(1, &data(1, 8));
            pending_client.extend(s.to_client.clone());
            if s.ack_backend.is_some() {
                backend_next = 2;
            }
            let mut guard = 0;
            while !r.complete() {
                guard += 1;
                assert!(guard < 1000, "ahead {ahead}: stuck");
                // The backend sends its next block if we acknowledged the previous one.
                if backend_next > r.received() && backend_next <= blocks {
                    let len = if backend_next == blocks { 3 } else { 8 };
                    let s = r.on_data(backend_next, &data(backend_next, len));
                    pending_client.extend(s.to_client.clone());
                    if let Some(a) = s.ack_backend {
                        backend_next = a + 1;
                    }
                }
                // The client takes what it was sent and acknowledges it.
                if let Some(pos) = pending_client.pop() {
                    delivered.push(r.datagram(pos).to_vec());
                    let s = r.on_ack(pos);
                    pending_client.extend(s.to_client.clone());
                    if let Some(a) = s.ack_backend {
                        backend_next = a + 1;
                    }
                }
            }
            assert_eq!(delivered.len() as u64, blocks);
            for (i, d) in delivered.iter().enumerate() {
                let pos = i as u64 + 1;
                assert_eq!(d, &data(pos, if pos == blocks { 3 } else { 8 }));
            }
            assert!(r.backend_done());
        }
    }

    #[test]
    fn after_a_takeover_one_spare_slot_holds_the_block_the_catch_up_brings() {
        let mut r = ReadAhead::new(2, 8, 0);
        r.on_data(1, &data(1, 8));
        r.on_data(2, &data(2, 8)); // two ahead of ACK 0: our ACK of 2 waits
        r.resumed(); // the backend died; the new leg caught up to 2 and got our ACK of 2
        assert_eq!(r.on_data(3, &data(3, 8)), step(none(), None));
        assert_eq!(r.received(), 3);
        assert_eq!(r.on_ack(1), step(2..=2, None));
        assert_eq!(r.on_ack(2), step(3..=3, Some(3)));
        assert_eq!(r.datagram(3), data(3, 8).as_slice());
    }

    #[test]
    fn a_large_blksize_gets_fewer_blocks_ahead() {
        let r = ReadAhead::new(16, 65464, 0);
        assert_eq!(r.ahead, 1);
        assert_eq!(r.ring.len(), 2 * (65464 + 4));
    }
}
