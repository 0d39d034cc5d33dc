//! Carrying on a read that another front end started (see `tftp::sync` and `cluster`): the
//! session's address is bound here now, and the client's next ACK (or its retransmission)
//! says where it stands. A backend is asked for the same request, the one that served it if
//! it is still eligible, and caught up to that ACK with the resume machinery a failover uses;
//! the client then gets the next block from the address it has talked to all along.
//!
//! What cannot be carried on ends with a TFTP ERROR and its reason: no backend can take it,
//! the file differs, or the client's ACK fits no position.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::time::{Instant, timeout_at};

use super::failover::NewLeg;
use super::send::to_client;
use super::timers::Timers;
use super::{Counts, Relay, Transfer};
use crate::protocol::packet::{self, Kind, error_code};
use crate::tftp::resumable::{Placed, Resumable};
use crate::tftp::session::{Outcome, Session};
use crate::tftp::sync::Resume;

/// What the client's first datagrams to this node came to.
enum Heard {
    /// Its ACK, placed at this position.
    At(u64),
    /// Its ACK names two positions (see `Resumable::place`).
    Ambiguous,
    Aborted,
    Nothing,
    Cancelled,
}

impl Relay {
    /// Carries a synced transfer on, from the client's next ACK.
    pub(super) async fn relay_resumed(
        &self,
        resume: Resume,
        buf: &mut [u8],
        session: &mut Session,
        counts: &mut Counts,
    ) -> io::Result<(Outcome, Option<SocketAddr>)> {
        let Resume { socket, synced } = resume;
        let pos = match self
            .clients_ack(&socket, &synced.state, buf, counts)
            .await?
        {
            Heard::At(pos) => pos,
            Heard::Ambiguous => {
                let why = "the transfer cannot be resumed at this block";
                tell_client(&socket, self.client, why, counts).await;
                return Ok((Outcome::ResumeFailed, None));
            }
            Heard::Aborted => return Ok((Outcome::ClientAborted, None)),
            Heard::Nothing => return Ok((Outcome::IdleTimeout, None)),
            Heard::Cancelled => return Ok((self.cancel_outcome(), None)),
        };
        let now = Instant::now();
        self.handle.replied(now.into_std());
        self.handle.heard_client(now.into_std());
        if let Err(limited) = self.slot.answered() {
            tell_client(&socket, self.client, limited.message(), counts).await;
            return Ok((Outcome::ClientLimit, None));
        }
        let mut resumed = Session::resumed(synced.state, pos);
        let from = resumed.begin_resume();
        tracing::info!(client = %self.client, session = %synced.key.session, from_block = from, "carrying on a transfer of another front end");
        let mut tried = Vec::new();
        let first = self.pool.index_of(synced.backend);
        let found = self
            .new_leg(&mut resumed, &mut tried, buf, counts, first)
            .await?;
        let (leg, first_data) = match found {
            NewLeg::Ready(leg, first_data) => (leg, first_data),
            NewLeg::Failed(why) => {
                tell_client(&socket, self.client, why, counts).await;
                *session = resumed;
                return Ok((Outcome::ResumeFailed, None));
            }
            NewLeg::Cancelled => return Ok((self.cancel_outcome(), None)),
        };
        let mut timers = Timers::new(&self.settings, self.pool.resume, now);
        timers.heard_client(now);
        let mut t = Transfer {
            client_sock: socket,
            leg,
            tried,
            buf,
            session: resumed,
            counts: std::mem::take(counts),
            timers,
            ahead: None,
            // A resumed read is relayed packet for packet (see `ahead`).
            ahead_decided: true,
            synced: None,
            batch: super::send::Batch::default(),
            burst: None,
        };
        self.announce(&mut t, now);
        let outcome = match first_data {
            Some((action, n)) => match self.apply_data(&mut t, action, n).await {
                Ok(Some(end)) => Ok(end),
                Ok(None) => self.carry_on(&mut t).await,
                Err(e) => Err(e),
            },
            None => self.carry_on(&mut t).await,
        };
        self.finish(t, outcome, session, counts).await
    }

    /// Waits for the client's ACK on the session's address, placed after the synced
    /// position (anything from elsewhere, and a stale ACK, is counted and dropped): it came,
    /// or the client gave up, or nothing within the idle timeout.
    async fn clients_ack(
        &self,
        socket: &UdpSocket,
        synced: &Resumable,
        buf: &mut [u8],
        counts: &mut Counts,
    ) -> io::Result<Heard> {
        let deadline = Instant::now() + self.settings.idle_timeout;
        loop {
            let got = tokio::select! {
                _ = self.handle.cancel.cancelled() => return Ok(Heard::Cancelled),
                got = timeout_at(deadline, socket.recv_from(buf)) => got.ok(),
            };
            let n = match got {
                None => return Ok(Heard::Nothing),
                Some(Ok((n, from))) if from == self.client => n,
                Some(Ok(_)) => {
                    counts.dropped += 1;
                    continue;
                }
                // An earlier send hit a closed port: the client may still come.
                Some(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Some(Err(e)) => return Err(e),
            };
            match packet::peek(&buf[..n]) {
                Ok(Kind::Ack { block }) => match synced.place(block) {
                    Placed::At(pos) => return Ok(Heard::At(pos)),
                    Placed::Ambiguous => return Ok(Heard::Ambiguous),
                    Placed::Stale => counts.dropped += 1,
                },
                Ok(Kind::Error { .. }) => return Ok(Heard::Aborted),
                _ => counts.dropped += 1,
            }
        }
    }
}

/// ERROR 0 with the reason, to a client whose transfer cannot go on.
async fn tell_client(socket: &UdpSocket, client: SocketAddr, why: &str, counts: &mut Counts) {
    tracing::warn!(%client, why, "synced transfer not carried on");
    let error = packet::error_datagram(error_code::NOT_DEFINED, why);
    to_client(socket, &error, client, counts).await;
}
