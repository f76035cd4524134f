//! The client's side of the upgrade: the request it sends and the
//! response checked as RFC 6455 4.1 asks a client to.

use super::*;

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
