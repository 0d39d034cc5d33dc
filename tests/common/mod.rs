//! Shared test harness: tftplb in-process on port 0, real backends (tftpd-hpa from a socket we
//! bound, embedded async-tftp), real clients (curl, atftp, tftp-hpa, busybox), and sha256 checks.
//!
//! Every port is bound at :0 and read back; every child process is ours, killed by handle.
#![allow(dead_code)]

pub mod capped;
pub mod daemon;
pub mod namespaces;

pub mod faulty;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tftplb::app::Bound;
use tftplb::config::Config;
use tftplb::demo::{EmbeddedServer, pseudo_random_bytes};
use tftplb::tftp::frontend::Frontend;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub fn sha256(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// A tftplb running in this process.
pub struct Tftplb {
    pub addr: SocketAddr,
    /// The admin listener (127.0.0.1:0 with [`Tftplb::start`]), when there is one.
    pub admin: Option<SocketAddr>,
    pub frontend: Arc<Frontend>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Tftplb {
    /// Starts tftplb on 127.0.0.1:0 with `[[pool]]` sections given as TOML (and optional
    /// `[tftp]` keys besides `listen`).
    pub async fn start(tftp_keys: &str, pools: &str) -> Tftplb {
        raise_fd_limit();
        // The admin listener binds port 0 too: many instances run in one test process.
        let text = format!(
            "[admin]\nlisten = \"127.0.0.1:0\"\n[tftp]\nlisten = [\"127.0.0.1:0\"]\n{tftp_keys}\n{pools}\n{}",
            no_limits_unless_given(pools)
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let bound = Bound::new(&config).expect("bind tftplb");
        let addr = bound.tftp_addrs()[0];
        let admin = bound.admin_addr();
        let frontend = bound.frontend();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        Tftplb {
            addr,
            admin,
            frontend,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts tftplb from a configuration file, as `tftplb run --config` does (reload re-reads
    /// it); returns the control surface too.
    pub async fn start_file(path: &Path) -> (Tftplb, Arc<tftplb::control::Control>) {
        let (lb, control, _) = Tftplb::start_file_with_dns(path).await;
        (lb, control)
    }

    /// [`Tftplb::start_file`], also returning the first DNS address when `[dns]` is configured.
    pub async fn start_file_with_dns(
        path: &Path,
    ) -> (Tftplb, Arc<tftplb::control::Control>, Option<SocketAddr>) {
        raise_fd_limit();
        let config = Config::load(path).unwrap_or_else(|e| panic!("test config: {e}"));
        let bound = Bound::with_file(&config, Some(path.to_path_buf())).expect("bind tftplb");
        let dns = bound.dns_addrs().first().copied();
        let (addr, frontend, control) = (bound.tftp_addrs()[0], bound.frontend(), bound.control());
        let admin = bound.admin_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        let lb = Tftplb {
            addr,
            admin,
            frontend,
            stop: Some(stop),
            task: Some(task),
        };
        // `serve` starts the listeners in its task: wait for that before a test reloads.
        for _ in 0..200 {
            if !control.tftp_addrs().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        (lb, control, dns)
    }

    /// Like [`Tftplb::start`], with a `[dns]` section (its `listen` is set to 127.0.0.1:0);
    /// returns the DNS address too (UDP and TCP share it).
    pub async fn start_with_dns(tftp_keys: &str, pools: &str, dns: &str) -> (Tftplb, SocketAddr) {
        let text = format!(
            "[tftp]\nlisten = [\"127.0.0.1:0\"]\n{tftp_keys}\n{pools}\n{}\n[dns]\nlisten = [\"127.0.0.1:0\"]\n{dns}",
            no_limits_unless_given(pools)
        );
        let config = Config::parse(&text).unwrap_or_else(|e| panic!("test config: {e}\n{text}"));
        let bound = Bound::new(&config).expect("bind tftplb");
        let addr = bound.tftp_addrs()[0];
        let dns_addr = bound.dns_addrs()[0];
        let frontend = bound.frontend();
        let admin = bound.admin_addr();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(bound.serve(async {
            let _ = stopped.await;
        }));
        let t = Tftplb {
            addr,
            admin,
            frontend,
            stop: Some(stop),
            task: Some(task),
        };
        (t, dns_addr)
    }

    /// One pool with `balance` over `backends`.
    pub async fn with_pool(balance: &str, backends: &[SocketAddr]) -> Tftplb {
        Tftplb::start("", &pool_toml("p", balance, "", backends)).await
    }

    /// Stops it and waits for the drain.
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }

    /// Sessions started on each backend, in pool order.
    pub fn sessions_per_backend(&self) -> Vec<u64> {
        self.frontend.runtime().pools[0]
            .backends
            .iter()
            .map(|b| b.total_sessions())
            .collect()
    }

    /// Waits (bounded) until no session is live: each session frees its state when it ends.
    pub async fn wait_idle(&self) -> bool {
        for _ in 0..200 {
            if self.frontend.live_sessions() == 0 {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        false
    }
}

impl Drop for Tftplb {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Tests run many transfers from 127.0.0.1, far above the per-client limits a real client
/// needs: turn them off unless the test is about them (its text has a `[limits]` table).
fn no_limits_unless_given(text: &str) -> &'static str {
    if text.contains("[limits]") {
        ""
    } else {
        "[limits]\nrate_per_client = 0\nmax_sessions_per_client = 0\n"
    }
}

/// Each session holds two sockets and a released one stays quarantined for a while: lift the
/// soft file limit to the hard one, as `tftplb run` does.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

pub fn pool_toml(name: &str, balance: &str, extra: &str, backends: &[SocketAddr]) -> String {
    let mut t = format!("[[pool]]\nname = \"{name}\"\nbalance = \"{balance}\"\n{extra}\n");
    for b in backends {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    t
}

/// The test files: sizes around the 512-byte block edge, an exact multiple of 1468, and 40 MiB
/// (81,920 blocks at 512 bytes: the block counter rolls over).
pub const TEST_FILES: &[(&str, usize)] = &[
    ("empty.bin", 0),
    ("f511.bin", 511),
    ("f512.bin", 512),
    ("f513.bin", 513),
    ("f2936.bin", 2 * 1468),
    ("big40m.bin", 40 * 1024 * 1024),
];

/// A directory of test files, readable by tftpd-hpa's unprivileged user.
pub struct Tree {
    pub dir: tempfile::TempDir,
}

impl Tree {
    pub fn new(files: &[(&str, usize)]) -> Tree {
        let dir = tempfile::tempdir().unwrap();
        set_mode(dir.path(), 0o755);
        for (i, (name, size)) in files.iter().enumerate() {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).unwrap();
                set_mode(parent, 0o755);
            }
            std::fs::write(&path, pseudo_random_bytes(*size, 100 + i as u64)).unwrap();
            set_mode(&path, 0o644);
        }
        Tree { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn sha256_of(&self, name: &str) -> String {
        sha256(&std::fs::read(self.path().join(name)).unwrap())
    }

    pub fn write(&self, name: &str, content: &[u8]) {
        let path = self.path().join(name);
        std::fs::write(&path, content).unwrap();
        set_mode(&path, 0o644);
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// tftpd-hpa serving `dir`, started inetd-style on a socket this test bound at 127.0.0.1:0.
pub struct TftpdHpa {
    pub address: SocketAddr,
    child: tokio::process::Child,
}

impl TftpdHpa {
    pub fn start(dir: &Path) -> TftpdHpa {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = socket.local_addr().unwrap();
        let fd: std::os::fd::OwnedFd = socket.into();
        let child = tokio::process::Command::new(in_tftpd())
            // -t: exit after 60 s without a request, should the test die without killing it.
            .args(["-s", "-t", "60"])
            .arg(dir)
            .stdin(Stdio::from(fd))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start in.tftpd (apt-get install tftpd-hpa)");
        TftpdHpa { address, child }
    }

    pub fn kill(&mut self) {
        let _ = self.child.start_kill();
    }
}

fn in_tftpd() -> PathBuf {
    ["/usr/sbin/in.tftpd", "/usr/bin/in.tftpd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("in.tftpd"))
}

/// Two backends of one kind serving `dir`.
pub enum Backends {
    Hpa(Vec<TftpdHpa>),
    Embedded(Vec<EmbeddedServer>),
}

impl Backends {
    pub async fn start(kind: &str, dir: &Path, count: usize) -> Backends {
        match kind {
            "tftpd-hpa" => Backends::Hpa((0..count).map(|_| TftpdHpa::start(dir)).collect()),
            "async-tftp" => {
                let mut v = Vec::new();
                for _ in 0..count {
                    v.push(
                        EmbeddedServer::start(dir, "127.0.0.1:0".parse().unwrap())
                            .await
                            .unwrap(),
                    );
                }
                Backends::Embedded(v)
            }
            other => panic!("unknown backend kind {other}"),
        }
    }

    pub fn addresses(&self) -> Vec<SocketAddr> {
        match self {
            Backends::Hpa(v) => v.iter().map(|b| b.address).collect(),
            Backends::Embedded(v) => v.iter().map(|b| b.address).collect(),
        }
    }
}

/// A real TFTP client program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealClient {
    /// curl with `--tftp-blksize` (always sends tsize, blksize, timeout).
    Curl { blksize: u16 },
    /// atftp with blksize and windowsize options.
    Atftp { blksize: u16, windowsize: u16 },
    /// tftp-hpa in binary mode: no options at all.
    TftpHpa,
    /// busybox tftp with `-b` (always sends tsize).
    Busybox { blksize: u16 },
}

impl RealClient {
    pub fn all() -> [RealClient; 4] {
        [
            RealClient::Curl { blksize: 1468 },
            RealClient::Atftp {
                blksize: 1468,
                windowsize: 16,
            },
            RealClient::TftpHpa,
            RealClient::Busybox { blksize: 1468 },
        ]
    }

    /// The client's command line; `source` is the address curl binds (`--interface`).
    fn command(
        self,
        server: SocketAddr,
        file: &str,
        out: &Path,
        source: Option<IpAddr>,
    ) -> tokio::process::Command {
        let (host, port) = (server.ip().to_string(), server.port().to_string());
        let out = out.to_str().unwrap();
        let mut cmd;
        match self {
            RealClient::Curl { blksize } => {
                cmd = tokio::process::Command::new("curl");
                cmd.args([
                    "-sS",
                    "--max-time",
                    "120",
                    "--tftp-blksize",
                    &blksize.to_string(),
                    "-o",
                    out,
                ])
                .arg(format!("tftp://{server}/{file}"));
                if let Some(source) = source {
                    cmd.args(["--interface", &source.to_string()]);
                }
            }
            RealClient::Atftp {
                blksize,
                windowsize,
            } => {
                cmd = tokio::process::Command::new("atftp");
                cmd.args(["--get", "-r", file, "-l", out])
                    .args(["--option", &format!("blksize {blksize}")])
                    .args(["--option", &format!("windowsize {windowsize}")])
                    .args([&host, &port]);
            }
            RealClient::TftpHpa => {
                cmd = tokio::process::Command::new("tftp");
                cmd.args(["-m", "binary", &host, &port, "-c", "get", file, out]);
            }
            RealClient::Busybox { blksize } => {
                cmd = tokio::process::Command::new("busybox");
                cmd.args([
                    "tftp",
                    "-g",
                    "-r",
                    file,
                    "-l",
                    out,
                    "-b",
                    &blksize.to_string(),
                    &host,
                    &port,
                ]);
            }
        }
        cmd
    }

    /// Downloads `file` and returns its bytes, or a description of the failure.
    pub async fn get(self, server: SocketAddr, file: &str) -> Result<Vec<u8>, String> {
        self.download(server, file, None).await
    }

    /// Like [`RealClient::get`], from a socket bound to `source` (curl's `--interface`; the
    /// other clients cannot choose it).
    pub async fn get_from(
        self,
        source: IpAddr,
        server: SocketAddr,
        file: &str,
    ) -> Result<Vec<u8>, String> {
        assert!(
            matches!(self, RealClient::Curl { .. }),
            "{self:?} cannot bind a source address"
        );
        self.download(server, file, Some(source)).await
    }

    async fn download(
        self,
        server: SocketAddr,
        file: &str,
        source: Option<IpAddr>,
    ) -> Result<Vec<u8>, String> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let mut cmd = self.command(server, file, &out, source);
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let run = tokio::time::timeout(Duration::from_secs(180), cmd.output());
        let output = run
            .await
            .map_err(|_| format!("{self:?} {file}: no result after 180 s"))?
            .map_err(|e| format!("{self:?}: cannot start: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{self:?} {file}: {} {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        std::fs::read(&out).map_err(|e| format!("{self:?} {file}: no output file: {e}"))
    }
}
