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

pub use policy::close_code_for;

use crate::kinetid;
use crate::note::{Code, Note, Severity};
use crate::wire::frame::{
    self, CloseCode, Decoded, Decoder, Direction, Field, FrameHeader, MaskKey, OpCode, Role,
};
use crate::wire::handshake::{
    self, ClientVerdict, HeadError, HeadParse, HttpHead, Limits, RequestKind, ServerVerdict,
};
use crate::wire::mask::apply_mask;
use crate::wire::utf8::Utf8Stream;

/// Annotator settings.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Largest frame payload that is stored; larger ones are skipped.
    pub max_frame: u64,
    /// Largest reassembled message.
    pub max_message: u64,
    /// HTTP head limits.
    pub limits: Limits,
    /// Decode text messages as Kinetid messages.
    pub kinetid: bool,
    /// With `kinetid`: decide per connection whether it is Kinetid
    /// traffic (`kinetid.v1` offered, or the first data message is a
    /// Kinetid message) and show other traffic as plain WebSocket, with an
    /// info note saying why. False: every text message is judged as
    /// Kinetid (`listen` plays the Kinetid backend, `--kinetid` forces it).
    pub kinetid_auto: bool,
    /// Does the stream start with the HTTP handshake?
    pub handshake: HandshakeMode,
    /// After a length that does not fit, decode on from the next plausible
    /// frame header instead of skipping (or giving up).
    pub resync: bool,
    /// What a listener answers to a permessage-deflate offer (`None`: it
    /// declines); what is in force is read from the actual response.
    pub deflate: Option<crate::wire::deflate::ServerPolicy>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_frame: 16 << 20,
            max_message: 16 << 20,
            limits: Limits::default(),
            kinetid: true,
            kinetid_auto: false,
            handshake: HandshakeMode::Expect,
            resync: false,
            deflate: Some(crate::wire::deflate::ServerPolicy::default()),
        }
    }
}

/// Whether a byte stream starts with an HTTP head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeMode {
    /// It does (live connections, captures).
    Expect,
    /// Frames from byte 0 (bare frame dumps).
    None,
    /// Decide per direction from the first bytes: a request line
    /// (`GET ` ...) or `HTTP/` means a head, anything else frames.
    Detect,
}

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

/// A frame, annotated.
#[derive(Debug, Clone)]
pub struct FrameEvent {
    /// The header.
    pub header: FrameHeader,
    /// Header bytes as received.
    pub head: Vec<u8>,
    /// Unmasked payload (empty when skipped).
    pub payload: Vec<u8>,
    /// Payload over the limit, not stored.
    pub skipped: bool,
    /// Stream offset of the frame's first byte.
    pub offset: u64,
    /// Close code and reason, for Close frames with a payload.
    pub close: Option<(CloseCode, String)>,
    /// Notes.
    pub notes: Vec<Note>,
    /// Index of the frame in its direction, from 0.
    pub index: u64,
    /// The stream ended inside this frame: how many payload bytes never came.
    pub truncated: Option<u64>,
}

impl FrameEvent {
    /// Every byte range of the header, labelled (worked out when shown).
    pub fn fields(&self) -> Vec<Field> {
        frame::fields(&self.header, &self.head, self.offset)
    }
}

/// A reassembled data message.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageEvent {
    /// Text or binary.
    pub opcode: OpCode,
    /// Total payload length.
    pub len: u64,
    /// Number of frames it came in.
    pub frames: u32,
    /// The payload (truncated to the message limit).
    pub payload: Vec<u8>,
    /// Valid UTF-8 text, when it is.
    pub text: Option<String>,
    /// The Kinetid reading, when decoded.
    pub kinetid: Option<kinetid::Message>,
    /// Notes.
    pub notes: Vec<Note>,
    /// For a compressed message (permessage-deflate): its size on the
    /// wire; `payload` and `len` are the inflated message.
    pub compressed_len: Option<u64>,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The connection opened (from a live socket or a recording).
    Open {
        /// Peer address.
        peer: String,
    },
    /// An HTTP request head.
    Request {
        /// The head.
        head: HttpHead,
        /// Plain or upgrade.
        kind: RequestKind,
        /// The checks, for upgrade requests.
        verdict: Option<Box<ServerVerdict>>,
    },
    /// An HTTP response head.
    Response {
        /// The head.
        head: HttpHead,
        /// Checked against the request's key.
        verdict: ClientVerdict,
    },
    /// A malformed HTTP head.
    HeadError(HeadError),
    /// A frame.
    Frame(Box<FrameEvent>),
    /// A complete data message.
    Message(Box<MessageEvent>),
    /// Bytes that could not be decoded (reported once, at the end).
    Unparsed {
        /// How many.
        bytes: u64,
        /// The first few, for the eye.
        preview: Vec<u8>,
        /// Why they were not decoded.
        why: String,
    },
    /// A note the listener raised about the connection (its registry,
    /// memory budget or timers), not derived from the bytes.
    Notice {
        /// The note.
        note: Note,
    },
    /// The connection ended; connection-level notes.
    End {
        /// Frames seen device to server.
        frames_c2s: u64,
        /// Frames seen server to device.
        frames_s2c: u64,
        /// Notes (no close frame, unanswered close or ping, truncation).
        notes: Vec<Note>,
    },
}

/// One annotation event.
#[derive(Debug, Clone)]
pub struct Event {
    /// Connection id.
    pub conn: u64,
    /// Direction of the bytes it describes.
    pub dir: Direction,
    /// Stream offset of the first byte it describes.
    pub offset: u64,
    /// Unix time in seconds of the chunk that completed it, when known.
    pub time: Option<f64>,
    /// Number of the captured packet that completed it (packet captures).
    pub pkt: Option<u64>,
    /// What it is.
    pub kind: EventKind,
}

impl Event {
    /// Notes attached to this event.
    pub fn notes(&self) -> &[Note] {
        match &self.kind {
            EventKind::Frame(f) => &f.notes,
            EventKind::Message(m) => &m.notes,
            EventKind::End { notes, .. } => notes,
            EventKind::Notice { note } => std::slice::from_ref(note),
            _ => &[],
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
    len: u64,
    frames: u32,
    utf8: Option<Utf8Stream>,
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
    last_payload: Vec<u8>,
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
            raw_bytes: 0,
            raw_offset: 0,
            raw_preview: Vec::new(),
            frames: 0,
            masked_data_seen: false,
            truncated_shown: false,
            ping_after_close: false,
            failed: false,
            last_payload: Vec::new(),
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
        out.push(Event {
            conn: self.conn,
            dir: Direction::C2S,
            offset: 0,
            time,
            pkt: None,
            kind: EventKind::Open {
                peer: peer.to_string(),
            },
        });
    }

    /// A listener note about this connection, placed at the current end of
    /// the `dir` stream.
    pub fn notice(&self, dir: Direction, note: Note, time: Option<f64>, out: &mut Vec<Event>) {
        let st = self.state(dir);
        let offset = st.decoder.offset() + st.decoder.pending().len() as u64;
        out.push(Event {
            conn: self.conn,
            dir,
            offset,
            time,
            pkt: None,
            kind: EventKind::Notice { note },
        });
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
        let conn = self.conn;
        let cfg = self.cfg;
        let ev = |dir, offset, kind| Event {
            conn,
            dir,
            offset,
            time,
            pkt: None,
            kind,
        };
        loop {
            if data.is_empty() {
                return;
            }
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            match st.phase.clone() {
                Phase::Detect => {
                    st.head_buf.extend_from_slice(data);
                    match detect_http(dir, &st.head_buf) {
                        None => return,
                        Some(http) => {
                            st.phase = if http { Phase::Http } else { Phase::Frames };
                            let buf = std::mem::take(&mut st.head_buf);
                            self.feed(dir, &buf, time, out);
                            return;
                        }
                    }
                }
                Phase::Raw(_) => {
                    let off = st.decoder.offset() + st.head_buf.len() as u64 + st.raw_bytes;
                    st.take_raw(off, data);
                    return;
                }
                Phase::Http => {
                    let before = st.head_buf.len();
                    st.head_buf.extend_from_slice(data);
                    match handshake::parse_head(&st.head_buf, cfg.limits) {
                        HeadParse::Partial => return,
                        HeadParse::Invalid(e) => {
                            let all = std::mem::take(&mut st.head_buf);
                            st.phase = Phase::Raw("after a malformed HTTP head".into());
                            st.take_raw(0, &all);
                            out.push(ev(dir, e.offset, EventKind::HeadError(e)));
                            return;
                        }
                        HeadParse::Complete(head) => {
                            let used = head.len - before;
                            st.head_buf.clear();
                            data = &data[used..];
                            // Frames start right after the head.
                            st.decoder = new_decoder(&cfg);
                            skip_offset(&mut st.decoder, head.len as u64);
                            match dir {
                                Direction::C2S => {
                                    let kind = handshake::request_kind(&head);
                                    let verdict = (kind == RequestKind::WebSocket).then(|| {
                                        Box::new(handshake::check_request_with(&head, cfg.deflate))
                                    });
                                    if let Some(v) = &verdict {
                                        self.offered_ext = v.offered_extensions.clone();
                                        if v.offered_protocols
                                            .iter()
                                            .any(|p| p == crate::wire::handshake::KINETID_PROTOCOL)
                                        {
                                            self.kin = Some(true);
                                        }
                                    }
                                    self.upgrade_asked = Some(kind == RequestKind::WebSocket);
                                    match &verdict {
                                        Some(v) if v.accepted() => {
                                            self.key = v.accept.as_ref().map(|a| a.key.clone());
                                            self.protocols = v.offered_protocols.clone();
                                            self.c2s.phase = Phase::Frames;
                                        }
                                        Some(_) => {
                                            self.c2s.phase =
                                                Phase::Raw("after a refused upgrade request".into())
                                        }
                                        None => self.c2s.phase = Phase::Raw(
                                            "after a plain HTTP request (body or further requests)"
                                                .into(),
                                        ),
                                    }
                                    let mut hints = head_hints(&head, None, None);
                                    if let Some(v) = &verdict {
                                        hints.extend(upgrade_hints(
                                            &head,
                                            &v.offered_protocols,
                                            self.server_port,
                                            cfg.kinetid && !cfg.kinetid_auto,
                                        ));
                                    }
                                    out.push(ev(
                                        dir,
                                        0,
                                        EventKind::Request {
                                            head,
                                            kind,
                                            verdict,
                                        },
                                    ));
                                    for note in hints {
                                        out.push(ev(dir, 0, EventKind::Notice { note }));
                                    }
                                }
                                Direction::S2C => {
                                    let offered: Vec<&str> =
                                        self.protocols.iter().map(String::as_str).collect();
                                    let verdict = if self.upgrade_asked == Some(false) {
                                        handshake::plain_response(&head)
                                    } else {
                                        handshake::check_response_with(
                                            &head,
                                            self.key.as_deref(),
                                            &offered,
                                            &self.offered_ext,
                                        )
                                    };
                                    if let (101, Some(a)) = (verdict.status, verdict.deflate) {
                                        self.deflate = Some(a);
                                        self.c2s.inflater =
                                            Some(crate::wire::deflate::Inflater::new(a.client));
                                        self.s2c.inflater =
                                            Some(crate::wire::deflate::Inflater::new(a.server));
                                    }
                                    if verdict.status == 101 && verdict.error.is_some() {
                                        self.bad_answer = Some(false);
                                    }
                                    self.s2c.phase = if verdict.status == 101 {
                                        Phase::Frames
                                    } else {
                                        Phase::Raw("after a non-101 response (body)".into())
                                    };
                                    // A refused upgrade never became a WebSocket:
                                    // what the client sends on is not frames, and its
                                    // end is no WebSocket close.
                                    if verdict.status != 101 && self.c2s.phase == Phase::Frames {
                                        self.c2s.phase = Phase::Raw(format!(
                                            "after a refused upgrade (the server answered {})",
                                            verdict.status
                                        ));
                                    }
                                    let hints =
                                        head_hints(&head, self.key.as_deref(), Some(&verdict));
                                    out.push(ev(dir, 0, EventKind::Response { head, verdict }));
                                    for note in hints {
                                        out.push(ev(dir, 0, EventKind::Notice { note }));
                                    }
                                }
                            }
                        }
                    }
                }
                Phase::Hunt => {
                    st.head_buf.extend_from_slice(data);
                    let deflate = self.deflate.is_some();
                    let st = match dir {
                        Direction::C2S => &mut self.c2s,
                        Direction::S2C => &mut self.s2c,
                    };
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
                                out.push(ev(
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
                            return;
                        }
                        Err(keep_from) => {
                            // Bytes before `keep_from` start no header; a
                            // stretch with none at all is bounded.
                            let drop = keep_from.max(st.head_buf.len().saturating_sub(HUNT_WINDOW));
                            st.head_buf.drain(..drop);
                            st.hunt_from += drop as u64;
                            st.hunt_skipped += drop as u64;
                            return;
                        }
                    }
                }
                Phase::Frames => {
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
                    let st = match dir {
                        Direction::C2S => &mut self.c2s,
                        Direction::S2C => &mut self.s2c,
                    };
                    st.decoder.shrink();
                    return;
                }
            }
        }
    }

    fn drain_frames(&mut self, dir: Direction, time: Option<f64>, out: &mut Vec<Event>) {
        loop {
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            match st.decoder.next_frame() {
                Decoded::Need(_) => return,
                Decoded::Stuck => {
                    let rest = st.decoder.pending().to_vec();
                    let off = st.decoder.offset();
                    st.phase = Phase::Raw("after a frame whose length cannot be trusted (64-bit length with the top bit set)".into());
                    st.take_raw(off, &rest);
                    return;
                }
                Decoded::Frame(raw) => {
                    let skipped = raw.skipped.then(|| (raw.header, raw.head.clone()));
                    let (mut frame_ev, msg_ev) = self.judge_frame(dir, raw);
                    if let Some((h, head)) = skipped {
                        self.diagnose_length(dir, &h, &head, &mut frame_ev.notes);
                    }
                    if dir == Direction::C2S && self.bad_answer == Some(false) {
                        self.bad_answer = Some(true);
                        frame_ev.notes.push(Note::error(
                            Code::BadAnswerAccepted,
                            "RFC 6455 4.1",
                            "the device sends frames after a 101 answer it must refuse (see the response's checks): it does not check the server's handshake, so anything that answers 101 can talk to it",
                        ));
                    }
                    let fails = |n: &Note| {
                        n.severity == Severity::Error && policy::close_code(n.code).is_some()
                    };
                    let broken = frame_ev.notes.iter().any(fails);
                    if broken
                        || msg_ev
                            .as_ref()
                            .is_some_and(|(_, m)| m.notes.iter().any(fails))
                    {
                        self.state_mut(dir).failed = true;
                    }
                    self.torn_frame(dir, broken, &frame_ev);
                    let offset = frame_ev.offset;
                    out.push(Event {
                        conn: self.conn,
                        dir,
                        offset,
                        time,
                        pkt: None,
                        kind: EventKind::Frame(Box::new(frame_ev)),
                    });
                    if let Some((off, mut m)) = msg_ev {
                        if let Some(k) = m.kinetid.as_ref().filter(|_| self.cfg.kinetid) {
                            m.notes.extend(self.track.observe(k, dir));
                        }
                        out.push(Event {
                            conn: self.conn,
                            dir,
                            offset: off,
                            time,
                            pkt: None,
                            kind: EventKind::Message(Box::new(m)),
                        });
                    }
                    // The bytes a probe needs came with the header.
                    let st = self.state_mut(dir);
                    if st.probe.as_ref().is_some_and(|p| p.bytes.len() >= p.target) {
                        self.probe_length(dir, false, time, out);
                    }
                }
            }
        }
    }

    /// The stream in `dir` has ended: release held frames, then show the
    /// frame it ended in (with its cause, and with `resync` decode on from
    /// the real next frame).
    fn finish_frames(&mut self, dir: Direction, time: Option<f64>, out: &mut Vec<Event>) {
        for _ in 0..1024 {
            let st = self.state_mut(dir);
            if st.phase != Phase::Frames {
                return;
            }
            st.decoder.set_eof();
            self.drain_frames(dir, time, out);
            self.settle_torn(dir, true, time, out);
            let st = self.state_mut(dir);
            if st.decoder.skipping() > 0 || st.decoder.is_stuck() {
                if st.probe.is_some() {
                    self.probe_length(dir, true, time, out);
                }
                return;
            }
            let pending = st.decoder.pending();
            let frame::HeaderParse::Header(h) = frame::parse_header(pending) else {
                return;
            };
            let head = pending[..h.header_len].to_vec();
            let arrived = pending[h.header_len..].to_vec();
            let offset = st.decoder.offset();
            let cause = diagnose::length_cause(&h, &head, &arrived, true, dir.sender());
            let resync = self.cfg.resync;
            let mut ev = self.truncated_frame(dir, h, head, &arrived, offset);
            let fits = cause.as_ref().map(diagnose::LengthCause::fits);
            if let (Some(c), Some(k)) = (&cause, fits) {
                let next_at = offset + h.header_len as u64 + k;
                ev.notes.push(length_note(&h, c, next_at, resync));
            }
            out.push(Event {
                conn: self.conn,
                dir,
                offset,
                time,
                pkt: None,
                kind: EventKind::Frame(Box::new(ev)),
            });
            if let (Some(k), true) = (fits, resync) {
                self.state_mut(dir)
                    .decoder
                    .discard(h.header_len + k as usize);
                continue;
            }
            self.state_mut(dir).truncated_shown = true;
            return;
        }
    }

    /// The frame a stream ended inside: every header field and the payload
    /// bytes that arrived, with how many never did.
    fn truncated_frame(
        &mut self,
        dir: Direction,
        h: FrameHeader,
        head: Vec<u8>,
        arrived: &[u8],
        offset: u64,
    ) -> FrameEvent {
        let max_frame = self.cfg.max_frame;
        let st = self.state_mut(dir);
        let index = st.frames;
        st.frames += 1;
        let mut notes = frame::header_notes(&h, &head, dir.sender(), 0, max_frame);
        let missing = h.payload_len - arrived.len() as u64;
        notes.push(Note::error(
            Code::TruncatedFrame,
            "RFC 6455 5.2",
            format!(
                "the stream ended inside this frame: {} of its {} payload bytes arrived, {missing} never did (a connection cut mid-frame, or a wrong length)",
                arrived.len(),
                h.payload_len
            ),
        ));
        let mut payload = arrived.to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k.0);
        }
        FrameEvent {
            header: h,
            offset,
            head,
            payload,
            skipped: false,
            close: None,
            notes,
            index,
            truncated: Some(missing),
        }
    }

    /// Remember a frame's payload; for a broken frame right after one,
    /// start looking for the torn write that explains it: the bytes from
    /// the broken frame on are collected up to TORN_AFTER (or the end of
    /// the stream), so the verdict is the same however the stream was cut
    /// into reads ([`Annotator::settle_torn`]).
    fn torn_frame(&mut self, dir: Direction, broken: bool, f: &FrameEvent) {
        let st = self.state_mut(dir);
        let adjacent = st.last_payload_at + st.last_payload.len() as u64 == f.offset;
        if broken && !f.skipped && !st.last_payload.is_empty() && adjacent && st.torn.is_none() {
            let mut prev = std::mem::take(&mut st.last_payload);
            if let Some(k) = st.last_payload_key {
                apply_mask(&mut prev, k.0);
            }
            let mut bytes = f.head.clone();
            let at = bytes.len();
            bytes.extend_from_slice(&f.payload);
            if let Some(k) = f.header.mask {
                apply_mask(&mut bytes[at..], k.0);
            }
            bytes.extend_from_slice(st.decoder.pending());
            bytes.truncate(TORN_AFTER);
            st.torn = Some(Box::new(TornProbe {
                prev_at: st.last_payload_at,
                prev,
                bytes,
            }));
        }
        st.last_payload.clear();
        st.last_payload_key = None;
        if !f.skipped && f.payload.len() <= TORN_WINDOW && f.truncated.is_none() {
            st.last_payload.extend_from_slice(&f.payload);
            st.last_payload_key = f.header.mask;
            st.last_payload_at = f.offset + f.head.len() as u64;
        }
    }

    /// Judge a torn-frame probe once its bytes are in (`at_end`: the
    /// stream ended, so the frames after the cut may run to its end).
    fn settle_torn(
        &mut self,
        dir: Direction,
        at_end: bool,
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        let conn = self.conn;
        let st = self.state_mut(dir);
        let Some(t) = st.torn.take() else { return };
        let Some(q) = diagnose::torn_frame(&t.prev, &t.bytes, at_end, dir.sender()) else {
            return;
        };
        let cut = t.prev_at + t.prev.len() as u64;
        let note = Note::info(
            Code::HintTornFrame,
            "RFC 6455 5.2",
            format!("a torn frame: the frame whose payload starts at byte {} declared {} payload bytes, but a whole frame header starts at byte {}, {q} bytes into that payload, and runs past its end at byte {cut}; that frame's write stopped after {q} payload bytes and the firmware went on with the next frame (a write that timed out half-way; arduinoWebSockets issue 533), so what is read from byte {cut} as a header with bogus bits is the rest of that next frame", t.prev_at, t.prev.len(), t.prev_at + q as u64),
        );
        out.push(Event {
            conn,
            dir,
            offset: cut + t.bytes.len() as u64,
            time,
            pkt: None,
            kind: EventKind::Notice { note },
        });
    }

    fn state_mut(&mut self, dir: Direction) -> &mut DirState {
        match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        }
    }

    /// A declared length that does not fit (over the limit, or the top bit
    /// set): name its likely cause from the bytes that followed, and with
    /// `resync` decode on from where the real next frame starts.
    fn diagnose_length(
        &mut self,
        dir: Direction,
        h: &FrameHeader,
        head: &[u8],
        notes: &mut Vec<Note>,
    ) {
        let resync = self.cfg.resync;
        let st = match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        };
        let stuck = st.decoder.is_stuck();
        let after = if stuck {
            st.decoder.pending()
        } else {
            st.decoder.skipped_bytes()
        };
        let at_end = st.decoder.at_eof() && after.len() < DIAG_WINDOW;
        let after = &after[..after.len().min(DIAG_WINDOW)];
        let payload_at = if stuck {
            st.decoder.offset()
        } else {
            st.decoder.offset() - st.decoder.skipped_bytes().len() as u64
        };
        // Without --resync the cause is looked for once the payload's first
        // DIAG_WINDOW bytes came (or the stream ended): the same bytes
        // however the stream was cut into reads, so the same note.
        if !resync && stuck {
            // Without --resync a length with its top bit set stops the
            // decoder (the rest is shown raw), as before: not judged here.
            return;
        }
        if !resync {
            let target = DIAG_WINDOW.min(usize::try_from(h.payload_len).unwrap_or(usize::MAX));
            st.probe = Some(Box::new(LengthProbe {
                header: *h,
                head: head.to_vec(),
                payload_at,
                bytes: after[..after.len().min(target)].to_vec(),
                target,
            }));
            return;
        }
        let Some(cause) = diagnose::length_cause(h, head, after, at_end, dir.sender()) else {
            return;
        };
        let k = cause.fits();
        notes.push(length_note(h, &cause, payload_at + k, resync));
        if resync {
            if stuck {
                st.decoder.unstick();
                st.decoder.discard(k as usize);
                if let Phase::Raw(_) = st.phase {
                    st.phase = Phase::Frames;
                }
            } else {
                st.decoder.resync(k as usize);
            }
        }
    }

    /// Look again at an oversized frame's payload as far as it came: a
    /// cause found is said in a note (`at_end`: the stream ended, so the
    /// frames after it may run to its end). The bytes were already
    /// skipped, so decoding does not resume from there.
    fn probe_length(
        &mut self,
        dir: Direction,
        at_end: bool,
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        let conn = self.conn;
        let st = self.state_mut(dir);
        let Some(p) = st.probe.take() else { return };
        let short = p.bytes.len() < p.target;
        let cause =
            diagnose::length_cause(&p.header, &p.head, &p.bytes, at_end && short, dir.sender());
        if let Some(c) = cause {
            let note = length_note(&p.header, &c, p.payload_at + c.fits(), false);
            // Placed where the bytes looked at end: the same however the
            // stream was cut into reads.
            out.push(Event {
                conn,
                dir,
                offset: p.payload_at + p.bytes.len() as u64,
                time,
                pkt: None,
                kind: EventKind::Notice { note },
            });
        }
    }

    fn judge_frame(
        &mut self,
        dir: Direction,
        raw: frame::RawFrame,
    ) -> (FrameEvent, Option<(u64, MessageEvent)>) {
        let mut cfg = self.cfg;
        let undecided = cfg.kinetid && cfg.kinetid_auto && self.kin.is_none();
        if cfg.kinetid_auto && self.kin == Some(false) {
            cfg.kinetid = false;
        }
        let pmd = self.deflate.is_some();
        let now = self.now;
        let kin = &mut self.kin;
        let (st, other) = match dir {
            Direction::C2S => (&mut self.c2s, &mut self.s2c),
            Direction::S2C => (&mut self.s2c, &mut self.c2s),
        };
        let h = raw.header;
        let index = st.frames;
        st.frames += 1;
        let starts_message = !h.opcode.is_control() && h.opcode != OpCode::Continuation;
        let rsv_allowed = if pmd && starts_message { 0x4 } else { 0 };
        let mut notes =
            frame::header_notes(&h, &raw.head, dir.sender(), rsv_allowed, cfg.max_frame);
        if pmd && h.rsv1 && !starts_message {
            for n in notes
                .iter_mut()
                .filter(|n| n.code == Code::RsvWithoutExtension)
            {
                *n = Note::error(
                    Code::DeflateRsv1Misplaced,
                    "RFC 7692 6",
                    format!("RSV1 set on a {} frame: with permessage-deflate only the first frame of a data message may set it", h.opcode),
                );
            }
        }
        if dir.sender() == Role::Client
            && h.mask.is_none()
            && h.opcode.is_control()
            && st.masked_data_seen
        {
            notes.push(Note::info(Code::HintUnmaskedControl, "RFC 6455 5.1", "data frames on this connection were masked but this control frame is not: the firmware masks only data frames"));
        }
        if let Some(k) = h.mask {
            if !h.opcode.is_control() {
                st.masked_data_seen = true;
            }
            if st.last_key == Some(k) && k.0 != [0; 4] {
                notes.push(Note::warning(
                    Code::MaskKeyRepeated,
                    "RFC 6455 5.3",
                    format!("masking key {} is the same as on the previous frame; each frame needs a fresh unpredictable key", k.hex()),
                ));
            }
            st.last_key = Some(k);
        }
        // Only data is forbidden after a Close (RFC 6455 5.5.1): a pong answering
        // a ping that crossed the Close is legal.
        if let (Some(at), false) = (st.close_at, h.opcode.is_control()) {
            notes.push(Note::error(
                Code::DataAfterClose,
                "RFC 6455 5.5.1",
                format!("data frame sent after this side's Close frame (at byte {at}); no data may follow a Close"),
            ));
        }
        let mut close = None;
        let mut message = None;
        match h.opcode {
            OpCode::Close => close = judge_close(st, &raw, &mut notes),
            OpCode::Ping => judge_ping(st, other, &raw, now, &mut notes),
            OpCode::Pong => judge_pong(other, &raw, now, &mut notes),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                message = judge_data(st, &raw, cfg, dir, index, pmd, &mut notes);
                if let (true, Some((_, m))) = (undecided, message.as_mut()) {
                    *kin = Some(decide_kinetid(m));
                }
            }
            OpCode::Reserved(_) => {}
        }
        (
            FrameEvent {
                header: h,
                head: raw.head,
                payload: raw.payload,
                skipped: raw.skipped,
                offset: raw.offset,
                close,
                notes,
                index,
                truncated: None,
            },
            message,
        )
    }

    /// `missing` bytes of direction `dir` were never captured (a packet
    /// capture lost them; 0 with nothing seen yet: the capture started in
    /// the middle of the connection). The unfinished frame and message are
    /// given up, a note says so, and decoding resumes at the next frame
    /// header that fits.
    pub fn gap(&mut self, dir: Direction, missing: u64, time: Option<f64>, out: &mut Vec<Event>) {
        self.now = time;
        let cfg = self.cfg;
        let st = self.state_mut(dir);
        let (at, dropped) = match &st.phase {
            Phase::Frames => {
                let pending = st.decoder.pending().len() as u64;
                (
                    st.decoder.offset() + pending + st.decoder.skipping(),
                    pending,
                )
            }
            Phase::Hunt => (
                st.hunt_from + st.head_buf.len() as u64,
                st.head_buf.len() as u64,
            ),
            Phase::Detect | Phase::Http => (st.head_buf.len() as u64, st.head_buf.len() as u64),
            Phase::Raw(_) => {
                // Nothing is decoded here anyway: count the missing bytes.
                st.raw_bytes += missing;
                return;
            }
        };
        st.frag = None;
        st.pending_json = None;
        st.head_buf = Vec::new();
        st.decoder = new_decoder(&cfg);
        st.hunt_from = at + missing;
        st.hunt_skipped = 0;
        st.phase = Phase::Hunt;
        let note = if at == 0 && missing == 0 {
            Note::warning(
                Code::CaptureStartMissed,
                "capture",
                "the capture starts in the middle of this connection (its opening handshake was not captured): frames are decoded from the first header that fits",
            )
        } else {
            Note::warning(
                Code::CaptureGap,
                "capture",
                format!(
                    "{missing} bytes of this direction were not captured (stream bytes {at} to {}){}: decoding resumes at the next frame header that fits",
                    at + missing,
                    if dropped > 0 {
                        format!("; the {dropped} bytes before them, of an unfinished frame, are given up")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        out.push(Event {
            conn: self.conn,
            dir,
            offset: at,
            time,
            pkt: None,
            kind: EventKind::Notice { note },
        });
    }

    /// Both directions have ended: report what is left and the connection-level notes.
    pub fn finish(&mut self, time: Option<f64>, out: &mut Vec<Event>) {
        self.now = time;
        if self.finished {
            return;
        }
        self.finished = true;
        let mut notes = Vec::new();
        for dir in [Direction::C2S, Direction::S2C] {
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            if st.phase == Phase::Detect && !st.head_buf.is_empty() {
                // Too short to tell: it cannot be a whole HTTP head, so try frames.
                st.phase = Phase::Frames;
                let buf = std::mem::take(&mut st.head_buf);
                self.feed(dir, &buf, time, out);
            }
        }
        for dir in [Direction::C2S, Direction::S2C] {
            self.finish_frames(dir, time, out);
        }
        for dir in [Direction::C2S, Direction::S2C] {
            let who = if dir == Direction::C2S {
                "device"
            } else {
                "server"
            };
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            match &st.phase {
                Phase::Hunt if st.hunt_skipped + st.head_buf.len() as u64 > 0 => {
                    notes.push(Note::warning(
                        Code::CaptureGap,
                        "capture",
                        format!(
                            "the {who}'s last {} bytes, after a gap in the capture, held no frame header that fits",
                            st.hunt_skipped + st.head_buf.len() as u64
                        ),
                    ));
                }
                Phase::Http if !st.head_buf.is_empty() => {
                    notes.push(Note::error(
                        Code::TruncatedHandshake,
                        "RFC 9112 2.1",
                        format!(
                            "{who} stream ended inside its HTTP head after {} bytes",
                            st.head_buf.len()
                        ),
                    ));
                    if st.head_buf.ends_with(b"\n") && st.head_buf.contains(&b':') {
                        notes.push(Note::info(
                            Code::HintNoBlankLine,
                            "RFC 9112 2.1",
                            format!("the {who}'s head has whole header lines but no blank line after them: the firmware never sent the empty line (CRLF) that ends an HTTP head, so the other side waits for more headers"),
                        ));
                    }
                }
                Phase::Frames => {
                    let pending = st.decoder.pending().len();
                    if st.decoder.skipping() > 0 {
                        notes.push(Note::error(Code::TruncatedFrame, "RFC 6455 5.2", format!("{who} stream ended with {} bytes of an oversized payload still to come", st.decoder.skipping())));
                    } else if pending > 0 && !st.truncated_shown {
                        let need = match frame::parse_header(st.decoder.pending()) {
                            frame::HeaderParse::Need(n) => {
                                format!("its header needs {n} more bytes")
                            }
                            frame::HeaderParse::Header(h) => format!(
                                "header says {} payload bytes, {} arrived",
                                h.payload_len,
                                pending - h.header_len
                            ),
                        };
                        notes.push(Note::error(
                            Code::TruncatedFrame,
                            "RFC 6455 5.2",
                            format!(
                                "{who} stream ended inside a frame at byte {}: {need}",
                                st.decoder.offset()
                            ),
                        ));
                    }
                    if let Some(f) = &st.frag {
                        notes.push(Note::warning(
                            Code::MessageUnfinished,
                            "RFC 6455 5.4",
                            format!(
                                "{who} stream ended inside a fragmented message started at byte {}",
                                f.offset
                            ),
                        ));
                    }
                }
                _ => {}
            }
            if st.raw_bytes > 0 {
                let why = match &st.phase {
                    Phase::Raw(w) => w.clone(),
                    _ => String::new(),
                };
                out.push(Event {
                    conn: self.conn,
                    dir,
                    offset: st.raw_offset,
                    time,
                    pkt: None,
                    kind: EventKind::Unparsed {
                        bytes: st.raw_bytes,
                        preview: st.raw_preview.clone(),
                        why,
                    },
                });
            }
        }
        let upgraded = self.c2s.phase == Phase::Frames || self.s2c.phase == Phase::Frames;
        if self.bad_answer == Some(false) {
            // The device did as RFC 6455 4.1 says: it failed the connection
            // without a frame, so no WebSocket close was owed.
            notes.push(Note::info(
                Code::BadAnswerRefused,
                "RFC 6455 4.1",
                "the device refused the server's 101 answer (see the response's checks) and sent no frame: it failed the connection, as it must",
            ));
        } else if upgraded {
            // A side that broke a framing rule gives its peer the right to
            // fail the connection: no Close, no pong owed to it (7.1.7).
            let failed = self.c2s.failed || self.s2c.failed;
            match (self.c2s.close_at, self.s2c.close_at) {
                _ if failed => {}
                (None, None) => notes.push(Note::warning(
                    Code::ClosedWithoutCloseFrame,
                    "RFC 6455 7.1.5",
                    "TCP closed with no Close frame from either side: the close code is 1006 (abnormal); a firmware that drops the link without closing does this",
                )),
                (Some(_), None) => notes.push(Note::warning(
                    Code::CloseNotAnswered,
                    "RFC 6455 5.5.1",
                    "the device sent a Close frame that the server never answered",
                )),
                (None, Some(_)) => notes.push(Note::warning(
                    Code::CloseNotAnswered,
                    "RFC 6455 5.5.1",
                    "the server sent a Close frame that the device never answered (a firmware that closes silently does this)",
                )),
                _ => {}
            }
            // A ping still out when the answering side closed crossed its Close
            // (stacks stop answering once they close): only a peer that never
            // closed is named here; one that talks and never pongs is named
            // while the connection runs.
            for (st, other, who) in [
                (&self.c2s, &self.s2c, "device"),
                (&self.s2c, &self.c2s, "server"),
            ] {
                // Already named while the connection ran: once is enough.
                let crossed = st.ping_after_close
                    || other.close_at.is_some()
                    || st.ping_warned
                    || st.failed
                    || other.failed;
                if let (Some(OutPing { offset: p, .. }), false) =
                    (st.pings_unanswered.first(), crossed)
                {
                    notes.push(Note::warning(
                        Code::PingNotAnswered,
                        "RFC 6455 5.5.2",
                        format!("the {who}'s ping at byte {p} was never answered with a pong"),
                    ));
                }
            }
        }
        out.push(Event {
            conn: self.conn,
            dir: Direction::C2S,
            offset: 0,
            time,
            pkt: None,
            kind: EventKind::End {
                frames_c2s: self.c2s.frames,
                frames_s2c: self.s2c.frames,
                notes,
            },
        });
    }
}

/// What an HTTP head's bytes tell about how it was written: bare LF line
/// ends, and for a response whose accept does not match, how it was
/// computed.
/// What an upgrade request shows of its client library: a `Host` without
/// the port the device connected to (RFC 9110 7.2; libwebsockets once sent
/// it so), a subprotocol other than Kinetid's offered where Kinetid is
/// spoken (arduinoWebSockets offers `arduino` unless told otherwise).
fn upgrade_hints(
    head: &HttpHead,
    offered: &[String],
    port: Option<u16>,
    kinetid: bool,
) -> Vec<Note> {
    let mut notes: Vec<Note> = port
        .and_then(|p| host_without_port(head, p))
        .into_iter()
        .collect();
    if kinetid
        && !offered.is_empty()
        && !offered
            .iter()
            .any(|p| p == crate::wire::handshake::KINETID_PROTOCOL)
    {
        notes.push(Note::info(
            Code::HintOtherSubprotocol,
            "kinetid v1",
            format!("the device offers subprotocol {} but not kinetid.v1: its WebSocket library offers a default of its own (arduinoWebSockets offers \"arduino\" unless begin() is given a protocol); offer kinetid.v1", offered.iter().map(|p| format!("{:?}", crate::escape::esc(p))).collect::<Vec<_>>().join(", ")),
        ));
    }
    notes
}

/// A `Host` without the port the device connected to, `port`, when that
/// is not 80 or 443 (RFC 9110 7.2). A listener, which knows its port,
/// raises it as its own note (so a recording replays it).
pub fn host_without_port(head: &HttpHead, port: u16) -> Option<Note> {
    let host = head.get("host")?;
    // A request a reverse proxy passed on keeps the client's Host, which
    // names the proxy's port, not this one (RFC 7239; X-Forwarded-*).
    if [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "via",
    ]
    .iter()
    .any(|h| head.get(h).is_some())
    {
        return None;
    }
    let has_port = match host.strip_prefix('[') {
        Some(r) => r.contains("]:"),
        None => host.contains(':'),
    };
    (!has_port && port != 80 && port != 443).then(|| {
        Note::warning(
            Code::HintHostWithoutPort,
            "RFC 9110 7.2",
            format!("Host {:?} has no port, but the device connected to port {port}: the Host header must carry the port when it is not the scheme's default (80 for ws://, 443 for wss://); a server or proxy that routes or checks by Host refuses or misroutes it (a known libwebsockets client bug)", crate::escape::esc(host)),
        )
    })
}

fn head_hints(head: &HttpHead, key: Option<&str>, verdict: Option<&ClientVerdict>) -> Vec<Note> {
    let mut notes = Vec::new();
    if head.bare_lf {
        notes.push(Note::warning(
            Code::HintBareLf,
            "RFC 9112 2.2",
            "lines of this head end in a bare LF instead of CRLF: the firmware writes \"\\n\" where HTTP requires \"\\r\\n\" (tolerated here; strict servers refuse it)",
        ));
    }
    if let (Some(k), Some(v)) = (key, verdict) {
        if let Some(handshake::ClientHandshakeError::AcceptMismatch { got, .. }) = &v.error {
            if let Some((code, why)) = diagnose::accept_cause(k, got) {
                notes.push(Note::info(code, "RFC 6455 4.2.2", why));
            }
        }
    }
    notes
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

/// A Close frame: its code and reason, checked (RFC 6455 5.5.1, 7.4).
fn judge_close(
    st: &mut DirState,
    raw: &frame::RawFrame,
    notes: &mut Vec<Note>,
) -> Option<(CloseCode, String)> {
    let mut close = None;
    if st.close_at.is_none() {
        st.close_at = Some(raw.offset);
    }
    let p = &raw.payload;
    if p.len() == 1 {
        // A firmware that writes the code as one byte sends its low byte:
        // 0xE8 is 1000's (a libwebsockets release did this), 0xE9 1001's.
        let meant = [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1011]
            .into_iter()
            .find(|c| (c & 0xff) as u8 == p[0]);
        let why = match meant {
            Some(c) => format!(
                "close payload of 1 byte (0x{:02x}): a status code needs 2; 0x{:02x} is the low byte of {c} ({}), so the firmware most likely wrote the code into one byte instead of two, big-endian",
                p[0],
                p[0],
                CloseCode(c).meaning()
            ),
            None => format!("close payload of 1 byte (0x{:02x}): a status code needs 2", p[0]),
        };
        notes.push(Note::error(
            Code::ClosePayloadOneByte,
            "RFC 6455 5.5.1",
            why,
        ));
    } else if p.len() >= 2 {
        let code = CloseCode(u16::from_be_bytes([p[0], p[1]]));
        if !code.is_allowed() {
            notes.push(Note::error(
                Code::CloseCodeInvalid,
                "RFC 6455 7.4.1",
                format!(
                    "close code {} ({}) must not be sent in a Close frame",
                    code.0,
                    code.meaning()
                ),
            ));
        }
        let reason = match std::str::from_utf8(&p[2..]) {
            Ok(s) => s.to_string(),
            Err(e) => {
                notes.push(Note::error(
                    Code::CloseReasonInvalidUtf8,
                    "RFC 6455 5.5.1",
                    format!(
                        "close reason is not valid UTF-8 (at reason byte {})",
                        e.valid_up_to()
                    ),
                ));
                String::from_utf8_lossy(&p[2..]).into_owned()
            }
        };
        close = Some((code, reason));
    }
    close
}

/// A Ping frame: is an earlier one still unanswered? (RFC 6455 5.5.2-3)
fn judge_ping(
    st: &mut DirState,
    other: &DirState,
    raw: &frame::RawFrame,
    now: Option<f64>,
    notes: &mut Vec<Note>,
) {
    // RFC 6455 5.5.3 lets a peer answer only the latest of several
    // pings, so a pipelined burst is legal, and a peer busy sending may
    // read a ping late. The peer is judged deaf only when it sent frames
    // of its own since the oldest unanswered ping and, where times are
    // known, that ping has waited longer than a pong may take; once per
    // unanswered run.
    if let Some(oldest) = st.pings_unanswered.first() {
        let waited = now.zip(oldest.time).map(|(a, b)| a - b);
        let talked = other.frames > st.other_frames_at_ping;
        if talked && !st.ping_warned && waited.is_none_or(|w| w > PONG_LATE_S) {
            st.ping_warned = true;
            let when = match waited {
                Some(w) => format!("had no pong {w:.1} s later"),
                None => "had no pong before this next ping".to_string(),
            };
            notes.push(Note::warning(Code::PingNotAnswered, "RFC 6455 5.5.2", format!("the ping at byte {} of this direction {when}, although the peer sent other frames since (a firmware that ignores pings, or one that reads only between its own writes)", oldest.offset)));
        }
    }
    if st.pings_unanswered.is_empty() {
        st.other_frames_at_ping = other.frames;
    }
    if st.pings_unanswered.len() >= PINGS_KEPT {
        // Keep the oldest (its age is what is judged) and the newest.
        st.pings_unanswered.remove(1);
    }
    st.pings_unanswered.push(OutPing {
        offset: raw.offset,
        payload: raw.payload[..raw.payload.len().min(125)].to_vec(),
        time: now,
    });
    st.ping_after_close = other.close_at.is_some();
}

/// A Pong frame: it answers the other side's pings with one's payload
/// (RFC 6455 5.5.3); an unsolicited pong is allowed and judged on nothing.
fn judge_pong(
    other: &mut DirState,
    raw: &frame::RawFrame,
    now: Option<f64>,
    notes: &mut Vec<Note>,
) {
    if other.pings_unanswered.is_empty() {
        return;
    }
    let pings = std::mem::take(&mut other.pings_unanswered);
    let warned = std::mem::replace(&mut other.ping_warned, false);
    // The newest ping it echoes (a pong may answer only the latest);
    // pings after that one stay unanswered.
    let Some(i) = pings.iter().rposition(|p| p.payload == raw.payload) else {
        let want: Vec<String> = pings
            .iter()
            .rev()
            .take(3)
            .map(|p| {
                format!(
                    "{:?}",
                    crate::escape::esc(&String::from_utf8_lossy(&p.payload)).to_string()
                )
            })
            .collect();
        notes.push(Note::warning(
            Code::PongPayloadMismatch,
            "RFC 6455 5.5.3",
            format!(
                "this pong carries {} byte(s) ({:?}) but the ping(s) it answers carried {}: a pong must echo its ping's application data (a firmware that answers every ping with an empty or fixed pong)",
                raw.payload.len(),
                crate::escape::esc(&String::from_utf8_lossy(&raw.payload)).to_string(),
                want.join(" or ")
            ),
        ));
        return;
    };
    let answered = &pings[i];
    let late = now.zip(answered.time).map(|(a, b)| a - b);
    match late {
        Some(w) if w > PONG_LATE_S => notes.push(Note::warning(
            Code::PingAnsweredLate,
            "RFC 6455 5.5.2",
            format!("this pong came {w:.1} s after the ping at byte {} it answers; a pong is due as soon as practical (a firmware that answers pings only from its main loop or its report timer)", answered.offset),
        )),
        _ if warned => notes.push(Note::info(
            Code::PingAnsweredLate,
            "RFC 6455 5.5.2",
            format!("this pong answers the ping at byte {} after all{}: the earlier ping-not-answered warning is settled (the peer was busy, not deaf)", answered.offset, late.map_or(String::new(), |w| format!(", {w:.1} s after it"))),
        )),
        _ => {}
    }
    other.pings_unanswered = pings[i + 1..].to_vec();
}

/// A data frame: fragmentation rules (RFC 6455 5.4), the message limit,
/// incremental UTF-8, and the message it completes.
fn judge_data(
    st: &mut DirState,
    raw: &frame::RawFrame,
    cfg: Config,
    dir: Direction,
    index: u64,
    pmd: bool,
    notes: &mut Vec<Note>,
) -> Option<(u64, MessageEvent)> {
    let h = &raw.header;
    let mut message = None;
    let cont = h.opcode == OpCode::Continuation;
    if cont && st.frag.is_none() {
        notes.push(Note::error(
            Code::ContinuationWithoutStart,
            "RFC 6455 5.4",
            "continuation frame but no fragmented message is open",
        ));
        if st.last_data_final && index > 0 {
            notes.push(Note::info(Code::HintContAfterFin, "RFC 6455 5.4", "the previous data frame had FIN set: the sender finished the message and then continued it (a common firmware bug)"));
        }
    } else if !cont && st.frag.is_some() {
        let started = st.frag.as_ref().map(|f| f.offset).unwrap_or(0);
        notes.push(Note::error(
                Code::DataFrameInFragmentedMessage,
                "RFC 6455 5.4",
                format!("new {} frame while the fragmented message started at byte {started} is still open; expected a continuation frame", h.opcode),
            ));
        st.frag = None;
    }
    if !(cont && st.frag.is_none()) {
        if st.frag.is_none() {
            let compressed = pmd && h.rsv1;
            st.frag = Some(Fragment {
                opcode: h.opcode,
                mask: h.mask,
                compressed,
                offset: raw.offset,
                payload: Vec::new(),
                len: 0,
                frames: 0,
                // Compressed text is judged once inflated.
                utf8: (h.opcode == OpCode::Text && !compressed).then(Utf8Stream::new),
                notes: Vec::new(),
            });
        }
        let fr = st.frag.as_mut().expect("fragment just opened");
        fr.frames = fr.frames.saturating_add(1);
        let before = fr.len;
        // Declared lengths come from the wire: two of them can overflow a u64.
        fr.len = fr.len.saturating_add(h.payload_len);
        if fr.len > cfg.max_message && before <= cfg.max_message && !raw.skipped {
            let n = Note::error(
                Code::MessageTooBig,
                "RFC 6455 10.4",
                format!(
                    "message reached {} bytes, over the {}-byte limit",
                    fr.len, cfg.max_message
                ),
            );
            notes.push(n.clone());
            fr.notes.push(n);
        }
        if !raw.skipped && fr.len <= cfg.max_message {
            fr.payload.extend_from_slice(&raw.payload);
        }
        if let Some(u) = fr.utf8.as_mut() {
            let res = if raw.skipped {
                Ok(())
            } else if h.fin {
                u.push(&raw.payload).and_then(|_| u.finish())
            } else {
                u.push(&raw.payload)
            };
            if let Err(pos) = res {
                if !fr.notes.iter().any(|n| n.code == Code::TextInvalidUtf8) {
                    let n = Note::error(
                        Code::TextInvalidUtf8,
                        "RFC 6455 8.1",
                        format!("text message is not valid UTF-8 at message byte {pos}"),
                    );
                    notes.push(n.clone());
                    fr.notes.push(n);
                }
            }
        }
        if h.fin {
            let fr = st.frag.take().expect("fragment open");
            message = Some((
                fr.offset,
                finish_message(fr, dir, cfg, &mut st.pending_json, st.inflater.as_mut()),
            ));
        }
    }
    st.last_data_final = h.fin;
    message
}

/// The note that names a bad length's cause; `next_at` is the stream offset
/// where the real next frame starts.
/// A length that reads as an address in a microcontroller's memory map:
/// the region's name.
fn address_region(len: u64) -> Option<&'static str> {
    match len {
        0x3FF0_0000..=0x3FFF_FFFF => {
            Some("an ESP32's or ESP8266's internal data RAM (0x3FF0_0000-0x3FFF_FFFF)")
        }
        0x3FC8_0000..=0x3FCF_FFFF => {
            Some("an ESP32-S3's or ESP32-C3's internal data RAM (0x3FC8_0000-0x3FCF_FFFF)")
        }
        0x4000_0000..=0x400F_FFFF => {
            Some("an ESP32's instruction RAM or ROM (0x4000_0000-0x400F_FFFF)")
        }
        0x2000_0000..=0x2007_FFFF => {
            Some("a Cortex-M microcontroller's SRAM (0x2000_0000-0x2007_FFFF)")
        }
        _ => None,
    }
}

fn length_note(h: &FrameHeader, cause: &diagnose::LengthCause, next_at: u64, resync: bool) -> Note {
    let then = if resync {
        "; decoding resumes there (--resync)"
    } else {
        "; --resync decodes on from there"
    };
    match cause {
        diagnose::LengthCause::ByteOrder { swapped } => Note::info(
            Code::HintLengthByteOrder,
            "RFC 6455 5.2",
            format!(
                "the {}-bit length reads {} but its bytes swapped give {swapped}, which fits what follows (the next frame starts at byte {next_at}): the firmware wrote the length little-endian where network byte order is required{then}",
                h.len_encoding.bits(),
                h.payload_len
            ),
        ),
        diagnose::LengthCause::NotALength { fits } => Note::info(
            Code::HintLengthNotALength,
            "RFC 6455 5.2",
            match address_region(h.payload_len) {
                Some(region) => format!(
                    "the declared length {} (0x{:X}) is an address in {region}, not a length: a complete frame header starts at byte {next_at}, right after a {fits}-byte payload, so the payload was {fits} bytes and the firmware wrote a pointer where its length belongs (a known ESP32 server bug){then}",
                    h.payload_len, h.payload_len
                ),
                None => format!(
                    "the declared length {} does not fit what follows; a plausible frame header starts at byte {next_at}, {fits} bytes into the payload, so a length of {fits} would have fitted: the length field may hold a pointer, a buffer size or a miscounted length{then}",
                    h.payload_len
                ),
            },
        ),
    }
}

fn finish_message(
    mut fr: Fragment,
    dir: Direction,
    cfg: Config,
    pending_json: &mut Option<String>,
    inflater: Option<&mut crate::wire::deflate::Inflater>,
) -> MessageEvent {
    let compressed_len = inflate_message(&mut fr, cfg, inflater);
    // A compressed message that did not inflate is no text to judge.
    let readable = !fr.compressed || compressed_len.is_some();
    let mut notes = fr.notes;
    let mut text = None;
    let mut km = None;
    // The Kinetid layer's notes come after any diagnosis of the text.
    let mut kin_notes = Vec::new();
    if fr.opcode == OpCode::Text
        && readable
        && !notes.iter().any(|n| n.code == Code::TextInvalidUtf8)
        && fr.len <= cfg.max_message
    {
        let s = String::from_utf8(fr.payload.clone()).unwrap_or_default();
        if cfg.kinetid {
            // Text that is not a JSON object at all is someone else's protocol:
            // shown as text, not judged. The exception is the tail of a JSON
            // object that an earlier message left open.
            let looks_json = s.trim_start().starts_with('{');
            let joined = pending_json.take().map(|prev| format!("{prev}{s}"));
            let j = joined.as_ref().map(|t| (t, kinetid::decode(t, dir)));
            match j {
                Some((_, jd)) if jd.msg.is_some() => {
                    kin_notes.push(Note::info(
                        Code::HintFinEveryFragment,
                        "RFC 6455 5.4",
                        "this message completes the JSON of the previous one: the sender set FIN on every fragment and repeated the opcode instead of using continuation frames (a firmware bug)",
                    ));
                    km = jd.msg;
                }
                Some((t, jd))
                    if jd.incomplete_json && !looks_json && t.len() < kinetid::MAX_MESSAGE =>
                {
                    *pending_json = Some(t.clone());
                }
                _ if looks_json => {
                    let d = kinetid::decode(&s, dir);
                    if d.incomplete_json && s.len() < kinetid::MAX_MESSAGE {
                        *pending_json = Some(s.clone());
                    }
                    kin_notes.extend(d.notes);
                    km = d.msg;
                }
                _ => {}
            }
        }
        text = Some(s);
    }
    if fr.opcode == OpCode::Text && fr.len <= cfg.max_message && readable {
        let mask = fr.mask.filter(|_| fr.frames == 1 && !fr.compressed);
        let not_json = kin_notes.iter().any(|n| n.code == Code::KinetidNotJson);
        if let Some(n) = diagnose_text(&fr.payload, mask, &notes, not_json, dir, cfg) {
            notes.push(n);
        }
    }
    notes.extend(kin_notes);
    MessageEvent {
        opcode: fr.opcode,
        len: fr.len,
        frames: fr.frames,
        payload: fr.payload,
        text,
        kinetid: km,
        notes,
        compressed_len,
    }
}

/// The first data message of a connection nobody said was Kinetid: is it
/// a Kinetid message (a JSON object whose `t` names one)? When it is not,
/// what the Kinetid layer made of it is taken back and a note says why
/// the connection is shown as plain WebSocket.
fn decide_kinetid(m: &mut MessageEvent) -> bool {
    let is_kinetid = m
        .kinetid
        .as_ref()
        .is_some_and(|k| kinetid::is_message_type(&k.t));
    if !is_kinetid {
        m.kinetid = None;
        m.notes.retain(|n| !n.code.as_str().starts_with("kinetid-"));
        m.notes.push(Note::info(
            Code::NotKinetid,
            "kinetid v1",
            format!(
                "not Kinetid traffic: the client did not offer {} and the connection's first message is no Kinetid message, so its messages are shown as plain WebSocket (--kinetid judges them as Kinetid all the same)",
                crate::wire::handshake::KINETID_PROTOCOL
            ),
        ));
    }
    is_kinetid
}

/// A compressed message, inflated in place (bounded by the message limit);
/// returns its size on the wire. Text is judged once inflated.
fn inflate_message(
    fr: &mut Fragment,
    cfg: Config,
    inflater: Option<&mut crate::wire::deflate::Inflater>,
) -> Option<u64> {
    let inflater = inflater.filter(|_| fr.compressed && fr.len <= cfg.max_message)?;
    match inflater.inflate(&fr.payload, cfg.max_message) {
        Ok(p) => {
            let wire = fr.len;
            fr.payload = p;
            fr.len = fr.payload.len() as u64;
            if fr.opcode == OpCode::Text {
                if let Err(e) = std::str::from_utf8(&fr.payload) {
                    fr.notes.push(Note::error(
                        Code::TextInvalidUtf8,
                        "RFC 6455 8.1",
                        format!(
                            "text message is not valid UTF-8 at message byte {} (inflated)",
                            e.valid_up_to()
                        ),
                    ));
                }
            }
            Some(wire)
        }
        Err(crate::wire::deflate::InflateError::Invalid { at, why }) => {
            fr.notes.push(Note::error(
                Code::DeflateInvalid,
                "RFC 7692 7.2.2",
                format!("the compressed message does not inflate: {why}, after {at} of its {} compressed bytes (a sender that compressed with another window or context than agreed, or not at all)", fr.len),
            ));
            None
        }
        Err(crate::wire::deflate::InflateError::TooBig { limit }) => {
            fr.notes.push(Note::error(
                Code::MessageTooBig,
                "RFC 6455 10.4",
                format!("the message inflates past the {limit}-byte limit (inflating stopped there: a deflate bomb costs no more)"),
            ));
            None
        }
    }
}

/// Text that is what it is meant to be: valid UTF-8 and, for Kinetid,
/// a JSON value when it looks like one.
fn meant_ok(b: &[u8], kinetid_json: bool) -> bool {
    match std::str::from_utf8(b) {
        Err(_) => false,
        Ok(t) => !kinetid_json || serde_json::from_str::<serde_json::Value>(t).is_ok(),
    }
}

/// The Kinetid reading of text, for a hint ("it reads: ...").
fn reading(t: &str, dir: Direction) -> String {
    match kinetid::decode(t, dir).msg {
        Some(m) if !m.t.is_empty() => format!(": {}", m.summary),
        _ => String::new(),
    }
}

/// Why a text message is not the text (or JSON) it should be: a mask
/// applied wrongly, a C string, Latin-1, two JSON messages in one.
/// `mask` is the key of a single-frame masked message; `not_json` says the
/// Kinetid layer could not parse it (the parse is not repeated unless so).
fn diagnose_text(
    payload: &[u8],
    mask: Option<MaskKey>,
    notes: &[Note],
    not_json: bool,
    dir: Direction,
    cfg: Config,
) -> Option<Note> {
    let invalid_utf8 = notes.iter().any(|n| n.code == Code::TextInvalidUtf8);
    if !invalid_utf8 && !not_json {
        return None;
    }
    let utf8 = std::str::from_utf8(payload);
    let looks_json = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let json_err = match &utf8 {
        Ok(t) if not_json => serde_json::from_str::<serde_json::Value>(t).err(),
        _ => None,
    };
    if let Some(key) = mask {
        let mut masked = payload.to_vec();
        apply_mask(&mut masked, key.0);
        let bad_at = match (&utf8, &json_err) {
            (Err(e), _) => e.valid_up_to(),
            (Ok(_), Some(e)) => e.column().saturating_sub(1).min(payload.len()),
            _ => payload.len(),
        };
        let kj = cfg.kinetid && (looks_json || masked.first() == Some(&b'{'));
        if let Some(cause) = diagnose::mask_cause(&masked, key, bad_at, |b| meant_ok(b, kj)) {
            return Some(mask_note(&masked, key, &cause, dir));
        }
    }
    let nuls = diagnose::trailing_nuls(payload);
    if let (Ok(t), true) = (&utf8, nuls > 0) {
        let trimmed = &t[..t.len() - nuls];
        if meant_ok(trimmed.as_bytes(), cfg.kinetid && looks_json) {
            let what = if nuls == 1 {
                "one NUL byte: the firmware sent strlen + 1 bytes, the C string's terminator included".to_string()
            } else {
                format!(
                    "{nuls} NUL bytes: the firmware sent its whole {}-byte buffer instead of the string's length",
                    payload.len()
                )
            };
            return Some(Note::info(
                Code::HintCString,
                "RFC 6455 5.6",
                format!(
                    "the text ends in {what}; without them it reads{}",
                    reading(trimmed, dir)
                ),
            ));
        }
    }
    if invalid_utf8 {
        if let Some(meant) = diagnose::as_latin1(payload) {
            return Some(Note::info(
                Code::HintLatin1,
                "RFC 6455 8.1",
                format!("the bytes that are not UTF-8 read as ISO-8859-1 / Windows-1252: the firmware sent a Latin-1 string (a degree sign, an umlaut) where UTF-8 is required; as meant: {meant:?}"),
            ));
        }
    }
    if let (Ok(t), Some(_)) = (&utf8, &json_err) {
        if let Some(starts) = diagnose::json_concatenated(t) {
            let mut cuts = vec![0];
            cuts.extend(&starts);
            cuts.push(t.len());
            let parts: Vec<String> = cuts
                .windows(2)
                .map(|w| format!("byte {}{}", w[0], reading(t[w[0]..w[1]].trim(), dir)))
                .collect();
            return Some(Note::info(
                Code::HintJsonConcat,
                "kinetid v1",
                format!(
                    "{} JSON messages in one WebSocket message (each must be a message of its own; the firmware appended to its send buffer before sending): {}",
                    parts.len(),
                    parts.join("; ")
                ),
            ));
        }
    }
    None
}

fn mask_note(masked: &[u8], key: MaskKey, cause: &diagnose::MaskCause, dir: Direction) -> Note {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match cause {
        diagnose::MaskCause::NotApplied => Note::info(
            Code::HintMaskNotApplied,
            "RFC 6455 5.3",
            format!(
                "MASK is set with key {} but the payload went out unmasked: the bytes as sent are the text, which reads{}",
                key.hex(),
                reading(&text(masked), dir)
            ),
        ),
        diagnose::MaskCause::Restart { at, periodic } => {
            let every = if *periodic {
                format!(" (and at every multiple of {at})")
            } else {
                String::new()
            };
            let meant: Vec<u8> = masked
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let j = if i < *at {
                        i
                    } else if *periodic {
                        i % at
                    } else {
                        i - at
                    };
                    b ^ key.0[j % 4]
                })
                .collect();
            Note::info(
                Code::HintMaskRestart,
                "RFC 6455 5.3",
                format!(
                    "the text goes wrong from payload byte {at}; unmasked with the key index starting again at 0 there{every}, it is valid and reads{}: the firmware masks each write buffer from key byte 0 instead of continuing the key across the frame",
                    reading(&text(&meant), dir)
                ),
            )
        }
        diagnose::MaskCause::OtherKey { used } => {
            let diff: Vec<u8> = (0..4).map(|i| used[i] ^ key.0[i]).collect();
            let rot = diagnose::rotation_of(*used, key.0)
                .map(|r| format!(" (the header's key rotated by {r} bytes)"))
                .unwrap_or_default();
            let mut fixed = masked.to_vec();
            apply_mask(&mut fixed, *used);
            Note::info(
                Code::HintMaskKeyMismatch,
                "RFC 6455 5.3",
                format!(
                    "the header says key {} but the payload was masked with {}{rot}, a constant XOR difference of {}; unmasked with it, it reads{}",
                    key.hex(),
                    MaskKey(*used).hex(),
                    hex::encode(diff),
                    reading(&text(&fixed), dir)
                ),
            )
        }
    }
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
