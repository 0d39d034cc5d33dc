//! The hickory [`RequestHandler`]: one decoded query in, one answer out, counted.
//!
//! hickory's `Catalog` cannot rotate, so this small handler stands in for it. It loads the
//! current [`Zone`] (an `ArcSwap` the server replaces on every rebuild, so a query takes no
//! lock), turns away what the zone never sees, and lets [`Zone::answer`] decide the rest. It
//! knows nothing of sockets either: TCP reaches it through hickory-server, UDP through `udp`,
//! both with the same `ResponseHandler` interface. Every answer is counted in `DNS_QUERIES` by
//! name, type and rcode.
//!
//! Turned away, as NSD and Knot do, with as little as the answer needs:
//! - an opcode other than QUERY (NOTIFY, UPDATE, …): NOTIMP, a bare header that echoes the ID
//!   and opcode and no flag (not RD, CD, AD or TC: nothing of the request is claimed);
//! - a TSIG-signed request: this zone has no keys, so every key is unknown: NOTAUTH with an
//!   unsigned TSIG whose error is BADKEY (RFC 8945 §5.2.1), never an answer as if unsigned; a
//!   TSIG that is not the last record is FORMERR;
//! - not exactly one question: FORMERR; an EDNS version above 0: BADVERS.

use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_server::net::runtime::Time;
use hickory_server::proto::op::{
    Edns, Header, HeaderCounts, MessageType, Metadata, OpCode, ResponseCode,
};
use hickory_server::proto::rr::rdata::TSIG;
use hickory_server::proto::rr::rdata::tsig::{TsigError, make_tsig_record};
use hickory_server::proto::rr::{Name, RData, Record, RecordType};
use hickory_server::proto::serialize::binary::BinDecoder;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::{MessageResponse, MessageResponseBuilder, Queries};

use super::zone::{Answer, Zone};

/// The largest UDP answer we send to an EDNS client (DNS flag day 2020: no fragmentation).
const MAX_UDP_PAYLOAD: u16 = 1232;

/// The hickory request handler: answers from the current [`Zone`].
pub(super) struct Handler {
    zone: Arc<ArcSwap<Zone>>,
    /// An empty question section, for answers that echo none.
    no_queries: Queries,
}

impl Handler {
    /// A handler that answers from whatever zone `zone` holds at each query.
    pub(super) fn new(zone: Arc<ArcSwap<Zone>>) -> Handler {
        let no_queries =
            Queries::read(&mut BinDecoder::new(&[]), 0).expect("an empty question section decodes");
        Handler { zone, no_queries }
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
        ResponseCode::NotAuth => "NOTAUTH",
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

/// The answer to an opcode other than QUERY: NOTIMP, no flag of the request echoed.
pub(super) fn not_implemented(request: &Metadata) -> Metadata {
    let mut m = Metadata::new(request.id, MessageType::Response, request.op_code);
    m.response_code = ResponseCode::NotImp;
    m
}

/// The TSIG a request is signed with: its key name and data, if it is the last record of the
/// additional section; `Err` if a TSIG is anywhere else (a malformed request).
fn tsig_of(request: &Request) -> Result<Option<(&Name, &TSIG)>, ()> {
    let last = request.additionals.len().saturating_sub(1);
    for (i, r) in request.additionals.iter().enumerate() {
        if let RData::TSIG(tsig) = &r.data {
            return if i == last {
                Ok(Some((&r.name, tsig)))
            } else {
                Err(())
            };
        }
    }
    Ok(None)
}

/// The unsigned TSIG of a BADKEY answer: the request's key name, algorithm, time and original
/// ID, no MAC (RFC 8945 §5.3.2: an error about the key is never signed).
fn bad_key(key: &Name, tsig: &TSIG) -> Box<Record<TSIG>> {
    let data = TSIG::new(
        tsig.algorithm.clone(),
        tsig.time,
        tsig.fudge,
        Vec::new(),
        tsig.oid,
        Some(TsigError::BadKey),
        Vec::new(),
    );
    Box::new(make_tsig_record(key.clone(), data))
}

/// What `request` gets: an error for what is not one plain query, else the zone's answer.
/// (Opcodes and TSIG are turned away before, by `handle_request`.)
fn answer_for<'z>(zone: &'z Zone, request: &Request) -> Answer<'z> {
    let queries = request.queries.queries();
    if request.metadata.op_code != OpCode::Query {
        Answer::new(ResponseCode::NotImp, false, "-".into())
    } else if queries.len() != 1 || tsig_of(request).is_err() {
        Answer::new(ResponseCode::FormErr, false, "-".into())
    } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
        Answer::new(ResponseCode::BADVERS, false, "-".into())
    } else {
        let q = &queries[0];
        zone.answer(q.name(), q.query_type(), q.query_class())
    }
}

/// Counts one answer in `DNS_QUERIES`.
fn count(request: &Request, label: Arc<str>, rcode: ResponseCode) {
    let queries = request.queries.queries();
    let qtype = queries.first().map_or("-", |q| type_label(q.query_type()));
    metrics::counter!(
        crate::metrics::DNS_QUERIES,
        "name" => label,
        "type" => qtype,
        "rcode" => rcode_label(rcode),
    )
    .increment(1);
}

/// Sends `response`; if that fails, what the caller is told is a SERVFAIL.
async fn send<'a, R, A, N, S, D>(
    mut handle: R,
    response: MessageResponse<'_, 'a, A, N, S, D>,
) -> ResponseInfo
where
    R: ResponseHandler,
    A: Iterator<Item = &'a Record> + Send + 'a,
    N: Iterator<Item = &'a Record> + Send + 'a,
    S: Iterator<Item = &'a Record> + Send + 'a,
    D: Iterator<Item = &'a Record> + Send + 'a,
{
    let mut metadata = *response.metadata();
    match handle.send_response(response).await {
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

impl Handler {
    /// The truncated answer a rate-limited query may get instead of none (a "slip"): the
    /// header with TC set and the question, no records, so a resolver retries over TCP.
    pub(super) async fn slip<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        let (mut metadata, queries) = if request.metadata.op_code == OpCode::Query {
            let m = Metadata::response_from_request(&request.metadata);
            (m, &request.queries)
        } else {
            (not_implemented(&request.metadata), &self.no_queries)
        };
        metadata.truncation = true;
        let edns = response_edns(request);
        let response =
            MessageResponseBuilder::new(queries, edns.as_ref()).build_no_records(metadata);
        send(handle, response).await
    }

    /// NOTIMP for an opcode other than QUERY: a bare header.
    async fn not_implemented<R: ResponseHandler>(
        &self,
        request: &Request,
        handle: R,
    ) -> ResponseInfo {
        count(request, "-".into(), ResponseCode::NotImp);
        let response = MessageResponseBuilder::new(&self.no_queries, None)
            .build_no_records(not_implemented(&request.metadata));
        send(handle, response).await
    }

    /// NOTAUTH with a BADKEY TSIG for a request signed with a key this zone does not have.
    async fn unknown_key<R: ResponseHandler>(
        &self,
        request: &Request,
        key: &Name,
        tsig: &TSIG,
        handle: R,
    ) -> ResponseInfo {
        count(request, "-".into(), ResponseCode::NotAuth);
        let edns = response_edns(request);
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.response_code = ResponseCode::NotAuth;
        let mut response =
            MessageResponseBuilder::new(&self.no_queries, edns.as_ref()).build_no_records(metadata);
        response.set_signature(bad_key(key, tsig));
        send(handle, response).await
    }
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        response_handle: R,
    ) -> ResponseInfo {
        if request.metadata.op_code != OpCode::Query {
            return self.not_implemented(request, response_handle).await;
        }
        if let Ok(Some((key, tsig))) = tsig_of(request) {
            return self.unknown_key(request, key, tsig, response_handle).await;
        }
        let zone = self.zone.load_full();
        let mut metadata = Metadata::response_from_request(&request.metadata);
        let edns = response_edns(request);
        let answer = answer_for(&zone, request);
        count(request, answer.label.clone(), answer.rcode);
        metadata.authoritative = answer.authoritative;
        metadata.response_code = answer.rcode;
        let response = MessageResponseBuilder::new(&request.queries, edns.as_ref()).build(
            metadata,
            answer.answers.iter().copied(),
            answer.authority.iter().copied(),
            std::iter::empty(),
            answer.additional.iter().copied(),
        );
        send(response_handle, response).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::health_events;
    use crate::tftp::runtime::Runtime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::proto::op::{Message, Query};
    use hickory_server::proto::rr::DNSClass;
    use hickory_server::proto::rr::rdata::tsig::TsigAlgorithm;

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
        decoded(message(op, names, edns))
    }

    fn decoded(m: Message) -> Request {
        let bytes = m.to_vec().expect("encodes");
        Request::from_bytes(bytes, "127.0.0.1:5353".parse().unwrap(), Protocol::Udp)
            .expect("decodes")
    }

    /// A TSIG record as a client signing with key `key` sends it.
    fn tsig_record(key: &str) -> Record {
        let data = TSIG::new(
            TsigAlgorithm::HmacSha256,
            1_700_000_000,
            300,
            vec![0xab; 32],
            7,
            None,
            Vec::new(),
        );
        let mut r = Record::from_rdata(Name::from_ascii(key).unwrap(), 0, RData::TSIG(data));
        r.dns_class = DNSClass::ANY;
        r
    }

    fn message(op: OpCode, names: &[&str], edns: Option<(u8, u16)>) -> Message {
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
        m
    }

    #[test]
    fn notimp_echoes_the_id_and_opcode_and_no_flag() {
        for op in [
            OpCode::Notify,
            OpCode::Update,
            OpCode::Status,
            OpCode::Unknown(3),
        ] {
            let mut asked = Metadata::new(99, MessageType::Query, op);
            asked.recursion_desired = true;
            asked.checking_disabled = true;
            asked.authentic_data = true;
            asked.truncation = true;
            let m = not_implemented(&asked);
            assert_eq!((m.id, m.op_code), (99, op));
            assert_eq!(m.message_type, MessageType::Response);
            assert_eq!(m.response_code, ResponseCode::NotImp);
            let mut expected = Metadata::new(99, MessageType::Response, op);
            expected.response_code = ResponseCode::NotImp;
            assert_eq!(m, expected, "no flag at all");
        }
    }

    #[test]
    fn a_tsig_is_found_only_as_the_last_record() {
        let unsigned = request(OpCode::Query, &["ns.boot.test."], Some((0, 1232)));
        assert!(matches!(tsig_of(&unsigned), Ok(None)));

        let mut m = message(OpCode::Query, &["ns.boot.test."], Some((0, 1232)));
        m.add_additional(tsig_record("Key.Example."));
        let signed = decoded(m);
        let (key, tsig) = tsig_of(&signed).expect("well placed").expect("signed");
        assert_eq!(key.to_ascii(), "Key.Example.");
        let reply = bad_key(key, tsig);
        assert_eq!(reply.name, *key);
        assert_eq!((reply.dns_class, reply.ttl), (DNSClass::ANY, 0));
        assert_eq!(reply.data.error, Some(TsigError::BadKey));
        assert!(
            reply.data.mac.is_empty(),
            "an error about the key is never signed"
        );
        assert_eq!(
            (reply.data.time, reply.data.fudge, reply.data.oid),
            (1_700_000_000, 300, 7)
        );
        assert_eq!(reply.data.algorithm, TsigAlgorithm::HmacSha256);

        let mut m = message(OpCode::Query, &["ns.boot.test."], None);
        m.add_additional(tsig_record("key."));
        m.add_additional(Record::from_rdata(
            Name::from_ascii("x.").unwrap(),
            1,
            RData::A(std::net::Ipv4Addr::new(192, 0, 2, 1).into()),
        ));
        let misplaced = decoded(m);
        assert!(tsig_of(&misplaced).is_err());
        assert_eq!(answer_for(&zone(), &misplaced).rcode, ResponseCode::FormErr);
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
