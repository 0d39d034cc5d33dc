//! The command line: `run`, `check`, `health`, `demo`, `get`, `manual`. Each command is a short function that reads
//! like its help text; `main.rs` only parses, sets up logging and maps the result to an exit code.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use sha2::{Digest, Sha256};

use crate::app::Bound;
use crate::config::Config;
use crate::tftp::client::{self, ClientConfig};

/// Exit code for an invalid configuration (sysexits EX_CONFIG).
pub const EXIT_CONFIG: u8 = 78;

#[derive(Debug, Parser)]
#[command(
    name = "tftplb",
    version,
    about = "TFTP load balancer for network boot"
)]
pub struct Cli {
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the load balancer.
    Run {
        #[arg(short, long, default_value = "/etc/tftplb/tftplb.toml")]
        config: PathBuf,
    },
    /// Validate a configuration file: exit 0, or print every problem and exit 78.
    Check {
        #[arg(short, long, default_value = "/etc/tftplb/tftplb.toml")]
        config: PathBuf,
    },
    /// Ask the running tftplb whether it can serve (for keepalived's vrrp_script): exit 0
    /// when it can, 1 with the reasons when it cannot or does not answer.
    Health {
        /// Its configuration, for the admin listener's address.
        #[arg(short, long, default_value = "/etc/tftplb/tftplb.toml")]
        config: PathBuf,
        /// The admin listener to ask (default: `[admin] listen` of the configuration).
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 2.0)]
        timeout: f64,
    },
    /// Start three embedded boot servers and a front end on them, until Ctrl-C.
    Demo {
        /// Front-end address.
        #[arg(long, default_value = "127.0.0.1:6969")]
        listen: SocketAddr,
        /// Status page, admin API and metrics address (port 0: any free port).
        #[arg(long, default_value = "127.0.0.1:9069")]
        admin: SocketAddr,
    },
    /// Download a file over TFTP and report what was negotiated (like dig, for TFTP).
    Get {
        /// SERVER[:PORT] (port 69 when left out).
        server: String,
        file: String,
        /// Where to write the file ("-" for stdout); by default it is only measured.
        #[arg(short, long)]
        output: Option<PathBuf>,
        #[arg(long)]
        blksize: Option<u16>,
        #[arg(long)]
        windowsize: Option<u16>,
        /// Ask the server for the file size (tsize option).
        #[arg(long)]
        tsize: bool,
        /// Seconds to wait before retransmitting.
        #[arg(long, default_value_t = 1.0)]
        timeout: f64,
        #[arg(long, default_value_t = 5)]
        retries: u32,
    },
    /// Write the man pages (tftplb.8, tftplb.toml.5) and shell completions into a directory.
    Manual {
        #[arg(long)]
        out: PathBuf,
    },
}

/// Runs a parsed command line.
pub async fn execute(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run { config } => run(config).await,
        Command::Check { config } => check(config),
        Command::Health {
            config,
            admin,
            timeout,
        } => health(&config, admin, Duration::from_secs_f64(timeout.max(0.01))).await,
        Command::Demo { listen, admin } => demo(listen, admin).await,
        Command::Get {
            server,
            file,
            output,
            blksize,
            windowsize,
            tsize,
            timeout,
            retries,
        } => {
            let cfg = ClientConfig {
                blksize,
                windowsize,
                tsize,
                retry_timeout: Duration::from_secs_f64(timeout.max(0.01)),
                retries,
                ..ClientConfig::default()
            };
            get(&server, &file, output, cfg).await
        }
        Command::Manual { out } => manual(&out),
    }
}

/// `GET /api/health` on the admin listener; its answer printed.
async fn health(
    config: &std::path::Path,
    admin: Option<SocketAddr>,
    timeout: Duration,
) -> ExitCode {
    let address = match admin.map_or_else(|| admin_address(config), Ok) {
        Ok(a) => loopback_for_wildcard(a),
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    match tokio::time::timeout(timeout, ask_health(address)).await {
        Ok(Ok((200, body))) => {
            println!("{body}");
            ExitCode::SUCCESS
        }
        Ok(Ok((status, body))) => {
            println!("{body}");
            eprintln!("not healthy (HTTP {status})");
            ExitCode::FAILURE
        }
        Ok(Err(e)) => {
            eprintln!("no answer from {address}: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("no answer from {address} within {timeout:?}");
            ExitCode::FAILURE
        }
    }
}

/// `[admin] listen` of the file at `path`, read alone: the health check runs as an
/// unprivileged user (keepalived's script user), who may not read the token or MAC files the
/// rest of the configuration names.
fn admin_address(path: &std::path::Path) -> Result<SocketAddr, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let file: toml::Table = text
        .parse()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let admin = file.get("admin").and_then(|a| a.as_table());
    if admin
        .and_then(|a| a.get("enabled"))
        .and_then(|e| e.as_bool())
        == Some(false)
    {
        return Err(
            "tftplb health asks the admin listener, which [admin] enabled = false turns off".into(),
        );
    }
    let listen = admin
        .and_then(|a| a.get("listen"))
        .and_then(|l| l.as_str())
        .unwrap_or(crate::admin::config::DEFAULT_LISTEN);
    listen
        .parse()
        .map_err(|e| format!("admin.listen {listen:?}: {e}"))
}

/// The loopback address of the same family for a wildcard one (the listener is there too).
fn loopback_for_wildcard(mut address: SocketAddr) -> SocketAddr {
    if address.ip().is_unspecified() {
        address.set_ip(if address.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        });
    }
    address
}

/// One HTTP/1.1 GET of `/api/health`: the status code and the body.
async fn ask_health(address: SocketAddr) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request =
        format!("GET /api/health HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await?;
    let status = reply
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| std::io::Error::other("not an HTTP answer"))?;
    let body = reply.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.trim().to_string()))
}

fn manual(out: &std::path::Path) -> ExitCode {
    match crate::manual::write(out, &Cli::command()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write into {}: {e}", out.display());
            ExitCode::FAILURE
        }
    }
}

fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        for p in &e.problems {
            eprintln!("{p}");
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(path: PathBuf) -> ExitCode {
    match load(&path) {
        Ok(config) => {
            for w in &config.warnings {
                println!("warning: {w}");
            }
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

async fn run(path: PathBuf) -> ExitCode {
    let config = match load(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    warn_if_file_limit_short(&config);
    // Installed before anything is bound (and logged): a SIGHUP sent as soon as the address
    // lines appear must reload, not end the process (its default action).
    let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let bound = match Bound::with_file(&config, Some(path)) {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(error = %e, "cannot bind");
            return ExitCode::FAILURE;
        }
    };
    crate::metrics::install_recorder();
    tokio::spawn(reload_on_sighup(hup, bound.control()));
    tokio::spawn(crate::systemd::watchdog());
    crate::systemd::ready(&ready_status(&bound));
    bound
        .serve(async {
            shutdown_signal().await;
            crate::systemd::stopping();
        })
        .await;
    ExitCode::SUCCESS
}

/// Admission stops at what the open-file limit holds (an accepted transfer must never die for
/// lack of a descriptor); when that is below `tftp.max_sessions`, say so at startup, with the fix.
fn warn_if_file_limit_short(config: &Config) {
    use crate::tftp::runtime::{file_limit, sessions_within_file_limit};
    let Some(limit) = file_limit() else {
        return;
    };
    let backends = config.pools.iter().map(|p| p.backends.len()).sum();
    let held = sessions_within_file_limit(limit, backends);
    let max_sessions = config.tftp.max_sessions;
    if held < max_sessions {
        tracing::warn!(
            file_limit = limit,
            max_sessions,
            admitted_at_most = held,
            "the open-file limit holds fewer transfers than tftp.max_sessions (up to three \
             files each): sessions beyond it are left unanswered until others end; raise \
             LimitNOFILE (systemd) or ulimit -n"
        );
    }
}

/// SIGHUP re-reads the configuration file (an invalid file changes nothing).
async fn reload_on_sighup(
    hup: std::io::Result<tokio::signal::unix::Signal>,
    control: std::sync::Arc<crate::control::Control>,
) {
    let Ok(mut hup) = hup else {
        tracing::warn!("cannot install the SIGHUP handler: reload only through the admin API");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reloading the configuration");
        crate::systemd::reloading();
        let outcome = control.reload();
        crate::systemd::ready(if outcome.is_ok() {
            "reloaded"
        } else {
            "reload refused"
        });
    }
}

/// The one-line status systemd shows (`systemctl status`).
fn ready_status(bound: &Bound) -> String {
    let tftp: Vec<String> = bound.tftp_addrs().iter().map(|a| a.to_string()).collect();
    match bound.admin_addr() {
        Some(admin) => format!("tftp on {}; admin on http://{admin}/", tftp.join(", ")),
        None => format!("tftp on {}", tftp.join(", ")),
    }
}

/// Binds the demo front end, then prints the commands with the address actually bound.
async fn serve_demo(config: &Config, backends: &[SocketAddr], root: &std::path::Path) -> ExitCode {
    match Bound::new(config) {
        Ok(bound) => {
            crate::metrics::install_recorder();
            print_demo_banner(bound.tftp_addrs()[0], backends, root);
            if let Some(admin) = bound.admin_addr() {
                println!("status page: http://{admin}/   metrics: http://{admin}/metrics");
            }
            bound.serve(shutdown_signal()).await;
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot bind the demo front end: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn demo(listen: SocketAddr, admin: SocketAddr) -> ExitCode {
    let root = std::env::temp_dir().join(format!("tftplb-demo-{}", std::process::id()));
    let servers = match crate::demo::start_backends(&root, 3).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot start the demo backends: {e}");
            return ExitCode::FAILURE;
        }
    };
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.address).collect();
    let text =
        crate::demo::demo_config(listen, &addrs) + &format!("\n[admin]\nlisten = \"{admin}\"\n");
    let config = Config::parse(&text).expect("demo config is valid");
    let code = serve_demo(&config, &addrs, &root).await;
    drop(servers);
    let _ = std::fs::remove_dir_all(&root);
    code
}

fn print_demo_banner(listen: SocketAddr, backends: &[SocketAddr], root: &std::path::Path) {
    let (host, port) = (listen.ip(), listen.port());
    println!("tftplb demo: front end on {listen}, backends {backends:?}");
    println!("demo trees under {}", root.display());
    println!("files: ARDBP32.BIN pxelinux.0 pxelinux.cfg/default vmlinuz served-by.txt\n");
    println!("try:");
    println!("  curl -s tftp://{host}:{port}/served-by.txt");
    println!("  curl -o vmlinuz --tftp-blksize 1468 tftp://{host}:{port}/vmlinuz");
    println!(
        "  atftp --get -r vmlinuz -l vmlinuz --option \"blksize 1468\" --option \"windowsize 16\" {host} {port}"
    );
    println!("  cargo run -- get {host}:{port} vmlinuz --blksize 1468 --windowsize 16 --tsize");
    println!("\nCtrl-C stops it.");
    use std::io::Write;
    let _ = std::io::stdout().flush();
}

async fn get(server: &str, file: &str, output: Option<PathBuf>, cfg: ClientConfig) -> ExitCode {
    let Some(addr) = resolve(server) else {
        eprintln!("cannot resolve {server:?}");
        return ExitCode::FAILURE;
    };
    match client::fetch(addr, file, &cfg).await {
        Ok((data, transfer)) => {
            print_transfer(addr, file, &data, &transfer);
            save(output, &data)
        }
        Err(e) => {
            eprintln!("tftp://{addr}/{file}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn resolve(server: &str) -> Option<SocketAddr> {
    let with_port = if server.parse::<SocketAddr>().is_ok()
        || server
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.contains(':') && p.parse::<u16>().is_ok())
    {
        server.to_string()
    } else if server.contains(':') && !server.starts_with('[') {
        format!("[{server}]:69")
    } else {
        format!("{server}:69")
    };
    with_port.to_socket_addrs().ok()?.next()
}

fn print_transfer(addr: SocketAddr, file: &str, data: &[u8], t: &client::Transfer) {
    let secs = t.elapsed.as_secs_f64().max(1e-9);
    let options = match &t.oack {
        Some(o) => o
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        None => "none (server ignored options or none asked)".into(),
    };
    // Status goes to stderr, so `-o -` can pipe the file itself.
    eprintln!("tftp://{addr}/{file}");
    eprintln!("  server TID  {}", t.server_tid);
    eprintln!("  options     {options}");
    eprintln!(
        "  in use      blksize {} windowsize {}",
        t.negotiated.blksize, t.negotiated.windowsize
    );
    eprintln!("  size        {} bytes in {} blocks", t.bytes, t.blocks);
    eprintln!("  time        {:.3} s", secs);
    eprintln!(
        "  throughput  {:.2} MiB/s",
        t.bytes as f64 / secs / 1048576.0
    );
    eprintln!("  retransmits {}", t.retransmissions);
    eprintln!("  sha256      {}", hex::encode(Sha256::digest(data)));
}

fn save(output: Option<PathBuf>, data: &[u8]) -> ExitCode {
    use std::io::Write;
    let result = match output {
        None => Ok(()),
        Some(p) if p.as_os_str() == "-" => std::io::stdout().write_all(data),
        Some(p) => std::fs::write(&p, data),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cannot write the file: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_check_reads_only_the_admin_address() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tftplb.toml");
        // The token file does not exist (or the script user may not read it): no matter.
        std::fs::write(
            &path,
            "[admin]\nlisten = \"0.0.0.0:9070\"\ntoken_file = \"/nonexistent/token\"\n\
             [[pool]]\nname = \"p\"\n",
        )
        .unwrap();
        let address = admin_address(&path).unwrap();
        assert_eq!(
            loopback_for_wildcard(address),
            "127.0.0.1:9070".parse().unwrap()
        );
        std::fs::write(&path, "[tftp]\n").unwrap();
        assert_eq!(
            admin_address(&path).unwrap(),
            crate::admin::config::DEFAULT_LISTEN.parse().unwrap()
        );
        std::fs::write(&path, "[admin]\nenabled = false\n").unwrap();
        assert!(
            admin_address(&path)
                .unwrap_err()
                .contains("enabled = false")
        );
    }
}
