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
//!   `TIME CONN s2c HEX` or `TIME CONN eof`, TIME being Unix seconds with
//!   microseconds. One chunk line per read or write, as it happened.

use crate::frame::Direction;
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
}

/// One record of a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Chunk {
    /// Unix seconds, when the format has times.
    pub time: Option<f64>,
    /// Connection id (1 for fixtures).
    pub conn: u64,
    /// What happened.
    pub kind: ChunkKind,
}

/// A malformed line in a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    /// 1-based line.
    pub line: usize,
    /// Byte offset in the file of the offending text.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
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

/// Parse hex tokens (`81 AB`, `0x81,0xab`, `81ab`) into `out`.
/// Returns the column of the first bad token.
fn parse_hex(s: &str, out: &mut Vec<u8>) -> Result<(), (usize, String)> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() || c == b',' || c == b':' {
            i += 1;
            continue;
        }
        let start = i;
        while i < bytes.len()
            && !(bytes[i].is_ascii_whitespace() || bytes[i] == b',' || bytes[i] == b':')
        {
            i += 1;
        }
        let mut tok = &s[start..i];
        let mut col = start;
        if tok.starts_with("0x") || tok.starts_with("0X") {
            tok = &tok[2..];
            col += 2;
        }
        if tok.is_empty() {
            return Err((start, "empty hex token".into()));
        }
        if let Some(p) = tok.bytes().position(|b| !b.is_ascii_hexdigit()) {
            return Err((
                col + p,
                format!(
                    "{:?} is not hex",
                    &tok[p..p + tok[p..].chars().next().map_or(1, char::len_utf8)]
                ),
            ));
        }
        if tok.len() % 2 != 0 {
            return Err((col, format!("{tok:?} has an odd number of hex digits")));
        }
        for k in (0..tok.len()).step_by(2) {
            out.push(u8::from_str_radix(&tok[k..k + 2], 16).expect("checked hex"));
        }
    }
    Ok(())
}

fn is_request_line(l: &str) -> bool {
    let mut it = l.splitn(3, ' ');
    let m = it.next().unwrap_or("");
    !m.is_empty()
        && m.bytes().all(|b| b.is_ascii_uppercase())
        && it.next().is_some()
        && it.next().is_some_and(|v| v.starts_with("HTTP/"))
}

/// Parse a hex text fixture.
pub fn parse_hex_fixture(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut block: Option<(Direction, Vec<u8>)> = None;
    let mut offset = 0usize;
    for (n, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = n + 1;
        let line_off = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        if let Some((dir, buf)) = block.as_mut() {
            buf.extend_from_slice(line.as_bytes());
            buf.extend_from_slice(b"\r\n");
            if line.is_empty() {
                let (dir, buf) = (*dir, std::mem::take(buf));
                p.chunks.push(Chunk {
                    time: None,
                    conn: 1,
                    kind: ChunkKind::Data(dir, buf),
                });
                block = None;
            }
            continue;
        }
        let trimmed = line.trim_start();
        let lead = line.len() - trimmed.len();
        let (dir, rest) = if let Some(r) = trimmed.strip_prefix('>') {
            (Direction::C2S, r)
        } else if let Some(r) = trimmed.strip_prefix('<') {
            (Direction::S2C, r)
        } else if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        } else if is_request_line(trimmed) {
            block = Some((Direction::C2S, format!("{trimmed}\r\n").into_bytes()));
            continue;
        } else if trimmed.starts_with("HTTP/") {
            block = Some((Direction::S2C, format!("{trimmed}\r\n").into_bytes()));
            continue;
        } else {
            p.error = Some(FileError {
                line: line_no,
                offset: line_off + lead,
                reason: "expected '>' (device to server), '<' (server to device), '#' (comment) or an HTTP head".into(),
            });
            return p;
        };
        let body = rest.split('#').next().unwrap_or("");
        let mut bytes = Vec::new();
        if let Err((col, why)) = parse_hex(body, &mut bytes) {
            p.error = Some(FileError {
                line: line_no,
                offset: line_off + lead + 1 + col,
                reason: why,
            });
            return p;
        }
        // Consecutive lines of one direction are one stretch of bytes.
        match p.chunks.last_mut() {
            Some(Chunk {
                kind: ChunkKind::Data(d, prev),
                ..
            }) if *d == dir => prev.extend_from_slice(&bytes),
            _ if bytes.is_empty() => {}
            _ => p.chunks.push(Chunk {
                time: None,
                conn: 1,
                kind: ChunkKind::Data(dir, bytes),
            }),
        }
    }
    if let Some((_, buf)) = block {
        // An HTTP head left open at the end of the file: keep what is there.
        p.error = Some(FileError {
            line: text.lines().count(),
            offset: text.len(),
            reason: "file ends inside an HTTP head (no blank line)".into(),
        });
        let _ = buf;
    }
    p
}

/// Parse a capture file written by `listen --record`.
pub fn parse_capture(text: &str) -> Parsed {
    let mut p = Parsed::default();
    let mut offset = 0usize;
    for (n, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = n + 1;
        let line_off = offset;
        offset += raw_line.len();
        let line = raw_line.trim_end_matches(['\n', '\r']);
        if n == 0 {
            if line != CAPTURE_MAGIC {
                p.error = Some(FileError {
                    line: 1,
                    offset: 0,
                    reason: format!("capture must start with {CAPTURE_MAGIC:?}"),
                });
                return p;
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !raw_line.ends_with('\n') {
            p.error = Some(FileError {
                line: line_no,
                offset: line_off + line.len(),
                reason: "last line is cut short (no line end): the recording was interrupted"
                    .into(),
            });
            return p;
        }
        let fields: Vec<&str> = line.splitn(4, ' ').collect();
        let err = |col: usize, reason: String| FileError {
            line: line_no,
            offset: line_off + col,
            reason,
        };
        let time = match fields.first().map(|t| t.parse::<f64>()) {
            Some(Ok(t)) if t.is_finite() => t,
            _ => {
                p.error = Some(err(0, "expected a time in Unix seconds".into()));
                return p;
            }
        };
        let conn_col = fields[0].len() + 1;
        let Some(Ok(conn)) = fields.get(1).map(|c| c.parse::<u64>()) else {
            p.error = Some(err(conn_col, "expected a connection number".into()));
            return p;
        };
        let kind_col = conn_col + fields[1].len() + 1;
        let rest = fields.get(3).copied().unwrap_or("");
        let kind = match fields.get(2).copied() {
            Some("open") => ChunkKind::Open(rest.to_string()),
            Some("eof") => ChunkKind::Eof,
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
                    _ => {
                        p.error = Some(err(kind_col + 5, "expected c2s or s2c".into()));
                        return p;
                    }
                };
                match crate::note::listener_note(sev, code, msg) {
                    Some(n) => ChunkKind::Note(dir, n),
                    None => {
                        p.error = Some(err(
                            kind_col + 9,
                            format!("unknown note {:?} {:?}", sev, code),
                        ));
                        return p;
                    }
                }
            }
            Some(d @ ("c2s" | "s2c")) => {
                let mut bytes = Vec::new();
                if let Err((col, why)) = parse_hex(rest, &mut bytes) {
                    p.error = Some(err(kind_col + 4 + col, why));
                    return p;
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
                p.error = Some(err(
                    kind_col,
                    format!(
                        "expected open, c2s, s2c, note or eof, found {:?}",
                        other.unwrap_or("")
                    ),
                ));
                return p;
            }
        };
        p.chunks.push(Chunk {
            time: Some(time),
            conn,
            kind,
        });
    }
    p
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
                kind: ChunkKind::Open("127.0.0.1:5".into()),
            },
            Chunk {
                time: Some(1.75),
                conn: 3,
                kind: ChunkKind::Data(Direction::C2S, vec![1, 2, 255]),
            },
            Chunk {
                time: Some(2.0),
                conn: 3,
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
