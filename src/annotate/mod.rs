//! The connection annotator: the one core that `listen`, `emulate-device`
//! and `replay` all feed.
//!
//! It takes the bytes of one connection, direction by direction, in chunks of
//! any size, and produces [`Event`]s: the HTTP handshake with its checks,
//! every frame with its field map and notes, every reassembled message with
//! its Kinetid summary, and at the end what was left over. It does no I/O and
//! the events do not depend on how the bytes were chunked, so a recording
//! replays to exactly what was shown live.

pub mod across;
pub mod diagnose;
pub mod filter;
pub mod policy;

pub use event::*;
pub use hints::host_without_port;
pub use policy::close_code_for;

mod end;
mod event;
mod frames;
mod head;
mod hints;
mod judge;
mod message;
mod probe;

use hints::*;
use judge::*;
use message::*;

use crate::kinetid;
use crate::note::{Code, Note, Severity};
use crate::wire::frame::{
    self, CloseCode, Decoded, Decoder, Direction, FrameHeader, MaskKey, OpCode, Role,
};
use crate::wire::handshake::{self, ClientVerdict, HeadParse, HttpHead, RequestKind};
use crate::wire::mask::apply_mask;
use crate::wire::utf8::Utf8Stream;

/// Decide whether a stream starts with an HTTP head; `None` until sure.
fn detect_http(dir: Direction, b: &[u8]) -> Option<bool> {
    match dir {
        Direction::S2C => {
            let n = b.len().min(5);
            if b[..n] != b"HTTP/"[..n] {
                Some(false)
            } else if n == 5 {
                Some(true)
            } else {
                None
            }
        }
        Direction::C2S => {
            let m = b.iter().take_while(|c| c.is_ascii_uppercase()).count();
            if m == b.len() {
                // All upper-case letters so far (or nothing): wait, but not forever.
                (m > 16).then_some(false)
            } else {
                Some(m > 0 && b[m] == b' ')
            }
        }
    }
}

#[derive(Debug, PartialEq, Eq, Clone)]
enum Phase {
    Detect,
    Http,
    Frames,
    Raw(String),
    /// After bytes the capture missed: looking for the next frame header
    /// that fits (the bytes held are in `head_buf`, from `hunt_from`).
    Hunt,
}

#[derive(Debug)]
struct Fragment {
    opcode: OpCode,
    /// The first frame's masking key (a mask mistake is judged per frame).
    mask: Option<MaskKey>,
    /// RSV1 on the first frame with permessage-deflate in force.
    compressed: bool,
    offset: u64,
    payload: Vec<u8>,
    /// A message in one frame, uncompressed and kept: the frame's payload
    /// itself (then `payload` stays empty).
    whole: Option<crate::wire::frame::Payload>,
    len: u64,
    frames: u32,
    utf8: Option<Utf8Stream>,
    /// A text message in one frame: its UTF-8 is checked once, where its
    /// text is read (`finish_message`), not also on the way in.
    utf8_at_end: bool,
    notes: Vec<Note>,
}

#[derive(Debug)]
struct DirState {
    phase: Phase,
    head_buf: Vec<u8>,
    decoder: Decoder,
    frag: Option<Fragment>,
    last_key: Option<MaskKey>,
    last_data_final: bool,
    close_at: Option<u64>,
    /// This side's pings not answered yet, oldest first (at most
    /// [`PINGS_KEPT`]): offset, payload (at most 125 bytes) and time.
    pings_unanswered: Vec<OutPing>,
    /// The other side's frame count when the outstanding ping was sent.
    other_frames_at_ping: u64,
    /// `ping-not-answered` already raised for the outstanding run of pings.
    ping_warned: bool,
    pending_json: Option<String>,
    /// The next chunk's Kinetid reading, when it was read ahead
    /// ([`Annotator::offer`]).
    ahead: Option<Box<kinetid::ahead::Ahead>>,
    raw_bytes: u64,
    raw_offset: u64,
    raw_preview: Vec<u8>,
    frames: u64,
    masked_data_seen: bool,
    /// The frame the stream ended in was shown as a truncated frame event.
    truncated_shown: bool,
    /// The other side had already sent its Close when that ping was seen
    /// (a closing peer that lets the ping go is no firmware bug).
    ping_after_close: bool,
    /// This side broke a rule that lets its peer fail the connection (RFC
    /// 6455 7.1.7): the peer may then close without a Close or a pong.
    failed: bool,
    /// The last frame's payload (unmasked, when at most TORN_WINDOW bytes),
    /// its key and stream offset: where a
    /// torn frame is looked for when the next one is broken.
    last_payload: crate::wire::frame::Payload,
    last_payload_key: Option<MaskKey>,
    last_payload_at: u64,
    /// Looking for a torn frame behind a broken one.
    torn: Option<Box<TornProbe>>,
    /// permessage-deflate for what this side sends, when agreed.
    inflater: Option<crate::wire::deflate::Inflater>,
    /// Hunting: the stream offset of `head_buf[0]`, and the bytes given up
    /// so far because no frame header fitted.
    hunt_from: u64,
    hunt_skipped: u64,
    /// The text frame still arriving, checked as far as it came (see
    /// [`Annotator::partial_text_invalid`]).
    early: Option<EarlyUtf8>,
    /// An oversized frame whose length no cause explained yet: the first
    /// bytes of its skipped payload, looked at again as more arrive and
    /// when the stream ends (a length that holds an address is told by
    /// the real frames that follow it). Those bytes were skipped: decoding
    /// does not resume there (with `--resync` the cause is looked for at
    /// once, on the bytes that came with the header).
    probe: Option<Box<LengthProbe>>,
}

/// See [`DirState::torn`].
#[derive(Debug)]
struct TornProbe {
    /// The payload before the broken frame, as on the wire, and its offset.
    prev: Vec<u8>,
    prev_at: u64,
    /// The bytes from the broken frame on, at most TORN_AFTER.
    bytes: Vec<u8>,
}

/// See [`DirState::probe`].
#[derive(Debug)]
struct LengthProbe {
    header: FrameHeader,
    head: Vec<u8>,
    /// Stream offset of the payload's first byte.
    payload_at: u64,
    /// The payload's first bytes, up to `target`.
    bytes: Vec<u8>,
    /// Bytes looked at: [`DIAG_WINDOW`], or the whole payload when shorter.
    target: usize,
}

/// A ping waiting for its pong.
#[derive(Debug, Clone)]
struct OutPing {
    offset: u64,
    payload: Vec<u8>,
    time: Option<f64>,
}

/// Unanswered pings remembered per side (the oldest and the newest are
/// what the rules need; between them a pong may answer any).
const PINGS_KEPT: usize = 16;

/// Seconds a pong may take before it is named late, and before a ping
/// with no pong is named unanswered while the connection runs.
const PONG_LATE_S: f64 = 5.0;

/// How far the text frame still arriving has been checked for UTF-8.
#[derive(Debug)]
struct EarlyUtf8 {
    /// Stream offset of the frame's first header byte.
    at: u64,
    /// Payload bytes checked.
    done: u64,
    utf8: Utf8Stream,
    bad: bool,
}

impl DirState {
    fn new(cfg: &Config) -> Self {
        DirState {
            phase: match cfg.handshake {
                HandshakeMode::Expect => Phase::Http,
                HandshakeMode::None => Phase::Frames,
                HandshakeMode::Detect => Phase::Detect,
            },
            head_buf: Vec::new(),
            decoder: new_decoder(cfg),
            frag: None,
            last_key: None,
            last_data_final: true,
            close_at: None,
            pings_unanswered: Vec::new(),
            other_frames_at_ping: 0,
            ping_warned: false,
            pending_json: None,
            ahead: None,
            raw_bytes: 0,
            raw_offset: 0,
            raw_preview: Vec::new(),
            frames: 0,
            masked_data_seen: false,
            truncated_shown: false,
            ping_after_close: false,
            failed: false,
            last_payload: Default::default(),
            last_payload_key: None,
            last_payload_at: 0,
            torn: None,
            inflater: None,
            hunt_from: 0,
            hunt_skipped: 0,
            early: None,
            probe: None,
        }
    }

    fn take_raw(&mut self, offset: u64, data: &[u8]) {
        if self.raw_bytes == 0 {
            self.raw_offset = offset;
        }
        self.raw_bytes += data.len() as u64;
        let room = 32usize.saturating_sub(self.raw_preview.len());
        self.raw_preview
            .extend_from_slice(&data[..room.min(data.len())]);
    }
}

/// Annotates one connection.
#[derive(Debug)]
pub struct Annotator {
    conn: u64,
    cfg: Config,
    c2s: DirState,
    s2c: DirState,
    key: Option<String>,
    protocols: Vec<String>,
    /// Some(false) after a plain HTTP request: its response is not a handshake.
    upgrade_asked: Option<bool>,
    /// The port the device connected to, when known.
    server_port: Option<u16>,
    /// The Kinetid conversation over time.
    track: kinetid::track::Tracker,
    /// Extensions the request offered.
    offered_ext: Vec<String>,
    /// permessage-deflate in force (from the response).
    deflate: Option<crate::wire::deflate::Agreed>,
    finished: bool,
    /// The time of the bytes being fed (what frame rules about time use).
    now: Option<f64>,
    /// With `kinetid_auto`: is this connection Kinetid traffic (`None`:
    /// not decided yet)?
    kin: Option<bool>,
    /// The server answered 101 with a head the client must refuse (RFC
    /// 6455 4.1: a wrong accept, a subprotocol or extension not offered):
    /// `Some(false)` until a device frame shows the device went on anyway.
    bad_answer: Option<bool>,
}

impl Annotator {
    /// An annotator for connection `conn`.
    pub fn new(conn: u64, cfg: Config) -> Annotator {
        Annotator {
            conn,
            cfg,
            c2s: DirState::new(&cfg),
            s2c: DirState::new(&cfg),
            key: None,
            protocols: Vec::new(),
            upgrade_asked: None,
            server_port: None,
            track: kinetid::track::Tracker::default(),
            offered_ext: Vec::new(),
            deflate: None,
            finished: false,
            now: None,
            kin: None,
            bad_answer: None,
        }
    }

    /// The connection id.
    pub fn conn(&self) -> u64 {
        self.conn
    }

    /// Has a Close frame been seen in this direction?
    pub fn close_seen(&self, dir: Direction) -> bool {
        self.state(dir).close_at.is_some()
    }

    /// Bytes of memory this connection's buffers hold (decoders, HTTP heads,
    /// messages being reassembled): what a global memory budget counts.
    pub fn held_bytes(&self) -> usize {
        [&self.c2s, &self.s2c]
            .iter()
            .map(|st| {
                st.decoder.held_bytes()
                    + st.head_buf.capacity()
                    + st.frag.as_ref().map_or(0, |f| f.payload.capacity())
            })
            .sum()
    }

    /// Is a frame in direction `dir` started but not finished (header or
    /// payload bytes still to come)?
    pub fn mid_frame(&self, dir: Direction) -> bool {
        let st = self.state(dir);
        st.phase == Phase::Frames && (!st.decoder.pending().is_empty() || st.decoder.skipping() > 0)
    }

    /// Fail fast (RFC 6455 8.1): is the text frame still arriving in `dir`
    /// already not UTF-8? A session fails the connection on the first
    /// invalid byte instead of waiting for a frame that may never end.
    /// Nothing is shown for it here: the frame is judged, with its note,
    /// when it is complete, as before. Each payload byte is checked once,
    /// however the frame arrives.
    pub fn partial_text_invalid(&mut self, dir: Direction) -> bool {
        let st = match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        };
        if st.phase != Phase::Frames || st.decoder.skipping() > 0 {
            return false;
        }
        let at = st.decoder.offset();
        let pending = st.decoder.pending();
        let frame::HeaderParse::Header(h) = frame::parse_header(pending) else {
            return false;
        };
        if h.rsv1 || h.rsv2 || h.rsv3 {
            return false;
        }
        if st.early.as_ref().is_none_or(|e| e.at != at) {
            let utf8 = match (h.opcode, st.frag.as_ref()) {
                (OpCode::Text, None) => Utf8Stream::new(),
                (OpCode::Continuation, Some(f)) => match &f.utf8 {
                    Some(u) => u.clone(),
                    None => return false,
                },
                _ => return false,
            };
            st.early = Some(EarlyUtf8 {
                at,
                done: 0,
                utf8,
                bad: false,
            });
        }
        let Some(e) = st.early.as_mut() else {
            return false;
        };
        let have = (pending.len() - h.header_len) as u64;
        let upto = have.min(h.payload_len);
        if !e.bad && upto > e.done {
            let from = h.header_len + e.done as usize;
            let mut chunk = pending[from..h.header_len + upto as usize].to_vec();
            if let Some(k) = h.mask {
                crate::wire::mask::apply_mask_offset(&mut chunk, k.0, (e.done % 4) as usize);
            }
            e.bad = e.utf8.push(&chunk).is_err();
            e.done = upto;
        }
        e.bad
    }

    /// Payload bytes the decoder for `dir` is still skipping.
    pub fn skipping(&self, dir: Direction) -> u64 {
        self.state(dir).decoder.skipping()
    }

    fn state(&self, dir: Direction) -> &DirState {
        match dir {
            Direction::C2S => &self.c2s,
            Direction::S2C => &self.s2c,
        }
    }

    /// An Open event (for live connections and recordings).
    /// The port the device connected to, when the driver knows it (a
    /// listener's own port, a capture's server side): a `Host` without a
    /// port on a port other than 80 or 443 is then named.
    pub fn set_server_port(&mut self, port: u16) {
        self.server_port = Some(port);
    }

    pub fn open(&self, peer: &str, time: Option<f64>, out: &mut Vec<Event>) {
        out.push(Event::at(
            self.conn,
            Direction::C2S,
            0,
            time,
            EventKind::Open {
                peer: peer.to_string(),
            },
        ));
    }

    /// A listener note about this connection, placed at the current end of
    /// the `dir` stream.
    pub fn notice(&self, dir: Direction, note: Note, time: Option<f64>, out: &mut Vec<Event>) {
        let st = self.state(dir);
        let offset = st.decoder.offset() + st.decoder.pending().len() as u64;
        out.push(Event::at(
            self.conn,
            dir,
            offset,
            time,
            EventKind::Notice { note },
        ));
    }

    /// The Kinetid reading of the bytes fed next in `dir`, made before
    /// they came (see [`kinetid::ahead`]): used only if a message's text
    /// is the text it was made of. Take it back with
    /// [`Annotator::unclaimed`].
    pub fn offer(&mut self, dir: Direction, a: Box<kinetid::ahead::Ahead>) {
        self.state_mut(dir).ahead = Some(a);
    }

    /// What [`Annotator::offer`] was given, once the bytes were fed
    /// (its reading taken out if a message used it).
    pub fn unclaimed(&mut self, dir: Direction) -> Option<Box<kinetid::ahead::Ahead>> {
        self.state_mut(dir).ahead.take()
    }

    /// Feed bytes seen in direction `dir`.
    pub fn feed(
        &mut self,
        dir: Direction,
        mut data: &[u8],
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        self.now = time;
        loop {
            if data.is_empty() {
                return;
            }
            let st = self.state_mut(dir);
            match st.phase.clone() {
                Phase::Detect => {
                    st.head_buf.extend_from_slice(data);
                    let Some(http) = detect_http(dir, &st.head_buf) else {
                        return;
                    };
                    st.phase = if http { Phase::Http } else { Phase::Frames };
                    let buf = std::mem::take(&mut st.head_buf);
                    return self.feed(dir, &buf, time, out);
                }
                Phase::Raw(_) => {
                    let off = st.decoder.offset() + st.head_buf.len() as u64 + st.raw_bytes;
                    st.take_raw(off, data);
                    return;
                }
                Phase::Http => match self.feed_head(dir, data, out) {
                    Some(used) => data = &data[used..],
                    None => return,
                },
                Phase::Hunt => return self.feed_hunt(dir, data, time, out),
                Phase::Frames => return self.feed_frames(dir, data, time, out),
            }
        }
    }

    /// An event of this connection at the time of the bytes being fed.
    fn event(&self, dir: Direction, offset: u64, kind: EventKind) -> Event {
        Event::at(self.conn, dir, offset, self.now, kind)
    }

    /// The bytes of an HTTP head, gathered until it is whole: how many of
    /// `data` it took once it is (frames follow), `None` while it is not.
    fn feed_head(&mut self, dir: Direction, data: &[u8], out: &mut Vec<Event>) -> Option<usize> {
        let cfg = self.cfg;
        let st = self.state_mut(dir);
        let before = st.head_buf.len();
        st.head_buf.extend_from_slice(data);
        match handshake::parse_head(&st.head_buf, cfg.limits) {
            HeadParse::Partial => None,
            HeadParse::Invalid(e) => {
                let all = std::mem::take(&mut st.head_buf);
                st.phase = Phase::Raw("after a malformed HTTP head".into());
                st.take_raw(0, &all);
                out.push(self.event(dir, e.offset, EventKind::HeadError(e)));
                None
            }
            HeadParse::Complete(head) => {
                let used = head.len - before;
                // Given back, not kept for the connection's life.
                st.head_buf = Vec::new();
                // Frames start right after the head.
                st.decoder = new_decoder(&cfg);
                skip_offset(&mut st.decoder, head.len as u64);
                match dir {
                    Direction::C2S => self.on_request(head, out),
                    Direction::S2C => self.on_response(head, out),
                }
                Some(used)
            }
        }
    }

    /// After a gap: bytes skipped until one starts a frame header that fits.
    fn feed_hunt(&mut self, dir: Direction, data: &[u8], time: Option<f64>, out: &mut Vec<Event>) {
        let cfg = self.cfg;
        let deflate = self.deflate.is_some();
        let st = self.state_mut(dir);
        st.head_buf.extend_from_slice(data);
        match frame::find_header(&st.head_buf, dir.sender(), cfg.max_frame, deflate) {
            Ok(p) => {
                let at = st.hunt_from + p as u64;
                let skipped = st.hunt_skipped + p as u64;
                let rest = st.head_buf.split_off(p);
                st.head_buf = Vec::new();
                st.hunt_skipped = 0;
                st.decoder = new_decoder(&cfg);
                skip_offset(&mut st.decoder, at);
                st.phase = Phase::Frames;
                if skipped > 0 {
                    out.push(self.event(
                            dir,
                            at,
                            EventKind::Notice {
                                note: Note::info(
                                    Code::CaptureGap,
                                    "capture",
                                    format!("{skipped} bytes after the gap skipped: decoding resumes at byte {at}, the first frame header that fits"),
                                ),
                            },
                        ));
                }
                self.feed(dir, &rest, time, out);
            }
            Err(keep_from) => {
                // Bytes before `keep_from` start no header; a
                // stretch with none at all is bounded.
                let drop = keep_from.max(st.head_buf.len().saturating_sub(HUNT_WINDOW));
                st.head_buf.drain(..drop);
                st.hunt_from += drop as u64;
                st.hunt_skipped += drop as u64;
            }
        }
    }

    /// Frames: the decoder takes the bytes, the probes keep what they need.
    fn feed_frames(
        &mut self,
        dir: Direction,
        data: &[u8],
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        let st = self.state_mut(dir);
        let probed = match st.probe.as_mut() {
            Some(p) if st.decoder.skipping() > 0 => {
                let n = (st.decoder.skipping().min(data.len() as u64) as usize)
                    .min(p.target.saturating_sub(p.bytes.len()));
                p.bytes.extend_from_slice(&data[..n]);
                n > 0 && p.bytes.len() >= p.target
            }
            _ => false,
        };
        let torn_full = match st.torn.as_mut() {
            Some(t) => {
                let n = data.len().min(TORN_AFTER.saturating_sub(t.bytes.len()));
                t.bytes.extend_from_slice(&data[..n]);
                t.bytes.len() >= TORN_AFTER
            }
            None => false,
        };
        st.decoder.feed(data);
        if probed {
            self.probe_length(dir, false, time, out);
        }
        if torn_full {
            self.settle_torn(dir, false, time, out);
        }
        self.drain_frames(dir, time, out);
        self.state_mut(dir).decoder.shrink();
    }

    fn state_mut(&mut self, dir: Direction) -> &mut DirState {
        match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        }
    }
}

/// The longest payload kept to find a torn frame in (a device's messages
/// are far smaller; the frames of bulk transfers are not looked into).
const TORN_WINDOW: usize = 4096;

/// Bytes after a broken frame's start that a torn-frame probe looks at.
const TORN_AFTER: usize = 8192;

/// Bytes after a frame header looked at to explain a length that does not
/// fit (with `resync`, such a frame is held until they have arrived).
const DIAG_WINDOW: usize = 4096;

fn new_decoder(cfg: &Config) -> Decoder {
    let mut d = Decoder::new(cfg.max_frame);
    if cfg.resync {
        d.hold_unusable(DIAG_WINDOW);
    }
    d
}

/// Bytes held while hunting for a frame header after a gap, at most: beyond
/// them, the oldest are given up (a header is at most 14 bytes; the rest
/// lets the header after it be checked too).
const HUNT_WINDOW: usize = 64 * 1024;

/// Move a fresh decoder's offset forward (frames start after the HTTP head).
fn skip_offset(d: &mut Decoder, n: u64) {
    *d = Decoder::with_offset(d, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::frame::{encode_frame, EncodeOptions};

    fn frame(op: OpCode, payload: &[u8], role: Role) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, op, payload, EncodeOptions::for_role(role));
        v
    }

    fn ping_notes(script: &[(Direction, OpCode)]) -> usize {
        let mut a = Annotator::new(
            1,
            Config {
                handshake: HandshakeMode::None,
                ..Config::default()
            },
        );
        let mut ev = Vec::new();
        for (dir, op) in script {
            let role = dir.sender();
            a.feed(*dir, &frame(*op, b"p", role), None, &mut ev);
        }
        ev.iter()
            .flat_map(|e| e.notes())
            .filter(|n| n.code == Code::PingNotAnswered)
            .count()
    }

    /// The UTF-8 notes (frame and message) of `text` sent as frames of
    /// the sizes in `split` (one frame when empty).
    fn utf8_notes(text: &[u8], split: &[usize]) -> Vec<(bool, String)> {
        let mut a = Annotator::new(
            1,
            Config {
                handshake: HandshakeMode::None,
                ..Config::default()
            },
        );
        let mut wire = Vec::new();
        let mut at = 0usize;
        for (i, n) in split.iter().chain([&usize::MAX]).enumerate() {
            let end = at.saturating_add(*n).min(text.len());
            let last = end == text.len();
            let op = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            let o = EncodeOptions {
                fin: last,
                ..EncodeOptions::for_role(Role::Client)
            };
            encode_frame(&mut wire, op, &text[at..end], o);
            at = end;
            if last {
                break;
            }
        }
        let mut ev = Vec::new();
        a.feed(Direction::C2S, &wire, None, &mut ev);
        ev.iter()
            .flat_map(|e| {
                let frame = matches!(e.kind, EventKind::Frame(_));
                e.notes().iter().map(move |n| (frame, n.clone()))
            })
            .filter(|(_, n)| n.code == Code::TextInvalidUtf8)
            .map(|(frame, n)| (frame, n.message))
            .collect()
    }

    #[test]
    fn a_one_frame_text_is_checked_as_a_fragmented_one_is() {
        // A message in one frame is checked once, when it is read; in
        // several, as it streams in. Both say the same, on the frame where
        // the bad byte is and on the message.
        let texts: [&[u8]; 6] = [
            b"plain",
            b"ab\xc3",
            b"ab\xc3\xa9cd",
            b"ab\xffcd",
            b"\xe2\x82",
            "Gr\u{fc}\u{df}e".as_bytes(),
        ];
        for t in texts {
            let whole = utf8_notes(t, &[]);
            let want_bad = std::str::from_utf8(t).is_err();
            assert_eq!(whole.len(), if want_bad { 2 } else { 0 }, "{t:?}");
            if let Some((_, m)) = whole.first() {
                let at = std::str::from_utf8(t).unwrap_err().valid_up_to();
                assert!(m.ends_with(&format!("message byte {at}")), "{m}");
            }
            // The same text in two frames: the same message text, once on
            // the message and once on the frame it was found in.
            for cut in 1..t.len() {
                let split = utf8_notes(t, &[cut]);
                let msgs: Vec<_> = split.iter().filter(|(f, _)| !f).collect();
                let frames: Vec<_> = split.iter().filter(|(f, _)| *f).collect();
                assert_eq!(msgs.len(), whole.len() / 2, "{t:?} cut at {cut}");
                assert_eq!(frames.len(), whole.len() / 2, "{t:?} cut at {cut}");
                if let (Some((_, a)), Some((_, b))) = (whole.first(), msgs.first()) {
                    assert_eq!(a, b, "{t:?} cut at {cut}");
                }
            }
        }
    }

    #[test]
    fn a_pipelined_ping_burst_answered_once_is_legal() {
        use Direction::*;
        // Five pings in a row, one pong for the latest (RFC 6455 5.5.3).
        let mut s = vec![(S2C, OpCode::Ping); 5];
        s.push((C2S, OpCode::Pong));
        assert_eq!(ping_notes(&s), 0);
    }

    #[test]
    fn a_peer_that_talks_but_never_pongs_is_named_once() {
        use Direction::*;
        let mut s = Vec::new();
        for _ in 0..4 {
            s.push((S2C, OpCode::Ping));
            s.push((C2S, OpCode::Text));
        }
        // Named once while the connection runs, not on every ping.
        assert_eq!(ping_notes(&s), 1);
    }
}
