//! The hickory [`RequestHandler`]: one decoded query in, one answer out, counted.
//!
//! hickory's `Catalog` cannot rotate, so this small handler stands in for it. It loads the
//! current [`Zone`] (an `ArcSwap` the server replaces on every rebuild, so a query takes no
//! lock), turns away what the zone never sees (opcodes other than QUERY, not exactly one
//! question, EDNS versions above 0), and lets [`Zone::answer`] decide the rest. It knows nothing
//! of sockets either: TCP reaches it through hickory-server, UDP through `udp`, both with the
//! same `ResponseHandler` interface. Every answer is counted in `DNS_QUERIES` by name, type and
//! rcode.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{Edns, Header, HeaderCounts, Metadata, OpCode, ResponseCode};
use hickory_server::proto::rr::RecordType;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

use super::zone::{Answer, Zone};

/// The largest UDP answer we send to an EDNS client (DNS flag day 2020: no fragmentation).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The hickory request handler: answers from the current [`Zone`].
pub(super) struct Handler {
    zone: Arc<ArcSwap<Zone>>,
}

impl Handler {
    /// A handler that answers from whatever zone `zone` holds at each query.
    pub(super) fn new(zone: Arc<ArcSwap<Zone>>) -> Handler {
        Handler { zone }
    }
}

fn rcode_label(rcode: ResponseCode) -> &'static str {
    match rcode {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::Refused => "REFUSED",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::BADVERS => "BADVERS",
        _ => "OTHER",
    }
}

fn type_label(t: RecordType) -> &'static str {
    match t {
        RecordType::Unknown(_) => "OTHER",
        t => t.into(),
    }
}

/// The EDNS of the answer: version 0, the client's payload size within 512..=1232.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut e = Edns::new();
        e.set_max_payload(req.max_payload().clamp(512, MAX_UDP_PAYLOAD));
        e.set_version(0);
        e
    })
}

/// What `request` gets: an error for what is not one plain query, else the zone's answer.
fn answer_for<'z>(zone: &'z Zone, request: &Request) -> Answer<'z> {
    let queries = request.queries.queries();
    if request.metadata.op_code != OpCode::Query {
        Answer::new(ResponseCode::NotImp, false, "-".into())
    } else if queries.len() != 1 {
        Answer::new(ResponseCode::FormErr, false, "-".into())
    } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        Answer::new(ResponseCode::BADVERS, false, "-".into())
    } else {
        let q = &queries[0];
        zone.answer(q.name(), q.query_type(), q.query_class())
    }
}

/// Counts one answer in `DNS_QUERIES`.
fn count(request: &Request, answer: &Answer<'_>) {
    let queries = request.queries.queries();
    let qtype = queries.first().map_or("-", |q| type_label(q.query_type()));
    metrics::counter!(
        crate::metrics::DNS_QUERIES,
        "name" => answer.label.clone(),
        "type" => qtype,
        "rcode" => rcode_label(answer.rcode),
    )
    .increment(1);
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let zone = self.zone.load_full();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let edns = response_edns(request);
        let answer = answer_for(&zone, request);
        count(request, &answer);
        metadata.authoritative = answer.authoritative;
        metadata.response_code = answer.rcode;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter().copied(),
            answer.authority.iter().copied(),
            std::iter::empty(),
            answer.additional.iter().copied(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "dns: cannot send answer");
                metadata.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header {
                    metadata,
                    counts: HeaderCounts::default(),
                })
            }
        }
    }
}
