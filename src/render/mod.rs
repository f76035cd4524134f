//! Renderers: the same events as coloured text, JSON lines or one-line summaries.
//!
//! Every renderer writes to any `impl Write`, so tests render into a
//! `Vec<u8>` without colour. Rendering never changes what is shown, only how.

pub mod json;
mod summary;
mod text;

pub use json::event as json_line;

use crate::annotate::{Event, EventKind, FrameEvent, MessageEvent};
use crate::escape::Esc;
use crate::note::{Note, Severity};
use crate::wire::frame::{Direction, LenEncoding, OpCode};
use crate::wire::handshake::{Check, HttpHead, ServerVerdict};
use owo_colors::{OwoColorize, Style};
use serde_json::{json, Value};
use std::io::{self, Write};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
pub enum Format {
    /// Annotated hex dump, for people.
    Text,
    /// One JSON object per event and line, for programs.
    Json,
    /// One line per frame.
    Summary,
}

/// Renders events.
#[derive(Debug, Clone)]
pub struct Printer {
    /// Format.
    pub format: Format,
    /// Use ANSI colours.
    pub color: bool,
    /// Largest number of payload bytes shown in a hex dump (text format).
    pub max_dump: usize,
}

fn st(color: bool, s: Style) -> Style {
    if color {
        s
    } else {
        Style::new()
    }
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::C2S => "device->server",
        Direction::S2C => "server->device",
    }
}

/// Does a note list contain an error?
fn sev_style(color: bool, s: Severity) -> Style {
    st(
        color,
        match s {
            Severity::Error => Style::new().red().bold(),
            Severity::Warning => Style::new().yellow().bold(),
            Severity::Info => Style::new().cyan(),
        },
    )
}

fn time_str(t: Option<f64>) -> Time {
    Time(t, None)
}

/// ` t=SECONDS` when the time is known and ` pkt=N` when the packet of a
/// packet capture is, written when shown.
struct Time(Option<f64>, Option<u64>);

impl std::fmt::Display for Time {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(t) = self.0 {
            write!(f, " t={t:.6}")?;
        }
        if let Some(p) = self.1 {
            write!(f, " pkt={p}")?;
        }
        Ok(())
    }
}

/// `[CONN] ARROW`, the lead of an event's first line.
struct Lead(u64, &'static str);

impl std::fmt::Display for Lead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.0, self.1)
    }
}

/// A left column of the header dump: built on the stack, padded to 26.
struct Cell {
    buf: [u8; 32],
    len: usize,
}

impl Cell {
    const WIDTH: usize = 26;

    fn new() -> Cell {
        Cell {
            buf: [b' '; 32],
            len: 0,
        }
    }

    fn push(&mut self, b: u8) {
        if self.len < self.buf.len() {
            self.buf[self.len] = b;
            self.len += 1;
        }
    }

    fn hex(&mut self, x: u8) {
        self.push(HEX_DIGITS[(x >> 4) as usize]);
        self.push(HEX_DIGITS[(x & 15) as usize]);
    }

    /// `xx = bbbbbbbb`: a byte in hex and in bits.
    fn bits(b: u8) -> Cell {
        let mut c = Cell::new();
        c.hex(b);
        for x in b" = " {
            c.push(*x);
        }
        for k in (0..8).rev() {
            c.push(b'0' + ((b >> k) & 1));
        }
        c
    }

    /// Bytes in hex, a space between them.
    fn hex_spaced(b: &[u8]) -> Cell {
        let mut c = Cell::new();
        for (i, &x) in b.iter().enumerate() {
            if i > 0 {
                c.push(b' ');
            }
            c.hex(x);
        }
        c
    }
}

impl std::fmt::Display for Cell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let end = self.len.max(Cell::WIDTH).min(self.buf.len());
        f.write_str(std::str::from_utf8(&self.buf[..end]).unwrap_or(""))
    }
}

/// Printable text of bytes: ASCII as is, the rest as dots.
fn ascii(b: &[u8]) -> String {
    b.iter()
        .map(|&c| {
            if (0x20..0x7f).contains(&c) {
                c as char
            } else {
                '.'
            }
        })
        .collect()
}

fn notes_json(notes: &[Note]) -> Value {
    Value::Array(notes.iter().map(|n| json!({"severity": n.severity.as_str(), "code": n.code, "rfc": n.rfc, "message": n.message})).collect())
}

fn checks_json(c: &[Check]) -> Value {
    Value::Array(
        c.iter()
            .map(|c| json!({"name": c.name, "ok": c.ok, "detail": c.detail, "rfc": c.rfc}))
            .collect(),
    )
}

fn head_json(h: &HttpHead) -> Value {
    json!({
        "start_line": h.start_line,
        "headers": h.headers.iter().map(|h| json!([h.name, h.value])).collect::<Vec<_>>(),
        "len": h.len,
    })
}

impl Printer {
    /// Write one event.
    pub fn event(&self, w: &mut dyn Write, e: &Event) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let mut b = Vec::with_capacity(1024);
                json::event(&mut b, e);
                w.write_all(&b)
            }
            Format::Text => self.text(w, e),
            Format::Summary => self.summary(w, e),
        }
    }

    /// The JSON form of an event.
    pub fn json(&self, e: &Event) -> Value {
        let mut v = match &e.kind {
            EventKind::Open { peer } => json!({"type": "open", "peer": peer}),
            EventKind::Request {
                head,
                kind,
                verdict,
            } => {
                let mut v = json!({"type": "request", "head": head_json(head), "websocket": matches!(kind, crate::wire::handshake::RequestKind::WebSocket)});
                if let Some(vd) = verdict {
                    v["status"] = json!(vd.status);
                    v["method"] = json!(vd.method);
                    v["target"] = json!(vd.target);
                    v["checks"] = checks_json(&vd.checks);
                    v["failure"] = json!(vd.failure);
                    v["offered_protocols"] = json!(vd.offered_protocols);
                    v["protocol"] = json!(vd.protocol);
                    v["offered_extensions"] = json!(vd.offered_extensions);
                    if let Some(a) = &vd.accept {
                        v["accept"] = json!({"key": a.key, "concatenated": a.concatenated, "sha1_hex": a.sha1_hex, "accept": a.accept});
                    }
                }
                v
            }
            EventKind::Response { head, verdict } => json!({
                "type": "response",
                "head": head_json(head),
                "status": verdict.status,
                "checks": checks_json(&verdict.checks),
                "error": verdict.error.as_ref().map(|e| e.to_string()),
                "protocol": verdict.protocol,
            }),
            EventKind::HeadError(he) => {
                json!({"type": "head_error", "status": he.status, "reason": he.reason})
            }
            EventKind::Frame(f) => frame_json(f),
            EventKind::Message(m) => message_json(m),
            EventKind::Unparsed {
                bytes,
                preview,
                why,
            } => {
                json!({"type": "unparsed", "bytes": bytes, "preview_hex": hex::encode(preview), "why": why})
            }
            EventKind::End {
                frames_c2s,
                frames_s2c,
                notes,
            } => {
                json!({"type": "end", "frames_c2s": frames_c2s, "frames_s2c": frames_s2c, "notes": notes_json(notes)})
            }
            EventKind::Notice { note } => {
                json!({"type": "note", "notes": notes_json(std::slice::from_ref(note))})
            }
        };
        // Lead with what every event has, then the event's own fields.
        let mut o = serde_json::Map::new();
        let body = v.as_object_mut().expect("object");
        o.insert(
            "type".into(),
            body.shift_remove("type").unwrap_or(Value::Null),
        );
        o.insert("conn".into(), json!(e.conn));
        o.insert("dir".into(), json!(e.dir.as_str()));
        o.insert("offset".into(), json!(e.offset));
        if let Some(t) = e.time {
            o.insert("time".into(), json!(t));
        }
        if let Some(p) = e.pkt {
            o.insert("pkt".into(), json!(p));
        }
        o.extend(std::mem::take(body));
        Value::Object(o)
    }
}

fn frame_json(f: &FrameEvent) -> Value {
    let h = &f.header;
    let text = if f.skipped {
        None
    } else {
        std::str::from_utf8(&f.payload).ok()
    };
    let mut v = json!({
        "type": "frame",
        "index": f.index,
        "fin": h.fin,
        "rsv1": h.rsv1,
        "rsv2": h.rsv2,
        "rsv3": h.rsv3,
        "opcode": h.opcode.as_u8(),
        "opcode_name": h.opcode.name(),
        "masked": h.mask.is_some(),
        "payload_len": h.payload_len,
        "len_encoding": h.len_encoding.bits(),
        "mask_key": h.mask.map(|k| k.hex()),
        "header_hex": hex::encode(f.head),
        "payload_hex": hex::encode(&f.payload),
        "payload_text": text,
        "skipped": f.skipped,
        "fields": f.fields().iter().map(|x| json!({"offset": x.offset, "len": x.len, "name": x.name, "raw": x.raw, "meaning": x.meaning})).collect::<Vec<_>>(),
        "notes": notes_json(&f.notes),
    });
    if let Some((c, r)) = &f.close {
        v["close_code"] = json!(c.0);
        v["close_reason"] = json!(r);
    }
    if let Some(missing) = f.truncated {
        v["truncated"] = json!(true);
        v["missing_bytes"] = json!(missing);
    }
    v
}

fn message_json(m: &MessageEvent) -> Value {
    let mut v = json!({
        "type": "message",
        "opcode": m.opcode.as_u8(),
        "opcode_name": m.opcode.name(),
        "len": m.len,
        "frames": m.frames,
        "text": m.text(),
        "notes": notes_json(&m.notes),
    });
    if m.text().is_none() {
        v["payload_hex"] = json!(hex::encode(&m.payload));
    }
    if let Some(c) = m.compressed_len {
        v["compressed_len"] = json!(c);
    }
    if let Some(k) = &m.kinetid {
        v["kinetid"] =
            json!({"t": k.t, "id": k.id, "re": k.re, "dev": k.dev, "summary": k.summary});
    }
    v
}

/// Lower-case hex digits.
const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn hex_spaced(b: &[u8]) -> String {
    let mut s = String::with_capacity(b.len() * 3);
    for (i, x) in b.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push(HEX_DIGITS[(x >> 4) as usize] as char);
        s.push(HEX_DIGITS[(x & 15) as usize] as char);
    }
    s
}

/// `v` in lower-case hex, at least four digits.
fn push_hex4(line: &mut Vec<u8>, v: usize) {
    let digits = ((usize::BITS - v.leading_zeros()).div_ceil(4) as usize).max(4);
    for k in (0..digits).rev() {
        line.push(HEX_DIGITS[(v >> (4 * k)) & 15]);
    }
}

/// A classic 16-bytes-a-line hex dump, built in one buffer a line.
fn dump(w: &mut dyn Write, b: &[u8], indent: &str, show_ascii: bool) -> io::Result<()> {
    dump_with(w, b, indent, show_ascii, [0; 4])
}

/// [`dump`] of the bytes XORed with a masking key as they go (the payload
/// as sent, from the unmasked one, without a copy); all lines in one write.
fn dump_with(
    w: &mut dyn Write,
    b: &[u8],
    indent: &str,
    show_ascii: bool,
    key: [u8; 4],
) -> io::Result<()> {
    let mut out = Vec::with_capacity(b.len().div_ceil(16) * (indent.len() + 80));
    for (i, chunk) in b.chunks(16).enumerate() {
        out.extend_from_slice(indent.as_bytes());
        push_hex4(&mut out, i * 16);
        // The rest of the line on the stack: 2 + 16 * 3 + 1 hex column,
        // then ` |` + 16 + `|` + newline.
        let mut line = [b' '; 72];
        let mut n = 2;
        for (j, &x) in chunk.iter().enumerate() {
            let x = x ^ key[j % 4];
            if j == 8 {
                n += 1;
            }
            line[n] = HEX_DIGITS[(x >> 4) as usize];
            line[n + 1] = HEX_DIGITS[(x & 15) as usize];
            n += 3;
        }
        if show_ascii {
            let mut n = 2 + 49;
            line[n + 1] = b'|';
            n += 2;
            for (j, &x) in chunk.iter().enumerate() {
                let c = x ^ key[j % 4];
                line[n] = if (0x20..0x7f).contains(&c) { c } else { b'.' };
                n += 1;
            }
            line[n] = b'|';
            line[n + 1] = b'\n';
            out.extend_from_slice(&line[..n + 2]);
        } else {
            line[n - 1] = b'\n';
            out.extend_from_slice(&line[..n]);
        }
    }
    w.write_all(&out)
}
