//! The text renderer: every field of every frame, the handshake's checks,
//! hex dumps, in colour when asked.

use super::*;
use crate::wire::handshake::ClientVerdict;

impl Printer {
    pub(super) fn notes_text(
        &self,
        w: &mut dyn Write,
        notes: &[Note],
        indent: &str,
    ) -> io::Result<()> {
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

    pub(super) fn text(&self, w: &mut dyn Write, e: &Event) -> io::Result<()> {
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
                self.response_checks(w, verdict)
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

    /// The checks of an upgrade response, and what a client would refuse.
    fn response_checks(&self, w: &mut dyn Write, verdict: &ClientVerdict) -> io::Result<()> {
        let c = self.color;
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

    /// The checks and the accept-key derivation of an upgrade request.
    pub(super) fn verdict_text(
        &self,
        w: &mut dyn Write,
        verdict: Option<&ServerVerdict>,
    ) -> io::Result<()> {
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

    pub(super) fn head_text(
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

    pub(super) fn frame_text(
        &self,
        w: &mut dyn Write,
        e: &Event,
        f: &FrameEvent,
    ) -> io::Result<()> {
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
        self.header_bytes(w, f)?;
        self.payload_text(w, f)?;
        self.notes_text(w, &f.notes, "  ")
    }

    /// The header's bytes, each with the fields it holds.
    fn header_bytes(&self, w: &mut dyn Write, f: &FrameEvent) -> io::Result<()> {
        let c = self.color;
        let h = &f.header;
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
        Ok(())
    }

    /// The payload (masked as sent, unmasked) and the close code of a frame.
    pub(super) fn payload_text(&self, w: &mut dyn Write, f: &FrameEvent) -> io::Result<()> {
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

    pub(super) fn message_text(
        &self,
        w: &mut dyn Write,
        e: &Event,
        m: &MessageEvent,
    ) -> io::Result<()> {
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
        } else if let Some(t) = m.text() {
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
}
