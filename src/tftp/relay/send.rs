//! Sending one datagram of a transfer, to the client or to the backend's TID.
//!
//! Why a failed send is a lost packet and not the end of the transfer: the kernel refuses a
//! datagram now and then (ENOBUFS when a queue is full, EPERM when the conntrack table is full),
//! and TFTP's retransmissions exist for lost packets; ending the session would turn a moment of
//! congestion into a failed boot. Each failure is counted (reported when the session ends) and
//! logged at a bounded rate. The one error that says something lasting is ECONNREFUSED on the
//! socket connected to the backend's TID: ICMP port unreachable, its transfer is gone. That is
//! noted on [`Counts::backend_gone`] and the transfer loop fails over.

use std::io;
use std::net::SocketAddr;

use tokio::net::UdpSocket;

use super::{Counts, Leg};
use crate::limits::budget::may_log_packet_error;

/// What became of one datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sent {
    /// The kernel took it.
    Queued,
    /// The kernel would not send it: as if lost on the way.
    Lost,
    /// The peer's port is closed (ICMP port unreachable reported on this socket).
    Refused,
}

/// Sends `datagram` to the client; a failure is a lost packet.
pub(super) async fn to_client(
    socket: &UdpSocket,
    datagram: &[u8],
    client: SocketAddr,
    counts: &mut Counts,
) -> Sent {
    let sent = send(socket, datagram, client, "client").await;
    match sent {
        Sent::Queued => counts.to_client += 1,
        Sent::Lost | Sent::Refused => counts.send_errors += 1,
    }
    sent
}

/// The most datagrams one GSO send may carry (the kernel's UDP_MAX_SEGMENTS).
const GSO_MAX_SEGMENTS: usize = 64;

/// The most bytes one GSO send may carry: they travel as one UDP datagram until segmented.
const GSO_MAX_BYTES: usize = 65_000;

/// Sends `datagrams` to the client in one system call with UDP generic segmentation offload
/// (`UDP_SEGMENT`): they lie back to back, each `segment` bytes but the last, which may be
/// shorter, and the kernel cuts them apart (on loopback it never does: the receiver gets
/// each as its own datagram all the same). A window of 16 blocks costs one send instead of 16.
///
/// Err when this path cannot carry them (a segment above the route's MTU, a device or kernel
/// without GSO): nothing was sent, and the caller sends them one by one from then on. A
/// datagram the kernel drops for congestion is counted lost, as `to_client` counts it.
async fn segments_to_client(
    socket: &UdpSocket,
    datagrams: &[u8],
    segment: u16,
    client: SocketAddr,
    counts: &mut Counts,
) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, SockaddrStorage, sendmsg};
    use std::os::fd::AsRawFd;
    let to = SockaddrStorage::from(client);
    let sent = socket
        .async_io(tokio::io::Interest::WRITABLE, || {
            let iov = [io::IoSlice::new(datagrams)];
            let gso = [ControlMessage::UdpGsoSegments(&segment)];
            sendmsg(socket.as_raw_fd(), &iov, &gso, MsgFlags::empty(), Some(&to))
                .map_err(io::Error::from)
        })
        .await;
    let count = datagrams.len().div_ceil(usize::from(segment).max(1)) as u64;
    match sent {
        Ok(_) => counts.to_client += count,
        Err(e) if lost_in_congestion(&e) => {
            counts.send_errors += count;
            if may_log_packet_error() {
                tracing::warn!(to = %client, side = "client", error = %e, "send failed: counted as lost packets");
            }
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

/// The errors that lose a datagram without saying anything of the path: a full queue
/// (ENOBUFS), a full conntrack table (EPERM), a closed port (ECONNREFUSED).
fn lost_in_congestion(e: &io::Error) -> bool {
    use nix::errno::Errno;
    e.raw_os_error().is_some_and(|code| {
        matches!(
            Errno::from_raw(code),
            Errno::ENOBUFS | Errno::EPERM | Errno::ECONNREFUSED
        )
    })
}

/// DATA for the client gathered during one wake-up of the transfer loop and sent together
/// when the loop is done with it (`flush`, before it waits again): a window relayed from the
/// backend, or blocks from the read-ahead ring, cost one GSO send instead of one each. A
/// lock-step transfer gathers one block per wake-up and sends it as before.
#[derive(Debug, Default)]
pub(super) struct Batch {
    buf: Vec<u8>,
    /// The size of every datagram gathered; only the last may be shorter.
    segment: usize,
    datagrams: usize,
    /// A datagram shorter than `segment` came: nothing may follow it in this send.
    closed: bool,
    /// GSO was refused on this path: datagrams go one by one.
    off: bool,
}

impl Batch {
    /// Whether `len` bytes may join what is gathered.
    fn takes(&self, len: usize) -> bool {
        self.datagrams == 0
            || (!self.closed
                && len <= self.segment
                && self.datagrams < GSO_MAX_SEGMENTS
                && self.buf.len() + len <= GSO_MAX_BYTES)
    }
}

/// Gathers `datagram` for the client (sending what was gathered first when it cannot join).
pub(super) async fn gather_for_client(
    socket: &UdpSocket,
    batch: &mut Batch,
    datagram: &[u8],
    client: SocketAddr,
    counts: &mut Counts,
) {
    if batch.off {
        to_client(socket, datagram, client, counts).await;
        return;
    }
    if !batch.takes(datagram.len()) {
        flush(socket, batch, client, counts).await;
    }
    if batch.datagrams == 0 {
        batch.segment = datagram.len();
    } else if datagram.len() < batch.segment {
        batch.closed = true;
    }
    batch.buf.extend_from_slice(datagram);
    batch.datagrams += 1;
}

/// Sends what `batch` gathered: one datagram as it is, several in one GSO send, or one by one
/// from then on where the path refuses GSO.
pub(super) async fn flush(
    socket: &UdpSocket,
    batch: &mut Batch,
    client: SocketAddr,
    counts: &mut Counts,
) {
    match batch.datagrams {
        0 => {}
        1 => {
            to_client(socket, &batch.buf, client, counts).await;
        }
        _ => {
            let segment = u16::try_from(batch.segment).unwrap_or(u16::MAX);
            if let Err(e) = segments_to_client(socket, &batch.buf, segment, client, counts).await {
                tracing::debug!(%client, error = %e, "GSO refused: datagram by datagram");
                batch.off = true;
                for datagram in batch.buf.chunks(batch.segment.max(1)) {
                    to_client(socket, datagram, client, counts).await;
                }
            }
        }
    }
    batch.buf.clear();
    batch.datagrams = 0;
    batch.closed = false;
}

/// Sends `datagram` to the backend's TID; a failure is a lost packet, a closed port is noted
/// for the transfer loop to fail over.
pub(super) async fn to_backend(leg: &Leg, datagram: &[u8], counts: &mut Counts) -> Sent {
    let sent = send(&leg.socket, datagram, leg.tid, "backend").await;
    match sent {
        Sent::Queued => counts.to_backend += 1,
        Sent::Lost => counts.send_errors += 1,
        Sent::Refused => counts.backend_gone = true,
    }
    sent
}

async fn send(socket: &UdpSocket, datagram: &[u8], to: SocketAddr, side: &str) -> Sent {
    match socket.send_to(datagram, to).await {
        Ok(_) => Sent::Queued,
        Err(e) => {
            let refused = e.kind() == io::ErrorKind::ConnectionRefused;
            if !refused && may_log_packet_error() {
                tracing::warn!(%to, side, error = %e, "send failed: counted as a lost packet");
            }
            if refused { Sent::Refused } else { Sent::Lost }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel refuses a datagram (here: an IPv6 destination for an IPv4 socket, as it would
    /// refuse one with ENOBUFS or EPERM): counted, and the caller goes on.
    #[tokio::test]
    async fn a_datagram_the_kernel_refuses_is_counted_as_lost() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut counts = Counts::default();
        let nowhere: SocketAddr = "[::1]:9".parse().unwrap();
        assert_eq!(
            to_client(&socket, b"x", nowhere, &mut counts).await,
            Sent::Lost
        );
        assert_eq!((counts.send_errors, counts.to_client), (1, 0));
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        assert_eq!(
            to_client(&socket, b"x", to, &mut counts).await,
            Sent::Queued
        );
        assert_eq!((counts.send_errors, counts.to_client), (1, 1));
    }

    /// One GSO send arrives as separate datagrams, the last one shorter; a segment larger than
    /// any datagram may be (here: above the 64 KiB a UDP datagram carries) is refused without
    /// sending anything, so the caller can send block by block.
    #[tokio::test]
    async fn one_gso_send_arrives_as_separate_datagrams() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let mut counts = Counts::default();
        let window: Vec<u8> = [vec![1u8; 516], vec![2u8; 516], vec![3u8; 100]].concat();
        segments_to_client(&socket, &window, 516, to, &mut counts)
            .await
            .unwrap();
        assert_eq!(counts.to_client, 3);
        let mut buf = [0u8; 2048];
        for (fill, len) in [(1u8, 516), (2, 516), (3, 100)] {
            let (n, _) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &vec![fill; len][..]);
        }
        let huge = vec![0u8; 2 * 40_000];
        let refused = segments_to_client(&socket, &huge, 40_000, to, &mut counts).await;
        assert!(refused.is_err(), "{refused:?}");
        assert_eq!(counts.to_client, 3);
    }

    /// Gathered datagrams arrive whole and in order: a shorter one closes a send, and the
    /// next goes in a send of its own.
    #[tokio::test]
    async fn gathered_datagrams_arrive_in_order() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = peer.local_addr().unwrap();
        let (mut batch, mut counts) = (Batch::default(), Counts::default());
        let sent: Vec<Vec<u8>> = vec![vec![1; 600], vec![2; 600], vec![3; 20], vec![4; 600]];
        for d in &sent {
            gather_for_client(&socket, &mut batch, d, to, &mut counts).await;
        }
        assert_eq!(
            counts.to_client, 3,
            "the first three went when the fourth could not join"
        );
        flush(&socket, &mut batch, to, &mut counts).await;
        assert_eq!(counts.to_client, 4);
        let mut buf = [0u8; 2048];
        for d in &sent {
            let (n, _) = peer.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], &d[..]);
        }
    }
}
