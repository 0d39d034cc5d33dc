//! The sender of a transfer from memory, as a pure machine: positions in, what to send out,
//! every decision with an explicit `now`. The same rules as the read-ahead's sender:
//!
//! - blocks go `window` at a time (1: lock-step); an ACK of the whole window brings the next;
//!   an ACK short of what was sent (a block was lost) restarts the window after it (RFC 7440);
//! - a duplicate or old ACK gets nothing (RFC 1123 §4.2.3.1: no sorcerer's apprentice);
//! - its own timer re-sends what is unacknowledged after the client's timeout (1 s unless it
//!   named one, at most 5 s); a client that never answered gets `Resends::unanswered`
//!   re-sends, one that went silent `Resends::answered` (the relay's own numbers, given by the
//!   caller), then the transfer ends;
//! - block numbers roll over past 65535 to 0 (`protocol::blocks`), so a file of any size goes.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use crate::protocol::blocks::Numbering;

/// How many times the timer re-sends before the transfer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resends {
    /// To a client that never answered (a spoofed source never does).
    pub unanswered: u32,
    /// To a client that answered, then went silent.
    pub answered: u32,
}

/// The longest retransmission interval used, whatever `timeout` the client asked for.
const MAX_INTERVAL: u8 = 5;

/// What to send now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Send {
    Nothing,
    Oack,
    /// DATA of these file positions (1 is the first block).
    Blocks(RangeInclusive<u64>),
    /// The client acknowledged the final block.
    Done,
    /// The client stopped answering.
    GiveUp,
}

#[derive(Debug)]
pub struct Sender {
    size: u64,
    blksize: u64,
    window: u64,
    /// The final block's position (a size that is a multiple of blksize ends with an empty one).
    last: u64,
    acked: u64,
    sent: u64,
    /// An OACK waits for its ACK 0.
    oack_pending: bool,
    answered: bool,
    interval: Duration,
    deadline: Option<Instant>,
    resends: u32,
    limits: Resends,
}

/// What a transfer from memory is: the copy's size and the negotiated plan.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub size: u64,
    pub blksize: u16,
    pub window: u16,
    pub oack: bool,
    pub timeout: Option<u8>,
}

impl Sender {
    pub fn new(shape: Shape, limits: Resends) -> Sender {
        let Shape {
            size,
            blksize,
            window,
            oack,
            timeout,
        } = shape;
        let blksize = u64::from(blksize.max(1));
        Sender {
            size,
            blksize,
            window: u64::from(window.max(1)),
            last: size / blksize + 1,
            acked: 0,
            sent: 0,
            oack_pending: oack,
            answered: false,
            interval: Duration::from_secs(timeout.unwrap_or(1).clamp(1, MAX_INTERVAL).into()),
            deadline: None,
            resends: 0,
            limits,
        }
    }

    /// The first thing to send: the OACK, or the first window.
    pub fn start(&mut self, now: Instant) -> Send {
        self.deadline = Some(now + self.interval);
        if self.oack_pending {
            Send::Oack
        } else {
            self.window_after(0)
        }
    }

    /// The client sent its request again (it lost our first answer): that answer again, while
    /// it has not answered.
    pub fn on_request_again(&mut self, now: Instant) -> Send {
        if self.answered {
            return Send::Nothing;
        }
        self.deadline = Some(now + self.interval);
        if self.oack_pending {
            Send::Oack
        } else {
            Send::Blocks(1..=self.sent)
        }
    }

    /// An ACK with wire block number `wire`.
    pub fn on_ack(&mut self, wire: u16, now: Instant) -> Send {
        if self.oack_pending {
            if wire != 0 {
                return Send::Nothing;
            }
            self.oack_pending = false;
            self.heard(now);
            return self.window_after(0);
        }
        let Some(pos) = Numbering::default().position(wire, self.sent) else {
            return Send::Nothing;
        };
        if pos <= self.acked {
            return Send::Nothing;
        }
        self.acked = pos;
        self.heard(now);
        if pos == self.last {
            self.deadline = None;
            return Send::Done;
        }
        self.window_after(pos)
    }

    /// The timer: what is unacknowledged again, or the end of a silent transfer.
    pub fn on_timer(&mut self, now: Instant) -> Send {
        if self.deadline.is_none_or(|d| now < d) {
            return Send::Nothing;
        }
        let allowed = if self.answered {
            self.limits.answered
        } else {
            self.limits.unanswered
        };
        if self.resends >= allowed {
            self.deadline = None;
            return Send::GiveUp;
        }
        self.resends += 1;
        self.deadline = Some(now + self.interval);
        if self.oack_pending {
            Send::Oack
        } else {
            Send::Blocks(self.acked + 1..=self.sent)
        }
    }

    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The bytes of position `pos` within the file.
    pub fn bytes_of(&self, pos: u64) -> std::ops::Range<usize> {
        let start = ((pos - 1) * self.blksize).min(self.size);
        let end = (pos * self.blksize).min(self.size);
        start as usize..end as usize
    }

    /// The wire block number of position `pos`.
    pub fn wire(&self, pos: u64) -> u16 {
        Numbering::default().wire(pos)
    }

    /// Blocks acknowledged so far.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    fn heard(&mut self, now: Instant) {
        self.answered = true;
        self.resends = 0;
        self.deadline = Some(now + self.interval);
    }

    /// The window after position `pos` (blocks already sent in it go again: the client asked
    /// from there).
    fn window_after(&mut self, pos: u64) -> Send {
        let end = (pos + self.window).min(self.last);
        self.sent = self.sent.max(end);
        Send::Blocks(pos + 1..=end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const UNANSWERED_REPEATS: u32 = 2;
    const MAX_RESENDS: u32 = 5;

    fn sender(size: u64, blksize: u16, window: u16, oack: bool, timeout: Option<u8>) -> Sender {
        let shape = Shape {
            size,
            blksize,
            window,
            oack,
            timeout,
        };
        Sender::new(
            shape,
            Resends {
                unanswered: UNANSWERED_REPEATS,
                answered: MAX_RESENDS,
            },
        )
    }

    #[test]
    fn lock_step_without_options_sends_block_after_block() {
        let t0 = Instant::now();
        // 1024 bytes at 512: two full blocks and an empty final one.
        let mut s = sender(1024, 512, 1, false, None);
        assert_eq!(s.start(t0), Send::Blocks(1..=1));
        assert_eq!(s.bytes_of(1), 0..512);
        assert_eq!(s.on_ack(1, t0), Send::Blocks(2..=2));
        // A duplicate ACK gets nothing (no sorcerer's apprentice).
        assert_eq!(s.on_ack(1, t0), Send::Nothing);
        assert_eq!(s.on_ack(2, t0), Send::Blocks(3..=3));
        assert_eq!(s.bytes_of(3), 1024..1024);
        assert_eq!(s.on_ack(3, t0), Send::Done);
    }

    #[test]
    fn an_oack_waits_for_ack_0_then_windows_go_and_a_short_ack_restarts() {
        let t0 = Instant::now();
        let mut s = sender(10 * 100 + 50, 100, 4, true, None);
        assert_eq!(s.start(t0), Send::Oack);
        assert_eq!(s.on_ack(1, t0), Send::Nothing, "not the OACK's ACK");
        assert_eq!(s.on_ack(0, t0), Send::Blocks(1..=4));
        assert_eq!(s.on_ack(4, t0), Send::Blocks(5..=8));
        // Block 7 was lost: the client acknowledges 6; the window restarts after it.
        assert_eq!(s.on_ack(6, t0), Send::Blocks(7..=10));
        assert_eq!(s.on_ack(10, t0), Send::Blocks(11..=11));
        assert_eq!(s.on_ack(11, t0), Send::Done);
    }

    #[test]
    fn the_timer_resends_the_unacknowledged_and_gives_up_on_silence() {
        let t0 = Instant::now();
        let mut s = sender(5000, 512, 4, false, Some(2));
        assert_eq!(s.start(t0), Send::Blocks(1..=4));
        assert_eq!(s.deadline(), Some(t0 + 2000 * MS));
        assert_eq!(s.on_timer(t0 + 1999 * MS), Send::Nothing);
        // Never answered: a spoofed source gets its few repeats only.
        let mut t = t0;
        for _ in 0..UNANSWERED_REPEATS {
            t += 2000 * MS;
            assert_eq!(s.on_timer(t), Send::Blocks(1..=4));
        }
        assert_eq!(s.on_timer(t + 2000 * MS), Send::GiveUp);
        // A client that answered, then went silent, gets MAX_RESENDS.
        let mut s = sender(5000, 512, 4, false, None);
        s.start(t0);
        assert_eq!(s.on_ack(2, t0), Send::Blocks(3..=6));
        let mut t = t0;
        for _ in 0..MAX_RESENDS {
            t += 1000 * MS;
            assert_eq!(s.on_timer(t), Send::Blocks(3..=6));
        }
        assert_eq!(s.on_timer(t + 1000 * MS), Send::GiveUp);
    }

    #[test]
    fn a_repeated_request_gets_the_first_answer_until_the_client_answers() {
        let t0 = Instant::now();
        let mut s = sender(100, 512, 1, true, None);
        assert_eq!(s.start(t0), Send::Oack);
        assert_eq!(s.on_request_again(t0), Send::Oack);
        assert_eq!(s.on_ack(0, t0), Send::Blocks(1..=1));
        assert_eq!(s.on_request_again(t0), Send::Nothing);
        assert_eq!(s.on_ack(1, t0), Send::Done);
    }

    #[test]
    fn block_numbers_roll_over_to_zero() {
        let t0 = Instant::now();
        let blocks = 70_000u64;
        let mut s = sender(blocks * 8, 8, 16, false, None);
        let mut next = s.start(t0);
        let mut acks = 0;
        while let Send::Blocks(range) = next {
            let end = *range.end();
            assert_eq!(s.wire(end), end as u16);
            next = s.on_ack(s.wire(end), t0);
            acks += 1;
        }
        assert_eq!(next, Send::Done);
        assert_eq!(s.acked(), blocks + 1);
        assert_eq!(acks, (blocks + 1).div_ceil(16));
        assert_eq!(s.wire(65_536), 0);
    }
}
