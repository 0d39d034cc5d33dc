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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::health_events;
    use crate::tftp::runtime::Runtime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::{Message, MessageType, Query};
    use hickory_server::proto::rr::Name;

    const CONFIG: &str = r#"
[[pool]]
name = "pvs"
[[pool.backend]]
address = "10.0.0.11:69"
[dns]
zone = "boot.test."
[[dns.record]]
name = "ns"
type = "A"
value = "192.0.2.1"
"#;

    fn zone() -> Zone {
        let config = Config::parse(CONFIG).expect("test config parses");
        let runtime = Runtime::new(config, None, &health_events());
        let dns = runtime.config.dns.as_ref().expect("[dns] section");
        Zone::build(dns, &runtime, 1).expect("zone builds").0
    }

    /// A request as the wire brings it: `op` with one A question per name, and EDNS if given
    /// as (version, payload size).
    fn request(op: OpCode, names: &[&str], edns: Option<(u8, u16)>) -> Request {
        let mut m = Message::new(7, MessageType::Query, op);
        for n in names {
            m.add_query(Query::query(Name::from_ascii(n).unwrap(), RecordType::A));
        }
        if let Some((version, size)) = edns {
            let mut e = Edns::new();
            e.set_version(version);
            e.set_max_payload(size);
            m.set_edns(e);
        }
        let bytes = m.to_vec().expect("encodes");
        Request::from_bytes(bytes, "127.0.0.1:5353".parse().unwrap(), Protocol::Udp)
            .expect("decodes")
    }

    #[test]
    fn one_plain_query_is_answered_from_the_zone() {
        let z = zone();
        let a = answer_for(&z, &request(OpCode::Query, &["ns.boot.test."], None));
        assert_eq!(a.rcode, ResponseCode::NoError);
        assert!(a.authoritative);
        assert_eq!(a.answers.len(), 1);
        let a = answer_for(
            &z,
            &request(OpCode::Query, &["ns.boot.test."], Some((0, 1232))),
        );
        assert_eq!(a.rcode, ResponseCode::NoError, "EDNS version 0 is fine");
    }

    #[test]
    fn what_is_not_one_plain_query_is_turned_away() {
        let z = zone();
        for (req, rcode) in [
            (
                request(OpCode::Status, &["ns.boot.test."], None),
                ResponseCode::NotImp,
            ),
            (request(OpCode::Query, &[], None), ResponseCode::FormErr),
            (
                request(OpCode::Query, &["ns.boot.test.", "boot.test."], None),
                ResponseCode::FormErr,
            ),
            (
                request(OpCode::Query, &["ns.boot.test."], Some((1, 1232))),
                ResponseCode::BADVERS,
            ),
        ] {
            let a = answer_for(&z, &req);
            assert_eq!(a.rcode, rcode);
            assert!(!a.authoritative, "{rcode}");
            assert!(a.answers.is_empty() && a.authority.is_empty());
            assert_eq!(&*a.label, "-");
        }
    }

    #[test]
    fn the_answer_edns_is_version_0_within_512_to_1232_bytes() {
        let q = |edns| response_edns(&request(OpCode::Query, &["boot.test."], edns));
        assert!(q(None).is_none(), "no EDNS asked, none given");
        for (asked, given) in [(4096, 1232), (1232, 1232), (1000, 1000), (256, 512)] {
            let e = q(Some((0, asked))).expect("EDNS answered with EDNS");
            assert_eq!(e.max_payload(), given, "asked {asked}");
            assert_eq!(e.version(), 0);
        }
    }

    #[test]
    fn metric_labels() {
        assert_eq!(rcode_label(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_label(ResponseCode::BADVERS), "BADVERS");
        assert_eq!(rcode_label(ResponseCode::YXDomain), "OTHER");
        assert_eq!(type_label(RecordType::AAAA), "AAAA");
        assert_eq!(type_label(RecordType::Unknown(65000)), "OTHER");
    }
}
