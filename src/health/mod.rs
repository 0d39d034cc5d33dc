//! Backend health: the probe settings and admin state as the file gives them ([`config`]), the
//! lock-free state the data path reads (`state`, re-exported here), and the prober that
//! downloads a file from every backend of a pool on an interval ([`probe`]: a task of the TFTP
//! service layer, since it downloads with `tftp::client`; nothing here imports it).

pub mod config;
pub mod probe;
mod state;

pub use config::AdminState;
pub use state::{BackendState, Health, HealthEvents, ProbeRecord, health_events};
