//! The table of live sessions, keyed by (client address, contacted address), and what it
//! decides for a request whose key it already holds:
//! - a retransmitted request (same bytes, while the client has not yet talked to the session) is
//!   absorbed instead of opening a second backend transfer, and
//! - a new request from an address whose session is finished or stale (PXE ROMs reuse port 2072
//!   on every boot) starts a new session, replacing the old one, never swallowed by it;
//! - but an identical request while the session's client is still talking to it is a stray or
//!   spoofed copy: dropped, so one forged packet cannot end a live transfer. The client must
//!   have been silent for [`REUSE_AFTER_SILENCE`] before its address may start the same
//!   transfer again. The front end replaces a session only once the new one is admitted.
//!
//! It also tracks the sessions' tasks, so a shutdown can let them finish and then end the rest.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Session table key: the client's address and the address it contacted.
pub type Key = (SocketAddr, SocketAddr);

/// How long the client of a live session must have been silent before an identical request
/// from its address starts the transfer again (port reuse after a reboot) instead of being
/// dropped as a stray or spoofed copy. A client in a transfer speaks every round trip (or every
/// retransmission timeout, 1 s for most, while a backend is replaced); a PXE ROM that rebooted
/// takes longer than this before it asks again.
pub const REUSE_AFTER_SILENCE: Duration = Duration::from_secs(3);

/// What a request from the address of a live session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repeat {
    /// The same request, before the client said anything to the session: it did not get the
    /// first answer yet. Absorbed.
    Retransmission,
    /// The same request while the client is talking to the session: not the client's doing
    /// (or a late copy). Dropped; the session goes on.
    Duplicate,
    /// Another request, or the same one from a client silent for [`REUSE_AFTER_SILENCE`]: a
    /// new transfer, which replaces the session once it is admitted.
    Replaces,
}

/// What the front end shares with a running session: enough to tell a retransmitted request
/// from a new one, and to end the session from outside.
#[derive(Debug)]
pub struct SessionHandle {
    pub id: u64,
    /// The request datagram as received, to recognise its retransmissions.
    pub request: Box<[u8]>,
    pub cancel: CancellationToken,
    pub superseded: AtomicBool,
    /// When the session was entered; `heard_ms` counts from here.
    opened: Instant,
    /// Milliseconds after `opened`, plus one, when the client last sent to the session's
    /// port; 0 while it has sent nothing.
    heard_ms: AtomicU64,
}

impl SessionHandle {
    pub fn new(id: u64, request: &[u8], opened: Instant) -> SessionHandle {
        SessionHandle {
            id,
            request: request.into(),
            cancel: CancellationToken::new(),
            superseded: AtomicBool::new(false),
            opened,
            heard_ms: AtomicU64::new(0),
        }
    }

    /// The client sent something to the session's port at `now`.
    pub fn heard_client(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.opened).as_millis() as u64;
        self.heard_ms.store(ms + 1, Ordering::Relaxed);
    }

    /// When the client last sent to the session, if it has.
    pub fn client_heard_at(&self) -> Option<Instant> {
        match self.heard_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.opened + Duration::from_millis(ms - 1)),
        }
    }

    /// What `datagram`, a request from this session's client address arriving at `now`, is.
    pub fn judge(&self, datagram: &[u8], now: Instant) -> Repeat {
        if *self.request != *datagram {
            return Repeat::Replaces;
        }
        match self.client_heard_at() {
            None => Repeat::Retransmission,
            Some(at) if now.saturating_duration_since(at) < REUSE_AFTER_SILENCE => {
                Repeat::Duplicate
            }
            Some(_) => Repeat::Replaces,
        }
    }
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

    /// What a request from `key` is to the live session there, if there is one.
    pub fn judge(&self, key: &Key, datagram: &[u8], now: Instant) -> Option<Repeat> {
        let old = self.sessions.get(key).map(|e| e.value().clone())?;
        Some(old.judge(datagram, now))
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
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let handle = Arc::new(SessionHandle::new(id, request, Instant::now()));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_request_is_judged_by_when_the_client_last_spoke() {
        let t0 = Instant::now();
        let h = SessionHandle::new(1, b"rrq", t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(h.judge(b"rrq", at(500)), Repeat::Retransmission);
        assert_eq!(h.judge(b"other", at(500)), Repeat::Replaces);
        h.heard_client(at(1_000));
        assert_eq!(h.client_heard_at(), Some(at(1_000)));
        assert_eq!(h.judge(b"rrq", at(1_000)), Repeat::Duplicate);
        assert_eq!(h.judge(b"rrq", at(3_999)), Repeat::Duplicate);
        assert_eq!(
            h.judge(b"rrq", at(4_000)),
            Repeat::Replaces,
            "silent 3 s: port reuse"
        );
        assert_eq!(h.judge(b"other", at(1_001)), Repeat::Replaces);
        h.heard_client(at(0));
        assert_eq!(
            h.judge(b"rrq", at(2_999)),
            Repeat::Duplicate,
            "heard at its opening"
        );
    }
}
