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
pub mod storm;

use std::path::PathBuf;

use crate::procs::BackendKind;
use crate::report::Meta;

/// What every scenario needs: where to write, what to measure, on what.
#[derive(Debug)]
pub struct Ctx {
    pub out: PathBuf,
    pub tftplb: PathBuf,
    /// The backend asked for on the command line; each scenario has its own default.
    pub backend: Option<BackendKind>,
    pub plots: bool,
    pub meta: Meta,
}

impl Ctx {
    pub fn new(
        out: PathBuf,
        tftplb: Option<PathBuf>,
        backend: Option<BackendKind>,
        plots: bool,
    ) -> Result<Ctx, String> {
        let tftplb = match tftplb {
            Some(p) => p,
            None => std::env::current_exe()
                .map_err(|e| e.to_string())?
                .with_file_name("tftplb"),
        };
        if !tftplb.exists() {
            return Err(format!(
                "{}: no tftplb binary (build it: cargo build --release, or pass --tftplb)",
                tftplb.display()
            ));
        }
        if backend == Some(BackendKind::TftpdHpa) && crate::procs::in_tftpd().is_none() {
            return Err(
                "--backend tftpd-hpa: in.tftpd not found (apt-get install tftpd-hpa)".into(),
            );
        }
        Ok(Ctx {
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

/// GB (10^9 bytes) from a byte count.
pub fn gb(bytes: u64) -> f64 {
    bytes as f64 / 1e9
}

/// CPU seconds per GB, or 0 when nothing was moved.
pub fn per_gb(cpu_s: f64, bytes: u64) -> f64 {
    if bytes == 0 { 0.0 } else { cpu_s / gb(bytes) }
}
