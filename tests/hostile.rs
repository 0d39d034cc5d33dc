//! A hostile network: what one client, one spoofed packet or one odd name can do to everyone
//! else. Each test here sends the attack over real sockets and checks that other clients and
//! the backends are unharmed; each failed before the fix it names.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Tftplb;
use common::faulty::{Fault, FaultyHandler};
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::health::Health;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request, error_code};
use tokio::net::UdpSocket;

const FILE: &str = "ARDBP32.BIN";

fn content() -> Vec<u8> {
    pseudo_random_bytes(9728, 7)
}

async fn backend() -> EmbeddedServer {
    FaultyHandler::new(&[(FILE, content())], Fault::None)
        .start()
        .await
}

/// A pool whose backends are probed every `interval`, down after `fall` failures.
fn probed_pool(addrs: &[SocketAddr], interval: &str, fall: u32) -> String {
    let mut t = format!(
        "[[pool]]\nname = \"p\"\n[pool.health]\nfile = \"{FILE}\"\ninterval = \"{interval}\"\n\
         timeout = \"500ms\"\nrise = 1\nfall = {fall}\n"
    );
    for a in addrs {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{a}\"\n"));
    }
    t
}

fn health_of(lb: &Tftplb) -> Vec<Health> {
    lb.frontend.runtime().pools[0]
        .backends
        .iter()
        .map(|b| b.state.health())
        .collect()
}

/// Polls (bounded: 10 s) until every backend of the first pool is up.
async fn wait_all_up(lb: &Tftplb) {
    for _ in 0..400 {
        if health_of(lb).iter().all(|h| *h == Health::Up) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("backends never all up: {:?}", health_of(lb));
}

fn rrq(file: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut o = Options::default();
    for (k, v) in options {
        o.push(k, v);
    }
    Packet::Rrq(Request {
        filename: file.into(),
        mode: Mode::Octet,
        options: o,
    })
    .encode()
}

/// The first datagram `socket` receives within `wait`, with its source.
async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<(Vec<u8>, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, from))) => Some((buf[..n].to_vec(), from)),
        _ => None,
    }
}

/// Finding 3: a request whose options a good server cannot answer unambiguously (duplicates,
/// blksize or windowsize out of range) is refused with ERROR 8 at the front end. Before, it
/// was relayed, the backend's OACK did not match the first of the duplicates, and the backend
/// was counted as silent: five such requests took healthy backends down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_option_lists_get_error_8_and_leave_backends_up() {
    let (a, b) = (backend().await, backend().await);
    let pool = probed_pool(&[a.address, b.address], "5s", 3);
    let lb = Tftplb::start("", &pool).await;
    wait_all_up(&lb).await;
    let bad: [&[(&str, &str)]; 5] = [
        &[("blksize", "512"), ("blksize", "1468")],
        &[("blksize", "1468"), ("BLKSIZE", "512")],
        &[("tsize", "0"), ("blksize", "7")],
        &[("blksize", "70000")],
        &[("windowsize", "0"), ("blksize", "1428")],
    ];
    for options in bad {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&rrq(FILE, options), lb.addr).await.unwrap();
        let (reply, _) = recv_within(&client, Duration::from_secs(3))
            .await
            .unwrap_or_else(|| panic!("no answer to {options:?}"));
        match Packet::decode(&reply) {
            Ok(Packet::Error { code, .. }) => {
                assert_eq!(code, error_code::OPTION_REFUSED, "{options:?}")
            }
            other => panic!("{options:?} got {other:?}"),
        }
    }
    // Three setup attempts of 700 ms each would have run by now; a backend they marked down
    // stays down until the next probe, 5 s after the first.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(health_of(&lb), vec![Health::Up, Health::Up]);
    let (data, _) = tftplb::tftp::client::fetch(lb.addr, FILE, &Default::default())
        .await
        .expect("a well-formed request is served");
    assert_eq!(data, content());
    lb.stop().await;
}

/// One HTTP/1.1 request with the given `Host` and extra headers; the status code.
async fn http_status(addr: SocketAddr, method: &str, path: &str, host: &str, extra: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\nContent-Length: 0\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("admin answered in time")
        .unwrap();
    String::from_utf8_lossy(&raw)
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// Finding 8: DNS rebinding. A page at http://evil.example:9069 whose name now resolves to
/// 127.0.0.1 is same-origin with the admin listener, so `Origin` matches `Host`; before, its
/// POST drained a backend. Now a `Host` that is not an IP address, localhost or a configured
/// name gets 403, and nothing changes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebound_host_name_cannot_use_the_admin_api() {
    let a = backend().await;
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
        a.address
    );
    let lb = Tftplb::start("", &pool).await;
    let admin = lb.admin.expect("admin listener");
    let drain = format!("/api/pools/p/backends/{}/drain", a.address);
    let evil = "evil.example:9069";
    let origin = format!("Origin: http://{evil}\r\n");
    assert_eq!(http_status(admin, "POST", &drain, evil, &origin).await, 403);
    assert_eq!(
        http_status(admin, "GET", "/api/status", evil, "").await,
        403
    );
    let backend = &lb.frontend.runtime().pools[0].backends[0];
    assert_eq!(backend.state.admin().as_str(), "enabled");
    // The listener's own address and localhost still work.
    let own = admin.to_string();
    assert_eq!(
        http_status(admin, "GET", "/api/status", &own, "").await,
        200
    );
    let local = format!("localhost:{}", admin.port());
    assert_eq!(
        http_status(admin, "GET", "/api/status", &local, "").await,
        200
    );
    let own_origin = format!("Origin: http://{own}\r\n");
    assert_eq!(
        http_status(admin, "POST", &drain, &own, &own_origin).await,
        200
    );
    assert_eq!(backend.state.admin().as_str(), "draining");
    lb.stop().await;
}

/// Finding 5: the MAC memory is filled by names any source can send. 100 sources each
/// claiming a MAC leave it at its cap (16 here); before, it held one entry per source, with
/// no cap, for 10 minutes each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_claimed_macs_leaves_the_mac_memory_at_its_cap() {
    let a = backend().await;
    let pools = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{0}\"\n\
         [[pool]]\nname = \"thin\"\n[[pool.backend]]\naddress = \"{0}\"\n\
         [[route]]\nmacs = [\"aa:bb:cc:*\"]\npool = \"thin\"\n",
        a.address
    );
    let lb = Tftplb::start("mac_memory_max = 16", &pools).await;
    for i in 1..=100u8 {
        // Every 127.0.0.0/8 address is this host's: a hundred sources on loopback.
        let source = UdpSocket::bind(format!("127.0.1.{i}:0")).await.unwrap();
        let name = format!("pxelinux.cfg/01-aa-bb-cc-00-00-{i:02x}");
        source.send_to(&rrq(&name, &[]), lb.addr).await.unwrap();
        // Its answer (ERROR 1 from the backend) shows the request was admitted and routed.
        recv_within(&source, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no answer to source {i}"));
    }
    assert_eq!(lb.frontend.remembered_macs(), 16);
    lb.stop().await;
}

// ---- h-ahead ----

/// A bigger file than `content()`: 40 blocks of 512 bytes and a short one, so windows of 4
/// run many rounds.
fn big_content() -> Vec<u8> {
    pseudo_random_bytes(40 * 512 + 100, 11)
}

/// Receives one datagram from `tid` within `wait` (datagrams from anyone else are skipped).
async fn recv_from_tid(socket: &UdpSocket, tid: SocketAddr, wait: Duration) -> Option<Vec<u8>> {
    let until = tokio::time::Instant::now() + wait;
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        let (d, from) = recv_within(socket, left).await?;
        if from == tid {
            return Some(d);
        }
    }
}

/// A windowed download by hand (blksize 512, windowsize 4) that, once, acknowledges block 5
/// (which tftplb has read ahead but not sent) before block 4. Returns the file, or `None`
/// when the transfer stalls (nothing new for 3 s) or takes longer than 15 s.
async fn download_with_a_stray_ack(lb: SocketAddr) -> Option<Vec<u8>> {
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let req = rrq("big.bin", &[("blksize", "512"), ("windowsize", "4")]);
    client.send_to(&req, lb).await.unwrap();
    let (oack, tid) = recv_within(&client, Duration::from_secs(3)).await?;
    assert!(
        matches!(Packet::decode(&oack), Ok(Packet::Oack(_))),
        "{oack:?}"
    );
    client.send_to(&ack(0), tid).await.unwrap();
    let (mut file, mut next, mut stray_sent) = (Vec::new(), 1u16, false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        let datagram = recv_from_tid(&client, tid, Duration::from_secs(3)).await?;
        let Ok(Packet::Data { block, data }) = Packet::decode(&datagram) else {
            panic!("not DATA: {datagram:?}");
        };
        if block != next {
            continue; // a resend of a block we have: wait for the next one
        }
        file.extend_from_slice(&data);
        next += 1;
        if data.len() < 512 {
            client.send_to(&ack(block), tid).await.unwrap();
            return Some(file);
        }
        if block == 4 && !stray_sent {
            // Let the read-ahead fetch blocks 5..=8 from the backend, then ACK 5 before 4.
            tokio::time::sleep(Duration::from_millis(300)).await;
            client.send_to(&ack(5), tid).await.unwrap();
            stray_sent = true;
        }
        if block % 4 == 0 {
            client.send_to(&ack(block), tid).await.unwrap();
        }
    }
    None
}

fn ack(block: u16) -> Vec<u8> {
    tftplb::protocol::packet::ack_datagram(block).to_vec()
}

/// Finding 11: a client ACK for a block tftplb read ahead but had not sent was kept as the
/// client's position, so every later valid ACK looked old: tftplb resent the same window until
/// the session died. Now each ACK is judged on its own against what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_ack_of_a_block_read_ahead_does_not_stall_the_transfer() {
    let server = FaultyHandler::new(&[("big.bin", big_content())], Fault::None)
        .start()
        .await;
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
        server.address
    );
    let lb = Tftplb::start("read_ahead = 4", &pool).await;
    let file = download_with_a_stray_ack(lb.addr)
        .await
        .expect("the transfer completes after a stray ACK");
    assert_eq!(common::sha256(&file), common::sha256(&big_content()));
    lb.stop().await;
}

/// A pool of one backend at `address`.
fn pool_of(address: SocketAddr) -> String {
    format!("[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{address}\"\n")
}

/// Finding 6: the client set each session's memory: blksize 65464 got a 64 KiB receive buffer
/// and a read-ahead ring of up to 128 KiB. Now a request asking more than `[tftp] max_blksize`
/// (default 8192) is relayed asking that much (the backend sees blksize 8192, the client gets
/// it in the OACK), and the download completes. Before, the backend saw 65464.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_blksize_is_relayed_lowered_to_max_blksize_and_completes() {
    // What the backend receives: a bare socket in its place.
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let lb = Tftplb::start("", &pool_of(fake.local_addr().unwrap())).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let huge = [("tsize", "0"), ("blksize", "65464"), ("windowsize", "2")];
    client.send_to(&rrq(FILE, &huge), lb.addr).await.unwrap();
    let (relayed, _) = recv_within(&fake, Duration::from_secs(3))
        .await
        .expect("the request reaches the backend");
    let Ok(Packet::Rrq(request)) = Packet::decode(&relayed) else {
        panic!("not an RRQ: {relayed:?}");
    };
    assert_eq!(request.options.blksize(), Some(8192), "{request:?}");
    assert_eq!(request.options.get("tsize"), Some("0"));
    assert_eq!(request.options.get("windowsize"), Some("2"));
    // The client's retransmission (its own bytes, not the relayed ones) is still recognised.
    client.send_to(&rrq(FILE, &huge), lb.addr).await.unwrap();
    assert!(
        recv_within(&fake, Duration::from_millis(300))
            .await
            .is_none(),
        "a retransmitted request opened a second backend transfer"
    );
    let stats = &lb.frontend.stats;
    assert_eq!(
        tftplb::tftp::frontend::FrontendStats::get(&stats.retransmitted_requests),
        1
    );
    lb.stop().await;

    // A real backend: the OACK the client gets says 8192, and the file arrives whole.
    let server = backend().await;
    let lb = Tftplb::start("", &pool_of(server.address)).await;
    let cfg = tftplb::tftp::client::ClientConfig {
        blksize: Some(65464),
        tsize: true,
        ..Default::default()
    };
    let (data, transfer) = tftplb::tftp::client::fetch(lb.addr, FILE, &cfg)
        .await
        .expect("the download completes");
    assert_eq!(transfer.negotiated.blksize, 8192);
    assert_eq!(common::sha256(&data), common::sha256(&content()));
    lb.stop().await;
}

/// Finding 6: RFC 2347 caps a request at 512 bytes. A longer one gets ERROR 8 with the reason
/// and never reaches a backend; before, it was relayed as it came.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_512_bytes_gets_an_error_and_is_not_relayed() {
    let fake = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let lb = Tftplb::start("", &pool_of(fake.local_addr().unwrap())).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let padding = "x".repeat(250);
    let long = rrq(FILE, &[("x-pad-1", &padding), ("x-pad-2", &padding)]);
    assert!(long.len() > 512);
    client.send_to(&long, lb.addr).await.unwrap();
    let (reply, _) = recv_within(&client, Duration::from_secs(3))
        .await
        .expect("an answer");
    match Packet::decode(&reply) {
        Ok(Packet::Error { code, message }) => {
            assert_eq!(code, error_code::OPTION_REFUSED);
            assert!(message.contains("512"), "{message}");
        }
        other => panic!("got {other:?}"),
    }
    assert!(
        recv_within(&fake, Duration::from_millis(300))
            .await
            .is_none(),
        "relayed to the backend"
    );
    lb.stop().await;
}
