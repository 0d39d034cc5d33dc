//! Boot files from memory (`[pool.cache]`), with real clients and real servers: tftpd-hpa
//! backends, and curl, atftp (windowsize 16), tftp-hpa (no options, past block 65535),
//! busybox and tftplb's own client. A copy is proved to come from memory by killing its
//! backend first: nothing else could serve it.

mod common;

use std::time::Duration;

use common::{RealClient, TftpdHpa, Tftplb, Tree, sha256};
use tftplb::tftp::client::{self, ClientConfig};

/// 33 MiB: 67,584 blocks of 512 bytes, past the 16-bit block number.
const ROLLOVER: usize = 33 * 1024 * 1024;

fn pool(backends: &[std::net::SocketAddr], cache: &str) -> String {
    common::pool_toml(
        "pvs",
        "round-robin",
        &format!("[pool.cache]\n{cache}\n"),
        backends,
    )
}

/// Fetches `file` with tftplb's client, asking blksize 1468 and tsize.
async fn get(lb: &Tftplb, file: &str) -> Vec<u8> {
    let cfg = ClientConfig {
        blksize: Some(1468),
        tsize: true,
        ..ClientConfig::default()
    };
    client::fetch(lb.addr, file, &cfg).await.unwrap().0
}

/// Waits (bounded) until the cache holds `copies` copies.
async fn filled(lb: &Tftplb, copies: usize) {
    for _ in 0..200 {
        if lb.frontend.cache.store.usage().0 >= copies {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "the cache holds {:?}, not {copies} copies",
        lb.frontend.cache.store.usage()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_get_the_copy_from_memory_after_the_backend_is_gone() {
    let tree = Tree::new(&[("ARDBP32.BIN", 30_000), ("big.bin", ROLLOVER)]);
    let mut tftpd = TftpdHpa::start(tree.path());
    let lb = Tftplb::start(
        "",
        &pool(
            &[tftpd.address],
            "files = [\"ARDBP32.BIN\", \"*.bin\"]\nrevalidate = \"10m\"",
        ),
    )
    .await;
    // The first requests are relayed, and fill the copies.
    assert_eq!(
        sha256(&get(&lb, "ARDBP32.BIN").await),
        tree.sha256_of("ARDBP32.BIN")
    );
    assert_eq!(
        sha256(&get(&lb, "big.bin").await),
        tree.sha256_of("big.bin")
    );
    filled(&lb, 2).await;
    tftpd.kill();
    for c in RealClient::all() {
        let data = c.get(lb.addr, "ARDBP32.BIN").await.unwrap();
        assert_eq!(sha256(&data), tree.sha256_of("ARDBP32.BIN"), "{c:?}");
    }
    // No options at all (no OACK), 512-byte blocks, block numbers past 65535.
    let data = RealClient::TftpHpa.get(lb.addr, "big.bin").await.unwrap();
    assert_eq!(sha256(&data), tree.sha256_of("big.bin"));
    assert_eq!(
        sha256(&get(&lb, "ARDBP32.BIN").await),
        tree.sha256_of("ARDBP32.BIN")
    );
    // Served with what was asked: the OACK answers blksize, windowsize and an exact tsize.
    let cfg = ClientConfig {
        blksize: Some(1468),
        windowsize: Some(16),
        tsize: true,
        ..ClientConfig::default()
    };
    let (_, t) = client::fetch(lb.addr, "ARDBP32.BIN", &cfg).await.unwrap();
    let oack = t.oack.expect("an OACK");
    assert_eq!(
        (oack.blksize(), oack.windowsize(), oack.tsize()),
        (Some(1468), Some(16), Some(30_000))
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edit_on_the_backend_goes_live_within_revalidate_and_the_old_copy_never_again() {
    let tree = Tree::new(&[("ARDBP32.BIN", 20_000)]);
    let tftpd = TftpdHpa::start(tree.path());
    let lb = Tftplb::start(
        "",
        &pool(
            &[tftpd.address],
            "files = [\"ARDBP32.BIN\"]\nrevalidate = \"1s\"",
        ),
    )
    .await;
    let old = tree.sha256_of("ARDBP32.BIN");
    assert_eq!(sha256(&get(&lb, "ARDBP32.BIN").await), old);
    filled(&lb, 1).await;
    // Served from memory before the edit (on a loaded machine a copy may go stale before it
    // is asked for: it is downloaded again, boundedly, until one is served).
    let hits = &lb.frontend.cache.counts.hits;
    for _ in 0..20 {
        assert_eq!(sha256(&get(&lb, "ARDBP32.BIN").await), old);
        if hits.load(std::sync::atomic::Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(hits.load(std::sync::atomic::Ordering::Relaxed) >= 1);
    tree.write("ARDBP32.BIN", b"bootstrap with a new login server list");
    let new = tree.sha256_of("ARDBP32.BIN");
    let edited = std::time::Instant::now();
    let mut live_after = None;
    // Bounded: 40 downloads, 100 ms apart.
    for _ in 0..40 {
        let got = sha256(&get(&lb, "ARDBP32.BIN").await);
        match live_after {
            None if got == new => live_after = Some(edited.elapsed()),
            None => assert_eq!(got, old),
            Some(_) => assert_eq!(got, new, "the old content came back"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let live_after = live_after.expect("the edit never went live");
    assert!(
        live_after < Duration::from_secs(3),
        "live after {live_after:?}"
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_client_gets_the_copy_of_the_backend_the_pool_chose() {
    let a = Tree::new(&[("ARDBP32.BIN", 0)]);
    a.write("ARDBP32.BIN", b"login servers of A");
    let b = Tree::new(&[("ARDBP32.BIN", 0)]);
    b.write("ARDBP32.BIN", b"login servers of B");
    let (mut ta, mut tb) = (TftpdHpa::start(a.path()), TftpdHpa::start(b.path()));
    let lb = Tftplb::start(
        "",
        &pool(
            &[ta.address, tb.address],
            "files = [\"ARDBP32.BIN\"]\nrevalidate = \"10m\"",
        ),
    )
    .await;
    for _ in 0..4 {
        get(&lb, "ARDBP32.BIN").await;
    }
    filled(&lb, 2).await;
    ta.kill();
    tb.kill();
    // Round robin over the two copies, from memory.
    let mut got: Vec<Vec<u8>> = Vec::new();
    for _ in 0..4 {
        got.push(get(&lb, "ARDBP32.BIN").await);
    }
    got.sort();
    got.dedup();
    assert_eq!(
        got,
        vec![
            b"login servers of A".to_vec(),
            b"login servers of B".to_vec()
        ]
    );
    lb.stop().await;
}

/// Every backend probed down (and the pool refuses rather than fail open): with `serve_stale`
/// the last copy still boots the clients, without it they hear "no healthy boot server".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_backend_down_serve_stale_decides() {
    for (serve_stale, served) in [("1h", true), ("0s", false)] {
        let tree = Tree::new(&[("ARDBP32.BIN", 10_000)]);
        let mut tftpd = TftpdHpa::start(tree.path());
        let health = "[pool.health]\nfile = \"ARDBP32.BIN\"\ninterval = \"200ms\"\ntimeout = \"150ms\"\nrise = 1\nfall = 1\n";
        let cache = format!(
            "files = [\"ARDBP32.BIN\"]\nrevalidate = \"1s\"\nserve_stale = \"{serve_stale}\"\n{health}"
        );
        let text = common::pool_toml(
            "pvs",
            "round-robin",
            &format!("when_all_down = \"refuse\"\n[pool.cache]\n{cache}"),
            &[tftpd.address],
        );
        let lb = Tftplb::start("", &text).await;
        let up = |lb: &Tftplb| lb.frontend.runtime().pools[0].backends[0].state.eligible();
        for _ in 0..100 {
            if up(&lb) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        get(&lb, "ARDBP32.BIN").await;
        filled(&lb, 1).await;
        tftpd.kill();
        for _ in 0..100 {
            if !up(&lb) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!up(&lb), "the backend is probed down");
        let cfg = ClientConfig {
            retries: 1,
            ..ClientConfig::default()
        };
        let got = client::fetch(lb.addr, "ARDBP32.BIN", &cfg).await;
        match (served, got) {
            (true, Ok((data, _))) => assert_eq!(sha256(&data), tree.sha256_of("ARDBP32.BIN")),
            (false, Err(e)) => {
                let e = e.to_string();
                assert!(e.contains("no healthy boot server"), "{e}");
            }
            (_, got) => panic!("serve_stale {serve_stale}: {:?}", got.map(|(d, _)| d.len())),
        }
        lb.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_cap_evicts_the_least_recently_used() {
    let tree = Tree::new(&[
        ("a.bin", 40_000),
        ("b.bin", 40_000),
        ("c.bin", 40_000),
        ("huge.bin", 150_000),
    ]);
    let tftpd = TftpdHpa::start(tree.path());
    let text = format!(
        "[cache]\nmax_bytes = 100000\n{}",
        pool(
            &[tftpd.address],
            "files = [\"*.bin\"]\nrevalidate = \"10m\""
        )
    );
    let lb = Tftplb::start("", &text).await;
    for f in ["a.bin", "b.bin"] {
        get(&lb, f).await;
        filled(&lb, if f == "a.bin" { 1 } else { 2 }).await;
    }
    // A file larger than the whole cache is never kept, and not downloaded again on every
    // request: once per revalidate.
    for _ in 0..3 {
        assert_eq!(
            sha256(&get(&lb, "huge.bin").await),
            tree.sha256_of("huge.bin")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let fills = lb
        .frontend
        .cache
        .counts
        .fills
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(fills, 3, "a, b and one try of huge.bin");
    get(&lb, "a.bin").await; // a is used again: b is now the least recently used
    get(&lb, "c.bin").await;
    for _ in 0..200 {
        let files: Vec<String> = lb
            .frontend
            .cache
            .store
            .list(std::time::Instant::now())
            .into_iter()
            .map(|c| c.file)
            .collect();
        if files.contains(&"c.bin".to_string()) {
            assert_eq!(files.len(), 2, "{files:?}");
            assert!(files.contains(&"a.bin".to_string()), "{files:?}");
            assert!(lb.frontend.cache.store.usage().1 <= 100_000);
            lb.stop().await;
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("c.bin was never cached");
}

/// A route's options policy holds for transfers from memory too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_s_options_policy_holds_from_memory() {
    let tree = Tree::new(&[("ARDBP32.BIN", 50_000)]);
    let mut tftpd = TftpdHpa::start(tree.path());
    let text = format!(
        "{}\n[[route]]\nclients = [\"127.0.0.0/8\"]\npool = \"pvs\"\nmax_blksize = 1024\n\
         drop_options = [\"tsize\"]\n",
        pool(
            &[tftpd.address],
            "files = [\"ARDBP32.BIN\"]\nrevalidate = \"10m\""
        )
    );
    let lb = Tftplb::start("", &text).await;
    get(&lb, "ARDBP32.BIN").await;
    filled(&lb, 1).await;
    tftpd.kill();
    let cfg = ClientConfig {
        blksize: Some(1468),
        tsize: true,
        ..ClientConfig::default()
    };
    let (data, t) = client::fetch(lb.addr, "ARDBP32.BIN", &cfg).await.unwrap();
    assert_eq!(sha256(&data), tree.sha256_of("ARDBP32.BIN"));
    let oack = t.oack.expect("an OACK");
    assert_eq!((oack.blksize(), oack.tsize()), (Some(1024), None));
    lb.stop().await;
}

/// A request whose source never answers (any source may be spoofed) makes tftplb download
/// nothing: the copy is filled only once a client has answered the relayed transfer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spoofed_request_fills_nothing() {
    let tree = Tree::new(&[("ARDBP32.BIN", 100_000)]);
    let tftpd = TftpdHpa::start(tree.path());
    let lb = Tftplb::start("", &pool(&[tftpd.address], "files = [\"ARDBP32.BIN\"]")).await;
    let spoofed = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    spoofed
        .send_to(b"\x00\x01ARDBP32.BIN\x00octet\x00", lb.addr)
        .await
        .unwrap();
    // The session gives up on its silent client after two of its retransmission intervals.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let counts = &lb.frontend.cache.counts;
    assert_eq!(counts.fills.load(std::sync::atomic::Ordering::Relaxed), 0);
    assert_eq!(lb.frontend.cache.store.usage(), (0, 0));
    // A client that answers fills it.
    get(&lb, "ARDBP32.BIN").await;
    filled(&lb, 1).await;
    lb.stop().await;
}

/// Waits (bounded) until `check` holds, polling every 50 ms for up to 10 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("never: {what}");
}

/// The health probe's download of a cached file fills the copies (the first client is served
/// from memory without a miss), and the consistency check compares the copies in memory: a
/// backend whose `ARDBP32.BIN` drifted is excluded, and back once its file is mended, with no
/// client asking for it in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_fills_the_copies_and_the_consistency_check_reads_them() {
    let trees: Vec<Tree> = (0..3)
        .map(|_| Tree::new(&[("pxelinux.0", 26_000), ("ARDBP32.BIN", 0)]))
        .collect();
    let same = trees[0].path().join("pxelinux.0");
    for t in &trees {
        std::fs::copy(&same, t.path().join("pxelinux.0")).unwrap();
        t.write("ARDBP32.BIN", b"login servers: pvs1, pvs2");
    }
    trees[2].write("ARDBP32.BIN", b"login servers: old-pvs");
    let tftpds: Vec<TftpdHpa> = trees.iter().map(|t| TftpdHpa::start(t.path())).collect();
    let addresses: Vec<_> = tftpds.iter().map(|t| t.address).collect();
    let health = "[pool.health]\nfile = \"pxelinux.0\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\nfall = 1\nconsistency = true\n";
    let lb = Tftplb::start(
        "",
        &pool(
            &addresses,
            &format!("files = [\"pxelinux.0\", \"ARDBP32.BIN\"]\nrevalidate = \"10m\"\n{health}"),
        ),
    )
    .await;
    let cache = &lb.frontend.cache;
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    filled(&lb, 3).await;
    assert_eq!(count(&cache.counts.misses), 0, "no client has asked yet");
    assert_eq!(
        sha256(&get(&lb, "pxelinux.0").await),
        trees[0].sha256_of("pxelinux.0")
    );
    until("the session from memory has ended", || {
        count(&cache.counts.hits) == 1
    })
    .await;
    assert_eq!(count(&cache.counts.misses), 0);

    // Clients ask for ARDBP32.BIN until each backend's copy is in memory.
    let runtime = lb.frontend.runtime();
    let state = |i: usize| &runtime.pools[0].backends[i].state;
    for _ in 0..30 {
        if cache.store.usage().0 == 6 {
            break;
        }
        get(&lb, "ARDBP32.BIN").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    until("the drifted backend is excluded", || {
        state(2).inconsistent()
    })
    .await;
    assert!(!state(0).inconsistent() && !state(1).inconsistent());
    for _ in 0..6 {
        assert_eq!(get(&lb, "ARDBP32.BIN").await, b"login servers: pvs1, pvs2");
    }
    trees[2].write("ARDBP32.BIN", b"login servers: pvs1, pvs2");
    until("the mended backend is back", || !state(2).inconsistent()).await;
    lb.stop().await;
}

/// `[cache]` follows a reload: a smaller `max_bytes` evicts at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_applies_the_memory_cap() {
    let tree = Tree::new(&[("a.bin", 40_000), ("b.bin", 40_000)]);
    let tftpd = TftpdHpa::start(tree.path());
    let config = |max_bytes: usize| {
        format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n[cache]\nmax_bytes = {max_bytes}\n{}",
            pool(
                &[tftpd.address],
                "files = [\"*.bin\"]\nrevalidate = \"10m\""
            )
        )
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tftplb.toml");
    std::fs::write(&path, config(100_000)).unwrap();
    let (lb, control) = Tftplb::start_file(&path).await;
    get(&lb, "a.bin").await;
    filled(&lb, 1).await;
    get(&lb, "b.bin").await;
    filled(&lb, 2).await;
    std::fs::write(&path, config(50_000)).unwrap();
    control.reload().unwrap();
    let store = &lb.frontend.cache.store;
    assert_eq!((store.max_bytes(), store.usage()), (50_000, (1, 40_000)));
    lb.stop().await;
}
