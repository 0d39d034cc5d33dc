//! What another front end needs to carry a read on, and where the client's next ACK falls
//! given that: pure, so the placement is tested with plain numbers.
//!
//! Why it is subtle: a wire block number names one of many positions in a long transfer, and
//! what was synced is some blocks behind the client (progress goes out every few thousand
//! blocks, and any record may be lost). The ACK is read in a window that starts a little
//! before the synced position: below the synced position it is a stale (reordered or
//! repeated) ACK, to be ignored; past 65535, if the synced state does not say yet how the
//! client numbers blocks after 65535 (to 0 or to 1), a number that means two positions is
//! refused rather than guessed: a wrong guess would shift every following block by one.

use crate::protocol::blocks::Numbering;
use crate::protocol::options::Negotiated;

/// What another front end needs to carry a read on from the client's next ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumable {
    pub negotiated: Negotiated,
    pub had_oack: bool,
    /// How the client numbers blocks after 65535, when `wrap_known`.
    pub wrap_to_one: bool,
    /// Whether the transfer is far enough past 65535 (or numbered by the relay itself) for
    /// `wrap_to_one` to be settled.
    pub wrap_known: bool,
    /// A position the client has acknowledged.
    pub acked: u64,
}

/// Where the client's ACK falls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// At this position.
    At(u64),
    /// Before the synced position: an older ACK, reordered or repeated; wait for the next.
    Stale,
    /// It names two positions (the rollover is not settled): the transfer cannot go on.
    Ambiguous,
}

/// How far before the synced position an ACK is still read as a stale one of this cycle.
const STALE_WINDOW: u64 = 4096;

impl Resumable {
    /// Where the client's ACK of wire block `block` falls.
    pub fn place(&self, block: u16) -> Placed {
        let from = self.acked.saturating_sub(STALE_WINDOW);
        let find = |wrap_to_one| Numbering { wrap_to_one }.position_after(block, from);
        let pos = if self.wrap_known {
            find(self.wrap_to_one)
        } else {
            match (find(false), find(true)) {
                (Some(a), Some(b)) if a != b => return Placed::Ambiguous,
                (a, b) => a.or(b),
            }
        };
        match pos {
            Some(p) if p >= self.acked => Placed::At(p),
            _ => Placed::Stale,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn synced(acked: u64, wrap_known: bool, wrap_to_one: bool) -> Resumable {
        Resumable {
            negotiated: Negotiated::default(),
            had_oack: false,
            wrap_to_one,
            wrap_known,
            acked,
        }
    }

    #[test]
    fn an_ack_lands_at_or_after_the_synced_position() {
        assert_eq!(synced(100, false, false).place(100), Placed::At(100));
        assert_eq!(synced(100, false, false).place(150), Placed::At(150));
        // Settled numbering past the rollover.
        assert_eq!(synced(70_000, true, false).place(4_500), Placed::At(70_036));
        assert_eq!(synced(70_000, true, true).place(4_500), Placed::At(70_035));
    }

    #[test]
    fn an_older_ack_is_stale_not_pushed_a_cycle_ahead() {
        assert_eq!(synced(16_385, false, false).place(16_384), Placed::Stale);
        assert_eq!(synced(16_385, false, false).place(12_289), Placed::Stale);
        assert_eq!(
            synced(16_385, false, false).place(16_386),
            Placed::At(16_386)
        );
    }

    #[test]
    fn past_the_rollover_an_unsettled_numbering_is_not_guessed() {
        // Synced before the wrap: block 5 is position 65,541 (to 0) or 65,540 (to 1).
        assert_eq!(synced(60_000, false, false).place(5), Placed::Ambiguous);
        // Block 0 only comes from a client that wraps to 0.
        assert_eq!(synced(60_000, false, false).place(0), Placed::At(65_536));
        // Before the wrap both numberings agree.
        assert_eq!(
            synced(60_000, false, false).place(62_000),
            Placed::At(62_000)
        );
        // Once settled, the same ACK is placed.
        assert_eq!(synced(60_000, true, true).place(5), Placed::At(65_540));
        assert_eq!(synced(60_000, true, false).place(5), Placed::At(65_541));
    }
}
