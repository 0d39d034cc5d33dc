//! Admission on port 69: is a datagram a request we relay, and if not, what do we answer?
//!
//! Two steps. [`admit`] looks at the datagram alone (malformed, unknown opcode, stray packets,
//! over 512 bytes, bad filenames, bad modes). [`policy`] looks at the request in the running configuration
//! (client allow/deny, which pool, write allowed, file allowed). Rate and concurrency limits are
//! checked by the frontend after retransmissions are recognised, so a retransmitted request
//! never spends a client's budget.
//!
//! What is relayed is the client's request, except that a blksize above `[tftp] max_blksize`
//! is lowered to it ([`relayed_request`]): a session's memory (its receive buffer, its
//! read-ahead ring) follows the blksize, and a client must not set it. The rule that routed
//! the request may lower blksize and windowsize further and leave options out (its options
//! policy, for firmware that hangs on some of them).

use std::net::IpAddr;
use std::sync::Arc;

use crate::limits::Limited;
use crate::pool::Pool;
use crate::protocol::names::{check_filename, normalise};
use crate::protocol::packet::{self, Kind, Mode, Packet, Request, error_code};
use crate::route::config::Mac;
use crate::route::{Decision, OptionsPolicy};
use crate::tftp::runtime::Runtime;

/// A request worth looking at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Asked {
    pub request: Request,
    pub write: bool,
    /// The requested name as every rule matches it (`names::normalise`).
    pub name: Vec<u8>,
}

/// Why a datagram to port 69 is not relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Not a TFTP packet at all: counted and dropped, no answer.
    Malformed,
    UnknownOpcode,
    WriteRequest,
    BadFilename(&'static str),
    BadMode,
    /// Options no server can answer unambiguously (given twice, blksize or windowsize out of
    /// range): ERROR 8 before any backend sees them.
    BadOptions(&'static str),
    /// Longer than RFC 2347's 512 bytes; whether it carries options (then ERROR 8: a client
    /// may ask again without them).
    TooLong {
        options: bool,
    },
    /// DATA/ACK/OACK sent to port 69 instead of a session's TID.
    NotARequest,
    /// An ERROR sent to port 69: dropped (an error never answers an error).
    StrayError,
    /// The pool does not serve this filename (`files` globs).
    FileNotServed,
    /// A `[[route]]` with `action = "refuse"` matched.
    RouteRefused,
    /// A `[[route]]` with `action = "ignore"` matched: no answer, another server may answer.
    RouteIgnored,
    Limited(Limited),
}

impl Refusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::UnknownOpcode => "unknown-opcode",
            Refusal::WriteRequest => "write-request",
            Refusal::BadFilename(_) => "bad-filename",
            Refusal::BadMode => "bad-mode",
            Refusal::BadOptions(_) => "bad-options",
            Refusal::TooLong { .. } => "too-long",
            Refusal::NotARequest => "not-a-request",
            Refusal::StrayError => "stray-error",
            Refusal::FileNotServed => "file-not-served",
            Refusal::RouteRefused => "route-refused",
            Refusal::RouteIgnored => "route-ignored",
            Refusal::Limited(l) => l.as_str(),
        }
    }

    /// The ERROR to send back, if any.
    pub fn answer(self) -> Option<(u16, &'static str)> {
        match self {
            Refusal::Malformed | Refusal::StrayError | Refusal::RouteIgnored => None,
            Refusal::RouteRefused => {
                Some((error_code::ACCESS_VIOLATION, "not served on this network"))
            }
            Refusal::UnknownOpcode => Some((error_code::ILLEGAL_OPERATION, "unknown opcode")),
            Refusal::WriteRequest => Some((
                error_code::ACCESS_VIOLATION,
                "write requests are not served",
            )),
            Refusal::BadFilename(why) => Some((error_code::ACCESS_VIOLATION, why)),
            Refusal::BadMode => Some((error_code::ILLEGAL_OPERATION, "unsupported transfer mode")),
            Refusal::BadOptions(why) => Some((error_code::OPTION_REFUSED, why)),
            Refusal::TooLong { options } => Some((
                if options {
                    error_code::OPTION_REFUSED
                } else {
                    error_code::NOT_DEFINED
                },
                "request longer than 512 bytes (RFC 2347)",
            )),
            Refusal::NotARequest => Some((error_code::UNKNOWN_TID, "unknown transfer ID")),
            Refusal::FileNotServed => Some((error_code::ACCESS_VIOLATION, "file not served here")),
            Refusal::Limited(Limited::Denied) => {
                Some((error_code::ACCESS_VIOLATION, Limited::Denied.message()))
            }
            Refusal::Limited(l) => Some((error_code::NOT_DEFINED, l.message())),
        }
    }
}

/// The longest request, options included (RFC 2347).
pub const MAX_REQUEST: usize = 512;

/// Decides from the datagram alone: a request to look at further, or a refusal.
pub fn admit(datagram: &[u8]) -> Result<Asked, Refusal> {
    let write = match packet::peek(datagram) {
        Ok(Kind::Rrq) => false,
        Ok(Kind::Wrq) => true,
        Ok(Kind::Error { .. }) => return Err(Refusal::StrayError),
        Ok(_) => return Err(Refusal::NotARequest),
        Err(packet::ParseError::UnknownOpcode(_)) => return Err(Refusal::UnknownOpcode),
        Err(_) => return Err(Refusal::Malformed),
    };
    let request = match Packet::decode(datagram) {
        Ok(Packet::Rrq(r) | Packet::Wrq(r)) => r,
        // A request a server would answer (tftpd-hpa does): say what is wrong, never silence.
        Err(packet::ParseError::OptionWithoutValue) => {
            return Err(Refusal::BadOptions("an option has no value"));
        }
        Err(packet::ParseError::NotUtf8) => {
            return Err(Refusal::BadOptions("options and mode must be text"));
        }
        _ => return Err(Refusal::Malformed),
    };
    if datagram.len() > MAX_REQUEST {
        let options = !request.options.is_empty();
        return Err(Refusal::TooLong { options });
    }
    check_filename(&request.filename).map_err(Refusal::BadFilename)?;
    if matches!(request.mode, Mode::Other(_) | Mode::Mail) {
        return Err(Refusal::BadMode);
    }
    request
        .options
        .check_request()
        .map_err(Refusal::BadOptions)?;
    let name = normalise(&request.filename);
    Ok(Asked {
        request,
        write,
        name,
    })
}

/// The request to relay to backends when it is not the client's datagram as received: the
/// request with a blksize above `max_blksize` lowered to it, and the route's options `policy`
/// applied (`asked` is changed to match, so the relay sizes its buffers from what it asked
/// and knows the OACK that answers it). RFC 2347/2348/7440 let a server leave an option out or
/// answer a smaller blksize or windowsize than asked; the client learns it from the OACK. The
/// session table keeps the client's own bytes to recognise its retransmissions.
pub fn relayed_request(
    asked: &mut Asked,
    max_blksize: u16,
    policy: Option<&OptionsPolicy>,
) -> Option<Box<[u8]>> {
    let options = &mut asked.request.options;
    let asked_blksize = options.blksize();
    let mut changed = false;
    if let Some(p) = policy {
        for name in &p.drop {
            changed |= options.remove(name);
        }
        if let Some(max) = p.max_windowsize {
            changed |= options.cap_windowsize(max);
        }
        if changed {
            crate::metrics::options_rewritten();
        }
    }
    let blksize_cap = policy
        .and_then(|p| p.max_blksize)
        .map_or(max_blksize, |m| m.min(max_blksize));
    if options.cap_blksize(blksize_cap) {
        crate::metrics::blksize_lowered(asked_blksize.unwrap_or(0), blksize_cap);
        changed = true;
    }
    if !changed {
        return None;
    }
    let packet = if asked.write {
        Packet::Wrq(asked.request.clone())
    } else {
        Packet::Rrq(asked.request.clone())
    };
    Some(packet.encode().into_boxed_slice())
}

/// Decides from the running configuration: the pool that serves the request and the options
/// policy of the rule that sent it there, or a refusal. `mac` is what is known of the client's
/// MAC. The caller has checked the client's address and rate first, before keeping any state
/// for it.
pub fn policy(
    runtime: &Runtime,
    asked: &Asked,
    client: IpAddr,
    mac: Option<Mac>,
) -> Result<(Arc<Pool>, Option<OptionsPolicy>), Refusal> {
    let (pool, options) = match runtime.router.decide(client, &asked.name, mac) {
        Decision::Pool { pool, rule } => (
            runtime.pool(&pool).unwrap_or(runtime.default_pool()),
            runtime.router.options_of(rule).cloned(),
        ),
        Decision::Refuse { .. } => return Err(Refusal::RouteRefused),
        Decision::Ignore { .. } => return Err(Refusal::RouteIgnored),
    };
    if asked.write && !pool.allow_write {
        return Err(Refusal::WriteRequest);
    }
    if !pool.serves(&asked.name) {
        return Err(Refusal::FileNotServed);
    }
    Ok((pool.clone(), options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_requests_are_requests() {
        let wrq = Packet::Wrq(Request {
            filename: "up.bin".into(),
            mode: Mode::Octet,
            options: Default::default(),
        });
        assert!(admit(&wrq.encode()).unwrap().write);
    }

    fn rrq(filename: &str, pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut options = crate::protocol::options::Options::default();
        for (k, v) in pairs {
            options.push(k, v);
        }
        Packet::Rrq(Request {
            filename: filename.into(),
            mode: Mode::Octet,
            options,
        })
        .encode()
    }

    #[test]
    fn a_request_over_512_bytes_is_refused_with_a_reason() {
        let long = "x".repeat(300);
        let fits = rrq("f", &[("x-a", &long), ("x-b", &long[..190])]);
        assert!(fits.len() <= MAX_REQUEST && admit(&fits).is_ok());
        let over = rrq("f", &[("x-a", &long), ("x-b", &long)]);
        assert_eq!(admit(&over), Err(Refusal::TooLong { options: true }));
        let refusal = Refusal::TooLong { options: true }.answer().unwrap();
        assert_eq!(refusal.0, error_code::OPTION_REFUSED);
        assert!(refusal.1.contains("512"));
        let name = "d/".repeat(300);
        assert_eq!(
            admit(&rrq(&name, &[])),
            Err(Refusal::TooLong { options: false })
        );
    }

    #[test]
    fn a_blksize_above_the_cap_is_relayed_lowered_and_the_rest_as_sent() {
        let asked_for = |pairs: &[(&str, &str)]| admit(&rrq("ipxe.efi", pairs)).unwrap();
        let mut asked = asked_for(&[("tsize", "0"), ("blksize", "65464"), ("windowsize", "4")]);
        let relayed = relayed_request(&mut asked, 8192, None).expect("rewritten");
        assert_eq!(
            Packet::decode(&relayed).unwrap(),
            Packet::decode(&rrq(
                "ipxe.efi",
                &[("tsize", "0"), ("blksize", "8192"), ("windowsize", "4")]
            ))
            .unwrap()
        );
        assert_eq!(asked.request.options.blksize(), Some(8192));
        for within in [&[("blksize", "1468")][..], &[("tsize", "0")], &[]] {
            let mut asked = asked_for(within);
            assert_eq!(relayed_request(&mut asked, 8192, None), None, "{within:?}");
        }
    }

    #[test]
    fn a_route_s_policy_leaves_options_out_and_lowers_others() {
        let policy = OptionsPolicy {
            max_blksize: Some(1024),
            max_windowsize: Some(4),
            drop: vec!["tsize".into()],
        };
        let mut asked = admit(&rrq(
            "ARDBP32.BIN",
            &[
                ("blksize", "1468"),
                ("TSIZE", "0"),
                ("windowsize", "16"),
                ("x-a", "1"),
            ],
        ))
        .unwrap();
        let relayed = relayed_request(&mut asked, 8192, Some(&policy)).expect("rewritten");
        let want = rrq(
            "ARDBP32.BIN",
            &[("blksize", "1024"), ("windowsize", "4"), ("x-a", "1")],
        );
        assert_eq!(
            Packet::decode(&relayed).unwrap(),
            Packet::decode(&want).unwrap()
        );
        // The session recognises the OACK to what it relayed.
        assert_eq!(asked.request.options.blksize(), Some(1024));
        assert_eq!(asked.request.options.tsize(), None);
        // [tftp] max_blksize below the rule's still wins; a request within the policy is the
        // client's own.
        let mut asked = admit(&rrq("f", &[("blksize", "1468")])).unwrap();
        relayed_request(&mut asked, 512, Some(&policy)).unwrap();
        assert_eq!(asked.request.options.blksize(), Some(512));
        let mut asked = admit(&rrq("f", &[("blksize", "1024")])).unwrap();
        assert_eq!(relayed_request(&mut asked, 8192, Some(&policy)), None);
    }
}
