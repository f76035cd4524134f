//! The connection engine: sans-IO state machines that every role drives.
//!
//! * [`session`]: the RFC 6455 reactions of one endpoint (either role).
//! * [`backend`]: the Kinetid backend's side of one connection.
//! * [`device`]: a Kinetid home (an active plug and its passive plugs).
//!
//! Each takes events (the annotator's, for bytes that arrived) and the
//! clock, and returns what to send and what to do; none does I/O or knows
//! tokio. The commands are thin drivers: `listen` feeds a [`session::Session`]
//! and a [`backend::Backend`] per connection, `emulate-device` a session and
//! a [`device::Home`] per plug, and both move bytes and nothing else.

pub mod backend;
pub mod certify;
pub mod device;
pub mod devices;
pub mod quirk;
pub mod relay;
pub mod session;

/// A complete text message as the annotator makes it from one frame sent
/// in `dir` (for the state machines' tests).
#[cfg(test)]
pub(crate) fn test_message(
    text: &str,
    dir: crate::wire::frame::Direction,
) -> crate::annotate::MessageEvent {
    use crate::annotate::{Annotator, Config, EventKind, HandshakeMode};
    use crate::wire::frame::{encode_frame, EncodeOptions, OpCode};
    let mut a = Annotator::new(
        1,
        Config {
            handshake: HandshakeMode::None,
            ..Config::default()
        },
    );
    let mut b = Vec::new();
    encode_frame(
        &mut b,
        OpCode::Text,
        text.as_bytes(),
        EncodeOptions::for_role(dir.sender()),
    );
    let mut ev = Vec::new();
    a.feed(dir, &b, None, &mut ev);
    ev.into_iter()
        .find_map(|e| match e.kind {
            EventKind::Message(m) => Some(*m),
            _ => None,
        })
        .expect("a message")
}
