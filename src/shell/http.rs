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

use kinetid_wsdump::wire::handshake::{self, HttpHead};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

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
    fn mapped_loopback() {
        let p: SocketAddr = "[::ffff:127.0.0.1]:5".parse().unwrap();
        assert!(is_loopback(&p));
        let p: SocketAddr = "[::ffff:10.0.0.1]:5".parse().unwrap();
        assert!(!is_loopback(&p));
    }
}
