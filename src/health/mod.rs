//! Backend health: the lock-free state the data path reads ([`state`]), and the prober that
//! downloads a file from every backend of a pool on an interval ([`probe`]).

mod probe;
mod state;

pub use probe::{Monitor, probe_once};
pub use state::{AdminState, BackendState, Health, HealthEvents, ProbeRecord, health_events};
