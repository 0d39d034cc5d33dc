//! The task that owns one transfer's sockets and relays it, packet for packet.
//!
//! - Toward the client it sends from a socket bound to the exact local address the request was
//!   sent to (port 0: a fresh TID), because clients compare the whole source address.
//! - Toward the backend it sends the client's request unchanged to the backend's port 69, learns
//!   the backend's TID from its first reply, and from then on talks only to that TID.
//! - If the chosen backend does not answer within `setup_timeout`, the request goes to the next
//!   acceptable backend (a fresh socket, so a late answer of the first cannot slip in).
//! - Packets from any other source get a rate-limited ERROR 5 and change nothing.
//! - One receive buffer, sized once from the request, serves the whole transfer: nothing is
//!   allocated per relayed packet. The relay never retransmits on its own; the endpoints do.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use super::options::{DEFAULT_BLKSIZE, Negotiated};
use super::packet::{self, Packet, error_code};
use super::session::{Outcome, Session, Verdict};
use crate::balance::SessionClaim;
use crate::pool::Pool;

/// Timeouts a session runs with (from `[tftp]`).
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    pub setup_timeout: Duration,
    pub setup_attempts: u32,
    pub idle_timeout: Duration,
}

/// What the listener shares with a running session: enough to tell a retransmitted request
/// from a new one, and to end the session from outside.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    /// The request datagram as received, to recognise its retransmissions.
    pub request: Box<[u8]>,
    /// Set once the client has sent anything to the session's port: from then on an identical
    /// request to port 69 is a new transfer (PXE ROMs reuse their port), not a retransmission.
    pub client_seen: AtomicBool,
    pub cancel: CancellationToken,
    pub superseded: AtomicBool,
}

/// One transfer to relay.
#[derive(Debug)]
pub struct Relay {
    pub client: SocketAddr,
    /// The local address the client sent its request to.
    pub local_ip: IpAddr,
    pub pool: Arc<Pool>,
    pub settings: RelaySettings,
    pub handle: Arc<SessionHandle>,
    pub requested_blksize: Option<u16>,
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
    pub elapsed: Duration,
}

/// A backend that answered: its socket, TID, and the session's claim on it.
struct Connected {
    socket: UdpSocket,
    tid: SocketAddr,
    claim: SessionClaim,
    first_len: usize,
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

const STRANGER_REPLY_INTERVAL: Duration = Duration::from_millis(100);

impl Relay {
    /// Runs the transfer to its end and reports how it went.
    pub async fn run(self) -> Report {
        let started = Instant::now();
        let mut buf = vec![0u8; self.buffer_len()];
        let mut counts = Counts::default();
        let mut session = Session::new();
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
            elapsed: started.elapsed(),
        }
    }

    /// Room for the largest DATA the backend may send (it cannot raise the requested blksize),
    /// one byte more to detect an oversized datagram, and at least the request's size for OACKs.
    fn buffer_len(&self) -> usize {
        let blksize = usize::from(self.requested_blksize.unwrap_or(DEFAULT_BLKSIZE));
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
        let Some(connected) = self.connect(buf).await? else {
            let outcome = if self.handle.cancel.is_cancelled() {
                self.cancel_outcome()
            } else {
                let msg = "no boot server answered";
                client_sock
                    .send_to(
                        &packet::error_datagram(error_code::NOT_DEFINED, msg),
                        self.client,
                    )
                    .await?;
                Outcome::BackendTimeout
            };
            return Ok((outcome, None));
        };
        let backend = connected.claim.backend().address;
        let outcome = self
            .transfer(&client_sock, &connected, buf, session, counts)
            .await?;
        Ok((outcome, Some(backend)))
    }

    /// Sends the request to one backend after another until one answers; `None` if none did
    /// within `setup_attempts` or the session was cancelled.
    async fn connect(&self, buf: &mut [u8]) -> io::Result<Option<Connected>> {
        let mut tried: Vec<usize> = Vec::new();
        for _ in 0..self.settings.setup_attempts {
            let Some(index) = self.next_backend(&tried) else {
                return Ok(None);
            };
            tried.push(index);
            let backend = self.pool.backends[index].clone();
            let socket = bind_like(backend.address).await?;
            socket
                .send_to(&self.handle.request, backend.address)
                .await?;
            let wait = timeout(
                self.settings.setup_timeout,
                first_reply(&socket, backend.address.ip(), buf),
            );
            tokio::select! {
                _ = self.handle.cancel.cancelled() => return Ok(None),
                reply = wait => match reply {
                    Ok(Ok((first_len, tid))) => {
                        self.pool.remember(self.client.ip(), index);
                        let claim = backend.claim();
                        return Ok(Some(Connected { socket, tid, claim, first_len }));
                    }
                    Ok(Err(e)) => return Err(e),
                    Err(_) => tracing::debug!(backend = %backend.address, client = %self.client,
                        "backend did not answer the request in time"),
                },
            }
        }
        Ok(None)
    }

    /// A backend not tried yet in this session; when all were tried, any (the pool may have one).
    fn next_backend(&self, tried: &[usize]) -> Option<usize> {
        let ip = self.client.ip();
        self.pool
            .choose(ip, &|i| !tried.contains(&i))
            .or_else(|| self.pool.choose(ip, &|_| true))
    }

    /// Relays between the client and the backend's TID until the session ends.
    async fn transfer(
        &self,
        client_sock: &UdpSocket,
        backend: &Connected,
        buf: &mut [u8],
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<Outcome> {
        let idle = self.settings.idle_timeout;
        let mut last_client = Instant::now();
        let mut last_backend = Instant::now();
        // One limiter per socket: a flood on one side cannot silence the other.
        let mut client_strangers = StrangerReply {
            next: Instant::now(),
        };
        let mut backend_strangers = StrangerReply {
            next: Instant::now(),
        };
        // The first reply is already in `buf`.
        if let Some(end) = self
            .from_backend(client_sock, &buf[..backend.first_len], session, counts)
            .await?
        {
            return Ok(end);
        }
        let deadline = sleep_until(last_client.min(last_backend) + idle);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                _ = self.handle.cancel.cancelled() => return Ok(self.cancel_outcome()),
                _ = &mut deadline => {
                    let due = last_client.min(last_backend) + idle;
                    if Instant::now() >= due {
                        return Ok(Outcome::IdleTimeout);
                    }
                    deadline.as_mut().reset(due);
                }
                ready = backend.socket.readable() => {
                    ready?;
                    let Some((n, from)) = try_recv(&backend.socket, buf)? else { continue };
                    if from != backend.tid {
                        backend_strangers.answer(&backend.socket, from).await;
                        counts.dropped += 1;
                        continue;
                    }
                    last_backend = Instant::now();
                    if n == buf.len() {
                        counts.dropped += 1; // larger than any block it may send
                        continue;
                    }
                    if let Some(end) = self.from_backend(client_sock, &buf[..n], session, counts).await? {
                        return Ok(end);
                    }
                }
                ready = client_sock.readable() => {
                    ready?;
                    let Some((n, from)) = try_recv(client_sock, buf)? else { continue };
                    if from != self.client {
                        client_strangers.answer(client_sock, from).await;
                        counts.dropped += 1;
                        continue;
                    }
                    last_client = Instant::now();
                    self.handle.client_seen.store(true, Ordering::Relaxed);
                    if let Some(end) = self.from_client(backend, &buf[..n], session, counts).await? {
                        return Ok(end);
                    }
                }
            }
        }
    }

    async fn from_backend(
        &self,
        client_sock: &UdpSocket,
        datagram: &[u8],
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<Option<Outcome>> {
        let verdict = session.on_backend(datagram);
        forward(
            verdict,
            client_sock,
            datagram,
            self.client,
            &mut counts.to_client,
            &mut counts.dropped,
        )
        .await
    }

    async fn from_client(
        &self,
        backend: &Connected,
        datagram: &[u8],
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<Option<Outcome>> {
        let verdict = session.on_client(datagram);
        forward(
            verdict,
            &backend.socket,
            datagram,
            backend.tid,
            &mut counts.to_backend,
            &mut counts.dropped,
        )
        .await
    }

    fn cancel_outcome(&self) -> Outcome {
        if self.handle.superseded.load(Ordering::Relaxed) {
            Outcome::Superseded
        } else {
            Outcome::Shutdown
        }
    }
}

/// Applies a verdict: sends the datagram on, or counts it as dropped.
async fn forward(
    verdict: Verdict,
    socket: &UdpSocket,
    datagram: &[u8],
    to: SocketAddr,
    sent: &mut u64,
    dropped: &mut u64,
) -> io::Result<Option<Outcome>> {
    match verdict {
        Verdict::Drop => {
            *dropped += 1;
            Ok(None)
        }
        Verdict::Forward => {
            socket.send_to(datagram, to).await?;
            *sent += 1;
            Ok(None)
        }
        Verdict::ForwardAndEnd(outcome) => {
            socket.send_to(datagram, to).await?;
            *sent += 1;
            Ok(Some(outcome))
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
        let _ = socket.send_to(&unknown_tid_datagram(), to).await;
    }
}

fn unknown_tid_datagram() -> Vec<u8> {
    Packet::Error {
        code: error_code::UNKNOWN_TID,
        message: "unknown transfer ID".into(),
    }
    .encode()
}

/// Waits for the first datagram from `backend_ip` (any port: that port is its TID).
async fn first_reply(
    socket: &UdpSocket,
    backend_ip: IpAddr,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr)> {
    loop {
        let (n, from) = socket.recv_from(buf).await?;
        if from.ip() == backend_ip {
            return Ok((n, from));
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

/// A socket on an ephemeral port of the same family as `peer`.
async fn bind_like(peer: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    UdpSocket::bind(SocketAddr::new(any, 0)).await
}
