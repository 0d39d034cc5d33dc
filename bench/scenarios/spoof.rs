//! `spoof`: what one spoofed request makes a server send to the address it names, and how fast
//! spoofed requests must come to delay a real client by a second.
//!
//! - **Reflection.** Requests for a 9,728-byte file, with options (blksize 1468, tsize) and
//!   without, from sockets that receive but never answer, as the victim of a spoofed request
//!   does (a firewalled host: no ICMP back). Every datagram they get within `--window-s` is
//!   counted (packets, UDP payload bytes), for tftplb over tftpd-hpa, tftplb over the embedded
//!   backend, and tftpd-hpa itself.
//! - **Delay.** For each rate, a fresh tftplb with the default `[limits]` over one embedded
//!   backend, spoofed requests with options at that rate for `--warm-s`, then real downloads
//!   (blksize 1468, tsize, 1 s retry x 10) while the flood goes on. The delay is a download's
//!   time minus its time without a flood; a failed download counts as delayed. Two floods:
//!   from the real client's own address, and from 1,024 other addresses, each request from a
//!   new source port. The figure is the lowest rate that delays a download by a second or
//!   more.
//!
//! `--tftplb` picks the binary, so the same run measures a build before and after a change.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Serialize;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Ctx;
use crate::load::{self, BenchFile, ClientParams};
use crate::procs::{Backend, BackendKind, TftplbProc, TftplbSettings, in_tftpd};
use crate::report::{self, WorkDir, f};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    /// How long each spoofed request's datagrams are counted, seconds.
    #[arg(long, default_value_t = 45)]
    pub window_s: u64,
    /// Spoofed requests per target and kind (the figures are means).
    #[arg(long, default_value_t = 3)]
    pub requests: usize,
    /// Flood rates from the real client's own address, requests per second.
    #[arg(long, value_delimiter = ',', default_value = "0.25,0.5,1,2,5,10,20,40")]
    pub rates_own: Vec<f64>,
    /// Flood rates from 1,024 other addresses, requests per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,400,1000,2000,4000,8000"
    )]
    pub rates_many: Vec<f64>,
    /// How long each flood runs before the real downloads, seconds (longer than the 30 s a
    /// session could be held).
    #[arg(long, default_value_t = 35)]
    pub warm_s: u64,
    /// Real downloads at each rate.
    #[arg(long, default_value_t = 3)]
    pub downloads: usize,
    /// tftplb's `max_sessions`.
    #[arg(long, default_value_t = 10_000)]
    pub max_sessions: usize,
}

super::defaults_from_args!(Params, "spoof");

#[derive(Debug, Serialize)]
pub struct Reflection {
    pub target: String,
    pub options: bool,
    pub packets_per_request: f64,
    pub bytes_per_request: f64,
    /// When the last datagram came, seconds after the request (mean).
    pub last_after_s: f64,
}

#[derive(Debug, Serialize)]
pub struct Delay {
    pub flood: &'static str,
    pub rate: f64,
    /// Each download's delay, seconds (none for a failed one).
    pub delays_s: Vec<f64>,
    pub failed: usize,
    pub delayed: bool,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub reflection: Vec<Reflection>,
    pub baseline_s: f64,
    pub delay: Vec<Delay>,
    /// The lowest rate that delayed a download by a second or more, per flood.
    pub threshold_own_address: Option<f64>,
    pub threshold_many_addresses: Option<f64>,
    /// Runs that could not be measured (a baseline download that failed).
    pub failures: usize,
}

const FILE: &str = "ARDBP32.BIN";

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let work = WorkDir::new("spoof")?;
    let file = BenchFile::new(FILE, 9_728, 1);
    let tree = work.path.join("tree");
    load::write_tree(&tree, std::slice::from_ref(&file))?;
    let embedded = Backend::start(BackendKind::Embedded, &tree)?;
    let reflection = reflection(ctx, p, &work.path, &tree, embedded.address).await?;
    let baseline = baseline(ctx, &work.path, embedded.address, &file, p).await?;
    let mut delay = Vec::new();
    for (flood, rates) in [(Flood::Own, &p.rates_own), (Flood::Many, &p.rates_many)] {
        for &rate in rates {
            let dir = work.path.join(format!("{}-{rate}", flood.name()));
            let d = delay_at(ctx, p, &dir, embedded.address, &file, flood, rate).await?;
            delay.push(d.measured(flood, rate, baseline));
            println!("  {} at {rate}/s: {:?}", flood.name(), delay.last());
        }
    }
    let threshold = |name| {
        delay
            .iter()
            .find(|d| d.flood == name && d.delayed)
            .map(|d| d.rate)
    };
    let r = Results {
        threshold_own_address: threshold(Flood::Own.name()),
        threshold_many_addresses: threshold(Flood::Many.name()),
        reflection,
        baseline_s: baseline,
        delay,
        failures: 0,
    };
    print(&r);
    let path = report::write_json(&ctx.out, "spoof", &ctx.meta, p, &r)?;
    println!("  json: {}", path.display());
    ctx.plot("spoof.svg", |path| plot(path, &r));
    Ok(())
}

/// A read request for [`FILE`], with the options an iPXE-like client sends or none.
fn request(options: bool) -> Vec<u8> {
    let mut o = Options::default();
    if options {
        o.push("blksize", "1468");
        o.push("tsize", "0");
    }
    Packet::Rrq(Request {
        filename: FILE.into(),
        mode: Mode::Octet,
        options: o,
    })
    .encode()
}

fn settings(p: &Params) -> TftplbSettings {
    TftplbSettings {
        max_sessions: p.max_sessions,
        default_limits: true,
        ..TftplbSettings::default()
    }
}

/// Spoofed requests to each target, their datagrams counted.
async fn reflection(
    ctx: &Ctx,
    p: &Params,
    work: &Path,
    tree: &Path,
    embedded: SocketAddr,
) -> Result<Vec<Reflection>, String> {
    let hpa = match in_tftpd() {
        Some(_) => Some(Backend::start(BackendKind::TftpdHpa, tree)?),
        None => None,
    };
    let mut lbs = Vec::new();
    let mut targets = vec![];
    for (name, backend) in [
        ("tftpd-hpa", hpa.as_ref().map(|b| b.address)),
        ("embedded", Some(embedded)),
    ] {
        let Some(backend) = backend else { continue };
        let dir = work.join(format!("reflect-{name}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let lb = TftplbProc::start(&ctx.tftplb, &dir, &[backend], &settings(p))?;
        targets.push((format!("tftplb over {name}"), lb.address));
        lbs.push(lb);
    }
    if let Some(h) = &hpa {
        targets.push(("tftpd-hpa itself".to_string(), h.address));
    }
    let window = Duration::from_secs(p.window_s);
    let mut runs = tokio::task::JoinSet::new();
    for (target, address) in &targets {
        for options in [true, false] {
            for _ in 0..p.requests.max(1) {
                let (target, address) = (target.clone(), *address);
                runs.spawn(
                    async move { (target, options, victim(address, options, window).await) },
                );
            }
        }
    }
    let mut got: Vec<(String, bool, (usize, usize, f64))> = Vec::new();
    while let Some(done) = runs.join_next().await {
        let (target, options, counted) = done.map_err(|e| e.to_string())?;
        got.push((target, options, counted?));
    }
    Ok(targets
        .iter()
        .flat_map(|(t, _)| [true, false].map(|o| (t.clone(), o)))
        .map(|(target, options)| mean_of(&got, target, options))
        .collect())
}

/// Sends one spoofed request to `server` and counts what comes back within `window`:
/// (packets, payload bytes, seconds after the request the last one came).
async fn victim(
    server: SocketAddr,
    options: bool,
    window: Duration,
) -> Result<(usize, usize, f64), String> {
    let socket = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    socket
        .send_to(&request(options), server)
        .await
        .map_err(|e| e.to_string())?;
    let (mut packets, mut bytes, mut last) = (0, 0, 0.0);
    let mut buf = vec![0u8; 65_536];
    let until = started + window;
    while let Ok(Ok((n, _))) = tokio::time::timeout_at(until, socket.recv_from(&mut buf)).await {
        packets += 1;
        bytes += n;
        last = started.elapsed().as_secs_f64();
    }
    Ok((packets, bytes, last))
}

fn mean_of(
    got: &[(String, bool, (usize, usize, f64))],
    target: String,
    options: bool,
) -> Reflection {
    let runs: Vec<_> = got
        .iter()
        .filter(|(t, o, _)| *t == target && *o == options)
        .map(|(_, _, r)| *r)
        .collect();
    let n = runs.len().max(1) as f64;
    Reflection {
        packets_per_request: runs.iter().map(|r| r.0 as f64).sum::<f64>() / n,
        bytes_per_request: runs.iter().map(|r| r.1 as f64).sum::<f64>() / n,
        last_after_s: runs.iter().map(|r| r.2).sum::<f64>() / n,
        target,
        options,
    }
}

/// Where a flood's requests claim to come from.
#[derive(Debug, Clone, Copy)]
enum Flood {
    /// The real client's own address, other ports.
    Own,
    /// 1,024 other addresses (127.3.x.y).
    Many,
}

impl Flood {
    fn name(self) -> &'static str {
        match self {
            Flood::Own => "own-address",
            Flood::Many => "many-addresses",
        }
    }

    fn sources(self) -> Vec<IpAddr> {
        match self {
            Flood::Own => vec![IpAddr::from([127, 0, 0, 1])],
            Flood::Many => (0..1024u16)
                .map(|i| IpAddr::from([127, 3, (i / 250) as u8, (i % 250) as u8 + 1]))
                .collect(),
        }
    }
}

/// The real client's download: an iPXE-like request that retries for 10 s.
fn client() -> tftplb::tftp::client::ClientConfig {
    ClientParams {
        blksize: Some(1468),
        windowsize: None,
        tsize: true,
        retry_ms: 1000,
        retries: 10,
    }
    .config()
}

/// The median download time without a flood, seconds.
async fn baseline(
    ctx: &Ctx,
    work: &Path,
    backend: SocketAddr,
    file: &BenchFile,
    p: &Params,
) -> Result<f64, String> {
    let dir = work.join("baseline");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let lb = TftplbProc::start(&ctx.tftplb, &dir, &[backend], &settings(p))?;
    let mut times = Vec::new();
    for _ in 0..5 {
        let got = load::get(lb.address, file, &client(), false).await;
        times.push(
            got.map_err(|e| format!("baseline download: {e}"))?
                .elapsed
                .as_secs_f64(),
        );
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Download times (none for a failed download) during a flood at `rate`.
struct Timed(Vec<Option<f64>>);

impl Timed {
    fn measured(self, flood: Flood, rate: f64, baseline: f64) -> Delay {
        let delays_s: Vec<f64> = self.0.iter().flatten().map(|t| t - baseline).collect();
        let failed = self.0.iter().filter(|t| t.is_none()).count();
        Delay {
            flood: flood.name(),
            rate,
            delayed: failed > 0 || delays_s.iter().any(|d| *d >= 1.0),
            delays_s,
            failed,
        }
    }
}

async fn delay_at(
    ctx: &Ctx,
    p: &Params,
    dir: &Path,
    backend: SocketAddr,
    file: &BenchFile,
    flood: Flood,
    rate: f64,
) -> Result<Timed, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let lb = TftplbProc::start(&ctx.tftplb, dir, &[backend], &settings(p))?;
    let stop = Arc::new(AtomicBool::new(false));
    let (address, flag) = (lb.address, stop.clone());
    let sender = std::thread::spawn(move || send_flood(address, flood, rate, flag));
    tokio::time::sleep(Duration::from_secs(p.warm_s)).await;
    let mut times = Vec::new();
    for _ in 0..p.downloads.max(1) {
        let got = load::get(lb.address, file, &client(), false).await;
        times.push(got.ok().map(|g| g.elapsed.as_secs_f64()));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::task::spawn_blocking(move || sender.join()).await;
    Ok(Timed(times))
}

/// Sends spoofed requests with options to `server` at `rate` a second until `stop`, each
/// from a fresh socket (a new source port: a spoofer picks any) on one of the flood's
/// addresses, closed at once. A thread of its own, so the sending keeps its pace.
fn send_flood(server: SocketAddr, flood: Flood, rate: f64, stop: Arc<AtomicBool>) {
    let sources = flood.sources();
    let rrq = request(true);
    let started = std::time::Instant::now();
    let mut sent = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = (started.elapsed().as_secs_f64() * rate) as u64;
        while sent < due {
            let ip = sources[sent as usize % sources.len()];
            if let Ok(socket) = std::net::UdpSocket::bind(SocketAddr::new(ip, 0)) {
                let _ = socket.send_to(&rrq, server);
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn print(r: &Results) {
    let mut rows = vec![
        ["sent to", "options", "packets", "bytes", "last after s"]
            .map(String::from)
            .to_vec(),
    ];
    for x in &r.reflection {
        rows.push(vec![
            x.target.clone(),
            if x.options { "blksize+tsize" } else { "none" }.into(),
            f(x.packets_per_request, 1),
            f(x.bytes_per_request, 0),
            f(x.last_after_s, 1),
        ]);
    }
    report::print_table("spoof: what one spoofed request sends to its victim", &rows);
    let mut rows = vec![
        ["flood from", "req/s", "delays s", "failed"]
            .map(String::from)
            .to_vec(),
    ];
    for d in &r.delay {
        let delays: Vec<String> = d.delays_s.iter().map(|x| f(*x, 2)).collect();
        rows.push(vec![
            d.flood.into(),
            f(d.rate, 2),
            delays.join(" "),
            d.failed.to_string(),
        ]);
    }
    report::print_table(
        &format!(
            "spoof: a real download during a flood (baseline {} s)",
            f(r.baseline_s, 3)
        ),
        &rows,
    );
    println!(
        "  a second's delay from: own address {:?} req/s, many addresses {:?} req/s",
        r.threshold_own_address, r.threshold_many_addresses
    );
}

/// The worst delay at each rate (a failed download drawn at 10 s), per flood.
fn plot(path: &Path, r: &Results) -> Result<(), String> {
    use crate::plot::{Chart, Series, draw};
    let series = [Flood::Own, Flood::Many]
        .into_iter()
        .map(|flood| Series {
            name: flood.name().into(),
            points: r
                .delay
                .iter()
                .filter(|d| d.flood == flood.name())
                .map(|d| {
                    let worst = d.delays_s.iter().copied().fold(0.0, f64::max);
                    (d.rate, if d.failed > 0 { 10.0 } else { worst })
                })
                .collect(),
        })
        .collect();
    draw(
        path,
        &Chart {
            title: "spoof: worst delay of a real download during a flood",
            x_label: "spoofed requests per second",
            y_label: "delay, seconds",
            series,
            markers: Vec::new(),
        },
    )
}
