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
use super::{Leg, Relay, Transfer};
use crate::pool::Choice;
use crate::protocol::packet::{self, ack_datagram, error_code};
use crate::tftp::session::{Outcome, Takeover};

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
        loop {
            let Some(index) = self.untried_backend(&t.tried) else {
                return self
                    .fail_client(
                        t,
                        "boot server failed mid-transfer and no other could take over",
                    )
                    .await
                    .map(Some);
            };
            t.tried.push(index);
            let session = &t.session;
            let fits = |reply: &[u8]| session.takeover_misfit(reply).is_none();
            let leg = match self.ask(index, t.buf, &fits).await? {
                Answer::Leg(leg) => leg,
                Answer::Cancelled => return Ok(Some(self.cancel_outcome())),
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
            match t.session.on_takeover_reply(&mut t.buf[..n]) {
                Takeover::AckOack => {
                    to_backend(&leg, &ack_datagram(0), &mut t.counts).await;
                    return Ok(self.switch(t, leg));
                }
                Takeover::Data(action) => {
                    self.switch(t, leg);
                    return self.apply_data(t, action, n).await;
                }
                Takeover::SizeChanged(why) => {
                    tracing::warn!(client = %self.client, backend = %leg.address(), why, "takeover refused: not the same file");
                    release(leg, true).await;
                    return self
                        .fail_client(t, "the file differs between boot servers")
                        .await
                        .map(Some);
                }
                Takeover::Incompatible(why) => {
                    tracing::warn!(client = %self.client, backend = %leg.address(), why, "takeover refused");
                    release(leg, true).await;
                }
                Takeover::Refused => release(leg, false).await,
            }
        }
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
        tokio::spawn(release(old, true));
        t.timers.heard_backend(Instant::now());
        None
    }

    /// Ends the transfer with ERROR 0 and a reason the client (and its log) can show.
    pub(super) async fn fail_client(&self, t: &mut Transfer<'_>, why: &str) -> io::Result<Outcome> {
        tracing::warn!(client = %self.client, why, "transfer failed");
        let error = packet::error_datagram(error_code::NOT_DEFINED, why);
        to_client(&t.client_sock, &error, self.client, &mut t.counts).await;
        Ok(Outcome::ResumeFailed)
    }
}
