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

// ---- h-setup ----

use common::capped::CappedServer;
use common::pool_toml;
use tftplb::tftp::client::{self, ClientConfig};

/// A pool of one backend, not probed.
fn plain_pool(addrs: &[SocketAddr]) -> String {
    pool_toml("p", "round-robin", "", addrs)
}

/// A download of [`FILE`] that must start (and, the file being small, end) within a second.
async fn download_within_a_second(lb: SocketAddr) -> Vec<u8> {
    let cfg = ClientConfig::default();
    let (data, _) = tokio::time::timeout(Duration::from_secs(1), client::fetch(lb, FILE, &cfg))
        .await
        .expect("the download starts (and ends) within a second")
        .expect("the download is admitted");
    data
}

/// Every datagram `socket` receives within `window`.
async fn all_within(socket: &UdpSocket, window: Duration) -> Vec<Vec<u8>> {
    let until = tokio::time::Instant::now() + window;
    let mut got = Vec::new();
    loop {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        match recv_within(socket, left).await {
            Some((datagram, _)) => got.push(datagram),
            None => return got,
        }
    }
}

/// Finding 10: a backend at its capacity (atftpd `--maxthread`, dnsmasq `--tftp-max`) drops new
/// requests without a word, and clients retransmit until a slot frees. Before, tftplb gave up
/// after its setup attempts with ERROR 0 "no boot server answered", and counted each silence
/// against the backend's health until it was marked down: 8 clients against a backend that
/// serves 2 at once did not all finish. Now tftplb stays silent, passes the clients'
/// retransmissions on, and a busy backend stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_at_its_capacity_serves_every_client_in_turn() {
    let busy = CappedServer::start(FILE, content(), 2, Duration::from_millis(20)).await;
    let lb = Tftplb::start("", &probed_pool(&[busy.address], "5s", 3)).await;
    wait_all_up(&lb).await;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let addr = lb.addr;
        // A client that retransmits for 10 s, as PXE ROMs do (EDK2: 4 s x 6 tries).
        let cfg = ClientConfig {
            retries: 10,
            ..ClientConfig::default()
        };
        clients.spawn(async move { client::fetch(addr, FILE, &cfg).await });
    }
    let mut finished = 0;
    while let Some(done) = clients.join_next().await {
        let (data, _) = done.unwrap().expect("every client finishes");
        assert_eq!(common::sha256(&data), common::sha256(&content()));
        finished += 1;
    }
    assert_eq!(finished, 8);
    assert!(
        busy.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "it was at capacity"
    );
    assert_eq!(health_of(&lb), vec![Health::Up], "busy is not dead");
    lb.stop().await;
}

/// Finding 2: requests whose source never answers count against that address's session limit
/// no more. Before, 16 of them (the default `max_sessions_per_client`) held its slots for the
/// 30 s idle timeout, and the machine behind the address was refused "too many transfers".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_do_not_lock_their_address_out() {
    let a = backend().await;
    let pools = format!(
        "{}\n[limits]\nmax_sessions_per_client = 16\n",
        plain_pool(&[a.address])
    );
    let lb = Tftplb::start("", &pools).await;
    let mut spoofed = Vec::new();
    for _ in 0..16 {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let request = rrq(FILE, &[("blksize", "1468"), ("tsize", "0")]);
        s.send_to(&request, lb.addr).await.unwrap();
        // The OACK shows the request was admitted; it is never acknowledged.
        recv_within(&s, Duration::from_secs(3)).await.expect("OACK");
        spoofed.push(s);
    }
    assert_eq!(download_within_a_second(lb.addr).await, content());
    lb.stop().await;
}

/// Finding 2: unanswered requests from many addresses cannot fill the session table either.
/// Before, 16 of them filled a table of 16 for 30 s and every other request was dropped; now
/// the oldest session whose client has not answered makes room for a new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_do_not_fill_the_session_table() {
    let a = backend().await;
    let lb = Tftplb::start("max_sessions = 16", &plain_pool(&[a.address])).await;
    let mut spoofed = Vec::new();
    for i in 1..=16u8 {
        let s = UdpSocket::bind(format!("127.0.9.{i}:0")).await.unwrap();
        let request = rrq(FILE, &[("blksize", "1468"), ("tsize", "0")]);
        s.send_to(&request, lb.addr).await.unwrap();
        recv_within(&s, Duration::from_secs(3)).await.expect("OACK");
        spoofed.push(s);
    }
    assert_eq!(download_within_a_second(lb.addr).await, content());
    lb.stop().await;
}

/// Finding 9: what one spoofed request makes tftplb send to the source it names. Before, the
/// relay passed on all six of the backend's OACKs (with options) or re-sent DATA 1 five times
/// itself (without), and kept the session for 30 s (6 s). Now the source gets the first reply
/// and at most two more, and the session is gone within two of the client's timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_request_gets_at_most_three_datagrams() {
    let a = backend().await;
    let lb = Tftplb::start("", &plain_pool(&[a.address])).await;
    let with_options = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let without = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let request = rrq(FILE, &[("blksize", "1468"), ("tsize", "0")]);
    with_options.send_to(&request, lb.addr).await.unwrap();
    without.send_to(&rrq(FILE, &[]), lb.addr).await.unwrap();
    let window = Duration::from_secs(5);
    let (a_got, b_got) = tokio::join!(
        all_within(&with_options, window),
        all_within(&without, window)
    );
    for (what, got) in [("with options", a_got), ("without", b_got)] {
        assert!(
            (1..=3).contains(&got.len()),
            "{what}: {} datagrams to a source that never answered",
            got.len()
        );
    }
    assert_eq!(lb.frontend.live_sessions(), 0, "unanswered sessions ended");
    lb.stop().await;
}

/// Finding 9: refusals on port 69 are ERRORs sent to whatever source a request names; a burst
/// from one source gets a bounded number of them. Before, 200 refused requests got 200 ERRORs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_refused_requests_gets_a_bounded_number_of_errors() {
    let a = backend().await;
    let lb = Tftplb::start("", &plain_pool(&[a.address])).await;
    let source = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let refused = rrq(FILE, &[("blksize", "7")]);
    for _ in 0..200 {
        source.send_to(&refused, lb.addr).await.unwrap();
    }
    let errors = all_within(&source, Duration::from_millis(1500)).await.len();
    assert!(
        (1..=40).contains(&errors),
        "{errors} ERRORs for 200 refusals"
    );
    // Another source still gets its answer at once.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    other.send_to(&refused, lb.addr).await.unwrap();
    let (reply, _) = recv_within(&other, Duration::from_secs(1))
        .await
        .expect("another source is answered");
    assert!(matches!(
        Packet::decode(&reply),
        Ok(Packet::Error {
            code: error_code::OPTION_REFUSED,
            ..
        })
    ));
    lb.stop().await;
}

/// Finding 7: a backend whose process dies mid-transfer closes its port; the kernel says so
/// (ICMP port unreachable) to a socket connected to the backend's TID. Before, that was
/// ignored and the transfer waited out `stall_timeout` (10 s here: the client, whose retries
/// last 6 s, gave up first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_port_closes_mid_transfer_is_left_at_once() {
    let big = pseudo_random_bytes(300_000, 9);
    let (tx_a, mut rx_a) = tokio::sync::mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = tokio::sync::mpsc::unbounded_channel();
    let files = [("big.bin", big.clone())];
    let a = FaultyHandler::new(&files, Fault::NotifyAfter(100_000, tx_a))
        .start()
        .await;
    let b = FaultyHandler::new(&files, Fault::NotifyAfter(100_000, tx_b))
        .start()
        .await;
    let tftp = "read_ahead = 0\nstall_timeout = \"10s\"\nsetup_timeout = \"5s\"";
    let lb = Tftplb::start(tftp, &plain_pool(&[a.address, b.address])).await;
    let started = std::time::Instant::now();
    let cfg = ClientConfig {
        blksize: Some(1468),
        ..ClientConfig::default()
    };
    let addr = lb.addr;
    let fetch = tokio::spawn(async move { client::fetch(addr, "big.bin", &cfg).await });
    tokio::select! {
        _ = rx_a.recv() => a.kill(),
        _ = rx_b.recv() => b.kill(),
    }
    let (data, _) = fetch.await.unwrap().expect("resumed on the other backend");
    assert_eq!(common::sha256(&data), common::sha256(&big));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    lb.stop().await;
}

/// Finding 7: a backend whose port 69 is closed answers the request with ICMP port
/// unreachable; the session moves on at once. Before, it waited out `setup_timeout` (10 s
/// here: the client, whose retries last 6 s, gave up first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_whose_port_is_closed_is_skipped_at_once() {
    let closed = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let good = backend().await;
    let lb = Tftplb::start(
        "setup_timeout = \"10s\"",
        &plain_pool(&[closed, good.address]),
    )
    .await;
    for _ in 0..4 {
        let started = std::time::Instant::now();
        let (data, _) = client::fetch(lb.addr, FILE, &ClientConfig::default())
            .await
            .expect("served by the other backend");
        assert_eq!(data, content());
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "took {:?}",
            started.elapsed()
        );
    }
    lb.stop().await;
}
