//! Fuzz target: any datagram, through every entry point that parses untrusted bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tftplb::protocol::packet::{peek, Packet};
use tftplb::proxy_dhcp::request::read;
use tftplb::route::OptionsPolicy;
use tftplb::tftp::admission::{admit, relayed_request};
use tftplb::tftp::cache::negotiate::negotiate;
use tftplb::tftp::session::Session;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::decode(data) {
        assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }
    let _ = peek(data);
    // A request relayed with its blksize lowered is still a request we would admit, no
    // longer than the client's, asking for the same file with the same options but blksize.
    if let Ok(mut asked) = admit(data) {
        let before = asked.clone();
        if let Some(relayed) = relayed_request(&mut asked, 1468, None) {
            assert!(relayed.len() <= data.len());
            let again = admit(&relayed).expect("the relayed request is admitted");
            assert_eq!(again, asked);
            assert_eq!(again.request.filename, before.request.filename);
            assert_eq!(again.request.options.blksize(), Some(1468));
        }
        // A route's options policy leaves an admissible request without the dropped option.
        let policy = OptionsPolicy {
            max_blksize: Some(1024),
            max_windowsize: Some(4),
            drop: vec!["tsize".into()],
        };
        let mut ruled = before.clone();
        if let Some(relayed) = relayed_request(&mut ruled, 8192, Some(&policy)) {
            let again = admit(&relayed).expect("the ruled request is admitted");
            assert_eq!(again.request.options.tsize(), None);
        }
        // Served from memory: whatever was asked, the plan stays within the limits.
        let plan = negotiate(&before.request.options, data.len() as u64, 8192, 16);
        assert!(plan.blksize <= 8192 && plan.window <= 16);
    }
    // ProxyDHCP reads any datagram on either port without panicking.
    let _ = read(data, false);
    let _ = read(data, true);
    // The session renumbers datagrams in place: give it copies, as the relay gives its buffer.
    for mut s in [Session::new(), Session::new_write()] {
        let _ = s.on_backend(&mut data.to_vec());
        let _ = s.on_client(&mut data.to_vec());
        let _ = s.on_takeover_reply(&mut data.to_vec());
    }
});
