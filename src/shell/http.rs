//! The HTTP gate every web server of the tool goes through (listen's API and
//! page, the proxy's, `replay --serve`): the rules that keep other web
//! pages out, and the responses.
//!
//! The listener runs next to the developer's browser, so every web page the
//! browser opens can send requests to it. What stops them:
//! * `Host` must name this listener: an IP literal, `localhost` (or a name
//!   under `.localhost`), or a name given with `--allow-host`. A DNS-rebinding
//!   page reaches us under its own host name and is refused with 421.
//! * A request that carries `Origin` (every cross-origin request a browser
//!   makes does) must come from the server's own origin, `http://` + Host.
//! * A request that changes state (`POST`) needs `Content-Type:
//!   application/json`, which no HTML form and no `no-cors` fetch can send.
//! * CORS preflights (`OPTIONS`) are refused: the page itself never needs one.
//! * With `--api-token`, `Authorization: Bearer TOKEN` (scheme in any case),
//!   compared in constant time. Without one, only loopback peers (IPv4-mapped
//!   loopback included) reach the API.

use kinetid_wsdump::wire::handshake::{self, HeadParse, HttpHead, Limits};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use tokio::io::{AsyncRead, AsyncReadExt};

/// The host name of a `Host` header value (port and IPv6 brackets removed).
pub fn host_name(host: &str) -> &str {
    let h = host.trim();
    if let Some(rest) = h.strip_prefix('[') {
        return rest.split(']').next().unwrap_or("");
    }
    match h.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => h,
    }
}

/// Does `host` (a `Host` header value) name this listener? IP literals are
/// safe (a rebinding attack needs a name), and so is `localhost`.
pub fn host_allowed(host: &str, allow: &[String]) -> bool {
    let name = host_name(host).trim_end_matches('.');
    if name.is_empty() {
        return false;
    }
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || allow.iter().any(|a| a.eq_ignore_ascii_case(name))
}

/// The browser-side checks: `Host`, then `Origin` when present. `Err`
/// carries the HTTP status and the reason.
pub fn check_browser(head: &HttpHead, allow: &[String]) -> Result<(), (u16, String)> {
    let host = head.get("host").unwrap_or("");
    if !host_allowed(host, allow) {
        return Err((
            421,
            format!("Host {host:?} does not name this listener (a DNS-rebinding page?); use an IP address or localhost, or start listen with --allow-host NAME"),
        ));
    }
    if let Some(origin) = head.get("origin") {
        // http:// or https:// (with --tls): one port serves one of them, so
        // either names this listener's own pages.
        let own = format!("http://{}", host.trim());
        let own_tls = format!("https://{}", host.trim());
        let origin = origin.trim();
        if !origin.eq_ignore_ascii_case(&own) && !origin.eq_ignore_ascii_case(&own_tls) {
            return Err((
                403,
                format!("requests from origin {origin:?} are refused: only pages served by this listener ({own}) may use it"),
            ));
        }
    }
    if head
        .get("sec-fetch-site")
        .is_some_and(|s| s.eq_ignore_ascii_case("cross-site"))
    {
        return Err((403, "cross-site requests are refused".into()));
    }
    Ok(())
}

/// Equal in time that depends only on the lengths, not on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Does the `Authorization` header carry the token (`Bearer`, any case)?
pub fn token_ok(head: &HttpHead, token: &str) -> bool {
    let Some(v) = head.get("authorization") else {
        return false;
    };
    let v = v.trim();
    let Some((scheme, cred)) = v.split_once(' ') else {
        return false;
    };
    scheme.eq_ignore_ascii_case("bearer")
        && constant_time_eq(cred.trim().as_bytes(), token.as_bytes())
}

/// Is `peer` on this machine (IPv4-mapped IPv6 loopback included)?
pub fn is_loopback(peer: &SocketAddr) -> bool {
    peer.ip().to_canonical().is_loopback()
}

/// A response with a body of `ctype`, never cached, framed or sniffed.
pub fn http_response(status: u16, ctype: &str, body: &[u8], head_only: bool) -> Vec<u8> {
    let mut v = format!(
        "HTTP/1.1 {status} {}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nX-Frame-Options: DENY\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n",
        handshake::reason_phrase(status),
        body.len()
    )
    .into_bytes();
    if !head_only {
        v.extend_from_slice(body);
    }
    v
}

/// A JSON response.
pub fn json_response(status: u16, v: &Value, extra: &str) -> Vec<u8> {
    let body = format!("{v}\n");
    let mut r = format!(
        "HTTP/1.1 {status} {}\r\n{extra}Content-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n",
        handshake::reason_phrase(status),
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

pub fn json_error(status: u16, msg: &str) -> Vec<u8> {
    json_response(status, &json!({ "error": msg }), "")
}

/// Request bodies are at most this long (every API body is a small JSON).
pub const BODY_MAX: usize = 64 * 1024;

/// A plain (non-upgrade) HTTP request, its body read.
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// The head.
    pub head: &'a HttpHead,
    /// The body (at most [`BODY_MAX`]).
    pub body: &'a [u8],
    /// Who sent it.
    pub peer: SocketAddr,
}

/// The method and the path (query removed) of a request's start line.
pub fn method_and_path(head: &HttpHead) -> (&str, &str) {
    let mut parts = head.start_line.split(' ');
    let method = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("").split('?').next().unwrap_or("");
    (method, path)
}

/// Is the body JSON by its `Content-Type` (the media type, parameters
/// aside)? No HTML form and no `no-cors` fetch can send this type, so a
/// request that changes state must carry it.
pub fn is_json(head: &HttpHead) -> bool {
    let ctype = head.get("content-type").unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    media.eq_ignore_ascii_case("application/json")
}

/// The refusal every server gives a request that changes state without
/// a JSON body, or a CORS preflight (same-origin pages never send one).
pub fn state_change_refused(method: &str, head: &HttpHead) -> Option<Vec<u8>> {
    match method {
        "OPTIONS" => Some(json_error(
            403,
            "cross-origin requests are not allowed (no CORS): use the page this server serves",
        )),
        "POST" | "PUT" | "PATCH" | "DELETE" if !is_json(head) => Some(json_error(
            415,
            "state-changing requests need Content-Type: application/json",
        )),
        _ => None,
    }
}

/// Read the body `head` announces after the `body` bytes already read, by
/// `deadline`; every chunk read is shown to `seen` first. `Err` is the
/// response for a body over [`BODY_MAX`].
pub async fn read_body<R: AsyncRead + Unpin>(
    sock: &mut R,
    head: &HttpHead,
    body: &mut Vec<u8>,
    deadline: tokio::time::Instant,
    mut seen: impl FnMut(&[u8]),
) -> Result<(), Vec<u8>> {
    let want = head
        .get("content-length")
        .and_then(|v| v.trim().parse::<usize>().ok())
        .unwrap_or(0);
    if want > BODY_MAX {
        return Err(json_error(413, "request bodies are at most 64 KiB"));
    }
    // On the heap: an array here would sit in the future of every
    // connection that might read a request, idle devices included.
    let mut buf = vec![0u8; 4096];
    while body.len() < want {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => {
                seen(&buf[..n]);
                body.extend_from_slice(&buf[..n]);
            }
            _ => break,
        }
    }
    body.truncate(want);
    Ok(())
}

/// Read a request head by `deadline`. `Err` carries the response to send
/// (408 too slow, the head's own status when malformed), or nothing when
/// the peer left.
pub async fn read_head<R: AsyncRead + Unpin>(
    sock: &mut R,
    limits: Limits,
    deadline: tokio::time::Instant,
) -> Result<(HttpHead, Vec<u8>), Option<Vec<u8>>> {
    let mut head = Vec::new();
    // On the heap: an array here would sit in the future of every
    // connection that might read a request, idle devices included.
    let mut buf = vec![0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, sock.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            Ok(_) => return Err(None),
            Err(_) => {
                return Err(Some(handshake::error_response(
                    408,
                    "",
                    "request head not finished in time",
                )))
            }
        }
        match handshake::parse_head(&head, limits) {
            HeadParse::Partial => continue,
            HeadParse::Invalid(e) => {
                return Err(Some(handshake::error_response(e.status, "", &e.reason)))
            }
            HeadParse::Complete(h) => {
                let rest = head.split_off(h.len);
                return Ok((h, rest));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetid_wsdump::wire::handshake::{parse_head, HeadParse, Limits};

    fn head(extra: &str) -> HttpHead {
        let raw = format!("POST /api/devices HTTP/1.1\r\n{extra}\r\n");
        match parse_head(raw.as_bytes(), Limits::default()) {
            HeadParse::Complete(h) => h,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hosts() {
        let none: Vec<String> = vec![];
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "LOCALHOST",
            "[::1]:8080",
            "192.168.1.5",
            "app.localhost:1",
        ] {
            assert!(host_allowed(ok, &none), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "evil.example",
            "",
            "127.0.0.1.evil.example",
            "localhost.evil.example",
        ] {
            assert!(!host_allowed(bad, &none), "{bad}");
        }
        assert!(host_allowed("laptop.lan:8080", &["laptop.lan".into()]));
    }

    #[test]
    fn origins() {
        let none: Vec<String> = vec![];
        assert!(check_browser(&head("Host: 127.0.0.1:8080\r\n"), &none).is_ok());
        assert!(check_browser(
            &head("Host: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:8080\r\n"),
            &none
        )
        .is_ok());
        assert_eq!(
            check_browser(
                &head("Host: 127.0.0.1:8080\r\nOrigin: http://127.0.0.1:9999\r\n"),
                &none
            )
            .unwrap_err()
            .0,
            403
        );
        assert_eq!(
            check_browser(&head("Host: 127.0.0.1:8080\r\nOrigin: null\r\n"), &none)
                .unwrap_err()
                .0,
            403
        );
        assert_eq!(
            check_browser(
                &head("Host: evil.example:8080\r\nOrigin: http://evil.example:8080\r\n"),
                &none
            )
            .unwrap_err()
            .0,
            421
        );
        assert_eq!(
            check_browser(
                &head("Host: 127.0.0.1:8080\r\nSec-Fetch-Site: cross-site\r\n"),
                &none
            )
            .unwrap_err()
            .0,
            403
        );
    }

    #[test]
    fn tokens() {
        assert!(token_ok(
            &head("Authorization: Bearer s3cret\r\n"),
            "s3cret"
        ));
        assert!(token_ok(
            &head("Authorization: bearer s3cret\r\n"),
            "s3cret"
        ));
        assert!(token_ok(
            &head("Authorization: BEARER  s3cret \r\n"),
            "s3cret"
        ));
        assert!(!token_ok(
            &head("Authorization: Bearer s3cre\r\n"),
            "s3cret"
        ));
        assert!(!token_ok(
            &head("Authorization: Basic s3cret\r\n"),
            "s3cret"
        ));
        assert!(!token_ok(&head(""), "s3cret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b"b"));
    }

    #[test]
    fn only_json_may_change_state() {
        assert!(is_json(&head("Content-Type: application/json\r\n")));
        assert!(is_json(&head(
            "Content-Type: Application/JSON; charset=utf-8\r\n"
        )));
        assert!(!is_json(&head("Content-Type: application/jsonx\r\n")));
        assert!(!is_json(&head("Content-Type: text/plain\r\n")));
        assert!(!is_json(&head("")));
        let plain = head("Content-Type: text/plain\r\n");
        assert!(state_change_refused("GET", &plain).is_none());
        let r = state_change_refused("POST", &plain).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 415 "));
        let r = state_change_refused("OPTIONS", &plain).unwrap();
        assert!(r.starts_with(b"HTTP/1.1 403 "));
        let j = head("Content-Type: application/json\r\n");
        assert!(state_change_refused("POST", &j).is_none());
        assert_eq!(method_and_path(&j), ("POST", "/api/devices"));
    }

    #[tokio::test]
    async fn bodies_are_bounded_and_heads_timed() {
        let h = head("Content-Length: 70000\r\n");
        let mut body = Vec::new();
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        let r = read_body(&mut &b""[..], &h, &mut body, far, |_| {}).await;
        assert!(r.unwrap_err().starts_with(b"HTTP/1.1 413 "));
        let h = head("Content-Length: 4\r\n");
        let mut body = b"ab".to_vec();
        let mut seen = Vec::new();
        read_body(&mut &b"cdef"[..], &h, &mut body, far, |b| {
            seen.extend_from_slice(b)
        })
        .await
        .unwrap();
        assert_eq!(body, b"abcd");
        assert_eq!(seen, b"cdef");
        let (h, rest) = read_head(
            &mut &b"GET / HTTP/1.1\r\nHost: a\r\n\r\nxy"[..],
            Limits::default(),
            far,
        )
        .await
        .unwrap();
        assert_eq!(h.start_line, "GET / HTTP/1.1");
        assert_eq!(rest, b"xy");
        let r = read_head(&mut &b"GET / HTTP/1.1\r\n"[..], Limits::default(), far).await;
        assert!(matches!(r, Err(None)), "the peer left");
    }

    #[test]
    fn mapped_loopback() {
        let p: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(is_loopback(&p));
        let p: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert!(!is_loopback(&p));
    }
}
