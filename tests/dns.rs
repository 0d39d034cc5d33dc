//! The embedded DNS zone, driven by `dig` (bind9-dnsutils) and hickory-resolver against tftplb
//! on 127.0.0.1:0: rotation, failover on a health flip (admin and real probes), the
//! authoritative answers resolvers expect, TCP, truncation at 512 bytes, malformed packets.
//!
//! Balanced backends use distinct loopback addresses (127.0.0.2, .3, …) so answers differ; pools
//! without `[pool.health]` start Up, so nothing is probed unless a test asks for it. Every wait
//! is a bounded loop; nothing asserts on timing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use common::{Tftplb, Tree};
use hickory_resolver::Resolver;
use hickory_resolver::config::{NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RecordType;
use tftplb::demo::EmbeddedServer;
use tftplb::health::AdminState;

const ZONE: &str = r#"
zone = "boot.test."
ttl = "10s"
degraded_ttl = "3s"
nameservers = ["ns"]
[[dns.name]]
name = "pvs"
pool = "pvs"
[[dns.record]]
name = "ns"
type = "A"
value = "127.0.0.1"
[[dns.record]]
name = "www"
type = "CNAME"
value = "pvs"
[[dns.record]]
name = "info"
type = "TXT"
value = "tftplb test zone"
[[dns.record]]
name = "v6.deep"
type = "AAAA"
value = "2001:db8::1"
"#;

fn pool(name: &str, extra: &str, backends: &[String]) -> String {
    let mut t = format!("[[pool]]\nname = \"{name}\"\n{extra}\n");
    for b in backends {
        t.push_str(&format!("[[pool.backend]]\naddress = \"{b}\"\n"));
    }
    t
}

fn loopbacks(first: u8, count: u8) -> Vec<String> {
    (first..first + count)
        .map(|i| format!("127.0.0.{i}:69"))
        .collect()
}

async fn start_three() -> (Tftplb, SocketAddr) {
    Tftplb::start_with_dns("", &pool("pvs", "", &loopbacks(2, 3)), ZONE).await
}

/// Runs dig against `server` and returns its output.
async fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = tokio::process::Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+tries=2", "+time=2"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("run dig (apt-get install bind9-dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The addresses of `dig +short`, in answer order.
async fn short(server: SocketAddr, name: &str) -> Vec<String> {
    dig(server, &["+short", name, "A"])
        .await
        .lines()
        .map(str::to_string)
        .collect()
}

/// Answer-section records of a full dig output: (ttl, type, data).
fn answers(out: &str) -> Vec<(u32, String, String)> {
    section(out, ";; ANSWER SECTION:")
}

fn section(out: &str, title: &str) -> Vec<(u32, String, String)> {
    out.lines()
        .skip_while(|l| !l.starts_with(title))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 5).then(|| {
                (
                    f[1].parse().unwrap_or(0),
                    f[3].to_string(),
                    f[4..].join(" "),
                )
            })
        })
        .collect()
}

fn status(out: &str) -> &str {
    out.split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
}

fn flags(out: &str) -> Vec<&str> {
    out.split("flags: ")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn rotation_starts_one_further_each_answer() {
    let (t, dns) = start_three().await;
    let mut firsts = Vec::new();
    for _ in 0..6 {
        let a = short(dns, "pvs.boot.test").await;
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, ["127.0.0.2", "127.0.0.3", "127.0.0.4"], "{a:?}");
        firsts.push(a[0].clone());
    }
    // Consecutive answers start at consecutive positions: each address leads twice in six.
    for w in firsts.windows(2) {
        assert_ne!(w[0], w[1], "{firsts:?}");
    }
    for ip in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        assert_eq!(firsts.iter().filter(|f| *f == ip).count(), 2, "{firsts:?}");
    }
    let out = dig(dns, &["pvs.boot.test", "A"]).await;
    assert!(answers(&out).iter().all(|(ttl, _, _)| *ttl == 10), "{out}");
    t.stop().await;
}

#[tokio::test]
async fn weights_decide_who_leads() {
    let pools = "[[pool]]\nname = \"pvs\"\nbalance = \"weighted\"\n\
        [[pool.backend]]\naddress = \"127.0.0.2:69\"\nweight = 3\n\
        [[pool.backend]]\naddress = \"127.0.0.3:69\"\nweight = 1\n";
    let (t, dns) = Tftplb::start_with_dns("", pools, ZONE).await;
    let mut lead2 = 0;
    for _ in 0..8 {
        let a = short(dns, "pvs.boot.test").await;
        assert_eq!(a.len(), 2, "{a:?}");
        lead2 += usize::from(a[0] == "127.0.0.2");
    }
    assert_eq!(lead2, 6, "weight 3 of 4 leads 3 answers in 4");
    t.stop().await;
}

#[tokio::test]
async fn a_disabled_backend_leaves_the_answer_and_the_ttl_shortens() {
    let (t, dns) = start_three().await;
    let backend = t.frontend.runtime().pools[0].backends[1].clone();
    assert_eq!(backend.address.to_string(), "127.0.0.3:69");
    backend
        .state
        .set_admin("127.0.0.3:69", AdminState::Disabled);
    let mut out = String::new();
    for _ in 0..100 {
        out = dig(dns, &["pvs.boot.test", "A"]).await;
        if !out.contains("127.0.0.3") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = answers(&out);
    let ips: Vec<&str> = a.iter().map(|(_, _, d)| d.as_str()).collect();
    assert_eq!(ips.len(), 2, "{out}");
    assert!(!ips.contains(&"127.0.0.3"), "{out}");
    assert!(a.iter().all(|(ttl, _, _)| *ttl == 3), "degraded TTL: {out}");

    backend.state.set_admin("127.0.0.3:69", AdminState::Enabled);
    for _ in 0..100 {
        out = dig(dns, &["pvs.boot.test", "A"]).await;
        if answers(&out).len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let a = answers(&out);
    assert_eq!(a.len(), 3, "{out}");
    assert!(
        a.iter().all(|(ttl, _, _)| *ttl == 10),
        "normal TTL again: {out}"
    );
    t.stop().await;
}

#[tokio::test]
async fn a_backend_that_fails_its_probe_disappears() {
    let tree = Tree::new(&[("probe.bin", 100)]);
    let b2 = EmbeddedServer::start(tree.path(), "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    let b3 = EmbeddedServer::start(tree.path(), "127.0.0.3:0".parse().unwrap())
        .await
        .unwrap();
    let health = "[pool.health]\nfile = \"probe.bin\"\ninterval = \"100ms\"\ntimeout = \"100ms\"\nrise = 1\nfall = 1\n";
    let backends = [b2.address.to_string(), b3.address.to_string()];
    let (t, dns) = Tftplb::start_with_dns("", &pool("pvs", health, &backends), ZONE).await;
    // Both are advertised only once their first probe passed.
    let mut a = Vec::new();
    for _ in 0..200 {
        a = short(dns, "pvs.boot.test").await;
        if a.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(a.len(), 2, "{a:?}");
    b3.kill();
    let mut out = String::new();
    for _ in 0..200 {
        out = dig(dns, &["pvs.boot.test", "A"]).await;
        if answers(&out).len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let a = answers(&out);
    assert_eq!(a.len(), 1, "{out}");
    assert_eq!(a[0].2, "127.0.0.2", "{out}");
    assert_eq!(a[0].0, 3, "degraded TTL: {out}");
    drop(b2);
    t.stop().await;
}

#[tokio::test]
async fn fewer_than_half_healthy_answers_every_address() {
    let (t, dns) = start_three().await;
    let pool = t.frontend.runtime().pools[0].clone();
    // Two of three fail passive checks (fall defaults to 3 without [pool.health]).
    for b in &pool.backends[1..] {
        for _ in 0..3 {
            b.state.record_passive_failure(&b.address.to_string(), 3);
        }
    }
    let mut out = String::new();
    for _ in 0..100 {
        out = dig(dns, &["pvs.boot.test", "A"]).await;
        if answers(&out).iter().all(|(ttl, _, _)| *ttl == 3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(answers(&out).len(), 3, "floor: all addresses: {out}");
    assert!(answers(&out).iter().all(|(ttl, _, _)| *ttl == 3), "{out}");
    t.stop().await;
}

#[tokio::test]
async fn authoritative_answers() {
    let (t, dns) = start_three().await;

    let out = dig(dns, &["boot.test", "SOA"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    let soa = answers(&out);
    assert_eq!(soa.len(), 1, "{out}");
    assert_eq!(soa[0].1, "SOA");
    assert!(
        soa[0].2.starts_with("ns.boot.test. hostmaster.boot.test."),
        "{out}"
    );

    let out = dig(dns, &["boot.test", "NS"]).await;
    assert_eq!(answers(&out)[0].2, "ns.boot.test.", "{out}");
    assert!(
        section(&out, ";; ADDITIONAL SECTION:")
            .iter()
            .any(|r| r.2 == "127.0.0.1"),
        "glue: {out}"
    );

    let out = dig(dns, &["nope.boot.test", "A"]).await;
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(flags(&out).contains(&"aa"), "{out}");
    assert_eq!(section(&out, ";; AUTHORITY SECTION:")[0].1, "SOA", "{out}");

    // NODATA: the name exists, the type does not.
    let out = dig(dns, &["pvs.boot.test", "MX"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(answers(&out).is_empty(), "{out}");
    assert_eq!(section(&out, ";; AUTHORITY SECTION:")[0].1, "SOA", "{out}");
    // An empty non-terminal exists too.
    let out = dig(dns, &["deep.boot.test", "A"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");

    let out = dig(dns, &["example.com", "A"]).await;
    assert_eq!(status(&out), "REFUSED", "{out}");
    assert!(!flags(&out).contains(&"aa"), "{out}");

    // Case does not matter, and the question comes back as asked.
    let out = dig(dns, &["PvS.BoOt.TeSt", "A"]).await;
    assert_eq!(answers(&out).len(), 3, "{out}");
    assert!(out.contains("PvS.BoOt.TeSt."), "{out}");

    let out = dig(dns, &["www.boot.test", "A"]).await;
    let a = answers(&out);
    assert_eq!(a[0].1, "CNAME", "{out}");
    assert_eq!(a.iter().filter(|r| r.1 == "A").count(), 3, "{out}");

    let out = dig(dns, &["info.boot.test", "TXT"]).await;
    assert_eq!(answers(&out)[0].2, "\"tftplb test zone\"", "{out}");
    let out = dig(dns, &["v6.deep.boot.test", "AAAA"]).await;
    assert_eq!(answers(&out)[0].2, "2001:db8::1", "{out}");

    // EDNS: the answer carries an OPT record.
    let out = dig(dns, &["+edns=0", "pvs.boot.test", "A"]).await;
    assert!(out.contains("OPT PSEUDOSECTION"), "{out}");
    t.stop().await;
}

#[tokio::test]
async fn answers_over_tcp() {
    let (t, dns) = start_three().await;
    let out = dig(dns, &["+tcp", "pvs.boot.test", "A"]).await;
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(answers(&out).len(), 3, "{out}");
    t.stop().await;
}

#[tokio::test]
async fn large_answers_set_tc_at_512_bytes_and_fit_over_tcp() {
    let many: Vec<String> = (1..=40).map(|i| format!("127.0.1.{i}:69")).collect();
    let pools = pool("many", "", &many);
    let zone =
        "zone = \"boot.test.\"\nmax_answers = 64\n[[dns.name]]\nname = \"many\"\npool = \"many\"\n";
    let (t, dns) = Tftplb::start_with_dns("", &pools, zone).await;
    // As iPXE asks: no EDNS, so 512 bytes at most.
    let out = dig(dns, &["+noedns", "+ignore", "many.boot.test", "A"]).await;
    assert!(flags(&out).contains(&"tc"), "{out}");
    assert!(
        out.contains("MSG SIZE  rcvd: ") && msg_size(&out) <= 512,
        "{out}"
    );
    let out = dig(dns, &["+tcp", "many.boot.test", "A"]).await;
    assert!(!flags(&out).contains(&"tc"), "{out}");
    assert_eq!(answers(&out).len(), 40, "{out}");
    // With EDNS the 40 records (about 700 bytes) fit in one datagram.
    let out = dig(dns, &["+bufsize=1232", "+ignore", "many.boot.test", "A"]).await;
    assert!(!flags(&out).contains(&"tc"), "{out}");
    assert_eq!(answers(&out).len(), 40, "{out}");
    t.stop().await;
}

fn msg_size(out: &str) -> usize {
    out.split("MSG SIZE  rcvd: ")
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(usize::MAX)
}

#[tokio::test]
async fn malformed_packets_are_dropped_and_the_server_still_answers() {
    let (t, dns) = start_three().await;
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let garbage: Vec<Vec<u8>> = vec![
        vec![],
        vec![0xff; 5],
        // A header promising 5 questions and carrying none.
        vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x05, 0, 0, 0, 0, 0, 0],
        // A question whose name points at itself.
        vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1],
        // A response (QR set): never answered, no reflection.
        vec![0, 2, 0x81, 0x80, 0, 0, 0, 0, 0, 0, 0, 0],
        (0..1500u32).map(|i| (i * 7919 % 251) as u8).collect(),
    ];
    for g in &garbage {
        sock.send_to(g, dns).await.unwrap();
    }
    // Garbage over TCP: a length prefix and junk, then a hang-up.
    if let Ok(mut s) = tokio::net::TcpStream::connect(dns).await {
        use tokio::io::AsyncWriteExt;
        let _ = s.write_all(&[0, 40, 1, 2, 3, 4, 5, 6, 7]).await;
    }
    let a = short(dns, "pvs.boot.test").await;
    assert_eq!(a.len(), 3, "still answering: {a:?}");
    let out = dig(dns, &["+tcp", "pvs.boot.test", "A"]).await;
    assert_eq!(answers(&out).len(), 3, "{out}");
    t.stop().await;
}

/// A query for `pvs.boot.test` A with `id`, as a stub resolver sends it.
fn query(id: u16) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in ["pvs", "boot", "test"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Queries that arrive together are received together and answered together: every one of
/// 400, sent from four sockets before any answer is read, gets exactly one answer with its
/// own ID and the three addresses.
#[tokio::test]
async fn queries_that_arrive_together_are_each_answered_once() {
    let (t, dns) = start_three().await;
    let mut socks = Vec::new();
    for _ in 0..4 {
        socks.push(tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap());
    }
    for (k, sock) in socks.iter().enumerate() {
        for i in 0..100u16 {
            sock.send_to(&query(k as u16 * 1000 + i), dns)
                .await
                .unwrap();
        }
    }
    let mut buf = [0u8; 1024];
    for (k, sock) in socks.iter().enumerate() {
        let mut ids = std::collections::BTreeSet::new();
        while ids.len() < 100 {
            let n = tokio::time::timeout(Duration::from_secs(5), sock.recv(&mut buf))
                .await
                .expect("an answer for every query")
                .unwrap();
            let id = u16::from_be_bytes([buf[0], buf[1]]);
            assert!(ids.insert(id), "query {id} answered twice");
            assert_eq!(buf[3] & 0x0f, 0, "NOERROR");
            assert_eq!(u16::from_be_bytes([buf[6], buf[7]]), 3, "three addresses");
            assert!(n > 12);
        }
        let want: std::collections::BTreeSet<u16> = (0..100).map(|i| k as u16 * 1000 + i).collect();
        assert_eq!(ids, want);
    }
    t.stop().await;
}

fn resolver(dns: SocketAddr) -> Resolver<TokioRuntimeProvider> {
    let mut ns = NameServerConfig::udp_and_tcp(dns.ip());
    for c in &mut ns.connections {
        c.port = dns.port();
    }
    let config = ResolverConfig::from_name_servers(vec![ns]);
    let mut b = Resolver::builder_with_config(config, TokioRuntimeProvider::default());
    b.options_mut().cache_size = 0;
    b.build().unwrap()
}

#[tokio::test]
async fn hickory_resolver_sees_the_healthy_set() {
    let (t, dns) = start_three().await;
    let r = resolver(dns);
    let ips: Vec<IpAddr> = r
        .lookup_ip("pvs.boot.test.")
        .await
        .unwrap()
        .iter()
        .collect();
    assert_eq!(ips.len(), 3, "{ips:?}");
    let soa = r.lookup("boot.test.", RecordType::SOA).await.unwrap();
    assert_eq!(soa.answers().len(), 1);
    let nx = r
        .lookup("nope.boot.test.", RecordType::A)
        .await
        .unwrap_err();
    assert!(nx.is_nx_domain(), "{nx:?}");
    t.frontend.runtime().pools[0].backends[0]
        .state
        .set_admin("127.0.0.2:69", AdminState::Draining);
    let mut ips = Vec::new();
    for _ in 0..100 {
        ips = r
            .lookup_ip("pvs.boot.test.")
            .await
            .unwrap()
            .iter()
            .collect();
        if ips.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!ips.contains(&IpAddr::from([127, 0, 0, 2])), "{ips:?}");
    t.stop().await;
}

/// Issue 13: a name listing several tftplb front ends (`addresses`) with `[dns.name.health]`
/// probes each like a backend, so the option-66 name never points at a dead front end.
/// Two embedded servers stand for the front ends, on 127.0.0.2 and 127.0.0.3, same port.
#[tokio::test]
async fn probed_front_end_addresses_leave_the_answer_when_they_die() {
    let tree = Tree::new(&[("probe.bin", 100)]);
    let (a, b) = same_port_pair(&tree).await;
    let port = a.address.port();
    let zone = format!(
        "{ZONE}\n[[dns.name]]\nname = \"fe\"\naddresses = [\"127.0.0.2\", \"127.0.0.3\"]\n\
         probe_port = {port}\n[dns.name.health]\nfile = \"probe.bin\"\ninterval = \"100ms\"\n\
         timeout = \"100ms\"\nrise = 1\nfall = 1\n"
    );
    let (t, dns) = Tftplb::start_with_dns("", &pool("pvs", "", &loopbacks(2, 3)), &zone).await;
    let mut got = Vec::new();
    for _ in 0..200 {
        got = short(dns, "fe.boot.test").await;
        if got.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    got.sort();
    assert_eq!(got, ["127.0.0.2", "127.0.0.3"], "both pass their probes");
    b.kill();
    for _ in 0..200 {
        got = short(dns, "fe.boot.test").await;
        if got.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(got, ["127.0.0.2"], "the dead front end left the answer");
    drop(a);
    t.stop().await;
}

/// Embedded servers on 127.0.0.2 and 127.0.0.3 with the same port (a few tries: the port
/// the first one got may be taken on the second address).
async fn same_port_pair(tree: &Tree) -> (EmbeddedServer, EmbeddedServer) {
    for _ in 0..10 {
        let a = EmbeddedServer::start(tree.path(), "127.0.0.2:0".parse().unwrap())
            .await
            .unwrap();
        let second = SocketAddr::new([127, 0, 0, 3].into(), a.address.port());
        if let Ok(b) = EmbeddedServer::start(tree.path(), second).await {
            return (a, b);
        }
    }
    panic!("no port free on both 127.0.0.2 and 127.0.0.3");
}
