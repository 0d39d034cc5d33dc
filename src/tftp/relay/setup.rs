//! Finding a backend for the request: ask one eligible backend after another, each from a
//! fresh socket, and take the first reply that can answer this very request (the backend's TID).
//!
//! Why a fresh socket per backend and such a strict first reply: a late answer of a backend
//! given up on, or a late packet of an older transfer that used the same local port, must never
//! lock the session onto the wrong transfer. A backend that stays silent counts against its
//! health like a failed probe.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::time::timeout;

use super::backend_socket::{bind_like, connect_tid};
use super::linger::quarantine;
use super::send::to_client;
use super::{Counts, Leg, Relay};
use crate::pool::Choice;
use crate::protocol::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE};
use crate::protocol::packet::{self, Kind, Packet, error_code};
use crate::tftp::session::Outcome;

/// What asking one backend came to.
pub(super) enum Answer {
    /// It answered: the transfer's leg, its first reply in the buffer.
    Leg(Leg),
    /// Nothing within `setup_timeout`.
    Silent,
    /// Its port is closed or it cannot be reached (ICMP), or the request could not be sent.
    Unreachable,
    Cancelled,
}

/// Why no backend took the request.
pub(super) enum NoLeg {
    NoHealthy,
    Busy,
    NoAnswer,
    Cancelled,
}

impl Relay {
    /// Tells the client why nothing will come, and names the outcome.
    pub(super) async fn no_backend(
        &self,
        client_sock: &UdpSocket,
        why: NoLeg,
        counts: &mut Counts,
    ) -> Outcome {
        let (outcome, msg) = match why {
            NoLeg::Cancelled => return self.cancel_outcome(),
            // Every backend is at its limit: stay silent, the client's retry comes back later.
            NoLeg::Busy => return Outcome::Busy,
            NoLeg::NoHealthy => (Outcome::NoHealthyBackend, "no healthy boot server"),
            NoLeg::NoAnswer => (Outcome::BackendTimeout, "no boot server answered"),
        };
        let error = packet::error_datagram(error_code::NOT_DEFINED, msg);
        to_client(client_sock, &error, self.client, counts).await;
        outcome
    }

    /// Sends the request to one backend after another until one answers.
    pub(super) async fn connect(
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
                Answer::Leg(leg) => {
                    self.pool.remember(self.client.ip(), index);
                    return Ok(Ok(leg));
                }
                Answer::Cancelled => return Ok(Err(NoLeg::Cancelled)),
                Answer::Silent => self.passive_failure(index, "did not answer the request in time"),
                Answer::Unreachable => self.passive_failure(index, "its port is closed"),
            }
        }
        Ok(Err(NoLeg::NoAnswer))
    }

    /// Sends the request to backend `index`: its first reply (in `buf`) within
    /// `setup_timeout`, or what came instead.
    pub(super) async fn ask(&self, index: usize, buf: &mut [u8]) -> io::Result<Answer> {
        let backend = self.pool.backends[index].clone();
        // Counted from the moment it is asked, so a burst sees it busy (least-sessions and
        // `max_sessions` both read this count); released if it never answers.
        let claim = backend.claim();
        let socket = bind_like(backend.address).await?;
        if let Err(e) = socket.send_to(&self.handle.request, backend.address).await {
            // Unreachable network and the like: this backend cannot be asked; try another.
            tracing::debug!(backend = %backend.address, error = %e, "cannot send the request");
            return Ok(Answer::Unreachable);
        }
        let wait = timeout(
            self.settings.setup_timeout,
            self.first_reply(&socket, backend.address.ip(), buf),
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

    /// A backend not tried yet in this session; when all were tried, any eligible one again.
    fn next_backend(&self, tried: &[usize]) -> Choice {
        let ip = self.client.ip();
        match self.pool.choose(ip, &|i| !tried.contains(&i)) {
            Choice::Exhausted if !tried.is_empty() => self.pool.choose(ip, &|_| true),
            other => other,
        }
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
}
