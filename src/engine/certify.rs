//! The conformance suite `certify` runs against a device's WebSocket
//! client, as data and one state machine, without I/O.
//!
//! A [`Case`] is declarative: how the server answers the upgrade
//! ([`Handshake`]), what it does once the device said `hello`
//! ([`Action`]), and what a correct device does by when ([`Expect`]). A
//! [`Probe`] runs one case over the connections it needs: the driver
//! hands it the annotator's events for the device's bytes, the end of the
//! stream and the clock; it answers with bytes to write (whole, or one
//! byte per TCP segment), when to drop TCP, and in the end a [`Verdict`]
//! with its evidence. A case the device gave no chance to judge is
//! [`Verdict::NotObserved`], never a pass.
//!
//! Between cases the probe closes normally (1000) and the next case starts
//! on the device's next connection, so handshake cases see a fresh one.

use crate::annotate::{Event, EventKind};
use crate::kinetid::{self, msg::Msg};
use crate::note::Severity;
use crate::wire::frame::{close_payload, encode_frame, CloseCode, EncodeOptions, MaskKey, OpCode};
use crate::wire::handshake::{self, ServerVerdict};
use std::time::{Duration, Instant};

/// What a case is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// The upgrade (RFC 6455 4).
    Handshake,
    /// Frames from the server that a device must read (RFC 6455 5).
    Framing,
    /// Ping, pong, close (RFC 6455 5.5).
    Control,
    /// Server frames a device must refuse (RFC 6455 5.2, 7.1.7, 8.1).
    BadFrames,
    /// The Kinetid contract.
    Kinetid,
    /// Reconnects and what survives them.
    Resilience,
    /// TLS (`certify --tls`).
    Tls,
}

impl Family {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Handshake => "handshake",
            Family::Framing => "framing",
            Family::Control => "control",
            Family::BadFrames => "bad-frames",
            Family::Kinetid => "kinetid",
            Family::Resilience => "resilience",
            Family::Tls => "tls",
        }
    }
}

/// How the server answers the device's upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// The correct 101.
    Normal,
    /// The correct 101, one byte per TCP segment.
    OneByteSegments,
    /// The 101 and a ping in one TCP segment (the device must not lose a
    /// frame that shares a segment with the head).
    WithPing,
    /// A 101 whose `Sec-WebSocket-Accept` is another key's.
    WrongAccept,
    /// A 101 whose accept is the right one with its last character
    /// changed (a client that compares a prefix accepts it).
    AcceptLastCharWrong,
    /// A 101 without `Upgrade: websocket`.
    NoUpgrade,
    /// A 101 without `Connection: Upgrade`.
    NoConnection,
    /// A 101 that picks a subprotocol the device did not offer.
    UnofferedProtocol,
    /// 503 Service Unavailable.
    Unavailable,
    /// Drop TCP on the upgrade request, unanswered, on this many
    /// connections in a row; then the correct 101.
    DropUnanswered(u8),
    /// The correct 101 with its header names and tokens in other case,
    /// extra headers and optional whitespace (all valid HTTP).
    OtherCase,
}

/// The certificate the server shows (`certify --tls`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCase {
    /// Any: the right one over TLS, none in a plain run.
    Any,
    /// The right one; the session itself is judged (version, SNI).
    Session,
    /// One for another name, from the trusted CA.
    WrongName,
    /// One for the right names that no trusted CA signed.
    Untrusted,
}

/// What the server does once the device said hello (and got welcome).
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Nothing.
    Nothing,
    /// A switch for the device (`on`: `None` toggles), written as `shape`.
    Switch(Option<bool>, Shape),
    /// A switch for a device the plug does not have.
    SwitchUnknown,
    /// A ping with this payload.
    Ping(Vec<u8>),
    /// An unsolicited pong, then a switch.
    PongThenSwitch,
    /// Messages the contract says a device survives, then a switch.
    JunkThenSwitch,
    /// A Close with a code and a reason.
    Close(u16, &'static str),
    /// A bad frame (a toggle switch in it, which a device must not act on).
    Bad(BadFrame),
    /// Drop TCP without a Close.
    Drop,
    /// Leave the next report unacknowledged, then drop TCP.
    DropUnacked,
    /// A toggle for the first passive plug the hello names (over PLC).
    SwitchPassive,
    /// Nothing at all from the server: no ack, no pong, no ping.
    Silence,
}

/// How a switch is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// One frame, one write.
    Plain,
    /// One frame, one byte per TCP segment.
    OneByteSegments,
    /// Padded past 125 bytes: a 16-bit length.
    Len16,
    /// Three fragments.
    Fragments,
    /// Three fragments with a ping between the first two.
    PingBetweenFragments,
    /// Fragments with empty ones between.
    EmptyFragments,
    /// Padded past the protocol's 16 KiB and 64 KiB: a 64-bit length.
    Oversized,
}

/// A server frame a device must refuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BadFrame {
    /// Masked (servers must not mask, RFC 6455 5.1).
    Masked,
    /// RSV1 with no extension agreed (5.2).
    Rsv1,
    /// A reserved opcode (5.2).
    ReservedOpcode,
    /// Text that is not UTF-8 (8.1).
    InvalidUtf8,
    /// A Close with code 999 (7.4.1).
    CloseCode999,
}

/// What a correct device does.
#[derive(Debug, Clone, PartialEq)]
pub enum Expect {
    /// `hello` first, with a valid id.
    Hello,
    /// A pong carrying exactly this payload.
    Pong(Vec<u8>),
    /// A `state` answering the switch (its `re`), and when `on` is
    /// known, the relay really switched: the `state` and the next report
    /// say so.
    State,
    /// An `error` with this code answering the switch.
    Error(&'static str),
    /// Its Close, answering ours, before TCP ends.
    CloseAnswered,
    /// The connection failed: a Close with one of these codes, or TCP
    /// dropped without a Close (RFC 6455 7.1.7 allows it); another code, or
    /// the frame's command obeyed, fails.
    Fails(&'static [u16]),
    /// Either a `state` (it read the message whole) or a Close 1009;
    /// never a reset without a Close, never silence.
    StateOrTooBig,
    /// The upgrade refused: no frame sent, TCP closed.
    Refused,
    /// Back after a drop, not before ~1 s nor later than 30 s.
    Reconnects,
    /// After a drop, the unacknowledged report again, same seq and ts.
    Resent,
    /// A `state` from the passive plug answering the switch.
    PassiveState,
    /// The server's Close answered, and no reconnect before the back-off
    /// (1 s): a replaced plug that comes straight back replaces the other.
    BacksOffAfterClose,
    /// The waits between reconnects after unanswered upgrades double from
    /// about 1 s (with jitter), up to 60 s.
    BackoffDoubles,
    /// The device gives up on a silent server within 90 s.
    NoticesSilence,
    /// TLS 1.2 or later, with SNI when the device connects by name.
    TlsSession,
    /// The TLS handshake refused by the device (no request sent).
    TlsRefused,
}

/// One case of the suite.
#[derive(Debug, Clone)]
pub struct Case {
    /// Stable id (`family-what`).
    pub id: &'static str,
    /// One line.
    pub title: &'static str,
    /// The rule and where it comes from.
    pub rule: &'static str,
    /// Its family.
    pub family: Family,
    /// The server's answer to the upgrade.
    pub handshake: Handshake,
    /// What the server does after hello.
    pub action: Action,
    /// What passes.
    pub expect: Expect,
    /// In the `--long` set only (it needs the contract's long timers).
    pub long: bool,
    /// The certificate shown; cases other than `Any` run only with `--tls`.
    pub tls: TlsCase,
}

/// A case's outcome.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// The device did what the rule asks.
    Pass(String),
    /// It did not; the evidence.
    Fail(String),
    /// The device gave no chance to judge (it did not connect, or not in time).
    NotObserved(String),
}

impl Verdict {
    /// `pass`, `fail` or `not-observed`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Verdict::Pass(_) => "pass",
            Verdict::Fail(_) => "fail",
            Verdict::NotObserved(_) => "not-observed",
        }
    }
    /// The evidence.
    pub fn evidence(&self) -> &str {
        match self {
            Verdict::Pass(s) | Verdict::Fail(s) | Verdict::NotObserved(s) => s,
        }
    }
}

macro_rules! case {
    ($id:literal, $fam:ident, $title:literal, $rule:literal, $hs:expr, $act:expr, $exp:expr) => {
        Case {
            id: $id,
            title: $title,
            rule: $rule,
            family: Family::$fam,
            handshake: $hs,
            action: $act,
            expect: $exp,
            long: false,
            tls: TlsCase::Any,
        }
    };
}

/// The default suite, in the order it runs. A device backs off after
/// each refused upgrade until a welcome resets it (as the contract says),
/// so every case that refuses the upgrade is followed by one that
/// welcomes: the suite never waits out a growing back-off.
pub fn suite() -> Vec<Case> {
    use Action as A;
    use Expect as E;
    use Handshake as H;
    vec![
        case!(
            "kinetid-hello",
            Kinetid,
            "hello first, within 10 s, with a valid device id",
            "kinetid v1: Connection, Devices",
            H::Normal,
            A::Nothing,
            E::Hello
        ),
        Case {
            tls: TlsCase::Session,
            ..case!(
                "tls-session",
                Tls,
                "TLS 1.2 or later, and SNI naming the host when the device connects by name",
                "RFC 8996 (TLS 1.0 and 1.1 deprecated), RFC 6066 3 (SNI; none for an IP address)",
                H::Normal,
                A::Nothing,
                E::TlsSession
            )
        },
        Case {
            tls: TlsCase::WrongName,
            ..case!(
                "tls-wrong-name",
                Tls,
                "a certificate for another name, from the trusted CA, is refused",
                "RFC 6125 6 (the name is checked); RFC 9525; the common IoT hole: any certificate accepted",
                H::Normal,
                A::Nothing,
                E::TlsRefused
            )
        },
        case!(
            "handshake-101-one-byte-segments",
            Handshake,
            "the 101 arriving one byte per TCP segment",
            "RFC 6455 4.1 (a head may arrive in any segmentation)",
            H::OneByteSegments,
            A::Nothing,
            E::Hello
        ),
        case!(
            "handshake-101-shares-a-segment",
            Handshake,
            "a ping in the same TCP segment as the 101 is answered",
            "RFC 6455 4.1, 5.5.2; esp-protocols issue 396 (first frame lost)",
            H::WithPing,
            A::Nothing,
            E::Pong(b"certify-first-frame".to_vec())
        ),
        case!(
            "handshake-wrong-accept",
            Handshake,
            "a wrong Sec-WebSocket-Accept fails the connection",
            "RFC 6455 4.1 (client step 4)",
            H::WrongAccept,
            A::Nothing,
            E::Refused
        ),
        case!(
            "kinetid-switch-off",
            Kinetid,
            "switch off: state with re, relay off in state and next report",
            "kinetid v1: Rules (switch answered within 10 s)",
            H::Normal,
            A::Switch(Some(false), Shape::Plain),
            E::State
        ),
        case!(
            "handshake-accept-prefix",
            Handshake,
            "an accept right but for its last character fails the connection",
            "RFC 6455 4.1; a Zephyr report (accept compared as a prefix)",
            H::AcceptLastCharWrong,
            A::Nothing,
            E::Refused
        ),
        case!(
            "kinetid-switch-on",
            Kinetid,
            "switch on: state with re, relay on",
            "kinetid v1: Rules",
            H::Normal,
            A::Switch(Some(true), Shape::Plain),
            E::State
        ),
        case!(
            "handshake-no-upgrade",
            Handshake,
            "a 101 without Upgrade: websocket fails the connection",
            "RFC 6455 4.1 (client step 2)",
            H::NoUpgrade,
            A::Nothing,
            E::Refused
        ),
        case!(
            "kinetid-toggle",
            Kinetid,
            "toggle: state with re",
            "kinetid v1: Messages (toggle)",
            H::Normal,
            A::Switch(None, Shape::Plain),
            E::State
        ),
        case!(
            "handshake-no-connection",
            Handshake,
            "a 101 without Connection: Upgrade fails the connection",
            "RFC 6455 4.1 (client step 3)",
            H::NoConnection,
            A::Nothing,
            E::Refused
        ),
        case!(
            "kinetid-not-found",
            Kinetid,
            "a switch for an unknown device gets error not_found",
            "kinetid v1: Rules",
            H::Normal,
            A::SwitchUnknown,
            E::Error("not_found")
        ),
        case!(
            "handshake-unoffered-subprotocol",
            Handshake,
            "a subprotocol the device did not offer fails the connection",
            "RFC 6455 4.1 (client step 6)",
            H::UnofferedProtocol,
            A::Nothing,
            E::Refused
        ),
        case!(
            "kinetid-junk-survived",
            Kinetid,
            "bad_request, an unknown type and non-JSON text are survived",
            "kinetid v1: Rules (the connection stays open)",
            H::Normal,
            A::JunkThenSwitch,
            E::State
        ),
        case!(
            "handshake-503",
            Handshake,
            "a 503 is a refusal: no frames, TCP closed",
            "RFC 6455 4.1 (status other than 101)",
            H::Unavailable,
            A::Nothing,
            E::Refused
        ),
        case!(
            "handshake-other-case",
            Handshake,
            "header names and tokens in other case, extra headers, spaces: still a 101",
            "RFC 6455 4.1, 4.2.2; RFC 9110 5.1 (names case-insensitive), 5.6.3 (optional whitespace), 7.8 (Upgrade tokens case-insensitive)",
            H::OtherCase,
            A::Switch(None, Shape::Plain),
            E::State
        ),
        case!(
            "framing-one-byte-segments",
            Framing,
            "a command arriving one byte per TCP segment",
            "RFC 6455 5.2 (frames in any segmentation)",
            H::Normal,
            A::Switch(None, Shape::OneByteSegments),
            E::State
        ),
        Case {
            tls: TlsCase::Untrusted,
            ..case!(
                "tls-untrusted",
                Tls,
                "a self-signed certificate for the right name (no trusted CA) is refused",
                "RFC 5280 6 (path validation to a trust anchor); the common IoT hole: any certificate accepted",
                H::Normal,
                A::Nothing,
                E::TlsRefused
            )
        },
        case!(
            "framing-16-bit-length",
            Framing,
            "a command with a 16-bit length",
            "RFC 6455 5.2",
            H::Normal,
            A::Switch(None, Shape::Len16),
            E::State
        ),
        case!(
            "framing-three-fragments",
            Framing,
            "a command in three fragments",
            "RFC 6455 5.4",
            H::Normal,
            A::Switch(None, Shape::Fragments),
            E::State
        ),
        case!(
            "framing-ping-between-fragments",
            Framing,
            "a ping between fragments of a command",
            "RFC 6455 5.4 (control frames may be injected)",
            H::Normal,
            A::Switch(None, Shape::PingBetweenFragments),
            E::State
        ),
        case!(
            "framing-empty-fragments",
            Framing,
            "empty fragments in a command",
            "RFC 6455 5.4",
            H::Normal,
            A::Switch(None, Shape::EmptyFragments),
            E::State
        ),
        case!(
            "framing-over-the-limit",
            Framing,
            "a 70,000-byte message (64-bit length, over 16 KiB): close 1009 or read whole",
            "kinetid v1: Connection (16 KiB limit); RFC 6455 7.4.1; arduinoWebSockets above 16 KB",
            H::Normal,
            A::Switch(None, Shape::Oversized),
            E::StateOrTooBig
        ),
        case!(
            "control-ping-payload",
            Control,
            "a ping's payload echoed in the pong, promptly",
            "RFC 6455 5.5.2, 5.5.3",
            H::Normal,
            A::Ping(b"kinetid-certify-1f2e".to_vec()),
            E::Pong(b"kinetid-certify-1f2e".to_vec())
        ),
        case!(
            "control-ping-125",
            Control,
            "a 125-byte ping echoed",
            "RFC 6455 5.5 (control payloads up to 125)",
            H::Normal,
            A::Ping((0..125u8).map(|i| b'a' + i % 26).collect()),
            E::Pong((0..125u8).map(|i| b'a' + i % 26).collect())
        ),
        case!(
            "control-unsolicited-pong",
            Control,
            "an unsolicited pong is ignored",
            "RFC 6455 5.5.3",
            H::Normal,
            A::PongThenSwitch,
            E::State
        ),
        case!(
            "control-close-answered",
            Control,
            "a server Close is answered, and the server closes TCP first",
            "RFC 6455 5.5.1, 7.1.1",
            H::Normal,
            A::Close(1000, "certify: closing"),
            E::CloseAnswered
        ),
        case!(
            "bad-masked-frame",
            BadFrames,
            "a masked server frame fails the connection (1002)",
            "RFC 6455 5.1",
            H::Normal,
            A::Bad(BadFrame::Masked),
            E::Fails(&[1002])
        ),
        case!(
            "bad-rsv1",
            BadFrames,
            "RSV1 with no extension fails the connection (1002)",
            "RFC 6455 5.2",
            H::Normal,
            A::Bad(BadFrame::Rsv1),
            E::Fails(&[1002])
        ),
        case!(
            "bad-reserved-opcode",
            BadFrames,
            "a reserved opcode fails the connection (1002)",
            "RFC 6455 5.2",
            H::Normal,
            A::Bad(BadFrame::ReservedOpcode),
            E::Fails(&[1002])
        ),
        case!(
            "bad-invalid-utf8",
            BadFrames,
            "text that is not UTF-8 fails the connection (1007, or 1002)",
            "RFC 6455 8.1",
            H::Normal,
            A::Bad(BadFrame::InvalidUtf8),
            E::Fails(&[1007, 1002])
        ),
        case!(
            "bad-close-code",
            BadFrames,
            "a Close with code 999 is answered with 1002",
            "RFC 6455 7.4.1, 7.1.7",
            H::Normal,
            A::Bad(BadFrame::CloseCode999),
            E::Fails(&[1002])
        ),
        case!(
            "resilience-reconnect",
            Resilience,
            "after TCP dropped without a Close, back after a back-off (1 s first)",
            "kinetid v1: Connection (back-off from 1 s, doubling)",
            H::Normal,
            A::Drop,
            E::Reconnects
        ),
        case!(
            "kinetid-passive-switch",
            Kinetid,
            "a switch for a passive plug is forwarded over PLC and answered by its state",
            "kinetid v1: Rules (the active plug forwards a switch for one of its passives)",
            H::Normal,
            A::SwitchPassive,
            E::PassiveState
        ),
        case!(
            "kinetid-replaced",
            Kinetid,
            "a 4001 replaced close is answered, and not followed by a reconnect before the back-off",
            "kinetid v1: Connection (4001 replaced; back-off from 1 s); RFC 6455 5.5.1",
            H::Normal,
            A::Close(4001, "replaced"),
            E::BacksOffAfterClose
        ),
        case!(
            "resilience-backoff-doubles",
            Resilience,
            "three upgrades left unanswered: the waits between tries double from about 1 s",
            "kinetid v1: Connection (exponential back-off from 1 s doubling to 60 s, with jitter)",
            H::DropUnanswered(3),
            A::Nothing,
            E::BackoffDoubles
        ),
        case!(
            "resilience-resend",
            Resilience,
            "an unacknowledged report resent after a reconnect, same seq and ts",
            "kinetid v1: Rules (unacknowledged reports resent)",
            H::Normal,
            A::DropUnacked,
            E::Resent
        ),
        Case {
            long: true,
            ..case!(
                "resilience-server-silent",
                Resilience,
                "the server falls silent (no ack, no pong, no ping): the device gives up within 90 s",
                "kinetid v1: Connection (a device that hears nothing for 90 s drops the link and reconnects)",
                H::Normal,
                A::Silence,
                E::NoticesSilence
            )
        },
    ]
}

/// A 101 rewritten as another server might write it: names in other case,
/// `Upgrade` and `Connection` tokens in other case, optional whitespace
/// around values, and headers a device does not need. The accept value
/// and the subprotocol are kept byte for byte (they compare exactly).
fn other_case(text: &str) -> Vec<u8> {
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

/// The report period (s) certify's welcome asks for, at most.
const QUICK_PERIOD_S: u64 = 2;

/// The switch id the probe uses, and the device id no plug has.
const SWITCH_ID: u64 = 7001;
const NOBODY: &str = "KN-000000C0FFEE";

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
            if e.dir != crate::wire::frame::Direction::C2S || self.phase == Phase::Done {
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
        let ok = handshake::server_response(v);
        let text = String::from_utf8_lossy(&ok).into_owned();
        let accept = v
            .accept
            .as_ref()
            .map(|a| a.accept.clone())
            .unwrap_or_default();
        let resp = match self.case.handshake {
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
                let t = String::from_utf8_lossy(&drop_header(&text, "sec-websocket-protocol"))
                    .into_owned();
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
        };
        out.push(resp);
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

    fn on_frame(
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
                        let v = if &f.payload == want {
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
            OpCode::Close => {
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
                            Some(c) if codes.contains(&c) => Verdict::Pass(format!("the device failed the connection with {c} (its Close at byte {at})")),
                            Some(c) => Verdict::Fail(format!("the device closed with {c} (at byte {at}); the rule calls for {}", join(codes))),
                            None => Verdict::Fail(format!("the device closed with no code (at byte {at}); the rule calls for {}", join(codes))),
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
            _ => {}
        }
    }

    fn on_message(
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
            (Some(Msg::Hello(h)), Phase::Hello) => {
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
            (_, Phase::Hello) => {
                let v = Verdict::Fail(format!(
                    "the first message (at byte {at}) is a {:?}, not hello",
                    k.t
                ));
                self.decide(v, now, out);
            }
            (Some(Msg::Report(r)), _) => {
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
                if let (Some(id), None) = (k.id, self.silent_since) {
                    out.push(Act::Write(text(&kinetid::ack(id))));
                }
                let same_plug = r.dev == self.unacked_dev;
                if let (Expect::Resent, Some(want), true) =
                    (&self.case.expect, self.unacked, same_plug)
                {
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
                        Verdict::Pass(format!("state answered the switch and the next report (seq {}) says the relay is {}", key.0, if on { "on" } else { "off" }))
                    } else {
                        Verdict::Fail(format!("the state said the relay is {} but the next report (at byte {at}) says {:?}", if on { "on" } else { "off" }, r.on))
                    };
                    self.want_on = None;
                    self.decide(v, now, out);
                }
            }
            (Some(Msg::State(s)), _) => {
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
                let mut b = text(&kinetid::error(
                    None,
                    None,
                    "bad_request",
                    "certify: survive this",
                ));
                b.extend(text(r#"{"t":"certify-unknown-type","id":1}"#));
                b.extend(text("certify: not JSON"));
                out.push(Act::Write(b));
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
                let sw = kinetid::switch(SWITCH_ID, &dev, None);
                let bytes = match b {
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
                };
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

/// The TLS session case: TLS 1.2 or later (rustls offers nothing older),
/// and SNI naming the host the device connects to, unless that is an IP
/// address (RFC 6066 3 forbids an address in SNI).
fn tls_session_verdict(tls: Option<&(String, Option<String>)>, host: Option<&str>) -> Verdict {
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
fn backoff_verdict(tries: &[Instant]) -> Verdict {
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

fn join(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A server frame.
fn frame(op: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(payload.len() + 10);
    encode_frame(&mut v, op, payload, EncodeOptions::server());
    v
}

fn text(s: &str) -> Vec<u8> {
    frame(OpCode::Text, s.as_bytes())
}

/// The head without the header named `name` (lower case).
fn drop_header(head: &str, name: &str) -> Vec<u8> {
    head.split_inclusive("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with(&format!("{name}:")))
        .collect::<String>()
        .into_bytes()
}

/// The switch as `shape` writes it.
fn switch_acts(dev: &str, on: Option<bool>, shape: Shape) -> Vec<Act> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::annotate::{Annotator, Config};
    use crate::wire::frame::Direction;

    /// A scripted well-behaved device: feeds its bytes to an annotator and
    /// the probe, and answers what the probe writes as a correct plug does.
    struct Rig {
        ann: Annotator,
        probe: Probe,
        t0: Instant,
    }

    const DEV: &str = "KN-A4CF12F0E1B2";

    impl Rig {
        fn new(id: &str) -> Rig {
            let c = suite().into_iter().find(|c| c.id == id).unwrap();
            let t0 = Instant::now();
            Rig {
                ann: Annotator::new(1, Config::default()),
                probe: Probe::new(c, t0),
                t0,
            }
        }
        fn device(&mut self, b: &[u8], ms: u64) -> Vec<Act> {
            let mut ev = Vec::new();
            self.ann.feed(Direction::C2S, b, None, &mut ev);
            let acts = self
                .probe
                .on_events(&ev, self.t0 + Duration::from_millis(ms), 1.0e9);
            for a in &acts {
                if let Act::Write(b) | Act::WriteBytewise(b) = a {
                    let mut e = Vec::new();
                    self.ann.feed(Direction::S2C, b, None, &mut e);
                }
            }
            acts
        }
        fn connect(&mut self) -> Vec<Act> {
            let req = handshake::client_request(
                "127.0.0.1:1",
                "/ws",
                "dGhlIHNhbXBsZSBub25jZQ==",
                &["kinetid.v1"],
            );
            self.device(&req, 0)
        }
        fn hello(&mut self) -> Vec<Act> {
            let h = format!(
                r#"{{"t":"hello","id":1,"dev":"{DEV}","fw":"t","role":"active","period_s":1,"passives":[]}}"#
            );
            self.device(&client(OpCode::Text, h.as_bytes()), 10)
        }
    }

    fn client(op: OpCode, p: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        encode_frame(&mut v, op, p, EncodeOptions::client());
        v
    }

    fn written(acts: &[Act]) -> Vec<u8> {
        acts.iter()
            .flat_map(|a| match a {
                Act::Write(b) | Act::WriteBytewise(b) => b.clone(),
                Act::CloseTcp => Vec::new(),
            })
            .collect()
    }

    #[test]
    fn every_case_has_a_unique_id_and_a_rule() {
        let s = suite();
        let mut ids: Vec<_> = s.iter().map(|c| c.id).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), s.len());
        assert!(s.iter().all(|c| !c.rule.is_empty()
            && c.id
                .starts_with(c.family.as_str().split('-').next().unwrap())));
    }

    #[test]
    fn backoff_must_double_from_about_a_second() {
        let t0 = Instant::now();
        let at = |s: &[f64]| -> Vec<Instant> {
            s.iter().map(|&x| t0 + Duration::from_secs_f64(x)).collect()
        };
        assert!(matches!(
            backoff_verdict(&at(&[0.0, 2.2, 7.9, 16.4])),
            Verdict::Pass(_)
        ));
        // Constant, none at all, and starting far too late.
        for tries in [
            &[0.0, 1.2, 2.4, 3.6][..],
            &[0.0, 0.1, 0.2, 0.3],
            &[0.0, 20.0, 40.0, 80.0],
        ] {
            assert!(
                matches!(backoff_verdict(&at(tries)), Verdict::Fail(_)),
                "{tries:?}"
            );
        }
        // At the 60 s cap the waits stop doubling.
        assert!(matches!(
            backoff_verdict(&at(&[0.0, 2.0, 6.0, 14.0, 30.0, 62.0, 122.0, 182.0])),
            Verdict::Pass(_)
        ));
    }

    #[test]
    fn sni_must_name_the_host_unless_it_is_an_address() {
        let s = |sni: Option<&str>| Some(("TLS 1.3".to_string(), sni.map(str::to_string)));
        let pass = |v: Verdict| matches!(v, Verdict::Pass(_));
        assert!(pass(tls_session_verdict(
            s(Some("localhost")).as_ref(),
            Some("localhost:8443")
        )));
        assert!(pass(tls_session_verdict(
            s(None).as_ref(),
            Some("127.0.0.1:8443")
        )));
        assert!(pass(tls_session_verdict(
            s(None).as_ref(),
            Some("[::1]:8443")
        )));
        assert!(!pass(tls_session_verdict(
            s(None).as_ref(),
            Some("plug.example:8443")
        )));
        assert!(!pass(tls_session_verdict(
            s(Some("other.example")).as_ref(),
            Some("plug.example")
        )));
        assert!(matches!(
            tls_session_verdict(None, Some("localhost")),
            Verdict::NotObserved(_)
        ));
    }

    #[test]
    fn a_101_in_other_case_is_still_one_a_client_accepts() {
        let mut r = Rig::new("handshake-other-case");
        let head = written(&r.connect());
        let text = String::from_utf8_lossy(&head);
        assert!(text.contains("UPGRADE:   WebSocket") && text.contains("X-Certify-Case"));
        let handshake::HeadParse::Complete(h) = handshake::parse_head(&head, Default::default())
        else {
            panic!("{text}")
        };
        let v = handshake::check_response_with(
            &h,
            Some("dGhlIHNhbXBsZSBub25jZQ=="),
            &["kinetid.v1"],
            &[],
        );
        assert!(
            v.status == 101 && v.error.is_none(),
            "{text}: {:?}",
            v.error
        );
    }

    #[test]
    fn hello_passes_and_the_connection_is_closed_normally() {
        let mut r = Rig::new("kinetid-hello");
        let a = r.connect();
        assert!(String::from_utf8_lossy(&written(&a)).starts_with("HTTP/1.1 101"));
        let a = r.hello();
        assert!(
            matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
            "{:?}",
            r.probe.verdict()
        );
        // welcome, then our Close.
        let w = written(&a);
        assert!(String::from_utf8_lossy(&w).contains(r#""t":"welcome""#));
        assert_eq!(w[w.len() - 2 - 2 - 18..][0], 0x88);
        r.device(&client(OpCode::Close, &1000u16.to_be_bytes()), 20);
        assert!(r.probe.is_done());
    }

    #[test]
    fn a_device_that_accepts_a_wrong_accept_fails_and_one_that_drops_passes() {
        let mut r = Rig::new("handshake-wrong-accept");
        let a = r.connect();
        let head = String::from_utf8_lossy(&written(&a)).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 101")
                && !head.contains(&handshake::accept_key("dGhlIHNhbXBsZSBub25jZQ=="))
        );
        r.hello();
        assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(_))));
        let mut r = Rig::new("handshake-wrong-accept");
        r.connect();
        r.probe.on_eof(r.t0 + Duration::from_millis(5));
        assert!(
            matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
            "{:?}",
            r.probe.verdict()
        );
    }

    #[test]
    fn a_pong_must_echo_and_silence_fails_on_time() {
        let mut r = Rig::new("control-ping-payload");
        r.connect();
        let a = r.hello();
        assert!(written(&a)
            .windows(20)
            .any(|w| w == b"kinetid-certify-1f2e"));
        r.device(&client(OpCode::Pong, b""), 30);
        assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("carries")));
        let mut r = Rig::new("control-ping-payload");
        r.connect();
        r.hello();
        r.probe.on_tick(r.t0 + Duration::from_secs(11));
        assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("no pong")));
    }

    #[test]
    fn a_switch_is_passed_by_its_state_and_the_next_report() {
        let mut r = Rig::new("kinetid-switch-off");
        r.connect();
        let a = r.hello();
        assert!(String::from_utf8_lossy(&written(&a)).contains(r#""on":false"#));
        let st = format!(
            r#"{{"t":"state","re":{SWITCH_ID},"dev":"{DEV}","on":false,"was_on":true,"src":"backend","ts":1}}"#
        );
        r.device(&client(OpCode::Text, st.as_bytes()), 40);
        assert!(r.probe.verdict().is_none(), "waits for the report");
        let rep = format!(
            r#"{{"t":"report","id":3,"dev":"{DEV}","ts":2,"seq":5,"on":false,"power_w":0.0,"energy_wh":1.0}}"#
        );
        r.device(&client(OpCode::Text, rep.as_bytes()), 900);
        assert!(
            matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
            "{:?}",
            r.probe.verdict()
        );
    }

    #[test]
    fn a_bad_frame_must_fail_the_connection_with_its_code() {
        let mut r = Rig::new("bad-masked-frame");
        r.connect();
        r.hello();
        r.device(&client(OpCode::Close, &1002u16.to_be_bytes()), 30);
        assert!(
            matches!(r.probe.verdict(), Some(Verdict::Pass(_))),
            "{:?}",
            r.probe.verdict()
        );
        // Invalid UTF-8: 1007 or 1002; a normal 1000 is no failure.
        let mut r = Rig::new("bad-invalid-utf8");
        r.connect();
        r.hello();
        r.device(&client(OpCode::Close, &1000u16.to_be_bytes()), 30);
        assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("1007")));
        // Dropping TCP without a Close fails the connection too (7.1.7).
        let mut r = Rig::new("bad-rsv1");
        r.connect();
        r.hello();
        r.probe.on_eof(r.t0 + Duration::from_millis(40));
        assert!(matches!(r.probe.verdict(), Some(Verdict::Pass(e)) if e.contains("7.1.7")));
    }

    #[test]
    fn a_reconnect_is_timed_from_the_drop() {
        let mut r = Rig::new("resilience-reconnect");
        r.connect();
        let a = r.hello();
        assert!(a.contains(&Act::CloseTcp));
        assert!(r.probe.awaits_connection());
        r.probe.on_reconnect(r.t0 + Duration::from_millis(60));
        assert!(matches!(r.probe.verdict(), Some(Verdict::Fail(e)) if e.contains("no back-off")));
    }
}
