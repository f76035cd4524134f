//! The page at `/` and the REST API under `/api/`. The rules that keep
//! other web pages out are the shell's HTTP gate (`crate::shell::http`).

use super::hub::{Hub, SwitchError};
pub use crate::shell::http::Request;
use crate::shell::http::{
    check_browser, http_response, is_loopback, json_error, json_response, state_change_refused,
    token_ok,
};
use kinetid_wsdump::wire::handshake::{error_response, HttpHead};
use serde_json::{json, Value};

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
    // Same-origin pages never preflight; anything that does is another site.
    if r.method == "OPTIONS" {
        return state_change_refused(r.method, r.head).unwrap_or_default();
    }
    if is_page {
        return match r.method {
            "GET" | "HEAD" if r.path != "/client" => {
                crate::shell::inspect::page_response(r.method == "HEAD")
            }
            "GET" | "HEAD" => http_response(
                200,
                "text/html; charset=utf-8",
                crate::shell::inspect::CLIENT_PAGE.as_bytes(),
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
                crate::shell::metrics::CONTENT_TYPE,
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
    if let Some(deny) = state_change_refused(r.method, r.head) {
        return deny;
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
