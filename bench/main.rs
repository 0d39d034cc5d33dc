//! `tftplb-bench`: how much slower is a transfer through tftplb than straight from the boot
//! server, how many machines can boot at once, and what it costs. See bench/README.md.
//!
//! Every figure is a ratio of two things measured in the same run, interleaved (the machines are
//! shared and noisy). tftplb and the backends run as child processes on loopback, so their CPU
//! time and memory are read from `/proc/PID` and are theirs alone; the load (thousands of
//! concurrent transfers) comes from this process, with the project's async client. Every load
//! is bounded in count and time.
//!
//! Modules: [`procs`] starts and measures child processes, [`load`] downloads and checks
//! files, [`stats`] summarises, [`report`] writes tables and JSON, [`plot`] draws SVGs, and
//! [`scenarios`] holds one file per scenario.

mod load;
mod plot;
mod procs;
mod report;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use procs::BackendKind;
use scenarios::Ctx;

#[derive(Debug, Parser)]
#[command(
    name = "tftplb-bench",
    about = "Benchmarks tftplb against direct transfers"
)]
struct Cli {
    /// Directory for the JSON results and SVG plots.
    #[arg(long, global = true, default_value = "bench/results")]
    out: PathBuf,
    /// The tftplb binary to measure (default: `tftplb` next to this program).
    #[arg(long, global = true)]
    tftplb: Option<PathBuf>,
    /// Backend server (default per scenario: see bench/README.md).
    #[arg(long, global = true, value_enum)]
    backend: Option<BackendKind>,
    /// Skip the SVG plots.
    #[arg(long, global = true)]
    no_plots: bool,
    /// tftplb serves the files from memory (`[pool.cache]` on every file, warmed before the
    /// measured rounds); results go to `<out>/cache/`.
    #[arg(long, global = true)]
    cache: bool,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Debug, Subcommand)]
enum Scenario {
    /// One big file direct vs through tftplb, lock-step and windowed, interleaved rounds.
    Relay(scenarios::relay::Params),
    /// N clients at once, each fetching a small and a big file: direct vs through tftplb.
    Storm(scenarios::storm::Params),
    /// New sessions per second (RRQ to first DATA), direct vs through tftplb.
    Setup(scenarios::setup::Params),
    /// A storm through tftplb with one backend killed halfway.
    Failover(scenarios::failover::Params),
    /// DNS queries per second and latency: tftplb beside NSD and Knot, driven by dnsperf.
    Dns(scenarios::dns::Params),
    /// What a spoofed request reflects at its victim, and the flood rate that delays a client.
    Spoof(scenarios::spoof::Params),
    /// Every scenario with its defaults.
    All,
    /// (internal) An embedded async-tftp backend serving DIR, for the harness.
    #[command(hide = true)]
    BackendChild {
        #[arg(long)]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Scenario::BackendChild { dir } = &cli.scenario {
        return procs::backend_child(dir);
    }
    raise_fd_limit();
    let ctx = match Ctx::new(cli.out, cli.tftplb, cli.backend, !cli.no_plots, cli.cache) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tftplb-bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let result = runtime.block_on(run(&ctx, cli.scenario));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tftplb-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(ctx: &Ctx, scenario: Scenario) -> Result<(), String> {
    use scenarios::*;
    match scenario {
        Scenario::Relay(p) => relay::run(ctx, &p).await,
        Scenario::Storm(p) => storm::run(ctx, &p).await,
        Scenario::Setup(p) => setup::run(ctx, &p).await,
        Scenario::Failover(p) => failover::run(ctx, &p).await,
        Scenario::Dns(p) => dns::run(ctx, &p).await,
        Scenario::Spoof(p) => spoof::run(ctx, &p).await,
        Scenario::All => {
            relay::run(ctx, &Default::default()).await?;
            storm::run(ctx, &Default::default()).await?;
            setup::run(ctx, &Default::default()).await?;
            failover::run(ctx, &Default::default()).await?;
            dns::run(ctx, &Default::default()).await
        }
        Scenario::BackendChild { .. } => unreachable!("handled before the runtime starts"),
    }
}

/// Every client transfer holds a socket: lift the soft file limit to 262,144 where allowed
/// (as root), else to the hard one. Children (tftplb, backends) inherit it.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = hard.max(262_144);
        if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_err() {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
