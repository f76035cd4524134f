//! The RFC 6455 reactions of one endpoint, without I/O.
//!
//! A [`Session`] takes the annotator's events for the bytes its peer sent,
//! and the clock, and says what to do: frames to send, messages to hand to
//! the application, when to drop TCP. It answers pings (5.5.2), echoes a
//! Close with the peer's code (5.5.1), fails the connection with the code a
//! broken rule calls for after the bytes have been annotated (7.1.7, 7.4.1),
//! sends keep-alive pings, closes an idle peer, and bounds the closing
//! handshake. `listen` drives one in the server role and `emulate-device` in
//! the client role, so the two cannot disagree.

use crate::annotate::{close_code_for, Annotator, Event, EventKind, FrameEvent, MessageEvent};
use crate::note::Code;
use crate::wire::frame::{close_payload, CloseCode, Direction, OpCode, Role};
use std::time::{Duration, Instant};

/// How a session behaves.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Which end this is.
    pub role: Role,
    /// Send a ping this often (`None`: never).
    pub ping_interval: Option<Duration>,
    /// Close a peer silent this long (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// How long to wait for the peer's Close (or, as a client, for the
    /// server to drop TCP) once ours is sent.
    pub close_timeout: Duration,
    /// Keep going after a violation (only show it).
    pub lenient: bool,
    /// Answer pings (false reproduces firmware that never does).
    pub answer_pings: bool,
    /// Answer a Close (false reproduces firmware that closes silently).
    pub answer_close: bool,
    /// Answer pings with empty pongs (reproduces firmware that does not
    /// echo the ping's payload).
    pub empty_pongs: bool,
}

impl SessionConfig {
    /// RFC 6455 behaviour for `role`, without keep-alive or idle timers.
    pub fn new(role: Role) -> SessionConfig {
        SessionConfig {
            role,
            ping_interval: None,
            idle_timeout: None,
            close_timeout: Duration::from_secs(2),
            lenient: false,
            answer_pings: true,
            answer_close: true,
            empty_pongs: false,
        }
    }
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Send a frame (the driver encodes it for its role).
    Frame {
        /// Opcode.
        opcode: OpCode,
        /// Payload (unmasked).
        payload: Vec<u8>,
    },
    /// A complete data message for the application.
    Deliver(Box<MessageEvent>),
    /// Drop the TCP connection now.
    CloseTcp,
}

impl Output {
    fn close(code: Option<u16>, reason: &str) -> Output {
        Output::Frame {
            opcode: OpCode::Close,
            payload: close_payload(code.map(CloseCode), reason),
        }
    }
}

/// One endpoint's RFC 6455 state.
#[derive(Debug)]
pub struct Session {
    cfg: SessionConfig,
    close_sent: bool,
    close_received: bool,
    failed: bool,
    /// The code of the peer's Close, when it sent one (1005 for none).
    peer_close: Option<u16>,
    last_heard: Instant,
    next_ping: Option<Instant>,
    close_deadline: Option<Instant>,
    ping_seq: u64,
    done: bool,
}

impl Session {
    /// A session whose connection opened at `now`.
    pub fn new(cfg: SessionConfig, now: Instant) -> Session {
        let next_ping = cfg.ping_interval.filter(|p| !p.is_zero()).map(|p| now + p);
        Session {
            cfg,
            close_sent: false,
            close_received: false,
            failed: false,
            peer_close: None,
            last_heard: now,
            next_ping,
            close_deadline: None,
            ping_seq: 0,
            done: false,
        }
    }

    /// The direction the peer's bytes travel.
    fn peer_dir(&self) -> Direction {
        match self.cfg.role {
            Role::Server => Direction::C2S,
            Role::Client => Direction::S2C,
        }
    }

    /// May the application still send data (no Close sent)?
    pub fn is_open(&self) -> bool {
        !self.close_sent
    }

    /// Has this end sent its Close?
    pub fn close_sent(&self) -> bool {
        self.close_sent
    }

    /// The close code the peer sent (1005 when its Close had none).
    pub fn peer_close(&self) -> Option<u16> {
        self.peer_close
    }

    /// Has the connection been failed (a violation, a limit)?
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Has the session told the driver to drop TCP?
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// When [`Session::on_tick`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let idle = (!self.close_sent)
            .then(|| self.cfg.idle_timeout.map(|t| self.last_heard + t))
            .flatten();
        let ping = self.next_ping.filter(|_| !self.close_sent);
        [self.close_deadline, idle, ping]
            .into_iter()
            .flatten()
            .min()
    }

    fn finish(&mut self, out: &mut Vec<Output>) {
        if !self.done {
            self.done = true;
            out.push(Output::CloseTcp);
        }
    }

    /// The closing handshake is complete: the server drops TCP first
    /// (RFC 6455 7.1.1); a client waits a moment for it to do so.
    fn handshake_over(&mut self, now: Instant, out: &mut Vec<Output>) {
        match self.cfg.role {
            Role::Server => self.finish(out),
            Role::Client => {
                self.close_deadline = Some(now + self.cfg.close_timeout.min(Duration::from_secs(1)))
            }
        }
    }

    /// Close from this end with `code` and `reason` (shutdown, policy,
    /// a command). Nothing happens if a Close was already sent.
    pub fn close(&mut self, code: u16, reason: &str, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.close_sent || self.done {
            return out;
        }
        self.close_sent = true;
        self.close_deadline = Some(now + self.cfg.close_timeout);
        out.push(Output::close(Some(code), reason));
        out
    }

    /// Fail the connection from this end (RFC 6455 7.1.7): send a Close,
    /// process nothing more from the peer.
    pub fn fail(&mut self, code: u16, reason: &str, now: Instant) -> Vec<Output> {
        self.failed = true;
        self.close(code, reason, now)
    }

    /// The annotator's events for bytes the peer sent at `now`.
    pub fn on_peer(&mut self, events: Vec<Event>, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        self.last_heard = now;
        let peer = self.peer_dir();
        for e in events {
            if e.dir != peer || self.done {
                continue;
            }
            match e.kind {
                // After failing, nothing more is processed, but the peer's
                // Close ends the closing handshake.
                EventKind::Frame(f) if self.failed && f.header.opcode == OpCode::Close => {
                    self.close_received = true;
                    self.handshake_over(now, &mut out);
                }
                EventKind::Frame(_) if self.failed => {}
                EventKind::Frame(f) => {
                    let broken = f
                        .notes
                        .iter()
                        .find_map(|n| close_code_for(n).map(|c| (c, n.code)));
                    if let (Some((code, why)), false) = (broken, self.cfg.lenient) {
                        out.extend(self.fail(code.0, why.as_str(), now));
                        if f.header.opcode == OpCode::Close {
                            // The faulty frame was the peer's Close: it is over.
                            self.close_received = true;
                            self.handshake_over(now, &mut out);
                        }
                        return out;
                    }
                    match f.header.opcode {
                        // A ping is answered until a Close has been received
                        // (RFC 6455 5.5.2), even after ours went out. One
                        // over 125 bytes (seen only when lenient) is not:
                        // its echo would be an invalid frame of our own.
                        OpCode::Ping
                            if !self.close_received
                                && self.cfg.answer_pings
                                && f.payload.len() <= 125 =>
                        {
                            out.push(Output::Frame {
                                opcode: OpCode::Pong,
                                payload: if self.cfg.empty_pongs {
                                    Vec::new()
                                } else {
                                    f.payload.to_vec()
                                },
                            });
                        }
                        OpCode::Close => {
                            self.on_close_frame(&f, now, &mut out);
                            return out;
                        }
                        _ => {}
                    }
                }
                EventKind::Message(m) if !self.close_sent => {
                    // Rules judged on the whole message (compressed text is
                    // checked once inflated) fail the connection here.
                    let broken = m
                        .notes
                        .iter()
                        .find_map(|n| close_code_for(n).map(|c| (c, n.code)));
                    match (broken, self.cfg.lenient) {
                        (Some((code, why)), false) => {
                            out.extend(self.fail(code.0, why.as_str(), now));
                            return out;
                        }
                        _ => out.push(Output::Deliver(m)),
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// The peer's Close: answered with its code echoed (RFC 6455 5.5.1;
    /// none if none was sent), unless ours went first; the closing
    /// handshake is then over.
    fn on_close_frame(&mut self, f: &FrameEvent, now: Instant, out: &mut Vec<Output>) {
        self.close_received = true;
        self.peer_close = Some(f.close.as_ref().map_or(1005, |(c, _)| c.0));
        if !self.close_sent {
            if !self.cfg.answer_close {
                self.finish(out);
                return;
            }
            let code = match &f.close {
                Some((c, _)) if c.is_allowed() => Some(c.0),
                Some(_) => Some(CloseCode::PROTOCOL.0),
                None => None,
            };
            self.close_sent = true;
            out.push(Output::close(code, ""));
        }
        self.handshake_over(now, out);
    }

    /// After the peer's bytes were fed to `ann` (and their events given to
    /// [`Session::on_peer`]): fail fast on a text frame that is not yet
    /// complete but already invalid UTF-8 (RFC 6455 8.1 allows failing as
    /// soon as the invalid byte is seen; a peer that sends the rest only
    /// after it hears back would otherwise hold the connection). The
    /// frame's note comes from the annotator once the frame is complete.
    pub fn on_partial(&mut self, ann: &mut Annotator, now: Instant) -> Vec<Output> {
        if self.failed || self.close_sent || self.done || self.cfg.lenient {
            return Vec::new();
        }
        if ann.partial_text_invalid(self.peer_dir()) {
            return self.fail(
                CloseCode::INVALID_DATA.0,
                Code::TextInvalidUtf8.as_str(),
                now,
            );
        }
        Vec::new()
    }

    /// Timers: the closing-handshake deadline, keep-alive pings, idleness.
    pub fn on_tick(&mut self, now: Instant) -> Vec<Output> {
        let mut out = Vec::new();
        if self.done {
            return out;
        }
        if self.close_deadline.is_some_and(|d| now >= d) {
            self.finish(&mut out);
            return out;
        }
        if self.close_sent {
            return out;
        }
        if self
            .cfg
            .idle_timeout
            .is_some_and(|t| now >= self.last_heard + t)
        {
            return self.close(1001, "nothing heard for too long", now);
        }
        if let (Some(at), Some(period)) = (self.next_ping, self.cfg.ping_interval) {
            if now >= at {
                self.ping_seq += 1;
                out.push(Output::Frame {
                    opcode: OpCode::Ping,
                    payload: self.ping_seq.to_string().into_bytes(),
                });
                // Skip pings missed while the driver was busy: one per period.
                let mut next = at + period;
                while next <= now {
                    next += period;
                }
                self.next_ping = Some(next);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::{Annotator, Config, HandshakeMode};
    use crate::wire::frame::{encode_frame, EncodeOptions};

    /// Frames from the peer of `role`, through an annotator, into a session.
    struct Rig {
        ann: Annotator,
        s: Session,
        t0: Instant,
    }

    impl Rig {
        fn new(cfg: SessionConfig) -> Rig {
            let t0 = Instant::now();
            Rig {
                ann: Annotator::new(
                    1,
                    Config {
                        handshake: HandshakeMode::None,
                        ..Config::default()
                    },
                ),
                s: Session::new(cfg, t0),
                t0,
            }
        }
        fn server() -> Rig {
            Rig::new(SessionConfig::new(Role::Server))
        }
        fn client() -> Rig {
            Rig::new(SessionConfig::new(Role::Client))
        }
        fn peer(&mut self, op: OpCode, payload: &[u8], at_ms: u64) -> Vec<Output> {
            let (dir, role) = match self.s.cfg.role {
                Role::Server => (Direction::C2S, Role::Client),
                Role::Client => (Direction::S2C, Role::Server),
            };
            let mut b = Vec::new();
            encode_frame(&mut b, op, payload, EncodeOptions::for_role(role));
            self.raw(dir, &b, at_ms)
        }
        fn raw(&mut self, dir: Direction, b: &[u8], at_ms: u64) -> Vec<Output> {
            let mut ev = Vec::new();
            self.ann.feed(dir, b, None, &mut ev);
            let now = self.t0 + Duration::from_millis(at_ms);
            let mut out = self.s.on_peer(ev, now);
            out.extend(self.s.on_partial(&mut self.ann, now));
            out
        }
        fn tick(&mut self, at_ms: u64) -> Vec<Output> {
            self.s.on_tick(self.t0 + Duration::from_millis(at_ms))
        }
    }

    fn close_frame(code: Option<u16>) -> Output {
        Output::close(code, "")
    }

    fn closes_with(out: &[Output]) -> Option<u16> {
        out.iter().find_map(|o| match o {
            Output::Frame {
                opcode: OpCode::Close,
                payload,
            } if payload.len() >= 2 => Some(u16::from_be_bytes([payload[0], payload[1]])),
            _ => None,
        })
    }

    /// A frame from the peer of `r`, encoded as its role does.
    fn peer_bytes(r: &Rig, op: OpCode, fin: bool, payload: &[u8]) -> (Direction, Vec<u8>) {
        let (dir, role) = match r.s.cfg.role {
            Role::Server => (Direction::C2S, Role::Client),
            Role::Client => (Direction::S2C, Role::Server),
        };
        let mut b = Vec::new();
        let opts = EncodeOptions {
            fin,
            ..EncodeOptions::for_role(role)
        };
        encode_frame(&mut b, op, payload, opts);
        (dir, b)
    }

    #[test]
    fn invalid_utf8_fails_at_the_first_bad_byte_not_at_the_frame_end() {
        // Autobahn 6.4.3/6.4.4: one text frame in pieces, the invalid
        // bytes in the middle piece; the rest only after a pause.
        let text = "\u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5}".as_bytes();
        let mut payload = text.to_vec();
        payload.extend_from_slice(b"\xf4\x90\x80\x80");
        payload.extend_from_slice(b"edited");
        for mut r in [Rig::server(), Rig::client()] {
            let (dir, b) = peer_bytes(&r, OpCode::Text, true, &payload);
            let head = b.len() - payload.len();
            let cut1 = head + text.len();
            assert!(r.raw(dir, &b[..cut1], 0).is_empty(), "valid so far");
            let out = r.raw(dir, &b[cut1..cut1 + 4], 1);
            assert_eq!(closes_with(&out), Some(1007), "{out:?}");
            assert!(r.s.failed());
            // The rest changes nothing; the annotator still judges the
            // frame whole, with its note, once it is complete.
            let mut ev = Vec::new();
            r.ann.feed(dir, &b[cut1 + 4..], None, &mut ev);
            let notes: Vec<_> = ev.iter().flat_map(|e| e.notes()).map(|n| n.code).collect();
            assert!(notes.contains(&Code::TextInvalidUtf8), "{notes:?}");
        }
    }

    #[test]
    fn valid_text_in_pieces_and_split_code_points_never_fail() {
        let payload = "h\u{e9}llo \u{1f50c} w\u{f6}rld".as_bytes().to_vec();
        for mut r in [Rig::server(), Rig::client()] {
            let (dir, b) = peer_bytes(&r, OpCode::Text, true, &payload);
            let mut delivered = 0;
            for (i, byte) in b.iter().enumerate() {
                let out = r.raw(dir, std::slice::from_ref(byte), i as u64);
                assert_eq!(closes_with(&out), None, "byte {i}: {out:?}");
                delivered += out
                    .iter()
                    .filter(|o| matches!(o, Output::Deliver(_)))
                    .count();
            }
            assert_eq!(delivered, 1);
        }
    }

    #[test]
    fn invalid_utf8_in_a_continuation_still_arriving_fails_too() {
        // A code point split across fragments, then a bad byte in the
        // second fragment before it is complete.
        let mut r = Rig::server();
        let (dir, first) = peer_bytes(&r, OpCode::Text, false, b"ok \xe2\x82");
        assert!(r.raw(dir, &first, 0).is_empty());
        let (_, second) = peer_bytes(&r, OpCode::Continuation, true, b"\xacfine\xff and more");
        let head = second.len() - b"\xacfine\xff and more".len();
        assert!(
            r.raw(dir, &second[..head + 5], 1).is_empty(),
            "euro sign completed"
        );
        let out = r.raw(dir, &second[head + 5..head + 6], 2);
        assert_eq!(closes_with(&out), Some(1007), "{out:?}");
    }

    #[test]
    fn lenient_sessions_only_watch() {
        let mut r = Rig::new(SessionConfig {
            lenient: true,
            ..SessionConfig::new(Role::Server)
        });
        let (dir, b) = peer_bytes(&r, OpCode::Text, true, b"ab\xffcd");
        assert!(r.raw(dir, &b[..b.len() - 1], 0).is_empty());
    }

    #[test]
    fn ping_is_answered_with_its_payload() {
        for mut r in [Rig::server(), Rig::client()] {
            let out = r.peer(OpCode::Ping, b"abc", 0);
            assert_eq!(
                out,
                vec![Output::Frame {
                    opcode: OpCode::Pong,
                    payload: b"abc".to_vec()
                }]
            );
        }
    }

    #[test]
    fn close_is_echoed_then_the_server_drops_tcp_and_the_client_waits() {
        let mut r = Rig::server();
        let out = r.peer(OpCode::Close, &1000u16.to_be_bytes(), 0);
        assert_eq!(out, vec![close_frame(Some(1000)), Output::CloseTcp]);
        let mut r = Rig::client();
        let out = r.peer(OpCode::Close, &4001u16.to_be_bytes(), 0);
        assert_eq!(out, vec![close_frame(Some(4001))]);
        assert_eq!(r.s.peer_close(), Some(4001));
        assert!(r.tick(500).is_empty());
        assert_eq!(r.tick(1000), vec![Output::CloseTcp]);
        // A Close with no code is answered with none (the peer sees 1005).
        let mut r = Rig::server();
        assert_eq!(r.peer(OpCode::Close, b"", 0)[0], close_frame(None));
    }

    #[test]
    fn an_invalid_close_code_is_answered_1002_in_both_roles() {
        // listen used to answer 1002 and emulate-device an empty Close.
        for mut r in [Rig::server(), Rig::client()] {
            let out = r.peer(OpCode::Close, &1005u16.to_be_bytes(), 0);
            assert_eq!(closes_with(&out), Some(1002), "{:?}", r.s.cfg.role);
            assert!(r.s.failed());
        }
    }

    #[test]
    fn violations_fail_with_their_code_after_annotation() {
        let mut r = Rig::server();
        // An unmasked client frame: 1002.
        let mut b = Vec::new();
        encode_frame(
            &mut b,
            OpCode::Text,
            b"hi",
            EncodeOptions::for_role(Role::Server),
        );
        let out = r.raw(Direction::C2S, &b, 0);
        assert_eq!(closes_with(&out), Some(1002));
        // Nothing more is processed, but the peer's Close ends it.
        assert!(r.peer(OpCode::Ping, b"x", 10).is_empty());
        assert_eq!(
            r.peer(OpCode::Close, &1002u16.to_be_bytes(), 20),
            vec![Output::CloseTcp]
        );
        // Invalid UTF-8: 1007. A masked server frame, in the client role: 1002.
        let mut r = Rig::server();
        assert_eq!(
            closes_with(&r.peer(OpCode::Text, &[0xff, 0xfe], 0)),
            Some(1007)
        );
        let mut r = Rig::client();
        let mut b = Vec::new();
        encode_frame(
            &mut b,
            OpCode::Text,
            b"hi",
            EncodeOptions::for_role(Role::Client),
        );
        assert_eq!(closes_with(&r.raw(Direction::S2C, &b, 0)), Some(1002));
    }

    #[test]
    fn lenient_sessions_show_but_keep_going() {
        let mut cfg = SessionConfig::new(Role::Server);
        cfg.lenient = true;
        let mut r = Rig::new(cfg);
        let out = r.peer(OpCode::Text, &[0xff], 0);
        assert!(closes_with(&out).is_none());
        assert!(matches!(out[0], Output::Deliver(_)));
    }

    #[test]
    fn messages_are_delivered_until_a_close_is_sent() {
        let mut r = Rig::server();
        assert!(matches!(
            r.peer(OpCode::Text, b"one", 0)[0],
            Output::Deliver(_)
        ));
        r.s.close(1001, "bye", r.t0);
        assert!(r.peer(OpCode::Text, b"two", 1).is_empty());
    }

    #[test]
    fn keepalive_idle_and_close_timers() {
        let mut cfg = SessionConfig::new(Role::Server);
        cfg.ping_interval = Some(Duration::from_secs(30));
        cfg.idle_timeout = Some(Duration::from_secs(90));
        let mut r = Rig::new(cfg);
        assert_eq!(r.s.next_deadline(), Some(r.t0 + Duration::from_secs(30)));
        assert!(r.tick(29_999).is_empty());
        let out = r.tick(30_000);
        assert_eq!(
            out,
            vec![Output::Frame {
                opcode: OpCode::Ping,
                payload: b"1".to_vec()
            }]
        );
        // Heard from at 60 s: idle deadline moves to 150 s.
        r.peer(OpCode::Pong, b"1", 60_000);
        assert!(closes_with(&r.tick(149_000)).is_none());
        assert_eq!(closes_with(&r.tick(150_000)), Some(1001));
        // No answer to our Close within 2 s: drop TCP.
        assert!(r.tick(151_000).is_empty());
        assert_eq!(r.tick(152_000), vec![Output::CloseTcp]);
        assert!(r.s.is_done());
        assert_eq!(r.s.next_deadline(), None);
    }

    #[test]
    fn firmware_quirks_no_pong_and_silent_close() {
        let mut cfg = SessionConfig::new(Role::Client);
        cfg.answer_pings = false;
        cfg.answer_close = false;
        let mut r = Rig::new(cfg);
        assert!(r.peer(OpCode::Ping, b"1", 0).is_empty());
        assert_eq!(
            r.peer(OpCode::Close, &1000u16.to_be_bytes(), 1),
            vec![Output::CloseTcp]
        );
    }
}
