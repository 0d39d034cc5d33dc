//! The embedded authoritative DNS zone: the option-66 name answered from live health.
//!
//! Many sites put a host name in DHCP option 66 and rely on DNS round robin, which keeps handing
//! out a dead boot server. tftplb answers that name itself with the backends whose TFTP probes
//! pass, rotating, with a short TTL while a backend is down.
//!
//! This is the only module that imports hickory. It is split by what each part may touch, so
//! that everything that decides an answer is tested without a socket:
//! - [`config`]: the `[dns]` section (and `[dns.rrl]`), validated; plain strings, no hickory.
//! - [`select`]: which addresses a balanced name answers with, and in what rotating order; pure
//!   functions of the pool's health.
//! - `zone.rs`: the [`Zone`], every record prebuilt from the configuration and the runtime, and
//!   [`Zone::answer`] for one question. hickory has no rotation, so it stands in for hickory's
//!   `Catalog`. Pure: no sockets, no tasks.
//! - `handler.rs`: the hickory `RequestHandler` both transports share: turns away what is not
//!   one plain query, asks the current zone, counts the answer.
//! - `serial.rs`: the SOA serial, which moves only when the zone's content does.
//! - `rrl.rs`: response-rate limiting of UDP answers per source prefix (`[dns.rrl]`), in a
//!   fixed-size table, decided with explicit instants; replaced when a reload changes it.
//! - `udp.rs`: one task per UDP socket reads, decodes and answers its queries (hickory's UDP
//!   loop costs a task and a channel per query), with EDNS and truncation (TC when an answer
//!   does not fit the client's size: 512 bytes without EDNS, as iPXE asks).
//! - this file, the server: [`DnsServer`] binds UDP and TCP at startup (hickory-server's
//!   `Server` owns the TCP side), and a rebuild loop keeps the zone current. The zone sits in an
//!   `ArcSwap` and is rebuilt whenever the health-event counter moves or the runtime is swapped
//!   (a reload), both learnt through `watch` channels, and, as a safety net, every 30 s; a
//!   rebuild whose content is unchanged is thrown away, so the serial and the rotation go on.
//!   A query takes no lock: it loads the current zone, looks the name up in a hash map, and for
//!   a balanced name bumps one atomic to pick the prebuilt rotation order.
//!
//! Authoritative behaviour: AA on every answer from the zone, SOA and NS at the apex, NXDOMAIN
//! with the SOA for unknown names, NODATA (NOERROR, SOA) for other types and for empty
//! non-terminals, REFUSED outside the zone, names compared case-insensitively (the question is
//! echoed with its original case), BADVERS for EDNS versions above 0, NOTIMP (a bare header)
//! for opcodes other than QUERY, NOTAUTH with a BADKEY TSIG for signed queries (there are no
//! keys). Malformed packets: over UDP counted and dropped, responses dropped (no reflection);
//! over TCP hickory answers an undecodable query with FORMERR.

pub mod config;
mod handler;
mod rrl;
pub mod select;
mod serial;
mod udp;
mod zone;

pub use zone::{Answer, NameState, Zone};

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use hickory_server::Server;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::tftp::runtime::Runtime;
use config::DnsConfig;
use config::rrl::RrlConfig;
use handler::Handler;
use rrl::Limiter;
use serial::{Content, Versions};

/// How often the zone is rebuilt even if no health event was seen.
const SAFETY_REBUILD: Duration = Duration::from_secs(30);
/// Answers a TCP connection may have queued.
const TCP_RESPONSE_BUFFER: usize = 32;

/// The DNS sockets, bound at startup so a failure is reported then and port 0 works.
#[derive(Debug)]
pub struct DnsServer {
    udp: Vec<std::net::UdpSocket>,
    tcp: Vec<std::net::TcpListener>,
    tcp_timeout: Duration,
}

impl DnsServer {
    /// Binds UDP and TCP on every `[dns] listen` address; with port 0, TCP takes UDP's port.
    pub fn bind(cfg: &DnsConfig) -> io::Result<DnsServer> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        for &addr in &cfg.listen {
            let (u, t) = bind_pair(addr)
                .map_err(|e| io::Error::new(e.kind(), format!("dns.listen {addr}: {e}")))?;
            tracing::info!(address = %u.local_addr()?, proto = %"udp", "dns listening");
            tracing::info!(address = %t.local_addr()?, proto = %"tcp", "dns listening");
            udp.push(u);
            tcp.push(t);
        }
        Ok(DnsServer {
            udp,
            tcp,
            tcp_timeout: cfg.tcp_timeout,
        })
    }

    /// The bound addresses (UDP and TCP share each one).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.udp
            .iter()
            .filter_map(|s| s.local_addr().ok())
            .collect()
    }

    /// Answers until `stop` is cancelled, rebuilding the zone for every runtime `runtimes`
    /// brings (a reload) and every change `health` counts.
    pub async fn serve(
        self,
        mut runtimes: watch::Receiver<Arc<Runtime>>,
        health: watch::Receiver<u64>,
        stop: CancellationToken,
    ) {
        let runtime = runtimes.borrow_and_update().clone();
        let Some(cfg) = runtime.config.dns.clone() else {
            return;
        };
        let (zone, versions) = match Zone::build(&cfg, &runtime, 1) {
            Ok((mut z, states)) => {
                log_changes(&[], &states);
                let versions = Versions::new(Content::of(&cfg, &states), clock());
                z.set_serial(versions.serial());
                (Arc::new(ArcSwap::from_pointee(z)), versions)
            }
            Err(e) => {
                tracing::error!(error = %e, "dns: cannot build the zone; not serving");
                return;
            }
        };
        let rrl = Arc::new(ArcSwapOption::from(
            cfg.rrl.clone().map(|c| Arc::new(Limiter::new(c))),
        ));
        let udp_stop = stop.child_token();
        let handler = Arc::new(Handler::new(zone.clone()));
        let mut udp_tasks = spawn_udp(self.udp, handler, &rrl, &udp_stop);
        let mut server = tcp_server(self.tcp, self.tcp_timeout, Handler::new(zone.clone()));
        let shared = Shared { zone, rrl };
        maintain(runtimes, health, &shared, versions, stop).await;
        udp_stop.cancel();
        while udp_tasks.join_next().await.is_some() {}
        if let Err(e) = server.shutdown_gracefully().await {
            tracing::warn!(error = %e, "dns: server stopped with an error");
        }
    }
}

/// What the rebuild loop updates and the query paths read.
struct Shared {
    zone: Arc<ArcSwap<Zone>>,
    /// The UDP rate limiter, replaced when a reload changes `[dns.rrl]`.
    rrl: Arc<ArcSwapOption<Limiter>>,
}

/// One task per UDP socket, answering with `handler` within `rrl` until `stop` is cancelled.
fn spawn_udp(
    sockets: Vec<std::net::UdpSocket>,
    handler: Arc<Handler>,
    rrl: &Arc<ArcSwapOption<Limiter>>,
    stop: &CancellationToken,
) -> JoinSet<()> {
    let mut tasks = JoinSet::new();
    for s in sockets {
        match s
            .set_nonblocking(true)
            .and_then(|_| tokio::net::UdpSocket::from_std(s))
        {
            Ok(s) => {
                tasks.spawn(udp::serve(s, handler.clone(), rrl.clone(), stop.clone()));
            }
            Err(e) => tracing::error!(error = %e, "dns: udp socket"),
        }
    }
    tasks
}

/// hickory-server's `Server` on the TCP listeners, answering with `handler`.
fn tcp_server(
    listeners: Vec<std::net::TcpListener>,
    timeout: Duration,
    handler: Handler,
) -> Server<Handler> {
    let mut server = Server::new(handler);
    for l in listeners {
        match l
            .set_nonblocking(true)
            .and_then(|_| tokio::net::TcpListener::from_std(l))
        {
            Ok(l) => server.register_listener(l, timeout, TCP_RESPONSE_BUFFER),
            Err(e) => tracing::error!(error = %e, "dns: tcp listener"),
        }
    }
    server
}

/// Binds UDP then TCP on the same address; port 0 retries until both get one port.
fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::UdpSocket, std::net::TcpListener)> {
    let mut last = None;
    for _ in 0..(if addr.port() == 0 { 20 } else { 1 }) {
        let udp = std::net::UdpSocket::bind(addr)?;
        match std::net::TcpListener::bind(udp.local_addr()?) {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port for both UDP and TCP")))
}

/// The clock as a serial: seconds since 1970 (fits u32 until 2106; serial arithmetic wraps).
fn clock() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
}

/// Rebuilds the zone on every health event, on reload, and every [`SAFETY_REBUILD`]; swaps
/// it in, with a new serial, only when its content changed (so rotation and serial go on).
async fn maintain(
    mut runtimes: watch::Receiver<Arc<Runtime>>,
    mut events: watch::Receiver<u64>,
    shared: &Shared,
    mut versions: Versions,
    stop: CancellationToken,
) {
    let now = tokio::time::Instant::now();
    let mut safety = tokio::time::interval_at(now + SAFETY_REBUILD, SAFETY_REBUILD);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = events.changed() => if changed.is_err() { return },
            changed = runtimes.changed() => if changed.is_err() { return },
            _ = safety.tick() => {}
        }
        let runtime = runtimes.borrow_and_update().clone();
        let Some(cfg) = runtime.config.dns.as_ref() else {
            continue;
        };
        follow_rrl(&shared.rrl, cfg.rrl.as_ref());
        match Zone::build(cfg, &runtime, versions.serial()) {
            Ok((mut z, states)) => {
                let old = versions.states().to_vec();
                if let Some(serial) = versions.update(Content::of(cfg, &states), clock()) {
                    z.set_serial(serial);
                    shared.zone.store(Arc::new(z));
                    log_changes(&old, &states);
                }
            }
            Err(e) => tracing::warn!(error = %e, "dns: cannot rebuild the zone; keeping the last"),
        }
    }
}

/// A new rate limiter (with empty buckets) when a reload changed `[dns.rrl]`.
fn follow_rrl(rrl: &ArcSwapOption<Limiter>, want: Option<&RrlConfig>) {
    let current = rrl.load();
    if current.as_deref().map(Limiter::config) == want {
        return;
    }
    tracing::info!(rrl = ?want, "dns: response-rate limit changed");
    rrl.store(want.map(|c| Arc::new(Limiter::new(c.clone()))));
}

/// One line per balanced name whose answer changed.
fn log_changes(old: &[NameState], new: &[NameState]) {
    for n in new {
        if old.iter().any(|o| o == n) {
            continue;
        }
        let addrs: Vec<String> = n
            .selection
            .addrs
            .iter()
            .map(|(ip, _)| ip.to_string())
            .collect();
        tracing::info!(
            name = n.name,
            outcome = ?n.selection.outcome,
            degraded = n.selection.degraded,
            addresses = addrs.join(","),
            "dns answer"
        );
    }
}
