//! What a DHCP datagram says, read with `dhcproto`: only PXE clients' DISCOVERs, REQUESTs and
//! INFORMs on Ethernet are requests ProxyDHCP may answer; everything else gets a reason to be
//! ignored, so that a non-PXE machine is never answered and the reasons can be counted.

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder};

use crate::route::Mac;
use crate::route::boot::BootArch;

/// The BOOTP magic cookie that starts the options of a DHCP message.
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Why a datagram is not a request ProxyDHCP answers (also its metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    Malformed,
    /// A BOOTREPLY (another server's offer) or a request that is not DHCP (plain BOOTP).
    NotARequest,
    /// Not Ethernet with a 6-byte hardware address.
    NotEthernet,
    /// No option 60 starting `PXEClient`: never answered, whatever the routes say.
    NotPxe,
    /// A DECLINE, RELEASE…, or a REQUEST on port 67 (that is for the DHCP server).
    OtherType,
}

impl Ignored {
    pub fn reason(&self) -> &'static str {
        match self {
            Ignored::Malformed => "malformed",
            Ignored::NotARequest => "not-a-request",
            Ignored::NotEthernet => "not-ethernet",
            Ignored::NotPxe => "not-pxe",
            Ignored::OtherType => "other-type",
        }
    }
}

/// A PXE client's DHCP request, as ProxyDHCP reads it.
#[derive(Debug, Clone)]
pub struct PxeRequest {
    pub kind: MessageType,
    pub mac: Mac,
    pub arch: BootArch,
    /// iPXE's own round: user class (77) `iPXE`.
    pub ipxe: bool,
    /// Option 60 as sent (`PXEClient:Arch:00007:UNDI:003016`), lossy UTF-8.
    pub vendor_class: String,
    /// Option 97, the client's UUID/GUID, echoed in the answer.
    pub uuid: Option<Vec<u8>>,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    /// The PXE boot item (option 43, tag 71) a boot server discovery asks for, echoed back.
    pub boot_item: Option<Vec<u8>>,
    /// The message itself, for the fields an answer copies (xid, flags, chaddr…).
    pub message: Message,
}

/// Reads a datagram; `pxe_port`: it came to port 4011, where REQUEST and INFORM are asked.
pub fn read(bytes: &[u8], pxe_port: bool) -> Result<PxeRequest, Ignored> {
    // dhcproto asserts on some option lengths (option 94 must be 3 bytes) in debug builds: any
    // sender may send any length, so a panic in the codec is a malformed datagram too.
    let decoded = std::panic::catch_unwind(|| Message::decode(&mut Decoder::new(bytes)));
    let message = decoded
        .map_err(|_| Ignored::Malformed)?
        .map_err(|_| Ignored::Malformed)?;
    if bytes.get(236..240) != Some(&MAGIC[..]) {
        return Err(Ignored::Malformed);
    }
    let kind = message.opts().msg_type().ok_or(Ignored::NotARequest)?;
    if message.opcode() != Opcode::BootRequest {
        return Err(Ignored::NotARequest);
    }
    if message.htype() != HType::Eth || message.hlen() != 6 {
        return Err(Ignored::NotEthernet);
    }
    let vendor_class = match message.opts().get(OptionCode::ClassIdentifier) {
        Some(DhcpOption::ClassIdentifier(v)) if v.starts_with(b"PXEClient") => {
            String::from_utf8_lossy(v).into_owned()
        }
        _ => return Err(Ignored::NotPxe),
    };
    let answerable = match kind {
        MessageType::Discover => !pxe_port,
        MessageType::Request | MessageType::Inform => pxe_port,
        _ => false,
    };
    if !answerable {
        return Err(Ignored::OtherType);
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&message.chaddr()[..6]);
    Ok(PxeRequest {
        kind,
        mac,
        arch: BootArch::from_option93(arch_code(&message)),
        ipxe: matches!(message.opts().get(OptionCode::UserClass),
            Some(DhcpOption::UserClass(v)) if v.windows(4).any(|w| w == b"iPXE")),
        vendor_class,
        uuid: match message.opts().get(OptionCode::ClientMachineIdentifier) {
            Some(DhcpOption::ClientMachineIdentifier(v)) => Some(v.clone()),
            _ => None,
        },
        ciaddr: message.ciaddr(),
        giaddr: message.giaddr(),
        boot_item: boot_item(&message),
        message,
    })
}

fn arch_code(message: &Message) -> Option<u16> {
    match message.opts().get(OptionCode::ClientSystemArchitecture) {
        Some(DhcpOption::ClientSystemArchitecture(a)) => Some(a.0),
        _ => None,
    }
}

/// Tag 71 of the PXE vendor options (43), as a TLV list.
fn boot_item(message: &Message) -> Option<Vec<u8>> {
    let Some(DhcpOption::VendorExtensions(tlvs)) = message.opts().get(OptionCode::VendorExtensions)
    else {
        return None;
    };
    let mut rest = tlvs.as_slice();
    while let [tag, tail @ ..] = rest {
        match (*tag, tail) {
            (0, _) => rest = tail,
            (255, _) => return None,
            (tag, [len, tail @ ..]) if tail.len() >= *len as usize => {
                let (value, next) = tail.split_at(*len as usize);
                if tag == 71 {
                    return Some(value.to_vec());
                }
                rest = next;
            }
            _ => return None,
        }
    }
    None
}

/// A PXE client's request as firmware sends it, for the tests of this module's neighbours:
/// `class` in option 60, `arch` in 93, a 17-byte UUID in 97, and user class `iPXE` for
/// iPXE's own round.
#[cfg(test)]
pub(crate) fn pxe_datagram(
    kind: MessageType,
    class: &[u8],
    arch: Option<u16>,
    mac: Mac,
    ipxe: bool,
) -> Vec<u8> {
    use dhcproto::v4::Architecture;
    use dhcproto::{Encodable, Encoder};
    let z = Ipv4Addr::UNSPECIFIED;
    let mut m = Message::new_with_id(0xdead_beef, z, z, z, z, &mac);
    let o = m.opts_mut();
    o.insert(DhcpOption::MessageType(kind));
    o.insert(DhcpOption::ClassIdentifier(class.to_vec()));
    if let Some(a) = arch {
        o.insert(DhcpOption::ClientSystemArchitecture(Architecture::from(a)));
    }
    o.insert(DhcpOption::ClientMachineIdentifier(vec![0; 17]));
    if ipxe {
        o.insert(DhcpOption::UserClass(b"iPXE".to_vec()));
    }
    let mut out = Vec::new();
    m.encode(&mut Encoder::new(&mut out))
        .expect("a request encodes");
    out
}
