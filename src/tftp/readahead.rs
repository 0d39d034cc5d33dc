//! Read-ahead: the relay acknowledges the backend's DATA itself and serves the client from a
//! small ring, as a TFTP sender in its own right.
//!
//! Why: relaying packet for packet puts two extra hops into every block's round trip (every
//! window's, with RFC 7440 windows), so a lock-step transfer through a pure relay runs at about
//! half the direct speed. With blocks fetched ahead, the backend leg and the client leg run side
//! by side and a round costs the slower of the two round trips instead of their sum.
//!
//! The rules, all on file positions (the session maps wire numbers and rollovers), with the
//! transfer's window `w` (1: lock-step):
//! - a block from the backend is stored when it is the next one; the backend gets our ACK when
//!   its window is complete and there is room for its next window (the final block is
//!   acknowledged at once), so the ring never holds more than `ahead` blocks past the client's
//!   ACK, plus one window of slots for what a takeover's catch-up may bring;
//! - the backend's retransmission of the block we acknowledged last gets that ACK again (ours
//!   was lost): one ACK per re-sent window, never one per block;
//! - the client gets blocks up to `w` past its last ACK as they arrive; an ACK short of what
//!   was sent (it lost a block) restarts the window after it (RFC 7440); a duplicate ACK gets
//!   nothing (RFC 1123 §4.2.3.1, sorcerer's apprentice); an ACK of a block not sent yet (one
//!   read ahead) is ignored, judged on its own and never kept as the client's position; the
//!   relay's timer re-sends the unacknowledged blocks after the transfer's timeout.
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
    /// The negotiated windowsize, on both legs.
    window: u64,
    /// Slots in the ring: `ahead` plus one window.
    slots: u64,
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
    /// The position whose ACK we last sent because a gap showed up after it.
    gap_acked: Option<u64>,
}

/// Most bytes one session's ring may hold. Lock-step: a large blksize gets fewer blocks ahead;
/// windowed: a transfer whose three windows do not fit is relayed packet for packet.
const MAX_BYTES: usize = 128 * 1024;

impl ReadAhead {
    /// Read-ahead of `ahead` blocks of `blksize` bytes (with a window: at least two windows),
    /// for a transfer whose client has acknowledged position `start` (0: nothing yet). `None`
    /// when the ring would be too large for this blksize and windowsize.
    pub fn new(ahead: u16, blksize: u16, windowsize: u16, start: u64) -> Option<ReadAhead> {
        let slot = 4 + usize::from(blksize);
        let window = usize::from(windowsize.max(1));
        let ahead = if window == 1 {
            usize::from(ahead).min(MAX_BYTES / slot - 1).max(1)
        } else {
            usize::from(ahead).max(2 * window)
        };
        let slots = ahead + window;
        if window > 1 && slots * slot > MAX_BYTES {
            return None;
        }
        Some(ReadAhead {
            ahead: ahead as u64,
            window: window as u64,
            slots: slots as u64,
            slot,
            blksize: usize::from(blksize),
            ring: vec![0; slots * slot].into_boxed_slice(),
            lens: vec![0; slots].into_boxed_slice(),
            acked: start,
            received: start,
            sent: start,
            backend_acked: start,
            final_pos: None,
            gap_acked: None,
        })
    }

    /// A DATA datagram of position `pos` from the backend, already numbered for the client.
    pub fn on_data(&mut self, pos: u64, datagram: &[u8]) -> Step {
        let next = self.received + 1;
        if pos == next && pos <= self.acked + self.slots && self.final_pos.is_none() {
            self.store(pos, datagram);
        } else if pos == self.backend_acked && self.waiting_on_backend() {
            // The backend did not get our ACK and sent the block (its window) again.
            return Step {
                to_client: none(),
                ack_backend: Some(pos),
            };
        }
        self.step()
    }

    /// A block came from the backend out of order (one before it was lost): acknowledge the
    /// last block in order, once, so the backend starts its window again after it instead of
    /// waiting for its timer. `None` when already done, or when its next window has no room.
    pub fn on_gap(&mut self) -> Option<u64> {
        let room = self.received + self.window <= self.acked + self.slots;
        if self.window == 1 || !room || self.gap_acked == Some(self.received) {
            return None;
        }
        self.gap_acked = Some(self.received);
        self.backend_acked = self.received;
        Some(self.received)
    }

    /// The client acknowledged position `pos`; each ACK is judged on its own against what was
    /// sent. `None` for an ACK of a block not sent yet (one read ahead, or nonsense): it is
    /// ignored and changes nothing, so a stray ACK cannot make every later valid ACK look old.
    pub fn on_ack(&mut self, pos: u64) -> Option<Step> {
        if pos > self.sent {
            return None;
        }
        if pos <= self.acked {
            return Some(Step::nothing()); // a duplicate: never answered by a resend
        }
        self.acked = pos;
        // Short of what was sent: the client lost the block after it; the window restarts.
        self.sent = pos;
        Some(self.step())
    }

    /// Highest position the client acknowledged (of those it was sent).
    pub fn acked(&self) -> u64 {
        self.acked
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

    /// We acknowledged the backend's last complete window and the file is not complete: the
    /// backend owes us blocks (a silence now is the backend's).
    pub fn waiting_on_backend(&self) -> bool {
        self.final_pos.is_none() && self.received < self.backend_acked + self.window
    }

    /// The backend's part is over: its final block is stored and acknowledged.
    pub fn backend_done(&self) -> bool {
        self.final_pos.is_some_and(|f| self.backend_acked >= f)
    }

    /// The client acknowledged the final block.
    pub fn complete(&self) -> bool {
        self.final_pos == Some(self.acked)
    }

    fn index(&self, pos: u64) -> usize {
        (pos % self.slots) as usize
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

    /// What the positions now allow: blocks to the client up to a window past its ACK, and our
    /// ACK of the backend's complete window when its next window has room.
    fn step(&mut self) -> Step {
        let limit = self.received.min(self.acked + self.window);
        let to_client = if limit > self.sent {
            let from = self.sent + 1;
            self.sent = limit;
            from..=limit
        } else {
            none()
        };
        let window_done = self.received == self.backend_acked + self.window;
        let room = self.received + self.window <= self.acked + self.ahead;
        let wanted = window_done && room || self.final_pos.is_some();
        let ack_backend = (self.backend_acked < self.received && wanted).then(|| {
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
    use crate::protocol::packet::Packet;

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
        let mut r = ReadAhead::new(3, 8, 1, 0).unwrap();
        assert_eq!(r.on_data(1, &data(1, 8)), step(1..=1, Some(1)));
        assert_eq!(r.on_data(2, &data(2, 8)), step(none(), Some(2)));
        // Three ahead of the client's ACK (0): no room after block 3, the ACK waits.
        assert_eq!(r.on_data(3, &data(3, 8)), step(none(), None));
        assert!(!r.waiting_on_backend());
        assert_eq!(r.on_ack(1), Some(step(2..=2, Some(3))));
        assert_eq!(r.datagram(2), data(2, 8).as_slice());
        assert!(r.waiting_on_backend());
    }

    #[test]
    fn a_duplicate_ack_is_never_answered_with_a_resend() {
        let mut r = ReadAhead::new(4, 8, 1, 0).unwrap();
        r.on_data(1, &data(1, 8));
        r.on_data(2, &data(2, 8));
        assert_eq!(r.on_ack(1), Some(step(2..=2, None)));
        assert_eq!(r.on_ack(1), Some(Step::nothing()));
        assert_eq!(r.on_ack(0), Some(Step::nothing()));
        assert_eq!(r.on_ack(5), None, "never sent: ignored");
        assert_eq!(r.unacked(), 2..=2);
    }

    #[test]
    fn the_backends_retransmission_gets_our_ack_again() {
        let mut r = ReadAhead::new(4, 8, 1, 0).unwrap();
        assert_eq!(r.on_data(1, &data(1, 8)).ack_backend, Some(1));
        assert_eq!(r.on_data(1, &data(1, 8)), step(none(), Some(1)));
    }

    #[test]
    fn the_final_block_is_acknowledged_at_once_and_completes_on_the_clients_ack() {
        let mut r = ReadAhead::new(1, 8, 1, 0).unwrap();
        assert_eq!(r.on_data(1, &data(1, 8)), step(1..=1, None));
        assert_eq!(r.on_ack(1), Some(step(none(), Some(1))));
        assert_eq!(r.on_data(2, &data(2, 3)), step(2..=2, Some(2)));
        assert!(r.backend_done() && !r.complete());
        assert_eq!(r.on_ack(2), Some(Step::nothing()));
        assert!(r.complete());
    }

    #[test]
    fn a_whole_transfer_delivers_every_block_in_order() {
        for ahead in [1u16, 2, 4, 16] {
            let mut r = ReadAhead::new(ahead, 8, 1, 0).unwrap();
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
                    let s = r.on_ack(pos).expect("sent");
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
        let mut r = ReadAhead::new(2, 8, 1, 0).unwrap();
        r.on_data(1, &data(1, 8));
        r.on_data(2, &data(2, 8)); // two ahead of ACK 0: our ACK of 2 waits
        r.resumed(); // the backend died; the new leg caught up to 2 and got our ACK of 2
        assert_eq!(r.on_data(3, &data(3, 8)), step(none(), None));
        assert_eq!(r.received(), 3);
        assert_eq!(r.on_ack(1), Some(step(2..=2, None)));
        assert_eq!(r.on_ack(2), Some(step(3..=3, Some(3))));
        assert_eq!(r.datagram(3), data(3, 8).as_slice());
    }

    #[test]
    fn a_large_blksize_gets_fewer_blocks_ahead() {
        let r = ReadAhead::new(16, 65464, 1, 0).unwrap();
        assert_eq!(r.ahead, 1);
        assert_eq!(r.ring.len(), 2 * (65464 + 4));
        assert!(
            ReadAhead::new(4, 1468, 16, 0).is_some(),
            "48 slots of 1472 bytes fit"
        );
        assert!(
            ReadAhead::new(4, 8192, 16, 0).is_none(),
            "packet for packet instead"
        );
    }

    #[test]
    fn windows_flow_on_both_legs_and_a_short_ack_restarts_the_clients_window() {
        let mut r = ReadAhead::new(0, 8, 2, 0).unwrap(); // ahead: two windows = 4 blocks
        assert_eq!(r.on_data(1, &data(1, 8)), step(1..=1, None));
        // The backend's window (1, 2) is complete and its next one fits: ACK 2.
        assert_eq!(r.on_data(2, &data(2, 8)), step(2..=2, Some(2)));
        assert_eq!(r.on_data(3, &data(3, 8)), step(none(), None));
        // Window (3, 4) complete, but 4 + 2 > ACK 0 + 4: it waits for the client.
        assert_eq!(r.on_data(4, &data(4, 8)), step(none(), None));
        assert!(!r.waiting_on_backend());
        assert_eq!(r.on_ack(2), Some(step(3..=4, Some(4))));
        // The client lost block 4: its ACK 3 restarts its window at 4.
        assert_eq!(r.on_ack(3), Some(step(4..=4, None)));
        assert_eq!(r.on_ack(3), Some(Step::nothing()));
        assert_eq!(r.unacked(), 4..=4);
    }

    #[test]
    fn a_gap_on_the_backend_leg_is_acknowledged_once() {
        let mut r = ReadAhead::new(0, 8, 4, 0).unwrap();
        r.on_data(1, &data(1, 8));
        assert_eq!(r.on_gap(), Some(1), "block 2 lost, 3 arrived");
        assert_eq!(r.on_gap(), None, "block 4 arrived too: no second ACK");
        assert!(r.waiting_on_backend());
        // The backend restarts after 1; its window is now 2..=5.
        for b in 2..=4 {
            assert_eq!(r.on_data(b, &data(b, 8)), step(b..=b, None));
        }
        assert_eq!(r.on_ack(4), Some(Step::nothing()));
        assert_eq!(r.on_data(5, &data(5, 8)), step(5..=5, Some(5)));
    }

    #[test]
    fn an_ack_of_a_block_read_ahead_but_not_sent_is_ignored_and_the_next_ack_counts() {
        let mut r = ReadAhead::new(0, 8, 4, 0).unwrap(); // window 4, ahead 8
        for b in 1..=4 {
            assert_eq!(r.on_data(b, &data(b, 8)).to_client, b..=b);
        }
        for b in 5..=8 {
            assert_eq!(
                r.on_data(b, &data(b, 8)).to_client,
                none(),
                "read ahead only"
            );
        }
        assert_eq!(r.received(), 8);
        // The client acknowledges block 5, stored here but never sent to it: ignored.
        assert_eq!(r.on_ack(5), None);
        assert_eq!((r.acked(), r.unacked()), (0, 1..=4));
        // Its ACK of 4 is judged on its own: the next window goes out.
        assert_eq!(r.on_ack(4), Some(step(5..=8, Some(8))));
        assert_eq!(r.acked(), 4);
        // Once the next window went out, the same ACK of 5 is a short ACK like any other.
        assert_eq!(r.on_ack(5), Some(step(6..=8, None)));
        assert_eq!(r.unacked(), 6..=8);
    }
}
