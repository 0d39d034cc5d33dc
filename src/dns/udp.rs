//! UDP queries answered by the task that receives them, in rounds: the queries waiting are
//! received together (`recvmmsg`) and their answers sent together (`sendmmsg`).
//!
//! hickory-server's UDP loop gives every query a task of its own and hands the answer back to
//! the socket through a channel: two task switches and a channel send per query, for answers
//! this zone computes from memory in a few microseconds. Here the receiving task decodes the
//! query with hickory's `Request`, runs the same [`Handler`] as TCP does, encodes the answer
//! (truncated to the client's EDNS size, or 512 bytes) and sends it itself. TCP stays with
//! hickory-server.
//!
//! What hickory's loop also does is done here too: responses (QR set) are never answered (no
//! reflection), nor are sources that cannot be answered (port 0). A datagram that does not
//! decode as a query is counted and dropped. With `[dns.rrl]`, every answer first asks the
//! rate limiter (`rrl.rs`), which may drop it or have it sent truncated; TCP, which cannot be
//! spoofed, is not limited.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwapOption;
use hickory_server::net::NetError;
use hickory_server::net::runtime::TokioTime;
use hickory_server::net::xfer::Protocol;
use hickory_server::proto::op::{
    Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::Record;
use hickory_server::proto::serialize::binary::{BinEncodable, BinEncoder};
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponse;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

use super::handler::Handler;
use super::rrl::{Action, Limiter};
use crate::tftp::burst::Burst;

/// Largest query accepted; anything longer is not a query for this zone.
const MAX_QUERY: usize = 4096;

/// Queries received in one call, and answers sent in one call, at most.
const BATCH: usize = 32;

/// Answers of one round, sent together when the round is done.
type Outbox = Arc<Mutex<Vec<(Vec<u8>, SocketAddr)>>>;

/// Answers queries on `socket` until `stop` is cancelled, within the rate limit `rrl` holds.
/// Each round takes the queries waiting (up to a batch per `recvmmsg`), answers them in turn
/// and sends the answers with one `sendmmsg`: under load a query costs a fraction of a
/// system call each way instead of two.
pub async fn serve(
    socket: UdpSocket,
    handler: Arc<Handler>,
    rrl: Arc<ArcSwapOption<Limiter>>,
    stop: CancellationToken,
) {
    // One byte over the largest query: a datagram that fills it is longer than any.
    let mut inbox = Burst::new(MAX_QUERY + 1, BATCH);
    let mut buf = vec![0u8; MAX_QUERY + 1];
    let outbox: Outbox = Arc::new(Mutex::new(Vec::with_capacity(BATCH)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            ready = socket.readable() => if let Err(e) = ready {
                tracing::warn!(error = %e, "dns: udp receive");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            },
        }
        let mut handled = 0;
        while handled < BATCH || inbox.holds() {
            handled += 1;
            let (n, src) = match inbox.next(&socket, &mut buf) {
                Ok(Some(got)) => got,
                Ok(None) => break,
                // An earlier answer hit a closed port (ICMP unreachable): nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "dns: udp receive");
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                    break;
                }
            };
            if n < buf.len() {
                answer(&buf[..n], src, &outbox, &handler, &rrl).await;
            } else {
                refuse_malformed();
            }
        }
        send_answers(&socket, &outbox).await;
    }
}

/// Answers one query (into `outbox`), unless it is not one to answer.
async fn answer(
    query: &[u8],
    src: SocketAddr,
    outbox: &Outbox,
    handler: &Handler,
    rrl: &ArcSwapOption<Limiter>,
) {
    if src.port() == 0 {
        return;
    }
    let Ok(request) = Request::from_bytes(query.to_vec(), src, Protocol::Udp) else {
        refuse_malformed();
        return;
    };
    if request.metadata.message_type == MessageType::Response {
        return;
    }
    let reply = UdpReply {
        outbox: outbox.clone(),
        to: src,
    };
    match limit(rrl, src) {
        Action::Answer => {
            handler
                .handle_request::<_, TokioTime>(&request, reply)
                .await;
        }
        Action::Slip => {
            handler.slip(&request, reply).await;
        }
        Action::Drop => {}
    }
}

fn refuse_malformed() {
    metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "dns-malformed").increment(1);
}

/// Sends the round's answers with `sendmmsg`, a batch per call; one the kernel refuses is
/// dropped (as a lost datagram), the rest still go.
async fn send_answers(socket: &UdpSocket, outbox: &Outbox) {
    let answers = std::mem::take(&mut *lock(outbox));
    let mut rest = &answers[..];
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(BATCH)];
        let sent = socket
            .async_io(tokio::io::Interest::WRITABLE, || send_some(socket, chunk))
            .await;
        match sent {
            Ok(n) if n > 0 => rest = &rest[n..],
            Ok(_) => rest = &rest[1..],
            Err(e) => {
                tracing::debug!(to = %rest[0].1, error = %e, "dns: answer not sent");
                rest = &rest[1..];
            }
        }
    }
    let mut kept = lock(outbox);
    if kept.is_empty() {
        // The vector's room serves the next round.
        let mut answers = answers;
        answers.clear();
        *kept = answers;
    }
}

/// One `sendmmsg` of `answers`: how many the kernel took.
fn send_some(socket: &UdpSocket, answers: &[(Vec<u8>, SocketAddr)]) -> io::Result<usize> {
    use nix::sys::socket::{MsgFlags, MultiHeaders, SockaddrStorage, sendmmsg};
    use std::os::fd::AsRawFd;
    let slices: Vec<[io::IoSlice<'_>; 1]> = answers
        .iter()
        .map(|(bytes, _)| [io::IoSlice::new(bytes)])
        .collect();
    let to: Vec<Option<SockaddrStorage>> = answers
        .iter()
        .map(|(_, to)| Some(SockaddrStorage::from(*to)))
        .collect();
    let mut headers = MultiHeaders::<SockaddrStorage>::preallocate(answers.len(), None);
    let sent = sendmmsg(
        socket.as_raw_fd(),
        &mut headers,
        &slices,
        &to,
        [],
        MsgFlags::MSG_DONTWAIT,
    )
    .map_err(io::Error::from)?;
    Ok(sent.count())
}

fn lock(outbox: &Outbox) -> std::sync::MutexGuard<'_, Vec<(Vec<u8>, SocketAddr)>> {
    outbox.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the rate limiter, if there is one, says of an answer to `src`; counted and logged.
fn limit(rrl: &ArcSwapOption<Limiter>, src: SocketAddr) -> Action {
    let guard = rrl.load();
    let Some(limiter) = guard.as_deref() else {
        return Action::Answer;
    };
    let d = limiter.decide(src.ip(), Instant::now());
    let log_only = limiter.config().log_only;
    if let Some(limited) = d.limited {
        crate::metrics::dns_rate_limited(limited == Action::Slip, log_only);
    }
    if let Some(prefix) = d.log {
        tracing::warn!(%prefix, log_only, "dns: answers to this prefix are over the rate limit");
    }
    d.action
}

/// Puts one answer in the round's outbox (sent when the round is done).
#[derive(Clone)]
struct UdpReply {
    outbox: Outbox,
    to: SocketAddr,
}

#[async_trait::async_trait]
impl ResponseHandler for UdpReply {
    async fn send_response<'a>(
        &mut self,
        response: MessageResponse<
            '_,
            'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
            impl Iterator<Item = &'a Record> + Send + 'a,
        >,
    ) -> Result<ResponseInfo, NetError> {
        // The size the client can take over UDP: its EDNS payload size, else 512 bytes (RFC 1035
        // §4.2.1); `destructive_emit` truncates (TC) beyond it.
        let id = response.metadata().id;
        let max = response.edns().map_or(512, |e| e.max_payload());
        let mut bytes = Vec::with_capacity(512);
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(max);
        let info = match response.destructive_emit(&mut encoder) {
            Ok(info) => info,
            Err(error) => {
                tracing::warn!(%error, "dns: cannot encode an answer; SERVFAIL instead");
                bytes.clear();
                servfail(id, &mut bytes)?
            }
        };
        lock(&self.outbox).push((bytes, self.to));
        Ok(info)
    }
}

/// A bare SERVFAIL header for query `id`.
fn servfail(id: u16, bytes: &mut Vec<u8>) -> Result<ResponseInfo, NetError> {
    let mut metadata = Metadata::new(id, MessageType::Response, OpCode::Query);
    metadata.response_code = ResponseCode::ServFail;
    let header = Header {
        metadata,
        counts: HeaderCounts::default(),
    };
    header.emit(&mut BinEncoder::new(bytes))?;
    Ok(ResponseInfo::from(header))
}
