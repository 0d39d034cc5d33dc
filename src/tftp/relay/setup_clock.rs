//! When a request that no backend has answered yet asks another backend, and when it is given
//! up: the clock of a session's setup.
//!
//! Why these rules: a backend at its capacity (atftpd `--maxthread`, dnsmasq `--tftp-max`, a
//! busy PVS server) drops new requests without a word, and clients recover by retransmitting
//! the request until a slot frees. So silence is not failure: after `setup_timeout` another
//! backend is asked (up to `setup_attempts` backends in all), the client's retransmissions are
//! passed on to the backends asked, and the session waits, silent, as long as the client keeps
//! retransmitting. It gives up (without a word: the client's next retransmission starts a new
//! session) once the last backend asked has had its `setup_timeout` and the client has been
//! quiet for two of its retransmission intervals ([`super::timers::unanswered_patience`]): a
//! request from a source that never retransmits, spoofed for instance, holds nothing for long.
//!
//! No I/O, no sleeping: the setup tells the clock what happened, sleeps until
//! [`SetupClock::next_deadline`], and does what [`SetupClock::on_timer`] says.

use std::time::Duration;

use tokio::time::Instant;

use super::timers::unanswered_patience;
use crate::tftp::config::RelaySettings;

/// What a timer wake-up during the setup asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupStep {
    Wait,
    /// The backend asked last was silent for `setup_timeout`: ask another one.
    AskAnother,
    /// Nobody answered and the client stopped asking: end the session, silently.
    GiveUp,
}

/// The clock of one session's setup.
#[derive(Debug, Clone)]
pub struct SetupClock {
    setup_timeout: Duration,
    attempts: u32,
    patience: Duration,
    asked: u32,
    /// No other backend may be asked (none left, or the attempts are spent).
    none_left: bool,
    last_ask: Instant,
    last_client: Instant,
}

impl SetupClock {
    /// The clock of a request received at `now`; `client_timeout` is the `timeout` option the
    /// client asked for, if any (its retransmission interval).
    pub fn new(settings: &RelaySettings, client_timeout: Option<u8>, now: Instant) -> SetupClock {
        SetupClock {
            setup_timeout: settings.setup_timeout,
            attempts: settings.setup_attempts,
            patience: unanswered_patience(client_timeout),
            asked: 0,
            none_left: false,
            last_ask: now,
            last_client: now,
        }
    }

    /// A backend was asked at `now`.
    pub fn asked(&mut self, now: Instant) {
        self.asked += 1;
        self.last_ask = now;
    }

    /// No other backend can be asked.
    pub fn none_left(&mut self) {
        self.none_left = true;
    }

    /// The client sent its request again at `now`: it is still waiting.
    pub fn client_retransmitted(&mut self, now: Instant) {
        self.last_client = now;
    }

    /// Whether the client's retransmission at `now` goes on to a backend last sent the
    /// request at `sent`: only once it has been silent for `setup_timeout`. A backend that is
    /// merely slow never gets a duplicate (it could start a second transfer); one that drops
    /// requests gets the client's retries.
    pub fn pass_on(&self, sent: Instant, now: Instant) -> bool {
        now >= sent + self.setup_timeout
    }

    fn may_ask_another(&self) -> bool {
        !self.none_left && self.asked < self.attempts
    }

    /// When the timer must wake the setup next.
    pub fn next_deadline(&self) -> Instant {
        let asked_last = self.last_ask + self.setup_timeout;
        if self.may_ask_another() {
            asked_last
        } else {
            asked_last.max(self.last_client + self.patience)
        }
    }

    /// The timer fired at `now`.
    pub fn on_timer(&mut self, now: Instant) -> SetupStep {
        if now < self.next_deadline() {
            SetupStep::Wait
        } else if self.may_ask_another() {
            SetupStep::AskAnother
        } else {
            SetupStep::GiveUp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETUP: Duration = Duration::from_millis(700);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn clock(t0: Instant, client_timeout: Option<u8>) -> SetupClock {
        let settings = RelaySettings {
            setup_timeout: SETUP,
            setup_attempts: 3,
            idle_timeout: Duration::from_secs(30),
            stall_timeout: Duration::from_secs(2),
            read_ahead: 2,
        };
        let mut c = SetupClock::new(&settings, client_timeout, t0);
        c.asked(t0);
        c
    }

    #[test]
    fn a_silent_backend_has_setup_timeout_then_the_next_is_asked() {
        let t0 = Instant::now();
        let mut c = clock(t0, None);
        assert_eq!(c.next_deadline(), t0 + SETUP);
        assert_eq!(c.on_timer(t0 + SETUP - ms(1)), SetupStep::Wait);
        assert_eq!(c.on_timer(t0 + SETUP), SetupStep::AskAnother);
        c.asked(t0 + SETUP);
        assert_eq!(c.on_timer(t0 + SETUP * 2), SetupStep::AskAnother);
    }

    #[test]
    fn after_the_last_attempt_the_session_waits_for_the_client_then_gives_up_silently() {
        let t0 = Instant::now();
        let mut c = clock(t0, None);
        c.asked(t0 + SETUP);
        c.asked(t0 + SETUP * 2);
        // The third backend's setup timeout ends at 2.1 s; the client, quiet since 0 s, has
        // had its patience (2 x 1 s) by then.
        assert_eq!(c.next_deadline(), t0 + SETUP * 3);
        assert_eq!(c.on_timer(t0 + SETUP * 3), SetupStep::GiveUp);
    }

    #[test]
    fn as_long_as_the_client_retransmits_the_session_waits() {
        let t0 = Instant::now();
        let mut c = clock(t0, None);
        c.none_left(); // one backend in the pool
        for s in 1..=20 {
            let at = t0 + Duration::from_secs(s);
            c.client_retransmitted(at);
            assert_eq!(c.next_deadline(), at + Duration::from_secs(2));
            assert_eq!(c.on_timer(at + ms(1_999)), SetupStep::Wait);
        }
        let last = t0 + Duration::from_secs(20);
        assert_eq!(c.on_timer(last + Duration::from_secs(2)), SetupStep::GiveUp);
    }

    #[test]
    fn a_request_never_retransmitted_is_given_up_after_two_client_timeouts() {
        let t0 = Instant::now();
        let mut c = clock(t0, Some(3));
        c.none_left();
        assert_eq!(c.next_deadline(), t0 + Duration::from_secs(6));
        assert_eq!(c.on_timer(t0 + ms(5_999)), SetupStep::Wait);
        assert_eq!(c.on_timer(t0 + ms(6_000)), SetupStep::GiveUp);
        // A spoofed request naming the longest timeout holds nothing for minutes.
        let mut long = clock(t0, Some(255));
        long.none_left();
        assert!(long.next_deadline() <= t0 + Duration::from_secs(10));
    }

    #[test]
    fn a_retransmission_goes_on_only_to_a_backend_silent_for_the_setup_timeout() {
        let t0 = Instant::now();
        let c = clock(t0, None);
        assert!(!c.pass_on(t0, t0 + SETUP - ms(1)), "slow, not silent yet");
        assert!(c.pass_on(t0, t0 + SETUP));
    }

    #[test]
    fn the_last_backend_asked_always_gets_its_full_setup_timeout() {
        let t0 = Instant::now();
        let mut c = clock(t0, None);
        let late = t0 + Duration::from_secs(5);
        c.client_retransmitted(late - ms(1_900));
        c.asked(late);
        c.none_left();
        assert_eq!(c.next_deadline(), late + SETUP);
    }
}
