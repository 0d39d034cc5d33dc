//! The pure per-transfer state machine of the relay: a datagram in, an action out. No sockets,
//! no clock: the relay task owns those, which keeps this testable with plain unit tests.
//!
//! It knows just enough of TFTP to relay correctly and to resume:
//! - the negotiated blksize comes from the backend's OACK (never from the client's request);
//! - the transfer ends when the client acknowledges the short final block;
//! - blocks are tracked as **file positions** (u64), apart from wire block numbers, which roll
//!   over after 65535 to 0 or, for some servers, to 1. A [`Numbering`] maps one to the other.
//!
//! Resume: when a backend dies mid-transfer the relay asks another backend for the same file and
//! calls [`Session::begin_resume`]. The new backend's transfer (a "leg") starts at block 1; the
//! session consumes its blocks up to the last one the client acknowledged, acknowledging them
//! itself, then forwards the rest, renumbered into the client's numbering, and translates the
//! client's ACKs back. In the common case both numberings agree and rewriting is a no-op.
//!
//! The session never asks for a retransmission toward the client: the endpoints do that
//! (RFC 1123 §4.2.3.1, sorcerer's apprentice).

use crate::protocol::blocks::Numbering;
use crate::protocol::options::{DEFAULT_BLKSIZE, Negotiated};
use crate::protocol::packet::{self, Kind, Packet};
pub use crate::tftp::resumable::Resumable;

/// How a session ended; the same value feeds the log line and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The client acknowledged the final block.
    Completed,
    /// Served from a copy in memory; the client acknowledged the final block.
    Cached,
    /// The client sent an ERROR (a tsize probe's abort is one).
    ClientAborted,
    /// The backend answered with an ERROR (file not found, access violation, …).
    BackendError,
    /// No backend answered the request.
    BackendTimeout,
    /// No backend is healthy and the pool refuses to fail open.
    NoHealthyBackend,
    /// Every eligible backend is at its `max_sessions`: the request was left unanswered.
    Busy,
    /// A backend failed mid-transfer and no other could take over.
    ResumeFailed,
    /// Nothing from one side within the idle timeout.
    IdleTimeout,
    /// A new request from the same client address replaced this session (port reuse).
    Superseded,
    /// The program is shutting down.
    Shutdown,
    /// A socket error ended the session.
    Failed,
    /// The client never answered the first reply (a spoofed source, or a client gone): given
    /// up after two of its retransmission intervals.
    Unanswered,
    /// The table was full and this session, whose client had not answered, made room for a
    /// new request.
    Evicted,
    /// The client answered while it had as many sessions as `max_sessions_per_client`.
    ClientLimit,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Cached => "cached",
            Outcome::ClientAborted => "client-aborted",
            Outcome::BackendError => "backend-error",
            Outcome::BackendTimeout => "backend-timeout",
            Outcome::NoHealthyBackend => "no-healthy-backend",
            Outcome::ResumeFailed => "resume-failed",
            Outcome::Busy => "busy",
            Outcome::IdleTimeout => "idle-timeout",
            Outcome::Superseded => "superseded",
            Outcome::Shutdown => "shutdown",
            Outcome::Failed => "failed",
            Outcome::Unanswered => "unanswered",
            Outcome::Evicted => "evicted",
            Outcome::ClientLimit => "client-session-limit",
        }
    }
}

/// What to do with a datagram (which may have been renumbered in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Pass it to the other side.
    Forward,
    /// Pass it to the other side; then the session is over.
    ForwardAndEnd(Outcome),
    /// Not valid here: count it and drop it.
    Drop,
    /// Resume catch-up: the block was consumed; acknowledge it to the backend with this block.
    AckBackend(u16),
    /// Resume catch-up: consumed, nothing to send.
    Consume,
    /// The backend gave up mid-transfer (sent an ERROR): switch to another backend.
    Failover,
    /// Resume impossible (the new backend's file is shorter); fail the client with this reason.
    Fail(&'static str),
}

impl Action {
    /// The outcome, when this action ends the session.
    pub fn ends(self) -> Option<Outcome> {
        match self {
            Action::ForwardAndEnd(outcome) => Some(outcome),
            _ => None,
        }
    }
}

/// The first answer of a backend asked to take over a transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Takeover {
    /// Its OACK fits: acknowledge it with ACK 0, then catch up.
    AckOack,
    /// It answered with DATA: handle this action as for any DATA.
    Data(Action),
    /// It negotiated differently (another blksize): try yet another backend.
    Incompatible(String),
    /// It announces another size: not the same file. Fail the client.
    SizeChanged(String),
    /// It answered with an ERROR or something that is not an answer.
    Refused,
}

/// Where a transfer stands.
#[derive(Debug, Clone)]
pub struct Session {
    /// A write transfer (WRQ): DATA flows from the client, ACKs from the backend; no resume.
    write: bool,
    negotiated: Negotiated,
    /// Whether the first backend answered with an OACK (options in force).
    had_oack: bool,
    answered: bool,
    client: Numbering,
    /// The current backend transfer ("leg") and how far it got, in file positions.
    leg: Numbering,
    leg_window: u16,
    leg_pos: u64,
    /// While resuming: consume the new leg's blocks up to this position.
    catch_up: Option<u64>,
    resumes: u32,
    /// Highest position forwarded to the client, and acknowledged by it.
    delivered: u64,
    acked: u64,
    /// Position of the client's ACK `on_client` judged last.
    last_ack: u64,
    final_pos: Option<u64>,
    file_bytes: u64,
    /// The relay reads ahead (see `readahead`): client ACKs keep coming during a catch-up.
    read_ahead: bool,
    /// Position of the last DATA block `on_backend` passed on.
    last_data: u64,
    /// Read ahead with a window: a block 1 right after 65535 was set aside once (see
    /// `leg_position`).
    wrap_doubted: bool,
    /// Read ahead, the backend's numbering turned out other than guessed after blocks were
    /// stored: the transfer cannot go on correctly.
    numbering_broken: bool,
}

impl Default for Session {
    fn default() -> Self {
        Session::new()
    }
}

impl Session {
    /// A read transfer (RRQ).
    pub fn new() -> Session {
        Session {
            write: false,
            negotiated: Negotiated::default(),
            had_oack: false,
            answered: false,
            client: Numbering::default(),
            leg: Numbering::default(),
            leg_window: 1,
            leg_pos: 0,
            catch_up: None,
            resumes: 0,
            delivered: 0,
            acked: 0,
            last_ack: 0,
            final_pos: None,
            file_bytes: 0,
            read_ahead: false,
            last_data: 0,
            wrap_doubted: false,
            numbering_broken: false,
        }
    }

    /// A read synced from another front end whose client has just acknowledged position
    /// `pos` (see `Resumable::place`), ready for a new leg to catch up to it
    /// (`begin_resume`).
    pub fn resumed(synced: Resumable, pos: u64) -> Session {
        let client = Numbering {
            wrap_to_one: synced.wrap_to_one,
        };
        Session {
            negotiated: synced.negotiated,
            had_oack: synced.had_oack,
            answered: true,
            client,
            leg_window: synced.negotiated.windowsize,
            delivered: pos,
            acked: pos,
            last_ack: pos,
            last_data: pos,
            ..Session::new()
        }
    }

    /// What a peer needs to carry this read on (see [`Resumable`]). The client's numbering
    /// past 65535 is settled once the client has acknowledged a window past the rollover (a
    /// block 0 may still turn up within the first window), or once a resume fixed it (the
    /// relay then numbers for the client itself).
    pub fn resumable(&self) -> Resumable {
        let settled_from = 65_536 + u64::from(self.negotiated.windowsize);
        Resumable {
            negotiated: self.negotiated,
            had_oack: self.had_oack,
            wrap_to_one: self.client.wrap_to_one,
            wrap_known: self.resumes > 0 || self.acked >= settled_from,
            acked: self.acked,
        }
    }

    /// A write transfer (WRQ).
    pub fn new_write() -> Session {
        Session {
            write: true,
            ..Session::new()
        }
    }

    /// A datagram from the backend's TID (renumbered in place when it is forwarded).
    pub fn on_backend(&mut self, datagram: &mut [u8]) -> Action {
        if self.write {
            return self.on_backend_write(datagram);
        }
        match packet::peek(datagram) {
            Ok(Kind::Oack) if !self.answered => self.on_first_oack(datagram),
            // The backend repeats its OACK when the client's ACK 0 (or our forward of the
            // OACK) was lost: pass the endpoint's retransmission on, never one of our own.
            Ok(Kind::Oack) if self.oack_unconfirmed() => Action::Forward,
            Ok(Kind::Data { block, len }) => self.on_data(datagram, block, len),
            Ok(Kind::Error { .. }) if self.answered => Action::Failover,
            Ok(Kind::Error { .. }) => Action::ForwardAndEnd(Outcome::BackendError),
            _ => Action::Drop,
        }
    }

    /// A datagram from the client's address (renumbered in place when it is forwarded).
    pub fn on_client(&mut self, datagram: &mut [u8]) -> Action {
        if self.write {
            return self.on_client_write(datagram);
        }
        match packet::peek(datagram) {
            Ok(Kind::Ack { block }) if self.answered => self.on_ack(datagram, block),
            Ok(Kind::Error { .. }) => Action::ForwardAndEnd(Outcome::ClientAborted),
            _ => Action::Drop,
        }
    }

    /// Write: the backend accepts (ACK 0 or OACK) and acknowledges the client's blocks.
    fn on_backend_write(&mut self, datagram: &[u8]) -> Action {
        match packet::peek(datagram) {
            Ok(Kind::Oack) if !self.answered => self.on_first_oack(datagram),
            Ok(Kind::Oack) if self.oack_unconfirmed() => Action::Forward,
            Ok(Kind::Ack { block }) => {
                self.answered = true;
                let pos = self.client.position(block, self.delivered);
                if pos.is_some() && pos == self.final_pos {
                    Action::ForwardAndEnd(Outcome::Completed)
                } else {
                    Action::Forward
                }
            }
            Ok(Kind::Error { .. }) => Action::ForwardAndEnd(Outcome::BackendError),
            _ => Action::Drop,
        }
    }

    /// Write: the client sends the file once the backend has accepted.
    fn on_client_write(&mut self, datagram: &[u8]) -> Action {
        match packet::peek(datagram) {
            Ok(Kind::Data { block, len })
                if self.answered && len <= usize::from(self.negotiated.blksize) =>
            {
                // Past 65535 a client writes block 0 or, for some, block 1 next.
                if self.delivered == 65535 && block == 1 {
                    self.client.wrap_to_one = true;
                }
                if self.client.wire(self.delivered + 1) == block {
                    self.delivered += 1;
                    self.file_bytes += len as u64;
                    if len < usize::from(self.negotiated.blksize) {
                        self.final_pos = Some(self.delivered);
                    }
                }
                Action::Forward
            }
            Ok(Kind::Error { .. }) => Action::ForwardAndEnd(Outcome::ClientAborted),
            _ => Action::Drop,
        }
    }

    /// The first backend answered with an OACK and nothing has moved since.
    fn oack_unconfirmed(&self) -> bool {
        self.had_oack && self.resumes == 0 && self.delivered == 0 && self.acked == 0
    }

    fn on_first_oack(&mut self, datagram: &[u8]) -> Action {
        let Ok(Packet::Oack(options)) = Packet::decode(datagram) else {
            return Action::Drop;
        };
        self.negotiated = Negotiated::from_oack(&options);
        self.leg_window = self.negotiated.windowsize;
        self.had_oack = true;
        self.answered = true;
        Action::Forward
    }

    fn on_data(&mut self, datagram: &mut [u8], block: u16, len: usize) -> Action {
        if len > usize::from(self.negotiated.blksize) {
            return Action::Drop;
        }
        self.answered = true;
        let Some(pos) = self.leg_position(block) else {
            if self.numbering_broken {
                return Action::Fail("the boot server's block numbers are ambiguous at 65535");
            }
            return Action::Drop; // ahead of anything sent: a gap the endpoints will repair
        };
        match self.catch_up {
            Some(target) if pos <= target => return self.consume(pos, target, len),
            Some(_) => self.catch_up = None,
            None => {}
        }
        if pos > self.delivered {
            self.delivered = pos;
            self.file_bytes += len as u64;
            if len < usize::from(self.negotiated.blksize) {
                self.final_pos = Some(pos);
            }
        }
        set_block(datagram, self.client.wire(pos));
        self.last_data = pos;
        Action::Forward
    }

    /// The file position of a DATA block of the current leg, learning how it rolls over.
    fn leg_position(&mut self, block: u16) -> Option<u64> {
        let windowed_read_ahead = self.read_ahead && self.leg_window > 1;
        if self.leg_pos == 65535 && block == 1 && !self.leg.wrap_to_one {
            // Read ahead with a window, block 1 here may be a rollover to 1 or a lost block 0,
            // and a stored block cannot be taken back: set it aside (the relay asks for the
            // window again) and believe a rollover to 1 when block 1 comes first again.
            if windowed_read_ahead && !self.wrap_doubted {
                self.wrap_doubted = true;
                return None;
            }
            self.set_wrap_to_one(true);
        }
        // With a window, block 1 may have overtaken a lost block 0: a block 0 soon after the
        // wrap means the server rolls over to 0 after all. Block 1's position moves with it.
        if self.leg.wrap_to_one
            && block == 0
            && (65536..65536 + u64::from(self.leg_window)).contains(&self.leg_pos)
        {
            if self.read_ahead {
                self.numbering_broken = true;
                return None;
            }
            self.set_wrap_to_one(false);
            self.leg_pos = 65535;
            if self.resumes == 0 {
                self.delivered = self.delivered.min(65535);
            }
        }
        let next = self.leg_pos + 1;
        if self.leg.wire(next) == block {
            self.leg_pos = next;
            return Some(next);
        }
        self.leg.position(block, self.leg_pos)
    }

    fn set_wrap_to_one(&mut self, one: bool) {
        self.leg.wrap_to_one = one;
        if self.resumes == 0 {
            self.client.wrap_to_one = one;
        }
    }

    /// A block of a resumed leg at or before the client's position: acknowledge, don't forward.
    fn consume(&mut self, pos: u64, target: u64, len: usize) -> Action {
        let short = len < usize::from(self.negotiated.blksize);
        if pos < target && short {
            return Action::Fail("the other boot server's file is shorter");
        }
        if pos == target {
            self.catch_up = None;
            return Action::AckBackend(self.leg.wire(pos));
        }
        if pos.is_multiple_of(u64::from(self.leg_window)) {
            Action::AckBackend(self.leg.wire(pos))
        } else {
            Action::Consume
        }
    }

    fn on_ack(&mut self, datagram: &mut [u8], block: u16) -> Action {
        if self.catch_up.is_some() && !self.read_ahead {
            return Action::Drop; // we are feeding the new backend ourselves
        }
        let Some(pos) = self.client.position(block, self.delivered) else {
            return Action::Drop;
        };
        self.last_ack = pos;
        // Reading ahead, `delivered` counts blocks stored, not sent: the ring judges the ACK
        // against what the client was sent and reports back (`client_acked`).
        if !self.read_ahead {
            self.acked = self.acked.max(pos);
        }
        set_block(datagram, self.leg.wire(pos));
        if self.final_pos == Some(pos) {
            Action::ForwardAndEnd(Outcome::Completed)
        } else {
            Action::Forward
        }
    }

    /// Whether a failed backend can be replaced: the transfer is under way and not finished.
    pub fn can_resume(&self) -> bool {
        !self.write && self.answered && self.final_pos.is_none_or(|f| self.acked < f)
    }

    /// Starts a new leg on another backend; returns the position it must catch up to: the
    /// client's last ACK.
    pub fn begin_resume(&mut self) -> u64 {
        self.begin_resume_at(self.acked)
    }

    /// Starts a new leg that must catch up to `from` (with read-ahead: the last block stored).
    pub fn begin_resume_at(&mut self, from: u64) -> u64 {
        self.resumes += 1;
        self.leg = Numbering::default();
        self.leg_pos = 0;
        self.catch_up = Some(from);
        from
    }

    /// The relay reads ahead from now on: the client's ACKs are its own business, also while a
    /// new leg catches up.
    pub fn set_read_ahead(&mut self) {
        self.read_ahead = true;
    }

    /// The file position of the DATA block `on_backend` last passed on.
    pub fn data_position(&self) -> u64 {
        self.last_data
    }

    /// A position as the current backend leg numbers it (for an ACK of our own).
    pub fn leg_wire(&self, pos: u64) -> u16 {
        self.leg.wire(pos)
    }

    /// Judges the first answer of the backend taking over.
    pub fn on_takeover_reply(&mut self, datagram: &mut [u8]) -> Takeover {
        if let Some(why) = self.takeover_misfit(datagram) {
            return Takeover::Incompatible(why);
        }
        match packet::peek(datagram) {
            Ok(Kind::Oack) => self.judge_oack(datagram),
            Ok(Kind::Data { .. }) => {
                self.leg_window = 1;
                self.finish_catch_up_at_zero();
                Takeover::Data(self.on_backend(datagram))
            }
            _ => Takeover::Refused,
        }
    }

    /// Why an answer to a takeover cannot carry this transfer on (another blksize or window,
    /// or options ignored), if it cannot. Such an answer may also be a stray of an older
    /// transfer that used the same local port, so the relay keeps waiting for a fitting one.
    pub fn takeover_misfit(&self, datagram: &[u8]) -> Option<String> {
        match packet::peek(datagram) {
            Ok(Kind::Oack) => {
                let Ok(Packet::Oack(options)) = Packet::decode(datagram) else {
                    return None;
                };
                let theirs = Negotiated::from_oack(&options);
                if theirs.blksize != self.negotiated.blksize {
                    return Some(format!(
                        "blksize {} instead of {}",
                        theirs.blksize, self.negotiated.blksize
                    ));
                }
                // Another window would leave one side waiting for blocks or ACKs that never
                // come.
                (theirs.windowsize != self.negotiated.windowsize).then(|| {
                    format!(
                        "windowsize {} instead of {}",
                        theirs.windowsize, self.negotiated.windowsize
                    )
                })
            }
            Ok(Kind::Data { .. })
                if self.had_oack
                    && (self.negotiated.blksize != DEFAULT_BLKSIZE
                        || self.negotiated.windowsize > 1) =>
            {
                Some("it ignored the options".into())
            }
            _ => None,
        }
    }

    fn judge_oack(&mut self, datagram: &[u8]) -> Takeover {
        let Ok(Packet::Oack(options)) = Packet::decode(datagram) else {
            return Takeover::Refused;
        };
        let theirs = Negotiated::from_oack(&options);
        if let (Some(a), Some(b)) = (self.negotiated.tsize, theirs.tsize)
            && a != b
        {
            return Takeover::SizeChanged(format!("the file is {b} bytes there, {a} bytes here"));
        }
        self.leg_window = theirs.windowsize;
        self.finish_catch_up_at_zero();
        Takeover::AckOack
    }

    /// Nothing to catch up when the client had acknowledged no block yet.
    fn finish_catch_up_at_zero(&mut self) {
        if self.catch_up == Some(0) {
            self.catch_up = None;
        }
    }

    /// The ACK to resend to a resumed leg when it goes quiet during catch-up.
    pub fn catch_up_ack(&self) -> Option<u16> {
        self.catch_up.map(|_| self.leg.wire(self.leg_pos))
    }

    pub fn catching_up(&self) -> bool {
        self.catch_up.is_some()
    }

    /// Whether the backend has answered the request (OACK or DATA).
    pub fn answered(&self) -> bool {
        self.answered
    }

    pub fn negotiated(&self) -> Negotiated {
        self.negotiated
    }

    /// Distinct DATA blocks relayed to the client, and their payload bytes.
    pub fn progress(&self) -> (u64, u64) {
        (self.delivered, self.file_bytes)
    }

    /// A write's final block number as the client numbers it, once the client has sent it:
    /// what a repeated final DATA must be answered with after the backend acknowledged it.
    pub fn final_write_block(&self) -> Option<u16> {
        self.final_pos
            .filter(|_| self.write)
            .map(|p| self.client.wire(p))
    }

    /// The last position the client acknowledged.
    pub fn acked(&self) -> u64 {
        self.acked
    }

    /// The position of the client's ACK just judged. Reading ahead, the ring decides whether
    /// it counts: a block stored but not sent yet cannot be acknowledged.
    pub fn last_ack(&self) -> u64 {
        self.last_ack
    }

    /// Reading ahead, the ring accepted the client's ACK of `pos`.
    pub fn client_acked(&mut self, pos: u64) {
        self.acked = self.acked.max(pos);
    }

    pub fn resumes(&self) -> u32 {
        self.resumes
    }
}

/// Writes a block number into a DATA or ACK datagram.
fn set_block(datagram: &mut [u8], block: u16) {
    if let Some(b) = datagram.get_mut(2..4) {
        b.copy_from_slice(&block.to_be_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::options::Options;
    use crate::protocol::packet::ack_datagram;
    use crate::tftp::resumable::Placed;

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

    fn ack(block: u16) -> Vec<u8> {
        ack_datagram(block).to_vec()
    }

    fn block_of(datagram: &[u8]) -> u16 {
        u16::from_be_bytes([datagram[2], datagram[3]])
    }

    #[test]
    fn lock_step_transfer_ends_on_ack_of_short_block() {
        let mut s = Session::new();
        assert_eq!(s.on_backend(&mut data(1, 512)), Action::Forward);
        assert_eq!(s.on_client(&mut ack(1)), Action::Forward);
        assert_eq!(s.on_backend(&mut data(2, 100)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(2)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
        assert_eq!(s.progress(), (2, 612));
    }

    #[test]
    fn blksize_comes_from_the_oack_not_the_request() {
        let mut s = Session::new();
        assert_eq!(
            s.on_backend(&mut oack(&[("blksize", "1024")])),
            Action::Forward
        );
        assert_eq!(s.on_client(&mut ack(0)), Action::Forward);
        assert_eq!(s.on_backend(&mut data(1, 1024)), Action::Forward);
        assert_eq!(s.on_client(&mut ack(1)), Action::Forward);
        assert_eq!(s.on_backend(&mut data(2, 0)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(2)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "512")]));
        assert_eq!(s.on_backend(&mut data(1, 513)), Action::Drop);
    }

    #[test]
    fn windowsize_traffic_passes_in_order_with_any_ack() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&mut ack(0));
        for b in 1..=4 {
            assert_eq!(s.on_backend(&mut data(b, 8)), Action::Forward);
        }
        // A WDS-style ACK with an extra byte still counts.
        assert_eq!(s.on_client(&mut [0, 4, 0, 4, 1]), Action::Forward);
        assert_eq!(s.on_backend(&mut data(5, 3)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(5)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
    }

    #[test]
    fn reading_ahead_the_ring_decides_which_ack_counts() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&mut ack(0));
        s.set_read_ahead();
        for b in 1..=8 {
            s.on_backend(&mut data(b, 8));
        }
        // Block 5 is stored in the ring but not sent: the client's ACK of it is judged there.
        assert_eq!(s.on_client(&mut ack(5)), Action::Forward);
        assert_eq!((s.last_ack(), s.acked()), (5, 0));
        assert_eq!(s.on_client(&mut ack(4)), Action::Forward);
        assert_eq!(s.last_ack(), 4);
        s.client_acked(4);
        assert_eq!(s.acked(), 4);
    }

    #[test]
    fn block_numbers_roll_over_to_zero_or_one() {
        for wrap_to_one in [false, true] {
            let numbering = Numbering { wrap_to_one };
            let mut s = Session::new();
            s.on_backend(&mut oack(&[("blksize", "8")]));
            for pos in 1..=70_000u64 {
                let mut d = data(numbering.wire(pos), 8);
                assert_eq!(s.on_backend(&mut d), Action::Forward, "pos {pos}");
                assert_eq!(block_of(&d), numbering.wire(pos), "no renumbering");
            }
            let last = numbering.wire(70_001);
            s.on_backend(&mut data(last, 1));
            assert_eq!(s.progress(), (70_001, 70_000 * 8 + 1));
            assert_eq!(
                s.on_client(&mut ack(last)),
                Action::ForwardAndEnd(Outcome::Completed)
            );
        }
    }

    #[test]
    fn a_lost_block_0_is_not_taken_for_a_rollover_to_1() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&mut ack(0));
        for pos in 1..=65535u64 {
            s.on_backend(&mut data(pos as u16, 8));
        }
        // Block 0 is lost; 1 and 2 arrive; the backend then resends its window from 0.
        s.on_backend(&mut data(1, 8));
        s.on_backend(&mut data(2, 8));
        for b in [0u16, 1, 2, 3] {
            let mut d = data(b, 8);
            assert_eq!(s.on_backend(&mut d), Action::Forward, "block {b}");
            assert_eq!(block_of(&d), b, "numbering stays rollover-to-0");
        }
        assert_eq!(s.on_backend(&mut data(4, 1)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(4)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
    }

    #[test]
    fn a_repeated_oack_is_passed_on_until_the_transfer_moves() {
        let mut s = Session::new();
        assert_eq!(
            s.on_backend(&mut oack(&[("blksize", "1024")])),
            Action::Forward
        );
        assert_eq!(
            s.on_backend(&mut oack(&[("blksize", "1024")])),
            Action::Forward
        );
        s.on_client(&mut ack(0));
        s.on_backend(&mut data(1, 1024));
        assert_eq!(
            s.on_backend(&mut oack(&[("blksize", "1024")])),
            Action::Drop
        );
    }

    #[test]
    fn duplicate_data_is_forwarded_but_counted_once() {
        let mut s = Session::new();
        s.on_backend(&mut data(1, 512));
        assert_eq!(s.on_backend(&mut data(1, 512)), Action::Forward);
        assert_eq!(s.progress(), (1, 512));
    }

    #[test]
    fn errors_end_or_fail_over() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("tsize", "100")]));
        let mut abort = packet::error_datagram(8, "tsize probe");
        assert_eq!(
            s.on_client(&mut abort),
            Action::ForwardAndEnd(Outcome::ClientAborted)
        );
        // An ERROR as the first answer is the answer (file not found).
        let mut s = Session::new();
        let mut nf = packet::error_datagram(1, "not found");
        assert_eq!(
            s.on_backend(&mut nf),
            Action::ForwardAndEnd(Outcome::BackendError)
        );
        // An ERROR mid-transfer means the backend gave up: fail over.
        let mut s = Session::new();
        s.on_backend(&mut data(1, 512));
        assert_eq!(
            s.on_backend(&mut packet::error_datagram(0, "disk error")),
            Action::Failover
        );
    }

    #[test]
    fn what_a_side_should_not_send_is_dropped() {
        let mut s = Session::new();
        assert_eq!(s.on_client(&mut ack(1)), Action::Drop);
        assert_eq!(s.on_backend(&mut ack(1)), Action::Drop);
        assert_eq!(s.on_client(&mut data(1, 4)), Action::Drop);
        assert_eq!(s.on_backend(&mut [0xff]), Action::Drop);
        s.on_backend(&mut data(1, 512));
        assert_eq!(s.on_backend(&mut oack(&[("blksize", "8")])), Action::Drop);
    }

    /// Relays `n` full 8-byte blocks with window 1 and has the client acknowledge each.
    fn relay_blocks(s: &mut Session, from: u64, to: u64) {
        for pos in from..=to {
            assert_eq!(s.on_backend(&mut data(pos as u16, 8)), Action::Forward);
            assert_eq!(s.on_client(&mut ack(pos as u16)), Action::Forward);
        }
    }

    #[test]
    fn a_write_is_relayed_until_the_backend_acks_the_short_block() {
        let mut s = Session::new_write();
        assert_eq!(
            s.on_client(&mut data(1, 512)),
            Action::Drop,
            "not accepted yet"
        );
        assert_eq!(s.on_backend(&mut ack(0)), Action::Forward);
        assert_eq!(s.on_client(&mut data(1, 512)), Action::Forward);
        assert_eq!(s.on_backend(&mut ack(1)), Action::Forward);
        assert_eq!(s.on_client(&mut data(2, 10)), Action::Forward);
        assert_eq!(
            s.on_backend(&mut ack(2)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
        assert_eq!(s.progress(), (2, 522));
        assert!(!s.can_resume());
    }

    #[test]
    fn a_write_completes_whether_the_client_rolls_over_to_0_or_to_1() {
        for wrap_to_one in [false, true] {
            let numbering = Numbering { wrap_to_one };
            let mut s = Session::new_write();
            s.on_backend(&mut oack(&[("blksize", "8")]));
            for pos in 1..=65_537u64 {
                let block = numbering.wire(pos);
                assert_eq!(s.on_client(&mut data(block, 8)), Action::Forward);
                assert_eq!(s.on_backend(&mut ack(block)), Action::Forward);
            }
            let last = numbering.wire(65_538);
            s.on_client(&mut data(last, 2));
            assert_eq!(s.final_write_block(), Some(last));
            assert_eq!(
                s.on_backend(&mut ack(last)),
                Action::ForwardAndEnd(Outcome::Completed),
                "wrap_to_one {wrap_to_one}"
            );
        }
    }

    #[test]
    fn resume_consumes_up_to_the_clients_ack_then_forwards() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("tsize", "83")]));
        s.on_client(&mut ack(0));
        relay_blocks(&mut s, 1, 5);
        // Block 6 went out but the backend died before the client's ACK.
        s.on_backend(&mut data(6, 8));
        assert!(s.can_resume());
        assert_eq!(s.begin_resume(), 5);
        let mut o = oack(&[("blksize", "8"), ("tsize", "83")]);
        assert_eq!(s.on_takeover_reply(&mut o), Takeover::AckOack);
        for pos in 1..5 {
            assert_eq!(s.on_backend(&mut data(pos, 8)), Action::AckBackend(pos));
        }
        assert_eq!(
            s.on_client(&mut ack(5)),
            Action::Drop,
            "the client waits; we feed the backend"
        );
        assert_eq!(s.on_backend(&mut data(5, 8)), Action::AckBackend(5));
        assert!(!s.catching_up());
        for pos in 6..=10 {
            assert_eq!(s.on_backend(&mut data(pos, 8)), Action::Forward);
            assert_eq!(s.on_client(&mut ack(pos)), Action::Forward);
        }
        assert_eq!(s.on_backend(&mut data(11, 3)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(11)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
        assert_eq!(s.progress(), (11, 83));
    }

    #[test]
    fn resume_renumbers_when_the_new_backend_rolls_over_differently() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8")]));
        s.on_client(&mut ack(0));
        // The first backend rolls over to 0; the client has acknowledged position 65_540.
        let zero = Numbering::default();
        for pos in 1..=65_540u64 {
            s.on_backend(&mut data(zero.wire(pos), 8));
        }
        s.on_client(&mut ack(zero.wire(65_540)));
        s.begin_resume();
        assert_eq!(
            s.on_takeover_reply(&mut oack(&[("blksize", "8")])),
            Takeover::AckOack
        );
        // The second rolls over to 1.
        let one = Numbering { wrap_to_one: true };
        for pos in 1..=65_540u64 {
            let a = s.on_backend(&mut data(one.wire(pos), 8));
            assert!(
                matches!(a, Action::AckBackend(_) | Action::Consume),
                "pos {pos}: {a:?}"
            );
        }
        let mut d = data(one.wire(65_541), 8);
        assert_eq!(s.on_backend(&mut d), Action::Forward);
        assert_eq!(block_of(&d), zero.wire(65_541), "renumbered for the client");
        let mut a = ack(zero.wire(65_541));
        assert_eq!(s.on_client(&mut a), Action::Forward);
        assert_eq!(block_of(&a), one.wire(65_541), "translated for the backend");
    }

    #[test]
    fn a_takeover_must_serve_the_same_file_the_same_way() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "1024"), ("tsize", "5000")]));
        s.on_client(&mut ack(0));
        s.on_backend(&mut data(1, 1024));
        s.begin_resume();
        let mut other_size = oack(&[("blksize", "1024"), ("tsize", "6000")]);
        assert!(matches!(
            s.on_takeover_reply(&mut other_size),
            Takeover::SizeChanged(_)
        ));
        let mut other_blksize = oack(&[("blksize", "512"), ("tsize", "5000")]);
        assert!(matches!(
            s.on_takeover_reply(&mut other_blksize),
            Takeover::Incompatible(_)
        ));
        assert!(matches!(
            s.on_takeover_reply(&mut data(1, 512)),
            Takeover::Incompatible(_)
        ));
        let mut nf = packet::error_datagram(1, "not found");
        assert_eq!(s.on_takeover_reply(&mut nf), Takeover::Refused);
    }

    #[test]
    fn a_shorter_file_during_catch_up_fails_the_client() {
        let mut s = Session::new();
        s.on_backend(&mut data(1, 512));
        s.on_client(&mut ack(1));
        s.on_backend(&mut data(2, 512));
        s.on_client(&mut ack(2));
        s.begin_resume();
        assert_eq!(
            s.on_takeover_reply(&mut data(1, 100)),
            Takeover::Data(Action::Fail("the other boot server's file is shorter"))
        );
    }

    #[test]
    fn the_synced_state_settles_the_rollover_a_window_past_it() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&mut ack(0));
        let numbering = Numbering { wrap_to_one: true };
        for pos in 1..=65_545u64 {
            s.on_backend(&mut data(numbering.wire(pos), 8));
            if pos % 4 == 0 {
                s.on_client(&mut ack(numbering.wire(pos)));
            }
            let state = s.resumable();
            assert_eq!(state.wrap_known, state.acked >= 65_540, "pos {pos}");
        }
        let state = s.resumable();
        assert!(state.wrap_to_one && state.wrap_known);
        assert_eq!(state.place(numbering.wire(65_548)), Placed::At(65_548));
    }

    #[test]
    fn a_synced_read_catches_up_then_forwards() {
        let synced = Resumable {
            negotiated: Negotiated::default(),
            had_oack: false,
            wrap_to_one: false,
            wrap_known: false,
            acked: 2,
        };
        assert_eq!(synced.place(3), Placed::At(3));
        let mut s = Session::resumed(synced, 3);
        assert_eq!(s.begin_resume(), 3);
        assert_eq!(
            s.on_takeover_reply(&mut data(1, 512)),
            Takeover::Data(Action::AckBackend(1))
        );
        assert_eq!(s.on_backend(&mut data(2, 512)), Action::AckBackend(2));
        assert_eq!(s.on_backend(&mut data(3, 512)), Action::AckBackend(3));
        assert_eq!(s.on_backend(&mut data(4, 100)), Action::Forward);
        assert_eq!(
            s.on_client(&mut ack(4)),
            Action::ForwardAndEnd(Outcome::Completed)
        );
    }

    #[test]
    fn windowed_catch_up_acknowledges_window_ends_and_the_target() {
        let mut s = Session::new();
        s.on_backend(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        s.on_client(&mut ack(0));
        for pos in 1..=6 {
            s.on_backend(&mut data(pos, 8));
        }
        s.on_client(&mut ack(4));
        s.begin_resume();
        s.on_takeover_reply(&mut oack(&[("blksize", "8"), ("windowsize", "4")]));
        assert_eq!(s.on_backend(&mut data(1, 8)), Action::Consume);
        assert_eq!(s.on_backend(&mut data(2, 8)), Action::Consume);
        assert_eq!(s.on_backend(&mut data(3, 8)), Action::Consume);
        assert_eq!(s.on_backend(&mut data(4, 8)), Action::AckBackend(4));
        assert_eq!(s.on_backend(&mut data(5, 8)), Action::Forward);
    }
}
