//! What the device sends, case by case: its frames, its Close, its
//! messages (hello, reports, states, errors), judged as the case asks.

use super::*;

impl Probe {
    pub(super) fn on_frame(
        &mut self,
        f: &crate::annotate::FrameEvent,
        at: u64,
        now: Instant,
        out: &mut Vec<Act>,
    ) {
        let op = f.header.opcode;
        if self.case.expect == Expect::Refused && self.phase == Phase::Expecting {
            let v = Verdict::Fail(format!("the device accepted the upgrade and sent a {op} frame (at byte {at}) instead of failing the connection"));
            self.decide(v, now, out);
            return;
        }
        match op {
            OpCode::Ping if !self.close_sent && self.silent_since.is_none() => {
                out.push(Act::Write(frame(OpCode::Pong, &f.payload)));
            }
            OpCode::Pong => {
                if let Expect::Pong(want) = &self.case.expect {
                    if self.phase == Phase::Expecting {
                        let v = if f.payload[..] == want[..] {
                            Verdict::Pass(format!(
                                "pong at byte {at} echoes the {}-byte payload",
                                want.len()
                            ))
                        } else {
                            Verdict::Fail(format!(
                                "the pong at byte {at} carries {:?}, not the ping's {:?}",
                                String::from_utf8_lossy(&f.payload),
                                String::from_utf8_lossy(want)
                            ))
                        };
                        self.decide(v, now, out);
                    }
                }
            }
            OpCode::Close => self.on_close(f, at, now, out),
            _ => {}
        }
    }

    /// The device's Close: judged as the case asks, answered if it came
    /// first, then TCP is ours to end.
    pub(super) fn on_close(
        &mut self,
        f: &crate::annotate::FrameEvent,
        at: u64,
        now: Instant,
        out: &mut Vec<Act>,
    ) {
        let code = f.close.as_ref().map(|(c, _)| c.0);
        let expecting = self.phase == Phase::Expecting;
        match (&self.case.expect, expecting) {
            (Expect::BacksOffAfterClose, true) if self.close_sent => {
                self.dropped_at = Some(now);
            }
            (Expect::NoticesSilence, true) => {
                let w = self.silent_since.map_or(0.0, |t| (now - t).as_secs_f64());
                self.verdict.get_or_insert(Verdict::Pass(format!(
                    "the device closed (at byte {at}) {w:.0} s into the silence"
                )));
            }
            (Expect::CloseAnswered, true) if self.close_sent => {
                self.verdict.get_or_insert(Verdict::Pass(format!(
                    "the device answered our Close at byte {at}{} and left TCP to the server",
                    code.map_or(String::new(), |c| format!(" with {c}"))
                )));
            }
            (Expect::Fails(codes), true) => {
                let v = match code {
                    Some(c) if codes.contains(&c) => Verdict::Pass(format!(
                        "the device failed the connection with {c} (its Close at byte {at})"
                    )),
                    Some(c) => Verdict::Fail(format!(
                        "the device closed with {c} (at byte {at}); the rule calls for {}",
                        join(codes)
                    )),
                    None => Verdict::Fail(format!(
                        "the device closed with no code (at byte {at}); the rule calls for {}",
                        join(codes)
                    )),
                };
                self.verdict.get_or_insert(v);
            }
            (Expect::StateOrTooBig, true) => {
                let v = match code {
                    Some(1009) => Verdict::Pass(format!("the device closed with 1009 (at byte {at}): message too big for it")),
                    c => Verdict::Fail(format!("the device closed with {} (at byte {at}); a message too big is closed with 1009", c.map_or("no code".to_string(), |c| c.to_string()))),
                };
                self.verdict.get_or_insert(v);
            }
            _ if self.verdict.is_none() && !self.close_sent => {
                let v = Verdict::Fail(format!(
                    "the device closed the connection (at byte {at}{}) before the case was decided",
                    code.map_or(String::new(), |c| format!(", code {c}"))
                ));
                self.verdict = Some(v);
            }
            _ => {}
        }
        // Answer its Close if we had not sent ours; then TCP.
        if !self.close_sent {
            self.close_sent = true;
            let echo = match code {
                Some(c) if CloseCode(c).is_allowed() => Some(CloseCode(c)),
                Some(_) => Some(CloseCode::PROTOCOL),
                None => None,
            };
            out.push(Act::Write(frame(OpCode::Close, &close_payload(echo, ""))));
        }
        out.push(Act::CloseTcp);
        if self.case.expect == Expect::BacksOffAfterClose
            && self.dropped_at.is_some()
            && self.verdict.is_none()
        {
            // Its reconnect is what the case measures.
            self.phase = Phase::Away;
            self.deadline = Some(now + Duration::from_secs(75));
        } else {
            self.phase = Phase::Done;
            self.deadline = None;
        }
    }

    pub(super) fn on_message(
        &mut self,
        m: &crate::annotate::MessageEvent,
        at: u64,
        now: Instant,
        unix: f64,
        out: &mut Vec<Act>,
    ) {
        let Some(k) = m.kinetid.as_ref() else {
            if self.phase == Phase::Hello {
                let v = Verdict::Fail(format!(
                    "the first message (at byte {at}) is not a Kinetid hello"
                ));
                self.decide(v, now, out);
            }
            return;
        };
        match (&k.typed, self.phase) {
            (Some(Msg::Hello(h)), Phase::Hello) => self.on_hello(h, at, now, unix, out),
            (_, Phase::Hello) => {
                let v = Verdict::Fail(format!(
                    "the first message (at byte {at}) is a {:?}, not hello",
                    k.t
                ));
                self.decide(v, now, out);
            }
            (Some(Msg::Report(r)), _) => self.on_report(r, k.id, at, now, out),
            (Some(Msg::State(s)), _) => self.on_state(s, at, now, out),
            (Some(Msg::Error(e)), Phase::Expecting) if e.re == Some(SWITCH_ID) => {
                let v = match &self.case.expect {
                    Expect::Error(code) if e.code.as_deref() == Some(code) => {
                        Verdict::Pass(format!("error {code} with re {SWITCH_ID} at byte {at}"))
                    }
                    Expect::Error(code) => {
                        Verdict::Fail(format!("error {:?} at byte {at}, not {code}", e.code))
                    }
                    _ => Verdict::Fail(format!(
                        "the switch was answered with error {:?} at byte {at}",
                        e.code
                    )),
                };
                self.decide(v, now, out);
            }
            _ => {}
        }
    }

    /// The device's hello: welcome it, then the case's action.
    pub(super) fn on_hello(
        &mut self,
        h: &kinetid::msg::Hello,
        at: u64,
        now: Instant,
        unix: f64,
        out: &mut Vec<Act>,
    ) {
        let dev = h.dev.clone().unwrap_or_default();
        if !kinetid::is_device_id(&dev) {
            let v = Verdict::Fail(format!(
                "hello at byte {at} names {dev:?}, not KN- and 12 upper-case hex digits"
            ));
            return self.decide(v, now, out);
        }
        if self.case.expect == Expect::Hello {
            if let Some(n) = self.notes.first() {
                let v = Verdict::Fail(format!(
                    "hello came, but in frames that break RFC 6455: {n}"
                ));
                return self.decide(v, now, out);
            }
        }
        self.dev = Some(dev);
        self.passives = h
            .passives
            .iter()
            .flatten()
            .filter(|p| kinetid::is_device_id(p))
            .cloned()
            .collect();
        self.period = Duration::from_secs(h.period_s.unwrap_or(60).clamp(1, 600));
        // Quick reports asked for through welcome's period_s, so a
        // device that follows it finishes the suite in minutes; the
        // waits stay on the hello's period for one that does not.
        out.push(Act::Write(text(&kinetid::welcome(
            h.id.unwrap_or(0),
            unix as u64,
            h.period_s.unwrap_or(60).min(QUICK_PERIOD_S),
        ))));
        self.after_hello(at, now, out);
    }

    /// A report: acknowledged (unless the case holds it back), and what the
    /// case waits for in it.
    pub(super) fn on_report(
        &mut self,
        r: &kinetid::msg::Report,
        id: Option<u64>,
        at: u64,
        now: Instant,
        out: &mut Vec<Act>,
    ) {
        let key = (r.seq.unwrap_or(0), r.ts.unwrap_or(0));
        if self.case.action == Action::DropUnacked
            && self.phase == Phase::Expecting
            && self.unacked.is_none()
            && self.dropped_at.is_none()
        {
            // Not acknowledged: the plug must keep it; then the link drops.
            self.unacked = Some(key);
            self.unacked_dev = r.dev.clone();
            self.dropped_at = Some(now);
            out.push(Act::CloseTcp);
            self.phase = Phase::Away;
            self.deadline = Some(now + Duration::from_secs(75));
            return;
        }
        if let (Some(id), None) = (id, self.silent_since) {
            out.push(Act::Write(text(&kinetid::ack(id))));
        }
        let same_plug = r.dev == self.unacked_dev;
        if let (Expect::Resent, Some(want), true) = (&self.case.expect, self.unacked, same_plug) {
            if key == want {
                let v = Verdict::Pass(format!(
                    "the report seq {} ts {} came again after the reconnect (at byte {at})",
                    want.0, want.1
                ));
                return self.decide(v, now, out);
            }
            if self.dropped_at.is_some() && key.0 > want.0 {
                let v = Verdict::Fail(format!(
                    "after the reconnect a newer report (seq {}, at byte {at}) came, but seq {} ts {}, left unacknowledged, was never sent again: reports forgotten",
                    key.0, want.0, want.1
                ));
                return self.decide(v, now, out);
            }
        }
        if let (Some(on), true) = (self.want_on, r.dev == self.dev) {
            let v = if r.on == Some(on) {
                Verdict::Pass(format!(
                    "state answered the switch and the next report (seq {}) says the relay is {}",
                    key.0,
                    if on { "on" } else { "off" }
                ))
            } else {
                Verdict::Fail(format!(
                    "the state said the relay is {} but the next report (at byte {at}) says {:?}",
                    if on { "on" } else { "off" },
                    r.on
                ))
            };
            self.want_on = None;
            self.decide(v, now, out);
        }
    }

    /// A state: acknowledged when unsolicited, judged when it answers the
    /// switch.
    pub(super) fn on_state(
        &mut self,
        s: &kinetid::msg::State,
        at: u64,
        now: Instant,
        out: &mut Vec<Act>,
    ) {
        if s.id.is_some() && s.re.is_none() {
            if self.silent_since.is_none() {
                out.push(Act::Write(text(&kinetid::ack(s.id.unwrap_or(0)))));
            }
            return;
        }
        if s.re != Some(SWITCH_ID) || self.phase != Phase::Expecting {
            return;
        }
        match &self.case.expect {
            Expect::PassiveState => {
                let want = self.passives.first().cloned();
                let v = if s.dev.is_some() && s.dev == want {
                    Verdict::Pass(format!(
                        "the passive plug's state (dev {}) answered with re {SWITCH_ID} at byte {at}",
                        want.unwrap_or_default()
                    ))
                } else {
                    Verdict::Fail(format!(
                        "the state at byte {at} is for {:?}, not the passive plug {:?} that was switched",
                        s.dev, want
                    ))
                };
                self.decide(v, now, out);
            }
            Expect::State | Expect::StateOrTooBig => {
                if let Action::Switch(Some(on), _) = self.case.action {
                    if s.on != Some(on) {
                        let v = Verdict::Fail(format!(
                            "the switch asked for {} and the state at byte {at} says {:?}",
                            if on { "on" } else { "off" },
                            s.on
                        ));
                        return self.decide(v, now, out);
                    }
                    // The relay: the next report must agree.
                    self.want_on = Some(on);
                    self.deadline = Some(now + self.period * 2 + Duration::from_secs(3));
                    return;
                }
                let v = Verdict::Pass(format!("state with re {SWITCH_ID} at byte {at}"));
                self.decide(v, now, out);
            }
            Expect::Fails(_) => {
                let v = Verdict::Fail(format!("the device obeyed the command in a frame it must refuse (its state at byte {at})"));
                self.decide(v, now, out);
            }
            _ => {}
        }
    }
}
