//! Parallel transfers spread over a pool as each policy promises, through real sockets with the
//! project's client and embedded backends, every file checked by sha256.

mod common;

use std::net::{IpAddr, SocketAddr};

use common::{Backends, Tftplb, Tree};
use tftplb::tftp::client::{self, ClientConfig};

const FILE: &str = "f.bin";

async fn parallel_fetches(lb: &Tftplb, tree: &Tree, clients: &[IpAddr]) {
    let expected = tree.sha256_of(FILE);
    let mut tasks = tokio::task::JoinSet::new();
    for &ip in clients {
        let server = lb.addr;
        let cfg = ClientConfig {
            blksize: Some(1024),
            bind: Some(SocketAddr::new(ip, 0)),
            ..ClientConfig::default()
        };
        tasks.spawn(async move { client::fetch(server, FILE, &cfg).await });
    }
    while let Some(r) = tasks.join_next().await {
        let (data, _) = r.unwrap().expect("transfer failed");
        assert_eq!(common::sha256(&data), expected);
    }
    assert!(lb.wait_idle().await);
}

fn loopback_clients(n: u8) -> Vec<IpAddr> {
    (0..n).map(|i| IpAddr::from([127, 0, 1, i + 1])).collect()
}

async fn setup(weights: &[u32], balance: &str) -> (Tree, Backends, Tftplb) {
    let tree = Tree::new(&[(FILE, 64 * 1024)]);
    let backends = Backends::start("async-tftp", tree.path(), weights.len()).await;
    let mut pool = format!("[[pool]]\nname = \"p\"\nbalance = \"{balance}\"\n");
    for (addr, w) in backends.addresses().iter().zip(weights) {
        pool.push_str(&format!(
            "[[pool.backend]]\naddress = \"{addr}\"\nweight = {w}\n"
        ));
    }
    let lb = Tftplb::start("", &pool).await;
    (tree, backends, lb)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_spreads_evenly() {
    let (tree, _b, lb) = setup(&[1, 1, 1], "round-robin").await;
    parallel_fetches(&lb, &tree, &vec![IpAddr::from([127, 0, 0, 1]); 30]).await;
    assert_eq!(lb.sessions_per_backend(), vec![10, 10, 10]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_follows_the_weights() {
    let (tree, _b, lb) = setup(&[3, 1, 1], "weighted").await;
    parallel_fetches(&lb, &tree, &vec![IpAddr::from([127, 0, 0, 1]); 25]).await;
    assert_eq!(lb.sessions_per_backend(), vec![15, 5, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_sessions_spreads_concurrent_transfers() {
    let (tree, _b, lb) = setup(&[1, 1, 1], "least-sessions").await;
    parallel_fetches(&lb, &tree, &vec![IpAddr::from([127, 0, 0, 1]); 30]).await;
    let spread = lb.sessions_per_backend();
    assert_eq!(spread.iter().sum::<u64>(), 30);
    assert!(spread.iter().all(|&n| n >= 5), "uneven: {spread:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn source_hash_keeps_each_client_on_one_backend() {
    let (tree, _b, lb) = setup(&[1, 1, 1], "source-hash").await;
    let clients = loopback_clients(24);
    parallel_fetches(&lb, &tree, &clients).await;
    let first = lb.sessions_per_backend();
    assert!(
        first.iter().filter(|&&n| n > 0).count() >= 2,
        "24 clients on one backend: {first:?}"
    );
    // The same clients again: each lands where it landed before, so every count doubles.
    parallel_fetches(&lb, &tree, &clients).await;
    let second = lb.sessions_per_backend();
    assert_eq!(second, first.iter().map(|n| n * 2).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_affinity_keeps_a_client_on_one_backend() {
    let tree = Tree::new(&[(FILE, 4096)]);
    let backends = Backends::start("async-tftp", tree.path(), 3).await;
    let pool = common::pool_toml(
        "p",
        "round-robin",
        "affinity = \"client\"",
        &backends.addresses(),
    );
    let lb = Tftplb::start("", &pool).await;
    for ip in loopback_clients(3) {
        for _ in 0..4 {
            parallel_fetches(&lb, &tree, &[ip]).await;
        }
    }
    // Three clients, four transfers each, each client on one backend.
    let mut spread = lb.sessions_per_backend();
    spread.sort();
    assert_eq!(spread, vec![4, 4, 4]);
}
