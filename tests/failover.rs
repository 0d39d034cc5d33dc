//! A backend that fails mid-transfer is replaced without the client noticing: stalls, read
//! failures (ERROR mid-transfer), a killed server, a slow one; lock-step and windowed clients;
//! and a transfer that cannot be resumed ends with a clear ERROR 0.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::faulty::{Fault, FaultyHandler};
use common::{RealClient, Tftplb};
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::tftp::client::{self, ClientConfig, ClientError};

const FILE: &str = "kernel.bin";
const SIZE: usize = 600_000;

fn content() -> Vec<u8> {
    pseudo_random_bytes(SIZE, 42)
}

/// tftplb over [faulty, healthy]: weights make every first try land on the faulty one.
async fn lb_over(faulty: SocketAddr, healthy: SocketAddr, extra_pool_keys: &str) -> Tftplb {
    let tftp = "stall_timeout = \"300ms\"\nsetup_timeout = \"300ms\"";
    let pool = format!(
        "[[pool]]\nname = \"p\"\nbalance = \"weighted\"\n{extra_pool_keys}\n\
         [[pool.backend]]\naddress = \"{faulty}\"\nweight = 1000\n\
         [[pool.backend]]\naddress = \"{healthy}\"\nweight = 1\n"
    );
    Tftplb::start(tftp, &pool).await
}

async fn healthy() -> EmbeddedServer {
    FaultyHandler::new(&[(FILE, content())], Fault::None)
        .start()
        .await
}

fn project_client(windowsize: Option<u16>) -> ClientConfig {
    ClientConfig {
        blksize: Some(1024),
        windowsize,
        tsize: true,
        ..ClientConfig::default()
    }
}

async fn expect_complete(lb: &Tftplb, cfg: &ClientConfig) {
    let (data, _) = client::fetch(lb.addr, FILE, cfg)
        .await
        .expect("transfer through failover");
    assert_eq!(common::sha256(&data), common::sha256(&content()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_backend_is_replaced_mid_transfer() {
    let good = healthy().await;
    for windowsize in [None, Some(8)] {
        let bad = FaultyHandler::new(&[(FILE, content())], Fault::StallAfter(200_000))
            .start()
            .await;
        let lb = lb_over(bad.address, good.address, "").await;
        expect_complete(&lb, &project_client(windowsize)).await;
        assert_eq!(
            lb.sessions_per_backend(),
            vec![1, 1],
            "windowsize {windowsize:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_do_not_notice_a_stall() {
    let good = healthy().await;
    for c in [
        RealClient::Curl { blksize: 1024 },
        RealClient::Atftp {
            blksize: 1024,
            windowsize: 16,
        },
        RealClient::TftpHpa,
    ] {
        let bad = FaultyHandler::new(&[(FILE, content())], Fault::StallAfter(300_000))
            .start()
            .await;
        let lb = lb_over(bad.address, good.address, "").await;
        let data = c
            .get(lb.addr, FILE)
            .await
            .unwrap_or_else(|e| panic!("{c:?}: {e}"));
        assert_eq!(common::sha256(&data), common::sha256(&content()), "{c:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_mid_transfer_is_replaced() {
    let good = healthy().await;
    let bad = FaultyHandler::new(&[(FILE, content())], Fault::FailAfter(100_000))
        .start()
        .await;
    let lb = lb_over(bad.address, good.address, "").await;
    expect_complete(&lb, &project_client(Some(4))).await;
    assert_eq!(
        lb.sessions_per_backend(),
        vec![1, 1],
        "taken over by the second backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_is_replaced_mid_transfer() {
    let good = healthy().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let bad = FaultyHandler::new(&[(FILE, content())], Fault::NotifyAfter(250_000, tx))
        .start()
        .await;
    let lb = lb_over(bad.address, good.address, "").await;
    let killer = async {
        rx.recv().await;
        bad.kill();
    };
    let cfg = project_client(None);
    let fetch = client::fetch(lb.addr, FILE, &cfg);
    let ((data, _), ()) = tokio::join!(async { fetch.await.expect("transfer") }, killer);
    assert_eq!(common::sha256(&data), common::sha256(&content()));
    assert_eq!(
        lb.sessions_per_backend(),
        vec![1, 1],
        "taken over by the second backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_backend_is_not_mistaken_for_a_dead_one() {
    let other = healthy().await;
    let slow = FaultyHandler::new(&[(FILE, content())], Fault::Slow(Duration::from_millis(2)))
        .start()
        .await;
    let lb = lb_over(slow.address, other.address, "").await;
    expect_complete(&lb, &project_client(None)).await;
    assert_eq!(
        lb.sessions_per_backend(),
        vec![1, 0],
        "no failover for a slow backend"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_file_size_on_the_other_backend_fails_the_client_clearly() {
    let bad = FaultyHandler::new(&[(FILE, content())], Fault::StallAfter(100_000))
        .start()
        .await;
    let different = FaultyHandler::new(&[(FILE, pseudo_random_bytes(SIZE + 1, 7))], Fault::None)
        .start()
        .await;
    let lb = lb_over(bad.address, different.address, "").await;
    match client::fetch(lb.addr, FILE, &project_client(None)).await {
        Err(ClientError::Remote { code: 0, message }) => {
            assert!(message.contains("differs"), "{message}")
        }
        other => panic!("expected ERROR 0, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_resume_off_the_client_gets_an_error() {
    let good = healthy().await;
    let bad = FaultyHandler::new(&[(FILE, content())], Fault::FailAfter(100_000))
        .start()
        .await;
    let lb = lb_over(bad.address, good.address, "resume = false").await;
    let cfg = ClientConfig {
        retry_timeout: Duration::from_millis(300),
        retries: 3,
        ..project_client(None)
    };
    assert!(client::fetch(lb.addr, FILE, &cfg).await.is_err());
    assert_eq!(lb.sessions_per_backend(), vec![1, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_with_a_backend_killed_halfway() {
    let data = content();
    let servers = [healthy().await, healthy().await, healthy().await];
    let addrs: Vec<_> = servers.iter().map(|s| s.address).collect();
    let tftp = "stall_timeout = \"300ms\"\nsetup_timeout = \"300ms\"";
    let lb = Tftplb::start(tftp, &common::pool_toml("p", "round-robin", "", &addrs)).await;
    let expected = common::sha256(&data);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let server = lb.addr;
        let cfg = project_client(if i % 2 == 0 { Some(4) } else { None });
        tasks.spawn(async move { client::fetch(server, FILE, &cfg).await });
        if i == 100 {
            servers[1].kill();
        }
        tokio::task::yield_now().await;
    }
    let mut failed = Vec::new();
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            Ok((d, _)) if common::sha256(&d) == expected => {}
            Ok(_) => failed.push("wrong sha256".to_string()),
            Err(e) => failed.push(e.to_string()),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of 200 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(lb.wait_idle().await);
}
