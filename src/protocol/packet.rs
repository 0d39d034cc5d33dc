//! TFTP packet codec (RFC 1350, options RFC 2347): bytes in, typed packets out, and back.
//!
//! Two ways in, because the relay and the control plane want different things:
//! - [`Packet::decode`] / [`Packet::encode`] give an owned, typed packet. The listener uses it for
//!   requests, the client and tests for everything. `decode(encode(p)) == p` holds (proptest).
//! - [`peek`] reads only the opcode and the block number or error code, borrowing the datagram
//!   and allocating nothing. The session relay uses it on every relayed packet.
//!
//! Parse errors are a small `Copy` enum: the hot path never boxes or formats an error.

use crate::protocol::options::Options;

/// Opcodes of RFC 1350 and RFC 2347.
pub mod opcode {
    pub const RRQ: u16 = 1;
    pub const WRQ: u16 = 2;
    pub const DATA: u16 = 3;
    pub const ACK: u16 = 4;
    pub const ERROR: u16 = 5;
    pub const OACK: u16 = 6;
}

/// TFTP error codes (RFC 1350 §5, RFC 2347 for 8).
pub mod error_code {
    pub const NOT_DEFINED: u16 = 0;
    pub const FILE_NOT_FOUND: u16 = 1;
    pub const ACCESS_VIOLATION: u16 = 2;
    pub const DISK_FULL: u16 = 3;
    pub const ILLEGAL_OPERATION: u16 = 4;
    pub const UNKNOWN_TID: u16 = 5;
    pub const FILE_EXISTS: u16 = 6;
    pub const NO_SUCH_USER: u16 = 7;
    pub const OPTION_REFUSED: u16 = 8;
}

/// Largest TFTP datagram: 4 header bytes and the largest blksize of RFC 2348.
pub const MAX_DATAGRAM: usize = 4 + 65464;

/// Why a datagram is not a valid TFTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("datagram shorter than a TFTP header")]
    TooShort,
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    #[error("string field is not NUL-terminated")]
    Unterminated,
    #[error("string field is not valid UTF-8")]
    NotUtf8,
    #[error("option name without a value")]
    OptionWithoutValue,
    #[error("trailing bytes after the packet")]
    Trailing,
}

/// Transfer mode of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Octet,
    Netascii,
    Mail,
    /// Any other mode string, kept as sent.
    Other(String),
}

impl Mode {
    fn parse(s: &str) -> Mode {
        match s.to_ascii_lowercase().as_str() {
            "octet" => Mode::Octet,
            "netascii" => Mode::Netascii,
            "mail" => Mode::Mail,
            _ => Mode::Other(s.to_string()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
            Mode::Other(s) => s,
        }
    }
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The name as sent: bytes, not necessarily UTF-8 (see `names`).
    pub filename: Vec<u8>,
    pub mode: Mode,
    pub options: Options,
}

/// One TFTP packet, owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Rrq(Request),
    Wrq(Request),
    Data { block: u16, data: Vec<u8> },
    Ack { block: u16, extra: Vec<u8> },
    Error { code: u16, message: String },
    Oack(Options),
}

/// What [`peek`] sees in a datagram, without copying anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Rrq,
    Wrq,
    /// DATA with its block number and payload length.
    Data {
        block: u16,
        len: usize,
    },
    Ack {
        block: u16,
    },
    Error {
        code: u16,
    },
    Oack,
}

/// Reads the opcode and the fixed fields of a datagram. Never allocates.
pub fn peek(buf: &[u8]) -> Result<Kind, ParseError> {
    if buf.len() < 2 {
        return Err(ParseError::TooShort);
    }
    let op = u16::from_be_bytes([buf[0], buf[1]]);
    let field = || {
        buf.get(2..4)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(ParseError::TooShort)
    };
    match op {
        opcode::RRQ => Ok(Kind::Rrq),
        opcode::WRQ => Ok(Kind::Wrq),
        opcode::DATA => Ok(Kind::Data {
            block: field()?,
            len: buf.len() - 4.min(buf.len()),
        }),
        opcode::ACK => Ok(Kind::Ack { block: field()? }),
        opcode::ERROR => Ok(Kind::Error { code: field()? }),
        opcode::OACK => Ok(Kind::Oack),
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

impl Packet {
    /// Decodes one datagram.
    pub fn decode(buf: &[u8]) -> Result<Packet, ParseError> {
        let kind = peek(buf)?;
        let body = &buf[2..];
        match kind {
            Kind::Rrq => Ok(Packet::Rrq(decode_request(body)?)),
            Kind::Wrq => Ok(Packet::Wrq(decode_request(body)?)),
            Kind::Data { block, .. } => Ok(Packet::Data {
                block,
                data: body[2..].to_vec(),
            }),
            Kind::Ack { block } => Ok(Packet::Ack {
                block,
                extra: body[2..].to_vec(),
            }),
            Kind::Error { code } => decode_error(code, &body[2..]),
            Kind::Oack => Ok(Packet::Oack(decode_options(body)?)),
        }
    }

    /// Encodes the packet into a new buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.encoded_len_hint());
        self.encode_into(&mut out);
        out
    }

    /// Appends the encoded packet to `out` (lets callers reuse one buffer).
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        match self {
            Packet::Rrq(r) => encode_request(out, opcode::RRQ, r),
            Packet::Wrq(r) => encode_request(out, opcode::WRQ, r),
            Packet::Data { block, data } => {
                put_u16(out, opcode::DATA);
                put_u16(out, *block);
                out.extend_from_slice(data);
            }
            Packet::Ack { block, extra } => {
                put_u16(out, opcode::ACK);
                put_u16(out, *block);
                out.extend_from_slice(extra);
            }
            Packet::Error { code, message } => {
                put_u16(out, opcode::ERROR);
                put_u16(out, *code);
                put_str(out, message);
            }
            Packet::Oack(opts) => {
                put_u16(out, opcode::OACK);
                encode_options(out, opts);
            }
        }
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            Packet::Data { data, .. } => 4 + data.len(),
            _ => 64,
        }
    }
}

/// Builds an ERROR datagram (convenience for the relay and listener).
pub fn error_datagram(code: u16, message: &str) -> Vec<u8> {
    Packet::Error {
        code,
        message: message.to_string(),
    }
    .encode()
}

/// Builds an ACK datagram.
pub fn ack_datagram(block: u16) -> [u8; 4] {
    let [a, b] = opcode::ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

fn decode_request(body: &[u8]) -> Result<Request, ParseError> {
    let mut fields = Fields { rest: body };
    let filename = fields.next_bytes()?.ok_or(ParseError::Unterminated)?;
    let mode = fields.next_str()?.ok_or(ParseError::Unterminated)?;
    let options = fields.options()?;
    Ok(Request {
        filename: filename.to_vec(),
        mode: Mode::parse(mode),
        options,
    })
}

fn decode_error(code: u16, body: &[u8]) -> Result<Packet, ParseError> {
    // Some servers omit the terminating NUL of the message: accept that.
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    let message = std::str::from_utf8(&body[..end])
        .map_err(|_| ParseError::NotUtf8)?
        .to_string();
    if end + 1 < body.len() {
        return Err(ParseError::Trailing);
    }
    Ok(Packet::Error { code, message })
}

fn decode_options(body: &[u8]) -> Result<Options, ParseError> {
    Fields { rest: body }.options()
}

/// Cursor over NUL-terminated strings.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next NUL-terminated field, or `None` at the end of the datagram.
    fn next_bytes(&mut self) -> Result<Option<&'a [u8]>, ParseError> {
        if self.rest.is_empty() {
            return Ok(None);
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Unterminated)?;
        let field = &self.rest[..end];
        self.rest = &self.rest[end + 1..];
        Ok(Some(field))
    }

    /// The next NUL-terminated string (UTF-8), or `None` at the end of the datagram.
    fn next_str(&mut self) -> Result<Option<&'a str>, ParseError> {
        match self.next_bytes()? {
            Some(b) => std::str::from_utf8(b)
                .map(Some)
                .map_err(|_| ParseError::NotUtf8),
            None => Ok(None),
        }
    }

    fn options(&mut self) -> Result<Options, ParseError> {
        let mut options = Options::default();
        while let Some(name) = self.next_str()? {
            let value = self.next_str()?.ok_or(ParseError::OptionWithoutValue)?;
            options.push(name, value);
        }
        Ok(options)
    }
}

fn encode_request(out: &mut Vec<u8>, op: u16, r: &Request) {
    put_u16(out, op);
    put_bytes(out, &r.filename);
    put_str(out, r.mode.as_str());
    encode_options(out, &r.options);
}

fn encode_options(out: &mut Vec<u8>, opts: &Options) {
    for (name, value) in opts.iter() {
        put_str(out, name);
        put_str(out, value);
    }
}

fn put_u16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_bytes(out, s.as_bytes());
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(b);
    out.push(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(name: &str, opts: &[(&str, &str)]) -> Packet {
        let mut options = Options::default();
        for (k, v) in opts {
            options.push(k, v);
        }
        Packet::Rrq(Request {
            filename: name.into(),
            mode: Mode::Octet,
            options,
        })
    }

    #[test]
    fn rrq_with_options_round_trips_and_keeps_unknown_options() {
        let p = rrq(
            "ARDBP32.BIN",
            &[("blksize", "1432"), ("tsize", "0"), ("msftwindow", "31416")],
        );
        let bytes = p.encode();
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
    }

    #[test]
    fn mode_is_case_insensitive() {
        let bytes = b"\x00\x01file\x00OCTET\x00";
        match Packet::decode(bytes).unwrap() {
            Packet::Rrq(r) => assert_eq!(r.mode, Mode::Octet),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn peek_reads_fixed_fields_without_decoding() {
        let data = Packet::Data {
            block: 65535,
            data: vec![7; 512],
        }
        .encode();
        assert_eq!(
            peek(&data),
            Ok(Kind::Data {
                block: 65535,
                len: 512
            })
        );
        assert_eq!(peek(&ack_datagram(9)), Ok(Kind::Ack { block: 9 }));
        // WDS msftwindow ACKs carry an extra byte: still an ACK.
        assert_eq!(peek(&[0, 4, 0, 9, 1]), Ok(Kind::Ack { block: 9 }));
        assert_eq!(peek(&[0, 9, 0, 0]), Err(ParseError::UnknownOpcode(9)));
        assert_eq!(peek(&[0]), Err(ParseError::TooShort));
        assert_eq!(peek(&[0, 3, 0]), Err(ParseError::TooShort));
    }

    #[test]
    fn malformed_requests_are_errors() {
        assert_eq!(
            Packet::decode(b"\x00\x01file"),
            Err(ParseError::Unterminated)
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00octet\x00blksize\x00"),
            Err(ParseError::OptionWithoutValue)
        );
        assert_eq!(
            Packet::decode(b"\x00\x01file\x00\xff\xfe\x00"),
            Err(ParseError::NotUtf8),
            "a mode is text"
        );
        let name = Packet::decode(b"\x00\x01\xff\xfe\x00octet\x00");
        assert!(
            matches!(&name, Ok(Packet::Rrq(r)) if r.filename == b"\xff\xfe"),
            "a name is bytes: {name:?}"
        );
    }

    #[test]
    fn error_without_trailing_nul_is_accepted() {
        assert_eq!(
            Packet::decode(b"\x00\x05\x00\x01nope"),
            Ok(Packet::Error {
                code: 1,
                message: "nope".into()
            })
        );
    }
}
