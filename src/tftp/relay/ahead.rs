//! The glue between the transfer loop and the read-ahead ring (`readahead`): deciding once
//! whether a transfer is read ahead, answering the client's ACKs from the ring, and sending
//! what the ring decides (our ACKs to the backend, blocks to the client).
//!
//! Why apart from the loop: with read-ahead the relay is a TFTP sender in its own right, with
//! rules of its own, while the loop stays the same for transfers relayed packet for packet.

use std::io;

use tokio::time::Instant;

use super::send::{gather_for_client, to_backend};
use super::{Relay, Transfer};
use crate::protocol::packet::{self, Kind, ack_datagram};
use crate::tftp::readahead::{ReadAhead, Step};
use crate::tftp::session::{Action, Outcome};

impl Relay {
    /// At the first DATA the session passes on (an OACK is relayed as it is), decides once
    /// whether this transfer is read ahead: a read, configured, and a ring its windows fit.
    pub(super) fn decide_read_ahead(&self, t: &mut Transfer<'_>, n: usize) {
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
    pub(super) async fn apply_client_ahead(
        &self,
        t: &mut Transfer<'_>,
        action: Action,
        n: usize,
    ) -> io::Result<Option<Outcome>> {
        let ahead = t.ahead.as_mut().expect("called while reading ahead");
        match action {
            Action::ForwardAndEnd(Outcome::ClientAborted) => {
                if !ahead.backend_done() {
                    to_backend(&t.leg, &t.buf[..n], &mut t.counts).await;
                }
                Ok(Some(Outcome::ClientAborted))
            }
            Action::Forward | Action::ForwardAndEnd(_) => {
                // Each ACK on its own: one of a block not sent yet is ignored, never kept.
                let Some(step) = ahead.on_ack(t.session.last_ack()) else {
                    t.counts.dropped += 1;
                    return Ok(None);
                };
                t.session.client_acked(ahead.acked());
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
    pub(super) async fn ack_after_gap(&self, t: &mut Transfer<'_>, n: usize) -> io::Result<()> {
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
    pub(super) async fn perform(&self, t: &mut Transfer<'_>, step: Step) -> io::Result<()> {
        if let Some(pos) = step.ack_backend {
            self.ack_backend(t, pos).await?;
        }
        self.send_blocks(t, step.to_client).await
    }

    /// The client did not acknowledge its block(s) within the timeout: send them again.
    pub(super) async fn resend_to_client(&self, t: &mut Transfer<'_>) -> io::Result<()> {
        match t.ahead.as_ref().map(ReadAhead::unacked) {
            Some(unacked) => self.send_blocks(t, unacked).await,
            None => Ok(()),
        }
    }

    /// Our own ACK of position `pos` to the backend, in its numbering: its turn starts now.
    async fn ack_backend(&self, t: &mut Transfer<'_>, pos: u64) -> io::Result<()> {
        let ack = ack_datagram(t.session.leg_wire(pos));
        to_backend(&t.leg, &ack, &mut t.counts).await;
        t.timers.acked_backend(Instant::now());
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
            // A client that never answered gets no more than a few (see `timers`).
            if !t.timers.may_send_to_client() {
                t.counts.dropped += 1;
                continue;
            }
            let datagram = ahead.datagram(pos);
            let socket = &t.client_sock;
            gather_for_client(socket, &mut t.batch, datagram, self.client, &mut t.counts).await;
        }
        t.timers.served_client(Instant::now());
        Ok(())
    }
}
