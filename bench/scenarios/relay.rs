//! `relay`: one big file, direct from the backend vs through tftplb, one transfer at a time.
//! For each configuration (backend × windowsize) and round, the two transfers run back to back,
//! their order alternating by round, so each ratio compares two neighbours in time.
//!
//! Configurations: tftpd-hpa lock-step (when installed), embedded async-tftp lock-step, and
//! embedded at each larger windowsize (tftpd-hpa does not do windowsize); each once per
//! `--read-ahead` value (a tftplb of its own each), so read-ahead on and off are compared in the
//! same run.
//!
//! Figures: throughput of each side and the ratio tftplb ÷ direct (median, min, max over rounds);
//! the gap between consecutive blocks on each side, p50/p99, whose difference is the latency
//! tftplb adds per block; tftplb's and the backend's CPU seconds per GB.

use serde::Serialize;

use super::{Ctx, per_gb};
use crate::load::{self, BenchFile, ClientParams, write_tree};
use crate::procs::{Backend, BackendKind, TftplbProc, TftplbSettings};
use crate::report::{self, WorkDir, f};
use crate::stats::{Ratio, Summary};

#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct Params {
    /// Size of the file, KiB.
    #[arg(long, default_value_t = 65536)]
    pub size_kib: usize,
    /// A/B pairs per configuration.
    #[arg(long, default_value_t = 5)]
    pub rounds: usize,
    #[arg(long, default_value_t = 1468)]
    pub blksize: u16,
    /// Windowsizes to measure (1: lock-step, no windowsize option sent).
    #[arg(long, value_delimiter = ',', default_values_t = [1u16, 16])]
    pub windowsizes: Vec<u16>,
    /// tftplb's `read_ahead` values to measure (0: packet for packet).
    #[arg(long, value_delimiter = ',', default_values_t = [0u16, 2])]
    pub read_ahead: Vec<u16>,
}

super::defaults_from_args!(Params, "relay");

#[derive(Debug, Default, Serialize)]
pub struct Round {
    pub direct_mb_s: f64,
    pub tftplb_mb_s: f64,
    pub ratio: f64,
}

#[derive(Debug, Serialize)]
pub struct ConfigResult {
    pub backend: BackendKind,
    pub windowsize: u16,
    /// tftplb's `read_ahead`.
    pub read_ahead: u16,
    pub rounds: Vec<Round>,
    /// tftplb ÷ direct throughput.
    pub ratio: Ratio,
    pub direct_mb_s: Summary,
    pub tftplb_mb_s: Summary,
    /// Gap between consecutive blocks, µs, over every block of every round.
    pub block_gap_us_direct: Summary,
    pub block_gap_us_tftplb: Summary,
    /// tftplb's gap minus the direct gap at p50 and p99, µs.
    pub added_latency_us_p50: f64,
    pub added_latency_us_p99: f64,
    /// Mean added time per block: (tftplb time − direct time) ÷ blocks, µs.
    pub added_latency_us_mean: f64,
    pub tftplb_cpu_s_per_gb: f64,
    /// None for tftpd-hpa, whose per-transfer children's CPU time cannot be read.
    pub backend_cpu_s_per_gb_direct: Option<f64>,
    pub backend_cpu_s_per_gb_tftplb: Option<f64>,
    pub failures: usize,
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub configs: Vec<ConfigResult>,
    pub failures: usize,
}

/// A backend, tftplb in front of it, and the tallies of one configuration.
struct Setup {
    backend: Backend,
    lb: TftplbProc,
}

struct Tally {
    windowsize: u16,
    read_ahead: u16,
    kind: BackendKind,
    rounds: Vec<Round>,
    gaps: [Vec<f64>; 2],
    secs: [f64; 2],
    blocks: u64,
    lb_cpu: f64,
    backend_cpu: [f64; 2],
    bytes: [u64; 2],
    failures: usize,
}

pub async fn run(ctx: &Ctx, p: &Params) -> Result<(), String> {
    let work = WorkDir::new("relay")?;
    let file = BenchFile::new("relay.bin", p.size_kib * 1024, 7);
    let tree = work.path.join("tree");
    write_tree(&tree, std::slice::from_ref(&file))?;
    let mut kinds = vec![BackendKind::Embedded];
    if crate::procs::in_tftpd().is_some() && ctx.backend != Some(BackendKind::Embedded) {
        kinds.insert(0, BackendKind::TftpdHpa);
    }
    let read_aheads = if p.read_ahead.is_empty() {
        vec![TftplbSettings::default().read_ahead]
    } else {
        p.read_ahead.clone()
    };
    let mut setups = Vec::new();
    for kind in &kinds {
        for &read_ahead in &read_aheads {
            let backend = Backend::start(*kind, &tree)?;
            let dir = work.path.join(format!("lb{}", setups.len()));
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            let settings = TftplbSettings {
                read_ahead,
                cache: ctx.cache,
                ..TftplbSettings::default()
            };
            let lb = TftplbProc::start(&ctx.tftplb, &dir, &[backend.address], &settings)?;
            super::warm_cache(ctx, lb.address, &[&file.name], 1).await?;
            setups.push((*kind, read_ahead, Setup { backend, lb }));
        }
    }
    let mut tallies: Vec<(usize, Tally)> = Vec::new();
    for &ws in &p.windowsizes {
        for (i, (kind, read_ahead, _)) in setups.iter().enumerate() {
            if ws > 1 && *kind == BackendKind::TftpdHpa {
                continue; // tftpd-hpa drops windowsize from its OACK: it would be lock-step again
            }
            tallies.push((i, Tally::new(*kind, ws, *read_ahead)));
        }
    }
    let bar = report::progress((p.rounds * tallies.len() * 2) as u64, "relay");
    for round in 0..p.rounds.max(1) {
        for (i, tally) in tallies.iter_mut() {
            let s = &setups[*i].2;
            tally.round(s, &file, p, round % 2 == 1, &bar).await;
        }
    }
    bar.finish_and_clear();
    let configs: Vec<ConfigResult> = tallies.into_iter().map(|(_, t)| t.finish()).collect();
    let r = Results {
        failures: configs.iter().map(|c| c.failures).sum(),
        configs,
    };
    print(p, &r);
    let path = report::write_json(&ctx.out, "relay", &ctx.meta, p, &r)?;
    println!("  json: {}", path.display());
    ctx.plot("relay.svg", |path| plot(path, &r));
    Ok(())
}

impl Tally {
    fn new(kind: BackendKind, windowsize: u16, read_ahead: u16) -> Tally {
        Tally {
            windowsize,
            read_ahead,
            kind,
            rounds: Vec::new(),
            gaps: [Vec::new(), Vec::new()],
            secs: [0.0; 2],
            blocks: 0,
            lb_cpu: 0.0,
            backend_cpu: [0.0; 2],
            bytes: [0; 2],
            failures: 0,
        }
    }

    /// One A/B pair: index 0 is direct, 1 through tftplb.
    async fn round(
        &mut self,
        s: &Setup,
        file: &BenchFile,
        p: &Params,
        lb_first: bool,
        bar: &indicatif::ProgressBar,
    ) {
        let client = ClientParams {
            blksize: Some(p.blksize),
            windowsize: (self.windowsize > 1).then_some(self.windowsize),
            tsize: true,
            retry_ms: 1000,
            retries: 5,
        };
        let cfg = client.config();
        let mut mb_s = [0.0; 2];
        let order = if lb_first { [1, 0] } else { [0, 1] };
        for side in order {
            let server = if side == 1 {
                s.lb.address
            } else {
                s.backend.address
            };
            let (lb0, be0) = (s.lb.proc.cpu(), s.backend.proc.cpu());
            let got = load::get(server, file, &cfg, true).await;
            bar.inc(1);
            let got = match got {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("relay: {} ws {}: {e}", self.kind.name(), self.windowsize);
                    self.failures += 1;
                    continue;
                }
            };
            self.backend_cpu[side] += s.backend.proc.cpu().since(be0);
            if side == 1 {
                self.lb_cpu += s.lb.proc.cpu().since(lb0);
            }
            self.bytes[side] += got.bytes;
            self.secs[side] += got.elapsed.as_secs_f64();
            self.blocks += if side == 0 {
                got.gaps_ns.len() as u64 + 1
            } else {
                0
            };
            mb_s[side] = got.bytes as f64 / 1e6 / got.elapsed.as_secs_f64();
            self.gaps[side].extend(got.gaps_ns.iter().map(|&g| f64::from(g) / 1e3));
        }
        if mb_s[0] > 0.0 && mb_s[1] > 0.0 {
            self.rounds.push(Round {
                direct_mb_s: mb_s[0],
                tftplb_mb_s: mb_s[1],
                ratio: mb_s[1] / mb_s[0],
            });
        }
    }

    fn finish(self) -> ConfigResult {
        let ratios: Vec<f64> = self.rounds.iter().map(|r| r.ratio).collect();
        let direct: Vec<f64> = self.rounds.iter().map(|r| r.direct_mb_s).collect();
        let tftplb: Vec<f64> = self.rounds.iter().map(|r| r.tftplb_mb_s).collect();
        let (gd, gl) = (Summary::of(&self.gaps[0]), Summary::of(&self.gaps[1]));
        let measurable = self.kind != BackendKind::TftpdHpa;
        let mean_added = if self.blocks > 0 && self.bytes[0] == self.bytes[1] {
            (self.secs[1] - self.secs[0]) / self.blocks as f64 * 1e6
        } else {
            0.0
        };
        ConfigResult {
            backend: self.kind,
            windowsize: self.windowsize,
            read_ahead: self.read_ahead,
            ratio: Ratio::of(&ratios),
            direct_mb_s: Summary::of(&direct),
            tftplb_mb_s: Summary::of(&tftplb),
            added_latency_us_p50: gl.p50 - gd.p50,
            added_latency_us_p99: gl.p99 - gd.p99,
            added_latency_us_mean: mean_added,
            block_gap_us_direct: gd,
            block_gap_us_tftplb: gl,
            tftplb_cpu_s_per_gb: per_gb(self.lb_cpu, self.bytes[1]),
            backend_cpu_s_per_gb_direct: measurable
                .then(|| per_gb(self.backend_cpu[0], self.bytes[0])),
            backend_cpu_s_per_gb_tftplb: measurable
                .then(|| per_gb(self.backend_cpu[1], self.bytes[1])),
            failures: self.failures,
            rounds: self.rounds,
        }
    }
}

fn print(p: &Params, r: &Results) {
    let mut rows = vec![
        [
            "backend",
            "ws",
            "read-ahead",
            "direct MB/s",
            "tftplb MB/s",
            "ratio med",
            "min",
            "max",
            "gap p50 us",
            "added p50",
            "added p99",
            "added mean",
            "lb CPU s/GB",
            "backend s/GB",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for c in &r.configs {
        rows.push(vec![
            c.backend.name().into(),
            c.windowsize.to_string(),
            c.read_ahead.to_string(),
            f(c.direct_mb_s.p50, 1),
            f(c.tftplb_mb_s.p50, 1),
            f(c.ratio.median, 3),
            f(c.ratio.min, 3),
            f(c.ratio.max, 3),
            f(c.block_gap_us_direct.p50, 1),
            f(c.added_latency_us_p50, 1),
            f(c.added_latency_us_p99, 1),
            f(c.added_latency_us_mean, 1),
            f(c.tftplb_cpu_s_per_gb, 2),
            c.backend_cpu_s_per_gb_direct
                .map_or("n/a".into(), |x| f(x, 2)),
        ]);
    }
    report::print_table(
        &format!(
            "relay: {} KiB, blksize {}, {} interleaved rounds (ratio = tftplb / direct)",
            p.size_kib, p.blksize, p.rounds
        ),
        &rows,
    );
    if r.failures > 0 {
        println!("  failed transfers: {}", r.failures);
    }
}

/// Ratio per round for each configuration.
fn plot(path: &std::path::Path, r: &Results) -> Result<(), String> {
    use crate::plot::{Chart, Series, draw};
    let series = r
        .configs
        .iter()
        .map(|c| Series {
            name: match c.windowsize {
                1 => format!(
                    "{} lock-step, read_ahead {}",
                    c.backend.name(),
                    c.read_ahead
                ),
                ws => format!("{} windowsize {ws}", c.backend.name()),
            },
            points: c
                .rounds
                .iter()
                .enumerate()
                .map(|(i, r)| ((i + 1) as f64, r.ratio))
                .collect(),
        })
        .collect();
    draw(
        path,
        &Chart {
            title: "relay: throughput through tftplb / direct, per round",
            x_label: "round",
            y_label: "ratio",
            series,
            markers: Vec::new(),
        },
    )
}
