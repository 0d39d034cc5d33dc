//! `[cluster]`: this front end's sync address, its peers, the shared key, and the clocks and
//! bounds of the session sync (see `cluster`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

/// Bytes a shared key must have at least (it keys HMAC-SHA256).
pub const MIN_KEY_LEN: usize = 16;

/// `max_age` at least: sessions send their progress every 30 s at the longest
/// (`tftp::sync::PROGRESS_INTERVAL`), and three in a row may be lost.
pub const MIN_MAX_AGE: Duration = Duration::from_secs(90);

/// `[cluster]` as written in the file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCluster {
    listen: String,
    #[serde(default)]
    peers: Vec<String>,
    key_file: PathBuf,
    #[serde(default = "default_heartbeat", with = "humantime_serde")]
    heartbeat: Duration,
    #[serde(default = "default_peer_dead_after", with = "humantime_serde")]
    peer_dead_after: Duration,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    #[serde(default = "default_max_age", with = "humantime_serde")]
    max_age: Duration,
}

/// A peer is told this node lives this often.
fn default_heartbeat() -> Duration {
    Duration::from_secs(1)
}

/// A peer silent this long is taken for dead, and its sessions are taken over.
fn default_peer_dead_after() -> Duration {
    Duration::from_secs(3)
}

/// Synced sessions kept at most (of all peers together); more are refused and counted.
fn default_max_sessions() -> usize {
    16_384
}

/// A synced session not heard of for this long is forgotten (its end was lost).
fn default_max_age() -> Duration {
    Duration::from_secs(600)
}

/// Validated `[cluster]`.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    pub key_file: PathBuf,
    /// The key read from `key_file` (surrounding white space trimmed).
    pub key: Vec<u8>,
    pub heartbeat: Duration,
    pub peer_dead_after: Duration,
    pub max_sessions: usize,
    pub max_age: Duration,
}

impl std::fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("key_file", &self.key_file)
            .field("key", &"<secret>")
            .finish_non_exhaustive()
    }
}

impl RawCluster {
    pub fn validate(self, problems: &mut Vec<String>) -> ClusterConfig {
        let listen = parse(&self.listen, "cluster.listen", problems);
        // Peers check a record's sender against its source: the address must be the one
        // datagrams leave from, not a wildcard.
        if listen.is_some_and(|a| a.ip().is_unspecified()) {
            problems.push(
                "cluster.listen: must be this node's own address, not a wildcard (peers \
                 check records against their source)"
                    .into(),
            );
        }
        let peers = self
            .peers
            .iter()
            .enumerate()
            .filter_map(|(i, p)| parse(p, &format!("cluster.peers[{i}]"), problems))
            .collect();
        let key = read_key(&self.key_file, problems);
        if self.heartbeat.is_zero() || self.peer_dead_after < self.heartbeat * 2 {
            problems.push(
                "cluster.peer_dead_after: must be at least twice cluster.heartbeat (above 0)"
                    .into(),
            );
        }
        if self.max_sessions == 0 {
            problems.push("cluster.max_sessions: must be above 0".into());
        }
        if self.max_age < MIN_MAX_AGE {
            problems.push(format!(
                "cluster.max_age: must be at least {}s",
                MIN_MAX_AGE.as_secs()
            ));
        }
        ClusterConfig {
            listen: listen.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            peers,
            key_file: self.key_file,
            key,
            heartbeat: self.heartbeat,
            peer_dead_after: self.peer_dead_after,
            max_sessions: self.max_sessions,
            max_age: self.max_age,
        }
    }
}

fn parse(text: &str, key: &str, problems: &mut Vec<String>) -> Option<SocketAddr> {
    text.parse()
        .map_err(|_| problems.push(format!("{key}: invalid socket address {text:?}")))
        .ok()
}

fn read_key(path: &std::path::Path, problems: &mut Vec<String>) -> Vec<u8> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let key = bytes.trim_ascii().to_vec();
            if key.len() < MIN_KEY_LEN {
                problems.push(format!(
                    "cluster.key_file: {} holds {} bytes; a key needs {MIN_KEY_LEN} at least",
                    path.display(),
                    key.len()
                ));
            }
            key
        }
        Err(e) => {
            problems.push(format!("cluster.key_file: {}: {e}", path.display()));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(text: &str) -> (ClusterConfig, Vec<String>) {
        let raw: RawCluster = toml::from_str(text).unwrap();
        let mut problems = Vec::new();
        (raw.validate(&mut problems), problems)
    }

    #[test]
    fn a_short_or_missing_key_and_bad_addresses_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc\n").unwrap();
        let text = format!(
            "listen = \"nowhere\"\npeers = [\"10.0.0.2:6969\", \"x\"]\nkey_file = {short:?}\n\
             heartbeat = \"2s\"\npeer_dead_after = \"3s\"\n"
        );
        let (_, problems) = validated(&text);
        let joined = problems.join("\n");
        for key in [
            "cluster.listen",
            "cluster.peers[1]",
            "cluster.key_file",
            "cluster.peer_dead_after",
        ] {
            assert!(joined.contains(key), "{key} in {joined}");
        }
        let missing = dir.path().join("absent");
        let (_, problems) = validated(&format!("listen = \"127.0.0.1:1\"\nkey_file = {missing:?}"));
        assert!(problems[0].starts_with("cluster.key_file:"), "{problems:?}");
    }

    #[test]
    fn a_good_section_reads_its_key_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  0123456789abcdef0123\n").unwrap();
        let (c, problems) = validated(&format!(
            "listen = \"127.0.0.1:0\"\npeers = [\"127.0.0.1:9\"]\nkey_file = {path:?}"
        ));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(c.key, b"0123456789abcdef0123");
        assert_eq!(c.peer_dead_after, Duration::from_secs(3));
        assert!(
            !format!("{c:?}").contains("0123456789"),
            "the key stays out of logs"
        );
    }
}
