//! The operator's kit over HTTP: Prometheus series that move with traffic (from a real
//! `tftplb run` child process, the only kind that installs the global recorder), drain through
//! the API, reload through the API, the bearer token, and the status page in headless Chromium.
//!
//! Every port is bound at :0 and read back (from the child's log, or from `Bound`).

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::faulty::{Fault, FaultyHandler};
use common::{Tree, sha256};
use tftplb::app::Bound;
use tftplb::config::Config;
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::tftp::client::{self, ClientConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// One HTTP/1.1 request (Connection: close); returns the status code and the body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to admin");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n"
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .expect("admin answered in time")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// [`http`] without extra headers.
async fn call(addr: SocketAddr, method: &str, path: &str) -> (u16, String) {
    http(addr, method, path, &[]).await
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// tftplb in this process, with its admin listener on 127.0.0.1:0.
struct Running {
    tftp: SocketAddr,
    admin: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn start(config: &Config, file: Option<&Path>) -> Running {
        let bound = Bound::with_file(config, file.map(Path::to_path_buf)).expect("bind tftplb");
        let (tftp, admin) = (
            bound.tftp_addrs()[0],
            bound.admin_addr().expect("admin is on"),
        );
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Running {
            tftp,
            admin,
            stop: Some(stop),
            task,
        }
    }

    async fn status(&self) -> serde_json::Value {
        let (code, body) = call(self.admin, "GET", "/api/status").await;
        assert_eq!(code, 200, "{body}");
        json(&body)
    }

    /// Total sessions per backend of the first pool, by address.
    async fn totals(&self) -> Vec<(String, u64)> {
        let s = self.status().await;
        s["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["address"].as_str().unwrap().to_string(),
                    b["total_sessions"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), self.task).await;
    }
}

fn config_text(admin_extra: &str, pool_extra: &str, backends: &[SocketAddr]) -> String {
    let mut t = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n{admin_extra}\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n\n\
         [[pool]]\nname = \"boot\"\nbalance = \"round-robin\"\n{pool_extra}\n"
    );
    for b in backends {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    t
}

fn quick_client() -> ClientConfig {
    ClientConfig {
        retry_timeout: Duration::from_millis(300),
        retries: 10,
        ..ClientConfig::default()
    }
}

/// A backend serving `big.bin` slowly (a transfer that stays running for a while) and
/// `who.txt` naming itself.
async fn slow_backend(name: &str, big: &[u8]) -> EmbeddedServer {
    FaultyHandler::new(
        &[
            ("big.bin", big.to_vec()),
            ("who.txt", name.as_bytes().to_vec()),
        ],
        Fault::Slow(Duration::from_millis(15)),
    )
    .start()
    .await
}

// ---- metrics, from a child process ----

/// The value of the first sample whose line starts with `series` (name and labels).
fn sample(scrape: &str, series: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// The sum of every sample of `name` whose labels contain all of `with`.
fn total(scrape: &str, name: &str, with: &[&str]) -> f64 {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| with.iter().all(|w| l.contains(w)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_series_exist_and_move_with_transfers() {
    let tree = Tree::new(&[("f2936.bin", 2936), ("probe.bin", 700)]);
    let a = EmbeddedServer::start(tree.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = EmbeddedServer::start(tree.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("tftplb.toml");
    let health = "[pool.health]\nfile = \"probe.bin\"\ninterval = \"200ms\"\ntimeout = \"200ms\"\nrise = 1\nfall = 2\n";
    std::fs::write(&config, config_text("", health, &[a.address, b.address])).unwrap();
    let child = Daemon::run(&config);
    let (tftp, admin) = (child.address("tftp"), child.address("admin"));

    // Probes run: wait for both backends to be up.
    let deadline = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let (code, scrape) = call(admin, "GET", "/metrics").await;
        assert_eq!(code, 200, "{scrape}");
        if total(&scrape, "tftplb_backend_up", &[]) >= 2.0 {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "backends never came up:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    for _ in 0..4 {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "-o", "-"])
            .arg(format!("tftp://{tftp}/f2936.bin"))
            .output()
            .expect("curl");
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(sha256(&out.stdout), tree.sha256_of("f2936.bin"));
    }
    // A malformed datagram, an unknown opcode and a write request: refused, by reason.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    junk.send_to(b"\x00\x01no-terminator", tftp).unwrap();
    junk.send_to(b"\x00\x09garbage", tftp).unwrap();
    junk.send_to(b"\x00\x02x.bin\x00octet\x00", tftp).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let (_, after) = call(admin, "GET", "/metrics").await;
    println!("---- /metrics after 4 transfers ----\n{after}");
    for name in [
        "tftplb_sessions_active",
        "tftplb_sessions_total",
        "tftplb_session_duration_seconds_bucket",
        "tftplb_file_bytes_relayed_total",
        "tftplb_packets_relayed_total",
        "tftplb_requests_refused_total",
        "tftplb_requests_retransmitted_total",
        "tftplb_backend_up",
        "tftplb_probe_duration_seconds_bucket",
        "tftplb_failovers_total",
        "tftplb_backend_sessions_active",
        "tftplb_backend_admin_state",
        "tftplb_session_packets_dropped_total",
        "tftplb_log_lines_dropped_total",
    ] {
        assert!(
            after.lines().any(|l| l.starts_with(name)),
            "no {name} series in:\n{after}"
        );
    }
    let moved = |name: &str, with: &[&str]| total(&after, name, with) - total(&before, name, with);
    assert_eq!(
        moved(
            "tftplb_sessions_total",
            &["pool=\"boot\"", "outcome=\"completed\""]
        ),
        4.0
    );
    assert_eq!(moved("tftplb_file_bytes_relayed_total", &[]), 4.0 * 2936.0);
    assert!(moved("tftplb_packets_relayed_total", &["direction=\"to-client\""]) >= 4.0 * 6.0);
    assert_eq!(
        moved("tftplb_session_duration_seconds_count", &["pool=\"boot\""]),
        4.0
    );
    assert!(total(&after, "tftplb_probe_duration_seconds_count", &[]) >= 2.0);
    assert!(
        moved("tftplb_requests_refused_total", &["reason=\"malformed\""]) >= 1.0,
        "{after}"
    );
    assert!(
        moved("tftplb_requests_refused_total", &[]) >= 2.0,
        "{after}"
    );
    assert_eq!(
        sample(&after, "tftplb_sessions_active{pool=\"boot\"}"),
        Some(0.0)
    );
    // Both backends served (round-robin), each labelled by pool and backend.
    for backend in [a.address, b.address] {
        let label = format!("backend=\"{backend}\"");
        assert_eq!(moved("tftplb_sessions_total", &[&label]), 2.0, "{after}");
    }
}

// ---- the JSON API, in process ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_drain_sends_new_sessions_elsewhere_while_a_running_one_finishes() {
    let big = pseudo_random_bytes(96 * 1024, 7);
    let (a, b) = (slow_backend("a", &big).await, slow_backend("b", &big).await);
    let config = Config::parse(&config_text("", "", &[a.address, b.address])).unwrap();
    let lb = Running::start(&config, None).await;

    let tftp = lb.tftp;
    let running =
        tokio::spawn(async move { client::fetch(tftp, "big.bin", &quick_client()).await });
    // Find the backend that carries it.
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let s = lb.status().await;
        let busy = s["pools"][0]["backends"]
            .as_array()
            .unwrap()
            .iter()
            .find(|b| b["active_sessions"] == 1);
        if let Some(b) = busy {
            break b["address"].as_str().unwrap().to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the big transfer never started: {s}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let (code, body) = call(
        lb.admin,
        "POST",
        &format!("/api/pools/boot/backends/{busy}/drain"),
    )
    .await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["admin"], "draining");

    for _ in 0..4 {
        let (data, _) = client::fetch(lb.tftp, "who.txt", &quick_client())
            .await
            .unwrap();
        assert_ne!(
            String::from_utf8_lossy(&data),
            if busy == a.address.to_string() {
                "a"
            } else {
                "b"
            }
        );
    }
    let totals = lb.totals().await;
    assert_eq!(
        totals.iter().find(|(addr, _)| *addr == busy).unwrap().1,
        1,
        "{totals:?}"
    );
    let s = lb.status().await;
    let row = s["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["address"] == busy.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["admin"], "draining");
    assert_eq!(
        row["active_sessions"], 1,
        "the running transfer is still on the drained backend"
    );

    let (data, _) = running
        .await
        .unwrap()
        .expect("the running transfer finishes");
    assert_eq!(sha256(&data), sha256(&big));

    // Unknown pool, backend, action: clear 4xx answers.
    let (code, body) = call(
        lb.admin,
        "POST",
        &format!("/api/pools/nope/backends/{busy}/drain"),
    )
    .await;
    assert_eq!(code, 404, "{body}");
    let (code, _) = call(
        lb.admin,
        "POST",
        &format!("/api/pools/boot/backends/{busy}/explode"),
    )
    .await;
    assert_eq!(code, 404);
    let (code, _) = call(
        lb.admin,
        "POST",
        "/api/pools/boot/backends/not-an-address/drain",
    )
    .await;
    assert_eq!(code, 400);
    let (code, _) = call(
        lb.admin,
        "GET",
        &format!("/api/pools/boot/backends/{busy}/enable"),
    )
    .await;
    assert_eq!(code, 405);
    let (code, body) = call(
        lb.admin,
        "POST",
        &format!("/api/pools/boot/backends/{busy}/enable"),
    )
    .await;
    assert_eq!(
        (code, json(&body)["admin"].clone()),
        (200, "enabled".into())
    );
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_reload_refuses_a_bad_file_and_applies_a_good_one() {
    let big = pseudo_random_bytes(64 * 1024, 8);
    let (a, b) = (slow_backend("a", &big).await, slow_backend("b", &big).await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tftplb.toml");
    std::fs::write(&file, config_text("", "", &[a.address, b.address])).unwrap();
    let lb = Running::start(&Config::load(&file).unwrap(), Some(&file)).await;

    let tftp = lb.tftp;
    let running =
        tokio::spawn(async move { client::fetch(tftp, "big.bin", &quick_client()).await });
    tokio::time::sleep(Duration::from_millis(100)).await;

    // A bad file: refused with its problems, nothing changes.
    std::fs::write(&file, config_text("", "balance = \"bogus\"", &[b.address])).unwrap();
    let (code, body) = call(lb.admin, "POST", "/api/reload").await;
    assert_eq!(code, 422, "{body}");
    let problems = json(&body)["problems"].to_string();
    assert!(problems.contains("bogus"), "{problems}");
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (data, _) = client::fetch(lb.tftp, "who.txt", &quick_client())
            .await
            .unwrap();
        seen.insert(String::from_utf8(data).unwrap());
    }
    assert_eq!(
        seen.len(),
        2,
        "still balancing over both backends: {seen:?}"
    );

    // A good file with only backend b: every new session goes there.
    std::fs::write(&file, config_text("", "", &[b.address])).unwrap();
    let (code, body) = call(lb.admin, "POST", "/api/reload").await;
    assert_eq!(code, 200, "{body}");
    for _ in 0..4 {
        let (data, _) = client::fetch(lb.tftp, "who.txt", &quick_client())
            .await
            .unwrap();
        assert_eq!(data, b"b");
    }
    assert_eq!(lb.status().await["reloads"], 1);

    let (data, _) = running
        .await
        .unwrap()
        .expect("the transfer running across the reload finishes");
    assert_eq!(sha256(&data), sha256(&big));
    lb.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_when_configured() {
    let tree = Tree::new(&[("x.bin", 10)]);
    let a = EmbeddedServer::start(tree.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let admin = format!("token_file = {:?}\n", token.display().to_string());
    let lb = Running::start(
        &Config::parse(&config_text(&admin, "", &[a.address])).unwrap(),
        None,
    )
    .await;
    let drain = format!("/api/pools/boot/backends/{}/drain", a.address);

    for path in ["/", "/metrics", "/api/status"] {
        let (code, _) = call(lb.admin, "GET", path).await;
        assert_eq!(code, 401, "{path} without a token");
    }
    let (code, _) = call(lb.admin, "POST", &drain).await;
    assert_eq!(code, 401);
    let (code, _) = http(
        lb.admin,
        "GET",
        "/api/status",
        &[("Authorization", "Bearer wrong")],
    )
    .await;
    assert_eq!(code, 401);
    let bearer = [("Authorization", "Bearer s3cret-token")];
    let (code, _) = http(lb.admin, "GET", "/api/status", &bearer).await;
    assert_eq!(code, 200);
    // A browser's Basic auth: any user, the token as password ("admin:s3cret-token").
    let (code, body) = http(
        lb.admin,
        "GET",
        "/",
        &[("Authorization", "Basic YWRtaW46czNjcmV0LXRva2Vu")],
    )
    .await;
    assert_eq!(code, 200);
    assert!(body.contains("<table"));
    // A write from another site's page is refused even with credentials.
    let cross = [
        ("Authorization", "Bearer s3cret-token"),
        ("Origin", "http://evil.example"),
    ];
    let (code, _) = http(lb.admin, "POST", &drain, &cross).await;
    assert_eq!(code, 403);
    let (code, body) = http(lb.admin, "POST", &drain, &bearer).await;
    assert_eq!(code, 200, "{body}");
    lb.stop().await;

    // Not on loopback without a token: refused at validation, naming the key.
    let err = Config::parse(
        &config_text("", "", &[a.address]).replace("127.0.0.1:0\"\n", "0.0.0.0:0\"\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("admin.token_file: required"), "{err}");
}

// ---- the status page, in headless Chromium ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_page_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let script = root.join("tests/browser/status_page.mjs");
    let missing: Vec<&str> = [
        (!Path::new(&chromium).exists()).then_some("chromium (Debian package `chromium`)"),
        (!root
            .join("tests/browser/node_modules/playwright-core")
            .exists())
        .then_some("playwright-core (`npm ci --prefix tests/browser`)"),
        Command::new("node")
            .arg("--version")
            .output()
            .is_err()
            .then_some("node"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install: {missing:?}"
        );
        println!("SKIPPED: missing {missing:?}");
        return;
    }

    let tree = Tree::new(&[("probe.bin", 600)]);
    let a = EmbeddedServer::start(tree.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = EmbeddedServer::start(tree.path(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let health = "[pool.health]\nfile = \"probe.bin\"\ninterval = \"300ms\"\ntimeout = \"300ms\"\nrise = 1\n";
    let lb = Running::start(
        &Config::parse(&config_text("", health, &[a.address, b.address])).unwrap(),
        None,
    )
    .await;
    for _ in 0..3 {
        client::fetch(lb.tftp, "probe.bin", &quick_client())
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(700)).await; // a probe result to show

    let out_dir = root.join("target/test-output");
    std::fs::create_dir_all(&out_dir).unwrap();
    let shot = out_dir.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let target = b.address.to_string();
    let url = format!("http://{}/", lb.admin);
    let node = tokio::process::Command::new("node")
        .arg(&script)
        .args([&url, shot.to_str().unwrap(), &target])
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), node)
        .await
        .expect("chromium run within 60 s")
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "node: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = json(stdout.lines().last().unwrap_or(""));
    println!("status page screenshot: {}", shot.display());
    println!("chromium saw: {seen}");

    let rows = seen["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{seen}");
    for (row, addr) in rows.iter().zip([a.address, b.address]) {
        assert_eq!(row["backend"], addr.to_string().as_str());
        assert_eq!(row["admin"], "enabled");
        assert_eq!(row["health"], "up");
    }
    assert_eq!(seen["title"], "tftplb status");
    assert_eq!(seen["before"], "enabled");
    assert_eq!(seen["after"], "draining");
    assert_eq!(seen["drainDisabled"], true);
    assert!(
        seen["message"].as_str().unwrap().contains("draining"),
        "{seen}"
    );
    assert!(std::fs::metadata(&shot).unwrap().len() > 1000);
    // The server agrees.
    let s = lb.status().await;
    let admin: Vec<&str> = s["pools"][0]["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["admin"].as_str().unwrap())
        .collect();
    assert_eq!(admin, ["enabled", "draining"]);
    lb.stop().await;
}
