//! Backends given by host name: every address of the name becomes a backend; when the records
//! change, new sessions follow. The names are served by a tftplb DNS zone in the same test
//! (a second instance), so the test controls the records and their TTL.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Tftplb;
use common::faulty::{Fault, FaultyHandler};
use tftplb::demo::EmbeddedServer;
use tftplb::tftp::client::{self, ClientConfig};

fn dns_zone(ips: &[&str]) -> String {
    let mut t = String::from(
        "[admin]\nenabled = false\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n\
         [[pool]]\nname = \"unused\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n\
         [dns]\nlisten = [\"127.0.0.1:0\"]\nzone = \"test.internal.\"\nttl = \"1s\"\ndegraded_ttl = \"1s\"\n",
    );
    for ip in ips {
        t.push_str(&format!(
            "[[dns.record]]\nname = \"boot\"\ntype = \"A\"\nvalue = \"{ip}\"\n"
        ));
    }
    t
}

/// Two servers on one port, at 127.0.0.1 and 127.0.0.2, saying which they are.
async fn servers() -> (EmbeddedServer, EmbeddedServer, u16) {
    let one = FaultyHandler::new(&[("who", b"one".to_vec())], Fault::None)
        .start()
        .await;
    let port = one.address.port();
    let two = EmbeddedServer::with_handler(
        FaultyHandler::new(&[("who", b"two".to_vec())], Fault::None),
        SocketAddr::from(([127, 0, 0, 2], port)),
    )
    .await
    .expect("the same port on 127.0.0.2");
    (one, two, port)
}

async fn who(lb: SocketAddr) -> Option<String> {
    let cfg = ClientConfig {
        retries: 1,
        retry_timeout: Duration::from_millis(300),
        ..ClientConfig::default()
    };
    client::fetch(lb, "who", &cfg)
        .await
        .ok()
        .map(|(d, _)| String::from_utf8(d).unwrap())
}

/// Polls (bounded: 15 s) until a fetch through `lb` is served by `want`.
async fn wait_served_by(lb: SocketAddr, want: &str) {
    for _ in 0..150 {
        if who(lb).await.as_deref() == Some(want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("never served by {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_backend_follows_its_records() {
    let (_one, _two, port) = servers().await;
    let dir = tempfile::tempdir().unwrap();
    let zone_file = dir.path().join("dns.toml");
    std::fs::write(&zone_file, dns_zone(&["127.0.0.1"])).unwrap();
    let (_dns_lb, dns_control, dns) = Tftplb::start_file_with_dns(&zone_file).await;
    let dns = dns.expect("dns address");

    let lb_file = dir.path().join("lb.toml");
    std::fs::write(
        &lb_file,
        format!(
            "[admin]\nenabled = false\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n\
             [resolver]\nnameservers = [\"{dns}\"]\nmin_ttl = \"200ms\"\nmax_ttl = \"1s\"\n\
             [[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"boot.test.internal.:{port}\"\n"
        ),
    )
    .unwrap();
    let (lb, _control) = Tftplb::start_file(&lb_file).await;
    wait_served_by(lb.addr, "one").await;
    assert_eq!(lb.frontend.runtime().pools[0].backends.len(), 1);

    // The record moves: new sessions follow within a TTL or so.
    std::fs::write(&zone_file, dns_zone(&["127.0.0.2"])).unwrap();
    dns_control.reload().expect("zone reload");
    wait_served_by(lb.addr, "two").await;

    // Two records: both addresses become backends.
    std::fs::write(&zone_file, dns_zone(&["127.0.0.1", "127.0.0.2"])).unwrap();
    dns_control.reload().expect("zone reload");
    for _ in 0..150 {
        if lb.frontend.runtime().pools[0].backends.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let addrs: Vec<_> = lb.frontend.runtime().pools[0]
        .backends
        .iter()
        .map(|b| b.address)
        .collect();
    assert_eq!(addrs.len(), 2, "{addrs:?}");
}

#[test]
fn check_accepts_host_names_and_names_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"pvs01.corp.example:69\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"bad_name:69\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pool[0].backend[0].address"));
}
