//! The table of live sessions, keyed by (client address, contacted address), and what it
//! decides for a request whose key it already holds:
//! - a retransmitted request (same bytes, while the client has not yet talked to the session) is
//!   absorbed instead of opening a second backend transfer (the session hears of it: while no
//!   backend has answered, it passes it on to those it asked), and
//! - a new request from an address whose session is finished or stale (PXE ROMs reuse port 2072
//!   on every boot) starts a new session, replacing the old one, never swallowed by it;
//! - but an identical request while the session's client is still talking to it is a stray or
//!   spoofed copy: dropped, so one forged packet cannot end a live transfer. The client must
//!   have been silent for [`REUSE_AFTER_SILENCE`] before its address may start the same
//!   transfer again. The front end replaces a session only once the new one is admitted.
//!
//! When the table is full, the oldest session whose client has not answered yet gives way to a
//! new request ([`SessionTable::make_room`]): a flood of spoofed requests, whose sources never
//! answer, churns among its own sessions and never crowds out a client that answered. A session
//! that sent its client the first answer is spared for a grace learned from how fast clients
//! answer (`grace`).
//!
//! It also tracks the sessions' tasks, so a shutdown can let them finish and then end the rest.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::grace::AnswerGrace;

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
    /// Milliseconds after `opened`, plus one, when a backend's first answer was passed to the
    /// client; 0 before. A client locks onto the session's port then: for the table's grace
    /// the session is not ended to make room (a live client answers within a round trip).
    replied_ms: AtomicU64,
    /// Ended to make room for a new request while its client had not answered.
    pub evicted: AtomicBool,
    /// Told of each retransmission of the request absorbed here: while no backend has
    /// answered, the session passes it on (it is the client's retry, see `relay::setup`).
    pub retransmitted: Notify,
    /// When the session was entered; `heard_ms` counts from here.
    opened: Instant,
    /// Milliseconds after `opened`, plus one, when the client last sent to the session's
    /// port; 0 while it has sent nothing.
    heard_ms: AtomicU64,
    /// The table's grace, told how long this client took to answer.
    grace: Arc<AnswerGrace>,
}

impl SessionHandle {
    pub fn new(id: u64, request: &[u8], opened: Instant, grace: Arc<AnswerGrace>) -> SessionHandle {
        SessionHandle {
            id,
            request: request.into(),
            cancel: CancellationToken::new(),
            superseded: AtomicBool::new(false),
            replied_ms: AtomicU64::new(0),
            evicted: AtomicBool::new(false),
            retransmitted: Notify::new(),
            opened,
            heard_ms: AtomicU64::new(0),
            grace,
        }
    }

    /// The client sent something to the session's port at `now`; whether it is the first
    /// time (the relay then charges the client's slot). Only the session's task writes this.
    pub fn heard_client(&self, now: Instant) -> bool {
        let first = self.heard_ms.load(Ordering::Relaxed) == 0;
        self.stamp(&self.heard_ms, now);
        if let (true, Some(replied)) = (first, self.instant(&self.replied_ms)) {
            self.grace
                .answered_after(now.saturating_duration_since(replied));
        }
        first
    }

    /// The first answer is about to go to the client at `now`: whether it may. It may not
    /// when the session was ended to make room before it had one to send (the two race: once
    /// the answer goes out, the client is locked onto the session's port).
    pub fn replied(&self, now: Instant) -> bool {
        let stamp = self.stamp_of(now);
        self.replied_ms
            .compare_exchange(0, stamp, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Ends the session to make room if it is evictable at `now`; whether it was. A session
    /// with no answer sent is claimed with the same exchange the session answers with.
    fn evict(&self, now: Instant, grace: Duration) -> bool {
        if !self.evictable(now, grace) {
            return false;
        }
        // Failing the exchange, the session sent its first answer meanwhile: spared.
        let claimed = self.instant(&self.replied_ms).is_some()
            || self
                .replied_ms
                .compare_exchange(0, NEVER_REPLIED, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        if claimed {
            self.evicted.store(true, Ordering::Relaxed);
            self.cancel.cancel();
        }
        claimed
    }

    /// Whether this session may be ended at `now` to make room: running, its client silent,
    /// and no answer sent to it, or sent longer than the grace ago.
    fn evictable(&self, now: Instant, grace: Duration) -> bool {
        is_unanswered(self)
            && self
                .instant(&self.replied_ms)
                .is_none_or(|at| now.saturating_duration_since(at) >= grace)
    }

    /// When the client last sent to the session, if it has.
    pub fn client_heard_at(&self) -> Option<Instant> {
        self.instant(&self.heard_ms)
    }

    /// Writes `now` into a cell as [`SessionHandle::stamp_of`] it.
    fn stamp(&self, cell: &AtomicU64, now: Instant) {
        cell.store(self.stamp_of(now), Ordering::Relaxed);
    }

    /// `now` as a cell holds it: milliseconds after `opened`, plus one (0 means never).
    fn stamp_of(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.opened).as_millis() as u64 + 1
    }

    /// The instant a cell holds, if it was ever stamped.
    fn instant(&self, cell: &AtomicU64) -> Option<Instant> {
        match cell.load(Ordering::Acquire) {
            0 | NEVER_REPLIED => None,
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
    /// Sessions in the order they were opened, for [`SessionTable::has_room`]; those that
    /// ended or whose client answered are dropped from it as they come to the front.
    opened: Mutex<VecDeque<Weak<SessionHandle>>>,
    /// How long a session that answered its client is spared; its sessions teach it.
    grace: Arc<AnswerGrace>,
    next_id: AtomicU64,
    tasks: TaskTracker,
}

impl Default for SessionTable {
    fn default() -> Self {
        SessionTable {
            sessions: DashMap::new(),
            opened: Mutex::new(VecDeque::new()),
            grace: Arc::default(),
            next_id: AtomicU64::new(1),
            tasks: TaskTracker::new(),
        }
    }
}

impl SessionTable {
    /// Sessions now in the table.
    /// Whether a session of `key` is in the table.
    pub fn contains(&self, key: &Key) -> bool {
        self.sessions.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// What a request from `key` is to the live session there, if there is one. A
    /// retransmission is passed to the session (while no backend answered, it is the client's
    /// retry, see `relay::setup`).
    pub fn judge(&self, key: &Key, datagram: &[u8], now: Instant) -> Option<Repeat> {
        // A session being ended (evicted, superseded, shut down) answers nothing more: a
        // request from its address is a new one.
        let old = self
            .sessions
            .get(key)
            .map(|e| e.value().clone())
            .filter(|h| !h.cancel.is_cancelled())?;
        let repeat = old.judge(datagram, now);
        if repeat == Repeat::Retransmission {
            old.retransmitted.notify_one();
        }
        Some(repeat)
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
        let handle = Arc::new(SessionHandle::new(
            id,
            request,
            Instant::now(),
            self.grace.clone(),
        ));
        self.sessions.insert(key, handle.clone());
        self.remember_opened(&handle);
        handle
    }

    /// Whether a new session may start with `max` sessions at most: there is room, or the
    /// oldest session whose client has not answered yet ends to make some. A session ended so
    /// stays in the table until its task has let go of its sockets, and the table holds at
    /// most a sixteenth more than `max` of those: however fast a flood comes, the sessions
    /// alive never grow past that.
    pub fn has_room(&self, max: usize) -> bool {
        let live = self.len();
        live < max || (live < max + max / 16 + 1 && self.make_room())
    }

    /// Ends the oldest session whose client has not answered yet; whether there was one.
    fn make_room(&self) -> bool {
        let now = Instant::now();
        let grace = self.grace.grace();
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        let found = opened
            .iter()
            .position(|w| w.upgrade().is_some_and(|h| h.evict(now, grace)));
        found.and_then(|i| opened.remove(i)).is_some()
    }

    fn remember_opened(&self, handle: &Arc<SessionHandle>) {
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        opened.push_back(Arc::downgrade(handle));
        // Those that ended or answered leave from the front; now and then, from anywhere (a
        // client waiting long at the front must not make the queue grow with the traffic).
        while opened
            .front()
            .is_some_and(|w| !w.upgrade().is_some_and(|h| is_unanswered(&h)))
        {
            opened.pop_front();
        }
        if opened.len() > 2 * self.sessions.len() + 64 {
            opened.retain(|w| w.upgrade().is_some_and(|h| is_unanswered(&h)));
        }
    }

    /// Removes the session `id` from `key` (a newer session there stays).
    pub fn close(&self, key: &Key, id: u64) {
        self.sessions.remove_if(key, |_, h| h.id == id);
    }

    /// Runs a session's task on `runtime`, tracked for [`SessionTable::drain`].
    pub fn spawn_on<F>(
        &self,
        task: F,
        runtime: &tokio::runtime::Handle,
    ) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn_on(task, runtime)
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

/// What `replied_ms` holds for a session ended to make room before it sent its first answer:
/// the session may send none after.
const NEVER_REPLIED: u64 = u64::MAX;

/// A session still running whose client has sent it nothing.
fn is_unanswered(handle: &SessionHandle) -> bool {
    handle.client_heard_at().is_none() && !handle.cancel.is_cancelled()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_request_is_judged_by_when_the_client_last_spoke() {
        let t0 = Instant::now();
        let h = SessionHandle::new(1, b"rrq", t0, Arc::default());
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

    fn key(port: u16) -> Key {
        let local = "127.0.0.1:69".parse().unwrap();
        (SocketAddr::from(([127, 0, 0, 1], port)), local)
    }

    #[test]
    fn the_oldest_unanswered_session_makes_room_and_answered_ones_never_do() {
        let table = SessionTable::default();
        let answered = table.open(key(1), b"a");
        answered.heard_client(Instant::now());
        let oldest = table.open(key(2), b"b");
        let newer = table.open(key(3), b"c");
        assert!(table.has_room(4), "room without ending anyone");
        assert!(!oldest.cancel.is_cancelled());
        assert!(table.has_room(3));
        assert!(oldest.cancel.is_cancelled() && oldest.evicted.load(Ordering::Relaxed));
        assert!(table.has_room(3));
        assert!(newer.cancel.is_cancelled());
        assert!(
            !table.has_room(3),
            "only an answered session is left to end"
        );
        assert!(!answered.cancel.is_cancelled());
    }

    #[test]
    fn a_session_ended_for_room_before_its_first_answer_sends_none() {
        let table = SessionTable::default();
        let early = table.open(key(1), b"a");
        assert!(table.has_room(1), "no answer sent yet: it makes room");
        assert!(early.cancel.is_cancelled());
        assert!(
            !early.replied(Instant::now()),
            "the backend's answer comes too late"
        );
        // The other order: the answer went out first, and the session is spared.
        let answering = table.open(key(2), b"b");
        assert!(answering.replied(Instant::now()));
        assert!(!table.has_room(2));
        assert!(!answering.cancel.is_cancelled());
    }

    #[test]
    fn a_session_that_answered_is_spared_as_long_as_clients_lately_took_to_answer() {
        let table = SessionTable::default();
        let ms = Duration::from_millis;
        let waiting = table.open(key(1), b"a");
        let t0 = Instant::now();
        waiting.replied(t0);
        // Clients answer promptly so far: 300 ms without an answer is past the grace.
        assert!(waiting.evictable(t0 + ms(300), table.grace.grace()));
        // Another client answers 400 ms after its first DATA (a loaded host).
        let slow = table.open(key(2), b"b");
        let t1 = Instant::now();
        slow.replied(t1);
        slow.heard_client(t1 + ms(400));
        let grace = table.grace.grace();
        assert!(grace >= ms(790) && grace <= ms(810), "{grace:?}");
        assert!(!waiting.evictable(t0 + ms(300), grace), "spared now");
        assert!(waiting.evictable(t0 + ms(900), grace));
        assert!(!slow.evictable(t1 + ms(5_000), grace), "it answered");
    }

    #[test]
    fn sessions_ended_to_make_room_count_until_their_task_ends() {
        let table = SessionTable::default();
        let max = 32;
        let handles: Vec<_> = (0..max as u16).map(|i| table.open(key(i), b"x")).collect();
        // A flood: each newcomer ends an unanswered session, whose task has not ended yet.
        let mut admitted = 0;
        for i in 0..1_000u16 {
            if table.has_room(max) {
                table.open(key(1_000 + i), b"y");
                admitted += 1;
            }
        }
        assert_eq!(table.len(), max + max / 16 + 1, "a sixteenth more at most");
        assert_eq!(admitted, max / 16 + 1);
        // Their tasks end: room again.
        for h in &handles {
            table.close(&key(h.id as u16 - 1), h.id);
        }
        assert!(table.has_room(max));
    }

    #[test]
    fn the_queue_of_opened_sessions_does_not_grow_with_the_traffic() {
        let table = SessionTable::default();
        // One client waits long at the front; thousands come and go behind it.
        let _waiting = table.open(key(1), b"w");
        for i in 0..5_000u16 {
            let h = table.open(key(2 + i % 100), b"x");
            h.heard_client(Instant::now());
        }
        let queued = table.opened.lock().unwrap().len();
        assert!(
            queued <= 2 * table.len() + 65,
            "{queued} queued for {} live",
            table.len()
        );
    }
}
