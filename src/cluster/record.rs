//! The sync record on the wire: what one front end tells its peers in one UDP datagram,
//! authenticated with HMAC-SHA256 over the shared key.
//!
//! ```text
//! "TLBS" | version 1 | kind | seq u64 | sent (ms since the epoch) u64 | sender | body | HMAC (32)
//! ```
//!
//! The sender is the sync address it sends from, under the MAC: the receiver checks it
//! against the datagram's source, so a record cannot be reflected to its own sender, or
//! passed off as another peer's, by whoever can spoof a source address.
//!
//! The kinds: a heartbeat (empty body), a session started (its key, the contacted address,
//! pool, backend, the request as relayed and the transfer's state), its progress (key and
//! state), its end (key). Addresses are a family byte (4 or 6), the IP and the port. All
//! numbers are big-endian. The MAC is checked before a byte of the body is read; a record
//! that fails it, or is cut short, or has bytes left over, is refused whole.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::protocol::options::Negotiated;
use crate::tftp::resumable::Resumable;
use crate::tftp::sync::{SyncEvent, SyncKey, Synced};

const MAGIC: &[u8; 4] = b"TLBS";
const VERSION: u8 = 1;
const HEADER: usize = 4 + 1 + 1 + 8 + 8;
const MAC_LEN: usize = 32;
/// The receive buffer: a UDP datagram's largest payload (a record carries the request as
/// relayed, which options can make long).
pub const MAX_RECORD: usize = 65_535;

/// What a record says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    Heartbeat,
    Event(SyncEvent),
}

/// A record: its sender's sequence number, when it was sent, by whom, what it says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub sent_ms: u64,
    /// The sender's sync address (what its datagrams come from).
    pub sender: SocketAddr,
    pub body: Body,
}

/// Why a datagram was refused (the metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    /// Not a record of ours, or another version.
    Foreign,
    /// The MAC does not match: another key, or altered.
    Forged,
    /// The MAC matches but the body does not parse (a bug or another build).
    Malformed,
}

impl Bad {
    pub fn as_str(self) -> &'static str {
        match self {
            Bad::Foreign => "foreign",
            Bad::Forged => "bad-mac",
            Bad::Malformed => "malformed",
        }
    }
}

fn mac(key: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length")
}

impl Record {
    /// The datagram, signed with `key`.
    pub fn encode(&self, key: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(kind(&self.body));
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&self.sent_ms.to_be_bytes());
        write_addr(&mut out, self.sender);
        write_body(&mut out, &self.body);
        let tag = mac(key).chain_update(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        out
    }

    /// Checks the MAC with `key`, then reads the record.
    pub fn decode(datagram: &[u8], key: &[u8]) -> Result<Record, Bad> {
        if datagram.len() < HEADER + MAC_LEN || &datagram[..4] != MAGIC || datagram[4] != VERSION {
            return Err(Bad::Foreign);
        }
        let (signed, tag) = datagram.split_at(datagram.len() - MAC_LEN);
        mac(key)
            .chain_update(signed)
            .verify_slice(tag)
            .map_err(|_| Bad::Forged)?;
        let mut r = Reader(&signed[5..]);
        let kind = r.u8()?;
        let seq = r.u64()?;
        let sent_ms = r.u64()?;
        let sender = r.addr()?;
        let body = read_body(kind, &mut r)?;
        if !r.0.is_empty() {
            return Err(Bad::Malformed);
        }
        Ok(Record {
            seq,
            sent_ms,
            sender,
            body,
        })
    }
}

fn kind(body: &Body) -> u8 {
    match body {
        Body::Heartbeat => 1,
        Body::Event(SyncEvent::Started(_)) => 2,
        Body::Event(SyncEvent::Progress { .. }) => 3,
        Body::Event(SyncEvent::Ended(_)) => 4,
    }
}

fn write_body(out: &mut Vec<u8>, body: &Body) {
    match body {
        Body::Heartbeat => {}
        Body::Event(SyncEvent::Started(s)) => {
            write_key(out, &s.key);
            write_addr(out, s.contacted);
            write_addr(out, s.backend);
            let pool = &s.pool.as_bytes()[..s.pool.len().min(255)];
            out.push(pool.len() as u8);
            out.extend_from_slice(pool);
            out.extend_from_slice(&(s.request.len() as u16).to_be_bytes());
            out.extend_from_slice(&s.request);
            write_state(out, &s.state);
        }
        Body::Event(SyncEvent::Progress { key, state }) => {
            write_key(out, key);
            write_state(out, state);
        }
        Body::Event(SyncEvent::Ended(key)) => write_key(out, key),
    }
}

fn read_body(kind: u8, r: &mut Reader) -> Result<Body, Bad> {
    Ok(match kind {
        1 => Body::Heartbeat,
        2 => {
            let key = r.key()?;
            let contacted = r.addr()?;
            let backend = r.addr()?;
            let len = usize::from(r.u8()?);
            let pool = String::from_utf8(r.take(len)?.to_vec()).map_err(|_| Bad::Malformed)?;
            let len = usize::from(r.u16()?);
            let request = r.take(len)?.into();
            let state = r.state()?;
            Body::Event(SyncEvent::Started(Box::new(Synced {
                key,
                contacted,
                pool,
                backend,
                request,
                state,
            })))
        }
        3 => Body::Event(SyncEvent::Progress {
            key: r.key()?,
            state: r.state()?,
        }),
        4 => Body::Event(SyncEvent::Ended(r.key()?)),
        _ => return Err(Bad::Malformed),
    })
}

fn write_key(out: &mut Vec<u8>, key: &SyncKey) {
    write_addr(out, key.client);
    write_addr(out, key.session);
}

fn write_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

fn write_state(out: &mut Vec<u8>, s: &Resumable) {
    let n = &s.negotiated;
    out.extend_from_slice(&n.blksize.to_be_bytes());
    out.extend_from_slice(&n.windowsize.to_be_bytes());
    out.push(u8::from(n.tsize.is_some()));
    out.extend_from_slice(&n.tsize.unwrap_or(0).to_be_bytes());
    out.push(u8::from(n.timeout.is_some()));
    out.push(n.timeout.unwrap_or(0));
    out.push(u8::from(s.had_oack));
    out.push(u8::from(s.wrap_to_one));
    out.push(u8::from(s.wrap_known));
    out.extend_from_slice(&s.acked.to_be_bytes());
}

/// Reads a record's body, every read bounded.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Bad> {
        if self.0.len() < n {
            return Err(Bad::Malformed);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Bad> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, Bad> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, Bad> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn flag(&mut self) -> Result<bool, Bad> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(Bad::Malformed),
        }
    }

    fn addr(&mut self) -> Result<SocketAddr, Bad> {
        let ip = match self.u8()? {
            4 => IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).expect("4"),
            )),
            6 => IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).expect("16"),
            )),
            _ => return Err(Bad::Malformed),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }

    fn key(&mut self) -> Result<SyncKey, Bad> {
        Ok(SyncKey {
            client: self.addr()?,
            session: self.addr()?,
        })
    }

    fn state(&mut self) -> Result<Resumable, Bad> {
        let blksize = self.u16()?;
        let windowsize = self.u16()?;
        let has_tsize = self.flag()?;
        let tsize = self.u64()?;
        let has_timeout = self.flag()?;
        let timeout = self.u8()?;
        Ok(Resumable {
            negotiated: Negotiated {
                blksize,
                windowsize,
                tsize: has_tsize.then_some(tsize),
                timeout: has_timeout.then_some(timeout),
            },
            had_oack: self.flag()?,
            wrap_to_one: self.flag()?,
            wrap_known: self.flag()?,
            acked: self.u64()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef";

    fn started() -> Record {
        let state = Resumable {
            negotiated: Negotiated {
                blksize: 1468,
                windowsize: 8,
                tsize: Some(16 << 20),
                timeout: None,
            },
            had_oack: true,
            wrap_to_one: false,
            wrap_known: true,
            acked: 70_000,
        };
        Record {
            seq: 7,
            sent_ms: 1_800_000_000_000,
            sender: "10.0.0.2:6970".parse().unwrap(),
            body: Body::Event(SyncEvent::Started(Box::new(Synced {
                key: SyncKey {
                    client: "192.0.2.10:2070".parse().unwrap(),
                    session: "[2001:db8::1]:40000".parse().unwrap(),
                },
                contacted: "192.0.2.1:69".parse().unwrap(),
                pool: "pvs".into(),
                backend: "10.0.0.5:69".parse().unwrap(),
                request: b"\0\x01ARDBP32.BIN\0octet\0".as_slice().into(),
                state,
            }))),
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let key = SyncKey {
            client: "192.0.2.10:2070".parse().unwrap(),
            session: "192.0.2.1:40000".parse().unwrap(),
        };
        let Body::Event(SyncEvent::Started(s)) = started().body else {
            unreachable!()
        };
        for body in [
            Body::Heartbeat,
            started().body,
            Body::Event(SyncEvent::Progress {
                key,
                state: s.state,
            }),
            Body::Event(SyncEvent::Ended(key)),
        ] {
            let r = Record {
                seq: 1,
                sent_ms: 2,
                sender: "[2001:db8::2]:6970".parse().unwrap(),
                body,
            };
            assert_eq!(Record::decode(&r.encode(KEY), KEY), Ok(r));
        }
    }

    #[test]
    fn another_key_a_flipped_bit_or_a_cut_are_refused() {
        let bytes = started().encode(KEY);
        assert_eq!(
            Record::decode(&bytes, b"another key of 16+"),
            Err(Bad::Forged)
        );
        for i in 5..bytes.len() {
            let mut altered = bytes.clone();
            altered[i] ^= 1;
            assert_eq!(Record::decode(&altered, KEY), Err(Bad::Forged), "byte {i}");
        }
        assert_eq!(
            Record::decode(&bytes[..bytes.len() - 1], KEY),
            Err(Bad::Forged)
        );
        assert_eq!(
            Record::decode(&bytes[..40], KEY),
            Err(Bad::Foreign),
            "shorter than a MAC"
        );
        assert_eq!(Record::decode(b"TLBS", KEY), Err(Bad::Foreign));
        assert_eq!(Record::decode(&[0u8; 100], KEY), Err(Bad::Foreign));
    }

    #[test]
    fn a_signed_body_that_does_not_parse_is_malformed() {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&[VERSION, 3]);
        out.extend_from_slice(&[0; 16]);
        out.extend_from_slice(&[9, 9, 9]);
        let tag = mac(KEY).chain_update(&out).finalize().into_bytes();
        out.extend_from_slice(&tag);
        assert_eq!(Record::decode(&out, KEY), Err(Bad::Malformed));
    }
}
