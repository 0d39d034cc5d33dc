//! The loop that relays one transfer once a backend answered: it waits on both sockets, the
//! timer and cancellation, hands each datagram to the pure `Session`, and performs what it
//! decides.
//!
//! Why batches and `try_recv`: one wake-up drains several datagrams into the one receive
//! buffer, so a busy side costs few wake-ups and nothing is allocated per packet; a batch limit
//! keeps one side from starving the other.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::backend_socket::reported_error;
use super::linger::Strangers;
use super::send::{self, gather_for_client, to_backend};
use super::timers::TimerAction;
use super::{Relay, Transfer};
use crate::limits::Limited;
use crate::protocol::packet::ack_datagram;
use crate::tftp::burst::Burst;
use crate::tftp::readahead::ReadAhead;
use crate::tftp::session::{Action, Outcome};

/// Datagrams handled per wake-up of a socket before the other side gets its turn.
const BATCH: usize = 16;

impl Relay {
    /// Relays between the client and the backend's TID until the session ends.
    pub(super) async fn transfer(&self, t: &mut Transfer<'_>) -> io::Result<Outcome> {
        let first = t.leg.first_len;
        let action = t.session.on_backend(&mut t.buf[..first]);
        if let Some(end) = self.apply_backend(t, action, first).await? {
            return Ok(end);
        }
        self.carry_on(t).await
    }

    /// Relays until the session ends, once the backend's first answer was handled.
    pub(super) async fn carry_on(&self, t: &mut Transfer<'_>) -> io::Result<Outcome> {
        t.timers.heard_backend(Instant::now());
        let mut strangers = Strangers::default();
        let timer = sleep_until(t.next_deadline());
        let cancelled = self.handle.cancel.cancelled();
        tokio::pin!(timer, cancelled);
        loop {
            // What the last wake-up gathered for the client goes out before the loop waits.
            self.flush(t).await;
            let end = tokio::select! {
                _ = &mut cancelled => Some(self.cancel_outcome()),
                _ = &mut timer => {
                    let end = self.on_timer(t).await?;
                    timer.as_mut().reset(t.next_deadline());
                    end
                }
                ready = t.leg.socket.readable() => {
                    ready?;
                    self.drain_backend(t, &mut strangers).await?
                }
                e = reported_error(&t.leg.socket) => {
                    tracing::debug!(client = %self.client, backend = %t.leg.address(), error = %e, "backend socket error");
                    t.counts.backend_gone = true;
                    None
                }
                ready = t.client_sock.readable() => {
                    ready?;
                    self.drain_client(t, &mut strangers).await?
                }
            };
            if let Some(end) = end {
                return Ok(end);
            }
            if t.counts.backend_gone
                && let Some(end) = self.leave_closed_backend(t).await?
            {
                return Ok(end);
            }
            // The read-ahead's retransmission timer may now be due before the timer fires.
            if let Some(due) = t.timers.resend_due(&t.facts())
                && due < timer.deadline()
            {
                timer.as_mut().reset(due);
            }
        }
    }

    /// Relays what the backend socket holds (up to a batch: one wake-up, several datagrams;
    /// a windowed transfer receives them in one call, and hands out all it received).
    async fn drain_backend(
        &self,
        t: &mut Transfer<'_>,
        strangers: &mut Strangers,
    ) -> io::Result<Option<Outcome>> {
        // Its slots are taken once the client answered: a spoofed request's session (whose
        // backend repeats its OACK) holds no more than before.
        let negotiated = t.session.negotiated();
        if t.burst.is_none() && negotiated.windowsize > 1 && self.handle.client_heard_at().is_some()
        {
            t.burst = Some(Burst::for_blocks(negotiated.blksize));
        }
        let mut handled = 0;
        loop {
            let held = t.burst.as_ref().is_some_and(Burst::holds);
            if handled >= BATCH && !held {
                break;
            }
            handled += 1;
            let got = match t.burst.as_mut() {
                Some(burst) => burst.next(&t.leg.socket, t.buf),
                None => try_recv(&t.leg.socket, t.buf),
            };
            let (n, from) = match got {
                Ok(Some(got)) => got,
                Ok(None) => break,
                // The socket is connected to the TID: its port closed (ICMP port unreachable),
                // or the backend cannot be reached any more.
                Err(e) => {
                    tracing::debug!(client = %self.client, backend = %t.leg.address(), error = %e, "backend socket error");
                    t.counts.backend_gone = true;
                    break;
                }
            };
            if from != t.leg.tid {
                strangers.backend.answer(&t.leg.socket, from).await;
                t.counts.dropped += 1;
                continue;
            }
            if n == t.buf.len() {
                t.counts.dropped += 1; // larger than any block it may send
                continue;
            }
            if t.ahead.as_ref().is_some_and(ReadAhead::backend_done) {
                t.counts.dropped += 1; // its transfer is over; we acknowledged the final block
                continue;
            }
            let action = t.session.on_backend(&mut t.buf[..n]);
            if matches!(
                action,
                Action::Forward
                    | Action::ForwardAndEnd(_)
                    | Action::AckBackend(_)
                    | Action::Consume
            ) {
                t.timers.heard_backend(Instant::now());
            }
            if let Some(end) = self.apply_backend(t, action, n).await? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// Relays what the client socket holds (up to a batch).
    async fn drain_client(
        &self,
        t: &mut Transfer<'_>,
        strangers: &mut Strangers,
    ) -> io::Result<Option<Outcome>> {
        for _ in 0..BATCH {
            let (n, from) = match try_recv(&t.client_sock, t.buf) {
                Ok(Some(got)) => got,
                Ok(None) => break,
                // A previous send hit a closed port (ICMP unreachable): not fatal for a relay.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
                Err(e) => return Err(e),
            };
            if from != self.client {
                strangers.client.answer(&t.client_sock, from).await;
                t.counts.dropped += 1;
                continue;
            }
            let now = Instant::now();
            t.timers.heard_client(now);
            // The session table judges requests on port 69 by the wall clock: one clock read
            // serves both (tokio's instant is the wall clock unless a test pauses time).
            if self.handle.heard_client(now.into_std()) {
                self.client_answered();
                if let Err(limited) = self.slot.answered() {
                    return self.over_client_limit(t, limited).await.map(Some);
                }
            }
            let action = t.session.on_client(&mut t.buf[..n]);
            if let Some(end) = self.apply_client(t, action, n).await? {
                return Ok(Some(end));
            }
            self.announce(t, now);
        }
        Ok(None)
    }

    /// The client answered while it had as many sessions as its limit (it answered several at
    /// once): this one ends, with the reason.
    async fn over_client_limit(&self, t: &mut Transfer<'_>, why: Limited) -> io::Result<Outcome> {
        tracing::info!(client = %self.client, "client over its session limit");
        self.fail_client(t, why.message()).await?;
        Ok(Outcome::ClientLimit)
    }

    /// The backend's TID is closed (its process is gone): another backend takes over at once,
    /// unless its transfer was over anyway (read ahead to the end, the port closed after).
    async fn leave_closed_backend(&self, t: &mut Transfer<'_>) -> io::Result<Option<Outcome>> {
        t.counts.backend_gone = false;
        if t.ahead.as_ref().is_some_and(ReadAhead::backend_done) {
            return Ok(None);
        }
        self.passive_failure(t.leg.index, "closed its port mid-transfer");
        self.fail_over(t, "backend port closed").await
    }

    /// The timer fired: asks the timers what is due, and does it.
    async fn on_timer(&self, t: &mut Transfer<'_>) -> io::Result<Option<Outcome>> {
        let due = t.timers.on_timer(Instant::now(), &t.facts());
        if due.resend_to_client {
            self.resend_to_client(t).await?;
        }
        match due.then {
            TimerAction::Nothing => Ok(None),
            TimerAction::End(outcome) => Ok(Some(outcome)),
            TimerAction::ReAckBackend(block) => {
                to_backend(&t.leg, &ack_datagram(block), &mut t.counts).await;
                Ok(None)
            }
            TimerAction::FailOver(stall) => {
                self.passive_failure(t.leg.index, stall.passive_failure());
                self.fail_over(t, stall.why()).await
            }
        }
    }

    /// Applies what the session decided about a backend datagram in `t.buf[..n]`.
    async fn apply_backend(
        &self,
        t: &mut Transfer<'_>,
        action: Action,
        n: usize,
    ) -> io::Result<Option<Outcome>> {
        if action == Action::Failover {
            self.passive_failure(t.leg.index, "sent an ERROR mid-transfer");
            return self.fail_over(t, "backend sent an ERROR").await;
        }
        self.apply_data(t, action, n).await
    }

    /// Applies any backend action but a failover (the first answer of a takeover goes here).
    pub(super) async fn apply_data(
        &self,
        t: &mut Transfer<'_>,
        action: Action,
        n: usize,
    ) -> io::Result<Option<Outcome>> {
        let passed_on = matches!(action, Action::Forward | Action::ForwardAndEnd(_));
        if passed_on && !t.ahead_decided {
            self.decide_read_ahead(t, n);
        }
        match action {
            Action::Forward | Action::ForwardAndEnd(_) if t.ahead.is_some() => {
                let pos = t.session.data_position();
                let ahead = t.ahead.as_mut().expect("checked by the guard");
                let step = ahead.on_data(pos, &t.buf[..n]);
                self.perform(t, step).await?;
                Ok(None)
            }
            Action::Forward | Action::ForwardAndEnd(_) => {
                // A client that never answered gets no more than a few (see `timers`).
                if t.timers.may_send_to_client() {
                    let datagram = &t.buf[..n];
                    gather_for_client(
                        &t.client_sock,
                        &mut t.batch,
                        datagram,
                        self.client,
                        &mut t.counts,
                    )
                    .await;
                } else {
                    t.counts.dropped += 1;
                }
                Ok(action.ends())
            }
            Action::AckBackend(block) => {
                to_backend(&t.leg, &ack_datagram(block), &mut t.counts).await;
                Ok(None)
            }
            Action::Consume => Ok(None),
            Action::Drop | Action::Failover => {
                t.counts.dropped += 1;
                self.ack_after_gap(t, n).await?;
                Ok(None)
            }
            Action::Fail(why) => self.fail_client(t, why).await.map(Some),
        }
    }

    async fn apply_client(
        &self,
        t: &mut Transfer<'_>,
        action: Action,
        n: usize,
    ) -> io::Result<Option<Outcome>> {
        if t.ahead.is_some() {
            return self.apply_client_ahead(t, action, n).await;
        }
        match action {
            Action::Forward | Action::ForwardAndEnd(_) => {
                to_backend(&t.leg, &t.buf[..n], &mut t.counts).await;
                Ok(action.ends())
            }
            _ => {
                t.counts.dropped += 1;
                Ok(None)
            }
        }
    }
}

impl Relay {
    /// Sends the DATA gathered for the client (`send::Batch`).
    pub(super) async fn flush(&self, t: &mut Transfer<'_>) {
        send::flush(&t.client_sock, &mut t.batch, self.client, &mut t.counts).await;
    }
}

/// One datagram if one is waiting; `None` when readiness was spurious.
fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    match socket.try_recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        Err(e) => Err(e),
    }
}
