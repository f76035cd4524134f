//! Finding where frames resume after bytes a capture missed.

use super::*;

/// Could a frame header start at `b[0]` in a stream sent by `sender`?
/// `None` when more bytes are needed to tell. Used to find where frames
/// resume after bytes a capture missed: only the first frame of a message
/// or a control frame qualifies (a continuation's message is lost), every
/// field must be one the sender may write, and when the frame's end is in
/// `b`, a text payload must be UTF-8 and the next header must fit too.
pub fn plausible_header(b: &[u8], sender: Role, max_payload: u64, deflate: bool) -> Option<bool> {
    plausible_at(b, sender, max_payload, deflate, 2)
}

fn plausible_at(b: &[u8], sender: Role, max: u64, deflate: bool, depth: u8) -> Option<bool> {
    if b.len() < 2 {
        return None;
    }
    let (b0, b1) = (b[0], b[1]);
    let fin = b0 & 0x80 != 0;
    let rsv = b0 & 0x70;
    let op = b0 & 0x0f;
    if !(rsv == 0 || (deflate && rsv == 0x40 && (op == 1 || op == 2))) {
        return Some(false);
    }
    if !matches!(op, 0x1 | 0x2 | 0x8 | 0x9 | 0xA) {
        return Some(false);
    }
    let masked = b1 & 0x80 != 0;
    if masked != (sender == Role::Client) {
        return Some(false);
    }
    let len7 = b1 & 0x7f;
    if op >= 8 && (!fin || len7 > 125 || (op == 8 && len7 == 1)) {
        return Some(false);
    }
    let ext = match len7 {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let header_len = 2 + ext + if masked { 4 } else { 0 };
    if b.len() < header_len {
        return None;
    }
    let len = match len7 {
        126 => {
            let n = u64::from(u16::from_be_bytes([b[2], b[3]]));
            if n < 126 {
                return Some(false);
            }
            n
        }
        127 => {
            let mut x = [0u8; 8];
            x.copy_from_slice(&b[2..10]);
            let n = u64::from_be_bytes(x);
            if n < 0x1_0000 || n >> 63 != 0 {
                return Some(false);
            }
            n
        }
        n => u64::from(n),
    };
    if len > max {
        return Some(false);
    }
    let end = header_len as u64 + len;
    if (b.len() as u64) < end {
        return Some(true);
    }
    let end = end as usize;
    if op == 1 && fin && rsv == 0 {
        let mut p = b[header_len..end].to_vec();
        if masked {
            crate::wire::mask::apply_mask(
                &mut p,
                [
                    b[header_len - 4],
                    b[header_len - 3],
                    b[header_len - 2],
                    b[header_len - 1],
                ],
            );
        }
        if std::str::from_utf8(&p).is_err() {
            return Some(false);
        }
    }
    if depth > 1 && b.len() > end {
        return match plausible_at(&b[end..], sender, max, deflate, depth - 1) {
            Some(false) => Some(false),
            _ => Some(true),
        };
    }
    Some(true)
}

/// Where in `b` the first plausible frame header starts (`Ok`), or, when
/// none does yet, from where the bytes must be kept to tell once more
/// arrive (`Err`: everything before it starts no header).
pub fn find_header(
    b: &[u8],
    sender: Role,
    max_payload: u64,
    deflate: bool,
) -> Result<usize, usize> {
    for p in 0..b.len() {
        match plausible_header(&b[p..], sender, max_payload, deflate) {
            Some(true) => return Ok(p),
            Some(false) => {}
            None => return Err(p),
        }
    }
    Err(b.len())
}
