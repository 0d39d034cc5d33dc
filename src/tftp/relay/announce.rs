//! Telling the cluster how a read stands (see `tftp::sync`): started once its client has
//! answered, its position every `PROGRESS_EVERY` blocks, ended. Writes are not synced: a
//! write cannot be resumed.

use super::{Relay, Transfer};
use crate::tftp::sync::{PROGRESS_EVERY, SyncEvent, SyncKey, Synced, tell};

impl Relay {
    /// After each datagram of the client: the start, or the progress, when due.
    pub(super) fn announce(&self, t: &mut Transfer<'_>) {
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
                t.synced = Some((key, state.acked));
                SyncEvent::Started(Box::new(Synced {
                    key,
                    contacted: self.contacted,
                    pool: self.pool.name.clone(),
                    backend: t.leg.address(),
                    request: self.request().into(),
                    state,
                }))
            }
            Some((key, told)) if state.acked >= told + PROGRESS_EVERY => {
                t.synced = Some((key, state.acked));
                SyncEvent::Progress { key, state }
            }
            Some(_) => return,
        };
        tell(self.sync.as_ref(), event);
    }

    /// The session is over: its peers forget it.
    pub(super) fn announce_end(&self, t: &Transfer<'_>) {
        if let Some((key, _)) = t.synced {
            tell(self.sync.as_ref(), SyncEvent::Ended(key));
        }
    }
}
