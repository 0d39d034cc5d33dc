//! Port 69: receives requests, admits or refuses them, and keeps the table of live sessions.
//!
//! The listener parses only enough to decide. A request becomes a [`Relay`] task; everything
//! else gets a clear TFTP ERROR or is counted and dropped, and nothing here can disturb a running
//! transfer. The session table is keyed by (client address, contacted address) so that
//! - a retransmitted request (same bytes, while the client has not yet talked to the session) is
//!   absorbed instead of opening a second backend transfer, and
//! - a new request from an address whose session is finished or stale (PXE ROMs reuse port 2072
//!   on every boot) starts a new session, replacing the old one, never swallowed by it.
//!
//! On a wildcard address (`0.0.0.0`, `::`) the socket asks the kernel for each datagram's
//! destination (IP_PKTINFO), so the session can answer from exactly the address the client used.

use std::io::{self, IoSliceMut};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arc_swap::ArcSwap;
use dashmap::DashMap;
use nix::sys::socket::{self as nsock, ControlMessageOwned, MsgFlags, SockaddrStorage, sockopt};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::packet::{self, Kind, Mode, Packet, Request, error_code};
use super::relay::{Relay, SessionHandle};
use crate::health::HealthEvents;
use crate::metrics as m;
use crate::runtime::Runtime;

/// Longest filename accepted (bytes); longer requests are refused, never forwarded.
pub const MAX_FILENAME: usize = 255;

/// A bound port-69 socket.
#[derive(Debug)]
pub struct Listener {
    socket: UdpSocket,
    local: SocketAddr,
    wildcard: bool,
}

impl Listener {
    /// Binds `addr` (port 0 picks one: read it back with [`Listener::local_addr`]).
    pub fn bind(addr: SocketAddr) -> io::Result<Listener> {
        let domain = socket2::Domain::for_address(addr);
        let sock =
            socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
        if addr.is_ipv6() {
            sock.set_only_v6(true)?;
        }
        let wildcard = addr.ip().is_unspecified();
        if wildcard {
            match addr {
                SocketAddr::V4(_) => nsock::setsockopt(&sock, sockopt::Ipv4PacketInfo, &true)?,
                SocketAddr::V6(_) => nsock::setsockopt(&sock, sockopt::Ipv6RecvPacketInfo, &true)?,
            }
        }
        sock.set_nonblocking(true)?;
        sock.bind(&addr.into())?;
        let socket = UdpSocket::from_std(sock.into())?;
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

    /// One datagram, its sender, and the local IP it was sent to.
    async fn recv(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr, IpAddr)> {
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
    async fn reply(&self, datagram: &[u8], to: SocketAddr, local_ip: IpAddr) -> io::Result<()> {
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
        .and_then(|a| to_socket_addr(&a))
        .ok_or_else(|| io::Error::other("datagram without a sender address"))?;
    Ok((msg.bytes, from, local))
}

fn to_socket_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::from(*v4)));
    }
    a.as_sockaddr_in6()
        .map(|v6| SocketAddr::V6(SocketAddrV6::from(*v6)))
}

/// Why a datagram to port 69 is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a TFTP packet at all: counted and dropped, no answer.
    Malformed,
    UnknownOpcode,
    WriteRequest,
    BadFilename(&'static str),
    BadMode,
    /// DATA/ACK/OACK sent to port 69 instead of a session's TID.
    NotARequest,
    /// An ERROR sent to port 69: dropped (an error never answers an error).
    StrayError,
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownOpcode => "unknown-opcode",
            Refusal::WriteRequest => "write-request",
            Refusal::BadFilename(_) => "bad-filename",
            Refusal::BadMode => "bad-mode",
            Refusal::NotARequest => "not-a-request",
            Refusal::StrayError => "stray-error",
        }
    }

    /// The ERROR to send back, if any.
    fn answer(self) -> Option<(u16, &'static str)> {
        match self {
            Refusal::Malformed | Refusal::StrayError => None,
            Refusal::UnknownOpcode => Some((error_code::ILLEGAL_OPERATION, "unknown opcode")),
            Refusal::WriteRequest => Some((
                error_code::ACCESS_VIOLATION,
                "write requests are not served",
            )),
            Refusal::BadFilename(why) => Some((error_code::ACCESS_VIOLATION, why)),
            Refusal::BadMode => Some((error_code::ILLEGAL_OPERATION, "unsupported transfer mode")),
            Refusal::NotARequest => Some((error_code::UNKNOWN_TID, "unknown transfer ID")),
        }
    }
}

/// Decides what a datagram to port 69 is: a request to relay, or a refusal.
pub fn admit(datagram: &[u8]) -> Result<Request, Refusal> {
    match packet::peek(datagram) {
        Ok(Kind::Rrq) => {}
        Ok(Kind::Wrq) => return Err(Refusal::WriteRequest),
        Ok(Kind::Error { .. }) => return Err(Refusal::StrayError),
        Ok(_) => return Err(Refusal::NotARequest),
        Err(packet::ParseError::UnknownOpcode(_)) => return Err(Refusal::UnknownOpcode),
        Err(_) => return Err(Refusal::Malformed),
    }
    let Ok(Packet::Rrq(request)) = Packet::decode(datagram) else {
        return Err(Refusal::Malformed);
    };
    check_filename(&request.filename).map_err(Refusal::BadFilename)?;
    if matches!(request.mode, Mode::Other(_) | Mode::Mail) {
        return Err(Refusal::BadMode);
    }
    Ok(request)
}

/// Names that never reach a backend: empty, too long, with NUL, or with a `..` component
/// (either slash). A leading `/` is fine: many configs ask for `/pxelinux.0`.
pub fn check_filename(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty filename");
    }
    if name.len() > MAX_FILENAME {
        return Err("filename longer than 255 bytes");
    }
    if name.contains('\0') {
        return Err("filename contains NUL");
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err("filename must not contain '..'");
    }
    Ok(())
}

/// Session table key: the client's address and the address it contacted.
type Key = (SocketAddr, SocketAddr);

/// Counters of what port 69 saw, readable by tests and (later) the status page.
#[derive(Debug, Default)]
pub struct FrontendStats {
    pub sessions_started: AtomicU64,
    pub retransmitted_requests: AtomicU64,
    pub superseded: AtomicU64,
    pub malformed: AtomicU64,
    pub refused: AtomicU64,
    pub over_limit: AtomicU64,
}

impl FrontendStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// What all listeners share: the running configuration, the live sessions, the counters.
#[derive(Debug)]
pub struct Frontend {
    pub stats: FrontendStats,
    runtime: ArcSwap<Runtime>,
    events: HealthEvents,
    sessions: DashMap<Key, Arc<SessionHandle>>,
    next_id: AtomicU64,
    tasks: TaskTracker,
}

impl Frontend {
    pub fn new(runtime: Runtime, events: HealthEvents) -> Frontend {
        Frontend {
            runtime: ArcSwap::from_pointee(runtime),
            events,
            stats: FrontendStats::default(),
            sessions: DashMap::new(),
            next_id: AtomicU64::new(1),
            tasks: TaskTracker::new(),
        }
    }

    /// The configuration new sessions start with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// Swaps in a new configuration (running sessions keep theirs) and returns it.
    pub fn install(&self, config: crate::config::Config) -> Arc<Runtime> {
        let next = Arc::new(Runtime::new(
            config,
            Some(&self.runtime.load()),
            &self.events,
        ));
        self.runtime.store(next.clone());
        next
    }

    /// Counts health, admin and drift changes; watchers (DNS, status page) follow it.
    pub fn health_events(&self) -> &HealthEvents {
        &self.events
    }

    /// Sessions now in the table.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Receives on `listener` until `stop` is cancelled.
    pub async fn serve(self: Arc<Self>, listener: Listener, stop: CancellationToken) {
        let mut buf = vec![0u8; packet::MAX_DATAGRAM];
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                got = listener.recv(&mut buf) => got,
            };
            match got {
                Ok((n, from, local_ip)) => self.handle(&listener, &buf[..n], from, local_ip).await,
                Err(e) => tracing::warn!(listener = %listener.local, error = %e, "receive failed"),
            }
        }
    }

    async fn handle(
        self: &Arc<Self>,
        listener: &Listener,
        datagram: &[u8],
        from: SocketAddr,
        local_ip: IpAddr,
    ) {
        match admit(datagram) {
            Ok(request) => self.start(
                request,
                datagram,
                from,
                SocketAddr::new(local_ip, listener.local.port()),
            ),
            Err(refusal) => {
                let counter = match refusal {
                    Refusal::Malformed => &self.stats.malformed,
                    _ => &self.stats.refused,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_REFUSED, "reason" => refusal.as_str()).increment(1);
                tracing::debug!(client = %from, reason = refusal.as_str(), "request refused");
                if let Some((code, msg)) = refusal.answer() {
                    let _ = listener
                        .reply(&packet::error_datagram(code, msg), from, local_ip)
                        .await;
                }
            }
        }
    }

    /// Starts a session for `request`, unless it retransmits the one already being set up.
    fn start(
        self: &Arc<Self>,
        request: Request,
        datagram: &[u8],
        client: SocketAddr,
        local: SocketAddr,
    ) {
        let key = (client, local);
        if let Some(old) = self.sessions.get(&key).map(|e| e.value().clone()) {
            if !old.client_seen.load(Ordering::Relaxed) && *old.request == *datagram {
                self.stats
                    .retransmitted_requests
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_RETRANSMITTED).increment(1);
                return;
            }
            self.stats.superseded.fetch_add(1, Ordering::Relaxed);
            old.superseded.store(true, Ordering::Relaxed);
            old.cancel.cancel();
        }
        let runtime = self.runtime.load_full();
        if self.sessions.len() >= runtime.max_sessions() {
            self.stats.over_limit.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REQUESTS_REFUSED, "reason" => "max-sessions").increment(1);
            tracing::debug!(%client, "session limit reached: request left unanswered");
            return;
        }
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            request: datagram.into(),
            client_seen: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            superseded: AtomicBool::new(false),
        });
        self.sessions.insert(key, handle.clone());
        self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
        let relay = Relay {
            client,
            local_ip: local.ip(),
            pool: runtime.default_pool().clone(),
            settings: runtime.settings,
            handle: handle.clone(),
            requested_blksize: request.options.blksize(),
        };
        let filename = request.filename;
        let pool_name = relay.pool.name.clone();
        let frontend = self.clone();
        self.tasks.spawn(async move {
            metrics::gauge!(m::SESSIONS_ACTIVE).increment(1.0);
            let report = relay.run().await;
            metrics::gauge!(m::SESSIONS_ACTIVE).decrement(1.0);
            frontend.sessions.remove_if(&key, |_, h| h.id == handle.id);
            m::record_session(&pool_name, &filename, client, &report);
        });
    }

    /// Stops admitting (the caller has stopped the listeners), lets running transfers finish
    /// for up to `grace`, then ends the rest.
    pub async fn drain(&self, grace: std::time::Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            for entry in self.sessions.iter() {
                entry.value().cancel.cancel();
            }
            self.tasks.wait().await;
        }
    }
}
