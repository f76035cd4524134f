//! The incremental frame decoder of one direction.

use super::*;

/// A payload as the decoder cut it: shared, so a frame and the message it
/// makes up hold one copy (a message of one frame, nearly all of them).
pub type Payload = std::sync::Arc<[u8]>;

/// A frame the decoder has cut out of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFrame {
    /// Stream offset of the first header byte.
    pub offset: u64,
    /// The header.
    pub header: FrameHeader,
    /// The header bytes as received.
    pub head: HeadBytes,
    /// The payload, unmasked. Empty when the payload was over the limit.
    pub payload: Payload,
    /// True when the payload was over the limit and skipped.
    pub skipped: bool,
}

/// A frame header's bytes as received, held in place (a header is at most
/// 14 bytes: 2, an extended length of 2 or 8, a masking key of 4).
#[derive(Clone, Copy, PartialEq, Eq, Default)]
pub struct HeadBytes {
    len: u8,
    b: [u8; 14],
}

impl HeadBytes {
    /// The first 14 bytes of `s` at most (all of a frame header).
    pub fn new(s: &[u8]) -> HeadBytes {
        let n = s.len().min(14);
        let mut b = [0u8; 14];
        b[..n].copy_from_slice(&s[..n]);
        HeadBytes { len: n as u8, b }
    }
}

impl std::ops::Deref for HeadBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.b[..usize::from(self.len)]
    }
}

impl AsRef<[u8]> for HeadBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for HeadBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&**self, f)
    }
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
            let head = HeadBytes::new(&avail[..h.header_len]);
            let offset = self.offset;
            self.start += h.header_len;
            self.offset += h.header_len as u64;
            return Decoded::Frame(RawFrame {
                offset,
                header: h,
                head,
                payload: Payload::default(),
                skipped: true,
            });
        }
        if h.payload_len > self.max_payload {
            // Report now, skip the payload as it streams in.
            let head = HeadBytes::new(&avail[..h.header_len]);
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
                payload: Payload::default(),
                skipped: true,
            });
        }
        let total = h.header_len + h.payload_len as usize;
        if avail.len() < total {
            return Decoded::Need((total - avail.len()) as u64);
        }
        let head = HeadBytes::new(&avail[..h.header_len]);
        let mut payload = Payload::from(&avail[h.header_len..total]);
        // Unmasked in place: a payload just made has no other owner.
        if let (Some(k), Some(p)) = (h.mask, Payload::get_mut(&mut payload)) {
            apply_mask(p, k.0);
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
