//! The `tftplb` binary: parse the command line, set up logging, run the command.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tftplb::cli::{self, Cli, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Held to the end: dropping it writes out the lines still queued.
    let _log = init_logging(cli.log_format);
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(cli::execute(cli))
}

/// Logging through `tftplb::logging`'s writer (a thread of its own; lines a stalled sink
/// cannot take are dropped and counted, never the relay held up), over a 64 KiB buffer.
fn init_logging(format: LogFormat) -> tracing_appender::non_blocking::WorkerGuard {
    let sink = std::io::BufWriter::with_capacity(64 * 1024, std::io::stderr());
    let (writer, guard) = tftplb::logging::writer(sink, tftplb::logging::QUEUED_LINES);
    // Counted in `tftplb_log_lines_dropped_total`.
    tftplb::metrics::watch_log_drops(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_from_env("TFTPLB_LOG")
        // hickory-server logs every DNS query at info; tftplb counts them in metrics instead.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,hickory_server=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// Every session holds two sockets, and a request a backend did not answer in time leaves its
/// socket quarantined for 15 s: a 10,000-client storm holds over 20,000 at its peak (under a
/// 20,000 limit 54–306 sessions failed with EMFILE). Lift the soft file limit to at least
/// 262,144 where allowed (as root or under systemd's LimitNOFILE), else to the hard limit (in a
/// container without CAP_SYS_RESOURCE the hard limit stays; `run` warns when it is too low).
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    const WANTED: u64 = 262_144;
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let target = hard.max(WANTED);
        if setrlimit(Resource::RLIMIT_NOFILE, target, target).is_err() && soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}
