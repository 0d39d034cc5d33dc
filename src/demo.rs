//! Embedded backend boot servers (async-tftp) and the demo tree they serve: `tftplb demo`, the
//! tests and the bench start real TFTP servers in-process with these.
//!
//! The tree is generated, deterministic, and the same on every backend except `served-by.txt`,
//! which names the backend, so a user sees the balancing at work.

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use async_tftp::server::{Handler, TftpServerBuilder};
use tokio::task::JoinHandle;

/// Files of the demo tree and their sizes (`served-by.txt` comes on top).
pub const DEMO_FILES: &[(&str, usize)] = &[
    ("ARDBP32.BIN", 9_728),
    ("pxelinux.0", 42_482),
    ("vmlinuz", 5 * 1024 * 1024),
];

/// Writes the demo tree for backend `name` into `dir`.
pub fn write_demo_tree(dir: &Path, name: &str) -> io::Result<()> {
    for (i, (file, size)) in DEMO_FILES.iter().enumerate() {
        std::fs::write(dir.join(file), pseudo_random_bytes(*size, i as u64 + 1))?;
    }
    std::fs::create_dir_all(dir.join("pxelinux.cfg"))?;
    std::fs::write(dir.join("pxelinux.cfg/default"), PXELINUX_DEFAULT)?;
    std::fs::write(dir.join("served-by.txt"), format!("served by {name}\n"))
}

const PXELINUX_DEFAULT: &str = "DEFAULT demo\nLABEL demo\n  KERNEL vmlinuz\n  APPEND quiet\n";

/// Deterministic filler (xorshift64*), so every backend serves identical bytes.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A running embedded TFTP server; aborted when dropped (async-tftp has no shutdown call).
#[derive(Debug)]
pub struct EmbeddedServer {
    pub address: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for EmbeddedServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EmbeddedServer {
    /// Serves `dir` read-only on `bind` (port 0 picks one).
    pub async fn start(dir: &Path, bind: SocketAddr) -> io::Result<EmbeddedServer> {
        let builder = TftpServerBuilder::with_dir_ro(dir).map_err(io::Error::other)?;
        EmbeddedServer::spawn(builder, bind).await
    }

    /// Serves `dir` for reading and writing (tests of pools with `allow_write`).
    pub async fn start_rw(dir: &Path, bind: SocketAddr) -> io::Result<EmbeddedServer> {
        let builder = TftpServerBuilder::with_dir_rw(dir).map_err(io::Error::other)?;
        EmbeddedServer::spawn(builder, bind).await
    }

    /// Serves with a custom async-tftp handler (fault injection in tests).
    pub async fn with_handler<H: Handler + 'static>(
        handler: H,
        bind: SocketAddr,
    ) -> io::Result<EmbeddedServer> {
        EmbeddedServer::spawn(TftpServerBuilder::with_handler(handler), bind).await
    }

    async fn spawn<H: Handler + 'static>(
        builder: TftpServerBuilder<H>,
        bind: SocketAddr,
    ) -> io::Result<EmbeddedServer> {
        let server = builder
            .bind(bind)
            // async-tftp ignores a client's ERROR (a tsize probe's abort): give up quickly.
            .timeout(Duration::from_secs(1))
            .max_send_retries(5)
            .build()
            .await
            .map_err(io::Error::other)?;
        let address = server.listen_addr().map_err(io::Error::other)?;
        let task = tokio::spawn(async move {
            if let Err(e) = server.serve().await {
                tracing::warn!(error = %e, "embedded TFTP server stopped");
            }
        });
        Ok(EmbeddedServer { address, task })
    }

    /// Stops the server now (a dead backend, for failure tests).
    pub fn kill(&self) {
        self.task.abort();
    }
}

/// The demo: three embedded backends, each with its own tree under `root`.
pub async fn start_backends(root: &Path, count: usize) -> io::Result<Vec<EmbeddedServer>> {
    let mut servers = Vec::with_capacity(count);
    for i in 1..=count {
        let dir = root.join(format!("backend{i}"));
        std::fs::create_dir_all(&dir)?;
        write_demo_tree(&dir, &format!("backend{i}"))?;
        servers.push(EmbeddedServer::start(&dir, SocketAddr::from(([127, 0, 0, 1], 0))).await?);
    }
    Ok(servers)
}

/// The configuration the demo runs: one pool over the given backends.
pub fn demo_config(listen: SocketAddr, backends: &[SocketAddr]) -> String {
    let mut text = format!(
        "[tftp]\nlisten = [\"{listen}\"]\n\n[[pool]]\nname = \"demo\"\nbalance = \"round-robin\"\n"
    );
    for b in backends {
        text.push_str(&format!("\n[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filler_is_deterministic_and_sized() {
        assert_eq!(pseudo_random_bytes(1000, 3), pseudo_random_bytes(1000, 3));
        assert_ne!(pseudo_random_bytes(64, 3), pseudo_random_bytes(64, 4));
        assert_eq!(pseudo_random_bytes(13, 1).len(), 13);
    }

    #[test]
    fn demo_config_is_valid() {
        let b: Vec<SocketAddr> = vec![
            "127.0.0.1:7001".parse().unwrap(),
            "127.0.0.1:7002".parse().unwrap(),
        ];
        let c = crate::config::Config::parse(&demo_config("127.0.0.1:6969".parse().unwrap(), &b))
            .unwrap();
        assert_eq!(c.default_pool().backends.len(), 2);
    }
}
