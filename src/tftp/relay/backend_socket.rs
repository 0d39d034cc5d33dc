//! The socket toward one backend, and what the kernel may tell it.
//!
//! While the request waits for its answer the socket is not connected (the answer comes from a
//! port the backend picks, its TID), so the kernel would keep an ICMP port unreachable to
//! itself: `IP_RECVERR` asks it to report the error on the socket, and a backend whose port 69
//! is closed is left at once instead of after `setup_timeout`. Once the TID is known the socket
//! is connected to it: the kernel then drops datagrams from anyone else, and reports on the
//! socket when the TID's port closes (the backend's process died mid-transfer), so the relay
//! fails over at once instead of after `stall_timeout`. `IP_RECVERR` is turned off again then:
//! a connected socket hears of a closed port without it, and nothing else should end a leg.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use nix::sys::socket::{setsockopt, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A socket on an ephemeral port of the same family as `peer`, reporting ICMP errors.
pub(super) async fn bind_like(peer: SocketAddr) -> io::Result<UdpSocket> {
    let any: IpAddr = match peer {
        SocketAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        SocketAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = unreserved(SocketAddr::new(any, 0)).await?;
    if let Err(e) = report_icmp(&socket, peer, true) {
        // Without it a closed port is noticed after `setup_timeout`, as a silent one.
        tracing::debug!(error = %e, "IP_RECVERR not available");
    }
    Ok(socket)
}

/// Tries a few times for the kernel's port to not be one a leg gave up too early
/// (`linger::may_take`); the refused ones are held until a good one is bound, so the kernel
/// does not hand them back at once. Where every try is refused, the last is taken.
async fn unreserved(any: SocketAddr) -> io::Result<UdpSocket> {
    const TRIES: usize = 8;
    let mut refused = Vec::new();
    loop {
        let socket = UdpSocket::bind(any).await?;
        let now = tokio::time::Instant::now();
        let last_try = refused.len() + 1 >= TRIES;
        // Most of the time no port is reserved: no need to ask the socket for its own.
        let reserved = super::linger::any_reserved(now);
        if last_try || !reserved || super::linger::may_take(socket.local_addr()?.port(), now) {
            if !refused.is_empty() {
                metrics::counter!(crate::metrics::PORTS_PASSED_OVER)
                    .increment(refused.len() as u64);
            }
            return Ok(socket);
        }
        refused.push(socket);
    }
}

/// Connects `socket` to the backend's `tid`, and stops the reports of `bind_like`.
pub(super) async fn connect_tid(socket: &UdpSocket, tid: SocketAddr) -> io::Result<()> {
    socket.connect(tid).await?;
    let _ = report_icmp(socket, tid, false);
    Ok(())
}

/// Waits for an error the kernel reports on `socket` (an ICMP error: the TID's port closed),
/// and takes it. Needed because such an error makes a socket neither readable nor writable.
pub(super) async fn reported_error(socket: &UdpSocket) -> io::Error {
    socket
        .async_io(Interest::ERROR, || take_reported(socket))
        .await
        .unwrap_or_else(|e| e)
}

/// The error the kernel reported on `socket` if it reported one now; `None` clears the
/// socket's error readiness (so waiting on it again does not spin).
pub(super) fn reported_now(socket: &UdpSocket) -> Option<io::Error> {
    socket
        .try_io(Interest::ERROR, || take_reported(socket))
        .ok()
}

fn take_reported(socket: &UdpSocket) -> io::Result<io::Error> {
    match socket.take_error() {
        Ok(Some(e)) => Ok(e),
        Ok(None) => Err(io::ErrorKind::WouldBlock.into()),
        Err(e) => Ok(e),
    }
}

fn report_icmp(socket: &UdpSocket, peer: SocketAddr, on: bool) -> io::Result<()> {
    match peer {
        SocketAddr::V4(_) => setsockopt(socket, sockopt::Ipv4RecvErr, &on)?,
        SocketAddr::V6(_) => setsockopt(socket, sockopt::Ipv6RecvErr, &on)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A closed port answers with ICMP port unreachable: reported on the asking socket.
    #[tokio::test]
    async fn a_closed_port_is_reported_while_asking() {
        let closed = std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let socket = bind_like(closed).await.unwrap();
        socket
            .send_to(b"\x00\x01f\x00octet\x00", closed)
            .await
            .unwrap();
        let mut buf = [0u8; 16];
        let got = tokio::time::timeout(Duration::from_secs(2), socket.recv_from(&mut buf)).await;
        let err = got.expect("reported at once").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
    }

    /// Connected to the TID, a closed port is reported on the socket.
    #[tokio::test]
    async fn a_closed_tid_is_reported_on_the_leg() {
        let tid = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let closed = tid.local_addr().unwrap();
        let socket = bind_like(closed).await.unwrap();
        connect_tid(&socket, closed).await.unwrap();
        drop(tid);
        socket.send_to(b"\x00\x04\x00\x01", closed).await.unwrap();
        let wait = tokio::time::timeout(Duration::from_secs(2), reported_error(&socket));
        let err = wait.await.expect("reported at once");
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        assert!(reported_now(&socket).is_none(), "taken once");
    }

    /// Connected to the TID, the socket hears only the TID.
    #[tokio::test]
    async fn a_connected_leg_hears_only_its_tid() {
        let tid = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let socket = bind_like(tid.local_addr().unwrap()).await.unwrap();
        connect_tid(&socket, tid.local_addr().unwrap())
            .await
            .unwrap();
        let leg = SocketAddr::new([127, 0, 0, 1].into(), socket.local_addr().unwrap().port());
        stranger.send_to(b"stranger", leg).await.unwrap();
        tid.send_to(b"tid", leg).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = socket.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"tid"[..], tid.local_addr().unwrap()));
    }
}
