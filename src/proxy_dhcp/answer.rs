//! The ProxyDHCP answer: a BOOTREPLY that gives no address (yiaddr 0, no lease, no router),
//! only where to boot: next-server and the boot file in the header, option 60 `PXEClient`
//! (which makes it a PXE offer), the server identifier the client asks on port 4011, the
//! client's UUID echoed (97), and PXE vendor options (43) whose discovery control bit 3 tells
//! the client to boot the file now (no menu, no boot server discovery).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode};
use dhcproto::{Encodable, Encoder};

use super::request::PxeRequest;

/// PXE vendor option tags (PXE 2.1, table 2-1).
const PXE_DISCOVERY_CONTROL: u8 = 6;
const PXE_BOOT_ITEM: u8 = 71;
const PXE_END: u8 = 255;
/// Discovery control bit 3: a boot file is in this offer; download it.
const BOOT_FILE_GIVEN: u8 = 0b1000;
/// BOOTP's minimum message size; some ROMs drop shorter answers.
const MIN_LEN: usize = 300;

/// Where a machine boots from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boot {
    /// The server identifier (54): the address the request came in on.
    pub server: Ipv4Addr,
    /// next-server (`siaddr`): where the client fetches the file by TFTP.
    pub next_server: Ipv4Addr,
    pub file: String,
}

/// The OFFER (to a DISCOVER) or ACK (to a REQUEST or INFORM on port 4011), encoded.
pub fn answer(req: &PxeRequest, boot: &Boot) -> Vec<u8> {
    let q = &req.message;
    let mut m = Message::new_with_id(
        q.xid(),
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        boot.next_server,
        q.giaddr(),
        q.chaddr(),
    );
    m.set_opcode(Opcode::BootReply)
        .set_flags(q.flags())
        .set_fname_str(&boot.file);
    let kind = match req.kind {
        MessageType::Discover => MessageType::Offer,
        _ => MessageType::Ack,
    };
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(boot.server));
    opts.insert(DhcpOption::ClassIdentifier(b"PXEClient".to_vec()));
    opts.insert(DhcpOption::VendorExtensions(vendor_options(req)));
    // RFC 4578: type 0 and a 16-byte UUID; anything else is not echoed.
    if let Some(uuid) = req.uuid.as_ref().filter(|u| u.len() == 17) {
        opts.insert(DhcpOption::ClientMachineIdentifier(uuid.clone()));
    }
    let mut out = Vec::with_capacity(MIN_LEN);
    // A message built from a decoded request's fields always encodes.
    m.encode(&mut Encoder::new(&mut out))
        .expect("a ProxyDHCP answer encodes");
    if out.len() < MIN_LEN {
        out.resize(MIN_LEN, 0);
    }
    out
}

fn vendor_options(req: &PxeRequest) -> Vec<u8> {
    let mut v = vec![PXE_DISCOVERY_CONTROL, 1, BOOT_FILE_GIVEN];
    // Option 43 holds 255 bytes: 3 for discovery control, 2 + the item, 1 for the end.
    if let Some(item) = req.boot_item.as_ref().filter(|i| i.len() <= 249) {
        v.extend([PXE_BOOT_ITEM, item.len() as u8]);
        v.extend(item);
    }
    v.push(PXE_END);
    v
}

#[cfg(test)]
mod tests {
    use dhcproto::v4::OptionCode;
    use dhcproto::{Decodable, Decoder};

    use super::super::request::{Ignored, pxe_datagram, read};
    use super::*;
    use crate::route::boot::BootArch;

    fn request(kind: MessageType, class: &[u8], arch: Option<u16>) -> Vec<u8> {
        pxe_datagram(kind, class, arch, [0x52, 0x54, 0, 0x12, 0x34, 0x56], false)
    }

    #[test]
    fn an_offer_gives_no_address_only_the_boot() {
        let bytes = request(
            MessageType::Discover,
            b"PXEClient:Arch:00007:UNDI:003016",
            Some(7),
        );
        let req = read(&bytes, false).unwrap();
        assert_eq!(req.arch, BootArch::Efi64);
        let boot = Boot {
            server: "10.77.0.1".parse().unwrap(),
            next_server: "10.77.0.1".parse().unwrap(),
            file: "ipxe.efi".into(),
        };
        let out = answer(&req, &boot);
        assert!(out.len() >= MIN_LEN);
        let m = Message::decode(&mut Decoder::new(&out)).unwrap();
        assert_eq!(m.opcode(), Opcode::BootReply);
        assert_eq!(m.xid(), 0xdead_beef);
        assert_eq!(m.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(m.siaddr(), boot.next_server);
        assert!(m.fname().is_some_and(|f| f.starts_with(b"ipxe.efi\0")));
        assert_eq!(m.chaddr()[..6], [0x52, 0x54, 0, 0x12, 0x34, 0x56]);
        assert_eq!(m.opts().msg_type(), Some(MessageType::Offer));
        assert!(matches!(m.opts().get(OptionCode::ClassIdentifier),
            Some(DhcpOption::ClassIdentifier(v)) if v == b"PXEClient"));
        assert!(matches!(m.opts().get(OptionCode::ServerIdentifier),
            Some(DhcpOption::ServerIdentifier(ip)) if *ip == boot.server));
        assert!(m.opts().get(OptionCode::ClientMachineIdentifier).is_some());
        assert!(matches!(m.opts().get(OptionCode::VendorExtensions),
            Some(DhcpOption::VendorExtensions(v)) if v == &[6, 1, 8, 255]));
        for absent in [
            OptionCode::AddressLeaseTime,
            OptionCode::Router,
            OptionCode::SubnetMask,
        ] {
            assert!(m.opts().get(absent).is_none(), "{absent:?}");
        }
        let bytes = request(MessageType::Request, b"PXEClient", Some(0));
        let ack = answer(&read(&bytes, true).unwrap(), &boot);
        let m = Message::decode(&mut Decoder::new(&ack)).unwrap();
        assert_eq!(m.opts().msg_type(), Some(MessageType::Ack));
    }

    #[test]
    fn only_pxe_requests_of_the_port_s_kind_are_read() {
        let d = request(MessageType::Discover, b"MSFT 5.0", None);
        assert_eq!(read(&d, false).unwrap_err(), Ignored::NotPxe);
        let d = request(MessageType::Discover, b"PXEClient:Arch:00000", Some(0));
        assert!(read(&d, false).is_ok());
        assert_eq!(read(&d, true).unwrap_err(), Ignored::OtherType);
        let r = request(MessageType::Request, b"PXEClient", None);
        assert_eq!(read(&r, false).unwrap_err(), Ignored::OtherType);
        assert_eq!(read(&r, true).unwrap().arch, BootArch::Bios);
        assert_eq!(read(&d[..100], false).unwrap_err(), Ignored::Malformed);
        let mut cookie = d.clone();
        cookie[236] = 0;
        assert_eq!(read(&cookie, false).unwrap_err(), Ignored::Malformed);
        let mut reply = d.clone();
        reply[0] = 2;
        assert_eq!(read(&reply, false).unwrap_err(), Ignored::NotARequest);
    }
}
