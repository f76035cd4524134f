//! The summary renderer: one line per event.

use super::*;

impl Printer {
    pub(super) fn summary(&self, w: &mut dyn Write, e: &Event) -> io::Result<()> {
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
