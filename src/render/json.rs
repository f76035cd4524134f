//! JSON lines written straight into a buffer, field by field, from the
//! borrowed event: no `serde_json::Value` tree, no map, no copy of a
//! payload. The bytes are the same as serialising [`Printer::json`]'s
//! value (a test checks every fixture's events, and the fuzz check every
//! input), so the schema has one definition to read and one fast path.
//!
//! [`Printer::json`]: super::Printer::json

use crate::annotate::{Event, EventKind, FrameEvent, MessageEvent};
use crate::note::Note;
use crate::wire::handshake::{Check, HttpHead};

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// One JSON object being written: keys are static ASCII, values go through
/// the helpers below.
struct Obj<'a> {
    b: &'a mut Vec<u8>,
    n: usize,
}

impl<'a> Obj<'a> {
    fn new(b: &'a mut Vec<u8>) -> Self {
        b.push(b'{');
        Obj { b, n: 0 }
    }

    #[inline(always)]
    fn key(&mut self, k: &str) -> &mut Vec<u8> {
        if self.n > 0 {
            self.b.push(b',');
        }
        self.n += 1;
        self.b.push(b'"');
        self.b.extend_from_slice(k.as_bytes());
        self.b.extend_from_slice(b"\":");
        self.b
    }

    #[inline(always)]
    fn str(&mut self, k: &str, v: &str) {
        str(self.key(k), v);
    }

    #[inline(always)]
    fn opt_str(&mut self, k: &str, v: Option<&str>) {
        match v {
            Some(v) => self.str(k, v),
            None => self.key(k).extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    fn u64(&mut self, k: &str, v: u64) {
        u64(self.key(k), v);
    }

    #[inline(always)]
    fn opt_u64(&mut self, k: &str, v: Option<u64>) {
        match v {
            Some(v) => self.u64(k, v),
            None => self.key(k).extend_from_slice(b"null"),
        }
    }

    #[inline(always)]
    fn bool(&mut self, k: &str, v: bool) {
        self.key(k)
            .extend_from_slice(if v { b"true" } else { b"false" });
    }

    #[inline(always)]
    fn hex(&mut self, k: &str, v: &[u8]) {
        hex(self.key(k), v);
    }

    fn end(self) {
        self.b.push(b'}');
    }
}

/// A JSON string, escaped as serde_json escapes it.
#[inline(always)]
fn str(b: &mut Vec<u8>, s: &str) {
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *b, s);
}

#[inline(always)]
fn u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
}

#[inline(always)]
fn hex(b: &mut Vec<u8>, v: &[u8]) {
    b.reserve(v.len() * 2 + 2);
    b.push(b'"');
    for &x in v {
        b.push(HEX_DIGITS[(x >> 4) as usize]);
        b.push(HEX_DIGITS[(x & 15) as usize]);
    }
    b.push(b'"');
}

fn str_array(b: &mut Vec<u8>, v: &[String]) {
    b.push(b'[');
    for (i, s) in v.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        str(b, s);
    }
    b.push(b']');
}

fn notes(b: &mut Vec<u8>, notes: &[Note]) {
    b.push(b'[');
    for (i, n) in notes.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let mut o = Obj::new(b);
        o.str("severity", n.severity.as_str());
        o.str("code", n.code.as_str());
        o.str("rfc", n.rfc);
        o.str("message", &n.message);
        o.end();
    }
    b.push(b']');
}

fn checks(b: &mut Vec<u8>, c: &[Check]) {
    b.push(b'[');
    for (i, c) in c.iter().enumerate() {
        if i > 0 {
            b.push(b',');
        }
        let mut o = Obj::new(b);
        o.str("name", c.name);
        o.bool("ok", c.ok);
        o.str("detail", &c.detail);
        o.str("rfc", c.rfc);
        o.end();
    }
    b.push(b']');
}

fn head(b: &mut Vec<u8>, h: &HttpHead) {
    let mut o = Obj::new(b);
    o.str("start_line", &h.start_line);
    let a = o.key("headers");
    a.push(b'[');
    for (i, h) in h.headers.iter().enumerate() {
        if i > 0 {
            a.push(b',');
        }
        a.push(b'[');
        str(a, &h.name);
        a.push(b',');
        str(a, &h.value);
        a.push(b']');
    }
    a.push(b']');
    o.u64("len", h.len as u64);
    o.end();
}

/// Append one event as a JSON line (with its newline) to `b`.
pub fn event(b: &mut Vec<u8>, e: &Event) {
    let mut o = Obj::new(b);
    o.str("type", type_name(&e.kind));
    o.u64("conn", e.conn);
    o.str("dir", e.dir.as_str());
    o.u64("offset", e.offset);
    if let Some(t) = e.time {
        let _ = serde_json::to_writer(&mut *o.key("time"), &t);
    }
    if let Some(p) = e.pkt {
        o.u64("pkt", p);
    }
    match &e.kind {
        EventKind::Open { peer } => o.str("peer", peer),
        EventKind::Request {
            head: h,
            kind,
            verdict,
        } => {
            head(o.key("head"), h);
            o.bool(
                "websocket",
                matches!(kind, crate::wire::handshake::RequestKind::WebSocket),
            );
            if let Some(vd) = verdict {
                o.u64("status", u64::from(vd.status));
                o.str("method", &vd.method);
                o.str("target", &vd.target);
                checks(o.key("checks"), &vd.checks);
                o.opt_str("failure", vd.failure.as_deref());
                str_array(o.key("offered_protocols"), &vd.offered_protocols);
                o.opt_str("protocol", vd.protocol.as_deref());
                str_array(o.key("offered_extensions"), &vd.offered_extensions);
                if let Some(a) = &vd.accept {
                    let mut ao = Obj::new(o.key("accept"));
                    ao.str("key", &a.key);
                    ao.str("concatenated", &a.concatenated);
                    ao.str("sha1_hex", &a.sha1_hex);
                    ao.str("accept", &a.accept);
                    ao.end();
                }
            }
        }
        EventKind::Response { head: h, verdict } => {
            head(o.key("head"), h);
            o.u64("status", u64::from(verdict.status));
            checks(o.key("checks"), &verdict.checks);
            match &verdict.error {
                Some(err) => o.str("error", &err.to_string()),
                None => o.opt_str("error", None),
            }
            o.opt_str("protocol", verdict.protocol.as_deref());
        }
        EventKind::HeadError(he) => {
            o.u64("status", u64::from(he.status));
            o.str("reason", &he.reason);
        }
        EventKind::Frame(f) => frame(&mut o, f),
        EventKind::Message(m) => message(&mut o, m),
        EventKind::Unparsed {
            bytes,
            preview,
            why,
        } => {
            o.u64("bytes", *bytes);
            o.hex("preview_hex", preview);
            o.str("why", why);
        }
        EventKind::End {
            frames_c2s,
            frames_s2c,
            notes: n,
        } => {
            o.u64("frames_c2s", *frames_c2s);
            o.u64("frames_s2c", *frames_s2c);
            notes(o.key("notes"), n);
        }
        EventKind::Notice { note } => notes(o.key("notes"), std::slice::from_ref(note)),
    }
    o.end();
    b.push(b'\n');
}

/// The `type` of an event's JSON form.
pub fn type_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::Open { .. } => "open",
        EventKind::Request { .. } => "request",
        EventKind::Response { .. } => "response",
        EventKind::HeadError(_) => "head_error",
        EventKind::Frame(_) => "frame",
        EventKind::Message(_) => "message",
        EventKind::Unparsed { .. } => "unparsed",
        EventKind::End { .. } => "end",
        EventKind::Notice { .. } => "note",
    }
}

fn frame(o: &mut Obj<'_>, f: &FrameEvent) {
    let h = &f.header;
    o.u64("index", f.index);
    o.bool("fin", h.fin);
    o.bool("rsv1", h.rsv1);
    o.bool("rsv2", h.rsv2);
    o.bool("rsv3", h.rsv3);
    o.u64("opcode", u64::from(h.opcode.as_u8()));
    o.str("opcode_name", h.opcode.name());
    o.bool("masked", h.mask.is_some());
    o.u64("payload_len", h.payload_len);
    o.u64("len_encoding", u64::from(h.len_encoding.bits()));
    match h.mask {
        Some(k) => o.hex("mask_key", &k.0),
        None => o.opt_str("mask_key", None),
    }
    o.hex("header_hex", &f.head);
    o.hex("payload_hex", &f.payload);
    let text = if f.skipped {
        None
    } else {
        std::str::from_utf8(&f.payload).ok()
    };
    o.opt_str("payload_text", text);
    o.bool("skipped", f.skipped);
    let a = o.key("fields");
    a.push(b'[');
    for (i, x) in f.fields().iter().enumerate() {
        if i > 0 {
            a.push(b',');
        }
        let mut fo = Obj::new(a);
        fo.u64("offset", x.offset);
        fo.u64("len", x.len);
        fo.str("name", x.name);
        fo.str("raw", &x.raw);
        fo.str("meaning", &x.meaning);
        fo.end();
    }
    a.push(b']');
    notes(o.key("notes"), &f.notes);
    if let Some((c, r)) = &f.close {
        o.u64("close_code", u64::from(c.0));
        o.str("close_reason", r);
    }
    if let Some(missing) = f.truncated {
        o.bool("truncated", true);
        o.u64("missing_bytes", missing);
    }
}

fn message(o: &mut Obj<'_>, m: &MessageEvent) {
    o.u64("opcode", u64::from(m.opcode.as_u8()));
    o.str("opcode_name", m.opcode.name());
    o.u64("len", m.len);
    o.u64("frames", u64::from(m.frames));
    let text = m.text();
    o.opt_str("text", text);
    notes(o.key("notes"), &m.notes);
    if text.is_none() {
        o.hex("payload_hex", &m.payload);
    }
    if let Some(c) = m.compressed_len {
        o.u64("compressed_len", c);
    }
    if let Some(k) = &m.kinetid {
        let mut ko = Obj::new(o.key("kinetid"));
        ko.str("t", &k.t);
        ko.opt_u64("id", k.id);
        ko.opt_u64("re", k.re);
        ko.opt_str("dev", k.dev.as_deref());
        ko.str("summary", &k.summary);
        ko.end();
    }
}
