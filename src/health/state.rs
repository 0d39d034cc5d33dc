//! A backend's health and admin state, as the data path reads it: three atomics, no lock.
//!
//! Writers (the prober, passive signals from sessions, the admin API) are rare and take a small
//! mutex for the hysteresis counters and the record shown on the status page. Every flip is
//! logged once (what, why, how long the old state lasted) and bumps a change counter that the
//! DNS zone and the status page watch; single probes are never logged.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;

pub use super::config::AdminState;

/// What the probes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Health {
    /// No probe has finished yet: not used for new sessions (unless the all-down policy says so).
    Unknown = 0,
    Up = 1,
    Down = 2,
}

impl Health {
    fn from_u8(v: u8) -> Health {
        match v {
            1 => Health::Up,
            2 => Health::Down,
            _ => Health::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Health::Unknown => "unknown",
            Health::Up => "up",
            Health::Down => "down",
        }
    }
}

/// The last probe, for the status page and API.
#[derive(Debug, Clone)]
pub struct ProbeRecord {
    pub ok: bool,
    pub detail: String,
    pub at: SystemTime,
    pub duration: Duration,
    pub sha256: Option<String>,
}

/// Hysteresis and history; behind a mutex, off the data path.
#[derive(Debug)]
struct Record {
    passes: u32,
    fails: u32,
    since: Instant,
    last_probe: Option<ProbeRecord>,
}

/// Counts health changes anywhere in the program; watchers rebuild what depends on health.
pub type HealthEvents = Arc<watch::Sender<u64>>;

pub fn health_events() -> HealthEvents {
    Arc::new(watch::channel(0).0)
}

#[derive(Debug)]
pub struct BackendState {
    health: AtomicU8,
    admin: AtomicU8,
    /// The admin state the configuration file last gave: a reload that leaves it unchanged
    /// keeps what the admin API set meanwhile.
    file_admin: AtomicU8,
    inconsistent: AtomicBool,
    record: Mutex<Record>,
    events: HealthEvents,
}

impl BackendState {
    /// A backend starts `Unknown` when probes will judge it, `Up` when none are configured.
    pub fn new(probed: bool, admin: AdminState, events: HealthEvents) -> BackendState {
        let health = if probed { Health::Unknown } else { Health::Up };
        BackendState {
            health: AtomicU8::new(health as u8),
            admin: AtomicU8::new(admin as u8),
            file_admin: AtomicU8::new(admin as u8),
            inconsistent: AtomicBool::new(false),
            record: Mutex::new(Record {
                passes: 0,
                fails: 0,
                since: Instant::now(),
                last_probe: None,
            }),
            events,
        }
    }

    pub fn health(&self) -> Health {
        Health::from_u8(self.health.load(Ordering::Relaxed))
    }

    pub fn admin(&self) -> AdminState {
        AdminState::from_u8(self.admin.load(Ordering::Relaxed))
    }

    pub fn inconsistent(&self) -> bool {
        self.inconsistent.load(Ordering::Relaxed)
    }

    /// May new sessions go here in normal operation?
    pub fn eligible(&self) -> bool {
        self.admin() == AdminState::Enabled && self.health() == Health::Up && !self.inconsistent()
    }

    /// How long the backend has been in its current health state.
    pub fn in_state_for(&self) -> Duration {
        self.lock().since.elapsed()
    }

    pub fn last_probe(&self) -> Option<ProbeRecord> {
        self.lock().last_probe.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a probe result; flips after `rise` passes or `fall` failures in a row.
    pub fn record_probe(&self, who: &str, probe: ProbeRecord, rise: u32, fall: u32) {
        let ok = probe.ok;
        let detail = probe.detail.clone();
        let mut r = self.lock();
        r.last_probe = Some(probe);
        self.count(&mut r, who, ok, &detail, rise, fall);
    }

    /// A relayed transfer the backend failed (its port closed, an ERROR or a stall
    /// mid-transfer) counts as a failed probe. Silence to a request does not: a backend at its
    /// capacity drops requests and is busy, not dead; its probes tell which.
    pub fn record_passive_failure(&self, who: &str, fall: u32) {
        let mut r = self.lock();
        self.count(
            &mut r,
            who,
            false,
            "failed a relayed transfer",
            u32::MAX,
            fall,
        );
    }

    fn count(&self, r: &mut Record, who: &str, ok: bool, detail: &str, rise: u32, fall: u32) {
        if ok {
            r.passes = r.passes.saturating_add(1);
            r.fails = 0;
        } else {
            r.fails = r.fails.saturating_add(1);
            r.passes = 0;
        }
        // A backend never probed before goes up on its first pass: "not used until its first
        // probe passes"; afterwards `rise` passes in a row are needed.
        let target = match self.health() {
            Health::Unknown if ok => Some(Health::Up),
            Health::Unknown if r.fails >= fall => Some(Health::Down),
            Health::Down if r.passes >= rise => Some(Health::Up),
            Health::Up if r.fails >= fall => Some(Health::Down),
            _ => None,
        };
        if let Some(new) = target {
            self.flip(r, who, new, detail);
        }
    }

    fn flip(&self, r: &mut Record, who: &str, new: Health, why: &str) {
        let old = self.health();
        let held = r.since.elapsed();
        r.since = Instant::now();
        self.health.store(new as u8, Ordering::Relaxed);
        tracing::warn!(
            backend = who,
            from = old.as_str(),
            to = new.as_str(),
            why,
            after_s = held.as_secs(),
            "backend health changed"
        );
        metrics::gauge!(crate::metrics::BACKEND_UP, "backend" => who.to_string())
            .set(f64::from(u8::from(new == Health::Up)));
        self.events.send_modify(|e| *e += 1);
    }

    /// Marks or clears content drift; logs on change.
    pub fn set_inconsistent(&self, who: &str, inconsistent: bool, detail: &str) {
        if self.inconsistent.swap(inconsistent, Ordering::Relaxed) != inconsistent {
            if inconsistent {
                tracing::warn!(
                    backend = who,
                    detail,
                    "backend content differs from the pool's majority: excluded"
                );
            } else {
                tracing::info!(backend = who, "backend content matches the pool again");
            }
            metrics::gauge!(crate::metrics::BACKEND_INCONSISTENT, "backend" => who.to_string())
                .set(f64::from(u8::from(inconsistent)));
            self.events.send_modify(|e| *e += 1);
        }
    }

    /// Applies the configuration file's admin state, only when the file changed it.
    pub fn set_admin_from_file(&self, who: &str, admin: AdminState) {
        if self.file_admin.swap(admin as u8, Ordering::Relaxed) != admin as u8 {
            self.set_admin(who, admin);
        }
    }

    /// Sets the admin state (config or admin API); logs on change.
    pub fn set_admin(&self, who: &str, admin: AdminState) {
        let old = AdminState::from_u8(self.admin.swap(admin as u8, Ordering::Relaxed));
        if old != admin {
            tracing::info!(
                backend = who,
                from = old.as_str(),
                to = admin.as_str(),
                "backend admin state changed"
            );
            self.events.send_modify(|e| *e += 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(ok: bool) -> ProbeRecord {
        ProbeRecord {
            ok,
            detail: if ok { "ok".into() } else { "timeout".into() },
            at: SystemTime::now(),
            duration: Duration::from_millis(3),
            sha256: None,
        }
    }

    #[test]
    fn unknown_until_the_first_pass_then_hysteresis() {
        let events = health_events();
        let s = BackendState::new(true, AdminState::Enabled, events.clone());
        assert_eq!(s.health(), Health::Unknown);
        assert!(!s.eligible());
        s.record_probe("b", probe(true), 2, 3);
        assert_eq!(s.health(), Health::Up);
        // One lost probe does not flap.
        s.record_probe("b", probe(false), 2, 3);
        s.record_probe("b", probe(true), 2, 3);
        s.record_probe("b", probe(false), 2, 3);
        s.record_probe("b", probe(false), 2, 3);
        assert_eq!(s.health(), Health::Up);
        s.record_probe("b", probe(false), 2, 3);
        assert_eq!(s.health(), Health::Down);
        s.record_probe("b", probe(true), 2, 3);
        assert_eq!(s.health(), Health::Down, "rise = 2");
        s.record_probe("b", probe(true), 2, 3);
        assert_eq!(s.health(), Health::Up);
        assert_eq!(*events.borrow(), 3, "one event per flip");
    }

    #[test]
    fn passive_failures_count_like_failed_probes() {
        let s = BackendState::new(true, AdminState::Enabled, health_events());
        s.record_probe("b", probe(true), 2, 3);
        for _ in 0..3 {
            s.record_passive_failure("b", 3);
        }
        assert_eq!(s.health(), Health::Down);
    }

    #[test]
    fn admin_state_and_drift_exclude_a_healthy_backend() {
        let s = BackendState::new(false, AdminState::Enabled, health_events());
        assert!(s.eligible());
        s.set_admin("b", AdminState::Draining);
        assert!(!s.eligible());
        s.set_admin("b", AdminState::Enabled);
        s.set_inconsistent("b", true, "sha differs");
        assert!(!s.eligible());
    }
}
