//! A hostile network: what one client, one spoofed packet or one odd name can do to everyone
//! else. Each test here sends the attack over real sockets and checks that other clients and
//! the backends are unharmed; each failed before the fix it names.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Tftplb;
use common::faulty::{Fault, FaultyHandler};
use hickory_resolver::proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_resolver::proto::rr::rdata::TSIG;
use hickory_resolver::proto::rr::rdata::tsig::{TsigAlgorithm, TsigError};
use hickory_resolver::proto::rr::{DNSClass, Name, RData, Record, RecordType};
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

/// Reads `file` from `server` in lock-step without options, as a PXE ROM does, from `socket`;
/// `meddle` runs once after block `at` was acknowledged. Strangers' datagrams are ignored.
async fn download_meddled(
    socket: &UdpSocket,
    server: SocketAddr,
    file: &str,
    at: u16,
    meddle: impl AsyncFnOnce(),
) -> Vec<u8> {
    socket.send_to(&rrq(file, &[]), server).await.unwrap();
    let (mut data, mut tid, mut next, mut meddle) = (Vec::new(), None, 1u16, Some(meddle));
    loop {
        let (reply, from) = recv_within(socket, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("stalled at block {next}"));
        if tid.is_some_and(|t| t != from) {
            continue;
        }
        let Ok(Packet::Data {
            block,
            data: payload,
        }) = Packet::decode(&reply)
        else {
            panic!("at block {next}: {:?}", Packet::decode(&reply));
        };
        tid = Some(from);
        if block != next {
            continue;
        }
        data.extend_from_slice(&payload);
        socket
            .send_to(&tftplb::protocol::packet::ack_datagram(block), from)
            .await
            .unwrap();
        if block == at
            && let Some(m) = meddle.take()
        {
            m().await;
        }
        if payload.len() < 512 {
            return data;
        }
        next = next.wrapping_add(1);
    }
}

/// Finding 1: one RRQ from a client's own address and port, identical to its request, while
/// its transfer runs (a spoofed or stray copy). Before, it superseded the live session: the
/// client's blocks stopped and a new transfer from another port began.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_request_does_not_end_a_live_transfer() {
    let big = pseudo_random_bytes(300 * 512 + 99, 3);
    let a = FaultyHandler::new(&[("big.img", big.clone())], Fault::None)
        .start()
        .await;
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
        a.address
    );
    let lb = Tftplb::start("", &pool).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let copy = async || {
        client.send_to(&rrq("big.img", &[]), lb.addr).await.unwrap();
    };
    let data = download_meddled(&client, lb.addr, "big.img", 100, copy).await;
    assert_eq!(common::sha256(&data), common::sha256(&big));
    assert_eq!(
        tftplb::tftp::frontend::FrontendStats::get(&lb.frontend.stats.superseded),
        0
    );
    lb.stop().await;
}

/// The code of the ERROR `socket` receives within 3 s, or what it got instead.
async fn error_code_of(socket: &UdpSocket) -> Result<u16, String> {
    match recv_within(socket, Duration::from_secs(3)).await {
        Some((reply, _)) => match Packet::decode(&reply) {
            Ok(Packet::Error { code, .. }) => Ok(code),
            other => Err(format!("{other:?}")),
        },
        None => Err("no answer".into()),
    }
}

/// A request datagram for a name given as bytes, with `tail` (options) as it is.
fn raw_rrq(name: &[u8], tail: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 1];
    d.extend_from_slice(name);
    d.extend_from_slice(b"\0octet\0");
    d.extend_from_slice(tail);
    d
}

/// Finding 4: a refuse rule on `thin/*` must catch every spelling a Windows boot server reads
/// as that file, and the Windows-only escapes are refused outright. Before, `THIN/x`,
/// `thin\x`, `./thin/x`, `thin//x` (and the escapes) reached the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refuse_rule_cannot_be_walked_around_by_spelling() {
    let a = backend().await;
    let pools = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n\
         [[route]]\nfiles = [\"thin/*\"]\naction = \"refuse\"\n",
        a.address
    );
    let lb = Tftplb::start("", &pools).await;
    let names: &[&[u8]] = &[
        b"thin/x",
        b"/thin/x",
        b"./thin/x",
        b"thin//x",
        b"thin\\x",
        b"\\thin\\x",
        b"thin/./x",
        b"THIN/x",
        b"Thin/X",
        b"thin. /x",
        b".\\THIN\\\\x",
        b"C:\\thin\\x",
        b"\\\\host\\share\\thin\\x",
        b"other/.. /thin/x",
        b"thin/x:stream",
    ];
    for name in names {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(&raw_rrq(name, b""), lb.addr).await.unwrap();
        assert_eq!(
            error_code_of(&client).await,
            Ok(error_code::ACCESS_VIOLATION),
            "{}",
            name.escape_ascii()
        );
    }
    // Other files are still served.
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&raw_rrq(FILE.as_bytes(), b""), lb.addr)
        .await
        .unwrap();
    let (reply, _) = recv_within(&client, Duration::from_secs(3))
        .await
        .expect("an answer");
    assert!(matches!(
        Packet::decode(&reply),
        Ok(Packet::Data { block: 1, .. })
    ));
    lb.stop().await;
}

/// Finding 12: requests a backend would serve must not meet silence. A name that is not UTF-8
/// is relayed as the bytes it is (tftpd-hpa serves it); a trailing option without a value gets
/// ERROR 8. Before, both were dropped as malformed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_bytes_and_odd_options_get_an_answer() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name: &[u8] = b"boot\xff\xfe.img";
    let data = pseudo_random_bytes(3000, 9);
    std::fs::write(dir.path().join(std::ffi::OsStr::from_bytes(name)), &data).unwrap();
    let server = common::TftpdHpa::start(dir.path());
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
        server.address
    );
    let lb = Tftplb::start("", &pool).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&raw_rrq(name, b""), lb.addr).await.unwrap();
    let mut got = Vec::new();
    loop {
        let (reply, from) = recv_within(&client, Duration::from_secs(5))
            .await
            .expect("blocks of the file with a non-UTF-8 name");
        let Ok(Packet::Data { block, data: d }) = Packet::decode(&reply) else {
            panic!("{:?}", Packet::decode(&reply));
        };
        got.extend_from_slice(&d);
        client
            .send_to(&tftplb::protocol::packet::ack_datagram(block), from)
            .await
            .unwrap();
        if d.len() < 512 {
            break;
        }
    }
    assert_eq!(common::sha256(&got), common::sha256(&data));
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let valueless = raw_rrq(FILE.as_bytes(), b"blksize\x001428\x00timeout\x00");
    client.send_to(&valueless, lb.addr).await.unwrap();
    assert_eq!(error_code_of(&client).await, Ok(error_code::OPTION_REFUSED));
    lb.stop().await;
}

/// Finding 14: out of file descriptors, accepted transfers failed (EMFILE on a backend socket,
/// a takeover that could not open one). tftplb under a limit of 160 open files, 48 clients at
/// once: it admits what the limit holds (20 here), leaves the rest unanswered until sessions
/// end, and every client finishes; no session meets EMFILE. Before, the log showed "Too many
/// open files" and the sessions that met it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_file_limit_every_client_finishes() {
    use std::os::unix::process::CommandExt;
    let data = pseudo_random_bytes(64 * 1024, 11);
    let a = FaultyHandler::new(&[("img", data.clone())], Fault::None)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tftplb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[admin]\nenabled = false\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n\
             [limits]\nrate_per_client = 0\nmax_sessions_per_client = 0\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n",
            a.address
        ),
    )
    .unwrap();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tftplb"));
    cmd.args(["run", "--config"])
        .arg(&cfg)
        .env("TFTPLB_LOG", "info");
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            use nix::sys::resource::{Resource, setrlimit};
            setrlimit(Resource::RLIMIT_NOFILE, 160, 160).map_err(std::io::Error::from)
        });
    }
    let child = common::daemon::Daemon::spawn(cmd, common::daemon::Output::Stderr);
    let addr = child.address("tftp");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.pid())).unwrap();
    let files = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert!(files.contains(" 160 "), "the limit did not hold: {files}");
    let patient = tftplb::tftp::client::ClientConfig {
        // A PXE ROM's patience: EDK2 retries for 24 s, iPXE longer.
        retry_timeout: Duration::from_secs(1),
        retries: 30,
        ..Default::default()
    };
    let tasks: Vec<_> = (0..48)
        .map(|_| {
            let cfg = patient.clone();
            tokio::spawn(async move { tftplb::tftp::client::fetch(addr, "img", &cfg).await })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    let log = child.lines_so_far();
    let ended_early: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("outcome=") && !l.contains("completed"))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 48 failed: {failed:?}; sessions that ended before completing: {ended_early:?}",
        failed.len()
    );
    for (got, _) in results.into_iter().flatten() {
        assert_eq!(common::sha256(&got), common::sha256(&data));
    }
    let emfile: Vec<&String> = log
        .iter()
        .filter(|l| l.contains("Too many open files") || l.contains("session socket error"))
        .collect();
    assert!(emfile.is_empty(), "{emfile:?}");
}

// ---- h-dns ----
// The embedded DNS zone on a hostile network: answers that say no more than they must, a
// serial that means something, and a limit on what spoofed queries can make it send.

/// A zone whose balanced name `pvs` answers with pool `pvs`.
const DNS_ZONE: &str = "zone = \"boot.test.\"\n[[dns.name]]\nname = \"pvs\"\npool = \"pvs\"\n";

/// Pool `pvs`: 127.0.0.2, .3 and .4 on port 69 (never probed, so up), and `extra` backends.
fn pvs_pool(extra: &[&str]) -> String {
    let mut t = String::from("[[pool]]\nname = \"pvs\"\n");
    let v4 = (2..=4).map(|i| format!("127.0.0.{i}:69"));
    for a in v4.chain(extra.iter().map(|a| a.to_string())) {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{a}\"\n"));
    }
    t
}

/// [`pvs_pool`] and a pool `other` (127.0.0.9) that the zone does not serve.
fn dns_pools() -> String {
    pvs_pool(&[]) + "[[pool]]\nname = \"other\"\n[[pool.backend]]\naddress = \"127.0.0.9:69\"\n"
}

/// A query for `name` `qtype` with opcode `op`.
fn dns_query(op: OpCode, name: &str, qtype: RecordType) -> Message {
    let mut m = Message::new(0x4242, MessageType::Query, op);
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

/// Sends `query` from `socket` and decodes the first answer within 2 s.
async fn dns_exchange(socket: &UdpSocket, dns: SocketAddr, query: &Message) -> Option<Message> {
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let (bytes, _) = recv_within(socket, Duration::from_secs(2)).await?;
    Some(Message::from_vec(&bytes).expect("the answer decodes"))
}

async fn dns_ask(dns: SocketAddr, query: &Message) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    dns_exchange(&socket, dns, query)
        .await
        .unwrap_or_else(|| panic!("no answer to {query:?}"))
}

/// The zone's SOA serial, asked over UDP.
async fn soa_serial(dns: SocketAddr) -> u32 {
    let answer = dns_ask(
        dns,
        &dns_query(OpCode::Query, "boot.test.", RecordType::SOA),
    )
    .await;
    match answer.answers.first().map(|r| &r.data) {
        Some(RData::SOA(soa)) => soa.serial,
        other => panic!("no SOA: {other:?}"),
    }
}

/// Finding 13: the SOA serial changes only when the zone's content does. Before, every
/// rebuild (each health event, even of a pool the zone does not serve, each reload, the 30 s
/// safety rebuild) took a new serial from the clock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soa_serial_moves_only_when_the_zone_changes() {
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), DNS_ZONE).await;
    let first = soa_serial(dns).await;
    // A clock serial has a one-second grain: let it move on.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let pools = &lb.frontend.runtime().pools;
    // A health event that changes nothing in the zone: a backend of a pool it does not serve.
    pools[1].backends[0]
        .state
        .set_admin("127.0.0.9:69", tftplb::health::AdminState::Disabled);
    for _ in 0..10 {
        assert_eq!(soa_serial(dns).await, first, "nothing in the zone changed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A change of the balanced name's answer gives a greater serial.
    pools[0].backends[1]
        .state
        .set_admin("127.0.0.3:69", tftplb::health::AdminState::Disabled);
    let mut now = first;
    for _ in 0..100 {
        now = soa_serial(dns).await;
        if now != first {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(now > first, "serial {first} -> {now} after a health change");
    lb.stop().await;
}

/// Finding 13: a query signed with a TSIG key the zone does not have gets NOTAUTH with an
/// unsigned BADKEY TSIG, as from NSD and Knot (RFC 8945 §5.2.1). Before, it was answered as
/// if unsigned, so a client could not tell its signature had not been checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_signed_with_an_unknown_key_gets_notauth_badkey() {
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), DNS_ZONE).await;
    let mut query = dns_query(OpCode::Query, "pvs.boot.test.", RecordType::A);
    let tsig = TSIG::new(
        TsigAlgorithm::HmacSha256,
        1_796_000_000,
        300,
        vec![0x5a; 32],
        query.metadata.id,
        None,
        Vec::new(),
    );
    let mut record = Record::from_rdata(Name::from_ascii("nokey.").unwrap(), 0, RData::TSIG(tsig));
    record.dns_class = DNSClass::ANY;
    query.add_additional(record);
    let answer = dns_ask(dns, &query).await;
    assert_eq!(answer.metadata.response_code, ResponseCode::NotAuth);
    assert!(answer.answers.is_empty(), "{answer:?}");
    let last = answer.additionals.last().expect("a TSIG in the answer");
    let RData::TSIG(tsig) = &last.data else {
        panic!("not a TSIG: {last:?}");
    };
    assert_eq!(last.name.to_ascii(), "nokey.");
    assert_eq!(tsig.error, Some(TsigError::BadKey));
    assert!(tsig.mac.is_empty(), "unsigned");
    assert_eq!(tsig.time, 1_796_000_000);
    // The same query unsigned is answered.
    let plain = dns_query(OpCode::Query, "pvs.boot.test.", RecordType::A);
    assert_eq!(dns_ask(dns, &plain).await.answers.len(), 3);
    lb.stop().await;
}

/// Finding 13: NOTIFY, UPDATE and unassigned opcodes get NOTIMP, a bare header that claims
/// nothing of the request: no RD, CD, AD or TC. Before, RD and CD were echoed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_opcodes_get_notimp_without_the_request_flags() {
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), DNS_ZONE).await;
    for op in [OpCode::Notify, OpCode::Update, OpCode::Unknown(3)] {
        let mut query = dns_query(op, "boot.test.", RecordType::SOA);
        let m = &mut query.metadata;
        m.recursion_desired = true;
        m.checking_disabled = true;
        m.authentic_data = true;
        m.truncation = true;
        let answer = dns_ask(dns, &query).await;
        let m = &answer.metadata;
        assert_eq!(m.response_code, ResponseCode::NotImp, "{op:?}");
        assert_eq!((m.id, m.op_code), (query.metadata.id, op));
        assert!(
            !(m.recursion_desired || m.checking_disabled || m.authentic_data || m.truncation),
            "{op:?}: flags {}",
            m.flags()
        );
        assert!(answer.queries.is_empty() && answer.answers.is_empty());
    }
    lb.stop().await;
}

/// The size of the answer to `query` from `dns`, and the answer.
async fn dns_sized(dns: SocketAddr, query: &Message) -> (usize, Message) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query.to_vec().unwrap(), dns).await.unwrap();
    let (bytes, _) = recv_within(&socket, Duration::from_secs(2))
        .await
        .unwrap_or_else(|| panic!("no answer to {query:?}"));
    (bytes.len(), Message::from_vec(&bytes).unwrap())
}

/// Finding 9: ANY gets one RRset (RFC 8482), so a spoofed ANY makes the zone send no more than
/// an A query does. Before, it got every RRset of the name: A and AAAA of a balanced name
/// with backends of both families, SOA and NS at the apex.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_is_answered_with_one_rrset() {
    let pools = pvs_pool(&["[::1]:69"]);
    let (lb, dns) = Tftplb::start_with_dns("", &pools, DNS_ZONE).await;
    let (a_size, a) = dns_sized(
        dns,
        &dns_query(OpCode::Query, "pvs.boot.test.", RecordType::A),
    )
    .await;
    assert_eq!(a.answers.len(), 3);
    let (any_size, any) = dns_sized(
        dns,
        &dns_query(OpCode::Query, "pvs.boot.test.", RecordType::ANY),
    )
    .await;
    assert_eq!(any.metadata.response_code, ResponseCode::NoError);
    let types: Vec<RecordType> = any.answers.iter().map(|r| r.record_type()).collect();
    assert_eq!(types, [RecordType::A; 3], "one RRset, the addresses");
    assert!(any_size <= a_size, "ANY {any_size} B, A {a_size} B");
    let (_, apex) = dns_sized(
        dns,
        &dns_query(OpCode::Query, "boot.test.", RecordType::ANY),
    )
    .await;
    assert_eq!(apex.answers.len(), 1, "{:?}", apex.answers);
    lb.stop().await;
}

/// Sends `n` A queries for the balanced name from a socket on `from` at once; counts the
/// answers in full, the truncated ones (slips), and the queries that got nothing.
async fn dns_burst(dns: SocketAddr, from: &str, n: u16) -> (u16, u16, u16) {
    let socket = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    for id in 0..n {
        let mut q = dns_query(OpCode::Query, "pvs.boot.test.", RecordType::A);
        q.metadata.id = id;
        socket.send_to(&q.to_vec().unwrap(), dns).await.unwrap();
    }
    let (mut full, mut slipped) = (0, 0);
    // Everything that will come comes at once: stop after 500 ms of silence.
    while let Some((bytes, _)) = recv_within(&socket, Duration::from_millis(500)).await {
        let m = Message::from_vec(&bytes).expect("the answer decodes");
        if m.metadata.truncation {
            assert!(m.answers.is_empty(), "a slip carries no records");
            assert_eq!(m.queries.len(), 1, "a slip echoes the question");
            slipped += 1;
        } else {
            assert_eq!(m.answers.len(), 3);
            full += 1;
        }
    }
    (full, slipped, n - full - slipped)
}

fn rrl_zone(rrl: &str) -> String {
    format!("{DNS_ZONE}[dns.rrl]\nrate = 5\nslip = 2\n{rrl}\n")
}

/// Finding 9: with `[dns.rrl]`, a burst above the rate from one source prefix gets `rate`
/// answers, then drops with every second one sent truncated (TC) instead; another /24 is
/// not affected. Before, there was no limit: every spoofed query was answered in full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_gets_drops_and_truncated_slips() {
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), &rrl_zone("")).await;
    let (full, slipped, silent) = dns_burst(dns, "127.0.0.1", 40).await;
    assert!((5..=7).contains(&full), "{full} full answers at rate 5");
    assert!(
        slipped >= 15 && silent >= 15,
        "{slipped} slipped, {silent} dropped"
    );
    assert!(slipped.abs_diff(silent) <= 2, "slip 2: every second one");
    let (full, _, _) = dns_burst(dns, "127.0.1.1", 3).await;
    assert_eq!(full, 3, "another /24 has its own rate");
    lb.stop().await;
}

/// An exempt source (a site resolver) is never limited; its neighbours are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exempt_source_is_never_rate_limited() {
    let zone = rrl_zone("exempt = [\"127.0.0.1\"]");
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), &zone).await;
    assert_eq!(dns_burst(dns, "127.0.0.1", 40).await, (40, 0, 0));
    let (full, _, _) = dns_burst(dns, "127.0.0.2", 40).await;
    assert!(full <= 7, "{full}: the rest of the /24 is limited");
    lb.stop().await;
}

/// In log-only mode nothing is dropped or truncated.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_in_log_only_mode_drops_nothing() {
    let (lb, dns) = Tftplb::start_with_dns("", &dns_pools(), &rrl_zone("log_only = true")).await;
    assert_eq!(dns_burst(dns, "127.0.0.1", 40).await, (40, 0, 0));
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

// ---- h-setup ----

use common::capped::CappedServer;
use common::pool_toml;
use tftplb::tftp::client::{self, ClientConfig};

/// A pool of one backend, not probed.
fn plain_pool(addrs: &[SocketAddr]) -> String {
    pool_toml("p", "round-robin", "", addrs)
}

/// A download of [`FILE`] that must start (and, the file being small, end) within a second,
/// by a client that retries as iPXE does (its backoff starts at 0.25 s).
async fn download_within_a_second(lb: SocketAddr) -> Vec<u8> {
    let cfg = ClientConfig {
        retry_timeout: Duration::from_millis(250),
        ..ClientConfig::default()
    };
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
    let _spoofed = unanswered_requests(lb.addr, |_| "127.0.0.1".into()).await;
    assert_eq!(download_within_a_second(lb.addr).await, content());
    lb.stop().await;
}

/// 16 requests with options to `lb`, the i-th from address `source(i)` (1..=16): each is
/// admitted (its OACK comes back) and never acknowledged. The sockets stay open while held.
async fn unanswered_requests(lb: SocketAddr, source: impl Fn(u8) -> String) -> Vec<UdpSocket> {
    let mut spoofed = Vec::new();
    for i in 1..=16u8 {
        let s = UdpSocket::bind(format!("{}:0", source(i))).await.unwrap();
        let request = rrq(FILE, &[("blksize", "1468"), ("tsize", "0")]);
        s.send_to(&request, lb).await.unwrap();
        recv_within(&s, Duration::from_secs(3)).await.expect("OACK");
        spoofed.push(s);
    }
    spoofed
}

/// Finding 2: unanswered requests from many addresses cannot fill the session table either.
/// Before, 16 of them filled a table of 16 for 30 s and every other request was dropped; now
/// the oldest session whose client has not answered makes room for a new request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_requests_do_not_fill_the_session_table() {
    let a = backend().await;
    let lb = Tftplb::start("max_sessions = 16", &plain_pool(&[a.address])).await;
    let _spoofed = unanswered_requests(lb.addr, |i| format!("127.0.9.{i}")).await;
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
