//! Moving a transfer to another backend when its backend stalls or gives up with an ERROR:
//! the same request to an untried backend, its answer judged by the session (same options, same
//! file size), the old leg released.
//!
//! Why here and not in the loop: a takeover is a short setup of its own inside a running
//! transfer, with its own ways to fail (no backend left, another file), each of which must end
//! the client's transfer with a clear ERROR rather than silence.

use std::io;

use tokio::time::Instant;

use super::linger::release;
use super::reply::Answer;
use super::send::{to_backend, to_client};
use super::{Counts, Leg, Relay, Transfer};
use crate::pool::Choice;
use crate::protocol::packet::{self, ack_datagram, error_code};
use crate::tftp::session::{Action, Outcome, Session, Takeover};

/// What looking for a backend to carry a transfer on came to.
pub(super) enum NewLeg {
    /// This one answered fittingly; with its first DATA's action when it answered with DATA.
    Ready(Leg, Option<(Action, usize)>),
    /// None could: the reason the client is told.
    Failed(&'static str),
    Cancelled,
}

impl Relay {
    /// Moves the transfer to another backend, or fails the client when none can take it.
    pub(super) async fn fail_over(
        &self,
        t: &mut Transfer<'_>,
        why: &str,
    ) -> io::Result<Option<Outcome>> {
        let failed = t.leg.address();
        if !self.pool.resume || !t.session.can_resume() {
            return self
                .fail_client(t, "boot server failed mid-transfer")
                .await
                .map(Some);
        }
        let from = match &mut t.ahead {
            // Resume after the last block stored (the ring serves the client while the new
            // backend catches up); nothing more is acknowledged until it has.
            Some(ahead) => {
                ahead.resumed();
                t.session.begin_resume_at(ahead.received())
            }
            None => t.session.begin_resume(),
        };
        tracing::info!(client = %self.client, backend = %failed, why, from_block = from, "resuming transfer on another backend");
        metrics::counter!(crate::metrics::FAILOVERS, "pool" => self.pool.name.clone()).increment(1);
        self.take_over(t).await
    }

    /// Asks one untried backend after another for the same request until one can continue
    /// the transfer where it stands.
    async fn take_over(&self, t: &mut Transfer<'_>) -> io::Result<Option<Outcome>> {
        let found = self
            .new_leg(&mut t.session, &mut t.tried, t.buf, &mut t.counts, None)
            .await?;
        match found {
            NewLeg::Ready(leg, first_data) => {
                self.switch(t, leg);
                match first_data {
                    Some((action, n)) => self.apply_data(t, action, n).await,
                    None => Ok(None),
                }
            }
            NewLeg::Failed(why) => self.fail_client(t, why).await.map(Some),
            NewLeg::Cancelled => Ok(Some(self.cancel_outcome())),
        }
    }

    /// Finds a backend that can carry `session` on from where it stands: `first` if it is
    /// eligible and untried, then the pool's choice among the untried. Its OACK is
    /// acknowledged here; its first DATA, judged, comes back with the leg.
    pub(super) async fn new_leg(
        &self,
        session: &mut Session,
        tried: &mut Vec<usize>,
        buf: &mut [u8],
        counts: &mut Counts,
        first: Option<usize>,
    ) -> io::Result<NewLeg> {
        loop {
            let preferred = first.filter(|i| !tried.contains(i) && self.eligible(*i));
            let Some(index) = preferred.or_else(|| self.untried_backend(tried)) else {
                return Ok(NewLeg::Failed(
                    "boot server failed mid-transfer and no other could take over",
                ));
            };
            tried.push(index);
            let fits = |reply: &[u8]| session.takeover_misfit(reply).is_none();
            let leg = match self.ask(index, buf, &fits).await? {
                Answer::Leg(leg) => leg,
                Answer::Cancelled => return Ok(NewLeg::Cancelled),
                Answer::Silent => {
                    self.silent(index);
                    continue;
                }
                Answer::Unreachable => {
                    self.passive_failure(index, "its port is closed");
                    continue;
                }
                Answer::NotSent => continue,
            };
            let n = leg.first_len;
            match session.on_takeover_reply(&mut buf[..n]) {
                Takeover::AckOack => {
                    to_backend(&leg, &ack_datagram(0), counts).await;
                    return Ok(NewLeg::Ready(leg, None));
                }
                Takeover::Data(action) => return Ok(NewLeg::Ready(leg, Some((action, n)))),
                Takeover::SizeChanged(why) => {
                    tracing::warn!(client = %self.client, backend = %leg.address(), why, "takeover refused: not the same file");
                    release(leg, true).await;
                    return Ok(NewLeg::Failed("the file differs between boot servers"));
                }
                Takeover::Incompatible(why) => {
                    tracing::warn!(client = %self.client, backend = %leg.address(), why, "takeover refused");
                    release(leg, true).await;
                }
                Takeover::Refused => release(leg, false).await,
            }
        }
    }

    /// Whether backend `index` may take a transfer now (healthy, enabled, not full).
    fn eligible(&self, index: usize) -> bool {
        matches!(
            self.pool.choose(self.client.ip(), &|i| i == index),
            Choice::Backend(_)
        )
    }

    /// An eligible backend this session has not used yet.
    fn untried_backend(&self, tried: &[usize]) -> Option<usize> {
        match self.pool.choose(self.client.ip(), &|i| !tried.contains(&i)) {
            Choice::Backend(i) => Some(i),
            _ => None,
        }
    }

    /// The new leg carries the transfer from now on; the old one is told to stop.
    fn switch(&self, t: &mut Transfer<'_>, leg: Leg) -> Option<Outcome> {
        tracing::info!(client = %self.client, from = %t.leg.address(), to = %leg.address(), "transfer taken over");
        let old = std::mem::replace(&mut t.leg, leg);
        t.burst = None; // what the old leg received together is the old backend's
        tokio::spawn(release(old, true));
        t.timers.heard_backend(Instant::now());
        None
    }

    /// Ends the transfer with ERROR 0 and a reason the client (and its log) can show.
    pub(super) async fn fail_client(&self, t: &mut Transfer<'_>, why: &str) -> io::Result<Outcome> {
        tracing::warn!(client = %self.client, why, "transfer failed");
        let error = packet::error_datagram(error_code::NOT_DEFINED, why);
        self.flush(t).await; // the blocks before it first
        to_client(&t.client_sock, &error, self.client, &mut t.counts).await;
        Ok(Outcome::ResumeFailed)
    }
}
