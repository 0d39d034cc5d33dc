//! `dns`: queries per second and latency of tftplb's DNS server beside NSD and Knot (whichever
//! are installed), each started by the harness on a loopback port with the same zone and the
//! same core budget (`taskset -c <server-cores>`, one worker each), and driven by `dnsperf`
//! pinned to other cores, in the same run, servers interleaved round by round.
//!
//! The zone: SOA, NS, a balanced name `pvs` with four addresses (for NSD and Knot a plain A
//! RRset with the same four), a CNAME, and queries mixing the balanced name (80 %), the CNAME,
//! the SOA and a name that does not exist. Without `dnsperf` a built-in generator (sequential
//! query/answer per client, much slower than dnsperf: its figures are not comparable with
//! dnsperf's) keeps the scenario and its smoke test runnable; the report says which was used.

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::Ctx;
use crate::report::{self, WorkDir, f};

const ZONE: &str = "bench.test.";
const BACKENDS: [&str; 4] = ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.14"];
/// The query mix: (name, type, share in a 10-line file).
const QUERIES: [(&str, &str, usize); 4] = [
    ("pvs.bench.test", "A", 7),
    ("www.bench.test", "A", 1),
    ("bench.test", "SOA", 1),
    ("nope.bench.test", "A", 1),
];

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    /// Seconds of load per server per round.
    #[arg(long, default_value_t = 10)]
    pub duration_s: u64,
    /// Rounds; servers are interleaved within each round.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// dnsperf clients (-c), or built-in generator tasks.
    #[arg(long, default_value_t = 4)]
    pub clients: u32,
    /// dnsperf outstanding queries (-q).
    #[arg(long, default_value_t = 100)]
    pub outstanding: u32,
    /// CPU list every server is pinned to (taskset -c).
    #[arg(long, default_value = "0")]
    pub server_cores: String,
    /// CPU list the load generator is pinned to.
    #[arg(long, default_value = "1")]
    pub load_cores: String,
    /// Servers to measure (tftplb, nsd, knot); missing ones are skipped with a note.
    #[arg(long, value_delimiter = ',', default_value = "tftplb,nsd,knot")]
    pub servers: Vec<String>,
    /// Load generator: auto (dnsperf if installed), dnsperf, builtin.
    #[arg(long, default_value = "auto")]
    pub generator: String,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            duration_s: 10,
            rounds: 2,
            clients: 4,
            outstanding: 100,
            server_cores: "0".into(),
            load_cores: "1".into(),
            servers: vec!["tftplb".into(), "nsd".into(), "knot".into()],
            generator: "auto".into(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub status: &'static str,
    pub generator: String,
    pub skipped: Vec<String>,
    pub servers: Vec<ServerResult>,
    /// Exact command lines, for the README.
    pub commands: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ServerResult {
    pub server: String,
    pub version: String,
    /// Per round.
    pub qps: Vec<f64>,
    pub qps_median: f64,
    pub latency_avg_ms: f64,
    pub lost: u64,
    pub completed: u64,
    /// Median qps relative to NSD's (when NSD ran).
    pub vs_nsd: Option<f64>,
}

/// One measurement.
#[derive(Debug, Default, Clone, Copy)]
struct Run {
    qps: f64,
    latency_avg_s: f64,
    completed: u64,
    lost: u64,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let work = WorkDir::new("dns")?;
    let generator = match p.generator.as_str() {
        "auto" if which("dnsperf").is_some() => "dnsperf",
        "auto" => "builtin",
        g @ ("dnsperf" | "builtin") => g,
        g => return Err(format!("--generator {g}: auto, dnsperf or builtin")),
    };
    if generator == "dnsperf" && which("dnsperf").is_none() {
        return Err("dnsperf not found (apt-get install dnsperf)".into());
    }
    let queries = work.path.join("queries.txt");
    std::fs::write(&queries, query_file()).map_err(|e| e.to_string())?;
    std::fs::write(work.path.join("bench.test.zone"), zone_file()).map_err(|e| e.to_string())?;

    let mut skipped = Vec::new();
    let mut kinds = Vec::new();
    for s in &p.servers {
        match Kind::parse(s) {
            Some(k) if k.available(ctx) => kinds.push(k),
            Some(k) => skipped.push(format!("{s}: {} not installed", k.program(ctx).display())),
            None => return Err(format!("--servers: unknown server {s:?}")),
        }
    }
    for s in &skipped {
        println!("dns: skipped {s}");
    }
    println!(
        "\ndns: {} s per server per round, {} rounds, generator {generator}, servers on CPU {}, load on CPU {}",
        p.duration_s, p.rounds, p.server_cores, p.load_cores
    );
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); kinds.len()];
    let mut commands = Vec::new();
    for round in 0..p.rounds {
        for (i, k) in kinds.iter().enumerate() {
            let server = Server::start(*k, ctx, &work.path, &p.server_cores)?;
            let (r, cmd) = match generator {
                "dnsperf" => dnsperf(server.addr, &queries, p)?,
                _ => (
                    builtin(server.addr, p).await,
                    "built-in generator".to_string(),
                ),
            };
            if round == 0 {
                commands.push(server.command.clone());
                commands.push(cmd);
            }
            println!(
                "  round {} {:7} {:>10} q/s  avg {:>7} ms  lost {}",
                round + 1,
                k.name(),
                f(r.qps, 0),
                f(r.latency_avg_s * 1000.0, 3),
                r.lost
            );
            runs[i].push(r);
        }
    }
    let servers = summarise(&kinds, &runs, ctx);
    let rows: Vec<Vec<String>> = servers
        .iter()
        .map(|s| {
            vec![
                s.server.clone(),
                f(s.qps_median, 0),
                f(s.latency_avg_ms, 3),
                s.vs_nsd.map_or("-".into(), |v| f(v, 2)),
                s.version.clone(),
            ]
        })
        .collect();
    let mut table = vec![vec![
        "server".into(),
        "q/s (median)".into(),
        "avg latency ms".into(),
        "vs NSD".into(),
        "version".into(),
    ]];
    table.extend(rows);
    report::print_table("dns", &table);
    let r = Results {
        status: "measured",
        generator: generator.into(),
        skipped,
        servers,
        commands,
    };
    report::write_json(&ctx.out, "dns", &ctx.meta, p, &r)?;
    Ok(())
}

fn summarise(kinds: &[Kind], runs: &[Vec<Run>], ctx: &Ctx) -> Vec<ServerResult> {
    let mut out: Vec<ServerResult> = kinds
        .iter()
        .zip(runs)
        .map(|(k, rs)| {
            let mut q: Vec<f64> = rs.iter().map(|r| r.qps).collect();
            q.sort_by(f64::total_cmp);
            let median = if q.is_empty() {
                0.0
            } else if q.len() % 2 == 1 {
                q[q.len() / 2]
            } else {
                (q[q.len() / 2 - 1] + q[q.len() / 2]) / 2.0
            };
            let n = rs.len().max(1) as f64;
            ServerResult {
                server: k.name().into(),
                version: k.version(ctx),
                qps: rs.iter().map(|r| r.qps).collect(),
                qps_median: median,
                latency_avg_ms: rs.iter().map(|r| r.latency_avg_s).sum::<f64>() / n * 1000.0,
                lost: rs.iter().map(|r| r.lost).sum(),
                completed: rs.iter().map(|r| r.completed).sum(),
                vs_nsd: None,
            }
        })
        .collect();
    let nsd = out.iter().find(|s| s.server == "nsd").map(|s| s.qps_median);
    if let Some(nsd) = nsd.filter(|q| *q > 0.0) {
        out.iter_mut()
            .for_each(|s| s.vs_nsd = Some(s.qps_median / nsd));
    }
    out
}

fn query_file() -> String {
    let mut t = String::new();
    for (name, ty, n) in QUERIES {
        for _ in 0..n {
            t.push_str(&format!("{name} {ty}\n"));
        }
    }
    t
}

fn zone_file() -> String {
    let mut z = format!(
        "$ORIGIN {ZONE}\n$TTL 10\n@ IN SOA ns1.{ZONE} hostmaster.{ZONE} 1 3600 600 86400 10\n\
         @ IN NS ns1\nns1 IN A 127.0.0.1\nwww IN CNAME pvs\n"
    );
    for b in BACKENDS {
        z.push_str(&format!("pvs IN A {b}\n"));
    }
    z
}

fn tftplb_config() -> String {
    let mut c = String::from("[tftp]\nlisten = [\"127.0.0.1:0\"]\n\n[[pool]]\nname = \"pvs\"\n");
    for b in BACKENDS {
        c.push_str(&format!("[[pool.backend]]\naddress = \"{b}:69\"\n"));
    }
    c.push_str(&format!(
        "\n[dns]\nlisten = [\"127.0.0.1:0\"]\nzone = \"{ZONE}\"\nnameservers = [\"ns1\"]\n\
         [[dns.name]]\nname = \"pvs\"\npool = \"pvs\"\n\
         [[dns.record]]\nname = \"ns1\"\ntype = \"A\"\nvalue = \"127.0.0.1\"\n\
         [[dns.record]]\nname = \"www\"\ntype = \"CNAME\"\nvalue = \"pvs\"\n"
    ));
    c
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tftplb,
    Nsd,
    Knot,
}

impl Kind {
    fn parse(s: &str) -> Option<Kind> {
        match s {
            "tftplb" => Some(Kind::Tftplb),
            "nsd" => Some(Kind::Nsd),
            "knot" => Some(Kind::Knot),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Kind::Tftplb => "tftplb",
            Kind::Nsd => "nsd",
            Kind::Knot => "knot",
        }
    }

    fn program(self, ctx: &Ctx) -> PathBuf {
        match self {
            Kind::Tftplb => ctx.tftplb.clone(),
            Kind::Nsd => which("nsd").unwrap_or_else(|| "nsd".into()),
            Kind::Knot => which("knotd").unwrap_or_else(|| "knotd".into()),
        }
    }

    fn available(self, ctx: &Ctx) -> bool {
        self.program(ctx).exists()
    }

    fn version(self, ctx: &Ctx) -> String {
        let flag = match self {
            Kind::Tftplb => "--version",
            Kind::Nsd => "-v",
            Kind::Knot => "-V",
        };
        Command::new(self.program(ctx))
            .arg(flag)
            .output()
            .map(|o| {
                let text = [o.stdout, o.stderr].concat();
                String::from_utf8_lossy(&text)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_string()
            })
            .unwrap_or_default()
    }
}

/// A DNS server child process (killed with its process group when dropped).
struct Server {
    addr: SocketAddr,
    child: Child,
    command: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(kind: Kind, ctx: &Ctx, work: &Path, cores: &str) -> Result<Server, String> {
        let dir = work.join(kind.name());
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        std::fs::copy(work.join("bench.test.zone"), dir.join("bench.test.zone"))
            .map_err(|e| e.to_string())?;
        let log = dir.join("server.log");
        let (args, port) = match kind {
            Kind::Tftplb => {
                let config = dir.join("tftplb.toml");
                std::fs::write(&config, tftplb_config()).map_err(|e| e.to_string())?;
                (vec!["run".into(), "--config".into(), path(&config)], None)
            }
            Kind::Nsd => {
                let port = free_port()?;
                let conf = dir.join("nsd.conf");
                std::fs::write(&conf, nsd_config(&dir, port)).map_err(|e| e.to_string())?;
                (vec!["-d".into(), "-c".into(), path(&conf)], Some(port))
            }
            Kind::Knot => {
                let port = free_port()?;
                let conf = dir.join("knot.conf");
                std::fs::write(&conf, knot_config(&dir, port)).map_err(|e| e.to_string())?;
                (vec!["-c".into(), path(&conf)], Some(port))
            }
        };
        let program = kind.program(ctx);
        let mut cmd = Command::new("taskset");
        cmd.args(["-c", cores])
            .arg(&program)
            .args(&args)
            .env("TFTPLB_LOG", "info,hickory_server=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).map_err(|e| e.to_string())?);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let command = format!(
            "taskset -c {cores} {} {}",
            program.display(),
            args.join(" ")
        );
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start taskset (util-linux): {e}"))?;
        let mut server = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port.unwrap_or(0))),
            child,
            command,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if server.addr.port() == 0 {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if let Some(a) = dns_listening(&text) {
                    server.addr = a;
                }
            }
            if server.addr.port() != 0 && answers(server.addr) {
                return Ok(server);
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("{} exited ({status}):\n{text}", kind.name()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        Err(format!(
            "{} did not answer within 20 s:\n{text}",
            kind.name()
        ))
    }
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

fn dns_listening(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|l| l.contains("dns listening") && l.contains("proto=udp"))
        .find_map(|l| l.split("address=").nth(1))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.parse().ok())
}

/// A port free for both UDP and TCP right now (the server binds it a moment later).
fn free_port() -> Result<u16, String> {
    for _ in 0..20 {
        let u = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let port = u.local_addr().map_err(|e| e.to_string())?.port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err("no free port for UDP and TCP".into())
}

/// NSD with one server process; response rate limiting (on by default: 200 answers/s per
/// /24) off, or it would measure the limit.
fn nsd_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "server:\n  ip-address: 127.0.0.1@{port}\n  server-count: 1\n  username: \"\"\n  chroot: \"\"\n  \
         zonesdir: \"{d}\"\n  database: \"\"\n  zonelistfile: \"{d}/zone.list\"\n  \
         xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  \
         logfile: \"{d}/nsd.log\"\n  verbosity: 0\n  hide-version: yes\n  \
         rrl-ratelimit: 0\n  rrl-whitelist-ratelimit: 0\n\
         remote-control:\n  control-enable: no\n\
         zone:\n  name: bench.test\n  zonefile: \"{d}/bench.test.zone\"\n"
    )
}

fn knot_config(dir: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        "server:\n  listen: 127.0.0.1@{port}\n  rundir: \"{d}\"\n  udp-workers: 1\n  tcp-workers: 1\n  \
         background-workers: 1\n\
         database:\n  storage: \"{d}/db\"\n\
         log:\n  - target: stderr\n    any: warning\n\
         template:\n  - id: default\n    storage: \"{d}\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    \
         journal-content: none\n\
         zone:\n  - domain: bench.test\n"
    )
}

/// `dnsperf` pinned to the load cores; its summary parsed.
fn dnsperf(addr: SocketAddr, queries: &Path, p: &Params) -> Result<(Run, String), String> {
    let args = vec![
        "-c".to_string(),
        p.load_cores.clone(),
        "dnsperf".into(),
        "-s".into(),
        addr.ip().to_string(),
        "-p".into(),
        addr.port().to_string(),
        "-d".into(),
        path(queries),
        "-l".into(),
        p.duration_s.to_string(),
        "-c".into(),
        p.clients.to_string(),
        "-q".into(),
        p.outstanding.to_string(),
    ];
    let out = Command::new("taskset")
        .args(&args)
        .output()
        .map_err(|e| format!("dnsperf: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let num = |key: &str| -> f64 {
        text.lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let run = Run {
        qps: num("Queries per second:"),
        latency_avg_s: num("Average Latency (s):"),
        completed: num("Queries completed:") as u64,
        lost: num("Queries lost:") as u64,
    };
    if run.completed == 0 {
        return Err(format!(
            "dnsperf against {addr} completed nothing:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok((run, format!("taskset {}", args.join(" "))))
}

/// Does a server at `addr` answer an SOA query?
fn answers(addr: SocketAddr) -> bool {
    let Ok(s) = UdpSocket::bind("127.0.0.1:0") else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    let q = query(0x4242, "bench.test", 6);
    if s.send_to(&q, addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 1500];
    matches!(s.recv_from(&mut buf), Ok((n, _)) if n >= 12 && buf[..2] == [0x42, 0x42])
}

/// A query packet: id, RD off, one question.
fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
    let mut p = Vec::with_capacity(64);
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        p.push(label.len() as u8);
        p.extend_from_slice(label.as_bytes());
    }
    p.push(0);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&1u16.to_be_bytes());
    p
}

/// The fallback generator: `clients` tasks, each one query at a time, for the duration.
async fn builtin(addr: SocketAddr, p: &Params) -> Run {
    let deadline = Instant::now() + Duration::from_secs(p.duration_s);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..p.clients.max(1) {
        tasks.spawn(async move {
            let Ok(sock) = tokio::net::UdpSocket::bind("127.0.0.1:0").await else {
                return (0u64, 0u64, 0.0f64);
            };
            let mut mix = Vec::new();
            for (name, ty, n) in QUERIES {
                let t = if ty == "SOA" { 6 } else { 1 };
                mix.extend(std::iter::repeat_n((name, t), n));
            }
            let (mut done, mut lost, mut latency) = (0u64, 0u64, 0.0f64);
            let mut buf = [0u8; 1500];
            let mut i = c as usize;
            while Instant::now() < deadline {
                let (name, t) = mix[i % mix.len()];
                let id = (i % 65536) as u16;
                i += 1;
                let start = Instant::now();
                if sock.send_to(&query(id, name, t), addr).await.is_err() {
                    lost += 1;
                    continue;
                }
                let wait = tokio::time::timeout(Duration::from_secs(1), async {
                    loop {
                        match sock.recv_from(&mut buf).await {
                            Ok((n, _)) if n >= 12 && buf[..2] == id.to_be_bytes() => return true,
                            Ok(_) => continue,
                            Err(_) => return false,
                        }
                    }
                });
                if wait.await.unwrap_or(false) {
                    done += 1;
                    latency += start.elapsed().as_secs_f64();
                } else {
                    lost += 1;
                }
            }
            (done, lost, latency)
        });
    }
    let (mut done, mut lost, mut latency) = (0, 0, 0.0);
    while let Some(Ok((d, l, t))) = tasks.join_next().await {
        done += d;
        lost += l;
        latency += t;
    }
    Run {
        qps: done as f64 / p.duration_s.max(1) as f64,
        latency_avg_s: if done == 0 {
            0.0
        } else {
            latency / done as f64
        },
        completed: done,
        lost,
    }
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(program))
        .find(|p| p.exists())
}
