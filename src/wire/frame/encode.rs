//! Writing frames, for both roles.

use super::*;

/// How to write one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// FIN bit.
    pub fin: bool,
    /// RSV bits, as bits 0x4 (RSV1), 0x2, 0x1.
    pub rsv: u8,
    /// Masking key; `None` writes an unmasked frame.
    pub mask: Option<MaskKey>,
    /// Force a length encoding (to reproduce non-minimal firmware); `None` for minimal.
    pub len_encoding: Option<LenEncoding>,
}

impl EncodeOptions {
    /// Final, unmasked, minimal length: what a server sends.
    pub fn server() -> EncodeOptions {
        EncodeOptions {
            fin: true,
            rsv: 0,
            mask: None,
            len_encoding: None,
        }
    }
    /// Final, masked with a fresh random key, minimal length: what a client sends.
    pub fn client() -> EncodeOptions {
        EncodeOptions {
            fin: true,
            rsv: 0,
            mask: Some(MaskKey::random()),
            len_encoding: None,
        }
    }
    /// Options for `role`.
    pub fn for_role(role: Role) -> EncodeOptions {
        match role {
            Role::Client => EncodeOptions::client(),
            Role::Server => EncodeOptions::server(),
        }
    }
}

/// Append one frame to `out`.
pub fn encode_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], o: EncodeOptions) {
    let len = payload.len() as u64;
    out.push((o.fin as u8) << 7 | (o.rsv & 7) << 4 | opcode.as_u8());
    let mbit = if o.mask.is_some() { 0x80 } else { 0 };
    match o.len_encoding.unwrap_or(LenEncoding::minimal_for(len)) {
        LenEncoding::Bits7 => out.push(mbit | (len as u8 & 0x7f)),
        LenEncoding::Bits16 => {
            out.push(mbit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        LenEncoding::Bits64 => {
            out.push(mbit | 127);
            out.extend_from_slice(&len.to_be_bytes());
        }
    }
    let start = out.len();
    if let Some(k) = o.mask {
        out.extend_from_slice(&k.0);
        out.extend_from_slice(payload);
        apply_mask(&mut out[start + 4..], k.0);
    } else {
        out.extend_from_slice(payload);
    }
}

/// Append a message as one frame, or fragmented into frames of at most
/// `frame_size` payload bytes. Client frames each get a fresh key.
pub fn encode_message(
    out: &mut Vec<u8>,
    opcode: OpCode,
    payload: &[u8],
    role: Role,
    frame_size: Option<usize>,
) {
    let size = frame_size.unwrap_or(usize::MAX).max(1);
    if payload.len() <= size {
        encode_frame(out, opcode, payload, EncodeOptions::for_role(role));
        return;
    }
    let mut chunks = payload.chunks(size).peekable();
    let mut first = true;
    while let Some(c) = chunks.next() {
        let mut o = EncodeOptions::for_role(role);
        o.fin = chunks.peek().is_none();
        encode_frame(out, if first { opcode } else { OpCode::Continuation }, c, o);
        first = false;
    }
}

/// The payload of a Close frame: code then UTF-8 reason (section 5.5.1).
pub fn close_payload(code: Option<CloseCode>, reason: &str) -> Vec<u8> {
    let mut p = Vec::new();
    if let Some(c) = code {
        p.extend_from_slice(&c.0.to_be_bytes());
        // A control payload is capped at 125 bytes: trim the reason on a char boundary.
        let mut r = reason;
        while r.len() > 123 {
            let mut cut = 123;
            while !r.is_char_boundary(cut) {
                cut -= 1;
            }
            r = &r[..cut];
        }
        p.extend_from_slice(r.as_bytes());
    }
    p
}
