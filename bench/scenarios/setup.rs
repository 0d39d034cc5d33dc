//! `setup`: how many new sessions per second tftplb starts. `concurrency` clients in a closed
//! loop each request a one-block file (no options, so the first reply is DATA 1), ACK it, and
//! start over; direct (spread over the backends) and through tftplb alternate by round.
//!
//! Figures: sessions per second on each side and their ratio, and the time from RRQ to first
//! DATA (p50/p99). The direct rate is the ceiling set by the backends and the load generator,
//! which share the machine's cores with tftplb.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::Serialize;

use super::Ctx;
use crate::load::{self, BenchFile, ClientParams};
use crate::procs::{BackendKind, TftplbProc, TftplbSettings};
use crate::report::{self, WorkDir, f};
use crate::stats::{Ratio, Summary};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    /// Sessions per side per round.
    #[arg(long, default_value_t = 20_000)]
    pub sessions: usize,
    /// Clients running at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    #[arg(long, default_value_t = 3)]
    pub backends: usize,
    /// Size of the file, bytes (under 512: one block).
    #[arg(long, default_value_t = 100)]
    pub file_bytes: usize,
}

super::defaults_from_args!(Params, "setup");

#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub sessions_per_s: Summary,
    pub first_data_ms: Summary,
    pub completed: usize,
    pub failed: usize,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub backend: BackendKind,
    pub direct: Side,
    pub tftplb: Side,
    /// tftplb ÷ direct sessions per second, per round.
    pub ratio: Ratio,
    pub tftplb_cpu_s: f64,
    /// tftplb CPU per session, µs.
    pub tftplb_cpu_us_per_session: f64,
    pub failures: usize,
}

struct Run {
    rate: f64,
    first_ms: Vec<f64>,
    completed: usize,
    failed: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let kind = ctx.backend_or(BackendKind::Embedded);
    let work = WorkDir::new("setup")?;
    let file = BenchFile::new("pxelinux.cfg-default", p.file_bytes, 3);
    let backends = super::serve_tree(&work, std::slice::from_ref(&file), kind, p.backends.max(1))?;
    let addrs: Vec<_> = backends.iter().map(|b| b.address).collect();
    let settings = TftplbSettings {
        cache: ctx.cache,
        ..TftplbSettings::default()
    };
    let lb = TftplbProc::start(&ctx.tftplb, &work.path, &addrs, &settings)?;
    super::warm_cache(ctx, lb.address, &[&file.name], addrs.len()).await?;
    let bar = report::progress((p.rounds * 2 * p.sessions) as u64, "setup");
    let (mut runs, mut ratios, mut lb_cpu) = ([Vec::new(), Vec::new()], Vec::new(), 0.0);
    for round in 0..p.rounds.max(1) {
        let order = if round % 2 == 1 { [1, 0] } else { [0, 1] };
        let mut rates = [0.0; 2];
        for side in order {
            let targets = if side == 1 {
                vec![lb.address]
            } else {
                addrs.clone()
            };
            let cpu0 = lb.proc.cpu();
            let run = closed_loop(&targets, &file, p, &bar).await;
            if side == 1 {
                lb_cpu += lb.proc.cpu().since(cpu0);
            }
            rates[side] = run.rate;
            runs[side].push(run);
        }
        if rates[0] > 0.0 {
            ratios.push(rates[1] / rates[0]);
        }
    }
    bar.finish_and_clear();
    let samples: [Vec<f64>; 2] = [0, 1].map(|i| {
        runs[i]
            .iter()
            .flat_map(|r| r.first_ms.iter().copied())
            .collect()
    });
    let [direct, tftplb] = runs.map(side);
    let r = Results {
        backend: kind,
        ratio: Ratio::of(&ratios),
        tftplb_cpu_s: lb_cpu,
        tftplb_cpu_us_per_session: lb_cpu * 1e6 / tftplb.completed.max(1) as f64,
        failures: direct.failed + tftplb.failed,
        direct,
        tftplb,
    };
    print(p, &r);
    let path = report::write_json(&ctx.out, "setup", &ctx.meta, p, &r)?;
    println!("  json: {}", path.display());
    ctx.plot("setup.svg", |path| plot(path, &samples));
    Ok(())
}

fn side(runs: Vec<Run>) -> Side {
    let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
    let first: Vec<f64> = runs
        .iter()
        .flat_map(|r| r.first_ms.iter().copied())
        .collect();
    Side {
        sessions_per_s: Summary::of(&rates),
        first_data_ms: Summary::of(&first),
        completed: runs.iter().map(|r| r.completed).sum(),
        failed: runs.iter().map(|r| r.failed).sum(),
    }
}

/// `concurrency` workers share `sessions` one-block downloads.
async fn closed_loop(
    targets: &[SocketAddr],
    file: &BenchFile,
    p: &Params,
    bar: &indicatif::ProgressBar,
) -> Run {
    let next = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    // The rate is taken while every worker is busy: at the moment the first one finds no
    // session left, the sessions completed so far over the time so far. The stragglers then
    // finish without stretching the clock: a run ending on one request lost and retried after
    // a second measured that second, not the server (10,000 sessions take about one second).
    let saturated = Arc::new(std::sync::OnceLock::<(f64, usize)>::new());
    let started = tokio::time::Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..p.concurrency.max(1) {
        let (next, file, targets, bar) =
            (next.clone(), file.clone(), targets.to_vec(), bar.clone());
        let (done, saturated) = (done.clone(), saturated.clone());
        let total = p.sessions;
        workers.spawn(async move {
            let cfg = ClientParams {
                blksize: None,
                windowsize: None,
                tsize: false,
                retry_ms: 1000,
                retries: 5,
            }
            .config();
            let (mut first, mut failed) = (Vec::new(), 0);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    let now = started.elapsed().as_secs_f64();
                    saturated.get_or_init(|| (now, done.load(Ordering::Relaxed)));
                    return (first, failed);
                }
                match load::get(targets[i % targets.len()], &file, &cfg, false).await {
                    Ok(got) => {
                        done.fetch_add(1, Ordering::Relaxed);
                        first.push(got.first_data.as_secs_f64() * 1e3)
                    }
                    Err(e) => {
                        failed += 1;
                        eprintln!("setup: {e}");
                    }
                }
                bar.inc(1);
            }
        });
    }
    let (mut first_ms, mut failed) = (Vec::new(), 0);
    while let Some(done) = workers.join_next().await {
        if let Ok((f, n)) = done {
            first_ms.extend(f);
            failed += n;
        }
    }
    let (secs, completed) = saturated
        .get()
        .copied()
        .unwrap_or((started.elapsed().as_secs_f64(), first_ms.len()));
    Run {
        rate: completed as f64 / secs.max(1e-9),
        completed: first_ms.len(),
        first_ms,
        failed,
    }
}

fn print(p: &Params, r: &Results) {
    let mut rows = vec![
        [
            "side",
            "sessions/s med",
            "min",
            "max",
            "first DATA p50 ms",
            "p99 ms",
            "failed",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (name, s) in [("direct", &r.direct), ("tftplb", &r.tftplb)] {
        rows.push(vec![
            name.into(),
            f(s.sessions_per_s.p50, 0),
            f(s.sessions_per_s.min, 0),
            f(s.sessions_per_s.max, 0),
            f(s.first_data_ms.p50, 3),
            f(s.first_data_ms.p99, 3),
            s.failed.to_string(),
        ]);
    }
    report::print_table(
        &format!(
            "setup: {} sessions x {} rounds, {} at once, {} x {}",
            p.sessions,
            p.rounds,
            p.concurrency,
            p.backends,
            r.backend.name()
        ),
        &rows,
    );
    println!(
        "  ratio tftplb/direct: median {} (min {}, max {}); tftplb CPU {} us per session",
        f(r.ratio.median, 3),
        f(r.ratio.min, 3),
        f(r.ratio.max, 3),
        f(r.tftplb_cpu_us_per_session, 1)
    );
}

/// RRQ-to-first-DATA distribution on each side.
fn plot(path: &std::path::Path, samples: &[Vec<f64>; 2]) -> Result<(), String> {
    use crate::plot::{Chart, Series, cdf, draw};
    let series = [("direct", &samples[0]), ("tftplb", &samples[1])]
        .into_iter()
        .map(|(name, v)| Series {
            name: name.into(),
            points: cdf(v),
        })
        .collect();
    draw(
        path,
        &Chart {
            title: "setup: time from RRQ to first DATA (CDF)",
            x_label: "milliseconds",
            y_label: "fraction of sessions",
            series,
            markers: Vec::new(),
        },
    )
}
