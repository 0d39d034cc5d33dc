//! The zone as data: every answer a query can get, prebuilt from the configuration and the
//! current health, and the choice of answer for one question.
//!
//! Pure on purpose: no sockets, no tasks, no clock. A [`Zone`] is built from a [`DnsConfig`]
//! and a [`Runtime`] (whose pools carry the live health) and then only read; the server swaps
//! in a new one when something changes. So the authoritative rules (AA, NXDOMAIN and NODATA
//! with the SOA, REFUSED outside the zone, the rotation of a balanced name, CNAME chasing and
//! glue, ANY answered with one RRset as RFC 8482 allows, so it amplifies no more than A) are
//! tested here by asking [`Zone::answer`] directly. Which addresses a balanced name
//! holds and in what orders is [`select`]'s policy; this file turns it into records.
//!
//! A query takes no lock: it looks the name up in a hash map and, for a balanced name, bumps
//! one atomic to pick the next prebuilt rotation order.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use hickory_server::proto::op::ResponseCode;
use hickory_server::proto::rr::rdata::{A, AAAA, CNAME, NS, SOA, TXT};
use hickory_server::proto::rr::{DNSClass, LowerName, Name, RData, Record, RecordType};

use super::config::{DnsConfig, RecordData};
use super::select::{self, Outcome, Selection};
use crate::tftp::runtime::Runtime;

/// A prebuilt snapshot of the zone: every answer a query can get, ready to send.
#[derive(Debug)]
pub struct Zone {
    origin: LowerName,
    /// The SOA with the negative TTL, for NXDOMAIN and NODATA answers.
    soa_negative: Record,
    nodes: HashMap<LowerName, Node>,
}

#[derive(Debug, Default)]
struct Node {
    /// The configured name, as the metrics label.
    label: Arc<str>,
    sets: Vec<RrSet>,
    /// A balanced name with nothing to answer (`when_all_down = "servfail"`, or nothing probed).
    servfail: bool,
}

impl Node {
    /// The one RRset an ANY query gets (RFC 8482 §4.1): the addresses, as a boot client asking
    /// ANY wants them, else the first set the name has.
    fn minimal_any(&self) -> Option<&RrSet> {
        let of = |t: RecordType| self.sets.iter().find(|s| s.rtype == t);
        of(RecordType::A)
            .or_else(|| of(RecordType::AAAA))
            .or_else(|| self.sets.first())
    }
}

#[derive(Debug)]
struct RrSet {
    rtype: RecordType,
    records: Vec<Record>,
    rotation: Option<Rotation>,
}

/// Prebuilt answer orders of a balanced RRset and the atomic that picks the next one.
#[derive(Debug)]
struct Rotation {
    orders: Vec<Box<[u16]>>,
    next: AtomicUsize,
}

impl RrSet {
    fn fixed(rtype: RecordType, records: Vec<Record>) -> RrSet {
        RrSet {
            rtype,
            records,
            rotation: None,
        }
    }

    /// The records of this answer: the next rotation for a balanced set, all for a static one.
    fn push_answer<'z>(&'z self, out: &mut Vec<&'z Record>) {
        match &self.rotation {
            Some(r) if !r.orders.is_empty() => {
                let k = r.next.fetch_add(1, Ordering::Relaxed) % r.orders.len();
                out.extend(r.orders[k].iter().map(|&i| &self.records[usize::from(i)]));
            }
            _ => out.extend(self.records.iter()),
        }
    }
}

/// What the zone says to one question.
#[derive(Debug)]
pub struct Answer<'z> {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<&'z Record>,
    pub authority: Vec<&'z Record>,
    pub additional: Vec<&'z Record>,
    /// The metrics label: the configured name, or `nxdomain` / `outside`.
    pub label: Arc<str>,
}

impl<'z> Answer<'z> {
    pub(super) fn new(rcode: ResponseCode, authoritative: bool, label: Arc<str>) -> Answer<'z> {
        Answer {
            rcode,
            authoritative,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            label,
        }
    }
}

/// What a balanced name answers right now, for the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameState {
    pub name: String,
    pub selection: Selection,
}

fn name(text: &str) -> io::Result<Name> {
    Name::from_ascii(text).map_err(|e| io::Error::other(format!("{text}: {e}")))
}

fn secs(d: Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX).max(1)
}

impl Zone {
    /// Builds the zone of `cfg` with the balanced names answered from `runtime`'s health.
    pub fn build(
        cfg: &DnsConfig,
        runtime: &Runtime,
        serial: u32,
    ) -> io::Result<(Zone, Vec<NameState>)> {
        let origin = name(&cfg.zone)?;
        let ttl = secs(cfg.ttl);
        let negative = secs(cfg.negative_ttl);
        let first_ns = name(&cfg.nameservers[0])?;
        let soa_data = SOA::new(
            first_ns,
            name(&cfg.hostmaster)?,
            serial,
            3600,
            600,
            86400,
            negative,
        );
        let soa = Record::from_rdata(origin.clone(), ttl, RData::SOA(soa_data.clone()));
        // RFC 2308 §3: the SOA of a negative answer carries min(SOA TTL, SOA minimum).
        let soa_negative =
            Record::from_rdata(origin.clone(), ttl.min(negative), RData::SOA(soa_data));
        let ns = cfg
            .nameservers
            .iter()
            .map(|n| {
                Ok(Record::from_rdata(
                    origin.clone(),
                    ttl,
                    RData::NS(NS(name(n)?)),
                ))
            })
            .collect::<io::Result<Vec<_>>>()?;
        let mut zone = Zone {
            origin: LowerName::new(&origin),
            soa_negative,
            nodes: HashMap::new(),
        };
        let apex = zone.node(&origin);
        apex.sets.push(RrSet::fixed(RecordType::SOA, vec![soa]));
        apex.sets.push(RrSet::fixed(RecordType::NS, ns));
        zone.add_static(cfg)?;
        let states = zone.add_balanced(cfg, runtime)?;
        zone.add_empty_non_terminals();
        Ok((zone, states))
    }

    /// Gives the SOA (at the apex and in negative answers) the serial `serial`.
    pub fn set_serial(&mut self, serial: u32) {
        let apex = self.nodes.get_mut(&self.origin).into_iter();
        let soas = apex
            .flat_map(|n| n.sets.iter_mut())
            .filter(|s| s.rtype == RecordType::SOA)
            .flat_map(|s| s.records.iter_mut());
        for r in soas.chain(std::iter::once(&mut self.soa_negative)) {
            if let RData::SOA(soa) = &mut r.data {
                soa.serial = serial;
            }
        }
    }

    fn node(&mut self, owner: &Name) -> &mut Node {
        self.nodes
            .entry(LowerName::new(owner))
            .or_insert_with(|| Node {
                label: owner.to_lowercase().to_ascii().into(),
                ..Node::default()
            })
    }

    fn add_static(&mut self, cfg: &DnsConfig) -> io::Result<()> {
        for r in &cfg.records {
            let owner = name(&r.name)?;
            let data = match &r.data {
                RecordData::A(ip) => RData::A(A(*ip)),
                RecordData::Aaaa(ip) => RData::AAAA(AAAA(*ip)),
                RecordData::Cname(target) => RData::CNAME(CNAME(name(target)?)),
                RecordData::Txt(text) => RData::TXT(TXT::new(vec![text.clone()])),
            };
            let record = Record::from_rdata(owner.clone(), secs(r.ttl), data);
            let rtype = record.record_type();
            let node = self.node(&owner);
            match node.sets.iter_mut().find(|s| s.rtype == rtype) {
                Some(set) => set.records.push(record),
                None => node.sets.push(RrSet::fixed(rtype, vec![record])),
            }
        }
        Ok(())
    }

    fn add_balanced(&mut self, cfg: &DnsConfig, runtime: &Runtime) -> io::Result<Vec<NameState>> {
        let mut states = Vec::with_capacity(cfg.names.len());
        for n in &cfg.names {
            let owner = name(&n.name)?;
            let members = select::members(n, runtime);
            let selection = select::select(&members, n.when_all_down, &n.fallback);
            let ttl = secs(if selection.degraded {
                cfg.degraded_ttl
            } else {
                cfg.ttl
            });
            let node = self.node(&owner);
            node.servfail = selection.outcome == Outcome::ServFail;
            for v6 in [false, true] {
                let family: Vec<(IpAddr, u32)> = selection
                    .addrs
                    .iter()
                    .copied()
                    .filter(|(ip, _)| ip.is_ipv6() == v6)
                    .collect();
                if !family.is_empty() {
                    node.sets
                        .push(balanced_set(&owner, &family, ttl, cfg.max_answers));
                }
            }
            states.push(NameState {
                name: n.name.clone(),
                selection,
            });
        }
        Ok(states)
    }

    /// Names between the apex and an owner exist (NODATA, not NXDOMAIN: RFC 8020).
    fn add_empty_non_terminals(&mut self) {
        let owners: Vec<LowerName> = self.nodes.keys().cloned().collect();
        for owner in owners {
            let mut n = owner.base_name();
            while self.origin.zone_of(&n) && n != self.origin {
                let label: Arc<str> = n.to_string().into();
                self.nodes.entry(n.clone()).or_insert_with(|| Node {
                    label,
                    ..Node::default()
                });
                n = n.base_name();
            }
        }
    }

    /// Answers one question.
    pub fn answer(&self, qname: &LowerName, qtype: RecordType, qclass: DNSClass) -> Answer<'_> {
        if !self.origin.zone_of(qname) {
            return Answer::new(ResponseCode::Refused, false, "outside".into());
        }
        if !matches!(qclass, DNSClass::IN | DNSClass::ANY)
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            return Answer::new(ResponseCode::Refused, false, "refused".into());
        }
        let Some(node) = self.nodes.get(qname) else {
            let mut a = Answer::new(ResponseCode::NXDomain, true, "nxdomain".into());
            a.authority.push(&self.soa_negative);
            return a;
        };
        let mut a = Answer::new(ResponseCode::NoError, true, node.label.clone());
        let address = matches!(qtype, RecordType::A | RecordType::AAAA | RecordType::ANY);
        if node.servfail && address {
            a.rcode = ResponseCode::ServFail;
            return a;
        }
        let cname = node.sets.iter().find(|s| s.rtype == RecordType::CNAME);
        match cname {
            Some(set) if qtype == RecordType::ANY => set.push_answer(&mut a.answers),
            Some(set) if qtype != RecordType::CNAME => {
                set.push_answer(&mut a.answers);
                self.chase(&set.records[0], qtype, &mut a.answers);
            }
            _ if qtype == RecordType::ANY => {
                if let Some(set) = node.minimal_any() {
                    set.push_answer(&mut a.answers);
                }
            }
            _ => node
                .sets
                .iter()
                .filter(|s| s.rtype == qtype)
                .for_each(|s| s.push_answer(&mut a.answers)),
        }
        if a.answers.is_empty() {
            a.authority.push(&self.soa_negative);
        } else if qtype == RecordType::NS {
            self.glue(&a.answers.clone(), &mut a.additional);
        }
        a
    }

    /// Follows a CNAME one step inside the zone.
    fn chase<'z>(&'z self, cname: &Record, qtype: RecordType, out: &mut Vec<&'z Record>) {
        let RData::CNAME(target) = &cname.data else {
            return;
        };
        if let Some(node) = self.nodes.get(&LowerName::new(&target.0)) {
            node.sets
                .iter()
                .filter(|s| s.rtype == qtype)
                .for_each(|s| s.push_answer(out));
        }
    }

    /// Addresses of in-zone name servers, for the additional section.
    fn glue<'z>(&'z self, ns: &[&'z Record], out: &mut Vec<&'z Record>) {
        for r in ns {
            if let RData::NS(NS(target)) = &r.data
                && let Some(node) = self.nodes.get(&LowerName::new(target))
            {
                node.sets
                    .iter()
                    .filter(|s| matches!(s.rtype, RecordType::A | RecordType::AAAA))
                    .for_each(|s| out.extend(s.records.iter()));
            }
        }
    }
}

/// A rotating RRset: records in configuration order, and one prebuilt order per start position.
fn balanced_set(owner: &Name, addrs: &[(IpAddr, u32)], ttl: u32, max: usize) -> RrSet {
    let records: Vec<Record> = addrs
        .iter()
        .map(|(ip, _)| {
            let data = match ip {
                IpAddr::V4(v4) => RData::A(A(*v4)),
                IpAddr::V6(v6) => RData::AAAA(AAAA(*v6)),
            };
            Record::from_rdata(owner.clone(), ttl, data)
        })
        .collect();
    let weights: Vec<u32> = addrs.iter().map(|(_, w)| *w).collect();
    let sequence = select::rotation(&weights);
    let orders = (0..sequence.len())
        .map(|start| {
            select::answer_order(&sequence, records.len(), start, max)
                .into_iter()
                .map(|i| i as u16)
                .collect()
        })
        .collect();
    RrSet {
        rtype: records[0].record_type(),
        records,
        rotation: Some(Rotation {
            orders,
            next: AtomicUsize::new(0),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::health::health_events;

    /// Three backends that start Up (no `[pool.health]`), one pool whose only backend has not
    /// been probed yet, and a zone with one static record of each kind.
    const CONFIG: &str = r#"
[[pool]]
name = "pvs"
[[pool.backend]]
address = "10.0.0.11:69"
[[pool.backend]]
address = "10.0.0.12:69"
[[pool.backend]]
address = "10.0.0.13:69"

[[pool]]
name = "unprobed"
[pool.health]
file = "probe.bin"
[[pool.backend]]
address = "10.0.1.11:69"

[dns]
zone = "Boot.Test."
ttl = "10s"
negative_ttl = "4s"
nameservers = ["ns", "ns.elsewhere.example."]
[[dns.name]]
name = "pvs"
pool = "pvs"
[[dns.name]]
name = "dark"
pool = "unprobed"
[[dns.record]]
name = "ns"
type = "A"
value = "192.0.2.1"
[[dns.record]]
name = "www"
type = "CNAME"
value = "pvs"
[[dns.record]]
name = "old"
type = "CNAME"
value = "www"
[[dns.record]]
name = "info"
type = "TXT"
value = "tftplb test zone"
[[dns.record]]
name = "v6.deep"
type = "AAAA"
value = "2001:db8::1"
"#;

    const SERIAL: u32 = 7;

    /// The zone of [`CONFIG`] with a fresh runtime, and what its balanced names answer.
    fn build() -> (Zone, Vec<NameState>) {
        let config = Config::parse(CONFIG).expect("test config parses");
        let runtime = Runtime::new(config, None, &health_events());
        let dns = runtime.config.dns.as_ref().expect("[dns] section");
        Zone::build(dns, &runtime, SERIAL).expect("zone builds")
    }

    fn zone() -> Zone {
        build().0
    }

    fn ask<'z>(zone: &'z Zone, name: &str, qtype: RecordType) -> Answer<'z> {
        ask_class(zone, name, qtype, DNSClass::IN)
    }

    fn ask_class<'z>(zone: &'z Zone, name: &str, qtype: RecordType, class: DNSClass) -> Answer<'z> {
        let qname = LowerName::new(&Name::from_ascii(name).expect("valid name"));
        zone.answer(&qname, qtype, class)
    }

    /// The records of a section as `TYPE data`, in order.
    fn texts(records: &[&Record]) -> Vec<String> {
        records
            .iter()
            .map(|r| format!("{} {}", r.record_type(), r.data))
            .collect()
    }

    fn answered(answer: &Answer<'_>) -> Vec<String> {
        texts(&answer.answers)
    }

    /// A negative answer: no records, the SOA in authority with the negative TTL.
    fn assert_negative(a: &Answer<'_>, rcode: ResponseCode) {
        assert_eq!(a.rcode, rcode);
        assert!(a.authoritative);
        assert!(a.answers.is_empty(), "{:?}", a.answers);
        assert_eq!(a.authority.len(), 1);
        assert_eq!(a.authority[0].record_type(), RecordType::SOA);
        assert_eq!(a.authority[0].ttl, 4, "min(SOA TTL, SOA minimum)");
    }

    #[test]
    fn the_apex_answers_soa_and_ns_authoritatively() {
        let z = zone();
        let soa = ask(&z, "boot.test.", RecordType::SOA);
        assert_eq!(soa.rcode, ResponseCode::NoError);
        assert!(soa.authoritative);
        assert_eq!(soa.answers.len(), 1);
        let RData::SOA(data) = &soa.answers[0].data else {
            panic!("not an SOA: {:?}", soa.answers[0]);
        };
        assert_eq!(data.serial, SERIAL);
        assert_eq!(data.mname.to_ascii(), "ns.boot.test.");
        assert_eq!(data.rname.to_ascii(), "hostmaster.boot.test.");
        assert_eq!(soa.answers[0].ttl, 10);
        assert!(soa.authority.is_empty());

        let ns = ask(&z, "boot.test.", RecordType::NS);
        assert_eq!(ns.rcode, ResponseCode::NoError);
        assert!(ns.authoritative);
        assert_eq!(
            answered(&ns),
            ["NS ns.boot.test.", "NS ns.elsewhere.example."]
        );
    }

    #[test]
    fn a_new_serial_reaches_the_apex_soa_and_negative_answers() {
        let mut z = zone();
        z.set_serial(42);
        let serial = |r: &Record| match &r.data {
            RData::SOA(soa) => soa.serial,
            other => panic!("not an SOA: {other:?}"),
        };
        let soa = ask(&z, "boot.test.", RecordType::SOA);
        assert_eq!(serial(soa.answers[0]), 42);
        let nx = ask(&z, "nope.boot.test.", RecordType::A);
        assert_eq!(serial(nx.authority[0]), 42);
    }

    #[test]
    fn in_zone_name_servers_come_with_glue() {
        let z = zone();
        let ns = ask(&z, "boot.test.", RecordType::NS);
        // ns.elsewhere.example. is outside the zone: no address of ours to add.
        assert_eq!(texts(&ns.additional), ["A 192.0.2.1"]);
        let soa = ask(&z, "boot.test.", RecordType::SOA);
        assert!(soa.additional.is_empty());
    }

    #[test]
    fn an_unknown_name_is_nxdomain_with_the_soa() {
        let z = zone();
        let a = ask(&z, "nope.boot.test.", RecordType::A);
        assert_negative(&a, ResponseCode::NXDomain);
        assert_eq!(&*a.label, "nxdomain");
        // Below an existing name, still nothing.
        assert_negative(
            &ask(&z, "x.pvs.boot.test.", RecordType::A),
            ResponseCode::NXDomain,
        );
    }

    #[test]
    fn another_type_and_an_empty_non_terminal_are_nodata() {
        let z = zone();
        let txt = ask(&z, "info.boot.test.", RecordType::A);
        assert_negative(&txt, ResponseCode::NoError);
        assert_eq!(&*txt.label, "info.boot.test.");
        assert_negative(
            &ask(&z, "pvs.boot.test.", RecordType::TXT),
            ResponseCode::NoError,
        );
        // deep.boot.test. has no records of its own, but v6.deep.boot.test. does (RFC 8020).
        assert_negative(
            &ask(&z, "deep.boot.test.", RecordType::A),
            ResponseCode::NoError,
        );
        assert_negative(
            &ask(&z, "deep.boot.test.", RecordType::AAAA),
            ResponseCode::NoError,
        );
        assert_eq!(
            answered(&ask(&z, "v6.deep.boot.test.", RecordType::AAAA)),
            ["AAAA 2001:db8::1"]
        );
    }

    #[test]
    fn outside_the_zone_transfers_and_other_classes_are_refused() {
        let z = zone();
        for (name, qtype, class, label) in [
            ("example.com.", RecordType::A, DNSClass::IN, "outside"),
            ("test.", RecordType::SOA, DNSClass::IN, "outside"),
            ("boot.test.", RecordType::AXFR, DNSClass::IN, "refused"),
            ("boot.test.", RecordType::IXFR, DNSClass::IN, "refused"),
            ("pvs.boot.test.", RecordType::A, DNSClass::CH, "refused"),
        ] {
            let a = ask_class(&z, name, qtype, class);
            assert_eq!(a.rcode, ResponseCode::Refused, "{name} {qtype} {class}");
            assert!(!a.authoritative, "{name} {qtype} {class}");
            assert!(a.answers.is_empty() && a.authority.is_empty());
            assert_eq!(&*a.label, label);
        }
        // Class ANY is answered like IN.
        let any = ask_class(&z, "ns.boot.test.", RecordType::A, DNSClass::ANY);
        assert_eq!(any.rcode, ResponseCode::NoError);
        assert_eq!(answered(&any), ["A 192.0.2.1"]);
    }

    #[test]
    fn names_are_looked_up_without_regard_to_case() {
        let z = zone();
        let upper = ask(&z, "NS.Boot.TEST.", RecordType::A);
        assert_eq!(upper.rcode, ResponseCode::NoError);
        assert!(upper.authoritative);
        assert_eq!(answered(&upper), ["A 192.0.2.1"]);
        assert_eq!(&*upper.label, "ns.boot.test.");
        assert_eq!(
            ask(&z, "PvS.bOOt.test.", RecordType::A).answers.len(),
            3,
            "a balanced name too"
        );
    }

    #[test]
    fn a_balanced_name_rotates_by_one_per_query() {
        let z = zone();
        let firsts: Vec<String> = (0..4)
            .map(|_| {
                let a = ask(&z, "pvs.boot.test.", RecordType::A);
                assert_eq!(a.rcode, ResponseCode::NoError);
                assert!(a.authoritative);
                assert_eq!(a.answers.len(), 3, "every healthy backend");
                assert!(a.answers.iter().all(|r| r.ttl == 10));
                a.answers[0].data.to_string()
            })
            .collect();
        assert_eq!(firsts, ["10.0.0.11", "10.0.0.12", "10.0.0.13", "10.0.0.11"]);
        let a = ask(&z, "pvs.boot.test.", RecordType::A);
        assert_eq!(
            answered(&a),
            ["A 10.0.0.12", "A 10.0.0.13", "A 10.0.0.11"],
            "the whole order turns, not only the first place"
        );
    }

    #[test]
    fn a_balanced_name_with_nothing_to_answer_is_servfail() {
        let (z, states) = build();
        let dark = states
            .iter()
            .find(|s| s.name == "dark.boot.test.")
            .expect("state of dark");
        assert_eq!(dark.selection.outcome, Outcome::ServFail);
        for qtype in [RecordType::A, RecordType::AAAA, RecordType::ANY] {
            let a = ask(&z, "dark.boot.test.", qtype);
            assert_eq!(a.rcode, ResponseCode::ServFail, "{qtype}");
            assert!(a.answers.is_empty() && a.authority.is_empty());
            assert_eq!(&*a.label, "dark.boot.test.");
        }
        // Only the addresses are missing: the name exists, other types are NODATA.
        assert_negative(
            &ask(&z, "dark.boot.test.", RecordType::TXT),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn any_gets_one_rrset() {
        let z = zone();
        let apex = ask(&z, "boot.test.", RecordType::ANY);
        assert_eq!(apex.rcode, ResponseCode::NoError);
        assert!(apex.authoritative);
        assert_eq!(answered(&apex).len(), 1, "the SOA only, not SOA and NS");
        assert_eq!(apex.answers[0].record_type(), RecordType::SOA);
        assert!(apex.additional.is_empty());
        let pvs = ask(&z, "pvs.boot.test.", RecordType::ANY);
        assert_eq!(pvs.answers.len(), 3);
        assert!(pvs.answers.iter().all(|r| r.record_type() == RecordType::A));
        assert_eq!(
            answered(&ask(&z, "www.boot.test.", RecordType::ANY)),
            ["CNAME pvs.boot.test."],
            "the CNAME, not chased"
        );
        assert_eq!(
            answered(&ask(&z, "info.boot.test.", RecordType::ANY)),
            ["TXT tftplb test zone"]
        );
        assert_negative(
            &ask(&z, "deep.boot.test.", RecordType::ANY),
            ResponseCode::NoError,
        );
    }

    #[test]
    fn any_prefers_the_addresses_of_a_name_with_several_sets() {
        let config = Config::parse(&CONFIG.replace("name = \"info\"", "name = \"pvs\""))
            .expect("a TXT beside a balanced name is allowed");
        let runtime = Runtime::new(config, None, &health_events());
        let dns = runtime.config.dns.as_ref().expect("[dns] section");
        let (z, _) = Zone::build(dns, &runtime, SERIAL).expect("zone builds");
        assert_eq!(ask(&z, "pvs.boot.test.", RecordType::TXT).answers.len(), 1);
        let any = ask(&z, "pvs.boot.test.", RecordType::ANY);
        assert_eq!(any.answers.len(), 3, "{:?}", answered(&any));
        assert!(any.answers.iter().all(|r| r.record_type() == RecordType::A));
    }

    #[test]
    fn a_cname_is_chased_one_step_inside_the_zone() {
        let z = zone();
        let www = ask(&z, "www.boot.test.", RecordType::A);
        assert_eq!(www.rcode, ResponseCode::NoError);
        assert!(www.authoritative);
        let got = answered(&www);
        assert_eq!(got[0], "CNAME pvs.boot.test.");
        assert_eq!(got.len(), 4, "the CNAME and the three addresses: {got:?}");
        assert!(got[1..].iter().all(|r| r.starts_with("A 10.0.0.1")));
        // Asked for the CNAME itself: only the CNAME.
        assert_eq!(
            answered(&ask(&z, "www.boot.test.", RecordType::CNAME)),
            ["CNAME pvs.boot.test."]
        );
        // One step only: old -> www is given, www -> pvs is left to the resolver.
        for qtype in [RecordType::A, RecordType::ANY] {
            assert_eq!(
                answered(&ask(&z, "old.boot.test.", qtype)),
                ["CNAME www.boot.test."],
                "{qtype}"
            );
        }
        // The target has no record of the asked type: the CNAME alone.
        assert_eq!(
            answered(&ask(&z, "www.boot.test.", RecordType::TXT)),
            ["CNAME pvs.boot.test."]
        );
    }
}
