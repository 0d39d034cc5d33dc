//! The systemd notification protocol (`Type=notify`): READY once every socket is bound,
//! RELOADING/READY around a SIGHUP reload, WATCHDOG pings, STOPPING at shutdown.
//!
//! Each call is a no-op when `NOTIFY_SOCKET` is unset (not under systemd, tests, `demo`), and a
//! failed notification is logged, never fatal: the balancer keeps relaying either way.

use std::time::Duration;

use sd_notify::NotifyState;

/// Every listener is bound: systemd may start units ordered after us.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload starts (`ready` ends it).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(_) => send(&[NotifyState::Reloading]),
    }
}

/// Shutdown has begun: running transfers are draining.
pub fn stopping() {
    send(&[
        NotifyState::Stopping,
        NotifyState::Status("draining running transfers"),
    ]);
}

/// Pings the watchdog at half its interval, for as long as the runtime runs this task, when
/// `WatchdogSec=` is set for the unit; returns at once otherwise.
pub async fn watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let mut tick = tokio::time::interval((interval / 2).max(Duration::from_millis(100)));
    loop {
        tick.tick().await;
        send(&[NotifyState::Watchdog]);
    }
}

fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}
