//! Backend health: the lock-free state the data path reads ([`state`]), and the prober that
//! downloads a file from every backend of a pool on an interval ([`probe`]).

pub mod config;
pub mod probe;
mod state;

pub use config::AdminState;
pub use state::{BackendState, Health, HealthEvents, ProbeRecord, health_events};
