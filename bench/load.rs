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

/// Why a download failed: the client's error, or a transfer that ended with the wrong bytes.
#[derive(Debug)]
pub enum Failure {
    Client(String),
    WrongContent(Box<WrongContent>),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Client(e) => f.write_str(e),
            Failure::WrongContent(w) => write!(
                f,
                "{}: content differs (first bad offset {:?}, got {} of {} bytes)",
                w.file, w.first_bad_offset, w.got_bytes, w.expected_bytes
            ),
        }
    }
}

/// A download the client believed complete whose bytes are not the file's: what a wrong-content
/// case needs to be diagnosed (which bytes arrived instead, from whom, to which client port).
#[derive(Debug, Clone, serde::Serialize)]
pub struct WrongContent {
    pub file: String,
    /// First offset whose bytes differ; `None` when every byte matched but some were missing.
    pub first_bad_offset: Option<usize>,
    pub got_bytes: usize,
    pub expected_bytes: usize,
    /// The tsize the server's OACK announced (the size of the file it was serving).
    pub oack_tsize: Option<u64>,
    /// Where the first bad block's bytes are found among the bench's files ("FILE@OFFSET"), or
    /// `None` (found nowhere, or too short to tell); filled by [`locate`]'s caller.
    pub bad_block_is: Option<String>,
    /// The client's own address (its ephemeral port) and the TID it locked onto.
    pub client: Option<SocketAddr>,
    pub server_tid: SocketAddr,
    /// When this download ended: seconds from the start of the crowd, and UTC (to find the
    /// session in tftplb's log); filled by the crowd.
    pub at_s: f64,
    pub ended: String,
    /// The first block that differed (not serialised: [`locate`] turns it into `bad_block_is`).
    #[serde(skip)]
    pub bad_block: Vec<u8>,
}

/// Where `block` occurs in `files`, as "FILE@OFFSET" (the first match); `None` when it is too
/// short to say (fewer than 16 bytes match too much by chance) or found nowhere.
pub fn locate(block: &[u8], files: &[BenchFile]) -> Option<String> {
    if block.len() < 16 {
        return None;
    }
    files.iter().find_map(|f| {
        f.data
            .windows(block.len())
            .position(|w| w == block)
            .map(|at| format!("{}@{at}", f.name))
    })
}

/// Downloads `file` from `server`, checking every byte; `keep_gaps` keeps every block's gap.
pub async fn get(
    server: SocketAddr,
    file: &BenchFile,
    cfg: &ClientConfig,
    keep_gaps: bool,
) -> Result<Got, Failure> {
    let started = Instant::now();
    let mut sink = CheckSink::new(&file.data, started, keep_gaps);
    let t = download(server, &file.name, cfg, &mut sink)
        .await
        .map_err(|e| Failure::Client(e.to_string()))?;
    if sink.mismatch_at.is_some() || sink.pos != file.data.len() {
        return Err(Failure::WrongContent(Box::new(WrongContent {
            file: file.name.clone(),
            first_bad_offset: sink.mismatch_at,
            got_bytes: sink.pos,
            expected_bytes: file.data.len(),
            oack_tsize: t.oack.as_ref().and_then(|o| o.tsize()),
            bad_block_is: None,
            client: t.local,
            server_tid: t.server_tid,
            at_s: 0.0,
            ended: String::new(),
            bad_block: sink.bad_block,
        })));
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
    /// A copy of the first chunk that differed.
    bad_block: Vec<u8>,
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
            bad_block: Vec::new(),
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
            self.bad_block = chunk.to_vec();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locate_names_the_file_and_offset_a_wrong_block_came_from() {
        let files = [
            BenchFile::new("small", 9728, 1),
            BenchFile::new("big", 65536, 2),
        ];
        let block = &files[1].data[1468..2936];
        assert_eq!(locate(block, &files).as_deref(), Some("big@1468"));
        assert_eq!(
            locate(&files[0].data[..512], &files).as_deref(),
            Some("small@0")
        );
        assert_eq!(locate(&[7u8; 600], &files), None, "bytes of no file");
        assert_eq!(
            locate(&files[1].data[..8], &files),
            None,
            "too short to tell"
        );
    }
}
