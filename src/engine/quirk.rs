//! Firmware bugs the emulator commits on purpose, byte for byte as they look
//! on the wire, and the frame writer that applies them.

use crate::note::Code;
use crate::wire::frame::{encode_frame, EncodeOptions, LenEncoding, MaskKey, OpCode, Role};
use crate::wire::mask::apply_mask;

/// A firmware bug from the Kinetid protocol contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Quirk {
    /// Write 127 and then a 4-byte length instead of the 8-byte one.
    #[cfg_attr(feature = "cli", value(name = "len127-4byte"))]
    Len127FourByte,
    /// Non-minimal lengths: small payloads in the 16-bit form, up to 65535 in the 64-bit form.
    LenNonMinimal,
    /// Set MASK but use the all-zero key.
    ZeroMask,
    /// Use the same masking key on every frame.
    FixedMask,
    /// Send every frame unmasked.
    Unmasked,
    /// Mask data frames but not pings, pongs and closes.
    UnmaskedControl,
    /// Fragment with FIN set on every fragment and the opcode repeated.
    FinEveryFragment,
    /// Send a continuation frame after a final frame.
    ContAfterFin,
    /// Send a 130-byte ping after hello (control frames may carry 125).
    #[cfg_attr(feature = "cli", value(name = "control-over-125"))]
    ControlOver125,
    /// Send a ping split into two frames after hello.
    FragmentedControl,
    /// Drop TCP without a Close frame when stopping.
    DropWithoutClose,
    /// Never answer a ping.
    NoPong,
    /// Answer the server's Close with nothing (just drop TCP).
    SilentClose,
    /// Write 16-bit lengths little-endian.
    LengthLe,
    /// Mask each 50-byte write buffer from key byte 0 again.
    MaskRestart,
    /// Send text with its C string terminator (strlen + 1 bytes).
    StrlenPlusOne,
    /// Send text as ISO-8859-1, not UTF-8 (the firmware string has an umlaut).
    Latin1,
    /// Send two reports in one text message (each second report joins the one before).
    JsonConcat,
    /// Take any 101 as accepted, whatever its Sec-WebSocket-Accept,
    /// Upgrade, Connection and subprotocol say (no client-side checks).
    AcceptAnything,
    /// Answer every ping with an empty pong instead of echoing its payload.
    EmptyPong,
    /// Take the masking keys and the Sec-WebSocket-Key from a generator
    /// seeded the same on every connection (an unseeded PRNG: every boot
    /// sends the same sequence).
    SeededKeys,
    /// Reconnect at once after a drop or a close (no back-off).
    NoBackoff,
    /// Forget the reports not yet acknowledged when the link drops.
    ForgetUnacked,
    /// Throw away what came in the same read as the 101 head (the first
    /// frame is lost when it shares a TCP segment with the answer).
    #[cfg_attr(feature = "cli", value(name = "drop-after-101"))]
    DropAfter101,
    /// Take each fragment of a message as a message of its own (so a
    /// fragmented command, parsed piece by piece, is never obeyed).
    FragmentAsMessage,
    /// Read on past server frames that break RFC 6455 (masked, RSV bits,
    /// a reserved opcode, invalid UTF-8, a bad Close code) instead of
    /// failing the connection, and act on what they carry.
    LenientFrames,
}

/// The generator [`Quirk::SeededKeys`] restarts on every connection
/// (splitmix64 from a constant seed).
#[derive(Debug, Clone)]
pub struct SeededKeys(std::cell::Cell<u64>);

impl SeededKeys {
    /// The generator as a fresh boot has it.
    pub fn new() -> Self {
        SeededKeys(std::cell::Cell::new(0x4b4e_5744_7573_6b31))
    }

    /// The next 64 pseudo-random bits.
    pub fn next(&self) -> u64 {
        let s = self.0.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.0.set(s);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A Sec-WebSocket-Key from the generator (base64 of 16 bytes).
    pub fn handshake_key(&self) -> String {
        use base64::Engine;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next().to_be_bytes());
        b[8..].copy_from_slice(&self.next().to_be_bytes());
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}

impl Default for SeededKeys {
    fn default() -> Self {
        Self::new()
    }
}

/// A backend bug `listen --quirk` commits on purpose (for testing clients).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum ServerQuirk {
    /// Answer the upgrade with Sec-WebSocket-Accept in hex, not base64.
    BadAcceptHex,
}

impl ServerQuirk {
    /// The note code a client's annotator raises for this bug.
    pub fn note_code(self) -> Code {
        match self {
            ServerQuirk::BadAcceptHex => Code::HintAcceptHex,
        }
    }

    /// Commit the bug on a handshake response (the exact bytes to send).
    pub fn apply(self, response: &[u8]) -> Vec<u8> {
        use base64::Engine;
        let text = String::from_utf8_lossy(response);
        match self {
            ServerQuirk::BadAcceptHex => text
                .split_inclusive("\r\n")
                .map(|line| {
                    let Some(v) = line.strip_prefix("Sec-WebSocket-Accept: ") else {
                        return line.to_string();
                    };
                    match base64::engine::general_purpose::STANDARD.decode(v.trim_end()) {
                        Ok(d) => format!("Sec-WebSocket-Accept: {}\r\n", hex::encode(d)),
                        Err(_) => line.to_string(),
                    }
                })
                .collect::<String>()
                .into_bytes(),
        }
    }
}

/// The write buffer a `mask-restart` firmware masks from key byte 0.
pub const MASK_RESTART_EVERY: usize = 50;

impl Quirk {
    /// The note code the annotator raises for this bug (what a test looks for).
    pub fn note_code(self) -> Code {
        match self {
            Quirk::Len127FourByte => Code::HintLen1274byte,
            Quirk::LenNonMinimal => Code::LengthNonMinimal,
            Quirk::ZeroMask => Code::MaskKeyZero,
            Quirk::FixedMask => Code::MaskKeyRepeated,
            Quirk::Unmasked => Code::ClientFrameUnmasked,
            Quirk::UnmaskedControl => Code::HintUnmaskedControl,
            Quirk::FinEveryFragment => Code::HintFinEveryFragment,
            Quirk::ContAfterFin => Code::HintContAfterFin,
            Quirk::ControlOver125 => Code::ControlTooLong,
            Quirk::FragmentedControl => Code::ControlFragmented,
            Quirk::DropWithoutClose => Code::ClosedWithoutCloseFrame,
            Quirk::NoPong => Code::PingNotAnswered,
            Quirk::SilentClose => Code::CloseNotAnswered,
            Quirk::LengthLe => Code::HintLengthByteOrder,
            Quirk::MaskRestart => Code::HintMaskRestart,
            Quirk::StrlenPlusOne => Code::HintCString,
            Quirk::Latin1 => Code::HintLatin1,
            Quirk::JsonConcat => Code::HintJsonConcat,
            Quirk::AcceptAnything => Code::HintAcceptAlteredKey,
            Quirk::EmptyPong => Code::PongPayloadMismatch,
            Quirk::SeededKeys => Code::MaskKeysRepeatAcross,
            Quirk::NoBackoff => Code::ReconnectNoBackoff,
            Quirk::ForgetUnacked => Code::KinetidReportsForgotten,
            Quirk::DropAfter101 => Code::PingNotAnswered,
            Quirk::FragmentAsMessage => Code::KinetidNotJson,
            Quirk::LenientFrames => Code::ServerFrameMasked,
        }
    }

    /// Does the bug show in the device's bytes against a correct server?
    /// (Accepting a bad handshake shows only against a server that sends
    /// one: `certify` does.)
    pub fn shows_on_the_wire(self) -> bool {
        // Predictable keys show only from one connection to the next.
        // So do a missing back-off and forgotten reports.
        !matches!(
            self,
            Quirk::AcceptAnything
                | Quirk::SeededKeys
                | Quirk::NoBackoff
                | Quirk::ForgetUnacked
                | Quirk::DropAfter101
                | Quirk::FragmentAsMessage
                | Quirk::LenientFrames
        )
    }
}

/// Writes a client's frames, committing the chosen bugs.
#[derive(Debug, Clone)]
pub struct FrameWriter {
    quirks: Vec<Quirk>,
    frame_size: Option<usize>,
    fixed: MaskKey,
    seeded: SeededKeys,
}

impl FrameWriter {
    /// A writer for a client with these bugs and fragment size.
    pub fn new(quirks: &[Quirk], frame_size: Option<usize>) -> Self {
        let mut fixed = MaskKey::random();
        if fixed.0 == [0; 4] {
            fixed = MaskKey([0x4b, 0x4e, 0x31, 0x21]);
        }
        FrameWriter {
            quirks: quirks.to_vec(),
            frame_size,
            fixed,
            seeded: SeededKeys::new(),
        }
    }

    /// Does the writer commit this bug?
    pub fn has(&self, q: Quirk) -> bool {
        self.quirks.contains(&q)
    }

    fn mask_for(&self, opcode: OpCode) -> Option<MaskKey> {
        if self.has(Quirk::Unmasked) || (self.has(Quirk::UnmaskedControl) && opcode.is_control()) {
            None
        } else if self.has(Quirk::ZeroMask) {
            Some(MaskKey([0; 4]))
        } else if self.has(Quirk::FixedMask) {
            Some(self.fixed)
        } else if self.has(Quirk::SeededKeys) {
            Some(MaskKey((self.seeded.next() as u32).to_be_bytes()))
        } else {
            Some(MaskKey::random())
        }
    }

    /// Append one frame.
    pub fn frame(&self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8], fin: bool) {
        let mask = self.mask_for(opcode);
        let len = payload.len() as u64;
        if self.has(Quirk::Len127FourByte) && len >= 126 {
            out.push((fin as u8) << 7 | opcode.as_u8());
            out.push(if mask.is_some() { 0x80 } else { 0 } | 127);
            out.extend_from_slice(&(len as u32).to_be_bytes());
            let start = out.len();
            if let Some(k) = mask {
                out.extend_from_slice(&k.0);
                out.extend_from_slice(payload);
                apply_mask(&mut out[start + 4..], k.0);
            } else {
                out.extend_from_slice(payload);
            }
            return;
        }
        let len_encoding = if self.has(Quirk::LenNonMinimal) {
            Some(if len <= 125 {
                LenEncoding::Bits16
            } else {
                LenEncoding::Bits64
            })
        } else {
            None
        };
        let start = out.len();
        encode_frame(
            out,
            opcode,
            payload,
            EncodeOptions {
                fin,
                rsv: 0,
                mask,
                len_encoding,
            },
        );
        if self.has(Quirk::LengthLe) && out[start + 1] & 0x7f == 126 {
            // The 16-bit length written little-endian.
            out.swap(start + 2, start + 3);
        }
        if let (true, Some(k)) = (self.has(Quirk::MaskRestart), mask) {
            // Each write buffer masked from key byte 0.
            let body_at = out.len() - payload.len();
            let body = &mut out[body_at..];
            body.copy_from_slice(payload);
            for chunk in body.chunks_mut(MASK_RESTART_EVERY) {
                apply_mask(chunk, k.0);
            }
        }
    }

    /// The message bytes as the buggy firmware would send them (before any
    /// compression): Latin-1 text, a C string's NUL.
    pub fn as_sent(&self, opcode: OpCode, payload: &[u8]) -> Vec<u8> {
        let mut text = payload.to_vec();
        if opcode == OpCode::Text && self.has(Quirk::Latin1) {
            // Characters below 256 as one byte each: ISO-8859-1.
            text = String::from_utf8_lossy(&text)
                .chars()
                .map(|c| if (c as u32) < 256 { c as u8 } else { b'?' })
                .collect();
        }
        if opcode == OpCode::Text && self.has(Quirk::StrlenPlusOne) {
            text.push(0);
        }
        text
    }

    /// Append a data message, fragmented to the frame size (or wrongly, per the bugs).
    pub fn message(&self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        self.frames(out, opcode, &self.as_sent(opcode, payload));
    }

    /// Append a compressed message (permessage-deflate): `compressed` is
    /// what the deflater made of [`FrameWriter::as_sent`]; RSV1 marks the
    /// first frame (RFC 7692 6).
    pub fn compressed_message(&self, out: &mut Vec<u8>, opcode: OpCode, compressed: &[u8]) {
        let start = out.len();
        self.frames(out, opcode, compressed);
        out[start] |= 0x40;
    }

    /// Append payload bytes as a message's frames, fragmented to the frame
    /// size (or wrongly, per the bugs).
    fn frames(&self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        let buggy_frag = self.has(Quirk::FinEveryFragment) || self.has(Quirk::ContAfterFin);
        let size = self
            .frame_size
            .or(if buggy_frag { Some(64) } else { None })
            .unwrap_or(usize::MAX)
            .max(1);
        if payload.len() <= size {
            self.frame(out, opcode, payload, true);
            return;
        }
        let chunks: Vec<&[u8]> = payload.chunks(size).collect();
        let last = chunks.len() - 1;
        for (i, c) in chunks.iter().enumerate() {
            if self.has(Quirk::FinEveryFragment) {
                self.frame(out, opcode, c, true);
            } else if self.has(Quirk::ContAfterFin) {
                // The first fragment already says FIN: the rest are continuations of nothing.
                self.frame(
                    out,
                    if i == 0 { opcode } else { OpCode::Continuation },
                    c,
                    true,
                );
            } else {
                self.frame(
                    out,
                    if i == 0 { opcode } else { OpCode::Continuation },
                    c,
                    i == last,
                );
            }
        }
    }

    /// Append a control frame (ping, pong, close).
    pub fn control(&self, out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
        self.frame(out, opcode, payload, true);
    }

    /// Frames a buggy firmware sends right after hello, if any.
    pub fn after_hello(&self, out: &mut Vec<u8>) {
        if self.has(Quirk::ControlOver125) {
            self.frame(out, OpCode::Ping, &[b'k'; 130], true);
        }
        if self.has(Quirk::FragmentedControl) {
            self.frame(out, OpCode::Ping, b"kinetid-", false);
            self.frame(out, OpCode::Continuation, b"ping", true);
        }
    }
}

/// A correct client frame writer (no bugs).
pub fn correct_writer(frame_size: Option<usize>) -> FrameWriter {
    FrameWriter::new(&[], frame_size)
}

/// A role-correct frame for `role`, no bugs (server side).
pub fn server_frame(out: &mut Vec<u8>, opcode: OpCode, payload: &[u8]) {
    encode_frame(out, opcode, payload, EncodeOptions::for_role(Role::Server));
}
