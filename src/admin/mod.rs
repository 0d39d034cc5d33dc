//! The admin listener: status page (`/`), Prometheus scrape (`/metrics`) and the JSON API
//! (`/api/...`), on one HTTP/1.1 socket, loopback by default.
//!
//! Built on hyper directly rather than a framework: there are five routes, hyper is already in
//! the build for the Prometheus exporter, and the two-core build machine feels every crate. The
//! socket is bound in [`AdminServer::bind`] (called from `Bound::with_file`), so a busy port
//! shows at startup and tests can bind port 0 and read it back.
//!
//! Every route goes through [`crate::control::Control`]: the page and the API are two views of
//! the same actions (drain, enable, disable, reload) that SIGHUP and tests use.
//!
//! Safety of the write routes: with `token_file`, every request needs the token, as
//! `Authorization: Bearer TOKEN` (API, Prometheus) or as the password of HTTP Basic auth (a
//! browser prompts for it). Without a token the listener must be on loopback (validation
//! enforces it), and POSTs that a browser marks as coming from another site (`Origin` not this
//! host, `Sec-Fetch-Site: cross-site`) are refused, so a web page cannot drain a backend through
//! the operator's browser. Against DNS rebinding (a page whose own name now points here is
//! same-origin with it), every request must name this listener in `Host` by an IP address,
//! `localhost` or one of `[admin] hosts`.

pub mod config;
mod page;

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::control::Control;
use crate::health::AdminState;
use config::{AdminConfig, Token};

/// A slow or idle client cannot hold a connection longer than this before its request is in.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

type Reply = Response<Full<Bytes>>;

/// The admin socket, bound but not yet served.
#[derive(Debug)]
pub struct AdminServer {
    listener: std::net::TcpListener,
    local: SocketAddr,
    token: Option<Token>,
    hosts: Vec<String>,
}

impl AdminServer {
    /// Binds `[admin] listen`, or returns `None` when the admin listener is disabled (or the
    /// default address, not written in the file, is taken).
    pub fn bind(config: &AdminConfig) -> io::Result<Option<AdminServer>> {
        if !config.enabled {
            return Ok(None);
        }
        let listener = match std::net::TcpListener::bind(config.listen)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
        {
            Ok(l) => l,
            Err(e) if !config.listen_explicit => {
                tracing::warn!(address = %config.listen, error = %e,
                    "cannot bind the default admin address: status page, metrics and admin API \
                     are off (set [admin] listen, or enabled = false)");
                return Ok(None);
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("admin.listen {}: {e}", config.listen),
                ));
            }
        };
        let local = listener.local_addr()?;
        tracing::info!(address = %local, token = config.token.is_some(), "admin listening");
        Ok(Some(AdminServer {
            listener,
            local,
            token: config.token.clone(),
            hosts: config.hosts.clone(),
        }))
    }

    /// The bound address (port 0 resolved).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Serves until `stop` is cancelled; open connections then get [`CLOSE_GRACE`] to finish.
    pub async fn serve(self, control: Arc<Control>, stop: CancellationToken) {
        let listener = match tokio::net::TcpListener::from_std(self.listener) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "admin listener unusable");
                return;
            }
        };
        for pool in &control.status().pools {
            crate::metrics::register_pool(&pool.name);
        }
        let admin = Arc::new(Admin {
            control,
            token: self.token,
            hosts: self.hosts,
        });
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => return,
                a = listener.accept() => a,
            };
            match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(admin.clone(), stream, stop.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
}

async fn connection(admin: Arc<Admin>, stream: tokio::net::TcpStream, stop: CancellationToken) {
    let service = hyper::service::service_fn(move |req| {
        let admin = admin.clone();
        async move { Ok::<_, Infallible>(admin.handle(req)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(CLOSE_GRACE, conn).await;
        }
    }
}

struct Admin {
    control: Arc<Control>,
    token: Option<Token>,
    hosts: Vec<String>,
}

impl Admin {
    fn handle(&self, req: Request<Incoming>) -> Reply {
        if !self.known_host(&req) {
            return error_reply(
                StatusCode::FORBIDDEN,
                "unknown Host: this listener answers to IP addresses, localhost and [admin] hosts",
            );
        }
        let path = req.uri().path().to_string();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        // The health check answers without the token: keepalived's script needs no secret,
        // and it tells no more than whether this node can serve.
        if !self.authorized(&req) && segments != ["api", "health"] {
            return unauthorized();
        }
        match (req.method(), segments.as_slice()) {
            (&Method::GET | &Method::HEAD, [""]) => self.page(&req),
            (&Method::GET | &Method::HEAD, ["api", "health"]) => {
                let health = self.control.health();
                let status = if health.ok {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json_reply(status, &health)
            }
            (&Method::GET | &Method::HEAD, ["metrics"]) => self.metrics(),
            (&Method::GET | &Method::HEAD, ["api", "status"]) => {
                json_reply(StatusCode::OK, &self.control.status())
            }
            (&Method::GET | &Method::HEAD, ["api", "pxe", "clients"]) => {
                match self.control.pxe_clients() {
                    Some(list) => json_reply(StatusCode::OK, &list),
                    None => error_reply(StatusCode::NOT_FOUND, "no [proxy_dhcp] is configured"),
                }
            }
            (&Method::POST, ["api", "reload"]) => self.guarded(&req, |a| a.reload()),
            (&Method::POST, ["api", "pools", pool, "backends", addr, action]) => {
                self.guarded(&req, |a| a.set_admin(pool, addr, action))
            }
            (
                _,
                [""]
                | ["metrics"]
                | ["api", "status" | "health" | "reload"]
                | ["api", "pxe", "clients"],
            ) => error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
            (_, ["api", "pools", _, "backends", _, _]) => {
                error_reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => error_reply(StatusCode::NOT_FOUND, "no such page"),
        }
    }

    /// Whether the request names this listener by an IP address, `localhost` or one of
    /// `[admin] hosts` (or names no host: only browsers must, and they always do). A DNS
    /// rebinding attack reaches this address under the attacker's own name, which is none of
    /// these, and a page of that name is same-origin with it, so `Origin` cannot tell.
    fn known_host(&self, req: &Request<Incoming>) -> bool {
        let Some(host) = req.headers().get(header::HOST) else {
            return true;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let name = match host.strip_prefix('[') {
            Some(v6) => {
                return v6
                    .split_once(']')
                    .is_some_and(|(ip, _)| ip.parse::<std::net::Ipv6Addr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(name, _)| name),
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<std::net::IpAddr>().is_ok()
            || name == "localhost"
            || self.hosts.contains(&name)
    }

    /// Whether the request carries the token (always, when none is configured).
    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return false;
        };
        let value = value.as_bytes();
        if let Some(bearer) = value.strip_prefix(b"Bearer ") {
            return token.matches(bearer.trim_ascii());
        }
        if let Some(basic) = value.strip_prefix(b"Basic ") {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(basic.trim_ascii())
                .unwrap_or_default();
            // Any user name; the token is the password.
            return match decoded.iter().position(|&b| b == b':') {
                Some(i) => token.matches(&decoded[i + 1..]),
                None => false,
            };
        }
        false
    }

    /// Runs a write action unless a browser says the request comes from another site; answers
    /// an HTML form with a redirect back to the page, anything else with JSON.
    fn guarded(&self, req: &Request<Incoming>, action: impl FnOnce(&Admin) -> Outcome) -> Reply {
        if cross_site(req) {
            return error_reply(StatusCode::FORBIDDEN, "cross-site request refused");
        }
        let (status, body) = action(self);
        if !from_form(req) {
            return json_reply(status, &body);
        }
        let message = match body["problems"].as_array() {
            Some(p) if !p.is_empty() => {
                let p: Vec<&str> = p.iter().filter_map(|v| v.as_str()).collect();
                format!("refused: {}", p.join("; "))
            }
            _ => format!("done: {}", body["done"].as_str().unwrap_or("ok")),
        };
        Response::builder()
            .status(StatusCode::SEE_OTHER)
            .header(
                header::LOCATION,
                format!("/?msg={}", percent_encode(&message)),
            )
            .body(Full::new(Bytes::new()))
            .expect("redirect")
    }

    fn page(&self, req: &Request<Incoming>) -> Reply {
        let message = req.uri().query().and_then(|q| query_value(q, "msg"));
        let html = page::render(&self.control.status(), message.as_deref());
        Response::builder()
            .header(header::CONTENT_TYPE, "text/html; charset=utf-8")
            .header(header::CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(html)))
            .expect("page")
    }

    fn metrics(&self) -> Reply {
        let Some(handle) = crate::metrics::prometheus_handle() else {
            return error_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "no metrics recorder in this process (`tftplb run` and `tftplb demo` install one)",
            );
        };
        refresh_gauges(&self.control.status());
        Response::builder()
            .header(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )
            .body(Full::new(Bytes::from(handle.render())))
            .expect("metrics")
    }

    fn reload(&self) -> Outcome {
        match self.control.reload() {
            Ok(()) => (
                StatusCode::OK,
                json!({"ok": true, "done": "configuration reloaded", "problems": []}),
            ),
            Err(e) => (
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"ok": false, "problems": e.problems}),
            ),
        }
    }

    fn set_admin(&self, pool: &str, addr: &str, action: &str) -> Outcome {
        let state = match action {
            "drain" => AdminState::Draining,
            "enable" => AdminState::Enabled,
            "disable" => AdminState::Disabled,
            _ => {
                return problem(
                    StatusCode::NOT_FOUND,
                    "the action is one of drain, enable, disable",
                );
            }
        };
        let pool = percent_decode(pool);
        let Ok(backend) = percent_decode(addr).parse::<SocketAddr>() else {
            return problem(StatusCode::BAD_REQUEST, "the backend is an address:port");
        };
        match self.control.set_admin(&pool, backend, state) {
            Ok(()) => {
                tracing::info!(pool, %backend, admin = state.as_str(), "admin state set through the admin API");
                let done = format!("{pool} {backend} {}", state.as_str());
                let body = json!({"ok": true, "done": done, "pool": pool, "backend": backend, "admin": state.as_str(), "problems": []});
                (StatusCode::OK, body)
            }
            Err(p) => problem(StatusCode::NOT_FOUND, &p),
        }
    }
}

/// Whether a browser marked the request as sent by a page of another origin.
fn cross_site(req: &Request<Incoming>) -> bool {
    let headers = req.headers();
    if headers
        .get("sec-fetch-site")
        .is_some_and(|v| v.as_bytes() == b"cross-site" || v.as_bytes() == b"same-site")
    {
        return true;
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (None, _) => false,
        (Some(origin), Some(host)) => {
            let origin = origin.as_bytes();
            let expected = [b"http://".as_slice(), host.as_bytes()].concat();
            origin != expected.as_slice()
        }
        (Some(_), None) => true,
    }
}

fn from_form(req: &Request<Incoming>) -> bool {
    req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    })
}

fn json_reply(status: StatusCode, value: &impl serde::Serialize) -> Reply {
    let body = serde_json::to_vec_pretty(value).unwrap_or_else(|_| b"{}".to_vec());
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(body)))
        .expect("json reply")
}

/// A write action's status and JSON body.
type Outcome = (StatusCode, serde_json::Value);

fn problem(status: StatusCode, problem: &str) -> Outcome {
    (status, json!({"ok": false, "problems": [problem]}))
}

fn error_reply(status: StatusCode, p: &str) -> Reply {
    let (status, body) = problem(status, p);
    json_reply(status, &body)
}

fn unauthorized() -> Reply {
    let mut reply = error_reply(
        StatusCode::UNAUTHORIZED,
        "a token is required: Authorization: Bearer TOKEN",
    );
    reply.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Basic realm=\"tftplb admin\", charset=\"UTF-8\""),
    );
    reply
}

/// The value of `key` in a query string, decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| percent_decode(&v.replace('+', " ")))
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Sets the gauges that are read at scrape time from the status snapshot.
fn refresh_gauges(status: &crate::control::Status) {
    crate::metrics::set_reloads(status.reloads);
    crate::metrics::set_log_drops();
    for pool in &status.pools {
        for b in &pool.backends {
            crate::metrics::set_backend_gauges(
                &pool.name,
                b.address,
                b.active_sessions,
                b.eligible,
                b.admin,
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_round_trip() {
        for s in ["[::1]:69", "pool one/ä", "10.0.0.1:69", "a%b"] {
            assert_eq!(percent_decode(&percent_encode(s)), s);
        }
        assert_eq!(percent_decode("%5B%3A%3A1%5D%3A69"), "[::1]:69");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }

    #[test]
    fn query_values_are_decoded() {
        assert_eq!(
            query_value("a=1&msg=done%3A+ok", "msg").as_deref(),
            Some("done: ok")
        );
        assert_eq!(query_value("a=1", "msg"), None);
    }
}
