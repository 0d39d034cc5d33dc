//! Telling the cluster how a read stands (see `tftp::sync`): started once its client has
//! answered; its position every `PROGRESS_EVERY` blocks, when the client's numbering past
//! 65535 becomes settled, and at least every `PROGRESS_INTERVAL` (so a slow transfer is not
//! forgotten by its peers); ended. Writes are not synced: a write cannot be resumed.

use tokio::time::Instant;

use super::{Relay, Transfer};
use crate::tftp::sync::{PROGRESS_EVERY, PROGRESS_INTERVAL, SyncEvent, SyncKey, Synced, tell};

/// What the cluster was last told of a session.
#[derive(Debug, Clone, Copy)]
pub(super) struct Told {
    key: SyncKey,
    acked: u64,
    wrap_known: bool,
    at: Instant,
}

impl Relay {
    /// After each datagram of the client (at `now`): the start, or the progress, when due.
    pub(super) fn announce(&self, t: &mut Transfer<'_>, now: Instant) {
        if self.sync.is_none() || self.write {
            return;
        }
        let state = t.session.resumable();
        let event = match t.synced {
            None => {
                let Ok(session) = t.client_sock.local_addr() else {
                    return;
                };
                let key = SyncKey {
                    client: self.client,
                    session,
                };
                t.synced = Some(Told {
                    key,
                    acked: state.acked,
                    wrap_known: state.wrap_known,
                    at: now,
                });
                SyncEvent::Started(Box::new(Synced {
                    key,
                    contacted: self.contacted,
                    pool: self.pool.name.clone(),
                    backend: t.leg.address(),
                    request: self.request().into(),
                    state,
                }))
            }
            Some(told)
                if state.acked >= told.acked + PROGRESS_EVERY
                    || state.wrap_known != told.wrap_known
                    || now.saturating_duration_since(told.at) >= PROGRESS_INTERVAL =>
            {
                t.synced = Some(Told {
                    acked: state.acked,
                    wrap_known: state.wrap_known,
                    at: now,
                    ..told
                });
                SyncEvent::Progress {
                    key: told.key,
                    state,
                }
            }
            Some(_) => return,
        };
        tell(self.sync.as_ref(), event);
    }

    /// The session is over: its peers forget it.
    pub(super) fn announce_end(&self, t: &Transfer<'_>) {
        if let Some(told) = t.synced {
            tell(self.sync.as_ref(), SyncEvent::Ended(told.key));
        }
    }
}
