//! Letting go of sockets safely, and answering strangers sparingly.
//!
//! Why: a UDP port the kernel hands out again may still receive the packets of a transfer we
//! abandoned. A socket a backend may still be sending to stays bound for a while (quarantine)
//! and tells it to stop; a completed write keeps answering its final DATA (the client may have
//! lost our last ACK). Packets from unknown sources get an ERROR 5 at a bounded rate, so that
//! no socket of ours can be turned into an amplifier.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Leg;
use super::timers::QUARANTINE;
use crate::protocol::packet::{self, ack_datagram, error_code};

/// How often one socket may answer a stranger.
const STRANGER_REPLY_INTERVAL: Duration = Duration::from_millis(100);

/// Sends at most one ERROR 5 per [`STRANGER_REPLY_INTERVAL`] to strangers, so a flood cannot
/// turn us into an amplifier.
#[derive(Debug, Default)]
pub(super) struct StrangerReply {
    /// The earliest moment of the next reply (none yet: at once).
    next: Option<Instant>,
}

/// One limiter per socket: a flood on one side cannot silence the other.
#[derive(Default)]
pub(super) struct Strangers {
    pub(super) client: StrangerReply,
    pub(super) backend: StrangerReply,
}

impl StrangerReply {
    pub(super) async fn answer(&mut self, socket: &UdpSocket, to: SocketAddr) {
        if !self.permits(Instant::now()) {
            return;
        }
        let error = packet::error_datagram(error_code::UNKNOWN_TID, "unknown transfer ID");
        let _ = socket.send_to(&error, to).await;
    }

    /// Whether a reply may go out at `now`; if so, the next one waits an interval.
    fn permits(&mut self, now: Instant) -> bool {
        if self.next.is_some_and(|next| now < next) {
            return false;
        }
        self.next = Some(now + STRANGER_REPLY_INTERVAL);
        true
    }
}

/// Answers sent from one quarantined socket at most.
const QUARANTINE_REPLIES: u32 = 8;

/// Sockets lingering at most in the whole process (quarantined, or a finished write answering
/// its final DATA), at the least: the running configuration raises it to its session cap (see
/// [`set_lingering_cap`]). Beyond, a socket is closed at once: the strict first reply of
/// `setup` still keeps a late packet from taking over another session (the quarantine is a
/// second line), and every lingering socket is a file descriptor the sessions need.
pub const MAX_LINGERING: usize = 1024;

static LINGERING: Lingering = Lingering::new(MAX_LINGERING);

/// Lets `sessions` sockets linger at most (never fewer than [`MAX_LINGERING`]): the session
/// cap counts a third file per session for one (`runtime`), so under a flood as many sessions
/// as are admitted can let go of a leg safely, and ports do not come free early for a late
/// packet of an older transfer to reach a new one.
pub fn set_lingering_cap(sessions: usize) {
    LINGERING
        .max
        .store(sessions.max(MAX_LINGERING), Ordering::Relaxed);
}

/// Ports of sockets closed before their time (more lingered than the cap allows), and when:
/// a backend may still be answering to such a port, and a new leg bound to it could take that
/// late answer for its own (an OACK of the same options looks alike for any file). A new leg
/// does not take one within [`QUARANTINE`] (`backend_socket::bind_like`): the port stays
/// reserved without its file descriptor. One entry per port at most.
static CLOSED_EARLY: std::sync::Mutex<ClosedEarly> = std::sync::Mutex::new(ClosedEarly::new());

/// Entries beyond which the expired ones are swept out.
const CLOSED_EARLY_SWEEP: usize = 4096;

/// The ports closed early, and when the latest was: while that is a quarantine ago, no port
/// is reserved and a new leg need not even ask its socket for its port.
#[derive(Debug)]
struct ClosedEarly {
    ports: Option<std::collections::HashMap<u16, Instant>>,
    latest: Option<Instant>,
}

impl ClosedEarly {
    const fn new() -> ClosedEarly {
        ClosedEarly {
            ports: None,
            latest: None,
        }
    }

    fn note(&mut self, port: u16, now: Instant) {
        let ports = self.ports.get_or_insert_with(Default::default);
        if ports.len() >= CLOSED_EARLY_SWEEP {
            ports.retain(|_, at| now.saturating_duration_since(*at) < QUARANTINE);
        }
        ports.insert(port, now);
        self.latest = Some(self.latest.map_or(now, |at| at.max(now)));
    }

    fn any_reserved(&self, now: Instant) -> bool {
        self.latest
            .is_some_and(|at| now.saturating_duration_since(at) < QUARANTINE)
    }

    fn may_take(&self, port: u16, now: Instant) -> bool {
        self.ports
            .as_ref()
            .and_then(|ports| ports.get(&port))
            .is_none_or(|at| now.saturating_duration_since(*at) >= QUARANTINE)
    }
}

fn closed_early() -> std::sync::MutexGuard<'static, ClosedEarly> {
    CLOSED_EARLY.lock().unwrap_or_else(|p| p.into_inner())
}

/// Notes that the socket on `port` closed before its quarantine ended.
fn note_closed_early(port: u16, now: Instant) {
    closed_early().note(port, now);
}

/// Whether any port is reserved now (see [`may_take`]).
pub(super) fn any_reserved(now: Instant) -> bool {
    closed_early().any_reserved(now)
}

/// Whether a new leg may use `port`: not one closed early less than [`QUARANTINE`] ago.
pub(super) fn may_take(port: u16, now: Instant) -> bool {
    closed_early().may_take(port, now)
}

/// Counts the sockets lingering now, up to a cap.
#[derive(Debug)]
struct Lingering {
    now: AtomicUsize,
    max: AtomicUsize,
}

/// One socket's place among the lingering; given back when dropped.
struct LingerSlot(&'static Lingering);

impl Lingering {
    const fn new(max: usize) -> Lingering {
        Lingering {
            now: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
        }
    }

    /// A place for one more lingering socket, unless all are taken.
    fn enter(&'static self) -> Option<LingerSlot> {
        let max = self.max.load(Ordering::Relaxed);
        let taken = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            });
        match taken {
            Ok(n) => {
                crate::metrics::sockets_lingering(n + 1);
                Some(LingerSlot(self))
            }
            Err(_) => {
                crate::metrics::socket_closed_early();
                None
            }
        }
    }
}

impl Drop for LingerSlot {
    fn drop(&mut self) {
        let before = self.0.now.fetch_sub(1, Ordering::Relaxed);
        crate::metrics::sockets_lingering(before - 1);
    }
}

/// Lets go of a backend leg. A transfer that is over (completed, or ended by an ERROR) just
/// closes. One the backend may still be sending is told to stop, and its socket quarantined,
/// so the port cannot carry its late packets to another session.
pub(super) async fn release(leg: Leg, unfinished: bool) {
    drop(leg.claim);
    if unfinished {
        let _ = leg.socket.send_to(&cancelled_datagram(), leg.tid).await;
        quarantine(leg.socket);
    }
}

fn cancelled_datagram() -> Vec<u8> {
    packet::error_datagram(error_code::NOT_DEFINED, "transfer cancelled")
}

/// Keeps a socket bound for [`QUARANTINE`], answering whatever still arrives (but ERRORs) with
/// ERROR 0 so the transfer behind it stops, then closes it.
pub(super) fn quarantine(socket: UdpSocket) {
    linger(socket, QUARANTINE, |head, _| {
        let is_error = head.get(..2) == Some(&error_code_bytes()[..]);
        (!is_error).then(cancelled_datagram)
    });
}

/// Answers a finished write's final DATA, repeated because its ACK was lost, with that ACK again
/// for `dally` (RFC 1350: the side that sends the last ACK waits in case it is lost).
pub(super) fn answer_final_data(
    socket: UdpSocket,
    client: SocketAddr,
    block: u16,
    dally: Duration,
) {
    let ack = ack_datagram(block);
    let mut repeated = [0u8; 4];
    repeated[..2].copy_from_slice(&packet::opcode::DATA.to_be_bytes());
    repeated[2..].copy_from_slice(&block.to_be_bytes());
    linger(socket, dally, move |head, from| {
        (from == client && head == repeated).then(|| ack.to_vec())
    });
}

/// Keeps `socket` bound for `hold`, then closes it; meanwhile answers a datagram (its first
/// four bytes and its sender) with what `reply` makes of it, at most [`QUARANTINE_REPLIES`]
/// times, so a flood cannot turn the socket into an amplifier. With [`MAX_LINGERING`] sockets
/// lingering already, it is closed at once.
fn linger<F>(socket: UdpSocket, hold: Duration, reply: F)
where
    F: Fn(&[u8], SocketAddr) -> Option<Vec<u8>> + Send + 'static,
{
    let Some(slot) = LINGERING.enter() else {
        if let Ok(local) = socket.local_addr() {
            note_closed_early(local.port(), Instant::now());
        }
        return;
    };
    tokio::spawn(async move {
        let _slot = slot;
        let deadline = tokio::time::sleep(hold);
        tokio::pin!(deadline);
        let mut head = [0u8; 4];
        let mut replies = 0;
        loop {
            tokio::select! {
                _ = &mut deadline => return,
                got = socket.recv_from(&mut head) => {
                    let Ok((n, from)) = got else { continue };
                    if replies < QUARANTINE_REPLIES
                        && let Some(answer) = reply(&head[..n], from)
                    {
                        replies += 1;
                        let _ = socket.send_to(&answer, from).await;
                    }
                }
            }
        }
    });
}

fn error_code_bytes() -> [u8; 2] {
    packet::opcode::ERROR.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lingering_sockets_are_capped_and_their_places_given_back() {
        let lingering: &'static Lingering = Box::leak(Box::new(Lingering::new(2)));
        let a = lingering.enter().expect("first");
        let _b = lingering.enter().expect("second");
        assert!(
            lingering.enter().is_none(),
            "beyond the cap: closed at once"
        );
        drop(a);
        assert!(
            lingering.enter().is_some(),
            "a place given back is taken again"
        );
    }

    #[test]
    fn the_cap_follows_the_session_cap_and_never_drops_below_the_floor() {
        set_lingering_cap(6_634);
        assert_eq!(LINGERING.max.load(Ordering::Relaxed), 6_634);
        set_lingering_cap(16);
        assert_eq!(LINGERING.max.load(Ordering::Relaxed), MAX_LINGERING);
    }

    #[test]
    fn strangers_get_at_most_one_reply_per_interval() {
        let t0 = Instant::now();
        let mut limit = StrangerReply::default();
        assert!(limit.permits(t0), "the first at once");
        assert!(!limit.permits(t0));
        assert!(!limit.permits(t0 + STRANGER_REPLY_INTERVAL - Duration::from_millis(1)));
        assert!(limit.permits(t0 + STRANGER_REPLY_INTERVAL));
        assert!(!limit.permits(t0 + STRANGER_REPLY_INTERVAL));
    }

    #[test]
    fn a_port_closed_early_is_not_taken_again_within_the_quarantine() {
        let t0 = Instant::now();
        let mut closed = ClosedEarly::new();
        assert!(closed.may_take(40_001, t0));
        assert!(!closed.any_reserved(t0), "nothing closed early yet");
        closed.note(40_001, t0);
        assert!(!closed.may_take(40_001, t0 + QUARANTINE / 2));
        assert!(closed.any_reserved(t0 + QUARANTINE / 2));
        closed.note(40_002, t0 + QUARANTINE / 2);
        assert!(closed.may_take(40_001, t0 + QUARANTINE));
        assert!(closed.any_reserved(t0 + QUARANTINE), "40,002 still is");
        assert!(closed.may_take(40_003, t0), "other ports are free");
        assert!(!closed.any_reserved(t0 + QUARANTINE * 2));
    }
}
