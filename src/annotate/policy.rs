//! The close-code policy: which broken rule fails the connection, and with
//! which close code (RFC 6455 7.1.7 and 7.4.1).
//!
//! The annotator asks it to know when a side has failed the connection (so
//! the peer's missing Close is not held against it); the engine asks it for
//! the code to answer with. It lives here, below both, rather than in the
//! note vocabulary, which only names what was found.

use crate::note::{Code, Note, Severity};
use crate::wire::codes::CloseCode;

/// The close code an endpoint fails the connection with when a note of
/// severity error with this code is raised about its peer's bytes
/// (RFC 6455 7.1.7), or `None` when the rule broken does not call for
/// closing (contract notes, hints, what only shows at the end).
// A table: every code is named, so a new one must be placed here.
pub fn close_code(code: Code) -> Option<CloseCode> {
    match code {
        Code::ClientFrameUnmasked
        | Code::CloseCodeInvalid
        | Code::ClosePayloadOneByte
        | Code::ContinuationWithoutStart
        | Code::ControlFragmented
        | Code::ControlTooLong
        | Code::DataAfterClose
        | Code::DataFrameInFragmentedMessage
        | Code::LengthTopBit
        | Code::ReservedOpcode
        | Code::RsvWithoutExtension
        | Code::ServerFrameMasked
        | Code::DeflateInvalid
        | Code::DeflateRsv1Misplaced => Some(CloseCode::PROTOCOL),
        Code::CloseNotAnswered
        | Code::ClosedWithoutCloseFrame
        | Code::DeviceIdDuplicate
        | Code::DeviceRegistryFull
        | Code::DeviceReplaced
        | Code::CaptureGap
        | Code::CaptureStartMissed
        | Code::CaptureOverlapDiffers
        | Code::FrameTimeout
        | Code::HalfOpenTimeout
        | Code::ProxyFault
        | Code::ProxyInjected
        | Code::ProxyHostRewritten
        | Code::TlsSession
        | Code::TlsFailed
        | Code::HintContAfterFin
        | Code::HintFinEveryFragment
        | Code::HintLen1274byte
        | Code::HintUnmaskedControl
        | Code::KinetidBadDeviceId
        | Code::KinetidBadId
        | Code::KinetidMissingField
        | Code::KinetidNoIdOrRe
        | Code::KinetidNoType
        | Code::KinetidNotJson
        | Code::KinetidNotObject
        | Code::KinetidReplyWithoutRe
        | Code::KinetidUnknownType
        | Code::LengthNonMinimal
        | Code::MaskKeyRepeated
        | Code::MaskKeyZero
        | Code::MemoryBudgetExceeded
        | Code::MessageUnfinished
        | Code::PingNotAnswered
        | Code::TruncatedFrame
        | Code::TruncatedHandshake
        | Code::WriteTimeout
        | Code::HintLengthByteOrder
        | Code::HintLengthNotALength
        | Code::HintMaskNotApplied
        | Code::HintMaskRestart
        | Code::HintMaskKeyMismatch
        | Code::HintCString
        | Code::HintLatin1
        | Code::HintJsonConcat
        | Code::HintAcceptHex
        | Code::HintAcceptWrongGuid
        | Code::HintAcceptAlteredKey
        | Code::HintBareLf
        | Code::HintNoBlankLine
        | Code::KinetidReportOffBoundary
        | Code::KinetidReportTooFrequent
        | Code::KinetidSeqGap
        | Code::KinetidSeqDuplicate
        | Code::KinetidSeqReset
        | Code::KinetidEnergyBackwards
        | Code::KinetidStateContradicts
        | Code::PingAnsweredLate
        | Code::PongPayloadMismatch
        | Code::HintHostWithoutPort
        | Code::HintOtherSubprotocol
        | Code::HintTornFrame
        | Code::BadAnswerAccepted
        | Code::BadAnswerRefused
        | Code::MaskKeysRepeatAcross
        | Code::HandshakeKeyReused
        | Code::ReconnectStorm
        | Code::ReconnectNoBackoff
        | Code::KinetidReportsForgotten
        | Code::KinetidClockOff
        | Code::NotKinetid => None,
        Code::CloseReasonInvalidUtf8 | Code::TextInvalidUtf8 => Some(CloseCode::INVALID_DATA),
        Code::MessageTooBig | Code::PayloadTooBig => Some(CloseCode::TOO_BIG),
    }
}

/// The close code a server should fail the connection with for a note, if
/// the note breaks a rule that requires failing it (RFC 6455 7.1.7).
pub fn close_code_for(note: &Note) -> Option<CloseCode> {
    if note.severity != Severity::Error {
        return None;
    }
    close_code(note.code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_follow_rfc_6455_7_4_1() {
        assert_eq!(
            close_code(Code::TextInvalidUtf8),
            Some(CloseCode::INVALID_DATA)
        );
        assert_eq!(close_code(Code::MessageTooBig), Some(CloseCode::TOO_BIG));
        assert_eq!(
            close_code(Code::ClientFrameUnmasked),
            Some(CloseCode::PROTOCOL)
        );
        assert_eq!(close_code(Code::KinetidNotJson), None);
    }
}
