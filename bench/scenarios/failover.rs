//! `failover`: a storm through tftplb over three backends, clients starting spread over a ramp,
//! and one backend killed (with every transfer it has in flight) halfway through the ramp.
//!
//! A client whose download fails tries again, up to `attempts` times (a PXE ROM that reboots).
//! Figures: completed / failed, how many needed a retry, and the longest stall: the longest
//! time any client waited for its next block, failed attempts included.
//!
//! tftplb runs with its defaults (`resume` on: a transfer whose backend stalls moves to another
//! one) and, unless `--health-interval-ms 0`, a `[pool.health]` probe of the small file.

use std::time::Duration;

use serde::Serialize;

use super::Ctx;
use super::phase::{self, Crowd, CrowdResult};
use crate::load::ClientParams;
use crate::procs::{BackendKind, TftplbProc, TftplbSettings};
use crate::report::{self, WorkDir, f};
use crate::stats::Summary;

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    #[arg(long, default_value_t = 600)]
    pub clients: usize,
    /// Size of the big file, KiB.
    #[arg(long, default_value_t = 1024)]
    pub file_kib: usize,
    #[arg(long, default_value_t = 9728)]
    pub small_bytes: usize,
    #[arg(long, default_value_t = 3)]
    pub backends: usize,
    #[arg(long, default_value_t = 1468)]
    pub blksize: u16,
    /// Clients start spread over this many ms; the backend dies at half of it.
    #[arg(long, default_value_t = 6000)]
    pub ramp_ms: u64,
    /// Tries per file before a client counts as failed.
    #[arg(long, default_value_t = 3)]
    pub attempts: u32,
    #[arg(long, default_value_t = 1000)]
    pub retry_ms: u64,
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
    /// tftplb's `setup_timeout`, ms.
    #[arg(long, default_value_t = 700)]
    pub setup_timeout_ms: u64,
    #[arg(long, default_value_t = 300)]
    pub max_secs: u64,
    /// Health probe interval, ms (0: no `[pool.health]`).
    #[arg(long, default_value_t = 1000)]
    pub health_interval_ms: u64,
}

super::defaults_from_args!(Params, "failover");

#[derive(Debug, Serialize)]
pub struct Results {
    pub backend: BackendKind,
    pub killed_at_s: f64,
    pub crowd: CrowdResult,
    pub completion_s: Summary,
    pub max_stall_s: f64,
    /// Completions per backend are not visible from outside; this is what the clients saw.
    /// tftplb sessions by outcome, from its log.
    pub tftplb_outcomes: std::collections::BTreeMap<String, usize>,
    pub failures: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let kind = ctx.backend_or(BackendKind::TftpdHpa);
    let work = WorkDir::new("failover")?;
    let files = super::boot_files(p.small_bytes, p.file_kib);
    let mut backends = super::serve_tree(&work, &files, kind, p.backends.max(2))?;
    let addrs: Vec<_> = backends.iter().map(|b| b.address).collect();
    let settings = TftplbSettings {
        setup_timeout_ms: p.setup_timeout_ms,
        health: (p.health_interval_ms > 0).then(|| (files[0].name.clone(), p.health_interval_ms)),
        ..TftplbSettings::default()
    };
    let lb = TftplbProc::start(&ctx.tftplb, &work.path, &addrs, &settings)?;
    let crowd = Crowd {
        targets: vec![lb.address; p.clients],
        files,
        client: ClientParams {
            blksize: Some(p.blksize),
            windowsize: None,
            tsize: true,
            retry_ms: p.retry_ms,
            retries: p.retries,
        },
        ramp: Duration::from_millis(p.ramp_ms),
        attempts: p.attempts,
        deadline: Duration::from_secs(p.max_secs),
        watch: Some(lb.proc.pid),
        own_addresses: false,
    };
    let kill_at = Duration::from_millis(p.ramp_ms / 2);
    let victim = backends.remove(0);
    let killer = tokio::spawn(async move {
        tokio::time::sleep(kill_at).await;
        let mut victim = victim;
        victim.proc.kill();
    });
    let bar = report::progress(p.clients as u64, "failover");
    let crowd = phase::run(crowd, &bar).await;
    bar.finish_and_clear();
    let _ = killer.await;
    let r = Results {
        backend: kind,
        killed_at_s: kill_at.as_secs_f64(),
        completion_s: Summary::of(&crowd.completion_s),
        max_stall_s: crowd.max_stall_s,
        failures: crowd.failed,
        tftplb_outcomes: lb.outcomes().await,
        crowd,
    };
    print(p, &r);
    let path = report::write_json(&ctx.out, "failover", &ctx.meta, p, &r)?;
    println!("  json: {}", path.display());
    ctx.plot("failover.svg", |path| plot(path, &r));
    Ok(())
}

fn print(p: &Params, r: &Results) {
    let c = &r.crowd;
    let rows = vec![
        [
            "clients",
            "completed",
            "failed",
            "needed retry",
            "p50 s",
            "p99 s",
            "max s",
            "longest stall s",
        ]
        .map(String::from)
        .to_vec(),
        vec![
            c.clients.to_string(),
            c.completed.to_string(),
            c.failed.to_string(),
            c.completed_after_retry.to_string(),
            f(r.completion_s.p50, 3),
            f(r.completion_s.p99, 3),
            f(r.completion_s.max, 3),
            f(r.max_stall_s, 3),
        ],
    ];
    report::print_table(
        &format!(
            "failover: {} x {} behind tftplb, one killed at {} s (ramp {} ms)",
            p.backends,
            r.backend.name(),
            f(r.killed_at_s, 2),
            p.ramp_ms
        ),
        &rows,
    );
    if !c.attempt_errors.is_empty() {
        println!("  failed attempts: {:?}", c.attempt_errors);
    }
    println!("  tftplb sessions by outcome: {:?}", r.tftplb_outcomes);
}

/// Cumulative completions over time, with the kill marked.
fn plot(path: &std::path::Path, r: &Results) -> Result<(), String> {
    use crate::plot::{Chart, Series, draw};
    let mut done = r.crowd.finished_at_s.clone();
    done.sort_by(|a, b| a.total_cmp(b));
    let step = done.len().div_ceil(crate::plot::CDF_POINTS).max(1);
    let mut points: Vec<(f64, f64)> = vec![(0.0, 0.0)];
    points.extend(
        done.iter()
            .enumerate()
            .step_by(step)
            .map(|(i, t)| (*t, (i + 1) as f64)),
    );
    if let Some(last) = done.last() {
        points.push((*last, done.len() as f64));
    }
    draw(
        path,
        &Chart {
            title: "failover: clients finished over time",
            x_label: "seconds since the first client started",
            y_label: "clients finished",
            series: vec![Series {
                name: "completed".into(),
                points,
            }],
            markers: vec![(r.killed_at_s, "backend killed".into())],
        },
    )
}
