//! The copies in memory: one per backend and file (PVS bootstrap files differ per server),
//! each with its sha256 and the instant its content was last confirmed by a download. All
//! copies share `[cache] max_bytes`; the least recently served go first. Whether a copy may be
//! served is a pure question of instants (`fresh`), asked with an explicit `now`.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use lru::LruCache;
use sha2::{Digest, Sha256};

/// A file of a backend: its address and the name as the pool matches it (case-folded where the
/// pool ignores case).
pub type Key = (SocketAddr, Vec<u8>);

/// One copy.
#[derive(Debug)]
pub struct CachedFile {
    /// The name the backend was asked for (the key's may be folded to lower case).
    pub fetched_as: String,
    pub data: Arc<[u8]>,
    pub sha256: [u8; 32],
    /// When a download last gave this content.
    pub confirmed: Instant,
}

impl CachedFile {
    pub fn new(fetched_as: &str, data: Vec<u8>, now: Instant) -> CachedFile {
        let sha256 = Sha256::digest(&data).into();
        CachedFile {
            fetched_as: fetched_as.to_string(),
            data: data.into(),
            sha256,
            confirmed: now,
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Whether a copy confirmed at `confirmed` may be served at `now` without asking again.
pub fn fresh(confirmed: Instant, now: Instant, revalidate: Duration) -> bool {
    now.saturating_duration_since(confirmed) < revalidate
}

/// What a download of a cached file came to.
#[derive(Debug)]
pub enum Fetched {
    Content(Vec<u8>),
    /// The backend no longer has it (ERROR 1): the copy is dropped.
    Gone,
    /// Larger than the whole cache: never kept.
    TooLarge,
    /// Anything else (timeout, another error): the copy stays as it was.
    Failed,
}

/// Whose download a copy comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    /// The cache's own (`begin_fill` marked it).
    Fill,
    /// The health probe's download of the probe file.
    Probe,
}

impl By {
    pub fn as_str(self) -> &'static str {
        match self {
            By::Fill => "fill",
            By::Probe => "probe",
        }
    }
}

/// What `finish` did with a download, for the counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filled {
    New,
    Same,
    Changed,
    Dropped,
    TooLarge,
    Failed,
}

impl Filled {
    pub fn as_str(self) -> &'static str {
        match self {
            Filled::New => "new",
            Filled::Same => "same",
            Filled::Changed => "changed",
            Filled::Dropped => "gone",
            Filled::TooLarge => "too-large",
            Filled::Failed => "failed",
        }
    }
}

/// A copy as the status page lists it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CopyStatus {
    pub backend: SocketAddr,
    pub file: String,
    pub bytes: usize,
    /// The first 12 hex digits of its sha256.
    pub sha256: String,
    pub age_s: u64,
}

#[derive(Debug)]
pub struct Store {
    max_bytes: AtomicUsize,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    files: LruCache<Key, Arc<CachedFile>>,
    bytes: usize,
    filling: HashSet<Key>,
    /// Files a download found missing (ERROR 1) or too large, and when: not asked again
    /// before `revalidate` (a request for a name that does not exist costs one download per
    /// `revalidate`, not one per request). Bounded like the copies' names.
    absent: LruCache<Key, Instant>,
}

/// Names remembered as absent at most.
const ABSENT_MAX: usize = 4096;

impl Store {
    pub fn new(max_bytes: usize) -> Store {
        Store {
            max_bytes: AtomicUsize::new(max_bytes),
            inner: Mutex::new(Inner {
                files: LruCache::unbounded(),
                bytes: 0,
                filling: HashSet::new(),
                absent: LruCache::new(std::num::NonZeroUsize::new(ABSENT_MAX).expect("non-zero")),
            }),
        }
    }

    /// The copy of `key` if it may be served at `now` (it counts as recently used).
    pub fn fresh(&self, key: &Key, now: Instant, revalidate: Duration) -> Option<Arc<CachedFile>> {
        let mut inner = self.lock();
        let file = inner.files.get(key)?;
        fresh(file.confirmed, now, revalidate).then(|| file.clone())
    }

    /// The most recently confirmed copy of `name` among `backends` that is younger than
    /// `max_age` (served while every backend of the pool is down).
    pub fn freshest(
        &self,
        backends: &[SocketAddr],
        name: &[u8],
        now: Instant,
        max_age: Duration,
    ) -> Option<(SocketAddr, Arc<CachedFile>)> {
        let inner = self.lock();
        backends
            .iter()
            .filter_map(|b| Some((*b, inner.files.peek(&(*b, name.to_vec()))?)))
            .filter(|(_, f)| fresh(f.confirmed, now, max_age))
            .max_by_key(|(_, f)| f.confirmed)
            .map(|(b, f)| (b, f.clone()))
    }

    /// Marks `key` as being downloaded; false when it already is (one download at a time),
    /// or a download found it absent less than `revalidate` before `now`.
    pub fn begin_fill(&self, key: &Key, now: Instant, revalidate: Duration) -> bool {
        let mut inner = self.lock();
        if inner
            .absent
            .peek(key)
            .is_some_and(|&at| fresh(at, now, revalidate))
        {
            return false;
        }
        inner.filling.insert(key.clone())
    }

    /// Takes a download's result, started at `started` (its content is as of then): a new or
    /// changed content replaces the copy (every transfer from now on gets it), the same content
    /// is confirmed again, a file the backend no longer has (or one too large to keep) is
    /// dropped and remembered as absent; then the least recently used copies go until all
    /// fit. The sha256 is taken before the lock. A download of the cache's own ends its fill
    /// (`begin_fill`); the health probe's leaves a fill that may be under way marked.
    pub fn finish(
        &self,
        key: &Key,
        name: &str,
        fetched: Fetched,
        started: Instant,
        by: By,
    ) -> (Filled, u64) {
        let (file, kind) = match fetched {
            Fetched::Content(data) if data.len() > self.max_bytes() => (None, Filled::TooLarge),
            Fetched::Content(data) => (Some(CachedFile::new(name, data, started)), Filled::New),
            Fetched::Gone => (None, Filled::Dropped),
            Fetched::TooLarge => (None, Filled::TooLarge),
            Fetched::Failed => (None, Filled::Failed),
        };
        let mut inner = self.lock();
        if by == By::Fill {
            inner.filling.remove(key);
        }
        let filled = match file {
            Some(file) => {
                let filled = match inner.files.peek(key) {
                    None => Filled::New,
                    Some(old) if old.sha256 == file.sha256 => Filled::Same,
                    Some(_) => Filled::Changed,
                };
                inner.remove(key);
                inner.absent.pop(key);
                inner.bytes += file.len();
                inner.files.put(key.clone(), Arc::new(file));
                filled
            }
            None => kind,
        };
        if matches!(filled, Filled::Dropped | Filled::TooLarge) {
            inner.remove(key);
            inner.absent.put(key.clone(), started);
        }
        let evicted = inner.evict_to(self.max_bytes());
        (filled, evicted)
    }

    /// The sha256 of every copy of `backends`, by file name: what each last gave, for the
    /// pool's consistency check.
    pub fn hashes(
        &self,
        backends: &[SocketAddr],
    ) -> BTreeMap<Vec<u8>, Vec<(SocketAddr, [u8; 32])>> {
        let inner = self.lock();
        let mut by_name: BTreeMap<Vec<u8>, Vec<(SocketAddr, [u8; 32])>> = BTreeMap::new();
        for ((backend, name), f) in inner.files.iter() {
            if backends.contains(backend) {
                by_name
                    .entry(name.clone())
                    .or_default()
                    .push((*backend, f.sha256));
            }
        }
        by_name
    }

    /// The name the backend was asked for when `key`'s copy was taken.
    pub fn fetched_as(&self, key: &Key) -> Option<String> {
        self.lock().files.peek(key).map(|f| f.fetched_as.clone())
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes.load(Ordering::Relaxed)
    }

    /// A new `[cache] max_bytes` (a reload): the least recently used copies go until the rest
    /// fit; returns how many went.
    pub fn set_max_bytes(&self, max_bytes: usize) -> u64 {
        self.max_bytes.store(max_bytes, Ordering::Relaxed);
        self.lock().evict_to(max_bytes)
    }

    /// (copies, bytes) held now.
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.files.len(), inner.bytes)
    }

    /// Every copy, the most recently used first.
    pub fn list(&self, now: Instant) -> Vec<CopyStatus> {
        let inner = self.lock();
        inner
            .files
            .iter()
            .map(|((backend, name), f)| CopyStatus {
                backend: *backend,
                file: crate::protocol::names::display(name),
                bytes: f.len(),
                sha256: hex::encode(&f.sha256[..6]),
                age_s: now.saturating_duration_since(f.confirmed).as_secs(),
            })
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Inner {
    fn remove(&mut self, key: &Key) {
        if let Some(old) = self.files.pop(key) {
            self.bytes -= old.len();
        }
    }

    /// Drops the least recently used copies until at most `max_bytes` are held.
    fn evict_to(&mut self, max_bytes: usize) -> u64 {
        let mut evicted = 0;
        while self.bytes > max_bytes {
            let Some((_, old)) = self.files.pop_lru() else {
                break;
            };
            self.bytes -= old.len();
            evicted += 1;
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(backend: u16, name: &str) -> Key {
        (
            SocketAddr::from(([127, 0, 0, 1], backend)),
            name.as_bytes().to_vec(),
        )
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn a_copy_is_served_while_fresh_and_replaced_when_it_changed() {
        let t0 = Instant::now();
        let store = Store::new(1000);
        let k = key(1, "ARDBP32.BIN");
        assert!(store.fresh(&k, t0, 5 * S).is_none());
        assert!(store.begin_fill(&k, t0, 5 * S));
        assert!(!store.begin_fill(&k, t0, 5 * S), "one download at a time");
        assert_eq!(
            store
                .finish(&k, "f", Fetched::Content(b"v1".to_vec()), t0, By::Fill)
                .0,
            Filled::New
        );
        assert_eq!(&*store.fresh(&k, t0 + 4 * S, 5 * S).unwrap().data, b"v1");
        assert!(
            store.fresh(&k, t0 + 5 * S, 5 * S).is_none(),
            "stale at revalidate"
        );
        // Refetched: the same content is confirmed again, a new one replaces it.
        assert_eq!(
            store
                .finish(
                    &k,
                    "f",
                    Fetched::Content(b"v1".to_vec()),
                    t0 + 5 * S,
                    By::Fill
                )
                .0,
            Filled::Same
        );
        assert!(store.fresh(&k, t0 + 9 * S, 5 * S).is_some());
        assert_eq!(
            store
                .finish(
                    &k,
                    "f",
                    Fetched::Content(b"v2!".to_vec()),
                    t0 + 10 * S,
                    By::Fill
                )
                .0,
            Filled::Changed
        );
        assert_eq!(&*store.fresh(&k, t0 + 10 * S, 5 * S).unwrap().data, b"v2!");
        assert_eq!(store.usage(), (1, 3));
        // A failed download keeps it; a file gone from the backend drops it.
        assert_eq!(
            store
                .finish(&k, "f", Fetched::Failed, t0 + 11 * S, By::Fill)
                .0,
            Filled::Failed
        );
        assert_eq!(store.usage(), (1, 3));
        assert_eq!(
            store
                .finish(&k, "f", Fetched::Gone, t0 + 12 * S, By::Fill)
                .0,
            Filled::Dropped
        );
        assert_eq!(store.usage(), (0, 0));
    }

    #[test]
    fn copies_are_per_backend_and_the_least_recently_used_go_first() {
        let t0 = Instant::now();
        let store = Store::new(10);
        let (a, b, c) = (key(1, "f"), key(2, "f"), key(3, "f"));
        store.finish(&a, "f", Fetched::Content(b"aaaa".to_vec()), t0, By::Fill);
        store.finish(&b, "f", Fetched::Content(b"bbbb".to_vec()), t0, By::Fill);
        assert_eq!(&*store.fresh(&a, t0, S).unwrap().data, b"aaaa");
        // c does not fit with both: b, used least recently, goes.
        assert_eq!(
            store.finish(&c, "f", Fetched::Content(b"cccc".to_vec()), t0, By::Fill),
            (Filled::New, 1)
        );
        assert!(store.fresh(&b, t0, S).is_none());
        assert!(store.fresh(&a, t0, S).is_some());
        assert_eq!(store.usage(), (2, 8));
        // A file larger than the whole cache is never kept.
        assert_eq!(
            store
                .finish(&b, "f", Fetched::Content(vec![0; 11]), t0, By::Fill)
                .0,
            Filled::TooLarge
        );
        assert_eq!(store.usage(), (2, 8));
    }

    #[test]
    fn the_freshest_copy_of_any_backend_serves_while_all_are_down() {
        let t0 = Instant::now();
        let store = Store::new(100);
        store.finish(
            &key(1, "f"),
            "f",
            Fetched::Content(b"old".to_vec()),
            t0,
            By::Fill,
        );
        store.finish(
            &key(2, "f"),
            "f",
            Fetched::Content(b"new".to_vec()),
            t0 + 10 * S,
            By::Fill,
        );
        let backends = [key(1, "f").0, key(2, "f").0];
        let (backend, got) = store
            .freshest(&backends, b"f", t0 + 20 * S, 60 * S)
            .unwrap();
        assert_eq!((backend, &*got.data), (backends[1], &b"new"[..]));
        assert!(
            store
                .freshest(&backends, b"f", t0 + 71 * S, 60 * S)
                .is_none()
        );
        assert!(store.freshest(&backends, b"g", t0, 60 * S).is_none());
    }

    #[test]
    fn a_probe_s_download_fills_without_ending_a_fill_under_way() {
        let t0 = Instant::now();
        let store = Store::new(100);
        let k = key(1, "pxelinux.0");
        assert!(store.begin_fill(&k, t0, S));
        let offered = store.finish(
            &k,
            "pxelinux.0",
            Fetched::Content(b"probe".to_vec()),
            t0,
            By::Probe,
        );
        assert_eq!(offered, (Filled::New, 0));
        assert!(!store.begin_fill(&k, t0, S), "the fill is still under way");
        assert_eq!(
            store.hashes(&[k.0])[&k.1],
            [(k.0, store.fresh(&k, t0, S).unwrap().sha256)]
        );
        assert!(
            store.hashes(&[key(2, "x").0]).is_empty(),
            "other backends' copies"
        );
    }

    #[test]
    fn a_smaller_cap_evicts_at_once() {
        let t0 = Instant::now();
        let store = Store::new(100);
        for name in ["a", "b"] {
            store.finish(
                &key(1, name),
                "f",
                Fetched::Content(vec![0; 40]),
                t0,
                By::Fill,
            );
        }
        store.fresh(&key(1, "a"), t0, S);
        assert_eq!(store.set_max_bytes(50), 1);
        assert_eq!(store.usage(), (1, 40));
        assert!(
            store.fresh(&key(1, "a"), t0, S).is_some(),
            "b was used least recently"
        );
    }
}
