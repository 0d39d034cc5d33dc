//! Receiving several datagrams in one system call (`recvmmsg`): a windowed backend sends its
//! blocks back to back, and a DNS server under load finds many queries waiting; reading them
//! one `recvfrom` each costs a system call (and often a wake-up) per datagram.
//!
//! The datagrams land in slots of one buffer, allocated once; the caller takes them one at a
//! time, copied into its own buffer, and handles each exactly as one it received alone. It
//! must take every one received before it waits on the socket's readiness again (`holds`):
//! the socket may be empty while they wait here. The relay gives a windowed session 16 slots
//! sized for its block (about 23 KiB at blksize 1468); lock-step transfers hold none.

use std::io;
use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg};
use tokio::io::Interest;
use tokio::net::UdpSocket;

/// A windowed transfer's slots: its largest window.
const WINDOW_SLOTS: usize = 16;

#[derive(Debug)]
pub struct Burst {
    buf: Vec<u8>,
    slot: usize,
    /// What the last call received: length, source, and whether it was cut short.
    got: Vec<(usize, SocketAddr, bool)>,
    /// The next of `got` to hand out.
    next: usize,
}

impl Burst {
    /// Room for `slots` datagrams of at most `slot` bytes each (a longer one is cut short).
    pub fn new(slot: usize, slots: usize) -> Burst {
        Burst {
            buf: vec![0; slots.max(1) * slot],
            slot,
            got: Vec::with_capacity(slots.max(1)),
            next: 0,
        }
    }

    /// For a windowed transfer of `blksize` blocks: a DATA header beyond the block, and room
    /// for an ERROR with a long message when blocks are small.
    pub fn for_blocks(blksize: u16) -> Burst {
        let slot = (usize::from(blksize) + 4).max(1024) + 1;
        Burst::new(slot, WINDOW_SLOTS)
    }

    /// The next datagram, copied into `buf`: one of those received together, else what a new
    /// call receives; `None` when the socket holds nothing. A datagram larger than its slot
    /// comes back as `buf.len()` bytes long, which the loop drops as larger than any block.
    pub fn next(
        &mut self,
        socket: &UdpSocket,
        buf: &mut [u8],
    ) -> io::Result<Option<(usize, SocketAddr)>> {
        if self.next == self.got.len() {
            self.receive(socket)?;
            if self.got.is_empty() {
                return Ok(None);
            }
        }
        let (n, from, cut) = self.got[self.next];
        let start = self.next * self.slot;
        self.next += 1;
        if cut || n > buf.len() {
            return Ok(Some((buf.len(), from)));
        }
        buf[..n].copy_from_slice(&self.buf[start..start + n]);
        Ok(Some((n, from)))
    }

    /// Whether datagrams received together are still to be handed out (the loop must not
    /// wait on the socket's readiness for them).
    pub fn holds(&self) -> bool {
        self.next < self.got.len()
    }

    fn receive(&mut self, socket: &UdpSocket) -> io::Result<()> {
        self.got.clear();
        self.next = 0;
        let (slot, buf, got) = (self.slot, &mut self.buf, &mut self.got);
        let received = socket.try_io(Interest::READABLE, || {
            let slots = buf.len() / slot;
            let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(slots, None);
            let mut slices: Vec<[IoSliceMut<'_>; 1]> =
                buf.chunks_mut(slot).map(|c| [IoSliceMut::new(c)]).collect();
            let results = recvmmsg(
                socket.as_raw_fd(),
                &mut headers,
                slices.iter_mut(),
                MsgFlags::MSG_DONTWAIT,
                None,
            )
            .map_err(io::Error::from)?;
            for r in results {
                if let Some(from) = r.address.as_ref().and_then(socket_addr) {
                    got.push((r.bytes, from, r.flags.contains(MsgFlags::MSG_TRUNC)));
                }
            }
            Ok(())
        });
        match received {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            other => other,
        }
    }
}

/// The sender of a received datagram, where it is an IPv4 or IPv6 address.
pub(crate) fn socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Several datagrams come out of one call in order, with their source; one larger than
    /// its slot is reported as filling the caller's buffer; an empty socket gives `None`.
    #[tokio::test]
    async fn a_window_arrives_in_one_call_and_in_order() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        let sent: Vec<Vec<u8>> = (1..=5u8).map(|i| vec![i; 516]).collect();
        for d in &sent {
            peer.send_to(d, to).await.unwrap();
        }
        peer.send_to(&[9u8; 3000], to).await.unwrap();
        socket.readable().await.unwrap();
        let mut burst = Burst::for_blocks(512);
        let mut buf = vec![0u8; 2048];
        let mut seen = Vec::new();
        // Bounded: the datagrams are on loopback, all in the queue within moments.
        for _ in 0..1000 {
            match burst.next(&socket, &mut buf).unwrap() {
                Some((n, from)) => {
                    assert_eq!(from, peer.local_addr().unwrap());
                    seen.push(buf[..n.min(buf.len())].to_vec());
                    if seen.len() == 6 {
                        break;
                    }
                }
                None => tokio::task::yield_now().await,
            }
        }
        assert_eq!(&seen[..5], &sent[..]);
        assert_eq!(seen[5].len(), buf.len(), "cut short: reported as too large");
        assert!(!burst.holds());
        assert!(burst.next(&socket, &mut buf).unwrap().is_none());
    }

    /// Round after round, what arrives while the caller handles the last round wakes it
    /// again: datagrams held here never leave the caller waiting on an empty socket.
    #[tokio::test]
    async fn round_after_round_what_arrives_wakes_the_caller() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let peer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let to = socket.local_addr().unwrap();
        let mut burst = Burst::for_blocks(512);
        let mut buf = vec![0u8; 2048];
        for round in 1..=20u8 {
            peer.send_to(&[round; 100], to).await.unwrap();
            peer.send_to(&[round; 200], to).await.unwrap();
            let mut seen = Vec::new();
            while seen.len() < 2 {
                tokio::time::timeout(std::time::Duration::from_secs(5), socket.readable())
                    .await
                    .expect("woken for what arrived")
                    .unwrap();
                while let Some((n, _)) = burst.next(&socket, &mut buf).unwrap() {
                    assert!(buf[..n].iter().all(|&b| b == round));
                    seen.push(n);
                }
            }
            assert_eq!(seen, [100, 200], "round {round}");
            assert!(!burst.holds());
        }
    }
}
