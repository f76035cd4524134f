//! Renderers: the same events as coloured text, JSON lines or one-line summaries.
//!
//! Every renderer writes to any `impl Write`, so tests render into a
//! `Vec<u8>` without colour. Rendering never changes what is shown, only how.

pub mod json;

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

    fn notes_text(&self, w: &mut dyn Write, notes: &[Note], indent: &str) -> io::Result<()> {
        for n in notes {
            let mark = match n.severity {
                Severity::Error => "x",
                Severity::Warning => "!",
                Severity::Info => "i",
            };
            writeln!(
                w,
                "{indent}{} {} [{}] {}: {}",
                mark.style(sev_style(self.color, n.severity)),
                n.severity.style(sev_style(self.color, n.severity)),
                n.code,
                n.rfc,
                Esc(&n.message)
            )?;
        }
        Ok(())
    }

    fn text(&self, w: &mut dyn Write, e: &Event) -> io::Result<()> {
        let c = self.color;
        let dim = st(c, Style::new().dimmed());
        let arrow = st(
            c,
            if e.dir == Direction::C2S {
                Style::new().green().bold()
            } else {
                Style::new().blue().bold()
            },
        );
        let lead = Lead(e.conn, e.dir.arrow());
        match &e.kind {
            EventKind::Open { peer } => writeln!(
                w,
                "{} connection opened from {}{}",
                format!("[{}] ==", e.conn).style(arrow),
                Esc(peer),
                Time(e.time, e.pkt).style(dim)
            ),
            EventKind::Request { head, verdict, .. } => {
                let title = format!("{} HTTP request, {} bytes", lead.style(arrow), head.len);
                self.head_text(w, &title, head, e.time)?;
                self.verdict_text(w, verdict.as_deref())
            }
            EventKind::Response { head, verdict } => {
                let title = format!("{} HTTP response, {} bytes", lead.style(arrow), head.len);
                self.head_text(w, &title, head, e.time)?;
                for ch in &verdict.checks {
                    let mark = if ch.ok {
                        "ok  ".style(st(c, Style::new().green())).to_string()
                    } else {
                        "FAIL".style(st(c, Style::new().red().bold())).to_string()
                    };
                    writeln!(w, "    {mark} {:<22} {}", ch.name, Esc(&ch.detail))?;
                }
                if let Some(err) = &verdict.error {
                    writeln!(
                        w,
                        "  {} {}",
                        "client would refuse:".style(st(c, Style::new().red().bold())),
                        Esc(&err.to_string())
                    )?;
                }
                Ok(())
            }
            EventKind::HeadError(he) => {
                writeln!(
                    w,
                    "{} malformed HTTP head{}",
                    lead.style(arrow),
                    Time(e.time, e.pkt).style(dim)
                )?;
                writeln!(
                    w,
                    "  {} byte {}: {} (answer: HTTP {})",
                    "x error".style(sev_style(c, Severity::Error)),
                    he.offset,
                    Esc(&he.reason),
                    he.status
                )
            }
            EventKind::Frame(f) => self.frame_text(w, e, f),
            EventKind::Message(m) => self.message_text(w, e, m),
            EventKind::Unparsed {
                bytes,
                preview,
                why,
            } => {
                writeln!(
                    w,
                    "{} {bytes} bytes not decoded from byte {} ({why})",
                    lead.style(arrow),
                    e.offset
                )?;
                writeln!(
                    w,
                    "    first bytes: {} |{}|",
                    hex_spaced(preview),
                    ascii(preview)
                )
            }
            EventKind::End {
                frames_c2s,
                frames_s2c,
                notes,
            } => {
                writeln!(w, "{} connection ended: {frames_c2s} frames device->server, {frames_s2c} frames server->device{}", format!("[{}] ==", e.conn).style(arrow), Time(e.time, e.pkt).style(dim))?;
                self.notes_text(w, notes, "  ")
            }
            EventKind::Notice { note } => {
                writeln!(
                    w,
                    "{} note{}",
                    format!("[{}] ==", e.conn).style(arrow),
                    Time(e.time, e.pkt).style(dim)
                )?;
                self.notes_text(w, std::slice::from_ref(note), "  ")
            }
        }
    }

    /// The checks and the accept-key derivation of an upgrade request.
    fn verdict_text(&self, w: &mut dyn Write, verdict: Option<&ServerVerdict>) -> io::Result<()> {
        let c = self.color;
        match verdict {
            None => writeln!(
                w,
                "    plain HTTP request (no Upgrade header): not a WebSocket handshake"
            ),
            Some(v) => {
                writeln!(w, "  checks (RFC 6455 4.2.1):")?;
                for ch in &v.checks {
                    let mark = if ch.ok {
                        "ok  ".style(st(c, Style::new().green())).to_string()
                    } else {
                        "FAIL".style(st(c, Style::new().red().bold())).to_string()
                    };
                    writeln!(w, "    {mark} {:<22} {}", ch.name, Esc(&ch.detail))?;
                }
                if !v.offered_protocols.is_empty() {
                    writeln!(
                        w,
                        "    subprotocols offered: {}; listen would select: {}",
                        Esc(&v.offered_protocols.join(", ")),
                        Esc(v
                            .protocol
                            .as_deref()
                            .unwrap_or("none (it speaks kinetid.v1)"))
                    )?;
                }
                if !v.offered_extensions.is_empty() {
                    writeln!(
                        w,
                        "    extensions offered: {}; listen would accept: {}",
                        Esc(&v.offered_extensions.join(", ")),
                        Esc(v.extension.as_deref().unwrap_or("none"))
                    )?;
                }
                if let Some(a) = &v.accept {
                    writeln!(w, "  accept key (RFC 6455 4.2.2):")?;
                    writeln!(w, "    key            {}", Esc(&a.key))?;
                    writeln!(w, "    key + GUID     {}", Esc(&a.concatenated))?;
                    writeln!(w, "    SHA-1          {}", a.sha1_hex)?;
                    writeln!(
                        w,
                        "    base64         {}",
                        a.accept.style(st(c, Style::new().bold()))
                    )?;
                }
                match &v.failure {
                    // What the request deserves, not what this server
                    // answered: that is the response event (a proxy's 502,
                    // a listener's 503 when full).
                    None => writeln!(
                        w,
                        "  verdict: {} (a server may answer 101 Switching Protocols)",
                        "valid request".style(st(c, Style::new().green().bold()))
                    ),
                    Some(f) => writeln!(
                        w,
                        "  verdict: {} (due: {} {}): {}",
                        "invalid request".style(st(c, Style::new().red().bold())),
                        v.status,
                        crate::wire::handshake::reason_phrase(v.status),
                        Esc(&f.to_string())
                    ),
                }
            }
        }
    }

    fn head_text(
        &self,
        w: &mut dyn Write,
        title: &str,
        head: &HttpHead,
        t: Option<f64>,
    ) -> io::Result<()> {
        let c = self.color;
        writeln!(
            w,
            "{title}{}",
            time_str(t).style(st(c, Style::new().dimmed()))
        )?;
        writeln!(
            w,
            "    {}",
            Esc(&head.start_line).style(st(c, Style::new().bold()))
        )?;
        for h in &head.headers {
            writeln!(
                w,
                "    {}: {}",
                Esc(&h.name).style(st(c, Style::new().cyan())),
                Esc(&h.value)
            )?;
        }
        Ok(())
    }

    fn frame_text(&self, w: &mut dyn Write, e: &Event, f: &FrameEvent) -> io::Result<()> {
        let c = self.color;
        let h = &f.header;
        let arrow = st(
            c,
            if e.dir == Direction::C2S {
                Style::new().green().bold()
            } else {
                Style::new().blue().bold()
            },
        );
        let dim = st(c, Style::new().dimmed());
        writeln!(
            w,
            "{} {} frame #{} at byte {}: {}{}{}, {} payload bytes{}{}",
            Lead(e.conn, e.dir.arrow()).style(arrow),
            dir_name(e.dir),
            f.index,
            e.offset,
            h.opcode.name().style(st(c, Style::new().bold())),
            if h.fin { ", FIN" } else { ", not final" },
            if h.mask.is_some() { ", masked" } else { "" },
            h.payload_len,
            f.truncated
                .map(|m| format!(" (truncated: {m} never arrived)"))
                .unwrap_or_default(),
            Time(e.time, e.pkt).style(dim)
        )?;
        let s0 = st(c, Style::new().magenta());
        let s1 = st(c, Style::new().yellow());
        let s2 = st(c, Style::new().cyan());
        let s3 = st(c, Style::new().green());
        let b0 = f.head[0];
        let b1 = f.head[1];
        writeln!(
            w,
            "    {} FIN={} RSV1={} RSV2={} RSV3={} opcode=0x{:X} ({})",
            Cell::bits(b0).style(s0),
            h.fin as u8,
            h.rsv1 as u8,
            h.rsv2 as u8,
            h.rsv3 as u8,
            b0 & 0x0f,
            h.opcode.name()
        )?;
        let len7 = b1 & 0x7f;
        writeln!(
            w,
            "    {} MASK={} length={}{}",
            Cell::bits(b1).style(s1),
            (b1 >> 7),
            len7,
            match h.len_encoding {
                LenEncoding::Bits7 => String::new(),
                LenEncoding::Bits16 => " (126: 16-bit length follows)".into(),
                LenEncoding::Bits64 => " (127: 64-bit length follows)".into(),
            }
        )?;
        let mut pos = 2;
        match h.len_encoding {
            LenEncoding::Bits7 => {}
            LenEncoding::Bits16 => {
                writeln!(
                    w,
                    "    {} extended length (16-bit) = {}",
                    Cell::hex_spaced(&f.head[2..4]).style(s2),
                    h.payload_len
                )?;
                pos = 4;
            }
            LenEncoding::Bits64 => {
                writeln!(
                    w,
                    "    {} extended length (64-bit) = {}",
                    Cell::hex_spaced(&f.head[2..10]).style(s2),
                    h.payload_len
                )?;
                pos = 10;
            }
        }
        if h.mask.is_some() {
            writeln!(
                w,
                "    {} masking key",
                Cell::hex_spaced(&f.head[pos..pos + 4]).style(s3)
            )?;
        }
        self.payload_text(w, f)?;
        self.notes_text(w, &f.notes, "  ")
    }

    /// The payload (masked as sent, unmasked) and the close code of a frame.
    fn payload_text(&self, w: &mut dyn Write, f: &FrameEvent) -> io::Result<()> {
        let h = &f.header;
        if f.skipped {
            writeln!(
                w,
                "    payload: {} bytes, over the limit: skipped, not stored",
                h.payload_len
            )?;
        } else if !f.payload.is_empty() {
            let shown = f.payload.len().min(self.max_dump);
            if let Some(k) = h.mask {
                writeln!(w, "    payload as sent (masked):")?;
                dump_with(w, &f.payload[..shown], "      ", false, k.0)?;
                writeln!(w, "    payload unmasked:")?;
            } else {
                writeln!(w, "    payload:")?;
            }
            dump(w, &f.payload[..shown], "      ", true)?;
            if shown < f.payload.len() {
                writeln!(
                    w,
                    "      ... {} more bytes (--max-dump)",
                    f.payload.len() - shown
                )?;
            }
        }
        if let Some((code, reason)) = &f.close {
            writeln!(
                w,
                "    close code {} ({}){}",
                code.0,
                code.meaning(),
                if reason.is_empty() {
                    String::new()
                } else {
                    format!(", reason {reason:?}")
                }
            )?;
        } else if h.opcode == OpCode::Close && f.payload.is_empty() {
            writeln!(w, "    close with no status code (the peer sees 1005)")?;
        }
        Ok(())
    }

    fn message_text(&self, w: &mut dyn Write, e: &Event, m: &MessageEvent) -> io::Result<()> {
        let c = self.color;
        let arrow = st(
            c,
            if e.dir == Direction::C2S {
                Style::new().green().bold()
            } else {
                Style::new().blue().bold()
            },
        );
        write!(
            w,
            "{} {} message, {} bytes",
            Lead(e.conn, e.dir.arrow()).style(arrow),
            m.opcode.name(),
            m.len
        )?;
        if m.frames > 1 {
            write!(w, " reassembled from {} frames", m.frames)?;
        }
        if let Some(c) = m.compressed_len {
            write!(
                w,
                " (inflated from {c} bytes, {:.0}% of its size)",
                100.0 * c as f64 / (m.len.max(1)) as f64
            )?;
        }
        w.write_all(b"\n")?;
        if let Some(k) = &m.kinetid {
            writeln!(
                w,
                "    {} {}",
                "kinetid:".style(st(c, Style::new().bold())),
                Esc(&k.summary).style(st(c, Style::new().bold()))
            )?;
        } else if let Some(t) = &m.text {
            let shown: String = t.chars().take(self.max_dump).collect();
            writeln!(
                w,
                "    text: {shown:?}{}",
                if shown.len() < t.len() { " ..." } else { "" }
            )?;
        } else if m.opcode == OpCode::Binary && m.frames > 1 {
            let shown = m.payload.len().min(self.max_dump);
            dump(w, &m.payload[..shown], "    ", true)?;
        }
        self.notes_text(w, &m.notes, "  ")
    }

    fn summary(&self, w: &mut dyn Write, e: &Event) -> io::Result<()> {
        let notes = |n: &[Note]| {
            if n.is_empty() {
                String::new()
            } else {
                format!(
                    " [{}]",
                    n.iter()
                        .map(|n| format!("{}:{}", n.severity, n.code))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            }
        };
        // Frames and messages are most of the lines: written piece by
        // piece, nothing built to be thrown away.
        match &e.kind {
            EventKind::Frame(f) => return summary_frame(w, e, f),
            EventKind::Message(m) => return summary_message(w, e, m),
            _ => {}
        }
        let p = format!("{} {} {:>8}", e.conn, e.dir.as_str(), e.offset);
        match &e.kind {
            EventKind::Open { peer } => writeln!(w, "{p} open {}", Esc(peer)),
            EventKind::Request { head, verdict, .. } => match verdict {
                Some(v) => writeln!(
                    w,
                    "{p} request {:?} {}",
                    head.start_line,
                    match &v.failure {
                        None => "valid".to_string(),
                        Some(f) => format!("invalid ({} due: {})", v.status, Esc(&f.to_string())),
                    }
                ),
                None => writeln!(w, "{p} request {:?} (plain HTTP)", head.start_line),
            },
            EventKind::Response { head, verdict } => writeln!(
                w,
                "{p} response {:?}{}",
                head.start_line,
                verdict
                    .error
                    .as_ref()
                    .map(|f| format!(" ({})", Esc(&f.to_string())))
                    .unwrap_or_default()
            ),
            EventKind::HeadError(he) => {
                writeln!(w, "{p} head-error {} {}", he.status, Esc(&he.reason))
            }
            EventKind::Frame(_) | EventKind::Message(_) => Ok(()),
            EventKind::Unparsed { bytes, why, .. } => {
                writeln!(w, "{p} unparsed {bytes} bytes ({why})")
            }
            EventKind::End {
                frames_c2s,
                frames_s2c,
                notes: n,
            } => writeln!(
                w,
                "{p} end frames c2s={frames_c2s} s2c={frames_s2c}{}",
                notes(n)
            ),
            EventKind::Notice { note } => writeln!(
                w,
                "{p} note{} {}",
                notes(std::slice::from_ref(note)),
                Esc(&note.message)
            ),
        }
    }
}

/// A frame's summary line.
fn summary_frame(w: &mut dyn Write, e: &Event, f: &FrameEvent) -> io::Result<()> {
    let h = &f.header;
    write!(
        w,
        "{} {} {:>8} frame {:<12} fin={} mask=",
        e.conn,
        e.dir.as_str(),
        e.offset,
        h.opcode.name(),
        h.fin as u8
    )?;
    match h.mask {
        Some(k) => {
            let mut b = [0u8; 8];
            for (i, x) in k.0.iter().enumerate() {
                b[2 * i] = HEX_DIGITS[(x >> 4) as usize];
                b[2 * i + 1] = HEX_DIGITS[(x & 15) as usize];
            }
            w.write_all(&b)?
        }
        None => w.write_all(b"-")?,
    }
    write!(w, " len={}", h.payload_len)?;
    if let Some((c, r)) = &f.close {
        write!(w, " close={} {r:?}", c.0)?;
    }
    summary_notes(w, &f.notes)?;
    w.write_all(b"\n")
}

/// A message's summary line.
fn summary_message(w: &mut dyn Write, e: &Event, m: &MessageEvent) -> io::Result<()> {
    write!(
        w,
        "{} {} {:>8} message {} ",
        e.conn,
        e.dir.as_str(),
        e.offset,
        m.opcode.name()
    )?;
    match (&m.kinetid, &m.text) {
        (Some(k), _) => write!(w, "{}", Esc(&k.summary))?,
        (None, Some(t)) => {
            let cut = t.char_indices().nth(80).map_or(t.len(), |(i, _)| i);
            write!(w, "{:?}", &t[..cut])?
        }
        _ => write!(w, "{} bytes", m.len)?,
    }
    summary_notes(w, &m.notes)?;
    w.write_all(b"\n")
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
        "header_hex": hex::encode(&f.head),
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
        "text": m.text,
        "notes": notes_json(&m.notes),
    });
    if m.text.is_none() {
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

/// ` [severity:code ...]` after a summary line, when there are notes.
fn summary_notes(w: &mut dyn Write, notes: &[Note]) -> io::Result<()> {
    for (i, n) in notes.iter().enumerate() {
        w.write_all(if i == 0 { b" [" } else { b" " })?;
        write!(w, "{}:{}", n.severity, n.code)?;
    }
    if !notes.is_empty() {
        w.write_all(b"]")?;
    }
    Ok(())
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
