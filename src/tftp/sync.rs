//! What a session tells its peers (the `cluster` service): one event when its client first
//! answers, one now and then as the client's acknowledgements move on, one when it ends; and
//! what a peer hands back to carry such a transfer on ([`Resume`]).
//!
//! Why only once the client has answered: a request from a spoofed source never answers, so
//! a flood of them costs the peers nothing. Why progress now and then: a 16-bit block number
//! names one of many positions in a long transfer; a peer that knows the client's position
//! to within [`PROGRESS_EVERY`] blocks places its next ACK exactly.
//!
//! The relay sends without waiting (a full channel drops the event, counted): the cluster may
//! be slow or gone, a transfer never waits for it.

use std::net::SocketAddr;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use super::resumable::Resumable;

/// Blocks acknowledged between two progress events of a session: well under the 65,536
/// positions a wire block number repeats after, so a peer can place the client's next ACK.
pub const PROGRESS_EVERY: u64 = 8192;

/// A session's progress goes out at least this often (with its next client datagram), so
/// that peers, which forget a session not heard of for `[cluster] max_age`, keep a slow one.
pub const PROGRESS_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);

/// A transfer as its peers know it: by its client and the session's own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyncKey {
    pub client: SocketAddr,
    /// The session's address the client talks to (the contacted IP, the session's port).
    pub session: SocketAddr,
}

/// A session whose client has answered: all a peer needs to carry it on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synced {
    pub key: SyncKey,
    /// The port-69 address the client sent its request to.
    pub contacted: SocketAddr,
    pub pool: String,
    pub backend: SocketAddr,
    /// The request as relayed to the backend (a lowered blksize included).
    pub request: Box<[u8]>,
    pub state: Resumable,
}

/// What a session tells the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncEvent {
    Started(Box<Synced>),
    Progress { key: SyncKey, state: Resumable },
    Ended(SyncKey),
}

/// Where sessions send their events; `try_send` only.
pub type SyncSender = mpsc::Sender<SyncEvent>;

/// A synced transfer handed to this node: the socket bound to the session's address
/// (connected to the client), and what was synced of it.
#[derive(Debug)]
pub struct Resume {
    pub socket: UdpSocket,
    pub synced: Synced,
}

/// Sends without waiting; a full or closed channel loses the event (counted).
pub fn tell(sender: Option<&SyncSender>, event: SyncEvent) {
    if let Some(sender) = sender
        && sender.try_send(event).is_err()
    {
        metrics::counter!(crate::metrics::SYNC_EVENTS_LOST).increment(1);
    }
}
