//! The task that owns one transfer's sockets and relays it, packet for packet.
//!
//! - Toward the client it sends from a socket bound to the exact local address the request was
//!   sent to (port 0: a fresh TID), because clients compare the whole source address.
//! - Toward the backend it sends the client's request (unchanged but for a blksize over
//!   `[tftp] max_blksize`) to the backend's port, learns the backend's TID from its first
//!   reply, and from then on talks only to that TID (the socket is connected to it: the kernel
//!   drops strangers, and says when the port closes, which fails the transfer over at once;
//!   see `backend_socket`).
//! - If the chosen backend does not answer within `setup_timeout`, the request goes to the next
//!   eligible backend too, from a socket of its own; the first answer wins. When none answers,
//!   the client hears nothing (backends at their capacity drop requests silently): its own
//!   retransmissions are passed on until one answers or it stops (see `setup`). Silence is not
//!   held against a backend's health; a closed port is.
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
//!
//! The files beside this one, by concern: `setup` finds a backend that answers the request
//! (when, says `setup_clock`; what an answer is, `reply`; the sockets, `backend_socket`),
//! `transfer` is the loop that relays between the two sides, `ahead` glues the read-ahead ring
//! into it, `failover` moves a transfer to another backend, `send` sends (a failed send is a
//! lost packet), and `linger` lets go of sockets
//! without letting a late packet reach another session. Every decision with a clock (idle end,
//! stall, resends, catch-up, dally) is made by the pure `timers`; the loop only asks it and
//! does what it says.

mod ahead;
mod announce;
mod backend_socket;
mod cached;
mod failover;
mod linger;
mod reply;
mod resumed;
mod send;
mod setup;
mod setup_clock;
mod timers;
mod transfer;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::cache::Cache;
use super::config::RelaySettings;
use super::readahead::ReadAhead;
use super::session::{Outcome, Session};
use super::sync::{Resume, SyncSender};
use super::table::SessionHandle;
use crate::balance::SessionClaim;
use crate::limits::ClientSlot;
use crate::metrics::SessionEnd;
use crate::pool::Pool;
use crate::protocol::options::Options;
pub use linger::{MAX_LINGERING, set_lingering_cap};
use linger::{answer_final_data, release};
use timers::{Ahead, Facts, Timers};

/// One transfer to relay.
#[derive(Debug)]
pub struct Relay {
    pub client: SocketAddr,
    /// The local address the client sent its request to.
    pub local_ip: IpAddr,
    pub pool: Arc<Pool>,
    pub settings: RelaySettings,
    pub handle: Arc<SessionHandle>,
    /// The options of the request as relayed, to recognise a genuine answer to it.
    pub requested: Options,
    /// The request as relayed when it is not the client's datagram (a blksize lowered to
    /// `[tftp] max_blksize`, see `admission::relayed_request`); `None`: the client's own.
    pub rewritten: Option<Box<[u8]>>,
    /// A write request (the pool allows writes): relayed, never resumed.
    pub write: bool,
    /// The session's place in its client's count, taken when the client answers.
    pub slot: ClientSlot,
    /// The port-69 address the client sent its request to (what peers key the session by).
    pub contacted: SocketAddr,
    /// Where the session tells the cluster how it stands (when `[cluster]` is configured).
    pub sync: Option<SyncSender>,
    /// A transfer another front end started, to carry on from the client's next ACK.
    pub resume: Option<Resume>,
    /// The copies in memory, when the pool keeps this file there.
    pub cache: Option<Arc<Cache>>,
    /// What the copy of this file is kept under and fetched as, when the pool keeps it.
    pub memory: Option<FromMemory>,
    /// The copy a read missed: its backend is asked first, and it is filled once the client
    /// answers.
    pub fill: Option<cached::Fill>,
}

/// A file the pool keeps in memory: the name its copies are kept under, the name a download
/// asks for, and the blksize it asks.
#[derive(Debug, Clone)]
pub struct FromMemory {
    pub name: Vec<u8>,
    pub fetch: String,
    pub fill_blksize: u16,
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

/// Counters of one session, kept locally and reported once at the end.
#[derive(Debug, Default)]
struct Counts {
    to_client: u64,
    to_backend: u64,
    dropped: u64,
    /// Datagrams the kernel would not send (counted as lost, see `send`).
    send_errors: u64,
    /// The backend's TID is closed (ICMP port unreachable): the loop fails over.
    backend_gone: bool,
}

/// Everything the transfer loop works on.
struct Transfer<'a> {
    client_sock: UdpSocket,
    leg: Leg,
    tried: Vec<usize>,
    buf: &'a mut [u8],
    session: Session,
    counts: Counts,
    /// Every decision with a clock: idle end, stall, resends to the client, catch-up.
    timers: Timers,
    /// The read-ahead, from the first DATA on (when configured and the ring fits).
    ahead: Option<ReadAhead>,
    /// Whether the first DATA has decided on `ahead` (once per session, not once per block).
    ahead_decided: bool,
    /// What the cluster was last told of the session, once it was.
    synced: Option<announce::Told>,
    /// DATA for the client not sent yet: it goes before the loop waits again.
    batch: send::Batch,
    /// A windowed transfer's backend datagrams, received together (`burst`).
    burst: Option<crate::tftp::burst::Burst>,
}

impl Transfer<'_> {
    /// When the timer must wake the loop next.
    fn next_deadline(&self) -> Instant {
        self.timers.next_deadline(Instant::now(), &self.facts())
    }

    /// What the timers need to know of the transfer now.
    fn facts(&self) -> Facts {
        Facts {
            catch_up: self.session.catch_up_ack(),
            negotiated_timeout: self.session.negotiated().timeout,
            ahead: self.ahead.as_ref().map(|ahead| Ahead {
                unacked: !ahead.unacked().is_empty(),
                waiting_on_backend: ahead.waiting_on_backend(),
            }),
        }
    }
}

impl Relay {
    /// Runs the transfer to its end and reports how it went (the log line and the metrics).
    pub async fn run(mut self) -> SessionEnd {
        let started = Instant::now();
        let resume = self.resume.take();
        if resume.is_none() && !self.write {
            match self.look_in_memory(std::time::Instant::now()) {
                cached::Memory::Serve { backend, file } => {
                    return self.served_from_memory(backend, file, started).await;
                }
                cached::Memory::Relay(fill) => self.fill = fill,
            }
        }
        let mut buf = vec![0u8; self.buffer_len()];
        let mut session = if self.write {
            Session::new_write()
        } else {
            Session::new()
        };
        let mut counts = Counts::default();
        let relayed = match resume {
            Some(resume) => {
                self.relay_resumed(resume, &mut buf, &mut session, &mut counts)
                    .await
            }
            None => self.relay(&mut buf, &mut session, &mut counts).await,
        };
        let (outcome, backend) = match relayed {
            Ok(done) => done,
            Err(e) => {
                // Per request under a flood (EMFILE, say): the log gets its share only.
                if crate::limits::budget::may_log_packet_error() {
                    tracing::warn!(client = %self.client, error = %e, "session socket error");
                }
                (Outcome::Failed, None)
            }
        };
        let (blocks, file_bytes) = session.progress();
        let negotiated = session.negotiated();
        SessionEnd {
            outcome: outcome.as_str(),
            from_memory: false,
            backend,
            blksize: negotiated.blksize,
            windowsize: negotiated.windowsize,
            blocks,
            file_bytes,
            packets_to_client: counts.to_client,
            packets_to_backend: counts.to_backend,
            dropped: counts.dropped,
            send_errors: counts.send_errors,
            elapsed: started.elapsed(),
        }
    }

    /// Room for the largest DATA the backend may send (it cannot raise the requested blksize),
    /// one byte more to detect an oversized datagram, and at least the request's size for OACKs.
    fn buffer_len(&self) -> usize {
        let blksize = usize::from(self.blksize_bound());
        (4 + blksize + 1).max(self.request().len() + 64).max(1024)
    }

    /// The request datagram sent to backends.
    pub(super) fn request(&self) -> &[u8] {
        self.rewritten.as_deref().unwrap_or(&self.handle.request)
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
            Err(why) => return Ok((self.no_backend(&client_sock, why, counts).await, None)),
        };
        // The backend's first answer goes to the client now: from here the client may be
        // locked onto this session's port, and ending it to make room would strand it. Ended
        // for room before this point, the session sends nothing: the client asks again.
        if !self.handle.replied(std::time::Instant::now()) {
            let backend = leg.address();
            release(leg, true).await;
            return Ok((Outcome::Evicted, Some(backend)));
        }
        let mut t = Transfer {
            client_sock,
            leg,
            tried,
            buf,
            session: std::mem::take(session),
            counts: Counts::default(),
            timers: Timers::new(&self.settings, self.pool.resume, Instant::now()),
            ahead: None,
            ahead_decided: false,
            synced: None,
            batch: send::Batch::default(),
            burst: None,
        };
        let outcome = self.transfer(&mut t).await;
        self.finish(t, outcome, session, counts).await
    }

    /// Ends a transfer however it ended: a write's final ACK kept for its repeats, the
    /// backend's leg let go of, the cluster told.
    async fn finish(
        &self,
        mut t: Transfer<'_>,
        outcome: io::Result<Outcome>,
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<(Outcome, Option<SocketAddr>)> {
        self.flush(&mut t).await;
        self.announce_end(&t);
        *session = std::mem::take(&mut t.session);
        *counts = t.counts;
        if let (Ok(Outcome::Completed), Some(block)) = (&outcome, session.final_write_block()) {
            let dally = timers::dally(session.negotiated().timeout);
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

    fn cancel_outcome(&self) -> Outcome {
        if self.handle.superseded.load(Ordering::Relaxed) {
            Outcome::Superseded
        } else if self.handle.evicted.load(Ordering::Relaxed) {
            Outcome::Evicted
        } else {
            Outcome::Shutdown
        }
    }
}
