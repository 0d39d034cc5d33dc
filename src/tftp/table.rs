//! The table of live sessions, keyed by (client address, contacted address), and what it
//! decides for a request whose key it already holds:
//! - a retransmitted request (same bytes, while the client has not yet talked to the session) is
//!   absorbed instead of opening a second backend transfer (the session hears of it: while no
//!   backend has answered, it passes it on to those it asked), and
//! - a new request from an address whose session is finished or stale (PXE ROMs reuse port 2072
//!   on every boot) starts a new session, replacing the old one, never swallowed by it.
//!
//! It also tracks the sessions' tasks, so a shutdown can let them finish and then end the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Session table key: the client's address and the address it contacted.
pub type Key = (SocketAddr, SocketAddr);

/// What the listener shares with a running session: enough to tell a retransmitted request
/// from a new one, and to end the session from outside.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    /// The request datagram as received, to recognise its retransmissions.
    pub request: Box<[u8]>,
    /// Set once the client has sent anything to the session's port: from then on an identical
    /// request to port 69 is a new transfer (PXE ROMs reuse their port), not a retransmission.
    pub client_seen: AtomicBool,
    pub cancel: CancellationToken,
    pub superseded: AtomicBool,
    /// Told of each retransmission of the request absorbed here: while no backend has
    /// answered, the session passes it on (it is the client's retry, see `relay::setup`).
    pub retransmitted: Notify,
}

/// The live sessions and their tasks.
#[derive(Debug)]
pub struct SessionTable {
    sessions: DashMap<Key, Arc<SessionHandle>>,
    next_id: AtomicU64,
    tasks: TaskTracker,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            sessions: DashMap::new(),
            next_id: AtomicU64::new(1),
            tasks: TaskTracker::new(),
        }
    }
}

impl SessionTable {
    /// Sessions now in the table.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Whether `datagram` repeats the request of the session at `key` whose client has not yet
    /// talked to it: then it is absorbed.
    pub fn is_retransmission(&self, key: &Key, datagram: &[u8]) -> bool {
        let Some(old) = self.sessions.get(key).map(|e| e.value().clone()) else {
            return false;
        };
        let again = !old.client_seen.load(Ordering::Relaxed) && *old.request == *datagram;
        if again {
            old.retransmitted.notify_one();
        }
        again
    }

    /// Ends the session at `key`, if there is one, because a new request from the same address
    /// replaces it; whether there was one.
    pub fn supersede(&self, key: &Key) -> bool {
        let Some(old) = self.sessions.get(key).map(|e| e.value().clone()) else {
            return false;
        };
        old.superseded.store(true, Ordering::Relaxed);
        old.cancel.cancel();
        true
    }

    /// Enters a new session for `key` that `request` started.
    pub fn open(&self, key: Key, request: &[u8]) -> Arc<SessionHandle> {
        let handle = Arc::new(SessionHandle {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            request: request.into(),
            client_seen: AtomicBool::new(false),
            cancel: CancellationToken::new(),
            superseded: AtomicBool::new(false),
            retransmitted: Notify::new(),
        });
        self.sessions.insert(key, handle.clone());
        handle
    }

    /// Removes the session `id` from `key` (a newer session there stays).
    pub fn close(&self, key: &Key, id: u64) {
        self.sessions.remove_if(key, |_, h| h.id == id);
    }

    /// Runs a session's task on `runtime`, tracked for [`SessionTable::drain`].
    pub fn spawn_on<F>(&self, task: F, runtime: &tokio::runtime::Handle)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn_on(task, runtime);
    }

    /// Takes no more tasks, lets running ones finish for up to `grace`, then ends the rest.
    pub async fn drain(&self, grace: Duration) {
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait())
            .await
            .is_err()
        {
            for entry in self.sessions.iter() {
                entry.value().cancel.cancel();
            }
            self.tasks.wait().await;
        }
    }
}
