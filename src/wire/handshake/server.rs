//! The server's side of the upgrade: the request checked rule by rule, and
//! the answer it gets.

use super::*;

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
