//! The page at `/` and the REST API under `/api/`, with the rules that keep
//! other web pages out.
//!
//! The listener runs next to the developer's browser, so every web page the
//! browser opens can send requests to it. What stops them:
//! * `Host` must name this listener: an IP literal, `localhost` (or a name
//!   under `.localhost`), or a name given with `--allow-host`. A DNS-rebinding
//!   page reaches us under its own host name and is refused with 421.
//! * A request that carries `Origin` (every cross-origin request a browser
//!   makes does) must come from the listener's own origin, `http://` + Host.
//! * A request that changes state (`POST`) needs `Content-Type:
//!   application/json`, which no HTML form and no `no-cors` fetch can send.
//! * CORS preflights (`OPTIONS`) are refused: the page itself never needs one.
//! * With `--api-token`, `Authorization: Bearer TOKEN` (scheme in any case),
//!   compared in constant time. Without one, only loopback peers (IPv4-mapped
//!   loopback included) reach the API.

use super::hub::{Hub, SwitchError};
use kinetid_wsdump::handshake::{self, error_response, HttpHead};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};

/// The host name of a `Host` header value (port and IPv6 brackets removed).
fn host_name(host: &str) -> &str {
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

fn json_error(status: u16, msg: &str) -> Vec<u8> {
    json_response(status, &json!({ "error": msg }), "")
}

/// A plain (non-upgrade) HTTP request, its body read.
pub struct Request<'a> {
    /// Method.
    pub method: &'a str,
    /// Path without the query.
    pub path: &'a str,
    /// The head.
    pub head: &'a HttpHead,
    /// The body (at most 64 KiB).
    pub body: &'a [u8],
    /// Who sent it.
    pub peer: SocketAddr,
}

/// The answer to a plain HTTP request.
pub async fn respond(hub: &Hub, r: &Request<'_>) -> Vec<u8> {
    let is_page = r.path == "/" || r.path == "/index.html" || r.path == "/client";
    let is_metrics = r.path == "/metrics";
    let is_api = r.path.starts_with("/api/") || is_metrics;
    if !is_page && !is_api {
        return error_response(404, "", &format!("nothing at {}: the page is /, devices connect to any path with an Upgrade, the API is under /api/, metrics at /metrics", kinetid_wsdump::escape::esc(r.path)));
    }
    if let Err((status, why)) = check_browser(r.head, &hub.s.allow_hosts) {
        return if is_api {
            json_error(status, &why)
        } else {
            error_response(status, "", &why)
        };
    }
    if r.method == "OPTIONS" {
        // Same-origin pages never preflight; anything that does is another site.
        return json_error(
            403,
            "cross-origin requests are not allowed (no CORS): use the page served at /",
        );
    }
    if is_page {
        return match r.method {
            "GET" | "HEAD" if r.path != "/client" => {
                crate::cmd::inspect::page_response(r.method == "HEAD")
            }
            "GET" | "HEAD" => http_response(
                200,
                "text/html; charset=utf-8",
                crate::cmd::inspect::CLIENT_PAGE.as_bytes(),
                r.method == "HEAD",
            ),
            _ => error_response(405, "Allow: GET, HEAD\r\n", "the page is GET only"),
        };
    }
    if let Some(deny) = authorize(hub, r) {
        return deny;
    }
    if is_metrics {
        return match r.method {
            "GET" | "HEAD" => http_response(
                200,
                crate::cmd::metrics::CONTENT_TYPE,
                hub.metrics_text().as_bytes(),
                r.method == "HEAD",
            ),
            _ => error_response(405, "Allow: GET, HEAD\r\n", "metrics are GET only"),
        };
    }
    api(hub, r).await
}

/// May this request read the event stream? `Some(response)` refuses
/// (the same Host, Origin, token and loopback rules as the API).
pub fn gate(hub: &Hub, r: &Request<'_>) -> Option<Vec<u8>> {
    if let Err((status, why)) = check_browser(r.head, &hub.s.allow_hosts) {
        return Some(json_error(status, &why));
    }
    authorize(hub, r)
}

/// Token or loopback rule; `Some(response)` refuses.
fn authorize(hub: &Hub, r: &Request<'_>) -> Option<Vec<u8>> {
    match &hub.s.api_token {
        Some(tok) if !token_ok(r.head, tok) => Some(json_response(
            401,
            &json!({"error": "missing or wrong Authorization: Bearer token"}),
            "WWW-Authenticate: Bearer\r\n",
        )),
        Some(_) => None,
        None if !is_loopback(&r.peer) => Some(json_error(
            403,
            "the API answers loopback peers only; start listen with --api-token (or KINETID_API_TOKEN) to open it",
        )),
        None => None,
    }
}

async fn api(hub: &Hub, r: &Request<'_>) -> Vec<u8> {
    let path = &r.path["/api/".len()..];
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match (r.method, segs.as_slice()) {
        ("GET", ["devices"]) => json_response(200, &hub.devices_json(), ""),
        ("GET", ["info"]) => json_response(
            200,
            &json!({
                "mode": "listen",
                "version": env!("CARGO_PKG_VERSION"),
                "started": hub.started,
                "history": hub.s.history,
                "echo": hub.s.echo,
            }),
            "",
        ),
        ("GET", ["devices", id]) => match hub.device_json(id) {
            Some(v) => json_response(200, &v, ""),
            None => json_error(404, &format!("unknown device {id}")),
        },
        ("POST", ["devices", id, "switch"]) => switch(hub, id, r).await,
        (_, ["devices"]) | (_, ["devices", _]) => {
            error_response(405, "Allow: GET\r\n", "method not allowed here")
        }
        (_, ["devices", _, "switch"]) => {
            error_response(405, "Allow: POST\r\n", "method not allowed here")
        }
        _ => json_error(404, &format!("no API endpoint /api/{path}")),
    }
}

async fn switch(hub: &Hub, id: &str, r: &Request<'_>) -> Vec<u8> {
    let ctype = r.head.get("content-type").unwrap_or("");
    let media = ctype.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/json") {
        return json_error(
            415,
            "state-changing requests need Content-Type: application/json",
        );
    }
    let v: Value = match serde_json::from_slice(r.body) {
        Ok(v) => v,
        Err(e) => return json_error(400, &format!("body must be JSON like {{\"on\":true}}: {e}")),
    };
    let on = if v.get("toggle").and_then(Value::as_bool) == Some(true) {
        None
    } else if let Some(b) = v.get("on").and_then(Value::as_bool) {
        Some(b)
    } else {
        return json_error(
            400,
            "body must be {\"on\":true}, {\"on\":false} or {\"toggle\":true}",
        );
    };
    match hub.switch(id, on).await {
        Ok(state) => json_response(200, &state, ""),
        Err(SwitchError::NotFound(m)) => json_error(404, &m),
        Err(SwitchError::Busy(m)) => {
            json_response(503, &json!({ "error": m }), "Retry-After: 1\r\n")
        }
        Err(SwitchError::Device(e)) => json_response(502, &e, ""),
        Err(SwitchError::Timeout) => json_error(
            504,
            &format!(
                "device {id} did not answer within {} s",
                hub.s.reply_timeout.as_secs_f64()
            ),
        ),
    }
}

/// The same rules for a WebSocket upgrade, when it comes from a browser: a
/// browser always sends `Origin`; devices and other clients usually send
/// none, and any `Host` is theirs to choose.
///
/// `origins` (`--allow-origin`) lets other pages connect as devices: a
/// page of the developer's own (`null` from a file, a dev server's
/// origin, or `*` for any). Their `Host` is still checked.
pub fn check_upgrade(
    head: &HttpHead,
    allow: &[String],
    origins: &[String],
) -> Result<(), (u16, String)> {
    let Some(origin) = head.get("origin").map(str::trim) else {
        return Ok(());
    };
    let listed = origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
    match check_browser(head, allow) {
        Err((403, _)) if listed => Ok(()),
        Err((403, why)) => Err((
            403,
            format!(
                "{why}; to let this page connect as a device, start listen with --allow-origin {}",
                if origin.is_empty() { "null" } else { origin }
            ),
        )),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kinetid_wsdump::handshake::{parse_head, HeadParse, Limits};

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
