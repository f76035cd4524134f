//! The state machine that runs one case over the connections it needs.

use super::*;

mod answers;

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Act {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Write these bytes one per TCP segment.
    WriteBytewise(Vec<u8>),
    /// Drop TCP now.
    CloseTcp,
}

/// Where a case stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the upgrade request.
    Upgrade,
    /// Waiting for hello.
    Hello,
    /// The action is done; waiting for what is expected.
    Expecting,
    /// The verdict is in; closing the connection.
    Closing,
    /// Waiting for the device to come back (a reconnect case).
    Away,
    /// Over.
    Done,
}

/// Runs one [`Case`].
#[derive(Debug)]
pub struct Probe {
    case: Case,
    phase: Phase,
    deadline: Option<Instant>,
    verdict: Option<Verdict>,
    dev: Option<String>,
    /// The device's report period (from its hello).
    period: Duration,
    frames_in: u64,
    /// The state answering our switch, for the relay check on the next report.
    want_on: Option<bool>,
    /// (seq, ts) of the report left unacknowledged.
    unacked: Option<(u64, u64)>,
    /// The plug whose report that was (a passive's seq counts on its own).
    unacked_dev: Option<String>,
    dropped_at: Option<Instant>,
    close_sent: bool,
    notes: Vec<String>,
    /// The passive plugs the hello named.
    passives: Vec<String>,
    /// When each unanswered upgrade came (the back-off case).
    tries: Vec<Instant>,
    /// Since when the server says nothing (the silence case).
    silent_since: Option<Instant>,
    /// The TLS session (version, SNI) of this connection, over TLS.
    tls: Option<(String, Option<String>)>,
    /// The request's Host.
    host: Option<String>,
}

impl Probe {
    /// A probe for `case`; the device's connection is accepted at `now`.
    pub fn new(case: Case, now: Instant) -> Probe {
        Probe {
            case,
            phase: Phase::Upgrade,
            deadline: Some(now + Duration::from_secs(10)),
            verdict: None,
            dev: None,
            period: Duration::from_secs(60),
            frames_in: 0,
            want_on: None,
            unacked: None,
            unacked_dev: None,
            dropped_at: None,
            close_sent: false,
            notes: Vec::new(),
            passives: Vec::new(),
            tries: Vec::new(),
            silent_since: None,
            tls: None,
            host: None,
        }
    }

    /// The case.
    pub fn case(&self) -> &Case {
        &self.case
    }

    /// Is the verdict in and the connection handled?
    pub fn is_done(&self) -> bool {
        self.phase == Phase::Done
    }

    /// Does the probe wait for the device's next connection?
    pub fn awaits_connection(&self) -> bool {
        self.phase == Phase::Away
    }

    /// The verdict (once [`Probe::is_done`]).
    pub fn verdict(&self) -> Option<&Verdict> {
        self.verdict.as_ref()
    }

    /// The device id its hello gave.
    pub fn device(&self) -> Option<&str> {
        self.dev.as_deref()
    }

    /// When [`Probe::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn decide(&mut self, v: Verdict, now: Instant, out: &mut Vec<Act>) {
        if self.verdict.is_none() {
            self.verdict = Some(v);
        }
        if matches!(self.phase, Phase::Closing | Phase::Done) {
            return;
        }
        if self.close_sent {
            out.push(Act::CloseTcp);
            self.phase = Phase::Done;
            self.deadline = None;
            return;
        }
        // End the connection as a server does: Close, then TCP once it is
        // answered (or after 2 s).
        self.close_sent = true;
        out.push(Act::Write(frame(
            OpCode::Close,
            &close_payload(Some(CloseCode::NORMAL), "certify: next case"),
        )));
        self.phase = Phase::Closing;
        self.deadline = Some(now + Duration::from_secs(2));
    }

    /// Over TLS: how the handshake went (the version and SNI, or why it
    /// failed). Writes nothing; `CloseTcp` ends the connection.
    pub fn on_tls(&mut self, r: Result<(String, Option<String>), String>) -> Vec<Act> {
        let refused = self.case.expect == Expect::TlsRefused;
        let what = match self.case.tls {
            TlsCase::WrongName => "a certificate for another name (certify-wrong-name.invalid)",
            _ => "a self-signed certificate no trusted CA issued",
        };
        let v = match (r, refused) {
            (Ok(s), false) => {
                self.tls = Some(s);
                return Vec::new();
            }
            (Ok((ver, _)), true) => Verdict::Fail(format!("the device completed the TLS handshake ({ver}) with {what}: it accepts any certificate, so anyone on its network can play the backend")),
            (Err(e), true) => Verdict::Pass(format!("the device refused {what} (the TLS handshake ended: {e})")),
            // A ClientHello below TLS 1.2 (the driver names it, RFC 8996).
            (Err(e), false) if self.case.expect == Expect::TlsSession && e.contains("RFC 8996") => Verdict::Fail(e),
            (Err(e), false) => Verdict::NotObserved(format!("the TLS handshake failed ({e}): does the device trust certify's CA (certify/ca.pem in the data folder)?")),
        };
        self.verdict.get_or_insert(v);
        self.phase = Phase::Done;
        self.deadline = None;
        vec![Act::CloseTcp]
    }

    /// The device connected again (only while [`Probe::awaits_connection`]).
    pub fn on_reconnect(&mut self, now: Instant) {
        if let (Expect::Reconnects, Some(at)) = (&self.case.expect, self.dropped_at) {
            let waited = now - at;
            let w = waited.as_secs_f64();
            self.verdict = Some(if w < 0.5 {
                Verdict::Fail(format!("reconnected {w:.2} s after the drop: no back-off (the contract's starts at 1 s; a fleet reconnecting at once is a storm)"))
            } else if w > 30.0 {
                Verdict::Fail(format!(
                    "reconnected only {w:.1} s after the drop (the first back-off is 1 s)"
                ))
            } else {
                Verdict::Pass(format!("reconnected {w:.2} s after the drop"))
            });
        }
        if let (Expect::BacksOffAfterClose, Some(at)) = (&self.case.expect, self.dropped_at) {
            let w = (now - at).as_secs_f64();
            self.verdict = Some(if w < 0.9 {
                Verdict::Fail(format!("came back {w:.2} s after being replaced: with no back-off, two plugs with one id replace each other in a loop"))
            } else {
                Verdict::Pass(format!(
                    "answered the 4001 Close and came back {w:.2} s later, after its back-off"
                ))
            });
        }
        self.close_sent = false;
        self.frames_in = 0;
        self.tls = None;
        self.phase = Phase::Upgrade;
        self.deadline = Some(now + Duration::from_secs(10));
    }

    /// The annotator's events for what the device sent (and what was
    /// sent to it, which the probe passes over), at `now` (`unix`: the
    /// wall clock, for `welcome`).
    pub fn on_events(&mut self, events: &[Event], now: Instant, unix: f64) -> Vec<Act> {
        let mut out = Vec::new();
        for e in events {
            // Done, or Away: the probe dropped this connection, and what
            // else came in the same read is not the device's answer to
            // the drop (a report after it is no proof of one forgotten).
            if matches!(self.phase, Phase::Done | Phase::Away) {
                break;
            }
            if e.dir != crate::wire::frame::Direction::C2S {
                continue;
            }
            match &e.kind {
                EventKind::Request { verdict, head, .. } => {
                    self.host = head.get("host").map(str::to_string);
                    self.on_request(verdict.as_deref(), now, &mut out)
                }
                EventKind::HeadError(h) => {
                    let why = format!("the device's upgrade request is malformed: {}", h.reason);
                    self.verdict = Some(Verdict::NotObserved(why));
                    out.push(Act::CloseTcp);
                    self.phase = Phase::Done;
                }
                EventKind::Frame(f) => {
                    self.frames_in += 1;
                    for n in f.notes.iter().filter(|n| n.severity == Severity::Error) {
                        self.notes.push(format!(
                            "frame at byte {}: {} ({})",
                            f.offset, n.message, n.code
                        ));
                    }
                    self.on_frame(f, e.offset, now, &mut out);
                }
                EventKind::Message(m) => self.on_message(m, e.offset, now, unix, &mut out),
                _ => {}
            }
        }
        out
    }

    fn on_request(&mut self, v: Option<&ServerVerdict>, now: Instant, out: &mut Vec<Act>) {
        let Some(v) = v.filter(|v| v.accepted()) else {
            self.verdict = Some(Verdict::NotObserved(
                "the device's upgrade request is not a valid WebSocket upgrade (see its annotation)".into(),
            ));
            out.push(Act::Write(handshake::error_response(
                400,
                "",
                "certify: not a valid upgrade",
            )));
            out.push(Act::CloseTcp);
            self.phase = Phase::Done;
            return;
        };
        if let Handshake::DropUnanswered(n) = self.case.handshake {
            self.tries.push(now);
            if self.tries.len() <= n as usize {
                out.push(Act::CloseTcp);
                self.phase = Phase::Away;
                self.deadline = Some(now + Duration::from_secs(75));
                return;
            }
            // Answered at last: the verdict is the timeline, given once the
            // welcome has reset the device's back-off.
            self.verdict = Some(backoff_verdict(&self.tries));
            self.dropped_at = Some(now);
        }
        out.push(answer(self.case.handshake, v));
        match self.case.expect {
            Expect::Refused => {
                self.phase = Phase::Expecting;
                self.deadline = Some(now + Duration::from_secs(5));
            }
            Expect::Pong(_) if self.case.handshake == Handshake::WithPing => {
                self.phase = Phase::Expecting;
                self.deadline = Some(now + Duration::from_secs(5));
            }
            _ => {
                self.phase = Phase::Hello;
                self.deadline = Some(now + Duration::from_secs(10));
            }
        }
    }

    /// hello is in and welcome sent: the case's action.
    fn after_hello(&mut self, at: u64, now: Instant, out: &mut Vec<Act>) {
        self.phase = Phase::Expecting;
        self.deadline = Some(now + Duration::from_secs(10));
        let dev = self.dev.clone().unwrap_or_default();
        // Back after a drop the case made: the reconnect itself was what
        // it measured (the verdict is in), or the resend is awaited.
        if self.dropped_at.is_some() {
            if let Some(v) = self.verdict.clone() {
                self.decide(v, now, out);
            }
            return;
        }
        match self.case.action.clone() {
            Action::Nothing => {
                if self.case.expect == Expect::Hello {
                    let v = Verdict::Pass(format!("hello at byte {at} from {dev}"));
                    self.decide(v, now, out);
                }
                if self.case.expect == Expect::TlsSession {
                    let v = tls_session_verdict(self.tls.as_ref(), self.host.as_deref());
                    self.decide(v, now, out);
                }
            }
            Action::Switch(on, shape) => out.extend(switch_acts(&dev, on, shape)),
            Action::SwitchUnknown => out.push(Act::Write(text(&kinetid::switch(
                SWITCH_ID,
                NOBODY,
                Some(false),
            )))),
            Action::Ping(p) => out.push(Act::Write(frame(OpCode::Ping, &p))),
            Action::PongThenSwitch => {
                out.push(Act::Write(frame(OpCode::Pong, b"certify-unsolicited")));
                out.extend(switch_acts(&dev, None, Shape::Plain));
            }
            Action::JunkThenSwitch => {
                out.push(Act::Write(junk()));
                out.extend(switch_acts(&dev, None, Shape::Plain));
            }
            Action::Close(code, reason) => {
                self.close_sent = true;
                out.push(Act::Write(frame(
                    OpCode::Close,
                    &close_payload(Some(CloseCode(code)), reason),
                )));
                self.deadline = Some(now + Duration::from_secs(5));
            }
            Action::Bad(b) => {
                let bytes = bad_frame(b, &dev);
                if b == BadFrame::CloseCode999 {
                    self.close_sent = true;
                }
                out.push(Act::Write(bytes));
                self.deadline = Some(now + Duration::from_secs(5));
            }
            Action::Drop => {
                self.dropped_at = Some(now);
                out.push(Act::CloseTcp);
                self.phase = Phase::Away;
                self.deadline = Some(now + Duration::from_secs(75));
            }
            Action::DropUnacked => {
                // The next report is left unacknowledged (see on_message).
                self.deadline = Some(now + self.period * 2 + Duration::from_secs(3));
            }
            Action::SwitchPassive => match self.passives.first() {
                Some(p) => out.push(Act::Write(text(&kinetid::switch(SWITCH_ID, p, None)))),
                None => self.decide(
                    Verdict::NotObserved(
                        "the device's hello names no passive plug (passives), so none could be switched".into(),
                    ),
                    now,
                    out,
                ),
            },
            Action::Silence => {
                self.silent_since = Some(now);
                self.deadline = Some(now + Duration::from_secs(100));
            }
        }
    }

    /// TCP ended (the device's FIN or reset, or ours).
    pub fn on_eof(&mut self, now: Instant) {
        let frames = self.frames_in;
        let v = match (self.phase, &self.case.expect) {
            (Phase::Done | Phase::Away, _) => None,
            (Phase::Expecting, Expect::Refused) if frames == 0 => Some(Verdict::Pass("no frame sent; the device closed TCP".into())),
            // Failing the connection may skip the Close (RFC 6455 7.1.7).
            (Phase::Expecting, Expect::Fails(codes)) => Some(Verdict::Pass(format!("the device failed the connection by dropping TCP without a Close, which RFC 6455 7.1.7 allows (a Close with {} would tell the server why)", join(codes)))),
            (Phase::Expecting, Expect::NoticesSilence) => {
                let w = self.silent_since.map_or(0.0, |t| (now - t).as_secs_f64());
                Some(Verdict::Pass(format!("the device dropped the link {w:.0} s into the silence")))
            }
            (Phase::Expecting, Expect::BacksOffAfterClose) if self.verdict.is_none() && self.dropped_at.is_none() => Some(Verdict::Fail("the device dropped TCP without answering the server's 4001 Close".into())),
            (Phase::Expecting, Expect::CloseAnswered) if self.verdict.is_none() => Some(Verdict::Fail("the device dropped TCP without answering the server's Close (RFC 6455 7.1.1: the server closes TCP first)".into())),
            (Phase::Expecting, Expect::StateOrTooBig) if self.verdict.is_none() => Some(Verdict::Fail("the device dropped TCP without a Close on a message too big for it (close 1009, or read it whole)".into())),
            (Phase::Closing, _) => None,
            (Phase::Upgrade, _) => Some(Verdict::NotObserved("the device closed TCP before its upgrade request".into())),
            _ if self.verdict.is_none() => Some(Verdict::Fail("the device closed TCP before the case was decided".into())),
            _ => None,
        };
        if let Some(v) = v {
            self.verdict.get_or_insert(v);
        }
        if !matches!(self.phase, Phase::Away) {
            self.phase = Phase::Done;
            self.deadline = None;
        }
    }

    /// Timers: what did not happen in time.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Act> {
        let mut out = Vec::new();
        if self.deadline.is_none_or(|d| now < d) {
            return out;
        }
        let v = match (self.phase, &self.case.expect) {
            (Phase::Upgrade, _) => Verdict::NotObserved("no upgrade request within 10 s of the connection".into()),
            (Phase::Hello, Expect::Hello) => Verdict::Fail("no hello within 10 s of the upgrade".into()),
            (Phase::Hello, _) => Verdict::NotObserved("no hello within 10 s of the upgrade, so the case could not run".into()),
            (Phase::Expecting, Expect::Refused) => Verdict::Fail("the device kept the connection open for 5 s after an upgrade answer it must refuse".into()),
            (Phase::Expecting, Expect::Pong(_)) => Verdict::Fail("no pong within 5-10 s of the ping".into()),
            (Phase::Expecting, Expect::CloseAnswered | Expect::BacksOffAfterClose) => Verdict::Fail("the server's Close was not answered within 5 s".into()),
            (Phase::Expecting, Expect::NoticesSilence) => Verdict::Fail("still connected 100 s into the server's silence: the contract gives up after 90 s of hearing nothing (a half-open link is never noticed)".into()),
            (Phase::Expecting, Expect::Fails(codes)) => Verdict::Fail(format!("the device neither failed the connection ({}) nor dropped it within 5 s", join(codes))),
            (Phase::Expecting, _) if self.want_on.is_some() => Verdict::NotObserved("the state answered, but no report came to show the relay".into()),
            (Phase::Expecting, Expect::Resent) if self.dropped_at.is_some() => Verdict::Fail("the report left unacknowledged was not sent again within 10 s of the welcome".into()),
            (Phase::Expecting, Expect::Resent) => Verdict::NotObserved("no report came to leave unacknowledged".into()),
            (Phase::Expecting, _) => Verdict::Fail("no answer within 10 s".into()),
            (Phase::Closing, _) => {
                out.push(Act::CloseTcp);
                self.phase = Phase::Done;
                self.deadline = None;
                return out;
            }
            (Phase::Away, Expect::BacksOffAfterClose) => Verdict::Pass("the device answered the 4001 Close and did not come back within 75 s".into()),
            (Phase::Away, _) => Verdict::NotObserved("the device did not come back within 75 s".into()),
            (Phase::Done, _) => return out,
        };
        if self.phase == Phase::Away {
            self.verdict.get_or_insert(v);
            self.phase = Phase::Done;
            self.deadline = None;
            return out;
        }
        self.decide(v, now, &mut out);
        out
    }

    /// Error notes the annotator raised on the device's frames during the case.
    pub fn device_errors(&self) -> &[String] {
        &self.notes
    }
}
