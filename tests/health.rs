//! Active probes with real downloads: a killed backend goes down after `fall` failed probes and
//! gets no new sessions; it comes back after `rise`; a backend whose probe file differs from the
//! majority is excluded; with every backend down the pool refuses or fails open as configured.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::Tftplb;
use common::faulty::{Fault, FaultyHandler};
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::health::{AdminState, Health};
use tftplb::tftp::client::{self, ClientConfig, ClientError};

const PROBE: &str = "ARDBP32.BIN";

fn probe_file() -> Vec<u8> {
    pseudo_random_bytes(9728, 1)
}

async fn backend(content: Vec<u8>) -> EmbeddedServer {
    FaultyHandler::new(&[(PROBE, content)], Fault::None)
        .start()
        .await
}

fn health_pool(addrs: &[SocketAddr], extra: &str) -> String {
    let keys = format!(
        "{extra}\n[pool.health]\nfile = \"{PROBE}\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 2\nfall = 2\n"
    );
    // [pool.health] must follow the pool's own keys and precede its backends.
    let mut t = format!("[[pool]]\nname = \"p\"\nbalance = \"round-robin\"\n{keys}");
    for a in addrs {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{a}\"\n"));
    }
    t
}

/// Polls (bounded: 10 s) until backend `i` of the first pool is in `want`.
async fn wait_health(lb: &Tftplb, i: usize, want: Health) {
    for _ in 0..400 {
        if lb.frontend.runtime().pools[0].backends[i].state.health() == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("backend {i} never became {want:?}");
}

async fn fetch_ok(lb: &Tftplb) {
    let (data, _) = client::fetch(lb.addr, PROBE, &ClientConfig::default())
        .await
        .expect("fetch");
    assert_eq!(data, probe_file());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_backend_goes_down_gets_no_sessions_and_comes_back() {
    let a = backend(probe_file()).await;
    let b = backend(probe_file()).await;
    let lb = Tftplb::start("", &health_pool(&[a.address, b.address], "")).await;
    wait_health(&lb, 0, Health::Up).await;
    wait_health(&lb, 1, Health::Up).await;
    let b_addr = b.address;
    drop(b); // killed
    wait_health(&lb, 1, Health::Down).await;
    let before = lb.sessions_per_backend();
    for _ in 0..6 {
        fetch_ok(&lb).await;
    }
    let after = lb.sessions_per_backend();
    assert_eq!(after[1], before[1], "no new session on the down backend");
    // The same address serves again: up after `rise` passes.
    let revived = EmbeddedServer::with_handler(
        FaultyHandler::new(&[(PROBE, probe_file())], Fault::None),
        b_addr,
    )
    .await
    .unwrap();
    wait_health(&lb, 1, Health::Up).await;
    for _ in 0..4 {
        fetch_ok(&lb).await;
    }
    assert!(lb.sessions_per_backend()[1] > after[1], "back in rotation");
    drop(revived);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inconsistent_backend_is_excluded() {
    let servers = [
        backend(probe_file()).await,
        backend(probe_file()).await,
        backend(pseudo_random_bytes(9728, 99)).await,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.address).collect();
    let lb = Tftplb::start(
        "",
        &health_pool(&addrs, "").replace("fall = 2\n", "fall = 2\nconsistency = true\n"),
    )
    .await;
    for i in 0..3 {
        wait_health(&lb, i, Health::Up).await;
    }
    for _ in 0..400 {
        if lb.frontend.runtime().pools[0].backends[2]
            .state
            .inconsistent()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        lb.frontend.runtime().pools[0].backends[2]
            .state
            .inconsistent()
    );
    let before = lb.sessions_per_backend()[2];
    for _ in 0..6 {
        fetch_ok(&lb).await;
    }
    assert_eq!(
        lb.sessions_per_backend()[2],
        before,
        "drifted backend gets no sessions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_with_a_wrong_sha256_fails() {
    let a = backend(probe_file()).await;
    let wrong = "0".repeat(64);
    let lb = Tftplb::start(
        "",
        &health_pool(&[a.address], "")
            .replace("fall = 2\n", &format!("fall = 2\nsha256 = \"{wrong}\"\n")),
    )
    .await;
    wait_health(&lb, 0, Health::Down).await;
    let probe = lb.frontend.runtime().pools[0].backends[0]
        .state
        .last_probe()
        .unwrap();
    assert!(probe.detail.contains("sha256"), "{}", probe.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_reply_accepts_file_not_found() {
    let a = backend(probe_file()).await;
    let pool = health_pool(&[a.address], "")
        .replace(PROBE, "missing.bin")
        .replace("fall = 2\n", "fall = 2\nexpect = \"any-reply\"\n");
    let lb = Tftplb::start("", &pool).await;
    wait_health(&lb, 0, Health::Up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_refuse_answers_error_0() {
    let dead: SocketAddr = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let lb = Tftplb::start("", &health_pool(&[dead], "when_all_down = \"refuse\"")).await;
    wait_health(&lb, 0, Health::Down).await;
    let cfg = ClientConfig {
        retries: 1,
        retry_timeout: Duration::from_millis(500),
        ..ClientConfig::default()
    };
    match client::fetch(lb.addr, PROBE, &cfg).await {
        Err(ClientError::Remote { code: 0, message }) => {
            assert!(message.contains("no healthy boot server"), "{message}")
        }
        other => panic!("expected ERROR 0, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_try_all_fails_open() {
    let a = backend(probe_file()).await;
    // The probe file does not exist there, so probes fail, but the download does work.
    let pool = health_pool(&[a.address], "when_all_down = \"try-all\"")
        .replace(&format!("file = \"{PROBE}\""), "file = \"missing.bin\"");
    let lb = Tftplb::start("", &pool).await;
    wait_health(&lb, 0, Health::Down).await;
    fetch_ok(&lb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_states_from_the_config_hold() {
    let servers = [
        backend(probe_file()).await,
        backend(probe_file()).await,
        backend(probe_file()).await,
    ];
    let addrs: Vec<_> = servers.iter().map(|s| s.address).collect();
    let pool = format!(
        "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"{}\"\n[[pool.backend]]\naddress = \"{}\"\nstate = \"draining\"\n[[pool.backend]]\naddress = \"{}\"\nstate = \"disabled\"\n",
        addrs[0], addrs[1], addrs[2]
    );
    let lb = Tftplb::start("", &pool).await;
    let pools = lb.frontend.runtime();
    assert_eq!(
        pools.pools[0].backends[1].state.admin(),
        AdminState::Draining
    );
    for _ in 0..5 {
        fetch_ok(&lb).await;
    }
    assert_eq!(lb.sessions_per_backend(), vec![5, 0, 0]);
}
