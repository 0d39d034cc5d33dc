//! Every decision of a relayed transfer that depends on the clock: when the session has been
//! idle too long, when a client that never answered is given up, when a backend counts as
//! stalled, when the client gets its blocks again and how often, how often a backend catching
//! up gets our ACK again, and how long a socket lingers.
//!
//! A client that has not answered the first reply may be a spoofed source: the request named
//! someone else's address, and everything sent there is reflected at that victim. Until the
//! client answers, it gets the first reply and at most two more datagrams (the backend's
//! retransmissions passed on, or our own read-ahead resends), and the session ends after two of
//! its retransmission intervals ([`unanswered_patience`]): a client that lost the reply
//! retransmits its request within that, or starts a new session after it.
//!
//! Why a type of its own: these rules interact (a resend, an idle end and a stall can all fall
//! due at once) and are easy to get subtly wrong, for instance a deadline already past that
//! spins the loop, or a stall blamed on a backend that owes nothing. Kept apart from the sockets,
//! like `session` and `readahead`, they are tested with explicit instants instead of sleeps.
//!
//! No I/O, no sleeping: the relay task tells [`Timers`] what happened (with `now`), sleeps until
//! [`Timers::next_deadline`], and when it wakes performs what [`Timers::on_timer`] returns. The
//! facts the rules depend on but do not own (catch-up, negotiated timeout, the read-ahead's
//! state) come in as a plain [`Facts`] value each time.

use std::time::Duration;

use tokio::time::Instant;

use crate::tftp::config::RelaySettings;
use crate::tftp::session::Outcome;

/// Datagrams a client that has not answered yet gets besides the first reply.
pub const UNANSWERED_REPEATS: u32 = 2;

/// Retransmissions of our own ACK to a backend taking over, before trying yet another.
pub const CATCH_UP_RETRIES: u32 = 3;

/// Read-ahead: retransmissions to a client that sends nothing at all, before the session ends
/// (a client that is alive re-sends its ACK on its own timer, which starts the count again).
/// The backends of the demo and bench (async-tftp) are set to give up after as many.
pub const MAX_RESENDS: u32 = 5;

/// How long a socket a session let go of stays bound. Longer than backends keep retransmitting
/// (async-tftp 5 × 1 s, tftpd-hpa about as long), so a late packet of an abandoned transfer
/// can never reach another session that got the same port from the kernel.
pub const QUARANTINE: Duration = Duration::from_secs(15);

/// The retransmission timeout toward the client when it negotiated none (what tftpd-hpa and
/// most servers start with).
const DEFAULT_CLIENT_TIMEOUT: u8 = 1;

/// The longest retransmission interval assumed of a client, whatever `timeout` it asked for: a
/// spoofed request naming 255 s must not hold a session for minutes.
const MAX_CLIENT_INTERVAL: u8 = 5;

/// How long a session waits on a client that has not answered (or retransmitted its request)
/// before giving up: two of the client's retransmission intervals, its `timeout` (at most 5 s),
/// else 1 s. A client that lost a reply retransmits within that; a spoofed source never does.
pub fn unanswered_patience(timeout: Option<u8>) -> Duration {
    secs(
        timeout
            .unwrap_or(DEFAULT_CLIENT_TIMEOUT)
            .clamp(1, MAX_CLIENT_INTERVAL),
    ) * 2
}

/// The timeout a write's final ACK is kept ready for when the client negotiated none.
const DEFAULT_DALLY_TIMEOUT: u8 = 3;

/// How long a completed write keeps answering a repeated final DATA with its ACK: twice the
/// negotiated timeout, else twice 3 s (RFC 1350: the side that sends the last ACK waits in case
/// it is lost).
pub fn dally(negotiated_timeout: Option<u8>) -> Duration {
    secs(negotiated_timeout.unwrap_or(DEFAULT_DALLY_TIMEOUT)) * 2
}

/// What the rules need to know of the transfer at the moment they are asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Facts {
    /// A backend taking over is catching up: the ACK it gets again when it goes quiet.
    pub catch_up: Option<u16>,
    /// The `timeout` option the transfer negotiated (seconds).
    pub negotiated_timeout: Option<u8>,
    /// The read-ahead's state, when the transfer is read ahead.
    pub ahead: Option<Ahead>,
}

/// What the read-ahead tells the timers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ahead {
    /// Blocks went to the client that it has not acknowledged.
    pub unacked: bool,
    /// We acknowledged everything the backend sent: its next block is due.
    pub waiting_on_backend: bool,
}

/// Why a backend is given up on when it went quiet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stall {
    /// It stopped sending while it owed blocks.
    MidTransfer,
    /// It took over and stopped answering our ACK while catching up.
    CatchingUp,
}

impl Stall {
    /// What counts against the backend's health.
    pub fn passive_failure(self) -> &'static str {
        match self {
            Stall::MidTransfer => "stopped sending mid-transfer",
            Stall::CatchingUp => "stopped sending while catching up",
        }
    }

    /// What the failover log line says.
    pub fn why(self) -> &'static str {
        match self {
            Stall::MidTransfer => "stalled",
            Stall::CatchingUp => "stalled while catching up",
        }
    }
}

/// What a timer wake-up asks of the relay, in order: the client's blocks again first, then
/// [`Due::then`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Send the client the blocks it has not acknowledged (read-ahead).
    pub resend_to_client: bool,
    pub then: TimerAction,
}

/// The second half of a timer wake-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    Nothing,
    /// End the session.
    End(Outcome),
    /// Send our ACK of this block (the backend's numbering) again to a backend catching up.
    ReAckBackend(u16),
    /// Give the backend up and resume on another.
    FailOver(Stall),
}

impl Due {
    fn end(outcome: Outcome) -> Due {
        Due {
            resend_to_client: false,
            then: TimerAction::End(outcome),
        }
    }
}

/// The clock of one transfer: when each side was last heard from, and the retransmissions
/// counted since.
#[derive(Debug, Clone)]
pub struct Timers {
    idle_timeout: Duration,
    stall_timeout: Duration,
    setup_timeout: Duration,
    /// The pool resumes on another backend: only then is a stall judged at all.
    resume: bool,
    last_client: Instant,
    /// When the backend last made progress, or got an ACK of ours (its turn started).
    last_data: Instant,
    /// When the last block went to the client (read-ahead: its retransmission timer).
    sent_at: Instant,
    /// Retransmissions to the client since it last sent anything.
    resends: u32,
    /// Our own ACK re-sent to a backend catching up, since its last block.
    catch_up_retries: u32,
    /// When the first reply went to the client.
    started: Instant,
    /// Whether the client ever sent anything to the session.
    client_answered: bool,
    /// Datagrams sent to the client before it answered.
    unanswered_sent: u32,
}

impl Timers {
    /// The clock of a transfer whose backend answered at `now`.
    pub fn new(settings: &RelaySettings, resume: bool, now: Instant) -> Timers {
        Timers {
            idle_timeout: settings.idle_timeout,
            stall_timeout: settings.stall_timeout,
            setup_timeout: settings.setup_timeout,
            resume,
            last_client: now,
            last_data: now,
            sent_at: now,
            resends: 0,
            catch_up_retries: 0,
            started: now,
            client_answered: false,
            unanswered_sent: 0,
        }
    }

    /// A datagram from the client: it is alive, the count of resends starts again.
    pub fn heard_client(&mut self, now: Instant) {
        self.last_client = now;
        self.resends = 0;
        self.client_answered = true;
    }

    /// Whether a datagram may go to the client now: always once it answered; before, the
    /// first reply and [`UNANSWERED_REPEATS`] more (counted here).
    pub fn may_send_to_client(&mut self) -> bool {
        if self.client_answered {
            return true;
        }
        self.unanswered_sent += 1;
        self.unanswered_sent <= 1 + UNANSWERED_REPEATS
    }

    /// When a client that has not answered is given up.
    fn unanswered_deadline(&self, facts: &Facts) -> Option<Instant> {
        (!self.client_answered)
            .then(|| self.started + unanswered_patience(facts.negotiated_timeout))
    }

    /// The backend made progress (a block, an OACK), or a new backend took over.
    pub fn heard_backend(&mut self, now: Instant) {
        self.last_data = now;
        self.catch_up_retries = 0;
    }

    /// We acknowledged the backend's blocks ourselves: its turn starts now.
    pub fn acked_backend(&mut self, now: Instant) {
        self.last_data = now;
    }

    /// Blocks went to the client: its retransmission timer starts.
    pub fn served_client(&mut self, now: Instant) {
        self.sent_at = now;
    }

    /// The next moment something may be due: idle end, stall, a catch-up retransmission, or
    /// the read-ahead's retransmission to the client. Never a moment already past only because
    /// a backend that owes nothing has been quiet (that would spin the loop).
    pub fn next_deadline(&self, now: Instant, facts: &Facts) -> Instant {
        let idle = self.idle_deadline();
        let idle = self
            .unanswered_deadline(facts)
            .map_or(idle, |u| u.min(idle));
        let next = self.resend_due(facts).map_or(idle, |due| due.min(idle));
        if !self.resume {
            return next;
        }
        let stall_after = self.stall_after(facts);
        let stall = self.last_data + stall_after;
        // While the backend owes nothing there is no stall to judge: look again one stall
        // period from now.
        if facts.catch_up.is_some() || self.backend_owes(facts) {
            next.min(stall)
        } else {
            next.min(stall.max(now + stall_after))
        }
    }

    /// When the blocks the client has not acknowledged go out again (read-ahead only).
    pub fn resend_due(&self, facts: &Facts) -> Option<Instant> {
        let ahead = facts.ahead?;
        ahead
            .unacked
            .then(|| self.sent_at + client_timeout(facts.negotiated_timeout))
    }

    /// The timer fired: end an idle session, re-send to the client (read-ahead), re-ACK during
    /// catch-up, or replace a stalled backend.
    pub fn on_timer(&mut self, now: Instant, facts: &Facts) -> Due {
        if now >= self.idle_deadline() {
            return Due::end(Outcome::IdleTimeout);
        }
        if self.unanswered_deadline(facts).is_some_and(|u| now >= u) {
            return Due::end(Outcome::Unanswered);
        }
        let resend_to_client = self.resend_due(facts).is_some_and(|due| now >= due);
        if resend_to_client {
            // A client silent through all of them has gone (rebooted, given up): stop, so a
            // new client that gets its port is not sent stale blocks for long.
            if self.resends >= MAX_RESENDS {
                return Due::end(Outcome::IdleTimeout);
            }
            self.resends += 1;
            self.sent_at = now;
        }
        Due {
            resend_to_client,
            then: self.judge_backend(now, facts),
        }
    }

    /// Whether the backend's silence calls for anything.
    fn judge_backend(&mut self, now: Instant, facts: &Facts) -> TimerAction {
        let stalled = now >= self.last_data + self.stall_after(facts);
        if !self.resume || !stalled {
            return TimerAction::Nothing;
        }
        // While catching up the relay itself drives the new backend.
        if let Some(block) = facts.catch_up {
            return self.retry_catch_up(now, block);
        }
        // Otherwise a stall only counts while the backend owes us something: a client that
        // went away is not the backend's fault.
        if !self.backend_owes(facts) {
            return TimerAction::Nothing;
        }
        TimerAction::FailOver(Stall::MidTransfer)
    }

    /// Our last ACK again to a backend that went quiet while catching up, a few times.
    fn retry_catch_up(&mut self, now: Instant, block: u16) -> TimerAction {
        if self.catch_up_retries >= CATCH_UP_RETRIES {
            return TimerAction::FailOver(Stall::CatchingUp);
        }
        self.catch_up_retries += 1;
        self.last_data = now;
        TimerAction::ReAckBackend(block)
    }

    /// Nothing from either side for this long ends the session.
    fn idle_deadline(&self) -> Instant {
        self.last_client.min(self.last_data) + self.idle_timeout
    }

    /// Whether a silence of the backend now is its fault: with read-ahead, when we acknowledged
    /// everything it sent; otherwise, when the client is still asking.
    fn backend_owes(&self, facts: &Facts) -> bool {
        match facts.ahead {
            Some(ahead) => ahead.waiting_on_backend,
            None => self.last_client > self.last_data,
        }
    }

    /// How long the backend may be silent: `setup_timeout` while catching up; otherwise
    /// `stall_timeout`, but never less than 1.5 times the retransmission timeout the transfer
    /// negotiated (the backend rightly waits that long after a lost block).
    fn stall_after(&self, facts: &Facts) -> Duration {
        if facts.catch_up.is_some() {
            return self.setup_timeout;
        }
        let negotiated = facts.negotiated_timeout.map(|s| secs(s) * 3 / 2);
        self.stall_timeout.max(negotiated.unwrap_or_default())
    }
}

/// The retransmission timeout toward the client: the `timeout` it negotiated, else 1 s.
fn client_timeout(negotiated: Option<u8>) -> Duration {
    secs(negotiated.unwrap_or(DEFAULT_CLIENT_TIMEOUT))
}

fn secs(s: u8) -> Duration {
    Duration::from_secs(u64::from(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: Duration = Duration::from_millis(700);
    const STALL: Duration = Duration::from_secs(2);
    const IDLE: Duration = Duration::from_secs(30);

    fn settings() -> RelaySettings {
        RelaySettings {
            setup_timeout: SETUP,
            setup_attempts: 3,
            idle_timeout: IDLE,
            stall_timeout: STALL,
            read_ahead: 2,
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A clock started at `t0`, the pool resuming, the client having answered at once (most
    /// rules are about a transfer under way).
    fn timers(t0: Instant) -> Timers {
        with_resume(true, t0)
    }

    fn with_resume(resume: bool, t0: Instant) -> Timers {
        let mut t = Timers::new(&settings(), resume, t0);
        t.heard_client(t0);
        t
    }

    /// A clock started at `t0` whose client has not answered.
    fn unanswered(t0: Instant) -> Timers {
        Timers::new(&settings(), true, t0)
    }

    fn nothing() -> Due {
        Due {
            resend_to_client: false,
            then: TimerAction::Nothing,
        }
    }

    fn then(action: TimerAction) -> Due {
        Due {
            resend_to_client: false,
            then: action,
        }
    }

    const RESEND: Due = Due {
        resend_to_client: true,
        then: TimerAction::Nothing,
    };

    /// Packet for packet, the client still asking.
    fn relayed() -> Facts {
        Facts::default()
    }

    /// Read ahead: blocks out to the client, and the backend owing its next one (or not).
    fn ahead(unacked: bool, waiting_on_backend: bool) -> Facts {
        Facts {
            ahead: Some(Ahead {
                unacked,
                waiting_on_backend,
            }),
            ..Facts::default()
        }
    }

    fn catching_up(block: u16) -> Facts {
        Facts {
            catch_up: Some(block),
            ..Facts::default()
        }
    }

    #[test]
    fn a_backend_silent_while_the_client_asks_is_failed_over_after_the_stall_timeout() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        t.heard_client(t0 + ms(100)); // the client asks; the backend owes the next block
        let f = relayed();
        assert_eq!(t.next_deadline(t0 + ms(100), &f), t0 + STALL);
        assert_eq!(t.on_timer(t0 + STALL - ms(1), &f), nothing());
        assert_eq!(
            t.on_timer(t0 + STALL, &f),
            then(TimerAction::FailOver(Stall::MidTransfer))
        );
    }

    #[test]
    fn a_read_ahead_backend_is_stalled_only_while_its_next_block_is_due() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        assert_eq!(t.on_timer(t0 + STALL, &ahead(false, false)), nothing());
        assert_eq!(
            t.on_timer(t0 + STALL, &ahead(false, true)),
            then(TimerAction::FailOver(Stall::MidTransfer))
        );
    }

    #[test]
    fn a_backend_that_owes_nothing_is_never_failed_over() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        // The backend's last block came after the client's last ACK: the client went quiet.
        t.heard_client(t0);
        t.heard_backend(t0 + ms(10));
        let f = relayed();
        for later in [STALL, STALL * 2, IDLE - ms(1)] {
            assert_eq!(t.on_timer(t0 + later, &f), nothing(), "at {later:?}");
        }
    }

    #[test]
    fn a_backend_that_owes_nothing_never_gets_a_deadline_in_the_past() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        t.heard_backend(t0 + ms(10));
        let f = relayed();
        // Its stall deadline (t0 + 10 ms + 2 s) is long past: look again one period from now.
        let now = t0 + ms(10_000);
        assert_eq!(t.next_deadline(now, &f), now + STALL);
        assert!(t.next_deadline(now, &f) > now);
        // While it owes something, the past deadline stands (the timer fires at once, and fails
        // it over).
        t.heard_client(t0 + ms(20));
        assert_eq!(t.next_deadline(now, &f), t0 + ms(10) + STALL);
    }

    #[test]
    fn with_resume_off_a_stall_is_not_judged() {
        let t0 = Instant::now();
        let mut t = with_resume(false, t0);
        t.heard_client(t0 + ms(100));
        let f = relayed();
        assert_eq!(t.next_deadline(t0 + ms(100), &f), t0 + IDLE);
        assert_eq!(t.on_timer(t0 + STALL * 3, &f), nothing());
        assert_eq!(
            t.on_timer(t0 + IDLE, &f),
            Due::end(Outcome::IdleTimeout),
            "the idle timeout still ends it"
        );
    }

    #[test]
    fn the_stall_period_is_never_below_one_and_a_half_negotiated_timeouts() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        t.heard_client(t0 + ms(100));
        let f = Facts {
            negotiated_timeout: Some(4),
            ..relayed()
        };
        assert_eq!(t.next_deadline(t0, &f), t0 + ms(6_000));
        assert_eq!(t.on_timer(t0 + ms(5_999), &f), nothing());
        assert_eq!(
            t.on_timer(t0 + ms(6_000), &f),
            then(TimerAction::FailOver(Stall::MidTransfer))
        );
        // A short negotiated timeout leaves the configured stall timeout in force.
        let short = Facts {
            negotiated_timeout: Some(1),
            ..relayed()
        };
        assert_eq!(t.next_deadline(t0, &short), t0 + STALL);
    }

    #[test]
    fn while_catching_up_the_backend_gets_setup_timeout_then_our_ack_three_times_then_failover() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = catching_up(7);
        let mut at = t0;
        for retry in 1..=CATCH_UP_RETRIES {
            assert_eq!(t.next_deadline(at, &f), at + SETUP, "retry {retry}");
            assert_eq!(t.on_timer(at + SETUP - ms(1), &f), nothing());
            at += SETUP;
            assert_eq!(t.on_timer(at, &f), then(TimerAction::ReAckBackend(7)));
        }
        assert_eq!(t.next_deadline(at, &f), at + SETUP);
        assert_eq!(
            t.on_timer(at + SETUP, &f),
            then(TimerAction::FailOver(Stall::CatchingUp))
        );
    }

    #[test]
    fn a_block_from_the_backend_catching_up_starts_its_retries_again() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = catching_up(7);
        let mut at = t0;
        for _ in 0..CATCH_UP_RETRIES {
            at += SETUP;
            assert_eq!(t.on_timer(at, &f), then(TimerAction::ReAckBackend(7)));
        }
        t.heard_backend(at + ms(1));
        at += ms(1) + SETUP;
        assert_eq!(t.on_timer(at, &f), then(TimerAction::ReAckBackend(7)));
    }

    #[test]
    fn blocks_the_client_did_not_acknowledge_go_again_after_its_negotiated_timeout() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = Facts {
            negotiated_timeout: Some(3),
            ..ahead(true, false)
        };
        t.served_client(t0);
        assert_eq!(t.resend_due(&f), Some(t0 + ms(3_000)));
        assert_eq!(t.next_deadline(t0, &f), t0 + ms(3_000));
        assert_eq!(t.on_timer(t0 + ms(2_999), &f), nothing());
        assert_eq!(t.on_timer(t0 + ms(3_000), &f), RESEND);
        // The next one a full timeout after the resend, not after the first sending.
        assert_eq!(t.next_deadline(t0 + ms(3_000), &f), t0 + ms(6_000));
        assert_eq!(t.on_timer(t0 + ms(5_999), &f), nothing());
        assert_eq!(t.on_timer(t0 + ms(6_000), &f), RESEND);
    }

    #[test]
    fn without_a_negotiated_timeout_the_client_gets_its_blocks_again_after_one_second() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = ahead(true, false);
        assert_eq!(t.resend_due(&f), Some(t0 + ms(1_000)));
        assert_eq!(t.on_timer(t0 + ms(999), &f), nothing());
        assert_eq!(t.on_timer(t0 + ms(1_000), &f), RESEND);
    }

    #[test]
    fn nothing_goes_again_to_a_client_that_acknowledged_everything_or_is_relayed() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        assert_eq!(t.resend_due(&ahead(false, false)), None);
        assert_eq!(t.resend_due(&relayed()), None);
        assert_eq!(t.on_timer(t0 + ms(1_500), &ahead(false, false)), nothing());
        assert_eq!(t.on_timer(t0 + ms(1_500), &relayed()), nothing());
    }

    #[test]
    fn a_client_silent_through_five_resends_ends_the_session() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = ahead(true, false);
        let mut at = t0;
        for _ in 0..MAX_RESENDS {
            at += ms(1_000);
            assert_eq!(t.on_timer(at, &f), RESEND);
        }
        at += ms(1_000);
        assert_eq!(t.on_timer(at, &f), Due::end(Outcome::IdleTimeout));
    }

    #[test]
    fn a_client_that_speaks_starts_the_count_of_resends_again() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = ahead(true, false);
        let mut at = t0;
        for _ in 0..MAX_RESENDS {
            at += ms(1_000);
            assert_eq!(t.on_timer(at, &f), RESEND);
        }
        t.heard_client(at + ms(10)); // a duplicate ACK: alive, still missing a block
        for _ in 0..MAX_RESENDS {
            at += ms(1_000);
            assert_eq!(t.on_timer(at, &f), RESEND);
        }
    }

    #[test]
    fn a_resend_and_a_stall_fall_due_together() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        let f = Facts {
            negotiated_timeout: Some(2),
            ..ahead(true, true)
        };
        assert_eq!(
            t.on_timer(t0 + ms(3_000), &f),
            Due {
                resend_to_client: true,
                then: TimerAction::FailOver(Stall::MidTransfer),
            }
        );
    }

    #[test]
    fn a_session_nobody_speaks_in_ends_after_the_idle_timeout() {
        let t0 = Instant::now();
        let mut t = with_resume(false, t0);
        t.heard_backend(t0 + ms(5_000));
        let f = relayed();
        // Idle counts from the side heard from longest ago.
        assert_eq!(t.next_deadline(t0, &f), t0 + IDLE);
        assert_eq!(t.on_timer(t0 + IDLE - ms(1), &f), nothing());
        assert_eq!(t.on_timer(t0 + IDLE, &f), Due::end(Outcome::IdleTimeout));
        t.heard_client(t0 + ms(6_000));
        assert_eq!(t.next_deadline(t0, &f), t0 + ms(5_000) + IDLE);
    }

    #[test]
    fn the_idle_end_comes_before_anything_else_due() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        assert_eq!(
            t.on_timer(t0 + IDLE, &ahead(true, true)),
            Due::end(Outcome::IdleTimeout)
        );
    }

    #[test]
    fn our_own_ack_starts_the_backends_turn() {
        let t0 = Instant::now();
        let mut t = timers(t0);
        t.heard_client(t0 + ms(100));
        t.acked_backend(t0 + ms(1_000));
        let f = ahead(false, true);
        assert_eq!(t.next_deadline(t0 + ms(1_000), &f), t0 + ms(1_000) + STALL);
        assert_eq!(t.on_timer(t0 + STALL, &f), nothing());
    }

    #[test]
    fn an_unanswered_client_is_waited_for_two_of_its_intervals_at_most_ten_seconds() {
        assert_eq!(unanswered_patience(None), Duration::from_secs(2));
        assert_eq!(unanswered_patience(Some(3)), Duration::from_secs(6));
        assert_eq!(unanswered_patience(Some(255)), Duration::from_secs(10));
    }

    #[test]
    fn a_client_that_never_answers_is_given_up_after_two_of_its_intervals() {
        let t0 = Instant::now();
        let mut t = unanswered(t0);
        let f = relayed();
        assert_eq!(t.next_deadline(t0, &f), t0 + ms(2_000));
        assert_eq!(t.on_timer(t0 + ms(1_999), &f), nothing());
        assert_eq!(
            t.on_timer(t0 + ms(2_000), &f),
            Due::end(Outcome::Unanswered)
        );
        // Its negotiated timeout is its interval, but a spoofed 255 s holds it 10 s at most.
        let slow = Facts {
            negotiated_timeout: Some(255),
            ..relayed()
        };
        assert_eq!(unanswered(t0).next_deadline(t0, &slow), t0 + ms(10_000));
    }

    #[test]
    fn a_client_that_never_answers_gets_the_first_reply_and_two_more_datagrams() {
        let t0 = Instant::now();
        let mut t = unanswered(t0);
        assert!((0..3).all(|_| t.may_send_to_client()));
        assert!(!t.may_send_to_client());
        // Once it answers, everything goes.
        t.heard_client(t0 + ms(10));
        assert!((0..100).all(|_| t.may_send_to_client()));
    }

    #[test]
    fn a_client_that_answered_is_never_given_up_as_unanswered() {
        let t0 = Instant::now();
        let mut t = with_resume(false, t0);
        let f = relayed();
        assert_eq!(t.on_timer(t0 + ms(2_000), &f), nothing());
        assert_eq!(t.next_deadline(t0, &f), t0 + IDLE);
    }

    #[test]
    fn read_ahead_resends_to_a_client_that_never_answered_stop_with_the_session() {
        let t0 = Instant::now();
        let mut t = unanswered(t0);
        let f = ahead(true, false);
        assert_eq!(t.on_timer(t0 + ms(1_000), &f), RESEND);
        assert_eq!(
            t.on_timer(t0 + ms(2_000), &f),
            Due::end(Outcome::Unanswered)
        );
    }

    #[test]
    fn a_completed_write_answers_its_final_data_for_two_timeouts() {
        assert_eq!(dally(None), Duration::from_secs(6));
        assert_eq!(dally(Some(5)), Duration::from_secs(10));
        assert_eq!(dally(Some(1)), Duration::from_secs(2));
    }
}
