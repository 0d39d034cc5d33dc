//! TFTP options (RFC 2347 framework; blksize RFC 2348, timeout/tsize RFC 2349, windowsize RFC 7440).
//!
//! [`Options`] keeps every option of a packet as sent, in order, unknown ones included, so a
//! relay can pass a request through unchanged. [`Negotiated`] is what a transfer actually uses,
//! read from the server's OACK (never from the client's request: a server may lower blksize).

/// Smallest and largest blksize of RFC 2348.
pub const MIN_BLKSIZE: u16 = 8;
pub const MAX_BLKSIZE: u16 = 65464;
/// The blksize of a transfer without options.
pub const DEFAULT_BLKSIZE: u16 = 512;

/// Options of a request or an OACK, in the order they were sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    entries: Vec<(String, String)>,
}

impl Options {
    pub fn push(&mut self, name: &str, value: &str) {
        self.entries.push((name.to_string(), value.to_string()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The value of an option; names compare case-insensitively (RFC 2347).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn get_num<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        self.get(name).and_then(|v| v.trim().parse().ok())
    }

    /// `blksize`, when present and within RFC 2348's range.
    pub fn blksize(&self) -> Option<u16> {
        self.get_num::<u16>("blksize")
            .filter(|b| (MIN_BLKSIZE..=MAX_BLKSIZE).contains(b))
    }

    /// `windowsize`, when present and within RFC 7440's range (1..=65535).
    pub fn windowsize(&self) -> Option<u16> {
        self.get_num::<u16>("windowsize").filter(|w| *w >= 1)
    }

    pub fn tsize(&self) -> Option<u64> {
        self.get_num("tsize")
    }

    /// `timeout` in whole seconds (RFC 2349: 1..=255).
    pub fn timeout(&self) -> Option<u8> {
        self.get_num::<u8>("timeout").filter(|t| *t >= 1)
    }

    /// Lowers a `blksize` above `max` to `max` (the name stays as sent); whether it did.
    /// RFC 2348 lets a server answer a smaller blksize than asked, so a client must accept it.
    pub fn cap_blksize(&mut self, max: u16) -> bool {
        self.cap("blksize", self.blksize(), max)
    }

    /// Lowers a `windowsize` above `max` to `max`; whether it did (RFC 7440 lets a server
    /// answer a smaller one).
    pub fn cap_windowsize(&mut self, max: u16) -> bool {
        self.cap("windowsize", self.windowsize(), max)
    }

    fn cap(&mut self, option: &str, now: Option<u16>, max: u16) -> bool {
        if now.is_none_or(|n| n <= max) {
            return false;
        }
        for (name, value) in &mut self.entries {
            if name.eq_ignore_ascii_case(option) {
                *value = max.to_string();
            }
        }
        true
    }

    /// Removes an option (names compare case-insensitively); whether it was there. A server
    /// may leave any option unanswered (RFC 2347), so a client must do without it.
    pub fn remove(&mut self, option: &str) -> bool {
        let before = self.entries.len();
        self.entries
            .retain(|(name, _)| !name.eq_ignore_ascii_case(option));
        self.entries.len() != before
    }

    /// Whether a request's options can be negotiated unambiguously: each option once, and
    /// blksize and windowsize, when given, numbers in their RFC ranges. A request that fails
    /// this would make a good server's OACK look like no answer to it (which value did it
    /// take?), so it is refused before it reaches one; the reason goes into the ERROR 8.
    pub fn check_request(&self) -> Result<(), &'static str> {
        for (i, (name, _)) in self.entries.iter().enumerate() {
            let again = self.entries[..i]
                .iter()
                .any(|(k, _)| k.eq_ignore_ascii_case(name));
            if again {
                return Err("an option is given twice");
            }
        }
        if self.get("blksize").is_some() && self.blksize().is_none() {
            return Err("blksize must be a number from 8 to 65464");
        }
        if self.get("windowsize").is_some() && self.windowsize().is_none() {
            return Err("windowsize must be a number from 1 to 65535");
        }
        Ok(())
    }
}

/// The parameters a transfer runs with, once the server has answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    pub blksize: u16,
    pub windowsize: u16,
    pub tsize: Option<u64>,
    pub timeout: Option<u8>,
}

impl Default for Negotiated {
    /// A transfer without options (RFC 1350): 512-byte blocks, lock-step.
    fn default() -> Self {
        Negotiated {
            blksize: DEFAULT_BLKSIZE,
            windowsize: 1,
            tsize: None,
            timeout: None,
        }
    }
}

impl Negotiated {
    /// What an OACK settles. Options the server left out keep their RFC 1350 defaults.
    pub fn from_oack(oack: &Options) -> Negotiated {
        Negotiated {
            blksize: oack.blksize().unwrap_or(DEFAULT_BLKSIZE),
            windowsize: oack.windowsize().unwrap_or(1),
            tsize: oack.tsize(),
            timeout: oack.timeout(),
        }
    }
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

    #[test]
    fn names_are_case_insensitive() {
        let o = opts(&[("BLKSIZE", "1432"), ("TSize", "0")]);
        assert_eq!(o.blksize(), Some(1432));
        assert_eq!(o.tsize(), Some(0));
    }

    #[test]
    fn out_of_range_values_are_ignored() {
        assert_eq!(opts(&[("blksize", "7")]).blksize(), None);
        assert_eq!(opts(&[("blksize", "65465")]).blksize(), None);
        assert_eq!(opts(&[("windowsize", "0")]).windowsize(), None);
        assert_eq!(opts(&[("timeout", "0")]).timeout(), None);
        assert_eq!(opts(&[("blksize", "abc")]).blksize(), None);
    }

    #[test]
    fn requests_with_ambiguous_options_are_refused() {
        assert_eq!(
            opts(&[("blksize", "1468"), ("tsize", "0")]).check_request(),
            Ok(())
        );
        assert_eq!(opts(&[("msftwindow", "31416")]).check_request(), Ok(()));
        for bad in [
            opts(&[("blksize", "1468"), ("blksize", "1468")]),
            opts(&[("blksize", "512"), ("BLKSIZE", "1468")]),
            opts(&[("blksize", "7")]),
            opts(&[("blksize", "65465")]),
            opts(&[("blksize", "big")]),
            opts(&[("windowsize", "0")]),
            opts(&[("windowsize", "65536")]),
        ] {
            assert!(bad.check_request().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_blksize_above_the_cap_is_lowered_in_place() {
        let mut o = opts(&[("tsize", "0"), ("BlkSize", "65464"), ("windowsize", "4")]);
        assert!(o.cap_blksize(8192));
        assert_eq!(
            o.iter().collect::<Vec<_>>(),
            vec![("tsize", "0"), ("BlkSize", "8192"), ("windowsize", "4")]
        );
        assert!(!o.cap_blksize(8192), "already within");
        assert!(!opts(&[("blksize", "1468")]).cap_blksize(8192));
        assert!(!opts(&[("tsize", "0")]).cap_blksize(512));
        let mut o = opts(&[("windowsize", "16"), ("TSize", "0")]);
        assert!(o.cap_windowsize(4) && !o.cap_windowsize(4));
        assert!(o.remove("tsize") && !o.remove("tsize"));
        assert_eq!(o.iter().collect::<Vec<_>>(), vec![("windowsize", "4")]);
    }

    #[test]
    fn negotiated_comes_from_the_oack_with_defaults() {
        let n = Negotiated::from_oack(&opts(&[("tsize", "4096")]));
        assert_eq!(n.blksize, 512);
        assert_eq!(n.windowsize, 1);
        assert_eq!(n.tsize, Some(4096));
        let n = Negotiated::from_oack(&opts(&[("blksize", "1468"), ("windowsize", "16")]));
        assert_eq!((n.blksize, n.windowsize), (1468, 16));
    }
}
