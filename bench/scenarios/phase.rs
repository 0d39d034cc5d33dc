//! A crowd of clients, each booting: it downloads a list of files in order from its server,
//! retrying a failed download up to `attempts` times (a PXE ROM that reboots). Clients start
//! spread evenly over `ramp` (zero: all at once). Used by `storm` and `failover`.
//!
//! While the crowd runs, a sampler reads the watched process's RSS and counts the transfers in
//! flight, so memory can be put per concurrent session.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use indicatif::ProgressBar;
use serde::Serialize;
use tokio::time::Instant;

use crate::load::{self, BenchFile, ClientParams, Failure, WrongContent};
use crate::procs::Memory;

/// What a crowd does.
pub struct Crowd {
    /// One server per client (direct: spread over the backends; else tftplb's address).
    pub targets: Vec<SocketAddr>,
    pub files: Vec<BenchFile>,
    pub client: ClientParams,
    pub ramp: Duration,
    pub attempts: u32,
    /// Clients not done by then are counted as failed.
    pub deadline: Duration,
    /// Process whose memory is sampled (tftplb), if any.
    pub watch: Option<u32>,
    /// Each client sends from an address of its own (127.100.x.y), as machines on a network
    /// do; else all share 127.0.0.1 and a late packet meant for one client's port can reach
    /// another client that was given the same port.
    pub own_addresses: bool,
}

/// Client `i`'s own loopback address (Linux answers for all of 127/8 without configuration).
fn own_address(i: usize) -> std::net::IpAddr {
    std::net::Ipv4Addr::new(127, 100, (i / 250 % 250) as u8, (i % 250 + 1) as u8).into()
}

/// What a crowd measured.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CrowdResult {
    pub clients: usize,
    pub completed: usize,
    pub failed: usize,
    /// Clients that completed, but only after a failed attempt.
    pub completed_after_retry: usize,
    /// Failed download attempts, by error (first words).
    pub attempt_errors: BTreeMap<String, usize>,
    /// Attempts that ended with the wrong bytes (counted in `attempt_errors` too).
    pub wrong_content: usize,
    /// The first [`WRONG_CONTENT_KEPT`] of them, in the order they were collected.
    pub wrong_content_cases: Vec<WrongContent>,
    pub bytes: u64,
    pub wall_s: f64,
    /// Per completed client: seconds from its start to its last byte.
    #[serde(skip)]
    pub completion_s: Vec<f64>,
    /// Per completed client: seconds since the crowd started, when it finished.
    #[serde(skip)]
    pub finished_at_s: Vec<f64>,
    /// Longest time any client waited for its next block, failed attempts included.
    pub max_stall_s: f64,
    pub client_retransmissions: u64,
    pub peak_inflight: usize,
    pub baseline_rss_kib: u64,
    pub peak_rss_kib: u64,
}

/// Wrong-content cases kept in full per crowd (each is counted either way).
pub const WRONG_CONTENT_KEPT: usize = 20;

struct ClientOutcome {
    ok: bool,
    retried: bool,
    errors: Vec<Failure>,
    bytes: u64,
    elapsed: Duration,
    finished_at: Duration,
    max_stall: Duration,
    retransmissions: u64,
}

/// Runs the crowd to its end (or its deadline) and summarises it.
pub async fn run(crowd: Crowd, bar: &ProgressBar) -> CrowdResult {
    let n = crowd.targets.len();
    let started = Instant::now();
    let inflight = Arc::new(AtomicUsize::new(0));
    let baseline_rss_kib = crowd.watch.map_or(0, |p| Memory::of(p).rss_kib);
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn(sample(crowd.watch, inflight.clone(), stop.clone()));
    let shared = Arc::new((crowd.files, crowd.client));
    let mut tasks = tokio::task::JoinSet::new();
    for (i, target) in crowd.targets.into_iter().enumerate() {
        let delay = crowd.ramp.mul_f64(i as f64 / n.max(1) as f64);
        let (shared, inflight) = (shared.clone(), inflight.clone());
        let attempts = crowd.attempts;
        let source = crowd.own_addresses.then(|| own_address(i));
        tasks.spawn(async move {
            tokio::time::sleep_until(started + delay).await;
            inflight.fetch_add(1, Ordering::Relaxed);
            let out = boot(target, source, &shared.0, shared.1, attempts, started).await;
            inflight.fetch_sub(1, Ordering::Relaxed);
            out
        });
    }
    let mut result = CrowdResult {
        clients: n,
        baseline_rss_kib,
        ..CrowdResult::default()
    };
    let deadline = tokio::time::sleep_until(started + crowd.deadline);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            joined = tasks.join_next() => match joined {
                Some(Ok(out)) => { add(&mut result, out); bar.inc(1); }
                Some(Err(_)) => { result.failed += 1; bar.inc(1); }
                None => break,
            },
            _ = &mut deadline => {
                let left = tasks.len();
                tasks.abort_all();
                result.failed += left;
                *result.attempt_errors.entry("phase deadline".into()).or_default() += left;
                break;
            }
        }
    }
    result.wall_s = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Ok((rss, inflight)) = sampler.await {
        (result.peak_rss_kib, result.peak_inflight) = (rss, inflight);
    }
    result
}

/// Samples the watched process's RSS and the transfers in flight every 10 ms until `stop`;
/// returns the peaks.
async fn sample(
    watch: Option<u32>,
    inflight: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) -> (u64, usize) {
    let (mut rss, mut most) = (0, 0);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        most = most.max(inflight.load(Ordering::Relaxed));
        if let Some(pid) = watch {
            rss = rss.max(Memory::of(pid).rss_kib);
        }
    }
    (rss, most)
}

fn add(r: &mut CrowdResult, out: ClientOutcome) {
    for e in out.errors {
        let text = e.to_string();
        let key: String = text
            .split_whitespace()
            .take(6)
            .collect::<Vec<_>>()
            .join(" ");
        *r.attempt_errors.entry(key).or_default() += 1;
        if let Failure::WrongContent(w) = e {
            r.wrong_content += 1;
            if r.wrong_content_cases.len() < WRONG_CONTENT_KEPT {
                r.wrong_content_cases.push(*w);
            }
        }
    }
    r.client_retransmissions += out.retransmissions;
    r.bytes += out.bytes;
    r.max_stall_s = r.max_stall_s.max(out.max_stall.as_secs_f64());
    if out.ok {
        r.completed += 1;
        r.completed_after_retry += usize::from(out.retried);
        r.completion_s.push(out.elapsed.as_secs_f64());
        r.finished_at_s.push(out.finished_at.as_secs_f64());
    } else {
        r.failed += 1;
    }
}

/// One client's boot: every file in order, each with up to `attempts` tries.
async fn boot(
    server: SocketAddr,
    source: Option<std::net::IpAddr>,
    files: &[BenchFile],
    client: ClientParams,
    attempts: u32,
    crowd_start: Instant,
) -> ClientOutcome {
    let started = Instant::now();
    let mut cfg = client.config();
    cfg.bind = source.map(|ip| SocketAddr::new(ip, 0));
    let mut out = ClientOutcome {
        ok: true,
        retried: false,
        errors: Vec::new(),
        bytes: 0,
        elapsed: Duration::ZERO,
        finished_at: Duration::ZERO,
        max_stall: Duration::ZERO,
        retransmissions: 0,
    };
    for file in files {
        let mut lost = Duration::ZERO; // time spent in failed attempts of this file
        let mut done = false;
        for _ in 0..attempts.max(1) {
            let try_start = Instant::now();
            match load::get(server, file, &cfg, false).await {
                Ok(got) => {
                    out.bytes += got.bytes;
                    out.retransmissions += got.retransmissions;
                    out.max_stall = out.max_stall.max(got.max_gap).max(lost + got.first_data);
                    done = true;
                    break;
                }
                Err(mut e) => {
                    if let Failure::WrongContent(w) = &mut e {
                        w.bad_block_is = load::locate(&w.bad_block, files);
                        w.at_s = crowd_start.elapsed().as_secs_f64();
                        w.ended = humantime::format_rfc3339_millis(std::time::SystemTime::now())
                            .to_string();
                    }
                    out.retried = true;
                    out.errors.push(e);
                    lost += try_start.elapsed();
                    out.max_stall = out.max_stall.max(lost);
                }
            }
        }
        if !done {
            out.ok = false;
            break;
        }
    }
    out.elapsed = started.elapsed();
    out.finished_at = crowd_start.elapsed();
    out
}
