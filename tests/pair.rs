//! Two front ends (README, "Two front ends"): the health check keepalived's `vrrp_script`
//! runs (`tftplb health`, `GET /api/health`), and a floating address bound before it arrives
//! (`[tftp] freebind`). Each test runs the binary as an operator would.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Command, Output};

use common::daemon::Daemon;

/// A configuration with one backend (not probed, so up) and an admin token.
fn write_config(dir: &Path, tftp_extra: &str) -> std::path::PathBuf {
    let token = dir.join("admin.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let cfg = dir.join("tftplb.toml");
    std::fs::write(
        &cfg,
        format!(
            "[tftp]\nlisten = [\"127.0.0.1:0\"]\n{tftp_extra}\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"{}\"\n\
             [[pool]]\nname = \"boot\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n",
            token.display()
        ),
    )
    .unwrap();
    cfg
}

fn health(cfg: &Path, admin: SocketAddr) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["health", "--timeout", "5", "--config"])
        .arg(cfg)
        .arg("--admin")
        .arg(admin.to_string())
        .output()
        .unwrap()
}

/// What `tftplb health` printed: the JSON of `GET /api/health`.
fn answer(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"))
}

/// `POST path` with the admin token; the status code.
fn post(admin: SocketAddr, path: &str) -> u16 {
    let mut s = TcpStream::connect(admin).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nAuthorization: Bearer s3cret\r\n\
         Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply.split(' ').nth(1).unwrap().parse().unwrap()
}

#[test]
fn health_says_whether_this_node_can_serve() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "");
    let node = Daemon::run(&cfg);
    let admin = node.address("admin");
    node.address("tftp");

    // Serving: exit 0, without the token the rest of the API needs.
    let ok = health(&cfg, admin);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(answer(&ok)["ok"], true);

    // The default pool's only backend disabled: exit 1, and why.
    assert_eq!(
        post(admin, "/api/pools/boot/backends/127.0.0.1:9/disable"),
        200
    );
    let down = health(&cfg, admin);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    let answer = answer(&down);
    assert_eq!(answer["ok"], false);
    assert_eq!(
        answer["problems"][0],
        "no backend of the default pool \"boot\" is up and enabled"
    );
    assert_eq!(
        post(admin, "/api/pools/boot/backends/127.0.0.1:9/enable"),
        200
    );
    assert!(health(&cfg, admin).status.success());

    // Stopped: nothing answers, exit 1.
    node.sigterm();
    assert!(node.wait().success());
    let gone = health(&cfg, admin);
    assert_eq!(gone.status.code(), Some(1));
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(err.contains("no answer from"), "{err}");
}

/// 192.0.2.77 (TEST-NET-1) is on no interface here: a floating address that has not arrived.
/// Binding it sends nothing anywhere.
#[test]
fn a_floating_address_binds_with_freebind_and_fails_without() {
    let dir = tempfile::tempdir().unwrap();
    let floating = "listen = [\"192.0.2.77:0\"]";
    let cfg = write_config(dir.path(), "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("listen = [\"127.0.0.1:0\"]", floating);
    std::fs::write(&cfg, &text).unwrap();

    let refused = Command::new(env!("CARGO_BIN_EXE_tftplb"))
        .args(["run", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("tftp.listen 192.0.2.77:0"), "{err}");

    std::fs::write(
        &cfg,
        text.replace(floating, &format!("{floating}\nfreebind = true")),
    )
    .unwrap();
    let node = Daemon::run(&cfg);
    let bound = node.address("tftp");
    assert_eq!(bound.ip().to_string(), "192.0.2.77");
    assert_ne!(bound.port(), 0);
}
