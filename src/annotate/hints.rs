//! Hints an upgrade request gives about the client library behind it.

use super::*;

/// What an HTTP head's bytes tell about how it was written: bare LF line
/// ends, and for a response whose accept does not match, how it was
/// computed.
/// What an upgrade request shows of its client library: a `Host` without
/// the port the device connected to (RFC 9110 7.2; libwebsockets once sent
/// it so), a subprotocol other than Kinetid's offered where Kinetid is
/// spoken (arduinoWebSockets offers `arduino` unless told otherwise).
pub(super) fn upgrade_hints(
    head: &HttpHead,
    offered: &[String],
    port: Option<u16>,
    kinetid: bool,
) -> Vec<Note> {
    let mut notes: Vec<Note> = port
        .and_then(|p| host_without_port(head, p))
        .into_iter()
        .collect();
    if kinetid
        && !offered.is_empty()
        && !offered
            .iter()
            .any(|p| p == crate::wire::handshake::KINETID_PROTOCOL)
    {
        notes.push(Note::info(
            Code::HintOtherSubprotocol,
            "kinetid v1",
            format!("the device offers subprotocol {} but not kinetid.v1: its WebSocket library offers a default of its own (arduinoWebSockets offers \"arduino\" unless begin() is given a protocol); offer kinetid.v1", offered.iter().map(|p| format!("{:?}", crate::escape::esc(p))).collect::<Vec<_>>().join(", ")),
        ));
    }
    notes
}

/// A `Host` without the port the device connected to, `port`, when that
/// is not 80 or 443 (RFC 9110 7.2). A listener, which knows its port,
/// raises it as its own note (so a recording replays it).
pub fn host_without_port(head: &HttpHead, port: u16) -> Option<Note> {
    let host = head.get("host")?;
    // A request a reverse proxy passed on keeps the client's Host, which
    // names the proxy's port, not this one (RFC 7239; X-Forwarded-*).
    if [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
        "via",
    ]
    .iter()
    .any(|h| head.get(h).is_some())
    {
        return None;
    }
    let has_port = match host.strip_prefix('[') {
        Some(r) => r.contains("]:"),
        None => host.contains(':'),
    };
    (!has_port && port != 80 && port != 443).then(|| {
        Note::warning(
            Code::HintHostWithoutPort,
            "RFC 9110 7.2",
            format!("Host {:?} has no port, but the device connected to port {port}: the Host header must carry the port when it is not the scheme's default (80 for ws://, 443 for wss://); a server or proxy that routes or checks by Host refuses or misroutes it (a known libwebsockets client bug)", crate::escape::esc(host)),
        )
    })
}

pub(super) fn head_hints(
    head: &HttpHead,
    key: Option<&str>,
    verdict: Option<&ClientVerdict>,
) -> Vec<Note> {
    let mut notes = Vec::new();
    if head.bare_lf {
        notes.push(Note::warning(
            Code::HintBareLf,
            "RFC 9112 2.2",
            "lines of this head end in a bare LF instead of CRLF: the firmware writes \"\\n\" where HTTP requires \"\\r\\n\" (tolerated here; strict servers refuse it)",
        ));
    }
    if let (Some(k), Some(v)) = (key, verdict) {
        if let Some(handshake::ClientHandshakeError::AcceptMismatch { got, .. }) = &v.error {
            if let Some((code, why)) = diagnose::accept_cause(k, got) {
                notes.push(Note::info(code, "RFC 6455 4.2.2", why));
            }
        }
    }
    notes
}
