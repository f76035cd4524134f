//! Diagnosis: from the bytes, the likely cause in firmware of what the RFC
//! checks flag.
//!
//! The annotator names the rule a frame breaks; these functions look for the
//! mistake that explains it, the few that embedded WebSocket stacks ship
//! again and again: a length written in the wrong byte order or that is not
//! a length at all, a mask applied wrongly, a C string sent with its NUL, a
//! Latin-1 string where UTF-8 belongs, two JSON messages in one frame. Each
//! is a pure function of bytes, tested on its own; the annotator calls them
//! where the evidence is and attaches what they find as info notes (hints),
//! never as new violations, so valid traffic can raise none of them.

use crate::wire::frame::{
    parse_header, FrameHeader, HeaderParse, LenEncoding, MaskKey, OpCode, Role,
};

/// Does a frame header plausibly start at the beginning of `b`, sent by
/// `sender`? A known opcode, no RSV bit, the mask bit right for the
/// sender, a control frame final and short, and a payload that fits in
/// what follows or runs to its end.
pub fn plausible_header(b: &[u8], sender: Role) -> Option<FrameHeader> {
    let h = match parse_header(b) {
        HeaderParse::Header(h) => h,
        HeaderParse::Need(_) => return None,
    };
    let fits = h.payload_len <= (b.len() - h.header_len) as u64;
    (fits && plausible_fields(&h, sender)).then_some(h)
}

/// The header fields a sane sender writes, whatever the length.
fn plausible_fields(h: &FrameHeader, sender: Role) -> bool {
    let known = matches!(
        h.opcode,
        OpCode::Continuation
            | OpCode::Text
            | OpCode::Binary
            | OpCode::Close
            | OpCode::Ping
            | OpCode::Pong
    );
    let mask_ok = h.mask.is_some() == (sender == Role::Client);
    let control_ok = !h.opcode.is_control() || (h.fin && h.payload_len <= 125);
    known && mask_ok && control_ok && !h.rsv1 && !h.rsv2 && !h.rsv3
}

/// Like [`plausible_header`], but the header's own length may be in the
/// wrong byte order too (a firmware that swaps one length swaps them all).
fn plausible_header_either_order(b: &[u8], sender: Role) -> bool {
    if plausible_header(b, sender).is_some() {
        return true;
    }
    let HeaderParse::Header(h) = parse_header(b) else {
        return false;
    };
    let swapped_fits = swapped_length(&h, b).is_some_and(|s| s <= (b.len() - h.header_len) as u64);
    swapped_fits && !h.opcode.is_control() && plausible_fields(&h, sender)
}

/// The declared length with its bytes in the other order.
pub fn swapped_length(h: &FrameHeader, head: &[u8]) -> Option<u64> {
    match h.len_encoding {
        LenEncoding::Bits7 => None,
        LenEncoding::Bits16 => Some(u16::from_le_bytes([head[2], head[3]]) as u64),
        LenEncoding::Bits64 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[2..10]);
            Some(u64::from_le_bytes(b))
        }
    }
}

/// What a length that does not fit what followed it was, most likely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LengthCause {
    /// Written little-endian: the swapped value fits.
    ByteOrder {
        /// The swapped value.
        swapped: u64,
    },
    /// Not a length: a plausible frame header starts `fits` bytes after
    /// the header, so a length of `fits` would have been right.
    NotALength {
        /// The payload length that would have fitted.
        fits: u64,
    },
}

impl LengthCause {
    /// The payload length that fits: where the real next frame starts,
    /// counted from the end of the header.
    pub fn fits(&self) -> u64 {
        match *self {
            LengthCause::ByteOrder { swapped } => swapped,
            LengthCause::NotALength { fits } => fits,
        }
    }
}

/// Explain a declared length that does not fit: `after` is every byte that
/// followed the header (the whole rest of the stream when `at_end`).
pub fn length_cause(
    h: &FrameHeader,
    head: &[u8],
    after: &[u8],
    at_end: bool,
    sender: Role,
) -> Option<LengthCause> {
    if let Some(s) = swapped_length(h, head) {
        if s != h.payload_len && s <= after.len() as u64 {
            let rest = &after[s as usize..];
            if (rest.is_empty() && at_end) || plausible_header_either_order(rest, sender) {
                return Some(LengthCause::ByteOrder { swapped: s });
            }
        }
    }
    // The first offset from which the bytes decode as plausible frames: to
    // the very end of the stream, or at least two in a row (one plausible
    // header alone turns up by chance in payload bytes).
    (1..after.len())
        .find(|&k| frames_follow(&after[k..], at_end, sender))
        .map(|k| LengthCause::NotALength { fits: k as u64 })
}

/// Do plausible frames follow one another from the start of `b`: all the
/// way to its end when it is the end of the stream, else at least two?
fn frames_follow(b: &[u8], at_end: bool, sender: Role) -> bool {
    let mut pos = 0;
    let mut count = 0;
    while let Some(h) = plausible_header(&b[pos..], sender) {
        pos += h.header_len + h.payload_len as usize;
        count += 1;
        if pos == b.len() {
            return true;
        }
    }
    !at_end && count >= 2
}

/// A torn frame: the frame before this one was cut short (a write that
/// timed out half-way) and the sender went on with the next frame, whose
/// header then sits inside the payload the cut frame declared. `prev` is
/// that payload as it came on the wire, `cur` the bytes read from where
/// the broken frame starts. The answer is the offset in `prev` where the
/// next frame really starts: its header is plausible, it runs past the
/// cut into `cur`, and plausible frames follow it (two in a row, or to the
/// end of `cur` when that is the end of the stream), so one header found by chance in payload bytes is not
/// taken for one.
pub fn torn_frame(prev: &[u8], cur: &[u8], at_end: bool, sender: Role) -> Option<usize> {
    if prev.is_empty() || cur.is_empty() {
        return None;
    }
    let mut b = Vec::with_capacity(prev.len() + cur.len());
    b.extend_from_slice(prev);
    b.extend_from_slice(cur);
    (1..prev.len()).find(|&q| {
        plausible_header(&b[q..], sender)
            .is_some_and(|h| q + h.header_len + h.payload_len as usize > prev.len())
            && frames_follow(&b[q..], at_end, sender)
    })
}

/// How a masked text payload went wrong, when unmasking it another way
/// gives valid text (and valid JSON where JSON is expected).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskCause {
    /// MASK set, but the payload went out as is.
    NotApplied,
    /// The key index restarted at 0 at byte `at` (and every `at` bytes when
    /// `periodic`): a sender that masks each write buffer separately.
    Restart {
        /// The first payload byte masked from key byte 0 again.
        at: usize,
        /// Restarted every `at` bytes.
        periodic: bool,
    },
    /// The payload was masked with another key than the one in the header.
    OtherKey {
        /// The key that unmasks it.
        used: [u8; 4],
    },
}

fn xor(masked: &[u8], key: [u8; 4], start_index: usize) -> Vec<u8> {
    masked
        .iter()
        .enumerate()
        .map(|(i, b)| b ^ key[(i + start_index) % 4])
        .collect()
}

/// Unmask with the key index restarting at 0 at every multiple of `every`
/// (`periodic`) or only at `every`.
fn unmask_restarting(masked: &[u8], key: [u8; 4], every: usize, periodic: bool) -> Vec<u8> {
    masked
        .iter()
        .enumerate()
        .map(|(i, b)| {
            let j = if i < every {
                i
            } else if periodic {
                i % every
            } else {
                i - every
            };
            b ^ key[j % 4]
        })
        .collect()
}

/// Explain a masked text payload that unmasked to invalid text: `masked` is
/// the payload as sent, `ok` says whether a candidate is what was meant
/// (valid UTF-8, and valid JSON for Kinetid). `bad_at` is the first byte
/// where the unmasked payload goes wrong.
pub fn mask_cause(
    masked: &[u8],
    key: MaskKey,
    bad_at: usize,
    ok: impl Fn(&[u8]) -> bool,
) -> Option<MaskCause> {
    if ok(masked) {
        return Some(MaskCause::NotApplied);
    }
    // A restart shows only where it moves the key index: not at multiples of 4.
    let lo = bad_at.saturating_sub(64).max(1);
    for at in (lo..=bad_at.min(masked.len().saturating_sub(1))).rev() {
        if at % 4 == 0 {
            continue;
        }
        for periodic in [true, false] {
            if ok(&unmask_restarting(masked, key.0, at, periodic)) {
                return Some(MaskCause::Restart { at, periodic });
            }
        }
    }
    // Every Kinetid message starts with {"t": the first 4 bytes give the key used.
    if masked.len() >= 4 {
        let mut used = [0u8; 4];
        for (i, u) in used.iter_mut().enumerate() {
            *u = masked[i] ^ b"{\"t\""[i];
        }
        if used != key.0 && ok(&xor(masked, used, 0)) {
            return Some(MaskCause::OtherKey { used });
        }
    }
    None
}

/// Is `k` a byte rotation of `base`?
pub fn rotation_of(k: [u8; 4], base: [u8; 4]) -> Option<usize> {
    (1..4).find(|&r| (0..4).all(|i| k[i] == base[(i + r) % 4]))
}

/// Trailing NUL bytes of a text payload: how many.
pub fn trailing_nuls(b: &[u8]) -> usize {
    b.iter().rev().take_while(|&&c| c == 0).count()
}

/// Windows-1252 for the bytes 0x80..0x9F (the rest of the high half is
/// ISO-8859-1, which is Unicode's first 256 code points).
const CP1252: [char; 32] = [
    '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž', '\u{8f}',
    '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}', 'ž', 'Ÿ',
];

/// Invalid UTF-8 that reads as Windows-1252 / ISO-8859-1 text: the text as
/// it was meant. Only when every non-ASCII byte stands alone (no UTF-8
/// sequence among them) and maps to a printable character.
pub fn as_latin1(b: &[u8]) -> Option<String> {
    if std::str::from_utf8(b).is_ok() || !b.iter().any(|&c| c >= 0x80) {
        return None;
    }
    let mut s = String::with_capacity(b.len() + 8);
    for (i, &c) in b.iter().enumerate() {
        let ch = match c {
            0x00..=0x7f => c as char,
            0x80..=0x9f => CP1252[(c - 0x80) as usize],
            _ => c as char,
        };
        if c >= 0x80 {
            // A byte that continues or starts a UTF-8 sequence next to another
            // high byte is more likely broken UTF-8 than Latin-1; and only
            // what devices really write counts (a degree sign, a lower-case
            // accented letter, an umlaut, a currency or unit sign).
            let next_high = b.get(i + 1).is_some_and(|&n| n >= 0x80);
            let likely = ch.is_lowercase() || "°µ±²³§€£¥½¼¾·©®ÄÖÜ".contains(ch);
            if next_high || !likely {
                return None;
            }
        }
        s.push(ch);
    }
    Some(s)
}

/// Two or more JSON values back to back: the byte offset where each one
/// after the first starts.
pub fn json_concatenated(text: &str) -> Option<Vec<usize>> {
    let mut it = serde_json::Deserializer::from_str(text).into_iter::<serde_json::Value>();
    let mut starts = Vec::new();
    let mut count = 0;
    loop {
        let before = it.byte_offset();
        match it.next() {
            None => break,
            Some(Ok(_)) => {
                if count > 0 {
                    // Skip the whitespace the deserializer passed over.
                    let ws = text[before..].len() - text[before..].trim_start().len();
                    starts.push(before + ws);
                }
                count += 1;
            }
            Some(Err(_)) => return None,
        }
    }
    (count >= 2).then_some(starts)
}

/// How a `Sec-WebSocket-Accept` that does not match was computed, when it
/// is one of the usual mistakes: the code and a sentence.
pub fn accept_cause(key: &str, got: &str) -> Option<(crate::note::Code, String)> {
    use crate::note::Code;
    use base64::Engine;
    use sha1::{Digest, Sha1};
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let b64 = |d: &[u8]| base64::engine::general_purpose::STANDARD.encode(d);
    let sha = |s: &[u8]| Sha1::digest(s).to_vec();
    let right = sha(format!("{key}{GUID}").as_bytes());
    let got = got.trim();
    if got.eq_ignore_ascii_case(&hex::encode(&right)) {
        return Some((Code::HintAcceptHex, "the accept is the right SHA-1 written in hex: the server skipped the base64 step (RFC 6455 4.2.2 wants base64 of the 20 bytes)".into()));
    }
    if got == b64(&right).trim_end_matches('=') {
        return Some((
            Code::HintAcceptHex,
            "the accept is the right value without its base64 padding (=)".into(),
        ));
    }
    let guids: [(&str, &str); 3] = [
        (&GUID.to_ascii_lowercase(), "the GUID in lower case"),
        ("", "no GUID at all (SHA-1 of the key alone)"),
        (
            "258EAFA5-E914-47DA-95CA-C5AB0DC85B1",
            "a GUID missing its last character",
        ),
    ];
    for (g, what) in guids {
        if got == b64(&sha(format!("{key}{g}").as_bytes())) {
            return Some((Code::HintAcceptWrongGuid, format!("the accept was computed with {what} instead of 258EAFA5-E914-47DA-95CA-C5AB0DC85B11")));
        }
    }
    if got == b64(&sha(format!("{GUID}{key}").as_bytes())) {
        return Some((Code::HintAcceptWrongGuid, "the accept was computed from GUID + key, the wrong way round (RFC 6455 4.2.2: key, then GUID)".into()));
    }
    let trimmed = key.trim_end_matches('=');
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap_or_default();
    let altered: [(Vec<u8>, &str); 4] = [
        (
            format!("{trimmed}{GUID}").into_bytes(),
            "the key without its = padding",
        ),
        (
            format!(" {key}{GUID}").into_bytes(),
            "the key with the space after the colon kept",
        ),
        (
            format!("{key}\r\n{GUID}").into_bytes(),
            "the key with its line end kept",
        ),
        (
            [raw.as_slice(), GUID.as_bytes()].concat(),
            "the key's 16 decoded bytes instead of its base64 text",
        ),
    ];
    for (input, what) in altered {
        if got == b64(&sha(&input)) {
            return Some((Code::HintAcceptAlteredKey, format!("the accept was computed from {what}: the server altered the key before hashing it")));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{encode_frame, EncodeOptions};
    use crate::wire::mask::apply_mask;

    fn client(op: OpCode, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(
            &mut v,
            op,
            p,
            EncodeOptions {
                mask: Some(MaskKey([1, 2, 3, 4])),
                ..EncodeOptions::client()
            },
        );
        v
    }

    #[test]
    fn plausible_headers() {
        assert!(plausible_header(&client(OpCode::Text, b"hi"), Role::Client).is_some());
        // Wrong mask bit for the sender, reserved opcode, RSV, short data.
        assert!(plausible_header(&client(OpCode::Text, b"hi"), Role::Server).is_none());
        assert!(plausible_header(&[0x83, 0x80, 0, 0, 0, 0], Role::Client).is_none());
        assert!(plausible_header(&[0xc1, 0x80, 0, 0, 0, 0], Role::Client).is_none());
        assert!(plausible_header(&[0x81, 0x85, 0, 0, 0, 0, 1], Role::Client).is_none());
    }

    #[test]
    fn a_little_endian_length_is_found_for_every_size() {
        for n in [126usize, 146, 300, 1000, 4000] {
            let p = vec![b'x'; n];
            let mut f = client(OpCode::Text, &p);
            f.swap(2, 3);
            let h = match parse_header(&f) {
                HeaderParse::Header(h) => h,
                _ => panic!(),
            };
            let after = &f[h.header_len..];
            assert_eq!(
                length_cause(&h, &f, after, true, Role::Client),
                Some(LengthCause::ByteOrder { swapped: n as u64 }),
                "{n}"
            );
            // Followed by another frame instead of the end of the stream.
            let mut more = f.clone();
            more.extend(client(OpCode::Ping, b"p"));
            assert_eq!(
                length_cause(&h, &more, &more[h.header_len..], false, Role::Client),
                Some(LengthCause::ByteOrder { swapped: n as u64 })
            );
            // Followed by a frame whose length is swapped as well.
            let mut next = client(OpCode::Text, &vec![b'y'; n + 7]);
            next.swap(2, 3);
            let mut both = f.clone();
            both.extend(&next);
            assert_eq!(
                length_cause(&h, &both, &both[h.header_len..], false, Role::Client),
                Some(LengthCause::ByteOrder { swapped: n as u64 })
            );
        }
    }

    #[test]
    fn a_length_that_is_not_a_length_names_the_next_header() {
        // 126 and a 16-bit "length" of 0x2000 (a buffer size) before 57 bytes.
        let mut g = vec![0x81, 0x80 | 126, 0x20, 0x00, 1, 2, 3, 4];
        g.extend_from_slice(&[b'z' ^ 1; 57]);
        let next = client(OpCode::Text, b"ok");
        g.extend_from_slice(&next);
        let h = match parse_header(&g) {
            HeaderParse::Header(h) => h,
            _ => panic!(),
        };
        let c = length_cause(&h, &g, &g[h.header_len..], true, Role::Client);
        assert_eq!(c, Some(LengthCause::NotALength { fits: 57 }));
    }

    #[test]
    fn mask_mistakes() {
        let text = br#"{"t":"report","id":2,"dev":"KN-A4CF12F0E1B2","seq":5}"#;
        let key = MaskKey([0x37, 0xfa, 0x21, 0x3d]);
        let ok = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b).is_ok();
        // Sent unmasked.
        assert_eq!(mask_cause(text, key, 0, ok), Some(MaskCause::NotApplied));
        // Key index restarted at byte 10 (a 10-byte write buffer, once and every time).
        for (at, periodic) in [(10, false), (10, true), (7, false), (13, true)] {
            let masked = unmask_restarting(text, key.0, at, periodic);
            let mut unmasked = masked.clone();
            apply_mask(&mut unmasked, key.0);
            let bad = std::str::from_utf8(&unmasked)
                .map(|_| unmasked.len())
                .unwrap_or_else(|e| e.valid_up_to());
            let bad = bad.min(
                serde_json::from_slice::<serde_json::Value>(&unmasked)
                    .err()
                    .map_or(unmasked.len(), |e| e.column().saturating_sub(1)),
            );
            let c = mask_cause(&masked, key, bad, ok);
            assert!(
                matches!(c, Some(MaskCause::Restart { at: a, .. }) if a == at),
                "{at} {periodic}: {c:?}"
            );
        }
        // Another key than the header's.
        let used = [9, 8, 7, 6];
        let masked = xor(text, used, 0);
        assert_eq!(
            mask_cause(&masked, key, 0, ok),
            Some(MaskCause::OtherKey { used })
        );
        assert_eq!(rotation_of([2, 3, 4, 1], [1, 2, 3, 4]), Some(1));
        assert_eq!(rotation_of([1, 2, 3, 5], [1, 2, 3, 4]), None);
    }

    #[test]
    fn latin1_and_utf8() {
        assert_eq!(
            as_latin1(b"23.5 \xb0C M\xfcnchen").as_deref(),
            Some("23.5 °C München")
        );
        assert_eq!(as_latin1(b"price \x80 5").as_deref(), Some("price € 5"));
        assert_eq!(
            as_latin1("23.5 °C".as_bytes()),
            None,
            "valid UTF-8 is not Latin-1"
        );
        assert_eq!(as_latin1(b"caf\xe2\x82"), None, "a cut UTF-8 sequence");
        assert_eq!(as_latin1(b"plain"), None);
    }

    #[test]
    fn concatenated_json() {
        assert_eq!(json_concatenated(r#"{"a":1}{"b":2}"#), Some(vec![7]));
        assert_eq!(
            json_concatenated("{\"a\":1}\n {\"b\":2} [3]"),
            Some(vec![9, 17])
        );
        assert_eq!(json_concatenated(r#"{"a":1}"#), None);
        assert_eq!(json_concatenated(r#"{"a":1}x"#), None);
        assert_eq!(trailing_nuls(b"{}\0\0\0"), 3);
    }

    #[test]
    fn accept_mistakes() {
        use crate::note::Code;
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let cause = |got: &str| accept_cause(key, got).map(|c| c.0);
        assert_eq!(
            cause("b37a4f2cc0624f1690f64606cf385945b2bec4ea"),
            Some(Code::HintAcceptHex)
        );
        assert_eq!(
            cause("s3pPLMBiTxaQ9kYGzzhZRbK+xOo"),
            Some(Code::HintAcceptHex)
        );
        use base64::Engine;
        use sha1::{Digest, Sha1};
        let b =
            |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha1::digest(s.as_bytes()));
        assert_eq!(
            cause(&b(&format!("{key}258eafa5-e914-47da-95ca-c5ab0dc85b11"))),
            Some(Code::HintAcceptWrongGuid)
        );
        assert_eq!(cause(&b(key)), Some(Code::HintAcceptWrongGuid));
        assert_eq!(
            cause(&b(
                "dGhlIHNhbXBsZSBub25jZQ258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
            )),
            Some(Code::HintAcceptAlteredKey)
        );
        assert_eq!(
            cause("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            None,
            "the right accept is no mistake"
        );
        assert_eq!(cause("AAAA"), None);
    }
}
