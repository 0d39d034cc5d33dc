//! What counts as a backend's answer to the request, and asking one backend for it (the
//! takeover of a running transfer asks this way; the session's setup waits on several).
//!
//! Why so strict a first reply: a late answer of a backend given up on, or a late packet of an
//! older transfer that used the same local port, must never lock the session onto the wrong
//! transfer. So the answer must come from the backend's IP and be one this very request can
//! get (an OACK of options it asked for, DATA 1 that fits, an ERROR that is not ERROR 5).
//!
//! What counts against a backend's health: a closed port (ICMP), and failures mid-transfer
//! (see `transfer`). Silence does not: a backend at its capacity drops requests silently and
//! is busy, not dead; whether it is dead is for its probes to say (they download a file). A
//! storm of unanswered requests must not mark every backend down.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::task::Poll;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout};

use super::backend_socket::{bind_like, connect_tid, reported_now};
use super::linger::quarantine;
use super::{Leg, Relay};
use crate::balance::SessionClaim;
use crate::protocol::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE};
use crate::protocol::packet::{self, Kind, Packet, error_code};

/// Datagrams that are no answer read from an asking socket per wake-up, at most.
const STRAYS_PER_WAKE: usize = 16;

/// What asking one backend came to.
pub(super) enum Answer {
    /// It answered: the transfer's leg, its first reply in the buffer.
    Leg(Leg),
    /// Nothing within `setup_timeout`.
    Silent,
    /// Its port is closed or it cannot be reached (ICMP).
    Unreachable,
    /// The request could not be sent (no route, a full queue): not the backend's doing.
    NotSent,
    Cancelled,
}

/// A backend asked for the request, waiting for its answer on a socket of its own.
pub(super) struct Asking {
    pub(super) index: usize,
    pub(super) socket: UdpSocket,
    /// Its IP: the answer comes from there (from any port: the TID).
    pub(super) ip: IpAddr,
    /// The session counts on the backend from the moment it is asked.
    pub(super) claim: SessionClaim,
    /// When it was asked.
    pub(super) since: Instant,
    /// When it was last sent the request (asked, or a retransmission passed on).
    pub(super) sent: Instant,
}

impl Asking {
    /// It answered from `tid`: the socket is connected to it, and becomes the transfer's leg.
    pub(super) async fn into_leg(self, tid: SocketAddr, first_len: usize) -> io::Result<Leg> {
        connect_tid(&self.socket, tid).await?;
        Ok(Leg {
            index: self.index,
            socket: self.socket,
            tid,
            claim: self.claim,
            first_len,
        })
    }
}

/// Waits until one of `asking` has something to read or an error to report; its index.
pub(super) async fn any_ready(asking: &[Asking]) -> usize {
    let interest = Interest::READABLE | Interest::ERROR;
    let mut ready: Vec<_> = asking
        .iter()
        .map(|a| Box::pin(a.socket.ready(interest)))
        .collect();
    std::future::poll_fn(|cx| {
        for (i, r) in ready.iter_mut().enumerate() {
            if r.as_mut().poll(cx).is_ready() {
                return Poll::Ready(i);
            }
        }
        Poll::Pending
    })
    .await
}

impl Relay {
    /// Sends the request to backend `index`: its first reply that `fits` (in `buf`) within
    /// `setup_timeout`, or what came instead. A reply that does not fit is taken for a stray
    /// of an older transfer on the same local port: the real answer may still follow.
    pub(super) async fn ask(
        &self,
        index: usize,
        buf: &mut [u8],
        fits: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> io::Result<Answer> {
        let backend = self.pool.backends[index].clone();
        // Counted from the moment it is asked, so a burst sees it busy (least-sessions and
        // `max_sessions` both read this count); released if it never answers.
        let claim = backend.claim();
        let socket = bind_like(backend.address).await?;
        if let Err(e) = socket.send_to(self.request(), backend.address).await {
            // Unreachable network and the like: this backend cannot be asked; try another.
            tracing::debug!(backend = %backend.address, error = %e, "cannot send the request");
            return Ok(Answer::NotSent);
        }
        let wait = timeout(
            self.settings.setup_timeout,
            self.first_reply(&socket, backend.address.ip(), buf, fits),
        );
        let reply = tokio::select! {
            _ = self.handle.cancel.cancelled() => None,
            reply = wait => Some(reply),
        };
        let answer = match reply {
            Some(Ok(Ok((first_len, tid)))) => {
                connect_tid(&socket, tid).await?;
                return Ok(Answer::Leg(Leg {
                    index,
                    socket,
                    tid,
                    claim,
                    first_len,
                }));
            }
            // ICMP port (or host) unreachable: nothing will come from there.
            Some(Ok(Err(e))) => {
                tracing::debug!(backend = %backend.address, error = %e, "request refused");
                return Ok(Answer::Unreachable);
            }
            Some(Err(_)) => Answer::Silent,
            None => Answer::Cancelled,
        };
        // The backend may still answer later: its transfer must not find this port free for
        // another session to take.
        quarantine(socket);
        Ok(answer)
    }

    /// Waits for the backend's answer to our request: the first datagram from `backend_ip`
    /// (any port: that port becomes its TID) that can answer this request and `fits`; anything
    /// else is counted and ignored. An error is what the kernel reported (ICMP, with
    /// IP_RECVERR).
    async fn first_reply(
        &self,
        socket: &UdpSocket,
        backend_ip: IpAddr,
        buf: &mut [u8],
        fits: &(dyn Fn(&[u8]) -> bool + Sync),
    ) -> io::Result<(usize, SocketAddr)> {
        loop {
            match socket.recv_from(buf).await {
                Ok((n, from))
                    if from.ip() == backend_ip
                        && self.answers_request(&buf[..n])
                        && fits(&buf[..n]) =>
                {
                    return Ok((n, from));
                }
                Ok(_) => metrics::counter!(crate::metrics::STRAYS).increment(1),
                // ICMP port unreachable (reported with IP_RECVERR, see `backend_socket`).
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
    pub(super) fn blksize_bound(&self) -> u16 {
        match (self.requested.blksize(), self.requested.get("blksize")) {
            (Some(b), _) => b,
            (None, Some(_)) => MAX_BLKSIZE,
            (None, None) => DEFAULT_BLKSIZE,
        }
    }

    /// What `asking` has now: its answer (its length in `buf` and the backend's TID), or an
    /// error the kernel reported (ICMP: that backend cannot be reached), or nothing (other
    /// datagrams are read and ignored, a few at a time so that a flood of them cannot keep
    /// the task from yielding).
    pub(super) fn take_answer(
        &self,
        asking: &Asking,
        buf: &mut [u8],
    ) -> Option<io::Result<(usize, SocketAddr)>> {
        if let Some(e) = reported_now(&asking.socket) {
            return Some(Err(e));
        }
        for _ in 0..STRAYS_PER_WAKE {
            match asking.socket.try_recv_from(buf) {
                Ok((n, from)) if from.ip() == asking.ip && self.answers_request(&buf[..n]) => {
                    return Some(Ok((n, from)));
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(e) => return Some(Err(e)),
            }
        }
        None
    }

    /// A backend that failed a session counts it like a failed probe (when the pool probes).
    pub(super) fn passive_failure(&self, index: usize, why: &str) {
        let backend = &self.pool.backends[index];
        tracing::debug!(backend = %backend.address, client = %self.client, why, "backend failed a session");
        if let Some(h) = &self.pool.health {
            backend
                .state
                .record_passive_failure(&backend.address.to_string(), h.fall);
        }
    }

    /// A backend that did not answer within `setup_timeout`: counted and logged, not held
    /// against its health (see the module doc).
    pub(super) fn silent(&self, index: usize) {
        let backend = &self.pool.backends[index];
        tracing::debug!(backend = %backend.address, client = %self.client, "backend did not answer the request in time");
        crate::metrics::setup_timeout(&self.pool.name, backend.address);
    }
}
