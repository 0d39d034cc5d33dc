//! The loop that relays one transfer once a backend answered: it waits on both sockets, the
//! timer and cancellation, hands each datagram to the pure `Session`, and performs what it
//! decides.
//!
//! Why batches and `try_recv`: one wake-up drains several datagrams into the one receive
//! buffer, so a busy side costs few wake-ups and nothing is allocated per packet; a batch limit
//! keeps one side from starving the other.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::linger::Strangers;
use super::{Relay, Transfer};
use crate::protocol::packet::ack_datagram;
use crate::tftp::readahead::ReadAhead;
use crate::tftp::session::{Action, Outcome};

/// Datagrams handled per wake-up of a socket before the other side gets its turn.
const BATCH: usize = 16;

/// Retransmissions of our own ACK to a backend taking over, before trying yet another.
const CATCH_UP_RETRIES: u32 = 3;

/// Read-ahead: retransmissions to a client that sends nothing at all, before the session ends
/// (a client that is alive re-sends its ACK on its own timer, which starts the count again).
/// The backends of the demo and bench (async-tftp) are set to give up after as many.
const MAX_RESENDS: u32 = 5;

impl Relay {
    /// Relays between the client and the backend's TID until the session ends.
    pub(super) async fn transfer(&self, t: &mut Transfer<'_>) -> io::Result<Outcome> {
        let first = t.leg.first_len;
        let action = t.session.on_backend(&mut t.buf[..first]);
        if let Some(end) = self.apply_backend(t, action, first).await? {
            return Ok(end);
        }
        t.last_data = Instant::now();
        let mut strangers = Strangers::default();
        let timer = sleep_until(self.next_deadline(t));
        let cancelled = self.handle.cancel.cancelled();
        tokio::pin!(timer, cancelled);
        loop {
            let end = tokio::select! {
                _ = &mut cancelled => Some(self.cancel_outcome()),
                _ = &mut timer => {
                    let end = self.on_timer(t).await?;
                    timer.as_mut().reset(self.next_deadline(t));
                    end
                }
                ready = t.leg.socket.readable() => {
                    ready?;
                    self.drain_backend(t, &mut strangers).await?
                }
                ready = t.client_sock.readable() => {
                    ready?;
                    self.drain_client(t, &mut strangers).await?
                }
            };
            if let Some(end) = end {
                return Ok(end);
            }
            // The read-ahead's retransmission timer may now be due before the timer fires.
            if let Some(due) = self.resend_due(t)
                && due < timer.deadline()
            {
                timer.as_mut().reset(due);
            }
        }
    }

    /// Relays what the backend socket holds (up to a batch: one wake-up, several datagrams).
    async fn drain_backend(
        &self,
        t: &mut Transfer<'_>,
        strangers: &mut Strangers,
    ) -> io::Result<Option<Outcome>> {
        for _ in 0..BATCH {
            let Some((n, from)) = try_recv(&t.leg.socket, t.buf)? else {
                break;
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
                t.last_data = Instant::now();
                t.catch_up_retries = 0;
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
            let Some((n, from)) = try_recv(&t.client_sock, t.buf)? else {
                break;
            };
            if from != self.client {
                strangers.client.answer(&t.client_sock, from).await;
                t.counts.dropped += 1;
                continue;
            }
            t.last_client = Instant::now();
            t.resends = 0;
            self.handle.client_seen.store(true, Ordering::Relaxed);
            let action = t.session.on_client(&mut t.buf[..n]);
            if let Some(end) = self.apply_client(t, action, n).await? {
                return Ok(Some(end));
            }
        }
        Ok(None)
    }

    /// The timer fired: end an idle session, re-send to the client (read-ahead), re-ACK during
    /// catch-up, or replace a stalled backend.
    async fn on_timer(&self, t: &mut Transfer<'_>) -> io::Result<Option<Outcome>> {
        let now = Instant::now();
        if now >= t.last_client.min(t.last_data) + self.settings.idle_timeout {
            return Ok(Some(Outcome::IdleTimeout));
        }
        if self.resend_due(t).is_some_and(|due| now >= due) {
            // A client silent through all of them has gone (rebooted, given up): stop, so a
            // new client that gets its port is not sent stale blocks for long.
            if t.resends >= MAX_RESENDS {
                return Ok(Some(Outcome::IdleTimeout));
            }
            t.resends += 1;
            self.resend_to_client(t).await?;
        }
        let stalled = now >= t.last_data + self.stall_after(t);
        if !self.pool.resume || !stalled {
            return Ok(None);
        }
        // While catching up the relay itself drives the new backend.
        if t.session.catching_up() {
            return self.retry_catch_up(t).await;
        }
        // Otherwise a stall only counts while the backend owes us something: a client that
        // went away is not the backend's fault.
        if !self.backend_owes(t) {
            return Ok(None);
        }
        self.passive_failure(t.leg.index, "stopped sending mid-transfer");
        self.fail_over(t, "stalled").await
    }

    /// Re-sends our last ACK to a backend that went quiet while catching up, a few times.
    async fn retry_catch_up(&self, t: &mut Transfer<'_>) -> io::Result<Option<Outcome>> {
        match t.session.catch_up_ack() {
            Some(block) if t.catch_up_retries < CATCH_UP_RETRIES => {
                t.catch_up_retries += 1;
                t.leg
                    .socket
                    .send_to(&ack_datagram(block), t.leg.tid)
                    .await?;
                t.last_data = Instant::now();
                Ok(None)
            }
            _ => {
                self.passive_failure(t.leg.index, "stopped sending while catching up");
                self.fail_over(t, "stalled while catching up").await
            }
        }
    }

    /// The next moment something may be due: idle end, stall, a catch-up retransmission, or
    /// the read-ahead's retransmission to the client.
    fn next_deadline(&self, t: &Transfer<'_>) -> Instant {
        let idle = t.last_client.min(t.last_data) + self.settings.idle_timeout;
        let next = self.resend_due(t).map_or(idle, |due| due.min(idle));
        if !self.pool.resume {
            return next;
        }
        let stall = t.last_data + self.stall_after(t);
        // While the backend owes nothing there is no stall to judge: look again one stall
        // period from now (never at a deadline already past, which would spin the loop).
        if t.session.catching_up() || self.backend_owes(t) {
            next.min(stall)
        } else {
            next.min(stall.max(Instant::now() + self.stall_after(t)))
        }
    }

    /// Whether a silence of the backend now is its fault: with read-ahead, when we acknowledged
    /// everything it sent; otherwise, when the client is still asking.
    fn backend_owes(&self, t: &Transfer<'_>) -> bool {
        match &t.ahead {
            Some(ahead) => ahead.waiting_on_backend(),
            None => t.last_client > t.last_data,
        }
    }

    /// When the block the client has not acknowledged goes out again (read-ahead only).
    fn resend_due(&self, t: &Transfer<'_>) -> Option<Instant> {
        let ahead = t.ahead.as_ref()?;
        (!ahead.unacked().is_empty()).then(|| t.sent_at + self.client_timeout(t))
    }

    /// The retransmission timeout toward the client: the `timeout` it negotiated, else 1 s
    /// (what tftpd-hpa and most servers start with).
    fn client_timeout(&self, t: &Transfer<'_>) -> Duration {
        let secs = t.session.negotiated().timeout.unwrap_or(1);
        Duration::from_secs(u64::from(secs))
    }

    /// How long the backend may be silent: `setup_timeout` while catching up; otherwise
    /// `stall_timeout`, but never less than 1.5 times the retransmission timeout the transfer
    /// negotiated (the backend rightly waits that long after a lost block).
    fn stall_after(&self, t: &Transfer<'_>) -> Duration {
        if t.session.catching_up() {
            return self.settings.setup_timeout;
        }
        let negotiated = t
            .session
            .negotiated()
            .timeout
            .map(|s| Duration::from_secs(u64::from(s)) * 3 / 2);
        self.settings
            .stall_timeout
            .max(negotiated.unwrap_or_default())
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
                t.client_sock.send_to(&t.buf[..n], self.client).await?;
                t.counts.to_client += 1;
                Ok(action.ends())
            }
            Action::AckBackend(block) => {
                t.leg
                    .socket
                    .send_to(&ack_datagram(block), t.leg.tid)
                    .await?;
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
                t.leg.socket.send_to(&t.buf[..n], t.leg.tid).await?;
                t.counts.to_backend += 1;
                Ok(action.ends())
            }
            _ => {
                t.counts.dropped += 1;
                Ok(None)
            }
        }
    }
}

/// One datagram if one is waiting; `None` when readiness was spurious.
fn try_recv(socket: &UdpSocket, buf: &mut [u8]) -> io::Result<Option<(usize, SocketAddr)>> {
    match socket.try_recv_from(buf) {
        Ok(got) => Ok(Some(got)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(None),
        // A previous send hit a closed port (ICMP unreachable): not fatal for a relay.
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Ok(None),
        Err(e) => Err(e),
    }
}
