//! What the annotator produces: events, with their notes, and its settings.

use crate::kinetid;
use crate::note::Note;
use crate::wire::frame;
use crate::wire::frame::{CloseCode, Direction, Field, FrameHeader, OpCode};
use crate::wire::handshake::{
    ClientVerdict, HeadError, HttpHead, Limits, RequestKind, ServerVerdict,
};

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

/// A frame, annotated.
#[derive(Debug, Clone)]
pub struct FrameEvent {
    /// The header.
    pub header: FrameHeader,
    /// Header bytes as received.
    pub head: frame::HeadBytes,
    /// Unmasked payload (empty when skipped).
    pub payload: frame::Payload,
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
    /// The payload (truncated to the message limit); of a message in one
    /// frame, the frame's own.
    pub payload: frame::Payload,
    /// A text message whose payload is valid UTF-8 (and whole):
    /// [`MessageEvent::text`] reads it.
    pub valid_text: bool,
    /// The Kinetid reading, when decoded (boxed: a message without one,
    /// and every move of one, is the smaller for it).
    pub kinetid: Option<Box<kinetid::Message>>,
    /// Notes.
    pub notes: Vec<Note>,
    /// For a compressed message (permessage-deflate): its size on the
    /// wire; `payload` and `len` are the inflated message.
    pub compressed_len: Option<u64>,
}

impl MessageEvent {
    /// The text, for a text message that is valid UTF-8 and whole (the
    /// payload itself: the message is not stored twice).
    pub fn text(&self) -> Option<&str> {
        if !self.valid_text {
            return None;
        }
        std::str::from_utf8(&self.payload).ok()
    }
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
        /// The head (boxed, as every large part of an event is: events are
        /// moved several times on their way out, and most are frames).
        head: Box<HttpHead>,
        /// Plain or upgrade.
        kind: RequestKind,
        /// The checks, for upgrade requests.
        verdict: Option<Box<ServerVerdict>>,
    },
    /// An HTTP response head.
    Response {
        /// The head.
        head: Box<HttpHead>,
        /// Checked against the request's key.
        verdict: Box<ClientVerdict>,
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
    /// An event of connection `conn` in `dir` at stream `offset`, at `time`
    /// (not from a packet capture).
    pub fn at(conn: u64, dir: Direction, offset: u64, time: Option<f64>, kind: EventKind) -> Event {
        Event {
            conn,
            dir,
            offset,
            time,
            pkt: None,
            kind,
        }
    }

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

#[cfg(test)]
#[test]
fn an_event_stays_small() {
    // Moved several times a frame: its large parts live behind boxes.
    assert!(
        std::mem::size_of::<Event>() <= 112,
        "{}",
        std::mem::size_of::<Event>()
    );
}
