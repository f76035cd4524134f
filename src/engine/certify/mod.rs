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

/// The report period (s) certify's welcome asks for, at most.
const QUICK_PERIOD_S: u64 = 2;

/// The switch id the probe uses, and the device id no plug has.
const SWITCH_ID: u64 = 7001;
const NOBODY: &str = "KN-000000C0FFEE";

mod cases;
mod judge;
mod probe;
#[cfg(test)]
mod tests;

pub use cases::suite;
use judge::*;
pub use probe::{Act, Probe};
