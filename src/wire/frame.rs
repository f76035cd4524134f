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

/// A frame the decoder has cut out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Stream offset of the first header byte.
    pub offset: u64,
    /// The header.
    pub header: FrameHeader,
    /// The header bytes as received.
    pub head: Vec<u8>,
    /// The payload, unmasked. Empty when the payload was over the limit.
    pub payload: Vec<u8>,
    /// True when the payload was over the limit and skipped.
    pub skipped: bool,
}

/// What [`Decoder::next_frame`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A whole frame (or a header whose oversized payload will be skipped).
    Frame(RawFrame),
    /// Nothing complete yet: at least this many more bytes are needed.
    Need(u64),
    /// The stream cannot be framed any further (a 64-bit length with the top
    /// bit set leaves no way to find the next frame).
    Stuck,
}

/// An incremental frame decoder for one direction.
///
/// Feed it bytes in chunks of any size; take frames out. It holds at most one
/// header plus one payload of at most `max_payload` bytes; a larger declared
/// payload is skipped as it arrives, never allocated.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    start: usize,
    /// Where the buffered payload of the last skipped frame begins in `buf`.
    skip_from: usize,
    /// Hold a frame whose length cannot be used until this many bytes after
    /// its header are buffered (or the stream has ended), so what is decided
    /// about it does not depend on how the bytes were chunked.
    hold: Option<usize>,
    /// The stream has ended: nothing more will come.
    eof: bool,
    /// Stream offset of `buf[start]`.
    offset: u64,
    max_payload: u64,
    skip: u64,
    stuck: bool,
}

impl Decoder {
    /// A decoder with a per-frame payload limit.
    pub fn new(max_payload: u64) -> Decoder {
        Decoder {
            buf: Vec::new(),
            start: 0,
            skip_from: 0,
            hold: None,
            eof: false,
            offset: 0,
            max_payload,
            skip: 0,
            stuck: false,
        }
    }

    /// A fresh decoder with the same limit whose stream starts at `offset`
    /// (frames that follow an HTTP head).
    pub fn with_offset(like: &Decoder, offset: u64) -> Decoder {
        Decoder {
            offset,
            hold: like.hold,
            ..Decoder::new(like.max_payload)
        }
    }

    /// Stream offset of the next unconsumed byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes received but not yet part of a decoded frame.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..]
    }

    /// Payload bytes still to be skipped from an oversized frame.
    pub fn skipping(&self) -> u64 {
        self.skip
    }

    /// Bytes of memory the decoder's buffer holds (its capacity).
    pub fn held_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// Give memory back after a big frame: once the buffer holds far less
    /// than it has room for, move what is left into a small one. Without
    /// this a connection that once received 16 MiB keeps 16 MiB for life.
    pub fn shrink(&mut self) {
        const KEEP: usize = 64 * 1024;
        let live = self.buf.len() - self.start;
        if live == 0 {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.capacity() > KEEP && live < self.buf.capacity() / 4 {
            let mut small = Vec::with_capacity(live.max(4096));
            small.extend_from_slice(&self.buf[self.start..]);
            self.buf = small;
            self.start = 0;
        }
    }

    /// Hold frames whose length cannot be used until `window` bytes after
    /// their header have arrived (see [`Decoder::skipped_bytes`]).
    pub fn hold_unusable(&mut self, window: usize) {
        self.hold = Some(window);
    }

    /// The stream has ended: held frames are released with what arrived.
    pub fn set_eof(&mut self) {
        self.eof = true;
    }

    /// Has the stream ended?
    pub fn at_eof(&self) -> bool {
        self.eof
    }

    /// Right after [`Decoder::next_frame`] returned a skipped frame: the
    /// bytes of its payload that were already buffered.
    pub fn skipped_bytes(&self) -> &[u8] {
        &self.buf[self.skip_from.min(self.start)..self.start]
    }

    /// Right after a skipped frame: stop skipping and decode on from `k`
    /// bytes into its payload (where the real next frame starts).
    pub fn resync(&mut self, k: usize) {
        let avail = self.start - self.skip_from.min(self.start);
        let k = k.min(avail);
        self.offset -= (avail - k) as u64;
        self.start = self.skip_from + k;
        self.skip = 0;
    }

    /// Decode on after a length that could not be trusted (see
    /// [`Decoded::Stuck`]), once the caller knows where the next frame is.
    pub fn unstick(&mut self) {
        self.stuck = false;
    }

    /// Drop `n` pending bytes (decode on after them).
    pub fn discard(&mut self, n: usize) {
        let n = n.min(self.buf.len() - self.start);
        self.start += n;
        self.offset += n as u64;
    }

    /// True after [`Decoded::Stuck`].
    pub fn is_stuck(&self) -> bool {
        self.stuck
    }

    /// Take in more bytes.
    pub fn feed(&mut self, mut data: &[u8]) {
        if self.skip > 0 {
            let n = (self.skip.min(data.len() as u64)) as usize;
            self.skip -= n as u64;
            self.offset += n as u64;
            data = &data[n..];
        }
        if data.is_empty() {
            return;
        }
        if self.start > 0 && self.start >= self.buf.len() / 2 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(data);
    }

    /// Cut the next frame out of what has been fed.
    pub fn next_frame(&mut self) -> Decoded {
        if self.stuck {
            return Decoded::Stuck;
        }
        if self.skip > 0 {
            return Decoded::Need(self.skip);
        }
        let avail = &self.buf[self.start..];
        let h = match parse_header(avail) {
            HeaderParse::Need(n) => return Decoded::Need(n as u64),
            HeaderParse::Header(h) => h,
        };
        let after = (avail.len() - h.header_len) as u64;
        let unusable = h.payload_len >> 63 != 0 || h.payload_len > self.max_payload;
        if let (true, Some(w), false) = (unusable, self.hold, self.eof) {
            let want = (w as u64).min(h.payload_len);
            if after < want {
                return Decoded::Need(want - after);
            }
        }
        if h.payload_len >> 63 != 0 {
            self.stuck = true;
            let head = avail[..h.header_len].to_vec();
            let offset = self.offset;
            self.start += h.header_len;
            self.offset += h.header_len as u64;
            return Decoded::Frame(RawFrame {
                offset,
                header: h,
                head,
                payload: Vec::new(),
                skipped: true,
            });
        }
        if h.payload_len > self.max_payload {
            // Report now, skip the payload as it streams in.
            let head = avail[..h.header_len].to_vec();
            let offset = self.offset;
            let have = (avail.len() - h.header_len) as u64;
            let take = have.min(h.payload_len);
            self.skip_from = self.start + h.header_len;
            self.start += h.header_len + take as usize;
            self.offset += h.header_len as u64 + take;
            self.skip = h.payload_len - take;
            return Decoded::Frame(RawFrame {
                offset,
                header: h,
                head,
                payload: Vec::new(),
                skipped: true,
            });
        }
        let total = h.header_len + h.payload_len as usize;
        if avail.len() < total {
            return Decoded::Need((total - avail.len()) as u64);
        }
        let head = avail[..h.header_len].to_vec();
        let mut payload = avail[h.header_len..total].to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k.0);
        }
        let offset = self.offset;
        self.start += total;
        self.offset += total as u64;
        Decoded::Frame(RawFrame {
            offset,
            header: h,
            head,
            payload,
            skipped: false,
        })
    }
}

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
        assert_eq!(f.payload, b"Hello");
        assert!(f.header.fin);
        let f = &decode_all(
            &[
                0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
            ],
            1 << 20,
        )[0];
        assert_eq!(f.payload, b"Hello");
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
                    assert_eq!(f[0].payload, payload, "size {n}");
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
