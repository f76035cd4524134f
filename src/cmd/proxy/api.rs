//! The proxy's own API: the device table, switches and frames injected
//! into a forwarded connection.

use super::*;

/// The proxy's own API, on the port devices use, for this machine only
/// (loopback peers, the same Host/Origin/content-type rules as `listen`):
///
/// * `GET /api/devices`: the connections being forwarded and their devices;
/// * `POST /api/devices/ID/switch` with `{"on":true}`, `{"on":false}` or
///   `{"toggle":true}`: a Kinetid `switch` to the device, as if from the
///   backend (its `state` answer goes on to the backend);
/// * `POST /api/conns/N/inject` with `{"dir":"down"|"up"}` and one of
///   `"text"`, `"hex"` (a binary frame), `"ping"` or `"close"` (a code, and
///   `"reason"`): a frame to the device (`down`) or, masked with a fresh
///   key, to the upstream (`up`).
///
/// Injected frames go between forwarded frames, never inside one, and are
/// marked in the output. Answers `202` once the frame is queued.
pub(super) async fn api(
    link: &mut Link,
    dev: &mut Dev,
    h: &handshake::HttpHead,
    mut body: Vec<u8>,
) {
    use crate::shell::http::{check_browser, is_loopback};
    let (method, path) = crate::shell::http::method_and_path(h);
    let (method, path) = (method.to_string(), path.to_string());
    let resp = 'r: {
        if !is_loopback(&link.peer) {
            break 'r err(403, "the proxy's API answers this machine only");
        }
        if let Err((status, why)) = check_browser(h, &[]) {
            break 'r err(status, &why);
        }
        match (method.as_str(), path.as_str()) {
            ("GET" | "HEAD", "/api/inspector") => {
                break 'r crate::shell::inspect::page_response(method == "HEAD");
            }
            ("GET", "/api/metrics") => {
                let sh = &link.sh;
                let text = crate::shell::metrics::proxy_text(
                    sh.next_conn.load(Ordering::Relaxed),
                    sh.open.load(Ordering::Relaxed),
                    sh.bytes_up.load(Ordering::Relaxed),
                    sh.bytes_down.load(Ordering::Relaxed),
                );
                break 'r crate::shell::http::http_response(
                    200,
                    crate::shell::metrics::CONTENT_TYPE,
                    text.as_bytes(),
                    false,
                );
            }
            ("GET", "/api/info") => {
                break 'r reply(
                    200,
                    serde_json::json!({
                        "mode": "proxy",
                        "started": link.sh.started,
                        "upstream": format!("{}://{}", if link.sh.upstream.tls { "wss" } else { "ws" }, link.sh.upstream.host),
                        "version": env!("CARGO_PKG_VERSION"),
                    }),
                );
            }
            ("GET", "/api/events") => {
                // Not annotated: events about the events a page reads
                // would feed themselves.
                let mut stop = link.sh.stopping.subscribe();
                let sh = link.sh.clone();
                let end = crate::shell::inspect::stream(&sh.outs.bus, dev, true, async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
                if let Some(why) = end.why() {
                    tell(link, &format!("the browser {why} and was disconnected from /api/events (the devices are never slowed for a page)"));
                }
                return;
            }
            _ => {}
        }
        let deadline = tokio::time::Instant::now() + link.sh.head_timeout;
        let read = crate::shell::http::read_body(dev, h, &mut body, deadline, |b| {
            link.observe(Direction::C2S, b)
        });
        if let Err(too_big) = read.await {
            break 'r too_big;
        }
        if let Some(deny) = crate::shell::http::state_change_refused(&method, h) {
            break 'r deny;
        }
        let segs: Vec<&str> = path.trim_start_matches("/api/").split('/').collect();
        match (method.as_str(), segs.as_slice()) {
            ("GET", ["devices"]) => reply(200, devices_json(&link.sh)),
            ("POST", ["devices", id, "switch"]) => switch_call(&link.sh, id, &body).await,
            ("POST", ["conns", n, "inject"]) => inject_call(&link.sh, n, &body),
            _ => err(404, "no such API call (GET /api/devices, POST /api/devices/ID/switch, POST /api/conns/N/inject)"),
        }
    };
    link.observe(Direction::S2C, &resp);
    let _ = tokio::time::timeout(Duration::from_secs(2), dev.write_all(&resp)).await;
}

fn reply(status: u16, v: serde_json::Value) -> Vec<u8> {
    crate::shell::http::json_response(status, &v, "")
}

fn err(status: u16, msg: &str) -> Vec<u8> {
    reply(status, serde_json::json!({ "error": msg }))
}

/// `POST /api/devices/ID/switch`.
async fn switch_call(sh: &Shared, id: &str, body: &[u8]) -> Vec<u8> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return err(400, "the body is not JSON");
    };
    let on = match (v["on"].as_bool(), v["toggle"].as_bool()) {
        (_, Some(true)) => None,
        (Some(on), _) => Some(on),
        _ => {
            return err(
                400,
                r#"the body is {"on":true}, {"on":false} or {"toggle":true}"#,
            )
        }
    };
    match switch_device(sh, id, on).await {
        Ok(v) => reply(200, v),
        Err((status, v)) => reply(status, v),
    }
}

/// `POST /api/conns/N/inject`.
fn inject_call(sh: &Shared, n: &str, body: &[u8]) -> Vec<u8> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return err(400, "the body is not JSON");
    };
    let Some(d) = v["dir"].as_str() else {
        return err(400, INJECT_BODY);
    };
    let dir = match d {
        "down" => Direction::S2C,
        "up" => Direction::C2S,
        _ => {
            return err(
                400,
                r#""dir" is "down" (to the device) or "up" (to the upstream)"#,
            )
        }
    };
    let Ok(n) = n.parse::<u64>() else {
        return err(404, &format!("no connection {n} is being forwarded"));
    };
    match inject(sh, n, dir, &v) {
        Ok(text) => reply(
            202,
            serde_json::json!({"conn": n, "dir": d, "injected": text}),
        ),
        Err((status, why)) => err(status, &why),
    }
}

/// The devices seen through the proxy, as `listen`'s `/api/devices` lists
/// them (the fields a proxy can know), sorted by id.
pub(super) fn devices_json(sh: &Shared) -> serde_json::Value {
    sh.devices.lock().expect("devices").json()
}

/// Send a Kinetid switch to a device as if from the backend (`on`: None
/// toggles) and wait for its answer: its `state`, or an HTTP status and a
/// JSON error.
pub(super) async fn switch_device(
    sh: &Shared,
    id: &str,
    on: Option<bool>,
) -> Result<serde_json::Value, (u16, serde_json::Value)> {
    let e = |status: u16, msg: String| (status, serde_json::json!({ "error": msg }));
    // One lock at a time (the console takes conns, then devices).
    let conn = sh.devices.lock().expect("devices").online_conn(id);
    let target = conn.and_then(|n| Some((n, sh.conns.lock().expect("conns").get(&n)?.tx.clone())));
    let Some((conn, tx)) = target else {
        return Err(e(
            404,
            format!("no device {id} is connected through the proxy"),
        ));
    };
    let (cmd, arx) = sh.commands.start(conn);
    let text = kinetid_wsdump::kinetid::switch(cmd, id, on);
    let mut frame = Vec::new();
    kinetid_wsdump::engine::quirk::server_frame(
        &mut frame,
        kinetid_wsdump::wire::frame::OpCode::Text,
        text.as_bytes(),
    );
    if tx.try_send((Direction::S2C, frame)).is_err() {
        sh.commands.forget(conn, cmd);
        return Err(e(
            503,
            "that connection has too many injections waiting".into(),
        ));
    }
    // The device's state (or error) answers; it also goes on to the
    // upstream, as the device sent it (noted there).
    let answer = tokio::time::timeout(SWITCH_WAIT, arx).await;
    sh.commands.forget(conn, cmd);
    match answer {
        Ok(Ok(Err(v))) => Err((
            502,
            serde_json::json!({"error": "the device answered error", "answer": v, "conn": conn, "injected": text}),
        )),
        Ok(Ok(Ok(v))) => Ok(v),
        Ok(Err(_)) => Err(e(502, "the device's connection ended before it answered".into())),
        Err(_) => Err(e(
            504,
            format!(
                "the switch was injected (connection {conn}, id {cmd}) but the device did not answer within {} s",
                SWITCH_WAIT.as_secs()
            ),
        )),
    }
}

/// Queue a frame described by an injection body (`text`, `hex`, `ping`,
/// `close`) for connection `n` in `dir`; what was queued, or why not.
pub(super) fn inject(
    sh: &Shared,
    n: u64,
    dir: Direction,
    v: &serde_json::Value,
) -> Result<String, (u16, String)> {
    let (op, payload) = injected_frame(v).map_err(|why| (400, why))?;
    let mut frame = Vec::new();
    let opts = kinetid_wsdump::wire::frame::EncodeOptions {
        mask: (dir == Direction::C2S).then(|| kinetid_wsdump::wire::frame::MaskKey(rand::random())),
        ..kinetid_wsdump::wire::frame::EncodeOptions::server()
    };
    kinetid_wsdump::wire::frame::encode_frame(&mut frame, op, &payload, opts);
    let text = format!("{} frame, {} payload bytes", op.name(), payload.len());
    let tx = sh
        .conns
        .lock()
        .expect("conns")
        .get(&n)
        .map(|e| e.tx.clone());
    match tx {
        None => Err((404, format!("no connection {n} is being forwarded"))),
        Some(tx) => match tx.try_send((dir, frame)) {
            Ok(()) => Ok(text),
            Err(_) => Err((
                503,
                "that connection has too many injections waiting".into(),
            )),
        },
    }
}

/// How long `POST /api/devices/ID/switch` waits for the device's answer.
pub(super) const SWITCH_WAIT: Duration = Duration::from_secs(10);

/// What `POST /api/conns/N/inject` takes besides `dir`.
pub(super) const INJECT_BODY: &str = r#"the body is {"dir":"down"|"up"} with one of "text":"...", "hex":"0a1b..." (binary), "ping":"..." or "close":CODE (and "reason":"...")"#;

/// The frame an injection body asks for: its opcode and payload, checked
/// (a control frame's payload is at most 125 bytes; a close code must be
/// one a Close frame may carry).
pub(super) fn injected_frame(
    v: &serde_json::Value,
) -> Result<(kinetid_wsdump::wire::frame::OpCode, Vec<u8>), String> {
    use kinetid_wsdump::wire::frame::{close_payload, CloseCode, OpCode};
    if let Some(t) = v["text"].as_str() {
        return Ok((OpCode::Text, t.as_bytes().to_vec()));
    }
    if let Some(h) = v["hex"].as_str() {
        return hex::decode(h.trim())
            .map(|b| (OpCode::Binary, b))
            .map_err(|e| format!("\"hex\" is not hex: {e}"));
    }
    if let Some(p) = v["ping"].as_str() {
        if p.len() > 125 {
            return Err("a ping carries at most 125 bytes (RFC 6455 5.5)".into());
        }
        return Ok((OpCode::Ping, p.as_bytes().to_vec()));
    }
    if let Some(c) = v.get("close") {
        let code = c
            .as_u64()
            .and_then(|c| u16::try_from(c).ok())
            .map(CloseCode)
            .filter(|c| c.is_allowed())
            .ok_or(
                "\"close\" is a code a Close frame may carry (1000-1003, 1007-1014, 3000-4999)",
            )?;
        let payload = close_payload(Some(code), v["reason"].as_str().unwrap_or(""));
        if payload.len() > 125 {
            return Err("a Close frame carries at most 125 bytes: the reason is too long".into());
        }
        return Ok((OpCode::Close, payload));
    }
    Err(INJECT_BODY.into())
}
