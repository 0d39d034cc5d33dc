//! The pure per-transfer state machine of the relay: a datagram in, a verdict out. No sockets,
//! no clock: the relay task owns those, which keeps this testable with plain unit tests.
//!
//! It knows just enough of TFTP to relay correctly: the negotiated blksize comes from the
//! backend's OACK (never from the client's request), the transfer ends when the client
//! acknowledges the short final block, block numbers roll over, and anything a side should not
//! send is dropped rather than forwarded. It never asks for a retransmission: the endpoints do
//! that (RFC 1123 §4.2.3.1, sorcerer's apprentice).

use super::options::Negotiated;
use super::packet::{self, Kind, Packet};

/// How a session ended; the same value feeds the log line and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the final block.
    Completed,
    /// The client sent an ERROR (a tsize probe's abort is one).
    ClientAborted,
    /// The backend sent an ERROR (file not found, access violation, …).
    BackendError,
    /// No backend answered the request.
    BackendTimeout,
    /// Nothing from one side within the idle timeout.
    IdleTimeout,
    /// A new request from the same client address replaced this session (port reuse).
    Superseded,
    /// The program is shutting down.
    Shutdown,
    /// A socket error ended the session.
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::ClientAborted => "client-aborted",
            Outcome::BackendError => "backend-error",
            Outcome::BackendTimeout => "backend-timeout",
            Outcome::IdleTimeout => "idle-timeout",
            Outcome::Superseded => "superseded",
            Outcome::Shutdown => "shutdown",
            Outcome::Failed => "failed",
        }
    }
}

/// What to do with a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it to the other side.
    Forward,
    /// Pass it to the other side; then the session is over.
    ForwardAndEnd(Outcome),
    /// Not valid here: count it and drop it.
    Drop,
}

/// Where a transfer stands.
#[derive(Debug, Clone)]
pub struct Session {
    negotiated: Negotiated,
    answered: bool,
    /// Wire number of the newest in-order DATA block seen from the backend.
    last_block: Option<u16>,
    /// Wire number of the short DATA block that ends the file, once seen.
    final_block: Option<u16>,
    /// Newest block the client acknowledged (wire number).
    last_ack: Option<u16>,
    blocks: u64,
    file_bytes: u64,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    pub fn new() -> Session {
        Session {
            negotiated: Negotiated::default(),
            answered: false,
            last_block: None,
            final_block: None,
            last_ack: None,
            blocks: 0,
            file_bytes: 0,
        }
    }

    /// A datagram from the backend's TID.
    pub fn on_backend(&mut self, datagram: &[u8]) -> Verdict {
        match packet::peek(datagram) {
            Ok(Kind::Oack) if !self.answered => self.on_oack(datagram),
            Ok(Kind::Data { block, len }) => self.on_data(block, len),
            Ok(Kind::Error { .. }) => Verdict::ForwardAndEnd(Outcome::BackendError),
            _ => Verdict::Drop,
        }
    }

    /// A datagram from the client's address.
    pub fn on_client(&mut self, datagram: &[u8]) -> Verdict {
        match packet::peek(datagram) {
            Ok(Kind::Ack { block }) if self.answered => self.on_ack(block),
            Ok(Kind::Error { .. }) => Verdict::ForwardAndEnd(Outcome::ClientAborted),
            _ => Verdict::Drop,
        }
    }

    fn on_oack(&mut self, datagram: &[u8]) -> Verdict {
        match Packet::decode(datagram) {
            Ok(Packet::Oack(options)) => {
                self.negotiated = Negotiated::from_oack(&options);
                self.answered = true;
                Verdict::Forward
            }
            _ => Verdict::Drop,
        }
    }

    fn on_data(&mut self, block: u16, len: usize) -> Verdict {
        if len > usize::from(self.negotiated.blksize) {
            return Verdict::Drop;
        }
        self.answered = true;
        if self.is_next_block(block) {
            self.last_block = Some(block);
            self.blocks += 1;
            self.file_bytes += len as u64;
            if len < usize::from(self.negotiated.blksize) {
                self.final_block = Some(block);
            }
        }
        Verdict::Forward
    }

    /// Block 1 first, then one more each time, rolling over after 65535 to 0 (or to 1, as some
    /// servers do).
    fn is_next_block(&self, block: u16) -> bool {
        match self.last_block {
            None => block == 1,
            Some(65535) => block == 0 || block == 1,
            Some(last) => block == last.wrapping_add(1),
        }
    }

    fn on_ack(&mut self, block: u16) -> Verdict {
        self.last_ack = Some(block);
        if self.final_block == Some(block) {
            Verdict::ForwardAndEnd(Outcome::Completed)
        } else {
            Verdict::Forward
        }
    }

    /// Whether the backend has answered the request (OACK or DATA).
    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Distinct DATA blocks relayed, and their payload bytes: the file as far as it got.
    pub fn progress(&self) -> (u64, u64) {
        (self.blocks, self.file_bytes)
    }

    pub fn last_ack(&self) -> Option<u16> {
        self.last_ack
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tftp::options::Options;
    use crate::tftp::packet::ack_datagram;

    fn data(block: u16, len: usize) -> Vec<u8> {
        Packet::Data {
            block,
            data: vec![0xab; len],
        }
        .encode()
    }

    fn oack(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut o = Options::default();
        for (k, v) in pairs {
            o.push(k, v);
        }
        Packet::Oack(o).encode()
    }

    #[test]
    fn lock_step_transfer_ends_on_ack_of_short_block() {
        let mut s = Session::new();
        assert_eq!(s.on_backend(&data(1, 512)), Verdict::Forward);
        assert_eq!(s.on_client(&ack_datagram(1)), Verdict::Forward);
        assert_eq!(s.on_backend(&data(2, 100)), Verdict::Forward);
        assert_eq!(
            s.on_client(&ack_datagram(2)),
            Verdict::ForwardAndEnd(Outcome::Completed)
        );
        assert_eq!(s.progress(), (2, 612));
    }

    #[test]
    fn blksize_comes_from_the_oack_not_the_request() {
        let mut s = Session::new();
        assert_eq!(
            s.on_backend(&oack(&[("blksize", "1024")])),
            Verdict::Forward
        );
        assert_eq!(s.on_client(&ack_datagram(0)), Verdict::Forward);
        // 1024 bytes is a full block at the negotiated size: not the end.
        assert_eq!(s.on_backend(&data(1, 1024)), Verdict::Forward);
        assert_eq!(s.on_client(&ack_datagram(1)), Verdict::Forward);
        assert_eq!(s.on_backend(&data(2, 0)), Verdict::Forward);
        assert_eq!(
            s.on_client(&ack_datagram(2)),
            Verdict::ForwardAndEnd(Outcome::Completed)
        );
        // A DATA bigger than negotiated is dropped, never forwarded.
        let mut s = Session::new();
        s.on_backend(&oack(&[("blksize", "512")]));
        assert_eq!(s.on_backend(&data(1, 513)), Verdict::Drop);
    }

    #[test]
    fn windowsize_traffic_passes_in_order_with_any_ack() {
        let mut s = Session::new();
        s.on_backend(&oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&ack_datagram(0));
        for b in 1..=4 {
            assert_eq!(s.on_backend(&data(b, 8)), Verdict::Forward);
        }
        // A WDS-style ACK with an extra byte still counts.
        assert_eq!(s.on_client(&[0, 4, 0, 4, 1]), Verdict::Forward);
        assert_eq!(s.on_backend(&data(5, 3)), Verdict::Forward);
        assert_eq!(
            s.on_client(&ack_datagram(5)),
            Verdict::ForwardAndEnd(Outcome::Completed)
        );
    }

    #[test]
    fn block_numbers_roll_over() {
        let mut s = Session::new();
        s.on_backend(&oack(&[("blksize", "8")]));
        for i in 1..=70_000u32 {
            let block = (i % 65536) as u16;
            assert_eq!(s.on_backend(&data(block, 8)), Verdict::Forward);
        }
        s.on_backend(&data((70_001 % 65536) as u16, 1));
        assert_eq!(s.progress(), (70_001, 70_000 * 8 + 1));
        assert_eq!(
            s.on_client(&ack_datagram((70_001 % 65536) as u16)),
            Verdict::ForwardAndEnd(Outcome::Completed)
        );
    }

    #[test]
    fn duplicate_data_is_forwarded_but_counted_once() {
        let mut s = Session::new();
        s.on_backend(&data(1, 512));
        assert_eq!(s.on_backend(&data(1, 512)), Verdict::Forward);
        assert_eq!(s.progress(), (1, 512));
    }

    #[test]
    fn errors_end_the_session_from_either_side() {
        let mut s = Session::new();
        s.on_backend(&oack(&[("tsize", "100")]));
        let abort = packet::error_datagram(8, "tsize probe");
        assert_eq!(
            s.on_client(&abort),
            Verdict::ForwardAndEnd(Outcome::ClientAborted)
        );
        let mut s = Session::new();
        let nf = packet::error_datagram(1, "not found");
        assert_eq!(
            s.on_backend(&nf),
            Verdict::ForwardAndEnd(Outcome::BackendError)
        );
    }

    #[test]
    fn what_a_side_should_not_send_is_dropped() {
        let mut s = Session::new();
        // The client cannot ACK before the backend answered.
        assert_eq!(s.on_client(&ack_datagram(1)), Verdict::Drop);
        assert_eq!(s.on_backend(&ack_datagram(1)), Verdict::Drop);
        assert_eq!(s.on_client(&data(1, 4)), Verdict::Drop);
        assert_eq!(s.on_backend(&[0xff]), Verdict::Drop);
        s.on_backend(&data(1, 512));
        // A second OACK mid-transfer is not forwarded.
        assert_eq!(s.on_backend(&oack(&[("blksize", "8")])), Verdict::Drop);
    }
}
