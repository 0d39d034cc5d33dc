//! Wiring: bind every listener (logging each bound address, so a test or a user can bind port 0
//! and read the port back), serve until the shutdown future resolves, then drain.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::dns::DnsServer;
use crate::health::{Monitor, health_events};
use crate::runtime::Runtime;
use crate::tftp::listener::{Frontend, Listener};

/// How long running transfers may go on after a shutdown request.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How often housekeeping runs (affinity expiry).
const HOUSEKEEPING: Duration = Duration::from_secs(30);

/// A configured tftplb whose sockets are bound but not yet served.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<Listener>,
    frontend: Arc<Frontend>,
    /// The `[dns]` sockets, when configured.
    dns: Option<DnsServer>,
}

impl Bound {
    /// Binds every `[tftp] listen` address.
    pub fn new(config: &Config) -> io::Result<Bound> {
        let listeners = config
            .tftp
            .listen
            .iter()
            .map(|&a| {
                Listener::bind(a)
                    .map_err(|e| io::Error::new(e.kind(), format!("tftp.listen {a}: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        for l in &listeners {
            tracing::info!(address = %l.local_addr(), "tftp listening");
        }
        let dns = config.dns.as_ref().map(DnsServer::bind).transpose()?;
        let events = health_events();
        let runtime = Runtime::new(config.clone(), None, &events);
        let frontend = Arc::new(Frontend::new(runtime, events));
        Ok(Bound {
            listeners,
            frontend,
            dns,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn tftp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|l| l.local_addr()).collect()
    }

    /// The DNS addresses actually bound (UDP and TCP share each), if `[dns]` is configured.
    pub fn dns_addrs(&self) -> Vec<SocketAddr> {
        self.dns
            .as_ref()
            .map_or_else(Vec::new, DnsServer::local_addrs)
    }

    pub fn frontend(&self) -> Arc<Frontend> {
        self.frontend.clone()
    }

    /// Serves until `shutdown` resolves, then stops admitting and drains running transfers.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let stop = CancellationToken::new();
        let dns = self.dns.map(|d| {
            let serving = d.serve(self.frontend.clone(), stop.clone());
            tokio::spawn(serving)
        });
        let mut tasks = tokio::task::JoinSet::new();
        for l in self.listeners {
            tasks.spawn(self.frontend.clone().serve(l, stop.clone()));
        }
        tasks.spawn(housekeeping(self.frontend.clone(), stop.clone()));
        let monitor = Monitor::start(&self.frontend.runtime());
        shutdown.await;
        drop(monitor);
        tracing::info!(
            sessions = self.frontend.live_sessions(),
            "shutting down: no new transfers"
        );
        stop.cancel();
        if let Some(dns) = dns {
            let _ = dns.await;
        }
        while tasks.join_next().await.is_some() {}
        self.frontend.drain(SHUTDOWN_GRACE).await;
        tracing::info!("stopped");
    }
}

async fn housekeeping(frontend: Arc<Frontend>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(HOUSEKEEPING);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                let now = std::time::Instant::now();
                frontend.runtime().pools.iter().for_each(|p| p.expire_affinity(now));
            }
        }
    }
}
