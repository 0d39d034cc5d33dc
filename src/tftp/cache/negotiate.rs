//! What a transfer from memory uses, as a TFTP server decides it from the client's request
//! (RFC 2347 options, blksize RFC 2348, timeout and tsize RFC 2349, windowsize RFC 7440): only
//! the options the client asked for are answered, each within tftplb's limits, tsize with the
//! copy's exact size; unknown options are left unanswered; no option asked, no OACK (the
//! transfer starts with DATA 1). Pure.

use crate::protocol::options::{DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE, Options};
use crate::protocol::packet::Packet;

/// How a transfer from memory goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub blksize: u16,
    pub window: u16,
    /// The client's retransmission timeout in seconds, when it named one.
    pub timeout: Option<u8>,
    /// The OACK to send first, when the client asked for an option tftplb answers.
    pub oack: Option<Vec<u8>>,
}

/// Answers `asked` (the request's options, after the route's policy) for a copy of `size`
/// bytes, with blksize at most `max_blksize` and windowsize at most `max_window`.
pub fn negotiate(asked: &Options, size: u64, max_blksize: u16, max_window: u16) -> Plan {
    let mut answered = Options::default();
    let mut plan = Plan {
        blksize: DEFAULT_BLKSIZE,
        window: 1,
        timeout: None,
        oack: None,
    };
    for (name, value) in asked.iter() {
        let number = value.trim().parse::<u64>().ok();
        match (name.to_ascii_lowercase().as_str(), number) {
            ("blksize", Some(b)) if b >= u64::from(MIN_BLKSIZE) => {
                plan.blksize = b.min(u64::from(max_blksize.min(MAX_BLKSIZE))) as u16;
                answered.push(name, &plan.blksize.to_string());
            }
            ("windowsize", Some(w)) if w >= 1 => {
                plan.window = w.min(u64::from(max_window.max(1))) as u16;
                answered.push(name, &plan.window.to_string());
            }
            ("timeout", Some(t)) if (1..=255).contains(&t) => {
                plan.timeout = Some(t as u8);
                answered.push(name, &t.to_string());
            }
            ("tsize", Some(_)) => answered.push(name, &size.to_string()),
            _ => {}
        }
    }
    if !answered.is_empty() {
        plan.oack = Some(Packet::Oack(answered).encode());
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> Options {
        let mut o = Options::default();
        for (k, v) in pairs {
            o.push(k, v);
        }
        o
    }

    fn oack_of(plan: &Plan) -> Options {
        match Packet::decode(plan.oack.as_ref().expect("an OACK")).unwrap() {
            Packet::Oack(o) => o,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_what_was_asked_is_answered_within_limits() {
        let asked = opts(&[
            ("TSize", "0"),
            ("blksize", "65464"),
            ("windowsize", "200"),
            ("timeout", "3"),
            ("msftwindow", "31416"),
        ]);
        let plan = negotiate(&asked, 123_456, 8192, 64);
        assert_eq!(
            (plan.blksize, plan.window, plan.timeout),
            (8192, 64, Some(3))
        );
        let oack = oack_of(&plan);
        assert_eq!(
            oack.iter().collect::<Vec<_>>(),
            vec![
                ("TSize", "123456"),
                ("blksize", "8192"),
                ("windowsize", "64"),
                ("timeout", "3")
            ]
        );
    }

    #[test]
    fn no_option_asked_means_no_oack_and_rfc_1350_blocks() {
        let plan = negotiate(&Options::default(), 10, 8192, 64);
        assert_eq!(
            plan,
            Plan {
                blksize: 512,
                window: 1,
                timeout: None,
                oack: None
            }
        );
        // Options tftplb does not answer alone do not make an OACK either.
        let plan = negotiate(&opts(&[("x-unknown", "1"), ("blksize", "2")]), 10, 8192, 64);
        assert_eq!(plan.oack, None);
        assert_eq!(plan.blksize, 512);
        let plan = negotiate(&opts(&[("blksize", "1468")]), 10, 8192, 64);
        assert_eq!(oack_of(&plan).blksize(), Some(1468));
    }
}
