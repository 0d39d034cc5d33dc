//! The status page: one server-rendered HTML document, no scripts from elsewhere, no assets, so
//! it works offline and on a locked-down jump host. It refreshes itself every few seconds with a
//! meta refresh, and its buttons are plain forms POSTing to the JSON API (which answers a form
//! with a redirect back here). Everything that comes from the configuration or the network is
//! escaped with [`escape`].

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::control::{BackendStatus, PoolStatus, Status};

/// Seconds between refreshes.
pub const REFRESH_SECONDS: u32 = 5;

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1d2430;background:#f6f7f9}
h1{font-size:1.4em;margin:0 0 .2em}h2{font-size:1.1em;margin:1.4em 0 .4em}
.sub{color:#5a6472;margin-bottom:1em}
.summary span{display:inline-block;margin-right:1.5em}
table{border-collapse:collapse;background:#fff;box-shadow:0 1px 2px #0002;min-width:60em}
th,td{padding:.35em .7em;text-align:left;border-bottom:1px solid #e3e6ea;white-space:nowrap}
th{background:#eef0f3;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{padding:.1em .5em;border-radius:.8em;font-size:.9em;font-weight:600}
.up,.enabled,.consistent,.yes,.ok{background:#d7f5dd;color:#13652a}
.down,.disabled,.inconsistent,.failed{background:#fbdada;color:#8e1616}
.unknown,.draining,.no{background:#fdf0c8;color:#7a5800}
form{display:inline;margin:0}button{margin-right:.3em;cursor:pointer}
.msg{background:#e5efff;border:1px solid #9bb8ea;padding:.5em .8em;margin:1em 0;max-width:60em}
.probe{color:#5a6472;font-size:.9em}
";

/// Renders the whole page; `message` is the outcome of the last button press, if any.
pub fn render(status: &Status, message: Option<&str>) -> String {
    let mut html = String::with_capacity(8192);
    let listen: Vec<String> = status.tftp_listen.iter().map(|a| a.to_string()).collect();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_SECONDS};url=/\">\
         <meta name=\"viewport\" content=\"width=device-width\">\
         <title>tftplb status</title><style>{STYLE}</style></head><body>\
         <h1>tftplb</h1><div class=\"sub\">TFTP on {} · refreshes every {REFRESH_SECONDS} s · \
         <a href=\"/api/status\">JSON</a> · <a href=\"/metrics\">metrics</a></div>",
        escape(&listen.join(", "))
    );
    if let Some(m) = message {
        let _ = write!(
            html,
            "<div class=\"msg\" id=\"message\">{}</div>",
            escape(m)
        );
    }
    let _ = write!(
        html,
        "<div class=\"summary\"><span>live sessions <b id=\"live\">{}</b></span>\
         <span>started <b>{}</b></span><span>retransmitted requests <b>{}</b></span>\
         <span>refused <b>{}</b></span><span>malformed <b>{}</b></span>\
         <span>over limit <b>{}</b></span><span>reloads <b>{}</b></span></div>",
        status.live_sessions,
        status.sessions_started,
        status.retransmitted_requests,
        status.refused,
        status.malformed,
        status.over_limit,
        status.reloads
    );
    for pool in &status.pools {
        render_pool(&mut html, pool);
    }
    render_routes(&mut html, &status.routes);
    if let Some(cluster) = &status.cluster {
        render_cluster(&mut html, cluster);
    }
    if let Some(cache) = &status.cache {
        render_cache(&mut html, cache);
    }
    if let Some(pxe) = &status.proxy_dhcp {
        render_pxe(&mut html, pxe);
    }
    html.push_str("</body></html>\n");
    html
}

fn render_pool(html: &mut String, pool: &PoolStatus) {
    let probes = if pool.probed {
        "probed"
    } else {
        "not probed (no [pool.health])"
    };
    let _ = write!(
        html,
        "<h2>pool <span class=\"pool-name\">{}</span> <small class=\"probe\">{probes}</small></h2>\
         <table data-pool=\"{}\"><thead><tr><th>backend</th><th>weight</th><th>health</th>\
         <th>admin</th><th>content</th><th>eligible</th><th>live</th><th>total</th><th>bytes</th>\
         <th>last probe</th><th>actions</th></tr></thead><tbody>",
        escape(&pool.name),
        escape(&pool.name)
    );
    for b in &pool.backends {
        render_backend(html, &pool.name, b);
    }
    html.push_str("</tbody></table>");
}

/// The `[[route]]` rules in order, with their hits since the last reload.
fn render_routes(html: &mut String, routes: &[crate::control::RouteStatus]) {
    if routes.is_empty() {
        return;
    }
    html.push_str("<h2>routes <small class=\"probe\">first match decides; hits since the last reload</small></h2>\
                   <table data-routes=\"\"><thead><tr><th>#</th><th>rule</th><th>hits</th></tr></thead><tbody>");
    for (i, r) in routes.iter().enumerate() {
        let _ = write!(
            html,
            "<tr><td>{i}</td><td>{}</td><td>{}</td></tr>",
            escape(&r.name),
            r.hits
        );
    }
    html.push_str("</tbody></table>");
}

/// The copies in memory, per backend, with the cache's counters.
fn render_cache(html: &mut String, c: &crate::tftp::cache::CacheStatus) {
    let _ = write!(
        html,
        "<h2>boot files in memory <small class=\"probe\">{} of {} bytes</small></h2>\
         <div class=\"summary\" data-cache=\"\"><span>hits <b>{}</b></span>\
         <span>misses <b>{}</b></span><span>fills <b>{}</b></span><span>changed <b>{}</b></span>\
         <span>evictions <b>{}</b></span><span>bytes served <b>{}</b></span></div>\
         <table data-cache-copies=\"\"><thead><tr><th>backend</th><th>file</th><th>bytes</th>\
         <th>sha256</th><th>age s</th></tr></thead><tbody>",
        c.bytes, c.max_bytes, c.hits, c.misses, c.fills, c.changed, c.evictions, c.bytes_served
    );
    for copy in &c.copies {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}…</td><td>{}</td></tr>",
            copy.backend,
            escape(&copy.file),
            copy.bytes,
            copy.sha256,
            copy.age_s
        );
    }
    html.push_str("</tbody></table>");
}

/// ProxyDHCP's counters and every PXE machine heard, answered or not: an admin copies the
/// MACs of unregistered ones into a route's MAC file.
fn render_pxe(html: &mut String, p: &crate::proxy_dhcp::ProxyDhcpStatus) {
    let listen: Vec<String> = p.listen.iter().map(|a| a.to_string()).collect();
    let _ = write!(
        html,
        "<h2>ProxyDHCP <small class=\"probe\">on {}; machines also at /api/pxe/clients</small></h2>\
         <div class=\"summary\" data-pxe=\"\"><span>packets <b>{}</b></span>\
         <span>offers <b>{}</b></span><span>acks <b>{}</b></span><span>ignored <b>{}</b></span></div>\
         <table data-pxe-clients=\"\"><thead><tr><th>MAC</th><th>arch</th><th>vendor class</th>\
         <th>UUID</th><th>requests</th><th>first seen</th><th>last seen</th><th>answer</th></tr>\
         </thead><tbody>",
        escape(&listen.join(", ")),
        p.packets,
        p.offers,
        p.acks,
        p.ignored
    );
    for c in &p.clients {
        let state = if c.answered { "up" } else { "down" };
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td class=\"{state}\">{}</td></tr>",
            escape(&c.mac),
            escape(&c.arch),
            if c.ipxe { " (iPXE)" } else { "" },
            escape(&c.vendor_class),
            escape(c.uuid.as_deref().unwrap_or("")),
            c.requests,
            c.first_seen,
            c.last_seen,
            escape(&c.outcome)
        );
    }
    html.push_str("</tbody></table>");
}

fn render_cluster(html: &mut String, c: &crate::cluster::ClusterStatus) {
    let _ = write!(
        html,
        "<h2>cluster <small class=\"probe\">session sync on {}</small></h2>\
         <div class=\"summary\" data-cluster=\"\"><span>records sent <b>{}</b></span>\
         <span>received <b>{}</b></span><span>rejected <b>{}</b></span>\
         <span>sessions synced <b>{}</b></span><span>taken over <b>{}</b></span>\
         <span>resumed <b>{}</b></span><span>failed <b>{}</b></span></div>\
         <table data-peers=\"\"><thead><tr><th>peer</th><th>state</th><th>last heard</th></tr>\
         </thead><tbody>",
        c.listen,
        c.records_sent,
        c.records_received,
        c.records_rejected,
        c.sessions_synced,
        c.sessions_taken_over,
        c.sessions_resumed,
        c.sessions_failed
    );
    for p in &c.peers {
        let state = if p.up { "up" } else { "down" };
        let heard = p
            .silent_s
            .map_or("never".to_string(), |s| format!("{s:.1} s ago"));
        let _ = write!(
            html,
            "<tr><td><code>{}</code></td><td><span class=\"badge {state}\">{state}</span></td>\
             <td>{heard}</td></tr>",
            p.address
        );
    }
    html.push_str("</tbody></table>");
}

fn render_backend(html: &mut String, pool: &str, b: &BackendStatus) {
    let consistency = if b.inconsistent {
        "inconsistent"
    } else {
        "consistent"
    };
    let eligible = if b.eligible { "yes" } else { "no" };
    let _ = write!(
        html,
        "<tr class=\"backend\" data-backend=\"{addr}\" data-admin=\"{admin}\" data-health=\"{health}\">\
         <td><code>{addr}</code></td><td class=\"num\">{weight}</td>\
         <td><span class=\"badge {health}\" title=\"for {in_state}\">{health}</span></td>\
         <td><span class=\"badge {admin} admin\">{admin}</span></td>\
         <td><span class=\"badge {consistency}\">{consistency}</span></td>\
         <td><span class=\"badge {eligible}\">{eligible}</span></td>\
         <td class=\"num live\">{live}</td><td class=\"num\">{total}</td>\
         <td class=\"num\" title=\"{bytes} bytes\">{human}</td><td class=\"probe\">{probe}</td><td>",
        addr = escape(&b.address.to_string()),
        admin = escape(b.admin),
        health = escape(b.health),
        weight = b.weight,
        in_state = escape(
            &humantime::format_duration(Duration::from_secs(b.in_state_seconds)).to_string()
        ),
        live = b.active_sessions,
        total = b.total_sessions,
        bytes = b.bytes,
        human = escape(&human_bytes(b.bytes)),
        probe = probe_cell(b),
    );
    for (action, label, state) in [
        ("drain", "Drain", "draining"),
        ("enable", "Enable", "enabled"),
        ("disable", "Disable", "disabled"),
    ] {
        let disabled = if b.admin == state { " disabled" } else { "" };
        let _ = write!(
            html,
            "<form method=\"post\" action=\"/api/pools/{}/backends/{}/{action}\">\
             <button type=\"submit\" class=\"{action}\"{disabled}>{label}</button></form>",
            escape(&super::percent_encode(pool)),
            escape(&super::percent_encode(&b.address.to_string())),
        );
    }
    html.push_str("</td></tr>");
}

/// "ok 12 ms, 4s ago" with the detail and the time as a tooltip; already escaped.
fn probe_cell(b: &BackendStatus) -> String {
    let (Some(ok), Some(at)) = (b.last_probe_ok, b.last_probe_unix) else {
        return "none yet".into();
    };
    let when = UNIX_EPOCH + Duration::from_secs(at);
    let ago = SystemTime::now()
        .duration_since(when)
        .unwrap_or_default()
        .as_secs();
    let result = if ok { "ok" } else { "failed" };
    let detail = b.last_probe_detail.as_deref().unwrap_or("");
    format!(
        "<span class=\"badge {result}\" title=\"{}\">{result}</span> {} ms, {ago} s ago \
         <span title=\"{}\">({})</span>",
        escape(detail),
        b.last_probe_ms.unwrap_or(0),
        escape(&humantime::format_rfc3339_seconds(when).to_string()),
        escape(&truncate(detail, 40)),
    )
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::{BackendStatus, PoolStatus};

    fn status(pool: &str, detail: &str) -> Status {
        Status {
            tftp_listen: vec!["127.0.0.1:69".parse().unwrap()],
            live_sessions: 1,
            sessions_started: 2,
            retransmitted_requests: 0,
            malformed: 0,
            refused: 0,
            over_limit: 0,
            reloads: 0,
            routes: vec![],
            cluster: None,
            proxy_dhcp: None,
            cache: None,
            pools: vec![PoolStatus {
                name: pool.into(),
                probed: true,
                backends: vec![BackendStatus {
                    address: "10.0.0.1:69".parse().unwrap(),
                    weight: 1,
                    health: "up",
                    admin: "enabled",
                    inconsistent: false,
                    eligible: true,
                    in_state_seconds: 3,
                    active_sessions: 1,
                    total_sessions: 2,
                    bytes: 3 * 1024 * 1024,
                    last_probe_ok: Some(false),
                    last_probe_detail: Some(detail.into()),
                    last_probe_unix: Some(1_700_000_000),
                    last_probe_ms: Some(12),
                    content_sha256: None,
                }],
            }],
        }
    }

    #[test]
    fn everything_rendered_is_escaped() {
        let html = render(
            &status("<script>x</script>", "\"><img src=x>"),
            Some("<b>hi</b>"),
        );
        assert!(!html.contains("<script>x"), "{html}");
        assert!(!html.contains("<img"), "{html}");
        assert!(!html.contains("<b>hi"), "{html}");
        assert!(html.contains("&lt;script&gt;x&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;hi&lt;/b&gt;"));
    }

    #[test]
    fn rows_carry_state_and_buttons() {
        let html = render(&status("pvs", "timeout"), None);
        assert!(html.contains("data-backend=\"10.0.0.1:69\" data-admin=\"enabled\""));
        assert!(html.contains("action=\"/api/pools/pvs/backends/10.0.0.1%3A69/drain\""));
        assert!(html.contains("class=\"enable\" disabled>"));
        assert!(html.contains("3.0 MiB"));
        assert!(html.contains("2023-11-14T22:13:20Z"));
    }

    #[test]
    fn route_hits_are_shown() {
        let mut s = status("pvs", "ok");
        s.routes = vec![crate::control::RouteStatus {
            name: "thin<clients>".into(),
            hits: 7,
        }];
        let html = render(&s, None);
        assert!(
            html.contains("<td>thin&lt;clients&gt;</td><td>7</td>"),
            "{html}"
        );
    }

    #[test]
    fn long_details_are_cut() {
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("ab", 3), "ab");
    }
}
