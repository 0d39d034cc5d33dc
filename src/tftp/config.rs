//! `[tftp]`: the port-69 front end and the timing of every relayed transfer. Validated here,
//! gathered by `config`.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::config::keys::{check_unique, parse_addr};
use crate::protocol::options::{MAX_BLKSIZE, MIN_BLKSIZE};

#[derive(Debug, Clone)]
pub struct TftpConfig {
    pub listen: Vec<SocketAddr>,
    pub setup_timeout: Duration,
    pub stall_timeout: Duration,
    pub setup_attempts: u32,
    pub idle_timeout: Duration,
    pub max_sessions: usize,
    pub shutdown_grace: Duration,
    /// The pool requests go to when no route matches.
    pub default_pool: String,
    /// How long a MAC learned from a request stays attached to the client IP.
    pub mac_memory: Duration,
    /// Client IPs whose learned MAC is remembered at most (least recently used forgotten).
    pub mac_memory_max: usize,
    /// Read the kernel's neighbour table for on-link clients' MACs.
    pub neighbour_lookup: bool,
    /// Bind listen addresses that are not (yet) on this machine: a floating address (VRRP)
    /// that arrives when this node becomes active.
    pub freebind: bool,
    /// Blocks of a read fetched ahead of the client (0: relay packet for packet).
    pub read_ahead: u16,
    /// Largest blksize relayed: a request asking more is relayed asking this much.
    pub max_blksize: u16,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTftp {
    #[serde(default = "default_listen")]
    listen: Vec<String>,
    #[serde(default = "default_setup_timeout", with = "humantime_serde")]
    setup_timeout: Duration,
    #[serde(default = "default_stall_timeout", with = "humantime_serde")]
    stall_timeout: Duration,
    #[serde(default = "default_setup_attempts")]
    setup_attempts: u32,
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    idle_timeout: Duration,
    #[serde(default = "default_max_sessions")]
    max_sessions: usize,
    #[serde(default = "default_shutdown_grace", with = "humantime_serde")]
    shutdown_grace: Duration,
    default_pool: Option<String>,
    #[serde(default = "default_mac_memory", with = "humantime_serde")]
    mac_memory: Duration,
    #[serde(default = "default_mac_memory_max")]
    mac_memory_max: usize,
    #[serde(default)]
    neighbour_lookup: bool,
    #[serde(default)]
    freebind: bool,
    #[serde(default = "default_read_ahead")]
    read_ahead: u16,
    #[serde(default = "default_max_blksize")]
    max_blksize: u16,
}

impl Default for RawTftp {
    fn default() -> Self {
        RawTftp {
            listen: default_listen(),
            setup_timeout: default_setup_timeout(),
            stall_timeout: default_stall_timeout(),
            setup_attempts: default_setup_attempts(),
            idle_timeout: default_idle_timeout(),
            max_sessions: default_max_sessions(),
            shutdown_grace: default_shutdown_grace(),
            default_pool: None,
            mac_memory: default_mac_memory(),
            mac_memory_max: default_mac_memory_max(),
            neighbour_lookup: false,
            freebind: false,
            read_ahead: default_read_ahead(),
            max_blksize: default_max_blksize(),
        }
    }
}

fn default_listen() -> Vec<String> {
    vec!["0.0.0.0:69".to_string()]
}

/// Well under the first retry of PXE clients (iPXE 0.25 s backoff start, EDK2 4 s).
fn default_setup_timeout() -> Duration {
    Duration::from_millis(700)
}

/// A backend that sends no DATA for this long mid-transfer is replaced (when `resume` is on).
fn default_stall_timeout() -> Duration {
    Duration::from_secs(2)
}

/// Two hops per block cost a lock-step transfer through a pure relay about half its speed; two
/// blocks fetched ahead give most of it back, four no more (bench/README.md: 0.92 and 0.95 of
/// direct against 0.62), at 4.4 KiB per session at blksize 1468.
fn default_read_ahead() -> u16 {
    2
}

/// A session's memory follows the blksize the client asks for (its receive buffer, its
/// read-ahead ring): 65464 would cost ~190 KiB a session. 8192 fits a jumbo frame (1468 fits
/// Ethernet); a client asking more gets this much, as RFC 2348 lets a server answer.
fn default_max_blksize() -> u16 {
    8192
}

fn default_setup_attempts() -> u32 {
    3
}

/// Above EDK2's retry budget (4 s × 6 tries), short enough to free state.
fn default_idle_timeout() -> Duration {
    Duration::from_secs(30)
}

fn default_max_sessions() -> usize {
    10_000
}

/// Running transfers may finish for this long after SIGTERM; a 5 MiB kernel needs seconds.
fn default_shutdown_grace() -> Duration {
    Duration::from_secs(30)
}

/// A boot (NBP, config, kernel, initrd) takes minutes at most.
/// One entry is ~40 bytes: 65,536 clients cost a few MiB at most, more than any boot network has.
fn default_mac_memory_max() -> usize {
    65_536
}
fn default_mac_memory() -> Duration {
    Duration::from_secs(600)
}

pub fn validate_tftp(raw: RawTftp, problems: &mut Vec<String>) -> TftpConfig {
    if raw.listen.is_empty() {
        problems.push("tftp.listen: at least one address is needed".into());
    }
    let listen = raw
        .listen
        .iter()
        .enumerate()
        .filter_map(|(i, a)| parse_addr(&format!("tftp.listen[{i}]"), a, problems))
        .collect::<Vec<_>>();
    check_unique(&listen, "tftp.listen", problems);
    if raw.setup_timeout.is_zero() {
        problems.push("tftp.setup_timeout: must be above 0".into());
    }
    if raw.setup_attempts == 0 {
        problems.push("tftp.setup_attempts: must be at least 1".into());
    }
    if raw.idle_timeout < raw.setup_timeout {
        problems.push("tftp.idle_timeout: must not be shorter than tftp.setup_timeout".into());
    }
    if raw.mac_memory_max == 0 {
        problems.push("tftp.mac_memory_max: must be at least 1".into());
    }
    if raw.max_sessions == 0 {
        problems.push("tftp.max_sessions: must be at least 1".into());
    }
    if raw.stall_timeout.is_zero() {
        problems.push("tftp.stall_timeout: must be above 0".into());
    }
    if raw.read_ahead == 1 || raw.read_ahead > MAX_READ_AHEAD {
        problems.push(format!(
            "tftp.read_ahead: 2 to {MAX_READ_AHEAD} blocks, or 0 to turn read-ahead off (one block \
             ahead leaves each block's two round trips in series: nothing gained)"
        ));
    }
    if !(MIN_BLKSIZE..=MAX_BLKSIZE).contains(&raw.max_blksize) {
        problems.push(format!(
            "tftp.max_blksize: {MIN_BLKSIZE} to {MAX_BLKSIZE} bytes (RFC 2348)"
        ));
    }
    TftpConfig {
        listen,
        setup_timeout: raw.setup_timeout,
        stall_timeout: raw.stall_timeout,
        setup_attempts: raw.setup_attempts,
        idle_timeout: raw.idle_timeout,
        max_sessions: raw.max_sessions,
        shutdown_grace: raw.shutdown_grace,
        default_pool: raw.default_pool.unwrap_or_default(),
        mac_memory: raw.mac_memory,
        mac_memory_max: raw.mac_memory_max,
        neighbour_lookup: raw.neighbour_lookup,
        freebind: raw.freebind,
        read_ahead: raw.read_ahead,
        max_blksize: raw.max_blksize,
    }
}

/// More blocks ahead buy nothing for lock-step and cost memory in every session.
const MAX_READ_AHEAD: u16 = 64;

/// Timeouts a session runs with (from `[tftp]`).
#[derive(Debug, Clone, Copy)]
pub struct RelaySettings {
    pub setup_timeout: Duration,
    pub setup_attempts: u32,
    pub idle_timeout: Duration,
    pub stall_timeout: Duration,
    /// Blocks of a read fetched ahead of the client (0: off).
    pub read_ahead: u16,
}

impl TftpConfig {
    /// What each relayed session needs of this section.
    pub fn relay_settings(&self) -> RelaySettings {
        RelaySettings {
            setup_timeout: self.setup_timeout,
            setup_attempts: self.setup_attempts,
            idle_timeout: self.idle_timeout,
            stall_timeout: self.stall_timeout,
            read_ahead: self.read_ahead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validated(raw: RawTftp) -> (TftpConfig, Vec<String>) {
        let mut problems = Vec::new();
        (validate_tftp(raw, &mut problems), problems)
    }

    #[test]
    fn max_blksize_defaults_to_a_jumbo_frame_and_is_checked_by_key_path() {
        let (c, problems) = validated(RawTftp::default());
        assert_eq!((c.max_blksize, problems.len()), (8192, 0));
        for bad in [0, 7, 65465] {
            let (_, problems) = validated(RawTftp {
                max_blksize: bad,
                ..RawTftp::default()
            });
            assert_eq!(problems.len(), 1, "{bad}");
            assert!(
                problems[0].starts_with("tftp.max_blksize: "),
                "{problems:?}"
            );
        }
        for good in [8, 1468, 65464] {
            let (c, problems) = validated(RawTftp {
                max_blksize: good,
                ..RawTftp::default()
            });
            assert_eq!((c.max_blksize, problems.len()), (good, 0));
        }
    }
}
