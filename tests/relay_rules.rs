//! The relay rules of DOMAIN.md, one test each, with raw UDP sockets on both sides: a scripted
//! client and a scripted backend whose every received packet the test can see.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Backends, Tftplb, Tree};
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request, ack_datagram};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const WAIT: Duration = Duration::from_secs(3);

fn rrq(file: &str, opts: &[(&str, &str)]) -> Vec<u8> {
    let mut options = Options::default();
    for (k, v) in opts {
        options.push(k, v);
    }
    Packet::Rrq(Request {
        filename: file.into(),
        mode: Mode::Octet,
        options,
    })
    .encode()
}

async fn recv(sock: &UdpSocket) -> Option<(Packet, SocketAddr)> {
    let mut buf = vec![0u8; 70_000];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf)).await.ok()?.ok()?;
    Some((Packet::decode(&buf[..n]).expect("valid packet"), from))
}

async fn expect_error(sock: &UdpSocket, code: u16) -> String {
    match recv(sock).await {
        Some((Packet::Error { code: c, message }, _)) if c == code => message,
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

async fn client_socket() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// A scripted backend: its port-69 socket, and the requests it has seen.
struct FakeBackend {
    listen: UdpSocket,
}

impl FakeBackend {
    async fn new() -> FakeBackend {
        FakeBackend {
            listen: UdpSocket::bind("127.0.0.1:0").await.unwrap(),
        }
    }

    fn addr(&self) -> SocketAddr {
        self.listen.local_addr().unwrap()
    }

    /// Waits for a request; returns it, who sent it, and a fresh TID socket to answer from.
    /// Other datagrams are skipped, as a server's port 69 skips them: with tests running side
    /// by side, a port the kernel handed this backend may still get a late DATA of a transfer
    /// that used it before.
    async fn accept(&self) -> (Request, SocketAddr, UdpSocket) {
        loop {
            let (p, from) = recv(&self.listen).await.expect("backend got no request");
            if let Packet::Rrq(req) = p {
                return (req, from, UdpSocket::bind("127.0.0.1:0").await.unwrap());
            }
        }
    }

    /// Whether another request arrives within `d`.
    async fn another_request_within(&self, d: Duration) -> bool {
        let mut buf = [0u8; 1500];
        timeout(d, self.listen.recv_from(&mut buf)).await.is_ok()
    }
}

/// Serves `data` in 512-byte lock-step blocks from `tid` to `peer`.
async fn serve_lock_step(tid: &UdpSocket, peer: SocketAddr, data: &[u8]) {
    let blocks: Vec<&[u8]> = data.chunks(512).chain(std::iter::once(&[][..])).collect();
    let last = if data.len().is_multiple_of(512) {
        blocks.len()
    } else {
        blocks.len() - 1
    };
    for (i, chunk) in blocks[..last].iter().enumerate() {
        let block = (i + 1) as u16;
        tid.send_to(
            &Packet::Data {
                block,
                data: chunk.to_vec(),
            }
            .encode(),
            peer,
        )
        .await
        .unwrap();
        match recv(tid).await {
            Some((Packet::Ack { block: b, .. }, _)) if b == block => {}
            other => panic!("backend expected ACK {block}, got {other:?}"),
        }
    }
}

/// Downloads in lock-step as a raw client; returns the data and the session's TID.
async fn fetch_raw(sock: &UdpSocket, lb: SocketAddr, file: &str) -> (Vec<u8>, SocketAddr) {
    sock.send_to(&rrq(file, &[]), lb).await.unwrap();
    let mut data = Vec::new();
    let mut tid = None;
    loop {
        let (p, from) = recv(sock).await.expect("client got nothing");
        assert!(
            tid.is_none() || tid == Some(from),
            "reply from a second TID"
        );
        tid = Some(from);
        let Packet::Data { block, data: d } = p else {
            panic!("client got {p:?}")
        };
        data.extend_from_slice(&d);
        sock.send_to(&ack_datagram(block), from).await.unwrap();
        if d.len() < 512 {
            return (data, from);
        }
    }
}

#[tokio::test]
async fn replies_come_from_the_contacted_address_and_the_backend_tid_is_learned() {
    let backend = FakeBackend::new().await;
    let lb = Tftplb::with_pool("round-robin", &[backend.addr()]).await;
    let client = client_socket().await;
    let fetch = fetch_raw(&client, lb.addr, "/boot/file");
    let serve = async {
        let (req, peer, tid) = backend.accept().await;
        assert_eq!(req.filename, b"/boot/file", "a leading / passes through");
        serve_lock_step(&tid, peer, &[5u8; 1000]).await;
    };
    let ((data, session_tid), ()) = tokio::join!(fetch, serve);
    assert_eq!(data, vec![5u8; 1000]);
    assert_eq!(session_tid.ip(), lb.addr.ip());
    assert_ne!(
        session_tid.port(),
        lb.addr.port(),
        "a per-session port, not port 69"
    );
    assert!(lb.wait_idle().await);
}

#[tokio::test]
async fn late_packets_of_an_older_transfer_are_not_taken_for_the_answer() {
    // With ports reused, an older transfer's retransmissions can reach a new session's backend
    // socket before the backend's answer. Only a packet that can answer the request counts.
    let backend = FakeBackend::new().await;
    let lb = Tftplb::with_pool("round-robin", &[backend.addr()]).await;
    let client = client_socket().await;
    client
        .send_to(&rrq("file", &[("tsize", "0")]), lb.addr)
        .await
        .unwrap();
    let (_, peer, tid) = backend.accept().await;
    let stale = client_socket().await;
    stale
        .send_to(
            &Packet::Data {
                block: 7,
                data: vec![0xee; 512],
            }
            .encode(),
            peer,
        )
        .await
        .unwrap();
    let mut wrong = Options::default();
    wrong.push("blksize", "1468"); // never asked for
    stale
        .send_to(&Packet::Oack(wrong).encode(), peer)
        .await
        .unwrap();
    stale
        .send_to(
            &Packet::Data {
                block: 1,
                data: vec![0xee; 1468],
            }
            .encode(),
            peer,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut right = Options::default();
    right.push("tsize", "3");
    tid.send_to(&Packet::Oack(right.clone()).encode(), peer)
        .await
        .unwrap();
    let (p, session) = recv(&client).await.unwrap();
    assert_eq!(
        p,
        Packet::Oack(right),
        "the genuine answer, not a stale packet"
    );
    client.send_to(&ack_datagram(0), session).await.unwrap();
    let (p, _) = recv(&tid).await.expect("the backend's TID was learned");
    assert!(matches!(p, Packet::Ack { block: 0, .. }));
}

#[tokio::test]
async fn a_late_answer_to_an_abandoned_request_is_told_to_stop() {
    // The first backend is silent past the setup timeout, so a second one is asked, and
    // answers first: the session takes it. The first one's answer comes later still: the port
    // it was asked from stays bound and tells the late transfer to stop, so the kernel cannot
    // hand that port to another session that would take the late OACK for its own answer.
    let slow = FakeBackend::new().await;
    let good = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "", &[slow.addr(), good.addr()]);
    let lb = Tftplb::start("setup_timeout = \"200ms\"", &pools).await;
    let client = client_socket().await;
    client
        .send_to(&rrq("f", &[("tsize", "0")]), lb.addr)
        .await
        .unwrap();
    let (_, abandoned, late_tid) = slow.accept().await;
    let (_, peer, tid) = good.accept().await;
    let mut o = Options::default();
    o.push("tsize", "3");
    tid.send_to(&Packet::Oack(o.clone()).encode(), peer)
        .await
        .unwrap();
    let (p, _) = recv(&client).await.unwrap();
    assert_eq!(p, Packet::Oack(o.clone()));
    late_tid
        .send_to(&Packet::Oack(o).encode(), abandoned)
        .await
        .unwrap();
    let message = expect_error(&late_tid, 0).await;
    assert_eq!(message, "transfer cancelled");
}

#[tokio::test]
async fn a_retransmitted_request_opens_no_second_backend_transfer() {
    let backend = FakeBackend::new().await;
    let lb = Tftplb::with_pool("round-robin", &[backend.addr()]).await;
    let client = client_socket().await;
    let request = rrq("file", &[("blksize", "1024")]);
    client.send_to(&request, lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;
    // The client retransmits before anything came back.
    client.send_to(&request, lb.addr).await.unwrap();
    client.send_to(&request, lb.addr).await.unwrap();
    assert!(
        !backend
            .another_request_within(Duration::from_millis(300))
            .await
    );
    assert_eq!(
        lb.frontend
            .stats
            .retransmitted_requests
            .load(Ordering::Relaxed),
        2
    );
    tid.send_to(
        &Packet::Data {
            block: 1,
            data: vec![1; 3],
        }
        .encode(),
        peer,
    )
    .await
    .unwrap();
    let (p, _) = recv(&client).await.unwrap();
    assert_eq!(
        p,
        Packet::Data {
            block: 1,
            data: vec![1; 3]
        }
    );
}

#[tokio::test]
async fn a_reused_client_port_starts_a_new_session() {
    let tree = Tree::new(&[("a.bin", 700), ("b.bin", 1300)]);
    let backends = Backends::start("async-tftp", tree.path(), 1).await;
    let lb = Tftplb::with_pool("round-robin", &backends.addresses()).await;
    // A PXE ROM that uses the same port on every boot: one socket, several transfers.
    let client = client_socket().await;
    for file in ["a.bin", "b.bin", "a.bin"] {
        let (data, _) = fetch_raw(&client, lb.addr, file).await;
        assert_eq!(common::sha256(&data), tree.sha256_of(file), "{file}");
    }
    // A boot that died mid-transfer: the same request again from the same port must not be
    // swallowed by the stale session.
    client.send_to(&rrq("b.bin", &[]), lb.addr).await.unwrap();
    let (p, tid) = recv(&client).await.unwrap();
    assert!(matches!(p, Packet::Data { block: 1, .. }));
    client.send_to(&ack_datagram(1), tid).await.unwrap();
    let _ = recv(&client).await.unwrap(); // DATA 2; the client "reboots" here
    // A reboot takes seconds; the same request while the client still talks to its session
    // would be a stray copy (tests/hostile.rs). What the old session re-sent meanwhile reached
    // the ROM before its network stack was up again: gone.
    tokio::time::sleep(tftplb::tftp::table::REUSE_AFTER_SILENCE + Duration::from_millis(100)).await;
    let mut stale = [0u8; 1500];
    while client.try_recv_from(&mut stale).is_ok() {}
    let (data, _) = fetch_raw(&client, lb.addr, "b.bin").await;
    assert_eq!(common::sha256(&data), tree.sha256_of("b.bin"));
    assert!(lb.frontend.stats.superseded.load(Ordering::Relaxed) >= 1);
    assert!(lb.wait_idle().await);
}

#[tokio::test]
async fn a_tsize_probe_abort_reaches_the_backend_and_the_download_follows_to_it() {
    let backends = [FakeBackend::new().await, FakeBackend::new().await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let pools = common::pool_toml("p", "round-robin", "affinity = \"client\"", &addrs);
    let lb = Tftplb::start("", &pools).await;
    let client = client_socket().await;
    // EDK2: RRQ with tsize, read the OACK, abort with ERROR 8.
    client
        .send_to(&rrq("ARDBP32.BIN", &[("tsize", "0")]), lb.addr)
        .await
        .unwrap();
    let (first, peer, tid) = tokio::select! {
        a = backends[0].accept() => (0, a.1, a.2),
        b = backends[1].accept() => (1, b.1, b.2),
    };
    let mut oack = Options::default();
    oack.push("tsize", "9728");
    tid.send_to(&Packet::Oack(oack.clone()).encode(), peer)
        .await
        .unwrap();
    let (p, session) = recv(&client).await.unwrap();
    assert_eq!(p, Packet::Oack(oack));
    let abort = Packet::Error {
        code: 8,
        message: "tsize probe".into(),
    }
    .encode();
    client.send_to(&abort, session).await.unwrap();
    let (p, _) = recv(&tid).await.expect("the abort reaches the backend");
    assert!(matches!(p, Packet::Error { code: 8, .. }));
    // The follow-up request goes to the same backend.
    let client2 = client_socket().await;
    client2
        .send_to(&rrq("ARDBP32.BIN", &[]), lb.addr)
        .await
        .unwrap();
    let (req, _, _) = backends[first].accept().await;
    assert_eq!(req.filename, b"ARDBP32.BIN");
    assert!(
        !backends[1 - first]
            .another_request_within(Duration::from_millis(200))
            .await
    );
}

#[tokio::test]
async fn packets_from_strangers_get_error_5_and_change_nothing() {
    let backend = FakeBackend::new().await;
    let lb = Tftplb::with_pool("round-robin", &[backend.addr()]).await;
    let client = client_socket().await;
    client.send_to(&rrq("file", &[]), lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;
    tid.send_to(
        &Packet::Data {
            block: 1,
            data: vec![9; 512],
        }
        .encode(),
        peer,
    )
    .await
    .unwrap();
    let (_, session) = recv(&client).await.unwrap();
    // A stranger writes to the session's client-facing port…
    let stranger = client_socket().await;
    stranger.send_to(&ack_datagram(1), session).await.unwrap();
    expect_error(&stranger, 5).await;
    // …and another to the backend-facing port, from the backend's IP but the wrong port: that
    // socket is connected to the backend's TID, so the kernel drops it (no ERROR 5 needed).
    let wrong_tid = client_socket().await;
    wrong_tid
        .send_to(
            &Packet::Data {
                block: 2,
                data: vec![0; 10],
            }
            .encode(),
            peer,
        )
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        timeout(Duration::from_millis(300), wrong_tid.recv_from(&mut buf))
            .await
            .is_err(),
        "nothing reaches the session from a wrong TID"
    );
    // The transfer goes on.
    client.send_to(&ack_datagram(1), session).await.unwrap();
    let (p, _) = recv(&tid).await.unwrap();
    assert!(matches!(p, Packet::Ack { block: 1, .. }));
    tid.send_to(
        &Packet::Data {
            block: 2,
            data: vec![9; 7],
        }
        .encode(),
        peer,
    )
    .await
    .unwrap();
    let (p, from) = recv(&client).await.unwrap();
    assert_eq!(
        (p, from),
        (
            Packet::Data {
                block: 2,
                data: vec![9; 7]
            },
            session
        )
    );
    client.send_to(&ack_datagram(2), session).await.unwrap();
    assert!(lb.wait_idle().await);
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_are_never_forwarded() {
    let backend = FakeBackend::new().await;
    let lb = Tftplb::with_pool("round-robin", &[backend.addr()]).await;
    let client = client_socket().await;
    let long = "x".repeat(256);
    let wrq = Packet::Wrq(Request {
        filename: "up".into(),
        mode: Mode::Octet,
        options: Options::default(),
    });
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (wrq.encode(), 2),
        (rrq("../etc/passwd", &[]), 2),
        (rrq("pxelinux.cfg/../../x", &[]), 2),
        (rrq("a\\..\\b", &[]), 2),
        (rrq(&long, &[]), 2),
        (rrq("", &[]), 2),
        (vec![0, 42, 1, 2], 4),
        (ack_datagram(3).to_vec(), 5),
    ];
    for (datagram, code) in &cases {
        client.send_to(datagram, lb.addr).await.unwrap();
        let msg = expect_error(&client, *code).await;
        assert!(!msg.is_empty());
    }
    let unsupported = b"\x00\x01file\x00mail\x00";
    client.send_to(unsupported, lb.addr).await.unwrap();
    expect_error(&client, 4).await;
    assert!(
        !backend
            .another_request_within(Duration::from_millis(200))
            .await
    );
}

#[tokio::test]
async fn malformed_datagrams_are_counted_dropped_and_harm_no_transfer() {
    let tree = Tree::new(&[("f.bin", 200_000)]);
    let backends = Backends::start("async-tftp", tree.path(), 1).await;
    let lb = Tftplb::with_pool("round-robin", &backends.addresses()).await;
    let junk: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0, 1],
        b"\x00\x01no-terminator".to_vec(),
        // (A valueless option and a name that is not UTF-8 are not junk: they get an answer,
        // see tests/hostile.rs.)
        b"\x00\x05\x00\x01stray error\x00".to_vec(),
    ];
    let noisy = client_socket().await;
    let client = client_socket().await;
    let fetch = fetch_raw(&client, lb.addr, "f.bin");
    let noise = async {
        for _ in 0..20 {
            for j in &junk {
                noisy.send_to(j, lb.addr).await.unwrap();
            }
            tokio::task::yield_now().await;
        }
    };
    let ((data, _), ()) = tokio::join!(fetch, noise);
    assert_eq!(common::sha256(&data), tree.sha256_of("f.bin"));
    let mut buf = [0u8; 100];
    assert!(
        timeout(Duration::from_millis(200), noisy.recv_from(&mut buf))
            .await
            .is_err(),
        "junk got an answer"
    );
    assert!(lb.wait_idle().await);
    assert_eq!(lb.frontend.stats.malformed.load(Ordering::Relaxed), 4 * 20);
    // The stray ERROR is refused silently but counted as refused.
    assert_eq!(lb.frontend.stats.refused.load(Ordering::Relaxed), 20);
}

#[tokio::test]
async fn a_silent_backend_is_skipped_within_the_setup_timeout() {
    let silent = FakeBackend::new().await;
    let tree = Tree::new(&[("f.bin", 3000)]);
    let good = Backends::start("async-tftp", tree.path(), 1).await;
    let addrs = vec![silent.addr(), good.addresses()[0]];
    let lb = Tftplb::start(
        "setup_timeout = \"200ms\"",
        &common::pool_toml("p", "round-robin", "", &addrs),
    )
    .await;
    for _ in 0..4 {
        let client = client_socket().await;
        let (data, _) = fetch_raw(&client, lb.addr, "f.bin").await;
        assert_eq!(common::sha256(&data), tree.sha256_of("f.bin"));
    }
}

/// A backend at its capacity drops requests silently; the client's retransmission is the
/// retry. So when no backend answers, the client hears nothing (no ERROR that would end its
/// boot), its retransmissions reach every backend asked, and the session ends once it stops.
#[tokio::test]
async fn when_no_backend_answers_the_client_hears_nothing_and_its_retries_are_passed_on() {
    let silent = [FakeBackend::new().await, FakeBackend::new().await];
    let addrs: Vec<_> = silent.iter().map(|b| b.addr()).collect();
    let tftp = "setup_timeout = \"100ms\"\nsetup_attempts = 2";
    let lb = Tftplb::start(tftp, &common::pool_toml("p", "round-robin", "", &addrs)).await;
    let client = client_socket().await;
    let request = rrq("f", &[]);
    client.send_to(&request, lb.addr).await.unwrap();
    let mut asked_from = Vec::new();
    for b in &silent {
        asked_from.push(b.accept().await.1);
        assert!(!b.another_request_within(Duration::from_millis(300)).await);
    }
    client.send_to(&request, lb.addr).await.unwrap();
    for (b, from) in silent.iter().zip(&asked_from) {
        assert_eq!(b.accept().await.1, *from, "passed on from the same port");
    }
    assert!(silent_for(&client, Duration::from_millis(2500)).await);
    assert!(lb.wait_idle().await);
}

fn data(block: u16, len: usize) -> Vec<u8> {
    Packet::Data {
        block,
        data: vec![block as u8; len],
    }
    .encode()
}

/// The next packet on `sock` must be ACK `block`.
async fn expect_ack(sock: &UdpSocket, block: u16) {
    match recv(sock).await {
        Some((Packet::Ack { block: b, .. }, _)) if b == block => {}
        other => panic!("expected ACK {block}, got {other:?}"),
    }
}

/// The next packet on `sock` must be DATA `block`; returns who sent it.
async fn expect_data(sock: &UdpSocket, block: u16) -> SocketAddr {
    match recv(sock).await {
        Some((Packet::Data { block: b, .. }, from)) if b == block => from,
        other => panic!("expected DATA {block}, got {other:?}"),
    }
}

/// Whether anything arrives on `sock` within `d`.
async fn silent_for(sock: &UdpSocket, d: Duration) -> bool {
    let mut buf = [0u8; 1500];
    timeout(d, sock.recv_from(&mut buf)).await.is_err()
}

#[tokio::test]
async fn lock_step_reads_are_read_ahead_and_the_relay_is_the_clients_sender() {
    let backend = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "", &[backend.addr()]);
    let lb = Tftplb::start("read_ahead = 2", &pools).await;
    let client = client_socket().await;
    client.send_to(&rrq("f", &[]), lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;

    // The relay acknowledges the backend's blocks itself, up to 2 ahead of the client's ACK.
    tid.send_to(&data(1, 512), peer).await.unwrap();
    expect_ack(&tid, 1).await;
    tid.send_to(&data(2, 512), peer).await.unwrap();
    assert!(
        silent_for(&tid, Duration::from_millis(300)).await,
        "no ACK 2 while block 2 is two ahead of the client"
    );

    // The client got block 1 only (lock-step). It does not answer: the relay's own timer
    // sends block 1 again.
    let session = expect_data(&client, 1).await;
    expect_data(&client, 1).await;

    // A duplicate ACK is never answered by a resend (sorcerer's apprentice).
    client.send_to(&ack_datagram(1), session).await.unwrap();
    client.send_to(&ack_datagram(1), session).await.unwrap();
    expect_data(&client, 2).await;
    assert!(
        silent_for(&client, Duration::from_millis(400)).await,
        "block 2 went out once"
    );
    // The client's ACK made room: the backend gets ACK 2 now, never the client's ACK.
    expect_ack(&tid, 2).await;

    // The short final block is acknowledged at once.
    tid.send_to(&data(3, 10), peer).await.unwrap();
    expect_ack(&tid, 3).await;
    client.send_to(&ack_datagram(2), session).await.unwrap();
    expect_data(&client, 3).await;
    client.send_to(&ack_datagram(3), session).await.unwrap();
    assert!(lb.wait_idle().await);
    assert!(silent_for(&tid, Duration::from_millis(200)).await);
}

#[tokio::test]
async fn with_read_ahead_off_the_backend_waits_for_the_clients_ack() {
    let backend = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "", &[backend.addr()]);
    let lb = Tftplb::start("read_ahead = 0", &pools).await;
    let client = client_socket().await;
    client.send_to(&rrq("f", &[]), lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;
    tid.send_to(&data(1, 10), peer).await.unwrap();
    let session = expect_data(&client, 1).await;
    assert!(silent_for(&tid, Duration::from_millis(300)).await);
    client.send_to(&ack_datagram(1), session).await.unwrap();
    expect_ack(&tid, 1).await;
    assert!(lb.wait_idle().await);
}

#[tokio::test]
async fn a_takeover_resumes_after_the_last_block_read_ahead() {
    let backends = [FakeBackend::new().await, FakeBackend::new().await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let pools = common::pool_toml("p", "round-robin", "resume = true", &addrs);
    let lb = Tftplb::start("read_ahead = 4", &pools).await;
    let client = client_socket().await;
    client.send_to(&rrq("f", &[]), lb.addr).await.unwrap();
    let (first, peer, tid) = tokio::select! {
        a = backends[0].accept() => (0, a.1, a.2),
        b = backends[1].accept() => (1, b.1, b.2),
    };
    // Three blocks read ahead, none acknowledged by the client yet; then the backend gives up.
    for b in 1..=3 {
        tid.send_to(&data(b, 512), peer).await.unwrap();
        expect_ack(&tid, b).await;
    }
    let session = expect_data(&client, 1).await;
    let gave_up = Packet::Error {
        code: 0,
        message: "disk error".into(),
    };
    tid.send_to(&gave_up.encode(), peer).await.unwrap();

    // The other backend catches up to block 3, acknowledged by the relay itself ...
    let (_, peer2, tid2) = backends[1 - first].accept().await;
    for b in 1..=3 {
        tid2.send_to(&data(b, 512), peer2).await.unwrap();
        expect_ack(&tid2, b).await;
    }
    // ... and the client, served from the ring, takes blocks 2 and 3 and then 4 from it.
    tid2.send_to(&data(4, 7), peer2).await.unwrap();
    expect_ack(&tid2, 4).await;
    for b in 1..=4u16 {
        if b > 1 {
            let from = expect_data(&client, b).await;
            assert_eq!(from, session, "the same session TID throughout");
        }
        client.send_to(&ack_datagram(b), session).await.unwrap();
    }
    assert!(lb.wait_idle().await);
}

fn oack(pairs: &[(&str, &str)]) -> Vec<u8> {
    let mut options = Options::default();
    for (k, v) in pairs {
        options.push(k, v);
    }
    Packet::Oack(options).encode()
}

/// A takeover's socket may get a late answer of an older transfer that used its port (seen
/// under a flood, when lingering sockets had to be let go): an OACK of another blksize must
/// not end the client's transfer; the real answer that follows carries it on.
#[tokio::test]
async fn a_takeover_waits_past_a_stray_answer_for_the_fitting_one() {
    let backends = [FakeBackend::new().await, FakeBackend::new().await];
    let addrs: Vec<_> = backends.iter().map(|b| b.addr()).collect();
    let pools = common::pool_toml("p", "round-robin", "resume = true", &addrs);
    let lb = Tftplb::start("read_ahead = 0", &pools).await;
    let client = client_socket().await;
    client
        .send_to(&rrq("f", &[("blksize", "1024")]), lb.addr)
        .await
        .unwrap();
    let (first, peer, tid) = tokio::select! {
        a = backends[0].accept() => (0, a.1, a.2),
        b = backends[1].accept() => (1, b.1, b.2),
    };
    tid.send_to(&oack(&[("blksize", "1024")]), peer)
        .await
        .unwrap();
    let session = match recv(&client).await {
        Some((Packet::Oack(_), from)) => from,
        other => panic!("expected the OACK, got {other:?}"),
    };
    client.send_to(&ack_datagram(0), session).await.unwrap();
    expect_ack(&tid, 0).await;
    tid.send_to(&data(1, 1024), peer).await.unwrap();
    expect_data(&client, 1).await;
    client.send_to(&ack_datagram(1), session).await.unwrap();
    expect_ack(&tid, 1).await;
    let gave_up = Packet::Error {
        code: 0,
        message: "disk error".into(),
    };
    tid.send_to(&gave_up.encode(), peer).await.unwrap();

    // The other backend is asked; a stray OACK of another blksize reaches the asking socket
    // first, from another of that backend's ports, then the real answer.
    let (_, peer2, tid2) = backends[1 - first].accept().await;
    let stray = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stray
        .send_to(&oack(&[("blksize", "512")]), peer2)
        .await
        .unwrap();
    tid2.send_to(&oack(&[("blksize", "1024")]), peer2)
        .await
        .unwrap();
    expect_ack(&tid2, 0).await;
    tid2.send_to(&data(1, 1024), peer2).await.unwrap();
    expect_ack(&tid2, 1).await;
    tid2.send_to(&data(2, 10), peer2).await.unwrap();
    assert_eq!(expect_data(&client, 2).await, session);
    client.send_to(&ack_datagram(2), session).await.unwrap();
    expect_ack(&tid2, 2).await;
    assert!(lb.wait_idle().await);
}

#[tokio::test]
async fn a_write_whose_final_ack_was_lost_gets_it_again() {
    let backend = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "allow_write = true", &[backend.addr()]);
    let lb = Tftplb::start("", &pools).await;
    let client = client_socket().await;
    let wrq = Packet::Wrq(Request {
        filename: "up.bin".into(),
        mode: Mode::Octet,
        options: Options::default(),
    });
    client.send_to(&wrq.encode(), lb.addr).await.unwrap();
    let (p, peer) = recv(&backend.listen)
        .await
        .expect("the WRQ reaches the backend");
    assert!(matches!(p, Packet::Wrq(_)), "{p:?}");
    let tid = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    tid.send_to(&ack_datagram(0), peer).await.unwrap();
    let (p, session) = recv(&client).await.unwrap();
    assert!(matches!(p, Packet::Ack { block: 0, .. }), "{p:?}");

    client.send_to(&data(1, 10), session).await.unwrap();
    assert!(matches!(
        recv(&tid).await,
        Some((Packet::Data { block: 1, .. }, _))
    ));
    tid.send_to(&ack_datagram(1), peer).await.unwrap();
    expect_ack(&client, 1).await;
    assert!(lb.wait_idle().await, "the write is complete");

    // The client did not get that ACK (as far as it knows) and sends its last block again.
    client.send_to(&data(1, 10), session).await.unwrap();
    expect_ack(&client, 1).await;
    assert!(
        silent_for(&tid, Duration::from_millis(200)).await,
        "the backend, done already, is not bothered"
    );
}

#[tokio::test]
async fn a_client_that_went_silent_gets_a_few_retransmissions_then_the_session_ends() {
    let backend = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "", &[backend.addr()]);
    let lb = Tftplb::start("idle_timeout = \"60s\"", &pools).await;
    let client = client_socket().await;
    client.send_to(&rrq("f", &[]), lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;
    tid.send_to(&data(1, 512), peer).await.unwrap();
    expect_ack(&tid, 1).await;
    tid.send_to(&data(2, 10), peer).await.unwrap(); // the whole file: the backend is done
    expect_ack(&tid, 2).await;
    let session = expect_data(&client, 1).await;
    client.send_to(&ack_datagram(1), session).await.unwrap();
    expect_data(&client, 2).await;
    // The client answered once, then went silent: one copy per second, five of them.
    let mut copies = 0;
    while !silent_for(&client, Duration::from_millis(2500)).await {
        copies += 1;
        assert!(copies <= 5, "more than five retransmissions");
    }
    assert_eq!(copies, 5, "five retransmissions");
    assert!(
        lb.wait_idle().await,
        "the session ended long before the idle timeout"
    );
}

/// A request whose source never answers (a spoofed one, naming someone else's address) makes
/// the relay send little there: the first block, one more copy, and the session ends after two
/// of the client's retransmission intervals.
#[tokio::test]
async fn a_client_that_never_answers_gets_block_1_and_one_copy_then_the_session_ends() {
    let backend = FakeBackend::new().await;
    let pools = common::pool_toml("p", "round-robin", "", &[backend.addr()]);
    let lb = Tftplb::start("idle_timeout = \"60s\"", &pools).await;
    let client = client_socket().await;
    client.send_to(&rrq("f", &[]), lb.addr).await.unwrap();
    let (_, peer, tid) = backend.accept().await;
    tid.send_to(&data(1, 10), peer).await.unwrap(); // the whole file: the backend is done
    expect_ack(&tid, 1).await;
    let mut got = 0;
    while !silent_for(&client, Duration::from_millis(2500)).await {
        got += 1;
        assert!(got <= 3, "more than the first reply and two more");
    }
    assert_eq!(got, 2, "block 1 and one copy");
    assert!(lb.wait_idle().await, "the session ended");
}
