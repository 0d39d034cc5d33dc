//! Metric names, in one place, and the one function that records a finished session.
//!
//! Sessions count their packets locally and report once when they end, so the relayed-packet
//! path never touches the metrics registry. Without an installed recorder (tests, `get`), every
//! call here is a no-op.

use std::net::SocketAddr;

use crate::tftp::relay::Report;

pub const SESSIONS_ACTIVE: &str = "tftplb_sessions_active";
pub const SESSIONS_TOTAL: &str = "tftplb_sessions_total";
pub const SESSION_DURATION: &str = "tftplb_session_duration_seconds";
pub const BYTES_RELAYED: &str = "tftplb_file_bytes_relayed_total";
pub const PACKETS_RELAYED: &str = "tftplb_packets_relayed_total";
pub const PACKETS_DROPPED: &str = "tftplb_session_packets_dropped_total";
pub const REQUESTS_REFUSED: &str = "tftplb_requests_refused_total";
pub const REQUESTS_RETRANSMITTED: &str = "tftplb_requests_retransmitted_total";
pub const BACKEND_UP: &str = "tftplb_backend_up";
pub const BACKEND_INCONSISTENT: &str = "tftplb_backend_inconsistent";
pub const PROBE_DURATION: &str = "tftplb_probe_duration_seconds";
pub const FAILOVERS: &str = "tftplb_failovers_total";
/// DNS queries answered, by `name` (the configured name, or `nxdomain` / `outside`), `type` and
/// `rcode`.
pub const DNS_QUERIES: &str = "tftplb_dns_queries_total";

/// Counts a finished session and writes its log line.
pub fn record_session(pool: &str, file: &str, client: SocketAddr, r: &Report) {
    let backend = r
        .backend
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".into());
    let outcome = r.outcome.as_str();
    let labels = [
        ("pool", pool.to_string()),
        ("backend", backend.clone()),
        ("outcome", outcome.to_string()),
    ];
    metrics::counter!(SESSIONS_TOTAL, &labels).increment(1);
    metrics::histogram!(SESSION_DURATION, "pool" => pool.to_string())
        .record(r.elapsed.as_secs_f64());
    let by_backend = [("pool", pool.to_string()), ("backend", backend.clone())];
    metrics::counter!(BYTES_RELAYED, &by_backend).increment(r.file_bytes);
    metrics::counter!(PACKETS_RELAYED, "direction" => "to-client").increment(r.packets_to_client);
    metrics::counter!(PACKETS_RELAYED, "direction" => "to-backend").increment(r.packets_to_backend);
    metrics::counter!(PACKETS_DROPPED).increment(r.dropped);
    tracing::info!(
        %client, file, pool, backend, outcome,
        bytes = r.file_bytes,
        blocks = r.blocks,
        blksize = r.negotiated.blksize,
        windowsize = r.negotiated.windowsize,
        ms = r.elapsed.as_millis() as u64,
        "session end"
    );
}
