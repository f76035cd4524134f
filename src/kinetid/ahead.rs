//! A Kinetid message decoded before the annotator reaches it.
//!
//! `replay` reads a capture file on a second thread (`capture::pcap::ReadAhead`),
//! which is idle most of the time, while decoding a report's JSON is the
//! largest part of the annotating thread's work. A chunk of the capture
//! that is exactly one whole, unfragmented, uncompressed text frame can be
//! unmasked and decoded where it is read: [`Decoded`] depends on nothing
//! but the text and its direction.
//!
//! The annotator stays the judge of what a message is. It cuts frames,
//! checks them and gathers fragments as ever, and when it comes to decode
//! a text it takes this reading only if the text and the direction are
//! byte for byte the ones decoded here ([`Ahead::claim`]); otherwise it
//! decodes the text itself. So the output cannot change, whatever the
//! reading thread guessed (a frame split over two chunks, a text that
//! completes an earlier message's JSON, a connection whose annotator has
//! decided it is not Kinetid: each is simply not claimed).
//!
//! Memory allocated on one thread is best freed there (glibc's arenas
//! take a lock, and the other core's cache lines move back): what is not
//! claimed, and the claimed message once shown, go back to the reading
//! thread with the batch they came in.

use super::{decode, Decoded, MAX_MESSAGE};
use crate::wire::frame::{parse_header, Direction, HeaderParse, OpCode};
use crate::wire::mask::apply_mask;

/// Texts shorter than this (an ack, a welcome) are left to the annotator:
/// they cost less to decode than to hand over between threads, and the
/// reading thread is the busier one once it reads reports.
pub const SHORT: usize = 64;

/// One text frame's payload, unmasked, and its Kinetid reading.
#[derive(Debug)]
pub struct Ahead {
    dir: Direction,
    text: Box<[u8]>,
    decoded: Decoded,
    claimed: bool,
    /// Where the claimed message is (an address, compared, never read).
    claimed_at: Option<usize>,
}

impl Ahead {
    /// The reading of `bytes` sent in direction `dir`, when they are one
    /// whole final text frame with no reserved bit set whose payload is
    /// UTF-8 that starts as a JSON object; `None` for anything else.
    pub fn of_frame(dir: Direction, bytes: &[u8]) -> Option<Box<Ahead>> {
        let HeaderParse::Header(h) = parse_header(bytes) else {
            return None;
        };
        let whole = u64::try_from(bytes.len() - h.header_len).ok() == Some(h.payload_len);
        if !h.fin || h.rsv1 || h.rsv2 || h.rsv3 || h.opcode != OpCode::Text || !whole {
            return None;
        }
        let payload = &bytes[h.header_len..];
        if payload.len() < SHORT || payload.len() > MAX_MESSAGE {
            return None;
        }
        let mut text: Box<[u8]> = payload.into();
        if let Some(k) = h.mask {
            apply_mask(&mut text, k.0);
        }
        let s = std::str::from_utf8(&text).ok()?;
        if !s.trim_start().starts_with('{') {
            return None;
        }
        let decoded = decode(s, dir);
        Some(Box::new(Ahead {
            dir,
            text,
            decoded,
            claimed: false,
            claimed_at: None,
        }))
    }

    /// The reading, if `text` sent in `dir` is the text it was made of
    /// (taken: a second claim gets `None`).
    pub fn claim(&mut self, text: &str, dir: Direction) -> Option<Decoded> {
        if self.claimed || self.dir != dir || *self.text != *text.as_bytes() {
            return None;
        }
        // The text stays: it is freed with the rest on the reading thread.
        self.claimed = true;
        self.claimed_at = self.decoded.msg.as_deref().map(address);
        Some(std::mem::replace(
            &mut self.decoded,
            Decoded {
                msg: None,
                notes: Vec::new(),
                incomplete_json: false,
            },
        ))
    }

    /// Is `m` the message this reading gave (so made on the reading
    /// thread, and best freed there)?
    pub fn gave(&self, m: &super::Message) -> bool {
        self.claimed_at == Some(address(m))
    }

    /// Ask for the reading's memory to be brought to this core (it was
    /// written on the other one): the summary and the message are read
    /// once it is claimed.
    pub fn prefetch(&self) {
        prefetch(self.text.as_ptr(), self.text.len().min(256));
        if let Some(m) = &self.decoded.msg {
            prefetch(
                std::ptr::from_ref(&**m).cast(),
                std::mem::size_of::<super::Message>().min(128),
            );
            prefetch(m.summary.as_ptr(), m.summary.len().min(256));
        }
    }
}

fn address(m: &super::Message) -> usize {
    std::ptr::from_ref(m) as usize
}

/// Ask for the cache lines of the `len` bytes at `p` to be brought to this
/// core (written on the other one, they would miss the cache when read).
pub(crate) fn prefetch(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..len).step_by(64) {
        // SAFETY: a prefetch is a hint: it reads nothing the program sees
        // and cannot fault, whatever the address; this one is in bounds.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.add(at).cast())
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (p, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &[u8], mask: Option<[u8; 4]>, b0: u8) -> Vec<u8> {
        let mut f = vec![b0];
        let m = if mask.is_some() { 0x80 } else { 0 };
        if text.len() < 126 {
            f.push(m | text.len() as u8);
        } else {
            f.push(m | 126);
            f.extend_from_slice(&(text.len() as u16).to_be_bytes());
        }
        let mut p = text.to_vec();
        if let Some(k) = mask {
            f.extend_from_slice(&k);
            apply_mask(&mut p, k);
        }
        f.extend_from_slice(&p);
        f
    }

    const REPORT: &str = r#"{"t":"report","id":7,"dev":"KN-A4CF12F0E1B2","ts":1700000040,"seq":3,"on":true,"power_w":12.5,"energy_wh":100.25}"#;

    #[test]
    fn a_whole_text_frame_reads_as_the_annotator_would_read_it() {
        for mask in [None, Some([1, 2, 3, 4])] {
            for dir in [Direction::C2S, Direction::S2C] {
                let mut a = Ahead::of_frame(dir, &frame(REPORT.as_bytes(), mask, 0x81)).unwrap();
                let other = if dir == Direction::C2S {
                    Direction::S2C
                } else {
                    Direction::C2S
                };
                assert!(a.claim(REPORT, other).is_none(), "another direction");
                assert!(a.claim(&REPORT[1..], dir).is_none(), "another text");
                let d = a.claim(REPORT, dir).unwrap();
                assert_eq!(d, decode(REPORT, dir));
                assert!(a.gave(d.msg.as_deref().unwrap()));
                assert!(!a.gave(&decode(REPORT, dir).msg.unwrap()));
                assert!(a.claim(REPORT, dir).is_none(), "claimed once");
            }
        }
    }

    #[test]
    fn anything_but_one_whole_text_frame_is_left_to_the_annotator() {
        let t = REPORT.as_bytes();
        let whole = frame(t, Some([9, 8, 7, 6]), 0x81);
        // Cut short, with a byte more, not final, compressed, binary,
        // continuation, not JSON, not UTF-8, empty.
        assert!(Ahead::of_frame(Direction::C2S, &whole[..whole.len() - 1]).is_none());
        let mut longer = whole.clone();
        longer.push(0x81);
        assert!(Ahead::of_frame(Direction::C2S, &longer).is_none());
        for b0 in [0x01, 0xc1, 0xa1, 0x91, 0x82, 0x80] {
            assert!(Ahead::of_frame(Direction::C2S, &frame(t, None, b0)).is_none());
        }
        assert!(Ahead::of_frame(Direction::C2S, &frame(b"hello", None, 0x81)).is_none());
        let mut bad_utf8 = REPORT.as_bytes().to_vec();
        bad_utf8[30] = 0xff;
        assert!(Ahead::of_frame(Direction::C2S, &frame(&bad_utf8, None, 0x81)).is_none());
        let ack = br#"{"t":"ack","re":2}"#;
        assert!(
            Ahead::of_frame(Direction::S2C, &frame(ack, None, 0x81)).is_none(),
            "short"
        );
        assert!(Ahead::of_frame(Direction::C2S, &frame(b"", None, 0x81)).is_none());
        assert!(Ahead::of_frame(Direction::C2S, &[0x81]).is_none());
        // Bad JSON is still read: its notes are the decoder's own.
        let bad = &REPORT[..REPORT.len() - 1];
        let mut a = Ahead::of_frame(Direction::C2S, &frame(bad.as_bytes(), None, 0x81)).unwrap();
        assert_eq!(
            a.claim(bad, Direction::C2S),
            Some(decode(bad, Direction::C2S))
        );
    }
}
