//! The processes a bench run starts: tftplb itself and the backends, each a child process of
//! the harness so that its CPU time and memory are its own, read from `/proc/PID`.
//!
//! - tftplb runs as `tftplb run --config FILE`; its bound port is read back from its log line
//!   `tftp listening address=…` (it binds 127.0.0.1:0).
//! - tftpd-hpa runs inetd-style on a socket the harness bound at 127.0.0.1:0, in its own process
//!   group. It forks a child per transfer and ignores SIGCHLD, so the kernel discards the
//!   children's CPU time when they exit: it cannot be read afterwards, and the bench reports no
//!   CPU figure for tftpd-hpa ([`Backend::cpu_measurable`]). Killing the group kills the
//!   transfers in flight too (a dead server, for `failover`).
//! - An embedded (async-tftp) backend runs as this very binary re-executed with the hidden
//!   `backend-child` command: one single-threaded process per backend, again measurable alone.
//!
//! Every child gets SIGKILL when the harness dies (PR_SET_PDEATHSIG) and when its handle drops.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

/// Linux reports /proc times in USER_HZ, which is 100 on every mainstream architecture.
const TICKS_PER_SECOND: f64 = 100.0;

/// A child process, killed (with its process group) when dropped.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    pub pid: u32,
}

impl Proc {
    fn spawn(mut cmd: Command) -> Result<Proc, String> {
        cmd.process_group(0);
        // SAFETY: prctl(PR_SET_PDEATHSIG) is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {:?}: {e}", cmd.get_program()))?;
        let pid = child.id();
        Ok(Proc { child, pid })
    }

    /// Kills the process and everything it forked, and reaps it.
    pub fn kill(&mut self) {
        let _ = killpg(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn cpu(&self) -> Cpu {
        Cpu::of(self.pid)
    }

    pub fn memory(&self) -> Memory {
        Memory::of(self.pid)
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// CPU seconds of a process: its own, and those of its reaped children.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub own: f64,
    pub children: f64,
}

impl Cpu {
    pub fn of(pid: u32) -> Cpu {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return Cpu::default();
        };
        // Fields after the command name (which may contain spaces) start at field 3.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let f: Vec<f64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0.0))
            .collect();
        let field = |n: usize| f.get(n - 3).copied().unwrap_or(0.0) / TICKS_PER_SECOND;
        Cpu {
            own: field(14) + field(15),
            children: field(16) + field(17),
        }
    }

    pub fn total(self) -> f64 {
        self.own + self.children
    }

    pub fn since(self, earlier: Cpu) -> f64 {
        self.total() - earlier.total()
    }
}

/// Resident memory of a process, KiB: now and the peak (high-water mark).
#[derive(Debug, Clone, Copy, Default)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Memory {
        let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let get = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Memory {
            rss_kib: get("VmRSS:"),
            hwm_kib: get("VmHWM:"),
        }
    }
}

/// Which TFTP server the backends are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum BackendKind {
    /// tftpd-hpa (forks a process per transfer; no windowsize).
    TftpdHpa,
    /// async-tftp in a single-threaded child process (supports windowsize).
    Embedded,
}

impl BackendKind {
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::TftpdHpa => "tftpd-hpa",
            BackendKind::Embedded => "embedded",
        }
    }

    /// tftpd-hpa when installed, else embedded.
    pub fn best_available() -> BackendKind {
        if in_tftpd().is_some() {
            BackendKind::TftpdHpa
        } else {
            BackendKind::Embedded
        }
    }
}

pub fn in_tftpd() -> Option<PathBuf> {
    ["/usr/sbin/in.tftpd", "/usr/bin/in.tftpd"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// A running backend TFTP server.
#[derive(Debug)]
pub struct Backend {
    pub address: SocketAddr,
    pub kind: BackendKind,
    pub proc: Proc,
}

impl Backend {
    /// Whether the backend's CPU time can be read: not for tftpd-hpa (see the module doc).
    pub fn cpu_measurable(&self) -> bool {
        self.kind != BackendKind::TftpdHpa
    }

    pub fn start(kind: BackendKind, dir: &Path) -> Result<Backend, String> {
        match kind {
            BackendKind::TftpdHpa => start_hpa(dir),
            BackendKind::Embedded => start_embedded(dir),
        }
    }
}

fn start_hpa(dir: &Path) -> Result<Backend, String> {
    let exe = in_tftpd().ok_or("in.tftpd not found (apt-get install tftpd-hpa)")?;
    let socket = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = socket.local_addr().map_err(|e| e.to_string())?;
    let fd: std::os::fd::OwnedFd = socket.into();
    let mut cmd = Command::new(exe);
    // -s: chroot into dir; -t: exit after 10 min without a request, should we leak it.
    cmd.args(["-s", "-t", "600"])
        .arg(dir)
        .stdin(Stdio::from(fd))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let proc = Proc::spawn(cmd)?;
    Ok(Backend {
        address,
        kind: BackendKind::TftpdHpa,
        proc,
    })
}

fn start_embedded(dir: &Path) -> Result<Backend, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = Command::new(exe);
    cmd.arg("backend-child")
        .arg("--dir")
        .arg(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut proc = Proc::spawn(cmd)?;
    let stdout = proc.child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    let address = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("embedded backend said {line:?}"))?;
    Ok(Backend {
        address,
        kind: BackendKind::Embedded,
        proc,
    })
}

/// The `backend-child` command: serves `dir` with async-tftp on 127.0.0.1:0 on one thread,
/// prints `listening ADDR`, and exits when its stdin closes (the harness went away).
pub fn backend_child(dir: &Path) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = match tftplb::demo::EmbeddedServer::start(dir, bind).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("backend-child: {e}");
                return std::process::ExitCode::FAILURE;
            }
        };
        println!("listening {}", server.address);
        let eof = tokio::task::spawn_blocking(|| {
            let _ = std::io::stdin().read_to_end(&mut Vec::new());
        });
        let _ = eof.await;
        std::process::ExitCode::SUCCESS
    })
}

/// tftplb running as a child process.
#[derive(Debug)]
pub struct TftplbProc {
    pub address: SocketAddr,
    pub proc: Proc,
    pub log: PathBuf,
}

/// Settings of the tftplb under test.
#[derive(Debug, Clone)]
pub struct TftplbSettings {
    pub setup_timeout_ms: u64,
    pub max_sessions: usize,
    pub balance: &'static str,
    /// `[pool.health]`: probe this file every so many ms (none: no health checks).
    pub health: Option<(String, u64)>,
    /// `[tftp] read_ahead`, blocks (0: relay packet for packet).
    pub read_ahead: u16,
    /// Keep `[limits]` at their defaults (per-client rate and sessions), as in production;
    /// otherwise they are off, so that the load from one address is not limited.
    pub default_limits: bool,
    /// Every file of the pool served from memory (`[pool.cache]`, revalidated hourly).
    pub cache: bool,
}

impl Default for TftplbSettings {
    fn default() -> Self {
        TftplbSettings {
            setup_timeout_ms: 700,
            max_sessions: 10_000,
            balance: "round-robin",
            health: None,
            read_ahead: 2,
            default_limits: false,
            cache: false,
        }
    }
}

impl TftplbProc {
    /// Starts `exe run --config …` in `work` over `backends`, and waits for its listening line.
    pub fn start(
        exe: &Path,
        work: &Path,
        backends: &[SocketAddr],
        settings: &TftplbSettings,
    ) -> Result<TftplbProc, String> {
        let config = work.join("tftplb.toml");
        let log = work.join("tftplb.log");
        std::fs::write(&config, config_text(backends, settings)).map_err(|e| e.to_string())?;
        let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let mut cmd = Command::new(exe);
        cmd.arg("run")
            .arg("--config")
            .arg(&config)
            .env("TFTPLB_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        let proc = Proc::spawn(cmd)?;
        let address = wait_for_listening(&log, Duration::from_secs(20))?;
        Ok(TftplbProc { address, proc, log })
    }
}

impl TftplbProc {
    /// Sessions by outcome, once tftplb's log has caught up with the run: a session ends a
    /// moment after its client is done (the final ACK) and its line is written by tftplb's
    /// log thread a moment later still, so the log is read until two reads 200 ms apart
    /// agree (3 s at most).
    pub async fn outcomes(&self) -> std::collections::BTreeMap<String, usize> {
        let mut last = self.outcomes_now();
        for _ in 0..15 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let now = self.outcomes_now();
            if now == last {
                break;
            }
            last = now;
        }
        last
    }

    /// Sessions by outcome, counted from tftplb's `session end` log lines so far.
    fn outcomes_now(&self) -> std::collections::BTreeMap<String, usize> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let mut counts = std::collections::BTreeMap::new();
        for line in text.lines().filter(|l| l.contains("session end")) {
            if let Some(o) = line
                .split("outcome=")
                .nth(1)
                .and_then(|o| o.split_whitespace().next())
            {
                *counts.entry(o.trim_matches('"').to_string()).or_default() += 1;
            }
        }
        counts
    }
}

fn config_text(backends: &[SocketAddr], s: &TftplbSettings) -> String {
    let limits = if s.default_limits {
        ""
    } else {
        "[limits]\nrate_per_client = 0\nmax_sessions_per_client = 0\n\n"
    };
    let mut text = format!(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n{limits}\
         [tftp]\nlisten = [\"127.0.0.1:0\"]\nsetup_timeout = \"{}ms\"\nmax_sessions = {}\nread_ahead = {}\n\n\
         [[pool]]\nname = \"bench\"\nbalance = \"{}\"\n",
        s.setup_timeout_ms, s.max_sessions, s.read_ahead, s.balance
    );
    if let Some((file, interval_ms)) = &s.health {
        text.push_str(&format!(
            "\n[pool.health]\nfile = \"{file}\"\ninterval = \"{interval_ms}ms\"\n"
        ));
    }
    if s.cache {
        text.push_str("\n[pool.cache]\nfiles = [\"**\"]\nrevalidate = \"1h\"\n");
    }
    for b in backends {
        text.push_str(&format!("\n[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    text
}

/// Reads the log until the `tftp listening address=…` line appears.
fn wait_for_listening(log: &Path, patience: Duration) -> Result<SocketAddr, String> {
    let started = Instant::now();
    while started.elapsed() < patience {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(addr) = text
            .lines()
            .filter(|l| l.contains("tftp listening"))
            .find_map(|l| l.split("address=").nth(1))
            .and_then(|a| a.split_whitespace().next())
            .and_then(|a| a.parse().ok())
        {
            return Ok(addr);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    Err(format!(
        "tftplb did not log its listening address within {patience:?}; log:\n{text}"
    ))
}
