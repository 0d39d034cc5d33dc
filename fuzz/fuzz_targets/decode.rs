//! Fuzz target: any datagram, through every entry point that parses untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftplb::tftp::listener::admit;
use tftplb::tftp::packet::{peek, Packet};
use tftplb::tftp::session::Session;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }
    let _ = peek(data);
    let _ = admit(data);
    let mut s = Session::new();
    let _ = s.on_backend(data);
    let _ = s.on_client(data);
});
