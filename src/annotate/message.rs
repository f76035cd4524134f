//! A message completed from its fragments: inflated, validated, decoded as
//! Kinetid.

use super::*;

pub(super) fn finish_message(
    mut fr: Fragment,
    dir: Direction,
    cfg: Config,
    pending_json: &mut Option<String>,
    ahead: &mut Option<Box<kinetid::ahead::Ahead>>,
    inflater: Option<&mut crate::wire::deflate::Inflater>,
    frame_notes: &mut Vec<Note>,
) -> MessageEvent {
    let compressed_len = inflate_message(&mut fr, cfg, inflater);
    // A compressed message that did not inflate is no text to judge.
    let readable = !fr.compressed || compressed_len.is_some();
    let mut notes = fr.notes;
    // A message of one frame: its UTF-8 checked here, once, with the note
    // the streaming check gives (on the frame and on the message).
    let whole = fr.whole.take();
    let bytes: &[u8] = whole.as_deref().unwrap_or(&fr.payload);
    let checked = fr.utf8_at_end.then(|| std::str::from_utf8(bytes));
    if let Some(Err(e)) = &checked {
        let n = Note::error(
            Code::TextInvalidUtf8,
            "RFC 6455 8.1",
            format!(
                "text message is not valid UTF-8 at message byte {}",
                e.valid_up_to()
            ),
        );
        frame_notes.push(n.clone());
        notes.push(n);
    }
    let mut valid_text = false;
    let mut km = None;
    // The Kinetid layer's notes come after any diagnosis of the text.
    let mut kin_notes = Vec::new();
    if fr.opcode == OpCode::Text
        && readable
        && !notes.iter().any(|n| n.code == Code::TextInvalidUtf8)
        && fr.len <= cfg.max_message
    {
        let s = match checked {
            Some(r) => r,
            None => std::str::from_utf8(bytes),
        }
        .unwrap_or_default();
        if cfg.kinetid {
            // Text that is not a JSON object at all is someone else's protocol:
            // shown as text, not judged. The exception is the tail of a JSON
            // object that an earlier message left open.
            let looks_json = s.trim_start().starts_with('{');
            let joined = pending_json.take().map(|prev| format!("{prev}{s}"));
            let j = joined.as_ref().map(|t| (t, kinetid::decode(t, dir)));
            match j {
                Some((_, jd)) if jd.msg.is_some() => {
                    kin_notes.push(Note::info(
                        Code::HintFinEveryFragment,
                        "RFC 6455 5.4",
                        "this message completes the JSON of the previous one: the sender set FIN on every fragment and repeated the opcode instead of using continuation frames (a firmware bug)",
                    ));
                    km = jd.msg;
                }
                Some((t, jd))
                    if jd.incomplete_json && !looks_json && t.len() < kinetid::MAX_MESSAGE =>
                {
                    *pending_json = Some(t.clone());
                }
                _ if looks_json => {
                    // Read ahead on the capture's reading thread when
                    // this very text was one whole frame there.
                    let d = ahead
                        .as_mut()
                        .and_then(|a| a.claim(s, dir))
                        .unwrap_or_else(|| kinetid::decode(s, dir));
                    if d.incomplete_json && s.len() < kinetid::MAX_MESSAGE {
                        *pending_json = Some(s.to_string());
                    }
                    kin_notes.extend(d.notes);
                    km = d.msg;
                }
                _ => {}
            }
        }
        valid_text = true;
    }
    if fr.opcode == OpCode::Text && fr.len <= cfg.max_message && readable {
        let mask = fr.mask.filter(|_| fr.frames == 1 && !fr.compressed);
        let not_json = kin_notes.iter().any(|n| n.code == Code::KinetidNotJson);
        if let Some(n) = diagnose_text(bytes, mask, &notes, not_json, dir, cfg) {
            notes.push(n);
        }
    }
    notes.extend(kin_notes);
    MessageEvent {
        opcode: fr.opcode,
        len: fr.len,
        frames: fr.frames,
        payload: whole.unwrap_or_else(|| fr.payload.into()),
        valid_text,
        kinetid: km,
        notes,
        compressed_len,
    }
}

/// The first data message of a connection nobody said was Kinetid: is it
/// a Kinetid message (a JSON object whose `t` names one)? When it is not,
/// what the Kinetid layer made of it is taken back and a note says why
/// the connection is shown as plain WebSocket.
pub(super) fn decide_kinetid(m: &mut MessageEvent) -> bool {
    let is_kinetid = m
        .kinetid
        .as_ref()
        .is_some_and(|k| kinetid::is_message_type(&k.t));
    if !is_kinetid {
        m.kinetid = None;
        m.notes.retain(|n| !n.code.as_str().starts_with("kinetid-"));
        m.notes.push(Note::info(
            Code::NotKinetid,
            "kinetid v1",
            format!(
                "not Kinetid traffic: the client did not offer {} and the connection's first message is no Kinetid message, so its messages are shown as plain WebSocket (--kinetid judges them as Kinetid all the same)",
                crate::wire::handshake::KINETID_PROTOCOL
            ),
        ));
    }
    is_kinetid
}

/// A compressed message, inflated in place (bounded by the message limit);
/// returns its size on the wire. Text is judged once inflated.
pub(super) fn inflate_message(
    fr: &mut Fragment,
    cfg: Config,
    inflater: Option<&mut crate::wire::deflate::Inflater>,
) -> Option<u64> {
    let inflater = inflater.filter(|_| fr.compressed && fr.len <= cfg.max_message)?;
    match inflater.inflate(&fr.payload, cfg.max_message) {
        Ok(p) => {
            let wire = fr.len;
            fr.payload = p;
            fr.len = fr.payload.len() as u64;
            if fr.opcode == OpCode::Text {
                if let Err(e) = std::str::from_utf8(&fr.payload) {
                    fr.notes.push(Note::error(
                        Code::TextInvalidUtf8,
                        "RFC 6455 8.1",
                        format!(
                            "text message is not valid UTF-8 at message byte {} (inflated)",
                            e.valid_up_to()
                        ),
                    ));
                }
            }
            Some(wire)
        }
        Err(crate::wire::deflate::InflateError::Invalid { at, why }) => {
            fr.notes.push(Note::error(
                Code::DeflateInvalid,
                "RFC 7692 7.2.2",
                format!("the compressed message does not inflate: {why}, after {at} of its {} compressed bytes (a sender that compressed with another window or context than agreed, or not at all)", fr.len),
            ));
            None
        }
        Err(crate::wire::deflate::InflateError::TooBig { limit }) => {
            fr.notes.push(Note::error(
                Code::MessageTooBig,
                "RFC 6455 10.4",
                format!("the message inflates past the {limit}-byte limit (inflating stopped there: a deflate bomb costs no more)"),
            ));
            None
        }
    }
}

/// Text that is what it is meant to be: valid UTF-8 and, for Kinetid,
/// a JSON value when it looks like one.
pub(super) fn meant_ok(b: &[u8], kinetid_json: bool) -> bool {
    match std::str::from_utf8(b) {
        Err(_) => false,
        Ok(t) => !kinetid_json || serde_json::from_str::<serde_json::Value>(t).is_ok(),
    }
}

/// The Kinetid reading of text, for a hint ("it reads: ...").
pub(super) fn reading(t: &str, dir: Direction) -> String {
    match kinetid::decode(t, dir).msg {
        Some(m) if !m.t.is_empty() => format!(": {}", m.summary),
        _ => String::new(),
    }
}
