//! TFTP: the codec and option negotiation (no I/O), the async client, and the relay's parts
//! (listener, pure session state machine, the task that owns a session's sockets).

pub mod admission;
pub mod client;
pub mod config;
pub mod frontend;
pub mod readahead;
pub mod reader;
pub mod relay;
pub mod runtime;
pub mod session;
pub mod table;
