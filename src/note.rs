//! Notes: what the annotator says about a byte range that breaks a rule.
//!
//! A note never stops decoding. It carries a severity, a stable machine code
//! (safe to grep for in CI logs), the RFC 6455 section the rule comes from and a
//! sentence a firmware developer can act on. What to do about it (close with
//! 1002? keep going?) is the caller's policy.

use std::fmt;

/// How bad a note is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Worth knowing; not a violation (hints about a likely firmware bug).
    Info,
    /// Legal but suspicious or wasteful.
    Warning,
    /// Breaks a MUST of RFC 6455 or of the Kinetid contract.
    Error,
}

impl Severity {
    /// Lower-case name used in JSON and text output.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finding attached to a frame, a message, a handshake or a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// How bad it is.
    pub severity: Severity,
    /// Stable identifier, kebab-case (for example `client-frame-unmasked`).
    pub code: Code,
    /// Where the rule comes from, for example `RFC 6455 5.2` or `kinetid v1`.
    pub rfc: &'static str,
    /// A sentence saying what is wrong and, where we can tell, why.
    pub message: String,
}

impl Note {
    /// An error-severity note.
    pub fn error(code: Code, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Error,
            code,
            rfc,
            message: message.into(),
        }
    }
    /// A warning-severity note.
    pub fn warning(code: Code, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Warning,
            code,
            rfc,
            message: message.into(),
        }
    }
    /// An info-severity note (hints).
    pub fn info(code: Code, rfc: &'static str, message: impl Into<String>) -> Self {
        Note {
            severity: Severity::Info,
            code,
            rfc,
            message: message.into(),
        }
    }
}

/// The worst severity in a list of notes, if any.
pub fn worst(notes: &[Note]) -> Option<Severity> {
    notes.iter().map(|n| n.severity).max()
}

/// Every note's stable code. The string form (`as_str`) is what JSON, text
/// and CI logs show; the enum lets the compiler check every mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Code {
    /// `client-frame-unmasked`
    ClientFrameUnmasked,
    /// `close-code-invalid`
    CloseCodeInvalid,
    /// `close-not-answered`
    CloseNotAnswered,
    /// `close-payload-one-byte`
    ClosePayloadOneByte,
    /// `close-reason-invalid-utf8`
    CloseReasonInvalidUtf8,
    /// `closed-without-close-frame`
    ClosedWithoutCloseFrame,
    /// `continuation-without-start`
    ContinuationWithoutStart,
    /// `control-fragmented`
    ControlFragmented,
    /// `control-too-long`
    ControlTooLong,
    /// `data-after-close`
    DataAfterClose,
    /// `data-frame-in-fragmented-message`
    DataFrameInFragmentedMessage,
    /// `capture-gap`
    CaptureGap,
    /// `capture-start-missed`
    CaptureStartMissed,
    /// `capture-overlap-differs`
    CaptureOverlapDiffers,
    /// `device-id-duplicate`
    DeviceIdDuplicate,
    /// `device-registry-full`
    DeviceRegistryFull,
    /// `device-replaced`
    DeviceReplaced,
    /// `frame-timeout`
    FrameTimeout,
    /// `half-open-timeout`
    HalfOpenTimeout,
    /// `proxy-fault`
    ProxyFault,
    /// `proxy-injected`
    ProxyInjected,
    /// `tls-session`
    TlsSession,
    /// `tls-failed`
    TlsFailed,
    /// `proxy-host-rewritten`
    ProxyHostRewritten,
    /// `hint-cont-after-fin`
    HintContAfterFin,
    /// `hint-fin-every-fragment`
    HintFinEveryFragment,
    /// `hint-len127-4byte`
    HintLen1274byte,
    /// `hint-unmasked-control`
    HintUnmaskedControl,
    /// `kinetid-bad-device-id`
    KinetidBadDeviceId,
    /// `kinetid-bad-id`
    KinetidBadId,
    /// `kinetid-missing-field`
    KinetidMissingField,
    /// `kinetid-no-id-or-re`
    KinetidNoIdOrRe,
    /// `kinetid-no-type`
    KinetidNoType,
    /// `kinetid-not-json`
    KinetidNotJson,
    /// `kinetid-not-object`
    KinetidNotObject,
    /// `kinetid-reply-without-re`
    KinetidReplyWithoutRe,
    /// `kinetid-unknown-type`
    KinetidUnknownType,
    /// `length-non-minimal`
    LengthNonMinimal,
    /// `length-top-bit`
    LengthTopBit,
    /// `mask-key-repeated`
    MaskKeyRepeated,
    /// `mask-key-zero`
    MaskKeyZero,
    /// `memory-budget-exceeded`
    MemoryBudgetExceeded,
    /// `message-too-big`
    MessageTooBig,
    /// `message-unfinished`
    MessageUnfinished,
    /// `payload-too-big`
    PayloadTooBig,
    /// `ping-not-answered`
    PingNotAnswered,
    /// `reserved-opcode`
    ReservedOpcode,
    /// `rsv-without-extension`
    RsvWithoutExtension,
    /// `server-frame-masked`
    ServerFrameMasked,
    /// `text-invalid-utf8`
    TextInvalidUtf8,
    /// `truncated-frame`
    TruncatedFrame,
    /// `truncated-handshake`
    TruncatedHandshake,
    /// `write-timeout`
    WriteTimeout,
    /// `hint-length-byte-order`
    HintLengthByteOrder,
    /// `hint-length-not-a-length`
    HintLengthNotALength,
    /// `hint-mask-not-applied`
    HintMaskNotApplied,
    /// `hint-mask-restart`
    HintMaskRestart,
    /// `hint-mask-key-mismatch`
    HintMaskKeyMismatch,
    /// `hint-c-string`
    HintCString,
    /// `hint-latin1`
    HintLatin1,
    /// `hint-json-concat`
    HintJsonConcat,
    /// `hint-accept-hex`
    HintAcceptHex,
    /// `hint-accept-wrong-guid`
    HintAcceptWrongGuid,
    /// `hint-accept-altered-key`
    HintAcceptAlteredKey,
    /// `hint-bare-lf`
    HintBareLf,
    /// `hint-no-blank-line`
    HintNoBlankLine,
    /// `kinetid-report-off-boundary`
    KinetidReportOffBoundary,
    /// `kinetid-report-too-frequent`
    KinetidReportTooFrequent,
    /// `kinetid-seq-gap`
    KinetidSeqGap,
    /// `kinetid-seq-duplicate`
    KinetidSeqDuplicate,
    /// `kinetid-seq-reset`
    KinetidSeqReset,
    /// `kinetid-energy-backwards`
    KinetidEnergyBackwards,
    /// `kinetid-state-contradicts`
    KinetidStateContradicts,
    /// `ping-answered-late`
    PingAnsweredLate,
    /// `pong-payload-mismatch`
    PongPayloadMismatch,
    /// `not-kinetid`
    NotKinetid,
    /// `deflate-invalid`
    DeflateInvalid,
    /// `deflate-rsv1-misplaced`
    DeflateRsv1Misplaced,
    /// `mask-keys-repeat-across-connections`
    MaskKeysRepeatAcross,
    /// `handshake-key-reused`
    HandshakeKeyReused,
    /// `reconnect-storm`
    ReconnectStorm,
    /// `reconnect-no-backoff`
    ReconnectNoBackoff,
    /// `kinetid-reports-forgotten`
    KinetidReportsForgotten,
    /// `kinetid-clock-off`
    KinetidClockOff,
    /// `hint-host-without-port`
    HintHostWithoutPort,
    /// `hint-other-subprotocol`
    HintOtherSubprotocol,
    /// `hint-torn-frame`
    HintTornFrame,
    /// `bad-answer-accepted`
    BadAnswerAccepted,
    /// `bad-answer-refused`
    BadAnswerRefused,
}

impl Code {
    /// Every code, for tables and parsers.
    pub const ALL: &'static [Code] = &[
        Code::ClientFrameUnmasked,
        Code::CloseCodeInvalid,
        Code::CloseNotAnswered,
        Code::ClosePayloadOneByte,
        Code::CloseReasonInvalidUtf8,
        Code::ClosedWithoutCloseFrame,
        Code::ContinuationWithoutStart,
        Code::ControlFragmented,
        Code::ControlTooLong,
        Code::DataAfterClose,
        Code::DataFrameInFragmentedMessage,
        Code::CaptureGap,
        Code::CaptureStartMissed,
        Code::CaptureOverlapDiffers,
        Code::DeviceIdDuplicate,
        Code::DeviceRegistryFull,
        Code::DeviceReplaced,
        Code::FrameTimeout,
        Code::HalfOpenTimeout,
        Code::ProxyFault,
        Code::ProxyInjected,
        Code::ProxyHostRewritten,
        Code::TlsSession,
        Code::TlsFailed,
        Code::HintContAfterFin,
        Code::HintFinEveryFragment,
        Code::HintLen1274byte,
        Code::HintUnmaskedControl,
        Code::KinetidBadDeviceId,
        Code::KinetidBadId,
        Code::KinetidMissingField,
        Code::KinetidNoIdOrRe,
        Code::KinetidNoType,
        Code::KinetidNotJson,
        Code::KinetidNotObject,
        Code::KinetidReplyWithoutRe,
        Code::KinetidUnknownType,
        Code::LengthNonMinimal,
        Code::LengthTopBit,
        Code::MaskKeyRepeated,
        Code::MaskKeyZero,
        Code::MemoryBudgetExceeded,
        Code::MessageTooBig,
        Code::MessageUnfinished,
        Code::PayloadTooBig,
        Code::PingNotAnswered,
        Code::ReservedOpcode,
        Code::RsvWithoutExtension,
        Code::ServerFrameMasked,
        Code::TextInvalidUtf8,
        Code::TruncatedFrame,
        Code::TruncatedHandshake,
        Code::WriteTimeout,
        Code::HintLengthByteOrder,
        Code::HintLengthNotALength,
        Code::HintMaskNotApplied,
        Code::HintMaskRestart,
        Code::HintMaskKeyMismatch,
        Code::HintCString,
        Code::HintLatin1,
        Code::HintJsonConcat,
        Code::HintAcceptHex,
        Code::HintAcceptWrongGuid,
        Code::HintAcceptAlteredKey,
        Code::HintBareLf,
        Code::HintNoBlankLine,
        Code::KinetidReportOffBoundary,
        Code::KinetidReportTooFrequent,
        Code::KinetidSeqGap,
        Code::KinetidSeqDuplicate,
        Code::KinetidSeqReset,
        Code::KinetidEnergyBackwards,
        Code::KinetidStateContradicts,
        Code::PingAnsweredLate,
        Code::PongPayloadMismatch,
        Code::NotKinetid,
        Code::HintHostWithoutPort,
        Code::HintOtherSubprotocol,
        Code::HintTornFrame,
        Code::BadAnswerAccepted,
        Code::BadAnswerRefused,
        Code::MaskKeysRepeatAcross,
        Code::HandshakeKeyReused,
        Code::ReconnectStorm,
        Code::ReconnectNoBackoff,
        Code::KinetidReportsForgotten,
        Code::KinetidClockOff,
        Code::DeflateInvalid,
        Code::DeflateRsv1Misplaced,
    ];

    /// The kebab-case code shown in output.
    // A table: one arm per code.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ClientFrameUnmasked => "client-frame-unmasked",
            Code::CloseCodeInvalid => "close-code-invalid",
            Code::CloseNotAnswered => "close-not-answered",
            Code::ClosePayloadOneByte => "close-payload-one-byte",
            Code::CloseReasonInvalidUtf8 => "close-reason-invalid-utf8",
            Code::ClosedWithoutCloseFrame => "closed-without-close-frame",
            Code::ContinuationWithoutStart => "continuation-without-start",
            Code::ControlFragmented => "control-fragmented",
            Code::ControlTooLong => "control-too-long",
            Code::DataAfterClose => "data-after-close",
            Code::DataFrameInFragmentedMessage => "data-frame-in-fragmented-message",
            Code::DeviceIdDuplicate => "device-id-duplicate",
            Code::DeviceRegistryFull => "device-registry-full",
            Code::DeviceReplaced => "device-replaced",
            Code::ProxyFault => "proxy-fault",
            Code::ProxyInjected => "proxy-injected",
            Code::TlsSession => "tls-session",
            Code::TlsFailed => "tls-failed",
            Code::ProxyHostRewritten => "proxy-host-rewritten",
            Code::CaptureGap => "capture-gap",
            Code::CaptureStartMissed => "capture-start-missed",
            Code::CaptureOverlapDiffers => "capture-overlap-differs",
            Code::FrameTimeout => "frame-timeout",
            Code::HalfOpenTimeout => "half-open-timeout",
            Code::HintContAfterFin => "hint-cont-after-fin",
            Code::HintFinEveryFragment => "hint-fin-every-fragment",
            Code::HintLen1274byte => "hint-len127-4byte",
            Code::HintUnmaskedControl => "hint-unmasked-control",
            Code::KinetidBadDeviceId => "kinetid-bad-device-id",
            Code::KinetidBadId => "kinetid-bad-id",
            Code::KinetidMissingField => "kinetid-missing-field",
            Code::KinetidNoIdOrRe => "kinetid-no-id-or-re",
            Code::KinetidNoType => "kinetid-no-type",
            Code::KinetidNotJson => "kinetid-not-json",
            Code::KinetidNotObject => "kinetid-not-object",
            Code::KinetidReplyWithoutRe => "kinetid-reply-without-re",
            Code::KinetidUnknownType => "kinetid-unknown-type",
            Code::LengthNonMinimal => "length-non-minimal",
            Code::LengthTopBit => "length-top-bit",
            Code::MaskKeyRepeated => "mask-key-repeated",
            Code::MaskKeyZero => "mask-key-zero",
            Code::MemoryBudgetExceeded => "memory-budget-exceeded",
            Code::MessageTooBig => "message-too-big",
            Code::MessageUnfinished => "message-unfinished",
            Code::PayloadTooBig => "payload-too-big",
            Code::PingNotAnswered => "ping-not-answered",
            Code::ReservedOpcode => "reserved-opcode",
            Code::RsvWithoutExtension => "rsv-without-extension",
            Code::ServerFrameMasked => "server-frame-masked",
            Code::TextInvalidUtf8 => "text-invalid-utf8",
            Code::TruncatedFrame => "truncated-frame",
            Code::TruncatedHandshake => "truncated-handshake",
            Code::WriteTimeout => "write-timeout",
            Code::HintLengthByteOrder => "hint-length-byte-order",
            Code::HintLengthNotALength => "hint-length-not-a-length",
            Code::HintMaskNotApplied => "hint-mask-not-applied",
            Code::HintMaskRestart => "hint-mask-restart",
            Code::HintMaskKeyMismatch => "hint-mask-key-mismatch",
            Code::HintCString => "hint-c-string",
            Code::HintLatin1 => "hint-latin1",
            Code::HintJsonConcat => "hint-json-concat",
            Code::HintAcceptHex => "hint-accept-hex",
            Code::HintAcceptWrongGuid => "hint-accept-wrong-guid",
            Code::HintAcceptAlteredKey => "hint-accept-altered-key",
            Code::HintBareLf => "hint-bare-lf",
            Code::HintNoBlankLine => "hint-no-blank-line",
            Code::KinetidReportOffBoundary => "kinetid-report-off-boundary",
            Code::KinetidReportTooFrequent => "kinetid-report-too-frequent",
            Code::KinetidSeqGap => "kinetid-seq-gap",
            Code::KinetidSeqDuplicate => "kinetid-seq-duplicate",
            Code::KinetidSeqReset => "kinetid-seq-reset",
            Code::KinetidEnergyBackwards => "kinetid-energy-backwards",
            Code::KinetidStateContradicts => "kinetid-state-contradicts",
            Code::PingAnsweredLate => "ping-answered-late",
            Code::PongPayloadMismatch => "pong-payload-mismatch",
            Code::HintHostWithoutPort => "hint-host-without-port",
            Code::HintOtherSubprotocol => "hint-other-subprotocol",
            Code::HintTornFrame => "hint-torn-frame",
            Code::BadAnswerAccepted => "bad-answer-accepted",
            Code::BadAnswerRefused => "bad-answer-refused",
            Code::MaskKeysRepeatAcross => "mask-keys-repeat-across-connections",
            Code::HandshakeKeyReused => "handshake-key-reused",
            Code::ReconnectStorm => "reconnect-storm",
            Code::ReconnectNoBackoff => "reconnect-no-backoff",
            Code::KinetidReportsForgotten => "kinetid-reports-forgotten",
            Code::KinetidClockOff => "kinetid-clock-off",
            Code::NotKinetid => "not-kinetid",
            Code::DeflateInvalid => "deflate-invalid",
            Code::DeflateRsv1Misplaced => "deflate-rsv1-misplaced",
        }
    }

    /// The code from its string form.
    pub fn parse(s: &str) -> Option<Code> {
        Code::ALL.iter().copied().find(|c| c.as_str() == s)
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl serde::Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Notes that `listen` raises about a connection from what it knows beyond
/// the connection's bytes (the device registry, memory, timers), with the
/// rule each comes from. Captures record them, so a replay shows them too.
pub const LISTENER_NOTES: &[(Code, &str)] = &[
    (Code::DeviceIdDuplicate, "kinetid v1"),
    (Code::DeviceReplaced, "kinetid v1"),
    (Code::DeviceRegistryFull, "kinetid v1"),
    (Code::MemoryBudgetExceeded, "RFC 6455 10.4"),
    (Code::FrameTimeout, "RFC 6455 10.4"),
    (Code::HalfOpenTimeout, "RFC 6455 7.1.1"),
    (Code::WriteTimeout, "RFC 6455 10.4"),
    (Code::CaptureOverlapDiffers, "capture"),
    (Code::ProxyHostRewritten, "RFC 9110 7.2"),
    (Code::ProxyFault, "proxy"),
    (Code::ProxyInjected, "proxy"),
    (Code::TlsSession, "RFC 8446"),
    (Code::TlsFailed, "RFC 8446"),
    (Code::HintHostWithoutPort, "RFC 9110 7.2"),
];

/// A listener note from its recorded code, severity and message; `None`
/// for a code that is not a listener's.
pub fn listener_note(severity: &str, code: &str, message: &str) -> Option<Note> {
    let &(code, rfc) = LISTENER_NOTES.iter().find(|(c, _)| c.as_str() == code)?;
    let severity = match severity {
        "error" => Severity::Error,
        "warning" => Severity::Warning,
        "info" => Severity::Info,
        _ => return None,
    };
    Some(Note {
        severity,
        code,
        rfc,
        message: message.to_string(),
    })
}

/// A listener note by code (one of [`LISTENER_NOTES`]).
pub fn listener(severity: Severity, code: Code, message: impl Into<String>) -> Note {
    let rfc = LISTENER_NOTES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("kinetid v1", |(_, r)| r);
    Note {
        severity,
        code,
        rfc,
        message: message.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for c in Code::ALL {
            assert!(seen.insert(c.as_str()), "{c} twice");
            assert_eq!(Code::parse(c.as_str()), Some(*c));
        }
    }
}
