//! Active health probes: every `interval`, each backend of a pool is asked for the probe file
//! with the project's own TFTP client, all backends of the pool at once, so one round gives a
//! picture of the whole pool. A ping says nothing about a TFTP service; a download does.
//!
//! With `consistency = true`, the round's content hashes are compared and backends whose file
//! differs from the majority are marked inconsistent (PVS bootstrap files are configured per
//! server and drift apart).

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
    /// Starts a prober for every pool that has a `[pool.health]` section.
    pub fn start(pools: &[Arc<Pool>]) -> Monitor {
        let stop = CancellationToken::new();
        for pool in pools {
            if let Some(cfg) = pool.health.clone() {
                tokio::spawn(watch_pool(pool.clone(), cfg, stop.clone()));
            }
        }
        Monitor { stop }
    }
}

async fn watch_pool(pool: Arc<Pool>, cfg: HealthConfig, stop: CancellationToken) {
    let mut tick = tokio::time::interval(cfg.interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let records = probe_round(&pool, &cfg).await;
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
            judge_consistency(&pool, &records);
        }
    }
}

/// Probes every backend of the pool concurrently; results in backend order.
async fn probe_round(pool: &Pool, cfg: &HealthConfig) -> Vec<ProbeRecord> {
    let mut set = JoinSet::new();
    for (i, b) in pool.backends.iter().enumerate() {
        let (address, cfg) = (b.address, cfg.clone());
        set.spawn(async move { (i, probe_once(address, &cfg).await) });
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
    let started = Instant::now();
    let client_cfg = ClientConfig {
        blksize: Some(1428),
        retry_timeout: (cfg.timeout / 3).max(Duration::from_millis(50)),
        retries: 2,
        ..ClientConfig::default()
    };
    let mut sink = HashingSink::default();
    let result = tokio::time::timeout(
        cfg.timeout,
        client::download(address, &cfg.file, &client_cfg, &mut sink),
    )
    .await;
    let took = started.elapsed();
    match result {
        Err(_) => failed(
            &format!("no complete answer within {:?}", cfg.timeout),
            took,
        ),
        Ok(Err(ClientError::Remote { code, message })) if cfg.expect == Expect::AnyReply => {
            passed(&format!("alive (ERROR {code} {message:?})"), took, None)
        }
        Ok(Err(e)) => failed(&e.to_string(), took),
        Ok(Ok(t)) => judge_download(cfg, t.bytes, sink.finish(), took),
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

/// Marks backends whose content differs from the strict majority of this round's downloads.
/// Without a strict majority (a tie) nothing can be said, and nothing changes.
fn judge_consistency(pool: &Pool, records: &[ProbeRecord]) {
    let Some(majority) = majority_hash(records) else {
        return;
    };
    for (backend, record) in pool.backends.iter().zip(records) {
        if let Some(hash) = &record.sha256 {
            let detail = format!("sha256 {hash}, majority {majority}");
            backend.state.set_inconsistent(
                &backend.address.to_string(),
                *hash != majority,
                &detail,
            );
        }
    }
}

fn majority_hash(records: &[ProbeRecord]) -> Option<String> {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for h in records.iter().filter_map(|r| r.sha256.as_deref()) {
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

/// An `AsyncWrite` that only hashes: a probe never keeps the file.
#[derive(Default)]
struct HashingSink {
    hasher: Sha256,
}

impl HashingSink {
    fn finish(self) -> String {
        hex::encode(self.hasher.finalize())
    }
}

impl tokio::io::AsyncWrite for HashingSink {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.hasher.update(buf);
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

    fn with_hash(h: Option<&str>) -> ProbeRecord {
        let mut r = passed("ok", Duration::ZERO, h.map(String::from));
        r.ok = h.is_some();
        r
    }

    #[test]
    fn majority_needs_a_strict_lead() {
        let r = [
            with_hash(Some("a")),
            with_hash(Some("a")),
            with_hash(Some("b")),
        ];
        assert_eq!(majority_hash(&r).as_deref(), Some("a"));
        let tie = [with_hash(Some("a")), with_hash(Some("b"))];
        assert_eq!(majority_hash(&tie), None);
        let failed = [with_hash(None), with_hash(Some("b"))];
        assert_eq!(majority_hash(&failed).as_deref(), Some("b"));
    }
}
