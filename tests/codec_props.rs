//! Property tests of the codec: decode(encode(p)) == p for every packet, and no byte string
//! makes `decode`, `peek` or admission panic.

use proptest::prelude::*;
use tftplb::protocol::options::Options;
use tftplb::protocol::packet::{Mode, Packet, Request, peek};
use tftplb::tftp::admission::admit;

/// Strings as the wire can carry them: no NUL.
fn wire_string() -> impl Strategy<Value = String> {
    "[^\u{0}]{0,40}"
}

fn mode() -> impl Strategy<Value = Mode> {
    prop_oneof![
        Just(Mode::Octet),
        Just(Mode::Netascii),
        Just(Mode::Mail),
        // Other modes, never spelled like a known one.
        "[a-z]{1,8}x".prop_map(Mode::Other),
    ]
}

fn options() -> impl Strategy<Value = Options> {
    prop::collection::vec((wire_string(), wire_string()), 0..6).prop_map(|pairs| {
        let mut o = Options::default();
        for (k, v) in pairs {
            o.push(&k, &v);
        }
        o
    })
}

fn request() -> impl Strategy<Value = Request> {
    (wire_string(), mode(), options()).prop_map(|(filename, mode, options)| Request {
        filename: filename.into(),
        mode,
        options,
    })
}

fn packet() -> impl Strategy<Value = Packet> {
    prop_oneof![
        request().prop_map(Packet::Rrq),
        request().prop_map(Packet::Wrq),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..1500))
            .prop_map(|(block, data)| Packet::Data { block, data }),
        (any::<u16>(), prop::collection::vec(any::<u8>(), 0..3))
            .prop_map(|(block, extra)| Packet::Ack { block, extra }),
        (any::<u16>(), wire_string()).prop_map(|(code, message)| Packet::Error { code, message }),
        options().prop_map(Packet::Oack),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_inverts_encode(p in packet()) {
        prop_assert_eq!(Packet::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Packet::decode(&bytes);
        let _ = peek(&bytes);
        let _ = admit(&bytes);
    }

    #[test]
    fn requests_with_dotdot_are_always_refused(prefix in "[a-z/]{0,10}", suffix in "[a-z/]{0,10}") {
        let name = format!("{prefix}/../{suffix}");
        let p = Packet::Rrq(Request { filename: name.into(), mode: Mode::Octet, options: Options::default() });
        prop_assert!(admit(&p.encode()).is_err());
    }
}
