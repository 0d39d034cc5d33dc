//! Session sync between front ends, and taking over a dead peer's transfers: what an HA pair
//! of appliances does not do for TFTP.
//!
//! Each front end sends its peers one small authenticated record per session event (see
//! `tftp::sync`: started once the client answered, progress every few thousand blocks,
//! ended) and a heartbeat, over UDP to each configured peer (`record`). Records come only
//! from configured peers, signed with the shared key, fresh and not seen before (`replay`);
//! anything else is dropped and counted by reason. The sessions synced wait in `standby`,
//! their addresses bound with `IP_FREEBIND`, for the floating address to move here; a peer
//! silent for `peer_dead_after` (`peers`) has its remaining sessions bound then.
//!
//! Why UDP and no acknowledgements: a lost record costs one transfer's takeover at worst,
//! while a sync that could wait would put the peer's health on every transfer's path. The
//! relay never waits for this service (`tftp::sync::tell`).

pub mod config;
pub mod peers;
pub mod record;
pub mod replay;
pub mod standby;

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::config::ClusterConfig;
use self::peers::Peers;
use self::record::{Body, MAX_RECORD, Record};
use self::replay::Window;
use self::standby::Standby;
use crate::metrics as m;
use crate::tftp::frontend::Frontend;
use crate::tftp::sync::{SyncEvent, SyncKey, Synced};

/// Session events queued for the peers at most; beyond, they are lost and counted.
const QUEUE: usize = 4096;

/// What the cluster did, for the status page.
#[derive(Debug, Default)]
pub struct ClusterStats {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub rejected: AtomicU64,
    pub synced: AtomicU64,
    pub taken_over: AtomicU64,
    pub resumed: AtomicU64,
    pub failed: AtomicU64,
    peers: Mutex<Vec<PeerStatus>>,
}

/// A peer as the status page shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub address: SocketAddr,
    pub up: bool,
    /// Seconds since its last record; `None`: never heard.
    pub silent_s: Option<f64>,
}

/// The cluster's part of the status.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    pub listen: SocketAddr,
    pub peers: Vec<PeerStatus>,
    pub records_sent: u64,
    pub records_received: u64,
    pub records_rejected: u64,
    pub sessions_synced: u64,
    pub sessions_taken_over: u64,
    pub sessions_resumed: u64,
    pub sessions_failed: u64,
}

impl ClusterStats {
    fn reject(&self, reason: &'static str) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CLUSTER_RECORDS_REJECTED, "reason" => reason).increment(1);
    }

    pub fn status(&self, listen: SocketAddr) -> ClusterStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ClusterStatus {
            listen,
            peers: self.peers.lock().map(|p| p.clone()).unwrap_or_default(),
            records_sent: get(&self.sent),
            records_received: get(&self.received),
            records_rejected: get(&self.rejected),
            sessions_synced: get(&self.synced),
            sessions_taken_over: get(&self.taken_over),
            sessions_resumed: get(&self.resumed),
            sessions_failed: get(&self.failed),
        }
    }
}

/// The bound sync socket, not yet served.
#[derive(Debug)]
pub struct ClusterServer {
    socket: std::net::UdpSocket,
    pub stats: Arc<ClusterStats>,
}

impl ClusterServer {
    /// Binds `[cluster] listen` (logged, so port 0 can be read back).
    pub fn bind(config: &ClusterConfig) -> io::Result<ClusterServer> {
        let socket = std::net::UdpSocket::bind(config.listen).map_err(|e| {
            io::Error::new(e.kind(), format!("cluster.listen {}: {e}", config.listen))
        })?;
        socket.set_nonblocking(true)?;
        tracing::info!(address = %socket.local_addr()?, "cluster sync listening");
        Ok(ClusterServer {
            socket,
            stats: Arc::new(ClusterStats::default()),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.socket
            .local_addr()
            .expect("a bound socket has an address")
    }

    /// Sends the sessions' events and heartbeats, takes the peers' records, until `stop`.
    pub async fn serve(self, frontend: Arc<Frontend>, stop: CancellationToken) -> io::Result<()> {
        let (events, mut queue) = mpsc::channel(QUEUE);
        frontend.sync_to(events);
        let mut node = Node::new(self.socket, frontend, self.stats)?;
        let mut updates = node.frontend.current().subscribe();
        let mut tick = tokio::time::interval(node.config.heartbeat);
        let mut buf = vec![0u8; MAX_RECORD];
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    node.standby.clear();
                    return Ok(());
                }
                Some(event) = queue.recv() => node.on_event(event).await,
                _ = tick.tick() => node.beat().await,
                got = node.socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => {
                        if let Some(peer) = node.receive(&buf[..n], from) {
                            node.resync(peer).await;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "cluster receive failed"),
                },
                Ok(()) = updates.changed() => {
                    let heartbeat = node.reconfigure();
                    if heartbeat != tick.period() {
                        tick = tokio::time::interval(heartbeat);
                    }
                }
            }
        }
    }
}

/// The running sync: its socket, the configuration in force, the peers' liveness and
/// replay windows, the sessions synced.
struct Node {
    socket: UdpSocket,
    frontend: Arc<Frontend>,
    config: ClusterConfig,
    peers: Peers,
    windows: HashMap<SocketAddr, Window>,
    standby: Arc<Standby>,
    stats: Arc<ClusterStats>,
    /// The next sequence number: from the start time in microseconds, so a restarted node
    /// goes on above the numbers its peers saw from it.
    seq: u64,
    /// The sync socket's address: what peers see records come from.
    local: SocketAddr,
    /// This node's own synced sessions as last told (bounded by its live sessions): a peer
    /// that comes up, or back after a restart, is told all of them.
    own: HashMap<SyncKey, Synced>,
}

impl Node {
    fn new(
        socket: std::net::UdpSocket,
        frontend: Arc<Frontend>,
        stats: Arc<ClusterStats>,
    ) -> io::Result<Node> {
        let config = frontend
            .runtime()
            .config
            .cluster
            .clone()
            .ok_or_else(|| io::Error::other("no [cluster] section"))?;
        let standby = Standby::new(frontend.clone(), stats.clone());
        Ok(Node {
            local: socket.local_addr()?,
            socket: UdpSocket::from_std(socket)?,
            peers: Peers::new(&config.peers, Instant::now()),
            frontend,
            config,
            windows: HashMap::new(),
            standby,
            stats,
            seq: now_micros(),
            own: HashMap::new(),
        })
    }

    /// A reload: peers, key, clocks and bounds as the new file says (the listen address
    /// stays until a restart). Returns the heartbeat period.
    fn reconfigure(&mut self) -> std::time::Duration {
        match self.frontend.runtime().config.cluster.clone() {
            Some(c) => {
                if c.listen != self.config.listen {
                    tracing::warn!("cluster.listen changed: takes effect at the next start");
                }
                self.peers.configure(&c.peers);
                self.windows.retain(|a, _| c.peers.contains(a));
                self.config = c;
            }
            None => tracing::warn!("[cluster] removed: sync goes on until the next start"),
        }
        self.config.heartbeat
    }

    /// A session of this node started, moved on or ended: kept, and told to every peer.
    async fn on_event(&mut self, event: SyncEvent) {
        match &event {
            SyncEvent::Started(synced) => {
                self.own.insert(synced.key, (**synced).clone());
            }
            SyncEvent::Progress { key, state } => {
                if let Some(s) = self.own.get_mut(key) {
                    s.state = *state;
                }
            }
            SyncEvent::Ended(key) => {
                self.own.remove(key);
            }
        }
        self.send(&Body::Event(event), None).await;
    }

    /// `peer` has just come up (first heard, or heard again after it was taken for dead): it
    /// is told every session of this node still running.
    async fn resync(&mut self, peer: SocketAddr) {
        let all: Vec<Synced> = self.own.values().cloned().collect();
        if !all.is_empty() {
            tracing::info!(%peer, sessions = all.len(), "telling a peer that came up of the running sessions");
        }
        for synced in all {
            let body = Body::Event(SyncEvent::Started(Box::new(synced)));
            self.send(&body, Some(peer)).await;
        }
    }

    /// Signs `body` and sends it to `to`, or to every peer.
    async fn send(&mut self, body: &Body, to: Option<SocketAddr>) {
        self.seq += 1;
        let record = Record {
            seq: self.seq,
            sent_ms: now_millis(),
            sender: self.local,
            body: body.clone(),
        };
        let bytes = record.encode(&self.config.key);
        let peers = match to {
            Some(peer) => vec![peer],
            None => self.config.peers.clone(),
        };
        for peer in &peers {
            match self.socket.send_to(&bytes, peer).await {
                Ok(_) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    metrics::counter!(m::CLUSTER_RECORDS_SENT).increment(1);
                }
                Err(e) => tracing::debug!(%peer, error = %e, "cluster send failed"),
            }
        }
    }

    /// The heartbeat: tells the peers this node lives, finds the peers that went silent,
    /// forgets stale sessions.
    async fn beat(&mut self) {
        self.send(&Body::Heartbeat, None).await;
        for peer in self
            .peers
            .newly_dead(Instant::now(), self.config.peer_dead_after)
        {
            metrics::gauge!(m::CLUSTER_PEER_UP, "peer" => peer.to_string()).set(0.0);
            self.standby.peer_died(peer);
        }
        self.standby.expire(self.config.max_age);
        // A lost Ended must not keep a session of this node told to its peers for good.
        let frontend = &self.frontend;
        self.own
            .retain(|_, s| frontend.has_session(s.key.client, s.contacted));
        self.publish_peers();
    }

    /// A datagram on the sync socket; the peer that sent it when it has just come up.
    fn receive(&mut self, datagram: &[u8], from: SocketAddr) -> Option<SocketAddr> {
        if !self.peers.knows(from) {
            self.stats.reject("unknown-peer");
            return None;
        }
        let record = match Record::decode(datagram, &self.config.key) {
            Ok(record) => record,
            Err(bad) => {
                self.stats.reject(bad.as_str());
                return None;
            }
        };
        if record.sender != from {
            self.stats.reject("wrong-sender");
            return None;
        }
        let window = self.windows.entry(from).or_default();
        if let Err(stale) = window.accept(record.seq, record.sent_ms, now_millis()) {
            self.stats.reject(stale.as_str());
            return None;
        }
        self.stats.received.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(m::CLUSTER_RECORDS_RECEIVED).increment(1);
        let came_up = self.peers.heard(from, Instant::now());
        if came_up {
            tracing::info!(peer = %from, "cluster peer up");
            metrics::gauge!(m::CLUSTER_PEER_UP, "peer" => from.to_string()).set(1.0);
            self.publish_peers();
        }
        if let Body::Event(event) = record.body {
            self.standby.on_event(from, event, self.config.max_sessions);
        }
        came_up.then_some(from)
    }

    fn publish_peers(&self) {
        let now = Instant::now();
        let list = self
            .peers
            .list()
            .into_iter()
            .map(|(address, p)| PeerStatus {
                address,
                up: p.up,
                silent_s: p
                    .last_heard
                    .map(|t| now.saturating_duration_since(t).as_secs_f64()),
            })
            .collect();
        if let Ok(mut peers) = self.stats.peers.lock() {
            *peers = list;
        }
    }
}

fn since_epoch() -> std::time::Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

fn now_millis() -> u64 {
    since_epoch().as_millis() as u64
}

fn now_micros() -> u64 {
    since_epoch().as_micros() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_synced_session_outlives_three_lost_progress_records() {
        assert!(super::config::MIN_MAX_AGE >= crate::tftp::sync::PROGRESS_INTERVAL * 3);
    }
}
