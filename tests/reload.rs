//! Hot reload: an invalid file changes nothing; a valid one changes what new sessions get while
//! a transfer running across the reload finishes on the old configuration; listeners are added
//! and removed. And a shutdown lets running transfers finish.

mod common;

use std::time::Duration;

use common::Tftplb;
use common::faulty::{Fault, FaultyHandler};
use tftplb::demo::pseudo_random_bytes;
use tftplb::tftp::client::{self, ClientConfig};

const FILE: &str = "f.bin";

fn config(listen: &[&str], backends: &[std::net::SocketAddr]) -> String {
    let listen: Vec<String> = listen.iter().map(|l| format!("\"{l}\"")).collect();
    let pools = common::pool_toml("p", "round-robin", "", backends);
    format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [{}]\n{pools}",
        listen.join(", ")
    )
}

async fn served_by(lb: std::net::SocketAddr) -> String {
    let (data, _) = client::fetch(lb, "who", &ClientConfig::default())
        .await
        .expect("fetch");
    String::from_utf8(data).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_a_bad_file_applies_a_good_one_and_running_transfers_finish() {
    let slow_data = pseudo_random_bytes(200_000, 3);
    let a = FaultyHandler::new(
        &[("who", b"a".to_vec()), (FILE, slow_data.clone())],
        Fault::Slow(Duration::from_millis(1)),
    )
    .start()
    .await;
    let b = FaultyHandler::new(&[("who", b"b".to_vec())], Fault::None)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tftplb.toml");
    std::fs::write(&path, config(&["127.0.0.1:0"], &[a.address])).unwrap();
    let (lb, control) = Tftplb::start_file(&path).await;
    assert_eq!(served_by(lb.addr).await, "a");
    // A transfer that runs across the reloads.
    let addr = lb.addr;
    let running =
        tokio::spawn(async move { client::fetch(addr, FILE, &ClientConfig::default()).await });
    tokio::time::sleep(Duration::from_millis(50)).await;

    std::fs::write(&path, "[admin]\nlisten = \"127.0.0.1:0\"\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"nonsense\"\n").unwrap();
    let e = control.reload().unwrap_err();
    assert!(e.to_string().contains("pool[0].backend[0].address"), "{e}");
    assert_eq!(served_by(lb.addr).await, "a", "still the old configuration");

    std::fs::write(&path, config(&["127.0.0.1:0"], &[b.address])).unwrap();
    control.reload().expect("valid reload");
    assert_eq!(
        served_by(lb.addr).await,
        "b",
        "new sessions use the new pool"
    );

    let (data, _) = running.await.unwrap().expect("transfer across the reload");
    assert_eq!(data, slow_data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners() {
    let a = FaultyHandler::new(&[("who", b"a".to_vec())], Fault::None)
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tftplb.toml");
    std::fs::write(&path, config(&["127.0.0.1:0"], &[a.address])).unwrap();
    let (lb, control) = Tftplb::start_file(&path).await;
    let first = lb.addr;
    std::fs::write(&path, config(&["127.0.0.2:0"], &[a.address])).unwrap();
    control.reload().expect("reload");
    let addrs = control.tftp_addrs();
    assert_eq!(addrs.len(), 1);
    assert_eq!(addrs[0].ip().to_string(), "127.0.0.2");
    assert_eq!(served_by(addrs[0]).await, "a");
    let cfg = ClientConfig {
        retries: 1,
        retry_timeout: Duration::from_millis(200),
        ..ClientConfig::default()
    };
    assert!(
        client::fetch(first, "who", &cfg).await.is_err(),
        "the removed listener is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_running_transfer_finish() {
    let data = pseudo_random_bytes(150_000, 4);
    let a = FaultyHandler::new(
        &[(FILE, data.clone())],
        Fault::Slow(Duration::from_millis(1)),
    )
    .start()
    .await;
    let lb = Tftplb::start(
        "shutdown_grace = \"20s\"",
        &common::pool_toml("p", "round-robin", "", &[a.address]),
    )
    .await;
    let addr = lb.addr;
    let running =
        tokio::spawn(async move { client::fetch(addr, FILE, &ClientConfig::default()).await });
    for _ in 0..400 {
        if lb.frontend.live_sessions() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(lb.frontend.live_sessions(), 1, "the transfer never started");
    let stopping = tokio::spawn(lb.stop());
    let (got, _) = running.await.unwrap().expect("transfer during shutdown");
    assert_eq!(got, data);
    stopping.await.unwrap();
}

/// The port-69 socket is read by a thread of its own. When the runtime serving tftplb shuts
/// down (a test's runtime at its end, a program embedding tftplb), that thread must stop and let
/// the port go, not keep receiving for a server that is gone.
#[test]
fn a_runtime_shutdown_stops_the_listener_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pools = common::pool_toml("p", "round-robin", "", &["127.0.0.1:9".parse().unwrap()]);
    let lb = runtime.block_on(Tftplb::start("", &pools));
    let addr = lb.addr;
    assert!(
        std::net::UdpSocket::bind(addr).is_err(),
        "tftplb holds {addr}"
    );
    drop(runtime);
    drop(lb);
    let patience = std::time::Instant::now() + Duration::from_secs(30);
    while std::net::UdpSocket::bind(addr).is_err() {
        assert!(
            std::time::Instant::now() < patience,
            "{addr} still bound: the listener thread outlived its server"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
