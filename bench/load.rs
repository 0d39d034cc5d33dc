//! The load: downloads with the project's async client into a sink that checks every byte
//! against the expected content (a memcmp per block, no hashing, so checking costs the client
//! almost nothing) and timestamps each block.
//!
//! The timestamps give, per transfer: the time to the first DATA (RRQ → first block), the gaps
//! between consecutive blocks (per-block latency), and the longest stall.

use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tftplb::tftp::client::{ClientConfig, download};
use tokio::io::AsyncWrite;
use tokio::time::Instant;

/// A file every backend serves, and its content.
#[derive(Debug, Clone)]
pub struct BenchFile {
    pub name: String,
    pub data: Arc<Vec<u8>>,
}

impl BenchFile {
    pub fn new(name: &str, len: usize, seed: u64) -> BenchFile {
        BenchFile {
            name: name.to_string(),
            data: Arc::new(tftplb::demo::pseudo_random_bytes(len, seed)),
        }
    }
}

/// Writes `files` into `dir`, readable by tftpd-hpa's unprivileged user.
pub fn write_tree(dir: &Path, files: &[BenchFile]) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    mode(dir, 0o755).map_err(|e| e.to_string())?;
    for f in files {
        let path = dir.join(&f.name);
        std::fs::write(&path, f.data.as_slice()).map_err(|e| e.to_string())?;
        mode(&path, 0o644).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// What one successful download measured.
#[derive(Debug, Clone)]
pub struct Got {
    pub bytes: u64,
    pub elapsed: Duration,
    pub first_data: Duration,
    /// Gap before each block after the first, nanoseconds (only when asked for).
    pub gaps_ns: Vec<u32>,
    pub max_gap: Duration,
    pub retransmissions: u64,
}

/// Downloads `file` from `server`, checking every byte; `keep_gaps` keeps every block's gap.
pub async fn get(
    server: SocketAddr,
    file: &BenchFile,
    cfg: &ClientConfig,
    keep_gaps: bool,
) -> Result<Got, String> {
    let started = Instant::now();
    let mut sink = CheckSink::new(&file.data, started, keep_gaps);
    let t = download(server, &file.name, cfg, &mut sink)
        .await
        .map_err(|e| e.to_string())?;
    if sink.mismatch_at.is_some() || sink.pos != file.data.len() {
        return Err(format!(
            "{}: content differs (first bad offset {:?}, got {} of {} bytes)",
            file.name,
            sink.mismatch_at,
            sink.pos,
            file.data.len()
        ));
    }
    Ok(Got {
        bytes: t.bytes,
        elapsed: started.elapsed(),
        first_data: sink.first.unwrap_or_default(),
        gaps_ns: sink.gaps,
        max_gap: sink.max_gap,
        retransmissions: t.retransmissions,
    })
}

/// An `AsyncWrite` that compares what it is given with the expected bytes and times it.
struct CheckSink<'a> {
    expected: &'a [u8],
    pos: usize,
    mismatch_at: Option<usize>,
    started: Instant,
    last: Instant,
    first: Option<Duration>,
    keep_gaps: bool,
    gaps: Vec<u32>,
    max_gap: Duration,
}

impl<'a> CheckSink<'a> {
    fn new(expected: &'a [u8], started: Instant, keep_gaps: bool) -> CheckSink<'a> {
        CheckSink {
            expected,
            pos: 0,
            mismatch_at: None,
            started,
            last: started,
            first: None,
            keep_gaps,
            gaps: Vec::new(),
            max_gap: Duration::ZERO,
        }
    }

    fn take(&mut self, chunk: &[u8]) {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        self.max_gap = self.max_gap.max(gap);
        match self.first {
            None => self.first = Some(now - self.started),
            Some(_) if self.keep_gaps => {
                self.gaps.push(gap.as_nanos().min(u32::MAX as u128) as u32)
            }
            Some(_) => {}
        }
        let end = self.pos + chunk.len();
        if self.mismatch_at.is_none() && self.expected.get(self.pos..end) != Some(chunk) {
            self.mismatch_at = Some(self.pos);
        }
        self.pos = end;
    }
}

impl AsyncWrite for CheckSink<'_> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.take(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Client settings of the bench: blksize, windowsize, and how patient a client is.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct ClientParams {
    pub blksize: Option<u16>,
    pub windowsize: Option<u16>,
    pub tsize: bool,
    pub retry_ms: u64,
    pub retries: u32,
}

impl ClientParams {
    pub fn config(self) -> ClientConfig {
        ClientConfig {
            blksize: self.blksize,
            windowsize: self.windowsize,
            tsize: self.tsize,
            retry_timeout: Duration::from_millis(self.retry_ms),
            retries: self.retries,
            bind: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            ..ClientConfig::default()
        }
    }
}
