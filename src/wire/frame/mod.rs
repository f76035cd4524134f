//! WebSocket frames (RFC 6455 section 5): types, a header parser that works on
//! a bare byte slice, the per-byte field map, an incremental decoder and an
//! encoder for both roles.
//!
//! The parser never refuses to show a frame: a reserved opcode is kept as
//! [`OpCode::Reserved`], a length with its top bit set is reported as it is.
//! Role rules (must this frame be masked?) live in [`header_notes`], not in the
//! parser, so the same header can be judged from either side.

use crate::note::{Code, Note};
use crate::wire::mask::apply_mask;
use std::borrow::Cow;

pub use super::codes::{CloseCode, Direction, OpCode, Role};
pub use decode::{Decoded, Decoder, HeadBytes, Payload, RawFrame};
pub use encode::*;
pub use resync::{find_header, plausible_header};

mod decode;
mod encode;
mod resync;

/// A 4-byte masking key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MaskKey(pub [u8; 4]);

impl MaskKey {
    /// A fresh key from the thread RNG (section 5.3 asks for an unpredictable one).
    pub fn random() -> MaskKey {
        MaskKey(rand::random())
    }
    /// Lower-case hex.
    pub fn hex(self) -> String {
        hex::encode(self.0)
    }
}

/// How the payload length was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LenEncoding {
    /// In the 7 bits of the second byte (0-125).
    Bits7,
    /// 126 then a 16-bit big-endian length.
    Bits16,
    /// 127 then a 64-bit big-endian length.
    Bits64,
}

impl LenEncoding {
    /// 7, 16 or 64.
    pub fn bits(self) -> u8 {
        match self {
            LenEncoding::Bits7 => 7,
            LenEncoding::Bits16 => 16,
            LenEncoding::Bits64 => 64,
        }
    }
    /// The shortest encoding that holds `len`.
    pub fn minimal_for(len: u64) -> LenEncoding {
        if len <= 125 {
            LenEncoding::Bits7
        } else if len <= 0xffff {
            LenEncoding::Bits16
        } else {
            LenEncoding::Bits64
        }
    }
}

/// A decoded frame header (everything before the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment.
    pub fin: bool,
    /// Reserved bit 1 (permessage-deflate uses it).
    pub rsv1: bool,
    /// Reserved bit 2.
    pub rsv2: bool,
    /// Reserved bit 3.
    pub rsv3: bool,
    /// The opcode.
    pub opcode: OpCode,
    /// The masking key, if MASK was set.
    pub mask: Option<MaskKey>,
    /// Declared payload length, as written (the top bit may be set).
    pub payload_len: u64,
    /// How the length was written.
    pub len_encoding: LenEncoding,
    /// Bytes in the header: 2 to 14.
    pub header_len: usize,
}

/// Result of [`parse_header`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderParse {
    /// The header is incomplete; at least this many more bytes are needed.
    Need(usize),
    /// A whole header.
    Header(FrameHeader),
}

/// Parse a frame header from the start of `buf`. Pure; never fails.
pub fn parse_header(buf: &[u8]) -> HeaderParse {
    if buf.len() < 2 {
        return HeaderParse::Need(2 - buf.len());
    }
    let b0 = buf[0];
    let b1 = buf[1];
    let masked = b1 & 0x80 != 0;
    let len7 = b1 & 0x7f;
    let (len_encoding, ext) = match len7 {
        126 => (LenEncoding::Bits16, 2),
        127 => (LenEncoding::Bits64, 8),
        _ => (LenEncoding::Bits7, 0),
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if buf.len() < header_len {
        return HeaderParse::Need(header_len - buf.len());
    }
    let payload_len = match len_encoding {
        LenEncoding::Bits7 => len7 as u64,
        LenEncoding::Bits16 => u16::from_be_bytes([buf[2], buf[3]]) as u64,
        LenEncoding::Bits64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            u64::from_be_bytes(b)
        }
    };
    let mask = if masked {
        let m = 2 + ext;
        Some(MaskKey([buf[m], buf[m + 1], buf[m + 2], buf[m + 3]]))
    } else {
        None
    };
    HeaderParse::Header(FrameHeader {
        fin: b0 & 0x80 != 0,
        rsv1: b0 & 0x40 != 0,
        rsv2: b0 & 0x20 != 0,
        rsv3: b0 & 0x10 != 0,
        opcode: OpCode::from_u8(b0),
        mask,
        payload_len,
        len_encoding,
        header_len,
    })
}

/// Rules that can be judged from one header alone, for a frame sent by `sender`.
///
/// `rsv_allowed` is the set of RSV bits an extension negotiated (bit 0x4 =
/// RSV1, as in byte 0 shifted right by 4). `max_payload` is the configured
/// per-frame limit.
pub fn header_notes(
    h: &FrameHeader,
    raw: &[u8],
    sender: Role,
    rsv_allowed: u8,
    max_payload: u64,
) -> Vec<Note> {
    let mut notes = Vec::new();
    bits_notes(h, rsv_allowed, &mut notes);
    control_notes(h, &mut notes);
    mask_notes(h, sender, &mut notes);
    length_notes(h, raw, sender, max_payload, &mut notes);
    notes
}

/// The opcode and the RSV bits (RFC 6455 5.2).
fn bits_notes(h: &FrameHeader, rsv_allowed: u8, notes: &mut Vec<Note>) {
    if let OpCode::Reserved(r) = h.opcode {
        notes.push(Note::error(
            Code::ReservedOpcode,
            "RFC 6455 5.2",
            format!("opcode 0x{r:X} is reserved; no extension defines it, so the receiver must fail the connection"),
        ));
    }
    let rsv = (h.rsv1 as u8) << 2 | (h.rsv2 as u8) << 1 | h.rsv3 as u8;
    if rsv & !rsv_allowed != 0 {
        let names: Vec<&str> = [(h.rsv1, "RSV1"), (h.rsv2, "RSV2"), (h.rsv3, "RSV3")]
            .iter()
            .filter(|(b, _)| *b)
            .map(|(_, n)| *n)
            .collect();
        let hint = if h.rsv1 {
            " (RSV1 means a compressed frame, but permessage-deflate was not negotiated)"
        } else {
            ""
        };
        notes.push(Note::error(
            Code::RsvWithoutExtension,
            "RFC 6455 5.2",
            format!(
                "{} set without a negotiated extension{hint}",
                names.join(", ")
            ),
        ));
    }
}

/// Control frames: short and whole (RFC 6455 5.5).
fn control_notes(h: &FrameHeader, notes: &mut Vec<Note>) {
    if h.opcode.is_control() {
        if h.payload_len > 125 {
            notes.push(Note::error(
                Code::ControlTooLong,
                "RFC 6455 5.5",
                format!(
                    "{} frame carries {} bytes; control frames may carry at most 125",
                    h.opcode, h.payload_len
                ),
            ));
        }
        if !h.fin {
            notes.push(Note::error(
                Code::ControlFragmented,
                "RFC 6455 5.5",
                format!(
                    "{} frame has FIN clear; control frames must not be fragmented",
                    h.opcode
                ),
            ));
        }
    }
}

/// Masking by role, and the key (RFC 6455 5.1, 5.3).
fn mask_notes(h: &FrameHeader, sender: Role, notes: &mut Vec<Note>) {
    match (sender, h.mask) {
        (Role::Client, None) => {
            let hint = if h.opcode.is_control() {
                " (firmware that masks data frames but not pings/pongs/closes has this bug)"
            } else {
                ""
            };
            notes.push(Note::error(
                Code::ClientFrameUnmasked,
                "RFC 6455 5.1",
                format!("a client must mask every frame it sends; MASK is 0{hint}"),
            ));
        }
        (Role::Server, Some(_)) => notes.push(Note::error(
            Code::ServerFrameMasked,
            "RFC 6455 5.1",
            "a server must not mask frames it sends; MASK is 1",
        )),
        _ => {}
    }
    if let Some(k) = h.mask {
        if k.0 == [0; 4] {
            notes.push(Note::warning(
                Code::MaskKeyZero,
                "RFC 6455 5.3",
                "masking key is 00000000: the payload goes out in clear; the key must come from a strong random source",
            ));
        }
    }
}

/// The payload length: its form, its top bit, the limit, and the 4-byte
/// length written after 127 (RFC 6455 5.2, 10.4).
fn length_notes(
    h: &FrameHeader,
    raw: &[u8],
    sender: Role,
    max_payload: u64,
    notes: &mut Vec<Note>,
) {
    if h.len_encoding == LenEncoding::Bits64 && h.payload_len >> 63 != 0 {
        notes.push(Note::error(
            Code::LengthTopBit,
            "RFC 6455 5.2",
            format!(
                "64-bit payload length 0x{:016X} has its most significant bit set; it must be 0",
                h.payload_len
            ),
        ));
    }
    if h.len_encoding != LenEncoding::minimal_for(h.payload_len) && h.payload_len >> 63 == 0 {
        let min = LenEncoding::minimal_for(h.payload_len);
        notes.push(Note::warning(
            Code::LengthNonMinimal,
            "RFC 6455 5.2",
            format!(
                "length {} written in the {}-bit form; the minimal number of bytes must be used ({}-bit form){}",
                h.payload_len,
                h.len_encoding.bits(),
                min.bits(),
                if h.payload_len == 65535 && h.len_encoding == LenEncoding::Bits64 {
                    " - 65535 in the 64-bit form is a common firmware off-by-one"
                } else {
                    ""
                }
            ),
        ));
    }
    if h.len_encoding == LenEncoding::Bits64 && raw.len() >= 10 {
        // A client that writes 127 and then a 32-bit length puts the real
        // length in bytes 2..6 and its masking key (or payload) in 6..10, so
        // the 64-bit value comes out absurdly large.
        let as32 = u32::from_be_bytes([raw[2], raw[3], raw[4], raw[5]]) as u64;
        if h.payload_len > max_payload && as32 >= 126 && as32 <= max_payload {
            notes.push(Note::info(
                Code::HintLen1274byte,
                "RFC 6455 5.2",
                format!(
                    "127 followed by what looks like a 4-byte length ({as32}) instead of the 8-byte one: a common firmware bug; the next 4 bytes were probably meant as the {}",
                    if h.mask.is_some() || sender == Role::Client { "masking key" } else { "payload" }
                ),
            ));
        }
    }
    if h.payload_len > max_payload && h.payload_len >> 63 == 0 {
        notes.push(Note::error(
            Code::PayloadTooBig,
            "RFC 6455 10.4",
            format!("declares a {}-byte payload, over the {max_payload}-byte limit; the payload is skipped, not stored", h.payload_len),
        ));
    }
}

/// One labelled byte range of a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// Offset of the first byte in the direction's byte stream.
    pub offset: u64,
    /// Number of bytes (for bit fields inside one byte, 1).
    pub len: u64,
    /// Field name: FIN, RSV1, opcode, MASK, payload length (7-bit), ...
    pub name: &'static str,
    /// Raw value as written (bits or hex).
    pub raw: Cow<'static, str>,
    /// What the value means.
    pub meaning: Cow<'static, str>,
}

/// The field map of a frame header plus its payload range.
// One entry per header field, in wire order: a table more than logic.
pub fn fields(h: &FrameHeader, raw: &[u8], offset: u64) -> Vec<Field> {
    let mut f = Vec::with_capacity(10);
    let mut put = |at: u64,
                   len: u64,
                   name: &'static str,
                   raw: Cow<'static, str>,
                   meaning: Cow<'static, str>| {
        f.push(Field {
            offset: offset + at,
            len,
            name,
            raw,
            meaning,
        })
    };
    let bit = |b: bool| Cow::Borrowed(if b { "1" } else { "0" });
    let set = |b: bool| Cow::Borrowed(if b { "set" } else { "clear" });
    let (b0, b1) = (raw[0], raw[1]);
    let fin = if h.fin {
        "final fragment"
    } else {
        "more fragments follow"
    };
    put(0, 1, "FIN", bit(h.fin), fin.into());
    let rsv1 = if h.rsv1 {
        "set (compression?)"
    } else {
        "clear"
    };
    put(0, 1, "RSV1", bit(h.rsv1), rsv1.into());
    put(0, 1, "RSV2", bit(h.rsv2), set(h.rsv2));
    put(0, 1, "RSV3", bit(h.rsv3), set(h.rsv3));
    put(
        0,
        1,
        "opcode",
        format!("0x{:X}", b0 & 0x0f).into(),
        h.opcode.name().into(),
    );
    let masked = if h.mask.is_some() {
        "payload is masked"
    } else {
        "payload is not masked"
    };
    put(1, 1, "MASK", bit(b1 & 0x80 != 0), masked.into());
    let len7 = b1 & 0x7f;
    let len7_means: Cow<'static, str> = match len7 {
        126 => "126: a 16-bit length follows".into(),
        127 => "127: a 64-bit length follows".into(),
        n => format!("{n} bytes").into(),
    };
    put(
        1,
        1,
        "payload length (7-bit)",
        len7.to_string().into(),
        len7_means,
    );
    let bytes = || Cow::Owned(format!("{} bytes", h.payload_len));
    let pos = match h.len_encoding {
        LenEncoding::Bits7 => 2,
        LenEncoding::Bits16 => {
            put(
                2,
                2,
                "extended length (16-bit)",
                hex::encode(&raw[2..4]).into(),
                bytes(),
            );
            4
        }
        LenEncoding::Bits64 => {
            put(
                2,
                8,
                "extended length (64-bit)",
                hex::encode(&raw[2..10]).into(),
                bytes(),
            );
            10
        }
    };
    if let Some(k) = h.mask {
        put(
            pos,
            4,
            "masking key",
            k.hex().into(),
            "XOR key for the payload".into(),
        );
    }
    let payload = if h.mask.is_some() {
        format!("{} bytes, masked", h.payload_len).into()
    } else {
        bytes()
    };
    put(
        h.header_len as u64,
        h.payload_len,
        "payload",
        "".into(),
        payload,
    );
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(bytes: &[u8], max: u64) -> Vec<RawFrame> {
        let mut d = Decoder::new(max);
        d.feed(bytes);
        let mut v = Vec::new();
        while let Decoded::Frame(f) = d.next_frame() {
            v.push(f);
        }
        v
    }

    #[test]
    fn rfc_examples() {
        let f = &decode_all(&[0x81, 0x05, 0x48, 0x65, 0x6c, 0x6c, 0x6f], 1 << 20)[0];
        assert_eq!(&f.payload[..], b"Hello");
        assert!(f.header.fin);
        let f = &decode_all(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            1 << 20,
        )[0];
        assert_eq!(&f.payload[..], b"Hello");
        assert_eq!(f.header.mask, Some(MaskKey([0x37, 0xfa, 0x21, 0x3d])));
    }

    #[test]
    fn oversized_is_skipped_without_allocation() {
        let mut d = Decoder::new(1024);
        d.feed(&[
            0x82, 0x7f, 0x3f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 1, 2, 3,
        ]);
        match d.next_frame() {
            Decoded::Frame(f) => {
                assert!(f.skipped);
                assert_eq!(f.header.payload_len, (1 << 62) - 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.skipping(), (1u64 << 62) - 1 - 3);
        assert!(d.pending().is_empty());
    }

    #[test]
    fn encode_decode_identity_across_length_boundaries() {
        let sizes = [
            0usize, 1, 124, 125, 126, 127, 65534, 65535, 65536, 65537, 70000,
        ];
        for &n in &sizes {
            let payload: Vec<u8> = (0..n).map(|i| (i * 7 + 3) as u8).collect();
            for role in [Role::Client, Role::Server] {
                for op in [OpCode::Text, OpCode::Binary] {
                    let mut out = Vec::new();
                    encode_frame(&mut out, op, &payload, EncodeOptions::for_role(role));
                    let f = decode_all(&out, 1 << 24);
                    assert_eq!(f.len(), 1);
                    assert_eq!(f[0].payload[..], payload[..], "size {n}");
                    assert_eq!(f[0].header.len_encoding, LenEncoding::minimal_for(n as u64));
                    assert_eq!(f[0].header.mask.is_some(), role == Role::Client);
                    let notes = header_notes(&f[0].header, &f[0].head, role, 0, 1 << 24);
                    assert!(
                        notes.iter().all(|n| n.code == Code::MaskKeyZero),
                        "{notes:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn random_payloads_roundtrip_in_random_chunks() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for _ in 0..300 {
            let n = match rng.gen_range(0..4) {
                0 => rng.gen_range(0..130),
                1 => rng.gen_range(65530..65540),
                2 => rng.gen_range(0..5000),
                _ => rng.gen_range(120..70000),
            };
            let payload: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
            let mut out = Vec::new();
            let size = if rng.gen_bool(0.5) {
                Some(rng.gen_range(1..2000))
            } else {
                None
            };
            encode_message(&mut out, OpCode::Binary, &payload, Role::Client, size);
            let mut d = Decoder::new(1 << 24);
            let mut got = Vec::new();
            let mut i = 0;
            while i < out.len() {
                let step = rng.gen_range(1..3000).min(out.len() - i);
                d.feed(&out[i..i + step]);
                i += step;
                while let Decoded::Frame(f) = d.next_frame() {
                    got.extend_from_slice(&f.payload);
                }
            }
            assert_eq!(got, payload);
        }
    }

    #[test]
    fn close_codes() {
        for c in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode(c).is_allowed(), "{c}");
        }
        for c in [
            0, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535,
        ] {
            assert!(!CloseCode(c).is_allowed(), "{c}");
        }
    }

    #[test]
    fn four_byte_length_hint() {
        // 127, then a 32-bit length 300, then a key: what the buggy firmware sends.
        let raw = [
            0x81, 0xff, 0x00, 0x00, 0x01, 0x2c, 0x11, 0x22, 0x33, 0x44, 0xaa, 0xbb, 0xcc, 0xdd,
        ];
        let HeaderParse::Header(h) = parse_header(&raw) else {
            panic!()
        };
        let notes = header_notes(&h, &raw, Role::Client, 0, 1 << 24);
        assert!(
            notes
                .iter()
                .any(|n| n.code == Code::HintLen1274byte && n.message.contains("(300)")),
            "{notes:?}"
        );
    }
}
