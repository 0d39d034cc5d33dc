//! One download after the server's first reply: OACK validation, windowed ACKs, blocks counted
//! with `protocol::blocks::Sequence`, end of transfer on a short block, tsize check.

use std::time::Duration;

use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::protocol::blocks::{Seq, Sequence};
use crate::protocol::options::{Negotiated, Options};
use crate::protocol::packet::{Kind, ack_datagram, error_code};

use super::conn::Conn;
use super::*;

/// Where the receive loop stands after one datagram.
enum Step {
    More,
    Done,
}

/// The state of one download after the server's first reply.
pub(super) struct Receiver {
    conn: Conn,
    negotiated: Negotiated,
    oack: Option<Options>,
    blocks: Sequence,
    bytes: u64,
    /// In-order blocks since our last ACK.
    unacked: u16,
    /// A gap was already reported since the last progress (report each gap once).
    gap_reported: bool,
}

impl Receiver {
    /// Handles the first reply: OACK (validate, ACK 0), DATA (options ignored) or ERROR.
    pub(super) async fn start(
        mut conn: Conn,
        cfg: &ClientConfig,
        first: &[u8],
    ) -> Result<Receiver, ClientError> {
        let oack = match peek_checked(first)? {
            Kind::Oack => Some(decode_oack(first)?),
            Kind::Data { .. } => None,
            Kind::Error { .. } => return Err(remote_error(first)),
            other => return Err(conn.refuse(other).await),
        };
        if let Some(options) = &oack {
            if let Err(why) = check_oack(options, cfg, cfg.tsize) {
                return Err(conn.abort(error_code::OPTION_REFUSED, why).await);
            }
            conn.send(&ack_datagram(0)).await?;
        }
        conn.progress();
        let negotiated = oack.as_ref().map(Negotiated::from_oack).unwrap_or_default();
        Ok(Receiver {
            conn,
            negotiated,
            oack,
            blocks: Sequence::new(),
            bytes: 0,
            unacked: 0,
            gap_reported: false,
        })
    }

    /// Receives until the last block. `first` is the length of the datagram already in `buf`
    /// (the server's first reply: handled again here if it was DATA 1).
    pub(super) async fn run<W: AsyncWrite + Unpin>(
        &mut self,
        buf: &mut [u8],
        first: usize,
        sink: &mut W,
    ) -> Result<(), ClientError> {
        let mut n = first;
        if self.oack.is_some() {
            n = self.recv(buf).await?;
        }
        while let Step::More = self.on_datagram(&buf[..n], sink).await? {
            n = self.recv(buf).await?;
        }
        sink.flush().await?;
        self.check_size()
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, ClientError> {
        let n = self.conn.recv(buf).await?;
        if std::mem::take(&mut self.conn.resent) {
            // The server restarts its window after our ACK: so do we.
            self.unacked = 0;
        }
        Ok(n)
    }

    async fn on_datagram<W: AsyncWrite + Unpin>(
        &mut self,
        datagram: &[u8],
        sink: &mut W,
    ) -> Result<Step, ClientError> {
        match peek_checked(datagram)? {
            Kind::Data { block, len } => self.on_data(block, &datagram[4..4 + len], sink).await,
            // A repeated OACK (our ACK 0 was late or lost): our timer resends the ACK if needed.
            Kind::Oack => Ok(Step::More),
            Kind::Error { .. } => Err(remote_error(datagram)),
            other => Err(self.conn.refuse(other).await),
        }
    }

    async fn on_data<W: AsyncWrite + Unpin>(
        &mut self,
        block: u16,
        payload: &[u8],
        sink: &mut W,
    ) -> Result<Step, ClientError> {
        if payload.len() > usize::from(self.negotiated.blksize) {
            let why = format!(
                "DATA {block} has {} bytes, blksize is {}",
                payload.len(),
                self.negotiated.blksize
            );
            return Err(self.conn.abort(error_code::ILLEGAL_OPERATION, why).await);
        }
        match self.blocks.classify(block, self.negotiated.windowsize) {
            Seq::InOrder => self.in_order(payload, sink).await,
            Seq::Old => Ok(Step::More),
            Seq::Ahead => self.gap().await.map(|()| Step::More),
        }
    }

    /// Writes the block, then ACKs it if it ends the window or the transfer.
    async fn in_order<W: AsyncWrite + Unpin>(
        &mut self,
        payload: &[u8],
        sink: &mut W,
    ) -> Result<Step, ClientError> {
        if let Err(e) = sink.write_all(payload).await {
            let message = format!("client could not store the data: {e}");
            self.conn.tell(error_code::NOT_DEFINED, &message).await;
            return Err(e.into());
        }
        self.bytes += payload.len() as u64;
        self.conn.progress();
        self.gap_reported = false;
        self.unacked += 1;
        let last = payload.len() < usize::from(self.negotiated.blksize);
        let ack = ack_datagram(self.blocks.last());
        if last || self.unacked >= self.negotiated.windowsize {
            self.unacked = 0;
            self.conn.send(&ack).await?;
        } else {
            self.conn.set_pending(&ack);
        }
        Ok(if last { Step::Done } else { Step::More })
    }

    /// A block beyond the next expected one: re-ACK the last in-order block, once per gap.
    async fn gap(&mut self) -> Result<(), ClientError> {
        if self.gap_reported {
            return Ok(());
        }
        self.gap_reported = true;
        self.unacked = 0;
        self.conn.retransmissions += 1;
        self.conn.send(&ack_datagram(self.blocks.last())).await?;
        Ok(())
    }

    fn check_size(&self) -> Result<(), ClientError> {
        match self.negotiated.tsize {
            Some(expected) if expected != self.bytes => Err(ClientError::SizeMismatch {
                expected,
                got: self.bytes,
            }),
            _ => Ok(()),
        }
    }

    pub(super) fn into_transfer(self, elapsed: Duration) -> Transfer {
        Transfer {
            bytes: self.bytes,
            blocks: self.blocks.received(),
            negotiated: self.negotiated,
            oack: self.oack,
            elapsed,
            server_tid: self.conn.peer(),
            local: self.conn.socket.local_addr().ok(),
            retransmissions: self.conn.retransmissions,
        }
    }
}
