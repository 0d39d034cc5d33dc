//! The TFTP service: the async client (probes, `tftplb get`, tests, bench), and the relay's
//! parts from port 69 to the backend: the socket reader, the front end that admits requests,
//! the session table, the runtime holder, and per transfer a relay task around pure machines
//! (the session, the read-ahead, the timers); and boot files served from memory (`cache`). The
//! wire format is in `protocol`.

pub mod admission;
pub mod burst;
pub mod cache;
pub mod client;
pub mod config;
pub mod frontend;
pub mod grace;
pub mod readahead;
pub mod reader;
pub mod relay;
pub mod resumable;
pub mod runtime;
pub mod session;
pub mod sync;
pub mod table;
