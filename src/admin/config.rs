//! The `[admin]` section: raw serde struct, validation, and the typed [`AdminConfig`].
//!
//! Kept apart from `src/config/mod.rs` so that file only gains one field and one call. The admin
//! listener is on by default, on loopback (`127.0.0.1:9069`): the status page and `/metrics`
//! are what an operator reaches for first, and loopback exposes them to nobody else. Anywhere
//! else it needs a bearer token (`token_file`), and validation refuses the file without one, so
//! `tftplb check` catches it before a restart. The token is read during validation for the same
//! reason (a missing or empty file is a configuration problem), and never printed.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A validated `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Whether the admin HTTP listener runs at all.
    pub enabled: bool,
    pub listen: SocketAddr,
    /// Whether `listen` was written in the file. A busy default port only turns the listener
    /// off (with a warning); a busy address the operator asked for stops startup.
    pub listen_explicit: bool,
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` (trimmed).
    pub token: Option<Token>,
    /// Host names the listener answers to besides IP addresses and `localhost` (lowercase,
    /// without a trailing dot): a request naming any other host is refused, so a web page
    /// whose name was rebound to this address cannot use the operator's browser against it.
    pub hosts: Vec<String>,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            enabled: default_enabled(),
            listen: DEFAULT_LISTEN.parse().expect("default admin address"),
            listen_explicit: false,
            token_file: None,
            token: None,
            hosts: Vec::new(),
        }
    }
}

/// A bearer token: compared in constant time, never shown by `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    pub fn new(secret: impl Into<String>) -> Token {
        Token(secret.into())
    }

    /// Whether `offered` is this token (time independent of where they differ).
    pub fn matches(&self, offered: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        mine.len() == offered.len()
            && mine
                .iter()
                .zip(offered)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// `[admin]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    #[serde(default = "default_enabled")]
    enabled: bool,
    listen: Option<String>,
    token_file: Option<PathBuf>,
    #[serde(default)]
    hosts: Vec<String>,
}

impl Default for RawAdmin {
    fn default() -> RawAdmin {
        RawAdmin {
            enabled: default_enabled(),
            listen: None,
            token_file: None,
            hosts: Vec::new(),
        }
    }
}

fn default_enabled() -> bool {
    true
}

/// The default admin address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9069";

/// Checks `[admin]`, adding each problem (with its key path) to `problems`.
pub fn validate_admin(raw: RawAdmin, problems: &mut Vec<String>) -> AdminConfig {
    let listen_explicit = raw.listen.is_some();
    let text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = text.parse::<SocketAddr>().unwrap_or_else(|_| {
        problems.push(format!("admin.listen: invalid socket address {text:?}"));
        AdminConfig::default().listen
    });
    let token = raw
        .token_file
        .as_deref()
        .and_then(|p| read_token(p, problems));
    if raw.enabled && raw.token_file.is_none() && !listen.ip().is_loopback() {
        problems.push(format!(
            "admin.token_file: required when admin.listen ({listen}) is not a loopback address \
             (anyone who reaches it could drain backends and reload the configuration)"
        ));
    }
    AdminConfig {
        enabled: raw.enabled,
        listen,
        listen_explicit,
        token_file: raw.token_file,
        token,
        hosts: validate_hosts(&raw.hosts, problems),
    }
}

/// `[admin] hosts`: plain DNS names (no port, no scheme), kept lowercase without a final dot.
fn validate_hosts(hosts: &[String], problems: &mut Vec<String>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let name = h.trim_end_matches('.').to_ascii_lowercase();
        let valid = !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        if valid {
            out.push(name);
        } else {
            problems.push(format!(
                "admin.hosts[{i}]: {h:?} is not a host name (no port or scheme)"
            ));
        }
    }
    out
}

fn read_token(path: &Path, problems: &mut Vec<String>) -> Option<Token> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => {
            problems.push(format!("admin.token_file: {} is empty", path.display()));
            None
        }
        Ok(text) => Some(Token(text.trim().to_string())),
        Err(e) => {
            problems.push(format!(
                "admin.token_file: cannot read {}: {e}",
                path.display()
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<AdminConfig, Vec<String>> {
        let raw: RawAdmin = toml::from_str(toml_text).map_err(|e| vec![e.to_string()])?;
        let mut problems = Vec::new();
        let c = validate_admin(raw, &mut problems);
        if problems.is_empty() {
            Ok(c)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn defaults_to_loopback_without_token() {
        let c = check("").unwrap();
        assert!(c.enabled);
        assert_eq!(c.listen, "127.0.0.1:9069".parse().unwrap());
        assert_eq!(c.token, None);
        assert!(!c.listen_explicit);
        assert!(
            check("listen = \"127.0.0.1:9069\"")
                .unwrap()
                .listen_explicit
        );
    }

    #[test]
    fn non_loopback_needs_a_token() {
        let p = check("listen = \"0.0.0.0:9069\"").unwrap_err();
        assert!(p[0].starts_with("admin.token_file: required"), "{p:?}");
        assert!(check("listen = \"[::1]:9069\"").is_ok());
        assert!(check("listen = \"0.0.0.0:9069\"\nenabled = false").is_ok());
    }

    #[test]
    fn token_file_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cret\n").unwrap();
        let text = format!(
            "listen = \"0.0.0.0:0\"\ntoken_file = {:?}",
            f.display().to_string()
        );
        let c = check(&text).unwrap();
        assert!(c.token.as_ref().unwrap().matches(b"s3cret"));
        assert!(!c.token.as_ref().unwrap().matches(b"s3cre"));
        assert_eq!(format!("{:?}", c.token.unwrap()), "Token(<redacted>)");
        std::fs::write(&f, " \n").unwrap();
        assert!(check(&text).unwrap_err()[0].contains("is empty"));
        let missing = "token_file = \"/nonexistent/tftplb-token\"";
        assert!(check(missing).unwrap_err()[0].contains("cannot read"));
    }

    #[test]
    fn hosts_are_plain_names() {
        let c = check("hosts = [\"TFTPLB.corp.example.\"]").unwrap();
        assert_eq!(c.hosts, vec!["tftplb.corp.example".to_string()]);
        let p = check("hosts = [\"tftplb:9069\", \"http://x\"]").unwrap_err();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("admin.hosts[0]"), "{p:?}");
    }

    #[test]
    fn bad_address_and_unknown_key_are_errors() {
        assert!(check("listen = \"localhost\"").unwrap_err()[0].starts_with("admin.listen"));
        assert!(check("port = 1").is_err());
    }
}
