//! Refusing replayed and stale records: per peer, a sliding window over sequence numbers (as
//! IPsec keeps one), and a bound on the age of a record by its sender's clock.
//!
//! Why both: the window catches a record sent twice while the peer runs; a sender numbers its
//! records from its start time in microseconds, so a restarted peer goes on above its old
//! numbers, and the age bound refuses a record captured long ago and sent again after this
//! node restarted (and forgot its windows). Pure: sequence numbers and milliseconds in.

/// How far back (in sequence numbers) a record may arrive out of order.
const WINDOW: u64 = 64;

/// A record older (or newer) than this by its sender's clock is refused: the peers' clocks
/// are assumed within this of each other (NTP).
pub const MAX_SKEW_MS: u64 = 30_000;

/// Why a record was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    Replayed,
    TooOld,
}

impl Stale {
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::Replayed => "replayed",
            Stale::TooOld => "stale",
        }
    }
}

/// One peer's window: the highest sequence number accepted and which of the ones below it
/// were seen.
#[derive(Debug, Default, Clone)]
pub struct Window {
    top: u64,
    seen: u64,
}

impl Window {
    /// Accepts `seq` sent at `sent_ms` when it is fresh and not seen before; records it.
    pub fn accept(&mut self, seq: u64, sent_ms: u64, now_ms: u64) -> Result<(), Stale> {
        if sent_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(Stale::TooOld);
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = seq;
            return Ok(());
        }
        let back = self.top - seq;
        if back >= WINDOW {
            return Err(Stale::TooOld);
        }
        let bit = 1u64 << back;
        if self.seen & bit != 0 {
            return Err(Stale::Replayed);
        }
        self.seen |= bit;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn each_number_is_taken_once_in_any_order_within_the_window() {
        let mut w = Window::default();
        assert_eq!(w.accept(100, NOW, NOW), Ok(()));
        assert_eq!(w.accept(100, NOW, NOW), Err(Stale::Replayed));
        assert_eq!(w.accept(98, NOW, NOW), Ok(()), "late but new");
        assert_eq!(w.accept(98, NOW, NOW), Err(Stale::Replayed));
        assert_eq!(w.accept(101, NOW, NOW), Ok(()));
        assert_eq!(w.accept(99, NOW, NOW), Ok(()));
        assert_eq!(w.accept(101 - WINDOW, NOW, NOW), Err(Stale::TooOld));
        assert_eq!(
            w.accept(1_000, NOW, NOW),
            Ok(()),
            "a jump clears the window"
        );
        assert_eq!(w.accept(999, NOW, NOW), Ok(()));
        assert_eq!(w.accept(101, NOW, NOW), Err(Stale::TooOld));
    }

    #[test]
    fn a_record_sent_long_ago_or_in_the_future_is_stale() {
        let mut w = Window::default();
        assert_eq!(w.accept(1, NOW - MAX_SKEW_MS - 1, NOW), Err(Stale::TooOld));
        assert_eq!(w.accept(2, NOW + MAX_SKEW_MS + 1, NOW), Err(Stale::TooOld));
        assert_eq!(w.accept(3, NOW - MAX_SKEW_MS, NOW), Ok(()));
    }
}
