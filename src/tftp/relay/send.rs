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
}
