//! tftplb: a TFTP load balancer for network boot.
//!
//! Each TFTP transfer a client starts on port 69 is relayed to one backend boot server; every
//! packet of it stays on that backend, and the client only ever sees the address it contacted.
//!
//! # A request's way through
//! A read request arrives on a port-69 socket ([`tftp::reader`], a thread of its own). The front
//! end ([`tftp::frontend`]) decodes only enough to decide ([`tftp::admission`], with the codec
//! and name rules of [`protocol`]), asks the session table ([`tftp::table`]) whether it repeats
//! a live session's request, checks the client's limits ([`limits`]), routes it to a pool
//! ([`route`]) in the running configuration ([`tftp::runtime`]), and spawns a relay task
//! ([`tftp::relay`]). The relay picks a backend ([`pool`], [`balance`], reading [`health`]),
//! sends the request from a socket of its own, learns the backend's transfer ID from its first
//! reply, and relays the transfer through the pure session machine ([`tftp::session`]: block
//! numbering from [`protocol::blocks`], end of transfer, resume), reading ahead of the client
//! ([`tftp::readahead`]) and failing over to another backend when one stalls. When it ends, the
//! session is counted and logged ([`metrics`]). Beside it, probers ([`health::probe`]) download
//! a file from every backend, and the DNS zone ([`dns`]) answers the option-66 name with the
//! healthy ones; both follow reloads ([`control`]) by channel.
//!
//! # Modules, by layer (imports point down this list; `tests/layers.rs` keeps it so)
//! - [`protocol`]: the codec, options, block numbering and file-name rules; no I/O.
//! - [`metrics`]: metric names and recording helpers that take plain values.
//! - [`systemd`]: sd_notify READY / WATCHDOG / STOPPING (no-ops outside systemd).
//! - [`config`]: loads the file, gathers each module's section, reports errors by key path.
//! - [`balance`]: the `Balancer` trait and one file per policy.
//! - [`health`]: backend health and admin state, read lock-free; `health::probe` downloads.
//! - [`route`]: ordered rules (client CIDR, MAC, file) → pool, refuse or ignore; and for
//!   ProxyDHCP, which machines get which boot file (`route::boot`).
//! - [`limits`]: abuse limits: CIDR allow/deny, rate and concurrency per client.
//! - [`pool`]: a pool at run time: backends, counters, client affinity, all-down policy.
//! - [`tftp`]: the TFTP service: async client, port-69 reader, front end, session table,
//!   runtime holder, relay task with its pure session, timer and read-ahead machines.
//! - [`dns`]: the authoritative zone for the option-66 name: healthy backends, rotating; with
//!   [`resolve`] (backends named by host), the only modules that import hickory.
//! - [`resolve`]: backends given by host name, re-resolved as their records expire.
//! - [`control`]: hot reload, backend admin state, the status snapshot.
//! - [`admin`]: the admin listener: status page, `/metrics`, JSON API.
//! - [`cluster`]: session sync with the other front ends, and taking over a dead one's
//!   transfers.
//! - [`proxy_dhcp`]: the PXE service on ports 67 and 4011 that tells registered machines
//!   where to boot, with no address of its own to give.
//! - [`app`]: binds the listeners, serves, drains on shutdown.
//! - [`cli`]: the command line.
//! - [`demo`]: embedded backend boot servers for `tftplb demo`, tests and the bench.
//! - [`manual`]: the man pages and shell completions the package installs.
//! - [`logging`]: the log's writer, a thread of its own that drops and counts what a stalled
//!   sink cannot take.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod balance;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod control;
pub mod demo;
pub mod dns;
pub mod health;
pub mod limits;
pub mod logging;
pub mod manual;
pub mod metrics;
pub mod pool;
pub mod protocol;
pub mod proxy_dhcp;
pub mod resolve;
pub mod route;
pub mod systemd;
pub mod tftp;
