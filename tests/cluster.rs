//! Two front ends with `[cluster]` session sync, as processes on loopback: a transfer in
//! flight through one of them finishes through the other when the first is killed with
//! SIGKILL, from the same session address, with the right bytes. On loopback both nodes
//! share one machine, so the survivor binds the dead node's session ports once it takes the
//! peer for dead (on two machines it binds them at once, with IP_FREEBIND; README "Two front
//! ends"). Records that are forged, replayed, reflected or from strangers are refused and
//! counted.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::capped::CappedServer;
use common::daemon::Daemon;
use common::{RealClient, TftpdHpa};
use tftplb::cluster::record::{Body, Record};
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::protocol::options::Negotiated;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request, ack_datagram};
use tftplb::tftp::client::{self, ClientConfig};
use tftplb::tftp::resumable::Resumable;
use tftplb::tftp::sync::{SyncEvent, SyncKey, Synced};

const KEY: &str = "a shared key of the pair, 32 b\n";

/// A node's configuration: its TFTP and admin listeners, its sync address and peers.
fn write_config(dir: &Path, name: &str, backends: &[SocketAddr], peers: &[SocketAddr]) -> PathBuf {
    let key = dir.join("cluster.key");
    std::fs::write(&key, KEY).unwrap();
    let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
    let mut text = format!(
        "[tftp]\nlisten = [\"127.0.0.1:0\"]\nread_ahead = 0\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [cluster]\nlisten = \"127.0.0.1:0\"\npeers = [{}]\nkey_file = \"{}\"\n\
         heartbeat = \"100ms\"\npeer_dead_after = \"500ms\"\n\
         [[pool]]\nname = \"boot\"\nresume = true\n",
        peers.join(", "),
        key.display()
    );
    for b in backends {
        text.push_str(&format!("[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A running node and what it listens on.
struct Node {
    daemon: Daemon,
    tftp: SocketAddr,
    admin: SocketAddr,
    sync: SocketAddr,
}

/// Two nodes, each the other's peer, both up for each other. A starts without a peer (its
/// sync port is not known before it runs), B with A; A learns of B by a reload.
fn pair(dir: &Path, backends: &[SocketAddr]) -> (Node, Node) {
    let a_cfg = write_config(dir, "a", backends, &[]);
    let a = start(&a_cfg);
    let b = start(&write_config(dir, "b", backends, &[a.sync]));
    write_config(dir, "a", backends, &[b.sync]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(a.daemon.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    a.daemon.wait_for_line("cluster peer up");
    b.daemon.wait_for_line("cluster peer up");
    (a, b)
}

fn start(cfg: &Path) -> Node {
    let daemon = Daemon::run(cfg);
    let tftp = daemon.address("tftp");
    let admin = daemon.address("admin");
    let sync = daemon.address("cluster sync");
    Node {
        daemon,
        tftp,
        admin,
        sync,
    }
}

fn sigkill(node: &Node) {
    sigkill_pid(node.daemon.pid());
}

fn sigkill_pid(pid: u32) {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
}

/// The body of `GET path` on the admin listener.
fn get(admin: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split("\r\n\r\n").nth(1).unwrap().to_string()
}

/// `GET /api/status`'s `cluster` part.
fn cluster_status(admin: SocketAddr) -> serde_json::Value {
    let status: serde_json::Value = serde_json::from_str(&get(admin, "/api/status")).unwrap();
    status["cluster"].clone()
}

fn rrq(file: &str, blksize: &str) -> Vec<u8> {
    let mut options = Options::default();
    options.push("blksize", blksize);
    Packet::Rrq(Request {
        filename: file.into(),
        mode: Mode::Octet,
        options,
    })
    .encode()
}

/// The next DATA from `session` (or, with `None`, from anyone: it names the session), its
/// ACK retransmitted every 500 ms as a client does, for up to 30 s.
fn next_data(
    sock: &UdpSocket,
    session: Option<SocketAddr>,
    resend: &[u8],
) -> (u16, Vec<u8>, SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = vec![0u8; 2048];
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    while Instant::now() < deadline {
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if session.is_none_or(|s| s == from) => {
                match Packet::decode(&buf[..n]).unwrap() {
                    Packet::Data { block, data } => return (block, data, from),
                    Packet::Oack(_) => return (0, Vec::new(), from),
                    other => panic!("client got {other:?}"),
                }
            }
            Ok(_) => {}
            Err(_) => {
                let to = session.expect("the request's answer came");
                sock.send_to(resend, to).unwrap();
            }
        }
    }
    panic!("no DATA within 30 s");
}

/// A folder with boot.img (600,000 bytes from `seed`) that two tftpd-hpa serve.
struct Served {
    dir: tempfile::TempDir,
    content: Vec<u8>,
    backends: [TftpdHpa; 2],
    addrs: Vec<SocketAddr>,
}

fn served(seed: u64) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let content = pseudo_random_bytes(600_000, seed);
    std::fs::write(dir.path().join("boot.img"), &content).unwrap();
    let backends = [TftpdHpa::start(dir.path()), TftpdHpa::start(dir.path())];
    let addrs = backends.iter().map(|b| b.address).collect();
    Served {
        dir,
        content,
        backends,
        addrs,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_finishes_through_the_peer_when_its_front_end_is_killed() {
    // The backends live as long as the test: bound, not dropped.
    let Served {
        dir,
        content,
        backends: _backends,
        addrs,
    } = served(7);
    let (a, b) = pair(dir.path(), &addrs);

    let (client, session) = request_through(a.tftp);
    // Block 100 acknowledged, and synced by then (the start went out with ACK 0): the active
    // front end dies with the transfer in flight.
    let got = lock_step(&client, session, |acked| {
        if acked == 100 {
            sigkill(&a);
        }
    });
    assert_eq!(common::sha256(&got), common::sha256(&content));
    b.daemon.wait_for_line("taking over a synced transfer");
    let status = resumed(&b, 1);
    assert_eq!(status["sessions_taken_over"], 1, "{status}");
    assert_eq!(status["sessions_failed"], 0, "{status}");
}

/// A client socket whose request for boot.img (blksize 1024) `server` answered: the socket,
/// and the session's address (the OACK's source).
fn request_through(server: SocketAddr) -> (UdpSocket, SocketAddr) {
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    let request = rrq("boot.img", "1024");
    client.send_to(&request, server).unwrap();
    let (_, _, session) = next_data(&client, None, &request);
    (client, session)
}

/// Downloads the rest in lock-step from `session` (its OACK taken), as a client does, its ACK
/// retransmitted while nothing comes; `after(block)` runs once, as the ACK of each block goes
/// out. The bytes received.
fn lock_step(client: &UdpSocket, session: SocketAddr, mut after: impl FnMut(u16)) -> Vec<u8> {
    let mut got = Vec::new();
    let mut acked = 0u16;
    let mut told = None;
    loop {
        let ack = ack_datagram(acked);
        client.send_to(&ack, session).unwrap();
        if told != Some(acked) {
            after(acked);
            told = Some(acked);
        }
        let (block, data, _) = next_data(client, Some(session), &ack);
        if block != acked.wrapping_add(1) {
            continue; // a repeat of a block already taken
        }
        got.extend_from_slice(&data);
        acked = block;
        if data.len() < 1024 {
            client.send_to(&ack_datagram(acked), session).unwrap();
            return got;
        }
    }
}

/// A node that joins (or comes back) while a transfer runs on its peer is told of it, and
/// can carry it on when the peer dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_comes_up_mid_transfer_is_told_of_it() {
    let Served {
        dir,
        content,
        backends: _backends,
        addrs,
    } = served(5);
    let a_cfg = write_config(dir.path(), "a", &addrs, &[]);
    let a = start(&a_cfg);
    let (client, session) = request_through(a.tftp);
    let mut b = None;
    let got = lock_step(&client, session, |acked| match acked {
        // Node B starts now, and A learns of it by a reload.
        20 => {
            let node = start(&write_config(dir.path(), "b", &addrs, &[a.sync]));
            write_config(dir.path(), "a", &addrs, &[node.sync]);
            let pid = nix::unistd::Pid::from_raw(a.daemon.pid() as i32);
            nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
            a.daemon
                .wait_for_line("telling a peer that came up of the running sessions");
            b = Some(node);
        }
        100 => sigkill(&a),
        _ => {}
    });
    assert_eq!(common::sha256(&got), common::sha256(&content));
    let status = resumed(b.as_ref().unwrap(), 1);
    assert_eq!(status["sessions_failed"], 0, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_that_cannot_be_carried_on_gets_an_error_with_the_reason() {
    let Served {
        dir,
        mut backends,
        addrs,
        ..
    } = served(8);
    let (a, b) = pair(dir.path(), &addrs);
    let (client, session) = request_through(a.tftp);
    for block in 0..10u16 {
        let ack = ack_datagram(block);
        client.send_to(&ack, session).unwrap();
        next_data(&client, Some(session), &ack);
    }
    // The front end and both backends die: the survivor has nobody to carry the transfer on.
    sigkill(&a);
    backends.iter_mut().for_each(TftpdHpa::kill);
    let ack = ack_datagram(10);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut buf = [0u8; 1500];
    let message = loop {
        assert!(Instant::now() < deadline, "no ERROR within 30 s");
        client.send_to(&ack, session).unwrap();
        match client.recv_from(&mut buf) {
            Ok((n, from)) if from == session => match Packet::decode(&buf[..n]).unwrap() {
                Packet::Error { code: 0, message } => break message,
                other => panic!("expected an ERROR, got {other:?}"),
            },
            _ => {}
        }
    };
    assert!(message.contains("no other could take over"), "{message}");
    let status = counted(&b, "sessions_failed", 1);
    assert_eq!(status["sessions_taken_over"], 1, "{status}");
}

/// The cluster status of `node` once it counts `n` transfers resumed to their end (a
/// session's task reports just after its client's last ACK).
fn resumed(node: &Node, n: u64) -> serde_json::Value {
    counted(node, "sessions_resumed", n)
}

/// The cluster status of `node` once its `what` is `n` (bounded: 10 s).
fn counted(node: &Node, what: &str, n: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster_status(node.admin);
        if status[what] == n {
            return status;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_finish_through_the_peer_when_the_front_end_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let content = pseudo_random_bytes(1 << 20, 9);
    // Slow backends (a millisecond per block) keep the transfers in flight at the kill.
    let mut servers = Vec::new();
    for _ in 0..2 {
        let s = CappedServer::start("boot.img", content.clone(), 16, Duration::from_millis(1));
        servers.push(s.await);
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.address).collect();
    let (a, b) = pair(dir.path(), &addrs);
    let clients = [
        RealClient::Curl { blksize: 1468 },
        // Not busybox or atftp here: they may give up on the ICMP port unreachable an ACK gets
        // while the dead node's port is not bound yet, which only happens with both nodes on
        // one machine (across machines the survivor has the port bound already, and
        // tests/two_front_ends.rs runs them there).
        RealClient::TftpHpa,
    ];
    let downloads: Vec<_> = clients
        .iter()
        .map(|&c| tokio::spawn(c.get(a.tftp, "boot.img")))
        .collect();
    // Every transfer has had its first ACKs (so it is synced) well before this.
    tokio::time::sleep(Duration::from_millis(800)).await;
    sigkill(&a);
    for (c, d) in clients.iter().zip(downloads) {
        let data = d.await.unwrap().unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(common::sha256(&data), common::sha256(&content), "{c:?}");
    }
    let status = resumed(&b, 2);
    assert_eq!(status["sessions_failed"], 0, "{status}");
}

/// The project's client with windowsize 8 and 512-byte blocks, its front end killed past
/// the rollover: the survivor places the client's 16-bit ACK after the synced position (the
/// progress records), catches a windowed backend transfer up to it and carries it on to the
/// end. (Not atftp here: on one machine the killed node's ports answer ICMP port unreachable
/// until the survivor binds them, and atftp may give up on that; tests/two_front_ends.rs runs
/// atftp with windowsize 8 across machines, where nothing answers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_windowed_transfer_past_the_rollover_finishes_through_the_peer() {
    let dir = tempfile::tempdir().unwrap();
    let files = dir.path().join("files");
    std::fs::create_dir(&files).unwrap();
    // 80,000 blocks of 512 bytes: the block numbers roll over at 65,536.
    let content = pseudo_random_bytes(80_000 * 512 + 100, 11);
    std::fs::write(files.join("big.img"), &content).unwrap();
    let mut servers = Vec::new();
    for _ in 0..2 {
        let local = "127.0.0.1:0".parse().unwrap();
        servers.push(EmbeddedServer::start(&files, local).await.unwrap());
    }
    let addrs: Vec<_> = servers.iter().map(|s| s.address).collect();
    let (a, b) = pair(dir.path(), &addrs);
    // As patient as PXE firmware (EDK2 tries 6 × 4 s; iPXE backs off from 0.25 s to 10 s, ~16 s
    // in all): before the client's next block the survivor catches a new backend transfer up
    // through 70,000 blocks, which in this debug build on a busy machine took 5 to 10 s, more
    // than the default client's 5 retries of 1 s.
    let cfg = ClientConfig {
        windowsize: Some(8),
        retries: 24,
        ..ClientConfig::default()
    };
    // Killed once the client holds 70,000 blocks: past the rollover, and past a progress
    // record there.
    let a_pid = a.daemon.pid();
    let mut sink = KillAt {
        data: Vec::new(),
        at: 70_000 * 512,
        kill: Some(Box::new(move || sigkill_pid(a_pid))),
    };
    let transfer = client::download(a.tftp, "big.img", &cfg, &mut sink)
        .await
        .unwrap_or_else(|e| {
            let log = b.daemon.lines_so_far().join("\n");
            panic!("the download finishes through the peer: {e:?}; the survivor's log:\n{log}")
        });
    assert!(sink.kill.is_none(), "the front end was killed mid-transfer");
    assert_eq!(transfer.negotiated.windowsize, 8);
    assert_eq!(sink.data.len(), content.len());
    assert_eq!(common::sha256(&sink.data), common::sha256(&content));
    let status = resumed(&b, 1);
    assert_eq!(status["sessions_failed"], 0, "{status}");
}

/// A download's sink that runs `kill` once it holds `at` bytes.
struct KillAt<'a> {
    data: Vec<u8>,
    at: usize,
    kill: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl tokio::io::AsyncWrite for KillAt<'_> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.data.extend_from_slice(buf);
        if self.data.len() >= self.at
            && let Some(kill) = self.kill.take()
        {
            kill();
        }
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A session told twice (a resync after a blip between the peers) stays bound: the client's
/// next ACK still reaches the node that holds it. (Before, the second Started rebound the
/// address while the first socket was still open, failed, and left it unbound.)
#[test]
fn a_session_told_twice_stays_bound_for_its_client() {
    let dir = tempfile::tempdir().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    // No backend answers there: the takeover ends with an ERROR the client can see.
    let node = start(&write_config(
        dir.path(),
        "n",
        &["127.0.0.1:9".parse().unwrap()],
        &[peer.local_addr().unwrap()],
    ));
    let client = UdpSocket::bind("127.0.0.1:0").unwrap();
    // The session's address: a port the kernel had free a moment ago.
    let session = UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let started = Box::new(Synced {
        key: SyncKey {
            client: client.local_addr().unwrap(),
            session,
        },
        contacted: node.tftp,
        pool: "boot".into(),
        backend: "127.0.0.1:9".parse().unwrap(),
        request: rrq("boot.img", "1024").into(),
        state: Resumable {
            negotiated: Negotiated {
                blksize: 1024,
                ..Negotiated::default()
            },
            had_oack: true,
            wrap_to_one: false,
            wrap_known: false,
            acked: 10,
        },
    });
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut seq = 0;
    let mut tell = |body: Body| {
        seq += 1;
        let record = Record {
            seq,
            sent_ms: now_ms,
            sender: peer.local_addr().unwrap(),
            body,
        };
        peer.send_to(&record.encode(KEY.trim().as_bytes()), node.sync)
            .unwrap();
    };
    tell(Body::Event(SyncEvent::Started(started.clone())));
    tell(Body::Event(SyncEvent::Started(started)));
    counted(&node, "records_received", 2);
    // The peer stays alive (heartbeats): nothing rebinds for a dead peer meanwhile.
    let mut buf = [0u8; 1500];
    client
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let message = loop {
        assert!(
            Instant::now() < deadline,
            "the session's address was not bound"
        );
        tell(Body::Heartbeat);
        client.send_to(&ack_datagram(11), session).unwrap();
        if let Ok((n, from)) = client.recv_from(&mut buf) {
            assert_eq!(from, session, "the answer comes from the session's address");
            match Packet::decode(&buf[..n]).unwrap() {
                Packet::Error { message, .. } => break message,
                other => panic!("expected an ERROR, got {other:?}"),
            }
        }
    };
    assert!(message.contains("no other could take over"), "{message}");
    let status = counted(&node, "sessions_taken_over", 1);
    assert_eq!(status["sessions_synced"], 0, "{status}");
}

#[test]
fn forged_replayed_reflected_and_foreign_records_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let node = start(&write_config(
        dir.path(),
        "n",
        &["127.0.0.1:9".parse().unwrap()],
        &[peer.local_addr().unwrap()],
    ));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let key = KEY.trim().as_bytes();
    let from_peer = peer.local_addr().unwrap();
    let beat = |seq, sent_ms, sender| {
        Record {
            seq,
            sent_ms,
            sender,
            body: Body::Heartbeat,
        }
        .encode(key)
    };
    let good = beat(10, now_ms, from_peer);
    peer.send_to(&good, node.sync).unwrap();
    node.daemon.wait_for_line("cluster peer up");
    peer.send_to(&good, node.sync).unwrap(); // replayed
    peer.send_to(&beat(11, now_ms - 3_600_000, from_peer), node.sync)
        .unwrap(); // captured an hour ago
    let mut forged = beat(12, now_ms, from_peer);
    *forged.last_mut().unwrap() ^= 1;
    peer.send_to(&forged, node.sync).unwrap();
    stranger
        .send_to(&beat(13, now_ms, from_peer), node.sync)
        .unwrap();
    // The node's own record reflected back to it from the peer's address.
    peer.send_to(&beat(14, now_ms, node.sync), node.sync)
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let status = cluster_status(node.admin);
        if status["records_rejected"] == 5 {
            assert_eq!(status["records_received"], 1, "{status}");
            assert_eq!(status["peers"][0]["up"], true, "{status}");
            let page = get(node.admin, "/");
            let peer = peer.local_addr().unwrap().to_string();
            assert!(
                page.contains("<h2>cluster"),
                "the status page shows the cluster"
            );
            assert!(page.contains(&format!("<code>{peer}</code>")), "{page}");
            assert!(page.contains("rejected <b>5</b>"), "{page}");
            break;
        }
        assert!(Instant::now() < deadline, "{status}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
