//! The end of a stream: bytes a capture missed (a gap), and what was left
//! over when the connection ended.

use super::*;

impl Annotator {
    /// `missing` bytes of direction `dir` were never captured (a packet
    /// capture lost them; 0 with nothing seen yet: the capture started in
    /// the middle of the connection). The unfinished frame and message are
    /// given up, a note says so, and decoding resumes at the next frame
    /// header that fits.
    pub fn gap(&mut self, dir: Direction, missing: u64, time: Option<f64>, out: &mut Vec<Event>) {
        self.now = time;
        let cfg = self.cfg;
        let st = self.state_mut(dir);
        let (at, dropped) = match &st.phase {
            Phase::Frames => {
                let pending = st.decoder.pending().len() as u64;
                (
                    st.decoder.offset() + pending + st.decoder.skipping(),
                    pending,
                )
            }
            Phase::Hunt => (
                st.hunt_from + st.head_buf.len() as u64,
                st.head_buf.len() as u64,
            ),
            Phase::Detect | Phase::Http => (st.head_buf.len() as u64, st.head_buf.len() as u64),
            Phase::Raw(_) => {
                // Nothing is decoded here anyway: count the missing bytes.
                st.raw_bytes += missing;
                return;
            }
        };
        st.frag = None;
        st.pending_json = None;
        st.head_buf = Vec::new();
        st.decoder = new_decoder(&cfg);
        st.hunt_from = at + missing;
        st.hunt_skipped = 0;
        st.phase = Phase::Hunt;
        let note = if at == 0 && missing == 0 {
            Note::warning(
                Code::CaptureStartMissed,
                "capture",
                "the capture starts in the middle of this connection (its opening handshake was not captured): frames are decoded from the first header that fits",
            )
        } else {
            Note::warning(
                Code::CaptureGap,
                "capture",
                format!(
                    "{missing} bytes of this direction were not captured (stream bytes {at} to {}){}: decoding resumes at the next frame header that fits",
                    at + missing,
                    if dropped > 0 {
                        format!("; the {dropped} bytes before them, of an unfinished frame, are given up")
                    } else {
                        String::new()
                    }
                ),
            )
        };
        out.push(Event::at(
            self.conn,
            dir,
            at,
            time,
            EventKind::Notice { note },
        ));
    }

    /// Both directions have ended: report what is left and the connection-level notes.
    pub fn finish(&mut self, time: Option<f64>, out: &mut Vec<Event>) {
        self.now = time;
        if self.finished {
            return;
        }
        self.finished = true;
        let mut notes = Vec::new();
        for dir in [Direction::C2S, Direction::S2C] {
            let st = match dir {
                Direction::C2S => &mut self.c2s,
                Direction::S2C => &mut self.s2c,
            };
            if st.phase == Phase::Detect && !st.head_buf.is_empty() {
                // Too short to tell: it cannot be a whole HTTP head, so try frames.
                st.phase = Phase::Frames;
                let buf = std::mem::take(&mut st.head_buf);
                self.feed(dir, &buf, time, out);
            }
        }
        for dir in [Direction::C2S, Direction::S2C] {
            self.finish_frames(dir, time, out);
        }
        for dir in [Direction::C2S, Direction::S2C] {
            self.leftover(dir, &mut notes, out);
        }
        self.ending_notes(&mut notes);
        out.push(Event::at(
            self.conn,
            Direction::C2S,
            0,
            time,
            EventKind::End {
                frames_c2s: self.c2s.frames,
                frames_s2c: self.s2c.frames,
                notes,
            },
        ));
    }

    /// What one direction left when the stream ended: a head or a frame cut
    /// short, a fragmented message unfinished, bytes never parsed.
    fn leftover(&mut self, dir: Direction, notes: &mut Vec<Note>, out: &mut Vec<Event>) {
        let who = if dir == Direction::C2S {
            "device"
        } else {
            "server"
        };
        let st = match dir {
            Direction::C2S => &mut self.c2s,
            Direction::S2C => &mut self.s2c,
        };
        match &st.phase {
            Phase::Hunt if st.hunt_skipped + st.head_buf.len() as u64 > 0 => {
                notes.push(Note::warning(
                    Code::CaptureGap,
                    "capture",
                    format!(
                        "the {who}'s last {} bytes, after a gap in the capture, held no frame header that fits",
                        st.hunt_skipped + st.head_buf.len() as u64
                    ),
                ));
            }
            Phase::Http if !st.head_buf.is_empty() => {
                notes.push(Note::error(
                    Code::TruncatedHandshake,
                    "RFC 9112 2.1",
                    format!(
                        "{who} stream ended inside its HTTP head after {} bytes",
                        st.head_buf.len()
                    ),
                ));
                if st.head_buf.ends_with(b"\n") && st.head_buf.contains(&b':') {
                    notes.push(Note::info(
                        Code::HintNoBlankLine,
                        "RFC 9112 2.1",
                        format!("the {who}'s head has whole header lines but no blank line after them: the firmware never sent the empty line (CRLF) that ends an HTTP head, so the other side waits for more headers"),
                    ));
                }
            }
            Phase::Frames => frames_left(st, who, notes),
            _ => {}
        }
        if st.raw_bytes > 0 {
            let why = match &st.phase {
                Phase::Raw(w) => w.clone(),
                _ => String::new(),
            };
            out.push(Event::at(
                self.conn,
                dir,
                st.raw_offset,
                self.now,
                EventKind::Unparsed {
                    bytes: st.raw_bytes,
                    preview: st.raw_preview.clone(),
                    why,
                },
            ));
        }
    }

    /// The connection-level notes: how it closed, pings never answered.
    fn ending_notes(&self, notes: &mut Vec<Note>) {
        let upgraded = self.c2s.phase == Phase::Frames || self.s2c.phase == Phase::Frames;
        if self.bad_answer == Some(false) {
            // The device did as RFC 6455 4.1 says: it failed the connection
            // without a frame, so no WebSocket close was owed.
            notes.push(Note::info(
                Code::BadAnswerRefused,
                "RFC 6455 4.1",
                "the device refused the server's 101 answer (see the response's checks) and sent no frame: it failed the connection, as it must",
            ));
        } else if upgraded {
            // A side that broke a framing rule gives its peer the right to
            // fail the connection: no Close, no pong owed to it (7.1.7).
            let failed = self.c2s.failed || self.s2c.failed;
            match (self.c2s.close_at, self.s2c.close_at) {
                _ if failed => {}
                (None, None) => notes.push(Note::warning(
                    Code::ClosedWithoutCloseFrame,
                    "RFC 6455 7.1.5",
                    "TCP closed with no Close frame from either side: the close code is 1006 (abnormal); a firmware that drops the link without closing does this",
                )),
                (Some(_), None) => notes.push(Note::warning(
                    Code::CloseNotAnswered,
                    "RFC 6455 5.5.1",
                    "the device sent a Close frame that the server never answered",
                )),
                (None, Some(_)) => notes.push(Note::warning(
                    Code::CloseNotAnswered,
                    "RFC 6455 5.5.1",
                    "the server sent a Close frame that the device never answered (a firmware that closes silently does this)",
                )),
                _ => {}
            }
            // A ping still out when the answering side closed crossed its Close
            // (stacks stop answering once they close): only a peer that never
            // closed is named here; one that talks and never pongs is named
            // while the connection runs.
            for (st, other, who) in [
                (&self.c2s, &self.s2c, "device"),
                (&self.s2c, &self.c2s, "server"),
            ] {
                // Already named while the connection ran: once is enough.
                let crossed = st.ping_after_close
                    || other.close_at.is_some()
                    || st.ping_warned
                    || st.failed
                    || other.failed;
                if let (Some(OutPing { offset: p, .. }), false) =
                    (st.pings_unanswered.first(), crossed)
                {
                    notes.push(Note::warning(
                        Code::PingNotAnswered,
                        "RFC 6455 5.5.2",
                        format!("the {who}'s ping at byte {p} was never answered with a pong"),
                    ));
                }
            }
        }
    }
}

/// What a stream in frames left: a frame cut short, a message unfinished.
fn frames_left(st: &DirState, who: &str, notes: &mut Vec<Note>) {
    let pending = st.decoder.pending().len();
    if st.decoder.skipping() > 0 {
        notes.push(Note::error(
            Code::TruncatedFrame,
            "RFC 6455 5.2",
            format!(
                "{who} stream ended with {} bytes of an oversized payload still to come",
                st.decoder.skipping()
            ),
        ));
    } else if pending > 0 && !st.truncated_shown {
        let need = match frame::parse_header(st.decoder.pending()) {
            frame::HeaderParse::Need(n) => {
                format!("its header needs {n} more bytes")
            }
            frame::HeaderParse::Header(h) => format!(
                "header says {} payload bytes, {} arrived",
                h.payload_len,
                pending - h.header_len
            ),
        };
        notes.push(Note::error(
            Code::TruncatedFrame,
            "RFC 6455 5.2",
            format!(
                "{who} stream ended inside a frame at byte {}: {need}",
                st.decoder.offset()
            ),
        ));
    }
    if let Some(f) = &st.frag {
        notes.push(Note::warning(
            Code::MessageUnfinished,
            "RFC 6455 5.4",
            format!(
                "{who} stream ended inside a fragmented message started at byte {}",
                f.offset
            ),
        ));
    }
}
