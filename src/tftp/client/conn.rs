//! One download's socket and retransmission timer: locks onto the server's TID, answers
//! strangers with ERROR 5 without letting them disturb the transfer, and resends the pending
//! packet when no progress was made for `retry_timeout` (see the module doc of `client`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::{Instant, Sleep};

use crate::protocol::options::DEFAULT_BLKSIZE;
use crate::protocol::packet::{self, Kind, error_code};

use super::*;

const UNKNOWN_TID: &[u8] = b"\x00\x05\x00\x05unknown transfer ID\x00";

/// The socket, the peer, and the retransmission timer of one transfer.
pub(super) struct Conn {
    pub(super) socket: UdpSocket,
    server: SocketAddr,
    tid: Option<SocketAddr>,
    /// What the timer resends: the RRQ, then the ACK of the last in-order block.
    pending: Vec<u8>,
    retry_timeout: Duration,
    retries: u32,
    retries_left: u32,
    last_progress: Instant,
    timer: Pin<Box<Sleep>>,
    pub(super) retransmissions: u64,
    /// Set when the timer resent `pending`; the receiver reads and clears it.
    pub(super) resent: bool,
}

impl Conn {
    pub(super) async fn open(server: SocketAddr, cfg: &ClientConfig) -> std::io::Result<Conn> {
        let socket = UdpSocket::bind(cfg.bind.unwrap_or_else(|| unspecified(server))).await?;
        let now = Instant::now();
        Ok(Conn {
            socket,
            server,
            tid: None,
            pending: Vec::with_capacity(64),
            retry_timeout: cfg.retry_timeout,
            retries: cfg.retries,
            retries_left: cfg.retries,
            last_progress: now,
            timer: Box::pin(tokio::time::sleep_until(now + cfg.retry_timeout)),
            retransmissions: 0,
            resent: false,
        })
    }

    /// Where our packets go: the TID once known, port 69 (or whatever `server` says) before.
    pub(super) fn peer(&self) -> SocketAddr {
        self.tid.unwrap_or(self.server)
    }

    /// Sends `datagram` and makes it the packet the timer resends.
    pub(super) async fn send(&mut self, datagram: &[u8]) -> std::io::Result<()> {
        self.set_pending(datagram);
        self.socket.send_to(datagram, self.peer()).await?;
        Ok(())
    }

    /// Makes `datagram` the packet the timer resends, without sending it now.
    pub(super) fn set_pending(&mut self, datagram: &[u8]) {
        self.pending.clear();
        self.pending.extend_from_slice(datagram);
    }

    /// Sends an ERROR (not retransmitted, RFC 1350).
    pub(super) async fn send_error(&mut self, code: u16, message: &str) -> std::io::Result<()> {
        let datagram = packet::error_datagram(code, message);
        self.socket.send_to(&datagram, self.peer()).await?;
        Ok(())
    }

    /// Tells the server why we stop (best effort: we are failing anyway).
    pub(super) async fn tell(&mut self, code: u16, message: &str) {
        if let Err(e) = self.send_error(code, message).await {
            tracing::debug!(error = %e, "could not send ERROR to the server");
        }
    }

    /// Tells the server why we stop and returns the matching protocol error.
    pub(super) async fn abort(&mut self, code: u16, message: String) -> ClientError {
        self.tell(code, &message).await;
        ClientError::Protocol(message)
    }

    /// Aborts on a packet a reading client never expects (ACK, RRQ, WRQ).
    pub(super) async fn refuse(&mut self, kind: Kind) -> ClientError {
        let message = format!("unexpected {kind:?} from the server");
        self.abort(error_code::ILLEGAL_OPERATION, message).await
    }

    /// The transfer moved forward: the retry budget is full again.
    pub(super) fn progress(&mut self) {
        self.last_progress = Instant::now();
        self.retries_left = self.retries;
    }

    /// The next datagram from the server (locking the TID on the first one); retransmits on
    /// the way when the timer fires, and fails once the retries are spent.
    pub(super) async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        loop {
            let (n, from) = tokio::select! {
                biased;
                r = self.socket.recv_from(buf) => r?,
                () = self.timer.as_mut() => {
                    self.on_timer().await?;
                    continue;
                }
            };
            if self.accept(from, &buf[..n]) {
                return Ok(n);
            }
            self.reject(&buf[..n], from).await;
        }
    }

    /// The timer fired: re-arm it if there was progress meanwhile, else retransmit or give up.
    pub(super) async fn on_timer(&mut self) -> Result<(), ClientError> {
        let due = self.last_progress + self.retry_timeout;
        if due > Instant::now() {
            self.timer.as_mut().reset(due);
            return Ok(());
        }
        if self.retries_left == 0 {
            return Err(ClientError::Timeout);
        }
        self.retries_left -= 1;
        self.retransmissions += 1;
        self.resent = true;
        self.last_progress = Instant::now();
        self.timer
            .as_mut()
            .reset(self.last_progress + self.retry_timeout);
        tracing::debug!(peer = %self.peer(), left = self.retries_left, "retransmitting");
        self.socket.send_to(&self.pending, self.peer()).await?;
        Ok(())
    }

    /// Is `from` our server? The first reply from the server's IP that can answer a request
    /// (OACK, DATA 1 or ERROR) fixes the TID. Anything else is a late packet of an older
    /// transfer that used this local port before: locking onto it would fetch the wrong file.
    pub(super) fn accept(&mut self, from: SocketAddr, datagram: &[u8]) -> bool {
        match self.tid {
            Some(tid) => from == tid,
            None if from.ip().to_canonical() == self.server.ip().to_canonical()
                && answers_request(datagram) =>
            {
                self.tid = Some(from);
                true
            }
            None => false,
        }
    }

    /// A datagram from a stranger: ERROR 5, unless it is itself an ERROR (never answered).
    pub(super) async fn reject(&self, datagram: &[u8], from: SocketAddr) {
        tracing::debug!(%from, "datagram from an unknown transfer ID");
        if matches!(packet::peek(datagram), Ok(Kind::Error { .. })) {
            return;
        }
        if let Err(e) = self.socket.send_to(UNKNOWN_TID, from).await {
            tracing::debug!(%from, error = %e, "could not send ERROR 5");
        }
    }
}

/// Whether a first datagram can answer a request: an OACK, DATA 1 of a server that ignored the
/// options (so at most 512 bytes), or an ERROR other than 5 (what strangers get).
pub(super) fn answers_request(datagram: &[u8]) -> bool {
    match packet::peek(datagram) {
        Ok(Kind::Oack) => true,
        Ok(Kind::Data { block: 1, len }) => len <= usize::from(DEFAULT_BLKSIZE),
        Ok(Kind::Error { code }) => code != error_code::UNKNOWN_TID,
        _ => false,
    }
}

pub(super) fn unspecified(server: SocketAddr) -> SocketAddr {
    let ip = match server {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    SocketAddr::new(ip, 0)
}
