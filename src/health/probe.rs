//! Active health probes: every `interval`, each backend of a pool is asked for the probe file
//! with the project's own TFTP client, all backends of the pool at once, so one round gives a
//! picture of the whole pool. A ping says nothing about a TFTP service; a download does.
//!
//! With `consistency = true`, the round's content hashes are compared and backends whose file
//! differs from the majority are marked inconsistent (PVS bootstrap files are configured per
//! server and drift apart). The copies the pool serves from memory are compared too, file by
//! file, at no cost: their sha256 is known.
//!
//! When the probe file is one the pool serves from memory (`[pool.cache]`), the probe's
//! download fills or confirms the probed backend's copy: a cached file checked every few
//! seconds is never fetched twice for it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::state::ProbeRecord;
use crate::health::config::{Expect, HealthConfig};
use crate::pool::Pool;
use crate::protocol::names::normalise;
use crate::tftp::cache::Cache;
use crate::tftp::cache::store::Fetched;
use crate::tftp::client::{self, ClientConfig, ClientError};

/// The probers of one runtime; stopped when dropped (a reload starts new ones).
#[derive(Debug)]
pub struct Monitor {
    stop: CancellationToken,
}

impl Drop for Monitor {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Monitor {
    /// Starts a prober for every pool that has a `[pool.health]` section; `cache` holds the
    /// copies the probes fill and the consistency check reads.
    pub fn start(pools: &[Arc<Pool>], cache: &Arc<Cache>) -> Monitor {
        let stop = CancellationToken::new();
        for pool in pools {
            if let Some(cfg) = pool.health.clone() {
                let cache = pool.cache.is_some().then(|| cache.clone());
                tokio::spawn(watch_pool(pool.clone(), cfg, cache, stop.clone()));
            }
        }
        Monitor { stop }
    }
}

async fn watch_pool(
    pool: Arc<Pool>,
    cfg: HealthConfig,
    cache: Option<Arc<Cache>>,
    stop: CancellationToken,
) {
    let copy_to = cache.as_ref().and_then(|cache| {
        let name = pool.cached_name(&normalise(cfg.file.as_bytes()))?;
        Some(CopyTo {
            cache: cache.clone(),
            name,
        })
    });
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let records = probe_round(&pool, &cfg, copy_to.as_ref()).await;
        for (i, record) in records.iter().enumerate() {
            let backend = &pool.backends[i];
            let name = backend.address.to_string();
            metrics::histogram!(crate::metrics::PROBE_DURATION, "backend" => name.clone())
                .record(record.duration.as_secs_f64());
            backend
                .state
                .record_probe(&name, record.clone(), cfg.rise, cfg.fall);
        }
        if cfg.consistency {
            let copies = cache
                .as_ref()
                .map(|c| cached_hashes(&pool, c, copy_to.as_ref()));
            judge_consistency(&pool, &records, copies.unwrap_or_default(), cache.as_ref());
        }
    }
}

/// Where a probe's download goes besides its hash: the probed backend's copy in memory.
#[derive(Debug, Clone)]
struct CopyTo {
    cache: Arc<Cache>,
    /// The probe file's name as the copies are kept (`Pool::cached_name`).
    name: Vec<u8>,
}

/// Probes every backend of the pool concurrently; results in backend order.
async fn probe_round(
    pool: &Pool,
    cfg: &HealthConfig,
    copy_to: Option<&CopyTo>,
) -> Vec<ProbeRecord> {
    let mut set = JoinSet::new();
    for (i, b) in pool.backends.iter().enumerate() {
        let (address, cfg, copy_to) = (b.address, cfg.clone(), copy_to.cloned());
        set.spawn(async move { (i, probe_copying(address, &cfg, copy_to).await) });
    }
    let mut records = vec![None; pool.backends.len()];
    while let Some(joined) = set.join_next().await {
        if let Ok((i, record)) = joined {
            records[i] = Some(record);
        }
    }
    records
        .into_iter()
        .map(|r| r.unwrap_or_else(|| failed("probe task failed", Duration::ZERO)))
        .collect()
}

/// One probe: download `cfg.file` from `address` within `cfg.timeout` and judge it.
pub async fn probe_once(address: SocketAddr, cfg: &HealthConfig) -> ProbeRecord {
    probe_copying(address, cfg, None).await
}

/// A probe whose download also fills the backend's copy in memory, when `copy_to` is given.
async fn probe_copying(
    address: SocketAddr,
    cfg: &HealthConfig,
    copy_to: Option<CopyTo>,
) -> ProbeRecord {
    let started = Instant::now();
    let client_cfg = ClientConfig {
        blksize: Some(1428),
        retry_timeout: (cfg.timeout / 3).max(Duration::from_millis(50)),
        retries: 2,
        ..ClientConfig::default()
    };
    let keep = copy_to.as_ref().map(|c| c.cache.store.max_bytes());
    let mut sink = ProbeSink::keeping(keep);
    let result = tokio::time::timeout(
        cfg.timeout,
        client::download(address, &cfg.file, &client_cfg, &mut sink),
    )
    .await;
    let took = started.elapsed();
    let (sha256, kept) = sink.finish();
    if let Some(copy_to) = copy_to {
        let fetched = match &result {
            Ok(Ok(_)) => Some(kept.map_or(Fetched::TooLarge, Fetched::Content)),
            Ok(Err(ClientError::Remote { code: 1, .. })) => Some(Fetched::Gone),
            _ => None,
        };
        if let Some(fetched) = fetched {
            let key = (address, copy_to.name.clone());
            copy_to
                .cache
                .offer(&key, &cfg.file, fetched, started.into_std());
        }
    }
    match result {
        Err(_) => failed(
            &format!("no complete answer within {:?}", cfg.timeout),
            took,
        ),
        Ok(Err(ClientError::Remote { code, message })) if cfg.expect == Expect::AnyReply => {
            passed(&format!("alive (ERROR {code} {message:?})"), took, None)
        }
        Ok(Err(e)) => failed(&e.to_string(), took),
        Ok(Ok(t)) => judge_download(cfg, t.bytes, sha256, took),
    }
}

fn judge_download(cfg: &HealthConfig, bytes: u64, sha256: String, took: Duration) -> ProbeRecord {
    match &cfg.sha256 {
        Some(want) if *want != sha256 => {
            let mut r = failed(
                &format!("content sha256 {sha256} is not the configured {want}"),
                took,
            );
            r.sha256 = Some(sha256);
            r
        }
        _ => passed(&format!("downloaded {bytes} bytes"), took, Some(sha256)),
    }
}

fn passed(detail: &str, duration: Duration, sha256: Option<String>) -> ProbeRecord {
    ProbeRecord {
        ok: true,
        detail: detail.to_string(),
        at: SystemTime::now(),
        duration,
        sha256,
    }
}

fn failed(detail: &str, duration: Duration) -> ProbeRecord {
    ProbeRecord {
        ok: false,
        ..passed(detail, duration, None)
    }
}

/// Every copy in memory of the pool's backends, per file, as each backend's hash in backend
/// order (the probe file aside: the round's downloads speak for it). A copy is the content
/// its backend last gave; one found different is downloaded again each round
/// (`judge_consistency`), so a file mended on the server is seen without client traffic.
fn cached_hashes(pool: &Pool, cache: &Cache, copy_to: Option<&CopyTo>) -> Files {
    let addresses: Vec<SocketAddr> = pool.backends.iter().map(|b| b.address).collect();
    cache
        .store
        .hashes(&addresses)
        .into_iter()
        .filter(|(name, _)| copy_to.is_none_or(|c| c.name != *name))
        .map(|(name, copies)| {
            let by_backend = addresses
                .iter()
                .map(|a| {
                    let hash = copies.iter().find(|(b, _)| b == a);
                    hash.map(|(_, h)| hex::encode(h))
                })
                .collect();
            (name, by_backend)
        })
        .collect()
}

/// Files compared across the pool: a name and each backend's sha256 (None: not known). The
/// probe file comes first, with an empty name.
type Files = Vec<(Vec<u8>, Vec<Option<String>>)>;

/// What the check says of one backend: whether it differs, why, and on which file (an index
/// into `Files`; 0 is the probe file).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Verdict {
    inconsistent: bool,
    detail: String,
    file: usize,
}

/// Marks backends whose content differs from the strict majority, file by file: the round's
/// downloads, then the copies in memory (`copies`); a differing copy is fetched again.
fn judge_consistency(
    pool: &Pool,
    records: &[ProbeRecord],
    copies: Files,
    cache: Option<&Arc<Cache>>,
) {
    let probed = records.iter().map(|r| r.sha256.clone()).collect();
    let mut files = vec![(Vec::new(), probed)];
    files.extend(copies);
    for (backend, verdict) in pool.backends.iter().zip(verdicts(&files)) {
        let Some(verdict) = verdict else { continue };
        let who = backend.address.to_string();
        backend
            .state
            .set_inconsistent(&who, verdict.inconsistent, &verdict.detail);
        let disputed_copy = verdict.inconsistent && verdict.file > 0;
        if let (true, Some(cache), Some((cfg, _))) = (disputed_copy, cache, &pool.cache) {
            let key = (backend.address, files[verdict.file].0.clone());
            // Asked as it was fetched: the key may be folded to lower case.
            if let Some(name) = cache.store.fetched_as(&key) {
                cache.refresh(key, name, 1428, cfg.revalidate);
            }
        }
    }
}

/// Per backend: a backend is inconsistent when any file with a strict majority differs,
/// consistent when every such file it has agrees. None where no file with a majority has a
/// hash of it (a tie says nothing, and nothing changes).
fn verdicts(files: &Files) -> Vec<Option<Verdict>> {
    let backends = files.first().map_or(0, |(_, h)| h.len());
    let mut out: Vec<Option<Verdict>> = vec![None; backends];
    for (file, (name, hashes)) in files.iter().enumerate() {
        let Some(majority) = majority_hash(hashes) else {
            continue;
        };
        for (verdict, hash) in out.iter_mut().zip(hashes) {
            let Some(hash) = hash else { continue };
            if verdict
                .as_ref()
                .is_some_and(|v| v.inconsistent || *hash == majority)
            {
                continue;
            }
            let named = match name.is_empty() {
                true => String::new(),
                false => format!("{}: ", crate::protocol::names::display(name)),
            };
            *verdict = Some(Verdict {
                inconsistent: *hash != majority,
                detail: format!("{named}sha256 {hash}, majority {majority}"),
                file,
            });
        }
    }
    out
}

fn majority_hash(hashes: &[Option<String>]) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in hashes.iter().flatten() {
        *counts.entry(h).or_default() += 1;
    }
    let mut ranked: Vec<(&str, usize)> = counts.into_iter().collect();
    ranked.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
    match ranked.as_slice() {
        [(h, _)] => Some(h.to_string()),
        [(h, n), (_, m), ..] if n > m => Some(h.to_string()),
        _ => None,
    }
}

/// An `AsyncWrite` that hashes, and keeps the bytes (at most `max`) only when asked: the copy
/// in memory of a cached probe file. A file too large to keep is still hashed whole.
#[derive(Default)]
struct ProbeSink {
    hasher: Sha256,
    kept: Option<Vec<u8>>,
    max: usize,
}

impl ProbeSink {
    fn keeping(max: Option<usize>) -> ProbeSink {
        ProbeSink {
            kept: max.map(|_| Vec::new()),
            max: max.unwrap_or(0),
            ..ProbeSink::default()
        }
    }

    /// The sha256 in hex, and the bytes if they were kept and fit.
    fn finish(self) -> (String, Option<Vec<u8>>) {
        (hex::encode(self.hasher.finalize()), self.kept)
    }
}

impl tokio::io::AsyncWrite for ProbeSink {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        this.hasher.update(buf);
        if let Some(kept) = &mut this.kept {
            match kept.len() + buf.len() > this.max {
                true => this.kept = None,
                false => kept.extend_from_slice(buf),
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hashes(h: &[Option<&str>]) -> Vec<Option<String>> {
        h.iter().map(|h| h.map(String::from)).collect()
    }

    #[test]
    fn majority_needs_a_strict_lead() {
        let r = hashes(&[Some("a"), Some("a"), Some("b")]);
        assert_eq!(majority_hash(&r).as_deref(), Some("a"));
        assert_eq!(majority_hash(&hashes(&[Some("a"), Some("b")])), None);
        let failed = hashes(&[None, Some("b")]);
        assert_eq!(majority_hash(&failed).as_deref(), Some("b"));
    }

    #[test]
    fn a_copy_in_memory_that_differs_makes_its_backend_inconsistent() {
        let files: Files = vec![
            (Vec::new(), hashes(&[Some("p"), Some("p"), Some("p")])),
            (
                b"ARDBP32.BIN".to_vec(),
                hashes(&[Some("x"), Some("x"), Some("y")]),
            ),
            (b"tie.bin".to_vec(), hashes(&[Some("t"), Some("u"), None])),
        ];
        let v = verdicts(&files);
        let flags: Vec<Option<(bool, usize)>> = v
            .iter()
            .map(|v| v.as_ref().map(|v| (v.inconsistent, v.file)))
            .collect();
        assert_eq!(flags, [Some((false, 0)), Some((false, 0)), Some((true, 1))]);
        let detail = &v[2].as_ref().unwrap().detail;
        assert_eq!(detail, "ARDBP32.BIN: sha256 y, majority x");
        // The probe file's own difference wins the detail; a tie says nothing of anyone.
        let probe_differs: Files = vec![
            (Vec::new(), hashes(&[Some("p"), Some("q"), Some("p")])),
            (b"f".to_vec(), hashes(&[Some("a"), Some("b"), Some("a")])),
        ];
        assert_eq!(verdicts(&probe_differs)[1].as_ref().unwrap().file, 0);
        let ties: Files = vec![(Vec::new(), hashes(&[Some("a"), Some("b")]))];
        assert_eq!(verdicts(&ties), [None, None]);
    }
}
