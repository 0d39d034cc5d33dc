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
//!
//! Each port-69 socket is read by its own OS thread (a one-thread runtime), not by a task among
//! the sessions' tasks: in a boot storm thousands of relay tasks are ready at once, and a
//! listener task waiting its turn behind them admitted ~500 requests a second while 10,000
//! clients waited (their requests queued for seconds, then overflowed the socket). A thread of
//! its own gets its share of the CPU from the kernel whatever the number of sessions. Sessions
//! still run on the main runtime.

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

pub use super::admission::{Asked, MAX_FILENAME, Refusal, admit, check_filename};

use super::admission::policy;
use super::packet;
use super::relay::{Relay, SessionHandle};
use crate::health::HealthEvents;
use crate::limits::{ClientCounts, ClientSlot};
use crate::metrics as m;
use crate::pool::Pool;
use crate::runtime::Runtime;

/// A bound port-69 socket, not yet served (see [`Frontend::serve`]).
#[derive(Debug)]
pub struct Listener {
    socket: std::net::UdpSocket,
    local: SocketAddr,
    wildcard: bool,
}

/// A port-69 socket being served: registered with the receiving thread's runtime.
#[derive(Debug)]
struct Receiving {
    socket: UdpSocket,
    local: SocketAddr,
    wildcard: bool,
    /// The main runtime, where sessions run.
    sessions: tokio::runtime::Handle,
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
    fn new(listener: Listener, sessions: tokio::runtime::Handle) -> io::Result<Receiving> {
        Ok(Receiving {
            socket: UdpSocket::from_std(listener.socket)?,
            local: listener.local,
            wildcard: listener.wildcard,
            sessions,
        })
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
    clients: Arc<ClientCounts>,
    macs: crate::route::MacMemory,
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
            clients: Arc::new(ClientCounts::default()),
            macs: Default::default(),
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

    /// Client IPs with live sessions (bounded by the live sessions).
    pub fn tracked_clients(&self) -> usize {
        self.clients.clients()
    }

    /// Sessions now in the table.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Receives on `listener` until `stop` is cancelled (or this future is dropped), on a
    /// thread of its own; sessions are spawned on the runtime that runs this future.
    pub async fn serve(self: Arc<Self>, listener: Listener, stop: CancellationToken) {
        let stop = stop.child_token();
        let _stop_when_dropped = stop.clone().drop_guard();
        let sessions = tokio::runtime::Handle::current();
        let address = listener.local;
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tftp-listener".into())
            .spawn(move || {
                let _done = done;
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async {
                            let receiving = Receiving::new(listener, sessions)?;
                            self.receive(receiving, stop).await;
                            Ok(())
                        })
                    });
                if let Err(e) = served {
                    tracing::error!(%address, error = %e, "tftp listener stopped");
                }
            });
        match thread {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(e) => tracing::error!(%address, error = %e, "cannot start the tftp listener"),
        }
    }

    /// The receiving thread's loop.
    async fn receive(self: Arc<Self>, listener: Receiving, stop: CancellationToken) {
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
        listener: &Receiving,
        datagram: &[u8],
        from: SocketAddr,
        local_ip: IpAddr,
    ) {
        let key = (from, SocketAddr::new(local_ip, listener.local.port()));
        let runtime = self.runtime.load_full();
        let admitted = admit(datagram).and_then(|asked| {
            if self.is_retransmission(&key, datagram) {
                return Ok(None);
            }
            // Who may ask, and how fast, before any state is kept for the client.
            runtime
                .limiter
                .check_address(from.ip())
                .map_err(Refusal::Limited)?;
            runtime
                .limiter
                .check_rate(from.ip())
                .map_err(Refusal::Limited)?;
            let mac = self.client_mac(&runtime, from.ip(), &asked.request.filename);
            let pool = policy(&runtime, &asked, from.ip(), mac)?;
            let slot = runtime
                .limiter
                .claim_client(&self.clients, from.ip())
                .map_err(Refusal::Limited)?;
            Ok(Some((asked, pool, slot)))
        });
        match admitted {
            Ok(Some(admitted)) => self.start(listener, &runtime, admitted, datagram, key),
            Ok(None) => {}
            Err(refusal) => {
                self.refuse(listener, &runtime, refusal, from, local_ip)
                    .await
            }
        }
    }

    /// The client's MAC as far as its requests told it (only kept when a route asks for MACs).
    fn client_mac(
        &self,
        runtime: &Runtime,
        ip: IpAddr,
        filename: &str,
    ) -> Option<crate::route::Mac> {
        if !runtime.router.has_mac_rules() {
            return None;
        }
        self.macs
            .observe(ip, filename, runtime.config.tftp.mac_memory)
    }

    /// Forgets expired client state (housekeeping).
    pub fn expire(&self, now: std::time::Instant) {
        self.macs.expire(now);
    }

    /// An identical request while the client has not yet talked to its session: absorbed.
    fn is_retransmission(&self, key: &Key, datagram: &[u8]) -> bool {
        let Some(old) = self.sessions.get(key).map(|e| e.value().clone()) else {
            return false;
        };
        let retransmitted = !old.client_seen.load(Ordering::Relaxed) && *old.request == *datagram;
        if retransmitted {
            self.stats
                .retransmitted_requests
                .fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REQUESTS_RETRANSMITTED).increment(1);
        }
        retransmitted
    }

    /// Counts, logs (rate-limited) and answers a refusal, unless it is silent by nature or config.
    async fn refuse(
        &self,
        listener: &Receiving,
        runtime: &Runtime,
        refusal: Refusal,
        from: SocketAddr,
        local_ip: IpAddr,
    ) {
        let counter = match refusal {
            Refusal::Malformed => &self.stats.malformed,
            _ => &self.stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REQUESTS_REFUSED, "reason" => refusal.as_str()).increment(1);
        let limited = matches!(refusal, Refusal::Limited(_));
        if limited && runtime.limiter.may_log() {
            tracing::info!(client = %from, reason = refusal.as_str(), "request refused");
        } else {
            tracing::debug!(client = %from, reason = refusal.as_str(), "request refused");
        }
        if limited && runtime.limiter.silent() {
            return;
        }
        if let Some((code, msg)) = refusal.answer() {
            let _ = listener
                .reply(&packet::error_datagram(code, msg), from, local_ip)
                .await;
        }
    }

    /// Starts a session, replacing a stale one from the same client address (port reuse).
    fn start(
        self: &Arc<Self>,
        listener: &Receiving,
        runtime: &Arc<Runtime>,
        (asked, pool, slot): (Asked, Arc<Pool>, ClientSlot),
        datagram: &[u8],
        key: Key,
    ) {
        if let Some(old) = self.sessions.get(&key).map(|e| e.value().clone()) {
            self.stats.superseded.fetch_add(1, Ordering::Relaxed);
            old.superseded.store(true, Ordering::Relaxed);
            old.cancel.cancel();
        }
        let client = key.0;
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
            local_ip: key.1.ip(),
            pool: pool.clone(),
            settings: runtime.settings,
            handle: handle.clone(),
            requested: asked.request.options.clone(),
            write: asked.write,
        };
        let filename = asked.request.filename;
        let frontend = self.clone();
        let run = async move {
            let active = metrics::gauge!(m::SESSIONS_ACTIVE, "pool" => pool.name.clone());
            active.increment(1.0);
            let report = relay.run().await;
            active.decrement(1.0);
            drop(slot);
            frontend.sessions.remove_if(&key, |_, h| h.id == handle.id);
            if let Some(b) = report.backend.and_then(|a| pool.index_of(a)) {
                pool.backends[b].add_bytes(report.file_bytes);
            }
            m::record_session(&pool.name, &filename, client, &report);
        };
        self.tasks.spawn_on(run, &listener.sessions);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A boot storm's burst of requests must find room in the socket (the default buffer held
    /// 256 of them); the kernel may cap what we ask at `net.core.rmem_max`, never below that.
    #[test]
    fn the_port_69_socket_asks_for_a_storm_sized_receive_buffer() {
        let listener = Listener::bind("127.0.0.1:0".parse().unwrap()).unwrap();
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
