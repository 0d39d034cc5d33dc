//! The running program's control surface: hot reload, backend admin state, and the status
//! snapshot. SIGHUP, the admin API and the status page all go through here.
//!
//! A reload reads and validates the file first; an invalid file changes nothing and every
//! problem is logged. A valid one binds any new listen address before anything else changes
//! (so a bind failure also changes nothing), then swaps the runtime in atomically, restarts the
//! probers, and stops listeners the file no longer names. Running transfers finish on the
//! configuration they started with; a backend gone from the file gets no new sessions.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::UNIX_EPOCH;

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::cluster::{ClusterStats, ClusterStatus};
use crate::config::{Config, ConfigError};
use crate::health::AdminState;
use crate::health::probe::Monitor;
use crate::proxy_dhcp::clients::{PxeClient, PxeClients};
use crate::proxy_dhcp::{ProxyDhcpStatus, ProxyStats};
use crate::resolve::{NameWatch, Resolved, expand};
use crate::tftp::frontend::Frontend;
use crate::tftp::reader::Listener;

/// A listener that is being served.
#[derive(Debug)]
struct Running {
    bound: SocketAddr,
    stop: CancellationToken,
}

#[derive(Debug)]
pub struct Control {
    frontend: Arc<Frontend>,
    config_path: Option<PathBuf>,
    monitor: Mutex<Option<Monitor>>,
    /// Served listeners by their configured address (which may have port 0).
    listeners: Mutex<HashMap<SocketAddr, Running>>,
    /// Parent of every listener's token: cancelled at shutdown.
    stop_all: CancellationToken,
    reloads: AtomicU64,
    /// The configuration as written: named backends are expanded from it on every change.
    written: Mutex<Config>,
    resolved: Mutex<Resolved>,
    /// The written configuration, for the name watcher (it restarts on each one sent).
    configs: watch::Sender<Arc<Config>>,
    names: Mutex<Option<NameWatch>>,
    me: Weak<Control>,
    installing: Mutex<()>,
    /// The cluster sync's address and counters, when `[cluster]` is configured.
    cluster: OnceLock<(SocketAddr, Arc<ClusterStats>)>,
    /// ProxyDHCP's addresses, counters and machines seen, when `[proxy_dhcp]` serves.
    proxy_dhcp: OnceLock<(Vec<SocketAddr>, Arc<ProxyStats>, Arc<PxeClients>)>,
}

impl Control {
    /// `config` is the configuration as written (host names unresolved).
    pub fn new(
        frontend: Arc<Frontend>,
        config_path: Option<PathBuf>,
        config: Config,
    ) -> Arc<Control> {
        Arc::new_cyclic(|me| Control {
            frontend,
            config_path,
            monitor: Mutex::new(None),
            listeners: Mutex::new(HashMap::new()),
            stop_all: CancellationToken::new(),
            reloads: AtomicU64::new(0),
            configs: watch::channel(Arc::new(config.clone())).0,
            written: Mutex::new(config),
            resolved: Mutex::new(Resolved::new()),
            names: Mutex::new(None),
            me: me.clone(),
            installing: Mutex::new(()),
            cluster: OnceLock::new(),
            proxy_dhcp: OnceLock::new(),
        })
    }

    pub fn frontend(&self) -> &Arc<Frontend> {
        &self.frontend
    }

    /// The TFTP addresses being served (port 0 resolved).
    pub fn tftp_addrs(&self) -> Vec<SocketAddr> {
        let mut v: Vec<_> = lock(&self.listeners).values().map(|r| r.bound).collect();
        v.sort();
        v
    }

    /// Starts serving bound listeners and the probers (at startup).
    pub fn start(&self, listeners: Vec<(SocketAddr, Listener)>) {
        for (configured, l) in listeners {
            self.serve_listener(configured, l);
        }
        *lock(&self.monitor) = Some(Monitor::start(
            &self.frontend.runtime().probed_pools(),
            &self.frontend.cache,
        ));
        let (names, resolved) = NameWatch::start(self.configs.subscribe());
        *lock(&self.names) = Some(names);
        tokio::spawn(install_resolved(resolved, self.me.clone()));
    }

    fn serve_listener(&self, configured: SocketAddr, listener: Listener) {
        let bound = listener.local_addr();
        let stop = self.stop_all.child_token();
        tokio::spawn(self.frontend.clone().serve(listener, stop.clone()));
        lock(&self.listeners).insert(configured, Running { bound, stop });
    }

    /// Stops every listener and prober (shutdown); running transfers are drained elsewhere.
    pub fn stop(&self) {
        self.stop_all.cancel();
        lock(&self.monitor).take();
        lock(&self.names).take();
    }

    /// Re-reads the configuration file and applies it.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Err(ConfigError {
                problems: vec!["no configuration file to reload (started without --config)".into()],
            });
        };
        let result = Config::load(path).and_then(|c| self.apply(c));
        match &result {
            Ok(()) => tracing::info!(file = %path.display(), "configuration reloaded"),
            Err(e) => {
                for p in &e.problems {
                    tracing::error!(problem = %p, "reload refused, still running the previous configuration");
                }
            }
        }
        result
    }

    /// Applies a validated configuration (see the module docs for the order of things).
    pub fn apply(&self, config: Config) -> Result<(), ConfigError> {
        let added = self.bind_new_listeners(&config)?;
        let wanted: Vec<SocketAddr> = config.tftp.listen.clone();
        if lock(&self.written).proxy_dhcp != config.proxy_dhcp {
            // Its routes follow the reload; its sockets and next-server are bound at start.
            tracing::warn!("[proxy_dhcp] changed: its listen and advertise take effect at restart");
        }
        self.configs.send_replace(Arc::new(config.clone()));
        *lock(&self.written) = config;
        self.install();
        self.stop_removed_listeners(&wanted);
        for (configured, l) in added {
            tracing::info!(address = %l.local_addr(), "tftp listening");
            self.serve_listener(configured, l);
        }
        self.reloads.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// New addresses for the configuration's host names (from the name watcher).
    pub fn names_resolved(&self, resolved: Resolved) {
        *lock(&self.resolved) = resolved;
        self.install();
    }

    /// Installs the written configuration with its names expanded, and restarts the probers.
    fn install(&self) {
        // A reload and a name change may race: the runtime stored last must be the newest.
        let _one_at_a_time = lock(&self.installing);
        let expanded = expand(&lock(&self.written), &lock(&self.resolved));
        let runtime = self.frontend.current().install(expanded);
        self.frontend.cache.configure(&runtime.config.cache);
        *lock(&self.monitor) = Some(Monitor::start(
            &runtime.probed_pools(),
            &self.frontend.cache,
        ));
    }

    fn bind_new_listeners(
        &self,
        config: &Config,
    ) -> Result<Vec<(SocketAddr, Listener)>, ConfigError> {
        let current = lock(&self.listeners);
        let mut problems = Vec::new();
        let mut added = Vec::new();
        for (i, &a) in config.tftp.listen.iter().enumerate() {
            if current.contains_key(&a) {
                continue;
            }
            match Listener::bind(a, config.tftp.freebind) {
                Ok(l) => added.push((a, l)),
                Err(e) => problems.push(format!("tftp.listen[{i}]: cannot bind {a}: {e}")),
            }
        }
        if problems.is_empty() {
            Ok(added)
        } else {
            Err(ConfigError { problems })
        }
    }

    fn stop_removed_listeners(&self, wanted: &[SocketAddr]) {
        lock(&self.listeners).retain(|configured, r| {
            let keep = wanted.contains(configured);
            if !keep {
                tracing::info!(address = %r.bound, "tftp listener removed");
                r.stop.cancel();
            }
            keep
        });
    }

    /// Sets a backend's admin state at run time (drain / enable / disable).
    pub fn set_admin(
        &self,
        pool: &str,
        backend: SocketAddr,
        state: AdminState,
    ) -> Result<(), String> {
        let runtime = self.frontend.runtime();
        let pool = runtime
            .pool(pool)
            .ok_or_else(|| format!("no pool named {pool:?}"))?;
        let index = pool
            .index_of(backend)
            .ok_or_else(|| format!("pool {:?} has no backend {backend}", pool.name))?;
        pool.backends[index]
            .state
            .set_admin(&backend.to_string(), state);
        Ok(())
    }

    /// Whether this node can serve, for a VRRP health check (`GET /api/health`,
    /// `tftplb health`): listening, not shutting down, and a backend of the default pool
    /// eligible for new transfers.
    pub fn health(&self) -> NodeHealth {
        let mut problems = Vec::new();
        if self.stop_all.is_cancelled() {
            problems.push("shutting down".to_string());
        } else if lock(&self.listeners).is_empty() {
            problems.push("no TFTP listener".to_string());
        }
        let runtime = self.frontend.runtime();
        let pool = runtime.default_pool();
        if !pool.backends.iter().any(|b| b.state.eligible()) {
            problems.push(format!(
                "no backend of the default pool {:?} is up and enabled",
                pool.name
            ));
        }
        NodeHealth {
            ok: problems.is_empty(),
            problems,
        }
    }

    /// Everything the status page and `GET /api/status` show.
    pub fn status(&self) -> Status {
        let runtime = self.frontend.runtime();
        let stats = &self.frontend.stats;
        Status {
            tftp_listen: self.tftp_addrs(),
            live_sessions: self.frontend.live_sessions(),
            sessions_started: stats.sessions_started.load(Ordering::Relaxed),
            retransmitted_requests: stats.retransmitted_requests.load(Ordering::Relaxed),
            malformed: stats.malformed.load(Ordering::Relaxed),
            refused: stats.refused.load(Ordering::Relaxed),
            over_limit: stats.over_limit.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            pools: runtime.pools.iter().map(|p| pool_status(p)).collect(),
            routes: runtime
                .router
                .hits()
                .into_iter()
                .map(|(name, hits)| RouteStatus { name, hits })
                .collect(),
            cluster: self
                .cluster
                .get()
                .map(|(listen, stats)| stats.status(*listen)),
            cache: runtime
                .pools
                .iter()
                .any(|p| p.cache.is_some())
                .then(|| self.frontend.cache.status()),
            proxy_dhcp: self
                .proxy_dhcp
                .get()
                .map(|(listen, stats, clients)| stats.status(listen.clone(), clients)),
        }
    }

    /// The status shows ProxyDHCP bound at `listen` from now on.
    pub fn show_proxy_dhcp(
        &self,
        listen: Vec<SocketAddr>,
        stats: Arc<ProxyStats>,
        clients: Arc<PxeClients>,
    ) {
        let _ = self.proxy_dhcp.set((listen, stats, clients));
    }

    /// The PXE machines ProxyDHCP has heard, the most recent first; `None` without it.
    pub fn pxe_clients(&self) -> Option<Vec<PxeClient>> {
        self.proxy_dhcp.get().map(|(_, _, clients)| clients.list())
    }

    /// The status shows the cluster sync bound at `listen` from now on.
    pub fn show_cluster(&self, listen: SocketAddr, stats: Arc<ClusterStats>) {
        let _ = self.cluster.set((listen, stats));
    }
}

/// Installs each answer of the name watcher, until it stops or the control surface is gone.
async fn install_resolved(mut resolved: watch::Receiver<Resolved>, control: Weak<Control>) {
    while resolved.changed().await.is_ok() {
        let found = resolved.borrow_and_update().clone();
        let Some(control) = control.upgrade() else {
            return;
        };
        control.names_resolved(found);
    }
}

fn pool_status(p: &crate::pool::Pool) -> PoolStatus {
    PoolStatus {
        name: p.name.clone(),
        probed: p.health.is_some(),
        backends: p.backends.iter().map(|b| backend_status(b)).collect(),
    }
}

fn backend_status(b: &crate::balance::Backend) -> BackendStatus {
    let probe = b.state.last_probe();
    BackendStatus {
        address: b.address,
        weight: b.weight,
        health: b.state.health().as_str(),
        admin: b.state.admin().as_str(),
        inconsistent: b.state.inconsistent(),
        eligible: b.state.eligible(),
        in_state_seconds: b.state.in_state_for().as_secs(),
        active_sessions: b.active_sessions(),
        total_sessions: b.total_sessions(),
        bytes: b.bytes_served(),
        last_probe_ok: probe.as_ref().map(|p| p.ok),
        last_probe_detail: probe.as_ref().map(|p| p.detail.clone()),
        last_probe_unix: probe
            .as_ref()
            .and_then(|p| p.at.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs()),
        last_probe_ms: probe.as_ref().map(|p| p.duration.as_millis() as u64),
        content_sha256: probe.and_then(|p| p.sha256),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What `GET /api/health` answers: `ok`, or the reasons this node should not be active.
#[derive(Debug, Clone, Serialize)]
pub struct NodeHealth {
    pub ok: bool,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub tftp_listen: Vec<SocketAddr>,
    pub live_sessions: usize,
    pub sessions_started: u64,
    pub retransmitted_requests: u64,
    pub malformed: u64,
    pub refused: u64,
    pub over_limit: u64,
    pub reloads: u64,
    pub pools: Vec<PoolStatus>,
    /// Each `[[route]]` by name, with its hits since the last reload.
    pub routes: Vec<RouteStatus>,
    /// The session sync, when `[cluster]` is configured.
    pub cluster: Option<ClusterStatus>,
    /// The PXE service, when `[proxy_dhcp]` serves.
    pub proxy_dhcp: Option<ProxyDhcpStatus>,
    /// Boot files from memory, when a pool keeps some (`[pool.cache]`).
    pub cache: Option<crate::tftp::cache::CacheStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RouteStatus {
    pub name: String,
    pub hits: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub probed: bool,
    pub backends: Vec<BackendStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BackendStatus {
    pub address: SocketAddr,
    pub weight: u32,
    pub health: &'static str,
    pub admin: &'static str,
    pub inconsistent: bool,
    pub eligible: bool,
    pub in_state_seconds: u64,
    pub active_sessions: usize,
    pub total_sessions: u64,
    pub bytes: u64,
    pub last_probe_ok: Option<bool>,
    pub last_probe_detail: Option<String>,
    pub last_probe_unix: Option<u64>,
    pub last_probe_ms: Option<u64>,
    pub content_sha256: Option<String>,
}
