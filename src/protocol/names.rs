//! File names as clients send them: bytes, not necessarily UTF-8 (a backend serves any bytes
//! its file system has). Here: the rules a name must pass before it reaches a backend
//! ([`check_filename`]), the one form every rule matches against ([`normalise`]), the globs of
//! routes and pools ([`NameGlobs`]), and how a name is shown in a log ([`display`]).
//!
//! Windows boot servers (WDS, PVS) treat `\` as `/`, drop trailing dots and spaces from path
//! segments and ignore case. A rule that says `thin/*` must see `./thin/x`, `thin//x`,
//! `thin\x` and `THIN/x` (where it ignores case) as that same file, or it is walked around.
//! Pure functions, no I/O.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// Longest filename accepted (bytes); longer requests are refused, never forwarded.
pub const MAX_FILENAME: usize = 255;

/// Names that never reach a backend: empty, too long, with NUL, with a `..` segment (either
/// separator, and with the trailing dots or spaces Windows drops: `.. `, `...`), and the
/// Windows-only escapes: a drive (`C:`), a UNC or device path (`\\host\share`, `\\?\`), an
/// NTFS stream (`name:stream`; a segment that is a MAC address with `:` is fine, iPXE asks for
/// those). A leading `/` is fine: many configs ask for `/pxelinux.0`.
pub fn check_filename(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty filename");
    }
    if name.len() > MAX_FILENAME {
        return Err("filename longer than 255 bytes");
    }
    if name.contains(&0) {
        return Err("filename contains NUL");
    }
    let unc = name.len() >= 2 && is_separator(name[0]) && is_separator(name[1]);
    if unc && name[..2].contains(&b'\\') {
        return Err("filename must not be a UNC or device path");
    }
    for segment in name.split(|&b| is_separator(b)) {
        if is_dot_dot(segment) {
            return Err("filename must not contain '..'");
        }
        if segment.contains(&b':') && !is_mac(segment) {
            return Err("filename must not contain ':' (a Windows drive or stream)");
        }
    }
    Ok(())
}

fn is_separator(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// `..`, or what Windows reads as `..`: only dots and spaces, two dots or more.
fn is_dot_dot(segment: &[u8]) -> bool {
    segment.iter().all(|&b| b == b'.' || b == b' ')
        && segment.iter().filter(|&&b| b == b'.').count() >= 2
}

/// Six hex pairs joined by `:` (an extension after a `.` allowed): `aa:bb:cc:dd:ee:ff.ipxe`.
fn is_mac(segment: &[u8]) -> bool {
    let stem = segment.split(|&b| b == b'.').next().unwrap_or(segment);
    stem.len() == 17
        && stem
            .chunks(3)
            .all(|c| c[..2].iter().all(u8::is_ascii_hexdigit) && (c.len() == 2 || c[2] == b':'))
}

/// The name every rule matches against: `\` read as `/`, no leading, repeated or trailing
/// separators, no `.` segments, and each segment without the trailing dots and spaces Windows
/// drops. Case is kept (rules that ignore case say so in their globs).
pub fn normalise(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    for segment in name.split(|&b| is_separator(b)) {
        let end = segment
            .iter()
            .rposition(|&b| b != b'.' && b != b' ')
            .map_or(0, |i| i + 1);
        let segment = if segment == b".." {
            segment
        } else {
            &segment[..end]
        };
        if segment.is_empty() {
            continue; // empty, `.`, or dots and spaces only
        }
        if !out.is_empty() {
            out.push(b'/');
        }
        out.extend_from_slice(segment);
    }
    out
}

/// A name for a log line or a metric: as it is when it is printable UTF-8, escaped otherwise.
pub fn display(name: &[u8]) -> String {
    match std::str::from_utf8(name) {
        Ok(s) if !s.chars().any(char::is_control) => s.to_string(),
        _ => name.escape_ascii().to_string(),
    }
}

/// File globs of a route or a pool, matched against [`normalise`]d names; `*` stops at `/`.
#[derive(Debug, Clone)]
pub struct NameGlobs {
    set: GlobSet,
}

impl NameGlobs {
    /// The globs (validated with the configuration; one that does not build is left out);
    /// `None` when there are none (every name matches).
    pub fn new(globs: &[String], ignore_case: bool) -> Option<NameGlobs> {
        if globs.is_empty() {
            return None;
        }
        let mut set = GlobSetBuilder::new();
        for g in globs {
            let glob = GlobBuilder::new(g)
                .literal_separator(true)
                .case_insensitive(ignore_case)
                .build();
            if let Ok(glob) = glob {
                set.add(glob);
            }
        }
        set.build().ok().map(|set| NameGlobs { set })
    }

    /// Whether a normalised name matches one of the globs.
    pub fn matches(&self, normalised: &[u8]) -> bool {
        self.set.is_match(Path::new(OsStr::from_bytes(normalised)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str) -> Result<(), &'static str> {
        check_filename(name.as_bytes())
    }

    #[test]
    fn filenames_are_checked() {
        assert!(check("/pxelinux.0").is_ok());
        assert!(check("pxelinux.cfg/01-aa-bb").is_ok());
        assert!(check("a/../b").is_err());
        assert!(check("..\\x").is_err());
        assert!(check("..").is_err());
        assert!(check("a..b").is_ok(), "only whole components");
        assert!(check(&"x".repeat(256)).is_err());
        assert!(check("").is_err());
    }

    #[test]
    fn windows_escapes_are_refused() {
        for bad in [
            "C:\\boot\\x",
            "c:x",
            "\\\\host\\share\\x",
            "\\\\?\\C:\\x",
            "/\\host/x",
            "thin/.. /x",
            "thin/.../x",
            "a/..\\t",
            "thin/x:stream",
            "thin/x::$DATA",
        ] {
            assert!(check(bad).is_err(), "{bad:?}");
        }
        for good in [
            "ipxe/aa:bb:cc:01:02:03.ipxe",
            "AA:BB:CC:01:02:03",
            "//pxelinux.0",
            "thin/x.",
            "a.b/c",
        ] {
            assert_eq!(check(good), Ok(()), "{good:?}");
        }
        assert!(
            check_filename(b"\xff\xfeboot").is_ok(),
            "not UTF-8 is not a reason"
        );
    }

    #[test]
    fn names_are_normalised_as_windows_servers_read_them() {
        for name in [
            "thin/x",
            "/thin/x",
            "./thin/x",
            "thin//x",
            "thin\\x",
            "\\thin\\x",
            "thin/./x",
            "thin. /x ",
            ".\\thin\\\\x",
        ] {
            assert_eq!(normalise(name.as_bytes()), b"thin/x", "{name:?}");
        }
        assert_eq!(
            normalise(b"THIN/x"),
            b"THIN/x",
            "case is the globs' business"
        );
        assert_eq!(normalise(b"pxelinux.0"), b"pxelinux.0");
    }

    #[test]
    fn globs_match_normalised_names_and_may_ignore_case() {
        let globs = vec!["thin/*".to_string()];
        let exact = NameGlobs::new(&globs, false).unwrap();
        let any_case = NameGlobs::new(&globs, true).unwrap();
        assert!(exact.matches(b"thin/x"));
        assert!(!exact.matches(b"THIN/x"));
        assert!(any_case.matches(b"THIN/X"));
        assert!(!exact.matches(b"thin/a/b"), "* stops at /");
        assert!(
            exact.matches(b"thin/\xff"),
            "bytes that are not UTF-8 match too"
        );
        assert!(NameGlobs::new(&[], true).is_none());
    }

    #[test]
    fn names_are_displayed_escaped_when_not_printable() {
        assert_eq!(display(b"pxelinux.0"), "pxelinux.0");
        assert_eq!(display(b"\xffboot"), "\\xffboot");
        assert_eq!(display(b"a\nb"), "a\\nb");
    }
}
