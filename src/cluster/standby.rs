//! The sessions the peers have synced, each ready to be carried on here.
//!
//! A synced session's address (the floating address and the session's port) is bound at
//! once, with `IP_FREEBIND`: on a standby node the
//! address is not here yet, so nothing arrives; when the floating address moves here (VRRP),
//! the client's next ACK arrives on that socket and the session is handed to the front end
//! (`Frontend::resume`), with nothing to notice or call. Where the address is taken on this
//! very machine (the active front end runs here too, as in tests on loopback), binding fails
//! and is tried again when the peer is taken for dead.
//!
//! Bounded: `max_sessions` entries of all peers together (more are refused and counted),
//! each forgotten after `max_age` without news, and its socket closed when its end arrives.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::ClusterStats;
use crate::metrics as m;
use crate::protocol::packet::{self, error_code};
use crate::tftp::frontend::Frontend;
use crate::tftp::sync::{Resume, SyncEvent, SyncKey, Synced};

/// A synced session waiting here.
struct Entry {
    synced: Synced,
    peer: SocketAddr,
    updated: Instant,
    /// Its address is bound and watched (cancel to let go), or binding it failed so far.
    bound: Option<CancellationToken>,
}

/// The synced sessions of every peer.
pub struct Standby {
    entries: Mutex<HashMap<SyncKey, Entry>>,
    frontend: Arc<Frontend>,
    stats: Arc<ClusterStats>,
}

impl Standby {
    pub fn new(frontend: Arc<Frontend>, stats: Arc<ClusterStats>) -> Arc<Standby> {
        Arc::new(Standby {
            entries: Mutex::new(HashMap::new()),
            frontend,
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SyncKey, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What `peer` said of one of its sessions.
    pub fn on_event(self: &Arc<Self>, peer: SocketAddr, event: SyncEvent, max: usize) {
        let now = Instant::now();
        match event {
            SyncEvent::Started(synced) => self.started(peer, *synced, now, max),
            SyncEvent::Progress { key, state } => {
                if let Some(e) = self.lock().get_mut(&key) {
                    e.synced.state = state;
                    e.updated = now;
                }
            }
            SyncEvent::Ended(key) => {
                self.forget(&key);
            }
        }
        self.publish();
    }

    /// A session started on `peer`, or told again (a resync): held, and its address bound.
    /// One held already keeps its socket; only what is known of it is brought up to date.
    fn started(self: &Arc<Self>, peer: SocketAddr, synced: Synced, now: Instant, max: usize) {
        let key = synced.key;
        {
            let mut entries = self.lock();
            if let Some(e) = entries.get_mut(&key) {
                (e.synced, e.peer, e.updated) = (synced, peer, now);
                if e.bound.is_some() {
                    return;
                }
            } else if entries.len() >= max {
                drop(entries);
                self.stats.reject("full");
                return;
            } else {
                let bound = None;
                let entry = Entry {
                    synced: synced.clone(),
                    peer,
                    updated: now,
                    bound,
                };
                entries.insert(key, entry);
            }
        }
        self.bind_held(&key);
    }

    /// Binds a held session's address, unless it is bound already or gone. The entry is in
    /// the map before its watcher starts: a client packet already waiting finds it.
    fn bind_held(self: &Arc<Self>, key: &SyncKey) -> bool {
        let Some(synced) = self.lock().get(key).map(|e| e.synced.clone()) else {
            return false;
        };
        let Some(cancel) = self.bind(&synced) else {
            return false;
        };
        match self.lock().get_mut(key) {
            Some(e) if e.bound.is_none() => {
                e.bound = Some(cancel);
                true
            }
            // Taken over at once, or bound meanwhile: this watcher is not needed.
            _ => {
                cancel.cancel();
                false
            }
        }
    }

    /// Forgets a session; its socket, if bound, is let go.
    fn forget(&self, key: &SyncKey) {
        if let Some(e) = self.lock().remove(key)
            && let Some(cancel) = e.bound
        {
            cancel.cancel();
        }
    }

    /// `peer` is taken for dead: its sessions whose address could not be bound so far are
    /// bound now (its sockets are gone if it ran on this machine).
    pub fn peer_died(self: &Arc<Self>, peer: SocketAddr) {
        let pending: Vec<SyncKey> = self
            .lock()
            .iter()
            .filter(|(_, e)| e.peer == peer && e.bound.is_none())
            .map(|(k, _)| *k)
            .collect();
        let bound = pending.iter().filter(|k| self.bind_held(k)).count();
        tracing::warn!(%peer, sessions_bound = bound, "cluster peer silent: taken for dead");
    }

    /// Forgets sessions not heard of for `max_age` (their end was lost).
    pub fn expire(&self, max_age: Duration) {
        let now = Instant::now();
        let old: Vec<SyncKey> = self
            .lock()
            .iter()
            .filter(|(_, e)| now.saturating_duration_since(e.updated) >= max_age)
            .map(|(k, _)| *k)
            .collect();
        for key in old {
            self.forget(&key);
        }
        self.publish();
    }

    /// Lets go of every session held (shutdown): their watchers end, their sockets close.
    pub fn clear(&self) {
        let all: Vec<SyncKey> = self.lock().keys().copied().collect();
        for key in all {
            self.forget(&key);
        }
        self.publish();
    }

    fn publish(&self) {
        let held = self.lock().len();
        self.stats.synced.store(held as u64, Ordering::Relaxed);
        metrics::gauge!(m::CLUSTER_SESSIONS_SYNCED).set(held as f64);
    }

    /// Binds the session's address and watches it; `None` when it cannot be bound now.
    fn bind(self: &Arc<Self>, synced: &Synced) -> Option<CancellationToken> {
        let socket = match bind_session(synced.key) {
            Ok(socket) => socket,
            Err(e) => {
                tracing::debug!(session = %synced.key.session, error = %e, "synced session's address not bound (yet)");
                return None;
            }
        };
        let cancel = CancellationToken::new();
        let watch = self.clone().stand_by(socket, synced.key, cancel.clone());
        tokio::spawn(watch);
        Some(cancel)
    }

    /// Waits for a packet of the client on the session's address (others are read and
    /// dropped: where the address is live, a scan must not set a takeover off); then carries
    /// the session on.
    async fn stand_by(self: Arc<Self>, socket: UdpSocket, key: SyncKey, cancel: CancellationToken) {
        let mut head = [0u8; 4];
        loop {
            let from = tokio::select! {
                _ = cancel.cancelled() => return,
                got = socket.peek_from(&mut head) => got,
            };
            match from {
                Ok((_, from)) if from == key.client => break,
                Ok(_) => {
                    let _ = socket.try_recv_from(&mut head);
                }
                // An ICMP error from an earlier send: nothing to read.
                Err(_) => {
                    let _ = socket.try_recv_from(&mut head);
                }
            }
        }
        let Some(entry) = self.lock().remove(&key) else {
            return;
        };
        self.publish();
        self.take_over(socket, entry.synced).await;
    }

    async fn take_over(&self, socket: UdpSocket, synced: Synced) {
        let client = synced.key.client;
        self.stats.taken_over.fetch_add(1, Ordering::Relaxed);
        tracing::info!(%client, session = %synced.key.session, backend = %synced.backend, "taking over a synced transfer");
        let result = match self.frontend.resume(Resume { socket, synced }) {
            Ok(task) => match task.await {
                Ok(end) if end.outcome == "completed" => "completed",
                Ok(end) => end.outcome,
                Err(_) => "failed",
            },
            Err(refused) => {
                let (resume, why) = *refused;
                tracing::warn!(%client, why, "synced transfer not taken over");
                let error = packet::error_datagram(error_code::NOT_DEFINED, why);
                let _ = resume.socket.send_to(&error, client).await;
                "refused"
            }
        };
        let counter = match result {
            "completed" => &self.stats.resumed,
            _ => &self.stats.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CLUSTER_TAKEOVERS, "result" => result).increment(1);
    }
}

/// The session's address, bound even if it is not on this machine. Not connected to the
/// client: the kernel refuses to route from an address that is not here yet (ENETUNREACH);
/// the relay checks the source of what arrives itself.
fn bind_session(key: SyncKey) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(key.session), Type::DGRAM, None)?;
    match key.session {
        SocketAddr::V4(_) => socket.set_freebind_v4(true)?,
        SocketAddr::V6(_) => socket.set_freebind_v6(true)?,
    }
    socket.set_nonblocking(true)?;
    socket.bind(&key.session.into())?;
    UdpSocket::from_std(socket.into())
}
