//! One file per scenario; [`phase`] runs a crowd of clients and is shared by `storm` and
//! `failover`. A scenario takes a params struct (clap arguments with the defaults of a real run;
//! the smoke test passes tiny ones), prints a table, writes `<out>/<scenario>.json` and a plot.
//!
//! To add a scenario: a file here with `Params` and `run(ctx, params)`, and a line in `main.rs`.

pub mod dns;
pub mod failover;
pub mod phase;
pub mod relay;
pub mod setup;
pub mod spoof;
pub mod storm;

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::load::{BenchFile, write_tree};
use crate::procs::{Backend, BackendKind};
use crate::report::{Meta, WorkDir};

/// `impl Default` for a scenario's clap `Params`: the defaults of a real run, as written on its
/// `#[arg(default_value_t = …)]` attributes, so they are stated once.
macro_rules! defaults_from_args {
    ($params:ty, $scenario:literal) => {
        impl Default for $params {
            fn default() -> Self {
                use clap::Parser;
                #[derive(Parser)]
                struct P {
                    #[command(flatten)]
                    p: $params,
                }
                P::parse_from([$scenario]).p
            }
        }
    };
}
pub(crate) use defaults_from_args;

/// What a booting client fetches in `storm` and `failover`: an ARDBP32.BIN-sized bootstrap,
/// then an image.
pub fn boot_files(small_bytes: usize, image_kib: usize) -> Vec<BenchFile> {
    vec![
        BenchFile::new("ARDBP32.BIN", small_bytes, 1),
        BenchFile::new("boot.img", image_kib * 1024, 2),
    ]
}

/// Writes `files` into `<work>/tree` and starts `count` backends of `kind` serving it.
pub fn serve_tree(
    work: &WorkDir,
    files: &[BenchFile],
    kind: BackendKind,
    count: usize,
) -> Result<Vec<Backend>, String> {
    let tree = work.path.join("tree");
    write_tree(&tree, files)?;
    (0..count).map(|_| Backend::start(kind, &tree)).collect()
}

/// What every scenario needs: where to write, what to measure, on what.
#[derive(Debug)]
pub struct Ctx {
    pub out: PathBuf,
    pub tftplb: PathBuf,
    /// The backend asked for on the command line; each scenario has its own default.
    pub backend: Option<BackendKind>,
    pub plots: bool,
    pub meta: Meta,
    /// tftplb serves the files from memory (`--cache`).
    pub cache: bool,
}

impl Ctx {
    pub fn new(
        out: PathBuf,
        tftplb: Option<PathBuf>,
        backend: Option<BackendKind>,
        plots: bool,
        cache: bool,
    ) -> Result<Ctx, String> {
        let tftplb = match tftplb {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("tftplb"),
        };
        if !tftplb.exists() {
            return Err(format!(
                "{}: no tftplb binary (build it: cargo build --release --features bench, or pass --tftplb)",
                tftplb.display()
            ));
        }
        if backend == Some(BackendKind::TftpdHpa) && crate::procs::in_tftpd().is_none() {
            return Err(
                "--backend tftpd-hpa: in.tftpd not found (apt-get install tftpd-hpa)".into(),
            );
        }
        // Cached runs keep their results beside the relayed ones, not over them.
        let out = if cache { out.join("cache") } else { out };
        Ok(Ctx {
            cache,
            out,
            tftplb,
            backend,
            plots,
            meta: Meta::now(),
        })
    }

    /// The backend to use: the one asked for, else `default` if available, else embedded.
    pub fn backend_or(&self, default: BackendKind) -> BackendKind {
        match self.backend {
            Some(b) => b,
            None if default == BackendKind::TftpdHpa => BackendKind::best_available(),
            None => default,
        }
    }

    /// Draws a plot unless plots are off; a failed plot is reported, not fatal.
    pub fn plot(&self, name: &str, draw: impl FnOnce(&std::path::Path) -> Result<(), String>) {
        if !self.plots {
            return;
        }
        let path = self.out.join(name);
        match draw(&path) {
            Ok(()) => println!("  plot: {}", path.display()),
            Err(e) => eprintln!("tftplb-bench: plot {}: {e}", path.display()),
        }
    }
}

/// With `--cache`: fetches every file through tftplb until each backend has its copy (round
/// robin: as many fetches per file as backends, twice, the copies filled in between), so the
/// measured rounds are served from memory.
pub async fn warm_cache(
    ctx: &Ctx,
    lb: SocketAddr,
    files: &[&str],
    backends: usize,
) -> Result<(), String> {
    if !ctx.cache {
        return Ok(());
    }
    let cfg = tftplb::tftp::client::ClientConfig::default();
    for _ in 0..2 {
        for file in files {
            for _ in 0..backends.max(1) {
                tftplb::tftp::client::fetch(lb, file, &cfg)
                    .await
                    .map_err(|e| format!("warming the cache with {file}: {e}"))?;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    Ok(())
}

/// GB (10^9 bytes) from a byte count.
pub fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// CPU seconds per GB, or 0 when nothing was moved.
pub fn per_gb(cpu_s: f64, bytes: u64) -> f64 {
    if bytes == 0 { 0.0 } else { cpu_s / gb(bytes) }
}
