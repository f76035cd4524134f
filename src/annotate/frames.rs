//! Frames as the decoder cuts them: judged, their payloads checked and
//! gathered into messages, and what is left when a stream ends.

use super::*;

impl Annotator {
    pub(super) fn drain_frames(&mut self, dir: Direction, time: Option<f64>, out: &mut Vec<Event>) {
        loop {
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            match st.decoder.next_frame() {
                Decoded::Need(_) => return,
                Decoded::Stuck => {
                    let rest = st.decoder.pending().to_vec();
                    let off = st.decoder.offset();
                    st.phase = Phase::Raw("after a frame whose length cannot be trusted (64-bit length with the top bit set)".into());
                    st.take_raw(off, &rest);
                    return;
                }
                Decoded::Frame(raw) => {
                    let skipped = raw.skipped.then_some((raw.header, raw.head));
                    let (mut frame_ev, msg_ev) = self.judge_frame(dir, raw);
                    if let Some((h, head)) = skipped {
                        self.diagnose_length(dir, &h, &head, &mut frame_ev.notes);
                    }
                    if dir == Direction::C2S && self.bad_answer == Some(false) {
                        self.bad_answer = Some(true);
                        frame_ev.notes.push(Note::error(
                            Code::BadAnswerAccepted,
                            "RFC 6455 4.1",
                            "the device sends frames after a 101 answer it must refuse (see the response's checks): it does not check the server's handshake, so anything that answers 101 can talk to it",
                        ));
                    }
                    let fails = |n: &Note| {
                        n.severity == Severity::Error && policy::close_code(n.code).is_some()
                    };
                    let broken = frame_ev.notes.iter().any(fails);
                    if broken
                        || msg_ev
                            .as_ref()
                            .is_some_and(|(_, m)| m.notes.iter().any(fails))
                    {
                        self.state_mut(dir).failed = true;
                    }
                    self.torn_frame(dir, broken, &frame_ev);
                    let offset = frame_ev.offset;
                    out.push(Event::at(
                        self.conn,
                        dir,
                        offset,
                        time,
                        EventKind::Frame(Box::new(frame_ev)),
                    ));
                    if let Some((off, mut m)) = msg_ev {
                        if let Some(k) = m.kinetid.as_ref().filter(|_| self.cfg.kinetid) {
                            self.track.observe_into(k, dir, &mut m.notes);
                        }
                        out.push(Event::at(
                            self.conn,
                            dir,
                            off,
                            time,
                            EventKind::Message(Box::new(m)),
                        ));
                    }
                    // The bytes a probe needs came with the header.
                    let st = self.state_mut(dir);
                    if st.probe.as_ref().is_some_and(|p| p.bytes.len() >= p.target) {
                        self.probe_length(dir, false, time, out);
                    }
                }
            }
        }
    }

    /// The stream in `dir` has ended: release held frames, then show the
    /// frame it ended in (with its cause, and with `resync` decode on from
    /// the real next frame).
    pub(super) fn finish_frames(
        &mut self,
        dir: Direction,
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        for _ in 0..1024 {
            let st = self.state_mut(dir);
            if st.phase != Phase::Frames {
                return;
            }
            st.decoder.set_eof();
            self.drain_frames(dir, time, out);
            self.settle_torn(dir, true, time, out);
            let st = self.state_mut(dir);
            if st.decoder.skipping() > 0 || st.decoder.is_stuck() {
                if st.probe.is_some() {
                    self.probe_length(dir, true, time, out);
                }
                return;
            }
            let pending = st.decoder.pending();
            let frame::HeaderParse::Header(h) = frame::parse_header(pending) else {
                return;
            };
            let head = pending[..h.header_len].to_vec();
            let arrived = pending[h.header_len..].to_vec();
            let offset = st.decoder.offset();
            let cause = diagnose::length_cause(&h, &head, &arrived, true, dir.sender());
            let resync = self.cfg.resync;
            let mut ev = self.truncated_frame(dir, h, head, &arrived, offset);
            let fits = cause.as_ref().map(diagnose::LengthCause::fits);
            if let (Some(c), Some(k)) = (&cause, fits) {
                let next_at = offset + h.header_len as u64 + k;
                ev.notes.push(length_note(&h, c, next_at, resync));
            }
            out.push(Event::at(
                self.conn,
                dir,
                offset,
                time,
                EventKind::Frame(Box::new(ev)),
            ));
            if let (Some(k), true) = (fits, resync) {
                self.state_mut(dir)
                    .decoder
                    .discard(h.header_len + k as usize);
                continue;
            }
            self.state_mut(dir).truncated_shown = true;
            return;
        }
    }

    pub(super) fn judge_frame(
        &mut self,
        dir: Direction,
        raw: frame::RawFrame,
    ) -> (FrameEvent, Option<(u64, MessageEvent)>) {
        let mut cfg = self.cfg;
        let undecided = cfg.kinetid && cfg.kinetid_auto && self.kin.is_none();
        if cfg.kinetid_auto && self.kin == Some(false) {
            cfg.kinetid = false;
        }
        let pmd = self.deflate.is_some();
        let now = self.now;
        let kin = &mut self.kin;
        let (st, other) = match dir {
            Direction::C2S => (&mut self.c2s, &mut self.s2c),
            Direction::S2C => (&mut self.s2c, &mut self.c2s),
        };
        let h = raw.header;
        let index = st.frames;
        st.frames += 1;
        let starts_message = !h.opcode.is_control() && h.opcode != OpCode::Continuation;
        let rsv_allowed = if pmd && starts_message { 0x4 } else { 0 };
        let mut notes =
            frame::header_notes(&h, &raw.head, dir.sender(), rsv_allowed, cfg.max_frame);
        let rsv1_misplaced = pmd && h.rsv1 && !starts_message;
        connection_rules(st, &h, dir.sender(), rsv1_misplaced, &mut notes);
        let mut close = None;
        let mut message = None;
        match h.opcode {
            OpCode::Close => close = judge_close(st, &raw, &mut notes),
            OpCode::Ping => judge_ping(st, other, &raw, now, &mut notes),
            OpCode::Pong => judge_pong(other, &raw, now, &mut notes),
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                message = judge_data(st, &raw, cfg, dir, index, pmd, &mut notes);
                if let (true, Some((_, m))) = (undecided, message.as_mut()) {
                    *kin = Some(decide_kinetid(m));
                }
            }
            OpCode::Reserved(_) => {}
        }
        (
            FrameEvent {
                header: h,
                head: raw.head,
                payload: raw.payload,
                skipped: raw.skipped,
                offset: raw.offset,
                close,
                notes,
                index,
                truncated: None,
            },
            message,
        )
    }
}

/// What a frame header breaks given the frames before it in its direction:
/// RSV1 past a message's first frame with permessage-deflate, controls left
/// unmasked by a client that masks data, a masking key used twice, data
/// after this side's Close.
fn connection_rules(
    st: &mut DirState,
    h: &FrameHeader,
    sender: Role,
    rsv1_misplaced: bool,
    notes: &mut Vec<Note>,
) {
    if rsv1_misplaced {
        for n in notes
            .iter_mut()
            .filter(|n| n.code == Code::RsvWithoutExtension)
        {
            *n = Note::error(
                Code::DeflateRsv1Misplaced,
                "RFC 7692 6",
                format!("RSV1 set on a {} frame: with permessage-deflate only the first frame of a data message may set it", h.opcode),
            );
        }
    }
    if sender == Role::Client && h.mask.is_none() && h.opcode.is_control() && st.masked_data_seen {
        notes.push(Note::info(Code::HintUnmaskedControl, "RFC 6455 5.1", "data frames on this connection were masked but this control frame is not: the firmware masks only data frames"));
    }
    if let Some(k) = h.mask {
        if !h.opcode.is_control() {
            st.masked_data_seen = true;
        }
        if st.last_key == Some(k) && k.0 != [0; 4] {
            notes.push(Note::warning(
                Code::MaskKeyRepeated,
                "RFC 6455 5.3",
                format!("masking key {} is the same as on the previous frame; each frame needs a fresh unpredictable key", k.hex()),
            ));
        }
        st.last_key = Some(k);
    }
    // Only data is forbidden after a Close (RFC 6455 5.5.1): a pong answering
    // a ping that crossed the Close is legal.
    if let (Some(at), false) = (st.close_at, h.opcode.is_control()) {
        notes.push(Note::error(
            Code::DataAfterClose,
            "RFC 6455 5.5.1",
            format!("data frame sent after this side's Close frame (at byte {at}); no data may follow a Close"),
        ));
    }
}
