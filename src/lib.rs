//! tftplb: a TFTP load balancer for network boot.
//!
//! Each TFTP transfer a client starts on port 69 is relayed to one backend boot server; every
//! packet of it stays on that backend, and the client only ever sees the address it contacted.
//!
//! # Layout
//! - [`config`]: TOML → validated [`config::Config`]; errors name their key path.
//! - [`app`]: binds the listeners, serves, drains on shutdown.
//! - [`control`]: hot reload, backend admin state, the status snapshot.
//! - [`tftp`]: codec and options (no I/O), async client, listener (admission and session
//!   table), the pure session state machine, and the relay task that owns a session's sockets.
//! - [`balance`]: the `Balancer` trait and one file per policy.
//! - [`pool`]: a pool at run time: backends, counters, client affinity, all-down policy.
//! - [`resolve`]: backends given by host name, re-resolved as their records expire.
//! - [`route`]: ordered rules (client CIDR, MAC, file) → pool, refuse or ignore.
//! - [`runtime`]: the running configuration, swapped atomically on reload.
//! - [`health`]: lock-free backend health and admin state; probers that download a file.
//! - [`dns`]: the authoritative zone for the option-66 name: healthy backends, rotating; the
//!   only module that imports hickory.
//! - [`limits`]: abuse limits: CIDR allow/deny, rate and concurrency per client.
//! - [`metrics`]: metric names, the per-session record, the Prometheus recorder.
//! - [`admin`]: the admin listener: status page, `/metrics`, JSON API; `[admin]` config.
//! - [`systemd`]: sd_notify READY / WATCHDOG / STOPPING (no-ops outside systemd).
//! - [`demo`]: embedded backend boot servers for `tftplb demo`, tests and the bench.
//! - [`cli`]: the command line.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod cli;
pub mod config;
pub mod control;
pub mod demo;
pub mod dns;
pub mod health;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod resolve;
pub mod route;
pub mod systemd;
pub mod tftp;
