//! UDP queries answered by the task that receives them.
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
use std::sync::Arc;
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

/// Largest query accepted; anything longer is not a query for this zone.
const MAX_QUERY: usize = 4096;

/// Answers queries on `socket` until `stop` is cancelled, within the rate limit `rrl` holds.
pub async fn serve(
    socket: UdpSocket,
    handler: Arc<Handler>,
    rrl: Arc<ArcSwapOption<Limiter>>,
    stop: CancellationToken,
) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; MAX_QUERY];
    loop {
        let got = tokio::select! {
            _ = stop.cancelled() => return,
            got = socket.recv_from(&mut buf) => got,
        };
        let (n, src) = match got {
            Ok(got) => got,
            // An earlier answer hit a closed port (ICMP unreachable): nothing to do.
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
            Err(e) => {
                tracing::warn!(error = %e, "dns: udp receive");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        if src.port() == 0 {
            continue;
        }
        let Ok(request) = Request::from_bytes(buf[..n].to_vec(), src, Protocol::Udp) else {
            metrics::counter!(crate::metrics::REQUESTS_REFUSED, "reason" => "dns-malformed")
                .increment(1);
            continue;
        };
        if request.metadata.message_type == MessageType::Response {
            continue;
        }
        let reply = UdpReply {
            socket: socket.clone(),
            to: src,
        };
        match limit(&rrl, src) {
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

/// Sends one answer straight from the receiving socket.
#[derive(Clone)]
struct UdpReply {
    socket: Arc<UdpSocket>,
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
        self.socket.send_to(&bytes, self.to).await?;
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
