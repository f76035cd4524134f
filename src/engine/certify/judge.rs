//! Verdicts drawn from a timeline, and the frames and heads the server
//! plays in the cases.

use super::*;

/// The TLS session case: TLS 1.2 or later (rustls offers nothing older),
/// and SNI naming the host the device connects to, unless that is an IP
/// address (RFC 6066 3 forbids an address in SNI).
pub(super) fn tls_session_verdict(
    tls: Option<&(String, Option<String>)>,
    host: Option<&str>,
) -> Verdict {
    let Some((ver, sni)) = tls else {
        return Verdict::NotObserved("not over TLS (run certify --tls)".into());
    };
    let name = host.map(|h| match h.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r).to_string(),
        None => h.rsplit_once(':').map_or(h, |(n, _)| n).to_string(),
    });
    let is_ip = name
        .as_deref()
        .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok());
    match (sni, name) {
        (None, Some(n)) if is_ip => Verdict::Pass(format!(
            "{ver}; no SNI, right for a device given the address {n}"
        )),
        (Some(s), Some(n)) if s.eq_ignore_ascii_case(&n) => {
            Verdict::Pass(format!("{ver}; SNI {s}"))
        }
        (Some(s), Some(n)) => Verdict::Fail(format!(
            "{ver}; SNI {s:?} but the request's Host names {n:?}: the device sends another name than the one it connects to"
        )),
        (None, Some(n)) => Verdict::Fail(format!(
            "{ver}; no SNI although the device connects to {n:?} by name (RFC 6066 3): a server with several names cannot pick the certificate"
        )),
        (_, None) => Verdict::Fail(format!("{ver}; the upgrade request has no Host")),
    }
}

/// The back-off case's verdict from when each try came: the waits
/// between them must double (jitter of up to +50 % either side allowed),
/// the first about 2 s (the one before it, 1 s, is not seen), capped near
/// 60 s.
pub(super) fn backoff_verdict(tries: &[Instant]) -> Verdict {
    let gaps: Vec<f64> = tries
        .windows(2)
        .map(|w| (w[1] - w[0]).as_secs_f64())
        .collect();
    let line = gaps
        .iter()
        .map(|g| format!("+{g:.1} s"))
        .collect::<Vec<_>>()
        .join(", ");
    if gaps.iter().any(|&g| g < 0.5) {
        return Verdict::Fail(format!(
            "tries came {line} apart: no back-off (the contract's starts at 1 s)"
        ));
    }
    let doubling = gaps
        .windows(2)
        .all(|w| (1.25..=3.2).contains(&(w[1] / w[0])) || w[1] >= 50.0);
    let first_ok = gaps.first().is_some_and(|&g| (0.8..=6.0).contains(&g));
    if doubling && first_ok {
        Verdict::Pass(format!("tries came {line} apart: doubling"))
    } else {
        Verdict::Fail(format!(
            "tries came {line} apart: the contract's back-off doubles from 1 s (1, 2, 4 ... 60 s, with jitter)"
        ))
    }
}

pub(super) fn join(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A server frame.
pub(super) fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut v, op, payload, EncodeOptions::server());
    v
}

pub(super) fn text(s: &str) -> Vec<u8> {
    frame(OpCode::Text, s.as_bytes())
}

/// The head without the header named `name` (lower case).
pub(super) fn drop_header(head: &str, name: &str) -> Vec<u8> {
    head.split_inclusive("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .collect::<String>()
        .into_bytes()
}

/// The switch as `shape` writes it.
pub(super) fn switch_acts(dev: &str, on: Option<bool>, shape: Shape) -> Vec<Act> {
    let sw = kinetid::switch(SWITCH_ID, dev, on);
    let padded = |n: usize| {
        let mut s = sw.clone();
        s.pop();
        let room = n.saturating_sub(s.len() + 12);
        format!("{s},\"pad\":\"{}\"}}", "p".repeat(room))
    };
    let frag = |parts: &[&[u8]], ping_after_first: bool| {
        let mut v = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let op = if i == 0 {
                OpCode::Text
            } else {
                OpCode::Continuation
            };
            let o = EncodeOptions {
                fin: i + 1 == parts.len(),
                ..EncodeOptions::server()
            };
            encode_frame(&mut v, op, p, o);
            if i == 0 && ping_after_first {
                v.extend(frame(OpCode::Ping, b"certify-between"));
            }
        }
        v
    };
    let b = sw.as_bytes();
    let (a, rest) = b.split_at(b.len() / 3);
    let (m, z) = rest.split_at(rest.len() / 2);
    vec![match shape {
        Shape::Plain => Act::Write(text(&sw)),
        Shape::OneByteSegments => Act::WriteBytewise(text(&sw)),
        Shape::Len16 => Act::Write(text(&padded(300))),
        Shape::Oversized => Act::Write(text(&padded(70_000))),
        Shape::Fragments => Act::Write(frag(&[a, m, z], false)),
        Shape::PingBetweenFragments => Act::Write(frag(&[a, m, z], true)),
        Shape::EmptyFragments => Act::Write(frag(&[a, b"", m, b"", z], false)),
    }]
}

/// A 101 rewritten as another server might write it: names in other case,
/// `Upgrade` and `Connection` tokens in other case, optional whitespace
/// around values, and headers a device does not need. The accept value
/// and the subprotocol are kept byte for byte (they compare exactly).
pub(super) fn other_case(text: &str) -> Vec<u8> {
    let head = text.trim_end_matches("\r\n");
    let mut lines = head.split("\r\n");
    let mut out = String::new();
    out.push_str(lines.next().unwrap_or("HTTP/1.1 101 Switching Protocols"));
    out.push_str("\r\nServer: kinetid-wsdump-certify\r\nCache-Control: no-store\r\n");
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        let l = match name.to_ascii_lowercase().as_str() {
            "upgrade" => "UPGRADE:   WebSocket".to_string(),
            "connection" => "connection:UPGRADE  ".to_string(),
            "sec-websocket-accept" => format!("sec-websocket-accept:  {value}"),
            "sec-websocket-protocol" => format!("SEC-WEBSOCKET-PROTOCOL: {value}"),
            _ => format!("{}: {value}", name.to_ascii_uppercase()),
        };
        out.push_str(&l);
        out.push_str("\r\n");
    }
    out.push_str("X-Certify-Case: handshake-other-case\r\n\r\n");
    out.into_bytes()
}

/// The switch in a frame that breaks a rule, for a bad-frames case.
pub(super) fn bad_frame(b: BadFrame, dev: &str) -> Vec<u8> {
    let sw = kinetid::switch(SWITCH_ID, dev, None);
    match b {
        BadFrame::Masked => {
            let mut v = Vec::new();
            let o = EncodeOptions {
                mask: Some(MaskKey([0x37, 0xfa, 0x21, 0x3d])),
                ..EncodeOptions::server()
            };
            encode_frame(&mut v, OpCode::Text, sw.as_bytes(), o);
            v
        }
        BadFrame::Rsv1 => {
            let mut v = Vec::new();
            encode_frame(
                &mut v,
                OpCode::Text,
                sw.as_bytes(),
                EncodeOptions {
                    rsv: 0x4,
                    ..EncodeOptions::server()
                },
            );
            v
        }
        BadFrame::ReservedOpcode => frame(OpCode::from_u8(0x3), sw.as_bytes()),
        BadFrame::InvalidUtf8 => {
            let mut p = sw.into_bytes();
            p.truncate(p.len() - 1);
            p.extend_from_slice(b",\"x\":\"\xc3\x28\"}");
            frame(OpCode::Text, &p)
        }
        BadFrame::CloseCode999 => frame(OpCode::Close, &999u16.to_be_bytes()),
    }
}

/// Messages a device must survive: an error it did not cause, a type it
/// does not know, text that is not JSON.
pub(super) fn junk() -> Vec<u8> {
    let mut b = text(&kinetid::error(
        None,
        None,
        "bad_request",
        "certify: survive this",
    ));
    b.extend(text(r#"{"t":"certify-unknown-type","id":1}"#));
    b.extend(text("certify: not JSON"));
    b
}

/// The server's answer to a valid upgrade, as the case's handshake plays it.
pub(super) fn answer(handshake: Handshake, v: &ServerVerdict) -> Act {
    let ok = handshake::server_response(v);
    let text = String::from_utf8_lossy(&ok).into_owned();
    let accept = v
        .accept
        .as_ref()
        .map(|a| a.accept.clone())
        .unwrap_or_default();
    match handshake {
        Handshake::Normal | Handshake::DropUnanswered(_) => Act::Write(ok),
        Handshake::OneByteSegments => Act::WriteBytewise(ok),
        Handshake::WithPing => {
            let mut b = ok;
            b.extend(frame(OpCode::Ping, b"certify-first-frame"));
            Act::Write(b)
        }
        Handshake::WrongAccept => {
            let other = handshake::accept_key("AAAAAAAAAAAAAAAAAAAAAA==");
            Act::Write(text.replace(&accept, &other).into_bytes())
        }
        Handshake::AcceptLastCharWrong => {
            let mut wrong = accept.clone();
            let last = wrong.pop().unwrap_or('=');
            // '=' padding: change the character before it instead.
            let wrong = if last == '=' {
                let c = wrong.pop().unwrap_or('A');
                format!("{wrong}{}=", if c == 'A' { 'B' } else { 'A' })
            } else {
                format!("{wrong}{}", if last == 'A' { 'B' } else { 'A' })
            };
            Act::Write(text.replace(&accept, &wrong).into_bytes())
        }
        Handshake::NoUpgrade => Act::Write(drop_header(&text, "upgrade")),
        Handshake::NoConnection => Act::Write(drop_header(&text, "connection")),
        Handshake::UnofferedProtocol => {
            let t =
                String::from_utf8_lossy(&drop_header(&text, "sec-websocket-protocol")).into_owned();
            Act::Write(
                t.replacen(
                    "\r\n\r\n",
                    "\r\nSec-WebSocket-Protocol: certify.unoffered\r\n\r\n",
                    1,
                )
                .into_bytes(),
            )
        }
        Handshake::OtherCase => Act::Write(other_case(&text)),
        Handshake::Unavailable => Act::Write(handshake::error_response(
            503,
            "Retry-After: 1\r\n",
            "certify: the service is unavailable",
        )),
    }
}
