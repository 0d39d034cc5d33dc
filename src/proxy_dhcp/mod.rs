//! ProxyDHCP: the PXE service that tells the right machines where to boot without touching the
//! site's DHCP server. It hears the PXE client's DHCPDISCOVER broadcast on port 67 of each boot
//! segment and answers with boot information only (`answer`); the DHCP server still hands out
//! the addresses. A client that then asks on port 4011 gets the same boot as an ACK.
//!
//! Which machines and which file come from the routes (`route::boot`), read afresh for every
//! request, so a reload (a MAC file edited) takes effect on the next DISCOVER. Machines no rule
//! registers get no answer: other PXE services on the segment keep theirs. A rule's `delay`
//! holds its answer back (`delay`), so a whitelisting server elsewhere wins its machines.
//!
//! Every datagram may be spoofed: an answer is one datagram for one request, sent where RFC
//! 2131 says (the relay agent, the broadcast address, or on port 4011 back to the client);
//! held answers (one per MAC, `max_pending` per interface) and the list of machines seen are
//! bounded, the log has a budget, and nothing here touches the TFTP sessions.

pub mod answer;
pub mod clients;
pub mod config;
pub mod delay;
pub mod request;

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use answer::{Boot, answer};
use clients::{PxeClient, PxeClients};
use config::ProxyDhcpConfig;
use delay::{Delayed, Held};
use request::{PxeRequest, read};

use crate::route::Router;
use crate::route::boot::{BootDecision, BootQuery};
use crate::tftp::frontend::Frontend;

/// Where a PXE client without an address hears its answer.
const CLIENT_BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);

/// The sockets of `[proxy_dhcp]`, bound and not yet served.
#[derive(Debug)]
pub struct ProxyDhcpServer {
    endpoints: Vec<Endpoint>,
    config: ProxyDhcpConfig,
    pub clients: Arc<PxeClients>,
    pub stats: Arc<ProxyStats>,
}

#[derive(Debug)]
struct Endpoint {
    socket: UdpSocket,
    /// The listen address this socket serves: the server identifier of its answers.
    address: Ipv4Addr,
    /// Port 4011 (REQUEST, INFORM) rather than port 67 (DISCOVER).
    pxe: bool,
}

/// Counters for the status page (the metrics carry the reasons).
#[derive(Debug, Default)]
pub struct ProxyStats {
    packets: AtomicU64,
    offers: AtomicU64,
    acks: AtomicU64,
    ignored: AtomicU64,
}

/// `[proxy_dhcp]` on the status page and in `/api/status`.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyDhcpStatus {
    pub listen: Vec<SocketAddr>,
    pub packets: u64,
    pub offers: u64,
    pub acks: u64,
    pub ignored: u64,
    pub clients: Vec<PxeClient>,
}

impl ProxyDhcpServer {
    /// Per listen address: its interface's port 67 (broadcasts included; one socket per
    /// interface) and the address's port 4011.
    pub fn bind(config: &ProxyDhcpConfig) -> io::Result<ProxyDhcpServer> {
        let mut endpoints = Vec::new();
        let mut interfaces: Vec<String> = Vec::new();
        for &address in &config.listen {
            let named = |e: io::Error| {
                io::Error::new(e.kind(), format!("proxy_dhcp.listen {address}: {e}"))
            };
            let interface = interface_of(address).map_err(named)?;
            if interfaces.contains(&interface) {
                // Broadcasts arrive once per interface: they would all be answered as the
                // first address's.
                return Err(named(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("another listen address is on {interface}: give one per interface"),
                )));
            }
            let socket = broadcast_socket(&interface, config.port)
                .map_err(in_use)
                .map_err(named)?;
            endpoints.push(Endpoint {
                socket,
                address,
                pxe: false,
            });
            interfaces.push(interface);
            let socket = unicast_socket(SocketAddrV4::new(address, config.pxe_port))
                .map_err(in_use)
                .map_err(named)?;
            endpoints.push(Endpoint {
                socket,
                address,
                pxe: true,
            });
        }
        for e in &endpoints {
            tracing::info!(address = %e.local_addr(), serves = %e.address, port = if e.pxe { "pxe" } else { "dhcp" }, "proxy dhcp listening");
        }
        Ok(ProxyDhcpServer {
            endpoints,
            clients: Arc::new(PxeClients::new(config.max_clients)),
            stats: Arc::default(),
            config: config.clone(),
        })
    }

    /// The bound addresses: port 67 sockets (wildcard, one per interface) and port 4011 ones.
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.endpoints.iter().map(Endpoint::local_addr).collect()
    }

    /// Serves every socket until `stop`.
    pub fn serve(
        self,
        frontend: Arc<Frontend>,
        stop: CancellationToken,
    ) -> impl Future<Output = ()> {
        let service = Arc::new(Service {
            frontend,
            config: self.config,
            clients: self.clients,
            stats: self.stats,
        });
        let tasks: Vec<_> = self
            .endpoints
            .into_iter()
            .map(|e| tokio::spawn(service.clone().serve_endpoint(e, stop.clone())))
            .collect();
        async move {
            for t in tasks {
                let _ = t.await;
            }
        }
    }
}

impl Endpoint {
    fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((self.address, 0)))
    }
}

impl ProxyStats {
    pub fn status(&self, listen: Vec<SocketAddr>, clients: &PxeClients) -> ProxyDhcpStatus {
        ProxyDhcpStatus {
            listen,
            packets: self.packets.load(Ordering::Relaxed),
            offers: self.offers.load(Ordering::Relaxed),
            acks: self.acks.load(Ordering::Relaxed),
            ignored: self.ignored.load(Ordering::Relaxed),
            clients: clients.list(),
        }
    }
}

/// An answer on its way: the datagram and where it goes.
type Outgoing = (Vec<u8>, SocketAddr);

struct Service {
    frontend: Arc<Frontend>,
    config: ProxyDhcpConfig,
    clients: Arc<PxeClients>,
    stats: Arc<ProxyStats>,
}

impl Service {
    async fn serve_endpoint(self: Arc<Self>, ep: Endpoint, stop: CancellationToken) {
        let mut held: Delayed<Outgoing> = Delayed::new(self.config.max_pending);
        let mut buf = vec![0u8; 2048];
        loop {
            let wake = held.next_due();
            tokio::select! {
                _ = stop.cancelled() => return,
                got = ep.socket.recv_from(&mut buf) => match got {
                    Ok((n, src)) => {
                        if let Some(out) = self.handle(&ep, &buf[..n], src, &mut held) {
                            self.send(&ep, out).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "proxy dhcp receive"),
                },
                _ = sleep_until(wake) => {}
            }
            for out in held.take_due(Instant::now()) {
                self.send(&ep, out).await;
            }
        }
    }

    /// Reads one datagram and decides: an answer to send now, one held back, or nothing.
    fn handle(
        &self,
        ep: &Endpoint,
        bytes: &[u8],
        src: SocketAddr,
        held: &mut Delayed<Outgoing>,
    ) -> Option<Outgoing> {
        self.stats.packets.fetch_add(1, Ordering::Relaxed);
        let port = if ep.pxe { "pxe" } else { "dhcp" };
        metrics::counter!(crate::metrics::PXE_PACKETS, "port" => port).increment(1);
        let router = &self.frontend.runtime().router;
        let (req, boot, delay) =
            match judge(bytes, ep.pxe, ep.address, self.config.advertise, router) {
                Verdict::Ignore(reason) => return self.ignore(reason, src),
                Verdict::Decline(req, reason) => {
                    self.clients.record(&req, false, reason);
                    return self.ignore(reason, src);
                }
                Verdict::Answer { req, boot, delay } => (req, boot, delay),
            };
        let Some(dest) = reply_to(req.giaddr, src, self.config.port) else {
            self.clients.record(&req, false, "no-address-to-answer");
            return self.ignore("no-address-to-answer", src);
        };
        let out = (answer(&req, &boot), dest);
        if delay.is_zero() || ep.pxe {
            self.clients.record(&req, true, &boot.file);
            log_answer(&req, &boot, delay);
            return Some(out);
        }
        match held.hold(Instant::now() + delay, req.mac, out) {
            Held::Full => {
                self.clients.record(&req, false, "held-full");
                self.ignore("held-full", src)
            }
            Held::Already => None,
            Held::Queued => {
                self.clients.record(&req, true, &boot.file);
                log_answer(&req, &boot, delay);
                None
            }
        }
    }

    fn ignore(&self, reason: &'static str, src: SocketAddr) -> Option<Outgoing> {
        self.stats.ignored.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::PXE_IGNORED, "reason" => reason).increment(1);
        tracing::debug!(%src, reason, "proxy dhcp ignores");
        None
    }

    async fn send(&self, ep: &Endpoint, (bytes, dest): Outgoing) {
        if let Err(e) = ep.socket.send_to(&bytes, dest).await {
            // Any source may name any destination: the log gets its share only.
            if crate::limits::budget::may_log_packet_error() {
                tracing::warn!(%dest, error = %e, "proxy dhcp answer not sent");
            }
            return;
        }
        let (counter, kind) = if ep.pxe {
            (&self.stats.acks, "ack")
        } else {
            (&self.stats.offers, "offer")
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::PXE_ANSWERS, "type" => kind).increment(1);
    }
}

/// An answer in the log: at info while the log budget lasts (any source may claim any MAC).
fn log_answer(req: &PxeRequest, boot: &Boot, delay: Duration) {
    let mac = clients::mac_text(&req.mac);
    let (arch, delay_ms) = (req.arch.name(), delay.as_millis() as u64);
    if crate::limits::budget::may_log_packet_error() {
        tracing::info!(%mac, %arch, ipxe = req.ipxe, file = %boot.file, delay_ms, "proxy dhcp answers");
    } else {
        tracing::debug!(%mac, %arch, ipxe = req.ipxe, file = %boot.file, delay_ms, "proxy dhcp answers");
    }
}

/// What ProxyDHCP does with one datagram heard on `heard_on` (port 4011 when `pxe_port`).
#[derive(Debug)]
pub enum Verdict {
    /// Not a PXE client's request of this port's kind: never answered, not listed.
    Ignore(&'static str),
    /// A PXE client the routes give no boot file, and why.
    Decline(PxeRequest, &'static str),
    /// A PXE client to answer with `boot`, after `delay` (on port 67).
    Answer {
        req: PxeRequest,
        boot: Boot,
        delay: Duration,
    },
}

/// Reads a datagram and asks the routes; no I/O, no clock.
pub fn judge(
    bytes: &[u8],
    pxe_port: bool,
    heard_on: Ipv4Addr,
    advertise: Option<Ipv4Addr>,
    router: &Router,
) -> Verdict {
    let req = match read(bytes, pxe_port) {
        Ok(req) => req,
        Err(why) => return Verdict::Ignore(why.reason()),
    };
    match router.boot(&query(&req, heard_on)) {
        BootDecision::Offer { file, delay, .. } => Verdict::Answer {
            boot: Boot {
                server: heard_on,
                next_server: advertise.unwrap_or(heard_on),
                file,
            },
            delay,
            req,
        },
        other => Verdict::Decline(req, other.reason()),
    }
}

/// The segment a request comes from: its relay's, the client's own, else the one heard on.
fn query(req: &PxeRequest, heard_on: Ipv4Addr) -> BootQuery {
    let segment = [req.giaddr, req.ciaddr]
        .into_iter()
        .find(|a| !a.is_unspecified())
        .unwrap_or(heard_on);
    BootQuery {
        segment: IpAddr::V4(segment),
        mac: req.mac,
        arch: req.arch,
        ipxe: req.ipxe,
    }
}

/// Where an answer goes (RFC 2131 §4.1): to the relay agent at `giaddr` (its server port),
/// else to a client with no address yet by broadcast, else back to the address and port it
/// came from (port 4011: the client has its address then). `None`: nowhere (a port-4011
/// request from no address).
pub fn reply_to(giaddr: Ipv4Addr, src: SocketAddr, relay_port: u16) -> Option<SocketAddr> {
    if !giaddr.is_unspecified() {
        // A relay sends from its server port: answer there (a port 0 test setup: its source).
        let port = if src.ip() == IpAddr::V4(giaddr) {
            src.port()
        } else {
            relay_port
        };
        return Some(SocketAddr::from((giaddr, port)));
    }
    match src.ip().is_unspecified() {
        true if src.port() == CLIENT_BROADCAST.port() => Some(SocketAddr::V4(CLIENT_BROADCAST)),
        true => None,
        false => Some(src),
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// The interface that holds `address`.
fn interface_of(address: Ipv4Addr) -> io::Result<String> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    addrs
        .into_iter()
        .find(|i| {
            i.address
                .as_ref()
                .and_then(|a| a.as_sockaddr_in())
                .is_some_and(|s| s.ip() == address)
        })
        .map(|i| i.interface_name)
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AddrNotAvailable,
                "no interface of this host has this address",
            )
        })
}

/// Says who may hold the port when it is taken.
fn in_use(e: io::Error) -> io::Error {
    if e.kind() != io::ErrorKind::AddrInUse {
        return e;
    }
    io::Error::new(
        e.kind(),
        format!("{e}: is a DHCP server running on this host? It cannot share the port"),
    )
}

/// Port 67 on every address of `interface`, broadcasts included, answers may be broadcast.
/// No SO_REUSEADDR: beside a DHCP server's socket that set it, this one (bound to a device)
/// would silently take its unicast traffic; the bind fails instead.
fn broadcast_socket(interface: &str, port: u16) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_broadcast(true)?;
    nix::sys::socket::setsockopt(
        &s,
        nix::sys::socket::sockopt::BindToDevice,
        &std::ffi::OsString::from(interface),
    )
    .map_err(io::Error::from)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

fn unicast_socket(address: SocketAddrV4) -> io::Result<UdpSocket> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.bind(&SocketAddr::V4(address).into())?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::{Message, MessageType, OptionCode};
    use dhcproto::{Decodable, Decoder};
    use proptest::prelude::*;

    use super::*;
    use crate::config::Config;

    const HEARD_ON: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);

    fn router() -> Router {
        let c = Config::parse(
            r#"
            [[pool]]
            name = "boot"
            [[pool.backend]]
            address = "10.0.0.5:69"
            [[route]]
            macs = ["52:54:00:00:00:*"]
            pool = "boot"
            boot_file = { bios = "undionly.kpxe", efi64 = "ipxe.efi", ipxe = "boot.ipxe" }
            "#,
        )
        .unwrap();
        Router::new(&c.routes, &c.pools, "boot", false)
    }

    fn datagram(
        kind: MessageType,
        class: &str,
        arch: Option<u16>,
        mac: [u8; 6],
        ipxe: bool,
    ) -> Vec<u8> {
        request::pxe_datagram(kind, class.as_bytes(), arch, mac, ipxe)
    }

    /// The file a registered machine should get, from the rule above.
    fn expected(arch: Option<u16>, ipxe: bool) -> Option<&'static str> {
        if ipxe {
            return Some("boot.ipxe");
        }
        match arch {
            None | Some(0) => Some("undionly.kpxe"),
            Some(7) | Some(9) => Some("ipxe.efi"),
            _ => None,
        }
    }

    #[test]
    fn answers_go_where_rfc_2131_says() {
        let any = Ipv4Addr::UNSPECIFIED;
        let src = |s: &str| s.parse::<SocketAddr>().unwrap();
        let relay: Ipv4Addr = "10.9.0.1".parse().unwrap();
        // A relay agent gets it at its server port, whoever claims to have sent it.
        assert_eq!(
            reply_to(relay, src("10.9.0.1:67"), 67),
            Some(src("10.9.0.1:67"))
        );
        assert_eq!(
            reply_to(relay, src("192.0.2.7:53"), 67),
            Some(src("10.9.0.1:67"))
        );
        // A client without an address hears the broadcast; port 4011 goes back to the client.
        assert_eq!(
            reply_to(any, src("0.0.0.0:68"), 67),
            Some(src("255.255.255.255:68"))
        );
        assert_eq!(
            reply_to(any, src("10.77.0.147:4011"), 67),
            Some(src("10.77.0.147:4011"))
        );
        assert_eq!(reply_to(any, src("0.0.0.0:4011"), 67), None);
    }

    proptest! {
        #[test]
        fn any_datagram_is_judged_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..700), pxe in any::<bool>()) {
            let _ = judge(&bytes, pxe, HEARD_ON, None, &router());
        }

        /// A well-formed header followed by any options (the codec's asserts live there).
        #[test]
        fn any_options_are_judged_without_panic(options in proptest::collection::vec(any::<u8>(), 0..400), pxe in any::<bool>()) {
            let mut bytes = datagram(MessageType::Discover, "PXEClient", None, [0x52, 0x54, 0, 0, 0, 1], false);
            bytes.truncate(240);
            bytes.extend(options);
            let _ = judge(&bytes, pxe, HEARD_ON, None, &router());
        }

        /// Only a PXE client's DISCOVER from a registered MAC with a file for its architecture
        /// is answered; the answer names that file and gives no address.
        #[test]
        fn which_client_gets_what(
            pxe_class in any::<bool>(),
            arch in proptest::option::of(0u16..14),
            last in any::<u8>(),
            registered in any::<bool>(),
            ipxe in any::<bool>(),
            discover in any::<bool>(),
        ) {
            let class = if pxe_class { format!("PXEClient:Arch:{:05}", arch.unwrap_or(0)) } else { "MSFT 5.0".into() };
            let mac = if registered { [0x52, 0x54, 0, 0, 0, last] } else { [0x02, 0x54, 0, 0, 0, last] };
            let kind = if discover { MessageType::Discover } else { MessageType::Request };
            let verdict = judge(&datagram(kind, &class, arch, mac, ipxe), !discover, HEARD_ON, None, &router());
            let want = expected(arch, ipxe).filter(|_| pxe_class && registered);
            match (verdict, want) {
                (Verdict::Answer { req, boot, delay }, Some(file)) => {
                    prop_assert_eq!(boot.file.as_str(), file);
                    prop_assert_eq!(delay, Duration::ZERO);
                    let bytes = answer(&req, &boot);
                    let m = Message::decode(&mut Decoder::new(&bytes)).unwrap();
                    prop_assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
                    prop_assert_eq!(m.siaddr(), HEARD_ON);
                    prop_assert!(m.opts().get(OptionCode::AddressLeaseTime).is_none());
                    let want_type = if discover { MessageType::Offer } else { MessageType::Ack };
                    prop_assert_eq!(m.opts().msg_type(), Some(want_type));
                }
                (Verdict::Ignore(_), None) => prop_assert!(!pxe_class),
                (Verdict::Decline(_, reason), None) => {
                    prop_assert!(pxe_class);
                    let why = if registered { "no-file-for-arch" } else { "unregistered" };
                    prop_assert_eq!(reason, why);
                }
                (v, w) => prop_assert!(false, "{:?} where {:?} was due", v, w),
            }
        }
    }
}
