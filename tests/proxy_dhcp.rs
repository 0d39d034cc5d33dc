//! ProxyDHCP over real sockets on loopback: tftplb in this process with `[proxy_dhcp]` on
//! 127.0.0.1 (ports bound at 0 and read back), and a test client that sends what PXE
//! firmware sends (DISCOVER on the DHCP port, REQUEST on the PXE port) from an address, so
//! the answers come back to it. Which machines get which file, which get nothing, the delay,
//! the list of machines seen, and a reload that registers a MAC. Real firmware is in
//! `tests/pxe_boot.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use dhcproto::v4::{Architecture, DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};
use tftplb::app::Bound;
use tftplb::config::Config;
use tokio::net::UdpSocket;
use tokio::sync::oneshot;

const PILOT: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x01];
const STRANGER: [u8; 6] = [0x52, 0x54, 0x00, 0x00, 0x00, 0x02];
const PHONE: [u8; 6] = [0x00, 0x04, 0xf2, 0x00, 0x00, 0x03];

struct Running {
    dhcp: SocketAddr,
    pxe: SocketAddr,
    admin: SocketAddr,
    control: std::sync::Arc<tftplb::control::Control>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: &Path) -> Running {
        let c = Config::load(config).unwrap_or_else(|e| panic!("{e}"));
        let bound = Bound::with_file(&c, Some(config.to_path_buf())).expect("bind");
        let addrs = bound.proxy_dhcp_addrs();
        assert_eq!(addrs.len(), 2, "{addrs:?}");
        let dhcp = SocketAddr::from((Ipv4Addr::LOCALHOST, addrs[0].port()));
        let control = bound.control();
        let admin = bound.admin_addr().expect("admin listener");
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Running {
            dhcp,
            pxe: addrs[1],
            admin,
            control,
            stop: Some(stop),
            task,
        }
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let _ = self.task.await;
    }
}

fn config(dir: &Path, macs: &str, catch_all: &str) -> std::path::PathBuf {
    let list = dir.join("pilot.macs");
    std::fs::write(&list, macs).unwrap();
    let text = format!(
        r#"
[admin]
listen = "127.0.0.1:0"
[tftp]
listen = ["127.0.0.1:0"]
[proxy_dhcp]
listen = ["127.0.0.1"]
port = 0
pxe_port = 0
max_pending = 4
[[pool]]
name = "ipxe"
[[pool.backend]]
address = "127.0.0.1:9"
[[route]]
name = "phones"
macs = ["00:04:f2:*"]
action = "ignore"
[[route]]
name = "pilot"
macs = ["file:{}"]
pool = "ipxe"
boot_file = {{ bios = "undionly.kpxe", efi64 = "ipxe.efi", ipxe = "boot.ipxe" }}
{catch_all}
"#,
        list.display()
    );
    let path = dir.join("tftplb.toml");
    std::fs::write(&path, text).unwrap();
    path
}

const CATCH_ALL: &str = r#"
[[route]]
name = "everyone else, late"
pool = "ipxe"
delay = "1500ms"
boot_file = { bios = "late.kpxe" }
"#;

/// What PXE firmware sends: `class` in option 60, `arch` in 93, a UUID in 97, and `ipxe`'s
/// user class for iPXE's own round.
fn request(
    kind: MessageType,
    mac: [u8; 6],
    xid: u32,
    class: &str,
    arch: u16,
    ipxe: bool,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ClassIdentifier(class.as_bytes().to_vec()));
    o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(
        arch,
    )));
    o.insert(DhcpOption::ClientMachineIdentifier(
        [0u8].iter().chain(&[7u8; 16]).copied().collect(),
    ));
    if ipxe {
        o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out)).unwrap();
    out
}

fn pxe_class(arch: u16) -> String {
    format!("PXEClient:Arch:{arch:05}:UNDI:003016")
}

/// Sends `bytes` to `to` and waits up to `wait` for the answer.
async fn ask(to: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Message> {
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.send_to(bytes, to).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(wait, s.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    Some(Message::decode(&mut Decoder::new(&buf[..n])).expect("a DHCP answer"))
}

fn file_of(m: &Message) -> String {
    let field = m.fname().unwrap_or_default();
    String::from_utf8_lossy(field.split(|&b| b == 0).next().unwrap_or_default()).into_owned()
}

const QUIET: Duration = Duration::from_millis(700);
const ANSWER: Duration = Duration::from_secs(5);

#[tokio::test]
async fn registered_machines_get_their_file_others_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Running::start(&config(dir.path(), "52:54:00:00:00:01\n", "")).await;

    for (arch, ipxe, file) in [
        (0, false, "undionly.kpxe"),
        (7, false, "ipxe.efi"),
        (0, true, "boot.ipxe"),
    ] {
        let d = request(
            MessageType::Discover,
            PILOT,
            11,
            &pxe_class(arch),
            arch,
            ipxe,
        );
        let offer = ask(lb.dhcp, &d, ANSWER).await.expect("an offer");
        assert_eq!(offer.opcode(), Opcode::BootReply);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        assert_eq!(offer.xid(), 11);
        assert_eq!(
            offer.yiaddr(),
            Ipv4Addr::UNSPECIFIED,
            "ProxyDHCP hands out no address"
        );
        assert_eq!(offer.siaddr(), Ipv4Addr::LOCALHOST, "next-server is tftplb");
        assert_eq!(file_of(&offer), file, "arch {arch} ipxe {ipxe}");
        assert!(matches!(offer.opts().get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient"));
        assert!(
            matches!(offer.opts().get(OptionCode::ClientMachineIdentifier),
            Some(DhcpOption::ClientMachineIdentifier(v)) if v.len() == 17)
        );
    }
    // The boot server's ACK on port 4011.
    let r = request(MessageType::Request, PILOT, 12, &pxe_class(7), 7, false);
    let ack = ask(lb.pxe, &r, ANSWER).await.expect("an ACK");
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(file_of(&ack), "ipxe.efi");

    // Nothing for: a machine not registered, a phone kept for its own server, a PC's DHCP
    // (no PXEClient class), a DISCOVER sent to the PXE port, and bytes that are no DHCP.
    let stranger = request(MessageType::Discover, STRANGER, 13, &pxe_class(0), 0, false);
    assert!(ask(lb.dhcp, &stranger, QUIET).await.is_none());
    let phone = request(MessageType::Discover, PHONE, 14, &pxe_class(0), 0, false);
    assert!(ask(lb.dhcp, &phone, QUIET).await.is_none());
    let pc = request(MessageType::Discover, PILOT, 15, "MSFT 5.0", 0, false);
    assert!(ask(lb.dhcp, &pc, QUIET).await.is_none());
    let misplaced = request(MessageType::Discover, PILOT, 16, &pxe_class(0), 0, false);
    assert!(ask(lb.pxe, &misplaced, QUIET).await.is_none());
    assert!(
        ask(lb.dhcp, b"\x01\x01\x06\x00garbage", QUIET)
            .await
            .is_none()
    );

    // The machines seen, answered or not, for the admin to register.
    let status = lb.control.status().proxy_dhcp.expect("proxy dhcp status");
    assert_eq!((status.offers, status.acks), (3, 1));
    assert!(status.ignored >= 5, "{status:?}");
    let seen = lb.control.pxe_clients().unwrap();
    let stranger = seen
        .iter()
        .find(|c| c.mac == "52:54:00:00:00:02")
        .expect("listed");
    assert!(!stranger.answered);
    assert_eq!(stranger.outcome, "unregistered");
    assert_eq!(stranger.arch, "bios");
    assert!(
        stranger
            .uuid
            .as_deref()
            .is_some_and(|u| u.starts_with("0007"))
    );
    let phone = seen
        .iter()
        .find(|c| c.mac == "00:04:f2:00:00:03")
        .expect("listed");
    assert_eq!(phone.outcome, "not-ours");
    let pilot = seen
        .iter()
        .find(|c| c.mac == "52:54:00:00:00:01")
        .expect("listed");
    assert!(pilot.answered && pilot.requests == 4, "{pilot:?}");
    assert!(
        !seen.iter().any(|c| c.vendor_class.starts_with("MSFT")),
        "never lists a non-PXE machine"
    );
    // The same list over the admin API, and on the status page.
    let api = curl(&format!("http://{}/api/pxe/clients", lb.admin)).await;
    let listed: serde_json::Value = serde_json::from_str(&api).expect("JSON");
    let macs: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["mac"].as_str())
        .collect();
    assert!(macs.contains(&"52:54:00:00:00:02"), "{api}");
    let page = curl(&format!("http://{}/", lb.admin)).await;
    assert!(page.contains("data-pxe-clients") && page.contains("52:54:00:00:00:02"));
    lb.stop().await;
}

#[tokio::test]
async fn a_reload_registers_a_mac_added_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "52:54:00:00:00:01\n", "");
    let lb = Running::start(&path).await;
    let d = request(MessageType::Discover, STRANGER, 21, &pxe_class(7), 7, false);
    assert!(ask(lb.dhcp, &d, QUIET).await.is_none());
    config(
        dir.path(),
        "52:54:00:00:00:01\n52:54:00:00:00:02 # copied from /api/pxe/clients\n",
        "",
    );
    lb.control.reload().expect("reload");
    let offer = ask(lb.dhcp, &d, ANSWER)
        .await
        .expect("answered after the reload");
    assert_eq!(file_of(&offer), "ipxe.efi");
    lb.stop().await;
}

#[tokio::test]
async fn a_catch_all_with_a_delay_answers_late_and_once_per_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Running::start(&config(dir.path(), "52:54:00:00:00:01\n", CATCH_ALL)).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let d = request(MessageType::Discover, STRANGER, 31, &pxe_class(0), 0, false);
    let sent = Instant::now();
    s.send_to(&d, lb.dhcp).await.unwrap();
    // The client repeats its DISCOVER while it waits: one answer still.
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.send_to(&d, lb.dhcp).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(ANSWER, s.recv_from(&mut buf))
        .await
        .expect("late offer")
        .unwrap();
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "answered after {waited:?}"
    );
    let offer = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
    assert_eq!(file_of(&offer), "late.kpxe");
    assert!(
        tokio::time::timeout(QUIET, s.recv_from(&mut buf))
            .await
            .is_err(),
        "one answer"
    );
    // A registered machine is answered at once, the phones still not at all.
    let d = request(MessageType::Discover, PILOT, 32, &pxe_class(0), 0, false);
    let quick = Instant::now();
    assert!(ask(lb.dhcp, &d, ANSWER).await.is_some());
    assert!(quick.elapsed() < Duration::from_millis(1500));
    let phone = request(MessageType::Discover, PHONE, 33, &pxe_class(0), 0, false);
    assert!(ask(lb.dhcp, &phone, Duration::from_secs(2)).await.is_none());
    lb.stop().await;
}

/// Made-up MACs flooding a delayed rule hold at most `max_pending` answers; the rest are
/// counted and dropped, and a registered machine is still answered at once.
#[tokio::test]
async fn a_flood_of_made_up_macs_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Running::start(&config(dir.path(), "52:54:00:00:00:01\n", CATCH_ALL)).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..50u32 {
        let mac = [0x02, 0, 0, 0, (i >> 8) as u8, i as u8];
        s.send_to(
            &request(MessageType::Discover, mac, i, &pxe_class(0), 0, false),
            lb.dhcp,
        )
        .await
        .unwrap();
    }
    let d = request(MessageType::Discover, PILOT, 99, &pxe_class(7), 7, false);
    let offer = ask(lb.dhcp, &d, ANSWER)
        .await
        .expect("the registered machine");
    assert_eq!(file_of(&offer), "ipxe.efi");
    // 4 held answers arrive after the delay; the other 46 were dropped.
    let mut buf = [0u8; 1500];
    let mut late = 0;
    while let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(3), s.recv_from(&mut buf)).await
    {
        late += 1;
    }
    assert_eq!(late, 4);
    let status = lb.control.status().proxy_dhcp.unwrap();
    assert!(status.ignored >= 46, "{status:?}");
    lb.stop().await;
}

/// A GET with curl (a real HTTP client); the body.
async fn curl(url: &str) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sf", "--max-time", "10", url])
        .output()
        .await
        .expect("curl runs");
    assert!(out.status.success(), "curl {url}: {:?}", out.status);
    String::from_utf8(out.stdout).unwrap()
}

/// Port 67 held by another socket (a DHCP server on this host, which sets SO_REUSEADDR):
/// tftplb refuses to start and says why, instead of silently taking its unicast traffic.
#[tokio::test]
async fn a_dhcp_server_on_the_host_keeps_its_port() {
    let dhcpd = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None).unwrap();
    dhcpd.set_reuse_address(true).unwrap();
    dhcpd
        .bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)).into())
        .unwrap();
    let port = dhcpd.local_addr().unwrap().as_socket().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = config(dir.path(), "52:54:00:00:00:01\n", "");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\nport = 0\n", &format!("\nport = {port}\n"));
    let c = Config::parse(&text).unwrap_or_else(|e| panic!("{e}"));
    let e = Bound::new(&c).expect_err("port 67 is taken");
    let e = e.to_string();
    assert!(
        e.contains("proxy_dhcp.listen 127.0.0.1") && e.contains("DHCP server"),
        "{e}"
    );
}

/// A request that names a relay agent (giaddr) is answered at the relay, never at whatever
/// source it claims: a spoofed source cannot turn ProxyDHCP on a third party.
#[tokio::test]
async fn an_answer_for_a_relay_goes_to_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let lb = Running::start(&config(dir.path(), "52:54:00:00:00:01\n", "")).await;
    let mut d = request(MessageType::Discover, PILOT, 41, &pxe_class(0), 0, false);
    // giaddr 127.0.0.2: the source (127.0.0.1) is not that relay.
    d[24..28].copy_from_slice(&[127, 0, 0, 2]);
    assert!(ask(lb.dhcp, &d, QUIET).await.is_none());
    // From the relay itself, the relay gets it.
    let relay = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    relay.send_to(&d, lb.dhcp).await.unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = tokio::time::timeout(ANSWER, relay.recv_from(&mut buf))
        .await
        .expect("the relay's answer")
        .unwrap();
    let offer = Message::decode(&mut Decoder::new(&buf[..n])).unwrap();
    assert_eq!(offer.giaddr(), Ipv4Addr::new(127, 0, 0, 2));
    lb.stop().await;
}
