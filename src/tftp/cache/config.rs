//! `[pool.cache]` (which files of a pool are kept in memory, how soon a copy is checked
//! again, how long one may be served while every backend is down) and `[cache]` (the memory
//! all copies share, the largest window tftplb sends from memory).

use std::time::Duration;

use serde::Deserialize;

/// `[pool.cache]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPoolCache {
    files: Vec<String>,
    #[serde(default = "default_revalidate", with = "humantime_serde")]
    revalidate: Duration,
    #[serde(default, with = "humantime_serde")]
    serve_stale: Duration,
}

/// A copy older than this is fetched again before it is served again: an edit on the server
/// goes live within it (plus one download).
fn default_revalidate() -> Duration {
    Duration::from_secs(5)
}

/// Validated `[pool.cache]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolCacheConfig {
    /// Globs on the normalised name, matched as the pool's `files` are.
    pub files: Vec<String>,
    pub revalidate: Duration,
    /// How old a copy may be and still be served when no backend of the pool is eligible
    /// (0: never).
    pub serve_stale: Duration,
}

impl RawPoolCache {
    pub fn validate(self, key: &str, problems: &mut Vec<String>) -> PoolCacheConfig {
        if self.files.is_empty() {
            problems.push(format!(
                "{key}.files: name at least one file or glob to keep"
            ));
        }
        for (j, g) in self.files.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                problems.push(format!(
                    "{key}.files[{j}]: invalid glob {g:?}: {}",
                    e.kind()
                ));
            }
        }
        if self.revalidate.is_zero() {
            problems.push(format!(
                "{key}.revalidate: must be above 0 (every transfer would wait for a download)"
            ));
        }
        PoolCacheConfig {
            files: self.files,
            revalidate: self.revalidate,
            serve_stale: self.serve_stale,
        }
    }
}

/// `[cache]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    #[serde(default = "default_max_bytes")]
    max_bytes: u64,
    #[serde(default = "default_max_windowsize")]
    max_windowsize: u16,
}

impl Default for RawCache {
    fn default() -> Self {
        RawCache {
            max_bytes: default_max_bytes(),
            max_windowsize: default_max_windowsize(),
        }
    }
}

/// 256 MiB: a few dozen boot files and kernels.
fn default_max_bytes() -> u64 {
    256 * 1024 * 1024
}

/// The largest window sent from memory (RFC 7440); a client asking more gets this many.
fn default_max_windowsize() -> u16 {
    16
}

/// The largest `max_windowsize` accepted.
pub const MAX_WINDOW: u16 = 64;

/// Validated `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    pub max_bytes: usize,
    pub max_windowsize: u16,
}

impl Default for CacheConfig {
    fn default() -> Self {
        RawCache::default().validate(&mut Vec::new())
    }
}

impl RawCache {
    pub fn validate(self, problems: &mut Vec<String>) -> CacheConfig {
        if !(1..=MAX_WINDOW).contains(&self.max_windowsize) {
            problems.push(format!(
                "cache.max_windowsize: must be within 1..={MAX_WINDOW} (a larger window overflows clients' buffers)"
            ));
        }
        CacheConfig {
            max_bytes: usize::try_from(self.max_bytes).unwrap_or(usize::MAX),
            max_windowsize: self.max_windowsize.clamp(1, MAX_WINDOW),
        }
    }
}
