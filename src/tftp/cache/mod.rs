//! Boot files from memory: a boot storm asks for the same few files (`ARDBP32.BIN`,
//! `pxelinux.0`, `ipxe.efi`, kernels) thousands of times. Pools opt in with `[pool.cache]`;
//! tftplb keeps a verified copy of each such file per backend (`store`) and serves it itself,
//! as a TFTP server toward the client (`negotiate`, `sender`; the relay's `cached` runs them).
//!
//! - The balancing decision stays as it is: the client gets the chosen backend's copy.
//! - Filling never delays a client: a request without a fresh copy is relayed as before while
//!   tftplb downloads the file from that backend in the background, with its own client
//!   (`refresh`): blksize `[tftp] max_blksize`, a window of at most 64 KiB, whatever the
//!   backend grants of them; at most `FILLS_AT_ONCE` downloads at a time.
//! - A copy older than `revalidate` is not served: the request is relayed (live content) and
//!   the file downloaded again; the same content is confirmed, a new one replaces it, a file
//!   the backend no longer has (ERROR 1) is dropped. An edit on a backend therefore reaches
//!   every transfer that starts more than `revalidate` plus one download after it.
//! - The health probe's download of a cached file is `offer`ed: it fills or confirms the
//!   probed backend's copy like a fill would (`health::probe`).
//! - A reload's `[cache]` applies at once (`configure`).

pub mod config;
pub mod negotiate;
pub mod sender;
pub mod store;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::AsyncWrite;
use tokio::sync::Semaphore;

use config::CacheConfig;
use store::{By, Fetched, Filled, Key, Store};

use crate::tftp::client::{self, ClientConfig, ClientError};

/// Background downloads running at most at once (a storm for many files fills them in turn).
pub const FILLS_AT_ONCE: usize = 4;

/// The most bytes a fill asks the backend to send per window: larger bursts overflow a
/// receive buffer even on loopback (measured: blksize 8192 with windowsize 16 took 235 s for
/// 64 MiB from async-tftp, with windowsize 8 under a second for 16 MiB).
const FILL_BURST: usize = 64 * 1024;

/// The copies and the downloads that fill them.
#[derive(Debug)]
pub struct Cache {
    pub store: Store,
    fills: Arc<Semaphore>,
    max_window: AtomicU16,
    pub counts: CacheCounts,
}

/// Counters for the status page (the metrics carry them by label too).
#[derive(Debug, Default)]
pub struct CacheCounts {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub fills: AtomicU64,
    pub changed: AtomicU64,
    pub evictions: AtomicU64,
    pub bytes_served: AtomicU64,
}

/// The cache on the status page and in `/api/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStatus {
    pub max_bytes: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    /// Downloads that filled or confirmed a copy, and those that found it changed.
    pub fills: u64,
    pub changed: u64,
    pub evictions: u64,
    pub bytes_served: u64,
    /// Every copy, the most recently used first.
    pub copies: Vec<store::CopyStatus>,
}

impl Cache {
    pub fn new(config: &CacheConfig) -> Cache {
        Cache {
            store: Store::new(config.max_bytes),
            fills: Arc::new(Semaphore::new(FILLS_AT_ONCE)),
            max_window: AtomicU16::new(config.max_windowsize),
            counts: CacheCounts::default(),
        }
    }

    /// What the status page shows.
    pub fn status(&self) -> CacheStatus {
        let c = &self.counts;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheStatus {
            max_bytes: self.store.max_bytes(),
            bytes: self.store.usage().1,
            hits: get(&c.hits),
            misses: get(&c.misses),
            fills: get(&c.fills),
            changed: get(&c.changed),
            evictions: get(&c.evictions),
            bytes_served: get(&c.bytes_served),
            copies: self.store.list(Instant::now()),
        }
    }

    /// The largest window sent from memory.
    pub fn max_window(&self) -> u16 {
        self.max_window.load(Ordering::Relaxed)
    }

    /// Downloads `name` from the backend of `key` in the background to fill or confirm its
    /// copy, unless a download of it is under way, it was found absent within `revalidate`,
    /// or `FILLS_AT_ONCE` downloads run already (a later miss asks again); `blksize` is the
    /// largest asked. Bounded: no download waits in a queue.
    pub fn refresh(self: &Arc<Self>, key: Key, name: String, blksize: u16, revalidate: Duration) {
        let Ok(permit) = self.fills.clone().try_acquire_owned() else {
            return;
        };
        if !self.store.begin_fill(&key, Instant::now(), revalidate) {
            return;
        }
        let cache = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            // The content is as of the request: an edit during the download is not stamped
            // fresh with the older bytes.
            let started = Instant::now();
            let fetched = download(key.0, &name, blksize, cache.store.max_bytes()).await;
            let outcome = cache.store.finish(&key, &name, fetched, started, By::Fill);
            cache.record(key.0, &name, outcome, By::Fill);
        });
    }

    /// Takes the health probe's download of a file this cache keeps (`started`: when it was
    /// asked for): it fills, confirms, replaces or drops the copy as a fill of its own would.
    pub fn offer(&self, key: &Key, name: &str, fetched: Fetched, started: Instant) {
        let outcome = self.store.finish(key, name, fetched, started, By::Probe);
        self.record(key.0, name, outcome, By::Probe);
    }

    /// A new `[cache]` section (a reload): the memory cap and the largest window apply to
    /// the next transfer; copies beyond the new cap go, the least recently used first.
    pub fn configure(&self, config: &CacheConfig) {
        self.max_window
            .store(config.max_windowsize, Ordering::Relaxed);
        let evicted = self.store.set_max_bytes(config.max_bytes);
        self.record_evictions(evicted);
    }

    /// Counts a download's result (`by`: the cache's own fill, or the health probe's).
    fn record(&self, backend: SocketAddr, name: &str, (filled, evicted): (Filled, u64), by: By) {
        metrics::counter!(crate::metrics::CACHE_FILLS, "result" => filled.as_str()).increment(1);
        self.counts.fills.fetch_add(1, Ordering::Relaxed);
        if filled == Filled::Changed {
            self.counts.changed.fetch_add(1, Ordering::Relaxed);
        }
        match filled {
            Filled::New | Filled::Changed | Filled::Dropped => {
                tracing::info!(%backend, file = name, result = filled.as_str(), by = by.as_str(), "cache filled")
            }
            _ => {
                tracing::debug!(%backend, file = name, result = filled.as_str(), by = by.as_str(), "cache filled")
            }
        }
        self.record_evictions(evicted);
    }

    fn record_evictions(&self, evicted: u64) {
        metrics::counter!(crate::metrics::CACHE_EVICTIONS).increment(evicted);
        self.counts.evictions.fetch_add(evicted, Ordering::Relaxed);
        let (files, bytes) = self.store.usage();
        metrics::gauge!(crate::metrics::CACHE_FILES).set(files as f64);
        metrics::gauge!(crate::metrics::CACHE_BYTES).set(bytes as f64);
    }
}

/// One download into memory, at most `max_bytes`.
async fn download(backend: SocketAddr, name: &str, blksize: u16, max_bytes: usize) -> Fetched {
    let window = (FILL_BURST / usize::from(blksize.max(1))).clamp(1, 16) as u16;
    let cfg = ClientConfig {
        blksize: Some(blksize),
        windowsize: Some(window),
        tsize: true,
        retry_timeout: Duration::from_secs(1),
        retries: 3,
        ..ClientConfig::default()
    };
    let mut sink = Capped {
        data: Vec::new(),
        max: max_bytes,
        overflowed: false,
    };
    match client::download(backend, name, &cfg, &mut sink).await {
        Ok(_) => Fetched::Content(sink.data),
        Err(_) if sink.overflowed => Fetched::TooLarge,
        Err(ClientError::Remote { code: 1, .. }) => Fetched::Gone,
        Err(e) => {
            tracing::debug!(%backend, file = name, error = %e, "cache download failed");
            Fetched::Failed
        }
    }
}

/// A sink that refuses to grow past `max` bytes (a file larger than the cache is not kept).
struct Capped {
    data: Vec<u8>,
    max: usize,
    overflowed: bool,
}

impl AsyncWrite for Capped {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.data.len() + buf.len() > this.max {
            this.overflowed = true;
            this.data = Vec::new();
            return Poll::Ready(Err(io::Error::other("larger than [cache] max_bytes")));
        }
        this.data.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
