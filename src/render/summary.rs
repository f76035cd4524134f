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

/// A summary line is built here, then written with one call: `write!` on
/// a `dyn Write` goes through the formatter for every piece.
struct Line(Vec<u8>);

impl Line {
    fn str(&mut self, s: &str) -> &mut Self {
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn num(&mut self, n: u64) -> &mut Self {
        self.0
            .extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
        self
    }
    /// `{:<w}` of a name.
    fn left(&mut self, s: &str, w: usize) -> &mut Self {
        self.str(s);
        self.0.extend(std::iter::repeat_n(
            b' ',
            w.saturating_sub(s.chars().count()),
        ));
        self
    }
    /// `{:?}` of a string: printable ASCII by hand (only `"` and `\\`
    /// are escaped there), anything else the standard way.
    fn debug_str(&mut self, s: &str) -> &mut Self {
        // Checked whole first (a fold without an early exit, which the
        // compiler vectorises), then copied with a backslash where needed.
        let b = s.as_bytes();
        let plain = b.iter().fold(true, |ok, &c| ok & (0x20..0x7f).contains(&c));
        if !plain {
            return self.str(&format!("{s:?}"));
        }
        let v = &mut self.0;
        v.push(b'"');
        // Escaped on the stack eight bytes at a time: a word's quotes and
        // backslashes are found at once, the plain bytes between them are
        // stored as whole words (the part past the next escape is written
        // over), then the piece is copied once.
        let mut buf = [0u8; 256];
        for piece in b.chunks(96) {
            let mut j = 0usize;
            let mut words = piece.chunks_exact(8);
            for w in &mut words {
                let x = u64::from_le_bytes(w.try_into().expect("8 bytes"));
                let mut hits = zero_bytes(x ^ (ONES * u64::from(b'"')))
                    | zero_bytes(x ^ (ONES * u64::from(b'\\')));
                let mut from = 0usize;
                while hits != 0 {
                    let at = (hits.trailing_zeros() / 8) as usize;
                    buf[j..j + 8].copy_from_slice(&(x >> (8 * from)).to_le_bytes());
                    j += at - from;
                    buf[j] = b'\\';
                    buf[j + 1] = w[at];
                    j += 2;
                    from = at + 1;
                    hits &= hits - 1;
                }
                if from < 8 {
                    buf[j..j + 8].copy_from_slice(&(x >> (8 * from)).to_le_bytes());
                    j += 8 - from;
                }
            }
            for &c in words.remainder() {
                if NEEDS_BACKSLASH[usize::from(c)] != 0 {
                    buf[j] = b'\\';
                    j += 1;
                }
                buf[j] = c;
                j += 1;
            }
            v.extend_from_slice(&buf[..j]);
        }
        v.push(b'"');
        self
    }
    /// `conn dir offset` that starts every line, put together on the
    /// stack and copied once.
    fn start(&mut self, e: &Event) -> &mut Self {
        let mut c = itoa::Buffer::new();
        let mut o = itoa::Buffer::new();
        let (conn, off) = (c.format(e.conn).as_bytes(), o.format(e.offset).as_bytes());
        let mut buf = [b' '; 64];
        let mut n = conn.len();
        buf[..n].copy_from_slice(conn);
        buf[n + 1..n + 4].copy_from_slice(e.dir.as_str().as_bytes());
        n += 5 + 8usize.saturating_sub(off.len());
        buf[n..n + off.len()].copy_from_slice(off);
        // Copied as one block of a size known when compiling (two wide
        // stores, no call), the spaces past the end cut off again: a
        // start is at most 20 + 5 + 20 bytes.
        let end = self.0.len() + n + off.len();
        self.0.extend_from_slice(&buf[..48]);
        self.0.truncate(end);
        self
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `x` that is zero, and no other bit (no
/// carry crosses a byte: each byte's low seven bits plus 0x7f stay below
/// 0x100).
fn zero_bytes(x: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    !(((x & LOW7) + LOW7) | x) & !LOW7
}

/// The printable ASCII bytes `{:?}` escapes: `"` and `\\`.
const NEEDS_BACKSLASH: [u8; 256] = {
    let mut t = [0u8; 256];
    t[b'"' as usize] = 1;
    t[b'\\' as usize] = 1;
    t
};

thread_local! {
    static LINE: std::cell::RefCell<Line> = const { std::cell::RefCell::new(Line(Vec::new())) };
}

/// Build one line in the thread's buffer and write it.
fn line(w: &mut dyn Write, f: impl FnOnce(&mut Line)) -> io::Result<()> {
    LINE.with(|l| {
        let mut l = l.borrow_mut();
        l.0.clear();
        f(&mut l);
        w.write_all(&l.0)
    })
}

/// A frame's summary line.
fn summary_frame(w: &mut dyn Write, e: &Event, f: &FrameEvent) -> io::Result<()> {
    let h = &f.header;
    line(w, |l| {
        l.start(e).str(" frame ");
        match padded_name(h.opcode) {
            Some(name) => l.0.extend_from_slice(name),
            None => {
                l.left(h.opcode.name(), 12);
            }
        }
        l.str(if h.fin {
            " fin=1 mask="
        } else {
            " fin=0 mask="
        });
        match h.mask {
            Some(k) => {
                for x in k.0 {
                    l.0.push(HEX_DIGITS[(x >> 4) as usize]);
                    l.0.push(HEX_DIGITS[(x & 15) as usize]);
                }
            }
            None => {
                l.str("-");
            }
        }
        l.str(" len=").num(h.payload_len);
        if let Some((c, r)) = &f.close {
            l.str(" close=").num(u64::from(c.0)).str(" ");
            l.debug_str(r);
        }
        summary_notes(l, &f.notes);
        l.str("\n");
    })
}

/// A message's summary line.
fn summary_message(w: &mut dyn Write, e: &Event, m: &MessageEvent) -> io::Result<()> {
    line(w, |l| {
        l.start(e);
        match m.opcode {
            OpCode::Text => l.str(" message text "),
            OpCode::Binary => l.str(" message binary "),
            op => l.str(" message ").str(op.name()).str(" "),
        };
        // The text is looked at (its UTF-8 checked) only when there is no
        // Kinetid reading to show.
        if let Some(k) = &m.kinetid {
            let s = &k.summary;
            if crate::escape::is_plain(s) {
                l.str(s);
            } else {
                l.str(&Esc(s).to_string());
            }
        } else if let Some(head) = ascii_preview(m) {
            l.debug_str(head);
        } else if let Some(t) = m.text() {
            let cut = preview_end(t, 80);
            l.debug_str(&t[..cut]);
        } else {
            l.num(m.len).str(" bytes");
        }
        summary_notes(l, &m.notes);
        l.str("\n");
    })
}

/// An opcode's name padded to 12 (`{:<12}`), for the names that fit:
/// copied as one block of a size known when compiling.
fn padded_name(op: OpCode) -> Option<&'static [u8; 12]> {
    Some(match op {
        OpCode::Continuation => b"continuation",
        OpCode::Text => b"text        ",
        OpCode::Binary => b"binary      ",
        OpCode::Close => b"close       ",
        OpCode::Ping => b"ping        ",
        OpCode::Pong => b"pong        ",
        OpCode::Reserved(_) => return None,
    })
}

/// A valid text's first 80 characters when they are ASCII, read off its
/// first 80 bytes: the rest is not checked again (the annotator checked
/// the whole text before it set `valid_text`).
fn ascii_preview(m: &MessageEvent) -> Option<&str> {
    if !m.valid_text {
        return None;
    }
    let head = &m.payload[..m.payload.len().min(80)];
    if head.is_ascii() {
        std::str::from_utf8(head).ok()
    } else {
        None
    }
}

/// Where the first `n` characters of `t` end (ASCII: at byte `n`).
fn preview_end(t: &str, n: usize) -> usize {
    let head = &t.as_bytes()[..t.len().min(n)];
    if head.is_ascii() {
        return head.len();
    }
    t.char_indices().nth(n).map_or(t.len(), |(i, _)| i)
}

/// ` [severity:code ...]` after a summary line, when there are notes.
fn summary_notes(l: &mut Line, notes: &[Note]) {
    for (i, n) in notes.iter().enumerate() {
        l.str(if i == 0 { " [" } else { " " });
        l.str(n.severity.as_str()).str(":").str(n.code.as_str());
    }
    if !notes.is_empty() {
        l.str("]");
    }
}

#[cfg(test)]
mod tests {
    use super::Line;

    #[test]
    fn debug_str_is_the_standard_debug() {
        for t in [
            "",
            r#"{"t":"ack","re":2}"#,
            "a\\b 'q' ~ \u{7f}",
            "tab\there\nnew",
            "Grüße \u{202e} \u{301}x",
            "\u{0}\u{1b}[2J",
        ]
        .into_iter()
        .map(String::from)
        .chain([r#"\"q\"\\"#.repeat(90), "x".repeat(300)])
        .chain({
            // Every mix of plain bytes, quotes and backslashes, at every
            // length around the word and piece sizes.
            let mut seed = 0x9e37_79b9_7f4a_7c15u64;
            (0..3000).map(move |n| {
                let len = [n % 40, 180 + n % 30, 370 + n % 30][n % 3];
                (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        match seed % 6 {
                            0 => '"',
                            1 => '\\',
                            _ => char::from(b' ' + (seed >> 8) as u8 % 95),
                        }
                    })
                    .collect::<String>()
            })
        }) {
            let t = t.as_str();
            let mut l = Line(Vec::new());
            l.debug_str(t);
            assert_eq!(String::from_utf8(l.0).unwrap(), format!("{t:?}"), "{t}");
        }
    }

    #[test]
    fn a_line_starts_as_the_format_string_has_it() {
        use crate::annotate::{Event, EventKind};
        use crate::wire::codes::Direction;
        for (conn, offset) in [
            (0, 0),
            (1, 191),
            (12, 12_345_678),
            (7, 123_456_789),
            (u64::MAX, u64::MAX),
        ] {
            for dir in [Direction::C2S, Direction::S2C] {
                let e = Event::at(
                    conn,
                    dir,
                    offset,
                    None,
                    EventKind::Open {
                        peer: String::new(),
                    },
                );
                let mut l = Line(Vec::new());
                l.start(&e);
                let want = format!("{} {} {:>8}", conn, dir.as_str(), offset);
                assert_eq!(String::from_utf8(l.0).unwrap(), want);
            }
        }
    }

    #[test]
    fn padded_names_are_as_format_has_them() {
        use crate::wire::codes::OpCode;
        for b in 0..16u8 {
            let op = OpCode::from_u8(b);
            if let Some(p) = super::padded_name(op) {
                assert_eq!(p, format!("{:<12}", op.name()).as_bytes());
            }
        }
    }

    #[test]
    fn a_preview_ends_after_n_characters() {
        for t in [
            "",
            "abc",
            "Grüße aus Köln",
            "ééééé",
            "abcdé",
            "\u{1F600}xyz",
        ] {
            for n in 0..8 {
                let want = t.char_indices().nth(n).map_or(t.len(), |(i, _)| i);
                assert_eq!(super::preview_end(t, n), want, "{t} {n}");
            }
        }
    }
}
