//! Wiring: bind every listener (logging each bound address, so a test or a user can bind port 0
//! and read the port back), serve until the shutdown future resolves, then stop admitting and
//! let running transfers finish for up to `shutdown_grace`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::admin::AdminServer;
use crate::cluster::ClusterServer;
use crate::config::Config;
use crate::control::Control;
use crate::dns::DnsServer;
use crate::health::health_events;
use crate::proxy_dhcp::ProxyDhcpServer;
use crate::tftp::frontend::Frontend;
use crate::tftp::reader::Listener;
use crate::tftp::runtime::{Current, Runtime};

/// How often housekeeping runs (affinity expiry, idle rate-limit state): often enough that a
/// flood from many addresses cannot pile up state for long.
const HOUSEKEEPING: Duration = Duration::from_secs(5);

/// A configured tftplb whose sockets are bound but not yet served.
#[derive(Debug)]
pub struct Bound {
    listeners: Vec<(SocketAddr, Listener)>,
    control: Arc<Control>,
    /// The `[dns]` sockets, when configured.
    dns: Option<DnsServer>,
    /// The admin HTTP socket, unless `[admin] enabled = false`.
    admin: Option<AdminServer>,
    /// The `[cluster]` sync socket, when configured.
    cluster: Option<ClusterServer>,
    /// The `[proxy_dhcp]` sockets, when configured and enabled.
    proxy_dhcp: Option<ProxyDhcpServer>,
}

impl Bound {
    /// Binds every `[tftp] listen` address.
    pub fn new(config: &Config) -> io::Result<Bound> {
        Bound::with_file(config, None)
    }

    /// Binds, remembering the file that `reload` re-reads.
    pub fn with_file(config: &Config, config_path: Option<PathBuf>) -> io::Result<Bound> {
        let listeners = config
            .tftp
            .listen
            .iter()
            .map(|&a| {
                Listener::bind(a, config.tftp.freebind)
                    .map(|l| (a, l))
                    .map_err(|e| io::Error::new(e.kind(), format!("tftp.listen {a}: {e}")))
            })
            .collect::<io::Result<Vec<_>>>()?;
        for (_, l) in &listeners {
            tracing::info!(address = %l.local_addr(), "tftp listening");
        }
        let dns = config.dns.as_ref().map(DnsServer::bind).transpose()?;
        let admin = AdminServer::bind(&config.admin)?;
        let cluster = config
            .cluster
            .as_ref()
            .map(ClusterServer::bind)
            .transpose()?;
        let proxy_dhcp = config
            .proxy_dhcp
            .as_ref()
            .filter(|p| p.enabled)
            .map(ProxyDhcpServer::bind)
            .transpose()?;
        let events = health_events();
        let runtime = Runtime::new(config.clone(), None, &events);
        let frontend = Arc::new(Frontend::new(Arc::new(Current::new(runtime, events))));
        let control = Control::new(frontend, config_path, config.clone());
        if let Some(c) = &cluster {
            control.show_cluster(c.local_addr(), c.stats.clone());
        }
        if let Some(p) = &proxy_dhcp {
            control.show_proxy_dhcp(p.local_addrs(), p.stats.clone(), p.clients.clone());
        }
        Ok(Bound {
            listeners,
            control,
            dns,
            admin,
            cluster,
            proxy_dhcp,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn tftp_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().map(|(_, l)| l.local_addr()).collect()
    }

    /// The DNS addresses actually bound (UDP and TCP share each), if `[dns]` is configured.
    pub fn dns_addrs(&self) -> Vec<SocketAddr> {
        self.dns
            .as_ref()
            .map_or_else(Vec::new, DnsServer::local_addrs)
    }

    /// The admin listener's address (port 0 resolved), unless it is disabled.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin.as_ref().map(AdminServer::local_addr)
    }

    /// ProxyDHCP's bound addresses (ports 67 and 4011, port 0 resolved), if it serves.
    pub fn proxy_dhcp_addrs(&self) -> Vec<SocketAddr> {
        self.proxy_dhcp
            .as_ref()
            .map_or_else(Vec::new, ProxyDhcpServer::local_addrs)
    }

    pub fn frontend(&self) -> Arc<Frontend> {
        self.control.frontend().clone()
    }

    /// Reload, admin state and status, for signals, the admin API and tests.
    pub fn control(&self) -> Arc<Control> {
        self.control.clone()
    }

    /// Serves until `shutdown` resolves, then stops admitting and drains running transfers.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let frontend = self.frontend();
        let stop = CancellationToken::new();
        let dns = self.dns.map(|d| {
            let current = frontend.current();
            let health = current.health_events().subscribe();
            let serving = d.serve(current.subscribe(), health, stop.clone());
            tokio::spawn(serving)
        });
        let housekeeper = tokio::spawn(housekeeping(frontend.clone(), stop.clone()));
        let cluster = self
            .cluster
            .map(|c| tokio::spawn(c.serve(frontend.clone(), stop.clone())));
        let proxy_dhcp = self
            .proxy_dhcp
            .map(|p| tokio::spawn(p.serve(frontend.clone(), stop.clone())));
        let admin = self
            .admin
            .map(|a| tokio::spawn(a.serve(self.control.clone(), stop.clone())));
        self.control.start(self.listeners);
        shutdown.await;
        let grace = frontend.runtime().config.tftp.shutdown_grace;
        tracing::info!(
            sessions = frontend.live_sessions(),
            grace_s = grace.as_secs(),
            "shutting down: no new transfers"
        );
        self.control.stop();
        stop.cancel();
        if let Some(dns) = dns {
            let _ = dns.await;
        }
        let _ = housekeeper.await;
        if let Some(cluster) = cluster
            && let Ok(Err(e)) = cluster.await
        {
            tracing::error!(error = %e, "cluster sync stopped");
        }
        if let Some(proxy_dhcp) = proxy_dhcp {
            let _ = proxy_dhcp.await;
        }
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        frontend.drain(grace).await;
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
                let runtime = frontend.runtime();
                runtime.pools.iter().for_each(|p| p.expire_affinity(now));
                runtime.limiter.forget_idle();
                frontend.expire(now);
            }
        }
    }
}
