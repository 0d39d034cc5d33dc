//! The front end: what port 69 does with each datagram. It admits or refuses requests, asks
//! the session table (`table`) whether a request is a retransmission or replaces a session,
//! and starts a [`Relay`] task for each new one; it reads the runtime (`runtime::Current`) and
//! the sockets (`reader`) it is given.
//!
//! It parses only enough to decide. Anything but a request gets a clear TFTP ERROR or is
//! counted and dropped, and nothing here can disturb a running transfer.
//!
//! Each port-69 socket is read by its own OS thread (a one-thread runtime), not by a task among
//! the sessions' tasks: in a boot storm thousands of relay tasks are ready at once, and a
//! listener task waiting its turn behind them admitted ~500 requests a second while 10,000
//! clients waited (their requests queued for seconds, then overflowed the socket). A thread of
//! its own gets its share of the CPU from the kernel whatever the number of sessions. Sessions
//! still run on the main runtime.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use tokio_util::sync::CancellationToken;

use super::admission::{Asked, Refusal, admit, policy, relayed_request};
use super::cache::Cache;
use super::reader::{Listener, Receiving};
use super::relay::{FromMemory, Relay};
use super::runtime::{Current, Runtime};
use super::sync::{Resume, SyncSender};
use super::table::{Key, Repeat, SessionTable};
use crate::limits::budget::may_log_packet_error;
use crate::limits::{ClientCounts, ClientSlot};
use crate::metrics::{self as m, SessionEnd};
use crate::pool::Pool;
use crate::protocol::packet;

/// Counters of what port 69 saw, readable by tests and (later) the status page.
#[derive(Debug, Default)]
pub struct FrontendStats {
    pub sessions_started: AtomicU64,
    pub retransmitted_requests: AtomicU64,
    pub superseded: AtomicU64,
    /// Requests repeated while their transfer runs and its client talks to it: dropped.
    pub duplicates: AtomicU64,
    pub malformed: AtomicU64,
    pub refused: AtomicU64,
    pub over_limit: AtomicU64,
}

impl FrontendStats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// An admitted request: what it asks, its pool and the options policy of its route, its
/// client's slot, and whether it replaces the live session of its address.
type Admitted = (
    Asked,
    (Arc<Pool>, Option<crate::route::OptionsPolicy>),
    ClientSlot,
    bool,
);

/// What all listeners share: the running configuration, the live sessions, the counters.
#[derive(Debug)]
pub struct Frontend {
    pub stats: FrontendStats,
    current: Arc<Current>,
    sessions: SessionTable,
    clients: Arc<ClientCounts>,
    macs: crate::route::MacMemory,
    /// Where sessions tell the cluster how they stand (set once, when `[cluster]` is on).
    sync: OnceLock<SyncSender>,
    /// Boot files served from memory (`[cache]`, for pools with `[pool.cache]`).
    pub cache: Arc<Cache>,
}

impl Frontend {
    pub fn new(current: Arc<Current>) -> Frontend {
        let cache = Arc::new(Cache::new(&current.load().config.cache));
        Frontend {
            cache,
            current,
            stats: FrontendStats::default(),
            sessions: SessionTable::default(),
            clients: Arc::new(ClientCounts::default()),
            macs: Default::default(),
            sync: OnceLock::new(),
        }
    }

    /// The configuration new sessions start with.
    pub fn runtime(&self) -> Arc<Runtime> {
        self.current.load()
    }

    /// The holder of the running configuration (to install a new one, or to follow swaps).
    pub fn current(&self) -> &Arc<Current> {
        &self.current
    }

    /// Client IPs with live sessions (bounded by the live sessions).
    pub fn tracked_clients(&self) -> usize {
        self.clients.clients()
    }

    /// Sessions now in the table.
    pub fn live_sessions(&self) -> usize {
        self.sessions.len()
    }

    /// Receives on `listener` until `stop` is cancelled (or this future is dropped), on a
    /// thread of its own; sessions are spawned on the runtime that runs this future.
    pub async fn serve(self: Arc<Self>, listener: Listener, stop: CancellationToken) {
        let stop = stop.child_token();
        let _stop_when_dropped = stop.clone().drop_guard();
        let sessions = tokio::runtime::Handle::current();
        let address = listener.local_addr();
        let (done, finished) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("tftp-listener".into())
            .spawn(move || {
                let _done = done;
                let served = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async {
                            let receiving = Receiving::new(listener, sessions)?;
                            self.receive(receiving, stop).await;
                            Ok(())
                        })
                    });
                if let Err(e) = served {
                    tracing::error!(%address, error = %e, "tftp listener stopped");
                }
            });
        match thread {
            Ok(_) => {
                let _ = finished.await;
            }
            Err(e) => tracing::error!(%address, error = %e, "cannot start the tftp listener"),
        }
    }

    /// The receiving thread's loop.
    async fn receive(self: Arc<Self>, listener: Receiving, stop: CancellationToken) {
        let mut buf = vec![0u8; packet::MAX_DATAGRAM];
        loop {
            let got = tokio::select! {
                _ = stop.cancelled() => return,
                got = listener.recv(&mut buf) => got,
            };
            match got {
                Ok((n, from, local_ip)) => self.handle(&listener, &buf[..n], from, local_ip).await,
                Err(e) if may_log_packet_error() => {
                    tracing::warn!(listener = %listener.local, error = %e, "receive failed")
                }
                Err(_) => {}
            }
        }
    }

    async fn handle(
        self: &Arc<Self>,
        listener: &Receiving,
        datagram: &[u8],
        from: SocketAddr,
        local_ip: IpAddr,
    ) {
        let key = (from, SocketAddr::new(local_ip, listener.local.port()));
        let runtime = self.current.load();
        let admitted = admit(datagram).and_then(|asked| {
            let replaces = match self.repeat(&key, datagram) {
                Some(Repeat::Retransmission | Repeat::Duplicate) => return Ok(None),
                Some(Repeat::Replaces) => true,
                None => false,
            };
            // Who may ask, and how fast, before any state is kept for the client.
            runtime
                .limiter
                .check_address(from.ip())
                .map_err(Refusal::Limited)?;
            runtime
                .limiter
                .check_rate(from.ip())
                .map_err(Refusal::Limited)?;
            let mac = self.client_mac(&runtime, from.ip(), &asked.name);
            let pool = policy(&runtime, &asked, from.ip(), mac)?;
            self.remember_mac(&runtime, from.ip(), &asked.name);
            let slot = runtime
                .limiter
                .claim_client(&self.clients, from.ip())
                .map_err(Refusal::Limited)?;
            Ok(Some((asked, pool, slot, replaces)))
        });
        match admitted {
            Ok(Some(admitted)) => self.start(listener, &runtime, admitted, datagram, key),
            Ok(None) => {}
            Err(refusal) => {
                self.refuse(listener, &runtime, refusal, from, local_ip)
                    .await
            }
        }
    }

    /// The client's MAC as far as its requests told it (only kept when a route asks for MACs).
    fn client_mac(
        &self,
        runtime: &Runtime,
        ip: IpAddr,
        name: &[u8],
    ) -> Option<crate::route::config::Mac> {
        if !runtime.router.has_mac_rules() {
            return None;
        }
        self.macs.recall(ip, name)
    }

    /// Once a request is admitted, the MAC its name reveals is remembered for the client.
    fn remember_mac(&self, runtime: &Runtime, ip: IpAddr, name: &[u8]) {
        if runtime.router.has_mac_rules() {
            let tftp = &runtime.config.tftp;
            self.macs
                .remember(ip, name, tftp.mac_memory, tftp.mac_memory_max);
        }
    }

    /// Client IPs whose MAC is remembered now.
    pub fn remembered_macs(&self) -> usize {
        self.macs.len()
    }

    /// Forgets expired client state (housekeeping).
    pub fn expire(&self, now: std::time::Instant) {
        self.macs.expire(now);
    }

    /// What a request from the address of a live session is (counting the ones absorbed).
    fn repeat(&self, key: &Key, datagram: &[u8]) -> Option<Repeat> {
        let repeat = self
            .sessions
            .judge(key, datagram, std::time::Instant::now());
        match repeat {
            Some(Repeat::Retransmission) => {
                self.stats
                    .retransmitted_requests
                    .fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_RETRANSMITTED).increment(1);
            }
            Some(Repeat::Duplicate) => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(m::REQUESTS_REFUSED, "reason" => "duplicate-of-live-session")
                    .increment(1);
                tracing::debug!(client = %key.0, "request repeated while its transfer runs: dropped");
            }
            _ => {}
        }
        repeat
    }

    /// Counts, logs (rate-limited) and answers a refusal, unless it is silent by nature or config.
    async fn refuse(
        &self,
        listener: &Receiving,
        runtime: &Runtime,
        refusal: Refusal,
        from: SocketAddr,
        local_ip: IpAddr,
    ) {
        let counter = match refusal {
            Refusal::Malformed => &self.stats.malformed,
            _ => &self.stats.refused,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::REQUESTS_REFUSED, "reason" => refusal.as_str()).increment(1);
        let limited = matches!(refusal, Refusal::Limited(_));
        if limited && runtime.limiter.may_log() {
            tracing::info!(client = %from, reason = refusal.as_str(), "request refused");
        } else {
            tracing::debug!(client = %from, reason = refusal.as_str(), "request refused");
        }
        if limited && runtime.limiter.silent() {
            return;
        }
        if let Some((code, msg)) = refusal.answer() {
            // An ERROR goes to whatever source the request names: a bounded number per source.
            if !runtime.limiter.may_answer(from.ip()) {
                m::error_withheld();
                return;
            }
            let _ = listener
                .reply(&packet::error_datagram(code, msg), from, local_ip)
                .await;
        }
    }

    /// Starts a session; one it replaces (port reuse) is ended only once this one is admitted.
    /// A full table makes room by ending its oldest session whose client has not answered.
    fn start(
        self: &Arc<Self>,
        listener: &Receiving,
        runtime: &Arc<Runtime>,
        (mut asked, (pool, options), slot, replaces): Admitted,
        datagram: &[u8],
        key: Key,
    ) {
        let client = key.0;
        // A session this one replaces leaves the table: it does not count against the cap.
        if !self
            .sessions
            .has_room(runtime.max_sessions() + usize::from(replaces))
        {
            self.stats.over_limit.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(m::REQUESTS_REFUSED, "reason" => "max-sessions").increment(1);
            tracing::debug!(%client, "session limit reached: request left unanswered");
            return;
        }
        if replaces && self.sessions.supersede(&key) {
            self.stats.superseded.fetch_add(1, Ordering::Relaxed);
        }
        let handle = self.sessions.open(key, datagram);
        let rewritten = relayed_request(
            &mut asked,
            runtime.config.tftp.max_blksize,
            options.as_ref(),
        );
        self.stats.sessions_started.fetch_add(1, Ordering::Relaxed);
        let relay = Relay {
            client,
            local_ip: key.1.ip(),
            pool: pool.clone(),
            settings: runtime.settings,
            handle: handle.clone(),
            requested: asked.request.options.clone(),
            rewritten,
            write: asked.write,
            slot,
            contacted: key.1,
            sync: self.sync.get().cloned(),
            resume: None,
            memory: memory(&asked, &pool, runtime.config.tftp.max_blksize),
            cache: Some(self.cache.clone()),
            fill: None,
        };
        let filename = crate::protocol::names::display(&asked.request.filename);
        self.spawn(relay, key, handle.id, filename, &listener.sessions);
    }

    /// Runs a session's relay to its end on `on`, holding its place in the table and gauges.
    fn spawn(
        self: &Arc<Self>,
        relay: Relay,
        key: Key,
        id: u64,
        filename: String,
        on: &tokio::runtime::Handle,
    ) -> tokio::task::JoinHandle<SessionEnd> {
        let pool = relay.pool.clone();
        let client = key.0;
        let live = Live::enter(self.clone(), key, id, &pool.name);
        let run = async move {
            let _live = live;
            let report = relay.run().await;
            // Bytes sent from memory are not the backend's.
            if let Some(b) = report.backend.and_then(|a| pool.index_of(a))
                && !report.from_memory
            {
                pool.backends[b].add_bytes(report.file_bytes);
            }
            m::record_session(&pool.name, &filename, client, &report);
            report
        };
        self.sessions.spawn_on(run, on)
    }

    /// Sessions tell `sender` how they stand from now on (the cluster sync); once only.
    pub fn sync_to(&self, sender: SyncSender) {
        let _ = self.sync.set(sender);
    }

    /// Carries on a transfer another front end started: it enters the table like a session
    /// of this node and runs from the client's next ACK (see `relay::resumed`). Refused, with
    /// the reason and the socket given back, when its pool is gone, its address already has
    /// a session here, or there is no room; the task's report tells how it ended.
    pub fn resume(
        self: &Arc<Self>,
        resume: Resume,
    ) -> Result<tokio::task::JoinHandle<SessionEnd>, Box<(Resume, &'static str)>> {
        let runtime = self.runtime();
        let (pool, key, asked, slot) = match self.admit_resumed(&runtime, &resume.synced) {
            Ok(admitted) => admitted,
            Err(why) => return Err(Box::new((resume, why))),
        };
        let handle = self.sessions.open(key, &resume.synced.request);
        let filename = crate::protocol::names::display(&asked.request.filename);
        let relay = Relay {
            client: key.0,
            local_ip: resume.synced.key.session.ip(),
            pool,
            settings: runtime.settings,
            handle: handle.clone(),
            requested: asked.request.options.clone(),
            rewritten: None,
            write: false,
            slot,
            contacted: key.1,
            sync: self.sync.get().cloned(),
            resume: Some(resume),
            cache: None,
            memory: None,
            fill: None,
        };
        let on = tokio::runtime::Handle::current();
        Ok(self.spawn(relay, key, handle.id, filename, &on))
    }

    /// Whether a synced transfer may run here: its pool, its key free in the table, room, its
    /// request, its client's place.
    fn admit_resumed(
        &self,
        runtime: &Runtime,
        synced: &crate::tftp::sync::Synced,
    ) -> Result<(Arc<Pool>, Key, Asked, ClientSlot), &'static str> {
        let pool = runtime
            .pool(&synced.pool)
            .ok_or("the transfer's pool is not configured on this front end")?;
        let key = (synced.key.client, synced.contacted);
        if self.sessions.contains(&key) {
            return Err("the client has another transfer on this front end");
        }
        if !self.sessions.has_room(runtime.max_sessions()) {
            return Err("this front end is at its session limit");
        }
        let asked = admit(&synced.request).map_err(|_| "the synced request is not valid")?;
        let slot = runtime
            .limiter
            .claim_client(&self.clients, key.0.ip())
            .map_err(|limited| limited.message())?;
        Ok((pool.clone(), key, asked, slot))
    }

    /// Whether the table holds a session of `client` on the port-69 address `contacted`.
    pub fn has_session(&self, client: SocketAddr, contacted: SocketAddr) -> bool {
        self.sessions.contains(&(client, contacted))
    }

    /// Stops admitting (the caller has stopped the listeners), lets running transfers finish
    /// for up to `grace`, then ends the rest.
    pub async fn drain(&self, grace: std::time::Duration) {
        self.sessions.drain(grace).await;
    }
}

/// What a read of a file its pool keeps in memory needs for it: octet reads only (netascii is
/// relayed: the backend converts it).
fn memory(asked: &Asked, pool: &Pool, fill_blksize: u16) -> Option<FromMemory> {
    if asked.write || asked.request.mode != packet::Mode::Octet {
        return None;
    }
    // Fetched as it is kept: one spelling per copy (the folded one where the pool's backends
    // ignore case), so a request in another spelling can neither fill nor drop it.
    let name = pool.cached_name(&asked.name)?;
    Some(FromMemory {
        fetch: String::from_utf8(name.clone()).ok()?,
        name,
        fill_blksize,
    })
}

/// A running session's place in the table and in the active gauge, given back when its task
/// ends however it ends: a panic in a relay must not leak them (the relay's own fields, its
/// place in its client's count among them, are dropped with it).
struct Live {
    frontend: Arc<Frontend>,
    key: Key,
    id: u64,
    active: metrics::Gauge,
}

impl Live {
    fn enter(frontend: Arc<Frontend>, key: Key, id: u64, pool: &str) -> Live {
        let active = metrics::gauge!(m::SESSIONS_ACTIVE, "pool" => pool.to_string());
        active.increment(1.0);
        Live {
            frontend,
            key,
            id,
            active,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.active.decrement(1.0);
        self.frontend.sessions.close(&self.key, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::health_events;

    fn frontend() -> Arc<Frontend> {
        let text = "[[pool]]\nname = \"p\"\n[[pool.backend]]\naddress = \"127.0.0.1:9\"\n";
        let events = health_events();
        let runtime = Runtime::new(Config::parse(text).unwrap(), None, &events);
        Arc::new(Frontend::new(Arc::new(Current::new(runtime, events))))
    }

    #[tokio::test]
    async fn a_session_task_that_panics_gives_its_place_back() {
        let frontend = frontend();
        let client: SocketAddr = "127.0.0.1:2072".parse().unwrap();
        let key = (client, "127.0.0.1:69".parse().unwrap());
        let handle = frontend.sessions.open(key, b"request");
        let runtime = frontend.runtime();
        let slot = runtime
            .limiter
            .claim_client(&frontend.clients, client.ip())
            .unwrap();
        slot.answered().unwrap();
        let live = Live::enter(frontend.clone(), key, handle.id, "p");
        assert_eq!(
            (frontend.live_sessions(), frontend.tracked_clients()),
            (1, 1)
        );
        let task = tokio::spawn(async move {
            let (_live, _slot) = (live, slot);
            panic!("a bug in a relay");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(
            (frontend.live_sessions(), frontend.tracked_clients()),
            (0, 0)
        );
    }
}
