//! The port-69 sockets: binding (with IP_PKTINFO on a wildcard address, so each datagram's
//! destination is known and the session can answer from exactly the address the client used),
//! a receive buffer sized for a boot storm, and receiving a datagram with its destination.
//! What to do with a datagram is the front end's business (`frontend`).

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use nix::sys::socket::{self as nsock, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A bound port-69 socket, not yet served (`Frontend::serve` reads it on a thread of its own).
#[derive(Debug)]
pub struct Listener {
    socket: std::net::UdpSocket,
    local: SocketAddr,
    wildcard: bool,
}

/// A port-69 socket being served: registered with the receiving thread's runtime.
#[derive(Debug)]
pub(super) struct Receiving {
    socket: UdpSocket,
    pub(super) local: SocketAddr,
    wildcard: bool,
    /// The main runtime, where sessions run.
    pub(super) sessions: tokio::runtime::Handle,
}

impl Listener {
    /// Binds `addr` (port 0 picks one: read it back with [`Listener::local_addr`]); with
    /// `freebind` even when the address is not on this machine (yet): a floating address that
    /// VRRP moves here when this node becomes active (IP_FREEBIND).
    pub fn bind(addr: SocketAddr, freebind: bool) -> io::Result<Listener> {
        let domain = socket2::Domain::for_address(addr);
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        if freebind {
            match addr {
                SocketAddr::V4(_) => sock.set_freebind_v4(true)?,
                SocketAddr::V6(_) => sock.set_freebind_v6(true)?,
            }
        }
        let wildcard = addr.ip().is_unspecified();
        if wildcard {
            match addr {
                SocketAddr::V4(_) => nsock::setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)?,
                SocketAddr::V6(_) => nsock::setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)?,
            }
        }
        sock.set_nonblocking(true)?;
        size_receive_buffer(&sock);
        sock.bind(&addr.into())?;
        let socket: std::net::UdpSocket = sock.into();
        let local = socket.local_addr()?;
        Ok(Listener {
            socket,
            local,
            wildcard,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Receiving {
    /// Registers `listener` with the current (receiving) runtime.
    pub(super) fn new(
        listener: Listener,
        sessions: tokio::runtime::Handle,
    ) -> io::Result<Receiving> {
        Ok(Receiving {
            socket: UdpSocket::from_std(listener.socket)?,
            local: listener.local,
            wildcard: listener.wildcard,
            sessions,
        })
    }

    /// One datagram, its sender, and the local IP it was sent to.
    pub(super) async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IpAddr)> {
        if !self.wildcard {
            let (n, from) = self.socket.recv_from(buf).await?;
            return Ok((n, from, self.local.ip()));
        }
        let fallback = self.local.ip();
        self.socket
            .async_io(Interest::READABLE, || {
                recv_with_destination(&self.socket, buf, fallback)
            })
            .await
    }

    /// Sends a refusal from the address the client contacted.
    pub(super) async fn reply(
        &self,
        datagram: &[u8],
        to: SocketAddr,
        local_ip: IpAddr,
    ) -> io::Result<()> {
        if self.wildcard {
            // The kernel would pick the source by route; bind the contacted address instead.
            let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
            socket.send_to(datagram, to).await?;
        } else {
            self.socket.send_to(datagram, to).await?;
        }
        Ok(())
    }
}

/// Receive buffer each port-69 socket asks for. A boot storm arrives as one burst of requests
/// (every client's RRQ, then its retransmissions a second later), faster than even a thread of
/// its own admits them; the default buffer (`net.core.rmem_default`, 208 KiB on most systems)
/// holds only 256 RRQs on loopback (832 B of kernel accounting each): a 10,000-client storm lost
/// ~2,500 requests there with the listener on its own thread, 0 with this buffer. Linux grants
/// twice what is asked, so 8 MiB holds ~20,000 RRQs on loopback (fewer on a NIC, whose buffers
/// count 2–4 KiB per datagram); memory is taken only while datagrams wait. A deep queue only
/// helps a listener that drains it quickly: behind a starved listener task it just made answers
/// later. The kernel caps the request at `net.core.rmem_max`; we do not use `SO_RCVBUFFORCE` to
/// override the operator's cap (tftplb runs without CAP_NET_ADMIN anyway), we say what was
/// granted.
pub const RECV_BUFFER: usize = 8 << 20;

/// Asks for [`RECV_BUFFER`] and logs once per process when the kernel grants less.
fn size_receive_buffer(sock: &socket2::Socket) {
    if let Err(e) = sock.set_recv_buffer_size(RECV_BUFFER) {
        tracing::warn!(error = %e, "cannot size the tftp receive buffer; keeping the default");
        return;
    }
    // Linux reports twice the granted size (the other half is its bookkeeping allowance).
    let granted = sock.recv_buffer_size().unwrap_or(0) / 2;
    static CAPPED: std::sync::Once = std::sync::Once::new();
    if granted < RECV_BUFFER {
        CAPPED.call_once(|| {
            tracing::info!(
                granted_bytes = granted,
                asked_bytes = RECV_BUFFER,
                "tftp receive buffer capped by net.core.rmem_max: a boot storm may overflow it; \
                 `sysctl -w net.core.rmem_max={RECV_BUFFER}` lifts the cap"
            );
        });
    }
}

fn recv_with_destination(
    socket: &UdpSocket,
    buf: &mut [u8],
    fallback: IpAddr,
) -> io::Result<(usize, SocketAddr, IpAddr)> {
    let mut iov = [IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!(nix::libc::in6_pktinfo);
    let msg = nsock::recvmsg::<SockaddrStorage>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )?;
    let local = msg
        .cmsgs()?
        .find_map(|c| match c {
            ControlMessageOwned::Ipv4PacketInfo(i) => {
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(i.ipi_addr.s_addr))))
            }
            ControlMessageOwned::Ipv6PacketInfo(i) => {
                Some(IpAddr::V6(Ipv6Addr::from(i.ipi6_addr.s6_addr)))
            }
            _ => None,
        })
        .unwrap_or(fallback);
    let from = msg
        .address
        .and_then(|a| crate::tftp::burst::socket_addr(&a))
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    Ok((msg.bytes, from, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot storm's burst of requests must find room in the socket (the default buffer held
    /// 256 of them); the kernel may cap what we ask at `net.core.rmem_max`, never below that.
    #[test]
    fn the_port_69_socket_asks_for_a_storm_sized_receive_buffer() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let Some(cap) = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
        else {
            return; // not Linux: nothing to compare with
        };
        let granted = socket2::SockRef::from(&listener.socket)
            .recv_buffer_size()
            .unwrap();
        // Linux reports twice what it granted.
        let expected = 2 * cap.min(RECV_BUFFER);
        assert!(
            granted >= expected,
            "receive buffer {granted} B, expected {expected} B (rmem_max {cap})"
        );
    }
}
