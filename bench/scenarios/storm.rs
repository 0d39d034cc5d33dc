//! `storm`: N machines power on at once; each fetches a small bootstrap (ARDBP32.BIN-sized) and
//! a big image from three backends, either spread directly over the backends or through tftplb.
//! The two crowds alternate (direct first in even rounds, tftplb first in odd ones).
//!
//! Figures: completed / failed, completion time p50/p99/max, wall time; tftplb's CPU seconds per
//! GB relayed, peak RSS and RSS per concurrent session; the backends' CPU per GB for comparison.

use serde::Serialize;

use super::phase::{self, Crowd, CrowdResult, WRONG_CONTENT_KEPT};
use super::{Ctx, per_gb};
use crate::load::{ClientParams, WrongContent};
use crate::procs::{Backend, BackendKind, TftplbProc, TftplbSettings};
use crate::report::{self, WorkDir, f};
use crate::stats::Summary;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    /// Clients per crowd.
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Size of the big file, KiB.
    #[arg(long, default_value_t = 1024)]
    pub file_kib: usize,
    /// Size of the small file, bytes (ARDBP32.BIN is about 9.5 KB).
    #[arg(long, default_value_t = 9728)]
    pub small_bytes: usize,
    #[arg(long, default_value_t = 3)]
    pub backends: usize,
    #[arg(long, default_value_t = 1468)]
    pub blksize: u16,
    /// Crowds per mode (direct and tftplb alternate).
    #[arg(long, default_value_t = 1)]
    pub rounds: usize,
    /// Clients start spread over this many ms (0: all at once).
    #[arg(long, default_value_t = 0)]
    pub ramp_ms: u64,
    /// Client retransmission timeout, ms.
    #[arg(long, default_value_t = 1000)]
    pub retry_ms: u64,
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// Bound on one crowd, seconds.
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// tftplb's `max_sessions`.
    #[arg(long, default_value_t = 10_000)]
    pub max_sessions: usize,
}

super::defaults_from_args!(Params, "storm");

/// One mode's totals over its rounds.
#[derive(Debug, Default, Serialize)]
pub struct Mode {
    pub crowds: Vec<CrowdResult>,
    pub completed: usize,
    pub failed: usize,
    /// Downloads that ended with the wrong bytes, and the first of them in full.
    pub wrong_content: usize,
    pub wrong_content_cases: Vec<WrongContent>,
    pub completion_s: Summary,
    pub wall_s: Summary,
    /// None for tftpd-hpa, whose per-transfer children's CPU time cannot be read.
    pub backend_cpu_s: Option<f64>,
    pub backend_cpu_s_per_gb: Option<f64>,
    pub bytes: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct Results {
    pub backend: Option<BackendKind>,
    pub direct: Mode,
    pub tftplb: Mode,
    pub tftplb_cpu_s: f64,
    pub tftplb_cpu_s_per_gb: f64,
    /// Peak RSS of tftplb during its crowds (sampled every 10 ms), and its VmHWM at the end.
    pub tftplb_peak_rss_kib: u64,
    pub tftplb_hwm_kib: u64,
    pub tftplb_idle_rss_kib: u64,
    pub peak_concurrent_sessions: usize,
    /// (peak RSS − RSS before the crowd) ÷ peak concurrent transfers, KiB.
    pub rss_per_session_kib: f64,
    /// tftplb sessions by outcome, from its log.
    pub tftplb_outcomes: std::collections::BTreeMap<String, usize>,
    pub failures: usize,
    /// tftplb's log, copied next to the JSON when a download through it failed (to find out
    /// why, and to match a wrong-content case with its session).
    pub tftplb_log: Option<std::path::PathBuf>,
    /// Ephemeral ports of this host (`net.ipv4.ip_local_port_range`), which the clients, both
    /// sockets of every tftplb session and every backend transfer share on one host.
    pub ephemeral_ports: Option<u32>,
}

/// How many ports `ip_local_port_range` offers.
fn ephemeral_ports() -> Option<u32> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|n| n.parse::<u32>().ok());
    let (low, high) = (it.next()??, it.next()??);
    Some(high.saturating_sub(low) + 1)
}

/// Through tftplb on one host, a transfer holds four ports at once (the client's, tftplb's two,
/// the backend's transfer port); directly, two. Short of that, failures measure the host.
fn warn_if_ports_short(ports: Option<u32>, clients: usize) {
    let needed = 4 * clients as u64;
    if let Some(ports) = ports.filter(|&p| u64::from(p) < needed) {
        println!(
            "storm: warning: {clients} clients through tftplb on one host need about {needed} \
             ephemeral ports at once, this host has {ports}; failures will measure the port \
             range, not tftplb (widen it: sysctl -w net.ipv4.ip_local_port_range=\"1024 65535\")"
        );
    }
}

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let kind = ctx.backend_or(BackendKind::Embedded);
    let work = WorkDir::new("storm")?;
    let files = super::boot_files(p.small_bytes, p.file_kib);
    let backends = super::serve_tree(&work, &files, kind, p.backends.max(1))?;
    let addrs: Vec<_> = backends.iter().map(|b| b.address).collect();
    let settings = TftplbSettings {
        max_sessions: p.max_sessions,
        cache: ctx.cache,
        ..TftplbSettings::default()
    };
    let lb = TftplbProc::start(&ctx.tftplb, &work.path, &addrs, &settings)?;
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    super::warm_cache(ctx, lb.address, &names, addrs.len()).await?;
    let mut r = Results {
        backend: Some(kind),
        tftplb_idle_rss_kib: lb.proc.memory().rss_kib,
        ephemeral_ports: ephemeral_ports(),
        ..Results::default()
    };
    warn_if_ports_short(r.ephemeral_ports, p.clients);
    let client = ClientParams {
        blksize: Some(p.blksize),
        windowsize: None,
        tsize: true,
        retry_ms: p.retry_ms,
        retries: p.retries,
    };
    let bar = report::progress((p.rounds * 2 * p.clients) as u64, "storm");
    for round in 0..p.rounds.max(1) {
        let lb_first = round % 2 == 1;
        for through_lb in [lb_first, !lb_first] {
            let targets = (0..p.clients)
                .map(|i| {
                    if through_lb {
                        lb.address
                    } else {
                        addrs[i % addrs.len()]
                    }
                })
                .collect();
            let crowd = Crowd {
                targets,
                files: files.clone(),
                client,
                ramp: std::time::Duration::from_millis(p.ramp_ms),
                attempts: 1,
                deadline: std::time::Duration::from_secs(p.max_secs),
                watch: through_lb.then_some(lb.proc.pid),
                own_addresses: true,
            };
            let backend_before = backend_cpu(&backends);
            let lb_before = lb.proc.cpu();
            let result = phase::run(crowd, &bar).await;
            let backend_s = backend_cpu(&backends).map(|now| now - backend_before.unwrap_or(0.0));
            let mode = if through_lb {
                &mut r.tftplb
            } else {
                &mut r.direct
            };
            if let Some(s) = backend_s {
                *mode.backend_cpu_s.get_or_insert(0.0) += s;
            }
            if through_lb {
                r.tftplb_cpu_s += lb.proc.cpu().since(lb_before);
                r.tftplb_peak_rss_kib = r.tftplb_peak_rss_kib.max(result.peak_rss_kib);
                r.peak_concurrent_sessions = r.peak_concurrent_sessions.max(result.peak_inflight);
                let per = (result.peak_rss_kib.saturating_sub(result.baseline_rss_kib)) as f64
                    / result.peak_inflight.max(1) as f64;
                r.rss_per_session_kib = r.rss_per_session_kib.max(per);
            }
            mode.crowds.push(result);
        }
    }
    bar.finish_and_clear();
    r.tftplb_hwm_kib = lb.proc.memory().hwm_kib;
    r.tftplb_outcomes = lb.outcomes().await;
    for mode in [&mut r.direct, &mut r.tftplb] {
        summarise(mode);
    }
    r.tftplb_cpu_s_per_gb = per_gb(r.tftplb_cpu_s, r.tftplb.bytes);
    r.failures = r.direct.failed + r.tftplb.failed;
    if r.tftplb.failed > 0 {
        r.tftplb_log = keep_log(&lb.log, &ctx.out);
    }
    print(p, &r);
    let path = report::write_json(&ctx.out, "storm", &ctx.meta, p, &r)?;
    println!("  json: {}", path.display());
    ctx.plot("storm.svg", |path| plot(path, p, &r));
    Ok(())
}

/// CPU seconds of all backends, if readable.
fn backend_cpu(backends: &[Backend]) -> Option<f64> {
    backends
        .iter()
        .all(Backend::cpu_measurable)
        .then(|| backends.iter().map(|b| b.proc.cpu().total()).sum())
}

/// Copies tftplb's log (which the scratch directory takes with it) to `out/storm-tftplb.log`.
fn keep_log(log: &std::path::Path, out: &std::path::Path) -> Option<std::path::PathBuf> {
    let kept = out.join("storm-tftplb.log");
    let copied = std::fs::create_dir_all(out).and_then(|()| std::fs::copy(log, &kept));
    match copied {
        Ok(_) => Some(kept),
        Err(e) => {
            eprintln!("storm: cannot keep tftplb's log: {e}");
            None
        }
    }
}

fn summarise(mode: &mut Mode) {
    let times: Vec<f64> = mode
        .crowds
        .iter()
        .flat_map(|c| c.completion_s.iter().copied())
        .collect();
    mode.completion_s = Summary::of(&times);
    mode.wall_s = Summary::of(&mode.crowds.iter().map(|c| c.wall_s).collect::<Vec<_>>());
    mode.completed = mode.crowds.iter().map(|c| c.completed).sum();
    mode.failed = mode.crowds.iter().map(|c| c.failed).sum();
    mode.bytes = mode.crowds.iter().map(|c| c.bytes).sum();
    mode.wrong_content = mode.crowds.iter().map(|c| c.wrong_content).sum();
    mode.wrong_content_cases = mode
        .crowds
        .iter()
        .flat_map(|c| c.wrong_content_cases.iter().cloned())
        .take(WRONG_CONTENT_KEPT)
        .collect();
    mode.backend_cpu_s_per_gb = mode.backend_cpu_s.map(|s| per_gb(s, mode.bytes));
}

fn print(p: &Params, r: &Results) {
    let mut rows = vec![
        [
            "mode",
            "completed",
            "failed",
            "wrong content",
            "p50 s",
            "p99 s",
            "max s",
            "wall s",
            "backend CPU s/GB",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (name, m) in [("direct", &r.direct), ("tftplb", &r.tftplb)] {
        rows.push(vec![
            name.into(),
            m.completed.to_string(),
            m.failed.to_string(),
            m.wrong_content.to_string(),
            f(m.completion_s.p50, 3),
            f(m.completion_s.p99, 3),
            f(m.completion_s.max, 3),
            f(m.wall_s.max, 2),
            m.backend_cpu_s_per_gb.map_or("n/a".into(), |x| f(x, 2)),
        ]);
    }
    let backend = r.backend.map_or("-", |b| b.name());
    report::print_table(
        &format!(
            "storm: {} clients x ({} B + {} KiB), {} x {backend}",
            p.clients, p.small_bytes, p.file_kib, p.backends
        ),
        &rows,
    );
    println!(
        "  tftplb: CPU {} s/GB ({} s), peak RSS {} KiB (idle {}), {} concurrent sessions at peak, \
         {} KiB RSS per session",
        f(r.tftplb_cpu_s_per_gb, 2),
        f(r.tftplb_cpu_s, 2),
        r.tftplb_peak_rss_kib,
        r.tftplb_idle_rss_kib,
        r.peak_concurrent_sessions,
        f(r.rss_per_session_kib, 1)
    );
    println!("  tftplb sessions by outcome: {:?}", r.tftplb_outcomes);
    for (name, m) in [("direct", &r.direct), ("tftplb", &r.tftplb)] {
        for c in &m.crowds {
            if !c.attempt_errors.is_empty() {
                println!("  {name} errors: {:?}", c.attempt_errors);
            }
        }
        print_wrong_content(name, m);
    }
    if let Some(log) = &r.tftplb_log {
        println!("  tftplb's log kept: {}", log.display());
    }
}

/// The wrong-content cases: what was asked, what arrived instead, and from whom.
fn print_wrong_content(name: &str, m: &Mode) {
    if m.wrong_content == 0 {
        return;
    }
    let mut rows = vec![
        [
            "file",
            "first bad offset",
            "got B",
            "expected B",
            "OACK tsize",
            "bad block is",
            "client",
            "server TID",
            "at s",
            "ended (UTC)",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let or_dash = |x: Option<String>| x.unwrap_or_else(|| "-".into());
    for w in &m.wrong_content_cases {
        rows.push(vec![
            w.file.clone(),
            or_dash(w.first_bad_offset.map(|o| o.to_string())),
            w.got_bytes.to_string(),
            w.expected_bytes.to_string(),
            or_dash(w.oack_tsize.map(|t| t.to_string())),
            or_dash(w.bad_block_is.clone()),
            or_dash(w.client.map(|c| c.to_string())),
            w.server_tid.to_string(),
            f(w.at_s, 3),
            w.ended.clone(),
        ]);
    }
    report::print_table(
        &format!(
            "  {name}: {} downloads with wrong content (first {} shown)",
            m.wrong_content,
            m.wrong_content_cases.len()
        ),
        &rows,
    );
}

fn plot(path: &std::path::Path, p: &Params, r: &Results) -> Result<(), String> {
    use crate::plot::{Chart, Series, cdf, draw};
    let series = [("direct", &r.direct), ("tftplb", &r.tftplb)]
        .into_iter()
        .map(|(name, m)| Series {
            name: name.into(),
            points: cdf(&m
                .crowds
                .iter()
                .flat_map(|c| c.completion_s.iter().copied())
                .collect::<Vec<_>>()),
        })
        .collect();
    let title = format!("storm: {} clients, completion time (CDF)", p.clients);
    draw(
        path,
        &Chart {
            title: &title,
            x_label: "seconds from power-on to last byte",
            y_label: "fraction of clients",
            series,
            markers: Vec::new(),
        },
    )
}
