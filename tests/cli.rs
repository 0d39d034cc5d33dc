//! The `tftplb` binary as a user runs it: `demo` prints a curl command that works, `run` logs
//! every bound address (so port 0 can be read back) and exits 0 on SIGTERM, `get` reports a
//! transfer. Each child is ours and is stopped by PID.

mod common;

use std::process::Command;

use common::daemon::{Daemon, Output};
use common::{Backends, Tree};

const BIN: &str = env!("CARGO_BIN_EXE_tftplb");

#[test]
fn demo_prints_a_curl_command_that_downloads_through_it() {
    let mut demo = Command::new(BIN);
    demo.args(["demo", "--listen", "127.0.0.1:0"]);
    let child = Daemon::spawn(demo, Output::Stdout);
    let line = child.wait_for_line("curl -s tftp://");
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
    child.sigterm();
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
    let child = Daemon::run(&config);
    let addrs = [child.address("tftp"), child.address("tftp")];
    for addr in addrs {
        let data = common::RealClient::Curl { blksize: 1468 }
            .get(addr, "f.bin")
            .await
            .unwrap();
        assert_eq!(common::sha256(&data), tree.sha256_of("f.bin"), "via {addr}");
    }
    child.wait_for_line("session end");
    child.sigterm();
    let status = tokio::task::spawn_blocking(move || child.wait())
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
    let child = Daemon::run(&config);
    let line = child.wait_for_line("open-file limit");
    assert!(line.contains("max_sessions=100000000"), "{line}");
}
