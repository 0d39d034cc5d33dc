//! The `tftplb` binary as a user runs it: `demo` prints a curl command that works, `run` logs
//! every bound address (so port 0 can be read back) and exits 0 on SIGTERM, `get` reports a
//! transfer. Each child is ours and is stopped by PID.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{Backends, Tree};

const BIN: &str = env!("CARGO_BIN_EXE_tftplb");

/// Kills the child when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Lines of a pipe, delivered through a channel so reads can time out.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(_) => {}
            Err(_) => break,
        }
    }
    panic!("no line containing {needle:?} within 30 s");
}

/// `tftplb run --config CONFIG` at log level info, and its stderr lines.
fn spawn_run(config: &std::path::Path) -> (Reaped, mpsc::Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(config)
        .env("TFTPLB_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = lines_of(child.stderr.take().unwrap());
    (Reaped(child), logs)
}

fn sigterm(child: &Child) {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
}

#[test]
fn demo_prints_a_curl_command_that_downloads_through_it() {
    let mut child = Command::new(BIN)
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = lines_of(child.stdout.take().unwrap());
    let child = Reaped(child);
    let line = wait_for_line(&stdout, "curl -s tftp://");
    let url = line.split_whitespace().last().unwrap().to_string();
    assert!(
        !url.contains(":0/"),
        "the banner shows the bound port: {url}"
    );
    let mut served_by = std::collections::HashSet::new();
    for _ in 0..3 {
        let out = Command::new("curl").args(["-sS", &url]).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        served_by.insert(String::from_utf8(out.stdout).unwrap());
    }
    assert_eq!(
        served_by.len(),
        3,
        "round robin over three backends: {served_by:?}"
    );
    sigterm(&child.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_logs_bound_addresses_serves_and_stops_on_sigterm() {
    let tree = Tree::new(&[("f.bin", 100_000)]);
    let backends = Backends::start("tftpd-hpa", tree.path(), 2).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tftplb.toml");
    let pools = common::pool_toml("p", "least-sessions", "", &backends.addresses());
    std::fs::write(
        &config,
        format!("[admin]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"127.0.0.1:0\", \"[::1]:0\"]\n{pools}"),
    )
    .unwrap();
    let (mut child, logs) = spawn_run(&config);
    let v4 = wait_for_line(&logs, "tftp listening");
    let v6 = wait_for_line(&logs, "tftp listening");
    let addrs: Vec<std::net::SocketAddr> = [v4, v6]
        .iter()
        .map(|l| {
            l.split("address=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    for addr in addrs {
        let data = common::RealClient::Curl { blksize: 1468 }
            .get(addr, "f.bin")
            .await
            .unwrap();
        assert_eq!(common::sha256(&data), tree.sha256_of("f.bin"), "via {addr}");
    }
    wait_for_line(&logs, "session end");
    sigterm(&child.0);
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_reports_size_options_and_sha256() {
    let tree = Tree::new(&[("f.bin", 70_000)]);
    let backends = Backends::start("async-tftp", tree.path(), 1).await;
    let addr = backends.addresses()[0].to_string();
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("out");
    let out = tokio::process::Command::new(BIN)
        .args([
            "get",
            &addr,
            "f.bin",
            "--blksize",
            "1024",
            "--windowsize",
            "4",
            "--tsize",
            "-o",
        ])
        .arg(&out_file)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("70000 bytes"), "{report}");
    assert!(report.contains("blksize 1024 windowsize 4"), "{report}");
    assert!(report.contains(&tree.sha256_of("f.bin")), "{report}");
    assert_eq!(
        common::sha256(&std::fs::read(&out_file).unwrap()),
        tree.sha256_of("f.bin")
    );
    let missing = tokio::process::Command::new(BIN)
        .args(["get", &addr, "nope"])
        .output()
        .await
        .unwrap();
    assert!(!missing.status.success());
}

#[test]
fn run_warns_when_the_file_limit_cannot_hold_max_sessions() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tftplb.toml");
    std::fs::write(
        &config,
        "[admin]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n\
         max_sessions = 100000000\n[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n",
    )
    .unwrap();
    let (_child, logs) = spawn_run(&config);
    let line = wait_for_line(&logs, "open-file limit");
    assert!(line.contains("max_sessions=100000000"), "{line}");
}
