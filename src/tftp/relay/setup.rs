//! A session's setup: finding a backend that answers the request.
//!
//! The request goes to one eligible backend, from a socket of its own; if that one is silent
//! for `setup_timeout`, to another (up to `setup_attempts` backends, each asked once, each from
//! its own socket), while the ones asked before may still answer: the first answer to this very
//! request (see `reply`) wins, and the others' sockets are quarantined.
//!
//! Why keep waiting in silence rather than give up with an ERROR: a backend at its capacity
//! drops new requests without a word and clients retransmit until a slot frees. Each
//! retransmission of the client's request (the port-69 front end absorbs it, see `table`) is
//! passed on to every backend asked that has been silent for `setup_timeout`, as if the client
//! had sent it there (a backend that is merely slow never gets a duplicate that could start a
//! second transfer); the relay adds no retransmission of its own. The session ends silently when the client stops retransmitting
//! (the clock in `setup_clock`); a retransmission after that starts a new session.

use std::io;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::backend_socket::bind_like;
use super::linger::quarantine;
use super::reply::{Asking, any_ready};
use super::send::to_client;
use super::setup_clock::{SetupClock, SetupStep};
use super::{Counts, Leg, Relay};
use crate::limits::budget::may_log_packet_error;
use crate::pool::Choice;
use crate::protocol::packet::{self, error_code};
use crate::tftp::session::Outcome;

/// Why no backend took the request.
pub(super) enum NoLeg {
    NoHealthy,
    Busy,
    NoAnswer,
    Cancelled,
}

/// What an event of the setup came to.
enum Setup {
    Waiting,
    Answered(Leg),
    Over(NoLeg),
}

impl Relay {
    /// Tells the client why nothing will come when there is something to tell, and names the
    /// outcome.
    pub(super) async fn no_backend(
        &self,
        client_sock: &UdpSocket,
        why: NoLeg,
        counts: &mut Counts,
    ) -> Outcome {
        match why {
            NoLeg::Cancelled => self.cancel_outcome(),
            // Every backend is at its limit: stay silent, the client's retry comes back later.
            NoLeg::Busy => Outcome::Busy,
            // Nobody answered and the client stopped asking: silence (see the module doc).
            NoLeg::NoAnswer => Outcome::BackendTimeout,
            NoLeg::NoHealthy => {
                let msg = "no healthy boot server";
                let error = packet::error_datagram(error_code::NOT_DEFINED, msg);
                to_client(client_sock, &error, self.client, counts).await;
                Outcome::NoHealthyBackend
            }
        }
    }

    /// Asks backends for the request until one answers, or the client stops asking.
    pub(super) async fn connect(
        &self,
        tried: &mut Vec<usize>,
        buf: &mut [u8],
    ) -> io::Result<Result<Leg, NoLeg>> {
        let mut clock = SetupClock::new(&self.settings, self.requested.timeout(), Instant::now());
        let mut asking = Vec::new();
        let mut setup = self.ask_another(tried, &mut asking, &mut clock).await?;
        while let Setup::Waiting = setup {
            setup = self.wait(tried, &mut asking, &mut clock, buf).await?;
        }
        // Those still asked may answer late: their ports must not go to another session yet.
        let now = Instant::now();
        for a in asking {
            if now >= a.since + self.settings.setup_timeout {
                self.silent(a.index);
            }
            quarantine(a.socket);
        }
        Ok(match setup {
            Setup::Answered(leg) => {
                self.pool.remember(self.client.ip(), leg.index);
                Ok(leg)
            }
            Setup::Over(why) => Err(why),
            Setup::Waiting => unreachable!("the loop ends on an answer or the end"),
        })
    }

    /// Waits for the next event: an answer, the clock, the client's retransmission, the end.
    async fn wait(
        &self,
        tried: &mut Vec<usize>,
        asking: &mut Vec<Asking>,
        clock: &mut SetupClock,
        buf: &mut [u8],
    ) -> io::Result<Setup> {
        tokio::select! {
            _ = self.handle.cancel.cancelled() => Ok(Setup::Over(NoLeg::Cancelled)),
            _ = sleep_until(clock.next_deadline()) => match clock.on_timer(Instant::now()) {
                SetupStep::Wait => Ok(Setup::Waiting),
                SetupStep::AskAnother => self.ask_another(tried, asking, clock).await,
                SetupStep::GiveUp => Ok(Setup::Over(NoLeg::NoAnswer)),
            },
            _ = self.handle.retransmitted.notified() => {
                clock.client_retransmitted(Instant::now());
                self.pass_on_retransmission(asking, clock).await;
                Ok(Setup::Waiting)
            }
            i = any_ready(asking) => match self.take_answer(&asking[i], buf) {
                None => Ok(Setup::Waiting),
                Some(Ok((n, tid))) => {
                    let a = asking.swap_remove(i);
                    Ok(Setup::Answered(a.into_leg(tid, n).await?))
                }
                Some(Err(e)) => {
                    let a = asking.swap_remove(i);
                    tracing::debug!(backend = %self.pool.backends[a.index].address, error = %e, "request refused");
                    self.passive_failure(a.index, "its port is closed");
                    // Nothing will come from there: the next one is asked at once.
                    match asking.is_empty() {
                        true => self.ask_another(tried, asking, clock).await,
                        false => Ok(Setup::Waiting),
                    }
                }
            },
        }
    }

    /// Asks one more backend, one not asked yet in this session; when none is left and
    /// nothing is being waited for, the setup is over.
    async fn ask_another(
        &self,
        tried: &mut Vec<usize>,
        asking: &mut Vec<Asking>,
        clock: &mut SetupClock,
    ) -> io::Result<Setup> {
        loop {
            // The backend whose copy was looked up is asked first (see `cached`).
            let first = self
                .fill
                .as_ref()
                .map(|f| f.backend)
                .filter(|_| tried.is_empty());
            let choice = first.map_or_else(
                || self.pool.choose(self.client.ip(), &|i| !tried.contains(&i)),
                Choice::Backend,
            );
            let index = match choice {
                Choice::Backend(i) => i,
                Choice::NoHealthy if tried.is_empty() => return Ok(Setup::Over(NoLeg::NoHealthy)),
                Choice::Full if tried.is_empty() => return Ok(Setup::Over(NoLeg::Busy)),
                _ => {
                    clock.none_left();
                    return Ok(match asking.is_empty() {
                        true => Setup::Over(NoLeg::NoAnswer),
                        false => Setup::Waiting,
                    });
                }
            };
            tried.push(index);
            let backend = self.pool.backends[index].clone();
            // Counted from the moment it is asked, so a burst sees it busy (least-sessions and
            // `max_sessions` both read this count); released if it never answers.
            let claim = backend.claim();
            let socket = bind_like(backend.address).await?;
            let now = Instant::now();
            clock.asked(now);
            match socket.send_to(self.request(), backend.address).await {
                Ok(_) => {
                    let ip = backend.address.ip();
                    let (since, sent) = (now, now);
                    asking.push(Asking {
                        index,
                        socket,
                        ip,
                        claim,
                        since,
                        sent,
                    });
                    return Ok(Setup::Waiting);
                }
                // No route and the like: this backend cannot be asked now; the next one is.
                Err(e) => {
                    tracing::debug!(backend = %backend.address, error = %e, "cannot send the request");
                }
            }
        }
    }

    /// The client sent its request again: so does every backend asked that has been silent
    /// for `setup_timeout`, from its socket.
    async fn pass_on_retransmission(&self, asking: &mut [Asking], clock: &SetupClock) {
        let now = Instant::now();
        for a in asking.iter_mut().filter(|a| clock.pass_on(a.sent, now)) {
            a.sent = now;
            let to = self.pool.backends[a.index].address;
            if let Err(e) = a.socket.send_to(self.request(), to).await
                && may_log_packet_error()
            {
                tracing::warn!(backend = %to, error = %e, "send failed: counted as a lost packet");
            }
        }
    }
}
