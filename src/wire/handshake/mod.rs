//! The opening handshake (RFC 6455 section 4), both roles, without I/O.
//!
//! The server side parses an HTTP/1.1 request from however many reads it
//! takes, checks it the way section 4.2.1 lists, and produces the exact
//! response bytes (101, or 400/405/426/431 naming the failed check). Bytes
//! after the blank line are never touched: the caller gets the consumed
//! length and keeps the rest, since a device may send its first frame in the
//! same TCP segment as its request.
//!
//! The client side builds a request with a fresh key and checks the 101
//! response (section 4.2.2 / 4.1), each mismatch a named error.

use base64::Engine;
use sha1::{Digest, Sha1};
use std::fmt;

mod client;
mod server;

pub use client::*;
pub use server::*;

/// The GUID every server appends to the key (section 1.3).
pub const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The Kinetid subprotocol name.
pub const KINETID_PROTOCOL: &str = "kinetid.v1";

/// The accept-key derivation, step by step, as the protocol teaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptSteps {
    /// Sec-WebSocket-Key as sent.
    pub key: String,
    /// key + GUID.
    pub concatenated: String,
    /// SHA-1 of the concatenation, lower-case hex.
    pub sha1_hex: String,
    /// base64 of the SHA-1: the Sec-WebSocket-Accept value.
    pub accept: String,
}

/// Derive Sec-WebSocket-Accept from Sec-WebSocket-Key, keeping the steps.
pub fn accept_steps(key: &str) -> AcceptSteps {
    let concatenated = format!("{key}{GUID}");
    let digest = Sha1::digest(concatenated.as_bytes());
    AcceptSteps {
        key: key.to_string(),
        sha1_hex: hex::encode(digest),
        accept: base64::engine::general_purpose::STANDARD.encode(digest),
        concatenated,
    }
}

/// Sec-WebSocket-Accept for a key.
pub fn accept_key(key: &str) -> String {
    accept_steps(key).accept
}

/// A fresh Sec-WebSocket-Key: 16 random bytes, base64 (section 4.1).
pub fn random_key() -> String {
    let bytes: [u8; 16] = rand::random();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Bounds on an HTTP head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes up to and including the blank line.
    pub max_head_bytes: usize,
    /// Header lines.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_head_bytes: 8 * 1024,
            max_headers: 100,
        }
    }
}

/// One header line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Name as sent.
    pub name: String,
    /// Value with surrounding white space removed.
    pub value: String,
    /// Offset of the line in the stream.
    pub offset: u64,
}

/// A parsed HTTP head (request or response).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpHead {
    /// The first line, without its line ending.
    pub start_line: String,
    /// Header lines in order.
    pub headers: Vec<Header>,
    /// Bytes consumed, including the blank line.
    pub len: usize,
    /// Some line ended in a bare LF instead of CRLF.
    pub bare_lf: bool,
}

impl HttpHead {
    /// All values of a header (case-insensitive name).
    pub fn all<'a, 'n>(&'a self, name: &'n str) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str())
    }
    /// The first value of a header.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next()
    }
    /// Comma-separated tokens over all lines of a list header, trimmed.
    pub fn tokens(&self, name: &str) -> Vec<String> {
        self.all(name)
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect()
    }
    /// Does a list header contain `token` (any case)?
    pub fn has_token(&self, name: &str, token: &str) -> bool {
        self.tokens(name)
            .iter()
            .any(|t| t.eq_ignore_ascii_case(token))
    }
}

/// Why a head could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeadError {
    /// Stream offset of the offending byte or line.
    pub offset: u64,
    /// HTTP status a server should answer with.
    pub status: u16,
    /// What rule was broken.
    pub reason: String,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "byte {}: {} (HTTP {})",
            self.offset, self.reason, self.status
        )
    }
}

/// Result of [`parse_head`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeadParse {
    /// No blank line yet and still within the limits.
    Partial,
    /// A whole head; the bytes after `len` belong to the caller.
    Complete(HttpHead),
    /// Malformed or over a limit.
    Invalid(HeadError),
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Parse an HTTP/1.x head from the start of `buf`. Pure and incremental:
/// call it again with more bytes after [`HeadParse::Partial`].
pub fn parse_head(buf: &[u8], limits: Limits) -> HeadParse {
    let mut pos = 0usize;
    let mut start_line: Option<String> = None;
    let mut headers: Vec<Header> = Vec::new();
    let mut bare_lf = false;
    loop {
        let Some(nl) = buf[pos..].iter().position(|&b| b == b'\n') else {
            if buf.len() > limits.max_head_bytes {
                return HeadParse::Invalid(HeadError {
                    offset: limits.max_head_bytes as u64,
                    status: 431,
                    reason: format!(
                        "request head exceeds {} bytes without a blank line",
                        limits.max_head_bytes
                    ),
                });
            }
            return HeadParse::Partial;
        };
        let end = pos + nl + 1;
        if end > limits.max_head_bytes {
            return HeadParse::Invalid(HeadError {
                offset: limits.max_head_bytes as u64,
                status: 431,
                reason: format!("head exceeds {} bytes", limits.max_head_bytes),
            });
        }
        let mut line = &buf[pos..pos + nl];
        if line.last() == Some(&b'\r') {
            line = &line[..line.len() - 1];
        } else {
            bare_lf = true;
        }
        if let Some(i) = line
            .iter()
            .position(|&b| b == b'\r' || b == 0 || (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return HeadParse::Invalid(HeadError {
                offset: (pos + i) as u64,
                status: 400,
                reason: format!("control byte 0x{:02X} inside a header line", line[i]),
            });
        }
        let text = String::from_utf8_lossy(line).into_owned();
        match &start_line {
            None => {
                if line.is_empty() && headers.is_empty() {
                    // RFC 9112 2.2: a server should ignore empty lines before the request line.
                    pos = end;
                    continue;
                }
                start_line = Some(text);
            }
            Some(_) if line.is_empty() => {
                return HeadParse::Complete(HttpHead {
                    start_line: start_line.unwrap_or_default(),
                    headers,
                    len: end,
                    bare_lf,
                });
            }
            Some(_) => match header_line(line, &text, pos, headers.len(), limits) {
                Ok(h) => headers.push(h),
                Err(e) => return HeadParse::Invalid(e),
            },
        }
        pos = end;
    }
}

/// One header line after the start line, checked (RFC 9112 5): no
/// folding, a colon, a token name, at most `limits.max_headers` of them.
fn header_line(
    line: &[u8],
    text: &str,
    pos: usize,
    count: usize,
    limits: Limits,
) -> Result<Header, HeadError> {
    if line[0] == b' ' || line[0] == b'\t' {
        return Err(HeadError {
                offset: pos as u64,
                status: 400,
                reason: "obsolete header line folding (a line starting with white space); RFC 9112 5.2 says reject it".into(),
            });
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(HeadError {
            offset: pos as u64,
            status: 400,
            reason: format!("header line without a colon: {text:?}"),
        });
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HeadError {
            offset: pos as u64,
            status: 400,
            reason: format!(
                "invalid header name {:?} (no white space before the colon, token characters only)",
                String::from_utf8_lossy(name)
            ),
        });
    }
    if count >= limits.max_headers {
        return Err(HeadError {
            offset: pos as u64,
            status: 431,
            reason: format!("more than {} header lines", limits.max_headers),
        });
    }
    Ok(Header {
        name: String::from_utf8_lossy(name).into_owned(),
        value: String::from_utf8_lossy(&line[colon + 1..])
            .trim_matches(|c| c == ' ' || c == '\t')
            .to_string(),
        offset: pos as u64,
    })
}

/// One check of the handshake, shown to the user whether it passed or not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// Short name, for example `Sec-WebSocket-Version`.
    pub name: &'static str,
    /// Passed?
    pub ok: bool,
    /// What was found or expected.
    pub detail: String,
    /// Where the rule comes from.
    pub rfc: &'static str,
}

/// The agreed permessage-deflate parameters in words.
pub fn describe(a: &crate::wire::deflate::Agreed) -> String {
    let side = |s: &crate::wire::deflate::Side| {
        format!(
            "{}-bit window{}",
            s.window_bits,
            if s.no_context_takeover {
                ", no context takeover"
            } else {
                ""
            }
        )
    };
    format!(
        "device->server {}, server->device {}",
        side(&a.client),
        side(&a.server)
    )
}

/// Standard reason phrase.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        413 => "Content Too Large",
        415 => "Unsupported Media Type",
        421 => "Misdirected Request",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(s: &str) -> HttpHead {
        match parse_head(s.as_bytes(), Limits::default()) {
            HeadParse::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rfc_6455_section_1_3_example() {
        let s = accept_steps("dGhlIHNhbXBsZSBub25jZQ==");
        assert_eq!(s.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(
            s.concatenated,
            "dGhlIHNhbXBsZSBub25jZQ==258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
        );
        assert_eq!(s.sha1_hex, "b37a4f2cc0624f1690f64606cf385945b2bec4ea");
    }

    const GOOD: &str = "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: http://example.com\r\nSec-WebSocket-Protocol: chat, kinetid.v1\r\nSec-WebSocket-Version: 13\r\n\r\n";

    #[test]
    fn good_request_and_response() {
        let h = head(GOOD);
        assert_eq!(h.len, GOOD.len());
        let v = check_request(&h);
        assert_eq!(v.status, 101, "{:?}", v.checks);
        assert_eq!(v.protocol.as_deref(), Some("kinetid.v1"));
        let resp = String::from_utf8(server_response(&v)).unwrap();
        assert!(resp.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        let rh = head(&resp);
        let cv = check_response(&rh, Some("dGhlIHNhbXBsZSBub25jZQ=="), &["kinetid.v1"]);
        assert_eq!(cv.error, None);
        let cv = check_response(&rh, Some("AAAAAAAAAAAAAAAAAAAAAA=="), &["kinetid.v1"]);
        assert!(matches!(
            cv.error,
            Some(ClientHandshakeError::AcceptMismatch { .. })
        ));
    }

    #[test]
    fn partial_at_every_split_then_complete_and_trailing_bytes_untouched() {
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes.extend_from_slice(&[0x81, 0x80, 1, 2, 3, 4]);
        for cut in 0..GOOD.len() {
            assert_eq!(
                parse_head(&bytes[..cut], Limits::default()),
                HeadParse::Partial,
                "cut {cut}"
            );
        }
        match parse_head(&bytes, Limits::default()) {
            HeadParse::Complete(h) => assert_eq!(h.len, GOOD.len()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn statuses() {
        let cases = [
            (GOOD.replace("GET", "POST"), 405),
            (GOOD.replace("Version: 13", "Version: 8"), 426),
            (GOOD.replace("HTTP/1.1", "HTTP/1.0"), 400),
            (GOOD.replace("Host: server.example.com\r\n", ""), 400),
            (
                GOOD.replace("Upgrade: websocket", "Upgrade: websocket2"),
                400,
            ),
            (GOOD.replace("keep-alive, Upgrade", "keep-alive"), 400),
            (
                GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", "dGhlIHNhbXBsZSBub25j"),
                400,
            ),
            (GOOD.replace("dGhlIHNhbXBsZSBub25jZQ==", ""), 400),
        ];
        for (req, status) in cases {
            let v = check_request(&head(&req));
            assert_eq!(v.status, status, "{req}");
            assert!(v.failure.is_some());
            let resp = String::from_utf8(server_response(&v)).unwrap();
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")));
            if status == 426 {
                assert!(resp.contains("Sec-WebSocket-Version: 13\r\n"));
            }
        }
    }

    #[test]
    fn limits_and_malformed_heads() {
        let big = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        assert!(matches!(
            parse_head(big.as_bytes(), Limits::default()),
            HeadParse::Invalid(HeadError { status: 431, .. })
        ));
        let many: String = (0..101).map(|i| format!("X{i}: y\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(
            parse_head(req.as_bytes(), Limits::default()),
            HeadParse::Invalid(HeadError { status: 431, .. })
        ));
        let fold = "GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n";
        assert!(matches!(
            parse_head(fold.as_bytes(), Limits::default()),
            HeadParse::Invalid(HeadError {
                status: 400,
                offset: 25,
                ..
            })
        ));
        let nocolon = "GET / HTTP/1.1\r\nHost a\r\n\r\n";
        assert!(matches!(
            parse_head(nocolon.as_bytes(), Limits::default()),
            HeadParse::Invalid(HeadError { status: 400, .. })
        ));
        let endless = "GET / HTTP/1.1\r\nHost: aaaa";
        assert_eq!(
            parse_head(endless.as_bytes(), Limits::default()),
            HeadParse::Partial
        );
    }

    #[test]
    fn duplicate_key_is_refused() {
        let req = GOOD.replace(
            "Origin",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin",
        );
        let v = check_request(&head(&req));
        assert_eq!(v.status, 400);
        assert!(v.failure.unwrap().contains("sent 2 times"));
    }
}
