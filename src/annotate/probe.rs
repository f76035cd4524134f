//! Probes behind the hints: a frame cut short, a torn write, a length that
//! does not fit what follows it.

use super::*;

impl Annotator {
    /// The frame a stream ended inside: every header field and the payload
    /// bytes that arrived, with how many never did.
    pub(super) fn truncated_frame(
        &mut self,
        dir: Direction,
        h: FrameHeader,
        head: Vec<u8>,
        arrived: &[u8],
        offset: u64,
    ) -> FrameEvent {
        let max_frame = self.cfg.max_frame;
        let st = self.state_mut(dir);
        let index = st.frames;
        st.frames += 1;
        let mut notes = frame::header_notes(&h, &head, dir.sender(), 0, max_frame);
        let missing = h.payload_len - arrived.len() as u64;
        notes.push(Note::error(
            Code::TruncatedFrame,
            "RFC 6455 5.2",
            format!(
                "the stream ended inside this frame: {} of its {} payload bytes arrived, {missing} never did (a connection cut mid-frame, or a wrong length)",
                arrived.len(),
                h.payload_len
            ),
        ));
        let mut payload = arrived.to_vec();
        if let Some(k) = h.mask {
            apply_mask(&mut payload, k.0);
        }
        FrameEvent {
            header: h,
            offset,
            head: frame::HeadBytes::new(&head),
            payload: payload.into(),
            skipped: false,
            close: None,
            notes,
            index,
            truncated: Some(missing),
        }
    }

    /// Remember a frame's payload; for a broken frame right after one,
    /// start looking for the torn write that explains it: the bytes from
    /// the broken frame on are collected up to TORN_AFTER (or the end of
    /// the stream), so the verdict is the same however the stream was cut
    /// into reads ([`Annotator::settle_torn`]).
    pub(super) fn torn_frame(&mut self, dir: Direction, broken: bool, f: &FrameEvent) {
        let st = self.state_mut(dir);
        let adjacent = st.last_payload_at + st.last_payload.len() as u64 == f.offset;
        if broken && !f.skipped && !st.last_payload.is_empty() && adjacent && st.torn.is_none() {
            let mut prev = st.last_payload.to_vec();
            if let Some(k) = st.last_payload_key {
                apply_mask(&mut prev, k.0);
            }
            let mut bytes = f.head.to_vec();
            let at = bytes.len();
            bytes.extend_from_slice(&f.payload);
            if let Some(k) = f.header.mask {
                apply_mask(&mut bytes[at..], k.0);
            }
            bytes.extend_from_slice(st.decoder.pending());
            bytes.truncate(TORN_AFTER);
            st.torn = Some(Box::new(TornProbe {
                prev_at: st.last_payload_at,
                prev,
                bytes,
            }));
        }
        if !f.skipped && f.payload.len() <= TORN_WINDOW && f.truncated.is_none() {
            // The frame's own payload, shared, not copied.
            st.last_payload = f.payload.clone();
            st.last_payload_key = f.header.mask;
            st.last_payload_at = f.offset + f.head.len() as u64;
        } else {
            st.last_payload = Default::default();
            st.last_payload_key = None;
        }
    }

    /// Judge a torn-frame probe once its bytes are in (`at_end`: the
    /// stream ended, so the frames after the cut may run to its end).
    pub(super) fn settle_torn(
        &mut self,
        dir: Direction,
        at_end: bool,
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        let conn = self.conn;
        let st = self.state_mut(dir);
        let Some(t) = st.torn.take() else { return };
        let Some(q) = diagnose::torn_frame(&t.prev, &t.bytes, at_end, dir.sender()) else {
            return;
        };
        let cut = t.prev_at + t.prev.len() as u64;
        let note = Note::info(
            Code::HintTornFrame,
            "RFC 6455 5.2",
            format!("a torn frame: the frame whose payload starts at byte {} declared {} payload bytes, but a whole frame header starts at byte {}, {q} bytes into that payload, and runs past its end at byte {cut}; that frame's write stopped after {q} payload bytes and the firmware went on with the next frame (a write that timed out half-way; arduinoWebSockets issue 533), so what is read from byte {cut} as a header with bogus bits is the rest of that next frame", t.prev_at, t.prev.len(), t.prev_at + q as u64),
        );
        out.push(Event::at(
            conn,
            dir,
            cut + t.bytes.len() as u64,
            time,
            EventKind::Notice { note },
        ));
    }

    /// A declared length that does not fit (over the limit, or the top bit
    /// set): name its likely cause from the bytes that followed, and with
    /// `resync` decode on from where the real next frame starts.
    pub(super) fn diagnose_length(
        &mut self,
        dir: Direction,
        h: &FrameHeader,
        head: &[u8],
        notes: &mut Vec<Note>,
    ) {
        let resync = self.cfg.resync;
        let st = match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        };
        let stuck = st.decoder.is_stuck();
        let after = if stuck {
            st.decoder.pending()
        } else {
            st.decoder.skipped_bytes()
        };
        let at_end = st.decoder.at_eof() && after.len() < DIAG_WINDOW;
        let after = &after[..after.len().min(DIAG_WINDOW)];
        let payload_at = if stuck {
            st.decoder.offset()
        } else {
            st.decoder.offset() - st.decoder.skipped_bytes().len() as u64
        };
        // Without --resync the cause is looked for once the payload's first
        // DIAG_WINDOW bytes came (or the stream ended): the same bytes
        // however the stream was cut into reads, so the same note.
        if !resync && stuck {
            // Without --resync a length with its top bit set stops the
            // decoder (the rest is shown raw), as before: not judged here.
            return;
        }
        if !resync {
            let target = DIAG_WINDOW.min(usize::try_from(h.payload_len).unwrap_or(usize::MAX));
            st.probe = Some(Box::new(LengthProbe {
                header: *h,
                head: head.to_vec(),
                payload_at,
                bytes: after[..after.len().min(target)].to_vec(),
                target,
            }));
            return;
        }
        let Some(cause) = diagnose::length_cause(h, head, after, at_end, dir.sender()) else {
            return;
        };
        let k = cause.fits();
        notes.push(length_note(h, &cause, payload_at + k, resync));
        if resync {
            if stuck {
                st.decoder.unstick();
                st.decoder.discard(k as usize);
                if let Phase::Raw(_) = st.phase {
                    st.phase = Phase::Frames;
                }
            } else {
                st.decoder.resync(k as usize);
            }
        }
    }

    /// Look again at an oversized frame's payload as far as it came: a
    /// cause found is said in a note (`at_end`: the stream ended, so the
    /// frames after it may run to its end). The bytes were already
    /// skipped, so decoding does not resume from there.
    pub(super) fn probe_length(
        &mut self,
        dir: Direction,
        at_end: bool,
        time: Option<f64>,
        out: &mut Vec<Event>,
    ) {
        let conn = self.conn;
        let st = self.state_mut(dir);
        let Some(p) = st.probe.take() else { return };
        let short = p.bytes.len() < p.target;
        let cause =
            diagnose::length_cause(&p.header, &p.head, &p.bytes, at_end && short, dir.sender());
        if let Some(c) = cause {
            let note = length_note(&p.header, &c, p.payload_at + c.fits(), false);
            // Placed where the bytes looked at end: the same however the
            // stream was cut into reads.
            out.push(Event::at(
                conn,
                dir,
                p.payload_at + p.bytes.len() as u64,
                time,
                EventKind::Notice { note },
            ));
        }
    }
}
