//! The default suite: every case as data, in the order it runs.

use super::*;

/// The default suite, in the order it runs. A device backs off after
/// each refused upgrade until a welcome resets it (as the contract says),
/// so every case that refuses the upgrade is followed by one that
/// welcomes: the suite never waits out a growing back-off.
// A table: one entry per case, in the order they run.
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
