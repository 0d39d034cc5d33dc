//! Fuzz target: any datagram, through every entry point that parses untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftplb::tftp::admission::admit;
use tftplb::protocol::packet::{peek, Packet};
use tftplb::tftp::session::Session;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }
    let _ = peek(data);
    let _ = admit(data);
    // The session renumbers datagrams in place: give it copies, as the relay gives its buffer.
    for mut s in [Session::new(), Session::new_write()] {
        let _ = s.on_backend(&mut data.to_vec());
        let _ = s.on_client(&mut data.to_vec());
        let _ = s.on_takeover_reply(&mut data.to_vec());
    }
});
