//! The task that owns one transfer's sockets and relays it, packet for packet.
//!
//! - Toward the client it sends from a socket bound to the exact local address the request was
//!   sent to (port 0: a fresh TID), because clients compare the whole source address.
//! - Toward the backend it sends the client's request unchanged to the backend's port, learns
//!   the backend's TID from its first reply, and from then on talks only to that TID.
//! - If the chosen backend does not answer within `setup_timeout`, the request goes to the next
//!   eligible backend (a fresh socket, so a late answer of the first cannot slip in), and the
//!   silence counts against the backend's health.
//! - If the backend stops sending mid-transfer (no DATA for `stall_timeout` while the client is
//!   still asking) or gives up with an ERROR, another backend takes over: the same request,
//!   its blocks consumed up to the client's last ACK, the rest forwarded (see `session`).
//! - Reads are read ahead (`[tftp] read_ahead` blocks, see `readahead`): the relay
//!   acknowledges the backend's DATA itself and serves the client from a small ring as a sender
//!   of its own, with its own retransmission timer (never a resend on a duplicate ACK). A
//!   takeover then resumes after the last block received, and the client is still served from
//!   the ring while the new backend catches up.
//! - Everything else (writes, the OACK exchange, reads whose windows do not fit the ring, all
//!   of it with `read_ahead = 0`) is relayed packet for packet; there the relay never
//!   retransmits on its own.
//! - Packets from any other source get a rate-limited ERROR 5 and change nothing.
//! - One receive buffer, sized once from the request, serves the whole transfer, and the
//!   read-ahead ring is allocated once: nothing is allocated per relayed packet.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout};

use super::config::RelaySettings;
use super::readahead::{ReadAhead, Step};
use super::session::{Action, Outcome, Session, Takeover};
use super::table::SessionHandle;
use crate::balance::SessionClaim;
use crate::pool::{Choice, Pool};
use crate::protocol::options::Options;
use crate::protocol::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE, Negotiated};
use crate::protocol::packet::{self, Kind, Packet, ack_datagram, error_code};

/// One transfer to relay.
#[derive(Debug)]
pub struct Relay {
    pub client: SocketAddr,
    /// The local address the client sent its request to.
    pub local_ip: IpAddr,
    pub pool: Arc<Pool>,
    pub settings: RelaySettings,
    pub handle: Arc<SessionHandle>,
    /// The options of the client's request, to recognise a genuine answer to it.
    pub requested: Options,
    /// A write request (the pool allows writes): relayed, never resumed.
    pub write: bool,
}

/// What a finished session reports (log line and metrics).
#[derive(Debug, Clone)]
pub struct Report {
    pub outcome: Outcome,
    pub backend: Option<SocketAddr>,
    pub negotiated: Negotiated,
    pub blocks: u64,
    pub file_bytes: u64,
    pub packets_to_client: u64,
    pub packets_to_backend: u64,
    pub dropped: u64,
    pub resumes: u32,
    pub elapsed: Duration,
}

impl Report {
    /// The plain values the log line and the metrics record.
    pub fn summary(&self) -> crate::metrics::SessionEnd {
        crate::metrics::SessionEnd {
            outcome: self.outcome.as_str(),
            backend: self.backend,
            blksize: self.negotiated.blksize,
            windowsize: self.negotiated.windowsize,
            blocks: self.blocks,
            file_bytes: self.file_bytes,
            packets_to_client: self.packets_to_client,
            packets_to_backend: self.packets_to_backend,
            dropped: self.dropped,
            elapsed: self.elapsed,
        }
    }
}

/// A backend that answered: its socket, TID, and the session's claim on it.
struct Leg {
    index: usize,
    socket: UdpSocket,
    tid: SocketAddr,
    claim: SessionClaim,
    first_len: usize,
}

impl Leg {
    fn address(&self) -> SocketAddr {
        self.claim.backend().address
    }
}

/// Why no backend took the request.
enum NoLeg {
    NoHealthy,
    Busy,
    NoAnswer,
    Cancelled,
}

/// Counters of one session, kept locally and reported once at the end.
#[derive(Debug, Default)]
struct Counts {
    to_client: u64,
    to_backend: u64,
    dropped: u64,
}

/// Sends at most one ERROR 5 per interval to strangers, so a flood cannot turn us into an
/// amplifier.
struct StrangerReply {
    next: Instant,
}

impl Default for StrangerReply {
    fn default() -> Self {
        StrangerReply {
            next: Instant::now(),
        }
    }
}

/// One limiter per socket: a flood on one side cannot silence the other.
#[derive(Default)]
struct Strangers {
    client: StrangerReply,
    backend: StrangerReply,
}

/// Datagrams handled per wake-up of a socket before the other side gets its turn.
const BATCH: usize = 16;

const STRANGER_REPLY_INTERVAL: Duration = Duration::from_millis(100);

/// Retransmissions of our own ACK to a backend taking over, before trying yet another.
const CATCH_UP_RETRIES: u32 = 3;

/// Read-ahead: retransmissions to a client that sends nothing at all, before the session ends
/// (a client that is alive re-sends its ACK on its own timer, which starts the count again).
/// The backends of the demo and bench (async-tftp) are set to give up after as many.
const MAX_RESENDS: u32 = 5;

/// Everything the transfer loop works on.
struct Transfer<'a> {
    client_sock: UdpSocket,
    leg: Leg,
    tried: Vec<usize>,
    buf: &'a mut [u8],
    session: Session,
    counts: Counts,
    last_client: Instant,
    last_data: Instant,
    /// Our own ACK re-sent to a backend catching up, since its last block.
    catch_up_retries: u32,
    /// The read-ahead, from the first DATA on (when configured and the ring fits).
    ahead: Option<ReadAhead>,
    /// Whether the first DATA has decided on `ahead` (once per session, not once per block).
    ahead_decided: bool,
    /// When the last new block went to the client (read-ahead: its retransmission timer).
    sent_at: Instant,
    /// Read-ahead retransmissions to the client since it last sent anything.
    resends: u32,
}

impl Relay {
    /// Runs the transfer to its end and reports how it went.
    pub async fn run(self) -> Report {
        let started = Instant::now();
        let mut buf = vec![0u8; self.buffer_len()];
        let mut session = if self.write {
            Session::new_write()
        } else {
            Session::new()
        };
        let mut counts = Counts::default();
        let (outcome, backend) = match self.relay(&mut buf, &mut session, &mut counts).await {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(client = %self.client, error = %e, "session socket error");
                (Outcome::Failed, None)
            }
        };
        let (blocks, file_bytes) = session.progress();
        Report {
            outcome,
            backend,
            negotiated: session.negotiated(),
            blocks,
            file_bytes,
            packets_to_client: counts.to_client,
            packets_to_backend: counts.to_backend,
            dropped: counts.dropped,
            resumes: session.resumes(),
            elapsed: started.elapsed(),
        }
    }

    /// Room for the largest DATA the backend may send (it cannot raise the requested blksize),
    /// one byte more to detect an oversized datagram, and at least the request's size for OACKs.
    fn buffer_len(&self) -> usize {
        let blksize = usize::from(self.blksize_bound());
        (4 + blksize + 1)
            .max(self.handle.request.len() + 64)
            .max(1024)
    }

    async fn relay(
        &self,
        buf: &mut [u8],
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<(Outcome, Option<SocketAddr>)> {
        let client_sock = UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).await?;
        let mut tried = Vec::new();
        let leg = match self.connect(&mut tried, buf).await? {
            Ok(leg) => leg,
            Err(why) => return Ok((self.no_backend(&client_sock, why).await?, None)),
        };
        let now = Instant::now();
        let mut t = Transfer {
            client_sock,
            leg,
            tried,
            buf,
            session: std::mem::take(session),
            counts: Counts::default(),
            last_client: now,
            last_data: now,
            catch_up_retries: 0,
            ahead: None,
            ahead_decided: false,
            sent_at: now,
            resends: 0,
        };
        let outcome = self.transfer(&mut t).await;
        *session = std::mem::take(&mut t.session);
        *counts = t.counts;
        if let (Ok(Outcome::Completed), Some(block)) = (&outcome, session.final_write_block()) {
            let timeout = session.negotiated().timeout.unwrap_or(3);
            let dally = Duration::from_secs(u64::from(timeout) * 2);
            answer_final_data(t.client_sock, self.client, block, dally);
        }
        let backend = t.leg.address();
        let finished = matches!(
            outcome,
            Ok(Outcome::Completed | Outcome::BackendError | Outcome::ClientAborted)
        ) || t.ahead.as_ref().is_some_and(ReadAhead::backend_done);
        release(t.leg, !finished).await;
        Ok((outcome?, Some(backend)))
    }

    /// Tells the client why nothing will come, and names the outcome.
    async fn no_backend(&self, client_sock: &UdpSocket, why: NoLeg) -> io::Result<Outcome> {
        let (outcome, msg) = match why {
            NoLeg::Cancelled => return Ok(self.cancel_outcome()),
            // Every backend is at its limit: stay silent, the client's retry comes back later.
            NoLeg::Busy => return Ok(Outcome::Busy),
            NoLeg::NoHealthy => (Outcome::NoHealthyBackend, "no healthy boot server"),
            NoLeg::NoAnswer => (Outcome::BackendTimeout, "no boot server answered"),
        };
        let error = packet::error_datagram(error_code::NOT_DEFINED, msg);
        client_sock.send_to(&error, self.client).await?;
        Ok(outcome)
    }

    /// Sends the request to one backend after another until one answers.
    async fn connect(
        &self,
        tried: &mut Vec<usize>,
        buf: &mut [u8],
    ) -> io::Result<Result<Leg, NoLeg>> {
        for _ in 0..self.settings.setup_attempts {
            let index = match self.next_backend(tried) {
                Choice::Backend(i) => i,
                Choice::NoHealthy if tried.is_empty() => return Ok(Err(NoLeg::NoHealthy)),
                Choice::Full if tried.is_empty() => return Ok(Err(NoLeg::Busy)),
                _ => break,
            };
            tried.push(index);
            match self.ask(index, buf).await? {
                Some(leg) => {
                    self.pool.remember(self.client.ip(), index);
                    return Ok(Ok(leg));
                }
                None if self.handle.cancel.is_cancelled() => return Ok(Err(NoLeg::Cancelled)),
                None => self.passive_failure(index, "did not answer the request in time"),
            }
        }
        Ok(Err(NoLeg::NoAnswer))
    }

    /// Sends the request to backend `index`; its first reply (in `buf`), or `None` after
    /// `setup_timeout` or on cancellation.
    async fn ask(&self, index: usize, buf: &mut [u8]) -> io::Result<Option<Leg>> {
        let backend = self.pool.backends[index].clone();
        // Counted from the moment it is asked, so a burst sees it busy (least-sessions and
        // `max_sessions` both read this count); released if it never answers.
        let claim = backend.claim();
        let socket = bind_like(backend.address).await?;
        if let Err(e) = socket.send_to(&self.handle.request, backend.address).await {
            // Unreachable network and the like: this backend cannot be asked; try another.
            tracing::debug!(backend = %backend.address, error = %e, "cannot send the request");
            return Ok(None);
        }
        let wait = timeout(
            self.settings.setup_timeout,
            self.first_reply(&socket, backend.address.ip(), buf),
        );
        let reply = tokio::select! {
            _ = self.handle.cancel.cancelled() => None,
            reply = wait => Some(reply),
        };
        match reply {
            Some(Ok(Ok((first_len, tid)))) => Ok(Some(Leg {
                index,
                socket,
                tid,
                claim,
                first_len,
            })),
            Some(Ok(Err(e))) => Err(e),
            // The backend may still answer later: its transfer must not find this port free
            // for another session to take.
            _ => {
                quarantine(socket);
                Ok(None)
            }
        }
    }

    /// Waits for the backend's answer to our request: the first datagram from `backend_ip`
    /// (any port: that port becomes its TID) that can answer this request. Anything else is a
    /// late packet of an older transfer that used the same local port, and is ignored: taking
    /// it would lock the session onto the wrong transfer.
    async fn first_reply(
        &self,
        socket: &UdpSocket,
        backend_ip: IpAddr,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddr)> {
        loop {
            match socket.recv_from(buf).await {
                Ok((n, from)) if from.ip() == backend_ip && self.answers_request(&buf[..n]) => {
                    return Ok((n, from));
                }
                Ok(_) => {}
                // ICMP port unreachable from a dead backend: keep waiting out the setup timeout.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether a datagram can be the answer to this session's request: an ERROR, an OACK with
    /// only requested options and no larger blksize, or DATA 1 (read) / ACK 0 (write) that fits
    /// the block size in force without options.
    fn answers_request(&self, datagram: &[u8]) -> bool {
        match packet::peek(datagram) {
            // ERROR 5 is what a stranger's packet gets, never an answer to a request.
            Ok(Kind::Error { code }) => code != error_code::UNKNOWN_TID,
            Ok(Kind::Oack) => match Packet::decode(datagram) {
                Ok(Packet::Oack(o)) => {
                    o.iter().all(|(k, _)| self.requested.get(k).is_some())
                        && o.blksize().unwrap_or(DEFAULT_BLKSIZE) <= self.blksize_bound()
                }
                _ => false,
            },
            Ok(Kind::Data { block: 1, len }) => !self.write && len <= usize::from(DEFAULT_BLKSIZE),
            Ok(Kind::Ack { block: 0 }) => self.write,
            _ => false,
        }
    }

    /// The largest block the backend may send: what the client asked for; a blksize the
    /// client wrote out of range may be clamped by the server to anything up to the maximum.
    fn blksize_bound(&self) -> u16 {
        match (self.requested.blksize(), self.requested.get("blksize")) {
            (Some(b), _) => b,
            (None, Some(_)) => MAX_BLKSIZE,
            (None, None) => DEFAULT_BLKSIZE,
        }
    }

    /// A backend not tried yet in this session; when all were tried, any eligible one again.
    fn next_backend(&self, tried: &[usize]) -> Choice {
        let ip = self.client.ip();
        match self.pool.choose(ip, &|i| !tried.contains(&i)) {
            Choice::Exhausted if !tried.is_empty() => self.pool.choose(ip, &|_| true),
            other => other,
        }
    }

    /// A backend that failed a session counts it like a failed probe (when the pool probes).
    fn passive_failure(&self, index: usize, why: &str) {
        let backend = &self.pool.backends[index];
        tracing::debug!(backend = %backend.address, client = %self.client, why, "backend failed a session");
        if let Some(h) = &self.pool.health {
            backend
                .state
                .record_passive_failure(&backend.address.to_string(), h.fall);
        }
    }

    /// Relays between the client and the backend's TID until the session ends.
    async fn transfer(&self, t: &mut Transfer<'_>) -> io::Result<Outcome> {
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
    async fn apply_data(
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

    /// At the first DATA the session passes on (an OACK is relayed as it is), decides once
    /// whether this transfer is read ahead: a read, configured, and a ring its windows fit.
    fn decide_read_ahead(&self, t: &mut Transfer<'_>, n: usize) {
        if !matches!(packet::peek(&t.buf[..n]), Ok(Kind::Data { .. })) {
            return;
        }
        t.ahead_decided = true;
        if self.settings.read_ahead == 0 || self.write || t.session.resumes() > 0 {
            return;
        }
        let negotiated = t.session.negotiated();
        let start = t.session.data_position().saturating_sub(1);
        t.ahead = ReadAhead::new(
            self.settings.read_ahead,
            negotiated.blksize,
            negotiated.windowsize,
            start,
        );
        if t.ahead.is_some() {
            t.session.set_read_ahead();
        }
    }

    /// A client datagram while reading ahead: its ACKs are answered from the ring, never
    /// passed on (the backend got ours); its ERROR goes to a backend still sending.
    async fn apply_client_ahead(
        &self,
        t: &mut Transfer<'_>,
        action: Action,
        n: usize,
    ) -> io::Result<Option<Outcome>> {
        let ahead = t.ahead.as_mut().expect("called while reading ahead");
        match action {
            Action::ForwardAndEnd(Outcome::ClientAborted) => {
                if !ahead.backend_done() {
                    t.leg.socket.send_to(&t.buf[..n], t.leg.tid).await?;
                    t.counts.to_backend += 1;
                }
                Ok(Some(Outcome::ClientAborted))
            }
            Action::Forward | Action::ForwardAndEnd(_) => {
                let step = ahead.on_ack(t.session.acked());
                let complete = ahead.complete();
                self.perform(t, step).await?;
                Ok(complete.then_some(Outcome::Completed))
            }
            _ => {
                t.counts.dropped += 1;
                Ok(None)
            }
        }
    }

    /// Reading ahead with a window, a DATA the session dropped is out of order (one before it
    /// was lost): acknowledge the last block in order so the backend resends from there.
    async fn ack_after_gap(&self, t: &mut Transfer<'_>, n: usize) -> io::Result<()> {
        let Some(ahead) = t.ahead.as_mut() else {
            return Ok(());
        };
        let is_data = matches!(packet::peek(&t.buf[..n]), Ok(Kind::Data { .. }));
        if !is_data || t.session.catching_up() {
            return Ok(());
        }
        match ahead.on_gap() {
            Some(pos) => self.ack_backend(t, pos).await,
            None => Ok(()),
        }
    }

    /// Sends what the read-ahead decided: our ACK to the backend, new blocks to the client.
    async fn perform(&self, t: &mut Transfer<'_>, step: Step) -> io::Result<()> {
        if let Some(pos) = step.ack_backend {
            self.ack_backend(t, pos).await?;
        }
        self.send_blocks(t, step.to_client).await
    }

    /// The client did not acknowledge its block(s) within the timeout: send them again.
    async fn resend_to_client(&self, t: &mut Transfer<'_>) -> io::Result<()> {
        match t.ahead.as_ref().map(ReadAhead::unacked) {
            Some(unacked) => self.send_blocks(t, unacked).await,
            None => Ok(()),
        }
    }

    /// Our own ACK of position `pos` to the backend, in its numbering: its turn starts now.
    async fn ack_backend(&self, t: &mut Transfer<'_>, pos: u64) -> io::Result<()> {
        let ack = ack_datagram(t.session.leg_wire(pos));
        t.leg.socket.send_to(&ack, t.leg.tid).await?;
        t.counts.to_backend += 1;
        t.last_data = Instant::now();
        Ok(())
    }

    /// Sends the stored blocks `positions` to the client; its retransmission timer starts.
    async fn send_blocks(
        &self,
        t: &mut Transfer<'_>,
        positions: std::ops::RangeInclusive<u64>,
    ) -> io::Result<()> {
        let Some(ahead) = t.ahead.as_ref() else {
            return Ok(());
        };
        if positions.is_empty() {
            return Ok(());
        }
        for pos in positions {
            t.client_sock
                .send_to(ahead.datagram(pos), self.client)
                .await?;
            t.counts.to_client += 1;
        }
        t.sent_at = Instant::now();
        Ok(())
    }

    /// Moves the transfer to another backend, or fails the client when none can take it.
    async fn fail_over(&self, t: &mut Transfer<'_>, why: &str) -> io::Result<Option<Outcome>> {
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
            let Some(leg) = self.ask(index, t.buf).await? else {
                if self.handle.cancel.is_cancelled() {
                    return Ok(Some(self.cancel_outcome()));
                }
                self.passive_failure(index, "did not answer a takeover request");
                continue;
            };
            let n = leg.first_len;
            match t.session.on_takeover_reply(&mut t.buf[..n]) {
                Takeover::AckOack => {
                    leg.socket.send_to(&ack_datagram(0), leg.tid).await?;
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

    fn switch(&self, t: &mut Transfer<'_>, leg: Leg) -> Option<Outcome> {
        tracing::info!(client = %self.client, from = %t.leg.address(), to = %leg.address(), "transfer taken over");
        let old = std::mem::replace(&mut t.leg, leg);
        tokio::spawn(release(old, true));
        t.last_data = Instant::now();
        t.catch_up_retries = 0;
        None
    }

    /// Ends the transfer with ERROR 0 and a reason the client (and its log) can show.
    async fn fail_client(&self, t: &mut Transfer<'_>, why: &str) -> io::Result<Outcome> {
        tracing::warn!(client = %self.client, why, "transfer failed");
        let error = packet::error_datagram(error_code::NOT_DEFINED, why);
        t.client_sock.send_to(&error, self.client).await?;
        Ok(Outcome::ResumeFailed)
    }

    fn cancel_outcome(&self) -> Outcome {
        if self.handle.superseded.load(Ordering::Relaxed) {
            Outcome::Superseded
        } else {
            Outcome::Shutdown
        }
    }
}

impl StrangerReply {
    async fn answer(&mut self, socket: &UdpSocket, to: SocketAddr) {
        let now = Instant::now();
        if now < self.next {
            return;
        }
        self.next = now + STRANGER_REPLY_INTERVAL;
        let error = packet::error_datagram(error_code::UNKNOWN_TID, "unknown transfer ID");
        let _ = socket.send_to(&error, to).await;
    }
}

/// How long a socket a session let go of stays bound. Longer than backends keep retransmitting
/// (async-tftp 5 × 1 s, tftpd-hpa about as long), so a late packet of an abandoned transfer
/// can never reach another session that got the same port from the kernel.
const QUARANTINE: Duration = Duration::from_secs(15);

/// Answers sent from one quarantined socket at most.
const QUARANTINE_REPLIES: u32 = 8;

/// Lets go of a backend leg. A transfer that is over (completed, or ended by an ERROR) just
/// closes. One the backend may still be sending is told to stop, and its socket quarantined,
/// so the port cannot carry its late packets to another session.
async fn release(leg: Leg, unfinished: bool) {
    drop(leg.claim);
    if unfinished {
        let _ = leg.socket.send_to(&cancelled_datagram(), leg.tid).await;
        quarantine(leg.socket);
    }
}

fn cancelled_datagram() -> Vec<u8> {
    packet::error_datagram(error_code::NOT_DEFINED, "transfer cancelled")
}

/// Keeps a socket bound for [`QUARANTINE`], answering whatever still arrives (but ERRORs) with
/// ERROR 0 so the transfer behind it stops, then closes it.
fn quarantine(socket: UdpSocket) {
    linger(socket, QUARANTINE, |head, _| {
        let is_error = head.get(..2) == Some(&error_code_bytes()[..]);
        (!is_error).then(cancelled_datagram)
    });
}

/// Answers a finished write's final DATA, repeated because its ACK was lost, with that ACK again
/// for `dally` (RFC 1350: the side that sends the last ACK waits in case it is lost).
fn answer_final_data(socket: UdpSocket, client: SocketAddr, block: u16, dally: Duration) {
    let ack = ack_datagram(block);
    let mut repeated = [0u8; 4];
    repeated[..2].copy_from_slice(&packet::opcode::DATA.to_be_bytes());
    repeated[2..].copy_from_slice(&block.to_be_bytes());
    linger(socket, dally, move |head, from| {
        (from == client && head == repeated).then(|| ack.to_vec())
    });
}

/// Keeps `socket` bound for `hold`, then closes it; meanwhile answers a datagram (its first
/// four bytes and its sender) with what `reply` makes of it, at most [`QUARANTINE_REPLIES`]
/// times, so a flood cannot turn the socket into an amplifier.
fn linger<F>(socket: UdpSocket, hold: Duration, reply: F)
where
    F: Fn(&[u8], SocketAddr) -> Option<Vec<u8>> + Send + 'static,
{
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(hold);
        tokio::pin!(deadline);
        let mut head = [0u8; 4];
        let mut replies = 0;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                got = socket.recv_from(&mut head) => {
                    let Ok((n, from)) = got else { continue };
                    if replies < QUARANTINE_REPLIES
                        && let Some(answer) = reply(&head[..n], from)
                    {
                        replies += 1;
                        let _ = socket.send_to(&answer, from).await;
                    }
                }
            }
        }
    });
}

fn error_code_bytes() -> [u8; 2] {
    packet::opcode::ERROR.to_be_bytes()
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

/// A socket on an ephemeral port of the same family as `peer`.
async fn bind_like(peer: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    UdpSocket::bind(SocketAddr::new(any, 0)).await
}
