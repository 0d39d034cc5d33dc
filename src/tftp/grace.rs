//! How long a session that sent its client the first answer is safe from being ended to make
//! room (see `table`): long enough for a live client to answer, learned from how long clients
//! took lately.
//!
//! A client that got the first DATA or OACK is locked onto the session's port; ending the
//! session then strands it until its own retries run out. A live client answers within a round
//! trip, milliseconds on a LAN, but a loaded host (the client's, or tftplb's own scheduling of
//! the session's task) can stretch that to hundreds. So the grace is twice the slowest first
//! answer seen lately, never less than [`MIN_GRACE`] and never more than [`MAX_GRACE`], one
//! retransmission interval of most clients: a client slower than its own retries is not waited
//! for. Sources that never answer (a spoofed flood) teach it nothing; a real client answering
//! slowly on purpose can only push it to the maximum.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// The grace on a host where every client answers promptly.
pub const MIN_GRACE: Duration = Duration::from_millis(250);

/// The grace however slowly clients answered: 1 s, the retransmission interval of most PXE
/// clients and tftplb's default for a client that negotiated none.
pub const MAX_GRACE: Duration = Duration::from_secs(1);

/// The slowest first answer seen lately, in microseconds: a maximum that loses an eighth of
/// itself with each later answer, so one slow moment fades after a few dozen prompt ones.
#[derive(Debug, Default)]
pub struct AnswerGrace {
    slowest_us: AtomicU64,
}

impl AnswerGrace {
    /// A client answered its session's first answer `delay` after it was sent.
    pub fn answered_after(&self, delay: Duration) {
        let us = u64::try_from(delay.as_micros()).unwrap_or(u64::MAX);
        let _ = self
            .slowest_us
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |old| {
                Some(us.max(old - old / 8))
            });
    }

    /// How long a session whose first answer went out is safe from being ended.
    pub fn grace(&self) -> Duration {
        let slowest = Duration::from_micros(self.slowest_us.load(Ordering::Relaxed));
        slowest.saturating_mul(2).clamp(MIN_GRACE, MAX_GRACE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn prompt_clients_leave_the_minimum() {
        let g = AnswerGrace::default();
        assert_eq!(g.grace(), MIN_GRACE, "nothing seen yet");
        for _ in 0..100 {
            g.answered_after(ms(2));
        }
        assert_eq!(g.grace(), MIN_GRACE);
    }

    #[test]
    fn a_slow_answer_widens_the_grace_until_prompt_ones_wear_it_down() {
        let g = AnswerGrace::default();
        g.answered_after(ms(300));
        assert_eq!(g.grace(), ms(600));
        g.answered_after(ms(1));
        assert_eq!(g.grace(), ms(525), "an eighth less per later answer");
        let mut answers = 1;
        while g.grace() > MIN_GRACE {
            g.answered_after(ms(1));
            answers += 1;
            assert!(answers < 20, "still {:?}", g.grace());
        }
        assert!(answers >= 5, "faded after only {answers}");
    }

    #[test]
    fn however_slow_the_answers_the_grace_stays_at_one_interval() {
        let g = AnswerGrace::default();
        g.answered_after(ms(700));
        assert_eq!(g.grace(), MAX_GRACE);
        g.answered_after(Duration::MAX);
        assert_eq!(g.grace(), MAX_GRACE);
        g.answered_after(ms(1));
        assert_eq!(g.grace(), MAX_GRACE, "no overflow in the decay");
    }
}
