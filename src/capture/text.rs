//! File formats that `replay` reads and `listen --record` writes.
//!
//! * Hex text fixtures: `>` lines are device-to-server bytes, `<` lines
//!   server-to-device, `#` starts a comment. Hex may be spelled `81 AB`,
//!   `0x81,0xab` or `81ab`. The file may carry an HTTP head verbatim: a block
//!   starting with a request line (`GET /ws HTTP/1.1`) goes device-to-server,
//!   a block starting with `HTTP/` server-to-device; a blank line ends the
//!   block and each line is sent with CRLF.
//! * Raw binary: the whole file is one direction's byte stream.
//! * Captures (`listen --record`): a first line `# kinetid-wsdump capture v1`,
//!   then one line per event: `TIME CONN open PEER`, `TIME CONN c2s HEX`,
//!   `TIME CONN s2c HEX`, `TIME CONN note DIR SEVERITY CODE MESSAGE`,
//!   `TIME CONN gap DIR BYTES` (bytes a packet capture missed) or
//!   `TIME CONN eof`, TIME being Unix seconds with microseconds. One chunk
//!   line per read or write, as it happened.

use crate::wire::frame::Direction;
use std::fmt;

/// First line of a capture file.
pub const CAPTURE_MAGIC: &str = "# kinetid-wsdump capture v1";

/// What a chunk carries.
#[derive(Debug, Clone, PartialEq)]
pub enum ChunkKind {
    /// A connection opened from this peer.
    Open(String),
    /// Bytes in one direction.
    Data(Direction, Vec<u8>),
    /// The connection ended.
    Eof,
    /// The listener raised a note about the connection.
    Note(Direction, crate::note::Note),
    /// This many bytes of a direction were never captured (packets missing
    /// from a packet capture, or its start): decoding resumes at the next
    /// frame header that fits.
    Gap(Direction, u64),
}

/// One record of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Unix seconds, when the format has times.
    pub time: Option<f64>,
    /// Connection id (1 for fixtures).
    pub conn: u64,
    /// Number of the packet that carried it (packet captures; 1 for the
    /// first packet, as Wireshark counts).
    pub pkt: Option<u64>,
    /// What happened.
    pub kind: ChunkKind,
}

/// A malformed line in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// 1-based line (0 in a binary format).
    pub line: usize,
    /// Byte offset in the file of the offending text.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Binary formats have no lines.
            return write!(f, "byte {}: {}", self.offset, self.reason);
        }
        write!(
            f,
            "line {}, byte {}: {}",
            self.line, self.offset, self.reason
        )
    }
}

/// Parsed chunks, plus the first error if the file is malformed. Everything
/// before the error is kept so it can still be shown.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Parsed {
    /// Records in file order.
    pub chunks: Vec<Chunk>,
    /// The first malformed line, if any.
    pub error: Option<FileError>,
}

/// Each byte's value as a hex digit, or 0xff.
const HEX: [u8; 256] = {
    let mut t = [0xffu8; 256];
    let mut i = 0;
    while i < 10 {
        t[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        t[b'a' as usize + i] = 10 + i as u8;
        t[b'A' as usize + i] = 10 + i as u8;
        i += 1;
    }
    t
};

/// Separators between hex tokens: ASCII whitespace, `,` and `:`.
const SEP: [bool; 256] = {
    let mut t = [false; 256];
    let seps = b" \t\n\x0c\r,:";
    let mut i = 0;
    while i < seps.len() {
        t[seps[i] as usize] = true;
        i += 1;
    }
    t
};

/// Parse hex tokens (`81 AB`, `0x81,0xab`, `81ab`) into `out`.
/// Returns the column of the first bad token.
fn parse_hex(s: &str, out: &mut Vec<u8>) -> Result<(), (usize, String)> {
    let bytes = s.as_bytes();
    out.reserve(bytes.len() / 2);
    let mut i = 0;
    while i < bytes.len() {
        if SEP[bytes[i] as usize] {
            i += 1;
            continue;
        }
        let start = i;
        i += bytes[i..]
            .iter()
            .position(|&b| SEP[b as usize])
            .unwrap_or(bytes.len() - i);
        let mut tok = &bytes[start..i];
        let mut col = start;
        if tok.starts_with(b"0x") || tok.starts_with(b"0X") {
            tok = &tok[2..];
            col += 2;
        }
        if tok.is_empty() {
            return Err((start, "empty hex token".into()));
        }
        // Every pair at once, without a branch a byte; a bad digit (0xff
        // in the table) shows in the or of them all and is then found.
        let at = out.len();
        out.resize(at + tok.len() / 2, 0);
        let mut bad = 0u8;
        for (d, p) in out[at..].iter_mut().zip(tok.chunks_exact(2)) {
            let (hi, lo) = (HEX[p[0] as usize], HEX[p[1] as usize]);
            bad |= hi | lo;
            *d = hi << 4 | lo;
        }
        if bad & 0xf0 != 0 {
            let k = tok
                .iter()
                .position(|&b| HEX[b as usize] == 0xff)
                .unwrap_or(0);
            return Err(not_hex(s, col + k));
        }
        if tok.len() % 2 == 1 {
            if HEX[tok[tok.len() - 1] as usize] == 0xff {
                return Err(not_hex(s, col + tok.len() - 1));
            }
            let t = &s[col..col + tok.len()];
            return Err((col, format!("{t:?} has an odd number of hex digits")));
        }
    }
    Ok(())
}

/// The error for a character that is not a hex digit at byte `at` of `s`.
fn not_hex(s: &str, at: usize) -> (usize, String) {
    let ch = s[at..]
        .chars()
        .next()
        .map_or("", |c| &s[at..at + c.len_utf8()]);
    (at, format!("{ch:?} is not hex"))
}

fn is_request_line(l: &str) -> bool {
    let mut it = l.splitn(3, ' ');
    let m = it.next().unwrap_or("");
    !m.is_empty()
        && m.bytes().all(|b| b.is_ascii_uppercase())
        && it.next().is_some()
        && it.next().is_some_and(|v| v.starts_with("HTTP/"))
}

/// Which text format a file is in, known from its first line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TextFormat {
    Fixture,
    Capture,
}

/// Reads chunks from a hex fixture or a capture one line at a time, so
/// memory does not grow with the file: one line, the chunk being built and
/// (fixtures) one HTTP head at most.
#[derive(Debug)]
pub struct Reader<R> {
    src: R,
    line: Vec<u8>,
    /// Lines read so far.
    line_no: usize,
    /// Bytes read so far.
    offset: usize,
    format: Option<TextFormat>,
    /// Fixtures: the stretch of one direction being joined.
    pending: Option<(Direction, Vec<u8>)>,
    /// Fixtures: an HTTP head being read.
    block: Option<(Direction, Vec<u8>)>,
    /// Chunks ready to be handed out, oldest first.
    ready: std::collections::VecDeque<Chunk>,
    error: Option<FileError>,
    done: bool,
}

impl<R: std::io::BufRead> Reader<R> {
    /// A reader over a text fixture or a capture (told apart by the first line).
    pub fn new(src: R) -> Self {
        Reader {
            src,
            line: Vec::with_capacity(4096),
            line_no: 0,
            offset: 0,
            format: None,
            pending: None,
            block: None,
            ready: std::collections::VecDeque::new(),
            error: None,
            done: false,
        }
    }

    /// The source, to see what it holds (a caller flushes its output
    /// before a read that may wait).
    pub fn source(&self) -> &R {
        &self.src
    }

    /// Is a chunk ready without reading any more?
    pub fn has_ready(&self) -> bool {
        !self.ready.is_empty()
    }

    /// The first malformed line, once reading stopped at it.
    pub fn error(&self) -> Option<&FileError> {
        self.error.as_ref()
    }

    /// The next chunk; `Ok(None)` at the end of the input or at the first
    /// malformed line (then [`Reader::error`] says what and where).
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Chunk>> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.done {
                return Ok(None);
            }
            self.line.clear();
            let n = self.src.read_until(b'\n', &mut self.line)?;
            if n == 0 {
                self.done = true;
                self.end();
                continue;
            }
            let line_off = self.offset;
            self.offset += n;
            self.line_no += 1;
            let raw = std::mem::take(&mut self.line);
            let r = match std::str::from_utf8(&raw) {
                Ok(text) => self.text_line(text, line_off),
                Err(e) => Err(FileError {
                    line: self.line_no,
                    offset: line_off + e.valid_up_to(),
                    reason:
                        "invalid UTF-8: not a text fixture or capture (use --raw for binary files)"
                            .into(),
                }),
            };
            self.line = raw;
            if let Err(e) = r {
                self.flush_pending();
                self.error = Some(e);
                self.done = true;
            }
        }
    }

    fn text_line(&mut self, raw_line: &str, line_off: usize) -> Result<(), FileError> {
        let format = *self
            .format
            .get_or_insert(if raw_line.starts_with(CAPTURE_MAGIC) {
                TextFormat::Capture
            } else {
                TextFormat::Fixture
            });
        match format {
            TextFormat::Capture => {
                if let Some(c) = capture_record(raw_line, self.line_no, line_off)? {
                    self.ready.push_back(c);
                }
                Ok(())
            }
            TextFormat::Fixture => self.fixture_line(raw_line, line_off),
        }
    }

    fn flush_pending(&mut self) {
        if let Some((dir, bytes)) = self.pending.take() {
            self.ready.push_back(Chunk {
                time: None,
                conn: 1,
                pkt: None,
                kind: ChunkKind::Data(dir, bytes),
            });
        }
    }

    /// The end of the input: what is left, and an HTTP head left open.
    fn end(&mut self) {
        self.flush_pending();
        if self.block.take().is_some() {
            // An HTTP head left open at the end of the file: keep what is there.
            self.error = Some(FileError {
                line: self.line_no,
                offset: self.offset,
                reason: "file ends inside an HTTP head (no blank line)".into(),
            });
        }
    }

    fn fixture_line(&mut self, raw_line: &str, line_off: usize) -> Result<(), FileError> {
        let line_no = self.line_no;
        let line = raw_line.trim_end_matches(['\n', '\r']);
        if let Some((dir, buf)) = self.block.as_mut() {
            buf.extend_from_slice(line.as_bytes());
            buf.extend_from_slice(b"\r\n");
            if line.is_empty() {
                let (dir, buf) = (*dir, std::mem::take(buf));
                self.block = None;
                match self.pending.as_mut() {
                    Some((d, prev)) if *d == dir => prev.extend_from_slice(&buf),
                    _ => {
                        self.flush_pending();
                        self.pending = Some((dir, buf));
                    }
                }
            }
            return Ok(());
        }
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        let (dir, rest) = if let Some(r) = trimmed.strip_prefix('>') {
            (Direction::C2S, r)
        } else if let Some(r) = trimmed.strip_prefix('<') {
            (Direction::S2C, r)
        } else if trimmed.is_empty() || trimmed.starts_with('#') {
            return Ok(());
        } else if is_request_line(trimmed) {
            self.block = Some((Direction::C2S, format!("{trimmed}\r\n").into_bytes()));
            return Ok(());
        } else if trimmed.starts_with("HTTP/") {
            self.block = Some((Direction::S2C, format!("{trimmed}\r\n").into_bytes()));
            return Ok(());
        } else {
            return Err(FileError {
                line: line_no,
                offset: line_off + lead,
                reason: "expected '>' (device to server), '<' (server to device), '#' (comment) or an HTTP head".into(),
            });
        };
        let body = rest.split('#').next().unwrap_or("");
        let mut bytes = Vec::new();
        if let Err((col, why)) = parse_hex(body, &mut bytes) {
            return Err(FileError {
                line: line_no,
                offset: line_off + lead + 1 + col,
                reason: why,
            });
        }
        // Consecutive lines of one direction are one stretch of bytes.
        match self.pending.as_mut() {
            Some((d, prev)) if *d == dir => prev.extend_from_slice(&bytes),
            _ if bytes.is_empty() => {}
            _ => {
                self.flush_pending();
                self.pending = Some((dir, bytes));
            }
        }
        Ok(())
    }
}

/// Read every chunk of a text fixture or capture held in memory.
fn parse_all(text: &str) -> Parsed {
    let mut r = Reader::new(text.as_bytes());
    let mut p = Parsed::default();
    while let Ok(Some(c)) = r.next_chunk() {
        p.chunks.push(c);
    }
    p.error = r.error;
    p
}

/// Parse a hex text fixture.
pub fn parse_hex_fixture(text: &str) -> Parsed {
    let mut r = Reader::new(text.as_bytes());
    r.format = Some(TextFormat::Fixture);
    let mut p = Parsed::default();
    while let Ok(Some(c)) = r.next_chunk() {
        p.chunks.push(c);
    }
    p.error = r.error;
    p
}

/// Parse a capture file written by `listen --record`.
pub fn parse_capture(text: &str) -> Parsed {
    parse_all(text)
}

/// Parse a text file in whichever text format it is in.
pub fn parse_text(text: &str) -> Parsed {
    parse_all(text)
}

/// One line of a capture: a chunk, nothing (blank lines, comments, the
/// first line) or the error that stops reading.
fn capture_record(
    raw_line: &str,
    line_no: usize,
    line_off: usize,
) -> Result<Option<Chunk>, FileError> {
    let line = raw_line.trim_end_matches(['\n', '\r']);
    let err = |col: usize, reason: String| FileError {
        line: line_no,
        offset: line_off + col,
        reason,
    };
    if line_no == 1 {
        if line != CAPTURE_MAGIC {
            return Err(err(0, format!("capture must start with {CAPTURE_MAGIC:?}")));
        }
        return Ok(None);
    }
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if !raw_line.ends_with('\n') {
        return Err(err(
            line.len(),
            "last line is cut short (no line end): the recording was interrupted".into(),
        ));
    }
    let mut fields = line.splitn(4, ' ');
    let (f0, f1, f2, rest) = (fields.next(), fields.next(), fields.next(), fields.next());
    let time = match f0.map(str::parse::<f64>) {
        Some(Ok(t)) if t.is_finite() => t,
        _ => return Err(err(0, "expected a time in Unix seconds".into())),
    };
    let conn_col = f0.map_or(0, str::len) + 1;
    let Some(Ok(conn)) = f1.map(str::parse::<u64>) else {
        return Err(err(conn_col, "expected a connection number".into()));
    };
    let kind_col = conn_col + f1.map_or(0, str::len) + 1;
    let rest = rest.unwrap_or("");
    let kind = record_kind(f2, rest).map_err(|(col, why)| err(kind_col + col, why))?;
    Ok(Some(Chunk {
        time: Some(time),
        conn,
        pkt: None,
        kind,
    }))
}

/// A record's kind and what follows it; `Err` is (column from the kind,
/// why).
fn record_kind(kind: Option<&str>, rest: &str) -> Result<ChunkKind, (usize, String)> {
    Ok(match kind {
        Some("open") => ChunkKind::Open(rest.to_string()),
        Some("eof") => ChunkKind::Eof,
        Some("gap") => {
            // DIR BYTES
            let mut it = rest.splitn(2, ' ');
            let dir = match it.next().unwrap_or("") {
                "c2s" => Direction::C2S,
                "s2c" => Direction::S2C,
                _ => return Err((4, "expected c2s or s2c".into())),
            };
            match it.next().map(str::parse::<u64>) {
                Some(Ok(n)) => ChunkKind::Gap(dir, n),
                _ => return Err((8, "expected a number of bytes".into())),
            }
        }
        Some("note") => {
            // DIR SEVERITY CODE MESSAGE
            let mut it = rest.splitn(4, ' ');
            let (d, sev, code, msg) = (
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
                it.next().unwrap_or(""),
            );
            let dir = match d {
                "c2s" => Direction::C2S,
                "s2c" => Direction::S2C,
                _ => return Err((5, "expected c2s or s2c".into())),
            };
            match crate::note::listener_note(sev, code, msg) {
                Some(n) => ChunkKind::Note(dir, n),
                None => return Err((9, format!("unknown note {:?} {:?}", sev, code))),
            }
        }
        Some(d @ ("c2s" | "s2c")) => {
            let mut bytes = Vec::new();
            if let Err((col, why)) = parse_hex(rest, &mut bytes) {
                return Err((4 + col, why));
            }
            ChunkKind::Data(
                if d == "c2s" {
                    Direction::C2S
                } else {
                    Direction::S2C
                },
                bytes,
            )
        }
        other => {
            return Err((
                0,
                format!(
                    "expected open, c2s, s2c, note, gap or eof, found {:?}",
                    other.unwrap_or("")
                ),
            ))
        }
    })
}

/// One capture line (with its newline) for a record.
pub fn capture_line(c: &Chunk) -> String {
    let t = c.time.unwrap_or(0.0);
    match &c.kind {
        ChunkKind::Open(peer) => format!("{t:.6} {} open {peer}\n", c.conn),
        ChunkKind::Eof => format!("{t:.6} {} eof\n", c.conn),
        ChunkKind::Note(d, n) => format!(
            "{t:.6} {} note {} {} {} {}\n",
            c.conn,
            d.as_str(),
            n.severity,
            n.code,
            n.message.replace(['\n', '\r'], " ")
        ),
        ChunkKind::Data(d, b) => format!("{t:.6} {} {} {}\n", c.conn, d.as_str(), hex::encode(b)),
        ChunkKind::Gap(d, n) => format!("{t:.6} {} gap {} {n}\n", c.conn, d.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_spellings() {
        let p = parse_hex_fixture("> 81 AB\n<0x81,0xab\n> 81ab # comment\n");
        assert_eq!(p.error, None);
        assert_eq!(p.chunks.len(), 3);
        for c in &p.chunks {
            let ChunkKind::Data(_, b) = &c.kind else {
                panic!()
            };
            assert_eq!(b, &[0x81, 0xab]);
        }
        // Consecutive lines of one direction join.
        let p = parse_hex_fixture("> 81\n# c\n> 00\n");
        assert_eq!(
            p.chunks,
            vec![Chunk {
                time: None,
                conn: 1,
                pkt: None,
                kind: ChunkKind::Data(Direction::C2S, vec![0x81, 0])
            }]
        );
    }

    #[test]
    fn errors_name_line_and_offset() {
        let p = parse_hex_fixture("> 81 05\n> 48 zz\n");
        assert_eq!(p.chunks.len(), 1);
        let e = p.error.unwrap();
        assert_eq!((e.line, e.offset), (2, 13));
        let p = parse_hex_fixture("> 8\n");
        assert!(p.error.unwrap().reason.contains("odd"));
        let p = parse_hex_fixture("hello\n");
        assert_eq!(p.error.unwrap().line, 1);
    }

    #[test]
    fn http_blocks() {
        let p = parse_hex_fixture(
            "GET / HTTP/1.1\nHost: a\n\nHTTP/1.1 101 Switching Protocols\n\n> 81 00\n",
        );
        assert_eq!(p.error, None);
        assert_eq!(
            p.chunks[0].kind,
            ChunkKind::Data(
                Direction::C2S,
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n".to_vec()
            )
        );
        assert_eq!(
            p.chunks[1].kind,
            ChunkKind::Data(
                Direction::S2C,
                b"HTTP/1.1 101 Switching Protocols\r\n\r\n".to_vec()
            )
        );
    }

    #[test]
    fn capture_roundtrip_and_truncation() {
        let chunks = vec![
            Chunk {
                time: Some(1.5),
                conn: 3,
                pkt: None,
                kind: ChunkKind::Open("127.0.0.1:5".into()),
            },
            Chunk {
                time: Some(1.75),
                conn: 3,
                pkt: None,
                kind: ChunkKind::Data(Direction::C2S, vec![1, 2, 255]),
            },
            Chunk {
                time: Some(2.0),
                conn: 3,
                pkt: None,
                kind: ChunkKind::Eof,
            },
        ];
        let mut text = format!("{CAPTURE_MAGIC}\n");
        for c in &chunks {
            text.push_str(&capture_line(c));
        }
        let p = parse_capture(&text);
        assert_eq!(p.error, None);
        assert_eq!(p.chunks, chunks);
        let cut = &text[..text.len() - 3];
        let p = parse_capture(cut);
        assert_eq!(p.chunks.len(), 2);
        assert!(p.error.unwrap().reason.contains("cut short"));
    }
}
