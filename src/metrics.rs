//! Metric names, in one place, and the helpers that record them. The helpers take plain values
//! (names, addresses, counts), never types of the modules that call them, so this sits at the
//! bottom of the layers and everything may use it.
//!
//! Sessions count their packets locally and report once when they end, so the relayed-packet
//! path never touches the metrics registry. Without an installed recorder (tests, `get`), every
//! call here is a no-op.

use std::net::SocketAddr;
use std::time::Duration;

pub const SESSIONS_ACTIVE: &str = "tftplb_sessions_active";
pub const SESSIONS_TOTAL: &str = "tftplb_sessions_total";
pub const SESSION_DURATION: &str = "tftplb_session_duration_seconds";
pub const BYTES_RELAYED: &str = "tftplb_file_bytes_relayed_total";
pub const PACKETS_RELAYED: &str = "tftplb_packets_relayed_total";
pub const PACKETS_DROPPED: &str = "tftplb_session_packets_dropped_total";
/// Datagrams of sessions the kernel would not send (ENOBUFS, EPERM…): lost, not fatal.
pub const SEND_ERRORS: &str = "tftplb_session_send_errors_total";
pub const REQUESTS_REFUSED: &str = "tftplb_requests_refused_total";
pub const REQUESTS_RETRANSMITTED: &str = "tftplb_requests_retransmitted_total";
/// Refusals on port 69 left without their ERROR: the source had its share of ERRORs.
pub const ERRORS_WITHHELD: &str = "tftplb_error_replies_withheld_total";
pub const BACKEND_UP: &str = "tftplb_backend_up";
pub const BACKEND_INCONSISTENT: &str = "tftplb_backend_inconsistent";
pub const PROBE_DURATION: &str = "tftplb_probe_duration_seconds";
pub const FAILOVERS: &str = "tftplb_failovers_total";
pub const ROUTE_HITS: &str = "tftplb_route_hits_total";
/// Client IPs whose MAC is remembered now, and how many were forgotten to stay under the cap.
pub const MAC_MEMORY_CLIENTS: &str = "tftplb_mac_memory_clients";
pub const MAC_MEMORY_EVICTIONS: &str = "tftplb_mac_memory_evictions_total";
/// Requests whose blksize was above `[tftp] max_blksize`, relayed asking that much.
pub const BLKSIZE_LOWERED: &str = "tftplb_requests_blksize_lowered_total";
/// Requests whose options a route's policy changed (options left out, windowsize lowered).
pub const OPTIONS_REWRITTEN: &str = "tftplb_requests_options_rewritten_total";
/// Requests a backend did not answer within `setup_timeout` (busy or dead: its probes say
/// which), by pool and backend.
pub const SETUP_TIMEOUTS: &str = "tftplb_backend_setup_timeouts_total";
/// The cluster sync (`[cluster]`): records sent to peers, received from them, refused (by
/// `reason`), sessions held for peers, peers alive, and takeovers by `result`.
pub const CLUSTER_RECORDS_SENT: &str = "tftplb_cluster_records_sent_total";
pub const CLUSTER_RECORDS_RECEIVED: &str = "tftplb_cluster_records_received_total";
pub const CLUSTER_RECORDS_REJECTED: &str = "tftplb_cluster_records_rejected_total";
pub const CLUSTER_SESSIONS_SYNCED: &str = "tftplb_cluster_sessions_synced";
pub const CLUSTER_PEER_UP: &str = "tftplb_cluster_peer_up";
pub const CLUSTER_TAKEOVERS: &str = "tftplb_cluster_takeovers_total";
/// Session events the cluster sync could not take (its queue was full).
pub const SYNC_EVENTS_LOST: &str = "tftplb_cluster_events_lost_total";
/// Datagrams a backend-facing socket got while waiting for a takeover's answer that could not
/// be it (a late packet of an older transfer on the same port, another blksize).
pub const STRAYS: &str = "tftplb_backend_stray_replies_total";
/// Sockets a session let go of that stay bound for a while (quarantine, a write's dally), and
/// those closed at once because the cap on them was reached.
pub const SOCKETS_LINGERING: &str = "tftplb_sockets_lingering";
pub const SOCKETS_CLOSED_EARLY: &str = "tftplb_sockets_closed_early_total";
/// Ports a new backend leg was given and passed over: a socket closed early held them.
pub const PORTS_PASSED_OVER: &str = "tftplb_ports_passed_over_total";
/// Log lines dropped because the log's writer fell behind (its queue was full).
pub const LOG_LINES_DROPPED: &str = "tftplb_log_lines_dropped_total";
/// DNS queries answered, by `name` (the configured name, or `nxdomain` / `outside`), `type` and
/// `rcode`.
pub const DNS_QUERIES: &str = "tftplb_dns_queries_total";
/// DNS answers over the `[dns.rrl]` rate: dropped, and sent truncated instead (slipped); by
/// `mode`, `enforce` or `log-only` (counted, answered anyway).
pub const DNS_RRL_DROPPED: &str = "tftplb_dns_rrl_dropped_total";
pub const DNS_RRL_SLIPPED: &str = "tftplb_dns_rrl_slipped_total";
/// Boot files from memory (`[pool.cache]`): transfers served from a copy, requests for a
/// cacheable file relayed instead (no fresh copy), downloads that fill copies by `result`
/// (`new`, `same`, `changed`, `gone`, `too-large`, `failed`), copies evicted for room, bytes
/// sent from memory, and the copies held.
pub const CACHE_HITS: &str = "tftplb_cache_hits_total";
pub const CACHE_MISSES: &str = "tftplb_cache_misses_total";
pub const CACHE_FILLS: &str = "tftplb_cache_fills_total";
pub const CACHE_EVICTIONS: &str = "tftplb_cache_evictions_total";
pub const CACHE_BYTES_SERVED: &str = "tftplb_cache_bytes_served_total";
pub const CACHE_FILES: &str = "tftplb_cache_files";
pub const CACHE_BYTES: &str = "tftplb_cache_bytes";
/// ProxyDHCP (`[proxy_dhcp]`): datagrams heard by `port` (`dhcp` 67, `pxe` 4011), answers sent
/// by `type` (`offer`, `ack`), requests left unanswered by `reason`, and PXE machines listed.
pub const PXE_PACKETS: &str = "tftplb_proxy_dhcp_packets_total";
pub const PXE_ANSWERS: &str = "tftplb_proxy_dhcp_answers_total";
pub const PXE_IGNORED: &str = "tftplb_proxy_dhcp_ignored_total";
pub const PXE_CLIENTS: &str = "tftplb_proxy_dhcp_clients";

/// A finished session, as the log line and the metrics see it.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    /// The outcome label (`completed`, `backend-timeout`, …).
    pub outcome: &'static str,
    /// Served from a copy in memory (the backend is the one whose copy it was).
    pub from_memory: bool,
    pub backend: Option<SocketAddr>,
    pub blksize: u16,
    pub windowsize: u16,
    pub blocks: u64,
    pub file_bytes: u64,
    pub packets_to_client: u64,
    pub packets_to_backend: u64,
    pub dropped: u64,
    pub send_errors: u64,
    pub elapsed: Duration,
}

/// Counts a finished session and writes its log line.
pub fn record_session(pool: &str, file: &str, client: SocketAddr, r: &SessionEnd) {
    let backend = r
        .backend
        .map(|b| b.to_string())
        .unwrap_or_else(|| "-".into());
    let outcome = r.outcome;
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
    metrics::counter!(SEND_ERRORS).increment(r.send_errors);
    tracing::info!(
        %client, file, pool, backend, outcome,
        from_memory = r.from_memory,
        bytes = r.file_bytes,
        blocks = r.blocks,
        blksize = r.blksize,
        windowsize = r.windowsize,
        ms = r.elapsed.as_millis() as u64,
        "session end"
    );
}

/// A request asked for blksize `asked`, relayed asking `relayed` (`[tftp] max_blksize`).
pub fn blksize_lowered(asked: u16, relayed: u16) {
    metrics::counter!(BLKSIZE_LOWERED).increment(1);
    tracing::debug!(asked, relayed, "requested blksize lowered");
}

/// A route's options policy changed a request's options.
pub fn options_rewritten() {
    metrics::counter!(OPTIONS_REWRITTEN).increment(1);
}

/// The MAC memory's size now, and clients it just forgot to stay under its cap.
pub fn mac_memory(clients: usize, evicted: u64) {
    metrics::gauge!(MAC_MEMORY_CLIENTS).set(clients as f64);
    metrics::counter!(MAC_MEMORY_EVICTIONS).increment(evicted);
}

/// One DNS answer over the rate limit: `slipped` (sent truncated) or dropped; in `log_only`
/// mode, what would have been done.
pub fn dns_rate_limited(slipped: bool, log_only: bool) {
    let name = if slipped {
        DNS_RRL_SLIPPED
    } else {
        DNS_RRL_DROPPED
    };
    let mode = if log_only { "log-only" } else { "enforce" };
    metrics::counter!(name, "mode" => mode).increment(1);
}

/// A refusal on port 69 left without its ERROR (the source had its share).
pub fn error_withheld() {
    metrics::counter!(ERRORS_WITHHELD).increment(1);
}

/// A backend did not answer a request within `setup_timeout`.
pub fn setup_timeout(pool: &str, backend: SocketAddr) {
    let labels = [("pool", pool.to_string()), ("backend", backend.to_string())];
    metrics::counter!(SETUP_TIMEOUTS, &labels).increment(1);
}

/// The number of sockets lingering now.
pub fn sockets_lingering(now: usize) {
    metrics::gauge!(SOCKETS_LINGERING).set(now as f64);
}

/// A socket that should have lingered was closed at once (the cap was reached).
pub fn socket_closed_early() {
    metrics::counter!(SOCKETS_CLOSED_EARLY).increment(1);
}

// ---- the exporter (admin listener's `/metrics`) ----

/// Sessions now running on a backend (read from the pools at scrape time).
pub const BACKEND_SESSIONS_ACTIVE: &str = "tftplb_backend_sessions_active";
/// 1 for a backend's current admin state (`state` label), 0 for the others.
pub const BACKEND_ADMIN_STATE: &str = "tftplb_backend_admin_state";
/// 1 when a backend may get new sessions (healthy or unprobed, enabled, consistent).
pub const BACKEND_ELIGIBLE: &str = "tftplb_backend_eligible";
/// Configuration reloads applied since start.
pub const RELOADS: &str = "tftplb_config_reloads_total";

static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
    std::sync::OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the first handle).
///
/// Only the `run` and `demo` commands call it: a recorder is global to the process, and tests
/// start many tftplb instances in one process, so an instance never installs one itself.
pub fn install_recorder() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    HANDLE.get_or_init(|| {
        use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
        let seconds =
            |name: &str, buckets: &[f64]| (Matcher::Full(name.to_string()), buckets.to_vec());
        let (probe, probe_buckets) = seconds(
            PROBE_DURATION,
            &[
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ],
        );
        let (session, session_buckets) = seconds(
            SESSION_DURATION,
            &[
                0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
            ],
        );
        let handle = PrometheusBuilder::new()
            .set_buckets_for_metric(probe, &probe_buckets)
            .and_then(|b| b.set_buckets_for_metric(session, &session_buckets))
            .and_then(|b| b.install_recorder())
            .expect("the Prometheus recorder is installed once, with non-empty buckets");
        describe();
        handle
    })
}

/// The installed recorder's handle, if this process has one.
pub fn prometheus_handle() -> Option<&'static metrics_exporter_prometheus::PrometheusHandle> {
    HANDLE.get()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(SESSIONS_ACTIVE, "Transfers being relayed, by pool.");
    describe_counter!(
        SESSIONS_TOTAL,
        "Finished transfers by pool, backend and outcome."
    );
    describe_histogram!(
        SESSION_DURATION,
        Unit::Seconds,
        "Transfer duration, by pool."
    );
    describe_counter!(
        BYTES_RELAYED,
        Unit::Bytes,
        "File bytes relayed to clients, by backend."
    );
    describe_counter!(PACKETS_RELAYED, "Datagrams relayed, by direction.");
    describe_counter!(
        PACKETS_DROPPED,
        "Datagrams a session dropped (stray sources, junk)."
    );
    describe_counter!(
        SEND_ERRORS,
        "Datagrams of sessions the kernel would not send (counted as lost packets)."
    );
    describe_counter!(
        REQUESTS_REFUSED,
        "Requests refused or dropped before a session, by reason (malformed, write, limits...)."
    );
    describe_counter!(
        REQUESTS_RETRANSMITTED,
        "Retransmitted RRQs absorbed by a session being set up."
    );
    describe_gauge!(BACKEND_UP, "Backend health from probes: 1 up, 0 down.");
    describe_gauge!(
        BACKEND_INCONSISTENT,
        "1 when a backend's probe file differs from its pool's."
    );
    describe_histogram!(
        PROBE_DURATION,
        Unit::Seconds,
        "Health probe duration, by backend."
    );
    describe_counter!(FAILOVERS, "Transfers moved to another backend, by pool.");
    describe_counter!(
        DNS_QUERIES,
        "DNS queries answered, by name, type and rcode."
    );
    describe_counter!(
        DNS_RRL_DROPPED,
        "DNS answers over the [dns.rrl] rate, not sent (mode log-only: would have been)."
    );
    describe_counter!(
        DNS_RRL_SLIPPED,
        "DNS answers over the [dns.rrl] rate, sent truncated instead (mode log-only: would have been)."
    );
    describe_counter!(
        PXE_PACKETS,
        "ProxyDHCP datagrams heard, by port (dhcp, pxe)."
    );
    describe_counter!(PXE_ANSWERS, "ProxyDHCP answers sent, by type (offer, ack).");
    describe_counter!(
        PXE_IGNORED,
        "ProxyDHCP requests left unanswered, by reason (not-pxe, unregistered, not-ours…)."
    );
    describe_gauge!(PXE_CLIENTS, "PXE machines listed for /api/pxe/clients.");
    describe_gauge!(BACKEND_SESSIONS_ACTIVE, "Transfers running on a backend.");
    describe_gauge!(
        BACKEND_ADMIN_STATE,
        "Backend admin state: 1 for the current state."
    );
    describe_gauge!(BACKEND_ELIGIBLE, "1 when a backend may get new transfers.");
    describe_counter!(RELOADS, "Configuration reloads applied since start.");
    describe_counter!(
        ERRORS_WITHHELD,
        "Refusals on port 69 left without their ERROR: the source had its share of ERRORs."
    );
    describe_counter!(
        SETUP_TIMEOUTS,
        "Requests a backend did not answer within setup_timeout (busy or dead), by backend."
    );
    describe_counter!(
        STRAYS,
        "Datagrams ignored while waiting for a takeover's answer: strays of older transfers."
    );
    describe_gauge!(
        SOCKETS_LINGERING,
        "Sockets a session let go of, kept bound so late packets cannot reach another session."
    );
    describe_counter!(
        SOCKETS_CLOSED_EARLY,
        "Sockets closed at once because the cap on lingering sockets was reached."
    );
    describe_counter!(
        PORTS_PASSED_OVER,
        "Ports a new backend leg passed over: a socket closed early held them within the quarantine."
    );
    describe_counter!(
        LOG_LINES_DROPPED,
        "Log lines dropped because the log's writer fell behind (a stalled log sink)."
    );
    describe_gauge!(MAC_MEMORY_CLIENTS, "Client IPs whose MAC is remembered.");
    describe_counter!(
        MAC_MEMORY_EVICTIONS,
        "Clients forgotten by the MAC memory to stay under mac_memory_max."
    );
    metrics::counter!(REQUESTS_RETRANSMITTED).increment(0);
    metrics::counter!(PACKETS_DROPPED).increment(0);
    metrics::counter!(SEND_ERRORS).increment(0);
    metrics::counter!(SOCKETS_CLOSED_EARLY).increment(0);
    metrics::counter!(PORTS_PASSED_OVER).increment(0);
    metrics::counter!(LOG_LINES_DROPPED).increment(0);
    metrics::counter!(STRAYS).increment(0);
    metrics::counter!(ERRORS_WITHHELD).increment(0);
    metrics::gauge!(SOCKETS_LINGERING).set(0.0);
}

/// Makes a pool's series exist from the start (a counter that is absent until its first event
/// reads as "no data" on a dashboard, not as zero).
pub fn register_pool(pool: &str) {
    metrics::counter!(FAILOVERS, "pool" => pool.to_string()).increment(0);
    metrics::gauge!(SESSIONS_ACTIVE, "pool" => pool.to_string()).increment(0.0);
}

/// How many lines the log's writer dropped, kept by the writer itself (see `main`).
static LOG_DROPS: std::sync::OnceLock<tracing_appender::non_blocking::ErrorCounter> =
    std::sync::OnceLock::new();

/// Lets the scrape read how many log lines the writer dropped.
pub fn watch_log_drops(dropped: tracing_appender::non_blocking::ErrorCounter) {
    let _ = LOG_DROPS.set(dropped);
}

/// Log lines dropped since start (set at scrape time).
pub fn set_log_drops() {
    if let Some(dropped) = LOG_DROPS.get() {
        metrics::counter!(LOG_LINES_DROPPED).absolute(dropped.dropped_lines() as u64);
    }
}

/// Reloads applied since start (set at scrape time).
pub fn set_reloads(reloads: u64) {
    metrics::counter!(RELOADS).absolute(reloads);
}

/// A backend's gauges that are cheaper to read at scrape time than to keep up to date.
pub fn set_backend_gauges(
    pool: &str,
    backend: SocketAddr,
    active_sessions: usize,
    eligible: bool,
    admin: &str,
) {
    let labels = [("pool", pool.to_string()), ("backend", backend.to_string())];
    metrics::gauge!(BACKEND_SESSIONS_ACTIVE, &labels).set(active_sessions as f64);
    metrics::gauge!(BACKEND_ELIGIBLE, &labels).set(if eligible { 1.0 } else { 0.0 });
    for state in ["enabled", "draining", "disabled"] {
        let mut with_state = labels.to_vec();
        with_state.push(("state", state.to_string()));
        let on = if admin == state { 1.0 } else { 0.0 };
        metrics::gauge!(BACKEND_ADMIN_STATE, &with_state).set(on);
    }
}
