//! The checks on control frames and data frames once decoded, and the notes
//! that name a length or a mask gone wrong.

use super::*;

/// A Close frame: its code and reason, checked (RFC 6455 5.5.1, 7.4).
pub(super) fn judge_close(
    st: &mut DirState,
    raw: &frame::RawFrame,
    notes: &mut Vec<Note>,
) -> Option<(CloseCode, String)> {
    let mut close = None;
    if st.close_at.is_none() {
        st.close_at = Some(raw.offset);
    }
    let p = &raw.payload;
    if p.len() == 1 {
        // A firmware that writes the code as one byte sends its low byte:
        // 0xE8 is 1000's (a libwebsockets release did this), 0xE9 1001's.
        let meant = [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1011]
            .into_iter()
            .find(|c| (c & 0xff) as u8 == p[0]);
        let why = match meant {
            Some(c) => format!(
                "close payload of 1 byte (0x{:02x}): a status code needs 2; 0x{:02x} is the low byte of {c} ({}), so the firmware most likely wrote the code into one byte instead of two, big-endian",
                p[0],
                p[0],
                CloseCode(c).meaning()
            ),
            None => format!("close payload of 1 byte (0x{:02x}): a status code needs 2", p[0]),
        };
        notes.push(Note::error(
            Code::ClosePayloadOneByte,
            "RFC 6455 5.5.1",
            why,
        ));
    } else if p.len() >= 2 {
        let code = CloseCode(u16::from_be_bytes([p[0], p[1]]));
        if !code.is_allowed() {
            notes.push(Note::error(
                Code::CloseCodeInvalid,
                "RFC 6455 7.4.1",
                format!(
                    "close code {} ({}) must not be sent in a Close frame",
                    code.0,
                    code.meaning()
                ),
            ));
        }
        let reason = match std::str::from_utf8(&p[2..]) {
            Ok(s) => s.to_string(),
            Err(e) => {
                notes.push(Note::error(
                    Code::CloseReasonInvalidUtf8,
                    "RFC 6455 5.5.1",
                    format!(
                        "close reason is not valid UTF-8 (at reason byte {})",
                        e.valid_up_to()
                    ),
                ));
                String::from_utf8_lossy(&p[2..]).into_owned()
            }
        };
        close = Some((code, reason));
    }
    close
}

/// A Ping frame: is an earlier one still unanswered? (RFC 6455 5.5.2-3)
pub(super) fn judge_ping(
    st: &mut DirState,
    other: &DirState,
    raw: &frame::RawFrame,
    now: Option<f64>,
    notes: &mut Vec<Note>,
) {
    // RFC 6455 5.5.3 lets a peer answer only the latest of several
    // pings, so a pipelined burst is legal, and a peer busy sending may
    // read a ping late. The peer is judged deaf only when it sent frames
    // of its own since the oldest unanswered ping and, where times are
    // known, that ping has waited longer than a pong may take; once per
    // unanswered run.
    if let Some(oldest) = st.pings_unanswered.first() {
        let waited = now.zip(oldest.time).map(|(a, b)| a - b);
        let talked = other.frames > st.other_frames_at_ping;
        if talked && !st.ping_warned && waited.is_none_or(|w| w > PONG_LATE_S) {
            st.ping_warned = true;
            let when = match waited {
                Some(w) => format!("had no pong {w:.1} s later"),
                None => "had no pong before this next ping".to_string(),
            };
            notes.push(Note::warning(Code::PingNotAnswered, "RFC 6455 5.5.2", format!("the ping at byte {} of this direction {when}, although the peer sent other frames since (a firmware that ignores pings, or one that reads only between its own writes)", oldest.offset)));
        }
    }
    if st.pings_unanswered.is_empty() {
        st.other_frames_at_ping = other.frames;
    }
    if st.pings_unanswered.len() >= PINGS_KEPT {
        // Keep the oldest (its age is what is judged) and the newest.
        st.pings_unanswered.remove(1);
    }
    st.pings_unanswered.push(OutPing {
        offset: raw.offset,
        payload: raw.payload[..raw.payload.len().min(125)].to_vec(),
        time: now,
    });
    st.ping_after_close = other.close_at.is_some();
}

/// A Pong frame: it answers the other side's pings with one's payload
/// (RFC 6455 5.5.3); an unsolicited pong is allowed and judged on nothing.
pub(super) fn judge_pong(
    other: &mut DirState,
    raw: &frame::RawFrame,
    now: Option<f64>,
    notes: &mut Vec<Note>,
) {
    if other.pings_unanswered.is_empty() {
        return;
    }
    let pings = std::mem::take(&mut other.pings_unanswered);
    let warned = std::mem::replace(&mut other.ping_warned, false);
    // The newest ping it echoes (a pong may answer only the latest);
    // pings after that one stay unanswered.
    let Some(i) = pings.iter().rposition(|p| p.payload[..] == raw.payload[..]) else {
        let want: Vec<String> = pings
            .iter()
            .rev()
            .take(3)
            .map(|p| {
                format!(
                    "{:?}",
                    crate::escape::esc(&String::from_utf8_lossy(&p.payload)).to_string()
                )
            })
            .collect();
        notes.push(Note::warning(
            Code::PongPayloadMismatch,
            "RFC 6455 5.5.3",
            format!(
                "this pong carries {} byte(s) ({:?}) but the ping(s) it answers carried {}: a pong must echo its ping's application data (a firmware that answers every ping with an empty or fixed pong)",
                raw.payload.len(),
                crate::escape::esc(&String::from_utf8_lossy(&raw.payload)).to_string(),
                want.join(" or ")
            ),
        ));
        return;
    };
    let answered = &pings[i];
    let late = now.zip(answered.time).map(|(a, b)| a - b);
    match late {
        Some(w) if w > PONG_LATE_S => notes.push(Note::warning(
            Code::PingAnsweredLate,
            "RFC 6455 5.5.2",
            format!("this pong came {w:.1} s after the ping at byte {} it answers; a pong is due as soon as practical (a firmware that answers pings only from its main loop or its report timer)", answered.offset),
        )),
        _ if warned => notes.push(Note::info(
            Code::PingAnsweredLate,
            "RFC 6455 5.5.2",
            format!("this pong answers the ping at byte {} after all{}: the earlier ping-not-answered warning is settled (the peer was busy, not deaf)", answered.offset, late.map_or(String::new(), |w| format!(", {w:.1} s after it"))),
        )),
        _ => {}
    }
    other.pings_unanswered = pings[i + 1..].to_vec();
}

/// A data frame: fragmentation rules (RFC 6455 5.4), the message limit,
/// incremental UTF-8, and the message it completes.
pub(super) fn judge_data(
    st: &mut DirState,
    raw: &frame::RawFrame,
    cfg: Config,
    dir: Direction,
    index: u64,
    pmd: bool,
    notes: &mut Vec<Note>,
) -> Option<(u64, MessageEvent)> {
    let h = &raw.header;
    let mut message = None;
    let cont = h.opcode == OpCode::Continuation;
    if cont && st.frag.is_none() {
        notes.push(Note::error(
            Code::ContinuationWithoutStart,
            "RFC 6455 5.4",
            "continuation frame but no fragmented message is open",
        ));
        if st.last_data_final && index > 0 {
            notes.push(Note::info(Code::HintContAfterFin, "RFC 6455 5.4", "the previous data frame had FIN set: the sender finished the message and then continued it (a common firmware bug)"));
        }
    } else if !cont && st.frag.is_some() {
        let started = st.frag.as_ref().map(|f| f.offset).unwrap_or(0);
        notes.push(Note::error(
                Code::DataFrameInFragmentedMessage,
                "RFC 6455 5.4",
                format!("new {} frame while the fragmented message started at byte {started} is still open; expected a continuation frame", h.opcode),
            ));
        st.frag = None;
    }
    if !(cont && st.frag.is_none()) {
        if st.frag.is_none() {
            let compressed = pmd && h.rsv1;
            st.frag = Some(Fragment {
                opcode: h.opcode,
                mask: h.mask,
                compressed,
                offset: raw.offset,
                payload: Vec::new(),
                whole: None,
                len: 0,
                frames: 0,
                // Compressed text is judged once inflated.
                utf8: (h.opcode == OpCode::Text && !compressed).then(Utf8Stream::new),
                utf8_at_end: false,
                notes: Vec::new(),
            });
        }
        let fr = st.frag.as_mut().expect("fragment just opened");
        gather(fr, raw, cfg.max_message, notes);
        if h.fin {
            let fr = st.frag.take().expect("fragment open");
            message = Some((
                fr.offset,
                finish_message(
                    fr,
                    dir,
                    cfg,
                    &mut st.pending_json,
                    &mut st.ahead,
                    st.inflater.as_mut(),
                    notes,
                ),
            ));
        }
    }
    st.last_data_final = h.fin;
    message
}

/// One data frame into its message: the length against the limit, the
/// payload kept (while within it), the text's UTF-8 checked as it streams.
fn gather(fr: &mut Fragment, raw: &frame::RawFrame, max_message: u64, notes: &mut Vec<Note>) {
    let h = &raw.header;
    fr.frames = fr.frames.saturating_add(1);
    let before = fr.len;
    // Declared lengths come from the wire: two of them can overflow a u64.
    fr.len = fr.len.saturating_add(h.payload_len);
    if fr.len > max_message && before <= max_message && !raw.skipped {
        let n = Note::error(
            Code::MessageTooBig,
            "RFC 6455 10.4",
            format!(
                "message reached {} bytes, over the {}-byte limit",
                fr.len, max_message
            ),
        );
        notes.push(n.clone());
        fr.notes.push(n);
    }
    if !raw.skipped && fr.len <= max_message {
        if fr.frames == 1 && h.fin && !fr.compressed {
            // The whole message: the frame's payload, shared.
            fr.whole = Some(raw.payload.clone());
        } else {
            fr.payload.extend_from_slice(&raw.payload);
        }
    }
    if fr.utf8.is_some() && fr.frames == 1 && h.fin && !raw.skipped && fr.len <= max_message {
        // The whole message, kept: checked once, when it is read.
        fr.utf8_at_end = true;
    } else if let Some(u) = fr.utf8.as_mut() {
        let res = if raw.skipped {
            Ok(())
        } else if h.fin {
            u.push(&raw.payload).and_then(|_| u.finish())
        } else {
            u.push(&raw.payload)
        };
        if let Err(pos) = res {
            if !fr.notes.iter().any(|n| n.code == Code::TextInvalidUtf8) {
                let n = Note::error(
                    Code::TextInvalidUtf8,
                    "RFC 6455 8.1",
                    format!("text message is not valid UTF-8 at message byte {pos}"),
                );
                notes.push(n.clone());
                fr.notes.push(n);
            }
        }
    }
}

/// The note that names a bad length's cause; `next_at` is the stream offset
/// where the real next frame starts.
/// A length that reads as an address in a microcontroller's memory map:
/// the region's name.
pub(super) fn address_region(len: u64) -> Option<&'static str> {
    match len {
        0x3FF0_0000..=0x3FFF_FFFF => {
            Some("an ESP32's or ESP8266's internal data RAM (0x3FF0_0000-0x3FFF_FFFF)")
        }
        0x3FC8_0000..=0x3FCF_FFFF => {
            Some("an ESP32-S3's or ESP32-C3's internal data RAM (0x3FC8_0000-0x3FCF_FFFF)")
        }
        0x4000_0000..=0x400F_FFFF => {
            Some("an ESP32's instruction RAM or ROM (0x4000_0000-0x400F_FFFF)")
        }
        0x2000_0000..=0x2007_FFFF => {
            Some("a Cortex-M microcontroller's SRAM (0x2000_0000-0x2007_FFFF)")
        }
        _ => None,
    }
}

pub(super) fn length_note(
    h: &FrameHeader,
    cause: &diagnose::LengthCause,
    next_at: u64,
    resync: bool,
) -> Note {
    let then = if resync {
        "; decoding resumes there (--resync)"
    } else {
        "; --resync decodes on from there"
    };
    match cause {
        diagnose::LengthCause::ByteOrder { swapped } => Note::info(
            Code::HintLengthByteOrder,
            "RFC 6455 5.2",
            format!(
                "the {}-bit length reads {} but its bytes swapped give {swapped}, which fits what follows (the next frame starts at byte {next_at}): the firmware wrote the length little-endian where network byte order is required{then}",
                h.len_encoding.bits(),
                h.payload_len
            ),
        ),
        diagnose::LengthCause::NotALength { fits } => Note::info(
            Code::HintLengthNotALength,
            "RFC 6455 5.2",
            match address_region(h.payload_len) {
                Some(region) => format!(
                    "the declared length {} (0x{:X}) is an address in {region}, not a length: a complete frame header starts at byte {next_at}, right after a {fits}-byte payload, so the payload was {fits} bytes and the firmware wrote a pointer where its length belongs (a known ESP32 server bug){then}",
                    h.payload_len, h.payload_len
                ),
                None => format!(
                    "the declared length {} does not fit what follows; a plausible frame header starts at byte {next_at}, {fits} bytes into the payload, so a length of {fits} would have fitted: the length field may hold a pointer, a buffer size or a miscounted length{then}",
                    h.payload_len
                ),
            },
        ),
    }
}

/// Why a text message is not the text (or JSON) it should be: a mask
/// applied wrongly, a C string, Latin-1, two JSON messages in one.
/// `mask` is the key of a single-frame masked message; `not_json` says the
/// Kinetid layer could not parse it (the parse is not repeated unless so).
pub(super) fn diagnose_text(
    payload: &[u8],
    mask: Option<MaskKey>,
    notes: &[Note],
    not_json: bool,
    dir: Direction,
    cfg: Config,
) -> Option<Note> {
    let invalid_utf8 = notes.iter().any(|n| n.code == Code::TextInvalidUtf8);
    if !invalid_utf8 && !not_json {
        return None;
    }
    let utf8 = std::str::from_utf8(payload);
    let looks_json = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    let json_err = match &utf8 {
        Ok(t) if not_json => serde_json::from_str::<serde_json::Value>(t).err(),
        _ => None,
    };
    if let Some(key) = mask {
        let mut masked = payload.to_vec();
        apply_mask(&mut masked, key.0);
        let bad_at = match (&utf8, &json_err) {
            (Err(e), _) => e.valid_up_to(),
            (Ok(_), Some(e)) => e.column().saturating_sub(1).min(payload.len()),
            _ => payload.len(),
        };
        let kj = cfg.kinetid && (looks_json || masked.first() == Some(&b'{'));
        if let Some(cause) = diagnose::mask_cause(&masked, key, bad_at, |b| meant_ok(b, kj)) {
            return Some(mask_note(&masked, key, &cause, dir));
        }
    }
    let nuls = diagnose::trailing_nuls(payload);
    if let (Ok(t), true) = (&utf8, nuls > 0) {
        let trimmed = &t[..t.len() - nuls];
        if meant_ok(trimmed.as_bytes(), cfg.kinetid && looks_json) {
            let what = if nuls == 1 {
                "one NUL byte: the firmware sent strlen + 1 bytes, the C string's terminator included".to_string()
            } else {
                format!(
                    "{nuls} NUL bytes: the firmware sent its whole {}-byte buffer instead of the string's length",
                    payload.len()
                )
            };
            return Some(Note::info(
                Code::HintCString,
                "RFC 6455 5.6",
                format!(
                    "the text ends in {what}; without them it reads{}",
                    reading(trimmed, dir)
                ),
            ));
        }
    }
    if invalid_utf8 {
        if let Some(meant) = diagnose::as_latin1(payload) {
            return Some(Note::info(
                Code::HintLatin1,
                "RFC 6455 8.1",
                format!("the bytes that are not UTF-8 read as ISO-8859-1 / Windows-1252: the firmware sent a Latin-1 string (a degree sign, an umlaut) where UTF-8 is required; as meant: {meant:?}"),
            ));
        }
    }
    if let (Ok(t), Some(_)) = (&utf8, &json_err) {
        if let Some(starts) = diagnose::json_concatenated(t) {
            let mut cuts = vec![0];
            cuts.extend(&starts);
            cuts.push(t.len());
            let parts: Vec<String> = cuts
                .windows(2)
                .map(|w| format!("byte {}{}", w[0], reading(t[w[0]..w[1]].trim(), dir)))
                .collect();
            return Some(Note::info(
                Code::HintJsonConcat,
                "kinetid v1",
                format!(
                    "{} JSON messages in one WebSocket message (each must be a message of its own; the firmware appended to its send buffer before sending): {}",
                    parts.len(),
                    parts.join("; ")
                ),
            ));
        }
    }
    None
}

pub(super) fn mask_note(
    masked: &[u8],
    key: MaskKey,
    cause: &diagnose::MaskCause,
    dir: Direction,
) -> Note {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match cause {
        diagnose::MaskCause::NotApplied => Note::info(
            Code::HintMaskNotApplied,
            "RFC 6455 5.3",
            format!(
                "MASK is set with key {} but the payload went out unmasked: the bytes as sent are the text, which reads{}",
                key.hex(),
                reading(&text(masked), dir)
            ),
        ),
        diagnose::MaskCause::Restart { at, periodic } => {
            let every = if *periodic {
                format!(" (and at every multiple of {at})")
            } else {
                String::new()
            };
            let meant: Vec<u8> = masked
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let j = if i < *at {
                        i
                    } else if *periodic {
                        i % at
                    } else {
                        i - at
                    };
                    b ^ key.0[j % 4]
                })
                .collect();
            Note::info(
                Code::HintMaskRestart,
                "RFC 6455 5.3",
                format!(
                    "the text goes wrong from payload byte {at}; unmasked with the key index starting again at 0 there{every}, it is valid and reads{}: the firmware masks each write buffer from key byte 0 instead of continuing the key across the frame",
                    reading(&text(&meant), dir)
                ),
            )
        }
        diagnose::MaskCause::OtherKey { used } => {
            let diff: Vec<u8> = (0..4).map(|i| used[i] ^ key.0[i]).collect();
            let rot = diagnose::rotation_of(*used, key.0)
                .map(|r| format!(" (the header's key rotated by {r} bytes)"))
                .unwrap_or_default();
            let mut fixed = masked.to_vec();
            apply_mask(&mut fixed, *used);
            Note::info(
                Code::HintMaskKeyMismatch,
                "RFC 6455 5.3",
                format!(
                    "the header says key {} but the payload was masked with {}{rot}, a constant XOR difference of {}; unmasked with it, it reads{}",
                    key.hex(),
                    MaskKey(*used).hex(),
                    hex::encode(diff),
                    reading(&text(&fixed), dir)
                ),
            )
        }
    }
}
