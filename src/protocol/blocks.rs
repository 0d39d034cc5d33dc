//! Block numbering, the one place that knows how 16-bit wire block numbers map to 64-bit file
//! positions (1, 2, … 65535, then 0 on most servers, 1 on some, and on).
//!
//! - [`Numbering`] maps both ways for a side whose rollover is known (the relay's session keeps
//!   one for the client and one for each backend leg, and renumbers between them).
//! - [`Sequence`] is a receiver's count: it classifies each arriving block as in order, old
//!   (a duplicate) or ahead (a gap), and learns the sender's rollover when it happens (the
//!   async client uses it).
//!
//! The read-ahead works on file positions only; the session writes them in each side's
//! numbering.

/// How wire block numbers map to file positions: 1, 2, … 65535, then 0 (or 1), 1, …
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Numbering {
    pub wrap_to_one: bool,
}

impl Numbering {
    /// The wire block number of file position `pos` (0 is the OACK's ACK).
    pub fn wire(self, pos: u64) -> u16 {
        if self.wrap_to_one && pos >= 65536 {
            ((pos - 65536) % 65535 + 1) as u16
        } else {
            pos as u16
        }
    }

    /// The latest position at or before `near` whose wire number is `wire`, looking back at most
    /// `LOOK_BACK` blocks (ACKs and retransmissions concern the last window or so).
    pub fn position(self, wire: u16, near: u64) -> Option<u64> {
        (0..=LOOK_BACK.min(near))
            .map(|d| near - d)
            .find(|&p| self.wire(p) == wire)
    }
}

const LOOK_BACK: u64 = 4096;

impl Numbering {
    /// The first position at or after `from` whose wire number is `wire` (a peer placing a
    /// client's ACK after the last position it was told of); none within one cycle.
    pub fn position_after(self, wire: u16, from: u64) -> Option<u64> {
        (from..from + 65_537).find(|&p| self.wire(p) == wire)
    }
}

/// How the server numbers the block after 65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wrap {
    /// Not wrapped yet.
    Undecided,
    ToZero,
    ToOne,
}

/// Where a received block stands relative to the next expected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seq {
    InOrder,
    /// Already received: ignore.
    Old,
    /// Beyond the next expected block: some were lost.
    Ahead,
}

/// A receiver's block numbering: 16 bits on the wire, a 64-bit count here, and how the
/// sender rolls over, learned when it does.
#[derive(Debug)]
pub struct Sequence {
    /// Count (1-based) of the next expected block.
    next: u64,
    wrap: Wrap,
    /// Times block 1 arrived where block 0 or 1 was due at the first wrap.
    ones_at_wrap: u8,
}

impl Sequence {
    pub fn new() -> Sequence {
        Sequence {
            next: 1,
            wrap: Wrap::Undecided,
            ones_at_wrap: 0,
        }
    }

    /// The wire number of block count `n` (0 for "nothing yet", as ACK 0 after an OACK).
    pub fn wire(&self, n: u64) -> u16 {
        self.numbering().wire(n)
    }

    /// The numbering learned so far (rollover to 0 until the sender shows otherwise).
    pub fn numbering(&self) -> Numbering {
        Numbering {
            wrap_to_one: self.wrap == Wrap::ToOne,
        }
    }

    /// How the sender rolls over, as far as seen.
    pub fn wrap(&self) -> Wrap {
        self.wrap
    }

    /// Blocks received in order so far.
    pub fn received(&self) -> u64 {
        self.next - 1
    }

    /// The wire number of the last in-order block (what an ACK carries).
    pub fn last(&self) -> u16 {
        self.wire(self.next - 1)
    }

    /// Classifies block `wire`; an in-order block advances the count.
    pub fn classify(&mut self, wire: u16, windowsize: u16) -> Seq {
        let seq = if self.next == 65536 && self.wrap == Wrap::Undecided {
            self.classify_at_wrap(wire, windowsize)
        } else {
            self.classify_plain(wire)
        };
        if seq == Seq::InOrder {
            self.next += 1;
        }
        seq
    }

    fn classify_plain(&self, wire: u16) -> Seq {
        let (pos, due, modulus) = match self.wrap {
            Wrap::ToOne if wire == 0 => return Seq::Old,
            Wrap::ToOne => (u32::from(wire) - 1, (self.next - 1) % 65535, 65535),
            _ => (u32::from(wire), self.next % 65536, 65536),
        };
        let ahead = (u64::from(pos) + modulus - due) % modulus;
        match ahead {
            0 => Seq::InOrder,
            a if a < modulus / 2 => Seq::Ahead,
            _ => Seq::Old,
        }
    }

    /// The first block after 65535 is 0 on most servers, 1 on some. Block 0 settles it. Block 1
    /// settles it in lock-step; with windows it could also mean block 0 was lost, so it counts
    /// as a gap the first time (the re-ACK of 65535 makes the server resend from its next
    /// block: 0 or 1 again).
    fn classify_at_wrap(&mut self, wire: u16, windowsize: u16) -> Seq {
        match wire {
            0 => self.wrap = Wrap::ToZero,
            1 if windowsize == 1 || self.ones_at_wrap > 0 => self.wrap = Wrap::ToOne,
            1 => {
                self.ones_at_wrap += 1;
                return Seq::Ahead;
            }
            w if w < 32768 => return Seq::Ahead,
            _ => return Seq::Old,
        }
        Seq::InOrder
    }
}

impl Default for Sequence {
    fn default() -> Self {
        Sequence::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbering_maps_both_ways() {
        let one = Numbering { wrap_to_one: true };
        assert_eq!(
            (one.wire(65535), one.wire(65536), one.wire(65537)),
            (65535, 1, 2)
        );
        assert_eq!(one.position(1, 65540), Some(65536));
        let zero = Numbering::default();
        assert_eq!((zero.wire(65535), zero.wire(65536)), (65535, 0));
        assert_eq!(zero.position(0, 65538), Some(65536));
        assert_eq!(zero.position(0, 3), Some(0));
    }

    #[test]
    fn blocks_classify_duplicates_gaps_and_wraps() {
        let mut b = Sequence::new();
        assert_eq!(b.classify(1, 1), Seq::InOrder);
        assert_eq!(b.classify(1, 1), Seq::Old);
        assert_eq!(b.classify(3, 1), Seq::Ahead);
        assert_eq!(b.last(), 1);
        b.next = 65536;
        assert_eq!(b.classify(65535, 4), Seq::Old);
        assert_eq!(b.classify(1, 4), Seq::Ahead, "block 0 may have been lost");
        assert_eq!(
            b.classify(1, 4),
            Seq::InOrder,
            "the server resent 1: it wraps to 1"
        );
        assert_eq!(
            (b.wrap, b.last(), b.wire(65536 + 65535)),
            (Wrap::ToOne, 1, 1)
        );
        let mut z = Sequence {
            next: 65536,
            ..Sequence::new()
        };
        assert_eq!(z.classify(0, 4), Seq::InOrder);
        assert_eq!((z.wrap, z.last()), (Wrap::ToZero, 0));
        assert_eq!(z.classify(65535, 4), Seq::Old);
        assert_eq!(z.classify(1, 4), Seq::InOrder);
    }
}
