//! A read served from memory: when the backend the pool chooses has a fresh copy of the file
//! (`cache::store`), the session answers the client itself, from the address the client
//! contacted like any session, as a TFTP server (`cache::negotiate`, `cache::sender`); the
//! backend is not asked. Otherwise the copy is filled in the background and the request is
//! relayed, the relay asking that same backend first: the balancing decision stays as it is.
//!
//! While no backend of the pool is eligible, a copy younger than `serve_stale` is served (of
//! any backend, the most recently confirmed); with `serve_stale` off, none is.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant as StdInstant};

use tokio::net::UdpSocket;
use tokio::time::{Instant, sleep_until};

use super::linger::Strangers;
use super::send::{Batch, flush, gather_for_client, to_client};
use super::timers::{MAX_RESENDS, UNANSWERED_REPEATS};
use super::{Counts, Relay};
use crate::metrics::SessionEnd;
use crate::pool::Choice;
use crate::protocol::options::MAX_BLKSIZE;
use crate::protocol::packet::{self, Kind, error_code};
use crate::tftp::cache::negotiate::{Plan, negotiate};
use crate::tftp::cache::sender::{Resends, Send, Sender, Shape};
use crate::tftp::cache::store::CachedFile;
use crate::tftp::session::Outcome;

/// What a read whose file the pool keeps in memory does.
pub(super) enum Memory {
    /// Served from this backend's copy.
    Serve {
        backend: SocketAddr,
        file: Arc<CachedFile>,
    },
    /// Relayed; with the copy to fill when the pool chose a backend.
    Relay(Option<Fill>),
}

/// The copy a relayed read missed: the relay asks its backend first (the one the copy was
/// looked up for) and fills it once the client answers (a spoofed source never does). Its
/// key, the name asked of the backend, the blksize asked.
#[derive(Debug, Clone)]
pub struct Fill {
    /// The backend's index in the pool.
    pub backend: usize,
    pub key: crate::tftp::cache::store::Key,
    pub name: String,
    pub blksize: u16,
}

impl Relay {
    /// Looks for a copy of the chosen backend; starts filling one when there is none fresh.
    pub(super) fn look_in_memory(&self, now: StdInstant) -> Memory {
        let (Some(cache), Some(memory), Some((config, _))) =
            (&self.cache, &self.memory, &self.pool.cache)
        else {
            return Memory::Relay(None);
        };
        let choice = self.pool.choose(self.client.ip(), &|_| true);
        // A backend chosen while none is eligible (`when_all_down = "try-all"`) is down: its
        // copy is served only as `serve_stale` allows.
        if let Choice::Backend(i) = choice
            && self.pool.backends[i].state.eligible()
        {
            let key = (self.pool.backends[i].address, memory.name.clone());
            if let Some(file) = cache.store.fresh(&key, now, config.revalidate) {
                self.pool.remember(self.client.ip(), i);
                return Memory::Serve {
                    backend: key.0,
                    file,
                };
            }
        }
        let all_down = !self.pool.backends.iter().any(|b| b.state.eligible());
        if all_down && !config.serve_stale.is_zero() {
            let addrs: Vec<SocketAddr> = self.pool.backends.iter().map(|b| b.address).collect();
            if let Some((backend, file)) =
                cache
                    .store
                    .freshest(&addrs, &memory.name, now, config.serve_stale)
            {
                return Memory::Serve { backend, file };
            }
        }
        metrics::counter!(crate::metrics::CACHE_MISSES, "pool" => self.pool.name.clone())
            .increment(1);
        cache.counts.misses.fetch_add(1, Ordering::Relaxed);
        Memory::Relay(match choice {
            Choice::Backend(i) => Some(Fill {
                backend: i,
                key: (self.pool.backends[i].address, memory.name.clone()),
                name: memory.fetch.clone(),
                blksize: memory.fill_blksize,
            }),
            _ => None,
        })
    }

    /// The client of a relayed transfer answered: the copy it missed is filled now.
    pub(super) fn client_answered(&self) {
        if let (Some(cache), Some(fill), Some((config, _))) =
            (&self.cache, &self.fill, &self.pool.cache)
        {
            let key = fill.key.clone();
            cache.refresh(key, fill.name.clone(), fill.blksize, config.revalidate);
        }
    }

    /// Serves the transfer from `file` and reports it like a relayed one.
    pub(super) async fn served_from_memory(
        &self,
        backend: SocketAddr,
        file: Arc<CachedFile>,
        started: Instant,
    ) -> SessionEnd {
        let max_window = self.cache.as_ref().map_or(1, |c| c.max_window());
        let plan = negotiate(&self.requested, file.len() as u64, MAX_BLKSIZE, max_window);
        let mut counts = Counts::default();
        let (outcome, acked) = match self.send_from_memory(&file, &plan, &mut counts).await {
            Ok(done) => done,
            Err(e) => {
                if crate::limits::budget::may_log_packet_error() {
                    tracing::warn!(client = %self.client, error = %e, "session socket error");
                }
                (Outcome::Failed, 0)
            }
        };
        let bytes = (acked * u64::from(plan.blksize)).min(file.len() as u64);
        metrics::counter!(crate::metrics::CACHE_HITS, "pool" => self.pool.name.clone())
            .increment(1);
        metrics::counter!(crate::metrics::CACHE_BYTES_SERVED).increment(bytes);
        if let Some(cache) = &self.cache {
            cache.counts.hits.fetch_add(1, Ordering::Relaxed);
            cache
                .counts
                .bytes_served
                .fetch_add(bytes, Ordering::Relaxed);
        }
        SessionEnd {
            outcome: outcome.as_str(),
            from_memory: true,
            backend: Some(backend),
            blksize: plan.blksize,
            windowsize: plan.window,
            blocks: acked,
            file_bytes: bytes,
            packets_to_client: counts.to_client,
            packets_to_backend: 0,
            dropped: counts.dropped,
            send_errors: counts.send_errors,
            elapsed: started.elapsed(),
        }
    }

    /// The transfer loop from memory: the client's ACKs, its repeated request, the sender's
    /// timer, cancellation. Returns how it ended and the blocks the client acknowledged.
    async fn send_from_memory(
        &self,
        file: &CachedFile,
        plan: &Plan,
        counts: &mut Counts,
    ) -> io::Result<(Outcome, u64)> {
        let socket = UdpSocket::bind(SocketAddr::new(self.local_ip, 0)).await?;
        let shape = Shape {
            size: file.len() as u64,
            blksize: plan.blksize,
            window: plan.window,
            oack: plan.oack.is_some(),
            timeout: plan.timeout,
        };
        let resends = Resends {
            unanswered: UNANSWERED_REPEATS,
            answered: MAX_RESENDS,
        };
        let mut sender = Sender::new(shape, resends);
        // One block of room; a window is gathered (`send::Batch`) and goes out in one GSO
        // send, which grows the batch to a window's worth only once the client answered (a
        // window follows the OACK's ACK): a spoofed request's session holds one block.
        let mut out = Vec::with_capacity(4 + usize::from(plan.blksize));
        let mut batch = Batch::default();
        let first = sender.start(Instant::now().into_std());
        // Ended for room before its first answer went out, the session sends nothing.
        if !self.handle.replied(StdInstant::now()) {
            return Ok((Outcome::Evicted, 0));
        }
        let mut step = first;
        let mut strangers = Strangers::default();
        let mut buf = [0u8; 1024];
        let mut heard = false;
        // One timer for the transfer, re-armed lazily: when it fires early (an ACK moved the
        // deadline on), it is set to the new deadline; a block costs no timer registration.
        let cancelled = self.handle.cancel.cancelled();
        let timer = sleep_until(Instant::now() + Duration::from_secs(3600));
        tokio::pin!(cancelled, timer);
        let mut armed = false;
        loop {
            match step {
                Send::Done => return Ok((Outcome::Cached, sender.acked())),
                Send::GiveUp if heard => return Ok((Outcome::IdleTimeout, sender.acked())),
                Send::GiveUp => return Ok((Outcome::Unanswered, 0)),
                Send::Nothing => {}
                Send::Oack => {
                    let oack = plan.oack.as_deref().unwrap_or_default();
                    to_client(&socket, oack, self.client, counts).await;
                }
                Send::Blocks(range) => {
                    for pos in range {
                        out.clear();
                        out.extend_from_slice(&3u16.to_be_bytes());
                        out.extend_from_slice(&sender.wire(pos).to_be_bytes());
                        out.extend_from_slice(&file.data[sender.bytes_of(pos)]);
                        gather_for_client(&socket, &mut batch, &out, self.client, counts).await;
                    }
                    flush(&socket, &mut batch, self.client, counts).await;
                }
            }
            if !armed && let Some(due) = sender.deadline() {
                timer.as_mut().reset(Instant::from_std(due));
                armed = true;
            }
            step = tokio::select! {
                got = socket.recv_from(&mut buf) => match got {
                    Ok((n, from)) => {
                        match self.on_datagram(&socket, &buf[..n], from, &mut sender, &mut strangers, counts).await {
                            Heard::Step(next) => {
                                heard |= from == self.client;
                                next
                            }
                            Heard::End(outcome) => return Ok((outcome, sender.acked())),
                        }
                    }
                    // A send hit a closed port (ICMP): the timer decides, as for a loss.
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => Send::Nothing,
                    Err(e) => return Err(e),
                },
                _ = &mut timer, if armed => {
                    armed = false;
                    sender.on_timer(StdInstant::now())
                }
                _ = &mut cancelled => return Ok((self.cancel_outcome(), sender.acked())),
                _ = self.handle.retransmitted.notified() => sender.on_request_again(StdInstant::now()),
            };
        }
    }
}

/// What a datagram on the session's socket came to.
enum Heard {
    Step(Send),
    End(Outcome),
}

impl Relay {
    /// A datagram to the session's socket: a stranger gets ERROR 5 (rate-limited), the
    /// client's ACK moves the sender, its ERROR ends the transfer.
    async fn on_datagram(
        &self,
        socket: &UdpSocket,
        datagram: &[u8],
        from: SocketAddr,
        sender: &mut Sender,
        strangers: &mut Strangers,
        counts: &mut Counts,
    ) -> Heard {
        if from != self.client {
            strangers.client.answer(socket, from).await;
            counts.dropped += 1;
            return Heard::Step(Send::Nothing);
        }
        let now = StdInstant::now();
        if self.handle.heard_client(now)
            && let Err(limited) = self.slot.answered()
        {
            let error = packet::error_datagram(error_code::NOT_DEFINED, limited.message());
            to_client(socket, &error, self.client, counts).await;
            return Heard::End(Outcome::ClientLimit);
        }
        match packet::peek(datagram) {
            Ok(Kind::Ack { block }) => Heard::Step(sender.on_ack(block, now)),
            Ok(Kind::Error { .. }) => Heard::End(Outcome::ClientAborted),
            _ => {
                counts.dropped += 1;
                Heard::Step(Send::Nothing)
            }
        }
    }
}
