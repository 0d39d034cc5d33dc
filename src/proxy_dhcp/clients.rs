//! Every PXE machine ProxyDHCP has heard, answered or not, for the status page and
//! `GET /api/pxe/clients`: an admin copies the MACs of new machines into a route's MAC file,
//! and a reload registers them. Bounded: the least recently seen are forgotten first (any
//! source may claim any MAC, so a flood can push real machines out of this list, never out of
//! an answer).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use lru::LruCache;
use serde::Serialize;

use super::request::PxeRequest;
use crate::route::Mac;

/// One machine as the list shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PxeClient {
    /// `aa:bb:cc:dd:ee:ff`, as a route's MAC file takes it.
    pub mac: String,
    pub arch: String,
    pub vendor_class: String,
    /// Option 97 in hex, when sent.
    pub uuid: Option<String>,
    /// Whether its last request was iPXE's own round.
    pub ipxe: bool,
    /// Seconds since the Unix epoch.
    pub first_seen: u64,
    pub last_seen: u64,
    pub requests: u64,
    /// Whether a route gave it a boot file.
    pub answered: bool,
    /// The file offered, or why not (`unregistered`, `not-ours`, `no-file-for-arch`).
    pub outcome: String,
}

#[derive(Debug)]
pub struct PxeClients {
    max: usize,
    seen: Mutex<LruCache<Mac, PxeClient>>,
}

impl PxeClients {
    pub fn new(max: usize) -> PxeClients {
        PxeClients {
            max: max.max(1),
            seen: Mutex::new(LruCache::unbounded()),
        }
    }

    /// Notes a request and what it got (`answered`: a boot file, named in `outcome`).
    pub fn record(&self, req: &PxeRequest, answered: bool, outcome: &str) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let first_seen = seen.get(&req.mac).map_or(now, |c| c.first_seen);
        let requests = seen.get(&req.mac).map_or(0, |c| c.requests) + 1;
        seen.put(
            req.mac,
            PxeClient {
                mac: mac_text(&req.mac),
                arch: req.arch.name(),
                vendor_class: req.vendor_class.chars().take(64).collect(),
                uuid: req.uuid.as_ref().map(hex::encode),
                ipxe: req.ipxe,
                first_seen,
                last_seen: now,
                requests,
                answered,
                outcome: outcome.chars().take(128).collect(),
            },
        );
        while seen.len() > self.max {
            seen.pop_lru();
        }
        metrics::gauge!(crate::metrics::PXE_CLIENTS).set(seen.len() as f64);
    }

    /// Every machine remembered, the most recently seen first.
    pub fn list(&self) -> Vec<PxeClient> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.iter().map(|(_, c)| c.clone()).collect()
    }
}

pub fn mac_text(mac: &Mac) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}
