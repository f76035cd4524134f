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

/// What kind of request this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// It asks for a WebSocket upgrade (valid or not).
    WebSocket,
    /// Plain HTTP: no Upgrade and no Sec-WebSocket-Key header.
    Plain,
}

/// The server's judgement of an upgrade request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerVerdict {
    /// Method.
    pub method: String,
    /// Request target (path and query).
    pub target: String,
    /// Every check made, in order.
    pub checks: Vec<Check>,
    /// 101 or the error status.
    pub status: u16,
    /// Reason of the first failed check, if any.
    pub failure: Option<String>,
    /// Accept derivation, when the key was valid.
    pub accept: Option<AcceptSteps>,
    /// Subprotocols offered.
    pub offered_protocols: Vec<String>,
    /// Subprotocol selected (`kinetid.v1` when offered).
    pub protocol: Option<String>,
    /// Extensions offered.
    pub offered_extensions: Vec<String>,
    /// The `Sec-WebSocket-Extensions` the answer carries, if one was accepted.
    pub extension: Option<String>,
    /// What it agrees to (permessage-deflate).
    pub deflate: Option<crate::wire::deflate::Agreed>,
    /// Why each other offer was declined.
    pub declined_extensions: Vec<String>,
}

impl ServerVerdict {
    /// Did the upgrade succeed?
    pub fn accepted(&self) -> bool {
        self.status == 101
    }
}

/// Is this request an upgrade attempt at all?
pub fn request_kind(head: &HttpHead) -> RequestKind {
    if head.get("upgrade").is_some() || head.get("sec-websocket-key").is_some() {
        RequestKind::WebSocket
    } else {
        RequestKind::Plain
    }
}

/// Check an upgrade request (section 4.2.1) and decide the answer.
pub fn check_request(head: &HttpHead) -> ServerVerdict {
    check_request_with(head, Some(crate::wire::deflate::ServerPolicy::default()))
}

/// [`check_request`] with a compression policy (`None`: decline every
/// extension).
pub fn check_request_with(
    head: &HttpHead,
    policy: Option<crate::wire::deflate::ServerPolicy>,
) -> ServerVerdict {
    let parts: Vec<&str> = head.start_line.split(' ').collect();
    let (method, target, version) = if parts.len() == 3 {
        (parts[0], parts[1], parts[2])
    } else {
        ("", "", "")
    };
    let mut c = RequestChecks::default();
    c.check(
        "request line",
        parts.len() == 3 && target.starts_with('/') || target.starts_with("http"),
        format!("{:?}", head.start_line),
        "RFC 9112 3",
        400,
    );
    check_method_version_host(&mut c, head, method, version);
    check_upgrade_headers(&mut c, head);
    let key = check_key(&mut c, head);
    let offered_protocols = head.tokens("sec-websocket-protocol");
    let offered_extensions = head.tokens("sec-websocket-extensions");
    let (negotiated, declined_extensions) = match policy {
        Some(pol) => crate::wire::deflate::negotiate(&offered_extensions, pol),
        None => (
            None,
            offered_extensions
                .iter()
                .map(|e| format!("{e}: declined (compression is off)"))
                .collect(),
        ),
    };
    let (extension, deflate) = match negotiated {
        Some((h, a)) => (Some(h), Some(a)),
        None => (None, None),
    };
    let protocol = offered_protocols
        .iter()
        .find(|p| p.as_str() == KINETID_PROTOCOL)
        .cloned();
    let (status, failure) = match c.first_fail {
        Some((s, r)) => (s, Some(r)),
        None => (101, None),
    };
    ServerVerdict {
        method: method.to_string(),
        target: target.to_string(),
        checks: c.checks,
        status,
        failure,
        accept: key.map(accept_steps),
        offered_protocols,
        protocol,
        offered_extensions,
        extension,
        deflate,
        declined_extensions,
    }
}

/// A request's checks as they are made: each kept, the first failure's
/// status and reason remembered (it is the answer).
#[derive(Default)]
struct RequestChecks {
    checks: Vec<Check>,
    first_fail: Option<(u16, String)>,
}

impl RequestChecks {
    fn check(
        &mut self,
        name: &'static str,
        ok: bool,
        detail: String,
        rfc: &'static str,
        status: u16,
    ) {
        if !ok && self.first_fail.is_none() {
            self.first_fail = Some((status, format!("{name}: {detail}")));
        }
        self.checks.push(Check {
            name,
            ok,
            detail,
            rfc,
        });
    }
}

/// The method, the HTTP version and the one Host (RFC 6455 4.2.1 (1), (2)).
fn check_method_version_host(c: &mut RequestChecks, head: &HttpHead, method: &str, version: &str) {
    c.check(
        "method",
        method == "GET",
        format!("{method} (must be GET)"),
        "RFC 6455 4.2.1 (1)",
        405,
    );
    let v_ok = version.strip_prefix("HTTP/").and_then(|v| {
        let (a, b) = v.split_once('.')?;
        Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?))
    });
    c.check(
        "HTTP version",
        matches!(v_ok, Some((1, m)) if m >= 1) || matches!(v_ok, Some((a, _)) if a > 1),
        format!("{version} (must be HTTP/1.1 or later)"),
        "RFC 6455 4.2.1 (1)",
        400,
    );
    let hosts: Vec<&str> = head.all("host").collect();
    c.check(
        "Host",
        hosts.len() == 1 && !hosts[0].is_empty(),
        match hosts.len() {
            0 => "missing".to_string(),
            1 => hosts[0].to_string(),
            n => format!("{n} Host headers"),
        },
        "RFC 6455 4.2.1 (2)",
        400,
    );
}

/// Upgrade, Connection and the protocol version (RFC 6455 4.2.1 (3), (4), (6)).
fn check_upgrade_headers(c: &mut RequestChecks, head: &HttpHead) {
    let must = |v: &[String], token: &str| {
        if v.is_empty() {
            format!("missing (must contain the token {token})")
        } else {
            format!("{} (must contain the token {token})", v.join(", "))
        }
    };
    let upgrade = head.tokens("upgrade");
    c.check(
        "Upgrade",
        upgrade.iter().any(|t| t.eq_ignore_ascii_case("websocket")),
        must(&upgrade, "websocket"),
        "RFC 6455 4.2.1 (3)",
        400,
    );
    let conn = head.tokens("connection");
    c.check(
        "Connection",
        conn.iter().any(|t| t.eq_ignore_ascii_case("upgrade")),
        must(&conn, "Upgrade"),
        "RFC 6455 4.2.1 (4)",
        400,
    );
    let versions: Vec<&str> = head.all("sec-websocket-version").collect();
    c.check(
        "Sec-WebSocket-Version",
        versions.len() == 1 && versions[0] == "13",
        match versions.len() {
            0 => "missing (must be 13)".to_string(),
            1 => format!("{} (must be 13)", versions[0]),
            _ => format!("{} (sent more than once; must be 13)", versions.join(", ")),
        },
        "RFC 6455 4.2.1 (6)",
        426,
    );
}

/// The key: once, base64 of 16 bytes (RFC 6455 4.2.1 (5)); the key when it is.
fn check_key<'h>(c: &mut RequestChecks, head: &'h HttpHead) -> Option<&'h str> {
    let keys: Vec<&str> = head.all("sec-websocket-key").collect();
    let (key_ok, key_detail) = match keys.as_slice() {
        [] => (false, "missing".to_string()),
        [""] => (false, "empty".to_string()),
        [k] => match base64::engine::general_purpose::STANDARD.decode(k) {
            Ok(b) if b.len() == 16 => (true, format!("{k} (base64 of 16 bytes)")),
            Ok(b) => (
                false,
                format!("{k} decodes to {} bytes; must be 16", b.len()),
            ),
            Err(e) => (false, format!("{k} is not valid base64 ({e})")),
        },
        _ => (
            false,
            format!("sent {} times; must be sent once", keys.len()),
        ),
    };
    c.check(
        "Sec-WebSocket-Key",
        key_ok,
        key_detail,
        "RFC 6455 4.2.1 (5)",
        400,
    );
    key_ok.then(|| keys[0])
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

/// The exact bytes a server answers with for a verdict.
pub fn server_response(v: &ServerVerdict) -> Vec<u8> {
    if v.accepted() {
        let accept = v
            .accept
            .as_ref()
            .map(|a| a.accept.as_str())
            .unwrap_or_default();
        let mut s = format!("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n");
        if let Some(p) = &v.protocol {
            s.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        if let Some(e) = &v.extension {
            s.push_str(&format!("Sec-WebSocket-Extensions: {e}\r\n"));
        }
        s.push_str("\r\n");
        s.into_bytes()
    } else {
        let extra = match v.status {
            426 => "Sec-WebSocket-Version: 13\r\n",
            405 => "Allow: GET\r\n",
            _ => "",
        };
        error_response(v.status, extra, v.failure.as_deref().unwrap_or(""))
    }
}

/// A small plain-text error response that closes the connection.
pub fn error_response(status: u16, extra_headers: &str, body: &str) -> Vec<u8> {
    let body = format!("{status} {}: {body}\n", reason_phrase(status));
    format!(
        "HTTP/1.1 {status} {}\r\n{extra_headers}Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        reason_phrase(status),
        body.len()
    )
    .into_bytes()
}

/// A client's upgrade request.
pub fn client_request(host: &str, path: &str, key: &str, protocols: &[&str]) -> Vec<u8> {
    let mut s = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n");
    if !protocols.is_empty() {
        s.push_str(&format!(
            "Sec-WebSocket-Protocol: {}\r\n",
            protocols.join(", ")
        ));
    }
    s.push_str("User-Agent: kinetid-wsdump\r\n\r\n");
    s.into_bytes()
}

/// Why a client refuses the server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientHandshakeError {
    /// The status line is not `HTTP/1.1 101`.
    Status(String),
    /// No `Upgrade: websocket`.
    Upgrade(String),
    /// No `Connection: Upgrade`.
    Connection(String),
    /// No Sec-WebSocket-Accept.
    MissingAccept,
    /// Wrong Sec-WebSocket-Accept.
    AcceptMismatch {
        /// What the key demands.
        expected: String,
        /// What the server sent.
        got: String,
    },
    /// A subprotocol the client did not offer.
    Protocol(String),
    /// An extension the client did not offer.
    Extension(String),
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientHandshakeError::Status(s) => write!(
                f,
                "server did not switch protocols: {s:?} (RFC 6455 4.1: the status must be 101)"
            ),
            ClientHandshakeError::Upgrade(s) => write!(
                f,
                "response Upgrade is {s:?}; must be websocket (RFC 6455 4.1)"
            ),
            ClientHandshakeError::Connection(s) => write!(
                f,
                "response Connection is {s:?}; must contain Upgrade (RFC 6455 4.1)"
            ),
            ClientHandshakeError::MissingAccept => {
                write!(f, "response has no Sec-WebSocket-Accept (RFC 6455 4.1)")
            }
            ClientHandshakeError::AcceptMismatch { expected, got } => {
                write!(
                    f,
                    "Sec-WebSocket-Accept is {got} but the key demands {expected} (RFC 6455 4.1)"
                )
            }
            ClientHandshakeError::Protocol(p) => write!(
                f,
                "server selected subprotocol {p:?}, which was not offered (RFC 6455 4.1)"
            ),
            ClientHandshakeError::Extension(e) => write!(
                f,
                "server selected extension {e:?}, which was not offered (RFC 6455 4.1)"
            ),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// The client's judgement of a server response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientVerdict {
    /// Status code (0 when the status line is malformed).
    pub status: u16,
    /// Every check made.
    pub checks: Vec<Check>,
    /// The first failure.
    pub error: Option<ClientHandshakeError>,
    /// Selected subprotocol.
    pub protocol: Option<String>,
    /// permessage-deflate as agreed, when the response accepted it.
    pub deflate: Option<crate::wire::deflate::Agreed>,
}

/// The verdict for a response to a plain HTTP request: no handshake checks.
pub fn plain_response(head: &HttpHead) -> ClientVerdict {
    let status = head
        .start_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    ClientVerdict {
        status,
        checks: Vec::new(),
        error: None,
        protocol: None,
        deflate: None,
    }
}

/// Check a server's response against the key the client sent (section 4.1).
/// `key` is `None` when the request was not seen (a capture starting late):
/// the accept value is then shown but not verified.
pub fn check_response(head: &HttpHead, key: Option<&str>, offered: &[&str]) -> ClientVerdict {
    check_response_with(head, key, offered, &[])
}

/// [`check_response`] knowing the extensions the request offered.
pub fn check_response_with(
    head: &HttpHead,
    key: Option<&str>,
    offered: &[&str],
    offered_extensions: &[String],
) -> ClientVerdict {
    let mut c = ResponseChecks::default();
    let parts: Vec<&str> = head.start_line.splitn(3, ' ').collect();
    let status = parts
        .get(1)
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(0);
    let st_ok = parts.first().is_some_and(|v| v.starts_with("HTTP/1.")) && status == 101;
    c.push("status", st_ok, head.start_line.clone(), "RFC 6455 4.1");
    if !st_ok {
        c.fail(ClientHandshakeError::Status(head.start_line.clone()));
    }
    let up = head.tokens("upgrade");
    let up_ok = up.iter().any(|t| t.eq_ignore_ascii_case("websocket"));
    c.push("Upgrade", up_ok, up.join(", "), "RFC 6455 4.1");
    if !up_ok && st_ok {
        c.fail(ClientHandshakeError::Upgrade(up.join(", ")));
    }
    let conn = head.tokens("connection");
    let c_ok = conn.iter().any(|t| t.eq_ignore_ascii_case("upgrade"));
    c.push("Connection", c_ok, conn.join(", "), "RFC 6455 4.1");
    if !c_ok && st_ok {
        c.fail(ClientHandshakeError::Connection(conn.join(", ")));
    }
    check_accept(&mut c, head, key, st_ok);
    let protocol = head.get("sec-websocket-protocol").map(str::to_string);
    if let Some(p) = &protocol {
        let ok = offered.iter().any(|o| o == p) || key.is_none();
        c.push("Sec-WebSocket-Protocol", ok, p.clone(), "RFC 6455 4.1");
        if !ok {
            c.fail(ClientHandshakeError::Protocol(p.clone()));
        }
    }
    let deflate = check_extensions(&mut c, head, offered_extensions);
    ClientVerdict {
        status,
        checks: c.checks,
        error: c.error,
        protocol,
        deflate,
    }
}

/// A response's checks as they are made, and the first error.
#[derive(Default)]
struct ResponseChecks {
    checks: Vec<Check>,
    error: Option<ClientHandshakeError>,
}

impl ResponseChecks {
    fn push(&mut self, name: &'static str, ok: bool, detail: String, rfc: &'static str) {
        self.checks.push(Check {
            name,
            ok,
            detail,
            rfc,
        });
    }

    fn fail(&mut self, e: ClientHandshakeError) {
        self.error.get_or_insert(e);
    }
}

/// Sec-WebSocket-Accept against the key the request sent (RFC 6455 4.1).
fn check_accept(c: &mut ResponseChecks, head: &HttpHead, key: Option<&str>, st_ok: bool) {
    const NAME: &str = "Sec-WebSocket-Accept";
    match (head.get("sec-websocket-accept"), key) {
        (None, _) => {
            c.push(NAME, !st_ok, "missing".into(), "RFC 6455 4.1");
            if st_ok {
                c.fail(ClientHandshakeError::MissingAccept);
            }
        }
        (Some(got), Some(k)) => {
            let expected = accept_key(k);
            let ok = got == expected;
            let detail = if ok {
                format!("{got} (matches the key)")
            } else {
                format!("{got}; the key demands {expected}")
            };
            c.push(NAME, ok, detail, "RFC 6455 4.1");
            if !ok {
                c.fail(ClientHandshakeError::AcceptMismatch {
                    expected,
                    got: got.to_string(),
                });
            }
        }
        (Some(got), None) => {
            let detail = format!("{got} (request not seen: not verified)");
            c.push(NAME, true, detail, "RFC 6455 4.1");
        }
    }
}

/// Sec-WebSocket-Extensions against what was offered (RFC 7692 5): the
/// agreed permessage-deflate, if any.
fn check_extensions(
    c: &mut ResponseChecks,
    head: &HttpHead,
    offered_extensions: &[String],
) -> Option<crate::wire::deflate::Agreed> {
    let ext: Vec<&str> = head.all("sec-websocket-extensions").collect();
    if ext.is_empty() {
        return None;
    }
    let value = ext.join(", ");
    match crate::wire::deflate::check_response(offered_extensions, &value) {
        Ok(a) => {
            let detail = format!("{value} (offered; agreed: {})", describe(&a));
            c.push("Sec-WebSocket-Extensions", true, detail, "RFC 7692 5");
            Some(a)
        }
        Err(why) => {
            let detail = format!("{value}: {why}");
            c.push("Sec-WebSocket-Extensions", false, detail, "RFC 6455 4.1");
            c.fail(ClientHandshakeError::Extension(value));
            None
        }
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
