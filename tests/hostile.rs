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
